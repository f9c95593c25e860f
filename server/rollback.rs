//! Automatic rollback: once a second, each model whose traffic policy names a guard has its guarded version's
//! failures and p99 latency read over the guard's window (from two snapshots of its statistics), and its
//! outputs' divergence from the stable arm's (their latest drift windows); on a breach with enough requests,
//! the version's weight drops to 0, the event is logged, and `inferd_rollbacks_total` counts it.
//!
//! A window belongs to one loaded version: a reload starts a new one (the new version's counters start at
//! zero), and a counter that went backwards restarts the window rather than wrapping. The rollback is one
//! locked update of the current policy, so a policy an operator set meanwhile is kept.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::routing::Routes;
use crate::stats::{HistogramSnapshot, DURATION_BOUNDS_NS};
use crate::traffic::Guard;
use crate::version::LoadedVersion;

/// One reading of a version's statistics.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    done: u64,
    failed: u64,
    /// Successful requests' durations (failures count through the error rate).
    latency: HistogramSnapshot,
}

/// The readings of one loaded version over its guard's window.
struct Window {
    version: Weak<LoadedVersion>,
    samples: VecDeque<Sample>,
}

/// Adds `now` to `samples` (dropping readings older than the guard's window) and says why the version breached
/// its guard since the oldest reading, with how many requests that covers, if it did.
fn judge(
    guard: &Guard,
    samples: &mut VecDeque<Sample>,
    now: Sample,
    divergence: Option<(i64, f64)>,
) -> Option<(String, u64)> {
    let window = Duration::from_secs(guard.window_secs.max(1));
    while samples.front().is_some_and(|f| now.at.duration_since(f.at) > window) {
        samples.pop_front();
    }
    let verdict = samples.front().and_then(|first| {
        // Counters only grow while one version serves; if they did not, start the window again.
        let requests = now.done.checked_sub(first.done)?;
        let failed = now.failed.checked_sub(first.failed)?;
        if requests < guard.min_requests.max(1) {
            return None;
        }
        let error_rate = failed as f64 / requests as f64;
        let p99_ms = now.latency.since(&first.latency).quantile(DURATION_BOUNDS_NS, 0.99) as f64 / 1e6;
        let why = match (
            guard.max_error_rate,
            guard.max_p99_ms,
            guard.max_divergence.zip(divergence),
        ) {
            (Some(max), _, _) if error_rate > max => format!("error rate {error_rate:.3} > {max}"),
            (_, Some(max), _) if p99_ms > max => format!("p99 {p99_ms:.1} ms > {max} ms"),
            (_, _, Some((max, (stable, d)))) if d > max => {
                format!("output divergence {d:.3} from version {stable} > {max}")
            }
            _ => return None,
        };
        Some((why, requests))
    });
    let went_back = samples
        .front()
        .is_some_and(|f| now.done < f.done || now.failed < f.failed);
    if went_back {
        samples.clear();
    }
    samples.push_back(now);
    verdict
}

