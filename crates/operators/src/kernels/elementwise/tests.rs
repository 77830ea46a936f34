//! Op-level tests of the elementwise kernels, built through the registry.

#![allow(clippy::excessive_precision, clippy::approx_constant)]

use crate::{
    Attribute, Attributes, BuildCtx, EvalCtx, Fact, Inputs, OpRegistry, OpResult, Operator,
};
use strata_tensor::{bf16, f16, DType, Tensor};

fn build(op_type: &str, opset: i64, attrs: Attributes) -> OpResult<Box<dyn Operator>> {
    let mut r = OpRegistry::new();
    super::register(&mut r);
    r.build(&BuildCtx {
        node_name: "test",
        op_type,
        domain: "",
        opset,
        attrs: &attrs,
        input_count: 2,
        output_count: 1,
    })
}

fn op(op_type: &str, opset: i64) -> Box<dyn Operator> {
    build(op_type, opset, Attributes::new()).unwrap()
}

fn run(op: &dyn Operator, inputs: Vec<Tensor>) -> OpResult<Tensor> {
    let mut out = op.eval(&EvalCtx::default(), Inputs::from_tensors(inputs))?;
    Ok(out.remove(0).into_tensor().unwrap())
}

fn run_opt(op: &dyn Operator, inputs: Vec<Option<Tensor>>) -> OpResult<Tensor> {
    let values = inputs.into_iter().map(|t| t.map(Into::into)).collect();
    let mut out = op.eval(&EvalCtx::default(), Inputs::new(values))?;
    Ok(out.remove(0).into_tensor().unwrap())
}

fn f32s(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn i64s(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn bools(v: &[bool], shape: &[usize]) -> Tensor {
    Tensor::from_bools(v, shape).unwrap()
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()),
            "got {got:?}, want {want:?}"
        );
    }
}

const X5: [f32; 5] = [-2.0, -0.5, 0.0, 0.5, 2.0];

#[test]
fn float_unary_ops_match_numpy() {
    // Expected values from numpy (float64 math rounded to float32).
    let cases: &[(&str, [f32; 5])] = &[
        (
            "Sigmoid",
            [
                0.11920291930437088,
                0.3775406777858734,
                0.5,
                0.622459352016449,
                0.8807970881462097,
            ],
        ),
        (
            "Softplus",
            [
                0.12692801654338837,
                0.4740769863128662,
                0.6931471824645996,
                0.9740769863128662,
                2.1269280910491943,
            ],
        ),
        (
            "Softsign",
            [
                -0.6666666865348816,
                -0.3333333432674408,
                0.0,
                0.3333333432674408,
                0.6666666865348816,
            ],
        ),
        (
            "HardSigmoid",
            [
                0.10000000149011612,
                0.4000000059604645,
                0.5,
                0.6000000238418579,
                0.8999999761581421,
            ],
        ),
        (
            "HardSwish",
            [
                -0.3333333432674408,
                -0.2083333283662796,
                0.0,
                0.2916666567325592,
                1.6666666269302368,
            ],
        ),
        (
            "Elu",
            [-0.8646647334098816, -0.39346933364868164, 0.0, 0.5, 2.0],
        ),
        (
            "Selu",
            [
                -1.5201665163040161,
                -0.6917582154273987,
                0.0,
                0.5253505110740662,
                2.1014020442962646,
            ],
        ),
        (
            "Celu",
            [-0.8646647334098816, -0.39346933364868164, 0.0, 0.5, 2.0],
        ),
        (
            "LeakyRelu",
            [-0.019999999552965164, -0.004999999888241291, 0.0, 0.5, 2.0],
        ),
        (
            "Gelu",
            [
                -0.0455002635717392,
                -0.1542687714099884,
                0.0,
                0.3457312285900116,
                1.9544997215270996,
            ],
        ),
        (
            "Mish",
            [
                -0.2525014877319336,
                -0.22074377536773682,
                0.0,
                0.37524521350860596,
                1.9439589977264404,
            ],
        ),
        (
            "Erf",
            [
                -0.9953222870826721,
                -0.5204998850822449,
                0.0,
                0.5204998850822449,
                0.9953222870826721,
            ],
        ),
        (
            "Tanh",
            [
                -0.9640275835990906,
                -0.46211716532707214,
                0.0,
                0.46211716532707214,
                0.9640275835990906,
            ],
        ),
        (
            "Exp",
            [
                0.1353352814912796,
                0.6065306663513184,
                1.0,
                1.6487212181091309,
                7.389056205749512,
            ],
        ),
        (
            "Atan",
            [
                -1.1071487665176392,
                -0.46364760398864746,
                0.0,
                0.46364760398864746,
                1.1071487665176392,
            ],
        ),
        (
            "Sinh",
            [
                -3.6268603801727295,
                -0.5210952758789062,
                0.0,
                0.5210952758789062,
                3.6268603801727295,
            ],
        ),
        (
            "Asinh",
            [
                -1.4436354637145996,
                -0.4812118113040924,
                0.0,
                0.4812118113040924,
                1.4436354637145996,
            ],
        ),
        ("Relu", [0.0, 0.0, 0.0, 0.5, 2.0]),
        ("Abs", [2.0, 0.5, 0.0, 0.5, 2.0]),
        ("Neg", [2.0, 0.5, -0.0, -0.5, -2.0]),
        ("Sign", [-1.0, -1.0, 0.0, 1.0, 1.0]),
        ("ThresholdedRelu", [0.0, 0.0, 0.0, 0.0, 2.0]),
        ("Shrink", [-2.0, 0.0, 0.0, 0.0, 2.0]),
    ];
    for (name, want) in cases {
        let o = op(name, 22);
        let got = run(&*o, vec![f32s(&X5, &[5])]).unwrap();
        close(got.as_slice::<f32>().unwrap(), want, 2e-6);
        // f64 agrees too.
        let x64 = f32s(&X5, &[5]).cast(DType::F64).unwrap();
        let got64 = run(&*o, vec![x64]).unwrap().cast(DType::F32).unwrap();
        close(got64.as_slice::<f32>().unwrap(), want, 2e-6);
    }
    let gelu_tanh = build(
        "Gelu",
        20,
        Attributes::new().with("approximate", Attribute::String(b"tanh".to_vec())),
    )
    .unwrap();
    let got = run(&*gelu_tanh, vec![f32s(&X5, &[5])]).unwrap();
    let want = [
        -0.04540230706334114,
        -0.1542859971523285,
        0.0,
        0.3457140028476715,
        1.9545977115631104,
    ];
    close(got.as_slice::<f32>().unwrap(), &want, 2e-6);
}

