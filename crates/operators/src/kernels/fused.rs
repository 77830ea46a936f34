//! Fused epilogues: the activation an optimization pass folds into the op that produces its
//! input (`Conv`, `Gemm`, `MatMul`), applied to each output block while it is still in cache
//! instead of in a separate pass over memory.
//!
//! [`Activation`] is the closed set of activations that can be fused, with the parameters read
//! from the original node ([`Activation::from_op`]); [`Activation::apply`] computes exactly what
//! the standalone op computes for f32 and f64 (f16/bf16 convolutions run through f32 and are
//! rounded once at the end, like the unfused graph rounds after each op: within ONNX's
//! tolerance, not bit-identical).

use super::elementwise::num::Real;
use super::elementwise::{Clip, Unary, UnaryKind};
use super::linalg::Float;
use super::simd;
use crate::Operator;
use strata_tensor::{DType, Tensor};

/// An activation fused into the op before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (Clip with constant bounds; Relu6 is `Clip(0, 6)`).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `clamp(alpha * x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * clamp(x / 6 + 1/2, 0, 1)`.
    HardSwish,
    /// `x` for `x >= 0`, `alpha * x` below.
    LeakyRelu {
        /// Slope below zero.
        alpha: f32,
    },
    /// `x * sigmoid(x)` (SiLU / Swish with beta 1).
    Silu,
    /// `x / 2 * (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`.
    GeluTanh,
}

impl Activation {
    /// The activation computed by `op` (a node of `op_type`), if it is one that can be fused.
    /// `bounds` are Clip's constant min and max inputs (opset 11+); a Clip whose bounds are
    /// not constant f32 scalars is not fusable.
    pub fn from_op(op: &dyn Operator, bounds: [Option<&Tensor>; 2]) -> Option<Activation> {
        if let Some(clip) = op.as_any().downcast_ref::<Clip>() {
            let (min, max) = clip.constant_bounds(bounds)?;
            return Some(Activation::Clip { min, max });
        }
        let unary = op.as_any().downcast_ref::<Unary>()?;
        let (alpha, beta) = unary.params();
        Some(match unary.kind() {
            UnaryKind::Relu => Activation::Relu,
            UnaryKind::Sigmoid => Activation::Sigmoid,
            UnaryKind::HardSigmoid => Activation::HardSigmoid {
                alpha: alpha as f32,
                beta: beta as f32,
            },
            UnaryKind::HardSwish => Activation::HardSwish,
            UnaryKind::LeakyRelu => Activation::LeakyRelu {
                alpha: alpha as f32,
            },
            UnaryKind::Gelu => Activation::Gelu,
            UnaryKind::GeluTanh => Activation::GeluTanh,
            _ => return None,
        })
    }

    /// Short name for fused op labels, such as `Relu`.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Clip { .. } => "Clip",
            Activation::Sigmoid => "Sigmoid",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::LeakyRelu { .. } => "LeakyRelu",
            Activation::Silu => "Silu",
            Activation::Gelu => "Gelu",
            Activation::GeluTanh => "GeluTanh",
        }
    }

    /// Applies the activation to every element of `data` in place (vectorized with the
    /// widest registers the CPU has).
    pub fn apply<F: ActFloat>(&self, data: &mut [F]) {
        simd::wide(
            #[inline(always)]
            || self.apply_inline(data),
        )
    }

    /// [`Activation::apply`] for callers already inside [`simd::wide`].
    #[inline(always)]
    pub(crate) fn apply_inline<F: ActFloat>(&self, data: &mut [F]) {
        let half = F::from_f32(0.5);
        let sigmoid = |v: F| F::ONE / (F::ONE + (-v).exp_vectorizable());
        let clamp01 = |v: F| v.max(F::ZERO).minimum(F::ONE);
        match *self {
            Activation::Relu => map(data, |v| if v < F::ZERO { F::ZERO } else { v }),
            Activation::Clip { min, max } => {
                // Comparisons as in the Clip kernel: NaN passes through.
                let (lo, hi) = (F::from_f32(min), F::from_f32(max));
                map(data, |v| {
                    let r = if v < lo { lo } else { v };
                    if r > hi {
                        hi
                    } else {
                        r
                    }
                })
            }
            Activation::Sigmoid => map(data, sigmoid),
            Activation::HardSigmoid { alpha, beta } => {
                let (a, b) = (F::from_f32(alpha), F::from_f32(beta));
                map(data, |v| clamp01(a * v + b))
            }
            Activation::HardSwish => {
                let sixth = F::from_f64(1.0 / 6.0);
                map(data, |v| v * clamp01(v * sixth + half))
            }
            Activation::LeakyRelu { alpha } => {
                let a = F::from_f32(alpha);
                map(data, |v| if v < F::ZERO { a * v } else { v })
            }
            Activation::Silu => map(data, |v| v * sigmoid(v)),
            Activation::Gelu => {
                let r = F::from_f64(std::f64::consts::FRAC_1_SQRT_2);
                map(data, |v| half * v * (F::ONE + (v * r).erf()))
            }
            Activation::GeluTanh => {
                let k = F::from_f64((2.0 / std::f64::consts::PI).sqrt());
                let c = F::from_f64(0.044_715);
                map(data, |v| {
                    half * v * (F::ONE + (k * (v + c * v * v * v)).tanh())
                })
            }
        }
    }
}

/// The label of a fused node: `base`, `+Add` when an addend was fused, `+` the activation;
/// such as `Conv+Add+Relu`.
pub fn fused_label(base: &str, added: bool, activation: Option<&Activation>) -> String {
    let mut label = String::from(base);
    if added {
        label.push_str("+Add");
    }
    if let Some(act) = activation {
        label.push('+');
        label.push_str(act.name());
    }
    label
}

