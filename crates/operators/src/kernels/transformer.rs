//! Transformer building blocks besides attention itself: `RotaryEmbedding` (opset 23,
//! half-split or interleaved rotation of the first `rotary_embedding_dim` features, caches
//! indexed by `position_ids` or given per token) and the gated activations `Swish` (opset 24)
//! and `SwiGLU`. f16/bf16 compute in f32, rounding each step as the reference does.

use crate::kernels::attention::{elements, precision_dispatch, Precision};
use crate::kernels::linalg::Float;
use crate::kernels::nn::flag;
use crate::{
    op_boilerplate, BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use strata_tensor::Tensor;

/// Registers `RotaryEmbedding`, `Swish` and `SwiGLU`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "RotaryEmbedding", 23, build_rotary);
    registry.register("", "Swish", 24, |c| {
        Ok(Box::new(Gated {
            alpha: c.attrs.float_or("alpha", 1.0)?,
            glu: false,
        }))
    });
    registry.register("", "SwiGLU", 28, |c| {
        Ok(Box::new(Gated {
            alpha: c.attrs.float_or("alpha", 1.0)?,
            glu: true,
        }))
    });
}

// ----- Swish / SwiGLU -----------------------------------------------------------------------

/// `Swish(x) = x * sigmoid(alpha * x)`; `SwiGLU(a, b) = Swish(a) * b` (equal shapes).
#[derive(Debug, Clone, Copy)]
pub struct Gated {
    /// Sigmoid slope.
    pub alpha: f32,
    /// Multiply by the second input (`SwiGLU`).
    pub glu: bool,
}

/// `x * sigmoid(alpha * x)` with the reference's per-step rounding.
fn swish<F: Float>(x: F, alpha: F, p: Precision) -> F {
    let e = p.round(p.round(-(alpha * x)).exp());
    let sig = p.round(F::ONE / p.round(F::ONE + e));
    p.round(x * sig)
}

impl Gated {
    fn run<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        p: Precision,
    ) -> OpResult<Vec<Value>> {
        let a_t = inputs.tensor(0)?;
        let a = elements::<F>(a_t, 0)?;
        let b = if self.glu {
            let b_t = inputs.tensor(1)?;
            if b_t.shape() != a_t.shape() {
                return Err(OpError::invalid(
                    1,
                    format!(
                        "shape {:?} differs from input 0's {:?}",
                        b_t.shape(),
                        a_t.shape()
                    ),
                ));
            }
            Some(elements::<F>(b_t, 1)?)
        } else {
            None
        };
        let alpha = p.round(F::from_f32(self.alpha));
        let mut out = ctx.alloc(F::DTYPE, a_t.shape())?;
        let o = out.as_slice_mut::<F>()?;
        let per = 1 << 14;
        ctx.par_chunks_mut(o, per, |ci, chunk| {
            let start = ci * per;
            for (j, o) in chunk.iter_mut().enumerate() {
                let x = a.get(start + j).copied().unwrap_or(F::ZERO);
                let s = swish(x, alpha, p);
                *o = match &b {
                    Some(b) => p.round(s * b.get(start + j).copied().unwrap_or(F::ZERO)),
                    None => s,
                };
            }
        });
        Ok(vec![out.into()])
    }
}

