//! Stateful sequence ops of opset 27 used by linear-attention and state-space models:
//! `LinearAttention` (linear, gated, delta and gated-delta recurrences over a per-head
//! `d_k x d_v` state, grouped query heads) and `CausalConvWithState` (a depthwise causal
//! 1-D convolution carrying its last `k - 1` inputs). Both run in f32 or f64; f16/bf16 inputs
//! compute in f32, matching the reference's f32 accumulation.

use crate::kernels::attention::{elements, precision_dispatch, scratch_len, Precision};
use crate::kernels::linalg::Float;
use crate::{
    op_boilerplate, BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use strata_tensor::Tensor;

/// Registers `LinearAttention` and `CausalConvWithState`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "LinearAttention", 27, build_linear_attention);
    registry.register("", "CausalConvWithState", 27, build_causal_conv);
}

// ----- LinearAttention ----------------------------------------------------------------------

/// `LinearAttention` with validated attributes.
#[derive(Debug, Clone, Copy)]
pub struct LinearAttention {
    /// Query heads.
    pub q_heads: usize,
    /// Key/value heads (divides `q_heads`).
    pub kv_heads: usize,
    /// Output scale (default 1/sqrt(d_k)).
    pub scale: Option<f32>,
    /// Decay the state by `exp(decay)` each step.
    pub gating: bool,
    /// Write `beta * (v - Sᵀk)` instead of `v`.
    pub delta: bool,
}

fn heads_attr(ctx: &BuildCtx<'_>, name: &str) -> OpResult<usize> {
    let v = ctx
        .attrs
        .int(name)?
        .ok_or_else(|| OpError::attribute(name, "is required"))?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| OpError::attribute(name, format!("must be positive, got {v}")))
}

fn build_linear_attention(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let (q_heads, kv_heads) = (
        heads_attr(ctx, "q_num_heads")?,
        heads_attr(ctx, "kv_num_heads")?,
    );
    if q_heads % kv_heads != 0 {
        return Err(OpError::attribute(
            "q_num_heads",
            format!("{q_heads} is not a multiple of kv_num_heads {kv_heads}"),
        ));
    }
    let (gating, delta) = match a.string_or("update_rule", "gated_delta")?.as_str() {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        other => {
            return Err(OpError::attribute(
                "update_rule",
                format!("unknown rule '{other}'"),
            ))
        }
    };
    Ok(Box::new(LinearAttention {
        q_heads,
        kv_heads,
        scale: a.float("scale")?.filter(|&s| s != 0.0),
        gating,
        delta,
    }))
}

/// Sizes of one LinearAttention evaluation.
#[derive(Debug, Clone, Copy)]
struct LinDims {
    batch: usize,
    len: usize,
    dk: usize,
    dv: usize,
    /// Decay values per (token, kv head): 1 (per head) or d_k (per key dimension).
    decay_width: usize,
    /// Beta values per token: 1 (shared) or kv_heads.
    beta_width: usize,
}

/// The inputs of one LinearAttention evaluation, as flat `[batch, len, ...]` vectors.
#[derive(Debug)]
struct LinInputs<F> {
    q: Vec<F>,
    k: Vec<F>,
    v: Vec<F>,
    state: Option<Vec<F>>,
    decay: Option<Vec<F>>,
    beta: Option<Vec<F>>,
}

impl LinearAttention {
    fn rank3(inputs: &Inputs, i: usize) -> OpResult<[usize; 3]> {
        match *inputs.tensor(i)?.shape() {
            [b, t, h] => Ok([b, t, h]),
            ref s => Err(OpError::invalid(
                i,
                format!("expected rank 3, got shape {s:?}"),
            )),
        }
    }

