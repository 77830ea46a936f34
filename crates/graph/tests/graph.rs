//! The graph IR with real CPU kernels: validation errors, topological order, the standard
//! passes (each checked by running the graph before and after through the scheduler's
//! executor), and the execution plan's lifetimes, releases and memory slots.

mod common;

use common::{f32s, op, op_with, run_planned, G};
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_graph::passes::{self, ConstantFolding, DeadCodeElimination, IdentityElimination, Pass};
use strata_graph::{ExecutionPlan, Fact, Graph, GraphBuilder, GraphError, Operator, ValueId};
use strata_ops::{Attribute, Attributes, EvalCtx, Inputs, OpResult, Value};
use strata_tensor::{DType, Tensor};

/// Runs `graph` (planning it first and checking the plan) on named inputs with `threads`
/// threads; outputs as f32.
fn execute(graph: &Graph, inputs: &[(&str, Tensor)], threads: usize) -> Vec<Vec<f32>> {
    let plan = ExecutionPlan::new(graph).unwrap();
    check_plan(graph, &plan);
    run_planned(graph, &plan, inputs, threads)
}

fn node_names(graph: &Graph) -> Vec<&str> {
    graph.nodes.iter().map(|n| n.name.as_str()).collect()
}

/// Checks that `order` runs every node once, after the producers of its inputs.
fn check_order(graph: &Graph, order: &[usize]) {
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..graph.nodes.len()).collect::<Vec<_>>());
    let producers = graph.producers();
    let mut step_of = vec![0; graph.nodes.len()];
    for (step, &n) in order.iter().enumerate() {
        step_of[n] = step;
    }
    for (id, node) in graph.nodes.iter().enumerate() {
        for &v in node.inputs.iter().flatten() {
            if let Some(p) = producers[v] {
                assert!(
                    step_of[p] < step_of[id],
                    "{} before its producer",
                    node.name
                );
            }
        }
    }
}

