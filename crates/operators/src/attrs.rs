//! Node attributes, parsed from the model once and read by op builders.

use crate::{OpError, OpResult};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use strata_tensor::Tensor;

/// A nested graph (If/Loop/Scan bodies). Opaque here: strata-graph stores its own IR inside
/// and control-flow ops downcast it.
#[derive(Clone)]
pub struct Subgraph(pub Arc<dyn Any + Send + Sync>);

impl fmt::Debug for Subgraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subgraph(..)")
    }
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
