//! Image-geometry ops: `AffineGrid` (sampling grids for `GridSample` from affine matrices)
//! and `CenterCropPad` (center crop or zero-pad chosen axes to a size).

use super::shape::common::{checked_numel, row_major_strides, Elems, ElemsMut};
use super::staging::{f64_output, float_values};
use crate::{EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};

/// Registers the image-geometry ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "AffineGrid", 20, |b| {
        Ok(Box::new(AffineGrid {
            align_corners: b.attrs.int_or("align_corners", 0)? != 0,
        }))
    });
    registry.register("", "CenterCropPad", 18, |b| {
        Ok(Box::new(CenterCropPad {
            axes: b.attrs.ints("axes")?,
        }))
    });
}

// ----- AffineGrid ---------------------------------------------------------------------------

/// `AffineGrid`: for `theta` of `[N, 2, 3]` (or `[N, 3, 4]`) and `size` `[N, C, H, W]` (or
/// `[N, C, D, H, W]`), the grid `[N, H, W, 2]` (or `[N, D, H, W, 3]`) of `theta` applied to
/// the normalized coordinates `(x, y[, z], 1)` of every output position.
#[derive(Debug, Clone, Copy)]
pub struct AffineGrid {
    /// Whether -1 and 1 are the centers of the corner pixels (else their outer edges).
    pub align_corners: bool,
}

impl AffineGrid {
    /// Normalized coordinate of index `i` along an axis of `n` positions.
    fn coord(&self, i: usize, n: usize) -> f64 {
        if self.align_corners {
            if n <= 1 {
                -1.0
            } else {
                -1.0 + 2.0 * i as f64 / (n - 1) as f64
            }
        } else {
            -1.0 + (2 * i + 1) as f64 / n as f64
        }
    }
}

impl Operator for AffineGrid {
    crate::op_boilerplate!("AffineGrid");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let theta = inputs.tensor(0)?;
        let size = inputs.tensor(1)?.to_i64_vec()?;
        let sizes = super::shape::common::sizes_from(1, &size)?;
        let k = sizes.len().saturating_sub(2);
        let n = sizes.first().copied().unwrap_or(0);
        if !(2..=3).contains(&k) || theta.shape() != [n, k, k + 1] {
            return Err(OpError::invalid(
                0,
                format!(
                    "theta {:?} and size {size:?} must be [N, 2, 3] with [N, C, H, W] or \
                     [N, 3, 4] with [N, C, D, H, W]",
                    theta.shape()
                ),
            ));
        }
        let dims = &sizes[2..];
        let points: usize = dims.iter().product();
        let mut oshape = vec![n];
        oshape.extend_from_slice(dims);
        oshape.push(k);
        checked_numel(&oshape)?;
        let th = float_values(theta, 0)?;
        let strides = row_major_strides(dims);
        let mut out = vec![0.0f64; n * points * k];
        for p in 0..points {
            // Homogeneous coordinates: innermost axis first (x, y[, z]), then 1.
            let mut base: Vec<f64> = (0..k)
                .map(|j| {
                    let axis = k - 1 - j;
                    self.coord(p / strides[axis] % dims[axis], dims[axis])
                })
                .collect();
            base.push(1.0);
            for b in 0..n {
                let m = &th[b * k * (k + 1)..][..k * (k + 1)];
                for (j, row) in m.chunks_exact(k + 1).enumerate() {
                    out[(b * points + p) * k + j] = row.iter().zip(&base).map(|(a, c)| a * c).sum();
                }
            }
        }
        Ok(vec![f64_output(ctx, &out, &oshape, theta.dtype())?.into()])
    }
}

// ----- CenterCropPad ------------------------------------------------------------------------

/// `CenterCropPad`: crops (centered, the extra element on the high side) or zero-pads
/// (centered, the extra element on the high side) each chosen axis to the requested size.
#[derive(Debug, Clone)]
pub struct CenterCropPad {
    /// The axes `shape` refers to (all axes when absent).
    pub axes: Option<Vec<i64>>,
}

