//! strata-ops owns what an operator is and how it runs on the CPU:
//!
//! - [`Operator`]: the object-safe trait every op implements (type inference from [`Fact`]s,
//!   evaluation on [`Value`]s, cost). A GPU backend implements the same trait for its ops.
//! - [`OpRegistry`]: one table from (domain, op type, opset version) to a builder that parses
//!   and validates the node's [`Attributes`] once, at load time.
//! - [`EvalCtx`]: what a kernel may use while it runs: output allocation from the session's
//!   pool ([`TensorAlloc`]) and a parallel-for over the scheduler's threads ([`ParallelFor`]).
//! - [`SpinPool`]: the low-latency parallel-for runtime the scheduler's pool runs kernels on
//!   (here because its job hand-off needs `unsafe`, which only this kernel crate may use).
//! - `kernels`: the CPU kernels, one module per family, each registering its ops.

mod attrs;
mod ctx;
mod error;
mod fact;
pub mod kernels;
mod registry;
mod shape_cache;
mod spin_pool;
mod unimplemented;
mod value;

pub use attrs::{node_captures, Attribute, Attributes, Subgraph, SubgraphBody};
pub use ctx::{EvalCtx, HeapTensorAlloc, ParallelFor, SerialParallelFor, TensorAlloc};
pub use error::{OpError, OpResult};
pub use fact::{Dim, Fact};
pub use registry::{BuildCtx, OpBuilder, OpRegistry, RegisteredOp, LATEST_OPSET};
pub use shape_cache::ShapeCache;
pub use spin_pool::SpinPool;
pub use unimplemented::Unimplemented;
pub use value::{Inputs, Value};

use std::any::Any;
use std::fmt;

/// An operator instance: one node's op with its attributes already parsed and validated.
///
/// Implementations must be cheap to share across threads; evaluation never mutates the op.
pub trait Operator: Send + Sync + fmt::Debug {
    /// The ONNX op type, such as `Conv`.
    fn op_type(&self) -> &str;

    /// Output facts from input facts. `None` (the default) means "not known before running";
    /// the executor then learns shapes by evaluating.
    fn infer(&self, _inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(None)
    }

    /// Computes the outputs. Outputs that ONNX marks optional and the node does not request may
    /// be omitted at the end of the vector.
    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>>;

    /// Floating-point operations for inputs of these facts (0 when unknown or negligible).
    fn flops(&self, _inputs: &[Fact]) -> u64 {
        0
    }

    /// Bytes of data the op holds itself instead of reading as inputs (weights prepacked at
    /// session creation); every run reads them, so they weigh in planning (0 by default).
    fn weight_bytes(&self) -> usize {
        0
    }

    /// Whether evaluation on constant inputs may be done once at load (false for random ops).
    fn is_deterministic(&self) -> bool {
        true
    }

    /// For optimization passes that need the concrete type.
    fn as_any(&self) -> &dyn Any;
}
