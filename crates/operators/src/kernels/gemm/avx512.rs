//! AVX-512F micro-kernel: a 12 x 32 register tile (24 zmm accumulators, two B vectors per k,
//! A broadcast from the packed panel), with narrower instantiations for edge tiles and masked
//! loads/stores for partial column counts.

use super::{KernelFn, Tile};
use std::arch::x86_64::*;

/// Rows of the register tile.
pub(super) const MR: usize = 12;
/// Columns of the register tile (two 16-lane vectors).
pub(super) const NR: usize = 32;

/// `R` rows (<= MR) by `NV` 16-lane vectors of columns.
///
/// # Safety
/// The CPU supports AVX-512F; `t.a` holds `t.kc * MR` and `t.b` holds `t.kc * NR` readable
/// elements; `t.rows <= R`, `t.cols <= NV * 16`; every `t.c + r*rsc + j*csc` for
/// `r < t.rows`, `j < t.cols` is valid for reads and writes (reads only when `beta != 0`). In direct mode (`DIRECT`), `t.rows == R` and
/// `t.a + r*t.ars + k*t.aks` must be readable for `r < R`, `k < t.kc`, instead of a panel.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const NV: usize, const DIRECT: bool>(t: &Tile) {
    // Packed A: element (r, k) at `k * MR + r`; direct A: at `r * t.ars + k * t.aks`.
    let (ars, aks) = if DIRECT {
        (t.ars, t.aks)
    } else {
        (1, MR as isize)
    };
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let (mut a, mut b) = (t.a, t.b);
    for _ in 0..t.kc {
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: `v * 16 + 15 < NR` elements of this k-row of the B panel are readable
            // (the caller's contract: `kc * NR` elements at `t.b`).
            *x = unsafe { _mm512_loadu_ps(b.add(16 * v)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `r < R` (R <= MR, and R == t.rows in direct mode), inside this k
            // step of A.
            let av = _mm512_set1_ps(unsafe { *a.offset(r as isize * ars) });
            for (x, bb) in row.iter_mut().zip(bv.iter()) {
                *x = _mm512_fmadd_ps(av, *bb, *x);
            }
        }
        // SAFETY: B advances to the next k-row, within (or one past) its panel; A's step
        // uses wrapping arithmetic and is only dereferenced for valid k.
        unsafe {
            a = a.wrapping_offset(aks);
            b = b.add(NR);
        }
    }
    let alpha = _mm512_set1_ps(t.alpha);
    let beta = _mm512_set1_ps(t.beta);
    if t.csc == 1 {
        // Constant trip counts (no early exit) let the accumulators stay in registers.
        for (r, row) in acc.iter().enumerate() {
            if r >= t.rows {
                continue;
            }
            // SAFETY: `r < t.rows`, so row `r` of the C tile is valid (caller's contract).
            let cr = unsafe { t.c.offset(r as isize * t.rsc) };
            for (v, x) in row.iter().enumerate() {
                let j = v * 16;
                if j >= t.cols {
                    continue;
                }
                let mut y = _mm512_mul_ps(*x, alpha);
                let left = t.cols - j;
                // SAFETY: columns `j..j + min(left, 16)` of row `r` are inside the C tile
                // (`t.cols` valid, unit column stride); the masked forms touch only the
                // `left` valid lanes and suppress faults on the others.
                unsafe {
                    let p = cr.add(j);
                    if left >= 16 {
                        if t.beta != 0.0 {
                            y = _mm512_fmadd_ps(_mm512_loadu_ps(p), beta, y);
                        }
                        _mm512_storeu_ps(p, y);
                    } else {
                        let m = ((1u32 << left) - 1) as __mmask16;
                        if t.beta != 0.0 {
                            y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p), beta, y);
                        }
                        _mm512_mask_storeu_ps(p, m, y);
                    }
                }
            }
        }
    } else {
        let mut buf = [0f32; MR * NR];
        for (r, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                // SAFETY: `r * NR + v * 16 + 15 < MR * NR` since `r < R <= MR`, `v < NV <= 2`.
                unsafe { _mm512_storeu_ps(buf.as_mut_ptr().add(r * NR + v * 16), *x) };
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
pub(super) static TABLE: [[KernelFn; 2]; MR] = rows!(false; 1 2 3 4 5 6 7 8 9 10 11 12);

/// Kernels reading A in place (strides `t.ars`, `t.aks`), by `[rows - 1][column vectors - 1]`;
/// only called with `R == t.rows`.
pub(super) static DIRECT: [[KernelFn; 2]; MR] = rows!(true; 1 2 3 4 5 6 7 8 9 10 11 12);
