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
/// `r < t.rows`, `j < t.cols` is valid for reads and writes (reads only when `beta != 0`).
/// In direct-A mode (`DIRECT`), `t.rows == R` and `t.a + r*t.ars + k*t.aks` must be readable
/// for `r < R`, `k < t.kc`, instead of a panel. In direct-B mode (`DIRECT_B`), B is read in
/// place: `t.b + k*t.bks + j` must be readable for `k < t.kc`, `j < t.cols` (unit column
/// stride; lanes past `t.cols` are masked off). In shifted-B mode (`SHIFTED`), row `k` of B
/// starts at `t.b + t.boffs[k]` (`t.kc` offsets readable) and the lanes `t.lanes[v]` of
/// vector `v` are readable there; C has unit column stride and the tile's real columns: row
/// `r`'s vector `v` stores `t.lanes[v].count_ones()` values at `t.c + r*rsc + t.lane_at[v]`.
/// With `EDGES` (shifted B with edge taps, [`super::EdgeTaps`]), row `k` of the block (row
/// `t.edge_k0 + k` of B) is width tap `(t.edge_k0 + k) / t.edge_segment` (below
/// `EDGE_TAPS`), whose loaded lanes outside `t.edge_masks[tap]` (vector 0 in the low 16
/// bits) count as zero. With `t.fused`, `t.csc == 1` and its bias and sum cover the tile's
/// rows and (real) columns.
#[target_feature(enable = "avx512f")]
unsafe fn tile<
    const R: usize,
    const NV: usize,
    const DIRECT: bool,
    const DIRECT_B: bool,
    const SHIFTED: bool,
    const EDGES: bool,
