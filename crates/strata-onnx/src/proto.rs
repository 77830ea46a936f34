//! `TensorProto` <-> [`Tensor`], plus the `SequenceProto`/`OptionalProto` containers that
//! onnx's test data uses.

use crate::{OnnxError, Result};
use prost::Message;
use std::path::{Component, Path};
use strata_ops::Value;
use strata_tensor::{element_count, DType, Tensor};
use tract_onnx::pb;

/// Largest tensor (in bytes) a model or file may declare: 16 GiB. Anything above is treated as
/// corrupt rather than allocated.
const MAX_TENSOR_BYTES: usize = 16 << 30;

/// onnx-data.proto's `SequenceProto` (only the tensor and nested-sequence cases are used).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SequenceProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub elem_type: i32,
    #[prost(message, repeated, tag = "3")]
    pub tensor_values: Vec<pb::TensorProto>,
    #[prost(message, repeated, tag = "5")]
    pub sequence_values: Vec<SequenceProto>,
    #[prost(message, repeated, tag = "7")]
    pub optional_values: Vec<OptionalProto>,
}

/// onnx-data.proto's `OptionalProto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OptionalProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "3")]
    pub tensor_value: Option<pb::TensorProto>,
    #[prost(message, optional, boxed, tag = "5")]
    pub sequence_value: Option<Box<SequenceProto>>,
    #[prost(message, optional, boxed, tag = "7")]
    pub optional_value: Option<Box<OptionalProto>>,
}

const ELEM_TENSOR: i32 = 1;
const ELEM_SEQUENCE: i32 = 3;
const ELEM_OPTIONAL: i32 = 5;

