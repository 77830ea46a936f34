//! Shape and data-movement kernels.

use crate::{op_boilerplate, EvalCtx, Fact, Inputs, OpRegistry, OpResult, Operator, Value};

/// Registers the shape and data-movement ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "Identity", 1, |_| Ok(Box::new(Identity)));
}

/// `Identity`: passes its input through (a view, no copy).
#[derive(Debug, Clone, Copy)]
pub struct Identity;

impl Operator for Identity {
    op_boilerplate!("Identity");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| vec![f.clone()]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, mut inputs: Inputs) -> OpResult<Vec<Value>> {
        let v = inputs
            .take(0)
            .ok_or(crate::OpError::MissingInput { index: 0 })?;
        Ok(vec![v])
    }
}
