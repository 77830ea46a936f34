//! The in-process engines of the comparison, Strata and tract, behind one small interface:
//! build from a model file and inputs, run once untimed for outputs (checked against the
//! reference with [`check_outputs`]), run timed. Also the batch helper [`repeat_batch`],
//! which stacks copies of a tensor along axis 0.

use crate::accuracy::{self, Check};
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use strata::{DType, Dim, Model, Session, SessionOptions, Tensor};
use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModelExt, IntoRunnable, TValue, TVec, TypedRunnableModel,
};

/// Outputs as (shape, values widened to f64), in graph order.
pub type Outputs = Vec<(Vec<usize>, Vec<f64>)>;

/// A Strata session with its named inputs.
pub struct StrataRunner {
    session: Session,
    inputs: Vec<(String, Tensor)>,
}

impl std::fmt::Debug for StrataRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrataRunner").finish_non_exhaustive()
    }
}

impl StrataRunner {
    /// Loads `model_path` and builds a session with `threads` threads (0: one per core).
    pub fn new(model_path: &Path, inputs: &[Tensor], threads: usize) -> Result<Self> {
        // The model is consumed, as a server would: the session owns the only copy of the
        // weights.
        let model = Model::load(model_path)?;
        let names = model.inputs();
        if names.len() != inputs.len() {
            bail!(
                "model has {} inputs, test data {}",
                names.len(),
                inputs.len()
            );
        }
        let inputs = names
            .into_iter()
            .map(|i| i.name)
            .zip(inputs.iter().cloned())
            .collect();
        let session = model.into_session(SessionOptions::default().with_threads(threads))?;
        Ok(StrataRunner { session, inputs })
    }

    /// One run, timed (ms): `Session::run` only.
    pub fn run_timed(&self) -> Result<f64> {
        let start = Instant::now();
        let outputs = self.session.run(self.inputs.clone())?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(outputs);
        Ok(ms)
    }

    /// One run, returning the outputs.
    pub fn outputs(&self) -> Result<Outputs> {
        let outputs = self.session.run(self.inputs.clone())?;
        outputs
            .iter()
            .map(|(name, value)| {
                let t = value
                    .as_tensor()
                    .ok_or_else(|| anyhow!("output {name} is not a tensor"))?;
                Ok((t.shape().to_vec(), t.cast(DType::F64)?.to_vec::<f64>()?))
            })
            .collect()
    }

    /// FLOPs of one run of `model_path` with the symbolic input sizes bound to the sizes of
    /// `inputs` (graph order).
    pub fn flops(model_path: &Path, inputs: &[Tensor]) -> Result<u64> {
        let model = Model::load(model_path)?;
        let mut bindings = BTreeMap::new();
        for (info, tensor) in model.inputs().iter().zip(inputs) {
            for (dim, &size) in info.dims.iter().flatten().zip(tensor.shape()) {
                if let Dim::Symbol(s) = dim {
                    bindings.insert(s.clone(), size);
                }
            }
        }
        Ok(model.estimate_flops(&bindings)?)
    }
}

/// A tract plan (tract's default: one thread) with its inputs.
pub struct TractRunner {
    plan: Arc<TypedRunnableModel>,
    inputs: TVec<TValue>,
}

/// A Strata tensor as a tract tensor.
fn to_tract(t: &Tensor) -> Result<tract_onnx::prelude::Tensor> {
    use tract_onnx::prelude::Tensor as T;
    let shape = t.shape();
    Ok(match t.dtype() {
        DType::F32 => T::from_shape(shape, &t.to_vec::<f32>()?)?,
        DType::F64 => T::from_shape(shape, &t.to_vec::<f64>()?)?,
        DType::I64 => T::from_shape(shape, &t.to_vec::<i64>()?)?,
        DType::I32 => T::from_shape(shape, &t.to_vec::<i32>()?)?,
        DType::I8 => T::from_shape(shape, &t.to_vec::<i8>()?)?,
        DType::U8 => T::from_shape(shape, &t.to_vec::<u8>()?)?,
        other => bail!("no conversion of {other} inputs to tract"),
    })
}

