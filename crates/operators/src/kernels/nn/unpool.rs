//! `MaxUnpool`: scatters pooled values back to the positions their indices name, as the
//! ONNX reference does: indices address the unpooled shape inferred from the kernel, strides
//! and pads, and that result is then placed at the origin of `output_shape` when given.

use super::super::shape::common::{checked_numel, row_major_strides, sizes_from, Elems, ElemsMut};
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};

/// Registers `MaxUnpool`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "MaxUnpool", 9, build);
}

/// The `MaxUnpool` op.
#[derive(Debug, Clone)]
pub struct MaxUnpool {
    /// Kernel size per spatial axis.
    pub kernel: Vec<usize>,
    /// Strides per spatial axis.
    pub strides: Vec<usize>,
    /// Begin pads then end pads.
    pub pads: Vec<usize>,
}

fn usizes(ctx: &BuildCtx<'_>, name: &str, default: Option<Vec<i64>>) -> OpResult<Vec<usize>> {
    let v = match ctx.attrs.ints(name)? {
        Some(v) => v,
        None => default.ok_or_else(|| OpError::attribute(name, "required"))?,
    };
    v.iter()
        .map(|&x| {
            usize::try_from(x).map_err(|_| OpError::attribute(name, format!("{x} is negative")))
        })
        .collect()
}

fn build(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let kernel = usizes(ctx, "kernel_shape", None)?;
    let k = kernel.len();
    let strides = usizes(ctx, "strides", Some(vec![1; k]))?;
    let pads = usizes(ctx, "pads", Some(vec![0; 2 * k]))?;
    if strides.len() != k || pads.len() != 2 * k {
        return Err(OpError::attribute(
            "pads",
            format!("strides {strides:?} and pads {pads:?} do not fit kernel {kernel:?}"),
        ));
    }
    Ok(Box::new(MaxUnpool {
        kernel,
        strides,
        pads,
    }))
}

impl MaxUnpool {
    fn inferred_shape(&self, xs: &[usize]) -> OpResult<Vec<usize>> {
        let k = self.kernel.len();
        if xs.len() != k + 2 {
            return Err(OpError::invalid(
                0,
                format!("X {xs:?} must be [N, C] plus {k} spatial dimensions"),
            ));
        }
        let mut shape = xs[..2].to_vec();
        for d in 0..k {
            let full = xs[d + 2].saturating_sub(1) * self.strides[d] + self.kernel[d];
            let size = full
                .checked_sub(self.pads[d] + self.pads[k + d])
                .ok_or_else(|| {
                    OpError::invalid(0, format!("pads {:?} exceed the unpooled size", self.pads))
                })?;
            shape.push(size);
        }
        checked_numel(&shape)?;
        Ok(shape)
    }
}

impl Operator for MaxUnpool {
    crate::op_boilerplate!("MaxUnpool");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let idx = inputs.tensor(1)?.to_i64_vec()?;
        let inferred = self.inferred_shape(x.shape())?;
        if idx.len() != x.len() {
            return Err(OpError::invalid(
                1,
                format!("{} indices for {} values", idx.len(), x.len()),
            ));
        }
        let total: usize = inferred.iter().product();
        let flat = idx
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .filter(|&i| i < total)
                    .ok_or_else(|| OpError::invalid(1, format!("index {i} is outside 0..{total}")))
            })
            .collect::<OpResult<Vec<_>>>()?;
        let mut y = ctx.alloc(x.dtype(), &inferred)?;
        {
            let src = Elems::of(&x)?;
            let mut dst = ElemsMut::of(&mut y)?;
            for (from, &at) in flat.iter().enumerate() {
                dst.copy_block(at, &src, from, 1)?;
            }
        }
        let out_shape = match inputs.opt_tensor(2)? {
            None => return Ok(vec![y.into()]),
            Some(t) => sizes_from(2, &t.to_i64_vec()?)?,
        };
        if out_shape.len() != inferred.len() {
            return Err(OpError::invalid(
                2,
                format!("output_shape {out_shape:?} has the wrong rank"),
            ));
        }
        checked_numel(&out_shape)?;
        Ok(vec![place_at_origin(ctx, &y, &out_shape)?.into()])
    }
}

/// `y` copied into a zero tensor of `shape` at index 0 of every axis (cropped to fit).
fn place_at_origin(
    ctx: &EvalCtx<'_>,
    y: &strata_tensor::Tensor,
    shape: &[usize],
) -> OpResult<strata_tensor::Tensor> {
    let mut out = ctx.alloc(y.dtype(), shape)?;
    let common: Vec<usize> = y
        .shape()
        .iter()
        .zip(shape)
        .map(|(a, b)| *a.min(b))
        .collect();
    let rank = common.len();
    if common.contains(&0) || rank == 0 {
        return Ok(out);
    }
    let (ss, ds) = (row_major_strides(y.shape()), row_major_strides(shape));
    let src = Elems::of(y)?;
    let mut dst = ElemsMut::of(&mut out)?;
    let rows: usize = common[..rank - 1].iter().product();
    for r in 0..rows {
        let (mut from, mut at, mut rem) = (0, 0, r);
        for a in (0..rank - 1).rev() {
            let i = rem % common[a];
            rem /= common[a];
            from += i * ss[a];
            at += i * ds[a];
        }
        dst.copy_block(at, &src, from, common[rank - 1])?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::Tensor;

    #[test]
    fn unpools_with_and_without_output_shape() {
        let op = MaxUnpool {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0; 4],
        };
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
        let i = Tensor::from_vec(vec![5i64, 7, 13, 15], &[1, 1, 2, 2]).unwrap();
        let y = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([x.clone(), i.clone()]),
            )
            .unwrap();
        let y = y[0].as_tensor().unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        let v = y.as_slice::<f32>().unwrap();
        assert_eq!((v[5], v[7], v[13], v[15], v[0]), (1.0, 2.0, 3.0, 4.0, 0.0));
        let shape = Tensor::from_vec(vec![1i64, 1, 5, 5], &[4]).unwrap();
        let y = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([x.clone(), i, shape]),
            )
            .unwrap();
        let y = y[0].as_tensor().unwrap();
        assert_eq!(y.shape(), &[1, 1, 5, 5]);
        assert_eq!(y.as_slice::<f32>().unwrap()[6], 1.0);
        let bad = Tensor::from_vec(vec![0i64, 1, 2, 99], &[1, 1, 2, 2]).unwrap();
        assert!(op
            .eval(&EvalCtx::default(), Inputs::from_tensors([x, bad]))
            .is_err());
    }
}
