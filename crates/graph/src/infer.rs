//! Shape and type inference: propagates [`Fact`]s through the graph in topological order,
//! asking each op for its output facts. Symbolic dimensions stay symbolic; what cannot be
//! known before running stays unknown and is learned by execution.

use crate::{Graph, GraphError, Result};
use strata_ops::{Dim, Fact};

/// Merges a newly inferred fact into a declared one: known information wins over unknown,
/// and a concrete dimension replaces a symbolic one.
fn merge(declared: &Fact, inferred: Fact) -> Fact {
    let dtype = inferred.dtype.or(declared.dtype);
    let shape = match (&declared.shape, inferred.shape) {
        (Some(d), Some(i)) if d.len() == i.len() => Some(
            d.iter()
                .zip(i)
                .map(|(d, i)| match (d, i) {
                    (_, Dim::Known(n)) => Dim::Known(n),
                    (Dim::Known(n), Dim::Symbol(_)) => Dim::Known(*n),
                    (Dim::Symbol(_), s) => s,
                })
                .collect(),
        ),
        (_, Some(i)) => Some(i),
        (d, None) => d.clone(),
    };
    Fact {
        dtype,
        shape,
        value: inferred.value.or_else(|| declared.value.clone()),
    }
}

/// The fact of every value as currently known (constants carry their value).
pub fn current_facts(graph: &Graph) -> Vec<Fact> {
    graph
        .values
        .iter()
        .enumerate()
        .map(|(id, info)| match graph.constants.get(&id) {
            Some(t) => Fact::constant(t.clone()),
            None => info.fact.clone(),
        })
        .collect()
}

/// Runs inference over the whole graph, updating `graph.values[..].fact`. An op that finds
/// its inputs inconsistent fails the whole inference with an error naming the node.
pub fn infer_facts(graph: &mut Graph) -> Result<()> {
    let order = graph.topological_order()?;
    let mut facts = current_facts(graph);
    for id in order {
        let node = &graph.nodes[id];
        let inputs: Vec<Fact> = node
            .inputs
            .iter()
            .map(|v| v.map(|v| facts[v].clone()).unwrap_or_default())
            .collect();
        let inferred = node.op.infer(&inputs).map_err(|source| GraphError::Op {
            node: graph.node_label(id),
            op: node.op_type.clone(),
            source,
        })?;
        if let Some(outs) = inferred {
            for (slot, fact) in node.outputs.iter().zip(outs) {
                if let Some(v) = *slot {
                    facts[v] = merge(&facts[v], fact);
                }
            }
        }
    }
    for (id, fact) in facts.into_iter().enumerate() {
        if !graph.constants.contains_key(&id) {
            graph.values[id].fact = Fact {
                value: None,
                ..fact
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_beats_symbolic() {
        let declared = Fact {
            dtype: None,
            shape: Some(vec![Dim::Symbol("n".into()), Dim::Known(3)]),
            value: None,
        };
        let inferred = Fact {
            dtype: Some(strata_tensor::DType::F32),
            shape: Some(vec![Dim::Known(2), Dim::Symbol("m".into())]),
            value: None,
        };
        let m = merge(&declared, inferred);
        assert_eq!(m.shape.unwrap(), vec![Dim::Known(2), Dim::Known(3)]);
        assert_eq!(m.dtype, Some(strata_tensor::DType::F32));
    }
}
