//! Fusion passes: rewrites that merge a producer with the op that alone reads its output, so
//! one kernel does the work of several and the intermediate tensor never exists.
//!
//! - [`ConvBatchNormFolding`]: inference `BatchNormalization`, or a `Mul`/`Add` by a
//!   per-channel constant, after a `Conv` with constant weights is folded into new weights
//!   and bias.
//! - [`BatchNormAffineFolding`]: a `Mul`/`Add` by a per-channel constant after an inference
//!   `BatchNormalization` is folded into its scale and bias.
//! - [`ConvAddFusion`]: a residual `Add`/`Sum` of a `Conv` output and a tensor of the same
//!   shape becomes the Conv's fused sum input (its output starts from the addend).
//! - [`MatMulBiasFusion`]: `MatMul` followed by `Add` of a constant bias row becomes a
//!   [`FusedMatMul`] with a bias.
//! - [`GeluFusion`]: the erf form of GELU spelled out in primitive ops
//!   (`x * 0.5 * (1 + Erf(x / sqrt 2))`, in any of its usual orders) becomes one `Gelu`.
//! - [`ActivationFusion`]: an activation (Relu, Clip with constant bounds, Sigmoid,
//!   HardSigmoid, HardSwish, LeakyRelu, Gelu) after a Conv, Gemm, MatMul or inference
//!   BatchNormalization is applied by that op on its output blocks.
//! - [`ChannelShuffleFusion`]: a channel shuffle after a `Conv` (`Reshape` to
//!   `[N, s, M / s, ...]`, `Transpose` of axes 1 and 2, `Reshape` back, as ShuffleNet
//!   spells it) becomes the Conv's output shuffle, so its GEMMs write each output channel
//!   straight to its shuffled place.
//! - [`ConvWeightPrepacking`] (run after optimization, by [`crate::passes::prepack_for_cpu`]):
//!   a Conv's constant f32 weights are packed once into the GEMM kernel's layout and move
//!   into the op.
//! - [`ConvConcatFusion`] (after it): a channel `Concat` of Conv outputs becomes one
//!   [`ConvConcat`] whose prepacked convolutions write straight into the concatenation.
//!
//! Each pass only fuses through values that exactly one node reads once and that are not
//! graph outputs, so no other reader sees a changed value. A fused node takes the absorbed
//! node's output value (name and fact), its `op_type` becomes a label such as
//! `Conv+Add+Relu` (shown by `strata inspect --optimized`), and the absorbed nodes are removed.

use crate::{Graph, NodeId, Result, ValueId, ValueInfo};
use std::collections::BTreeSet;
use std::sync::Arc;
use strata_ops::kernels::elementwise::{Binary, BinaryKind, Unary, UnaryKind};
use strata_ops::kernels::fused::{fusable_dtype, Activation};
use strata_ops::kernels::gemm::PackedB;
use strata_ops::kernels::linalg::{FusedMatMul, Gemm, MatMul, MatRef};
use strata_ops::kernels::nn::conv::{Conv, PackedConvWeights};
use strata_ops::kernels::nn::conv_concat::ConvConcat;
use strata_ops::kernels::nn::norm::BatchNorm;
use strata_ops::kernels::shape::{Concat, Reshape, Transpose};
use strata_ops::{Dim, Fact, Operator};
use strata_tensor::{DType, Tensor};

use crate::passes::Pass;

/// Who reads what, computed once per pass run, and the nodes a pass has already rewritten
/// or removed in this run (their entries are stale).
struct Rewriter {
    readers: Vec<Vec<NodeId>>,
    producers: Vec<Option<NodeId>>,
    graph_outputs: BTreeSet<ValueId>,
    touched: BTreeSet<NodeId>,
    removed: BTreeSet<NodeId>,
}