    fn dims(&self, inputs: &Inputs) -> OpResult<LinDims> {
        let [b, t, qh] = Self::rank3(inputs, 0)?;
        let [kb, kt, kh] = Self::rank3(inputs, 1)?;
        let [vb, vt, vh] = Self::rank3(inputs, 2)?;
        let (dk, dv) = (qh / self.q_heads, vh / self.kv_heads);
        if (kb, kt, vb, vt) != (b, t, b, t)
            || qh % self.q_heads != 0
            || vh % self.kv_heads != 0
            || kh != self.kv_heads * dk
        {
            return Err(OpError::Shape(format!(
                "LinearAttention: query [{b}, {t}, {qh}], key [{kb}, {kt}, {kh}] and value \
                 [{vb}, {vt}, {vh}] do not fit {} query and {} key/value heads",
                self.q_heads, self.kv_heads
            )));
        }
        let width = |i: usize, allowed: [usize; 2], name: &str| -> OpResult<usize> {
            let Some(x) = inputs.opt_tensor(i)? else {
                return Ok(0);
            };
            match *x.shape() {
                [xb, xt, w] if xb == b && xt == t && allowed.contains(&w) => Ok(w),
                ref s => Err(OpError::invalid(
                    i,
                    format!("{name} shape {s:?} is not [{b}, {t}, one of {allowed:?}]"),
                )),
            }
        };
        let decay_width = width(4, [self.kv_heads, self.kv_heads * dk], "decay")?;
        let beta_width = width(5, [self.kv_heads, 1], "beta")?;
        if self.gating != (decay_width > 0) || self.delta != (beta_width > 0) {
            return Err(OpError::invalid(
                if self.gating != (decay_width > 0) {
                    4
                } else {
                    5
                },
                "decay is required exactly by the gated rules and beta by the delta rules",
            ));
        }
        scratch_len(&[b, t, self.q_heads, dv.max(dk).max(1)])?;
        scratch_len(&[b, self.kv_heads, dk, dv])?;
        Ok(LinDims {
            batch: b,
            len: t,
            dk,
            dv,
            decay_width: if decay_width == self.kv_heads { 1 } else { dk },
            beta_width: if beta_width == 1 { 1 } else { self.kv_heads },
        })
    }

    fn load<F: Float>(&self, inputs: &Inputs, d: &LinDims) -> OpResult<LinInputs<F>> {
        let opt = |i: usize| -> OpResult<Option<Vec<F>>> {
            inputs.opt_tensor(i)?.map(|t| elements(t, i)).transpose()
        };
        let state = opt(3)?;
        let want = d.batch * self.kv_heads * d.dk * d.dv;
        if let (Some(s), Some(t)) = (&state, inputs.opt_tensor(3)?) {
            if s.len() != want || t.rank() != 4 {
                return Err(OpError::invalid(
                    3,
                    format!(
                        "past_state shape {:?} is not [{}, {}, {}, {}]",
                        t.shape(),
                        d.batch,
                        self.kv_heads,
                        d.dk,
                        d.dv
                    ),
                ));
            }
        }
        Ok(LinInputs {
            q: elements(inputs.tensor(0)?, 0)?,
            k: elements(inputs.tensor(1)?, 1)?,
            v: elements(inputs.tensor(2)?, 2)?,
            state,
            decay: opt(4)?,
            beta: opt(5)?,
        })
    }

