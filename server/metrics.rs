//! Prometheus metrics on the metrics port, built at scrape time from the per-version statistics (the same
//! lock-free counters the statistics extension reports), so serving pays nothing per request for a scrape.
//! Triton's `nv_*` names come first, so existing dashboards and alerts keep working; `inferd_*` adds real
//! histograms (aggregatable across replicas, unlike Triton's cumulative counters) and the gauges an
//! autoscaler targets.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus::proto::{Bucket, Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::lifecycle::Lifecycle;
use crate::request::Protocol;
use crate::routing::{ModelEntry, RoutingTable};
use crate::serving::Serving;
use crate::stats::{Arm, FailReason, HistogramSnapshot, DURATION_BOUNDS_NS};

/// The collectors that outlive one scrape (process CPU, memory, file descriptors).
pub struct Metrics {
    process: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One metric family being filled during a scrape.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(kind);
        Self(mf)
    }

    fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::COUNTER)
    }

    fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::GAUGE)
    }

    fn histogram(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::HISTOGRAM)
    }

    fn metric(labels: &[(&str, &str)]) -> Metric {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        m
    }

    /// The family for the page, unless it has no samples (the text encoder refuses an empty one).
    fn finished(self) -> Option<MetricFamily> {
        (!self.0.get_metric().is_empty()).then_some(self.0)
    }

    /// A counter's or a gauge's value, as the family's type says.
    fn set(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Self::metric(labels);
        if self.0.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.0.mut_metric().push(m);
    }

    /// A histogram from per-bucket counts over `bounds`, each bound and the sum multiplied by `scale` (e.g.
    /// nanoseconds to seconds).
    fn observe(&mut self, labels: &[(&str, &str)], snap: &HistogramSnapshot, bounds: &[u64], scale: f64) {
        let mut cumulative = 0;
        let buckets = bounds
            .iter()
            .zip(&snap.counts)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(*bound as f64 * scale);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = prometheus::proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(snap.count());
        h.set_sample_sum(snap.sum as f64 * scale);
        let mut m = Self::metric(labels);
        m.set_histogram(h);
        self.0.mut_metric().push(m);
    }
}

const NS: f64 = 1e-9;

impl Metrics {
    pub fn new() -> Self {
        let process = Registry::new();
        // Not every platform has a process collector; the rest of the metrics do not depend on it.
        let _ = process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        Self { process }
    }

