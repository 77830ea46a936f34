//! `DeformConv` (2-D): a convolution whose sampling points are moved by learned offsets and
//! optionally scaled by a mask. Samples are bilinear with zeros outside the image (as
//! `GridSample` with `align_corners` and zero padding); arithmetic is f64.

use super::super::staging::{f64_output, float_values};
use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};

/// Registers `DeformConv`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "DeformConv", 19, build);
}

/// The `DeformConv` op (2-D inputs only).
#[derive(Debug, Clone)]
pub struct DeformConv {
    /// Kernel size, when given (else from `W`).
    pub kernel: Option<[usize; 2]>,
    /// Strides.
    pub strides: [usize; 2],
    /// Dilations.
    pub dilations: [usize; 2],
    /// Pads: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Channel groups.
    pub group: usize,
    /// Offset groups (input channels sharing one offset field).
    pub offset_group: usize,
}

fn fixed<const N: usize>(b: &BuildCtx<'_>, name: &str, default: i64) -> OpResult<[usize; N]> {
    let v = b.attrs.ints(name)?.unwrap_or_else(|| vec![default; N]);
    let v: Vec<usize> = v
        .iter()
        .map(|&x| usize::try_from(x).ok().filter(|&x| x > 0 || name == "pads"))
        .collect::<Option<_>>()
        .ok_or_else(|| OpError::attribute(name, format!("{v:?} has invalid entries")))?;
    v.try_into().map_err(|v: Vec<usize>| {
        OpError::attribute(name, format!("{v:?} must have {N} entries (2-D only)"))
    })
}

fn build(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let positive = |name: &str| -> OpResult<usize> {
        let v = b.attrs.int_or(name, 1)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| OpError::attribute(name, format!("{v} must be positive")))
    };
    Ok(Box::new(DeformConv {
        kernel: match b.attrs.ints("kernel_shape")? {
            Some(_) => Some(fixed(b, "kernel_shape", 1)?),
            None => None,
        },
        strides: fixed(b, "strides", 1)?,
        dilations: fixed(b, "dilations", 1)?,
        pads: fixed(b, "pads", 0)?,
        group: positive("group")?,
        offset_group: positive("offset_group")?,
    }))
}

/// Sizes of one evaluation.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    ic: usize,
    ih: usize,
    iw: usize,
    oc: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
}

/// Bilinear sample of the `h x w` plane at (`y`, `x`), zero outside.
fn sample(plane: &[f64], h: usize, w: usize, y: f64, x: f64) -> f64 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let mut acc = 0.0;
    for (dy, wy) in [(0.0, 1.0 - fy), (1.0, fy)] {
        for (dx, wx) in [(0.0, 1.0 - fx), (1.0, fx)] {
            let (yy, xx) = (y0 + dy, x0 + dx);
            if yy >= 0.0 && xx >= 0.0 && (yy as usize) < h && (xx as usize) < w {
                acc += wy * wx * plane[yy as usize * w + xx as usize];
            }
        }
    }
    acc
}

impl DeformConv {
    fn geometry(&self, inputs: &Inputs) -> OpResult<Geometry> {
        let (xs, ws, os) = (
            inputs.tensor(0)?.shape(),
            inputs.tensor(1)?.shape(),
            inputs.tensor(2)?.shape(),
        );
        let (&[n, ic, ih, iw], &[oc, icg, kh, kw], &[on, oo, oh, ow]) = (xs, ws, os) else {
            return Err(OpError::Unsupported(format!(
                "DeformConv needs 2-D X, W and offset, got {xs:?}, {ws:?}, {os:?}"
            )));
        };
        let (kh, kw) = self.kernel.map_or((kh, kw), |k| (k[0], k[1]));
        let g = Geometry {
            n,
            ic,
            ih,
            iw,
            oc,
            kh,
            kw,
            oh,
            ow,
        };
        let span = |k: usize, d: usize| (k.saturating_sub(1)) * d + 1;
        let expect_h = (ih + self.pads[0] + self.pads[2]).checked_sub(span(kh, self.dilations[0]));
        let expect_w = (iw + self.pads[1] + self.pads[3]).checked_sub(span(kw, self.dilations[1]));
        let ok = icg * self.group == ic
            && oc % self.group == 0
            && ic % self.offset_group == 0
            && on == n
            && oo == self.offset_group * kh * kw * 2
            && expect_h.map(|e| e / self.strides[0] + 1) == Some(oh)
            && expect_w.map(|e| e / self.strides[1] + 1) == Some(ow);
        if !ok {
            return Err(OpError::Shape(format!(
                "DeformConv: X {xs:?}, W {ws:?} and offset {os:?} are inconsistent with \
                 group {}, offset_group {}, pads {:?}, strides {:?}",
                self.group, self.offset_group, self.pads, self.strides
            )));
        }
        Ok(g)
    }
}

