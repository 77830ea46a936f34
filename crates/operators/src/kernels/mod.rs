//! CPU kernels, one module per op family. Each module has a `register` function that adds its
//! ops to the registry with the opset range each implementation covers.

pub mod attention;
pub mod control;
pub mod det;
pub mod detection;
pub mod einsum;
pub mod elementwise;
pub mod flex_attention;
pub mod fused;
pub mod gemm;
pub mod grid_sample;
pub mod image;
pub mod linalg;
pub mod loss;
pub mod lowp;
pub mod ml;
pub mod mt19937;
pub mod nn;
pub mod quant;
pub mod random;
pub mod recurrent;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod select;
pub mod seqaxis;
pub mod sequence;
pub mod shape;
pub mod signal;
pub(crate) mod simd;
mod staging;
pub mod string;
pub mod tfidf;
pub mod training;
pub mod transformer;

use crate::OpRegistry;

/// Registers every CPU kernel.
pub fn register_all(registry: &mut OpRegistry) {
    attention::register(registry);
    control::register(registry);
    det::register(registry);
    detection::register(registry);
    einsum::register(registry);
    elementwise::register(registry);
    flex_attention::register(registry);
    grid_sample::register(registry);
    image::register(registry);
    linalg::register(registry);
    loss::register(registry);
    ml::register(registry);
    nn::register(registry);
    quant::register(registry);
    random::register(registry);
    recurrent::register(registry);
    reduce::register(registry);
    resize::register(registry);
    rnn::register(registry);
    select::register(registry);
    seqaxis::register(registry);
    sequence::register(registry);
    shape::register(registry);
    signal::register(registry);
    string::register(registry);
    tfidf::register(registry);
    training::register(registry);
    transformer::register(registry);
}