impl Operator for Gated {
    fn op_type(&self) -> &str {
        if self.glu {
            "SwiGLU"
        } else {
            "Swish"
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        precision_dispatch(
            ctx,
            inputs,
            1,
            |c, i, p| self.run::<f32>(c, i, p),
            |c, i| self.run::<f64>(c, i, Precision::Full),
        )
    }
}

// ----- RotaryEmbedding ----------------------------------------------------------------------

/// `RotaryEmbedding` with validated attributes.
#[derive(Debug, Clone, Copy)]
pub struct Rotary {
    /// Rotate pairs (2i, 2i+1) instead of (i, i + dim/2).
    pub interleaved: bool,
    /// Rotated features per head (0: the whole head).
    pub dim: usize,
    /// Heads of 3-D inputs.
    pub heads: Option<usize>,
}

fn build_rotary(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let nonneg = |name: &str, v: i64| {
        usize::try_from(v).map_err(|_| OpError::attribute(name, format!("must be >= 0, got {v}")))
    };
    let heads = match a.int("num_heads")? {
        None | Some(0) => None,
        Some(v) => Some(nonneg("num_heads", v)?),
    };
    Ok(Box::new(Rotary {
        interleaved: flag(a, "interleaved", 0)?,
        dim: nonneg("rotary_embedding_dim", a.int_or("rotary_embedding_dim", 0)?)?,
        heads,
    }))
}

/// Where head vectors live: `[b, h, s, d]` (4-D) or `[b, s, h * d]` (3-D).
#[derive(Debug, Clone, Copy)]
struct RotLayout {
    batch: usize,
    heads: usize,
    seq: usize,
    head: usize,
    four_d: bool,
}

impl RotLayout {
    /// (batch, position) of head vector `n` in memory order.
    fn token(&self, n: usize) -> (usize, usize) {
        if self.four_d {
            (n / (self.heads * self.seq), n % self.seq)
        } else {
            (n / (self.seq * self.heads), n / self.heads % self.seq)
        }
    }
}

impl Rotary {
    fn layout(&self, x: &Tensor) -> OpResult<RotLayout> {
        match *x.shape() {
            [b, h, s, d] => Ok(RotLayout {
                batch: b,
                heads: h,
                seq: s,
                head: d,
                four_d: true,
            }),
            [b, s, hidden] => {
                let h = self
                    .heads
                    .ok_or_else(|| OpError::attribute("num_heads", "is required for 3-D input"))?;
                if hidden % h != 0 {
                    return Err(OpError::invalid(
                        0,
                        format!("hidden size {hidden} is not a multiple of num_heads {h}"),
                    ));
                }
                Ok(RotLayout {
                    batch: b,
                    heads: h,
                    seq: s,
                    head: hidden / h,
                    four_d: false,
                })
            }
            ref s => Err(OpError::invalid(
                0,
                format!("expected rank 3 or 4, got {s:?}"),
            )),
        }
    }

    /// Offsets (in cache rows) of each token's cos/sin row, validating cache shapes.
    fn rows(&self, inputs: &Inputs, l: &RotLayout, half: usize) -> OpResult<Vec<usize>> {
        let cos = inputs.tensor(1)?;
        let sin = inputs.tensor(2)?;
        if cos.shape() != sin.shape() || cos.shape().last() != Some(&half) {
            return Err(OpError::invalid(
                1,
                format!(
                    "cos_cache {:?} and sin_cache {:?} must match and end in {half}",
                    cos.shape(),
                    sin.shape()
                ),
            ));
        }
        match inputs.opt_tensor(3)? {
            Some(p) => {
                let max = cos.shape().first().copied().unwrap_or(0);
                if p.shape() != [l.batch, l.seq] || cos.rank() != 2 {
                    return Err(OpError::invalid(
                        3,
                        format!("position_ids {:?} with cache {:?}", p.shape(), cos.shape()),
                    ));
                }
                p.to_i64_vec()?
                    .into_iter()
                    .map(|v| {
                        usize::try_from(v).ok().filter(|&v| v < max).ok_or_else(|| {
                            OpError::invalid(3, format!("position {v} outside cache of {max}"))
                        })
                    })
                    .collect()
            }
            None if cos.shape() == [l.batch, l.seq, half] => Ok((0..l.batch * l.seq).collect()),
            None => Err(OpError::invalid(
                1,
                format!(
                    "cache {:?} is not [{}, {}, {half}]",
                    cos.shape(),
                    l.batch,
                    l.seq
                ),
            )),
        }
    }

