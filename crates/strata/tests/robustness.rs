//! Loader and session robustness: truncated, corrupted, hostile or mismatched models and
//! inputs must produce typed errors that name the culprit, never panics or huge allocations.
//!
//! Models are built here by encoding ONNX protobuf with tract-onnx's types, so no fixture
//! files are needed besides `examples/models/digits.onnx`.

mod common;

use common::proto::{graph, named_node};
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use strata::{DType, GraphError, Model, OnnxError, SessionOptions, StrataError, Tensor, ValueKind};
use tract_onnx::pb;

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by the current thread while
// tracking is on. Thread-local so that tests running in parallel do not disturb each other.

struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    if TRACKING.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping only touches const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded verbatim; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every path above forwards).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// Model building.

/// A dimension of a declared shape.
#[derive(Clone, Copy)]
enum D {
    N(i64),
    S(&'static str),
}

fn value_info(name: &str, dtype: DType, dims: &[D]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as DV, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: dtype.onnx_code(),
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                D::N(n) => DV::DimValue(*n),
                                D::S(s) => DV::DimParam(s.to_string()),
                            }),
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

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

/// An f32 initializer stored as raw little-endian bytes.
fn init_f32(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DType::F32.onnx_code(),
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn model(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn load(m: &pb::ModelProto) -> strata::Result<Model> {
    Model::from_bytes(&m.encode_to_vec())
}

/// y = x + w for x, w of shape [2, 2]: the smallest model with an initializer.
fn add_model(w: pb::TensorProto) -> pb::ModelProto {
    let name = w.name.clone();
    model(graph(
        vec![named_node("add", "Add", &["x", &name], &["y"], vec![])],
        vec![value_info("x", DType::F32, &[D::N(2), D::N(2)])],
        vec![value_info("y", DType::F32, &[D::N(2), D::N(2)])],
        vec![w],
    ))
}

fn digits_bytes() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/digits.onnx"))
        .expect("examples/models/digits.onnx")
}

fn digits_sample() -> Tensor {
    strata::io::npy::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/models/digits_samples/sample_0.npy"),
    )
    .expect("sample_0.npy")
}

fn one_thread() -> SessionOptions {
    SessionOptions::default().with_threads(1)
}

/// A scratch folder of its own for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-robustness-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

// ---------------------------------------------------------------------------------------------
// (a) truncated files

#[test]
fn truncated_model_files_give_typed_errors() {
    let bytes = digits_bytes();
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((64..bytes.len()).step_by(97));
    cuts.extend([bytes.len() / 2, bytes.len() - 2, bytes.len() - 1]);
    let (mut decode, mut other, mut ok) = (0, 0, 0);
    let mut panics = Vec::new();
    for &cut in &cuts {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            Model::from_bytes(&bytes[..cut]).and_then(|m| m.session(one_thread()))
        }));
        match outcome {
            Err(_) => panics.push(cut),
            Ok(Err(StrataError::Load(OnnxError::Decode { what, reason }))) => {
                assert_eq!(what, "model");
                assert!(!reason.is_empty());
                decode += 1;
            }
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty());
                other += 1;
            }
            Ok(Ok(_)) => ok += 1,
        }
    }
    eprintln!(
        "{} cuts: {decode} decode errors, {other} other errors, {ok} loaded",
        cuts.len()
    );
    assert!(panics.is_empty(), "panics at cuts {panics:?}");
    // Cutting inside a length-delimited field (most of the file is weights) cannot decode.
    assert!(
        decode * 10 >= cuts.len() * 9,
        "only {decode} of {} cuts failed to decode ({other} other errors, {ok} loaded)",
        cuts.len()
    );
    let mid = Model::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(
        matches!(mid, StrataError::Load(OnnxError::Decode { .. })),
        "{mid:?}"
    );
    assert!(mid.to_string().contains("not a valid ONNX model"), "{mid}");
    // Nothing at all decodes to an empty model, which has no graph.
    assert!(matches!(
        Model::from_bytes(&[]),
        Err(StrataError::Load(OnnxError::NoGraph))
    ));
}

