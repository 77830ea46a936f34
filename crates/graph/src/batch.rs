//! Batch independence: whether a graph computes each item along its inputs' leading,
//! symbolic dimension on its own, so a session may run a large batch in sub-batches (and
//! keep each sub-batch's activations in cache) with the same results; and where such a
//! graph can be cut into stages that take sub-batches of different sizes ([`batch_stages`]).
//!
//! The check is conservative: every computed value must have the batch symbol as its first
//! dimension and known sizes elsewhere, and every node must be an op known to treat its
//! leading axis item by item (elementwise ops, convolutions, pools, normalizations over
//! other axes, matrix products with constant right-hand sides, and reshapes that keep the
//! leading dimension, which in row-major order keep each item's block).

use crate::{Graph, NodeId};
use strata_ops::kernels::linalg::Gemm;
use strata_ops::kernels::nn::norm::BatchNorm;
use strata_ops::kernels::nn::softmax::Softmax;
use strata_ops::kernels::reduce::ArgReduce;
use strata_ops::kernels::shape::{Concat, Transpose};
use strata_ops::{Dim, Fact};
use strata_tensor::DType;

/// A batch-independent graph's batch dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAxis {
    /// The symbol every computed value has as its first dimension.
    pub symbol: String,
    /// Bytes of the largest computed value per batch item.
    pub largest_item_bytes: usize,
}

/// Ops that compute each item of their leading axis from the same item of their inputs,
/// whatever their attributes (given the shape conditions of the module docs).
const ITEMWISE: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "Ceil",
    "Clip",
    "Conv",
    "ConvConcat",
    "ConvTranspose",
    "Cos",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Flatten",
    "Floor",
    "Gelu",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "LeakyRelu",
    "Less",
    "Log",
    "LpPool",
    "LRN",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "Not",
    "Pow",
    "PRelu",
    "Reciprocal",
    "Relu",
    "Reshape",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "ThresholdedRelu",
    "Unsqueeze",
    "Where",
];

/// The batch axis of `graph` when it is batch-independent (see the module docs).
pub fn batch_axis(graph: &Graph) -> Option<BatchAxis> {
    let first = *graph.inputs.first()?;
    let Some(Dim::Symbol(symbol)) = leading(&graph.values[first].fact) else {
        return None;
    };
    let symbol = symbol.clone();
    let mut largest_item_bytes = 0;
    let computed = graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().flatten())
        .chain(&graph.inputs);
    for &id in computed {
        let fact = &graph.values[id].fact;
        if !matches!(leading(fact), Some(Dim::Symbol(s)) if *s == symbol) {
            return None;
        }
        largest_item_bytes = largest_item_bytes.max(per_item_bytes(fact)?);
    }
    (0..graph.nodes.len())
        .all(|node| itemwise(graph, node))
        .then_some(BatchAxis {
            symbol,
            largest_item_bytes,
        })
}

fn leading(fact: &Fact) -> Option<&Dim> {
    fact.shape.as_ref()?.first()
}

/// Whether `node` treats the leading axis item by item.
fn itemwise(graph: &Graph, node: NodeId) -> bool {
    let n = &graph.nodes[node];
    if !n.domain.is_empty() {
        return false;
    }
    let op = n.op.as_any();
    let rank = |i: usize| -> Option<i64> {
        let v = (*n.inputs.get(i)?)?;
        Some(graph.values[v].fact.shape.as_ref()?.len() as i64)
    };
    // An axis attribute, normalized against input 0's rank, must not be the leading axis.
    let off_leading = |axis: i64| rank(0).is_some_and(|r| axis.rem_euclid(r.max(1)) != 0);
    let constant = |i: usize| {
        n.inputs
            .get(i)
            .copied()
            .flatten()
            .is_none_or(|v| graph.constants.contains_key(&v))
    };
    match n.op.op_type() {
        t if ITEMWISE.contains(&t) => true,
        "BatchNormalization" => op.downcast_ref::<BatchNorm>().is_some_and(|b| !b.training),
        "Softmax" | "LogSoftmax" | "Hardmax" => op
            .downcast_ref::<Softmax>()
            .is_some_and(|s| off_leading(s.axis)),
        "Concat" => op
            .downcast_ref::<Concat>()
            .is_some_and(|c| off_leading(c.axis)),
        "ArgMax" | "ArgMin" => op
            .downcast_ref::<ArgReduce>()
            .is_some_and(|a| off_leading(a.axis())),
        "Transpose" => op
            .downcast_ref::<Transpose>()
            .is_some_and(|t| t.perm.as_ref().is_some_and(|p| p.first() == Some(&0))),
        // Rows of a 2-D left-hand side are items only against a constant right-hand side
        // (a batched product pairs item i with item i).
        "MatMul" => rank(0).is_some_and(|r| r > 2) || constant(1),
        "Gemm" => {
            op.downcast_ref::<Gemm>().is_some_and(|g| !g.trans_a) && constant(1) && constant(2)
        }
        _ => false,
    }
}

