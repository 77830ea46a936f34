//! [`SpinPool`]: the parallel-for runtime kernels run on, built for low hand-off latency.
//!
//! Inference runs one kernel after another, each split into tasks, with short serial gaps
//! between them (allocation, small ops). A worker that goes to sleep in such a gap costs the
//! next kernel a wake-up, which on a virtual machine takes tens of microseconds: measured
//! here, a pool whose workers slept after ~20 µs idle (rayon's policy) ran two 50 µs tasks
//! in 116 µs after a 50 µs gap, i.e. serially. So, as onnxruntime's pool does, idle workers
//! here first spin (a busy core), then yield the core to other threads, and only sleep once
//! no job has come for [`SpinPool::SPIN`] + [`SpinPool::YIELD`].
//!
//! Linux here often wakes a worker that slept on the CPU of the caller waking it, where
//! both then spin by turns until the load balancer parts them; a woken worker on the
//! caller's CPU therefore moves itself to another ([`leave_caller_cpu`]).
//!
//! A job is published through one slot: the caller stores a pointer to the job (on its own
//! stack) and bumps an epoch; workers watching the epoch claim task indices from the job's
//! counter, and so does the caller, which therefore never waits for a worker that has not
//! woken up, only for tasks already claimed. Jobs do not nest: a parallel-for called from a
//! task, from a worker, or while another caller's job holds the slot runs serially on its
//! own thread (no blocking, no deadlock). A panicking task is caught, the job still
//! completes, and the caller panics after it.

use crate::ctx::ParallelFor;
use std::cell::Cell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

thread_local! {
    /// Whether this thread is a pool worker or is running a job's tasks (parallel-fors
    /// started here run serially).
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

/// Most threads whose tasks a job deals out in ranges of their own (see [`Job`]); the
/// threads past it take tasks from the others' ranges.
const MAX_RANGES: usize = 16;

/// One parallel-for: `tasks` calls of `task`, claimed by index.
///
/// The tasks are dealt out in `ranges` consecutive ranges, one per thread (the caller is
/// thread 0, worker `i` thread `i`): each thread first claims the tasks of its own range, in
/// order, then those left in the others'. Kernels split their data the same way from one
/// kernel to the next (a band of rows, a range of columns per task), so a thread tends to
/// read what it wrote itself in the kernel before, from its own core's cache: on this
/// host, data handed from one core to the other is slow in some phases (see
/// `kernels::nn::winograd`). A late thread's range is taken by the others.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    ranges: usize,
    /// Per range, the next of its tasks to claim (range `r` holds tasks
    /// `start(r)..start(r + 1)`).
    next: [AtomicUsize; MAX_RANGES],
    done: AtomicUsize,
    panicked: AtomicBool,
}

impl<'a> Job<'a> {
    fn new(task: &'a (dyn Fn(usize) + Sync), tasks: usize, threads: usize) -> Self {
        let ranges = threads.clamp(1, MAX_RANGES).min(tasks.max(1));
        let job = Job {
            task,
            tasks,
            ranges,
            next: std::array::from_fn(|_| AtomicUsize::new(0)),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        for r in 0..ranges {
            job.next[r].store(job.start(r), SeqCst);
        }
        job
    }

    /// The first task of range `r` (`tasks` for `r == ranges`).
    fn start(&self, r: usize) -> usize {
        r * self.tasks / self.ranges
    }

    /// Claims and runs tasks until none is left, those of thread `home`'s range first;
    /// never unwinds (a panicking task is recorded).
    fn work(&self, home: usize) {
        for k in 0..self.ranges {
            let r = (home + k) % self.ranges;
            let end = self.start(r + 1);
            loop {
                let i = self.next[r].fetch_add(1, SeqCst);
                if i >= end {
                    break;
                }
                self.run_task(i);
            }
        }
    }

    /// Runs task `i`; a panic is recorded, not unwound.
    fn run_task(&self, i: usize) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (self.task)(i))) {
            self.panicked.store(true, SeqCst);
            // A payload whose drop panics must not unwind out of here (a worker would
            // die holding the job; the caller would leave with the job published).
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
        }
        self.done.fetch_add(1, SeqCst);
    }
}

/// State shared by the caller side and the workers.
struct Shared {
    /// Bumped for every published job.
    epoch: AtomicU64,
    /// The current job (null between jobs); points into the publishing caller's stack.
    job: AtomicPtr<Job<'static>>,
    /// Workers between reading `job` and finishing with it.
    active: AtomicUsize,
    /// Whether a caller owns the job slot.
    busy: AtomicBool,
    /// Workers asleep (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    /// The CPU the caller of the current job ran on when it published it ([`NO_CPU`] when
    /// unknown).
    caller_cpu: AtomicUsize,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A fixed set of spinning worker threads plus the calling thread (see the module docs).
pub struct SpinPool {
    shared: Arc<Shared>,
    workers: usize,
}

impl fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpinPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl SpinPool {
    /// How long an idle worker busy-waits for the next job.
    pub const SPIN: Duration = Duration::from_micros(100);
    /// How long it then keeps polling between yields of its core, before it sleeps.
    pub const YIELD: Duration = Duration::from_millis(2);

