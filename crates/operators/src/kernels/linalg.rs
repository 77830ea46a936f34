//! Linear algebra kernels: `MatMul` and `Gemm`, plus the shared machinery other kernels build
//! on: the [`Float`] element trait (f32, f64) and the safe, bounds-checked [`gemm`] wrapper
//! over packed GEMMs (f32: [`crate::kernels::gemm`]; f64: `matrixmultiply`; row/column
//! strides express transposes without copies). Convolutions in `nn` use [`gemm`] for their inner products.

use crate::kernels::elementwise::broadcast_fact_shapes;
use crate::kernels::fused::{fused_label, ActFloat, Activation};
use crate::kernels::gemm::{elements_distinct, view_fits, PackedB, DOTS_MAX_ROWS, DOTS_MIN_B};
use crate::Dim;
use crate::{
    op_boilerplate, BuildCtx, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub};
use std::sync::Arc;
use strata_tensor::{broadcast_shapes, DType, Element, Tensor};

/// Registers `MatMul` and `Gemm`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "MatMul", 1, |_| Ok(Box::new(MatMul)));
    registry.register("", "Gemm", 1, build_gemm);
}

// ----- element trait ------------------------------------------------------------------------

/// A float type the CPU kernels compute in natively (f32 and f64; f16/bf16 are computed in f32).
pub trait Float:
    Element
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + MulAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// Converts from f32 (attribute values).
    fn from_f32(v: f32) -> Self;
    /// Converts a count.
    fn from_usize(v: usize) -> Self;
    /// e^self.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// self^p.
    fn powf(self, p: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// The larger value (ignores NaN like `f32::max`).
    fn max(self, other: Self) -> Self;
    /// `C = alpha * A * B + beta * C` through `matrixmultiply` (bounds already checked).
    #[doc(hidden)]
    fn gemm_checked(
        alpha: Self,
        a: &MatRef<'_, Self>,
        b: &MatRef<'_, Self>,
        beta: Self,
        c: &mut MatMut<'_, Self>,
    );
    /// The slice as f32 when `Self` is f32, so generic kernels can hand it to f32-only SIMD
    /// code; `None` for other types.
    fn as_f32s(s: &[Self]) -> Option<&[f32]> {
        let _ = s;
        None
    }
    /// [`Float::as_f32s`] for a mutable slice.
    fn as_f32s_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        let _ = s;
        None
    }
}

macro_rules! impl_float {
    ($t:ty, $gemm:path $(; $($extra:item)*)?) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            fn gemm_checked(
                alpha: Self,
                a: &MatRef<'_, Self>,
                b: &MatRef<'_, Self>,
                beta: Self,
                c: &mut MatMut<'_, Self>,
            ) {
                // SAFETY: `gemm` verified that every element addressed through the given
                // rows/cols/strides of A, B and C lies inside their slices, that C's elements
                // are pairwise distinct (no self-overlap), and that the inner dimensions agree;
                // C is a unique borrow so it cannot alias A or B.
                unsafe {
                    $gemm(
                        c.rows,
                        a.cols,
                        c.cols,
                        alpha,
                        a.data.as_ptr(),
                        a.rs as isize,
                        a.cs as isize,
                        b.data.as_ptr(),
                        b.rs as isize,
                        b.cs as isize,
                        beta,
                        c.data.as_mut_ptr(),
                        c.rs as isize,
                        c.cs as isize,
                    )
                }
            }
            $($($extra)*)?
        }
    };
}
impl_float!(f32, crate::kernels::gemm::sgemm;
    #[inline(always)]
    fn as_f32s(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline(always)]
    fn as_f32s_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
);
impl_float!(f64, matrixmultiply::dgemm);

// ----- safe GEMM ----------------------------------------------------------------------------

/// A read-only strided matrix view over a slice.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, F> {
    /// Backing elements.
    pub data: &'a [F],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows, in elements.
    pub rs: usize,
    /// Distance between columns, in elements.
    pub cs: usize,
}

impl<'a, F> MatRef<'a, F> {
    /// A row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [F], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (a view: strides swap).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// The transpose when `yes`, else `self`.
    pub fn t_if(self, yes: bool) -> Self {
        if yes {
            self.t()
        } else {
            self
        }
    }
}

/// A writable strided matrix view over a slice.
#[derive(Debug)]
pub struct MatMut<'a, F> {
    /// Backing elements.
    pub data: &'a mut [F],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows, in elements.
    pub rs: usize,
    /// Distance between columns, in elements.
    pub cs: usize,
}

impl<'a, F> MatMut<'a, F> {
    /// A row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a mut [F], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
}

/// `C = alpha * A * B + beta * C`. When `beta` is zero, C's previous contents are ignored
/// (NaNs included). Errors (never panics) when shapes disagree or a view exceeds its slice.
pub fn gemm<F: Float>(
    alpha: F,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    beta: F,
    mut c: MatMut<'_, F>,
) -> OpResult<()> {
    if a.rows != c.rows || b.cols != c.cols || a.cols != b.rows {
        return Err(OpError::Shape(format!(
            "gemm shapes disagree: A {}x{}, B {}x{}, C {}x{}",
            a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
        )));
    }
    let valid = view_fits(a.data.len(), a.rows, a.cols, a.rs, a.cs)
        && view_fits(b.data.len(), b.rows, b.cols, b.rs, b.cs)
        && view_fits(c.data.len(), c.rows, c.cols, c.rs, c.cs)
        && elements_distinct(c.rows, c.cols, c.rs, c.cs);
    if !valid {
        return Err(OpError::Shape("gemm view exceeds its buffer".into()));
    }
    if c.rows == 0 || c.cols == 0 {
        return Ok(());
    }
    if a.cols == 0 {
        for i in 0..c.rows {
            for j in 0..c.cols {
                let v = &mut c.data[i * c.rs + j * c.cs];
                *v = if beta == F::ZERO { F::ZERO } else { *v * beta };
            }
        }
        return Ok(());
    }
    F::gemm_checked(alpha, &a, &b, beta, &mut c);
    Ok(())
}

/// f32 convenience for [`gemm`]: `C (m x n, row-major) = alpha * op(A) * op(B) + beta * C`
/// where `A` is stored row-major as `m x k` (or `k x m` when `trans_a`) and likewise `B`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) -> OpResult<()> {
    let am = if trans_a {
        MatRef::row_major(a, k, m).t()
    } else {
        MatRef::row_major(a, m, k)
    };
    let bm = if trans_b {
        MatRef::row_major(b, n, k).t()
    } else {
        MatRef::row_major(b, k, n)
    };
    gemm(alpha, am, bm, beta, MatMut::row_major(c, m, n))
}

