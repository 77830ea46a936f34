//! String kernels: StringNormalizer, StringConcat, StringSplit and RegexFullMatch (with the
//! `regex` crate, whose syntax is close to the RE2 syntax ONNX specifies).

use super::shape::checked_numel;
use crate::{
    op_boilerplate, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value,
};
use std::collections::HashSet;
use strata_tensor::{broadcast_shapes, DType, Tensor};

/// Registers the string ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "StringNormalizer", 10, |b| {
        let case = match b.attrs.string_or("case_change_action", "NONE")?.as_str() {
            "NONE" => CaseChange::None,
            "LOWER" => CaseChange::Lower,
            "UPPER" => CaseChange::Upper,
            other => {
                return Err(OpError::attribute(
                    "case_change_action",
                    format!("'{other}' is not NONE, LOWER or UPPER"),
                ))
            }
        };
        let case_sensitive = b.attrs.int_or("is_case_sensitive", 0)? != 0;
        let stopwords = b.attrs.strings("stopwords")?.unwrap_or_default();
        Ok(Box::new(StringNormalizer::new(
            case,
            case_sensitive,
            stopwords,
        )))
    });
    registry.register("", "StringConcat", 20, |_| Ok(Box::new(StringConcat)));
    registry.register("", "StringSplit", 20, |b| {
        let delimiter = b.attrs.string("delimiter")?.filter(|d| !d.is_empty());
        let maxsplit = b.attrs.int("maxsplit")?.filter(|&m| m >= 0);
        Ok(Box::new(StringSplit {
            delimiter,
            maxsplit: maxsplit.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        }))
    });
    registry.register("", "RegexFullMatch", 20, |b| {
        let pattern = b
            .attrs
            .string("pattern")?
            .ok_or_else(|| OpError::attribute("pattern", "required"))?;
        let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| OpError::attribute("pattern", format!("invalid regex: {e}")))?;
        Ok(Box::new(RegexFullMatch { regex }))
    });
}

fn string_input(inputs: &Inputs, index: usize) -> OpResult<Tensor> {
    let x = inputs.tensor(index)?;
    if x.dtype() != DType::String {
        return Err(OpError::UnsupportedDType {
            index,
            dtype: x.dtype(),
        });
    }
    Ok(x.contiguous())
}

/// `StringSplit`: splits every string on `delimiter` (or, without one, on runs of
/// whitespace with leading and trailing whitespace dropped), at most `maxsplit` times, as
/// Python's `str.split` does. Outputs the pieces padded with empty strings to `[..., max]`
/// and the number of pieces of each string.
#[derive(Debug, Clone)]
pub struct StringSplit {
    /// The separator; `None` splits on whitespace.
    pub delimiter: Option<String>,
    /// The most splits per string; `None` is unlimited.
    pub maxsplit: Option<usize>,
}

/// Python's `str.split()` without a separator.
fn split_whitespace(s: &str, maxsplit: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if out.len() == maxsplit {
            out.push(rest);
            break;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    out
}

impl StringSplit {
    fn split<'a>(&self, s: &'a str) -> Vec<&'a str> {
        let max = self.maxsplit.unwrap_or(usize::MAX);
        match &self.delimiter {
            None => split_whitespace(s, max),
            Some(d) => s.splitn(max.saturating_add(1), d.as_str()).collect(),
        }
    }
}

impl Operator for StringSplit {
    op_boilerplate!("StringSplit");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = string_input(&inputs, 0)?;
        let pieces: Vec<Vec<&str>> = x.as_strings()?.iter().map(|s| self.split(s)).collect();
        let width = pieces.iter().map(Vec::len).max().unwrap_or(0);
        let mut shape = x.shape().to_vec();
        let counts: Vec<i64> = pieces.iter().map(|p| p.len() as i64).collect();
        let lengths = Tensor::from_vec(counts, &shape)?;
        shape.push(width);
        checked_numel(&shape)?;
        let mut out = Vec::with_capacity(pieces.len() * width);
        for p in &pieces {
            out.extend(p.iter().map(|s| s.to_string()));
            out.extend(std::iter::repeat_n(String::new(), width - p.len()));
        }
        Ok(vec![
            Tensor::from_strings(out, &shape)?.into(),
            lengths.into(),
        ])
    }
}