    /// A pool running jobs on the caller plus `threads - 1` workers (at least one thread).
    /// Workers the OS refuses to start are left out.
    pub fn new(threads: usize) -> Self {
        Self::with_cpus(threads, &[])
    }

    /// As [`SpinPool::new`], worker `i` (1-based) pinned to CPU `cpus[(i - 1) % cpus.len()]`
    /// (onnxruntime's `intra_op_thread_affinities`); the caller's thread is left as it is.
    /// No pinning when `cpus` is empty, off Linux, or where the OS refuses it (the worker
    /// then runs unpinned).
    pub fn with_cpus(threads: usize, cpus: &[usize]) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            caller_cpu: AtomicUsize::new(NO_CPU),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = 0;
        for i in 1..threads.max(1) {
            let s = Arc::clone(&shared);
            let cpu = (!cpus.is_empty()).then(|| cpus[(i - 1) % cpus.len()]);
            let started = std::thread::Builder::new()
                .name(format!("strata-worker-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        placement::pin(cpu);
                    }
                    worker_loop(&s, i)
                });
            if started.is_ok() {
                workers += 1;
            }
        }
        SpinPool { shared, workers }
    }

    /// Threads a job may use: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers + 1
    }

    /// Calls `task(i)` for every `i` in `0..tasks`, spread over the caller and the workers;
    /// returns when all are done. Runs serially when nested (see the module docs).
    ///
    /// # Panics
    /// After all tasks ran, if any of them panicked.
    pub fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let nested = IN_JOB.with(Cell::get);
        if tasks <= 1
            || self.workers == 0
            || nested
            || self
                .shared
                .busy
                .compare_exchange(false, true, SeqCst, SeqCst)
                .is_err()
        {
            (0..tasks).for_each(task);
            return;
        }
        let job = Job::new(task, tasks, self.threads());
        let s = &*self.shared;
        s.job
            .store((&job as *const Job<'_>).cast_mut().cast(), SeqCst);
        s.caller_cpu
            .store(placement::current_cpu().unwrap_or(NO_CPU), SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            // Taking the lock orders this notification after a sleeper's last epoch check.
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        IN_JOB.with(|f| f.set(true));
        job.work(0);
        IN_JOB.with(|f| f.set(false));
        // Tasks the workers claimed; then no worker may still hold the job once it is gone.
        wait_until(|| job.done.load(SeqCst) >= tasks);
        s.job.store(std::ptr::null_mut(), SeqCst);
        wait_until(|| s.active.load(SeqCst) == 0);
        s.busy.store(false, SeqCst);
        assert!(
            !job.panicked.load(SeqCst),
            "a task of a parallel-for panicked"
        );
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, SeqCst);
        let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
}

impl ParallelFor for SpinPool {
    fn threads(&self) -> usize {
        SpinPool::threads(self)
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        SpinPool::run(self, tasks, task);
    }
}

/// Spins until `done()`, yielding the core after a short while (the threads it waits for may
/// need it).
fn wait_until(done: impl Fn() -> bool) {
    let mut polls = 0u32;
    while !done() {
        polls = polls.saturating_add(1);
        if polls < 1 << 12 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Worker `home` (its thread index; the caller is 0): waits for each new job and helps with
/// it, its own range of tasks first, until the pool is dropped.
fn worker_loop(s: &Shared, home: usize) {
    IN_JOB.with(|f| f.set(true));
    // The epoch the pool started with: a worker starting after a job was published joins
    // it (or finds the slot empty if it is over).
    let mut seen = 0;
    while wait_for_job(s, &mut seen) {
        s.active.fetch_add(1, SeqCst);
        let job = s.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: a non-null `job` was published by a caller that keeps the job alive
            // (on its stack) until it has unpublished it and seen `active` at zero; this
            // worker is counted in `active` since before it read the pointer, so the caller
            // is still waiting (both sides use SeqCst: either the caller's unpublishing comes
            // first and this read sees null, or the caller sees this worker in `active`).
            unsafe { &*job }.work(home);
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

/// Waits until the epoch moves past `seen` (spinning, then yielding, then sleeping) and
/// records it; false when the pool shuts down.
fn wait_for_job(s: &Shared, seen: &mut u64) -> bool {
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        let epoch = s.epoch.load(SeqCst);
        if epoch != *seen {
            *seen = epoch;
            return true;
        }
        if s.shutdown.load(SeqCst) {
            return false;
        }
        polls = polls.wrapping_add(1);
        if !polls.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        let idle = start.elapsed();
        if idle < SpinPool::SPIN {
            std::hint::spin_loop();
        } else if idle < SpinPool::SPIN + SpinPool::YIELD {
            std::thread::yield_now();
        } else {
            sleep_until_job(s, *seen);
            leave_caller_cpu(s);
        }
    }
}

/// Moves this worker, just woken, to another CPU when it shares the caller's.
///
/// After a sleep of tens of milliseconds, Linux here often wakes the worker on the CPU of
/// the caller that woke it, where both then spin by turns until the load balancer
/// separates them, milliseconds later: measured on ShuffleNet at 2 threads, runs after a
/// 50 ms idle took 2.9-3.9 ms instead of 2.6, with both threads on one CPU after half of
/// the idles. The worker checks where it woke and moves itself off the caller's CPU.
fn leave_caller_cpu(s: &Shared) {
    let caller = s.caller_cpu.load(SeqCst);
    if caller != NO_CPU && placement::current_cpu() == Some(caller) {
        placement::move_off(caller);
    }
}

/// Sleeps until the epoch differs from `seen` or the pool shuts down.
fn sleep_until_job(s: &Shared, seen: u64) {
    let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    s.sleepers.fetch_add(1, SeqCst);
    // A caller that bumps the epoch after this check sees `sleepers` and notifies under the
    // lock, which it can only take once this thread waits.
    while s.epoch.load(SeqCst) == seen && !s.shutdown.load(SeqCst) {
        guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
    s.sleepers.fetch_sub(1, SeqCst);
}

/// [`Shared::caller_cpu`] when the caller's CPU is unknown.
const NO_CPU: usize = usize::MAX;

/// Where threads run (Linux; elsewhere nothing is known and nothing moves).
mod placement {
    /// The CPU the calling thread runs on.
    #[cfg(target_os = "linux")]
    pub(super) fn current_cpu() -> Option<usize> {
        nix::sched::sched_getcpu().ok()
    }

    /// Migrates the calling thread off `cpu` (to another CPU it may run on) and restores
    /// its affinity; false when it may run nowhere else or the calls fail.
    #[cfg(target_os = "linux")]
    pub(super) fn move_off(cpu: usize) -> bool {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let me = Pid::from_raw(0);
        let Ok(allowed) = sched_getaffinity(me) else {
            return false;
        };
        let mut others = allowed;
        if others.unset(cpu).is_err()
            || !(0..CpuSet::count()).any(|c| others.is_set(c).unwrap_or(false))
        {
            return false;
        }
        let moved = sched_setaffinity(me, &others).is_ok();
        // Back to every CPU allowed before: the thread stays where it was moved to.
        let restored = sched_setaffinity(me, &allowed).is_ok();
        moved && restored
    }

    /// Restricts the calling thread to `cpu`; false where that fails.
    #[cfg(target_os = "linux")]
    pub(super) fn pin(cpu: usize) -> bool {
        use nix::sched::{sched_setaffinity, CpuSet};
        let mut only = CpuSet::new();
        only.set(cpu).is_ok() && sched_setaffinity(nix::unistd::Pid::from_raw(0), &only).is_ok()
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn pin(_cpu: usize) -> bool {
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn current_cpu() -> Option<usize> {
        None
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn move_off(_cpu: usize) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_task_runs_once_on_any_pool_size() {
        for threads in [1, 2, 3] {
            let pool = SpinPool::new(threads);
            assert_eq!(pool.threads(), threads);
            for tasks in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(tasks, &|i| {
                    hits[i].fetch_add(1, SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
            }
        }
    }

    #[test]
    fn ranges_deal_out_every_task_once() {
        let task = |_: usize| {};
        for threads in [1, 2, 3, MAX_RANGES + 4] {
            for tasks in [0, 1, 2, 5, 16, 33] {
                let job = Job::new(&task, tasks, threads);
                assert!(job.ranges >= 1 && job.ranges <= MAX_RANGES.min(tasks.max(1)));
                assert_eq!(job.start(0), 0);
                assert_eq!(job.start(job.ranges), tasks);
                assert!((0..job.ranges).all(|r| job.start(r) <= job.start(r + 1)));
                // Claiming from any home thread runs each task once.
                let job = Job::new(&task, tasks, threads);
                job.work(threads - 1);
                assert_eq!(job.done.load(SeqCst), tasks);
            }
        }
    }

    #[test]
    fn the_caller_takes_its_own_range_first() {
        let pool = SpinPool::new(2);
        let main = std::thread::current().id();
        let ran_by: Vec<Mutex<Option<std::thread::ThreadId>>> =
            (0..4).map(|_| Mutex::new(None)).collect();
        pool.run(4, &|i| {
            *ran_by[i].lock().unwrap() = Some(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(2));
        });
        // Task 0 opens the caller's range (tasks 0 and 1); the worker starts on 2 and 3.
        assert_eq!(*ran_by[0].lock().unwrap(), Some(main));
        assert!(ran_by.iter().all(|t| t.lock().unwrap().is_some()));
    }

    #[test]
    fn workers_take_tasks_and_wake_from_sleep() {
        let pool = SpinPool::new(2);
        let main = std::thread::current().id();
        let elsewhere = AtomicUsize::new(0);
        // Long enough tasks that the worker claims some, also after it fell asleep.
        for round in 0..2 {
            if round == 1 {
                std::thread::sleep(SpinPool::SPIN + SpinPool::YIELD + Duration::from_millis(20));
            }
            pool.run(8, &|_| {
                std::thread::sleep(Duration::from_millis(2));
                if std::thread::current().id() != main {
                    elsewhere.fetch_add(1, SeqCst);
                }
            });
        }
        assert!(elsewhere.load(SeqCst) > 0);
    }

    #[test]
    fn nested_and_concurrent_parallel_fors_complete() {
        let pool = SpinPool::new(2);
        let total = AtomicUsize::new(0);
        pool.run(8, &|_| {
            pool.run(8, &|_| {
                total.fetch_add(1, SeqCst);
            })
        });
        assert_eq!(total.load(SeqCst), 64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        pool.run(16, &|_| {
                            total.fetch_add(1, SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 64 + 4 * 50 * 16);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_after_the_job_and_the_pool_goes_on() {
        let pool = SpinPool::new(2);
        let ran = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(10, &|i| {
                ran.fetch_add(1, SeqCst);
                assert_ne!(i, 3, "task 3 fails");
            })
        }));
        assert!(result.is_err());
        assert_eq!(ran.load(SeqCst), 10);
        let after = AtomicUsize::new(0);
        pool.run(5, &|_| {
            after.fetch_add(1, SeqCst);
        });
        assert_eq!(after.load(SeqCst), 5);
        // A payload that panics again when dropped is contained as well.
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("the payload's drop panics");
            }
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(6, &|i| {
                if i % 2 == 1 {
                    std::panic::panic_any(Bomb);
                }
            })
        }));
        assert!(result.is_err());
        pool.run(5, &|_| {
            after.fetch_add(1, SeqCst);
        });
        assert_eq!(after.load(SeqCst), 10);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinned_workers_run_on_their_cpu_only() {
        let me = nix::unistd::Pid::from_raw(0);
        let allowed = nix::sched::sched_getaffinity(me).unwrap();
        let Some(cpu) = (0..nix::sched::CpuSet::count()).find(|&c| allowed.is_set(c).unwrap())
        else {
            return;
        };
        let pool = SpinPool::with_cpus(3, &[cpu]);
        let main = std::thread::current().id();
        let seen = Mutex::new(Vec::new());
        // Long enough tasks that the workers claim some (a few rounds: the host may be busy).
        for _ in 0..20 {
            pool.run(12, &|_| {
                std::thread::sleep(Duration::from_millis(2));
                if std::thread::current().id() != main {
                    let cpus = nix::sched::sched_getaffinity(me).unwrap();
                    let on = nix::sched::sched_getcpu().unwrap();
                    seen.lock().unwrap().push((cpus, on));
                }
            });
            if !seen.lock().unwrap().is_empty() {
                break;
            }
        }
        let seen = seen.into_inner().unwrap();
        assert!(!seen.is_empty(), "no worker took a task");
        let mut only = nix::sched::CpuSet::new();
        only.set(cpu).unwrap();
        assert!(
            seen.iter().all(|&(cpus, on)| cpus == only && on == cpu),
            "{seen:?}"
        );
        // The caller is not pinned.
        assert_eq!(nix::sched::sched_getaffinity(me).unwrap(), allowed);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_moved_off_its_cpu_runs_elsewhere_with_its_affinity_kept() {
        let Some(cpu) = placement::current_cpu() else {
            return; // no getcpu here: nothing is known, nothing moves
        };
        let me = nix::unistd::Pid::from_raw(0);
        let before = nix::sched::sched_getaffinity(me).unwrap();
        let elsewhere =
            (0..nix::sched::CpuSet::count()).any(|c| c != cpu && before.is_set(c).unwrap_or(false));
        assert_eq!(placement::move_off(cpu), elsewhere);
        assert_eq!(nix::sched::sched_getaffinity(me).unwrap(), before);
        if elsewhere {
            // The scheduler may move the thread back at any time; it has left at least once.
            let left = (0..3).any(|_| {
                placement::move_off(cpu);
                placement::current_cpu() != Some(cpu)
            });
            assert!(left, "still on CPU {cpu}");
        }
    }
}
