//! The `ai.onnx.preview.training` optimizers: `Adagrad`, `Adam` and `Momentum` (standard or
//! Nesterov). Each takes a learning rate `R`, a step count `T`, then `n` tensors to optimize,
//! their `n` gradients and their optimizer states, and returns the updated tensors followed
//! by the updated states. Arithmetic is in f64; results keep each tensor's dtype.

use super::staging::{f64_output, float_values, scalar_f64, scalar_int};
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};

const DOMAIN: &str = "ai.onnx.preview.training";

/// Registers the optimizers.
pub fn register(registry: &mut OpRegistry) {
    registry.register(DOMAIN, "Adagrad", 1, |b| {
        let a = b.attrs;
        build(Rule::Adagrad {
            decay: f64::from(a.float_or("decay_factor", 0.0)?),
            epsilon: f64::from(a.float_or("epsilon", 0.0)?),
            norm: f64::from(a.float_or("norm_coefficient", 0.0)?),
        })
    });
    registry.register(DOMAIN, "Adam", 1, |b| {
        let a = b.attrs;
        build(Rule::Adam {
            alpha: f64::from(a.float_or("alpha", 0.9)?),
            beta: f64::from(a.float_or("beta", 0.999)?),
            epsilon: f64::from(a.float_or("epsilon", 0.0)?),
            norm: f64::from(a.float_or("norm_coefficient", 0.0)?),
            norm_post: f64::from(a.float_or("norm_coefficient_post", 0.0)?),
        })
    });
    registry.register(DOMAIN, "Momentum", 1, build_momentum);
}

fn required(b: &BuildCtx<'_>, name: &str) -> OpResult<f64> {
    b.attrs
        .float(name)?
        .map(f64::from)
        .ok_or_else(|| OpError::attribute(name, "required"))
}

fn build_momentum(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let nesterov = match b.attrs.string("mode")?.as_deref() {
        Some("standard") => false,
        Some("nesterov") => true,
        other => {
            return Err(OpError::attribute(
                "mode",
                format!("{other:?} is not 'standard' or 'nesterov'"),
            ))
        }
    };
    build(Rule::Momentum {
        alpha: required(b, "alpha")?,
        beta: required(b, "beta")?,
        norm: required(b, "norm_coefficient")?,
        nesterov,
    })
}

fn build(rule: Rule) -> OpResult<Box<dyn Operator>> {
    Ok(Box::new(Optimizer { rule }))
}

/// An update rule with its attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// State: accumulated squared gradient `H`.
    Adagrad {
        /// Learning-rate decay per step.
        decay: f64,
        /// Added to the root of `H`.
        epsilon: f64,
        /// L2 regularization coefficient.
        norm: f64,
    },
    /// States: momentum `V`, then second moment `H`.
    Adam {
        /// First-moment decay.
        alpha: f64,
        /// Second-moment decay.
        beta: f64,
        /// Added to the root of `H`.
        epsilon: f64,
        /// L2 regularization coefficient (on the gradient).
        norm: f64,
        /// Shrink applied to the result.
        norm_post: f64,
    },
    /// State: momentum `V`.
    Momentum {
        /// Momentum decay.
        alpha: f64,
        /// Gradient coefficient after the first step.
        beta: f64,
        /// L2 regularization coefficient.
        norm: f64,
        /// Nesterov update instead of the standard one.
        nesterov: bool,
    },
}

impl Rule {
    fn states(&self) -> usize {
        match self {
            Rule::Adam { .. } => 2,
            _ => 1,
        }
    }

    /// Updates one element: returns the new value and rewrites `s` (the states).
    fn step(&self, r: f64, t: i64, x: f64, g: f64, s: &mut [f64; 2]) -> f64 {
        match *self {
            Rule::Adagrad {
                decay,
                epsilon,
                norm,
            } => {
                let rate = r / (1.0 + t as f64 * decay);
                let g = norm * x + g;
                s[0] += g * g;
                x - rate * g / (s[0].sqrt() + epsilon)
            }
            Rule::Adam {
                alpha,
                beta,
                epsilon,
                norm,
                norm_post,
            } => {
                let g = norm * x + g;
                s[0] = alpha * s[0] + (1.0 - alpha) * g;
                s[1] = beta * s[1] + (1.0 - beta) * g * g;
                let rate = if t > 0 {
                    let t = t as f64;
                    r * (1.0 - beta.powf(t)).sqrt() / (1.0 - alpha.powf(t))
                } else {
                    r
                };
                (1.0 - norm_post) * (x - rate * s[0] / (s[1].sqrt() + epsilon))
            }
            Rule::Momentum {
                alpha,
                beta,
                norm,
                nesterov,
            } => {
                let g = norm * x + g;
                let b = if t > 0 { beta } else { 1.0 };
                s[0] = alpha * s[0] + b * g;
                if nesterov {
                    x - r * (g + alpha * s[0])
                } else {
                    x - r * s[0]
                }
            }
        }
    }
}

/// The optimizer op: one update of every (tensor, gradient, states) group.
#[derive(Debug, Clone, Copy)]
pub struct Optimizer {
    /// The update rule.
    pub rule: Rule,
}

