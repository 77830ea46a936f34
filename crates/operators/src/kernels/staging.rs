//! Shared input/output staging for kernels that compute in f64: reading float or numeric
//! inputs as `Vec<f64>`, reading scalar integer inputs, and writing f64 results back as a
//! tensor of the requested dtype. Keeps each such kernel generic over dtype by conversion
//! instead of per-type copies.

use crate::{EvalCtx, Inputs, OpError, OpResult};
use strata_tensor::{DType, Tensor};

/// The elements of a floating-point tensor (f16, bf16, f32, f64) as f64, row-major.
pub(crate) fn float_values(t: &Tensor, index: usize) -> OpResult<Vec<f64>> {
    if !t.dtype().is_float() {
        return Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        });
    }
    Ok(t.cast(DType::F64)?.to_vec::<f64>()?)
}

/// The elements of any numeric tensor (not bool or string) as f64, row-major.
pub(crate) fn numeric_values(t: &Tensor, index: usize) -> OpResult<Vec<f64>> {
    let dt = t.dtype();
    if dt == DType::String || dt == DType::Bool || !dt.is_plain() {
        return Err(OpError::UnsupportedDType { index, dtype: dt });
    }
    Ok(t.cast(DType::F64)?.to_vec::<f64>()?)
}

/// A tensor of `dtype` and `shape` holding `values` (converted from f64).
pub(crate) fn f64_output(
    ctx: &EvalCtx<'_>,
    values: &[f64],
    shape: &[usize],
    dtype: DType,
) -> OpResult<Tensor> {
    let mut out = ctx.alloc(DType::F64, shape)?;
    let dst = out.as_slice_mut::<f64>()?;
    if dst.len() != values.len() {
        return Err(OpError::Shape(format!(
            "{} values do not fill output shape {shape:?}",
            values.len()
        )));
    }
    dst.copy_from_slice(values);
    Ok(out.cast(dtype)?)
}

/// The single integer of a scalar (or one-element) input, if the input is present.
pub(crate) fn opt_scalar_int(inputs: &Inputs, index: usize) -> OpResult<Option<i64>> {
    let Some(t) = inputs.opt_tensor(index)? else {
        return Ok(None);
    };
    if !t.dtype().is_integer() {
        return Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        });
    }
    match t.to_i64_vec()?.as_slice() {
        [v] => Ok(Some(*v)),
        v => Err(OpError::invalid(
            index,
            format!("expected one integer, got {} values", v.len()),
        )),
    }
}

/// The single integer of a required scalar input.
pub(crate) fn scalar_int(inputs: &Inputs, index: usize) -> OpResult<i64> {
    opt_scalar_int(inputs, index)?.ok_or(OpError::MissingInput { index })
}

/// The single number of a required scalar numeric input, as f64.
pub(crate) fn scalar_f64(inputs: &Inputs, index: usize) -> OpResult<f64> {
    match numeric_values(inputs.tensor(index)?, index)?.as_slice() {
        [v] => Ok(*v),
        v => Err(OpError::invalid(
            index,
            format!("expected one number, got {} values", v.len()),
        )),
    }
}

/// The dtype named by an `output_datatype`-style attribute code.
pub(crate) fn dtype_attr(name: &str, code: i64) -> OpResult<DType> {
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| OpError::attribute(name, format!("{code} is not a known dtype code")))
}
