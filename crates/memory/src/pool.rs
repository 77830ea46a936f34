//! A thread-safe pool of [`AlignedBuffer`]s bucketed by power-of-two size class.

use crate::{AlignedBuffer, Allocator, MemoryError};
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Counters describing how well a [`BufferPool`] reuses memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests served from a cached buffer.
    pub hits: u64,
    /// Requests that needed a fresh allocation.
    pub misses: u64,
    /// Buffers currently cached.
    pub cached_buffers: usize,
    /// Bytes currently cached.
    pub cached_bytes: usize,
    /// Bytes allocated over the pool's life.
    pub allocated_bytes: u64,
}

/// A size-class buffer pool. Buffers are rounded up to a power of two (at least 64 bytes), so
/// a released buffer can serve any later request of the same class.
#[derive(Debug, Default)]
pub struct BufferPool {
    inner: Mutex<PoolInner>,
    limit: Option<usize>,
}

#[derive(Debug, Default)]
struct PoolInner {
    free: BTreeMap<usize, Vec<AlignedBuffer>>,
    stats: PoolStats,
}

/// The size class serving a request of `bytes` bytes: the next power of two, at least 64.
pub fn size_class(bytes: usize) -> usize {
    bytes.max(crate::ALIGNMENT).next_power_of_two()
}

impl BufferPool {
    /// An empty pool without a size limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool refusing single requests above `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        BufferPool {
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// Makes sure at least `count` buffers of the class serving `bytes` are cached, allocating
    /// the difference now so that later requests hit.
    pub fn reserve(&self, bytes: usize, count: usize) {
        let class = size_class(bytes);
        let mut inner = self.inner.lock();
        let have = inner.free.get(&class).map_or(0, Vec::len);
        for _ in have..count {
            inner.stats.allocated_bytes += class as u64;
            inner.stats.cached_buffers += 1;
            inner.stats.cached_bytes += class;
            inner
                .free
                .entry(class)
                .or_default()
                .push(AlignedBuffer::zeroed(class));
        }
    }

    /// Reuse statistics so far.
    pub fn stats(&self) -> PoolStats {
        self.inner.lock().stats
    }
}

impl BufferPool {
    /// Like [`Allocator::allocate`], but a reused buffer keeps its old bytes instead of being
    /// zeroed: for callers that write every byte before anything reads it (the bytes are
    /// always initialized; they may hold an earlier tensor of the same pool).
    pub fn allocate_for_overwrite(&self, bytes: usize) -> Result<AlignedBuffer, MemoryError> {
        self.take(bytes, false)
    }

    fn take(&self, bytes: usize, zero: bool) -> Result<AlignedBuffer, MemoryError> {
        if let Some(limit) = self.limit {
            if bytes > limit {
                return Err(MemoryError::LimitExceeded {
                    requested: bytes,
                    limit,
                });
            }
        }
        let class = size_class(bytes);
        let mut inner = self.inner.lock();
        if let Some(mut buffer) = inner.free.get_mut(&class).and_then(Vec::pop) {
            inner.stats.hits += 1;
            inner.stats.cached_buffers -= 1;
            inner.stats.cached_bytes -= buffer.capacity();
            drop(inner);
            buffer.set_len_within_capacity(bytes);
            if zero {
                buffer.as_bytes_mut().fill(0);
            }
            return Ok(buffer);
        }
        inner.stats.misses += 1;
        inner.stats.allocated_bytes += class as u64;
        drop(inner);
        let mut buffer = AlignedBuffer::zeroed(class);
        buffer.set_len_within_capacity(bytes);
        Ok(buffer)
    }
}

impl Allocator for BufferPool {
    fn allocate(&self, bytes: usize) -> Result<AlignedBuffer, MemoryError> {
        self.take(bytes, true)
    }

    fn release(&self, buffer: AlignedBuffer) {
        let class = buffer.capacity();
        if class != size_class(class) {
            return; // not one of ours; let it drop
        }
        let mut inner = self.inner.lock();
        inner.stats.cached_buffers += 1;
        inner.stats.cached_bytes += class;
        inner.free.entry(class).or_default().push(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_buffers_are_reused_by_size_class() {
        let pool = BufferPool::new();
        let a = pool.allocate(100).unwrap();
        assert_eq!(a.len(), 100);
        pool.release(a);
        let b = pool.allocate(120).unwrap();
        assert_eq!(b.len(), 120);
        let stats = pool.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
        pool.release(b);
        let _c = pool.allocate(1000).unwrap();
        assert_eq!(pool.stats().misses, 2);
    }

    #[test]
    fn reused_buffers_are_zeroed_unless_for_overwrite() {
        let pool = BufferPool::new();
        let mut a = pool.allocate(64).unwrap();
        a.as_bytes_mut().fill(7);
        pool.release(a);
        let mut b = pool.allocate(64).unwrap();
        assert!(b.as_bytes_mut().iter().all(|&x| x == 0));
        b.as_bytes_mut().fill(7);
        pool.release(b);
        // The same buffer again, old bytes kept; a fresh one is zeroed.
        let mut c = pool.allocate_for_overwrite(64).unwrap();
        assert!(c.as_bytes_mut().iter().all(|&x| x == 7));
        let mut d = pool.allocate_for_overwrite(64).unwrap();
        assert!(d.as_bytes_mut().iter().all(|&x| x == 0));
        assert_eq!((pool.stats().hits, pool.stats().misses), (2, 2));
    }

    #[test]
    fn reserved_buffers_serve_later_requests() {
        let pool = BufferPool::new();
        pool.reserve(1000, 2);
        let _a = pool.allocate(1000).unwrap();
        let _b = pool.allocate(900).unwrap();
        let stats = pool.stats();
        assert_eq!((stats.hits, stats.misses), (2, 0));
    }

    #[test]
    fn limit_is_enforced() {
        let pool = BufferPool::with_limit(1024);
        assert!(matches!(
            pool.allocate(4096),
            Err(MemoryError::LimitExceeded {
                requested: 4096,
                ..
            })
        ));
    }
}
