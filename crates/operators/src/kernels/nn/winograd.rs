//! Winograd F(2x2, 3x3) convolution for 2-D 3x3 stride-1 convolutions with f32 weights
//! prepacked at session creation ([`WinogradWeights`]).
//!
//! Each 2x2 block of output pixels (a tile) is computed from the 4x4 input patch under it:
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. The elementwise product over all channels is 16 GEMMs,
//! one per position ξ of the 4x4 transformed tile: `M[ξ] = U[ξ] · V[ξ]`, with `U[ξ]` the
//! transformed weights (output channels by input channels, packed once) and `V[ξ]` the
//! transformed input (input channels by tiles). That is 16 multiply-adds per tile and channel
//! pair against the direct convolution's 36, at the cost of the input transform (`Bᵀ d B`) and
//! the output transform (`Aᵀ m A`), both linear in the image.
//!
//! The tiles are taken in blocks of whole tile rows, sized so that a block's transformed input
//! and GEMM output stay within [`BLOCK_BYTES`], and a task computes one block for a range of
//! output channels on its own thread: its input transform, its 16 GEMMs, its output
//! transform (with bias, fused sum and activation). Large images give each thread blocks;
//! small ones give each thread a range of output channels of the one block ([`Tasks`]).
//!
//! Padding needs no special taps: the transform reads a zero-padded copy of each input row,
//! and tiles past the output's last row or column are computed and dropped.
//!
//! Unlike the direct convolution, an infinite or NaN input value reaches all four outputs of
//! each tile whose 4x4 patch holds it, even those whose own 3x3 window does not.

use super::Geo3;
use crate::kernels::gemm::{gemm_packed_a_rows, Epilogue, GemmError, PackedA};
use crate::kernels::linalg::{ErrorSlot, MatMut, MatRef};
use crate::kernels::simd;
use crate::{EvalCtx, OpResult};
use std::cell::RefCell;

/// Positions in a transformed 4x4 tile: one GEMM each.
const XI: usize = 16;

/// Tiles transformed at once, a vector's worth (`[f32; LANES]` arrays vectorize whole).
const LANES: usize = 16;

/// What a block's transformed input and GEMM output may take together.
const BLOCK_BYTES: usize = 2 << 20;

type Lane = [f32; LANES];

/// A 3x3 convolution's weights transformed (`U = G g Gᵀ`) and packed as 16 GEMM left
/// operands, output channels by input channels.
#[derive(Debug)]
pub struct WinogradWeights {
    u: Vec<PackedA>,
    out_channels: usize,
    in_channels: usize,
}

impl WinogradWeights {
    /// Bytes the transformed, packed weights take.
    pub fn bytes(&self) -> usize {
        self.u.iter().map(PackedA::bytes).sum()
    }

    /// Transforms and packs `w`, row-major `[out_channels, in_channels, 3, 3]`.
    pub fn new(w: &[f32], out_channels: usize, in_channels: usize) -> Result<Self, GemmError> {
        let pairs = out_channels.checked_mul(in_channels);
        let Some(pairs) = pairs.filter(|p| p.checked_mul(9) == Some(w.len())) else {
            return Err(GemmError::View("weights"));
        };
        let mut u = vec![vec![0.0f32; pairs]; XI];
        for (pair, g) in w.chunks_exact(9).enumerate() {
            for (xi, v) in transform_kernel(g).into_iter().enumerate() {
                u[xi][pair] = v;
            }
        }
        let u = u
            .iter()
            .map(|m| PackedA::new(MatRef::row_major(m, out_channels, in_channels)))
            .collect::<Result<_, _>>()?;
        Ok(WinogradWeights {
            u,
            out_channels,
            in_channels,
        })
    }
}

/// `G g Gᵀ` for one 3x3 kernel `g` (row-major), computed in f64, the 4x4 result row-major.
fn transform_kernel(g: &[f32]) -> [f32; XI] {
    let g = |r: usize, c: usize| f64::from(g[r * 3 + c]);
    // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    let rows = |c: usize| {
        [
            g(0, c),
            (g(0, c) + g(1, c) + g(2, c)) / 2.0,
            (g(0, c) - g(1, c) + g(2, c)) / 2.0,
            g(2, c),
        ]
    };
    let gg = [rows(0), rows(1), rows(2)]; // gg[c][i] = (G g)[i][c]
    let mut u = [0.0f32; XI];
    for i in 0..4 {
        let (a, b, c) = (gg[0][i], gg[1][i], gg[2][i]);
        let row = [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
        for (j, v) in row.into_iter().enumerate() {
            u[i * 4 + j] = v as f32;
        }
    }
    u
}

/// Whether `g` is a convolution this module computes: 2-D, 3x3, stride 1, no dilation.
pub(crate) fn applies(g: &Geo3) -> bool {
    g.input[0] == 1
        && g.output[0] == 1
        && g.kernel == [1, 3, 3]
        && g.strides == [1; 3]
        && g.dilations == [1; 3]
}

