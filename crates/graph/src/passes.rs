//! Graph-to-graph rewrites. A [`Pass`] reports whether it changed anything;
//! [`optimize`] runs the standard set until none does.

use crate::{Graph, NodeId, Result};
use std::collections::BTreeSet;
use strata_ops::{EvalCtx, Inputs, Value};

/// One rewrite of the graph. Passes must keep the graph's outputs unchanged.
pub trait Pass: std::fmt::Debug {
    /// Short name for logs and `inspect --optimized`.
    fn name(&self) -> &'static str;
    /// Rewrites `graph`; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> Result<bool>;
}

/// Removes nodes none of whose outputs reach a graph output, and constants nothing reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dead-code-elimination"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let producers = graph.producers();
        let mut live_values = vec![false; graph.values.len()];
        let mut live_nodes = vec![false; graph.nodes.len()];
        let mut stack: Vec<usize> = graph.outputs.clone();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut live_values[v], true) {
                continue;
            }
            if let Some(n) = producers[v] {
                if !std::mem::replace(&mut live_nodes[n], true) {
                    stack.extend(graph.nodes[n].inputs.iter().flatten().copied());
                }
            }
        }
        let before = (graph.nodes.len(), graph.constants.len());
        graph.retain_nodes(|id| live_nodes[id]);
        graph.constants.retain(|v, _| live_values[*v]);
        Ok(before != (graph.nodes.len(), graph.constants.len()))
    }
}

/// Evaluates nodes whose inputs are all constants once, at load, and replaces them by their
/// results. Random ops and nodes producing non-tensor values are left alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConstantFolding;

impl ConstantFolding {
    fn fold_node(graph: &Graph, id: NodeId) -> Option<Vec<(usize, strata_tensor::Tensor)>> {
        let node = &graph.nodes[id];
        if !node.op.is_deterministic() {
            return None;
        }
        let mut values = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            match input {
                Some(v) => values.push(Some(Value::Tensor(graph.constants.get(v)?.clone()))),
                None => values.push(None),
            }
        }
        let outputs = node
            .op
            .eval(&EvalCtx::default(), Inputs::new(values))
            .ok()?;
        let mut folded = Vec::new();
        for (slot, value) in node.outputs.iter().zip(outputs) {
            if let Some(v) = slot {
                folded.push((*v, value.into_tensor()?));
            }
        }
        // every requested output must have been produced
        (folded.len() == node.outputs.iter().flatten().count()).then_some(folded)
    }
}

impl Pass for ConstantFolding {
    fn name(&self) -> &'static str {
        "constant-folding"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let order = graph.topological_order()?;
        let mut folded_nodes = BTreeSet::new();
        for id in order {
            if let Some(results) = Self::fold_node(graph, id) {
                for (v, t) in results {
                    graph.values[v].fact = strata_ops::Fact::known(t.dtype(), t.shape());
                    graph.constants.insert(v, t);
                }
                folded_nodes.insert(id);
            }
        }
        graph.retain_nodes(|id| !folded_nodes.contains(&id));
        Ok(!folded_nodes.is_empty())
    }
}

/// Removes `Identity` nodes and inference-mode `Dropout` nodes whose mask is unused (absent,
/// or declared but read by nothing), by pointing their readers at their input. Nodes whose
/// output is a graph output stay.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityElimination;

impl Pass for IdentityElimination {
    fn name(&self) -> &'static str {
        "identity-elimination"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut remove = BTreeSet::new();
        let readers = graph.consumers();
        let unused = |v: &Option<usize>| {
            v.is_none_or(|v| readers[v].is_empty() && !graph.outputs.contains(&v))
        };
        for id in 0..graph.nodes.len() {
            let node = &graph.nodes[id];
            let passthrough = match node.op_type.as_str() {
                "Identity" => true,
                "Dropout" => node.outputs.iter().skip(1).all(unused),
                _ => false,
            };
            let (Some(Some(src)), Some(Some(dst))) = (node.inputs.first(), node.outputs.first())
            else {
                continue;
            };
            if !passthrough || !node.domain.is_empty() || graph.outputs.contains(dst) {
                continue;
            }
            let (src, dst) = (*src, *dst);
            for other in graph.nodes.iter_mut() {
                for input in other.inputs.iter_mut().flatten() {
                    if *input == dst {
                        *input = src;
                    }
                }
            }
            remove.insert(id);
            changed = true;
        }
        graph.retain_nodes(|id| !remove.contains(&id));
        Ok(changed)
    }
}

/// The standard passes, in the order [`optimize`] applies them.
pub fn standard_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(IdentityElimination),
        Box::new(ConstantFolding),
        Box::new(DeadCodeElimination),
    ]
}

/// Runs `passes` repeatedly until none changes the graph (at most 8 rounds); returns the
/// names of passes that changed something, in order.
pub fn run_passes(graph: &mut Graph, passes: &[Box<dyn Pass>]) -> Result<Vec<&'static str>> {
    let mut applied = Vec::new();
    for _ in 0..8 {
        let mut changed = false;
        for pass in passes {
            if pass.run(graph)? {
                applied.push(pass.name());
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(applied)
}

/// Runs the standard passes, shape inference, then the fusion passes
/// ([`crate::fusion::fusion_passes`], which read the inferred facts), then the standard
/// passes and inference again when anything was fused.
pub fn optimize(graph: &mut Graph) -> Result<Vec<&'static str>> {
    let mut applied = run_passes(graph, &standard_passes())?;
    crate::infer::infer_facts(graph)?;
    let fused = run_passes(graph, &crate::fusion::fusion_passes())?;
    if !fused.is_empty() {
        applied.extend(fused);
        applied.extend(run_passes(graph, &standard_passes())?);
        crate::infer::infer_facts(graph)?;
    }
    Ok(applied)
}

/// Prepares an optimized graph for the CPU kernels: packs constant convolution weights
/// ([`crate::fusion::ConvWeightPrepacking`]) and MatMul right operands
/// ([`crate::fusion::MatMulWeightPrepacking`]), has prepacked convolutions write straight
/// into the channel concatenation reading them ([`crate::fusion::ConvConcatFusion`]) and
/// drops the unpacked weights nothing else reads. Sessions run it after [`optimize`]; analyses of the graph (FLOP counts, inspection)
/// need not pay for it.
pub fn prepack_for_cpu(graph: &mut Graph) -> Result<Vec<&'static str>> {
    let prepacking: [Box<dyn Pass>; 4] = [
        Box::new(crate::fusion::ConvWeightPrepacking),
        Box::new(crate::fusion::MatMulWeightPrepacking),
        Box::new(crate::fusion::ConvConcatFusion),
        Box::new(DeadCodeElimination),
    ];
    run_passes(graph, &prepacking)
}
