//! Strata's own f32 GEMM: `C = alpha * A * B + beta * C` over arbitrarily strided views,
//! BLIS-style. This module owns the blocking/packing driver, the packing buffers, the
//! micro-kernels (AVX-512F 12x32, AVX2+FMA 6x16, and a portable 4x8 kernel that aarch64 and
//! old x86 use) chosen once at run time from the CPU's features, the matrix-vector path taken
//! when C has a single row or column, and a prepacked-A API for constant weights.
//!
//! Loop nest (Goto/BLIS): columns of C in blocks of NC; K in blocks of KC (sizes balanced
//! so no block is a sliver), each packing a KC x NC block of B into NR-column micro-panels;
//! rows of C in blocks of MC, each packing an MC x KC block of A into MR-row micro-panels
//! (zero-padded); then every MR x NR tile is one micro-kernel call, which keeps the tile in
//! registers across KC and applies `alpha`/`beta` on the way out. `beta == 0` never reads C
//! (NaN garbage there is ignored); later K blocks accumulate with `beta = 1`. Packing
//! buffers are thread-local and reused, so steady-state calls do not allocate.
//!
//! Packing only pays when a packed block is reused. When C has at most two column panels
//! (N <= 2*NR, e.g. a convolution's 7x7 output) the AVX kernels read A in place ("direct A");
//! when C has at most two row panels and B's rows are contiguous (M <= 2*MR, e.g. a
//! convolution with few output channels) the AVX-512 kernels read B in place with masked
//! edge loads ("direct B"). A single-row or single-column C goes to the matrix-vector path.
//! `STRATA_GEMM_ISA=avx512|avx2|generic` forces a kernel family (benchmarking, debugging).
//!
//! Entry points:
//! - [`sgemm`]: raw-pointer GEMM with `matrixmultiply::sgemm`'s signature and contract; this
//!   is what `linalg::gemm::<f32>` (and so MatMul, Gemm and the convolutions) calls.
//! - [`gemm`]: the same, safe, over [`MatRef`]/[`MatMut`] views (validated, [`GemmError`]).
//! - [`PackedA`] + [`gemm_packed_a`]: pack a constant A (e.g. a convolution's weight,
//!   `M = out channels x K = Cin*kh*kw`) once, then multiply it by many B's without
//!   repacking it:
//!
//! ```
//! use strata_ops::kernels::gemm::{gemm_packed_a, PackedA};
//! use strata_ops::kernels::linalg::{MatMut, MatRef};
//! let w = vec![1.0f32; 8 * 27]; // 8 out channels, Cin*kh*kw = 27
//! let packed = PackedA::new(MatRef::row_major(&w, 8, 27)).unwrap(); // once, at session build
//! let col = vec![0.5f32; 27 * 100]; // im2col of the input, 27 x (H*W)
//! let mut out = vec![0.0f32; 8 * 100];
//! gemm_packed_a(1.0, &packed, MatRef::row_major(&col, 27, 100), 0.0,
//!     MatMut::row_major(&mut out, 8, 100)).unwrap();
//! assert!(out.iter().all(|&v| (v - 13.5).abs() < 1e-4));
//! ```
//!
//! A `PackedA` records the kernel it was packed for; it stays valid for the process and is
//! `Send + Sync`, so one packed weight can serve concurrent evaluations.

mod gemv;
mod generic;
mod pack;
mod shifted;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::kernels::linalg::{MatMut, MatRef};
use crate::OpError;
use shifted::ShiftedLanes;
pub use shifted::{edge_windows_pay, EdgeTaps, ShiftedB, EDGE_TAPS};
use std::cell::RefCell;
use std::sync::OnceLock;

/// The instruction set a GEMM kernel is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86_64 AVX-512F.
    Avx512,
    /// x86_64 AVX2 with FMA.
    Avx2,
    /// Portable Rust (auto-vectorised for the baseline target).
    Generic,
}

/// One micro-kernel call: an MR x NR tile from packed panels into C.
#[derive(Debug)]
struct Tile {
    /// Depth (k steps).
    kc: usize,
    /// A: a packed panel (`kc * MR` elements), or A in place for direct kernels.
    a: *const f32,
    /// A's row stride (direct kernels only).
    ars: isize,
    /// A's k stride (direct kernels only).
    aks: isize,
    /// B: a packed panel (`kc * NR` elements), or B in place for direct-B kernels.
    b: *const f32,
    /// B's k (row) stride (direct-B kernels only; columns are contiguous).
    bks: isize,
    /// Shifted-B kernels only: row `k` of B starts at `b + boffs[k]` (columns contiguous).
    boffs: *const usize,
    /// Shifted-B kernels only: per 16-column vector, the lanes that are real columns of C
    /// (loads and stores are masked to them, stores compressed) and where the vector's
    /// first real column is in C relative to `c` ([`ShiftedB::lanes`]).
    lanes: [u16; 2],
    lane_at: [usize; 2],
    /// Shifted-B kernels with edge taps only: per width tap, the lanes its rows load (vector
    /// 0 in the low 16 bits); B's rows per tap ([`EdgeTaps::segment`]), and the block's
    /// first row of B.
    edge_masks: [u32; EDGE_TAPS],
    edge_segment: usize,
    edge_k0: usize,
    /// Top-left of the C tile.
    c: *mut f32,
    rsc: isize,
    csc: isize,
    /// Valid rows of the tile (<= MR).
    rows: usize,
    /// Valid columns of the tile (<= NR).
    cols: usize,
    alpha: f32,
    beta: f32,
    /// Bias, sum and clamp for a tile in its last K block (only with `csc == 1`); applied by
    /// the kernel when its family has `fused_store`, else by the driver after it.
    fused: Option<Fused>,
}

/// An [`Epilogue`]'s bias, sum and clamp, addressed for one tile.
#[derive(Debug, Clone, Copy)]
struct Fused {
    /// Bias of the tile's first row (one value per row), or null.
    bias: *const f32,
    /// The sum's element at the tile's top-left (rows `sum_ld` apart, unit column stride),
    /// or null.
    sum: *const f32,
    sum_ld: isize,
    /// Clamp bounds (infinite when there is no clamp).
    lo: f32,
    hi: f32,
}

impl Fused {
    /// `v` with the bias of tile row `r` and the sum's element `(r, j)` added and clamped;
    /// NaN passes through the clamp, as in the Clip kernel.
    ///
    /// # Safety
    /// `r`, `j` lie inside the tile this was addressed for.
    unsafe fn apply(&self, r: usize, j: usize, mut v: f32) -> f32 {
        // SAFETY: bias has one value per tile row and the sum covers the tile (caller).
        unsafe {
            if !self.bias.is_null() {
                v += *self.bias.add(r);
            }
            if !self.sum.is_null() {
                v += *self.sum.offset(r as isize * self.sum_ld).add(j);
            }
        }
        let v = if v < self.lo { self.lo } else { v };
        if v > self.hi {
            self.hi
        } else {
            v
        }
    }
}

/// Applies `t.fused` to the stored tile, for kernels that do not fuse it.
///
/// # Safety
/// As for the kernel call that stored `t` (C valid, unit column stride when fused).
unsafe fn apply_fused(t: &Tile) {
    let Some(f) = &t.fused else { return };
    for r in 0..t.rows {
        for j in 0..t.cols {
            // SAFETY: `r < rows`, `j < cols`: inside the C tile and the fused operands.
            unsafe {
                let p = t.c.offset(r as isize * t.rsc).add(j);
                *p = f.apply(r, j, *p);
            }
        }
    }
}

/// A micro-kernel.
type KernelFn = unsafe fn(&Tile);

/// A matrix-vector kernel.
type GemvFn = unsafe fn(&gemv::Gemv, &mut Vec<f32>);

/// A few-rows kernel ([`gemv::Dots`]).
type DotsFn = unsafe fn(&gemv::Dots);

/// Elements of B from which a product of at most [`gemv::DOTS_MAX_ROWS`] rows by a B with
/// contiguous columns reads B once through [`gemv::Dots`] rather than packing it (packing
/// copies all of B for that many multiply-adds per element: AlexNet's 9216 x 4096 fully
/// connected layer over a batch of 8 took 56 ms packed, against 8 ms for one image).
pub(crate) const DOTS_MIN_B: usize = 1 << 16;

/// Most rows of A for which a product by a B with contiguous columns reads B once per column
/// through [`gemv::Dots`].
pub(crate) const DOTS_MAX_ROWS: usize = gemv::DOTS_MAX_ROWS;

/// A kernel family and its blocking parameters.
#[derive(Debug)]
struct Kernel {
    isa: Isa,
    mr: usize,
    nr: usize,
    kc: usize,
    /// The K block of products with a prepacked A (convolutions' weights), whose A needs no
    /// packing buffer: C tiles then stay in registers longer. AVX-512: 1024, which reloads
    /// C 4x less often than 256, and that cost more than the B panel's falling out of L1
    /// (ResNet-50 84.7 -> 83.1 ms at 1 thread, 44.8 -> 43.2 at 2; DenseNet-121 1-2%
    /// faster). Products with a strided A keep `kc`, onnxruntime's K block too: with 1024,
    /// the BERT encoder's 1024-deep MatMuls summed in another order and two outputs near
    /// zero moved 8e-7 from onnxruntime's, past ONNX's 1e-7 + 1e-3 * |expected|.
    kc_prepacked: usize,
    mc: usize,
    nc: usize,
    /// Micro-kernels by `[rows - 1][columns > nr / 2]`.
    table: &'static [[KernelFn; 2]],
    /// Micro-kernels reading A in place (no packing), same indexing; `None` where absent.
    direct: Option<&'static [[KernelFn; 2]]>,
    /// Micro-kernels reading B in place (unit column stride), A packed; `None` where absent.
    direct_b: Option<&'static [[KernelFn; 2]]>,
    /// Micro-kernels reading a [`ShiftedB`] in place, A packed; `None` where absent.
    shifted: Option<&'static [[KernelFn; 2]]>,
    /// The same for a [`ShiftedB`] with [`EdgeTaps`]; `None` where absent.
    shifted_edges: Option<&'static [[KernelFn; 2]]>,
    /// Kernels for a tile's last 1 to [`NARROW_MAX`] columns past its whole vectors, A
    /// packed, by `[columns - 1]`: with B packed and with B in place; `None` where absent.
    narrow: Option<(
        &'static [KernelFn; NARROW_MAX],
        &'static [KernelFn; NARROW_MAX],
    )>,
    gemv: GemvFn,
    dots: DotsFn,
    /// Whether the micro-kernels apply `Tile::fused` themselves.
    fused_store: bool,
}

impl Kernel {
    fn pick(&self, rows: usize, cols: usize) -> KernelFn {
        self.table[rows - 1][usize::from(cols > self.nr / 2)]
    }
}

