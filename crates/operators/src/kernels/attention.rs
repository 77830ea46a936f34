//! Scaled dot-product `Attention` (opsets 23+): 3-D (packed heads) and 4-D inputs, grouped
//! query heads, boolean or additive masks, causal and sliding-window masking, a KV cache
//! (`past_key`/`past_value` to `present_key`/`present_value`), padded KV lengths
//! (`nonpad_kv_seqlen`), softcap and the optional `qk_matmul_output`.
//!
//! This module owns the attention core shared with other attention-like ops: scores through
//! [`gemm`], an additive bias row per query ([`Bias`]), a softmax that maps fully masked rows
//! to zeros, [`Precision`], which rounds intermediates of f16/bf16 inputs the way the ONNX
//! reference does while the arithmetic itself runs in f32, and the dtype dispatch built on it
//! (`precision_dispatch`, also used by `transformer.rs` and `recurrent.rs`).

use crate::kernels::linalg::{eval_via_f32, gemm, ErrorSlot, Float, MatMut, MatRef};
use crate::kernels::nn::flag;
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{DType, Tensor};

/// Registers `Attention` (`FlexAttention`, whose score and probability hooks are subgraphs,
/// lives in `flex_attention.rs`).
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "Attention", 23, build_attention);
}

// ----- precision ----------------------------------------------------------------------------

/// The precision intermediates are rounded to (computation itself runs in `F`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// No rounding beyond `F`'s own.
    Full,
    /// Round to IEEE half after each step.
    F16,
    /// Round to bfloat16 after each step.
    BF16,
}

impl Precision {
    /// The rounding that mirrors computing in `dt`.
    pub fn of(dt: DType) -> Self {
        match dt {
            DType::F16 => Precision::F16,
            DType::BF16 => Precision::BF16,
            _ => Precision::Full,
        }
    }

    /// `x` rounded to this precision.
    #[inline]
    pub fn round<F: Float>(self, x: F) -> F {
        match self {
            Precision::Full => x,
            Precision::F16 => F::from_f64(half::f16::from_f64(x.to_f64()).to_f64()),
            Precision::BF16 => F::from_f64(half::bf16::from_f32(x.to_f64() as f32).to_f64()),
        }
    }

    /// Rounds every element of `v`.
    pub fn round_all<F: Float>(self, v: &mut [F]) {
        if self != Precision::Full {
            v.iter_mut().for_each(|x| *x = self.round(*x));
        }
    }
}

/// The element count of a scratch buffer of `dims`, or a shape error when it cannot be
/// addressed (empty inputs can carry huge dimensions whose products overflow).
pub(crate) fn scratch_len(dims: &[usize]) -> OpResult<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 16)
        .ok_or_else(|| OpError::Shape(format!("intermediate of shape {dims:?} is too large")))
}

/// `tanh` through f64.
/// Runs `f32_run` / `f64_run` by input 0's dtype; f16/bf16 run through `f32_run` with their
/// [`Precision`] and cast the first `outputs` outputs back.
pub(crate) fn precision_dispatch(
    ctx: &EvalCtx<'_>,
    inputs: Inputs,
    outputs: usize,
    f32_run: impl Fn(&EvalCtx<'_>, &Inputs, Precision) -> OpResult<Vec<Value>>,
    f64_run: impl Fn(&EvalCtx<'_>, &Inputs) -> OpResult<Vec<Value>>,
) -> OpResult<Vec<Value>> {
    match inputs.tensor(0)?.dtype() {
        DType::F32 => f32_run(ctx, &inputs, Precision::Full),
        DType::F64 => f64_run(ctx, &inputs),
        dt @ (DType::F16 | DType::BF16) => eval_via_f32(ctx, &inputs, dt, outputs, |c, i| {
            f32_run(c, &i, Precision::of(dt))
        }),
        dt => Err(OpError::UnsupportedDType {
            index: 0,
            dtype: dt,
        }),
    }
}

/// Input `index` (the tensor `t`) as a vector of `F`, erroring on another dtype.
pub(crate) fn elements<F: Float>(t: &Tensor, index: usize) -> OpResult<Vec<F>> {
    if t.dtype() != F::DTYPE {
        return Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        });
    }
    Ok(t.to_vec::<F>()?)
}

fn tanh<F: Float>(x: F) -> F {
    F::from_f64(x.to_f64().tanh())
}

