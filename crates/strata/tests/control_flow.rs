//! Control flow through the facade: a Loop whose body holds an If whose branches read values
//! from two scopes up (a graph input and an initializer), the typed errors bad subgraphs
//! give, and model-local functions (inlined at load, attribute references resolved). Models
//! are built here by encoding ONNX protobuf with tract-onnx's types.

mod common;

use common::proto::{graph, node};
use prost::Message;
use strata::{DType, Model, SessionOptions, Tensor};
use tract_onnx::pb;

fn value_info(name: &str, dtype: DType, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as DV, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: dtype.onnx_code(),
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&n| Dimension {
                            value: Some(DV::DimValue(n)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A value declared without a type (subgraph inputs often are).
fn untyped(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        ..Default::default()
    }
}

fn attr_graph(name: &str, g: pb::GraphProto) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Graph as i32,
        g: Some(g),
        ..Default::default()
    }
}

fn init_f32(name: &str, data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![data.len() as i64],
        data_type: DType::F32.onnx_code(),
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn init_i64(name: &str, value: i64) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type: DType::I64.onnx_code(),
        int64_data: vec![value],
        ..Default::default()
    }
}

fn load(g: pb::GraphProto) -> strata::Result<Model> {
    load_with(g, vec![])
}

fn load_with(g: pb::GraphProto, functions: Vec<pb::FunctionProto>) -> strata::Result<Model> {
    let m = pb::ModelProto {
        functions,
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(g),
        ..Default::default()
    };
    Model::from_bytes(&m.encode_to_vec())
}

/// `acc = x; for i in 0..n { acc = if i % 2 == 0 { acc + x } else { acc - w } }`, returning
/// the final `acc` and every iteration's `acc` stacked.
fn nested_model() -> pb::GraphProto {
    let then_branch = graph(
        vec![node("Add", &["acc_in", "x"], &["r_then"], vec![])],
        vec![],
        vec![untyped("r_then")],
        vec![],
    );
    let else_branch = graph(
        vec![node("Sub", &["acc_in", "w"], &["r_else"], vec![])],
        vec![],
        vec![untyped("r_else")],
        vec![],
    );
    let body = graph(
        vec![
            node("Mod", &["iter", "two"], &["rem"], vec![]),
            node("Equal", &["rem", "zero"], &["even"], vec![]),
            node(
                "If",
                &["even"],
                &["acc_out"],
                vec![
                    attr_graph("then_branch", then_branch),
                    attr_graph("else_branch", else_branch),
                ],
            ),
            node("Identity", &["cond_in"], &["cond_out"], vec![]),
            node("Identity", &["acc_out"], &["scan_out"], vec![]),
        ],
        vec![
            value_info("iter", DType::I64, &[]),
            value_info("cond_in", DType::Bool, &[]),
            untyped("acc_in"),
        ],
        vec![untyped("cond_out"), untyped("acc_out"), untyped("scan_out")],
        vec![init_i64("two", 2), init_i64("zero", 0)],
    );
    graph(
        vec![node(
            "Loop",
            &["n", "", "x"],
            &["acc", "stacked"],
            vec![attr_graph("body", body)],
        )],
        vec![
            value_info("x", DType::F32, &[2]),
            value_info("n", DType::I64, &[]),
        ],
        vec![
            value_info("acc", DType::F32, &[2]),
            value_info("stacked", DType::F32, &[-1, 2]),
        ],
        vec![init_f32("w", &[0.5, 0.5])],
    )
}

#[test]
fn nested_subgraphs_read_outer_scopes() {
    let model = load(nested_model()).unwrap();
    assert_eq!(
        model.graph().nodes[0].inputs.len(),
        5,
        "x and w are appended as captures"
    );
    for threads in [1, 2] {
        let session = model
            .session(SessionOptions::default().with_threads(threads))
            .unwrap();
        let out = session
            .run([
                ("x", Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap()),
                ("n", Tensor::scalar(3i64)),
            ])
            .unwrap();
        let acc = out.get("acc").unwrap();
        assert_eq!(acc.to_vec::<f32>().unwrap(), vec![2.5, 5.5]);
        let stacked = out.get("stacked").unwrap();
        assert_eq!(stacked.shape(), &[3, 2]);
        assert_eq!(
            stacked.to_vec::<f32>().unwrap(),
            vec![2.0, 4.0, 1.5, 3.5, 2.5, 5.5]
        );
    }
}

