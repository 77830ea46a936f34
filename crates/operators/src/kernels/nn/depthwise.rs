//! Direct depthwise convolution (one input channel per group), one plane at a time.
//!
//! A 2-D plane is first copied zero-padded on every side (and split by column phase for a
//! width stride above 1) so every tap reads in range and contiguous memory. Blocks of outputs
//! then sum all their taps in registers and are stored once: with AVX-512 and f32 by a
//! hand-written kernel that also applies a fused clamp (Relu, Clip) in its store, otherwise by
//! fixed-size blocks the compiler vectorizes. 3-D planes and very wide kernels go tap by tap
//! along output rows. (f32 depthwise convolutions with one output per input channel, and
//! pools with small outputs, run 16 channels at a time in [`super::depthwise_blocked`]
//! where AVX-512 is present.)
//!
//! [`pad_planes`] also lays out the padded input that 2-D convolutions read as shifted
//! windows, there split by row phase as well.

use super::{deinterleave2, for_each_tap_row, Geo3};
use crate::ctx::EvalCtx;
use crate::kernels::linalg::Float;
use crate::kernels::simd;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

/// Kernel taps per axis the register-blocked path handles.
const MAX_TAPS: usize = 16;

/// Columns of slack after each padded phase row, so a block that starts inside the output row
/// may read a full vector (the columns past the output are computed and dropped).
const SLACK: usize = 16;

/// Working memory of [`plane`], kept across the planes of one
/// operator: the padded copy of the current plane, whose padding is filled only when the
/// layout changes (each plane overwrites the same interior).
#[derive(Debug)]
pub(crate) struct Scratch<F> {
    data: Vec<F>,
    /// The layout whose padding `data` holds.
    filled_for: Option<Layout>,
}

impl<F> Default for Scratch<F> {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            filled_for: None,
        }
    }
}

impl<F: 'static> Scratch<F> {
    /// Runs `f` with this thread's scratch for element type `F`, kept across operators and
    /// runs so steady-state runs allocate nothing. A nested call (none happens today) gets a
    /// fresh scratch rather than a borrow error.
    pub(crate) fn with_thread_local<R>(f: impl FnOnce(&mut Scratch<F>) -> R) -> R {
        let key = TypeId::of::<F>();
        let taken = THREAD_SCRATCH
            .try_with(|cell| cell.borrow_mut().remove(&key))
            .ok()
            .flatten()
            .and_then(|boxed| boxed.downcast::<Scratch<F>>().ok());
        let mut scratch = taken.unwrap_or_default();
        let result = f(&mut scratch);
        let _ = THREAD_SCRATCH.try_with(|cell| cell.borrow_mut().insert(key, scratch));
        result
    }
}

thread_local! {
    /// Each thread's [`Scratch`], one per element type (boxed: the map is keyed by type).
    static THREAD_SCRATCH: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

impl<F> Scratch<F> {
    /// The padded planes [`pad_planes`] wrote last.
    pub(crate) fn padded(&self) -> &[F] {
        &self.data
    }

    /// The buffer for other uses (its padding is forgotten).
    pub(crate) fn vec(&mut self) -> &mut Vec<F> {
        self.filled_for = None;
        &mut self.data
    }
}

/// A padded plane's layout: padded height and row length, top and left padding, input
/// height and width, width stride, number of planes, and whether the padding is zero (else
/// -inf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    padded_h: usize,
    row_len: usize,
    row_phases: usize,
    col_phase_len: usize,
    pt: usize,
    pl: usize,
    ih: usize,
    iw: usize,
    sw: usize,
    planes: usize,
    fill_is_zero: bool,
}

/// Accumulates `w[tap] * input` over one plane into `out`, which holds the bias or fused sum:
/// the register-blocked path of the module docs for 2-D planes, tap rows otherwise. Returns
/// whether `clamp` (`(lo, hi)`, from a fused Relu or Clip) was applied too (only the AVX-512
/// kernel does); when it was not, the caller applies its activation afterwards.
#[inline(always)]
pub(super) fn plane<F: Float>(
    x: &[F],
    w: &[F],
    g: &Geo3,
    scratch: &mut Scratch<F>,
    out: &mut [F],
    clamp: Option<(f32, f32)>,
) -> bool {
    if !is_paddable(g) {
        plane_rows(x, w, g, scratch.vec(), out);
        return false;
    }
    // No output, or every tap reads padding: the output keeps its initial values.
    let Some(taps) = pad(x, g, scratch, F::ZERO) else {
        return false;
    };
    #[cfg(target_arch = "x86_64")]
    if let (Some(data), Some(wf), Some(of)) = (
        F::as_f32s(&scratch.data),
        F::as_f32s(w),
        F::as_f32s_mut(out),
    ) {
        if avx512::plane(&taps.over(data), wf, g, of, clamp) {
            return clamp.is_some();
        }
        // Not taken: `out` is untouched.
    }
    blocks(&taps.over(&scratch.data), w, g, out);
    false
}