/// `softcap * tanh(x / softcap)` with each step rounded.
pub fn softcap<F: Float>(x: F, cap: F, prec: Precision) -> F {
    prec.round(prec.round(tanh(prec.round(x / cap))) * cap)
}

/// Softmax of one row in place. A row whose maximum is -inf becomes all zeros (no NaN).
/// bf16 sums round after every addition; f16 sums accumulate wide and round once.
pub fn softmax_row<F: Float>(row: &mut [F], prec: Precision) {
    let max = row.iter().fold(F::NEG_INFINITY, |m, &v| m.max(v));
    let shift = if max == F::NEG_INFINITY { F::ZERO } else { max };
    let mut sum = F::ZERO;
    for v in row.iter_mut() {
        *v = prec.round(prec.round(*v - shift).exp());
        sum += *v;
        if prec == Precision::BF16 {
            sum = prec.round(sum);
        }
    }
    let sum = prec.round(sum);
    let sum = if sum == F::ZERO { F::ONE } else { sum };
    for v in row.iter_mut() {
        *v = prec.round(*v / sum);
    }
}

// ----- op -----------------------------------------------------------------------------------

/// What `qk_matmul_output` exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkMode {
    /// The scaled (and softcapped) Q·Kᵀ.
    Scores,
    /// Scores plus the additive mask bias.
    WithBias,
    /// The softmax probabilities.
    Probabilities,
}

/// `Attention` with its attributes validated at load.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Explicit scale (default 1/sqrt(head size)).
    pub scale: Option<f32>,
    /// Causal (bottom-right aligned) masking.
    pub causal: bool,
    /// Query heads of 3-D inputs.
    pub q_heads: Option<usize>,
    /// Key/value heads of 3-D inputs.
    pub kv_heads: Option<usize>,
    /// Softcap (applied when positive).
    pub softcap: f32,
    /// What `qk_matmul_output` holds.
    pub qk_mode: QkMode,
    /// The precision the softmax runs in, when not the input's.
    pub softmax_precision: Option<DType>,
    /// Sliding window: keys at most this far before the query (-1: unbounded).
    pub left_window: i64,
    /// Sliding window: keys at most this far after the query (-1: unbounded).
    pub right_window: i64,
    /// Outputs the node declares.
    pub outputs: usize,
}

fn positive(ctx: &BuildCtx<'_>, name: &str) -> OpResult<Option<usize>> {
    match ctx.attrs.int(name)? {
        None => Ok(None),
        Some(v) => usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .map(Some)
            .ok_or_else(|| OpError::attribute(name, format!("must be positive, got {v}"))),
    }
}

fn window(ctx: &BuildCtx<'_>, name: &str) -> OpResult<i64> {
    if ctx.opset < 25 {
        return Ok(-1);
    }
    match ctx.attrs.int_or(name, -1)? {
        v if v >= -1 => Ok(v),
        v => Err(OpError::attribute(
            name,
            format!("must be -1 or >= 0, got {v}"),
        )),
    }
}

fn build_attention(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let qk_mode = match a.int_or("qk_matmul_output_mode", 0)? {
        0 | 1 => QkMode::Scores,
        2 => QkMode::WithBias,
        3 => QkMode::Probabilities,
        v => {
            return Err(OpError::attribute(
                "qk_matmul_output_mode",
                format!("must be 0..=3, got {v}"),
            ))
        }
    };
    let softmax_precision = match a.int("softmax_precision")? {
        None => None,
        Some(code) => Some(
            i32::try_from(code)
                .ok()
                .and_then(DType::from_onnx_code)
                .filter(|d| d.is_float())
                .ok_or_else(|| {
                    OpError::attribute("softmax_precision", format!("{code} is not a float type"))
                })?,
        ),
    };
    Ok(Box::new(Attention {
        scale: a.float("scale")?,
        causal: flag(a, "is_causal", 0)?,
        q_heads: positive(ctx, "q_num_heads")?,
        kv_heads: positive(ctx, "kv_num_heads")?,
        softcap: a.float_or("softcap", 0.0)?,
        qk_mode,
        softmax_precision,
        left_window: window(ctx, "left_window_size")?,
        right_window: window(ctx, "right_window_size")?,
        outputs: ctx.output_count.clamp(1, 4),
    }))
}

