//! Frontend errors.

use strata_graph::GraphError;
use strata_tensor::TensorError;

/// Why a model or tensor file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("not a valid ONNX {what} (protobuf decode failed: {reason})")]
    Decode {
        /// What was expected (`model`, `tensor`, ...).
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The model has no graph.
    #[error("model has no graph")]
    NoGraph,
    /// A tensor is malformed: unknown type, negative or huge dims, data too short.
    #[error("tensor '{name}': {reason}")]
    BadTensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An attribute is malformed.
    #[error("node '{node}' ({op}): attribute '{attribute}': {reason}")]
    BadAttribute {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// The attribute.
        attribute: String,
        /// What is wrong.
        reason: String,
    },
    /// Subgraphs, or calls of model-local functions, are nested deeper than the limit
    /// ([`crate::MAX_SUBGRAPH_DEPTH`], [`crate::MAX_FUNCTION_DEPTH`]).
    #[error("subgraphs or function calls are nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The graph is malformed (undefined values, cycles, ...).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}
