//! Quantization: `QuantizeLinear`, `DequantizeLinear` (per-tensor, per-axis and blocked, with
//! 4-bit and float8 types), `DynamicQuantizeLinear`, and the integer ops `MatMulInteger`,
//! `QLinearMatMul`, `ConvInteger` and `QLinearConv`.
//!
//! The integer matmul and convolution ops run the f64 `MatMul`/`Conv` kernels on
//! zero-point-shifted operands: every integer sum below 2^53 is exact in f64.
//!
//! Float8, float4 and 2/4-bit integer values are one raw byte each, converted by the codecs
//! in [`super::lowp`] (round-to-nearest-even, optional saturation, as the ONNX spec defines).

use super::lowp::{self, Encode, RoundMode};
use crate::kernels::linalg::MatMul;
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{dispatch_numeric, DType, Element, Tensor};

/// Registers the quantization ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "QuantizeLinear", 10, build_quantize);
    registry.register("", "DequantizeLinear", 10, build_dequantize);
    registry.register("", "DynamicQuantizeLinear", 11, |_| {
        Ok(Box::new(DynamicQuantizeLinear))
    });
    registry.register("", "MatMulInteger", 10, |_| Ok(Box::new(MatMulInteger)));
    registry.register("", "QLinearMatMul", 10, |_| Ok(Box::new(QLinearMatMul)));
    registry.register("", "ConvInteger", 10, |c| build_qconv(c, false));
    registry.register("", "QLinearConv", 10, |c| build_qconv(c, true));
}

// ----- shared helpers -----------------------------------------------------------------------

/// The elements of `t` as f64, for every numeric and low-precision dtype.
fn read_f64(t: &Tensor, index: usize) -> OpResult<Vec<f64>> {
    if let Some(v) = lowp::decode_values(t)? {
        return Ok(v);
    }
    let t = t.contiguous();
    let dtype = t.dtype();
    dispatch_numeric!(dtype, T => Ok(t.as_slice::<T>()?.iter().map(|v| v.to_f64()).collect()),
        Err(OpError::UnsupportedDType { index, dtype }))
}

/// The output quantization of QLinearMatMul and QLinearConv: scale (input 6), zero point
/// (input 7, whose dtype is the output's, else `default_dtype`) and the output's range.
struct OutputQuant {
    y_s: Vec<f64>,
    out_dt: DType,
    lo: f64,
    hi: f64,
    zp: f64,
}

fn output_quant(inputs: &Inputs, default_dtype: DType) -> OpResult<OutputQuant> {
    let y_s = read_f64(inputs.tensor(6)?, 6)?;
    let y_zp = inputs.opt_tensor(7)?;
    let out_dt = y_zp.map_or(default_dtype, Tensor::dtype);
    let (lo, hi) = int_range(out_dt).ok_or(OpError::UnsupportedDType {
        index: 7,
        dtype: out_dt,
    })?;
    let zp = match y_zp {
        Some(z) => read_f64(z, 7)?.first().copied().unwrap_or(0.0),
        None => 0.0,
    };
    Ok(OutputQuant {
        y_s,
        out_dt,
        lo,
        hi,
        zp,
    })
}

/// Integer range of a quantized integer type.
fn int_range(dtype: DType) -> Option<(f64, f64)> {
    Some(match dtype {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U4 => (0.0, 15.0),
        DType::I4 => (-8.0, 7.0),
        DType::U2 => (0.0, 3.0),
        DType::I2 => (-2.0, 1.0),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        _ => return None,
    })
}

/// A tensor of `dtype` from values already in its range (integers, 4-bit) or to be rounded
/// (floats, float8 with `saturate`).
fn write_values(
    ctx: &EvalCtx<'_>,
    dtype: DType,
    shape: &[usize],
    values: &[f64],
    saturate: bool,
) -> OpResult<Tensor> {
    let mut out = ctx.alloc(dtype, shape)?;
    let opts = Encode {
        saturate,
        round: RoundMode::default(),
    };
    if let Some(bytes) = lowp::encode_values(values, dtype, opts) {
        out.raw_bytes_mut()?.copy_from_slice(&bytes);
        return Ok(out);
    }
    dispatch_numeric!(dtype, T => {
        for (o, &v) in out.as_slice_mut::<T>()?.iter_mut().zip(values) {
            *o = T::from_f64(v);
        }
    }, return Err(OpError::Unsupported(format!("output dtype {dtype}"))));
    Ok(out)
}

/// How a scale or zero point maps onto the elements of `x`.
#[derive(Debug, Clone, Copy)]
enum ParamLayout {
    Scalar,
    /// One value per index of the quantization axis.
    PerAxis {
        dim: usize,
        inner: usize,
    },
    /// `blocks` values per axis, each covering `block` consecutive indices.
    Blocked {
        dim: usize,
        inner: usize,
        block: usize,
        blocks: usize,
    },
}

