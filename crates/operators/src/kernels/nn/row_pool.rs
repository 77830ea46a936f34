//! Max and average pooling of f32 2-D planes with AVX-512, output row by output row, reading
//! the input in place (no padded copy of the plane).
//!
//! For each output row the input rows its windows cover are first reduced vertically (their
//! maximum, or sum) into a row buffer that holds the padding value (-inf, or 0) on both sides.
//! Each output then reduces its width taps from that buffer: with width stride 1 as shifted
//! loads; with stride 2 as shifted loads over twice the lanes whose even lanes one permute
//! keeps; with wider strides as the row's reduction at every column, every stride-th one
//! kept. Max pooling skips NaN inputs, as the portable max pooling, and a window with no
//! input keeps -inf. Average pooling gives every window's sum times `1 / window size`; the
//! caller rescales the windows the edges cut, as for its other paths.
//!
//! A 3x3 window at stride 2 without left padding (SqueezeNet's and Inception's reductions)
//! or at stride 1 with at most one column of left padding (Inception's pool branches) skips
//! the row buffer: the vertical reductions stay in registers and the width taps come from
//! lane shifts ([`halves_3x3`], [`keeps_3x3`]), so nothing is stored and read back at once.

use super::Geo3;
use crate::kernels::linalg::Float;

/// The reduction [`planes`] applies over each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reduce {
    Max,
    /// The sum times `1 / window size` (padding counts as zeros).
    Mean,
}

/// Pools the 2-D planes `x` (each `g.input`, of depth 1) into `out` (each `g.output`), using
/// `row` as working memory. Returns false, leaving `out` untouched, where this does not apply
/// (not f32, 3-D windows, no AVX-512, or sizes that do not match `g`): the caller then pools
/// another way. (Many planes per call: small planes cost little more than their outputs.)
pub(crate) fn planes<F: Float>(
    x: &[F],
    g: &Geo3,
    reduce: Reduce,
    row: &mut Vec<F>,
    out: &mut [F],
) -> bool {
    let (isz, osz) = (g.in_size(), g.out_size());
    let fits = g.input[0] == 1
        && g.kernel[0] == 1
        && g.output[0] == 1
        && isz > 0
        && osz > 0
        && x.len().is_multiple_of(isz)
        && x.len() / isz == out.len() / osz
        && out.len().is_multiple_of(osz)
        && g.strides[1..].iter().all(|&s| s > 0)
        && g.kernel[1..].iter().all(|&k| k > 0);
    if !fits || !crate::kernels::simd::has_avx512() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(kernel), Some(x), Some(out)) =
        (in_registers(g, reduce), F::as_f32s(x), F::as_f32s_mut(out))
    {
        for (x, out) in x.chunks_exact(isz).zip(out.chunks_exact_mut(osz)) {
            // SAFETY: AVX-512F (checked above); one plane's input and output (checked in
            // `fits`); `in_registers` checked the geometry for the kernel it picked.
            unsafe { kernel(x, g, out) };
        }
        return true;
    }
    let layout = RowLayout::new(g);
    // The common 3x3 window, its loops unrolled.
    let square3 = g.kernel[1..] == [3, 3];
    row.clear();
    let fill = match reduce {
        Reduce::Max => F::NEG_INFINITY,
        Reduce::Mean => F::ZERO,
    };
    row.resize(layout.len, fill);
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(row), Some(out)) =
        (F::as_f32s(x), F::as_f32s_mut(row), F::as_f32s_mut(out))
    {
        for (x, out) in x.chunks_exact(isz).zip(out.chunks_exact_mut(osz)) {
            // SAFETY: the CPU has AVX-512F (checked above); `x` and `out` hold one plane's
            // input and output (checked in `fits`), and `row` holds `layout.len` values, the
            // reduction's padding outside the input's columns (each plane writes only those),
            // as `rows` requires; `K = 3` only for a 3x3 window.
            unsafe {
                match reduce {
                    Reduce::Max if square3 => avx512::rows::<false, 3>(x, g, &layout, row, out),
                    Reduce::Max => avx512::rows::<false, 0>(x, g, &layout, row, out),
                    Reduce::Mean if square3 => avx512::rows::<true, 3>(x, g, &layout, row, out),
                    Reduce::Mean => avx512::rows::<true, 0>(x, g, &layout, row, out),
                }
            };
        }
        return true;
    }
    false
}

