//! Normalizations: `BatchNormalization`, `InstanceNormalization`, `LRN`,
//! `LayerNormalization`, `RMSNormalization`, `LpNormalization`, `GroupNormalization` and
//! `MeanVarianceNormalization`. Per-channel work is folded into one multiply-add per element and
//! split over (batch, channel) planes or normalized rows.

use super::{concrete, flag};
use crate::kernels::fused::{fused_label, ActFloat, Activation};
use crate::kernels::linalg::{eval_via_f32, Float};
use crate::kernels::simd;
use crate::{
    op_boilerplate, BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use strata_tensor::{normalize_axis, DType, Tensor};

/// Registers the normalization ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "BatchNormalization", 1, build_batch_norm);
    registry.register("", "InstanceNormalization", 1, |c| {
        Ok(Box::new(InstanceNorm {
            epsilon: c.attrs.float_or("epsilon", 1e-5)?,
        }))
    });
    registry.register("", "LRN", 1, build_lrn);
    registry.register("", "LayerNormalization", 17, build_layer_norm);
    registry.register("", "RMSNormalization", 23, build_rms_norm);
    registry.register("", "LpNormalization", 1, build_lp_norm);
    registry.register("", "GroupNormalization", 18, build_group_norm);
    registry.register("", "MeanVarianceNormalization", 9, |c| {
        Ok(Box::new(Mvn {
            axes: c.attrs.ints_or("axes", vec![0, 2, 3])?,
        }))
    });
}

/// Input `i` as a contiguous tensor of `dt` (casting small parameter tensors when their dtype
/// differs, as BatchNormalization-15 allows).
fn param_as(inputs: &Inputs, i: usize, dt: DType) -> OpResult<Tensor> {
    let t = inputs.tensor(i)?;
    Ok(if t.dtype() == dt {
        t.contiguous()
    } else {
        t.cast(dt)?
    })
}

