//! The facade's error type: every failure a user can meet, each naming its culprit.

use strata_tensor::DType;

/// Everything that can go wrong when loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrataError {
    /// The model file could not be read or parsed.
    #[error(transparent)]
    Load(#[from] strata_onnx::OnnxError),
    /// The graph is invalid or could not be optimized.
    #[error(transparent)]
    Graph(#[from] strata_graph::GraphError),
    /// A node has no kernel.
    #[error("node '{node}': unsupported op {op} (domain '{domain}', opset {opset}): {reason}")]
    UnsupportedOp {
        /// The node.
        node: String,
        /// The op type.
        op: String,
        /// The domain.
        domain: String,
        /// The opset version.
        opset: i64,
        /// Details.
        reason: String,
    },
    /// An input name the model does not have.
    #[error("unknown input '{name}'; the model's inputs are: {expected}")]
    UnknownInput {
        /// The name given.
        name: String,
        /// The model's input names, comma separated.
        expected: String,
    },
    /// A model input was not given.
    #[error("missing input '{0}'")]
    MissingInput(String),
    /// More positional inputs than the model has.
    #[error("{given} inputs given but the model has {expected}")]
    TooManyInputs {
        /// Inputs given.
        given: usize,
        /// Inputs the model has.
        expected: usize,
    },
    /// An input of the wrong dtype.
    #[error("input '{name}' must be {expected}, got {found}")]
    InputDType {
        /// The input.
        name: String,
        /// The declared dtype.
        expected: DType,
        /// The dtype given.
        found: DType,
    },
    /// An input of the wrong shape.
    #[error("input '{name}' must have shape {expected}, got {found:?}")]
    InputShape {
        /// The input.
        name: String,
        /// The declared shape, with symbols.
        expected: String,
        /// The shape given.
        found: Vec<usize>,
    },
    /// A run failed in a node.
    #[error(transparent)]
    Exec(#[from] strata_sched::ExecError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] strata_tensor::TensorError),
    /// A batch run in sub-batches could not be split or joined (an input or output is not
    /// a tensor, or the pieces of an output disagree in shape).
    #[error("running the batch in sub-batches: {0}")]
    BatchSplit(String),
}
