//! Shared pieces of Strata's benchmarks: locating and loading the test models
//! ([`testdata`]), summary statistics ([`stats`]) and the ONNX accuracy rule used to check
//! outputs against the onnxruntime reference ([`accuracy`]).
//!
//! The benchmarks themselves are the criterion benches `kernels` and `models`
//! (`cargo bench -p strata-benches`) and the `compare` binary, which times Strata against
//! tract on the test models and writes a report (`cargo xtask bench`).

pub mod accuracy;
pub mod stats;
pub mod testdata;
