//! Pooling: `MaxPool` (with the optional `Indices` output), `AveragePool`, `LpPool` and their
//! global forms, for 1-D to 3-D spatial inputs. Each (batch, channel) plane is one task.

use super::{
    concrete, depthwise, depthwise_blocked, flag, for_each_tap_row, row_pool, Geo3, SpatialAttrs,
};
use crate::kernels::linalg::{eval_via_f32, Float};
use crate::kernels::simd;
use crate::{
    Attribute, BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator,
    ShapeCache, Value,
};
use std::sync::Arc;
use strata_tensor::{DType, Element, Tensor};

/// Registers the pooling ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "MaxPool", 1, |c| build_pool(c, PoolKind::Max));
    registry.register("", "AveragePool", 1, |c| build_pool(c, PoolKind::Average));
    registry.register("", "LpPool", 1, |c| build_pool(c, PoolKind::Lp));
    registry.register("", "GlobalMaxPool", 1, |c| build_global(c, PoolKind::Max));
    registry.register("", "GlobalAveragePool", 1, |c| {
        build_global(c, PoolKind::Average)
    });
    registry.register("", "GlobalLpPool", 1, |c| build_global(c, PoolKind::Lp));
}

/// The reduction a pool applies to each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum.
    Max,
    /// Mean.
    Average,
    /// `(sum |x|^p)^(1/p)`.
    Lp,
}

/// `p` of LpPool: a float in opset 1, an int from opset 2 (either is accepted). Default 2.
fn parse_p(ctx: &BuildCtx<'_>) -> OpResult<f32> {
    let p = match ctx.attrs.get("p") {
        None => 2.0,
        Some(Attribute::Int(v)) => *v as f32,
        Some(Attribute::Float(v)) => *v,
        Some(_) => return Err(OpError::attribute("p", "expected an int or float")),
    };
    if p.is_finite() && p > 0.0 {
        Ok(p)
    } else {
        Err(OpError::attribute(
            "p",
            format!("must be positive, got {p}"),
        ))
    }
}

fn build_pool(ctx: &BuildCtx<'_>, kind: PoolKind) -> OpResult<Box<dyn Operator>> {
    let spatial = SpatialAttrs::parse(ctx.attrs)?;
    if spatial.kernel.is_none() {
        return Err(OpError::attribute("kernel_shape", "is required"));
    }
    let storage_order = flag(ctx.attrs, "storage_order", 0)?;
    Ok(Box::new(Pool {
        kind,
        spatial,
        ceil_mode: flag(ctx.attrs, "ceil_mode", 0)?,
        count_include_pad: flag(ctx.attrs, "count_include_pad", 0)?,
        storage_order,
        p: if kind == PoolKind::Lp {
            parse_p(ctx)?
        } else {
            2.0
        },
        want_indices: kind == PoolKind::Max && ctx.output_count > 1,
        plans: ShapeCache::default(),
    }))
}

/// `MaxPool` (opsets 1-22), `AveragePool` (opsets 1-22) or `LpPool` (opsets 1-22).
#[derive(Debug, Clone)]
pub struct Pool {
    /// The reduction.
    pub kind: PoolKind,
    /// Kernel, strides, dilations, pads, auto_pad.
    pub spatial: SpatialAttrs,
    /// Round output sizes up.
    pub ceil_mode: bool,
    /// AveragePool: divide by the window size including padding.
    pub count_include_pad: bool,
    /// MaxPool: column-major spatial indices.
    pub storage_order: bool,
    /// LpPool exponent.
    pub p: f32,
    /// MaxPool: the node asks for the `Indices` output.
    pub want_indices: bool,
    /// The [`PoolPlan`] of the last input shape.
    pub plans: ShapeCache<PoolPlan>,
}

/// What a pool derives from its input shape, computed once per shape.
#[derive(Debug)]
pub struct PoolPlan {
    geo: Geo3,
    out_shape: Vec<usize>,
    taps: Taps,
    /// AveragePool: the outputs whose window is cut, with their element counts
    /// ([`cut_windows`]); empty for other pools.
    cut: Vec<(usize, usize)>,
}

/// Per-axis tap ranges for each output position.
#[derive(Debug)]
struct Taps {
    /// `[lo, hi)` of kernel taps landing inside the input, per output index, per axis.
    valid: [Vec<(usize, usize)>; 3],
    /// Number of taps inside the input plus explicit padding, per output index, per axis.
    padded: [Vec<usize>; 3],
}

