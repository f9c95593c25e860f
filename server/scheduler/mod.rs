//! Per model version: a priority queue in front of the version's instances. Each instance runs on its own OS
//! thread; when free, it forms the next batch from what is queued (dynamic batching: up to `max_batch_size`
//! rows of requests with the same non-batch dimensions, cut at a preferred size, waiting at most
//! `max_queue_delay` for a fuller one) while the other instances run theirs. Tokio tasks only enqueue and
//! await a oneshot: nothing blocks a runtime thread.
mod batch;
mod instance;
mod order;
pub mod policy;
mod queue;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

pub use self::policy::{BatchPolicy, QueuePolicy, TimeoutAction, DEFAULT_QUEUE_SIZE};
use self::queue::Queue;
use crate::backend::Instance;
use crate::error::{InferError, InferResult};
use crate::model::ModelSpec;
use crate::stats::Stats;
use crate::tensor::Tensor;

/// Where a request with a timeout stands, so that its timeout and its start cannot both win.
#[derive(Default)]
pub struct JobState(AtomicU8);

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const TIMED_OUT: u8 = 2;

impl JobState {
    /// The instance takes the job; false if its timeout fired first.
    fn start(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The timeout fires; false if an instance already runs the job.
    pub fn time_out(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn timed_out(&self) -> bool {
        self.0.load(Ordering::Acquire) == TIMED_OUT
    }
}

pub type Reply = oneshot::Sender<InferResult<Vec<Tensor>>>;

/// One request waiting to run: validated inputs in the model's order.
pub struct Job {
    pub inputs: Vec<Option<Tensor>>,
    pub rows: usize,
    pub enqueued: Instant,
    /// Every output of the model, in the model's order.
    pub reply: Reply,
    /// 0-based priority level (0 is the highest).
    pub level: usize,
    /// When the request's queue timeout fires, if it has one.
    pub deadline: Option<Instant>,
    /// Shared with the waiting caller when the request has a deadline.
    pub state: Option<Arc<JobState>>,
    /// Arrival order, for `preserve_ordering`.
    pub seq: u64,
}

impl Job {
    /// The caller is gone: its connection closed, its RPC was cancelled, or its timeout fired.
    fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.state.as_ref().is_some_and(|s| s.timed_out())
    }
}

/// What the instances share: the queue and the signal that it changed.
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
    policy: BatchPolicy,
    spec: Arc<ModelSpec>,
    stats: Arc<Stats>,
    order: order::Order,
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

pub struct Scheduler {
    shared: Arc<Shared>,
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
            order: order::Order::new(policy.preserve_ordering),
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
        Self { shared }
    }

    pub fn policy(&self) -> &BatchPolicy {
        &self.shared.policy
    }

    /// Enqueues without waiting: a full queue is answered at once.
    pub fn submit(&self, mut job: Job) -> InferResult<()> {
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.closed {
            return Err(InferError::Unavailable(format!(
                "model '{}' is unloading",
                self.shared.spec.name
            )));
        }
        let limit = self.shared.policy.levels[job.level].max_queue_size;
        if queue.level_len(job.level) >= limit {
            return Err(InferError::ResourceExhausted(format!(
                "inference request for model '{}' rejected: the queue is full ({limit} requests waiting at priority {})",
                self.shared.spec.name,
                job.level + 1
            )));
        }
        job.seq = queue.next_seq();
        queue.push(job);
        // A busy instance finds the job when it next looks; only a sleeping one needs the (syscall) wake-up.
        let wake = queue.idle > 0;
        drop(queue);
        if wake {
            self.shared.changed.notify_one();
        }
        Ok(())
    }

    /// Requests waiting for an instance.
    pub fn queue_depth(&self) -> usize {
        self.load().queued
    }

    pub fn load(&self) -> Load {
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