#[cfg(target_arch = "x86_64")]
static AVX512: Kernel = Kernel {
    isa: Isa::Avx512,
    mr: avx512::MR,
    nr: avx512::NR,
    kc: 256,
    kc_prepacked: 1024,
    mc: 960,
    nc: 4096,
    table: &avx512::TABLE,
    direct: Some(&avx512::DIRECT),
    direct_b: Some(&avx512::DIRECT_B),
    shifted: Some(&avx512::SHIFTED),
    shifted_edges: Some(&avx512::SHIFTED_EDGES),
    narrow: Some((&avx512::NARROW, &avx512::NARROW_DIRECT_B)),
    gemv: gemv::gemv_avx512,
    dots: gemv::dots_avx512,
    fused_store: true,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernel = Kernel {
    isa: Isa::Avx2,
    mr: avx2::MR,
    nr: avx2::NR,
    kc: 256,
    kc_prepacked: 256,
    mc: 960,
    nc: 4096,
    table: &avx2::TABLE,
    direct: Some(&avx2::DIRECT),
    direct_b: None,
    shifted: None,
    shifted_edges: None,
    narrow: None,
    gemv: gemv::gemv_avx2,
    dots: gemv::dots_avx2,
    fused_store: false,
};

static GENERIC: Kernel = Kernel {
    isa: Isa::Generic,
    mr: generic::MR,
    nr: generic::NR,
    kc: 256,
    kc_prepacked: 256,
    mc: 512,
    nc: 4096,
    table: &generic::TABLE,
    direct: None,
    direct_b: None,
    shifted: None,
    shifted_edges: None,
    narrow: None,
    gemv: gemv::gemv_generic,
    dots: gemv::dots_generic,
    fused_store: false,
};

/// The kernel for `isa`, if this CPU can run it.
fn kernel_for(isa: Isa) -> Option<&'static Kernel> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => Some(&AVX512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma") =>
        {
            Some(&AVX2)
        }
        Isa::Generic => Some(&GENERIC),
        _ => None,
    }
}

/// The best kernel for this CPU, detected once. `STRATA_GEMM_ISA=avx512|avx2|generic`
/// forces a kernel (for benchmarking and debugging) when the CPU supports it.
fn selected() -> &'static Kernel {
    static SELECTED: OnceLock<&'static Kernel> = OnceLock::new();
    SELECTED.get_or_init(|| {
        let forced = match std::env::var("STRATA_GEMM_ISA").as_deref() {
            Ok("avx512") => Some(Isa::Avx512),
            Ok("avx2") => Some(Isa::Avx2),
            Ok("generic") => Some(Isa::Generic),
            _ => None,
        };
        forced
            .into_iter()
            .chain([Isa::Avx512, Isa::Avx2])
            .find_map(kernel_for)
            .unwrap_or(&GENERIC)
    })
}

/// The instruction set [`sgemm`] uses on this CPU.
pub fn selected_isa() -> Isa {
    selected().isa
}

/// Writes a computed tile (`acc`, leading dimension `ld`) to C with alpha/beta, element by
/// element (edge tiles and strided C).
///
/// # Safety
/// `acc` holds at least `(t.rows - 1) * ld + t.cols` elements; every
/// `t.c + r*rsc + j*csc` for `r < t.rows`, `j < t.cols` is valid for reads and writes.
unsafe fn store_tile(t: &Tile, acc: &[f32], ld: usize) {
    for r in 0..t.rows {
        for j in 0..t.cols {
            let v = t.alpha * acc[r * ld + j];
            // SAFETY: `r < rows`, `j < cols`: inside the C tile per the caller's contract.
            unsafe {
                let p = t.c.offset(r as isize * t.rsc + j as isize * t.csc);
                *p = if t.beta == 0.0 { v } else { v + t.beta * *p };
            }
        }
    }
}

// ----- buffers ------------------------------------------------------------------------------

/// One cache line of floats.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable, 64-byte aligned f32 buffer.
#[derive(Debug, Default)]
struct AlignedVec(Vec<Line>);

impl AlignedVec {
    /// Grows to at least `len` elements and returns the start.
    fn ensure(&mut self, len: usize) -> *mut f32 {
        let lines = len.div_ceil(16);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0.0; 16]));
        }
        self.0.as_mut_ptr().cast()
    }

    fn as_ptr(&self) -> *const f32 {
        self.0.as_ptr().cast()
    }
}

/// Per-thread packing buffers.
#[derive(Debug, Default)]
struct Buffers {
    a: AlignedVec,
    b: AlignedVec,
    v: Vec<f32>,
    /// A shifted B block's lanes per column panel.
    lanes: Vec<ShiftedLanes>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Runs `f` with this thread's buffers (fresh ones if they are unavailable).
fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    let _ = BUFFERS.try_with(|cell| {
        if let Ok(mut bufs) = cell.try_borrow_mut() {
            if let Some(f) = f.take() {
                out = Some(f(&mut bufs));
            }
        }
    });
    match (out, f) {
        (Some(r), _) => r,
        (None, Some(f)) => f(&mut Buffers::default()),
        // `f` was taken only when it also produced `out`.
        (None, None) => unreachable!("gemm buffer closure consumed without a result"),
    }
}

// ----- driver -------------------------------------------------------------------------------

/// A block size no larger than `max`, a multiple of `multiple`, splitting `total` evenly.
fn block(total: usize, max: usize, multiple: usize) -> usize {
    let blocks = total.div_ceil(max).max(1);
    total.div_ceil(blocks).div_ceil(multiple).max(1) * multiple
}

/// Where A comes from.
#[derive(Debug, Clone, Copy)]
enum ASrc {
    /// Strided memory, packed per block.
    Strided {
        a: *const f32,
        rsa: isize,
        csa: isize,
    },
    /// Already packed by [`PackedA`] for this kernel: MR-row panels of all `k` columns, so
    /// any K block is a slice of each panel.
    Packed { data: *const f32, k: usize },
}

/// Where B comes from.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    /// Strided memory (`b + p*rsb + j*csb`), packed per block or read in place.
    Strided {
        b: *const f32,
        rsb: isize,
        csb: isize,
    },
    /// A source that packs its own panels (e.g. a convolution's implicit im2col).
    Panels(&'a dyn PackPanels),
    /// Already packed by [`PackedB`] for this kernel (`n_pad` columns per K block).
    Packed { data: *const f32, n_pad: usize },
    /// Read in place over virtual columns ([`ShiftedB`]); C's columns are the real ones.
    Shifted(&'a ShiftedB<'a>),
}

/// The B and C side of a product: rows `row0..row0 + m` and columns `col0..col0 + n` of C
/// (A's rows and B's columns likewise), over full-size operands.
#[derive(Clone, Copy)]
struct Problem<'a> {
    m: usize,
    k: usize,
    n: usize,
    row0: usize,
    col0: usize,
    alpha: f32,
    b: BSrc<'a>,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    /// Applied to each finished tile (requires `csc == 1`; a sum has C's row stride).
    epilogue: Option<&'a Epilogue<'a>>,
}

/// `C = beta * C` (zero when `beta == 0`, without reading C).
///
/// # Safety
/// Every `c + i*rsc + j*csc` (`i < m`, `j < n`) is valid for reads and writes.
unsafe fn scale_c(p: &Problem<'_>) {
    for i in p.row0..p.row0 + p.m {
        for j in p.col0..p.col0 + p.n {
            // SAFETY: `i < m`, `j < n`: inside C per the caller's contract.
            unsafe {
                let q = p.c.offset(i as isize * p.rsc + j as isize * p.csc);
                *q = if p.beta == 0.0 { 0.0 } else { p.beta * *q };
            }
        }
    }
}

/// Column panels of a block up to which its tiles run row panel by row panel.
const A_OUTER_MAX_COL_PANELS: usize = 4;
/// The K block and packed B block sizes (elements) up to which tiles run row panel by row
/// panel (measured: 3-8% faster on convolution stems and 1x1s with K of 64; a 3.2 MB B
/// block with K of 256 lost 35%).
const A_OUTER_MAX_KC: usize = 160;
const A_OUTER_MAX_B_BLOCK: usize = 256 * 1024;

/// Most columns past a tile's whole vectors that [`Kernel::narrow`] kernels take.
const NARROW_MAX: usize = 4;

/// Column panels up to which A is read in place rather than packed.
const DIRECT_MAX_PANELS: usize = 2;