    /// Runs the recurrence of one (batch, kv head): returns its final state and the outputs
    /// `[group, len, d_v]` of its query heads.
    fn head<F: Float>(
        &self,
        x: &LinInputs<F>,
        d: &LinDims,
        b: usize,
        kh: usize,
    ) -> (Vec<F>, Vec<F>) {
        let (dk, dv, t_len) = (d.dk, d.dv, d.len);
        let (hq, hk) = (self.q_heads, self.kv_heads);
        let group = hq / hk;
        let mut s = match &x.state {
            Some(st) => st[(b * hk + kh) * dk * dv..][..dk * dv].to_vec(),
            None => vec![F::ZERO; dk * dv],
        };
        let scale = F::from_f64(self.scale.map_or(1.0 / (dk as f64).sqrt(), f64::from));
        let mut out = vec![F::ZERO; group * t_len * dv];
        let mut vt = vec![F::ZERO; dv];
        for t in 0..t_len {
            let bt = b * t_len + t;
            let k = &x.k[(bt * hk + kh) * dk..][..dk];
            vt.copy_from_slice(&x.v[(bt * hk + kh) * dv..][..dv]);
            if let Some(decay) = &x.decay {
                let g = &decay[(bt * hk + kh) * d.decay_width..][..d.decay_width];
                for (di, row) in s.chunks_mut(dv).enumerate() {
                    let f = g[if d.decay_width == 1 { 0 } else { di }].exp();
                    row.iter_mut().for_each(|x| *x *= f);
                }
            }
            if let Some(beta) = &x.beta {
                let bw = d.beta_width;
                let bv = beta[bt * bw + if bw == 1 { 0 } else { kh }];
                for (m, v) in vt.iter_mut().enumerate() {
                    let retrieved = (0..dk).fold(F::ZERO, |a, di| a + s[di * dv + m] * k[di]);
                    *v = bv * (*v - retrieved);
                }
            }
            for (row, &kd) in s.chunks_mut(dv).zip(k) {
                row.iter_mut().zip(&vt).for_each(|(x, &v)| *x += kd * v);
            }
            for g in 0..group {
                let q = &x.q[(bt * hq + kh * group + g) * dk..][..dk];
                let o = &mut out[(g * t_len + t) * dv..][..dv];
                for (m, o) in o.iter_mut().enumerate() {
                    *o = scale * (0..dk).fold(F::ZERO, |a, di| a + q[di] * s[di * dv + m]);
                }
            }
        }
        (s, out)
    }

    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Vec<Value>> {
        let d = self.dims(inputs)?;
        let x = self.load::<F>(inputs, &d)?;
        let (hq, hk, group) = (self.q_heads, self.kv_heads, self.q_heads / self.kv_heads);
        let mut slots: Vec<(Vec<F>, Vec<F>)> = vec![(Vec::new(), Vec::new()); d.batch * hk];
        ctx.par_chunks_mut(&mut slots, 1, |i, slot| {
            if let Some(s) = slot.first_mut() {
                *s = self.head(&x, &d, i / hk, i % hk);
            }
        });
        let mut y = vec![F::ZERO; d.batch * d.len * hq * d.dv];
        let mut state = Vec::with_capacity(d.batch * hk * d.dk * d.dv);
        for (i, (s, out)) in slots.into_iter().enumerate() {
            let (b, kh) = (i / hk, i % hk);
            state.extend_from_slice(&s);
            for g in 0..group {
                for t in 0..d.len {
                    let dst = ((b * d.len + t) * hq + kh * group + g) * d.dv;
                    y[dst..dst + d.dv].copy_from_slice(&out[(g * d.len + t) * d.dv..][..d.dv]);
                }
            }
        }
        Ok(vec![
            Tensor::from_vec(y, &[d.batch, d.len, hq * d.dv])?.into(),
            Tensor::from_vec(state, &[d.batch, hk, d.dk, d.dv])?.into(),
        ])
    }
}

impl Operator for LinearAttention {
    op_boilerplate!("LinearAttention");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        // present_state keeps past_state's dtype (query's without one): cast back only when
        // past_state is absent or of the query's dtype.
        let past_dt = inputs.opt_tensor(3)?.map(Tensor::dtype);
        let q_dt = inputs.tensor(0)?.dtype();
        let outputs = if past_dt.is_none_or(|d| d == q_dt) {
            2
        } else {
            1
        };
        precision_dispatch(
            ctx,
            inputs,
            outputs,
            |c, i, _| self.run::<f32>(c, i),
            |c, i| self.run::<f64>(c, i),
        )
    }
}

// ----- CausalConvWithState ------------------------------------------------------------------