fn taps(g: &Geo3) -> Taps {
    let axis = |a: usize| -> (Vec<(usize, usize)>, Vec<usize>) {
        let (s, d, k, n_in) = (g.strides[a], g.dilations[a], g.kernel[a], g.input[a]);
        let (pb, pe) = (g.pad_begin[a], g.pad_end[a]);
        (0..g.output[a])
            .map(|o| {
                let start = o * s; // window start in padded coordinates
                let lo = if start >= pb {
                    0
                } else {
                    (pb - start).div_ceil(d)
                };
                let hi = if n_in + pb > start {
                    ((n_in + pb - start - 1) / d + 1).min(k)
                } else {
                    0
                };
                let limit = n_in + pb + pe;
                let padded = if limit > start {
                    (limit - start).div_ceil(d).min(k)
                } else {
                    0
                };
                ((lo.min(hi), hi), padded)
            })
            .unzip()
    };
    let (v0, p0) = axis(0);
    let (v1, p1) = axis(1);
    let (v2, p2) = axis(2);
    Taps {
        valid: [v0, v1, v2],
        padded: [p0, p1, p2],
    }
}

impl Pool {
    /// The plan for input shape `x`, from the cache when the shape repeats.
    fn plan(&self, x: &[usize]) -> OpResult<Arc<PoolPlan>> {
        self.plans.get_or_try_insert(x, || {
            let (geo, out_shape) = self.geometry(x)?;
            let taps = taps(&geo);
            let cut = if self.kind == PoolKind::Average {
                cut_windows(&geo, &taps, self.count_include_pad)
            } else {
                Vec::new()
            };
            Ok(PoolPlan {
                geo,
                out_shape,
                taps,
                cut,
            })
        })
    }

    fn geometry(&self, x: &[usize]) -> OpResult<(Geo3, Vec<usize>)> {
        if x.len() < 3 {
            return Err(OpError::invalid(
                0,
                format!("pool input must have rank >= 3, got shape {x:?}"),
            ));
        }
        let kernel = self.spatial.kernel.as_deref().unwrap_or_default();
        let geo = self.spatial.resolve(&x[2..], kernel, self.ceil_mode)?;
        let mut out = x[..2].to_vec();
        out.extend_from_slice(&geo.output);
        Ok((geo.geo3()?, out))
    }

    fn run_max<T: Element>(&self, ctx: &EvalCtx<'_>, x: &Tensor) -> OpResult<Vec<Value>> {
        let x = x.contiguous();
        let plan = self.plan(x.shape())?;
        let (g, t) = (&plan.geo, &plan.taps);
        let xv = x.as_slice::<T>()?;
        let mut out = ctx.alloc(T::DTYPE, &plan.out_shape)?;
        let (isz, osz) = (g.in_size(), g.out_size());
        let col_major = self.storage_order;
        let kernel = |plane_idx: usize, o: &mut [T], mut ind: Option<&mut [i64]>| {
            let xp = &xv[plane_idx * isz..][..isz];
            let base = (plane_idx * isz) as i64;
            let [id, ih, iw] = g.input;
            let [od, oh, ow] = g.output;
            let mut i = 0;
            for z in 0..od {
                let (z0, z1) = t.valid[0][z];
                for y in 0..oh {
                    let (y0, y1) = t.valid[1][y];
                    for xo in 0..ow {
                        let (x0, x1) = t.valid[2][xo];
                        let mut best: Option<(T, usize)> = None;
                        for kz in z0..z1 {
                            let iz = z * g.strides[0] + kz * g.dilations[0] - g.pad_begin[0];
                            for ky in y0..y1 {
                                let iy = y * g.strides[1] + ky * g.dilations[1] - g.pad_begin[1];
                                let row = (iz * ih + iy) * iw;
                                for kx in x0..x1 {
                                    let ix =
                                        xo * g.strides[2] + kx * g.dilations[2] - g.pad_begin[2];
                                    let v = xp[row + ix];
                                    if best.is_none_or(|(b, _)| v > b) {
                                        best = Some((v, row + ix));
                                    }
                                }
                            }
                        }
                        let (v, at) = best.unwrap_or((T::default(), 0));
                        o[i] = v;
                        if let Some(ind) = ind.as_deref_mut() {
                            let at = if col_major {
                                let (iz, rest) = (at / (ih * iw), at % (ih * iw));
                                let (iy, ix) = (rest / iw, rest % iw);
                                (ix * ih + iy) * id + iz
                            } else {
                                at
                            };
                            ind[i] = base + at as i64;
                        }
                        i += 1;
                    }
                }
            }
        };
        let o = out.as_slice_mut::<T>()?;
        if !self.want_indices {
            let planes = (o.len() / osz.max(1)).div_ceil(ctx.threads() * 4).max(1);
            ctx.par_chunks_mut(o, planes * osz.max(1), |ci, chunk| {
                for (j, plane) in chunk.chunks_mut(osz.max(1)).enumerate() {
                    kernel(ci * planes + j, plane, None);
                }
            });
            return Ok(vec![out.into()]);
        }
        let mut indices = ctx.alloc(DType::I64, &plan.out_shape)?;
        let iv = indices.as_slice_mut::<i64>()?;
        let mut pairs: Vec<(&mut [T], &mut [i64])> = o
            .chunks_mut(osz.max(1))
            .zip(iv.chunks_mut(osz.max(1)))
            .collect();
        ctx.par_chunks_mut(&mut pairs, 1, |ci, pair| {
            if let Some((o, ind)) = pair.first_mut() {
                kernel(ci, o, Some(ind));
            }
        });
        drop(pairs);
        Ok(vec![out.into(), indices.into()])
    }

