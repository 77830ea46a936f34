//! Numeric traits the elementwise and reduction kernels are generic over.
//!
//! [`Arith`] gives every numeric element type the arithmetic ONNX needs with ONNX semantics
//! (integers wrap and never trap, floats follow IEEE 754 and propagate NaN through
//! `max_prop`/`min_prop`). [`Compute`] names the type a kernel computes in: `f32` for the half
//! types, the type itself otherwise. [`Real`] adds the transcendental functions the standard
//! library lacks (`erf`).

use strata_tensor::{bf16, f16, Element};

/// Arithmetic on one numeric element type with ONNX semantics.
///
/// Method names differ from the inherent `f32`/`i32` methods on purpose, so that a call in a
/// monomorphic context never silently picks an inherent method with other semantics.
pub trait Arith: Element {
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Smallest value (−∞ for floats): the identity of `max_prop`.
    const LOWEST: Self;
    /// Largest value (+∞ for floats): the identity of `min_prop`.
    const HIGHEST: Self;
    /// `self + o` (integers wrap).
    fn plus(self, o: Self) -> Self;
    /// `self - o` (integers wrap).
    fn minus(self, o: Self) -> Self;
    /// `self * o` (integers wrap).
    fn times(self, o: Self) -> Self;
    /// `self / o`; integers truncate toward zero, and give 0 when `o` is 0.
    fn divide(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C `fmod`); 0 for an integer divisor of 0.
    fn rem_c(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (Python `%`); 0 for an integer divisor of 0.
    fn rem_py(self, o: Self) -> Self;
    /// Absolute value (signed integers wrap at the minimum).
    fn magnitude(self) -> Self;
    /// Negation (integers wrap).
    fn negate(self) -> Self;
    /// −1, 0 or 1 by sign (NaN stays NaN).
    fn sign(self) -> Self;
    /// The larger value; NaN if either is NaN.
    fn max_prop(self, o: Self) -> Self;
    /// The smaller value; NaN if either is NaN.
    fn min_prop(self, o: Self) -> Self;
    /// Whether the value is NaN (never for integers).
    fn nan(self) -> bool;
}

macro_rules! int_common {
    ($t:ty) => {
        const ZERO: Self = 0;
        const ONE: Self = 1;
        const LOWEST: Self = <$t>::MIN;
        const HIGHEST: Self = <$t>::MAX;
        #[inline(always)]
        fn plus(self, o: Self) -> Self {
            self.wrapping_add(o)
        }
        #[inline(always)]
        fn minus(self, o: Self) -> Self {
            self.wrapping_sub(o)
        }
        #[inline(always)]
        fn times(self, o: Self) -> Self {
            self.wrapping_mul(o)
        }
        #[inline(always)]
        fn divide(self, o: Self) -> Self {
            if o == 0 {
                0
            } else {
                self.wrapping_div(o)
            }
        }
        #[inline(always)]
        fn rem_c(self, o: Self) -> Self {
            if o == 0 {
                0
            } else {
                self.wrapping_rem(o)
            }
        }
        #[inline(always)]
        fn negate(self) -> Self {
            self.wrapping_neg()
        }
        #[inline(always)]
        fn max_prop(self, o: Self) -> Self {
            if self >= o {
                self
            } else {
                o
            }
        }
        #[inline(always)]
        fn min_prop(self, o: Self) -> Self {
            if self <= o {
                self
            } else {
                o
            }
        }
        #[inline(always)]
        fn nan(self) -> bool {
            false
        }
    };
}

macro_rules! signed_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            int_common!($t);
            #[inline(always)]
            fn rem_py(self, o: Self) -> Self {
                let r = self.rem_c(o);
                if r != 0 && ((r < 0) != (o < 0)) { r.wrapping_add(o) } else { r }
            }
            #[inline(always)]
            fn magnitude(self) -> Self { self.wrapping_abs() }
            #[inline(always)]
            fn sign(self) -> Self { self.signum() }
        }
    )*};
}
signed_arith!(i8, i16, i32, i64);

macro_rules! unsigned_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            int_common!($t);
            #[inline(always)]
            fn rem_py(self, o: Self) -> Self { self.rem_c(o) }
            #[inline(always)]
            fn magnitude(self) -> Self { self }
            #[inline(always)]
            fn sign(self) -> Self { Self::from(self != 0) }
        }
    )*};
}
unsigned_arith!(u8, u16, u32, u64);

