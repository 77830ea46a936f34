//! Model loading: `ModelProto` bytes to a validated [`Graph`] plus metadata.

use crate::proto::tensor_from_proto;
use crate::{OnnxError, Result};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use strata_graph::{CompiledSubgraph, Graph, GraphBuilder, GraphError};
use strata_ops::{
    node_captures, Attribute, Attributes, BuildCtx, Dim, Fact, OpError, OpRegistry, Operator,
    Subgraph, Unimplemented,
};
use strata_tensor::{DType, Tensor};
use tract_onnx::pb;

/// What kind of value a graph input or output carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A tensor.
    Tensor,
    /// A sequence of tensors.
    Sequence,
    /// An optional value.
    Optional,
    /// A map (not supported by the engine yet).
    Map,
    /// A sparse tensor (not supported by the engine yet).
    SparseTensor,
    /// Not declared.
    Unknown,
}

/// Model-level information from the `ModelProto`.
#[derive(Debug, Clone, Default)]
pub struct ModelMetadata {
    /// ONNX IR version.
    pub ir_version: i64,
    /// Operator sets by domain ("" is the default ONNX domain).
    pub opsets: BTreeMap<String, i64>,
    /// Producer name (e.g. `pytorch`).
    pub producer_name: String,
    /// Producer version.
    pub producer_version: String,
    /// Model domain.
    pub domain: String,
    /// Model version.
    pub model_version: i64,
    /// Model documentation.
    pub doc_string: String,
    /// Graph name.
    pub graph_name: String,
    /// Graph documentation.
    pub graph_doc_string: String,
    /// Free-form metadata properties in file order.
    pub metadata_props: Vec<(String, String)>,
}

/// A loaded model: its graph and metadata.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// The graph (validated; unimplemented ops appear as [`Unimplemented`] nodes).
    pub graph: Graph,
    /// Model-level information.
    pub metadata: ModelMetadata,
    /// Kind of each graph input, in `graph.inputs` order.
    pub input_kinds: Vec<ValueKind>,
    /// Kind of each graph output, in `graph.outputs` order.
    pub output_kinds: Vec<ValueKind>,
}

// Minimal views of the type protos, to learn whether values are sequences or optionals:
// tract's `TypeProto` only models tensor types.
#[derive(Clone, PartialEq, Message)]
struct TypeLite {
    #[prost(bytes = "vec", optional, tag = "1")]
    tensor_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    sequence_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    map_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    sparse_tensor_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "9")]
    optional_type: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoLite {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeLite>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphLite {
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoLite>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoLite>,
}

#[derive(Clone, PartialEq, Message)]
struct ModelLite {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphLite>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<FunctionLite>,
}

/// The default attribute values of a function (`attribute_proto`, IR 9), which tract's
/// `FunctionProto` does not model.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct FunctionLite {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "10")]
    pub(crate) domain: String,
    #[prost(message, repeated, tag = "11")]
    pub(crate) attribute_proto: Vec<pb::AttributeProto>,
}

fn kind_of(t: &Option<TypeLite>) -> ValueKind {
    match t {
        Some(t) if t.sequence_type.is_some() => ValueKind::Sequence,
        Some(t) if t.optional_type.is_some() => ValueKind::Optional,
        Some(t) if t.map_type.is_some() => ValueKind::Map,
        Some(t) if t.sparse_tensor_type.is_some() => ValueKind::SparseTensor,
        Some(t) if t.tensor_type.is_some() => ValueKind::Tensor,
        _ => ValueKind::Unknown,
    }
}

/// Loads a model file; external data is resolved relative to its folder. The file's bytes
/// are freed as soon as they are decoded, and each initializer's protobuf data as soon as it
/// is converted, so peak memory stays near twice the weights (not four times).
pub fn load_path(path: impl AsRef<Path>, registry: &OpRegistry) -> Result<OnnxModel> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let (model, lite) = decode(&bytes)?;
    drop(bytes);
    load_decoded(model, lite, path.parent(), registry)
}

/// Loads a model from bytes. `base_dir` is where external data files are looked up.
pub fn load_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    registry: &OpRegistry,
) -> Result<OnnxModel> {
    let (model, lite) = decode(bytes)?;
    load_decoded(model, lite, base_dir, registry)
}

/// Decodes the model and the fields tract's types do not model.
fn decode(bytes: &[u8]) -> Result<(pb::ModelProto, ModelLite)> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        what: "model",
        reason: e.to_string(),
    })?;
    Ok((model, ModelLite::decode(bytes).unwrap_or_default()))
}