impl Rewriter {
    fn new(graph: &Graph) -> Self {
        Rewriter {
            readers: graph.consumers(),
            producers: graph.producers(),
            graph_outputs: graph.outputs.iter().copied().collect(),
            touched: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// The one node reading `v` (exactly once) when `v` is not a graph output and neither
    /// node was rewritten in this run.
    fn sole_reader(&self, graph: &Graph, v: ValueId) -> Option<NodeId> {
        if self.graph_outputs.contains(&v) {
            return None;
        }
        let [reader] = self.readers[v].as_slice() else {
            return None;
        };
        let reads = graph.nodes[*reader]
            .inputs
            .iter()
            .filter(|i| **i == Some(v))
            .count();
        (reads == 1 && !self.touched.contains(reader)).then_some(*reader)
    }

    /// The node producing `v`, unless it was rewritten in this run.
    fn producer(&self, v: ValueId) -> Option<NodeId> {
        self.producers[v].filter(|n| !self.touched.contains(n))
    }

    /// `keep` takes over `absorbed`'s first output and `absorbed` is dropped.
    fn absorb(&mut self, graph: &mut Graph, keep: NodeId, absorbed: NodeId) {
        let out = graph.nodes[absorbed].outputs.first().copied().flatten();
        graph.nodes[keep].outputs[0] = out;
        self.touched.extend([keep, absorbed]);
        self.removed.insert(absorbed);
    }

    /// Replaces `node`'s operator and its op_type label.
    fn set_op(&mut self, graph: &mut Graph, node: NodeId, op: Arc<dyn Operator>, label: String) {
        graph.nodes[node].op = op;
        graph.nodes[node].op_type = label;
        self.touched.insert(node);
    }

    /// `node`'s single output and the one node reading it, when that node also has a single
    /// output (a chain `node -> next` that can be folded into `node`).
    fn sole_follower(&self, graph: &Graph, node: NodeId) -> Option<(ValueId, NodeId)> {
        let y = single_output(graph, node)?;
        let next = self.sole_reader(graph, y)?;
        single_output(graph, next).map(|_| (y, next))
    }

    /// Makes `node` read new constants (named `names`) as its inputs 1 and 2 and drops the
    /// ones they replace when nothing else reads them.
    fn replace_params(
        &self,
        graph: &mut Graph,
        node: NodeId,
        names: [String; 2],
        tensors: (Tensor, Tensor),
    ) {
        let [n1, n2] = names;
        let first = add_constant(graph, &n1, tensors.0);
        let second = add_constant(graph, &n2, tensors.1);
        let inputs = &mut graph.nodes[node].inputs;
        inputs.resize(inputs.len().max(3), None);
        let old = [inputs[1].replace(first), inputs[2].replace(second)];
        for v in old {
            self.release_constant(graph, v, node);
        }
    }

    /// Drops constant `v` that `node` no longer reads when no other node read it when the pass
    /// started and it is not a graph output, so folded copies of weights do not pile up until
    /// dead-code elimination (peak memory while loading).
    fn release_constant(&self, graph: &mut Graph, v: Option<ValueId>, node: NodeId) {
        let Some(v) = v else { return };
        let unread = self.readers[v].iter().all(|&n| n == node)
            && !graph.nodes[node].inputs.contains(&Some(v))
            && !self.graph_outputs.contains(&v);
        if unread {
            graph.constants.remove(&v);
        }
    }

    /// Drops the removed nodes; returns whether anything changed.
    fn finish(self, graph: &mut Graph) -> bool {
        graph.retain_nodes(|id| !self.removed.contains(&id));
        !self.touched.is_empty()
    }
}

/// The single output of `node` when it declares exactly one used output.
fn single_output(graph: &Graph, node: NodeId) -> Option<ValueId> {
    match graph.nodes[node].outputs.as_slice() {
        [Some(v)] => Some(*v),
        [Some(v), rest @ ..] if rest.iter().all(Option::is_none) => Some(*v),
        _ => None,
    }
}

/// The concrete type of `node`'s op, when the node is in the default domain.
fn op_as<T: 'static>(graph: &Graph, node: NodeId) -> Option<&T> {
    let n = &graph.nodes[node];
    if !n.domain.is_empty() {
        return None;
    }
    n.op.as_any().downcast_ref::<T>()
}

/// The value of a constant f32/f64 scalar (any shape holding one element).
fn scalar_constant(graph: &Graph, v: ValueId) -> Option<f64> {
    let t = graph.constants.get(&v)?;
    if t.len() != 1 {
        return None;
    }
    let t = t.contiguous();
    match t.dtype() {
        DType::F32 => t.as_slice::<f32>().ok()?.first().map(|&x| f64::from(x)),
        DType::F64 => t.as_slice::<f64>().ok()?.first().copied(),
        _ => None,
    }
}

/// Whether `v`'s dtype is known and one the fused kernels compute in.
fn float_value(graph: &Graph, v: ValueId) -> bool {
    graph.values[v].fact.dtype.is_some_and(fusable_dtype)
}

/// Adds a constant value named after `base`, unique in the graph.
fn add_constant(graph: &mut Graph, base: &str, tensor: Tensor) -> ValueId {
    let mut name = format!("{base}.fused");
    let mut k = 1;
    while graph.value_id(&name).is_some() {
        k += 1;
        name = format!("{base}.fused{k}");
    }
    let id = graph.values.len();
    graph.values.push(ValueInfo {
        name,
        fact: Fact::known(tensor.dtype(), tensor.shape()),
    });
    graph.constants.insert(id, tensor);
    id
}

/// The inputs of a binary `Add` (numpy broadcasting) or a two-input `Sum` node.
fn addends(graph: &Graph, node: NodeId) -> Option<[ValueId; 2]> {
    let n = &graph.nodes[node];
    let is_add = op_as::<Binary>(graph, node)
        .is_some_and(|b| b.kind() == BinaryKind::Add && b.numpy_broadcasting());
    if !(is_add || (n.op_type == "Sum" && n.domain.is_empty())) {
        return None;
    }
    match n.inputs.as_slice() {
        [Some(a), Some(b)] => Some([*a, *b]),
        _ => None,
    }
}

/// The constant f32 values of `v`, when it is a constant of that dtype.
fn f32_constant(graph: &Graph, v: ValueId) -> Option<Vec<f32>> {
    let t = graph.constants.get(&v)?;
    (t.dtype() == DType::F32).then(|| t.contiguous().as_slice::<f32>().ok().map(<[f32]>::to_vec))?
}

/// Whether a tensor of `shape` broadcast against a rank-`rank` value varies along axis 1 only,
/// with `m` entries there (or is a single value).
fn per_channel(shape: &[usize], m: usize, rank: usize) -> bool {
    if shape.len() > rank {
        return false;
    }
    if shape.iter().product::<usize>() == 1 {
        return true;
    }
    let first = rank - shape.len();
    shape
        .iter()
        .enumerate()
        .all(|(k, &d)| d == 1 || (first + k == 1 && d == m))
}

/// `(scale, shift)` when `node` computes `x * scale[c] + shift[c]` for each channel `c` (axis
/// 1 of `m`) of its rank-`rank` f32 input `x`: an inference BatchNormalization with constant
/// statistics, or a Mul/Add whose other operand is a constant that varies along axis 1 only.
fn channel_affine(
    graph: &Graph,
    node: NodeId,
    x: ValueId,
    m: usize,
    rank: usize,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let n = &graph.nodes[node];
    if let Some(bn) = op_as::<BatchNorm>(graph, node).filter(|b| !b.training) {
        if n.inputs.first() != Some(&Some(x)) || bn.activation.is_some() {
            return None;
        }
        let params: Vec<Vec<f32>> = (1..5)
            .map(|i| f32_constant(graph, (*n.inputs.get(i)?)?).filter(|p| p.len() == m))
            .collect::<Option<_>>()?;
        let (scale, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let eps = f64::from(bn.epsilon);
        let s: Vec<f64> = (0..m)
            .map(|i| f64::from(scale[i]) / (f64::from(var[i]) + eps).sqrt())
            .collect();
        let t = (0..m)
            .map(|i| f64::from(beta[i]) - f64::from(mean[i]) * s[i])
            .collect();
        return Some((s, t));
    }
    let kind = op_as::<Binary>(graph, node)
        .filter(|b| b.numpy_broadcasting())?
        .kind();
    let other = match n.inputs.as_slice() {
        [Some(a), Some(b)] if *a == x => *b,
        [Some(a), Some(b)] if *b == x => *a,
        _ => return None,
    };
    let shape = graph.constants.get(&other)?.shape().to_vec();
    if !per_channel(&shape, m, rank) {
        return None;
    }
    let c = f32_constant(graph, other)?;
    let per: Vec<f64> = (0..m).map(|i| f64::from(c[i % c.len()])).collect();
    match kind {
        BinaryKind::Mul => Some((per, vec![0.0; m])),
        BinaryKind::Add => Some((vec![1.0; m], per)),
        _ => None,
    }
}

// ----- Conv + BatchNormalization ------------------------------------------------------------

/// Folds a per-channel affine node after a `Conv` into its weights and bias: an
/// inference-mode `BatchNormalization` (with `s = scale / sqrt(var + eps)`, the weights of
/// output channel `m` are scaled by `s[m]` and the bias becomes `(bias - mean) * s + beta`),
/// or a `Mul`/`Add` by a constant that varies along the channel axis only (as exporters
/// write an affine channel layer). Only f32 weights and constant parameters.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConvBatchNormFolding;

impl ConvBatchNormFolding {
    /// The folded (weights, bias) of `conv` followed by `next`, when everything is constant
    /// f32 and `next` is a per-channel affine map of the conv's output `y`.
    fn fold(graph: &Graph, conv: NodeId, y: ValueId, next: NodeId) -> Option<(Tensor, Tensor)> {
        let c = &graph.nodes[conv];
        let w_tensor = graph.constants.get(&(*c.inputs.get(1)?)?)?;
        let w = f32_constant(graph, (*c.inputs.get(1)?)?)?;
        let m = *w_tensor.shape().first()?;
        let (s, t) = channel_affine(graph, next, y, m, w_tensor.rank())?;
        let bias = match c.inputs.get(2).copied().flatten() {
            Some(b) => f32_constant(graph, b).filter(|b| b.len() == m)?,
            None => vec![0.0; m],
        };
        let per = w.len() / m.max(1);
        let folded_w: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &x)| (f64::from(x) * s[i / per]) as f32)
            .collect();
        let folded_b: Vec<f32> = (0..m)
            .map(|i| (f64::from(bias[i]) * s[i] + t[i]) as f32)
            .collect();
        Some((
            Tensor::from_vec(folded_w, w_tensor.shape()).ok()?,
            Tensor::from_vec(folded_b, &[m]).ok()?,
        ))
    }
}