macro_rules! float_arith {
    ($t:ty, $to:expr, $from:expr, $cfrom:expr) => {
        impl Arith for $t {
            const ZERO: Self = $cfrom(0.0);
            const ONE: Self = $cfrom(1.0);
            const LOWEST: Self = $cfrom(f32::NEG_INFINITY);
            const HIGHEST: Self = $cfrom(f32::INFINITY);
            #[inline(always)]
            fn plus(self, o: Self) -> Self {
                $from($to(self) + $to(o))
            }
            #[inline(always)]
            fn minus(self, o: Self) -> Self {
                $from($to(self) - $to(o))
            }
            #[inline(always)]
            fn times(self, o: Self) -> Self {
                $from($to(self) * $to(o))
            }
            #[inline(always)]
            fn divide(self, o: Self) -> Self {
                $from($to(self) / $to(o))
            }
            #[inline(always)]
            fn rem_c(self, o: Self) -> Self {
                $from($to(self) % $to(o))
            }
            #[inline(always)]
            fn rem_py(self, o: Self) -> Self {
                let (a, b) = ($to(self), $to(o));
                let r = a % b;
                $from(if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
                    r + b
                } else {
                    r
                })
            }
            #[inline(always)]
            fn magnitude(self) -> Self {
                $from($to(self).abs())
            }
            #[inline(always)]
            fn negate(self) -> Self {
                $from(-$to(self))
            }
            #[inline(always)]
            fn sign(self) -> Self {
                let v = $to(self);
                $from(if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    v
                })
            }
            #[inline(always)]
            fn max_prop(self, o: Self) -> Self {
                if self >= o || self.nan() {
                    self
                } else {
                    o
                }
            }
            #[inline(always)]
            fn min_prop(self, o: Self) -> Self {
                if self <= o || self.nan() {
                    self
                } else {
                    o
                }
            }
            #[inline(always)]
            fn nan(self) -> bool {
                $to(self).is_nan()
            }
        }
    };
}

#[inline(always)]
const fn id32(v: f32) -> f32 {
    v
}
#[inline(always)]
fn id64(v: f64) -> f64 {
    v
}
const fn f64_from(v: f32) -> f64 {
    v as f64
}
float_arith!(f32, id32, id32, id32);
float_arith!(f64, id64, id64, f64_from);
float_arith!(f16, f16::to_f32, f16::from_f32, f16::from_f32_const);
float_arith!(bf16, bf16::to_f32, bf16::from_f32, bf16::from_f32_const);

/// The type a kernel computes in for an element type: `f32` for `f16`/`bf16`, the type
/// itself otherwise.
pub trait Compute: Arith {
    /// The compute type.
    type C: Arith;
    /// Widens to the compute type.
    fn to_c(self) -> Self::C;
    /// Narrows (rounds) from the compute type.
    fn from_c(c: Self::C) -> Self;
}

macro_rules! self_compute {
    ($($t:ty),*) => {$(
        impl Compute for $t {
            type C = $t;
            #[inline(always)]
            fn to_c(self) -> Self { self }
            #[inline(always)]
            fn from_c(c: Self) -> Self { c }
        }
    )*};
}
self_compute!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

macro_rules! half_compute {
    ($($t:ty),*) => {$(
        impl Compute for $t {
            type C = f32;
            #[inline(always)]
            fn to_c(self) -> f32 { self.to_f32() }
            #[inline(always)]
            fn from_c(c: f32) -> Self { <$t>::from_f32(c) }
        }
    )*};
}
half_compute!(f16, bf16);

/// Functions on `f32`/`f64` that the standard library lacks.
pub trait Real: Arith {
    /// The error function.
    fn erf(self) -> Self;
}

impl Real for f32 {
    /// Rational approximation on [−4, 4] (erf is ±1 in f32 beyond), a few ulp accurate.
    #[inline(always)]
    fn erf(self) -> f32 {
        let x = self.clamp(-4.0, 4.0);
        let x2 = x * x;
        let mut p = -2.726_142_3e-10_f32;
        p = p * x2 + 2.770_681_4e-8;
        p = p * x2 - 2.101_024e-6;
        p = p * x2 - 5.692_506_4e-5;
        p = p * x2 - 7.349_906_3e-4;
        p = p * x2 - 2.954_6e-3;
        p = p * x2 - 1.609_603_3e-2;
        p *= x;
        let mut q = -1.456_607_2e-5_f32;
        q = q * x2 - 2.133_740_6e-4;
        q = q * x2 - 1.682_827e-3;
        q = q * x2 - 7.373_329e-3;
        q = q * x2 - 1.426_474e-2;
        if self.is_nan() {
            self
        } else {
            p / q
        }
    }
}

