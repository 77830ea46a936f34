//! Neural-network kernels: convolutions (`conv`, `deform_conv`, `conv_concat`), pooling (`pool`), normalizations (`norm`)
//! the softmax family (`softmax`) and `MaxUnpool` (`unpool`). This module owns the shared spatial geometry: parsing
//! `kernel_shape`/`strides`/`dilations`/`pads`/`auto_pad` once at build time and resolving
//! output sizes and paddings against concrete input shapes.

pub mod conv;
pub mod conv_concat;
pub mod deform_conv;
mod depthwise;
mod depthwise_blocked;
pub mod norm;
pub mod pool;
mod row_depthwise;
mod row_pool;
pub mod softmax;
pub mod unpool;
pub mod winograd;

use crate::{Attributes, Fact, OpError, OpRegistry, OpResult};

/// Registers the nn ops.
pub fn register(registry: &mut OpRegistry) {
    conv::register(registry);
    deform_conv::register(registry);
    pool::register(registry);
    norm::register(registry);
    softmax::register(registry);
    unpool::register(registry);
}

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// Pad so that `out = ceil(in / stride)`, the odd extra at the end.
    SameUpper,
    /// Like `SameUpper` with the odd extra at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

/// Spatial attributes shared by convolutions and pools, validated at build time.
#[derive(Debug, Clone, Default)]
pub struct SpatialAttrs {
    /// `kernel_shape`, when given.
    pub kernel: Option<Vec<usize>>,
    /// `strides`, when given.
    pub strides: Option<Vec<usize>>,
    /// `dilations`, when given.
    pub dilations: Option<Vec<usize>>,
    /// `pads` (begins then ends), when given.
    pub pads: Option<Vec<usize>>,
    /// `auto_pad`.
    pub auto_pad: Option<AutoPad>,
}

fn positive_ints(attrs: &Attributes, name: &str) -> OpResult<Option<Vec<usize>>> {
    match attrs.ints(name)? {
        None => Ok(None),
        Some(v) => v
            .iter()
            .map(|&x| {
                usize::try_from(x).ok().filter(|&x| x > 0).ok_or_else(|| {
                    OpError::attribute(name, format!("values must be positive, got {v:?}"))
                })
            })
            .collect::<OpResult<Vec<_>>>()
            .map(Some),
    }
}

impl SpatialAttrs {
    /// Parses and validates the attributes (pads must be non-negative, others positive).
    pub fn parse(attrs: &Attributes) -> OpResult<SpatialAttrs> {
        let pads = match attrs.ints("pads")? {
            None => None,
            Some(v) => {
                if v.len() % 2 != 0 {
                    return Err(OpError::attribute(
                        "pads",
                        format!("needs an even count, got {v:?}"),
                    ));
                }
                Some(
                    v.iter()
                        .map(|&x| {
                            usize::try_from(x).map_err(|_| {
                                OpError::attribute(
                                    "pads",
                                    format!("must be non-negative, got {v:?}"),
                                )
                            })
                        })
                        .collect::<OpResult<Vec<_>>>()?,
                )
            }
        };
        let auto_pad = match attrs.string("auto_pad")?.as_deref() {
            None | Some("NOTSET") | Some("") => None,
            Some("SAME_UPPER") => Some(AutoPad::SameUpper),
            Some("SAME_LOWER") => Some(AutoPad::SameLower),
            Some("VALID") => Some(AutoPad::Valid),
            Some(other) => {
                return Err(OpError::attribute(
                    "auto_pad",
                    format!("unknown value {other:?}"),
                ))
            }
        };
        Ok(SpatialAttrs {
            kernel: positive_ints(attrs, "kernel_shape")?,
            strides: positive_ints(attrs, "strides")?,
            dilations: positive_ints(attrs, "dilations")?,
            pads,
            auto_pad,
        })
    }

    /// The auto_pad mode (NOTSET when absent).
    pub fn auto_pad(&self) -> AutoPad {
        self.auto_pad.unwrap_or(AutoPad::NotSet)
    }

