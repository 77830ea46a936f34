//! Portable micro-kernel (plain Rust the compiler auto-vectorises): a 4 x 8 tile. It is the
//! fallback on x86_64 CPUs without AVX2 and, for now, the kernel on every other architecture.

use super::{KernelFn, Tile};

/// Rows of the register tile.
pub(super) const MR: usize = 4;
/// Columns of the register tile.
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
                *x += av * bv;
            }
        }
    }
    // SAFETY: `acc` holds the tile with leading dimension NR; C as the caller guarantees.
    unsafe { super::store_tile(t, acc.as_flattened(), NR) };
}

/// Kernels by `[rows - 1][0]` (one column width).
pub(super) static TABLE: [[KernelFn; 2]; MR] = [
    [tile::<1>, tile::<1>],
    [tile::<2>, tile::<2>],
    [tile::<3>, tile::<3>],
    [tile::<4>, tile::<4>],
];
