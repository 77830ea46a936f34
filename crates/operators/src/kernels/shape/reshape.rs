//! Ops that change shapes and layouts: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Shape,
//! Size, DepthToSpace, SpaceToDepth, Expand, Tile.

use super::common::{checked_numel, fact, int_input, materialize, prod, sizes_from, unique_axes};
use crate::{
    op_boilerplate, BuildCtx, Dim, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator,
    Value,
};
use strata_tensor::{broadcast_shapes, DType, Tensor};

pub(super) fn register(r: &mut OpRegistry) {
    r.register_range("", "Reshape", 1, 4, |b| {
        let shape = b
            .attrs
            .ints("shape")?
            .ok_or_else(|| OpError::attribute("shape", "required before opset 5"))?;
        Ok(Box::new(Reshape {
            shape: Some(shape),
            allowzero: false,
        }))
    });
    r.register("", "Reshape", 5, |b| {
        Ok(Box::new(Reshape {
            shape: None,
            allowzero: b.opset >= 14 && b.attrs.int_or("allowzero", 0)? != 0,
        }))
    });
    r.register("", "Flatten", 1, |b| {
        Ok(Box::new(Flatten {
            axis: b.attrs.int_or("axis", 1)?,
        }))
    });
    r.register_range("", "Squeeze", 1, 12, |b| {
        Ok(Box::new(Squeeze {
            axes: b.attrs.ints("axes")?,
        }))
    });
    r.register("", "Squeeze", 13, |_| Ok(Box::new(Squeeze { axes: None })));
    r.register_range("", "Unsqueeze", 1, 12, |b| {
        let axes = b
            .attrs
            .ints("axes")?
            .ok_or_else(|| OpError::attribute("axes", "required before opset 13"))?;
        Ok(Box::new(Unsqueeze { axes: Some(axes) }))
    });
    r.register("", "Unsqueeze", 13, |_| {
        Ok(Box::new(Unsqueeze { axes: None }))
    });
    r.register("", "Transpose", 1, |b| {
        let perm =
            match b.attrs.ints("perm")? {
                None => None,
                Some(p) => Some(sizes_from(0, &p).map_err(|_| {
                    OpError::attribute("perm", format!("{p:?} has a negative entry"))
                })?),
            };
        Ok(Box::new(Transpose { perm }))
    });
    r.register("", "Shape", 1, |b| {
        let (start, end) = if b.opset >= 15 {
            (b.attrs.int_or("start", 0)?, b.attrs.int("end")?)
        } else {
            (0, None)
        };
        Ok(Box::new(ShapeOp { start, end }))
    });
    r.register("", "Size", 1, |_| Ok(Box::new(Size)));
    r.register("", "DepthToSpace", 1, |b| {
        Ok(Box::new(DepthToSpace {
            block: block_size(b)?,
            crd: crd_mode(b)?,
        }))
    });
    r.register("", "SpaceToDepth", 1, |b| {
        Ok(Box::new(SpaceToDepth {
            block: block_size(b)?,
            crd: crd_mode(b)?,
        }))
    });
    r.register("", "Expand", 8, |_| Ok(Box::new(Expand)));
    r.register("", "Tile", 6, |_| Ok(Box::new(Tile)));
}

/// The `mode` attribute of DepthToSpace and SpaceToDepth: whether it is `CRD` (the default
/// `DCR` otherwise; opsets without the attribute never set it).
fn crd_mode(b: &BuildCtx<'_>) -> OpResult<bool> {
    match b.attrs.string_or("mode", "DCR")?.as_str() {
        "DCR" => Ok(false),
        "CRD" => Ok(true),
        other => Err(OpError::attribute(
            "mode",
            format!("'{other}' is not DCR or CRD"),
        )),
    }
}

fn block_size(b: &BuildCtx<'_>) -> OpResult<usize> {
    let v = b
        .attrs
        .int("blocksize")?
        .ok_or_else(|| OpError::attribute("blocksize", "required"))?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| OpError::attribute("blocksize", format!("{v} is not positive")))
}

fn same_dtype(inputs: &[Fact]) -> Option<DType> {
    inputs.first().and_then(|f| f.dtype)
}

fn known_fact(dtype: Option<DType>, shape: Vec<Dim>) -> Fact {
    Fact {
        dtype,
        shape: Some(shape),
        value: None,
    }
}

