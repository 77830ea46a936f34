//! strata-tensor owns [`Tensor`], the one concrete n-dimensional array type of Strata: an
//! element type ([`DType`]), a shape, strides and an offset into shared, reference-counted
//! [`Storage`]. Views (slices, transposes, broadcasts, reshapes of contiguous data) share the
//! storage; kernels read contiguous typed slices and write into uniquely owned tensors.
//!
//! Also here: multidirectional broadcasting ([`broadcast_shapes`]), dtype casts, conversion to
//! and from `ndarray` arrays, and `.npy` files. ONNX `TensorProto` I/O lives in strata-onnx,
//! next to the protobuf types it needs.

mod broadcast;
mod cast;
mod dtype;
mod error;
mod interop;
pub mod npy;
mod storage;
mod tensor;

pub use broadcast::{broadcast_shapes, broadcast_strides};
pub use dtype::{DType, Element};
pub use error::TensorError;
pub use storage::{DeviceStorage, Storage};
pub use tensor::{normalize_axis, Shape, Strides, Tensor};

#[doc(hidden)]
pub use half;
pub use half::{bf16, f16};

/// Result alias for this crate.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

/// Number of elements of a shape, or an error when it overflows `usize`.
pub fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| TensorError::TooLarge {
            shape: shape.to_vec(),
        })
}