    fn per_axis(
        v: &Option<Vec<usize>>,
        n: usize,
        name: &str,
        default: usize,
    ) -> OpResult<Vec<usize>> {
        match v {
            None => Ok(vec![default; n]),
            Some(v) if v.len() == n => Ok(v.clone()),
            Some(v) => Err(OpError::attribute(
                name,
                format!("has {} values for {n} spatial axes", v.len()),
            )),
        }
    }

    /// Resolves strides, dilations, pads and the output size for `input` spatial dims and
    /// `kernel` dims. `ceil_mode` rounds the output size up (pools), dropping a last window
    /// that would start in the end padding.
    pub fn resolve(
        &self,
        input: &[usize],
        kernel: &[usize],
        ceil_mode: bool,
    ) -> OpResult<Geometry> {
        let n = input.len();
        if kernel.len() != n {
            return Err(OpError::Shape(format!(
                "kernel shape {kernel:?} does not match the {n} spatial dims of the input {input:?}"
            )));
        }
        if let Some(i) = kernel.iter().position(|&k| k == 0) {
            return Err(OpError::Shape(format!(
                "kernel shape {kernel:?} has an empty axis {i}"
            )));
        }
        let strides = Self::per_axis(&self.strides, n, "strides", 1)?;
        let dilations = Self::per_axis(&self.dilations, n, "dilations", 1)?;
        let mut pad_begin = vec![0; n];
        let mut pad_end = vec![0; n];
        let mut output = vec![0; n];
        let auto = self.auto_pad();
        if auto == AutoPad::NotSet {
            if let Some(p) = &self.pads {
                if p.len() != 2 * n {
                    return Err(OpError::attribute(
                        "pads",
                        format!("has {} values for {n} spatial axes", p.len()),
                    ));
                }
                pad_begin.copy_from_slice(&p[..n]);
                pad_end.copy_from_slice(&p[n..]);
            }
        }
        for i in 0..n {
            let dk = (kernel[i] - 1) * dilations[i] + 1;
            let s = strides[i];
            match auto {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    output[i] = input[i].div_ceil(s);
                    let total = ((output[i].max(1) - 1) * s + dk).saturating_sub(input[i]);
                    let small = total / 2;
                    if auto == AutoPad::SameUpper {
                        (pad_begin[i], pad_end[i]) = (small, total - small);
                    } else {
                        (pad_begin[i], pad_end[i]) = (total - small, small);
                    }
                }
                AutoPad::NotSet | AutoPad::Valid => {
                    let padded = input[i] + pad_begin[i] + pad_end[i];
                    if padded < dk {
                        return Err(OpError::Shape(format!(
                            "spatial axis {i}: input size {} with pads {}+{} is smaller than the dilated kernel {dk}",
                            input[i], pad_begin[i], pad_end[i]
                        )));
                    }
                    let span = padded - dk;
                    output[i] = if ceil_mode {
                        let mut o = span.div_ceil(s) + 1;
                        if (o - 1) * s >= input[i] + pad_begin[i] {
                            o -= 1;
                        }
                        o
                    } else {
                        span / s + 1
                    };
                }
            }
        }
        Ok(Geometry {
            input: input.to_vec(),
            kernel: kernel.to_vec(),
            strides,
            dilations,
            pad_begin,
            pad_end,
            output,
        })
    }
}

/// Resolved spatial geometry of one convolution or pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Input spatial dims.
    pub input: Vec<usize>,
    /// Kernel dims.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Padding before each axis.
    pub pad_begin: Vec<usize>,
    /// Padding after each axis.
    pub pad_end: Vec<usize>,
    /// Output spatial dims.
    pub output: Vec<usize>,
}

/// [`Geometry`] lifted to exactly three spatial axes (leading axes of size 1), so kernels can
/// use fixed triple loops for 1-D, 2-D and 3-D alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geo3 {
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub strides: [usize; 3],
    pub dilations: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
    pub output: [usize; 3],
}

