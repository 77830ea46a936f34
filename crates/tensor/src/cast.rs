//! Element type conversion (ONNX `Cast` semantics for the natively represented types).

use crate::{dispatch_numeric, DType, Element, Result, Tensor, TensorError};

fn convert<S: Element, D: Element>(src: &[S]) -> Vec<D> {
    if S::IS_FLOAT || D::IS_FLOAT {
        src.iter().map(|&v| D::from_f64(v.to_f64())).collect()
    } else {
        src.iter().map(|&v| D::from_i128(v.to_i128())).collect()
    }
}

fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "INF".into()
        } else {
            "-INF".into()
        }
    } else {
        format!("{v}")
    }
}

impl Tensor {
    /// The elements converted to `to`: numeric and bool types among themselves (floats to
    /// integers truncate toward zero, integers wrap), numbers to and from strings.
    pub fn cast(&self, to: DType) -> Result<Tensor> {
        let from = self.dtype();
        if from == to {
            return Ok(self.clone());
        }
        let src = self.contiguous();
        let shape = self.shape().to_vec();
        let unsupported = || TensorError::Cast { from, to };
        match (from, to) {
            (DType::Bool, _) if to.is_plain() => {
                let as_u8 = Tensor::from_slice(src.as_bool_slice()?, &shape)?;
                as_u8.cast(to)
            }
            (_, DType::Bool) => {
                let values: Vec<bool> = dispatch_numeric!(from, T => src.as_slice::<T>()?.iter().map(|v| v.to_f64() != 0.0).collect(), return Err(unsupported()));
                Tensor::from_bools(&values, &shape)
            }
            (DType::String, _) => {
                let strings = src.as_strings()?;
                dispatch_numeric!(to, T => {
                    let mut out = Vec::with_capacity(strings.len());
                    for s in strings {
                        let v: f64 = parse_number(s).ok_or_else(unsupported)?;
                        out.push(if T::IS_FLOAT { T::from_f64(v) } else { T::from_i128(v as i128) });
                    }
                    Tensor::from_vec(out, &shape)
                }, Err(unsupported()))
            }
            (_, DType::String) => {
                let strings: Vec<String> = dispatch_numeric!(from, T => src.as_slice::<T>()?.iter().map(|v| {
                    if T::IS_FLOAT { format_float(v.to_f64()) } else { v.to_i128().to_string() }
                }).collect(), return Err(unsupported()));
                Tensor::from_strings(strings, &shape)
            }
            _ => dispatch_numeric!(from, S => dispatch_numeric!(to, D => {
                Tensor::from_vec(convert::<S, D>(src.as_slice::<S>()?), &shape)
            }, Err(unsupported())), Err(unsupported())),
        }
    }
}

fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_to_int_truncates_and_int_wraps() {
        let t = Tensor::from_vec(vec![1.7f32, -2.5, 300.0], &[3]).unwrap();
        assert_eq!(
            t.cast(DType::I32).unwrap().as_slice::<i32>().unwrap(),
            &[1, -2, 300]
        );
        let i = Tensor::from_vec(vec![300i32, -1], &[2]).unwrap();
        assert_eq!(
            i.cast(DType::U8).unwrap().as_slice::<u8>().unwrap(),
            &[44, 255]
        );
    }

    #[test]
    fn bools_and_strings() {
        let t = Tensor::from_vec(vec![0.0f32, 2.0], &[2]).unwrap();
        let b = t.cast(DType::Bool).unwrap();
        assert_eq!(b.as_bool_slice().unwrap(), &[0, 1]);
        assert_eq!(
            b.cast(DType::F64).unwrap().as_slice::<f64>().unwrap(),
            &[0.0, 1.0]
        );
        let s = Tensor::from_strings(vec!["1.5".into(), "-inf".into()], &[2]).unwrap();
        let f = s.cast(DType::F32).unwrap();
        assert_eq!(f.as_slice::<f32>().unwrap(), &[1.5, f32::NEG_INFINITY]);
    }

    #[test]
    fn half_precision() {
        let t = Tensor::from_vec(vec![1.0f32, 0.1], &[2]).unwrap();
        let h = t.cast(DType::F16).unwrap();
        let back = h.cast(DType::F32).unwrap();
        assert!((back.as_slice::<f32>().unwrap()[1] - 0.1).abs() < 1e-3);
    }
}
