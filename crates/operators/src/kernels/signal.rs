//! Signal-processing ops: `DFT` (opset 17 with the axis as an attribute, opset 20 with it as
//! an input), `STFT`, the `HannWindow`, `HammingWindow` and `BlackmanWindow` generators and
//! `MelWeightMatrix`.
//!
//! Signals carry real (`[..., 1]`) or complex (`[..., 2]`: real, imaginary) samples in their
//! last dimension. Transforms run in f64 (radix-2 FFT for power-of-two lengths, a direct DFT
//! otherwise) and results are cast back to the input dtype.

use super::staging::{
    dtype_attr, f64_output, float_values, opt_scalar_int, scalar_f64, scalar_int,
};
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use std::f64::consts::PI;
use strata_tensor::{DType, Tensor};

/// Registers the signal ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register_range("", "DFT", 17, 19, build_dft);
    registry.register("", "DFT", 20, build_dft);
    registry.register("", "STFT", 17, |b| {
        Ok(Box::new(Stft {
            onesided: b.attrs.int_or("onesided", 1)? != 0,
        }))
    });
    registry.register("", "HannWindow", 17, |b| build_window(b, WindowKind::Hann));
    registry.register("", "HammingWindow", 17, |b| {
        build_window(b, WindowKind::Hamming)
    });
    registry.register("", "BlackmanWindow", 17, |b| {
        build_window(b, WindowKind::Blackman)
    });
    registry.register("", "MelWeightMatrix", 17, |b| {
        Ok(Box::new(MelWeightMatrix {
            dtype: dtype_attr("output_datatype", b.attrs.int_or("output_datatype", 1)?)?,
        }))
    });
}

// ----- complex arithmetic and transforms -----------------------------------------------------

/// A complex number in f64.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct C64 {
    re: f64,
    im: f64,
}