fn float_dispatch(
    op: &dyn Operator,
    ctx: &EvalCtx<'_>,
    inputs: Inputs,
    cast_back: usize,
    f32_run: impl FnOnce(&EvalCtx<'_>, &Inputs) -> OpResult<Vec<Value>>,
    f64_run: impl FnOnce(&EvalCtx<'_>, &Inputs) -> OpResult<Vec<Value>>,
) -> OpResult<Vec<Value>> {
    match inputs.tensor(0)?.dtype() {
        DType::F32 => f32_run(ctx, &inputs),
        DType::F64 => f64_run(ctx, &inputs),
        d @ (DType::F16 | DType::BF16) => {
            eval_via_f32(ctx, &inputs, d, cast_back, |c, i| op.eval(c, i))
        }
        d => Err(OpError::UnsupportedDType { index: 0, dtype: d }),
    }
}

/// `Operator::eval` for an op with `fn run<F: Float>(&self, ctx, inputs)`: dispatches on the
/// first input's dtype through [`float_dispatch`], casting `$cast_back` outputs back.
macro_rules! float_eval {
    ($cast_back:expr) => {
        fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
            float_dispatch(
                self,
                ctx,
                inputs,
                $cast_back,
                |c, i| self.run::<f32>(c, i),
                |c, i| self.run::<f64>(c, i),
            )
        }
    };
}

// ----- BatchNormalization -------------------------------------------------------------------

/// `BatchNormalization` (opsets 1-15). Inference uses the given statistics; with
/// `training_mode = 1` (opset 14+) it normalizes with batch statistics and can output the
/// updated running mean and variance.
#[derive(Debug, Clone, Copy)]
pub struct BatchNorm {
    /// Added to the variance.
    pub epsilon: f32,
    /// Running-statistics momentum (training mode).
    pub momentum: f32,
    /// Normalize with the batch's own statistics.
    pub training: bool,
    /// Number of outputs the node declares.
    pub outputs: usize,
    /// Activation applied to the output (set by the fusion passes, inference mode only).
    pub activation: Option<Activation>,
}

impl BatchNorm {
    /// A label for the fused op, such as `BatchNormalization+Relu`.
    pub fn label(&self) -> String {
        fused_label("BatchNormalization", false, self.activation.as_ref())
    }
}

fn build_batch_norm(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    // Older opsets: `is_test`, `spatial`, `consumed_inputs` are accepted; `spatial = 0` is
    // handled by parameter shape ([C, D1, ...] parameters apply per element).
    if ctx.opset < 9 {
        flag(a, "spatial", 1)?;
    }
    if ctx.opset < 7 {
        flag(a, "is_test", 0)?;
    }
    let training = ctx.opset >= 14 && flag(a, "training_mode", 0)?;
    Ok(Box::new(BatchNorm {
        epsilon: a.float_or("epsilon", 1e-5)?,
        momentum: a.float_or("momentum", 0.9)?,
        training,
        outputs: ctx.output_count.max(1),
        activation: None,
    }))
}

impl BatchNorm {
    /// Per-channel mean and (biased) variance of `x` (`n` × `c` planes of `plane` values).
    fn batch_stats<F: Float>(xv: &[F], n: usize, c: usize, plane: usize) -> (Vec<F>, Vec<F>) {
        let count = F::from_usize((n * plane).max(1));
        (0..c)
            .map(|ch| {
                let planes = (0..n).map(|b| &xv[(b * c + ch) * plane..][..plane]);
                let m = planes.clone().flatten().fold(F::ZERO, |s, &v| s + v) / count;
                let v = planes
                    .flatten()
                    .fold(F::ZERO, |s, &v| s + (v - m) * (v - m))
                    / count;
                (m, v)
            })
            .unzip()
    }

    fn run<F: ActFloat>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        if shape.len() < 2 {
            return Err(OpError::invalid(
                0,
                format!("BatchNormalization input must have rank >= 2, got {shape:?}"),
            ));
        }
        let (n, c) = (shape[0], shape[1]);
        let plane: usize = shape[2..].iter().product();
        let params: Vec<Tensor> = (1..5)
            .map(|i| param_as(inputs, i, F::DTYPE))
            .collect::<OpResult<_>>()?;
        // Per-channel ([C]) or per-element ([C, D1, ...], old `spatial = 0`) parameters.
        let width = params[0].len();
        if width != c && width != c * plane {
            return Err(OpError::invalid(
                1,
                format!(
                    "scale of shape {:?} does not fit input {shape:?}",
                    params[0].shape()
                ),
            ));
        }
        for (i, p) in params.iter().enumerate().skip(1) {
            if p.len() != width {
                return Err(OpError::invalid(
                    i + 1,
                    format!(
                        "shape {:?} differs from scale's {:?}",
                        p.shape(),
                        params[0].shape()
                    ),
                ));
            }
        }
        let [scale, bias, mean, var] = [0, 1, 2, 3].map(|i| params[i].as_slice::<F>());
        let (scale, bias, mean_in, var_in) = (scale?, bias?, mean?, var?);
        let eps = F::from_f32(self.epsilon);
        let xv = x.as_slice::<F>()?;
        // Training mode normalizes with the batch's statistics; inference with the inputs'.
        let batch_stats = if self.training {
            if width != c {
                return Err(OpError::Unsupported(
                    "training-mode BatchNormalization with per-element parameters".into(),
                ));
            }
            Some(Self::batch_stats(xv, n, c, plane))
        } else {
            None
        };
        let (mean, var) = match &batch_stats {
            Some((m, v)) => (&m[..], &v[..]),
            None => (mean_in, var_in),
        };
        // y = x * a + b with a = scale / sqrt(var + eps), b = bias - mean * a, computed where
        // used (per plane, or per element for per-element parameters) so a run allocates
        // nothing beyond its output.
        let affine = |i: usize| {
            let a = scale[i] / (var[i] + eps).sqrt();
            (a, bias[i] - mean[i] * a)
        };
        // Every element is written below (an empty plane means an empty output).
        let mut out = ctx.alloc_for_overwrite(F::DTYPE, &shape)?;
        let o = out.as_slice_mut::<F>()?;
        if plane > 0 && !o.is_empty() {
            let per = (n * c).div_ceil(ctx.threads() * 4).max(1);
            let normalize = |ci: usize, chunk: &mut [F]| {
                for (j, op) in chunk.chunks_mut(plane).enumerate() {
                    let idx = ci * per + j;
                    let ch = idx % c;
                    let xp = &xv[idx * plane..][..plane];
                    if width == c {
                        let (s, t) = affine(ch);
                        for (o, &v) in op.iter_mut().zip(xp) {
                            *o = v * s + t;
                        }
                    } else {
                        for (k, (o, &v)) in op.iter_mut().zip(xp).enumerate() {
                            let (s, t) = affine(ch * plane + k);
                            *o = v * s + t;
                        }
                    }
                    if let Some(act) = &self.activation {
                        act.apply_inline(op);
                    }
                }
            };
            // With wide vectors: DenseNet's 256x56x56 BatchNormalization+Relu took 0.21 ms
            // with baseline ones (and a zeroed output).
            ctx.par_chunks_mut(o, per * plane, |ci, chunk| {
                simd::wide(
                    #[inline(always)]
                    || normalize(ci, chunk),
                )
            });
        }
        let mut outs = vec![Value::from(out)];
        if self.training && self.outputs > 1 {
            let mom = F::from_f32(self.momentum);
            let stat = |input: &[F], batch: &[F]| -> OpResult<Value> {
                let mut t = ctx.alloc(F::DTYPE, &[c])?;
                for ((o, &i), &bt) in t.as_slice_mut::<F>()?.iter_mut().zip(input).zip(batch) {
                    *o = i * mom + bt * (F::ONE - mom);
                }
                Ok(t.into())
            };
            outs.push(stat(mean_in, mean)?);
            outs.push(stat(var_in, var)?);
        }
        Ok(outs)
    }
}

impl Operator for BatchNorm {
    op_boilerplate!("BatchNormalization");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(dt), Some(x)) = (inputs.first().and_then(|f| f.dtype), concrete(inputs, 0))
        else {
            return Ok(None);
        };
        let mut facts = vec![Fact::known(dt, &x)];
        if self.training && self.outputs > 1 && x.len() >= 2 {
            facts.push(Fact::known(dt, &[x[1]]));
            facts.push(Fact::known(dt, &[x[1]]));
        }
        Ok(Some(facts))
    }

    float_eval!(3);
}

// ----- InstanceNormalization ----------------------------------------------------------------

/// `InstanceNormalization` (opsets 1, 6, 22): per (batch, channel) plane normalization.
#[derive(Debug, Clone, Copy)]
pub struct InstanceNorm {
    /// Added to the variance.
    pub epsilon: f32,
}

