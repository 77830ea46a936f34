//! Dynamic batching: a bounded request queue per model whose workers stack compatible
//! requests into one execution, as Triton's dynamic batcher does.
//!
//! A [`DynamicBatcher`] owns a queue with priority levels and `instances` worker threads.
//! Each worker waits for a job, then gathers more jobs with the same [`BatchJob::key`] (the
//! inputs agree except in the batch dimension) until the batch holds `max_batch_size` rows,
//! reaches a preferred size, or the oldest job has waited `max_queue_delay`. It then takes a
//! permit from the shared [`FairGate`] (so all models share the cores in arrival order) and
//! hands the batch to the [`BatchExecutor`]. Jobs whose queue timeout passes before they are
//! picked are rejected with [`Rejection::Timeout`]; a full queue refuses new jobs
//! ([`SubmitError::QueueFull`]) instead of growing. [`DynamicBatcher::shutdown`] stops
//! accepting, lets the workers finish everything queued, and joins them.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use strata_tensor::{DType, Tensor, TensorError};

/// How a batcher forms batches and bounds its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPolicy {
    /// Most rows (sum of the jobs' batch sizes) in one execution; 1 disables stacking.
    pub max_batch_size: usize,
    /// Batch sizes worth dispatching at once without waiting for more jobs.
    pub preferred_batch_sizes: Vec<usize>,
    /// Longest time the oldest job of a forming batch waits for company.
    pub max_queue_delay: Duration,
    /// Most jobs waiting in the queue; more are refused.
    pub queue_capacity: usize,
    /// Number of priority levels; level 1 is served first.
    pub priority_levels: u32,
    /// Level of jobs that name none (1..=priority_levels).
    pub default_priority: u32,
    /// How long a job may wait in the queue before it is rejected (`None`: no limit).
    pub default_queue_timeout: Option<Duration>,
    /// Worker threads executing batches of this model concurrently.
    pub instances: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_batch_size: 1,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: Duration::ZERO,
            queue_capacity: 1024,
            priority_levels: 1,
            default_priority: 1,
            default_queue_timeout: None,
            instances: 1,
        }
    }
}

/// Why a queued job was not executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Its queue timeout passed before a worker picked it.
    Timeout,
}

/// Why [`DynamicBatcher::submit`] refused a job; the job comes back to the caller.
#[derive(Debug)]
pub enum SubmitError<J> {
    /// The queue holds `queue_capacity` jobs already.
    QueueFull(J),
    /// The batcher is shutting down.
    ShuttingDown(J),
    /// The job names a priority level the policy does not have.
    BadPriority(J, u32),
}

/// One request waiting for execution.
pub trait BatchJob: Send + 'static {
    /// Jobs with equal keys can be stacked into one execution.
    type Key: PartialEq + Clone + Send;
    /// This job's stacking key (dtypes and shapes without the batch dimension).
    fn key(&self) -> &Self::Key;
    /// Rows this job adds to a batch (its batch dimension).
    fn rows(&self) -> usize;
    /// Called instead of execution when the job is dropped from the queue.
    fn reject(self, why: Rejection);
}

/// Runs a batch of jobs and answers each of them.
pub trait BatchExecutor<J>: Send + Sync + 'static {
    /// Executes `jobs` (all with the same key) and delivers each job's result.
    fn execute(&self, jobs: Vec<Queued<J>>);
}

/// A job with its queueing facts.
#[derive(Debug)]
pub struct Queued<J> {
    /// The job.
    pub job: J,
    /// When it entered the queue.
    pub enqueued: Instant,
    /// When it left the queue for execution (or rejection).
    pub dequeued: Instant,
}

/// Admits at most `permits` batch executions at once, in arrival order, across every
/// batcher that shares it.
#[derive(Debug)]
pub struct FairGate {
    permits: usize,
    state: Mutex<GateState>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    next_ticket: u64,
    serving: u64,
    in_use: usize,
}

/// A held permit of a [`FairGate`]; dropping it lets the next waiter in.
#[derive(Debug)]
pub struct GatePermit<'a> {
    gate: &'a FairGate,
}

impl FairGate {
    /// A gate admitting `permits` executions at once (at least one).
    pub fn new(permits: usize) -> Self {
        FairGate {
            permits: permits.max(1),
            state: Mutex::new(GateState::default()),
            turn: Condvar::new(),
        }
    }

