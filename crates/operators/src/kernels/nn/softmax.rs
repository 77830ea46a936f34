//! `Softmax`, `LogSoftmax` and `Hardmax`. Before opset 13 the input is coerced to 2-D at
//! `axis` (default 1) and the op runs over the flattened trailing part; from opset 13 it runs
//! along the single axis `axis` (default -1).

use super::concrete;
use crate::kernels::attention::{softmax_row as rounded_softmax_row, Precision};
use crate::kernels::linalg::{eval_via_f32, Float};
use crate::kernels::simd;
use crate::{BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{normalize_axis, DType, Tensor};

/// Registers the softmax family.
pub fn register(registry: &mut OpRegistry) {
    registry.register_range("", "Softmax", 1, 12, |c| {
        build(c, SoftmaxKind::Softmax, true)
    });
    registry.register("", "Softmax", 13, |c| build(c, SoftmaxKind::Softmax, false));
    registry.register_range("", "LogSoftmax", 1, 12, |c| {
        build(c, SoftmaxKind::LogSoftmax, true)
    });
    registry.register("", "LogSoftmax", 13, |c| {
        build(c, SoftmaxKind::LogSoftmax, false)
    });
    registry.register_range("", "Hardmax", 1, 12, |c| {
        build(c, SoftmaxKind::Hardmax, true)
    });
    registry.register("", "Hardmax", 13, |c| build(c, SoftmaxKind::Hardmax, false));
}

/// Which member of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxKind {
    /// `exp(x - max) / sum`.
    Softmax,
    /// `x - max - log(sum(exp(x - max)))`.
    LogSoftmax,
    /// 1 at the first maximum, 0 elsewhere.
    Hardmax,
}

fn build(ctx: &BuildCtx<'_>, kind: SoftmaxKind, coerce_2d: bool) -> OpResult<Box<dyn Operator>> {
    let axis = ctx.attrs.int_or("axis", if coerce_2d { 1 } else { -1 })?;
    Ok(Box::new(Softmax {
        kind,
        axis,
        coerce_2d,
    }))
}

/// A softmax-family op.
#[derive(Debug, Clone, Copy)]
pub struct Softmax {
    /// Which op.
    pub kind: SoftmaxKind,
    /// The axis attribute (may be negative).
    pub axis: i64,
    /// Opset < 13 semantics: flatten to 2-D at `axis`.
    pub coerce_2d: bool,
}

impl Softmax {
    /// (outer, axis length, inner) of the reduction.
    fn split(&self, shape: &[usize]) -> OpResult<(usize, usize, usize)> {
        let rank = shape.len();
        if self.coerce_2d {
            let r = rank as i64;
            let a = if self.axis < 0 {
                self.axis + r
            } else {
                self.axis
            };
            if !(0..=r).contains(&a) {
                return Err(OpError::attribute(
                    "axis",
                    format!("{} is out of range for rank {rank}", self.axis),
                ));
            }
            let a = a as usize;
            Ok((shape[..a].iter().product(), shape[a..].iter().product(), 1))
        } else {
            let a = normalize_axis(self.axis, rank).map_err(|_| {
                OpError::attribute(
                    "axis",
                    format!("{} is out of range for rank {rank}", self.axis),
                )
            })?;
            Ok((
                shape[..a].iter().product(),
                shape[a],
                shape[a + 1..].iter().product(),
            ))
        }
    }

    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, x: &Tensor) -> OpResult<Tensor> {
        let x = x.contiguous();
        let (outer, len, inner) = self.split(x.shape())?;
        let mut out = ctx.alloc(F::DTYPE, x.shape())?;
        let xv = x.as_slice::<F>()?;
        let o = out.as_slice_mut::<F>()?;
        let block = len * inner;
        if block == 0 {
            return Ok(out);
        }
        let kind = self.kind;
        let per = outer.div_ceil(ctx.threads() * 4).max(1);
        ctx.par_chunks_mut(o, per * block, |ci, chunk| {
            let mut scratch = vec![F::ZERO; if inner > 1 { 2 * inner } else { 0 }];
            for (j, ob) in chunk.chunks_mut(block).enumerate() {
                let xb = &xv[(ci * per + j) * block..][..block];
                if inner == 1 {
                    let fast = match (F::as_f32s(xb), F::as_f32s_mut(ob)) {
                        (Some(x32), Some(o32)) if kind == SoftmaxKind::Softmax => {
                            simd::wide(
                                #[inline(always)]
                                || softmax_row_f32(x32, o32),
                            );
                            true
                        }
                        _ => false,
                    };
                    if !fast {
                        softmax_row(kind, xb, ob);
                    }
                } else {
                    softmax_strided(kind, xb, ob, len, inner, &mut scratch);
                }
            }
        });
        Ok(out)
    }
}