#[test]
fn rounding_ops() {
    let x = f32s(&[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.7, -2.2], &[8]);
    let r = run(&*op("Round", 11), vec![x.clone()]).unwrap();
    assert_eq!(
        r.as_slice::<f32>().unwrap(),
        &[-2., -2., -0., 0., 2., 2., 3., -2.]
    );
    let f = run(&*op("Floor", 13), vec![x.clone()]).unwrap();
    assert_eq!(
        f.as_slice::<f32>().unwrap(),
        &[-3., -2., -1., 0., 1., 2., 2., -3.]
    );
    let c = run(&*op("Ceil", 13), vec![x]).unwrap();
    assert_eq!(
        c.as_slice::<f32>().unwrap(),
        &[-2., -1., -0., 1., 2., 3., 3., -2.]
    );
}

#[test]
fn half_types_compute_through_f32() {
    let x = Tensor::from_vec(vec![f16::from_f32(4.0), f16::from_f32(0.25)], &[2]).unwrap();
    let y = run(&*op("Sqrt", 13), vec![x]).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(
        y.as_slice::<f16>().unwrap(),
        &[f16::from_f32(2.0), f16::from_f32(0.5)]
    );
    let b = Tensor::from_vec(vec![bf16::from_f32(-3.0), bf16::from_f32(1.0)], &[2]).unwrap();
    let s = run(&*op("Add", 14), vec![b.clone(), b]).unwrap();
    assert_eq!(
        s.as_slice::<bf16>().unwrap(),
        &[bf16::from_f32(-6.0), bf16::from_f32(2.0)]
    );
}