impl Pass for ConvBatchNormFolding {
    fn name(&self) -> &'static str {
        "conv-batchnorm-folding"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for conv in 0..graph.nodes.len() {
            let plain = op_as::<Conv>(graph, conv).is_some_and(|c| {
                c.activation.is_none() && !c.fused_sum && c.output_shuffle.is_none()
            });
            let Some((y, bn)) = rw.sole_follower(graph, conv).filter(|_| plain) else {
                continue;
            };
            let Some(folded) = Self::fold(graph, conv, y, bn) else {
                continue;
            };
            let w_name = graph.values[graph.nodes[conv].inputs[1].unwrap_or(y)]
                .name
                .clone();
            let names = [w_name.clone(), format!("{w_name}.bias")];
            rw.replace_params(graph, conv, names, folded);
            rw.absorb(graph, conv, bn);
        }
        Ok(rw.finish(graph))
    }
}

// ----- BatchNormalization + Mul/Add -----------------------------------------------------------

/// Folds a `Mul`/`Add` by a per-channel constant after an inference `BatchNormalization`
/// into its parameters: `(x - mean) / sqrt(var + eps) * scale + beta`, then `* a + b`, is the
/// same normalization with scale `scale * a` and bias `beta * a + b`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchNormAffineFolding;

impl BatchNormAffineFolding {
    /// The new (scale, bias) of `bn` followed by `next`.
    fn fold(graph: &Graph, bn: NodeId, y: ValueId, next: NodeId) -> Option<(Tensor, Tensor)> {
        op_as::<BatchNorm>(graph, bn).filter(|b| !b.training && b.activation.is_none())?;
        let n = &graph.nodes[bn];
        let scale = f32_constant(graph, (*n.inputs.get(1)?)?)?;
        let beta = f32_constant(graph, (*n.inputs.get(2)?)?)?;
        let m = scale.len();
        let rank = graph.values[y].fact.shape.as_ref()?.len();
        if beta.len() != m || rank < 2 {
            return None;
        }
        let (a, b) = channel_affine(graph, next, y, m, rank)?;
        let new_scale: Vec<f32> = (0..m)
            .map(|i| (f64::from(scale[i]) * a[i]) as f32)
            .collect();
        let new_beta: Vec<f32> = (0..m)
            .map(|i| (f64::from(beta[i]) * a[i] + b[i]) as f32)
            .collect();
        Some((
            Tensor::from_vec(new_scale, &[m]).ok()?,
            Tensor::from_vec(new_beta, &[m]).ok()?,
        ))
    }
}

