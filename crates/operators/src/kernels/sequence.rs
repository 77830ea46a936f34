//! Sequence and optional kernels: SequenceEmpty, SequenceConstruct, SequenceAt,
//! SequenceInsert, SequenceErase, SequenceLength, SplitToSequence, ConcatFromSequence,
//! Optional, OptionalHasElement, OptionalGetElement.
//!
//! Sequences are [`Value::Sequence`]; their tensors are shared, never copied, when an op only
//! rearranges the list.

use super::shape::{materialize, Concat};
use crate::{
    op_boilerplate, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use strata_tensor::{normalize_axis, DType, Tensor};

/// Registers the sequence and optional ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "SequenceEmpty", 11, |b| {
        let dtype = match b.attrs.int("dtype")? {
            None => DType::F32,
            Some(code) => i32::try_from(code)
                .ok()
                .and_then(DType::from_onnx_code)
                .ok_or_else(|| {
                    OpError::attribute("dtype", format!("{code} is not a tensor element type"))
                })?,
        };
        Ok(Box::new(SequenceEmpty { dtype }))
    });
    registry.register("", "SequenceConstruct", 11, |_| {
        Ok(Box::new(SequenceConstruct))
    });
    registry.register("", "SequenceAt", 11, |_| Ok(Box::new(SequenceAt)));
    registry.register("", "SequenceInsert", 11, |_| Ok(Box::new(SequenceInsert)));
    registry.register("", "SequenceErase", 11, |_| Ok(Box::new(SequenceErase)));
    registry.register("", "SequenceLength", 11, |_| Ok(Box::new(SequenceLength)));
    registry.register("", "SplitToSequence", 11, |b| {
        Ok(Box::new(SplitToSequence {
            axis: b.attrs.int_or("axis", 0)?,
            keepdims: b.attrs.int_or("keepdims", 1)? != 0,
        }))
    });
    registry.register("", "ConcatFromSequence", 11, |b| {
        Ok(Box::new(ConcatFromSequence {
            axis: b
                .attrs
                .int("axis")?
                .ok_or_else(|| OpError::attribute("axis", "required"))?,
            new_axis: b.attrs.int_or("new_axis", 0)? != 0,
        }))
    });
    registry.register("", "Optional", 15, |_| Ok(Box::new(OptionalOp)));
    registry.register("", "OptionalHasElement", 15, |_| {
        Ok(Box::new(OptionalHasElement))
    });
    registry.register("", "OptionalGetElement", 15, |_| {
        Ok(Box::new(OptionalGetElement))
    });
}

fn sequence(inputs: &Inputs, index: usize) -> OpResult<&[Tensor]> {
    match inputs.value(index) {
        Some(Value::Sequence(s)) => Ok(s),
        Some(other) => Err(OpError::invalid(
            index,
            format!("expected a sequence, got {}", other.describe()),
        )),
        None => Err(OpError::MissingInput { index }),
    }
}

/// The position held by scalar input `index`, if present.
fn position(inputs: &Inputs, index: usize) -> OpResult<Option<i64>> {
    match inputs.opt_tensor(index)? {
        None => Ok(None),
        Some(t) if t.dtype() == DType::I64 || t.dtype() == DType::I32 => {
            match t.to_i64_vec()?.as_slice() {
                [p] => Ok(Some(*p)),
                _ => Err(OpError::invalid(
                    index,
                    format!("position must be a scalar, got shape {:?}", t.shape()),
                )),
            }
        }
        Some(t) => Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        }),
    }
}

/// Normalizes `pos` into `0..=max` (negative counts from `len`).
fn norm_position(index: usize, pos: i64, len: usize, max: usize) -> OpResult<usize> {
    let p = if pos < 0 { pos + len as i64 } else { pos };
    if (0..=max as i64).contains(&p) {
        Ok(p as usize)
    } else {
        Err(OpError::invalid(
            index,
            format!("position {pos} is out of range for a sequence of {len} tensors"),
        ))
    }
}

fn check_dtype(seq: &[Tensor], t: &Tensor, index: usize) -> OpResult<()> {
    match seq.first() {
        Some(f) if f.dtype() != t.dtype() => Err(OpError::UnsupportedDType {
            index,
            dtype: t.dtype(),
        }),
        _ => Ok(()),
    }
}

/// `SequenceEmpty`: an empty sequence.
#[derive(Debug, Clone, Copy)]
pub struct SequenceEmpty {
    /// Declared element type (not stored in the runtime value).
    pub dtype: DType,
}

