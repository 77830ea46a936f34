//! The v2 inference protocol's wire format: request and response JSON, the datatype names,
//! and the conversion of tensor data to and from JSON arrays and the binary tensor data
//! extension (raw little-endian bytes; BYTES elements as a 4-byte length and the bytes).

use crate::error::ApiError;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use strata::{DType, Tensor};

/// The v2 name of a dtype, or `None` when the protocol cannot carry it.
pub fn datatype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "BOOL",
        DType::U8 => "UINT8",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::I8 => "INT8",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F16 => "FP16",
        DType::BF16 => "BF16",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::String => "BYTES",
        _ => return None,
    })
}

/// The dtype of a v2 datatype name.
pub fn parse_datatype(name: &str) -> Option<DType> {
    Some(match name {
        "BOOL" => DType::Bool,
        "UINT8" => DType::U8,
        "UINT16" => DType::U16,
        "UINT32" => DType::U32,
        "UINT64" => DType::U64,
        "INT8" => DType::I8,
        "INT16" => DType::I16,
        "INT32" => DType::I32,
        "INT64" => DType::I64,
        "FP16" => DType::F16,
        "BF16" => DType::BF16,
        "FP32" => DType::F32,
        "FP64" => DType::F64,
        "BYTES" => DType::String,
        _ => return None,
    })
}

/// An inference request (the JSON part).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output`, `priority`, `timeout`).
    #[serde(default)]
    pub parameters: Map<String, Json>,
    /// The input tensors.
    pub inputs: Vec<RequestInput>,
    /// The outputs wanted (all when empty).
    #[serde(default)]
    pub outputs: Vec<RequestOutput>,
}

/// One input tensor of a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// Input name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// v2 datatype name.
    pub datatype: String,
    /// `binary_data_size` when the data follows the JSON.
    #[serde(default)]
    pub parameters: Map<String, Json>,
    /// Flat or nested JSON array, absent with binary data.
    #[serde(default)]
    pub data: Option<Json>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// `binary_data` (bool).
    #[serde(default)]
    pub parameters: Map<String, Json>,
}

/// An inference response (the JSON part).
#[derive(Debug, Serialize)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// Model version that ran.
    pub model_version: String,
    /// The request id, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of a response.
#[derive(Debug, Serialize)]
pub struct ResponseOutput {
    /// Output name.
    pub name: String,
    /// v2 datatype.
    pub datatype: &'static str,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `binary_data_size` when the data follows the JSON.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Json>,
    /// JSON data, absent when binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
}

/// The element count of `shape`, checked against `max_elements`.
pub fn checked_elements(
    input: &str,
    shape: &[i64],
    max_elements: usize,
) -> Result<(Vec<usize>, usize), ApiError> {
    let mut dims = Vec::with_capacity(shape.len());
    let mut count: usize = 1;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| {
            ApiError::bad_request(format!(
                "input '{input}': negative dimension {d} in shape {shape:?}"
            ))
        })?;
        count = count.checked_mul(d).filter(|&c| c <= max_elements).ok_or_else(|| {
            ApiError::bad_request(format!(
                "input '{input}': shape {shape:?} has more than {max_elements} elements (the server's limit)"
            ))
        })?;
        dims.push(d);
    }
    Ok((dims, count))
}