impl Pass for BatchNormAffineFolding {
    fn name(&self) -> &'static str {
        "batchnorm-affine-folding"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for bn in 0..graph.nodes.len() {
            if op_as::<BatchNorm>(graph, bn).is_none() || rw.touched.contains(&bn) {
                continue;
            }
            let Some((y, next)) = rw.sole_follower(graph, bn) else {
                continue;
            };
            let Some(folded) = Self::fold(graph, bn, y, next) else {
                continue;
            };
            let base = &graph.values[y].name;
            let names = [format!("{base}.scale"), format!("{base}.bias")];
            rw.replace_params(graph, bn, names, folded);
            rw.absorb(graph, bn, next);
        }
        Ok(rw.finish(graph))
    }
}

// ----- Conv + Add -----------------------------------------------------------------------------

/// Makes a residual `Add`/`Sum` the fused sum of the `Conv` producing one of its operands,
/// when the other operand has the same known shape and dtype.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConvAddFusion;

impl ConvAddFusion {
    /// The conv node producing `v` that may take a fused sum.
    fn plain_conv(graph: &Graph, rw: &Rewriter, v: ValueId) -> Option<(NodeId, Conv)> {
        let conv = rw.producer(v)?;
        let op = op_as::<Conv>(graph, conv)?;
        let plain = op.activation.is_none() && !op.fused_sum && op.output_shuffle.is_none();
        (plain && single_output(graph, conv) == Some(v)).then(|| (conv, op.clone()))
    }
}

impl Pass for ConvAddFusion {
    fn name(&self) -> &'static str {
        "conv-add-fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for add in 0..graph.nodes.len() {
            let Some([a, b]) = addends(graph, add) else {
                continue;
            };
            for (y, z) in [(a, b), (b, a)] {
                let Some((conv, op)) = Self::plain_conv(graph, &rw, y) else {
                    continue;
                };
                let (fy, fz) = (&graph.values[y].fact, &graph.values[z].fact);
                let same = fy.shape.is_some() && fy.shape == fz.shape && fy.dtype == fz.dtype;
                if !same || !float_value(graph, y) || rw.sole_reader(graph, y) != Some(add) {
                    continue;
                }
                let fused = Conv {
                    fused_sum: true,
                    ..op
                };
                let inputs = &mut graph.nodes[conv].inputs;
                inputs.resize(3, None);
                inputs.push(Some(z));
                rw.set_op(graph, conv, Arc::new(fused.clone()), fused.label());
                rw.absorb(graph, conv, add);
                break;
            }
        }
        Ok(rw.finish(graph))
    }
}

// ----- MatMul + Add ---------------------------------------------------------------------------

/// Turns `MatMul` followed by `Add` of a constant bias row (`n` elements, rank no higher than
/// the product's) into a [`FusedMatMul`] with that bias.
#[derive(Debug, Default, Clone, Copy)]
pub struct MatMulBiasFusion;

