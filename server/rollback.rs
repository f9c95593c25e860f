//! Automatic rollback: once a second, each model whose traffic policy names a guard has its guarded version's
//! failures and p99 latency read over the guard's window (from two snapshots of its statistics); on a breach
//! with enough requests, the version's weight drops to 0, the event is logged, and `inferd_rollbacks_total`
//! counts it.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::Core;
use crate::stats::{HistogramSnapshot, DURATION_BOUNDS_NS};

struct Sample {
    at: Instant,
    done: u64,
    failed: u64,
    /// Successful requests' durations (failures count through the error rate).
    latency: HistogramSnapshot,
}

/// Runs until `stop` resolves.
pub async fn guard(core: Arc<Core>, stop: impl std::future::Future<Output = ()>) {
    let mut history: HashMap<(String, i64), VecDeque<Sample>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let mut breaches = Vec::new();
        {
            let table = core.table();
            for (name, entry) in &table.models {
                let Some(g) = &entry.traffic.guard else { continue };
                let Some(lv) = entry.versions.get(&g.version) else {
                    continue;
                };
                if entry.traffic.weights.get(&g.version).copied().unwrap_or(0) == 0 {
                    continue;
                }
                let s = &lv.stats;
                let sample = Sample {
                    at: now,
                    done: s.success.count() + s.fail.count(),
                    failed: s.fail.count(),
                    latency: s.request_durations(),
                };
                let samples = history.entry((name.clone(), g.version)).or_default();
                let window = Duration::from_secs(g.window_secs.max(1));
                while samples.front().is_some_and(|f| now.duration_since(f.at) > window) {
                    samples.pop_front();
                }
                if let Some(first) = samples.front() {
                    let requests = sample.done - first.done;
                    if requests >= g.min_requests.max(1) {
                        let error_rate = (sample.failed - first.failed) as f64 / requests as f64;
                        let delta = sample.latency.since(&first.latency);
                        let p99_ms = delta.quantile(DURATION_BOUNDS_NS, 0.99) as f64 / 1e6;
                        let why = match (g.max_error_rate, g.max_p99_ms) {
                            (Some(max), _) if error_rate > max => Some(format!("error rate {error_rate:.3} > {max}")),
                            (_, Some(max)) if p99_ms > max => Some(format!("p99 {p99_ms:.1} ms > {max} ms")),
                            _ => None,
                        };
                        if let Some(why) = why {
                            breaches.push((name.clone(), g.version, why, requests));
                        }
                    }
                }
                samples.push_back(sample);
            }
        }
        for (name, version, why, requests) in breaches {
            let mut policy = match core.traffic(&name) {
                Ok(p) => p,
                Err(_) => continue,
            };
            policy.weights.insert(version, 0);
            if core.set_traffic(&name, policy).await.is_ok() {
                tracing::warn!(model = %name, version, "automatic rollback: version {version} of '{name}' breached its guard ({why} over {requests} requests); its weight is now 0");
                if let Some(lv) = core.table().models.get(&name).and_then(|e| e.versions.get(&version)) {
                    lv.stats.rollbacks.fetch_add(1, Ordering::Relaxed);
                }
                history.remove(&(name, version));
            }
        }
    }
}
