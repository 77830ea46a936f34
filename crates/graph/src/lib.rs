//! strata-graph owns the intermediate representation every frontend produces and every
//! executor runs:
//!
//! - [`Graph`]: values (with [`Fact`]s), nodes (each holding its built [`Operator`]), graph
//!   inputs, outputs and constants. Frontends build it with [`GraphBuilder`].
//! - validation and topological ordering ([`Graph::topological_order`]), with cycles and
//!   dangling references reported as [`GraphError`]s;
//! - shape and type inference ([`infer::infer_facts`]) that keeps symbolic dimensions;
//! - a pass framework ([`passes`]) with dead-code elimination, constant folding and
//!   identity removal, and the fusion passes ([`fusion`]: Conv+BatchNorm folding, residual
//!   Add, MatMul bias, GELU and activation fusion);
//! - the [`ExecutionPlan`]: order, value lifetimes and the static memory plan;
//! - [`CompiledSubgraph`]: a nested graph (If/Loop/Scan body) with its plan and a small
//!   sequential interpreter, exposed to control-flow kernels as a `SubgraphBody`.
//!
//! The crate runs kernels itself only to fold constants and to interpret nested graphs; top
//! level graphs are run by strata-sched.

#![forbid(unsafe_code)]

pub mod batch;
mod error;
pub mod fusion;
mod graph;
pub mod infer;
pub mod passes;
mod plan;
mod subgraph;

pub use error::GraphError;
pub use graph::{Graph, GraphBuilder, Node, NodeId, ValueId, ValueInfo};
pub use plan::ExecutionPlan;
pub use strata_ops::{Dim, Fact, Operator};
pub use subgraph::CompiledSubgraph;

/// Result alias for graph operations.
pub type Result<T, E = GraphError> = std::result::Result<T, E>;
