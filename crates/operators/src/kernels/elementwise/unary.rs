//! Unary elementwise ops: math functions, activations, Clip, predicates and logical/bitwise
//! negation.

use super::broadcast::unary_map;
use super::num::{dispatch_int, Arith, Compute, Real};
use crate::{BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{dispatch_float, dispatch_numeric, DType, Element, Tensor};

/// Which unary function a [`Unary`] op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum UnaryKind {
    Abs,
    Neg,
    Sign,
    Relu,
    Shrink,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Round,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Sigmoid,
    Tanh,
    Softplus,
    Softsign,
    HardSigmoid,
    HardSwish,
    Elu,
    Selu,
    Celu,
    LeakyRelu,
    ThresholdedRelu,
    Gelu,
    GeluTanh,
    Mish,
    IsNaN,
    IsInf,
    Not,
    BitwiseNot,
}

/// A unary elementwise op with its (validated) float parameters.
///
/// `alpha`/`beta`/`gamma` hold the op's attributes: HardSigmoid (alpha, beta), Elu, Celu,
/// LeakyRelu, ThresholdedRelu (alpha), Selu (alpha, gamma), Shrink (lambd, bias), IsInf
/// (detect_negative, detect_positive as 0/1).
#[derive(Debug, Clone)]
pub struct Unary {
    op: &'static str,
    kind: UnaryKind,
    alpha: f64,
    beta: f64,
    gamma: f64,
}

impl Unary {
    /// A parameterless op.
    pub fn new(op: &'static str, kind: UnaryKind) -> Self {
        Unary {
            op,
            kind,
            alpha: 0.0,
            beta: 0.0,
            gamma: 0.0,
        }
    }

    /// The function computed.
    pub fn kind(&self) -> UnaryKind {
        self.kind
    }

    /// The op's first two float parameters (`alpha`, `beta`; see the type's docs).
    pub fn params(&self) -> (f64, f64) {
        (self.alpha, self.beta)
    }

    fn out_dtype(&self, input: DType) -> DType {
        match self.kind {
            UnaryKind::IsNaN | UnaryKind::IsInf => DType::Bool,
            _ => input,
        }
    }
}

fn float_attr(ctx: &BuildCtx<'_>, name: &str, default: f32) -> OpResult<f64> {
    Ok(f64::from(ctx.attrs.float_or(name, default)?))
}

fn build(ctx: &BuildCtx<'_>, op: &'static str, kind: UnaryKind) -> OpResult<Box<dyn Operator>> {
    let mut u = Unary::new(op, kind);
    use UnaryKind::*;
    match kind {
        HardSigmoid => {
            u.alpha = float_attr(ctx, "alpha", 0.2)?;
            u.beta = float_attr(ctx, "beta", 0.5)?;
        }
        Elu | ThresholdedRelu => u.alpha = float_attr(ctx, "alpha", 1.0)?,
        Celu => {
            u.alpha = float_attr(ctx, "alpha", 1.0)?;
            if u.alpha == 0.0 {
                return Err(OpError::attribute("alpha", "Celu needs a nonzero alpha"));
            }
        }
        LeakyRelu => u.alpha = float_attr(ctx, "alpha", 0.01)?,
        Selu => {
            u.alpha = float_attr(ctx, "alpha", 1.673_263_2)?;
            u.gamma = float_attr(ctx, "gamma", 1.050_701)?;
        }
        Shrink => {
            u.alpha = float_attr(ctx, "lambd", 0.5)?;
            u.beta = float_attr(ctx, "bias", 0.0)?;
        }
        Gelu => match ctx.attrs.string_or("approximate", "none")?.as_str() {
            "none" => {}
            "tanh" => u.kind = GeluTanh,
            other => {
                return Err(OpError::attribute(
                    "approximate",
                    format!("expected \"none\" or \"tanh\", got {other:?}"),
                ))
            }
        },
        IsInf => {
            u.alpha = ctx.attrs.int_or("detect_negative", 1)? as f64;
            u.beta = ctx.attrs.int_or("detect_positive", 1)? as f64;
        }
        _ => {}
    }
    Ok(Box::new(u))
}