#[test]
fn non_onnx_bytes_give_typed_errors() {
    for bytes in [
        &b"this is not an onnx model, just some text\n"[..],
        &[0xff; 32][..],
        &b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}"[..],
    ] {
        match Model::from_bytes(bytes) {
            Err(StrataError::Load(OnnxError::Decode { .. } | OnnxError::NoGraph)) => {}
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) corrupted files

/// Loads, inspects, plans and runs one (possibly corrupt) model file on a valid input.
/// Returns `None` on a panic, else whether it loaded and whether it ran.
fn exercise(bytes: &[u8], sample: &Tensor) -> Option<(bool, bool)> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let model = Model::from_bytes(bytes)?;
        // Inspection must work on whatever loaded.
        let _ = (model.inputs(), model.outputs(), model.op_histogram());
        let _ = model.unsupported_ops();
        let session = model.session(one_thread())?;
        let outputs = session.run([("pixels", sample.clone())])?;
        Ok::<_, StrataError>(outputs.len())
    }));
    match outcome {
        Err(_) => None,
        Ok(Ok(_)) => Some((true, true)),
        Ok(Err(e)) => {
            // Every error renders as a message.
            assert!(!e.to_string().is_empty(), "{e:?}");
            Some((!matches!(e, StrataError::Load(_)), false))
        }
    }
}

#[test]
fn bit_flipped_models_never_panic() {
    let bytes = digits_bytes();
    let sample = digits_sample();
    let total_bits = bytes.len() * 8;
    // Every bit of the structure-heavy head (model header, nodes) and tail (inputs, outputs),
    // and a deterministic spread over the weights in between.
    let mut positions: Vec<usize> = (0..(1024 * 8).min(total_bits)).collect();
    positions.extend((total_bits.saturating_sub(512 * 8)..total_bits).step_by(3));
    positions.extend((1024 * 8..total_bits).step_by(37));
    positions.sort_unstable();
    positions.dedup();

    let (mut loaded, mut ran) = (0, 0);
    let mut panics = Vec::new();
    let ((), largest) = largest_allocation(|| {
        for &bit in &positions {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            match exercise(&corrupt, &sample) {
                None => panics.push(bit),
                Some((l, r)) => {
                    loaded += usize::from(l);
                    ran += usize::from(r);
                }
            }
        }
    });
    eprintln!("{} bit flips: {loaded} loaded, {ran} ran", positions.len());
    assert!(
        panics.is_empty(),
        "{} of {} bit flips panicked, first at bits {:?}",
        panics.len(),
        positions.len(),
        &panics[..panics.len().min(20)]
    );
    // Most flips land in weights: the model still loads and runs.
    assert!(
        ran > positions.len() / 4,
        "{ran} runs of {}",
        positions.len()
    );
    assert!(loaded >= ran);
    assert!(
        largest < 64 << 20,
        "a corrupt file allocated {largest} bytes"
    );
}