impl Operator for SequenceEmpty {
    op_boilerplate!("SequenceEmpty");

    fn eval(&self, _ctx: &EvalCtx<'_>, _inputs: Inputs) -> OpResult<Vec<Value>> {
        Ok(vec![Value::Sequence(Vec::new())])
    }
}

/// `SequenceConstruct`: a sequence of the input tensors (all of one dtype).
#[derive(Debug, Clone, Copy)]
pub struct SequenceConstruct;

impl Operator for SequenceConstruct {
    op_boilerplate!("SequenceConstruct");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let ts = inputs.tensors()?;
        let mut out: Vec<Tensor> = Vec::with_capacity(ts.len());
        for (i, t) in ts.into_iter().enumerate() {
            check_dtype(&out, t, i)?;
            out.push(t.clone());
        }
        Ok(vec![Value::Sequence(out)])
    }
}

/// `SequenceAt`: the tensor at a (possibly negative) position.
#[derive(Debug, Clone, Copy)]
pub struct SequenceAt;

impl Operator for SequenceAt {
    op_boilerplate!("SequenceAt");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let seq = sequence(&inputs, 0)?;
        let pos = position(&inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?;
        if seq.is_empty() {
            return Err(OpError::invalid(0, "the sequence is empty"));
        }
        let p = norm_position(1, pos, seq.len(), seq.len() - 1)?;
        Ok(vec![seq[p].clone().into()])
    }
}

/// `SequenceInsert`: the sequence with a tensor inserted at a position (default: appended).
#[derive(Debug, Clone, Copy)]
pub struct SequenceInsert;

impl Operator for SequenceInsert {
    op_boilerplate!("SequenceInsert");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let seq = sequence(&inputs, 0)?;
        let t = inputs.tensor(1)?;
        check_dtype(seq, t, 1)?;
        let p = match position(&inputs, 2)? {
            None => seq.len(),
            Some(pos) => norm_position(2, pos, seq.len(), seq.len())?,
        };
        let mut out = seq.to_vec();
        out.insert(p, t.clone());
        Ok(vec![Value::Sequence(out)])
    }
}

/// `SequenceErase`: the sequence without the tensor at a position (default: the last).
#[derive(Debug, Clone, Copy)]
pub struct SequenceErase;

impl Operator for SequenceErase {
    op_boilerplate!("SequenceErase");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let seq = sequence(&inputs, 0)?;
        if seq.is_empty() {
            return Err(OpError::invalid(0, "cannot erase from an empty sequence"));
        }
        let pos = position(&inputs, 1)?.unwrap_or(-1);
        let p = norm_position(1, pos, seq.len(), seq.len() - 1)?;
        let mut out = seq.to_vec();
        out.remove(p);
        Ok(vec![Value::Sequence(out)])
    }
}

/// `SequenceLength`: the number of tensors, as an int64 scalar.
#[derive(Debug, Clone, Copy)]
pub struct SequenceLength;

impl Operator for SequenceLength {
    op_boilerplate!("SequenceLength");