impl C64 {
    fn add(self, o: C64) -> C64 {
        C64 {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    fn sub(self, o: C64) -> C64 {
        C64 {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
    fn mul(self, o: C64) -> C64 {
        C64 {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn conj(self) -> C64 {
        C64 {
            re: self.re,
            im: -self.im,
        }
    }
}

/// `e^(sign * 2 pi i j / n)`.
fn twiddle(j: usize, n: usize, sign: f64) -> C64 {
    let a = sign * 2.0 * PI * j as f64 / n as f64;
    C64 {
        re: a.cos(),
        im: a.sin(),
    }
}

/// Transforms `buf` in place: forward with `e^(-2 pi i k t / n)`, inverse with the opposite
/// sign and a `1 / n` scale (numpy's `fft` / `ifft`).
fn transform(buf: &mut Vec<C64>, inverse: bool) {
    let n = buf.len();
    let sign = if inverse { 1.0 } else { -1.0 };
    if n > 1 && n.is_power_of_two() {
        fft_radix2(buf, sign);
    } else if n > 1 {
        dft_direct(buf, sign);
    }
    if inverse && n > 0 {
        let s = 1.0 / n as f64;
        for v in buf.iter_mut() {
            v.re *= s;
            v.im *= s;
        }
    }
}

fn dft_direct(buf: &mut Vec<C64>, sign: f64) {
    let n = buf.len();
    let w: Vec<C64> = (0..n).map(|j| twiddle(j, n, sign)).collect();
    let out = (0..n)
        .map(|k| {
            let mut acc = C64::default();
            let mut idx = 0usize;
            for x in buf.iter() {
                if let Some(&t) = w.get(idx) {
                    acc = acc.add(x.mul(t));
                }
                idx += k;
                if idx >= n {
                    idx -= n;
                }
            }
            acc
        })
        .collect();
    *buf = out;
}

/// Iterative radix-2 FFT; `buf.len()` must be a power of two greater than one.
fn fft_radix2(buf: &mut [C64], sign: f64) {
    let n = buf.len();
    let shift = usize::BITS - n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> shift;
        if j > i {
            buf.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let w: Vec<C64> = (0..len / 2).map(|j| twiddle(j, len, sign)).collect();
        for chunk in buf.chunks_mut(len) {
            let (a, b) = chunk.split_at_mut(len / 2);
            for ((x, y), w) in a.iter_mut().zip(b.iter_mut()).zip(&w) {
                let t = y.mul(*w);
                let u = *x;
                *x = u.add(t);
                *y = u.sub(t);
            }
        }
        len <<= 1;
    }
}

// ----- signal layout -------------------------------------------------------------------------

/// A signal tensor viewed as `outer x n x inner` complex samples along one axis, with `comps`
/// (1 or 2) numbers per sample.
#[derive(Debug, Clone, Copy)]
struct Lines {
    outer: usize,
    n: usize,
    inner: usize,
    comps: usize,
}

impl Lines {
    /// The layout of `shape` along `axis` (already normalized to `0..rank - 1`).
    fn new(shape: &[usize], axis: usize) -> OpResult<Lines> {
        let rank = shape.len();
        let comps = shape.last().copied().unwrap_or(0);
        if rank < 2 || !(1..=2).contains(&comps) || axis + 1 >= rank {
            return Err(OpError::invalid(
                0,
                format!(
                    "signal of shape {shape:?} must have rank >= 2, a last dimension of 1 \
                     (real) or 2 (complex), and the transform axis {axis} before it"
                ),
            ));
        }
        Ok(Lines {
            outer: shape[..axis].iter().product(),
            n: shape[axis],
            inner: shape[axis + 1..rank - 1].iter().product(),
            comps,
        })
    }

    /// The samples of line (`o`, `i`), truncated or zero-padded to `len`.
    fn read(&self, data: &[f64], o: usize, i: usize, len: usize) -> Vec<C64> {
        (0..len)
            .map(|t| {
                if t >= self.n {
                    return C64::default();
                }
                let at = ((o * self.n + t) * self.inner + i) * self.comps;
                C64 {
                    re: data.get(at).copied().unwrap_or(0.0),
                    im: if self.comps == 2 {
                        data.get(at + 1).copied().unwrap_or(0.0)
                    } else {
                        0.0
                    },
                }
            })
            .collect()
    }

    /// Writes `line` as line (`o`, `i`) of `out`, whose layout is `self`.
    fn write(&self, out: &mut [f64], o: usize, i: usize, line: &[C64]) {
        for (t, v) in line.iter().take(self.n).enumerate() {
            let at = ((o * self.n + t) * self.inner + i) * self.comps;
            if let Some(slot) = out.get_mut(at) {
                *slot = v.re;
            }
            if self.comps == 2 {
                if let Some(slot) = out.get_mut(at + 1) {
                    *slot = v.im;
                }
            }
        }
    }
}

// ----- DFT ----------------------------------------------------------------------------------

/// `DFT`: forward or inverse discrete Fourier transform along one axis. `onesided` keeps the
/// first `n / 2 + 1` bins of a forward transform; with `inverse` it reads such a half spectrum
/// and produces a real signal of `dft_length` samples (numpy's `irfft`).
#[derive(Debug, Clone, Copy)]
pub struct Dft {
    /// The axis attribute (opsets 17 to 19); from opset 20 the axis is input 2.
    pub axis_attr: Option<i64>,
    /// Inverse transform.
    pub inverse: bool,
    /// One-sided (real-signal) spectrum.
    pub onesided: bool,
}

fn build_dft(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    Ok(Box::new(Dft {
        axis_attr: if ctx.opset < 20 {
            Some(a.int_or("axis", 1)?)
        } else {
            None
        },
        inverse: a.int_or("inverse", 0)? != 0,
        onesided: a.int_or("onesided", 0)? != 0,
    }))
}

impl Dft {
    fn axis(&self, inputs: &Inputs, rank: usize) -> OpResult<usize> {
        let axis = match self.axis_attr {
            Some(a) => a,
            None => opt_scalar_int(inputs, 2)?.unwrap_or(-2),
        };
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a + 1 >= r {
            return Err(OpError::invalid(
                2,
                format!(
                    "axis {axis} is outside [-{r}, {}] for a signal of rank {r}",
                    r - 2
                ),
            ));
        }
        Ok(a as usize)
    }
}

/// The full spectrum of `len` bins from a one-sided one (Hermitian symmetry), as numpy's
/// `irfft` reads it: missing bins are zero and the imaginary parts of the DC and Nyquist bins
/// are ignored.
fn hermitian_full(half: &[C64], len: usize) -> Vec<C64> {
    let m = len / 2 + 1;
    let mut full: Vec<C64> = (0..len)
        .map(|k| half.get(k).copied().filter(|_| k < m).unwrap_or_default())
        .collect();
    for k in m..len {
        full[k] = full[len - k].conj();
    }
    if let Some(v) = full.first_mut() {
        v.im = 0.0;
    }
    if len.is_multiple_of(2) {
        if let Some(v) = full.get_mut(len / 2) {
            v.im = 0.0;
        }
    }
    full
}

impl Operator for Dft {
    crate::op_boilerplate!("DFT");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let shape = x.shape().to_vec();
        let axis = self.axis(&inputs, shape.len())?;
        let src = Lines::new(&shape, axis)?;
        let irfft = self.inverse && self.onesided;
        let len = match opt_scalar_int(&inputs, 1)? {
            Some(l) if l >= 1 => l as usize,
            Some(l) => return Err(OpError::invalid(1, format!("dft_length {l} must be >= 1"))),
            None if irfft => 2 * src.n.saturating_sub(1),
            None => src.n,
        };
        if len == 0 {
            return Err(OpError::invalid(
                0,
                format!("empty transform axis in {shape:?}"),
            ));
        }
        let dst = Lines {
            n: match (irfft, self.onesided) {
                (true, _) | (false, false) => len,
                (false, true) => len / 2 + 1,
            },
            comps: if irfft { 1 } else { 2 },
            ..src
        };
        let data = float_values(x, 0)?;
        let mut out = vec![0.0; dst.outer * dst.n * dst.inner * dst.comps];
        for o in 0..src.outer {
            for i in 0..src.inner {
                let mut line = if irfft {
                    hermitian_full(&src.read(&data, o, i, len / 2 + 1), len)
                } else {
                    src.read(&data, o, i, len)
                };
                transform(&mut line, self.inverse);
                dst.write(&mut out, o, i, &line);
            }
        }
        let mut oshape = shape;
        oshape[axis] = dst.n;
        if let Some(last) = oshape.last_mut() {
            *last = dst.comps;
        }
        Ok(vec![f64_output(ctx, &out, &oshape, x.dtype())?.into()])
    }
}

// ----- STFT ---------------------------------------------------------------------------------

/// `STFT`: short-time Fourier transform of `[batch, length, 1 | 2]` signals into
/// `[batch, frames, bins, 2]`, each frame multiplied by the window before its DFT.
#[derive(Debug, Clone, Copy)]
pub struct Stft {
    /// Keep only the first `frame_length / 2 + 1` bins.
    pub onesided: bool,
}

impl Operator for Stft {
    crate::op_boilerplate!("STFT");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let shape = x.shape().to_vec();
        if shape.len() != 3 {
            return Err(OpError::invalid(
                0,
                format!("signal must be [batch, length, 1 | 2], got {shape:?}"),
            ));
        }
        let src = Lines::new(&shape, 1)?;
        let step = scalar_int(&inputs, 1)?;
        if step < 1 {
            return Err(OpError::invalid(
                1,
                format!("frame_step {step} must be >= 1"),
            ));
        }
        let window = match inputs.opt_tensor(2)? {
            Some(w) if w.rank() == 1 => Some(float_values(w, 2)?),
            Some(w) => {
                return Err(OpError::invalid(
                    2,
                    format!("window must be 1-D, got {:?}", w.shape()),
                ))
            }
            None => None,
        };
        let frame_len = match (opt_scalar_int(&inputs, 3)?, &window) {
            (Some(l), _) => usize::try_from(l).unwrap_or(0),
            (None, Some(w)) => w.len(),
            (None, None) => src.n,
        };
        if frame_len == 0 || frame_len > src.n {
            return Err(OpError::invalid(
                3,
                format!("frame length {frame_len} must be in 1..={}", src.n),
            ));
        }
        let window = window.unwrap_or_else(|| vec![1.0; frame_len]);
        let frames = 1 + (src.n - frame_len) / step as usize;
        let bins = if self.onesided {
            frame_len / 2 + 1
        } else {
            frame_len
        };
        let data = float_values(x, 0)?;
        let mut out = vec![0.0; src.outer * frames * bins * 2];
        let dst = Lines {
            outer: src.outer * frames,
            n: bins,
            inner: 1,
            comps: 2,
        };
        for b in 0..src.outer {
            let signal = src.read(&data, b, 0, src.n);
            for f in 0..frames {
                let begin = f * step as usize;
                let mut line: Vec<C64> = window
                    .iter()
                    .enumerate()
                    .map(|(t, &w)| {
                        let s = signal.get(begin + t).copied().unwrap_or_default();
                        C64 {
                            re: s.re * w,
                            im: s.im * w,
                        }
                    })
                    .collect();
                line.resize(frame_len, C64::default());
                transform(&mut line, false);
                dst.write(&mut out, b * frames + f, 0, &line);
            }
        }
        let oshape = [src.outer, frames, bins, 2];
        Ok(vec![f64_output(ctx, &out, &oshape, x.dtype())?.into()])
    }
}

// ----- windows ------------------------------------------------------------------------------

/// Which window a [`Window`] op generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `sin^2(pi n / N)`.
    Hann,
    /// `25/46 - 21/46 cos(2 pi n / N)`.
    Hamming,
    /// `0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)`.
    Blackman,
}

/// `HannWindow`, `HammingWindow`, `BlackmanWindow`: a window of `size` samples, periodic
/// (`N = size`) or symmetric (`N = size - 1`). A symmetric window of one sample is `[1]`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The window function.
    pub kind: WindowKind,
    /// Periodic (true) or symmetric.
    pub periodic: bool,
    /// Output dtype.
    pub dtype: DType,
}

fn build_window(b: &BuildCtx<'_>, kind: WindowKind) -> OpResult<Box<dyn Operator>> {
    Ok(Box::new(Window {
        kind,
        periodic: b.attrs.int_or("periodic", 1)? != 0,
        dtype: dtype_attr("output_datatype", b.attrs.int_or("output_datatype", 1)?)?,
    }))
}

impl Window {
    fn value(&self, n: usize, big_n: usize) -> f64 {
        if big_n == 0 {
            return 1.0;
        }
        let x = 2.0 * PI * n as f64 / big_n as f64;
        match self.kind {
            WindowKind::Hann => (PI * n as f64 / big_n as f64).sin().powi(2),
            WindowKind::Hamming => 25.0 / 46.0 - (21.0 / 46.0) * x.cos(),
            WindowKind::Blackman => 0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos(),
        }
    }
}

impl Operator for Window {
    fn op_type(&self) -> &str {
        match self.kind {
            WindowKind::Hann => "HannWindow",
            WindowKind::Hamming => "HammingWindow",
            WindowKind::Blackman => "BlackmanWindow",
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let size = scalar_int(&inputs, 0)?;
        let size = usize::try_from(size)
            .map_err(|_| OpError::invalid(0, format!("window size {size} is negative")))?;
        super::shape::checked_numel(&[size])?;
        let big_n = if self.periodic {
            size
        } else {
            size.saturating_sub(1)
        };
        let values: Vec<f64> = (0..size).map(|n| self.value(n, big_n)).collect();
        Ok(vec![f64_output(ctx, &values, &[size], self.dtype)?.into()])
    }
}

// ----- MelWeightMatrix ----------------------------------------------------------------------

/// `MelWeightMatrix`: `[dft_length / 2 + 1, num_mel_bins]` triangular filters mapping a
/// one-sided spectrum to mel bands, computed as the ONNX reference does (bin edges floored to
/// spectrum indices).
#[derive(Debug, Clone, Copy)]
pub struct MelWeightMatrix {
    /// Output dtype.
    pub dtype: DType,
}

/// Python's float floor division (`a // b`), which numpy's `//` also follows.
fn py_floor_div(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div == 0.0 {
        return 0.0f64.copysign(a / b);
    }
    let f = div.floor();
    if div - f > 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// `2595 log10(1 + hz / 700)`, with the logarithm in f32 when the input is f32 (as numpy
/// evaluates the reference).
fn hz_to_mel(hz: f64, single: bool) -> f64 {
    let l = if single {
        (2595.0f32 * (hz as f32 / 700.0).ln_1p()) as f64
    } else {
        2595.0 * (hz / 700.0).ln_1p()
    };
    l / std::f64::consts::LN_10
}

impl MelWeightMatrix {
    fn edges(&self, inputs: &Inputs, mel_bins: usize, dft_len: i64) -> OpResult<Vec<i64>> {
        let rate = scalar_f64(inputs, 2)?;
        if rate <= 0.0 {
            return Err(OpError::invalid(
                2,
                format!("sample_rate {rate} must be > 0"),
            ));
        }
        let single = inputs.tensor(3)?.dtype() != DType::F64;
        let low = hz_to_mel(scalar_f64(inputs, 3)?, single);
        let high = hz_to_mel(scalar_f64(inputs, 4)?, single);
        let step = (high - low) / (mel_bins + 2) as f64;
        Ok((0..mel_bins + 2)
            .map(|i| {
                let mel = i as f64 * step + low;
                let hz = 700.0 * (mel / 2595.0 * std::f64::consts::LN_10).exp_m1();
                py_floor_div((dft_len + 1) as f64 * hz, rate) as i64
            })
            .collect())
    }
}

impl Operator for MelWeightMatrix {
    crate::op_boilerplate!("MelWeightMatrix");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let mel_bins = scalar_int(&inputs, 0)?;
        let dft_len = scalar_int(&inputs, 1)?;
        if mel_bins < 1 || dft_len < 1 {
            return Err(OpError::invalid(
                0,
                format!("num_mel_bins {mel_bins} and dft_length {dft_len} must be >= 1"),
            ));
        }
        let mel_bins = mel_bins as usize;
        let spec_bins = (dft_len / 2 + 1) as usize;
        super::shape::checked_numel(&[spec_bins, mel_bins])?;
        let edges = self.edges(&inputs, mel_bins, dft_len)?;
        let mut out = vec![0.0f64; spec_bins * mel_bins];
        let mut set = |j: i64, i: usize, v: f64| -> OpResult<()> {
            let slot = usize::try_from(j)
                .ok()
                .filter(|&j| j < spec_bins)
                .and_then(|j| out.get_mut(j * mel_bins + i))
                .ok_or_else(|| {
                    OpError::invalid(
                        4,
                        format!("mel band edge at spectrum bin {j} is outside 0..{spec_bins}"),
                    )
                })?;
            *slot = v;
            Ok(())
        };
        for (i, w) in edges.windows(3).enumerate() {
            let (lo, center, hi) = (w[0], w[1], w[2]);
            if center == lo {
                set(center, i, 1.0)?;
            } else {
                for j in lo..=center {
                    set(j, i, (j - lo) as f64 / (center - lo) as f64)?;
                }
            }
            for j in center..hi {
                set(j, i, (hi - j) as f64 / (hi - center) as f64)?;
            }
        }
        let t = Tensor::from_vec(out, &[spec_bins, mel_bins])?;
        Ok(vec![f64_output(
            ctx,
            t.as_slice::<f64>()?,
            t.shape(),
            self.dtype,
        )?
        .into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Attributes};

    fn run(op: &str, opset: i64, attrs: Attributes, inputs: Vec<Option<Tensor>>) -> Tensor {
        let mut r = OpRegistry::new();
        register(&mut r);
        let ctx = BuildCtx {
            node_name: "",
            op_type: op,
            domain: "",
            opset,
            attrs: &attrs,
            input_count: inputs.len(),
            output_count: 1,
        };
        let inputs = Inputs::new(inputs.into_iter().map(|t| t.map(Value::Tensor)).collect());
        let out = r
            .build(&ctx)
            .unwrap()
            .eval(&EvalCtx::default(), inputs)
            .unwrap();
        out.into_iter().next().and_then(Value::into_tensor).unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn fft_matches_direct_dft() {
        let x: Vec<C64> = (0..8)
            .map(|i| C64 {
                re: i as f64,
                im: (i * i) as f64 * 0.5,
            })
            .collect();
        let mut a = x.clone();
        let mut b = x.clone();
        fft_radix2(&mut a, -1.0);
        dft_direct(&mut b, -1.0);
        for (p, q) in a.iter().zip(&b) {
            assert!((p.re - q.re).abs() < 1e-9 && (p.im - q.im).abs() < 1e-9);
        }
        transform(&mut a, true);
        for (p, q) in a.iter().zip(&x) {
            assert!((p.re - q.re).abs() < 1e-9 && (p.im - q.im).abs() < 1e-9);
        }
    }

    #[test]
    fn dft_real_onesided_and_irfft_round_trip() {
        // x = [1, 2, 3] -> X = [6, -1.5+0.866i, -1.5-0.866i]
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[1, 3, 1]).unwrap();
        let y = run("DFT", 20, Attributes::new(), vec![Some(x.clone())]);
        assert_eq!(y.shape(), &[1, 3, 2]);
        close(
            y.as_slice::<f32>().unwrap(),
            &[6.0, 0.0, -1.5, 0.866_025_4, -1.5, -0.866_025_4],
        );
        let one = Attributes::new().with("onesided", Attribute::Int(1));
        let half = run("DFT", 17, one.clone(), vec![Some(x), None]);
        assert_eq!(half.shape(), &[1, 2, 2]);
        let inv = one.with("inverse", Attribute::Int(1));
        let len = Tensor::from_vec(vec![3i64], &[]).unwrap();
        let back = run("DFT", 17, inv, vec![Some(half), Some(len)]);
        assert_eq!(back.shape(), &[1, 3, 1]);
        close(back.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn dft_rejects_the_component_axis() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]).unwrap();
        let axis = Tensor::from_vec(vec![1i64], &[]).unwrap();
        let mut r = OpRegistry::new();
        register(&mut r);
        let attrs = Attributes::new();
        let ctx = BuildCtx {
            node_name: "",
            op_type: "DFT",
            domain: "",
            opset: 20,
            attrs: &attrs,
            input_count: 3,
            output_count: 1,
        };
        let inputs = Inputs::new(vec![Some(x.into()), None, Some(axis.into())]);
        let err = r.build(&ctx).unwrap().eval(&EvalCtx::default(), inputs);
        assert!(err.is_err());
    }

    #[test]
    fn stft_of_constant_signal() {
        let x = Tensor::from_vec(vec![1.0f32; 6], &[1, 6, 1]).unwrap();
        let step = Tensor::from_vec(vec![2i64], &[]).unwrap();
        let len = Tensor::from_vec(vec![4i64], &[]).unwrap();
        let y = run(
            "STFT",
            17,
            Attributes::new(),
            vec![Some(x), Some(step), None, Some(len)],
        );
        assert_eq!(y.shape(), &[1, 2, 3, 2]);
        close(
            y.as_slice::<f32>().unwrap(),
            &[4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
    }

    #[test]
    fn windows() {
        let size = || Some(Tensor::from_vec(vec![4i32], &[]).unwrap());
        let hann = run("HannWindow", 17, Attributes::new(), vec![size()]);
        close(hann.as_slice::<f32>().unwrap(), &[0.0, 0.5, 1.0, 0.5]);
        let sym = Attributes::new().with("periodic", Attribute::Int(0));
        let hamming = run("HammingWindow", 17, sym, vec![size()]);
        close(
            hamming.as_slice::<f32>().unwrap(),
            &[0.086_956_5, 0.771_739_1, 0.771_739_1, 0.086_956_5],
        );
        let f64_out = Attributes::new().with("output_datatype", Attribute::Int(11));
        let blackman = run("BlackmanWindow", 17, f64_out, vec![size()]);
        assert_eq!(blackman.dtype(), DType::F64);
        let b = blackman.as_slice::<f64>().unwrap();
        assert!((b[0]).abs() < 1e-12 && (b[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn mel_weight_matrix_small() {
        let i = |v: i32| Some(Tensor::from_vec(vec![v], &[]).unwrap());
        let f = |v: f32| Some(Tensor::from_vec(vec![v], &[]).unwrap());
        let y = run(
            "MelWeightMatrix",
            17,
            Attributes::new(),
            vec![i(2), i(8), i(8000), f(0.0), f(4000.0)],
        );
        assert_eq!(y.shape(), &[5, 2]);
        // Each filter is a triangle with its peak set to one.
        let v = y.as_slice::<f32>().unwrap();
        assert!(v.iter().all(|&w| (0.0..=1.0).contains(&w)));
        assert!(v.iter().filter(|&&w| w == 1.0).count() >= 2);
        assert_eq!(py_floor_div(7.0, 2.0), 3.0);
        assert_eq!(py_floor_div(-7.0, 2.0), -4.0);
    }
}
