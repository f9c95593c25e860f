//! The sequence batcher's bookkeeping and decisions, pure logic under its lock (the instances act on its
//! plans, as with `Queue::plan`): which sequence holds which slot of which instance, each sequence's requests
//! waiting in order, its implicit state between requests, the backlog of sequences waiting for a slot, and the
//! release of sequences that went idle.
//!
//! A sequence's requests run one at a time, in arrival order, on the instance whose slot it holds; requests of
//! different sequences on one instance run together as one batch. A non-start request for a correlation id the
//! batcher does not hold (never started, ended, or released after `max_sequence_idle`) is refused at once.
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::batch::compatible;
use super::job::Job;
use super::sequence_policy::{SequencePolicy, Strategy};
use crate::error::InferError;
use crate::request::{SequenceId, SequenceRequest};

/// One row of a batch as the sequence batcher sees it: whose it is and what the controls say.
#[derive(Debug)]
pub struct Row {
    pub id: SequenceId,
    pub start: bool,
    pub end: bool,
    /// The state the sequence's previous request left, one buffer per state; `None` means initial (zeros).
    pub state: Option<Vec<Bytes>>,
}

/// What a finished row leaves behind.
pub struct Finished {
    pub id: SequenceId,
    pub end: bool,
    /// The state outputs of a successful execution; `None` when it failed (the state stays as it was).
    pub state: Option<Vec<Bytes>>,
}

pub enum SeqPlan {
    /// Run these jobs as one batch, row for row.
    Run(Vec<Job>, Vec<Row>),
    /// Nothing to run before this instant unless a request arrives (a fuller batch, or a sequence to release).
    WaitUntil(Instant),
    Empty,
}

struct Waiting {
    job: Job,
    start: bool,
    end: bool,
}

struct Sequence {
    /// The instance and slot it holds; `None` while in the backlog.
    slot: Option<(usize, usize)>,
    pending: VecDeque<Waiting>,
    running: bool,
    /// The last request enqueued carried END: only a new START may follow.
    ended: bool,
    /// When the sequence last had a request arrive or finish.
    last: Instant,
    state: Option<Vec<Bytes>>,
}

impl Sequence {
    fn idle_since(&self) -> Option<Instant> {
        (self.slot.is_some() && !self.running && self.pending.is_empty()).then_some(self.last)
    }
}

pub struct SequenceQueue {
    sequences: HashMap<SequenceId, Sequence>,
    /// `slots[instance][slot]`: the sequence holding it.
    slots: Vec<Vec<Option<SequenceId>>>,
    /// Started sequences waiting for a free slot, oldest first.
    backlog: VecDeque<SequenceId>,
    /// Requests waiting over all sequences.
    waiting: usize,
    seq: u64,
    pub closed: bool,
    /// Instances asleep waiting for work.
    pub idle: usize,
}

