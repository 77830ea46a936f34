//! Op-level tests of the reduction kernels, built through the registry.

#![allow(clippy::excessive_precision, clippy::approx_constant)]

use crate::{
    Attribute, Attributes, BuildCtx, EvalCtx, Fact, Inputs, OpRegistry, OpResult, Operator,
};
use strata_tensor::{f16, DType, Tensor};

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

fn keep(k: i64) -> Attributes {
    Attributes::new().with("keepdims", Attribute::Int(k))
}

fn run(op: &dyn Operator, inputs: Vec<Tensor>) -> OpResult<Tensor> {
    let mut out = op.eval(&EvalCtx::default(), Inputs::from_tensors(inputs))?;
    Ok(out.remove(0).into_tensor().unwrap())
}

fn arange(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32).collect(), shape).unwrap()
}

fn axes(v: &[i64]) -> Tensor {
    Tensor::from_slice(v, &[v.len()]).unwrap()
}

/// ReduceX at opset 18 with axes as input.
fn reduce(op_type: &str, keepdims: i64, x: Tensor, ax: &[i64]) -> Tensor {
    let o = build(op_type, 18, keep(keepdims)).unwrap();
    run(&*o, vec![x, axes(ax)]).unwrap()
}

#[test]
fn sum_layouts() {
    let x = arange(&[2, 3, 4]);
    let mid = reduce("ReduceSum", 1, x.clone(), &[1]);
    assert_eq!(mid.shape(), &[2, 1, 4]);
    assert_eq!(
        mid.as_slice::<f32>().unwrap(),
        &[12., 15., 18., 21., 48., 51., 54., 57.]
    );
    let rows = reduce("ReduceSum", 0, x.clone(), &[-1]);
    assert_eq!(rows.shape(), &[2, 3]);
    assert_eq!(
        rows.as_slice::<f32>().unwrap(),
        &[6., 22., 38., 54., 70., 86.]
    );
    let outer = reduce("ReduceSum", 0, x.clone(), &[0]);
    assert_eq!(outer.shape(), &[3, 4]);
    assert_eq!(outer.as_slice::<f32>().unwrap()[..4], [12., 14., 16., 18.]);
    // Interleaved axes go through a transpose.
    let split = reduce("ReduceSum", 0, x.clone(), &[0, 2]);
    assert_eq!(split.as_slice::<f32>().unwrap(), &[60., 92., 124.]);
    let all = reduce("ReduceSum", 1, x.clone(), &[]);
    assert_eq!(all.shape(), &[1, 1, 1]);
    assert_eq!(all.as_slice::<f32>().unwrap(), &[276.]);
    // Non-contiguous input.
    let t = x.permute(&[2, 1, 0]).unwrap();
    let s = reduce("ReduceSum", 0, t, &[1, 2]);
    assert_eq!(s.as_slice::<f32>().unwrap(), &[60., 66., 72., 78.]);
}

#[test]
fn axes_attribute_before_opset_13_and_18() {
    let x = arange(&[2, 3]);
    let old = build(
        "ReduceSum",
        11,
        keep(0).with("axes", Attribute::Ints(vec![0])),
    )
    .unwrap();
    assert_eq!(
        run(&*old, vec![x.clone()])
            .unwrap()
            .as_slice::<f32>()
            .unwrap(),
        &[3., 5., 7.]
    );
    let mean13 = build(
        "ReduceMean",
        13,
        keep(1).with("axes", Attribute::Ints(vec![1])),
    )
    .unwrap();
    let m = run(&*mean13, vec![x.clone()]).unwrap();
    assert_eq!(m.shape(), &[2, 1]);
    assert_eq!(m.as_slice::<f32>().unwrap(), &[1., 4.]);
    let all_old = build("ReduceMax", 13, keep(0)).unwrap();
    let all = run(&*all_old, vec![x.clone()]).unwrap();
    assert_eq!(all.shape(), &[] as &[usize]);
    assert_eq!(all.as_slice::<f32>().unwrap(), &[5.]);
    let err = build(
        "ReduceSum",
        11,
        Attributes::new().with("axes", Attribute::Ints(vec![2])),
    )
    .unwrap();
    let msg = run(&*err, vec![x.clone()]).unwrap_err().to_string();
    assert!(msg.contains("'axes'") && msg.contains("rank 2"), "{msg}");
    let new = build("ReduceSum", 13, keep(0)).unwrap();
    let msg = run(&*new, vec![x, axes(&[-3])]).unwrap_err().to_string();
    assert!(msg.contains("input 1") && msg.contains("-3"), "{msg}");
}

