//! Reduction kernels: the `Reduce*` family, `ArgMax`/`ArgMin`, `CumSum` and `CumProd`.
//!
//! A reduction first merges neighbouring axes that are all reduced or all kept (size-1 axes
//! drop out). The two layouts that cover nearly every model run without copies:
//!
//! - *rows* `[K, R]`: reducing the innermost contiguous axes (softmax-style sums, ReduceMean
//!   over the spatial axes of NCHW): each output folds one contiguous row of `R` elements with
//!   eight independent accumulators, which vectorizes;
//! - *middle* `[K1, R, K2]`: reducing outer or middle axes (ReduceMean over the spatial axes of
//!   NHWC, sums over the batch): rows of `K2` accumulators are updated with contiguous slices.
//!
//! Anything else (reduced axes interleaved with kept ones) is transposed into the rows layout.
//! Accumulation happens in the [`Compute`] type (f32 for f16/bf16); integers wrap.

use crate::kernels::elementwise::num::{Arith, Compute};
use crate::kernels::elementwise::MIN_PARALLEL_CHUNK;
use crate::{BuildCtx, Dim, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{dispatch_numeric, normalize_axis, DType, Element};

/// Which reduction a [`Reduce`] op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// A `Reduce*` op: axes from the `axes` attribute (older opsets) or the optional input 1.
#[derive(Debug, Clone)]
pub struct Reduce {
    op: &'static str,
    kind: ReduceKind,
    attr_axes: Option<Vec<i64>>,
    axes_input: bool,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

fn build_reduce(
    ctx: &BuildCtx<'_>,
    op: &'static str,
    kind: ReduceKind,
    axes_input: bool,
) -> OpResult<Box<dyn Operator>> {
    let keepdims = match ctx.attrs.int_or("keepdims", 1)? {
        0 => false,
        1 => true,
        v => {
            return Err(OpError::attribute(
                "keepdims",
                format!("expected 0 or 1, got {v}"),
            ))
        }
    };
    Ok(Box::new(Reduce {
        op,
        kind,
        attr_axes: if axes_input {
            None
        } else {
            ctx.attrs.ints("axes")?
        },
        axes_input,
        keepdims,
        noop_with_empty_axes: ctx.attrs.int_or("noop_with_empty_axes", 0)? != 0,
    }))
}

/// Registers the reduction ops.
pub fn register(r: &mut OpRegistry) {
    macro_rules! reg {
        ($($name:literal $input_since:literal $kind:ident),* $(,)?) => {$(
            r.register_range("", $name, 1, $input_since - 1,
                |c| build_reduce(c, $name, ReduceKind::$kind, false));
            r.register("", $name, $input_since, |c| build_reduce(c, $name, ReduceKind::$kind, true));
        )*};
    }
    reg!(
        "ReduceSum" 13 Sum, "ReduceMean" 18 Mean, "ReduceMax" 18 Max, "ReduceMin" 18 Min,
        "ReduceProd" 18 Prod, "ReduceL1" 18 L1, "ReduceL2" 18 L2, "ReduceLogSum" 18 LogSum,
        "ReduceLogSumExp" 18 LogSumExp, "ReduceSumSquare" 18 SumSquare,
    );
    r.register("", "ArgMax", 1, |c| build_arg(c, "ArgMax", true));
    r.register("", "ArgMin", 1, |c| build_arg(c, "ArgMin", false));
    r.register("", "CumSum", 11, |c| build_cumulative(c, false));
    r.register("", "CumProd", 26, |c| build_cumulative(c, true));
}

/// Where the reduced axes sit after merging neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[k, r]`: reduce contiguous rows.
    Rows { k: usize, r: usize },
    /// `[k1, r, k2]`: reduce a middle axis.
    Middle { k1: usize, r: usize, k2: usize },
}

fn layout(shape: &[usize], reduced: &[bool]) -> Option<Layout> {
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (&d, &red) in shape.iter().zip(reduced) {
        if d == 1 {
            continue;
        }
        match groups.last_mut() {
            Some((size, r)) if *r == red => *size *= d,
            _ => groups.push((d, red)),
        }
    }
    Some(match groups.as_slice() {
        [] => Layout::Rows { k: 1, r: 1 },
        [(k, false)] => Layout::Rows { k: *k, r: 1 },
        [(r, true)] => Layout::Rows { k: 1, r: *r },
        [(k, false), (r, true)] => Layout::Rows { k: *k, r: *r },
        [(r, true), (k2, false)] => Layout::Middle {
            k1: 1,
            r: *r,
            k2: *k2,
        },
        [(k1, false), (r, true), (k2, false)] => Layout::Middle {
            k1: *k1,
            r: *r,
            k2: *k2,
        },
        _ => return None,
    })
}

/// Output elements per parallel task when each output costs `r` input reads.
fn chunk_for(ctx: &EvalCtx<'_>, outputs: usize, r: usize) -> usize {
    outputs
        .div_ceil(ctx.threads() * 4)
        .max(MIN_PARALLEL_CHUNK / r.max(1))
        .max(1)
}

/// Folds a contiguous row with eight independent accumulators (so the loop vectorizes).
#[inline(always)]
fn fold_row<T: Compute>(
    row: &[T],
    init: T::C,
    map: &impl Fn(T::C) -> T::C,
    comb: &impl Fn(T::C, T::C) -> T::C,
) -> T::C {
    let mut acc = [init; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = comb(acc[i], map(c[i].to_c()));
        }
    }
    let mut r = init;
    for x in chunks.remainder() {
        r = comb(r, map(x.to_c()));
    }
    acc.into_iter().fold(r, comb)
}

