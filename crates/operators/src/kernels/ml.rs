//! Ops of the `ai.onnx.ml` domain: `LabelEncoder` (key to value lookup), `TreeEnsemble`
//! (decision-tree ensembles, opset 5), `Binarizer` and `ArrayFeatureExtractor`.

use super::shape::common::{norm_index, Elems, ElemsMut};
use super::staging::{f64_output, numeric_values};
use crate::{
    Attributes, BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use std::collections::HashMap;
use strata_tensor::{DType, Tensor};

const ML: &str = "ai.onnx.ml";

/// Registers the ML-domain ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register(ML, "LabelEncoder", 1, build_label_encoder);
    registry.register(ML, "TreeEnsemble", 5, build_tree_ensemble);
    registry.register(ML, "Binarizer", 1, |b| {
        Ok(Box::new(Binarizer {
            threshold: f64::from(b.attrs.float_or("threshold", 0.0)?),
        }))
    });
    registry.register(ML, "ArrayFeatureExtractor", 1, |_| {
        Ok(Box::new(ArrayFeatureExtractor))
    });
}

// ----- LabelEncoder -------------------------------------------------------------------------

/// A lookup key: strings, integers, or floats by their f64 bits (NaN unified).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Str(String),
    Int(i64),
    Float(u64),
}

fn float_key(v: f64) -> Key {
    Key::Float(if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        (v + 0.0).to_bits()
    })
}

/// The keys of a tensor, by its dtype.
fn tensor_keys(t: &Tensor, index: usize) -> OpResult<Vec<Key>> {
    let t = t.contiguous();
    let dt = t.dtype();
    if dt == DType::String {
        Ok(t.as_strings()?.iter().cloned().map(Key::Str).collect())
    } else if dt.is_integer() {
        Ok(t.to_i64_vec()?.into_iter().map(Key::Int).collect())
    } else if dt.is_float() {
        Ok(numeric_values(&t, index)?
            .into_iter()
            .map(float_key)
            .collect())
    } else {
        Err(OpError::UnsupportedDType { index, dtype: dt })
    }
}

/// `LabelEncoder`: maps each element through `keys -> values`, with a default for absent keys.
#[derive(Debug, Clone)]
pub struct LabelEncoder {
    map: HashMap<Key, usize>,
    /// The values followed by the default, as one 1-D tensor of the output dtype.
    table: Tensor,
}

fn label_keys(a: &Attributes) -> OpResult<Vec<Key>> {
    if let Some(t) = a.tensor("keys_tensor")? {
        return tensor_keys(&t, 0);
    }
    if let Some(v) = a.strings("keys_strings")? {
        return Ok(v.into_iter().map(Key::Str).collect());
    }
    if let Some(v) = a.ints("keys_int64s")? {
        return Ok(v.into_iter().map(Key::Int).collect());
    }
    if let Some(v) = a.floats("keys_floats")? {
        return Ok(v.into_iter().map(|f| float_key(f64::from(f))).collect());
    }
    Err(OpError::attribute(
        "keys_strings",
        "no keys attribute is set",
    ))
}

/// The values and the default as one tensor (values first, default last).
fn label_table(a: &Attributes) -> OpResult<Tensor> {
    if let Some(t) = a.tensor("values_tensor")? {
        let default = match a.tensor("default_tensor")? {
            Some(d) => d,
            None => super::shape::common::scalar_of(
                t.dtype(),
                if t.dtype() == DType::String {
                    0.0
                } else {
                    -1.0
                },
            )?,
        };
        if default.len() != 1 || default.dtype() != t.dtype() {
            return Err(OpError::attribute(
                "default_tensor",
                "must hold one value of the values' dtype",
            ));
        }
        let values = t.contiguous().reshape(&[t.len()])?;
        let default = default.contiguous().reshape(&[1])?;
        return concat_1d(&values, &default);
    }
    if let Some(mut v) = a.strings("values_strings")? {
        v.push(a.string_or("default_string", "_Unused")?);
        let n = v.len();
        return Ok(Tensor::from_strings(v, &[n])?);
    }
    if let Some(mut v) = a.ints("values_int64s")? {
        v.push(a.int_or("default_int64", -1)?);
        let n = v.len();
        return Ok(Tensor::from_vec(v, &[n])?);
    }
    if let Some(mut v) = a.floats("values_floats")? {
        v.push(a.float_or("default_float", -0.0)?);
        let n = v.len();
        return Ok(Tensor::from_vec(v, &[n])?);
    }
    Err(OpError::attribute(
        "values_strings",
        "no values attribute is set",
    ))
}

