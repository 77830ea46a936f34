//! The [`Tensor`] type: construction, typed access, and zero-copy views.

use crate::{dispatch_storage, element_count, DType, Element, Result, Storage, TensorError};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;
use strata_memory::AlignedBuffer;

/// Dimensions of a tensor, outermost first.
pub type Shape = SmallVec<[usize; 6]>;
/// Distance in elements between neighbours along each axis (0 for broadcast axes, negative for
/// reversed slices).
pub type Strides = SmallVec<[isize; 6]>;

/// An n-dimensional array: dtype, shape, strides and offset over shared storage.
///
/// Cloning is cheap (the storage is shared). A tensor is *contiguous* when its strides are the
/// row-major strides of its shape; typed slices exist only for contiguous tensors, and mutable
/// slices only when no other tensor shares the storage.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    strides: Strides,
    offset: usize,
    storage: Arc<Storage>,
}

/// Row-major strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Strides {
    let mut strides: Strides = SmallVec::from_elem(1, shape.len());
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1) as isize;
    }
    strides
}

/// Normalizes a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(TensorError::Axis { axis, rank })
    }
}

impl Tensor {
    // ----- construction -------------------------------------------------------------------

    fn from_parts(dtype: DType, shape: &[usize], storage: Storage) -> Tensor {
        Tensor {
            dtype,
            shape: shape.into(),
            strides: contiguous_strides(shape),
            offset: 0,
            storage: Arc::new(storage),
        }
    }

