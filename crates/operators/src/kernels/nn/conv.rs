//! `Conv` and `ConvTranspose` for 1-D, 2-D and 3-D inputs.
//!
//! Conv picks one of five paths per call:
//! - Winograd F(2x2, 3x3) ([`winograd`]) for 2-D 3x3 stride-1 convolutions whose f32 weights
//!   the prepacking pass transformed ([`Conv::takes_winograd`]): 16 GEMMs of the transformed
//!   weights by the transformed input tiles, bias, fused sum and activation applied as the
//!   output transform writes each row;
//! - prepacked (f32 weights packed once by the graph's prepacking pass, [`PackedConvWeights`]):
//!   one GEMM per (batch item, group) whose B panels are packed straight from the input
//!   (implicit im2col, [`Im2colPanels`], or shifted windows of a padded copy, or of the
//!   input's planes between zero rows with edge taps for weights packed by width tap,
//!   [`EdgeWindows`]; the input itself for a pointwise 1x1 conv, its gathered pixels for a
//!   strided one), with
//!   bias, fused sum and activation applied to each output tile while it is in cache, split
//!   over the threads by output pixels;
//! - direct depthwise (one input channel per group): f32 on AVX-512 with one output channel
//!   per input channel row by row through a ring of padded input rows ([`row_depthwise`],
//!   large planes) or 16 channels at a time ([`depthwise_blocked`], small planes and the
//!   geometries the row kernel does not take), else plane by plane ([`depthwise`]);
//! - pointwise (1x1, stride 1, no padding: GEMM directly on the input) and
//! - the general im2col + GEMM, for weights that are not constant or not f32. Work is split
//!   over (batch, group) tasks, or over output channel blocks and im2col rows when there are
//!   fewer tasks than threads.
//!
//! ConvTranspose is GEMM + col2im.

use super::winograd::{self, WinogradWeights};
use super::{concrete, depthwise, depthwise_blocked, row_depthwise, AutoPad, Geo3, SpatialAttrs};
use crate::kernels::fused::{fused_label, ActFloat, Activation};
use crate::kernels::gemm::{
    edge_windows_pay, par_gemm_packed_rows, BOperand, EdgeTaps, Epilogue, PackPanels, PackedA,
    ShiftedB, TileEpilogue, EDGE_TAPS,
};
use crate::kernels::linalg::{eval_via_f32, gemm, par_gemm, ErrorSlot, Float, MatMut, MatRef};
use crate::kernels::shape::materialize;
use crate::kernels::simd;
use crate::{
    op_boilerplate, BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator,
    ShapeCache, Value,
};
use smallvec::SmallVec;
use std::sync::Arc;
use strata_tensor::{DType, Tensor};

/// Registers `Conv` and `ConvTranspose`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "Conv", 1, build_conv);
    registry.register("", "ConvTranspose", 1, build_conv_transpose);
}

fn parse_group(ctx: &BuildCtx<'_>) -> OpResult<usize> {
    let g = ctx.attrs.int_or("group", 1)?;
    usize::try_from(g)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| OpError::attribute("group", format!("must be positive, got {g}")))
}

fn build_conv(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    Ok(Box::new(Conv {
        spatial: SpatialAttrs::parse(ctx.attrs)?,
        group: parse_group(ctx)?,
        activation: None,
        fused_sum: false,
        output_shuffle: None,
        prepacked: None,
        plans: ShapeCache::default(),
    }))
}

/// Tap range along one axis: source positions `i` in `[lo, hi)` (of `n_src`) for which
/// `i * s + off - pad` lands inside `[0, n_dst)`.
#[inline]
fn tap_range(n_src: usize, n_dst: usize, s: usize, off: usize, pad: isize) -> (usize, usize) {
    let shift = off as isize - pad;
    let lo = if shift >= 0 {
        0
    } else {
        ((-shift) as usize).div_ceil(s)
    };
    let last = n_dst as isize - 1 - shift;
    let hi = if last < 0 {
        0
    } else {
        (last as usize / s + 1).min(n_src)
    };
    (lo.min(hi), hi)
}

// ----- Conv ---------------------------------------------------------------------------------

/// `Conv` (opsets 1, 11, 22): N-D grouped, strided, dilated, padded convolution.
#[derive(Debug, Clone)]
pub struct Conv {
    /// Kernel, strides, dilations, pads, auto_pad.
    pub spatial: SpatialAttrs,
    /// Number of groups.
    pub group: usize,
    /// Activation applied to each output block (set by the fusion passes; `None` for a node
    /// straight from ONNX).
    pub activation: Option<Activation>,
    /// Whether input 3 is a tensor of the output's shape added to the output before the
    /// activation (a fused residual `Add`; set by the fusion passes).
    pub fused_sum: bool,
    /// A channel shuffle of the output in `s` groups (set by the fusion passes; `None` for
    /// a node straight from ONNX): output channel `i * (M / s) + j` is stored as channel
    /// `j * s + i`, what ShuffleNet's Reshape `[N, s, M / s, ...]`, Transpose and Reshape
    /// back compute. Where the output is written by one GEMM per group and `s` divides the
    /// groups, each group's rows go straight to their shuffled places; otherwise the
    /// output is shuffled after.
    pub output_shuffle: Option<usize>,
    /// The constant weights, packed for the GEMM kernel (set by the prepacking pass, which
    /// then disconnects input 1; `None` for a node straight from ONNX).
    pub prepacked: Option<Arc<PackedConvWeights>>,
    /// The [`ConvPlan`] of the last input, weight and bias shapes.
    pub plans: ShapeCache<ConvPlan>,
}

impl Conv {
    /// A label for the fused op, such as `Conv+Add+Relu`.
    pub fn label(&self) -> String {
        let label = fused_label("Conv", self.fused_sum, self.activation.as_ref());
        match self.output_shuffle {
            Some(_) => label + "+ChannelShuffle",
            None => label,
        }
    }

    /// The weights' shape: the prepacked one, or input 1's when its shape is known.
    fn weight_shape(&self, inputs: &[Fact]) -> Option<Vec<usize>> {
        match &self.prepacked {
            Some(p) => Some(p.shape.clone()),
            None => concrete(inputs, 1),
        }
    }
}

/// A convolution's f32 weights packed once for the GEMM kernel: one packed matrix per group
/// (`M / group` output channels by `C / group * kernel size`), and the weights' shape.
pub struct PackedConvWeights {
    shape: Vec<usize>,
    groups: Vec<PackedA>,
    /// Whether each group's columns are ordered by kernel column, then input channel, then
    /// kernel row (for [`EdgeWindows`]), rather than by channel, row, column.
    by_width_tap: bool,
    /// For a convolution computed by [`winograd`]: its transformed weights (and no `groups`).
    winograd: Option<WinogradWeights>,
}

impl std::fmt::Debug for PackedConvWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConvWeights")
            .field("shape", &self.shape)
            .field("groups", &self.groups.len())
            .field("winograd", &self.winograd.is_some())
            .finish()
    }
}

impl PackedConvWeights {
    /// Bytes the packed weights take.
    pub fn bytes(&self) -> usize {
        let groups: usize = self.groups.iter().map(PackedA::bytes).sum();
        groups + self.winograd.as_ref().map_or(0, WinogradWeights::bytes)
    }

    /// Packs `w` (f32, `[M, C / group, k...]`) for a convolution with `group` groups.
    pub fn new(w: &Tensor, group: usize) -> OpResult<Self> {
        Self::pack(w, group, Layout::Rows)
    }

    /// Packs `w` for `conv` with input shape `x` where known: transformed for [`winograd`]
    /// where that pays ([`Conv::takes_winograd`]), by width tap where it reads its input
    /// through [`EdgeWindows`] ([`Conv::packs_by_width_tap`]), else as
    /// [`PackedConvWeights::new`].
    pub fn for_conv(conv: &Conv, w: &Tensor, x: Option<&[usize]>) -> OpResult<Self> {
        let layout = if conv.takes_winograd(w.shape(), x) {
            Layout::Winograd
        } else if conv.packs_by_width_tap(w.shape(), x) {
            Layout::ByWidthTap
        } else {
            Layout::Rows
        };
        Self::pack(w, conv.group, layout)
    }

    fn pack(w: &Tensor, group: usize, layout: Layout) -> OpResult<Self> {
        let shape = w.shape().to_vec();
        if w.dtype() != DType::F32
            || shape.len() < 3
            || group == 0
            || !shape[0].is_multiple_of(group)
        {
            return Err(OpError::invalid(
                1,
                format!(
                    "cannot prepack {} weights of shape {shape:?} for {group} groups",
                    w.dtype()
                ),
            ));
        }
        let w = w.contiguous();
        let wv = w.as_slice::<f32>()?;
        if layout == Layout::Winograd && group == 1 && shape[2..] == [3, 3] {
            return Ok(PackedConvWeights {
                winograd: Some(WinogradWeights::new(wv, shape[0], shape[1])?),
                shape,
                groups: Vec::new(),
                by_width_tap: false,
            });
        }
        let mg = shape[0] / group;
        let cols = shape[1..].iter().product::<usize>();
        let by_width_tap =
            layout == Layout::ByWidthTap && shape.len() == 4 && shape[3] == EDGE_TAPS;
        let mut reordered = Vec::new();
        let groups = (0..group)
            .map(|gi| {
                let mut matrix = &wv[gi * mg * cols..][..mg * cols];
                if by_width_tap {
                    by_width_tap_order(matrix, shape[1], shape[2], &mut reordered);
                    matrix = &reordered;
                }
                PackedA::new(MatRef::row_major(matrix, mg, cols))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PackedConvWeights {
            shape,
            groups,
            by_width_tap,
            winograd: None,
        })
    }

    /// The weights' shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// How [`PackedConvWeights`] lays out the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One packed matrix per group, columns by channel, kernel row, kernel column.
    Rows,
    /// As `Rows`, columns by kernel column, channel, kernel row ([`EdgeWindows`]).
    ByWidthTap,
    /// Transformed for [`winograd`].
    Winograd,
}

/// Everything one Conv evaluation needs to know about shapes (validated), computed once per
/// input, weight and bias shapes.
#[derive(Debug, Clone)]
pub struct ConvPlan {
    n: usize,
    c: usize,
    m: usize,
    g3: Geo3,
    out_shape: Vec<usize>,
    /// For a 2-D kernel larger than 1x1: the padded input's layout and, per im2col row of
    /// one group, where it starts in the padded planes (a [`ShiftedB`]'s offsets).
    padded: Option<(depthwise::TapStarts, Vec<usize>)>,
    /// For a pointwise convolution: where each input channel of one group starts (the input
    /// read in place as [`ShiftedB`] windows of one row, where that pays).
    channel_starts: Vec<usize>,
    /// For a 2-D stride-1 convolution that keeps the image's width: its im2col matrix as
    /// windows of image-wide rows with edge taps ([`EdgeWindows`]).
    edges: Option<EdgeWindows>,
}

/// A 2-D stride-1 convolution whose output is as wide as its input, seen as a [`ShiftedB`]
/// with [`EdgeTaps`]: each input plane is copied whole between zero rows (the top and
/// bottom padding) and a few zeros before and after (the left and right padding, which the
/// edge masks read as zero), so output pixel `j = y * w + x` reads im2col row `(c, kh, kw)`
/// at `offsets[row] + j`. No columns are computed and thrown away, unlike windows of a
/// padded copy, whose rows are wider than the output by the padding.
#[derive(Debug, Clone)]
struct EdgeWindows {
    /// Zeros before a plane's image: the left padding, then the top padding's rows.
    lead: usize,
    /// Zeros after it: the bottom padding's rows, then the right padding.
    trail: usize,
    /// Where each im2col row of one group starts for output pixel 0.
    offsets: Vec<usize>,
    /// The width taps' column shifts.
    edges: EdgeTaps,
}

/// Reorders the rows of `weights` (`[rows, channels, kernel rows, EDGE_TAPS]`) by kernel
/// column, then channel, then kernel row, into `out`.
fn by_width_tap_order(weights: &[f32], channels: usize, kh_n: usize, out: &mut Vec<f32>) {
    out.clear();
    for row in weights.chunks_exact(channels * kh_n * EDGE_TAPS) {
        for kw in 0..EDGE_TAPS {
            for c in 0..channels {
                for kh in 0..kh_n {
                    out.push(row[(c * kh_n + kh) * EDGE_TAPS + kw]);
                }
            }
        }
    }
}

impl Conv {
    /// Whether this convolution's f32 weights of shape `w` are packed by width tap, to be
    /// read with [`EdgeWindows`]: a 2-D stride-1 convolution with 3-wide windows whose
    /// padding keeps the image's width, where [`edge_windows_pay`] says so (for input shape
    /// `x` where known, else a wide image). Measured against the padded copy's windows, 1
    /// thread: 3x3s on 27x27, 28x28 and 13x13 images ran 4-7% faster in place, on 14x14 and
    /// 7x7 ones 2-7% faster packed.
    pub fn packs_by_width_tap(&self, w: &[usize], x: Option<&[usize]>) -> bool {
        let &[m, channels, kh_n, EDGE_TAPS] = w else {
            return false;
        };
        let s = &self.spatial;
        let stride_one = s.strides.as_ref().is_none_or(|v| v.iter().all(|&x| x == 1));
        let dw = s
            .dilations
            .as_ref()
            .and_then(|d| d.get(1).copied())
            .unwrap_or(1);
        let keeps_width = match s.auto_pad.unwrap_or(AutoPad::NotSet) {
            AutoPad::SameUpper | AutoPad::SameLower => true,
            AutoPad::NotSet => s
                .pads
                .as_ref()
                .is_some_and(|p| p.len() == 4 && p[1] + p[3] == (EDGE_TAPS - 1) * dw),
            AutoPad::Valid => false,
        };
        // Without the input's shape, a wide image.
        let width = match x {
            Some(&[_, _, _, w]) => w,
            _ => 1 << 12,
        };
        let k = channels * kh_n * EDGE_TAPS;
        let rows = m / self.group.max(1);
        stride_one && keeps_width && edge_windows_pay(rows, k, width, (EDGE_TAPS - 1) * dw)
    }
}

impl Conv {
    /// Whether this convolution's f32 weights of shape `w` are transformed for [`winograd`]
    /// (for input shape `x` where known): a 2-D 3x3 stride-1 undilated convolution in one
    /// group with enough channels each way, and (where the input's size is known) enough
    /// work per transformed tile, that its 16 GEMMs outweigh the transforms; on CPUs with
    /// AVX-512, whose transforms are written in its intrinsics (the portable ones, as the
    /// compiler vectorizes them, cost more than they save).
    ///
    /// Measured one conv at a time against the direct path, 1 thread (2 threads): 64->64 on
    /// 56x56 2.28 -> 1.40 ms (1.15 -> 0.81), 128->128 on 28x28 2.19 -> 1.22 (1.12 -> 0.65),
    /// 256->256 on 14x14 2.21 -> 1.19 (1.14 -> 0.64), 512->512 on 7x7 2.54 -> 1.77 (1.29 ->
    /// 0.85); DenseNet-121's 128->32 on 7x7 lost 25% (0.038 -> 0.050 ms at 2 threads), on
    /// 14x14 gained 15%.
    pub fn takes_winograd(&self, w: &[usize], x: Option<&[usize]>) -> bool {
        let &[m, c, 3, 3] = w else {
            return false;
        };
        let s = &self.spatial;
        let ones = |v: &Option<Vec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&x| x == 1));
        let work_per_tile = |x: &[usize]| match *x {
            [_, _, h, w] => {
                let tiles = h.div_ceil(2).saturating_mul(w.div_ceil(2));
                m.saturating_mul(c).saturating_mul(tiles) >= WINOGRAD_MIN_WORK
            }
            _ => false,
        };
        simd::has_avx512()
            && self.group == 1
            && ones(&s.strides)
            && ones(&s.dilations)
            && c >= WINOGRAD_MIN_CHANNELS
            && m >= WINOGRAD_MIN_CHANNELS
            && x.is_none_or(work_per_tile)
    }
}

