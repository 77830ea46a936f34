//! Ops that create or convert tensors: Cast, CastLike, BitCast, Constant, ConstantOfShape, Range,
//! EyeLike, Trilu, Dropout, Pad.

use super::common::{
    checked_numel, fact, int_input, prod, row_major_strides, scalar_of, sizes_from, unique_axes,
    Elems, ElemsMut, MAX_ELEMENTS,
};
use crate::kernels::lowp::{cast_low_precision, Encode, RoundMode};
use crate::kernels::mt19937::Mt19937;
use crate::{
    op_boilerplate, Attribute, BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult,
    Operator, Value,
};
use strata_tensor::{dispatch_float, dispatch_numeric, DType, Element, Tensor};

pub(super) fn register(r: &mut OpRegistry) {
    r.register("", "Cast", 1, |b| {
        Ok(Box::new(Cast {
            to: cast_target(b)?,
            opts: cast_options(b)?,
        }))
    });
    r.register("", "CastLike", 15, |b| {
        Ok(Box::new(CastLike {
            opts: cast_options(b)?,
        }))
    });
    r.register("", "BitCast", 26, build_bitcast);
    r.register("", "Constant", 1, build_constant);
    r.register("", "ConstantOfShape", 9, |b| {
        let value = match b.attrs.tensor("value")? {
            None => Tensor::scalar(0.0f32),
            Some(v) if v.len() == 1 && v.dtype() != DType::String => v.contiguous(),
            Some(v) => {
                return Err(OpError::attribute(
                    "value",
                    format!(
                        "must be one plain element, got {} {:?}",
                        v.dtype(),
                        v.shape()
                    ),
                ))
            }
        };
        Ok(Box::new(ConstantOfShape { value }))
    });
    r.register("", "Range", 11, |_| Ok(Box::new(Range)));
    r.register("", "EyeLike", 9, |b| {
        let dtype = match b.attrs.int("dtype")? {
            None => None,
            Some(code) => Some(dtype_code("dtype", code)?),
        };
        Ok(Box::new(EyeLike {
            dtype,
            k: b.attrs.int_or("k", 0)?,
        }))
    });
    r.register("", "Trilu", 14, |b| {
        Ok(Box::new(Trilu {
            upper: b.attrs.int_or("upper", 1)? != 0,
        }))
    });
    r.register("", "Dropout", 1, |b| {
        Ok(Box::new(Dropout {
            seed: b.attrs.int("seed")?,
            ratio: if b.opset < 12 {
                b.attrs.float_or("ratio", 0.5)?
            } else {
                0.5
            },
            inputs_from_opset12: b.opset >= 12,
            bool_mask: b.opset >= 10,
            mask: b.output_count >= 2,
        }))
    });
    r.register("", "Pad", 1, build_pad);
}

fn dtype_code(name: &str, code: i64) -> OpResult<DType> {
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| OpError::attribute(name, format!("{code} is not a tensor element type")))
}

// ----- Cast ---------------------------------------------------------------------------------

fn cast_target(b: &BuildCtx<'_>) -> OpResult<DType> {
    match b.attrs.get("to") {
        Some(Attribute::Int(code)) => dtype_code("to", *code),
        Some(Attribute::String(name)) => {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            DType::ALL
                .iter()
                .copied()
                .find(|d| d.onnx_name() == name)
                .ok_or_else(|| OpError::attribute("to", format!("unknown type name '{name}'")))
        }
        Some(_) => Err(OpError::attribute(
            "to",
            "expected an int (or a type name before opset 6)",
        )),
        None => Err(OpError::attribute("to", "required")),
    }
}

/// The `saturate` and `round_mode` attributes of Cast and CastLike.
fn cast_options(b: &BuildCtx<'_>) -> OpResult<Encode> {
    let mode = b.attrs.string_or("round_mode", "up")?;
    let round = RoundMode::parse(&mode).ok_or_else(|| {
        OpError::attribute(
            "round_mode",
            format!("expected up, down or nearest, got '{mode}'"),
        )
    })?;
    Ok(Encode {
        saturate: b.attrs.int_or("saturate", 1)? != 0,
        round,
    })
}

