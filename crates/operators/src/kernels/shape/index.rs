//! Ops that select or place elements: Concat, Split, Slice, Gather, GatherElements, GatherND,
//! ScatterND, ScatterElements (and the older Scatter), Compress, NonZero, OneHot.

use super::common::{
    attr_axis, checked_numel, fact, int_input, materialize, norm_index, prod, row_major_strides,
    sizes_from, unique_axes, Elems, ElemsMut,
};
use crate::{
    op_boilerplate, BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use smallvec::SmallVec;
use strata_tensor::{dispatch_numeric, DType, Element, Tensor};

pub(super) fn register(r: &mut OpRegistry) {
    r.register("", "Concat", 1, |b| {
        let axis = match b.attrs.int("axis")? {
            Some(a) => a,
            None if b.opset < 4 => 1,
            None => return Err(OpError::attribute("axis", "required")),
        };
        Ok(Box::new(Concat { axis }))
    });
    r.register("", "Split", 1, build_split);
    r.register_range("", "Slice", 1, 9, |b| {
        let need = |n: &str| {
            b.attrs
                .ints(n)?
                .ok_or_else(|| OpError::attribute(n, "required before opset 10"))
        };
        Ok(Box::new(Slice {
            attrs: Some(SliceAttrs {
                starts: need("starts")?,
                ends: need("ends")?,
                axes: b.attrs.ints("axes")?,
            }),
        }))
    });
    r.register("", "Slice", 10, |_| Ok(Box::new(Slice { attrs: None })));
    r.register("", "Gather", 1, |b| {
        Ok(Box::new(Gather {
            axis: b.attrs.int_or("axis", 0)?,
        }))
    });
    r.register("", "GatherElements", 11, |b| {
        Ok(Box::new(GatherElements {
            axis: b.attrs.int_or("axis", 0)?,
        }))
    });
    r.register("", "GatherND", 11, |b| {
        let batch = if b.opset >= 12 {
            b.attrs.int_or("batch_dims", 0)?
        } else {
            0
        };
        let batch_dims = usize::try_from(batch)
            .map_err(|_| OpError::attribute("batch_dims", format!("{batch} is negative")))?;
        Ok(Box::new(GatherND { batch_dims }))
    });
    r.register("", "ScatterND", 11, |b| {
        Ok(Box::new(ScatterND {
            reduction: reduction(b)?,
        }))
    });
    r.register_range("", "Scatter", 9, 10, |b| {
        Ok(Box::new(ScatterElements {
            axis: b.attrs.int_or("axis", 0)?,
            reduction: Reduction::None,
        }))
    });
    r.register("", "ScatterElements", 11, |b| {
        Ok(Box::new(ScatterElements {
            axis: b.attrs.int_or("axis", 0)?,
            reduction: reduction(b)?,
        }))
    });
    r.register("", "Compress", 9, |b| {
        Ok(Box::new(Compress {
            axis: b.attrs.int("axis")?,
        }))
    });
    r.register("", "NonZero", 9, |_| Ok(Box::new(NonZero)));
    r.register("", "OneHot", 9, |b| {
        Ok(Box::new(OneHot {
            axis: b.attrs.int_or("axis", -1)?,
        }))
    });
}

// ----- Concat -------------------------------------------------------------------------------

/// `Concat`: joins tensors of equal shape except along `axis`.
#[derive(Debug, Clone, Copy)]
pub struct Concat {
    /// The joining axis (negative counts from the end).
    pub axis: i64,
}

fn concat_shape(shapes: &[Vec<usize>], axis: i64) -> OpResult<(usize, Vec<usize>)> {
    let first = shapes.first().ok_or(OpError::MissingInput { index: 0 })?;
    if first.is_empty() {
        return Err(OpError::invalid(0, "cannot concatenate scalars"));
    }
    let a = attr_axis("axis", axis, first.len())?;
    let mut out = first.clone();
    out[a] = 0;
    for (i, s) in shapes.iter().enumerate() {
        let same = s.len() == first.len()
            && s.iter()
                .zip(first)
                .enumerate()
                .all(|(d, (x, y))| d == a || x == y);
        if !same {
            return Err(OpError::invalid(
                i,
                format!("shape {s:?} does not match {first:?} outside axis {a}"),
            ));
        }
        out[a] += s[a];
    }
    checked_numel(&out)?;
    Ok((a, out))
}

impl Operator for Concat {
    op_boilerplate!("Concat");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let shapes: Option<Vec<Vec<usize>>> = inputs.iter().map(Fact::concrete_shape).collect();
        let Some(shapes) = shapes.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let (_, out) = concat_shape(&shapes, self.axis)?;
        Ok(Some(vec![fact(inputs[0].dtype, &out)]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let ts = inputs.tensors()?;
        let shapes: Vec<Vec<usize>> = ts.iter().map(|t| t.shape().to_vec()).collect();
        let (a, out_shape) = concat_shape(&shapes, self.axis)?;
        let dtype = ts[0].dtype();
        if let Some(i) = ts.iter().position(|t| t.dtype() != dtype) {
            return Err(OpError::UnsupportedDType {
                index: i,
                dtype: ts[i].dtype(),
            });
        }
        if ts.len() == 1 {
            return Ok(vec![ts[0].clone().into()]);
        }
        let contig: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect();
        let outer = prod(&out_shape[..a]);
        let rest = prod(&out_shape[a + 1..]);
        let out_block = out_shape[a] * rest;
        let blocks: Vec<usize> = contig.iter().map(|t| t.shape()[a] * rest).collect();
        if dtype != DType::String {
            // Every element is copied below: no need to zero the output first.
            let mut out = ctx.alloc_for_overwrite(dtype, &out_shape)?;
            concat_bytes(ctx, out.raw_bytes_mut()?, &contig, &blocks, outer)?;
            return Ok(vec![out.into()]);
        }
        let srcs = contig.iter().map(Elems::of).collect::<OpResult<Vec<_>>>()?;
        let mut out = ctx.alloc(dtype, &out_shape)?;
        let mut dst = ElemsMut::of(&mut out)?;
        for o in 0..outer {
            let mut at = o * out_block;
            for (src, &block) in srcs.iter().zip(&blocks) {
                dst.copy_block(at, src, o * block, block)?;
                at += block;
            }
        }
        Ok(vec![out.into()])
    }
}

/// Output bytes from which a concatenation is spread over threads.
const CONCAT_PARALLEL_MIN: usize = 1 << 18;
/// Least output bytes one task of a parallel concatenation copies.
const CONCAT_MIN_TASK: usize = 1 << 16;
/// Most (outer index, input) blocks a concatenation spreads over threads (each task scans
/// them; more and smaller blocks are copied in one pass).
const CONCAT_MAX_BLOCKS: usize = 4096;

/// Fills `out` with the contiguous inputs' blocks (`blocks[i]` elements of input `i` per
/// outer index, `outer` of them, in output order). Large outputs are cut into equal ranges,
/// one per task, each copying the parts of the blocks that fall in its range.
fn concat_bytes(
    ctx: &EvalCtx<'_>,
    out: &mut [u8],
    inputs: &[Tensor],
    blocks: &[usize],
    outer: usize,
) -> OpResult<()> {
    let srcs = inputs
        .iter()
        .map(Tensor::raw_bytes)
        .collect::<Result<SmallVec<[&[u8]; 8]>, _>>()?;
    let size = inputs.first().map_or(1, |t| t.dtype().size_of());
    // Block `k` in output order: block `k / inputs` of input `k % inputs`, as bytes.
    let block = |k: usize| {
        let (o, i) = (k / srcs.len(), k % srcs.len());
        let b = blocks[i] * size;
        srcs[i].get(o * b..(o + 1) * b)
    };
    let count = outer * srcs.len();
    let mut total = 0;
    for k in 0..count {
        total += block(k)
            .ok_or_else(|| OpError::Shape("concat input shorter than its shape".into()))?
            .len();
    }
    if total != out.len() {
        return Err(OpError::Shape(format!(
            "concat output holds {} bytes, its inputs {total}",
            out.len()
        )));
    }
    // Copies the part of every block inside `[start, start + dst.len())` of the output.
    let copy_range = |start: usize, dst: &mut [u8]| {
        let end = start + dst.len();
        let mut at = 0;
        for k in 0..count {
            let Some(src) = block(k) else { continue };
            let (lo, hi) = (at.max(start), (at + src.len()).min(end));
            if lo < hi {
                dst[lo - start..hi - start].copy_from_slice(&src[lo - at..hi - at]);
            }
            at += src.len();
            if at >= end {
                break;
            }
        }
    };
    if ctx.threads() == 1 || out.len() < CONCAT_PARALLEL_MIN || count > CONCAT_MAX_BLOCKS {
        copy_range(0, out);
        return Ok(());
    }
    let per_task = out.len().div_ceil(ctx.threads() * 4).max(CONCAT_MIN_TASK);
    ctx.par_chunks_mut(out, per_task, |ci, dst| copy_range(ci * per_task, dst));
    Ok(())
}

// ----- Split --------------------------------------------------------------------------------

/// `Split`: cuts a tensor along `axis` into pieces of given or equal lengths.
#[derive(Debug, Clone)]
pub struct Split {
    /// The cutting axis.
    pub axis: i64,
    /// Lengths from the attribute (before opset 13).
    pub split: Option<Vec<i64>>,
    /// Number of pieces from the `num_outputs` attribute (opset 18 on); the last may be smaller.
    pub num_outputs: Option<usize>,
    /// Whether optional input 1 may carry the lengths.
    pub split_input: bool,
    /// Number of outputs the node declares.
    pub outputs: usize,
}

fn build_split(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let split = if b.opset < 13 {
        b.attrs.ints("split")?
    } else {
        None
    };
    let num_outputs = if b.opset >= 18 {
        match b.attrs.int("num_outputs")? {
            None => None,
            Some(n) => Some(usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                OpError::attribute("num_outputs", format!("{n} is not positive"))
            })?),
        }
    } else {
        None
    };
    Ok(Box::new(Split {
        axis: b.attrs.int_or("axis", 0)?,
        split,
        num_outputs,
        split_input: b.opset == 1 || b.opset >= 13,
        outputs: b.output_count,
    }))
}