/// The blocked product.
///
/// # Safety
/// The CPU supports `kern`'s instruction set; every A element (`Strided`: `a + i*rsa +
/// p*csa`; `Packed`: the layout [`PackedA`] builds for `kern` with `m` rows and `k` columns),
/// every `b + p*rsb + j*csb` is readable and every `c + i*rsc + j*csc` is valid for reads and
/// writes, pairwise distinct and not overlapping A or B (for `i` in `row0..row0 + m`, `j` in
/// `col0..col0 + n`); `m, k, n >= 1`; `row0` is a multiple of the kernel's MR for packed A;
/// `csc == 1` when there is an epilogue; for packed B (the layout [`PackedB`] builds for
/// `kern` with `k` rows and at least `col0 + n` columns) `col0` is a multiple of NR; shifted
/// B only with a kernel that has shifted micro-kernels, a checked [`ShiftedB`] and `n` (and
/// `col0`) counting its virtual columns, C's rows holding the real ones (`csc == 1`).
unsafe fn drive(kern: &Kernel, p: &Problem<'_>, asrc: ASrc, bufs: &mut Buffers) {
    let (mr, nr) = (kern.mr, kern.nr);
    let kc = match asrc {
        ASrc::Packed { .. } => kern.kc_prepacked,
        ASrc::Strided { .. } => kern.kc,
    };
    let kcb = block(p.k, kc, 1);
    let mcb = block(p.m, kern.mc, mr);
    // B blocks of at most `nc` columns and `kc * nc` elements (the packing buffer) whatever
    // the K block.
    let ncb = block(p.n, (kern.kc * kern.nc / kcb.max(kern.kc)).max(nr), nr);
    // With few column panels an A block is reused too little to repay packing it: kernels
    // that read A in place do better there.
    let direct = match (asrc, kern.direct) {
        (ASrc::Strided { .. }, Some(table)) if p.n <= DIRECT_MAX_PANELS * nr => Some(table),
        _ => None,
    };
    // Likewise a B block with few row panels and contiguous rows is read in place (A packed).
    // (Tried and dropped: packing each column panel of B just before its tiles, prefetching
    // the next panel's rows. A 1x1 256 -> 128 on 56x56 with its input cold in memory gained
    // 11%, in ResNet-50, whose inputs are warm, nothing.)
    let direct_b = match (p.b, kern.direct_b) {
        (BSrc::Strided { csb: 1, .. }, Some(table))
            if direct.is_none() && p.m <= DIRECT_MAX_PANELS * mr =>
        {
            Some(table)
        }
        _ => None,
    };
    let in_place_b = matches!(p.b, BSrc::Packed { .. } | BSrc::Shifted(_));
    let bptr = if direct_b.is_some() || in_place_b {
        std::ptr::null_mut()
    } else {
        bufs.b.ensure(kcb * ncb)
    };
    let aptr = match (asrc, direct) {
        (ASrc::Strided { .. }, None) => bufs.a.ensure(kcb * mcb),
        _ => std::ptr::null_mut(),
    };
    // Rows per width tap of a B with edge taps (unused otherwise).
    let edge_segment = match p.b {
        BSrc::Shifted(s) => s.edges.map_or(usize::MAX, |e| e.segment),
        _ => usize::MAX,
    };
    for jc in (0..p.n).step_by(ncb) {
        let nc = ncb.min(p.n - jc);
        // Shifted B: each column panel's real columns of C (virtual columns in between rows
        // are masked off), found once per panel.
        if let BSrc::Shifted(s) = p.b {
            bufs.lanes.clear();
            bufs.lanes.extend(
                (0..nc)
                    .step_by(nr)
                    .map(|jr| s.lanes(p.col0 + jc + jr, nr.min(nc - jr))),
            );
        }
        let mut pc = 0;
        while pc < p.k {
            let kc = kcb.min(p.k - pc);
            let (bp, bks) = match p.b {
                BSrc::Strided { b, rsb, csb } => {
                    // SAFETY: row `pc`, column `col0 + jc` of B are in range.
                    let bstart =
                        unsafe { b.offset(pc as isize * rsb + (p.col0 + jc) as isize * csb) };
                    if direct_b.is_some() {
                        (bstart, rsb)
                    } else {
                        // SAFETY: rows `pc..pc+kc` and columns `col0+jc..+nc` of B are in
                        // range; the buffer holds `kcb * ncb >= kc * nc.div_ceil(nr) * nr`
                        // elements (ncb is a multiple of nr).
                        unsafe { pack::pack_b(nr, kc, nc, bstart, rsb, csb, bptr) };
                        (bptr as *const f32, nr as isize)
                    }
                }
                BSrc::Panels(src) => {
                    // SAFETY: the buffer holds `kcb * ncb >= kc * nc.div_ceil(nr) * nr`
                    // initialized elements and nothing else refers to it during the call.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(bptr, nc.div_ceil(nr) * nr * kc) };
                    src.pack(nr, pc, kc, p.col0 + jc, nc, dst);
                    (bptr as *const f32, nr as isize)
                }
                // SAFETY: the K block at `pc` starts at `pc * n_pad`; its panel for columns
                // `col0 + jc..` (a multiple of nr) at `(col0 + jc) * kc`, inside the data.
                BSrc::Packed { data, n_pad } => (
                    unsafe { data.add(pc * n_pad + (p.col0 + jc) * kc) },
                    nr as isize,
                ),
                // Virtual column `col0 + jc`; rows are found through the offsets.
                BSrc::Shifted(s) => (s.data.as_ptr().wrapping_add(p.col0 + jc), 0),
            };
            // Shifted B: the offsets of this K block's rows (dereferenced only for k < kc).
            let (shifted, boffs) = match p.b {
                BSrc::Shifted(s) => (Some(s), s.offsets.as_ptr().wrapping_add(pc)),
                _ => (None, std::ptr::null()),
            };
            let last_k_block = pc + kc == p.k;
            let beta = if pc == 0 { p.beta } else { 1.0 };
            for ic in (0..p.m).step_by(mcb) {
                let mc = mcb.min(p.m - ic);
                // The A block's start, its row stride and k stride as the kernels read it, and
                // the distance between its row panels.
                let (ap, ars, aks, a_panels): (*const f32, isize, isize, usize) = match asrc {
                    ASrc::Strided { a, rsa, csa } => {
                        // SAFETY: row `row0 + ic` and column `pc` of A are in range.
                        let start =
                            unsafe { a.offset((p.row0 + ic) as isize * rsa + pc as isize * csa) };
                        if direct.is_some() {
                            (start, rsa, csa, 0)
                        } else {
                            // SAFETY: rows `ic..ic+mc`, columns `pc..pc+kc` of A are in range;
                            // the buffer holds `kcb * mcb >= kc * mc.div_ceil(mr) * mr`
                            // elements (mcb is a multiple of mr).
                            unsafe { pack::pack_a(mr, mc, kc, start, rsa, csa, aptr) };
                            (aptr, 1, mr as isize, mr * kc)
                        }
                    }
                    ASrc::Packed { data, k } => {
                        // SAFETY: the panel of rows `row0 + ic..` (a multiple of mr) starts at
                        // `(row0 + ic) * k`, its column `pc` `pc * mr` later, inside the data.
                        let start = unsafe { data.add((p.row0 + ic) * k + pc * mr) };
                        (start, 1, mr as isize, mr * k)
                    }
                };
                // Tiles by column panel, then row panel: B's panel stays in L1 while A's
                // stream by. By row panel instead, so each A panel is fetched once and C is
                // written row by row (prefetchable), where that costs little: with few
                // column panels, or a short K block whose B block stays in L2.
                let (col_panels, row_panels) = (nc.div_ceil(nr), mc.div_ceil(mr));
                let small_b =
                    kc <= A_OUTER_MAX_KC && (shifted.is_some() || kc * nc <= A_OUTER_MAX_B_BLOCK);
                let a_outer = col_panels <= A_OUTER_MAX_COL_PANELS || small_b;
                for tile in 0..col_panels * row_panels {
                    let (jr, ir) = match a_outer {
                        true => (tile % col_panels * nr, tile / col_panels * mr),
                        false => (tile / row_panels * nr, tile % row_panels * mr),
                    };
                    let cols = nr.min(nc - jr);
                    let lanes = shifted.and(bufs.lanes.get(jr / nr).copied());
                    if lanes.is_some_and(|l| l.real_count == 0) {
                        continue;
                    }
                    let rows = mr.min(mc - ir);
                    // A few columns past the whole vectors go to a narrow kernel (A packed).
                    let narrow = match kern.narrow {
                        Some((packed_b, in_place_b))
                            if direct.is_none()
                                && shifted.is_none()
                                && (1..=NARROW_MAX).contains(&(cols % 16)) =>
                        {
                            let table = if direct_b.is_some() {
                                in_place_b
                            } else {
                                packed_b
                            };
                            Some((cols / 16 * 16, table[cols % 16 - 1]))
                        }
                        _ => None,
                    };
                    let tile_cols = narrow.map_or(cols, |(whole, _)| whole);
                    let nv = usize::from(tile_cols > nr / 2);
                    let shifted_table = match shifted {
                        Some(s) if s.edges.is_some() => kern.shifted_edges,
                        Some(_) => kern.shifted,
                        None => None,
                    };
                    let (a, f) = match (direct, direct_b.or(shifted_table)) {
                        // Direct kernels are picked with `R == rows`, so they read only
                        // the `rows` valid rows of A.
                        (Some(table), _) => {
                            (ap.wrapping_offset(ir as isize * ars), table[rows - 1][nv])
                        }
                        (None, Some(table)) => {
                            (ap.wrapping_add(ir / mr * a_panels), table[rows - 1][nv])
                        }
                        (None, None) => (
                            ap.wrapping_add(ir / mr * a_panels),
                            kern.pick(rows, tile_cols.max(1)),
                        ),
                    };
                    // Direct and shifted B have unit column stride.
                    let b = match (direct_b, shifted) {
                        (None, None) => bp.wrapping_add(jr * kc),
                        _ => bp.wrapping_add(jr),
                    };
                    // C's column: the real one for shifted B.
                    let (row, col) = (
                        p.row0 + ic + ir,
                        lanes.map_or(p.col0 + jc + jr, |l| l.real_col),
                    );
                    let ShiftedLanes {
                        mask: lane_mask,
                        at: lane_at,
                        real_count,
                        edge_masks,
                        ..
                    } = lanes.unwrap_or_default();
                    let c_cols = if lanes.is_some() { real_count } else { cols };
                    let fused = match p.epilogue {
                        Some(e) if last_k_block && e.has_fused() => {
                            Some(e.fused_at(row, col, p.rsc))
                        }
                        _ => None,
                    };
                    // SAFETY: `a` addresses the valid rows `ic+ir..` of A in place (direct)
                    // or a packed panel of `kc * mr` elements; `b` the valid columns
                    // `jc+jr..` of B's rows `pc..` in place (direct B: the kernel masks
                    // lanes past `cols`; shifted B: rows at `boffs`, lanes masked to real
                    // columns, all inside the data as `ShiftedB::check` ensured) or a
                    // packed panel of `kc * nr` elements; the C tile at row `ic + ir`,
                    // column `jc + jr` (shifted: its real columns, `lane_at` apart) has
                    // `rows x cols` (shifted: `rows x real_count`) elements inside C; the
                    // CPU runs `kern`.
                    unsafe {
                        let t = Tile {
                            kc,
                            a,
                            ars,
                            aks,
                            b,
                            bks,
                            boffs,
                            lanes: lane_mask,
                            lane_at,
                            edge_masks,
                            edge_segment,
                            edge_k0: pc,
                            c: p.c.offset(row as isize * p.rsc + col as isize * p.csc),
                            rsc: p.rsc,
                            csc: p.csc,
                            rows,
                            cols: tile_cols,
                            alpha: p.alpha,
                            beta,
                            fused,
                        };
                        if tile_cols > 0 {
                            f(&t);
                            if !kern.fused_store {
                                apply_fused(&t);
                            }
                        }
                        if let Some((whole, narrow_f)) = narrow {
                            // The columns from `whole`: B's and C's, and the fused sum's.
                            let fused = match p.epilogue {
                                Some(e) if last_k_block && e.has_fused() => {
                                    Some(e.fused_at(row, col + whole, p.rsc))
                                }
                                _ => None,
                            };
                            let t = Tile {
                                b: b.wrapping_add(whole),
                                c: t.c.wrapping_offset(whole as isize * p.csc),
                                cols: cols - whole,
                                fused,
                                ..t
                            };
                            narrow_f(&t);
                        }
                        if let (true, Some(epi)) = (last_k_block, p.epilogue.and_then(|e| e.custom))
                        {
                            for r in 0..rows {
                                // SAFETY: with an epilogue C has unit column stride, so
                                // the tile's row `r` is `cols` contiguous elements of C,
                                // which nothing else refers to during the call.
                                let out = std::slice::from_raw_parts_mut(
                                    t.c.offset(r as isize * p.rsc),
                                    c_cols,
                                );
                                epi.apply(row + r, col, out);
                            }
                        }
                    }
                }
            }
            pc += kc;
        }
    }
}

/// [`sgemm`] with a given kernel.
///
/// # Safety
/// As [`sgemm`], and the CPU supports `kern`'s instruction set.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_with(
    kern: &Kernel,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    let p = Problem {
        m,
        k,
        n,
        row0: 0,
        col0: 0,
        alpha,
        b: BSrc::Strided { b, rsb, csb },
        beta,
        c,
        rsc,
        csc,
        epilogue: None,
    };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // SAFETY: C's elements are valid per the caller's contract.
        unsafe { scale_c(&p) };
        return;
    }
    with_buffers(|bufs| {
        if n == 1 || m == 1 {
            let g = if n == 1 {
                gemv::Gemv {
                    m,
                    k,
                    alpha,
                    a,
                    rsa,
                    csa,
                    x: b,
                    incx: rsb,
                    beta,
                    y: c,
                    incy: rsc,
                }
            } else {
                // C's single row is B^T times A's single row.
                gemv::Gemv {
                    m: n,
                    k,
                    alpha,
                    a: b,
                    rsa: csb,
                    csa: rsb,
                    x: a,
                    incx: csa,
                    beta,
                    y: c,
                    incy: csc,
                }
            };
            // SAFETY: the operands are valid per the caller's contract, expressed as a
            // matrix-vector product; the CPU runs `kern`'s instruction set.
            unsafe { (kern.gemv)(&g, &mut bufs.v) };
        } else if m <= DOTS_MAX_ROWS && rsb == 1 && csa == 1 && k.saturating_mul(n) >= DOTS_MIN_B {
            let d = gemv::Dots {
                m,
                k,
                n,
                alpha,
                a,
                rsa,
                b,
                csb,
                beta,
                c,
                rsc,
                csc,
            };
            // SAFETY: the operands are valid per the caller's contract (A's rows and B's
            // columns contiguous: `csa == rsb == 1`; `1 < m <= DOTS_MAX_ROWS`); the CPU runs
            // `kern`'s instruction set.
            unsafe { (kern.dots)(&d) };
        } else {
            // SAFETY: forwarded contract.
            unsafe { drive(kern, &p, ASrc::Strided { a, rsa, csa }, bufs) };
        }
    });
}

/// `C = alpha * A * B + beta * C` where A is `m x k`, B is `k x n`, C is `m x n`, each given
/// by a pointer and row/column strides (in elements). Same signature and contract as
/// `matrixmultiply::sgemm`; `beta == 0` never reads C.
///
/// # Safety
/// Every `a + i*rsa + p*csa` and `b + p*rsb + j*csb` (`i < m`, `p < k`, `j < n`) must be
/// readable; every `c + i*rsc + j*csc` valid for reads and writes, pairwise distinct, and not
/// overlapping A or B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    // SAFETY: forwarded contract; `selected` only returns kernels this CPU supports.
    unsafe {
        sgemm_with(
            selected(),
            m,
            k,
            n,
            alpha,
            a,
            rsa,
            csa,
            b,
            rsb,
            csb,
            beta,
            c,
            rsc,
            csc,
        )
    }
}

