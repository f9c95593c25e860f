//! One instance's thread: take the next request (and, when batching, those queued behind it that fit),
//! execute them as one batch, and answer each with its own rows.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use super::batch::{batch_shape, split_output, AlignedBuf};
use super::queue::Plan;
use super::{Job, Shared};
use crate::backend::{BatchInput, BatchOutput, Instance};
use crate::error::InferError;
use crate::spec::ModelSpec;
use crate::stats::{FailReason, Stats};
use crate::tensor::Tensor;

pub struct Worker {
    shared: Arc<Shared>,
    instance: Box<dyn Instance>,
    spec: Arc<ModelSpec>,
    stats: Arc<Stats>,
    // Reused from batch to batch.
    buffers: Vec<AlignedBuf>,
    shapes: Vec<Vec<i64>>,
    outputs: Vec<BatchOutput>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, instance: Box<dyn Instance>) -> Self {
        let n = shared.spec.inputs.len();
        Self {
            spec: shared.spec.clone(),
            stats: shared.stats.clone(),
            shared,
            instance,
            buffers: (0..n).map(|_| AlignedBuf::default()).collect(),
            shapes: vec![Vec::new(); n],
            outputs: Vec::new(),
        }
    }

    /// A job whose caller has gone (connection closed, RPC cancelled, timeout fired) never runs; dropping it
    /// gives up its place in the response order. A timeout was already counted by the caller; a vanished
    /// client is counted here.
    fn forget(&self, job: Job) {
        if !job.timed_out() {
            self.stats.record_failure(FailReason::Canceled, job.enqueued.elapsed());
        }
    }

    pub fn run(mut self) {
        let shared = self.shared.clone();
        let lock = || shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut queue = lock();
        let mut dropped = Vec::new();
        loop {
            let now = Instant::now();
            let plan = queue.plan(&shared.policy, now, &mut dropped);
            for job in dropped.drain(..) {
                self.forget(job);
            }
            match plan {
                Plan::Run(mut jobs) => {
                    // A job whose timeout fired a moment ago stays with its caller's error.
                    jobs.retain(Job::start);
                    let more = !queue.is_empty() && queue.idle > 0;
                    drop(queue);
                    // An idle peer forms the next batch while this one runs.
                    if more {
                        shared.changed.notify_one();
                    }
                    if !jobs.is_empty() {
                        let rows = jobs.iter().map(|j| j.rows).sum();
                        self.execute(&mut jobs, rows);
                    }
                    queue = lock();
                }
                Plan::WaitUntil(due) => {
                    queue = super::wait_idle(&shared.changed, queue, Some(due.saturating_duration_since(now)));
                }
                Plan::Empty if queue.closed => return,
                Plan::Empty => queue = super::wait_idle(&shared.changed, queue, None),
            }
        }
    }

    fn execute(&mut self, jobs: &mut Vec<Job>, rows: usize) {
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
        for (i, input) in spec.inputs.iter().enumerate() {
            let Some(first) = &jobs[0].inputs[i] else {
                continue;
            };
            batch_shape(&spec, input, first, rows, &mut self.shapes[i]);
            self.buffers[i].fill(jobs.iter().filter_map(|j| j.inputs[i].as_ref()).map(|t| &t.data[..]));
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
                data: self.buffers[i].bytes(),
            })
            .collect();
        let infer_start = Instant::now();
        self.instance
            .execute(&inputs, &mut self.outputs)
            .map_err(super::execution_error)?;
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