// ----- shapes -------------------------------------------------------------------------------

/// Q, K or V as contiguous `[batch, heads, seq, head_size]` elements.
#[derive(Debug)]
pub struct Heads<F> {
    /// Elements.
    pub data: Vec<F>,
    /// `[batch, heads, seq, head_size]`.
    pub shape: [usize; 4],
}

impl<F: Float> Heads<F> {
    /// Reads a 4-D input, or a 3-D `[batch, seq, heads * head_size]` one split into `heads`.
    pub fn load(t: &Tensor, index: usize, heads: Option<usize>, attr: &str) -> OpResult<Self> {
        if t.dtype() != F::DTYPE {
            return Err(OpError::UnsupportedDType {
                index,
                dtype: t.dtype(),
            });
        }
        match *t.shape() {
            [b, h, s, d] => Ok(Heads {
                data: t.to_vec::<F>()?,
                shape: [b, h, s, d],
            }),
            [b, s, hidden] => {
                let h = heads.ok_or_else(|| {
                    OpError::attribute(attr, "is required for 3-D inputs".to_string())
                })?;
                if hidden % h != 0 {
                    return Err(OpError::invalid(
                        index,
                        format!(
                            "hidden size {hidden} of shape {:?} is not a multiple of {attr} = {h}",
                            t.shape()
                        ),
                    ));
                }
                let d = hidden / h;
                let t4 = t.reshape(&[b, s, h, d])?.permute(&[0, 2, 1, 3])?;
                Ok(Heads {
                    data: t4.to_vec::<F>()?,
                    shape: [b, h, s, d],
                })
            }
            _ => Err(OpError::invalid(
                index,
                format!("expected rank 3 or 4, got shape {:?}", t.shape()),
            )),
        }
    }

    /// Prepends a cache `[batch, heads, past, head_size]` along the sequence axis.
    fn with_past(self, past: Option<&Tensor>, index: usize) -> OpResult<Self> {
        let Some(p) = past else { return Ok(self) };
        let [b, h, s, d] = self.shape;
        let pl = match *p.shape() {
            [pb, ph, pl, pd] if pb == b && ph == h && pd == d => pl,
            _ => {
                return Err(OpError::invalid(
                    index,
                    format!(
                        "cache shape {:?} does not fit [{b}, {h}, *, {d}]",
                        p.shape()
                    ),
                ))
            }
        };
        if p.dtype() != F::DTYPE {
            return Err(OpError::UnsupportedDType {
                index,
                dtype: p.dtype(),
            });
        }
        let pv = p.to_vec::<F>()?;
        let mut data = Vec::with_capacity(b * h * (pl + s) * d);
        for bh in 0..b * h {
            data.extend_from_slice(&pv[bh * pl * d..(bh + 1) * pl * d]);
            data.extend_from_slice(&self.data[bh * s * d..(bh + 1) * s * d]);
        }
        Ok(Heads {
            data,
            shape: [b, h, pl + s, d],
        })
    }

    /// Every element multiplied by `f` and rounded.
    fn scaled(&self, f: F, prec: Precision) -> Vec<F> {
        self.data.iter().map(|&x| prec.round(x * f)).collect()
    }
}

// ----- additive bias ------------------------------------------------------------------------

/// An attention mask broadcast (right-aligned) against `[batch, heads, q, kv]`; keys past its
/// last dimension are masked.
#[derive(Debug)]
struct Mask<F> {
    data: Vec<F>,
    strides: [usize; 3],
    width: usize,
}

impl<F: Float> Mask<F> {
    fn load(t: &Tensor, target: [usize; 4]) -> OpResult<Self> {
        let shape = t.shape();
        let rank = shape.len();
        if rank == 0 || rank > 4 {
            return Err(OpError::invalid(
                3,
                format!("attn_mask must have rank 1 to 4, got shape {shape:?}"),
            ));
        }
        let mut dims = [1usize; 4];
        dims[4 - rank..].copy_from_slice(shape);
        let fits = (0..3).all(|i| dims[i] == 1 || dims[i] == target[i]);
        if !fits || dims[3] > target[3] {
            return Err(OpError::invalid(
                3,
                format!("attn_mask of shape {shape:?} does not broadcast to {target:?}"),
            ));
        }
        let stride = |i: usize| -> usize {
            if dims[i] == 1 {
                0
            } else {
                dims[i + 1..].iter().product()
            }
        };
        let data = match t.dtype() {
            DType::Bool => t
                .contiguous()
                .as_bool_slice()?
                .iter()
                .map(|&b| if b != 0 { F::ZERO } else { F::NEG_INFINITY })
                .collect(),
            d if d == F::DTYPE => t.to_vec::<F>()?,
            d => return Err(OpError::UnsupportedDType { index: 3, dtype: d }),
        };
        Ok(Mask {
            data,
            strides: [stride(0), stride(1), stride(2)],
            width: dims[3],
        })
    }

