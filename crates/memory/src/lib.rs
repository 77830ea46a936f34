//! strata-memory owns host memory for Strata: 64-byte aligned byte buffers
//! ([`AlignedBuffer`]), the [`Allocator`] seam through which tensors obtain them, a size-class
//! [`BufferPool`] with reuse statistics, and the static [`MemoryPlan`] that assigns every
//! intermediate value of an execution plan to a reusable slot from the values' lifetimes.
//!
//! Nothing here knows about dtypes or shapes: callers speak in bytes.

mod buffer;
mod plan;
mod pool;

pub use buffer::{allocation_count, AlignedBuffer, ALIGNMENT};
pub use plan::{peak_buffers_by_class, plan_slots, MemoryPlan, ValueLifetime};
pub use pool::{size_class, BufferPool, PoolStats};

/// Errors raised by memory management.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A request exceeded the configured limit.
    #[error("allocation of {requested} bytes exceeds the limit of {limit} bytes")]
    LimitExceeded {
        /// Bytes asked for.
        requested: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// The seam through which storage is obtained. The default is the global heap; pools and
/// arenas implement it too, and a device backend implements its own.
pub trait Allocator: Send + Sync + std::fmt::Debug {
    /// A zero-filled buffer of exactly `bytes` bytes.
    fn allocate(&self, bytes: usize) -> Result<AlignedBuffer, MemoryError>;
    /// Returns a buffer for reuse; the default simply drops it.
    fn release(&self, buffer: AlignedBuffer) {
        drop(buffer);
    }
}

/// Allocates straight from the global heap.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeapAllocator;

impl Allocator for HeapAllocator {
    fn allocate(&self, bytes: usize) -> Result<AlignedBuffer, MemoryError> {
        Ok(AlignedBuffer::zeroed(bytes))
    }
}
