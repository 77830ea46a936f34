//! strata-sched owns how work is spread over threads:
//!
//! - [`ThreadPool`]: a fixed set of worker threads that spin between kernels
//!   ([`strata_ops::SpinPool`]), which implements [`strata_ops::ParallelFor`] so kernels can
//!   split large loops;
//! - [`Executor`]: runs an [`ExecutionPlan`] over a [`Graph`]. [`Executor::run`] walks the
//!   plan in order and each node's kernel splits its loops over the pool (intra-op);
//!   [`Executor::run_parallel`] runs nodes whose inputs are ready concurrently (dependency
//!   counting), their kernels then serial (parallel-fors do not nest). Values are released
//!   after their last reader, and their buffers go back to the session's pool.
//!
//! - [`DynamicBatcher`]: a bounded request queue with priority levels whose workers stack
//!   compatible requests along the batch dimension ([`stack_rows`], [`split_rows`]) and run
//!   them once; a [`FairGate`] shared by all batchers admits executions in arrival order so
//!   models share the cores fairly. The server builds on it.

#![forbid(unsafe_code)]

mod batcher;
mod executor;
mod pool;

pub use batcher::{
    split_rows, stack_rows, BatchExecutor, BatchJob, BatchPolicy, DynamicBatcher, FairGate,
    GatePermit, Queued, Rejection, RowsError, SubmitError,
};
pub use executor::{ExecError, Executor, Profile, RunOutputs, SlotRecycler};
pub use pool::ThreadPool;

pub use strata_graph::{ExecutionPlan, Graph};