impl InstanceNorm {
    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        if shape.len() < 3 {
            return Err(OpError::invalid(
                0,
                format!("InstanceNormalization input must have rank >= 3, got {shape:?}"),
            ));
        }
        let c = shape[1];
        let plane: usize = shape[2..].iter().product();
        let (scale, bias) = (
            param_as(inputs, 1, F::DTYPE)?,
            param_as(inputs, 2, F::DTYPE)?,
        );
        for (i, p) in [(1, &scale), (2, &bias)] {
            if p.len() != c {
                return Err(OpError::invalid(
                    i,
                    format!("shape {:?} must hold {c} channel values", p.shape()),
                ));
            }
        }
        let (sv, bv) = (scale.as_slice::<F>()?, bias.as_slice::<F>()?);
        let xv = x.as_slice::<F>()?;
        let eps = F::from_f32(self.epsilon);
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        let o = out.as_slice_mut::<F>()?;
        if plane > 0 && !o.is_empty() {
            let count = F::from_usize(plane);
            ctx.par_chunks_mut(o, plane, |idx, op| {
                let ch = idx % c;
                let xp = &xv[idx * plane..][..plane];
                let mean = xp.iter().fold(F::ZERO, |s, &v| s + v) / count;
                let var = xp.iter().fold(F::ZERO, |s, &v| s + (v - mean) * (v - mean)) / count;
                let a = sv[ch] / (var + eps).sqrt();
                let b = bv[ch] - mean * a;
                for (o, &v) in op.iter_mut().zip(xp) {
                    *o = v * a + b;
                }
            });
        }
        Ok(vec![out.into()])
    }
}

impl Operator for InstanceNorm {
    op_boilerplate!("InstanceNormalization");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(
            match (inputs.first().and_then(|f| f.dtype), concrete(inputs, 0)) {
                (Some(dt), Some(x)) => Some(vec![Fact::known(dt, &x)]),
                _ => None,
            },
        )
    }

    float_eval!(1);
}

// ----- LRN ----------------------------------------------------------------------------------

/// `LRN` (opsets 1, 13): local response normalization across channels.
#[derive(Debug, Clone, Copy)]
pub struct Lrn {
    /// Number of channels summed over.
    pub size: usize,
    /// Scale of the sum.
    pub alpha: f32,
    /// Exponent.
    pub beta: f32,
    /// Additive bias (`bias` attribute).
    pub bias: f32,
}

fn build_lrn(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let size = a
        .int("size")?
        .ok_or_else(|| OpError::attribute("size", "is required"))?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| OpError::attribute("size", format!("must be positive, got {size}")))?;
    Ok(Box::new(Lrn {
        size,
        alpha: a.float_or("alpha", 1e-4)?,
        beta: a.float_or("beta", 0.75)?,
        bias: a.float_or("bias", 1.0)?,
    }))
}

impl Lrn {
    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        if shape.len() < 2 {
            return Err(OpError::invalid(
                0,
                format!("LRN input must have rank >= 2, got {shape:?}"),
            ));
        }
        let c = shape[1];
        let plane: usize = shape[2..].iter().product();
        let xv = x.as_slice::<F>()?;
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        let o = out.as_slice_mut::<F>()?;
        let (before, after) = ((self.size - 1) / 2, self.size / 2);
        let (alpha, beta, bias) = (
            F::from_f32(self.alpha / self.size as f32),
            F::from_f32(self.beta),
            F::from_f32(self.bias),
        );
        if plane > 0 && !o.is_empty() {
            let per = (o.len() / plane).div_ceil(ctx.threads() * 4).max(1);
            ctx.par_chunks_mut(o, per * plane, |ci, chunk| {
                for (j, op) in chunk.chunks_mut(plane).enumerate() {
                    let idx = ci * per + j;
                    let (b, ch) = (idx / c, idx % c);
                    op.fill(F::ZERO);
                    for cc in ch.saturating_sub(before)..(ch + after + 1).min(c) {
                        for (s, &v) in op.iter_mut().zip(&xv[(b * c + cc) * plane..][..plane]) {
                            *s += v * v;
                        }
                    }
                    let pairs = op.iter_mut().zip(&xv[idx * plane..][..plane]);
                    // `t^beta` through square roots for the usual betas (vectorized, within an
                    // ulp or two), `powf` otherwise.
                    match self.beta {
                        0.75 => pairs.for_each(|(s, &v)| {
                            let t = bias + alpha * *s;
                            let r = t.sqrt();
                            *s = v / (r * r.sqrt());
                        }),
                        0.5 => pairs.for_each(|(s, &v)| *s = v / (bias + alpha * *s).sqrt()),
                        1.0 => pairs.for_each(|(s, &v)| *s = v / (bias + alpha * *s)),
                        _ => pairs.for_each(|(s, &v)| *s = v / (bias + alpha * *s).powf(beta)),
                    }
                }
            });
        }
        Ok(vec![out.into()])
    }
}

impl Operator for Lrn {
    op_boilerplate!("LRN");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(
            match (inputs.first().and_then(|f| f.dtype), concrete(inputs, 0)) {
                (Some(dt), Some(x)) => Some(vec![Fact::known(dt, &x)]),
                _ => None,
            },
        )
    }

    float_eval!(1);
}

// ----- LayerNormalization -------------------------------------------------------------------

/// `LayerNormalization` (opset 17+): normalizes over the axes from `axis` on, with optional
/// `Mean` and `InvStdDev` outputs.
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm {
    /// First normalized axis (may be negative).
    pub axis: i64,
    /// Added to the variance.
    pub epsilon: f32,
    /// Number of outputs the node declares.
    pub outputs: usize,
}