fn dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Known(d)).collect()
}

/// The target shape of a Reshape of `input` by `spec` (0 copies, -1 infers).
pub(crate) fn reshape_target(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> OpResult<Vec<usize>> {
    let bad = |reason: String| OpError::invalid(1, reason);
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(bad(format!("shape {spec:?} has more than one -1")));
                }
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                bad(format!(
                    "shape {spec:?} copies dimension {i} but the input {input:?} has rank {}",
                    input.len()
                ))
            })?),
            d if d >= 0 => {
                out.push(usize::try_from(d).map_err(|_| bad(format!("dimension {d} too large")))?)
            }
            d => return Err(bad(format!("shape {spec:?} has invalid dimension {d}"))),
        }
    }
    let total = prod(input);
    if let Some(i) = infer {
        let known = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {spec:?} is too large")))?;
        if known == 0 || !total.is_multiple_of(known) {
            return Err(bad(format!("cannot reshape {input:?} into {spec:?}")));
        }
        out[i] = total / known;
    }
    let n = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(total) {
        return Err(bad(format!(
            "cannot reshape {input:?} ({total} elements) into {spec:?}"
        )));
    }
    Ok(out)
}

/// `Reshape`: a view of the input with a new shape (`0` copies a dimension unless
/// `allowzero`, one `-1` is inferred).
#[derive(Debug, Clone)]
pub struct Reshape {
    /// The target shape from the attribute (opsets before 5); `None` reads input 1.
    pub shape: Option<Vec<i64>>,
    /// Whether a 0 in the shape means an empty dimension rather than a copy.
    pub allowzero: bool,
}

impl Reshape {
    fn spec(&self, inputs: &Inputs) -> OpResult<Vec<i64>> {
        match &self.shape {
            Some(s) => Ok(s.clone()),
            None => int_input(inputs, 1)?.ok_or(OpError::MissingInput { index: 1 }),
        }
    }
}

impl Operator for Reshape {
    op_boilerplate!("Reshape");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let spec = match &self.shape {
            Some(s) => s.clone(),
            None => match inputs.get(1).and_then(|f| f.value.as_ref()) {
                Some(v) if v.dtype().is_integer() => v.to_i64_vec()?,
                _ => return Ok(None),
            },
        };
        let Some(data) = inputs.first() else {
            return Ok(None);
        };
        if let Some(shape) = data.concrete_shape() {
            let out = reshape_target(&shape, &spec, self.allowzero)?;
            return Ok(Some(vec![known_fact(data.dtype, dims(&out))]));
        }
        // Symbolic input: only a shape without -1 is known.
        if spec.contains(&-1) || spec.iter().any(|&d| d < -1) {
            return Ok(None);
        }
        let Some(in_dims) = &data.shape else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(spec.len());
        for (i, &d) in spec.iter().enumerate() {
            if d == 0 && !self.allowzero {
                match in_dims.get(i) {
                    Some(x) => out.push(x.clone()),
                    None => return Ok(None),
                }
            } else {
                out.push(Dim::Known(d as usize));
            }
        }
        Ok(Some(vec![known_fact(data.dtype, out)]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let target = reshape_target(data.shape(), &self.spec(&inputs)?, self.allowzero)?;
        Ok(vec![data.reshape(&target)?.into()])
    }
}

/// `Flatten`: a 2-D view `[prod(dims[..axis]), prod(dims[axis..])]`.
#[derive(Debug, Clone, Copy)]
pub struct Flatten {
    /// Split point, in `-rank..=rank`.
    pub axis: i64,
}

impl Flatten {
    fn split(&self, rank: usize) -> OpResult<usize> {
        let a = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        };
        if (0..=rank as i64).contains(&a) {
            Ok(a as usize)
        } else {
            Err(OpError::attribute(
                "axis",
                format!("{} is out of range for rank {rank}", self.axis),
            ))
        }
    }
}

