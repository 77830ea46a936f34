//! Random ops: `RandomUniformLike` and `Bernoulli`. With a `seed` attribute every evaluation
//! restarts the same `StdRng` stream (reproducible outputs); without one the stream is seeded
//! from the process's random hasher keys. Values cannot match numpy's generator, so tests
//! check ranges and statistics rather than exact values.

use super::staging::{dtype_attr, f64_output, float_values};
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hash::{BuildHasher, Hasher};
use strata_tensor::DType;

/// Registers the random ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "RandomUniformLike", 1, |b| {
        let a = b.attrs;
        let (low, high) = (
            f64::from(a.float_or("low", 0.0)?),
            f64::from(a.float_or("high", 1.0)?),
        );
        if low.is_nan() || high.is_nan() || low > high {
            return Err(OpError::attribute(
                "high",
                format!("[{low}, {high}) is not a range"),
            ));
        }
        Ok(Box::new(RandomUniformLike {
            low,
            high,
            dtype: opt_dtype(b)?,
            seed: a.float("seed")?,
        }))
    });
    registry.register("", "Bernoulli", 15, |b| {
        Ok(Box::new(Bernoulli {
            dtype: opt_dtype(b)?,
            seed: b.attrs.float("seed")?,
        }))
    });
}

fn opt_dtype(b: &BuildCtx<'_>) -> OpResult<Option<DType>> {
    b.attrs
        .int("dtype")?
        .map(|c| dtype_attr("dtype", c))
        .transpose()
}

/// A generator for one evaluation: from `seed` when given, else fresh.
fn rng(seed: Option<f32>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(u64::from(s.to_bits())),
        None => {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            StdRng::seed_from_u64(h.finish())
        }
    }
}

/// `RandomUniformLike`: uniform values in `[low, high)` with the input's shape, in `dtype`
/// (default: the input's dtype).
#[derive(Debug, Clone, Copy)]
pub struct RandomUniformLike {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Output dtype, when set.
    pub dtype: Option<DType>,
    /// Seed, when set.
    pub seed: Option<f32>,
}

impl Operator for RandomUniformLike {
    crate::op_boilerplate!("RandomUniformLike");

    fn is_deterministic(&self) -> bool {
        false
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let dtype = self.dtype.unwrap_or(x.dtype());
        if !dtype.is_float() {
            return Err(OpError::attribute(
                "dtype",
                format!("{dtype} is not a float type"),
            ));
        }
        let mut r = rng(self.seed);
        let v: Vec<f64> = (0..x.len())
            .map(|_| self.low + (self.high - self.low) * r.gen::<f64>())
            .collect();
        Ok(vec![f64_output(ctx, &v, x.shape(), dtype)?.into()])
    }
}

/// `Bernoulli`: 1 with the probability given by each input element, else 0.
#[derive(Debug, Clone, Copy)]
pub struct Bernoulli {
    /// Output dtype, when set (default: the input's dtype).
    pub dtype: Option<DType>,
    /// Seed, when set.
    pub seed: Option<f32>,
}

impl Operator for Bernoulli {
    crate::op_boilerplate!("Bernoulli");

    fn is_deterministic(&self) -> bool {
        false
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let p = float_values(x, 0)?;
        let mut r = rng(self.seed);
        let v: Vec<f64> = p
            .iter()
            .map(|&p| if r.gen::<f64>() < p { 1.0 } else { 0.0 })
            .collect();
        let dtype = self.dtype.unwrap_or(x.dtype());
        Ok(vec![f64_output(ctx, &v, x.shape(), dtype)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::Tensor;

    #[test]
    fn uniform_is_in_range_and_seeded_runs_repeat() {
        let op = RandomUniformLike {
            low: 2.0,
            high: 3.0,
            dtype: None,
            seed: Some(1.0),
        };
        let x = Tensor::from_vec(vec![0.0f32; 1000], &[10, 100]).unwrap();
        let a = op
            .eval(&EvalCtx::default(), Inputs::from_tensors([x.clone()]))
            .unwrap();
        let b = op
            .eval(&EvalCtx::default(), Inputs::from_tensors([x.clone()]))
            .unwrap();
        let a = a[0].as_tensor().unwrap().to_vec::<f32>().unwrap();
        assert_eq!(a, b[0].as_tensor().unwrap().to_vec::<f32>().unwrap());
        assert!(a.iter().all(|v| (2.0..=3.0).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 2.5).abs() < 0.05, "{mean}");
        let ints = RandomUniformLike {
            dtype: Some(DType::I32),
            ..op
        };
        assert!(ints
            .eval(&EvalCtx::default(), Inputs::from_tensors([x]))
            .is_err());
    }

    #[test]
    fn bernoulli_respects_certain_probabilities() {
        let op = Bernoulli {
            dtype: Some(DType::I64),
            seed: None,
        };
        let p = Tensor::from_vec(vec![0.0f64, 1.0, 0.0, 1.0], &[4]).unwrap();
        let y = op
            .eval(&EvalCtx::default(), Inputs::from_tensors([p]))
            .unwrap();
        assert_eq!(
            y[0].as_tensor().unwrap().as_slice::<i64>().unwrap(),
            &[0, 1, 0, 1]
        );
        let bad = Tensor::from_vec(vec![1i32], &[1]).unwrap();
        assert!(op
            .eval(&EvalCtx::default(), Inputs::from_tensors([bad]))
            .is_err());
    }
}
