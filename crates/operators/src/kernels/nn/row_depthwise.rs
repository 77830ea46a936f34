//! Depthwise 2-D f32 convolution with AVX-512 on NCHW planes, output row by output row,
//! every input row copied once into a small ring of padded rows.
//!
//! ONNX Runtime runs depthwise convolutions in its blocked NCHWc layout, which this engine
//! does not carry between operators; transposing each plane into that layout and back (as
//! [`super::depthwise_blocked`] does) costs as much as the taps on large planes. Here each
//! plane is read in place: the input rows the current output row's windows cover are copied,
//! zero-padded on both sides, into a ring of row slots that stays in the L1 cache (each input
//! row once per plane; with width stride 2 split into its even and odd columns on the way, so
//! every tap is a plain vector load). Each output vector then starts at the bias (plus the
//! fused sum), takes one FMA per tap, is clamped by a fused Relu or Clip and is stored once.
//!
//! The common 3x3 window with one column of left padding (MobileNet's and ShuffleNet's
//! depthwise layers) skips the ring: its taps are built in registers from the input rows
//! (aligned-in-effect shifts with `valignd`; with stride 2 two permutes split even and odd
//! columns). Copying rows into the ring and reading them back right away cost more than that
//! (stride 2 on MobileNetV2's 96x112x112 layer: 0.264 -> 0.197 ms).
//!
//! Width strides 1 and 2 with width dilation 1; [`applies`] says which geometries, and the
//! caller keeps its other paths for the rest.

use super::Geo3;
use std::cell::RefCell;

/// Widest kernel (taps per axis) the ring layout takes.
const MAX_TAPS: usize = 16;

/// Whether [`planes`] handles `g`: a 2-D plane with some output, width stride 1 or 2, width
/// dilation 1, at most [`MAX_TAPS`] taps per axis, on a CPU with AVX-512.
pub(super) fn applies(g: &Geo3) -> bool {
    g.input[0] == 1
        && g.output[0] == 1
        && g.kernel[0] == 1
        && g.out_size() > 0
        && g.in_size() > 0
        && (1..=MAX_TAPS).contains(&g.kernel[1])
        && (1..=MAX_TAPS).contains(&g.kernel[2])
        && matches!(g.strides[2], 1 | 2)
        && g.strides[1] > 0
        && g.dilations[1] > 0
        && g.dilations[2] == 1
        && crate::kernels::simd::has_avx512()
}

/// A run of consecutive planes (channels of one or more batch items) and their operands.
pub(super) struct Planes<'a> {
    /// The input planes, `g.in_size()` values each.
    pub x: &'a [f32],
    /// Every channel's `g.kernel_size()` weights.
    pub w: &'a [f32],
    /// One bias per channel.
    pub bias: Option<&'a [f32]>,
    /// Planes added before the clamp (a fused Add), `g.out_size()` values each.
    pub sum: Option<&'a [f32]>,
    /// The output planes, `g.out_size()` values each, overwritten.
    pub out: &'a mut [f32],
    /// The first plane's channel: plane `j` is channel `(first_channel + j) % channels`.
    pub first_channel: usize,
    pub channels: usize,
}

/// One plane's operands.
struct Plane<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: f32,
    sum: Option<&'a [f32]>,
    out: &'a mut [f32],
}