impl Split {
    fn lengths(&self, dim: usize, input: Option<Vec<i64>>) -> OpResult<Vec<usize>> {
        let given = self.split.clone().or(input);
        if let Some(s) = given {
            let lens = sizes_from(1, &s)?;
            if lens.iter().sum::<usize>() != dim || (self.outputs > 0 && lens.len() != self.outputs)
            {
                return Err(OpError::invalid(
                    1,
                    format!(
                        "split {s:?} does not cut a dimension of {dim} into {} outputs",
                        self.outputs
                    ),
                ));
            }
            return Ok(lens);
        }
        if let Some(n) = self.num_outputs {
            let chunk = dim.div_ceil(n);
            return Ok((0..n)
                .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                .collect());
        }
        let n = self.outputs.max(1);
        if !dim.is_multiple_of(n) {
            return Err(OpError::invalid(
                0,
                format!("dimension {dim} cannot be split evenly into {n} outputs"),
            ));
        }
        Ok(vec![dim / n; n])
    }
}

impl Operator for Split {
    op_boilerplate!("Split");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let a = attr_axis("axis", self.axis, data.rank())?;
        let input = if self.split_input {
            int_input(&inputs, 1)?
        } else {
            None
        };
        let lens = self.lengths(data.shape()[a], input)?;
        let mut start = 0usize;
        let mut out = Vec::with_capacity(lens.len());
        for len in lens {
            let piece = if len == 0 {
                data.slice_axis(a, 0, 0, 1)?
            } else {
                data.slice_axis(a, start, (start + len) as isize, 1)?
            };
            out.push(materialize(ctx, &piece)?.into());
            start += len;
        }
        Ok(out)
    }
}