fn concat_1d(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let mut out = Tensor::zeros(a.dtype(), &[a.len() + b.len()])?;
    let mut dst = ElemsMut::of(&mut out)?;
    dst.copy_block(0, &Elems::of(a)?, 0, a.len())?;
    dst.copy_block(a.len(), &Elems::of(b)?, 0, b.len())?;
    Ok(out)
}

fn build_label_encoder(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let keys = label_keys(ctx.attrs)?;
    let table = label_table(ctx.attrs)?;
    if keys.len() + 1 != table.len() {
        return Err(OpError::attribute(
            "values",
            format!("{} keys but {} values", keys.len(), table.len() - 1),
        ));
    }
    let map = keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
    Ok(Box::new(LabelEncoder { map, table }))
}

impl Operator for LabelEncoder {
    crate::op_boilerplate!("LabelEncoder");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let default = self.table.len() - 1;
        let idx: Vec<usize> = tensor_keys(x, 0)?
            .iter()
            .map(|k| self.map.get(k).copied().unwrap_or(default))
            .collect();
        let mut out = ctx.alloc(self.table.dtype(), x.shape())?;
        ElemsMut::of(&mut out)?.gather(0, &Elems::of(&self.table)?, &idx)?;
        Ok(vec![out.into()])
    }
}

// ----- TreeEnsemble -------------------------------------------------------------------------

/// Where a branch leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Node(usize),
    Leaf(usize),
}

/// A node comparison.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    Leq(f64),
    Lt(f64),
    Gte(f64),
    Gt(f64),
    Eq(f64),
    Neq(f64),
    Member(Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
struct TreeNode {
    test: Test,
    feature: usize,
    missing_true: bool,
    yes: Target,
    no: Target,
}

/// How the trees' leaf weights are combined per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Mean over trees.
    Average,
    /// Sum.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
}

/// `TreeEnsemble`: evaluates every tree on each row of `X [N, F]` and aggregates the reached
/// leaves' weights into `[N, n_targets]`. Only `post_transform = NONE` is supported.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    nodes: Vec<TreeNode>,
    leaves: Vec<(f64, usize)>,
    roots: Vec<Target>,
    targets: usize,
    aggregate: Aggregate,
}

fn ints_attr(a: &Attributes, name: &str) -> OpResult<Vec<i64>> {
    a.ints(name)?
        .ok_or_else(|| OpError::attribute(name, "required"))
}

fn f64_tensor_attr(a: &Attributes, name: &str) -> OpResult<Option<Vec<f64>>> {
    a.tensor(name)?.map(|t| numeric_values(&t, 0)).transpose()
}

fn index_list(name: &str, v: &[i64], bound: usize) -> OpResult<Vec<usize>> {
    v.iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < bound)
                .ok_or_else(|| OpError::attribute(name, format!("index {i} is outside 0..{bound}")))
        })
        .collect()
}

fn node_test(mode: i64, split: f64, members: &mut impl Iterator<Item = f64>) -> OpResult<Test> {
    Ok(match mode {
        0 => Test::Leq(split),
        1 => Test::Lt(split),
        2 => Test::Gte(split),
        3 => Test::Gt(split),
        4 => Test::Eq(split),
        5 => Test::Neq(split),
        6 => Test::Member(members.by_ref().take_while(|v| !v.is_nan()).collect()),
        m => {
            return Err(OpError::attribute(
                "nodes_modes",
                format!("unknown mode {m}"),
            ))
        }
    })
}

