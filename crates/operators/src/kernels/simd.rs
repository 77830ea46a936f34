//! Runtime selection of wider vector instructions for plain Rust loops.
//!
//! The crate is compiled for the baseline x86_64 target (SSE2), so auto-vectorized loops use
//! 4-lane vectors. [`wide`] runs a closure inside a function compiled for AVX-512 (or AVX2 +
//! FMA) when the CPU has it; the closure (which callers mark `#[inline(always)]`) and the
//! `#[inline(always)]` kernels it calls are inlined there and vectorized with the wider
//! registers. Loops that are memory-bound or
//! already call hand-written kernels gain nothing from it.

/// The widest instruction set [`wide`] can use on this CPU, detected once.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Avx512,
    Avx2,
    Baseline,
}

#[cfg(target_arch = "x86_64")]
fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            Level::Avx512
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            Level::Avx2
        } else {
            Level::Baseline
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The AVX-512 mask of the first `n` lanes of 16 (all of them for `n >= 16`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn first_lanes(n: usize) -> std::arch::x86_64::__mmask16 {
    if n >= 16 {
        !0
    } else {
        ((1u32 << n) - 1) as std::arch::x86_64::__mmask16
    }
}

/// Whether this CPU has AVX-512F, BW and VL (hand-written AVX-512 kernels check this).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return level() == Level::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f`, compiled for the widest vectors this CPU has.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: `level` checked that the CPU supports every feature the callee enables.
        Level::Avx512 => return unsafe { run_avx512(f) },
        // SAFETY: as above, for AVX2 and FMA.
        Level::Avx2 => return unsafe { run_avx2(f) },
        Level::Baseline => {}
    }
    f()
}

/// Folds `xs` with `f` in 16 independent lanes (vectorizable, no serial dependency chain),
/// then folds the lanes and the remainder; `f` must be associative and commutative up to
/// rounding (sum, max).
#[inline(always)]
pub(crate) fn lane_fold<F: Copy>(xs: &[F], init: F, f: impl Fn(F, F) -> F) -> F {
    const LANES: usize = 16;
    let mut acc = [init; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    let lanes = acc.iter().fold(init, |r, &a| f(r, a));
    rest.iter().fold(lanes, |r, &v| f(r, v))
}

/// `e^x` in f32 to within 2 units in the last place, in branch-free arithmetic the compiler
/// vectorizes (unlike the `expf` call of `f32::exp`): `x = n ln 2 + r` with `n` rounded to
/// nearest and `|r| <= ln 2 / 2`, a degree-6 polynomial for `e^r` (Cephes' `expf`
/// coefficients) and `2^n` built in the exponent bits. Below about -87.3 it returns 0, above
/// about 88.7 infinity; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so `n * LN2_HI` is exact for the `n` that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_83;
    let clamped = x.clamp(LO, HI);
    let n = (clamped * LOG2E + ROUND) - ROUND;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // `n` is in [-126, 128]: 2^n as the product of two powers in [-64, 64], each built from
    // the float `k + 127 + 2^23`, whose low mantissa bits hold `k + 127` (no float-to-int
    // conversion, which would not vectorize).
    let half = (n * 0.5 + ROUND) - ROUND;
    let pow2 = |k: f32| f32::from_bits((k + 8_388_735.0).to_bits() << 23);
    let y = e_r * pow2(half) * pow2(n - half);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulps_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        while x < 88.7 {
            let (got, want) = (f64::from(exp_f32(x)), f64::from(x).exp());
            worst = worst.max((got - want).abs() / want / f64::from(f32::EPSILON));
            x += 0.0137;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn wide_runs_the_closure_once_with_its_result() {
        let mut calls = 0;
        let sum = wide(|| {
            calls += 1;
            (1..=100u32).map(|v| v as f32).sum::<f32>()
        });
        assert_eq!((calls, sum), (1, 5050.0));
    }
}
