//! Prometheus metrics on the metrics port. Triton's counter names, derived at scrape time from the same
//! per-version statistics the statistics extension reports, so serving pays nothing extra per request.
use std::sync::Arc;

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::core::Core;
use crate::stats::{DurationStat, FailReason};

/// The collectors that outlive one scrape (process CPU, memory, file descriptors).
pub struct Metrics {
    process: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let process = Registry::new();
        // Not every platform has a process collector; the rest of the metrics do not depend on it.
        let _ = process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        Self { process }
    }

    pub fn render(&self, core: &Core) -> String {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> IntCounterVec {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let mv = &["model", "version"];
        let success = counter(
            "nv_inference_request_success",
            "Number of successful inference requests",
            mv,
        );
        let failure = counter(
            "nv_inference_request_failure",
            "Number of failed inference requests",
            &["model", "version", "reason"],
        );
        let count = counter("nv_inference_count", "Number of inferences performed (batch rows)", mv);
        let exec = counter("nv_inference_exec_count", "Number of model executions (batches)", mv);
        let request_us = counter(
            "nv_inference_request_duration_us",
            "Cumulative inference request duration in microseconds",
            mv,
        );
        let queue_us = counter(
            "nv_inference_queue_duration_us",
            "Cumulative inference queuing duration in microseconds",
            mv,
        );
        let input_us = counter(
            "nv_inference_compute_input_duration_us",
            "Cumulative compute input duration in microseconds",
            mv,
        );
        let infer_us = counter(
            "nv_inference_compute_infer_duration_us",
            "Cumulative compute inference duration in microseconds",
            mv,
        );
        let output_us = counter(
            "nv_inference_compute_output_duration_us",
            "Cumulative compute output duration in microseconds",
            mv,
        );
        let rollbacks = counter(
            "inferd_rollbacks_total",
            "Automatic rollbacks that took this version out of its split",
            mv,
        );
        let pending = IntGaugeVec::new(
            Opts::new("nv_inference_pending_request_count", "Requests waiting in the queue"),
            mv,
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(pending.clone()));

        let us = |d: &DurationStat| d.ns() / 1000;
        let table = core.table();
        for entry in table.models.values() {
            for lv in entry.versions.values() {
                let labels = [entry.name.as_str(), lv.version_label.as_str()];
                let s = &lv.stats;
                success.with_label_values(&labels).inc_by(s.success.count());
                for reason in FailReason::ALL {
                    failure
                        .with_label_values(&[labels[0], labels[1], reason.label()])
                        .inc_by(s.failures(reason));
                }
                count
                    .with_label_values(&labels)
                    .inc_by(s.inference_count.load(std::sync::atomic::Ordering::Relaxed));
                exec.with_label_values(&labels)
                    .inc_by(s.execution_count.load(std::sync::atomic::Ordering::Relaxed));
                request_us
                    .with_label_values(&labels)
                    .inc_by(us(&s.success) + us(&s.fail));
                queue_us.with_label_values(&labels).inc_by(us(&s.queue));
                input_us.with_label_values(&labels).inc_by(us(&s.compute_input));
                infer_us.with_label_values(&labels).inc_by(us(&s.compute_infer));
                output_us.with_label_values(&labels).inc_by(us(&s.compute_output));
                pending
                    .with_label_values(&labels)
                    .set(lv.scheduler.queue_depth() as i64);
                rollbacks
                    .with_label_values(&labels)
                    .inc_by(s.rollbacks.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        let load_failures = counter(
            "inferd_model_load_failures_total",
            "Model loads that failed, at start or later",
            &["model"],
        );
        for (model, n) in core.load_failures() {
            load_failures.with_label_values(&[model.as_str()]).inc_by(n);
        }
        let mut families = registry.gather();
        families.extend(self.process.gather());
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

pub fn router(core: Arc<Core>, metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (core, metrics) = (core.clone(), metrics.clone());
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(&core),
                )
            }
        }),
    )
}