    pub fn render(&self, serving: &Serving, lifecycle: &Lifecycle) -> String {
        let mut families = model_families(serving, lifecycle);
        families.extend(gpu_families());
        families.extend(self.process.gather());
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn model_families(serving: &Serving, lifecycle: &Lifecycle) -> Vec<MetricFamily> {
    let triton_us = |name: &str, what: &str| Family::counter(name, &format!("Cumulative {what} in microseconds"));
    let mut success = Family::counter(
        "nv_inference_request_success",
        "Number of successful inference requests",
    );
    let mut failure = Family::counter(
        "nv_inference_request_failure",
        "Number of failed inference requests, by reason",
    );
    let mut count = Family::counter("nv_inference_count", "Number of inferences performed (batch rows)");
    let mut exec = Family::counter("nv_inference_exec_count", "Number of model executions (batches)");
    let mut request_us = triton_us("nv_inference_request_duration_us", "inference request duration");
    let mut queue_us = triton_us("nv_inference_queue_duration_us", "inference queuing duration");
    let mut input_us = triton_us("nv_inference_compute_input_duration_us", "compute input duration");
    let mut infer_us = triton_us("nv_inference_compute_infer_duration_us", "compute inference duration");
    let mut output_us = triton_us("nv_inference_compute_output_duration_us", "compute output duration");
    let mut pending = Family::gauge("nv_inference_pending_request_count", "Requests waiting in the queue");
    let mut request_s = Family::histogram(
        "inferd_request_duration_seconds",
        "Successful requests' time in the server, from decoded to answered, by protocol",
    );
    let mut queue_s = Family::histogram("inferd_queue_duration_seconds", "Time requests waited for an instance");
    let mut compute_s = Family::histogram(
        "inferd_compute_duration_seconds",
        "Time of each model execution (input, inference and output)",
    );
    let mut batch = Family::histogram("inferd_batch_size", "Rows per model execution");
    let mut depth = Family::gauge("inferd_queue_depth", "Requests waiting for an instance");
    let mut model_inflight = Family::gauge(
        "inferd_model_inflight_requests",
        "Requests routed to the model and not yet answered",
    );
    let mut instances = Family::gauge("inferd_instances", "Model instances (one execution at a time each)");
    let mut busy = Family::gauge("inferd_instances_busy", "Instances running or forming a batch");
    let mut weight = Family::gauge(
        "inferd_traffic_weight",
        "Share of the model's requests a version receives, by arm (split: the weighted split; shadow: copies)",
    );
    let mut routed = Family::counter(
        "inferd_routed_requests_total",
        "Requests routed to a version, by arm (split, pinned: the caller named the version, shadow: copies)",
    );
    let mut rollbacks = Family::counter(
        "inferd_rollbacks_total",
        "Automatic rollbacks that took this version out of its split",
    );

    let table = serving.routes().load();
    let mut names: Vec<&String> = table.models.keys().collect();
    names.sort();
    for name in names {
        let entry = &table.models[name];
        let mut inflight_sum = 0;
        for lv in entry.versions.values() {
            let version = lv.version.to_string();
            let mv = [("model", name.as_str()), ("version", version.as_str())];
            let s = &lv.stats;
            success.set(&mv, s.success.count() as f64);
            for reason in FailReason::ALL {
                let labels = [mv[0], mv[1], ("reason", reason.label())];
                failure.set(&labels, s.failures(reason) as f64);
            }
            count.set(&mv, s.inference_count.load(Relaxed) as f64);
            exec.set(&mv, s.execution_count.load(Relaxed) as f64);
            let us = |ns: u64| (ns / 1000) as f64;
            request_us.set(&mv, us(s.success.ns() + s.fail.ns()));
            queue_us.set(&mv, us(s.queue.ns()));
            input_us.set(&mv, us(s.compute_input.ns()));
            infer_us.set(&mv, us(s.compute_infer.ns()));
            output_us.set(&mv, us(s.compute_output.ns()));
            let load = lv.scheduler.load();
            pending.set(&mv, load.queued as f64);
            depth.set(&mv, load.queued as f64);
            instances.set(&mv, load.instances as f64);
            busy.set(&mv, load.busy as f64);
            rollbacks.set(&mv, s.rollbacks.load(Relaxed) as f64);
            for protocol in Protocol::ALL {
                let labels = [mv[0], mv[1], ("protocol", protocol.label())];
                let snap = s.request_duration(protocol).snapshot();
                request_s.observe(&labels, &snap, DURATION_BOUNDS_NS, NS);
            }
            if let Some(d) = s.detail() {
                queue_s.observe(&mv, &d.queue_duration.snapshot(), DURATION_BOUNDS_NS, NS);
                compute_s.observe(&mv, &d.compute_duration.snapshot(), DURATION_BOUNDS_NS, NS);
                batch.observe(&mv, &d.batch_size.snapshot(), d.batch_size.bounds(), 1.0);
                inflight_sum += d.inflight();
                for arm in Arm::ALL {
                    routed.set(&[mv[0], mv[1], ("arm", arm.label())], d.routed(arm) as f64);
                }
            }
        }
        model_inflight.set(&[("model", name.as_str())], inflight_sum.max(0) as f64);
        for (version, arm, share) in traffic_shares(entry) {
            let label = version.to_string();
            weight.set(
                &[("model", name.as_str()), ("version", &label), ("arm", arm.label())],
                share,
            );
        }
    }

    let mut server_inflight = Family::gauge(
        "inferd_inflight_requests",
        "Requests admitted by the server and not yet answered",
    );
    server_inflight.set(&[], serving.inflight() as f64);
    let mut state = Family::gauge(
        "inferd_model_state",
        "1 for each model version's lifecycle state (a model-wide state has an empty version)",
    );
    for (model, version, s) in lifecycle.states() {
        state.set(&[("model", &model), ("version", &version), ("state", s.label())], 1.0);
    }
    let mut load_failures = Family::counter(
        "inferd_model_load_failures_total",
        "Model loads that failed, at start or later",
    );
    // Every known model has the counter (at 0 until a load fails), so `increase()` sees the first failure.
    let mut failures = lifecycle.load_failures();
    for name in table.models.keys() {
        failures.entry(name.clone()).or_default();
    }
    for (model, n) in failures {
        load_failures.set(&[("model", model.as_str())], n as f64);
    }
    let mut sync_failures = Family::counter(
        "inferd_repository_sync_failures_total",
        "Listings of a remote model repository that failed (the store unreachable, or refusing)",
    );
    let mut last_sync = Family::gauge(
        "inferd_repository_last_sync_timestamp_seconds",
        "When a remote model repository was last listed successfully, in seconds since the epoch",
    );
    for status in lifecycle.registry().sync_status() {
        let labels = [("repository", status.repository.as_str())];
        sync_failures.set(&labels, status.failures as f64);
        if let Some(t) = status.last_sync {
            last_sync.set(&labels, t);
        }
    }

    let mut families: Vec<MetricFamily> = [
        success,
        failure,
        count,
        exec,
        request_us,
        queue_us,
        input_us,
        infer_us,
        output_us,
        pending,
        request_s,
        queue_s,
        compute_s,
        batch,
        depth,
        server_inflight,
        model_inflight,
        instances,
        busy,
        state,
        weight,
        routed,
        rollbacks,
        load_failures,
        sync_failures,
        last_sync,
    ]
    .into_iter()
    .filter_map(Family::finished)
    .collect();
    families.extend(health_families(&table));
    families
}

/// Drift scores of every watched version's latest window, arm divergence, and input-rule violations.
fn health_families(table: &RoutingTable) -> Vec<MetricFamily> {
    let mut psi = Family::gauge(
        "inferd_drift_psi",
        "Population stability index of a feature over the latest drift window, against the reference profile",
    );
    let mut js = Family::gauge(
        "inferd_drift_js",
        "Jensen-Shannon distance (base 2) of a feature over the latest drift window, against the reference",
    );
    let mut psi_max = Family::gauge(
        "inferd_drift_psi_max",
        "The worst feature's PSI over the latest drift window (inputs and outputs)",
    );
    let mut windows = Family::counter("inferd_drift_windows_total", "Drift windows completed");
    let mut divergence = Family::gauge(
        "inferd_arm_divergence",
        "Largest Jensen-Shannon distance between a split-traffic version's outputs and the stable arm's, over \
         their latest drift windows",
    );
    let mut violations = Family::counter(
        "inferd_validation_failures_total",
        "Requests served in flag mode whose input broke a validate.* rule, by input and rule",
    );
    let mut names: Vec<&String> = table.models.keys().collect();
    names.sort();
    for name in names {
        let entry = &table.models[name];
        for lv in entry.versions.values() {
            let version = lv.version.to_string();
            let mv = [("model", name.as_str()), ("version", version.as_str())];
            if let Some(monitor) = lv.health.monitor() {
                windows.set(&mv, monitor.progress().1 as f64);
                if let Some(report) = monitor.latest() {
                    psi_max.set(&mv, report.psi_max);
                    for t in report.inputs.iter().chain(&report.outputs) {
                        for f in &t.features {
                            let labels = [mv[0], mv[1], ("tensor", t.name.as_str()), ("feature", f.name.as_str())];
                            psi.set(&labels, f.psi.unwrap_or_default());
                            js.set(&labels, f.js.unwrap_or_default());
                        }
                    }
                }
            }
            if let Some((_, d)) = entry.arm_divergence(lv.version) {
                divergence.set(&mv, d);
            }
            if let Some(rules) = &lv.health.rules {
                for (input, rule, n) in rules.failures() {
                    violations.set(&[mv[0], mv[1], ("input", input), ("rule", rule.label())], n as f64);
                }
            }
        }
    }
    [psi, js, psi_max, windows, divergence, violations]
        .into_iter()
        .filter_map(Family::finished)
        .collect()
}

/// Triton's GPU gauges, one series per GPU by uuid; none without a GPU (or without the `cuda` feature).
fn gpu_families() -> Vec<MetricFamily> {
    let gpus = crate::gpu::gpus();
    let mut util = Family::gauge("nv_gpu_utilization", "GPU utilization rate (0.0 - 1.0)");
    let mut used = Family::gauge("nv_gpu_memory_used_bytes", "GPU used memory, in bytes");
    let mut total = Family::gauge("nv_gpu_memory_total_bytes", "GPU total memory, in bytes");
    let mut power = Family::gauge("nv_gpu_power_usage", "GPU power usage, in watts");
    for g in &gpus {
        let labels = [("gpu_uuid", g.uuid.as_str())];
        util.set(&labels, g.utilization);
        used.set(&labels, g.memory_used_bytes as f64);
        total.set(&labels, g.memory_total_bytes as f64);
        power.set(&labels, g.power_watts);
    }
    [util, used, total, power]
        .into_iter()
        .filter_map(Family::finished)
        .collect()
}

/// Each version's share of the model's requests: the weighted split (all to the newest version without one)
/// and the shadow copies' fraction.
fn traffic_shares(entry: &ModelEntry) -> Vec<(i64, Arm, f64)> {
    let policy = &entry.traffic;
    let mut shares = Vec::new();
    let total: u64 = policy
        .weights
        .iter()
        .filter(|(v, _)| entry.versions.contains_key(v))
        .map(|(_, w)| *w as u64)
        .sum();
    if total > 0 {
        for (v, w) in &policy.weights {
            if entry.versions.contains_key(v) {
                shares.push((*v, Arm::Split, *w as f64 / total as f64));
            }
        }
    } else if let Some(newest) = entry.versions.keys().next_back() {
        shares.push((*newest, Arm::Split, 1.0));
    }
    if let Some(shadow) = &policy.shadow {
        shares.push((shadow.version, Arm::Shadow, shadow.fraction));
    }
    shares
}

pub fn router(serving: Arc<Serving>, lifecycle: Arc<Lifecycle>, metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (serving, lifecycle, metrics) = (serving.clone(), lifecycle.clone(), metrics.clone());
            async move {
                // NVML reads can take milliseconds; keep them off the async workers.
                let text = tokio::task::spawn_blocking(move || metrics.render(&serving, &lifecycle))
                    .await
                    .unwrap_or_default();
                ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text)
            }
        }),
    )
}
