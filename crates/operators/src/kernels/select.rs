//! Selection ops: `TopK` and `Unique`.
//!
//! Both compare values as f64 (every numeric dtype converts; 64-bit integers beyond 2^53
//! compare approximately) and copy the selected elements from the original tensor, so
//! outputs keep the input dtype exactly.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use std::cmp::Ordering;
use strata_tensor::{normalize_axis, DType, Tensor};

/// Registers `TopK` and `Unique`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "TopK", 1, build_topk);
    registry.register("", "Unique", 11, build_unique);
}

fn numeric(t: &Tensor, index: usize) -> OpResult<Vec<f64>> {
    let dt = t.dtype();
    if dt == DType::String || dt == DType::Bool || !dt.is_plain() {
        return Err(OpError::UnsupportedDType { index, dtype: dt });
    }
    Ok(t.cast(DType::F64)?.contiguous().to_vec::<f64>()?)
}

/// Gathers elements of `t` (contiguous, flat) at `idx` into a tensor of `shape`.
fn gather_flat(ctx: &EvalCtx<'_>, t: &Tensor, idx: &[usize], shape: &[usize]) -> OpResult<Tensor> {
    let src = t.contiguous();
    let size = src.dtype().size_of();
    let bytes = src.raw_bytes()?;
    let mut out = ctx.alloc(src.dtype(), shape)?;
    let dst = out.raw_bytes_mut()?;
    for (o, &i) in idx.iter().enumerate() {
        dst[o * size..][..size].copy_from_slice(&bytes[i * size..][..size]);
    }
    Ok(out)
}

fn i64_tensor(ctx: &EvalCtx<'_>, v: &[i64], shape: &[usize]) -> OpResult<Tensor> {
    let mut out = ctx.alloc(DType::I64, shape)?;
    out.as_slice_mut::<i64>()?.copy_from_slice(v);
    Ok(out)
}

// ----- TopK ---------------------------------------------------------------------------------

/// `TopK`: the `k` largest (or smallest) elements along `axis` with their indices. Ties keep
/// the smaller index first.
#[derive(Debug, Clone, Copy)]
pub struct TopK {
    /// `k` from the attribute (opset < 10); later opsets read input 1.
    pub k_attr: Option<i64>,
    /// Axis (may be negative).
    pub axis: i64,
    /// Largest (true) or smallest elements.
    pub largest: bool,
    /// Whether the outputs are sorted (they always are here; unsorted order is unspecified).
    pub sorted: bool,
}

fn build_topk(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let k_attr = if ctx.opset < 10 {
        let k = a
            .int("k")?
            .ok_or_else(|| OpError::attribute("k", "required before opset 10"))?;
        if k < 0 {
            return Err(OpError::attribute("k", format!("must be >= 0, got {k}")));
        }
        Some(k)
    } else {
        None
    };
    Ok(Box::new(TopK {
        k_attr,
        axis: a.int_or("axis", -1)?,
        largest: a.int_or("largest", 1)? != 0,
        sorted: a.int_or("sorted", 1)? != 0,
    }))
}

impl Operator for TopK {
    crate::op_boilerplate!("TopK");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let shape = x.shape().to_vec();
        let axis = normalize_axis(self.axis, shape.len())?;
        let k = match self.k_attr {
            Some(k) => k,
            None => {
                let kv = inputs.tensor(1)?.to_i64_vec()?;
                match kv.as_slice() {
                    [k] => *k,
                    _ => {
                        return Err(OpError::invalid(
                            1,
                            format!("K must hold one value, got {} values", kv.len()),
                        ))
                    }
                }
            }
        };
        let n = shape[axis];
        if k < 0 || k as usize > n {
            return Err(OpError::invalid(
                1,
                format!("K = {k} is outside 0..={n} for axis {axis} of shape {shape:?}"),
            ));
        }
        let k = k as usize;
        let vals = numeric(x, 0)?;
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut oshape = shape.clone();
        oshape[axis] = k;
        let total = outer * k * inner;
        let mut src = vec![0usize; total];
        let mut idx = vec![0i64; total];
        let mut order: Vec<usize> = Vec::with_capacity(n);
        let largest = self.largest;
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * n + j) * inner + i;
                order.clear();
                order.extend(0..n);
                // NaN counts as larger than everything (as numpy sorts it last).
                let cmp = |a: &usize, b: &usize| {
                    let (va, vb) = (vals[at(*a)], vals[at(*b)]);
                    let ord = match va.partial_cmp(&vb) {
                        Some(ord) => ord,
                        None => va.is_nan().cmp(&vb.is_nan()),
                    };
                    let ord = if largest { ord.reverse() } else { ord };
                    ord.then(a.cmp(b))
                };
                if k < n {
                    order.select_nth_unstable_by(k.saturating_sub(1).min(n - 1), cmp);
                    order.truncate(k);
                }
                order.sort_by(cmp);
                for (j, &from) in order.iter().take(k).enumerate() {
                    let pos = (o * k + j) * inner + i;
                    src[pos] = at(from);
                    idx[pos] = from as i64;
                }
            }
        }
        let values = gather_flat(ctx, x, &src, &oshape)?;
        let indices = i64_tensor(ctx, &idx, &oshape)?;
        Ok(vec![values.into(), indices.into()])
    }
}

