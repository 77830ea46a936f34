//! `FlexAttention` (domain `ai.onnx.preview`): scaled dot-product attention over rank-4
//! inputs whose scores and probabilities may be rewritten by user subgraphs (`score_mod`,
//! `prob_mod`), which run through the same [`Body`] interface as the control-flow ops.
//!
//! Arithmetic is done in f64 with roundings to the input and softmax precisions where the
//! reference rounds: the scaled inputs and the scores in the input type, the scores and
//! probabilities handed to the subgraphs in the softmax precision, the output in V's type.

use super::control::Body;
use crate::{
    op_boilerplate, BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use strata_tensor::{DType, Tensor};

/// Registers `FlexAttention`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("ai.onnx.preview", "FlexAttention", 1, build);
}

/// `FlexAttention`: `softmax(score_mod(Q·Kᵀ·scale))`, then `prob_mod`, times `V`, with
/// grouped K/V heads when Q has more heads.
#[derive(Debug, Clone)]
pub struct FlexAttention {
    /// Score scale; `1/sqrt(head_size)` when absent.
    pub scale: Option<f32>,
    /// Rewrites the scores before the softmax.
    pub score_mod: Option<Body>,
    /// Rewrites the probabilities after the softmax.
    pub prob_mod: Option<Body>,
    /// Type of the softmax and of the subgraphs' tensors (f32 or f64); `None`: f64 for f64
    /// inputs, f32 otherwise.
    pub softmax_precision: Option<DType>,
}

fn build(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let modifier = |name: &str| -> OpResult<Option<Body>> {
        if !b.attrs.contains(name) {
            return Ok(None);
        }
        let body = Body::from_attr(b, name)?;
        if body.inputs() != 1 || body.outputs() != 1 {
            return Err(OpError::attribute(
                name,
                "must have one input and one output",
            ));
        }
        Ok(Some(body))
    };
    let softmax_precision = match b.attrs.int("softmax_precision")? {
        None => None,
        Some(code) => Some(
            i32::try_from(code)
                .ok()
                .and_then(DType::from_onnx_code)
                .filter(|d| matches!(d, DType::F32 | DType::F64))
                .ok_or_else(|| {
                    OpError::attribute("softmax_precision", format!("{code} is not supported"))
                })?,
        ),
    };
    Ok(Box::new(FlexAttention {
        scale: b.attrs.float("scale")?,
        score_mod: modifier("score_mod")?,
        prob_mod: modifier("prob_mod")?,
        softmax_precision,
    }))
}

/// Dims of a rank-4 input.
fn dims4(t: &Tensor, index: usize) -> OpResult<[usize; 4]> {
    <[usize; 4]>::try_from(t.shape())
        .map_err(|_| OpError::invalid(index, format!("must be rank 4, got shape {:?}", t.shape())))
}

/// `values` rounded to `dtype` (a cast there and back).
fn round_to(values: Vec<f64>, shape: &[usize], dtype: DType) -> OpResult<Vec<f64>> {
    if dtype == DType::F64 {
        return Ok(values);
    }
    let t = Tensor::from_vec(values, shape)?.cast(dtype)?;
    Ok(t.cast(DType::F64)?.to_vec::<f64>()?)
}

/// The checked sizes of one evaluation.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    q_heads: usize,
    group: usize,
    len: usize,
    kv_len: usize,
    head: usize,
    v_head: usize,
}

