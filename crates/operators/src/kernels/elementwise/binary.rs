//! Binary elementwise ops with multidirectional broadcasting: arithmetic, comparisons, logic,
//! bit operations and PRelu.

use super::broadcast::{broadcast_fact_shapes, unary_map, BroadcastPlan};
use super::num::{dispatch_int, Arith, Compute};
use crate::{BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{dispatch_float, dispatch_numeric, DType, Element, Tensor};

/// Which function a [`Binary`] op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `Mod` with `fmod = 0`: the result takes the divisor's sign.
    Mod,
    /// `Mod` with `fmod = 1`: the result takes the dividend's sign.
    FMod,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRight,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    PRelu,
}

impl BinaryKind {
    fn is_comparison_or_logic(self) -> bool {
        use BinaryKind::*;
        matches!(
            self,
            Equal | Less | LessOrEqual | Greater | GreaterOrEqual | And | Or | Xor
        )
    }
}

/// The `broadcast`/`axis` attributes of binary ops before opset 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyBroadcast {
    /// `broadcast = 1`: input 1 broadcasts to input 0's shape; otherwise shapes must match.
    pub broadcast: bool,
    /// Axis of input 0 where input 1's dimensions start (suffix alignment when absent).
    pub axis: Option<i64>,
}

/// A binary elementwise op.
#[derive(Debug, Clone)]
pub struct Binary {
    op: &'static str,
    kind: BinaryKind,
    legacy: Option<LegacyBroadcast>,
}

impl Binary {
    /// An op with numpy broadcasting (opset 7 and later).
    pub fn new(op: &'static str, kind: BinaryKind) -> Self {
        Binary {
            op,
            kind,
            legacy: None,
        }
    }

    /// Whether the op broadcasts like numpy (opset 7+), not with the legacy attributes.
    pub fn numpy_broadcasting(&self) -> bool {
        self.legacy.is_none()
    }

    /// The function computed.
    pub fn kind(&self) -> BinaryKind {
        self.kind
    }

    fn out_dtype(&self, a: DType) -> DType {
        if self.kind.is_comparison_or_logic() {
            DType::Bool
        } else {
            a
        }
    }
}

fn build_legacy(
    ctx: &BuildCtx<'_>,
    op: &'static str,
    kind: BinaryKind,
) -> OpResult<Box<dyn Operator>> {
    let broadcast = ctx.attrs.int_or("broadcast", 0)? != 0;
    let axis = ctx.attrs.int("axis")?;
    Ok(Box::new(Binary {
        op,
        kind,
        legacy: Some(LegacyBroadcast { broadcast, axis }),
    }))
}

/// Registers the binary ops.
pub fn register(r: &mut OpRegistry) {
    macro_rules! legacy {
        ($($name:literal $kind:ident),*) => {$(
            r.register_range("", $name, 1, 6, |c| build_legacy(c, $name, BinaryKind::$kind));
            r.register("", $name, 7, |_| Ok(Box::new(Binary::new($name, BinaryKind::$kind))));
        )*};
    }
    legacy!("Add" Add, "Sub" Sub, "Mul" Mul, "Div" Div, "Pow" Pow, "Equal" Equal,
        "Less" Less, "Greater" Greater, "And" And, "Or" Or, "Xor" Xor);
    macro_rules! modern {
        ($($name:literal $since:literal $kind:ident),*) => {$(
            r.register("", $name, $since, |_| Ok(Box::new(Binary::new($name, BinaryKind::$kind))));
        )*};
    }
    modern!("LessOrEqual" 12 LessOrEqual, "GreaterOrEqual" 12 GreaterOrEqual,
        "BitwiseAnd" 18 BitwiseAnd, "BitwiseOr" 18 BitwiseOr, "BitwiseXor" 18 BitwiseXor,
        "PRelu" 1 PRelu);
    r.register("", "Mod", 10, |c| {
        let kind = match c.attrs.int_or("fmod", 0)? {
            0 => BinaryKind::Mod,
            1 => BinaryKind::FMod,
            v => {
                return Err(OpError::attribute(
                    "fmod",
                    format!("expected 0 or 1, got {v}"),
                ))
            }
        };
        Ok(Box::new(Binary::new("Mod", kind)))
    });
    r.register("", "BitShift", 11, |c| {
        let kind = match c.attrs.string("direction")?.as_deref() {
            Some("LEFT") => BinaryKind::ShiftLeft,
            Some("RIGHT") => BinaryKind::ShiftRight,
            other => {
                return Err(OpError::attribute(
                    "direction",
                    format!("expected \"LEFT\" or \"RIGHT\", got {other:?}"),
                ))
            }
        };
        Ok(Box::new(Binary::new("BitShift", kind)))
    });
}

