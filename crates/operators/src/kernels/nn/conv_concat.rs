//! `ConvConcat`: convolutions whose outputs are concatenated along channels (SqueezeNet's
//! fire modules, Inception's branches), set up by the graph's prepacking passes. Each
//! convolution with prepacked weights writes its output straight into its channels of the
//! concatenation, so the separate outputs and the copy into the concatenation never
//! happen; any other is evaluated on its own and copied into place.

use super::conv::{Conv, OutputChannels};
use crate::{op_boilerplate, EvalCtx, Fact, Inputs, OpError, OpResult, Operator, Value};
use smallvec::SmallVec;
use strata_tensor::{DType, Tensor};

/// Convolutions concatenated along axis 1 of their outputs. The op's inputs are each
/// convolution's inputs in turn (`arity[i]` of them for convolution `i`).
#[derive(Debug, Clone)]
pub struct ConvConcat {
    /// The convolutions, in concatenation order.
    pub convs: Vec<Conv>,
    /// How many inputs each convolution takes.
    pub arity: Vec<usize>,
}

impl ConvConcat {
    /// A label naming the parts, such as `Concat(Conv+Relu,Conv+Relu)`.
    pub fn label(&self) -> String {
        let parts: Vec<String> = self.convs.iter().map(Conv::label).collect();
        format!("Concat({})", parts.join(","))
    }

    /// `items` split into each convolution's inputs.
    fn split<'a, T>(&self, items: &'a [T]) -> OpResult<SmallVec<[&'a [T]; 4]>> {
        if self.arity.len() != self.convs.len() || self.arity.iter().sum::<usize>() != items.len() {
            return Err(OpError::invalid(
                0,
                format!(
                    "{} inputs do not split as {:?} among {} convolutions",
                    items.len(),
                    self.arity,
                    self.convs.len()
                ),
            ));
        }
        let mut rest = items;
        Ok(self
            .arity
            .iter()
            .map(|&n| {
                let (part, tail) = rest.split_at(n);
                rest = tail;
                part
            })
            .collect())
    }

    /// The concatenation of `shapes` (each `[N, M_i, ...]`) along axis 1.
    fn joined<'a>(shapes: impl IntoIterator<Item = &'a [usize]> + Clone) -> OpResult<Vec<usize>> {
        let first = shapes
            .clone()
            .into_iter()
            .next()
            .ok_or(OpError::MissingInput { index: 0 })?;
        if first.len() < 2 {
            return Err(OpError::invalid(
                0,
                format!("output {first:?} has no channel axis"),
            ));
        }
        let mut out = first.to_vec();
        out[1] = 0;
        for (i, s) in shapes.into_iter().enumerate() {
            if s.len() != first.len() || s[0] != first[0] || s[2..] != first[2..] {
                return Err(OpError::invalid(
                    0,
                    format!(
                        "convolution {i}'s output {s:?} does not concatenate with {first:?} \
                         along channels"
                    ),
                ));
            }
            out[1] += s[1];
        }
        Ok(out)
    }
}

impl Operator for ConvConcat {
    op_boilerplate!("ConvConcat");