fn build_layer_norm(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let stash = a.int_or("stash_type", 1)?;
    if stash != 1 && stash != 11 {
        return Err(OpError::attribute(
            "stash_type",
            format!("unsupported value {stash}"),
        ));
    }
    Ok(Box::new(LayerNorm {
        axis: a.int_or("axis", -1)?,
        epsilon: a.float_or("epsilon", 1e-5)?,
        outputs: ctx.output_count.clamp(1, 3),
    }))
}

impl LayerNorm {
    fn split(&self, shape: &[usize]) -> OpResult<usize> {
        normalize_axis(self.axis, shape.len()).map_err(|_| {
            OpError::attribute(
                "axis",
                format!("{} is out of range for shape {shape:?}", self.axis),
            )
        })
    }

    fn stat_shape(shape: &[usize], axis: usize) -> Vec<usize> {
        let mut s = shape.to_vec();
        s[axis..].fill(1);
        s
    }

    /// A parameter broadcast to the normalized shape, as a contiguous tensor (the input
    /// itself, without a copy, when it already has that shape).
    fn param<F: Float>(
        inputs: &Inputs,
        i: usize,
        norm_shape: &[usize],
    ) -> OpResult<Option<Tensor>> {
        let Some(t) = inputs.opt_tensor(i)? else {
            return Ok(None);
        };
        if t.dtype() != F::DTYPE {
            return Err(OpError::invalid(
                i,
                format!("dtype {} differs from input 0's {}", t.dtype(), F::DTYPE),
            ));
        }
        let b = t.broadcast_to(norm_shape).map_err(|_| {
            OpError::invalid(
                i,
                format!(
                    "shape {:?} does not broadcast to the normalized shape {norm_shape:?}",
                    t.shape()
                ),
            )
        })?;
        Ok(Some(b.contiguous()))
    }

    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        let axis = self.split(&shape)?;
        let d: usize = shape[axis..].iter().product();
        let rows: usize = shape[..axis].iter().product();
        let scale_t = Self::param::<F>(inputs, 1, &shape[axis..])?
            .ok_or(OpError::MissingInput { index: 1 })?;
        let bias_t = Self::param::<F>(inputs, 2, &shape[axis..])?;
        let scale = scale_t.as_slice::<F>()?;
        let bias = bias_t.as_ref().map(Tensor::as_slice::<F>).transpose()?;
        let xv = x.as_slice::<F>()?;
        let eps = F::from_f32(self.epsilon);
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        let stats = |xr: &[F]| {
            let count = F::from_usize(d);
            let m = xr.iter().fold(F::ZERO, |s, &v| s + v) / count;
            let var = xr.iter().fold(F::ZERO, |s, &v| s + (v - m) * (v - m)) / count;
            (m, F::ONE / (var + eps).sqrt())
        };
        if d > 0 {
            let per = rows.div_ceil(ctx.threads() * 4).max(1);
            ctx.par_chunks_mut(out.as_slice_mut::<F>()?, per * d, |ci, chunk| {
                for (j, orow) in chunk.chunks_mut(d).enumerate() {
                    let xr = &xv[(ci * per + j) * d..][..d];
                    let (m, iv) = stats(xr);
                    match bias {
                        Some(bias) => {
                            for (((o, &v), &s), &b) in orow.iter_mut().zip(xr).zip(scale).zip(bias)
                            {
                                *o = (v - m) * iv * s + b;
                            }
                        }
                        None => {
                            for ((o, &v), &s) in orow.iter_mut().zip(xr).zip(scale) {
                                *o = (v - m) * iv * s;
                            }
                        }
                    }
                }
            });
        }
        let mut outs = vec![Value::from(out)];
        if self.outputs > 1 {
            // The saved statistics (training graphs): recomputed here, so inference runs
            // neither allocate nor write them.
            let stat_shape = Self::stat_shape(&shape, axis);
            let mut mean_t = ctx.alloc(F::DTYPE, &stat_shape)?;
            let mut inv_t = ctx.alloc(F::DTYPE, &stat_shape)?;
            if d > 0 {
                let means = mean_t.as_slice_mut::<F>()?;
                let invs = inv_t.as_slice_mut::<F>()?;
                for (r, (m_out, iv_out)) in means.iter_mut().zip(invs.iter_mut()).enumerate() {
                    (*m_out, *iv_out) = stats(&xv[r * d..][..d]);
                }
            }
            outs.push(mean_t.into());
            if self.outputs > 2 {
                outs.push(inv_t.into());
            }
        }
        Ok(outs)
    }
}

impl Operator for LayerNorm {
    op_boilerplate!("LayerNormalization");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(dt) = inputs.first().and_then(|f| f.dtype) else {
            return Ok(None);
        };
        let Some(x) = concrete(inputs, 0) else {
            // Symbolic input: the normalized output keeps its shape; statistics stay unknown.
            let mut facts = vec![Fact {
                value: None,
                ..inputs[0].clone()
            }];
            facts.extend((1..self.outputs).map(|_| Fact::default()));
            return Ok(Some(facts));
        };
        let axis = self.split(&x)?;
        let stat_dt = if matches!(dt, DType::F16 | DType::BF16) {
            DType::F32
        } else {
            dt
        };
        let stat = Self::stat_shape(&x, axis);
        let mut facts = vec![Fact::known(dt, &x)];
        facts.extend((1..self.outputs).map(|_| Fact::known(stat_dt, &stat)));
        Ok(Some(facts))
    }

    float_eval!(1);
}