/// A plane copied padded: rows `row_len` apart, each split into `sw` phase rows, and where
/// each width tap starts in a row.
struct Padded<'a, F> {
    data: &'a [F],
    row_len: usize,
    col_start: &'a [usize],
}

/// Where each width tap starts in a padded row of [`pad`]'s layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TapStarts {
    /// Distance between padded rows.
    pub(crate) row_len: usize,
    /// Distance between padded planes ([`pad_planes`]).
    pub(crate) plane_len: usize,
    /// Where width tap `kw` starts in a padded row (its phase row and offset in it).
    pub(crate) col_start: [usize; MAX_TAPS],
    /// Width taps.
    pub(crate) kw_n: usize,
    /// Row phases: 1, or the height stride when rows are split by phase too (padded row
    /// `r` is then row `r / row_phases` of phase `r % row_phases`, and each column phase
    /// is a sub-plane of its own, so consecutive rows of one phase are `row_len` apart).
    pub(crate) row_phases: usize,
    /// Distance between row phases (the plane's length when there is one).
    pub(crate) row_phase_len: usize,
    /// Distance between column phases: within a row, or whole sub-planes when rows are split.
    pub(crate) col_phase_len: usize,
}

impl TapStarts {
    /// Where padded row `r` starts in a plane.
    pub(crate) fn row_start(&self, r: usize) -> usize {
        match self.row_phases {
            // No division: this runs per row of every padded plane.
            1 => r * self.row_len,
            n => (r % n) * self.row_phase_len + (r / n) * self.row_len,
        }
    }

    /// The distance between the rows that consecutive output rows read (height stride `sh`).
    pub(crate) fn output_row_step(&self, sh: usize) -> usize {
        match self.row_phases {
            1 => sh * self.row_len,
            _ => self.row_len,
        }
    }

    /// The padded plane `data` (of [`pad`]'s layout) seen through these tap starts.
    fn over<'a, T>(&'a self, data: &'a [T]) -> Padded<'a, T> {
        Padded {
            data,
            row_len: self.row_len,
            col_start: &self.col_start[..self.kw_n],
        }
    }
}

/// Copies a 2-D plane (at most [`MAX_TAPS`] taps per axis) into `scratch`, padded with
/// `fill` on every side and split by column phase; `None` when the plane is empty.
#[inline(always)]
fn pad<F: Float>(x: &[F], g: &Geo3, scratch: &mut Scratch<F>, fill: F) -> Option<TapStarts> {
    pad_planes(&EvalCtx::default(), x, g, 1, SLACK, false, scratch, fill)
}

/// Copies `planes` consecutive 2-D planes of `x` (each `g.in_size()` values, at most
/// [`MAX_TAPS`] taps per axis, see [`is_paddable`]) into `scratch`, each padded with `fill`
/// on every side and every row split into `g.strides[2]` phase rows of the padded width's
/// share plus `slack` columns: padded column `c` of a row lands in phase `c % sw` at `c / sw`.
/// Planes are `plane_len` apart, rows `row_len`. With `split_rows`, padded rows are split by
/// height phase as well ([`TapStarts::row_start`]), so the rows one tap reads for
/// consecutive output rows are `row_len` apart. Large copies are split by planes over
/// `ctx`'s threads. `None` when the planes are empty.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pad_planes<F: Float>(
    ctx: &EvalCtx<'_>,
    x: &[F],
    g: &Geo3,
    planes: usize,
    slack: usize,
    split_rows: bool,
    scratch: &mut Scratch<F>,
    fill: F,
) -> Option<TapStarts> {
    let [_, ih, iw] = g.input;
    let [_, pt, pl] = g.pad_begin;
    let sw = g.strides[2];
    if planes == 0 {
        return None;
    }
    let taps = tap_starts(g, slack, split_rows)?;
    let (row_len, plane_len, col_phase_len) = (taps.row_len, taps.plane_len, taps.col_phase_len);
    let layout = Layout {
        padded_h: plane_len / row_len,
        row_len,
        row_phases: taps.row_phases,
        col_phase_len,
        pt,
        pl,
        ih,
        iw,
        sw,
        planes,
        fill_is_zero: fill == F::ZERO,
    };
    if scratch.filled_for != Some(layout) {
        scratch.data.clear();
        scratch.data.resize(planes * plane_len, fill);
        scratch.filled_for = Some(layout);
    }
    let dst = &mut scratch.data[..planes * plane_len];
    by_plane_ranges(ctx, x, ih * iw, dst, plane_len, |src, dst| {
        simd::wide(
            #[inline(always)]
            || copy_interiors(src, dst, g, &taps, split_rows),
        );
    });
    Some(taps)
}