impl Pass for MatMulBiasFusion {
    fn name(&self) -> &'static str {
        "matmul-bias-fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for mm in 0..graph.nodes.len() {
            // The bias runs along B's columns: B must be a matrix (a 1-D B drops that axis).
            let b_is_matrix = graph.nodes[mm]
                .inputs
                .get(1)
                .copied()
                .flatten()
                .is_some_and(|b| {
                    graph.values[b]
                        .fact
                        .shape
                        .as_ref()
                        .is_some_and(|s| s.len() >= 2)
                });
            if op_as::<MatMul>(graph, mm).is_none() || !b_is_matrix {
                continue;
            }
            let Some(y) = single_output(graph, mm).filter(|&y| float_value(graph, y)) else {
                continue;
            };
            let Some(dims) = graph.values[y].fact.shape.clone() else {
                continue;
            };
            let Some(n) = dims.last().and_then(|d| d.known()) else {
                continue;
            };
            let Some(add) = rw.sole_reader(graph, y) else {
                continue;
            };
            let Some([a, b]) = addends(graph, add) else {
                continue;
            };
            let bias = if a == y { b } else { a };
            let fits = graph.constants.get(&bias).is_some_and(|t| {
                let s = t.shape();
                t.len() == n
                    && s.len() <= dims.len()
                    && s.last() == Some(&n)
                    && Some(t.dtype()) == graph.values[y].fact.dtype
            });
            if !fits || dims.len() < 2 {
                continue;
            }
            let fused = FusedMatMul {
                bias: true,
                activation: None,
                packed_b: None,
            };
            graph.nodes[mm].inputs.push(Some(bias));
            let label = fused.label();
            rw.set_op(graph, mm, Arc::new(fused), label);
            rw.absorb(graph, mm, add);
        }
        Ok(rw.finish(graph))
    }
}

// ----- GELU -----------------------------------------------------------------------------------

/// Recognizes `x * 0.5 * (1 + Erf(x / sqrt 2))` (also with `x * (1/sqrt 2)`, and the halving
/// before or after the product with `x`) and replaces it by one `Gelu` op.
#[derive(Debug, Default, Clone, Copy)]
pub struct GeluFusion;

/// Whether `v` is a constant scalar within 1e-4 of `want`.
fn constant_near(graph: &Graph, v: ValueId, want: f64) -> bool {
    scalar_constant(graph, v).is_some_and(|c| (c - want).abs() < 1e-4)
}

impl GeluFusion {
    /// The `Binary` kind and inputs of `node`.
    fn binary(graph: &Graph, node: NodeId) -> Option<(BinaryKind, ValueId, ValueId)> {
        let kind = op_as::<Binary>(graph, node)
            .filter(|b| b.numpy_broadcasting())?
            .kind();
        match graph.nodes[node].inputs.as_slice() {
            [Some(a), Some(b)] => Some((kind, *a, *b)),
            _ => None,
        }
    }

    /// The other operand of a `Mul` node reading `v`.
    fn mul_other(graph: &Graph, node: NodeId, v: ValueId) -> Option<ValueId> {
        match Self::binary(graph, node)? {
            (BinaryKind::Mul, a, b) if a == v => Some(b),
            (BinaryKind::Mul, a, b) if b == v => Some(a),
            _ => None,
        }
    }

    /// Matches the pattern around the `Erf` node `erf`; returns `x`, the nodes to remove
    /// and the node whose output is the GELU's result.
    fn matches(
        graph: &Graph,
        rw: &Rewriter,
        erf: NodeId,
    ) -> Option<(ValueId, Vec<NodeId>, NodeId)> {
        let e = &graph.nodes[erf];
        if e.op_type != "Erf" || !e.domain.is_empty() {
            return None;
        }
        let scaled = (*e.inputs.first()?)?;
        let div = rw.producer(scaled)?;
        let x = match Self::binary(graph, div)? {
            (BinaryKind::Div, x, c) if constant_near(graph, c, std::f64::consts::SQRT_2) => x,
            (BinaryKind::Mul, x, c) | (BinaryKind::Mul, c, x)
                if constant_near(graph, c, std::f64::consts::FRAC_1_SQRT_2) =>
            {
                x
            }
            _ => return None,
        };
        if rw.sole_reader(graph, scaled) != Some(erf) {
            return None;
        }
        let erf_out = single_output(graph, erf)?;
        let plus_one = rw.sole_reader(graph, erf_out)?;
        match Self::binary(graph, plus_one)? {
            (BinaryKind::Add, a, b)
                if (a == erf_out && constant_near(graph, b, 1.0))
                    || (b == erf_out && constant_near(graph, a, 1.0)) => {}
            _ => return None,
        }
        let sum = single_output(graph, plus_one)?;
        let first = rw.sole_reader(graph, sum)?;
        let first_out = single_output(graph, first)?;
        let second = rw.sole_reader(graph, first_out)?;
        let other = Self::mul_other(graph, first, sum)?;
        let second_other = Self::mul_other(graph, second, first_out)?;
        let halves = |v| constant_near(graph, v, 0.5);
        // (1 + erf) * 0.5, then * x; or (1 + erf) * x, then * 0.5.
        let ok = (halves(other) && second_other == x) || (other == x && halves(second_other));
        ok.then(|| (x, vec![erf, plus_one, first, second], div))
    }
}