/// The tile grid of one convolution: `tiles_h x tiles_w` tiles of 2x2 output pixels.
#[derive(Debug, Clone, Copy)]
struct Grid {
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    pad_top: usize,
    pad_left: usize,
    tiles_h: usize,
    tiles_w: usize,
}

impl Grid {
    fn of(g: &Geo3) -> Self {
        let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
        Grid {
            ih,
            iw,
            oh,
            ow,
            pad_top: g.pad_begin[1],
            pad_left: g.pad_begin[2],
            tiles_h: oh.div_ceil(2),
            tiles_w: ow.div_ceil(2),
        }
    }

    /// Length of a deinterleaved padded row (even or odd columns): one per tile and one
    /// more, plus a vector's worth of zeros so whole vectors can be read past the last tile.
    fn half_row(&self) -> usize {
        self.tiles_w.div_ceil(LANES) * LANES + LANES + 1
    }
}

thread_local! {
    /// The calling thread's transformed input and GEMM output for one block.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each thread's deinterleaved padded input rows.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer `cell`, taken out for the call (a nested call gets an
/// empty one) and put back after, so steady-state runs allocate nothing.
fn with_buffer<R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    f: impl FnOnce(&mut Vec<f32>) -> R,
) -> R {
    let taken = cell.try_with(|c| c.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)));
    let mut buf = taken.ok().and_then(Result::ok).unwrap_or_default();
    let result = f(&mut buf);
    let _ = cell.try_with(|c| c.try_borrow_mut().map(|mut v| *v = buf));
    result
}

