//! Helpers shared by the shape kernels: element moving without interpreting values, size
//! limits, axis and integer-input parsing.

use crate::{EvalCtx, Inputs, OpError, OpResult};
use strata_tensor::{DType, Storage, Tensor};

/// Largest element count an op may create from sizes given in the model or its inputs.
pub(crate) const MAX_ELEMENTS: usize = 1 << 34;

/// Element count of an output shape, rejecting overflow and absurd sizes.
pub(crate) fn checked_numel(shape: &[usize]) -> OpResult<usize> {
    match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMENTS => Ok(n),
        _ => Err(OpError::Shape(format!(
            "output shape {shape:?} has too many elements (limit 2^34)"
        ))),
    }
}

/// Product of dimensions (of an existing tensor's shape, so it cannot overflow).
pub(crate) fn prod(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Runs `$body` with the const `$N` bound to an element size in bytes (1, 2, 4, 8, 16).
macro_rules! by_size {
    ($size:expr, $N:ident => $body:expr, $fallback:expr) => {{
        match $size {
            1 => {
                const $N: usize = 1;
                $body
            }
            2 => {
                const $N: usize = 2;
                $body
            }
            4 => {
                const $N: usize = 4;
                $body
            }
            8 => {
                const $N: usize = 8;
                $body
            }
            16 => {
                const $N: usize = 16;
                $body
            }
            _ => $fallback,
        }
    }};
}

fn out_of_bounds() -> OpError {
    OpError::Shape("element index out of bounds".into())
}

fn kind_mismatch() -> OpError {
    OpError::Shape("element types of source and destination differ".into())
}

/// Read access to the elements of a tensor, as fixed-size byte groups or strings.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Elems<'a> {
    /// Plain elements: bytes and the element size.
    Bytes(&'a [u8], usize),
    /// String elements.
    Strings(&'a [String]),
}

impl<'a> Elems<'a> {
    /// The whole storage behind `t` (for reads through its strides).
    pub(crate) fn storage(t: &'a Tensor) -> OpResult<Self> {
        match &**t.storage() {
            Storage::Host(b) => Ok(Elems::Bytes(b.as_bytes(), t.dtype().size_of())),
            Storage::Strings(s) => Ok(Elems::Strings(s)),
            Storage::Device(d) => Err(OpError::Unsupported(format!(
                "tensor on device {} given to a CPU kernel",
                d.device()
            ))),
        }
    }

    /// The elements of a contiguous tensor, row-major.
    pub(crate) fn of(t: &'a Tensor) -> OpResult<Self> {
        if t.dtype() == DType::String {
            Ok(Elems::Strings(t.as_strings()?))
        } else {
            Ok(Elems::Bytes(t.raw_bytes()?, t.dtype().size_of()))
        }
    }
}

/// Write access to the elements of a uniquely owned, contiguous tensor.
#[derive(Debug)]
pub(crate) enum ElemsMut<'a> {
    /// Plain elements: bytes and the element size.
    Bytes(&'a mut [u8], usize),
    /// String elements.
    Strings(&'a mut [String]),
}

impl<'a> ElemsMut<'a> {
    /// The elements of `t`, which must be contiguous and not shared.
    pub(crate) fn of(t: &'a mut Tensor) -> OpResult<Self> {
        if t.dtype() == DType::String {
            Ok(ElemsMut::Strings(t.as_strings_mut()?))
        } else {
            let size = t.dtype().size_of();
            Ok(ElemsMut::Bytes(t.raw_bytes_mut()?, size))
        }
    }

    /// `self[at..at + n] = src[from..from + n]`.
    pub(crate) fn copy_block(
        &mut self,
        at: usize,
        src: &Elems<'_>,
        from: usize,
        n: usize,
    ) -> OpResult<()> {
        match (self, src) {
            (ElemsMut::Bytes(d, s), Elems::Bytes(x, s2)) if *s == *s2 => {
                let (a, b, len) = (at * *s, from * *s, n * *s);
                let dst = d.get_mut(a..a + len).ok_or_else(out_of_bounds)?;
                dst.copy_from_slice(x.get(b..b + len).ok_or_else(out_of_bounds)?);
                Ok(())
            }
            (ElemsMut::Strings(d), Elems::Strings(x)) => {
                let dst = d.get_mut(at..at + n).ok_or_else(out_of_bounds)?;
                dst.clone_from_slice(x.get(from..from + n).ok_or_else(out_of_bounds)?);
                Ok(())
            }
            _ => Err(kind_mismatch()),
        }
    }

    /// `self[at + i] = src[idx[i]]` for every `i`.
    pub(crate) fn gather(&mut self, at: usize, src: &Elems<'_>, idx: &[usize]) -> OpResult<()> {
        match (self, src) {
            (ElemsMut::Bytes(d, s), Elems::Bytes(x, s2)) if *s == *s2 => by_size!(*s, N => {
                gather_typed(d.as_chunks_mut::<N>().0, at, x.as_chunks::<N>().0, idx)
            }, Err(kind_mismatch())),
            (ElemsMut::Strings(d), Elems::Strings(x)) => gather_typed(d, at, x, idx),
            _ => Err(kind_mismatch()),
        }
    }

    /// Sets every element to `value[0]`.
    pub(crate) fn fill(&mut self, value: &Elems<'_>) -> OpResult<()> {
        match (self, value) {
            (ElemsMut::Bytes(d, s), Elems::Bytes(v, s2)) if *s == *s2 && v.len() >= *s => {
                if *s > 0 {
                    let v = &v[..*s];
                    d.chunks_exact_mut(*s).for_each(|c| c.copy_from_slice(v));
                }
                Ok(())
            }
            (ElemsMut::Strings(d), Elems::Strings(v)) => {
                let v = v.first().ok_or_else(out_of_bounds)?;
                d.iter_mut().for_each(|x| x.clone_from(v));
                Ok(())
            }
            _ => Err(kind_mismatch()),
        }
    }
}

fn gather_typed<T: Clone>(dst: &mut [T], at: usize, src: &[T], idx: &[usize]) -> OpResult<()> {
    let dst = dst.get_mut(at..at + idx.len()).ok_or_else(out_of_bounds)?;
    for (o, &i) in dst.iter_mut().zip(idx) {
        o.clone_from(src.get(i).ok_or_else(out_of_bounds)?);
    }
    Ok(())
}

/// Copies the elements of a view, in row-major order, into `dst`.
fn copy_strided<T: Clone>(src: &[T], t: &Tensor, dst: &mut [T]) -> OpResult<()> {
    let shape = t.shape();
    let strides = t.strides();
    let rank = shape.len();
    let base = t.offset() as isize;
    if t.is_empty() {
        return Ok(());
    }
    let get = |o: isize| {
        usize::try_from(o)
            .ok()
            .and_then(|o| src.get(o))
            .ok_or_else(out_of_bounds)
    };
    if rank == 0 {
        dst.first_mut()
            .ok_or_else(out_of_bounds)?
            .clone_from(get(base)?);
        return Ok(());
    }
    let inner = shape[rank - 1];
    let inner_stride = strides[rank - 1];
    let mut index = vec![0usize; rank - 1];
    let mut pos = base;
    for row in dst.chunks_mut(inner) {
        if inner_stride == 1 && pos >= 0 {
            let p = pos as usize;
            row.clone_from_slice(src.get(p..p + inner).ok_or_else(out_of_bounds)?);
        } else {
            for (k, x) in row.iter_mut().enumerate() {
                x.clone_from(get(pos + k as isize * inner_stride)?);
            }
        }
        for axis in (0..rank - 1).rev() {
            index[axis] += 1;
            pos += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            pos -= strides[axis] * shape[axis] as isize;
            index[axis] = 0;
        }
    }
    Ok(())
}

/// `t` itself when contiguous, otherwise a row-major copy in memory from `ctx`.
pub(crate) fn materialize(ctx: &EvalCtx<'_>, t: &Tensor) -> OpResult<Tensor> {
    if t.is_contiguous() {
        return Ok(t.clone());
    }
    let mut out = ctx.alloc(t.dtype(), t.shape())?;
    let src = Elems::storage(t)?;
    match (ElemsMut::of(&mut out)?, src) {
        (ElemsMut::Bytes(d, s), Elems::Bytes(x, _)) => by_size!(s, N => {
            copy_strided(x.as_chunks::<N>().0, t, d.as_chunks_mut::<N>().0)?
        }, return Err(kind_mismatch())),
        (ElemsMut::Strings(d), Elems::Strings(x)) => copy_strided(x, t, d)?,
        _ => return Err(kind_mismatch()),
    }
    Ok(out)
}

/// A one-element tensor of `dtype` holding `value` converted (for fill values).
pub(crate) fn scalar_of(dtype: DType, value: f64) -> OpResult<Tensor> {
    if dtype == DType::String {
        return Ok(Tensor::from_strings(vec![String::new()], &[])?);
    }
    Ok(Tensor::scalar(value).cast(dtype)?)
}

/// Normalizes an axis from an attribute.
pub(crate) fn attr_axis(name: &str, axis: i64, rank: usize) -> OpResult<usize> {
    strata_tensor::normalize_axis(axis, rank).map_err(|_| {
        OpError::attribute(name, format!("axis {axis} is out of range for rank {rank}"))
    })
}

/// Normalizes a list of axes, rejecting duplicates. `err` builds the error for a message.
pub(crate) fn unique_axes(
    axes: &[i64],
    rank: usize,
    err: impl Fn(String) -> OpError,
) -> OpResult<Vec<usize>> {
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = strata_tensor::normalize_axis(a, rank)
            .map_err(|_| err(format!("axis {a} is out of range for rank {rank}")))?;
        if std::mem::replace(&mut seen[n], true) {
            return Err(err(format!("axis {a} is repeated in {axes:?}")));
        }
        out.push(n);
    }
    Ok(out)
}

/// The integer values of optional input `index` (any integer dtype).
pub(crate) fn int_input(inputs: &Inputs, index: usize) -> OpResult<Option<Vec<i64>>> {
    match inputs.opt_tensor(index)? {
        None => Ok(None),
        Some(t) if t.dtype().is_integer() => Ok(Some(t.to_i64_vec()?)),
        Some(t) => Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        }),
    }
}

/// Non-negative sizes from input `index` as `usize`.
pub(crate) fn sizes_from(index: usize, values: &[i64]) -> OpResult<Vec<usize>> {
    values
        .iter()
        .map(|&v| {
            usize::try_from(v)
                .map_err(|_| OpError::invalid(index, format!("negative size {v} in {values:?}")))
        })
        .collect()
}

/// Row-major strides (in elements) of a shape.
pub(crate) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Normalizes an index into `0..dim`, allowing negative values down to `-dim`.
pub(crate) fn norm_index(index: usize, i: i64, dim: usize) -> OpResult<usize> {
    let d = dim as i64;
    let n = if i < 0 { i + d } else { i };
    if (0..d).contains(&n) {
        Ok(n as usize)
    } else {
        Err(OpError::invalid(
            index,
            format!("index {i} is out of range for a dimension of {dim}"),
        ))
    }
}

/// A fact with an optional dtype and a fixed shape.
pub(crate) fn fact(dtype: Option<DType>, shape: &[usize]) -> crate::Fact {
    crate::Fact {
        dtype,
        shape: Some(shape.iter().map(|&d| crate::Dim::Known(d)).collect()),
        value: None,
    }
}