fn bad(name: &str, reason: impl Into<String>) -> OnnxError {
    OnnxError::BadTensor {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Bytes needed to store `n` elements of `dtype` in ONNX's packed form.
fn packed_len(dtype: DType, n: usize) -> usize {
    match dtype {
        DType::U4 | DType::I4 | DType::F4E2M1 => n.div_ceil(2),
        DType::U2 | DType::I2 => n.div_ceil(4),
        _ => n * dtype.size_of(),
    }
}

/// Unpacks sub-byte elements (low bits first) into one byte each; signed types are
/// sign-extended.
fn unpack_sub_byte(dtype: DType, packed: &[u8], n: usize) -> Vec<u8> {
    let (bits, signed) = match dtype {
        DType::I4 => (4, true),
        DType::I2 => (2, true),
        DType::U2 => (2, false),
        _ => (4, false),
    };
    let per_byte = 8 / bits;
    let mask = (1u8 << bits) - 1;
    (0..n)
        .map(|i| {
            let v = (packed[i / per_byte] >> ((i % per_byte) * bits)) & mask;
            if signed && v & (1 << (bits - 1)) != 0 {
                v | !mask
            } else {
                v
            }
        })
        .collect()
}

fn pack_sub_byte(dtype: DType, unpacked: &[u8]) -> Vec<u8> {
    let bits = if matches!(dtype, DType::U2 | DType::I2) {
        2
    } else {
        4
    };
    let per_byte = 8 / bits;
    let mask = (1u8 << bits) - 1;
    let mut out = vec![0u8; unpacked.len().div_ceil(per_byte)];
    for (i, &v) in unpacked.iter().enumerate() {
        out[i / per_byte] |= (v & mask) << ((i % per_byte) * bits);
    }
    out
}

fn is_sub_byte(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::U4 | DType::I4 | DType::F4E2M1 | DType::U2 | DType::I2
    )
}

/// Reads external data for a tensor, refusing paths that leave the model's folder.
fn read_external(tp: &pb::TensorProto, base_dir: Option<&Path>, need: usize) -> Result<Vec<u8>> {
    let name = &tp.name;
    let field = |key: &str| {
        tp.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let location =
        field("location").ok_or_else(|| bad(name, "external data without a location"))?;
    let rel = Path::new(location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad(
            name,
            format!("external data location '{location}' leaves the model folder"),
        ));
    }
    let base = base_dir.ok_or_else(|| {
        bad(
            name,
            "external data needs the model's folder; load the model from a path",
        )
    })?;
    let path = base.join(rel);
    let parse = |key: &str| -> Result<Option<usize>> {
        field(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(name, format!("external data {key} '{v}' is not a number")))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?;
    let bytes = std::fs::read(&path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let end = offset.saturating_add(length.unwrap_or(need));
    let data = bytes.get(offset..end).ok_or_else(|| {
        bad(
            name,
            format!(
                "external file {} holds {} bytes, needs {end}",
                path.display(),
                bytes.len()
            ),
        )
    })?;
    Ok(data.to_vec())
}

fn check_count(name: &str, field: &str, have: usize, need: usize) -> Result<()> {
    if have == need {
        Ok(())
    } else {
        Err(bad(
            name,
            format!("{field} holds {have} values but the dims need {need}"),
        ))
    }
}

/// Converts a `TensorProto` (raw, typed or external data) into a tensor.
pub(crate) fn tensor_from_proto(tp: &pb::TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let name = tp.name.as_str();
    let dtype = DType::from_onnx_code(tp.data_type)
        .ok_or_else(|| bad(name, format!("unknown data type code {}", tp.data_type)))?;
    let mut shape = Vec::with_capacity(tp.dims.len());
    for &d in &tp.dims {
        shape.push(
            usize::try_from(d)
                .map_err(|_| bad(name, format!("negative dimension {d} in {:?}", tp.dims)))?,
        );
    }
    let n = element_count(&shape).map_err(|_| bad(name, format!("dims {shape:?} overflow")))?;
    let bytes_needed = packed_len(dtype, n);
    if bytes_needed > MAX_TENSOR_BYTES {
        return Err(bad(
            name,
            format!("dims {shape:?} declare {bytes_needed} bytes, more than the 16 GiB limit"),
        ));
    }

    if dtype == DType::String {
        check_count(name, "string_data", tp.string_data.len(), n)?;
        let strings = tp
            .string_data
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        return Ok(Tensor::from_strings(strings, &shape)?);
    }

    let external = tp.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    let raw: Option<Vec<u8>> = if external {
        Some(read_external(tp, base_dir, bytes_needed)?)
    } else if !tp.raw_data.is_empty() {
        Some(tp.raw_data.clone())
    } else {
        None
    };
    if let Some(raw) = raw {
        if raw.len() != bytes_needed {
            return Err(bad(
                name,
                format!(
                    "dims {shape:?} of {dtype} need {bytes_needed} bytes but the data holds {}",
                    raw.len()
                ),
            ));
        }
        return if is_sub_byte(dtype) {
            Ok(Tensor::from_raw_bytes(
                dtype,
                &shape,
                &unpack_sub_byte(dtype, &raw, n),
            )?)
        } else {
            Ok(Tensor::from_raw_bytes(dtype, &shape, &raw)?)
        };
    }
    typed_fields_to_tensor(tp, dtype, &shape, n)
}

fn typed_fields_to_tensor(
    tp: &pb::TensorProto,
    dtype: DType,
    shape: &[usize],
    n: usize,
) -> Result<Tensor> {
    let name = tp.name.as_str();
    let from_i32 = |conv: &dyn Fn(i32) -> Vec<u8>| -> Result<Tensor> {
        check_count(name, "int32_data", tp.int32_data.len(), n)?;
        let bytes: Vec<u8> = tp.int32_data.iter().flat_map(|&v| conv(v)).collect();
        Ok(Tensor::from_raw_bytes(dtype, shape, &bytes)?)
    };
    match dtype {
        DType::F32 => {
            check_count(name, "float_data", tp.float_data.len(), n)?;
            Ok(Tensor::from_slice(&tp.float_data, shape)?)
        }
        DType::Complex64 => {
            check_count(name, "float_data", tp.float_data.len(), 2 * n)?;
            let bytes: Vec<u8> = tp.float_data.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok(Tensor::from_raw_bytes(dtype, shape, &bytes)?)
        }
        DType::F64 => {
            check_count(name, "double_data", tp.double_data.len(), n)?;
            Ok(Tensor::from_slice(&tp.double_data, shape)?)
        }
        DType::Complex128 => {
            check_count(name, "double_data", tp.double_data.len(), 2 * n)?;
            let bytes: Vec<u8> = tp
                .double_data
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            Ok(Tensor::from_raw_bytes(dtype, shape, &bytes)?)
        }
        DType::I64 => {
            check_count(name, "int64_data", tp.int64_data.len(), n)?;
            Ok(Tensor::from_slice(&tp.int64_data, shape)?)
        }
        DType::U64 => {
            check_count(name, "uint64_data", tp.uint64_data.len(), n)?;
            Ok(Tensor::from_slice(&tp.uint64_data, shape)?)
        }
        DType::U32 => {
            check_count(name, "uint64_data", tp.uint64_data.len(), n)?;
            let v: Vec<u32> = tp.uint64_data.iter().map(|&x| x as u32).collect();
            Ok(Tensor::from_slice(&v, shape)?)
        }
        DType::I32 => from_i32(&|v| v.to_le_bytes().to_vec()),
        DType::I16 | DType::U16 | DType::F16 | DType::BF16 => {
            from_i32(&|v| (v as u16).to_le_bytes().to_vec())
        }
        DType::I8 | DType::U8 | DType::Bool => from_i32(&|v| vec![v as u8]),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F8E8M0 => {
            from_i32(&|v| vec![v as u8])
        }
        DType::U4 | DType::I4 | DType::F4E2M1 | DType::U2 | DType::I2 => {
            // int32_data holds the packed bytes, one byte per entry.
            let packed: Vec<u8> = tp.int32_data.iter().map(|&v| v as u8).collect();
            check_count(name, "int32_data", packed.len(), packed_len(dtype, n))?;
            Ok(Tensor::from_raw_bytes(
                dtype,
                shape,
                &unpack_sub_byte(dtype, &packed, n),
            )?)
        }
        DType::String => Err(bad(name, "string tensor without string_data")),
        _ => Err(bad(name, format!("unsupported data type {dtype}"))),
    }
}

/// Converts a tensor into a `TensorProto` (raw data, or string data for strings).
pub(crate) fn tensor_to_proto(tensor: &Tensor, name: &str) -> Result<pb::TensorProto> {
    let mut tp = pb::TensorProto {
        name: name.to_string(),
        dims: tensor.shape().iter().map(|&d| d as i64).collect(),
        data_type: tensor.dtype().onnx_code(),
        ..Default::default()
    };
    let t = tensor.contiguous();
    if tensor.dtype() == DType::String {
        tp.string_data = t
            .as_strings()?
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
    } else if is_sub_byte(tensor.dtype()) {
        tp.raw_data = pack_sub_byte(tensor.dtype(), t.raw_bytes()?);
    } else {
        tp.raw_data = t.raw_bytes()?.to_vec();
    }
    Ok(tp)
}

/// Decodes a serialized `TensorProto`.
pub fn tensor_from_proto_bytes(bytes: &[u8]) -> Result<Tensor> {
    let tp = pb::TensorProto::decode(bytes).map_err(|e| OnnxError::Decode {
        what: "tensor",
        reason: e.to_string(),
    })?;
    tensor_from_proto(&tp, None)
}

/// Serializes a tensor as a `TensorProto` named `name`.
pub fn tensor_to_proto_bytes(tensor: &Tensor, name: &str) -> Result<Vec<u8>> {
    Ok(tensor_to_proto(tensor, name)?.encode_to_vec())
}

/// Reads a `.pb` file holding one `TensorProto`.
pub fn read_tensor_file(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    tensor_from_proto_bytes(&bytes)
}

/// Writes a tensor as a `.pb` `TensorProto` file.
pub fn write_tensor_file(path: impl AsRef<Path>, tensor: &Tensor, name: &str) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, tensor_to_proto_bytes(tensor, name)?).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn sequence_to_value(sp: &SequenceProto) -> Result<Value> {
    match sp.elem_type {
        ELEM_TENSOR | 0 => Ok(Value::Sequence(
            sp.tensor_values
                .iter()
                .map(|t| tensor_from_proto(t, None))
                .collect::<Result<_>>()?,
        )),
        other => Err(bad(
            &sp.name,
            format!("sequences of element type {other} are not supported"),
        )),
    }
}

fn optional_to_value(op: &OptionalProto) -> Result<Value> {
    let inner = match op.elem_type {
        0 => None,
        ELEM_TENSOR => op
            .tensor_value
            .as_ref()
            .map(|t| tensor_from_proto(t, None).map(Value::Tensor))
            .transpose()?,
        ELEM_SEQUENCE => op
            .sequence_value
            .as_deref()
            .map(sequence_to_value)
            .transpose()?,
        ELEM_OPTIONAL => op
            .optional_value
            .as_deref()
            .map(optional_to_value)
            .transpose()?,
        other => {
            return Err(bad(
                &op.name,
                format!("optionals of element type {other} are not supported"),
            ))
        }
    };
    Ok(Value::Optional(inner.map(Box::new)))
}

/// Decodes a serialized value of the given kind (tensor, sequence or optional), as found in
/// onnx test data sets.
pub fn read_value_bytes(bytes: &[u8], kind: crate::ValueKind) -> Result<Value> {
    let decode_err = |what: &'static str| {
        move |e: prost::DecodeError| OnnxError::Decode {
            what,
            reason: e.to_string(),
        }
    };
    match kind {
        crate::ValueKind::Sequence => {
            sequence_to_value(&SequenceProto::decode(bytes).map_err(decode_err("sequence"))?)
        }
        crate::ValueKind::Optional => {
            optional_to_value(&OptionalProto::decode(bytes).map_err(decode_err("optional"))?)
        }
        _ => Ok(Value::Tensor(tensor_from_proto_bytes(bytes)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_all_plain_types() {
        for dtype in [
            DType::F32,
            DType::F64,
            DType::I64,
            DType::U8,
            DType::Bool,
            DType::F16,
            DType::I4,
            DType::U2,
        ] {
            let t = Tensor::from_raw_bytes(dtype, &[3], &vec![1u8; 3 * dtype.size_of()]).unwrap();
            let back = tensor_from_proto_bytes(&tensor_to_proto_bytes(&t, "x").unwrap()).unwrap();
            assert_eq!(back.dtype(), dtype);
            assert_eq!(back.raw_bytes().unwrap(), t.raw_bytes().unwrap(), "{dtype}");
        }
    }

    #[test]
    fn int4_unpacks_with_sign() {
        assert_eq!(unpack_sub_byte(DType::I4, &[0xF7], 2), vec![7, 0xFF]);
        assert_eq!(unpack_sub_byte(DType::U4, &[0xF7, 0x01], 3), vec![7, 15, 1]);
        assert_eq!(pack_sub_byte(DType::U4, &[7, 15, 1]), vec![0xF7, 0x01]);
    }

    #[test]
    fn declared_size_must_match_data() {
        let tp = pb::TensorProto {
            name: "w".into(),
            dims: vec![1 << 20, 1 << 20],
            data_type: 1,
            raw_data: vec![0; 16],
            ..Default::default()
        };
        let err = tensor_from_proto(&tp, None).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("16"), "{err}");
        let tp = pb::TensorProto {
            name: "n".into(),
            dims: vec![-1],
            data_type: 1,
            ..Default::default()
        };
        assert!(tensor_from_proto(&tp, None)
            .unwrap_err()
            .to_string()
            .contains("negative"));
        let tp = pb::TensorProto {
            name: "f".into(),
            dims: vec![3],
            data_type: 1,
            float_data: vec![1.0],
            ..Default::default()
        };
        assert!(tensor_from_proto(&tp, None).is_err());
    }

    #[test]
    fn external_paths_cannot_escape() {
        let tp = pb::TensorProto {
            name: "e".into(),
            dims: vec![1],
            data_type: 1,
            data_location: Some(1),
            external_data: vec![pb::StringStringEntryProto {
                key: "location".into(),
                value: "../secret".into(),
            }],
            ..Default::default()
        };
        let err = tensor_from_proto(&tp, Some(Path::new("/tmp")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves the model folder"), "{err}");
    }
}
