//! The operator error type. The executor wraps it with the node name and op type.

use strata_tensor::{DType, TensorError};

/// Result alias for operator code.
pub type OpResult<T> = Result<T, OpError>;

/// What went wrong while building or evaluating one operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// A required input is absent.
    #[error("input {index} is required but missing")]
    MissingInput {
        /// Input position.
        index: usize,
    },
    /// An input has a dtype the op does not accept.
    #[error("input {index} has unsupported dtype {dtype}")]
    UnsupportedDType {
        /// Input position.
        index: usize,
        /// The dtype received.
        dtype: DType,
    },
    /// An input is invalid for another reason (shape, rank, value).
    #[error("input {index}: {reason}")]
    InvalidInput {
        /// Input position.
        index: usize,
        /// What is wrong, naming the shape or value.
        reason: String,
    },
    /// An attribute is missing, of the wrong type or out of range.
    #[error("attribute '{name}': {reason}")]
    Attribute {
        /// Attribute name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The input shapes are inconsistent.
    #[error("{0}")]
    Shape(String),
    /// The op or this use of it is not implemented.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A node inside a nested graph (If/Loop/Scan body) failed.
    #[error("{context}: {source}")]
    Subgraph {
        /// Where: `in subgraph 'body', node 'add' (Add)`.
        context: String,
        /// The inner error.
        #[source]
        source: Box<OpError>,
    },
    /// A nested graph does not fit the node that holds it (arity, missing values).
    #[error("subgraph: {0}")]
    BadSubgraph(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// Memory could not be obtained.
    #[error(transparent)]
    Memory(#[from] strata_memory::MemoryError),
}

impl OpError {
    /// Shorthand for [`OpError::InvalidInput`].
    pub fn invalid(index: usize, reason: impl Into<String>) -> Self {
        OpError::InvalidInput {
            index,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`OpError::Attribute`].
    pub fn attribute(name: &str, reason: impl Into<String>) -> Self {
        OpError::Attribute {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}
