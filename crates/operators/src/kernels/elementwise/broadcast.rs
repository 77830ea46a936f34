//! The multidirectional-broadcast driver shared by every elementwise kernel.
//!
//! A [`BroadcastPlan`] describes how `K` contiguous row-major inputs map onto a broadcast
//! output: the output shape, and the output's dimensions *coalesced* (size-1 axes dropped,
//! neighbouring axes merged whenever every input walks them as one) with each input's stride
//! per coalesced dimension (0 where it is broadcast). The driver then splits the output into
//! chunks (spread over threads) and walks each chunk one *segment* (a run along the innermost
//! coalesced dimension) at a time, where every input is either contiguous (stride 1) or a
//! repeated scalar (stride 0). Per-segment loops are plain slice loops over a monomorphized
//! closure, so they vectorize; the per-segment bookkeeping is amortized over the segment.
//!
//! Fast paths: same-shape operands and scalar operands collapse to one segment per chunk.
//!
//! ```
//! use strata_ops::kernels::elementwise::BroadcastPlan;
//! use strata_ops::EvalCtx;
//! let plan = BroadcastPlan::new([&[2, 1][..], &[3][..]]).unwrap();
//! assert_eq!(plan.out_shape(), &[2, 3]);
//! let mut out = [0i32; 6];
//! plan.binary(&EvalCtx::default(), &[10, 20], &[1, 2, 3], &mut out, |&a, &b| a + b);
//! assert_eq!(out, [11, 12, 13, 21, 22, 23]);
//! ```

use crate::{Dim, EvalCtx, Fact, OpError, OpResult};
use smallvec::SmallVec;
use strata_tensor::Shape;

/// Outputs smaller than this many elements are computed on the calling thread.
pub const MIN_PARALLEL_CHUNK: usize = 1 << 15;

/// How `K` contiguous inputs broadcast to one output, ready to iterate (see the module docs).
#[derive(Debug, Clone)]
pub struct BroadcastPlan<const K: usize> {
    out_shape: Shape,
    len: usize,
    /// Coalesced output dimensions, outermost first (never empty when `len > 0`).
    dims: SmallVec<[usize; 6]>,
    /// Each input's stride (in elements) along each coalesced dimension.
    strides: SmallVec<[[usize; K]; 6]>,
}

impl<const K: usize> BroadcastPlan<K> {
    /// Plans the numpy-style broadcast of `shapes` (aligned from the right; each dimension
    /// equal to the output's or 1). Errors name the shapes that do not broadcast.
    pub fn new(shapes: [&[usize]; K]) -> OpResult<Self> {
        let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut out_shape = Shape::with_capacity(rank);
        for axis in 0..rank {
            let mut d = 1;
            for s in &shapes {
                let sd = dim_at(s, axis, rank);
                if sd != 1 {
                    if d != 1 && d != sd {
                        return Err(OpError::Shape(format!(
                            "shapes {} cannot be broadcast together",
                            describe(&shapes)
                        )));
                    }
                    d = sd;
                }
            }
            out_shape.push(d);
        }
        Self::build(shapes, out_shape)
    }

    /// Plans the broadcast of `shapes` to the given `target` shape (unidirectional: every
    /// input must broadcast to `target`, which is the output shape).
    pub fn to_shape(shapes: [&[usize]; K], target: &[usize]) -> OpResult<Self> {
        let rank = target.len();
        for (k, s) in shapes.iter().enumerate() {
            let ok = s.len() <= rank
                && (0..rank).all(|a| {
                    let d = dim_at(s, a, rank);
                    d == 1 || d == target[a]
                });
            if !ok {
                return Err(OpError::Shape(format!(
                    "operand {k} of shape {s:?} cannot be broadcast to {target:?}"
                )));
            }
        }
        Self::build(shapes, target.into())
    }