/// Runs until `stop` resolves.
pub async fn guard(routes: Arc<Routes>, stop: impl std::future::Future<Output = ()>) {
    let mut windows: HashMap<String, Window> = HashMap::new();
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
            let table = routes.load();
            windows.retain(|name, _| table.models.get(name).is_some_and(|e| e.traffic.guard.is_some()));
            for (name, entry) in &table.models {
                let Some(g) = &entry.traffic.guard else { continue };
                let Some(lv) = entry.versions.get(&g.version) else {
                    windows.remove(name);
                    continue;
                };
                if entry.traffic.weights.get(&g.version).copied().unwrap_or(0) == 0 {
                    windows.remove(name);
                    continue;
                }
                let window = windows.entry(name.clone()).or_insert_with(|| Window {
                    version: Arc::downgrade(lv),
                    samples: VecDeque::new(),
                });
                // Another loaded version (a reload, or the guard moved): a new window.
                if !window.version.ptr_eq(&Arc::downgrade(lv)) {
                    window.version = Arc::downgrade(lv);
                    window.samples.clear();
                }
                let s = &lv.stats;
                let sample = Sample {
                    at: now,
                    done: s.success.count() + s.fail.count(),
                    failed: s.fail.count(),
                    latency: s.request_durations(),
                };
                let divergence = g.max_divergence.and_then(|_| entry.arm_divergence(g.version));
                if let Some((why, requests)) = judge(g, &mut window.samples, sample, divergence) {
                    breaches.push((name.clone(), lv.clone(), why, requests));
                }
            }
        }
        for (name, lv, why, requests) in breaches {
            // Decided again on the policy as it is now, under the table's lock: the guard may have gone, or an
            // operator may have set the weight already; anything else they changed is kept.
            let rolled_back = routes.update_traffic(&name, |entry| {
                let still_guarded = entry.traffic.guard.as_ref().is_some_and(|g| g.version == lv.version)
                    && entry.versions.get(&lv.version).is_some_and(|v| Arc::ptr_eq(v, &lv))
                    && entry.traffic.weights.get(&lv.version).is_some_and(|&w| w > 0);
                if !still_guarded {
                    return Ok(None);
                }
                let mut policy = (*entry.traffic).clone();
                policy.weights.insert(lv.version, 0);
                Ok(Some(policy))
            });
            if rolled_back.unwrap_or(false) {
                let version = lv.version;
                tracing::warn!(model = %name, version, "automatic rollback: version {version} of '{name}' breached its guard ({why} over {requests} requests); its weight is now 0");
                lv.stats.rollbacks.fetch_add(1, Ordering::Relaxed);
                windows.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            version: 2,
            max_error_rate: Some(0.5),
            max_p99_ms: None,
            max_divergence: Some(0.3),
            min_requests: 5,
            window_secs: 30,
        }
    }

    fn sample(at: Instant, done: u64, failed: u64) -> Sample {
        Sample {
            at,
            done,
            failed,
            latency: HistogramSnapshot::default(),
        }
    }

    #[test]
    fn a_breach_needs_enough_requests_in_the_window() {
        let t = Instant::now();
        let mut samples = VecDeque::new();
        assert!(
            judge(&guard(), &mut samples, sample(t, 0, 0), None).is_none(),
            "nothing to compare with yet"
        );
        assert!(
            judge(&guard(), &mut samples, sample(t + Duration::from_secs(1), 4, 4), None).is_none(),
            "4 < 5"
        );
        let (why, requests) = judge(&guard(), &mut samples, sample(t + Duration::from_secs(2), 10, 9), None).unwrap();
        assert_eq!(requests, 10);
        assert!(why.starts_with("error rate 0.900 > 0.5"), "{why}");
    }

    #[test]
    fn outputs_diverging_from_the_stable_arm_breach_the_guard() {
        let t = Instant::now();
        let mut samples = VecDeque::new();
        judge(&guard(), &mut samples, sample(t, 0, 0), None);
        let later = sample(t + Duration::from_secs(1), 10, 0);
        assert!(
            judge(&guard(), &mut samples.clone(), later.clone(), Some((1, 0.2))).is_none(),
            "0.2 <= 0.3"
        );
        let (why, _) = judge(&guard(), &mut samples, later, Some((1, 0.45))).unwrap();
        assert_eq!(why, "output divergence 0.450 from version 1 > 0.3");
    }

    #[test]
    fn counters_that_went_back_restart_the_window_instead_of_wrapping() {
        // A reload's new counters start at 0: 0 - 3 must not read as 2^64 - 3 requests, all failed.
        let t = Instant::now();
        let mut samples = VecDeque::new();
        judge(&guard(), &mut samples, sample(t, 3, 3), None);
        assert!(judge(&guard(), &mut samples, sample(t + Duration::from_secs(1), 0, 0), None).is_none());
        assert_eq!(samples.len(), 1, "the window starts again from the new reading");
        assert!(judge(&guard(), &mut samples, sample(t + Duration::from_secs(2), 4, 0), None).is_none());
    }

    #[test]
    fn readings_older_than_the_window_are_dropped() {
        let t = Instant::now();
        let mut samples = VecDeque::new();
        judge(&guard(), &mut samples, sample(t, 0, 0), None);
        let later = t + Duration::from_secs(31);
        assert!(
            judge(&guard(), &mut samples, sample(later, 100, 100), None).is_none(),
            "the old reading left"
        );
        assert_eq!(samples.len(), 1);
    }
}