impl Real for f64 {
    /// Series with positive terms below |x| = 3, continued fraction for erfc above: close to
    /// full f64 precision.
    fn erf(self) -> f64 {
        let x = self;
        if x.is_nan() {
            return x;
        }
        let ax = x.abs();
        let two_over_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
        let r = if ax < 3.0 {
            // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum x^(2n+1) 2^n / (1*3*...*(2n+1))
            let x2 = ax * ax;
            let mut term = ax;
            let mut sum = ax;
            let mut n = 0.0;
            while term > sum * 1e-17 {
                n += 1.0;
                term *= 2.0 * x2 / (2.0 * n + 1.0);
                sum += term;
            }
            two_over_sqrt_pi * (-x2).exp() * sum
        } else if ax < 6.0 {
            // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
            let mut f = ax;
            for k in (1..60).rev() {
                f = ax + (k as f64 / 2.0) / f;
            }
            1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
        } else {
            1.0
        };
        if x < 0.0 {
            -r
        } else {
            r
        }
    }
}

/// Runs `$body` with `$T` bound to the Rust type of an integer `$dtype`; `$fallback`
/// otherwise.
macro_rules! dispatch_int {
    ($dtype:expr, $T:ident => $body:expr, $fallback:expr) => {{
        match $dtype {
            ::strata_tensor::DType::I8 => {
                #[allow(dead_code)]
                type $T = i8;
                $body
            }
            ::strata_tensor::DType::I16 => {
                #[allow(dead_code)]
                type $T = i16;
                $body
            }
            ::strata_tensor::DType::I32 => {
                #[allow(dead_code)]
                type $T = i32;
                $body
            }
            ::strata_tensor::DType::I64 => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            ::strata_tensor::DType::U8 => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            ::strata_tensor::DType::U16 => {
                #[allow(dead_code)]
                type $T = u16;
                $body
            }
            ::strata_tensor::DType::U32 => {
                #[allow(dead_code)]
                type $T = u32;
                $body
            }
            ::strata_tensor::DType::U64 => {
                #[allow(dead_code)]
                type $T = u64;
                $body
            }
            #[allow(unreachable_patterns)]
            _ => $fallback,
        }
    }};
}

pub(crate) use dispatch_int;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_semantics_wrap_and_never_trap() {
        assert_eq!(i8::MIN.divide(-1), i8::MIN);
        assert_eq!(7i32.divide(0), 0);
        assert_eq!((-7i32).divide(2), -3);
        assert_eq!((-7i32).rem_c(3), -1);
        assert_eq!((-7i32).rem_py(3), 2);
        assert_eq!(7i32.rem_py(-3), -2);
        assert_eq!(250u8.plus(10), 4);
        assert_eq!(i16::MIN.magnitude(), i16::MIN);
        assert_eq!(5u8.sign(), 1);
    }

    #[test]
    fn float_max_min_propagate_nan() {
        assert!(1.0f32.max_prop(f32::NAN).is_nan());
        assert!(f32::NAN.min_prop(1.0).is_nan());
        assert_eq!(2.0f64.max_prop(-1.0), 2.0);
        assert_eq!((-5.5f32).rem_py(2.0), 0.5);
        assert_eq!((-5.5f32).rem_c(2.0), -1.5);
        assert_eq!(f16::from_f32(1.5).plus(f16::ONE).to_f32(), 2.5);
        assert_eq!(bf16::LOWEST.to_f32(), f32::NEG_INFINITY);
    }

    #[test]
    fn erf_matches_reference_values() {
        // math.erf values
        let cases = [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (-1.5, -0.966_105_146_475_310_7),
            (7.0, 1.0),
        ];
        for (x, want) in cases {
            let got64: f64 = Real::erf(x);
            assert!(
                (got64 - want).abs() < 1e-14,
                "erf64({x}) = {got64}, want {want}"
            );
            let got32 = Real::erf(x as f32);
            assert!(
                (got32 as f64 - want).abs() < 2e-7,
                "erf32({x}) = {got32}, want {want}"
            );
        }
        assert!(Real::erf(f32::NAN).is_nan());
    }
}