impl Operator for Flatten {
    op_boilerplate!("Flatten");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(shape) = inputs.first().and_then(Fact::concrete_shape) else {
            return Ok(None);
        };
        let a = self.split(shape.len())?;
        Ok(Some(vec![fact(
            same_dtype(inputs),
            &[prod(&shape[..a]), prod(&shape[a..])],
        )]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let a = self.split(data.rank())?;
        let s = data.shape();
        Ok(vec![data.reshape(&[prod(&s[..a]), prod(&s[a..])])?.into()])
    }
}

/// `Squeeze`: removes the given axes of length 1 (all length-1 axes when none are given).
#[derive(Debug, Clone)]
pub struct Squeeze {
    /// Axes from the attribute (before opset 13); `None` reads optional input 1.
    pub axes: Option<Vec<i64>>,
}

fn squeeze_shape(shape: &[usize], axes: Option<&[i64]>) -> OpResult<Vec<usize>> {
    match axes {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let axes = unique_axes(axes, shape.len(), |m| OpError::attribute("axes", m))?;
            for &a in &axes {
                if shape[a] != 1 {
                    return Err(OpError::invalid(
                        0,
                        format!("cannot squeeze axis {a} of shape {shape:?}: its length is not 1"),
                    ));
                }
            }
            Ok(shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect())
        }
    }
}