/// A plane kernel that pools in registers without the row buffer.
#[cfg(target_arch = "x86_64")]
type PlaneKernel = unsafe fn(&[f32], &Geo3, &mut [f32]);

/// The register kernel for `g` and `reduce`, where one applies ([`keeps_3x3`],
/// [`halves_3x3`]).
#[cfg(target_arch = "x86_64")]
fn in_registers(g: &Geo3, reduce: Reduce) -> Option<PlaneKernel> {
    let kernel: PlaneKernel = match (reduce, keeps_3x3(g), halves_3x3(g)) {
        (Reduce::Max, true, _) => avx512::keeping3::<false>,
        (Reduce::Mean, true, _) => avx512::keeping3::<true>,
        (Reduce::Max, _, true) => avx512::halving3::<false>,
        (Reduce::Mean, _, true) => avx512::halving3::<true>,
        _ => return None,
    };
    Some(kernel)
}

/// Whether `g` is a 3x3 window at stride 2 with no dilation and no left padding, which
/// [`planes`] pools in registers without the row buffer.
pub(crate) fn halves_3x3(g: &Geo3) -> bool {
    g.kernel[1..] == [3, 3]
        && g.strides[1..] == [2, 2]
        && g.dilations[1..] == [1, 1]
        && g.pad_begin[2] == 0
}

/// Whether `g` is a 3x3 window at stride 1 with no dilation and at most one column of left
/// padding, which [`planes`] pools in registers without the row buffer.
pub(crate) fn keeps_3x3(g: &Geo3) -> bool {
    g.kernel[1..] == [3, 3]
        && g.strides[1..] == [1, 1]
        && g.dilations[1..] == [1, 1]
        && g.pad_begin[2] <= 1
}

/// Where things live in the row buffer: padded column `c` of the current window row is
/// `row[c]` (input column `c - pad_left`), followed for strides above 2 by the maximum of
/// the width taps at every padded column.
#[derive(Debug, Clone, Copy)]
struct RowLayout {
    /// Where the full-resolution maxima start (strides above 2): after the padded columns
    /// the vector loads of the width taps may read.
    full_at: usize,
    /// Vectors of full-resolution maxima.
    full_vectors: usize,
    /// Length of the whole buffer.
    len: usize,
}

impl RowLayout {
    fn new(g: &Geo3) -> Self {
        let ([_, _, iw], [_, _, ow]) = (g.input, g.output);
        let ([_, _, kw_n], [_, _, sw], [_, _, dw]) = (g.kernel, g.strides, g.dilations);
        let reach = (kw_n - 1) * dw;
        let vectors = ow.div_ceil(16);
        // The first columns of the last loads: stride 1 reads 16 columns per 16 outputs,
        // stride 2 reads 32, wider strides the full-resolution columns `(ow - 1) * sw + 1`.
        let (loaded, full_vectors) = match sw {
            1 => (vectors * 16, 0),
            2 => (vectors * 32, 0),
            _ => {
                let full = ((ow - 1) * sw + 1).div_ceil(16);
                (full * 16, full)
            }
        };
        let padded = (loaded + reach).max(g.pad_begin[2] + iw);
        Self {
            full_at: padded,
            full_vectors,
            len: padded + full_vectors * 16,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The kernel: 16 columns per vector, the row tails masked.

    use super::RowLayout;
    use crate::kernels::nn::Geo3;
    use std::arch::x86_64::*;

    use crate::kernels::simd::first_lanes;

    /// The start of a reduction: 0 for a sum (`MEAN`), else -inf.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn identity<const MEAN: bool>() -> __m512 {
        _mm512_set1_ps(if MEAN { 0.0 } else { f32::NEG_INFINITY })
    }

    /// `acc` plus `v` (`MEAN`), else their maximum (`acc` where `v` is NaN).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn combine<const MEAN: bool>(v: __m512, acc: __m512) -> __m512 {
        if MEAN {
            _mm512_add_ps(acc, v)
        } else {
            _mm512_max_ps(v, acc)
        }
    }

