//! Per model version: a priority queue in front of the version's instances. Each instance runs on its own OS
//! thread; when free, it forms the next batch from what is queued (dynamic batching: up to `max_batch_size`
//! rows of requests with the same non-batch dimensions, cut at a preferred size, waiting at most
//! `max_queue_delay` for a fuller one) while the other instances run theirs.
//!
//! The scheduler owns a request's whole stay: `submit` picks its priority level and timeout from the queue
//! policy, enqueues it, and resolves to its answer, racing the queue timeout and keeping the response order;
//! dropping the future cancels the request. Nothing outside can build a job or answer one. Tokio tasks only
//! enqueue and await: nothing blocks a runtime thread.
//!
//! A stateful model (`sequence_batching`) is scheduled by `sequence_batcher` instead: a sequence's requests run
//! in order on the instance holding its slot, with control inputs and implicit state filled in per row.
mod batch;
mod instance;
mod job;
mod order;
pub mod policy;
mod queue;
mod sequence;
mod sequence_batcher;
pub mod sequence_policy;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use self::job::Executed;
use self::job::{Job, JobState, Reply};
use self::order::Order;
pub use self::policy::{BatchPolicy, PolicyError, QueuePolicy, TimeoutAction, DEFAULT_QUEUE_SIZE};
use self::queue::Queue;
use self::sequence_batcher::SequenceBatcher;
pub use self::sequence_policy::{SequenceConfigError, SequencePolicy};
use crate::backend::{BackendError, Instance};
use crate::error::{InferError, InferResult};
use crate::spec::ModelSpec;
use crate::stats::Stats;
use crate::tensor::Tensor;

/// What the instances share: the queue and the signal that it changed.
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
    policy: BatchPolicy,
    spec: Arc<ModelSpec>,
    stats: Arc<Stats>,
    order: Arc<Order>,
    instances: usize,
}

/// A moment's view of a version's queue and instances.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub queued: usize,
    pub instances: usize,
    /// Instances running a batch (or forming one), as opposed to waiting for work.
    pub busy: usize,
}

/// A validated request, as the scheduler takes it.
pub struct Submission {
    /// In the model's input order (`None` for an absent optional input).
    pub inputs: Vec<Option<Tensor>>,
    /// Rows along the batch dimension.
    pub rows: usize,
    /// When the server received the request; its queue timeout counts from here.
    pub received: Instant,
    /// Triton's `priority` request parameter: 1 is the highest; none or 0 means the model's default.
    pub priority: Option<u64>,
    /// Triton's `timeout` request parameter in microseconds, honoured where the queue policy allows it.
    pub timeout_us: Option<u64>,
    /// A traced request's record of when it ran.
    pub executed: Option<Arc<Executed>>,
    /// The sequence the request belongs to (stateful models).
    pub sequence: Option<crate::request::SequenceRequest>,
}

pub struct Scheduler {
    shared: Arc<Shared>,
    /// A stateful model's sequence batcher, which takes all its requests (`shared` then has no instances).
    sequences: Option<SequenceBatcher>,
}

