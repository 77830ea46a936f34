//! Recurrent layers: `RNN`, `GRU` and `LSTM` (all directions, both layouts, optional bias,
//! sequence lengths, initial states, peepholes, custom activations and clipping).
//!
//! Computation runs in f64 over contiguous copies of the inputs; outputs are cast back to the
//! input dtype. Sequences shorter than the time axis (`sequence_lens`) leave zeros in `Y`
//! past their end, and their `Y_h`/`Y_c` is the state after their last valid step.

use crate::kernels::linalg::{gemm, MatMut, MatRef};
use crate::{Attributes, Value};
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator};
use strata_tensor::{DType, Tensor};

/// Registers `RNN`, `GRU` and `LSTM`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "RNN", 1, |c| build(c, Kind::Rnn));
    registry.register("", "GRU", 1, |c| build(c, Kind::Gru));
    registry.register("", "LSTM", 1, |c| build(c, Kind::Lstm));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rnn,
    Gru,
    Lstm,
}

impl Kind {
    fn gates(self) -> usize {
        match self {
            Kind::Rnn => 1,
            Kind::Gru => 3,
            Kind::Lstm => 4,
        }
    }
    fn activations(self) -> usize {
        match self {
            Kind::Rnn => 1,
            Kind::Gru => 2,
            Kind::Lstm => 3,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Rnn => "RNN",
            Kind::Gru => "GRU",
            Kind::Lstm => "LSTM",
        }
    }
}

/// An activation function of a recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
    Affine(f64, f64),
}