impl std::fmt::Debug for TractRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractRunner").finish_non_exhaustive()
    }
}

impl TractRunner {
    /// Loads `model_path` with the inputs' types and shapes fixed, optimized.
    pub fn new(model_path: &Path, inputs: &[Tensor]) -> Result<Self> {
        let inputs: Vec<tract_onnx::prelude::Tensor> =
            inputs.iter().map(to_tract).collect::<Result<_>>()?;
        let mut model = tract_onnx::onnx()
            .model_for_path(model_path)
            .map_err(|e| anyhow!("{e:#}"))?;
        for (i, t) in inputs.iter().enumerate() {
            let fact = InferenceFact::dt_shape(t.datum_type(), t.shape());
            model = model
                .with_input_fact(i, fact)
                .map_err(|e| anyhow!("{e:#}"))?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("{e:#}"))?;
        Ok(TractRunner {
            plan,
            inputs: inputs.into_iter().map(TValue::from).collect(),
        })
    }

    fn run(&self) -> Result<TVec<TValue>> {
        self.plan
            .run(self.inputs.clone())
            .map_err(|e| anyhow!("{e:#}"))
    }

    /// One run, timed (ms).
    pub fn run_timed(&self) -> Result<f64> {
        let start = Instant::now();
        let outputs = self.run()?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(outputs);
        Ok(ms)
    }

    /// One run, returning the outputs.
    pub fn outputs(&self) -> Result<Outputs> {
        self.run()?
            .iter()
            .map(|v| {
                let t = v.cast_to::<f64>().map_err(|e| anyhow!("{e:#}"))?;
                let data = t
                    .to_plain_array_view::<f64>()
                    .map_err(|e| anyhow!("{e:#}"))?;
                // Row-major order whatever the view's layout.
                Ok((t.shape().to_vec(), data.iter().copied().collect()))
            })
            .collect()
    }
}

/// Checks outputs against the reference outputs (all must match).
pub fn check_outputs(actual: &Outputs, expected: &[Tensor]) -> Result<Check> {
    if actual.len() < expected.len() {
        bail!(
            "{} outputs, the reference has {}",
            actual.len(),
            expected.len()
        );
    }
    let mut merged: Option<Check> = None;
    for ((shape, data), expected) in actual.iter().zip(expected) {
        let e = expected.cast(DType::F64)?.to_vec::<f64>()?;
        let c = accuracy::check(shape, data, expected.shape(), &e);
        merged = Some(match merged {
            Some(m) => m.merge(c),
            None => c,
        });
    }
    merged.ok_or_else(|| anyhow!("no outputs"))
}

/// `batch` copies of `t` stacked along axis 0 (`t` itself when `batch` is 1).
pub fn repeat_batch(t: &Tensor, batch: usize) -> Result<Tensor> {
    fn stack<T: strata_tensor::Element + Clone>(t: &Tensor, batch: usize) -> Result<Tensor> {
        let data = t.to_vec::<T>()?;
        let mut shape = t.shape().to_vec();
        let Some(first) = shape.first_mut() else {
            bail!("a scalar has no batch axis");
        };
        *first *= batch;
        Ok(Tensor::from_vec(data.repeat(batch), &shape)?)
    }
    match (batch, t.dtype()) {
        (1, _) => Ok(t.clone()),
        (_, DType::F32) => stack::<f32>(t, batch),
        (_, DType::F64) => stack::<f64>(t, batch),
        (_, DType::I64) => stack::<i64>(t, batch),
        (_, DType::I32) => stack::<i32>(t, batch),
        (_, other) => bail!("no batching of {other} tensors"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_repeat_along_axis_0() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2]).unwrap();
        let b = repeat_batch(&t, 3).unwrap();
        assert_eq!(b.shape(), [3, 2]);
        assert_eq!(b.to_vec::<f32>().unwrap(), [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        assert_eq!(repeat_batch(&t, 1).unwrap().shape(), [1, 2]);
    }
}