fn build_tree_ensemble(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    if a.int_or("post_transform", 0)? != 0 {
        return Err(OpError::Unsupported(
            "TreeEnsemble post_transform other than NONE".into(),
        ));
    }
    let aggregate = match a.int_or("aggregate_function", 1)? {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        f => {
            return Err(OpError::attribute(
                "aggregate_function",
                format!("unknown value {f}"),
            ))
        }
    };
    let splits = f64_tensor_attr(a, "nodes_splits")?.unwrap_or_default();
    let modes = f64_tensor_attr(a, "nodes_modes")?.unwrap_or_default();
    let n = splits.len();
    let weights = f64_tensor_attr(a, "leaf_weights")?.unwrap_or_default();
    let leaf_targets = ints_attr(a, "leaf_targetids")?;
    let targets = usize::try_from(a.int_or("n_targets", 1)?).unwrap_or(0);
    if modes.len() != n || leaf_targets.len() != weights.len() {
        return Err(OpError::attribute(
            "nodes_modes",
            "node or leaf attribute lengths differ",
        ));
    }
    let leaves = weights
        .into_iter()
        .zip(index_list("leaf_targetids", &leaf_targets, targets)?)
        .collect::<Vec<_>>();
    let branch = |ids: &str, leafs: &str| -> OpResult<Vec<Target>> {
        let ids = ints_attr(a, ids)?;
        let is_leaf = ints_attr(a, leafs)?;
        if ids.len() != n || is_leaf.len() != n {
            return Err(OpError::attribute(leafs, format!("needs {n} entries")));
        }
        ids.iter()
            .zip(&is_leaf)
            .map(|(&i, &l)| {
                let bound = if l != 0 { leaves.len() } else { n };
                let i = index_list("nodes_truenodeids", &[i], bound)?[0];
                Ok(if l != 0 {
                    Target::Leaf(i)
                } else {
                    Target::Node(i)
                })
            })
            .collect()
    };
    let yes = branch("nodes_truenodeids", "nodes_trueleafs")?;
    let no = branch("nodes_falsenodeids", "nodes_falseleafs")?;
    let features = index_list(
        "nodes_featureids",
        &ints_attr(a, "nodes_featureids")?,
        usize::MAX,
    )?;
    let missing = a
        .ints("nodes_missing_value_tracks_true")?
        .unwrap_or_default();
    let mut members = f64_tensor_attr(a, "membership_values")?
        .unwrap_or_default()
        .into_iter();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(TreeNode {
            test: node_test(modes[i] as i64, splits[i], &mut members)?,
            feature: *features.get(i).ok_or_else(|| {
                OpError::attribute("nodes_featureids", format!("needs {n} entries"))
            })?,
            missing_true: missing.get(i).is_some_and(|&m| m != 0),
            yes: yes[i],
            no: no[i],
        });
    }
    let roots = index_list("tree_roots", &ints_attr(a, "tree_roots")?, n)?
        .into_iter()
        .map(|r| match (nodes[r].yes, nodes[r].no) {
            // A root whose branches both reach the same leaf is that leaf.
            (Target::Leaf(t), Target::Leaf(f)) if t == f => Target::Leaf(t),
            _ => Target::Node(r),
        })
        .collect();
    Ok(Box::new(TreeEnsemble {
        nodes,
        leaves,
        roots,
        targets,
        aggregate,
    }))
}

impl TreeNode {
    fn goes_true(&self, row: &[f64]) -> OpResult<bool> {
        let v = *row.get(self.feature).ok_or_else(|| {
            OpError::invalid(
                0,
                format!("feature {} is outside a row of {}", self.feature, row.len()),
            )
        })?;
        if v.is_nan() && self.missing_true {
            return Ok(true);
        }
        Ok(match &self.test {
            Test::Leq(s) => v <= *s,
            Test::Lt(s) => v < *s,
            Test::Gte(s) => v >= *s,
            Test::Gt(s) => v > *s,
            Test::Eq(s) => v == *s,
            Test::Neq(s) => v != *s,
            Test::Member(set) => set.contains(&v),
        })
    }
}

impl TreeEnsemble {
    /// The leaf one tree reaches for `row` (cycles in the model are reported, not followed).
    fn leaf(&self, root: Target, row: &[f64]) -> OpResult<(f64, usize)> {
        let mut at = root;
        for _ in 0..=self.nodes.len() {
            match at {
                Target::Leaf(l) => return Ok(self.leaves[l]),
                Target::Node(i) => {
                    let node = &self.nodes[i];
                    at = if node.goes_true(row)? {
                        node.yes
                    } else {
                        node.no
                    };
                }
            }
        }
        Err(OpError::Shape("TreeEnsemble: the tree has a cycle".into()))
    }