/// `data[i] = f(data[i])`, a loop the compiler can vectorize per activation.
#[inline(always)]
fn map<F: Copy>(data: &mut [F], f: impl Fn(F) -> F) {
    for v in data {
        *v = f(*v);
    }
}

/// What [`Activation::apply`] needs of an element type beyond [`Float`] (f32 and f64).
pub trait ActFloat: Float {
    /// The smaller value (ignores NaN like `f32::min`).
    fn minimum(self, other: Self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// `e^self` in code the compiler vectorizes (f32: [`simd::exp_f32`], within 2 ulp).
    fn exp_vectorizable(self) -> Self;
}

macro_rules! impl_act_float {
    ($t:ty, $exp:path) => {
        impl ActFloat for $t {
            #[inline(always)]
            fn minimum(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                Real::erf(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn exp_vectorizable(self) -> Self {
                $exp(self)
            }
        }
    };
}
impl_act_float!(f32, simd::exp_f32);
impl_act_float!(f64, f64::exp);

/// Whether a fused op may compute in `dtype` (the float types the fused kernels take).
pub fn fusable_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BuildCtx, OpRegistry};

    fn build(
        op_type: &str,
        opset: i64,
        attrs: crate::Attributes,
        inputs: usize,
    ) -> Box<dyn Operator> {
        OpRegistry::with_cpu_kernels()
            .build(&BuildCtx {
                node_name: "n",
                op_type,
                domain: "",
                opset,
                attrs: &attrs,
                input_count: inputs,
                output_count: 1,
            })
            .unwrap()
    }

    /// Runs the standalone op on `xs`.
    fn standalone(op: &dyn Operator, xs: &[f32], extra: Vec<Tensor>) -> Vec<f32> {
        let mut inputs = vec![Tensor::from_vec(xs.to_vec(), &[xs.len()]).unwrap()];
        inputs.extend(extra);
        let out = op
            .eval(
                &crate::EvalCtx::default(),
                crate::Inputs::from_tensors(inputs),
            )
            .unwrap();
        out[0]
            .as_tensor()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn fused_activations_match_the_standalone_ops() {
        let xs: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.17).collect();
        let mut attrs = crate::Attributes::new();
        attrs.insert("alpha", crate::Attribute::Float(0.3));
        let cases: Vec<(&str, i64, crate::Attributes)> = vec![
            ("Relu", 14, crate::Attributes::new()),
            ("Sigmoid", 13, crate::Attributes::new()),
            ("HardSigmoid", 6, attrs.clone()),
            ("HardSwish", 14, crate::Attributes::new()),
            ("LeakyRelu", 16, attrs),
            ("Gelu", 20, crate::Attributes::new()),
        ];
        for (op_type, opset, attrs) in cases {
            let op = build(op_type, opset, attrs, 1);
            let act = Activation::from_op(&*op, [None, None]).expect(op_type);
            assert_eq!(act.name(), op_type);
            let want = standalone(&*op, &xs, vec![]);
            let mut got = xs.clone();
            act.apply(&mut got);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                    "{op_type}: {g} vs {w}"
                );
            }
            let mut got64: Vec<f64> = xs.iter().map(|&v| f64::from(v)).collect();
            act.apply(&mut got64);
            for (g, w) in got64.iter().zip(&want) {
                assert!(
                    (*g as f32 - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                    "{op_type} f64"
                );
            }
        }
    }

    #[test]
    fn clip_needs_constant_scalar_bounds() {
        let op = build("Clip", 13, crate::Attributes::new(), 3);
        let (lo, hi) = (Tensor::scalar(0.0f32), Tensor::scalar(6.0f32));
        let act = Activation::from_op(&*op, [Some(&lo), Some(&hi)]).unwrap();
        assert_eq!(act, Activation::Clip { min: 0.0, max: 6.0 });
        let mut v = vec![-1.0f32, 3.0, 7.0];
        act.apply(&mut v);
        assert_eq!(v, [0.0, 3.0, 6.0]);
        // Only a lower bound: the upper one is +inf.
        let act = Activation::from_op(&*op, [Some(&lo), None]).unwrap();
        assert_eq!(
            act,
            Activation::Clip {
                min: 0.0,
                max: f32::INFINITY
            }
        );
        // A non-scalar or non-f32 bound is not fusable.
        let vec_bound = Tensor::from_vec(vec![0.0f32, 1.0], &[2]).unwrap();
        assert!(Activation::from_op(&*op, [Some(&vec_bound), None]).is_none());
        assert!(Activation::from_op(&*op, [Some(&Tensor::scalar(0.0f64)), None]).is_none());
        // Legacy Clip reads its attributes.
        let mut attrs = crate::Attributes::new();
        attrs.insert("min", crate::Attribute::Float(-1.0));
        let legacy = build("Clip", 6, attrs, 1);
        assert_eq!(
            Activation::from_op(&*legacy, [None, None]),
            Some(Activation::Clip {
                min: -1.0,
                max: f32::INFINITY
            })
        );
        // Ops that are not activations are not fused.
        let exp = build("Exp", 13, crate::Attributes::new(), 1);
        assert!(Activation::from_op(&*exp, [None, None]).is_none());
    }

    #[test]
    fn silu_and_gelu_tanh_by_hand() {
        let mut v = vec![0.0f32, 1.0, -1.0];
        Activation::Silu.apply(&mut v);
        assert!((v[1] - 0.731_058_6).abs() < 1e-6 && (v[2] + 0.268_941_4).abs() < 1e-6);
        let mut g = vec![1.0f32];
        Activation::GeluTanh.apply(&mut g);
        assert!((g[0] - 0.841_192).abs() < 1e-5, "{}", g[0]);
    }
}
