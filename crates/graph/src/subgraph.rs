//! Compiled nested graphs (If/Loop/Scan/SequenceMap bodies) and the small sequential
//! interpreter that runs them.
//!
//! A frontend builds the body as an ordinary [`Graph`] whose inputs are the body's formal
//! inputs followed by its captures (outer-scope values it reads), then wraps it in a
//! [`CompiledSubgraph`]: the standard passes run once, an [`ExecutionPlan`] is made, and the
//! result implements [`SubgraphBody`] for the control-flow kernels of strata-ops. Each run
//! walks the plan in order on the calling thread (kernels still get the caller's threads and
//! allocator through the [`EvalCtx`]) and hands intermediate buffers back as soon as their
//! last reader finished.

use crate::passes::{run_passes, standard_passes};
use crate::{ExecutionPlan, Graph, NodeId, Result};
use strata_ops::{EvalCtx, Fact, Inputs, OpError, OpResult, SubgraphBody, Value};

/// A nested graph ready to run as a [`SubgraphBody`].
#[derive(Debug)]
pub struct CompiledSubgraph {
    name: String,
    graph: Graph,
    plan: ExecutionPlan,
    inputs: Vec<String>,
    captures: Vec<String>,
    outputs: Vec<String>,
    output_facts: Vec<Fact>,
    deterministic: bool,
}

impl CompiledSubgraph {
    /// Compiles `graph`, whose first `formal` inputs are the body's formal inputs and whose
    /// remaining inputs are its captures. `name` (the attribute, such as `body`) labels
    /// errors.
    pub fn new(name: &str, mut graph: Graph, formal: usize) -> Result<CompiledSubgraph> {
        run_passes(&mut graph, &standard_passes())?;
        let plan = ExecutionPlan::new(&graph)?;
        let names = |ids: &[usize]| -> Vec<String> {
            ids.iter().map(|&v| graph.values[v].name.clone()).collect()
        };
        let formal = formal.min(graph.inputs.len());
        let inputs = names(&graph.inputs[..formal]);
        let captures = names(&graph.inputs[formal..]);
        let outputs = names(&graph.outputs);
        let output_facts = graph
            .outputs
            .iter()
            .map(|&v| graph.values[v].fact.clone())
            .collect();
        let deterministic = graph.nodes.iter().all(|n| n.op.is_deterministic());
        Ok(CompiledSubgraph {
            name: name.to_string(),
            graph,
            plan,
            inputs,
            captures,
            outputs,
            output_facts,
            deterministic,
        })
    }

    /// The compiled graph (after the standard passes).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Wraps a failure of node `node` with the body and node names.
    fn node_error(&self, node: NodeId, source: OpError) -> OpError {
        OpError::Subgraph {
            context: format!(
                "in subgraph '{}', node '{}' ({})",
                self.name,
                self.graph.node_label(node),
                self.graph.nodes[node].op_type
            ),
            source: Box::new(source),
        }
    }

    /// The values bound before the first step: constants, formal inputs and captures.
    fn initial_values(
        &self,
        inputs: Vec<Value>,
        captured: &[Value],
    ) -> OpResult<Vec<Option<Value>>> {
        let expected = self.inputs.len() + self.captures.len();
        let given = inputs.len() + captured.len();
        if inputs.len() != self.inputs.len() || given != expected {
            return Err(OpError::BadSubgraph(format!(
                "{} takes {} inputs and {} captures, got {} and {}",
                self.name,
                self.inputs.len(),
                self.captures.len(),
                inputs.len(),
                captured.len()
            )));
        }
        let mut values: Vec<Option<Value>> = vec![None; self.graph.values.len()];
        for (&v, t) in &self.graph.constants {
            values[v] = Some(Value::Tensor(t.clone()));
        }
        let bound = inputs.into_iter().chain(captured.iter().cloned());
        for (&v, value) in self.graph.inputs.iter().zip(bound) {
            values[v] = Some(value);
        }
        Ok(values)
    }