/// Fewest input and output channels for [`Conv::takes_winograd`] (SqueezeNet's 16->64 on
/// 55x55 gains).
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Least output channels x input channels x tiles for [`Conv::takes_winograd`].
const WINOGRAD_MIN_WORK: usize = 1 << 17;

impl ConvPlan {
    /// The output's shape.
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }
}

impl EdgeWindows {
    fn plan(g: &Geo3, channels: usize) -> Option<Self> {
        let ([id, ih, iw], [kd, kh_n, kw_n], [od, oh, ow]) = (g.input, g.kernel, g.output);
        let ([_, dh, dw], [_, pt, pl], [_, pb, pr]) = (g.dilations, g.pad_begin, g.pad_end);
        let flat = id == 1 && kd == 1 && od == 1 && g.strides == [1; 3];
        if !flat || ow != iw || kw_n != EDGE_TAPS {
            return None;
        }
        let plane = pl + (pt + ih + pb) * iw + pr;
        // Padded rows `y + kh * dh` must exist for every output row.
        if oh + (kh_n - 1) * dh > pt + ih + pb {
            return None;
        }
        // Rows by kernel column, then channel, then kernel row (the weights are packed so).
        let mut offsets = Vec::with_capacity(channels * kh_n * kw_n);
        for kw in 0..kw_n {
            for c in 0..channels {
                for kh in 0..kh_n {
                    offsets.push(c * plane + kh * dh * iw + kw * dw);
                }
            }
        }
        let edges = EdgeTaps {
            shift: [0, 1, 2].map(|kw| (kw * dw) as isize - pl as isize),
            segment: channels * kh_n,
        };
        Some(EdgeWindows {
            lead: pl + pt * iw,
            trail: pb * iw + pr,
            offsets,
            edges,
        })
    }

    /// Copies `channels` planes of `x` (`size` values each) into `out` between their zeros;
    /// large inputs split by planes over `ctx`'s threads.
    fn fill(&self, ctx: &EvalCtx<'_>, x: &[f32], size: usize, channels: usize, out: &mut Vec<f32>) {
        let (lead, trail) = (self.lead, self.trail);
        let stride = lead + size + trail;
        if size == 0 {
            out.clear();
            out.resize(channels * stride, 0.0);
            return;
        }
        let planes = channels.min(x.len() / size);
        if out.len() != planes * stride {
            out.clear();
            out.resize(planes * stride, 0.0);
        }
        depthwise::by_plane_ranges(ctx, x, size, out, stride, |src, dst| {
            for (dst, src) in dst.chunks_exact_mut(stride).zip(src.chunks_exact(size)) {
                dst[..lead].fill(0.0);
                dst[lead..lead + size].copy_from_slice(src);
                dst[lead + size..].fill(0.0);
            }
        });
    }
}

impl Conv {
    /// [`Conv::plan`] through the cache: the shapes, joined, are the key.
    fn cached_plan(
        &self,
        x: &[usize],
        w: &[usize],
        b: Option<&[usize]>,
    ) -> OpResult<Arc<ConvPlan>> {
        let mut key: SmallVec<[usize; 16]> = SmallVec::new();
        key.extend_from_slice(x);
        key.push(usize::MAX);
        key.extend_from_slice(w);
        if let Some(b) = b {
            key.push(usize::MAX);
            key.extend_from_slice(b);
        }
        self.plans.get_or_try_insert(&key, || self.plan(x, w, b))
    }

    fn plan(&self, x: &[usize], w: &[usize], b: Option<&[usize]>) -> OpResult<ConvPlan> {
        if x.len() < 3 {
            return Err(OpError::invalid(
                0,
                format!("Conv input must have rank >= 3, got shape {x:?}"),
            ));
        }
        if w.len() != x.len() {
            return Err(OpError::invalid(
                1,
                format!("weights of shape {w:?} do not match input rank {}", x.len()),
            ));
        }
        let (n, c, m) = (x[0], x[1], w[0]);
        let g = self.group;
        if c != w[1] * g || m % g != 0 {
            return Err(OpError::invalid(
                1,
                format!("weights {w:?} do not fit input channels {c} with group {g}"),
            ));
        }
        if let Some(k) = &self.spatial.kernel {
            if k.as_slice() != &w[2..] {
                return Err(OpError::attribute(
                    "kernel_shape",
                    format!("{k:?} differs from the weights' {:?}", &w[2..]),
                ));
            }
        }
        if let Some(b) = b {
            if b != [m] {
                return Err(OpError::invalid(
                    2,
                    format!("bias must have shape [{m}], got {b:?}"),
                ));
            }
        }
        if let Some(s) = self.output_shuffle {
            if s == 0 || m % s != 0 {
                return Err(OpError::attribute(
                    "output_shuffle",
                    format!("{s} shuffle groups do not divide {m} output channels"),
                ));
            }
        }
        let geo = self.spatial.resolve(&x[2..], &w[2..], false)?;
        let mut out_shape = vec![n, m];
        out_shape.extend_from_slice(&geo.output);
        let g3 = geo.geo3()?;
        let pointwise = is_pointwise(&g3);
        let padded = (!pointwise)
            .then(|| depthwise::tap_starts(&g3, 0, true))
            .flatten()
            .map(|taps| (taps, im2col_row_starts(&g3, &taps, c / g)));
        let channel_starts = match pointwise {
            true => (0..c / g).map(|ch| ch * g3.in_size()).collect(),
            false => Vec::new(),
        };
        // Cached with the shapes (whether the weights are packed so is not part of the key).
        let edges = EdgeWindows::plan(&g3, c / g);
        Ok(ConvPlan {
            n,
            c,
            m,
            g3,
            out_shape,
            padded,
            channel_starts,
            edges,
        })
    }

    fn run<F: ActFloat>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Tensor> {
        let (x, w) = (
            inputs.tensor(0)?.contiguous(),
            inputs.tensor(1)?.contiguous(),
        );
        let bias = inputs.opt_tensor(2)?.map(Tensor::contiguous);
        let p = self.cached_plan(x.shape(), w.shape(), bias.as_ref().map(Tensor::shape))?;
        let sum = self.sum_input(inputs, &p.out_shape)?;
        // Every output element is written below (initialized rows, or GEMM with beta 0 over
        // a non-empty inner dimension), so a reused buffer need not be zeroed first.
        let mut out = if p.c > 0 {
            ctx.alloc_for_overwrite(F::DTYPE, &p.out_shape)?
        } else {
            ctx.alloc(F::DTYPE, &p.out_shape)?
        };
        let o = out.as_slice_mut::<F>()?;
        if o.is_empty() {
            return Ok(out);
        }
        let (xv, wv) = (x.as_slice::<F>()?, w.as_slice::<F>()?);
        let bv = bias.as_ref().map(Tensor::as_slice::<F>).transpose()?;
        let sv = sum.as_ref().map(Tensor::as_slice::<F>).transpose()?;
        let g = self.group;
        let (cg, mg) = (p.c / g, p.m / g);
        let (isz, osz, ksz) = (p.g3.in_size(), p.g3.out_size(), p.g3.kernel_size());
        let geo = &p.g3;
        // Output rows `first_row..` (one row per output channel of one batch item) start as
        // the fused sum plus the bias; returns whether anything was written (GEMM's beta).
        let init_rows = |block: &mut [F], first_row: usize| -> bool {
            if let Some(sv) = sv {
                block.copy_from_slice(&sv[first_row * osz..][..block.len()]);
            }
            match bv {
                Some(bv) => {
                    for (r, row) in block.chunks_mut(osz).enumerate() {
                        let b = bv[(first_row + r) % p.m];
                        if sv.is_some() {
                            row.iter_mut().for_each(|v| *v += b);
                        } else {
                            row.fill(b);
                        }
                    }
                    true
                }
                None => sv.is_some(),
            }
        };
        let activate = |block: &mut [F]| {
            if let Some(act) = &self.activation {
                act.apply(block);
            }
        };

        let operands = Operands {
            x: xv,
            w: wv,
            bias: bv,
            sum: sv,
        };
        if cg == 1
            && mg == 1
            && (self.run_row_depthwise(ctx, &p, &operands, o)
                || self.run_blocked_depthwise(ctx, &p, &operands, o))
        {
            // Activations other than a clamp go over the whole output after the kernel.
            if self
                .activation
                .as_ref()
                .is_some_and(|a| clamp_of(a).is_none())
            {
                let planes_per = (p.n * p.m).div_ceil(ctx.threads() * 2).max(1);
                ctx.par_chunks_mut(o, planes_per * osz, |_, planes| activate(planes));
            }
            return Ok(out);
        }
        if cg == 1 {
            // Direct depthwise: one output plane per task; a fused Relu or Clip is applied
            // in the kernel's store where it can.
            let clamp = self.activation.as_ref().and_then(clamp_of);
            let planes_per = (p.n * p.m).div_ceil(ctx.threads() * 4).max(1);
            ctx.par_chunks_mut(o, planes_per * osz, |ci, chunk| {
                depthwise::Scratch::with_thread_local(|scratch| {
                    for (j, plane) in chunk.chunks_mut(osz).enumerate() {
                        let idx = ci * planes_per + j;
                        let (b, m) = (idx / p.m, idx % p.m);
                        let xc = &xv[(b * p.c + m / mg) * isz..][..isz];
                        if !init_rows(plane, idx) {
                            plane.fill(F::ZERO);
                        }
                        let wm = &wv[m * ksz..][..ksz];
                        let clamped = simd::wide(
                            #[inline(always)]
                            || depthwise::plane(xc, wm, geo, scratch, plane, clamp),
                        );
                        if !clamped {
                            activate(plane);
                        }
                    }
                });
            });
            return Ok(out);
        }

        let pointwise = is_pointwise(geo);
        let krows = cg * ksz;
        let group_task = |t: usize,
                          out_g: &mut [F],
                          col: &mut Vec<F>,
                          inner: Option<&EvalCtx<'_>>|
         -> OpResult<()> {
            let (b, gi) = (t / g, t % g);
            let xg = &xv[(b * p.c + gi * cg) * isz..][..cg * isz];
            let wg = MatRef::row_major(&wv[gi * mg * krows..][..mg * krows], mg, krows);
            let beta = if init_rows(out_g, b * p.m + gi * mg) {
                F::ONE
            } else {
                F::ZERO
            };
            let colm = if pointwise {
                MatRef::row_major(xg, cg, isz)
            } else {
                col.resize(krows * osz, F::ZERO);
                match inner {
                    Some(ctx) => ctx.par_chunks_mut(col, ksz * osz, |c, rows| {
                        im2col_channel(&xg[c * isz..][..isz], geo, rows)
                    }),
                    None => col
                        .chunks_mut(ksz * osz)
                        .enumerate()
                        .for_each(|(c, rows)| im2col_channel(&xg[c * isz..][..isz], geo, rows)),
                }
                MatRef::row_major(col.as_slice(), krows, osz)
            };
            match inner {
                Some(ctx) => par_gemm(ctx, F::ONE, wg, colm, beta, out_g)?,
                None => gemm(F::ONE, wg, colm, beta, MatMut::row_major(out_g, mg, osz))?,
            }
            activate(out_g);
            Ok(())
        };
        run_group_tasks(ctx, o, mg * osz, group_task)?;
        Ok(out)
    }