impl ParamLayout {
    fn resolve(
        x: &[usize],
        p: &Tensor,
        index: usize,
        axis: i64,
        block: usize,
    ) -> OpResult<ParamLayout> {
        if p.len() == 1 && p.rank() <= 1 {
            return Ok(ParamLayout::Scalar);
        }
        let axis = strata_tensor::normalize_axis(axis, x.len())
            .map_err(|_| OpError::attribute("axis", format!("out of range for shape {x:?}")))?;
        let dim = x[axis];
        let inner: usize = x[axis + 1..].iter().product();
        if block == 0 {
            if p.rank() != 1 || p.len() != dim {
                return Err(OpError::invalid(
                    index,
                    format!(
                        "per-axis parameter must be 1-D of length {dim} (axis {axis} of {x:?}), got shape {:?}",
                        p.shape()
                    ),
                ));
            }
            return Ok(ParamLayout::PerAxis { dim, inner });
        }
        let blocks = dim.div_ceil(block);
        let mut want = x.to_vec();
        want[axis] = blocks;
        if p.shape() != want.as_slice() {
            return Err(OpError::invalid(
                index,
                format!(
                    "blocked parameter must have shape {want:?} for input {x:?} and block_size {block}, got {:?}",
                    p.shape()
                ),
            ));
        }
        Ok(ParamLayout::Blocked {
            dim,
            inner,
            block,
            blocks,
        })
    }

    #[inline]
    fn index(self, i: usize) -> usize {
        match self {
            ParamLayout::Scalar => 0,
            ParamLayout::PerAxis { dim, inner } => (i / inner) % dim,
            ParamLayout::Blocked {
                dim,
                inner,
                block,
                blocks,
            } => {
                let (o, a, r) = (i / (dim * inner), (i / inner) % dim, i % inner);
                (o * blocks + a / block) * inner + r
            }
        }
    }
}

fn dtype_attr(ctx: &BuildCtx<'_>, name: &str) -> OpResult<Option<DType>> {
    match ctx.attrs.int_or(name, 0)? {
        0 => Ok(None),
        code => DType::from_onnx_code(code as i32)
            .map(Some)
            .ok_or_else(|| OpError::attribute(name, format!("unknown data type {code}"))),
    }
}

fn block_attr(ctx: &BuildCtx<'_>) -> OpResult<usize> {
    let b = ctx.attrs.int_or("block_size", 0)?;
    usize::try_from(b)
        .map_err(|_| OpError::attribute("block_size", format!("must be >= 0, got {b}")))
}

// ----- QuantizeLinear -----------------------------------------------------------------------

fn build_quantize(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let output_dtype = dtype_attr(ctx, "output_dtype")?;
    if let Some(d) = output_dtype {
        if int_range(d).is_none() && !lowp::is_low_precision_float(d) || d == DType::I32 {
            return Err(OpError::attribute(
                "output_dtype",
                format!("{d} is not a quantized type"),
            ));
        }
    }
    Ok(Box::new(QuantizeLinear {
        axis: ctx.attrs.int_or("axis", 1)?,
        saturate: ctx.attrs.int_or("saturate", 1)? != 0,
        block_size: block_attr(ctx)?,
        output_dtype,
        precision: dtype_attr(ctx, "precision")?,
    }))
}

/// `QuantizeLinear` (opsets 10-25): `saturate(round(x / scale) + zero_point)`.
#[derive(Debug, Clone)]
pub struct QuantizeLinear {
    /// Quantization axis for per-axis and blocked parameters.
    pub axis: i64,
    /// Float8 outputs: clamp out-of-range values to the largest finite value.
    pub saturate: bool,
    /// Blocked quantization block size (0: none).
    pub block_size: usize,
    /// Output type when there is no zero point.
    pub output_dtype: Option<DType>,
    /// Type of the division (None: the input's type).
    pub precision: Option<DType>,
}

/// A quantization parameter's values with their layout over the quantized tensor.
type Param = (ParamLayout, Vec<f64>);

/// The scale (input 1) and optional zero point (input 2) of a Quantize/DequantizeLinear node,
/// laid out over `shape` per `axis` and `block_size`.
fn scale_and_zero_point(
    shape: &[usize],
    scale: &Tensor,
    zero_point: Option<&Tensor>,
    axis: i64,
    block_size: usize,
) -> OpResult<(Param, Option<Param>)> {
    let scale = (
        ParamLayout::resolve(shape, scale, 1, axis, block_size)?,
        read_f64(scale, 1)?,
    );
    let zero_point = zero_point
        .map(|z| -> OpResult<Param> {
            Ok((
                ParamLayout::resolve(shape, z, 2, axis, block_size)?,
                read_f64(z, 2)?,
            ))
        })
        .transpose()?;
    Ok((scale, zero_point))
}

