//! Elementwise kernels: unary math and activations, binary ops with multidirectional
//! broadcasting, variadic folds and `Where`.
//!
//! Every kernel dispatches on the dtype once per call (through [`strata_tensor::dispatch_numeric!`]
//! and friends) and then runs a monomorphized closure over contiguous slices, so the inner
//! loops vectorize. Broadcasting goes through the reusable [`BroadcastPlan`] driver.
//!
//! Opset coverage: the binary ops of opsets 1–6 accept the legacy `broadcast`/`axis`
//! attributes ([`LegacyBroadcast`]); `Clip` takes attributes up to opset 10 and optional
//! inputs from 11; f16 and bf16 compute through f32.

mod binary;
mod broadcast;
pub mod num;
mod unary;
mod variadic;

pub use binary::{Binary, BinaryKind, LegacyBroadcast};
pub use broadcast::{
    broadcast_fact_shapes, chunk_len, unary_map, BroadcastPlan, MIN_PARALLEL_CHUNK,
};
pub use unary::{Clip, Unary, UnaryKind};
pub use variadic::{Variadic, VariadicKind, Where};

use crate::OpRegistry;

/// Registers the elementwise ops.
pub fn register(registry: &mut OpRegistry) {
    unary::register(registry);
    binary::register(registry);
    variadic::register(registry);
}

#[cfg(test)]
mod tests;
