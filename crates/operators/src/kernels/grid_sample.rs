//! `GridSample` (opsets 16-25): N-D sampling of the input at normalized grid coordinates with
//! nearest, (bi/tri)linear or (bi)cubic interpolation and zeros, border or reflection padding.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{dispatch_numeric, Element};

/// Registers `GridSample`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "GridSample", 16, build);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// `GridSample` with parsed attributes.
#[derive(Debug, Clone)]
pub struct GridSample {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

fn build(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let mode = match a.string_or("mode", "linear")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        other => {
            return Err(OpError::attribute(
                "mode",
                format!("unknown mode '{other}'"),
            ))
        }
    };
    let padding = match a.string_or("padding_mode", "zeros")?.as_str() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => {
            return Err(OpError::attribute(
                "padding_mode",
                format!("unknown value '{other}'"),
            ))
        }
    };
    Ok(Box::new(GridSample {
        mode,
        padding,
        align_corners: a.int_or("align_corners", 0)? != 0,
    }))
}

fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let rng = hi - lo;
    if x < lo {
        let dx = lo - x;
        let n = (dx / rng) as i64;
        let r = dx - n as f64 * rng;
        if n % 2 == 0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / rng) as i64;
        let r = dx - n as f64 * rng;
        if n % 2 == 0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