/// `CausalConvWithState`: depthwise causal conv over `[batch, channels, len]` with a carried
/// `[batch, channels, k - 1]` state and optional fused SiLU.
#[derive(Debug, Clone, Copy)]
pub struct CausalConv {
    /// Apply `x * sigmoid(x)` to the output.
    pub silu: bool,
}

fn build_causal_conv(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let silu = match ctx.attrs.string_or("activation", "none")?.as_str() {
        "none" => false,
        "silu" | "swish" => true,
        other => {
            return Err(OpError::attribute(
                "activation",
                format!("unknown activation '{other}'"),
            ))
        }
    };
    Ok(Box::new(CausalConv { silu }))
}

impl CausalConv {
    fn run<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        prec: Precision,
    ) -> OpResult<Vec<Value>> {
        let x_t = inputs.tensor(0)?;
        let w_t = inputs.tensor(1)?;
        let (b, c, len) = match *x_t.shape() {
            [b, c, l] => (b, c, l),
            ref s => return Err(OpError::invalid(0, format!("expected rank 3, got {s:?}"))),
        };
        let k = match *w_t.shape() {
            [wc, 1, k] if wc == c && k > 0 => k,
            ref s => {
                return Err(OpError::invalid(
                    1,
                    format!("weight shape {s:?} is not [{c}, 1, k] with k >= 1"),
                ))
            }
        };
        scratch_len(&[b, c, len + k])?;
        let x = elements::<F>(x_t, 0)?;
        let w = elements::<F>(w_t, 1)?;
        let bias = match inputs.opt_tensor(2)? {
            Some(t) if t.len() == c => Some(elements::<F>(t, 2)?),
            Some(t) => {
                return Err(OpError::invalid(
                    2,
                    format!("bias shape {:?} is not [{c}]", t.shape()),
                ))
            }
            None => None,
        };
        let past = match inputs.opt_tensor(3)? {
            Some(t) if t.shape() == [b, c, k - 1] => Some(elements::<F>(t, 3)?),
            Some(t) => {
                return Err(OpError::invalid(
                    3,
                    format!(
                        "past_state shape {:?} is not [{b}, {c}, {}]",
                        t.shape(),
                        k - 1
                    ),
                ))
            }
            None => None,
        };
        let padded_len = len + k - 1;
        let mut y = vec![F::ZERO; b * c * len];
        let mut state = vec![F::ZERO; b * c * (k - 1)];
        let silu = self.silu;
        ctx.par_chunks_mut(&mut y, len.max(1), |bc, out| {
            let mut padded = vec![F::ZERO; padded_len];
            if let Some(p) = &past {
                padded[..k - 1].copy_from_slice(&p[bc * (k - 1)..][..k - 1]);
            }
            padded[k - 1..].copy_from_slice(&x[bc * len..][..len]);
            let wk = &w[bc % c * k..][..k];
            let b0 = bias.as_ref().map_or(F::ZERO, |bs| bs[bc % c]);
            for (o, win) in out.iter_mut().zip(padded.windows(k)) {
                let acc = win.iter().zip(wk).fold(b0, |a, (&v, &w)| a + v * w);
                let acc = prec.round(acc);
                *o = if silu {
                    acc / (F::ONE + (-acc).exp())
                } else {
                    acc
                };
            }
        });
        for bc in 0..b * c {
            // The state is the last k - 1 entries of [past | x].
            let dst = &mut state[bc * (k - 1)..][..k - 1];
            let take_x = len.min(k - 1);
            let from_past = k - 1 - take_x;
            if let Some(p) = &past {
                dst[..from_past].copy_from_slice(&p[bc * (k - 1) + take_x..][..from_past]);
            }
            dst[from_past..].copy_from_slice(&x[bc * len + len - take_x..][..take_x]);
        }
        Ok(vec![
            Tensor::from_vec(y, &[b, c, len])?.into(),
            Tensor::from_vec(state, &[b, c, k - 1])?.into(),
        ])
    }
}