    fn run_float<F: Float>(&self, ctx: &EvalCtx<'_>, x: &Tensor) -> OpResult<Vec<Value>> {
        let x = x.contiguous();
        let plan = self.plan(x.shape())?;
        let (g, t) = (&plan.geo, &plan.taps);
        let xv = x.as_slice::<F>()?;
        // Each plane is filled (max/average) or written element by element (Lp) below.
        let mut out = ctx.alloc_for_overwrite(F::DTYPE, &plan.out_shape)?;
        let (isz, osz) = (g.in_size(), g.out_size().max(1));
        let p = F::from_f32(self.p);
        let kind = self.kind;
        // Each window's mean is computed as its sum times `1 / window size`: a depthwise
        // convolution with that weight at every tap. Windows cut by the edges are rescaled.
        // (Up to a few units in the last place from a division of the sum.)
        let window = g.kernel_size();
        // One weight per tap for each channel of a channel block (plane at a time reads the
        // first channel's).
        let mean_weights = vec![F::ONE / F::from_usize(window); depthwise_blocked::BLOCK * window];
        let whole_plane = covers_whole_plane(g);
        let kernel = |plane_idx: usize, o: &mut [F], scratch: &mut depthwise::Scratch<F>| {
            let xp = &xv[plane_idx * isz..][..isz];
            if whole_plane && kind != PoolKind::Lp {
                o[0] = simd::wide(
                    #[inline(always)]
                    || fold_plane(kind, xp),
                );
                return;
            }
            match kind {
                PoolKind::Max => simd::wide(
                    #[inline(always)]
                    || pool_plane_rows(xp, g, scratch.vec(), o),
                ),
                PoolKind::Average => simd::wide(
                    #[inline(always)]
                    || {
                        o.fill(F::ZERO);
                        depthwise::plane(xp, &mean_weights[..window], g, scratch, o, None);
                        rescale_cut(o, osz, &plan.cut, window);
                    },
                ),
                PoolKind::Lp => lp_plane(xp, g, t, p, o),
            }
        };
        let o = out.as_slice_mut::<F>()?;
        let blocked = match kind {
            _ if whole_plane => false,
            // 3x3 windows at stride 2 or 1 run faster in registers, row by row (measured, 1
            // thread, inputs named: max pools at stride 2 256x27x27 0.071 -> 0.027 ms,
            // 832x14x14 0.068 -> 0.040, 480x28x28 0.140 -> 0.050 against blocked, 64x111x111
            // 0.123 -> 0.087 and 128x55x55 0.077 -> 0.069 against the row buffer; padded
            // by 1 at stride 1, average 576x14x14 0.096 -> 0.064, 256x28x28 0.139 -> 0.080,
            // 1024x7x7 0.060 -> 0.056, 64x56x56 0.090 -> 0.066, max 480x14x14 0.076 ->
            // 0.037, 32x112x112 0.120 -> 0.092).
            _ if (row_pool::halves_3x3(g) || row_pool::keeps_3x3(g)) && simd::has_avx512() => false,
            PoolKind::Max => blocked_pool(ctx, xv, g, o, None),
            PoolKind::Average => blocked_pool(
                ctx,
                xv,
                g,
                o,
                Some(Mean {
                    cut: &plan.cut,
                    weights: &mean_weights,
                }),
            ),
            PoolKind::Lp => false,
        };
        if blocked {
            return Ok(vec![out.into()]);
        }
        let planes = (o.len() / osz).div_ceil(ctx.threads() * 4).max(1);
        ctx.par_chunks_mut(o, planes * osz, |ci, chunk| {
            depthwise::Scratch::with_thread_local(|scratch| {
                let first = ci * planes;
                let xs = &xv[first * isz..][..chunk.len() / osz * isz];
                let reduce = match kind {
                    PoolKind::Max => Some(row_pool::Reduce::Max),
                    PoolKind::Average => Some(row_pool::Reduce::Mean),
                    PoolKind::Lp => None,
                };
                if let Some(reduce) = reduce.filter(|_| !whole_plane) {
                    if row_pool::planes(xs, g, reduce, scratch.vec(), chunk) {
                        if kind == PoolKind::Average {
                            rescale_cut(chunk, osz, &plan.cut, window);
                        }
                        return;
                    }
                }
                for (j, plane) in chunk.chunks_mut(osz).enumerate() {
                    kernel(ci * planes + j, plane, scratch);
                }
            });
        });
        Ok(vec![out.into()])
    }
}

