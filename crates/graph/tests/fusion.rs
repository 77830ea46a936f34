//! The fusion passes on small graphs of real CPU ops: each rewrite is checked by the labels
//! of the nodes it leaves and by running the graph before and after optimization (within
//! 1e-5 relative), and the cases that must not fuse are checked to stay apart.

mod common;

use common::{op_with, run_planned, G};
use strata_graph::{passes, ExecutionPlan, Graph};
use strata_ops::kernels::nn::conv::Conv;
use strata_ops::{Attribute, Attributes};
use strata_tensor::Tensor;

/// Deterministic values in [-1, 1).
fn pattern(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn ints(values: &[i64]) -> Attribute {
    Attribute::Ints(values.to_vec())
}

fn attrs(list: &[(&str, Attribute)]) -> Attributes {
    let mut a = Attributes::new();
    for (name, value) in list {
        a.insert(name, value.clone());
    }
    a
}

impl G {
    fn op_node(
        &mut self,
        op_type: &str,
        a: Attributes,
        inputs: &[&str],
        output: &str,
    ) -> &mut Self {
        let op = op_with(op_type, a, inputs.len(), 1);
        self.node_op(output, op_type, op, inputs, &[output])
    }

    /// A Conv with constant weights `[m, c / group, k, k]` and bias, padding `k / 2`.
    fn conv(
        &mut self,
        x: &str,
        out: &str,
        c: usize,
        m: usize,
        k: usize,
        group: usize,
    ) -> &mut Self {
        let w = format!("{out}.w");
        let b = format!("{out}.b");
        let wshape = [m, c / group, k, k];
        self.constant_shaped(&w, &pattern(wshape.iter().product(), 7 + m as u32), &wshape);
        self.constant(&b, &pattern(m, 3));
        let p = (k / 2) as i64;
        let a = attrs(&[
            ("kernel_shape", ints(&[k as i64, k as i64])),
            ("pads", ints(&[p, p, p, p])),
            ("group", Attribute::Int(group as i64)),
        ]);
        self.op_node("Conv", a, &[x, &w, &b], out)
    }

    /// An inference BatchNormalization over `c` channels with constant statistics.
    fn batch_norm(&mut self, x: &str, out: &str, c: usize) -> &mut Self {
        let names: Vec<String> = ["scale", "bias", "mean", "var"]
            .iter()
            .map(|p| format!("{out}.{p}"))
            .collect();
        self.constant(&names[0], &pattern(c, 11));
        self.constant(&names[1], &pattern(c, 12));
        self.constant(&names[2], &pattern(c, 13));
        let var: Vec<f32> = pattern(c, 14).iter().map(|v| v.abs() + 0.5).collect();
        self.constant(&names[3], &var);
        let inputs: Vec<&str> = std::iter::once(x)
            .chain(names.iter().map(String::as_str))
            .collect();
        self.op_node(
            "BatchNormalization",
            attrs(&[("epsilon", Attribute::Float(1e-3))]),
            &inputs,
            out,
        )
    }
}

/// Optimizes a copy of `graph`; checks it computes what `graph` computes on `inputs`
/// and returns the optimized graph's node labels.
fn optimize_and_compare(graph: &Graph, inputs: &[(&str, Tensor)]) -> Vec<String> {
    let mut optimized = graph.clone();
    passes::optimize(&mut optimized).unwrap();
    passes::prepack_for_cpu(&mut optimized).unwrap();
    for threads in [1, 3] {
        let want = run_planned(graph, &ExecutionPlan::new(graph).unwrap(), inputs, threads);
        let got = run_planned(
            &optimized,
            &ExecutionPlan::new(&optimized).unwrap(),
            inputs,
            threads,
        );
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.len(), g.len());
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-5 * a.abs(),
                    "element {i}: unoptimized {a}, optimized {b}"
                );
            }
        }
    }
    let mut labels: Vec<String> = optimized.nodes.iter().map(|n| n.op_type.clone()).collect();
    labels.sort();
    labels
}

