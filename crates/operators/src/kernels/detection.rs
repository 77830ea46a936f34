//! Detection ops: `NonMaxSuppression` and `RoiAlign`.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{DType, Tensor};

/// Registers `NonMaxSuppression` and `RoiAlign`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "NonMaxSuppression", 10, |c| {
        let cpb = c.attrs.int_or("center_point_box", 0)?;
        if !(0..=1).contains(&cpb) {
            return Err(OpError::attribute(
                "center_point_box",
                format!("must be 0 or 1, got {cpb}"),
            ));
        }
        Ok(Box::new(NonMaxSuppression {
            center_point_box: cpb == 1,
        }))
    });
    registry.register("", "RoiAlign", 10, build_roi_align);
}

fn f64_data(t: &Tensor) -> OpResult<Vec<f64>> {
    Ok(t.cast(DType::F64)?.contiguous().to_vec::<f64>()?)
}

fn opt_scalar(inputs: &Inputs, i: usize) -> OpResult<Option<f64>> {
    match inputs.opt_tensor(i)? {
        Some(t) if !t.is_empty() => Ok(Some(t.first_as_f64()?)),
        _ => Ok(None),
    }
}

// ----- NonMaxSuppression --------------------------------------------------------------------

/// `NonMaxSuppression`: per batch and class, greedily selects boxes by descending score
/// (ties: smaller box index first), dropping those whose IoU with a selected box exceeds
/// `iou_threshold`. Output `[selected, 3]` int64 rows `(batch, class, box)`.
#[derive(Debug, Clone, Copy)]
pub struct NonMaxSuppression {
    /// Boxes are `[x_center, y_center, width, height]` (else `[y1, x1, y2, x2]`).
    pub center_point_box: bool,
}

impl NonMaxSuppression {
    /// `(x_min, x_max, y_min, y_max)` of a box.
    fn extent(&self, b: &[f64]) -> (f64, f64, f64, f64) {
        if self.center_point_box {
            let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
            (b[0] - hw, b[0] + hw, b[1] - hh, b[1] + hh)
        } else {
            (
                b[1].min(b[3]),
                b[1].max(b[3]),
                b[0].min(b[2]),
                b[0].max(b[2]),
            )
        }
    }

    fn suppress(&self, a: &[f64], b: &[f64], threshold: f64) -> bool {
        let (ax0, ax1, ay0, ay1) = self.extent(a);
        let (bx0, bx1, by0, by1) = self.extent(b);
        let (ix0, ix1) = (ax0.max(bx0), ax1.min(bx1));
        let (iy0, iy1) = (ay0.max(by0), ay1.min(by1));
        if ix1 <= ix0 || iy1 <= iy0 {
            return false;
        }
        let inter = (ix1 - ix0) * (iy1 - iy0);
        let area_a = (ax1 - ax0) * (ay1 - ay0);
        let area_b = (bx1 - bx0) * (by1 - by0);
        let union = area_a + area_b - inter;
        if inter <= 0.0 || area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
            return false;
        }
        inter / union > threshold
    }
}

