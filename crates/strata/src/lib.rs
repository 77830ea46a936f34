//! Strata runs ONNX models. Load a [`Model`], create a [`Session`] with [`SessionOptions`],
//! and [`Session::run`] it on named tensors:
//!
//! ```no_run
//! use strata::{Model, SessionOptions, Tensor};
//! # fn main() -> Result<(), strata::StrataError> {
//! let model = Model::load("examples/models/digits.onnx")?;
//! let session = model.session(SessionOptions::default())?;
//! let pixels = Tensor::from_vec(vec![0.0f32; 64], &[1, 64])?;
//! let outputs = session.run([("pixels", pixels)])?;
//! println!("{:?}", outputs.get("label"));
//! # Ok(()) }
//! ```
//!
//! This crate is the facade: it wires the ONNX frontend, graph passes, memory pool and
//! scheduler together and re-exports the types users need. Each layer is its own crate and
//! can be used alone (see docs/architecture.md).

#![forbid(unsafe_code)]

mod error;
mod model;
mod session;

pub use error::StrataError;
pub use model::{IoInfo, Model};
pub use session::{Outputs, Session, SessionOptions, SUB_BATCH_BYTES};

pub use strata_graph::{Dim, Fact, Graph, GraphError};
pub use strata_memory::PoolStats;
pub use strata_onnx::{ModelMetadata, OnnxError, ValueKind};
pub use strata_ops::{OpRegistry, Value};
pub use strata_sched::{ExecError, Profile, ThreadPool};
pub use strata_tensor::{DType, Tensor, TensorError};

/// Tensor file formats: `.npy` and ONNX `TensorProto` `.pb`.
pub mod io {
    pub use strata_onnx::{
        read_tensor_file, read_value_bytes, tensor_from_proto_bytes, tensor_to_proto_bytes,
        write_tensor_file,
    };
    pub use strata_tensor::npy;
}

/// Result alias for the facade.
pub type Result<T, E = StrataError> = std::result::Result<T, E>;