impl Operator for QuantizeLinear {
    crate::op_boilerplate!("QuantizeLinear");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let scale = inputs.tensor(1)?;
        let zp = inputs.opt_tensor(2)?.filter(|z| !z.is_empty());
        let xdt = x.dtype();
        if !xdt.is_float() {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: xdt,
            });
        }
        let out_dt = match (zp, self.output_dtype) {
            (Some(z), Some(d)) if z.dtype() != d => {
                return Err(OpError::invalid(
                    2,
                    format!(
                        "zero point type {} differs from output_dtype {d}",
                        z.dtype()
                    ),
                ))
            }
            (Some(z), _) => z.dtype(),
            (None, Some(d)) => d,
            (None, None) => DType::U8,
        };
        let range = if out_dt == DType::I32 {
            None
        } else {
            int_range(out_dt)
        };
        let is_f8 = lowp::is_low_precision_float(out_dt);
        if range.is_none() && !is_f8 {
            return Err(OpError::Unsupported(format!("QuantizeLinear to {out_dt}")));
        }
        let shape = x.shape();
        let ((s_layout, sv), zv) =
            scale_and_zero_point(shape, scale, zp, self.axis, self.block_size)?;
        let xv = read_f64(x, 0)?;
        // The division happens in `precision` or the input type: f32, then rounded to a
        // narrower input type.
        let narrow = match self.precision.unwrap_or(xdt) {
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => self.precision.unwrap_or(xdt),
            other => {
                return Err(OpError::attribute(
                    "precision",
                    format!("unsupported type {other}"),
                ))
            }
        };
        let mut q = Vec::with_capacity(xv.len());
        for (i, &v) in xv.iter().enumerate() {
            let s = sv[s_layout.index(i)];
            let d = match narrow {
                DType::F64 => v / s,
                DType::F16 => half::f16::from_f32((v / s) as f32).to_f64(),
                DType::BF16 => half::bf16::from_f32((v / s) as f32).to_f64(),
                _ => ((v as f32) / (s as f32)) as f64,
            };
            let z = zv.as_ref().map_or(0.0, |(l, z)| z[l.index(i)]);
            q.push(match range {
                Some((lo, hi)) => (d.round_ties_even() + z).clamp(lo, hi),
                // Float zero points are zero; the reference adds float4's (turning -0 into
                // +0) but not float8's.
                None if out_dt == DType::F4E2M1 => d + z,
                None => d,
            });
        }
        Ok(vec![
            write_values(ctx, out_dt, shape, &q, self.saturate)?.into()
        ])
    }
}

// ----- DequantizeLinear ---------------------------------------------------------------------

fn build_dequantize(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let output_dtype = dtype_attr(ctx, "output_dtype")?;
    if let Some(d) = output_dtype {
        if !d.is_float() {
            return Err(OpError::attribute(
                "output_dtype",
                format!("must be a float type, got {d}"),
            ));
        }
    }
    Ok(Box::new(DequantizeLinear {
        axis: ctx.attrs.int_or("axis", 1)?,
        block_size: block_attr(ctx)?,
        output_dtype,
    }))
}

/// `DequantizeLinear` (opsets 10-25): `(x - zero_point) * scale`.
#[derive(Debug, Clone)]
pub struct DequantizeLinear {
    /// Quantization axis for per-axis and blocked parameters.
    pub axis: i64,
    /// Blocked quantization block size (0: none).
    pub block_size: usize,
    /// Output type (None: the scale's type).
    pub output_dtype: Option<DType>,
}