impl Operator for Pool {
    fn op_type(&self) -> &str {
        match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Average => "AveragePool",
            PoolKind::Lp => "LpPool",
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(dt), Some(x)) = (inputs.first().and_then(|f| f.dtype), concrete(inputs, 0))
        else {
            return Ok(None);
        };
        let (_, shape) = self.geometry(&x)?;
        let mut facts = vec![Fact::known(dt, &shape)];
        if self.want_indices {
            facts.push(Fact::known(DType::I64, &shape));
        }
        Ok(Some(facts))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let dt = x.dtype();
        match (self.kind, dt) {
            (PoolKind::Max, DType::F32) if self.want_indices => self.run_max::<f32>(ctx, x),
            (PoolKind::Max, DType::F64) if self.want_indices => self.run_max::<f64>(ctx, x),
            (PoolKind::Max, DType::I8) => self.run_max::<i8>(ctx, x),
            (PoolKind::Max, DType::U8) => self.run_max::<u8>(ctx, x),
            (_, DType::F32) => self.run_float::<f32>(ctx, x),
            (_, DType::F64) => self.run_float::<f64>(ctx, x),
            (_, DType::F16 | DType::BF16) => {
                eval_via_f32(ctx, &inputs, dt, 1, |c, i| self.eval(c, i))
            }
            (_, d) => Err(OpError::UnsupportedDType { index: 0, dtype: d }),
        }
    }
}

/// Max pooling of one plane, output row by output row: each kernel tap updates the valid
/// range of the row at once (vectorizable). Windows with no valid tap keep -inf. Inlined into
/// [`simd::wide`]'s wide-vector callers.
#[inline(always)]
fn pool_plane_rows<F: Float>(x: &[F], g: &Geo3, scratch: &mut Vec<F>, out: &mut [F]) {
    out.fill(F::NEG_INFINITY);
    for_each_tap_row(x, g, scratch, out, |_, dst, src| {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = if v > *o { v } else { *o };
        }
    });
}

/// Output plane size up to which pooling runs channel-blocked (unless the window is 3x3 at
/// stride 1 or 2, pooled in registers by [`row_pool`]). Measured in the models, 1
/// thread: 13x13 and 6x6 max pool outputs 1.3-5x faster blocked (Inception v1's 3x3 pools
/// on 13x13: 0.088 -> 0.065 ms; on 6x6: 0.090 -> 0.028), 7x7 average pools 2x (Inception
/// v2's 1024x7x7 0.145 -> 0.082 ms), 14x14 ones even; 27x27 and larger outputs 5-40%
/// slower.
const BLOCKED_POOL_OUTPUT: usize = 256;

/// What average pooling adds to the blocked path: the outputs whose window holds fewer
/// inputs (as [`Pool::plan`] found them, with their counts) and `1 / window size` weights for
/// at least [`depthwise_blocked::BLOCK`] channels.
struct Mean<'a, F> {
    cut: &'a [(usize, usize)],
    weights: &'a [F],
}

/// Max pooling (`mean` is `None`) or average pooling ([`Mean`]) of f32 2-D planes, 16 at a time in a
/// channel-interleaved layout ([`depthwise_blocked`]): the maximum, or the window's sum
/// times `1 / window size` rescaled where cut, for small output planes (at most
/// [`BLOCKED_POOL_OUTPUT`] pixels). False, with `out` untouched, where it does not apply.
fn blocked_pool<F: Float>(
    ctx: &EvalCtx<'_>,
    x: &[F],
    g: &Geo3,
    out: &mut [F],
    mean: Option<Mean<'_, F>>,
) -> bool {
    let (isz, osz, window) = (g.in_size(), g.out_size(), g.kernel_size());
    if !depthwise_blocked::applies(g)
        || osz > BLOCKED_POOL_OUTPUT
        || x.len() / isz.max(1) != out.len() / osz.max(1)
    {
        return false;
    }
    let (Some(x), Some(o)) = (F::as_f32s(x), F::as_f32s_mut(out)) else {
        return false;
    };
    let mean = match mean.map(|m| (m.cut, F::as_f32s(m.weights))) {
        None => None,
        Some((cut, Some(w))) => Some((cut, w)),
        Some((_, None)) => return false,
    };
    depthwise_blocked::par_blocks(ctx, o, osz, |first, planes, scratch| {
        let channels = planes.len() / osz;
        let xs = &x[first * isz..][..channels * isz];
        // Applies for every block once it applies for the geometry.
        let ran = match mean {
            None => depthwise_blocked::run_max(xs, planes, channels, g, scratch),
            Some((cut, mean)) => {
                let block = depthwise_blocked::Block {
                    x: xs,
                    w: mean,
                    bias: None,
                    sum: None,
                    out: planes,
                    channels,
                };
                let ran = depthwise_blocked::run(block, g, None, scratch);
                rescale_cut(planes, osz, cut, window);
                ran
            }
        };
        debug_assert!(ran);
    });
    true
}