// ----- safe API -----------------------------------------------------------------------------

/// Why a GEMM call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GemmError {
    /// The operands' dimensions do not chain.
    #[error("gemm shapes disagree: A {a:?}, B {b:?}, C {c:?}")]
    Shape {
        /// A's rows and columns.
        a: (usize, usize),
        /// B's rows and columns.
        b: (usize, usize),
        /// C's rows and columns.
        c: (usize, usize),
    },
    /// A view addresses elements outside its slice, or C's elements overlap.
    #[error("gemm operand {0} exceeds its buffer or overlaps itself")]
    View(&'static str),
}

impl From<GemmError> for OpError {
    fn from(e: GemmError) -> Self {
        OpError::Shape(e.to_string())
    }
}

/// Whether a `rows x cols` view with strides `rs`, `cs` addresses only elements below `len`,
/// with strides that fit `isize` (an empty view always fits). Shared with `linalg::gemm`.
pub(crate) fn view_fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
    matches!(last, Some(l) if l < len) && rs <= isize::MAX as usize && cs <= isize::MAX as usize
}

/// Whether distinct positions of a `rows x cols` view with strides `rs`, `cs` address
/// distinct elements (required of an output). Shared with `linalg::gemm`.
pub(crate) fn elements_distinct(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    (rows <= 1 || rs > 0)
        && (cols <= 1 || cs > 0)
        && (rows <= 1 || cols <= 1 || rs >= cols * cs || cs >= rows * rs)
}

/// Checks that a view fits its slice ([`view_fits`]).
fn check_view(
    name: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<(), GemmError> {
    if view_fits(len, rows, cols, rs, cs) {
        Ok(())
    } else {
        Err(GemmError::View(name))
    }
}

/// Checks C: in bounds and with pairwise distinct elements.
fn check_out(c: &MatMut<'_, f32>) -> Result<(), GemmError> {
    check_view("C", c.data.len(), c.rows, c.cols, c.rs, c.cs)?;
    if elements_distinct(c.rows, c.cols, c.rs, c.cs) {
        Ok(())
    } else {
        Err(GemmError::View("C"))
    }
}

fn check_shapes(
    a: (usize, usize),
    b: &MatRef<'_, f32>,
    c: &MatMut<'_, f32>,
) -> Result<(), GemmError> {
    if a.0 != c.rows || b.cols != c.cols || a.1 != b.rows {
        return Err(GemmError::Shape {
            a,
            b: (b.rows, b.cols),
            c: (c.rows, c.cols),
        });
    }
    check_view("B", b.data.len(), b.rows, b.cols, b.rs, b.cs)?;
    check_out(c)
}

/// Safe [`sgemm`] over views with `kern`.
fn gemm_with(
    kern: &Kernel,
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    c: MatMut<'_, f32>,
) -> Result<(), GemmError> {
    check_view("A", a.data.len(), a.rows, a.cols, a.rs, a.cs)?;
    check_shapes((a.rows, a.cols), &b, &c)?;
    // SAFETY: every addressed element of A, B and C lies in its slice (checked above, strides
    // fit isize), C's elements are distinct, C is a unique borrow so it overlaps neither A
    // nor B, and `kern` comes from `kernel_for`/`selected`, which check the CPU.
    unsafe {
        sgemm_with(
            kern,
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
    };
    Ok(())
}

/// `C = alpha * A * B + beta * C` over views; `beta == 0` ignores C's previous contents.
pub fn gemm(
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    c: MatMut<'_, f32>,
) -> Result<(), GemmError> {
    gemm_with(selected(), alpha, a, b, beta, c)
}

/// The K blocks `(start, length)` the driver uses for `kernel` and inner dimension `k`
/// (prepacked operands are laid out by the same blocks).
fn k_blocks(kernel: &Kernel, k: usize) -> impl Iterator<Item = (usize, usize)> {
    let kcb = block(k, kernel.kc, 1);
    (0..k).step_by(kcb).map(move |pc| (pc, kcb.min(k - pc)))
}

/// A matrix packed once into the kernel's A layout (MR-row micro-panels, each holding all
/// K columns, so products may block K as they like), for products with a constant left
/// operand ([`gemm_packed_a`]).
#[derive(Debug)]
pub struct PackedA {
    kernel: &'static Kernel,
    rows: usize,
    cols: usize,
    data: AlignedVec,
}

impl PackedA {
    /// Packs `a` for this CPU's kernel.
    pub fn new(a: MatRef<'_, f32>) -> Result<Self, GemmError> {
        Self::with_kernel(selected(), a)
    }

    /// Bytes the packed matrix takes (with its padding).
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.data.0.as_slice())
    }

    fn with_kernel(kernel: &'static Kernel, a: MatRef<'_, f32>) -> Result<Self, GemmError> {
        check_view("A", a.data.len(), a.rows, a.cols, a.rs, a.cs)?;
        let (m, k, mr) = (a.rows, a.cols, kernel.mr);
        let m_pad = m.div_ceil(mr) * mr;
        let mut data = AlignedVec::default();
        let dst = data.ensure(m_pad * k);
        for row0 in (0..m).step_by(mr).filter(|_| k > 0) {
            // SAFETY: A's elements are in bounds (checked, and there are some: `k > 0`, so row
            // `row0 < m` starts inside the data); the panel of rows `row0..` (at
            // most `mr` of them) occupies `dst[row0 * k .. (row0 + mr) * k]`, inside the
            // `m_pad * k` elements.
            unsafe {
                pack::pack_a(
                    mr,
                    mr.min(m - row0),
                    k,
                    a.data.as_ptr().add(row0 * a.rs),
                    a.rs as isize,
                    a.cs as isize,
                    dst.add(row0 * k),
                );
            }
        }
        Ok(PackedA {
            kernel,
            rows: m,
            cols: k,
            data,
        })
    }

    /// The rows of one packed panel: where [`gemm_packed_a_rows`] may start.
    pub fn row_panel(&self) -> usize {
        self.kernel.mr
    }

    /// Rows of the packed matrix (M).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the packed matrix (K).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether [`par_gemm_packed`] reads `b` in place rather than packing it (see
    /// [`BOperand::Shifted`]).
    pub fn reads_in_place(&self, b: &ShiftedB<'_>) -> bool {
        b.in_place_for(self.kernel, self.rows)
    }
}

/// `C = alpha * A * B + beta * C` with A prepacked; `beta == 0` ignores C's contents.
pub fn gemm_packed_a(
    alpha: f32,
    a: &PackedA,
    b: MatRef<'_, f32>,
    beta: f32,
    c: MatMut<'_, f32>,
) -> Result<(), GemmError> {
    gemm_packed_a_rows(alpha, a, 0..a.rows, b, beta, c)
}

/// [`gemm_packed_a`] for C's rows `rows` only (the others are left as they are); `rows`
/// starts at a multiple of [`PackedA::row_panel`].
pub fn gemm_packed_a_rows(
    alpha: f32,
    a: &PackedA,
    rows: std::ops::Range<usize>,
    b: MatRef<'_, f32>,
    beta: f32,
    c: MatMut<'_, f32>,
) -> Result<(), GemmError> {
    check_shapes((a.rows, a.cols), &b, &c)?;
    if rows.end > a.rows || !rows.start.is_multiple_of(a.kernel.mr) {
        return Err(GemmError::View("rows"));
    }
    let p = Problem {
        m: rows.len(),
        k: a.cols,
        n: c.cols,
        row0: rows.start,
        col0: 0,
        alpha,
        b: BSrc::Strided {
            b: b.data.as_ptr(),
            rsb: b.rs as isize,
            csb: b.cs as isize,
        },
        beta,
        c: c.data.as_mut_ptr(),
        rsc: c.rs as isize,
        csc: c.cs as isize,
        epilogue: None,
    };
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    if p.k == 0 {
        // SAFETY: C's elements are in bounds (checked).
        unsafe { scale_c(&p) };
        return Ok(());
    }
    let asrc = ASrc::Packed {
        data: a.data.as_ptr(),
        k: p.k,
    };
    // SAFETY: B and C are in bounds and C distinct (checked; C is a unique borrow, so it
    // overlaps nothing); A was packed by `with_kernel` for this kernel with these dimensions;
    // `row0` is a multiple of MR and `row0 + m <= a.rows` (checked above); the kernel was
    // chosen by `selected`/`kernel_for`, which check the CPU.
    with_buffers(|bufs| unsafe { drive(a.kernel, &p, asrc, bufs) });
    Ok(())
}

/// A matrix packed once into the kernel's B layout (NR-column micro-panels per K block), for
/// products with a constant right operand ([`par_gemm_packed_b`]), such as a MatMul's
/// weights.
#[derive(Debug)]
pub struct PackedB {
    kernel: &'static Kernel,
    rows: usize,
    cols: usize,
    data: AlignedVec,
}

impl PackedB {
    /// Packs `b` for this CPU's kernel.
    pub fn new(b: MatRef<'_, f32>) -> Result<Self, GemmError> {
        Self::with_kernel(selected(), b)
    }

    /// Bytes the packed matrix takes (with its padding).
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.data.0.as_slice())
    }

    fn with_kernel(kernel: &'static Kernel, b: MatRef<'_, f32>) -> Result<Self, GemmError> {
        check_view("B", b.data.len(), b.rows, b.cols, b.rs, b.cs)?;
        let (k, n, nr) = (b.rows, b.cols, kernel.nr);
        let n_pad = n.div_ceil(nr) * nr;
        let mut data = AlignedVec::default();
        let dst = data.ensure(n_pad * k);
        for (pc, kc) in k_blocks(kernel, k).filter(|_| n > 0) {
            // SAFETY: B's elements are in bounds (checked); the K block at `pc` occupies
            // `dst[pc * n_pad .. (pc + kc) * n_pad]`, inside the `n_pad * k` elements.
            unsafe {
                pack::pack_b(
                    nr,
                    kc,
                    n,
                    b.data.as_ptr().add(pc * b.rs),
                    b.rs as isize,
                    b.cs as isize,
                    dst.add(pc * n_pad),
                );
            }
        }
        Ok(PackedB {
            kernel,
            rows: k,
            cols: n,
            data,
        })
    }

    /// Rows of the packed matrix (K).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the packed matrix (N).
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `C = A * B + beta * C` with B prepacked and C an `m x n` row-major slice (`beta == 0`
/// ignores C's contents), spread over `ctx`'s threads as [`par_split`] chooses: by columns
/// (each task packs A, which is small next to its share of the product) or by rows.
pub fn par_gemm_packed_b(
    ctx: &crate::ctx::EvalCtx<'_>,
    a: MatRef<'_, f32>,
    b: &PackedB,
    beta: f32,
    c: &mut [f32],
) -> Result<(), GemmError> {
    check_view("A", a.data.len(), a.rows, a.cols, a.rs, a.cs)?;
    let (m, k, n) = (a.rows, b.rows, b.cols);
    if a.cols != k || Some(c.len()) != m.checked_mul(n) {
        return Err(GemmError::Shape {
            a: (a.rows, a.cols),
            b: (k, n),
            c: (m, c.len().checked_div(m).unwrap_or(0)),
        });
    }
    let kern = b.kernel;
    let whole = Problem {
        m,
        k,
        n,
        row0: 0,
        col0: 0,
        alpha: 1.0,
        b: BSrc::Packed {
            data: b.data.as_ptr(),
            n_pad: n.div_ceil(kern.nr) * kern.nr,
        },
        beta,
        c: c.as_mut_ptr(),
        rsc: n as isize,
        csc: 1,
        epilogue: None,
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        // SAFETY: C is an exclusive `m x n` row-major slice (checked length).
        unsafe { scale_c(&whole) };
        return Ok(());
    }
    let asrc = ASrc::Strided {
        a: a.data.as_ptr(),
        rsa: a.rs as isize,
        csa: a.cs as isize,
    };
    // SAFETY: A (checked view) and C (an exclusive `m x n` row-major slice, unit column
    // stride) hold every element of the product; B was packed by `PackedB` for `kern` with
    // `k` rows and `n` columns; `kern` was chosen by `selected`, which checks the CPU.
    unsafe { par_drive(ctx, kern, whole, asrc) };
    Ok(())
}

/// A B operand that packs its own panels instead of being read from a matrix, such as a
/// convolution's implicit im2col (which then never materializes).
pub trait PackPanels: Sync + std::fmt::Debug {
    /// B's rows (K) and columns (N).
    fn dims(&self) -> (usize, usize);
    /// Writes B's rows `k0..k0 + kc` and columns `j0..j0 + nc` into `dst` as
    /// `nc.div_ceil(nr)` panels of `nr` columns: element `(k, j)` of panel `q` at
    /// `q * nr * kc + k * nr + j`, with the columns past `nc` zero. `dst` has exactly
    /// `nc.div_ceil(nr) * nr * kc` elements.
    fn pack(&self, nr: usize, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]);
}

