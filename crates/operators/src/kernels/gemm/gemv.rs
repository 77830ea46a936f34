//! Matrix-vector products (`y = alpha * A x + beta * y`), the path GEMM takes when C has one
//! row or one column: packing would cost as much as the product itself there. Also products
//! of a few rows by a large B whose columns are contiguous ([`Dots`]: a fully connected layer
//! over a small batch, B being the transposed weights), where packing B would copy the
//! whole weight matrix for a handful of multiply-adds per element. Written as plain Rust
//! with several independent accumulators so it auto-vectorises; instantiated once per
//! instruction set through `#[target_feature]` wrappers.

/// Lanes of independent partial sums in a dot product.
const LANES: usize = 32;

/// Arguments of one matrix-vector product. `a` is `m x k` with strides `rsa`, `csa`; `x` has
/// `k` elements at stride `incx`; `y` has `m` elements at stride `incy`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gemv {
    pub m: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub rsa: isize,
    pub csa: isize,
    pub x: *const f32,
    pub incx: isize,
    pub beta: f32,
    pub y: *mut f32,
    pub incy: isize,
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], x: &[f32]) -> f32 {
    let mut s = [0f32; LANES];
    let (ac, xc) = (a.chunks_exact(LANES), x.chunks_exact(LANES));
    let (ar, xr) = (ac.remainder(), xc.remainder());
    for (ca, cx) in ac.zip(xc) {
        for ((acc, &u), &v) in s.iter_mut().zip(ca).zip(cx) {
            *acc = madd::<FMA>(u, v, *acc);
        }
    }
    let mut tail = 0.0;
    for (&u, &v) in ar.iter().zip(xr) {
        tail = madd::<FMA>(u, v, tail);
    }
    s.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy<const FMA: bool>(acc: &mut [f32], s: f32, col: &[f32]) {
    for (d, &v) in acc.iter_mut().zip(col) {
        *d = madd::<FMA>(s, v, *d);
    }
}

/// Writes `y[i] = alpha * v + beta * y[i]`, not reading `y` when `beta == 0`.
///
/// # Safety
/// `y + i*incy` must be valid for reads and writes.
#[inline(always)]
unsafe fn put(g: &Gemv, i: usize, v: f32) {
    // SAFETY: the caller guarantees `y + i*incy` is valid.
    unsafe {
        let p = g.y.offset(i as isize * g.incy);
        *p = if g.beta == 0.0 {
            g.alpha * v
        } else {
            g.alpha * v + g.beta * *p
        };
    }
}

/// The product, with `scratch` as reusable working memory.
///
/// # Safety
/// Every `a + i*rsa + p*csa` (`i < m`, `p < k`) and `x + p*incx` must be readable, every
/// `y + i*incy` valid for reads and writes and distinct from the inputs; `m, k >= 1`.
#[inline(always)]
pub(super) unsafe fn gemv_impl<const FMA: bool>(g: &Gemv, scratch: &mut Vec<f32>) {
    let (m, k) = (g.m, g.k);
    if g.csa == 1 || g.rsa == 1 {
        scratch.clear();
        scratch.resize(k + m, 0.0);
        let (xbuf, acc) = scratch.split_at_mut(k);
        let xs: &[f32] = if g.incx == 1 {
            // SAFETY: `x` has `k` readable elements at unit stride.
            unsafe { std::slice::from_raw_parts(g.x, k) }
        } else {
            for (p, d) in xbuf.iter_mut().enumerate() {
                // SAFETY: `x + p*incx` is readable for `p < k`.
                *d = unsafe { *g.x.offset(p as isize * g.incx) };
            }
            xbuf
        };
        if g.csa == 1 {
            for i in 0..m {
                // SAFETY: row `i` of A is `k` contiguous readable elements.
                let row = unsafe { std::slice::from_raw_parts(g.a.offset(i as isize * g.rsa), k) };
                let v = dot::<FMA>(row, xs);
                // SAFETY: `i < m`.
                unsafe { put(g, i, v) };
            }
        } else {
            for (p, &s) in xs.iter().enumerate() {
                // SAFETY: column `p` of A is `m` contiguous readable elements (`rsa == 1`).
                let col = unsafe { std::slice::from_raw_parts(g.a.offset(p as isize * g.csa), m) };
                axpy::<FMA>(acc, s, col);
            }
            for (i, &v) in acc.iter().enumerate() {
                // SAFETY: `i < m`.
                unsafe { put(g, i, v) };
            }
        }
    } else {
        for i in 0..m {
            let mut s = 0.0;
            for p in 0..k {
                // SAFETY: `i < m`, `p < k`: readable per the caller's contract.
                s = unsafe {
                    madd::<FMA>(
                        *g.a.offset(i as isize * g.rsa + p as isize * g.csa),
                        *g.x.offset(p as isize * g.incx),
                        s,
                    )
                };
            }
            // SAFETY: `i < m`.
            unsafe { put(g, i, s) };
        }
    }
}

/// [`gemv_impl`] compiled for AVX-512F.
///
/// # Safety
/// As [`gemv_impl`], and the CPU supports AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn gemv_avx512(g: &Gemv, scratch: &mut Vec<f32>) {
    // SAFETY: forwarded contract.
    unsafe { gemv_impl::<true>(g, scratch) }
}