#[test]
fn noop_with_empty_axes() {
    let x = Tensor::from_vec(vec![-1.0f32, 2.0, -3.0], &[3]).unwrap();
    let noop = build(
        "ReduceSumSquare",
        18,
        Attributes::new().with("noop_with_empty_axes", Attribute::Int(1)),
    )
    .unwrap();
    let y = run(&*noop, vec![x.clone(), axes(&[])]).unwrap();
    assert_eq!(y.shape(), &[3]);
    assert_eq!(y.as_slice::<f32>().unwrap(), &[1., 4., 9.]);
    let sum = build(
        "ReduceSum",
        13,
        Attributes::new().with("noop_with_empty_axes", Attribute::Int(1)),
    )
    .unwrap();
    let y = run(&*sum, vec![x.clone()]).unwrap();
    assert_eq!(y.as_slice::<f32>().unwrap(), &[-1., 2., -3.]);
}

#[test]
fn every_reduction_kind() {
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let cases: &[(&str, [f32; 2])] = &[
        ("ReduceSum", [-1.0, 7.0]),
        ("ReduceMean", [-0.5, 3.5]),
        ("ReduceMax", [1.0, 4.0]),
        ("ReduceMin", [-2.0, 3.0]),
        ("ReduceProd", [-2.0, 12.0]),
        ("ReduceL1", [3.0, 7.0]),
        ("ReduceL2", [2.236_068, 5.0]),
        ("ReduceSumSquare", [5.0, 25.0]),
        ("ReduceLogSumExp", [1.048_587_4, 4.313_262]),
    ];
    for (name, want) in cases {
        let y = reduce(name, 0, x.clone(), &[1]);
        let got = y.as_slice::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{name}: {got:?} vs {want:?}");
        }
    }
    let ls = reduce(
        "ReduceLogSum",
        0,
        Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap(),
        &[],
    );
    assert!((ls.as_slice::<f32>().unwrap()[0] - 10f32.ln()).abs() < 1e-6);
    // LogSumExp over an outer axis, with large values that would overflow exp.
    let big = Tensor::from_vec(vec![1000.0f32, 1.0, 1000.0, 2.0], &[2, 2]).unwrap();
    let lse = reduce("ReduceLogSumExp", 0, big, &[0]);
    let got = lse.as_slice::<f32>().unwrap();
    assert!((got[0] - (1000.0 + 2f32.ln())).abs() < 1e-3, "{got:?}");
    assert!((got[1] - 2.313_262).abs() < 1e-5, "{got:?}");
}

#[test]
fn integer_half_and_bool_reductions() {
    let x = Tensor::from_vec(vec![3i64, -7, 2, 10], &[2, 2]).unwrap();
    assert_eq!(
        reduce("ReduceSum", 0, x.clone(), &[0])
            .as_slice::<i64>()
            .unwrap(),
        &[5, 3]
    );
    assert_eq!(
        reduce("ReduceMean", 0, x.clone(), &[1])
            .as_slice::<i64>()
            .unwrap(),
        &[-2, 6]
    );
    assert_eq!(
        reduce("ReduceMin", 0, x.clone(), &[])
            .as_slice::<i64>()
            .unwrap(),
        &[-7]
    );
    let h = Tensor::from_vec(vec![f16::from_f32(0.5); 4096], &[4096]).unwrap();
    let s = reduce("ReduceSum", 0, h, &[0]);
    assert_eq!(s.as_slice::<f16>().unwrap(), &[f16::from_f32(2048.0)]);
    let b = Tensor::from_bools(&[true, false, false, false], &[2, 2]).unwrap();
    let mx = build("ReduceMax", 20, keep(0)).unwrap();
    let y = run(&*mx, vec![b.clone(), axes(&[1])]).unwrap();
    assert_eq!(y.dtype(), DType::Bool);
    assert_eq!(y.as_bool_slice().unwrap(), &[1, 0]);
    let sum = build("ReduceSum", 13, keep(0)).unwrap();
    assert!(run(&*sum, vec![b, axes(&[1])]).is_err());
    let lse = build("ReduceLogSumExp", 18, keep(0)).unwrap();
    let err = run(&*lse, vec![x, axes(&[1])]).unwrap_err().to_string();
    assert!(err.contains("int64"), "{err}");
}

