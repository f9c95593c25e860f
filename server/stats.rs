//! Per-version counters behind Triton's statistics extension (and the Prometheus counters derived from it):
//! lock-free, updated once per request and once per executed batch.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::{InferBatchStatistics, InferStatistics, StatisticDuration};

#[derive(Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    pub fn add(&self, d: Duration) {
        self.add_n(1, d);
    }

    pub fn add_n(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn ns(&self) -> u64 {
        self.ns.load(Relaxed)
    }

    fn snapshot(&self) -> StatisticDuration {
        StatisticDuration {
            count: self.count(),
            ns: self.ns(),
        }
    }
}

/// Request durations in buckets doubling from 50 µs (the last one open-ended): cheap to record, and enough
/// to read a percentile over a window from two snapshots.
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

pub const LATENCY_BUCKETS: usize = 19;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Upper bound of bucket `i` (the last is unbounded).
    pub fn bound(i: usize) -> Duration {
        if i + 1 >= LATENCY_BUCKETS {
            Duration::MAX
        } else {
            Duration::from_micros(50 << i)
        }
    }

    pub fn record(&self, d: Duration) {
        let i = (0..LATENCY_BUCKETS)
            .find(|&i| d <= Self::bound(i))
            .unwrap_or(LATENCY_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    /// The bucket bound under which `q` (0..1) of the counted requests fall.
    pub fn quantile(counts: &[u64; LATENCY_BUCKETS], q: f64) -> Duration {
        let total: u64 = counts.iter().sum();
        let target = (q * total as f64).ceil() as u64;
        let mut acc = 0;
        for (i, c) in counts.iter().enumerate() {
            acc += c;
            if acc >= target.max(1) {
                return Self::bound(i);
            }
        }
        Duration::ZERO
    }
}

/// Compute time of executions of one batch size.
#[derive(Default)]
pub struct BatchSizeStats {
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
}

/// Why a request failed, as Triton's failure metric labels it.
#[derive(Clone, Copy, Debug)]
pub enum FailReason {
    Rejected,
    Canceled,
    Backend,
    Other,
}

impl FailReason {
    pub const ALL: [FailReason; 4] = [Self::Rejected, Self::Canceled, Self::Backend, Self::Other];

    pub fn label(self) -> &'static str {
        match self {
            Self::Rejected => "REJECTED",
            Self::Canceled => "CANCELED",
            Self::Backend => "BACKEND",
            Self::Other => "OTHER",
        }
    }
}

pub struct Stats {
    pub success: DurationStat,
    pub fail: DurationStat,
    fail_by_reason: [AtomicU64; 4],
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    /// Rows (batch-1 inferences) served; Triton's `inference_count`.
    pub inference_count: AtomicU64,
    /// Model executions; below `inference_count` when requests are batched together.
    pub execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    /// Every request's duration, successful or not.
    pub latency: LatencyHistogram,
    /// Times an automatic rollback took this version out of its model's split.
    pub rollbacks: AtomicU64,
    /// Indexed by batch size (rows); sized to the model's max batch.
    by_batch_size: Vec<BatchSizeStats>,
}

impl Stats {
    pub fn new(max_batch: usize) -> Self {
        Self {
            success: Default::default(),
            fail: Default::default(),
            fail_by_reason: Default::default(),
            queue: Default::default(),
            compute_input: Default::default(),
            compute_infer: Default::default(),
            compute_output: Default::default(),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            latency: LatencyHistogram::default(),
            rollbacks: AtomicU64::new(0),
            by_batch_size: (0..=max_batch.max(1)).map(|_| BatchSizeStats::default()).collect(),
        }
    }

    pub fn record_success(&self, elapsed: Duration) {
        self.success.add(elapsed);
        self.latency.record(elapsed);
    }

    pub fn record_failure(&self, reason: FailReason, elapsed: Duration) {
        self.fail.add(elapsed);
        self.latency.record(elapsed);
        self.fail_by_reason[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn failures(&self, reason: FailReason) -> u64 {
        self.fail_by_reason[reason as usize].load(Relaxed)
    }

    /// One executed batch of `rows` rows; each request in it is charged the batch's compute time, as Triton does.
    pub fn record_execution(&self, rows: usize, requests: u64, input: Duration, infer: Duration, output: Duration) {
        self.execution_count.fetch_add(1, Relaxed);
        self.inference_count.fetch_add(rows as u64, Relaxed);
        self.compute_input.add_n(requests, input * requests as u32);
        self.compute_infer.add_n(requests, infer * requests as u32);
        self.compute_output.add_n(requests, output * requests as u32);
        if let Some(b) = self.by_batch_size.get(rows) {
            b.compute_input.add(input);
            b.compute_infer.add(infer);
            b.compute_output.add(output);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(now, Relaxed);
    }

    pub fn last_inference_ms(&self) -> u64 {
        self.last_inference_ms.load(Relaxed)
    }

    pub fn infer_statistics(&self) -> InferStatistics {
        InferStatistics {
            success: Some(self.success.snapshot()),
            fail: Some(self.fail.snapshot()),
            queue: Some(self.queue.snapshot()),
            compute_input: Some(self.compute_input.snapshot()),
            compute_infer: Some(self.compute_infer.snapshot()),
            compute_output: Some(self.compute_output.snapshot()),
            cache_hit: Some(StatisticDuration::default()),
            cache_miss: Some(StatisticDuration::default()),
        }
    }

    pub fn batch_statistics(&self) -> Vec<InferBatchStatistics> {
        self.by_batch_size
            .iter()
            .enumerate()
            .filter(|(_, b)| b.compute_infer.count() > 0)
            .map(|(size, b)| InferBatchStatistics {
                batch_size: size as u64,
                compute_input: Some(b.compute_input.snapshot()),
                compute_infer: Some(b.compute_infer.snapshot()),
                compute_output: Some(b.compute_output.snapshot()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_reads_a_percentile_back() {
        let h = LatencyHistogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(80));
        }
        h.record(Duration::from_millis(30));
        h.record(Duration::from_millis(30));
        let counts = h.snapshot();
        assert_eq!(LatencyHistogram::quantile(&counts, 0.5), Duration::from_micros(100));
        assert_eq!(
            LatencyHistogram::quantile(&counts, 0.99),
            Duration::from_micros(50 << 10)
        );
    }
}
