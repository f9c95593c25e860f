//! Per model version: a priority queue in front of the version's instances. Each instance runs on its own OS
//! thread; when free, it forms the next batch from what is queued (dynamic batching: up to `max_batch_size`
//! rows of requests with the same non-batch dimensions, cut at a preferred size, waiting at most
//! `max_queue_delay` for a fuller one) while the other instances run theirs.
//!
//! The scheduler owns a request's whole stay: `submit` picks its priority level and timeout from the queue
//! policy, enqueues it, and resolves to its answer, racing the queue timeout and keeping the response order;
//! dropping the future cancels the request. Nothing outside can build a job or answer one.
//!
//! Tokio tasks enqueue and await, with one exception that pays for itself: when a model's executions take less
//! than `BatchPolicy::inline_below` on average (tens of microseconds for a small model on CPU), nothing is queued
//! and an instance is idle, the caller claims that instance's executor and runs the queue on its own thread. It
//! first lets the tasks its thread has already woken run, so that the requests just read there queue up behind
//! its own and run in the same batch (one model run for several requests, as the instance would have formed it),
//! and it runs what other threads queued meanwhile before it gives the executor back. What this saves are two
//! hand-offs between threads per request (the wake-up of the instance thread and the wake-up of the caller),
//! which cost more CPU than such a model's run.
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use self::instance::{Executor, Slot};
pub use self::job::Executed;
use self::job::{Job, JobState, Reply};
use self::order::Order;
pub use self::policy::{BatchPolicy, PolicyError, QueuePolicy, TimeoutAction, DEFAULT_QUEUE_SIZE};
use self::queue::{Plan, Queue};
use self::sequence_batcher::SequenceBatcher;
pub use self::sequence_policy::{SequenceConfigError, SequencePolicy};
use crate::backend::Instance;
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
    /// One executor per instance, run by the instance's thread or claimed by a caller.
    slots: Vec<Slot>,
    /// How long executions take, in nanoseconds: a moving average, each execution weighing 1/8 (`u64::MAX` until
    /// the first). An average rather than a peak, so that a run stretched by preemption on shared cores does not
    /// send a fast model's requests back to the instance threads; a model that turns slow leaves the callers'
    /// threads within a few executions.
    typical_ns: AtomicU64,
}

/// Batches a caller that claimed an executor runs at most before it gives the executor back (the requests its
/// connection thread has not read yet wait meanwhile).
const CLAIMED_BATCHES: usize = 4;

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a batch on `executor` and keeps track of how long executions take.
    fn execute(&self, executor: &mut Executor, jobs: &mut Vec<Job>) {
        let start = Instant::now();
        executor.execute(jobs);
        let ns = start.elapsed().as_nanos().min(u64::MAX as u128 / 2) as u64;
        // Racing updates may lose a sample; the figure only decides whether callers may run requests inline.
        let typical = match self.typical_ns.load(Ordering::Relaxed) {
            u64::MAX => ns,
            old => old - old / 8 + ns / 8,
        };
        self.typical_ns.store(typical, Ordering::Relaxed);
    }

    /// Whether executions are fast enough for a caller to run requests on its own thread.
    fn runs_inline(&self) -> bool {
        let below = self.policy.inline_below.as_nanos();
        below > 0 && u128::from(self.typical_ns.load(Ordering::Relaxed)) < below
    }

    /// Whether a caller about to queue a job may claim an idle instance's executor to run the queue itself: the
    /// model is fast, nothing waits, and an instance sleeps with its executor free. Counted as claimed until
    /// the claim is given back.
    fn claim(&self, queue: &mut Queue) -> bool {
        let claimed = queue.is_empty() && queue.sleeping() > 0 && self.runs_inline();
        queue.claimed += usize::from(claimed);
        claimed
    }

    /// Plans the next batch (`queue.plan`), forgetting the jobs whose callers have gone.
    fn plan(&self, queue: &mut Queue, now: Instant, dropped: &mut Vec<Job>) -> Plan {
        let plan = queue.plan(&self.policy, now, dropped);
        for job in dropped.drain(..) {
            instance::forget(&self.stats, job);
        }
        plan
    }

    /// Runs a planned batch on the executor in a slot its runner has locked (an instance's thread, or a caller
    /// with a claim): an idle peer is woken to form the next batch from what is still queued, the queue is let
    /// go, and the jobs whose callers still wait are executed.
    fn run_batch(&self, queue: MutexGuard<'_, Queue>, mut jobs: Vec<Job>, executor: &mut Option<Executor>) {
        let more = queue.work_for_sleeper();
        drop(queue);
        if more {
            self.changed.notify_one();
        }
        // A job whose timeout fired a moment ago stays with its caller's error.
        jobs.retain(Job::start);
        if let Some(executor) = executor.as_mut().filter(|_| !jobs.is_empty()) {
            self.execute(executor, &mut jobs);
        }
    }

    /// Runs the queue on a claimed executor, on the caller's thread: batches as an instance would form them, until
    /// the batch holding the caller's own job (`own`, its sequence number) has run and nothing else is queued, or
    /// `CLAIMED_BATCHES` have run. Stops early when every executor is busy (an instance thread woke meanwhile and
    /// takes the rest).
    fn run_claimed(&self, own: u64) {
        let mut dropped = Vec::new();
        let mut own_ran = false;
        for _ in 0..CLAIMED_BATCHES {
            let mut queue = self.lock_queue();
            if own_ran && queue.is_empty() {
                break;
            }
            // The queue's lock before an executor's, as the instance threads take them; an executor is never held
            // while waiting for the queue.
            let Some(mut executor) = self
                .slots
                .iter()
                .filter_map(|slot| slot.try_lock().ok())
                .find(|executor| executor.is_some())
            else {
                break;
            };
            let Plan::Run(jobs) = self.plan(&mut queue, Instant::now(), &mut dropped) else {
                break;
            };
            own_ran |= jobs.iter().any(|job| job.seq() == own);
            self.run_batch(queue, jobs, &mut executor);
        }
    }

    /// Gives a claimed executor back; an instance is woken if requests are still queued.
    fn give_back(&self) {
        let mut queue = self.lock_queue();
        queue.claimed -= 1;
        let wake = queue.work_for_sleeper();
        drop(queue);
        if wake {
            self.changed.notify_one();
        }
    }
}

