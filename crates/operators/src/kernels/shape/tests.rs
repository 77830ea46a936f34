use crate::{Attribute, Attributes, BuildCtx, EvalCtx, Fact, Inputs, OpRegistry, OpResult, Value};
use strata_tensor::{DType, Tensor};

fn registry() -> OpRegistry {
    let mut r = OpRegistry::new();
    super::register(&mut r);
    r
}

fn run_n(
    op: &str,
    opset: i64,
    attrs: Attributes,
    inputs: Vec<Option<Tensor>>,
    outputs: usize,
) -> OpResult<Vec<Value>> {
    let ctx = BuildCtx {
        node_name: "n",
        op_type: op,
        domain: "",
        opset,
        attrs: &attrs,
        input_count: inputs.len(),
        output_count: outputs,
    };
    let op = registry().build(&ctx)?;
    op.eval(
        &EvalCtx::default(),
        Inputs::new(inputs.into_iter().map(|t| t.map(Value::Tensor)).collect()),
    )
}

fn run(op: &str, opset: i64, attrs: Attributes, inputs: Vec<Tensor>) -> OpResult<Tensor> {
    let out = run_n(op, opset, attrs, inputs.into_iter().map(Some).collect(), 1)?;
    Ok(out
        .into_iter()
        .next()
        .and_then(Value::into_tensor)
        .expect("tensor output"))
}