/// Work done on C's elements as soon as they are final, while they are still in cache (bias,
/// residual sum, activation).
pub trait TileEpilogue: Sync + std::fmt::Debug {
    /// `out` is C's row `row`, columns `col..col + out.len()`, holding A*B.
    fn apply(&self, row: usize, col: usize, out: &mut [f32]);
}

/// What [`par_gemm_packed`] does to C's elements once they are final, in this order: add
/// `bias[row]`, add the sum's element, clamp (NaN passes through), then `custom`. The first
/// three are done by the micro-kernel on its way out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per row of C.
    pub bias: Option<&'a [f32]>,
    /// A matrix laid out like C (C's shape, C's row stride) added to it.
    pub sum: Option<&'a [f32]>,
    /// Lower and upper bounds (Relu is `(0, inf)`).
    pub clamp: Option<(f32, f32)>,
    /// Anything else, per finished row segment.
    pub custom: Option<&'a dyn TileEpilogue>,
}

impl Epilogue<'_> {
    fn has_fused(&self) -> bool {
        self.bias.is_some() || self.sum.is_some() || self.clamp.is_some()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.has_fused() && self.custom.is_none()
    }

    /// The fused part addressed for the tile at (`row`, `col`) of C (row stride `ld`).
    fn fused_at(&self, row: usize, col: usize, ld: isize) -> Fused {
        let (lo, hi) = self.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        Fused {
            bias: self
                .bias
                .map_or(std::ptr::null(), |b| b.as_ptr().wrapping_add(row)),
            sum: self.sum.map_or(std::ptr::null(), |s| {
                s.as_ptr()
                    .wrapping_offset(row as isize * ld)
                    .wrapping_add(col)
            }),
            sum_ld: ld,
            lo,
            hi,
        }
    }
}

/// The right operand of [`par_gemm_packed`].
#[derive(Debug, Clone, Copy)]
pub enum BOperand<'a> {
    /// A strided matrix.
    Matrix(MatRef<'a, f32>),
    /// A source that packs its own panels.
    Panels(&'a dyn PackPanels),
    /// Shifted windows of one buffer, read in place where the kernel and shape make that pay
    /// (else packed).
    Shifted(ShiftedB<'a>),
}

/// Products smaller than this many multiply-adds run on one thread.
const PAR_MIN_MACS: usize = 1 << 16;

/// A problem shared read-only by the tasks of one [`par_drive`] call.
struct SharedProblem<'a>(Problem<'a>, ASrc);

// SAFETY: the tasks only read A, B and the epilogue (which is `Sync`) through the problem,
// and write disjoint row or column ranges of C, so sharing its pointers is sound.
unsafe impl Sync for SharedProblem<'_> {}

/// How [`par_drive`] splits an `m x n` product over `threads` threads: `(tasks, cols, rows)`,
/// tasks of `cols` columns (all rows) when `cols < n`, else of `rows` rows; the last task
/// takes whatever its predecessors leave. Candidates: by columns into two tasks per thread
/// (a thread that is slowed down leaves its share to the other), or one, each `cols` wide
/// rounded up to `nr` (fewer tasks) or down (the last one a little wider); by rows into one
/// task per thread. Each is costed as the threads would run it (tasks taken in order by the
/// first free thread, a task's work its rows, plus `pack_rows` for packing its columns of B,
/// times its 16-column vectors) and the cheapest taken, in that order of preference on a
/// tie. Column tasks start at multiples of `nr` and row tasks at multiples of `mr`, as packed
/// operands require. (Measured at 2 threads against a fixed 4 column tasks per thread:
/// ResNet-50 63.9 -> 61.8 ms, SqueezeNet 4.88 -> 4.75; its 1000x169 classifier conv, 169
/// columns split 96/73 by columns, goes by rows.) With `narrow` kernels ([`Kernel::narrow`])
/// up to [`NARROW_MAX`] columns past a task's whole vectors cost a quarter of a vector each,
/// so a 7x7 convolution's 49 columns no longer split 32/17 (each thread then streamed all of
/// A for half the work), but by rows. Costing the packing sends a 256 -> 256 3x3 stride-2
/// convolution on 14x14 outputs (packed windows) to columns 96/100 instead of rows: 1.45 ->
/// 1.38 ms at 2 threads.
fn par_split(
    m: usize,
    n: usize,
    threads: usize,
    (mr, nr): (usize, usize),
    narrow: bool,
    pack_rows: usize,
) -> (usize, usize, usize) {
    // A task's work per row, in quarters of a 16-column vector.
    let vectors = |cols: usize| match cols % 16 {
        0 => cols / 16 * 4,
        r if narrow && r <= NARROW_MAX => cols / 16 * 4 + r,
        _ => cols.div_ceil(16) * 4,
    };
    // The time the last thread finishes, tasks taken in order by the first free thread
    // (inline for the usual few threads: products allocate nothing).
    let makespan = |costs: &mut dyn Iterator<Item = usize>| {
        let mut free_at: smallvec::SmallVec<[usize; 16]> = smallvec::smallvec![0; threads];
        for cost in costs {
            if let Some(t) = free_at.iter_mut().min() {
                *t += cost;
            }
        }
        free_at.into_iter().max().unwrap_or(0)
    };
    let mut best: Option<(usize, (usize, usize, usize))> = None;
    let mut consider = |cost: usize, split: (usize, usize, usize)| {
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, split));
        }
    };
    for parts in [2 * threads, threads] {
        // Each task `cols` wide (rounded up: fewer tasks; or down: the last one takes the
        // rest), packing its own columns of B.
        let share = n.div_ceil(parts);
        for cols in [share.div_ceil(nr) * nr, share / nr * nr] {
            if cols == 0 || cols >= n {
                continue;
            }
            let tasks = if cols * parts >= n {
                n.div_ceil(cols)
            } else {
                parts
            };
            let width = |i: usize| task_span(i, tasks, cols, n);
            let cost = makespan(&mut (0..tasks).map(|i| (m + pack_rows) * vectors(width(i))));
            consider(cost, (tasks, cols, m));
        }
    }
    // Each row task packs all of B.
    let rows = m.div_ceil(threads).div_ceil(mr) * mr;
    let tasks = m.div_ceil(rows);
    let cost =
        makespan(&mut (0..tasks).map(|i| (task_span(i, tasks, rows, m) + pack_rows) * vectors(n)));
    consider(cost, (tasks, n, rows));
    best.map_or((1, n, m), |(_, split)| split)
}

/// The length of task `i` of `tasks`, each `step` long but the last, which takes the rest
/// of `len`.
fn task_span(i: usize, tasks: usize, step: usize, len: usize) -> usize {
    match i + 1 < tasks {
        true => step,
        false => len - i * step,
    }
}

/// Rows' worth of multiply-adds that packing one column of B costs a task, by how the
/// driver gets B's panels: none when B is read in place or comes packed; a copy of a
/// strided matrix; a source's own packing (a convolution's gathered windows, measured at
/// 7.6% of a 256-row 3x3 stride-2 convolution at one thread, ~24 rows).
fn pack_rows_of(b: &BSrc<'_>) -> usize {
    match b {
        BSrc::Packed { .. } | BSrc::Shifted(_) => 0,
        BSrc::Strided { .. } => 2,
        BSrc::Panels(_) => 24,
    }
}

/// Runs `whole` (the full `m x n` product into a row-major C) spread over `ctx`'s threads as
/// [`par_split`] splits it. (Tried and dropped: packing B once for all the tasks of a split
/// by rows, a parallel pack and then the row tasks. SqueezeNet's 13x13 3x3s, whose row
/// tasks each pack all of B, ran 4% slower at 2 threads: the second fork-join and each
/// core reading the half of B the other packed outweighed the halved packing; 40% slower
/// while the host was contended.)
///
/// # Safety
/// `whole` and `asrc` satisfy [`drive`]'s contract for `kern` over all of C, C is an
/// exclusive row-major slice with unit column stride, and the CPU supports `kern`.
unsafe fn par_drive(ctx: &crate::ctx::EvalCtx<'_>, kern: &Kernel, whole: Problem<'_>, asrc: ASrc) {
    let (m, k, n) = (whole.m, whole.k, whole.n);
    let threads = ctx.threads();
    let small = m.saturating_mul(n).saturating_mul(k) < PAR_MIN_MACS;
    let (tasks, cols, rows) = if threads == 1 || small {
        (1, n, m)
    } else {
        let pack_rows = pack_rows_of(&whole.b);
        par_split(
            m,
            n,
            threads,
            (kern.mr, kern.nr),
            kern.narrow.is_some(),
            pack_rows,
        )
    };
    let shared = &SharedProblem(whole, asrc);
    let task = |i: usize| {
        let (whole, asrc) = (&shared.0, shared.1);
        // This task's columns (all rows) or rows (all columns); the last takes the rest.
        let (row0, col0, m, n) = if cols < n {
            (0, i * cols, m, task_span(i, tasks, cols, n))
        } else {
            (i * rows, 0, task_span(i, tasks, rows, m), n)
        };
        let p = Problem {
            row0,
            col0,
            m,
            n,
            ..*whole
        };
        // SAFETY: per this function's contract the operands hold every element of this task's
        // rows and columns and C is exclusive; tasks touch disjoint parts of C; `row0` is a
        // multiple of MR and `col0` of NR (see above); the CPU runs `kern`.
        with_buffers(|bufs| unsafe { drive(kern, &p, asrc, bufs) });
    };
    if tasks == 1 {
        task(0);
    } else {
        ctx.parallel.run(tasks, &task);
    }
}

/// `C = A * B` with A prepacked and C an `m x n` row-major slice, then `epilogue` on each
/// finished tile of C; spread over `ctx`'s threads as [`par_split`] chooses: by columns
/// (each thread packs only its own columns of B and shares the packed A) or by rows (each
/// packs all of B, which is small next to its share of the product where that wins).
pub fn par_gemm_packed(
    ctx: &crate::ctx::EvalCtx<'_>,
    a: &PackedA,
    b: BOperand<'_>,
    c: &mut [f32],
    epilogue: &Epilogue<'_>,
) -> Result<(), GemmError> {
    gemm_packed_into(ctx, a, b, c, None, epilogue)
}

/// [`par_gemm_packed`] into C rows `ldc` elements apart (`ldc >= n`): `c` holds
/// `(m - 1) * ldc + n` elements, and those between the rows are left as they are (a
/// convolution writing its output channels in a shuffled order). A fused sum is laid out
/// like C.
pub fn par_gemm_packed_rows(
    ctx: &crate::ctx::EvalCtx<'_>,
    a: &PackedA,
    b: BOperand<'_>,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), GemmError> {
    gemm_packed_into(ctx, a, b, c, Some(ldc), epilogue)
}