impl Softmax {
    /// Softmax of f16/bf16 values (held in f32) rounding each step to `prec` as numpy does,
    /// so results match the reference bit for bit rather than one rounding later.
    fn run_rounded(&self, ctx: &EvalCtx<'_>, x: &Tensor, prec: Precision) -> OpResult<Tensor> {
        let (outer, len, inner) = self.split(x.shape())?;
        let mut out = ctx.alloc(DType::F32, x.shape())?;
        let xv = x.as_slice::<f32>()?;
        let o = out.as_slice_mut::<f32>()?;
        let block = len * inner;
        if block == 0 || outer == 0 {
            return Ok(out);
        }
        ctx.par_chunks_mut(o, block, |bi, ob| {
            let xb = &xv[bi * block..][..block];
            let mut row = vec![0f32; len];
            for i in 0..inner {
                for (k, r) in row.iter_mut().enumerate() {
                    *r = xb[k * inner + i];
                }
                if row.iter().all(|&v| v == f32::NEG_INFINITY) {
                    row.fill(f32::NAN);
                } else {
                    rounded_softmax_row(&mut row, prec);
                }
                for (k, &r) in row.iter().enumerate() {
                    ob[k * inner + i] = r;
                }
            }
        });
        Ok(out)
    }
}

/// Softmax of one contiguous f32 row, vectorized: the maximum and the sum of exponentials
/// folded in 16 independent lanes, exponentials by [`simd::exp_f32`]. Inlined into
/// [`simd::wide`]'s callers.
#[inline(always)]
fn softmax_row_f32(x: &[f32], o: &mut [f32]) {
    const LANES: usize = 16;
    let max = simd::lane_fold(x, f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
    let rest = x.chunks_exact(LANES).remainder();
    let mut sums = [0.0f32; LANES];
    let mut outs = o.chunks_exact_mut(LANES);
    for (oc, xc) in outs.by_ref().zip(x.chunks_exact(LANES)) {
        for ((s, o), &v) in sums.iter_mut().zip(oc.iter_mut()).zip(xc) {
            *o = simd::exp_f32(v - max);
            *s += *o;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for (o, &v) in outs.into_remainder().iter_mut().zip(rest) {
        *o = simd::exp_f32(v - max);
        sum += *o;
    }
    let inv = 1.0 / sum;
    o.iter_mut().for_each(|v| *v *= inv);
}

fn softmax_row<F: Float>(kind: SoftmaxKind, x: &[F], o: &mut [F]) {
    let max = x.iter().fold(F::NEG_INFINITY, |m, &v| m.max(v));
    match kind {
        SoftmaxKind::Softmax => {
            let mut sum = F::ZERO;
            for (o, &v) in o.iter_mut().zip(x) {
                *o = (v - max).exp();
                sum += *o;
            }
            let inv = F::ONE / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        }
        SoftmaxKind::LogSoftmax => {
            let sum = x.iter().fold(F::ZERO, |s, &v| s + (v - max).exp());
            let shift = max + sum.ln();
            for (o, &v) in o.iter_mut().zip(x) {
                *o = v - shift;
            }
        }
        SoftmaxKind::Hardmax => {
            o.fill(F::ZERO);
            if let Some(i) = x.iter().position(|&v| v == max) {
                o[i] = F::ONE;
            }
        }
    }
}

/// Softmax along a strided axis: `x` is `[len, inner]`, reduced over `len`, vectorized over
/// `inner`. `scratch` holds `2 * inner` values.
fn softmax_strided<F: Float>(
    kind: SoftmaxKind,
    x: &[F],
    o: &mut [F],
    len: usize,
    inner: usize,
    scratch: &mut [F],
) {
    let (max, sum) = scratch.split_at_mut(inner);
    max.fill(F::NEG_INFINITY);
    for row in x.chunks(inner).take(len) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v);
        }
    }
    match kind {
        SoftmaxKind::Softmax | SoftmaxKind::LogSoftmax => {
            sum.fill(F::ZERO);
            for (orow, xrow) in o.chunks_mut(inner).zip(x.chunks(inner)) {
                for ((ov, &xv), (s, &m)) in orow
                    .iter_mut()
                    .zip(xrow)
                    .zip(sum.iter_mut().zip(max.iter()))
                {
                    *ov = (xv - m).exp();
                    *s += *ov;
                }
            }
            if kind == SoftmaxKind::Softmax {
                sum.iter_mut().for_each(|s| *s = F::ONE / *s);
                for orow in o.chunks_mut(inner) {
                    for (ov, &s) in orow.iter_mut().zip(sum.iter()) {
                        *ov *= s;
                    }
                }
            } else {
                for (s, &m) in sum.iter_mut().zip(max.iter()) {
                    *s = m + s.ln();
                }
                for (orow, xrow) in o.chunks_mut(inner).zip(x.chunks(inner)) {
                    for ((ov, &xv), &s) in orow.iter_mut().zip(xrow).zip(sum.iter()) {
                        *ov = xv - s;
                    }
                }
            }
        }
        SoftmaxKind::Hardmax => {
            o.fill(F::ZERO);
            for i in 0..inner {
                if let Some(a) = (0..len).find(|&a| x[a * inner + i] == max[i]) {
                    o[a * inner + i] = F::ONE;
                }
            }
        }
    }
}