// ----- RMSNormalization --------------------------------------------------------------------

/// `RMSNormalization` (opset 23): `X / sqrt(mean(X^2 over axes >= axis) + epsilon) * scale`.
#[derive(Debug, Clone, Copy)]
pub struct RmsNorm {
    /// First normalized axis (may be negative).
    pub axis: i64,
    /// Added to the mean square.
    pub epsilon: f32,
}

fn build_rms_norm(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let stash = a.int_or("stash_type", 1)?;
    if stash != 1 && stash != 11 {
        return Err(OpError::attribute(
            "stash_type",
            format!("unsupported value {stash}"),
        ));
    }
    Ok(Box::new(RmsNorm {
        axis: a.int_or("axis", -1)?,
        epsilon: a.float_or("epsilon", 1e-5)?,
    }))
}

impl RmsNorm {
    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        let ln = LayerNorm {
            axis: self.axis,
            epsilon: self.epsilon,
            outputs: 1,
        };
        let axis = ln.split(&shape)?;
        let d: usize = shape[axis..].iter().product();
        let scale_t = LayerNorm::param::<F>(inputs, 1, &shape[axis..])?
            .ok_or(OpError::MissingInput { index: 1 })?;
        let scale = scale_t.as_slice::<F>()?;
        let xv = x.as_slice::<F>()?;
        let eps = F::from_f32(self.epsilon);
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        let o = out.as_slice_mut::<F>()?;
        if d > 0 && !o.is_empty() {
            let count = F::from_usize(d);
            let rows = o.len() / d;
            let per = rows.div_ceil(ctx.threads() * 4).max(1);
            ctx.par_chunks_mut(o, per * d, |ci, chunk| {
                for (j, orow) in chunk.chunks_mut(d).enumerate() {
                    let xr = &xv[(ci * per + j) * d..][..d];
                    let ms = xr.iter().fold(F::ZERO, |s, &v| s + v * v) / count;
                    let inv = F::ONE / (ms + eps).sqrt();
                    for ((o, &v), &s) in orow.iter_mut().zip(xr).zip(scale) {
                        *o = v * inv * s;
                    }
                }
            });
        }
        Ok(vec![out.into()])
    }
}

impl Operator for RmsNorm {
    op_boilerplate!("RMSNormalization");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(dt), Some(x)) = (inputs.first().and_then(|f| f.dtype), concrete(inputs, 0))
        else {
            return Ok(None);
        };
        Ok(Some(vec![Fact::known(dt, &x)]))
    }

    float_eval!(1);
}

// ----- LpNormalization ----------------------------------------------------------------------

/// `LpNormalization`: `x / ||x||_p` along one axis (p = 1 or 2); zero norms give zeros.
#[derive(Debug, Clone, Copy)]
pub struct LpNorm {
    /// The normalized axis (may be negative).
    pub axis: i64,
    /// 1 or 2.
    pub p: i64,
}

fn build_lp_norm(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let p = ctx.attrs.int_or("p", 2)?;
    if p != 1 && p != 2 {
        return Err(OpError::attribute("p", format!("must be 1 or 2, got {p}")));
    }
    Ok(Box::new(LpNorm {
        axis: ctx.attrs.int_or("axis", -1)?,
        p,
    }))
}

impl LpNorm {
    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        let axis = normalize_axis(self.axis, shape.len()).map_err(|_| {
            OpError::attribute(
                "axis",
                format!("{} is out of range for {shape:?}", self.axis),
            )
        })?;
        let (n, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
        let xv = x.as_slice::<F>()?;
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        let o = out.as_slice_mut::<F>()?;
        let block = n * inner;
        if block == 0 {
            return Ok(vec![out.into()]);
        }
        let l1 = self.p == 1;
        ctx.par_chunks_mut(o, block, |bi, ob| {
            let xb = &xv[bi * block..][..block];
            for i in 0..inner {
                let norm = (0..n).fold(F::ZERO, |s, k| {
                    let v = xb[k * inner + i];
                    s + if l1 { v.abs() } else { v * v }
                });
                let norm = if l1 { norm } else { norm.sqrt() };
                for k in 0..n {
                    let j = k * inner + i;
                    ob[j] = if norm == F::ZERO {
                        F::ZERO
                    } else {
                        xb[j] / norm
                    };
                }
            }
        });
        Ok(vec![out.into()])
    }
}

impl Operator for LpNorm {
    op_boilerplate!("LpNormalization");

    float_eval!(1);
}

// ----- GroupNormalization -------------------------------------------------------------------

/// `GroupNormalization`: statistics per (instance, group of channels); scale and bias per
/// channel (opset 21) or per group (opset 18).
#[derive(Debug, Clone, Copy)]
pub struct GroupNorm {
    /// Number of channel groups.
    pub groups: usize,
    /// Added to the variance.
    pub epsilon: f32,
}

fn build_group_norm(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let g = a
        .int("num_groups")?
        .ok_or_else(|| OpError::attribute("num_groups", "is required"))?;
    let groups = usize::try_from(g)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| OpError::attribute("num_groups", format!("must be positive, got {g}")))?;
    Ok(Box::new(GroupNorm {
        groups,
        epsilon: a.float_or("epsilon", 1e-5)?,
    }))
}

