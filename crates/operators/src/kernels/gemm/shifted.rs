//! [`ShiftedB`]: a B operand whose rows are shifted windows of one buffer, such as a
//! convolution's im2col matrix over a padded copy of its input (row `k` = input channel and
//! kernel tap, seen at the tap's offset). It can be packed like any panel source, or, on
//! kernels that support it, read in place: the product then runs over "virtual" columns
//! `y * row_step + x` (including the `row_step - cols` columns between two rows, which are
//! masked off), so a whole micro-panel of B is one unaligned load per k, and each stored
//! vector of C is compressed to the real pixels it holds.

use super::{GemmError, Kernel, PackPanels};

/// A B operand of `offsets.len()` rows and `rows * cols` columns: element `(k, j)`, for
/// `j = y * cols + x`, is `data[offsets[k] + y * row_step + x]`.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedB<'a> {
    /// The buffer every row is a window of.
    pub data: &'a [f32],
    /// Where each row's element `(0, 0)` is in `data`.
    pub offsets: &'a [usize],
    /// Rows of each window (a convolution's output height).
    pub rows: usize,
    /// Columns of each window (the output width), at most `row_step`.
    pub cols: usize,
    /// Distance in `data` between two rows of a window.
    pub row_step: usize,
}

impl ShiftedB<'_> {
    /// B's rows (K) and columns (N).
    pub fn dims(&self) -> (usize, usize) {
        (self.offsets.len(), self.rows * self.cols)
    }

    /// Checks that every element lies inside `data` and that rows do not overlap.
    pub(super) fn check(&self) -> Result<(), GemmError> {
        if self.cols > self.row_step {
            return Err(GemmError::View("B (shifted rows longer than their step)"));
        }
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = self.offsets.iter().max().and_then(|&o| {
            ((self.rows - 1).checked_mul(self.row_step)?)
                .checked_add(self.cols - 1)?
                .checked_add(o)
        });
        match last {
            Some(last) if last >= self.data.len() => Err(GemmError::View("B (shifted)")),
            None if !self.offsets.is_empty() => Err(GemmError::View("B (shifted)")),
            _ => Ok(()),
        }
    }

    /// Virtual columns of the in-place product (rows `row_step` apart, the last one `cols`
    /// long).
    pub(super) fn virtual_cols(&self) -> usize {
        (self.rows - 1) * self.row_step + self.cols
    }

    /// Whether `kern` should read this operand in place for an `m x k` by `k x n` product
    /// rather than pack it: it must support it, and what packing costs must outweigh what
    /// reading in place costs. Packing copies each element of B once for the
    /// `m.div_ceil(MR)` row panels that use it; reading in place computes the masked-off
    /// columns between rows, its scattered loads run a little slower, and each tile pays
    /// for its compressed stores whatever its depth. Measured on convolutions (AVX-512, 1
    /// thread): 3x3 ones gained 8-28% in place with up to 7 row panels on 56x56 and larger
    /// images, broke even at 8 panels on 56x56, and lost 2-12% with 8 panels on 28x28 and
    /// with 11 panels at any size; a 1x1 with K = 16 and 8 panels lost 15%.
    ///
    /// Tried and dropped: windows of image-wide rows (no columns between rows, so nothing
    /// computed and thrown away, no compressed stores), the left and right padding read as
    /// zero through per-width-tap load masks. Masks that change every k step cost the
    /// kernel ~5% (the same kernel with fixed masks ran 7-8% faster than packing on 3x3s on
    /// 27x27 and 28x28), so it gained only 1-3.5% on 13x13 to 28x28 3x3s, lost 3.5% to these
    /// windows on 55x55 and 4-20% on 14x14 and 7x7 (a few columns past the last vector,
    /// which packing gives to the narrow kernel); one pass per tap with fixed masks lost
    /// its gain to reloading C between passes.
    pub(super) fn in_place_for(&self, kern: &Kernel, m: usize) -> bool {
        let panels = m.div_ceil(kern.mr);
        kern.shifted.is_some()
            && panels <= 8
            && self.offsets.len() >= 64
            && (self.row_step - self.cols) * panels * 10 <= self.row_step * 3
    }

    /// The lanes (per 16-column vector) of virtual columns `col..col + count` that are real
    /// pixels, where each vector's first real pixel lands in C relative to `col`'s, and
    /// `col`'s real column (the first real pixel at or after it).
    pub(super) fn lanes(&self, col: usize, count: usize) -> ShiftedLanes {
        let real = |j: usize| (j / self.row_step) * self.cols + (j % self.row_step).min(self.cols);
        let first = real(col);
        let mut out = ShiftedLanes {
            mask: [0; 2],
            at: [0; 2],
            real_col: first,
            real_count: 0,
        };
        let mut x = col % self.row_step;
        for v in 0..2 {
            out.at[v] = real(col + 16 * v).saturating_sub(first);
            for lane in 0..16 {
                if 16 * v + lane < count && x < self.cols {
                    out.mask[v] |= 1 << lane;
                    out.real_count += 1;
                }
                x += 1;
                if x == self.row_step {
                    x = 0;
                }
            }
        }
        out
    }
}

/// Where one in-place tile's vectors meet C (see [`ShiftedB::lanes`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ShiftedLanes {
    /// Real-pixel lanes of each vector.
    pub(super) mask: [u16; 2],
    /// Each vector's first real pixel, relative to the tile's.
    pub(super) at: [usize; 2],
    /// The tile's first real column of C.
    pub(super) real_col: usize,
    /// Real pixels in the tile.
    pub(super) real_count: usize,
}

impl PackPanels for ShiftedB<'_> {
    fn dims(&self) -> (usize, usize) {
        ShiftedB::dims(self)
    }

    fn pack(&self, nr: usize, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        // Wide registers for the run copies (the GEMM driver is compiled for the baseline).
        crate::kernels::simd::wide(
            #[inline(always)]
            || self.pack_runs(nr, k0, kc, j0, nc, dst),
        );
    }
}

impl ShiftedB<'_> {
    /// [`PackPanels::pack`]: each panel's pixels as runs along window rows, each row of the
    /// panel then one copy per run.
    #[inline(always)]
    fn pack_runs(&self, nr: usize, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        // Per run of a panel: its offset from a window's start, length and first column.
        let mut runs = [(0usize, 0usize, 0usize); 64];
        for (q, panel) in dst.chunks_mut(nr * kc).enumerate() {
            let (first, cols) = (j0 + q * nr, nr.min(nc - q * nr));
            let mut count = 0;
            let (mut col, mut pixel) = (0, first);
            while col < cols && count < runs.len() {
                let (y, x) = (pixel / self.cols, pixel % self.cols);
                let len = (self.cols - x).min(cols - col);
                runs[count] = (y * self.row_step + x, len, col);
                (count, col, pixel) = (count + 1, col + len, pixel + len);
            }
            for (row, &start) in panel.chunks_exact_mut(nr).zip(&self.offsets[k0..k0 + kc]) {
                for &(off, len, col) in &runs[..count] {
                    copy_run(&mut row[col..col + len], &self.data[start + off..][..len]);
                }
                row[cols..].fill(0.0);
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs of a panel row, in fixed 8-value steps
/// (inline moves rather than a `memcpy` call).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d8, s8) in d.by_ref().zip(s.by_ref()) {
        if let (Ok(d8), Ok(s8)) = (<&mut [f32; 8]>::try_from(d8), <&[f32; 8]>::try_from(s8)) {
            *d8 = *s8;
        }
    }
    for (v, &w) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *v = w;
    }
}