/// Work (multiply-adds) above which a single GEMM is split over threads.
const PAR_GEMM_MACS: usize = 1 << 18;

/// `C = alpha * A * B + beta * C` for row-major contiguous `C`, splitting C's rows over the
/// context's threads when the product is large.
pub fn par_gemm<F: Float>(
    ctx: &EvalCtx<'_>,
    alpha: F,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    beta: F,
    c: &mut [F],
) -> OpResult<()> {
    let (m, n) = (a.rows, b.cols);
    if c.len() != m * n {
        return Err(OpError::Shape(format!(
            "gemm output holds {} elements, expected {m}x{n}",
            c.len()
        )));
    }
    let threads = ctx.threads();
    if threads == 1 || m * n * a.cols < PAR_GEMM_MACS || n == 0 {
        return gemm(alpha, a, b, beta, MatMut::row_major(c, m, n));
    }
    let few_rows = m <= DOTS_MAX_ROWS && b.rs == 1 && a.cs == 1;
    if m == 1 || (few_rows && b.rows.saturating_mul(n) >= DOTS_MIN_B) {
        return par_gemm_by_columns(ctx, alpha, a, b, beta, c);
    }
    // Rows per task: one task per thread (each task packs all of B, so more tasks would
    // repeat that work), rows a multiple of 4 for the micro-kernel.
    let rows = m.div_ceil(threads).div_ceil(4).max(1) * 4;
    let errors = ErrorSlot::default();
    ctx.par_chunks_mut(c, rows * n, |i, chunk| {
        let r0 = i * rows;
        let r = chunk.len() / n;
        let sub = MatRef {
            data: &a.data[(r0 * a.rs).min(a.data.len())..],
            rows: r,
            ..a
        };
        errors.record(gemm(alpha, sub, b, beta, MatMut::row_major(chunk, r, n)));
    });
    errors.finish()
}

/// [`par_gemm`] split by columns of B, for a matrix-vector product (a classifier) or a few
/// rows of A by a large B whose columns are contiguous (a fully connected layer over a small
/// batch, B the transposed weights): memory-bound on B, so each thread streams its own
/// columns of B, for all rows of A at once (splitting rows would have every thread stream
/// all of B). Columns per task are a multiple of 16 (whole vectors). Each task writes its
/// columns column-major into one contiguous range: of C itself for one row, else of a
/// scratch copied into C after.
fn par_gemm_by_columns<F: Float>(
    ctx: &EvalCtx<'_>,
    alpha: F,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    beta: F,
    c: &mut [F],
) -> OpResult<()> {
    let (m, n) = (a.rows, b.cols);
    let cols = n.div_ceil(ctx.threads()).div_ceil(16) * 16;
    let mut scratch = match m {
        1 => None,
        _ => Some(ctx.alloc_for_overwrite(F::DTYPE, &[n, m])?),
    };
    let (columns, task_beta) = match scratch.as_mut() {
        Some(t) => (t.as_slice_mut::<F>()?, F::ZERO),
        None => (&mut *c, beta),
    };
    let errors = ErrorSlot::default();
    ctx.par_chunks_mut(columns, cols * m, |i, chunk| {
        let (j0, width) = (i * cols, chunk.len() / m);
        let sub = MatRef {
            data: &b.data[(j0 * b.cs).min(b.data.len())..],
            cols: width,
            ..b
        };
        let out = MatMut {
            data: chunk,
            rows: m,
            cols: width,
            rs: 1,
            cs: m,
        };
        errors.record(gemm(alpha, a, sub, task_beta, out));
    });
    errors.finish()?;
    if let Some(scratch) = scratch {
        let transposed = scratch.as_slice::<F>()?;
        for (j, column) in transposed.chunks_exact(m).enumerate() {
            for (i, &v) in column.iter().enumerate() {
                let dst = &mut c[i * n + j];
                *dst = if beta == F::ZERO { v } else { v + beta * *dst };
            }
        }
        if let Some(buffer) = scratch.into_buffer() {
            ctx.alloc.release(buffer);
        }
    }
    Ok(())
}

/// Collects the first error raised inside parallel tasks.
#[derive(Debug, Default)]
pub(crate) struct ErrorSlot(std::sync::Mutex<Option<OpError>>);

impl ErrorSlot {
    /// Keeps `r`'s error if it is the first one.
    pub(crate) fn record(&self, r: OpResult<()>) {
        if let Err(e) = r {
            if let Ok(mut slot) = self.0.lock() {
                slot.get_or_insert(e);
            }
        }
    }