impl GroupNorm {
    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        let g = self.groups;
        let c = shape.get(1).copied().unwrap_or(0);
        if shape.len() < 2 || c % g != 0 {
            return Err(OpError::invalid(
                0,
                format!("shape {shape:?} needs rank >= 2 and channels divisible by {g}"),
            ));
        }
        let params: Vec<Vec<F>> = [1, 2]
            .into_iter()
            .map(|i| {
                let p = param_as(inputs, i, F::DTYPE)?;
                if p.len() != c && p.len() != g {
                    return Err(OpError::invalid(
                        i,
                        format!("shape {:?} is neither [{c}] nor [{g}]", p.shape()),
                    ));
                }
                Ok(p.to_vec::<F>()?)
            })
            .collect::<OpResult<_>>()?;
        let per_channel: Vec<(F, F)> = (0..c)
            .map(|ch| {
                let at = |p: &[F]| p[if p.len() == c { ch } else { ch / (c / g) }];
                (at(&params[0]), at(&params[1]))
            })
            .collect();
        let plane: usize = shape[2..].iter().product();
        let block = c / g * plane;
        let xv = x.as_slice::<F>()?;
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        let o = out.as_slice_mut::<F>()?;
        if block == 0 {
            return Ok(vec![out.into()]);
        }
        let (eps, count) = (F::from_f32(self.epsilon), F::from_usize(block));
        ctx.par_chunks_mut(o, block, |bi, ob| {
            let xb = &xv[bi * block..][..block];
            let m = xb.iter().fold(F::ZERO, |s, &v| s + v) / count;
            let var = xb.iter().fold(F::ZERO, |s, &v| s + (v - m) * (v - m)) / count;
            let inv = F::ONE / (var + eps).sqrt();
            let ch0 = bi % g * (c / g);
            for (k, (oc, xc)) in ob.chunks_mut(plane).zip(xb.chunks(plane)).enumerate() {
                let (sc, bs) = per_channel[ch0 + k];
                for (o, &v) in oc.iter_mut().zip(xc) {
                    *o = (v - m) * inv * sc + bs;
                }
            }
        });
        Ok(vec![out.into()])
    }
}

impl Operator for GroupNorm {
    op_boilerplate!("GroupNormalization");

    float_eval!(1);
}

// ----- MeanVarianceNormalization ------------------------------------------------------------

/// `MeanVarianceNormalization`: `(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)` over `axes`.
#[derive(Debug, Clone)]
pub struct Mvn {
    /// The reduced axes (may be negative).
    pub axes: Vec<i64>,
}

impl Mvn {
    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let shape = x.shape().to_vec();
        let mut reduced = vec![false; shape.len()];
        for &a in &self.axes {
            let ax = normalize_axis(a, shape.len()).map_err(|_| {
                OpError::attribute("axes", format!("{a} is out of range for {shape:?}"))
            })?;
            reduced[ax] = true;
        }
        // Index of each element's statistics slot (row-major over the kept axes).
        let slot = |mut i: usize| -> usize {
            let (mut s, mut mul) = (0, 1);
            for (ax, &d) in shape.iter().enumerate().rev() {
                let k = i % d.max(1);
                i /= d.max(1);
                if !reduced[ax] {
                    s += k * mul;
                    mul *= d;
                }
            }
            s
        };
        let slots: usize = shape
            .iter()
            .zip(&reduced)
            .filter(|(_, &r)| !r)
            .map(|(&d, _)| d)
            .product();
        let xv = x.as_slice::<F>()?;
        let mut sums = vec![(F::ZERO, F::ZERO, 0usize); slots];
        for (i, &v) in xv.iter().enumerate() {
            if let Some(s) = sums.get_mut(slot(i)) {
                *s = (s.0 + v, s.1 + v * v, s.2 + 1);
            }
        }
        let stats: Vec<(F, F)> = sums
            .into_iter()
            .map(|(s, sq, n)| {
                let n = F::from_usize(n.max(1));
                let m = s / n;
                (m, (sq / n - m * m).sqrt() + F::from_f32(1e-9))
            })
            .collect();
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        for (i, (o, &v)) in out.as_slice_mut::<F>()?.iter_mut().zip(xv).enumerate() {
            let (m, sd) = stats.get(slot(i)).copied().unwrap_or((F::ZERO, F::ONE));
            *o = (v - m) / sd;
        }
        Ok(vec![out.into()])
    }
}

impl Operator for Mvn {
    op_boilerplate!("MeanVarianceNormalization");

    float_eval!(1);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{build, build_err, close, eval, f64s, pat, t};
    use crate::{Attribute, EvalCtx, Fact, Inputs};
    use strata_tensor::DType;

