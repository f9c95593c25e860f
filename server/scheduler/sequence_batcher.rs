//! The sequence batcher of a stateful model (`sequence_batching`): takes each request into its sequence
//! (`sequence::SequenceQueue`) and runs one thread per instance that executes what the queue plans, filling in
//! the inputs the client does not send: the control inputs (START on a sequence's first request, END on its
//! last, READY on every row that carries a request, CORRID its id) and each implicit state (zeros on START,
//! else what the sequence's previous request left in the state output).
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::batch::{batch_shape, split_output, AlignedBuf};
use super::job::{Job, Reply};
use super::order::Order;
use super::sequence::{Finished, Row, SeqPlan, SequenceQueue};
use super::sequence_policy::{ControlKind, ControlValue, SequencePolicy};
use super::{Load, Submission, DEFAULT_QUEUE_SIZE};
use crate::backend::{BatchInput, BatchOutput, Instance};
use crate::error::{InferError, InferResult};
use crate::request::SequenceId;
use crate::spec::ModelSpec;
use crate::stats::Stats;
use crate::tensor::{push_bytes_element, DataType, Tensor};

struct Shared {
    queue: Mutex<SequenceQueue>,
    changed: Condvar,
    policy: SequencePolicy,
    spec: Arc<ModelSpec>,
    stats: Arc<Stats>,
    /// Sequence models answer each request as soon as it is done.
    order: Arc<Order>,
    instances: usize,
}

pub struct SequenceBatcher {
    shared: Arc<Shared>,
}

impl SequenceBatcher {
    pub fn start(
        spec: Arc<ModelSpec>,
        instances: Vec<Box<dyn Instance>>,
        policy: SequencePolicy,
        stats: Arc<Stats>,
    ) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(SequenceQueue::new(instances.len(), policy.slots_per_instance())),
            changed: Condvar::new(),
            order: Arc::new(Order::new(false)),
            instances: instances.len(),
            policy,
            spec,
            stats,
        });
        for (index, instance) in instances.into_iter().enumerate() {
            let worker = Worker::new(shared.clone(), index, instance);
            let name = format!("{}-seq-{index}", shared.spec.name);
            if let Err(e) = std::thread::Builder::new().name(name).spawn(move || {
                worker.run();
                crate::memory::return_freed_memory();
            }) {
                tracing::error!(model = %shared.spec.name, "cannot start instance thread: {e}");
            }
        }
        Self { shared }
    }

    /// Queues a request behind its sequence's earlier ones and resolves to every output of the model.
    pub async fn submit(&self, request: Submission) -> InferResult<Vec<Tensor>> {
        let spec = &self.shared.spec;
        let Some(seq) = request.sequence else {
            return Err(InferError::invalid(format!(
                "inference request to model '{}' must specify a non-zero or non-empty correlation ID",
                spec.name
            )));
        };
        if spec.batches() && request.rows != 1 {
            return Err(InferError::invalid(format!(
                "inference request to sequence model '{}' must have batch size 1, got {}",
                spec.name, request.rows
            )));
        }
        // A numeric CORRID takes a string id that holds an integer (as Triton's dyna backends parse it);
        // anything else is the client's mistake, refused here rather than failing inside the model.
        if let (SequenceId::Text(id), None) = (&seq.id, seq.id.as_number()) {
            let numeric =
                self.shared.policy.controls.iter().find(|c| {
                    c.kind == ControlKind::CorrId && !matches!(c.value, ControlValue::CorrId(DataType::Bytes))
                });
            if let Some(c) = numeric {
                return Err(InferError::invalid(format!(
                    "sequence id '{id}' to model '{}' must be an integer: its CORRID control input '{}' is {}",
                    spec.name,
                    c.name,
                    c.datatype()
                )));
            }
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.closed {
                return Err(InferError::Unavailable(format!("model '{}' is unloading", spec.name)));
            }
            if queue.len() >= DEFAULT_QUEUE_SIZE {
                return Err(InferError::ResourceExhausted(format!(
                    "inference request for model '{}' rejected: the queue is full ({DEFAULT_QUEUE_SIZE} requests waiting)",
                    spec.name
                )));
            }
            let order_seq = queue.next_seq();
            let job = Job {
                inputs: request.inputs,
                rows: request.rows,
                tokens: request.tokens,
                enqueued: request.received,
                level: 0,
                deadline: None,
                state: None,
                reply: Reply::new(tx, order_seq, self.shared.order.clone()).traced(request.executed),
            };
            queue.enqueue(&self.shared.policy, &spec.name, job, &seq, Instant::now())?;
        }
        // Requests wait for their own instance, so every sleeping one looks.
        self.shared.changed.notify_all();
        rx.await
            .map_err(|_| InferError::Internal(format!("model '{}' dropped the request", spec.name)))?
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

impl Drop for SequenceBatcher {
    /// The version is being released: instances finish what is queued, then their threads end.
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
        }
        self.shared.changed.notify_all();
    }
}