    /// The reduction of `kw_n` width taps `dw` apart over the 16 columns from `p`.
    ///
    /// # Safety
    /// AVX-512F is available, and `p + (kw_n - 1) * dw + 16` floats are readable from `p`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn taps<const MEAN: bool>(p: *const f32, kw_n: usize, dw: usize) -> __m512 {
        let mut acc = identity::<MEAN>();
        for kw in 0..kw_n {
            // SAFETY: tap `kw < kw_n` reads inside the caller's readable range.
            let v = unsafe { _mm512_loadu_ps(p.add(kw * dw)) };
            acc = combine::<MEAN>(v, acc);
        }
        acc
    }

    /// The reduction of input rows `y * 2 - pt..` (3 of them, those inside the plane) over
    /// the 16 columns from `i0`, the identity past the row's end.
    ///
    /// # Safety
    /// AVX-512F; `x` holds `ih * iw` values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn column_vector<const MEAN: bool>(
        x: &[f32],
        [ih, iw]: [usize; 2],
        first_row: usize,
        i0: usize,
    ) -> __m512 {
        let fill = identity::<MEAN>();
        let m = first_lanes(iw.saturating_sub(i0));
        let mut acc = fill;
        for r in 0..3 {
            let iy = first_row.wrapping_add(r);
            if iy < ih && m != 0 {
                // SAFETY: row `iy < ih`, columns `i0..iw` masked to the row (`x` holds
                // `ih * iw` values; masked lanes are not read).
                let v = unsafe { _mm512_mask_loadu_ps(fill, m, x.as_ptr().add(iy * iw + i0)) };
                acc = combine::<MEAN>(v, acc);
            }
        }
        acc
    }

    /// `v` shifted down by `N` lanes, `next`'s first lanes filling the top.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn shifted<const N: i32>(next: __m512, v: __m512) -> __m512 {
        let (next, v) = (_mm512_castps_si512(next), _mm512_castps_si512(v));
        _mm512_castsi512_ps(_mm512_alignr_epi32::<N>(next, v))
    }

    /// The width taps at every column of `v` (16 columns, `next` the 16 after them).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn three_taps<const MEAN: bool>(v: __m512, next: __m512) -> __m512 {
        let two = combine::<MEAN>(shifted::<1>(next, v), v);
        combine::<MEAN>(shifted::<2>(next, v), two)
    }

    /// Pools a plane with a 3x3 window at stride 1, no dilation and at most one column of
    /// left padding (see [`super::keeps_3x3`]), 16 outputs at a time: the three input rows
    /// reduced into registers (the 16 columns before and after too), the width taps from
    /// lane shifts. As [`halving3`] otherwise.
    ///
    /// # Safety
    /// AVX-512F; `x` holds `g.in_size()` values and `out` `g.out_size()` (2-D: depths of 1);
    /// [`super::keeps_3x3`]`(g)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn keeping3<const MEAN: bool>(x: &[f32], g: &Geo3, out: &mut [f32]) {
        let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
        let (pt, pl) = (g.pad_begin[1], g.pad_begin[2]);
        let scale = _mm512_set1_ps(if MEAN { 1.0 / 9.0 } else { 1.0 });
        for (y, out_row) in out.chunks_exact_mut(ow).take(oh).enumerate() {
            let first_row = y.wrapping_sub(pt);
            // Input columns from `16 * c - pl` for output vector `c`: with left padding the
            // vector before the first is all padding.
            let mut prev = identity::<MEAN>();
            // SAFETY: `x` holds the plane's `ih * iw` values.
            let mut cur = unsafe { column_vector::<MEAN>(x, [ih, iw], first_row, 0) };
            for (c, o) in out_row.chunks_mut(16).enumerate() {
                // SAFETY: as for `cur`.
                let next = unsafe { column_vector::<MEAN>(x, [ih, iw], first_row, 16 * c + 16) };
                let mut r = match pl {
                    // Columns j, j + 1, j + 2.
                    0 => three_taps::<MEAN>(cur, next),
                    // Columns j - 1, j, j + 1.
                    _ => {
                        let left = shifted::<15>(cur, prev);
                        combine::<MEAN>(shifted::<1>(next, cur), combine::<MEAN>(left, cur))
                    }
                };
                if MEAN {
                    r = _mm512_mul_ps(r, scale);
                }
                // SAFETY: `o` holds `o.len() <= 16` outputs of the row, the store masked to
                // them.
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr(), first_lanes(o.len()), r) };
                (prev, cur) = (cur, next);
            }
        }
    }

    /// Pools a plane with a 3x3 window at stride 2, no dilation and no left padding (see
    /// [`super::halves_3x3`]), 16 outputs at a time: the three input rows are reduced into
    /// registers 32 columns at a time (and the 16 after them), the width taps come from
    /// lane shifts, and one permute keeps the even columns. No row buffer, so nothing is
    /// stored and read back. Columns and rows outside the input are skipped (means are
    /// sums times 1/9, the caller rescales the cut windows).
    ///
    /// # Safety
    /// AVX-512F; `x` holds `g.in_size()` values and `out` `g.out_size()` (2-D: depths of 1);
    /// [`super::halves_3x3`]`(g)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn halving3<const MEAN: bool>(x: &[f32], g: &Geo3, out: &mut [f32]) {
        let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
        let pt = g.pad_begin[1];
        let scale = _mm512_set1_ps(if MEAN { 1.0 / 9.0 } else { 1.0 });
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for (y, out_row) in out.chunks_exact_mut(ow).take(oh).enumerate() {
            let first_row = (2 * y).wrapping_sub(pt);
            // SAFETY: `x` holds the plane's `ih * iw` values.
            let mut v0 = unsafe { column_vector::<MEAN>(x, [ih, iw], first_row, 0) };
            for (c, o) in out_row.chunks_mut(16).enumerate() {
                let i0 = 32 * c;
                // SAFETY: as for `v0`.
                let v1 = unsafe { column_vector::<MEAN>(x, [ih, iw], first_row, i0 + 16) };
                // SAFETY: as for `v0`.
                let v2 = unsafe { column_vector::<MEAN>(x, [ih, iw], first_row, i0 + 32) };
                let lo = three_taps::<MEAN>(v0, v1);
                let hi = three_taps::<MEAN>(v1, v2);
                let mut r = _mm512_permutex2var_ps(lo, even, hi);
                if MEAN {
                    r = _mm512_mul_ps(r, scale);
                }
                // SAFETY: `o` holds `o.len() <= 16` outputs of the row, the store masked to
                // them.
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr(), first_lanes(o.len()), r) };
                v0 = v2;
            }
        }
    }

    /// Pools the plane row by row (see the module docs): window sums times `1 / window
    /// size` with `MEAN`, else maxima; a `K x K` window when `K` is not 0 (it must then be
    /// `g`'s), else `g`'s.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `x` holds `g.in_size()` values and `out`
    /// `g.out_size()` (2-D: depths of 1); `row` holds `layout.len` values of
    /// [`RowLayout::new`]`(g)`, the padding (0 with `MEAN`, else -inf) everywhere but the
    /// input's columns.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows<const MEAN: bool, const K: usize>(
        x: &[f32],
        g: &Geo3,
        layout: &RowLayout,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
        let ([_, kh_n, kw_n], [_, sh, sw]) = (g.kernel, g.strides);
        let (kh_n, kw_n) = if K == 0 { (kh_n, kw_n) } else { (K, K) };
        let ([_, dh, dw], [_, pt, pl]) = (g.dilations, g.pad_begin);
        let scale = _mm512_set1_ps(if MEAN {
            1.0 / (kh_n * kw_n) as f32
        } else {
            1.0
        });
        // The window's result from its reduced taps.
        let finish = |v: __m512| if MEAN { _mm512_mul_ps(v, scale) } else { v };
        // Output `j` of a stride-2 vector is lane `2j` of the pair (lo, hi).
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let (xp, rp) = (x.as_ptr(), row.as_mut_ptr());
        let full = rp.wrapping_add(layout.full_at);
        for y in 0..oh {
            // Vertical: the window rows inside the input, reduced into the buffer.
            for i0 in (0..iw).step_by(16) {
                let m = first_lanes(iw - i0);
                let mut acc = identity::<MEAN>();
                for kh in 0..kh_n {
                    let iy = (y * sh + kh * dh).wrapping_sub(pt);
                    if iy < ih {
                        // SAFETY: row `iy < ih` of the plane, columns `i0..iw` masked to the
                        // row (`x` holds `ih * iw` values; masked lanes are not read).
                        let v = unsafe { _mm512_maskz_loadu_ps(m, xp.add(iy * iw + i0)) };
                        acc = combine::<MEAN>(v, acc);
                    }
                }
                // SAFETY: padded columns `pl + i0..pl + iw` (masked) lie inside the buffer
                // (`layout.full_at >= pl + iw`).
                unsafe { _mm512_mask_storeu_ps(rp.add(pl + i0), m, acc) };
            }
            // Horizontal: the width taps of each output.
            let o = out.as_mut_ptr().wrapping_add(y * ow);
            // `RowLayout::new` sized the buffer so that every `taps` call below reads inside it:
            // `c + (kw_n - 1) * dw + 16 <= layout.full_at` for the columns `c` each stride loads.
            match sw {
                1 => {
                    for x0 in (0..ow).step_by(16) {
                        // SAFETY: columns `x0 < 16 * ow.div_ceil(16)` are within the layout's
                        // loads; outputs `x0..ow` (masked) of row `y < oh` are inside `out`.
                        unsafe {
                            let v = finish(taps::<MEAN>(rp.add(x0), kw_n, dw));
                            _mm512_mask_storeu_ps(o.add(x0), first_lanes(ow - x0), v);
                        }
                    }
                }
                2 => {
                    for x0 in (0..ow).step_by(16) {
                        // SAFETY: columns `2 * x0 + 16 < 32 * ow.div_ceil(16)` are within the
                        // layout's loads; the outputs as for stride 1.
                        unsafe {
                            let lo = taps::<MEAN>(rp.add(2 * x0), kw_n, dw);
                            let hi = taps::<MEAN>(rp.add(2 * x0 + 16), kw_n, dw);
                            let v = finish(_mm512_permutex2var_ps(lo, even, hi));
                            _mm512_mask_storeu_ps(o.add(x0), first_lanes(ow - x0), v);
                        }
                    }
                }
                _ => {
                    for f in 0..layout.full_vectors {
                        // SAFETY: the layout's loads cover `full_vectors` vectors of columns,
                        // and the full-resolution maxima hold as many after them.
                        unsafe {
                            let v = finish(taps::<MEAN>(rp.add(16 * f), kw_n, dw));
                            _mm512_storeu_ps(full.add(16 * f), v);
                        }
                    }
                    for xo in 0..ow {
                        // SAFETY: `xo * sw <= (ow - 1) * sw < 16 * full_vectors`, and output
                        // `xo` of row `y` is inside `out`.
                        unsafe { *o.add(xo) = *full.add(xo * sw) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::nn::depthwise::tests::{geo, geometries, input, window};
    use crate::kernels::simd;

    #[test]
    fn planes_match_a_naive_reference_and_skip_nan() {
        let mut shapes = geometries();
        // SqueezeNet's and ResNet's pools, a stride of 3, a window that reads only padding,
        // and a 1-wide output; 3x3 windows at stride 2 without left padding (in registers):
        // Inception's padded at the end, top padding, rows of 2, 33 and 70 columns; and at
        // stride 1 (in registers): Inception's padded by 1, none, more at the end.
        shapes.extend([
            geo([27, 27], [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], false),
            geo([13, 33], [3, 3], [2, 2], [1, 1], [1, 0, 1, 1], false),
            geo([5, 5], [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], false),
            geo([7, 70], [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true),
            geo([14, 14], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
            geo([9, 40], [3, 3], [1, 1], [1, 1], [0, 0, 0, 0], false),
            geo([6, 17], [3, 3], [1, 1], [1, 1], [1, 1, 2, 2], false),
            geo([111, 111], [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], false),
            geo([112, 112], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
            geo([23, 50], [3, 4], [3, 3], [1, 2], [1, 2, 1, 2], true),
            geo([5, 5], [2, 2], [1, 1], [1, 1], [0, 0, 3, 3], false),
            geo([9, 1], [3, 1], [2, 1], [1, 1], [1, 0, 1, 0], false),
            geo([6, 40], [1, 20], [1, 5], [1, 1], [0, 0, 0, 0], false),
        ]);
        let mut row = Vec::new();
        for (gi, g) in shapes.iter().enumerate() {
            // Two planes per call: the second reuses the row buffer's padding. Max pooling
            // sees NaNs (skipped); average pooling does not.
            let (isz, osz) = (g.in_size(), g.out_size());
            for reduce in [Reduce::Max, Reduce::Mean, Reduce::Max] {
                let mut x = input(2 * isz, gi);
                if reduce == Reduce::Max {
                    x[isz / 2] = f32::NAN;
                    x[isz + isz / 3] = f32::NAN;
                }
                let mut out = vec![0.0; 2 * osz];
                if !planes(&x, g, reduce, &mut row, &mut out) {
                    // No AVX-512 here: the pool falls back to its portable loop.
                    assert!(!simd::has_avx512());
                    assert!(out.iter().all(|&v| v == 0.0));
                    continue;
                }
                for (i, &got) in out.iter().enumerate() {
                    let (p, y, xo) = (i / osz, i % osz / g.output[2], i % g.output[2]);
                    let taps = window(&x[p * isz..][..isz], g, y, xo);
                    let msg = format!("geometry {gi} {reduce:?} plane {p} output {i}");
                    match reduce {
                        Reduce::Max => {
                            let want =
                                taps.iter().fold(
                                    f32::NEG_INFINITY,
                                    |m, &(_, v)| if v > m { v } else { m },
                                );
                            assert_eq!(got, want, "{msg}");
                        }
                        Reduce::Mean => {
                            let sum: f32 = taps.iter().map(|&(_, v)| v).sum();
                            let want = sum / g.kernel_size() as f32;
                            assert!((got - want).abs() <= 1e-5 * (1.0 + sum.abs()), "{msg}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn other_types_and_shapes_are_declined() {
        let g = &geometries()[0];
        let x = vec![1.0f64; g.in_size()];
        let mut out = vec![0.0f64; g.out_size()];
        assert!(!planes(&x, g, Reduce::Max, &mut Vec::new(), &mut out));
        let x = vec![1.0f32; g.in_size() - 1];
        let mut out = vec![0.0f32; g.out_size()];
        assert!(!planes(&x, g, Reduce::Max, &mut Vec::new(), &mut out));
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