    /// The first recorded error, if any.
    pub(crate) fn finish(self) -> OpResult<()> {
        match self.0.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

// ----- f16 / bf16 through f32 ---------------------------------------------------------------

/// Evaluates an op on f16/bf16 inputs by casting every input of dtype `half` to f32, running
/// `f`, then casting the first `cast_back` outputs (those of dtype f32) back to `half`.
pub fn eval_via_f32(
    ctx: &EvalCtx<'_>,
    inputs: &Inputs,
    half: DType,
    cast_back: usize,
    f: impl FnOnce(&EvalCtx<'_>, Inputs) -> OpResult<Vec<Value>>,
) -> OpResult<Vec<Value>> {
    let mut values = Vec::with_capacity(inputs.len());
    for i in 0..inputs.len() {
        values.push(match inputs.value(i) {
            Some(Value::Tensor(t)) if t.dtype() == half => Some(Value::Tensor(t.cast(DType::F32)?)),
            other => other.cloned(),
        });
    }
    let outs = f(ctx, Inputs::new(values))?;
    outs.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Tensor(t) if i < cast_back && t.dtype() == DType::F32 => {
                Ok(Value::Tensor(t.cast(half)?))
            }
            other => Ok(other),
        })
        .collect()
}

fn known_dtype(inputs: &[Fact], i: usize) -> Option<DType> {
    inputs.get(i).and_then(|f| f.dtype)
}

fn concrete(inputs: &[Fact], i: usize) -> Option<Vec<usize>> {
    inputs.get(i).and_then(Fact::concrete_shape)
}

// ----- MatMul -------------------------------------------------------------------------------

/// `MatMul` (opsets 1, 9, 13): numpy `matmul` with batch broadcasting and 1-D operand rules.
#[derive(Debug, Clone, Copy)]
pub struct MatMul;

/// The resolved geometry of one matmul: batch shape, per-batch (m, k, n), output shape.
#[derive(Debug)]
struct MatMulPlan {
    batch: Vec<usize>,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    out_shape: Vec<usize>,
}

fn matmul_plan(a: &[usize], b: &[usize]) -> OpResult<MatMulPlan> {
    if a.is_empty() || b.is_empty() {
        return Err(OpError::invalid(
            if a.is_empty() { 0 } else { 1 },
            "MatMul operands must have rank >= 1",
        ));
    }
    let (m, ka) = if a.len() == 1 {
        (1, a[0])
    } else {
        (a[a.len() - 2], a[a.len() - 1])
    };
    let (kb, n) = if b.len() == 1 {
        (b[0], 1)
    } else {
        (b[b.len() - 2], b[b.len() - 1])
    };
    if ka != kb {
        return Err(OpError::Shape(format!(
            "MatMul inner dimensions differ: A {a:?} and B {b:?}"
        )));
    }
    let a_batch = a[..a.len().saturating_sub(2)].to_vec();
    let b_batch = b[..b.len().saturating_sub(2)].to_vec();
    let batch = broadcast_shapes(&a_batch, &b_batch)
        .map_err(|_| {
            OpError::Shape(format!(
                "MatMul batch dimensions do not broadcast: A {a:?}, B {b:?}"
            ))
        })?
        .to_vec();
    let mut out_shape = batch.clone();
    if a.len() > 1 {
        out_shape.push(m);
    }
    if b.len() > 1 {
        out_shape.push(n);
    }
    Ok(MatMulPlan {
        batch,
        a_batch,
        b_batch,
        m,
        k: ka,
        n,
        out_shape,
    })
}

/// The output shape of a MatMul of two operands of rank >= 2 some of whose dimensions are
/// symbolic: broadcast batch dimensions, then A's rows and B's columns. `None` when a rank
/// is unknown or the batch dimensions cannot be told apart.
fn symbolic_matmul_shape(inputs: &[Fact]) -> Option<Vec<Dim>> {
    let (a, b) = (
        inputs.first()?.shape.as_ref()?,
        inputs.get(1)?.shape.as_ref()?,
    );
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let batch_fact = |dims: &[Dim]| Fact {
        dtype: None,
        shape: Some(dims.to_vec()),
        value: None,
    };
    let (fa, fb) = (batch_fact(&a[..a.len() - 2]), batch_fact(&b[..b.len() - 2]));
    let mut shape = broadcast_fact_shapes(&[&fa, &fb]).ok()??;
    shape.push(a[a.len() - 2].clone());
    shape.push(b[b.len() - 1].clone());
    Some(shape)
}

/// Offsets (in matrices) of each output batch's operand, following broadcasting.
fn batch_offsets(op_batch: &[usize], batch: &[usize]) -> Vec<usize> {
    let total: usize = batch.iter().product();
    let lead = batch.len() - op_batch.len();
    let mut strides = vec![0usize; batch.len()];
    let mut s = 1;
    for i in (0..op_batch.len()).rev() {
        strides[lead + i] = if op_batch[i] == 1 { 0 } else { s };
        s *= op_batch[i];
    }
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; batch.len()];
    for _ in 0..total {
        out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// What a fused `MatMul` does to its output rows around the product: start from a bias row
/// (broadcast over all rows) and apply an activation at the end.
#[derive(Debug, Clone, Copy)]
struct RowEpilogue<'a, F> {
    bias: Option<&'a [F]>,
    activation: Option<Activation>,
}

impl<F: ActFloat> RowEpilogue<'_, F> {
    const NONE: RowEpilogue<'static, F> = RowEpilogue {
        bias: None,
        activation: None,
    };

    /// Fills each row of `out` with the bias; returns GEMM's beta (1 when a bias was written).
    fn init(&self, out: &mut [F], n: usize) -> F {
        match self.bias {
            Some(bias) => {
                out.chunks_mut(n).for_each(|row| row.copy_from_slice(bias));
                F::ONE
            }
            None => F::ZERO,
        }
    }

    /// Applies the activation to `out`, split over the threads.
    fn finish(&self, ctx: &EvalCtx<'_>, out: &mut [F]) {
        if let Some(act) = self.activation {
            let chunk = out.len().div_ceil(ctx.threads()).max(MIN_ACTIVATION_CHUNK);
            ctx.par_chunks_mut(out, chunk, |_, part| act.apply(part));
        }
    }
}

/// Below this many elements per thread an activation runs on one thread.
const MIN_ACTIVATION_CHUNK: usize = 16 * 1024;

impl MatMul {
    fn run_float<F: ActFloat>(
        ctx: &EvalCtx<'_>,
        a: &Tensor,
        b: &Tensor,
        p: &MatMulPlan,
        epilogue: RowEpilogue<'_, F>,
    ) -> OpResult<Tensor> {
        // With a non-empty inner dimension the GEMMs below write every output element.
        let mut out = if p.k > 0 {
            ctx.alloc_for_overwrite(F::DTYPE, &p.out_shape)?
        } else {
            ctx.alloc(F::DTYPE, &p.out_shape)?
        };
        let (a, b) = (a.contiguous(), b.contiguous());
        let (av, bv) = (a.as_slice::<F>()?, b.as_slice::<F>()?);
        let o = out.as_slice_mut::<F>()?;
        let (m, k, n) = (p.m, p.k, p.n);
        if o.is_empty() {
            return Ok(out);
        }
        let beta = epilogue.init(o, n);
        if p.b_batch.iter().all(|&d| d == 1) {
            // B is one matrix, so A's matrices cover the output batches in order: fold A's
            // batch into rows and do one (batch*m) x k x n product.
            let rows = o.len() / n;
            let am = MatRef::row_major(av, rows, k);
            par_gemm(ctx, F::ONE, am, MatRef::row_major(bv, k, n), beta, o)?;
            epilogue.finish(ctx, o);
            return Ok(out);
        }
        let a_off = batch_offsets(&p.a_batch, &p.batch);
        let b_off = batch_offsets(&p.b_batch, &p.batch);
        let mn = m * n;
        if a_off.len() >= ctx.threads() {
            let errors = ErrorSlot::default();
            ctx.par_chunks_mut(o, mn, |i, c| {
                let am = MatRef::row_major(&av[a_off[i] * m * k..], m, k);
                let bm = MatRef::row_major(&bv[b_off[i] * k * n..], k, n);
                errors.record(gemm(F::ONE, am, bm, beta, MatMut::row_major(c, m, n)));
            });
            errors.finish()?;
        } else {
            for (i, c) in o.chunks_mut(mn).enumerate() {
                let am = MatRef::row_major(&av[a_off[i] * m * k..], m, k);
                let bm = MatRef::row_major(&bv[b_off[i] * k * n..], k, n);
                par_gemm(ctx, F::ONE, am, bm, beta, c)?;
            }
        }
        epilogue.finish(ctx, o);
        Ok(out)
    }
}

