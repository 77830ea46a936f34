//! linalg kernels.

use crate::OpRegistry;

/// Registers the linalg ops.
pub fn register(_registry: &mut OpRegistry) {}
