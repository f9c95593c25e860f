//! Per model version: a bounded queue in front of the version's instances. Each instance runs on its own OS
//! thread, pulls work from the shared queue, and (with dynamic batching) folds the requests waiting behind
//! the first into one batch of up to `max_batch_size` rows. Tokio tasks only enqueue and await a oneshot.
mod batch;
mod instance;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use crate::backend::Instance;
use crate::error::{InferError, InferResult};
use crate::model::ModelSpec;
use crate::stats::Stats;
use crate::tensor::Tensor;

/// The queue's bound when the config sets none (Triton's is unbounded; an unbounded queue only turns
/// overload into memory growth and timeouts).
pub const DEFAULT_QUEUE_SIZE: usize = 4096;

/// One request waiting to run: validated inputs in the model's order.
pub struct Job {
    pub inputs: Vec<Option<Tensor>>,
    pub rows: usize,
    pub enqueued: Instant,
    /// Every output of the model, in the model's order.
    pub reply: oneshot::Sender<InferResult<Vec<Tensor>>>,
}

#[derive(Clone, Debug)]
pub struct BatchPolicy {
    /// Rows per execution; 0 when the model does not batch.
    pub max_batch_size: usize,
    /// Combine queued requests into one execution (config `dynamic_batching`).
    pub dynamic: bool,
    pub queue_size: usize,
}

pub struct Scheduler {
    tx: Sender<Job>,
    model: String,
    queue_size: usize,
}

impl Scheduler {
    pub fn start(
        spec: Arc<ModelSpec>,
        instances: Vec<Box<dyn Instance>>,
        policy: BatchPolicy,
        stats: Arc<Stats>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(policy.queue_size.max(1));
        for (i, instance) in instances.into_iter().enumerate() {
            let worker = instance::Worker::new(
                rx.clone(),
                instance,
                spec.clone(),
                policy.clone(),
                stats.clone(),
            );
            let name = format!("{}-{i}", spec.name);
            // A thread that cannot start leaves the others serving; the load reports no error for it.
            if let Err(e) = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker.run())
            {
                tracing::error!(model = %spec.name, "cannot start instance thread: {e}");
            }
        }
        Self {
            tx,
            model: spec.name.clone(),
            queue_size: policy.queue_size,
        }
    }

    /// Enqueues without waiting: a full queue is answered at once.
    pub fn submit(&self, job: Job) -> InferResult<()> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => InferError::ResourceExhausted(format!(
                "inference request for model '{}' rejected: the queue is full ({} requests waiting)",
                self.model, self.queue_size
            )),
            TrySendError::Disconnected(_) => InferError::Unavailable(format!("model '{}' has no running instance", self.model)),
        })
    }

    /// Requests waiting for an instance.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }
}