// ----- Unique -------------------------------------------------------------------------------

/// `Unique`: the distinct elements (or slices along `axis`), sorted or in order of first
/// occurrence, with first indices, inverse indices and counts.
#[derive(Debug, Clone, Copy)]
pub struct Unique {
    /// Slice axis, or flatten when absent.
    pub axis: Option<i64>,
    /// Sort the unique values ascending (else keep first-occurrence order).
    pub sorted: bool,
}

fn build_unique(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    Ok(Box::new(Unique {
        axis: ctx.attrs.int("axis")?,
        sorted: ctx.attrs.int_or("sorted", 1)? != 0,
    }))
}

fn cmp_slices(a: &[f64], b: &[f64]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y) {
            Some(Ordering::Equal) => {}
            Some(o) => return o,
            None => {
                let o = x.is_nan().cmp(&y.is_nan());
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
    Ordering::Equal
}

impl Operator for Unique {
    crate::op_boilerplate!("Unique");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let vals = numeric(x, 0)?;
        let shape = x.shape().to_vec();
        let (outer, n, inner, axis) = match self.axis {
            None => (1, vals.len(), 1, None),
            Some(a) => {
                let axis = normalize_axis(a, shape.len())?;
                (
                    shape[..axis].iter().product::<usize>(),
                    shape[axis],
                    shape[axis + 1..].iter().product::<usize>(),
                    Some(axis),
                )
            }
        };
        // Slice j gathered as a contiguous vector: (outer, inner) elements.
        let slices: Vec<Vec<f64>> = (0..n)
            .map(|j| {
                (0..outer)
                    .flat_map(|o| (0..inner).map(move |i| (o * n + j) * inner + i))
                    .map(|p| vals[p])
                    .collect()
            })
            .collect();
        // Order of first occurrences; sorted mode orders by value, stable on index.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| cmp_slices(&slices[a], &slices[b]).then(a.cmp(&b)));
        // Groups of equal slices (in sorted order), each represented by its first index.
        let mut groups: Vec<(usize, i64)> = Vec::new();
        let mut group_of = vec![0usize; n];
        for (pos, &j) in order.iter().enumerate() {
            if pos > 0 && cmp_slices(&slices[order[pos - 1]], &slices[j]) == Ordering::Equal {
                let last = groups.len() - 1;
                groups[last].1 += 1;
                group_of[j] = last;
            } else {
                groups.push((j, 1));
                group_of[j] = groups.len() - 1;
            }
        }
        // Output rank of each group.
        let mut rank: Vec<usize> = (0..groups.len()).collect();
        if !self.sorted {
            rank.sort_by_key(|&g| groups[g].0);
        }
        let mut out_pos = vec![0usize; groups.len()];
        for (p, &g) in rank.iter().enumerate() {
            out_pos[g] = p;
        }
        let u = groups.len();
        let firsts: Vec<i64> = rank.iter().map(|&g| groups[g].0 as i64).collect();
        let counts: Vec<i64> = rank.iter().map(|&g| groups[g].1).collect();
        let inverse: Vec<i64> = (0..n).map(|j| out_pos[group_of[j]] as i64).collect();
        let (yshape, src): (Vec<usize>, Vec<usize>) = match axis {
            None => (vec![u], firsts.iter().map(|&f| f as usize).collect()),
            Some(axis) => {
                let mut s = shape.clone();
                s[axis] = u;
                let src = (0..outer)
                    .flat_map(|o| {
                        let firsts = &firsts;
                        firsts.iter().flat_map(move |&f| {
                            (0..inner).map(move |i| (o * n + f as usize) * inner + i)
                        })
                    })
                    .collect();
                (s, src)
            }
        };
        Ok(vec![
            gather_flat(ctx, x, &src, &yshape)?.into(),
            i64_tensor(ctx, &firsts, &[u])?.into(),
            i64_tensor(ctx, &inverse, &[n])?.into(),
            i64_tensor(ctx, &counts, &[u])?.into(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, eval, f64s, t};
    use crate::Attribute;
    use strata_tensor::Tensor;

    fn i64s(t: &Tensor) -> Vec<i64> {
        t.to_i64_vec().unwrap()
    }

    fn k(v: i64) -> Option<Tensor> {
        Some(Tensor::from_vec(vec![v], &[1]).unwrap())
    }

    // Expected values from onnx.reference (ReferenceEvaluator).
    #[test]
    fn topk_largest_smallest_and_attribute_k() {
        let x = t(&[3., 1., 3., 2., 0., 5., 5., 1., 2., 2., 2., 9.], &[3, 4]);
        let op = build("TopK", 11, &[("axis", Attribute::Int(1))], 2, 2);
        let out = eval(op.as_ref(), &[Some(x.clone()), k(2)]);
        assert_eq!(out[0].shape(), &[3, 2]);
        assert_eq!(f64s(&out[0]), vec![3., 3., 5., 5., 9., 2.]);
        assert_eq!(i64s(&out[1]), vec![0, 2, 1, 2, 3, 0]);
        let op = build(
            "TopK",
            11,
            &[("axis", Attribute::Int(0)), ("largest", Attribute::Int(0))],
            2,
            2,
        );
        let out = eval(op.as_ref(), &[Some(x.clone()), k(2)]);
        assert_eq!(out[0].shape(), &[2, 4]);
        assert_eq!(f64s(&out[0]), vec![0., 1., 2., 1., 2., 2., 3., 2.]);
        assert_eq!(i64s(&out[1]), vec![1, 0, 2, 1, 2, 2, 0, 0]);
        let op = build(
            "TopK",
            1,
            &[("axis", Attribute::Int(1)), ("k", Attribute::Int(3))],
            1,
            2,
        );
        let out = eval(op.as_ref(), &[Some(x.clone())]);
        assert_eq!(f64s(&out[0]), vec![3., 3., 2., 5., 5., 1., 9., 2., 2.]);
        assert_eq!(i64s(&out[1]), vec![0, 2, 3, 1, 2, 3, 3, 0, 1]);
        let op = build("TopK", 11, &[], 2, 2);
        let err = op
            .eval(
                &Default::default(),
                crate::Inputs::from_tensors([x, k(5).unwrap()]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("K = 5"), "{err}");
    }

    #[test]
    fn unique_flat_sorted_and_unsorted() {
        let u = t(&[2., 1., 1., 3., 4., 3.], &[6]);
        let op = build("Unique", 11, &[("sorted", Attribute::Int(0))], 1, 4);
        let out = eval(op.as_ref(), &[Some(u.clone())]);
        assert_eq!(f64s(&out[0]), vec![2., 1., 3., 4.]);
        assert_eq!(i64s(&out[1]), vec![0, 1, 3, 4]);
        assert_eq!(i64s(&out[2]), vec![0, 1, 1, 2, 3, 2]);
        assert_eq!(i64s(&out[3]), vec![1, 2, 2, 1]);
        let op = build("Unique", 11, &[], 1, 4);
        let out = eval(op.as_ref(), &[Some(u)]);
        assert_eq!(f64s(&out[0]), vec![1., 2., 3., 4.]);
        assert_eq!(i64s(&out[1]), vec![1, 0, 3, 4]);
        assert_eq!(i64s(&out[2]), vec![1, 0, 0, 2, 3, 2]);
        assert_eq!(i64s(&out[3]), vec![2, 1, 2, 1]);
    }

    #[test]
    fn unique_along_axes() {
        let a = t(&[1., 0., 0., 1., 0., 0., 2., 3., 4.], &[3, 3]);
        let op = build("Unique", 11, &[("axis", Attribute::Int(0))], 1, 4);
        let out = eval(op.as_ref(), &[Some(a)]);
        assert_eq!(out[0].shape(), &[2, 3]);
        assert_eq!(f64s(&out[0]), vec![1., 0., 0., 2., 3., 4.]);
        assert_eq!(i64s(&out[1]), vec![0, 2]);
        assert_eq!(i64s(&out[2]), vec![0, 0, 1]);
        assert_eq!(i64s(&out[3]), vec![2, 1]);
        let b = t(
            &[
                1., 1., 0., 1., 2., 1., 0., 1., 1., 1., 0., 1., 2., 1., 0., 1.,
            ],
            &[2, 4, 2],
        );
        let op = build("Unique", 11, &[("axis", Attribute::Int(1))], 1, 4);
        let out = eval(op.as_ref(), &[Some(b)]);
        assert_eq!(out[0].shape(), &[2, 3, 2]);
        assert_eq!(
            f64s(&out[0]),
            vec![0., 1., 1., 1., 2., 1., 0., 1., 1., 1., 2., 1.]
        );
        assert_eq!(i64s(&out[1]), vec![1, 0, 2]);
        assert_eq!(i64s(&out[2]), vec![1, 0, 2, 0]);
        assert_eq!(i64s(&out[3]), vec![2, 1, 1]);
        let c = Tensor::from_vec(vec![3i64, 1, 3, 2, 0, 2], &[2, 3]).unwrap();
        let op = build(
            "Unique",
            11,
            &[("axis", Attribute::Int(-1)), ("sorted", Attribute::Int(0))],
            1,
            4,
        );
        let out = eval(op.as_ref(), &[Some(c)]);
        assert_eq!(out[0].dtype(), strata_tensor::DType::I64);
        assert_eq!(i64s(&out[0]), vec![3, 1, 2, 0]);
        assert_eq!(i64s(&out[1]), vec![0, 1]);
        assert_eq!(i64s(&out[2]), vec![0, 1, 0]);
        assert_eq!(i64s(&out[3]), vec![2, 1]);
    }
}
