//! String kernels: StringNormalizer and StringConcat. (RegexFullMatch would need a regex
//! engine and is not provided.)

use crate::{op_boilerplate, EvalCtx, Fact, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use super::shape::checked_numel;
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
        Ok(Box::new(StringNormalizer::new(case, case_sensitive, stopwords)))
    });
    registry.register("", "StringConcat", 20, |_| Ok(Box::new(StringConcat)));
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
        StringNormalizer { case, case_sensitive, stopwords }
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
            return Err(OpError::UnsupportedDType { index: 0, dtype: x.dtype() });
        }
        let two_d = match x.shape() {
            [_] => false,
            [1, _] => true,
            s => return Err(OpError::invalid(0, format!("expected shape [C] or [1, C], got {s:?}"))),
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
        let (Some(a), Some(b)) = (inputs.first().and_then(Fact::concrete_shape), inputs.get(1).and_then(Fact::concrete_shape)) else {
            return Ok(None);
        };
        let out = broadcast_shapes(&a, &b).map_err(|e| OpError::Shape(e.to_string()))?;
        Ok(Some(vec![Fact::known(DType::String, &out)]))
    }

    fn eval(&self, _ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let (a, b) = (inputs.tensor(0)?, inputs.tensor(1)?);
        for (i, t) in [(0, a), (1, b)] {
            if t.dtype() != DType::String {
                return Err(OpError::UnsupportedDType { index: i, dtype: t.dtype() });
            }
        }
        let shape = broadcast_shapes(a.shape(), b.shape()).map_err(|e| OpError::Shape(e.to_string()))?;
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
}