/// `out` = the convolution of `x` (one plane of `g.input` per input channel of `w`) by `w`, then
/// `epilogue`: output channel `m` at `out[m * ldc..][..g.out_size()]`.
pub(crate) fn conv(
    ctx: &EvalCtx<'_>,
    w: &WinogradWeights,
    x: &[f32],
    g: &Geo3,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> OpResult<()> {
    conv_on(ctx, w, x, g, out, ldc, epilogue, simd::has_avx512())
}

/// How one convolution is cut into tasks: bands of whole tile rows (one per thread), or, for
/// images with too few tiles for that, ranges of output channels (one per thread) of one
/// band. Each task transforms its band's input itself, so threads share only the input
/// (read) and the output (written apart): on this host, data handed from one core to the
/// other cost more than it saved whenever the cores' caches were far apart. A band whose
/// transformed data would not fit [`BLOCK_BYTES`] runs in blocks of fewer tile rows.
#[derive(Debug, Clone, Copy)]
struct Tasks {
    rows_per_band: usize,
    bands: usize,
    rows_per_block: usize,
    /// Output channels per range, a multiple of the packed weights' row panel.
    channels_per_split: usize,
    splits: usize,
}

impl Tasks {
    fn plan(grid: &Grid, c: usize, m: usize, threads: usize, row_panel: usize) -> Self {
        let th = grid.tiles_h.max(1);
        let (bands, splits) = match threads {
            0 | 1 => (1, 1),
            _ if th.div_ceil(threads) * grid.tiles_w >= MIN_BLOCK_TILES => (threads, 1),
            _ => (1, threads),
        };
        let rows_per_band = th.div_ceil(bands);
        let per_tile_row = XI * (c + m) * grid.tiles_w * std::mem::size_of::<f32>();
        let budget_rows = (BLOCK_BYTES / per_tile_row.max(1)).clamp(1, rows_per_band);
        let rows_per_block = rows_per_band.div_ceil(rows_per_band.div_ceil(budget_rows));
        let channels_per_split = m.div_ceil(splits).div_ceil(row_panel) * row_panel;
        Tasks {
            rows_per_band,
            bands: th.div_ceil(rows_per_band),
            rows_per_block,
            channels_per_split,
            splits: m.div_ceil(channels_per_split.max(1)),
        }
    }
}

/// Fewest tiles in a band when the threads take bands (the GEMMs' columns).
const MIN_BLOCK_TILES: usize = 64;

/// The output handed to tasks that write disjoint parts of it.
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks write only their own (channel, row) ranges of the output through it (see
// `SharedOut::rows`), so sharing the pointer between threads is sound.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Rows `rows` (each `width` values) of the plane at `start`.
    ///
    /// # Safety
    /// No other live slice may overlap the returned one.
    // The tasks' disjoint writes are the point: each gets its own rows from the shared view.
    #[allow(clippy::mut_from_ref)]
    unsafe fn rows(&self, start: usize, rows: std::ops::Range<usize>, width: usize) -> &mut [f32] {
        let (from, to) = (start + rows.start * width, start + rows.end * width);
        assert!(from <= to && to <= self.len, "output rows out of bounds");
        // SAFETY: `from..to` is inside the output (asserted); the caller guarantees that no
        // other live slice overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(from), to - from) }
    }
}

/// [`conv`] with the transforms in AVX-512 (`wide`, which the CPU must have) or portable
/// code.
#[allow(clippy::too_many_arguments)]
fn conv_on(
    ctx: &EvalCtx<'_>,
    w: &WinogradWeights,
    x: &[f32],
    g: &Geo3,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
    wide: bool,
) -> OpResult<()> {
    let (c, m) = (w.in_channels, w.out_channels);
    let grid = Grid::of(g);
    let (isz, osz) = (grid.ih * grid.iw, grid.oh * grid.ow);
    let out_len = match m {
        0 => 0,
        _ => (m - 1) * ldc + osz,
    };
    if !applies(g) || x.len() != c * isz || out.len() != out_len || ldc < osz {
        return Err(GemmError::View("Winograd convolution operands").into());
    }
    if epilogue.bias.is_some_and(|b| b.len() < m) {
        return Err(GemmError::View("bias").into());
    }
    if epilogue.sum.is_some_and(|s| s.len() != out.len()) {
        return Err(GemmError::View("sum").into());
    }
    let row_panel = w.u.first().map_or(1, PackedA::row_panel);
    if w.u.len() != XI {
        return Err(GemmError::View("Winograd weights").into());
    }
    if osz == 0 || m == 0 {
        return Ok(());
    }
    // The caller's word that the CPU has AVX-512, checked (the check is cached).
    let wide = wide && simd::has_avx512();
    let tasks = Tasks::plan(&grid, c, m, ctx.threads(), row_panel);
    let shared = SharedOut {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let errors = ErrorSlot::default();
    let job = |task: usize| {
        let (band, split) = (task / tasks.splits, task % tasks.splits);
        let band_end = ((band + 1) * tasks.rows_per_band).min(grid.tiles_h);
        let m0 = split * tasks.channels_per_split;
        let m1 = (m0 + tasks.channels_per_split).min(m);
        for ty0 in (band * tasks.rows_per_band..band_end).step_by(tasks.rows_per_block) {
            let part = Part {
                w,
                grid: &grid,
                block: (ty0, (ty0 + tasks.rows_per_block).min(band_end)),
                channels: m0..m1,
                ldc,
                epilogue,
                wide,
            };
            errors.record(part.run(x, &shared));
        }
    };
    ctx.parallel.run(tasks.bands * tasks.splits, &job);
    errors.finish()
}

/// One task: the tile rows `block` of output channels `channels`.
struct Part<'a> {
    w: &'a WinogradWeights,
    grid: &'a Grid,
    block: (usize, usize),
    channels: std::ops::Range<usize>,
    ldc: usize,
    epilogue: &'a Epilogue<'a>,
    wide: bool,
}

impl Part<'_> {
    /// Transforms the block's input, multiplies, and writes the channels' output rows
    /// through `out`, in this thread's buffers.
    fn run(&self, x: &[f32], out: &SharedOut) -> OpResult<()> {
        let (c, m) = (self.w.in_channels, self.w.out_channels);
        let (ty0, ty1) = self.block;
        let t = (ty1 - ty0) * self.grid.tiles_w;
        with_buffer(&BLOCK, |buf| {
            // The products' rows outside `channels` are not written; the LANES spare values
            // let the output transform read whole vectors.
            let need = XI * (c + m) * t + LANES;
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            let (v, mx) = buf.split_at_mut(XI * c * t);
            with_buffer(&ROWS, |rows| {
                #[cfg(target_arch = "x86_64")]
                if self.wide {
                    // SAFETY: the CPU has every feature the callee enables (`wide` says so).
                    unsafe { input_channels_avx512(x, self.grid, self.block, rows, v) };
                    return;
                }
                input_channels(x, self.grid, self.block, rows, v, false);
            });
            self.multiply(v, &mut mx[..XI * m * t], t)?;
            self.write_output(mx, out);
            Ok(())
        })
    }

    /// `mx[ξ] = U[ξ] · V[ξ]` for the block's `t` tiles and this part's channels (`v` by
    /// input channel, then ξ; `mx` by ξ, then output channel).
    fn multiply(&self, v: &[f32], mx: &mut [f32], t: usize) -> OpResult<()> {
        let (c, m) = (self.w.in_channels, self.w.out_channels);
        for (xi, (u, out)) in self.w.u.iter().zip(mx.chunks_exact_mut(m * t)).enumerate() {
            // V[ξ]: row `ch` at `v[(ch * XI + ξ) * t..]`.
            let b = MatRef {
                data: &v[xi * t..],
                rows: c,
                cols: t,
                rs: XI * t,
                cs: 1,
            };
            let out = MatMut::row_major(out, m, t);
            gemm_packed_a_rows(1.0, u, self.channels.clone(), b, 0.0, out)?;
        }
        Ok(())
    }

    /// The output transform of this part's channels from `mx` (with [`LANES`] values to
    /// spare), then the epilogue, into their rows of `out`.
    fn write_output(&self, mx: &[f32], out: &SharedOut) {
        let grid = self.grid;
        let (ty0, ty1) = self.block;
        let t = (ty1 - ty0) * grid.tiles_w;
        let plane = self.w.out_channels * t;
        let rows = 2 * ty0..(2 * ty1).min(grid.oh);
        let job = OutputJob {
            mx,
            grid,
            block: self.block,
            ldc: self.ldc,
            epilogue: self.epilogue,
        };
        for ch in self.channels.clone() {
            let m: [usize; XI] = std::array::from_fn(|xi| xi * plane + ch * t);
            // SAFETY: tasks cover disjoint (channel, tile row) ranges, so no other task's
            // slice overlaps this channel's rows of this block.
            let dst = unsafe { out.rows(ch * self.ldc, rows.clone(), grid.ow) };
            #[cfg(target_arch = "x86_64")]
            if self.wide {
                // SAFETY: the CPU has AVX-512F (`wide` says so); `m[ξ]` and the block's
                // tiles are inside `mx`, which has LANES values to spare.
                unsafe { avx512::output_channel(&job, &m, ch, dst) };
                continue;
            }
            untransform_channel(&job, &m, ch, dst);
        }
    }
}