/// Flattens a (possibly nested) JSON array into `out`.
fn flatten<'a>(value: &'a Json, out: &mut Vec<&'a Json>) {
    match value {
        Json::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// A tensor from a JSON data array.
pub fn tensor_from_json(
    input: &str,
    dtype: DType,
    dims: &[usize],
    count: usize,
    data: &Json,
) -> Result<Tensor, ApiError> {
    let mut flat = Vec::with_capacity(count.min(1 << 20));
    flatten(data, &mut flat);
    if flat.len() != count {
        return Err(ApiError::bad_request(format!(
            "input '{input}': shape {dims:?} needs {count} elements, the data has {}",
            flat.len()
        )));
    }
    let bad = |i: usize| {
        ApiError::bad_request(format!(
            "input '{input}': element {i} ({}) is not a valid {}",
            flat[i],
            datatype_name(dtype).unwrap_or("value")
        ))
    };
    macro_rules! ints {
        ($t:ty) => {{
            let mut v: Vec<$t> = Vec::with_capacity(count);
            for (i, x) in flat.iter().enumerate() {
                let n = if let Some(n) = x.as_i64() {
                    <$t>::try_from(n).ok()
                } else {
                    x.as_u64().and_then(|n| <$t>::try_from(n).ok())
                };
                v.push(n.ok_or_else(|| bad(i))?);
            }
            Tensor::from_vec(v, dims)
        }};
    }
    macro_rules! floats {
        ($t:ty, $conv:expr) => {{
            let mut v: Vec<$t> = Vec::with_capacity(count);
            for (i, x) in flat.iter().enumerate() {
                v.push($conv(x.as_f64().ok_or_else(|| bad(i))?));
            }
            Tensor::from_vec(v, dims)
        }};
    }
    let tensor = match dtype {
        DType::Bool => {
            let mut v = Vec::with_capacity(count);
            for (i, x) in flat.iter().enumerate() {
                v.push(match x {
                    Json::Bool(b) => *b,
                    Json::Number(n) if n.as_u64() == Some(0) => false,
                    Json::Number(n) if n.as_u64() == Some(1) => true,
                    _ => return Err(bad(i)),
                });
            }
            Tensor::from_bools(&v, dims)
        }
        DType::U8 => ints!(u8),
        DType::U16 => ints!(u16),
        DType::U32 => ints!(u32),
        DType::U64 => ints!(u64),
        DType::I8 => ints!(i8),
        DType::I16 => ints!(i16),
        DType::I32 => ints!(i32),
        DType::I64 => ints!(i64),
        DType::F16 => floats!(f16, f16::from_f64),
        DType::BF16 => floats!(bf16, bf16::from_f64),
        DType::F32 => floats!(f32, |x: f64| x as f32),
        DType::F64 => floats!(f64, |x: f64| x),
        DType::String => {
            let mut v = Vec::with_capacity(count);
            for (i, x) in flat.iter().enumerate() {
                v.push(x.as_str().ok_or_else(|| bad(i))?.to_string());
            }
            Tensor::from_strings(v, dims)
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "input '{input}': dtype {other} is not a v2 datatype"
            )))
        }
    };
    tensor.map_err(|e| ApiError::bad_request(format!("input '{input}': {e}")))
}

/// A tensor from binary tensor data.
pub fn tensor_from_binary(
    input: &str,
    dtype: DType,
    dims: &[usize],
    count: usize,
    bytes: &[u8],
) -> Result<Tensor, ApiError> {
    let result = if dtype == DType::String {
        let mut strings = Vec::with_capacity(count.min(1 << 20));
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "input '{input}': BYTES data ends inside a length prefix"
                ))
            })?;
            let len = u32::from_le_bytes(*len) as usize;
            let (s, tail) = tail.split_at_checked(len).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "input '{input}': BYTES element of {len} bytes runs past the data"
                ))
            })?;
            strings.push(String::from_utf8_lossy(s).into_owned());
            rest = tail;
        }
        if strings.len() != count {
            return Err(ApiError::bad_request(format!(
                "input '{input}': shape {dims:?} needs {count} BYTES elements, the data has {}",
                strings.len()
            )));
        }
        Tensor::from_strings(strings, dims)
    } else {
        let expected = count * dtype.size_of();
        if bytes.len() != expected {
            return Err(ApiError::bad_request(format!(
                "input '{input}': shape {dims:?} of {} needs {expected} bytes, binary_data_size gives {}",
                datatype_name(dtype).unwrap_or("?"),
                bytes.len()
            )));
        }
        Tensor::from_raw_bytes(dtype, dims, bytes)
    };
    result.map_err(|e| ApiError::bad_request(format!("input '{input}': {e}")))
}

/// The tensor's elements as a flat JSON array.
pub fn tensor_to_json(tensor: &Tensor) -> Result<Json, ApiError> {
    let t = tensor.contiguous();
    let internal = |e: strata::TensorError| ApiError::internal(format!("output encoding: {e}"));
    macro_rules! nums {
        ($t:ty, $conv:expr) => {
            t.as_slice::<$t>()
                .map_err(internal)?
                .iter()
                .map(|&x| $conv(x))
                .collect()
        };
    }
    let values: Vec<Json> = match t.dtype() {
        DType::Bool => t
            .as_bool_slice()
            .map_err(internal)?
            .iter()
            .map(|&b| Json::Bool(b != 0))
            .collect(),
        DType::U8 => nums!(u8, Json::from),
        DType::U16 => nums!(u16, Json::from),
        DType::U32 => nums!(u32, Json::from),
        DType::U64 => nums!(u64, Json::from),
        DType::I8 => nums!(i8, Json::from),
        DType::I16 => nums!(i16, Json::from),
        DType::I32 => nums!(i32, Json::from),
        DType::I64 => nums!(i64, Json::from),
        DType::F16 => nums!(f16, |x: f16| Json::from(x.to_f64())),
        DType::BF16 => nums!(bf16, |x: bf16| Json::from(x.to_f64())),
        DType::F32 => nums!(f32, |x: f32| Json::from(f64::from(x))),
        DType::F64 => nums!(f64, Json::from),
        DType::String => t
            .as_strings()
            .map_err(internal)?
            .iter()
            .map(|s| Json::from(s.as_str()))
            .collect(),
        other => {
            return Err(ApiError::internal(format!(
                "dtype {other} has no v2 datatype"
            )))
        }
    };
    Ok(Json::Array(values))
}