/// One stage of a batch-independent graph cut into consecutive stages (see
/// [`batch_stages`]): the stage's nodes as a graph of their own, over the same value ids.
#[derive(Debug, Clone)]
pub struct BatchStage {
    /// The stage's nodes and the constants they read. Its inputs are the graph's inputs
    /// (first stage) or the one value the stage before hands over; its outputs are the
    /// value it hands to the next stage, or the graph's outputs (last stage).
    pub graph: Graph,
    /// The original id of each of the stage's nodes.
    pub node_ids: Vec<NodeId>,
    /// Bytes of the stage's largest computed value per batch item.
    pub largest_item_bytes: usize,
}

/// A batch-independent `graph` (see [`batch_axis`]) cut, along its execution `order`, into
/// stages whose sub-batches may differ: a stage ends where one value alone carries on (a
/// residual block's output, say), the values after it take at most half the bytes per
/// item of the largest value so far in the stage, so that twice the items or more fit a
/// sub-batch of `budget` bytes, and the weights read after it outweigh that value's bytes
/// per item `CUT_WEIGHTS_PER_HANDED_BYTE` (2) times. Early layers with large activations
/// then run one item at a time while late layers with small activations and large weights
/// run many items per pass over their weights. One stage (the whole graph) when no cut pays; none when the
/// graph is not batch-independent.
pub fn batch_stages(graph: &Graph, order: &[NodeId], budget: usize) -> Vec<BatchStage> {
    if batch_axis(graph).is_none() {
        return Vec::new();
    }
    let items = |bytes: usize| (budget / bytes.max(1)).max(1);
    let step_bytes: Vec<usize> = order
        .iter()
        .map(|&n| item_bytes(graph, graph.nodes[n].outputs.iter().flatten()))
        .collect();
    let mut suffix = step_bytes.clone();
    for i in (0..suffix.len().saturating_sub(1)).rev() {
        suffix[i] = suffix[i].max(suffix[i + 1]);
    }
    let mut weights_after: Vec<usize> = order.iter().map(|&n| weight_bytes(graph, n)).collect();
    for i in (0..weights_after.len().saturating_sub(1)).rev() {
        weights_after[i] = weights_after[i].saturating_add(weights_after[i + 1]);
    }
    let handed = single_handovers(graph, order);
    let mut cuts = Vec::new();
    let (mut start, mut stage_max) = (0, 0);
    for step in 0..order.len() {
        if step > start && items(suffix[step]) >= 2 * items(stage_max) {
            let pays = |v: usize| {
                let handed_bytes = per_item_bytes(&graph.values[v].fact).unwrap_or(usize::MAX);
                weights_after[step] / CUT_WEIGHTS_PER_HANDED_BYTE >= handed_bytes
            };
            if let Some(v) = handed[step].filter(|&v| pays(v)) {
                cuts.push((step, v));
                start = step;
                stage_max = 0;
            }
        }
        stage_max = stage_max.max(step_bytes[step]);
    }
    let mut stages = Vec::with_capacity(cuts.len() + 1);
    let mut inputs = graph.inputs.clone();
    let mut begin = 0;
    for (end, outputs) in cuts
        .iter()
        .map(|&(step, v)| (step, vec![v]))
        .chain(std::iter::once((order.len(), graph.outputs.clone())))
    {
        let next_inputs = outputs.clone();
        let nodes = &order[begin..end];
        stages.push(BatchStage {
            graph: stage_graph(graph, nodes, inputs, outputs),
            node_ids: nodes.to_vec(),
            largest_item_bytes: step_bytes[begin..end].iter().copied().max().unwrap_or(0),
        });
        inputs = next_inputs;
        begin = end;
    }
    stages
}

/// A cut costs each item a copy of the value handed over (written whole for the batch, read
/// back by the next stage) and saves, per item, at least half a pass over the weights read
/// after it (twice the items share each pass or more): it is made only where those weights
/// take this many times the bytes handed over per item. SqueezeNet's last cut candidate,
/// before a global pool and a softmax with no weights, then stays whole (a cut there made
/// its batch of 8 slower per image than batch 1).
const CUT_WEIGHTS_PER_HANDED_BYTE: usize = 2;