/// [`input_channels`] compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F, BW and VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn input_channels_avx512(
    x: &[f32],
    grid: &Grid,
    block: (usize, usize),
    rows: &mut Vec<f32>,
    v: &mut [f32],
) {
    input_channels(x, grid, block, rows, v, true);
}

/// Writes `Bᵀ d B` for every tile of tile rows `block` and every plane of `x` into `v`
/// (`[channel][ξ][tile]`); `wide`: in AVX-512 intrinsics.
#[inline(always)]
fn input_channels(
    x: &[f32],
    grid: &Grid,
    block: (usize, usize),
    rows: &mut Vec<f32>,
    v: &mut [f32],
    wide: bool,
) {
    let isz = grid.ih * grid.iw;
    let per_channel = XI * (block.1 - block.0) * grid.tiles_w;
    // (An empty image, all padding, has empty planes.)
    for (ch, vc) in v.chunks_exact_mut(per_channel).enumerate() {
        let plane = x.get(ch * isz..(ch + 1) * isz).unwrap_or_default();
        transform_channel(plane, grid, block, rows, vc, wide);
    }
}

/// [`input_channels`] for one channel's `plane` into `v` (`[ξ][tile]`).
#[inline(always)]
fn transform_channel(
    plane: &[f32],
    grid: &Grid,
    (ty0, ty1): (usize, usize),
    rows: &mut Vec<f32>,
    v: &mut [f32],
    wide: bool,
) {
    let half = grid.half_row();
    let padded_rows = 2 * (ty1 - ty0) + 2;
    let row_len = 2 * half;
    if rows.len() < padded_rows * row_len + row_len {
        rows.resize(padded_rows * row_len + row_len, 0.0);
    }
    let (deint, line) = rows.split_at_mut(padded_rows * row_len);
    for (r, dst) in deint.chunks_exact_mut(row_len).enumerate() {
        let y = (2 * ty0 + r)
            .checked_sub(grid.pad_top)
            .filter(|&y| y < grid.ih);
        deinterleave_row(y.map(|y| &plane[y * grid.iw..][..grid.iw]), grid, line, dst);
    }
    let t = v.len() / XI;
    let tw = grid.tiles_w;
    for ty in ty0..ty1 {
        let r0 = 2 * (ty - ty0);
        let row = |r: usize| &deint[(r0 + r) * row_len..][..row_len];
        let d = [row(0), row(1), row(2), row(3)];
        let first = (ty - ty0) * tw;
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: `wide` says the CPU has AVX-512F (the caller checked).
            unsafe { avx512::input_row(&d, half, tw, &mut v[first..], t) };
            continue;
        }
        for tx0 in (0..tw).step_by(LANES) {
            let n = LANES.min(tw - tx0);
            let tile = transform_tiles(&d, half, tx0);
            for (xi, lane) in tile.iter().enumerate() {
                let dst = &mut v[xi * t + first + tx0..][..n];
                match <&mut Lane>::try_from(&mut *dst) {
                    Ok(whole) => *whole = *lane,
                    Err(_) => dst.copy_from_slice(&lane[..n]),
                }
            }
        }
    }
}

