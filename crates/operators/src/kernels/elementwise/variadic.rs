//! Variadic elementwise ops (Sum, Mean, Max, Min) and the three-way `Where`.

use super::broadcast::{broadcast_fact_shapes, chunk_len, BroadcastPlan};
use super::num::Arith;
use crate::{EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{dispatch_numeric, DType, Shape, Tensor};

/// Which fold a [`Variadic`] op computes over its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum VariadicKind {
    Sum,
    Mean,
    Max,
    Min,
}

/// `Sum`, `Mean`, `Max` or `Min` of one or more broadcast inputs.
#[derive(Debug, Clone)]
pub struct Variadic {
    op: &'static str,
    kind: VariadicKind,
}

/// Registers Sum, Mean, Max, Min and Where.
pub fn register(r: &mut OpRegistry) {
    macro_rules! reg {
        ($($name:literal $kind:ident),*) => {$(
            r.register("", $name, 1, |_| Ok(Box::new(Variadic { op: $name, kind: VariadicKind::$kind })));
        )*};
    }
    reg!("Sum" Sum, "Mean" Mean, "Max" Max, "Min" Min);
    r.register("", "Where", 9, |_| Ok(Box::new(Where)));
}

/// The broadcast shape of all `tensors`, naming the first input that does not fit.
fn broadcast_all(tensors: &[&Tensor]) -> OpResult<Shape> {
    let mut shape: Shape = tensors
        .first()
        .map_or_else(Shape::new, |t| t.shape().into());
    for (i, t) in tensors.iter().enumerate().skip(1) {
        shape = strata_tensor::broadcast_shapes(&shape, t.shape()).map_err(|_| {
            OpError::invalid(
                i,
                format!(
                    "shape {:?} cannot be broadcast with the earlier inputs' {:?}",
                    t.shape(),
                    shape
                ),
            )
        })?;
    }
    Ok(shape)
}

impl Variadic {
    fn fold<T: Arith>(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &[Tensor],
        shape: &[usize],
        out: &mut [T],
    ) -> OpResult<()> {
        // The kind is matched once per call: each arm monomorphizes its own loops.
        macro_rules! run {
            ($f:expr) => {{
                let f = $f;
                if inputs.len() >= 2 {
                    let plan =
                        BroadcastPlan::to_shape([inputs[0].shape(), inputs[1].shape()], shape)?;
                    plan.binary(
                        ctx,
                        inputs[0].as_slice::<T>()?,
                        inputs[1].as_slice::<T>()?,
                        out,
                        f,
                    );
                } else {
                    let plan = BroadcastPlan::to_shape([inputs[0].shape()], shape)?;
                    plan.assign(ctx, out, inputs[0].as_slice::<T>()?, |_, &x| x);
                }
                for t in inputs.iter().skip(2) {
                    let plan = BroadcastPlan::to_shape([t.shape()], shape)?;
                    plan.assign(ctx, out, t.as_slice::<T>()?, f);
                }
            }};
        }
        match self.kind {
            VariadicKind::Sum | VariadicKind::Mean => run!(|a: &T, b: &T| a.plus(*b)),
            VariadicKind::Max => run!(|a: &T, b: &T| a.max_prop(*b)),
            VariadicKind::Min => run!(|a: &T, b: &T| a.min_prop(*b)),
        }
        if self.kind == VariadicKind::Mean {
            let n = T::from_f64(inputs.len() as f64);
            let chunk = chunk_len(ctx, out.len());
            ctx.par_chunks_mut(out, chunk, |_, c| {
                c.iter_mut().for_each(|v| *v = v.divide(n))
            });
        }
        Ok(())
    }
}

impl Operator for Variadic {
    fn op_type(&self) -> &str {
        self.op
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        if inputs.is_empty() {
            return Ok(None);
        }
        let facts: Vec<&Fact> = inputs.iter().collect();
        Ok(Some(vec![Fact {
            dtype: inputs[0].dtype,
            shape: broadcast_fact_shapes(&facts)?,
            value: None,
        }]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let tensors = inputs.tensors()?;
        let Some(first) = tensors.first() else {
            return Err(OpError::MissingInput { index: 0 });
        };
        let dtype = first.dtype();
        if let Some((i, t)) = tensors.iter().enumerate().find(|(_, t)| t.dtype() != dtype) {
            return Err(OpError::invalid(
                i,
                format!("dtype {} differs from input 0's {}", t.dtype(), dtype),
            ));
        }
        let shape = broadcast_all(&tensors)?;
        let contiguous: Vec<Tensor> = tensors.iter().map(|t| t.contiguous()).collect();
        let mut out = ctx.alloc(dtype, &shape)?;
        dispatch_numeric!(dtype, T => self.fold::<T>(ctx, &contiguous, &shape, out.as_slice_mut::<T>()?)?,
            return Err(OpError::UnsupportedDType { index: 0, dtype }));
        Ok(vec![out.into()])
    }
}

/// `Where(condition, x, y)`: elements of `x` where the condition holds, else of `y`, all three
/// broadcast together; any numeric, bool or string dtype.
#[derive(Debug, Clone, Copy)]
pub struct Where;

impl Operator for Where {
    crate::op_boilerplate!("Where");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        if inputs.len() < 3 {
            return Ok(None);
        }
        Ok(Some(vec![Fact {
            dtype: inputs[1].dtype,
            shape: broadcast_fact_shapes(&[&inputs[0], &inputs[1], &inputs[2]])?,
            value: None,
        }]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let c = inputs.tensor(0)?.contiguous();
        let x = inputs.tensor(1)?.contiguous();
        let y = inputs.tensor(2)?.contiguous();
        if c.dtype() != DType::Bool {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: c.dtype(),
            });
        }
        if x.dtype() != y.dtype() {
            return Err(OpError::invalid(
                2,
                format!("dtype {} differs from input 1's {}", y.dtype(), x.dtype()),
            ));
        }
        let plan = BroadcastPlan::new([c.shape(), x.shape(), y.shape()])?;
        let mut out = ctx.alloc(x.dtype(), plan.out_shape())?;
        let cond = c.as_bool_slice()?;
        match x.dtype() {
            DType::String => plan.ternary(
                ctx,
                cond,
                x.as_strings()?,
                y.as_strings()?,
                out.as_strings_mut()?,
                |&c, a: &String, b: &String| if c != 0 { a.clone() } else { b.clone() },
            ),
            DType::Bool => plan.ternary(
                ctx,
                cond,
                x.as_bool_slice()?,
                y.as_bool_slice()?,
                out.as_bool_slice_mut()?,
                |&c, &a: &u8, &b: &u8| if c != 0 { a } else { b },
            ),
            dt => dispatch_numeric!(dt, T => plan.ternary(
                ctx,
                cond,
                x.as_slice::<T>()?,
                y.as_slice::<T>()?,
                out.as_slice_mut::<T>()?,
                |&c, &a: &T, &b: &T| if c != 0 { a } else { b },
            ), return Err(OpError::UnsupportedDType { index: 1, dtype: dt })),
        }
        Ok(vec![out.into()])
    }
}
