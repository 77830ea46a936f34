//! The thread pool and its parallel-for.
//!
//! A [`ThreadPool`] owns `threads` persistent worker threads (a rayon-core pool: workers spin
//! briefly, then sleep, so back-to-back kernels find them awake and an idle session costs
//! nothing). A run enters the pool once ([`ThreadPool::install`]); inside it a parallel-for
//! splits its tasks by recursive `join`, so work no other worker has picked up yet is done by
//! the thread that offered it. That matters on a loaded machine: a kernel never waits for a
//! worker the OS has not scheduled, only for tasks already running. Threads are created once
//! per pool, not per call.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use strata_ops::ParallelFor;

/// A pool of `threads` threads. One thread means no workers: everything runs on the caller.
#[derive(Clone)]
pub struct ThreadPool {
    threads: usize,
    workers: Option<Arc<rayon_core::ThreadPool>>,
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `threads` threads; 0 means one per available core. If the operating system
    /// refuses to start the workers, the pool runs everything on the caller (one thread).
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let workers = (threads > 1)
            .then(|| {
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("strata-worker-{i}"))
                    .build()
                    .ok()
            })
            .flatten();
        ThreadPool {
            threads: if workers.is_some() { threads } else { 1 },
            workers: workers.map(Arc::new),
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on one of the pool's threads (directly when already on one, or when the pool
    /// has no workers) and returns its result; the caller blocks meanwhile. Parallel-fors
    /// inside `f` then split work without a hand-off per call.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.workers {
            Some(pool) if pool.current_thread_index().is_none() => pool.install(f),
            _ => f(),
        }
    }

    /// Runs `worker(t)` for `t` in `0..threads` (at most the pool's size) concurrently where
    /// threads are free; `worker(0)` runs on the calling thread. Workers not started by the
    /// time the others finish are run by the caller, so each must return promptly once the
    /// shared work is done.
    pub fn broadcast(&self, threads: usize, worker: &(dyn Fn(usize) + Sync)) {
        let threads = threads.clamp(1, self.threads);
        if threads == 1 {
            worker(0);
            return;
        }
        self.install(|| {
            rayon_core::scope(|scope| {
                for t in 1..threads {
                    scope.spawn(move |_| worker(t));
                }
                worker(0);
            })
        });
    }
}

/// Runs `task` for every index of `range`, halving the range with `join` so idle workers
/// steal halves and unstolen halves run here.
fn split_join(range: Range<usize>, task: &(dyn Fn(usize) + Sync)) {
    if range.len() <= 1 {
        range.for_each(task);
        return;
    }
    let mid = range.start + range.len() / 2;
    rayon_core::join(
        || split_join(range.start..mid, task),
        || split_join(mid..range.end, task),
    );
}

impl ParallelFor for ThreadPool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || self.threads == 1 {
            (0..tasks).for_each(task);
            return;
        }
        self.install(|| split_join(0..tasks, task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
            pool.run(100, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn nested_parallel_fors_inside_a_run_complete() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        pool.install(|| {
            pool.run(8, &|_| {
                pool.run(8, &|_| {
                    total.fetch_add(1, Ordering::Relaxed);
                })
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn broadcast_runs_each_worker_once() {
        let pool = ThreadPool::new(2);
        let started = AtomicUsize::new(0);
        let seen: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        pool.broadcast(2, &|t| {
            seen[t].fetch_add(1, Ordering::Relaxed);
            started.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        pool.run(16, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 20 * 16);
    }

    #[test]
    fn zero_means_available_cores() {
        assert!(ThreadPool::new(0).threads() >= 1);
    }
}