impl SequenceQueue {
    pub fn new(instances: usize, slots_per_instance: usize) -> Self {
        Self {
            sequences: HashMap::new(),
            slots: vec![vec![None; slots_per_instance.max(1)]; instances],
            backlog: VecDeque::new(),
            waiting: 0,
            seq: 0,
            closed: false,
            idle: 0,
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    /// Requests waiting to run.
    pub fn len(&self) -> usize {
        self.waiting
    }

    /// Whether the sequence holds (or waits for) a slot.
    #[cfg(test)]
    pub fn holds(&self, id: &SequenceId) -> bool {
        self.sequences.contains_key(id)
    }

    /// Takes one request of a sequence, in order behind its earlier ones. A non-start request for a sequence
    /// not held is refused in Triton's words.
    pub fn enqueue(
        &mut self,
        policy: &SequencePolicy,
        model: &str,
        job: Job,
        seq: &SequenceRequest,
        now: Instant,
    ) -> Result<(), InferError> {
        self.release_idle(policy, now);
        let waiting = Waiting {
            job,
            start: seq.start,
            end: seq.end,
        };
        match self.sequences.get_mut(&seq.id) {
            Some(s) if seq.start || !s.ended => {
                s.pending.push_back(waiting);
                s.ended = seq.end;
                s.last = now;
            }
            _ if !seq.start => {
                return Err(InferError::invalid(format!(
                    "inference request for sequence {} to model '{model}' must specify the START flag on the first \
                     request of the sequence",
                    seq.id
                )))
            }
            _ => {
                let slot = self.free_slot();
                if let Some((i, s)) = slot {
                    self.slots[i][s] = Some(seq.id.clone());
                } else {
                    self.backlog.push_back(seq.id.clone());
                }
                self.sequences.insert(
                    seq.id.clone(),
                    Sequence {
                        slot,
                        pending: VecDeque::from([waiting]),
                        running: false,
                        ended: seq.end,
                        last: now,
                        state: None,
                    },
                );
            }
        }
        self.waiting += 1;
        Ok(())
    }

    /// The free slot of the least-occupied instance, so sequences spread over instances.
    fn free_slot(&self) -> Option<(usize, usize)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slots)| {
                let used = slots.iter().filter(|s| s.is_some()).count();
                slots.iter().position(Option::is_none).map(|s| (used, i, s))
            })
            .min()
            .map(|(_, i, s)| (i, s))
    }

    /// Gives backlogged sequences the slots that are free.
    fn bind_backlog(&mut self) {
        while !self.backlog.is_empty() {
            let Some((i, s)) = self.free_slot() else { return };
            let Some(id) = self.backlog.pop_front() else { return };
            if let Some(seq) = self.sequences.get_mut(&id) {
                seq.slot = Some((i, s));
                self.slots[i][s] = Some(id);
            }
        }
    }

    /// Forgets a sequence and its state, freeing its slot for the backlog.
    fn release(&mut self, id: &SequenceId) {
        if let Some(Sequence { slot: Some((i, s)), .. }) = self.sequences.remove(id) {
            self.slots[i][s] = None;
            self.bind_backlog();
        }
    }

    /// Releases every sequence idle for `max_idle` (all idle ones once the version is closing).
    fn release_idle(&mut self, policy: &SequencePolicy, now: Instant) {
        let closed = self.closed;
        let expired: Vec<SequenceId> = self
            .sequences
            .iter()
            .filter(|(_, s)| {
                s.idle_since()
                    .is_some_and(|t| closed || now.saturating_duration_since(t) >= policy.max_idle)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::debug!(sequence = %id, "sequence released after max_sequence_idle_microseconds");
            self.release(&id);
        }
    }

    /// When the next idle sequence would be released.
    fn next_release(&self, policy: &SequencePolicy) -> Option<Instant> {
        self.sequences
            .values()
            .filter_map(Sequence::idle_since)
            .min()
            .and_then(|t| t.checked_add(policy.max_idle))
    }

    /// Decides what instance `instance` runs next: one request from each of its sequences that has one ready
    /// (direct: in slot order; oldest: oldest request first, waiting up to the strategy's delay for a fuller
    /// batch).
    pub fn plan(&mut self, policy: &SequencePolicy, instance: usize, now: Instant) -> SeqPlan {
        self.release_idle(policy, now);
        let mut ready: Vec<(Instant, usize, &SequenceId)> = self
            .slots
            .get(instance)
            .map(|slots| {
                slots
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, id)| {
                        let id = id.as_ref()?;
                        let s = self.sequences.get(id)?;
                        let head = s.pending.front().filter(|_| !s.running)?;
                        Some((head.job.enqueued, slot, id))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Strategy::Oldest { .. } = policy.strategy {
            ready.sort_by_key(|&(enqueued, slot, _)| (enqueued, slot));
        }
        // Rows that can share a batch with the first: the same inputs with the same non-batch dimensions.
        let mut picked: Vec<SequenceId> = Vec::new();
        let mut oldest = None;
        let mut head: Option<&Job> = None;
        for (enqueued, _, id) in &ready {
            if picked.len() >= policy.max_batch_size {
                break;
            }
            let Some(job) = self.sequences.get(*id).and_then(|s| s.pending.front()).map(|w| &w.job) else {
                continue;
            };
            if head.is_some_and(|h| !compatible(h, job)) {
                continue;
            }
            head.get_or_insert(job);
            oldest = Some(oldest.map_or(*enqueued, |o: Instant| o.min(*enqueued)));
            picked.push((*id).clone());
        }
        let Some(oldest) = oldest else {
            return match self.next_release(policy) {
                Some(due) => SeqPlan::WaitUntil(due),
                None => SeqPlan::Empty,
            };
        };
        if let Strategy::Direct {
            max_queue_delay,
            minimum_slot_utilization,
        } = &policy.strategy
        {
            let slots = self.slots.get(instance).map_or(1, Vec::len) as f32;
            let due = oldest + *max_queue_delay;
            if (picked.len() as f32) < minimum_slot_utilization * slots && now < due && !self.closed {
                let wake = self.next_release(policy).map_or(due, |r| r.min(due));
                return SeqPlan::WaitUntil(wake);
            }
        }
        if let Strategy::Oldest {
            preferred_batch_sizes,
            max_queue_delay,
            ..
        } = &policy.strategy
        {
            if picked.len() < policy.max_batch_size {
                if let Some(&p) = preferred_batch_sizes.iter().rev().find(|&&p| p <= picked.len()) {
                    picked.truncate(p);
                } else {
                    let due = oldest + *max_queue_delay;
                    if now < due && !self.closed {
                        let wake = self.next_release(policy).map_or(due, |r| r.min(due));
                        return SeqPlan::WaitUntil(wake);
                    }
                }
            }
        }
        let mut jobs = Vec::with_capacity(picked.len());
        let mut rows = Vec::with_capacity(picked.len());
        for id in picked {
            let Some(s) = self.sequences.get_mut(&id) else { continue };
            let Some(w) = s.pending.pop_front() else { continue };
            s.running = true;
            if w.start {
                s.state = None;
            }
            self.waiting -= 1;
            rows.push(Row {
                state: s.state.clone(),
                id,
                start: w.start,
                end: w.end,
            });
            jobs.push(w.job);
        }
        SeqPlan::Run(jobs, rows)
    }

    /// Records what a batch left: each sequence's new state, and the release of those that ended.
    pub fn finish(&mut self, finished: Vec<Finished>, now: Instant) {
        for f in finished {
            let Some(s) = self.sequences.get_mut(&f.id) else {
                continue;
            };
            s.running = false;
            s.last = now;
            if let Some(state) = f.state {
                s.state = Some(state);
            }
            if f.end {
                s.state = None;
                // A new START may already wait behind the END; otherwise the sequence is done.
                if s.pending.is_empty() {
                    self.release(&f.id);
                }
            }
        }
    }

    /// Whether instance `instance` has nothing left to do (for a closing version).
    pub fn drained(&self, instance: usize) -> bool {
        self.backlog.is_empty()
            && self.slots.get(instance).is_none_or(|slots| {
                slots.iter().flatten().all(|id| {
                    self.sequences
                        .get(id)
                        .is_none_or(|s| s.pending.is_empty() && !s.running)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::scheduler::job::{Outcome, Reply};
    use crate::scheduler::order::Order;
    use crate::tensor::{DataType, Tensor};

    fn policy(max_batch_size: usize, strategy: Strategy) -> SequencePolicy {
        SequencePolicy {
            max_batch_size,
            strategy,
            max_idle: Duration::from_millis(100),
            controls: Vec::new(),
            states: Vec::new(),
        }
    }

    fn direct(delay_ms: u64, minimum_slot_utilization: f32) -> Strategy {
        Strategy::Direct {
            max_queue_delay: Duration::from_millis(delay_ms),
            minimum_slot_utilization,
        }
    }

    fn oldest(candidates: usize, preferred: Vec<usize>, delay_ms: u64) -> Strategy {
        Strategy::Oldest {
            max_candidate_sequences: candidates,
            preferred_batch_sizes: preferred,
            max_queue_delay: Duration::from_millis(delay_ms),
        }
    }

    struct Harness {
        q: SequenceQueue,
        p: SequencePolicy,
        keep: Vec<oneshot::Receiver<Outcome>>,
    }

    impl Harness {
        fn new(instances: usize, p: SequencePolicy) -> Self {
            Self {
                q: SequenceQueue::new(instances, p.slots_per_instance()),
                p,
                keep: Vec::new(),
            }
        }

        fn send(&mut self, id: u64, start: bool, end: bool, at: Instant) -> Result<(), InferError> {
            let (tx, rx) = oneshot::channel();
            self.keep.push(rx);
            let seq = self.q.next_seq();
            let job = Job {
                inputs: vec![Some(Tensor {
                    name: "INPUT".into(),
                    datatype: DataType::Int32,
                    shape: vec![1, 1],
                    data: Default::default(),
                })],
                rows: 1,
                tokens: 0,
                enqueued: at,
                level: 0,
                deadline: None,
                state: None,
                reply: Reply::new(tx, seq, Arc::new(Order::new(false))),
            };
            let req = SequenceRequest {
                id: SequenceId::Number(id),
                start,
                end,
            };
            self.q.enqueue(&self.p, "m", job, &req, at)
        }

        /// The sequence ids and START flags of instance `i`'s next batch.
        fn run(&mut self, i: usize, now: Instant) -> Vec<(u64, bool)> {
            match self.q.plan(&self.p, i, now) {
                SeqPlan::Run(_, rows) => rows
                    .iter()
                    .map(|r| match r.id {
                        SequenceId::Number(n) => (n, r.start),
                        SequenceId::Text(_) => panic!("text id"),
                    })
                    .collect(),
                _ => Vec::new(),
            }
        }

        fn done(&mut self, ids: &[(u64, bool)], ended: &[u64], now: Instant) {
            self.q.finish(
                ids.iter()
                    .map(|&(id, _)| Finished {
                        id: SequenceId::Number(id),
                        end: ended.contains(&id),
                        state: Some(vec![Bytes::from(vec![id as u8])]),
                    })
                    .collect(),
                now,
            );
        }
    }

    #[test]
    fn different_sequences_batch_together_but_one_sequence_runs_one_request_at_a_time() {
        let mut h = Harness::new(1, policy(4, direct(0, 0.0)));
        let t = Instant::now();
        h.send(1, true, false, t).unwrap();
        h.send(1, false, false, t).unwrap();
        h.send(2, true, false, t).unwrap();
        let first = h.run(0, t);
        assert_eq!(first, vec![(1, true), (2, true)]);
        assert!(
            h.run(0, t).is_empty(),
            "sequence 1's second request waits for its first"
        );
        h.done(&first, &[], t);
        assert_eq!(h.run(0, t), vec![(1, false)]);
    }

    #[test]
    fn a_request_without_start_for_an_unknown_sequence_is_refused_in_tritons_words() {
        let mut h = Harness::new(1, policy(4, direct(0, 0.0)));
        let err = h.send(7, false, false, Instant::now()).unwrap_err().to_string();
        assert_eq!(
            err,
            "inference request for sequence 7 to model 'm' must specify the START flag on the first request of the sequence"
        );
    }

    #[test]
    fn after_end_only_a_new_start_is_taken_and_the_state_is_forgotten() {
        let mut h = Harness::new(1, policy(4, direct(0, 0.0)));
        let t = Instant::now();
        h.send(1, true, true, t).unwrap();
        assert!(
            h.send(1, false, false, t).is_err(),
            "END is queued: the sequence is over"
        );
        let rows = h.run(0, t);
        h.done(&rows, &[1], t);
        assert!(!h.q.holds(&SequenceId::Number(1)), "END frees the slot and the state");
        assert!(h.send(1, false, false, t).is_err());
        h.send(1, true, false, t).unwrap();
    }

    #[test]
    fn the_state_a_request_leaves_is_given_to_the_sequences_next_request() {
        let mut h = Harness::new(1, policy(4, direct(0, 0.0)));
        let t = Instant::now();
        h.send(5, true, false, t).unwrap();
        h.send(5, false, false, t).unwrap();
        let SeqPlan::Run(_, rows) = h.q.plan(&h.p, 0, t) else {
            panic!()
        };
        assert_eq!(rows[0].state, None, "START begins from the initial state");
        h.done(&[(5, true)], &[], t);
        let SeqPlan::Run(_, rows) = h.q.plan(&h.p, 0, t) else {
            panic!()
        };
        assert_eq!(rows[0].state, Some(vec![Bytes::from(vec![5u8])]));
    }

    #[test]
    fn an_idle_sequence_is_released_and_its_next_request_refused() {
        let mut h = Harness::new(1, policy(4, direct(0, 0.0)));
        let t = Instant::now();
        h.send(3, true, false, t).unwrap();
        let rows = h.run(0, t);
        h.done(&rows, &[], t);
        assert!(matches!(h.q.plan(&h.p, 0, t), SeqPlan::WaitUntil(due) if due == t + Duration::from_millis(100)));
        let later = t + Duration::from_millis(150);
        assert!(h.send(3, false, false, later).is_err());
        assert!(!h.q.holds(&SequenceId::Number(3)));
    }

    #[test]
    fn direct_gives_each_sequence_a_fixed_instance_and_backlogs_the_rest() {
        // 2 instances x 1 slot: the third sequence waits until one ends.
        let mut h = Harness::new(2, policy(1, direct(0, 0.0)));
        let t = Instant::now();
        h.send(1, true, false, t).unwrap();
        h.send(2, true, false, t).unwrap();
        h.send(3, true, false, t).unwrap();
        let on0 = h.run(0, t);
        let on1 = h.run(1, t);
        assert_eq!((on0.len(), on1.len()), (1, 1));
        h.done(&on0, &[], t);
        h.done(&on1, &[], t);
        assert!(
            h.run(0, t).is_empty() && h.run(1, t).is_empty(),
            "sequence 3 has no slot yet"
        );
        // Sequence 1's next request goes to the same instance.
        h.send(1, false, true, t).unwrap();
        let (mine, other) = if on0[0].0 == 1 { (0, 1) } else { (1, 0) };
        assert!(h.run(other, t).is_empty());
        let rows = h.run(mine, t);
        assert_eq!(rows, vec![(1, false)]);
        h.done(&rows, &[1], t);
        assert_eq!(
            h.run(mine, t),
            vec![(3, true)],
            "the backlogged sequence takes the freed slot"
        );
    }

    #[test]
    fn oldest_runs_the_oldest_requests_first_and_waits_for_a_fuller_batch() {
        let mut h = Harness::new(1, policy(2, oldest(3, vec![], 10)));
        let t = Instant::now();
        h.send(1, true, false, t + Duration::from_millis(2)).unwrap();
        h.send(2, true, false, t + Duration::from_millis(1)).unwrap();
        h.send(3, true, false, t).unwrap();
        assert_eq!(
            h.run(0, t + Duration::from_millis(2)),
            vec![(3, true), (2, true)],
            "oldest first, max_batch_size rows"
        );
        assert!(
            matches!(h.q.plan(&h.p, 0, t + Duration::from_millis(3)), SeqPlan::WaitUntil(_)),
            "one row waits up to max_queue_delay"
        );
        assert_eq!(h.run(0, t + Duration::from_millis(20)), vec![(1, true)]);
    }

    #[test]
    fn direct_with_a_delay_waits_until_enough_slots_are_ready_or_the_delay_passes() {
        let mut h = Harness::new(1, policy(4, direct(10, 0.5)));
        let t = Instant::now();
        h.send(1, true, false, t).unwrap();
        assert!(
            matches!(h.q.plan(&h.p, 0, t), SeqPlan::WaitUntil(due) if due == t + Duration::from_millis(10)),
            "one of four slots ready is under half"
        );
        h.send(2, true, false, t).unwrap();
        assert_eq!(h.run(0, t).len(), 2, "half the slots ready runs at once");
        h.send(3, true, false, t).unwrap();
        assert_eq!(
            h.run(0, t + Duration::from_millis(10)),
            vec![(3, true)],
            "the delay has passed"
        );
    }

    #[test]
    fn oldest_cuts_at_a_preferred_batch_size() {
        let mut h = Harness::new(1, policy(8, oldest(8, vec![2], 1000)));
        let t = Instant::now();
        for id in 1..=3 {
            h.send(id, true, false, t).unwrap();
        }
        assert_eq!(h.run(0, t).len(), 2);
    }
}