impl Pass for GeluFusion {
    fn name(&self) -> &'static str {
        "gelu-fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for erf in 0..graph.nodes.len() {
            let Some((x, absorbed, head)) = Self::matches(graph, &rw, erf) else {
                continue;
            };
            if !float_value(graph, x) {
                continue;
            }
            let last = absorbed[absorbed.len() - 1];
            graph.nodes[head].inputs = vec![Some(x)];
            rw.set_op(
                graph,
                head,
                Arc::new(Unary::new("Gelu", UnaryKind::Gelu)),
                "Gelu".into(),
            );
            for node in absorbed[..absorbed.len() - 1].iter() {
                rw.touched.insert(*node);
                rw.removed.insert(*node);
            }
            rw.absorb(graph, head, last);
        }
        Ok(rw.finish(graph))
    }
}

// ----- activations ----------------------------------------------------------------------------

/// Folds an activation into the `Conv`, `Gemm`, `MatMul` or inference `BatchNormalization`
/// producing its input.
#[derive(Debug, Default, Clone, Copy)]
pub struct ActivationFusion;

impl ActivationFusion {
    /// `node`'s op with `act` fused, and its label; `None` when the op cannot take it.
    fn with_activation(
        graph: &Graph,
        node: NodeId,
        act: Activation,
    ) -> Option<(Arc<dyn Operator>, String)> {
        if let Some(conv) = op_as::<Conv>(graph, node).filter(|c| c.activation.is_none()) {
            let fused = Conv {
                activation: Some(act),
                ..conv.clone()
            };
            let label = fused.label();
            return Some((Arc::new(fused), label));
        }
        if let Some(bn) = op_as::<BatchNorm>(graph, node)
            .filter(|b| b.activation.is_none() && !b.training && b.outputs == 1)
        {
            let fused = BatchNorm {
                activation: Some(act),
                ..*bn
            };
            return Some((Arc::new(fused), fused.label()));
        }
        if let Some(gemm) = op_as::<Gemm>(graph, node).filter(|g| g.activation.is_none()) {
            let fused = Gemm {
                activation: Some(act),
                ..*gemm
            };
            return Some((Arc::new(fused), fused.label()));
        }
        let bias = if op_as::<MatMul>(graph, node).is_some() {
            false
        } else {
            op_as::<FusedMatMul>(graph, node)
                .filter(|m| m.activation.is_none())?
                .bias
        };
        let fused = FusedMatMul {
            bias,
            activation: Some(act),
            packed_b: None,
        };
        let label = fused.label();
        Some((Arc::new(fused), label))
    }
}

impl Pass for ActivationFusion {
    fn name(&self) -> &'static str {
        "activation-fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for node in 0..graph.nodes.len() {
            if rw.touched.contains(&node) {
                continue;
            }
            let Some(y) = single_output(graph, node).filter(|&y| float_value(graph, y)) else {
                continue;
            };
            let Some(act_node) = rw.sole_reader(graph, y) else {
                continue;
            };
            let a = &graph.nodes[act_node];
            if !a.domain.is_empty() || a.inputs.first() != Some(&Some(y)) {
                continue;
            }
            let bound = |i: usize| a.inputs.get(i).copied().flatten();
            let (lo, hi) = (bound(1), bound(2));
            // Clip bounds must be constants to be fused.
            if [lo, hi]
                .iter()
                .flatten()
                .any(|v| !graph.constants.contains_key(v))
            {
                continue;
            }
            let bounds = [
                lo.and_then(|v| graph.constants.get(&v)),
                hi.and_then(|v| graph.constants.get(&v)),
            ];
            let Some(act) = Activation::from_op(&*a.op, bounds) else {
                continue;
            };
            let Some((op, label)) = Self::with_activation(graph, node, act) else {
                continue;
            };
            rw.set_op(graph, node, op, label);
            rw.absorb(graph, node, act_node);
        }
        Ok(rw.finish(graph))
    }
}

/// Disconnects input 1 (weights now packed into the op) of `node`, and drops the unpacked
/// constant at once when nothing else reads it, so the packed and unpacked copies of all
/// weights never coexist (peak memory). `readers` is `graph.consumers()`, kept up to date.
fn disconnect_packed_weights(graph: &mut Graph, readers: &mut [Vec<NodeId>], node: NodeId) {
    let inputs = &mut graph.nodes[node].inputs;
    let weights = inputs[1].take();
    if let Some(w) = weights.filter(|w| !inputs.contains(&Some(*w))) {
        readers[w].retain(|&n| n != node);
        if readers[w].is_empty() && !graph.outputs.contains(&w) {
            graph.constants.remove(&w);
        }
    }
}

/// Packs the constant 2-D right operand of f32 MatMuls once, at session creation, into the
/// GEMM kernel's B layout ([`PackedB`]) held by a [`FusedMatMul`], and disconnects input 1
/// so the unpacked constant can be dropped when nothing else reads it (as
/// [`ConvWeightPrepacking`] does for convolutions). Skipped for operands that are also graph
/// inputs, batched (rank above 2) or not f32, and for left operands known not to be f32.
#[derive(Debug, Default, Clone, Copy)]
pub struct MatMulWeightPrepacking;