/// Converts the top-level initializers, emptying each proto once converted (its name stays
/// so the graph still lists it). A name given twice is left for `fill_graph` to report.
fn take_initializers(
    graph: &mut pb::GraphProto,
    base_dir: Option<&Path>,
) -> Result<HashMap<String, Tensor>> {
    let mut converted = HashMap::with_capacity(graph.initializer.len());
    let mut seen = HashSet::with_capacity(graph.initializer.len());
    let duplicated: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|i| !seen.insert(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect();
    for init in graph.initializer.iter_mut() {
        if duplicated.contains(&init.name) {
            continue;
        }
        let tensor = tensor_from_proto(init, base_dir)?;
        let name = std::mem::take(&mut init.name);
        *init = pb::TensorProto {
            name: name.clone(),
            ..Default::default()
        };
        converted.insert(name, tensor);
    }
    Ok(converted)
}

fn load_decoded(
    mut model: pb::ModelProto,
    lite: ModelLite,
    base_dir: Option<&Path>,
    registry: &OpRegistry,
) -> Result<OnnxModel> {
    let metadata = metadata(&model);
    let mut graph_proto = model.graph.take().ok_or(OnnxError::NoGraph)?;
    crate::functions::inline_functions(&mut graph_proto, &model.functions, &lite.functions)?;
    drop(model);
    let mut initializers = take_initializers(&mut graph_proto, base_dir)?;
    let graph = convert_graph(
        &graph_proto,
        &mut initializers,
        &metadata.opsets,
        base_dir,
        registry,
    )?;
    drop(graph_proto);

    let lite_graph = lite.graph.clone().unwrap_or_default();
    let kind_by_name = |list: &[ValueInfoLite], name: &str| {
        list.iter()
            .find(|v| v.name == name)
            .map_or(ValueKind::Tensor, |v| match kind_of(&v.r#type) {
                ValueKind::Unknown => ValueKind::Tensor,
                k => k,
            })
    };
    let input_kinds = graph
        .inputs
        .iter()
        .map(|&v| kind_by_name(&lite_graph.input, &graph.values[v].name))
        .collect();
    let output_kinds = graph
        .outputs
        .iter()
        .map(|&v| kind_by_name(&lite_graph.output, &graph.values[v].name))
        .collect();
    Ok(OnnxModel {
        graph,
        metadata,
        input_kinds,
        output_kinds,
    })
}

fn metadata(model: &pb::ModelProto) -> ModelMetadata {
    let mut opsets = BTreeMap::new();
    for o in &model.opset_import {
        let domain = if o.domain == "ai.onnx" {
            String::new()
        } else {
            o.domain.clone()
        };
        opsets.insert(domain, o.version);
    }
    let graph = model.graph.as_ref();
    ModelMetadata {
        ir_version: model.ir_version,
        opsets,
        producer_name: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        domain: model.domain.clone(),
        model_version: model.model_version,
        doc_string: model.doc_string.clone(),
        graph_name: graph.map(|g| g.name.clone()).unwrap_or_default(),
        graph_doc_string: graph.map(|g| g.doc_string.clone()).unwrap_or_default(),
        metadata_props: model
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
    }
}

/// The fact a `ValueInfoProto` declares.
fn fact_of(info: &pb::ValueInfoProto) -> Fact {
    let Some(pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Fact::default();
    };
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .enumerate()
            .map(|(i, d)| match &d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if *n >= 0 => {
                    Dim::Known(*n as usize)
                }
                Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                    Dim::Symbol(p.clone())
                }
                _ => Dim::Symbol(format!("{}_dim{i}", info.name)),
            })
            .collect()
    });
    Fact {
        dtype: DType::from_onnx_code(t.elem_type),
        shape,
        value: None,
    }
}

/// Deepest nesting of subgraphs (a Loop in an If in a Scan ...) a model may use. (The
/// protobuf decoder stops at about 33 levels anyway.)
pub const MAX_SUBGRAPH_DEPTH: usize = 16;

/// What converting a graph at some nesting depth needs.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    opsets: &'a BTreeMap<String, i64>,
    base_dir: Option<&'a Path>,
    registry: &'a OpRegistry,
    /// 0 for the model's graph, one more per enclosing subgraph.
    depth: usize,
}

/// A graph's nodes and values in a builder, with the names it reads but does not define.
struct Converted {
    builder: GraphBuilder,
    /// Names read (by nodes, nested subgraphs or as outputs) that the graph does not define,
    /// in first-mention order: a subgraph's captures.
    free: Vec<String>,
    /// Number of declared inputs that are not initializers.
    formal_inputs: usize,
}

/// Converts the model's graph; `initializers` holds its initializers already converted.
fn convert_graph(
    g: &pb::GraphProto,
    initializers: &mut HashMap<String, Tensor>,
    opsets: &BTreeMap<String, i64>,
    base_dir: Option<&Path>,
    registry: &OpRegistry,
) -> Result<Graph> {
    let scope = Scope {
        opsets,
        base_dir,
        registry,
        depth: 0,
    };
    Ok(fill_graph(g, scope, initializers)?.builder.build()?)
}