/// Calls `copy(src_planes, dst_planes)` over the planes of `dst` (`dst_plane` values each)
/// and the matching planes of `src` (`src_plane` values each): once, or for inputs of at
/// least [`PAR_PAD_MIN`] values in plane ranges over `ctx`'s threads.
pub(crate) fn by_plane_ranges<T: Send + Sync>(
    ctx: &EvalCtx<'_>,
    src: &[T],
    src_plane: usize,
    dst: &mut [T],
    dst_plane: usize,
    copy: impl Fn(&[T], &mut [T]) + Sync,
) {
    let planes = dst.len() / dst_plane.max(1);
    let threads = ctx.threads();
    if threads == 1 || planes < 2 * threads || planes * src_plane < PAR_PAD_MIN {
        copy(src, dst);
        return;
    }
    let per_task = planes.div_ceil(threads);
    ctx.par_chunks_mut(dst, per_task * dst_plane, |i, dst| {
        copy(src.get(i * per_task * src_plane..).unwrap_or_default(), dst);
    });
}

/// Copies the interiors of consecutive planes of `g`'s input (as many as both `src` and
/// `dst` hold) into [`pad_planes`]'s layout `taps`.
#[inline(always)]
fn copy_interiors<F: Float>(
    src: &[F],
    dst: &mut [F],
    g: &Geo3,
    taps: &TapStarts,
    split_rows: bool,
) {
    let [_, ih, iw] = g.input;
    let [_, pt, pl] = g.pad_begin;
    let sw = g.strides[2];
    let col_phase_len = taps.col_phase_len;
    // A padded row's phases: one after the other, or one per sub-plane when rows are split.
    let phase_len = taps.row_len / if split_rows { 1 } else { sw };
    let row_span = (sw - 1) * col_phase_len + phase_len;
    for (src_plane, dst_plane) in src
        .chunks_exact(ih * iw)
        .zip(dst.chunks_exact_mut(taps.plane_len))
    {
        for (iy, src) in src_plane.chunks_exact(iw).enumerate() {
            // The row's phase 0 and the others, `col_phase_len` apart.
            let dst = &mut dst_plane[taps.row_start(iy + pt)..][..row_span];
            if sw == 1 {
                dst[pl..pl + iw].copy_from_slice(src);
            } else if sw == 2 {
                // Input column `ix` is padded column `ix + pl`: even `ix` land in phase
                // `pl % 2` from `pl / 2`, odd ones in the other phase from `(pl + 1) / 2`.
                let (p0, p1) = dst.split_at_mut(col_phase_len);
                let (a, b) = if pl % 2 == 0 { (p0, p1) } else { (p1, p0) };
                deinterleave2(src, &mut a[pl / 2..], &mut b[pl.div_ceil(2)..]);
            } else {
                let (mut phase, mut at) = (pl % sw, pl / sw);
                for &v in src {
                    dst[phase * col_phase_len + at] = v;
                    phase += 1;
                    if phase == sw {
                        phase = 0;
                        at += 1;
                    }
                }
            }
        }
    }
}

/// Input values from which [`by_plane_ranges`] copies on several threads (a 128-channel
/// 56x56 stride-2 input, ~400K values, took ~0.1 ms on one).
const PAR_PAD_MIN: usize = 64 * 1024;