    #[inline]
    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> F {
        if j >= self.width {
            return F::NEG_INFINITY;
        }
        let at = b * self.strides[0] + h * self.strides[1] + i * self.strides[2] + j;
        self.data.get(at).copied().unwrap_or(F::NEG_INFINITY)
    }
}

/// The additive bias of one query row: mask, causal frontier, sliding window and padding.
#[derive(Debug)]
pub struct Bias<F> {
    mask: Option<Mask<F>>,
    causal: bool,
    left: i64,
    right: i64,
    /// Per batch: absolute position of query 0 (past length, or nonpad - q_len).
    offsets: Vec<i64>,
    /// Per batch: keys at or past this index are padding.
    valid: Option<Vec<i64>>,
}

impl<F: Float> Bias<F> {
    /// Writes the bias of query `i` of (batch `b`, head `h`) into `row` (one per key).
    pub fn row(&self, b: usize, h: usize, i: usize, row: &mut [F]) {
        let off = self.offsets.get(b).copied().unwrap_or(0);
        let valid = self.valid.as_ref().map(|v| v.get(b).copied().unwrap_or(0));
        let p = (i as i64).saturating_add(off);
        for (j, o) in row.iter_mut().enumerate() {
            let mut v = self.mask.as_ref().map_or(F::ZERO, |m| m.at(b, h, i, j));
            let j = j as i64;
            let outside = (self.causal && j > p)
                || (self.left >= 0 && p.saturating_sub(j) > self.left)
                || (self.right >= 0 && j.saturating_sub(p) > self.right);
            if outside {
                v += F::NEG_INFINITY;
            }
            if valid.is_some_and(|n| j >= n) {
                v += F::NEG_INFINITY;
            }
            *o = v;
        }
    }
}

// ----- evaluation ---------------------------------------------------------------------------

/// Sizes of one evaluation.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head: usize,
    v_head: usize,
}

impl Attention {
    fn dims<F>(q: &Heads<F>, k: &Heads<F>, v: &Heads<F>) -> OpResult<Dims> {
        let [b, hq, sq, d] = q.shape;
        let [kb, hk, sk, dk] = k.shape;
        let [vb, hv, sv, dv] = v.shape;
        if kb != b || vb != b || hv != hk || sv != sk || dk != d {
            return Err(OpError::Shape(format!(
                "Attention: Q {:?}, K {:?} and V {:?} (as [batch, heads, seq, head]) disagree",
                q.shape, k.shape, v.shape
            )));
        }
        if hk == 0 || hq % hk != 0 {
            return Err(OpError::Shape(format!(
                "Attention: {hq} query heads are not a multiple of {hk} key/value heads"
            )));
        }
        scratch_len(&[b, hq, sq, sk.max(dv).max(1)])?;
        Ok(Dims {
            batch: b,
            q_heads: hq,
            kv_heads: hk,
            q_len: sq,
            kv_len: sk,
            head: d,
            v_head: dv,
        })
    }

    fn bias<F: Float>(
        &self,
        inputs: &Inputs,
        d: &Dims,
        past: usize,
        has_past: bool,
    ) -> OpResult<Bias<F>> {
        let mask = inputs
            .opt_tensor(3)?
            .map(|t| Mask::load(t, [d.batch, d.q_heads, d.q_len, d.kv_len]))
            .transpose()?;
        let valid = match inputs.opt_tensor(6)? {
            None => None,
            Some(_) if has_past => {
                return Err(OpError::invalid(
                    6,
                    "nonpad_kv_seqlen cannot be combined with past_key/past_value",
                ))
            }
            Some(t) if t.len() == d.batch => Some(t.to_i64_vec()?),
            Some(t) => {
                return Err(OpError::invalid(
                    6,
                    format!(
                        "nonpad_kv_seqlen shape {:?} is not [{}]",
                        t.shape(),
                        d.batch
                    ),
                ))
            }
        };
        let offsets = match &valid {
            Some(v) => v
                .iter()
                .map(|&n| n.saturating_sub(d.q_len as i64))
                .collect(),
            None => vec![past as i64; d.batch],
        };
        Ok(Bias {
            mask,
            causal: self.causal,
            left: self.left_window,
            right: self.right_window,
            offsets,
            valid,
        })
    }