/// `Cast`: converts elements to another type; float8, float4, float8e8m0 and 2/4-bit integer
/// sources and targets go through f32 or i64 (see [`crate::kernels::lowp`]).
#[derive(Debug, Clone, Copy)]
pub struct Cast {
    /// Target element type.
    pub to: DType,
    /// Saturation of float8 targets and rounding of float8e8m0 targets.
    pub opts: Encode,
}

/// Casts with ONNX semantics, low-precision types included.
fn cast_value(x: &Tensor, to: DType, opts: Encode) -> OpResult<Tensor> {
    match cast_low_precision(x, to, opts)? {
        Some(t) => Ok(t),
        None => Ok(x.cast(to)?),
    }
}

impl Operator for Cast {
    op_boilerplate!("Cast");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                dtype: Some(self.to),
                shape: f.shape.clone(),
                value: None,
            }]
        }))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        Ok(vec![
            cast_value(inputs.tensor(0)?, self.to, self.opts)?.into()
        ])
    }
}

/// `CastLike`: converts input 0 to the element type of input 1.
#[derive(Debug, Clone, Copy)]
pub struct CastLike {
    /// As for [`Cast::opts`].
    pub opts: Encode,
}

impl Operator for CastLike {
    op_boilerplate!("CastLike");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(x), Some(like)) = (inputs.first(), inputs.get(1)) else {
            return Ok(None);
        };
        Ok(Some(vec![Fact {
            dtype: like.dtype,
            shape: x.shape.clone(),
            value: None,
        }]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let to = inputs.tensor(1)?.dtype();
        Ok(vec![cast_value(inputs.tensor(0)?, to, self.opts)?.into()])
    }
}

// ----- BitCast ------------------------------------------------------------------------------

/// Width in bits of one element of a plain dtype (sub-byte types count their real width).
fn bit_width(dtype: DType) -> usize {
    match dtype {
        DType::U4 | DType::I4 | DType::F4E2M1 => 4,
        DType::U2 | DType::I2 => 2,
        other => other.size_of() * 8,
    }
}

/// `BitCast` (opset 26): reinterprets each element's bits as another type of the same width.
#[derive(Debug, Clone, Copy)]
pub struct BitCast {
    /// Target element type.
    pub to: DType,
}

fn build_bitcast(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let to = cast_target(b)?;
    if !to.is_plain() {
        return Err(OpError::attribute("to", "cannot bit-cast to string"));
    }
    Ok(Box::new(BitCast { to }))
}

impl BitCast {
    /// Re-normalises one stored byte of a sub-byte or bool type for the target type: masked
    /// to the width, sign-extended for signed targets, bools as 0/1.
    fn fix_byte(self, b: u8, bits: usize) -> u8 {
        let shift = 8 - bits;
        match self.to {
            DType::Bool => u8::from(b != 0),
            DType::I4 | DType::I2 => (((b << shift) as i8) >> shift) as u8,
            _ if bits < 8 => (b << shift) >> shift,
            _ => b,
        }
    }
}

impl Operator for BitCast {
    op_boilerplate!("BitCast");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                dtype: Some(self.to),
                shape: f.shape.clone(),
                value: None,
            }]
        }))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let from = x.dtype();
        if !from.is_plain() || bit_width(from) != bit_width(self.to) {
            return Err(OpError::invalid(
                0,
                format!(
                    "cannot bit-cast {from} ({} bits) to {} ({} bits)",
                    bit_width(from),
                    self.to,
                    bit_width(self.to)
                ),
            ));
        }
        let mut out = ctx.alloc(self.to, x.shape())?;
        let dst = out.raw_bytes_mut()?;
        dst.copy_from_slice(x.raw_bytes()?);
        let bits = bit_width(self.to);
        if bits < 8 || self.to == DType::Bool {
            dst.iter_mut().for_each(|b| *b = self.fix_byte(*b, bits));
        }
        Ok(vec![out.into()])
    }
}