/// [`par_gemm_packed`] with C's row stride `ldc` (`None`: `n`, rows back to back).
fn gemm_packed_into(
    ctx: &crate::ctx::EvalCtx<'_>,
    a: &PackedA,
    b: BOperand<'_>,
    c: &mut [f32],
    ldc: Option<usize>,
    epilogue: &Epilogue<'_>,
) -> Result<(), GemmError> {
    let (k, n) = match b {
        BOperand::Matrix(v) => {
            check_view("B", v.data.len(), v.rows, v.cols, v.rs, v.cs)?;
            (v.rows, v.cols)
        }
        BOperand::Panels(src) => src.dims(),
        BOperand::Shifted(s) => {
            s.check()?;
            s.dims()
        }
    };
    let m = a.rows;
    let ldc = ldc.unwrap_or(n);
    let c_len = match m {
        0 => Some(0),
        _ => (m - 1).checked_mul(ldc).and_then(|l| l.checked_add(n)),
    };
    if k != a.cols || ldc < n || Some(c.len()) != c_len {
        return Err(GemmError::Shape {
            a: (a.rows, a.cols),
            b: (k, n),
            c: (m, c.len().checked_div(m).unwrap_or(0)),
        });
    }
    if epilogue.bias.is_some_and(|b| b.len() < m) {
        return Err(GemmError::View("bias"));
    }
    if epilogue.sum.is_some_and(|s| s.len() != c.len()) {
        return Err(GemmError::View("sum"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let epilogue = (!epilogue.is_empty()).then_some(epilogue);
    if k == 0 {
        for (i, row) in c.chunks_mut(ldc).enumerate() {
            let row = &mut row[..n];
            row.fill(0.0);
            if let Some(e) = epilogue {
                let f = e.fused_at(i, 0, ldc as isize);
                for (j, v) in row.iter_mut().enumerate() {
                    // SAFETY: row `i` and column `j` are inside C, so inside the checked
                    // bias (m values) and sum (laid out like C, as long).
                    *v = unsafe { f.apply(0, j, *v) };
                }
                if let Some(custom) = e.custom {
                    custom.apply(i, 0, row);
                }
            }
        }
        return Ok(());
    }
    let kern = a.kernel;
    // The product's columns: virtual ones when a shifted B is read in place.
    let (bsrc, cols) = match &b {
        BOperand::Matrix(v) => (
            BSrc::Strided {
                b: v.data.as_ptr(),
                rsb: v.rs as isize,
                csb: v.cs as isize,
            },
            n,
        ),
        BOperand::Panels(src) => (BSrc::Panels(*src), n),
        BOperand::Shifted(s) if s.in_place_for(kern, m) => (BSrc::Shifted(s), s.virtual_cols()),
        BOperand::Shifted(s) => (BSrc::Panels(s), n),
    };
    let whole = Problem {
        m,
        k,
        n: cols,
        row0: 0,
        col0: 0,
        alpha: 1.0,
        b: bsrc,
        beta: 0.0,
        c: c.as_mut_ptr(),
        rsc: ldc as isize,
        csc: 1,
        epilogue,
    };
    let asrc = ASrc::Packed {
        data: a.data.as_ptr(),
        k,
    };
    // SAFETY: B (checked view or shifted operand, or a source that packs itself; a shifted
    // one is read in place only with a kernel that has shifted micro-kernels, over its
    // virtual columns) and C (an exclusive `m x n` slice, rows `ldc` apart, unit column stride) hold
    // every element of the product; A was packed by
    // `PackedA` for `kern` with `m` rows and `k` columns; `kern` was chosen by
    // `selected`/`kernel_for`, which check the CPU.
    unsafe { par_drive(ctx, kern, whole, asrc) };
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn par_split_balances_the_threads() {
        use super::par_split;
        // Wide: two column tasks per thread, multiples of NR, where they balance as well as
        // one; one where that balances better (3135 columns: 1568/1567 against 800 x 3 + 735).
        let tile = (12, 32);
        assert_eq!(par_split(64, 3200, 2, tile, false, 0), (4, 800, 64));
        assert_eq!(par_split(64, 3135, 2, tile, false, 0), (2, 1568, 64));
        // SqueezeNet's classifier, 1000 x 169: columns would split 96/73, rows 504/496.
        assert_eq!(par_split(1000, 169, 2, tile, false, 0), (2, 169, 504));
        // A 7x7 conv's 49 columns: 32/17 ties with rows without narrow kernels; with them
        // the 17th column is cheap, so rows balance better.
        assert_eq!(par_split(512, 49, 2, tile, false, 0), (2, 32, 512));
        assert_eq!(par_split(512, 49, 2, tile, true, 0), (2, 49, 264));
        // Narrow and short: by rows, in multiples of MR.
        assert_eq!(par_split(100, 20, 2, tile, false, 0), (2, 20, 60));
        // One row tile and one column panel: nothing to split.
        assert_eq!(par_split(5, 20, 2, tile, true, 0).0, 1);
        // A 14x14 conv's 196 columns by 256 rows: B read in place splits by rows (132/124);
        // B packed by each task splits by columns, 96 and the last task the other 100
        // (rounding up would give 128/68), so no thread packs all of B.
        assert_eq!(par_split(256, 196, 2, tile, true, 0), (2, 196, 132));
        assert_eq!(par_split(256, 196, 2, tile, true, 24), (2, 96, 256));
        // Every split covers the product (the last task takes the rest).
        for (m, n, t) in [
            (7, 1000, 2),
            (1000, 7, 3),
            (96, 96, 4),
            (1, 1, 2),
            (300, 49, 2),
        ] {
            for narrow in [false, true] {
                for pack_rows in [0, 24] {
                    let (tasks, cols, rows) = par_split(m, n, t, tile, narrow, pack_rows);
                    if cols < n {
                        assert!((tasks - 1) * cols < n && cols % 32 == 0, "{m}x{n}");
                    } else {
                        assert!((tasks - 1) * rows < m && rows % 12 == 0, "{m}x{n}");
                    }
                }
            }
        }
    }

    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A `rows x cols` view of fresh storage: transposed storage when `t`, rows padded by
    /// `pad` elements.
    fn storage(
        rows: usize,
        cols: usize,
        t: bool,
        pad: usize,
        seed: u64,
    ) -> (Vec<f32>, usize, usize) {
        let (outer, inner) = if t { (cols, rows) } else { (rows, cols) };
        let ld = inner + pad;
        let data = values(outer * ld, seed);
        if t {
            (data, 1, ld)
        } else {
            (data, ld, 1)
        }
    }

    fn available() -> Vec<&'static Kernel> {
        [Isa::Avx512, Isa::Avx2, Isa::Generic]
            .into_iter()
            .filter_map(kernel_for)
            .collect()
    }

    #[derive(Clone, Copy, Debug)]
    struct Case {
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
        tc: bool,
        pad: usize,
        alpha: f32,
        beta: f32,
    }

    /// Runs `case` with `kern` (through the packed-A path when `packed`) and compares with a
    /// naive triple loop.
    fn check(kern: &'static Kernel, case: Case, packed: bool) {
        let Case {
            m,
            k,
            n,
            ta,
            tb,
            tc,
            pad,
            alpha,
            beta,
        } = case;
        let (ad, ars, acs) = storage(m, k, ta, pad, 1);
        let (bd, brs, bcs) = storage(k, n, tb, pad, 2);
        let (mut cd, crs, ccs) = storage(m, n, tc, pad, 3);
        if beta == 0.0 {
            cd.iter_mut().for_each(|v| *v = f32::NAN);
        }
        let c0 = cd.clone();
        let av = MatRef {
            data: &ad,
            rows: m,
            cols: k,
            rs: ars,
            cs: acs,
        };
        let bv = MatRef {
            data: &bd,
            rows: k,
            cols: n,
            rs: brs,
            cs: bcs,
        };
        let cv = MatMut {
            data: &mut cd,
            rows: m,
            cols: n,
            rs: crs,
            cs: ccs,
        };
        if packed {
            let pa = PackedA::with_kernel(kern, av).unwrap();
            gemm_packed_a(alpha, &pa, bv, beta, cv).unwrap();
        } else {
            gemm_with(kern, alpha, av, bv, beta, cv).unwrap();
        }
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut mag) = (0f64, 0f64);
                for p in 0..k {
                    let x = ad[i * ars + p * acs] as f64 * bd[p * brs + j * bcs] as f64;
                    s += x;
                    mag += x.abs();
                }
                let old = c0[i * crs + j * ccs] as f64;
                let scaled_old = if beta == 0.0 { 0.0 } else { beta as f64 * old };
                let want = alpha as f64 * s + scaled_old;
                let got = cd[i * crs + j * ccs] as f64;
                let tol = 1e-5 * (mag * alpha.abs() as f64 + scaled_old.abs()) + 1e-6;
                assert!(
                    (got - want).abs() <= tol,
                    "{:?} packed={packed} {case:?}: C[{i},{j}] = {got}, want {want}",
                    kern.isa
                );
            }
        }
        // Elements outside the C view are untouched.
        let mut in_view = vec![false; cd.len()];
        for i in 0..m {
            for j in 0..n {
                in_view[i * crs + j * ccs] = true;
            }
        }
        for (idx, ((&now, &before), &inside)) in cd.iter().zip(&c0).zip(&in_view).enumerate() {
            assert!(
                inside || now.to_bits() == before.to_bits(),
                "{:?} {case:?}: element {idx} outside C changed",
                kern.isa
            );
        }
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 7, 1),
        (2, 3, 2),
        (1, 33, 70),
        (70, 33, 1),
        (5, 1, 9),
        (17, 33, 129),
        (13, 300, 37),
        (12, 64, 32),
        (24, 17, 64),
        (6, 16, 16),
        (31, 513, 47),
        (100, 20, 4),
        (3, 5, 200),
    ];

    #[test]
    fn matches_naive_on_all_kernels() {
        for kern in available() {
            for &(m, k, n) in SHAPES {
                for (ta, tb, tc) in [
                    (false, false, false),
                    (true, false, false),
                    (false, true, false),
                    (true, true, true),
                    (false, false, true),
                ] {
                    for pad in [0, 3] {
                        for packed in [false, true] {
                            let case = Case {
                                m,
                                k,
                                n,
                                ta,
                                tb,
                                tc,
                                pad,
                                alpha: 1.0,
                                beta: 0.0,
                            };
                            check(kern, case, packed);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn alpha_beta_variants() {
        for kern in available() {
            for &(m, k, n) in &[
                (17, 33, 129),
                (1, 40, 50),
                (50, 40, 1),
                (9, 600, 35),
                (10, 300, 100),
            ] {
                for (alpha, beta) in [
                    (1.0, 1.0),
                    (0.5, -2.0),
                    (-1.5, 0.0),
                    (2.0, 0.25),
                    (0.0, 1.0),
                ] {
                    for packed in [false, true] {
                        for tc in [false, true] {
                            let case = Case {
                                m,
                                k,
                                n,
                                ta: false,
                                tb: false,
                                tc,
                                pad: 2,
                                alpha,
                                beta,
                            };
                            check(kern, case, packed);
                        }
                    }
                }
            }
        }
    }

    use crate::ctx::ThreeThreads;

    /// A row-major matrix handed to the driver as a panel source.
    #[derive(Debug)]
    struct RowMajorPanels<'a>(&'a [f32], usize, usize);
    impl PackPanels for RowMajorPanels<'_> {
        fn dims(&self) -> (usize, usize) {
            (self.1, self.2)
        }
        fn pack(&self, nr: usize, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
            for (i, v) in dst.iter_mut().enumerate() {
                let (q, k, j) = (i / (nr * kc), i / nr % kc, i % nr);
                let col = q * nr + j;
                *v = if col < nc {
                    self.0[(k0 + k) * self.2 + j0 + col]
                } else {
                    0.0
                };
            }
        }
    }

    /// `2 * v + row + col / 1000` per element.
    #[derive(Debug)]
    struct Marked;
    impl TileEpilogue for Marked {
        fn apply(&self, row: usize, col: usize, out: &mut [f32]) {
            for (j, v) in out.iter_mut().enumerate() {
                *v = 2.0 * *v + row as f32 + (col + j) as f32 / 1000.0;
            }
        }
    }

    /// The naive product `dot(i, j)` of an `m x n` C followed by `epilogue` as
    /// [`par_gemm_packed`] documents it (its custom step, where given, is [`Marked`]).
    fn with_epilogue(
        m: usize,
        n: usize,
        dot: impl Fn(usize, usize) -> f32,
        epilogue: &Epilogue<'_>,
    ) -> Vec<f32> {
        (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let mut v = dot(i, j);
                v += epilogue.bias.map_or(0.0, |b| b[i]);
                v += epilogue.sum.map_or(0.0, |s| s[e]);
                if let Some((lo, hi)) = epilogue.clamp {
                    v = v.max(lo).min(hi);
                }
                if epilogue.custom.is_some() {
                    v = 2.0 * v + i as f32 + j as f32 / 1000.0;
                }
                v
            })
            .collect()
    }

    /// Asserts `got` matches `want` element by element (relative 1e-4), naming `case`.
    fn assert_matches(got: &[f32], want: &[f32], case: &str) {
        assert_eq!(got.len(), want.len(), "{case}");
        for (e, (got, want)) in got.iter().zip(want).enumerate() {
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{case} element {e}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn packed_products_with_epilogues_match_naive() {
        let threads = crate::ctx::EvalCtx {
            parallel: &ThreeThreads,
            ..Default::default()
        };
        let serial = crate::ctx::EvalCtx::default();
        // Small (one task), wide (split by columns), narrow (split by rows), K = 0; columns
        // past the whole vectors for the narrow kernels (49 = 48 + 1, 3, 36 = 32 + 4) over
        // two K blocks.
        for (m, k, n) in [
            (5, 3, 7),
            (13, 37, 250),
            (70, 40, 30),
            (4, 0, 9),
            (30, 300, 49),
            (13, 270, 3),
            (25, 20, 36),
        ] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let (bias, sum) = (values(m, 3), values(m * n, 4));
            for kern in available() {
                let packed = PackedA::with_kernel(kern, MatRef::row_major(&a, m, k)).unwrap();
                for (use_bias, use_sum, clamp, custom) in [
                    (false, false, None, false),
                    (true, false, Some((0.0, f32::INFINITY)), false),
                    (true, true, Some((-0.3, 0.4)), true),
                    (false, true, None, true),
                ] {
                    let epilogue = Epilogue {
                        bias: use_bias.then_some(&bias[..]),
                        sum: use_sum.then_some(&sum[..]),
                        clamp,
                        custom: custom.then_some(&Marked as &dyn TileEpilogue),
                    };
                    let dot = |i, j| (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                    let want = with_epilogue(m, n, dot, &epilogue);
                    let panels = RowMajorPanels(&b, k, n);
                    for ctx in [&serial, &threads] {
                        for operand in [
                            BOperand::Matrix(MatRef::row_major(&b, k, n)),
                            BOperand::Panels(&panels),
                        ] {
                            let mut c = vec![f32::NAN; m * n];
                            par_gemm_packed(ctx, &packed, operand, &mut c, &epilogue).unwrap();
                            assert_matches(&c, &want, &format!("{:?} {m}x{k}x{n}", kern.isa));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shifted_b_products_match_naive() {
        let threads = crate::ctx::EvalCtx {
            parallel: &ThreeThreads,
            ..Default::default()
        };
        let serial = crate::ctx::EvalCtx::default();
        // (m, k, rows, cols, row_step, read in place where the kernel can): tiny; wide with
        // two masked columns per row; K over several blocks; no masked columns and a split
        // by rows; too many row panels; a tile of masked columns only; too shallow; K = 0.
        for (m, k, rows, cols, step, in_place) in [
            (5, 64, 2, 7, 9, true),
            (30, 70, 9, 29, 31, true),
            (12, 1100, 4, 20, 22, true),
            (70, 64, 3, 10, 10, true),
            (100, 64, 6, 16, 18, false),
            (5, 66, 2, 140, 200, true),
            (5, 3, 2, 7, 9, false),
            (3, 0, 2, 5, 5, false),
        ] {
            let span = (rows - 1) * step + cols;
            let data = values(span + 300, 8);
            let offsets: Vec<usize> = (0..k).map(|p| p * 37 % 300).collect();
            let windows = ShiftedB {
                data: &data,
                offsets: &offsets,
                rows,
                cols,
                row_step: step,
                edges: None,
            };
            let n = rows * cols;
            let b_at = |p: usize, j: usize| data[offsets[p] + j / cols * step + j % cols];
            let a = values(m * k, 9);
            let (bias, sum) = (values(m, 10), values(m * n, 11));
            for kern in available() {
                assert_eq!(
                    windows.in_place_for(kern, m),
                    in_place && kern.shifted.is_some(),
                    "{m}x{k} over {rows}x{cols} step {step}"
                );
                let packed = PackedA::with_kernel(kern, MatRef::row_major(&a, m, k)).unwrap();
                for (use_bias, use_sum, clamp, custom) in [
                    (false, false, None, false),
                    (true, true, Some((-0.3, 0.4)), true),
                ] {
                    let epilogue = Epilogue {
                        bias: use_bias.then_some(&bias[..]),
                        sum: use_sum.then_some(&sum[..]),
                        clamp,
                        custom: custom.then_some(&Marked as &dyn TileEpilogue),
                    };
                    let dot = |i, j| (0..k).map(|p| a[i * k + p] * b_at(p, j)).sum();
                    let want = with_epilogue(m, n, dot, &epilogue);
                    for ctx in [&serial, &threads] {
                        let mut c = vec![f32::NAN; m * n];
                        par_gemm_packed(
                            ctx,
                            &packed,
                            BOperand::Shifted(windows),
                            &mut c,
                            &epilogue,
                        )
                        .unwrap();
                        let case = format!("{:?} {m}x{k} over {rows}x{cols} step {step}", kern.isa);
                        assert_matches(&c, &want, &case);
                    }
                }
            }
        }
        // Windows reaching past the data, or rows longer than their step, are refused.
        let (data, a) = (values(50, 1), values(4, 2));
        let packed = PackedA::new(MatRef::row_major(&a, 2, 2)).unwrap();
        let serial = crate::ctx::EvalCtx::default();
        for (offsets, rows, cols, step) in [([0, 31], 3, 5, 8), ([0, 1], 2, 9, 8)] {
            let windows = ShiftedB {
                data: &data,
                offsets: &offsets,
                rows,
                cols,
                row_step: step,
                edges: None,
            };
            let mut c = vec![0.0; 2 * rows * cols];
            let operand = BOperand::Shifted(windows);
            assert!(
                par_gemm_packed(&serial, &packed, operand, &mut c, &Epilogue::default()).is_err()
            );
        }
    }

    #[test]
    fn edge_tap_products_match_naive() {
        let threads = crate::ctx::EvalCtx {
            parallel: &ThreeThreads,
            ..Default::default()
        };
        let serial = crate::ctx::EvalCtx::default();
        // (m, segment, rows, cols, shifts, in place where the kernel can): a 3x3 with
        // padding 1 on 13-wide rows (vectors straddle rows); a dilated one (shifts -2, 0, 2)
        // on 20-wide rows with two K blocks; 3 columns past the last vector (packed); one
        // tap shifted past a 1-wide image; too shallow (packed).
        for (m, segment, rows, cols, shift, in_place) in [
            (30, 40, 6, 13, [-1, 0, 1], true),
            (13, 400, 4, 20, [-2, 0, 2], true),
            (20, 30, 3, 17, [-1, 0, 1], false),
            (12, 25, 9, 1, [-1, 0, 1], true),
            (7, 10, 4, 9, [-1, 0, 1], false),
        ] {
            let (k, n) = (3 * segment, rows * cols);
            // Each row a window at its own offset inside the data.
            let data = values(n + 150, 12);
            let offsets: Vec<usize> = (0..k).map(|p| p * 7 % 150).collect();
            let windows = ShiftedB {
                data: &data,
                offsets: &offsets,
                rows,
                cols,
                row_step: cols,
                edges: Some(EdgeTaps { shift, segment }),
            };
            let b_at = |p: usize, j: usize| {
                let x = (j % cols) as isize + shift[p / segment];
                match (0..cols as isize).contains(&x) {
                    true => data[offsets[p] + j],
                    false => 0.0,
                }
            };
            let a = values(m * k, 13);
            let (bias, sum) = (values(m, 14), values(m * n, 15));
            for kern in available() {
                assert_eq!(
                    windows.in_place_for(kern, m),
                    in_place && kern.shifted_edges.is_some(),
                    "{m}x{k} over {rows}x{cols}"
                );
                let packed = PackedA::with_kernel(kern, MatRef::row_major(&a, m, k)).unwrap();
                for (use_bias, use_sum, clamp) in
                    [(false, false, None), (true, true, Some((-0.3, 0.4)))]
                {
                    let epilogue = Epilogue {
                        bias: use_bias.then_some(&bias[..]),
                        sum: use_sum.then_some(&sum[..]),
                        clamp,
                        custom: None,
                    };
                    let dot = |i, j| (0..k).map(|p| a[i * k + p] * b_at(p, j)).sum();
                    let want = with_epilogue(m, n, dot, &epilogue);
                    for ctx in [&serial, &threads] {
                        let mut c = vec![f32::NAN; m * n];
                        let operand = BOperand::Shifted(windows);
                        par_gemm_packed(ctx, &packed, operand, &mut c, &epilogue).unwrap();
                        let case = format!("{:?} {m}x{k} over {rows}x{cols}", kern.isa);
                        assert_matches(&c, &want, &case);
                    }
                }
            }
        }
        // Edge taps over rows with a step, or a row count that is not three segments, are
        // refused.
        let (data, a) = (values(64, 1), values(2 * 6, 2));
        let packed = PackedA::new(MatRef::row_major(&a, 2, 6)).unwrap();
        for (offsets, step, segment) in [([0; 6], 5, 2), ([0; 6], 4, 3)] {
            let windows = ShiftedB {
                data: &data,
                offsets: &offsets,
                rows: 2,
                cols: 4,
                row_step: step,
                edges: Some(EdgeTaps {
                    shift: [-1, 0, 1],
                    segment,
                }),
            };
            let mut c = vec![0.0; 2 * 8];
            let operand = BOperand::Shifted(windows);
            let done = par_gemm_packed(&serial, &packed, operand, &mut c, &Epilogue::default());
            assert!(done.is_err(), "step {step}, segment {segment}");
        }
    }

    #[test]
    fn packed_b_products_match_naive() {
        let threads = crate::ctx::EvalCtx {
            parallel: &ThreeThreads,
            ..Default::default()
        };
        let serial = crate::ctx::EvalCtx::default();
        // One task; wide (by columns, N not a multiple of NR); narrow (by rows); several K
        // blocks with a transposed (column-major) A; one row; K = 0.
        for (m, k, n, a_transposed) in [
            (5, 3, 7, false),
            (13, 37, 250, false),
            (70, 40, 30, false),
            (30, 600, 77, true),
            (1, 20, 100, false),
            (4, 0, 9, false),
        ] {
            let (a, b) = (values(m * k, 5), values(k * n, 6));
            let av = if a_transposed {
                MatRef {
                    data: &a[..],
                    rows: m,
                    cols: k,
                    rs: 1,
                    cs: m,
                }
            } else {
                MatRef::row_major(&a, m, k)
            };
            let old = values(m * n, 7);
            for kern in available() {
                let packed = PackedB::with_kernel(kern, MatRef::row_major(&b, k, n)).unwrap();
                assert_eq!((packed.rows(), packed.cols()), (k, n));
                for beta in [0.0, 1.0] {
                    let want: Vec<f32> = (0..m * n)
                        .map(|e| {
                            let (i, j) = (e / n, e % n);
                            let a_ip =
                                |p: usize| a[if a_transposed { p * m + i } else { i * k + p }];
                            let v: f32 = (0..k).map(|p| a_ip(p) * b[p * n + j]).sum();
                            v + beta * old[e]
                        })
                        .collect();
                    for ctx in [&serial, &threads] {
                        let mut c = if beta == 0.0 {
                            vec![f32::NAN; m * n]
                        } else {
                            old.clone()
                        };
                        par_gemm_packed_b(ctx, av, &packed, beta, &mut c).unwrap();
                        let case = format!("{:?} {m}x{k}x{n} beta {beta}", kern.isa);
                        assert_matches(&c, &want, &case);
                    }
                }
            }
        }
        // Shapes that do not chain are refused.
        let b = values(12, 2);
        let packed = PackedB::new(MatRef::row_major(&b, 3, 4)).unwrap();
        let a = values(8, 1);
        let mut c = vec![0.0; 8];
        assert!(
            par_gemm_packed_b(&serial, MatRef::row_major(&a, 2, 4), &packed, 0.0, &mut c).is_err()
        );
        assert!(par_gemm_packed_b(
            &serial,
            MatRef::row_major(&a, 2, 3),
            &packed,
            0.0,
            &mut c[..7]
        )
        .is_err());
        assert!(
            par_gemm_packed_b(&serial, MatRef::row_major(&a, 2, 3), &packed, 0.0, &mut c).is_ok()
        );
    }

    #[test]
    fn products_into_spaced_rows_leave_the_gaps() {
        let threads = crate::ctx::EvalCtx {
            parallel: &ThreeThreads,
            ..Default::default()
        };
        let serial = crate::ctx::EvalCtx::default();
        // Small, wide (split by columns), narrow (split by rows), K = 0; and a shifted B
        // read in place (rows of 29 real columns out of 31 virtual ones).
        let (rows, cols, step) = (9, 29, 31);
        let data = values((rows - 1) * step + cols + 300, 8);
        let offsets: Vec<usize> = (0..70).map(|p| p * 37 % 300).collect();
        let windows = ShiftedB {
            data: &data,
            offsets: &offsets,
            rows,
            cols,
            row_step: step,
            edges: None,
        };
        for (m, k, n, shifted) in [
            (5, 3, 7, false),
            (13, 37, 250, false),
            (70, 40, 30, false),
            (4, 0, 9, false),
            (30, 70, rows * cols, true),
        ] {
            let a = values(m * k, 1);
            let b: Vec<f32> = match shifted {
                true => (0..k * n)
                    .map(|e| {
                        let (p, j) = (e / n, e % n);
                        data[offsets[p] + j / cols * step + j % cols]
                    })
                    .collect(),
                false => values(k * n, 2),
            };
            let bias = values(m, 3);
            let epilogue = Epilogue {
                bias: Some(&bias),
                clamp: Some((-0.3, 0.4)),
                ..Epilogue::default()
            };
            let dot = |i, j| (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            let want = with_epilogue(m, n, dot, &epilogue);
            let ldc = 3 * n + 5;
            for kern in available() {
                let packed = PackedA::with_kernel(kern, MatRef::row_major(&a, m, k)).unwrap();
                for ctx in [&serial, &threads] {
                    let operand = match shifted {
                        true => BOperand::Shifted(windows),
                        false => BOperand::Matrix(MatRef::row_major(&b, k, n)),
                    };
                    let mut c = vec![7.0; (m - 1) * ldc + n];
                    par_gemm_packed_rows(ctx, &packed, operand, &mut c, ldc, &epilogue).unwrap();
                    let case = format!("{:?} {m}x{k}x{n} rows {ldc} apart", kern.isa);
                    for (i, row) in c.chunks(ldc).enumerate() {
                        assert_matches(&row[..n], &want[i * n..][..n], &case);
                        assert!(row[n..].iter().all(|&v| v == 7.0), "{case}: gap {i}");
                    }
                    // A slice of the wrong length, or rows closer than `n`, are refused.
                    let short = &mut c[..(m - 1) * ldc + n - 1];
                    assert!(
                        par_gemm_packed_rows(ctx, &packed, operand, short, ldc, &epilogue).is_err()
                    );
                    if m > 1 && n > 1 {
                        let close = &mut c[..(m - 1) * (n - 1) + n];
                        assert!(par_gemm_packed_rows(
                            ctx,
                            &packed,
                            operand,
                            close,
                            n - 1,
                            &epilogue
                        )
                        .is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn packed_products_reject_what_does_not_fit() {
        let a = values(6, 1);
        let packed = PackedA::new(MatRef::row_major(&a, 2, 3)).unwrap();
        let ctx = crate::ctx::EvalCtx::default();
        let b = values(12, 2);
        let mut c = vec![0.0; 8];
        let none = Epilogue::default();
        let wrong_k = BOperand::Matrix(MatRef::row_major(&b, 4, 3));
        assert!(par_gemm_packed(&ctx, &packed, wrong_k, &mut c[..6], &none).is_err());
        let b34 = BOperand::Matrix(MatRef::row_major(&b, 3, 4));
        assert!(par_gemm_packed(&ctx, &packed, b34, &mut c[..7], &none).is_err());
        let short_bias = Epilogue {
            bias: Some(&a[..1]),
            ..none
        };
        assert!(par_gemm_packed(&ctx, &packed, b34, &mut c, &short_bias).is_err());
        let short_sum = Epilogue {
            sum: Some(&a[..]),
            ..none
        };
        assert!(par_gemm_packed(&ctx, &packed, b34, &mut c, &short_sum).is_err());
        assert!(par_gemm_packed(&ctx, &packed, b34, &mut c, &none).is_ok());
    }

    #[test]
    fn large_blocks_cross_every_boundary() {
        // Larger than KC, MC and NC for every kernel (with uneven edges).
        for kern in available() {
            let case = Case {
                m: kern.mc + kern.mr + 1,
                k: kern.kc * 2 + 5,
                n: kern.nc + kern.nr + 3,
                ta: false,
                tb: false,
                tc: false,
                pad: 0,
                alpha: 1.0,
                beta: 0.5,
            };
            if kern.isa == Isa::Generic && cfg!(debug_assertions) {
                continue;
            }
            check(kern, case, false);
            // Prepacked A: past its own, longer K block.
            let k = kern.kc_prepacked + 5;
            check(kern, Case { n: 40, k, ..case }, true);
        }
    }

    #[test]
    fn k_zero_scales_c() {
        for kern in available() {
            let mut c = [f32::NAN, f32::NAN, 2.0, 3.0];
            let a: [f32; 0] = [];
            gemm_with(
                kern,
                1.0,
                MatRef::row_major(&a, 1, 0),
                MatRef::row_major(&a, 0, 2),
                0.0,
                MatMut::row_major(&mut c[..2], 1, 2),
            )
            .unwrap();
            assert_eq!(&c[..2], &[0.0, 0.0]);
            gemm_with(
                kern,
                1.0,
                MatRef::row_major(&a, 1, 0),
                MatRef::row_major(&a, 0, 2),
                2.0,
                MatMut::row_major(&mut c[2..], 1, 2),
            )
            .unwrap();
            assert_eq!(&c[2..], &[4.0, 6.0]);
            let pa = PackedA::with_kernel(kern, MatRef::row_major(&a, 1, 0)).unwrap();
            gemm_packed_a(
                1.0,
                &pa,
                MatRef::row_major(&a, 0, 2),
                0.0,
                MatMut::row_major(&mut c[2..], 1, 2),
            )
            .unwrap();
            assert_eq!(&c[2..], &[0.0, 0.0]);
        }
    }

    #[test]
    fn rejects_bad_views() {
        let a = vec![1.0f32; 6];
        let mut c = vec![0.0f32; 4];
        let e = gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&a, 2, 3),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
        assert!(matches!(e, Err(GemmError::Shape { .. })));
        let e = gemm(
            1.0,
            MatRef::row_major(&a, 2, 4),
            MatRef::row_major(&a, 4, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
        assert_eq!(e, Err(GemmError::View("A")));
        let overlapping = MatMut {
            data: &mut c,
            rows: 2,
            cols: 2,
            rs: 1,
            cs: 1,
        };
        let e = gemm(
            1.0,
            MatRef::row_major(&a, 2, 1),
            MatRef::row_major(&a, 1, 2),
            0.0,
            overlapping,
        );
        assert_eq!(e, Err(GemmError::View("C")));
        let pa = PackedA::new(MatRef::row_major(&a, 2, 3)).unwrap();
        let e = gemm_packed_a(
            1.0,
            &pa,
            MatRef::row_major(&a, 2, 3),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
        assert!(matches!(e, Err(GemmError::Shape { .. })));
        assert_eq!((pa.rows(), pa.cols()), (2, 3));
    }

    #[test]
    fn packed_a_rows_write_only_their_rows() {
        let (m, k, n) = (29, 7, 19);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5).collect();
        let pa = PackedA::new(MatRef::row_major(&a, m, k)).unwrap();
        let mut full = vec![0.0f32; m * n];
        gemm_packed_a(
            1.0,
            &pa,
            MatRef::row_major(&b, k, n),
            0.0,
            MatMut::row_major(&mut full, m, n),
        )
        .unwrap();
        let mr = pa.row_panel();
        for rows in [0..m, mr..m, mr..(2 * mr).min(m), 0..mr.min(m)] {
            let mut c = vec![f32::NAN; m * n];
            let (bv, cv) = (MatRef::row_major(&b, k, n), MatMut::row_major(&mut c, m, n));
            gemm_packed_a_rows(1.0, &pa, rows.clone(), bv, 0.0, cv).unwrap();
            for (i, (got, want)) in c.chunks(n).zip(full.chunks(n)).enumerate() {
                if rows.contains(&i) {
                    assert_eq!(got, want, "row {i} of {rows:?}");
                } else {
                    assert!(got.iter().all(|v| v.is_nan()), "row {i} outside {rows:?}");
                }
            }
        }
        let mut c = vec![0.0f32; m * n];
        let (bv, cv) = (MatRef::row_major(&b, k, n), MatMut::row_major(&mut c, m, n));
        let misaligned = gemm_packed_a_rows(1.0, &pa, 1..m, bv, 0.0, cv);
        assert_eq!(misaligned, Err(GemmError::View("rows")));
    }

    #[test]
    fn packed_a_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PackedA>();
    }

    #[test]
    fn selected_kernel_is_the_best_available() {
        if std::env::var_os("STRATA_GEMM_ISA").is_none() {
            assert_eq!(selected_isa(), available()[0].isa);
        }
    }

    #[test]
    fn buffers_work_when_reentered() {
        // The thread-local buffers are busy: a nested call falls back to fresh ones.
        with_buffers(|_| {
            let a = values(20 * 30, 5);
            let mut c = vec![0.0; 20 * 20];
            gemm(
                1.0,
                MatRef::row_major(&a, 20, 30),
                MatRef::row_major(&a, 30, 20),
                0.0,
                MatMut::row_major(&mut c, 20, 20),
            )
            .unwrap();
            assert!(c.iter().all(|v| v.is_finite()));
        });
    }
}