    fn predict(&self, row: &[f64], out: &mut [f64]) -> OpResult<()> {
        let init = match self.aggregate {
            Aggregate::Min => f64::MAX,
            Aggregate::Max => f64::MIN,
            _ => 0.0,
        };
        out.fill(init);
        for &root in &self.roots {
            let (w, t) = self.leaf(root, row)?;
            let slot = &mut out[t];
            *slot = match self.aggregate {
                Aggregate::Sum => *slot + w,
                Aggregate::Average => *slot + w / self.roots.len() as f64,
                Aggregate::Min => slot.min(w),
                Aggregate::Max => slot.max(w),
            };
        }
        Ok(())
    }
}

impl Operator for TreeEnsemble {
    crate::op_boilerplate!("TreeEnsemble");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let (rows, feats) = match *x.shape() {
            [r, f] => (r, f),
            [f] => (1, f),
            _ => {
                return Err(OpError::invalid(
                    0,
                    format!("X must be [N, F], got {:?}", x.shape()),
                ))
            }
        };
        let data = numeric_values(x, 0)?;
        let mut out = vec![0.0; rows * self.targets];
        if self.targets > 0 {
            for (row, o) in data.chunks(feats.max(1)).zip(out.chunks_mut(self.targets)) {
                self.predict(row, o)?;
            }
        }
        let dtype = if x.dtype().is_float() {
            x.dtype()
        } else {
            DType::F32
        };
        Ok(vec![
            f64_output(ctx, &out, &[rows, self.targets], dtype)?.into()
        ])
    }
}

// ----- Binarizer and ArrayFeatureExtractor ----------------------------------------------------

/// `Binarizer`: 1 where `x > threshold`, else 0, in the input dtype.
#[derive(Debug, Clone, Copy)]
pub struct Binarizer {
    /// The threshold.
    pub threshold: f64,
}

impl Operator for Binarizer {
    crate::op_boilerplate!("Binarizer");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let v: Vec<f64> = numeric_values(x, 0)?
            .into_iter()
            .map(|v| if v > self.threshold { 1.0 } else { 0.0 })
            .collect();
        Ok(vec![f64_output(ctx, &v, x.shape(), x.dtype())?.into()])
    }
}

/// `ArrayFeatureExtractor`: selects entries of the last axis of `X` by index; a 1-D `X` gives
/// a `[1, k]` result (as onnxruntime does).
#[derive(Debug, Clone, Copy)]
pub struct ArrayFeatureExtractor;

impl Operator for ArrayFeatureExtractor {
    crate::op_boilerplate!("ArrayFeatureExtractor");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = super::shape::common::materialize(ctx, inputs.tensor(0)?)?;
        let cols = *x
            .shape()
            .last()
            .ok_or_else(|| OpError::invalid(0, "X must not be a scalar"))?;
        let idx = inputs
            .tensor(1)?
            .to_i64_vec()?
            .into_iter()
            .map(|i| norm_index(1, i, cols))
            .collect::<OpResult<Vec<_>>>()?;
        let mut shape = if x.rank() == 1 {
            vec![1]
        } else {
            x.shape()[..x.rank() - 1].to_vec()
        };
        let rows: usize = shape.iter().product();
        shape.push(idx.len());
        let mut out = ctx.alloc(x.dtype(), &shape)?;
        let src = Elems::of(&x)?;
        let mut dst = ElemsMut::of(&mut out)?;
        let mut flat = Vec::with_capacity(idx.len());
        for r in 0..rows {
            flat.clear();
            flat.extend(idx.iter().map(|&i| r * cols + i));
            dst.gather(r * idx.len(), &src, &flat)?;
        }
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attribute;

    fn build(op: &str, attrs: Attributes) -> OpResult<Box<dyn Operator>> {
        let mut r = OpRegistry::new();
        register(&mut r);
        r.build(&BuildCtx {
            node_name: "",
            op_type: op,
            domain: ML,
            opset: 5,
            attrs: &attrs,
            input_count: 1,
            output_count: 1,
        })
    }

    fn eval(op: &dyn Operator, inputs: Vec<Tensor>) -> Tensor {
        let out = op
            .eval(&EvalCtx::default(), Inputs::from_tensors(inputs))
            .unwrap();
        out.into_iter().next().and_then(Value::into_tensor).unwrap()
    }