/// `RegexFullMatch`: whether each string matches the pattern as a whole.
#[derive(Debug, Clone)]
pub struct RegexFullMatch {
    /// The pattern wrapped in `^(?:...)$`.
    pub regex: regex::Regex,
}

impl Operator for RegexFullMatch {
    op_boilerplate!("RegexFullMatch");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = string_input(&inputs, 0)?;
        let hits: Vec<bool> = x
            .as_strings()?
            .iter()
            .map(|s| self.regex.is_match(s))
            .collect();
        Ok(vec![Tensor::from_bools(&hits, x.shape())?.into()])
    }
}

/// Case conversion applied by [`StringNormalizer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseChange {
    /// Keep the case.
    None,
    /// Lower-case.
    Lower,
    /// Upper-case.
    Upper,
}

/// `StringNormalizer`: removes stop words from a `[C]` or `[1, C]` string tensor and changes
/// case. When every string is removed the output is one empty string (`[1]` or `[1, 1]`).
/// The `locale` attribute is ignored: case rules are Unicode's.
#[derive(Debug, Clone)]
pub struct StringNormalizer {
    /// Case conversion.
    pub case: CaseChange,
    /// Whether stop words match case-sensitively.
    pub case_sensitive: bool,
    /// Stop words (lower-cased when matching is case-insensitive).
    pub stopwords: HashSet<String>,
}

impl StringNormalizer {
    /// An op with these settings.
    pub fn new(case: CaseChange, case_sensitive: bool, stopwords: Vec<String>) -> Self {
        let stopwords = stopwords
            .into_iter()
            .map(|s| if case_sensitive { s } else { s.to_lowercase() })
            .collect();
        StringNormalizer {
            case,
            case_sensitive,
            stopwords,
        }
    }

    fn is_stopword(&self, s: &str) -> bool {
        if self.stopwords.is_empty() {
            false
        } else if self.case_sensitive {
            self.stopwords.contains(s)
        } else {
            self.stopwords.contains(&s.to_lowercase())
        }
    }
}

impl Operator for StringNormalizer {
    op_boilerplate!("StringNormalizer");

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        if x.dtype() != DType::String {
            return Err(OpError::UnsupportedDType {
                index: 0,
                dtype: x.dtype(),
            });
        }
        let two_d = match x.shape() {
            [_] => false,
            [1, _] => true,
            s => {
                return Err(OpError::invalid(
                    0,
                    format!("expected shape [C] or [1, C], got {s:?}"),
                ))
            }
        };
        let x = x.contiguous();
        let mut out: Vec<String> = x
            .as_strings()?
            .iter()
            .filter(|s| !self.is_stopword(s))
            .map(|s| match self.case {
                CaseChange::None => s.clone(),
                CaseChange::Lower => s.to_lowercase(),
                CaseChange::Upper => s.to_uppercase(),
            })
            .collect();
        if out.is_empty() {
            out.push(String::new());
        }
        let n = out.len();
        let shape: &[usize] = if two_d { &[1, n] } else { &[n] };
        Ok(vec![Tensor::from_strings(out, shape)?.into()])
    }
}

/// `StringConcat`: element-wise concatenation of two broadcast string tensors.
#[derive(Debug, Clone, Copy)]
pub struct StringConcat;

impl Operator for StringConcat {
    op_boilerplate!("StringConcat");