/// Registers the unary ops.
pub fn register(r: &mut OpRegistry) {
    macro_rules! reg {
        ($($name:literal $since:literal $kind:ident),* $(,)?) => {$(
            r.register("", $name, $since, |c| build(c, $name, UnaryKind::$kind));
        )*};
    }
    reg!(
        "Abs" 1 Abs, "Neg" 1 Neg, "Sign" 9 Sign, "Relu" 1 Relu, "Shrink" 9 Shrink,
        "Exp" 1 Exp, "Log" 1 Log, "Sqrt" 1 Sqrt, "Reciprocal" 1 Reciprocal,
        "Floor" 1 Floor, "Ceil" 1 Ceil, "Round" 11 Round,
        "Sin" 7 Sin, "Cos" 7 Cos, "Tan" 7 Tan, "Asin" 7 Asin, "Acos" 7 Acos, "Atan" 7 Atan,
        "Sinh" 9 Sinh, "Cosh" 9 Cosh, "Asinh" 9 Asinh, "Acosh" 9 Acosh, "Atanh" 9 Atanh,
        "Erf" 9 Erf, "Sigmoid" 1 Sigmoid, "Tanh" 1 Tanh, "Softplus" 1 Softplus,
        "Softsign" 1 Softsign, "HardSigmoid" 1 HardSigmoid, "HardSwish" 14 HardSwish,
        "Elu" 1 Elu, "Selu" 1 Selu, "Celu" 12 Celu, "LeakyRelu" 1 LeakyRelu,
        "ThresholdedRelu" 10 ThresholdedRelu, "Gelu" 20 Gelu, "Mish" 18 Mish,
        "IsNaN" 9 IsNaN, "IsInf" 10 IsInf, "Not" 1 Not, "BitwiseNot" 18 BitwiseNot,
    );
    r.register_range("", "Clip", 1, 10, |c| {
        Ok(Box::new(Clip {
            attr_min: c.attrs.float("min")?,
            attr_max: c.attrs.float("max")?,
            legacy: true,
        }))
    });
    r.register("", "Clip", 11, |_| {
        Ok(Box::new(Clip {
            attr_min: None,
            attr_max: None,
            legacy: false,
        }))
    });
}

fn unsupported(t: &Tensor) -> OpError {
    OpError::UnsupportedDType {
        index: 0,
        dtype: t.dtype(),
    }
}

/// Applies `|v| body` in the compute type `$C` of a float tensor.
macro_rules! float_map {
    ($ctx:expr, $x:expr, $out:expr, $C:ident, |$v:ident| $body:expr) => {
        dispatch_float!($x.dtype(), T => {
            #[allow(dead_code)]
            type $C = <T as Compute>::C;
            unary_map($ctx, $x.as_slice::<T>()?, $out.as_slice_mut::<T>()?, |&e: &T| {
                let $v: $C = e.to_c();
                T::from_c($body)
            });
            Ok(())
        }, Err(unsupported($x)))
    };
}

/// Applies `|v| body` to every element of a numeric tensor of type `$T`.
macro_rules! numeric_map {
    ($ctx:expr, $x:expr, $out:expr, $T:ident, |$v:ident| $body:expr) => {
        dispatch_numeric!($x.dtype(), $T => {
            unary_map($ctx, $x.as_slice::<$T>()?, $out.as_slice_mut::<$T>()?, |&$v: &$T| $body);
            Ok(())
        }, Err(unsupported($x)))
    };
}