    fn run<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        prec: Precision,
    ) -> OpResult<Vec<Value>> {
        let q_in = inputs.tensor(0)?;
        let rank3 = q_in.rank() == 3;
        let q = Heads::<F>::load(q_in, 0, self.q_heads, "q_num_heads")?;
        let (past_k, past_v) = (inputs.opt_tensor(4)?, inputs.opt_tensor(5)?);
        if past_k.is_some() != past_v.is_some() {
            return Err(OpError::invalid(
                4,
                "past_key and past_value must be given together",
            ));
        }
        let past = past_k.map_or(0, |p| p.shape().get(2).copied().unwrap_or(0));
        let k = Heads::<F>::load(inputs.tensor(1)?, 1, self.kv_heads, "kv_num_heads")?
            .with_past(past_k, 4)?;
        let v = Heads::<F>::load(inputs.tensor(2)?, 2, self.kv_heads, "kv_num_heads")?
            .with_past(past_v, 5)?;
        if rank3 != (inputs.tensor(1)?.rank() == 3) || rank3 != (inputs.tensor(2)?.rank() == 3) {
            return Err(OpError::Shape(
                "Attention: Q, K and V must all be 3-D or all 4-D".into(),
            ));
        }
        let d = Self::dims(&q, &k, &v)?;
        let bias = self.bias::<F>(inputs, &d, past, past_k.is_some())?;
        let scale = self
            .scale
            .map_or(1.0 / (d.head as f64).sqrt(), f64::from)
            .sqrt();
        let scale = prec.round(F::from_f64(scale));
        let (qs, ks) = (q.scaled(scale, prec), k.scaled(scale, prec));
        let errors = ErrorSlot::default();
        let mut scores = self.scores(ctx, &d, &qs, &ks, prec, &errors);
        let capture =
            |mode: QkMode, s: &[F]| (self.outputs == 4 && self.qk_mode == mode).then(|| s.to_vec());
        let mut qk_out = capture(QkMode::Scores, &scores);
        self.add_bias(ctx, &d, &bias, &mut scores, prec);
        qk_out = qk_out.or_else(|| capture(QkMode::WithBias, &scores));
        let sm_prec = self.softmax_precision.map_or(prec, Precision::of);
        self.softmax(ctx, &d, &bias, &mut scores, sm_prec, prec);
        qk_out = qk_out.or_else(|| capture(QkMode::Probabilities, &scores));
        let y = Self::weighted_values(ctx, &d, &scores, &v.data, prec, &errors)?;
        errors.finish()?;
        let y = if rank3 {
            Tensor::from_vec(y, &[d.batch, d.q_heads, d.q_len, d.v_head])?
                .permute(&[0, 2, 1, 3])?
                .reshape(&[d.batch, d.q_len, d.q_heads * d.v_head])?
        } else {
            Tensor::from_vec(y, &[d.batch, d.q_heads, d.q_len, d.v_head])?
        };
        let mut outs = vec![y.into()];
        if self.outputs > 1 {
            outs.push(Tensor::from_vec(k.data, &k.shape)?.into());
            outs.push(Tensor::from_vec(v.data, &v.shape)?.into());
        }
        if let Some(qk) = qk_out {
            outs.push(Tensor::from_vec(qk, &[d.batch, d.q_heads, d.q_len, d.kv_len])?.into());
        }
        Ok(outs)
    }

    /// `[batch, q_heads, q_len, kv_len]` scaled Q·Kᵀ, softcapped.
    fn scores<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        d: &Dims,
        qs: &[F],
        ks: &[F],
        prec: Precision,
        errors: &ErrorSlot,
    ) -> Vec<F> {
        let (sq, l, hd) = (d.q_len, d.kv_len, d.head);
        let group = d.q_heads / d.kv_heads;
        let mut scores = vec![F::ZERO; d.batch * d.q_heads * sq * l];
        let cap = (self.softcap > 0.0).then(|| F::from_f32(self.softcap));
        ctx.par_chunks_mut(&mut scores, sq * l, |bh, chunk| {
            let kvh = bh / d.q_heads * d.kv_heads + bh % d.q_heads / group;
            let qm = MatRef::row_major(&qs[bh * sq * hd..], sq, hd);
            let km = MatRef::row_major(&ks[kvh * l * hd..], l, hd).t();
            errors.record(gemm(
                F::ONE,
                qm,
                km,
                F::ZERO,
                MatMut::row_major(chunk, sq, l),
            ));
            prec.round_all(chunk);
            if let Some(c) = cap {
                chunk.iter_mut().for_each(|x| *x = softcap(*x, c, prec));
            }
        });
        scores
    }

    /// Calls `f(scores_row, bias_row)` for every query row of `scores`, in parallel.
    fn with_bias_rows<F: Float>(
        ctx: &EvalCtx<'_>,
        d: &Dims,
        bias: &Bias<F>,
        scores: &mut [F],
        f: impl Fn(&mut [F], &[F]) + Sync,
    ) {
        let l = d.kv_len;
        ctx.par_chunks_mut(scores, d.q_len * l, |bh, chunk| {
            let mut row = vec![F::ZERO; l];
            let (b, h) = (bh / d.q_heads, bh % d.q_heads);
            for (i, s) in chunk.chunks_mut(l.max(1)).enumerate() {
                bias.row(b, h, i, &mut row);
                f(s, &row);
            }
        });
    }

    fn add_bias<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        d: &Dims,
        bias: &Bias<F>,
        scores: &mut [F],
        prec: Precision,
    ) {
        Self::with_bias_rows(ctx, d, bias, scores, |s, row| {
            for (x, &a) in s.iter_mut().zip(row) {
                *x = prec.round(*x + a);
            }
        });
    }

    /// Softmax over keys; rows whose bias masks every key become zeros.
    fn softmax<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        d: &Dims,
        bias: &Bias<F>,
        scores: &mut [F],
        sm_prec: Precision,
        prec: Precision,
    ) {
        Self::with_bias_rows(ctx, d, bias, scores, |s, row| {
            if row.iter().all(|&v| v == F::NEG_INFINITY) {
                s.fill(F::ZERO);
            } else {
                s.iter_mut().for_each(|x| *x = sm_prec.round(*x));
                softmax_row(s, sm_prec);
                prec.round_all(s);
            }
        });
    }

    /// `[batch, q_heads, q_len, v_head]` probabilities times values.
    fn weighted_values<F: Float>(
        ctx: &EvalCtx<'_>,
        d: &Dims,
        probs: &[F],
        v: &[F],
        prec: Precision,
        errors: &ErrorSlot,
    ) -> OpResult<Vec<F>> {
        let (sq, l, dv) = (d.q_len, d.kv_len, d.v_head);
        let group = d.q_heads / d.kv_heads;
        let mut y = vec![F::ZERO; d.batch * d.q_heads * sq * dv];
        ctx.par_chunks_mut(&mut y, sq * dv, |bh, chunk| {
            let kvh = bh / d.q_heads * d.kv_heads + bh % d.q_heads / group;
            let pm = MatRef::row_major(&probs[bh * sq * l..], sq, l);
            let vm = MatRef::row_major(&v[kvh * l * dv..], l, dv);
            errors.record(gemm(
                F::ONE,
                pm,
                vm,
                F::ZERO,
                MatMut::row_major(chunk, sq, dv),
            ));
            prec.round_all(chunk);
        });
        Ok(y)
    }
}