    /// A depthwise convolution (one input channel per output channel) of f32 planes of at
    /// least [`ROW_DEPTHWISE_MIN_INPUT`] values through [`row_depthwise`], a chunk of planes
    /// per task; returns false, with `o` untouched,
    /// where that does not apply. A fused clamp is applied; any other activation is the
    /// caller's.
    fn run_row_depthwise<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        p: &ConvPlan,
        operands: &Operands<'_, F>,
        o: &mut [F],
    ) -> bool {
        let geo = &p.g3;
        let (isz, osz) = (geo.in_size(), geo.out_size());
        // Small planes run faster channel-blocked (measured on MobileNetV2: 7x7 planes take
        // twice as long row by row, 14x14 ones about as long; 28x28 ones gain here).
        if isz < ROW_DEPTHWISE_MIN_INPUT || p.c != p.m || !row_depthwise::applies(geo) {
            return false;
        }
        let (Some(Operands { x, w, bias, sum }), Some(o)) = (operands.as_f32(), F::as_f32s_mut(o))
        else {
            return false;
        };
        let clamp = self.activation.as_ref().and_then(clamp_of);
        let planes_per = (p.n * p.m).div_ceil(ctx.threads() * 4).max(1);
        ctx.par_chunks_mut(o, planes_per * osz, |ci, out| {
            let first = ci * planes_per;
            let n = out.len() / osz;
            let planes = row_depthwise::Planes {
                x: &x[first * isz..][..n * isz],
                w,
                bias,
                sum: sum.map(|s| &s[first * osz..][..n * osz]),
                out,
                first_channel: first % p.c,
                channels: p.c,
            };
            // Applies for every chunk once it applies for the geometry.
            let ran = row_depthwise::planes(planes, geo, clamp);
            debug_assert!(ran);
        });
        true
    }

    /// A depthwise convolution (one input channel per output channel) of f32 planes through
    /// [`depthwise_blocked`], 16 channels per task; returns false, with `o` untouched, where
    /// that does not apply. A fused clamp is applied; any other activation is the caller's.
    fn run_blocked_depthwise<F: Float>(
        &self,
        ctx: &EvalCtx<'_>,
        p: &ConvPlan,
        operands: &Operands<'_, F>,
        o: &mut [F],
    ) -> bool {
        use depthwise_blocked::BLOCK;
        let geo = &p.g3;
        let (isz, osz, ksz) = (geo.in_size(), geo.out_size(), geo.kernel_size());
        // Blocks must not straddle batch items.
        if p.c != p.m
            || !(p.n == 1 || p.c.is_multiple_of(BLOCK))
            || !depthwise_blocked::applies(geo)
        {
            return false;
        }
        let (Some(Operands { x, w, bias, sum }), Some(o)) = (operands.as_f32(), F::as_f32s_mut(o))
        else {
            return false;
        };
        let clamp = self.activation.as_ref().and_then(clamp_of);
        depthwise_blocked::par_blocks(ctx, o, osz, |first, planes, scratch| {
            // The block's first plane (batch item and channel) and its channels.
            let channel = first % p.c;
            let channels = planes.len() / osz;
            let block = depthwise_blocked::Block {
                x: &x[first * isz..][..channels * isz],
                w: &w[channel * ksz..][..channels * ksz],
                bias: bias.map(|b| &b[channel..][..channels]),
                sum: sum.map(|s| &s[first * osz..][..channels * osz]),
                out: planes,
                channels,
            };
            // Applies for every block once it applies for the geometry.
            let ran = depthwise_blocked::run(block, geo, clamp, scratch);
            debug_assert!(ran);
        });
        true
    }

    /// The fused sum input (input 3), which must have the output's shape.
    fn sum_input(&self, inputs: &Inputs, out_shape: &[usize]) -> OpResult<Option<Tensor>> {
        if !self.fused_sum {
            return Ok(None);
        }
        let s = inputs.tensor(3)?;
        if s.shape() != out_shape {
            return Err(OpError::invalid(
                3,
                format!(
                    "fused sum has shape {:?}, the output {out_shape:?}",
                    s.shape()
                ),
            ));
        }
        Ok(Some(s.contiguous()))
    }
}

impl Conv {
    /// The prepacked path: per (batch item, group) one GEMM of the packed weights by the
    /// input's implicit im2col (the input itself when pointwise), bias, fused sum and
    /// activation applied tile by tile.
    fn run_prepacked(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        packed: &PackedConvWeights,
    ) -> OpResult<(Tensor, bool)> {
        let plan = self.plan_for(inputs)?;
        let mut out = ctx.alloc_for_overwrite(DType::F32, &plan.out_shape)?;
        let dst = OutputChannels {
            out: out.as_slice_mut::<f32>()?,
            channels: plan.m,
            first: 0,
        };
        let shuffled = self.prepacked_into(ctx, inputs, packed, dst)?;
        Ok((out, shuffled))
    }

    /// The plan for `inputs` (validated, cached).
    pub fn plan_for(&self, inputs: &Inputs) -> OpResult<Arc<ConvPlan>> {
        let x = inputs.tensor(0)?;
        let w = match &self.prepacked {
            Some(p) => &p.shape[..],
            None => inputs.tensor(1)?.shape(),
        };
        let bias = inputs.opt_tensor(2)?.map(Tensor::shape);
        self.cached_plan(x.shape(), w, bias)
    }

    /// The prepacked convolution of `inputs` written into `dst`'s channels; returns whether
    /// its channels were written shuffled (as [`Conv::output_shuffle`] says).
    pub(crate) fn prepacked_into(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        packed: &PackedConvWeights,
        dst: OutputChannels<'_>,
    ) -> OpResult<bool> {
        let x = inputs.tensor(0)?.contiguous();
        let bias = inputs.opt_tensor(2)?.map(Tensor::contiguous);
        let p = self.cached_plan(x.shape(), &packed.shape, bias.as_ref().map(Tensor::shape))?;
        let sum = self.sum_input(inputs, &p.out_shape)?;
        let g = self.group;
        let (cg, mg) = (p.c / g, p.m / g);
        let (isz, osz) = (p.g3.in_size(), p.g3.out_size());
        // Each output element is written by the GEMM (K = cg * kernel size >= 1) or, for an
        // empty K, zero-filled by it.
        let packed_groups = match packed.winograd {
            Some(_) => 1,
            None => packed.groups.len(),
        };
        if packed_groups != g {
            return Err(OpError::attribute(
                "group",
                format!("{g} differs from the {packed_groups} packed weight groups"),
            ));
        }
        if packed.winograd.is_some() && !winograd::applies(&p.g3) {
            return Err(OpError::invalid(
                0,
                format!(
                    "weights transformed for a 2-D 3x3 stride-1 convolution, but input {:?} \
                     gives output {:?}",
                    x.shape(),
                    p.out_shape
                ),
            ));
        }
        let OutputChannels {
            out: o,
            channels,
            first: first_out,
        } = dst;
        let fits = first_out + p.m <= channels
            && Some(o.len()) == p.n.checked_mul(channels).and_then(|v| v.checked_mul(osz));
        if !fits {
            return Err(OpError::invalid(
                0,
                format!(
                    "output {:?} does not fit channels {first_out}.. of {} values with {channels} \
                     channels",
                    p.out_shape,
                    o.len()
                ),
            ));
        }
        if o.is_empty() {
            return Ok(false);
        }
        let xv = x.as_slice::<f32>()?;
        let bv = bias.as_ref().map(Tensor::as_slice::<f32>).transpose()?;
        let sv = sum.as_ref().map(Tensor::as_slice::<f32>).transpose()?;
        let geo = &p.g3;
        let pointwise = is_pointwise(geo);
        // A shuffle whose blocks each hold whole groups: a group's rows go `s` channels
        // apart from the channel its first row is shuffled to (a fused sum, laid out
        // unshuffled, is added before the shuffle instead).
        let shuffle = self
            .output_shuffle
            .filter(|&s| g.is_multiple_of(s) && sv.is_none());
        let place = |first_channel: usize| match shuffle {
            Some(s) => {
                let per = p.m / s;
                ((first_channel % per) * s + first_channel / per, s * osz)
            }
            None => (first_channel, osz),
        };
        for b in 0..p.n {
            for gi in 0..g {
                let first = b * p.m + gi * mg;
                let xg = &xv[(b * p.c + gi * cg) * isz..][..cg * isz];
                let custom = self
                    .activation
                    .filter(|a| clamp_of(a).is_none())
                    .map(ConvActivation);
                let epilogue = Epilogue {
                    bias: bv.map(|bv| &bv[gi * mg..][..mg]),
                    sum: sv.map(|sv| &sv[first * osz..][..mg * osz]),
                    clamp: self.activation.as_ref().and_then(clamp_of),
                    custom: custom.as_ref().map(|c| c as &dyn TileEpilogue),
                };
                let (channel, ldc) = place(gi * mg);
                let start = (b * channels + first_out + channel) * osz;
                let out_g = &mut o[start..][..(mg - 1) * ldc + osz];
                let weights = match (&packed.winograd, packed.groups.get(gi)) {
                    (Some(wino), _) => {
                        winograd::conv(ctx, wino, xg, geo, out_g, ldc, &epilogue)?;
                        continue;
                    }
                    (None, Some(weights)) => weights,
                    (None, None) => {
                        return Err(OpError::attribute(
                            "group",
                            format!("no packed weights for group {gi} of {g}"),
                        ))
                    }
                };
                if is_subsampling(geo) {
                    // A strided 1x1 reads every `stride`-th pixel: gathered once into a
                    // plain matrix (output-sized), then a pointwise product.
                    let done = PADDED_INPUT.with(|cell| {
                        let mut scratch = cell.try_borrow_mut().ok()?;
                        let picked = scratch.vec();
                        subsample(xg, geo, cg, picked);
                        let operand = BOperand::Matrix(MatRef::row_major(picked, cg, osz));
                        Some(par_gemm_packed_rows(
                            ctx, weights, operand, out_g, ldc, &epilogue,
                        ))
                    });
                    if let Some(done) = done {
                        done?;
                        continue;
                    }
                }
                if pointwise {
                    // In place when the GEMM would read it so and the image is large (in
                    // Inception v1 and MobileNetV2, 1x1s on 27x27 and 14x14 images lost 5-20%
                    // in place, those on 56x56 and up gained); else packed as a matrix.
                    let windows = ShiftedB {
                        data: xg,
                        offsets: &p.channel_starts,
                        rows: 1,
                        cols: isz,
                        row_step: isz,
                        edges: None,
                    };
                    let operand = match isz >= 1024 && weights.reads_in_place(&windows) {
                        true => BOperand::Shifted(windows),
                        false => BOperand::Matrix(MatRef::row_major(xg, cg, isz)),
                    };
                    par_gemm_packed_rows(ctx, weights, operand, out_g, ldc, &epilogue)?;
                    continue;
                }
                if packed.by_width_tap {
                    // Weights by width tap: the im2col matrix as windows with edge taps
                    // (read in place, or packed where the GEMM packs).
                    let e = p.edges.as_ref().ok_or_else(|| {
                        OpError::invalid(
                            0,
                            format!(
                                "weights packed for a stride-1 convolution that keeps the \
                                 width, but input {:?} gives output {:?}",
                                x.shape(),
                                p.out_shape
                            ),
                        )
                    })?;
                    let mut run = |data: &mut Vec<f32>| {
                        e.fill(ctx, xg, isz, cg, data);
                        let [_, oh, ow] = geo.output;
                        let windows = ShiftedB {
                            data,
                            offsets: &e.offsets,
                            rows: oh,
                            cols: ow,
                            row_step: ow,
                            edges: Some(e.edges),
                        };
                        let operand = BOperand::Shifted(windows);
                        par_gemm_packed_rows(ctx, weights, operand, out_g, ldc, &epilogue)
                    };
                    // The thread's scratch, or (nested, which does not happen today) a
                    // fresh buffer.
                    let done = PADDED_INPUT.with(|cell| match cell.try_borrow_mut() {
                        Ok(mut scratch) => run(scratch.vec()),
                        Err(_) => run(&mut Vec::new()),
                    });
                    done?;
                    continue;
                }
                // 2-D: the im2col matrix as shifted windows of a padded copy of the input
                // (read in place, or packed as contiguous runs with no edge tests);
                // otherwise panels packed straight from the input.
                let padded = PADDED_INPUT.with(|cell| {
                    let (Ok(mut scratch), Some((planned, starts))) =
                        (cell.try_borrow_mut(), p.padded.as_ref())
                    else {
                        return None;
                    };
                    let taps = depthwise::pad_planes(ctx, xg, geo, cg, 0, true, &mut scratch, 0.0)?;
                    if taps != *planned {
                        return None;
                    }
                    let [_, oh, ow] = geo.output;
                    let windows = ShiftedB {
                        data: scratch.padded(),
                        offsets: starts,
                        rows: oh,
                        cols: ow,
                        row_step: taps.output_row_step(geo.strides[1]),
                        edges: None,
                    };
                    Some(par_gemm_packed_rows(
                        ctx,
                        weights,
                        BOperand::Shifted(windows),
                        out_g,
                        ldc,
                        &epilogue,
                    ))
                });
                match padded {
                    Some(done) => done?,
                    None => {
                        let panels = Im2colPanels {
                            x: xg,
                            geo,
                            channels: cg,
                        };
                        let operand = BOperand::Panels(&panels);
                        par_gemm_packed_rows(ctx, weights, operand, out_g, ldc, &epilogue)?;
                    }
                }
            }
        }
        Ok(shuffle.is_some())
    }
}