fn matmul_int_dispatch(
    ctx: &EvalCtx<'_>,
    a: &Tensor,
    b: &Tensor,
    p: &MatMulPlan,
) -> OpResult<Option<Tensor>> {
    macro_rules! int_case {
        ($t:ty) => {{
            let mut out = ctx.alloc(<$t as Element>::DTYPE, &p.out_shape)?;
            let (a, b) = (a.contiguous(), b.contiguous());
            let (av, bv) = (a.as_slice::<$t>()?, b.as_slice::<$t>()?);
            let o = out.as_slice_mut::<$t>()?;
            let (m, k, n) = (p.m, p.k, p.n);
            let a_off = batch_offsets(&p.a_batch, &p.batch);
            let b_off = batch_offsets(&p.b_batch, &p.batch);
            for (bi, c) in o.chunks_mut((m * n).max(1)).enumerate() {
                let am = &av[a_off[bi] * m * k..];
                let bm = &bv[b_off[bi] * k * n..];
                for i in 0..m {
                    let row = &mut c[i * n..(i + 1) * n];
                    row.fill(0);
                    for q in 0..k {
                        let x = am[i * k + q];
                        for (o, &y) in row.iter_mut().zip(&bm[q * n..(q + 1) * n]) {
                            *o = o.wrapping_add(x.wrapping_mul(y));
                        }
                    }
                }
            }
            Ok(Some(out))
        }};
    }
    match a.dtype() {
        DType::I32 => int_case!(i32),
        DType::I64 => int_case!(i64),
        DType::U32 => int_case!(u32),
        DType::U64 => int_case!(u64),
        _ => Ok(None),
    }
}

impl Operator for MatMul {
    op_boilerplate!("MatMul");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let Some(dt) = known_dtype(inputs, 0) else {
            return Ok(None);
        };
        if let (Some(a), Some(b)) = (concrete(inputs, 0), concrete(inputs, 1)) {
            let p = matmul_plan(&a, &b)?;
            return Ok(Some(vec![Fact::known(dt, &p.out_shape)]));
        }
        Ok(symbolic_matmul_shape(inputs).map(|shape| {
            vec![Fact {
                dtype: Some(dt),
                shape: Some(shape),
                value: None,
            }]
        }))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        let (Some(a), Some(b)) = (concrete(inputs, 0), concrete(inputs, 1)) else {
            return 0;
        };
        matmul_plan(&a, &b).map_or(0, |p| {
            2 * (p.batch.iter().product::<usize>() * p.m * p.k * p.n) as u64
        })
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (a, b) = (inputs.tensor(0)?, inputs.tensor(1)?);
        if a.dtype() != b.dtype() {
            return Err(OpError::invalid(
                1,
                format!("dtype {} differs from input 0's {}", b.dtype(), a.dtype()),
            ));
        }
        let p = matmul_plan(a.shape(), b.shape())?;
        let out = match a.dtype() {
            DType::F32 => Self::run_float::<f32>(ctx, a, b, &p, RowEpilogue::NONE)?,
            DType::F64 => Self::run_float::<f64>(ctx, a, b, &p, RowEpilogue::NONE)?,
            DType::F16 | DType::BF16 => {
                return eval_via_f32(ctx, &inputs, a.dtype(), 1, |c, i| self.eval(c, i));
            }
            d => match matmul_int_dispatch(ctx, a, b, &p)? {
                Some(t) => t,
                None => return Err(OpError::UnsupportedDType { index: 0, dtype: d }),
            },
        };
        Ok(vec![out.into()])
    }
}

/// `MatMul` with a fused bias (input 2: shape `[n]`, added to every output row) and
/// activation: what the fusion passes make of `MatMul -> Add(bias) -> activation`. Float
/// operands only.
#[derive(Debug, Clone)]
pub struct FusedMatMul {
    /// Whether input 2 is a bias row.
    pub bias: bool,
    /// Activation applied to the result.
    pub activation: Option<Activation>,
    /// The constant 2-D right operand, packed for the GEMM kernel (set by the prepacking
    /// pass, which then disconnects input 1); the left operand is then f32.
    pub packed_b: Option<Arc<PackedB>>,
}

impl FusedMatMul {
    /// A label for the fused op, such as `MatMul+Add+Gelu`.
    pub fn label(&self) -> String {
        fused_label("MatMul", self.bias, self.activation.as_ref())
    }

    /// The facts of inputs 0 and 1, input 1's from the packed operand when there is one.
    fn operand_facts(&self, inputs: &[Fact]) -> Vec<Fact> {
        let mut facts = inputs[..inputs.len().min(2)].to_vec();
        if let Some(packed) = &self.packed_b {
            facts.resize(2, Fact::default());
            facts[1] = Fact::known(DType::F32, &[packed.rows(), packed.cols()]);
        }
        facts
    }

    /// The product with the prepacked right operand: A's leading dimensions are folded
    /// into rows of one GEMM.
    fn run_packed(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        packed: &PackedB,
        epilogue: RowEpilogue<'_, f32>,
    ) -> OpResult<Tensor> {
        let a = inputs.tensor(0)?.contiguous();
        let p = matmul_plan(a.shape(), &[packed.rows(), packed.cols()])?;
        let mut out = if p.k > 0 {
            ctx.alloc_for_overwrite(DType::F32, &p.out_shape)?
        } else {
            ctx.alloc(DType::F32, &p.out_shape)?
        };
        let o = out.as_slice_mut::<f32>()?;
        if o.is_empty() {
            return Ok(out);
        }
        let beta = epilogue.init(o, p.n);
        let rows = o.len() / p.n;
        let am = MatRef::row_major(a.as_slice::<f32>()?, rows, p.k);
        crate::kernels::gemm::par_gemm_packed_b(ctx, am, packed, beta, o)?;
        epilogue.finish(ctx, o);
        Ok(out)
    }