impl Geo3 {
    pub fn in_size(&self) -> usize {
        self.input.iter().product()
    }
    pub fn out_size(&self) -> usize {
        self.output.iter().product()
    }
    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }

    /// The range of output positions `o` along axis `ax` for which kernel tap `k` reads inside
    /// the input: `0 <= o*s - p + k*d < in`.
    #[inline]
    pub fn valid_range(&self, ax: usize, k: usize) -> (usize, usize) {
        let (s, p, off) = (self.strides[ax], self.pad_begin[ax], k * self.dilations[ax]);
        let (n_in, n_out) = (self.input[ax], self.output[ax]);
        // o*s + off >= p  =>  o >= ceil((p - off) / s)
        let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
        // o*s + off - p <= n_in - 1  =>  o <= (n_in - 1 + p - off) / s
        let hi = if n_in + p > off {
            ((n_in + p - off - 1) / s + 1).min(n_out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// Splits `src` by parity: `src[2j]` to `even[j]`, `src[2j + 1]` to `odd[j]` (as far as
/// each destination reaches), in blocks of 32 and then 8 that the compiler turns into
/// shuffles.
#[inline(always)]
pub(crate) fn deinterleave2<F: Copy>(src: &[F], even: &mut [F], odd: &mut [F]) {
    let mut done = deinterleave_blocks::<F, 16, 32>(src, even, odd);
    done += deinterleave_blocks::<F, 4, 8>(&src[2 * done..], &mut even[done..], &mut odd[done..]);
    for (j, pair) in src[2 * done..].chunks(2).enumerate() {
        if let Some(d) = even.get_mut(done + j) {
            *d = pair[0];
        }
        if let (Some(d), Some(&v)) = (odd.get_mut(done + j), pair.get(1)) {
            *d = v;
        }
    }
}

/// The whole blocks of [`deinterleave2`] with `H` outputs per parity (`W = 2 * H` inputs);
/// returns the number of pairs split.
#[inline(always)]
fn deinterleave_blocks<F: Copy, const H: usize, const W: usize>(
    src: &[F],
    even: &mut [F],
    odd: &mut [F],
) -> usize {
    debug_assert_eq!(W, 2 * H);
    let blocks = (src.len() / (2 * H)).min(even.len() / H).min(odd.len() / H);
    for ((e, o), c) in even
        .chunks_exact_mut(H)
        .zip(odd.chunks_exact_mut(H))
        .zip(src.chunks_exact(2 * H))
        .take(blocks)
    {
        let (Ok(e), Ok(o), Ok(c)) = (
            <&mut [F; H]>::try_from(e),
            <&mut [F; H]>::try_from(o),
            <&[F; W]>::try_from(c),
        ) else {
            continue;
        };
        *e = std::array::from_fn(|j| c[2 * j]);
        *o = std::array::from_fn(|j| c[2 * j + 1]);
    }
    blocks * H
}

/// Visits one plane's kernel taps output row by output row, so each output row stays in L1
/// while every tap updates it: for output row `(z, y)` and each tap `t` (flat index over
/// `(kd, kh, kw)`) that reads inside the input, calls `tap(t, dst, src)` with `dst` the valid
/// range of the output row and `src` the input values those outputs read, both contiguous
/// and of equal length. With a width stride above 1 the plane is first split by phase into
/// `scratch` (column `j * s + p` of a row goes to phase row `p`), so strided taps read
/// contiguous memory too and the tap loops vectorize.
#[inline(always)]
pub(crate) fn for_each_tap_row<F: Copy + Default>(
    x: &[F],
    g: &Geo3,
    scratch: &mut Vec<F>,
    out: &mut [F],
    mut tap: impl FnMut(usize, &mut [F], &[F]),
) {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd_n, kh_n, kw_n] = g.kernel;
    let sw = g.strides[2];
    let phase_len = iw.div_ceil(sw);
    let rows: &[F] = if sw == 1 {
        x
    } else {
        scratch.clear();
        scratch.resize(id * ih * sw * phase_len, F::default());
        for (src, dst) in x
            .chunks_exact(iw)
            .zip(scratch.chunks_exact_mut(sw * phase_len))
        {
            if sw == 2 {
                let (even, odd) = dst.split_at_mut(phase_len);
                deinterleave2(src, even, odd);
                continue;
            }
            for (phase, dst) in dst.chunks_exact_mut(phase_len).enumerate() {
                for (d, &v) in dst.iter_mut().zip(src[phase.min(iw)..].iter().step_by(sw)) {
                    *d = v;
                }
            }
        }
        scratch
    };
    // Per width tap: valid output range and where its input starts (phase row, offset).
    // Computed once per plane for the first taps (a small array on the stack, as the integer
    // divisions would cost more than a short row's tap loop), on the fly for wider kernels.
    let width_tap = |kw: usize| {
        let (lo, hi) = g.valid_range(2, kw);
        let first = (lo * sw + kw * g.dilations[2]).saturating_sub(g.pad_begin[2]);
        (lo, hi, first % sw, first / sw)
    };
    const CACHED_TAPS: usize = 16;
    let mut cached = [(0, 0, 0, 0); CACHED_TAPS];
    for (kw, c) in cached.iter_mut().enumerate().take(kw_n) {
        *c = width_tap(kw);
    }
    let width_tap = |kw: usize| {
        if kw < CACHED_TAPS {
            cached[kw]
        } else {
            width_tap(kw)
        }
    };
    for z in 0..od {
        for y in 0..oh {
            let dst_row = &mut out[(z * oh + y) * ow..][..ow];
            for kd in 0..kd_n {
                let iz = (z * g.strides[0] + kd * g.dilations[0]).wrapping_sub(g.pad_begin[0]);
                if iz >= id {
                    continue;
                }
                for kh in 0..kh_n {
                    let iy = (y * g.strides[1] + kh * g.dilations[1]).wrapping_sub(g.pad_begin[1]);
                    if iy >= ih {
                        continue;
                    }
                    let row = &rows[(iz * ih + iy) * sw * phase_len..][..sw * phase_len];
                    for kw in 0..kw_n {
                        let (lo, hi, phase, start) = width_tap(kw);
                        if lo >= hi {
                            continue;
                        }
                        let src = &row[phase * phase_len + start..][..hi - lo];
                        tap((kd * kh_n + kh) * kw_n + kw, &mut dst_row[lo..hi], src);
                    }
                }
            }
        }
    }
}

impl Geometry {
    /// Lifts to three axes; errors for more than three spatial axes.
    pub(crate) fn geo3(&self) -> OpResult<Geo3> {
        let n = self.input.len();
        if n == 0 || n > 3 {
            return Err(OpError::Unsupported(format!(
                "{n} spatial axes (1 to 3 are supported)"
            )));
        }
        let lift = |v: &[usize], fill: usize| {
            let mut a = [fill; 3];
            a[3 - n..].copy_from_slice(v);
            a
        };
        Ok(Geo3 {
            input: lift(&self.input, 1),
            kernel: lift(&self.kernel, 1),
            strides: lift(&self.strides, 1),
            dilations: lift(&self.dilations, 1),
            pad_begin: lift(&self.pad_begin, 0),
            pad_end: lift(&self.pad_end, 0),
            output: lift(&self.output, 1),
        })
    }
}

/// The concrete shape of input `i`, when known.
pub(crate) fn concrete(inputs: &[Fact], i: usize) -> Option<Vec<usize>> {
    inputs.get(i).and_then(Fact::concrete_shape)
}

/// Validates a 0/1 flag attribute.
pub(crate) fn flag(attrs: &Attributes, name: &str, default: i64) -> OpResult<bool> {
    match attrs.int_or(name, default)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(OpError::attribute(name, format!("must be 0 or 1, got {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attribute;

    fn attrs(list: &[(&str, Attribute)]) -> Attributes {
        let mut a = Attributes::new();
        for (k, v) in list {
            a.insert(k, v.clone());
        }
        a
    }

    #[test]
    fn same_upper_and_lower_split_odd_padding() {
        let up = SpatialAttrs::parse(&attrs(&[
            ("auto_pad", Attribute::String(b"SAME_UPPER".to_vec())),
            ("strides", Attribute::Ints(vec![2])),
        ]))
        .unwrap();
        let g = up.resolve(&[5], &[4], false).unwrap();
        assert_eq!((g.output[0], g.pad_begin[0], g.pad_end[0]), (3, 1, 2));
        let low = SpatialAttrs {
            auto_pad: Some(AutoPad::SameLower),
            ..up
        };
        let g = low.resolve(&[5], &[4], false).unwrap();
        assert_eq!((g.pad_begin[0], g.pad_end[0]), (2, 1));
    }

    #[test]
    fn ceil_mode_drops_window_starting_in_padding() {
        let a = SpatialAttrs {
            strides: Some(vec![2]),
            pads: Some(vec![1, 1]),
            ..Default::default()
        };
        // (5 + 2 - 2) / 2 = 2.5 -> ceil 3 +1 = 4, but the 4th window starts at 6 >= 5 + 1.
        assert_eq!(a.resolve(&[5], &[2], true).unwrap().output, vec![3]);
        assert_eq!(a.resolve(&[5], &[2], false).unwrap().output, vec![3]);
        let b = SpatialAttrs {
            strides: Some(vec![2]),
            ..Default::default()
        };
        assert_eq!(b.resolve(&[4], &[3], true).unwrap().output, vec![2]);
        assert_eq!(b.resolve(&[4], &[3], false).unwrap().output, vec![1]);
    }

    #[test]
    fn invalid_attributes_are_errors() {
        assert!(SpatialAttrs::parse(&attrs(&[("pads", Attribute::Ints(vec![1, 2, 3]))])).is_err());
        assert!(SpatialAttrs::parse(&attrs(&[("strides", Attribute::Ints(vec![0]))])).is_err());
        assert!(
            SpatialAttrs::parse(&attrs(&[("auto_pad", Attribute::String(b"X".to_vec()))])).is_err()
        );
        let a = SpatialAttrs::default();
        assert!(a.resolve(&[2], &[3], false).is_err());
    }

    #[test]
    fn valid_range_clips_to_input() {
        let g = Geo3 {
            input: [1, 1, 5],
            kernel: [1, 1, 3],
            strides: [1, 1, 1],
            dilations: [1, 1, 1],
            pad_begin: [0, 0, 1],
            pad_end: [0, 0, 1],
            output: [1, 1, 5],
        };
        assert_eq!(g.valid_range(2, 0), (1, 5));
        assert_eq!(g.valid_range(2, 1), (0, 5));
        assert_eq!(g.valid_range(2, 2), (0, 4));
    }
}

/// Helpers for the kernels' unit tests: deterministic inputs, building ops through the
/// registry, and running them serially and on two threads.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::{
        Attribute, Attributes, BuildCtx, EvalCtx, Fact, HeapTensorAlloc, Inputs, OpRegistry,
        Operator, ParallelFor,
    };
    use strata_tensor::{DType, Tensor};

    /// Deterministic test values in multiples of 1/8 (seed -1: positive values, for variances).
    pub fn pat(n: usize, seed: i64) -> Vec<f32> {
        if seed == -1 {
            return pat(n, 3).iter().map(|v| v.abs() + 0.5).collect();
        }
        (0..n as i64)
            .map(|i| (((i * 37 + seed * 11) % 23) - 11) as f32 / 8.0)
            .collect()
    }

    /// A string attribute.
    pub fn s(v: &str) -> Attribute {
        Attribute::String(v.as_bytes().to_vec())
    }

    /// A float tensor.
    pub fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(data.to_vec(), shape).unwrap()
    }

    #[derive(Debug)]
    struct TwoThreads;
    impl ParallelFor for TwoThreads {
        fn threads(&self) -> usize {
            2
        }
        fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
            std::thread::scope(|s| {
                s.spawn(|| (0..tasks).step_by(2).for_each(task));
                s.spawn(|| (1..tasks).step_by(2).for_each(task));
            });
        }
    }

    /// Builds `op` at `opset` through the registry.
    pub fn build(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attribute)],
        inputs: usize,
        outputs: usize,
    ) -> Box<dyn Operator> {
        let mut a = Attributes::new();
        for (k, v) in attrs {
            a.insert(k, v.clone());
        }
        let registry = OpRegistry::with_cpu_kernels();
        let ctx = BuildCtx {
            node_name: "test",
            op_type: op,
            domain: "",
            opset,
            attrs: &a,
            input_count: inputs,
            output_count: outputs,
        };
        registry.build(&ctx).unwrap()
    }

    /// The error message of building `op` with these attributes.
    pub fn build_err(op: &str, opset: i64, attrs: &[(&str, Attribute)]) -> String {
        let mut a = Attributes::new();
        for (k, v) in attrs {
            a.insert(k, v.clone());
        }
        let ctx = BuildCtx {
            node_name: "test",
            op_type: op,
            domain: "",
            opset,
            attrs: &a,
            input_count: 1,
            output_count: 1,
        };
        OpRegistry::with_cpu_kernels()
            .build(&ctx)
            .unwrap_err()
            .to_string()
    }

    /// Evaluates serially and on two threads, checks both agree and that `infer` predicts the
    /// output facts, and returns the outputs.
    pub fn eval(op: &dyn Operator, inputs: &[Option<Tensor>]) -> Vec<Tensor> {
        let values = || Inputs::new(inputs.iter().map(|t| t.clone().map(Into::into)).collect());
        let serial: Vec<Tensor> = op
            .eval(&EvalCtx::default(), values())
            .unwrap()
            .into_iter()
            .map(|v| v.into_tensor().unwrap())
            .collect();
        let ctx2 = EvalCtx {
            parallel: &TwoThreads,
            alloc: &HeapTensorAlloc,
        };
        let par: Vec<Tensor> = op
            .eval(&ctx2, values())
            .unwrap()
            .into_iter()
            .map(|v| v.into_tensor().unwrap())
            .collect();
        assert_eq!(serial.len(), par.len());
        for (a, b) in serial.iter().zip(&par) {
            assert_eq!(a.shape(), b.shape());
            close(&f64s(a), &f64s(b), 1e-6);
        }
        let facts = facts_of(inputs);
        if let Some(inferred) = op.infer(&facts).unwrap() {
            assert_eq!(inferred.len(), serial.len(), "inferred output count");
            for (f, t) in inferred.iter().zip(&serial) {
                assert_eq!(
                    f.concrete_shape().as_deref(),
                    Some(t.shape()),
                    "inferred shape"
                );
                assert_eq!(f.dtype, Some(t.dtype()), "inferred dtype");
            }
        }
        serial
    }

    /// The elements as f64.
    /// The facts of `inputs` (default for a missing one).
    pub fn facts_of(inputs: &[Option<Tensor>]) -> Vec<Fact> {
        inputs
            .iter()
            .map(|t| {
                t.as_ref()
                    .map_or_else(Fact::default, |t| Fact::known(t.dtype(), t.shape()))
            })
            .collect()
    }

    pub fn f64s(t: &Tensor) -> Vec<f64> {
        t.cast(DType::F64).unwrap().to_vec::<f64>().unwrap()
    }

    /// Asserts elementwise closeness (absolute plus relative tolerance).
    pub fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "lengths differ");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let same_special = (x.is_nan() && y.is_nan()) || (x.is_infinite() && x == y);
            assert!(
                same_special || (x - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} vs {y}\n got {a:?}\nwant {b:?}"
            );
        }
    }

    /// Runs an op on [`pat`] inputs (f32, then f64) and compares with expected outputs
    /// computed by onnxruntime (or the ONNX reference implementation).
    pub fn golden(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attribute)],
        inputs: &[(&[usize], i64)],
        expected: &[(&[usize], &[f64])],
    ) {
        let o = build(op, opset, attrs, inputs.len(), expected.len());
        for dt in [DType::F32, DType::F64] {
            let ins: Vec<Option<Tensor>> = inputs
                .iter()
                .map(|(shape, seed)| {
                    let n = shape.iter().product();
                    Some(
                        Tensor::from_vec(pat(n, *seed), shape)
                            .unwrap()
                            .cast(dt)
                            .unwrap(),
                    )
                })
                .collect();
            let outs = eval(o.as_ref(), &ins);
            assert_eq!(outs.len(), expected.len());
            for (got, (shape, want)) in outs.iter().zip(expected) {
                assert_eq!(got.shape(), *shape);
                close(&f64s(got), want, 1e-4);
            }
        }
    }
}

