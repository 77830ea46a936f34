//! The placeholder op for nodes no kernel implements: the model still loads (so it can be
//! inspected) and the node fails with a clear error when a session is created or run.

use crate::{EvalCtx, Inputs, OpError, OpResult, Operator, Value};

/// A node whose op has no kernel.
#[derive(Debug, Clone)]
pub struct Unimplemented {
    /// The op type.
    pub op_type: String,
    /// The op's domain.
    pub domain: String,
    /// The opset version the model asked for.
    pub opset: i64,
    /// Why no op was built (no kernel, or the builder rejected an attribute).
    pub reason: String,
}

impl Operator for Unimplemented {
    fn op_type(&self) -> &str {
        &self.op_type
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, _inputs: Inputs) -> OpResult<Vec<Value>> {
        Err(OpError::Unsupported(self.reason.clone()))
    }

    fn is_deterministic(&self) -> bool {
        false
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