fn image(shape: &[usize], seed: u32) -> Tensor {
    Tensor::from_slice(&pattern(shape.iter().product(), seed), shape).unwrap()
}

#[test]
fn conv_batchnorm_relu_becomes_one_conv() {
    let mut g = G::new();
    g.input("x", &[2, 3, 8, 8]);
    g.conv("x", "y", 3, 4, 3, 1).batch_norm("y", "bn", 4);
    g.op_node("Relu", Attributes::new(), &["bn"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[2, 3, 8, 8], 1))]);
    assert_eq!(labels, ["Conv+Relu"]);
}

#[test]
fn depthwise_conv_batchnorm_relu6_fuses() {
    let mut g = G::new();
    g.input("x", &[1, 6, 7, 7]);
    g.conv("x", "y", 6, 6, 3, 6).batch_norm("y", "bn", 6);
    g.constant("zero", &[0.0]).constant("six", &[6.0]);
    g.op_node("Clip", Attributes::new(), &["bn", "zero", "six"], "out");
    g.outputs(&["out"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[1, 6, 7, 7], 2))]);
    assert_eq!(labels, ["Conv+Clip"]);
}

#[test]
fn residual_add_and_relu_fuse_into_the_conv() {
    for add in ["Add", "Sum"] {
        let mut g = G::new();
        g.input("x", &[2, 4, 6, 6]);
        g.conv("x", "a", 4, 4, 1, 1).conv("a", "b", 4, 4, 3, 1);
        g.op_node(add, Attributes::new(), &["x", "b"], "sum");
        g.op_node("Relu", Attributes::new(), &["sum"], "out")
            .outputs(&["out"]);
        let graph = g.build().unwrap();
        let labels = optimize_and_compare(&graph, &[("x", image(&[2, 4, 6, 6], 3))]);
        assert_eq!(labels, ["Conv", "Conv+Add+Relu"], "{add}");
    }
}