/// Buffers and shapes of one batch's inputs: the config's inputs, then the controls, then the states.
struct Feed {
    buffers: Vec<AlignedBuf>,
    shapes: Vec<Vec<i64>>,
    scratch: Vec<u8>,
}

struct Worker {
    shared: Arc<Shared>,
    index: usize,
    instance: Box<dyn Instance>,
    spec: Arc<ModelSpec>,
    feed: Feed,
    outputs: Vec<BatchOutput>,
}

/// Each request's outputs and each row's state outputs.
type Executed = (Vec<Vec<Tensor>>, Vec<Vec<Bytes>>);

/// A caller's answer, sent once its sequence's state is recorded.
type Answer = (Reply, InferResult<Vec<Tensor>>);

impl Worker {
    fn new(shared: Arc<Shared>, index: usize, instance: Box<dyn Instance>) -> Self {
        let n = shared.spec.inputs.len() + shared.policy.controls.len() + shared.policy.states.len();
        Self {
            spec: shared.spec.clone(),
            shared,
            index,
            instance,
            feed: Feed {
                buffers: (0..n).map(|_| AlignedBuf::default()).collect(),
                shapes: vec![Vec::new(); n],
                scratch: Vec::new(),
            },
            outputs: Vec::new(),
        }
    }

    fn run(mut self) {
        let shared = self.shared.clone();
        let lock = || shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut queue = lock();
        loop {
            let now = Instant::now();
            match queue.plan(&shared.policy, self.index, now) {
                SeqPlan::Run(jobs, rows) => {
                    drop(queue);
                    let (finished, replies) = self.execute(jobs, rows);
                    queue = lock();
                    queue.finish(finished, Instant::now());
                    // A finished row may let the sequence's next request run, or free a slot for the backlog
                    // (on any instance).
                    let wake = queue.idle > 0;
                    drop(queue);
                    if wake {
                        shared.changed.notify_all();
                    }
                    for (reply, outcome) in replies {
                        reply.send(outcome);
                    }
                    queue = lock();
                }
                SeqPlan::WaitUntil(due) => {
                    queue = super::wait_idle(&shared.changed, queue, Some(due.saturating_duration_since(now)));
                }
                SeqPlan::Empty if queue.closed && queue.drained(self.index) => return,
                SeqPlan::Empty => queue = super::wait_idle(&shared.changed, queue, None),
            }
        }
    }

