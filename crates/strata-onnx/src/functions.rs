//! Model-local functions (`ModelProto.functions`): every call is inlined into the calling graph
//! before conversion, so the rest of the engine only ever sees ordinary nodes.
//!
//! A call of function `F` becomes a copy of `F`'s nodes in which formal inputs and outputs are
//! renamed to the call's actual names, every other value gets a prefix unique to the call, and
//! attributes that refer to a function attribute (`ref_attr_name`) take the call's value, else
//! the function's declared default, else are dropped (leaving the op's own default). Calls inside
//! function bodies and inside subgraph attributes are expanded too, up to
//! [`MAX_FUNCTION_DEPTH`] levels (which also stops recursive functions).

use crate::load::FunctionLite;
use crate::{OnnxError, Result};
use std::collections::HashMap;
use tract_onnx::pb;

/// Deepest chain of function calls expanded (deeper chains are reported as [`OnnxError::TooDeep`]).
pub const MAX_FUNCTION_DEPTH: usize = 16;

/// The model's functions by (domain, name), with their attribute defaults.
struct Library<'a> {
    functions: HashMap<(String, String), (&'a pb::FunctionProto, &'a [pb::AttributeProto])>,
}

fn canonical(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

/// Inlines every call of a model-local function in `graph` (and its subgraphs).
/// `defaults` holds each function's `attribute_proto` (matched by domain and name).
pub(crate) fn inline_functions(
    graph: &mut pb::GraphProto,
    functions: &[pb::FunctionProto],
    defaults: &[FunctionLite],
) -> Result<()> {
    if functions.is_empty() {
        return Ok(());
    }
    let library = Library {
        functions: functions
            .iter()
            .map(|f| {
                let domain = canonical(f.domain.as_deref().unwrap_or_default()).to_string();
                let name = f.name.clone().unwrap_or_default();
                let declared = defaults
                    .iter()
                    .find(|d| canonical(&d.domain) == domain && d.name == name)
                    .map_or(&[][..], |d| d.attribute_proto.as_slice());
                ((domain, name), (f, declared))
            })
            .collect(),
    };
    let mut calls = 0;
    let nodes = std::mem::take(&mut graph.node);
    graph.node = library.expand(nodes, 0, &mut calls)?;
    Ok(())
}

impl Library<'_> {
    /// `nodes` with every call replaced by the called function's (expanded) body.
    fn expand(
        &self,
        nodes: Vec<pb::NodeProto>,
        depth: usize,
        calls: &mut usize,
    ) -> Result<Vec<pb::NodeProto>> {
        let mut out = Vec::with_capacity(nodes.len());
        for mut node in nodes {
            for a in &mut node.attribute {
                for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                    let inner = std::mem::take(&mut g.node);
                    g.node = self.expand(inner, depth, calls)?;
                }
            }
            let key = (canonical(&node.domain).to_string(), node.op_type.clone());
            let Some(&(function, declared)) = self.functions.get(&key) else {
                out.push(node);
                continue;
            };
            if depth >= MAX_FUNCTION_DEPTH {
                return Err(OnnxError::TooDeep {
                    limit: MAX_FUNCTION_DEPTH,
                });
            }
            *calls += 1;
            let body = instantiate(function, declared, &node, *calls);
            out.extend(self.expand(body, depth + 1, calls)?);
        }
        Ok(out)
    }
}

/// How names of a function body map to names of one call site.
struct Renaming<'a> {
    map: HashMap<String, String>,
    prefix: String,
    /// The function's declared attribute defaults.
    defaults: &'a [pb::AttributeProto],
}

impl Renaming<'_> {
    fn name(&self, name: &str) -> String {
        if name.is_empty() {
            return String::new();
        }
        self.map
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("{}{name}", self.prefix))
    }

    /// Renames the values of a body node (and of its subgraphs' reads of outer values) and
    /// resolves its attribute references against the call's attributes.
    fn node(&self, node: &pb::NodeProto, call: &pb::NodeProto) -> pb::NodeProto {
        let mut n = node.clone();
        if !call.name.is_empty() || !node.name.is_empty() {
            n.name = format!("{}/{}", call.name, node.name);
        }
        n.input = node.input.iter().map(|i| self.name(i)).collect();
        n.output = node.output.iter().map(|o| self.name(o)).collect();
        n.attribute = node
            .attribute
            .iter()
            .filter_map(|a| self.attribute(a, call))
            .collect();
        n
    }

    fn attribute(
        &self,
        a: &pb::AttributeProto,
        call: &pb::NodeProto,
    ) -> Option<pb::AttributeProto> {
        if !a.ref_attr_name.is_empty() {
            let value = call
                .attribute
                .iter()
                .chain(self.defaults)
                .find(|c| c.name == a.ref_attr_name)?;
            let mut resolved = value.clone();
            resolved.name = a.name.clone();
            return Some(resolved);
        }
        let mut a = a.clone();
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            self.subgraph(g, call);
        }
        Some(a)
    }

    /// Inside a subgraph of the body only names of the enclosing function are renamed; the
    /// subgraph's own values keep theirs.
    fn subgraph(&self, g: &mut pb::GraphProto, call: &pb::NodeProto) {
        let local: std::collections::HashSet<String> = g
            .input
            .iter()
            .map(|i| i.name.clone())
            .chain(g.initializer.iter().map(|t| t.name.clone()))
            .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
            .collect();
        let outer = |name: &String| -> String {
            if local.contains(name) || !self.defines(name) {
                name.clone()
            } else {
                self.name(name)
            }
        };
        for n in &mut g.node {
            n.input = n.input.iter().map(outer).collect();
            n.attribute = n
                .attribute
                .iter()
                .filter_map(|a| self.attribute(a, call))
                .collect();
        }
        for o in &mut g.output {
            o.name = outer(&o.name);
        }
    }

    /// Whether `name` is a value of the function (formal input or output, or node output).
    fn defines(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}

/// The nodes of `function` for one call.
fn instantiate(
    function: &pb::FunctionProto,
    defaults: &[pb::AttributeProto],
    call: &pb::NodeProto,
    id: usize,
) -> Vec<pb::NodeProto> {
    let prefix = format!(
        "__{}_{id}__",
        function.name.as_deref().unwrap_or("function")
    );
    let mut map = HashMap::new();
    for (i, formal) in function.input.iter().enumerate() {
        map.insert(
            formal.clone(),
            call.input.get(i).cloned().unwrap_or_default(),
        );
    }
    for (i, formal) in function.output.iter().enumerate() {
        let actual = call
            .output
            .get(i)
            .filter(|o| !o.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("{prefix}{formal}"));
        map.insert(formal.clone(), actual);
    }
    for node in &function.node {
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            map.entry(o.clone())
                .or_insert_with(|| format!("{prefix}{o}"));
        }
    }
    let renaming = Renaming {
        map,
        prefix,
        defaults,
    };
    function
        .node
        .iter()
        .map(|n| renaming.node(n, call))
        .collect()
}
