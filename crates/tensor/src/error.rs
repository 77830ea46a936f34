//! The tensor error type.

use crate::DType;

/// What went wrong with a tensor operation; every variant names the offending dtype or shape.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// A typed view asked for another dtype than the tensor holds.
    #[error("dtype mismatch: expected {expected}, found {found}")]
    DTypeMismatch {
        /// The dtype asked for.
        expected: DType,
        /// The dtype the tensor holds.
        found: DType,
    },
    /// Data length and shape disagree.
    #[error("shape {shape:?} needs {expected} elements but {found} were given")]
    LengthMismatch {
        /// The shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// Two shapes cannot be broadcast together.
    #[error("shapes {a:?} and {b:?} cannot be broadcast together")]
    Broadcast {
        /// First shape.
        a: Vec<usize>,
        /// Second shape.
        b: Vec<usize>,
    },
    /// A reshape changes the element count.
    #[error("cannot reshape {from:?} into {to:?}")]
    Reshape {
        /// Source shape.
        from: Vec<usize>,
        /// Target shape.
        to: Vec<usize>,
    },
    /// An axis argument is out of range.
    #[error("axis {axis} is out of range for rank {rank}")]
    Axis {
        /// The axis given.
        axis: i64,
        /// The tensor's rank.
        rank: usize,
    },
    /// A permutation is not a permutation of the axes.
    #[error("{perm:?} is not a permutation of {rank} axes")]
    Permutation {
        /// The permutation given.
        perm: Vec<usize>,
        /// The tensor's rank.
        rank: usize,
    },
    /// A shape's element count overflows.
    #[error("shape {shape:?} is too large")]
    TooLarge {
        /// The shape.
        shape: Vec<usize>,
    },
    /// An operation needs contiguous, row-major data.
    #[error("tensor is not contiguous")]
    NotContiguous,
    /// A mutable view needs storage no other tensor shares.
    #[error("tensor storage is shared; cannot write in place")]
    SharedStorage,
    /// The data lives on a device and must be copied to the host first.
    #[error("tensor lives on device {device}; copy it to the host first")]
    OnDevice {
        /// The device's name.
        device: String,
    },
    /// A cast between these dtypes is not supported.
    #[error("cannot cast {from} to {to}")]
    Cast {
        /// Source dtype.
        from: DType,
        /// Target dtype.
        to: DType,
    },
    /// A malformed `.npy` file or unsupported contents.
    #[error("npy: {0}")]
    Npy(String),
    /// An I/O error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
