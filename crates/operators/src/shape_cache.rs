//! [`ShapeCache`]: what an operator derives from its input shape (geometry, tap tables,
//! edge lists), kept from one run to the next so steady-state runs neither recompute nor
//! allocate it.

use smallvec::SmallVec;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The last value an operator derived from an input shape, with that shape.
///
/// A lookup with the same shape returns the cached value (an `Arc` clone, no allocation for
/// ranks up to 6); another shape replaces it. Concurrent runs share it; a poisoned lock only
/// means the value is recomputed. Cloning an operator gives the clone an empty cache.
pub struct ShapeCache<V> {
    last: Mutex<Option<Entry<V>>>,
}

/// A shape (inline up to rank 6) and its value.
type Entry<V> = (SmallVec<[usize; 6]>, Arc<V>);

impl<V> ShapeCache<V> {
    /// The value for `shape`: the cached one, or `make()`'s, which is then cached. An error
    /// from `make` is returned and nothing is cached.
    pub fn get_or_try_insert<E>(
        &self,
        shape: &[usize],
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Ok(last) = self.last.lock() {
            if let Some((key, value)) = last.as_ref() {
                if key.as_slice() == shape {
                    return Ok(Arc::clone(value));
                }
            }
        }
        let value = Arc::new(make()?);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((SmallVec::from_slice(shape), Arc::clone(&value)));
        }
        Ok(value)
    }
}

impl<V> Default for ShapeCache<V> {
    fn default() -> Self {
        Self {
            last: Mutex::new(None),
        }
    }
}

impl<V> Clone for ShapeCache<V> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<V> fmt::Debug for ShapeCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShapeCache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn computes_once_per_shape_and_replaces_on_a_new_shape() {
        let cache = ShapeCache::default();
        let calls = Cell::new(0);
        let make = |v: usize| {
            calls.set(calls.get() + 1);
            Ok::<_, ()>(v)
        };
        assert_eq!(*cache.get_or_try_insert(&[1, 2], || make(12)).unwrap(), 12);
        assert_eq!(*cache.get_or_try_insert(&[1, 2], || make(99)).unwrap(), 12);
        assert_eq!(calls.get(), 1);
        assert_eq!(*cache.get_or_try_insert(&[3], || make(3)).unwrap(), 3);
        assert_eq!(*cache.get_or_try_insert(&[1, 2], || make(21)).unwrap(), 21);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn errors_are_not_cached_and_clones_start_empty() {
        let cache: ShapeCache<u8> = ShapeCache::default();
        assert_eq!(
            cache.get_or_try_insert(&[4], || Err("bad")).unwrap_err(),
            "bad"
        );
        assert_eq!(
            *cache.get_or_try_insert(&[4], || Ok::<_, ()>(4)).unwrap(),
            4
        );
        let copy = cache.clone();
        assert_eq!(*copy.get_or_try_insert(&[4], || Ok::<_, ()>(5)).unwrap(), 5);
    }
}