    /// Waits for a permit; callers are admitted in the order they arrived.
    pub fn acquire(&self) -> GatePermit<'_> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        while state.serving != ticket || state.in_use >= self.permits {
            self.turn.wait(&mut state);
        }
        state.serving += 1;
        state.in_use += 1;
        drop(state);
        // The next ticket may be admissible too (free permits remain).
        self.turn.notify_all();
        GatePermit { gate: self }
    }

    /// Executions running now.
    pub fn in_use(&self) -> usize {
        self.state.lock().in_use
    }
}

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        self.gate.state.lock().in_use -= 1;
        self.gate.turn.notify_all();
    }
}

struct Entry<J> {
    job: J,
    enqueued: Instant,
    deadline: Option<Instant>,
}

struct QueueState<J> {
    /// One FIFO per priority level, level 1 first.
    levels: Vec<VecDeque<Entry<J>>>,
    len: usize,
    closing: bool,
}

struct Shared<J> {
    policy: BatchPolicy,
    queue: Mutex<QueueState<J>>,
    arrived: Condvar,
}

/// A queue with priority levels and worker threads that execute stacked batches.
pub struct DynamicBatcher<J: BatchJob> {
    shared: Arc<Shared<J>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl<J: BatchJob> fmt::Debug for DynamicBatcher<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicBatcher")
            .field("policy", &self.shared.policy)
            .field("queued", &self.queued())
            .finish()
    }
}

