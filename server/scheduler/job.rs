//! A request's stay in the scheduler: the job an instance takes from the queue, the state its timeout races
//! on, and its reply. A reply can only leave through `Reply::send`, which goes through the version's response
//! order; a reply dropped unanswered (the job forgotten, timed out, or lost to a panic) gives up its place in
//! that order instead of holding every later request up.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

use super::order::Order;
use crate::error::InferResult;
use crate::tensor::Tensor;

pub(super) type Outcome = InferResult<Vec<Tensor>>;

/// Where a request with a timeout stands, so that its timeout and its start cannot both win.
#[derive(Default)]
pub(super) struct JobState(AtomicU8);

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const TIMED_OUT: u8 = 2;

impl JobState {
    /// The instance takes the job; false if its timeout fired first.
    pub(super) fn start(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The timeout fires; false if an instance already runs the job.
    pub(super) fn time_out(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(super) fn timed_out(&self) -> bool {
        self.0.load(Ordering::Acquire) == TIMED_OUT
    }
}

/// When an instance ran a traced request: written once by the instance, read by the caller after the reply.
#[derive(Debug, Default)]
pub struct Executed(OnceLock<(Instant, Instant)>);

impl Executed {
    pub(super) fn record(&self, start: Instant, end: Instant) {
        let _ = self.0.set((start, end));
    }

    /// Compute start and end, once the request has run.
    pub fn times(&self) -> Option<(Instant, Instant)> {
        self.0.get().copied()
    }
}

/// The way back to a request's caller, holding its place in the version's response order.
pub(super) struct Reply {
    tx: Option<oneshot::Sender<Outcome>>,
    seq: u64,
    order: Arc<Order>,
    /// Where a traced request's compute times go.
    executed: Option<Arc<Executed>>,
}

impl Reply {
    pub(super) fn new(tx: oneshot::Sender<Outcome>, seq: u64, order: Arc<Order>) -> Self {
        Self {
            tx: Some(tx),
            seq,
            order,
            executed: None,
        }
    }

    /// The reply of a traced request, which is told when its request ran.
    pub(super) fn traced(mut self, executed: Option<Arc<Executed>>) -> Self {
        self.executed = executed;
        self
    }

    pub(super) fn executed(&self) -> Option<&Executed> {
        self.executed.as_deref()
    }

    /// Answers the request, in its turn when the version preserves ordering.
    pub(super) fn send(mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            self.order.finish(self.seq, Some((tx, outcome)));
        }
    }

    /// The caller is gone (connection closed, call cancelled, or the caller's future dropped).
    pub(super) fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(oneshot::Sender::is_closed)
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.tx.take().is_some() {
            self.order.finish(self.seq, None);
        }
    }
}

/// One request waiting to run: validated inputs in the model's order.
pub(super) struct Job {
    pub inputs: Vec<Option<Tensor>>,
    pub rows: usize,
    /// Tokens per row, for a text model's token budget (0 otherwise).
    pub tokens: usize,
    pub enqueued: Instant,
    /// 0-based priority level (0 is the highest).
    pub level: usize,
    /// When the request's queue timeout fires, if it has one.
    pub deadline: Option<Instant>,
    /// Shared with the waiting caller when the request has a deadline.
    pub state: Option<Arc<JobState>>,
    /// Every output of the model, in the model's order.
    pub reply: Reply,
}

impl Job {
    /// Arrival order.
    pub(super) fn seq(&self) -> u64 {
        self.reply.seq
    }

    /// The caller is gone: its connection closed, its RPC was cancelled, or its timeout fired.
    pub(super) fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.timed_out()
    }

    pub(super) fn timed_out(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.timed_out())
    }

    /// An instance takes the job; false if its timeout fired a moment ago (the caller already has its error).
    pub(super) fn start(&self) -> bool {
        self.state.as_ref().is_none_or(|s| s.start())
    }
}
