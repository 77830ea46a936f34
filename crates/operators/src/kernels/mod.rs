//! CPU kernels, one module per op family. Each module has a `register` function that adds its
//! ops to the registry with the opset range each implementation covers.

pub mod control;
pub mod detection;
pub mod einsum;
pub mod elementwise;
pub mod flex_attention;
pub mod grid_sample;
pub mod linalg;
pub mod nn;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod select;
pub mod sequence;
pub mod shape;
pub mod string;

use crate::OpRegistry;

/// Registers every CPU kernel.
pub fn register_all(registry: &mut OpRegistry) {
    control::register(registry);
    detection::register(registry);
    einsum::register(registry);
    flex_attention::register(registry);
    elementwise::register(registry);
    grid_sample::register(registry);
    linalg::register(registry);
    nn::register(registry);
    quant::register(registry);
    reduce::register(registry);
    resize::register(registry);
    rnn::register(registry);
    select::register(registry);
    sequence::register(registry);
    shape::register(registry);
    string::register(registry);
}