/// `If(c)` with the given branches and one output `y`.
fn if_model(then_branch: pb::GraphProto, outputs: usize) -> pb::GraphProto {
    let else_branch = graph(
        vec![node("Identity", &["x"], &["e"], vec![])],
        vec![],
        vec![untyped("e")],
        vec![],
    );
    let names: Vec<String> = (0..outputs).map(|i| format!("y{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    graph(
        vec![node(
            "If",
            &["c"],
            &names,
            vec![
                attr_graph("then_branch", then_branch),
                attr_graph("else_branch", else_branch),
            ],
        )],
        vec![
            value_info("c", DType::Bool, &[]),
            value_info("x", DType::F32, &[2]),
        ],
        names.iter().map(|n| untyped(n)).collect(),
        vec![],
    )
}

fn branch(nodes: Vec<pb::NodeProto>, outputs: &[&str]) -> pb::GraphProto {
    graph(
        nodes,
        vec![],
        outputs.iter().map(|n| untyped(n)).collect(),
        vec![],
    )
}

#[test]
fn bad_subgraphs_give_typed_errors() {
    let err = |g| load(g).unwrap_err().to_string();
    // a branch with the wrong number of outputs
    let two = branch(vec![node("Identity", &["x"], &["a"], vec![])], &["a", "a"]);
    let e = err(if_model(two, 1));
    assert!(e.contains("then_branch outputs") && e.contains("If"), "{e}");
    // a branch reading a value no scope defines
    let dangling = branch(vec![node("Identity", &["nowhere"], &["a"], vec![])], &["a"]);
    let e = err(if_model(dangling, 1));
    assert!(e.contains("undefined value 'nowhere'"), "{e}");
    // a branch output nothing produces is a capture the outer graph cannot bind either
    let e = err(if_model(branch(vec![], &["ghost"]), 1));
    assert!(e.contains("'ghost'"), "{e}");
    // nesting deeper than the limit
    let mut deep = branch(vec![node("Identity", &["x"], &["a"], vec![])], &["a"]);
    let leaf = branch(vec![node("Identity", &["x"], &["a"], vec![])], &["a"]);
    for _ in 0..=MAX_DEPTH {
        deep = branch(
            vec![node(
                "If",
                &["c"],
                &["a"],
                vec![
                    attr_graph("then_branch", deep),
                    attr_graph("else_branch", leaf.clone()),
                ],
            )],
            &["a"],
        );
    }
    let e = err(if_model(deep, 1));
    assert!(e.contains("nested deeper"), "{e}");
}

/// strata-onnx's limit on subgraph nesting.
const MAX_DEPTH: usize = 16;

#[test]
fn unsupported_ops_inside_bodies_fail_the_session_and_run_errors_name_the_inner_node() {
    let unknown = branch(vec![node("NoSuchOp", &["x"], &["a"], vec![])], &["a"]);
    let model = load(if_model(unknown, 1)).unwrap();
    let e = model
        .session(SessionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("NoSuchOp") && e.contains("then_branch"), "{e}");

    let mismatch = branch(
        vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Cast", &["s"], &["f"], vec![cast_to_f32()]),
            node("Concat", &["x", "f"], &["xf"], vec![axis0()]),
            node("Add", &["x", "xf"], &["a"], vec![]),
        ],
        &["a"],
    );
    let session = load(if_model(mismatch, 1))
        .unwrap()
        .session(SessionOptions::default().with_threads(1))
        .unwrap();
    let c = Tensor::from_bools(&[true], &[]).unwrap();
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    let e = session
        .run([("c", c.clone()), ("x", x.clone())])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("in subgraph 'then_branch'") && e.contains("(Add)"),
        "{e}"
    );
    // the other branch works
    let f = Tensor::from_bools(&[false], &[]).unwrap();
    let out = session.run([("c", f), ("x", x)]).unwrap();
    assert_eq!(
        out.get("y0").unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 2.0]
    );
}

fn cast_to_f32() -> pb::AttributeProto {
    pb::AttributeProto {
        name: "to".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: DType::F32.onnx_code() as i64,
        ..Default::default()
    }
}

fn axis0() -> pb::AttributeProto {
    pb::AttributeProto {
        name: "axis".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    }
}