    #[test]
    fn batch_norm_by_hand_and_old_opsets() {
        let x = t(&[1., 2., 3., 4., 5., 6., 7., 8.], &[2, 2, 2]);
        let p = |v: [f32; 2]| Some(t(&v, &[2]));
        let ins = [
            Some(x.clone()),
            p([1., 2.]),
            p([0., 1.]),
            p([1., 2.]),
            p([4., 1.]),
        ];
        let want = [0., 0.5, 3.0, 5.0, 2.0, 2.5, 11.0, 13.0];
        for opset in [1, 6, 7, 9, 14, 15] {
            let op = build(
                "BatchNormalization",
                opset,
                &[
                    ("epsilon", Attribute::Float(0.0)),
                    ("is_test", Attribute::Int(1)),
                ],
                5,
                1,
            );
            let out = eval(op.as_ref(), &ins);
            close(&f64s(&out[0]), &want, 1e-6);
        }
        // spatial = 0: per-element parameters of shape [C, D].
        let op = build(
            "BatchNormalization",
            7,
            &[
                ("spatial", Attribute::Int(0)),
                ("epsilon", Attribute::Float(0.0)),
            ],
            5,
            1,
        );
        let q = |v: [f32; 4]| Some(t(&v, &[2, 2]));
        let ins = [
            Some(x),
            q([1., 1., 2., 2.]),
            q([0., 1., 0., 1.]),
            q([0., 0., 0., 0.]),
            q([1., 1., 1., 1.]),
        ];
        close(
            &f64s(&eval(op.as_ref(), &ins)[0]),
            &[1., 3., 6., 9., 5., 7., 14., 17.],
            1e-6,
        );
    }

    #[test]
    fn batch_norm_training_mode_and_mixed_dtypes() {
        let op = build(
            "BatchNormalization",
            15,
            &[
                ("training_mode", Attribute::Int(1)),
                ("epsilon", Attribute::Float(0.0)),
            ],
            5,
            3,
        );
        let x = t(&[1., 3., 10., 10., 2., 4., 20., 30.], &[2, 2, 2]);
        let ones = t(&[1., 1.], &[2]);
        let zeros = t(&[0., 0.], &[2]);
        let out = eval(
            op.as_ref(),
            &[
                Some(x),
                Some(ones.clone()),
                Some(zeros.clone()),
                Some(zeros),
                Some(ones),
            ],
        );
        // Channel 0: mean 2.5, var 1.25; channel 1: mean 17.5, var 68.75.
        let s0 = 1.25f64.sqrt();
        close(&f64s(&out[0])[..2], &[-1.5 / s0, 0.5 / s0], 1e-5);
        close(&f64s(&out[1]), &[0.25, 1.75], 1e-6);
        close(&f64s(&out[2]), &[0.9 + 0.1 * 1.25, 0.9 + 0.1 * 68.75], 1e-5);
        // Opset 15: statistics may have another float type than X.
        let op = build(
            "BatchNormalization",
            15,
            &[("epsilon", Attribute::Float(0.0))],
            5,
            1,
        );
        let x = t(&[2., 4.], &[1, 2]);
        let p64 = |v: [f32; 2]| Some(t(&v, &[2]).cast(DType::F64).unwrap());
        let out = eval(
            op.as_ref(),
            &[
                Some(x),
                Some(t(&[1., 1.], &[2])),
                Some(t(&[0., 0.], &[2])),
                p64([1., 2.]),
                p64([1., 4.]),
            ],
        );
        close(&f64s(&out[0]), &[1., 1.], 1e-6);
    }

    #[test]
    fn batch_norm_errors() {
        let op = build("BatchNormalization", 15, &[], 5, 1);
        let e = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([
                    t(&[1.; 6], &[1, 3, 2]),
                    t(&[1.; 2], &[2]),
                    t(&[1.; 3], &[3]),
                    t(&[1.; 3], &[3]),
                    t(&[1.; 3], &[3]),
                ]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("input 1"), "{e}");
        assert!(build_err(
            "BatchNormalization",
            15,
            &[("training_mode", Attribute::Int(5))]
        )
        .contains("training_mode"));
    }

    #[test]
    fn instance_norm_and_lrn() {
        let op = build(
            "InstanceNormalization",
            6,
            &[("epsilon", Attribute::Float(0.0))],
            3,
            1,
        );
        let x = t(&[1., 3., 5., 5., 0., 4.], &[1, 2, 3]);
        let out = eval(
            op.as_ref(),
            &[Some(x), Some(t(&[2., 1.], &[2])), Some(t(&[1., -1.], &[2]))],
        );
        // Channel 0: mean 3, var 8/3; channel 1 is constant-ish: mean 3, var 14/3.
        let (s0, s1) = ((8f64 / 3.).sqrt(), (14f64 / 3.).sqrt());
        close(
            &f64s(&out[0]),
            &[
                1. - 4. / s0,
                1.,
                1. + 4. / s0,
                -1. + 2. / s1,
                -1. - 3. / s1,
                -1. + 1. / s1,
            ],
            1e-5,
        );
        // LRN with an even size sums channels [c-1, c+2].
        let op = build(
            "LRN",
            13,
            &[
                ("size", Attribute::Int(4)),
                ("alpha", Attribute::Float(4.0)),
                ("beta", Attribute::Float(1.0)),
            ],
            1,
            1,
        );
        let x = t(&[1., 2., 3., 4.], &[1, 4, 1]);
        let out = eval(op.as_ref(), &[Some(x)]);
        // sums: c0: 1+4+9=14, c1: 1+4+9+16=30, c2: 4+9+16=29, c3: 9+16=25; y = x / (1 + sum).
        close(
            &f64s(&out[0]),
            &[1. / 15., 2. / 31., 3. / 30., 4. / 26.],
            1e-6,
        );
        assert!(build_err("LRN", 13, &[]).contains("size"));
    }

