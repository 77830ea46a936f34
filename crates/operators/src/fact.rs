//! What is known about a value before running: its dtype and (possibly symbolic) shape.

use std::fmt;
use strata_tensor::{DType, Tensor};

/// One dimension: a number, or a symbol bound when the model runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Known(usize),
    /// A named size such as `batch`, resolved at run time.
    Symbol(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

impl Dim {
    /// The size when fixed.
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Symbol(_) => None,
        }
    }
}

/// Known properties of a value. Every field may be unknown.
#[derive(Debug, Clone, Default)]
pub struct Fact {
    /// Element type.
    pub dtype: Option<DType>,
    /// Dimensions; `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
    /// The value itself when it is a constant (initializer or folded).
    pub value: Option<Tensor>,
}

impl Fact {
    /// A fact with a dtype and fixed dimensions.
    pub fn known(dtype: DType, shape: &[usize]) -> Fact {
        Fact {
            dtype: Some(dtype),
            shape: Some(shape.iter().map(|&d| Dim::Known(d)).collect()),
            value: None,
        }
    }

    /// The fact of a constant tensor.
    pub fn constant(tensor: Tensor) -> Fact {
        let mut f = Fact::known(tensor.dtype(), tensor.shape());
        f.value = Some(tensor);
        f
    }

    /// The shape when every dimension is fixed.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }

    /// The rank when known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(dims) => {
                let parts: Vec<String> = dims.iter().map(Dim::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            None => f.write_str("[?]"),
        }
    }
}