impl Act {
    fn parse(name: &str, alpha: Option<f32>, beta: Option<f32>) -> OpResult<Act> {
        let a = |d: f64| alpha.map_or(d, f64::from);
        let b = |d: f64| beta.map_or(d, f64::from);
        Ok(match name.to_ascii_lowercase().as_str() {
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "relu" => Act::Relu,
            "leakyrelu" => Act::LeakyRelu(a(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(a(1.0)),
            "scaledtanh" => Act::ScaledTanh(a(1.0), b(1.0)),
            "hardsigmoid" => Act::HardSigmoid(a(0.2), b(0.5)),
            "elu" => Act::Elu(a(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            "affine" => Act::Affine(a(1.0), b(0.0)),
            other => {
                return Err(OpError::attribute(
                    "activations",
                    format!("unknown activation '{other}'"),
                ))
            }
        })
    }

    fn apply(self, x: f64) -> f64 {
        match self {
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Tanh => x.tanh(),
            Act::Relu => x.max(0.0),
            Act::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => (1.0 + x.exp()).ln(),
            Act::Affine(a, b) => a * x + b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

/// `RNN`, `GRU` or `LSTM` with parsed attributes.
#[derive(Debug, Clone)]
pub struct Recurrent {
    kind: Kind,
    hidden: Option<usize>,
    direction: Direction,
    /// `kind.activations()` per direction.
    acts: Vec<Act>,
    clip: Option<f64>,
    linear_before_reset: bool,
    input_forget: bool,
    layout: usize,
    outputs: usize,
}

fn default_acts(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Rnn => vec!["Tanh"],
        Kind::Gru => vec!["Sigmoid", "Tanh"],
        Kind::Lstm => vec!["Sigmoid", "Tanh", "Tanh"],
    }
}

fn parse_acts(a: &Attributes, kind: Kind, dirs: usize) -> OpResult<Vec<Act>> {
    let per = kind.activations();
    let names: Vec<String> = match a.strings("activations")? {
        Some(v) if !v.is_empty() => v,
        _ => default_acts(kind).iter().map(|s| s.to_string()).collect(),
    };
    let names: Vec<String> = if names.len() == per && dirs == 2 {
        names.iter().chain(names.iter()).cloned().collect()
    } else {
        names
    };
    if names.len() != per * dirs {
        return Err(OpError::attribute(
            "activations",
            format!(
                "{} needs {} activations for {dirs} direction(s), got {}",
                kind.name(),
                per * dirs,
                names.len()
            ),
        ));
    }
    let alphas = a.floats_or("activation_alpha", Vec::new())?;
    let betas = a.floats_or("activation_beta", Vec::new())?;
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Act::parse(n, alphas.get(i).copied(), betas.get(i).copied()))
        .collect()
}

fn build(ctx: &BuildCtx<'_>, kind: Kind) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let direction = match a.string_or("direction", "forward")?.as_str() {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        other => {
            return Err(OpError::attribute(
                "direction",
                format!("expected forward, reverse or bidirectional, got '{other}'"),
            ))
        }
    };
    let dirs = if direction == Direction::Bidirectional {
        2
    } else {
        1
    };
    let hidden = match a.int("hidden_size")? {
        Some(h) if h <= 0 => {
            return Err(OpError::attribute(
                "hidden_size",
                format!("must be positive, got {h}"),
            ))
        }
        Some(h) => Some(h as usize),
        None => None,
    };
    let clip = match a.float("clip")? {
        Some(c) if c <= 0.0 => {
            return Err(OpError::attribute(
                "clip",
                format!("must be positive, got {c}"),
            ))
        }
        c => c.map(f64::from),
    };
    let layout = a.int_or("layout", 0)?;
    if !(0..=1).contains(&layout) {
        return Err(OpError::attribute(
            "layout",
            format!("must be 0 or 1, got {layout}"),
        ));
    }
    Ok(Box::new(Recurrent {
        kind,
        hidden,
        direction,
        acts: parse_acts(a, kind, dirs)?,
        clip,
        linear_before_reset: a.int_or("linear_before_reset", 0)? != 0,
        input_forget: a.int_or("input_forget", 0)? != 0,
        layout: layout as usize,
        outputs: ctx.output_count.max(1),
    }))
}

fn f64_data(t: &Tensor) -> OpResult<Vec<f64>> {
    Ok(t.cast(DType::F64)?.contiguous().to_vec::<f64>()?)
}

fn check_shape(t: &Tensor, index: usize, name: &str, want: &[usize]) -> OpResult<()> {
    if t.shape() != want {
        return Err(OpError::invalid(
            index,
            format!("{name} must have shape {want:?}, got {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// `out[r] = sum_k w[(row0 + r) * cols + k] * x[k]` for `r < out.len()`, added to `out`.
fn matvec_add(out: &mut [f64], w: &[f64], row0: usize, cols: usize, x: &[f64]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[(row0 + r) * cols..][..cols];
        *o += row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
    }
}

impl Recurrent {
    fn clip(&self, x: f64) -> f64 {
        match self.clip {
            Some(c) => x.clamp(-c, c),
            None => x,
        }
    }

    fn f(&self, d: usize, i: usize, x: f64) -> f64 {
        self.acts[d * self.kind.activations() + i].apply(self.clip(x))
    }
}

impl Operator for Recurrent {
    fn op_type(&self) -> &str {
        self.kind.name()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let xt = inputs.tensor(0)?;
        let dt = xt.dtype();
        if !dt.is_float() {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: dt,
            });
        }
        if xt.rank() != 3 {
            return Err(OpError::invalid(
                0,
                format!("X must have rank 3, got shape {:?}", xt.shape()),
            ));
        }
        let (seq, batch, isz) = if self.layout == 0 {
            (xt.shape()[0], xt.shape()[1], xt.shape()[2])
        } else {
            (xt.shape()[1], xt.shape()[0], xt.shape()[2])
        };
        let dirs = if self.direction == Direction::Bidirectional {
            2
        } else {
            1
        };
        let g = self.kind.gates();
        let rt = inputs.tensor(2)?;
        let hid = match self.hidden {
            Some(h) => h,
            None => *rt.shape().last().unwrap_or(&0),
        };
        check_shape(inputs.tensor(1)?, 1, "W", &[dirs, g * hid, isz])?;
        check_shape(rt, 2, "R", &[dirs, g * hid, hid])?;
        let x = f64_data(xt)?;
        let w = f64_data(inputs.tensor(1)?)?;
        let r = f64_data(rt)?;
        let b = match inputs.opt_tensor(3)? {
            Some(t) => {
                check_shape(t, 3, "B", &[dirs, 2 * g * hid])?;
                f64_data(t)?
            }
            None => vec![0.0; dirs * 2 * g * hid],
        };
        let lens: Vec<usize> = match inputs.opt_tensor(4)? {
            Some(t) => {
                let v = t.to_i64_vec()?;
                if v.len() != batch {
                    return Err(OpError::invalid(
                        4,
                        format!("sequence_lens has {} entries for batch {batch}", v.len()),
                    ));
                }
                v.iter()
                    .map(|&l| {
                        if l < 0 || l as usize > seq {
                            Err(OpError::invalid(
                                4,
                                format!("sequence length {l} outside 0..={seq}"),
                            ))
                        } else {
                            Ok(l as usize)
                        }
                    })
                    .collect::<OpResult<_>>()?
            }
            None => vec![seq; batch],
        };
        let state_shape = if self.layout == 0 {
            [dirs, batch, hid]
        } else {
            [batch, dirs, hid]
        };
        // State index of (direction, batch) in the layout's state tensor.
        let sidx = |d: usize, bi: usize| {
            if self.layout == 0 {
                (d * batch + bi) * hid
            } else {
                (bi * dirs + d) * hid
            }
        };
        let read_state = |i: usize, name: &str| -> OpResult<Vec<f64>> {
            match inputs.opt_tensor(i)? {
                Some(t) => {
                    check_shape(t, i, name, &state_shape)?;
                    f64_data(t)
                }
                None => Ok(vec![0.0; dirs * batch * hid]),
            }
        };
        let h0 = read_state(5, "initial_h")?;
        let (c0, p) = if self.kind == Kind::Lstm {
            let p = match inputs.opt_tensor(7)? {
                Some(t) => {
                    check_shape(t, 7, "P", &[dirs, 3 * hid])?;
                    f64_data(t)?
                }
                None => vec![0.0; dirs * 3 * hid],
            };
            (read_state(6, "initial_c")?, p)
        } else {
            (Vec::new(), Vec::new())
        };

        let mut y = vec![0.0; seq * dirs * batch * hid];
        let mut yh = vec![0.0; dirs * batch * hid];
        let mut yc = vec![0.0; dirs * batch * hid];
        let yidx = |t: usize, d: usize, bi: usize| {
            if self.layout == 0 {
                ((t * dirs + d) * batch + bi) * hid
            } else {
                ((bi * seq + t) * dirs + d) * hid
            }
        };
        let gh = g * hid;
        let mut gates = vec![0.0; gh];
        let mut tmp = vec![0.0; hid];
        for d in 0..dirs {
            let reverse = self.direction == Direction::Reverse || d == 1;
            let wd = &w[d * gh * isz..][..gh * isz];
            let rd = &r[d * gh * hid..][..gh * hid];
            let wb = &b[d * 2 * gh..][..gh];
            let rb = &b[d * 2 * gh + gh..][..gh];
            // Input projections of every (time, batch) row at once: xw = X * W^T.
            let rows = seq * batch;
            let mut xw = vec![0.0; rows * gh];
            gemm(
                1.0,
                MatRef::row_major(&x, rows, isz),
                MatRef::row_major(wd, gh, isz).t(),
                0.0,
                MatMut::row_major(&mut xw, rows, gh),
            )?;
            for bi in 0..batch {
                let mut h = h0[sidx(d, bi)..][..hid].to_vec();
                let mut c = if self.kind == Kind::Lstm {
                    c0[sidx(d, bi)..][..hid].to_vec()
                } else {
                    Vec::new()
                };
                let len = lens[bi];
                for step in 0..len {
                    let t = if reverse { len - 1 - step } else { step };
                    let row = if self.layout == 0 {
                        t * batch + bi
                    } else {
                        bi * seq + t
                    };
                    for ((g, &p), &bias) in gates.iter_mut().zip(&xw[row * gh..][..gh]).zip(wb) {
                        *g = p + bias;
                    }
                    match self.kind {
                        Kind::Rnn => {
                            matvec_add(&mut gates, rd, 0, hid, &h);
                            for j in 0..hid {
                                h[j] = self.f(d, 0, gates[j] + rb[j]);
                            }
                        }
                        Kind::Gru => {
                            // z and r gates see R*h; the h gate depends on the reset mode.
                            matvec_add(&mut gates[..2 * hid], rd, 0, hid, &h);
                            let mut z = vec![0.0; hid];
                            let mut rg = vec![0.0; hid];
                            for j in 0..hid {
                                z[j] = self.f(d, 0, gates[j] + rb[j]);
                                rg[j] = self.f(d, 0, gates[hid + j] + rb[hid + j]);
                            }
                            tmp.iter_mut().for_each(|v| *v = 0.0);
                            if self.linear_before_reset {
                                matvec_add(&mut tmp, rd, 2 * hid, hid, &h);
                                for j in 0..hid {
                                    tmp[j] = rg[j] * (tmp[j] + rb[2 * hid + j]);
                                }
                            } else {
                                let rh: Vec<f64> = (0..hid).map(|j| rg[j] * h[j]).collect();
                                matvec_add(&mut tmp, rd, 2 * hid, hid, &rh);
                                for j in 0..hid {
                                    tmp[j] += rb[2 * hid + j];
                                }
                            }
                            for j in 0..hid {
                                let hh = self.f(d, 1, gates[2 * hid + j] + tmp[j]);
                                h[j] = (1.0 - z[j]) * hh + z[j] * h[j];
                            }
                        }
                        Kind::Lstm => {
                            matvec_add(&mut gates, rd, 0, hid, &h);
                            let pd = &p[d * 3 * hid..][..3 * hid];
                            for j in 0..hid {
                                let pre = |k: usize| gates[k * hid + j] + rb[k * hid + j];
                                let ig = self.f(d, 0, pre(0) + pd[j] * c[j]);
                                let fg = if self.input_forget {
                                    1.0 - ig
                                } else {
                                    self.f(d, 0, pre(2) + pd[2 * hid + j] * c[j])
                                };
                                let cg = self.f(d, 1, pre(3));
                                let cn = fg * c[j] + ig * cg;
                                let og = self.f(d, 0, pre(1) + pd[hid + j] * cn);
                                c[j] = cn;
                                h[j] = og * self.f(d, 2, cn);
                            }
                        }
                    }
                    y[yidx(t, d, bi)..][..hid].copy_from_slice(&h);
                }
                yh[sidx(d, bi)..][..hid].copy_from_slice(&h);
                if self.kind == Kind::Lstm {
                    yc[sidx(d, bi)..][..hid].copy_from_slice(&c);
                }
            }
        }
        let yshape = if self.layout == 0 {
            [seq, dirs, batch, hid]
        } else {
            [batch, seq, dirs, hid]
        };
        let max_out = if self.kind == Kind::Lstm { 3 } else { 2 };
        let mut out = vec![Tensor::from_vec(y, &yshape)?.cast(dt)?.into()];
        if self.outputs >= 2 {
            out.push(Tensor::from_vec(yh, &state_shape)?.cast(dt)?.into());
        }
        if self.outputs >= 3 && max_out == 3 {
            out.push(Tensor::from_vec(yc, &state_shape)?.cast(dt)?.into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, close, eval, f64s, pat, s, t};
    use crate::Attribute;
    use strata_tensor::Tensor;

    fn p(n: usize, seed: i64, scale: f32, shape: &[usize]) -> Option<Tensor> {
        let v: Vec<f32> = pat(n, seed).iter().map(|x| x * scale).collect();
        Some(t(&v, shape))
    }

    fn check(out: &[Tensor], want: &[(&[usize], &[f64])]) {
        assert_eq!(out.len(), want.len());
        for (o, (shape, vals)) in out.iter().zip(want) {
            assert_eq!(o.shape(), *shape);
            close(&f64s(o), vals, 1e-5);
        }
    }

    /// Inputs shared by the cases: T=2, batch=2, input 3, hidden 2 (values from `pat`).
    fn ins(g: usize, d: usize, lstm: bool) -> Vec<Option<Tensor>> {
        let h = 2;
        let mut v = vec![
            p(12, 1, 1.0, &[2, 2, 3]),
            p(d * g * h * 3, 2, 0.5, &[d, g * h, 3]),
            p(d * g * h * h, 3, 0.5, &[d, g * h, h]),
            p(d * 2 * g * h, 4, 0.5, &[d, 2 * g * h]),
            None,
            p(d * 2 * h, 5, 1.0, &[d, 2, h]),
        ];
        if lstm {
            v.push(p(d * 2 * h, 6, 1.0, &[d, 2, h]));
            v.push(p(d * 3 * h, 7, 1.0, &[d, 3 * h]));
        }
        v
    }

    // Expected values from onnx.reference (ReferenceEvaluator, opset 22).
    #[test]
    fn rnn_forward_and_bidirectional() {
        let op = build("RNN", 22, &[("hidden_size", Attribute::Int(2))], 6, 2);
        let out = eval(op.as_ref(), &ins(1, 1, false));
        let yh = [-0.560849, 0.146518, 0.856438, 0.921096];
        let y = [
            0.526968, 0.474316, 0.316835, 0.295596, -0.560849, 0.146518, 0.856438, 0.921096,
        ];
        check(&out, &[(&[2, 1, 2, 2], &y), (&[1, 2, 2], &yh)]);
        let op = build(
            "RNN",
            14,
            &[
                ("hidden_size", Attribute::Int(2)),
                ("direction", s("bidirectional")),
            ],
            6,
            2,
        );
        let out = eval(op.as_ref(), &ins(1, 2, false));
        let y = [
            0.526968, 0.474316, 0.316835, 0.295596, 0.526068, 0.753214, -0.761533, 0.145873,
            -0.560849, 0.146518, 0.856438, 0.921096, -0.154991, -0.691885, -0.777518, 0.570617,
        ];
        let yh = [
            -0.560849, 0.146518, 0.856438, 0.921096, 0.526068, 0.753214, -0.761533, 0.145873,
        ];
        check(&out, &[(&[2, 2, 2, 2], &y), (&[2, 2, 2], &yh)]);
    }

    #[test]
    fn rnn_layout_1_without_bias() {
        let v = ins(1, 1, false);
        let x = v[0]
            .as_ref()
            .unwrap()
            .permute(&[1, 0, 2])
            .unwrap()
            .contiguous();
        let op = build(
            "RNN",
            14,
            &[
                ("hidden_size", Attribute::Int(2)),
                ("layout", Attribute::Int(1)),
            ],
            3,
            2,
        );
        let out = eval(op.as_ref(), &[Some(x), v[1].clone(), v[2].clone()]);
        let y = [
            -0.391917, -0.281272, -0.225457, -0.276159, -0.237561, -0.430848, 0.927961, 0.847475,
        ];
        let yh = [-0.225457, -0.276159, 0.927961, 0.847475];
        check(&out, &[(&[2, 2, 1, 2], &y), (&[2, 1, 2], &yh)]);
    }

    #[test]
    fn gru_linear_before_reset_bidirectional_and_reverse() {
        let op = build(
            "GRU",
            22,
            &[
                ("hidden_size", Attribute::Int(2)),
                ("direction", s("bidirectional")),
                ("linear_before_reset", Attribute::Int(1)),
            ],
            6,
            2,
        );
        let out = eval(op.as_ref(), &ins(3, 2, false));
        let y = [
            -0.408828, -0.212952, 0.31361, 0.282823, 0.278206, 0.167512, 0.058034, 0.113771,
            -0.125032, 0.550848, 0.191737, 0.267695, 0.896335, 0.225136, -1.003176, -0.219736,
        ];
        let yh = [
            -0.125032, 0.550848, 0.191737, 0.267695, 0.278206, 0.167512, 0.058034, 0.113771,
        ];
        check(&out, &[(&[2, 2, 2, 2], &y), (&[2, 2, 2], &yh)]);

        // Default reset, reverse, no bias: W and R are the first 3H rows of the LSTM-sized
        // patterns.
        let w = p(24, 2, 0.5, &[1, 8, 3])
            .unwrap()
            .slice_axis(1, 0, 6, 1)
            .unwrap();
        let r = p(16, 3, 0.5, &[1, 8, 2])
            .unwrap()
            .slice_axis(1, 0, 6, 1)
            .unwrap();
        let op = build(
            "GRU",
            7,
            &[
                ("hidden_size", Attribute::Int(2)),
                ("direction", s("reverse")),
            ],
            3,
            2,
        );
        let out = eval(op.as_ref(), &[p(12, 1, 1.0, &[2, 2, 3]), Some(w), Some(r)]);
        let y = [
            -0.195831, -0.152994, 0.347164, 0.309685, 0.379069, 0.404202, -0.057476, -0.104892,
        ];
        check(&out, &[(&[2, 1, 2, 2], &y), (&[1, 2, 2], &y[..4])]);
    }

    #[test]
    fn lstm_peepholes_forward_and_bidirectional() {
        let op = build("LSTM", 14, &[("hidden_size", Attribute::Int(2))], 8, 3);
        let out = eval(op.as_ref(), &ins(4, 1, true));
        let y = [
            0.066849, -0.252529, -0.037031, -0.000742, -0.009527, -0.337475, 0.137383, -0.370232,
        ];
        let yc = [-0.068626, -0.612516, 0.754792, -0.631155];
        check(
            &out,
            &[
                (&[2, 1, 2, 2], &y),
                (&[1, 2, 2], &y[4..]),
                (&[1, 2, 2], &yc),
            ],
        );
        let op = build(
            "LSTM",
            22,
            &[
                ("hidden_size", Attribute::Int(2)),
                ("direction", s("bidirectional")),
            ],
            8,
            3,
        );
        let out = eval(op.as_ref(), &ins(4, 2, true));
        let y = [
            0.066849, -0.252529, -0.037031, -0.000742, -0.211418, 0.129222, -0.570985, -0.208549,
            -0.009527, -0.337475, 0.137383, -0.370232, -0.454551, 0.327336, -0.261927, -0.067837,
        ];
        let yh = [
            -0.009527, -0.337475, 0.137383, -0.370232, -0.211418, 0.129222, -0.570985, -0.208549,
        ];
        let yc = [
            -0.068626, -0.612516, 0.754792, -0.631155, -0.368341, 0.367608, -0.74096, -0.51639,
        ];
        check(
            &out,
            &[(&[2, 2, 2, 2], &y), (&[2, 2, 2], &yh), (&[2, 2, 2], &yc)],
        );
    }

    #[test]
    fn sequence_lens_zero_pad_and_bad_attributes() {
        // One step of a 2-step sequence for batch 0: Y[1, .., 0] is zero and Y_h equals Y[0].
        let mut v = ins(1, 1, false);
        v[4] = Some(Tensor::from_vec(vec![1i32, 2], &[2]).unwrap());
        let op = build("RNN", 22, &[("hidden_size", Attribute::Int(2))], 6, 2);
        let out = eval(op.as_ref(), &v);
        let y = f64s(&out[0]);
        assert_eq!(&y[4..6], &[0.0, 0.0]);
        close(&f64s(&out[1])[..2], &y[..2], 1e-12);
        close(&f64s(&out[1])[2..], &[0.856438, 0.921096], 1e-5);
        let err =
            crate::kernels::nn::testutil::build_err("LSTM", 22, &[("direction", s("sideways"))]);
        assert!(err.contains("direction"), "{err}");
    }
}