impl Unary {
    fn compute(&self, ctx: &EvalCtx<'_>, x: &Tensor, out: &mut Tensor) -> OpResult<()> {
        use UnaryKind::*;
        let (alpha, beta, gamma) = (self.alpha, self.beta, self.gamma);
        match self.kind {
            Abs => numeric_map!(ctx, x, out, T, |v| v.magnitude()),
            Neg => numeric_map!(ctx, x, out, T, |v| v.negate()),
            Sign => numeric_map!(ctx, x, out, T, |v| v.sign()),
            Relu => numeric_map!(ctx, x, out, T, |v| v.max_prop(T::ZERO)),
            Shrink => numeric_map!(ctx, x, out, T, |v| {
                let f = v.to_f64();
                T::from_f64(if f < -alpha {
                    f + beta
                } else if f > alpha {
                    f - beta
                } else {
                    0.0
                })
            }),
            Exp => float_map!(ctx, x, out, C, |v| v.exp()),
            Log => float_map!(ctx, x, out, C, |v| v.ln()),
            Sqrt => float_map!(ctx, x, out, C, |v| v.sqrt()),
            Reciprocal => float_map!(ctx, x, out, C, |v| C::ONE / v),
            Floor => float_map!(ctx, x, out, C, |v| v.floor()),
            Ceil => float_map!(ctx, x, out, C, |v| v.ceil()),
            Round => float_map!(ctx, x, out, C, |v| v.round_ties_even()),
            Sin => float_map!(ctx, x, out, C, |v| v.sin()),
            Cos => float_map!(ctx, x, out, C, |v| v.cos()),
            Tan => float_map!(ctx, x, out, C, |v| v.tan()),
            Asin => float_map!(ctx, x, out, C, |v| v.asin()),
            Acos => float_map!(ctx, x, out, C, |v| v.acos()),
            Atan => float_map!(ctx, x, out, C, |v| v.atan()),
            Sinh => float_map!(ctx, x, out, C, |v| v.sinh()),
            Cosh => float_map!(ctx, x, out, C, |v| v.cosh()),
            Asinh => float_map!(ctx, x, out, C, |v| v.asinh()),
            Acosh => float_map!(ctx, x, out, C, |v| v.acosh()),
            Atanh => float_map!(ctx, x, out, C, |v| v.atanh()),
            Erf => float_map!(ctx, x, out, C, |v| Real::erf(v)),
            Sigmoid => float_map!(ctx, x, out, C, |v| C::ONE / (C::ONE + (-v).exp())),
            Tanh => float_map!(ctx, x, out, C, |v| v.tanh()),
            Softplus => float_map!(ctx, x, out, C, |v| softplus(v)),
            Softsign => float_map!(ctx, x, out, C, |v| v / (C::ONE + v.abs())),
            HardSigmoid => float_map!(ctx, x, out, C, |v| {
                let y = C::from_f64(alpha) * v + C::from_f64(beta);
                clamp01(y)
            }),
            HardSwish => float_map!(ctx, x, out, C, |v| {
                v * clamp01(v * C::from_f64(1.0 / 6.0) + C::from_f64(0.5))
            }),
            Elu => float_map!(ctx, x, out, C, |v| {
                if v < C::ZERO {
                    C::from_f64(alpha) * v.exp_m1()
                } else {
                    v
                }
            }),
            Selu => float_map!(ctx, x, out, C, |v| {
                let g = C::from_f64(gamma);
                if v > C::ZERO {
                    g * v
                } else {
                    g * C::from_f64(alpha) * v.exp_m1()
                }
            }),
            Celu => float_map!(ctx, x, out, C, |v| {
                let a = C::from_f64(alpha);
                if v > C::ZERO {
                    v
                } else {
                    a * (v / a).exp_m1()
                }
            }),
            LeakyRelu => float_map!(ctx, x, out, C, |v| {
                if v < C::ZERO {
                    C::from_f64(alpha) * v
                } else {
                    v
                }
            }),
            ThresholdedRelu => float_map!(ctx, x, out, C, |v| {
                if v > C::from_f64(alpha) {
                    v
                } else {
                    C::ZERO
                }
            }),
            Gelu => float_map!(ctx, x, out, C, |v| {
                C::from_f64(0.5)
                    * v
                    * (C::ONE + Real::erf(v * C::from_f64(std::f64::consts::FRAC_1_SQRT_2)))
            }),
            GeluTanh => float_map!(ctx, x, out, C, |v| {
                let k = C::from_f64((2.0 / std::f64::consts::PI).sqrt());
                let inner = k * (v + C::from_f64(0.044_715) * v * v * v);
                C::from_f64(0.5) * v * (C::ONE + inner.tanh())
            }),
            Mish => float_map!(ctx, x, out, C, |v| v * softplus(v).tanh()),
            IsNaN => dispatch_float!(x.dtype(), T => {
                unary_map(ctx, x.as_slice::<T>()?, out.as_bool_slice_mut()?, |&v: &T| u8::from(v.nan()));
                Ok(())
            }, Err(unsupported(x))),
            IsInf => dispatch_float!(x.dtype(), T => {
                let (neg, pos) = (alpha != 0.0, beta != 0.0);
                unary_map(ctx, x.as_slice::<T>()?, out.as_bool_slice_mut()?, |&v: &T| {
                    let f = v.to_f64();
                    u8::from((pos && f == f64::INFINITY) || (neg && f == f64::NEG_INFINITY))
                });
                Ok(())
            }, Err(unsupported(x))),
            Not => {
                if x.dtype() != DType::Bool {
                    return Err(unsupported(x));
                }
                unary_map(ctx, x.as_bool_slice()?, out.as_bool_slice_mut()?, |&v| {
                    u8::from(v == 0)
                });
                Ok(())
            }
            BitwiseNot => dispatch_int!(x.dtype(), T => {
                unary_map(ctx, x.as_slice::<T>()?, out.as_slice_mut::<T>()?, |&v: &T| !v);
                Ok(())
            }, Err(unsupported(x))),
        }
    }
}

