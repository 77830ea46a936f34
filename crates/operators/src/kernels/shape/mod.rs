//! Shape and data-movement kernels: views (Reshape, Flatten, Squeeze, Unsqueeze, Identity),
//! layout changes, indexing, scattering, padding, constants and casts.
//!
//! Ops that only change the shape return views of the input; ops that reorder data write a
//! contiguous output from the evaluation context's allocator. Sizes taken from inputs or
//! attributes are checked so that a hostile model gets an error instead of a huge allocation.

pub(crate) mod common;
mod create;
mod index;
mod reshape;

pub use create::{
    BitCast, Cast, CastLike, Constant, ConstantOfShape, Dropout, EyeLike, Pad, PadMode, Range,
    Trilu,
};
pub use index::{
    Compress, Concat, Gather, GatherElements, GatherND, NonZero, OneHot, Reduction,
    ScatterElements, ScatterND, Slice, SliceAttrs, Split,
};
pub use reshape::{
    DepthToSpace, Expand, Flatten, Reshape, ShapeOp, Size, SpaceToDepth, Squeeze, Tile, Transpose,
    Unsqueeze,
};

pub(crate) use common::{checked_numel, materialize};

use crate::{op_boilerplate, EvalCtx, Fact, Inputs, OpRegistry, OpResult, Operator, Value};

/// Registers the shape and data-movement ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "Identity", 1, |_| Ok(Box::new(Identity)));
    create::register(registry);
    index::register(registry);
    reshape::register(registry);
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

#[cfg(test)]
mod tests;