/// One padded input row (`None`: a padding row) split into its even and odd columns:
/// `dst[..half]` holds padded columns 0, 2, 4, …, `dst[half..]` columns 1, 3, 5, ….
#[inline(always)]
fn deinterleave_row(src: Option<&[f32]>, grid: &Grid, line: &mut [f32], dst: &mut [f32]) {
    let half = dst.len() / 2;
    let line = &mut line[..2 * half];
    line.fill(0.0);
    if let Some(src) = src {
        let start = grid.pad_left.min(line.len());
        let n = src.len().min(line.len() - start);
        line[start..start + n].copy_from_slice(&src[..n]);
    }
    let (even, odd) = dst.split_at_mut(half);
    for ((e, o), pair) in even.iter_mut().zip(odd).zip(line.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
}

#[inline(always)]
fn load(s: &[f32], at: usize) -> Lane {
    let mut a = [0.0; LANES];
    a.copy_from_slice(&s[at..at + LANES]);
    a
}

#[inline(always)]
fn add(a: Lane, b: Lane) -> Lane {
    std::array::from_fn(|i| a[i] + b[i])
}

#[inline(always)]
fn sub(a: Lane, b: Lane) -> Lane {
    std::array::from_fn(|i| a[i] - b[i])
}

/// `Bᵀ d B` for the [`LANES`] tiles from `tx0` of one tile row, whose four padded input rows
/// are `d` (deinterleaved, `half` even columns then the odd ones); result by ξ.
#[inline(always)]
fn transform_tiles(d: &[&[f32]; 4], half: usize, tx0: usize) -> [Lane; XI] {
    // Each row's columns 2tx, 2tx+1, 2tx+2, 2tx+3 for the lanes' tiles.
    let cols = |r: &[f32]| {
        [
            load(r, tx0),
            load(r, half + tx0),
            load(r, tx0 + 1),
            load(r, half + tx0 + 1),
        ]
    };
    let [d0, d1, d2, d3] = [cols(d[0]), cols(d[1]), cols(d[2]), cols(d[3])];
    // Bᵀ on the rows: d0 - d2, d1 + d2, d2 - d1, d1 - d3 (column by column).
    let combine = |f: fn(Lane, Lane) -> Lane, a: &[Lane; 4], b: &[Lane; 4]| {
        [f(a[0], b[0]), f(a[1], b[1]), f(a[2], b[2]), f(a[3], b[3])]
    };
    let rows = [
        combine(sub, &d0, &d2),
        combine(add, &d1, &d2),
        combine(sub, &d2, &d1),
        combine(sub, &d1, &d3),
    ];
    let mut out = [[0.0; LANES]; XI];
    for (i, [c0, c1, c2, c3]) in rows.into_iter().enumerate() {
        // B on the columns, the same combinations.
        out[i * 4] = sub(c0, c2);
        out[i * 4 + 1] = add(c1, c2);
        out[i * 4 + 2] = sub(c2, c1);
        out[i * 4 + 3] = sub(c1, c3);
    }
    out
}

/// What the output transform of one block reads.
struct OutputJob<'a> {
    /// The GEMM outputs, `[ξ][channel][tile]`, with [`LANES`] values to spare at the end.
    mx: &'a [f32],
    grid: &'a Grid,
    block: (usize, usize),
    ldc: usize,
    epilogue: &'a Epilogue<'a>,
}

/// The output transform for output channel `ch`, whose GEMM outputs for position ξ start at
/// `job.mx[m[ξ]]`, into `dst`, its output rows from the block's first (`2 * block.0`).
#[inline(always)]
fn untransform_channel(job: &OutputJob<'_>, m: &[usize; XI], ch: usize, dst: &mut [f32]) {
    let grid = job.grid;
    let (ty0, ty1) = job.block;
    let (tw, ow) = (grid.tiles_w, grid.ow);
    for ty in ty0..ty1 {
        let first = (ty - ty0) * tw;
        for tx0 in (0..tw).step_by(LANES) {
            // Whole vectors: lanes past the block's last tile read values to spare.
            let y = untransform_tiles(std::array::from_fn(|xi| load(job.mx, m[xi] + first + tx0)));
            for (dy, [even, odd]) in y.into_iter().enumerate() {
                let oy = 2 * ty + dy;
                if oy >= grid.oh {
                    break;
                }
                let mut pairs = [0.0f32; 2 * LANES];
                for k in 0..LANES {
                    pairs[2 * k] = even[k];
                    pairs[2 * k + 1] = odd[k];
                }
                let x0 = 2 * tx0;
                let cols = (2 * LANES).min(ow - x0);
                let row = &mut dst[(oy - 2 * ty0) * ow + x0..][..cols];
                match <&mut [f32; 2 * LANES]>::try_from(&mut *row) {
                    Ok(whole) => *whole = pairs,
                    Err(_) => row.copy_from_slice(&pairs[..cols]),
                }
            }
        }
        for oy in (2 * ty..2 * ty + 2).filter(|&oy| oy < grid.oh) {
            let row = &mut dst[(oy - 2 * ty0) * ow..][..ow];
            finish(job.epilogue, ch, oy * ow, job.ldc, row);
        }
    }
}

