//! AVX2+FMA micro-kernel: a 6 x 16 register tile (12 ymm accumulators), with narrower
//! instantiations for edge tiles; partial-width or strided C tiles go through a spill buffer.

use super::{KernelFn, Tile};
use std::arch::x86_64::*;

/// Rows of the register tile.
pub(super) const MR: usize = 6;
/// Columns of the register tile (two 8-lane vectors).
pub(super) const NR: usize = 16;

/// `R` rows (<= MR) by `NV` 8-lane vectors of columns.
///
/// # Safety
/// The CPU supports AVX2 and FMA; `t.a` holds `t.kc * MR` and `t.b` holds `t.kc * NR`
/// readable elements; `t.rows <= R`, `t.cols <= NV * 8`; every `t.c + r*rsc + j*csc` for
/// `r < t.rows`, `j < t.cols` is valid for reads and writes (reads only when `beta != 0`). In direct mode (`DIRECT`), `t.rows == R` and
/// `t.a + r*t.ars + k*t.aks` must be readable for `r < R`, `k < t.kc`, instead of a panel.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const NV: usize, const DIRECT: bool>(t: &Tile) {
    // Packed A: element (r, k) at `k * MR + r`; direct A: at `r * t.ars + k * t.aks`.
    let (ars, aks) = if DIRECT {
        (t.ars, t.aks)
    } else {
        (1, MR as isize)
    };
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    let (mut a, mut b) = (t.a, t.b);
    for _ in 0..t.kc {
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: `v * 8 + 7 < NR` elements of this k-row of the B panel are readable.
            *x = unsafe { _mm256_loadu_ps(b.add(8 * v)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `r < R` (R <= MR, and R == t.rows in direct mode), inside this k
            // step of A.
            let av = _mm256_set1_ps(unsafe { *a.offset(r as isize * ars) });
            for (x, bb) in row.iter_mut().zip(bv.iter()) {
                *x = _mm256_fmadd_ps(av, *bb, *x);
            }
        }
        // Wrapping steps: the pointers are only dereferenced for valid k.
        a = a.wrapping_offset(aks);
        b = b.wrapping_add(NR);
    }
    let alpha = _mm256_set1_ps(t.alpha);
    let beta = _mm256_set1_ps(t.beta);
    if t.csc == 1 && t.cols == NV * 8 {
        // Constant trip counts (no early exit) let the accumulators stay in registers.
        for (r, row) in acc.iter().enumerate() {
            if r >= t.rows {
                continue;
            }
            for (v, x) in row.iter().enumerate() {
                let mut y = _mm256_mul_ps(*x, alpha);
                // SAFETY: row `r < t.rows`, columns `v*8..v*8+8 <= t.cols` of the C tile,
                // unit column stride: valid per the caller's contract.
                unsafe {
                    let p = t.c.offset(r as isize * t.rsc).add(v * 8);
                    if t.beta != 0.0 {
                        y = _mm256_fmadd_ps(_mm256_loadu_ps(p), beta, y);
                    }
                    _mm256_storeu_ps(p, y);
                }
            }
        }
    } else {
        let mut buf = [0f32; MR * NR];
        for (r, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                // SAFETY: `r * NR + v * 8 + 7 < MR * NR` since `r < R <= MR`, `v < NV <= 2`.
                unsafe { _mm256_storeu_ps(buf.as_mut_ptr().add(r * NR + v * 8), *x) };
            }
        }
        // SAFETY: `buf` holds the tile with leading dimension NR; C as the caller guarantees.
        unsafe { super::store_tile(t, &buf, NR) };
    }
}

macro_rules! rows {
    ($d:literal; $($r:literal)*) => {
        [$([tile::<$r, 1, $d> as KernelFn, tile::<$r, 2, $d> as KernelFn]),*]
    };
}

/// Kernels by `[rows - 1][column vectors - 1]`.
pub(super) static TABLE: [[KernelFn; 2]; MR] = rows!(false; 1 2 3 4 5 6);

/// Kernels reading A in place (strides `t.ars`, `t.aks`), by `[rows - 1][column vectors - 1]`;
/// only called with `R == t.rows`.
pub(super) static DIRECT: [[KernelFn; 2]; MR] = rows!(true; 1 2 3 4 5 6);