impl<J: BatchJob> DynamicBatcher<J> {
    /// Starts `policy.instances` workers that execute batches through `executor`, each
    /// holding a permit of `gate` while it runs.
    pub fn start(
        name: &str,
        mut policy: BatchPolicy,
        executor: Arc<dyn BatchExecutor<J>>,
        gate: Arc<FairGate>,
    ) -> std::io::Result<Self> {
        policy.max_batch_size = policy.max_batch_size.max(1);
        policy.priority_levels = policy.priority_levels.max(1);
        policy.default_priority = policy.default_priority.clamp(1, policy.priority_levels);
        policy.queue_capacity = policy.queue_capacity.max(1);
        let levels = (0..policy.priority_levels)
            .map(|_| VecDeque::new())
            .collect();
        let instances = policy.instances.max(1);
        let shared = Arc::new(Shared {
            policy,
            queue: Mutex::new(QueueState {
                levels,
                len: 0,
                closing: false,
            }),
            arrived: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(instances);
        for i in 0..instances {
            let (shared, executor, gate) = (shared.clone(), executor.clone(), gate.clone());
            let handle = std::thread::Builder::new()
                .name(format!("batcher-{name}-{i}"))
                .spawn(move || worker_loop(&shared, &*executor, &gate))?;
            workers.push(handle);
        }
        Ok(DynamicBatcher {
            shared,
            workers: Mutex::new(workers),
        })
    }

    /// The policy in force (after clamping).
    pub fn policy(&self) -> &BatchPolicy {
        &self.shared.policy
    }

    /// Jobs waiting now.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().len
    }

    /// Queues `job` at `priority` (None: the default level) with an optional queue timeout
    /// (None: the policy's default).
    pub fn submit(
        &self,
        job: J,
        priority: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<(), SubmitError<J>> {
        let policy = &self.shared.policy;
        let level = priority.unwrap_or(policy.default_priority);
        if level == 0 || level > policy.priority_levels {
            return Err(SubmitError::BadPriority(job, level));
        }
        let mut queue = self.shared.queue.lock();
        if queue.closing {
            return Err(SubmitError::ShuttingDown(job));
        }
        if queue.len >= policy.queue_capacity {
            return Err(SubmitError::QueueFull(job));
        }
        let enqueued = Instant::now();
        let deadline = timeout
            .or(policy.default_queue_timeout)
            .map(|t| enqueued + t);
        // Levels are 1-based and checked above.
        if let Some(fifo) = queue.levels.get_mut(level as usize - 1) {
            fifo.push_back(Entry {
                job,
                enqueued,
                deadline,
            });
            queue.len += 1;
        }
        drop(queue);
        self.shared.arrived.notify_one();
        Ok(())
    }

    /// Stops accepting jobs; the workers execute everything queued (forming batches are
    /// dispatched without waiting out their delay) and then exit.
    pub fn close(&self) {
        self.shared.queue.lock().closing = true;
        self.shared.arrived.notify_all();
    }

    /// [`DynamicBatcher::close`], then waits for the workers to finish.
    pub fn shutdown(&self) {
        self.close();
        let workers = std::mem::take(&mut *self.workers.lock());
        for worker in workers {
            // A worker that panicked has nothing left to join; its jobs' callers see their
            // channels close.
            let _ = worker.join();
        }
    }
}

impl<J: BatchJob> Drop for DynamicBatcher<J> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker_loop<J: BatchJob>(shared: &Shared<J>, executor: &dyn BatchExecutor<J>, gate: &FairGate) {
    while let Some(batch) = next_batch(shared) {
        let _permit = gate.acquire();
        executor.execute(batch);
    }
}

/// Waits for the next batch; `None` once the batcher is closing and the queue is empty.
fn next_batch<J: BatchJob>(shared: &Shared<J>) -> Option<Vec<Queued<J>>> {
    let policy = &shared.policy;
    let mut queue = shared.queue.lock();
    loop {
        drop_expired(&mut queue);
        if let Some(first) = pop_first(&mut queue) {
            let key = first.job.key().clone();
            let mut rows = first.job.rows();
            let flush_at = first.enqueued + policy.max_queue_delay;
            let mut batch = vec![first];
            while rows < policy.max_batch_size && !policy.preferred_batch_sizes.contains(&rows) {
                if let Some(next) = pop_compatible(&mut queue, &key, policy.max_batch_size - rows) {
                    rows += next.job.rows();
                    batch.push(next);
                    continue;
                }
                let now = Instant::now();
                if queue.closing || now >= flush_at {
                    break;
                }
                shared.arrived.wait_for(&mut queue, flush_at - now);
                drop_expired(&mut queue);
            }
            let dequeued = Instant::now();
            return Some(
                batch
                    .into_iter()
                    .map(|e| Queued {
                        job: e.job,
                        enqueued: e.enqueued,
                        dequeued,
                    })
                    .collect(),
            );
        }
        if queue.closing {
            return None;
        }
        shared.arrived.wait(&mut queue);
    }
}

/// The oldest job of the highest non-empty priority level.
fn pop_first<J: BatchJob>(queue: &mut QueueState<J>) -> Option<Entry<J>> {
    let entry = queue.levels.iter_mut().find_map(VecDeque::pop_front)?;
    queue.len -= 1;
    Some(entry)
}

/// The oldest job (highest level first) with `key` and at most `room` rows.
fn pop_compatible<J: BatchJob>(
    queue: &mut QueueState<J>,
    key: &J::Key,
    room: usize,
) -> Option<Entry<J>> {
    for fifo in &mut queue.levels {
        let found = fifo
            .iter()
            .position(|e| e.job.rows() <= room && e.job.key() == key);
        if let Some(entry) = found.and_then(|i| fifo.remove(i)) {
            queue.len -= 1;
            return Some(entry);
        }
    }
    None
}

/// Rejects every queued job whose queue timeout has passed.
fn drop_expired<J: BatchJob>(queue: &mut QueueState<J>) {
    let now = Instant::now();
    let is_expired = |e: &Entry<J>| e.deadline.is_some_and(|d| d <= now);
    let mut expired = Vec::new();
    for fifo in &mut queue.levels {
        // Runs on every wake-up of every worker: rebuild a level only when it has expired jobs.
        if !fifo.iter().any(is_expired) {
            continue;
        }
        let mut kept = VecDeque::with_capacity(fifo.len());
        for entry in fifo.drain(..) {
            if is_expired(&entry) {
                expired.push(entry.job);
            } else {
                kept.push_back(entry);
            }
        }
        *fifo = kept;
    }
    queue.len -= expired.len();
    for job in expired {
        job.reject(Rejection::Timeout);
    }
}

/// Why tensors could not be stacked or split along the batch dimension.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    /// Nothing to stack, or a scalar has no batch dimension.
    #[error("no batch dimension to stack along")]
    NoBatchDim,
    /// Part `index` differs from the first part in dtype or trailing dims.
    #[error("part {index} is {actual_dtype} {actual:?}, the first part is {expected_dtype} {expected:?}")]
    Mismatch {
        /// The odd part.
        index: usize,
        /// The first part's dtype.
        expected_dtype: DType,
        /// The first part's shape.
        expected: Vec<usize>,
        /// The odd part's dtype.
        actual_dtype: DType,
        /// The odd part's shape.
        actual: Vec<usize>,
    },
    /// The rows asked for do not add up to the tensor's batch dimension.
    #[error("cannot split shape {shape:?} into parts of {rows:?} rows")]
    Split {
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The rows asked for.
        rows: Vec<usize>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Stacks tensors of equal dtype and equal trailing dims along axis 0.
pub fn stack_rows(parts: &[&Tensor]) -> Result<Tensor, RowsError> {
    let first = parts.first().ok_or(RowsError::NoBatchDim)?;
    if parts.len() == 1 {
        return Ok((*first).clone());
    }
    let mut shape = first.shape().to_vec();
    if shape.is_empty() {
        return Err(RowsError::NoBatchDim);
    }
    shape[0] = 0;
    for (index, part) in parts.iter().enumerate() {
        if part.dtype() != first.dtype() || part.shape().get(1..) != first.shape().get(1..) {
            return Err(RowsError::Mismatch {
                index,
                expected_dtype: first.dtype(),
                expected: first.shape().to_vec(),
                actual_dtype: part.dtype(),
                actual: part.shape().to_vec(),
            });
        }
        shape[0] += part.shape()[0];
    }
    if first.dtype() == DType::String {
        let mut all = Vec::new();
        for part in parts {
            all.extend_from_slice(part.contiguous().as_strings()?);
        }
        return Ok(Tensor::from_strings(all, &shape)?);
    }
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(part.contiguous().raw_bytes()?);
    }
    Ok(Tensor::from_raw_bytes(first.dtype(), &shape, &bytes)?)
}

/// Splits `tensor` along axis 0 into consecutive parts of `rows[i]` rows (zero-copy views).
pub fn split_rows(tensor: &Tensor, rows: &[usize]) -> Result<Vec<Tensor>, RowsError> {
    let total: usize = rows.iter().sum();
    let split_error = || RowsError::Split {
        shape: tensor.shape().to_vec(),
        rows: rows.to_vec(),
    };
    if tensor.shape().first() != Some(&total) {
        return Err(split_error());
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(rows.len());
    for &n in rows {
        // slice_axis takes an isize end; shapes are bounded by isize::MAX bytes.
        let end = isize::try_from(start + n).map_err(|_| split_error())?;
        out.push(tensor.slice_axis(0, start, end, 1)?);
        start += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[derive(Debug)]
    struct Job {
        key: u32,
        rows: usize,
        done: mpsc::Sender<Result<usize, Rejection>>,
    }

    impl BatchJob for Job {
        type Key = u32;
        fn key(&self) -> &u32 {
            &self.key
        }
        fn rows(&self) -> usize {
            self.rows
        }
        fn reject(self, why: Rejection) {
            let _ = self.done.send(Err(why));
        }
    }

    /// Answers each job with the batch's total rows; counts executions.
    #[derive(Default)]
    struct Recorder {
        executions: AtomicUsize,
        delay: Duration,
    }

    impl BatchExecutor<Job> for Recorder {
        fn execute(&self, jobs: Vec<Queued<Job>>) {
            self.executions.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            let rows: usize = jobs.iter().map(|q| q.job.rows).sum();
            for q in jobs {
                let _ = q.job.done.send(Ok(rows));
            }
        }
    }

    fn policy(max: usize, delay_ms: u64) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            max_queue_delay: Duration::from_millis(delay_ms),
            ..BatchPolicy::default()
        }
    }

    /// A batcher named "t" over `executor`, with a one-slot gate.
    fn start_batcher(p: BatchPolicy, executor: Arc<dyn BatchExecutor<Job>>) -> DynamicBatcher<Job> {
        DynamicBatcher::start("t", p, executor, Arc::new(FairGate::new(1))).unwrap()
    }

    /// A job of `rows` rows under `key` that answers on `tx`.
    fn job(key: u32, rows: usize, tx: &mpsc::Sender<Result<usize, Rejection>>) -> Job {
        Job {
            key,
            rows,
            done: tx.clone(),
        }
    }

    #[test]
    fn compatible_jobs_share_one_execution() {
        let recorder = Arc::new(Recorder::default());
        let batcher = start_batcher(policy(8, 200), recorder.clone());
        let (tx, rx) = mpsc::channel();
        for _ in 0..4 {
            batcher.submit(job(1, 2, &tx), None, None).unwrap();
        }
        let sizes: Vec<usize> = (0..4).map(|_| rx.recv().unwrap().unwrap()).collect();
        assert_eq!(sizes, vec![8; 4]);
        assert_eq!(recorder.executions.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn different_keys_do_not_mix_and_max_size_is_respected() {
        let recorder = Arc::new(Recorder::default());
        let batcher = start_batcher(policy(3, 50), recorder.clone());
        let (tx, rx) = mpsc::channel();
        for key in [1, 2, 1, 2, 1, 1] {
            batcher.submit(job(key, 1, &tx), None, None).unwrap();
        }
        let sizes: Vec<usize> = (0..6).map(|_| rx.recv().unwrap().unwrap()).collect();
        assert!(sizes.iter().all(|&s| s <= 3), "{sizes:?}");
        batcher.shutdown();
        assert!(recorder.executions.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn full_queue_refuses_and_timeouts_reject() {
        let recorder = Arc::new(Recorder {
            delay: Duration::from_millis(100),
            ..Recorder::default()
        });
        let mut p = policy(1, 0);
        p.queue_capacity = 2;
        let batcher = start_batcher(p, recorder);
        let (tx, rx) = mpsc::channel();
        batcher.submit(job(0, 1, &tx), None, None).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // the worker takes it
        batcher
            .submit(job(0, 1, &tx), None, Some(Duration::from_millis(1)))
            .unwrap();
        batcher.submit(job(0, 1, &tx), None, None).unwrap();
        assert!(matches!(
            batcher.submit(job(0, 1, &tx), None, None),
            Err(SubmitError::QueueFull(_))
        ));
        assert!(matches!(
            batcher.submit(job(0, 1, &tx), Some(7), None),
            Err(SubmitError::BadPriority(_, 7))
        ));
        let results: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert!(results.contains(&Err(Rejection::Timeout)), "{results:?}");
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    }

    #[test]
    fn shutdown_finishes_queued_jobs() {
        let recorder = Arc::new(Recorder {
            delay: Duration::from_millis(5),
            ..Recorder::default()
        });
        let batcher = start_batcher(policy(1, 0), recorder);
        let (tx, rx) = mpsc::channel();
        for _ in 0..5 {
            batcher.submit(job(0, 1, &tx), None, None).unwrap();
        }
        batcher.shutdown();
        assert_eq!(rx.try_iter().filter(|r| r.is_ok()).count(), 5);
        assert!(matches!(
            batcher.submit(job(0, 1, &tx), None, None),
            Err(SubmitError::ShuttingDown(_))
        ));
    }

    #[test]
    fn higher_priority_is_served_first() {
        let order = Arc::new(Mutex::new(Vec::new()));
        struct Log(Arc<Mutex<Vec<u32>>>);
        impl BatchExecutor<Job> for Log {
            fn execute(&self, jobs: Vec<Queued<Job>>) {
                std::thread::sleep(Duration::from_millis(20));
                for q in jobs {
                    self.0.lock().push(q.job.key);
                    let _ = q.job.done.send(Ok(1));
                }
            }
        }
        let mut p = policy(1, 0);
        p.priority_levels = 2;
        p.default_priority = 2;
        let batcher = start_batcher(p, Arc::new(Log(order.clone())));
        let (tx, rx) = mpsc::channel();
        for (key, level) in [(0, None), (2, None), (2, None), (1, Some(1))] {
            batcher.submit(job(key, 1, &tx), level, None).unwrap();
            if key == 0 {
                std::thread::sleep(Duration::from_millis(5)); // the worker takes job 0
            }
        }
        for _ in 0..4 {
            rx.recv().unwrap().unwrap();
        }
        // Job 0 was already running; the level-1 job overtakes the two level-2 jobs.
        assert_eq!(*order.lock(), vec![0, 1, 2, 2]);
    }

    #[test]
    fn fair_gate_bounds_concurrency() {
        let gate = Arc::new(FairGate::new(2));
        let peak = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..6 {
                let (gate, peak) = (gate.clone(), peak.clone());
                s.spawn(move || {
                    let _p = gate.acquire();
                    peak.fetch_max(gate.in_use(), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert_eq!(gate.in_use(), 0);
    }

    #[test]
    fn stack_and_split_round_trip() {
        let a = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![5f32, 6.], &[1, 2]).unwrap();
        let s = stack_rows(&[&a, &b]).unwrap();
        assert_eq!(s.shape(), &[3, 2]);
        let parts = split_rows(&s, &[2, 1]).unwrap();
        assert_eq!(parts[0].to_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
        assert_eq!(parts[1].to_vec::<f32>().unwrap(), vec![5., 6.]);
        let c = Tensor::from_vec(vec![1f32, 2., 3.], &[1, 3]).unwrap();
        assert!(stack_rows(&[&a, &c]).is_err());
        assert!(split_rows(&s, &[1, 1]).is_err());
        let strings = Tensor::from_strings(vec!["x".into()], &[1]).unwrap();
        let both = stack_rows(&[&strings, &strings]).unwrap();
        assert_eq!(
            both.as_strings().unwrap(),
            &["x".to_string(), "x".to_string()]
        );
    }
}