impl Operator for CenterCropPad {
    crate::op_boilerplate!("CenterCropPad");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = super::shape::common::materialize(ctx, inputs.tensor(0)?)?;
        let in_shape = x.shape().to_vec();
        let rank = in_shape.len();
        let target = super::shape::common::sizes_from(1, &inputs.tensor(1)?.to_i64_vec()?)?;
        let axes: Vec<usize> = match &self.axes {
            Some(a) => {
                super::shape::common::unique_axes(a, rank, |m| OpError::attribute("axes", m))?
            }
            None => (0..rank).collect(),
        };
        if axes.len() != target.len() {
            return Err(OpError::invalid(
                1,
                format!("shape {target:?} needs one size per axis of {axes:?}"),
            ));
        }
        let mut out_shape = in_shape.clone();
        // Per axis: (first source index, first destination index, elements copied).
        let mut spans: Vec<(usize, usize, usize)> = in_shape.iter().map(|&d| (0, 0, d)).collect();
        for (&a, &sh) in axes.iter().zip(&target) {
            let dim = in_shape[a];
            out_shape[a] = sh;
            spans[a] = if sh <= dim {
                ((dim - sh) / 2, 0, sh)
            } else {
                (0, (sh - dim) / 2, dim)
            };
        }
        checked_numel(&out_shape)?;
        let mut out = ctx.alloc(x.dtype(), &out_shape)?;
        if spans.iter().any(|s| s.2 == 0) || rank == 0 {
            if rank == 0 {
                out = x.clone();
            }
            return Ok(vec![out.into()]);
        }
        let (src_strides, dst_strides) =
            (row_major_strides(&in_shape), row_major_strides(&out_shape));
        let src = Elems::of(&x)?;
        let mut dst = ElemsMut::of(&mut out)?;
        let (last_src, last_dst, row) = spans[rank - 1];
        let rows: usize = spans[..rank - 1].iter().map(|s| s.2).product();
        for r in 0..rows {
            let (mut from, mut at, mut rem) = (last_src, last_dst, r);
            for a in (0..rank - 1).rev() {
                let i = rem % spans[a].2;
                rem /= spans[a].2;
                from += (spans[a].0 + i) * src_strides[a];
                at += (spans[a].1 + i) * dst_strides[a];
            }
            dst.copy_block(at, &src, from, row)?;
        }
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::Tensor;

    #[test]
    fn affine_grid_identity_2d() {
        let theta = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0], &[1, 2, 3]).unwrap();
        let size = Tensor::from_vec(vec![1i64, 1, 2, 2], &[4]).unwrap();
        let op = AffineGrid {
            align_corners: true,
        };
        let out = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([theta.clone(), size.clone()]),
            )
            .unwrap();
        let g = out[0].as_tensor().unwrap();
        assert_eq!(g.shape(), &[1, 2, 2, 2]);
        assert_eq!(
            g.as_slice::<f32>().unwrap(),
            &[-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
        );
        let op = AffineGrid {
            align_corners: false,
        };
        let out = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([theta.clone(), size]),
            )
            .unwrap();
        assert_eq!(
            out[0].as_tensor().unwrap().as_slice::<f32>().unwrap()[0],
            -0.5
        );
        let bad = Tensor::from_vec(vec![1i64, 1, 2], &[3]).unwrap();
        assert!(op
            .eval(&EvalCtx::default(), Inputs::from_tensors([theta, bad]))
            .is_err());
    }

    #[test]
    fn center_crop_pad_crops_and_pads() {
        let x = Tensor::from_vec((0..12i32).collect(), &[3, 4]).unwrap();
        let shape = Tensor::from_vec(vec![2i64, 6], &[2]).unwrap();
        let op = CenterCropPad { axes: None };
        let out = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([x.clone(), shape]),
            )
            .unwrap();
        let y = out[0].as_tensor().unwrap();
        assert_eq!(y.shape(), &[2, 6]);
        // Rows 0..2 kept; columns padded by one on each side.
        assert_eq!(
            y.as_slice::<i32>().unwrap(),
            &[0, 0, 1, 2, 3, 0, 0, 4, 5, 6, 7, 0]
        );
        let op = CenterCropPad {
            axes: Some(vec![-1]),
        };
        let shape = Tensor::from_vec(vec![1i64], &[1]).unwrap();
        let out = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([x.clone(), shape]),
            )
            .unwrap();
        assert_eq!(
            out[0].as_tensor().unwrap().as_slice::<i32>().unwrap(),
            &[1, 5, 9]
        );
        let shape = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        assert!(op
            .eval(&EvalCtx::default(), Inputs::from_tensors([x, shape]))
            .is_err());
    }
}