    /// Runs the batch (each row alone if the batch fails, so one bad request does not fail the others) and
    /// returns what each sequence keeps and each caller gets; replies are sent once the state is recorded.
    fn execute(&mut self, jobs: Vec<Job>, rows: Vec<Row>) -> (Vec<Finished>, Vec<Answer>) {
        let start = Instant::now();
        for job in &jobs {
            self.shared.stats.record_queue(start.duration_since(job.enqueued));
        }
        let mut finished = Vec::with_capacity(rows.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let outcome = self.guarded(&jobs, &rows, start);
        // A traced request learns when it ran.
        let end = Instant::now();
        for executed in jobs.iter().filter_map(|j| j.reply.executed()) {
            executed.record(start, end);
        }
        match outcome {
            Ok((results, states)) => {
                for (((job, row), outputs), state) in jobs.into_iter().zip(rows).zip(results).zip(states) {
                    finished.push(Finished {
                        id: row.id,
                        end: row.end,
                        state: Some(state),
                    });
                    replies.push((job.reply, Ok(outputs)));
                }
            }
            Err(e) => {
                let alone = jobs.len() > 1;
                for (job, row) in jobs.into_iter().zip(rows) {
                    let outcome = if alone {
                        self.guarded(std::slice::from_ref(&job), std::slice::from_ref(&row), Instant::now())
                    } else {
                        Err(e.clone())
                    };
                    let (state, outcome) = match outcome {
                        Ok((mut results, mut states)) => (states.pop(), Ok(results.remove(0))),
                        Err(e) => (None, Err(e)),
                    };
                    finished.push(Finished {
                        id: row.id,
                        end: row.end,
                        state,
                    });
                    replies.push((job.reply, outcome));
                }
            }
        }
        (finished, replies)
    }

    fn guarded(&mut self, jobs: &[Job], rows: &[Row], start: Instant) -> InferResult<Executed> {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.run_batch(jobs, rows, start)));
        let outcome = outcome.unwrap_or_else(|_| {
            Err(InferError::Internal(format!(
                "model '{}' panicked while executing",
                self.spec.name
            )))
        });
        if let Err(e) = &outcome {
            tracing::warn!(model = %self.spec.name, requests = jobs.len(), "execution failed: {e}");
        }
        outcome
    }

    fn run_batch(&mut self, jobs: &[Job], rows: &[Row], start: Instant) -> InferResult<Executed> {
        let spec = self.spec.clone();
        let policy = &self.shared.policy;
        let n = rows.len();
        let feed = &mut self.feed;
        let mut present = Vec::with_capacity(feed.buffers.len());
        for (i, input) in spec.inputs.iter().enumerate() {
            let Some(first) = &jobs[0].inputs[i] else {
                continue;
            };
            batch_shape(&spec, input, first, n, &mut feed.shapes[i]);
            feed.buffers[i].fill(jobs.iter().filter_map(|j| j.inputs[i].as_ref()).map(|t| &t.data[..]));
            present.push(i);
        }
        // Control and state tensors are [rows, ...] when the model batches, and without that dimension when not.
        let lead: &[i64] = if spec.batches() { &[n as i64] } else { &[] };
        let base = spec.inputs.len();
        for (k, control) in policy.controls.iter().enumerate() {
            feed.scratch.clear();
            for row in rows {
                match &control.value {
                    ControlValue::Flag(flag) => flag.push(
                        match control.kind {
                            ControlKind::Start => row.start,
                            ControlKind::End => row.end,
                            ControlKind::Ready | ControlKind::CorrId => true,
                        },
                        &mut feed.scratch,
                    ),
                    ControlValue::CorrId(datatype) => push_corrid(&row.id, *datatype, &mut feed.scratch)?,
                }
            }
            let i = base + k;
            feed.shapes[i].clear();
            feed.shapes[i].extend_from_slice(lead);
            feed.shapes[i].push(1);
            feed.buffers[i].fill(std::iter::once(&feed.scratch[..]));
            present.push(i);
        }
        let base = base + policy.controls.len();
        for (k, state) in policy.states.iter().enumerate() {
            let zeros = vec![0u8; state.row_bytes()];
            let i = base + k;
            feed.buffers[i].fill(rows.iter().map(|r| match &r.state {
                Some(s) => s.get(k).map_or(&zeros[..], |b| &b[..]),
                None => &zeros[..],
            }));
            feed.shapes[i].clear();
            feed.shapes[i].extend_from_slice(lead);
            feed.shapes[i].extend_from_slice(&state.dims);
            present.push(i);
        }
        let name_of = |i: usize| -> (&str, DataType) {
            let controls = spec.inputs.len();
            let states = controls + policy.controls.len();
            if i < controls {
                (&spec.inputs[i].name, spec.inputs[i].datatype)
            } else if i < states {
                let c = &policy.controls[i - controls];
                (&c.name, c.datatype())
            } else {
                let s = &policy.states[i - states];
                (&s.input_name, s.datatype)
            }
        };
        let inputs: Vec<BatchInput<'_>> = present
            .iter()
            .map(|&i| {
                let (name, datatype) = name_of(i);
                BatchInput {
                    name,
                    datatype,
                    shape: &feed.shapes[i],
                    data: feed.buffers[i].bytes(),
                }
            })
            .collect();
        let infer_start = Instant::now();
        self.instance
            .execute(&inputs, &mut self.outputs)
            .map_err(InferError::from)?;
        let infer_end = Instant::now();
        let expected = spec.outputs.len() + policy.states.len();
        if self.outputs.len() != expected {
            return Err(InferError::Internal(format!(
                "model '{}' returned {} outputs, expected {expected} (its outputs and its state outputs)",
                spec.name,
                self.outputs.len()
            )));
        }
        let mut results: Vec<Vec<Tensor>> = jobs.iter().map(|_| Vec::with_capacity(spec.outputs.len())).collect();
        for (out_spec, out) in spec.outputs.iter().zip(self.outputs.iter_mut()) {
            split_output(&spec, out_spec, out, jobs, n, &mut results)?;
        }
        let mut states: Vec<Vec<Bytes>> = rows.iter().map(|_| Vec::with_capacity(policy.states.len())).collect();
        for (state, out) in policy.states.iter().zip(&self.outputs[spec.outputs.len()..]) {
            let row_bytes = state.row_bytes();
            let mut want = lead.to_vec();
            want.extend_from_slice(&state.dims);
            if out.shape != want || out.data.len() != row_bytes * n {
                return Err(InferError::Internal(format!(
                    "model '{}' returned state output '{}' with shape {:?}, expected {want:?}",
                    spec.name, state.output_name, out.shape
                )));
            }
            for (r, kept) in states.iter_mut().enumerate() {
                kept.push(Bytes::copy_from_slice(&out.data[r * row_bytes..(r + 1) * row_bytes]));
            }
        }
        let end = Instant::now();
        self.shared.stats.record_execution(
            n,
            jobs.len() as u64,
            infer_start - start,
            infer_end - infer_start,
            end - infer_end,
        );
        Ok((results, states))
    }
}

/// A row's correlation id in the CORRID control's datatype (numbers wrap to narrower types, as Triton casts).
fn push_corrid(id: &SequenceId, datatype: DataType, out: &mut Vec<u8>) -> InferResult<()> {
    let parsed = id.as_number().map(SequenceId::Number);
    let id = match datatype {
        DataType::Bytes => id,
        _ => parsed.as_ref().unwrap_or(id),
    };
    match (id, datatype) {
        (SequenceId::Number(n), DataType::Uint64) => out.extend_from_slice(&n.to_le_bytes()),
        (SequenceId::Number(n), DataType::Int64) => out.extend_from_slice(&(*n as i64).to_le_bytes()),
        (SequenceId::Number(n), DataType::Uint32) => out.extend_from_slice(&(*n as u32).to_le_bytes()),
        (SequenceId::Number(n), DataType::Int32) => out.extend_from_slice(&(*n as i32).to_le_bytes()),
        (id, DataType::Bytes) => push_bytes_element(out, id.to_string().as_bytes()),
        (id, other) => {
            return Err(InferError::invalid(format!(
                "sequence id '{id}' cannot be given as a {other} CORRID"
            )))
        }
    }
    Ok(())
}