// ----- Slice --------------------------------------------------------------------------------

/// Slice parameters given as attributes (before opset 10).
#[derive(Debug, Clone)]
pub struct SliceAttrs {
    /// Start indices.
    pub starts: Vec<i64>,
    /// End indices (exclusive).
    pub ends: Vec<i64>,
    /// Axes the bounds apply to (default: the first axes).
    pub axes: Option<Vec<i64>>,
}

/// `Slice`: numpy-style strided slicing with clamping and negative steps.
#[derive(Debug, Clone)]
pub struct Slice {
    /// Parameters from attributes (before opset 10); `None` reads inputs 1 to 4.
    pub attrs: Option<SliceAttrs>,
}

/// One axis of a slice: first index, element count and step.
#[derive(Debug, Clone, Copy)]
struct AxisSlice {
    axis: usize,
    start: usize,
    count: usize,
    step: i64,
}

fn slice_plan(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> OpResult<Vec<AxisSlice>> {
    let n = starts.len();
    if ends.len() != n || axes.is_some_and(|a| a.len() != n) || steps.is_some_and(|s| s.len() != n)
    {
        return Err(OpError::invalid(
            2,
            format!("starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"),
        ));
    }
    let default_axes: Vec<i64> = (0..n as i64).collect();
    let axes = unique_axes(axes.unwrap_or(&default_axes), shape.len(), |m| {
        OpError::invalid(3, m)
    })?;
    let mut plan = Vec::with_capacity(n);
    for i in 0..n {
        let step = steps.map_or(1, |s| s[i]);
        if step == 0 {
            return Err(OpError::invalid(4, "slice step is 0"));
        }
        let dim = shape[axes[i]] as i64;
        let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (s, e) = if step > 0 {
            (norm(starts[i]).clamp(0, dim), norm(ends[i]).clamp(0, dim))
        } else {
            (
                norm(starts[i]).clamp(0, (dim - 1).max(0)),
                norm(ends[i]).clamp(-1, dim - 1),
            )
        };
        let (s128, e128, st) = (s as i128, e as i128, step as i128);
        let count = if dim == 0 {
            0
        } else if step > 0 {
            if e128 > s128 {
                (e128 - s128 + st - 1) / st
            } else {
                0
            }
        } else if s128 > e128 {
            (s128 - e128 - st - 1) / -st
        } else {
            0
        };
        plan.push(AxisSlice {
            axis: axes[i],
            start: s as usize,
            count: count as usize,
            step,
        });
    }
    Ok(plan)
}

fn apply_plan(data: &Tensor, plan: &[AxisSlice]) -> OpResult<Tensor> {
    let mut view = data.clone();
    for p in plan {
        view = if p.count == 0 {
            view.slice_axis(p.axis, 0, 0, 1)?
        } else if p.count == 1 {
            view.slice_axis(p.axis, p.start, p.start as isize + 1, 1)?
        } else {
            let end = p.start as isize
                + (p.count as isize - 1) * p.step as isize
                + p.step.signum() as isize;
            view.slice_axis(p.axis, p.start, end, p.step as isize)?
        };
    }
    Ok(view)
}

impl Slice {
    #[allow(clippy::type_complexity)]
    fn params(
        &self,
        inputs: &Inputs,
    ) -> OpResult<(Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>)> {
        match &self.attrs {
            Some(a) => Ok((a.starts.clone(), a.ends.clone(), a.axes.clone(), None)),
            None => Ok((
                int_input(inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?,
                int_input(inputs, 2)?.ok_or(OpError::MissingInput { index: 2 })?,
                int_input(inputs, 3)?,
                int_input(inputs, 4)?,
            )),
        }
    }
}

impl Operator for Slice {
    op_boilerplate!("Slice");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(shape) = inputs.first().and_then(Fact::concrete_shape) else {
            return Ok(None);
        };
        let (starts, ends, axes, steps) = match &self.attrs {
            Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
            None => {
                let get = |i: usize| -> OpResult<Option<Option<Vec<i64>>>> {
                    match inputs.get(i) {
                        None => Ok(Some(None)),
                        Some(f) => match &f.value {
                            Some(v) => Ok(Some(Some(v.to_i64_vec()?))),
                            None => Ok(None),
                        },
                    }
                };
                let (Some(Some(s)), Some(Some(e)), Some(a), Some(st)) =
                    (get(1)?, get(2)?, get(3)?, get(4)?)
                else {
                    return Ok(None);
                };
                (s, e, a, st)
            }
        };
        let plan = slice_plan(&shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
        let mut out = shape;
        for p in plan {
            out[p.axis] = p.count;
        }
        Ok(Some(vec![fact(inputs[0].dtype, &out)]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let (starts, ends, axes, steps) = self.params(&inputs)?;
        let plan = slice_plan(
            data.shape(),
            &starts,
            &ends,
            axes.as_deref(),
            steps.as_deref(),
        )?;
        Ok(vec![materialize(ctx, &apply_plan(data, &plan)?)?.into()])
    }
}

// ----- Gather family ------------------------------------------------------------------------

fn index_values(inputs: &Inputs, index: usize) -> OpResult<(Vec<i64>, Vec<usize>)> {
    let t = inputs.tensor(index)?;
    if !t.dtype().is_integer() {
        return Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        });
    }
    Ok((t.to_i64_vec()?, t.shape().to_vec()))
}

/// Takes `idx` (already normalized) along `axis` of `data`; the output has `idx_shape` in
/// place of that axis.
fn gather_axis(
    ctx: &EvalCtx<'_>,
    data: &Tensor,
    axis: usize,
    idx: &[usize],
    idx_shape: &[usize],
) -> OpResult<Tensor> {
    let shape = data.shape();
    let mut out_shape = shape[..axis].to_vec();
    out_shape.extend_from_slice(idx_shape);
    out_shape.extend_from_slice(&shape[axis + 1..]);
    checked_numel(&out_shape)?;
    let outer = prod(&shape[..axis]);
    let inner = prod(&shape[axis + 1..]);
    let dim = shape[axis];
    let data = data.contiguous();
    let src = Elems::of(&data)?;
    let mut out = ctx.alloc(data.dtype(), &out_shape)?;
    let mut dst = ElemsMut::of(&mut out)?;
    let n = idx.len();
    if inner == 1 {
        let mut flat = vec![0usize; n];
        for o in 0..outer {
            for (f, &k) in flat.iter_mut().zip(idx) {
                *f = o * dim + k;
            }
            dst.gather(o * n, &src, &flat)?;
        }
    } else {
        for o in 0..outer {
            for (j, &k) in idx.iter().enumerate() {
                dst.copy_block((o * n + j) * inner, &src, (o * dim + k) * inner, inner)?;
            }
        }
    }
    Ok(out)
}

/// `Gather`: takes entries along `axis` at the given (possibly negative) indices.
#[derive(Debug, Clone, Copy)]
pub struct Gather {
    /// The indexed axis.
    pub axis: i64,
}

impl Operator for Gather {
    op_boilerplate!("Gather");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(d), Some(i)) = (inputs.first(), inputs.get(1)) else {
            return Ok(None);
        };
        let (Some(ds), Some(is)) = (&d.shape, &i.shape) else {
            return Ok(None);
        };
        let a = attr_axis("axis", self.axis, ds.len())?;
        let mut out = ds[..a].to_vec();
        out.extend(is.iter().cloned());
        out.extend(ds[a + 1..].iter().cloned());
        Ok(Some(vec![Fact {
            dtype: d.dtype,
            shape: Some(out),
            value: None,
        }]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let a = attr_axis("axis", self.axis, data.rank())?;
        let (raw, idx_shape) = index_values(&inputs, 1)?;
        let dim = data.shape()[a];
        let idx = raw
            .iter()
            .map(|&i| norm_index(1, i, dim))
            .collect::<OpResult<Vec<_>>>()?;
        Ok(vec![gather_axis(ctx, data, a, &idx, &idx_shape)?.into()])
    }
}

/// Calls `f(flat_position, multi_index)` for every index of `shape` in row-major order.
fn for_each_index(
    shape: &[usize],
    mut f: impl FnMut(usize, &[usize]) -> OpResult<()>,
) -> OpResult<()> {
    let n = prod(shape);
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..n {
        f(flat, &idx)?;
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

/// Offsets into `data` for GatherElements/ScatterElements: the position of each `indices`
/// element with its own coordinate replaced by its value along `axis`.
fn element_offsets(
    data: &[usize],
    ishape: &[usize],
    values: &[i64],
    axis: usize,
) -> OpResult<Vec<usize>> {
    if ishape.len() != data.len() {
        return Err(OpError::invalid(
            1,
            format!("indices of shape {ishape:?} must have the rank of data {data:?}"),
        ));
    }
    if let Some(d) = (0..data.len()).find(|&d| d != axis && ishape[d] > data[d]) {
        return Err(OpError::invalid(
            1,
            format!("indices shape {ishape:?} exceeds data shape {data:?} on axis {d}"),
        ));
    }
    let strides = row_major_strides(data);
    let mut out = Vec::with_capacity(values.len());
    for_each_index(ishape, |flat, idx| {
        let k = norm_index(1, values[flat], data[axis])?;
        let off: usize = idx
            .iter()
            .zip(&strides)
            .enumerate()
            .map(|(d, (&i, &s))| if d == axis { k * s } else { i * s })
            .sum();
        out.push(off);
        Ok(())
    })?;
    Ok(out)
}

/// `GatherElements`: `out[i][j][k] = data[indices[i][j][k]][j][k]` (for axis 0).
#[derive(Debug, Clone, Copy)]
pub struct GatherElements {
    /// The indexed axis.
    pub axis: i64,
}

impl Operator for GatherElements {
    op_boilerplate!("GatherElements");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(d), Some(i)) = (inputs.first(), inputs.get(1)) else {
            return Ok(None);
        };
        Ok(Some(vec![Fact {
            dtype: d.dtype,
            shape: i.shape.clone(),
            value: None,
        }]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?.contiguous();
        let a = attr_axis("axis", self.axis, data.rank())?;
        let (values, ishape) = index_values(&inputs, 1)?;
        let offsets = element_offsets(data.shape(), &ishape, &values, a)?;
        let mut out = ctx.alloc(data.dtype(), &ishape)?;
        ElemsMut::of(&mut out)?.gather(0, &Elems::of(&data)?, &offsets)?;
        Ok(vec![out.into()])
    }
}

/// Geometry shared by GatherND and ScatterND.
struct NdPlan {
    /// Offset in data of each index tuple's slice.
    offsets: Vec<usize>,
    /// Elements per slice.
    slice: usize,
    /// Shape of the gathered result (= updates shape for ScatterND).
    out_shape: Vec<usize>,
}

fn nd_plan(
    data: &[usize],
    ishape: &[usize],
    values: &[i64],
    batch_dims: usize,
) -> OpResult<NdPlan> {
    let (r, q) = (data.len(), ishape.len());
    if q == 0 {
        return Err(OpError::invalid(1, "indices must have rank at least 1"));
    }
    let m = ishape[q - 1];
    if batch_dims >= q || batch_dims >= r || batch_dims + m > r {
        return Err(OpError::invalid(
            1,
            format!("indices shape {ishape:?} (batch_dims {batch_dims}) does not fit data shape {data:?}"),
        ));
    }
    if ishape[..batch_dims] != data[..batch_dims] {
        return Err(OpError::invalid(
            1,
            format!("batch dimensions of {ishape:?} and {data:?} differ"),
        ));
    }
    let mut out_shape = ishape[..q - 1].to_vec();
    out_shape.extend_from_slice(&data[batch_dims + m..]);
    checked_numel(&out_shape)?;
    let strides = row_major_strides(data);
    let batch = prod(&data[..batch_dims]);
    let per_batch = prod(&ishape[batch_dims..q - 1]);
    let batch_stride = prod(&data[batch_dims..]);
    let mut offsets = Vec::with_capacity(batch * per_batch);
    for b in 0..batch {
        for j in 0..per_batch {
            let t = (b * per_batch + j) * m;
            let mut off = b * batch_stride;
            for k in 0..m {
                let d = batch_dims + k;
                off += norm_index(1, values[t + k], data[d])? * strides[d];
            }
            offsets.push(off);
        }
    }
    Ok(NdPlan {
        offsets,
        slice: prod(&data[batch_dims + m..]),
        out_shape,
    })
}

/// `GatherND`: gathers slices of `data` addressed by the last axis of `indices`.
#[derive(Debug, Clone, Copy)]
pub struct GatherND {
    /// Number of leading batch axes shared by data and indices.
    pub batch_dims: usize,
}

impl Operator for GatherND {
    op_boilerplate!("GatherND");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?.contiguous();
        let (values, ishape) = index_values(&inputs, 1)?;
        let plan = nd_plan(data.shape(), &ishape, &values, self.batch_dims)?;
        let src = Elems::of(&data)?;
        let mut out = ctx.alloc(data.dtype(), &plan.out_shape)?;
        let mut dst = ElemsMut::of(&mut out)?;
        if plan.slice == 1 {
            dst.gather(0, &src, &plan.offsets)?;
        } else {
            for (j, &off) in plan.offsets.iter().enumerate() {
                dst.copy_block(j * plan.slice, &src, off, plan.slice)?;
            }
        }
        Ok(vec![out.into()])
    }
}

// ----- Scatter family -----------------------------------------------------------------------

/// How scattered updates combine with existing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Replace.
    None,
    /// Add.
    Add,
    /// Multiply.
    Mul,
    /// Keep the larger.
    Max,
    /// Keep the smaller.
    Min,
}

fn reduction(b: &BuildCtx<'_>) -> OpResult<Reduction> {
    if b.opset < 16 {
        return Ok(Reduction::None);
    }
    match b.attrs.string_or("reduction", "none")?.as_str() {
        "none" => Ok(Reduction::None),
        "add" => Ok(Reduction::Add),
        "mul" => Ok(Reduction::Mul),
        "max" if b.opset >= 18 => Ok(Reduction::Max),
        "min" if b.opset >= 18 => Ok(Reduction::Min),
        other => Err(OpError::attribute(
            "reduction",
            format!("'{other}' is not supported at opset {}", b.opset),
        )),
    }
}

fn combine<T: Element>(r: Reduction, a: T, b: T) -> T {
    match r {
        Reduction::None => b,
        Reduction::Add if T::IS_FLOAT => T::from_f64(a.to_f64() + b.to_f64()),
        Reduction::Add => T::from_i128(a.to_i128().wrapping_add(b.to_i128())),
        Reduction::Mul if T::IS_FLOAT => T::from_f64(a.to_f64() * b.to_f64()),
        Reduction::Mul => T::from_i128(a.to_i128().wrapping_mul(b.to_i128())),
        Reduction::Max => {
            if b > a {
                b
            } else {
                a
            }
        }
        Reduction::Min => {
            if b < a {
                b
            } else {
                a
            }
        }
    }
}

/// Writes `updates` blocks of `block` elements at `offsets` into a copy of `data`.
fn scatter(
    ctx: &EvalCtx<'_>,
    data: &Tensor,
    updates: &Tensor,
    offsets: &[usize],
    block: usize,
    r: Reduction,
) -> OpResult<Tensor> {
    if updates.dtype() != data.dtype() {
        return Err(OpError::UnsupportedDType {
            index: 2,
            dtype: updates.dtype(),
        });
    }
    let data = data.contiguous();
    let updates = updates.contiguous();
    let mut out = ctx.alloc(data.dtype(), data.shape())?;
    let src = Elems::of(&data)?;
    let upd = Elems::of(&updates)?;
    {
        let mut dst = ElemsMut::of(&mut out)?;
        dst.copy_block(0, &src, 0, data.len())?;
        if r == Reduction::None {
            for (j, &off) in offsets.iter().enumerate() {
                dst.copy_block(off, &upd, j * block, block)?;
            }
            return Ok(out);
        }
    }
    let dtype = data.dtype();
    dispatch_numeric!(dtype, T => {
        let u = updates.as_slice::<T>()?;
        let o = out.as_slice_mut::<T>()?;
        for (j, &off) in offsets.iter().enumerate() {
            let (Some(dst), Some(src)) = (o.get_mut(off..off + block), u.get(j * block..(j + 1) * block)) else {
                return Err(OpError::Shape("scatter index out of bounds".into()));
            };
            for (x, &y) in dst.iter_mut().zip(src) {
                *x = combine(r, *x, y);
            }
        }
    }, return Err(OpError::UnsupportedDType { index: 0, dtype }));
    Ok(out)
}

/// `ScatterND`: a copy of `data` with slices addressed by `indices` replaced (or combined)
/// with `updates`.
#[derive(Debug, Clone, Copy)]
pub struct ScatterND {
    /// How updates combine with existing values.
    pub reduction: Reduction,
}

impl Operator for ScatterND {
    op_boilerplate!("ScatterND");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                value: None,
                ..f.clone()
            }]
        }))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let (values, ishape) = index_values(&inputs, 1)?;
        let updates = inputs.tensor(2)?;
        let plan = nd_plan(data.shape(), &ishape, &values, 0)?;
        if updates.shape() != plan.out_shape.as_slice() {
            return Err(OpError::invalid(
                2,
                format!(
                    "updates shape {:?} should be {:?}",
                    updates.shape(),
                    plan.out_shape
                ),
            ));
        }
        Ok(vec![scatter(
            ctx,
            data,
            updates,
            &plan.offsets,
            plan.slice,
            self.reduction,
        )?
        .into()])
    }
}

