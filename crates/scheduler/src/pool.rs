//! The thread pool and its parallel-for.
//!
//! A [`ThreadPool`] owns `threads - 1` persistent worker threads ([`strata_ops::SpinPool`]):
//! a parallel-for runs on the calling thread and the workers, which claim tasks by index.
//! Idle workers spin for a while before they sleep, so back-to-back kernels find them awake
//! (onnxruntime's policy; a worker woken from sleep on a virtual machine arrives tens of
//! microseconds late), and the caller never waits for a worker that has not started, only
//! for tasks already running. Parallel-fors do not nest: one started inside a task, or while
//! another caller's parallel-for holds the pool, runs serially on its own thread. Threads
//! are created once per pool, not per call.

use std::fmt;
use std::sync::Arc;
use strata_ops::{ParallelFor, SpinPool};

/// A pool of `threads` threads. One thread means no workers: everything runs on the caller.
#[derive(Clone)]
pub struct ThreadPool {
    threads: usize,
    workers: Option<Arc<SpinPool>>,
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
        Self::pinned(threads, &[])
    }

    /// As [`ThreadPool::new`], each worker pinned to one of `cpus` in turn (the calling
    /// thread is not pinned; empty `cpus` pins nothing): see [`SpinPool::with_cpus`].
    pub fn pinned(threads: usize, cpus: &[usize]) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let workers = (threads > 1)
            .then(|| SpinPool::with_cpus(threads, cpus))
            .filter(|p| p.threads() > 1);
        ThreadPool {
            threads: workers.as_ref().map_or(1, SpinPool::threads),
            workers: workers.map(Arc::new),
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the calling thread and returns its result. Kept for callers written for a
    /// pool that hands work over to its own threads; parallel-fors inside `f` use the pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Runs `worker(t)` for `t` in `0..threads` (at most the pool's size) concurrently where
    /// threads are free; the caller runs the ones no worker has taken, so each must return
    /// promptly once the shared work is done. Parallel-fors inside the workers run serially.
    pub fn broadcast(&self, threads: usize, worker: &(dyn Fn(usize) + Sync)) {
        let threads = threads.clamp(1, self.threads);
        self.run(threads, worker);
    }
}

impl ParallelFor for ThreadPool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        match &self.workers {
            Some(pool) => pool.run(tasks, task),
            None => (0..tasks).for_each(task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3] {
            // Pinned or not (CPU 0, where pinning works, for every worker).
            for pool in [ThreadPool::new(threads), ThreadPool::pinned(threads, &[0])] {
                assert_eq!(pool.threads(), threads);
                let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
                pool.run(100, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
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
