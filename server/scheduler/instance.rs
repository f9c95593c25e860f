//! One instance: its executor (the backend instance and the buffers a batch is put together in) and the thread
//! that drives it, taking the next request (and, when batching, those queued behind it that fit), executing them
//! as one batch and answering each with its own rows. A caller may claim an idle executor to run the queue on
//! its own thread (`Scheduler::submit`, for fast models with nothing queued); the executor's lock keeps the two
//! from running it at once.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::batch::{aligned, batch_shape, split_output, AlignedBuf};
use super::queue::Plan;
use super::{Job, Shared};
use crate::backend::{BatchInput, BatchOutput, Instance};
use crate::error::InferError;
use crate::spec::ModelSpec;
use crate::stats::{FailReason, Stats};
use crate::tensor::Tensor;

/// What runs a batch on one instance. `None` in its slot once the instance's thread has ended.
pub(super) type Slot = std::sync::Mutex<Option<Executor>>;

pub(super) struct Executor {
    instance: Box<dyn Instance>,
    spec: Arc<ModelSpec>,
    stats: Arc<Stats>,
    // Reused from batch to batch.
    buffers: Vec<AlignedBuf>,
    shapes: Vec<Vec<i64>>,
    outputs: Vec<BatchOutput>,
}

/// The thread of the instance in slot `slot`.
pub(super) struct Worker {
    shared: Arc<Shared>,
    slot: usize,
}

/// Locks an executor's slot (a panic while executing is caught inside, so a poisoned lock holds nothing broken).
pub(super) fn lock_slot(slot: &Slot) -> MutexGuard<'_, Option<Executor>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>, slot: usize) -> Self {
        Self { shared, slot }
    }

    pub(super) fn run(self) {
        let shared = self.shared;
        let lock = || shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut queue = lock();
        let mut dropped = Vec::new();
        loop {
            let now = Instant::now();
            match shared.plan(&mut queue, now, &mut dropped) {
                Plan::Run(jobs) => {
                    // Taken before the queue is let go: a caller only claims an executor it finds unlocked then.
                    let mut executor = lock_slot(&shared.slots[self.slot]);
                    shared.run_batch(queue, jobs, &mut executor);
                    drop(executor);
                    queue = lock();
                }
                Plan::WaitUntil(due) => {
                    queue = super::wait_idle(&shared.changed, queue, Some(due.saturating_duration_since(now)));
                }
                Plan::Empty if queue.closed => break,
                Plan::Empty => queue = super::wait_idle(&shared.changed, queue, None),
            }
        }
        drop(queue);
        // The instance (a session, weights) is dropped on its own thread, not on whichever drops the scheduler last.
        drop(lock_slot(&shared.slots[self.slot]).take());
    }
}

/// A job whose caller has gone (connection closed, RPC cancelled, timeout fired) never runs; dropping it gives
/// up its place in the response order. A timeout was already counted by the caller; a vanished client is counted
/// here.
pub(super) fn forget(stats: &Stats, job: Job) {
    if !job.timed_out() {
        stats.record_failure(FailReason::Canceled, job.enqueued.elapsed());
    }
}

impl Executor {
    pub(super) fn new(spec: Arc<ModelSpec>, stats: Arc<Stats>, instance: Box<dyn Instance>) -> Self {
        let n = spec.inputs.len();
        Self {
            instance,
            spec,
            stats,
            buffers: (0..n).map(|_| AlignedBuf::default()).collect(),
            shapes: vec![Vec::new(); n],
            outputs: Vec::new(),
        }
    }

