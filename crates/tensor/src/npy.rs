//! Reading and writing NumPy `.npy` files (format versions 1.0 to 3.0, little-endian, C or
//! Fortran order on read; version 1.0, C order on write).

use crate::{element_count, DType, Result, Tensor, TensorError};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        DType::Complex64 => "<c8",
        DType::Complex128 => "<c16",
        _ => return None,
    })
}

fn dtype_of(descr: &str) -> Option<DType> {
    let d = descr.replace('=', "<");
    DType::ALL
        .iter()
        .copied()
        .find(|&t| descr_of_alternatives(t).contains(&d.as_str()))
}

fn descr_of_alternatives(t: DType) -> Vec<&'static str> {
    match descr(t) {
        Some(s) if s.starts_with('|') => vec![s, &s[1..]],
        Some(s) => vec![s],
        None => vec![],
    }
}

fn bad(msg: impl Into<String>) -> TensorError {
    TensorError::Npy(msg.into())
}

/// Extracts the quoted value following `key` in the header dictionary.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

/// Parses a `.npy` byte image into a tensor.
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not an .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;

    let descr_value = header_field(header, "descr").ok_or_else(|| bad("header lacks 'descr'"))?;
    let descr_str = descr_value
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad("malformed 'descr'"))?;
    let dtype =
        dtype_of(descr_str).ok_or_else(|| bad(format!("unsupported dtype '{descr_str}'")))?;
    let fortran = header_field(header, "fortran_order")
        .map(|v| v.starts_with("True"))
        .ok_or_else(|| bad("header lacks 'fortran_order'"))?;
    let shape_value = header_field(header, "shape").ok_or_else(|| bad("header lacks 'shape'"))?;
    let inner = shape_value
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("malformed 'shape'"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("bad dimension '{s}'")))
        })
        .collect::<Result<_>>()?;

    let n = element_count(&shape)?;
    let nbytes = n
        .checked_mul(dtype.size_of())
        .ok_or_else(|| bad("shape too large"))?;
    let data = bytes
        .get(data_start..)
        .filter(|d| d.len() >= nbytes)
        .ok_or_else(|| {
            bad(format!(
                "data holds fewer than the {nbytes} bytes shape {shape:?} needs"
            ))
        })?;
    if fortran {
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        let t = Tensor::from_raw_bytes(dtype, &reversed, &data[..nbytes])?;
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        Ok(t.permute(&perm)?.contiguous())
    } else {
        Tensor::from_raw_bytes(dtype, &shape, &data[..nbytes])
    }
}

/// Serializes a tensor as a version 1.0 `.npy` image.
pub fn to_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let d = descr(tensor.dtype())
        .ok_or_else(|| bad(format!("cannot store {} in .npy", tensor.dtype())))?;
    let shape = match tensor.shape() {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let contiguous = tensor.contiguous();
    let data = contiguous.raw_bytes()?;
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads a `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<Tensor> {
    from_bytes(&std::fs::read(path)?)
}

/// Writes a `.npy` file.
pub fn write(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    std::fs::write(path, to_bytes(tensor)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Tensor::from_vec(vec![1.5f32, 2.0, -3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let bytes = to_bytes(&t).unwrap();
        assert_eq!((bytes.len() - t.len() * 4) % 64, 0);
        let back = from_bytes(&bytes).unwrap();
        assert_eq!(back.shape(), &[2, 3]);
        assert_eq!(
            back.as_slice::<f32>().unwrap(),
            t.as_slice::<f32>().unwrap()
        );
        let b = Tensor::from_bools(&[true, false], &[2]).unwrap();
        let back = from_bytes(&to_bytes(&b).unwrap()).unwrap();
        assert_eq!(back.dtype(), DType::Bool);
        let s = Tensor::scalar(7i64);
        assert_eq!(
            from_bytes(&to_bytes(&s).unwrap()).unwrap().shape(),
            &[] as &[usize]
        );
    }

    #[test]
    fn fortran_order_and_errors() {
        let header = "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 2), }";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [1i32, 3, 2, 4] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let t = from_bytes(&bytes).unwrap();
        assert_eq!(t.as_slice::<i32>().unwrap(), &[1, 2, 3, 4]);
        assert!(from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(from_bytes(b"garbage").is_err());
    }
}