    fn strs(v: &[&str]) -> Tensor {
        Tensor::from_strings(v.iter().map(|s| s.to_string()).collect(), &[v.len()]).unwrap()
    }

    #[test]
    fn label_encoder_maps_with_default() {
        let attrs = Attributes::new()
            .with(
                "keys_strings",
                Attribute::Strings(vec![b"a".to_vec(), b"b".to_vec()]),
            )
            .with("values_int64s", Attribute::Ints(vec![5, 6]))
            .with("default_int64", Attribute::Int(9));
        let op = build("LabelEncoder", attrs).unwrap();
        let y = eval(&*op, vec![strs(&["b", "z", "a"])]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[6, 9, 5]);
        let attrs = Attributes::new()
            .with("keys_int64s", Attribute::Ints(vec![1, 2]))
            .with(
                "values_strings",
                Attribute::Strings(vec![b"x".to_vec(), b"y".to_vec()]),
            );
        let op = build("LabelEncoder", attrs).unwrap();
        let y = eval(&*op, vec![Tensor::from_vec(vec![2i64, 3], &[2]).unwrap()]);
        assert_eq!(y.as_strings().unwrap(), &["y", "_Unused"]);
        let bad = Attributes::new()
            .with("keys_int64s", Attribute::Ints(vec![1, 2]))
            .with("values_int64s", Attribute::Ints(vec![1]));
        assert!(build("LabelEncoder", bad).is_err());
    }

    #[test]
    fn tree_ensemble_single_split() {
        // One tree: x0 <= 1 -> leaf 0 (weight 10, target 0), else leaf 1 (weight 20, target 1).
        let attrs = Attributes::new()
            .with(
                "nodes_splits",
                Attribute::Tensor(Tensor::from_vec(vec![1.0f32], &[1]).unwrap()),
            )
            .with(
                "nodes_modes",
                Attribute::Tensor(Tensor::from_vec(vec![0u8], &[1]).unwrap()),
            )
            .with("nodes_featureids", Attribute::Ints(vec![0]))
            .with("nodes_truenodeids", Attribute::Ints(vec![0]))
            .with("nodes_trueleafs", Attribute::Ints(vec![1]))
            .with("nodes_falsenodeids", Attribute::Ints(vec![1]))
            .with("nodes_falseleafs", Attribute::Ints(vec![1]))
            .with("leaf_targetids", Attribute::Ints(vec![0, 1]))
            .with(
                "leaf_weights",
                Attribute::Tensor(Tensor::from_vec(vec![10.0f32, 20.0], &[2]).unwrap()),
            )
            .with("tree_roots", Attribute::Ints(vec![0]))
            .with("n_targets", Attribute::Int(2));
        let op = build("TreeEnsemble", attrs.clone()).unwrap();
        let y = eval(
            &*op,
            vec![Tensor::from_vec(vec![0.5f32, 3.0], &[2, 1]).unwrap()],
        );
        assert_eq!(y.as_slice::<f32>().unwrap(), &[10.0, 0.0, 0.0, 20.0]);
        let bad = attrs.with("nodes_truenodeids", Attribute::Ints(vec![7]));
        assert!(build("TreeEnsemble", bad).is_err());
    }

    #[test]
    fn binarizer_and_feature_extractor() {
        let op = build(
            "Binarizer",
            Attributes::new().with("threshold", Attribute::Float(1.0)),
        )
        .unwrap();
        let y = eval(
            &*op,
            vec![Tensor::from_vec(vec![0.5f32, 1.0, 2.0], &[3]).unwrap()],
        );
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 0.0, 1.0]);
        let op = build("ArrayFeatureExtractor", Attributes::new()).unwrap();
        let x = Tensor::from_vec((0..6i32).collect(), &[2, 3]).unwrap();
        let y = eval(
            &*op,
            vec![x.clone(), Tensor::from_vec(vec![2i64, 0], &[2]).unwrap()],
        );
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<i32>().unwrap(), &[2, 0, 5, 3]);
        let err = op.eval(
            &EvalCtx::default(),
            Inputs::from_tensors([x, Tensor::from_vec(vec![3i64], &[1]).unwrap()]),
        );
        assert!(err.is_err());
    }
}