#[cfg(test)]
mod golden;

/// Rough single-thread timings of hot kernels (`cargo test -p strata-ops -- --ignored
/// bench_ --nocapture`).
#[cfg(test)]
mod bench {
    use super::testutil::{build, pat, t};
    use crate::{Attribute, EvalCtx, Inputs};

    fn time(name: &str, op: &str, opset: i64, attrs: &[(&str, Attribute)], shapes: &[&[usize]]) {
        let o = build(op, opset, attrs, shapes.len(), 1);
        let ins: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| t(&pat(s.iter().product(), i as i64), s))
            .collect();
        let ctx = EvalCtx::default();
        let run = || o.eval(&ctx, Inputs::from_tensors(ins.clone())).unwrap();
        run();
        let start = std::time::Instant::now();
        let reps = 5;
        for _ in 0..reps {
            run();
        }
        println!(
            "{name}: {:.3} ms",
            start.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }

    #[test]
    #[ignore]
    fn bench_kernels() {
        let p1 = ("pads", Attribute::Ints(vec![1, 1, 1, 1]));
        time(
            "conv3x3 64->64 56x56",
            "Conv",
            11,
            std::slice::from_ref(&p1),
            &[&[1, 64, 56, 56], &[64, 64, 3, 3], &[64]],
        );
        time(
            "conv1x1 64->256 56x56",
            "Conv",
            11,
            &[],
            &[&[1, 64, 56, 56], &[256, 64, 1, 1], &[256]],
        );
        time(
            "conv7x7s2 3->64 224",
            "Conv",
            11,
            &[
                ("pads", Attribute::Ints(vec![3, 3, 3, 3])),
                ("strides", Attribute::Ints(vec![2, 2])),
            ],
            &[&[1, 3, 224, 224], &[64, 3, 7, 7]],
        );
        time(
            "dw3x3 128 56x56",
            "Conv",
            11,
            &[p1.clone(), ("group", Attribute::Int(128))],
            &[&[1, 128, 56, 56], &[128, 1, 3, 3], &[128]],
        );
        time(
            "dw3x3s2 128 56x56",
            "Conv",
            11,
            &[
                p1.clone(),
                ("group", Attribute::Int(128)),
                ("strides", Attribute::Ints(vec![2, 2])),
            ],
            &[&[1, 128, 56, 56], &[128, 1, 3, 3]],
        );
        time(
            "convT 4x4s2 64->32 28",
            "ConvTranspose",
            11,
            &[p1.clone(), ("strides", Attribute::Ints(vec![2, 2]))],
            &[&[1, 64, 28, 28], &[64, 32, 4, 4]],
        );
        time(
            "maxpool3x3s2 64x112",
            "MaxPool",
            12,
            &[
                ("kernel_shape", Attribute::Ints(vec![3, 3])),
                ("strides", Attribute::Ints(vec![2, 2])),
                p1,
            ],
            &[&[1, 64, 112, 112]],
        );
        time(
            "matmul 512x768x768",
            "MatMul",
            13,
            &[],
            &[&[512, 768], &[768, 768]],
        );
        time(
            "matmul 64x576x3136",
            "MatMul",
            13,
            &[],
            &[&[64, 576], &[576, 3136]],
        );
        time(
            "matmul 3136x576x64",
            "MatMul",
            13,
            &[],
            &[&[3136, 576], &[576, 64]],
        );
        time("softmax 12x128x128", "Softmax", 13, &[], &[&[12, 128, 128]]);
        time(
            "layernorm 512x768",
            "LayerNormalization",
            17,
            &[],
            &[&[512, 768], &[768], &[768]],
        );
    }
}