    fn infer(&self, _inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(Some(vec![Fact::known(DType::I64, &[])]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        Ok(vec![
            Tensor::scalar(sequence(&inputs, 0)?.len() as i64).into()
        ])
    }
}

/// `SplitToSequence`: splits a tensor along `axis` into a sequence, by a chunk size (scalar
/// `split`), explicit lengths (1-D `split`) or into single slices (no `split`; `keepdims`
/// decides whether the axis is kept).
#[derive(Debug, Clone, Copy)]
pub struct SplitToSequence {
    /// The splitting axis.
    pub axis: i64,
    /// Whether single slices keep the split axis (only without `split`).
    pub keepdims: bool,
}

impl Operator for SplitToSequence {
    op_boilerplate!("SplitToSequence");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let data = inputs.tensor(0)?;
        let a = normalize_axis(self.axis, data.rank()).map_err(|_| {
            OpError::attribute(
                "axis",
                format!("{} is out of range for rank {}", self.axis, data.rank()),
            )
        })?;
        let dim = data.shape()[a];
        let split = inputs.opt_tensor(1)?;
        let lens: Vec<usize> = match split {
            None => vec![1; dim],
            Some(s) => {
                if !s.dtype().is_integer() {
                    return Err(OpError::UnsupportedDType {
                        index: 1,
                        dtype: s.dtype(),
                    });
                }
                let v = s.to_i64_vec()?;
                if s.rank() == 0 {
                    let chunk = v.first().copied().unwrap_or(0);
                    let chunk =
                        usize::try_from(chunk)
                            .ok()
                            .filter(|&c| c > 0)
                            .ok_or_else(|| {
                                OpError::invalid(1, format!("split size {chunk} is not positive"))
                            })?;
                    (0..dim.div_ceil(chunk))
                        .map(|i| chunk.min(dim - i * chunk))
                        .collect()
                } else if s.rank() == 1 {
                    let lens: Vec<usize> = v
                        .iter()
                        .map(|&l| {
                            usize::try_from(l).map_err(|_| {
                                OpError::invalid(1, format!("negative split {l} in {v:?}"))
                            })
                        })
                        .collect::<OpResult<_>>()?;
                    if lens.iter().sum::<usize>() != dim {
                        return Err(OpError::invalid(
                            1,
                            format!("split {v:?} does not sum to dimension {dim}"),
                        ));
                    }
                    lens
                } else {
                    return Err(OpError::invalid(
                        1,
                        format!("split must be a scalar or 1-D, got shape {:?}", s.shape()),
                    ));
                }
            }
        };
        let squeeze = split.is_none() && !self.keepdims;
        let mut out = Vec::with_capacity(lens.len());
        let mut start = 0;
        for len in lens {
            let piece = if len == 0 {
                data.slice_axis(a, 0, 0, 1)?
            } else {
                data.slice_axis(a, start, (start + len) as isize, 1)?
            };
            let mut piece = materialize(ctx, &piece)?;
            if squeeze {
                let mut shape = piece.shape().to_vec();
                shape.remove(a);
                piece = piece.reshape(&shape)?;
            }
            out.push(piece);
            start += len;
        }
        Ok(vec![Value::Sequence(out)])
    }
}

/// `ConcatFromSequence`: concatenates (or, with `new_axis`, stacks) a sequence's tensors.
#[derive(Debug, Clone, Copy)]
pub struct ConcatFromSequence {
    /// The joining axis; with `new_axis` it indexes the output's axes.
    pub axis: i64,
    /// Stack along a new axis instead of concatenating.
    pub new_axis: bool,
}

impl Operator for ConcatFromSequence {
    op_boilerplate!("ConcatFromSequence");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let seq = sequence(&inputs, 0)?;
        let first = seq
            .first()
            .ok_or_else(|| OpError::invalid(0, "cannot concatenate an empty sequence"))?;
        let (axis, tensors) = if self.new_axis {
            let a = normalize_axis(self.axis, first.rank() + 1).map_err(|_| {
                OpError::attribute(
                    "axis",
                    format!(
                        "{} is out of range for rank {} + 1",
                        self.axis,
                        first.rank()
                    ),
                )
            })?;
            let stacked = seq
                .iter()
                .map(|t| t.insert_axis(a))
                .collect::<Result<Vec<_>, _>>()?;
            (a as i64, stacked)
        } else {
            (self.axis, seq.to_vec())
        };
        Concat { axis }.eval(ctx, Inputs::from_tensors(tensors))
    }
}

/// `Optional`: wraps its input (or nothing, when absent) in an optional value.
#[derive(Debug, Clone, Copy)]
pub struct OptionalOp;

impl Operator for OptionalOp {
    op_boilerplate!("Optional");

    fn eval(&self, _ctx: &EvalCtx<'_>, mut inputs: Inputs) -> OpResult<Vec<Value>> {
        Ok(vec![Value::Optional(inputs.take(0).map(Box::new))])
    }
}

/// `OptionalHasElement`: whether the optional input holds a value (a plain tensor or
/// sequence counts as present, a missing input as empty).
#[derive(Debug, Clone, Copy)]
pub struct OptionalHasElement;

impl Operator for OptionalHasElement {
    op_boilerplate!("OptionalHasElement");