    /// A tensor of zeros (empty strings for string tensors).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let n = element_count(shape)?;
        if dtype == DType::String {
            return Ok(Self::from_parts(
                dtype,
                shape,
                Storage::Strings(vec![String::new(); n]),
            ));
        }
        let bytes = n
            .checked_mul(dtype.size_of())
            .ok_or_else(|| TensorError::TooLarge {
                shape: shape.to_vec(),
            })?;
        Ok(Self::from_parts(
            dtype,
            shape,
            Storage::Host(AlignedBuffer::zeroed(bytes)),
        ))
    }

    /// Wraps a host buffer holding exactly `shape`'s elements of `dtype`, row-major.
    pub fn from_buffer(dtype: DType, shape: &[usize], buffer: AlignedBuffer) -> Result<Tensor> {
        let n = element_count(shape)?;
        if dtype == DType::String || buffer.len() != n * dtype.size_of() {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected: n,
                found: buffer.len().checked_div(dtype.size_of()).unwrap_or(0),
            });
        }
        Ok(Self::from_parts(dtype, shape, Storage::Host(buffer)))
    }

    /// Copies little-endian element bytes of `dtype` into a new tensor.
    pub fn from_raw_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
        Self::from_buffer(dtype, shape, AlignedBuffer::from_bytes(bytes))
    }

    /// Copies a typed slice into a new tensor of `shape`.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        let n = element_count(shape)?;
        if n != data.len() {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected: n,
                found: data.len(),
            });
        }
        Self::from_raw_bytes(T::DTYPE, shape, bytemuck::cast_slice(data))
    }

    /// Moves a vector into a new tensor of `shape` (the data is copied into aligned memory).
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Self::from_slice(&data, shape)
    }

    /// A rank-0 tensor holding `value`.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Self::from_parts(
            T::DTYPE,
            &[],
            Storage::Host(AlignedBuffer::from_bytes(bytemuck::bytes_of(&value))),
        )
    }

    /// A bool tensor.
    pub fn from_bools(data: &[bool], shape: &[usize]) -> Result<Tensor> {
        let bytes: Vec<u8> = data.iter().map(|&b| u8::from(b)).collect();
        let n = element_count(shape)?;
        if n != data.len() {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected: n,
                found: data.len(),
            });
        }
        Self::from_raw_bytes(DType::Bool, shape, &bytes)
    }

    /// A string tensor.
    pub fn from_strings(data: Vec<String>, shape: &[usize]) -> Result<Tensor> {
        let n = element_count(shape)?;
        if n != data.len() {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected: n,
                found: data.len(),
            });
        }
        Ok(Self::from_parts(
            DType::String,
            shape,
            Storage::Strings(data),
        ))
    }

    /// A tensor whose elements live on a device.
    pub fn from_device(
        dtype: DType,
        shape: &[usize],
        storage: Box<dyn crate::DeviceStorage>,
    ) -> Tensor {
        Self::from_parts(dtype, shape, Storage::Device(storage))
    }

    // ----- metadata -----------------------------------------------------------------------

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[isize] {
        &self.strides
    }

    /// Offset of the first element in the storage, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage (shared with views).
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Whether the elements are laid out row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.shape
            .iter()
            .zip(
                self.strides
                    .iter()
                    .zip(contiguous_strides(&self.shape).iter()),
            )
            .all(|(&d, (&s, &c))| d <= 1 || s == c)
    }

    /// Whether this tensor's storage is on a device rather than the host.
    pub fn is_on_device(&self) -> bool {
        matches!(*self.storage, Storage::Device(_))
    }

    // ----- typed access -------------------------------------------------------------------

    fn check_dtype(&self, expected: DType) -> Result<()> {
        if self.dtype == expected {
            Ok(())
        } else {
            Err(TensorError::DTypeMismatch {
                expected,
                found: self.dtype,
            })
        }
    }

    fn host_bytes(&self) -> Result<&[u8]> {
        match &*self.storage {
            Storage::Host(b) => Ok(b.as_bytes()),
            Storage::Strings(_) => Err(TensorError::DTypeMismatch {
                expected: DType::U8,
                found: DType::String,
            }),
            Storage::Device(d) => Err(TensorError::OnDevice { device: d.device() }),
        }
    }

    /// The contiguous bytes of a plain, contiguous host tensor.
    pub fn raw_bytes(&self) -> Result<&[u8]> {
        if !self.is_contiguous() {
            return Err(TensorError::NotContiguous);
        }
        let size = self.dtype.size_of();
        let bytes = self.host_bytes()?;
        Ok(&bytes[self.offset * size..(self.offset + self.len()) * size])
    }

    /// The elements of a contiguous tensor of type `T`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_dtype(T::DTYPE)?;
        Ok(bytemuck::cast_slice(self.raw_bytes()?))
    }

    /// The elements of a contiguous bool tensor as bytes holding 0 or 1.
    pub fn as_bool_slice(&self) -> Result<&[u8]> {
        self.check_dtype(DType::Bool)?;
        self.raw_bytes()
    }

    /// The strings of a contiguous string tensor.
    pub fn as_strings(&self) -> Result<&[String]> {
        self.check_dtype(DType::String)?;
        if !self.is_contiguous() {
            return Err(TensorError::NotContiguous);
        }
        match &*self.storage {
            Storage::Strings(s) => Ok(&s[self.offset..self.offset + self.len()]),
            _ => Err(TensorError::DTypeMismatch {
                expected: DType::String,
                found: self.dtype,
            }),
        }
    }

    /// Mutable bytes of a contiguous host tensor whose storage is not shared.
    pub fn raw_bytes_mut(&mut self) -> Result<&mut [u8]> {
        if !self.is_contiguous() {
            return Err(TensorError::NotContiguous);
        }
        let (start, len, size) = (self.offset, self.len(), self.dtype.size_of());
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Host(b)) => Ok(&mut b.as_bytes_mut()[start * size..(start + len) * size]),
            Some(Storage::Strings(_)) => Err(TensorError::DTypeMismatch {
                expected: DType::U8,
                found: DType::String,
            }),
            Some(Storage::Device(d)) => Err(TensorError::OnDevice { device: d.device() }),
            None => Err(TensorError::SharedStorage),
        }
    }

    /// Mutable elements of a contiguous, unshared tensor of type `T`.
    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        self.check_dtype(T::DTYPE)?;
        Ok(bytemuck::cast_slice_mut(self.raw_bytes_mut()?))
    }

    /// Mutable bytes (0 or 1) of a contiguous, unshared bool tensor.
    pub fn as_bool_slice_mut(&mut self) -> Result<&mut [u8]> {
        self.check_dtype(DType::Bool)?;
        self.raw_bytes_mut()
    }

    /// Mutable strings of a contiguous, unshared string tensor.
    pub fn as_strings_mut(&mut self) -> Result<&mut [String]> {
        self.check_dtype(DType::String)?;
        if !self.is_contiguous() {
            return Err(TensorError::NotContiguous);
        }
        let (start, len) = (self.offset, self.len());
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Strings(s)) => Ok(&mut s[start..start + len]),
            Some(_) => Err(TensorError::NotContiguous),
            None => Err(TensorError::SharedStorage),
        }
    }

    /// The elements of type `T` in row-major order, whatever the layout.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check_dtype(T::DTYPE)?;
        if self.is_contiguous() {
            return Ok(self.as_slice::<T>()?.to_vec());
        }
        let all: &[T] = bytemuck::cast_slice(self.host_bytes()?);
        let mut out = Vec::with_capacity(self.len());
        self.for_each_offset(|o| out.push(all[o]));
        Ok(out)
    }

    /// The first element converted to f64 (for scalars and shape-like inputs).
    pub fn first_as_f64(&self) -> Result<f64> {
        crate::dispatch_numeric!(self.dtype, T => self.to_vec::<T>()?.first().map(|v| v.to_f64()),
            match self.dtype { DType::Bool => self.contiguous().as_bool_slice()?.first().map(|&b| b as f64), _ => None })
            .ok_or(TensorError::LengthMismatch { shape: self.shape.to_vec(), expected: 1, found: 0 })
    }

    /// All elements of an integer tensor as i64 (for shapes, axes, indices).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        if !self.dtype.is_integer() && self.dtype != DType::Bool {
            return Err(TensorError::DTypeMismatch {
                expected: DType::I64,
                found: self.dtype,
            });
        }
        if self.dtype == DType::Bool {
            return Ok(self
                .contiguous()
                .as_bool_slice()?
                .iter()
                .map(|&b| b as i64)
                .collect());
        }
        crate::dispatch_numeric!(self.dtype, T => Ok(self.to_vec::<T>()?.into_iter().map(|v| v.to_i128() as i64).collect()),
            Err(TensorError::DTypeMismatch { expected: DType::I64, found: self.dtype }))
    }

    /// Calls `f` with the storage offset of every element in row-major order.
    pub fn for_each_offset(&self, mut f: impl FnMut(usize)) {
        let rank = self.rank();
        if self.is_empty() {
            return;
        }
        if rank == 0 {
            f(self.offset);
            return;
        }
        let mut index = vec![0usize; rank];
        let mut pos = self.offset as isize;
        let inner = self.shape[rank - 1];
        let inner_stride = self.strides[rank - 1];
        loop {
            let mut p = pos;
            for _ in 0..inner {
                f(p as usize);
                p += inner_stride;
            }
            // advance the outer index
            let mut axis = rank - 1;
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                index[axis] += 1;
                pos += self.strides[axis];
                if index[axis] < self.shape[axis] {
                    break;
                }
                pos -= self.strides[axis] * self.shape[axis] as isize;
                index[axis] = 0;
            }
        }
    }

    // ----- layout -------------------------------------------------------------------------

    /// A contiguous tensor with the same elements: `self` (cheaply cloned) if already
    /// contiguous, else a row-major copy. Device tensors are returned unchanged.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() || self.is_on_device() {
            return self.clone();
        }
        match &*self.storage {
            Storage::Strings(all) => {
                let mut out = Vec::with_capacity(self.len());
                self.for_each_offset(|o| out.push(all[o].clone()));
                Self::from_parts(DType::String, &self.shape, Storage::Strings(out))
            }
            Storage::Host(buffer) => {
                let size = self.dtype.size_of();
                let mut out = AlignedBuffer::zeroed(self.len() * size);
                dispatch_storage!(self.dtype, T => {
                    let src: &[T] = bytemuck::cast_slice(buffer.as_bytes());
                    let dst: &mut [T] = bytemuck::cast_slice_mut(out.as_bytes_mut());
                    let mut i = 0;
                    self.for_each_offset(|o| { dst[i] = src[o]; i += 1; });
                }, ());
                Self::from_parts(self.dtype, &self.shape, Storage::Host(out))
            }
            Storage::Device(_) => self.clone(),
        }
    }

    /// A tensor that owns its storage alone, so that it can be written: `self` when it already
    /// does and is contiguous, otherwise a contiguous copy.
    pub fn into_unique(self) -> Tensor {
        if self.is_contiguous() && Arc::strong_count(&self.storage) == 1 && self.offset == 0 {
            return self;
        }
        let copy = self.contiguous();
        if Arc::ptr_eq(&copy.storage, &self.storage) {
            drop(self);
            if Arc::strong_count(&copy.storage) == 1 && copy.offset == 0 {
                return copy;
            }
            return copy.deep_copy();
        }
        copy
    }

    /// A contiguous copy that shares nothing with `self`.
    pub fn deep_copy(&self) -> Tensor {
        let c = self.contiguous();
        match &*c.storage {
            Storage::Strings(_) => match c.as_strings() {
                Ok(s) => Self::from_parts(DType::String, &c.shape, Storage::Strings(s.to_vec())),
                Err(_) => c.clone(),
            },
            Storage::Host(_) => match c.raw_bytes() {
                Ok(bytes) => Self::from_parts(
                    c.dtype,
                    &c.shape,
                    Storage::Host(AlignedBuffer::from_bytes(bytes)),
                ),
                Err(_) => c.clone(),
            },
            Storage::Device(_) => c.clone(),
        }
    }

    /// The same elements with a new shape of equal element count (a view when contiguous).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if element_count(shape)? != self.len() {
            return Err(TensorError::Reshape {
                from: self.shape.to_vec(),
                to: shape.to_vec(),
            });
        }
        let mut t = self.contiguous();
        t.shape = shape.into();
        t.strides = contiguous_strides(shape);
        Ok(t)
    }

    /// Reorders the axes: axis `i` of the result is axis `perm[i]` of `self` (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(TensorError::Permutation {
                perm: perm.to_vec(),
                rank,
            });
        }
        let mut t = self.clone();
        t.shape = perm.iter().map(|&p| self.shape[p]).collect();
        t.strides = perm.iter().map(|&p| self.strides[p]).collect();
        Ok(t)
    }

    /// Elements `start, start+step, ...` before `end` along `axis` (a view). `step` may be
    /// negative, in which case `start > end`. Bounds must already be clamped by the caller:
    /// `start` must index an element unless the result is empty.
    pub fn slice_axis(&self, axis: usize, start: usize, end: isize, step: isize) -> Result<Tensor> {
        if axis >= self.rank() {
            return Err(TensorError::Axis {
                axis: axis as i64,
                rank: self.rank(),
            });
        }
        if step == 0 {
            return Err(TensorError::Axis {
                axis: axis as i64,
                rank: self.rank(),
            });
        }
        let s = start as isize;
        let count = if step > 0 {
            if end > s {
                (end - s + step - 1) / step
            } else {
                0
            }
        } else if s > end {
            (s - end + (-step) - 1) / (-step)
        } else {
            0
        };
        let mut t = self.clone();
        if count > 0 {
            if start >= self.shape[axis] {
                return Err(TensorError::Axis {
                    axis: axis as i64,
                    rank: self.rank(),
                });
            }
            t.offset = (self.offset as isize + s * self.strides[axis]) as usize;
        }
        t.shape[axis] = count as usize;
        t.strides[axis] = self.strides[axis] * step;
        Ok(t)
    }

    /// A view broadcast to `shape` (numpy rules; broadcast axes get stride 0).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let strides = crate::broadcast_strides(&self.shape, &self.strides, shape)?;
        let mut t = self.clone();
        t.shape = shape.into();
        t.strides = strides;
        Ok(t)
    }

    /// A view with a new axis of length 1 inserted at `axis`.
    pub fn insert_axis(&self, axis: usize) -> Result<Tensor> {
        if axis > self.rank() {
            return Err(TensorError::Axis {
                axis: axis as i64,
                rank: self.rank(),
            });
        }
        let mut t = self.clone();
        t.shape.insert(axis, 1);
        let stride = self
            .strides
            .get(axis)
            .map_or(1, |&s| s * self.shape[axis] as isize);
        t.strides.insert(axis, stride);
        Ok(t)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?}", self.dtype, self.shape.as_slice())?;
        let preview: Option<String> = crate::dispatch_numeric!(self.dtype, T => self
            .to_vec::<T>()
            .ok()
            .map(|v| format!("{:?}", &v[..v.len().min(8)])), None);
        if let Some(p) = preview {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

impl Tensor {
    /// The host buffer behind this tensor when nothing else shares it, for reuse by a pool.
    pub fn into_buffer(self) -> Option<AlignedBuffer> {
        match Arc::try_unwrap(self.storage) {
            Ok(Storage::Host(buffer)) => Some(buffer),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arange(n: usize, shape: &[usize]) -> Tensor {
        Tensor::from_vec((0..n).map(|i| i as f32).collect(), shape).unwrap()
    }

    #[test]
    fn construction_checks_length() {
        assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).is_err());
        let t = arange(6, &[2, 3]);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.strides(), &[3, 1]);
        assert!(t.as_slice::<f64>().is_err());
    }

    #[test]
    fn permute_is_a_view_and_to_vec_follows_strides() {
        let t = arange(6, &[2, 3]);
        let p = t.permute(&[1, 0]).unwrap();
        assert!(!p.is_contiguous());
        assert!(Arc::ptr_eq(p.storage(), t.storage()));
        assert_eq!(p.to_vec::<f32>().unwrap(), vec![0., 3., 1., 4., 2., 5.]);
        assert_eq!(
            p.contiguous().as_slice::<f32>().unwrap(),
            &[0., 3., 1., 4., 2., 5.]
        );
        assert!(t.permute(&[0, 0]).is_err());
    }

    #[test]
    fn slices_with_steps() {
        let t = arange(10, &[10]);
        let s = t.slice_axis(0, 1, 8, 3).unwrap();
        assert_eq!(s.to_vec::<f32>().unwrap(), vec![1., 4., 7.]);
        let r = t.slice_axis(0, 9, -1, -2).unwrap();
        assert_eq!(r.to_vec::<f32>().unwrap(), vec![9., 7., 5., 3., 1.]);
        let e = t.slice_axis(0, 5, 2, 1).unwrap();
        assert!(e.is_empty());
    }

    #[test]
    fn mutation_requires_unique_storage() {
        let mut t = arange(4, &[4]);
        let view = t.clone();
        assert!(matches!(
            t.as_slice_mut::<f32>(),
            Err(TensorError::SharedStorage)
        ));
        drop(view);
        t.as_slice_mut::<f32>().unwrap()[0] = 7.0;
        assert_eq!(t.as_slice::<f32>().unwrap()[0], 7.0);
        let shared = t.clone();
        let mut unique = shared.into_unique();
        unique.as_slice_mut::<f32>().unwrap()[1] = 9.0;
        assert_eq!(t.as_slice::<f32>().unwrap()[1], 1.0);
    }

    #[test]
    fn reshape_and_insert_axis() {
        let t = arange(6, &[2, 3]);
        assert_eq!(t.reshape(&[3, 2]).unwrap().shape(), &[3, 2]);
        assert!(t.reshape(&[4]).is_err());
        let u = t.insert_axis(1).unwrap();
        assert_eq!(u.shape(), &[2, 1, 3]);
        assert_eq!(u.to_vec::<f32>().unwrap(), t.to_vec::<f32>().unwrap());
    }

    #[test]
    fn strings_and_bools() {
        let s = Tensor::from_strings(vec!["a".into(), "b".into()], &[2]).unwrap();
        assert_eq!(s.as_strings().unwrap()[1], "b");
        let b = Tensor::from_bools(&[true, false], &[2]).unwrap();
        assert_eq!(b.as_bool_slice().unwrap(), &[1, 0]);
        assert_eq!(b.to_i64_vec().unwrap(), vec![1, 0]);
    }
}