impl Operator for CausalConv {
    op_boilerplate!("CausalConvWithState");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        precision_dispatch(
            ctx,
            inputs,
            2,
            |c, i, p| self.run::<f32>(c, i, p),
            |c, i| self.run::<f64>(c, i, Precision::Full),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, close, eval, f64s, s, t};
    use crate::Attribute;

    fn heads(rule: &str) -> Vec<(&'static str, Attribute)> {
        vec![
            ("q_num_heads", Attribute::Int(1)),
            ("kv_num_heads", Attribute::Int(1)),
            ("scale", Attribute::Float(1.0)),
            ("update_rule", s(rule)),
        ]
    }

    #[test]
    fn linear_attention_rules_by_hand() {
        let (q, k, v) = (
            t(&[1., 1.], &[1, 2, 1]),
            t(&[1., 2.], &[1, 2, 1]),
            t(&[3., 4.], &[1, 2, 1]),
        );
        // linear: S = 3, then 3 + 2 * 4 = 11.
        let op = build("LinearAttention", 27, &heads("linear"), 3, 2);
        let out = eval(
            op.as_ref(),
            &[Some(q.clone()), Some(k.clone()), Some(v.clone())],
        );
        close(&f64s(&out[0]), &[3., 11.], 1e-6);
        assert_eq!(out[1].shape(), &[1, 1, 1, 1]);
        // gated: the state halves before the second write.
        let op = build("LinearAttention", 27, &heads("gated"), 5, 2);
        let decay = t(&[0., 0.5f32.ln()], &[1, 2, 1]);
        let ins = [
            Some(q.clone()),
            Some(k.clone()),
            Some(v.clone()),
            None,
            Some(decay),
        ];
        close(&f64s(&eval(op.as_ref(), &ins)[0]), &[3., 9.5], 1e-6);
        // delta: the second write is 4 - S k = 4 - 6 = -2, so S = 3 + 2 * -2 = -1.
        let op = build("LinearAttention", 27, &heads("delta"), 6, 2);
        let beta = t(&[1., 1.], &[1, 2, 1]);
        let ins = [Some(q), Some(k), Some(v), None, None, Some(beta)];
        let out = eval(op.as_ref(), &ins);
        close(&f64s(&out[0]), &[3., -1.], 1e-6);
        close(&f64s(&out[1]), &[-1.], 1e-6);
    }

    #[test]
    fn linear_attention_validates_inputs() {
        let op = build("LinearAttention", 27, &heads("gated_delta"), 3, 2);
        let x = t(&[1., 1.], &[1, 2, 1]);
        let err = op
            .eval(
                &crate::EvalCtx::default(),
                crate::Inputs::from_tensors([x.clone(), x.clone(), x]),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("decay"), "{err}");
    }

    #[test]
    fn causal_conv_with_and_without_state() {
        let op = build("CausalConvWithState", 27, &[], 4, 2);
        let x = t(&[1., 2., 3.], &[1, 1, 3]);
        let w = t(&[1., 10.], &[1, 1, 2]);
        let out = eval(op.as_ref(), &[Some(x.clone()), Some(w.clone())]);
        close(&f64s(&out[0]), &[10., 21., 32.], 1e-6);
        close(&f64s(&out[1]), &[3.], 0.);
        let ins = [
            Some(x),
            Some(w),
            Some(t(&[1.], &[1])),
            Some(t(&[5.], &[1, 1, 1])),
        ];
        let out = eval(op.as_ref(), &ins);
        close(&f64s(&out[0]), &[16., 22., 33.], 1e-6);
        let op = build(
            "CausalConvWithState",
            27,
            &[("activation", s("silu"))],
            2,
            2,
        );
        let out = eval(
            op.as_ref(),
            &[Some(t(&[1.], &[1, 1, 1])), Some(t(&[2.], &[1, 1, 1]))],
        );
        close(&f64s(&out[0]), &[2. / (1. + (-2f64).exp())], 1e-6);
        assert_eq!(out[1].shape(), &[1, 1, 0]);
    }
}