#[test]
fn reductions_over_empty_axes_give_identities() {
    let x = Tensor::zeros(DType::F32, &[2, 0]).unwrap();
    for (name, want) in [
        ("ReduceSum", 0.0f32),
        ("ReduceProd", 1.0),
        ("ReduceMax", f32::NEG_INFINITY),
        ("ReduceMin", f32::INFINITY),
        ("ReduceL2", 0.0),
        ("ReduceLogSumExp", f32::NEG_INFINITY),
    ] {
        let y = reduce(name, 1, x.clone(), &[1]);
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[want, want], "{name}");
    }
    let i = Tensor::zeros(DType::I32, &[0, 3]).unwrap();
    assert_eq!(
        reduce("ReduceMax", 0, i.clone(), &[0])
            .as_slice::<i32>()
            .unwrap(),
        &[i32::MIN; 3]
    );
    assert_eq!(reduce("ReduceSum", 0, i, &[1]).shape(), &[0]);
}

#[test]
fn large_reductions_match_naive() {
    let (k1, r, k2) = (3usize, 1000usize, 50usize);
    let x = Tensor::from_vec(
        (0..k1 * r * k2)
            .map(|i| ((i * 7) % 13) as f32 - 6.0)
            .collect(),
        &[k1, r, k2],
    )
    .unwrap();
    let data = x.as_slice::<f32>().unwrap().to_vec();
    let mid = reduce("ReduceSum", 0, x.clone(), &[1]);
    for a in 0..k1 {
        for c in 0..k2 {
            let want: f32 = (0..r).map(|b| data[(a * r + b) * k2 + c]).sum();
            assert_eq!(mid.as_slice::<f32>().unwrap()[a * k2 + c], want);
        }
    }
    let rows = reduce("ReduceMax", 0, x, &[1, 2]);
    for a in 0..k1 {
        let want = data[a * r * k2..(a + 1) * r * k2]
            .iter()
            .cloned()
            .fold(f32::MIN, f32::max);
        assert_eq!(rows.as_slice::<f32>().unwrap()[a], want);
    }
}

#[test]
fn arg_max_and_min() {
    let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 7.0, 2.0, 7.0], &[2, 3]).unwrap();
    let am = build(
        "ArgMax",
        13,
        Attributes::new().with("axis", Attribute::Int(1)),
    )
    .unwrap();
    let y = run(&*am, vec![x.clone()]).unwrap();
    assert_eq!(y.dtype(), DType::I64);
    assert_eq!(y.shape(), &[2, 1]);
    assert_eq!(y.as_slice::<i64>().unwrap(), &[1, 0]);
    let last = build(
        "ArgMax",
        13,
        keep(0)
            .with("axis", Attribute::Int(-1))
            .with("select_last_index", Attribute::Int(1)),
    )
    .unwrap();
    let y = run(&*last, vec![x.clone()]).unwrap();
    assert_eq!(y.shape(), &[2]);
    assert_eq!(y.as_slice::<i64>().unwrap(), &[2, 2]);
    let amin = build("ArgMin", 13, Attributes::new()).unwrap();
    let y = run(&*amin, vec![x.clone()]).unwrap();
    assert_eq!(y.shape(), &[1, 3]);
    assert_eq!(y.as_slice::<i64>().unwrap(), &[0, 1, 0]);
    let ints = Tensor::from_vec(vec![4i32, 9, 9, 1], &[4]).unwrap();
    assert_eq!(
        run(&*am_axis0(), vec![ints])
            .unwrap()
            .as_slice::<i64>()
            .unwrap(),
        &[1]
    );
    let nan = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], &[3]).unwrap();
    assert_eq!(
        run(&*am_axis0(), vec![nan])
            .unwrap()
            .as_slice::<i64>()
            .unwrap(),
        &[1]
    );
    let bad = build(
        "ArgMax",
        13,
        Attributes::new().with("axis", Attribute::Int(2)),
    )
    .unwrap();
    let err = run(&*bad, vec![x]).unwrap_err().to_string();
    assert!(err.contains("'axis'"), "{err}");
    let empty = Tensor::zeros(DType::F32, &[2, 0]).unwrap();
    assert!(run(&*am, vec![empty]).is_err());
}

