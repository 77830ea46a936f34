//! Depthwise 2-D f32 convolution 16 channels at a time, in a channel-interleaved layout.
//!
//! ONNX Runtime runs depthwise convolutions in its blocked NCHWc layout, where one vector
//! holds 16 channels of one pixel: every tap of every output is then one full-width FMA,
//! whatever the plane's size. This module gets the same inner loop for NCHW tensors by
//! transposing: a block of 16 input planes is copied, 16x16 register transposes at a time,
//! into a zero-padded scratch of `[row][column][16 channels]`; the outputs are computed
//! there (bias, then every tap) and transposed back into the 16 output planes, where the
//! fused sum and clamp (Relu, Clip) are applied on the way out.
//!
//! Max pooling ([`run_max`]) takes the same path with the maximum for the weighted sum and
//! -inf for padding.
//!
//! The transposes cost about as much as the taps, so this pays most where the plane-at-a-time
//! kernel of [`super::depthwise`] wastes lanes and per-plane overhead: small planes (MobileNet's
//! 28x28 and down, Inception's 13x13 and 7x7) and strided windows. Only AVX-512F; [`run`] and
//! [`run_max`] report when they did not apply and the caller keeps its plane-at-a-time path.

use super::Geo3;
use crate::EvalCtx;

/// Channels per block (one AVX-512 vector of f32).
pub(super) const BLOCK: usize = 16;

/// One block's operands: `channels` (<= [`BLOCK`]) planes of input, weights, bias, fused sum
/// and output, each plane (or weight set) contiguous.
pub(super) struct Block<'a> {
    /// `channels` input planes of `g.in_size()` values.
    pub x: &'a [f32],
    /// `channels` kernels of `g.kernel_size()` weights.
    pub w: &'a [f32],
    /// One value per channel.
    pub bias: Option<&'a [f32]>,
    /// `channels` planes of `g.out_size()` values added before the clamp.
    pub sum: Option<&'a [f32]>,
    /// `channels` output planes of `g.out_size()` values, overwritten.
    pub out: &'a mut [f32],
    pub channels: usize,
}

/// Working memory of [`run`]: the padded, transposed input, the transposed output and the
/// transposed weights. Kept per thread by the caller; the padding stays zero across blocks
/// of one geometry, so it is cleared only when the geometry changes.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    data: Vec<f32>,
    /// The geometry and padding value whose padding `data` holds.
    cleared_for: Option<(Geo3, bool)>,
}

thread_local! {
    /// Each thread's [`Scratch`], kept across operators and runs so steady-state runs
    /// allocate nothing.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a nested call gets a fresh one).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH.try_with(|cell| cell.take()).unwrap_or_default();
    let result = f(&mut scratch);
    let _ = SCRATCH.try_with(|cell| cell.replace(scratch));
    result
}

/// The padded input's height and width in pixels for `g`.
fn padded_dims(g: &Geo3) -> (usize, usize) {
    let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
    let ([_, kh, kw], [_, sh, sw], [_, dh, dw]) = (g.kernel, g.strides, g.dilations);
    let [_, pt, pl] = g.pad_begin;
    let ph = ((oh - 1) * sh + (kh - 1) * dh + 1).max(pt + ih);
    let pw = ((ow - 1) * sw + (kw - 1) * dw + 1).max(pl + iw);
    (ph, pw)
}

/// Whether [`run`] handles `g`: a 2-D plane (depth 1 in and out, no depth taps) with some
/// output, on a CPU with AVX-512.
pub(super) fn applies(g: &Geo3) -> bool {
    g.input[0] == 1
        && g.output[0] == 1
        && g.kernel[0] == 1
        && g.out_size() > 0
        && g.in_size() > 0
        && g.kernel_size() > 0
        && crate::kernels::simd::has_avx512()
}

/// Runs one block: `out = clamp(conv(x, w) + bias + sum)` per channel. Returns false, with
/// `out` untouched, when the block does not apply (see [`applies`]) or its slices are too
/// short for `g`.
pub(super) fn run(
    block: Block<'_>,
    g: &Geo3,
    clamp: Option<(f32, f32)>,
    scratch: &mut Scratch,
) -> bool {
    run_reduce::<false>(block, g, clamp, scratch)
}