/// Rescales the cut outputs of each `osz`-long plane of mean pooled `planes` from a mean over
/// the whole window to one over the `count` inputs it holds (0 for none).
fn rescale_cut<F: Float>(planes: &mut [F], osz: usize, cut: &[(usize, usize)], window: usize) {
    let whole_window = F::from_usize(window);
    let factor = |count: usize| {
        if count == 0 {
            F::ZERO
        } else {
            whole_window / F::from_usize(count)
        }
    };
    // Runs of cut outputs share a count (along each edge): one division per run, not per
    // output.
    let mut last = cut.first().map(|&(_, count)| (count, factor(count)));
    for plane in planes.chunks_mut(osz) {
        for &(i, count) in cut {
            let f = match last {
                Some((c, f)) if c == count => f,
                _ => {
                    let f = factor(count);
                    last = Some((count, f));
                    f
                }
            };
            plane[i] *= f;
        }
    }
}

/// Whether a pool's only window is the whole plane: one output, no padding, a kernel the
/// size of the input (the global pool's single reduction).
fn covers_whole_plane(g: &Geo3) -> bool {
    (0..3).all(|a| {
        g.output[a] == 1
            && g.pad_begin[a] == 0
            && g.pad_end[a] == 0
            && (g.kernel[a] == g.input[a] && (g.dilations[a] == 1 || g.input[a] == 1))
    })
}

/// The maximum or the mean of a whole plane, as the global pools compute it.
#[inline(always)]
fn fold_plane<F: Float>(kind: PoolKind, xs: &[F]) -> F {
    if kind == PoolKind::Max {
        simd::lane_fold(xs, F::NEG_INFINITY, |m, v| if v > m { v } else { m })
    } else {
        simd::lane_fold(xs, F::ZERO, |a, v| a + v) / F::from_usize(xs.len().max(1))
    }
}

/// The outputs of a plane whose window holds a different element count than the whole
/// window (cut by the input's edges, unless padding counts, or by the padded region's end),
/// each with its element count: a whole-window mean (sum times `1 / window size`) times
/// `window size / count` is the mean over its own elements (0 for a window with none).
fn cut_windows(g: &Geo3, t: &Taps, include_pad: bool) -> Vec<(usize, usize)> {
    let count = |a: usize, i: usize| {
        if include_pad {
            t.padded[a][i]
        } else {
            t.valid[a][i].1 - t.valid[a][i].0
        }
    };
    let window = g.kernel_size();
    let mut cut = Vec::new();
    let mut i = 0;
    for z in 0..g.output[0] {
        for y in 0..g.output[1] {
            let rows = count(0, z) * count(1, y);
            for x in 0..g.output[2] {
                let c = rows * count(2, x);
                if c != window {
                    cut.push((i, c));
                }
                i += 1;
            }
        }
    }
    cut
}