>(
    t: &Tile,
) {
    // Packed A: element (r, k) at `k * MR + r`; direct A: at `r * t.ars + k * t.aks`.
    let (ars, aks) = if DIRECT {
        (t.ars, t.aks)
    } else {
        (1, MR as isize)
    };
    // Packed B: k-rows NR apart, all lanes valid; direct B: rows `t.bks` apart, lanes masked
    // to the tile's columns.
    let bks = if DIRECT_B { t.bks } else { NR as isize };
    let mut bmask = [!0 as __mmask16; NV];
    if DIRECT_B {
        for (v, m) in bmask.iter_mut().enumerate() {
            let left = t.cols.saturating_sub(v * 16).min(16);
            *m = ((1u32 << left) - 1) as __mmask16;
        }
    }
    if SHIFTED {
        bmask.copy_from_slice(&t.lanes[..NV]);
    }
    // Edge taps: the tap of the block's first row, the row where the next tap starts, and the
    // tap's lanes as vectors of all-ones and zero lanes, ANDed into the loaded B vectors (as
    // load masks, which must change inside the loop, they were moved into mask registers
    // from general ones every k step, which cost ~5%). Past the last tap, none: no row reads
    // it.
    let edge_vectors = |tap: usize| {
        let lanes = t.edge_masks.get(tap).copied().unwrap_or(0);
        let mut m = [_mm512_setzero_si512(); NV];
        m[0] = _mm512_maskz_set1_epi32(lanes as __mmask16, -1);
        if NV > 1 {
            m[NV - 1] = _mm512_maskz_set1_epi32((lanes >> 16) as __mmask16, -1);
        }
        m
    };
    let (mut tap, mut next_tap_at) = (0, usize::MAX);
    let mut edge_vec = [_mm512_setzero_si512(); NV];
    if EDGES {
        tap = t.edge_k0 / t.edge_segment;
        next_tap_at = (tap + 1) * t.edge_segment - t.edge_k0;
        edge_vec = edge_vectors(tap);
    }
    // Where vector `v` of a row starts in C.
    let c_at = |v: usize| if SHIFTED { t.lane_at[v] } else { v * 16 };
    if t.csc == 1 {
        // Start fetching the C tile now; it is read (beta != 0) or written after the k loop.
        for r in 0..R.min(t.rows) {
            for v in 0..NV {
                let p =
                    t.c.wrapping_offset(r as isize * t.rsc)
                        .wrapping_add(c_at(v).min(t.cols - 1));
                _mm_prefetch::<_MM_HINT_T0>(p.cast());
            }
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let (mut a, mut b) = (t.a, t.b);
    for k in 0..t.kc {
        if EDGES && k == next_tap_at {
            // The next width tap's rows (rows are grouped by tap, so at most twice).
            tap += 1;
            next_tap_at += t.edge_segment;
            edge_vec = edge_vectors(tap);
        }
        if SHIFTED {
            // SAFETY: `k < t.kc` offsets are readable (the caller's contract).
            b = t.b.wrapping_add(unsafe { *t.boffs.add(k) });
            // Scattered rows defeat the hardware prefetcher: fetch the row 6 k steps ahead
            // (both cache lines a 32-column row may touch; prefetches never fault).
            if k + 6 < t.kc {
                // SAFETY: `k + 6 < t.kc` offsets are readable.
                let ahead = t.b.wrapping_add(unsafe { *t.boffs.add(k + 6) });
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(31).cast());
            }
        }
        if !DIRECT {
            // The packed A panel streams from L2 while B's panel stays in L1: fetch A 12
            // k steps ahead (a prefetch never faults, also past the panel's end).
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_offset(aks * 12).cast());
        }
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: packed: `v * 16 + 15 < NR` elements of this k-row of the B panel are
            // readable (the caller's contract: `kc * NR` elements at `t.b`); direct: the mask
            // enables only lanes `< t.cols` of this row of B; shifted: only the readable
            // lanes `t.lanes[v]` of the row at `t.boffs[k]` (with edge taps, the lanes past
            // the image's edges are then zeroed); masked-off lanes are not accessed (no
            // faults).
            *x = unsafe {
                if DIRECT_B || SHIFTED {
                    let x = _mm512_maskz_loadu_ps(bmask[v], b.wrapping_add(16 * v));
                    if EDGES {
                        let x = _mm512_and_si512(_mm512_castps_si512(x), edge_vec[v]);
                        _mm512_castsi512_ps(x)
                    } else {
                        x
                    }
                } else {
                    _mm512_loadu_ps(b.add(16 * v))
                }
            };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `r < R` (R <= MR, and R == t.rows in direct mode), inside this k
            // step of A.
            let av = _mm512_set1_ps(unsafe { *a.offset(r as isize * ars) });
            for (x, bb) in row.iter_mut().zip(bv.iter()) {
                *x = _mm512_fmadd_ps(av, *bb, *x);
            }
        }
        // Wrapping steps: the pointers are only dereferenced for valid k.
        a = a.wrapping_offset(aks);
        b = b.wrapping_offset(bks);
    }
    let alpha = _mm512_set1_ps(t.alpha);
    let beta = _mm512_set1_ps(t.beta);
    // Fused bias, sum and clamp (only given with unit column stride).
    let (bias, sum, sum_ld, lo, hi) = match &t.fused {
        Some(f) => (f.bias, f.sum, f.sum_ld, f.lo, f.hi),
        None => (
            std::ptr::null(),
            std::ptr::null(),
            0,
            f32::NEG_INFINITY,
            f32::INFINITY,
        ),
    };
    let clamp = t.fused.is_some();
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    // The epilogue indexes the finished tile row by row from memory: a copy made here keeps
    // the loop's accumulators out of memory, which otherwise began as a zeroed stack array
    // (a `memset` call per tile: ~2% of a 3x3 stem convolution, whose K is 27).
    let acc = std::hint::black_box(acc);
    if t.csc == 1 {
        // Constant trip counts (no early exit) let the accumulators stay in registers.
        for (r, row) in acc.iter().enumerate() {
            if r >= t.rows {
                continue;
            }
            // SAFETY: `r < t.rows`, so row `r` of the C tile is valid (caller's contract).
            let cr = unsafe { t.c.offset(r as isize * t.rsc) };
            for (v, x) in row.iter().enumerate() {
                let j = c_at(v);
                if if SHIFTED { bmask[v] == 0 } else { j >= t.cols } {
                    continue;
                }
                let mut y = _mm512_mul_ps(*x, alpha);
                let (m, gather) = if SHIFTED {
                    let lanes = bmask[v];
                    let m = ((1u32 << lanes.count_ones()) - 1) as __mmask16;
                    (m, (m != lanes).then_some(lanes))
                } else {
                    let left = t.cols - j;
                    let m = if left >= 16 {
                        !0
                    } else {
                        ((1u32 << left) - 1) as __mmask16
                    };
                    (m, None)
                };
                // The `m` values at `p` (C or the sum), expanded into the real lanes.
                macro_rules! load {
                    ($p:expr) => {{
                        let x = _mm512_maskz_loadu_ps(m, $p);
                        match gather {
                            Some(lanes) => _mm512_maskz_expand_ps(lanes, x),
                            None => x,
                        }
                    }};
                }
                // SAFETY: the `m` lanes at column `j` of row `r` are inside the C tile: plain,
                // columns `j..j + min(t.cols - j, 16)` (`t.cols` valid, unit column stride);
                // shifted, the vector's real columns, stored compressed as `m` contiguous
                // values at `t.lane_at[v]` (the caller's contract). The masked forms touch
                // only those lanes and suppress faults on the others. Fused: the bias holds
                // one value per tile row and the sum covers the tile with rows `sum_ld` apart
                // (the driver's contract), read with the same mask.
                unsafe {
                    let p = cr.add(j);
                    if t.beta != 0.0 {
                        y = _mm512_fmadd_ps(load!(p), beta, y);
                    }
                    if !bias.is_null() {
                        y = _mm512_add_ps(y, _mm512_set1_ps(*bias.add(r)));
                    }
                    if !sum.is_null() {
                        y = _mm512_add_ps(y, load!(sum.offset(r as isize * sum_ld).add(j)));
                    }
                    if clamp {
                        // `max(lo, y)`/`min(hi, y)` return `y` when it is NaN.
                        y = _mm512_min_ps(hi, _mm512_max_ps(lo, y));
                    }
                    if let Some(lanes) = gather {
                        y = _mm512_maskz_compress_ps(lanes, y);
                    }
                    _mm512_mask_storeu_ps(p, m, y);
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
        // (A fused epilogue is only given with unit column stride, handled above.)
        unsafe { super::store_tile(t, &buf, NR) };
    }
}

/// The last `COLS` (1 to 4) columns of a tile, the tile's rows in the lanes of one vector per
/// column: a column past the last whole 16-lane vector then costs one FMA per k step, not a
/// vector of 12 (7x7 convolutions have 49 columns: 48 + 1). A packed A; B packed, or in
/// place with `DIRECT_B`. Each column sums its k steps in four chains, so the FMA latency is
/// hidden; the few stores go through the scalar epilogue.
///
/// # Safety
/// As [`tile`] (not direct A, not shifted B), with `t.cols == COLS`.
#[target_feature(enable = "avx512f")]
unsafe fn narrow<const COLS: usize, const DIRECT_B: bool>(t: &Tile) {
    const CHAINS: usize = 4;
    let bks = if DIRECT_B { t.bks } else { NR as isize };
    // The packed A panel holds MR rows per k step.
    let a_lanes = ((1u32 << MR) - 1) as __mmask16;
    let mut acc = [[_mm512_setzero_ps(); CHAINS]; COLS];
    let (mut a, mut b) = (t.a, t.b);
    // One k step into chain `c` (a constant after unrolling, so `acc` stays in registers).
    let step = |acc: &mut [[__m512; CHAINS]; COLS], c: usize, a: *const f32, b: *const f32| {
        // SAFETY: a k step `< t.kc` of the packed A panel (MR elements) and of B (`COLS`
        // columns of its row: the caller's contract).
        unsafe {
            let av = _mm512_maskz_loadu_ps(a_lanes, a);
            for (j, chains) in acc.iter_mut().enumerate() {
                chains[c] = _mm512_fmadd_ps(av, _mm512_set1_ps(*b.add(j)), chains[c]);
            }
        }
    };
    let mut k = 0;
    while k + CHAINS <= t.kc {
        for c in 0..CHAINS {
            step(&mut acc, c, a, b);
            a = a.wrapping_add(MR);
            b = b.wrapping_offset(bks);
        }
        k += CHAINS;
    }
    while k < t.kc {
        step(&mut acc, 0, a, b);
        a = a.wrapping_add(MR);
        b = b.wrapping_offset(bks);
        k += 1;
    }
    let mut sums = [[0f32; 16]; COLS];
    for (chains, out) in acc.iter().zip(sums.iter_mut()) {
        let sum = _mm512_add_ps(
            _mm512_add_ps(chains[0], chains[1]),
            _mm512_add_ps(chains[2], chains[3]),
        );
        // SAFETY: `out` holds 16 floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), sum) };
    }
    for r in 0..t.rows.min(MR) {
        for (j, col) in sums.iter().enumerate() {
            // SAFETY: `r < t.rows`, `j < t.cols`: inside the C tile and the fused operands.
            unsafe {
                let p = t.c.offset(r as isize * t.rsc + j as isize * t.csc);
                let mut v = t.alpha * col[r];
                if t.beta != 0.0 {
                    v += t.beta * *p;
                }
                if let Some(f) = &t.fused {
                    v = f.apply(r, j, v);
                }
                *p = v;
            }
        }
    }
}

/// [`narrow`] kernels by `[columns - 1]`, for packed B and for B in place.
pub(super) static NARROW: [KernelFn; 4] = [
    narrow::<1, false>,
    narrow::<2, false>,
    narrow::<3, false>,
    narrow::<4, false>,
];
pub(super) static NARROW_DIRECT_B: [KernelFn; 4] = [
    narrow::<1, true>,
    narrow::<2, true>,
    narrow::<3, true>,
    narrow::<4, true>,
];

macro_rules! rows {
    ($d:literal, $db:literal, $sh:literal, $e:literal; $($r:literal)*) => {
        [$([tile::<$r, 1, $d, $db, $sh, $e> as KernelFn,
            tile::<$r, 2, $d, $db, $sh, $e> as KernelFn]),*]
    };
}

/// Kernels by `[rows - 1][column vectors - 1]`.
pub(super) static TABLE: [[KernelFn; 2]; MR] =
    rows!(false, false, false, false; 1 2 3 4 5 6 7 8 9 10 11 12);

/// Kernels reading A in place (strides `t.ars`, `t.aks`), by `[rows - 1][column vectors - 1]`;
/// only called with `R == t.rows`.
pub(super) static DIRECT: [[KernelFn; 2]; MR] =
    rows!(true, false, false, false; 1 2 3 4 5 6 7 8 9 10 11 12);

/// Kernels reading B in place (k stride `t.bks`, unit column stride, masked edges) with A
/// packed, by `[rows - 1][column vectors - 1]`.
pub(super) static DIRECT_B: [[KernelFn; 2]; MR] =
    rows!(false, true, false, false; 1 2 3 4 5 6 7 8 9 10 11 12);

/// Kernels reading a shifted B in place (row offsets `t.boffs`, lanes `t.lanes`) with A
/// packed, by `[rows - 1][column vectors - 1]`.
pub(super) static SHIFTED: [[KernelFn; 2]; MR] =
    rows!(false, false, true, false; 1 2 3 4 5 6 7 8 9 10 11 12);

/// Kernels reading a shifted B with edge taps in place (row offsets `t.boffs`, lanes
/// `t.lanes` zeroed past the image's edges per tap, `t.edge_masks`) with A packed, by
/// `[rows - 1][column vectors - 1]`.
pub(super) static SHIFTED_EDGES: [[KernelFn; 2]; MR] =
    rows!(false, false, true, true; 1 2 3 4 5 6 7 8 9 10 11 12);