    fn build(shapes: [&[usize]; K], out_shape: Shape) -> OpResult<Self> {
        let rank = out_shape.len();
        let len = strata_tensor::element_count(&out_shape)?;
        // Contiguous strides of each input, expressed on the output's axes.
        let mut in_strides = vec![[0usize; K]; rank];
        for (k, s) in shapes.iter().enumerate() {
            let mut stride = 1usize;
            for axis in (0..rank).rev() {
                let d = dim_at(s, axis, rank);
                in_strides[axis][k] = if d == 1 { 0 } else { stride };
                stride *= d;
            }
        }
        let mut dims: SmallVec<[usize; 6]> = SmallVec::new();
        let mut strides: SmallVec<[[usize; K]; 6]> = SmallVec::new();
        for axis in 0..rank {
            let d = out_shape[axis];
            if d == 1 {
                continue;
            }
            let st = in_strides[axis];
            if let (Some(last_d), Some(last_s)) = (dims.last_mut(), strides.last_mut()) {
                if (0..K).all(|k| last_s[k] == st[k] * d) {
                    *last_d *= d;
                    *last_s = st;
                    continue;
                }
            }
            dims.push(d);
            strides.push(st);
        }
        if dims.is_empty() {
            dims.push(1);
            strides.push([0; K]);
        }
        Ok(BroadcastPlan {
            out_shape,
            len,
            dims,
            strides,
        })
    }

    /// The broadcast output shape.
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// Number of output elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the output has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f(out_pos, len, offsets, inner_strides)` for each segment of output positions
    /// `start..end`: output elements `out_pos..out_pos + len` read input `k` at
    /// `offsets[k] + i * inner_strides[k]`.
    #[allow(clippy::needless_range_loop)]
    pub fn for_each_segment(
        &self,
        start: usize,
        end: usize,
        mut f: impl FnMut(usize, usize, [usize; K], [usize; K]),
    ) {
        if start >= end {
            return;
        }
        let rank = self.dims.len();
        let n = self.dims[rank - 1];
        let inner = self.strides[rank - 1];
        let mut idx: SmallVec<[usize; 6]> = SmallVec::from_elem(0, rank);
        let mut base = [0usize; K];
        let mut row = start / n;
        for axis in (0..rank - 1).rev() {
            idx[axis] = row % self.dims[axis];
            row /= self.dims[axis];
            for k in 0..K {
                base[k] += idx[axis] * self.strides[axis][k];
            }
        }
        let mut col = start % n;
        let mut pos = start;
        while pos < end {
            let len = (n - col).min(end - pos);
            let mut offs = base;
            for k in 0..K {
                offs[k] += col * inner[k];
            }
            f(pos, len, offs, inner);
            pos += len;
            col = 0;
            // Advance the outer index (odometer).
            for axis in (0..rank - 1).rev() {
                idx[axis] += 1;
                for k in 0..K {
                    base[k] += self.strides[axis][k];
                }
                if idx[axis] < self.dims[axis] {
                    break;
                }
                for k in 0..K {
                    base[k] -= self.strides[axis][k] * self.dims[axis];
                }
                idx[axis] = 0;
            }
        }
    }

    /// Splits `out` (of [`Self::len`] elements) into chunks spread over the context's threads
    /// and calls `f(start, chunk)` for each, `start` being the chunk's first output position.
    pub fn par_chunks<O: Send>(
        &self,
        ctx: &EvalCtx<'_>,
        out: &mut [O],
        f: impl Fn(usize, &mut [O]) + Sync,
    ) {
        let chunk = chunk_len(ctx, out.len());
        ctx.par_chunks_mut(out, chunk, |ci, c| f(ci * chunk, c));
    }
}

/// Chunk length for splitting `n` output elements over the context's threads.
pub fn chunk_len(ctx: &EvalCtx<'_>, n: usize) -> usize {
    n.div_ceil(ctx.threads() * 4).max(MIN_PARALLEL_CHUNK)
}

fn dim_at(shape: &[usize], axis: usize, rank: usize) -> usize {
    let lead = rank - shape.len();
    if axis < lead {
        1
    } else {
        shape[axis - lead]
    }
}

fn describe(shapes: &[&[usize]]) -> String {
    let parts: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
    parts.join(", ")
}