    fn infer(&self, _inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        Ok(Some(vec![Fact::known(DType::Bool, &[])]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let has = match inputs.value(0) {
            None | Some(Value::Optional(None)) => false,
            Some(_) => true,
        };
        Ok(vec![Tensor::from_bools(&[has], &[])?.into()])
    }
}

/// `OptionalGetElement`: the value inside an optional (plain tensors and sequences pass
/// through); an empty optional is an error.
#[derive(Debug, Clone, Copy)]
pub struct OptionalGetElement;

impl Operator for OptionalGetElement {
    op_boilerplate!("OptionalGetElement");

    fn eval(&self, _ctx: &EvalCtx<'_>, mut inputs: Inputs) -> OpResult<Vec<Value>> {
        match inputs.take(0) {
            Some(Value::Optional(Some(v))) => Ok(vec![*v]),
            Some(Value::Optional(None)) => Err(OpError::invalid(0, "the optional is empty")),
            Some(v) => Ok(vec![v]),
            None => Err(OpError::MissingInput { index: 0 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attributes;

    fn op(name: &str, attrs: Attributes) -> Box<dyn Operator> {
        let mut r = OpRegistry::new();
        register(&mut r);
        let ctx = crate::BuildCtx {
            node_name: "",
            op_type: name,
            domain: "",
            opset: 18,
            attrs: &attrs,
            input_count: 0,
            output_count: 1,
        };
        r.build(&ctx).unwrap()
    }

    fn run(name: &str, attrs: Attributes, inputs: Vec<Option<Value>>) -> OpResult<Value> {
        let out = op(name, attrs).eval(&EvalCtx::default(), Inputs::new(inputs))?;
        Ok(out.into_iter().next().unwrap())
    }

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape).unwrap()
    }

    fn pos(p: i64) -> Option<Value> {
        Some(Tensor::scalar(p).into())
    }

    fn seq(v: Value) -> Vec<Tensor> {
        match v {
            Value::Sequence(s) => s,
            other => panic!("expected a sequence, got {}", other.describe()),
        }
    }

    fn first(v: &Tensor) -> f32 {
        v.to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn construct_insert_at_erase_length() {
        let (a, b, c) = (t(&[1.], &[1]), t(&[2.], &[1]), t(&[3.], &[1]));
        let s = run("SequenceEmpty", Attributes::new(), vec![]).unwrap();
        let s = run(
            "SequenceInsert",
            Attributes::new(),
            vec![Some(s), Some(a.clone().into())],
        )
        .unwrap();
        let s = run(
            "SequenceInsert",
            Attributes::new(),
            vec![Some(s), Some(c.clone().into())],
        )
        .unwrap();
        let s = run(
            "SequenceInsert",
            Attributes::new(),
            vec![Some(s), Some(b.clone().into()), pos(-1)],
        )
        .unwrap();
        let items = seq(s.clone());
        assert_eq!(
            items.iter().map(first).collect::<Vec<_>>(),
            vec![1., 2., 3.]
        );
        let at = run(
            "SequenceAt",
            Attributes::new(),
            vec![Some(s.clone()), pos(-3)],
        )
        .unwrap();
        assert_eq!(first(at.as_tensor().unwrap()), 1.);
        let e = run("SequenceErase", Attributes::new(), vec![Some(s.clone())]).unwrap();
        assert_eq!(seq(e.clone()).len(), 2);
        let e = run("SequenceErase", Attributes::new(), vec![Some(e), pos(0)]).unwrap();
        assert_eq!(first(&seq(e)[0]), 2.);
        let n = run("SequenceLength", Attributes::new(), vec![Some(s.clone())]).unwrap();
        assert_eq!(n.as_tensor().unwrap().to_vec::<i64>().unwrap(), vec![3]);
        let built = run(
            "SequenceConstruct",
            Attributes::new(),
            vec![Some(a.into()), Some(b.into())],
        )
        .unwrap();
        assert_eq!(seq(built).len(), 2);

        assert!(run(
            "SequenceAt",
            Attributes::new(),
            vec![Some(s.clone()), pos(3)]
        )
        .unwrap_err()
        .to_string()
        .contains("out of range"));
        assert!(run(
            "SequenceInsert",
            Attributes::new(),
            vec![Some(s.clone()), Some(c.clone().into()), pos(5)]
        )
        .is_err());
        let ints = Tensor::from_slice(&[1i64], &[1]).unwrap();
        assert!(run(
            "SequenceInsert",
            Attributes::new(),
            vec![Some(s.clone()), Some(ints.clone().into())]
        )
        .unwrap_err()
        .to_string()
        .contains("dtype"));
        assert!(run(
            "SequenceConstruct",
            Attributes::new(),
            vec![Some(c.into()), Some(ints.into())]
        )
        .is_err());
        assert!(run(
            "SequenceErase",
            Attributes::new(),
            vec![Some(Value::Sequence(vec![]))]
        )
        .is_err());
        assert!(run(
            "SequenceAt",
            Attributes::new(),
            vec![Some(t(&[1.], &[1]).into()), pos(0)]
        )
        .unwrap_err()
        .to_string()
        .contains("expected a sequence"));
    }

    #[test]
    fn split_to_sequence_variants() {
        let x = t(&[0., 1., 2., 3., 4., 5.], &[3, 2]);
        let attrs = |axis: i64, keep: i64| {
            Attributes::new()
                .with("axis", crate::Attribute::Int(axis))
                .with("keepdims", crate::Attribute::Int(keep))
        };
        let s = seq(run("SplitToSequence", attrs(0, 0), vec![Some(x.clone().into())]).unwrap());
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].shape(), &[2]);
        assert_eq!(s[1].to_vec::<f32>().unwrap(), vec![2., 3.]);
        let s = seq(run(
            "SplitToSequence",
            attrs(-1, 1),
            vec![Some(x.clone().into())],
        )
        .unwrap());
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].shape(), &[3, 1]);
        assert_eq!(s[1].to_vec::<f32>().unwrap(), vec![1., 3., 5.]);
        // Scalar split: chunks of 2, last smaller; keepdims is ignored.
        let s = seq(run(
            "SplitToSequence",
            attrs(0, 0),
            vec![Some(x.clone().into()), pos(2)],
        )
        .unwrap());
        assert_eq!(
            s.iter().map(|t| t.shape()[0]).collect::<Vec<_>>(),
            vec![2, 1]
        );
        let lens = Tensor::from_slice(&[1i64, 2], &[2]).unwrap();
        let s = seq(run(
            "SplitToSequence",
            attrs(0, 1),
            vec![Some(x.clone().into()), Some(lens.into())],
        )
        .unwrap());
        assert_eq!(s[1].to_vec::<f32>().unwrap(), vec![2., 3., 4., 5.]);
        let bad = Tensor::from_slice(&[1i64, 1], &[2]).unwrap();
        assert!(run(
            "SplitToSequence",
            attrs(0, 1),
            vec![Some(x.clone().into()), Some(bad.into())]
        )
        .is_err());
        assert!(run(
            "SplitToSequence",
            attrs(0, 1),
            vec![Some(x.clone().into()), pos(0)]
        )
        .is_err());
        assert!(run("SplitToSequence", attrs(2, 1), vec![Some(x.into())])
            .unwrap_err()
            .to_string()
            .contains("axis"));
    }

    #[test]
    fn concat_from_sequence_with_and_without_new_axis() {
        let s = Value::Sequence(vec![t(&[1., 2.], &[1, 2]), t(&[3., 4.], &[1, 2])]);
        let a = |axis: i64, new: i64| {
            Attributes::new()
                .with("axis", crate::Attribute::Int(axis))
                .with("new_axis", crate::Attribute::Int(new))
        };
        let y = run("ConcatFromSequence", a(1, 0), vec![Some(s.clone())])
            .unwrap()
            .into_tensor()
            .unwrap();
        assert_eq!(y.shape(), &[1, 4]);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
        let y = run("ConcatFromSequence", a(-1, 1), vec![Some(s.clone())])
            .unwrap()
            .into_tensor()
            .unwrap();
        assert_eq!(y.shape(), &[1, 2, 2]);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![1., 3., 2., 4.]);
        assert!(run("ConcatFromSequence", a(3, 1), vec![Some(s)]).is_err());
        assert!(run(
            "ConcatFromSequence",
            a(0, 0),
            vec![Some(Value::Sequence(vec![]))]
        )
        .is_err());
    }

    #[test]
    fn optionals() {
        let x: Value = t(&[1.], &[1]).into();
        let o = run("Optional", Attributes::new(), vec![Some(x.clone())]).unwrap();
        let has = |v: Option<Value>| {
            run("OptionalHasElement", Attributes::new(), vec![v])
                .unwrap()
                .into_tensor()
                .unwrap()
                .as_bool_slice()
                .unwrap()[0]
        };
        assert_eq!(has(Some(o.clone())), 1);
        assert_eq!(has(Some(Value::Optional(None))), 0);
        assert_eq!(has(None), 0);
        assert_eq!(has(Some(x)), 1);
        let got = run("OptionalGetElement", Attributes::new(), vec![Some(o)]).unwrap();
        assert_eq!(first(got.as_tensor().unwrap()), 1.);
        assert!(run(
            "OptionalGetElement",
            Attributes::new(),
            vec![Some(Value::Optional(None))]
        )
        .is_err());
        let empty = run("Optional", Attributes::new(), vec![None]).unwrap();
        assert!(matches!(empty, Value::Optional(None)));
    }
}
