//! How a version's queue behaves, read once from its config exactly as Triton's fields mean.
use std::time::Duration;

use crate::proto::model_config::SchedulingChoice;
use crate::proto::model_queue_policy::TimeoutAction as ConfigTimeoutAction;
use crate::proto::{ModelConfig, ModelQueuePolicy};

/// The queue's bound when the config sets none. Triton's is unbounded; an unbounded queue only turns
/// overload into memory growth and timeouts.
pub const DEFAULT_QUEUE_SIZE: usize = 4096;

/// Most priority levels a model may declare: each level is a queue that every batching decision scans.
/// (Triton sets no bound; `priority_levels` is a uint64.)
pub const MAX_PRIORITY_LEVELS: u64 = 1024;

/// A batching configuration the scheduler cannot honour.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("dynamic_batching.priority_levels is {0}; at most {MAX_PRIORITY_LEVELS} are supported")]
    PriorityLevels(u64),
    #[error("parameter max_batch_tokens must be a positive number, got '{0}'")]
    MaxBatchTokens(String),
}

/// The config parameter that caps a text model's batch by its padded tokens.
pub const MAX_BATCH_TOKENS: &str = "max_batch_tokens";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// A request still waiting at its timeout fails.
    Reject,
    /// A request still waiting at its timeout goes behind every request that has not timed out.
    Delay,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueuePolicy {
    pub max_queue_size: usize,
    pub default_timeout: Option<Duration>,
    pub timeout_action: TimeoutAction,
    pub allow_timeout_override: bool,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            max_queue_size: DEFAULT_QUEUE_SIZE,
            default_timeout: None,
            timeout_action: TimeoutAction::Reject,
            allow_timeout_override: false,
        }
    }
}