/// `ScatterElements` (and `Scatter` before opset 11): a copy of `data` with the elements
/// addressed along `axis` by `indices` replaced (or combined) with `updates`.
#[derive(Debug, Clone, Copy)]
pub struct ScatterElements {
    /// The indexed axis.
    pub axis: i64,
    /// How updates combine with existing values.
    pub reduction: Reduction,
}

impl Operator for ScatterElements {
    op_boilerplate!("ScatterElements");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(inputs.first().map(|f| {
            vec![Fact {
                value: None,
                ..f.clone()
            }]
        }))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let a = attr_axis("axis", self.axis, data.rank())?;
        let (values, ishape) = index_values(&inputs, 1)?;
        let updates = inputs.tensor(2)?;
        if updates.shape() != ishape.as_slice() {
            return Err(OpError::invalid(
                2,
                format!(
                    "updates shape {:?} differs from indices shape {ishape:?}",
                    updates.shape()
                ),
            ));
        }
        let offsets = element_offsets(data.shape(), &ishape, &values, a)?;
        Ok(vec![scatter(
            ctx,
            data,
            updates,
            &offsets,
            1,
            self.reduction,
        )?
        .into()])
    }
}

// ----- Compress, NonZero, OneHot ------------------------------------------------------------

/// `Compress`: keeps the slices along `axis` (or the flattened elements) whose condition is
/// true.
#[derive(Debug, Clone, Copy)]
pub struct Compress {
    /// The selected axis; `None` flattens the input first.
    pub axis: Option<i64>,
}