impl Operator for NonMaxSuppression {
    crate::op_boilerplate!("NonMaxSuppression");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let boxes_t = inputs.tensor(0)?;
        let scores_t = inputs.tensor(1)?;
        let (bs, ss) = (boxes_t.shape(), scores_t.shape());
        if bs.len() != 3 || bs[2] != 4 {
            return Err(OpError::invalid(
                0,
                format!("boxes must have shape [batches, boxes, 4], got {bs:?}"),
            ));
        }
        if ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
            return Err(OpError::invalid(
                1,
                format!(
                    "scores must have shape [{}, classes, {}], got {ss:?}",
                    bs[0], bs[1]
                ),
            ));
        }
        let (batches, nboxes, classes) = (bs[0], bs[1], ss[1]);
        let max_out = match inputs.opt_tensor(2)? {
            Some(t) if !t.is_empty() => t.to_i64_vec()?[0].max(0) as usize,
            _ => 0,
        };
        let iou = opt_scalar(&inputs, 3)?.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&iou) {
            return Err(OpError::invalid(
                3,
                format!("iou_threshold must be in [0, 1], got {iou}"),
            ));
        }
        let score_threshold = opt_scalar(&inputs, 4)?;
        let boxes = f64_data(boxes_t)?;
        let scores = f64_data(scores_t)?;
        let mut selected: Vec<i64> = Vec::new();
        for b in 0..batches {
            let bx = |i: usize| &boxes[(b * nboxes + i) * 4..][..4];
            for c in 0..classes {
                let sc = &scores[(b * classes + c) * nboxes..][..nboxes];
                let mut cand: Vec<usize> = (0..nboxes)
                    .filter(|&i| score_threshold.is_none_or(|t| sc[i] > t))
                    .collect();
                cand.sort_by(|&x, &y| sc[y].total_cmp(&sc[x]).then(x.cmp(&y)));
                let mut kept: Vec<usize> = Vec::new();
                for i in cand {
                    if kept.len() >= max_out {
                        break;
                    }
                    if kept.iter().all(|&k| !self.suppress(bx(i), bx(k), iou)) {
                        kept.push(i);
                        selected.extend([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        let n = selected.len() / 3;
        let mut out = ctx.alloc(DType::I64, &[n, 3])?;
        out.as_slice_mut::<i64>()?.copy_from_slice(&selected);
        Ok(vec![out.into()])
    }
}

// ----- RoiAlign -----------------------------------------------------------------------------

/// `RoiAlign`: bilinear-sampled average or max pooling of regions of interest.
#[derive(Debug, Clone, Copy)]
pub struct RoiAlign {
    /// Max pooling (else average).
    pub max: bool,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Samples per bin side (0: adaptive, `ceil(roi / output)`).
    pub sampling_ratio: usize,
    /// Multiplies ROI coordinates.
    pub spatial_scale: f64,
    /// `half_pixel` (shift by -0.5) rather than `output_half_pixel`.
    pub half_pixel: bool,
}

fn build_roi_align(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let max = match a.string_or("mode", "avg")?.as_str() {
        "avg" => false,
        "max" => true,
        other => {
            return Err(OpError::attribute(
                "mode",
                format!("expected avg or max, got '{other}'"),
            ))
        }
    };
    let default_ctm = if ctx.opset >= 16 {
        "half_pixel"
    } else {
        "output_half_pixel"
    };
    let half_pixel = match a
        .string_or("coordinate_transformation_mode", default_ctm)?
        .as_str()
    {
        "half_pixel" => true,
        "output_half_pixel" => false,
        other => {
            return Err(OpError::attribute(
                "coordinate_transformation_mode",
                format!("expected half_pixel or output_half_pixel, got '{other}'"),
            ))
        }
    };
    let positive = |name: &str, default: i64, min: i64| -> OpResult<usize> {
        let v = a.int_or(name, default)?;
        if v < min {
            return Err(OpError::attribute(
                name,
                format!("must be >= {min}, got {v}"),
            ));
        }
        Ok(v as usize)
    };
    Ok(Box::new(RoiAlign {
        max,
        out_h: positive("output_height", 1, 1)?,
        out_w: positive("output_width", 1, 1)?,
        sampling_ratio: positive("sampling_ratio", 0, 0)?,
        spatial_scale: f64::from(a.float_or("spatial_scale", 1.0)?),
        half_pixel,
    }))
}

/// One bilinear sample: four flat positions and weights.
struct Sample {
    pos: [usize; 4],
    w: [f64; 4],
}

fn bilinear_sample(y: f64, x: f64, height: usize, width: usize) -> Sample {
    if y < -1.0 || y > height as f64 || x < -1.0 || x > width as f64 {
        return Sample {
            pos: [0; 4],
            w: [0.0; 4],
        };
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low + 1 >= height {
        y_low = height - 1;
        y_high = y_low;
        y = y_low as f64;
    } else {
        y_high = y_low + 1;
    }
    if x_low + 1 >= width {
        x_low = width - 1;
        x_high = x_low;
        x = x_low as f64;
    } else {
        x_high = x_low + 1;
    }
    let (ly, lx) = (y - y_low as f64, x - x_low as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Sample {
        pos: [
            y_low * width + x_low,
            y_low * width + x_high,
            y_high * width + x_low,
            y_high * width + x_high,
        ],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

impl Operator for RoiAlign {
    crate::op_boilerplate!("RoiAlign");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let xt = inputs.tensor(0)?;
        let dt = xt.dtype();
        if !dt.is_float() {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: dt,
            });
        }
        let xs = xt.shape();
        if xs.len() != 4 {
            return Err(OpError::invalid(
                0,
                format!("X must have shape [N, C, H, W], got {xs:?}"),
            ));
        }
        let (n, c, height, width) = (xs[0], xs[1], xs[2], xs[3]);
        let rois_t = inputs.tensor(1)?;
        if rois_t.rank() != 2 || rois_t.shape()[1] != 4 {
            return Err(OpError::invalid(
                1,
                format!(
                    "rois must have shape [num_rois, 4], got {:?}",
                    rois_t.shape()
                ),
            ));
        }
        let num_rois = rois_t.shape()[0];
        let bidx = inputs.tensor(2)?.to_i64_vec()?;
        if bidx.len() != num_rois {
            return Err(OpError::invalid(
                2,
                format!(
                    "batch_indices has {} entries for {num_rois} rois",
                    bidx.len()
                ),
            ));
        }
        let x = f64_data(xt)?;
        let rois = f64_data(rois_t)?;
        let (oh, ow) = (self.out_h, self.out_w);
        let mut out = vec![0.0; num_rois * c * oh * ow];
        if height > 0 && width > 0 {
            for r in 0..num_rois {
                let b = bidx[r];
                if b < 0 || b as usize >= n {
                    return Err(OpError::invalid(
                        2,
                        format!("batch index {b} outside 0..{n}"),
                    ));
                }
                let roi = &rois[r * 4..][..4];
                let off = if self.half_pixel { 0.5 } else { 0.0 };
                let sw = roi[0] * self.spatial_scale - off;
                let sh = roi[1] * self.spatial_scale - off;
                let mut rw = roi[2] * self.spatial_scale - off - sw;
                let mut rh = roi[3] * self.spatial_scale - off - sh;
                if !self.half_pixel {
                    rw = rw.max(1.0);
                    rh = rh.max(1.0);
                }
                let (bin_h, bin_w) = (rh / oh as f64, rw / ow as f64);
                let gh = if self.sampling_ratio > 0 {
                    self.sampling_ratio
                } else {
                    (rh / oh as f64).ceil().max(0.0) as usize
                };
                let gw = if self.sampling_ratio > 0 {
                    self.sampling_ratio
                } else {
                    (rw / ow as f64).ceil().max(0.0) as usize
                };
                let count = (gh * gw).max(1) as f64;
                let mut samples = Vec::with_capacity(oh * ow * gh * gw);
                for ph in 0..oh {
                    for pw in 0..ow {
                        for iy in 0..gh {
                            let yy = sh + ph as f64 * bin_h + (iy as f64 + 0.5) * bin_h / gh as f64;
                            for ix in 0..gw {
                                let xx =
                                    sw + pw as f64 * bin_w + (ix as f64 + 0.5) * bin_w / gw as f64;
                                samples.push(bilinear_sample(yy, xx, height, width));
                            }
                        }
                    }
                }
                let per_bin = gh * gw;
                for ch in 0..c {
                    let plane = &x[((b as usize) * c + ch) * height * width..][..height * width];
                    let dst = &mut out[(r * c + ch) * oh * ow..][..oh * ow];
                    for (bin, o) in dst.iter_mut().enumerate() {
                        let bin_samples = &samples[bin * per_bin..][..per_bin];
                        if self.max {
                            let mut acc: Option<f64> = None;
                            for s in bin_samples {
                                let v = (0..4)
                                    .map(|k| s.w[k] * plane[s.pos[k]])
                                    .fold(f64::NEG_INFINITY, f64::max);
                                acc = Some(acc.map_or(v, |a| a.max(v)));
                            }
                            *o = acc.unwrap_or(0.0);
                        } else {
                            let sum: f64 = bin_samples
                                .iter()
                                .map(|s| (0..4).map(|k| s.w[k] * plane[s.pos[k]]).sum::<f64>())
                                .sum();
                            *o = sum / count;
                        }
                    }
                }
            }
        }
        let t = Tensor::from_vec(out, &[num_rois, c, oh, ow])?.cast(dt)?;
        Ok(vec![t.into()])
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, close, eval, f64s, pat, s, t};
    use crate::Attribute;
    use strata_tensor::Tensor;

    // Expected values from onnx.reference (ReferenceEvaluator).
    #[test]
    fn nms_corner_and_center_boxes() {
        let boxes = t(
            &[
                0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, -0.1, 1.0, 0.9, 0.0, 10.0, 1.0, 11.0,
                0.0, 10.1, 1.0, 11.1, 0.0, 100.0, 1.0, 101.0,
            ],
            &[1, 6, 4],
        );
        let scores = t(
            &[0.9, 0.75, 0.6, 0.95, 0.5, 0.3, 0.1, 0.2, 0.3, 0.3, 0.9, 0.2],
            &[1, 2, 6],
        );
        let i = |v: i64| Some(Tensor::from_vec(vec![v], &[1]).unwrap());
        let f = |v: f32| Some(t(&[v], &[1]));
        let op = build("NonMaxSuppression", 11, &[], 5, 1);
        let out = eval(
            op.as_ref(),
            &[Some(boxes), Some(scores.clone()), i(3), f(0.5), f(0.25)],
        );
        assert_eq!(out[0].shape(), &[5, 3]);
        assert_eq!(
            out[0].to_i64_vec().unwrap(),
            vec![0, 0, 3, 0, 0, 0, 0, 0, 5, 0, 1, 4, 0, 1, 2]
        );
        let centers = t(
            &[
                0.5, 0.5, 1., 1., 0.5, 0.6, 1., 1., 0.5, 0.4, 1., 1., 0.5, 10.5, 1., 1., 0.5, 10.6,
                1., 1., 0.5, 100.5, 1., 1.,
            ],
            &[1, 6, 4],
        );
        let first_class = scores.slice_axis(1, 0, 1, 1).unwrap().contiguous();
        let op = build(
            "NonMaxSuppression",
            10,
            &[("center_point_box", Attribute::Int(1))],
            4,
            1,
        );
        let out = eval(
            op.as_ref(),
            &[Some(centers), Some(first_class), i(10), f(0.5)],
        );
        assert_eq!(
            out[0].to_i64_vec().unwrap(),
            vec![0, 0, 3, 0, 0, 0, 0, 0, 5]
        );
    }

    fn roi_inputs() -> Vec<Option<Tensor>> {
        vec![
            Some(t(&pat(60, 1), &[1, 2, 5, 6])),
            Some(t(
                &[0., 0., 4., 3., 1.2, 0.5, 5.5, 4.1, -1., -1., 2., 2.],
                &[3, 4],
            )),
            Some(Tensor::from_vec(vec![0i64, 0, 0], &[3]).unwrap()),
        ]
    }

    #[test]
    fn roi_align_avg_half_pixel() {
        let op = build(
            "RoiAlign",
            16,
            &[
                ("output_height", Attribute::Int(2)),
                ("output_width", Attribute::Int(3)),
                ("sampling_ratio", Attribute::Int(2)),
            ],
            3,
            1,
        );
        let out = eval(op.as_ref(), &roi_inputs());
        assert_eq!(out[0].shape(), &[3, 2, 2, 3]);
        let want = [
            -0.369141, -0.113281, 0.213542, 0.169922, -0.472656, 0.153646, 0.15625, 0.1875,
            0.19987, -0.652344, -0.171875, 0.289714, -0.079948, 0.405703, 0.163021, -0.544271,
            -0.10474, 0.314727, -0.252344, 0.058711, 0.184987, 0.205729, 0.342187, -0.303893, 0.0,
            -0.070312, -0.382812, -0.285156, -0.486328, -0.010742, 0.1875, 0.304688, -0.007812,
            0.0, -0.118164, -0.630859,
        ];
        close(&f64s(&out[0]), &want, 1e-5);
        let op = build(
            "RoiAlign",
            22,
            &[
                ("output_height", Attribute::Int(2)),
                ("output_width", Attribute::Int(2)),
                ("spatial_scale", Attribute::Float(0.5)),
            ],
            3,
            1,
        );
        let out = eval(op.as_ref(), &roi_inputs());
        let want = [
            0.0, -1.125, -0.625, 0.046875, 0.75, -0.375, 0.125, -1.0, -0.550625, 0.087188,
            0.119844, -0.151563, -0.167188, 0.671875, -0.883906, -0.145469, 0.0, -0.140625, -0.125,
            -0.220703, 0.75, 0.609375, 0.625, 0.484375,
        ];
        close(&f64s(&out[0]), &want, 1e-5);
    }

    #[test]
    fn roi_align_max_output_half_pixel() {
        let op = build(
            "RoiAlign",
            16,
            &[
                ("output_height", Attribute::Int(2)),
                ("output_width", Attribute::Int(2)),
                ("mode", s("max")),
                ("coordinate_transformation_mode", s("output_half_pixel")),
            ],
            3,
            1,
        );
        let out = eval(op.as_ref(), &roi_inputs());
        let want = [
            0.328125, 0.601562, 0.382812, 0.351562, 0.429688, 0.4375, 0.390625, 0.492188, 1.295365,
            0.85, 0.805729, 0.597656, 0.948281, 0.672917, 0.679687, 0.5625, 0.011719, 0.390625,
            0.546875, 0.574219, 0.75, 0.859375, 0.09375, 0.273438,
        ];
        close(&f64s(&out[0]), &want, 1e-5);
    }
}
