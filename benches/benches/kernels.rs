//! Single-kernel benchmarks: each op is built through the CPU op registry, exactly as the ONNX
//! loader builds it, and evaluated on one thread (`EvalCtx::default()`).
//!
//! Throughput is reported in elements/s where one "element" is one floating-point operation
//! (as counted by the op's own `flops`), so criterion's `Gelem/s` reads as GFLOP/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use strata_ops::{Attribute, Attributes, BuildCtx, EvalCtx, Fact, Inputs, OpRegistry, Operator};
use strata_tensor::{DType, Tensor};

/// Builds `op_type` at `opset` with `attrs` for a node with `inputs` inputs and one output.
fn build(
    registry: &OpRegistry,
    op_type: &str,
    opset: i64,
    attrs: &[(&str, Attribute)],
    inputs: usize,
) -> Box<dyn Operator> {
    let mut a = Attributes::new();
    for (name, value) in attrs {
        a.insert(name, value.clone());
    }
    registry
        .build(&BuildCtx {
            node_name: op_type,
            op_type,
            domain: "",
            opset,
            attrs: &a,
            input_count: inputs,
            output_count: 1,
        })
        .unwrap_or_else(|e| panic!("building {op_type}: {e}"))
}

/// A deterministic f32 tensor with values in [-1, 1) (a small LCG; no RNG dependency).
fn tensor(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let data = (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape).expect("shape matches data")
}

/// Benchmarks one op on `inputs` under `group/id`.
fn bench_op(c: &mut Criterion, group: &str, id: &str, op: &dyn Operator, inputs: &[Tensor]) {
    let facts: Vec<Fact> = inputs
        .iter()
        .map(|t| Fact::known(DType::F32, t.shape()))
        .collect();
    let flops = op.flops(&facts);
    // One evaluation up front: fails loudly if the op rejects the inputs.
    op.eval(&EvalCtx::default(), Inputs::from_tensors(inputs.to_vec()))
        .unwrap_or_else(|e| panic!("{group}/{id}: {e}"));
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    if flops > 0 {
        g.throughput(Throughput::Elements(flops));
    }
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        let ctx = EvalCtx::default();
        b.iter(|| {
            let out = op
                .eval(&ctx, Inputs::from_tensors(inputs.iter().cloned()))
                .expect("eval");
            black_box(out)
        })
    });
    g.finish();
}

fn ints(values: &[i64]) -> Attribute {
    Attribute::Ints(values.to_vec())
}

fn gemm(c: &mut Criterion) {
    let registry = OpRegistry::with_cpu_kernels();
    let matmul = build(&registry, "MatMul", 13, &[], 2);
    for n in [256, 1024] {
        let inputs = [tensor(&[n, n], 1), tensor(&[n, n], 2)];
        bench_op(c, "gemm_f32", &format!("{n}x{n}x{n}"), &*matmul, &inputs);
    }
}

fn conv(c: &mut Criterion) {
    let registry = OpRegistry::with_cpu_kernels();
    let conv = |kernel: i64, pad: i64, group: i64| {
        build(
            &registry,
            "Conv",
            11,
            &[
                ("kernel_shape", ints(&[kernel, kernel])),
                ("pads", ints(&[pad; 4])),
                ("group", Attribute::Int(group)),
            ],
            3,
        )
    };
    let op = conv(3, 1, 1);
    let inputs = [
        tensor(&[1, 64, 56, 56], 3),
        tensor(&[64, 64, 3, 3], 4),
        tensor(&[64], 5),
    ];
    bench_op(c, "conv", "3x3_64to64_56x56", &*op, &inputs);

    let op = conv(1, 0, 1);
    let inputs = [
        tensor(&[1, 256, 56, 56], 6),
        tensor(&[64, 256, 1, 1], 7),
        tensor(&[64], 8),
    ];
    bench_op(c, "conv", "1x1_256to64_56x56", &*op, &inputs);

    let op = conv(3, 1, 144);
    let inputs = [
        tensor(&[1, 144, 56, 56], 9),
        tensor(&[144, 1, 3, 3], 10),
        tensor(&[144], 11),
    ];
    bench_op(c, "conv", "depthwise3x3_144_56x56", &*op, &inputs);
}

fn softmax(c: &mut Criterion) {
    let registry = OpRegistry::with_cpu_kernels();
    let op = build(&registry, "Softmax", 13, &[("axis", Attribute::Int(-1))], 1);
    bench_op(c, "softmax", "1x1000", &*op, &[tensor(&[1, 1000], 12)]);
    // Attention scores: 4 heads of 128x128, normalized along the last axis.
    bench_op(
        c,
        "softmax",
        "4x128x128_heads",
        &*op,
        &[tensor(&[1, 4, 128, 128], 13)],
    );
}

fn layer_norm(c: &mut Criterion) {
    let registry = OpRegistry::with_cpu_kernels();
    let op = build(
        &registry,
        "LayerNormalization",
        17,
        &[
            ("axis", Attribute::Int(-1)),
            ("epsilon", Attribute::Float(1e-5)),
        ],
        3,
    );
    let inputs = [
        tensor(&[128, 256], 14),
        tensor(&[256], 15),
        tensor(&[256], 16),
    ];
    bench_op(c, "layer_norm", "128x256", &*op, &inputs);
}

criterion_group!(kernels, gemm, conv, softmax, layer_norm);
criterion_main!(kernels);
