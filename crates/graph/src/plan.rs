//! The execution plan: a topological order, each value's lifetime, the dependency counts the
//! parallel executor needs, and the static memory plan.

use crate::{Graph, NodeId, Result, ValueId};
use strata_memory::{plan_slots, MemoryPlan, ValueLifetime};

/// How to run a graph: which node at each step, and when each intermediate value dies.
#[derive(Debug, Clone, Default)]
pub struct ExecutionPlan {
    /// Nodes in execution order; step `i` runs `order[i]`.
    pub order: Vec<NodeId>,
    /// Per step: the values whose last reader is this step (free them after it).
    pub release_after: Vec<Vec<ValueId>>,
    /// Per node: how many distinct producer nodes it waits for.
    pub dependency_count: Vec<usize>,
    /// Per node: the nodes waiting for it.
    pub dependents: Vec<Vec<NodeId>>,
    /// Slot assignment for intermediate values (values produced by nodes and not returned).
    pub memory: MemoryPlan,
    /// Whether each value is an intermediate covered by `memory`.
    pub planned: Vec<bool>,
    /// Lifetimes (steps and known byte sizes) of the planned values.
    pub lifetimes: Vec<ValueLifetime>,
}

impl ExecutionPlan {
    /// Plans `graph` (which must be valid).
    pub fn new(graph: &Graph) -> Result<Self> {
        let order = graph.topological_order()?;
        let producers = graph.producers();
        let mut step_of = vec![0; graph.nodes.len()];
        for (step, &n) in order.iter().enumerate() {
            step_of[n] = step;
        }

        let mut dependents = vec![Vec::new(); graph.nodes.len()];
        let mut dependency_count = vec![0; graph.nodes.len()];
        for (id, node) in graph.nodes.iter().enumerate() {
            let mut deps: Vec<NodeId> = node
                .inputs
                .iter()
                .flatten()
                .filter_map(|&v| producers[v])
                .collect();
            deps.sort_unstable();
            deps.dedup();
            dependency_count[id] = deps.len();
            for d in deps {
                dependents[d].push(id);
            }
        }

        let mut planned = vec![false; graph.values.len()];
        let mut lifetimes = vec![
            ValueLifetime {
                first: 0,
                last: 0,
                bytes: 0
            };
            graph.values.len()
        ];
        for (v, producer) in producers.iter().enumerate() {
            if let Some(n) = producer {
                planned[v] = !graph.outputs.contains(&v);
                let fact = &graph.values[v].fact;
                let bytes = match (fact.dtype, fact.concrete_shape()) {
                    (Some(d), Some(s)) => s.iter().product::<usize>() * d.size_of(),
                    _ => 0,
                };
                lifetimes[v] = ValueLifetime {
                    first: step_of[*n],
                    last: step_of[*n],
                    bytes,
                };
            }
        }
        let mut release_after = vec![Vec::new(); order.len()];
        for (id, node) in graph.nodes.iter().enumerate() {
            for &v in node.inputs.iter().flatten() {
                lifetimes[v].last = lifetimes[v].last.max(step_of[id]);
            }
        }
        for v in 0..graph.values.len() {
            if planned[v] {
                release_after[lifetimes[v].last].push(v);
            }
        }
        let planned_ids: Vec<ValueId> = (0..graph.values.len()).filter(|&v| planned[v]).collect();
        let compact: Vec<ValueLifetime> = planned_ids.iter().map(|&v| lifetimes[v]).collect();
        let slots = plan_slots(&compact);
        let mut slot_of = vec![usize::MAX; graph.values.len()];
        for (i, &v) in planned_ids.iter().enumerate() {
            slot_of[v] = slots.slot_of[i];
        }
        Ok(ExecutionPlan {
            order,
            release_after,
            dependency_count,
            dependents,
            memory: MemoryPlan {
                slot_of,
                slot_bytes: slots.slot_bytes,
            },
            planned,
            lifetimes: compact,
        })
    }
}