impl QueuePolicy {
    fn from_config(q: &ModelQueuePolicy) -> Self {
        Self {
            max_queue_size: if q.max_queue_size > 0 {
                q.max_queue_size as usize
            } else {
                DEFAULT_QUEUE_SIZE
            },
            default_timeout: (q.default_timeout_microseconds > 0)
                .then(|| Duration::from_micros(q.default_timeout_microseconds)),
            timeout_action: if q.timeout_action == ConfigTimeoutAction::Delay as i32 {
                TimeoutAction::Delay
            } else {
                TimeoutAction::Reject
            },
            allow_timeout_override: q.allow_timeout_override,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatchPolicy {
    /// Rows per execution; 0 when the model does not batch.
    pub max_batch_size: usize,
    /// Combine queued requests into one execution (config `dynamic_batching`).
    pub dynamic: bool,
    /// How long the oldest request may wait for a fuller batch; zero runs whatever is queued at once.
    pub max_queue_delay: Duration,
    /// Batch sizes to cut at when the queue holds more (ascending).
    pub preferred_batch_sizes: Vec<usize>,
    /// Answer requests in the order they arrived, whatever order their batches finish in.
    pub preserve_ordering: bool,
    /// Priority levels, 1 (highest) to `levels.len()`; each with its own queue policy.
    pub levels: Vec<QueuePolicy>,
    /// The level (1-based) of a request that names none.
    pub default_priority: usize,
    /// Most tokens one batch may hold, padding included (rows times the longest row's tokens), for text models
    /// (config parameter `max_batch_tokens`); 0: no cap. Under a cap, the requests that join a batch are the
    /// ones closest in length to its first, so that little of the batch is padding.
    pub max_batch_tokens: usize,
    /// A caller runs its own request on an idle instance, when nothing is queued, while the model's recent executions
    /// all took less than this (zero: never). Set by the server, not the model's config: only for CPU instances
    /// and no batching delay (a request alone would run at once on the instance as well).
    pub inline_below: Duration,
}

impl BatchPolicy {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self, PolicyError> {
        let max_batch_size = cfg.max_batch_size.max(0) as usize;
        let max_batch_tokens = match cfg.parameters.get(MAX_BATCH_TOKENS) {
            None => 0,
            Some(p) => match p.string_value.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(PolicyError::MaxBatchTokens(p.string_value.clone())),
            },
        };
        let Some(SchedulingChoice::DynamicBatching(db)) = &cfg.scheduling_choice else {
            return Ok(Self {
                max_batch_size,
                dynamic: false,
                max_queue_delay: Duration::ZERO,
                preferred_batch_sizes: Vec::new(),
                preserve_ordering: false,
                levels: vec![QueuePolicy::default()],
                default_priority: 1,
                max_batch_tokens,
                inline_below: Duration::ZERO,
            });
        };
        if db.priority_levels > MAX_PRIORITY_LEVELS {
            return Err(PolicyError::PriorityLevels(db.priority_levels));
        }
        let default_queue = db
            .default_queue_policy
            .as_ref()
            .map(QueuePolicy::from_config)
            .unwrap_or_default();
        let n_levels = (db.priority_levels as usize).max(1);
        let levels = (1..=n_levels as u64)
            .map(|l| {
                db.priority_queue_policy
                    .get(&l)
                    .map(QueuePolicy::from_config)
                    .unwrap_or_else(|| default_queue.clone())
            })
            .collect();
        let mut preferred: Vec<usize> = db
            .preferred_batch_size
            .iter()
            .filter(|&&p| p > 0)
            .map(|&p| p as usize)
            .filter(|&p| p <= max_batch_size)
            .collect();
        preferred.sort_unstable();
        preferred.dedup();
        Ok(Self {
            max_batch_size,
            dynamic: max_batch_size > 1,
            max_queue_delay: Duration::from_micros(db.max_queue_delay_microseconds),
            preferred_batch_sizes: preferred,
            preserve_ordering: db.preserve_ordering,
            levels,
            default_priority: (db.default_priority_level as usize).clamp(1, n_levels),
            max_batch_tokens,
            inline_below: Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::config::parse_pbtxt;

    #[test]
    fn reads_triton_dynamic_batching_fields() {
        let cfg = parse_pbtxt(
            "max_batch_size: 16 dynamic_batching { max_queue_delay_microseconds: 250 preferred_batch_size: [8, 4, 32] \
             preserve_ordering: true priority_levels: 3 default_priority_level: 2 \
             default_queue_policy { max_queue_size: 5 default_timeout_microseconds: 1000 timeout_action: DELAY allow_timeout_override: true } \
             priority_queue_policy { key: 1 value { max_queue_size: 9 } } }",
        )
        .unwrap();
        let p = BatchPolicy::from_config(&cfg).unwrap();
        assert!(p.dynamic);
        assert_eq!(p.max_queue_delay, Duration::from_micros(250));
        assert_eq!(
            p.preferred_batch_sizes,
            vec![4, 8],
            "sorted, and above max_batch_size dropped"
        );
        assert!(p.preserve_ordering);
        assert_eq!(p.levels.len(), 3);
        assert_eq!(p.default_priority, 2);
        assert_eq!(p.levels[0].max_queue_size, 9);
        assert_eq!(
            p.levels[0].timeout_action,
            TimeoutAction::Reject,
            "a level's own policy replaces the default"
        );
        assert_eq!(p.levels[1].max_queue_size, 5);
        assert_eq!(p.levels[1].default_timeout, Some(Duration::from_millis(1)));
        assert_eq!(p.levels[1].timeout_action, TimeoutAction::Delay);
    }

    #[test]
    fn no_dynamic_batching_means_one_request_at_a_time() {
        let p = BatchPolicy::from_config(&parse_pbtxt("max_batch_size: 8").unwrap()).unwrap();
        assert!(!p.dynamic);
        assert_eq!(p.levels, vec![QueuePolicy::default()]);
    }

    #[test]
    fn priority_levels_beyond_the_limit_fail_the_load_instead_of_exhausting_memory() {
        // One queue per level: 2^64-1 levels aborted the process while loading the model (the config_pbtxt
        // fuzz target's seed fuzz/corpus/config_pbtxt/oom_priority_levels.pbtxt).
        let levels = |n: u64| {
            BatchPolicy::from_config(
                &parse_pbtxt(&format!(
                    "max_batch_size: 8 dynamic_batching {{ priority_levels: {n} }}"
                ))
                .unwrap(),
            )
        };
        assert_eq!(levels(MAX_PRIORITY_LEVELS).unwrap().levels.len(), 1024);
        for n in [MAX_PRIORITY_LEVELS + 1, u64::MAX] {
            let err = levels(n).unwrap_err().to_string();
            assert!(err.contains(&format!("priority_levels is {n}; at most 1024")), "{err}");
        }
    }
}
