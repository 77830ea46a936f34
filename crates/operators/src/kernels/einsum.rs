//! `Einsum` (general equations: repeated indices and diagonals, ellipsis with broadcasting,
//! implicit output) and `Col2Im`.
//!
//! Einsum runs as one loop over every label's range, accumulating products in f64, so any
//! equation works; outputs are cast back to the input dtype.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use strata_tensor::{DType, Tensor};

/// Registers `Einsum` and `Col2Im`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "Einsum", 12, |c| {
        let eq = c
            .attrs
            .string("equation")?
            .ok_or_else(|| OpError::attribute("equation", "required"))?;
        let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l.to_string(), Some(r.to_string())),
            None => (eq.clone(), None),
        };
        let terms: Vec<String> = lhs.split(',').map(str::to_string).collect();
        for t in terms.iter().chain(rhs.iter()) {
            parse_term(t)?;
        }
        Ok(Box::new(Einsum { terms, rhs }))
    });
    registry.register("", "Col2Im", 18, build_col2im);
}

fn f64_data(t: &Tensor) -> OpResult<Vec<f64>> {
    Ok(t.cast(DType::F64)?.contiguous().to_vec::<f64>()?)
}

/// A label: a letter, or the k-th ellipsis dimension counted from the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Label {
    Ell(usize),
    Letter(u8),
}

/// Letters of a term, with `None` marking the ellipsis position.
fn parse_term(term: &str) -> OpResult<Vec<Option<u8>>> {
    let mut out = Vec::new();
    let bytes = term.as_bytes();
    let mut i = 0;
    let mut ell = false;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"...") {
            if ell {
                return Err(OpError::attribute(
                    "equation",
                    format!("term '{term}' has more than one ellipsis"),
                ));
            }
            ell = true;
            out.push(None);
            i += 3;
        } else if bytes[i].is_ascii_alphabetic() {
            out.push(Some(bytes[i]));
            i += 1;
        } else {
            return Err(OpError::attribute(
                "equation",
                format!("unexpected character in term '{term}'"),
            ));
        }
    }
    Ok(out)
}

/// `Einsum` with its equation split into input terms and the optional explicit output.
#[derive(Debug, Clone)]
pub struct Einsum {
    terms: Vec<String>,
    rhs: Option<String>,
}

/// Expands a term against a rank: one label per dimension.
fn expand(term: &[Option<u8>], rank: usize, index: usize) -> OpResult<Vec<Label>> {
    let letters = term.iter().filter(|l| l.is_some()).count();
    let has_ell = term.iter().any(Option::is_none);
    if rank < letters || (!has_ell && rank != letters) {
        return Err(OpError::invalid(
            index,
            format!("rank {rank} does not match its equation term ({letters} letters)"),
        ));
    }
    let e = rank - letters;
    let mut out = Vec::with_capacity(rank);
    for l in term {
        match l {
            Some(c) => out.push(Label::Letter(*c)),
            None => out.extend((0..e).rev().map(Label::Ell)),
        }
    }
    Ok(out)
}

