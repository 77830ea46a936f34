//! Shared pieces of Strata's benchmarks: locating and loading the test models
//! ([`testdata`]), summary statistics ([`stats`]), the ONNX accuracy rule used to check
//! outputs against the onnxruntime reference ([`accuracy`]), the in-process engines Strata
//! and tract ([`engines`]), onnxruntime through a Python worker ([`ort`]) and what the
//! report says about the machine ([`machine`]).
//!
//! The benchmarks themselves are the criterion benches `kernels` and `models`
//! (`cargo bench -p strata-benches`) and the `compare` binary, which times Strata against
//! onnxruntime and tract on the test models and writes a report (`cargo xtask bench`).

pub mod accuracy;
pub mod engines;
pub mod machine;
pub mod ort;
pub mod stats;
pub mod testdata;