impl Operator for DequantizeLinear {
    crate::op_boilerplate!("DequantizeLinear");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let scale = inputs.tensor(1)?;
        let zp = inputs.opt_tensor(2)?.filter(|z| !z.is_empty());
        let xdt = x.dtype();
        let is_f8 = lowp::is_low_precision_float(xdt);
        if int_range(xdt).is_none() && !is_f8 {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: xdt,
            });
        }
        if let Some(z) = zp {
            if z.dtype() != xdt {
                return Err(OpError::invalid(
                    2,
                    format!(
                        "zero point type {} differs from input type {xdt}",
                        z.dtype()
                    ),
                ));
            }
        }
        let out_dt = self.output_dtype.unwrap_or(scale.dtype());
        if !out_dt.is_float() {
            return Err(OpError::UnsupportedDType {
                index: 1,
                dtype: scale.dtype(),
            });
        }
        let shape = x.shape();
        let ((s_layout, sv), zv) =
            scale_and_zero_point(shape, scale, zp, self.axis, self.block_size)?;
        if is_f8
            && zv
                .as_ref()
                .is_some_and(|(_, v)| v.iter().any(|&z| z != 0.0))
        {
            return Err(OpError::invalid(2, "float8 zero points must be zero"));
        }
        let xv = read_f64(x, 0)?;
        let y: Vec<f64> = xv
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let z = zv.as_ref().map_or(0.0, |(l, z)| z[l.index(i)]);
                ((v as f32) as f64 - z) * sv[s_layout.index(i)]
            })
            .collect();
        // f64 products of f32 operands are exact; one rounding to the output type follows.
        let y: Vec<f64> = y.iter().map(|&v| (v as f32) as f64).collect();
        Ok(vec![write_values(ctx, out_dt, shape, &y, true)?.into()])
    }
}

// ----- DynamicQuantizeLinear ----------------------------------------------------------------

/// `DynamicQuantizeLinear` (opset 11): uint8 quantization with scale and zero point computed
/// from the input's range (extended to include 0).
#[derive(Debug, Clone, Copy)]
pub struct DynamicQuantizeLinear;

impl Operator for DynamicQuantizeLinear {
    crate::op_boilerplate!("DynamicQuantizeLinear");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        if x.dtype() != DType::F32 {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: x.dtype(),
            });
        }
        let x = x.contiguous();
        let xv = x.as_slice::<f32>()?;
        let maxx = xv.iter().copied().fold(0f32, f32::max);
        let minx = xv.iter().copied().fold(0f32, f32::min);
        let scale = if maxx == minx { 1.0 } else { maxx - minx } / 255.0;
        let zp = (0.0 - minx / scale).clamp(0.0, 255.0).round_ties_even();
        let mut y = ctx.alloc(DType::U8, x.shape())?;
        for (o, &v) in y.as_slice_mut::<u8>()?.iter_mut().zip(xv) {
            *o = ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8;
        }
        Ok(vec![
            y.into(),
            Tensor::scalar(scale).into(),
            Tensor::scalar(zp as u8).into(),
        ])
    }
}

// ----- integer matmul -----------------------------------------------------------------------

fn check_int8(t: &Tensor, index: usize) -> OpResult<()> {
    match t.dtype() {
        DType::U8 | DType::I8 => Ok(()),
        dtype => Err(OpError::UnsupportedDType { index, dtype }),
    }
}

/// `t - zero_point` as an f64 tensor. `zp` is a scalar or, along `axis` of `t` (rows of A,
/// columns of B, output channels of W), one value per index.
fn shifted(t: &Tensor, index: usize, zp: Option<&Tensor>, axis: usize) -> OpResult<Tensor> {
    let mut v = read_f64(t, index)?;
    if let Some(z) = zp {
        let zv = read_f64(z, index + 1)?;
        let shape = t.shape();
        if zv.len() == 1 {
            v.iter_mut().for_each(|x| *x -= zv[0]);
        } else if axis < shape.len() && zv.len() == shape[axis] {
            let inner: usize = shape[axis + 1..].iter().product();
            let dim = shape[axis];
            for (i, x) in v.iter_mut().enumerate() {
                *x -= zv[(i / inner) % dim];
            }
        } else if !zv.is_empty() {
            return Err(OpError::invalid(
                index + 1,
                format!(
                    "zero point of shape {:?} fits neither a scalar nor axis {axis} of {shape:?}",
                    z.shape()
                ),
            ));
        }
    }
    Ok(Tensor::from_vec(v, t.shape())?)
}

fn matmul_f64(ctx: &EvalCtx<'_>, a: Tensor, b: Tensor) -> OpResult<Tensor> {
    MatMul
        .eval(ctx, Inputs::from_tensors([a, b]))?
        .pop()
        .and_then(Value::into_tensor)
        .ok_or_else(|| OpError::Unsupported("MatMul gave no output".into()))
}

/// Axis of the rows of A (the second to last, or the only one for 1-D A).
fn row_axis(t: &Tensor) -> usize {
    t.rank().saturating_sub(2)
}

/// `MatMulInteger` (opset 10): int32 `(A - a_zero_point) @ (B - b_zero_point)`.
#[derive(Debug, Clone, Copy)]
pub struct MatMulInteger;

