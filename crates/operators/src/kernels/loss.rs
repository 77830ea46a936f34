//! Loss functions: `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss` (which is the
//! former applied to the log-softmax of its input along axis 1, optionally also returning
//! those log-probabilities).
//!
//! Both take scores `[N, C, d1, ..., dk]`, integer targets `[N, d1, ..., dk]` and optional
//! per-class weights `[C]`, and compute in f64 whatever the float input type, rounding once
//! to the input type at the end. Targets equal to `ignore_index` contribute nothing (and have
//! weight 0 in the `mean` denominator); any other target outside `0..C` is an error.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{DType, Tensor};

/// Registers the loss ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "NegativeLogLikelihoodLoss", 12, |c| build(c, false));
    registry.register("", "SoftmaxCrossEntropyLoss", 12, |c| build(c, true));
}

/// How per-element losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// One loss per target element.
    None,
    /// Their sum.
    Sum,
    /// Their weighted mean: the sum divided by the sum of the applied weights.
    Mean,
}

fn build(ctx: &BuildCtx<'_>, softmax: bool) -> OpResult<Box<dyn Operator>> {
    let reduction = match ctx.attrs.string_or("reduction", "mean")?.as_str() {
        "none" => Reduction::None,
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        other => {
            return Err(OpError::attribute(
                "reduction",
                format!("expected none, sum or mean, got '{other}'"),
            ))
        }
    };
    Ok(Box::new(Loss {
        softmax,
        reduction,
        ignore_index: ctx.attrs.int("ignore_index")?,
        log_prob: softmax && ctx.output_count >= 2,
    }))
}

/// `NegativeLogLikelihoodLoss` (`softmax` false) or `SoftmaxCrossEntropyLoss`.
#[derive(Debug, Clone, Copy)]
pub struct Loss {
    /// Whether the scores first go through log-softmax over axis 1.
    pub softmax: bool,
    /// How the per-element losses are combined.
    pub reduction: Reduction,
    /// Target value that contributes nothing.
    pub ignore_index: Option<i64>,
    /// Whether to output the log-probabilities too (SoftmaxCrossEntropyLoss only).
    pub log_prob: bool,
}

/// Class count and trailing size `D` of the `[N, C, D]` view of the scores.
struct Dims {
    c: usize,
    d: usize,
}

fn check_inputs(x: &Tensor, target: &Tensor, weight: Option<&Tensor>) -> OpResult<Dims> {
    if !x.dtype().is_float() {
        return Err(OpError::UnsupportedDType {
            index: 0,
            dtype: x.dtype(),
        });
    }
    let &[n, c, ref rest @ ..] = x.shape() else {
        return Err(OpError::invalid(
            0,
            format!("scores must have rank >= 2, got shape {:?}", x.shape()),
        ));
    };
    let want: Vec<usize> = std::iter::once(n).chain(rest.iter().copied()).collect();
    if target.shape() != want.as_slice() {
        return Err(OpError::invalid(
            1,
            format!(
                "target shape {:?} does not match scores {:?} (want {want:?})",
                target.shape(),
                x.shape()
            ),
        ));
    }
    if !matches!(target.dtype(), DType::I32 | DType::I64) {
        return Err(OpError::UnsupportedDType {
            index: 1,
            dtype: target.dtype(),
        });
    }
    if let Some(w) = weight {
        if w.shape() != [c] {
            return Err(OpError::invalid(
                2,
                format!("weight must have shape [{c}], got {:?}", w.shape()),
            ));
        }
    }
    Ok(Dims {
        c,
        d: rest.iter().product(),
    })
}

/// Replaces each `[c]` fibre (stride `d`) of `[n, c, d]` scores by its log-softmax.
fn log_softmax_axis1(v: &mut [f64], dims: &Dims) {
    let Dims { c, d, .. } = *dims;
    if c == 0 || d == 0 {
        return;
    }
    for block in v.chunks_mut(c * d) {
        for j in 0..d {
            let max = (0..c).fold(f64::NEG_INFINITY, |m, k| m.max(block[k * d + j]));
            let sum: f64 = (0..c).map(|k| (block[k * d + j] - max).exp()).sum();
            let shift = max + sum.ln();
            (0..c).for_each(|k| block[k * d + j] -= shift);
        }
    }
}

impl Loss {
    /// Per-element weighted losses and the applied weights.
    fn elementwise(
        &self,
        logp: &[f64],
        target: &[i64],
        weight: Option<&[f64]>,
        dims: &Dims,
    ) -> OpResult<(Vec<f64>, Vec<f64>)> {
        let Dims { c, d, .. } = *dims;
        let mut losses = Vec::with_capacity(target.len());
        let mut weights = Vec::with_capacity(target.len());
        for (i, &t) in target.iter().enumerate() {
            if Some(t) == self.ignore_index {
                losses.push(0.0);
                weights.push(0.0);
                continue;
            }
            let class = usize::try_from(t).ok().filter(|&k| k < c).ok_or_else(|| {
                OpError::invalid(
                    1,
                    format!("target {t} at flat index {i} is outside 0..{c} and not ignore_index"),
                )
            })?;
            let w = weight.and_then(|w| w.get(class)).copied().unwrap_or(1.0);
            let (ni, di) = (i / d.max(1), i % d.max(1));
            let v = logp.get((ni * c + class) * d + di).copied().unwrap_or(0.0);
            losses.push(-v * w);
            weights.push(w);
        }
        Ok((losses, weights))
    }