/// `base ^ e` for integers: exact (wrapping) for `e >= 0`; for `e < 0` the truncated value of
/// the real power (0 unless the base is ±1).
fn int_pow<T: Arith>(base: T, e: i64) -> T {
    if e < 0 {
        let minus_one = T::ZERO.minus(T::ONE);
        return if base == T::ONE {
            T::ONE
        } else if minus_one < T::ZERO && base == minus_one {
            if e & 1 == 1 {
                base
            } else {
                T::ONE
            }
        } else {
            T::ZERO
        };
    }
    let (mut acc, mut b, mut e) = (T::ONE, base, e);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.times(b);
        }
        b = b.times(b);
        e >>= 1;
    }
    acc
}

/// Shifts as ONNX `BitShift` defines them: a count outside `0..bit width` gives 0, except
/// that right shifts of negative values then give -1 (the sign fill). Signed left shifts
/// shift the two's-complement bits.
trait Shift: Copy {
    fn shl_or_zero(self, by: Self) -> Self;
    fn shr_or_zero(self, by: Self) -> Self;
}
macro_rules! shift_impl {
    ($fill:expr; $($t:ty),*) => {$(
        impl Shift for $t {
            #[inline(always)]
            fn shl_or_zero(self, by: Self) -> Self {
                u32::try_from(by).ok().and_then(|s| self.checked_shl(s)).unwrap_or(0)
            }
            #[inline(always)]
            fn shr_or_zero(self, by: Self) -> Self {
                u32::try_from(by)
                    .ok()
                    .and_then(|s| self.checked_shr(s))
                    .unwrap_or_else(|| $fill(self))
            }
        }
    )*};
}
shift_impl!(|_| 0; u8, u16, u32, u64);
shift_impl!(|v: Self| if v < 0 { -1 } else { 0 }; i8, i16, i32, i64);

impl Binary {
    fn align_legacy(&self, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
        match self.legacy {
            None
            | Some(LegacyBroadcast {
                broadcast: true,
                axis: None,
            }) => Ok(b.clone()),
            Some(LegacyBroadcast {
                broadcast: false, ..
            }) => {
                if a.shape() != b.shape() {
                    return Err(OpError::invalid(
                        1,
                        format!(
                            "shape {:?} differs from input 0's {:?} and broadcast is 0",
                            b.shape(),
                            a.shape()
                        ),
                    ));
                }
                Ok(b.clone())
            }
            Some(LegacyBroadcast {
                broadcast: true,
                axis: Some(axis),
            }) => {
                let rank = a.rank() as i64;
                let ax = if axis < 0 { axis + rank } else { axis };
                if ax < 0 || ax + b.rank() as i64 > rank {
                    return Err(OpError::attribute(
                        "axis",
                        format!(
                            "{axis} cannot align input 1 of shape {:?} with input 0 of shape {:?}",
                            b.shape(),
                            a.shape()
                        ),
                    ));
                }
                let ax = ax as usize;
                let mut shape = vec![1; a.rank()];
                shape[ax..ax + b.rank()].copy_from_slice(b.shape());
                Ok(b.reshape(&shape)?)
            }
        }
    }