impl Operator for Attention {
    fn op_type(&self) -> &str {
        "Attention"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        precision_dispatch(
            ctx,
            inputs,
            4,
            |c, i, p| self.run::<f32>(c, i, p),
            |c, i| self.run::<f64>(c, i, Precision::Full),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::nn::testutil::{build, close, eval, f64s, t};
    use crate::Attribute;

    fn e() -> f64 {
        std::f64::consts::E
    }

    #[test]
    fn attention_by_hand_4d() {
        let op = build("Attention", 23, &[("scale", Attribute::Float(1.0))], 3, 1);
        let q = t(&[1., 0.], &[1, 1, 1, 2]);
        let k = t(&[1., 0., 0., 1.], &[1, 1, 2, 2]);
        let v = t(&[1., 3.], &[1, 1, 2, 1]);
        let out = eval(op.as_ref(), &[Some(q), Some(k), Some(v)]);
        assert_eq!(out[0].shape(), &[1, 1, 1, 1]);
        close(&f64s(&out[0]), &[(e() + 3.) / (e() + 1.)], 1e-6);
    }

    #[test]
    fn causal_mask_cache_and_probabilities() {
        let attrs = [
            ("scale", Attribute::Float(1.0)),
            ("is_causal", Attribute::Int(1)),
            ("qk_matmul_output_mode", Attribute::Int(3)),
        ];
        let op = build("Attention", 23, &attrs, 6, 4);
        // One new key after a one-entry cache: query 0 sits at position 1 and sees both keys.
        let q = t(&[1., 0.], &[1, 1, 1, 2]);
        let k = t(&[0., 1.], &[1, 1, 1, 2]);
        let v = t(&[3.], &[1, 1, 1, 1]);
        let pk = t(&[1., 0.], &[1, 1, 1, 2]);
        let pv = t(&[1.], &[1, 1, 1, 1]);
        let ins = [Some(q), Some(k), Some(v), None, Some(pk), Some(pv)];
        let out = eval(op.as_ref(), &ins);
        assert_eq!(out[1].shape(), &[1, 1, 2, 2]);
        close(&f64s(&out[1]), &[1., 0., 0., 1.], 0.);
        close(&f64s(&out[2]), &[1., 3.], 0.);
        let p0 = e() / (e() + 1.);
        close(&f64s(&out[3]), &[p0, 1. - p0], 1e-6);
        close(&f64s(&out[0]), &[p0 + 3. * (1. - p0)], 1e-6);
    }

    #[test]
    fn masks_gqa_and_3d_inputs() {
        // 3-D inputs, 2 query heads sharing 1 kv head; a bool mask hiding every key of query
        // 1 gives a zero row, and a mask shorter than the keys masks the rest.
        let attrs = [
            ("q_num_heads", Attribute::Int(2)),
            ("kv_num_heads", Attribute::Int(1)),
        ];
        let op = build("Attention", 23, &attrs, 4, 1);
        let q = t(&[1., 2., 3., 4.], &[1, 2, 2]);
        let k = t(&[1., 1.], &[1, 2, 1]);
        let v = t(&[5., 7.], &[1, 2, 1]);
        let mask = Tensor::from_bools(&[true, false], &[2, 1]).unwrap();
        let out = eval(op.as_ref(), &[Some(q), Some(k), Some(v), Some(mask)]);
        assert_eq!(out[0].shape(), &[1, 2, 2]);
        close(&f64s(&out[0]), &[5., 5., 0., 0.], 1e-6);
    }

    #[test]
    fn errors_name_the_problem() {
        let op = build("Attention", 23, &[], 3, 1);
        let q = t(&[1.; 4], &[1, 2, 2]);
        let err = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([q.clone(), q.clone(), q]),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("q_num_heads"), "{err}");
        let q = t(&[1.; 6], &[1, 3, 1, 2]);
        let k = t(&[1.; 4], &[1, 2, 1, 2]);
        let err = op
            .eval(&EvalCtx::default(), Inputs::from_tensors([q, k.clone(), k]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple"), "{err}");
    }

    #[test]
    fn softmax_and_rounding_helpers() {
        let mut row = [f32::NEG_INFINITY; 3];
        softmax_row(&mut row, Precision::Full);
        assert_eq!(row, [0.; 3]);
        let mut row = [0f32, 0.];
        softmax_row(&mut row, Precision::BF16);
        assert_eq!(row, [0.5, 0.5]);
        assert_eq!(Precision::BF16.round(1.001f32), 1.0);
        assert!(scratch_len(&[usize::MAX, 2]).is_err());
        assert_eq!(scratch_len(&[2, 3]).unwrap(), 6);
        assert_eq!(Precision::F16.round(1.0001f32), 1.0);
        assert_eq!(Precision::Full.round(1.0001f32), 1.0001);
        close(
            &[f64::from(softcap(100f32, 2., Precision::Full))],
            &[2.],
            1e-6,
        );
    }
}