/// Checks every invariant of an execution plan against the graph, computing lifetimes here
/// independently of the planner.
fn check_plan(graph: &Graph, plan: &ExecutionPlan) {
    check_order(graph, &plan.order);
    let producers = graph.producers();
    let mut step_of = vec![0; graph.nodes.len()];
    for (step, &n) in plan.order.iter().enumerate() {
        step_of[n] = step;
    }

    // Dependencies: distinct producer nodes.
    for (id, node) in graph.nodes.iter().enumerate() {
        let mut deps: Vec<usize> = node
            .inputs
            .iter()
            .flatten()
            .filter_map(|&v| producers[v])
            .collect();
        deps.sort_unstable();
        deps.dedup();
        assert_eq!(plan.dependency_count[id], deps.len(), "{}", node.name);
        for d in deps {
            assert!(plan.dependents[d].contains(&id));
        }
    }

    // Lifetimes: [producer step, last reader step].
    let mut life: BTreeMap<ValueId, (usize, usize)> = BTreeMap::new();
    for (v, p) in producers.iter().enumerate() {
        if let Some(p) = p {
            life.insert(v, (step_of[*p], step_of[*p]));
        }
    }
    for (id, node) in graph.nodes.iter().enumerate() {
        for &v in node.inputs.iter().flatten() {
            if let Some(l) = life.get_mut(&v) {
                l.1 = l.1.max(step_of[id]);
            }
        }
    }

    // Which values are planned, and each released once, right after its last reader.
    assert_eq!(plan.release_after.len(), plan.order.len());
    let mut released: BTreeMap<ValueId, usize> = BTreeMap::new();
    for (step, list) in plan.release_after.iter().enumerate() {
        for &v in list {
            assert!(
                released.insert(v, step).is_none(),
                "'{}' released twice",
                graph.values[v].name
            );
        }
    }
    for v in 0..graph.values.len() {
        let name = &graph.values[v].name;
        let intermediate = life.contains_key(&v) && !graph.outputs.contains(&v);
        assert_eq!(plan.planned[v], intermediate, "planned '{name}'");
        match (intermediate, released.get(&v)) {
            (true, Some(&step)) => assert_eq!(step, life[&v].1, "release of '{name}'"),
            (true, None) => panic!("intermediate '{name}' never released"),
            (false, Some(_)) => panic!("'{name}' (input, constant or output) released"),
            (false, None) => {}
        }
    }

    // Memory slots: values alive at the same time never share a slot, and each slot is as
    // large as every known-size value in it.
    let planned: Vec<ValueId> = (0..graph.values.len())
        .filter(|&v| plan.planned[v])
        .collect();
    for (i, &a) in planned.iter().enumerate() {
        let slot = plan.memory.slot_of[a];
        assert!(slot < plan.memory.slot_count());
        let fact = &graph.values[a].fact;
        if let (Some(d), Some(s)) = (fact.dtype, fact.concrete_shape()) {
            assert!(plan.memory.slot_bytes[slot] >= s.iter().product::<usize>() * d.size_of());
        }
        for &b in &planned[i + 1..] {
            let (la, lb) = (life[&a], life[&b]);
            if la.0 <= lb.1 && lb.0 <= la.1 {
                assert_ne!(
                    slot, plan.memory.slot_of[b],
                    "'{}' {la:?} and '{}' {lb:?} share a slot while both alive",
                    graph.values[a].name, graph.values[b].name
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[test]
fn undefined_value_names_node_op_and_value() {
    let mut g = G::new();
    g.input("x", &[2])
        .node("adder", "Add", &["x", "ghost"], "y")
        .outputs(&["y"]);
    match g.build().unwrap_err() {
        GraphError::UndefinedValue { node, op, value } => {
            assert_eq!(
                (node.as_str(), op.as_str(), value.as_str()),
                ("adder", "Add", "ghost")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unnamed_nodes_are_labelled_by_position() {
    let mut g = G::new();
    g.input("x", &[2])
        .node("first", "Relu", &["x"], "a")
        .node("", "Neg", &["missing"], "y")
        .outputs(&["y"]);
    let err = g.build().unwrap_err();
    assert!(
        matches!(&err, GraphError::UndefinedValue { node, .. } if node == "#1 (Neg)"),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn duplicate_producers_are_rejected() {
    let mut g = G::new();
    g.input("x", &[2])
        .node("a", "Relu", &["x"], "y")
        .node("b", "Neg", &["x"], "y")
        .outputs(&["y"]);
    assert!(matches!(g.build(), Err(GraphError::DuplicateValue(v)) if v == "y"));

    // A node may not overwrite a graph input or a constant either.
    let mut g = G::new();
    g.input("x", &[2])
        .node("a", "Relu", &["x"], "x")
        .outputs(&["x"]);
    assert!(matches!(g.build(), Err(GraphError::DuplicateValue(v)) if v == "x"));
    let mut g = G::new();
    g.input("x", &[2])
        .constant("c", &[1.0, 2.0])
        .node("a", "Relu", &["x"], "c")
        .outputs(&["c"]);
    assert!(matches!(g.build(), Err(GraphError::DuplicateValue(v)) if v == "c"));
}

#[test]
fn undefined_outputs_are_rejected() {
    let mut g = G::new();
    g.input("x", &[2])
        .node("a", "Relu", &["x"], "y")
        .outputs(&["y", "nowhere"]);
    let err = g.build().unwrap_err();
    assert!(matches!(&err, GraphError::UndefinedOutput(v) if v == "nowhere"));
    assert!(err.to_string().contains("nowhere"));

    // Inputs and constants count as defined outputs.
    let mut g = G::new();
    g.input("x", &[2])
        .constant("c", &[1.0, 2.0])
        .outputs(&["x", "c"]);
    let graph = g.build().unwrap();
    assert_eq!(
        execute(&graph, &[("x", f32s(&[5.0, 6.0]))], 1),
        [[5.0, 6.0], [1.0, 2.0]]
    );
}

#[test]
fn cycles_name_exactly_the_nodes_on_them() {
    let mut g = G::new();
    g.input("x", &[2])
        .node("upstream", "Relu", &["x"], "u")
        .node("loop_a", "Add", &["u", "b"], "a")
        .node("loop_b", "Neg", &["a"], "b")
        .node("downstream", "Relu", &["b"], "y")
        .outputs(&["y"]);
    let err = g.build().unwrap_err();
    match &err {
        GraphError::Cycle(nodes) => {
            let mut nodes = nodes.clone();
            nodes.sort();
            assert_eq!(nodes, ["loop_a", "loop_b"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("loop_a"));

    // A node reading its own output.
    let mut g = G::new();
    g.input("x", &[2])
        .node("selfish", "Add", &["x", "s"], "s")
        .outputs(&["s"]);
    assert!(matches!(g.build(), Err(GraphError::Cycle(n)) if n == ["selfish"]));

    // Two separate cycles are both reported.
    let mut g = G::new();
    g.input("x", &[2])
        .node("p", "Add", &["x", "q_out"], "p_out")
        .node("q", "Relu", &["p_out"], "q_out")
        .node("r", "Add", &["x", "r_out"], "r_out")
        .outputs(&["q_out"]);
    match g.unchecked().topological_order().unwrap_err() {
        GraphError::Cycle(mut nodes) => {
            nodes.sort();
            assert_eq!(nodes, ["p", "q", "r"]);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Topological order

#[test]
fn topological_order_follows_data_not_declaration() {
    // Declared backwards: d <- c <- b <- a, plus a diamond.
    let mut g = G::new();
    g.input("x", &[3])
        .node("d", "Add", &["b_out", "c_out"], "d_out")
        .node("c", "Neg", &["a_out"], "c_out")
        .node("b", "Relu", &["a_out"], "b_out")
        .node("a", "Relu", &["x"], "a_out")
        .outputs(&["d_out"]);
    let graph = g.build().unwrap();
    let order = graph.topological_order().unwrap();
    check_order(&graph, &order);
    assert_eq!(graph.nodes[order[0]].name, "a");
    assert_eq!(graph.nodes[order[3]].name, "d");
    // Deterministic.
    assert_eq!(order, graph.topological_order().unwrap());
    assert_eq!(
        execute(&graph, &[("x", f32s(&[1.0, -2.0, 3.0]))], 1),
        [[0.0, 0.0, 0.0]]
    );
}

#[test]
fn repeated_inputs_count_one_dependency() {
    let mut g = G::new();
    g.input("x", &[2])
        .node("a", "Relu", &["x"], "a_out")
        .node("sq", "Mul", &["a_out", "a_out"], "y")
        .outputs(&["y"]);
    let graph = g.build().unwrap();
    let plan = ExecutionPlan::new(&graph).unwrap();
    check_plan(&graph, &plan);
    let sq = graph.nodes.iter().position(|n| n.name == "sq").unwrap();
    assert_eq!(plan.dependency_count[sq], 1);
    assert_eq!(graph.consumers()[graph.value_id("a_out").unwrap()], [sq]);
    assert_eq!(
        execute(&graph, &[("x", f32s(&[3.0, -1.0]))], 2),
        [[9.0, 0.0]]
    );
}

// ---------------------------------------------------------------------------------------------
// Passes

#[test]
fn dead_code_elimination_removes_unreachable_nodes_and_constants() {
    let mut g = G::new();
    g.input("x", &[2])
        .input("unused_input", &[2])
        .constant("live_c", &[1.0, 1.0])
        .constant("dead_c", &[9.0, 9.0])
        .constant("never_read", &[0.0, 0.0])
        .node("live", "Add", &["x", "live_c"], "y")
        .node("dead1", "Mul", &["x", "dead_c"], "d1")
        .node("dead2", "Relu", &["d1"], "d2")
        .outputs(&["y"]);
    let mut graph = g.build().unwrap();
    let before = execute(&graph, &[("x", f32s(&[1.0, 2.0]))], 1);
    assert!(DeadCodeElimination.run(&mut graph).unwrap());
    assert_eq!(node_names(&graph), ["live"]);
    let constants: Vec<&str> = graph
        .constants
        .keys()
        .map(|&v| graph.values[v].name.as_str())
        .collect();
    assert_eq!(constants, ["live_c"]);
    // Graph inputs are part of the interface and stay.
    assert_eq!(graph.inputs.len(), 2);
    graph.validate().unwrap();
    assert!(
        !DeadCodeElimination.run(&mut graph).unwrap(),
        "second run changes nothing"
    );
    assert_eq!(execute(&graph, &[("x", f32s(&[1.0, 2.0]))], 1), before);
}

#[test]
fn constant_folding_precomputes_constant_subgraphs() {
    let mut g = G::new();
    g.input("x", &[3])
        .constant("c1", &[1.0, 2.0, 3.0])
        .constant("c2", &[10.0, 20.0, 30.0])
        .node("sum", "Add", &["c1", "c2"], "k")
        .node("neg", "Neg", &["k"], "nk")
        .node("scale", "Mul", &["x", "nk"], "y")
        .outputs(&["y"]);
    let graph = g.build().unwrap();
    let x = f32s(&[1.0, 0.5, -2.0]);
    let before = execute(&graph, &[("x", x.clone())], 1);
    assert_eq!(before, [[-11.0, -11.0, 66.0]]);

    let mut folded = graph.clone();
    assert!(ConstantFolding.run(&mut folded).unwrap());
    assert_eq!(node_names(&folded), ["scale"]);
    let nk = folded.value_id("nk").unwrap();
    assert_eq!(
        folded.constants[&nk].to_vec::<f32>().unwrap(),
        [-11.0, -22.0, -33.0]
    );
    assert_eq!(folded.values[nk].fact.concrete_shape(), Some(vec![3]));
    folded.validate().unwrap();
    assert_eq!(execute(&folded, &[("x", x.clone())], 1), before);
    assert!(!ConstantFolding.run(&mut folded).unwrap());

    // DCE then drops the inputs of the folded nodes.
    assert!(DeadCodeElimination.run(&mut folded).unwrap());
    assert_eq!(folded.constants.len(), 1);
    assert_eq!(execute(&folded, &[("x", x)], 1), before);
}

#[test]
fn fully_constant_graphs_fold_to_nothing() {
    let mut g = G::new();
    g.input("x", &[2])
        .constant("a", &[1.0, 2.0])
        .constant("b", &[3.0, 4.0])
        .node("add", "Add", &["a", "b"], "y")
        .outputs(&["y"]);
    let mut graph = g.build().unwrap();
    let applied = passes::optimize(&mut graph).unwrap();
    assert_eq!(applied, ["constant-folding", "dead-code-elimination"]);
    assert!(graph.nodes.is_empty());
    assert_eq!(
        execute(&graph, &[("x", f32s(&[0.0, 0.0]))], 1),
        [[4.0, 6.0]]
    );
}

/// A non-deterministic op: must never be folded.
#[derive(Debug)]
struct Dice;

impl Operator for Dice {
    fn op_type(&self) -> &str {
        "Dice"
    }
    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let t = inputs.tensor(0)?;
        Ok(vec![Value::Tensor(t.clone())])
    }
    fn is_deterministic(&self) -> bool {
        false
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[test]
fn constant_folding_skips_random_and_failing_nodes() {
    let mut g = G::new();
    g.input("x", &[2])
        .constant("c", &[1.0, 2.0])
        .node_op("dice", "Dice", Arc::new(Dice), &["c"], &["r"])
        .node("add", "Add", &["x", "r"], "y")
        .outputs(&["y"]);
    let mut graph = g.build().unwrap();
    assert!(!ConstantFolding.run(&mut graph).unwrap());
    assert_eq!(node_names(&graph), ["dice", "add"]);

    // A node that fails on its constants is left for inference to report, by name.
    let mut g = G::new();
    g.input("x", &[2])
        .constant("c3", &[1.0, 2.0, 3.0])
        .constant("c4", &[1.0, 2.0, 3.0, 4.0])
        .node("bad_add", "Add", &["c3", "c4"], "k")
        .node("use", "Add", &["x", "k"], "y")
        .outputs(&["y"]);
    let mut graph = g.build().unwrap();
    assert!(!ConstantFolding.run(&mut graph).unwrap());
    assert_eq!(graph.nodes.len(), 2);
    match passes::optimize(&mut graph).unwrap_err() {
        GraphError::Op { node, op, .. } => {
            assert_eq!((node.as_str(), op.as_str()), ("bad_add", "Add"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn identity_elimination_bypasses_pass_through_nodes() {
    let dropout = |outputs: usize| op_with("Dropout", Attributes::new(), 1, outputs);
    let mut g = G::new();
    g.input("x", &[2])
        .node("id1", "Identity", &["x"], "a")
        .node("id2", "Identity", &["a"], "b")
        .node("relu", "Relu", &["b"], "r")
        .node_op("drop", "Dropout", dropout(1), &["r"], &["d"])
        .node_op("drop_mask", "Dropout", dropout(2), &["d"], &["e", "mask"])
        .node_op(
            "drop_unread",
            "Dropout",
            dropout(2),
            &["e"],
            &["e2", "unread"],
        )
        .node("neg", "Neg", &["e2"], "n")
        .node("id_out", "Identity", &["n"], "y")
        .outputs(&["y", "mask"]);
    let graph = g.build().unwrap();
    let x = f32s(&[-1.0, 2.0]);
    let before = execute(&graph, &[("x", x.clone())], 1);

    let mut g2 = graph.clone();
    assert!(IdentityElimination.run(&mut g2).unwrap());
    // Identities, the mask-less Dropout and the one whose mask nothing reads go; the Dropout
    // whose mask is an output stays, as does the Identity producing a graph output.
    assert_eq!(node_names(&g2), ["relu", "drop_mask", "neg", "id_out"]);
    let relu = &g2.nodes[0];
    assert_eq!(relu.inputs, [g2.value_id("x")]);
    let drop_mask = &g2.nodes[1];
    assert_eq!(drop_mask.inputs, [g2.value_id("r")]);
    g2.validate().unwrap();
    assert_eq!(execute(&g2, &[("x", x)], 1), before);
    assert!(!IdentityElimination.run(&mut g2).unwrap());
}

#[test]
fn identity_elimination_keeps_other_domains() {
    let mut b = GraphBuilder::new();
    b.input("x", Fact::known(DType::F32, &[2]));
    b.node(
        "custom",
        "Identity",
        "com.example",
        op("Identity", 1),
        &["x"],
        &["a"],
    );
    b.node("relu", "Relu", "", op("Relu", 1), &["a"], &["y"]);
    b.outputs(&["y"]);
    let mut graph = b.build().unwrap();
    assert!(!IdentityElimination.run(&mut graph).unwrap());
    assert_eq!(graph.nodes.len(), 2);
}

#[test]
fn optimize_reports_passes_and_reaches_a_fixed_point() {
    let mut g = G::new();
    g.input("x", &[4])
        .constant("one", &[1.0; 4])
        .constant("two", &[2.0; 4])
        .node("id", "Identity", &["one"], "one_b")
        .node("three", "Add", &["one_b", "two"], "k")
        .node("mul", "Mul", &["x", "k"], "m")
        .node("dead", "Neg", &["m"], "unused")
        .node("out", "Relu", &["m"], "y")
        .outputs(&["y"]);
    let graph = g.build().unwrap();
    let x = f32s(&[-1.0, 0.0, 1.0, 2.0]);
    let before = execute(&graph, &[("x", x.clone())], 1);

    let mut optimized = graph.clone();
    let applied = passes::optimize(&mut optimized).unwrap();
    assert_eq!(
        applied,
        [
            "identity-elimination",
            "constant-folding",
            "dead-code-elimination"
        ]
    );
    assert_eq!(node_names(&optimized), ["mul", "out"]);
    assert_eq!(execute(&optimized, &[("x", x.clone())], 1), before);
    assert_eq!(execute(&optimized, &[("x", x)], 2), before);
    // Inference filled in the intermediate's fact.
    let m = optimized.value_id("m").unwrap();
    assert_eq!(optimized.values[m].fact.concrete_shape(), Some(vec![4]));
    assert_eq!(optimized.values[m].fact.dtype, Some(DType::F32));
    assert!(passes::optimize(&mut optimized).unwrap().is_empty());
}

#[test]
fn attributes_reach_folded_kernels() {
    // Transpose with a perm attribute on a constant folds to the transposed constant.
    let attrs = Attributes::new().with("perm", Attribute::Ints(vec![1, 0]));
    let mut b = GraphBuilder::new();
    b.input("x", Fact::known(DType::F32, &[3, 2]));
    b.constant(
        "c",
        Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap(),
    );
    b.node(
        "t",
        "Transpose",
        "",
        op_with("Transpose", attrs, 1, 1),
        &["c"],
        &["ct"],
    );
    b.node("add", "Add", "", op("Add", 2), &["x", "ct"], &["y"]);
    b.outputs(&["y"]);
    let graph = b.build().unwrap();
    let x = Tensor::from_vec(vec![0.0f32; 6], &[3, 2]).unwrap();
    let before = execute(&graph, &[("x", x.clone())], 1);
    assert_eq!(before, [[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]]);
    let mut optimized = graph.clone();
    passes::optimize(&mut optimized).unwrap();
    assert_eq!(node_names(&optimized), ["add"]);
    assert_eq!(execute(&optimized, &[("x", x)], 1), before);
}

// ---------------------------------------------------------------------------------------------
// Execution plans

#[test]
fn plan_releases_values_after_their_last_reader() {
    // x -> a -> b -> c -> y, and a is read again by the last node: a lives to the end.
    let mut g = G::new();
    g.input("x", &[8])
        .node("n0", "Relu", &["x"], "a")
        .node("n1", "Neg", &["a"], "b")
        .node("n2", "Relu", &["b"], "c")
        .node("n3", "Add", &["c", "a"], "y")
        .outputs(&["y"]);
    let mut graph = g.build().unwrap();
    // Sizes come from inferred facts.
    strata_graph::infer::infer_facts(&mut graph).unwrap();
    let plan = ExecutionPlan::new(&graph).unwrap();
    check_plan(&graph, &plan);
    let name = |v: usize| graph.values[v].name.as_str();
    let released: Vec<Vec<&str>> = plan
        .release_after
        .iter()
        .map(|l| l.iter().map(|&v| name(v)).collect())
        .collect();
    assert_eq!(released, [vec![], vec![], vec!["b"], vec!["a", "c"]]);
    // a, b, c: a overlaps both; b and c touch at step 2 (c is written while b is read).
    let slot = |n: &str| plan.memory.slot_of[graph.value_id(n).unwrap()];
    assert_ne!(slot("a"), slot("b"));
    assert_ne!(slot("a"), slot("c"));
    assert_ne!(slot("b"), slot("c"));
    assert_eq!(plan.memory.slot_count(), 3);
    assert_eq!(plan.memory.total_bytes(), 3 * 8 * 4);
}

#[test]
fn long_chains_need_two_slots() {
    let mut g = G::new();
    g.input("x", &[16]);
    let names: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let mut prev = "x".to_string();
    for (i, n) in names.iter().enumerate() {
        g.node(
            &format!("n{i}"),
            if i % 2 == 0 { "Relu" } else { "Neg" },
            &[&prev],
            n,
        );
        prev = n.clone();
    }
    g.outputs(&[&prev]);
    let graph = g.build().unwrap();
    let plan = ExecutionPlan::new(&graph).unwrap();
    check_plan(&graph, &plan);
    // Nine intermediates alternate between two slots.
    assert_eq!(plan.memory.slot_count(), 2);
    assert_eq!(
        execute(&graph, &[("x", f32s(&[1.0; 16]))], 1),
        [vec![0.0f32; 16]]
    );
}

/// A small deterministic generator (no rand dependency in this crate).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random DAG over [4]-shaped f32 values: inputs, constants and nodes of bounded ops that
/// read any earlier value; nodes are stored shuffled so order must come from the data.
fn random_graph(seed: u64) -> (Graph, Vec<(String, Tensor)>) {
    let mut rng = Lcg(seed);
    let mut b = GraphBuilder::new();
    let mut values: Vec<String> = Vec::new();
    let mut inputs = Vec::new();
    for i in 0..1 + rng.below(3) {
        let name = format!("in{i}");
        b.input(&name, Fact::known(DType::F32, &[4]));
        let data: Vec<f32> = (0..4)
            .map(|_| rng.below(200) as f32 / 100.0 - 1.0)
            .collect();
        inputs.push((name.clone(), f32s(&data)));
        values.push(name);
    }
    for i in 0..rng.below(4) {
        let name = format!("c{i}");
        let data: Vec<f32> = (0..4)
            .map(|_| rng.below(200) as f32 / 100.0 - 1.0)
            .collect();
        b.constant(&name, f32s(&data));
        values.push(name);
    }
    const OPS: [(&str, usize); 8] = [
        ("Add", 2),
        ("Mul", 2),
        ("Sub", 2),
        ("Relu", 1),
        ("Neg", 1),
        ("Tanh", 1),
        ("Sigmoid", 1),
        ("Identity", 1),
    ];
    let count = 3 + rng.below(30);
    let mut nodes = Vec::new();
    let mut produced = Vec::new();
    for i in 0..count {
        let (op_type, arity) = OPS[rng.below(OPS.len())];
        let args: Vec<String> = (0..arity)
            .map(|_| {
                // Prefer recent values to get depth, sometimes reach far back.
                let n = values.len();
                let back = if rng.below(3) == 0 {
                    rng.below(n)
                } else {
                    rng.below(n.min(3))
                };
                values[n - 1 - back].clone()
            })
            .collect();
        let out = format!("v{i}");
        nodes.push((format!("n{i}"), op_type, arity, args, out.clone()));
        values.push(out.clone());
        produced.push(out);
    }
    // Shuffle the declaration order.
    for i in (1..nodes.len()).rev() {
        let j = rng.below(i + 1);
        nodes.swap(i, j);
    }
    for (name, op_type, arity, args, out) in &nodes {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        b.node(name, op_type, "", op(op_type, *arity), &args, &[out]);
    }
    let mut outputs = vec![produced.last().unwrap().clone()];
    let extra = produced[rng.below(produced.len())].clone();
    if !outputs.contains(&extra) {
        outputs.push(extra);
    }
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    b.outputs(&outputs);
    (b.build().unwrap(), inputs)
}

fn same(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| {
                    (p - q).abs() <= 1e-6 * (1.0 + q.abs()) || (p.is_nan() && q.is_nan())
                })
        })
}

#[test]
fn random_graphs_plan_and_optimize_correctly() {
    for seed in 0..200 {
        let (graph, inputs) = random_graph(seed);
        let inputs: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let plan = ExecutionPlan::new(&graph).unwrap();
        check_plan(&graph, &plan);
        let reference = execute(&graph, &inputs, 1);
        let parallel = execute(&graph, &inputs, 3);
        assert!(
            same(&parallel, &reference),
            "seed {seed}: parallel run differs"
        );

        let mut optimized = graph.clone();
        passes::optimize(&mut optimized).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        optimized.validate().unwrap();
        assert!(optimized.nodes.len() <= graph.nodes.len());
        assert!(
            optimized.nodes.iter().all(|n| n.op_type != "Identity"
                || n.outputs
                    .iter()
                    .flatten()
                    .any(|v| optimized.outputs.contains(v))),
            "seed {seed}: an inner Identity survived"
        );
        let after = execute(&optimized, &inputs, 1);
        assert!(
            same(&after, &reference),
            "seed {seed}: optimized graph differs"
        );
    }
}

#[test]
fn profile_records_every_node_of_every_run() {
    let mut g = G::new();
    g.input("x", &[64, 64]);
    g.node("a", "Relu", &["x"], "r")
        .node("b", "Exp", &["r"], "e");
    g.node("c", "MatMul", &["e", "x"], "m").outputs(&["m"]);
    let graph = g.build().unwrap();
    let plan = ExecutionPlan::new(&graph).unwrap();
    let pool = strata_sched::ThreadPool::new(2);
    let profile = strata_sched::Profile::new(graph.nodes.len());
    let x = Tensor::from_vec(vec![0.5f32; 64 * 64], &[64, 64]).unwrap();
    let inputs = vec![(graph.value_id("x").unwrap(), Value::Tensor(x))];
    let executor = strata_sched::Executor::new(&graph, &plan, &pool, &strata_ops::HeapTensorAlloc)
        .with_profile(&profile);
    for _ in 0..3 {
        executor.run(inputs.clone()).unwrap();
    }
    assert_eq!(profile.runs(), 3);
    let totals = profile.node_totals();
    assert_eq!(totals.len(), 3);
    assert!(totals.iter().all(|t| !t.is_zero()), "{totals:?}");
}
