//! Matrix-vector products (`y = alpha * A x + beta * y`), the path GEMM takes when C has one
//! row or one column: packing would cost as much as the product itself there. Written as
//! plain Rust with several independent accumulators so it auto-vectorises; instantiated once
//! per instruction set through `#[target_feature]` wrappers.

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