// ----- Constant -----------------------------------------------------------------------------

/// `Constant`: outputs the tensor held in its attributes.
#[derive(Debug, Clone)]
pub struct Constant {
    /// The value.
    pub value: Tensor,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn build_constant(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    const NAMES: [&str; 8] = [
        "value",
        "sparse_value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "value_string",
        "value_strings",
    ];
    let present: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| b.attrs.contains(n))
        .collect();
    let [name] = present.as_slice() else {
        return Err(OpError::attribute(
            "value",
            format!("exactly one value attribute is required, found {present:?}"),
        ));
    };
    let wrong = || OpError::attribute(name, "has the wrong attribute type");
    let value = match (*name, b.attrs.get(name)) {
        ("value", Some(Attribute::Tensor(t))) => t.clone(),
        ("sparse_value", _) => {
            return Err(OpError::Unsupported(
                "Constant with a sparse_value attribute".into(),
            ))
        }
        ("value_float", Some(Attribute::Float(v))) => Tensor::scalar(*v),
        ("value_floats", Some(Attribute::Floats(v))) => Tensor::from_slice(v, &[v.len()])?,
        ("value_int", Some(Attribute::Int(v))) => Tensor::scalar(*v),
        ("value_ints", Some(Attribute::Ints(v))) => Tensor::from_slice(v, &[v.len()])?,
        ("value_string", Some(Attribute::String(s))) => Tensor::from_strings(vec![lossy(s)], &[])?,
        ("value_strings", Some(Attribute::Strings(v))) => {
            Tensor::from_strings(v.iter().map(|s| lossy(s)).collect(), &[v.len()])?
        }
        _ => return Err(wrong()),
    };
    Ok(Box::new(Constant { value }))
}

impl Operator for Constant {
    op_boilerplate!("Constant");

    fn infer(&self, _inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(Some(vec![Fact::constant(self.value.clone())]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, _inputs: Inputs) -> OpResult<Vec<Value>> {
        Ok(vec![self.value.clone().into()])
    }
}

/// `ConstantOfShape`: a tensor of the shape given by input 0, filled with one value.
#[derive(Debug, Clone)]
pub struct ConstantOfShape {
    /// The fill value (one element; its dtype is the output's).
    pub value: Tensor,
}

impl Operator for ConstantOfShape {
    op_boilerplate!("ConstantOfShape");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        match inputs.first().and_then(|f| f.value.as_ref()) {
            Some(v) => {
                let shape = sizes_from(0, &v.to_i64_vec()?)?;
                checked_numel(&shape)?;
                Ok(Some(vec![fact(Some(self.value.dtype()), &shape)]))
            }
            None => Ok(None),
        }
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let shape = sizes_from(
            0,
            &int_input(&inputs, 0)?.ok_or(OpError::MissingInput { index: 0 })?,
        )?;
        checked_numel(&shape)?;
        let mut out = ctx.alloc(self.value.dtype(), &shape)?;
        let v = Elems::of(&self.value)?;
        if matches!(v, Elems::Bytes(b, _) if b.iter().any(|&x| x != 0)) {
            ElemsMut::of(&mut out)?.fill(&v)?;
        }
        Ok(vec![out.into()])
    }
}

// ----- Range, EyeLike, Trilu ----------------------------------------------------------------

/// `Range`: `start, start + delta, ...` up to but excluding `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Range;

fn range_typed<T: Element>(start: &Tensor, limit: &Tensor, delta: &Tensor) -> OpResult<Tensor> {
    let one = |i: usize, t: &Tensor| -> OpResult<T> {
        t.to_vec::<T>()?
            .first()
            .copied()
            .ok_or_else(|| OpError::invalid(i, "must hold one value"))
    };
    let (s, l, d) = (one(0, start)?, one(1, limit)?, one(2, delta)?);
    let too_many = |n: f64| OpError::Shape(format!("Range would have {n} elements (limit 2^34)"));
    if T::IS_FLOAT {
        let (s, l, d) = (s.to_f64(), l.to_f64(), d.to_f64());
        let n = ((l - s) / d).ceil().max(0.0);
        if d == 0.0 || !n.is_finite() {
            return Err(OpError::invalid(
                2,
                format!("delta {d} gives no finite range from {s} to {l}"),
            ));
        }
        if n > MAX_ELEMENTS as f64 {
            return Err(too_many(n));
        }
        let v: Vec<T> = (0..n as usize)
            .map(|i| T::from_f64(s + i as f64 * d))
            .collect();
        Ok(Tensor::from_vec(v, &[n as usize])?)
    } else {
        let (s, l, d) = (s.to_i128(), l.to_i128(), d.to_i128());
        if d == 0 {
            return Err(OpError::invalid(2, "delta is 0"));
        }
        let num = l - s;
        let n = (num / d + i128::from(num % d != 0 && (num % d > 0) == (d > 0))).max(0);
        if n > MAX_ELEMENTS as i128 {
            return Err(too_many(n as f64));
        }
        let v: Vec<T> = (0..n).map(|i| T::from_i128(s + i * d)).collect();
        Ok(Tensor::from_vec(v, &[n as usize])?)
    }
}

impl Operator for Range {
    op_boilerplate!("Range");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (s, l, d) = (inputs.tensor(0)?, inputs.tensor(1)?, inputs.tensor(2)?);
        let dtype = s.dtype();
        for (i, t) in [(1, l), (2, d)] {
            if t.dtype() != dtype {
                return Err(OpError::UnsupportedDType {
                    index: i,
                    dtype: t.dtype(),
                });
            }
        }
        let out = dispatch_numeric!(dtype, T => range_typed::<T>(s, l, d)?,
            return Err(OpError::UnsupportedDType { index: 0, dtype }));
        Ok(vec![out.into()])
    }
}

