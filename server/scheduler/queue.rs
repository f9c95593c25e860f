//! The queue itself and the batching decision: which waiting requests run next, and when. Pure logic under
//! the scheduler's lock; the instances act on its plans.
use std::collections::VecDeque;
use std::time::Instant;

use super::batch::compatible;
use super::job::Job;
use super::policy::{BatchPolicy, TimeoutAction};

pub enum Plan {
    /// Run these jobs as one batch.
    Run(Vec<Job>),
    /// Nothing should run before this instant unless more requests arrive (a fuller batch may form).
    WaitUntil(Instant),
    Empty,
}

pub struct Queue {
    /// One FIFO per priority level, highest first.
    levels: Vec<VecDeque<Job>>,
    /// Requests whose timeout passed under the DELAY action: they run after everything else.
    delayed: VecDeque<Job>,
    seq: u64,
    pub closed: bool,
    /// Instances asleep waiting for work (they count themselves in and out under the lock).
    pub idle: usize,
    /// Of those, how many have their executor claimed by a caller running the queue on its own thread.
    pub claimed: usize,
}

impl Queue {
    pub fn new(levels: usize) -> Self {
        Self {
            levels: (0..levels.max(1)).map(|_| VecDeque::new()).collect(),
            delayed: VecDeque::new(),
            seq: 0,
            closed: false,
            idle: 0,
            claimed: 0,
        }
    }

    /// Instances asleep whose executor is free: those a wake-up would set to work at once.
    pub fn sleeping(&self) -> usize {
        self.idle.saturating_sub(self.claimed)
    }