    /// The fused bias row of `n` values, if any.
    fn bias_row<'t, F: Float>(
        &self,
        bias: Option<&'t Tensor>,
        n: usize,
    ) -> OpResult<Option<&'t [F]>> {
        match bias {
            Some(t) if t.len() == n => Ok(Some(t.as_slice::<F>()?)),
            Some(t) => Err(OpError::invalid(
                2,
                format!("fused bias has shape {:?}, expected [{n}]", t.shape()),
            )),
            None => Ok(None),
        }
    }

    fn run<F: ActFloat>(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        p: &MatMulPlan,
    ) -> OpResult<Tensor> {
        let bias = match self.bias {
            true => Some(inputs.tensor(2)?.contiguous()),
            false => None,
        };
        let epilogue = RowEpilogue {
            bias: self.bias_row::<F>(bias.as_ref(), p.n)?,
            activation: self.activation,
        };
        MatMul::run_float::<F>(ctx, inputs.tensor(0)?, inputs.tensor(1)?, p, epilogue)
    }
}

impl Operator for FusedMatMul {
    op_boilerplate!("MatMul");

    fn weight_bytes(&self) -> usize {
        self.packed_b.as_ref().map_or(0, |p| p.bytes())
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        MatMul.infer(&self.operand_facts(inputs))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        MatMul.flops(&self.operand_facts(inputs))
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        if let Some(packed) = &self.packed_b {
            let a = inputs.tensor(0)?;
            if a.dtype() != DType::F32 {
                return Err(OpError::invalid(
                    0,
                    format!("dtype {} differs from the packed weights' f32", a.dtype()),
                ));
            }
            let bias = match self.bias {
                true => Some(inputs.tensor(2)?.contiguous()),
                false => None,
            };
            let epilogue = RowEpilogue {
                bias: self.bias_row::<f32>(bias.as_ref(), packed.cols())?,
                activation: self.activation,
            };
            return Ok(vec![self
                .run_packed(ctx, &inputs, packed, epilogue)?
                .into()]);
        }
        let (a, b) = (inputs.tensor(0)?, inputs.tensor(1)?);
        let dt = a.dtype();
        for i in 1..inputs.len() {
            if let Some(t) = inputs.opt_tensor(i)? {
                if t.dtype() != dt {
                    return Err(OpError::invalid(
                        i,
                        format!("dtype {} differs from input 0's {dt}", t.dtype()),
                    ));
                }
            }
        }
        let p = matmul_plan(a.shape(), b.shape())?;
        let out = match dt {
            DType::F32 => self.run::<f32>(ctx, &inputs, &p)?,
            DType::F64 => self.run::<f64>(ctx, &inputs, &p)?,
            DType::F16 | DType::BF16 => {
                return eval_via_f32(ctx, &inputs, dt, 1, |c, i| self.eval(c, i));
            }
            d => return Err(OpError::UnsupportedDType { index: 0, dtype: d }),
        };
        Ok(vec![out.into()])
    }
}

// ----- Gemm ---------------------------------------------------------------------------------

/// `Gemm` (opsets 1-23): `Y = alpha * op(A) * op(B) + beta * C`, C unidirectionally broadcast.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    /// Whether A is stored transposed.
    pub trans_a: bool,
    /// Whether B is stored transposed.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C.
    pub beta: f32,
    /// Activation applied to the result (set by the fusion passes; `None` from ONNX).
    pub activation: Option<Activation>,
}

fn build_gemm(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let flag = |name: &str| -> OpResult<bool> {
        match a.int_or(name, 0)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(OpError::attribute(name, format!("must be 0 or 1, got {v}"))),
        }
    };
    // Opsets < 7 have `broadcast`; C broadcasting is accepted either way.
    if ctx.opset < 7 {
        flag("broadcast")?;
    }
    Ok(Box::new(Gemm {
        trans_a: flag("transA")?,
        trans_b: flag("transB")?,
        alpha: a.float_or("alpha", 1.0)?,
        beta: a.float_or("beta", 1.0)?,
        activation: None,
    }))
}

impl Gemm {
    /// A label for the op with its fused activation, such as `Gemm+Relu`.
    pub fn label(&self) -> String {
        fused_label("Gemm", false, self.activation.as_ref())
    }

    fn dims(&self, a: &[usize], b: &[usize]) -> OpResult<(usize, usize, usize)> {
        if a.len() != 2 {
            return Err(OpError::invalid(
                0,
                format!("Gemm A must be 2-D, got shape {a:?}"),
            ));
        }
        if b.len() != 2 {
            return Err(OpError::invalid(
                1,
                format!("Gemm B must be 2-D, got shape {b:?}"),
            ));
        }
        let (m, ka) = if self.trans_a {
            (a[1], a[0])
        } else {
            (a[0], a[1])
        };
        let (kb, n) = if self.trans_b {
            (b[1], b[0])
        } else {
            (b[0], b[1])
        };
        if ka != kb {
            return Err(OpError::Shape(format!(
                "Gemm inner dimensions differ: A {a:?} (transA={}), B {b:?} (transB={})",
                self.trans_a as u8, self.trans_b as u8
            )));
        }
        Ok((m, ka, n))
    }