impl BroadcastPlan<1> {
    /// `out[i] = f(&out[i], &b[j])` for `b` broadcast to the output (built with
    /// [`BroadcastPlan::to_shape`] from `b`'s shape to `out`'s).
    pub fn assign<O: Send + Sync, B: Sync>(
        &self,
        ctx: &EvalCtx<'_>,
        out: &mut [O],
        b: &[B],
        f: impl Fn(&O, &B) -> O + Sync,
    ) {
        self.par_chunks(ctx, out, |start, chunk| {
            self.for_each_segment(start, start + chunk.len(), |pos, len, [ob], [sb]| {
                let o = &mut chunk[pos - start..pos - start + len];
                match sb {
                    1 => o
                        .iter_mut()
                        .zip(&b[ob..ob + len])
                        .for_each(|(o, y)| *o = f(o, y)),
                    0 => {
                        let y = &b[ob];
                        o.iter_mut().for_each(|o| *o = f(o, y));
                    }
                    s => o
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, o)| *o = f(o, &b[ob + i * s])),
                }
            })
        });
    }
}

impl BroadcastPlan<2> {
    /// `out[i] = f(&a[..], &b[..])` over the broadcast of `a` and `b` (contiguous, row-major,
    /// in the shapes the plan was built from); `out` has [`Self::len`] elements.
    pub fn binary<A: Sync, B: Sync, O: Send>(
        &self,
        ctx: &EvalCtx<'_>,
        a: &[A],
        b: &[B],
        out: &mut [O],
        f: impl Fn(&A, &B) -> O + Sync,
    ) {
        let n = out.len();
        // Fast paths: same shape, or one scalar operand.
        if a.len() == n && b.len() == n {
            self.par_chunks(ctx, out, |s, c| {
                c.iter_mut()
                    .zip(a[s..].iter().zip(&b[s..]))
                    .for_each(|(o, (x, y))| *o = f(x, y))
            });
            return;
        }
        if a.len() == 1 && b.len() == n {
            let x = &a[0];
            self.par_chunks(ctx, out, |s, c| {
                c.iter_mut().zip(&b[s..]).for_each(|(o, y)| *o = f(x, y))
            });
            return;
        }
        if b.len() == 1 && a.len() == n {
            let y = &b[0];
            self.par_chunks(ctx, out, |s, c| {
                c.iter_mut().zip(&a[s..]).for_each(|(o, x)| *o = f(x, y))
            });
            return;
        }
        self.par_chunks(ctx, out, |start, chunk| {
            self.for_each_segment(
                start,
                start + chunk.len(),
                |pos, len, [oa, ob], [sa, sb]| {
                    let o = &mut chunk[pos - start..pos - start + len];
                    match (sa, sb) {
                        (1, 1) => o
                            .iter_mut()
                            .zip(a[oa..oa + len].iter().zip(&b[ob..ob + len]))
                            .for_each(|(o, (x, y))| *o = f(x, y)),
                        (0, 1) => {
                            let x = &a[oa];
                            o.iter_mut()
                                .zip(&b[ob..ob + len])
                                .for_each(|(o, y)| *o = f(x, y));
                        }
                        (1, 0) => {
                            let y = &b[ob];
                            o.iter_mut()
                                .zip(&a[oa..oa + len])
                                .for_each(|(o, x)| *o = f(x, y));
                        }
                        _ => o
                            .iter_mut()
                            .enumerate()
                            .for_each(|(i, o)| *o = f(&a[oa + i * sa], &b[ob + i * sb])),
                    }
                },
            )
        });
    }
}

impl BroadcastPlan<3> {
    /// `out[i] = f(&a[..], &b[..], &c[..])` over the broadcast of three inputs (as
    /// [`BroadcastPlan::binary`]).
    #[allow(clippy::too_many_arguments)]
    pub fn ternary<A: Sync, B: Sync, C: Sync, O: Send>(
        &self,
        ctx: &EvalCtx<'_>,
        a: &[A],
        b: &[B],
        c: &[C],
        out: &mut [O],
        f: impl Fn(&A, &B, &C) -> O + Sync,
    ) {
        self.par_chunks(ctx, out, |start, chunk| {
            self.for_each_segment(start, start + chunk.len(), |pos, len, [oa, ob, oc], st| {
                let o = &mut chunk[pos - start..pos - start + len];
                if st == [1, 1, 1] {
                    o.iter_mut()
                        .zip(a[oa..oa + len].iter())
                        .zip(b[ob..ob + len].iter().zip(&c[oc..oc + len]))
                        .for_each(|((o, x), (y, z))| *o = f(x, y, z));
                } else {
                    let [sa, sb, sc] = st;
                    o.iter_mut().enumerate().for_each(|(i, o)| {
                        *o = f(&a[oa + i * sa], &b[ob + i * sb], &c[oc + i * sc])
                    });
                }
            })
        });
    }
}