    /// Work waiting and an instance asleep to take it: whoever leaves it so owes that instance a wake-up.
    pub fn work_for_sleeper(&self) -> bool {
        !self.is_empty() && self.sleeping() > 0
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    pub fn push(&mut self, job: Job) {
        self.levels[job.level].push_back(job);
    }

    /// Takes the job with sequence number `seq` out of the queue, if it is still there.
    pub fn remove(&mut self, seq: u64) -> Option<Job> {
        self.levels
            .iter_mut()
            .chain(std::iter::once(&mut self.delayed))
            .find_map(|q| {
                let at = q.iter().position(|job| job.seq() == seq)?;
                q.remove(at)
            })
    }

    pub fn level_len(&self, level: usize) -> usize {
        self.levels[level].len()
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum::<usize>() + self.delayed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes jobs nobody waits for (into `dropped`) and moves timed-out DELAY jobs behind the rest.
    fn sweep(&mut self, policy: &BatchPolicy, now: Instant, dropped: &mut Vec<Job>) {
        for (level, q) in self.levels.iter_mut().enumerate() {
            let delay = policy.levels[level].timeout_action == TimeoutAction::Delay;
            let mut i = 0;
            while i < q.len() {
                let expired = delay && q[i].deadline.is_some_and(|d| d <= now);
                if q[i].abandoned() {
                    dropped.extend(q.remove(i));
                } else if expired {
                    self.delayed.extend(q.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].abandoned() {
                dropped.extend(self.delayed.remove(i));
            } else {
                i += 1;
            }
        }
    }

    fn queue(&self, i: usize) -> &VecDeque<Job> {
        self.levels.get(i).unwrap_or(&self.delayed)
    }

    fn queue_mut(&mut self, i: usize) -> &mut VecDeque<Job> {
        if i < self.levels.len() {
            &mut self.levels[i]
        } else {
            &mut self.delayed
        }
    }

    /// Every queued job, as (queue, position), in priority order (the delayed queue last) and arrival order.
    fn positions(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..=self.levels.len()).flat_map(|qi| (0..self.queue(qi).len()).map(move |pos| (qi, pos)))
    }

    /// Every queued job, as (queue, position): the head first, then by priority level and, within a level, by
    /// how far the job's tokens per row are from the head's (arrival order among equals).
    fn by_length(&self) -> Vec<(usize, usize)> {
        let mut all: Vec<(usize, usize)> = self.positions().collect();
        if let Some((&mut (hq, hp), rest)) = all.split_first_mut() {
            let head = self.queue(hq)[hp].tokens;
            rest.sort_by_key(|&(q, p)| (q, self.queue(q)[p].tokens.abs_diff(head)));
        }
        all
    }

    /// Decides what runs next. Jobs whose callers are gone land in `dropped`.
    pub fn plan(&mut self, policy: &BatchPolicy, now: Instant, dropped: &mut Vec<Job>) -> Plan {
        self.sweep(policy, now, dropped);
        // Candidates in priority order (by closeness in length to the head, under a token budget): the head, then
        // every later job that fits beside it.
        let mut picked: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0;
        let mut longest = 0;
        // Rows after each pick.
        let mut cuts: Vec<usize> = Vec::new();
        // A job left out only for the token budget: the batch is as full as it can be.
        let mut budget_full = false;
        // One of the two orders is empty.
        let by_length = (policy.max_batch_tokens > 0).then(|| self.by_length());
        let in_order = by_length.is_none().then(|| self.positions());
        for (qi, pos) in by_length.into_iter().flatten().chain(in_order.into_iter().flatten()) {
            let job = &self.queue(qi)[pos];
            if let Some(&(hq, hp)) = picked.first() {
                if !policy.dynamic || rows >= policy.max_batch_size {
                    break;
                }
                let head = &self.queue(hq)[hp];
                if rows + job.rows > policy.max_batch_size || !compatible(head, job) {
                    continue;
                }
                if policy.max_batch_tokens > 0 && (rows + job.rows) * longest.max(job.tokens) > policy.max_batch_tokens
                {
                    budget_full = true;
                    continue;
                }
            }
            picked.push((qi, pos));
            rows += job.rows;
            longest = longest.max(job.tokens);
            cuts.push(rows);
            if !policy.dynamic {
                break;
            }
        }
        let Some(&(hq, hp)) = picked.first() else {
            return Plan::Empty;
        };
        let take = if !policy.dynamic || rows >= policy.max_batch_size || budget_full {
            picked.len()
        } else if let Some(n) = policy
            .preferred_batch_sizes
            .iter()
            .rev()
            .find_map(|p| cuts.iter().position(|&c| c == *p))
        {
            n + 1
        } else {
            let oldest = picked
                .iter()
                .map(|&(q, p)| self.queue(q)[p].enqueued)
                .min()
                .unwrap_or(self.queue(hq)[hp].enqueued);
            let due = oldest + policy.max_queue_delay;
            if now < due {
                return Plan::WaitUntil(due);
            }
            picked.len()
        };
        picked.truncate(take);
        // Remove from the back of each queue first so earlier positions stay valid.
        let mut order: Vec<usize> = (0..picked.len()).collect();
        order.sort_by(|&a, &b| picked[b].cmp(&picked[a]));
        let mut slots: Vec<Option<Job>> = (0..picked.len()).map(|_| None).collect();
        for k in order {
            let (q, p) = picked[k];
            slots[k] = self.queue_mut(q).remove(p);
        }
        Plan::Run(slots.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use super::*;
    use crate::scheduler::job::{Outcome, Reply};
    use crate::scheduler::order::Order;
    use crate::scheduler::policy::QueuePolicy;
    use crate::tensor::{DataType, Tensor};
    use tokio::sync::oneshot;

    fn policy(max: usize, delay_us: u64, preferred: Vec<usize>) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            dynamic: true,
            max_queue_delay: Duration::from_micros(delay_us),
            preferred_batch_sizes: preferred,
            preserve_ordering: false,
            levels: vec![QueuePolicy::default(), QueuePolicy::default()],
            default_priority: 1,
            max_batch_tokens: 0,
            inline_below: Duration::ZERO,
        }
    }

    /// A policy of `max` rows and at most `budget` tokens per batch.
    fn token_policy(max: usize, budget: usize) -> BatchPolicy {
        BatchPolicy {
            max_batch_tokens: budget,
            ..policy(max, 0, vec![])
        }
    }

    /// A job of `rows` rows whose second dimension is `width`; keeps its receiver alive.
    fn job(q: &mut Queue, rows: usize, width: i64, level: usize, keep: &mut Vec<oneshot::Receiver<Outcome>>) {
        push(q, rows, width, 0, level, keep);
    }

    /// A one-text request whose text is `tokens` tokens long.
    fn text_job(q: &mut Queue, tokens: usize, keep: &mut Vec<oneshot::Receiver<Outcome>>) {
        push(q, 1, 1, tokens, 0, keep);
    }

    fn push(
        q: &mut Queue,
        rows: usize,
        width: i64,
        tokens: usize,
        level: usize,
        keep: &mut Vec<oneshot::Receiver<Outcome>>,
    ) {
        let (reply, rx) = oneshot::channel();
        keep.push(rx);
        let t = Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![rows as i64, width],
            data: Default::default(),
        };
        let seq = q.next_seq();
        q.push(Job {
            inputs: vec![Some(t)],
            rows,
            tokens,
            enqueued: Instant::now(),
            level,
            deadline: None,
            state: None,
            reply: Reply::new(reply, seq, Arc::new(Order::new(false))),
        });
    }

    fn run(plan: Plan) -> (Vec<u64>, usize) {
        match plan {
            Plan::Run(jobs) => (jobs.iter().map(Job::seq).collect(), jobs.iter().map(|j| j.rows).sum()),
            _ => panic!("expected a batch"),
        }
    }

    #[test]
    fn greedy_batching_takes_everything_that_fits_in_arrival_order() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        for rows in [2, 3, 4, 1] {
            job(&mut q, rows, 8, 0, &mut keep);
        }
        // 2 + 3 fit in 6; 4 does not; 1 does.
        assert_eq!(
            run(q.plan(&policy(6, 0, vec![]), Instant::now(), &mut dropped)),
            (vec![0, 1, 3], 6)
        );
        assert_eq!(
            run(q.plan(&policy(6, 0, vec![]), Instant::now(), &mut dropped)),
            (vec![2], 4)
        );
        assert!(matches!(
            q.plan(&policy(6, 0, vec![]), Instant::now(), &mut dropped),
            Plan::Empty
        ));
    }

    #[test]
    fn requests_with_other_non_batch_dimensions_are_not_mixed() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        job(&mut q, 1, 8, 0, &mut keep);
        job(&mut q, 1, 9, 0, &mut keep);
        job(&mut q, 1, 8, 0, &mut keep);
        assert_eq!(
            run(q.plan(&policy(8, 0, vec![]), Instant::now(), &mut dropped)),
            (vec![0, 2], 2)
        );
        assert_eq!(
            run(q.plan(&policy(8, 0, vec![]), Instant::now(), &mut dropped)),
            (vec![1], 1)
        );
    }