    #[test]
    fn lrn_square_root_betas_match_powf() {
        let xs: Vec<f32> = (0..5 * 7).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        for beta in [0.75f32, 0.5, 1.0, 0.6] {
            let op = build(
                "LRN",
                13,
                &[
                    ("size", Attribute::Int(3)),
                    ("alpha", Attribute::Float(0.3)),
                    ("beta", Attribute::Float(beta)),
                    ("bias", Attribute::Float(1.5)),
                ],
                1,
                1,
            );
            let out = eval(op.as_ref(), &[Some(t(&xs, &[1, 5, 7]))]);
            let want: Vec<f64> = (0..xs.len())
                .map(|i| {
                    let (ch, p) = (i / 7, i % 7);
                    let sq: f64 = (ch.saturating_sub(1)..(ch + 2).min(5))
                        .map(|c| f64::from(xs[c * 7 + p]).powi(2))
                        .sum();
                    f64::from(xs[i]) / (1.5 + 0.1 * sq).powf(f64::from(beta))
                })
                .collect();
            close(&f64s(&out[0]), &want, 1e-6);
        }
    }

    #[test]
    fn layer_norm_outputs_and_broadcast_scale() {
        let op = build(
            "LayerNormalization",
            17,
            &[("epsilon", Attribute::Float(0.0))],
            2,
            3,
        );
        let x = t(&[1., 3., 2., 4., -1., 1.], &[3, 2]);
        let out = eval(op.as_ref(), &[Some(x.clone()), Some(t(&[1., 2.], &[2]))]);
        close(&f64s(&out[0]), &[-1., 2., -1., 2., -1., 2.], 1e-6);
        assert_eq!(out[1].shape(), &[3, 1]);
        close(&f64s(&out[1]), &[2., 3., 0.], 1e-6);
        close(&f64s(&out[2]), &[1., 1., 1.], 1e-6);
        // axis 0 with a scalar-like scale broadcast to the whole tensor, bias given.
        let op = build(
            "LayerNormalization",
            17,
            &[
                ("axis", Attribute::Int(0)),
                ("epsilon", Attribute::Float(0.0)),
            ],
            3,
            1,
        );
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[1., 3.], &[2, 1])),
                Some(t(&[3.], &[1])),
                Some(t(&[1., 2.], &[2, 1])),
            ],
        );
        close(&f64s(&out[0]), &[-2., 5.], 1e-6);
        // Parallel rows and f16.
        let big = t(&pat(64 * 48, 9), &[64, 48]);
        let op = build("LayerNormalization", 17, &[], 3, 1);
        let out = eval(
            op.as_ref(),
            &[
                Some(big.cast(DType::F16).unwrap()),
                Some(t(&pat(48, 2), &[48]).cast(DType::F16).unwrap()),
                None,
            ],
        );
        assert_eq!(out[0].dtype(), DType::F16);
        let facts = op
            .infer(&[
                Fact::known(DType::F16, &[64, 48]),
                Fact::known(DType::F16, &[48]),
            ])
            .unwrap()
            .unwrap();
        assert_eq!(facts.len(), 1);
        let e = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([big, t(&[1.; 5], &[5])]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("input 1"), "{e}");
        assert!(build_err(
            "LayerNormalization",
            17,
            &[("stash_type", Attribute::Int(7))]
        )
        .contains("stash_type"));
    }
    #[test]
    fn rms_lp_group_and_mvn_by_hand() {
        let op = build(
            "RMSNormalization",
            23,
            &[("epsilon", Attribute::Float(0.0))],
            2,
            1,
        );
        let out = eval(
            op.as_ref(),
            &[Some(t(&[3., 4.], &[1, 2])), Some(t(&[1., 2.], &[2]))],
        );
        let rms = 12.5f64.sqrt();
        close(&f64s(&out[0]), &[3. / rms, 8. / rms], 1e-6);
        let op = build("LpNormalization", 22, &[], 1, 1);
        let out = eval(op.as_ref(), &[Some(t(&[3., 4., 0., 0.], &[2, 2]))]);
        close(&f64s(&out[0]), &[0.6, 0.8, 0., 0.], 1e-6);
        let op = build(
            "LpNormalization",
            22,
            &[("p", Attribute::Int(1)), ("axis", Attribute::Int(0))],
            1,
            1,
        );
        let out = eval(op.as_ref(), &[Some(t(&[1., -3.], &[2]))]);
        close(&f64s(&out[0]), &[0.25, -0.75], 1e-6);
        assert!(build_err("LpNormalization", 22, &[("p", Attribute::Int(3))]).contains("'p'"));
        let op = build(
            "GroupNormalization",
            21,
            &[
                ("num_groups", Attribute::Int(1)),
                ("epsilon", Attribute::Float(0.0)),
            ],
            3,
            1,
        );
        let x = t(&[1., 3., 5., 7.], &[1, 2, 2]);
        let out = eval(
            op.as_ref(),
            &[Some(x), Some(t(&[1., 2.], &[2])), Some(t(&[0., 1.], &[2]))],
        );
        let s5 = 5f64.sqrt();
        close(
            &f64s(&out[0]),
            &[-3. / s5, -1. / s5, 2. / s5 + 1., 6. / s5 + 1.],
            1e-6,
        );
        assert!(build_err("GroupNormalization", 21, &[]).contains("num_groups"));
        let op = build("MeanVarianceNormalization", 13, &[], 1, 1);
        let out = eval(op.as_ref(), &[Some(t(&[1., 3., 10., 20.], &[1, 2, 2, 1]))]);
        close(&f64s(&out[0]), &[-1., 1., -1., 1.], 1e-6);
    }
}
