//! The IR: values, nodes, and the graph that ties them together.

use crate::{GraphError, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use strata_ops::{Fact, Operator};
use strata_tensor::Tensor;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;
/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// A named edge of the graph and what is known about it.
#[derive(Debug, Clone, Default)]
pub struct ValueInfo {
    /// The value's name, unique in the graph.
    pub name: String,
    /// Known dtype and shape.
    pub fact: Fact,
}

/// One operation: its op (attributes already parsed) and the values it reads and writes.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's name from the model (may be empty).
    pub name: String,
    /// The op type, such as `Conv`.
    pub op_type: String,
    /// The op's domain ("" for the default ONNX domain).
    pub domain: String,
    /// The built operator.
    pub op: Arc<dyn Operator>,
    /// Input values by position; `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// Output values by position; `None` for an output the model does not use.
    pub outputs: Vec<Option<ValueId>>,
}

/// A computation graph. Node order in `nodes` is arbitrary; use
/// [`Graph::topological_order`].
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Every value.
    pub values: Vec<ValueInfo>,
    /// Every node.
    pub nodes: Vec<Node>,
    /// Values the caller provides, in declaration order.
    pub inputs: Vec<ValueId>,
    /// Values the caller receives, in declaration order.
    pub outputs: Vec<ValueId>,
    /// Values known before running (initializers and folded constants).
    pub constants: BTreeMap<ValueId, Tensor>,
}

impl Graph {
    /// The id of the value called `name`.
    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// A human-readable label for a node: its name, or `#index (OpType)` when unnamed.
    pub fn node_label(&self, node: NodeId) -> String {
        let n = &self.nodes[node];
        if n.name.is_empty() {
            format!("#{node} ({})", n.op_type)
        } else {
            n.name.clone()
        }
    }

    /// Drops the nodes for which `keep(id)` is false (ids as before the call; later ids shift
    /// down). Passes use it after deciding what to remove.
    pub fn retain_nodes(&mut self, mut keep: impl FnMut(NodeId) -> bool) {
        let mut index = 0;
        self.nodes.retain(|_| {
            index += 1;
            keep(index - 1)
        });
    }

    /// For each value, the node producing it (`None` for inputs and constants).
    pub fn producers(&self) -> Vec<Option<NodeId>> {
        let mut producers = vec![None; self.values.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            for &v in node.outputs.iter().flatten() {
                producers[v] = Some(id);
            }
        }
        producers
    }

    /// For each value, the nodes reading it (one entry per distinct reader).
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); self.values.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            for &v in node.inputs.iter().flatten() {
                if consumers[v].last() != Some(&id) {
                    consumers[v].push(id);
                }
            }
        }
        consumers
    }

    /// Nodes in an order where every node comes after the producers of its inputs, or the
    /// nodes on a cycle.
    pub fn topological_order(&self) -> Result<Vec<NodeId>> {
        let producers = self.producers();
        // Distinct producer nodes of each node's inputs.
        let deps_of: Vec<Vec<NodeId>> = self
            .nodes
            .iter()
            .map(|n| {
                let mut deps: Vec<NodeId> = n
                    .inputs
                    .iter()
                    .flatten()
                    .filter_map(|&v| producers[v])
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                deps
            })
            .collect();
        let mut pending: Vec<usize> = deps_of.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<NodeId>> = vec![Vec::new(); self.nodes.len()];
        for (id, deps) in deps_of.iter().enumerate() {
            for &d in deps {
                dependents[d].push(id);
            }
        }
        let mut ready: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&n| pending[n] == 0)
            .rev()
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(n) = ready.pop() {
            order.push(n);
            for &d in dependents[n].iter().rev() {
                pending[d] -= 1;
                if pending[d] == 0 {
                    ready.push(d);
                }
            }
        }
        if order.len() != self.nodes.len() {
            // The nodes left wait on a cycle: they are on one or downstream of one. Peel off
            // the downstream ones (no node left waits for them) so only cycles are named.
            let mut stuck: Vec<bool> = pending.iter().map(|&p| p > 0).collect();
            let mut waiting: Vec<usize> = (0..self.nodes.len())
                .map(|n| dependents[n].iter().filter(|&&d| stuck[d]).count())
                .collect();
            let mut peel: Vec<NodeId> = (0..self.nodes.len())
                .filter(|&n| stuck[n] && waiting[n] == 0)
                .collect();
            while let Some(n) = peel.pop() {
                stuck[n] = false;
                for &d in &deps_of[n] {
                    if stuck[d] {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            peel.push(d);
                        }
                    }
                }
            }
            let stuck = (0..self.nodes.len())
                .filter(|&n| stuck[n])
                .map(|n| self.node_label(n))
                .collect();
            return Err(GraphError::Cycle(stuck));
        }
        Ok(order)
    }

    /// Checks that every read value is defined, no value has two producers, every output
    /// exists, and the graph is acyclic.
    pub fn validate(&self) -> Result<()> {
        let mut defined = vec![false; self.values.len()];
        for &v in self.inputs.iter().chain(self.constants.keys()) {
            defined[v] = true;
        }
        for node in &self.nodes {
            for &v in node.outputs.iter().flatten() {
                if std::mem::replace(&mut defined[v], true) {
                    return Err(GraphError::DuplicateValue(self.values[v].name.clone()));
                }
            }
        }
        for (id, node) in self.nodes.iter().enumerate() {
            for &v in node.inputs.iter().flatten() {
                if !defined[v] {
                    return Err(GraphError::UndefinedValue {
                        node: self.node_label(id),
                        op: node.op_type.clone(),
                        value: self.values[v].name.clone(),
                    });
                }
            }
        }
        for &v in &self.outputs {
            if !defined[v] {
                return Err(GraphError::UndefinedOutput(self.values[v].name.clone()));
            }
        }
        self.topological_order().map(|_| ())
    }

    /// Number of elements in all constants.
    pub fn parameter_count(&self) -> usize {
        self.constants.values().map(Tensor::len).sum()
    }

    /// Bytes held by all constants.
    pub fn parameter_bytes(&self) -> usize {
        self.constants.values().map(constant_bytes).sum()
    }
}

