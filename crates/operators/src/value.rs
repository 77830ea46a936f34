//! Runtime values flowing along graph edges, and the inputs handed to a kernel.

use crate::{OpError, OpResult};
use strata_tensor::Tensor;

/// A value of an ONNX graph: a tensor, a sequence of tensors, or an optional value.
#[derive(Debug, Clone)]
pub enum Value {
    /// A tensor.
    Tensor(Tensor),
    /// An ordered list of tensors (ONNX `seq(tensor(...))`).
    Sequence(Vec<Tensor>),
    /// An optional value, possibly empty.
    Optional(Option<Box<Value>>),
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}

impl Value {
    /// The tensor, if this value is one.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The tensor, if this value is one.
    pub fn into_tensor(self) -> Option<Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Tensor(t) => format!("tensor {}{:?}", t.dtype(), t.shape()),
            Value::Sequence(s) => format!("sequence of {} tensors", s.len()),
            Value::Optional(None) => "empty optional".into(),
            Value::Optional(Some(v)) => format!("optional {}", v.describe()),
        }
    }
}

/// The inputs of one node evaluation, by position; absent optional inputs are `None`.
///
/// Kernels that can work in place may [`Inputs::take_tensor`] an input: when the executor
/// held the last reference, the tensor's storage is then unique and writable.
#[derive(Debug, Default)]
pub struct Inputs {
    values: Vec<Option<Value>>,
}

impl Inputs {
    /// Wraps positional input values.
    pub fn new(values: Vec<Option<Value>>) -> Self {
        Inputs { values }
    }

    /// Inputs that are all present tensors (tests and constant folding).
    pub fn from_tensors(tensors: impl IntoIterator<Item = Tensor>) -> Self {
        Inputs {
            values: tensors
                .into_iter()
                .map(|t| Some(Value::Tensor(t)))
                .collect(),
        }
    }

    /// Number of input positions (present or not).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no input positions.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value at `index`, if present.
    pub fn value(&self, index: usize) -> Option<&Value> {
        self.values.get(index).and_then(Option::as_ref)
    }

    /// The required tensor at `index`.
    pub fn tensor(&self, index: usize) -> OpResult<&Tensor> {
        match self.value(index) {
            Some(Value::Tensor(t)) => Ok(t),
            Some(other) => Err(OpError::invalid(
                index,
                format!("expected a tensor, got {}", other.describe()),
            )),
            None => Err(OpError::MissingInput { index }),
        }
    }

    /// The tensor at `index` when the input is present (absent inputs and empty names give
    /// `None`).
    pub fn opt_tensor(&self, index: usize) -> OpResult<Option<&Tensor>> {
        match self.value(index) {
            None => Ok(None),
            Some(_) => self.tensor(index).map(Some),
        }
    }

    /// Moves the required tensor at `index` out (see the type's docs).
    pub fn take_tensor(&mut self, index: usize) -> OpResult<Tensor> {
        match self.values.get_mut(index).and_then(Option::take) {
            Some(Value::Tensor(t)) => Ok(t),
            Some(other) => Err(OpError::invalid(
                index,
                format!("expected a tensor, got {}", other.describe()),
            )),
            None => Err(OpError::MissingInput { index }),
        }
    }

    /// Moves the value at `index` out.
    pub fn take(&mut self, index: usize) -> Option<Value> {
        self.values.get_mut(index).and_then(Option::take)
    }

    /// All present tensors, in order (for variadic ops such as Sum or Concat).
    pub fn tensors(&self) -> OpResult<Vec<&Tensor>> {
        (0..self.values.len())
            .filter(|&i| self.values[i].is_some())
            .map(|i| self.tensor(i))
            .collect()
    }
}