impl Operator for Compress {
    op_boilerplate!("Compress");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let cond = inputs.tensor(1)?;
        if cond.dtype() != DType::Bool && !cond.dtype().is_integer() {
            return Err(OpError::UnsupportedDType {
                index: 1,
                dtype: cond.dtype(),
            });
        }
        if cond.rank() != 1 {
            return Err(OpError::invalid(
                1,
                format!("condition must be 1-D, got shape {:?}", cond.shape()),
            ));
        }
        let flat;
        let (src, a) = match self.axis {
            Some(ax) => (data, attr_axis("axis", ax, data.rank())?),
            None => {
                flat = data.reshape(&[data.len()])?;
                (&flat, 0)
            }
        };
        let dim = src.shape()[a];
        let mut idx = Vec::new();
        for (i, c) in cond.to_i64_vec()?.into_iter().enumerate() {
            if c != 0 {
                if i >= dim {
                    return Err(OpError::invalid(
                        1,
                        format!("condition selects index {i} beyond dimension {dim}"),
                    ));
                }
                idx.push(i);
            }
        }
        let n = idx.len();
        Ok(vec![gather_axis(ctx, src, a, &idx, &[n])?.into()])
    }
}

/// `NonZero`: the indices of non-zero elements, as an int64 `[rank, count]` tensor.
#[derive(Debug, Clone, Copy)]
pub struct NonZero;