/// `out[i] = f(&a[i])` over contiguous slices of equal length, spread over threads.
pub fn unary_map<A: Sync, O: Send>(
    ctx: &EvalCtx<'_>,
    a: &[A],
    out: &mut [O],
    f: impl Fn(&A) -> O + Sync,
) {
    let chunk = chunk_len(ctx, out.len());
    ctx.par_chunks_mut(out, chunk, |ci, c| {
        let s = ci * chunk;
        c.iter_mut().zip(&a[s..]).for_each(|(o, x)| *o = f(x));
    });
}

/// The broadcast of (possibly symbolic) shapes for type inference: equal dimensions stay,
/// 1 broadcasts, a symbol against a fixed size greater than 1 gives that size. `Ok(None)` when
/// some rank is unknown or two different symbols meet; an error when fixed sizes clash.
pub fn broadcast_fact_shapes(facts: &[&Fact]) -> OpResult<Option<Vec<Dim>>> {
    let mut shapes = Vec::with_capacity(facts.len());
    for f in facts {
        match &f.shape {
            Some(s) => shapes.push(s.as_slice()),
            None => return Ok(None),
        }
    }
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for axis in 0..rank {
        let mut known: Option<usize> = None;
        let mut symbol: Option<&str> = None;
        let mut two_symbols = false;
        for s in &shapes {
            let lead = rank - s.len();
            if axis < lead {
                continue;
            }
            match &s[axis - lead] {
                Dim::Known(1) => {}
                Dim::Known(n) => match known {
                    Some(k) if k != *n => {
                        let shown: Vec<String> = facts.iter().map(|f| f.to_string()).collect();
                        return Err(OpError::Shape(format!(
                            "shapes {} cannot be broadcast together",
                            shown.join(", ")
                        )));
                    }
                    _ => known = Some(*n),
                },
                Dim::Symbol(name) => match symbol {
                    Some(prev) if prev != name => two_symbols = true,
                    _ => symbol = Some(name),
                },
            }
        }
        out.push(match (known, symbol) {
            (Some(n), _) => Dim::Known(n),
            (None, Some(_)) if two_symbols => return Ok(None),
            (None, Some(name)) => Dim::Symbol(name.to_string()),
            (None, None) => Dim::Known(1),
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::ThreeThreads;
    use crate::HeapTensorAlloc;

    fn naive(a: &[i64], ash: &[usize], b: &[i64], bsh: &[usize], out: &[usize]) -> Vec<i64> {
        let rank = out.len();
        let n: usize = out.iter().product();
        let idx_of = |sh: &[usize], flat: usize| {
            let lead = rank - sh.len();
            let mut rem = flat;
            let mut coords = vec![0; rank];
            for ax in (0..rank).rev() {
                coords[ax] = rem % out[ax];
                rem /= out[ax];
            }
            let mut i = 0;
            for ax in 0..sh.len() {
                let c = if sh[ax] == 1 { 0 } else { coords[ax + lead] };
                i = i * sh[ax] + c;
            }
            i
        };
        (0..n)
            .map(|f| a[idx_of(ash, f)] * 1000 + b[idx_of(bsh, f)])
            .collect()
    }

    #[test]
    fn binary_matches_naive_broadcasting() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3], &[2, 3]),
            (&[], &[4]),
            (&[4], &[]),
            (&[2, 1, 4], &[3, 1]),
            (&[1, 3, 1], &[2, 1, 5]),
            (&[5, 1], &[1, 5]),
            (&[2, 3, 4, 5], &[3, 1, 1]),
            (&[0, 3], &[1, 3]),
            (&[2, 0], &[1]),
            (&[1, 1], &[1]),
            (&[300, 7], &[7]),
            (&[4, 1, 6], &[4, 5, 1]),
        ];
        let ctxs = [
            EvalCtx::default(),
            EvalCtx {
                parallel: &ThreeThreads,
                alloc: &HeapTensorAlloc,
            },
        ];
        for ctx in &ctxs {
            for &(ash, bsh) in cases {
                let a: Vec<i64> = (0..ash.iter().product::<usize>() as i64).collect();
                let b: Vec<i64> = (0..bsh.iter().product::<usize>() as i64).collect();
                let plan = BroadcastPlan::new([ash, bsh]).unwrap();
                let mut out = vec![0i64; plan.len()];
                plan.binary(ctx, &a, &b, &mut out, |&x, &y| x * 1000 + y);
                let want = naive(&a, ash, &b, bsh, plan.out_shape());
                assert_eq!(out, want, "{ash:?} x {bsh:?}");
            }
        }
        assert_eq!(
            BroadcastPlan::new([&[0, 3][..], &[1, 3][..]])
                .unwrap()
                .out_shape(),
            &[0, 3]
        );
    }

    #[test]
    fn large_outputs_split_over_threads() {
        let ctx = EvalCtx {
            parallel: &ThreeThreads,
            alloc: &HeapTensorAlloc,
        };
        let (rows, cols) = (1000, 257);
        let a: Vec<i64> = (0..rows as i64).collect();
        let b: Vec<i64> = (0..cols as i64).collect();
        let plan = BroadcastPlan::new([&[rows, 1][..], &[cols][..]]).unwrap();
        let mut out = vec![0i64; plan.len()];
        plan.binary(&ctx, &a, &b, &mut out, |&x, &y| x * 1000 + y);
        assert_eq!(out, naive(&a, &[rows, 1], &b, &[cols], &[rows, cols]));
    }

    #[test]
    fn incompatible_shapes_are_errors() {
        let err = BroadcastPlan::new([&[2, 3][..], &[4, 3][..]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 3]") && err.contains("[4, 3]"), "{err}");
        assert!(BroadcastPlan::new([&[0][..], &[2][..]]).is_err());
        assert!(BroadcastPlan::to_shape([&[3][..]], &[3, 1]).is_err());
        assert!(BroadcastPlan::to_shape([&[1, 3][..]], &[3]).is_err());
    }

    #[test]
    fn ternary_and_assign() {
        let ctx = EvalCtx::default();
        let plan = BroadcastPlan::new([&[2, 1][..], &[3][..], &[][..]]).unwrap();
        let mut out = vec![0; 6];
        plan.ternary(
            &ctx,
            &[true, false],
            &[1, 2, 3],
            &[9],
            &mut out,
            |&c, &x, &y| {
                if c {
                    x
                } else {
                    y
                }
            },
        );
        assert_eq!(out, [1, 2, 3, 9, 9, 9]);
        let plan = BroadcastPlan::to_shape([&[2, 1][..]], &[2, 3]).unwrap();
        plan.assign(&ctx, &mut out, &[10, 20], |&o, &b| o + b);
        assert_eq!(out, [11, 12, 13, 29, 29, 29]);
    }

    #[test]
    fn symbolic_fact_broadcasting() {
        let sym = |s: &str| Dim::Symbol(s.into());
        let f = |dims: Vec<Dim>| Fact {
            dtype: None,
            shape: Some(dims),
            value: None,
        };
        let a = f(vec![sym("batch"), Dim::Known(1), Dim::Known(4)]);
        let b = f(vec![Dim::Known(3), Dim::Known(1)]);
        assert_eq!(
            broadcast_fact_shapes(&[&a, &b]).unwrap().unwrap(),
            vec![sym("batch"), Dim::Known(3), Dim::Known(4)]
        );
        let c = f(vec![sym("n")]);
        let d = f(vec![sym("m")]);
        assert!(broadcast_fact_shapes(&[&c, &d]).unwrap().is_none());
        assert_eq!(
            broadcast_fact_shapes(&[&c, &c]).unwrap().unwrap(),
            vec![sym("n")]
        );
        let e = f(vec![Dim::Known(2)]);
        let g = f(vec![Dim::Known(5)]);
        assert!(broadcast_fact_shapes(&[&e, &g]).is_err());
    }
}