    fn run_float<F: ActFloat>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Tensor> {
        let (a, b) = (
            inputs.tensor(0)?.contiguous(),
            inputs.tensor(1)?.contiguous(),
        );
        let (m, k, n) = self.dims(a.shape(), b.shape())?;
        let mut out = ctx.alloc(F::DTYPE, &[m, n])?;
        let o = out.as_slice_mut::<F>()?;
        let mut beta = F::ZERO;
        if let Some(c) = inputs.opt_tensor(2)? {
            if self.beta != 0.0 {
                let c = c.contiguous();
                let cb = c.broadcast_to(&[m, n]).map_err(|_| {
                    OpError::invalid(
                        2,
                        format!(
                            "C of shape {:?} does not broadcast to [{m}, {n}]",
                            c.shape()
                        ),
                    )
                })?;
                let cs = c.as_slice::<F>()?;
                let (rs, cs_) = (cb.strides()[0] as usize, cb.strides()[1] as usize);
                for (i, row) in o.chunks_mut(n.max(1)).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = cs[i * rs + j * cs_];
                    }
                }
                beta = F::from_f32(self.beta);
            }
        }
        let am =
            MatRef::row_major(a.as_slice::<F>()?, a.shape()[0], a.shape()[1]).t_if(self.trans_a);
        let bm =
            MatRef::row_major(b.as_slice::<F>()?, b.shape()[0], b.shape()[1]).t_if(self.trans_b);
        let _ = k;
        par_gemm(ctx, F::from_f32(self.alpha), am, bm, beta, o)?;
        let epilogue = RowEpilogue {
            bias: None,
            activation: self.activation,
        };
        epilogue.finish(ctx, o);
        Ok(out)
    }

    /// Integer Gemm with wrapping multiply-accumulate (through i128, truncated to `T` like
    /// two's-complement wrapping) and alpha/beta applied through f64.
    fn run_int<T: Element>(&self, ctx: &EvalCtx<'_>, inputs: &Inputs) -> OpResult<Tensor> {
        let mac = |acc: T, x: T, y: T| {
            T::from_i128(
                acc.to_i128()
                    .wrapping_add(x.to_i128().wrapping_mul(y.to_i128())),
            )
        };
        let scale = |v: T, s: f32| {
            if s == 1.0 {
                v
            } else {
                T::from_f64(v.to_f64() * s as f64)
            }
        };
        let (a, b) = (
            inputs.tensor(0)?.contiguous(),
            inputs.tensor(1)?.contiguous(),
        );
        let (m, k, n) = self.dims(a.shape(), b.shape())?;
        let (av, bv) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
        let mut out = ctx.alloc(T::DTYPE, &[m, n])?;
        let o = out.as_slice_mut::<T>()?;
        let (ars, acs) = if self.trans_a { (1, m) } else { (k, 1) };
        let (brs, bcs) = if self.trans_b { (1, k) } else { (n, 1) };
        for i in 0..m {
            for j in 0..n {
                let mut acc = T::default();
                for p in 0..k {
                    acc = mac(acc, av[i * ars + p * acs], bv[p * brs + j * bcs]);
                }
                o[i * n + j] = scale(acc, self.alpha);
            }
        }
        if let Some(c) = inputs.opt_tensor(2)? {
            let cb = c.broadcast_to(&[m, n]).map_err(|_| {
                OpError::invalid(
                    2,
                    format!(
                        "C of shape {:?} does not broadcast to [{m}, {n}]",
                        c.shape()
                    ),
                )
            })?;
            let cvals = cb.to_vec::<T>()?;
            for (v, &cv) in o.iter_mut().zip(&cvals) {
                *v = mac(*v, scale(cv, self.beta), T::from_i128(1));
            }
        }
        Ok(out)
    }
}