    #[test]
    fn higher_priority_runs_first() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        job(&mut q, 1, 8, 1, &mut keep);
        job(&mut q, 1, 8, 0, &mut keep);
        let mut p = policy(8, 0, vec![]);
        p.dynamic = false;
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)).0, vec![1]);
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)).0, vec![0]);
    }

    #[test]
    fn a_queue_delay_waits_for_a_fuller_batch_until_it_expires() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        job(&mut q, 1, 8, 0, &mut keep);
        let p = policy(4, 10_000, vec![]);
        let now = Instant::now();
        assert!(matches!(q.plan(&p, now, &mut dropped), Plan::WaitUntil(_)));
        assert_eq!(run(q.plan(&p, now + Duration::from_millis(11), &mut dropped)).1, 1);
        for _ in 0..4 {
            job(&mut q, 1, 8, 0, &mut keep);
        }
        assert_eq!(
            run(q.plan(&p, Instant::now(), &mut dropped)).1,
            4,
            "a full batch does not wait"
        );
    }

    #[test]
    fn a_preferred_batch_size_cuts_the_batch() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        for _ in 0..5 {
            job(&mut q, 1, 8, 0, &mut keep);
        }
        assert_eq!(
            run(q.plan(&policy(8, 0, vec![2, 4]), Instant::now(), &mut dropped)).1,
            4
        );
    }

    #[test]
    fn a_token_budget_cuts_the_batch_below_max_batch_size() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        for _ in 0..5 {
            text_job(&mut q, 16, &mut keep);
        }
        // Four texts of 16 tokens fill a budget of 64; the fifth waits for the next batch.
        let p = token_policy(32, 64);
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)), (vec![0, 1, 2, 3], 4));
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)), (vec![4], 1));
    }

    #[test]
    fn a_batch_pays_for_its_longest_text_in_every_row() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        text_job(&mut q, 10, &mut keep);
        text_job(&mut q, 40, &mut keep);
        text_job(&mut q, 10, &mut keep);
        // 10 + 40 padded is 2 x 40 = 80 > 60; 10 + 10 is 20.
        let p = token_policy(32, 60);
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)), (vec![0, 2], 2));
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)), (vec![1], 1));
    }

    #[test]
    fn under_a_token_budget_texts_of_like_length_ride_together() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        for tokens in [10, 200, 12, 180, 11, 9] {
            text_job(&mut q, tokens, &mut keep);
        }
        let p = token_policy(4, 100_000);
        let (mut first, _) = run(q.plan(&p, Instant::now(), &mut dropped));
        first.sort_unstable();
        assert_eq!(first, vec![0, 2, 4, 5], "the four short texts, not the two long ones");
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)).0.len(), 2);
    }

    #[test]
    fn a_text_over_the_budget_alone_still_runs() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        text_job(&mut q, 300, &mut keep);
        text_job(&mut q, 5, &mut keep);
        let p = token_policy(32, 256);
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)), (vec![0], 1));
        assert_eq!(run(q.plan(&p, Instant::now(), &mut dropped)), (vec![1], 1));
    }

    #[test]
    fn abandoned_requests_are_dropped_before_they_run() {
        let (mut q, mut keep, mut dropped) = (Queue::new(2), Vec::new(), Vec::new());
        job(&mut q, 1, 8, 0, &mut keep);
        job(&mut q, 1, 8, 0, &mut keep);
        drop(keep.remove(0));
        assert_eq!(
            run(q.plan(&policy(8, 0, vec![]), Instant::now(), &mut dropped)).0,
            vec![1]
        );
        assert_eq!(dropped.len(), 1);
    }
}