/// [`gemv_impl`] compiled for AVX2+FMA.
///
/// # Safety
/// As [`gemv_impl`], and the CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemv_avx2(g: &Gemv, scratch: &mut Vec<f32>) {
    // SAFETY: forwarded contract.
    unsafe { gemv_impl::<true>(g, scratch) }
}

/// [`gemv_impl`] for the baseline target.
///
/// # Safety
/// As [`gemv_impl`].
pub(super) unsafe fn gemv_generic(g: &Gemv, scratch: &mut Vec<f32>) {
    // SAFETY: forwarded contract.
    unsafe { gemv_impl::<false>(g, scratch) }
}

/// Most rows of A that [`Dots`] takes.
pub(super) const DOTS_MAX_ROWS: usize = 8;

/// Lanes of each row's partial sums in [`Dots`] (one AVX-512 vector).
const DOT_LANES: usize = 16;

/// Arguments of `C = alpha * A B + beta * C` for `m <= DOTS_MAX_ROWS` rows of A, each `k`
/// contiguous elements `rsa` apart, and a B whose `n` columns are each `k` contiguous
/// elements `csb` apart: every column of B is read once, for all rows of A together.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dots {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub rsa: isize,
    pub b: *const f32,
    pub csb: isize,
    pub beta: f32,
    pub c: *mut f32,
    pub rsc: isize,
    pub csc: isize,
}

/// The `R` dot products of `col` with `rows[..R]` (each at least `col.len()` long).
#[inline(always)]
fn dot_rows<const R: usize, const FMA: bool>(
    col: &[f32],
    rows: &[&[f32]; DOTS_MAX_ROWS],
) -> [f32; DOTS_MAX_ROWS] {
    let k = col.len();
    let mut acc = [[0f32; DOT_LANES]; R];
    let whole = k / DOT_LANES * DOT_LANES;
    for (at, w) in (0..whole)
        .step_by(DOT_LANES)
        .zip(col.chunks_exact(DOT_LANES))
    {
        for (sums, row) in acc.iter_mut().zip(rows) {
            if let Some(x) = row.get(at..at + DOT_LANES) {
                for ((s, &u), &v) in sums.iter_mut().zip(w).zip(x) {
                    *s = madd::<FMA>(u, v, *s);
                }
            }
        }
    }
    let mut out = [0f32; DOTS_MAX_ROWS];
    for ((o, sums), row) in out.iter_mut().zip(&acc).zip(rows) {
        let mut tail = 0.0;
        for (&u, &v) in col[whole..]
            .iter()
            .zip(row.get(whole..k).unwrap_or_default())
        {
            tail = madd::<FMA>(u, v, tail);
        }
        *o = sums.iter().sum::<f32>() + tail;
    }
    out
}

/// The product described by `d`.
///
/// # Safety
/// `1 <= d.m <= DOTS_MAX_ROWS`; every `a + i*rsa + p` and `b + j*csb + p` (`i < m`, `p < k`,
/// `j < n`) readable; every `c + i*rsc + j*csc` valid for reads and writes and distinct from
/// the inputs and from each other.
#[inline(always)]
pub(super) unsafe fn dots_impl<const FMA: bool>(d: &Dots) {
    let mut rows: [&[f32]; DOTS_MAX_ROWS] = [&[]; DOTS_MAX_ROWS];
    for (i, row) in rows.iter_mut().enumerate().take(d.m) {
        // SAFETY: row `i < m` of A is `k` contiguous readable elements.
        *row = unsafe { std::slice::from_raw_parts(d.a.offset(i as isize * d.rsa), d.k) };
    }
    for j in 0..d.n {
        // SAFETY: column `j < n` of B is `k` contiguous readable elements.
        let col = unsafe { std::slice::from_raw_parts(d.b.offset(j as isize * d.csb), d.k) };
        let sums = match d.m {
            1 => dot_rows::<1, FMA>(col, &rows),
            2 => dot_rows::<2, FMA>(col, &rows),
            3 => dot_rows::<3, FMA>(col, &rows),
            4 => dot_rows::<4, FMA>(col, &rows),
            5 => dot_rows::<5, FMA>(col, &rows),
            6 => dot_rows::<6, FMA>(col, &rows),
            7 => dot_rows::<7, FMA>(col, &rows),
            _ => dot_rows::<8, FMA>(col, &rows),
        };
        for (i, &v) in sums.iter().enumerate().take(d.m) {
            // SAFETY: element (i, j) of C is valid for reads and writes (the contract).
            unsafe {
                let p = d.c.offset(i as isize * d.rsc + j as isize * d.csc);
                *p = if d.beta == 0.0 {
                    d.alpha * v
                } else {
                    d.alpha * v + d.beta * *p
                };
            }
        }
    }
}

/// [`dots_impl`] compiled for AVX-512F.
///
/// # Safety
/// As [`dots_impl`], and the CPU supports AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dots_avx512(d: &Dots) {
    // SAFETY: forwarded contract.
    unsafe { dots_impl::<true>(d) }
}

/// [`dots_impl`] compiled for AVX2+FMA.
///
/// # Safety
/// As [`dots_impl`], and the CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dots_avx2(d: &Dots) {
    // SAFETY: forwarded contract.
    unsafe { dots_impl::<true>(d) }
}

/// [`dots_impl`] for the baseline target.
///
/// # Safety
/// As [`dots_impl`].
pub(super) unsafe fn dots_generic(d: &Dots) {
    // SAFETY: forwarded contract.
    unsafe { dots_impl::<false>(d) }
}