/// The layout [`pad_planes`] gives a padded plane of `g`'s input with `slack` extra columns
/// per phase row (rows split by height phase with `split_rows`), and where each width tap
/// starts in a row; `None` when the plane is empty or not paddable. (Called per plane: no
/// divisions for stride 1.)
#[inline]
pub(crate) fn tap_starts(g: &Geo3, slack: usize, split_rows: bool) -> Option<TapStarts> {
    let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
    let ([_, kh_n, kw_n], [_, _, sw]) = (g.kernel, g.strides);
    let ([_, _, dw], [_, pt, pl]) = (g.dilations, g.pad_begin);
    if oh == 0 || ow == 0 || ih == 0 || iw == 0 || !is_paddable(g) {
        return None;
    }
    // The padded plane covers every input and every position a tap reads.
    let padded_w = ((ow - 1) * sw + (kw_n - 1) * dw + 1).max(pl + iw);
    let padded_h = ((oh - 1) * g.strides[1] + (kh_n - 1) * g.dilations[1] + 1).max(pt + ih);
    let phase_len = match sw {
        1 => padded_w + slack,
        _ => padded_w.div_ceil(sw) + slack,
    };
    // Split: every (column phase, row phase) its own sub-plane of `phase_len`-long rows;
    // else rows of all column phases side by side.
    let (row_len, row_phases) = match split_rows {
        true => (phase_len, g.strides[1]),
        false => (sw * phase_len, 1),
    };
    let row_phase_len = match row_phases {
        1 => padded_h * row_len,
        n => padded_h.div_ceil(n) * row_len,
    };
    let col_phase_len = match split_rows {
        true => row_phases * row_phase_len,
        false => phase_len,
    };
    let mut col_start = [0usize; MAX_TAPS];
    for (kw, c) in col_start.iter_mut().enumerate().take(kw_n) {
        let off = kw * dw;
        *c = match sw {
            1 => off,
            _ => (off % sw) * col_phase_len + off / sw,
        };
    }
    Some(TapStarts {
        row_len,
        plane_len: if split_rows {
            sw * col_phase_len
        } else {
            row_phase_len
        },
        col_start,
        kw_n,
        row_phases,
        row_phase_len,
        col_phase_len,
    })
}

/// Whether [`pad`] handles the plane's geometry.
pub(crate) fn is_paddable(g: &Geo3) -> bool {
    // One depth slice in and out (a depth axis of 1 with depth padding has several outputs).
    g.input[0] == 1
        && g.kernel[0] == 1
        && g.output[0] == 1
        && g.kernel[1] <= MAX_TAPS
        && g.kernel[2] <= MAX_TAPS
}

/// The portable register-blocked loop: blocks of 64, then 16, outputs along each row.
#[inline(always)]
fn blocks<F: Float>(p: &Padded<'_, F>, w: &[F], g: &Geo3, out: &mut [F]) {
    let [_, _, ow] = g.output;
    let ([_, kh_n, _], [_, sh, _], [_, dh, _]) = (g.kernel, g.strides, g.dilations);
    for (y, orow) in out.chunks_exact_mut(ow).enumerate() {
        let rows = |kh: usize| &p.data[(y * sh + kh * dh) * p.row_len..][..p.row_len];
        let mut x0 = 0;
        while x0 + 64 <= ow {
            taps_block::<F, 64>(&mut orow[x0..x0 + 64], x0, kh_n, &rows, p.col_start, w);
            x0 += 64;
        }
        while x0 < ow {
            let n = SLACK.min(ow - x0);
            taps_block::<F, SLACK>(&mut orow[x0..x0 + n], x0, kh_n, &rows, p.col_start, w);
            x0 += n;
        }
    }
}

/// The outputs `out` (at most `L`) starting at column `x0`: the initial values plus every
/// tap, summed in a fixed-size block of `L` the compiler keeps in registers, stored once.
/// Rows must hold `L` readable columns past every tap's start for the block.
#[inline(always)]
fn taps_block<'a, F: Float + 'a, const L: usize>(
    out: &mut [F],
    x0: usize,
    kh_n: usize,
    rows: &impl Fn(usize) -> &'a [F],
    col_start: &[usize],
    w: &[F],
) {
    // The taps are summed from zero and added to the outputs at the end: copying a
    // variable number of initial values in would pin `acc` to memory.
    let mut acc = [F::ZERO; L];
    let kw_n = col_start.len();
    for kh in 0..kh_n {
        let row = rows(kh);
        for (kw, &c) in col_start.iter().enumerate() {
            let wt = w[kh * kw_n + kw];
            let Ok(src) = <&[F; L]>::try_from(&row[c + x0..c + x0 + L]) else {
                continue;
            };
            for i in 0..L {
                acc[i] += wt * src[i];
            }
        }
    }
    match <&mut [F; L]>::try_from(&mut *out) {
        Ok(full) => {
            for i in 0..L {
                full[i] += acc[i];
            }
        }
        Err(_) => {
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o += a;
            }
        }
    }
}