impl MatMulWeightPrepacking {
    /// The prepacked op for MatMul node `node`, when it qualifies.
    fn prepacked(graph: &Graph, node: NodeId) -> Option<FusedMatMul> {
        let op = match (
            op_as::<MatMul>(graph, node),
            op_as::<FusedMatMul>(graph, node),
        ) {
            (Some(_), _) => FusedMatMul {
                bias: false,
                activation: None,
                packed_b: None,
            },
            (None, Some(fused)) if fused.packed_b.is_none() => fused.clone(),
            _ => return None,
        };
        let n = &graph.nodes[node];
        let (Some(Some(a)), Some(Some(b))) = (n.inputs.first(), n.inputs.get(1)) else {
            return None;
        };
        let weights = graph.constants.get(b)?;
        let qualifies = matches!(graph.values[*a].fact.dtype, Some(DType::F32) | None)
            && weights.dtype() == DType::F32
            && weights.rank() == 2
            && !graph.inputs.contains(b)
            && a != b;
        if !qualifies {
            return None;
        }
        let w = weights.contiguous();
        let (k, cols) = (w.shape()[0], w.shape()[1]);
        let packed = PackedB::new(MatRef::row_major(w.as_slice::<f32>().ok()?, k, cols)).ok()?;
        Some(FusedMatMul {
            packed_b: Some(Arc::new(packed)),
            ..op
        })
    }
}

impl Pass for MatMulWeightPrepacking {
    fn name(&self) -> &'static str {
        "matmul-weight-prepacking"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut readers = graph.consumers();
        for mm in 0..graph.nodes.len() {
            let Some(prepacked) = Self::prepacked(graph, mm) else {
                continue;
            };
            graph.nodes[mm].op = Arc::new(prepacked);
            disconnect_packed_weights(graph, &mut readers, mm);
            changed = true;
        }
        Ok(changed)
    }
}

/// The fusion passes, in the order [`crate::passes::optimize`] applies them.
pub fn fusion_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(ConvBatchNormFolding),
        Box::new(BatchNormAffineFolding),
        Box::new(ConvAddFusion),
        Box::new(MatMulBiasFusion),
        Box::new(GeluFusion),
        Box::new(ActivationFusion),
        Box::new(ChannelShuffleFusion),
    ]
}

// ----- channel shuffle ------------------------------------------------------------------------

/// Makes a channel shuffle after a `Conv` the conv's [`Conv::output_shuffle`]: `Reshape` of
/// its output `[N, M, ...]` to `[N, s, M / s, ...]`, `Transpose` with perm
/// `[0, 2, 1, 3, ...]`, `Reshape` back to `[N, M, ...]` (the shapes known from inference).
/// The conv keeps its activation and fused sum, which come before the shuffle.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChannelShuffleFusion;

impl ChannelShuffleFusion {
    /// The shuffle groups and the split, transpose and merge nodes of a channel shuffle of
    /// `y`, when each alone reads the previous one's output.
    fn shuffle_of(graph: &Graph, rw: &Rewriter, y: ValueId) -> Option<(usize, [NodeId; 3])> {
        let shape = graph.values[y].fact.shape.as_ref()?;
        let &Dim::Known(m) = shape.get(1)? else {
            return None;
        };
        let split = Self::next_op::<Reshape>(graph, rw, y)?;
        let split_y = single_output(graph, split)?;
        let split_shape = graph.values[split_y].fact.shape.as_ref()?;
        let [batch, Dim::Known(s), Dim::Known(per), rest @ ..] = split_shape.as_slice() else {
            return None;
        };
        let same_outer = *batch == shape[0] && rest == &shape[2..];
        if !same_outer || *s < 2 || s * per != m {
            return None;
        }
        let transpose = Self::next_op::<Transpose>(graph, rw, split_y)?;
        let swap: Vec<usize> = [0, 2, 1].into_iter().chain(3..split_shape.len()).collect();
        if op_as::<Transpose>(graph, transpose)?.perm.as_ref() != Some(&swap) {
            return None;
        }
        let merge = Self::next_op::<Reshape>(graph, rw, single_output(graph, transpose)?)?;
        let merged = &graph.values[single_output(graph, merge)?].fact;
        (merged.shape.as_ref() == Some(shape)).then_some((*s, [split, transpose, merge]))
    }

    /// The node of op `T` alone reading `v`, as its first input.
    fn next_op<T: 'static>(graph: &Graph, rw: &Rewriter, v: ValueId) -> Option<NodeId> {
        let next = rw.sole_reader(graph, v)?;
        let reads_first = graph.nodes[next].inputs.first() == Some(&Some(v));
        (reads_first && op_as::<T>(graph, next).is_some()).then_some(next)
    }
}

impl Pass for ChannelShuffleFusion {
    fn name(&self) -> &'static str {
        "channel-shuffle-fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for conv in 0..graph.nodes.len() {
            let Some(op) = op_as::<Conv>(graph, conv).filter(|c| c.output_shuffle.is_none()) else {
                continue;
            };
            let Some(y) = single_output(graph, conv).filter(|_| !rw.touched.contains(&conv)) else {
                continue;
            };
            let Some((s, [split, transpose, merge])) = Self::shuffle_of(graph, &rw, y) else {
                continue;
            };
            let fused = Conv {
                output_shuffle: Some(s),
                ..op.clone()
            };
            rw.set_op(graph, conv, Arc::new(fused.clone()), fused.label());
            rw.absorb(graph, conv, merge);
            rw.touched.extend([split, transpose]);
            rw.removed.extend([split, transpose]);
        }
        Ok(rw.finish(graph))
    }
}

