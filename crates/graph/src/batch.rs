//! Batch independence: whether a graph computes each item along its inputs' leading,
//! symbolic dimension on its own, so a session may run a large batch in sub-batches (and
//! keep each sub-batch's activations in cache) with the same results.
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
        let dtype = fact.dtype.filter(|d| *d != DType::String)?;
        let dims = fact.shape.as_ref()?;
        if !matches!(dims.first(), Some(Dim::Symbol(s)) if *s == symbol) {
            return None;
        }
        let mut item = dtype.size_of();
        for d in &dims[1..] {
            match d {
                Dim::Known(n) => item = item.checked_mul(*n)?,
                Dim::Symbol(_) => return None,
            }
        }
        largest_item_bytes = largest_item_bytes.max(item);
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