/// The tensor's elements in the binary tensor data encoding.
pub fn tensor_to_binary(tensor: &Tensor) -> Result<Vec<u8>, ApiError> {
    let t = tensor.contiguous();
    let internal = |e: strata::TensorError| ApiError::internal(format!("output encoding: {e}"));
    if t.dtype() == DType::String {
        let mut out = Vec::new();
        for s in t.as_strings().map_err(internal)? {
            let len = u32::try_from(s.len())
                .map_err(|_| ApiError::internal("a BYTES element exceeds 4 GiB".to_string()))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        return Ok(out);
    }
    Ok(t.raw_bytes().map_err(internal)?.to_vec())
}

/// A boolean parameter (`true`/`false`), `default` when absent.
pub fn bool_parameter(
    params: &Map<String, Json>,
    key: &str,
    default: bool,
) -> Result<bool, ApiError> {
    match params.get(key) {
        None => Ok(default),
        Some(Json::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad_request(format!(
            "parameter '{key}' must be a boolean, got {other}"
        ))),
    }
}

/// A non-negative integer parameter, `None` when absent.
pub fn uint_parameter(params: &Map<String, Json>, key: &str) -> Result<Option<u64>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter '{key}' must be a non-negative integer, got {v}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn datatype_names_round_trip() {
        for name in [
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "BF16", "FP32", "FP64", "BYTES",
        ] {
            let dtype = parse_datatype(name).unwrap();
            assert_eq!(datatype_name(dtype), Some(name));
        }
        assert_eq!(parse_datatype("FP8"), None);
        assert_eq!(datatype_name(DType::Complex64), None);
    }

    #[test]
    fn json_data_nested_or_flat() {
        let flat = tensor_from_json("x", DType::F32, &[2, 2], 4, &json!([1, 2.5, 3, 4])).unwrap();
        let nested =
            tensor_from_json("x", DType::F32, &[2, 2], 4, &json!([[1, 2.5], [3, 4]])).unwrap();
        assert_eq!(
            flat.to_vec::<f32>().unwrap(),
            nested.to_vec::<f32>().unwrap()
        );
        assert_eq!(tensor_to_json(&flat).unwrap(), json!([1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn json_errors_name_the_input_and_element() {
        let e = tensor_from_json("x", DType::U8, &[2], 2, &json!([1, 300])).unwrap_err();
        assert!(
            e.message.contains("input 'x': element 1 (300)"),
            "{}",
            e.message
        );
        let e = tensor_from_json("x", DType::F32, &[3], 3, &json!([1, 2])).unwrap_err();
        assert!(
            e.message.contains("needs 3 elements, the data has 2"),
            "{}",
            e.message
        );
        let e = tensor_from_json("x", DType::Bool, &[1], 1, &json!(["yes"])).unwrap_err();
        assert!(e.message.contains("not a valid BOOL"), "{}", e.message);
    }

    #[test]
    fn element_limit_and_negative_dims() {
        assert_eq!(
            checked_elements("x", &[2, 3], 100).unwrap(),
            (vec![2, 3], 6)
        );
        assert!(checked_elements("x", &[-1, 3], 100).is_err());
        assert!(checked_elements("x", &[1 << 40, 1 << 40], usize::MAX).is_err());
        assert!(checked_elements("x", &[11, 10], 100).is_err());
    }

    #[test]
    fn binary_round_trip_every_kind() {
        let t = Tensor::from_vec(vec![1i32, -2, 3], &[3]).unwrap();
        let bytes = tensor_to_binary(&t).unwrap();
        let back = tensor_from_binary("x", DType::I32, &[3], 3, &bytes).unwrap();
        assert_eq!(back.to_vec::<i32>().unwrap(), vec![1, -2, 3]);
        assert!(tensor_from_binary("x", DType::I32, &[2], 2, &bytes).is_err());

        let s = Tensor::from_strings(vec!["ab".into(), "".into()], &[2]).unwrap();
        let bytes = tensor_to_binary(&s).unwrap();
        assert_eq!(bytes, vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        let back = tensor_from_binary("x", DType::String, &[2], 2, &bytes).unwrap();
        assert_eq!(back.as_strings().unwrap(), s.as_strings().unwrap());
        assert!(tensor_from_binary("x", DType::String, &[2], 2, &bytes[..5]).is_err());
        assert!(tensor_from_binary("x", DType::String, &[2], 2, &[9, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn half_and_bool_json() {
        let h = tensor_from_json("h", DType::F16, &[2], 2, &json!([0.5, -1])).unwrap();
        assert_eq!(tensor_to_json(&h).unwrap(), json!([0.5, -1.0]));
        let b = tensor_from_json("b", DType::Bool, &[3], 3, &json!([true, 0, 1])).unwrap();
        assert_eq!(tensor_to_json(&b).unwrap(), json!([true, false, true]));
    }
}