fn am_axis0() -> Box<dyn Operator> {
    build("ArgMax", 13, Attributes::new()).unwrap()
}

#[test]
fn cumsum_modes() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap();
    let ax = Tensor::scalar(0i64);
    for (excl, rev, want) in [
        (0, 0, [1.0f32, 3.0, 6.0, 10.0]),
        (1, 0, [0.0, 1.0, 3.0, 6.0]),
        (0, 1, [10.0, 9.0, 7.0, 4.0]),
        (1, 1, [9.0, 7.0, 4.0, 0.0]),
    ] {
        let o = build(
            "CumSum",
            14,
            Attributes::new()
                .with("exclusive", Attribute::Int(excl))
                .with("reverse", Attribute::Int(rev)),
        )
        .unwrap();
        let y = run(&*o, vec![x.clone(), ax.clone()]).unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &want,
            "exclusive={excl} reverse={rev}"
        );
    }
    let m = Tensor::from_vec(vec![1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    let o = build("CumSum", 14, Attributes::new()).unwrap();
    let y = run(
        &*o,
        vec![m.clone(), Tensor::from_vec(vec![0i32], &[1]).unwrap()],
    )
    .unwrap();
    assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 2, 3, 5, 7, 9]);
    let y = run(&*o, vec![m.clone(), Tensor::scalar(-1i64)]).unwrap();
    assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 3, 6, 4, 9, 15]);
    let err = run(&*o, vec![m.clone(), Tensor::scalar(2i64)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("input 1"), "{err}");
    assert!(run(&*o, vec![m, axes(&[0, 1])]).is_err());
}

#[test]
fn cumprod_modes() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap();
    let ax = Tensor::scalar(0i64);
    for (excl, rev, want) in [
        (0, 0, [1.0f32, 2.0, 6.0, 24.0]),
        (1, 0, [1.0, 1.0, 2.0, 6.0]),
        (0, 1, [24.0, 24.0, 12.0, 4.0]),
        (1, 1, [24.0, 12.0, 4.0, 1.0]),
    ] {
        let o = build(
            "CumProd",
            26,
            Attributes::new()
                .with("exclusive", Attribute::Int(excl))
                .with("reverse", Attribute::Int(rev)),
        )
        .unwrap();
        assert_eq!(o.op_type(), "CumProd");
        let y = run(&*o, vec![x.clone(), ax.clone()]).unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &want,
            "exclusive={excl} reverse={rev}"
        );
    }
    let m = Tensor::from_vec(vec![1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    let o = build("CumProd", 26, Attributes::new()).unwrap();
    let y = run(&*o, vec![m, Tensor::scalar(0i64)]).unwrap();
    assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 2, 3, 4, 10, 18]);
}

#[test]
fn reduce_inference() {
    let o = build("ReduceMean", 18, keep(1)).unwrap();
    let facts = [
        Fact::known(DType::F32, &[2, 3, 4]),
        Fact::constant(axes(&[1, 2])),
    ];
    let out = o.infer(&facts).unwrap().unwrap();
    assert_eq!(out[0].concrete_shape(), Some(vec![2, 1, 1]));
    let o = build(
        "ReduceSum",
        11,
        keep(0).with("axes", Attribute::Ints(vec![0])),
    )
    .unwrap();
    let out = o
        .infer(&[Fact::known(DType::F16, &[2, 3])])
        .unwrap()
        .unwrap();
    assert_eq!(out[0].concrete_shape(), Some(vec![3]));
    assert_eq!(out[0].dtype, Some(DType::F16));
    let a = build("ArgMin", 13, keep(0).with("axis", Attribute::Int(1))).unwrap();
    let out = a
        .infer(&[Fact::known(DType::F32, &[2, 3])])
        .unwrap()
        .unwrap();
    assert_eq!(out[0].dtype, Some(DType::I64));
    assert_eq!(out[0].concrete_shape(), Some(vec![2]));
}
