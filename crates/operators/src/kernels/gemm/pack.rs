//! Packing: copies a block of A into MR-row micro-panels and a block of B into NR-column
//! micro-panels (zero-padded to full panels), the layouts the micro-kernels stream through.
//!
//! Packed A block (`mc x kc`): panel `p` (rows `p*MR..`) at `p * MR * kc`, element `(r, k)` of
//! the panel at `k * MR + r`. Packed B block (`kc x nc`): panel `q` (columns `q*NR..`) at
//! `q * NR * kc`, element `(k, j)` of the panel at `k * NR + j`.

/// Packs the `mc x kc` block of A at `a` (row stride `rsa`, column stride `csa`) into `dst`.
///
/// # Safety
/// Every `a + i*rsa + k*csa` for `i < mc`, `k < kc` must be readable, and `dst` must be
/// writable for `mc.div_ceil(mr) * mr * kc` elements.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pack_a(
    mr: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    dst: *mut f32,
) {
    let panels = mc.div_ceil(mr);
    for p in 0..panels {
        let rows = mr.min(mc - p * mr);
        // SAFETY: panel `p` occupies `dst[p*mr*kc .. (p+1)*mr*kc]`, inside the caller's
        // `panels * mr * kc` elements; every source address has `i = p*mr + r < mc` and
        // `k < kc`, which the caller guarantees readable.
        unsafe {
            let d = dst.add(p * mr * kc);
            let src = a.offset((p * mr) as isize * rsa);
            if csa == 1 {
                for r in 0..rows {
                    let row = src.offset(r as isize * rsa);
                    for k in 0..kc {
                        *d.add(k * mr + r) = *row.add(k);
                    }
                }
            } else {
                for k in 0..kc {
                    let col = src.offset(k as isize * csa);
                    for r in 0..rows {
                        *d.add(k * mr + r) = *col.offset(r as isize * rsa);
                    }
                }
            }
            if rows < mr {
                for k in 0..kc {
                    for r in rows..mr {
                        *d.add(k * mr + r) = 0.0;
                    }
                }
            }
        }
    }
}

/// Packs the `kc x nc` block of B at `b` (row stride `rsb`, column stride `csb`) into `dst`.
///
/// # Safety
/// Every `b + k*rsb + j*csb` for `k < kc`, `j < nc` must be readable, and `dst` must be
/// writable for `nc.div_ceil(nr) * nr * kc` elements.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pack_b(
    nr: usize,
    kc: usize,
    nc: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    dst: *mut f32,
) {
    let panels = nc.div_ceil(nr);
    for q in 0..panels {
        let cols = nr.min(nc - q * nr);
        // SAFETY: panel `q` occupies `dst[q*nr*kc .. (q+1)*nr*kc]`, inside the caller's
        // `panels * nr * kc` elements; every source address has `j = q*nr + c < nc` and
        // `k < kc`, which the caller guarantees readable.
        unsafe {
            let d = dst.add(q * nr * kc);
            let src = b.offset((q * nr) as isize * csb);
            if csb == 1 {
                for k in 0..kc {
                    let row = src.offset(k as isize * rsb);
                    // Full panels of the usual widths copy a constant count, which compiles
                    // to inline vector moves instead of a memcpy call per row.
                    match cols {
                        32 => std::ptr::copy_nonoverlapping(row, d.add(k * nr), 32),
                        16 => std::ptr::copy_nonoverlapping(row, d.add(k * nr), 16),
                        _ => std::ptr::copy_nonoverlapping(row, d.add(k * nr), cols),
                    }
                }
            } else {
                for c in 0..cols {
                    let col = src.offset(c as isize * csb);
                    for k in 0..kc {
                        *d.add(k * nr + c) = *col.offset(k as isize * rsb);
                    }
                }
            }
            if cols < nr {
                for k in 0..kc {
                    for c in cols..nr {
                        *d.add(k * nr + c) = 0.0;
                    }
                }
            }
        }
    }
}
