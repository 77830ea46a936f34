//! The thread pool and its parallel-for.

use std::fmt;
use strata_ops::ParallelFor;

/// A pool of `threads` threads (the caller counts as one). Work is handed out through a
/// crossbeam channel of task indices; threads are crossbeam scoped threads, so tasks may
/// borrow from the caller's stack without `'static` bounds or unsafe code.
#[derive(Clone)]
pub struct ThreadPool {
    threads: usize,
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `threads` threads; 0 means one per available core.
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        ThreadPool { threads }
    }

    /// Number of threads, including the caller.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `worker(thread_index)` on `threads` threads at once (index 0 on the caller) and
    /// waits for all of them.
    pub fn broadcast(&self, threads: usize, worker: &(dyn Fn(usize) + Sync)) {
        let threads = threads.clamp(1, self.threads);
        if threads == 1 {
            worker(0);
            return;
        }
        crossbeam::thread::scope(|scope| {
            for t in 1..threads {
                scope.spawn(move |_| worker(t));
            }
            worker(0);
        })
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
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
        let (sender, receiver) = crossbeam::channel::bounded(tasks);
        for i in 0..tasks {
            // The channel holds `tasks` items, so sending cannot fail or block.
            let _ = sender.send(i);
        }
        drop(sender);
        self.broadcast(tasks, &|_| {
            while let Ok(i) = receiver.recv() {
                task(i);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once() {
        let pool = ThreadPool::new(3);
        let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        pool.run(100, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn zero_means_available_cores() {
        assert!(ThreadPool::new(0).threads() >= 1);
    }
}