/// Runs one reduction given as (identity, per-element map, combine, finish(acc, count)).
#[allow(clippy::too_many_arguments)]
fn run<T: Compute>(
    ctx: &EvalCtx<'_>,
    lay: Layout,
    x: &[T],
    out: &mut [T],
    init: T::C,
    map: impl Fn(T::C) -> T::C + Sync,
    comb: impl Fn(T::C, T::C) -> T::C + Sync,
    fin: impl Fn(T::C, usize) -> T + Sync,
) {
    match lay {
        Layout::Rows { r, .. } => {
            let chunk = chunk_for(ctx, out.len(), r);
            ctx.par_chunks_mut(out, chunk, |ci, c| {
                let s = ci * chunk;
                for (j, o) in c.iter_mut().enumerate() {
                    let row = &x[(s + j) * r..(s + j + 1) * r];
                    *o = fin(fold_row(row, init, &map, &comb), r);
                }
            });
        }
        Layout::Middle { r, k2, .. } => {
            let chunk = chunk_for(ctx, out.len(), r);
            ctx.par_chunks_mut(out, chunk, |ci, c| {
                let start = ci * chunk;
                let end = start + c.len();
                let mut acc = vec![init; c.len()];
                let mut pos = start;
                while pos < end {
                    let (blk, j0) = (pos / k2, pos % k2);
                    let len = (k2 - j0).min(end - pos);
                    let acc_seg = &mut acc[pos - start..pos - start + len];
                    for ri in 0..r {
                        let base = (blk * r + ri) * k2 + j0;
                        for (a, v) in acc_seg.iter_mut().zip(&x[base..base + len]) {
                            *a = comb(*a, map(v.to_c()));
                        }
                    }
                    pos += len;
                }
                for (o, a) in c.iter_mut().zip(acc) {
                    *o = fin(a, r);
                }
            });
        }
    }
}

/// `log(sum(exp(x)))` over rows, shifted by the row maximum for stability.
fn log_sum_exp_rows<T: Compute>(ctx: &EvalCtx<'_>, x: &[T], out: &mut [T], r: usize) {
    let chunk = chunk_for(ctx, out.len(), r);
    ctx.par_chunks_mut(out, chunk, |ci, c| {
        let s = ci * chunk;
        for (j, o) in c.iter_mut().enumerate() {
            let row = &x[(s + j) * r..(s + j + 1) * r];
            let m = fold_row(row, T::C::LOWEST, &|v| v, &|a: T::C, b| a.max_prop(b)).to_f64();
            if !m.is_finite() {
                *o = T::from_f64(m);
                continue;
            }
            let sum: f64 = row.iter().map(|v| (v.to_f64() - m).exp()).sum();
            *o = T::from_f64(m + sum.ln());
        }
    });
}

