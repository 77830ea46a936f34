//! Node attributes, parsed from the model once and read by op builders.

use crate::{EvalCtx, Fact, OpError, OpResult, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use strata_tensor::Tensor;

/// A compiled nested graph (the body of If, Loop, Scan or SequenceMap), as a frontend built
/// it. Control-flow kernels only see this interface: the graph IR and its interpreter live in
/// crates above this one.
///
/// A body has formal inputs (bound by the kernel on each run), outputs, and *captures*: the
/// names of outer-scope values it reads without declaring them. The frontend appends the
/// captures of all of a node's bodies (see [`node_captures`]) as implicit trailing inputs of
/// the node, so that the outer graph sees the dependency; the kernel hands them to
/// [`SubgraphBody::run`] in the order of [`SubgraphBody::captures`].
pub trait SubgraphBody: Send + Sync + fmt::Debug {
    /// Names of the formal inputs, in order.
    fn input_names(&self) -> &[String];
    /// Names of the outputs, in order.
    fn output_names(&self) -> &[String];
    /// What the body declares about its outputs (dtype and shape, possibly unknown).
    fn output_facts(&self) -> &[Fact];
    /// Names of the outer-scope values the body reads, in the order `run` expects them.
    fn captures(&self) -> &[String];
    /// Whether every op of the body is deterministic.
    fn is_deterministic(&self) -> bool {
        true
    }
    /// Runs the body once on its formal inputs and captured values; returns one value per
    /// output.
    fn run(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: Vec<Value>,
        captured: &[Value],
    ) -> OpResult<Vec<Value>>;
}

/// A nested graph attribute: a shared, compiled [`SubgraphBody`].
#[derive(Clone)]
pub struct Subgraph(pub Arc<dyn SubgraphBody>);

impl fmt::Debug for Subgraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Subgraph({} inputs, {} outputs, captures {:?})",
            self.0.input_names().len(),
            self.0.output_names().len(),
            self.0.captures()
        )
    }
}

/// The outer-scope values read by any of the graph attributes in `attrs`, sorted and without
/// duplicates: the implicit trailing inputs of the node, in order. Frontends append them to
/// the node; control-flow kernels find each capture's input position from the same list.
pub fn node_captures(attrs: &Attributes) -> Vec<String> {
    let mut names: Vec<String> = attrs
        .iter()
        .flat_map(|(_, a)| match a {
            Attribute::Graph(g) => vec![g],
            Attribute::Graphs(gs) => gs.iter().collect(),
            _ => Vec::new(),
        })
        .flat_map(|g| g.0.captures().iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One attribute value.
#[derive(Debug, Clone)]
pub enum Attribute {
    /// `FLOAT`.
    Float(f32),
    /// `INT`.
    Int(i64),
    /// `STRING` (bytes; usually UTF-8).
    String(Vec<u8>),
    /// `TENSOR`.
    Tensor(Tensor),
    /// `GRAPH`.
    Graph(Subgraph),
    /// `FLOATS`.
    Floats(Vec<f32>),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `STRINGS`.
    Strings(Vec<Vec<u8>>),
    /// `TENSORS`.
    Tensors(Vec<Tensor>),
    /// `GRAPHS`.
    Graphs(Vec<Subgraph>),
}

impl Attribute {
    fn kind(&self) -> &'static str {
        match self {
            Attribute::Float(_) => "float",
            Attribute::Int(_) => "int",
            Attribute::String(_) => "string",
            Attribute::Tensor(_) => "tensor",
            Attribute::Graph(_) => "graph",
            Attribute::Floats(_) => "floats",
            Attribute::Ints(_) => "ints",
            Attribute::Strings(_) => "strings",
            Attribute::Tensors(_) => "tensors",
            Attribute::Graphs(_) => "graphs",
        }
    }
}

/// A node's attributes by name, with typed accessors that report wrong types as errors.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    map: BTreeMap<String, Attribute>,
}

macro_rules! typed_getter {
    ($get:ident, $or:ident, $variant:ident, $t:ty, $kind:literal) => {
        #[doc = concat!("The `", $kind, "` attribute `name`, if present.")]
        pub fn $get(&self, name: &str) -> OpResult<Option<$t>> {
            match self.map.get(name) {
                None => Ok(None),
                Some(Attribute::$variant(v)) => Ok(Some(v.clone())),
                Some(other) => Err(OpError::attribute(
                    name,
                    format!("expected {}, found {}", $kind, other.kind()),
                )),
            }
        }

        #[doc = concat!("The `", $kind, "` attribute `name`, or `default` when absent.")]
        pub fn $or(&self, name: &str, default: $t) -> OpResult<$t> {
            Ok(self.$get(name)?.unwrap_or(default))
        }
    };
}

impl Attributes {
    /// Empty attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an attribute (builder style).
    pub fn with(mut self, name: &str, value: Attribute) -> Self {
        self.map.insert(name.to_string(), value);
        self
    }

    /// Adds or replaces an attribute.
    pub fn insert(&mut self, name: &str, value: Attribute) {
        self.map.insert(name.to_string(), value);
    }

    /// The raw attribute.
    pub fn get(&self, name: &str) -> Option<&Attribute> {
        self.map.get(name)
    }

    /// Whether the attribute is present.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// All attributes by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attribute)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    typed_getter!(float, float_or, Float, f32, "float");
    typed_getter!(int, int_or, Int, i64, "int");
    typed_getter!(ints, ints_or, Ints, Vec<i64>, "ints");
    typed_getter!(floats, floats_or, Floats, Vec<f32>, "floats");
    typed_getter!(tensor, tensor_or, Tensor, Tensor, "tensor");
    typed_getter!(graph, graph_or, Graph, Subgraph, "graph");

    /// The `string` attribute `name` as UTF-8, if present.
    pub fn string(&self, name: &str) -> OpResult<Option<String>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::String(v)) => String::from_utf8(v.clone())
                .map(Some)
                .map_err(|_| OpError::attribute(name, "not valid UTF-8")),
            Some(other) => Err(OpError::attribute(
                name,
                format!("expected string, found {}", other.kind()),
            )),
        }
    }

    /// The `string` attribute `name`, or `default` when absent.
    pub fn string_or(&self, name: &str, default: &str) -> OpResult<String> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    /// The `strings` attribute `name` as UTF-8, if present.
    pub fn strings(&self, name: &str) -> OpResult<Option<Vec<String>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Strings(v)) => v
                .iter()
                .map(|s| {
                    String::from_utf8(s.clone())
                        .map_err(|_| OpError::attribute(name, "not valid UTF-8"))
                })
                .collect::<OpResult<Vec<_>>>()
                .map(Some),
            Some(other) => Err(OpError::attribute(
                name,
                format!("expected strings, found {}", other.kind()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access_reports_wrong_types() {
        let a = Attributes::new()
            .with("axis", Attribute::Int(1))
            .with("mode", Attribute::String(b"constant".to_vec()));
        assert_eq!(a.int_or("axis", 0).unwrap(), 1);
        assert_eq!(a.int_or("missing", 7).unwrap(), 7);
        assert_eq!(a.string_or("mode", "x").unwrap(), "constant");
        let err = a.float("axis").unwrap_err().to_string();
        assert!(
            err.contains("'axis'") && err.contains("expected float"),
            "{err}"
        );
    }
}