    // PRelu's `x < 0` is always false for unsigned types, which is intended.
    #[allow(clippy::absurd_extreme_comparisons)]
    fn compute(
        &self,
        ctx: &EvalCtx<'_>,
        plan: &BroadcastPlan<2>,
        a: &Tensor,
        b: &Tensor,
        out: &mut Tensor,
    ) -> OpResult<()> {
        use BinaryKind::*;
        let unsupported = || OpError::UnsupportedDType {
            index: 0,
            dtype: a.dtype(),
        };
        macro_rules! numeric {
            ($T:ident, |$x:ident, $y:ident| $body:expr) => {
                dispatch_numeric!(a.dtype(), $T => {
                    plan.binary(ctx, a.as_slice::<$T>()?, b.as_slice::<$T>()?, out.as_slice_mut::<$T>()?,
                        |&$x: &$T, &$y: &$T| $body);
                    Ok(())
                }, Err(unsupported()))
            };
        }
        macro_rules! compare {
            (|$x:ident, $y:ident| $body:expr) => {{
                if a.dtype() == DType::Bool {
                    plan.binary(ctx, a.as_bool_slice()?, b.as_bool_slice()?, out.as_bool_slice_mut()?,
                        |&$x: &u8, &$y: &u8| u8::from($body));
                    return Ok(());
                }
                if a.dtype() == DType::String {
                    plan.binary(ctx, a.as_strings()?, b.as_strings()?, out.as_bool_slice_mut()?,
                        |$x: &String, $y: &String| u8::from($body));
                    return Ok(());
                }
                dispatch_numeric!(a.dtype(), T => {
                    plan.binary(ctx, a.as_slice::<T>()?, b.as_slice::<T>()?, out.as_bool_slice_mut()?,
                        |&$x: &T, &$y: &T| u8::from($body));
                    Ok(())
                }, Err(unsupported()))
            }};
        }
        macro_rules! logic {
            (|$x:ident, $y:ident| $body:expr) => {{
                if a.dtype() != DType::Bool {
                    return Err(unsupported());
                }
                plan.binary(
                    ctx,
                    a.as_bool_slice()?,
                    b.as_bool_slice()?,
                    out.as_bool_slice_mut()?,
                    |&$x: &u8, &$y: &u8| $body,
                );
                Ok(())
            }};
        }
        macro_rules! bitwise {
            (|$x:ident, $y:ident| $body:expr) => {
                dispatch_int!(a.dtype(), T => {
                    plan.binary(ctx, a.as_slice::<T>()?, b.as_slice::<T>()?, out.as_slice_mut::<T>()?,
                        |&$x: &T, &$y: &T| $body);
                    Ok(())
                }, Err(unsupported()))
            };
        }
        macro_rules! shift {
            ($method:ident) => {
                dispatch_int!(a.dtype(), T => shift!(T, $method), Err(unsupported()))
            };
            ($T:ty, $method:ident) => {{
                plan.binary(
                    ctx,
                    a.as_slice::<$T>()?,
                    b.as_slice::<$T>()?,
                    out.as_slice_mut::<$T>()?,
                    |&x: &$T, &y: &$T| x.$method(y),
                );
                Ok(())
            }};
        }
        match self.kind {
            Add => numeric!(T, |x, y| x.plus(y)),
            Sub => numeric!(T, |x, y| x.minus(y)),
            Mul => numeric!(T, |x, y| x.times(y)),
            Div => numeric!(T, |x, y| x.divide(y)),
            Mod => numeric!(T, |x, y| x.rem_py(y)),
            FMod => numeric!(T, |x, y| x.rem_c(y)),
            PRelu => numeric!(T, |x, s| if x < T::ZERO { x.times(s) } else { x }),
            Pow => self.pow(ctx, plan, a, b, out),
            Equal => compare!(|x, y| x == y),
            Less => compare!(|x, y| x < y),
            LessOrEqual => compare!(|x, y| x <= y),
            Greater => compare!(|x, y| x > y),
            GreaterOrEqual => compare!(|x, y| x >= y),
            And => logic!(|x, y| x & y),
            Or => logic!(|x, y| x | y),
            Xor => logic!(|x, y| x ^ y),
            BitwiseAnd => bitwise!(|x, y| x & y),
            BitwiseOr => bitwise!(|x, y| x | y),
            BitwiseXor => bitwise!(|x, y| x ^ y),
            ShiftLeft => shift!(shl_or_zero),
            ShiftRight => shift!(shr_or_zero),
        }
    }