/// `Aᵀ m A` for [`LANES`] tiles, `m` by ξ: the 2x2 outputs, by output row, then even and
/// odd column.
#[inline(always)]
fn untransform_tiles(m: [Lane; XI]) -> [[Lane; 2]; 2] {
    // Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]] on the rows, column by column.
    let s: [[Lane; 4]; 2] = [
        std::array::from_fn(|j| add(add(m[j], m[4 + j]), m[8 + j])),
        std::array::from_fn(|j| sub(sub(m[4 + j], m[8 + j]), m[12 + j])),
    ];
    s.map(|r| [add(add(r[0], r[1]), r[2]), sub(sub(r[1], r[2]), r[3])])
}

/// The epilogue on output channel `ch`'s pixels `col..col + row.len()`.
#[inline(always)]
fn finish(epilogue: &Epilogue<'_>, ch: usize, col: usize, ldc: usize, row: &mut [f32]) {
    if let Some(b) = epilogue.bias.and_then(|b| b.get(ch)) {
        row.iter_mut().for_each(|v| *v += b);
    }
    if let Some(sum) = epilogue.sum {
        let s = &sum[ch * ldc + col..][..row.len()];
        row.iter_mut().zip(s).for_each(|(v, s)| *v += s);
    }
    if let Some((lo, hi)) = epilogue.clamp {
        // NaN passes through, as in the GEMM's epilogue.
        for v in row.iter_mut() {
            let above = if *v < lo { lo } else { *v };
            *v = if above > hi { hi } else { above };
        }
    }
    if let Some(custom) = epilogue.custom {
        custom.apply(ch, col, row);
    }
}