/// LpPool of one plane: `(sum |x|^p)^(1/p)` over each window's taps inside the input.
fn lp_plane<F: Float>(xp: &[F], g: &Geo3, t: &Taps, p: F, o: &mut [F]) {
    let inv_p = F::ONE / p;
    let [_, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let mut i = 0;
    for z in 0..od {
        let (z0, z1) = t.valid[0][z];
        for y in 0..oh {
            let (y0, y1) = t.valid[1][y];
            for xo in 0..ow {
                let (x0, x1) = t.valid[2][xo];
                let mut acc = F::ZERO;
                for kz in z0..z1 {
                    let iz = z * g.strides[0] + kz * g.dilations[0] - g.pad_begin[0];
                    for ky in y0..y1 {
                        let iy = y * g.strides[1] + ky * g.dilations[1] - g.pad_begin[1];
                        let row = &xp[(iz * ih + iy) * iw..][..iw];
                        for kx in x0..x1 {
                            let v = row[xo * g.strides[2] + kx * g.dilations[2] - g.pad_begin[2]];
                            acc += v.abs().powf(p);
                        }
                    }
                }
                o[i] = acc.powf(inv_p);
                i += 1;
            }
        }
    }
}

// ----- global pools -------------------------------------------------------------------------

fn build_global(ctx: &BuildCtx<'_>, kind: PoolKind) -> OpResult<Box<dyn Operator>> {
    let p = if kind == PoolKind::Lp {
        parse_p(ctx)?
    } else {
        2.0
    };
    Ok(Box::new(GlobalPool { kind, p }))
}

/// `GlobalMaxPool`, `GlobalAveragePool`, `GlobalLpPool` (opsets 1-22): one value per
/// (batch, channel) over all spatial positions; the spatial axes become 1.
#[derive(Debug, Clone, Copy)]
pub struct GlobalPool {
    /// The reduction.
    pub kind: PoolKind,
    /// GlobalLpPool exponent.
    pub p: f32,
}

fn global_shape(x: &[usize]) -> OpResult<Vec<usize>> {
    if x.len() < 2 {
        return Err(OpError::invalid(
            0,
            format!("global pool input must have rank >= 2, got shape {x:?}"),
        ));
    }
    let mut s = vec![1; x.len()];
    s[..2].copy_from_slice(&x[..2]);
    Ok(s)
}

impl GlobalPool {
    fn run<F: Float>(&self, ctx: &EvalCtx<'_>, x: &Tensor) -> OpResult<Tensor> {
        let x = x.contiguous();
        let shape = global_shape(x.shape())?;
        let mut out = ctx.alloc(F::DTYPE, &shape)?;
        let xv = x.as_slice::<F>()?;
        let plane: usize = x.shape()[2..].iter().product();
        let o = out.as_slice_mut::<F>()?;
        if plane == 0 {
            return Err(OpError::invalid(
                0,
                format!("global pool over empty spatial dims {:?}", x.shape()),
            ));
        }
        let (kind, p) = (self.kind, F::from_f32(self.p));
        let per = o.len().div_ceil(ctx.threads() * 4).max(1);
        ctx.par_chunks_mut(o, per, |ci, chunk| {
            simd::wide(
                #[inline(always)]
                || {
                    for (j, v) in chunk.iter_mut().enumerate() {
                        let xs = &xv[(ci * per + j) * plane..][..plane];
                        *v = match kind {
                            PoolKind::Lp => xs
                                .iter()
                                .fold(F::ZERO, |a, &v| a + v.abs().powf(p))
                                .powf(F::ONE / p),
                            _ => fold_plane(kind, xs),
                        };
                    }
                },
            )
        });
        Ok(out)
    }
}

impl Operator for GlobalPool {
    fn op_type(&self) -> &str {
        match self.kind {
            PoolKind::Max => "GlobalMaxPool",
            PoolKind::Average => "GlobalAveragePool",
            PoolKind::Lp => "GlobalLpPool",
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(dt), Some(x)) = (inputs.first().and_then(|f| f.dtype), concrete(inputs, 0))
        else {
            return Ok(None);
        };
        Ok(Some(vec![Fact::known(dt, &global_shape(&x)?)]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let out = match x.dtype() {
            DType::F32 => self.run::<f32>(ctx, x)?,
            DType::F64 => self.run::<f64>(ctx, x)?,
            d @ (DType::F16 | DType::BF16) => {
                return eval_via_f32(ctx, &inputs, d, 1, |c, i| self.eval(c, i))
            }
            d => return Err(OpError::UnsupportedDType { index: 0, dtype: d }),
        };
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{build, build_err, close, eval, f64s, pat, s, t};
    use crate::{Attribute, Fact};
    use strata_tensor::{DType, Tensor};

    #[test]
    fn maxpool_1d_indices_and_padding() {
        let op = build(
            "MaxPool",
            12,
            &[
                ("kernel_shape", Attribute::Ints(vec![2])),
                ("strides", Attribute::Ints(vec![2])),
                ("pads", Attribute::Ints(vec![1, 0])),
            ],
            1,
            2,
        );
        let out = eval(
            op.as_ref(),
            &[Some(t(&[-1., -5., 3., 2., -4., -2., 0., 9.], &[2, 1, 4]))],
        );
        // Padding never wins, even against negative values.
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-1., 3., -4., 0.]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 2, 4, 6]);
        // Without the Indices output only one output is produced.
        let op = build(
            "MaxPool",
            12,
            &[("kernel_shape", Attribute::Ints(vec![3]))],
            1,
            1,
        );
        let out = eval(op.as_ref(), &[Some(t(&[1., 3., 2., 5.], &[1, 1, 4]))]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[3., 5.]);
    }

    #[test]
    fn maxpool_integers_and_column_major_indices() {
        let op = build(
            "MaxPool",
            12,
            &[
                ("kernel_shape", Attribute::Ints(vec![2, 2])),
                ("storage_order", Attribute::Int(1)),
            ],
            1,
            2,
        );
        let x = Tensor::from_vec(vec![1i8, 2, 3, 4, 5, 6, 7, 8, 9], &[1, 1, 3, 3]).unwrap();
        let out = eval(op.as_ref(), &[Some(x)]);
        assert_eq!(out[0].as_slice::<i8>().unwrap(), &[5, 6, 8, 9]);
        // Maxima at (y, x) = (1,1), (1,2), (2,1), (2,2); column-major index x * 3 + y.
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[4, 7, 5, 8]);
        let u = Tensor::from_vec(vec![1u8, 200, 3, 4], &[1, 1, 4]).unwrap();
        let op = build(
            "MaxPool",
            12,
            &[("kernel_shape", Attribute::Ints(vec![2]))],
            1,
            1,
        );
        assert_eq!(
            eval(op.as_ref(), &[Some(u)])[0].as_slice::<u8>().unwrap(),
            &[200, 200, 4]
        );
    }

    /// Means match to a few units in the last place (they are sums times `1 / window`).
    fn assert_means(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 4.0 * f32::EPSILON * w.abs(),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn average_pool_padding_modes() {
        let x = t(&[1., 2., 3., 4.], &[1, 1, 4]);
        let attrs = |include: i64| {
            vec![
                ("kernel_shape", Attribute::Ints(vec![3])),
                ("pads", Attribute::Ints(vec![1, 1])),
                ("count_include_pad", Attribute::Int(include)),
            ]
        };
        let op = build("AveragePool", 11, &attrs(0), 1, 1);
        assert_means(
            eval(op.as_ref(), &[Some(x.clone())])[0]
                .as_slice::<f32>()
                .unwrap(),
            &[1.5, 2., 3., 3.5],
        );
        let op = build("AveragePool", 11, &attrs(1), 1, 1);
        assert_means(
            eval(op.as_ref(), &[Some(x.clone())])[0]
                .as_slice::<f32>()
                .unwrap(),
            &[1., 2., 3., 7. / 3.],
        );
        // ceil_mode adds a partial window that is averaged over its valid part.
        let op = build(
            "AveragePool",
            10,
            &[
                ("kernel_shape", Attribute::Ints(vec![3])),
                ("strides", Attribute::Ints(vec![2])),
                ("ceil_mode", Attribute::Int(1)),
            ],
            1,
            1,
        );
        let x5 = t(&[1., 2., 3., 4., 5., 6.], &[1, 1, 6]);
        assert_means(
            eval(op.as_ref(), &[Some(x5)])[0].as_slice::<f32>().unwrap(),
            &[2., 4., 5.5],
        );
        // VALID and SAME_UPPER.
        let op = build(
            "AveragePool",
            11,
            &[
                ("kernel_shape", Attribute::Ints(vec![2])),
                ("auto_pad", s("VALID")),
            ],
            1,
            1,
        );
        assert_means(
            eval(op.as_ref(), &[Some(x.clone())])[0]
                .as_slice::<f32>()
                .unwrap(),
            &[1.5, 2.5, 3.5],
        );
        let op = build(
            "AveragePool",
            11,
            &[
                ("kernel_shape", Attribute::Ints(vec![2])),
                ("auto_pad", s("SAME_UPPER")),
            ],
            1,
            1,
        );
        assert_means(
            eval(op.as_ref(), &[Some(x)])[0].as_slice::<f32>().unwrap(),
            &[1.5, 2.5, 3.5, 4.],
        );
    }

    #[test]
    fn lp_and_global_pools() {
        let op = build(
            "LpPool",
            1,
            &[
                ("kernel_shape", Attribute::Ints(vec![2])),
                ("p", Attribute::Float(2.0)),
            ],
            1,
            1,
        );
        let out = eval(op.as_ref(), &[Some(t(&[3., -4., 0.], &[1, 1, 3]))]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[5., 4.]);
        let x = t(&[1., -2., 3., 6., 5., 4.], &[1, 2, 3]);
        let g = |name: &str| eval(build(name, 2, &[], 1, 1).as_ref(), &[Some(x.clone())]);
        assert_eq!(
            g("GlobalAveragePool")[0].as_slice::<f32>().unwrap(),
            &[2. / 3., 5.]
        );
        assert_eq!(g("GlobalMaxPool")[0].shape(), &[1, 2, 1]);
        assert_eq!(g("GlobalMaxPool")[0].as_slice::<f32>().unwrap(), &[3., 6.]);
        let lp = g("GlobalLpPool");
        assert!((lp[0].as_slice::<f32>().unwrap()[0] - 14f32.sqrt()).abs() < 1e-6);
        // f16 goes through f32.
        let out = eval(
            build("GlobalAveragePool", 1, &[], 1, 1).as_ref(),
            &[Some(x.cast(DType::F16).unwrap())],
        );
        assert_eq!(out[0].dtype(), DType::F16);
        assert_eq!(f64s(&out[0])[1], 5.0);
        // Planes longer than the 16 lanes, with a remainder and a NaN (skipped by max).
        let mut v = pat(2 * 37, 5);
        v[40] = f32::NAN;
        let x = t(&v, &[1, 2, 37]);
        let g = |name: &str| eval(build(name, 2, &[], 1, 1).as_ref(), &[Some(x.clone())]);
        let avg = g("GlobalAveragePool");
        let max = g("GlobalMaxPool");
        let first = &v[..37];
        let want = first.iter().sum::<f32>() / 37.0;
        assert!((avg[0].as_slice::<f32>().unwrap()[0] - want).abs() < 1e-5);
        assert!(avg[0].as_slice::<f32>().unwrap()[1].is_nan());
        let want = |xs: &[f32]| {
            xs.iter()
                .copied()
                .filter(|x| !x.is_nan())
                .fold(f32::MIN, f32::max)
        };
        assert_eq!(
            max[0].as_slice::<f32>().unwrap(),
            &[want(first), want(&v[37..])]
        );
    }

    #[test]
    fn pools_parallel_planes_match_serial() {
        // Many planes so the two-thread run splits them; eval() checks serial == parallel.
        let x = t(&pat(4 * 6 * 9 * 9, 3), &[4, 6, 9, 9]);
        for name in ["MaxPool", "AveragePool", "LpPool"] {
            let op = build(
                name,
                19,
                &[
                    ("kernel_shape", Attribute::Ints(vec![3, 3])),
                    ("strides", Attribute::Ints(vec![2, 2])),
                    ("pads", Attribute::Ints(vec![1, 1, 1, 1])),
                ],
                1,
                1,
            );
            assert_eq!(
                eval(op.as_ref(), &[Some(x.clone())])[0].shape(),
                &[4, 6, 5, 5]
            );
        }
        let op = build(
            "MaxPool",
            12,
            &[("kernel_shape", Attribute::Ints(vec![2, 2]))],
            1,
            2,
        );
        let out = eval(op.as_ref(), &[Some(x)]);
        assert_eq!(out[1].dtype(), DType::I64);
    }

    /// A naive 2-D average pool of `[c, h, w]` planes (stride 1, kernel `k`, padding `p`
    /// on every side, padding not counted).
    fn naive_average(x: &[f32], [c, h, w]: [usize; 3], k: usize, p: usize) -> Vec<f32> {
        let (oh, ow) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
        let mut out = Vec::new();
        for ci in 0..c {
            for y in 0..oh {
                for xo in 0..ow {
                    let (mut sum, mut n) = (0.0f64, 0);
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = ((y + ky).wrapping_sub(p), (xo + kx).wrapping_sub(p));
                            if iy < h && ix < w {
                                sum += f64::from(x[(ci * h + iy) * w + ix]);
                                n += 1;
                            }
                        }
                    }
                    out.push((sum / f64::from(n)) as f32);
                }
            }
        }
        out
    }

    #[test]
    fn average_and_whole_plane_pools_match_references() {
        // Padded 3x3 means (the depthwise path plus the rescaled edge windows), on planes
        // wider and narrower than a vector; 20 channels: one full channel block and a
        // partial one on small planes.
        for ([h, w], c) in [
            ([14, 14], 3),
            ([7, 40], 3),
            ([5, 3], 3),
            ([14, 14], 20),
            ([5, 3], 20),
        ] {
            let x = pat(c * h * w, 5);
            let op = build(
                "AveragePool",
                19,
                &[
                    ("kernel_shape", Attribute::Ints(vec![3, 3])),
                    ("pads", Attribute::Ints(vec![1, 1, 1, 1])),
                ],
                1,
                1,
            );
            let got = eval(op.as_ref(), &[Some(t(&x, &[1, c, h, w]))]);
            let want: Vec<f64> = naive_average(&x, [c, h, w], 3, 1)
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            close(&f64s(&got[0]), &want, 1e-5);
        }
        // A window as large as the plane is the global pool, NaN skipped by max.
        let mut x = pat(4 * 7 * 7, 6);
        x[3] = f32::NAN;
        let x = t(&x, &[1, 4, 7, 7]);
        for (name, global) in [
            ("AveragePool", "GlobalAveragePool"),
            ("MaxPool", "GlobalMaxPool"),
        ] {
            let op = build(
                name,
                19,
                &[("kernel_shape", Attribute::Ints(vec![7, 7]))],
                1,
                1,
            );
            let got = eval(op.as_ref(), &[Some(x.clone())]);
            let want = eval(build(global, 1, &[], 1, 1).as_ref(), &[Some(x.clone())]);
            assert_eq!(got[0].shape(), &[1, 4, 1, 1]);
            let (g, e) = (
                got[0].as_slice::<f32>().unwrap(),
                want[0].as_slice::<f32>().unwrap(),
            );
            for (a, b) in g.iter().zip(e) {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{name}: {g:?} vs {e:?}"
                );
            }
        }
    }

    #[test]
    fn pool_errors_and_infer() {
        assert!(build_err("MaxPool", 12, &[]).contains("kernel_shape"));
        assert!(build_err(
            "AveragePool",
            12,
            &[
                ("kernel_shape", Attribute::Ints(vec![2])),
                ("ceil_mode", Attribute::Int(3))
            ]
        )
        .contains("ceil_mode"));
        assert!(build_err(
            "LpPool",
            2,
            &[
                ("kernel_shape", Attribute::Ints(vec![2])),
                ("p", Attribute::Int(0))
            ]
        )
        .contains("'p'"));
        let op = build(
            "MaxPool",
            12,
            &[("kernel_shape", Attribute::Ints(vec![2, 2]))],
            1,
            2,
        );
        let facts = op
            .infer(&[Fact::known(DType::F32, &[1, 3, 5, 5])])
            .unwrap()
            .unwrap();
        assert_eq!(facts.len(), 2);
        assert_eq!(facts[1].dtype, Some(DType::I64));
        assert!(op.infer(&[Fact::known(DType::F32, &[1, 3, 5])]).is_err());
        let e = op
            .eval(
                &crate::EvalCtx::default(),
                crate::Inputs::from_tensors([t(&[1.; 4], &[1, 1, 1, 4])]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("smaller than the dilated kernel"), "{e}");
    }
}
