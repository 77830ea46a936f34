//! The op registry: (domain, op type) to builders, each valid for a range of opset versions.

use crate::{Attributes, OpError, OpResult, Operator};
use std::collections::BTreeMap;

/// Everything a builder may look at while constructing an op for one node.
#[derive(Debug, Clone, Copy)]
pub struct BuildCtx<'a> {
    /// The node's name (may be empty).
    pub node_name: &'a str,
    /// The op type.
    pub op_type: &'a str,
    /// The op's domain ("" for the default ONNX domain).
    pub domain: &'a str,
    /// The model's opset version for that domain.
    pub opset: i64,
    /// Parsed attributes.
    pub attrs: &'a Attributes,
    /// Number of input positions the node declares (including empty ones).
    pub input_count: usize,
    /// Number of outputs the node declares.
    pub output_count: usize,
}

/// Builds an op from a node, validating its attributes.
pub type OpBuilder = fn(&BuildCtx<'_>) -> OpResult<Box<dyn Operator>>;

/// One registered implementation.
#[derive(Debug, Clone, Copy)]
pub struct RegisteredOp {
    /// First opset version it implements.
    pub since: i64,
    /// Last opset version it implements (inclusive).
    pub until: i64,
    /// The builder.
    pub builder: OpBuilder,
}

/// Newest opset version of the default domain the kernels are written against.
pub const LATEST_OPSET: i64 = 25;

/// The table from (domain, op type) to implementations by opset range.
#[derive(Debug, Clone, Default)]
pub struct OpRegistry {
    entries: BTreeMap<(String, String), Vec<RegisteredOp>>,
}

fn canonical_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

impl OpRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with every CPU kernel of this crate.
    pub fn with_cpu_kernels() -> Self {
        let mut registry = Self::new();
        crate::kernels::register_all(&mut registry);
        registry
    }

    /// Registers `builder` for `op_type` in `domain` from opset `since` on (until the newest).
    pub fn register(&mut self, domain: &str, op_type: &str, since: i64, builder: OpBuilder) {
        self.register_range(domain, op_type, since, i64::MAX, builder);
    }

    /// Registers `builder` for opset versions `since..=until`.
    pub fn register_range(
        &mut self,
        domain: &str,
        op_type: &str,
        since: i64,
        until: i64,
        builder: OpBuilder,
    ) {
        let list = self
            .entries
            .entry((canonical_domain(domain).to_string(), op_type.to_string()))
            .or_default();
        list.push(RegisteredOp {
            since,
            until,
            builder,
        });
        list.sort_by_key(|r| r.since);
    }

    /// The implementation for `op_type` at `opset`, if any.
    pub fn lookup(&self, domain: &str, op_type: &str, opset: i64) -> Option<&RegisteredOp> {
        self.entries
            .get(&(canonical_domain(domain).to_string(), op_type.to_string()))?
            .iter()
            .rev()
            .find(|r| r.since <= opset && opset <= r.until)
    }

    /// Builds the op for a node, or explains why none exists.
    pub fn build(&self, ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
        match self.lookup(ctx.domain, ctx.op_type, ctx.opset) {
            Some(r) => (r.builder)(ctx),
            None => Err(OpError::Unsupported(format!(
                "no kernel for op {}{} at opset {}",
                if ctx.domain.is_empty() {
                    String::new()
                } else {
                    format!("{}.", ctx.domain)
                },
                ctx.op_type,
                ctx.opset
            ))),
        }
    }

    /// Every registered (domain, op type) with its implementations, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &[RegisteredOp])> {
        self.entries
            .iter()
            .map(|((d, o), v)| (d.as_str(), o.as_str(), v.as_slice()))
    }
}

/// Defines a unit struct operator type with the boilerplate `Operator` methods filled in.
/// Used by kernel modules: `simple_op!(Relu, "Relu");` then implement `eval` via
/// `impl_eval!`-free style by writing the `Operator` impl by hand when more is needed.
#[macro_export]
macro_rules! op_boilerplate {
    ($name:literal) => {
        fn op_type(&self) -> &str {
            $name
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    };
}
