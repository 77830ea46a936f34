//! A loaded model: the graph as the file describes it, plus metadata.

use crate::{Result, Session, SessionOptions, StrataError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use strata_graph::{Dim, Graph};
use strata_onnx::{ModelMetadata, OnnxModel, ValueKind};
use strata_ops::{OpRegistry, Unimplemented};
use strata_tensor::DType;

/// The shared registry of CPU kernels, built once per process.
pub(crate) fn cpu_registry() -> &'static OpRegistry {
    static REGISTRY: OnceLock<OpRegistry> = OnceLock::new();
    REGISTRY.get_or_init(OpRegistry::with_cpu_kernels)
}

/// A graph input or output as a user sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct IoInfo {
    /// Name.
    pub name: String,
    /// Tensor, sequence or optional.
    pub kind: ValueKind,
    /// Element type when declared.
    pub dtype: Option<DType>,
    /// Dimensions when declared (symbols for dynamic sizes).
    pub dims: Option<Vec<Dim>>,
}

impl IoInfo {
    /// The dims rendered as `[batch, 3, 224, 224]` (`[?]` when unknown).
    pub fn dims_string(&self) -> String {
        match &self.dims {
            Some(d) => format!(
                "[{}]",
                d.iter().map(Dim::to_string).collect::<Vec<_>>().join(", ")
            ),
            None => "[?]".into(),
        }
    }
}

/// A model loaded from ONNX. Cheap to clone; create any number of sessions from it.
#[derive(Debug, Clone)]
pub struct Model {
    inner: Arc<OnnxModel>,
}

impl Model {
    /// Loads an `.onnx` file (external data files are looked up beside it).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Ok(Model {
            inner: Arc::new(strata_onnx::load_path(path, cpu_registry())?),
        })
    }

    /// Loads a model from its bytes (no external data).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Ok(Model {
            inner: Arc::new(strata_onnx::load_bytes(bytes, None, cpu_registry())?),
        })
    }

    /// A session with the given options.
    pub fn session(&self, options: SessionOptions) -> Result<Session> {
        Session::new(self, options)
    }

    /// Like [`Model::session`], consuming the model. When no clone of the model is alive the
    /// session takes the loaded graph instead of a copy, so the weights the optimizer replaces
    /// (convolution weights it prepacks) are freed as it goes: peak memory stays near one
    /// copy of the weights instead of two.
    pub fn into_session(self, options: SessionOptions) -> Result<Session> {
        match Arc::try_unwrap(self.inner) {
            Ok(onnx) => Session::with_graph(onnx.graph, onnx.input_kinds, options),
            Err(shared) => Model { inner: shared }.session(options),
        }
    }

    /// The graph as loaded (before optimization).
    pub fn graph(&self) -> &Graph {
        &self.inner.graph
    }

    /// Model-level metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.inner.metadata
    }

    pub(crate) fn onnx(&self) -> &OnnxModel {
        &self.inner
    }

    fn io_info(&self, ids: &[usize], kinds: &[ValueKind]) -> Vec<IoInfo> {
        ids.iter()
            .zip(kinds)
            .map(|(&v, &kind)| {
                let info = &self.graph().values[v];
                IoInfo {
                    name: info.name.clone(),
                    kind,
                    dtype: info.fact.dtype,
                    dims: info.fact.shape.clone(),
                }
            })
            .collect()
    }

    /// The inputs the caller must provide, in graph order.
    pub fn inputs(&self) -> Vec<IoInfo> {
        self.io_info(&self.graph().inputs, &self.inner.input_kinds)
    }

    /// The outputs, in graph order.
    pub fn outputs(&self) -> Vec<IoInfo> {
        self.io_info(&self.graph().outputs, &self.inner.output_kinds)
    }

    /// How many nodes of each op type the graph has.
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut histogram = BTreeMap::new();
        for node in &self.graph().nodes {
            let key = if node.domain.is_empty() {
                node.op_type.clone()
            } else {
                format!("{}.{}", node.domain, node.op_type)
            };
            *histogram.entry(key).or_insert(0) += 1;
        }
        histogram
    }

    /// Estimated floating-point operations of one run, with symbolic input dimensions bound
    /// by `bindings` (unbound symbols count as 1). Ops whose cost is unknown count as 0.
    pub fn estimate_flops(&self, bindings: &BTreeMap<String, usize>) -> Result<u64> {
        let mut graph = self.graph().clone();
        for &v in &graph.inputs.clone() {
            if let Some(dims) = graph.values[v].fact.shape.as_mut() {
                for d in dims.iter_mut() {
                    if let Dim::Symbol(s) = d {
                        *d = Dim::Known(bindings.get(s.as_str()).copied().unwrap_or(1));
                    }
                }
            }
        }
        strata_graph::passes::optimize(&mut graph)?;
        let facts = strata_graph::infer::current_facts(&graph);
        Ok(graph
            .nodes
            .iter()
            .map(|n| {
                let inputs: Vec<strata_graph::Fact> = n
                    .inputs
                    .iter()
                    .map(|v| v.map(|v| facts[v].clone()).unwrap_or_default())
                    .collect();
                n.op.flops(&inputs)
            })
            .sum())
    }

    /// Nodes that have no kernel, as errors naming them.
    pub fn unsupported_ops(&self) -> Vec<StrataError> {
        unsupported_in(self.graph())
    }
}

/// The [`StrataError::UnsupportedOp`] of every unimplemented node in `graph`.
pub(crate) fn unsupported_in(graph: &Graph) -> Vec<StrataError> {
    graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(id, node)| {
            let u = node.op.as_any().downcast_ref::<Unimplemented>()?;
            Some(StrataError::UnsupportedOp {
                node: graph.node_label(id),
                op: u.op_type.clone(),
                domain: u.domain.clone(),
                opset: u.opset,
                reason: u.reason.clone(),
            })
        })
        .collect()
}