/// Where a convolution writes its output: channels `first..first + M` of each batch item of
/// `out`, whose items have `channels` channels (a concatenation's, or the convolution's own).
#[derive(Debug)]
pub(crate) struct OutputChannels<'a> {
    pub(crate) out: &'a mut [f32],
    pub(crate) channels: usize,
    pub(crate) first: usize,
}

/// A convolution's input, weights, bias and fused sum, contiguous.
struct Operands<'a, F> {
    x: &'a [F],
    w: &'a [F],
    bias: Option<&'a [F]>,
    sum: Option<&'a [F]>,
}

impl<'a, F: Float> Operands<'a, F> {
    /// The same operands as f32, when `F` is f32 (the direct depthwise kernels' type).
    fn as_f32(&self) -> Option<Operands<'a, f32>> {
        Some(Operands {
            x: F::as_f32s(self.x)?,
            w: F::as_f32s(self.w)?,
            bias: self.bias.and_then(F::as_f32s),
            sum: self.sum.and_then(F::as_f32s),
        })
    }
}

/// The clamp bounds computing `act`, when it is one (Relu, Clip).
fn clamp_of(act: &Activation) -> Option<(f32, f32)> {
    match *act {
        Activation::Relu => Some((0.0, f32::INFINITY)),
        Activation::Clip { min, max } => Some((min, max)),
        _ => None,
    }
}

/// An activation that is not a clamp, applied to each output tile as the GEMM finishes it.
#[derive(Debug)]
struct ConvActivation(Activation);

impl TileEpilogue for ConvActivation {
    fn apply(&self, _row: usize, _col: usize, out: &mut [f32]) {
        self.0.apply(out);
    }
}

/// The im2col matrix of one group's input (`channels * kernel size` rows by output pixels)
/// as a GEMM B operand that packs its panels straight from the input, so the matrix itself
/// is never written.
#[derive(Debug)]
struct Im2colPanels<'a> {
    /// The group's input channels, each `geo.in_size()` values.
    x: &'a [f32],
    geo: &'a Geo3,
    channels: usize,
}

/// One im2col row: an input channel seen through one kernel tap.
#[derive(Debug, Clone, Copy, Default)]
struct TapRow {
    /// Offset of the channel in the group's input.
    channel: usize,
    /// The tap's offset along each axis (`tap * dilation`).
    off: [usize; 3],
    /// Output positions along each axis that read inside the input.
    valid: [(usize, usize); 3],
}

/// Input plane size (values) from which f32 depthwise convolutions run row by row
/// ([`row_depthwise`]) rather than channel-blocked ([`depthwise_blocked`]).
const ROW_DEPTHWISE_MIN_INPUT: usize = 512;

/// im2col rows described at once by [`Im2colPanels::pack`] (kernel K blocks are smaller).
const TAP_ROWS: usize = 256;

/// A run of output pixels within one output row, inside one B panel.
#[derive(Debug, Clone, Copy, Default)]
struct PixelRun {
    /// Output position (depth, row, first column).
    at: [usize; 3],
    /// Pixels in the run.
    len: usize,
    /// Column of the first pixel within the panel.
    col: usize,
}

impl Im2colPanels<'_> {
    fn tap_row(&self, k: usize) -> TapRow {
        let g = self.geo;
        let ksz = g.kernel_size();
        let (channel, tap) = (k / ksz, k % ksz);
        let [_, kh_n, kw_n] = g.kernel;
        let taps = [tap / (kh_n * kw_n), (tap / kw_n) % kh_n, tap % kw_n];
        TapRow {
            channel: channel * g.in_size(),
            off: std::array::from_fn(|ax| taps[ax] * g.dilations[ax]),
            valid: std::array::from_fn(|ax| g.valid_range(ax, taps[ax])),
        }
    }

    /// Splits panel columns `j..j + cols` (output pixels) into runs along output rows.
    fn pixel_runs(&self, j: usize, cols: usize, runs: &mut [PixelRun]) -> usize {
        let [_, oh, ow] = self.geo.output;
        let mut at = [j / (oh * ow), (j / ow) % oh, j % ow];
        let (mut col, mut count) = (0, 0);
        while col < cols && count < runs.len() {
            let len = (ow - at[2]).min(cols - col);
            runs[count] = PixelRun { at, len, col };
            count += 1;
            col += len;
            at[2] += len;
            if at[2] == ow {
                at[2] = 0;
                at[1] += 1;
                if at[1] == oh {
                    at[1] = 0;
                    at[0] += 1;
                }
            }
        }
        count
    }

    /// Writes the pixels of `run` as seen through `tap` into `dst` (`run.len` values).
    fn fill_run(&self, tap: &TapRow, run: &PixelRun, dst: &mut [f32]) {
        let g = self.geo;
        let [z, y, x0] = run.at;
        let [(d_lo, d_hi), (h_lo, h_hi), (w_lo, w_hi)] = tap.valid;
        if z < d_lo || z >= d_hi || y < h_lo || y >= h_hi {
            dst.fill(0.0);
            return;
        }
        let iz = z * g.strides[0] + tap.off[0] - g.pad_begin[0];
        let iy = y * g.strides[1] + tap.off[1] - g.pad_begin[1];
        let [_, ih, iw] = g.input;
        let src = &self.x[tap.channel + (iz * ih + iy) * iw..][..iw];
        let end = x0 + run.len;
        let (lo, hi) = (w_lo.clamp(x0, end), w_hi.clamp(x0, end));
        dst[..lo - x0].fill(0.0);
        dst[hi - x0..].fill(0.0);
        if lo < hi {
            let sw = g.strides[2];
            let ix = lo * sw + tap.off[2] - g.pad_begin[2];
            let out = &mut dst[lo - x0..hi - x0];
            if sw == 1 {
                // An element loop: runs are at most a panel wide, too short for a memcpy call.
                for (v, &s) in out.iter_mut().zip(&src[ix..]) {
                    *v = s;
                }
            } else {
                for (v, &s) in out.iter_mut().zip(src[ix..].iter().step_by(sw)) {
                    *v = s;
                }
            }
        }
    }
}

impl PackPanels for Im2colPanels<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.channels * self.geo.kernel_size(), self.geo.out_size())
    }

    fn pack(&self, nr: usize, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        let mut taps = [TapRow::default(); TAP_ROWS];
        let mut runs = [PixelRun::default(); 64];
        for t0 in (0..kc).step_by(TAP_ROWS) {
            let rows = TAP_ROWS.min(kc - t0);
            for (r, tap) in taps[..rows].iter_mut().enumerate() {
                *tap = self.tap_row(k0 + t0 + r);
            }
            for (q, panel) in dst.chunks_mut(nr * kc).enumerate() {
                let cols = nr.min(nc - q * nr);
                // Panels are at most 64 columns wide (every kernel's NR is).
                let count = self.pixel_runs(j0 + q * nr, cols, &mut runs);
                for (r, tap) in taps[..rows].iter().enumerate() {
                    let row = &mut panel[(t0 + r) * nr..][..nr];
                    for run in &runs[..count] {
                        self.fill_run(tap, run, &mut row[run.col..][..run.len]);
                    }
                    row[cols..].fill(0.0);
                }
            }
        }
    }
}

thread_local! {
    /// The padded copy of a convolution's input that its [`ShiftedB`] operand reads, kept per thread
    /// so steady-state runs reuse it (its padding is refilled only when the layout changes).
    static PADDED_INPUT: std::cell::RefCell<depthwise::Scratch<f32>> =
        std::cell::RefCell::new(depthwise::Scratch::default());
}

/// Where each im2col row (input channel, then kernel row, then kernel column) of a group of
/// `channels` starts, for output pixel (0, 0), in planes padded as `taps` describes
/// ([`depthwise::pad_planes`]).
fn im2col_row_starts(g: &Geo3, taps: &depthwise::TapStarts, channels: usize) -> Vec<usize> {
    let [_, kh_n, kw_n] = g.kernel;
    let mut starts = Vec::with_capacity(channels * kh_n * kw_n);
    for channel in 0..channels {
        for kh in 0..kh_n {
            for &col in &taps.col_start[..kw_n] {
                starts.push(channel * taps.plane_len + taps.row_start(kh * g.dilations[1]) + col);
            }
        }
    }
    starts
}

/// Whether a convolution is a 1x1 with a stride above 1 and no padding: a pointwise product
/// over every `stride`-th input pixel ([`subsample`]).
fn is_subsampling(g: &Geo3) -> bool {
    g.kernel_size() == 1 && g.strides != [1; 3] && g.pad_begin == [0; 3] && g.pad_end == [0; 3]
}

/// Gathers the input pixels a strided 1x1 convolution reads (pixel `o * stride` for output
/// `o`, per axis) from `channels` planes of `x` into `picked`, one output-sized plane each.
fn subsample(x: &[f32], g: &Geo3, channels: usize, picked: &mut Vec<f32>) {
    let ([_, ih, iw], [od, oh, ow], [sd, sh, sw]) = (g.input, g.output, g.strides);
    picked.clear();
    picked.reserve(channels * g.out_size());
    for plane in x.chunks_exact(g.in_size()).take(channels) {
        for z in 0..od {
            for y in 0..oh {
                let row = &plane[((z * sd) * ih + y * sh) * iw..][..iw];
                picked.extend(row.iter().step_by(sw).take(ow));
            }
        }
    }
}

/// Whether a convolution is a plain 1x1 product over the input (kernel 1, stride 1, no
/// padding, output as large as the input), so the input itself is the GEMM's B.
fn is_pointwise(g: &Geo3) -> bool {
    g.kernel_size() == 1
        && g.strides == [1; 3]
        && g.in_size() == g.out_size()
        && g.pad_begin == [0; 3]
}

