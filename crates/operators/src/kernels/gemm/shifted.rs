//! [`ShiftedB`]: a B operand whose rows are shifted windows of one buffer, such as a
//! convolution's im2col matrix over a padded copy of its input (row `k` = input channel and
//! kernel tap, seen at the tap's offset). It can be packed like any panel source, or, on
//! kernels that support it, read in place: the product then runs over "virtual" columns
//! `y * row_step + x` (including the `row_step - cols` columns between two rows, which are
//! masked off), so a whole micro-panel of B is one unaligned load per k, and each stored
//! vector of C is compressed to the real pixels it holds.
//!
//! With [`EdgeTaps`] the windows' rows are as wide as the image (no columns between rows,
//! so no virtual columns and no compressed stores): a row of B is the image shifted by its
//! width tap, and the lanes that fall past the image's left or right edge count as zero
//! (in-place kernels zero them after the load; packing writes zeros).

use super::{GemmError, Kernel, PackPanels, NARROW_MAX};

/// Width taps of [`EdgeTaps`] (3-wide windows).
pub const EDGE_TAPS: usize = 3;

/// The width taps of a [`ShiftedB`] whose rows are unpadded image rows: rows are grouped by
/// width tap, `segment` each (a convolution's im2col rows ordered by kernel column, then
/// input channel, then kernel row), and tap `t`'s pixel `x` reads image column
/// `x + shift[t]`, zero where that is outside `0..cols` (the edge padding). Kernels then
/// change their load masks only twice per product.
#[derive(Debug, Clone, Copy)]
pub struct EdgeTaps {
    /// Each tap's column shift.
    pub shift: [isize; EDGE_TAPS],
    /// Rows per tap (B has `EDGE_TAPS * segment` rows).
    pub segment: usize,
}

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
    /// Width taps whose edge lanes read zero (then `row_step == cols`), or none.
    pub edges: Option<EdgeTaps>,
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
        if let Some(e) = self.edges {
            if Some(self.offsets.len()) != e.segment.checked_mul(EDGE_TAPS)
                || self.row_step != self.cols
            {
                return Err(GemmError::View("B (shifted edge taps)"));
            }
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
    /// With edge taps: up to [`EDGE_WINDOWS_MAX_ROWS`] rows, where [`edge_windows_in_place`]
    /// says so.
    pub(super) fn in_place_for(&self, kern: &Kernel, m: usize) -> bool {
        let k = self.offsets.len();
        match self.edges {
            Some(_) => {
                m <= EDGE_WINDOWS_MAX_ROWS && edge_windows_in_place(kern, k, self.rows * self.cols)
            }
            None => padded_windows_in_place(kern, m, k, self.cols, self.row_step),
        }
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
            edge_masks: [0; EDGE_TAPS],
        };
        if let Some(e) = self.edges {
            // Rows are as wide as the image: column `col + i` is pixel `(col + i) % cols`.
            let mut x = col % self.cols;
            for i in 0..count.min(32) {
                for (m, &shift) in out.edge_masks.iter_mut().zip(&e.shift) {
                    if (0..self.cols as isize).contains(&(x as isize + shift)) {
                        *m |= 1 << i;
                    }
                }
                x = if x + 1 == self.cols { 0 } else { x + 1 };
            }
        }
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

/// [`ShiftedB::in_place_for`] without edge taps, for `m` rows, `k` deep, over windows of
/// `cols`-wide rows `row_step` apart.
fn padded_windows_in_place(
    kern: &Kernel,
    m: usize,
    k: usize,
    cols: usize,
    row_step: usize,
) -> bool {
    let panels = m.div_ceil(kern.mr);
    kern.shifted.is_some()
        && panels <= 8
        && k >= 64
        && (row_step - cols) * panels * 10 <= row_step * 3
}

/// [`ShiftedB::in_place_for`] with edge taps, `k` deep over `n` pixels. There are no
/// masked-off columns, and reading in place beats packing at any number of row panels
/// (measured on 3x3 convolutions, 1 thread: 4-7% faster on 27x27, 28x28 and 13x13 images
/// with 11 to 22 row panels), except where a few columns past the last whole vector run
/// faster packed, through the narrow kernel: where the rest of their vector is more than
/// 5% of the columns (a 512 -> 512 3x3 on 7x7 was 17% slower in place).
fn edge_windows_in_place(kern: &Kernel, k: usize, n: usize) -> bool {
    let past_vectors = n % 16;
    let narrow_pays = (1..=NARROW_MAX).contains(&past_vectors) && (16 - past_vectors) * 20 > n;
    kern.shifted_edges.is_some() && k >= 64 && !narrow_pays
}

/// Whether a convolution `m` rows by `k` deep over an image `width` wide, with padding `pad`
/// across, should read its input as windows with edge taps (its weights packed
/// by width tap): where this CPU has the edge-tap kernels and would not read the padded
/// copy's windows in place (those ran 1-2% faster on 55x55). Edge windows are read in place
/// or, with many rows or a few columns past the last vector ([`ShiftedB::in_place_for`]),
/// packed: one copy of consecutive pixels per panel row, where a padded copy's windows pack
/// as runs along the image's rows. Measured packed against the padded copy's packed
/// windows, 3x3s at 1 thread: 4-7% faster on 14x14 and 7x7 images up to 256 rows, 2-4%
/// with 512 rows on 14x14 and 7x7, 0.5-1% on 28x28.
pub fn edge_windows_pay(m: usize, k: usize, width: usize, pad: usize) -> bool {
    let kern = super::selected();
    kern.shifted_edges.is_some()
        && k >= 64
        && !padded_windows_in_place(kern, m, k, width, width + pad)
}

/// Rows up to which edge windows are read in place: with more, packing B is spread over
/// enough row panels (measured, 3x3s at 1 thread: 128 rows on 28x28 6% faster in place, 256
/// on 13x13 5%, 256 on 56x56 with K = 2304 even, 512 on 28x28 with K = 4608 1% slower).
const EDGE_WINDOWS_MAX_ROWS: usize = 256;

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
    /// With [`EdgeTaps`]: per tap, the lanes (vector 0 in the low 16 bits) that read inside
    /// the image.
    pub(super) edge_masks: [u32; EDGE_TAPS],
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
        if let Some(e) = self
            .edges
            .filter(|_| self.row_step == self.cols && nr <= 64)
        {
            self.pack_edge_rows(e, nr, k0, kc, j0, nc, dst);
            return;
        }
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
            for (r, (row, &start)) in panel
                .chunks_exact_mut(nr)
                .zip(&self.offsets[k0..k0 + kc])
                .enumerate()
            {
                for &(off, len, col) in &runs[..count] {
                    copy_run(&mut row[col..col + len], &self.data[start + off..][..len]);
                    if let Some(e) = self.edges {
                        // The run's pixels `x0..x0 + len` read columns shifted past the
                        // image's edges: those are padding (a run is one window row, so
                        // only its first or last few).
                        let shift = e.shift[(k0 + r) / e.segment];
                        let x0 = (off % self.row_step) as isize;
                        let cols = self.cols as isize;
                        let run = &mut row[col..col + len];
                        let left = (-shift - x0).clamp(0, len as isize) as usize;
                        let right = (cols - shift - x0).clamp(0, len as isize) as usize;
                        // At most a few values: plain stores, not a `memset` call each.
                        for v in &mut run[..left] {
                            *v = 0.0;
                        }
                        for v in &mut run[right.max(left)..] {
                            *v = 0.0;
                        }
                    }
                }
                row[cols..].fill(0.0);
            }
        }
    }
}