    fn run<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        p: Precision,
    ) -> OpResult<Vec<Value>> {
        let x_t = inputs.tensor(0)?;
        let l = self.layout(x_t)?;
        let rd = if self.dim == 0 { l.head } else { self.dim };
        if rd > l.head || rd % 2 != 0 {
            return Err(OpError::attribute(
                "rotary_embedding_dim",
                format!("{rd} must be even and at most the head size {}", l.head),
            ));
        }
        let half = rd / 2;
        let rows = self.rows(inputs, &l, half)?;
        let x = elements::<F>(x_t, 0)?;
        let cos = elements::<F>(inputs.tensor(1)?, 1)?;
        let sin = elements::<F>(inputs.tensor(2)?, 2)?;
        let mut out = ctx.alloc(F::DTYPE, x_t.shape())?;
        let o = out.as_slice_mut::<F>()?;
        let d = l.head;
        let interleaved = self.interleaved;
        ctx.par_chunks_mut(o, d.max(1), |n, ov| {
            let xv = &x[n * d..][..d];
            ov.copy_from_slice(xv);
            let (b, s) = l.token(n);
            let r = rows.get(b * l.seq + s).copied().unwrap_or(0) * half;
            let (c, sn) = (&cos[r..][..half], &sin[r..][..half]);
            for i in 0..half {
                let (i1, i2) = if interleaved {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + half)
                };
                let (x1, x2) = (xv[i1], xv[i2]);
                ov[i1] = p.round(p.round(c[i] * x1) - p.round(sn[i] * x2));
                ov[i2] = p.round(p.round(sn[i] * x1) + p.round(c[i] * x2));
            }
        });
        Ok(vec![out.into()])
    }
}

impl Operator for Rotary {
    op_boilerplate!("RotaryEmbedding");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        precision_dispatch(
            ctx,
            inputs,
            1,
            |c, i, p| self.run::<f32>(c, i, p),
            |c, i| self.run::<f64>(c, i, Precision::Full),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, close, eval, f64s, t};
    use crate::Attribute;
    use strata_tensor::Tensor;

    fn sigmoid(x: f64) -> f64 {
        1. / (1. + (-x).exp())
    }

    #[test]
    fn swish_and_swiglu() {
        let op = build("Swish", 24, &[("alpha", Attribute::Float(2.0))], 1, 1);
        let out = eval(op.as_ref(), &[Some(t(&[0., 1.], &[2]))]);
        close(&f64s(&out[0]), &[0., sigmoid(2.)], 1e-6);
        let op = build("SwiGLU", 28, &[], 2, 1);
        let out = eval(op.as_ref(), &[Some(t(&[1.], &[1])), Some(t(&[2.], &[1]))]);
        close(&f64s(&out[0]), &[2. * sigmoid(1.)], 1e-6);
    }

    #[test]
    fn rotary_halves_and_interleaved() {
        let x = t(&[1., 2., 3., 4.], &[1, 1, 1, 4]);
        let cos = t(&[0., 1.], &[1, 2]);
        let sin = t(&[1., 0.], &[1, 2]);
        let pos = Tensor::from_vec(vec![0i64], &[1, 1]).unwrap();
        let ins = [Some(x), Some(cos), Some(sin), Some(pos.clone())];
        let op = build("RotaryEmbedding", 23, &[], 4, 1);
        close(&f64s(&eval(op.as_ref(), &ins)[0]), &[-3., 2., 1., 4.], 1e-6);
        let op = build(
            "RotaryEmbedding",
            23,
            &[("interleaved", Attribute::Int(1))],
            4,
            1,
        );
        close(&f64s(&eval(op.as_ref(), &ins)[0]), &[-2., 1., 3., 4.], 1e-6);
        // A position outside the cache is an error naming position_ids (input 3).
        let bad = Tensor::from_vec(vec![5i64], &[1, 1]).unwrap();
        let mut ins = ins;
        ins[3] = Some(bad);
        let inputs = crate::Inputs::new(ins.iter().map(|t| t.clone().map(Into::into)).collect());
        let err = op
            .eval(&crate::EvalCtx::default(), inputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("input 3"), "{err}");
    }
}