/// Bytes a constant holds (strings counted as one byte each).
pub(crate) fn constant_bytes(t: &Tensor) -> usize {
    t.len() * t.dtype().size_of().max(1)
}

/// Builds a [`Graph`] by value names, as frontends see them.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: Graph,
    by_name: HashMap<String, ValueId>,
}

impl GraphBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the value `name`, creating it on first mention.
    pub fn value(&mut self, name: &str) -> ValueId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.graph.values.len();
        self.graph.values.push(ValueInfo {
            name: name.to_string(),
            fact: Fact::default(),
        });
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// Whether a value of this name was mentioned.
    pub fn has_value(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, fact: Fact) -> ValueId {
        let id = self.value(name);
        self.graph.values[id].fact = fact;
        self.graph.inputs.push(id);
        id
    }

    /// Declares a constant (initializer).
    pub fn constant(&mut self, name: &str, tensor: Tensor) -> ValueId {
        let id = self.value(name);
        self.graph.values[id].fact = Fact::known(tensor.dtype(), tensor.shape());
        self.graph.constants.insert(id, tensor);
        id
    }

    /// Records what the model declares about a value (`value_info`, output types).
    pub fn declare(&mut self, name: &str, fact: Fact) {
        let id = self.value(name);
        let info = &mut self.graph.values[id].fact;
        if info.dtype.is_none() {
            info.dtype = fact.dtype;
        }
        if info.shape.is_none() {
            info.shape = fact.shape;
        }
    }

    /// Adds a node; empty names in `inputs`/`outputs` mark omitted optional values.
    pub fn node(
        &mut self,
        name: &str,
        op_type: &str,
        domain: &str,
        op: Arc<dyn Operator>,
        inputs: &[&str],
        outputs: &[&str],
    ) -> NodeId {
        let inputs = inputs
            .iter()
            .map(|n| (!n.is_empty()).then(|| self.value(n)))
            .collect();
        let outputs = outputs
            .iter()
            .map(|n| (!n.is_empty()).then(|| self.value(n)))
            .collect();
        self.graph.nodes.push(Node {
            name: name.to_string(),
            op_type: op_type.to_string(),
            domain: domain.to_string(),
            op,
            inputs,
            outputs,
        });
        self.graph.nodes.len() - 1
    }

    /// Declares the graph outputs in order.
    pub fn outputs(&mut self, names: &[&str]) {
        self.graph.outputs = names.iter().map(|n| self.value(n)).collect();
    }

    /// The graph, validated.
    pub fn build(self) -> Result<Graph> {
        self.graph.validate()?;
        Ok(self.graph)
    }

    /// The graph without validation (for tests that need broken graphs).
    pub fn build_unchecked(self) -> Graph {
        self.graph
    }
}