/// A one-element tensor holding 1 in `dtype` (numeric or bool).
fn one_of(dtype: DType, index: usize) -> OpResult<Tensor> {
    if dtype == DType::Bool {
        return Ok(Tensor::from_bools(&[true], &[])?);
    }
    dispatch_numeric!(dtype, T => Ok(Tensor::scalar(T::from_f64(1.0))), Err(OpError::UnsupportedDType { index, dtype }))
}

/// `EyeLike`: a 2-D tensor shaped like the input with ones on diagonal `k`.
#[derive(Debug, Clone, Copy)]
pub struct EyeLike {
    /// Output dtype; the input's when `None`.
    pub dtype: Option<DType>,
    /// Diagonal offset (positive: above the main diagonal).
    pub k: i64,
}

impl Operator for EyeLike {
    op_boilerplate!("EyeLike");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                dtype: self.dtype.or(f.dtype),
                shape: f.shape.clone(),
                value: None,
            }]
        }))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let [rows, cols] = <[usize; 2]>::try_from(x.shape()).map_err(|_| {
            OpError::invalid(
                0,
                format!("expected a 2-D tensor, got shape {:?}", x.shape()),
            )
        })?;
        let dtype = self.dtype.unwrap_or(x.dtype());
        let one = one_of(dtype, 0)?;
        let one = Elems::of(&one)?;
        let mut out = ctx.alloc(dtype, &[rows, cols])?;
        let mut dst = ElemsMut::of(&mut out)?;
        for i in 0..rows {
            let j = i as i64 + self.k;
            if (0..cols as i64).contains(&j) {
                dst.copy_block(i * cols + j as usize, &one, 0, 1)?;
            }
        }
        Ok(vec![out.into()])
    }
}

/// `Trilu`: keeps the upper (or lower) triangle of the last two axes relative to diagonal `k`
/// and zeroes the rest.
#[derive(Debug, Clone, Copy)]
pub struct Trilu {
    /// Keep the upper triangle (`j - i >= k`) rather than the lower (`j - i <= k`).
    pub upper: bool,
}