/// Adds initializers, inputs, declared facts, nodes and outputs of `g` to a new builder.
/// Initializers found in `converted` are taken from it instead of converted again.
fn fill_graph(
    g: &pb::GraphProto,
    scope: Scope<'_>,
    converted: &mut HashMap<String, Tensor>,
) -> Result<Converted> {
    let mut builder = GraphBuilder::new();
    let mut defined: HashSet<&str> = HashSet::new();
    for init in &g.initializer {
        let tensor = match converted.remove(&init.name) {
            Some(t) => t,
            None => tensor_from_proto(init, scope.base_dir)?,
        };
        builder.constant(&init.name, tensor);
        defined.insert(init.name.as_str());
    }
    let mut formal_inputs = 0;
    for input in &g.input {
        if defined.insert(input.name.as_str()) {
            builder.input(&input.name, fact_of(input));
            formal_inputs += 1;
        }
    }
    for info in g.value_info.iter().chain(&g.output) {
        builder.declare(&info.name, fact_of(info));
    }
    let mut used: Vec<String> = Vec::new();
    for (index, node) in g.node.iter().enumerate() {
        let (op, captures) = build_op(node, index, scope)?;
        let mut inputs: Vec<&str> = node.input.iter().map(String::as_str).collect();
        inputs.extend(captures.iter().map(String::as_str));
        let outputs: Vec<&str> = node.output.iter().map(String::as_str).collect();
        builder.node(
            &node.name,
            &node.op_type,
            &node.domain,
            op,
            &inputs,
            &outputs,
        );
        used.extend(
            inputs
                .iter()
                .filter(|n| !n.is_empty())
                .map(|n| n.to_string()),
        );
        defined.extend(outputs.iter().copied().filter(|n| !n.is_empty()));
    }
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    builder.outputs(&outputs);
    used.extend(outputs.iter().map(|n| n.to_string()));
    let mut seen = HashSet::new();
    let free = used
        .into_iter()
        .filter(|n| !defined.contains(n.as_str()) && seen.insert(n.clone()))
        .collect();
    Ok(Converted {
        builder,
        free,
        formal_inputs,
    })
}

/// Compiles the graph attribute `name` of a node one level below `scope`. Returns the body
/// and, when some node inside has no kernel, why.
fn compile_subgraph(
    g: &pb::GraphProto,
    name: &str,
    scope: Scope<'_>,
) -> Result<(Subgraph, Option<String>)> {
    let inner = Scope {
        depth: scope.depth + 1,
        ..scope
    };
    if inner.depth > MAX_SUBGRAPH_DEPTH {
        return Err(OnnxError::TooDeep {
            limit: MAX_SUBGRAPH_DEPTH,
        });
    }
    let Converted {
        mut builder,
        free,
        formal_inputs,
    } = fill_graph(g, inner, &mut HashMap::new())?;
    for capture in &free {
        builder.input(capture, Fact::default());
    }
    let compiled = CompiledSubgraph::new(name, builder.build()?, formal_inputs)?;
    let unsupported = unsupported_reason(compiled.graph(), name);
    Ok((Subgraph(Arc::new(compiled)), unsupported))
}

/// Why a compiled subgraph cannot run: its first node without a kernel.
fn unsupported_reason(graph: &Graph, attribute: &str) -> Option<String> {
    graph.nodes.iter().enumerate().find_map(|(id, node)| {
        let u = node.op.as_any().downcast_ref::<Unimplemented>()?;
        Some(format!(
            "subgraph '{attribute}', node '{}': {}",
            graph.node_label(id),
            u.reason
        ))
    })
}

fn node_label(node: &pb::NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("#{index} ({})", node.op_type)
    } else {
        node.name.clone()
    }
}

/// Builds a node's op. Also returns the node's captures (outer-scope values its subgraphs
/// read), which the caller appends to the node's inputs.
fn build_op(
    node: &pb::NodeProto,
    index: usize,
    scope: Scope<'_>,
) -> Result<(Arc<dyn Operator>, Vec<String>)> {
    let domain = if node.domain == "ai.onnx" {
        ""
    } else {
        node.domain.as_str()
    };
    let opset = scope
        .opsets
        .get(domain)
        .copied()
        .unwrap_or(strata_ops::LATEST_OPSET);
    let (attrs, unsupported) = convert_attributes(node, index, scope)?;
    let captures = node_captures(&attrs);
    let unimplemented = |reason| -> Arc<dyn Operator> {
        Arc::new(Unimplemented {
            op_type: node.op_type.clone(),
            domain: domain.to_string(),
            opset,
            reason,
        })
    };
    if let Some(reason) = unsupported {
        return Ok((unimplemented(reason), captures));
    }
    let ctx = BuildCtx {
        node_name: &node.name,
        op_type: &node.op_type,
        domain,
        opset,
        attrs: &attrs,
        input_count: node.input.len(),
        output_count: node.output.len(),
    };
    match scope.registry.build(&ctx) {
        Ok(op) => Ok((Arc::from(op), captures)),
        Err(OpError::Unsupported(reason)) => Ok((unimplemented(reason), captures)),
        Err(source) => Err(GraphError::Op {
            node: node_label(node, index),
            op: node.op_type.clone(),
            source,
        }
        .into()),
    }
}