impl Operator for Squeeze {
    op_boilerplate!("Squeeze");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(shape) = inputs.first().and_then(Fact::concrete_shape) else {
            return Ok(None);
        };
        let axes = match &self.axes {
            Some(a) => Some(a.clone()),
            None => match inputs.get(1) {
                None => None,
                Some(f) => match &f.value {
                    Some(v) => Some(v.to_i64_vec()?),
                    None => return Ok(None),
                },
            },
        };
        let out = squeeze_shape(&shape, axes.as_deref())?;
        Ok(Some(vec![fact(same_dtype(inputs), &out)]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let axes = match &self.axes {
            Some(a) => Some(a.clone()),
            None => int_input(&inputs, 1)?,
        };
        let out = squeeze_shape(data.shape(), axes.as_deref())?;
        Ok(vec![data.reshape(&out)?.into()])
    }
}

/// `Unsqueeze`: inserts axes of length 1 at the given output positions.
#[derive(Debug, Clone)]
pub struct Unsqueeze {
    /// Axes from the attribute (before opset 13); `None` reads input 1.
    pub axes: Option<Vec<i64>>,
}

fn unsqueeze_shape(shape: &[usize], axes: &[i64]) -> OpResult<Vec<usize>> {
    let rank = shape.len() + axes.len();
    let axes = unique_axes(axes, rank, |m| OpError::attribute("axes", m))?;
    let mut rest = shape.iter();
    Ok((0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect())
}

impl Operator for Unsqueeze {
    op_boilerplate!("Unsqueeze");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(shape) = inputs.first().and_then(Fact::concrete_shape) else {
            return Ok(None);
        };
        let axes = match &self.axes {
            Some(a) => a.clone(),
            None => match inputs.get(1).and_then(|f| f.value.as_ref()) {
                Some(v) => v.to_i64_vec()?,
                None => return Ok(None),
            },
        };
        let out = unsqueeze_shape(&shape, &axes)?;
        Ok(Some(vec![fact(same_dtype(inputs), &out)]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let axes = match &self.axes {
            Some(a) => a.clone(),
            None => int_input(&inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?,
        };
        let out = unsqueeze_shape(data.shape(), &axes)?;
        Ok(vec![data.reshape(&out)?.into()])
    }
}

/// `Transpose`: permutes the axes (reversed when `perm` is absent); the result is contiguous.
#[derive(Debug, Clone)]
pub struct Transpose {
    /// Output axis `i` is input axis `perm[i]`.
    pub perm: Option<Vec<usize>>,
}

impl Transpose {
    fn perm(&self, rank: usize) -> OpResult<Vec<usize>> {
        match &self.perm {
            None => Ok((0..rank).rev().collect()),
            Some(p) => {
                let mut seen = vec![false; rank];
                if p.len() != rank
                    || p.iter()
                        .any(|&a| a >= rank || std::mem::replace(&mut seen[a], true))
                {
                    return Err(OpError::attribute(
                        "perm",
                        format!("{p:?} is not a permutation of {rank} axes"),
                    ));
                }
                Ok(p.clone())
            }
        }
    }
}

impl Operator for Transpose {
    op_boilerplate!("Transpose");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(f) = inputs.first() else {
            return Ok(None);
        };
        let Some(shape) = &f.shape else {
            return Ok(None);
        };
        let perm = self.perm(shape.len())?;
        Ok(Some(vec![known_fact(
            f.dtype,
            perm.iter().map(|&p| shape[p].clone()).collect(),
        )]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let perm = self.perm(data.rank())?;
        Ok(vec![materialize(ctx, &data.permute(&perm)?)?.into()])
    }
}

/// `Shape`: the input's dimensions `[start, end)` as a 1-D int64 tensor.
#[derive(Debug, Clone, Copy)]
pub struct ShapeOp {
    /// First dimension (negative counts from the end).
    pub start: i64,
    /// One past the last dimension; `None` means the rank.
    pub end: Option<i64>,
}

impl ShapeOp {
    fn range(&self, rank: usize) -> (usize, usize) {
        let r = rank as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let s = clamp(self.start);
        let e = clamp(self.end.unwrap_or(r));
        (s, e.max(s))
    }
}

impl Operator for ShapeOp {
    op_boilerplate!("Shape");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(rank) = inputs.first().and_then(Fact::rank) else {
            return Ok(None);
        };
        let (s, e) = self.range(rank);
        if let Some(shape) = inputs[0].concrete_shape() {
            let v: Vec<i64> = shape[s..e].iter().map(|&d| d as i64).collect();
            return Ok(Some(vec![Fact::constant(Tensor::from_vec(v, &[e - s])?)]));
        }
        Ok(Some(vec![Fact::known(DType::I64, &[e - s])]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let (s, e) = self.range(data.rank());
        let v: Vec<i64> = data.shape()[s..e].iter().map(|&d| d as i64).collect();
        Ok(vec![Tensor::from_vec(v, &[e - s])?.into()])
    }
}

/// `Size`: the input's element count as an int64 scalar.
#[derive(Debug, Clone, Copy)]
pub struct Size;

impl Operator for Size {
    op_boilerplate!("Size");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        match inputs.first().and_then(Fact::concrete_shape) {
            Some(s) => Ok(Some(vec![Fact::constant(Tensor::scalar(prod(&s) as i64))])),
            None => Ok(Some(vec![Fact::known(DType::I64, &[])])),
        }
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        Ok(vec![Tensor::scalar(inputs.tensor(0)?.len() as i64).into()])
    }
}

fn rank4(t: &Tensor) -> OpResult<[usize; 4]> {
    <[usize; 4]>::try_from(t.shape()).map_err(|_| {
        OpError::invalid(
            0,
            format!("expected a 4-D tensor, got shape {:?}", t.shape()),
        )
    })
}

/// `DepthToSpace`: moves channel blocks into spatial blocks (DCR or CRD order).
#[derive(Debug, Clone, Copy)]
pub struct DepthToSpace {
    /// Block size.
    pub block: usize,
    /// Column-row-depth order (`CRD`) instead of the default depth-column-row (`DCR`).
    pub crd: bool,
}

impl DepthToSpace {
    fn out_shape(&self, [n, c, h, w]: [usize; 4]) -> OpResult<[usize; 4]> {
        let bb = self.block * self.block;
        if c % bb != 0 {
            return Err(OpError::invalid(
                0,
                format!("channels {c} are not divisible by blocksize² {bb}"),
            ));
        }
        Ok([n, c / bb, h * self.block, w * self.block])
    }
}

impl Operator for DepthToSpace {
    op_boilerplate!("DepthToSpace");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(s) = inputs.first().and_then(Fact::concrete_shape) else {
            return Ok(None);
        };
        let Ok(s4) = <[usize; 4]>::try_from(s.as_slice()) else {
            return Ok(None);
        };
        Ok(Some(vec![fact(same_dtype(inputs), &self.out_shape(s4)?)]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let [n, c, h, w] = rank4(data)?;
        let out = self.out_shape([n, c, h, w])?;
        let b = self.block;
        let c2 = c / (b * b);
        let view = if self.crd {
            data.reshape(&[n, c2, b, b, h, w])?
                .permute(&[0, 1, 4, 2, 5, 3])?
        } else {
            data.reshape(&[n, b, b, c2, h, w])?
                .permute(&[0, 3, 4, 1, 5, 2])?
        };
        Ok(vec![materialize(ctx, &view)?.reshape(&out)?.into()])
    }
}

/// `SpaceToDepth`: moves spatial blocks into channels.
#[derive(Debug, Clone, Copy)]
pub struct SpaceToDepth {
    /// Block size.
    pub block: usize,
    /// Channel-major output order (`CRD`) instead of the default block-major (`DCR`).
    pub crd: bool,
}

impl SpaceToDepth {
    fn out_shape(&self, [n, c, h, w]: [usize; 4]) -> OpResult<[usize; 4]> {
        let b = self.block;
        if h % b != 0 || w % b != 0 {
            return Err(OpError::invalid(
                0,
                format!("spatial size {h}x{w} is not divisible by blocksize {b}"),
            ));
        }
        Ok([n, c * b * b, h / b, w / b])
    }
}

impl Operator for SpaceToDepth {
    op_boilerplate!("SpaceToDepth");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(s) = inputs.first().and_then(Fact::concrete_shape) else {
            return Ok(None);
        };
        let Ok(s4) = <[usize; 4]>::try_from(s.as_slice()) else {
            return Ok(None);
        };
        Ok(Some(vec![fact(same_dtype(inputs), &self.out_shape(s4)?)]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let [n, c, h, w] = rank4(data)?;
        let out = self.out_shape([n, c, h, w])?;
        let b = self.block;
        let order: [usize; 6] = if self.crd {
            [0, 1, 3, 5, 2, 4]
        } else {
            [0, 3, 5, 1, 2, 4]
        };
        let view = data.reshape(&[n, c, h / b, b, w / b, b])?.permute(&order)?;
        Ok(vec![materialize(ctx, &view)?.reshape(&out)?.into()])
    }
}

/// `Expand`: broadcasts the input against a shape (bidirectionally) and materializes it.
#[derive(Debug, Clone, Copy)]
pub struct Expand;

fn expand_shape(data: &[usize], shape: &[i64]) -> OpResult<Vec<usize>> {
    let shape = sizes_from(1, shape)?;
    let out = broadcast_shapes(data, &shape).map_err(|_| {
        OpError::invalid(
            1,
            format!("input shape {data:?} cannot be expanded to {shape:?}"),
        )
    })?;
    checked_numel(&out)?;
    Ok(out.to_vec())
}

impl Operator for Expand {
    op_boilerplate!("Expand");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(data), Some(shape)) = (inputs.first(), inputs.get(1)) else {
            return Ok(None);
        };
        let (Some(ds), Some(sv)) = (data.concrete_shape(), shape.value.as_ref()) else {
            return Ok(None);
        };
        let out = expand_shape(&ds, &sv.to_i64_vec()?)?;
        Ok(Some(vec![fact(data.dtype, &out)]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let shape = int_input(&inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?;
        let out = expand_shape(data.shape(), &shape)?;
        Ok(vec![materialize(ctx, &data.broadcast_to(&out)?)?.into()])
    }
}

/// `Tile`: repeats the input `repeats[i]` times along each axis.
#[derive(Debug, Clone, Copy)]
pub struct Tile;

fn tile_shape(data: &[usize], repeats: &[i64]) -> OpResult<Vec<usize>> {
    if repeats.len() != data.len() {
        return Err(OpError::invalid(
            1,
            format!("repeats {repeats:?} must have one entry per axis of shape {data:?}"),
        ));
    }
    let reps = sizes_from(1, repeats)?;
    let out: Vec<usize> = data
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<_>>()
        .ok_or_else(|| OpError::Shape(format!("tiling {data:?} by {repeats:?} overflows")))?;
    checked_numel(&out)?;
    Ok(out)
}

impl Operator for Tile {
    op_boilerplate!("Tile");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(data), Some(reps)) = (inputs.first(), inputs.get(1)) else {
            return Ok(None);
        };
        let (Some(ds), Some(rv)) = (data.concrete_shape(), reps.value.as_ref()) else {
            return Ok(None);
        };
        let out = tile_shape(&ds, &rv.to_i64_vec()?)?;
        Ok(Some(vec![fact(data.dtype, &out)]))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let repeats = int_input(&inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?;
        let out = tile_shape(data.shape(), &repeats)?;
        // View [d0, d1, ..] as [1, d0, 1, d1, ..], broadcast to [r0, d0, r1, d1, ..].
        let mut view = data.clone();
        let mut wide = Vec::with_capacity(2 * data.rank());
        for (i, &d) in data.shape().iter().enumerate() {
            view = view.insert_axis(2 * i)?;
            wide.push(repeats[i] as usize);
            wide.push(d);
        }
        let tiled = materialize(ctx, &view.broadcast_to(&wide)?)?;
        Ok(vec![tiled.reshape(&out)?.into()])
    }
}