    /// Runs `jobs` (taken from the queue, started) as one batch and answers each.
    pub(super) fn execute(&mut self, jobs: &mut Vec<Job>) {
        let rows = jobs.iter().map(|j| j.rows).sum();
        let start = Instant::now();
        for job in jobs.iter() {
            self.stats.record_queue(start.duration_since(job.enqueued));
        }
        match self.guarded(jobs, rows, start) {
            Ok(results) => {
                note_executed(jobs, start);
                for (job, outputs) in jobs.drain(..).zip(results) {
                    job.reply.send(Ok(outputs));
                }
            }
            // One bad request must not fail the others it was batched with: run each on its own.
            Err(_) if jobs.len() > 1 => {
                for job in jobs.drain(..) {
                    let single = std::slice::from_ref(&job);
                    let alone = Instant::now();
                    let result = self.guarded(single, job.rows, alone).map(|mut r| r.remove(0));
                    note_executed(single, alone);
                    job.reply.send(result);
                }
            }
            Err(e) => {
                note_executed(jobs, start);
                for job in jobs.drain(..) {
                    job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Runs a batch, turning a panic inside the backend into an error for its requests.
    fn guarded(&mut self, jobs: &[Job], rows: usize, start: Instant) -> Result<Vec<Vec<Tensor>>, InferError> {
        let mut results: Vec<Vec<Tensor>> = jobs
            .iter()
            .map(|_| Vec::with_capacity(self.spec.outputs.len()))
            .collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| self.run_batch(jobs, rows, start, &mut results)));
        let outcome = outcome.unwrap_or_else(|_| {
            Err(InferError::Internal(format!(
                "model '{}' panicked while executing",
                self.spec.name
            )))
        });
        if let Err(e) = &outcome {
            tracing::warn!(model = %self.spec.name, requests = jobs.len(), "execution failed: {e}");
        }
        outcome.map(|()| results)
    }

    fn run_batch(
        &mut self,
        jobs: &[Job],
        rows: usize,
        start: Instant,
        results: &mut [Vec<Tensor>],
    ) -> Result<(), InferError> {
        let spec = self.spec.clone();
        // A request alone whose bytes are aligned goes to the model without being copied.
        let own = |i: usize| match (jobs, &jobs[0].inputs[i]) {
            ([_], Some(t)) if aligned(&t.data) => Some(&t.data[..]),
            _ => None,
        };
        for (i, input) in spec.inputs.iter().enumerate() {
            let Some(first) = &jobs[0].inputs[i] else {
                continue;
            };
            batch_shape(&spec, input, first, rows, &mut self.shapes[i]);
            if own(i).is_none() {
                self.buffers[i].fill(jobs.iter().filter_map(|j| j.inputs[i].as_ref()).map(|t| &t.data[..]));
            }
        }
        let inputs: Vec<BatchInput<'_>> = spec
            .inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| jobs[0].inputs[*i].is_some())
            .map(|(i, s)| BatchInput {
                name: &s.name,
                datatype: s.datatype,
                shape: &self.shapes[i],
                data: own(i).unwrap_or_else(|| self.buffers[i].bytes()),
            })
            .collect();
        let infer_start = Instant::now();
        self.instance
            .execute(&inputs, &mut self.outputs)
            .map_err(InferError::from)?;
        let infer_end = Instant::now();
        if self.outputs.len() != spec.outputs.len() {
            return Err(InferError::Internal(format!(
                "model '{}' returned {} outputs, expected {}",
                spec.name,
                self.outputs.len(),
                spec.outputs.len()
            )));
        }
        for (out_spec, out) in spec.outputs.iter().zip(self.outputs.iter_mut()) {
            split_output(&spec, out_spec, out, jobs, rows, results)?;
        }
        let end = Instant::now();
        self.stats.record_execution(
            rows,
            jobs.len() as u64,
            infer_start - start,
            infer_end - infer_start,
            end - infer_end,
        );
        Ok(())
    }
}

/// Tells traced requests when they ran (the rest carry no record, and cost a check each).
fn note_executed(jobs: &[Job], start: Instant) {
    let end = Instant::now();
    for executed in jobs.iter().filter_map(|j| j.reply.executed()) {
        executed.record(start, end);
    }
}
