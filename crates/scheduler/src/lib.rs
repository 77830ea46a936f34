//! strata-sched owns how work is spread over threads:
//!
//! - [`ThreadPool`]: a fixed set of worker threads built on crossbeam scoped threads and
//!   channels, which implements [`strata_ops::ParallelFor`] so kernels can split large loops;
//! - [`Executor`]: runs an [`ExecutionPlan`] over a [`Graph`]. With one thread it walks the
//!   plan in order; with more, nodes whose inputs are ready run concurrently (dependency
//!   counting), and each node's kernel may use the pool for its own parallel-for. Values are
//!   released after their last reader, and their buffers go back to the session's pool.
//!
//! Request batching and priorities arrive with the server.

#![forbid(unsafe_code)]

mod executor;
mod pool;

pub use executor::{ExecError, Executor, RunOutputs};
pub use pool::ThreadPool;

pub use strata_graph::{ExecutionPlan, Graph};