#[test]
fn overwritten_bytes_never_panic() {
    // Whole-byte damage reaches what single bits do not: varint lengths and tags that jump to
    // their extremes (0x00, 0xFF, 0x7F, 0x80).
    let bytes = digits_bytes();
    let sample = digits_sample();
    let mut positions: Vec<usize> = (0..1024.min(bytes.len())).collect();
    positions.extend(bytes.len().saturating_sub(512)..bytes.len());
    positions.extend((1024..bytes.len()).step_by(7));
    positions.sort_unstable();
    positions.dedup();
    let mut panics = Vec::new();
    let mut ran = 0;
    let ((), largest) = largest_allocation(|| {
        for &at in &positions {
            for value in [0x00, 0xFF, 0x7F, 0x80] {
                if bytes[at] == value {
                    continue;
                }
                let mut corrupt = bytes.clone();
                corrupt[at] = value;
                match exercise(&corrupt, &sample) {
                    None => panics.push((at, value)),
                    Some((_, r)) => ran += usize::from(r),
                }
            }
        }
    });
    eprintln!("{} byte overwrites: {ran} ran", positions.len() * 4);
    assert!(
        panics.is_empty(),
        "{} overwrites panicked, first (offset, byte): {:?}",
        panics.len(),
        &panics[..panics.len().min(20)]
    );
    assert!(
        largest < 64 << 20,
        "a corrupt file allocated {largest} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) tensors whose declared size does not match their data

#[test]
fn huge_declared_dims_are_rejected_without_allocating() {
    let cases = [
        // 4 TiB declared: above the 16 GiB sanity limit.
        init_f32("huge", &[1 << 20, 1 << 20], &[1.0, 2.0, 3.0, 4.0]),
        // 1 GiB declared, 16 bytes given.
        init_f32("big", &[1 << 14, 1 << 14], &[1.0, 2.0, 3.0, 4.0]),
        // Typed data: 1 GiB declared, 4 floats given.
        pb::TensorProto {
            name: "typed".into(),
            dims: vec![1 << 14, 1 << 14],
            data_type: DType::F32.onnx_code(),
            float_data: vec![1.0; 4],
            ..Default::default()
        },
        // Overflowing element count.
        init_f32("overflow", &[i64::MAX, i64::MAX, 4], &[1.0; 4]),
    ];
    for w in cases {
        let name = w.name.clone();
        let bytes = add_model(w).encode_to_vec();
        let (result, largest) = largest_allocation(|| Model::from_bytes(&bytes));
        match result {
            Err(StrataError::Load(OnnxError::BadTensor { name: n, reason })) => {
                assert_eq!(n, name, "{reason}");
            }
            other => panic!("{name}: expected BadTensor, got {other:?}"),
        }
        let message = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(message.contains(&format!("'{name}'")), "{message}");
        assert!(largest < 16 << 20, "{name}: allocated {largest} bytes");
    }
}

#[test]
fn malformed_initializers_are_rejected() {
    let negative = init_f32("neg", &[-1, 4], &[]);
    let unknown_type = pb::TensorProto {
        data_type: 999,
        ..init_f32("odd", &[2, 2], &[0.0; 4])
    };
    let short = init_f32("short", &[2, 2], &[0.0; 3]);
    for (w, needle) in [(negative, "negative"), (unknown_type, "999"), (short, "12")] {
        let name = w.name.clone();
        let err = load(&add_model(w)).unwrap_err();
        assert!(
            matches!(&err, StrataError::Load(OnnxError::BadTensor { name: n, .. }) if *n == name),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&name) && message.contains(needle),
            "{message}"
        );
    }
    // The well-formed version loads and runs.
    let good = load(&add_model(init_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]))).unwrap();
    let out = good
        .session(one_thread())
        .unwrap()
        .run([("x", Tensor::from_vec(vec![10.0f32; 4], &[2, 2]).unwrap())])
        .unwrap();
    assert_eq!(
        out.get("y").unwrap().to_vec::<f32>().unwrap(),
        [11.0, 12.0, 13.0, 14.0]
    );
}

// ---------------------------------------------------------------------------------------------
// (d) invalid graphs