impl Operator for Softmax {
    fn op_type(&self) -> &str {
        match self.kind {
            SoftmaxKind::Softmax => "Softmax",
            SoftmaxKind::LogSoftmax => "LogSoftmax",
            SoftmaxKind::Hardmax => "Hardmax",
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(input) = inputs.first().filter(|f| f.dtype.is_some()) else {
            return Ok(None);
        };
        if let Some(x) = concrete(inputs, 0) {
            self.split(&x)?;
        }
        // Same dtype and (possibly symbolic) shape as the input.
        Ok(Some(vec![Fact {
            value: None,
            ..input.clone()
        }]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let out = match x.dtype() {
            DType::F32 => self.run::<f32>(ctx, x)?,
            DType::F64 => self.run::<f64>(ctx, x)?,
            d @ (DType::F16 | DType::BF16) if self.kind == SoftmaxKind::Softmax => {
                let xf = x.cast(DType::F32)?;
                self.run_rounded(ctx, &xf, Precision::of(d))?.cast(d)?
            }
            d @ (DType::F16 | DType::BF16) => {
                return eval_via_f32(ctx, &inputs, d, 1, |c, i| self.eval(c, i))
            }
            d => return Err(OpError::UnsupportedDType { index: 0, dtype: d }),
        };
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{build, close, eval, f64s, pat, t};
    use crate::{Attribute, EvalCtx, Inputs};
    use strata_tensor::DType;

    #[test]
    fn softmax_rows_and_stability() {
        let op = build("Softmax", 13, &[], 1, 1);
        let out = eval(op.as_ref(), &[Some(t(&[1000., 1000., 0., 0.], &[2, 2]))]);
        close(&f64s(&out[0]), &[0.5, 0.5, 0.5, 0.5], 1e-7);
        let op = build("LogSoftmax", 13, &[("axis", Attribute::Int(0))], 1, 1);
        let out = eval(op.as_ref(), &[Some(t(&[0., 1., 0., 1.], &[2, 2]))]);
        close(&f64s(&out[0]), &[-(2f64.ln()); 4], 1e-7);
    }

    #[test]
    fn vectorized_f32_rows_match_an_f64_reference() {
        // Row lengths around the 16-lane blocks, large magnitudes, masked (-inf) entries.
        for len in [1, 7, 16, 17, 128, 1000] {
            let mut x: Vec<f32> = pat(3 * len, len as i64).iter().map(|v| v * 40.0).collect();
            if len > 1 {
                x[len / 2] = f32::NEG_INFINITY;
            }
            let out = eval(
                build("Softmax", 13, &[], 1, 1).as_ref(),
                &[Some(t(&x, &[3, len]))],
            );
            let got = out[0].as_slice::<f32>().unwrap();
            for (row, (xr, gr)) in x.chunks(len).zip(got.chunks(len)).enumerate() {
                let max = xr
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
                let exps: Vec<f64> = xr.iter().map(|&v| (f64::from(v) - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for (i, (&g, e)) in gr.iter().zip(&exps).enumerate() {
                    let want = e / sum;
                    assert!(
                        (f64::from(g) - want).abs() <= 1e-6 * want + 1e-30,
                        "len {len} row {row} element {i}: {g} vs {want}"
                    );
                }
            }
        }
        // All -inf is NaN, as 0/0 in the reference.
        let out = eval(
            build("Softmax", 13, &[], 1, 1).as_ref(),
            &[Some(t(&[f32::NEG_INFINITY; 20], &[1, 20]))],
        );
        assert!(out[0].as_slice::<f32>().unwrap().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn half_softmax_rounds_like_the_reference() {
        let op = build("Softmax", 13, &[("axis", Attribute::Int(0))], 1, 1);
        for dt in [DType::F16, DType::BF16] {
            let x = t(&[0., 1., 0., f32::NEG_INFINITY], &[2, 2])
                .cast(dt)
                .unwrap();
            let out = eval(op.as_ref(), &[Some(x)]);
            assert_eq!(out[0].dtype(), dt);
            let got = f64s(&out[0]);
            // Column 0 is uniform; column 1 puts everything on its finite entry.
            close(&got, &[0.5, 1.0, 0.5, 0.0], 1e-7);
        }
        let x = t(&[f32::NEG_INFINITY; 2], &[2]).cast(DType::BF16).unwrap();
        let out = eval(build("Softmax", 13, &[], 1, 1).as_ref(), &[Some(x)]);
        assert!(f64s(&out[0]).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn old_opsets_flatten_at_axis() {
        // Opset 11, default axis 1 on [2, 2, 2]: softmax over 4 values per batch.
        let x = t(&[0., 0., 0., 0., 1., 2., 3., 4.], &[2, 2, 2]);
        let out = eval(build("Softmax", 11, &[], 1, 1).as_ref(), &[Some(x.clone())]);
        close(&f64s(&out[0])[..4], &[0.25; 4], 1e-7);
        // Opset 13 default axis -1: pairs.
        let out = eval(build("Softmax", 13, &[], 1, 1).as_ref(), &[Some(x.clone())]);
        close(&f64s(&out[0])[..2], &[0.5; 2], 1e-7);
        // Hardmax opset 1 with axis 0 takes the first maximum over everything.
        let out = eval(
            build("Hardmax", 1, &[("axis", Attribute::Int(0))], 1, 1).as_ref(),
            &[Some(t(&[3., 1., 3., 2.], &[2, 2]))],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1., 0., 0., 0.]);
        // Strided axis (opset 13, axis 1 of [2, 3, 4]) matches the contiguous path after a transpose.
        let v = pat(24, 5);
        let a = eval(
            build("Softmax", 13, &[("axis", Attribute::Int(1))], 1, 1).as_ref(),
            &[Some(t(&v, &[2, 3, 4]))],
        );
        let xt = t(&v, &[2, 3, 4]).permute(&[0, 2, 1]).unwrap().contiguous();
        let b = eval(build("Softmax", 13, &[], 1, 1).as_ref(), &[Some(xt)]);
        let bt = b[0].permute(&[0, 2, 1]).unwrap().to_vec::<f32>().unwrap();
        close(
            &f64s(&a[0]),
            &bt.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            1e-6,
        );
    }

    #[test]
    fn hardmax_ties_and_errors() {
        let op = build("Hardmax", 13, &[("axis", Attribute::Int(0))], 1, 1);
        let out = eval(op.as_ref(), &[Some(t(&[1., 5., 1., 5.], &[2, 2]))]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1., 1., 0., 0.]);
        let op = build("Softmax", 13, &[("axis", Attribute::Int(2))], 1, 1);
        let e = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([t(&[1., 2.], &[1, 2])]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("axis"), "{e}");
        let out = eval(
            build("LogSoftmax", 13, &[], 1, 1).as_ref(),
            &[Some(t(&[1., 1.], &[2]).cast(DType::F16).unwrap())],
        );
        assert_eq!(out[0].dtype(), DType::F16);
        let out = eval(
            build("Softmax", 13, &[], 1, 1).as_ref(),
            &[Some(t(&[], &[0, 3]))],
        );
        assert_eq!(out[0].shape(), &[0, 3]);
    }
}