#[test]
fn grouped_conv_with_fused_sum_matches() {
    let mut g = G::new();
    g.input("x", &[1, 8, 5, 5]).input("r", &[1, 8, 5, 5]);
    g.conv("x", "y", 8, 8, 3, 2);
    g.op_node("Add", Attributes::new(), &["y", "r"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let inputs = [
        ("x", image(&[1, 8, 5, 5], 4)),
        ("r", image(&[1, 8, 5, 5], 5)),
    ];
    assert_eq!(optimize_and_compare(&graph, &inputs), ["Conv+Add"]);
}

#[test]
fn broadcasting_add_does_not_fuse_into_the_conv() {
    let mut g = G::new();
    g.input("x", &[1, 4, 5, 5]).input("r", &[1, 4, 1, 1]);
    g.conv("x", "y", 4, 4, 3, 1);
    g.op_node("Add", Attributes::new(), &["y", "r"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let inputs = [
        ("x", image(&[1, 4, 5, 5], 4)),
        ("r", image(&[1, 4, 1, 1], 5)),
    ];
    assert_eq!(optimize_and_compare(&graph, &inputs), ["Add", "Conv"]);
}

#[test]
fn values_read_elsewhere_are_not_fused() {
    // The conv output is also a graph output, and the BN output has two readers.
    let mut g = G::new();
    g.input("x", &[1, 3, 6, 6]);
    g.conv("x", "y", 3, 4, 3, 1);
    g.op_node("Relu", Attributes::new(), &["y"], "r");
    g.conv("x", "z", 3, 4, 1, 1).batch_norm("z", "bn", 4);
    g.op_node("Sigmoid", Attributes::new(), &["bn"], "s");
    g.op_node("Tanh", Attributes::new(), &["bn"], "t");
    g.outputs(&["y", "r", "s", "t"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[1, 3, 6, 6], 6))]);
    assert_eq!(labels, ["Conv", "Conv", "Relu", "Sigmoid", "Tanh"]);
}

#[test]
fn clip_with_a_runtime_bound_is_not_fused() {
    let mut g = G::new();
    g.input("x", &[1, 2, 4, 4]).input("hi", &[]);
    g.conv("x", "y", 2, 2, 3, 1);
    g.op_node("Clip", Attributes::new(), &["y", "", "hi"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let inputs = [
        ("x", image(&[1, 2, 4, 4], 8)),
        ("hi", Tensor::scalar(0.25f32)),
    ];
    assert_eq!(optimize_and_compare(&graph, &inputs), ["Clip", "Conv"]);
}

/// `x [2, 5, 16] @ w [16, 24] + b`, then the GELU spelled out in primitive ops in one of
/// its two usual orders.
fn matmul_gelu_graph(half_first: bool) -> Graph {
    let mut g = G::new();
    g.input("x", &[2, 5, 16]);
    g.constant_shaped("w", &pattern(16 * 24, 21), &[16, 24]);
    g.constant("b", &pattern(24, 22));
    g.constant("sqrt2", &[std::f32::consts::SQRT_2])
        .constant("one", &[1.0])
        .constant("half", &[0.5]);
    let none = Attributes::new;
    g.op_node("MatMul", none(), &["x", "w"], "mm");
    g.op_node("Add", none(), &["b", "mm"], "h");
    g.op_node("Div", none(), &["h", "sqrt2"], "scaled");
    g.op_node("Erf", none(), &["scaled"], "erf");
    g.op_node("Add", none(), &["erf", "one"], "onep");
    if half_first {
        g.op_node("Mul", none(), &["onep", "half"], "gate");
        g.op_node("Mul", none(), &["h", "gate"], "out");
    } else {
        g.op_node("Mul", none(), &["h", "onep"], "prod");
        g.op_node("Mul", none(), &["prod", "half"], "out");
    }
    g.outputs(&["out"]);
    g.build().unwrap()
}

#[test]
fn matmul_bias_and_spelled_out_gelu_become_one_matmul() {
    for half_first in [true, false] {
        let graph = matmul_gelu_graph(half_first);
        let labels = optimize_and_compare(&graph, &[("x", image(&[2, 5, 16], 9))]);
        assert_eq!(labels, ["MatMul+Add+Gelu"], "half first: {half_first}");
    }
}

#[test]
fn activations_fuse_into_gemm_and_matmul() {
    let alpha = || attrs(&[("alpha", Attribute::Float(0.2))]);
    for (act, a) in [
        ("Relu", Attributes::new()),
        ("Sigmoid", Attributes::new()),
        ("HardSigmoid", alpha()),
        ("HardSwish", Attributes::new()),
        ("LeakyRelu", alpha()),
    ] {
        let mut g = G::new();
        g.input("x", &[3, 8]);
        g.constant_shaped("w", &pattern(8 * 5, 31), &[8, 5]);
        g.constant("c", &pattern(5, 32));
        g.op_node("Gemm", Attributes::new(), &["x", "w", "c"], "y");
        g.op_node(act, a.clone(), &["y"], "gy");
        g.op_node("MatMul", Attributes::new(), &["x", "w"], "m");
        g.op_node(act, a, &["m"], "my");
        g.outputs(&["gy", "my"]);
        let graph = g.build().unwrap();
        let labels = optimize_and_compare(&graph, &[("x", image(&[3, 8], 10))]);
        assert_eq!(labels, [format!("Gemm+{act}"), format!("MatMul+{act}")]);
    }
}

#[test]
fn bias_of_higher_rank_than_the_product_is_not_fused() {
    // [1, 1, 5] + [3, 5] broadcasts to [1, 3, 5]: a fused bias would lose the extra axis.
    let mut g = G::new();
    g.input("x", &[3, 8]);
    g.constant_shaped("w", &pattern(40, 41), &[8, 5]);
    g.constant_shaped("b", &pattern(5, 42), &[1, 1, 5]);
    g.op_node("MatMul", Attributes::new(), &["x", "w"], "m");
    g.op_node("Add", Attributes::new(), &["m", "b"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[3, 8], 11))]);
    assert_eq!(labels, ["Add", "MatMul"]);
}

#[test]
fn bias_after_a_matrix_vector_product_is_not_fused() {
    // [2, 3, 8] @ [8] is [2, 3]; adding a [3] constant is not a bias along B's columns.
    let mut g = G::new();
    g.input("x", &[2, 3, 8]);
    g.constant("v", &pattern(8, 51))
        .constant("b", &pattern(3, 52));
    g.op_node("MatMul", Attributes::new(), &["x", "v"], "m");
    g.op_node("Add", Attributes::new(), &["m", "b"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[2, 3, 8], 12))]);
    assert_eq!(labels, ["Add", "MatMul"]);
}