/// The node's attributes, with graph attributes compiled; also the first reason a subgraph
/// cannot run, if any.
fn convert_attributes(
    node: &pb::NodeProto,
    index: usize,
    scope: Scope<'_>,
) -> Result<(Attributes, Option<String>)> {
    use pb::attribute_proto::AttributeType as T;
    let mut attrs = Attributes::new();
    let mut unsupported = None;
    for a in &node.attribute {
        let err = |reason: String| OnnxError::BadAttribute {
            node: node_label(node, index),
            op: node.op_type.clone(),
            attribute: a.name.clone(),
            reason,
        };
        let tensor =
            |t: &pb::TensorProto| tensor_from_proto(t, None).map_err(|e| err(e.to_string()));
        let mut subgraph = |g: &pb::GraphProto| {
            let (body, reason) =
                compile_subgraph(g, &a.name, scope).map_err(|e| err(e.to_string()))?;
            unsupported = unsupported.take().or(reason);
            Ok::<_, OnnxError>(body)
        };
        let kind = T::try_from(a.r#type).unwrap_or(T::Undefined);
        let value = match kind {
            T::Float => Attribute::Float(a.f),
            T::Int => Attribute::Int(a.i),
            T::String => Attribute::String(a.s.clone()),
            T::Tensor => Attribute::Tensor(tensor(
                a.t.as_ref()
                    .ok_or_else(|| err("TENSOR attribute without a tensor".into()))?,
            )?),
            T::Graph => Attribute::Graph(subgraph(
                a.g.as_ref()
                    .ok_or_else(|| err("GRAPH attribute without a graph".into()))?,
            )?),
            T::Floats => Attribute::Floats(a.floats.clone()),
            T::Ints => Attribute::Ints(a.ints.clone()),
            T::Strings => Attribute::Strings(a.strings.clone()),
            T::Tensors => Attribute::Tensors(a.tensors.iter().map(tensor).collect::<Result<_>>()?),
            T::Graphs => {
                Attribute::Graphs(a.graphs.iter().map(&mut subgraph).collect::<Result<_>>()?)
            }
            // Type annotations (such as Optional's `type`) do not change what kernels compute.
            T::TypeProto | T::TypeProtos => continue,
            T::Undefined => guess_attribute(a).map_err(|r| err(r.to_string()))?,
            other => {
                return Err(err(format!(
                    "attribute type {} is not supported",
                    other.as_str_name()
                )))
            }
        };
        attrs.insert(&a.name, value);
    }
    Ok((attrs, unsupported))
}

/// Attributes from IR versions before the type field was mandatory: pick the populated field.
fn guess_attribute(a: &pb::AttributeProto) -> std::result::Result<Attribute, &'static str> {
    Ok(if !a.floats.is_empty() {
        Attribute::Floats(a.floats.clone())
    } else if !a.ints.is_empty() {
        Attribute::Ints(a.ints.clone())
    } else if !a.strings.is_empty() {
        Attribute::Strings(a.strings.clone())
    } else if let Some(t) = &a.t {
        Attribute::Tensor(tensor_from_proto(t, None).map_err(|_| "malformed tensor")?)
    } else if !a.s.is_empty() {
        Attribute::String(a.s.clone())
    } else if a.f != 0.0 {
        Attribute::Float(a.f)
    } else {
        Attribute::Int(a.i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(name: &str, values: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: 1,
            float_data: values.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn initializers_are_converted_once_and_their_protos_emptied() {
        let mut g = pb::GraphProto {
            initializer: vec![init("a", &[1.0, 2.0]), init("b", &[3.0]), init("b", &[4.0])],
            ..Default::default()
        };
        let converted = take_initializers(&mut g, None).unwrap();
        // "a" is converted and its proto keeps only the name; the duplicated "b" is left
        // intact for fill_graph to report.
        assert_eq!(converted.len(), 1);
        assert_eq!(converted["a"].to_vec::<f32>().unwrap(), [1.0, 2.0]);
        assert_eq!(g.initializer[0].name, "a");
        assert!(g.initializer[0].float_data.is_empty() && g.initializer[0].dims.is_empty());
        assert_eq!(g.initializer[1].float_data, [3.0]);
        assert_eq!(g.initializer[2].float_data, [4.0]);
    }
}