/// Convolves the planes: `out = clamp(conv(x, w) + bias + sum)`, the clamp `(lo, hi)` from a
/// fused Relu or Clip. Returns false, with `out` untouched, where this does not apply
/// ([`applies`]) or the slices do not match `g`.
pub(super) fn planes(p: Planes<'_>, g: &Geo3, clamp: Option<(f32, f32)>) -> bool {
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    let fits = applies(g)
        && p.out.len().is_multiple_of(osz)
        && p.x.len() == p.out.len() / osz * isz
        && p.first_channel < p.channels
        && p.w.len() == p.channels * ksz
        && p.bias.is_none_or(|b| b.len() == p.channels)
        && p.sum.is_none_or(|s| s.len() == p.out.len());
    if !fits {
        return false;
    }
    let layout = Layout::new(g);
    let square3 = g.kernel[1..] == [3, 3];
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    with_ring(&layout, |ring| {
        for (j, (x, out)) in
            p.x.chunks_exact(isz)
                .zip(p.out.chunks_exact_mut(osz))
                .enumerate()
        {
            let channel = (p.first_channel + j) % p.channels;
            let mut plane = Plane {
                x,
                w: &p.w[channel * ksz..][..ksz],
                bias: p.bias.map_or(0.0, |b| b[channel]),
                sum: p.sum.map(|s| &s[j * osz..][..osz]),
                out,
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512F (`applies`); the plane's slices match `g` (`fits`)
            // and `ring` is `layout`'s, zero outside the input columns each fill writes.
            unsafe {
                if square3 {
                    avx512::plane::<3, 3>(&mut plane, &layout, ring, (lo, hi));
                } else {
                    avx512::plane::<0, 0>(&mut plane, &layout, ring, (lo, hi));
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (&mut plane, &ring, square3, lo, hi);
        }
    });
    true
}

/// The plane's geometry and where the ring keeps its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    kh_n: usize,
    kw_n: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    pt: usize,
    pl: usize,
    /// Length of one column phase of a slot: padded column `c` of a row is at
    /// `(c % sw) * phase_len + c / sw` in its slot.
    phase_len: usize,
    /// Ring slots for input rows (the window's height span rounded up to a power of two, so
    /// that row `iy` lives in slot `iy & (slots - 1)`); slot `slots` stays zero and stands
    /// for the padding rows.
    slots: usize,
}

impl Layout {
    fn new(g: &Geo3) -> Self {
        let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
        let ([_, kh_n, kw_n], [_, sh, sw]) = (g.kernel, g.strides);
        let ([_, dh, _], [_, pt, pl]) = (g.dilations, g.pad_begin);
        let padded_w = ((ow - 1) * sw + kw_n).max(pl + iw);
        // Tap `kw` loads 16 columns from `kw / sw + x0` for every vector start `x0 < ow`; the
        // 3x3 kernel loads the aligned vector after each one's columns.
        let loaded = ((kw_n - 1) / sw).max(16) + ow.next_multiple_of(16);
        // A fill stores whole vectors: up to 32 columns past the input's last.
        let filled = (pl + iw.next_multiple_of(32)).div_ceil(sw) + 16;
        let phase_len = padded_w
            .div_ceil(sw)
            .max(loaded)
            .max(filled)
            .next_multiple_of(16);
        Self {
            ih,
            iw,
            oh,
            ow,
            kh_n,
            kw_n,
            sh,
            sw,
            dh,
            pt,
            pl,
            phase_len,
            slots: ((kh_n - 1) * dh + 1).next_power_of_two(),
        }
    }

    /// Values per slot.
    fn slot_len(&self) -> usize {
        self.sw * self.phase_len
    }

    /// Values of the whole ring, the zero slot included.
    fn ring_len(&self) -> usize {
        (self.slots + 1) * self.slot_len()
    }
}

/// This thread's ring and the layout whose padding it holds (zero outside the input
/// columns), kept across planes, operators and runs so steady-state runs allocate nothing.
#[derive(Debug, Default)]
struct Ring {
    data: Vec<f32>,
    zeroed_for: Option<Layout>,
}

thread_local! {
    static RING: RefCell<Ring> = RefCell::new(Ring::default());
}

/// Runs `f` with this thread's ring laid out (and zeroed when the layout changed) for
/// `layout` (a nested call gets a fresh ring).
fn with_ring<R>(layout: &Layout, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut ring = RING.try_with(|cell| cell.take()).unwrap_or_default();
    // Room to start the slots on a 64-byte boundary, so that vector loads do not straddle
    // cache lines.
    let len = layout.ring_len() + 15;
    if ring.zeroed_for != Some(*layout) || ring.data.len() != len {
        ring.data.clear();
        ring.data.resize(len, 0.0);
        ring.zeroed_for = Some(*layout);
    }
    let start = ring.data.as_ptr().align_offset(64).min(15);
    let result = f(&mut ring.data[start..][..layout.ring_len()]);
    let _ = RING.try_with(|cell| cell.replace(ring));
    result
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The kernel: 16 outputs per vector, up to four vectors of a row at a time, the row's
    //! last vector masked.

    use super::{Layout, Plane, MAX_TAPS};
    use std::arch::x86_64::*;

    use crate::kernels::simd::first_lanes;

    /// Convolves the plane row by row (see the module docs); a `KH x KW` kernel when they
    /// are not 0 (they must then be the layout's), else the layout's.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `p.x`, `p.w`, `p.out` and `p.sum` hold the sizes of the
    /// geometry `l` was made from; `ring` holds `l.ring_len()` values, zero outside the
    /// input columns that [`fill`] writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn plane<const KH: usize, const KW: usize>(
        p: &mut Plane<'_>,
        l: &Layout,
        ring: &mut [f32],
        (lo, hi): (f32, f32),
    ) {
        let (kh_n, kw_n) = if KH == 0 { (l.kh_n, l.kw_n) } else { (KH, KW) };
        let mut c = Consts {
            bias: _mm512_set1_ps(p.bias),
            lo: _mm512_set1_ps(lo),
            hi: _mm512_set1_ps(hi),
            tap_at: [0; MAX_TAPS],
            w3: [_mm512_setzero_ps(); 9],
        };
        for (kw, at) in c.tap_at.iter_mut().enumerate().take(kw_n) {
            *at = (kw % l.sw) * l.phase_len + kw / l.sw;
        }
        if (KH, KW) == (3, 3) {
            for (v, &w) in c.w3.iter_mut().zip(p.w) {
                *v = _mm512_set1_ps(w);
            }
        }
        if (KH, KW) == (3, 3) && l.pl == 1 && l.dh == 1 {
            // SAFETY: as this function's contract; the geometry is the callee's.
            unsafe { in_place3(p, l, &c) };
            return;
        }
        // Which input row each slot holds (none yet for this plane); slots past the
        // tracking array are refilled for every output row, still correct.
        let mut held = [usize::MAX; 4 * MAX_TAPS];
        let slots = &mut held[..l.slots.min(4 * MAX_TAPS)];
        let slot_len = l.slot_len();
        let ring_p = ring.as_mut_ptr();
        let zero_slot = ring_p.wrapping_add(l.slots * slot_len) as *const f32;
        let mut rows = [zero_slot; MAX_TAPS];
        let mut y = 0;
        while y < l.oh {
            for (kh, row) in rows.iter_mut().enumerate().take(kh_n) {
                let iy = (y * l.sh + kh * l.dh).wrapping_sub(l.pt);
                *row = if iy >= l.ih {
                    zero_slot
                } else {
                    let s = iy & (l.slots - 1);
                    let slot = ring_p.wrapping_add(s * slot_len);
                    if slots.get(s) != Some(&iy) {
                        // SAFETY: row `iy < ih` of the input; slot `s < l.slots` of the ring.
                        unsafe { fill(p.x.as_ptr().add(iy * l.iw), slot, l) };
                        prefetch(p.x.as_ptr().wrapping_add((iy + PREFETCH_ROWS) * l.iw), l.iw);
                        if let Some(h) = slots.get_mut(s) {
                            *h = iy;
                        }
                    }
                    slot
                };
            }
            // SAFETY: `rows` hold the window rows of output row `y < oh` (slots of the ring,
            // each `slot_len` long, covering every column a tap loads: `Layout::new`).
            unsafe { output_row::<KH, KW>(p, l, &rows, &c, y) };
            y += 1;
        }
    }

    /// A 3x3 kernel with height dilation 1 and one column of left padding, straight from the
    /// input rows, no ring: with width stride 1 the taps of an output vector at column `x0`
    /// are the input's vectors at `x0 - 16`, `x0`, `x0 + 16` (zero outside the row, masked
    /// loads) shifted by a lane (`valignd`); with stride 2 the even and odd lanes of the 32
    /// columns from `2 * x0` (two permutes), the left tap the odd ones shifted by a lane.
    /// No copy and no store a tap must wait for (measured faster than the ring).
    ///
    /// # Safety
    /// As [`plane`], with that geometry.
    #[target_feature(enable = "avx512f")]
    unsafe fn in_place3(p: &mut Plane<'_>, l: &Layout, c: &Consts) {
        let vectors = l.ow.div_ceil(16);
        for y in 0..l.oh {
            // The window's rows inside the input (the others read zero padding).
            let mut rows = [std::ptr::null::<f32>(); 3];
            let mut taps = [0usize; 3];
            let mut n = 0;
            for kh in 0..3 {
                let iy = (y * l.sh + kh).wrapping_sub(l.pt);
                if iy < l.ih {
                    rows[n] = p.x.as_ptr().wrapping_add(iy * l.iw);
                    taps[n] = kh;
                    n += 1;
                }
            }
            let (rows, taps) = (&rows[..n], &taps[..n]);
            let mut v = 0;
            // SAFETY: each call takes vectors `v..v + N <= vectors` of row `y` and the window
            // rows inside the input; stride 1 or 2 (`applies`).
            unsafe {
                while v + 4 <= vectors {
                    match l.sw {
                        1 => in_place3_vectors::<4, 1>(p, l, c, rows, taps, y, 16 * v),
                        _ => in_place3_vectors::<4, 2>(p, l, c, rows, taps, y, 16 * v),
                    }
                    v += 4;
                }
                match (vectors - v, l.sw) {
                    (3, 1) => in_place3_vectors::<3, 1>(p, l, c, rows, taps, y, 16 * v),
                    (2, 1) => in_place3_vectors::<2, 1>(p, l, c, rows, taps, y, 16 * v),
                    (1, 1) => in_place3_vectors::<1, 1>(p, l, c, rows, taps, y, 16 * v),
                    (3, _) => in_place3_vectors::<3, 2>(p, l, c, rows, taps, y, 16 * v),
                    (2, _) => in_place3_vectors::<2, 2>(p, l, c, rows, taps, y, 16 * v),
                    (1, _) => in_place3_vectors::<1, 2>(p, l, c, rows, taps, y, 16 * v),
                    _ => {}
                }
            }
        }
    }

    /// `N` (at most 4) output vectors of row `y` from column `x0` for [`in_place3`], width
    /// stride `SW`: `rows` are the input rows of the window's tap rows `taps` that lie
    /// inside the input.
    ///
    /// # Safety
    /// As [`in_place3`]; `x0 + 16 * (N - 1) < l.ow`; each row holds `l.iw` readable values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn in_place3_vectors<const N: usize, const SW: usize>(
        p: &mut Plane<'_>,
        l: &Layout,
        c: &Consts,
        rows: &[*const f32],
        taps: &[usize],
        y: usize,
        x0: usize,
    ) {
        // SAFETY: the callers' contract: vectors `x0..` of row `y` lie in the plane.
        let (row_out, mask, mut acc) = unsafe { start::<N>(p, l, c, y, x0) };
        let shift = |next: __m512, cur: __m512, by15: bool| {
            let (next, cur) = (_mm512_castps_si512(next), _mm512_castps_si512(cur));
            _mm512_castsi512_ps(if by15 {
                _mm512_alignr_epi32::<15>(next, cur)
            } else {
                _mm512_alignr_epi32::<1>(next, cur)
            })
        };
        // The input vector at column `col` of `row`, zero outside the row.
        let load = |row: *const f32, col: usize| {
            if col < l.iw {
                // SAFETY: columns `col..iw` (masked) of a row of `iw` values.
                unsafe { _mm512_maskz_loadu_ps(first_lanes(l.iw - col), row.wrapping_add(col)) }
            } else {
                _mm512_setzero_ps()
            }
        };
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for (&row, &kh) in rows.iter().zip(taps) {
            let [w0, w1, w2] = [c.w3[3 * kh], c.w3[3 * kh + 1], c.w3[3 * kh + 2]];
            if SW == 1 {
                // Input vectors at `x0 - 16 + 16 i`: `v[0]` the one before `x0`.
                let mut v = [_mm512_setzero_ps(); 6];
                for (i, x) in v.iter_mut().enumerate().take(N + 2) {
                    *x = load(row, (x0 + 16 * i).wrapping_sub(16));
                }
                for i in 0..N {
                    let (prev, cur, next) = (v[i], v[i + 1], v[i + 2]);
                    acc[i] = _mm512_fmadd_ps(w0, shift(cur, prev, true), acc[i]);
                    acc[i] = _mm512_fmadd_ps(w1, cur, acc[i]);
                    acc[i] = _mm512_fmadd_ps(w2, shift(next, cur, false), acc[i]);
                }
            } else {
                // Lane 15 of `prev_odd` is input column `2 * x0 - 1` (zero where padding).
                let left = (2 * x0).wrapping_sub(1);
                let mut prev_odd = if left < l.iw {
                    // SAFETY: column `left < iw` of the row.
                    _mm512_set1_ps(unsafe { *row.add(left) })
                } else {
                    _mm512_setzero_ps()
                };
                for (i, a) in acc.iter_mut().enumerate() {
                    let col = 2 * (x0 + 16 * i);
                    let (lo_v, hi_v) = (load(row, col), load(row, col + 16));
                    let e = _mm512_permutex2var_ps(lo_v, even, hi_v);
                    let o = _mm512_permutex2var_ps(lo_v, odd, hi_v);
                    *a = _mm512_fmadd_ps(w0, shift(o, prev_odd, true), *a);
                    *a = _mm512_fmadd_ps(w1, e, *a);
                    *a = _mm512_fmadd_ps(w2, o, *a);
                    prev_odd = o;
                }
            }
        }
        // SAFETY: as for `start`.
        unsafe { finish(p, c, row_out, &mask, &acc) };
    }

    /// The start of `N` output vectors of row `y` from column `x0`: where they are in the
    /// plane, their lane masks (the row's last vector masked) and the bias plus fused sum.
    ///
    /// # Safety
    /// AVX-512F is available; `x0 + 16 * (N - 1) < l.ow`, `y < l.oh`, and `p.sum` (if any)
    /// holds the plane's outputs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn start<const N: usize>(
        p: &Plane<'_>,
        l: &Layout,
        c: &Consts,
        y: usize,
        x0: usize,
    ) -> (usize, [__mmask16; N], [__m512; N]) {
        let row_out = y * l.ow + x0;
        let mut mask = [!0 as __mmask16; N];
        mask[N - 1] = first_lanes(l.ow - x0 - 16 * (N - 1));
        let mut acc = [c.bias; N];
        if let Some(sum) = p.sum {
            for i in 0..N {
                // SAFETY: outputs `row_out + 16 i..` masked to the row, inside the plane.
                let s =
                    unsafe { _mm512_maskz_loadu_ps(mask[i], sum.as_ptr().add(row_out + 16 * i)) };
                acc[i] = _mm512_add_ps(acc[i], s);
            }
        }
        (row_out, mask, acc)
    }

    /// Clamps `acc` and stores it at `row_out` with `mask`, as [`start`] gave them.
    ///
    /// # Safety
    /// As [`start`], with its results.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn finish<const N: usize>(
        p: &mut Plane<'_>,
        c: &Consts,
        row_out: usize,
        mask: &[__mmask16; N],
        acc: &[__m512; N],
    ) {
        let o = p.out.as_mut_ptr();
        for i in 0..N {
            // `max(lo, v)`/`min(hi, v)` return `v` when it is NaN, as the Clip kernel.
            let v = _mm512_min_ps(c.hi, _mm512_max_ps(c.lo, acc[i]));
            // SAFETY: outputs `row_out + 16 i..` masked to the row, inside the plane.
            unsafe { _mm512_mask_storeu_ps(o.add(row_out + 16 * i), mask[i], v) };
        }
    }

    /// Input rows fetched ahead of the one being copied into the ring (rows past the plane's
    /// end are the next plane's, which the caller convolves next).
    const PREFETCH_ROWS: usize = 4;

    /// Asks for the cache lines of the `len` values from `at` (a hint: any address is safe).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn prefetch(at: *const f32, len: usize) {
        for i in (0..len).step_by(16) {
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(i) as *const i8);
        }
    }

    /// Copies input row `src` (`l.iw` values) into the slot at `dst`: padded column
    /// `c = ix + l.pl` at `(c % sw) * phase_len + c / sw`.
    ///
    /// # Safety
    /// AVX-512F is available; `src` holds `l.iw` readable values and `dst` one slot of `l`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fill(src: *const f32, dst: *mut f32, l: &Layout) {
        let iw = l.iw;
        if l.sw == 1 {
            let d = dst.wrapping_add(l.pl);
            for i0 in (0..iw).step_by(16) {
                let m = first_lanes(iw - i0);
                // SAFETY: columns `i0..iw` masked; the slot holds `pl + iw` columns.
                unsafe {
                    _mm512_mask_storeu_ps(d.add(i0), m, _mm512_maskz_loadu_ps(m, src.add(i0)))
                };
            }
            return;
        }
        // Stride 2: even input columns land in phase `pl % 2`, odd ones in the other.
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let (e_phase, o_phase) = if l.pl.is_multiple_of(2) {
            (0, 1)
        } else {
            (1, 0)
        };
        let e_dst = dst.wrapping_add(e_phase * l.phase_len + l.pl / 2);
        let o_dst = dst.wrapping_add(o_phase * l.phase_len + l.pl.div_ceil(2));
        for i0 in (0..iw).step_by(32) {
            let left = iw - i0;
            // SAFETY: columns `i0..iw` masked; the even columns `i0 + 2j` land at
            // `(i0 + pl + 2j) / 2` in their phase and the odd ones likewise, inside the
            // phase's `padded_w / 2` columns.
            unsafe {
                let a = _mm512_maskz_loadu_ps(first_lanes(left), src.add(i0));
                let b =
                    _mm512_maskz_loadu_ps(first_lanes(left.saturating_sub(16)), src.add(i0 + 16));
                let (ne, no) = (left.div_ceil(2), left / 2);
                _mm512_mask_storeu_ps(
                    e_dst.add(i0 / 2),
                    first_lanes(ne),
                    _mm512_permutex2var_ps(a, even, b),
                );
                _mm512_mask_storeu_ps(
                    o_dst.add(i0 / 2),
                    first_lanes(no),
                    _mm512_permutex2var_ps(a, odd, b),
                );
            }
        }
    }

    /// The per-plane constants of the vector loops.
    struct Consts {
        bias: __m512,
        lo: __m512,
        hi: __m512,
        /// Where tap `kw` starts in a slot: its column phase, then its offset in the phase.
        tap_at: [usize; MAX_TAPS],
        /// The 3x3 kernel's weights, broadcast (unused for other kernels).
        w3: [__m512; 9],
    }

    /// Output row `y`: its vectors four at a time, then the rest.
    ///
    /// # Safety
    /// As [`plane`]; `rows[kh]` is the slot of window row `kh` (or the zero slot).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn output_row<const KH: usize, const KW: usize>(
        p: &mut Plane<'_>,
        l: &Layout,
        rows: &[*const f32; MAX_TAPS],
        c: &Consts,
        y: usize,
    ) {
        let vectors = l.ow.div_ceil(16);
        let mut v = 0;
        while v + 4 <= vectors {
            // SAFETY: vectors `v..v + 4 <= vectors` of row `y`, as `vectors_at` requires.
            unsafe { vectors_at::<KH, KW, 4>(p, l, rows, c, y, 16 * v) };
            v += 4;
        }
        // SAFETY: the remaining vectors `v..vectors` of row `y`, as above.
        unsafe {
            match vectors - v {
                3 => vectors_at::<KH, KW, 3>(p, l, rows, c, y, 16 * v),
                2 => vectors_at::<KH, KW, 2>(p, l, rows, c, y, 16 * v),
                1 => vectors_at::<KH, KW, 1>(p, l, rows, c, y, 16 * v),
                _ => {}
            }
        }
    }

    /// `N` output vectors of row `y` from column `x0`: bias and sum, every tap, the clamp,
    /// one (masked on the row's last vector) store each.
    ///
    /// # Safety
    /// As [`output_row`]; `x0 + 16 * (N - 1) < l.ow`, `N <= 4`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn vectors_at<const KH: usize, const KW: usize, const N: usize>(
        p: &mut Plane<'_>,
        l: &Layout,
        rows: &[*const f32; MAX_TAPS],
        c: &Consts,
        y: usize,
        x0: usize,
    ) {
        // SAFETY: the callers' contract: vectors `x0..` of row `y` lie in the plane.
        let (row_out, mask, mut acc) = unsafe { start::<N>(p, l, c, y, x0) };
        // SAFETY: the callee's contract is this function's.
        unsafe {
            match (KH, KW, l.sw) {
                (3, 3, 1) => taps3::<N, 1>(&mut acc, l, rows, c, x0),
                (3, 3, _) => taps3::<N, 2>(&mut acc, l, rows, c, x0),
                _ => taps::<KH, KW, N>(&mut acc, p, l, rows, c, x0),
            }
        }
        // SAFETY: as for `start`.
        unsafe { finish(p, c, row_out, &mask, &acc) };
    }

    /// Adds every tap of a `KH x KW` kernel (the layout's when 0) to `acc`, one unaligned
    /// load per tap and vector.
    ///
    /// # Safety
    /// As [`vectors_at`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn taps<const KH: usize, const KW: usize, const N: usize>(
        acc: &mut [__m512; N],
        p: &Plane<'_>,
        l: &Layout,
        rows: &[*const f32; MAX_TAPS],
        c: &Consts,
        x0: usize,
    ) {
        let (kh_n, kw_n) = if KH == 0 { (l.kh_n, l.kw_n) } else { (KH, KW) };
        for kh in 0..kh_n {
            for kw in 0..kw_n {
                // SAFETY: `kh < kh_n`, `kw < kw_n` index the weights and tables; each load
                // of 16 columns from `tap_at[kw] + x0 + 16 i` stays in the slot
                // (`Layout::new` sized the phase for every vector start below `ow`).
                unsafe {
                    let wt = _mm512_set1_ps(*p.w.get_unchecked(kh * kw_n + kw));
                    let src = rows.get_unchecked(kh).add(c.tap_at.get_unchecked(kw) + x0);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(wt, _mm512_loadu_ps(src.add(16 * i)), *a);
                    }
                }
            }
        }
    }

    /// Adds the taps of a 3x3 kernel with width stride `SW` (1 or 2) to `acc` from aligned
    /// loads: the columns one past a vector's start are the vector and the next one shifted
    /// by a lane (`valignd`); with stride 2 the odd phase holds the middle tap's columns.
    ///
    /// # Safety
    /// As [`vectors_at`]; the slots start on 64-byte boundaries and `x0` is a multiple of 16
    /// (so the loads are aligned; unaligned ones would only be slower).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn taps3<const N: usize, const SW: usize>(
        acc: &mut [__m512; N],
        l: &Layout,
        rows: &[*const f32; MAX_TAPS],
        c: &Consts,
        x0: usize,
    ) {
        let shift = |next: __m512, cur: __m512, by2: bool| {
            let (next, cur) = (_mm512_castps_si512(next), _mm512_castps_si512(cur));
            _mm512_castsi512_ps(if by2 {
                _mm512_alignr_epi32::<2>(next, cur)
            } else {
                _mm512_alignr_epi32::<1>(next, cur)
            })
        };
        for (kh, &row) in rows.iter().enumerate().take(3) {
            let r = row.wrapping_add(x0);
            // The even phase's vectors (all columns with stride 1) and the one after them.
            let mut a = [_mm512_setzero_ps(); 5];
            for (i, v) in a.iter_mut().enumerate().take(N + 1) {
                // SAFETY: columns `x0 + 16 i + 15 < ow.next_multiple_of(16) + 16`, inside
                // the phase (`Layout::new`).
                *v = unsafe { _mm512_loadu_ps(r.add(16 * i)) };
            }
            let [w0, w1, w2] = [c.w3[3 * kh], c.w3[3 * kh + 1], c.w3[3 * kh + 2]];
            for i in 0..N {
                let mid = if SW == 1 {
                    shift(a[i + 1], a[i], false)
                } else {
                    // SAFETY: the odd phase's columns, as the even ones'.
                    unsafe { _mm512_loadu_ps(r.add(l.phase_len + 16 * i)) }
                };
                let right = shift(a[i + 1], a[i], SW == 1);
                acc[i] = _mm512_fmadd_ps(w0, a[i], acc[i]);
                acc[i] = _mm512_fmadd_ps(w1, mid, acc[i]);
                acc[i] = _mm512_fmadd_ps(w2, right, acc[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::nn::depthwise::tests::{geo, geometries, input, window};

    /// The naive convolution of one plane.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: f32,
        sum: Option<&[f32]>,
        g: &Geo3,
        clamp: Option<(f32, f32)>,
    ) -> Vec<f32> {
        (0..g.out_size())
            .map(|i| {
                let (y, xo) = (i / g.output[2], i % g.output[2]);
                let acc: f32 = window(x, g, y, xo).iter().map(|&(t, v)| w[t] * v).sum();
                let v = acc + bias + sum.map_or(0.0, |s| s[i]);
                clamp.map_or(v, |(lo, hi)| v.max(lo).min(hi))
            })
            .collect()
    }

    #[test]
    fn row_depthwise_matches_a_naive_reference() {
        if !crate::kernels::simd::has_avx512() {
            return;
        }
        let mut cases = geometries();
        cases.extend([
            geo([112, 112], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
            geo([7, 7], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
            geo([14, 14], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
            geo([28, 28], [5, 5], [1, 1], [2, 1], [4, 2, 4, 2], false),
            geo([15, 35], [3, 4], [1, 2], [1, 1], [0, 3, 1, 2], true),
            geo([5, 5], [1, 1], [2, 2], [1, 1], [0, 0, 0, 0], false),
            geo([9, 33], [3, 3], [2, 2], [1, 1], [0, 0, 2, 2], true),
        ]);
        // Four planes over three channels from channel 1: the channels wrap (batch items).
        let (planes_n, channels, first) = (4, 3, 1);
        let mut ran = 0;
        for (gi, g) in cases.iter().enumerate() {
            if !applies(g) {
                continue;
            }
            ran += 1;
            let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
            let x = input(isz * planes_n, gi);
            let w = input(ksz * channels, gi + 100);
            let bias = input(channels, gi + 300);
            let s = input(osz * planes_n, gi + 200);
            for (clamp, sum) in [(None, None), (Some((0.0, 6.0)), Some(s.as_slice()))] {
                // Twice: the second call reuses the ring's padding.
                for _ in 0..2 {
                    let mut out = vec![f32::NAN; osz * planes_n];
                    let p = Planes {
                        x: &x,
                        w: &w,
                        bias: Some(&bias),
                        sum,
                        out: &mut out,
                        first_channel: first,
                        channels,
                    };
                    assert!(planes(p, g, clamp));
                    for j in 0..planes_n {
                        let c = (first + j) % channels;
                        let want = reference(
                            &x[j * isz..][..isz],
                            &w[c * ksz..][..ksz],
                            bias[c],
                            sum.map(|s| &s[j * osz..][..osz]),
                            g,
                            clamp,
                        );
                        for (i, (&got, &want)) in
                            out[j * osz..][..osz].iter().zip(&want).enumerate()
                        {
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "geometry {gi} clamp {clamp:?} plane {j} output {i}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        assert!(ran >= 10, "{ran} geometries ran");
    }

    #[test]
    fn other_geometries_and_mismatched_slices_are_declined() {
        let dilated = geo([20, 20], [3, 3], [1, 1], [1, 2], [1, 2, 1, 2], false);
        let stride3 = geo([20, 20], [3, 3], [3, 3], [1, 1], [1, 1, 1, 1], false);
        assert!(!applies(&dilated) && !applies(&stride3));
        let g = geo([8, 8], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false);
        let (x, w) = (input(63, 0), input(9, 1));
        let mut out = vec![1.0; 64];
        let p = Planes {
            x: &x,
            w: &w,
            bias: None,
            sum: None,
            out: &mut out,
            first_channel: 0,
            channels: 1,
        };
        assert!(!planes(p, &g, None));
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
