//! strata-onnx is the ONNX frontend: it decodes `ModelProto` bytes with the protobuf types of
//! tract-onnx (so no `protoc` is needed at build time), turns initializers and attribute
//! tensors into [`Tensor`]s, builds each node's operator through the [`OpRegistry`] keyed by
//! domain, op type and opset version, and assembles a validated [`strata_graph::Graph`].
//!
//! Nodes without a kernel load as [`strata_ops::Unimplemented`] so a model can always be
//! inspected; they fail when a session is created. Calls of model-local functions are inlined
//! before conversion; subgraph attributes (If/Loop/Scan bodies) are compiled at load into
//! `strata_graph::CompiledSubgraph`s whose outer-scope reads become implicit node inputs.
//! tract's types never leave this crate.
//!
//! Also here: reading and writing ONNX `TensorProto` files (`.pb` test data), including the
//! `SequenceProto` and `OptionalProto` containers of onnx's test suites.

#![forbid(unsafe_code)]

mod error;
mod functions;
mod load;
mod proto;

pub use error::OnnxError;
pub use functions::MAX_FUNCTION_DEPTH;
pub use load::{load_bytes, load_path, ModelMetadata, OnnxModel, ValueKind, MAX_SUBGRAPH_DEPTH};
pub use proto::{
    read_tensor_file, read_value_bytes, tensor_from_proto_bytes, tensor_to_proto_bytes,
    write_tensor_file,
};

#[doc(no_inline)]
pub use strata_ops::OpRegistry;
#[doc(no_inline)]
pub use strata_tensor::Tensor;

/// Result alias for the frontend.
pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
