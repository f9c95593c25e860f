//! One instance's thread: take the next request (and, when batching, those queued behind it that fit),
//! execute them as one batch, and answer each with its own rows.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::batch::{batch_shape, compatible, split_output, AlignedBuf};
use super::{BatchPolicy, Job};
use crate::backend::{BackendError, BatchInput, BatchOutput, Instance};
use crate::error::InferError;
use crate::model::ModelSpec;
use crate::stats::{FailReason, Stats};
use crate::tensor::Tensor;

pub struct Worker {
    rx: Receiver<Job>,
    instance: Box<dyn Instance>,
    spec: Arc<ModelSpec>,
    policy: BatchPolicy,
    stats: Arc<Stats>,
    // Reused from batch to batch.
    buffers: Vec<AlignedBuf>,
    shapes: Vec<Vec<i64>>,
    outputs: Vec<BatchOutput>,
}

impl Worker {
    pub fn new(
        rx: Receiver<Job>,
        instance: Box<dyn Instance>,
        spec: Arc<ModelSpec>,
        policy: BatchPolicy,
        stats: Arc<Stats>,
    ) -> Self {
        let n = spec.inputs.len();
        Self {
            rx,
            instance,
            spec,
            policy,
            stats,
            buffers: (0..n).map(|_| AlignedBuf::default()).collect(),
            shapes: vec![Vec::new(); n],
            outputs: Vec::new(),
        }
    }

    /// A job whose caller has gone (connection closed, RPC cancelled) is dropped before it runs.
    fn abandoned(&self, job: &Job) -> bool {
        if job.reply.is_closed() {
            self.stats
                .record_failure(FailReason::Canceled, job.enqueued.elapsed());
            return true;
        }
        false
    }

    pub fn run(mut self) {
        let mut held: Option<Job> = None;
        let mut jobs: Vec<Job> = Vec::new();
        loop {
            let first = match held.take() {
                Some(j) => j,
                // The queue closes when the version is unloaded; whatever was queued has been served by then.
                None => match self.rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
            };
            if self.abandoned(&first) {
                continue;
            }
            let mut rows = first.rows;
            jobs.push(first);
            if self.policy.dynamic {
                while rows < self.policy.max_batch_size {
                    let Ok(job) = self.rx.try_recv() else { break };
                    if self.abandoned(&job) {
                        continue;
                    }
                    if rows + job.rows > self.policy.max_batch_size || !compatible(&jobs[0], &job) {
                        held = Some(job);
                        break;
                    }
                    rows += job.rows;
                    jobs.push(job);
                }
            }
            self.execute(&mut jobs, rows);
        }
    }

    fn execute(&mut self, jobs: &mut Vec<Job>, rows: usize) {
        let start = Instant::now();
        for job in jobs.iter() {
            self.stats.queue.add(start.duration_since(job.enqueued));
        }
        match self.guarded(jobs, rows, start) {
            Ok(results) => {
                for (job, outputs) in jobs.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(outputs));
                }
            }
            // One bad request must not fail the others it was batched with: run each on its own.
            Err(_) if jobs.len() > 1 => {
                for job in jobs.drain(..) {
                    let single = std::slice::from_ref(&job);
                    let result = self
                        .guarded(single, job.rows, Instant::now())
                        .map(|mut r| r.remove(0));
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Runs a batch, turning a panic inside the backend into an error for its requests.
    fn guarded(
        &mut self,
        jobs: &[Job],
        rows: usize,
        start: Instant,
    ) -> Result<Vec<Vec<Tensor>>, InferError> {
        let mut results: Vec<Vec<Tensor>> = jobs
            .iter()
            .map(|_| Vec::with_capacity(self.spec.outputs.len()))
            .collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.run_batch(jobs, rows, start, &mut results)
        }));
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
            self.buffers[i].fill(
                jobs.iter()
                    .filter_map(|j| j.inputs[i].as_ref())
                    .map(|t| &t.data[..]),
            );
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
            .map_err(|e| match e {
                BackendError::InvalidInput(m) => InferError::InvalidArgument(m),
                other => InferError::Internal(other.to_string()),
            })?;
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
