//! Graph errors: each names the node, value or op concerned.

use strata_ops::OpError;

/// What is wrong with a graph, or what failed while transforming it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// A node reads a value nothing produces.
    #[error("node '{node}' ({op}) reads undefined value '{value}'")]
    UndefinedValue {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// The missing value's name.
        value: String,
    },
    /// A graph output is never produced.
    #[error("graph output '{0}' is not produced by any node, input or constant")]
    UndefinedOutput(String),
    /// Two producers write the same value.
    #[error("value '{0}' is produced more than once")]
    DuplicateValue(String),
    /// The graph has a cycle through these nodes.
    #[error("graph has a cycle through nodes: {}", .0.join(", "))]
    Cycle(Vec<String>),
    /// A node's op could not be evaluated or inferred.
    #[error("node '{node}' ({op}): {source}")]
    Op {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// The op's error.
        #[source]
        source: OpError,
    },
}