    fn weight_bytes(&self) -> usize {
        self.convs.iter().map(Operator::weight_bytes).sum()
    }

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let mut shapes = Vec::with_capacity(self.convs.len());
        let mut dtype = None;
        for (conv, part) in self.convs.iter().zip(self.split(inputs)?) {
            let Some(facts) = conv.infer(part)? else {
                return Ok(None);
            };
            let Some(shape) = facts.first().and_then(Fact::concrete_shape) else {
                return Ok(None);
            };
            dtype = dtype.or(facts[0].dtype);
            shapes.push(shape);
        }
        let out = Self::joined(shapes.iter().map(Vec::as_slice))?;
        Ok(dtype.map(|d| vec![Fact::known(d, &out)]))
    }

    fn flops(&self, inputs: &[Fact]) -> u64 {
        self.split(inputs).map_or(0, |parts| {
            self.convs
                .iter()
                .zip(parts)
                .map(|(conv, part)| conv.flops(part))
                .sum()
        })
    }

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let values: SmallVec<[Option<Value>; 16]> = (0..inputs.len())
            .map(|i| inputs.value(i).cloned())
            .collect();
        let parts: SmallVec<[Inputs; 4]> = self
            .split(&values)?
            .into_iter()
            .map(|part| Inputs::new(part.to_vec()))
            .collect();
        let plans = self
            .convs
            .iter()
            .zip(&parts)
            .map(|(conv, part)| conv.plan_for(part))
            .collect::<OpResult<SmallVec<[_; 4]>>>()?;
        let out_shape = Self::joined(plans.iter().map(|p| p.out_shape()))?;
        let dtype = inputs.tensor(0)?.dtype();
        let mut out = ctx.alloc_for_overwrite(dtype, &out_shape)?;
        let mut first = 0;
        for ((conv, part), plan) in self.convs.iter().zip(parts).zip(&plans) {
            let direct = conv
                .prepacked
                .as_ref()
                .filter(|_| dtype == DType::F32 && conv.output_shuffle.is_none());
            match direct {
                Some(packed) => {
                    let dst = OutputChannels {
                        out: out.as_slice_mut::<f32>()?,
                        channels: out_shape[1],
                        first,
                    };
                    conv.prepacked_into(ctx, &part, packed, dst)?;
                }
                None => {
                    let y = conv.eval(ctx, part)?.into_iter().next();
                    let y = y.and_then(Value::into_tensor).ok_or_else(|| {
                        OpError::invalid(0, "a convolution gave no tensor output")
                    })?;
                    copy_channels(&y, &mut out, first)?;
                }
            }
            first += plan.out_shape()[1];
        }
        Ok(vec![out.into()])
    }
}

