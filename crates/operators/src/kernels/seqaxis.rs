//! Ops that move whole slices along a sequence (time) axis: `ReverseSequence` (reverse the
//! first `len[b]` steps of each batch entry) and `TensorScatter` (write an update into a
//! fixed-size KV cache at per-batch positions, linearly or circularly).
//!
//! Both copy raw element bytes, so every plain dtype works without per-type code.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{normalize_axis, Tensor};

/// Registers `ReverseSequence` and `TensorScatter`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "ReverseSequence", 10, build_reverse);
    registry.register("", "TensorScatter", 24, build_scatter);
}

fn plain_bytes(t: &Tensor, index: usize) -> OpResult<(Tensor, usize)> {
    if !t.dtype().is_plain() {
        return Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        });
    }
    Ok((t.contiguous(), t.dtype().size_of()))
}

// ----- ReverseSequence ----------------------------------------------------------------------

/// `ReverseSequence`: for each batch entry `b`, reverses the first `sequence_lens[b]` steps
/// along the time axis. The batch and time axes are 0 and 1, in either order.
#[derive(Debug, Clone, Copy)]
pub struct ReverseSequence {
    /// Whether the batch axis is 0 (and time 1) rather than the default 1 (time 0).
    pub batch_first: bool,
}

fn build_reverse(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let batch = ctx.attrs.int_or("batch_axis", 1)?;
    let time = ctx.attrs.int_or("time_axis", 0)?;
    let batch_first = match (batch, time) {
        (0, 1) => true,
        (1, 0) => false,
        _ => {
            return Err(OpError::attribute(
                "batch_axis",
                format!("batch_axis {batch} and time_axis {time} must be 0 and 1 in some order"),
            ))
        }
    };
    Ok(Box::new(ReverseSequence { batch_first }))
}

impl ReverseSequence {
    /// Checked per-batch lengths for `batch` entries of at most `steps` steps.
    fn lengths(lens: &Tensor, batch: usize, steps: usize) -> OpResult<Vec<usize>> {
        let v = lens.to_i64_vec()?;
        if v.len() != batch || lens.rank() != 1 {
            return Err(OpError::invalid(
                1,
                format!(
                    "sequence_lens must have shape [{batch}], got {:?}",
                    lens.shape()
                ),
            ));
        }
        v.iter()
            .map(|&l| {
                usize::try_from(l)
                    .ok()
                    .filter(|&l| l <= steps)
                    .ok_or_else(|| {
                        OpError::invalid(1, format!("sequence length {l} is outside 0..={steps}"))
                    })
            })
            .collect()
    }
}

impl Operator for ReverseSequence {
    crate::op_boilerplate!("ReverseSequence");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (x, size) = plain_bytes(inputs.tensor(0)?, 0)?;
        let &[d0, d1, ref rest @ ..] = x.shape() else {
            return Err(OpError::invalid(
                0,
                format!("input must have rank >= 2, got shape {:?}", x.shape()),
            ));
        };
        let (batch, steps) = if self.batch_first { (d0, d1) } else { (d1, d0) };
        let lens = Self::lengths(inputs.tensor(1)?, batch, steps)?;
        let inner = rest.iter().product::<usize>() * size;
        let src = x.raw_bytes()?;
        let mut out = ctx.alloc(x.dtype(), x.shape())?;
        let dst = out.raw_bytes_mut()?;
        dst.copy_from_slice(src);
        let offset = |b: usize, t: usize| {
            inner
                * if self.batch_first {
                    b * steps + t
                } else {
                    t * batch + b
                }
        };
        for (b, &len) in lens.iter().enumerate() {
            for t in 0..len {
                let (o, i) = (offset(b, t), offset(b, len - 1 - t));
                dst[o..o + inner].copy_from_slice(&src[i..i + inner]);
            }
        }
        Ok(vec![out.into()])
    }
}

// ----- TensorScatter ------------------------------------------------------------------------

/// `TensorScatter` (opset 24): `present = past` with `update` written along `axis` starting
/// at `write_indices[b]` for batch entry `b` (modulo the axis length in circular mode).
#[derive(Debug, Clone, Copy)]
pub struct TensorScatter {
    /// The sequence axis (may be negative; must not be the batch axis 0).
    pub axis: i64,
    /// Whether write positions wrap around the axis.
    pub circular: bool,
}

fn build_scatter(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let circular = match ctx.attrs.string_or("mode", "linear")?.as_str() {
        "linear" => false,
        "circular" => true,
        other => {
            return Err(OpError::attribute(
                "mode",
                format!("expected linear or circular, got '{other}'"),
            ))
        }
    };
    Ok(Box::new(TensorScatter {
        axis: ctx.attrs.int_or("axis", -2)?,
        circular,
    }))
}

/// `[outer, len, inner]` split of a shape around the sequence axis.
struct Split {
    outer: usize,
    seq_len: usize,
    per_batch: usize,
    max_len: usize,
    inner: usize,
}

impl TensorScatter {
    fn split(&self, past: &[usize], update: &[usize]) -> OpResult<Split> {
        let rank = past.len();
        let axis = normalize_axis(self.axis, rank)
            .ok()
            .filter(|&a| a > 0)
            .ok_or_else(|| {
                OpError::attribute(
                    "axis",
                    format!("{} is not a non-batch axis of rank {rank}", self.axis),
                )
            })?;
        let compatible = update.len() == rank
            && past.iter().zip(update).enumerate().all(
                |(i, (&p, &u))| {
                    if i == axis {
                        u <= p
                    } else {
                        u == p
                    }
                },
            );
        if !compatible {
            return Err(OpError::invalid(
                1,
                format!("update shape {update:?} does not fit cache shape {past:?} (axis {axis})"),
            ));
        }
        Ok(Split {
            outer: past[..axis].iter().product(),
            seq_len: update[axis],
            per_batch: past[1..axis].iter().product(),
            max_len: past[axis],
            inner: past[axis + 1..].iter().product(),
        })
    }