/// Runs `task(index, output_block, scratch, inner)` once per `block`-element chunk of `out`
/// (one chunk per batch item and group). With at least as many chunks as threads, chunks are
/// spread over the threads, each with its own scratch; otherwise they run in turn and `inner`
/// hands the context down so each task can parallelize its own GEMM and im2col.
fn run_group_tasks<F: Float>(
    ctx: &EvalCtx<'_>,
    out: &mut [F],
    block: usize,
    task: impl Fn(usize, &mut [F], &mut Vec<F>, Option<&EvalCtx<'_>>) -> OpResult<()> + Sync,
) -> OpResult<()> {
    let threads = ctx.threads();
    let tasks = out.len() / block.max(1);
    if threads > 1 && tasks >= threads {
        let per = tasks.div_ceil(threads);
        let errors = ErrorSlot::default();
        ctx.par_chunks_mut(out, per * block, |ci, chunk| {
            let mut scratch = Vec::new();
            for (j, out_g) in chunk.chunks_mut(block).enumerate() {
                errors.record(task(ci * per + j, out_g, &mut scratch, None));
            }
        });
        errors.finish()
    } else {
        let mut scratch = Vec::new();
        let inner = (threads > 1).then_some(ctx);
        for (t, out_g) in out.chunks_mut(block).enumerate() {
            task(t, out_g, &mut scratch, inner)?;
        }
        Ok(())
    }
}

/// im2col rows of one input channel: `rows` holds `kernel_size` rows of `out_size` values,
/// row `(kd, kh, kw)` holding the input value each output position reads through that tap
/// (0 in the padding).
fn im2col_channel<F: Float>(x: &[F], g: &Geo3, rows: &mut [F]) {
    let [_, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd_n, kh_n, kw_n] = g.kernel;
    let osz = od * oh * ow;
    let mut r = 0;
    for kd in 0..kd_n {
        let (d_lo, d_hi) = g.valid_range(0, kd);
        for kh in 0..kh_n {
            let (h_lo, h_hi) = g.valid_range(1, kh);
            for kw in 0..kw_n {
                let (w_lo, w_hi) = g.valid_range(2, kw);
                let row = &mut rows[r * osz..(r + 1) * osz];
                r += 1;
                for z in 0..od {
                    for y in 0..oh {
                        let seg = &mut row[(z * oh + y) * ow..][..ow];
                        if z < d_lo || z >= d_hi || y < h_lo || y >= h_hi || w_lo >= w_hi {
                            seg.fill(F::ZERO);
                            continue;
                        }
                        let iz = z * g.strides[0] + kd * g.dilations[0] - g.pad_begin[0];
                        let iy = y * g.strides[1] + kh * g.dilations[1] - g.pad_begin[1];
                        let src = &x[(iz * ih + iy) * iw..][..iw];
                        seg[..w_lo].fill(F::ZERO);
                        seg[w_hi..].fill(F::ZERO);
                        let ix0 = w_lo * g.strides[2] + kw * g.dilations[2] - g.pad_begin[2];
                        let dst = &mut seg[w_lo..w_hi];
                        let sw = g.strides[2];
                        if sw == 1 {
                            dst.copy_from_slice(&src[ix0..ix0 + dst.len()]);
                        } else {
                            for (v, &x) in dst.iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                                *v = x;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Operator for Conv {
    op_boilerplate!("Conv");

    fn weight_bytes(&self) -> usize {
        self.prepacked.as_ref().map_or(0, |p| p.bytes())
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(dt), Some(x), Some(w)) = (
            inputs.first().and_then(|f| f.dtype),
            concrete(inputs, 0),
            self.weight_shape(inputs),
        ) else {
            return Ok(None);
        };
        let p = self.plan(&x, &w, None)?;
        Ok(Some(vec![Fact::known(dt, &p.out_shape)]))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        let (Some(x), Some(w)) = (concrete(inputs, 0), self.weight_shape(inputs)) else {
            return 0;
        };
        self.plan(&x, &w, None).map_or(0, |p| {
            let macs = p.n * p.m * p.g3.out_size() * (p.c / self.group) * p.g3.kernel_size();
            2 * macs as u64
        })
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let dt = inputs.tensor(0)?.dtype();
        check_same_dtype(&inputs, dt)?;
        if let Some(packed) = &self.prepacked {
            if dt != DType::F32 {
                return Err(OpError::UnsupportedDType {
                    index: 0,
                    dtype: dt,
                });
            }
            let (out, shuffled) = self.run_prepacked(ctx, &inputs, packed)?;
            return Ok(vec![self.shuffle_output(ctx, out, shuffled)?.into()]);
        }
        let out = match dt {
            DType::F32 => self.run::<f32>(ctx, &inputs)?,
            DType::F64 => self.run::<f64>(ctx, &inputs)?,
            DType::F16 | DType::BF16 => {
                return eval_via_f32(ctx, &inputs, dt, 1, |c, i| self.eval(c, i))
            }
            d => return Err(OpError::UnsupportedDType { index: 0, dtype: d }),
        };
        Ok(vec![self.shuffle_output(ctx, out, false)?.into()])
    }
}

impl Conv {
    /// `out` with its channels shuffled as [`Conv::output_shuffle`] says, unless `done`
    /// (the kernel wrote them shuffled).
    fn shuffle_output(&self, ctx: &EvalCtx<'_>, out: Tensor, done: bool) -> OpResult<Tensor> {
        let Some(s) = self.output_shuffle.filter(|_| !done) else {
            return Ok(out);
        };
        let shape = out.shape().to_vec();
        let (n, m) = (shape[0], shape[1]);
        let pixels = shape[2..].iter().product::<usize>();
        let view = out
            .reshape(&[n, s, m / s, pixels])?
            .permute(&[0, 2, 1, 3])?;
        Ok(materialize(ctx, &view)?.reshape(&shape)?)
    }
}

fn check_same_dtype(inputs: &Inputs, dt: DType) -> OpResult<()> {
    for i in 1..inputs.len() {
        if let Some(t) = inputs.opt_tensor(i)? {
            if t.dtype() != dt {
                return Err(OpError::invalid(
                    i,
                    format!("dtype {} differs from input 0's {dt}", t.dtype()),
                ));
            }
        }
    }
    Ok(())
}

// ----- ConvTranspose ------------------------------------------------------------------------

/// `ConvTranspose` (opsets 1, 11, 22): the gradient of Conv with respect to its input.
#[derive(Debug, Clone)]
pub struct ConvTranspose {
    /// Kernel, strides, dilations, pads, auto_pad.
    pub spatial: SpatialAttrs,
    /// Number of groups.
    pub group: usize,
    /// Extra size added at the end of each output axis.
    pub output_padding: Option<Vec<usize>>,
    /// Explicit output spatial shape.
    pub output_shape: Option<Vec<usize>>,
}

fn build_conv_transpose(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let nonneg = |name: &str| -> OpResult<Option<Vec<usize>>> {
        match ctx.attrs.ints(name)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| {
                    usize::try_from(x).map_err(|_| {
                        OpError::attribute(name, format!("must be non-negative, got {v:?}"))
                    })
                })
                .collect::<OpResult<Vec<_>>>()
                .map(Some),
        }
    };
    Ok(Box::new(ConvTranspose {
        spatial: SpatialAttrs::parse(ctx.attrs)?,
        group: parse_group(ctx)?,
        output_padding: nonneg("output_padding")?,
        output_shape: nonneg("output_shape")?,
    }))
}

/// ConvTranspose geometry on three lifted axes; pads may be negative (output_shape larger
/// than the natural size).
#[derive(Debug, Clone)]
struct TransPlan {
    n: usize,
    c: usize,
    m: usize,
    input: [usize; 3],
    kernel: [usize; 3],
    strides: [usize; 3],
    dilations: [usize; 3],
    pad_begin: [isize; 3],
    output: [usize; 3],
    out_shape: Vec<usize>,
}

impl ConvTranspose {
    fn plan(&self, x: &[usize], w: &[usize], b: Option<&[usize]>) -> OpResult<TransPlan> {
        if x.len() < 3 || x.len() > 5 {
            return Err(OpError::invalid(
                0,
                format!("ConvTranspose input must have rank 3 to 5, got shape {x:?}"),
            ));
        }
        if w.len() != x.len() {
            return Err(OpError::invalid(
                1,
                format!("weights of shape {w:?} do not match input rank {}", x.len()),
            ));
        }
        let g = self.group;
        let (n, c, m) = (x[0], x[1], w[1] * g);
        if w[0] != c || c % g != 0 {
            return Err(OpError::invalid(
                1,
                format!("weights {w:?} do not fit input channels {c} with group {g}"),
            ));
        }
        if let Some(b) = b {
            if b != [m] {
                return Err(OpError::invalid(
                    2,
                    format!("bias must have shape [{m}], got {b:?}"),
                ));
            }
        }
        let nd = x.len() - 2;
        let kernel = &w[2..];
        if kernel.contains(&0) {
            return Err(OpError::invalid(
                1,
                format!("weights {w:?} have an empty kernel axis"),
            ));
        }
        if let Some(k) = &self.spatial.kernel {
            if k.as_slice() != kernel {
                return Err(OpError::attribute(
                    "kernel_shape",
                    format!("{k:?} differs from the weights' {kernel:?}"),
                ));
            }
        }
        let axis_attr =
            |v: &Option<Vec<usize>>, name: &str, default: usize| -> OpResult<Vec<usize>> {
                match v {
                    None => Ok(vec![default; nd]),
                    Some(v) if v.len() == nd => Ok(v.clone()),
                    Some(v) => Err(OpError::attribute(
                        name,
                        format!("has {} values for {nd} spatial axes", v.len()),
                    )),
                }
            };
        let strides = axis_attr(&self.spatial.strides, "strides", 1)?;
        let dilations = axis_attr(&self.spatial.dilations, "dilations", 1)?;
        let out_pad = axis_attr(&self.output_padding, "output_padding", 0)?;
        let pads = match (&self.spatial.pads, self.spatial.auto_pad()) {
            (Some(p), AutoPad::NotSet) if p.len() == 2 * nd => p.clone(),
            (Some(p), AutoPad::NotSet) => {
                return Err(OpError::attribute(
                    "pads",
                    format!("has {} values for {nd} spatial axes", p.len()),
                ))
            }
            _ => vec![0; 2 * nd],
        };
        let explicit_out = match &self.output_shape {
            None => None,
            Some(s) if s.len() == nd => Some(s.clone()),
            Some(s) if s.len() == nd + 2 => Some(s[2..].to_vec()),
            Some(s) => {
                return Err(OpError::attribute(
                    "output_shape",
                    format!("has {} values for {nd} spatial axes", s.len()),
                ))
            }
        };
        let auto = self.spatial.auto_pad();
        let mut pad_begin = vec![0isize; nd];
        let mut output = vec![0usize; nd];
        for i in 0..nd {
            let dk = (kernel[i] as isize - 1) * dilations[i] as isize + 1;
            let natural = strides[i] as isize * (x[2 + i] as isize - 1) + out_pad[i] as isize + dk;
            let same = matches!(auto, AutoPad::SameUpper | AutoPad::SameLower);
            let target = match &explicit_out {
                Some(s) => Some(s[i] as isize),
                None if same => Some((x[2 + i] * strides[i]) as isize),
                None => None,
            };
            match target {
                Some(out) => {
                    let total = natural - out;
                    let t = total.max(0);
                    // As onnxruntime and the spec: SAME_UPPER puts the odd pad at the end,
                    // SAME_LOWER and an explicit output_shape at the beginning.
                    pad_begin[i] = if auto == AutoPad::SameUpper {
                        t / 2
                    } else {
                        t - t / 2
                    };
                    output[i] = out as usize;
                }
                None => {
                    let o = natural - pads[i] as isize - pads[nd + i] as isize;
                    if o < 0 {
                        return Err(OpError::Shape(format!(
                            "ConvTranspose output axis {i} would have negative size {o} (pads {pads:?})"
                        )));
                    }
                    pad_begin[i] = pads[i] as isize;
                    output[i] = o as usize;
                }
            }
        }
        let lift = |v: &[usize], fill: usize| {
            let mut a = [fill; 3];
            a[3 - nd..].copy_from_slice(v);
            a
        };
        let mut pb = [0isize; 3];
        pb[3 - nd..].copy_from_slice(&pad_begin);
        let mut out_shape = vec![n, m];
        out_shape.extend_from_slice(&output);
        Ok(TransPlan {
            n,
            c,
            m,
            input: lift(&x[2..], 1),
            kernel: lift(kernel, 1),
            strides: lift(&strides, 1),
            dilations: lift(&dilations, 1),
            pad_begin: pb,
            output: lift(&output, 1),
            out_shape,
        })
    }

    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Tensor> {
        let (x, w) = (
            inputs.tensor(0)?.contiguous(),
            inputs.tensor(1)?.contiguous(),
        );
        let bias = inputs.opt_tensor(2)?.map(Tensor::contiguous);
        let p = self.plan(x.shape(), w.shape(), bias.as_ref().map(Tensor::shape))?;
        let mut out = ctx.alloc(F::DTYPE, &p.out_shape)?;
        let o = out.as_slice_mut::<F>()?;
        if o.is_empty() {
            return Ok(out);
        }
        let (xv, wv) = (x.as_slice::<F>()?, w.as_slice::<F>()?);
        let bv = match &bias {
            Some(b) => Some(b.as_slice::<F>()?),
            None => None,
        };
        let g = self.group;
        let (cg, mg) = (p.c / g, p.m / g);
        let isz: usize = p.input.iter().product();
        let osz: usize = p.output.iter().product();
        let ksz: usize = p.kernel.iter().product();
        let rows = mg * ksz;
        let task = |t: usize,
                    out_g: &mut [F],
                    col: &mut Vec<F>,
                    inner: Option<&EvalCtx<'_>>|
         -> OpResult<()> {
            let (b, gi) = (t / g, t % g);
            let xg = MatRef::row_major(&xv[(b * p.c + gi * cg) * isz..][..cg * isz], cg, isz);
            let wg = MatRef::row_major(&wv[gi * cg * rows..][..cg * rows], cg, rows).t();
            col.resize(rows * isz, F::ZERO);
            match inner {
                Some(ctx) => par_gemm(ctx, F::ONE, wg, xg, F::ZERO, col)?,
                None => gemm(F::ONE, wg, xg, F::ZERO, MatMut::row_major(col, rows, isz))?,
            }
            let col = col.as_slice();
            let fill = |m: usize, plane: &mut [F]| {
                plane.fill(bv.map_or(F::ZERO, |bv| bv[gi * mg + m]));
                col2im_channel(&col[m * ksz * isz..][..ksz * isz], &p, plane);
            };
            match inner {
                Some(ctx) => ctx.par_chunks_mut(out_g, osz, fill),
                None => out_g
                    .chunks_mut(osz)
                    .enumerate()
                    .for_each(|(m, plane)| fill(m, plane)),
            }
            Ok(())
        };
        run_group_tasks(ctx, o, mg * osz, task)?;
        Ok(out)
    }
}

/// Scatters the `kernel_size` col rows of one output channel into its output plane.
fn col2im_channel<F: Float>(col: &[F], p: &TransPlan, out: &mut [F]) {
    let [id, ih, iw] = p.input;
    let [_, oh, ow] = p.output;
    let isz = id * ih * iw;
    let (s, d, pb) = (p.strides, p.dilations, p.pad_begin);
    let mut r = 0;
    for kd in 0..p.kernel[0] {
        let (z_lo, z_hi) = tap_range(id, p.output[0], s[0], kd * d[0], pb[0]);
        for kh in 0..p.kernel[1] {
            let (y_lo, y_hi) = tap_range(ih, oh, s[1], kh * d[1], pb[1]);
            for kw in 0..p.kernel[2] {
                let (x_lo, x_hi) = tap_range(iw, ow, s[2], kw * d[2], pb[2]);
                let row = &col[r * isz..(r + 1) * isz];
                r += 1;
                if x_lo >= x_hi {
                    continue;
                }
                let ox0 = ((x_lo * s[2] + kw * d[2]) as isize - pb[2]) as usize;
                for z in z_lo..z_hi {
                    let oz = ((z * s[0] + kd * d[0]) as isize - pb[0]) as usize;
                    for y in y_lo..y_hi {
                        let oy = ((y * s[1] + kh * d[1]) as isize - pb[1]) as usize;
                        let src = &row[(z * ih + y) * iw..][x_lo..x_hi];
                        let dst = &mut out[(oz * oh + oy) * ow..][..ow];
                        if s[2] == 1 {
                            for (o, &v) in dst[ox0..ox0 + src.len()].iter_mut().zip(src) {
                                *o += v;
                            }
                        } else {
                            for (j, &v) in src.iter().enumerate() {
                                dst[ox0 + j * s[2]] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Operator for ConvTranspose {
    op_boilerplate!("ConvTranspose");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(dt), Some(x), Some(w)) = (
            inputs.first().and_then(|f| f.dtype),
            concrete(inputs, 0),
            concrete(inputs, 1),
        ) else {
            return Ok(None);
        };
        let p = self.plan(&x, &w, None)?;
        Ok(Some(vec![Fact::known(dt, &p.out_shape)]))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        let (Some(x), Some(w)) = (concrete(inputs, 0), concrete(inputs, 1)) else {
            return 0;
        };
        self.plan(&x, &w, None).map_or(0, |p| {
            let isz: usize = p.input.iter().product();
            let ksz: usize = p.kernel.iter().product();
            2 * (p.n * p.c * isz * (p.m / self.group) * ksz) as u64
        })
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let dt = inputs.tensor(0)?.dtype();
        check_same_dtype(&inputs, dt)?;
        let out = match dt {
            DType::F32 => self.run::<f32>(ctx, &inputs)?,
            DType::F64 => self.run::<f64>(ctx, &inputs)?,
            DType::F16 | DType::BF16 => {
                return eval_via_f32(ctx, &inputs, dt, 1, |c, i| self.eval(c, i))
            }
            d => return Err(OpError::UnsupportedDType { index: 0, dtype: d }),
        };
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{build, eval, f64s, pat, s, t};
    use super::*;
    use crate::{Attribute, EvalCtx, Fact, Inputs};
    use strata_tensor::{DType, Tensor};

    /// Direct 2-D convolution: x [N,C,H,W], w [M,C/g,KH,KW], pads [t,l,b,r].
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        b: Option<&[f32]>,
        g: usize,
        st: [usize; 2],
        pads: [usize; 4],
        dil: [usize; 2],
    ) -> (Vec<f32>, Vec<usize>) {
        let [n, c, h, wd] = xs;
        let [m, cg, kh, kw] = ws;
        let oh = (h + pads[0] + pads[2] - ((kh - 1) * dil[0] + 1)) / st[0] + 1;
        let ow = (wd + pads[1] + pads[3] - ((kw - 1) * dil[1] + 1)) / st[1] + 1;
        let mg = m / g;
        let mut out = vec![0f32; n * m * oh * ow];
        for bi in 0..n {
            for mi in 0..m {
                let gi = mi / mg;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b[mi]) as f64;
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (y * st[0] + ky * dil[0]) as isize - pads[0] as isize;
                                    let ix = (xo * st[1] + kx * dil[1]) as isize - pads[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((bi * c + gi * cg + ci) * h + iy as usize) * wd
                                        + ix as usize];
                                    let wv = w[((mi * cg + ci) * kh + ky) * kw + kx];
                                    acc += (xv * wv) as f64;
                                }
                            }
                        }
                        out[((bi * m + mi) * oh + y) * ow + xo] = acc as f32;
                    }
                }
            }
        }
        (out, vec![n, m, oh, ow])
    }

    fn check_against_naive(
        xs: [usize; 4],
        ws: [usize; 4],
        g: usize,
        st: [usize; 2],
        pads: [usize; 4],
        dil: [usize; 2],
        bias: bool,
    ) {
        let x = pat(xs.iter().product(), 1);
        let w = pat(ws.iter().product(), 2);
        let b = pat(ws[0], 3);
        let (want, shape) = naive_conv(&x, xs, &w, ws, bias.then_some(&b[..]), g, st, pads, dil);
        let op = build(
            "Conv",
            11,
            &[
                ("group", Attribute::Int(g as i64)),
                (
                    "strides",
                    Attribute::Ints(st.iter().map(|&v| v as i64).collect()),
                ),
                (
                    "pads",
                    Attribute::Ints(pads.iter().map(|&v| v as i64).collect()),
                ),
                (
                    "dilations",
                    Attribute::Ints(dil.iter().map(|&v| v as i64).collect()),
                ),
            ],
            3,
            1,
        );
        let mut ins = vec![Some(t(&x, &xs)), Some(t(&w, &ws))];
        if bias {
            ins.push(Some(t(&b, &[ws[0]])));
        }
        let out = eval(op.as_ref(), &ins);
        assert_close_to(&out[0], &want, &shape);
        if ws[1] > 1 {
            // The same through weights prepacked in each layout that fits, input 1
            // disconnected.
            let conv = op.as_any().downcast_ref::<Conv>().unwrap().clone();
            let wt = ins[1].take().unwrap();
            let mut layouts = vec![Layout::Rows];
            if conv.packs_by_width_tap(&ws, Some(&xs)) {
                layouts.push(Layout::ByWidthTap);
            }
            if g == 1 && ws[2..] == [3, 3] && st == [1, 1] && dil == [1, 1] {
                layouts.push(Layout::Winograd);
            }
            for layout in layouts {
                let packed = Conv {
                    prepacked: Some(Arc::new(PackedConvWeights::pack(&wt, g, layout).unwrap())),
                    ..conv.clone()
                };
                let out = eval(&packed, &ins);
                assert_close_to(&out[0], &want, &shape);
            }
        }
    }

    fn assert_close_to(out: &Tensor, want: &[f32], shape: &[usize]) {
        assert_eq!(out.shape(), shape);
        let got = out.as_slice::<f32>().unwrap();
        for (i, (a, e)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - e).abs() <= 1e-3 * (1.0 + e.abs()),
                "element {i}: {a} vs {e}"
            );
        }
    }

    /// `op` (a Conv) with `w` prepacked, and the given fusions.
    fn prepacked(
        op: &dyn Operator,
        w: &Tensor,
        activation: Option<Activation>,
        fused_sum: bool,
    ) -> Conv {
        let conv = op.as_any().downcast_ref::<Conv>().unwrap().clone();
        Conv {
            prepacked: Some(Arc::new(
                PackedConvWeights::for_conv(&conv, w, None).unwrap(),
            )),
            activation,
            fused_sum,
            ..conv
        }
    }

    #[test]
    fn prepacked_conv_applies_bias_sum_and_activation_per_tile() {
        // (input, weights, pads): a wide output split by columns over threads, a narrow one
        // split by output channels, and a pointwise one (B packed from the input); then,
        // with AVX-512, a 3x3 and a pointwise conv whose input the GEMM reads in place
        // (few output channels, wide rows, a large image for the pointwise one); and inputs
        // large enough that the padded copy (40 rows) and, with AVX-512, the edge windows (128
        // rows) are filled on both threads.
        let cases = [
            ([1, 16, 12, 12], [40, 16, 3, 3], 1),
            ([2, 64, 6, 6], [50, 64, 3, 3], 1),
            ([1, 24, 14, 14], [36, 24, 1, 1], 0),
            ([1, 64, 20, 20], [30, 64, 3, 3], 1),
            ([1, 64, 33, 33], [40, 64, 1, 1], 0),
            ([1, 32, 48, 48], [40, 32, 3, 3], 1),
            ([1, 32, 48, 48], [128, 32, 3, 3], 1),
        ];
        for (xs, ws, pad) in cases {
            let x = t(&pat(xs.iter().product(), 1), &xs);
            let w = t(&pat(ws.iter().product(), 2), &ws);
            let b = t(&pat(ws[0], 3), &[ws[0]]);
            let p = pad as i64;
            let plain = build("Conv", 11, &[("pads", Attribute::Ints(vec![p; 4]))], 3, 1);
            let y = eval(
                plain.as_ref(),
                &[Some(x.clone()), Some(w.clone()), Some(b.clone())],
            );
            let sum = t(&pat(y[0].len(), 4), y[0].shape());
            // A clamp (applied by the micro-kernel) and another activation (after it).
            for act in [
                Activation::Clip {
                    min: -0.5,
                    max: 0.75,
                },
                Activation::HardSwish,
            ] {
                // The reference: the unpacked path with the same fusions.
                let reference = Conv {
                    activation: Some(act),
                    fused_sum: true,
                    ..plain.as_any().downcast_ref::<Conv>().unwrap().clone()
                };
                let ins = [
                    Some(x.clone()),
                    Some(w.clone()),
                    Some(b.clone()),
                    Some(sum.clone()),
                ];
                let want = eval(&reference, &ins);
                let packed = prepacked(plain.as_ref(), &w, Some(act), true);
                let mut packed_ins = ins.to_vec();
                packed_ins[1] = None;
                let got = eval(&packed, &packed_ins);
                assert_close_to(&got[0], want[0].as_slice::<f32>().unwrap(), want[0].shape());
            }
        }
    }

    /// `y` (`[n, m, ...]`) with its channels shuffled in `s` groups, the naive way.
    fn channel_shuffled(y: &Tensor, s: usize) -> Vec<f32> {
        let (n, m) = (y.shape()[0], y.shape()[1]);
        let pixels = y.len() / (n * m);
        let v = y.as_slice::<f32>().unwrap();
        let mut out = vec![f32::NAN; v.len()];
        for b in 0..n {
            for ch in 0..m {
                let to = (ch % (m / s)) * s + ch / (m / s);
                out[(b * m + to) * pixels..][..pixels]
                    .copy_from_slice(&v[(b * m + ch) * pixels..][..pixels]);
            }
        }
        out
    }

    #[test]
    fn shuffled_outputs_match_a_shuffle_after_the_conv() {
        // (input, weights, groups, shuffle groups, pad): groups whole in each shuffle block,
        // written in place (pointwise; 3x3 through edge windows; two groups per block); a
        // shuffle across groups and an ungrouped conv (shuffled after); depthwise (not
        // prepacked, shuffled after).
        let cases = [
            ([2, 16, 10, 10], [32, 4, 1, 1], 4, 4, 0),
            ([1, 8, 12, 12], [16, 2, 3, 3], 4, 2, 1),
            ([1, 16, 9, 9], [24, 2, 1, 1], 8, 4, 0),
            ([1, 16, 9, 9], [24, 8, 1, 1], 2, 4, 0),
            ([1, 6, 11, 11], [12, 6, 3, 3], 1, 3, 1),
            ([2, 8, 7, 7], [8, 1, 3, 3], 8, 2, 1),
        ];
        for (xs, ws, g, groups, pad) in cases {
            let x = t(&pat(xs.iter().product(), 1), &xs);
            let w = t(&pat(ws.iter().product(), 2), &ws);
            let b = t(&pat(ws[0], 3), &[ws[0]]);
            let attrs = [
                ("pads", Attribute::Ints(vec![pad; 4])),
                ("group", Attribute::Int(g as i64)),
            ];
            let plain = build("Conv", 11, &attrs, 3, 1);
            let ins = [Some(x.clone()), Some(w.clone()), Some(b.clone())];
            let y = eval(plain.as_ref(), &ins);
            let sum = t(&pat(y[0].len(), 4), y[0].shape());
            let conv = plain.as_any().downcast_ref::<Conv>().unwrap().clone();
            let relu = Some(Activation::Relu);
            for fused_sum in [false, true] {
                let reference = Conv {
                    activation: relu,
                    fused_sum,
                    ..conv.clone()
                };
                let mut ins = ins.to_vec();
                ins.extend(fused_sum.then(|| Some(sum.clone())));
                let want = channel_shuffled(&eval(&reference, &ins)[0], groups);
                let shuffled = Conv {
                    output_shuffle: Some(groups),
                    ..reference
                };
                let case =
                    format!("{xs:?} {ws:?} groups {g} shuffled in {groups}, sum {fused_sum}");
                let got = eval(&shuffled, &ins);
                assert_close_to(&got[0], &want, y[0].shape());
                if ws[1] > 1 {
                    let packed = prepacked(&shuffled, &w, relu, fused_sum);
                    ins[1] = None;
                    let got = eval(&packed, &ins);
                    assert_close_to(&got[0], &want, y[0].shape());
                }
                assert!(shuffled.label().ends_with("+ChannelShuffle"), "{case}");
            }
        }
        // Shuffle groups that do not divide the output channels are an error.
        let x = t(&pat(2 * 4 * 4, 1), &[1, 2, 4, 4]);
        let w = t(&pat(6 * 2, 2), &[6, 2, 1, 1]);
        let conv = Conv {
            output_shuffle: Some(4),
            ..build("Conv", 11, &[], 2, 1)
                .as_any()
                .downcast_ref::<Conv>()
                .unwrap()
                .clone()
        };
        let inputs = Inputs::new(vec![Some(x.into()), Some(w.into())]);
        let err = conv.eval(&EvalCtx::default(), inputs).unwrap_err();
        assert!(err.to_string().contains("do not divide 6"), "{err}");
    }

    #[test]
    fn depthwise_conv_applies_bias_sum_and_activation() {
        // Channel-blocked (a partial block of 4; two batch items of two blocks),
        // plane-at-a-time (channels not a multiple of 16 over a batch) and, on AVX-512, row
        // by row (planes of at least `ROW_DEPTHWISE_MIN_INPUT` values, over a batch).
        for (xs, stride) in [
            ([1, 20, 9, 10], 2),
            ([2, 32, 7, 7], 1),
            ([2, 20, 5, 5], 1),
            ([2, 3, 48, 50], 1),
            ([1, 5, 57, 45], 2),
        ] {
            let ws = [xs[1], 1, 3, 3];
            let (x, w, b) = (
                pat(xs.iter().product(), 1),
                pat(ws.iter().product(), 2),
                pat(ws[0], 3),
            );
            let (conv, shape) =
                naive_conv(&x, xs, &w, ws, Some(&b), xs[1], [stride; 2], [1; 4], [1, 1]);
            let sum = pat(conv.len(), 4);
            let plain = build(
                "Conv",
                11,
                &[
                    ("group", Attribute::Int(xs[1] as i64)),
                    ("pads", Attribute::Ints(vec![1; 4])),
                    ("strides", Attribute::Ints(vec![stride as i64; 2])),
                ],
                3,
                1,
            );
            let hard_swish = |v: f32| v * (v + 3.0).clamp(0.0, 6.0) / 6.0;
            let clip = Activation::Clip {
                min: -0.5,
                max: 0.75,
            };
            for (act, f) in [
                (clip, &(|v: f32| v.clamp(-0.5, 0.75)) as &dyn Fn(f32) -> f32),
                (Activation::HardSwish, &hard_swish),
            ] {
                let fused = Conv {
                    activation: Some(act),
                    fused_sum: true,
                    ..plain.as_any().downcast_ref::<Conv>().unwrap().clone()
                };
                let ins = [
                    Some(t(&x, &xs)),
                    Some(t(&w, &ws)),
                    Some(t(&b, &[ws[0]])),
                    Some(t(&sum, &shape)),
                ];
                let want: Vec<f32> = conv.iter().zip(&sum).map(|(c, s)| f(c + s)).collect();
                assert_close_to(&eval(&fused, &ins)[0], &want, &shape);
            }
        }
    }

    #[test]
    fn weights_are_packed_by_width_tap_for_edge_windows() {
        let conv = |attrs: &[(&str, Attribute)]| {
            let op = build("Conv", 11, attrs, 3, 1);
            op.as_any().downcast_ref::<Conv>().unwrap().clone()
        };
        let pads = |p: &[i64]| ("pads", Attribute::Ints(p.to_vec()));
        // Whether the kernel reads edge windows in place (AVX-512).
        let edges = edge_windows_pay(128, 72, 28, 2);
        let w = [128, 8, 3, 3];
        // Stride 1, the width kept (explicit pads, dilated pads, SAME), input unknown or
        // 28x28: by width tap where the kernel reads edge windows.
        for attrs in [
            vec![pads(&[1; 4])],
            vec![
                pads(&[0, 2, 0, 2]),
                ("dilations", Attribute::Ints(vec![1, 2])),
            ],
            vec![("auto_pad", Attribute::String("SAME_UPPER".into()))],
        ] {
            let op = conv(&attrs);
            assert_eq!(op.packs_by_width_tap(&w, None), edges, "{attrs:?}");
            assert_eq!(op.packs_by_width_tap(&w, Some(&[1, 8, 28, 28])), edges);
        }
        // 7x7 too (edge windows packed, the last column through the narrow kernel). Not: few
        // rows on a wide image (the padded copy's windows in place); strided, narrowed, too
        // shallow, 5 wide, 3-D.
        let same = conv(&[pads(&[1; 4])]);
        assert_eq!(same.packs_by_width_tap(&w, Some(&[1, 8, 7, 7])), edges);
        assert!(!same.packs_by_width_tap(&[64, 8, 3, 3], Some(&[1, 8, 56, 56])));
        let strided = conv(&[pads(&[1; 4]), ("strides", Attribute::Ints(vec![2, 2]))]);
        assert!(!strided.packs_by_width_tap(&w, None));
        assert!(!conv(&[pads(&[1, 0, 1, 0])]).packs_by_width_tap(&w, None));
        assert!(!same.packs_by_width_tap(&[128, 7, 3, 3], None));
        assert!(!conv(&[pads(&[2; 4])]).packs_by_width_tap(&[128, 8, 5, 5], None));
        assert!(!conv(&[pads(&[1; 6])]).packs_by_width_tap(&[128, 8, 3, 3, 3], None));
        let weights = t(&pat(128 * 8 * 9, 2), &w);
        let packed = PackedConvWeights::for_conv(&same, &weights, None).unwrap();
        assert_eq!(packed.by_width_tap, edges);
    }

    #[test]
    fn prepacked_conv_rejects_what_does_not_fit() {
        let w = t(&pat(2 * 3 * 9, 1), &[2, 3, 3, 3]);
        assert!(PackedConvWeights::new(&w, 4).is_err());
        assert!(PackedConvWeights::new(&t(&[1.0; 6], &[2, 3]), 1).is_err());
        let w64 = Tensor::from_vec(vec![1.0f64; 54], &[2, 3, 3, 3]).unwrap();
        assert!(PackedConvWeights::new(&w64, 1).is_err());
        // An input whose channels do not match the packed weights is reported, not a panic.
        let plain = build("Conv", 11, &[], 3, 1);
        let packed = prepacked(plain.as_ref(), &w, None, false);
        let x = t(&pat(4 * 25, 1), &[1, 4, 5, 5]);
        let err = packed
            .eval(&EvalCtx::default(), Inputs::new(vec![Some(x.into()), None]))
            .unwrap_err();
        assert!(err.to_string().contains("input channels"), "{err}");
        assert_eq!(packed.prepacked.as_ref().unwrap().shape(), &[2, 3, 3, 3]);
    }

    #[test]
    fn conv_matches_naive_across_paths() {
        // General im2col, one task: inner parallel GEMM (large) and im2col rows.
        check_against_naive(
            [1, 16, 12, 12],
            [32, 16, 3, 3],
            1,
            [1, 1],
            [1, 1, 1, 1],
            [1, 1],
            true,
        );
        // Many (batch, group) tasks split over threads.
        check_against_naive(
            [3, 6, 7, 9],
            [4, 3, 2, 3],
            2,
            [2, 1],
            [0, 2, 1, 0],
            [2, 1],
            false,
        );
        // Prepacked by width tap (with AVX-512, over 96 rows per group), read through edge
        // windows in place: two groups with uneven height padding; rows 28 wide; dilated.
        // Then packed: 49 pixels, one past the last vector.
        for (xs, ws, g, pads, dil, bias) in [
            (
                [2, 32, 13, 13],
                [200, 16, 3, 3],
                2,
                [0, 1, 2, 1],
                [1, 1],
                true,
            ),
            ([1, 8, 20, 28], [100, 8, 3, 3], 1, [1; 4], [1, 1], true),
            ([1, 16, 12, 12], [100, 16, 3, 3], 1, [2; 4], [2, 2], false),
            ([1, 64, 7, 7], [100, 64, 3, 3], 1, [1; 4], [1, 1], true),
            // Winograd: two batch items, uneven padding, odd sizes.
            ([2, 5, 6, 9], [7, 5, 3, 3], 1, [0, 1, 2, 0], [1, 1], true),
        ] {
            check_against_naive(xs, ws, g, [1, 1], pads, dil, bias);
        }
        // Pointwise.
        check_against_naive([2, 8, 5, 5], [4, 8, 1, 1], 1, [1, 1], [0; 4], [1, 1], true);
        // Strided 1x1 is not pointwise.
        check_against_naive([1, 4, 5, 5], [3, 4, 1, 1], 1, [2, 2], [0; 4], [1, 1], false);
        // Strided 1x1s: subsampled (no padding, per-axis strides, two batch items), and
        // padded (border outputs read zeros).
        check_against_naive([2, 6, 9, 11], [5, 6, 1, 1], 1, [2, 3], [0; 4], [1, 1], true);
        check_against_naive([1, 6, 6, 6], [5, 6, 1, 1], 1, [2, 2], [1; 4], [1, 1], true);
        // Depthwise (multiplier 2) with strides and padding, many planes.
        check_against_naive(
            [2, 8, 9, 10],
            [16, 1, 3, 3],
            8,
            [2, 2],
            [1, 1, 1, 1],
            [1, 1],
            true,
        );
        check_against_naive(
            [1, 3, 8, 8],
            [3, 1, 5, 5],
            3,
            [1, 1],
            [2, 2, 2, 2],
            [1, 1],
            false,
        );
        // Depthwise with width stride 3 and dilation 2 (phase-split rows), uneven pads.
        check_against_naive(
            [1, 4, 11, 13],
            [4, 1, 3, 3],
            4,
            [2, 3],
            [1, 2, 0, 1],
            [2, 2],
            true,
        );
        // Depthwise, width stride 2 with an even left pad (the even columns land in phase
        // 0) and a 5-wide kernel, rows wider than one register block.
        check_against_naive(
            [1, 2, 5, 40],
            [2, 1, 3, 5],
            2,
            [1, 2],
            [0, 2, 1, 0],
            [1, 1],
            true,
        );
        // Depthwise (multiplier 1) in blocks of 16 channels: a partial block with strides,
        // dilation and uneven pads; two batch items.
        check_against_naive(
            [1, 20, 9, 10],
            [20, 1, 3, 3],
            20,
            [2, 1],
            [1, 0, 2, 1],
            [1, 2],
            true,
        );
        check_against_naive(
            [2, 32, 7, 7],
            [32, 1, 3, 3],
            32,
            [1, 1],
            [1, 1, 1, 1],
            [1, 1],
            false,
        );
        // Kernel larger than input in one axis with padding.
        check_against_naive(
            [1, 2, 2, 6],
            [2, 2, 3, 3],
            1,
            [1, 1],
            [1, 0, 1, 0],
            [1, 1],
            true,
        );
    }

    /// Packs the panels of columns `j0..j0 + nc`, rows `k0..k0 + kc` of `src`.
    fn packed_panels(
        src: &dyn PackPanels,
        nr: usize,
        (k0, kc): (usize, usize),
        (j0, nc): (usize, usize),
    ) -> Vec<f32> {
        let mut dst = vec![f32::NAN; nc.div_ceil(nr) * nr * kc];
        src.pack(nr, k0, kc, j0, nc, &mut dst);
        dst
    }

    #[test]
    fn shifted_windows_pack_as_im2col_panels() {
        // The depthwise planes' geometries (padding, strides 1-3 split by phase, dilation,
        // asymmetric and ceil-mode padding), a 7x7/2 stem and mixed strides and dilations.
        let geo = depthwise::tests::geo;
        let mut cases = depthwise::tests::geometries();
        cases.push(geo([23, 23], [7, 7], [2, 2], [1, 1], [3, 3, 3, 3], false));
        cases.push(geo([14, 33], [5, 5], [2, 3], [2, 1], [2, 1, 2, 0], false));
        let channels = 3;
        for (ci, geo) in cases.into_iter().enumerate() {
            let [_, h, w] = geo.input;
            let x = pat(channels * h * w, ci as i64);
            let plain = Im2colPanels {
                x: &x,
                geo: &geo,
                channels,
            };
            let mut scratch = depthwise::Scratch::default();
            let ctx = EvalCtx::default();
            // Twice through one scratch: the second pass reuses the padding; rows split by
            // height phase (as convolutions pad) and not.
            for split_rows in [true, true, false] {
                let taps = depthwise::pad_planes(
                    &ctx,
                    &x,
                    &geo,
                    channels,
                    0,
                    split_rows,
                    &mut scratch,
                    0.0,
                )
                .unwrap();
                let starts = im2col_row_starts(&geo, &taps, channels);
                let padded = ShiftedB {
                    data: scratch.padded(),
                    offsets: &starts,
                    rows: geo.output[1],
                    cols: geo.output[2],
                    row_step: taps.output_row_step(geo.strides[1]),
                    edges: None,
                };
                let (k, n) = plain.dims();
                assert_eq!(padded.dims(), (k, n));
                for nr in [16, 32] {
                    for (ks, js) in [((0, k), (0, n)), ((1, k - 1), (n / 3, n - n / 3 - 1))] {
                        assert_eq!(
                            packed_panels(&padded, nr, ks, js),
                            packed_panels(&plain, nr, ks, js),
                            "case {ci}, nr {nr}, rows {ks:?}, columns {js:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn conv_1d_by_hand() {
        // Ones kernel of width 3, pad 1: neighbour sums.
        let op = build("Conv", 1, &[("pads", Attribute::Ints(vec![1, 1]))], 2, 1);
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[1., 2., 3., 4., 5.], &[1, 1, 5])),
                Some(t(&[1., 1., 1.], &[1, 1, 3])),
            ],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[3., 6., 9., 12., 9.]);
        // kernel_shape may be given and must agree with the weights.
        let op = build(
            "Conv",
            11,
            &[
                ("kernel_shape", Attribute::Ints(vec![2])),
                ("strides", Attribute::Ints(vec![2])),
            ],
            2,
            1,
        );
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[1., 2., 3., 4., 5.], &[1, 1, 5])),
                Some(t(&[1., -1.], &[1, 1, 2])),
            ],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-1., -1.]);
    }

    #[test]
    fn conv_errors_name_the_problem() {
        let op = build("Conv", 11, &[], 2, 1);
        let ctx = EvalCtx::default();
        let run = |x: Tensor, w: Tensor, b: Option<Tensor>| {
            let mut v = vec![Some(x.into()), Some(w.into())];
            if let Some(b) = b {
                v.push(Some(b.into()));
            }
            op.eval(&ctx, Inputs::new(v)).unwrap_err().to_string()
        };
        let e = run(t(&[0.; 8], &[1, 2, 4]), t(&[0.; 6], &[1, 3, 2]), None);
        assert!(e.contains("input 1"), "{e}");
        let e = run(
            t(&[0.; 8], &[1, 2, 4]),
            t(&[0.; 4], &[1, 2, 2]),
            Some(t(&[0.; 2], &[2])),
        );
        assert!(e.contains("input 2") && e.contains("bias"), "{e}");
        let e = run(t(&[0.; 4], &[1, 2, 2]), t(&[0.; 6], &[1, 2, 3]), None);
        assert!(e.contains("kernel"), "{e}");
        let e = run(t(&[0.; 4], &[4]), t(&[0.; 6], &[1, 2, 3]), None);
        assert!(e.contains("rank"), "{e}");
        let e = run(
            t(&[0.; 2], &[1, 1, 1, 1, 1, 2]),
            t(&[0.; 1], &[1, 1, 1, 1, 1, 1]),
            None,
        );
        assert!(e.contains("spatial axes"), "{e}");
        let bad = build(
            "Conv",
            11,
            &[("kernel_shape", Attribute::Ints(vec![3]))],
            2,
            1,
        );
        let e = bad
            .eval(
                &ctx,
                Inputs::from_tensors([t(&[0.; 4], &[1, 1, 4]), t(&[0.; 2], &[1, 1, 2])]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel_shape"), "{e}");
        let x = Tensor::from_vec(vec![1i32; 4], &[1, 1, 4]).unwrap();
        let e = op
            .eval(&ctx, Inputs::from_tensors([x.clone(), x]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dtype"), "{e}");
    }

    #[test]
    fn conv_degenerate_shapes() {
        // Empty input axis, covered by padding: only bias remains.
        let op = build("Conv", 11, &[("pads", Attribute::Ints(vec![1, 1]))], 3, 1);
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[], &[1, 1, 0])),
                Some(t(&[1., 1.], &[1, 1, 2])),
                Some(t(&[0.5], &[1])),
            ],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.5]);
        // Empty batch.
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[], &[0, 1, 3])),
                Some(t(&[1., 1.], &[1, 1, 2])),
                Some(t(&[0.5], &[1])),
            ],
        );
        assert_eq!(out[0].shape(), &[0, 1, 4]);
        // Empty kernel axes are rejected.
        let e = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([t(&[1.; 3], &[1, 1, 3]), t(&[], &[1, 1, 0])]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let op = build("ConvTranspose", 11, &[], 2, 1);
        let e = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([t(&[1.; 3], &[1, 1, 3]), t(&[], &[1, 1, 0])]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn conv_infer_and_flops() {
        let op = build(
            "Conv",
            11,
            &[
                ("pads", Attribute::Ints(vec![1, 1, 1, 1])),
                ("group", Attribute::Int(2)),
            ],
            2,
            1,
        );
        let facts = [
            Fact::known(DType::F32, &[2, 4, 8, 8]),
            Fact::known(DType::F32, &[6, 2, 3, 3]),
        ];
        let out = op.infer(&facts).unwrap().unwrap();
        assert_eq!(out[0].concrete_shape().unwrap(), vec![2, 6, 8, 8]);
        assert_eq!(op.flops(&facts), 2 * 2 * 6 * 64 * 2 * 9);
        assert!(op
            .infer(&[Fact::default(), Fact::default()])
            .unwrap()
            .is_none());
    }

    #[test]
    fn conv_f16_goes_through_f32() {
        let op = build("Conv", 11, &[], 2, 1);
        let x = t(&[1., 2., 3.], &[1, 1, 3]).cast(DType::F16).unwrap();
        let w = t(&[0.5, 0.5], &[1, 1, 2]).cast(DType::F16).unwrap();
        let out = eval(op.as_ref(), &[Some(x), Some(w)]);
        assert_eq!(out[0].dtype(), DType::F16);
        assert_eq!(f64s(&out[0]), vec![1.5, 2.5]);
    }

    /// Direct 2-D transposed convolution (scatter form), pads [t,l,b,r].
    #[allow(clippy::too_many_arguments)]
    fn naive_conv_t(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        g: usize,
        st: [usize; 2],
        pads: [usize; 4],
        outpad: [usize; 2],
    ) -> (Vec<f32>, Vec<usize>) {
        let [n, c, h, wd] = xs;
        let [_, mg, kh, kw] = ws;
        let cg = c / g;
        let m = mg * g;
        let oh = st[0] * (h - 1) + outpad[0] + kh - pads[0] - pads[2];
        let ow = st[1] * (wd - 1) + outpad[1] + kw - pads[1] - pads[3];
        let mut out = vec![0f32; n * m * oh * ow];
        for bi in 0..n {
            for ci in 0..c {
                let gi = ci / cg;
                for y in 0..h {
                    for xi in 0..wd {
                        let v = x[((bi * c + ci) * h + y) * wd + xi];
                        for mo in 0..mg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let oy = (y * st[0] + ky) as isize - pads[0] as isize;
                                    let ox = (xi * st[1] + kx) as isize - pads[1] as isize;
                                    if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                        continue;
                                    }
                                    let mi = gi * mg + mo;
                                    out[((bi * m + mi) * oh + oy as usize) * ow + ox as usize] +=
                                        v * w[((ci * mg + mo) * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
        (out, vec![n, m, oh, ow])
    }

    #[test]
    fn conv_transpose_matches_naive() {
        for (xs, ws, g, st, pads, outpad) in [
            ([1, 8, 9, 9], [8, 16, 4, 4], 1, [2, 2], [1, 1, 1, 1], [0, 0]),
            ([3, 4, 5, 4], [4, 3, 3, 2], 2, [2, 3], [0, 1, 2, 0], [1, 2]),
            ([1, 2, 3, 3], [2, 1, 3, 3], 1, [1, 1], [0, 0, 0, 0], [0, 0]),
        ] {
            let x = pat(xs.iter().product(), 4);
            let w = pat(ws.iter().product(), 5);
            let (want, shape) = naive_conv_t(&x, xs, &w, ws, g, st, pads, outpad);
            let op = build(
                "ConvTranspose",
                11,
                &[
                    ("group", Attribute::Int(g as i64)),
                    (
                        "strides",
                        Attribute::Ints(st.iter().map(|&v| v as i64).collect()),
                    ),
                    (
                        "pads",
                        Attribute::Ints(pads.iter().map(|&v| v as i64).collect()),
                    ),
                    (
                        "output_padding",
                        Attribute::Ints(outpad.iter().map(|&v| v as i64).collect()),
                    ),
                ],
                2,
                1,
            );
            let out = eval(op.as_ref(), &[Some(t(&x, &xs)), Some(t(&w, &ws))]);
            assert_eq!(out[0].shape(), &shape[..]);
            for (i, (a, e)) in out[0]
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .zip(&want)
                .enumerate()
            {
                assert!(
                    (a - e).abs() <= 1e-3 * (1.0 + e.abs()),
                    "element {i}: {a} vs {e}"
                );
            }
        }
    }

    #[test]
    fn conv_transpose_by_hand_and_errors() {
        // Stride 2, 1-wide kernel: zeros interleaved; bias added everywhere.
        let op = build(
            "ConvTranspose",
            1,
            &[("strides", Attribute::Ints(vec![2]))],
            3,
            1,
        );
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[1., 2., 3.], &[1, 1, 3])),
                Some(t(&[2.], &[1, 1, 1])),
                Some(t(&[0.5], &[1])),
            ],
        );
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[2.5, 0.5, 4.5, 0.5, 6.5]
        );
        // VALID behaves like no padding.
        let op = build("ConvTranspose", 11, &[("auto_pad", s("VALID"))], 2, 1);
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[1., 2.], &[1, 1, 2])),
                Some(t(&[1., 1.], &[1, 1, 2])),
            ],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1., 3., 2.]);
        let op = build(
            "ConvTranspose",
            11,
            &[("pads", Attribute::Ints(vec![3, 3]))],
            2,
            1,
        );
        let e = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([t(&[1., 2.], &[1, 1, 2]), t(&[1., 1.], &[1, 1, 2])]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative size"), "{e}");
        let facts = [
            Fact::known(DType::F32, &[1, 4, 3, 3]),
            Fact::known(DType::F32, &[4, 2, 3, 3]),
        ];
        assert_eq!(
            op.flops(&facts),
            0,
            "pads attribute has the wrong arity for 2-D"
        );
        let op = build("ConvTranspose", 11, &[("group", Attribute::Int(2))], 2, 1);
        assert_eq!(op.flops(&facts), 2 * 4 * 9 * 2 * 9);
        assert_eq!(
            op.infer(&facts).unwrap().unwrap()[0]
                .concrete_shape()
                .unwrap(),
            vec![1, 4, 5, 5]
        );
    }
}
