//! Per-version counters behind Triton's statistics extension and the Prometheus metrics derived from them:
//! lock-free, updated once per request and once per executed batch, read at scrape time.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;

use crate::error::InferError;
use crate::proto::{InferBatchStatistics, InferStatistics, StatisticDuration};
use crate::request::Protocol;

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

/// Duration bucket bounds in nanoseconds: 1-2.5-5 steps from 50 µs to 10 s, fine enough for a sub-millisecond
/// p50 and coarse enough for a few dozen series per version.
pub const DURATION_BOUNDS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Rows per execution, in powers of two up to Triton's largest practical batch.
pub const BATCH_SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Batch sizes up to this keep their statistics in a flat array, sized at load; larger ones (a config may
/// declare any max_batch_size up to i32::MAX) get theirs when first executed.
const DENSE_BATCH_SIZES: usize = 1024;

/// A lock-free histogram over fixed bounds (the last bucket is open-ended): an observation costs two relaxed
/// atomic adds, and two snapshots give the distribution over the time between them.
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// Per-bucket (not cumulative) counts, the last one above every bound, and the sum of the values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn durations() -> Self {
        Self::new(DURATION_BOUNDS_NS)
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    pub fn observe(&self, value: u64) {
        // Most observations land in the first few buckets, so a linear scan beats a binary search here.
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum: self.sum.load(Relaxed),
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was observed since `earlier`.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }

    pub fn add(&mut self, other: &HistogramSnapshot) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// The bound of the bucket under which `q` (0..1) of the observations fall; `u64::MAX` when that is the
    /// open-ended bucket, 0 when nothing was observed.
    pub fn quantile(&self, bounds: &[u64], q: f64) -> u64 {
        let target = ((q * self.count() as f64).ceil() as u64).max(1);
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= target {
                return bounds.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        0
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

    /// The reason Triton's metrics give a request that failed with `e`.
    pub fn of(e: &InferError) -> Self {
        match e {
            InferError::ResourceExhausted(_) | InferError::Timeout(_) => Self::Rejected,
            InferError::Internal(_) => Self::Backend,
            _ => Self::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Rejected => "REJECTED",
            Self::Canceled => "CANCELED",
            Self::Backend => "BACKEND",
            Self::Other => "OTHER",
        }
    }
}

/// How a request reached a version: the weighted split (or the default version), the version named by the
/// caller, or a shadow copy of a request another version served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    Split,
    Pinned,
    Shadow,
}

impl Arm {
    pub const ALL: [Arm; 3] = [Self::Split, Self::Pinned, Self::Shadow];

    pub fn label(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Pinned => "pinned",
            Self::Shadow => "shadow",
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
    /// Successful requests' durations by protocol; the rollback guard reads them too, so they are always kept.
    request_duration: [Histogram; 2],
    /// Times an automatic rollback took this version out of its model's split.
    pub rollbacks: AtomicU64,
    /// Indexed by batch size (rows); sized to the model's max batch, at most `DENSE_BATCH_SIZES`.
    by_batch_size: Vec<BatchSizeStats>,
    /// Batch sizes above `DENSE_BATCH_SIZES` and up to `max_batch`, once executed.
    large_batches: Mutex<BTreeMap<usize, BatchSizeStats>>,
    max_batch: usize,
    /// What only the metrics port reads; not kept with `--allow-metrics false`.
    detail: Option<Detail>,
}

/// The metrics-only part of a version's statistics.
pub struct Detail {
    pub queue_duration: Histogram,
    /// Input, inference and output time of each execution.
    pub compute_duration: Histogram,
    pub batch_size: Histogram,
    /// Written by request tasks while the instance thread writes the histograms: a cache line of its own, so
    /// the two do not take it from each other on every request.
    requests: CachePadded<RequestGauges>,
}

#[derive(Default)]
struct RequestGauges {
    /// Requests routed to this version and not yet answered.
    inflight: AtomicI64,
    routed: [AtomicU64; 3],
}

impl Detail {
    pub fn routed(&self, arm: Arm) -> u64 {
        self.requests.routed[arm as usize].load(Relaxed)
    }

    pub fn inflight(&self) -> i64 {
        self.requests.inflight.load(Relaxed)
    }
}

/// Counts a request in flight on a version until dropped.
pub struct InFlight<'a>(Option<&'a AtomicI64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            n.fetch_sub(1, Relaxed);
        }
    }
}