/// Copies `y` (`[N, M, ...]`) into channels `first..first + M` of `out` (same dtype and
/// other dimensions).
fn copy_channels(y: &Tensor, out: &mut Tensor, first: usize) -> OpResult<()> {
    let (ys, os) = (y.shape(), out.shape());
    let fits = ys.len() == os.len()
        && ys.len() >= 2
        && ys[0] == os[0]
        && ys[2..] == os[2..]
        && first + ys[1] <= os[1];
    if y.dtype() != out.dtype() || !fits {
        return Err(OpError::invalid(
            0,
            format!(
                "{} output {:?} does not fit a {} concatenation {:?}",
                y.dtype(),
                y.shape(),
                out.dtype(),
                out.shape()
            ),
        ));
    }
    let (n, plane) = (
        ys[0],
        ys[2..].iter().product::<usize>() * y.dtype().size_of(),
    );
    let (item, out_item) = (ys[1] * plane, os[1] * plane);
    let y = y.contiguous();
    let src = y.raw_bytes()?;
    let dst = out.raw_bytes_mut()?;
    for b in 0..n {
        dst[b * out_item + first * plane..][..item].copy_from_slice(&src[b * item..][..item]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::conv::PackedConvWeights;
    use super::super::testutil::{build, eval, facts_of, pat, t};
    use super::*;
    use crate::kernels::fused::Activation;
    use crate::Attribute;
    use std::sync::Arc;

    /// A Conv with `attrs`, its weights prepacked when `packed` (input 1 then disconnected),
    /// and its inputs.
    fn conv(
        x: &Tensor,
        ws: [usize; 4],
        attrs: &[(&str, Attribute)],
        packed: bool,
        seed: i64,
    ) -> (Conv, Vec<Option<Tensor>>) {
        let op = build("Conv", 11, attrs, 3, 1);
        let mut conv = op.as_any().downcast_ref::<Conv>().unwrap().clone();
        conv.activation = Some(Activation::Relu);
        let w = t(&pat(ws.iter().product(), seed), &ws);
        let b = t(&pat(ws[0], seed + 1), &[ws[0]]);
        let mut inputs = vec![Some(x.clone()), Some(w.clone()), Some(b)];
        if packed {
            let weights = PackedConvWeights::for_conv(&conv, &w, Some(x.shape())).unwrap();
            conv.prepacked = Some(Arc::new(weights));
            inputs[1] = None;
        }
        (conv, inputs)
    }

    #[test]
    fn concatenated_convs_match_a_concat_of_their_outputs() {
        // Two batch items; a prepacked 1x1 and 3x3 (written in place), a depthwise and a
        // shuffled one (evaluated apart and copied), reading two different inputs.
        let x = t(&pat(2 * 8 * 9 * 9, 1), &[2, 8, 9, 9]);
        let z = t(&pat(2 * 8 * 9 * 9, 2), &[2, 8, 9, 9]);
        let pad = ("pads", Attribute::Ints(vec![1; 4]));
        let mut shuffled = conv(&z, [12, 8, 1, 1], &[], true, 9);
        shuffled.0.output_shuffle = Some(3);
        let parts = [
            conv(&x, [16, 8, 1, 1], &[], true, 3),
            conv(&x, [20, 8, 3, 3], std::slice::from_ref(&pad), true, 5),
            conv(
                &z,
                [8, 1, 3, 3],
                &[pad, ("group", Attribute::Int(8))],
                false,
                7,
            ),
            shuffled,
        ];
        let mut want: Vec<Vec<f32>> = vec![Vec::new(); 2];
        for (c, inputs) in &parts {
            let y = eval(c, inputs).remove(0);
            let item = y.len() / 2;
            for (b, w) in want.iter_mut().enumerate() {
                w.extend_from_slice(&y.as_slice::<f32>().unwrap()[b * item..][..item]);
            }
        }
        let op = ConvConcat {
            convs: parts.iter().map(|(c, _)| c.clone()).collect(),
            arity: parts.iter().map(|(_, i)| i.len()).collect(),
        };
        let inputs: Vec<Option<Tensor>> = parts.iter().flat_map(|(_, i)| i.clone()).collect();
        let got = eval(&op, &inputs).remove(0);
        assert_eq!(got.shape(), [2, 56, 9, 9]);
        assert_eq!(got.as_slice::<f32>().unwrap(), want.concat().as_slice());
        assert_eq!(
            op.label(),
            "Concat(Conv+Relu,Conv+Relu,Conv+Relu,Conv+Relu+ChannelShuffle)"
        );
        let facts = facts_of(&inputs);
        let one_by_one: u64 = parts
            .iter()
            .zip(op.split(&facts).unwrap())
            .map(|((c, _), f)| c.flops(f))
            .sum();
        assert_eq!(op.flops(&facts), one_by_one);
    }

    #[test]
    fn parts_that_do_not_fit_are_errors() {
        let x = t(&pat(8 * 36, 1), &[1, 8, 6, 6]);
        let small = t(&pat(8 * 16, 2), &[1, 8, 4, 4]);
        let (a, ia) = conv(&x, [4, 8, 1, 1], &[], true, 3);
        let (b, ib) = conv(&small, [4, 8, 1, 1], &[], true, 5);
        let op = ConvConcat {
            convs: vec![a.clone(), b],
            arity: vec![3, 3],
        };
        let run = |op: &ConvConcat, inputs: Vec<Option<Tensor>>| {
            let values = inputs.into_iter().map(|t| t.map(Into::into)).collect();
            op.eval(&EvalCtx::default(), Inputs::new(values))
                .unwrap_err()
                .to_string()
        };
        let err = run(&op, ia.iter().chain(&ib).cloned().collect());
        assert!(err.contains("does not concatenate"), "{err}");
        let short = ConvConcat {
            convs: vec![a],
            arity: vec![2],
        };
        let err = run(&short, ia);
        assert!(err.contains("do not split"), "{err}");
    }
}