    /// The cache position of step `s` of batch entry `b` starting at `start`.
    fn position(&self, start: i64, s: usize, max_len: usize) -> OpResult<usize> {
        let raw = start + s as i64;
        let pos = if self.circular && max_len > 0 {
            raw.rem_euclid(max_len as i64)
        } else {
            raw
        };
        usize::try_from(pos)
            .ok()
            .filter(|&p| p < max_len)
            .ok_or_else(|| {
                OpError::invalid(
                    2,
                    format!("write index {start} + step {s} is outside the cache length {max_len}"),
                )
            })
    }
}

impl Operator for TensorScatter {
    crate::op_boilerplate!("TensorScatter");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (past, size) = plain_bytes(inputs.tensor(0)?, 0)?;
        let (update, _) = plain_bytes(inputs.tensor(1)?, 1)?;
        if update.dtype() != past.dtype() {
            return Err(OpError::UnsupportedDType {
                index: 1,
                dtype: update.dtype(),
            });
        }
        let sp = self.split(past.shape(), update.shape())?;
        let batch = past.shape().first().copied().unwrap_or(1);
        let starts = match inputs.opt_tensor(2)? {
            Some(w) if w.len() == batch => w.to_i64_vec()?,
            Some(w) => {
                return Err(OpError::invalid(
                    2,
                    format!(
                        "write_indices must have shape [{batch}], got {:?}",
                        w.shape()
                    ),
                ))
            }
            None => vec![0; batch],
        };
        let mut out = ctx.alloc(past.dtype(), past.shape())?;
        let dst = out.raw_bytes_mut()?;
        dst.copy_from_slice(past.raw_bytes()?);
        let src = update.raw_bytes()?;
        let row = sp.inner * size;
        let seq_len = sp.seq_len;
        for o in 0..sp.outer {
            let start = starts.get(o / sp.per_batch.max(1)).copied().unwrap_or(0);
            for s in 0..seq_len {
                let p = self.position(start, s, sp.max_len)?;
                let d = (o * sp.max_len + p) * row;
                let u = (o * seq_len + s) * row;
                dst[d..d + row].copy_from_slice(&src[u..u + row]);
            }
        }
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, eval, f64s, s, t};
    use crate::Attribute;
    use strata_tensor::Tensor;

    fn i64s(v: &[i64]) -> Option<Tensor> {
        Some(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap())
    }

    // Expected values from onnx.reference.
    #[test]
    fn reverse_sequence_time_and_batch_major() {
        // [time 3, batch 2]: batch 0 reverses 3 steps, batch 1 reverses 2.
        let x = t(&[0., 1., 2., 3., 4., 5.], &[3, 2]);
        let op = build("ReverseSequence", 10, &[], 2, 1);
        let y = eval(op.as_ref(), &[Some(x.clone()), i64s(&[3, 2])]);
        assert_eq!(f64s(&y[0]), [4., 3., 2., 1., 0., 5.]);
        let op = build(
            "ReverseSequence",
            10,
            &[
                ("batch_axis", Attribute::Int(0)),
                ("time_axis", Attribute::Int(1)),
            ],
            2,
            1,
        );
        // [batch 3, time 2]: lengths 1, 2, 0.
        let y = eval(op.as_ref(), &[Some(x.clone()), i64s(&[1, 2, 0])]);
        assert_eq!(f64s(&y[0]), [0., 1., 3., 2., 4., 5.]);
        let bad = op.eval(
            &Default::default(),
            crate::Inputs::from_tensors([x, Tensor::from_vec(vec![3i64, 0, 0], &[3]).unwrap()]),
        );
        assert!(bad.unwrap_err().to_string().contains("outside 0..=2"));
    }

    #[test]
    fn tensor_scatter_linear_and_circular() {
        // Cache [2, 4, 1], update [2, 2, 1] along axis 1.
        let past = t(&[0.; 8], &[2, 4, 1]);
        let upd = t(&[1., 2., 3., 4.], &[2, 2, 1]);
        let lin = build("TensorScatter", 24, &[("axis", Attribute::Int(1))], 3, 1);
        let y = eval(
            lin.as_ref(),
            &[Some(past.clone()), Some(upd.clone()), i64s(&[1, 2])],
        );
        assert_eq!(f64s(&y[0]), [0., 1., 2., 0., 0., 0., 3., 4.]);
        let circ = build(
            "TensorScatter",
            24,
            &[("axis", Attribute::Int(1)), ("mode", s("circular"))],
            3,
            1,
        );
        let y = eval(
            circ.as_ref(),
            &[Some(past.clone()), Some(upd.clone()), i64s(&[3, 0])],
        );
        assert_eq!(f64s(&y[0]), [2., 0., 0., 1., 3., 4., 0., 0.]);
        let bad = lin.eval(
            &Default::default(),
            crate::Inputs::from_tensors([
                past,
                upd,
                Tensor::from_vec(vec![3i64, 0], &[2]).unwrap(),
            ]),
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("outside the cache length 4"));
    }
}