// ----- Conv weight prepacking -----------------------------------------------------------------

/// Packs each Conv's constant f32 weights once into the GEMM kernel's layout
/// ([`PackedConvWeights`]) held by the op, and disconnects input 1 so the unpacked constant
/// can be dropped when nothing else reads it. Skipped for depthwise convs (one input channel
/// per group, which do not use the GEMM), weights that are also graph inputs (a caller may
/// override them) and inputs known to be of another type than f32.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConvWeightPrepacking;

impl ConvWeightPrepacking {
    /// The packed weights for `conv`, when it qualifies.
    fn packed(graph: &Graph, conv: NodeId, op: &Conv) -> Option<PackedConvWeights> {
        let node = &graph.nodes[conv];
        let (Some(Some(x)), Some(Some(w))) = (node.inputs.first(), node.inputs.get(1)) else {
            return None;
        };
        let weights = graph.constants.get(w)?;
        // ONNX gives X and W one type, so f32 weights mean an f32 input even where shape
        // inference lost track of it (a symbolic batch); any other input is an error either
        // way.
        let qualifies = op.prepacked.is_none()
            && matches!(graph.values[*x].fact.dtype, Some(DType::F32) | None)
            && weights.dtype() == DType::F32
            && weights.rank() >= 3
            && weights.shape()[1] > 1
            && !graph.inputs.contains(w);
        if !qualifies {
            return None;
        }
        // Weights that do not fit the op are left for the op to report when it runs.
        let input = graph.values[*x].fact.concrete_shape();
        PackedConvWeights::for_conv(op, weights, input.as_deref()).ok()
    }
}

impl Pass for ConvWeightPrepacking {
    fn name(&self) -> &'static str {
        "conv-weight-prepacking"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut readers = graph.consumers();
        for conv in 0..graph.nodes.len() {
            let Some(op) = op_as::<Conv>(graph, conv) else {
                continue;
            };
            let Some(packed) = Self::packed(graph, conv, op) else {
                continue;
            };
            let prepacked = Conv {
                prepacked: Some(Arc::new(packed)),
                ..op.clone()
            };
            graph.nodes[conv].op = Arc::new(prepacked);
            disconnect_packed_weights(graph, &mut readers, conv);
            changed = true;
        }
        Ok(changed)
    }
}

// ----- Conv + Concat --------------------------------------------------------------------------

/// Makes a `Concat` along axis 1 of the outputs of Convs, at least one with prepacked
/// weights, one [`ConvConcat`] node (where the Concat was, after every input of the
/// convolutions) that writes each prepacked convolution's output straight into its channels.
/// Each Conv output must be read by the Concat alone, once. Run after
/// [`ConvWeightPrepacking`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ConvConcatFusion;

impl ConvConcatFusion {
    /// The Conv nodes producing `concat`'s inputs, in order, when the node qualifies.
    fn parts(graph: &Graph, rw: &Rewriter, concat: NodeId) -> Option<Vec<NodeId>> {
        let op = op_as::<Concat>(graph, concat)?;
        let node = &graph.nodes[concat];
        let out = single_output(graph, concat)?;
        let rank = graph.values[out].fact.shape.as_ref()?.len() as i64;
        if !(op.axis == 1 || op.axis == 1 - rank) || rank < 3 || node.inputs.len() < 2 {
            return None;
        }
        let convs = node
            .inputs
            .iter()
            .map(|&v| {
                let v = v?;
                let conv = rw.producer(v)?;
                let fits = op_as::<Conv>(graph, conv).is_some()
                    && single_output(graph, conv) == Some(v)
                    && rw.sole_reader(graph, v) == Some(concat);
                fits.then_some(conv)
            })
            .collect::<Option<Vec<_>>>()?;
        let prepacked = convs
            .iter()
            .any(|&c| op_as::<Conv>(graph, c).is_some_and(|op| op.prepacked.is_some()));
        prepacked.then_some(convs)
    }
}

impl Pass for ConvConcatFusion {
    fn name(&self) -> &'static str {
        "conv-concat-fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut rw = Rewriter::new(graph);
        for concat in 0..graph.nodes.len() {
            let Some(parts) = Self::parts(graph, &rw, concat) else {
                continue;
            };
            let convs: Vec<Conv> = parts
                .iter()
                .filter_map(|&c| op_as::<Conv>(graph, c).cloned())
                .collect();
            let arity = parts.iter().map(|&c| graph.nodes[c].inputs.len()).collect();
            let inputs = parts
                .iter()
                .flat_map(|&c| graph.nodes[c].inputs.clone())
                .collect();
            let fused = ConvConcat { convs, arity };
            let label = fused.label();
            rw.set_op(graph, concat, Arc::new(fused), label);
            graph.nodes[concat].inputs = inputs;
            rw.touched.extend(parts.iter().copied());
            rw.removed.extend(parts);
        }
        Ok(rw.finish(graph))
    }
}
