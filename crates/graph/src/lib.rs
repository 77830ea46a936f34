//! strata-graph owns the intermediate representation every frontend produces and every
//! executor runs:
//!
//! - [`Graph`]: values (with [`Fact`]s), nodes (each holding its built [`Operator`]), graph
//!   inputs, outputs and constants. Frontends build it with [`GraphBuilder`].
//! - validation and topological ordering ([`Graph::topological_order`]), with cycles and
//!   dangling references reported as [`GraphError`]s;
//! - shape and type inference ([`infer::infer_facts`]) that keeps symbolic dimensions;
//! - a pass framework ([`passes`]) with dead-code elimination, constant folding and
//!   identity removal;
//! - the [`ExecutionPlan`]: order, value lifetimes and the static memory plan.
//!
//! The crate never runs kernels itself except to fold constants.

#![forbid(unsafe_code)]

mod error;
mod graph;
pub mod infer;
pub mod passes;
mod plan;

pub use error::GraphError;
pub use graph::{Graph, GraphBuilder, Node, NodeId, ValueId, ValueInfo};
pub use plan::ExecutionPlan;
pub use strata_ops::{Dim, Fact, Operator};

/// Result alias for graph operations.
pub type Result<T, E = GraphError> = std::result::Result<T, E>;
