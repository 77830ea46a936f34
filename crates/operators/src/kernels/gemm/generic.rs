//! Portable micro-kernel (plain Rust the compiler auto-vectorises): a 4 x 8 tile (4 x 16
//! with fused multiply-adds on aarch64). It is the fallback on x86_64 CPUs without AVX2 and,
//! for now, the kernel on every other architecture.

use super::{KernelFn, Tile};

/// Rows of the register tile.
pub(super) const MR: usize = 4;
/// Columns of the register tile (16 on aarch64: four NEON registers per row, 32 registers).
#[cfg(target_arch = "aarch64")]
pub(super) const NR: usize = 16;
/// Columns of the register tile.
#[cfg(not(target_arch = "aarch64"))]
pub(super) const NR: usize = 8;

/// `R` rows (<= MR) by NR columns.
///
/// # Safety
/// `t.a` holds `t.kc * MR` and `t.b` holds `t.kc * NR` readable elements; `t.rows <= R`,
/// `t.cols <= NR`; every `t.c + r*rsc + j*csc` for `r < t.rows`, `j < t.cols` is valid for
/// reads and writes (reads only when `beta != 0`).
unsafe fn tile<const R: usize>(t: &Tile) {
    // SAFETY: the caller guarantees `kc * MR` and `kc * NR` readable elements.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(t.a, t.kc * MR),
            std::slice::from_raw_parts(t.b, t.kc * NR),
        )
    };
    let mut acc = [[0f32; NR]; MR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &av) in acc.iter_mut().zip(ak).take(R) {
            for (x, &bv) in row.iter_mut().zip(bk) {
                // aarch64 always has FMA (`fmla`); elsewhere `mul_add` may be a libm call.
                *x = if cfg!(target_arch = "aarch64") {
                    av.mul_add(bv, *x)
                } else {
                    *x + av * bv
                };
            }
        }
    }
    // Stored in place with constant trip counts: passing `acc` by reference would pin it to
    // memory and cost a load and store per multiply-add.
    for (r, row) in acc.iter().enumerate().take(R) {
        if r >= t.rows {
            continue;
        }
        for (j, &x) in row.iter().enumerate() {
            if j >= t.cols {
                continue;
            }
            let v = t.alpha * x;
            // SAFETY: `r < t.rows`, `j < t.cols`: inside the C tile per the caller's contract.
            unsafe {
                let p = t.c.offset(r as isize * t.rsc + j as isize * t.csc);
                *p = if t.beta == 0.0 { v } else { v + t.beta * *p };
            }
        }
    }
}

/// Kernels by `[rows - 1][0]` (one column width).
pub(super) static TABLE: [[KernelFn; 2]; MR] = [
    [tile::<1>, tile::<1>],
    [tile::<2>, tile::<2>],
    [tile::<3>, tile::<3>],
    [tile::<4>, tile::<4>],
];