    /// Evaluates one node on the current values and stores its outputs.
    fn step(&self, ctx: &EvalCtx<'_>, node: NodeId, values: &mut [Option<Value>]) -> OpResult<()> {
        let n = &self.graph.nodes[node];
        let inputs = n
            .inputs
            .iter()
            .map(|slot| match slot {
                None => Ok(None),
                Some(v) => values[*v].clone().map(Some).ok_or_else(|| {
                    OpError::BadSubgraph(format!(
                        "value '{}' is unbound",
                        self.graph.values[*v].name
                    ))
                }),
            })
            .collect::<OpResult<Vec<_>>>()
            .map_err(|e| self.node_error(node, e))?;
        let outputs =
            n.op.eval(ctx, Inputs::new(inputs))
                .map_err(|e| self.node_error(node, e))?;
        let produced = outputs.len();
        let mut outputs = outputs.into_iter();
        for (i, slot) in n.outputs.iter().enumerate() {
            match (slot, outputs.next()) {
                (Some(v), Some(value)) => values[*v] = Some(value),
                (Some(_), None) => {
                    let reason = format!("produced {produced} outputs but output {i} is used");
                    return Err(self.node_error(node, OpError::BadSubgraph(reason)));
                }
                (None, _) => {}
            }
        }
        Ok(())
    }
}

/// Gives a dead tensor's buffer back to the allocator.
fn release(ctx: &EvalCtx<'_>, value: Option<Value>) {
    if let Some(Value::Tensor(t)) = value {
        if let Some(buffer) = t.into_buffer() {
            ctx.alloc.release(buffer);
        }
    }
}

impl SubgraphBody for CompiledSubgraph {
    fn input_names(&self) -> &[String] {
        &self.inputs
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn output_facts(&self) -> &[Fact] {
        &self.output_facts
    }

    fn captures(&self) -> &[String] {
        &self.captures
    }

    fn is_deterministic(&self) -> bool {
        self.deterministic
    }

    fn run(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: Vec<Value>,
        captured: &[Value],
    ) -> OpResult<Vec<Value>> {
        let mut values = self.initial_values(inputs, captured)?;
        for (step, &node) in self.plan.order.iter().enumerate() {
            self.step(ctx, node, &mut values)?;
            for &v in self.plan.release_after.get(step).into_iter().flatten() {
                release(ctx, values[v].take());
            }
        }
        self.graph
            .outputs
            .iter()
            .map(|&v| {
                values[v].clone().ok_or_else(|| {
                    OpError::BadSubgraph(format!(
                        "{} output '{}' has no value",
                        self.name, self.graph.values[v].name
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GraphBuilder;
    use std::sync::Arc;
    use strata_ops::OpRegistry;
    use strata_tensor::Tensor;

    fn add_body() -> CompiledSubgraph {
        let registry = OpRegistry::with_cpu_kernels();
        let attrs = strata_ops::Attributes::new();
        let ctx = strata_ops::BuildCtx {
            node_name: "add",
            op_type: "Add",
            domain: "",
            opset: 17,
            attrs: &attrs,
            input_count: 2,
            output_count: 1,
        };
        let add: Arc<dyn strata_ops::Operator> = Arc::from(registry.build(&ctx).unwrap());
        let mut b = GraphBuilder::new();
        b.input("x", Fact::default());
        b.node("add", "Add", "", add, &["x", "outer"], &["y"]);
        b.input("outer", Fact::default());
        b.outputs(&["y", "x"]);
        CompiledSubgraph::new("body", b.build().unwrap(), 1).unwrap()
    }

    #[test]
    fn binds_formal_inputs_and_captures() {
        let body = add_body();
        assert_eq!(body.input_names(), ["x"]);
        assert_eq!(body.captures(), ["outer"]);
        let x = Value::Tensor(Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
        let outer = Value::Tensor(Tensor::from_vec(vec![10.0f32, 20.0], &[2]).unwrap());
        let out = body.run(&EvalCtx::default(), vec![x], &[outer]).unwrap();
        let y = out[0].as_tensor().unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, vec![11.0, 22.0]);
        assert_eq!(
            out[1].as_tensor().unwrap().to_vec::<f32>().unwrap(),
            vec![1.0, 2.0]
        );
    }

    #[test]
    fn wrong_arity_and_node_failures_are_errors() {
        let body = add_body();
        let err = body.run(&EvalCtx::default(), vec![], &[]).unwrap_err();
        assert!(err.to_string().contains("takes 1 inputs"), "{err}");
        let x = Value::Tensor(Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
        let bad = Value::Tensor(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap());
        let err = body.run(&EvalCtx::default(), vec![x], &[bad]).unwrap_err();
        assert!(
            err.to_string().contains("in subgraph 'body', node 'add'"),
            "{err}"
        );
    }
}