impl Operator for Trilu {
    op_boilerplate!("Trilu");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                value: None,
                ..f.clone()
            }]
        }))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        if x.rank() < 2 {
            return Err(OpError::invalid(
                0,
                format!("expected rank >= 2, got shape {:?}", x.shape()),
            ));
        }
        let k = match int_input(&inputs, 1)? {
            None => 0,
            Some(v) => *v
                .first()
                .ok_or_else(|| OpError::invalid(1, "k must hold one value"))?,
        };
        let r = x.rank();
        let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
        let src = Elems::of(&x)?;
        let mut out = ctx.alloc(x.dtype(), x.shape())?;
        let mut dst = ElemsMut::of(&mut out)?;
        let c = cols as i64;
        for m in 0..prod(&x.shape()[..r - 2]) {
            for i in 0..rows {
                let d = i as i64 + k;
                let (lo, hi) = if self.upper {
                    (d.clamp(0, c), c)
                } else {
                    (0, (d + 1).clamp(0, c))
                };
                if hi > lo {
                    let at = (m * rows + i) * cols + lo as usize;
                    dst.copy_block(at, &src, at, (hi - lo) as usize)?;
                }
            }
        }
        Ok(vec![out.into()])
    }
}

// ----- Dropout ------------------------------------------------------------------------------

/// `Dropout`: at inference the identity, with an all-true mask when requested; in training
/// mode (opset 12 on, input 2 true) each element is kept with probability `1 - ratio` and
/// scaled by `1 / (1 - ratio)`. The draws are NumPy's `RandomState(seed).uniform(0, 1)`, so a
/// `seed` attribute reproduces the ONNX reference exactly; without one the seed comes from the
/// clock.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    /// The `seed` attribute.
    pub seed: Option<i64>,
    /// Drop ratio from the attribute (before opset 12).
    pub ratio: f32,
    /// Whether `ratio` and `training_mode` come from inputs 1 and 2 (opset 12 on).
    pub inputs_from_opset12: bool,
    /// Whether the mask is bool (opset 10 on) rather than the input's type.
    pub bool_mask: bool,
    /// Whether the node asks for the mask output.
    pub mask: bool,
}

impl Dropout {
    fn rng(&self) -> Mt19937 {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as i64 ^ d.as_secs() as i64)
        });
        Mt19937::new(seed as u32)
    }

    /// Training mode: random mask, kept elements scaled by `1 / (1 - ratio)`.
    fn train(&self, ctx: &EvalCtx<'_>, x: &Tensor, ratio: f64) -> OpResult<Vec<Value>> {
        if !(0.0..1.0).contains(&ratio) {
            return Err(OpError::invalid(
                1,
                format!("ratio must be in [0, 1), got {ratio}"),
            ));
        }
        let x = x.contiguous();
        let mut rng = self.rng();
        let keep: Vec<bool> = (0..x.len()).map(|_| rng.next_f64() >= ratio).collect();
        let scale = 1.0 / (1.0 - ratio);
        let mut y = ctx.alloc(x.dtype(), x.shape())?;
        dispatch_float!(x.dtype(), T => {
            let src = x.as_slice::<T>()?.iter().zip(&keep);
            for (o, (&v, &k)) in y.as_slice_mut::<T>()?.iter_mut().zip(src) {
                *o = T::from_f64(v.to_f64() * if k { scale } else { 0.0 });
            }
        }, return Err(OpError::UnsupportedDType { index: 0, dtype: x.dtype() }));
        let mut out: Vec<Value> = vec![y.into()];
        if self.mask {
            out.push(Tensor::from_bools(&keep, x.shape())?.into());
        }
        Ok(out)
    }
}

impl Operator for Dropout {
    op_boilerplate!("Dropout");