/// Bytes of weights node `n` reads: its constant inputs and what its op holds itself.
fn weight_bytes(graph: &Graph, n: NodeId) -> usize {
    let node = &graph.nodes[n];
    let constants: usize = node
        .inputs
        .iter()
        .flatten()
        .filter_map(|v| graph.constants.get(v))
        .map(crate::graph::constant_bytes)
        .sum();
    constants + node.op.weight_bytes()
}

/// Per step of `order`: the value that alone crosses from the steps before it to it and
/// the steps after, when exactly one does, it is computed (not a graph input) and it is not
/// a graph output; graph outputs computed before the step and graph inputs read from it on
/// rule a cut there out.
fn single_handovers(graph: &Graph, order: &[NodeId]) -> Vec<Option<usize>> {
    let mut step_of = vec![usize::MAX; graph.nodes.len()];
    for (step, &n) in order.iter().enumerate() {
        step_of[n] = step;
    }
    // For each value: the step computing it (None for inputs and constants) and the last
    // step reading it (graph outputs are read "after the end").
    let mut made = vec![None; graph.values.len()];
    let mut last_read = vec![None::<usize>; graph.values.len()];
    for (n, node) in graph.nodes.iter().enumerate() {
        for &v in node.outputs.iter().flatten() {
            made[v] = Some(step_of[n]);
        }
        for &v in node.inputs.iter().flatten() {
            last_read[v] = last_read[v].max(Some(step_of[n]));
        }
    }
    for &v in &graph.outputs {
        last_read[v] = Some(order.len());
    }
    // Graph inputs (not constants) read at or after a step, and graph outputs computed
    // before it, rule a cut there out.
    let mut blocked = vec![false; order.len() + 1];
    // Values crossing into step `s` (made before it, read at or after it), counted and
    // summed by id with difference arrays: where one crosses, the sum is its id.
    let mut count = vec![0i64; order.len() + 2];
    let mut id_sum = vec![0i64; order.len() + 2];
    for v in 0..graph.values.len() {
        let Some(last) = last_read[v] else { continue };
        match made[v] {
            Some(first) if first < last => {
                count[first + 1] += 1;
                count[last + 1] -= 1;
                id_sum[first + 1] += v as i64;
                id_sum[last + 1] -= v as i64;
            }
            Some(_) => {}
            None if graph.constants.contains_key(&v) => {}
            None => blocked[..=last.min(order.len())].fill(true),
        }
    }
    for &v in &graph.outputs {
        if let Some(first) = made[v] {
            blocked[first + 1..].fill(true);
        }
    }
    let (mut crossing, mut ids) = (0i64, 0i64);
    (0..order.len())
        .map(|step| {
            crossing += count[step];
            ids += id_sum[step];
            (crossing == 1 && !blocked[step]).then(|| usize::try_from(ids).ok())?
        })
        .collect()
}

/// Bytes per batch item of the largest of `values` (0 for none or unknown sizes).
fn item_bytes<'a>(graph: &Graph, values: impl Iterator<Item = &'a usize>) -> usize {
    values
        .filter_map(|&v| per_item_bytes(&graph.values[v].fact))
        .max()
        .unwrap_or(0)
}

/// Bytes per item along the leading axis of a value of this fact (known dtype and trailing
/// sizes).
fn per_item_bytes(fact: &Fact) -> Option<usize> {
    let dtype = fact.dtype.filter(|d| *d != DType::String)?;
    let dims = fact.shape.as_ref()?;
    dims.get(1..)?
        .iter()
        .try_fold(dtype.size_of(), |item, d| match d {
            Dim::Known(n) => item.checked_mul(*n),
            Dim::Symbol(_) => None,
        })
}

/// A graph of `nodes` of `graph` (same value ids) with these inputs and outputs and the
/// constants the nodes read.
fn stage_graph(graph: &Graph, nodes: &[NodeId], inputs: Vec<usize>, outputs: Vec<usize>) -> Graph {
    let nodes: Vec<_> = nodes.iter().map(|&n| graph.nodes[n].clone()).collect();
    let constants = nodes
        .iter()
        .flat_map(|n| n.inputs.iter().flatten())
        .filter_map(|&v| Some((v, graph.constants.get(&v)?.clone())))
        .collect();
    Graph {
        values: graph.values.clone(),
        nodes,
        inputs,
        outputs,
        constants,
    }
}