    /// `Pow` with independent base and exponent dtypes; the result has the base's dtype.
    fn pow(
        &self,
        ctx: &EvalCtx<'_>,
        plan: &BroadcastPlan<2>,
        a: &Tensor,
        b: &Tensor,
        out: &mut Tensor,
    ) -> OpResult<()> {
        let bad_exponent = || OpError::UnsupportedDType {
            index: 1,
            dtype: b.dtype(),
        };
        if !b.dtype().is_float() && !b.dtype().is_integer() {
            return Err(bad_exponent());
        }
        if a.dtype().is_float() {
            let e = if b.dtype() == a.dtype() {
                b.clone()
            } else {
                b.cast(a.dtype())?
            };
            return dispatch_float!(a.dtype(), T => {
                let (x, e, o) = (a.as_slice::<T>()?, e.as_slice::<T>()?, out.as_slice_mut::<T>()?);
                if e.len() == 1 && x.len() == o.len() {
                    // Scalar exponent: common powers without powf.
                    let p = e[0].to_c();
                    let pf = p.to_f64();
                    if pf == 1.0 {
                        unary_map(ctx, x, o, |&v: &T| v)
                    } else if pf == 2.0 {
                        unary_map(ctx, x, o, |&v: &T| { let c = v.to_c(); T::from_c(c * c) })
                    } else if pf == 3.0 {
                        unary_map(ctx, x, o, |&v: &T| { let c = v.to_c(); T::from_c(c * c * c) })
                    } else if pf == 0.5 {
                        unary_map(ctx, x, o, |&v: &T| T::from_c(v.to_c().sqrt()))
                    } else if pf == -1.0 {
                        unary_map(ctx, x, o, |&v: &T| T::from_c(1.0 / v.to_c()))
                    } else {
                        unary_map(ctx, x, o, |&v: &T| T::from_c(v.to_c().powf(p)))
                    }
                } else {
                    plan.binary(ctx, x, e, o, |&v: &T, &p: &T| T::from_c(v.to_c().powf(p.to_c())));
                }
                Ok(())
            }, Err(bad_exponent()));
        }
        if b.dtype().is_integer() {
            let e = b.cast(DType::I64)?;
            let e = e.as_slice::<i64>()?;
            dispatch_int!(a.dtype(), T => {
                plan.binary(ctx, a.as_slice::<T>()?, e, out.as_slice_mut::<T>()?,
                    |&v: &T, &p: &i64| int_pow(v, p));
                Ok(())
            }, Err(OpError::UnsupportedDType { index: 0, dtype: a.dtype() }))
        } else {
            let e = b.cast(DType::F64)?;
            let e = e.as_slice::<f64>()?;
            dispatch_int!(a.dtype(), T => {
                plan.binary(ctx, a.as_slice::<T>()?, e, out.as_slice_mut::<T>()?,
                    |&v: &T, &p: &f64| T::from_f64(v.to_f64().powf(p)));
                Ok(())
            }, Err(OpError::UnsupportedDType { index: 0, dtype: a.dtype() }))
        }
    }
}

impl Operator for Binary {
    fn op_type(&self) -> &str {
        self.op
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(a), Some(b)) = (inputs.first(), inputs.get(1)) else {
            return Ok(None);
        };
        let shape = if self.legacy.is_some() || self.kind == BinaryKind::PRelu {
            a.shape.clone()
        } else {
            broadcast_fact_shapes(&[a, b])?
        };
        Ok(Some(vec![Fact {
            dtype: a.dtype.map(|d| self.out_dtype(d)),
            shape,
            value: None,
        }]))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        let facts: Vec<&Fact> = inputs.iter().collect();
        match broadcast_fact_shapes(&facts) {
            Ok(Some(dims)) => dims.iter().map(|d| d.known().unwrap_or(1) as u64).product(),
            _ => 0,
        }
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let a = inputs.tensor(0)?;
        let b = self.align_legacy(a, inputs.tensor(1)?)?;
        if self.kind != BinaryKind::Pow && a.dtype() != b.dtype() {
            return Err(OpError::invalid(
                1,
                format!(
                    "{} needs equal dtypes, got {} and {}",
                    self.op,
                    a.dtype(),
                    b.dtype()
                ),
            ));
        }
        let (a, mut b) = (a.contiguous(), b.contiguous());
        if self.kind == BinaryKind::PRelu {
            b = channel_slope(&a, b)?;
        }
        let plan = if self.legacy.is_some() || self.kind == BinaryKind::PRelu {
            BroadcastPlan::to_shape([a.shape(), b.shape()], a.shape())?
        } else {
            BroadcastPlan::new([a.shape(), b.shape()])?
        };
        let mut out = ctx.alloc(self.out_dtype(a.dtype()), plan.out_shape())?;
        self.compute(ctx, &plan, &a, &b, &mut out)?;
        Ok(vec![out.into()])
    }
}

/// PRelu before opset 7 took one slope per channel (axis 1) as a 1-D tensor; numpy
/// broadcasting would align it with the last axis instead. A 1-D slope of length C that
/// cannot broadcast from the right is viewed as `[C, 1, ..., 1]`.
fn channel_slope(x: &Tensor, slope: Tensor) -> OpResult<Tensor> {
    let rank = x.rank();
    let per_channel = slope.rank() == 1
        && rank >= 2
        && slope.shape()[0] == x.shape()[1]
        && slope.shape()[0] != x.shape()[rank - 1]
        && slope.shape()[0] != 1;
    if !per_channel {
        return Ok(slope);
    }
    let mut shape = vec![1; rank - 1];
    shape[0] = slope.shape()[0];
    Ok(slope.reshape(&shape)?)
}