impl Operator for DeformConv {
    crate::op_boilerplate!("DeformConv");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let g = self.geometry(&inputs)?;
        let x = float_values(inputs.tensor(0)?, 0)?;
        let w = float_values(inputs.tensor(1)?, 1)?;
        let off = float_values(inputs.tensor(2)?, 2)?;
        let bias = match inputs.opt_tensor(3)? {
            Some(t) if t.len() == g.oc => float_values(t, 3)?,
            Some(t) => {
                return Err(OpError::invalid(
                    3,
                    format!("B {:?} needs {} values", t.shape(), g.oc),
                ))
            }
            None => vec![0.0; g.oc],
        };
        let taps = g.kh * g.kw;
        let plane_out = g.oh * g.ow;
        let mask = match inputs.opt_tensor(4)? {
            Some(t) if t.len() == g.n * self.offset_group * taps * plane_out => float_values(t, 4)?,
            Some(t) => {
                return Err(OpError::invalid(
                    4,
                    format!("mask {:?} does not fit", t.shape()),
                ))
            }
            None => vec![1.0; g.n * self.offset_group * taps * plane_out],
        };
        let (icg, ocg) = (g.ic / self.group, g.oc / self.group);
        let ic_per_og = g.ic / self.offset_group;
        let mut out = vec![0.0; g.n * g.oc * plane_out];
        for b in 0..g.n {
            for o in 0..g.oc {
                let grp = o / ocg;
                let dst = &mut out[(b * g.oc + o) * plane_out..][..plane_out];
                dst.fill(bias[o]);
                for ci in 0..icg {
                    let c = grp * icg + ci;
                    let og = c / ic_per_og;
                    let plane = &x[(b * g.ic + c) * g.ih * g.iw..][..g.ih * g.iw];
                    for t in 0..taps {
                        let wv = w[(o * icg + ci) * taps + t];
                        let (ky, kx) = (t / g.kw, t % g.kw);
                        let obase = ((b * self.offset_group + og) * taps + t) * 2;
                        let mbase = ((b * self.offset_group + og) * taps + t) * plane_out;
                        for (p, slot) in dst.iter_mut().enumerate() {
                            let (i, j) = (p / g.ow, p % g.ow);
                            let y = (i * self.strides[0] + ky * self.dilations[0]) as f64
                                - self.pads[0] as f64
                                + off[obase * plane_out + p];
                            let xx = (j * self.strides[1] + kx * self.dilations[1]) as f64
                                - self.pads[1] as f64
                                + off[(obase + 1) * plane_out + p];
                            *slot += wv * mask[mbase + p] * sample(plane, g.ih, g.iw, y, xx);
                        }
                    }
                }
            }
        }
        let dtype = inputs.tensor(0)?.dtype();
        Ok(vec![f64_output(
            ctx,
            &out,
            &[g.n, g.oc, g.oh, g.ow],
            dtype,
        )?
        .into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::Tensor;

    fn op() -> DeformConv {
        DeformConv {
            kernel: None,
            strides: [1, 1],
            dilations: [1, 1],
            pads: [0; 4],
            group: 1,
            offset_group: 1,
        }
    }

    #[test]
    fn zero_offsets_are_a_plain_convolution_and_offsets_shift() {
        let x = Tensor::from_vec((0..9).map(|v| v as f32).collect(), &[1, 1, 3, 3]).unwrap();
        let w = Tensor::from_vec(vec![1.0f32; 4], &[1, 1, 2, 2]).unwrap();
        let zero = Tensor::from_vec(vec![0.0f32; 32], &[1, 8, 2, 2]).unwrap();
        let y = op()
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([x.clone(), w.clone(), zero]),
            )
            .unwrap();
        assert_eq!(
            y[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[8.0, 12.0, 20.0, 24.0]
        );
        // Shifting every tap by half a pixel down averages neighbouring rows.
        let mut o = vec![0.0f32; 32];
        for t in 0..4 {
            o[t * 8..t * 8 + 4].fill(0.5);
        }
        let off = Tensor::from_vec(o, &[1, 8, 2, 2]).unwrap();
        let y = op()
            .eval(
                &EvalCtx::default(),
                Inputs::from_tensors([x.clone(), w.clone(), off]),
            )
            .unwrap();
        let v = y[0]
            .as_tensor()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        // Output (1, 0): taps at rows 1.5 and 2.5; row 2.5 is half outside.
        assert_eq!(v[0], 14.0);
        assert_eq!(v[2], (3.0 + 4.0) * 0.5 + (6.0 + 7.0) + 0.0);
        let bad = Tensor::from_vec(vec![0.0f32; 8], &[1, 2, 2, 2]).unwrap();
        assert!(op()
            .eval(&EvalCtx::default(), Inputs::from_tensors([x, w, bad]))
            .is_err());
    }
}