    fn is_deterministic(&self) -> bool {
        self.seed.is_some()
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(x) = inputs.first() else {
            return Ok(None);
        };
        let mut out = vec![x.clone()];
        if self.mask {
            let dtype = if self.bool_mask {
                Some(DType::Bool)
            } else {
                x.dtype
            };
            out.push(Fact {
                dtype,
                shape: x.shape.clone(),
                value: None,
            });
        }
        Ok(Some(out))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        if self.inputs_from_opset12 {
            let training = match inputs.opt_tensor(2)? {
                Some(t) => t.first_as_f64()? != 0.0,
                None => false,
            };
            let ratio = match inputs.opt_tensor(1)? {
                Some(t) => t.first_as_f64()?,
                None => 0.5,
            };
            if training && ratio != 0.0 {
                return self.train(ctx, x, ratio);
            }
        }
        let mut out: Vec<Value> = vec![x.clone().into()];
        if self.mask {
            let dtype = if self.bool_mask {
                DType::Bool
            } else {
                x.dtype()
            };
            let one = one_of(dtype, 0)?;
            let mut m = ctx.alloc(dtype, x.shape())?;
            ElemsMut::of(&mut m)?.fill(&Elems::of(&one)?)?;
            out.push(m.into());
        }
        Ok(out)
    }
}

// ----- Pad ----------------------------------------------------------------------------------

/// Padding mode of [`Pad`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Fill with a constant.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Edge,
    /// Wrap around.
    Wrap,
}

/// `Pad`: pads (or crops, for negative pads) each axis.
#[derive(Debug, Clone)]
pub struct Pad {
    /// The mode.
    pub mode: PadMode,
    /// Pads from the attribute (before opset 11): all begins then all ends.
    pub pads: Option<Vec<i64>>,
    /// Constant value from the attribute (before opset 11).
    pub value: f32,
}

fn build_pad(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let mode = match b.attrs.string_or("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" if b.opset >= 19 => PadMode::Wrap,
        other => {
            return Err(OpError::attribute(
                "mode",
                format!("'{other}' is not supported at opset {}", b.opset),
            ))
        }
    };
    let pads = if b.opset < 11 {
        let name = if b.opset < 2 { "paddings" } else { "pads" };
        Some(
            b.attrs
                .ints(name)?
                .ok_or_else(|| OpError::attribute(name, "required before opset 11"))?,
        )
    } else {
        None
    };
    let value = if b.opset < 11 {
        b.attrs.float_or("value", 0.0)?
    } else {
        0.0
    };
    Ok(Box::new(Pad { mode, pads, value }))
}

fn pad_source(mode: PadMode, o: i64, dim: i64) -> Option<usize> {
    if (0..dim).contains(&o) {
        return Some(o as usize);
    }
    let i = match mode {
        PadMode::Constant => return None,
        PadMode::Edge => o.clamp(0, dim - 1),
        PadMode::Wrap => o.rem_euclid(dim),
        PadMode::Reflect => {
            if dim == 1 {
                0
            } else {
                let period = 2 * (dim - 1);
                let m = o.rem_euclid(period);
                if m >= dim {
                    period - m
                } else {
                    m
                }
            }
        }
    };
    Some(i as usize)
}