/// Max pooling of `channels` (<= [`BLOCK`]) planes of `x` into `out`: every window's
/// maximum, padding read as -inf and NaN inputs skipped (as the plane-at-a-time max
/// pooling). Returns false, with `out` untouched, where it does not apply (see [`applies`])
/// or the slices are too short for `g`.
pub(super) fn run_max(
    x: &[f32],
    out: &mut [f32],
    channels: usize,
    g: &Geo3,
    scratch: &mut Scratch,
) -> bool {
    let block = Block {
        x,
        w: &[],
        bias: None,
        sum: None,
        out,
        channels,
    };
    run_reduce::<true>(block, g, None, scratch)
}

/// [`run`], or with `MAX` [`run_max`] (the block's weights, bias and sum unused).
fn run_reduce<const MAX: bool>(
    block: Block<'_>,
    g: &Geo3,
    clamp: Option<(f32, f32)>,
    scratch: &mut Scratch,
) -> bool {
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    let ch = block.channels;
    let fits = applies(g)
        && (1..=BLOCK).contains(&ch)
        && block.x.len() >= ch * isz
        && (MAX || block.w.len() >= ch * ksz)
        && block.out.len() >= ch * osz
        && block.bias.is_none_or(|b| b.len() >= ch)
        && block.sum.is_none_or(|s| s.len() >= ch * osz);
    if !fits {
        return false;
    }
    let (t, wt) = scratch.layout(g, MAX);
    // Weights transposed: tap `k`'s 16 channel weights side by side (zero past `ch`). The
    // accumulators start at the bias (-inf for the maximum).
    let mut bias = [0f32; BLOCK];
    if MAX {
        bias.fill(f32::NEG_INFINITY);
    } else {
        for (k, taps) in wt.chunks_exact_mut(BLOCK).enumerate() {
            for (c, v) in taps.iter_mut().enumerate() {
                *v = if c < ch { block.w[c * ksz + k] } else { 0.0 };
            }
        }
        if let Some(b) = block.bias {
            bias[..ch].copy_from_slice(&b[..ch]);
        }
    }
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    #[cfg(target_arch = "x86_64")]
    {
        let geo = Layout {
            pw: padded_dims(g).1,
            ch,
            g: *g,
        };
        // SAFETY: AVX-512F is present (`applies`); `t` and `wt` have the lengths the layout
        // needs (`ph * pw` and `ksz` vectors, `Scratch::layout`; the max taps read no
        // weights), `x`, `out` and `sum` hold `ch` planes (checked in `fits`), and
        // `padded_dims` covers every pixel a tap reads.
        unsafe {
            avx512::transpose_in(block.x, &geo, t);
            avx512::taps::<MAX>(t, wt, &bias, block.sum, (lo, hi), &geo, block.out);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (t, wt, bias, lo, hi);
    true
}

/// Runs `f(first, planes, scratch)` for every block of up to [`BLOCK`] consecutive
/// `osz`-long planes of `out` (`first`: the block's first plane index), the blocks spread
/// over `ctx`'s threads, each thread with its own scratch.
pub(super) fn par_blocks(
    ctx: &EvalCtx<'_>,
    out: &mut [f32],
    osz: usize,
    f: impl Fn(usize, &mut [f32], &mut Scratch) + Sync,
) {
    let blocks = (out.len() / osz.max(1)).div_ceil(BLOCK);
    let blocks_per = blocks.div_ceil(ctx.threads() * 2).max(1);
    ctx.par_chunks_mut(out, blocks_per * BLOCK * osz, |ci, chunk| {
        with_scratch(|scratch| {
            for (j, planes) in chunk.chunks_mut(BLOCK * osz).enumerate() {
                f((ci * blocks_per + j) * BLOCK, planes, scratch);
            }
        });
    });
}

impl Scratch {
    /// The padded transposed input (`ph * pw` vectors, its padding 0, or -inf for `max`) and
    /// the transposed weights (`kernel_size` vectors) for `g`.
    fn layout(&mut self, g: &Geo3, max: bool) -> (&mut [f32], &mut [f32]) {
        let (ph, pw) = padded_dims(g);
        let (t_len, w_len) = (ph * pw * BLOCK, g.kernel_size() * BLOCK);
        if self.cleared_for != Some((*g, max)) || self.data.len() < t_len + w_len {
            let fill = if max { f32::NEG_INFINITY } else { 0.0 };
            self.data.clear();
            self.data.resize(t_len + w_len, fill);
            self.cleared_for = Some((*g, max));
        }
        let (t, rest) = self.data.split_at_mut(t_len);
        (t, &mut rest[..w_len])
    }
}

/// The block's layout as the kernels read it.
struct Layout {
    /// Padded width (pixels).
    pw: usize,
    /// Real channels in the block.
    ch: usize,
    g: Geo3,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The three passes of [`super::run`]: transpose in, taps, transpose out.

    use super::{Layout, BLOCK};
    use std::arch::x86_64::*;

    /// `permutex2var` indices of the 16x16 transpose's four stages: for stage `s` (block
    /// size `h = 8 >> s`), `[s][0]` builds row `r` and `[s][1]` row `r + h` from rows `r` and
    /// `r + h` (`r & h == 0`).
    const TRANSPOSE_INDEX: [[[i32; 16]; 2]; 4] = {
        let mut idx = [[[0i32; 16]; 2]; 4];
        let mut s = 0;
        while s < 4 {
            let h = 8 >> s;
            let mut j = 0;
            while j < 16 {
                let (blk, pos) = (j / (2 * h), j % (2 * h));
                let base = (blk * 2 * h) as i32;
                let (lo, hi) = if pos < h {
                    (base + pos as i32, base + (h + pos) as i32)
                } else {
                    (16 + base + (pos - h) as i32, 16 + base + pos as i32)
                };
                idx[s][0][j] = lo;
                idx[s][1][j] = hi;
                j += 1;
            }
            s += 1;
        }
        idx
    };

    /// Transposes 16 vectors as a 16x16 matrix: lane `j` of vector `r` becomes lane `r` of
    /// vector `j`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(v: &mut [__m512; 16]) {
        for (s, [lo, hi]) in TRANSPOSE_INDEX.iter().enumerate() {
            let h = 8 >> s;
            // SAFETY: each index array is 16 readable i32 values.
            let (lo, hi) = unsafe {
                (
                    _mm512_loadu_si512(lo.as_ptr().cast()),
                    _mm512_loadu_si512(hi.as_ptr().cast()),
                )
            };
            for r in 0..16 {
                if r & h == 0 {
                    let (a, b) = (v[r], v[r + h]);
                    v[r] = _mm512_permutex2var_ps(a, lo, b);
                    v[r + h] = _mm512_permutex2var_ps(a, hi, b);
                }
            }
        }
    }

    /// The mask of the first `n` (<= 16) lanes.
    #[inline]
    fn first(n: usize) -> __mmask16 {
        if n >= 16 {
            !0
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// Copies the block's `ch` input planes into `t` (`[ph][pw][16]`, padding untouched),
    /// 16 pixels of every plane at a time.
    ///
    /// # Safety
    /// AVX-512F; `x` holds `l.ch` planes of `l.g.in_size()` values; `t` holds the padded
    /// plane's vectors (`ph * l.pw` with `pt + ih <= ph`, `pl + iw <= l.pw`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_in(x: &[f32], l: &Layout, t: &mut [f32]) {
        let [_, ih, iw] = l.g.input;
        let [_, pt, pl] = l.g.pad_begin;
        let isz = ih * iw;
        let (xp, tp) = (x.as_ptr(), t.as_mut_ptr());
        // The next pixel's input row and column.
        let (mut iy, mut ix) = (0, 0);
        for p0 in (0..isz).step_by(16) {
            let n = (isz - p0).min(16);
            let mut v = [_mm512_setzero_ps(); 16];
            for (c, vc) in v.iter_mut().enumerate().take(l.ch) {
                // SAFETY: the `n` pixels from `p0` are inside plane `c < ch` of `x`; the
                // masked load touches only them.
                *vc = unsafe { _mm512_maskz_loadu_ps(first(n), xp.add(c * isz + p0)) };
            }
            transpose16(&mut v);
            if ix + n <= iw {
                // One input row: consecutive padded pixels.
                // SAFETY: pixels (iy, ix..ix + n) land at padded (iy + pt, ix + pl..), inside
                // the `ph x pw` vectors of `t` (the caller's contract).
                let row = unsafe { tp.add(((iy + pt) * l.pw + ix + pl) * 16) };
                for (i, vi) in v.iter().enumerate().take(n) {
                    // SAFETY: as above, pixel `i < n` of the run.
                    unsafe { _mm512_storeu_ps(row.add(i * 16), *vi) };
                }
                ix += n;
                if ix == iw {
                    (iy, ix) = (iy + 1, 0);
                }
                continue;
            }
            for vi in v.iter().take(n) {
                // SAFETY: input pixel (iy, ix) lands at padded (iy + pt, ix + pl), inside the
                // `ph x pw` vectors of `t` (the caller's contract).
                unsafe { _mm512_storeu_ps(tp.add(((iy + pt) * l.pw + ix + pl) * 16), *vi) };
                ix += 1;
                if ix == iw {
                    (iy, ix) = (iy + 1, 0);
                }
            }
        }
    }

    /// Every output: bias plus each tap's weights times the padded input it reads (with
    /// `MAX`, the bias then the maximum of the taps), for 16 output pixels (in row-major
    /// order, so runs cross rows of narrow planes) in 16 accumulators, transposed in
    /// registers into 16 pixels of each channel, then the fused sum added, clamped to
    /// `[lo, hi]` and stored into the block's `l.ch` output planes.
    ///
    /// # Safety
    /// AVX-512F; `t` holds the padded vectors (rows of `l.pw`) covering every pixel a tap
    /// reads, `wt` `l.g.kernel_size()` weight vectors (unless `MAX`); `out` (and `sum` when
    /// given) hold `l.ch` planes of `l.g.out_size()` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn taps<const MAX: bool>(
        t: &[f32],
        wt: &[f32],
        bias: &[f32; BLOCK],
        sum: Option<&[f32]>,
        clamp: (f32, f32),
        l: &Layout,
        out: &mut [f32],
    ) {
        // SAFETY: the caller's contract, passed on; a known width stride lets the 16 pixels'
        // addresses be constant offsets.
        unsafe {
            match l.g.strides[2] {
                1 => taps_strided::<1, MAX>(t, wt, bias, sum, clamp, l, out),
                2 => taps_strided::<2, MAX>(t, wt, bias, sum, clamp, l, out),
                _ => taps_strided::<0, MAX>(t, wt, bias, sum, clamp, l, out),
            }
        }
    }

    /// One tap for an accumulator: `acc + w * v`, or with `MAX` the larger of `v` and `acc`
    /// (`acc` when `v` is NaN, so NaN inputs are skipped).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce<const MAX: bool>(w: __m512, v: __m512, acc: __m512) -> __m512 {
        if MAX {
            _mm512_max_ps(v, acc)
        } else {
            _mm512_fmadd_ps(w, v, acc)
        }
    }

    /// [`taps`] with width stride `SW` (0: read it from the layout).
    ///
    /// # Safety
    /// As for [`taps`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn taps_strided<const SW: usize, const MAX: bool>(
        t: &[f32],
        wt: &[f32],
        bias: &[f32; BLOCK],
        sum: Option<&[f32]>,
        (lo, hi): (f32, f32),
        l: &Layout,
        out: &mut [f32],
    ) {
        let [_, oh, ow] = l.g.output;
        let ([_, kh_n, kw_n], [_, sh, sw], [_, dh, dw]) = (l.g.kernel, l.g.strides, l.g.dilations);
        let sw = if SW == 0 { sw } else { SW };
        let osz = oh * ow;
        let (tp, wp, dp) = (t.as_ptr(), wt.as_ptr(), out.as_mut_ptr());
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        // SAFETY: `bias` holds 16 values.
        let b = unsafe { _mm512_loadu_ps(bias.as_ptr()) };
        // Tap `k`'s weights (none for `MAX`).
        let weight = |k: usize| {
            if MAX {
                _mm512_setzero_ps()
            } else {
                // SAFETY: `k` is a tap of the kernel: inside `wt` (the caller's contract).
                unsafe { _mm512_loadu_ps(wp.add(k * 16)) }
            }
        };
        // Where the next run's first pixel is.
        let (mut y, mut x) = (0, 0);
        for p0 in (0..osz).step_by(16) {
            let n = (osz - p0).min(16);
            let mut acc = [b; 16];
            if n == 16 && x + 16 <= ow {
                // 16 pixels of one output row: pixel `i` reads `i * sw` vectors after the
                // first.
                let base = (y * sh * l.pw + x * sw) * 16;
                for kh in 0..kh_n {
                    for kw in 0..kw_n {
                        let tap = base + (kh * dh * l.pw + kw * dw) * 16;
                        // SAFETY: tap (kh, kw) is inside `wt`; output (y, x + i) reads padded
                        // pixel (y*sh + kh*dh, (x + i)*sw + kw*dw), inside `t` (the contract).
                        unsafe {
                            let wv = weight(kh * kw_n + kw);
                            let at = tp.add(tap);
                            for (i, a) in acc.iter_mut().enumerate() {
                                let v = _mm512_loadu_ps(at.add(i * sw * 16));
                                *a = reduce::<MAX>(wv, v, *a);
                            }
                        }
                    }
                }
                x += n;
            } else {
                // A partial run or one across rows: each pixel's first padded vector (lanes
                // past `n` repeat the last pixel).
                let mut base = [0usize; 16];
                let (mut py, mut px) = (y, x);
                for (i, at) in base.iter_mut().enumerate() {
                    *at = (py * sh * l.pw + px * sw) * 16;
                    if i + 1 < n {
                        px += 1;
                        if px == ow {
                            (py, px) = (py + 1, 0);
                        }
                    }
                }
                for kh in 0..kh_n {
                    for kw in 0..kw_n {
                        let tap = (kh * dh * l.pw + kw * dw) * 16;
                        // SAFETY: as above, for pixel (py, px) of each lane.
                        unsafe {
                            let wv = weight(kh * kw_n + kw);
                            for (a, at) in acc.iter_mut().zip(&base) {
                                *a = reduce::<MAX>(wv, _mm512_loadu_ps(tp.add(at + tap)), *a);
                            }
                        }
                    }
                }
                x += n;
            }
            while x >= ow && ow > 0 {
                (y, x) = (y + 1, x - ow);
            }
            transpose16(&mut acc);
            let m = first(n);
            for (c, v) in acc.iter().enumerate().take(l.ch) {
                let mut v = *v;
                if let Some(s) = sum {
                    // SAFETY: the `n` pixels from `p0` of plane `c < ch` are inside `sum`.
                    v = _mm512_add_ps(v, unsafe {
                        _mm512_maskz_loadu_ps(m, s.as_ptr().add(c * osz + p0))
                    });
                }
                // `max(lo, v)`/`min(hi, v)` return `v` when it is NaN, as the Clip kernel.
                v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                // SAFETY: as for the sum, inside plane `c` of `out`.
                unsafe { _mm512_mask_storeu_ps(dp.add(c * osz + p0), m, v) };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn transpose16_transposes() {
            if !crate::kernels::simd::has_avx512() {
                return;
            }
            let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
            let mut back = [0f32; 256];
            // SAFETY: AVX-512F checked above; `m` and `back` hold 16 rows of 16.
            unsafe {
                let mut v = [_mm512_setzero_ps(); 16];
                for (r, vr) in v.iter_mut().enumerate() {
                    *vr = _mm512_loadu_ps(m.as_ptr().add(r * 16));
                }
                transpose16(&mut v);
                for (r, vr) in v.iter().enumerate() {
                    _mm512_storeu_ps(back.as_mut_ptr().add(r * 16), *vr);
                }
            }
            for r in 0..16 {
                for c in 0..16 {
                    assert_eq!(back[r * 16 + c], m[c * 16 + r]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::nn::depthwise::tests::{geo, geometries, window};

    fn pattern(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0)
            .collect()
    }

    /// Calls `check(channel, pixel, output, taps)` for every output of `ch` planes, with the
    /// window's taps inside the input as (tap index, input value).
    fn for_each_output(
        x: &[f32],
        out: &[f32],
        ch: usize,
        g: &Geo3,
        check: impl Fn(usize, usize, f32, &[(usize, f32)]),
    ) {
        let (isz, osz, ow) = (g.in_size(), g.out_size(), g.output[2]);
        for c in 0..ch {
            for (p, &got) in out[c * osz..][..osz].iter().enumerate() {
                check(c, p, got, &window(&x[c * isz..][..isz], g, p / ow, p % ow));
            }
        }
    }

    /// `run` against a naive depthwise convolution with bias, sum and clamp, for blocks of
    /// 1, 5 and 16 channels over the shared geometries (padding, strides, dilation, planes
    /// narrower than a run of 16 pixels, 1x1 outputs).
    #[test]
    fn blocks_match_a_naive_reference() {
        if !crate::kernels::simd::has_avx512() {
            return;
        }
        let mut geos = geometries();
        geos.push(geo([1, 1], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false));
        geos.push(geo([3, 5], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false));
        let mut scratch = Scratch::default();
        for g in &geos {
            for (ch, fused) in [(16, true), (5, false), (1, true)] {
                let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
                let x = pattern(ch * isz, 1);
                let w = pattern(ch * ksz, 2);
                let bias = pattern(ch, 3);
                let sum = pattern(ch * osz, 4);
                let clamp = fused.then_some((-0.5, 0.75));
                let mut out = vec![f32::NAN; ch * osz];
                let block = Block {
                    x: &x,
                    w: &w,
                    bias: fused.then_some(&bias[..]),
                    sum: fused.then_some(&sum[..]),
                    out: &mut out,
                    channels: ch,
                };
                assert!(run(block, g, clamp, &mut scratch), "{g:?}");
                for_each_output(&x, &out, ch, g, |c, p, got, taps| {
                    let mut want: f32 = taps.iter().map(|&(k, v)| w[c * ksz + k] * v).sum();
                    if fused {
                        want = (want + bias[c] + sum[c * osz + p]).clamp(-0.5, 0.75);
                    }
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{g:?} channel {c} pixel {p}: {got} vs {want}"
                    );
                });
            }
        }
    }

    /// `run_max` against a naive max over each window, with NaN inputs (skipped) and
    /// windows that read only padding (-inf).
    #[test]
    fn max_blocks_match_a_naive_reference_and_skip_nan() {
        if !crate::kernels::simd::has_avx512() {
            return;
        }
        let mut geos = geometries();
        geos.push(geo([5, 5], [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], true));
        geos.push(geo([4, 6], [2, 2], [1, 1], [1, 1], [3, 0, 0, 0], false));
        let mut scratch = Scratch::default();
        for g in &geos {
            for ch in [16, 3] {
                let (isz, osz) = (g.in_size(), g.out_size());
                let mut x = pattern(ch * isz, 5);
                for v in x.iter_mut().step_by(7) {
                    *v = f32::NAN;
                }
                let mut out = vec![0.0; ch * osz];
                assert!(run_max(&x, &mut out, ch, g, &mut scratch), "{g:?}");
                for_each_output(&x, &out, ch, g, |c, p, got, taps| {
                    let want = taps
                        .iter()
                        .map(|&(_, v)| v)
                        .filter(|v| !v.is_nan())
                        .fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(got, want, "{g:?} channel {c} pixel {p}");
                });
            }
        }
    }

    #[test]
    fn short_operands_are_refused() {
        let g = geo([4, 4], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false);
        let (x, w) = (vec![0.0; 16], vec![0.0; 9]);
        let mut out = vec![1.0; 15];
        let block = Block {
            x: &x,
            w: &w,
            bias: None,
            sum: None,
            out: &mut out,
            channels: 1,
        };
        assert!(!run(block, &g, None, &mut Scratch::default()));
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
