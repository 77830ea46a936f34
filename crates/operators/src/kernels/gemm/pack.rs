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
                // Whole blocks of k transposed in registers, then the rest element-wise.
                let done = match mr {
                    12 => pack_a_rows::<12>(rows, kc, src, rsa, d),
                    6 => pack_a_rows::<6>(rows, kc, src, rsa, d),
                    4 => pack_a_rows::<4>(rows, kc, src, rsa, d),
                    _ => 0,
                };
                for r in 0..rows {
                    let row = src.offset(r as isize * rsa);
                    for k in done..kc {
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

/// Columns of A transposed at once by [`pack_a_rows`].
const A_BLOCK: usize = 8;

/// Packs the first `kc / A_BLOCK * A_BLOCK` columns of one `MR`-row panel of row-major A
/// (`rows <= MR` rows `rsa` apart at `src`, unit column stride) into `d`, `A_BLOCK` columns
/// at a time: each row's `A_BLOCK` values are read as one vector and the block is written
/// as one contiguous `A_BLOCK x MR` piece (rows past `rows` zero). Returns the columns done.
///
/// # Safety
/// Every `src + r*rsa + k` for `r < rows`, `k < kc` is readable; `d` is writable for
/// `kc * MR` elements.
#[inline(always)]
unsafe fn pack_a_rows<const MR: usize>(
    rows: usize,
    kc: usize,
    src: *const f32,
    rsa: isize,
    d: *mut f32,
) -> usize {
    let blocks = kc / A_BLOCK;
    for blk in 0..blocks {
        let k0 = blk * A_BLOCK;
        let mut t = [[0f32; MR]; A_BLOCK];
        // `r` picks both the source row and the position inside each of `t`'s rows.
        #[allow(clippy::needless_range_loop)]
        for r in 0..rows.min(MR) {
            // SAFETY: row `r < rows`, columns `k0..k0 + A_BLOCK <= kc` are readable.
            let v = unsafe {
                src.offset(r as isize * rsa)
                    .add(k0)
                    .cast::<[f32; A_BLOCK]>()
                    .read_unaligned()
            };
            for (j, &x) in v.iter().enumerate() {
                t[j][r] = x;
            }
        }
        // SAFETY: elements `k0 * MR .. (k0 + A_BLOCK) * MR` lie inside the panel's
        // `kc * MR` elements.
        unsafe {
            d.add(k0 * MR)
                .cast::<[[f32; MR]; A_BLOCK]>()
                .write_unaligned(t)
        };
    }
    blocks * A_BLOCK
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
