//! Shape and type inference: propagates [`Fact`]s through the graph in topological order,
//! asking each op for its output facts. Symbolic dimensions stay symbolic; what cannot be
//! known before running stays unknown and is learned by execution.
//!
//! Most ops infer from concrete shapes only. When an op cannot handle its inputs' symbols
//! (a free batch dimension, say), [`infer_through_symbols`] asks it twice with every symbol
//! replaced by a probe size, once per probe set, and keeps what both answers agree on.

use crate::{Graph, GraphError, Result};
use strata_ops::{Dim, Fact, OpResult, Operator};

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

/// Two sets of sizes that stand in for symbolic dimensions (symbol `i` takes entry `i`,
/// cycling): odd, far apart, and not sizes an op is likely to special-case, so an output
/// dimension that equals the probe size in both runs follows the symbol, and one that is
/// equal in both runs does not depend on it.
const PROBES: [[usize; 4]; 2] = [[97, 89, 83, 79], [1009, 1013, 1019, 1021]];

/// Whether some input has a symbolic dimension.
fn has_symbols(inputs: &[Fact]) -> bool {
    inputs.iter().any(|f| {
        f.shape
            .iter()
            .flatten()
            .any(|d| matches!(d, Dim::Symbol(_)))
    })
}

/// Whether every output has a dtype and a shape.
fn complete(facts: &[Fact]) -> bool {
    facts.iter().all(|f| f.dtype.is_some() && f.shape.is_some())
}

/// `op`'s output facts for inputs with symbolic dimensions, from two inferences with the
/// symbols replaced by [`PROBES`]: a dimension equal in both is known, one equal to the same
/// symbol's probe size in both is that symbol, any other makes the shape unknown (the rank
/// with it); a dtype and a value must agree too. `None` when either probe gives nothing or
/// fails (the probe sizes may not fit the op), or the outputs disagree in number.
fn infer_through_symbols(op: &dyn Operator, inputs: &[Fact]) -> Option<Vec<Fact>> {
    let mut symbols: Vec<&str> = Vec::new();
    for dim in inputs.iter().filter_map(|f| f.shape.as_ref()).flatten() {
        if let Dim::Symbol(s) = dim {
            if !symbols.contains(&s.as_str()) {
                symbols.push(s);
            }
        }
    }
    let probe_size = |probe: usize, symbol: &str| {
        let i = symbols.iter().position(|s| *s == symbol).unwrap_or(0);
        PROBES[probe][i % PROBES[probe].len()]
    };
    let substituted = |probe: usize| -> Vec<Fact> {
        inputs
            .iter()
            .map(|f| Fact {
                shape: f.shape.as_ref().map(|dims| {
                    dims.iter()
                        .map(|d| match d {
                            Dim::Symbol(s) => Dim::Known(probe_size(probe, s)),
                            known => known.clone(),
                        })
                        .collect()
                }),
                ..f.clone()
            })
            .collect()
    };
    let run = |probe: usize| -> Option<Vec<Fact>> {
        let answer: OpResult<Option<Vec<Fact>>> = op.infer(&substituted(probe));
        answer.ok().flatten()
    };
    let (a, b) = (run(0)?, run(1)?);
    if a.len() != b.len() {
        return None;
    }
    let dim = |da: &Dim, db: &Dim| -> Option<Dim> {
        match (da, db) {
            (Dim::Known(x), Dim::Known(y)) if x == y => Some(Dim::Known(*x)),
            (Dim::Known(x), Dim::Known(y)) => symbols
                .iter()
                .find(|s| probe_size(0, s) == *x && probe_size(1, s) == *y)
                .map(|s| Dim::Symbol(s.to_string())),
            _ => None,
        }
    };
    let merged = a
        .into_iter()
        .zip(b)
        .map(|(fa, fb)| Fact {
            dtype: fa.dtype.filter(|_| fa.dtype == fb.dtype),
            shape: match (fa.shape, fb.shape) {
                (Some(sa), Some(sb)) if sa.len() == sb.len() => {
                    sa.iter().zip(&sb).map(|(da, db)| dim(da, db)).collect()
                }
                _ => None,
            },
            value: match (fa.value, fb.value) {
                (Some(va), Some(vb)) if tensors_equal(&va, &vb) => Some(va),
                _ => None,
            },
        })
        .collect();
    Some(merged)
}

/// Whether two tensors have the same dtype, shape and bytes.
fn tensors_equal(a: &strata_tensor::Tensor, b: &strata_tensor::Tensor) -> bool {
    let (ca, cb) = (a.contiguous(), b.contiguous());
    a.dtype() == b.dtype()
        && a.shape() == b.shape()
        && matches!((ca.raw_bytes(), cb.raw_bytes()), (Ok(x), Ok(y)) if x == y)
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
        let mut inferred = node.op.infer(&inputs).map_err(|source| GraphError::Op {
            node: graph.node_label(id),
            op: node.op_type.clone(),
            source,
        })?;
        if !inferred.as_deref().is_some_and(complete) && has_symbols(&inputs) {
            if let Some(probed) = infer_through_symbols(&*node.op, &inputs) {
                inferred = Some(match inferred {
                    // Keep what the op said itself; add what the probes learned.
                    Some(direct) if direct.len() == probed.len() => direct
                        .into_iter()
                        .zip(probed)
                        .map(|(d, p)| merge(&p, d))
                        .collect(),
                    _ => probed,
                });
            }
        }
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