impl Reduce {
    fn dispatch<T: Compute>(
        &self,
        ctx: &EvalCtx<'_>,
        lay: Layout,
        x: &[T],
        out: &mut [T],
    ) -> OpResult<()> {
        type C<T> = <T as Compute>::C;
        let id = |v: C<T>| v;
        let same = |a: C<T>, _| T::from_c(a);
        match self.kind {
            ReduceKind::Sum => run(ctx, lay, x, out, C::<T>::ZERO, id, |a, b| a.plus(b), same),
            ReduceKind::Mean => run(
                ctx,
                lay,
                x,
                out,
                C::<T>::ZERO,
                id,
                |a, b| a.plus(b),
                |a, n| T::from_c(a.divide(C::<T>::from_f64(n as f64))),
            ),
            ReduceKind::Max => run(
                ctx,
                lay,
                x,
                out,
                C::<T>::LOWEST,
                id,
                |a, b| a.max_prop(b),
                same,
            ),
            ReduceKind::Min => run(
                ctx,
                lay,
                x,
                out,
                C::<T>::HIGHEST,
                id,
                |a, b| a.min_prop(b),
                same,
            ),
            ReduceKind::Prod => run(ctx, lay, x, out, C::<T>::ONE, id, |a, b| a.times(b), same),
            ReduceKind::L1 => run(
                ctx,
                lay,
                x,
                out,
                C::<T>::ZERO,
                |v| v.magnitude(),
                |a, b| a.plus(b),
                same,
            ),
            ReduceKind::SumSquare => run(
                ctx,
                lay,
                x,
                out,
                C::<T>::ZERO,
                |v| v.times(v),
                |a, b| a.plus(b),
                same,
            ),
            ReduceKind::L2 => run(
                ctx,
                lay,
                x,
                out,
                C::<T>::ZERO,
                |v| v.times(v),
                |a, b| a.plus(b),
                |a, _| T::from_f64(a.to_f64().sqrt()),
            ),
            ReduceKind::LogSum => run(
                ctx,
                lay,
                x,
                out,
                C::<T>::ZERO,
                id,
                |a, b| a.plus(b),
                |a, _| T::from_f64(a.to_f64().ln()),
            ),
            ReduceKind::LogSumExp => match lay {
                Layout::Rows { r, .. } => log_sum_exp_rows(ctx, x, out, r),
                Layout::Middle { .. } => {
                    return Err(OpError::Unsupported("LogSumExp over a middle axis".into()))
                }
            },
        }
        Ok(())
    }

    /// The value of a reduction over zero elements.
    fn empty_value(&self) -> f64 {
        match self.kind {
            ReduceKind::Prod => 1.0,
            ReduceKind::Max | ReduceKind::LogSum | ReduceKind::LogSumExp => f64::NEG_INFINITY,
            ReduceKind::Min => f64::INFINITY,
            ReduceKind::Mean => f64::NAN,
            _ => 0.0,
        }
    }

    /// The reduced axes (flags per input axis), or an error naming the bad axis.
    fn reduced_axes(&self, inputs: &Inputs, rank: usize) -> OpResult<Vec<bool>> {
        let (axes, from_input) = if self.axes_input {
            match inputs.opt_tensor(1)? {
                Some(t) => (
                    t.to_i64_vec().map_err(|_| OpError::UnsupportedDType {
                        index: 1,
                        dtype: t.dtype(),
                    })?,
                    true,
                ),
                None => (Vec::new(), true),
            }
        } else {
            (self.attr_axes.clone().unwrap_or_default(), false)
        };
        self.flags_for(&axes, from_input, rank)
    }

