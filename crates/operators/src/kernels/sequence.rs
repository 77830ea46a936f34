//! sequence kernels.

use crate::OpRegistry;

/// Registers the sequence ops.
pub fn register(_registry: &mut OpRegistry) {}