#[test]
fn integer_unary_and_type_errors() {
    let x = Tensor::from_vec(vec![-3i32, 0, 5, i32::MIN], &[4]).unwrap();
    let a = run(&*op("Abs", 13), vec![x.clone()]).unwrap();
    assert_eq!(a.as_slice::<i32>().unwrap(), &[3, 0, 5, i32::MIN]);
    let r = run(&*op("Relu", 14), vec![x.clone()]).unwrap();
    assert_eq!(r.as_slice::<i32>().unwrap(), &[0, 0, 5, 0]);
    let s = run(&*op("Sign", 13), vec![x.clone()]).unwrap();
    assert_eq!(s.as_slice::<i32>().unwrap(), &[-1, 0, 1, -1]);
    let n = run(&*op("BitwiseNot", 18), vec![x.clone()]).unwrap();
    assert_eq!(n.as_slice::<i32>().unwrap(), &[2, -1, -6, i32::MAX]);
    let err = run(&*op("Exp", 13), vec![x]).unwrap_err().to_string();
    assert!(err.contains("input 0") && err.contains("int32"), "{err}");
    let err = run(&*op("Not", 1), vec![f32s(&[1.0], &[1])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("float32"), "{err}");
}

#[test]
fn predicates_and_not() {
    let x = f32s(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0], &[2, 2]);
    let n = run(&*op("IsNaN", 20), vec![x.clone()]).unwrap();
    assert_eq!(n.dtype(), DType::Bool);
    assert_eq!(n.shape(), &[2, 2]);
    assert_eq!(n.as_bool_slice().unwrap(), &[1, 0, 0, 0]);
    let i = run(&*op("IsInf", 20), vec![x.clone()]).unwrap();
    assert_eq!(i.as_bool_slice().unwrap(), &[0, 1, 1, 0]);
    let pos_only = build(
        "IsInf",
        20,
        Attributes::new().with("detect_negative", Attribute::Int(0)),
    )
    .unwrap();
    let p = run(&*pos_only, vec![x]).unwrap();
    assert_eq!(p.as_bool_slice().unwrap(), &[0, 1, 0, 0]);
    let not = run(&*op("Not", 1), vec![bools(&[true, false], &[2])]).unwrap();
    assert_eq!(not.as_bool_slice().unwrap(), &[0, 1]);
}

