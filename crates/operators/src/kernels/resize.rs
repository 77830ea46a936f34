//! `Resize` (opsets 10-25) and `Upsample` (opsets 7-9): nearest, linear and cubic
//! interpolation (with antialiasing for linear and cubic), every coordinate transformation
//! mode, `axes` and `keep_aspect_ratio_policy`.
//!
//! Interpolation is separable: the kernel resizes one axis at a time in f64, as the ONNX
//! reference does, gathering a fixed number of taps per output index.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{dispatch_numeric, Element, Tensor};

/// Registers `Resize` and `Upsample`.
pub fn register(registry: &mut OpRegistry) {
    registry.register_range("", "Upsample", 7, 9, build_upsample);
    registry.register_range("", "Resize", 10, 10, build_resize10);
    registry.register("", "Resize", 11, build_resize);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Resize 10 / Upsample (as onnxruntime): floor when upsampling, ceil when downsampling.
    Simple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aspect {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// `Resize` / `Upsample` with parsed attributes.
#[derive(Debug, Clone)]
pub struct Resize {
    mode: Mode,
    nearest: NearestMode,
    coord: Coord,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    aspect: Aspect,
    antialias: bool,
    axes: Option<Vec<i64>>,
    /// Input positions of roi, scales and sizes (None when the op version lacks them).
    roi_at: Option<usize>,
    scales_at: Option<usize>,
    sizes_at: Option<usize>,
    /// Upsample opset 7: scales as an attribute.
    scales_attr: Option<Vec<f32>>,
    op: &'static str,
}

fn parse_mode(ctx: &BuildCtx<'_>) -> OpResult<Mode> {
    match ctx.attrs.string_or("mode", "nearest")?.as_str() {
        "nearest" => Ok(Mode::Nearest),
        "linear" | "bilinear" | "trilinear" => Ok(Mode::Linear),
        "cubic" | "bicubic" => Ok(Mode::Cubic),
        other => Err(OpError::attribute(
            "mode",
            format!("unknown mode '{other}'"),
        )),
    }
}

fn base(ctx: &BuildCtx<'_>, op: &'static str) -> OpResult<Resize> {
    Ok(Resize {
        mode: parse_mode(ctx)?,
        nearest: NearestMode::Simple,
        coord: Coord::Asymmetric,
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        aspect: Aspect::Stretch,
        antialias: false,
        axes: None,
        roi_at: None,
        scales_at: None,
        sizes_at: None,
        scales_attr: None,
        op,
    })
}

fn build_upsample(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let mut r = base(ctx, "Upsample")?;
    if r.mode == Mode::Cubic {
        return Err(OpError::attribute(
            "mode",
            "Upsample supports nearest and linear",
        ));
    }
    if ctx.opset < 9 {
        r.scales_attr = Some(
            ctx.attrs
                .floats("scales")?
                .ok_or_else(|| OpError::attribute("scales", "is required"))?,
        );
    } else {
        r.scales_at = Some(1);
    }
    Ok(Box::new(r))
}

fn build_resize10(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let mut r = base(ctx, "Resize")?;
    if r.mode == Mode::Cubic {
        return Err(OpError::attribute(
            "mode",
            "opset 10 supports nearest and linear",
        ));
    }
    r.scales_at = Some(1);
    Ok(Box::new(r))
}

fn build_resize(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let mut r = base(ctx, "Resize")?;
    r.nearest = match a.string_or("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => {
            return Err(OpError::attribute(
                "nearest_mode",
                format!("unknown value '{other}'"),
            ))
        }
    };
    r.coord = match a
        .string_or("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_crop_and_resize" => Coord::TfCropAndResize,
        other => {
            return Err(OpError::attribute(
                "coordinate_transformation_mode",
                format!("unknown value '{other}'"),
            ))
        }
    };
    r.aspect = match a.string_or("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => Aspect::Stretch,
        "not_larger" => Aspect::NotLarger,
        "not_smaller" => Aspect::NotSmaller,
        other => {
            return Err(OpError::attribute(
                "keep_aspect_ratio_policy",
                format!("unknown value '{other}'"),
            ))
        }
    };
    r.cubic_a = a.float_or("cubic_coeff_a", -0.75)? as f64;
    r.exclude_outside = a.int_or("exclude_outside", 0)? != 0;
    r.extrapolation = a.float_or("extrapolation_value", 0.0)? as f64;
    r.antialias = a.int_or("antialias", 0)? != 0;
    if r.antialias && r.mode == Mode::Nearest {
        return Err(OpError::attribute(
            "antialias",
            "is not supported for mode nearest",
        ));
    }
    r.axes = a.ints("axes")?;
    r.roi_at = Some(1);
    r.scales_at = Some(2);
    r.sizes_at = Some(3);
    Ok(Box::new(r))
}

/// A present, non-empty optional input.
fn present(inputs: &Inputs, at: Option<usize>) -> OpResult<Option<&Tensor>> {
    match at {
        Some(i) => Ok(inputs.opt_tensor(i)?.filter(|t| !t.is_empty())),
        None => Ok(None),
    }
}

fn to_f64(t: &Tensor, index: usize) -> OpResult<Vec<f64>> {
    let t = t.contiguous();
    let dtype = t.dtype();
    dispatch_numeric!(dtype, T => Ok(t.as_slice::<T>()?.iter().map(|v| v.to_f64()).collect()),
        Err(OpError::UnsupportedDType { index, dtype }))
}

impl Resize {
    fn coeffs(&self, ratio: f64, scale: f64) -> Vec<f64> {
        match self.mode {
            Mode::Nearest => {
                if ratio.fract() == 0.0 {
                    return vec![0.0, 1.0];
                }
                let hi = match self.nearest {
                    NearestMode::RoundPreferFloor => ratio > 0.5,
                    NearestMode::RoundPreferCeil => ratio >= 0.5,
                    NearestMode::Floor => false,
                    NearestMode::Ceil => true,
                    NearestMode::Simple => scale < 1.0,
                };
                if hi {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                }
            }
            Mode::Linear if self.antialias => {
                let scale = scale.min(1.0);
                let start = (-1.0 / scale).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.iter().map(|v| v / sum).collect()
            }
            Mode::Linear => vec![1.0 - ratio, ratio],
            Mode::Cubic if self.antialias => {
                let a = self.cubic_a;
                let scale = scale.min(1.0);
                let f = |x: f64| {
                    let x = x.abs();
                    let (x2, x3) = (x * x, x * x * x);
                    if x <= 1.0 {
                        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                    } else if x < 2.0 {
                        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let start = (-2.0 / scale).floor() as i64 + 1;
                let end = 2 - start;
                let c: Vec<f64> = (start..end)
                    .map(|i| f(scale * (i as f64 - ratio)))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.iter().map(|v| v / sum).collect()
            }
            Mode::Cubic => {
                let a = self.cubic_a;
                let r = ratio;
                let s = 1.0 - r;
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
                    ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
                ]
            }
        }
    }

    /// Source coordinate of output index `y`, or None when it is extrapolated.
    fn source(
        &self,
        y: f64,
        scale: f64,
        n_in: usize,
        n_out: usize,
        roi: (f64, f64),
    ) -> Option<f64> {
        let w_in = n_in as f64;
        let w_out = scale * w_in;
        Some(match self.coord {
            Coord::AlignCorners => {
                if w_out == 1.0 {
                    0.0
                } else {
                    y * (w_in - 1.0) / (w_out - 1.0)
                }
            }
            Coord::Asymmetric => y / scale,
            Coord::TfCropAndResize => {
                let x = if w_out == 1.0 {
                    (roi.1 - roi.0) * (w_in - 1.0) / 2.0
                } else {
                    y * (roi.1 - roi.0) * (w_in - 1.0) / (w_out - 1.0)
                } + roi.0 * (w_in - 1.0);
                if x < 0.0 || x > w_in - 1.0 {
                    return None;
                }
                x
            }
            Coord::PytorchHalfPixel => {
                if w_out == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            Coord::HalfPixel => (y + 0.5) / scale - 0.5,
            Coord::HalfPixelSymmetric => {
                let adjustment = n_out as f64 / w_out;
                let offset = w_in / 2.0 * (1.0 - adjustment);
                offset + (y + 0.5) / scale - 0.5
            }
        })
    }

    /// Resizes `data` (of `shape`) along `axis` to `n_out`.
    fn axis_pass(
        &self,
        data: &[f64],
        shape: &[usize],
        axis: usize,
        scale: f64,
        n_out: usize,
        roi: (f64, f64),
    ) -> Vec<f64> {
        let n_in = shape[axis];
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        // Taps per output index: (source index, weight), or None when extrapolated.
        let taps: Vec<Option<Vec<(usize, f64)>>> = (0..n_out)
            .map(|y| {
                let x = self.source(y as f64, scale, n_in, n_out, roi)?;
                let xi = x.floor();
                let ratio = if x == xi { 1.0 } else { x - xi };
                let mut c = self.coeffs(ratio, scale);
                let n = c.len() as i64;
                let pad = (n + 1) / 2;
                let xp = x + pad as f64;
                let p = xp.floor();
                let frac = xp - p;
                let offset = if n % 2 == 0 {
                    if frac == 0.0 {
                        -(n / 2)
                    } else {
                        -(n / 2) + 1
                    }
                } else {
                    let b = -((n - 1) / 2);
                    if frac <= 0.5 {
                        b
                    } else {
                        b + 1
                    }
                };
                let start = p as i64 + offset - pad;
                let idx: Vec<i64> = (0..n).map(|j| start + j).collect();
                if self.exclude_outside {
                    for (cj, &i) in c.iter_mut().zip(&idx) {
                        if i < 0 || i >= n_in as i64 {
                            *cj = 0.0;
                        }
                    }
                    let sum: f64 = c.iter().sum();
                    let sum = if sum == 0.0 { 1.0 } else { sum };
                    c.iter_mut().for_each(|v| *v /= sum);
                }
                Some(
                    idx.iter()
                        .zip(c)
                        .map(|(&i, w)| (i.clamp(0, n_in as i64 - 1) as usize, w))
                        .collect(),
                )
            })
            .collect();
        let mut out = vec![0.0; outer * n_out * inner];
        for o in 0..outer {
            let src = &data[o * n_in * inner..][..n_in * inner];
            let dst = &mut out[o * n_out * inner..][..n_out * inner];
            for (y, t) in taps.iter().enumerate() {
                let row = &mut dst[y * inner..][..inner];
                match t {
                    None => row.iter_mut().for_each(|v| *v = self.extrapolation),
                    Some(t) => {
                        for &(i, w) in t {
                            for (d, s) in row.iter_mut().zip(&src[i * inner..][..inner]) {
                                *d += w * s;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

impl Operator for Resize {
    fn op_type(&self) -> &str {
        self.op
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let shape = x.shape().to_vec();
        let r = shape.len();
        let axes: Vec<usize> = match &self.axes {
            None => (0..r).collect(),
            Some(a) => a
                .iter()
                .map(|&v| {
                    strata_tensor::normalize_axis(v, r).map_err(|_| {
                        OpError::attribute("axes", format!("{v} is out of range for rank {r}"))
                    })
                })
                .collect::<OpResult<_>>()?,
        };
        let k = axes.len();
        let scales_in = match (&self.scales_attr, present(&inputs, self.scales_at)?) {
            (Some(s), _) => Some(s.iter().map(|&v| v as f64).collect::<Vec<_>>()),
            (None, Some(t)) => Some(to_f64(t, self.scales_at.unwrap_or(0))?),
            (None, None) => None,
        };
        let sizes_in = match present(&inputs, self.sizes_at)? {
            Some(t) => Some(t.to_i64_vec()?),
            None => None,
        };
        let mut scales = vec![1.0f64; r];
        let mut out_shape = shape.clone();
        match (scales_in, sizes_in) {
            (Some(_), Some(_)) => {
                return Err(OpError::invalid(
                    2,
                    "only one of scales and sizes may be given",
                ))
            }
            (None, None) => {
                return Err(OpError::invalid(
                    self.scales_at.unwrap_or(1),
                    "one of scales and sizes is required",
                ))
            }
            (Some(s), None) => {
                if s.len() != k {
                    return Err(OpError::invalid(
                        self.scales_at.unwrap_or(1),
                        format!("{} scales for {k} axes of input {shape:?}", s.len()),
                    ));
                }
                for (&a, &v) in axes.iter().zip(&s) {
                    if v <= 0.0 || !v.is_finite() {
                        return Err(OpError::invalid(
                            self.scales_at.unwrap_or(1),
                            format!("scales must be positive, got {v}"),
                        ));
                    }
                    scales[a] = v;
                    out_shape[a] = (v * shape[a] as f64).floor() as usize;
                }
            }
            (None, Some(s)) => {
                if s.len() != k || s.iter().any(|&v| v < 0) {
                    return Err(OpError::invalid(
                        3,
                        format!("sizes {s:?} do not fit {k} axes of input {shape:?}"),
                    ));
                }
                for (&a, &v) in axes.iter().zip(&s) {
                    scales[a] = v as f64 / shape[a] as f64;
                    out_shape[a] = v as usize;
                }
                if self.aspect != Aspect::Stretch {
                    let it = axes.iter().map(|&a| scales[a]);
                    let scale = if self.aspect == Aspect::NotLarger {
                        it.fold(f64::INFINITY, f64::min)
                    } else {
                        it.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &a in &axes {
                        scales[a] = scale;
                        out_shape[a] = (scale * shape[a] as f64 + 0.5) as usize;
                    }
                }
            }
        }
        let mut roi = vec![(0.0, 1.0); r];
        if self.coord == Coord::TfCropAndResize {
            if let Some(t) = present(&inputs, self.roi_at)? {
                let v = to_f64(t, 1)?;
                if v.len() != 2 * k {
                    return Err(OpError::invalid(
                        1,
                        format!("roi has {} values, expected {}", v.len(), 2 * k),
                    ));
                }
                for (i, &a) in axes.iter().enumerate() {
                    roi[a] = (v[i], v[k + i]);
                }
            }
        }
        let dtype = x.dtype();
        let mut data = to_f64(x, 0)?;
        let mut cur = shape.clone();
        for &a in &axes {
            let trivial_roi = self.coord != Coord::TfCropAndResize
                || ((roi[a].0).abs() < 1e-9 && (roi[a].1 - 1.0).abs() < 1e-9);
            if (scales[a] - 1.0).abs() < 1e-9 && out_shape[a] == cur[a] && trivial_roi {
                continue;
            }
            if out_shape[a] > 0 && cur[a] == 0 {
                return Err(OpError::invalid(0, format!("cannot resize empty axis {a}")));
            }
            data = self.axis_pass(&data, &cur, a, scales[a], out_shape[a], roi[a]);
            cur[a] = out_shape[a];
        }
        let mut out = ctx.alloc(dtype, &out_shape)?;
        dispatch_numeric!(dtype, T => {
            for (o, &v) in out.as_slice_mut::<T>()?.iter_mut().zip(&data) {
                *o = if T::IS_FLOAT { T::from_f64(v) } else { T::from_f64(v.round_ties_even()) };
            }
        }, return Err(OpError::UnsupportedDType { index: 0, dtype }));
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, eval, s};
    use crate::Attribute;
    use strata_tensor::Tensor;

    fn x16() -> Option<Tensor> {
        let v: Vec<f32> = (1..17).map(|i| i as f32).collect();
        Some(Tensor::from_vec(v, &[1, 1, 4, 4]).unwrap())
    }

    fn x4() -> Option<Tensor> {
        Some(Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap())
    }

    fn f(v: &[f32]) -> Option<Tensor> {
        Some(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap())
    }

    fn i(v: &[i64]) -> Option<Tensor> {
        Some(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap())
    }

    /// Runs Resize (opset 19) and checks shape and values against the ONNX reference.
    fn check(
        attrs: &[(&str, Attribute)],
        inputs: &[Option<Tensor>],
        shape: &[usize],
        want: &[f64],
    ) {
        let op = build("Resize", 19, attrs, 4, 1);
        let y = eval(op.as_ref(), inputs);
        assert_eq!(y[0].shape(), shape, "{attrs:?}");
        let got = y[0].cast(strata_tensor::DType::F64).unwrap();
        let got = got.as_slice::<f64>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() < 1e-4,
                "{attrs:?}: got {got:?}, want {want:?}"
            );
        }
    }

    // Expected values come from onnx.reference.ReferenceEvaluator.

    #[test]
    fn nearest_modes() {
        let near = ("mode", s("nearest"));
        check(
            std::slice::from_ref(&near),
            &[x4(), None, f(&[1.0, 1.0, 2.0, 3.0])],
            &[1, 1, 4, 6],
            &[
                1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2., 3., 3., 3., 4., 4., 4., 3., 3., 3.,
                4., 4., 4.,
            ],
        );
        check(
            std::slice::from_ref(&near),
            &[x16(), None, f(&[1.0, 1.0, 0.6, 0.6])],
            &[1, 1, 2, 2],
            &[1., 3., 9., 11.],
        );
        check(
            &[
                near.clone(),
                ("nearest_mode", s("ceil")),
                ("coordinate_transformation_mode", s("align_corners")),
            ],
            &[x4(), None, None, i(&[1, 1, 3, 5])],
            &[1, 1, 3, 5],
            &[1., 2., 2., 2., 2., 3., 4., 4., 4., 4., 3., 4., 4., 4., 4.],
        );
        check(
            &[
                near,
                ("axes", Attribute::Ints(vec![2, 3])),
                ("keep_aspect_ratio_policy", s("not_larger")),
            ],
            &[x16(), None, None, i(&[7, 8])],
            &[1, 1, 7, 7],
            &[
                1., 1., 2., 2., 3., 4., 4., 1., 1., 2., 2., 3., 4., 4., 5., 5., 6., 6., 7., 8., 8.,
                5., 5., 6., 6., 7., 8., 8., 9., 9., 10., 10., 11., 12., 12., 13., 13., 14., 14.,
                15., 16., 16., 13., 13., 14., 14., 15., 16., 16.,
            ],
        );
    }

    #[test]
    fn linear_modes() {
        let lin = ("mode", s("linear"));
        check(
            std::slice::from_ref(&lin),
            &[x4(), None, f(&[1.0, 1.0, 2.0, 2.0])],
            &[1, 1, 4, 4],
            &[
                1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75,
                4.0,
            ],
        );
        check(
            &[
                lin.clone(),
                ("coordinate_transformation_mode", s("align_corners")),
            ],
            &[x16(), None, f(&[1.0, 1.0, 0.6, 0.6])],
            &[1, 1, 2, 2],
            &[1.0, 3.142857, 9.571428, 11.714285],
        );
        check(
            &[
                lin.clone(),
                ("coordinate_transformation_mode", s("tf_crop_and_resize")),
                ("extrapolation_value", Attribute::Float(10.0)),
            ],
            &[
                x16(),
                f(&[0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 1.2, 1.7]),
                None,
                i(&[1, 1, 3, 3]),
            ],
            &[1, 1, 3, 3],
            &[7.6, 10.0, 10.0, 12.400001, 10.0, 10.0, 10.0, 10.0, 10.0],
        );
        check(
            &[lin.clone(), ("keep_aspect_ratio_policy", s("not_smaller"))],
            &[x16(), None, None, i(&[1, 1, 2, 3])],
            &[1, 1, 4, 4],
            &(1..17).map(f64::from).collect::<Vec<_>>(),
        );
        check(
            &[lin.clone(), ("antialias", Attribute::Int(1))],
            &[x16(), None, f(&[1.0, 1.0, 0.6, 0.6])],
            &[1, 1, 2, 2],
            &[2.875, 4.5, 9.375, 11.0],
        );
        check(
            &[
                lin.clone(),
                ("coordinate_transformation_mode", s("half_pixel_symmetric")),
            ],
            &[x4(), None, f(&[1.0, 1.0, 1.7, 2.3])],
            &[1, 1, 3, 4],
            &[
                1.0, 1.282609, 1.717391, 2.0, 2.0, 2.282609, 2.717391, 3.0, 3.0, 3.282609,
                3.717391, 4.0,
            ],
        );
        check(
            &[
                lin,
                ("coordinate_transformation_mode", s("pytorch_half_pixel")),
            ],
            &[x16(), None, f(&[1.0, 1.0, 0.25, 0.5])],
            &[1, 1, 1, 2],
            &[1.5, 3.5],
        );
    }

    #[test]
    fn cubic_modes() {
        let cub = ("mode", s("cubic"));
        check(
            std::slice::from_ref(&cub),
            &[x16(), None, f(&[1.0, 1.0, 0.8, 0.8])],
            &[1, 1, 3, 3],
            &[
                1.471191, 2.78125, 4.08252, 6.711426, 8.021484, 9.322754, 11.916504, 13.226562,
                14.527831,
            ],
        );
        check(
            &[
                cub.clone(),
                ("cubic_coeff_a", Attribute::Float(-0.5)),
                ("exclude_outside", Attribute::Int(1)),
            ],
            &[x16(), None, f(&[1.0, 1.0, 1.5, 1.5])],
            &[1, 1, 6, 6],
            &[
                0.671054, 1.148608, 1.903509, 2.570177, 3.325078, 3.802632, 2.58127, 3.058824,
                3.813725, 4.480393, 5.235294, 5.712848, 5.600875, 6.078429, 6.833331, 7.499998,
                8.2549, 8.732453, 8.267547, 8.7451, 9.500002, 10.16667, 10.921571, 11.399125,
                11.287152, 11.764706, 12.519608, 13.186275, 13.941176, 14.418731, 13.197368,
                13.674922, 14.429823, 15.096491, 15.851392, 16.328945,
            ],
        );
        check(
            &[cub.clone(), ("antialias", Attribute::Int(1))],
            &[x16(), None, None, i(&[1, 1, 3, 3])],
            &[1, 1, 3, 3],
            &[
                1.775009, 3.120008, 4.465005, 7.155002, 8.500001, 9.844998, 12.534994, 13.879993,
                15.224991,
            ],
        );
        let u8s = Some(Tensor::from_vec(vec![0u8, 255, 100, 7], &[1, 1, 2, 2]).unwrap());
        check(
            &[cub],
            &[u8s, None, f(&[1.0, 1.0, 1.5, 1.5])],
            &[1, 1, 3, 3],
            &[0.0, 134.0, 255.0, 43.0, 90.0, 138.0, 119.0, 47.0, 0.0],
        );
    }

    #[test]
    fn upsample_and_resize10() {
        let op = build("Upsample", 9, &[("mode", s("nearest"))], 2, 1);
        let y = eval(op.as_ref(), &[x4(), f(&[1.0, 1.0, 2.0, 3.0])]);
        assert_eq!(y[0].shape(), &[1, 1, 4, 6]);
        assert_eq!(
            &y[0].as_slice::<f32>().unwrap()[..6],
            &[1., 1., 1., 2., 2., 2.]
        );
        let op = build(
            "Upsample",
            7,
            &[("scales", Attribute::Floats(vec![1.0, 1.0, 2.0, 2.0]))],
            1,
            1,
        );
        let y = eval(op.as_ref(), &[x4()]);
        assert_eq!(y[0].shape(), &[1, 1, 4, 4]);
        let op = build("Resize", 10, &[("mode", s("nearest"))], 2, 1);
        let y = eval(op.as_ref(), &[x16(), f(&[1.0, 1.0, 0.6, 0.6])]);
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1., 3., 9., 11.]);
        // Both scales and sizes: an error naming them.
        let op = build("Resize", 19, &[], 4, 1);
        let err = op
            .eval(
                &crate::EvalCtx::default(),
                crate::Inputs::from_tensors([
                    x16().unwrap(),
                    Tensor::from_vec(Vec::<f32>::new(), &[0]).unwrap(),
                    f(&[1.0; 4]).unwrap(),
                    i(&[1; 4]).unwrap(),
                ]),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("scales and sizes"), "{err}");
    }
}