#[inline(always)]
fn clamp01<C: Arith>(y: C) -> C {
    if y < C::ZERO {
        C::ZERO
    } else if y > C::ONE {
        C::ONE
    } else {
        y
    }
}

/// Softplus without overflow: `x + ln(1 + e^-x)` for positive `x`.
trait SoftPlus: Copy {
    fn softplus(self) -> Self;
}
macro_rules! softplus_impl {
    ($($t:ty),*) => {$(
        impl SoftPlus for $t {
            #[inline(always)]
            fn softplus(self) -> Self {
                if self > 0.0 { self + (-self).exp().ln_1p() } else { self.exp().ln_1p() }
            }
        }
    )*};
}
softplus_impl!(f32, f64);

#[inline(always)]
fn softplus<C: SoftPlus>(v: C) -> C {
    v.softplus()
}

impl Operator for Unary {
    fn op_type(&self) -> &str {
        self.op
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                dtype: f.dtype.map(|d| self.out_dtype(d)),
                shape: f.shape.clone(),
                value: None,
            }]
        }))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        inputs
            .first()
            .and_then(Fact::concrete_shape)
            .map_or(0, |s| s.iter().product::<usize>() as u64)
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let mut out = ctx.alloc(self.out_dtype(x.dtype()), x.shape())?;
        self.compute(ctx, &x, &mut out)?;
        Ok(vec![out.into()])
    }
}

/// `Clip`: limits values to `[min, max]`. Opsets 1–10 take the bounds as float attributes,
/// later opsets as optional scalar inputs 1 and 2 of the input's dtype.
#[derive(Debug, Clone)]
pub struct Clip {
    attr_min: Option<f32>,
    attr_max: Option<f32>,
    legacy: bool,
}

fn scalar_bound<T: Element>(t: Option<&Tensor>, index: usize) -> OpResult<Option<T>> {
    let Some(t) = t else { return Ok(None) };
    if t.len() != 1 {
        return Err(OpError::invalid(
            index,
            format!("expected a scalar bound, got shape {:?}", t.shape()),
        ));
    }
    if t.dtype() != T::DTYPE {
        return Err(OpError::invalid(
            index,
            format!(
                "bound has dtype {} but the input is {}",
                t.dtype(),
                T::DTYPE
            ),
        ));
    }
    Ok(t.contiguous().as_slice::<T>()?.first().copied())
}

impl Clip {
    /// The bounds as f32 when they are known before running: the attributes (opsets 1-10) or
    /// the given constant min/max inputs, which must be f32 scalars. A missing bound is
    /// infinite. `None` when a bound input is not an f32 scalar.
    pub fn constant_bounds(&self, inputs: [Option<&Tensor>; 2]) -> Option<(f32, f32)> {
        if self.legacy {
            return Some((
                self.attr_min.unwrap_or(f32::NEG_INFINITY),
                self.attr_max.unwrap_or(f32::INFINITY),
            ));
        }
        let bound = |t: Option<&Tensor>, default: f32| -> Option<f32> {
            match t {
                None => Some(default),
                Some(t) => scalar_bound::<f32>(Some(t), 1).ok().flatten(),
            }
        };
        Some((
            bound(inputs[0], f32::NEG_INFINITY)?,
            bound(inputs[1], f32::INFINITY)?,
        ))
    }
}

impl Operator for Clip {
    crate::op_boilerplate!("Clip");

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
        let mut out = ctx.alloc(x.dtype(), x.shape())?;
        dispatch_numeric!(x.dtype(), T => {
            let (lo, hi): (T, T) = if self.legacy {
                (
                    self.attr_min.map_or(T::LOWEST, |v| T::from_f64(v.into())),
                    self.attr_max.map_or(T::HIGHEST, |v| T::from_f64(v.into())),
                )
            } else {
                (
                    scalar_bound::<T>(inputs.opt_tensor(1)?, 1)?.unwrap_or(T::LOWEST),
                    scalar_bound::<T>(inputs.opt_tensor(2)?, 2)?.unwrap_or(T::HIGHEST),
                )
            };
            unary_map(ctx, x.as_slice::<T>()?, out.as_slice_mut::<T>()?, |&v: &T| {
                let r = if v < lo { lo } else { v };
                if r > hi { hi } else { r }
            });
        }, return Err(unsupported(&x)));
        Ok(vec![out.into()])
    }
}