impl Scheduler {
    pub fn start(
        spec: Arc<ModelSpec>,
        instances: Vec<Box<dyn Instance>>,
        policy: BatchPolicy,
        stats: Arc<Stats>,
    ) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(policy.levels.len())),
            changed: Condvar::new(),
            order: Arc::new(Order::new(policy.preserve_ordering)),
            policy,
            spec,
            stats,
            instances: instances.len(),
        });
        for (i, instance) in instances.into_iter().enumerate() {
            let worker = instance::Worker::new(shared.clone(), instance);
            let name = format!("{}-{i}", shared.spec.name);
            if let Err(e) = std::thread::Builder::new().name(name).spawn(move || {
                worker.run();
                // The instance (a session, weights) has just been dropped: give its pages back.
                crate::memory::return_freed_memory();
            }) {
                tracing::error!(model = %shared.spec.name, "cannot start instance thread: {e}");
            }
        }
        Self {
            shared,
            sequences: None,
        }
    }

    /// The scheduler of a stateful model (`sequence_batching`): its sequence batcher runs the instances.
    pub fn start_sequence(
        spec: Arc<ModelSpec>,
        instances: Vec<Box<dyn Instance>>,
        policy: BatchPolicy,
        sequence: SequencePolicy,
        stats: Arc<Stats>,
    ) -> Self {
        let batcher = SequenceBatcher::start(spec.clone(), instances, sequence, stats.clone());
        let mut scheduler = Self::start(spec, Vec::new(), policy, stats);
        scheduler.sequences = Some(batcher);
        scheduler
    }

    /// Queues a request and resolves to every output of the model, in the model's order. A full queue, a bad
    /// priority or an unloading version is answered at once; a request still waiting when its queue timeout
    /// fires (REJECT) gets a timeout, while one an instance has taken runs to the end.
    pub async fn submit(&self, request: Submission) -> InferResult<Vec<Tensor>> {
        if let Some(sequences) = &self.sequences {
            return sequences.submit(request).await;
        }
        let spec = &self.shared.spec;
        let policy = &self.shared.policy;
        let level = match request.priority {
            None | Some(0) => policy.default_priority,
            Some(p) if p <= policy.levels.len() as u64 => p as usize,
            Some(p) => {
                return Err(InferError::invalid(format!(
                    "priority {p} is out of range for model '{}' (1 to {})",
                    spec.name,
                    policy.levels.len()
                )))
            }
        } - 1;
        let queue_policy = &policy.levels[level];
        let timeout = match request.timeout_us {
            Some(us) if queue_policy.allow_timeout_override => Some(Duration::from_micros(us)),
            _ => queue_policy.default_timeout,
        }
        .filter(|t| !t.is_zero());
        let deadline = timeout.and_then(|t| request.received.checked_add(t));
        let state = deadline.map(|_| Arc::new(JobState::default()));
        let (tx, mut rx) = oneshot::channel();
        self.enqueue(request, level, deadline, state.clone(), tx)?;
        let dropped = || InferError::Internal(format!("model '{}' dropped the request", spec.name));
        match (deadline, state) {
            // The timeout fires while the request waits, whatever the instances are doing; once an instance has
            // taken the request it runs to the end.
            (Some(deadline), Some(state)) if queue_policy.timeout_action == TimeoutAction::Reject => {
                tokio::select! {
                    r = &mut rx => r.map_err(|_| dropped())?,
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        if state.time_out() {
                            return Err(InferError::Timeout(format!(
                                "request for model '{}' timed out after {} us waiting in the queue",
                                spec.name,
                                timeout.unwrap_or_default().as_micros()
                            )));
                        }
                        rx.await.map_err(|_| dropped())?
                    }
                }
            }
            _ => rx.await.map_err(|_| dropped())?,
        }
    }

    /// Puts the job in its level's queue without waiting: a full queue is answered at once.
    fn enqueue(
        &self,
        request: Submission,
        level: usize,
        deadline: Option<Instant>,
        state: Option<Arc<JobState>>,
        tx: oneshot::Sender<job::Outcome>,
    ) -> InferResult<()> {
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.closed {
            return Err(InferError::Unavailable(format!(
                "model '{}' is unloading",
                self.shared.spec.name
            )));
        }
        let limit = self.shared.policy.levels[level].max_queue_size;
        if queue.level_len(level) >= limit {
            return Err(InferError::ResourceExhausted(format!(
                "inference request for model '{}' rejected: the queue is full ({limit} requests waiting at priority {})",
                self.shared.spec.name,
                level + 1
            )));
        }
        let seq = queue.next_seq();
        queue.push(Job {
            inputs: request.inputs,
            rows: request.rows,
            enqueued: request.received,
            level,
            deadline,
            state,
            reply: Reply::new(tx, seq, self.shared.order.clone()).traced(request.executed),
        });
        // A busy instance finds the job when it next looks; only a sleeping one needs the (syscall) wake-up.
        let wake = queue.idle > 0;
        drop(queue);
        if wake {
            self.shared.changed.notify_one();
        }
        Ok(())
    }

    pub fn load(&self) -> Load {
        if let Some(sequences) = &self.sequences {
            return sequences.load();
        }
        let q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        Load {
            queued: q.len(),
            instances: self.shared.instances,
            busy: self.shared.instances.saturating_sub(q.idle),
        }
    }
}

impl Drop for Scheduler {
    /// The version is being released: instances finish what is queued, then their threads end.
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
        }
        self.shared.changed.notify_all();
    }
}

/// A queue its instance threads wait on, counting themselves idle meanwhile so that whoever changes the queue
/// knows whether a wake-up is owed (the plain queue and the sequence queue alike).
trait IdleWaiters {
    fn idle(&mut self) -> &mut usize;
}

impl IdleWaiters for queue::Queue {
    fn idle(&mut self) -> &mut usize {
        &mut self.idle
    }
}

impl IdleWaiters for sequence::SequenceQueue {
    fn idle(&mut self) -> &mut usize {
        &mut self.idle
    }
}

/// Waits, counted idle, for `changed` to be signalled, or for `timeout` to pass when one is given.
fn wait_idle<'a, Q: IdleWaiters>(
    changed: &Condvar,
    mut queue: std::sync::MutexGuard<'a, Q>,
    timeout: Option<Duration>,
) -> std::sync::MutexGuard<'a, Q> {
    *queue.idle() += 1;
    let mut queue = match timeout {
        Some(timeout) => changed
            .wait_timeout(queue, timeout)
            .map(|(q, _)| q)
            .unwrap_or_else(|p| p.into_inner().0),
        None => changed.wait(queue).unwrap_or_else(|p| p.into_inner()),
    };
    *queue.idle() -= 1;
    queue
}

/// What a failed execution tells the caller: the runtime refusing the request's data is the client's mistake
/// (400), anything else the server's (500).
fn execution_error(e: BackendError) -> InferError {
    match e {
        BackendError::InvalidInput(m) => InferError::InvalidArgument(m),
        other => InferError::Internal(other.to_string()),
    }
}