    fn infer(&self, inputs: &[Fact]) -> OpResult<Option<Vec<Fact>>> {
        let (Some(a), Some(b)) = (
            inputs.first().and_then(Fact::concrete_shape),
            inputs.get(1).and_then(Fact::concrete_shape),
        ) else {
            return Ok(None);
        };
        let out = broadcast_shapes(&a, &b).map_err(|e| OpError::Shape(e.to_string()))?;
        Ok(Some(vec![Fact::known(DType::String, &out)]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (a, b) = (inputs.tensor(0)?, inputs.tensor(1)?);
        for (i, t) in [(0, a), (1, b)] {
            if t.dtype() != DType::String {
                return Err(OpError::UnsupportedDType {
                    index: i,
                    dtype: t.dtype(),
                });
            }
        }
        let shape =
            broadcast_shapes(a.shape(), b.shape()).map_err(|e| OpError::Shape(e.to_string()))?;
        checked_numel(&shape)?;
        let a = a.broadcast_to(&shape)?.contiguous();
        let b = b.broadcast_to(&shape)?.contiguous();
        let out: Vec<String> = a
            .as_strings()?
            .iter()
            .zip(b.as_strings()?)
            .map(|(x, y)| {
                let mut s = String::with_capacity(x.len() + y.len());
                s.push_str(x);
                s.push_str(y);
                s
            })
            .collect();
        Ok(vec![Tensor::from_strings(out, &shape)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Attributes, BuildCtx};

    fn run(attrs: Attributes, op: &str, inputs: Vec<Tensor>) -> OpResult<Tensor> {
        let mut r = OpRegistry::new();
        register(&mut r);
        let ctx = BuildCtx {
            node_name: "",
            op_type: op,
            domain: "",
            opset: 20,
            attrs: &attrs,
            input_count: inputs.len(),
            output_count: 1,
        };
        let out = r
            .build(&ctx)?
            .eval(&EvalCtx::default(), Inputs::from_tensors(inputs))?;
        Ok(out.into_iter().next().and_then(Value::into_tensor).unwrap())
    }

    fn strs(v: &[&str], shape: &[usize]) -> Tensor {
        Tensor::from_strings(v.iter().map(|s| s.to_string()).collect(), shape).unwrap()
    }

    fn norm(case: &str, sensitive: i64, stop: &[&str]) -> Attributes {
        Attributes::new()
            .with(
                "case_change_action",
                Attribute::String(case.as_bytes().to_vec()),
            )
            .with("is_case_sensitive", Attribute::Int(sensitive))
            .with(
                "stopwords",
                Attribute::Strings(stop.iter().map(|s| s.as_bytes().to_vec()).collect()),
            )
    }

    #[test]
    fn string_normalizer_like_onnx_simple_models() {
        // test_strnorm_model_monday_insensintive_upper_twodim
        let x = strs(
            &[
                "Monday",
                "tuesday",
                "wednesday",
                "Monday",
                "tuesday",
                "wednesday",
            ],
            &[1, 6],
        );
        let y = run(
            norm("UPPER", 0, &["monday"]),
            "StringNormalizer",
            vec![x.clone()],
        )
        .unwrap();
        assert_eq!(y.shape(), &[1, 4]);
        assert_eq!(
            y.as_strings().unwrap(),
            &["TUESDAY", "WEDNESDAY", "TUESDAY", "WEDNESDAY"]
        );
        // Case-sensitive: "Monday" is not the stop word "monday".
        let y = run(norm("LOWER", 1, &["monday"]), "StringNormalizer", vec![x]).unwrap();
        assert_eq!(y.shape(), &[1, 6]);
        assert_eq!(y.as_strings().unwrap()[0], "monday");
        // test_strnorm_model_monday_empty_output
        let y = run(
            norm("UPPER", 0, &["monday"]),
            "StringNormalizer",
            vec![strs(&["monday", "monday"], &[2])],
        )
        .unwrap();
        assert_eq!(y.shape(), &[1]);
        assert_eq!(y.as_strings().unwrap(), &[""]);
        let y = run(
            norm("NONE", 0, &["a"]),
            "StringNormalizer",
            vec![strs(&["A"], &[1, 1])],
        )
        .unwrap();
        assert_eq!(y.shape(), &[1, 1]);
        let y = run(
            Attributes::new(),
            "StringNormalizer",
            vec![strs(&["Ab", "c"], &[2])],
        )
        .unwrap();
        assert_eq!(y.as_strings().unwrap(), &["Ab", "c"]);
        assert!(run(
            Attributes::new(),
            "StringNormalizer",
            vec![strs(&["a", "b"], &[2, 1])]
        )
        .is_err());
        assert!(run(
            Attributes::new(),
            "StringNormalizer",
            vec![Tensor::scalar(1.0f32)]
        )
        .is_err());
        assert!(run(
            norm("TITLE", 0, &[]),
            "StringNormalizer",
            vec![strs(&["a"], &[1])]
        )
        .is_err());
    }

    fn run_all(attrs: Attributes, op: &str, x: Tensor) -> OpResult<Vec<Tensor>> {
        let mut r = OpRegistry::new();
        register(&mut r);
        let ctx = BuildCtx {
            node_name: "",
            op_type: op,
            domain: "",
            opset: 20,
            attrs: &attrs,
            input_count: 1,
            output_count: 2,
        };
        let out = r
            .build(&ctx)?
            .eval(&EvalCtx::default(), Inputs::from_tensors([x]))?;
        Ok(out.into_iter().filter_map(Value::into_tensor).collect())
    }

    #[test]
    fn string_split_like_python() {
        assert_eq!(split_whitespace("  a b  c ", usize::MAX), ["a", "b", "c"]);
        assert_eq!(split_whitespace("  a b  c ", 1), ["a", "b  c "]);
        let x = strs(&["a-b--c", "d"], &[2]);
        let attrs = Attributes::new().with("delimiter", Attribute::String(b"-".to_vec()));
        let out = run_all(attrs.clone(), "StringSplit", x.clone()).unwrap();
        assert_eq!(out[0].shape(), &[2, 4]);
        assert_eq!(
            out[0].as_strings().unwrap(),
            &["a", "b", "", "c", "d", "", "", ""]
        );
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[4, 1]);
        let out = run_all(attrs.with("maxsplit", Attribute::Int(1)), "StringSplit", x).unwrap();
        assert_eq!(out[0].as_strings().unwrap(), &["a", "b--c", "d", ""]);
        let out = run_all(Attributes::new(), "StringSplit", strs(&[], &[0])).unwrap();
        assert_eq!(out[0].shape(), &[0, 0]);
        assert!(run_all(Attributes::new(), "StringSplit", Tensor::scalar(1i64)).is_err());
    }

    #[test]
    fn regex_full_match() {
        let attrs = |p: &str| Attributes::new().with("pattern", Attribute::String(p.into()));
        let x = strs(&["ab1", "xab1", "ab12"], &[3]);
        let out = run_all(attrs(r"ab\d|ab\d\d"), "RegexFullMatch", x).unwrap();
        assert_eq!(out[0].as_bool_slice().unwrap(), &[1, 0, 1]);
        assert!(run_all(attrs("("), "RegexFullMatch", strs(&["a"], &[1])).is_err());
    }

    #[test]
    fn string_concat_broadcasts() {
        let y = run(
            Attributes::new(),
            "StringConcat",
            vec![strs(&["a", "b"], &[2, 1]), strs(&["x", "y", "z"], &[3])],
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(
            y.as_strings().unwrap(),
            &["ax", "ay", "az", "bx", "by", "bz"]
        );
        assert!(run(
            Attributes::new(),
            "StringConcat",
            vec![strs(&["a", "b"], &[2]), strs(&["x", "y", "z"], &[3])]
        )
        .is_err());
        assert!(run(
            Attributes::new(),
            "StringConcat",
            vec![strs(&["a"], &[1]), Tensor::scalar(1.0f32)]
        )
        .is_err());
    }
}