#[test]
fn conv_weights_are_prepacked_and_the_unpacked_copy_dropped() {
    let mut g = G::new();
    g.input("x", &[1, 4, 6, 6]);
    // A dense conv, a depthwise conv (not prepacked: it does not use the GEMM) and a second
    // dense conv sharing the first one's weights.
    g.conv("x", "a", 4, 4, 3, 1).conv("a", "d", 4, 4, 3, 4);
    let a = attrs(&[
        ("kernel_shape", ints(&[3, 3])),
        ("pads", ints(&[1, 1, 1, 1])),
    ]);
    g.op_node("Conv", a, &["d", "a.w", "a.b"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    optimize_and_compare(&graph, &[("x", image(&[1, 4, 6, 6], 9))]);
    let mut optimized = graph.clone();
    passes::optimize(&mut optimized).unwrap();
    let applied = passes::prepack_for_cpu(&mut optimized).unwrap();
    assert!(applied.contains(&"conv-weight-prepacking"), "{applied:?}");
    let convs: Vec<&Conv> = optimized
        .nodes
        .iter()
        .filter_map(|n| n.op.as_any().downcast_ref::<Conv>())
        .collect();
    let packed = convs.iter().filter(|c| c.prepacked.is_some()).count();
    assert_eq!((convs.len(), packed), (3, 2));
    let constant = |name: &str| {
        optimized
            .value_id(name)
            .is_some_and(|v| optimized.constants.contains_key(&v))
    };
    assert!(
        !constant("a.w"),
        "the shared weights are dropped once both convs are packed"
    );
    assert!(constant("d.w"), "depthwise weights stay");
}

#[test]
fn per_channel_mul_and_add_fold_into_the_conv() {
    // Conv -> BN -> Mul -> Add -> Relu, the affine channel layer as exporters write it.
    let mut g = G::new();
    g.input("x", &[1, 3, 6, 6]);
    g.conv("x", "y", 3, 5, 3, 1).batch_norm("y", "bn", 5);
    g.constant_shaped("s", &pattern(5, 21), &[5, 1, 1]);
    g.constant_shaped("t", &pattern(5, 22), &[1, 5, 1, 1]);
    g.op_node("Mul", Attributes::new(), &["bn", "s"], "scaled");
    g.op_node("Add", Attributes::new(), &["t", "scaled"], "shifted");
    g.op_node("Relu", Attributes::new(), &["shifted"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[1, 3, 6, 6], 23))]);
    assert_eq!(labels, ["Conv+Relu"]);
}

#[test]
fn batchnorm_absorbs_a_channel_affine_and_its_activation() {
    // Pre-activation: BN -> Mul -> Add -> Relu -> Conv.
    let mut g = G::new();
    g.input("x", &[2, 4, 5, 5]);
    g.batch_norm("x", "bn", 4);
    g.constant_shaped("s", &pattern(4, 24), &[4, 1, 1]);
    g.constant("t", &[0.25]);
    g.op_node("Mul", Attributes::new(), &["bn", "s"], "scaled");
    g.op_node("Add", Attributes::new(), &["scaled", "t"], "shifted");
    g.op_node("Relu", Attributes::new(), &["shifted"], "act");
    g.conv("act", "out", 4, 3, 1, 1).outputs(&["out"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[2, 4, 5, 5], 25))]);
    assert_eq!(labels, ["BatchNormalization+Relu", "Conv"]);
}

