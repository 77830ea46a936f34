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

#[cfg(test)]
mod tests {
    use super::*;

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