    fn flags_for(&self, axes: &[i64], from_input: bool, rank: usize) -> OpResult<Vec<bool>> {
        if axes.is_empty() {
            let noop = self.axes_input && self.noop_with_empty_axes;
            return Ok(vec![!noop; rank]);
        }
        let mut flags = vec![false; rank];
        for &a in axes {
            let ax = normalize_axis(a, rank).map_err(|_| {
                let reason = format!("axis {a} is out of range for rank {rank}");
                if from_input {
                    OpError::invalid(1, reason)
                } else {
                    OpError::attribute("axes", reason)
                }
            })?;
            flags[ax] = true;
        }
        Ok(flags)
    }

    fn out_shape<D: Clone>(&self, shape: &[D], flags: &[bool], one: D) -> Vec<D> {
        shape
            .iter()
            .zip(flags)
            .filter_map(|(d, &red)| match (red, self.keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(one.clone()),
                (true, false) => None,
            })
            .collect()
    }
}

impl Operator for Reduce {
    fn op_type(&self) -> &str {
        self.op
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(x) = inputs.first() else {
            return Ok(None);
        };
        let axes = if self.axes_input {
            match inputs.get(1) {
                None => Some(Vec::new()),
                Some(f) => match &f.value {
                    Some(t) => Some(t.to_i64_vec()?),
                    None if f
                        .shape
                        .as_ref()
                        .is_some_and(|s| s.first() == Some(&Dim::Known(0))) =>
                    {
                        Some(Vec::new())
                    }
                    None => None,
                },
            }
        } else {
            Some(self.attr_axes.clone().unwrap_or_default())
        };
        let shape = match (&x.shape, axes) {
            (Some(s), Some(axes)) => {
                let flags = self.flags_for(&axes, self.axes_input, s.len())?;
                Some(self.out_shape(s, &flags, Dim::Known(1)))
            }
            _ => None,
        };
        Ok(Some(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let mut x = inputs.tensor(0)?.contiguous();
        let flags = self.reduced_axes(&inputs, x.rank())?;
        let out_shape = self.out_shape(x.shape(), &flags, 1);
        let dtype = x.dtype();
        let mut out = ctx.alloc(dtype, &out_shape)?;
        let bool_minmax =
            dtype == DType::Bool && matches!(self.kind, ReduceKind::Max | ReduceKind::Min);
        let float_only = self.kind == ReduceKind::LogSumExp && !dtype.is_float();
        if float_only || (dtype == DType::Bool && !bool_minmax) {
            return Err(OpError::UnsupportedDType { index: 0, dtype });
        }
        if x.is_empty() {
            let v = self.empty_value();
            dispatch_numeric!(dtype, T => out.as_slice_mut::<T>()?.fill(
                if T::IS_FLOAT { T::from_f64(v) } else if v.is_infinite() {
                    if v > 0.0 { T::HIGHEST } else { T::LOWEST }
                } else if v.is_nan() { T::ZERO } else { T::from_f64(v) }),
                if bool_minmax { out.as_bool_slice_mut()?.fill(u8::from(self.kind == ReduceKind::Min)) });
            return Ok(vec![out.into()]);
        }
        let lay = match layout(x.shape(), &flags) {
            Some(l @ Layout::Rows { .. }) => l,
            Some(l @ Layout::Middle { .. }) if self.kind != ReduceKind::LogSumExp => l,
            _ => {
                // Move the reduced axes last, then reduce rows.
                let mut perm: Vec<usize> = (0..x.rank()).filter(|&a| !flags[a]).collect();
                perm.extend((0..x.rank()).filter(|&a| flags[a]));
                let r: usize = (0..x.rank())
                    .filter(|&a| flags[a])
                    .map(|a| x.shape()[a])
                    .product();
                x = x.permute(&perm)?.contiguous();
                Layout::Rows { k: out.len(), r }
            }
        };
        if bool_minmax {
            self.dispatch::<u8>(ctx, lay, x.as_bool_slice()?, out.as_bool_slice_mut()?)?;
        } else {
            dispatch_numeric!(dtype, T => self.dispatch::<T>(ctx, lay, x.as_slice::<T>()?, out.as_slice_mut::<T>()?)?,
                return Err(OpError::UnsupportedDType { index: 0, dtype }));
        }
        Ok(vec![out.into()])
    }
}

/// `ArgMax` / `ArgMin`: index (i64) of the extreme value along `axis`; NaN counts as the
/// extreme, ties go to the first index unless `select_last_index` is set.
#[derive(Debug, Clone)]
pub struct ArgReduce {
    op: &'static str,
    max: bool,
    axis: i64,
    keepdims: bool,
    select_last: bool,
}

fn build_arg(ctx: &BuildCtx<'_>, op: &'static str, max: bool) -> OpResult<Box<dyn Operator>> {
    Ok(Box::new(ArgReduce {
        op,
        max,
        axis: ctx.attrs.int_or("axis", 0)?,
        keepdims: ctx.attrs.int_or("keepdims", 1)? != 0,
        select_last: ctx.attrs.int_or("select_last_index", 0)? != 0,
    }))
}

/// Splits a shape around `axis` into (outer, axis length, inner) element counts.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn arg_reduce<T: Arith, const MAX: bool, const LAST: bool>(
    ctx: &EvalCtx<'_>,
    x: &[T],
    out: &mut [i64],
    n: usize,
    inner: usize,
) {
    let better = |v: T, b: T| {
        let strictly = if MAX { v > b } else { v < b };
        strictly || (v.nan() && !b.nan()) || (LAST && (v == b || (v.nan() && b.nan())))
    };
    let per_task = chunk_for(ctx, out.len(), n).div_ceil(inner) * inner;
    ctx.par_chunks_mut(out, per_task, |ci, c| {
        let first_block = ci * per_task / inner;
        let mut best: Vec<T> = vec![T::ZERO; inner];
        for (b, ob) in c.chunks_mut(inner).enumerate() {
            let block = &x[(first_block + b) * n * inner..(first_block + b + 1) * n * inner];
            best.copy_from_slice(&block[..inner]);
            ob.fill(0);
            for r in 1..n {
                let row = &block[r * inner..(r + 1) * inner];
                for ((bv, oi), &v) in best.iter_mut().zip(ob.iter_mut()).zip(row) {
                    if better(v, *bv) {
                        *bv = v;
                        *oi = r as i64;
                    }
                }
            }
        }
    });
}

impl ArgReduce {
    /// The reduced axis (negative counts from the end).
    pub fn axis(&self) -> i64 {
        self.axis
    }
}

impl Operator for ArgReduce {
    fn op_type(&self) -> &str {
        self.op
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(x) = inputs.first() else {
            return Ok(None);
        };
        let shape = match &x.shape {
            Some(s) => {
                let axis = normalize_axis(self.axis, s.len())
                    .map_err(|e| OpError::attribute("axis", e.to_string()))?;
                let mut s = s.clone();
                if self.keepdims {
                    s[axis] = Dim::Known(1);
                } else {
                    s.remove(axis);
                }
                Some(s)
            }
            None => None,
        };
        Ok(Some(vec![Fact {
            dtype: Some(DType::I64),
            shape,
            value: None,
        }]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let axis = normalize_axis(self.axis, x.rank())
            .map_err(|e| OpError::attribute("axis", e.to_string()))?;
        let (_, n, inner) = split_at_axis(x.shape(), axis);
        let mut shape = x.shape().to_vec();
        if self.keepdims {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        let mut out = ctx.alloc(DType::I64, &shape)?;
        if out.is_empty() {
            return Ok(vec![out.into()]);
        }
        if n == 0 {
            return Err(OpError::invalid(
                0,
                format!(
                    "{} over axis {axis} of length 0 (shape {:?})",
                    self.op,
                    x.shape()
                ),
            ));
        }
        let o = out.as_slice_mut::<i64>()?;
        dispatch_numeric!(x.dtype(), T => {
            let xs = x.as_slice::<T>()?;
            match (self.max, self.select_last) {
                (true, false) => arg_reduce::<T, true, false>(ctx, xs, o, n, inner),
                (true, true) => arg_reduce::<T, true, true>(ctx, xs, o, n, inner),
                (false, false) => arg_reduce::<T, false, false>(ctx, xs, o, n, inner),
                (false, true) => arg_reduce::<T, false, true>(ctx, xs, o, n, inner),
            }
        }, return Err(OpError::UnsupportedDType { index: 0, dtype: x.dtype() }));
        Ok(vec![out.into()])
    }
}

fn build_cumulative(c: &BuildCtx<'_>, product: bool) -> OpResult<Box<dyn Operator>> {
    Ok(Box::new(Cumulative {
        product,
        exclusive: c.attrs.int_or("exclusive", 0)? != 0,
        reverse: c.attrs.int_or("reverse", 0)? != 0,
    }))
}

/// `CumSum(x, axis)` / `CumProd(x, axis)`: running sums or products along `axis`, optionally
/// exclusive (starting from the identity, 0 or 1) and/or reversed.
#[derive(Debug, Clone)]
pub struct Cumulative {
    product: bool,
    exclusive: bool,
    reverse: bool,
}

impl Cumulative {
    fn scan<T: Arith>(&self, ctx: &EvalCtx<'_>, x: &[T], out: &mut [T], n: usize, inner: usize) {
        let block = n * inner;
        let (exclusive, reverse, product) = (self.exclusive, self.reverse, self.product);
        let identity = if product { T::ONE } else { T::ZERO };
        let per_task = chunk_for(ctx, out.len(), 1).div_ceil(block.max(1)) * block.max(1);
        ctx.par_chunks_mut(out, per_task, |ci, c| {
            let first = ci * per_task / block.max(1);
            for (b, ob) in c.chunks_mut(block.max(1)).enumerate() {
                let xb = &x[(first + b) * block..(first + b + 1) * block];
                let row = |i: usize| if reverse { n - 1 - i } else { i };
                let r0 = row(0);
                let dst = &mut ob[r0 * inner..(r0 + 1) * inner];
                if exclusive {
                    dst.fill(identity);
                } else {
                    dst.copy_from_slice(&xb[r0 * inner..(r0 + 1) * inner]);
                }
                for i in 1..n {
                    let (r, p) = (row(i), row(i - 1));
                    let add_row = if exclusive { p } else { r };
                    let add = &xb[add_row * inner..(add_row + 1) * inner];
                    let (prev, cur) = if r > p {
                        let (lo, hi) = ob.split_at_mut(r * inner);
                        (&lo[p * inner..(p + 1) * inner], &mut hi[..inner])
                    } else {
                        let (lo, hi) = ob.split_at_mut(p * inner);
                        (&hi[..inner], &mut lo[r * inner..(r + 1) * inner])
                    };
                    for ((o, &pv), &a) in cur.iter_mut().zip(prev).zip(add) {
                        *o = if product { pv.times(a) } else { pv.plus(a) };
                    }
                }
            }
        });
    }
}

impl Operator for Cumulative {
    fn op_type(&self) -> &str {
        if self.product {
            "CumProd"
        } else {
            "CumSum"
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                value: None,
                ..f.clone()
            }]
        }))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?.contiguous();
        let axis_t = inputs.tensor(1)?;
        let axes = axis_t.to_i64_vec().map_err(|_| OpError::UnsupportedDType {
            index: 1,
            dtype: axis_t.dtype(),
        })?;
        let [axis] = axes.as_slice() else {
            return Err(OpError::invalid(
                1,
                format!("axis must hold one value, got shape {:?}", axis_t.shape()),
            ));
        };
        let axis =
            normalize_axis(*axis, x.rank()).map_err(|e| OpError::invalid(1, e.to_string()))?;
        let (_, n, inner) = split_at_axis(x.shape(), axis);
        let mut out = ctx.alloc(x.dtype(), x.shape())?;
        if out.is_empty() {
            return Ok(vec![out.into()]);
        }
        dispatch_numeric!(x.dtype(), T => self.scan::<T>(ctx, x.as_slice::<T>()?, out.as_slice_mut::<T>()?, n, inner),
            return Err(OpError::UnsupportedDType { index: 0, dtype: x.dtype() }));
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests;