#[test]
fn a_mul_that_varies_along_the_width_is_not_folded() {
    let mut g = G::new();
    g.input("x", &[1, 3, 4, 4]);
    g.conv("x", "y", 3, 3, 1, 1);
    g.constant_shaped("s", &pattern(4, 26), &[1, 1, 1, 4]);
    g.op_node("Mul", Attributes::new(), &["y", "s"], "out")
        .outputs(&["out"]);
    let graph = g.build().unwrap();
    let labels = optimize_and_compare(&graph, &[("x", image(&[1, 3, 4, 4], 27))]);
    assert_eq!(labels, ["Conv", "Mul"]);
}

#[test]
fn symbolic_batch_and_size_keep_facts_and_fusions() {
    use strata_graph::infer::infer_facts;
    use strata_ops::{Dim, Fact};
    let sym = |s: &str| Dim::Symbol(s.into());
    let mut g = G::new();
    // A free batch (dtype and every other size follow it) and a free height (a strided conv
    // makes it an unknown function of the symbol: the shape is dropped, the dtype kept).
    g.b.input(
        "x",
        Fact {
            dtype: Some(strata_tensor::DType::F32),
            shape: Some(vec![sym("batch"), Dim::Known(3), sym("h"), Dim::Known(8)]),
            value: None,
        },
    );
    g.conv("x", "y", 3, 4, 3, 1);
    g.op_node("Relu", Attributes::new(), &["y"], "r");
    let strided = attrs(&[("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2]))]);
    g.constant_shaped("w2", &pattern(4 * 4 * 9, 5), &[4, 4, 3, 3]);
    g.op_node("Conv", strided, &["r", "w2"], "s");
    g.op_node("Relu", Attributes::new(), &["s"], "out")
        .outputs(&["out"]);
    let mut graph = g.build().unwrap();
    infer_facts(&mut graph).unwrap();
    let fact = |name: &str| graph.values[graph.value_id(name).unwrap()].fact.clone();
    assert_eq!(
        fact("r").shape,
        Some(vec![sym("batch"), Dim::Known(4), sym("h"), Dim::Known(8)])
    );
    assert_eq!(fact("out").dtype, Some(strata_tensor::DType::F32));
    assert_eq!(fact("out").shape, None);
    let labels = optimize_and_compare(&graph, &[("x", image(&[2, 3, 9, 8], 1))]);
    assert_eq!(labels, ["Conv+Relu", "Conv+Relu"]);
}

/// A graph on `x: [batch, 3, 6, 6]`: Conv+Relu, then `tail` adds nodes from "r" to "out".
fn batch_graph(tail: impl FnOnce(&mut G)) -> Graph {
    use strata_ops::{Dim, Fact};
    let mut g = G::new();
    g.b.input(
        "x",
        Fact {
            dtype: Some(strata_tensor::DType::F32),
            shape: Some(vec![
                Dim::Symbol("batch".into()),
                Dim::Known(3),
                Dim::Known(6),
                Dim::Known(6),
            ]),
            value: None,
        },
    );
    g.conv("x", "y", 3, 4, 3, 1);
    g.op_node("Relu", Attributes::new(), &["y"], "r");
    tail(&mut g);
    g.outputs(&["out"]);
    let mut graph = g.build().unwrap();
    passes::optimize(&mut graph).unwrap();
    passes::prepack_for_cpu(&mut graph).unwrap();
    graph
}

#[test]
fn batch_independence_needs_item_wise_ops_and_the_batch_symbol_everywhere() {
    use strata_graph::batch::{batch_axis, BatchAxis};
    let softmax = |axis: i64| {
        move |g: &mut G| {
            g.op_node(
                "Softmax",
                attrs(&[("axis", Attribute::Int(axis))]),
                &["r"],
                "out",
            );
        }
    };
    // Per item: the largest value is the conv output, 4 x 6 x 6 floats.
    assert_eq!(
        batch_axis(&batch_graph(softmax(1))),
        Some(BatchAxis {
            symbol: "batch".into(),
            largest_item_bytes: 4 * 36 * 4,
        })
    );
    assert_eq!(
        batch_axis(&batch_graph(softmax(-3))),
        batch_axis(&batch_graph(softmax(1)))
    );
    // Mixing items: a softmax over the batch axis, a sum over it, a transpose moving it.
    assert_eq!(batch_axis(&batch_graph(softmax(0))), None);
    assert_eq!(batch_axis(&batch_graph(softmax(-4))), None);
    let reduce = |g: &mut G| {
        let a = attrs(&[("axes", ints(&[0])), ("keepdims", Attribute::Int(1))]);
        g.op_node("ReduceSum", a, &["r"], "out");
    };
    assert_eq!(batch_axis(&batch_graph(reduce)), None);
    let transpose = |g: &mut G| {
        g.op_node(
            "Transpose",
            attrs(&[("perm", ints(&[1, 0, 2, 3]))]),
            &["r"],
            "out",
        );
    };
    assert_eq!(batch_axis(&batch_graph(transpose)), None);
    // A fixed batch has nothing to split.
    let mut g = G::new();
    g.input("x", &[2, 3, 6, 6]);
    g.conv("x", "out", 3, 4, 3, 1).outputs(&["out"]);
    let mut fixed = g.build().unwrap();
    passes::optimize(&mut fixed).unwrap();
    assert_eq!(batch_axis(&fixed), None);
}

#[test]
fn batch_stages_cut_where_one_value_carries_on_and_items_shrink() {
    use strata_graph::batch::batch_stages;
    use strata_graph::ExecutionPlan;
    // Conv+Relu (4 x 6 x 6 floats per item), MaxPool (4 x 3 x 3), a 3x3 Conv (4 x 3 x 3,
    // 144 weights: more than twice the pool's bytes per item), then the pool's output
    // added back.
    let pool = || attrs(&[("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))]);
    let graph = batch_graph(|g| {
        g.op_node("MaxPool", pool(), &["r"], "p");
        g.conv("p", "q", 4, 4, 3, 1);
        g.op_node("Add", Attributes::new(), &["p", "q"], "out");
    });
    let order = ExecutionPlan::new(&graph).unwrap().order;
    let (conv, pooled) = (4 * 36 * 4, 4 * 9 * 4);
    let shapes = |budget: usize| -> Vec<(usize, usize)> {
        let stages = batch_stages(&graph, &order, budget);
        // The stages cover the plan in order and hand one value each to the next.
        let ids: Vec<_> = stages.iter().flat_map(|s| s.node_ids.clone()).collect();
        assert_eq!(ids, order);
        assert_eq!(stages[0].graph.inputs, graph.inputs);
        assert_eq!(stages.last().unwrap().graph.outputs, graph.outputs);
        for pair in stages.windows(2) {
            assert_eq!(pair[0].graph.outputs, pair[1].graph.inputs);
            assert_eq!(pair[0].graph.outputs.len(), 1);
        }
        for s in &stages {
            s.graph.validate().unwrap();
        }
        stages
            .iter()
            .map(|s| (s.node_ids.len(), s.largest_item_bytes))
            .collect()
    };
    // One item of the conv's output per sub-batch, four of the pool's: a cut after the conv
    // only (the Add fuses into the 1x1 as its sum; its values are as large as the pool's).
    assert_eq!(shapes(conv), [(1, conv), (2, pooled)]);
    // A budget that fits the conv's output twice: the pool's 8 times, still a cut.
    assert_eq!(shapes(2 * conv), [(1, conv), (2, pooled)]);
    // Budgets under an item everywhere: one item per sub-batch throughout, no cut.
    assert_eq!(shapes(1), [(3, conv)]);
    // The same pool with no weights after it (nothing for more items per pass to share):
    // no cut, which would only copy the pool's output.
    let weightless = batch_graph(|g| {
        g.op_node("MaxPool", pool(), &["r"], "p");
        g.op_node("Sigmoid", Attributes::new(), &["p"], "out");
    });
    let order = ExecutionPlan::new(&weightless).unwrap().order;
    assert_eq!(batch_stages(&weightless, &order, conv).len(), 1);
    // Not batch-independent: no stages.
    let mut g = G::new();
    g.input("x", &[2, 3, 6, 6]);
    g.conv("x", "out", 3, 4, 3, 1).outputs(&["out"]);
    let mut fixed = g.build().unwrap();
    passes::optimize(&mut fixed).unwrap();
    let order = ExecutionPlan::new(&fixed).unwrap().order;
    assert!(batch_stages(&fixed, &order, 1 << 20).is_empty());
}

#[test]
fn constant_matmul_operands_are_prepacked_and_dropped() {
    use strata_ops::kernels::linalg::FusedMatMul;
    // Two MatMuls share `w` (K = 600: several K blocks), one with a bias and Relu; `v` is a
    // graph input and stays unpacked.
    let mut g = G::new();
    g.input("x", &[2, 20, 600]).input("v", &[600, 3]);
    g.constant_shaped("w", &pattern(600 * 70, 61), &[600, 70]);
    g.constant("b", &pattern(70, 62));
    g.op_node("MatMul", Attributes::new(), &["x", "w"], "m1");
    g.op_node("MatMul", Attributes::new(), &["x", "w"], "m2");
    g.op_node("Add", Attributes::new(), &["m2", "b"], "a2");
    g.op_node("Relu", Attributes::new(), &["a2"], "r2");
    g.op_node("MatMul", Attributes::new(), &["x", "v"], "m3");
    g.outputs(&["m1", "r2", "m3"]);
    let graph = g.build().unwrap();
    let inputs = [("x", image(&[2, 20, 600], 13)), ("v", image(&[600, 3], 14))];
    let labels = optimize_and_compare(&graph, &inputs);
    assert_eq!(labels, ["MatMul", "MatMul", "MatMul+Add+Relu"]);
    let mut optimized = graph.clone();
    passes::optimize(&mut optimized).unwrap();
    let applied = passes::prepack_for_cpu(&mut optimized).unwrap();
    assert!(applied.contains(&"matmul-weight-prepacking"), "{applied:?}");
    let packed = |n: &strata_graph::Node| {
        n.op.as_any()
            .downcast_ref::<FusedMatMul>()
            .is_some_and(|m| m.packed_b.is_some())
    };
    assert_eq!(optimized.nodes.iter().filter(|n| packed(n)).count(), 2);
    let w = optimized.value_id("w").unwrap();
    assert!(
        !optimized.constants.contains_key(&w),
        "unpacked weights kept"
    );
}

impl G {
    /// ShuffleNet's channel shuffle of `x` (`[n, m, h, w]`) in `s` groups: Reshape to
    /// `[n, s, m / s, h, w]`, Transpose with `perm`, Reshape back; the 5-D values are
    /// named `{out}.split` and `{out}.swapped`.
    fn shuffle(&mut self, x: &str, out: &str, shape: [usize; 4], s: usize, perm: &[i64]) {
        let [n, m, h, w] = shape;
        let split = [n, s, m / s, h, w].map(|d| d as i64);
        let (split_shape, merge_shape) = (format!("{out}.split_shape"), format!("{out}.shape"));
        let i64s = |v: &[i64]| Tensor::from_slice(v, &[v.len()]).unwrap();
        self.b.constant(&split_shape, i64s(&split));
        self.b
            .constant(&merge_shape, i64s(&shape.map(|d| d as i64)));
        let (split, swapped) = (format!("{out}.split"), format!("{out}.swapped"));
        self.op_node("Reshape", Attributes::new(), &[x, &split_shape], &split);
        self.op_node(
            "Transpose",
            attrs(&[("perm", ints(perm))]),
            &[&split],
            &swapped,
        );
        self.op_node("Reshape", Attributes::new(), &[&swapped, &merge_shape], out);
    }
}

/// A grouped 1x1 Conv+Relu (8 -> 16 channels, 4 groups) on `[2, 8, 6, 6]`, its output
/// shuffled in `s` groups by `perm`, then a depthwise 3x3; `also_output` is a graph output too.
fn shuffle_graph(s: usize, perm: &[i64], also_output: Option<&str>) -> Graph {
    let mut g = G::new();
    g.input("x", &[2, 8, 6, 6]);
    g.conv("x", "y", 8, 16, 1, 4);
    g.op_node("Relu", Attributes::new(), &["y"], "r");
    g.shuffle("r", "shuffled", [2, 16, 6, 6], s, perm);
    g.conv("shuffled", "out", 16, 16, 3, 16);
    let mut outputs = vec!["out"];
    outputs.extend(also_output);
    g.outputs(&outputs);
    g.build().unwrap()
}

#[test]
fn channel_shuffle_after_a_conv_becomes_its_output_shuffle() {
    let x = image(&[2, 8, 6, 6], 5);
    for s in [2, 4, 8] {
        let graph = shuffle_graph(s, &[0, 2, 1, 3, 4], None);
        let labels = optimize_and_compare(&graph, &[("x", x.clone())]);
        assert_eq!(labels, ["Conv", "Conv+Relu+ChannelShuffle"], "{s} groups");
    }
    // Another permutation, or a shuffle whose 5-D value is read elsewhere, stays apart.
    let graph = shuffle_graph(4, &[0, 1, 2, 4, 3], None);
    let labels = optimize_and_compare(&graph, &[("x", x.clone())]);
    assert_eq!(
        labels,
        ["Conv", "Conv+Relu", "Reshape", "Reshape", "Transpose"]
    );
    let graph = shuffle_graph(4, &[0, 2, 1, 3, 4], Some("shuffled.swapped"));
    let labels = optimize_and_compare(&graph, &[("x", x)]);
    assert_eq!(
        labels,
        ["Conv", "Conv+Relu", "Reshape", "Reshape", "Transpose"]
    );
}

#[test]
fn concatenated_conv_outputs_are_written_in_place() {
    // A fire module: squeeze, then 1x1 and 3x3 expansions concatenated (and a copy with a
    // max pool as the second part, which stays a Concat).
    for pooled in [false, true] {
        let mut g = G::new();
        g.input("x", &[2, 8, 7, 7]);
        g.conv("x", "s", 8, 4, 1, 1);
        g.op_node("Relu", Attributes::new(), &["s"], "sr");
        g.conv("sr", "e1", 4, 8, 1, 1);
        g.op_node("Relu", Attributes::new(), &["e1"], "e1r");
        if pooled {
            let pool = attrs(&[
                ("kernel_shape", ints(&[3, 3])),
                ("pads", ints(&[1, 1, 1, 1])),
                ("strides", ints(&[1, 1])),
            ]);
            g.op_node("MaxPool", pool, &["sr"], "e3r");
        } else {
            g.conv("sr", "e3", 4, 8, 3, 1);
            g.op_node("Relu", Attributes::new(), &["e3"], "e3r");
        }
        g.op_node(
            "Concat",
            attrs(&[("axis", Attribute::Int(1))]),
            &["e1r", "e3r"],
            "out",
        );
        g.outputs(&["out"]);
        let graph = g.build().unwrap();
        let labels = optimize_and_compare(&graph, &[("x", image(&[2, 8, 7, 7], 9))]);
        let want: &[&str] = match pooled {
            false => &["Concat(Conv+Relu,Conv+Relu)", "Conv+Relu"],
            true => &["Concat", "Conv+Relu", "Conv+Relu", "MaxPool"],
        };
        assert_eq!(labels, want);
    }
}
