//! A heap buffer whose start is aligned to [`ALIGNMENT`] bytes, built on `Vec` of aligned
//! blocks so that no raw allocation code is needed.

use std::sync::atomic::{AtomicU64, Ordering};

/// Alignment in bytes of every [`AlignedBuffer`]: one cache line, enough for AVX-512 loads.
pub const ALIGNMENT: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
struct Block([u8; ALIGNMENT]);

// SAFETY: `Block` is `repr(C)` over a byte array whose size equals its alignment, so it has no
// padding and every bit pattern is valid, which is what `Zeroable` and `Pod` require.
unsafe impl bytemuck::Zeroable for Block {}
// SAFETY: see above; `Block` is `Copy` and `'static`.
unsafe impl bytemuck::Pod for Block {}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Number of [`AlignedBuffer`] allocations made by this process so far. Tests use it to prove
/// that steady-state runs allocate no new buffers.
pub fn allocation_count() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// A zero-initialised, 64-byte aligned, fixed-length byte buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct AlignedBuffer {
    blocks: Vec<Block>,
    len: usize,
}

impl std::fmt::Debug for AlignedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuffer")
            .field("len", &self.len)
            .finish()
    }
}

impl AlignedBuffer {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        let blocks = vec![Block([0; ALIGNMENT]); len.div_ceil(ALIGNMENT)];
        AlignedBuffer { blocks, len }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut buffer = Self::zeroed(bytes.len());
        buffer.as_bytes_mut().copy_from_slice(bytes);
        buffer
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that can be used without reallocating (a multiple of [`ALIGNMENT`]).
    pub fn capacity(&self) -> usize {
        self.blocks.len() * ALIGNMENT
    }

    /// Changes the logical length within the capacity; returns false (and changes nothing)
    /// when `len` exceeds it. Newly exposed bytes keep whatever they held.
    pub fn set_len_within_capacity(&mut self, len: usize) -> bool {
        if len > self.capacity() {
            return false;
        }
        self.len = len;
        true
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<Block, u8>(&self.blocks)[..self.len]
    }

    /// The bytes, mutably.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut::<Block, u8>(&mut self.blocks)[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_zeroed() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let b = AlignedBuffer::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_bytes().as_ptr() as usize % ALIGNMENT, 0);
            assert!(b.as_bytes().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn block_cast_round_trips() {
        let mut b = AlignedBuffer::from_bytes(&[1, 2, 3]);
        b.as_bytes_mut()[1] = 9;
        assert_eq!(b.as_bytes(), &[1, 9, 3]);
        assert!(b.set_len_within_capacity(64));
        assert!(!b.set_len_within_capacity(65));
    }
}
