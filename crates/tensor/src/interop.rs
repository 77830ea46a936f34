//! Conversion between [`Tensor`] and `ndarray` arrays.

use crate::{Element, Result, Tensor, TensorError};
use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

impl Tensor {
    /// A zero-copy `ndarray` view (non-negative strides only; otherwise copy first with
    /// [`Tensor::contiguous`]).
    pub fn view_ndarray<T: Element>(&self) -> Result<ArrayViewD<'_, T>> {
        if self.strides().iter().any(|&s| s < 0) {
            return Err(TensorError::NotContiguous);
        }
        if T::DTYPE != self.dtype() {
            return Err(TensorError::DTypeMismatch {
                expected: T::DTYPE,
                found: self.dtype(),
            });
        }
        let all: &[T] = match &**self.storage() {
            crate::Storage::Host(b) => bytemuck::cast_slice(b.as_bytes()),
            crate::Storage::Device(d) => return Err(TensorError::OnDevice { device: d.device() }),
            crate::Storage::Strings(_) => {
                return Err(TensorError::DTypeMismatch {
                    expected: T::DTYPE,
                    found: self.dtype(),
                })
            }
        };
        let strides: Vec<usize> = self.strides().iter().map(|&s| s as usize).collect();
        let shape = IxDyn(self.shape()).strides(IxDyn(&strides));
        let data = if self.is_empty() {
            &all[..0]
        } else {
            &all[self.offset()..]
        };
        ArrayViewD::from_shape(shape, data).map_err(|_| TensorError::NotContiguous)
    }

    /// An owned `ndarray` array holding a copy of the elements.
    pub fn to_ndarray<T: Element>(&self) -> Result<ArrayD<T>> {
        let data = self.to_vec::<T>()?;
        ArrayD::from_shape_vec(IxDyn(self.shape()), data).map_err(|_| TensorError::NotContiguous)
    }

    /// A tensor holding a copy of an `ndarray` array (any layout).
    pub fn from_ndarray<T, S, D>(array: &ndarray::ArrayBase<S, D>) -> Tensor
    where
        T: Element,
        S: ndarray::Data<Elem = T>,
        D: ndarray::Dimension,
    {
        let shape: Vec<usize> = array.shape().to_vec();
        let data: Vec<T> = array.iter().copied().collect();
        match Tensor::from_vec(data, &shape) {
            Ok(t) => t,
            Err(_) => unreachable_shape(),
        }
    }
}

#[cold]
fn unreachable_shape() -> Tensor {
    // An ndarray's element count always matches its shape.
    Tensor::scalar(0u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn ndarray_round_trip_and_views() {
        let a = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let t = Tensor::from_ndarray(&a);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.to_ndarray::<f32>().unwrap(), a.into_dyn());
        let p = t.permute(&[1, 0]).unwrap();
        let v = p.view_ndarray::<f32>().unwrap();
        assert_eq!(v[[2, 1]], 6.0);
        let s = t.slice_axis(1, 1, 3, 1).unwrap();
        assert_eq!(s.view_ndarray::<f32>().unwrap()[[1, 0]], 5.0);
        let transposed = Tensor::from_ndarray(&v);
        assert_eq!(
            transposed.to_vec::<f32>().unwrap(),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }
}