impl Operator for Pad {
    op_boilerplate!("Pad");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let rank = data.rank();
        let (pads, axes) = match &self.pads {
            Some(p) => (p.clone(), None),
            None => (
                int_input(&inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?,
                int_input(&inputs, 3)?,
            ),
        };
        let axes = match axes {
            Some(a) => unique_axes(&a, rank, |m| OpError::invalid(3, m))?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(OpError::invalid(
                1,
                format!(
                    "pads {pads:?} must have 2 entries per padded axis ({} axes)",
                    axes.len()
                ),
            ));
        }
        let mut begin = vec![0i64; rank];
        let mut end = vec![0i64; rank];
        for (i, &a) in axes.iter().enumerate() {
            begin[a] = pads[i];
            end[a] = pads[i + axes.len()];
        }
        // Negative pads crop first.
        let mut view = data.clone();
        for a in 0..rank {
            let dim = view.shape()[a];
            let (cb, ce) = (begin[a].min(0).unsigned_abs(), end[a].min(0).unsigned_abs());
            if cb > 0 || ce > 0 {
                let keep = (dim as u64)
                    .checked_sub(cb.saturating_add(ce))
                    .ok_or_else(|| {
                        OpError::invalid(
                            1,
                            format!("pads {pads:?} crop more than dimension {dim} of axis {a}"),
                        )
                    })?;
                view = if keep == 0 {
                    view.slice_axis(a, 0, 0, 1)?
                } else {
                    view.slice_axis(a, cb as usize, (cb + keep) as isize, 1)?
                };
                begin[a] = begin[a].max(0);
                end[a] = end[a].max(0);
            }
        }
        let view = view.contiguous();
        let shape = view.shape().to_vec();
        let mut out_shape = Vec::with_capacity(rank);
        for a in 0..rank {
            let d = (shape[a] as u64)
                .checked_add(begin[a] as u64)
                .and_then(|d| d.checked_add(end[a] as u64))
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| OpError::invalid(1, format!("pads {pads:?} are too large")))?;
            out_shape.push(d);
        }
        checked_numel(&out_shape)?;
        let src = Elems::of(&view)?;
        let mut out = ctx.alloc(view.dtype(), &out_shape)?;
        if out.is_empty() {
            return Ok(vec![out.into()]);
        }
        if self.mode == PadMode::Constant {
            let fill = match (&self.pads, inputs.opt_tensor(2)?) {
                (None, Some(v)) => {
                    if v.dtype() != view.dtype() {
                        return Err(OpError::UnsupportedDType {
                            index: 2,
                            dtype: v.dtype(),
                        });
                    }
                    if v.is_empty() {
                        scalar_of(view.dtype(), 0.0)?
                    } else {
                        v.contiguous()
                    }
                }
                (None, None) => scalar_of(view.dtype(), 0.0)?,
                (Some(_), _) => scalar_of(view.dtype(), f64::from(self.value))?,
            };
            let mut dst = ElemsMut::of(&mut out)?;
            dst.fill(&Elems::of(&fill)?)?;
            if view.is_empty() {
                return Ok(vec![out.into()]);
            }
            if rank == 0 {
                dst.copy_block(0, &src, 0, 1)?;
                return Ok(vec![out.into()]);
            }
            let ostrides = row_major_strides(&out_shape);
            let inner = shape[rank - 1];
            let mut idx = vec![0usize; rank - 1];
            let rows = prod(&shape[..rank - 1]);
            for row in 0..rows {
                let at: usize = (0..rank - 1)
                    .map(|d| (idx[d] + begin[d] as usize) * ostrides[d])
                    .sum::<usize>()
                    + begin[rank - 1] as usize;
                dst.copy_block(at, &src, row * inner, inner)?;
                for d in (0..rank - 1).rev() {
                    idx[d] += 1;
                    if idx[d] < shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            return Ok(vec![out.into()]);
        }
        if let Some(a) = (0..rank).find(|&a| shape[a] == 0 && out_shape[a] > 0) {
            return Err(OpError::invalid(
                0,
                format!("cannot pad empty axis {a} in {:?} mode", self.mode),
            ));
        }
        let sstrides = row_major_strides(&shape);
        let maps: Vec<Vec<usize>> = (0..rank)
            .map(|a| {
                (0..out_shape[a] as i64)
                    .map(|o| {
                        pad_source(self.mode, o - begin[a], shape[a] as i64).unwrap_or(0)
                            * sstrides[a]
                    })
                    .collect()
            })
            .collect();
        let n = prod(&out_shape);
        let mut offsets = Vec::with_capacity(n);
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            offsets.push((0..rank).map(|a| maps[a][idx[a]]).sum());
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < out_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        ElemsMut::of(&mut out)?.gather(0, &src, &offsets)?;
        Ok(vec![out.into()])
    }
}