impl Operator for NonZero {
    op_boilerplate!("NonZero");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?.contiguous();
        let dtype = data.dtype();
        let flags: Vec<bool> = if dtype == DType::Bool {
            data.as_bool_slice()?.iter().map(|&b| b != 0).collect()
        } else {
            dispatch_numeric!(dtype, T => data.as_slice::<T>()?.iter().map(|v| v.to_f64() != 0.0).collect(),
                return Err(OpError::UnsupportedDType { index: 0, dtype }))
        };
        let shape: Vec<usize> = if data.rank() == 0 {
            vec![1]
        } else {
            data.shape().to_vec()
        };
        let rank = shape.len();
        let hits: Vec<usize> = flags
            .iter()
            .enumerate()
            .filter(|(_, &f)| f)
            .map(|(i, _)| i)
            .collect();
        let n = hits.len();
        let strides = row_major_strides(&shape);
        let mut out = vec![0i64; rank * n];
        for (j, &flat) in hits.iter().enumerate() {
            for d in 0..rank {
                out[d * n + j] = ((flat / strides[d]) % shape[d]) as i64;
            }
        }
        Ok(vec![Tensor::from_vec(out, &[rank, n])?.into()])
    }
}

/// `OneHot`: one-hot encodes indices along a new axis with `values = [off, on]`.
#[derive(Debug, Clone, Copy)]
pub struct OneHot {
    /// Position of the new axis in the output (negative counts from the end).
    pub axis: i64,
}