impl Operator for Einsum {
    crate::op_boilerplate!("Einsum");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let tensors = inputs.tensors()?;
        if tensors.len() != self.terms.len() {
            return Err(OpError::Shape(format!(
                "equation has {} input terms but {} inputs were given",
                self.terms.len(),
                tensors.len()
            )));
        }
        let dt = tensors[0].dtype();
        let mut labels_in = Vec::new();
        let mut sizes: std::collections::BTreeMap<Label, usize> = Default::default();
        let mut max_ell = 0;
        for (i, (t, term)) in tensors.iter().zip(&self.terms).enumerate() {
            let labels = expand(&parse_term(term)?, t.rank(), i)?;
            for (&l, &d) in labels.iter().zip(t.shape()) {
                if let Label::Ell(k) = l {
                    max_ell = max_ell.max(k + 1);
                }
                let e = sizes.entry(l).or_insert(d);
                if *e != d {
                    if *e == 1 {
                        *e = d;
                    } else if d != 1 {
                        return Err(OpError::invalid(
                            i,
                            format!("dimension {l:?} has size {d}, elsewhere {e}"),
                        ));
                    }
                }
            }
            labels_in.push(labels);
        }
        let out_labels: Vec<Label> = match &self.rhs {
            Some(r) => {
                let term = parse_term(r)?;
                let letters = term.iter().filter(|l| l.is_some()).count();
                let out = expand(
                    &term,
                    letters + max_ell * usize::from(term.contains(&None)),
                    0,
                )?;
                for l in &out {
                    if !sizes.contains_key(l) {
                        return Err(OpError::attribute(
                            "equation",
                            format!("output label {l:?} does not appear in the inputs"),
                        ));
                    }
                }
                out
            }
            None => {
                let mut out: Vec<Label> = (0..max_ell).rev().map(Label::Ell).collect();
                let mut letters: Vec<u8> = sizes
                    .keys()
                    .filter_map(|l| match l {
                        Label::Letter(c) => Some(*c),
                        Label::Ell(_) => None,
                    })
                    .filter(|c| {
                        labels_in
                            .iter()
                            .flatten()
                            .filter(|l| **l == Label::Letter(*c))
                            .count()
                            == 1
                    })
                    .collect();
                letters.sort_unstable();
                out.extend(letters.into_iter().map(Label::Letter));
                out
            }
        };
        let mut all = out_labels.clone();
        all.extend(sizes.keys().filter(|l| !out_labels.contains(l)).copied());
        let dims: Vec<usize> = all.iter().map(|l| sizes[l]).collect();
        // Per input, its stride along each label of `all` (repeated labels add up: diagonals).
        let datas: Vec<Vec<f64>> = tensors
            .iter()
            .map(|t| f64_data(t))
            .collect::<OpResult<_>>()?;
        let strides: Vec<Vec<usize>> = tensors
            .iter()
            .zip(&labels_in)
            .map(|(t, labels)| {
                let shape = t.shape();
                let mut st = vec![0usize; all.len()];
                let mut s = 1usize;
                for d in (0..shape.len()).rev() {
                    if shape[d] != 1 {
                        let pos = all.iter().position(|l| *l == labels[d]).unwrap_or(0);
                        st[pos] += s;
                    }
                    s *= shape[d];
                }
                st
            })
            .collect();
        let out_shape: Vec<usize> = dims[..out_labels.len()].to_vec();
        let out_len: usize = out_shape.iter().product();
        let red_len: usize = dims[out_labels.len()..].iter().product();
        let mut out = vec![0.0; out_len];
        let total = out_len * red_len;
        if total > 0 {
            let mut idx = vec![0usize; all.len()];
            let mut offs = vec![0usize; tensors.len()];
            for step in 0..total {
                let prod: f64 = datas.iter().zip(&offs).map(|(d, &o)| d[o]).product();
                out[step / red_len.max(1)] += prod;
                // Odometer increment over `all`, innermost last.
                for a in (0..all.len()).rev() {
                    idx[a] += 1;
                    for (o, st) in offs.iter_mut().zip(&strides) {
                        *o += st[a];
                    }
                    if idx[a] < dims[a] {
                        break;
                    }
                    for (o, st) in offs.iter_mut().zip(&strides) {
                        *o -= st[a] * dims[a];
                    }
                    idx[a] = 0;
                }
            }
        }
        let t = Tensor::from_vec(out, &out_shape)?.cast(dt)?;
        Ok(vec![t.into()])
    }
}

// ----- Col2Im -------------------------------------------------------------------------------

/// `Col2Im`: sums sliding blocks `[N, C * prod(block), L]` back into images
/// `[N, C, *image_shape]`.
#[derive(Debug, Clone)]
pub struct Col2Im {
    dilations: Vec<i64>,
    pads: Vec<i64>,
    strides: Vec<i64>,
}

fn build_col2im(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let op = Col2Im {
        dilations: a.ints_or("dilations", Vec::new())?,
        pads: a.ints_or("pads", Vec::new())?,
        strides: a.ints_or("strides", Vec::new())?,
    };
    if op.dilations.iter().chain(&op.strides).any(|&v| v < 1) {
        return Err(OpError::attribute(
            "strides",
            "strides and dilations must be >= 1",
        ));
    }
    if op.pads.iter().any(|&v| v < 0) {
        return Err(OpError::attribute("pads", "pads must be >= 0"));
    }
    Ok(Box::new(op))
}

