//! The evaluation context: memory for outputs and threads for large kernels.

use crate::OpResult;
use smallvec::SmallVec;
use std::fmt;
use std::sync::Mutex;
use strata_memory::AlignedBuffer;
use strata_tensor::{DType, Tensor};

/// Runs independent tasks, possibly on several threads. The scheduler implements it over its
/// pool; [`SerialParallelFor`] runs everything on the calling thread.
pub trait ParallelFor: Sync + fmt::Debug {
    /// Threads tasks may be spread over (1 means serial).
    fn threads(&self) -> usize;
    /// Calls `task(i)` for every `i` in `0..tasks` and returns when all are done.
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync));
}

/// Runs tasks one after the other on the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct SerialParallelFor;

impl ParallelFor for SerialParallelFor {
    fn threads(&self) -> usize {
        1
    }
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..tasks).for_each(task);
    }
}

/// Where kernels get output buffers. The session implements it over its buffer pool so that
/// steady-state runs reuse memory; [`HeapTensorAlloc`] allocates fresh.
pub trait TensorAlloc: Sync + fmt::Debug {
    /// A zero-filled host buffer of `bytes` bytes.
    fn buffer(&self, bytes: usize) -> OpResult<AlignedBuffer>;
    /// A host buffer of `bytes` bytes whose contents are unspecified (but initialized), for
    /// a caller that writes every byte before reading any. The default zero-fills.
    fn buffer_for_overwrite(&self, bytes: usize) -> OpResult<AlignedBuffer> {
        self.buffer(bytes)
    }
    /// Takes back a buffer whose tensor is no longer needed (the default drops it).
    fn release(&self, buffer: AlignedBuffer) {
        drop(buffer);
    }
}

/// Allocates every buffer from the heap.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeapTensorAlloc;

impl TensorAlloc for HeapTensorAlloc {
    fn buffer(&self, bytes: usize) -> OpResult<AlignedBuffer> {
        Ok(AlignedBuffer::zeroed(bytes))
    }
}

/// What a kernel may use while it runs.
#[derive(Debug, Clone, Copy)]
pub struct EvalCtx<'a> {
    /// Threads for data-parallel kernels.
    pub parallel: &'a dyn ParallelFor,
    /// Output memory.
    pub alloc: &'a dyn TensorAlloc,
}

impl Default for EvalCtx<'static> {
    fn default() -> Self {
        EvalCtx {
            parallel: &SerialParallelFor,
            alloc: &HeapTensorAlloc,
        }
    }
}

impl EvalCtx<'_> {
    /// A zero-filled, uniquely owned tensor (strings: empty strings) for an output.
    pub fn alloc(&self, dtype: DType, shape: &[usize]) -> OpResult<Tensor> {
        self.alloc_with(dtype, shape, true)
    }

    /// Like [`EvalCtx::alloc`], but the elements may hold stale values: only for a kernel
    /// that writes every element of the output before anything reads it (it saves a pass
    /// over the output).
    pub fn alloc_for_overwrite(&self, dtype: DType, shape: &[usize]) -> OpResult<Tensor> {
        self.alloc_with(dtype, shape, false)
    }

    fn alloc_with(&self, dtype: DType, shape: &[usize], zeroed: bool) -> OpResult<Tensor> {
        if dtype == DType::String {
            return Ok(Tensor::zeros(dtype, shape)?);
        }
        let n = strata_tensor::element_count(shape)?;
        let bytes = n
            .checked_mul(dtype.size_of())
            .ok_or_else(|| crate::OpError::Shape(format!("output shape {shape:?} is too large")))?;
        let buffer = if zeroed {
            self.alloc.buffer(bytes)?
        } else {
            self.alloc.buffer_for_overwrite(bytes)?
        };
        Ok(Tensor::from_buffer(dtype, shape, buffer)?)
    }

    /// Number of threads available to data-parallel kernels.
    pub fn threads(&self) -> usize {
        self.parallel.threads().max(1)
    }

    /// Splits `data` into chunks of `chunk_len` elements (the last may be shorter) and calls
    /// `f(chunk_index, chunk)` for each, spread over the available threads.
    pub fn par_chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk_len = chunk_len.max(1);
        if self.threads() == 1 || data.len() <= chunk_len {
            data.chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
            return;
        }
        // Inline for the usual few chunks per thread: no allocation per parallel call.
        let chunks: SmallVec<[Mutex<&mut [T]>; 16]> =
            data.chunks_mut(chunk_len).map(Mutex::new).collect();
        self.parallel.run(chunks.len(), &|i| {
            // Each task locks only its own chunk, so the lock is never contended.
            if let Ok(mut chunk) = chunks[i].lock() {
                f(i, &mut chunk);
            }
        });
    }

    /// Like [`EvalCtx::par_chunks_mut`] but picks the chunk length so that each thread gets a
    /// few chunks of at least `min_chunk` elements.
    pub fn par_split_mut<T: Send>(
        &self,
        data: &mut [T],
        min_chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) -> usize {
        let threads = self.threads();
        let chunk = data.len().div_ceil(threads * 4).max(min_chunk).max(1);
        self.par_chunks_mut(data, chunk, f);
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct TwoThreads;
    impl ParallelFor for TwoThreads {
        fn threads(&self) -> usize {
            2
        }
        fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
            std::thread::scope(|s| {
                s.spawn(|| (0..tasks).step_by(2).for_each(task));
                s.spawn(|| (1..tasks).step_by(2).for_each(task));
            });
        }
    }

    #[test]
    fn chunks_cover_everything_once() {
        let ctx = EvalCtx {
            parallel: &TwoThreads,
            alloc: &HeapTensorAlloc,
        };
        let mut data = vec![0usize; 1003];
        ctx.par_chunks_mut(&mut data, 100, |ci, chunk| {
            for (j, x) in chunk.iter_mut().enumerate() {
                *x += ci * 100 + j;
            }
        });
        assert!(data.iter().enumerate().all(|(i, &x)| x == i));
        let t = ctx.alloc(DType::F32, &[2, 3]).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.0; 6]);
    }
}

/// Runs tasks on three scoped threads, so tests cross chunk and task boundaries.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ThreeThreads;

#[cfg(test)]
impl ParallelFor for ThreeThreads {
    fn threads(&self) -> usize {
        3
    }
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for t in 0..3 {
                s.spawn(move || (t..tasks).step_by(3).for_each(task));
            }
        });
    }
}