fn cubic(x: f64) -> [f64; 4] {
    let a = -0.75;
    let x = x.abs();
    [
        ((a * (x + 1.0) - 5.0 * a) * (x + 1.0) + 8.0 * a) * (x + 1.0) - 4.0 * a,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        ((a + 2.0) * (1.0 - x) - (a + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0,
        ((a * (2.0 - x) - 5.0 * a) * (2.0 - x) + 8.0 * a) * (2.0 - x) - 4.0 * a,
    ]
}

impl GridSample {
    /// The index actually read for tap `i` along an axis of `d` elements, or None (zeros).
    fn pixel(&self, i: i64, d: usize, lo: f64, hi: f64) -> Option<usize> {
        match self.padding {
            Padding::Zeros => (i >= 0 && i < d as i64).then_some(i as usize),
            Padding::Border => Some(i.clamp(0, d as i64 - 1) as usize),
            Padding::Reflection => {
                Some((reflect(i as f64, lo, hi) as i64).clamp(0, d as i64 - 1) as usize)
            }
        }
    }
}

impl Operator for GridSample {
    crate::op_boilerplate!("GridSample");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let grid = inputs.tensor(1)?;
        let xs = x.shape().to_vec();
        let gs = grid.shape().to_vec();
        let k = xs.len().saturating_sub(2);
        if xs.len() < 3 || gs.len() != k + 2 || gs[0] != xs[0] || gs[k + 1] != k {
            return Err(OpError::Shape(format!(
                "GridSample: grid shape {gs:?} does not fit input shape {xs:?} (want [N, ..., {k}])"
            )));
        }
        let (n, c) = (xs[0], xs[1]);
        let dims = &xs[2..];
        let mut out_shape = vec![n, c];
        out_shape.extend_from_slice(&gs[1..k + 1]);
        let points: usize = gs[1..k + 1].iter().product();
        let plane: usize = dims.iter().product();
        let xv: Vec<f64> = {
            let t = x.contiguous();
            let dtype = t.dtype();
            dispatch_numeric!(dtype, T => t.as_slice::<T>()?.iter().map(|v| v.to_f64()).collect(),
                return Err(OpError::UnsupportedDType { index: 0, dtype }))
        };
        let gv: Vec<f32> = {
            let t = grid.contiguous();
            let dtype = t.dtype();
            dispatch_numeric!(dtype, T => t.as_slice::<T>()?.iter().map(|v| v.to_f64() as f32).collect(),
                return Err(OpError::UnsupportedDType { index: 1, dtype }))
        };
        let borders: Vec<(f64, f64)> = dims
            .iter()
            .map(|&d| {
                if self.align_corners {
                    (0.0, d as f64 - 1.0)
                } else {
                    (-0.5, d as f64 - 0.5)
                }
            })
            .collect();
        let mut strides = vec![1usize; k];
        for i in (0..k.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        let mut result = vec![0.0f64; n * c * points];
        for b in 0..n {
            for p in 0..points {
                let g = &gv[(b * points + p) * k..][..k];
                // Per axis: taps of (index or None, weight).
                let mut taps: Vec<Vec<(Option<usize>, f64)>> = Vec::with_capacity(k);
                for i in 0..k {
                    let nv = g[k - 1 - i];
                    let d = dims[i];
                    let mut v = if self.align_corners {
                        (nv + 1.0) / 2.0 * (d as f32 - 1.0)
                    } else {
                        ((nv + 1.0) * d as f32 - 1.0) / 2.0
                    };
                    if self.mode == Mode::Nearest {
                        v = v.round_ties_even();
                    }
                    let (lo, hi) = borders[i];
                    if (v as f64) < lo || (v as f64) > hi {
                        match self.padding {
                            Padding::Border => v = v.clamp(0.0, d as f32 - 1.0),
                            Padding::Reflection => v = reflect(v as f64, lo, hi) as f32,
                            Padding::Zeros => {}
                        }
                    }
                    let v = v as f64;
                    let t = match self.mode {
                        Mode::Nearest => vec![(self.pixel(v as i64, d, lo, hi), 1.0)],
                        Mode::Linear => {
                            let x0 = v.floor();
                            let f = v - x0;
                            let x0 = x0 as i64;
                            vec![
                                (self.pixel(x0, d, lo, hi), 1.0 - f),
                                (self.pixel(x0 + 1, d, lo, hi), f),
                            ]
                        }
                        Mode::Cubic => {
                            let x0 = v.floor();
                            let cf = cubic(v - x0);
                            let x0 = x0 as i64;
                            (0..4)
                                .map(|j| (self.pixel(x0 - 1 + j as i64, d, lo, hi), cf[j]))
                                .collect()
                        }
                    };
                    taps.push(t);
                }
                // Tensor product of the per-axis taps.
                let mut combos: Vec<(Option<usize>, f64)> = vec![(Some(0), 1.0)];
                for (i, t) in taps.iter().enumerate() {
                    let mut next = Vec::with_capacity(combos.len() * t.len());
                    for &(off, w) in &combos {
                        for &(idx, tw) in t {
                            next.push((off.zip(idx).map(|(o, j)| o + j * strides[i]), w * tw));
                        }
                    }
                    combos = next;
                }
                for ch in 0..c {
                    let src = &xv[(b * c + ch) * plane..][..plane];
                    let acc: f64 = combos
                        .iter()
                        .filter_map(|&(off, w)| off.map(|o| w * src[o]))
                        .sum();
                    result[(b * c + ch) * points + p] = acc;
                }
            }
        }
        let dtype = x.dtype();
        let mut out = ctx.alloc(dtype, &out_shape)?;
        dispatch_numeric!(dtype, T => {
            for (o, &v) in out.as_slice_mut::<T>()?.iter_mut().zip(&result) {
                *o = T::from_f64(v);
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

    /// Expected values come from onnx.reference.ReferenceEvaluator.
    #[test]
    fn modes_paddings_and_corners() {
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let x = Tensor::from_vec(x, &[1, 1, 3, 4]).unwrap();
        let g = [
            -1.2f32, -0.9, -0.3, 0.5, 0.2, 1.1, 1.4, -0.6, 0.0, 0.0, 0.77, -0.41,
        ];
        let g = Tensor::from_vec(g.to_vec(), &[1, 2, 3, 2]).unwrap();
        let cases: [(&str, &str, i64, [f64; 6]); 18] = [
            ("linear", "zeros", 0, [0.0, 7.9, 3.465, 0.0, 5.5, 4.3584]),
            ("linear", "zeros", 1, [0.28, 7.05, 8.82, 1.84, 5.5, 5.015]),
            ("linear", "border", 0, [0.0, 7.9, 9.9, 3.4, 5.5, 4.54]),
            ("linear", "border", 1, [0.4, 7.05, 9.8, 4.6, 5.5, 5.015]),
            ("linear", "reflection", 0, [0.0, 7.9, 9.9, 3.1, 5.5, 4.54]),
            ("linear", "reflection", 1, [0.7, 7.05, 9.4, 4.0, 5.5, 5.015]),
            ("nearest", "zeros", 0, [0.0, 9.0, 0.0, 0.0, 6.0, 3.0]),
            ("nearest", "zeros", 1, [0.0, 9.0, 10.0, 0.0, 6.0, 7.0]),
            ("nearest", "border", 0, [0.0, 9.0, 10.0, 3.0, 6.0, 3.0]),
            ("nearest", "border", 1, [0.0, 9.0, 10.0, 3.0, 6.0, 7.0]),
            ("nearest", "reflection", 0, [0.0, 9.0, 10.0, 3.0, 6.0, 3.0]),
            ("nearest", "reflection", 1, [0.0, 9.0, 10.0, 2.0, 6.0, 7.0]),
            (
                "cubic",
                "zeros",
                0,
                [-0.04088, 9.08032, 3.52297, -0.38403, 5.5, 4.42887],
            ),
            (
                "cubic",
                "zeros",
                1,
                [0.10007, 8.29681, 9.19534, 1.85992, 5.5, 5.48659],
            ),
            (
                "cubic",
                "border",
                0,
                [-0.44362, 8.09163, 9.864, 3.301, 5.5, 4.23971],
            ),
            (
                "cubic",
                "border",
                1,
                [0.301, 7.44637, 9.752, 4.264, 5.5, 4.70636],
            ),
            (
                "cubic",
                "reflection",
                0,
                [-0.75, 8.09163, 10.5465, 3.06925, 5.5, 4.24086],
            ),
            (
                "cubic",
                "reflection",
                1,
                [0.1795, 7.82137, 9.694, 3.4, 5.5, 4.51983],
            ),
        ];
        for (mode, pad, ac, want) in cases {
            let op = build(
                "GridSample",
                20,
                &[
                    ("mode", s(mode)),
                    ("padding_mode", s(pad)),
                    ("align_corners", Attribute::Int(ac)),
                ],
                2,
                1,
            );
            let y = eval(op.as_ref(), &[Some(x.clone()), Some(g.clone())]);
            assert_eq!(y[0].shape(), &[1, 1, 2, 3]);
            let got = y[0].as_slice::<f32>().unwrap();
            for (a, b) in got.iter().zip(want) {
                assert!(
                    (*a as f64 - b).abs() < 1e-3,
                    "{mode} {pad} {ac}: got {got:?}, want {want:?}"
                );
            }
        }
        // Opset 16 names.
        let op = build("GridSample", 16, &[("mode", s("bilinear"))], 2, 1);
        let y = eval(op.as_ref(), &[Some(x), Some(g)]);
        assert!((y[0].as_slice::<f32>().unwrap()[1] - 7.9).abs() < 1e-4);
    }
}