impl Operator for MatMulInteger {
    crate::op_boilerplate!("MatMulInteger");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (a, b) = (inputs.tensor(0)?, inputs.tensor(1)?);
        check_int8(a, 0)?;
        check_int8(b, 1)?;
        let a64 = shifted(a, 0, inputs.opt_tensor(2)?, row_axis(a))?;
        let b_axis = b.rank().saturating_sub(1);
        let b64 = shifted(b, 1, inputs.opt_tensor(3)?, b_axis)?;
        let c = matmul_f64(ctx, a64, b64)?;
        let cv = c.as_slice::<f64>()?;
        let mut out = ctx.alloc(DType::I32, c.shape())?;
        for (o, &v) in out.as_slice_mut::<i32>()?.iter_mut().zip(cv) {
            *o = v as i32;
        }
        Ok(vec![out.into()])
    }
}

/// `QLinearMatMul` (opsets 10, 21): quantized matmul requantized to `y_scale`/`y_zero_point`.
#[derive(Debug, Clone, Copy)]
pub struct QLinearMatMul;

impl Operator for QLinearMatMul {
    crate::op_boilerplate!("QLinearMatMul");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (a, b) = (inputs.tensor(0)?, inputs.tensor(3)?);
        check_int8(a, 0)?;
        check_int8(b, 3)?;
        let a64 = shifted(a, 0, inputs.opt_tensor(2)?, row_axis(a))?;
        let b64 = shifted(b, 3, inputs.opt_tensor(5)?, b.rank().saturating_sub(1))?;
        let c = matmul_f64(ctx, a64, b64)?;
        let a_s = read_f64(inputs.tensor(1)?, 1)?;
        let b_s = read_f64(inputs.tensor(4)?, 4)?;
        let OutputQuant {
            y_s,
            out_dt,
            lo,
            hi,
            zp,
        } = output_quant(&inputs, a.dtype())?;
        if y_s.len() != 1 {
            return Err(OpError::invalid(6, "y_scale must be a scalar"));
        }
        let shape = c.shape().to_vec();
        let n = *shape.last().unwrap_or(&1);
        let m = if shape.len() >= 2 {
            shape[shape.len() - 2]
        } else {
            1
        };
        let pick = |s: &[f64], idx: usize, index: usize| -> OpResult<f64> {
            match s.len() {
                1 => Ok(s[0]),
                _ => s.get(idx).copied().ok_or_else(|| {
                    OpError::invalid(index, format!("scale of {} values does not fit", s.len()))
                }),
            }
        };
        let cv = c.as_slice::<f64>()?;
        let mut q = Vec::with_capacity(cv.len());
        for (i, &v) in cv.iter().enumerate() {
            let (row, col) = ((i / n) % m.max(1), i % n.max(1));
            let f =
                ((pick(&a_s, row, 1)? as f32 * pick(&b_s, col, 4)? as f32) / y_s[0] as f32) as f64;
            q.push((v * f + zp).round_ties_even().clamp(lo, hi));
        }
        Ok(vec![write_values(ctx, out_dt, &shape, &q, true)?.into()])
    }
}

// ----- integer convolutions -----------------------------------------------------------------

fn build_qconv(ctx: &BuildCtx<'_>, qlinear: bool) -> OpResult<Box<dyn Operator>> {
    let mut registry = OpRegistry::new();
    crate::kernels::nn::conv::register(&mut registry);
    let conv = registry.build(&BuildCtx {
        op_type: "Conv",
        opset: 11,
        input_count: 3,
        output_count: 1,
        ..*ctx
    })?;
    Ok(Box::new(QConv { conv, qlinear }))
}

/// `ConvInteger` (opset 10) and `QLinearConv` (opset 10): the f64 `Conv` kernel on
/// zero-point-shifted operands, then int32 output or requantization.
#[derive(Debug)]
pub struct QConv {
    conv: Box<dyn Operator>,
    qlinear: bool,
}