fn f(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn i(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn i1(v: &[i64]) -> Tensor {
    i(v, &[v.len()])
}

fn arange(n: usize, shape: &[usize]) -> Tensor {
    f(&(0..n).map(|x| x as f32).collect::<Vec<_>>(), shape)
}

fn fv(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn iv(t: &Tensor) -> Vec<i64> {
    t.to_vec::<i64>().unwrap()
}

fn attrs() -> Attributes {
    Attributes::new()
}

fn int(n: &str, v: i64) -> Attributes {
    attrs().with(n, Attribute::Int(v))
}

fn ints(n: &str, v: &[i64]) -> Attributes {
    attrs().with(n, Attribute::Ints(v.to_vec()))
}

fn err(r: OpResult<impl std::fmt::Debug>) -> String {
    r.expect_err("expected an error").to_string()
}

// ----- views ------------------------------------------------------------------------------

#[test]
fn reshape_opsets_and_rules() {
    let x = arange(24, &[2, 3, 4]);
    let y = run("Reshape", 13, attrs(), vec![x.clone(), i1(&[0, -1])]).unwrap();
    assert_eq!(y.shape(), &[2, 12]);
    assert!(
        std::sync::Arc::ptr_eq(y.storage(), x.storage()),
        "reshape is a view"
    );
    let y = run("Reshape", 4, ints("shape", &[4, 0, -1]), vec![x.clone()]).unwrap();
    assert_eq!(y.shape(), &[4, 3, 2]);
    // allowzero: 0 means an empty dimension.
    let e = Tensor::zeros(DType::F32, &[0, 3]).unwrap();
    let y = run("Reshape", 14, int("allowzero", 1), vec![e, i1(&[3, 0])]).unwrap();
    assert_eq!(y.shape(), &[3, 0]);
    assert!(
        err(run("Reshape", 13, attrs(), vec![x.clone(), i1(&[-1, -1])]))
            .contains("more than one -1")
    );
    assert!(
        err(run("Reshape", 13, attrs(), vec![x.clone(), i1(&[5, -1])])).contains("cannot reshape")
    );
    assert!(err(run(
        "Reshape",
        13,
        attrs(),
        vec![x.clone(), i1(&[0, 0, 0, 0])]
    ))
    .contains("copies dimension"));
    assert!(err(run("Reshape", 13, attrs(), vec![x, i1(&[-2, 12])])).contains("invalid dimension"));
}

#[test]
fn reshape_infer_uses_constant_shape() {
    let op = super::Reshape {
        shape: None,
        allowzero: false,
    };
    let facts = [
        Fact::known(DType::F32, &[2, 3, 4]),
        Fact::constant(i1(&[-1, 4])),
    ];
    let out = crate::Operator::infer(&op, &facts).unwrap().unwrap();
    assert_eq!(out[0].concrete_shape().unwrap(), vec![6, 4]);
}

#[test]
fn flatten_squeeze_unsqueeze() {
    let x = arange(24, &[2, 3, 4]);
    assert_eq!(
        run("Flatten", 13, int("axis", 0), vec![x.clone()])
            .unwrap()
            .shape(),
        &[1, 24]
    );
    assert_eq!(
        run("Flatten", 13, int("axis", -1), vec![x.clone()])
            .unwrap()
            .shape(),
        &[6, 4]
    );
    assert_eq!(
        run("Flatten", 13, int("axis", 3), vec![x.clone()])
            .unwrap()
            .shape(),
        &[24, 1]
    );
    assert!(err(run("Flatten", 13, int("axis", 4), vec![x.clone()])).contains("axis"));

    let y = arange(6, &[1, 3, 1, 2]);
    assert_eq!(
        run("Squeeze", 11, attrs(), vec![y.clone()])
            .unwrap()
            .shape(),
        &[3, 2]
    );
    assert_eq!(
        run("Squeeze", 11, ints("axes", &[-2]), vec![y.clone()])
            .unwrap()
            .shape(),
        &[1, 3, 2]
    );
    assert_eq!(
        run("Squeeze", 13, attrs(), vec![y.clone(), i1(&[0])])
            .unwrap()
            .shape(),
        &[3, 1, 2]
    );
    assert!(err(run("Squeeze", 13, attrs(), vec![y.clone(), i1(&[1])])).contains("not 1"));
    assert!(err(run("Squeeze", 13, attrs(), vec![y.clone(), i1(&[4])])).contains("out of range"));

    let z = arange(6, &[3, 2]);
    assert_eq!(
        run("Unsqueeze", 11, ints("axes", &[0, 3]), vec![z.clone()])
            .unwrap()
            .shape(),
        &[1, 3, 2, 1]
    );
    assert_eq!(
        run("Unsqueeze", 13, attrs(), vec![z.clone(), i1(&[-1])])
            .unwrap()
            .shape(),
        &[3, 2, 1]
    );
    assert!(err(run("Unsqueeze", 13, attrs(), vec![z.clone(), i1(&[0, 0])])).contains("repeated"));
    assert!(err(run("Unsqueeze", 13, attrs(), vec![z])).contains("missing"));
}

#[test]
fn transpose_default_and_perm() {
    let x = arange(6, &[2, 3]);
    let y = run("Transpose", 13, attrs(), vec![x.clone()]).unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    assert!(y.is_contiguous());
    assert_eq!(fv(&y), vec![0., 3., 1., 4., 2., 5.]);
    let x = arange(24, &[2, 3, 4]);
    let y = run("Transpose", 13, ints("perm", &[1, 2, 0]), vec![x.clone()]).unwrap();
    assert_eq!(y.shape(), &[3, 4, 2]);
    assert_eq!(fv(&y)[..4], [0., 12., 1., 13.]);
    assert!(err(run("Transpose", 13, ints("perm", &[0, 0, 1]), vec![x])).contains("permutation"));
}

#[test]
fn shape_and_size() {
    let x = arange(24, &[2, 3, 4]);
    assert_eq!(
        iv(&run("Shape", 13, attrs(), vec![x.clone()]).unwrap()),
        vec![2, 3, 4]
    );
    let a = int("start", -2).with("end", Attribute::Int(100));
    assert_eq!(
        iv(&run("Shape", 15, a, vec![x.clone()]).unwrap()),
        vec![3, 4]
    );
    let a = int("start", 2).with("end", Attribute::Int(1));
    assert_eq!(run("Shape", 15, a, vec![x.clone()]).unwrap().shape(), &[0]);
    // start/end are ignored before opset 15.
    assert_eq!(
        iv(&run("Shape", 13, int("start", 1), vec![x.clone()]).unwrap()),
        vec![2, 3, 4]
    );
    let s = run("Size", 13, attrs(), vec![x]).unwrap();
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(iv(&s), vec![24]);
    let facts = [Fact::known(DType::F32, &[5, 7])];
    let op = super::ShapeOp {
        start: 0,
        end: None,
    };
    let inferred = crate::Operator::infer(&op, &facts).unwrap().unwrap();
    assert_eq!(iv(inferred[0].value.as_ref().unwrap()), vec![5, 7]);
}

// ----- concat / split / slice -------------------------------------------------------------

#[test]
fn concat_axes_and_errors() {
    let a = arange(4, &[2, 2]);
    let b = f(&[10., 11.], &[2, 1]);
    let y = run("Concat", 13, int("axis", -1), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(fv(&y), vec![0., 1., 10., 2., 3., 11.]);
    let y = run("Concat", 13, int("axis", 0), vec![a.clone(), a.clone()]).unwrap();
    assert_eq!(fv(&y), vec![0., 1., 2., 3., 0., 1., 2., 3.]);
    let e = Tensor::zeros(DType::F32, &[0, 2]).unwrap();
    assert_eq!(
        run("Concat", 13, int("axis", 0), vec![e, a.clone()])
            .unwrap()
            .shape(),
        &[2, 2]
    );
    assert!(err(run(
        "Concat",
        13,
        int("axis", 0),
        vec![a.clone(), b.clone()]
    ))
    .contains("does not match"));
    assert!(err(run(
        "Concat",
        13,
        int("axis", 2),
        vec![a.clone(), a.clone()]
    ))
    .contains("axis"));
    assert!(err(run("Concat", 13, attrs(), vec![a.clone()])).contains("required"));
    assert!(err(run(
        "Concat",
        13,
        int("axis", 0),
        vec![a, i(&[1, 2], &[1, 2])]
    ))
    .contains("dtype"));
    let s = Tensor::from_strings(vec!["a".into(), "b".into()], &[2]).unwrap();
    let y = run("Concat", 13, int("axis", 0), vec![s.clone(), s]).unwrap();
    assert_eq!(y.as_strings().unwrap(), &["a", "b", "a", "b"]);
}

#[test]
fn split_across_opsets() {
    let x = arange(6, &[6]);
    let outs =
        |v: Vec<Value>| -> Vec<Vec<f32>> { v.iter().map(|t| fv(t.as_tensor().unwrap())).collect() };
    let o = run_n(
        "Split",
        11,
        ints("split", &[2, 4]),
        vec![Some(x.clone())],
        2,
    )
    .unwrap();
    assert_eq!(outs(o), vec![vec![0., 1.], vec![2., 3., 4., 5.]]);
    let o = run_n(
        "Split",
        13,
        attrs(),
        vec![Some(x.clone()), Some(i1(&[1, 5]))],
        2,
    )
    .unwrap();
    assert_eq!(outs(o), vec![vec![0.], vec![1., 2., 3., 4., 5.]]);
    let o = run_n("Split", 13, attrs(), vec![Some(x.clone())], 3).unwrap();
    assert_eq!(outs(o), vec![vec![0., 1.], vec![2., 3.], vec![4., 5.]]);
    let x7 = arange(7, &[7]);
    let o = run_n(
        "Split",
        18,
        int("num_outputs", 4),
        vec![Some(x7.clone())],
        4,
    )
    .unwrap();
    assert_eq!(
        outs(o),
        vec![vec![0., 1.], vec![2., 3.], vec![4., 5.], vec![6.]]
    );
    assert!(err(run_n("Split", 13, attrs(), vec![Some(x7)], 3)).contains("evenly"));
    assert!(err(run_n(
        "Split",
        13,
        attrs(),
        vec![Some(x.clone()), Some(i1(&[1, 2]))],
        2
    ))
    .contains("does not cut"));
    // 2-D along axis 1 materializes contiguous pieces.
    let m = arange(6, &[2, 3]);
    let o = run_n(
        "Split",
        13,
        int("axis", 1),
        vec![Some(m), Some(i1(&[2, 1]))],
        2,
    )
    .unwrap();
    let first = o[0].as_tensor().unwrap();
    assert!(first.is_contiguous());
    assert_eq!(fv(first), vec![0., 1., 3., 4.]);
    assert_eq!(fv(o[1].as_tensor().unwrap()), vec![2., 5.]);
}

#[test]
fn slice_steps_clamping_and_attrs() {
    let x = arange(10, &[10]);
    let y = run(
        "Slice",
        13,
        attrs(),
        vec![x.clone(), i1(&[1]), i1(&[8]), i1(&[0]), i1(&[3])],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![1., 4., 7.]);
    let y = run(
        "Slice",
        13,
        attrs(),
        vec![x.clone(), i1(&[-1]), i1(&[i64::MIN]), i1(&[0]), i1(&[-1])],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![9., 8., 7., 6., 5., 4., 3., 2., 1., 0.]);
    let y = run(
        "Slice",
        13,
        attrs(),
        vec![x.clone(), i1(&[2]), i1(&[i64::MAX])],
    )
    .unwrap();
    assert_eq!(fv(&y).len(), 8);
    let y = run(
        "Slice",
        13,
        attrs(),
        vec![x.clone(), i1(&[20]), i1(&[-20]), i1(&[0]), i1(&[-3])],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![9., 6., 3., 0.]);
    let empty = Tensor::zeros(DType::F32, &[0]).unwrap();
    let y = run(
        "Slice",
        13,
        attrs(),
        vec![empty, i1(&[-1]), i1(&[-10]), i1(&[0]), i1(&[-1])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[0]);
    let y = run("Slice", 13, attrs(), vec![x.clone(), i1(&[5]), i1(&[2])]).unwrap();
    assert_eq!(y.shape(), &[0]);
    let m = arange(12, &[3, 4]);
    let y = run(
        "Slice",
        13,
        attrs(),
        vec![m.clone(), i1(&[1, 0]), i1(&[3, -1]), i1(&[-1, 0])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(fv(&y), vec![1., 2., 5., 6.]);
    let a = ints("starts", &[0, 1]).with("ends", Attribute::Ints(vec![2, 3]));
    let y = run("Slice", 9, a, vec![m.clone()]).unwrap();
    assert_eq!(fv(&y), vec![1., 2., 5., 6.]);
    assert!(err(run(
        "Slice",
        13,
        attrs(),
        vec![x.clone(), i1(&[0]), i1(&[1]), i1(&[0]), i1(&[0])]
    ))
    .contains("step is 0"));
    assert!(err(run(
        "Slice",
        13,
        attrs(),
        vec![m.clone(), i1(&[0, 0]), i1(&[1, 1]), i1(&[1, 1])]
    ))
    .contains("repeated"));
    assert!(err(run("Slice", 13, attrs(), vec![m, i1(&[0]), i1(&[1, 1])])).contains("length"));
}

// ----- gather / scatter -------------------------------------------------------------------

#[test]
fn gather_axes_and_negative_indices() {
    let x = arange(6, &[3, 2]);
    let y = run(
        "Gather",
        13,
        attrs(),
        vec![x.clone(), i(&[0, -1, 1, 0], &[2, 2])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 2, 2]);
    assert_eq!(fv(&y), vec![0., 1., 4., 5., 2., 3., 0., 1.]);
    let y = run("Gather", 13, int("axis", 1), vec![x.clone(), i(&[1], &[])]).unwrap();
    assert_eq!(y.shape(), &[3]);
    assert_eq!(fv(&y), vec![1., 3., 5.]);
    let idx32 = Tensor::from_slice(&[2i32, 0], &[2]).unwrap();
    assert_eq!(
        fv(&run("Gather", 13, int("axis", -1), vec![arange(3, &[3]), idx32]).unwrap()),
        vec![2., 0.]
    );
    assert!(err(run("Gather", 13, attrs(), vec![x.clone(), i1(&[3])])).contains("out of range"));
    assert!(err(run("Gather", 13, int("axis", 2), vec![x.clone(), i1(&[0])])).contains("axis"));
    assert!(err(run("Gather", 13, attrs(), vec![x, f(&[0.], &[1])])).contains("dtype"));
}

#[test]
fn gather_elements_and_nd() {
    let x = f(&[1., 2., 3., 4.], &[2, 2]);
    let y = run(
        "GatherElements",
        13,
        int("axis", 1),
        vec![x.clone(), i(&[0, 0, 1, 0], &[2, 2])],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![1., 1., 4., 3.]);
    let y = run(
        "GatherElements",
        13,
        attrs(),
        vec![x.clone(), i(&[1, -2], &[1, 2])],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![3., 2.]);
    assert!(err(run(
        "GatherElements",
        13,
        attrs(),
        vec![x.clone(), i(&[2, 0], &[1, 2])]
    ))
    .contains("out of range"));

    let y = run(
        "GatherND",
        13,
        attrs(),
        vec![x.clone(), i(&[0, 0, 1, 1], &[2, 2])],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![1., 4.]);
    let y = run(
        "GatherND",
        13,
        attrs(),
        vec![x.clone(), i(&[1, 0], &[2, 1])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(fv(&y), vec![3., 4., 1., 2.]);
    // batch_dims = 1 (ONNX example 5).
    let d = arange(8, &[2, 2, 2]);
    let y = run(
        "GatherND",
        13,
        int("batch_dims", 1),
        vec![d.clone(), i(&[1, 0], &[2, 1])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(fv(&y), vec![2., 3., 4., 5.]);
    assert!(err(run(
        "GatherND",
        13,
        attrs(),
        vec![x, i(&[0, 0, 0], &[1, 3])]
    ))
    .contains("does not fit"));
}

#[test]
fn scatter_nd_and_elements_with_reductions() {
    let data = arange(8, &[8]);
    let idx = i(&[4, 3, 1, 7], &[4, 1]);
    let upd = f(&[9., 10., 11., 12.], &[4]);
    let y = run(
        "ScatterND",
        13,
        attrs(),
        vec![data.clone(), idx.clone(), upd.clone()],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![0., 11., 2., 10., 9., 5., 6., 12.]);
    let add = attrs().with("reduction", Attribute::String(b"add".to_vec()));
    let y = run(
        "ScatterND",
        16,
        add.clone(),
        vec![data.clone(), idx.clone(), upd.clone()],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![0., 12., 2., 13., 13., 5., 6., 19.]);
    let max = attrs().with("reduction", Attribute::String(b"max".to_vec()));
    assert!(err(run(
        "ScatterND",
        16,
        max.clone(),
        vec![data.clone(), idx.clone(), upd.clone()]
    ))
    .contains("reduction"));
    assert!(err(run(
        "ScatterND",
        13,
        attrs(),
        vec![data.clone(), idx.clone(), f(&[1.], &[1])]
    ))
    .contains("updates shape"));

    let d = f(&[0.; 9], &[3, 3]);
    let idx = i(&[1, 0, 2, 0, 2, 1], &[2, 3]);
    let upd = f(&[1., 1.1, 1.2, 2., 2.1, 2.2], &[2, 3]);
    let y = run(
        "ScatterElements",
        13,
        attrs(),
        vec![d.clone(), idx.clone(), upd.clone()],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![2., 1.1, 0., 1., 0., 2.2, 0., 2.1, 1.2]);
    let y = run(
        "Scatter",
        9,
        int("axis", 1),
        vec![
            f(&[1., 2., 3., 4., 5.], &[1, 5]),
            i(&[1, 3], &[1, 2]),
            f(&[1.1, 2.1], &[1, 2]),
        ],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![1., 1.1, 3., 2.1, 5.]);
    let mul = int("axis", 1).with("reduction", Attribute::String(b"mul".to_vec()));
    let y = run(
        "ScatterElements",
        18,
        mul,
        vec![
            f(&[1., 2., 3., 4., 5.], &[1, 5]),
            i(&[1, 1], &[1, 2]),
            f(&[1.1, 2.1], &[1, 2]),
        ],
    )
    .unwrap();
    assert!((fv(&y)[1] - 2.0 * 1.1 * 2.1).abs() < 1e-5);
    let mn = int("axis", 1).with("reduction", Attribute::String(b"min".to_vec()));
    let y = run(
        "ScatterElements",
        18,
        mn,
        vec![
            i(&[5, 5], &[1, 2]),
            i(&[0, 0], &[1, 2]),
            i(&[7, 3], &[1, 2]),
        ],
    )
    .unwrap();
    assert_eq!(iv(&y), vec![3, 5]);
}

// ----- compress / nonzero / onehot --------------------------------------------------------

#[test]
fn compress_nonzero_onehot() {
    let x = arange(6, &[3, 2]);
    let c = Tensor::from_bools(&[false, true, true], &[3]).unwrap();
    let y = run("Compress", 11, int("axis", 0), vec![x.clone(), c.clone()]).unwrap();
    assert_eq!(fv(&y), vec![2., 3., 4., 5.]);
    let y = run("Compress", 11, attrs(), vec![x.clone(), c]).unwrap();
    assert_eq!(fv(&y), vec![1., 2.]);
    let long = Tensor::from_bools(&[false, false, false, true], &[4]).unwrap();
    assert!(err(run("Compress", 11, int("axis", 0), vec![x, long])).contains("beyond"));

    let y = run("NonZero", 13, attrs(), vec![f(&[1., 0., 0., 3.], &[2, 2])]).unwrap();
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(iv(&y), vec![0, 1, 0, 1]);
    let y = run("NonZero", 13, attrs(), vec![Tensor::scalar(3.0f32)]).unwrap();
    assert_eq!(y.shape(), &[1, 1]);
    let y = run(
        "NonZero",
        13,
        attrs(),
        vec![Tensor::from_bools(&[false, true], &[2]).unwrap()],
    )
    .unwrap();
    assert_eq!(iv(&y), vec![1]);

    let vals = f(&[0., 1.], &[2]);
    let y = run(
        "OneHot",
        11,
        attrs(),
        vec![i1(&[1, -1, 5]), i(&[3], &[]), vals.clone()],
    )
    .unwrap();
    assert_eq!(y.shape(), &[3, 3]);
    assert_eq!(fv(&y), vec![0., 1., 0., 0., 0., 1., 0., 0., 0.]);
    let y = run(
        "OneHot",
        11,
        int("axis", 0),
        vec![i1(&[0, 2]), f(&[3.], &[1]), f(&[2., 5.], &[2])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    assert_eq!(fv(&y), vec![5., 2., 2., 2., 2., 5.]);
    assert!(err(run(
        "OneHot",
        11,
        attrs(),
        vec![i1(&[0]), i(&[0], &[]), vals.clone()]
    ))
    .contains("depth"));
    assert!(err(run(
        "OneHot",
        11,
        attrs(),
        vec![i1(&[0]), i(&[1 << 40], &[]), vals]
    ))
    .contains("too many"));
}

// ----- layout ops -------------------------------------------------------------------------

#[test]
fn depth_to_space_and_back() {
    // numpy: x = arange(16).reshape(1, 8, 1, 2)
    let x = arange(16, &[1, 8, 1, 2]);
    let dcr = run("DepthToSpace", 13, int("blocksize", 2), vec![x.clone()]).unwrap();
    assert_eq!(dcr.shape(), &[1, 2, 2, 4]);
    assert_eq!(
        fv(&dcr),
        vec![0., 4., 1., 5., 8., 12., 9., 13., 2., 6., 3., 7., 10., 14., 11., 15.]
    );
    let a = int("blocksize", 2).with("mode", Attribute::String(b"CRD".to_vec()));
    let crd = run("DepthToSpace", 13, a, vec![x.clone()]).unwrap();
    assert_eq!(
        fv(&crd),
        vec![0., 2., 1., 3., 4., 6., 5., 7., 8., 10., 9., 11., 12., 14., 13., 15.]
    );
    let back = run("SpaceToDepth", 13, int("blocksize", 2), vec![dcr]).unwrap();
    assert_eq!(back.shape(), x.shape());
    assert_eq!(fv(&back), fv(&x));
    // SpaceToDepth in CRD mode undoes DepthToSpace in CRD mode.
    let a = int("blocksize", 2).with("mode", Attribute::String(b"CRD".to_vec()));
    let back = run("SpaceToDepth", 25, a, vec![crd]).unwrap();
    assert_eq!(fv(&back), fv(&x));
    assert!(err(run(
        "DepthToSpace",
        13,
        int("blocksize", 3),
        vec![x.clone()]
    ))
    .contains("divisible"));
    assert!(err(run(
        "SpaceToDepth",
        13,
        int("blocksize", 2),
        vec![x.clone()]
    ))
    .contains("divisible"));
    assert!(err(run("SpaceToDepth", 13, int("blocksize", 0), vec![x])).contains("blocksize"));
}

#[test]
fn expand_and_tile() {
    let x = f(&[1., 2., 3.], &[3, 1]);
    let y = run("Expand", 13, attrs(), vec![x.clone(), i1(&[2, 1, 2])]).unwrap();
    assert_eq!(y.shape(), &[2, 3, 2]);
    assert_eq!(fv(&y), vec![1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]);
    let y = run("Expand", 13, attrs(), vec![x.clone(), i1(&[1])]).unwrap();
    assert_eq!(y.shape(), &[3, 1]);
    assert!(
        err(run("Expand", 13, attrs(), vec![x.clone(), i1(&[4, 2])]))
            .contains("cannot be expanded")
    );
    assert!(err(run(
        "Expand",
        13,
        attrs(),
        vec![x.clone(), i1(&[1 << 20, 1 << 20, 3, 1])]
    ))
    .contains("too many"));

    let m = f(&[1., 2., 3., 4.], &[2, 2]);
    let y = run("Tile", 13, attrs(), vec![m.clone(), i1(&[1, 2])]).unwrap();
    assert_eq!(fv(&y), vec![1., 2., 1., 2., 3., 4., 3., 4.]);
    let y = run("Tile", 13, attrs(), vec![m.clone(), i1(&[2, 1])]).unwrap();
    assert_eq!(fv(&y), vec![1., 2., 3., 4., 1., 2., 3., 4.]);
    assert!(err(run("Tile", 13, attrs(), vec![m.clone(), i1(&[2])])).contains("one entry per axis"));
    assert!(err(run("Tile", 13, attrs(), vec![m.clone(), i1(&[-1, 1])])).contains("negative"));
    assert!(err(run("Tile", 13, attrs(), vec![m, i1(&[1 << 20, 1 << 20])])).contains("too many"));
}

// ----- creation and conversion ------------------------------------------------------------

#[test]
fn cast_and_cast_like() {
    let x = f(&[1.7, -2.5], &[2]);
    let y = run(
        "Cast",
        13,
        int("to", DType::I32.onnx_code() as i64),
        vec![x.clone()],
    )
    .unwrap();
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![1, -2]);
    let a = int("to", DType::F64.onnx_code() as i64).with("saturate", Attribute::Int(1));
    assert_eq!(
        run("Cast", 19, a, vec![x.clone()]).unwrap().dtype(),
        DType::F64
    );
    let old = attrs().with("to", Attribute::String(b"INT64".to_vec()));
    assert_eq!(
        iv(&run("Cast", 1, old, vec![x.clone()]).unwrap()),
        vec![1, -2]
    );
    let y = run("CastLike", 15, attrs(), vec![x.clone(), i1(&[0])]).unwrap();
    assert_eq!(iv(&y), vec![1, -2]);
    assert!(err(run("Cast", 13, int("to", 99), vec![x.clone()])).contains("'to'"));
    let s = run(
        "Cast",
        13,
        int("to", DType::String.onnx_code() as i64),
        vec![x],
    )
    .unwrap();
    assert_eq!(s.as_strings().unwrap(), &["1.7000000476837158", "-2.5"]);
}

#[test]
fn constant_attributes() {
    let y = run(
        "Constant",
        13,
        attrs().with("value", Attribute::Tensor(i1(&[4, 5]))),
        vec![],
    )
    .unwrap();
    assert_eq!(iv(&y), vec![4, 5]);
    let y = run(
        "Constant",
        13,
        attrs().with("value_float", Attribute::Float(2.5)),
        vec![],
    )
    .unwrap();
    assert_eq!(y.shape(), &[] as &[usize]);
    assert_eq!(fv(&y), vec![2.5]);
    let y = run(
        "Constant",
        13,
        attrs().with("value_ints", Attribute::Ints(vec![1, 2, 3])),
        vec![],
    )
    .unwrap();
    assert_eq!(y.shape(), &[3]);
    let y = run(
        "Constant",
        13,
        attrs().with("value_int", Attribute::Int(7)),
        vec![],
    )
    .unwrap();
    assert_eq!(iv(&y), vec![7]);
    let y = run(
        "Constant",
        13,
        attrs().with("value_floats", Attribute::Floats(vec![1.0, 2.0])),
        vec![],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![1., 2.]);
    let y = run(
        "Constant",
        13,
        attrs().with(
            "value_strings",
            Attribute::Strings(vec![b"a".to_vec(), b"bc".to_vec()]),
        ),
        vec![],
    )
    .unwrap();
    assert_eq!(y.as_strings().unwrap(), &["a", "bc"]);
    let y = run(
        "Constant",
        13,
        attrs().with("value_string", Attribute::String(b"x".to_vec())),
        vec![],
    )
    .unwrap();
    assert_eq!(y.as_strings().unwrap(), &["x"]);
    assert!(err(run(
        "Constant",
        13,
        attrs().with("sparse_value", Attribute::Int(0)),
        vec![]
    ))
    .contains("sparse"));
    assert!(err(run("Constant", 13, attrs(), vec![])).contains("exactly one"));
    let two = attrs()
        .with("value_int", Attribute::Int(1))
        .with("value_float", Attribute::Float(1.0));
    assert!(err(run("Constant", 13, two, vec![])).contains("exactly one"));
    assert!(err(run(
        "Constant",
        13,
        attrs().with("value_int", Attribute::Float(1.0)),
        vec![]
    ))
    .contains("type"));
}

#[test]
fn constant_of_shape() {
    let y = run("ConstantOfShape", 20, attrs(), vec![i1(&[2, 3])]).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(fv(&y), vec![0.; 6]);
    let v = attrs().with("value", Attribute::Tensor(i1(&[7])));
    let y = run("ConstantOfShape", 20, v.clone(), vec![i1(&[2])]).unwrap();
    assert_eq!(iv(&y), vec![7, 7]);
    let y = run("ConstantOfShape", 20, v.clone(), vec![i1(&[])]).unwrap();
    assert_eq!(y.shape(), &[] as &[usize]);
    assert_eq!(iv(&y), vec![7]);
    assert!(err(run(
        "ConstantOfShape",
        20,
        v.clone(),
        vec![i1(&[1 << 30, 1 << 30])]
    ))
    .contains("too many"));
    assert!(err(run(
        "ConstantOfShape",
        20,
        v.clone(),
        vec![i1(&[i64::MAX, i64::MAX])]
    ))
    .contains("too many"));
    assert!(err(run("ConstantOfShape", 20, v, vec![i1(&[-1])])).contains("negative"));
    let bad = attrs().with("value", Attribute::Tensor(i1(&[1, 2])));
    assert!(err(run("ConstantOfShape", 20, bad, vec![i1(&[1])])).contains("one plain element"));
}

#[test]
fn range_ints_floats_and_limits() {
    let y = run(
        "Range",
        11,
        attrs(),
        vec![i(&[3], &[]), i(&[9], &[]), i(&[3], &[])],
    )
    .unwrap();
    assert_eq!(iv(&y), vec![3, 6]);
    let y = run(
        "Range",
        11,
        attrs(),
        vec![i(&[10], &[]), i(&[4], &[]), i(&[-3], &[])],
    )
    .unwrap();
    assert_eq!(iv(&y), vec![10, 7]);
    let y = run(
        "Range",
        11,
        attrs(),
        vec![i(&[1], &[]), i(&[0], &[]), i(&[1], &[])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[0]);
    let y = run(
        "Range",
        11,
        attrs(),
        vec![
            Tensor::scalar(1.0f32),
            Tensor::scalar(2.0f32),
            Tensor::scalar(0.25f32),
        ],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![1., 1.25, 1.5, 1.75]);
    assert!(err(run(
        "Range",
        11,
        attrs(),
        vec![i(&[0], &[]), i(&[i64::MAX], &[]), i(&[1], &[])]
    ))
    .contains("limit"));
    assert!(err(run(
        "Range",
        11,
        attrs(),
        vec![
            Tensor::scalar(0.0f32),
            Tensor::scalar(1e30f32),
            Tensor::scalar(1.0f32)
        ]
    ))
    .contains("limit"));
    assert!(err(run(
        "Range",
        11,
        attrs(),
        vec![i(&[0], &[]), i(&[5], &[]), i(&[0], &[])]
    ))
    .contains("delta"));
    assert!(err(run(
        "Range",
        11,
        attrs(),
        vec![i(&[0], &[]), Tensor::scalar(5.0f32), i(&[1], &[])]
    ))
    .contains("dtype"));
}

#[test]
fn eye_like_and_trilu() {
    let x = Tensor::zeros(DType::I32, &[2, 3]).unwrap();
    let y = run("EyeLike", 13, int("k", 1), vec![x.clone()]).unwrap();
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![0, 1, 0, 0, 0, 1]);
    let a = int("dtype", DType::F32.onnx_code() as i64).with("k", Attribute::Int(-1));
    let y = run("EyeLike", 13, a, vec![x]).unwrap();
    assert_eq!(fv(&y), vec![0., 0., 0., 1., 0., 0.]);
    assert!(err(run("EyeLike", 13, attrs(), vec![arange(3, &[3])])).contains("2-D"));

    let m = arange(9, &[3, 3]).reshape(&[1, 3, 3]).unwrap();
    let y = run("Trilu", 14, attrs(), vec![m.clone()]).unwrap();
    assert_eq!(fv(&y), vec![0., 1., 2., 0., 4., 5., 0., 0., 8.]);
    let y = run("Trilu", 14, int("upper", 0), vec![m.clone(), i(&[-1], &[])]).unwrap();
    assert_eq!(fv(&y), vec![0., 0., 0., 3., 0., 0., 6., 7., 0.]);
    let y = run("Trilu", 14, attrs(), vec![m.clone(), i(&[5], &[])]).unwrap();
    assert_eq!(fv(&y), vec![0.; 9]);
    assert!(err(run("Trilu", 14, attrs(), vec![arange(3, &[3])])).contains("rank"));
}

#[test]
fn dropout_is_identity_with_mask() {
    let x = f(&[1., 2.], &[2]);
    let o = run_n("Dropout", 13, attrs(), vec![Some(x.clone())], 2).unwrap();
    assert_eq!(fv(o[0].as_tensor().unwrap()), vec![1., 2.]);
    assert_eq!(o[1].as_tensor().unwrap().as_bool_slice().unwrap(), &[1, 1]);
    let o = run_n("Dropout", 7, attrs(), vec![Some(x.clone())], 2).unwrap();
    assert_eq!(fv(o[1].as_tensor().unwrap()), vec![1., 1.]);
    let o = run_n("Dropout", 13, attrs(), vec![Some(x.clone())], 1).unwrap();
    assert_eq!(o.len(), 1);
    let train = Tensor::from_bools(&[true], &[]).unwrap();
    // numpy RandomState(0).uniform draws 0.549, 0.715, 0.603, 0.545, 0.424: the last is
    // dropped at ratio 0.5 (default), the others doubled.
    let x5 = f(&[1., 2., 3., 4., 5.], &[5]);
    let seeded = attrs().with("seed", Attribute::Int(0));
    let o = run_n(
        "Dropout",
        13,
        seeded,
        vec![Some(x5), None, Some(train.clone())],
        2,
    )
    .unwrap();
    assert_eq!(fv(o[0].as_tensor().unwrap()), vec![2., 4., 6., 8., 0.]);
    assert_eq!(
        o[1].as_tensor().unwrap().as_bool_slice().unwrap(),
        &[1, 1, 1, 1, 0]
    );
    let o = run_n(
        "Dropout",
        13,
        attrs(),
        vec![Some(x), Some(Tensor::scalar(0.0f32)), Some(train)],
        1,
    )
    .unwrap();
    assert_eq!(o.len(), 1);
}

#[test]
fn pad_modes() {
    let x = f(&[1., 2., 3.], &[1, 3]);
    let pads = i1(&[0, 2, 0, 1]);
    let mode = |m: &str| attrs().with("mode", Attribute::String(m.as_bytes().to_vec()));
    let y = run(
        "Pad",
        13,
        attrs(),
        vec![x.clone(), pads.clone(), Tensor::scalar(9.0f32)],
    )
    .unwrap();
    assert_eq!(y.shape(), &[1, 6]);
    assert_eq!(fv(&y), vec![9., 9., 1., 2., 3., 9.]);
    assert_eq!(
        fv(&run("Pad", 13, mode("reflect"), vec![x.clone(), pads.clone()]).unwrap()),
        vec![3., 2., 1., 2., 3., 2.]
    );
    assert_eq!(
        fv(&run("Pad", 13, mode("edge"), vec![x.clone(), pads.clone()]).unwrap()),
        vec![1., 1., 1., 2., 3., 3.]
    );
    assert_eq!(
        fv(&run("Pad", 19, mode("wrap"), vec![x.clone(), pads.clone()]).unwrap()),
        vec![2., 3., 1., 2., 3., 1.]
    );
    assert!(
        err(run("Pad", 13, mode("wrap"), vec![x.clone(), pads.clone()])).contains("not supported")
    );
    // Negative pads crop.
    let y = run("Pad", 13, attrs(), vec![x.clone(), i1(&[0, -1, 1, 0])]).unwrap();
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(fv(&y), vec![2., 3., 0., 0.]);
    // Axes input (opset 18).
    let y = run(
        "Pad",
        18,
        attrs(),
        vec![x.clone(), i1(&[1, 1]), Tensor::scalar(5.0f32), i1(&[-1])],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![5., 1., 2., 3., 5.]);
    // Attribute forms.
    let y = run(
        "Pad",
        2,
        ints("pads", &[1, 0, 0, 0]).with("value", Attribute::Float(4.0)),
        vec![x.clone()],
    )
    .unwrap();
    assert_eq!(fv(&y), vec![4., 4., 4., 1., 2., 3.]);
    let y = run("Pad", 1, ints("paddings", &[0, 1, 0, 0]), vec![x.clone()]).unwrap();
    assert_eq!(fv(&y), vec![0., 1., 2., 3.]);
    // 2-D reflect against numpy.pad(arange(6).reshape(2,3), ((1,1),(2,0)), 'reflect').
    let m = arange(6, &[2, 3]);
    let y = run("Pad", 13, mode("reflect"), vec![m, i1(&[1, 2, 1, 0])]).unwrap();
    assert_eq!(
        fv(&y),
        vec![5., 4., 3., 4., 5., 2., 1., 0., 1., 2., 5., 4., 3., 4., 5., 2., 1., 0., 1., 2.]
    );
    assert!(err(run("Pad", 13, attrs(), vec![x.clone(), i1(&[0, 1])])).contains("2 entries"));
    assert!(err(run(
        "Pad",
        13,
        attrs(),
        vec![x.clone(), i1(&[0, -2, 0, -2])]
    ))
    .contains("crop"));
    assert!(err(run("Pad", 13, attrs(), vec![x, i1(&[0, 1 << 40, 0, 0])])).contains("too many"));
}

#[test]
fn identity_passes_sequences() {
    let ctx = BuildCtx {
        node_name: "",
        op_type: "Identity",
        domain: "",
        opset: 16,
        attrs: &Attributes::new(),
        input_count: 1,
        output_count: 1,
    };
    let op = registry().build(&ctx).unwrap();
    let out = op
        .eval(
            &EvalCtx::default(),
            Inputs::new(vec![Some(Value::Sequence(vec![arange(2, &[2])]))]),
        )
        .unwrap();
    assert!(matches!(&out[0], Value::Sequence(s) if s.len() == 1));
}

#[test]
fn bitcast_reinterprets_same_width_types() {
    let to = |d: DType| int("to", d.onnx_code() as i64);
    let x = Tensor::from_vec(vec![1.0f32, -2.0], &[2]).unwrap();
    let y = run("BitCast", 26, to(DType::I32), vec![x.clone()]).unwrap();
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![0x3F80_0000, -0x4000_0000]);
    assert_eq!(y.shape(), &[2]);
    let b = Tensor::from_bools(&[true, false], &[2]).unwrap();
    let y = run("BitCast", 26, to(DType::U8), vec![b]).unwrap();
    assert_eq!(y.to_vec::<u8>().unwrap(), vec![1, 0]);
    // int4 -1 (stored sign-extended) is uint4 15.
    let i4 = Tensor::from_raw_bytes(DType::I4, &[2], &[0xFF, 7]).unwrap();
    let y = run("BitCast", 26, to(DType::U4), vec![i4]).unwrap();
    assert_eq!(y.raw_bytes().unwrap(), &[15, 7]);
    assert!(err(run("BitCast", 26, to(DType::I64), vec![x])).contains("32 bits"));
}

#[test]
fn large_concat_on_two_threads_matches_one() {
    let a = arange(2 * 3 * 10_000, &[2, 3, 100, 100]);
    let b = f(
        &(0..2 * 5 * 10_000).map(|x| -(x as f32)).collect::<Vec<_>>(),
        &[2, 5, 100, 100],
    );
    let attrs = int("axis", 1);
    let ctx = BuildCtx {
        node_name: "n",
        op_type: "Concat",
        domain: "",
        opset: 13,
        attrs: &attrs,
        input_count: 2,
        output_count: 1,
    };
    let op = registry().build(&ctx).unwrap();
    let pool = crate::SpinPool::new(2);
    let two = EvalCtx {
        parallel: &pool,
        alloc: &crate::HeapTensorAlloc,
    };
    let inputs = || {
        Inputs::new(vec![
            Some(Value::Tensor(a.clone())),
            Some(Value::Tensor(b.clone())),
        ])
    };
    let par = op
        .eval(&two, inputs())
        .unwrap()
        .remove(0)
        .into_tensor()
        .unwrap();
    let serial = run("Concat", 13, int("axis", 1), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(par.shape(), &[2, 8, 100, 100]);
    assert_eq!(fv(&par), fv(&serial));
    let v = fv(&par);
    // Batch 1, channel 3 is `b`'s first channel of batch 1.
    assert_eq!(v[(8 + 3) * 10_000], -(5.0 * 10_000.0));
    assert_eq!(v[8 * 10_000 + 5], (3 * 10_000 + 5) as f32);
}