impl Operator for Optimizer {
    fn op_type(&self) -> &str {
        match self.rule {
            Rule::Adagrad { .. } => "Adagrad",
            Rule::Adam { .. } => "Adam",
            Rule::Momentum { .. } => "Momentum",
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let r = scalar_f64(&inputs, 0)?;
        let t = scalar_int(&inputs, 1)?;
        let k = self.rule.states();
        let rest = inputs.len().saturating_sub(2);
        let n = rest / (2 + k);
        if n == 0 || !rest.is_multiple_of(2 + k) {
            return Err(OpError::invalid(
                2,
                format!("{rest} tensor inputs are not groups of {}", 2 + k),
            ));
        }
        let mut xs = Vec::with_capacity(n);
        let mut states: Vec<Vec<Value>> = vec![Vec::with_capacity(n); k];
        for i in 0..n {
            let at = |group: usize| 2 + group * n + i;
            let x = inputs.tensor(at(0))?;
            let parts: Vec<Vec<f64>> = (0..2 + k)
                .map(|g| {
                    let tensor = inputs.tensor(at(g))?;
                    if tensor.shape() != x.shape() {
                        return Err(OpError::invalid(
                            at(g),
                            format!("shape {:?} differs from X {:?}", tensor.shape(), x.shape()),
                        ));
                    }
                    float_values(tensor, at(g))
                })
                .collect::<OpResult<_>>()?;
            let mut new_x = Vec::with_capacity(x.len());
            let mut new_s: Vec<Vec<f64>> = vec![Vec::with_capacity(x.len()); k];
            for (e, (&xv, &gv)) in parts[0].iter().zip(&parts[1]).enumerate() {
                let mut s = [0.0; 2];
                for (slot, state) in s.iter_mut().zip(&parts[2..]) {
                    *slot = state.get(e).copied().unwrap_or(0.0);
                }
                new_x.push(self.rule.step(r, t, xv, gv, &mut s));
                for (j, out) in new_s.iter_mut().enumerate() {
                    out.push(s[j]);
                }
            }
            xs.push(f64_output(ctx, &new_x, x.shape(), x.dtype())?.into());
            for (j, vals) in new_s.iter().enumerate() {
                let dtype = inputs.tensor(at(2 + j))?.dtype();
                states[j].push(f64_output(ctx, vals, x.shape(), dtype)?.into());
            }
        }
        xs.extend(states.into_iter().flatten());
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::Tensor;

    fn run(rule: Rule, tensors: Vec<Tensor>) -> Vec<Vec<f32>> {
        let out = Optimizer { rule }
            .eval(&EvalCtx::default(), Inputs::from_tensors(tensors))
            .unwrap();
        out.iter()
            .map(|v| v.as_tensor().unwrap().to_vec::<f32>().unwrap())
            .collect()
    }

    fn v(x: &[f32]) -> Tensor {
        Tensor::from_vec(x.to_vec(), &[x.len()]).unwrap()
    }

    #[test]
    fn adagrad_and_momentum_by_hand() {
        let (r, t) = (Tensor::scalar(0.5f32), Tensor::scalar(0i64));
        let rule = Rule::Adagrad {
            decay: 0.0,
            epsilon: 0.0,
            norm: 0.0,
        };
        // H = 0 + 4 = 4; X = 1 - 0.5 * 2 / 2 = 0.5.
        let out = run(
            rule,
            vec![r.clone(), t.clone(), v(&[1.0]), v(&[2.0]), v(&[0.0])],
        );
        assert_eq!(out, vec![vec![0.5], vec![4.0]]);
        let rule = Rule::Momentum {
            alpha: 0.5,
            beta: 0.1,
            norm: 0.0,
            nesterov: false,
        };
        // First step: V = 0.5 * 2 + 1 * 1 = 2; X = 1 - 0.5 * 2 = 0.
        let out = run(rule, vec![r, t, v(&[1.0]), v(&[1.0]), v(&[2.0])]);
        assert_eq!(out, vec![vec![0.0], vec![2.0]]);
    }

    #[test]
    fn adam_groups_and_errors() {
        let rule = Rule::Adam {
            alpha: 0.5,
            beta: 0.5,
            epsilon: 0.0,
            norm: 0.0,
            norm_post: 0.0,
        };
        let (r, t) = (Tensor::scalar(1.0f32), Tensor::scalar(0i64));
        // V = 0.5 * 2 = 1, H = 0.5 * 4 = 2; X = 3 - 1 / sqrt(2).
        let out = run(
            rule,
            vec![
                r.clone(),
                t.clone(),
                v(&[3.0]),
                v(&[2.0]),
                v(&[0.0]),
                v(&[0.0]),
            ],
        );
        assert!((out[0][0] - (3.0 - 1.0 / 2f32.sqrt())).abs() < 1e-6);
        assert_eq!(out[1..], [vec![1.0], vec![2.0]]);
        let bad = Optimizer { rule }.eval(
            &EvalCtx::default(),
            Inputs::from_tensors(vec![r, t, v(&[3.0]), v(&[2.0]), v(&[0.0])]),
        );
        assert!(bad.is_err());
    }
}