impl ShiftedB<'_> {
    /// [`ShiftedB::pack_runs`] for windows with edge taps whose rows are as wide as the
    /// image (no columns between them): each panel row is one copy of `nr` consecutive
    /// pixels, ANDed with its tap's lane mask so that what a tap reads past the image's left
    /// or right edge is zero.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn pack_edge_rows(
        &self,
        e: EdgeTaps,
        nr: usize,
        k0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        dst: &mut [f32],
    ) {
        let width = self.cols as isize;
        for (q, panel) in dst.chunks_mut(nr * kc).enumerate() {
            let (first, cols) = (j0 + q * nr, nr.min(nc - q * nr));
            // Per tap, all ones for the panel's columns that read inside the image.
            let mut keep = [[0u32; 64]; EDGE_TAPS];
            for (tap, lanes) in keep.iter_mut().enumerate() {
                for (j, lane) in lanes[..cols].iter_mut().enumerate() {
                    let x = ((first + j) % self.cols) as isize + e.shift[tap];
                    *lane = if (0..width).contains(&x) { !0 } else { 0 };
                }
            }
            for (r, (row, &start)) in panel
                .chunks_exact_mut(nr)
                .zip(&self.offsets[k0..k0 + kc])
                .enumerate()
            {
                let lanes = &keep[((k0 + r) / e.segment).min(EDGE_TAPS - 1)][..cols];
                let src = &self.data[start + first..][..cols];
                for ((v, &x), &m) in row.iter_mut().zip(src).zip(lanes) {
                    *v = f32::from_bits(x.to_bits() & m);
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
