//! Helpers shared by the graph crate's integration tests: real CPU ops from the registry, a
//! builder of test graphs by value names, and running a planned graph through the scheduler's
//! executor.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use strata_graph::{ExecutionPlan, Fact, Graph, GraphBuilder, Operator};
use strata_ops::{Attributes, BuildCtx, HeapTensorAlloc, OpRegistry, Value};
use strata_sched::{Executor, ThreadPool};
use strata_tensor::{DType, Tensor};

pub fn registry() -> &'static OpRegistry {
    static REGISTRY: OnceLock<OpRegistry> = OnceLock::new();
    REGISTRY.get_or_init(OpRegistry::with_cpu_kernels)
}

/// Builds a real CPU op at opset 17.
pub fn op_with(
    op_type: &str,
    attrs: Attributes,
    inputs: usize,
    outputs: usize,
) -> Arc<dyn Operator> {
    let ctx = BuildCtx {
        node_name: "",
        op_type,
        domain: "",
        opset: 17,
        attrs: &attrs,
        input_count: inputs,
        output_count: outputs,
    };
    Arc::from(
        registry()
            .build(&ctx)
            .unwrap_or_else(|e| panic!("{op_type}: {e}")),
    )
}

pub fn op(op_type: &str, inputs: usize) -> Arc<dyn Operator> {
    op_with(op_type, Attributes::new(), inputs, 1)
}

/// A test graph under construction, by value names.
pub struct G {
    pub b: GraphBuilder,
}

impl G {
    pub fn new() -> Self {
        G {
            b: GraphBuilder::new(),
        }
    }

    pub fn input(&mut self, name: &str, shape: &[usize]) -> &mut Self {
        self.b.input(name, Fact::known(DType::F32, shape));
        self
    }

    pub fn constant_shaped(&mut self, name: &str, data: &[f32], shape: &[usize]) -> &mut Self {
        self.b
            .constant(name, Tensor::from_slice(data, shape).unwrap());
        self
    }

    pub fn constant(&mut self, name: &str, data: &[f32]) -> &mut Self {
        self.b
            .constant(name, Tensor::from_slice(data, &[data.len()]).unwrap());
        self
    }

    pub fn node(&mut self, name: &str, op_type: &str, inputs: &[&str], output: &str) -> &mut Self {
        let op = op(op_type, inputs.len());
        self.b.node(name, op_type, "", op, inputs, &[output]);
        self
    }

    pub fn node_op(
        &mut self,
        name: &str,
        op_type: &str,
        op: Arc<dyn Operator>,
        inputs: &[&str],
        outputs: &[&str],
    ) -> &mut Self {
        self.b.node(name, op_type, "", op, inputs, outputs);
        self
    }

    pub fn outputs(&mut self, names: &[&str]) -> &mut Self {
        self.b.outputs(names);
        self
    }

    pub fn build(self) -> strata_graph::Result<Graph> {
        self.b.build()
    }

    pub fn unchecked(self) -> Graph {
        self.b.build_unchecked()
    }
}

pub fn f32s(data: &[f32]) -> Tensor {
    Tensor::from_slice(data, &[data.len()]).unwrap()
}

/// Runs `graph` with `plan` on named inputs with `threads` threads; outputs as f32.
pub fn run_planned(
    graph: &Graph,
    plan: &ExecutionPlan,
    inputs: &[(&str, Tensor)],
    threads: usize,
) -> Vec<Vec<f32>> {
    let pool = ThreadPool::new(threads);
    let bound = inputs
        .iter()
        .map(|(n, t)| (graph.value_id(n).unwrap(), Value::Tensor(t.clone())))
        .collect();
    Executor::new(graph, plan, &pool, &HeapTensorAlloc)
        .run(bound)
        .unwrap()
        .into_iter()
        .map(|v| {
            let t = v.into_tensor().unwrap();
            t.cast(DType::F32).unwrap().to_vec::<f32>().unwrap()
        })
        .collect()
}
