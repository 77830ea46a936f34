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

/// `shape` and `strides` with axes of size 1 dropped and each axis merged into the one before
/// it where that one steps over it exactly (together they are one longer run), so a copy
/// moves the longest contiguous runs it can (a channel shuffle's `h x w` planes rather than
/// its rows). At least one axis.
fn merged_axes(shape: &[usize], strides: &[isize]) -> (Axes<usize>, Axes<isize>) {
    let (mut merged_shape, mut merged_strides) = (Axes::new(), Axes::new());
    for (&n, &stride) in shape.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        if let (Some(last_n), Some(last_stride)) =
            (merged_shape.last_mut(), merged_strides.last_mut())
        {
            if *last_stride == stride * n as isize {
                *last_n *= n;
                *last_stride = stride;
                continue;
            }
        }
        merged_shape.push(n);
        merged_strides.push(stride);
    }
    if merged_shape.is_empty() {
        merged_shape.push(1);
        merged_strides.push(1);
    }
    (merged_shape, merged_strides)
}

/// Per-axis values of a view, inline up to rank 8 (steady-state runs allocate nothing).
type Axes<T> = smallvec::SmallVec<[T; 8]>;

/// Elements from which [`materialize`] copies on several threads, in chunks of whole runs.
const PAR_COPY_MIN: usize = 1 << 15;

/// Copies the elements of a view, in row-major order from element `first` on, into `dst`
/// (`first` a multiple of the merged innermost run, as [`materialize`]'s chunks are).
fn copy_strided<T: Clone>(src: &[T], t: &Tensor, first: usize, dst: &mut [T]) -> OpResult<()> {
    let (shape, strides) = merged_axes(t.shape(), t.strides());
    let rank = if t.shape().is_empty() { 0 } else { shape.len() };
    if t.is_empty() {
        return Ok(());
    }
    // The multi-index of element `first` and where it is in `src`.
    let mut base = t.offset() as isize;
    let mut rest = first;
    let mut first_index: Axes<usize> = smallvec::smallvec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        first_index[axis] = rest % shape[axis];
        base += first_index[axis] as isize * strides[axis];
        rest /= shape[axis];
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
    let mut index: Axes<usize> = first_index[..rank - 1].iter().copied().collect();
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
            let (x, d) = (x.as_chunks::<N>().0, d.as_chunks_mut::<N>().0);
            // Large copies in chunks of whole runs over the threads (at 2 threads a copy
            // on one core read what the other core's caches hold).
            let run = merged_axes(t.shape(), t.strides()).0.last().copied().unwrap_or(1);
            if d.len() >= PAR_COPY_MIN && ctx.threads() > 1 && run > 0 {
                let chunk = d.len().div_ceil(2 * ctx.threads()).div_ceil(run) * run;
                let errors = crate::kernels::linalg::ErrorSlot::default();
                ctx.par_chunks_mut(d, chunk, |ci, part| {
                    errors.record(copy_strided(x, t, ci * chunk, part));
                });
                errors.finish()?
            } else {
                copy_strided(x, t, 0, d)?
            }
        }, return Err(kind_mismatch())),
        (ElemsMut::Strings(d), Elems::Strings(x)) => copy_strided(x, t, 0, d)?,
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

#[cfg(test)]
mod merged_axes_tests {
    use super::merged_axes;

    /// [`merged_axes`] as plain vectors.
    fn merged(shape: &[usize], strides: &[isize]) -> (Vec<usize>, Vec<isize>) {
        let (shape, strides) = merged_axes(shape, strides);
        (shape.to_vec(), strides.to_vec())
    }

    #[test]
    fn runs_merge_and_unit_axes_drop() {
        // A channel shuffle's transposed view of [1, 3, 4, 5, 6]: the 5x6 planes merge.
        let got = merged(&[1, 4, 3, 5, 6], &[360, 30, 120, 6, 1]);
        assert_eq!(got, (vec![4, 3, 30], vec![30, 120, 1]));
        // Contiguous: one run; broadcast axes merge only with each other.
        assert_eq!(merged(&[2, 3, 4], &[12, 4, 1]), (vec![24], vec![1]));
        assert_eq!(merged(&[2, 3, 4], &[0, 0, 1]), (vec![6, 4], vec![0, 1]));
        // Reversed and scalar-like views.
        assert_eq!(merged(&[3, 2], &[-2, -1]), (vec![6], vec![-1]));
        assert_eq!(merged(&[1, 1], &[5, 7]), (vec![1], vec![1]));
    }

    #[test]
    fn large_copies_split_over_threads_match_the_view() {
        use crate::ctx::{EvalCtx, ThreeThreads};
        // A channel shuffle of [1, 4, 60, 9, 17] (36720 elements) and a plain 2-D transpose.
        for (shape, perm) in [
            (vec![1, 4, 60, 9, 17], vec![0, 2, 1, 3, 4]),
            (vec![181, 199], vec![1, 0]),
        ] {
            let n: usize = shape.iter().product();
            let x = strata_tensor::Tensor::from_vec((0..n).map(|i| i as f32).collect(), &shape)
                .unwrap();
            let view = x.permute(&perm).unwrap();
            let serial = super::materialize(&EvalCtx::default(), &view).unwrap();
            let threads = EvalCtx {
                parallel: &ThreeThreads,
                ..Default::default()
            };
            let split = super::materialize(&threads, &view).unwrap();
            assert_eq!(split.shape(), serial.shape());
            assert_eq!(
                split.as_slice::<f32>().unwrap(),
                serial.as_slice::<f32>().unwrap()
            );
            // Element (i, j, ...) of the view is the source's at the permuted index.
            let out = serial.as_slice::<f32>().unwrap();
            assert_eq!(
                out[1],
                x.as_slice::<f32>().unwrap()[view.strides()[view.rank() - 1] as usize]
            );
        }
    }
}