impl Stats {
    /// `detailed`: keep the metrics-only histograms and gauges as well.
    pub fn new(max_batch: usize, detailed: bool) -> Self {
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
            request_duration: [Histogram::durations(), Histogram::durations()],
            rollbacks: AtomicU64::new(0),
            by_batch_size: (0..=max_batch.clamp(1, DENSE_BATCH_SIZES))
                .map(|_| BatchSizeStats::default())
                .collect(),
            large_batches: Mutex::default(),
            max_batch: max_batch.max(1),
            detail: detailed.then(|| Detail {
                queue_duration: Histogram::durations(),
                compute_duration: Histogram::durations(),
                batch_size: Histogram::new(BATCH_SIZE_BOUNDS),
                requests: Default::default(),
            }),
        }
    }

    pub fn detail(&self) -> Option<&Detail> {
        self.detail.as_ref()
    }

    /// A request routed here by `arm`; it counts as in flight until the returned guard drops.
    pub fn start_request(&self, arm: Arm) -> InFlight<'_> {
        InFlight(self.detail.as_ref().map(|d| {
            d.requests.routed[arm as usize].fetch_add(1, Relaxed);
            d.requests.inflight.fetch_add(1, Relaxed);
            &d.requests.inflight
        }))
    }

    pub fn record_success(&self, protocol: Protocol, elapsed: Duration) {
        self.success.add(elapsed);
        self.request_duration[protocol as usize].observe_duration(elapsed);
    }

    pub fn record_failure(&self, reason: FailReason, elapsed: Duration) {
        self.fail.add(elapsed);
        self.fail_by_reason[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn failures(&self, reason: FailReason) -> u64 {
        self.fail_by_reason[reason as usize].load(Relaxed)
    }

    pub fn request_duration(&self, protocol: Protocol) -> &Histogram {
        &self.request_duration[protocol as usize]
    }

    /// Successful requests' durations over both protocols.
    pub fn request_durations(&self) -> HistogramSnapshot {
        let mut all = self.request_duration[0].snapshot();
        all.add(&self.request_duration[1].snapshot());
        all
    }

    /// A request left the queue after `waited`.
    pub fn record_queue(&self, waited: Duration) {
        self.queue.add(waited);
        if let Some(d) = &self.detail {
            d.queue_duration.observe_duration(waited);
        }
    }

    /// One executed batch of `rows` rows; each request in it is charged the batch's compute time, as Triton does.
    pub fn record_execution(&self, rows: usize, requests: u64, input: Duration, infer: Duration, output: Duration) {
        self.execution_count.fetch_add(1, Relaxed);
        self.inference_count.fetch_add(rows as u64, Relaxed);
        self.compute_input.add_n(requests, input * requests as u32);
        self.compute_infer.add_n(requests, infer * requests as u32);
        self.compute_output.add_n(requests, output * requests as u32);
        let add = |b: &BatchSizeStats| {
            b.compute_input.add(input);
            b.compute_infer.add(infer);
            b.compute_output.add(output);
        };
        match self.by_batch_size.get(rows) {
            Some(b) => add(b),
            None if rows <= self.max_batch => {
                let mut large = self.large_batches.lock().unwrap_or_else(|p| p.into_inner());
                add(large.entry(rows).or_default());
            }
            None => {}
        }
        if let Some(d) = &self.detail {
            d.compute_duration.observe_duration(input + infer + output);
            d.batch_size.observe(rows as u64);
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
        let large = self.large_batches.lock().unwrap_or_else(|p| p.into_inner());
        self.by_batch_size
            .iter()
            .enumerate()
            .chain(large.iter().map(|(&size, b)| (size, b)))
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
    fn a_histogram_reads_a_percentile_back_over_a_window() {
        let h = Histogram::durations();
        h.observe_duration(Duration::from_secs(20));
        let before = h.snapshot();
        for _ in 0..98 {
            h.observe_duration(Duration::from_micros(80));
        }
        h.observe_duration(Duration::from_millis(30));
        h.observe_duration(Duration::from_millis(30));
        let window = h.snapshot().since(&before);
        assert_eq!(window.count(), 100);
        assert_eq!(window.quantile(DURATION_BOUNDS_NS, 0.5), 100_000);
        assert_eq!(window.quantile(DURATION_BOUNDS_NS, 0.99), 50_000_000);
        assert_eq!(
            h.snapshot().quantile(DURATION_BOUNDS_NS, 1.0),
            u64::MAX,
            "20 s is above every bound"
        );
    }

    #[test]
    fn values_on_a_bound_fall_in_that_bucket() {
        let h = Histogram::new(BATCH_SIZE_BOUNDS);
        for rows in [1, 2, 3, 4, 2000] {
            h.observe(rows);
        }
        let s = h.snapshot();
        assert_eq!(&s.counts[..3], &[1, 1, 2]);
        assert_eq!(*s.counts.last().unwrap(), 1);
        assert_eq!(s.sum, 2010);
    }

    #[test]
    fn any_max_batch_size_costs_memory_only_for_the_batch_sizes_executed() {
        // A config may declare max_batch_size up to i32::MAX; sizing per-batch-size statistics by it aborted
        // the load (found by fuzzing: fuzz/corpus/config_pbtxt/oom_stats_max_batch_size).
        let s = Stats::new(i32::MAX as usize, false);
        // The last is more rows than the model batches: counted as an execution, but no batch size's.
        for rows in [1, 3, 3, 5000, i32::MAX as usize, i32::MAX as usize + 1] {
            s.record_execution(rows, 1, Duration::ZERO, Duration::from_micros(10), Duration::ZERO);
        }
        let sizes: Vec<(u64, u64)> = s
            .batch_statistics()
            .iter()
            .map(|b| (b.batch_size, b.compute_infer.as_ref().unwrap().count))
            .collect();
        assert_eq!(sizes, vec![(1, 1), (3, 2), (5000, 1), (i32::MAX as u64, 1)]);
        assert_eq!(s.execution_count.load(Relaxed), 6);
    }

    #[test]
    fn without_detail_only_the_protocol_statistics_are_kept() {
        let s = Stats::new(8, false);
        let _guard = s.start_request(Arm::Split);
        s.record_queue(Duration::from_micros(5));
        s.record_execution(4, 2, Duration::ZERO, Duration::from_micros(10), Duration::ZERO);
        assert!(s.detail().is_none());
        assert_eq!(s.queue.count(), 1);
        assert_eq!(s.execution_count.load(Relaxed), 1);
    }
}