fn check_dims(q: &Tensor, k: &Tensor, v: &Tensor) -> OpResult<Dims> {
    let [b, hq, l, e] = dims4(q, 0)?;
    let [bk, hk, s, ek] = dims4(k, 1)?;
    let [bv, hv, sv, ev] = dims4(v, 2)?;
    if bk != b || bv != b || hv != hk || sv != s || ek != e {
        return Err(OpError::Shape(format!(
            "Q {:?}, K {:?} and V {:?} do not agree on batch, heads, length or head size",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(OpError::invalid(
            1,
            format!("{hk} K/V heads do not divide {hq} query heads"),
        ));
    }
    Ok(Dims {
        batch: b,
        q_heads: hq,
        group: hq / hk,
        len: l,
        kv_len: s,
        head: e,
        v_head: ev,
    })
}

impl FlexAttention {
    /// Runs a modifier subgraph on `values` (shape `shape`, type `dtype`).
    fn modify(
        &self,
        ctx: &EvalCtx<'_>,
        body: &Body,
        inputs: &Inputs,
        values: Vec<f64>,
        shape: &[usize],
        dtype: DType,
    ) -> OpResult<Vec<f64>> {
        let t = Tensor::from_vec(values, shape)?.cast(dtype)?;
        let captured = body.captured(inputs)?;
        let mut out = body.run(ctx, vec![Value::Tensor(t)], &captured)?;
        match out.pop() {
            Some(Value::Tensor(r)) if r.shape() == shape => {
                Ok(r.cast(DType::F64)?.to_vec::<f64>()?)
            }
            Some(other) => Err(OpError::BadSubgraph(format!(
                "{} must return a tensor of shape {shape:?}, got {}",
                body.name,
                other.describe()
            ))),
            None => Err(OpError::BadSubgraph(format!(
                "{} returned nothing",
                body.name
            ))),
        }
    }

    /// `(Q·s)·(K·s)ᵀ` per batch and query head, with `s = sqrt(scale)` as the reference.
    fn scores(&self, q: &Tensor, k: &Tensor, d: Dims) -> OpResult<Vec<f64>> {
        let scale = self.scale.unwrap_or(1.0 / (d.head as f32).sqrt());
        let s = f64::from(scale.sqrt());
        let scaled = |t: &Tensor| -> OpResult<Vec<f64>> {
            let v: Vec<f64> = t
                .cast(DType::F64)?
                .to_vec::<f64>()?
                .iter()
                .map(|x| x * s)
                .collect();
            round_to(v, t.shape(), t.dtype())
        };
        let (qv, kv) = (scaled(q)?, scaled(k)?);
        let mut out = vec![0.0; d.batch * d.q_heads * d.len * d.kv_len];
        for (row, o) in out.chunks_mut(d.kv_len.max(1)).enumerate() {
            let bh = row / d.len.max(1);
            let (b, h) = (bh / d.q_heads, bh % d.q_heads);
            let kh = b * (d.q_heads / d.group) + h / d.group;
            let qrow = &qv[row * d.head..(row + 1) * d.head];
            for (j, x) in o.iter_mut().enumerate() {
                let krow = &kv[(kh * d.kv_len + j) * d.head..(kh * d.kv_len + j + 1) * d.head];
                *x = qrow.iter().zip(krow).map(|(a, b)| a * b).sum();
            }
        }
        Ok(out)
    }

    /// `probs · V` with grouped heads.
    fn weighted(&self, probs: &[f64], v: &Tensor, d: Dims) -> OpResult<Vec<f64>> {
        let vv = v.cast(DType::F64)?.to_vec::<f64>()?;
        let mut out = vec![0.0; d.batch * d.q_heads * d.len * d.v_head];
        for (row, o) in out.chunks_mut(d.v_head.max(1)).enumerate() {
            let bh = row / d.len.max(1);
            let (b, h) = (bh / d.q_heads, bh % d.q_heads);
            let kh = b * (d.q_heads / d.group) + h / d.group;
            let p = &probs[row * d.kv_len..(row + 1) * d.kv_len];
            for (j, &pj) in p.iter().enumerate() {
                let vrow = &vv[(kh * d.kv_len + j) * d.v_head..(kh * d.kv_len + j + 1) * d.v_head];
                for (x, &y) in o.iter_mut().zip(vrow) {
                    *x += pj * y;
                }
            }
        }
        Ok(out)
    }
}

/// Softmax over each row of `len` values.
fn softmax_rows(values: &mut [f64], len: usize) {
    for row in values.chunks_mut(len.max(1)) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        row.iter_mut().for_each(|x| *x /= sum);
    }
}

impl Operator for FlexAttention {
    op_boilerplate!("FlexAttention");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (q, k, v) = (inputs.tensor(0)?, inputs.tensor(1)?, inputs.tensor(2)?);
        let d = check_dims(q, k, v)?;
        let compute = self
            .softmax_precision
            .unwrap_or(if q.dtype() == DType::F64 {
                DType::F64
            } else {
                DType::F32
            });
        let shape = [d.batch, d.q_heads, d.len, d.kv_len];
        let scores = round_to(self.scores(q, k, d)?, &shape, q.dtype())?;
        let mut scores = round_to(scores, &shape, compute)?;
        if let Some(body) = &self.score_mod {
            scores = self.modify(ctx, body, &inputs, scores, &shape, compute)?;
        }
        softmax_rows(&mut scores, d.kv_len);
        let mut probs = round_to(scores, &shape, compute)?;
        if let Some(body) = &self.prob_mod {
            probs = self.modify(ctx, body, &inputs, probs, &shape, compute)?;
        }
        let out = self.weighted(&probs, v, d)?;
        let y = Tensor::from_vec(out, &[d.batch, d.q_heads, d.len, d.v_head])?.cast(v.dtype())?;
        Ok(vec![y.into()])
    }

    fn is_deterministic(&self) -> bool {
        [&self.score_mod, &self.prob_mod]
            .into_iter()
            .flatten()
            .all(|b| b.graph.is_deterministic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attributes;

    fn op(attrs: &Attributes) -> Box<dyn Operator> {
        build(&BuildCtx {
            node_name: "fa",
            op_type: "FlexAttention",
            domain: "ai.onnx.preview",
            opset: 1,
            attrs,
            input_count: 3,
            output_count: 1,
        })
        .unwrap()
    }

    #[test]
    fn uniform_scores_average_the_values_and_gqa_shares_heads() {
        // K all zeros: every score is 0, so each output row is the mean of V's rows.
        let q = Tensor::from_vec(vec![1.0f32; 2 * 2 * 3], &[1, 2, 2, 3]).unwrap();
        let k = Tensor::from_vec(vec![0.0f32; 2 * 3], &[1, 1, 2, 3]).unwrap();
        let v = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
        let out = op(&Attributes::new())
            .eval(&EvalCtx::default(), Inputs::from_tensors([q, k, v]))
            .unwrap();
        let y = out[0].as_tensor().unwrap();
        assert_eq!(y.shape(), &[1, 2, 2, 2]);
        assert_eq!(
            y.to_vec::<f32>().unwrap(),
            vec![2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0]
        );
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let q = Tensor::from_vec(vec![1.0f32; 6], &[1, 3, 1, 2]).unwrap();
        let k = Tensor::from_vec(vec![0.0f32; 4], &[1, 2, 1, 2]).unwrap();
        let v = k.clone();
        let err = op(&Attributes::new())
            .eval(&EvalCtx::default(), Inputs::from_tensors([q.clone(), k, v]))
            .unwrap_err();
        assert!(err.to_string().contains("do not divide"), "{err}");
        let flat = Tensor::from_vec(vec![1.0f32; 2], &[2]).unwrap();
        let err = op(&Attributes::new())
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([flat, q.clone(), q]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("rank 4"), "{err}");
    }
}