impl Operator for QConv {
    fn op_type(&self) -> &str {
        if self.qlinear {
            "QLinearConv"
        } else {
            "ConvInteger"
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        // Positions of x, x_zp, w, w_zp, bias.
        let (xi, xzi, wi, wzi) = if self.qlinear {
            (0, 2, 3, 5)
        } else {
            (0, 2, 1, 3)
        };
        let (x, w) = (inputs.tensor(xi)?, inputs.tensor(wi)?);
        check_int8(x, xi)?;
        check_int8(w, wi)?;
        let x64 = shifted(x, xi, inputs.opt_tensor(xzi)?, usize::MAX)?;
        let w64 = shifted(w, wi, inputs.opt_tensor(wzi)?, 0)?;
        let mut conv_in = vec![x64, w64];
        if self.qlinear {
            if let Some(b) = inputs.opt_tensor(8)? {
                conv_in.push(Tensor::from_vec(read_f64(b, 8)?, b.shape())?);
            }
        }
        let y = self
            .conv
            .eval(ctx, Inputs::from_tensors(conv_in))?
            .pop()
            .and_then(Value::into_tensor)
            .ok_or_else(|| OpError::Unsupported("Conv gave no output".into()))?;
        let yv = y.as_slice::<f64>()?;
        let shape = y.shape().to_vec();
        if !self.qlinear {
            let mut out = ctx.alloc(DType::I32, &shape)?;
            for (o, &v) in out.as_slice_mut::<i32>()?.iter_mut().zip(yv) {
                *o = v as i32;
            }
            return Ok(vec![out.into()]);
        }
        let x_s = read_f64(inputs.tensor(1)?, 1)?;
        let w_s = read_f64(inputs.tensor(4)?, 4)?;
        let OutputQuant {
            y_s,
            out_dt,
            lo,
            hi,
            zp,
        } = output_quant(&inputs, x.dtype())?;
        let channels = shape.get(1).copied().unwrap_or(1);
        if w_s.len() != 1 && w_s.len() != channels {
            return Err(OpError::invalid(
                4,
                format!(
                    "w_scale has {} values for {channels} output channels",
                    w_s.len()
                ),
            ));
        }
        if x_s.len() != 1 || y_s.len() != 1 {
            return Err(OpError::invalid(1, "x_scale and y_scale must be scalars"));
        }
        let inner: usize = shape.get(2..).map_or(1, |s| s.iter().product());
        let q: Vec<f64> = yv
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ws = if w_s.len() == 1 {
                    w_s[0]
                } else {
                    w_s[(i / inner.max(1)) % channels]
                };
                let f = ((x_s[0] as f32 * ws as f32) / y_s[0] as f32) as f64;
                (v * f + zp).clamp(lo, hi).round_ties_even()
            })
            .collect();
        Ok(vec![write_values(ctx, out_dt, &shape, &q, true)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::nn::testutil::{build, eval};
    use crate::Attribute;

    fn t<T: Element>(data: &[T], shape: &[usize]) -> Option<Tensor> {
        Some(Tensor::from_vec(data.to_vec(), shape).unwrap())
    }

    fn s<T: Element>(v: T) -> Option<Tensor> {
        Some(Tensor::scalar(v))
    }

    /// Evaluates serially (the shared `eval` helper compares outputs through f64, which
    /// float8 and 4-bit tensors do not cast to).
    fn run(op: &dyn Operator, inputs: &[Option<Tensor>]) -> Vec<Tensor> {
        let values = Inputs::new(inputs.iter().map(|t| t.clone().map(Into::into)).collect());
        op.eval(&EvalCtx::default(), values)
            .unwrap()
            .into_iter()
            .map(|v| v.into_tensor().unwrap())
            .collect()
    }

    fn raw(dtype: DType, bytes: &[u8]) -> Option<Tensor> {
        Some(Tensor::from_raw_bytes(dtype, &[bytes.len()], bytes).unwrap())
    }

    // Expected values below come from onnx.reference.ReferenceEvaluator.

    #[test]
    fn quantize_per_tensor_uint8_and_int8() {
        let op = build("QuantizeLinear", 13, &[], 3, 1);
        let x = [0.0f32, 2.0, 3.0, 1000.0, -254.0, -1000.0, 2.5, -2.5];
        let y = eval(op.as_ref(), &[t(&x, &[8]), s(2f32), s(128u8)]);
        assert_eq!(
            y[0].as_slice::<u8>().unwrap(),
            &[128, 129, 130, 255, 1, 0, 129, 127]
        );
        let y = eval(op.as_ref(), &[t(&x, &[8]), s(2f32), s(1i8)]);
        assert_eq!(
            y[0].as_slice::<i8>().unwrap(),
            &[1, 2, 3, 127, -126, -128, 2, 0]
        );
        // No zero point: uint8.
        let y = eval(op.as_ref(), &[t(&x, &[8]), s(2f32), None]);
        assert_eq!(y[0].dtype(), DType::U8);
    }

    #[test]
    fn quantize_per_axis() {
        let op = build("QuantizeLinear", 13, &[("axis", Attribute::Int(1))], 3, 1);
        let x = [1.0f32, -2.0, 3.5, 4.0, 5.5, -6.0, 7.0, 8.0, 9.0];
        let y = eval(
            op.as_ref(),
            &[
                t(&x, &[1, 3, 3]),
                t(&[1f32, 2.0, 4.0], &[3]),
                t(&[0u8, 10, 20], &[3]),
            ],
        );
        assert_eq!(
            y[0].as_slice::<u8>().unwrap(),
            &[1, 0, 4, 12, 13, 7, 22, 22, 22]
        );
    }

    #[test]
    fn quantize_blocked_int4() {
        let op = build(
            "QuantizeLinear",
            21,
            &[
                ("axis", Attribute::Int(1)),
                ("block_size", Attribute::Int(3)),
                ("output_dtype", Attribute::Int(DType::I4.onnx_code() as i64)),
            ],
            2,
            1,
        );
        let x: Vec<f32> = (0..12).map(|i| i as f32 - 5.3).collect();
        let y = run(
            op.as_ref(),
            &[t(&x, &[2, 6]), t(&[1f32, 2.0, 3.0, 0.5], &[2, 2])],
        );
        assert_eq!(y[0].dtype(), DType::I4);
        let v: Vec<i8> = y[0].raw_bytes().unwrap().iter().map(|&b| b as i8).collect();
        assert_eq!(v, [-5, -4, -3, -1, -1, 0, 0, 1, 1, 7, 7, 7]);
    }

    #[test]
    fn quantize_float8_saturate_or_not() {
        let x = [
            0.0f32, 0.5, 1.0, 448.0, 500.0, -1000.0, 0.001, -3.3, 1e-5, -0.0,
        ];
        let cases: [(DType, [u8; 10], [u8; 10]); 4] = [
            (
                DType::F8E4M3FN,
                [0, 48, 56, 126, 126, 254, 1, 197, 0, 128],
                [0, 48, 56, 126, 127, 255, 1, 197, 0, 128],
            ),
            (
                DType::F8E4M3FNUZ,
                [0, 56, 64, 127, 127, 255, 1, 205, 0, 0],
                [0, 56, 64, 128, 128, 128, 1, 205, 0, 0],
            ),
            (
                DType::F8E5M2,
                [0, 56, 60, 95, 96, 228, 20, 195, 1, 128],
                [0, 56, 60, 95, 96, 228, 20, 195, 1, 128],
            ),
            (
                DType::F8E5M2FNUZ,
                [0, 60, 64, 99, 100, 232, 24, 199, 1, 0],
                [0, 60, 64, 99, 100, 232, 24, 199, 1, 0],
            ),
        ];
        for (dt, sat, nosat) in cases {
            for (flag, want) in [(1, sat), (0, nosat)] {
                let op = build(
                    "QuantizeLinear",
                    21,
                    &[("saturate", Attribute::Int(flag))],
                    3,
                    1,
                );
                let y = run(op.as_ref(), &[t(&x, &[10]), s(1f32), raw(dt, &[0])]);
                assert_eq!(y[0].dtype(), dt);
                assert_eq!(y[0].raw_bytes().unwrap(), &want, "{dt} saturate={flag}");
            }
        }
    }

    /// The ONNX test data of quantizelinear_int2 / _float4e2m1 and dequantizelinear_int2.
    #[test]
    fn quantize_int2_and_float4() {
        let op = build("QuantizeLinear", 25, &[("axis", Attribute::Int(0))], 3, 1);
        let scale = t(&[2f32, 3.0, 4.0], &[3]);
        let x = [
            0.0f32, 2.5, 4.8, 8.6, -4.0, -3.0, 1.0, 2.0, -0.0, -2.5, -4.8, -8.6,
        ];
        let y = run(
            op.as_ref(),
            &[t(&x, &[3, 4]), scale.clone(), raw(DType::I2, &[0; 3])],
        );
        let v: Vec<i8> = y[0].raw_bytes().unwrap().iter().map(|&b| b as i8).collect();
        assert_eq!(v, [0, 1, 1, 1, -1, -1, 0, 1, 0, -1, -1, -2]);
        let x = [
            0.0f32, 2.5, 4.8, 8.6, -30.0, -20.0, 6.0, 9.0, -0.0, -2.5, -4.8, -8.6,
        ];
        let y = run(
            op.as_ref(),
            &[t(&x, &[3, 4]), scale, raw(DType::F4E2M1, &[0; 3])],
        );
        assert_eq!(
            y[0].raw_bytes().unwrap(),
            &[0, 2, 4, 6, 0xF, 0xF, 4, 5, 0, 0x9, 0xA, 0xC]
        );
        let op = build("DequantizeLinear", 25, &[], 3, 1);
        let y = run(
            op.as_ref(),
            &[
                raw(DType::I2, &[0, 1, 0xFF, 0xFE]),
                s(2f32),
                raw(DType::I2, &[1]),
            ],
        );
        assert_eq!(y[0].to_vec::<f32>().unwrap(), [-2.0, 0.0, -4.0, -6.0]);
    }

    #[test]
    fn dequantize_cases() {
        let op = build("DequantizeLinear", 13, &[], 3, 1);
        let y = eval(
            op.as_ref(),
            &[t(&[0u8, 3, 128, 255], &[4]), s(2f32), s(128u8)],
        );
        assert_eq!(
            y[0].as_slice::<f32>().unwrap(),
            &[-256.0, -250.0, 0.0, 254.0]
        );
        let y = eval(op.as_ref(), &[t(&[-300i32, 5], &[2]), s(0.25f32), None]);
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[-75.0, 1.25]);
        let op = build("DequantizeLinear", 13, &[("axis", Attribute::Int(0))], 3, 1);
        let y = eval(
            op.as_ref(),
            &[
                t(&[-3i8, 2, 4, -128], &[2, 2]),
                t(&[0.5f32, 2.0], &[2]),
                t(&[1i8, -1], &[2]),
            ],
        );
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[-2.0, 0.5, 10.0, -254.0]);
        // float8 input.
        let op = build("DequantizeLinear", 19, &[], 2, 1);
        let y = eval(
            op.as_ref(),
            &[raw(DType::F8E4M3FN, &[48, 126, 197]), s(2f32)],
        );
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1.0, 896.0, -6.5]);
        // Wrong zero-point type is an error, not a panic.
        let err = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([
                    Tensor::from_vec(vec![1u8], &[1]).unwrap(),
                    Tensor::scalar(1f32),
                    Tensor::scalar(1i8),
                ]),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("zero point"), "{err}");
    }

    #[test]
    fn dynamic_quantize() {
        let op = build("DynamicQuantizeLinear", 11, &[], 1, 3);
        let y = eval(op.as_ref(), &[t(&[1f32, 2.1, -3.0, 0.5, 7.7], &[5])]);
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[95, 121, 0, 83, 255]);
        assert_eq!(y[1].as_slice::<f32>().unwrap(), &[0.041_960_783]);
        assert_eq!(y[2].as_slice::<u8>().unwrap(), &[71]);
        let y = eval(op.as_ref(), &[t(&[-1f32, -2.1, -3.0], &[3])]);
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[170, 77, 0]);
        assert_eq!(y[1].as_slice::<f32>().unwrap(), &[0.011_764_706]);
        assert_eq!(y[2].as_slice::<u8>().unwrap(), &[255]);
    }

    #[test]
    fn matmul_integer_and_qlinear() {
        let op = build("MatMulInteger", 10, &[], 4, 1);
        let a = [11u8, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0];
        let b = [1u8, 4, 2, 5, 3, 6];
        let y = eval(
            op.as_ref(),
            &[t(&a, &[4, 3]), t(&b, &[3, 2]), s(12u8), s(0u8)],
        );
        assert_eq!(
            y[0].as_slice::<i32>().unwrap(),
            &[-38, -83, -44, -98, -50, -113, -56, -128]
        );
        let op = build("QLinearMatMul", 10, &[], 8, 1);
        let a = [208u8, 236, 0, 238, 3, 214, 255, 29];
        let b = [152u8, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247];
        let y = eval(
            op.as_ref(),
            &[
                t(&a, &[2, 4]),
                s(0.0066f32),
                s(113u8),
                t(&b, &[4, 3]),
                s(0.00705f32),
                s(114u8),
                s(0.0107f32),
                s(118u8),
            ],
        );
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[168, 115, 255, 1, 66, 151]);
    }

    #[test]
    fn conv_integer_and_qlinear_conv() {
        let op = build(
            "ConvInteger",
            10,
            &[("pads", Attribute::Ints(vec![1, 1, 1, 1]))],
            3,
            1,
        );
        let x: Vec<u8> = (2..11).collect();
        let y = eval(
            op.as_ref(),
            &[t(&x, &[1, 1, 3, 3]), t(&[1u8; 4], &[1, 1, 2, 2]), s(1u8)],
        );
        assert_eq!(
            y[0].as_slice::<i32>().unwrap(),
            &[1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9]
        );
        let op = build("QLinearConv", 10, &[], 8, 1);
        let x = [
            255u8, 174, 162, 25, 203, 168, 58, 15, 59, 237, 95, 129, 0, 64, 56, 242, 153, 221, 168,
            12, 166, 232, 56, 150, 242,
        ];
        let y = eval(
            op.as_ref(),
            &[
                t(&x, &[1, 1, 5, 5]),
                s(0.003_692_047_f32),
                s(132u8),
                t(&[2u8], &[1, 1, 1, 1]),
                t(&[0.001_727_945_8_f32], &[1]),
                s(0u8),
                s(0.001_626_812_6_f32),
                s(123u8),
            ],
        );
        assert_eq!(
            y[0].as_slice::<u8>().unwrap(),
            &[
                124, 123, 123, 122, 124, 123, 122, 122, 122, 124, 123, 123, 122, 122, 122, 124,
                123, 124, 123, 122, 123, 124, 122, 123, 124
            ]
        );
    }
}