impl Operator for Gemm {
    op_boilerplate!("Gemm");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(dt), Some(a), Some(b)) = (
            known_dtype(inputs, 0),
            concrete(inputs, 0),
            concrete(inputs, 1),
        ) else {
            return Ok(None);
        };
        let (m, _, n) = self.dims(&a, &b)?;
        Ok(Some(vec![Fact::known(dt, &[m, n])]))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        let (Some(a), Some(b)) = (concrete(inputs, 0), concrete(inputs, 1)) else {
            return 0;
        };
        self.dims(&a, &b)
            .map_or(0, |(m, k, n)| 2 * (m * k * n) as u64)
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let a = inputs.tensor(0)?;
        let dt = a.dtype();
        for i in 1..3 {
            if let Some(t) = inputs.opt_tensor(i)? {
                if t.dtype() != dt {
                    return Err(OpError::invalid(
                        i,
                        format!("dtype {} differs from input 0's {dt}", t.dtype()),
                    ));
                }
            }
        }
        let out = match dt {
            DType::F32 => self.run_float::<f32>(ctx, &inputs)?,
            DType::F64 => self.run_float::<f64>(ctx, &inputs)?,
            DType::F16 | DType::BF16 => {
                return eval_via_f32(ctx, &inputs, dt, 1, |c, i| self.eval(c, i));
            }
            DType::I32 => self.run_int::<i32>(ctx, &inputs)?,
            DType::I64 => self.run_int::<i64>(ctx, &inputs)?,
            DType::U32 => self.run_int::<u32>(ctx, &inputs)?,
            DType::U64 => self.run_int::<u64>(ctx, &inputs)?,
            d => return Err(OpError::UnsupportedDType { index: 0, dtype: d }),
        };
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::nn::testutil::{build, eval, f64s, pat, t};
    use crate::Attribute;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| (a[i * k + p] * b[p * n + j]) as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    fn assert_near(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                "element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn single_row_gemm_splits_columns_over_threads() {
        // A classifier: x [1, k] times W^T ([n, k], transB) plus a bias, large enough to be
        // split by columns; eval() checks the two-thread result against the serial one.
        let (k, n) = (300, 1000);
        let (x, w, bias) = (pat(k, 1), pat(n * k, 2), pat(n, 3));
        let op = build("Gemm", 13, &[("transB", Attribute::Int(1))], 3, 1);
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&x, &[1, k])),
                Some(t(&w, &[n, k])),
                Some(t(&bias, &[n])),
            ],
        );
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let want: Vec<f32> = naive(&x, &wt, 1, k, n)
            .iter()
            .zip(&bias)
            .map(|(v, b)| v + b)
            .collect();
        assert_near(out[0].as_slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn few_rows_by_transposed_weights_read_each_weight_row_once() {
        // A fully connected layer over batches of 2 to 9 (transB, bias, Relu-free): up to
        // 8 rows take the dot-product path (its columns split over the threads: eval()
        // checks two threads against one), 9 the packed GEMM; all against the naive product.
        let (k, n) = (300, 1000);
        let (w, bias) = (pat(n * k, 2), pat(n, 3));
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        for m in [2, 3, 8, 9] {
            let x = pat(m * k, 1 + m as i64);
            let op = build("Gemm", 13, &[("transB", Attribute::Int(1))], 3, 1);
            let out = eval(
                op.as_ref(),
                &[
                    Some(t(&x, &[m, k])),
                    Some(t(&w, &[n, k])),
                    Some(t(&bias, &[n])),
                ],
            );
            let want: Vec<f32> = naive(&x, &wt, m, k, n)
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias[i % n])
                .collect();
            assert_near(out[0].as_slice::<f32>().unwrap(), &want);
        }
    }

    #[test]
    fn few_rows_product_writes_strided_outputs_and_scales_them() {
        // The dot-product path through the strided API: A's rows `k + 3` apart, B's columns
        // `k + 5` apart, C column-major, beta 0.5 over its previous values; k not a multiple
        // of the 16 lanes.
        let (m, k, n) = (5, 1001, 70);
        let a = pat(m * (k + 3), 4);
        let b = pat(n * (k + 5), 5);
        let am = MatRef {
            data: &a,
            rows: m,
            cols: k,
            rs: k + 3,
            cs: 1,
        };
        let bm = MatRef {
            data: &b,
            rows: k,
            cols: n,
            rs: 1,
            cs: k + 5,
        };
        let before = pat(m * n, 6);
        let mut c = before.clone();
        let out = MatMut {
            data: &mut c,
            rows: m,
            cols: n,
            rs: 1,
            cs: m,
        };
        gemm(2.0, am, bm, 0.5, out).unwrap();
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| f64::from(a[i * (k + 3) + p]) * f64::from(b[j * (k + 5) + p]))
                    .sum();
                let want = 2.0 * dot + 0.5 * f64::from(before[j * m + i]);
                let got = f64::from(c[j * m + i]);
                assert!(
                    (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn gemm_wrapper_checks_views() {
        let a = [1f32, 2., 3., 4., 5., 6.];
        let b = [1f32, 0., 0., 1., 1., 1.];
        let mut c = [0f32; 4];
        gemm_f32(false, false, 2, 2, 3, 1.0, &a, &b, 0.0, &mut c).unwrap();
        assert_eq!(c, [4., 5., 10., 11.]);
        // op(A) = A^T where A is stored 3x2.
        gemm_f32(
            true,
            false,
            2,
            2,
            3,
            1.0,
            &[1., 4., 2., 5., 3., 6.],
            &b,
            0.0,
            &mut c,
        )
        .unwrap();
        assert_eq!(c, [4., 5., 10., 11.]);
        // Too-short buffers and mismatched shapes are errors, not panics.
        assert!(gemm_f32(false, false, 2, 2, 4, 1.0, &a, &b, 0.0, &mut c).is_err());
        let bad = MatMut {
            data: &mut c[..],
            rows: 2,
            cols: 2,
            rs: 1,
            cs: 1,
        };
        assert!(gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            bad
        )
        .is_err());
        // k = 0: C = beta * C.
        let mut c = [2f32, 4.];
        gemm(
            1.0,
            MatRef::row_major(&[], 1, 0),
            MatRef::row_major(&[], 0, 2),
            0.5,
            MatMut::row_major(&mut c, 1, 2),
        )
        .unwrap();
        assert_eq!(c, [1., 2.]);
    }

    #[test]
    fn matmul_large_and_batched_match_naive() {
        // Folded batch, row-split GEMM.
        let (m, k, n) = (200, 64, 300);
        let a = pat(2 * m * k, 1);
        let b = pat(k * n, 2);
        let op = build("MatMul", 13, &[], 2, 1);
        let out = eval(
            op.as_ref(),
            &[Some(t(&a, &[2, m, k])), Some(t(&b, &[k, n]))],
        );
        assert_eq!(out[0].shape(), &[2, m, n]);
        let mut want = naive(&a[..m * k], &b, m, k, n);
        want.extend(naive(&a[m * k..], &b, m, k, n));
        assert_near(out[0].as_slice::<f32>().unwrap(), &want);
        // Broadcast A over B's batch: one task per batch.
        let (m, k, n) = (5, 7, 3);
        let a = pat(m * k, 3);
        let b = pat(4 * k * n, 4);
        let out = eval(
            op.as_ref(),
            &[Some(t(&a, &[m, k])), Some(t(&b, &[4, k, n]))],
        );
        assert_eq!(out[0].shape(), &[4, m, n]);
        let want: Vec<f32> = (0..4)
            .flat_map(|i| naive(&a, &b[i * k * n..(i + 1) * k * n], m, k, n))
            .collect();
        assert_near(out[0].as_slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn matmul_1d_and_errors() {
        let op = build("MatMul", 1, &[], 2, 1);
        let out = eval(
            op.as_ref(),
            &[Some(t(&[1., 2.], &[2])), Some(t(&[3., 4.], &[2]))],
        );
        assert_eq!(out[0].shape(), &[] as &[usize]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[11.]);
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&[1., 2., 3., 4.], &[2, 2])),
                Some(t(&[1., 1.], &[2])),
            ],
        );
        assert_eq!(
            (out[0].shape(), out[0].as_slice::<f32>().unwrap()),
            (&[2][..], &[3., 7.][..])
        );
        let ctx = EvalCtx::default();
        let e = op
            .eval(
                &ctx,
                Inputs::from_tensors([t(&[0.; 6], &[2, 3]), t(&[0.; 6], &[2, 3])]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("inner dimensions"), "{e}");
        let e = op
            .eval(
                &ctx,
                Inputs::from_tensors([t(&[0.; 12], &[2, 2, 3]), t(&[0.; 18], &[3, 3, 2])]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("broadcast"), "{e}");
        let e = op
            .eval(
                &ctx,
                Inputs::from_tensors([Tensor::scalar(1f32), t(&[1.], &[1])]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("rank"), "{e}");
        // Empty dims give empty outputs.
        let out = eval(
            op.as_ref(),
            &[Some(t(&[], &[0, 3])), Some(t(&[0.; 6], &[3, 2]))],
        );
        assert_eq!(out[0].shape(), &[0, 2]);
        let out = eval(op.as_ref(), &[Some(t(&[], &[2, 0])), Some(t(&[], &[0, 2]))]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.; 4]);
    }

    #[test]
    fn matmul_integers_f64_f16_and_flops() {
        let op = build("MatMul", 13, &[], 2, 1);
        let a = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6], &[1, 2, 3]).unwrap();
        let b = Tensor::from_vec(vec![1i64, 0, 0, 1, 1, 1, 2, 0, 0, 2, 2, 2], &[2, 3, 2]).unwrap();
        let out = eval(op.as_ref(), &[Some(a), Some(b)]);
        assert_eq!(out[0].shape(), &[2, 2, 2]);
        assert_eq!(
            out[0].as_slice::<i64>().unwrap(),
            &[4, 5, 10, 11, 8, 10, 20, 22]
        );
        let a = Tensor::from_vec(vec![i32::MAX, 1], &[1, 2]).unwrap();
        let b = Tensor::from_vec(vec![2i32, 1], &[2, 1]).unwrap();
        assert_eq!(
            eval(op.as_ref(), &[Some(a), Some(b)])[0]
                .as_slice::<i32>()
                .unwrap(),
            &[-1]
        );
        let u = Tensor::from_vec(vec![2u32, 3], &[2]).unwrap();
        assert_eq!(
            eval(op.as_ref(), &[Some(u.clone()), Some(u)])[0]
                .as_slice::<u32>()
                .unwrap(),
            &[13]
        );
        let a = t(&[1., 2., 3., 4.], &[2, 2]);
        let out = eval(
            op.as_ref(),
            &[
                Some(a.cast(DType::F64).unwrap()),
                Some(a.cast(DType::F64).unwrap()),
            ],
        );
        assert_eq!(out[0].as_slice::<f64>().unwrap(), &[7., 10., 15., 22.]);
        let out = eval(
            op.as_ref(),
            &[
                Some(a.cast(DType::BF16).unwrap()),
                Some(a.cast(DType::BF16).unwrap()),
            ],
        );
        assert_eq!(
            (out[0].dtype(), f64s(&out[0])),
            (DType::BF16, vec![7., 10., 15., 22.])
        );
        let e = op
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([a.clone(), a.cast(DType::F64).unwrap()]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("input 1"), "{e}");
        let facts = [
            Fact::known(DType::F32, &[3, 4, 5]),
            Fact::known(DType::F32, &[5, 6]),
        ];
        assert_eq!(op.flops(&facts), 2 * 3 * 4 * 5 * 6);
        assert_eq!(
            op.infer(&facts).unwrap().unwrap()[0]
                .concrete_shape()
                .unwrap(),
            vec![3, 4, 6]
        );
    }

    #[test]
    fn gemm_variants() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let b = t(&[1., 0., 0., 1., 1., 1.], &[3, 2]);
        // No C (optional from opset 11).
        let op = build("Gemm", 11, &[("alpha", Attribute::Float(2.0))], 2, 1);
        let out = eval(op.as_ref(), &[Some(a.clone()), Some(b.clone())]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[8., 10., 20., 22.]);
        // Scalar C, full C, beta = 0 ignores C.
        let op = build("Gemm", 13, &[("beta", Attribute::Float(0.5))], 3, 1);
        let out = eval(
            op.as_ref(),
            &[Some(a.clone()), Some(b.clone()), Some(Tensor::scalar(2f32))],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[5., 6., 11., 12.]);
        let out = eval(
            op.as_ref(),
            &[
                Some(a.clone()),
                Some(b.clone()),
                Some(t(&[2., 4., 6., 8.], &[2, 2])),
            ],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[5., 7., 13., 15.]);
        let op0 = build("Gemm", 13, &[("beta", Attribute::Float(0.0))], 3, 1);
        let out = eval(
            op0.as_ref(),
            &[
                Some(a.clone()),
                Some(b.clone()),
                Some(t(&[f32::NAN; 2], &[2])),
            ],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[4., 5., 10., 11.]);
        // Errors.
        let ctx = EvalCtx::default();
        let e = op
            .eval(
                &ctx,
                Inputs::from_tensors([a.clone(), b.clone(), t(&[1., 2., 3.], &[3])]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("input 2"), "{e}");
        let e = op
            .eval(&ctx, Inputs::from_tensors([a.clone(), a.clone()]))
            .unwrap_err();
        assert!(e.to_string().contains("inner dimensions"), "{e}");
        let e = op
            .eval(&ctx, Inputs::from_tensors([t(&[1., 2.], &[2]), b.clone()]))
            .unwrap_err();
        assert!(e.to_string().contains("2-D"), "{e}");
        assert!(crate::kernels::nn::testutil::build_err(
            "Gemm",
            13,
            &[("transA", Attribute::Int(2))]
        )
        .contains("transA"));
        // Integer Gemm with transposes.
        let op = build(
            "Gemm",
            13,
            &[("transA", Attribute::Int(1)), ("transB", Attribute::Int(1))],
            3,
            1,
        );
        let ai = Tensor::from_vec(vec![1i32, 4, 2, 5, 3, 6], &[3, 2]).unwrap();
        let bi = Tensor::from_vec(vec![1i32, 0, 1, 0, 1, 1], &[2, 3]).unwrap();
        let ci = Tensor::from_vec(vec![10i32, 20], &[1, 2]).unwrap();
        let out = eval(op.as_ref(), &[Some(ai), Some(bi), Some(ci)]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[14, 25, 20, 31]);
        let facts = [
            Fact::known(DType::F32, &[3, 2]),
            Fact::known(DType::F32, &[4, 3]),
        ];
        assert_eq!(op.flops(&facts), 2 * 2 * 3 * 4);
        // 64-bit integers stay exact when alpha and beta are 1.
        let big = (1i64 << 60) + 1;
        let op = build("Gemm", 13, &[], 3, 1);
        let one = |v: i64| Some(Tensor::from_vec(vec![v], &[1, 1]).unwrap());
        let out = eval(op.as_ref(), &[one(big), one(1), one(1)]);
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[big + 1]);
    }

    #[test]
    fn gemm_reads_strided_c_views() {
        let op = build("Gemm", 13, &[], 3, 1);
        let eye = t(&[1., 0., 0., 1.], &[2, 2]);
        let c = t(&[1., 2., 3., 4.], &[2, 2]).permute(&[1, 0]).unwrap();
        let out = eval(op.as_ref(), &[Some(eye.clone()), Some(eye), Some(c)]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2., 3., 2., 5.]);
    }

    #[test]
    fn gemm_large_splits_rows() {
        let (m, k, n) = (130, 70, 90);
        let a = pat(m * k, 5);
        let b = pat(n * k, 6);
        let c = pat(n, 7);
        let op = build("Gemm", 13, &[("transB", Attribute::Int(1))], 3, 1);
        let out = eval(
            op.as_ref(),
            &[
                Some(t(&a, &[m, k])),
                Some(t(&b, &[n, k])),
                Some(t(&c, &[n])),
            ],
        );
        let mut bt = vec![0f32; k * n];
        for j in 0..n {
            for p in 0..k {
                bt[p * n + j] = b[j * k + p];
            }
        }
        let want: Vec<f32> = naive(&a, &bt, m, k, n)
            .iter()
            .enumerate()
            .map(|(i, v)| v + c[i % n])
            .collect();
        assert_near(out[0].as_slice::<f32>().unwrap(), &want);
    }
}