impl Operator for OneHot {
    op_boilerplate!("OneHot");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let indices = inputs.tensor(0)?;
        let idx: Vec<i64> = if indices.dtype().is_integer() {
            indices.to_i64_vec()?
        } else if indices.dtype().is_float() {
            indices.cast(DType::I64)?.to_i64_vec()?
        } else {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: indices.dtype(),
            });
        };
        let depth_t = inputs.tensor(1)?;
        if depth_t.len() != 1 {
            return Err(OpError::invalid(
                1,
                format!("depth must hold one value, got shape {:?}", depth_t.shape()),
            ));
        }
        let depth_f = depth_t.first_as_f64()?;
        if !(1.0..1e15).contains(&depth_f) {
            return Err(OpError::invalid(
                1,
                format!("depth {depth_f} must be a positive size"),
            ));
        }
        let depth = depth_f as usize;
        let values = inputs.tensor(2)?.contiguous();
        if values.len() != 2 {
            return Err(OpError::invalid(
                2,
                format!("values must hold [off, on], got shape {:?}", values.shape()),
            ));
        }
        let a = attr_axis("axis", self.axis, indices.rank() + 1)?;
        let mut out_shape = indices.shape().to_vec();
        out_shape.insert(a, depth);
        checked_numel(&out_shape)?;
        let outer = prod(&indices.shape()[..a]);
        let inner = prod(&indices.shape()[a..]);
        let vals = Elems::of(&values)?;
        let mut out = ctx.alloc(values.dtype(), &out_shape)?;
        let mut dst = ElemsMut::of(&mut out)?;
        dst.fill(&vals)?;
        let d = depth as i64;
        for o in 0..outer {
            for i in 0..inner {
                let mut k = idx[o * inner + i];
                if k < 0 {
                    k += d;
                }
                if (0..d).contains(&k) {
                    dst.copy_block((o * depth + k as usize) * inner + i, &vals, 1, 1)?;
                }
            }
        }
        Ok(vec![out.into()])
    }
}