#[test]
fn clip_attributes_and_inputs() {
    let x = f32s(&[-3.0, -1.0, 0.5, 4.0, f32::NAN], &[5]);
    let legacy = build(
        "Clip",
        6,
        Attributes::new()
            .with("min", Attribute::Float(-1.5))
            .with("max", Attribute::Float(1.0)),
    )
    .unwrap();
    let got = run(&*legacy, vec![x.clone()]).unwrap();
    close(
        got.as_slice::<f32>().unwrap(),
        &[-1.5, -1.0, 0.5, 1.0, f32::NAN],
        0.0,
    );
    let modern = op("Clip", 13);
    let only_max = run_opt(
        &*modern,
        vec![Some(x.clone()), None, Some(Tensor::scalar(0.0f32))],
    )
    .unwrap();
    close(
        only_max.as_slice::<f32>().unwrap(),
        &[-3.0, -1.0, 0.0, 0.0, f32::NAN],
        0.0,
    );
    let ints = Tensor::from_vec(vec![-5i64, 0, 9], &[3]).unwrap();
    let got = run(
        &*modern,
        vec![ints, Tensor::scalar(-1i64), Tensor::scalar(3i64)],
    )
    .unwrap();
    assert_eq!(got.as_slice::<i64>().unwrap(), &[-1, 0, 3]);
    let err = run(&*modern, vec![x.clone(), f32s(&[0.0, 1.0], &[2])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("input 1") && err.contains("[2]"), "{err}");
    let err = run(&*modern, vec![x, Tensor::scalar(0.0f64)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("input 1") && err.contains("float64"), "{err}");
}

#[test]
fn binary_broadcasting_and_shapes() {
    let a = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = f32s(&[10.0, 20.0], &[2, 1]);
    let s = run(&*op("Add", 14), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(s.shape(), &[2, 3]);
    assert_eq!(
        s.as_slice::<f32>().unwrap(),
        &[11., 12., 13., 24., 25., 26.]
    );
    let d = run(&*op("Sub", 14), vec![Tensor::scalar(1.0f32), a.clone()]).unwrap();
    assert_eq!(d.as_slice::<f32>().unwrap(), &[0., -1., -2., -3., -4., -5.]);
    // Zero-size dimension broadcast against 1.
    let z = run(
        &*op("Mul", 14),
        vec![f32s(&[], &[0, 3]), f32s(&[1.0, 2.0, 3.0], &[1, 3])],
    )
    .unwrap();
    assert_eq!(z.shape(), &[0, 3]);
    // Non-contiguous input (a transposed view).
    let t = a.permute(&[1, 0]).unwrap();
    let m = run(&*op("Mul", 14), vec![t, f32s(&[1.0, -1.0], &[2])]).unwrap();
    assert_eq!(m.as_slice::<f32>().unwrap(), &[1., -4., 2., -5., 3., -6.]);
    // Incompatible shapes and dtypes are errors naming them.
    let err = run(&*op("Add", 14), vec![a.clone(), f32s(&[1.0, 2.0], &[2])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 3]") && err.contains("[2]"), "{err}");
    let err = run(&*op("Add", 14), vec![a, i64s(&[1], &[1])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("input 1") && err.contains("int64"), "{err}");
}

#[test]
fn integer_division_and_mod() {
    let a = i64s(&[7, -7, 7, -7, 5], &[5]);
    let b = i64s(&[2, 2, -2, -2, 0], &[5]);
    let d = run(&*op("Div", 14), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(d.as_slice::<i64>().unwrap(), &[3, -3, -3, 3, 0]);
    let m = run(&*op("Mod", 13), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(m.as_slice::<i64>().unwrap(), &[1, 1, -1, -1, 0]);
    let fmod = build("Mod", 13, Attributes::new().with("fmod", Attribute::Int(1))).unwrap();
    let m = run(&*fmod, vec![a, b]).unwrap();
    assert_eq!(m.as_slice::<i64>().unwrap(), &[1, -1, 1, -1, 0]);
    let fm = run(&*fmod, vec![f32s(&[-5.5, 5.5], &[2]), f32s(&[2.0], &[1])]).unwrap();
    assert_eq!(fm.as_slice::<f32>().unwrap(), &[-1.5, 1.5]);
    assert!(build("Mod", 13, Attributes::new().with("fmod", Attribute::Int(2))).is_err());
}

#[test]
fn pow_mixed_dtypes() {
    let base = f32s(&[2.0, 3.0, 4.0], &[3]);
    let p = run(&*op("Pow", 15), vec![base.clone(), i64s(&[2], &[1])]).unwrap();
    assert_eq!(p.dtype(), DType::F32);
    assert_eq!(p.as_slice::<f32>().unwrap(), &[4.0, 9.0, 16.0]);
    let p = run(&*op("Pow", 15), vec![base.clone(), Tensor::scalar(0.5f32)]).unwrap();
    close(
        p.as_slice::<f32>().unwrap(),
        &[std::f32::consts::SQRT_2, 1.7320508, 2.0],
        1e-7,
    );
    let p = run(&*op("Pow", 15), vec![base, f32s(&[1.0, 0.0, -1.0], &[3])]).unwrap();
    assert_eq!(p.as_slice::<f32>().unwrap(), &[2.0, 1.0, 0.25]);
    let ib = Tensor::from_vec(vec![2i32, -3, 5, 1], &[4]).unwrap();
    let p = run(
        &*op("Pow", 15),
        vec![ib.clone(), i64s(&[10, 3, -1, -7], &[4])],
    )
    .unwrap();
    assert_eq!(p.as_slice::<i32>().unwrap(), &[1024, -27, 0, 1]);
    let p = run(&*op("Pow", 15), vec![ib, f32s(&[0.5], &[1])]).unwrap();
    assert_eq!(p.as_slice::<i32>().unwrap(), &[1, 0, 2, 1]); // sqrt(-3) is NaN → 0
}

#[test]
fn comparisons_and_logic() {
    let a = f32s(&[1.0, 2.0, 3.0], &[3]);
    let b = f32s(&[2.0], &[1]);
    for (name, want) in [
        ("Equal", [0u8, 1, 0]),
        ("Less", [1, 0, 0]),
        ("LessOrEqual", [1, 1, 0]),
        ("Greater", [0, 0, 1]),
        ("GreaterOrEqual", [0, 1, 1]),
    ] {
        let r = run(&*op(name, 19), vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(r.dtype(), DType::Bool);
        assert_eq!(r.as_bool_slice().unwrap(), &want, "{name}");
    }
    let s1 = Tensor::from_strings(vec!["a".into(), "b".into()], &[2]).unwrap();
    let s2 = Tensor::from_strings(vec!["b".into()], &[1]).unwrap();
    let e = run(&*op("Equal", 19), vec![s1, s2]).unwrap();
    assert_eq!(e.as_bool_slice().unwrap(), &[0, 1]);
    let x = bools(&[true, true, false, false], &[2, 2]);
    let y = bools(&[true, false], &[2]);
    let and = run(&*op("And", 7), vec![x.clone(), y.clone()]).unwrap();
    assert_eq!(and.as_bool_slice().unwrap(), &[1, 0, 0, 0]);
    let or = run(&*op("Or", 7), vec![x.clone(), y.clone()]).unwrap();
    assert_eq!(or.as_bool_slice().unwrap(), &[1, 1, 1, 0]);
    let xor = run(&*op("Xor", 7), vec![x.clone(), y.clone()]).unwrap();
    assert_eq!(xor.as_bool_slice().unwrap(), &[0, 1, 1, 0]);
    let eq = run(&*op("Equal", 11), vec![x, y]).unwrap();
    assert_eq!(eq.as_bool_slice().unwrap(), &[1, 0, 0, 1]);
    assert!(run(&*op("And", 7), vec![a.clone(), a]).is_err());
}

#[test]
fn bit_ops() {
    let a = Tensor::from_vec(vec![1u8, 255, 16], &[3]).unwrap();
    let s = Tensor::from_vec(vec![1u8, 4, 8], &[3]).unwrap();
    let left = build(
        "BitShift",
        11,
        Attributes::new().with("direction", Attribute::String(b"LEFT".to_vec())),
    )
    .unwrap();
    let l = run(&*left, vec![a.clone(), s.clone()]).unwrap();
    assert_eq!(l.as_slice::<u8>().unwrap(), &[2, 240, 0]);
    let right = build(
        "BitShift",
        11,
        Attributes::new().with("direction", Attribute::String(b"RIGHT".to_vec())),
    )
    .unwrap();
    let r = run(&*right, vec![a.clone(), s.clone()]).unwrap();
    assert_eq!(r.as_slice::<u8>().unwrap(), &[0, 15, 0]);
    assert!(build("BitShift", 11, Attributes::new()).is_err());
    let and = run(&*op("BitwiseAnd", 18), vec![a.clone(), s.clone()]).unwrap();
    assert_eq!(and.as_slice::<u8>().unwrap(), &[1, 4, 0]);
    let or = run(&*op("BitwiseOr", 18), vec![a.clone(), s.clone()]).unwrap();
    assert_eq!(or.as_slice::<u8>().unwrap(), &[1, 255, 24]);
    let xor = run(&*op("BitwiseXor", 18), vec![a, s]).unwrap();
    assert_eq!(xor.as_slice::<u8>().unwrap(), &[0, 251, 24]);
    assert!(run(
        &*op("BitwiseAnd", 18),
        vec![f32s(&[1.0], &[1]), f32s(&[1.0], &[1])]
    )
    .is_err());
}

#[test]
fn prelu_broadcasts_slope_to_x() {
    let x = f32s(&[-1.0, 2.0, -3.0, 4.0], &[2, 2]);
    let slope = f32s(&[0.1, 0.5], &[2]);
    let y = run(&*op("PRelu", 16), vec![x.clone(), slope]).unwrap();
    close(y.as_slice::<f32>().unwrap(), &[-0.1, 2.0, -0.3, 4.0], 1e-7);
    assert!(run(
        &*op("PRelu", 16),
        vec![f32s(&[-1.0], &[1]), f32s(&[0.1, 0.2], &[2])]
    )
    .is_err());
}

#[test]
fn legacy_broadcast_attributes() {
    let a = f32s(&[0.0; 24], &[2, 3, 4]);
    let b = f32s(&[1.0, 2.0, 3.0], &[3]);
    // broadcast=1 with axis=1: b aligns with a's axis 1.
    let add = build(
        "Add",
        6,
        Attributes::new()
            .with("broadcast", Attribute::Int(1))
            .with("axis", Attribute::Int(1)),
    )
    .unwrap();
    let s = run(&*add, vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(s.shape(), &[2, 3, 4]);
    assert_eq!(
        &s.as_slice::<f32>().unwrap()[..8],
        &[1., 1., 1., 1., 2., 2., 2., 2.]
    );
    // broadcast=1 without axis: suffix alignment.
    let mul = build(
        "Mul",
        1,
        Attributes::new().with("broadcast", Attribute::Int(1)),
    )
    .unwrap();
    let m = run(&*mul, vec![f32s(&[1.0; 6], &[2, 3]), b.clone()]).unwrap();
    assert_eq!(m.as_slice::<f32>().unwrap(), &[1., 2., 3., 1., 2., 3.]);
    // broadcast=0 requires equal shapes.
    let err = run(&*op("Add", 6), vec![a.clone(), b.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input 1") && err.contains("broadcast"),
        "{err}"
    );
    let bad_axis = build(
        "Add",
        6,
        Attributes::new()
            .with("broadcast", Attribute::Int(1))
            .with("axis", Attribute::Int(3)),
    )
    .unwrap();
    let err = run(&*bad_axis, vec![a, b]).unwrap_err().to_string();
    assert!(err.contains("'axis'"), "{err}");
}

#[test]
fn variadic_ops() {
    let a = f32s(&[1.0, 5.0], &[2, 1]);
    let b = f32s(&[3.0, 2.0, 4.0], &[3]);
    let c = Tensor::scalar(1.0f32);
    let s = run(&*op("Sum", 13), vec![a.clone(), b.clone(), c.clone()]).unwrap();
    assert_eq!(s.shape(), &[2, 3]);
    assert_eq!(s.as_slice::<f32>().unwrap(), &[5., 4., 6., 9., 8., 10.]);
    let m = run(&*op("Mean", 13), vec![a.clone(), b.clone(), c]).unwrap();
    close(
        m.as_slice::<f32>().unwrap(),
        &[5. / 3., 4. / 3., 2., 3., 8. / 3., 10. / 3.],
        1e-7,
    );
    let mx = run(&*op("Max", 13), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(mx.as_slice::<f32>().unwrap(), &[3., 2., 4., 5., 5., 5.]);
    let mn = run(&*op("Min", 13), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(mn.as_slice::<f32>().unwrap(), &[1., 1., 1., 3., 2., 4.]);
    let one = run(&*op("Max", 13), vec![b.clone()]).unwrap();
    assert_eq!(one.as_slice::<f32>().unwrap(), &[3., 2., 4.]);
    let ints = run(
        &*op("Min", 13),
        vec![i64s(&[4, -2], &[2]), i64s(&[1], &[1])],
    )
    .unwrap();
    assert_eq!(ints.as_slice::<i64>().unwrap(), &[1, -2]);
    let nan = run(
        &*op("Max", 13),
        vec![f32s(&[f32::NAN, 1.0], &[2]), f32s(&[0.0, f32::NAN], &[2])],
    )
    .unwrap();
    assert!(nan.as_slice::<f32>().unwrap().iter().all(|v| v.is_nan()));
    let err = run(
        &*op("Sum", 13),
        vec![
            a.clone(),
            f32s(&[1.0, 2.0], &[2, 1]),
            f32s(&[1.0; 3], &[3, 1]),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("input 2") && err.contains("[3, 1]"), "{err}");
    let err = run(&*op("Sum", 13), vec![a, i64s(&[1], &[1])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("input 1"), "{err}");
}

#[test]
fn where_broadcasts_three_ways() {
    let c = bools(&[true, false], &[2, 1]);
    let x = f32s(&[1.0, 2.0, 3.0], &[3]);
    let y = Tensor::scalar(-1.0f32);
    let w = run(&*op("Where", 16), vec![c.clone(), x, y]).unwrap();
    assert_eq!(w.shape(), &[2, 3]);
    assert_eq!(w.as_slice::<f32>().unwrap(), &[1., 2., 3., -1., -1., -1.]);
    let xs = Tensor::from_strings(vec!["yes".into()], &[]).unwrap();
    let ys = Tensor::from_strings(vec!["no".into(), "nope".into()], &[1, 2]).unwrap();
    let w = run(&*op("Where", 16), vec![c.clone(), xs, ys]).unwrap();
    assert_eq!(w.as_strings().unwrap(), &["yes", "yes", "no", "nope"]);
    let w = run(
        &*op("Where", 16),
        vec![c.clone(), i64s(&[7], &[1]), i64s(&[0, 1], &[2])],
    )
    .unwrap();
    assert_eq!(w.as_slice::<i64>().unwrap(), &[7, 7, 0, 1]);
    assert!(run(
        &*op("Where", 16),
        vec![c.clone(), i64s(&[7], &[1]), f32s(&[0.0], &[1])]
    )
    .is_err());
    assert!(run(
        &*op("Where", 16),
        vec![x_f(), i64s(&[7], &[1]), i64s(&[0], &[1])]
    )
    .is_err());
}

fn x_f() -> Tensor {
    f32s(&[1.0], &[1])
}

#[test]
fn type_inference() {
    let sym = |s: &str| crate::Dim::Symbol(s.into());
    let a = Fact {
        dtype: Some(DType::F32),
        shape: Some(vec![sym("batch"), crate::Dim::Known(1)]),
        value: None,
    };
    let b = Fact::known(DType::F32, &[5]);
    let out = op("Add", 14)
        .infer(&[a.clone(), b.clone()])
        .unwrap()
        .unwrap();
    assert_eq!(out[0].dtype, Some(DType::F32));
    assert_eq!(out[0].shape, Some(vec![sym("batch"), crate::Dim::Known(5)]));
    let out = op("Less", 13).infer(&[a.clone(), b]).unwrap().unwrap();
    assert_eq!(out[0].dtype, Some(DType::Bool));
    let out = op("IsNaN", 13)
        .infer(std::slice::from_ref(&a))
        .unwrap()
        .unwrap();
    assert_eq!(out[0].dtype, Some(DType::Bool));
    assert_eq!(out[0].shape, a.shape);
    let bad = op("Add", 14).infer(&[Fact::known(DType::F32, &[2]), Fact::known(DType::F32, &[3])]);
    assert!(bad.is_err());
    let w = op("Where", 16)
        .infer(&[
            Fact::known(DType::Bool, &[2, 1]),
            Fact::known(DType::I64, &[3]),
            Fact::known(DType::I64, &[]),
        ])
        .unwrap()
        .unwrap();
    assert_eq!(w[0].dtype, Some(DType::I64));
    assert_eq!(w[0].concrete_shape(), Some(vec![2, 3]));
}

#[test]
fn registry_covers_opset_ranges() {
    let mut r = OpRegistry::new();
    super::register(&mut r);
    for (name, opset) in [
        ("Add", 1),
        ("Add", 6),
        ("Add", 7),
        ("Add", 14),
        ("Clip", 6),
        ("Clip", 13),
        ("Gelu", 20),
        ("Mish", 18),
        ("Where", 16),
        ("Sum", 8),
        ("BitwiseNot", 18),
        ("Equal", 19),
    ] {
        assert!(r.lookup("", name, opset).is_some(), "{name}-{opset}");
    }
    assert!(r.lookup("", "Gelu", 19).is_none());
    let legacy = r.lookup("", "Add", 6).unwrap();
    assert_eq!((legacy.since, legacy.until), (1, 6));
    assert!(build(
        "Gelu",
        20,
        Attributes::new().with("approximate", Attribute::String(b"fast".to_vec()))
    )
    .is_err());
}

#[test]
fn large_inputs_use_every_path() {
    // Big enough to split into several chunks: same shape, scalar and row broadcast.
    let n = 200_000;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let at = f32s(&a, &[n / 100, 100]);
    let same = run(&*op("Add", 14), vec![at.clone(), at.clone()]).unwrap();
    assert!(same
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .enumerate()
        .all(|(i, &v)| v == 2.0 * i as f32));
    let row: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let bc = run(&*op("Sub", 14), vec![at.clone(), f32s(&row, &[100])]).unwrap();
    assert!(bc
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .enumerate()
        .all(|(i, &v)| v == (i - i % 100) as f32));
    let col = run(&*op("Sub", 14), vec![at, f32s(&[1.0; 2000], &[2000, 1])]).unwrap();
    assert!(col
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .enumerate()
        .all(|(i, &v)| v == i as f32 - 1.0));
}

/// Expected values from onnx.reference (BitShift, opset 26 semantics for signed types).
#[test]
fn bit_shift_signed() {
    let dir = |d: &[u8]| {
        build(
            "BitShift",
            11,
            Attributes::new().with("direction", Attribute::String(d.to_vec())),
        )
        .unwrap()
    };
    let a = Tensor::from_vec(vec![-16i8, 64, -1, 5, -128], &[5]).unwrap();
    let s = Tensor::from_vec(vec![2i8, 1, -1, 8, 7], &[5]).unwrap();
    let l = run(&*dir(b"LEFT"), vec![a.clone(), s.clone()]).unwrap();
    assert_eq!(l.as_slice::<i8>().unwrap(), &[-64, -128, 0, 0, 0]);
    let r = run(&*dir(b"RIGHT"), vec![a, s]).unwrap();
    assert_eq!(r.as_slice::<i8>().unwrap(), &[-4, 32, -1, 0, -1]);
}