/// The transforms in AVX-512 intrinsics, 16 tiles per vector.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{OutputJob, LANES, XI};
    use crate::kernels::simd::first_lanes;
    use std::arch::x86_64::*;

    /// [`super::transform_tiles`] for a whole tile row of `tiles` tiles, written to
    /// `v[ξ * t + tile]`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F. Each of `d` must hold at least `2 * half` values with
    /// `half >= tiles.div_ceil(16) * 16 + 1` (the padded rows' even, then odd, columns).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_row(
        d: &[&[f32]; 4],
        half: usize,
        tiles: usize,
        v: &mut [f32],
        t: usize,
    ) {
        let ok = d.iter().all(|r| r.len() >= 2 * half) && half > tiles.div_ceil(LANES) * LANES;
        if !ok || v.len() < (XI - 1) * t + tiles {
            debug_assert!(false, "Winograd input rows or output too short");
            return;
        }
        for tx0 in (0..tiles).step_by(LANES) {
            let mask = first_lanes(tiles - tx0);
            // SAFETY: the loads end at `half + tx0 + 17 <= 2 * half` (checked above).
            let col = |r: &[f32], at: usize| unsafe { _mm512_loadu_ps(r.as_ptr().add(at)) };
            // Columns 2tx, 2tx+1, 2tx+2, 2tx+3 of each row.
            let cols = |r: &[f32]| {
                [
                    col(r, tx0),
                    col(r, half + tx0),
                    col(r, tx0 + 1),
                    col(r, half + tx0 + 1),
                ]
            };
            let [d0, d1, d2, d3] = [cols(d[0]), cols(d[1]), cols(d[2]), cols(d[3])];
            for i in 0..4 {
                // Bᵀ on the rows: d0 - d2, d1 + d2, d2 - d1, d1 - d3.
                let c = std::array::from_fn::<__m512, 4, _>(|j| match i {
                    0 => _mm512_sub_ps(d0[j], d2[j]),
                    1 => _mm512_add_ps(d1[j], d2[j]),
                    2 => _mm512_sub_ps(d2[j], d1[j]),
                    _ => _mm512_sub_ps(d1[j], d3[j]),
                });
                // B on the columns, the same combinations.
                let out = [
                    _mm512_sub_ps(c[0], c[2]),
                    _mm512_add_ps(c[1], c[2]),
                    _mm512_sub_ps(c[2], c[1]),
                    _mm512_sub_ps(c[1], c[3]),
                ];
                for (j, o) in out.into_iter().enumerate() {
                    let at = (i * 4 + j) * t + tx0;
                    // SAFETY: the masked lanes `at..at + min(16, tiles - tx0)` are inside
                    // `v` (checked above: `at < (XI - 1) * t + tiles`).
                    unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), mask, o) };
                }
            }
        }
    }

    /// [`super::untransform_channel`], the epilogue's bias, sum and clamp applied in
    /// registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `m[ξ]` and the block's tiles are inside `job.mx` with
    /// [`LANES`] values to spare.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_channel(
        job: &OutputJob<'_>,
        m: &[usize; XI],
        ch: usize,
        dst: &mut [f32],
    ) {
        let grid = job.grid;
        let (ty0, ty1) = job.block;
        let (tw, ow, oh) = (grid.tiles_w, grid.ow, grid.oh);
        let t = (ty1 - ty0) * tw;
        let e = job.epilogue;
        let out_rows = (2 * ty1).min(oh) - 2 * ty0;
        let fits = m.iter().all(|&at| at + t + LANES <= job.mx.len())
            && dst.len() >= out_rows * ow
            && e.sum.is_none_or(|s| s.len() >= ch * job.ldc + oh * ow);
        if !fits {
            debug_assert!(false, "Winograd products or output too short");
            return;
        }
        let bias = _mm512_set1_ps(e.bias.and_then(|b| b.get(ch)).copied().unwrap_or(0.0));
        let (lo, hi) = e.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let even_first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        let even_last =
            _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        for ty in ty0..ty1 {
            let first = (ty - ty0) * tw;
            for tx0 in (0..tw).step_by(LANES) {
                // SAFETY: inside `job.mx` with values to spare (checked above).
                let ld = |xi: usize| unsafe {
                    _mm512_loadu_ps(job.mx.as_ptr().add(m[xi] + first + tx0))
                };
                let mut s0 = [_mm512_setzero_ps(); 4];
                let mut s1 = [_mm512_setzero_ps(); 4];
                for j in 0..4 {
                    let (a, b, c, d) = (ld(j), ld(4 + j), ld(8 + j), ld(12 + j));
                    // Aᵀ on the rows: m0 + m1 + m2, m1 - m2 - m3.
                    s0[j] = _mm512_add_ps(_mm512_add_ps(a, b), c);
                    s1[j] = _mm512_sub_ps(_mm512_sub_ps(b, c), d);
                }
                for (dy, r) in [s0, s1].into_iter().enumerate() {
                    let oy = 2 * ty + dy;
                    if oy >= oh {
                        break;
                    }
                    let even = _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]);
                    let odd = _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]);
                    let x0 = 2 * tx0;
                    let cols = (2 * LANES).min(ow - x0);
                    let halves = [
                        _mm512_permutex2var_ps(even, even_first, odd),
                        _mm512_permutex2var_ps(even, even_last, odd),
                    ];
                    for (hf, mut y) in halves.into_iter().enumerate() {
                        let done = hf * LANES;
                        if done >= cols {
                            break;
                        }
                        let mask = first_lanes(cols - done);
                        let px = oy * ow + x0 + done;
                        let at = (oy - 2 * ty0) * ow + x0 + done;
                        y = _mm512_add_ps(y, bias);
                        if let Some(sum) = e.sum {
                            // SAFETY: the masked lanes are pixels of this channel's plane
                            // in the sum (checked above).
                            let sv = unsafe {
                                _mm512_maskz_loadu_ps(mask, sum.as_ptr().add(ch * job.ldc + px))
                            };
                            y = _mm512_add_ps(y, sv);
                        }
                        // NaN passes through: max and min return their second operand
                        // when either is NaN.
                        y = _mm512_min_ps(hi, _mm512_max_ps(lo, y));
                        // SAFETY: the masked lanes are pixels of this channel's plane, inside
                        // `dst` (checked above).
                        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(at), mask, y) };
                    }
                }
            }
            if let Some(custom) = e.custom {
                for oy in (2 * ty..2 * ty + 2).filter(|&oy| oy < oh) {
                    custom.apply(ch, oy * ow, &mut dst[(oy - 2 * ty0) * ow..][..ow]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::SerialParallelFor;
    use crate::ctx::{HeapTensorAlloc, ThreeThreads};
    use crate::kernels::nn::{Geo3, SpatialAttrs};

    fn naive(x: &[f32], w: &[f32], g: &Geo3, c: usize, m: usize) -> Vec<f32> {
        let ([_, ih, iw], [_, oh, ow]) = (g.input, g.output);
        let (pt, pl) = (g.pad_begin[1] as isize, g.pad_begin[2] as isize);
        let mut out = vec![0.0f32; m * oh * ow];
        for mo in 0..m {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = 0.0f64;
                    for ci in 0..c {
                        for kh in 0..3 {
                            for kw in 0..3 {
                                let iy = y as isize + kh as isize - pt;
                                let ix = xo as isize + kw as isize - pl;
                                if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                    continue;
                                }
                                let xv = x[(ci * ih + iy as usize) * iw + ix as usize];
                                let wv = w[((mo * c + ci) * 3 + kh) * 3 + kw];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[(mo * oh + y) * ow + xo] = acc as f32;
                }
            }
        }
        out
    }

    fn geo(h: usize, w: usize, pads: [usize; 4]) -> Geo3 {
        let attrs = SpatialAttrs {
            pads: Some(pads.to_vec()),
            ..SpatialAttrs::default()
        };
        attrs
            .resolve(&[h, w], &[3, 3], false)
            .and_then(|g| g.geo3())
            .expect("a valid geometry")
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[derive(Debug)]
    struct Negate;
    impl crate::kernels::gemm::TileEpilogue for Negate {
        fn apply(&self, _row: usize, _col: usize, out: &mut [f32]) {
            out.iter_mut().for_each(|v| *v = -*v);
        }
    }

    #[test]
    fn applies_bias_sum_clamp_and_custom_in_rows_ldc_apart() {
        let (c, m, h, w) = (4, 3, 5, 6);
        let g = geo(h, w, [1, 1, 1, 1]);
        let osz = g.out_size();
        let ldc = osz + 7;
        let x = values(c * h * w, 3);
        let wt = values(m * c * 9, 4);
        let bias = [0.5, -0.25, 2.0];
        let sum = values((m - 1) * ldc + osz, 5);
        let weights = WinogradWeights::new(&wt, m, c).expect("packs");
        let mut out = vec![f32::NAN; (m - 1) * ldc + osz];
        let epilogue = Epilogue {
            bias: Some(&bias),
            sum: Some(&sum),
            clamp: Some((-0.5, 0.75)),
            custom: Some(&Negate),
        };
        let ctx = EvalCtx {
            parallel: &ThreeThreads,
            alloc: &HeapTensorAlloc,
        };
        for wide in [false, simd::has_avx512()] {
            out.fill(f32::NAN);
            conv_on(&ctx, &weights, &x, &g, &mut out, ldc, &epilogue, wide).expect("runs");
            let want = naive(&x, &wt, &g, c, m);
            for ch in 0..m {
                for p in 0..osz {
                    let e = -(want[ch * osz + p] + bias[ch] + sum[ch * ldc + p]).clamp(-0.5, 0.75);
                    let a = out[ch * ldc + p];
                    assert!((a - e).abs() < 1e-5, "channel {ch} pixel {p}: {a} vs {e}");
                }
                if ch + 1 < m {
                    assert!(out[ch * ldc + osz..(ch + 1) * ldc]
                        .iter()
                        .all(|v| v.is_nan()));
                }
            }
        }
        let bad = conv(&ctx, &weights, &x[1..], &g, &mut out, ldc, &epilogue);
        assert!(bad.is_err(), "a short input is an error");
    }

    #[test]
    fn matches_the_direct_convolution_on_every_edge_case() {
        let cases = [
            // (channels in, out, height, width, pads top/left/bottom/right)
            (3, 5, 6, 6, [1, 1, 1, 1]),
            (4, 7, 7, 7, [1, 1, 1, 1]),
            (2, 3, 5, 9, [0, 0, 0, 0]),
            (5, 4, 1, 1, [1, 1, 1, 1]),
            (3, 2, 2, 3, [1, 1, 1, 1]),
            (6, 13, 9, 4, [0, 1, 1, 0]),
            (2, 2, 4, 40, [2, 2, 2, 2]),
            (17, 33, 14, 14, [1, 1, 1, 1]),
            (3, 3, 3, 3, [0, 0, 0, 0]),
            // An empty image whose padding still gives an output.
            (2, 3, 0, 4, [2, 1, 1, 1]),
            // Blocks of tile rows: one per thread (3 threads), and two by the cache budget.
            (3, 5, 30, 30, [1, 1, 1, 1]),
            (8, 8, 100, 99, [1, 1, 1, 1]),
        ];
        let paths = [false, simd::has_avx512()];
        for (threads, wide) in [false, true]
            .into_iter()
            .flat_map(|t| paths.map(|w| (t, w)))
        {
            for &(c, m, h, w, pads) in &cases {
                let g = geo(h, w, pads);
                let x = values(c * h * w, 1);
                let wt = values(m * c * 9, 2);
                let weights = WinogradWeights::new(&wt, m, c).expect("packs");
                let osz = g.out_size();
                let mut out = vec![f32::NAN; m * osz];
                let ctx = EvalCtx {
                    parallel: if threads {
                        &ThreeThreads
                    } else {
                        &SerialParallelFor
                    },
                    alloc: &HeapTensorAlloc,
                };
                conv_on(
                    &ctx,
                    &weights,
                    &x,
                    &g,
                    &mut out,
                    osz,
                    &Epilogue::default(),
                    wide,
                )
                .expect("runs");
                let want = naive(&x, &wt, &g, c, m);
                for (i, (a, e)) in out.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (c as f32 * 9.0).sqrt() + 1e-5 * e.abs();
                    assert!(
                        (a - e).abs() <= tol,
                        "{c}->{m} on {h}x{w} pads {pads:?}: [{i}] {a} vs {e}"
                    );
                }
            }
        }
    }
}