    fn reduce(&self, losses: Vec<f64>, weights: &[f64], shape: &[usize]) -> OpResult<Tensor> {
        let total = || losses.iter().sum::<f64>();
        Ok(match self.reduction {
            Reduction::None => Tensor::from_vec(losses, shape)?,
            Reduction::Sum => Tensor::scalar(total()),
            Reduction::Mean => Tensor::scalar(total() / weights.iter().sum::<f64>()),
        })
    }
}

impl Operator for Loss {
    fn op_type(&self) -> &str {
        if self.softmax {
            "SoftmaxCrossEntropyLoss"
        } else {
            "NegativeLogLikelihoodLoss"
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (x, target) = (inputs.tensor(0)?, inputs.tensor(1)?);
        let weight = inputs.opt_tensor(2)?;
        let dims = check_inputs(x, target, weight)?;
        let mut logp = x.cast(DType::F64)?.to_vec::<f64>()?;
        if self.softmax {
            log_softmax_axis1(&mut logp, &dims);
        }
        let weight = match weight {
            Some(w) => Some(w.cast(DType::F64)?.to_vec::<f64>()?),
            None => None,
        };
        let targets = target.to_i64_vec()?;
        let (losses, weights) = self.elementwise(&logp, &targets, weight.as_deref(), &dims)?;
        let loss = self.reduce(losses, &weights, target.shape())?;
        let mut out = vec![loss.cast(x.dtype())?.into()];
        if self.log_prob {
            let lp = Tensor::from_vec(logp, x.shape())?;
            out.push(lp.cast(x.dtype())?.into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, eval, f64s, s, t};
    use crate::Attribute;
    use strata_tensor::Tensor;

    fn targets(v: &[i64], shape: &[usize]) -> Option<Tensor> {
        Some(Tensor::from_vec(v.to_vec(), shape).unwrap())
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn nll_reductions_weights_and_ignore_index() {
        // x [2, 3], targets [1, 2]: losses -x[0,1] = -2, -x[1,2] = -6.
        let x = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let tg = targets(&[1, 2], &[2]);
        let none = build(
            "NegativeLogLikelihoodLoss",
            13,
            &[("reduction", s("none"))],
            2,
            1,
        );
        let out = eval(none.as_ref(), &[Some(x.clone()), tg.clone()]);
        assert_eq!(out[0].shape(), &[2]);
        close(&f64s(&out[0]), &[-2., -6.]);
        let mean = build("NegativeLogLikelihoodLoss", 13, &[], 3, 1);
        let w = Some(t(&[1., 2., 0.5], &[3]));
        let out = eval(mean.as_ref(), &[Some(x.clone()), tg.clone(), w]);
        assert_eq!(out[0].shape(), &[] as &[usize]);
        // (-2*2 + -6*0.5) / (2 + 0.5)
        close(&f64s(&out[0]), &[-7.0 / 2.5]);
        let ign = build(
            "NegativeLogLikelihoodLoss",
            13,
            &[("reduction", s("sum")), ("ignore_index", Attribute::Int(2))],
            2,
            1,
        );
        let out = eval(ign.as_ref(), &[Some(x), tg]);
        close(&f64s(&out[0]), &[-2.]);
    }

    #[test]
    fn nll_nd_and_bad_target() {
        // x [1, 2, 2]: target [[1, 0]] picks x[0,1,0] = 3 and x[0,0,1] = 2.
        let x = t(&[1., 2., 3., 4.], &[1, 2, 2]);
        let op = build("NegativeLogLikelihoodLoss", 13, &[], 2, 1);
        let out = eval(op.as_ref(), &[Some(x.clone()), targets(&[1, 0], &[1, 2])]);
        close(&f64s(&out[0]), &[-2.5]);
        let bad = op.eval(
            &Default::default(),
            crate::Inputs::from_tensors([x, Tensor::from_vec(vec![5i64, 0], &[1, 2]).unwrap()]),
        );
        assert!(bad.unwrap_err().to_string().contains("outside 0..2"));
    }

    #[test]
    fn softmax_cross_entropy_with_log_prob() {
        // Equal scores: log-probabilities are all -ln 2, so the mean loss is ln 2.
        let x = t(&[0., 0., 5., 5.], &[2, 2]);
        let op = build("SoftmaxCrossEntropyLoss", 13, &[], 2, 2);
        let out = eval(op.as_ref(), &[Some(x), targets(&[0, 1], &[2])]);
        let ln2 = std::f64::consts::LN_2;
        close(&f64s(&out[0]), &[ln2]);
        assert_eq!(out[1].shape(), &[2, 2]);
        close(&f64s(&out[1]), &[-ln2; 4]);
    }
}