// ----- model-local functions ---------------------------------------------------------------

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn function(
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    nodes: Vec<pb::NodeProto>,
) -> pb::FunctionProto {
    pb::FunctionProto {
        name: Some(name.into()),
        domain: Some("local".into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: vec!["alpha".into()],
        node: nodes,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        ..Default::default()
    }
}

fn call(f: &str, inputs: &[&str], outputs: &[&str], alpha: f32) -> pb::NodeProto {
    pb::NodeProto {
        domain: "local".into(),
        ..node(f, inputs, outputs, vec![attr_float("alpha", alpha)])
    }
}

/// `AddScaled(x, y; alpha) = x + alpha * y`, and `Twice(x; alpha) = AddScaled(x, x; alpha)`.
fn library() -> Vec<pb::FunctionProto> {
    let alpha = pb::AttributeProto {
        ref_attr_name: "alpha".into(),
        ..attr_float("value_float", 0.0)
    };
    vec![
        function(
            "AddScaled",
            &["x", "y"],
            &["z"],
            vec![
                node("Constant", &[], &["a"], vec![alpha]),
                node("Mul", &["y", "a"], &["t"], vec![]),
                node("Add", &["x", "t"], &["z"], vec![]),
            ],
        ),
        function(
            "Twice",
            &["x"],
            &["z"],
            vec![call("AddScaled", &["x", "x"], &["z"], 0.0)],
        ),
    ]
}

#[test]
fn model_local_functions_are_inlined_with_their_attributes() {
    // Twice's inner call passes a literal alpha of 0, so Twice(x) = x.
    let g = graph(
        vec![
            call("AddScaled", &["x", "x"], &["u"], 2.0),
            call("AddScaled", &["u", "x"], &["v"], 10.0),
            call("Twice", &["v"], &["w"], 5.0),
        ],
        vec![value_info("x", DType::F32, &[2])],
        vec![value_info("w", DType::F32, &[2])],
        vec![],
    );
    let model = load_with(g, library()).unwrap();
    assert!(model.graph().nodes.iter().all(|n| n.domain.is_empty()));
    let session = model.session(SessionOptions::default()).unwrap();
    let out = session
        .run([("x", Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap())])
        .unwrap();
    // u = 3x, v = u + 10x = 13x, w = v
    assert_eq!(
        out.get("w").unwrap().to_vec::<f32>().unwrap(),
        vec![13.0, 26.0]
    );
}

#[test]
fn recursive_functions_are_rejected() {
    let recursive = function(
        "Loopy",
        &["x"],
        &["z"],
        vec![call("Loopy", &["x"], &["z"], 1.0)],
    );
    let g = graph(
        vec![call("Loopy", &["x"], &["y"], 1.0)],
        vec![value_info("x", DType::F32, &[2])],
        vec![untyped("y")],
        vec![],
    );
    let e = load_with(g, vec![recursive]).unwrap_err().to_string();
    assert!(e.contains("nested deeper"), "{e}");
}

/// A `FunctionProto` with `attribute_proto` (declared defaults), which tract's type lacks.
#[derive(Clone, PartialEq, Message)]
struct FunctionWithDefaults {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, repeated, tag = "4")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    output: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    node: Vec<pb::NodeProto>,
    #[prost(string, tag = "10")]
    domain: String,
    #[prost(message, repeated, tag = "11")]
    attribute_proto: Vec<pb::AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ModelWithFunctions {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(message, optional, tag = "7")]
    graph: Option<pb::GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<pb::OperatorSetIdProto>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<FunctionWithDefaults>,
}

#[test]
fn function_attribute_defaults_apply_when_the_call_omits_them() {
    let scaled = library().swap_remove(0);
    let f = FunctionWithDefaults {
        name: "AddScaled".into(),
        input: scaled.input,
        output: scaled.output,
        node: scaled.node,
        domain: "local".into(),
        attribute_proto: vec![attr_float("alpha", 4.0)],
    };
    let plain = |inputs: &[&str], outputs: &[&str]| pb::NodeProto {
        domain: "local".into(),
        ..node("AddScaled", inputs, outputs, vec![])
    };
    let m = ModelWithFunctions {
        ir_version: 9,
        graph: Some(graph(
            vec![
                plain(&["x", "x"], &["u"]),
                call("AddScaled", &["u", "x"], &["v"], 1.0),
            ],
            vec![value_info("x", DType::F32, &[2])],
            vec![value_info("v", DType::F32, &[2])],
            vec![],
        )),
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            pb::OperatorSetIdProto {
                domain: "local".into(),
                version: 1,
            },
        ],
        functions: vec![f],
    };
    let model = Model::from_bytes(&m.encode_to_vec()).unwrap();
    let out = model
        .session(SessionOptions::default())
        .unwrap()
        .run([("x", Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap())])
        .unwrap();
    // u = x + 4x = 5x, v = u + 1x = 6x
    assert_eq!(
        out.get("v").unwrap().to_vec::<f32>().unwrap(),
        vec![6.0, 12.0]
    );
}