#[test]
fn cycles_are_reported_with_their_nodes() {
    let m = model(graph(
        vec![
            named_node("loop_a", "Add", &["x", "b"], &["a"], vec![]),
            named_node("loop_b", "Relu", &["a"], &["b"], vec![]),
        ],
        vec![value_info("x", DType::F32, &[D::N(2)])],
        vec![value_info("b", DType::F32, &[D::N(2)])],
        vec![],
    ));
    let err = load(&m).unwrap_err();
    match &err {
        StrataError::Load(OnnxError::Graph(GraphError::Cycle(nodes))) => {
            let mut nodes = nodes.clone();
            nodes.sort();
            assert_eq!(nodes, ["loop_a", "loop_b"]);
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("cycle") && message.contains("loop_a") && message.contains("loop_b"),
        "{message}"
    );
}

#[test]
fn dangling_references_are_reported() {
    let undefined = model(graph(
        vec![named_node("reader", "Relu", &["nowhere"], &["y"], vec![])],
        vec![value_info("x", DType::F32, &[D::N(2)])],
        vec![value_info("y", DType::F32, &[D::N(2)])],
        vec![],
    ));
    match load(&undefined).unwrap_err() {
        StrataError::Load(OnnxError::Graph(GraphError::UndefinedValue { node, op, value })) => {
            assert_eq!(
                (node.as_str(), op.as_str(), value.as_str()),
                ("reader", "Relu", "nowhere")
            );
        }
        other => panic!("{other:?}"),
    }

    let no_output = model(graph(
        vec![named_node("r", "Relu", &["x"], &["y"], vec![])],
        vec![value_info("x", DType::F32, &[D::N(2)])],
        vec![value_info("ghost", DType::F32, &[D::N(2)])],
        vec![],
    ));
    match load(&no_output).unwrap_err() {
        StrataError::Load(OnnxError::Graph(GraphError::UndefinedOutput(name))) => {
            assert_eq!(name, "ghost");
        }
        other => panic!("{other:?}"),
    }

    let twice = model(graph(
        vec![
            named_node("first", "Relu", &["x"], &["y"], vec![]),
            named_node("second", "Neg", &["x"], &["y"], vec![]),
        ],
        vec![value_info("x", DType::F32, &[D::N(2)])],
        vec![value_info("y", DType::F32, &[D::N(2)])],
        vec![],
    ));
    match load(&twice).unwrap_err() {
        StrataError::Load(OnnxError::Graph(GraphError::DuplicateValue(name))) => {
            assert_eq!(name, "y");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// (e) unsupported ops

fn fancy_model(domain: &str, node_name: &str) -> pb::ModelProto {
    let mut fancy = named_node(
        node_name,
        "FancyOp",
        &["r"],
        &["y"],
        vec![attr_int("level", 3)],
    );
    fancy.domain = domain.into();
    let mut m = model(graph(
        vec![named_node("relu", "Relu", &["x"], &["r"], vec![]), fancy],
        vec![value_info("x", DType::F32, &[D::S("n"), D::N(4)])],
        vec![value_info("y", DType::F32, &[D::S("n"), D::N(4)])],
        vec![],
    ));
    if !domain.is_empty() {
        m.opset_import.push(pb::OperatorSetIdProto {
            domain: domain.into(),
            version: 3,
        });
    }
    m
}

#[test]
fn unknown_ops_load_for_inspection_but_not_for_sessions() {
    let model = load(&fancy_model("", "fancy_node")).expect("model with an unknown op loads");
    assert_eq!(model.op_histogram().get("FancyOp"), Some(&1));
    assert_eq!(model.inputs()[0].name, "x");
    let unsupported = model.unsupported_ops();
    assert_eq!(unsupported.len(), 1);
    match &unsupported[0] {
        StrataError::UnsupportedOp {
            node,
            op,
            domain,
            opset,
            ..
        } => {
            assert_eq!(
                (node.as_str(), op.as_str(), domain.as_str()),
                ("fancy_node", "FancyOp", "")
            );
            assert_eq!(*opset, 17);
        }
        other => panic!("{other:?}"),
    }
    for options in [one_thread(), one_thread().without_optimizations()] {
        let err = model.session(options).unwrap_err();
        assert!(
            matches!(&err, StrataError::UnsupportedOp { node, op, .. } if node == "fancy_node" && op == "FancyOp"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("fancy_node") && message.contains("FancyOp"),
            "{message}"
        );
    }

    // A custom domain, and an unnamed node labelled by position.
    let model = load(&fancy_model("com.example", "")).unwrap();
    match model.session(one_thread()).unwrap_err() {
        StrataError::UnsupportedOp {
            node,
            op,
            domain,
            opset,
            ..
        } => {
            assert_eq!(node, "#1 (FancyOp)");
            assert_eq!(op, "FancyOp");
            assert_eq!(domain, "com.example");
            assert_eq!(opset, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(model.op_histogram().get("com.example.FancyOp"), Some(&1));
}

#[test]
fn unsupported_op_on_constants_is_not_folded_away() {
    // FancyOp reads only a constant: constant folding must not hide (or run) it.
    let mut m = model(graph(
        vec![
            named_node("fancy", "FancyOp", &["c"], &["k"], vec![]),
            named_node("add", "Add", &["x", "k"], &["y"], vec![]),
        ],
        vec![value_info("x", DType::F32, &[D::N(2)])],
        vec![value_info("y", DType::F32, &[D::N(2)])],
        vec![init_f32("c", &[2], &[1.0, 2.0])],
    ));
    m.graph.as_mut().unwrap().name = "fold".into();
    let model = load(&m).unwrap();
    let err = model.session(one_thread()).unwrap_err();
    assert!(
        matches!(&err, StrataError::UnsupportedOp { node, .. } if node == "fancy"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (f) inputs that do not match the model

#[test]
fn run_rejects_mismatched_inputs() {
    let model = Model::from_bytes(&digits_bytes()).unwrap();
    let session = model.session(one_thread()).unwrap();
    let good = digits_sample();
    assert_eq!(good.shape(), [1, 64]);
    assert!(session.run([("pixels", good.clone())]).is_ok());

    match session.run([("pixel", good.clone())]).unwrap_err() {
        StrataError::UnknownInput { name, expected } => {
            assert_eq!(name, "pixel");
            assert_eq!(expected, "pixels");
        }
        other => panic!("{other:?}"),
    }

    let none: [(&str, Tensor); 0] = [];
    match session.run(none).unwrap_err() {
        StrataError::MissingInput(name) => assert_eq!(name, "pixels"),
        other => panic!("{other:?}"),
    }

    let as_f64 = good.cast(DType::F64).unwrap();
    let err = session.run([("pixels", as_f64)]).unwrap_err();
    match &err {
        StrataError::InputDType {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "pixels");
            assert_eq!((*expected, *found), (DType::F32, DType::F64));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("pixels"), "{err}");

    for shape in [&[1, 63][..], &[64][..], &[1, 1, 64][..]] {
        let n: usize = shape.iter().product();
        let t = Tensor::from_vec(vec![0.0f32; n], shape).unwrap();
        match session.run([("pixels", t)]).unwrap_err() {
            StrataError::InputShape {
                name,
                expected,
                found,
            } => {
                assert_eq!(name, "pixels");
                assert_eq!(expected, "[batch, 64]");
                assert_eq!(found, shape);
            }
            other => panic!("{shape:?}: {other:?}"),
        }
    }

    // The symbolic batch dimension takes any size.
    let batch = Tensor::from_vec(vec![1.0f32; 3 * 64], &[3, 64]).unwrap();
    let out = session.run([("pixels", batch)]).unwrap();
    assert_eq!(out.get("probabilities").unwrap().shape(), [3, 10]);
    assert_eq!(out.get("label").unwrap().shape(), [3]);

    match session
        .run_positional(vec![good.clone(), good.clone()])
        .unwrap_err()
    {
        StrataError::TooManyInputs { given, expected } => assert_eq!((given, expected), (2, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn symbolic_dims_must_agree_across_inputs() {
    let m = model(graph(
        vec![named_node("add", "Add", &["a", "b"], &["c"], vec![])],
        vec![
            value_info("a", DType::F32, &[D::S("batch"), D::N(4)]),
            value_info("b", DType::F32, &[D::S("batch"), D::N(4)]),
        ],
        vec![value_info("c", DType::F32, &[D::S("batch"), D::N(4)])],
        vec![],
    ));
    let session = load(&m).unwrap().session(one_thread()).unwrap();
    let t = |rows: usize| Tensor::from_vec(vec![1.0f32; rows * 4], &[rows, 4]).unwrap();
    let out = session.run([("a", t(2)), ("b", t(2))]).unwrap();
    assert_eq!(out.get("c").unwrap().shape(), [2, 4]);
    match session.run([("a", t(2)), ("b", t(3))]).unwrap_err() {
        StrataError::InputShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "b");
            assert_eq!(expected, "[batch, 4]");
            assert_eq!(found, [3, 4]);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// (g) external data

fn external_w(location: &str, offset: Option<usize>, length: Option<usize>) -> pb::TensorProto {
    let mut entries = vec![pb::StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    if let Some(o) = offset {
        entries.push(pb::StringStringEntryProto {
            key: "offset".into(),
            value: o.to_string(),
        });
    }
    if let Some(l) = length {
        entries.push(pb::StringStringEntryProto {
            key: "length".into(),
            value: l.to_string(),
        });
    }
    pb::TensorProto {
        name: "w".into(),
        dims: vec![2, 2],
        data_type: DType::F32.onnx_code(),
        data_location: Some(pb::tensor_proto::DataLocation::External as i32),
        external_data: entries,
        ..Default::default()
    }
}

#[test]
fn external_data_beside_the_model_loads_and_runs() {
    let dir = scratch_dir("external");
    let weights: Vec<u8> = [1.5f32, -2.0, 3.25, 100.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // Eight bytes of padding before the tensor, as tools that pack several tensors write.
    let mut file = vec![0xAB; 8];
    file.extend(&weights);
    file.extend([0xCD; 5]);
    std::fs::write(dir.join("weights.bin"), &file).unwrap();
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();

    for (name, w) in [
        (
            "offset_length.onnx",
            external_w("weights.bin", Some(8), Some(16)),
        ),
        ("offset_only.onnx", external_w("weights.bin", Some(8), None)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, add_model(w).encode_to_vec()).unwrap();
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = model
            .session(one_thread())
            .unwrap()
            .run([("x", x.clone())])
            .unwrap();
        assert_eq!(
            out.get("y").unwrap().to_vec::<f32>().unwrap(),
            [2.5, 0.0, 6.25, 104.0],
            "{name}"
        );
    }

    // In a subfolder of the model's folder is fine too.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/w.bin"), &weights).unwrap();
    let path = dir.join("subfolder.onnx");
    std::fs::write(
        &path,
        add_model(external_w("data/w.bin", None, None)).encode_to_vec(),
    )
    .unwrap();
    assert!(Model::load(&path).is_ok());

    // Bytes alone have no folder to look in.
    match Model::from_bytes(&add_model(external_w("weights.bin", None, None)).encode_to_vec()) {
        Err(StrataError::Load(OnnxError::BadTensor { name, reason })) => {
            assert_eq!(name, "w");
            assert!(reason.contains("folder"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // A missing file is an I/O error naming the file.
    let path = dir.join("missing.onnx");
    std::fs::write(
        &path,
        add_model(external_w("nope.bin", None, None)).encode_to_vec(),
    )
    .unwrap();
    match Model::load(&path).unwrap_err() {
        StrataError::Load(OnnxError::Io { path, .. }) => assert!(path.ends_with("nope.bin")),
        other => panic!("{other:?}"),
    }

    // A file too short for the tensor.
    let path = dir.join("short.onnx");
    std::fs::write(
        &path,
        add_model(external_w("weights.bin", Some(20), None)).encode_to_vec(),
    )
    .unwrap();
    match Model::load(&path).unwrap_err() {
        StrataError::Load(OnnxError::BadTensor { name, reason }) => {
            assert_eq!(name, "w");
            assert!(reason.contains("weights.bin"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // Offsets that are not numbers, or that overflow.
    for (offset, length) in [("eight", "16"), ("18446744073709551615", "16")] {
        let mut w = external_w("weights.bin", None, None);
        w.external_data.push(pb::StringStringEntryProto {
            key: "offset".into(),
            value: offset.into(),
        });
        w.external_data.push(pb::StringStringEntryProto {
            key: "length".into(),
            value: length.into(),
        });
        let path = dir.join("bad_offset.onnx");
        std::fs::write(&path, add_model(w).encode_to_vec()).unwrap();
        match Model::load(&path).unwrap_err() {
            StrataError::Load(OnnxError::BadTensor { name, .. }) => assert_eq!(name, "w"),
            other => panic!("{offset}: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn external_data_cannot_leave_the_model_folder() {
    let dir = scratch_dir("escape");
    let inner = dir.join("model");
    std::fs::create_dir_all(&inner).unwrap();
    // The target exists, so only the path check can stop it.
    std::fs::write(dir.join("x"), [0u8; 16]).unwrap();
    let absolute = dir.join("x").display().to_string();
    for location in ["../x", "sub/../../x", absolute.as_str()] {
        let path = inner.join("escape.onnx");
        std::fs::write(
            &path,
            add_model(external_w(location, None, None)).encode_to_vec(),
        )
        .unwrap();
        let err = Model::load(&path).unwrap_err();
        match &err {
            StrataError::Load(OnnxError::BadTensor { name, reason }) => {
                assert_eq!(name, "w");
                assert!(reason.contains("leaves the model folder"), "{reason}");
                assert!(reason.contains(location), "{reason}");
            }
            other => panic!("{location}: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// (h) metadata

#[test]
fn metadata_is_exposed() {
    let mut m = add_model(init_f32("w", &[2, 2], &[0.0; 4]));
    m.ir_version = 9;
    m.producer_name = "strata-tests".into();
    m.producer_version = "1.2.3".into();
    m.domain = "org.example".into();
    m.model_version = 42;
    m.doc_string = "a tiny adder".into();
    m.opset_import = vec![
        pb::OperatorSetIdProto {
            domain: "ai.onnx".into(),
            version: 13,
        },
        pb::OperatorSetIdProto {
            domain: "com.example".into(),
            version: 2,
        },
    ];
    m.metadata_props = vec![
        pb::StringStringEntryProto {
            key: "author".into(),
            value: "tests".into(),
        },
        pb::StringStringEntryProto {
            key: "license".into(),
            value: "MIT".into(),
        },
    ];
    let g = m.graph.as_mut().unwrap();
    g.name = "adder".into();
    g.doc_string = "adds w".into();

    let model = load(&m).unwrap();
    let meta = model.metadata();
    assert_eq!(meta.ir_version, 9);
    assert_eq!(meta.producer_name, "strata-tests");
    assert_eq!(meta.producer_version, "1.2.3");
    assert_eq!(meta.domain, "org.example");
    assert_eq!(meta.model_version, 42);
    assert_eq!(meta.doc_string, "a tiny adder");
    assert_eq!(meta.graph_name, "adder");
    assert_eq!(meta.graph_doc_string, "adds w");
    // "ai.onnx" is the default domain, keyed "".
    assert_eq!(meta.opsets.get(""), Some(&13));
    assert_eq!(meta.opsets.get("com.example"), Some(&2));
    assert_eq!(meta.opsets.len(), 2);
    assert_eq!(
        meta.metadata_props,
        [
            ("author".to_string(), "tests".to_string()),
            ("license".to_string(), "MIT".to_string())
        ]
    );

    let inputs = model.inputs();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].kind, ValueKind::Tensor);
    assert_eq!(inputs[0].dtype, Some(DType::F32));
    assert_eq!(inputs[0].dims_string(), "[2, 2]");

    // The digits example records its producer.
    let digits = Model::from_bytes(&digits_bytes()).unwrap();
    assert!(digits.metadata().producer_name.starts_with("strata"));
    assert_eq!(digits.metadata().opsets.get(""), Some(&17));
    assert_eq!(digits.inputs()[0].dims_string(), "[batch, 64]");
}

// ---------------------------------------------------------------------------------------------
// (i) steady-state allocation

/// x[1,3,8,8] -> Conv(4 filters, 3x3, pad 1) -> Relu -> Flatten -> Gemm(10) -> y, and
/// Softmax(y) -> p. Two graph outputs.
fn conv_relu_gemm_model() -> pb::ModelProto {
    let w: Vec<f32> = (0..4 * 3 * 3 * 3)
        .map(|i| ((i % 7) as f32 - 3.0) * 0.1)
        .collect();
    let b: Vec<f32> = vec![0.1, -0.2, 0.3, 0.0];
    let g: Vec<f32> = (0..10 * 256)
        .map(|i| ((i % 11) as f32 - 5.0) * 0.01)
        .collect();
    let gb: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
    model(graph(
        vec![
            named_node(
                "conv",
                "Conv",
                &["x", "w", "b"],
                &["c"],
                vec![
                    attr_ints("pads", &[1, 1, 1, 1]),
                    attr_ints("kernel_shape", &[3, 3]),
                ],
            ),
            named_node("relu", "Relu", &["c"], &["r"], vec![]),
            named_node(
                "flatten",
                "Flatten",
                &["r"],
                &["f"],
                vec![attr_int("axis", 1)],
            ),
            named_node(
                "gemm",
                "Gemm",
                &["f", "g", "gb"],
                &["y"],
                vec![attr_int("transB", 1)],
            ),
            named_node(
                "softmax",
                "Softmax",
                &["y"],
                &["p"],
                vec![attr_int("axis", 1)],
            ),
        ],
        vec![value_info(
            "x",
            DType::F32,
            &[D::N(1), D::N(3), D::N(8), D::N(8)],
        )],
        vec![
            value_info("y", DType::F32, &[D::N(1), D::N(10)]),
            value_info("p", DType::F32, &[D::N(1), D::N(10)]),
        ],
        vec![
            init_f32("w", &[4, 3, 3, 3], &w),
            init_f32("b", &[4], &b),
            init_f32("g", &[10, 256], &g),
            init_f32("gb", &[10], &gb),
        ],
    ))
}

fn check_steady_state(model: &Model, inputs: Vec<(String, Tensor)>, threads: usize) {
    let session = model
        .session(SessionOptions::default().with_threads(threads))
        .unwrap();
    let outputs = session.output_names().len();
    let mut stats = Vec::new();
    let mut results = Vec::new();
    for _ in 0..3 {
        let out = session.run(inputs.clone()).unwrap();
        stats.push(session.memory_stats());
        results.push(
            out.iter()
                .map(|(_, v)| v.as_tensor().unwrap().to_vec::<f32>().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[1], results[2]);
    let (second, third) = (stats[1], stats[2]);
    assert!(
        third.misses - second.misses <= outputs as u64,
        "run 3 missed {} times (graph has {outputs} outputs): {stats:?}",
        third.misses - second.misses
    );
    assert!(third.hits > second.hits, "no reuse in run 3: {stats:?}");
}

#[test]
fn steady_state_runs_reuse_buffers() {
    let model = load(&conv_relu_gemm_model()).unwrap();
    let x: Vec<f32> = (0..3 * 64)
        .map(|i| ((i % 13) as f32 - 6.0) * 0.25)
        .collect();
    let x = Tensor::from_vec(x, &[1, 3, 8, 8]).unwrap();
    for threads in [1, 2] {
        check_steady_state(&model, vec![("x".to_string(), x.clone())], threads);
    }
    // Optimized and unoptimized sessions agree.
    let run = |options: SessionOptions| {
        model
            .session(options)
            .unwrap()
            .run([("x", x.clone())])
            .unwrap()
            .get("p")
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    let optimized = run(one_thread());
    let plain = run(one_thread().without_optimizations());
    assert_eq!(optimized, plain);
    assert!((optimized.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

/// The generated SqueezeNet and deterministic inputs for it, or `None` (with a note) when
/// the test data has not been generated.
fn squeezenet_with_inputs() -> Option<(Model, Vec<(String, Tensor)>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/models/light_squeezenet/model.onnx");
    if !path.is_file() {
        eprintln!("note: {} missing; skipping", path.display());
        return None;
    }
    let model = Model::load(&path).unwrap();
    let inputs = model
        .inputs()
        .into_iter()
        .map(|info| {
            let shape: Vec<usize> = info
                .dims
                .unwrap()
                .iter()
                .map(|d| d.known().unwrap_or(1))
                .collect();
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
            (info.name, Tensor::from_vec(data, &shape).unwrap())
        })
        .collect();
    Some((model, inputs))
}

#[test]
fn steady_state_runs_reuse_buffers_on_squeezenet() {
    if let Some((model, inputs)) = squeezenet_with_inputs() {
        check_steady_state(&model, inputs, 1);
    }
}

#[test]
fn into_session_runs_like_session_and_prepacks_the_weights() {
    let Some((model, inputs)) = squeezenet_with_inputs() else {
        return;
    };
    let run = |s: &strata::Session| -> Vec<f32> {
        let outputs = s.run(inputs.clone()).unwrap();
        let (_, value) = outputs.iter().next().unwrap();
        value.as_tensor().unwrap().to_vec::<f32>().unwrap()
    };
    let borrowed = model.session(SessionOptions::default()).unwrap();
    let want = run(&borrowed);
    // With a clone alive the graph is copied; without, it is handed over.
    let shared = model
        .clone()
        .into_session(SessionOptions::default())
        .unwrap();
    let owned = model.into_session(SessionOptions::default()).unwrap();
    assert!(owned.passes_applied().contains(&"conv-weight-prepacking"));
    assert_eq!(
        owned.graph().constants.len(),
        borrowed.graph().constants.len()
    );
    for session in [&shared, &owned] {
        assert_eq!(run(session), want);
    }
}