/// A caller's claim on an idle instance's executor (`Shared::claim`), given back however the caller's future
/// ends. A caller cancelled before it ran the queue takes its own job out first: nobody waits for it, and the
/// instance woken for the rest must not run it before the reply's receiver is gone.
struct Claim<'a> {
    shared: &'a Shared,
    own: u64,
    ran: bool,
}

impl Claim<'_> {
    /// Lets the tasks this thread has already woken run first (the requests it has read but not yet decoded
    /// queue up behind the caller's own), then runs the queue.
    async fn run(mut self) {
        behind_woken_tasks().await;
        self.shared.run_claimed(self.own);
        self.ran = true;
    }
}

/// Puts the calling task at the back of its thread's run queue, behind the tasks already woken there. Unlike
/// `tokio::task::yield_now`, it does not make the runtime poll its sockets first: with nothing else woken, the
/// task runs again at once, without the extra `epoll_wait` per request that would cost.
async fn behind_woken_tasks() {
    let mut requeued = false;
    std::future::poll_fn(|cx| {
        if requeued {
            return std::task::Poll::Ready(());
        }
        requeued = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.ran {
            let job = self.shared.lock_queue().remove(self.own);
            if let Some(job) = job {
                instance::forget(&self.shared.stats, job);
            }
        }
        self.shared.give_back();
    }
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
    /// A text request's tokens per row (its longest text's): what each of its rows costs in a batch padded to
    /// it. Zero for other models.
    pub tokens: usize,
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
        let slots = instances
            .into_iter()
            .map(|instance| Mutex::new(Some(Executor::new(spec.clone(), stats.clone(), instance))))
            .collect::<Vec<_>>();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(policy.levels.len())),
            changed: Condvar::new(),
            order: Arc::new(Order::new(policy.preserve_ordering)),
            policy,
            spec,
            stats,
            slots,
            typical_ns: AtomicU64::new(u64::MAX),
        });
        for i in 0..shared.slots.len() {
            let worker = instance::Worker::new(shared.clone(), i);
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
        if let Some(claim) = self.enqueue(request, level, deadline, state.clone(), tx)? {
            claim.run().await;
        }
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

    /// Puts the job in its level's queue without waiting: a full queue is answered at once. A fast model's job
    /// with nothing queued before it comes back with a claim on an idle instance's executor, for the caller to run
    /// the queue itself.
    fn enqueue(
        &self,
        request: Submission,
        level: usize,
        deadline: Option<Instant>,
        state: Option<Arc<JobState>>,
        tx: oneshot::Sender<job::Outcome>,
    ) -> InferResult<Option<Claim<'_>>> {
        let mut queue = self.shared.lock_queue();
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
        let job = Job {
            inputs: request.inputs,
            rows: request.rows,
            tokens: request.tokens,
            enqueued: request.received,
            level,
            deadline,
            state,
            reply: Reply::new(tx, seq, self.shared.order.clone()).traced(request.executed),
        };
        let claimed = self.shared.claim(&mut queue);
        queue.push(job);
        // A busy (or claimed) instance finds the job when it next looks; only a sleeping one needs the (syscall)
        // wake-up.
        let wake = !claimed && queue.sleeping() > 0;
        drop(queue);
        if wake {
            self.shared.changed.notify_one();
        }
        // Built only when claimed: a `Claim` gives its executor back when dropped.
        Ok(claimed.then(|| Claim {
            shared: &self.shared,
            own: seq,
            ran: false,
        }))
    }

    pub fn load(&self) -> Load {
        if let Some(sequences) = &self.sequences {
            return sequences.load();
        }
        let q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        Load {
            queued: q.len(),
            instances: self.shared.slots.len(),
            busy: self.shared.slots.len().saturating_sub(q.sleeping()),
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use bytes::Bytes;

    use super::*;
    use crate::backend::{BackendError, BatchInput, BatchOutput};
    use crate::spec::TensorSpec;
    use crate::tensor::DataType;

    /// Echoes its input, saying which thread ran it; an input of 1 first says so and waits for the gate to open.
    struct Echo {
        ran_on: mpsc::Sender<String>,
        at_gate: mpsc::Sender<()>,
        gate: mpsc::Receiver<()>,
    }

    impl Instance for Echo {
        fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError> {
            if inputs[0].data.first() == Some(&1) {
                let _ = self.at_gate.send(());
                let _ = self.gate.recv();
            }
            let _ = self
                .ran_on
                .send(std::thread::current().name().unwrap_or("").to_string());
            outputs.clear();
            outputs.push(BatchOutput {
                shape: inputs[0].shape.to_vec(),
                data: inputs[0].data.to_vec(),
            });
            Ok(())
        }
    }

    struct Setup {
        scheduler: Scheduler,
        ran_on: mpsc::Receiver<String>,
        at_gate: mpsc::Receiver<()>,
        open_gate: mpsc::Sender<()>,
    }

    fn echo_scheduler(inline_below: Duration) -> Setup {
        let tensor = |name: &str| TensorSpec {
            name: name.into(),
            datatype: DataType::Uint8,
            dims: vec![1],
            reshape: None,
            optional: false,
        };
        let spec = Arc::new(ModelSpec {
            name: "echo".into(),
            platform: "test".into(),
            max_batch_size: 8,
            inputs: vec![tensor("IN")],
            outputs: vec![tensor("OUT")],
        });
        let (ran_tx, ran_on) = mpsc::channel();
        let (open_gate, gate) = mpsc::channel();
        let (at_gate_tx, at_gate) = mpsc::channel();
        let instance = Echo {
            ran_on: ran_tx,
            at_gate: at_gate_tx,
            gate,
        };
        let policy = BatchPolicy {
            max_batch_size: 8,
            dynamic: true,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            preserve_ordering: false,
            levels: vec![QueuePolicy::default()],
            default_priority: 1,
            max_batch_tokens: 0,
            inline_below,
        };
        let scheduler = Scheduler::start(spec, vec![Box::new(instance)], policy, Arc::new(Stats::new(8, false)));
        Setup {
            scheduler,
            ran_on,
            at_gate,
            open_gate,
        }
    }

    fn submission(value: u8) -> Submission {
        Submission {
            inputs: vec![Some(Tensor {
                name: "IN".into(),
                datatype: DataType::Uint8,
                shape: vec![1, 1],
                data: Bytes::from(vec![value]),
            })],
            rows: 1,
            received: Instant::now(),
            priority: None,
            timeout_us: None,
            executed: None,
            sequence: None,
            tokens: 0,
        }
    }

    /// Runs `future` on a single-threaded runtime of the calling thread, as a connection thread would.
    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(future)
    }

    fn answer(scheduler: &Scheduler, value: u8) -> u8 {
        let outputs = block_on(scheduler.submit(submission(value))).unwrap();
        outputs[0].data[0]
    }

    /// Until the instance has run once, nobody knows whether the model is fast. Returns once it sleeps again.
    fn warm_up(s: &Setup) {
        assert_eq!(answer(&s.scheduler, 7), 7);
        assert_eq!(s.ran_on.recv().unwrap(), "echo-0");
        while s.scheduler.load().busy > 0 {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_fast_models_lone_request_runs_on_its_callers_thread() {
        let s = echo_scheduler(Duration::from_secs(1));
        warm_up(&s);
        let caller = std::thread::Builder::new().name("caller".into());
        let sched = &s.scheduler;
        std::thread::scope(|scope| {
            let answered = caller.spawn_scoped(scope, || answer(sched, 9)).unwrap();
            assert_eq!(answered.join().unwrap(), 9);
        });
        assert_eq!(s.ran_on.recv().unwrap(), "caller");
    }

    #[test]
    fn with_inline_execution_off_every_request_runs_on_the_instance_thread() {
        let s = echo_scheduler(Duration::ZERO);
        warm_up(&s);
        for v in 2..6 {
            assert_eq!(answer(&s.scheduler, v), v);
            assert_eq!(s.ran_on.recv().unwrap(), "echo-0");
        }
    }

    #[test]
    fn a_request_arriving_while_a_caller_runs_the_model_is_run_next_by_that_caller() {
        let s = echo_scheduler(Duration::from_secs(1));
        warm_up(&s);
        let sched = &s.scheduler;
        std::thread::scope(|scope| {
            let first = std::thread::Builder::new()
                .name("first".into())
                .spawn_scoped(scope, || answer(sched, 1))
                .unwrap();
            // The first caller now runs the model, waiting at the gate; the instance thread sleeps.
            s.at_gate.recv().unwrap();
            let second = std::thread::Builder::new()
                .name("second".into())
                .spawn_scoped(scope, || answer(sched, 3))
                .unwrap();
            while sched.load().queued == 0 {
                std::thread::yield_now();
            }
            s.open_gate.send(()).unwrap();
            assert_eq!(first.join().unwrap(), 1);
            assert_eq!(second.join().unwrap(), 3);
        });
        assert_eq!(s.ran_on.recv().unwrap(), "first");
        // Queued behind the claimed executor, and run by the caller holding it rather than handed to the instance.
        assert_eq!(s.ran_on.recv().unwrap(), "first");
        assert!(s.ran_on.try_recv().is_err());
    }

    #[test]
    fn requests_one_thread_receives_together_run_as_one_batch_on_that_thread() {
        let s = echo_scheduler(Duration::from_secs(1));
        warm_up(&s);
        let sched = &s.scheduler;
        let answers = std::thread::scope(|scope| {
            let caller = std::thread::Builder::new().name("caller".into());
            let batch = caller.spawn_scoped(scope, || {
                // Like a connection thread's tasks woken by one poll of its sockets: the first claims the
                // executor and steps back, the others queue behind it.
                block_on(async {
                    let (a, b, c) = tokio::join!(
                        sched.submit(submission(4)),
                        sched.submit(submission(5)),
                        sched.submit(submission(6))
                    );
                    [a, b, c].map(|outputs| outputs.unwrap()[0].data[0])
                })
            });
            batch.unwrap().join().unwrap()
        });
        assert_eq!(answers, [4, 5, 6]);
        // One execution for the three, on the thread that received them.
        assert_eq!(s.ran_on.recv().unwrap(), "caller");
        assert!(s.ran_on.try_recv().is_err());
    }

    #[test]
    fn a_caller_cancelled_while_it_holds_a_claim_takes_its_job_away_and_frees_the_executor() {
        let s = echo_scheduler(Duration::from_secs(1));
        warm_up(&s);
        // Polled once: the job is queued and the executor claimed, then the caller goes away before it runs.
        block_on(async {
            let mut submit = std::pin::pin!(s.scheduler.submit(submission(8)));
            assert!(futures::poll!(submit.as_mut()).is_pending());
        });
        // The claim went back with the caller, and its job left the queue ...
        while s.scheduler.load().busy > 0 || s.scheduler.load().queued > 0 {
            std::thread::yield_now();
        }
        // ... so the next request runs on its caller's thread again, and the cancelled one never ran.
        let sched = &s.scheduler;
        std::thread::scope(|scope| {
            let caller = std::thread::Builder::new().name("caller".into());
            assert_eq!(
                caller.spawn_scoped(scope, || answer(sched, 9)).unwrap().join().unwrap(),
                9
            );
        });
        assert_eq!(s.ran_on.recv().unwrap(), "caller");
        assert!(s.ran_on.try_recv().is_err());
    }
}