impl Operator for Col2Im {
    crate::op_boilerplate!("Col2Im");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let xt = inputs.tensor(0)?;
        let dt = xt.dtype();
        let image = inputs.tensor(1)?.to_i64_vec()?;
        let block = inputs.tensor(2)?.to_i64_vec()?;
        let nd = image.len();
        if block.len() != nd || image.iter().chain(&block).any(|&v| v < 1) {
            return Err(OpError::invalid(
                2,
                format!("image_shape {image:?} and block_shape {block:?} must be positive and of equal length"),
            ));
        }
        let attr = |v: &[i64], name: &str, len: usize, default: i64| -> OpResult<Vec<i64>> {
            if v.is_empty() {
                Ok(vec![default; len])
            } else if v.len() == len {
                Ok(v.to_vec())
            } else {
                Err(OpError::attribute(
                    name,
                    format!("expected {len} values, got {}", v.len()),
                ))
            }
        };
        let dil = attr(&self.dilations, "dilations", nd, 1)?;
        let strides = attr(&self.strides, "strides", nd, 1)?;
        let pads = attr(&self.pads, "pads", 2 * nd, 0)?;
        let mut blocks_per_dim = Vec::with_capacity(nd);
        for d in 0..nd {
            let span = dil[d] * (block[d] - 1) + 1;
            let room = image[d] + pads[d] + pads[nd + d] - span;
            if room < 0 {
                return Err(OpError::invalid(
                    2,
                    format!("block {block:?} does not fit image {image:?} with pads {pads:?}"),
                ));
            }
            blocks_per_dim.push((room / strides[d] + 1) as usize);
        }
        let xs = xt.shape();
        let kprod: usize = block.iter().product::<i64>() as usize;
        let l: usize = blocks_per_dim.iter().product();
        if xs.len() != 3 || xs[1] % kprod != 0 || xs[2] != l {
            return Err(OpError::invalid(
                0,
                format!("input shape {xs:?} does not match block {block:?} with {l} blocks"),
            ));
        }
        let (n, c) = (xs[0], xs[1] / kprod);
        let img: Vec<usize> = image.iter().map(|&v| v as usize).collect();
        let plane: usize = img.iter().product();
        let x = f64_data(xt)?;
        let mut out = vec![0.0; n * c * plane];
        let unravel = |mut i: usize, dims: &[usize], out: &mut [usize]| {
            for d in (0..dims.len()).rev() {
                out[d] = i % dims[d];
                i /= dims[d];
            }
        };
        let bdims: Vec<usize> = block.iter().map(|&v| v as usize).collect();
        let (mut ki, mut li) = (vec![0usize; nd], vec![0usize; nd]);
        for b in 0..n {
            for ch in 0..c {
                for k in 0..kprod {
                    unravel(k, &bdims, &mut ki);
                    for pos in 0..l {
                        unravel(pos, &blocks_per_dim, &mut li);
                        let mut flat = 0usize;
                        let mut inside = true;
                        for d in 0..nd {
                            let p = li[d] as i64 * strides[d] + ki[d] as i64 * dil[d] - pads[d];
                            if p < 0 || p >= image[d] {
                                inside = false;
                                break;
                            }
                            flat = flat * img[d] + p as usize;
                        }
                        if inside {
                            out[(b * c + ch) * plane + flat] +=
                                x[((b * c + ch) * kprod + k) * l + pos];
                        }
                    }
                }
            }
        }
        let mut shape = vec![n, c];
        shape.extend(&img);
        Ok(vec![Tensor::from_vec(out, &shape)?.cast(dt)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::nn::testutil::{build, close, eval, f64s, pat, s, t};
    use crate::Attribute;
    use strata_tensor::Tensor;

    fn p(n: usize, seed: i64, shape: &[usize]) -> Option<Tensor> {
        Some(t(&pat(n, seed), shape))
    }

    fn einsum(eq: &str, ins: &[Option<Tensor>]) -> Tensor {
        let op = build("Einsum", 12, &[("equation", s(eq))], ins.len(), 1);
        eval(op.as_ref(), ins).remove(0)
    }

    // Expected values from onnx.reference (ReferenceEvaluator).
    #[test]
    fn einsum_products_diagonals_and_implicit_outputs() {
        let a = p(12, 1, &[2, 2, 3]);
        let out = einsum("bij,bjk->bik", &[a.clone(), p(12, 2, &[2, 3, 2])]);
        assert_eq!(out.shape(), &[2, 2, 2]);
        let want = [
            0.828125, -1.84375, -1.8125, 0.796875, 0.84375, 0.46875, 1.859375, -1.5,
        ];
        close(&f64s(&out), &want, 1e-6);
        let out = einsum("ii->i", &[p(9, 1, &[3, 3])]);
        close(&f64s(&out), &[0.0, 1.25, -0.375], 1e-6);
        let out = einsum("ij", &[p(6, 1, &[3, 2])]);
        assert_eq!(out.shape(), &[3, 2]);
        let out = einsum("ji", &[p(6, 1, &[3, 2])]);
        assert_eq!(out.shape(), &[2, 3]);
        close(&f64s(&out), &[0.0, 0.625, 1.25, -1.125, -0.5, 0.125], 1e-6);
        let out = einsum("...ij,...jk", &[a, p(6, 2, &[3, 2])]);
        assert_eq!(out.shape(), &[2, 2, 2]);
        let want = [
            0.828125, -1.84375, -1.8125, 0.796875, -1.9375, 0.921875, 1.890625, 1.765625,
        ];
        close(&f64s(&out), &want, 1e-6);
        let out = einsum("i,i", &[p(4, 1, &[4]), p(4, 2, &[4])]);
        assert_eq!(out.shape(), &[] as &[usize]);
        close(&f64s(&out), &[-1.265625], 1e-6);
        let out = einsum("ij->", &[p(6, 3, &[2, 3])]);
        close(&f64s(&out), &[-0.375], 1e-6);
        let out = einsum("i,j->ij", &[p(2, 1, &[2]), p(3, 2, &[3])]);
        close(
            &f64s(&out),
            &[0.0, 0.0, 0.0, -1.546875, -0.28125, 0.984375],
            1e-6,
        );
    }

    #[test]
    fn einsum_rejects_bad_equations() {
        let err = crate::kernels::nn::testutil::build_err("Einsum", 12, &[("equation", s("i.j"))]);
        assert!(err.contains("equation"), "{err}");
    }

    #[test]
    fn col2im_plain_and_strided_padded_dilated() {
        let x: Vec<f32> = (1..=25).map(|v| v as f32).collect();
        let i = |v: &[i64]| Some(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap());
        let op = build("Col2Im", 18, &[], 3, 1);
        let out = eval(
            op.as_ref(),
            &[Some(t(&x, &[1, 5, 5])), i(&[5, 5]), i(&[1, 5])],
        );
        assert_eq!(out[0].shape(), &[1, 1, 5, 5]);
        let want: Vec<f64> = (0..25).map(|k| (1 + (k % 5) * 5 + k / 5) as f64).collect();
        close(&f64s(&out[0]), &want, 1e-6);
        let op = build(
            "Col2Im",
            18,
            &[
                ("strides", Attribute::Ints(vec![2, 1])),
                ("pads", Attribute::Ints(vec![1, 0, 0, 1])),
                ("dilations", Attribute::Ints(vec![1, 2])),
            ],
            3,
            1,
        );
        let out = eval(op.as_ref(), &[p(48, 1, &[1, 8, 6]), i(&[4, 4]), i(&[2, 2])]);
        assert_eq!(out[0].shape(), &[1, 2, 4, 4]);
        let want = [
            0.875, -0.25, -1.5, -1.25, -0.5, 1.25, 1.5, 0.25, 0.375, -0.75, 0.375, 1.125, 0.0, 0.0,
            0.0, 0.0, -0.25, -1.375, -0.875, 0.5, 1.25, 0.125, -0.75, -0.875, -0.75, 1.0, 1.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        close(&f64s(&out[0]), &want, 1e-6);
    }
}