/// Depthwise convolution tap by tap along output rows (3-D planes, very wide kernels).
#[inline(always)]
fn plane_rows<F: Float>(x: &[F], w: &[F], g: &Geo3, scratch: &mut Vec<F>, out: &mut [F]) {
    for_each_tap_row(x, g, scratch, out, |t, dst, src| {
        let wt = w[t];
        for (o, &v) in dst.iter_mut().zip(src) {
            *o += wt * v;
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The f32 AVX-512 block loop: 16 outputs per vector, every tap one FMA from the padded
    //! plane, the initial values loaded and the clamp applied with the row's edge masked.

    use super::Padded;
    use crate::kernels::nn::Geo3;
    use crate::kernels::simd;
    use std::arch::x86_64::*;

    /// Runs the plane when the CPU has AVX-512F and the padded plane holds every vector the
    /// blocks read; returns whether it ran (if not, `out` is untouched): a depthwise
    /// convolution onto `out`'s values.
    pub(super) fn plane(
        p: &Padded<'_, f32>,
        w: &[f32],
        g: &Geo3,
        out: &mut [f32],
        clamp: Option<(f32, f32)>,
    ) -> bool {
        let ([_, oh, ow], [_, kh_n, kw_n]) = (g.output, g.kernel);
        let ([_, sh, _], [_, dh, _]) = (g.strides, g.dilations);
        let last_row = (oh - 1) * sh + (kh_n - 1) * dh;
        let widest = p.col_start.iter().copied().max().unwrap_or(0) + ow.next_multiple_of(16);
        let fits = last_row * p.row_len + widest <= p.data.len()
            && w.len() >= kh_n * kw_n
            && out.len() == oh * ow
            && p.col_start.len() == kw_n;
        if !fits || !simd::has_avx512() {
            return false;
        }
        let geo = Rows { ow, sh, dh, kh_n };
        // SAFETY: the CPU has AVX-512F (checked above), and `fits` is the contract of `rows`:
        // every vector read at row `y * sh + kh * dh` (the last one at `last_row`) and column
        // `c + x0` (`c` a tap start, `x0 < ow` a multiple of 16) ends inside `p.data`.
        unsafe {
            match (kh_n, kw_n) {
                (3, 3) => rows::<3, 3>(p, w, &geo, out, clamp),
                (5, 5) => rows::<5, 5>(p, w, &geo, out, clamp),
                _ => rows::<0, 0>(p, w, &geo, out, clamp),
            }
        }
        true
    }

    /// The output plane's size and the vertical walk over the padded rows.
    struct Rows {
        ow: usize,
        sh: usize,
        dh: usize,
        kh_n: usize,
    }

    /// Vectors summed side by side: independent FMA chains hide the FMA latency.
    const CHAINS: usize = 4;

    /// `KH x KW` taps known at compile time (0: read them from `g.kh_n` and `p.col_start`):
    /// `out` plus the weighted taps.
    /// The plane's vectors (16 outputs of a row, the last one masked) are taken `CHAINS` at a
    /// time in row-major order, so narrow planes still fill every chain.
    ///
    /// # Safety
    /// AVX-512F is available; `out` holds whole rows of `g.ow`; `w` holds `kh_n * kw_n`
    /// weights; for every output row `y`, tap row `kh` and tap start `c` in `p.col_start`,
    /// the 16 floats at `(y * g.sh + kh * g.dh) * p.row_len + c + x0` are inside `p.data`
    /// for every `x0 < g.ow` that is a multiple of 16.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const KH: usize, const KW: usize>(
        p: &Padded<'_, f32>,
        w: &[f32],
        g: &Rows,
        out: &mut [f32],
        clamp: Option<(f32, f32)>,
    ) {
        let (kh_n, kw_n) = if KH == 0 {
            (g.kh_n, p.col_start.len())
        } else {
            (KH, KW)
        };
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let data = p.data.as_ptr();
        let oh = out.len() / g.ow;
        let o = out.as_mut_ptr();
        // The next vector: output row `y`, first column `x0`.
        let (mut y, mut x0) = (0, 0);
        while y < oh {
            // Per chain: where its taps start in `p.data`, its outputs, and its lane mask
            // (0 for chains past the plane's end, which then repeat chain 0's addresses).
            let mut src = [0usize; CHAINS];
            let mut dst = [0usize; CHAINS];
            let mut mask = [0 as __mmask16; CHAINS];
            for i in 0..CHAINS {
                if y >= oh {
                    (src[i], dst[i]) = (src[0], dst[0]);
                    continue;
                }
                let left = g.ow - x0;
                mask[i] = if left >= 16 {
                    !0
                } else {
                    ((1u32 << left) - 1) as __mmask16
                };
                (src[i], dst[i]) = (y * g.sh * p.row_len + x0, y * g.ow + x0);
                x0 += 16;
                if x0 >= g.ow {
                    (y, x0) = (y + 1, 0);
                }
            }
            let mut acc = [_mm512_setzero_ps(); CHAINS];
            for i in 0..CHAINS {
                // SAFETY: `dst[i]` is the start of a vector of a row inside `out` whose mask
                // enables only the row's lanes (or none).
                acc[i] = unsafe { _mm512_maskz_loadu_ps(mask[i], o.add(dst[i])) };
            }
            for kh in 0..kh_n {
                let row = kh * g.dh * p.row_len;
                for kw in 0..kw_n {
                    // SAFETY: `kh < kh_n`, `kw < kw_n`: inside `w` and `p.col_start`; each
                    // vector at `src[i] + row + col_start[kw]` is inside `p.data` (the
                    // function's contract: `src[i]` is a row `y < oh` and column `x0 < ow`).
                    unsafe {
                        let at = row + *p.col_start.get_unchecked(kw);
                        let wt = _mm512_set1_ps(*w.get_unchecked(kh * kw_n + kw));
                        for i in 0..CHAINS {
                            let v = _mm512_loadu_ps(data.add(src[i] + at));
                            acc[i] = _mm512_fmadd_ps(wt, v, acc[i]);
                        }
                    }
                }
            }
            for i in 0..CHAINS {
                // `max(lo, v)`/`min(hi, v)` return `v` when it is NaN, as the Clip kernel.
                let v = _mm512_min_ps(hi, _mm512_max_ps(lo, acc[i]));
                // SAFETY: as for the load above.
                unsafe { _mm512_mask_storeu_ps(o.add(dst[i]), mask[i], v) };
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kernels::simd;

    /// A 2-D geometry: input `h x w`, kernel `k`, stride `s`, dilation `d`, padding
    /// (top, left, bottom, right); the output size as with ceil mode when `ceil`.
    pub(crate) fn geo(
        [h, w]: [usize; 2],
        [kh, kw]: [usize; 2],
        [sh, sw]: [usize; 2],
        [dh, dw]: [usize; 2],
        [pt, pl, pb, pr]: [usize; 4],
        ceil: bool,
    ) -> Geo3 {
        let out = |n: usize, k: usize, s: usize, d: usize, p: usize| {
            let span = n + p - (k - 1) * d - 1;
            if ceil {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            }
        };
        Geo3 {
            input: [1, h, w],
            kernel: [1, kh, kw],
            strides: [1, sh, sw],
            dilations: [1, dh, dw],
            pad_begin: [0, pt, pl],
            pad_end: [0, pb, pr],
            output: [1, out(h, kh, sh, dh, pt + pb), out(w, kw, sw, dw, pl + pr)],
        }
    }

    /// Every tap of output `(y, x)` that reads inside the input, as (tap index, input value).
    pub(crate) fn window(x: &[f32], g: &Geo3, y: usize, xo: usize) -> Vec<(usize, f32)> {
        let mut taps = Vec::new();
        for kh in 0..g.kernel[1] {
            for kw in 0..g.kernel[2] {
                let iy = (y * g.strides[1] + kh * g.dilations[1]).wrapping_sub(g.pad_begin[1]);
                let ix = (xo * g.strides[2] + kw * g.dilations[2]).wrapping_sub(g.pad_begin[2]);
                if iy < g.input[1] && ix < g.input[2] {
                    taps.push((kh * g.kernel[2] + kw, x[iy * g.input[2] + ix]));
                }
            }
        }
        taps
    }

    pub(crate) fn geometries() -> Vec<Geo3> {
        vec![
            geo([12, 12], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
            geo([56, 56], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
            geo([17, 40], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
            geo([109, 109], [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true),
            geo([14, 33], [5, 5], [2, 2], [1, 1], [2, 2, 2, 2], false),
            geo([7, 7], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
            geo([20, 31], [3, 2], [3, 3], [2, 1], [0, 1, 2, 0], true),
            geo([9, 70], [1, 7], [1, 1], [1, 2], [0, 6, 0, 6], false),
        ]
    }

    /// Deterministic test values in [-2, 2].
    pub(crate) fn input(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 500.0)
            .collect()
    }

    #[test]
    fn planes_padded_on_several_threads_match_one_thread() {
        let threads = EvalCtx {
            parallel: &crate::ctx::ThreeThreads,
            ..Default::default()
        };
        let serial = EvalCtx::default();
        // Enough values to split (13 planes over 3 threads: 5, 5 and 3); strides 1, 2 and 3.
        for g in [
            geo([80, 80], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
            geo([80, 81], [3, 3], [2, 2], [1, 1], [1, 0, 1, 1], false),
            geo([81, 80], [3, 2], [3, 3], [2, 1], [0, 1, 2, 0], true),
        ] {
            let planes = 13;
            assert!(planes * g.in_size() >= PAR_PAD_MIN);
            let x = input(planes * g.in_size(), 5);
            for split_rows in [false, true] {
                let (mut one, mut three) = (Scratch::default(), Scratch::default());
                let a = pad_planes(&serial, &x, &g, planes, 0, split_rows, &mut one, 0.0);
                let b = pad_planes(&threads, &x, &g, planes, 0, split_rows, &mut three, 0.0);
                assert!(a.is_some() && a == b, "{g:?}");
                assert_eq!(one.padded(), three.padded(), "{g:?}");
                // The padded copy holds every input value.
                let (sum_in, sum_out): (f64, f64) = (
                    x.iter().map(|&v| f64::from(v)).sum(),
                    three.padded().iter().map(|&v| f64::from(v)).sum(),
                );
                assert!((sum_in - sum_out).abs() < 1e-6 * x.len() as f64, "{g:?}");
            }
        }
    }

    #[test]
    fn depthwise_planes_match_a_naive_reference() {
        for (gi, g) in geometries().iter().enumerate() {
            let x = input(g.in_size(), gi);
            let w = input(g.kernel_size(), gi + 100);
            for clamp in [None, Some((0.0, 6.0))] {
                let bias = 0.25;
                let mut out = vec![bias; g.out_size()];
                let mut scratch = Scratch::default();
                // Twice through one scratch: the second plane reuses the padding.
                for _ in 0..2 {
                    out.fill(bias);
                    let clamped = simd::wide(|| plane(&x, &w, g, &mut scratch, &mut out, clamp));
                    if let (false, Some((lo, hi))) = (clamped, clamp) {
                        out.iter_mut().for_each(|v| *v = v.max(lo).min(hi));
                    }
                    for (i, &got) in out.iter().enumerate() {
                        let (y, xo) = (i / g.output[2], i % g.output[2]);
                        let sum: f32 = window(&x, g, y, xo).iter().map(|&(t, v)| w[t] * v).sum();
                        let want =
                            clamp.map_or(sum + bias, |(lo, hi)| (sum + bias).max(lo).min(hi));
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "geometry {gi} clamp {clamp:?} output {i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_padded_depth_of_one_is_not_taken_for_a_plane() {
        let mut g = geo([6, 6], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false);
        (g.pad_begin[0], g.pad_end[0], g.output[0]) = (1, 1, 3);
        assert!(!is_paddable(&g));
        let x = input(g.in_size(), 1);
        let w = input(g.kernel_size(), 2);
        let mut out = vec![0.0; g.out_size()];
        // Through the tap-row path: the middle depth slice is the 2-D convolution.
        assert!(!plane(&x, &w, &g, &mut Scratch::default(), &mut out, None));
        let mid = &out[36..72];
        for (i, &got) in mid.iter().enumerate() {
            let want: f32 = window(&x, &g, i / 6, i % 6)
                .iter()
                .map(|&(t, v)| w[t] * v)
                .sum();
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "output {i}"
            );
        }
        assert!(out[..36].iter().chain(&out[72..]).all(|&v| v == 0.0));
    }
}
