//! elementwise kernels.

use crate::OpRegistry;

/// Registers the elementwise ops.
pub fn register(_registry: &mut OpRegistry) {}
