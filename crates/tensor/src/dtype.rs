//! Element types: the [`DType`] tag (one per ONNX `TensorProto.DataType`) and the [`Element`]
//! trait implemented by every Rust type a tensor can be viewed as.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor. Discriminants are ONNX's `TensorProto.DataType` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit float.
    F32 = 1,
    /// Unsigned 8-bit integer.
    U8 = 2,
    /// Signed 8-bit integer.
    I8 = 3,
    /// Unsigned 16-bit integer.
    U16 = 4,
    /// Signed 16-bit integer.
    I16 = 5,
    /// Signed 32-bit integer.
    I32 = 6,
    /// Signed 64-bit integer.
    I64 = 7,
    /// UTF-8 string.
    String = 8,
    /// Boolean, stored as one byte holding 0 or 1.
    Bool = 9,
    /// IEEE half precision.
    F16 = 10,
    /// 64-bit float.
    F64 = 11,
    /// Unsigned 32-bit integer.
    U32 = 12,
    /// Unsigned 64-bit integer.
    U64 = 13,
    /// Complex of two f32, stored as (re, im).
    Complex64 = 14,
    /// Complex of two f64, stored as (re, im).
    Complex128 = 15,
    /// Brain float 16.
    BF16 = 16,
    /// float8 e4m3fn, one byte per element.
    F8E4M3FN = 17,
    /// float8 e4m3fnuz, one byte per element.
    F8E4M3FNUZ = 18,
    /// float8 e5m2, one byte per element.
    F8E5M2 = 19,
    /// float8 e5m2fnuz, one byte per element.
    F8E5M2FNUZ = 20,
    /// 4-bit unsigned integer, stored unpacked (one byte per element).
    U4 = 21,
    /// 4-bit signed integer, stored unpacked (one byte per element).
    I4 = 22,
    /// float4 e2m1, stored unpacked (one byte per element).
    F4E2M1 = 23,
    /// float8 e8m0, one byte per element.
    F8E8M0 = 24,
    /// 2-bit unsigned integer, stored unpacked.
    U2 = 25,
    /// 2-bit signed integer, stored unpacked.
    I2 = 26,
}

impl DType {
    /// Every dtype, in ONNX code order.
    pub const ALL: [DType; 26] = [
        DType::F32,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::String,
        DType::Bool,
        DType::F16,
        DType::F64,
        DType::U32,
        DType::U64,
        DType::Complex64,
        DType::Complex128,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::U4,
        DType::I4,
        DType::F4E2M1,
        DType::F8E8M0,
        DType::U2,
        DType::I2,
    ];

    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        self as i32
    }

    /// The dtype for an ONNX `TensorProto.DataType` code, if there is one.
    pub fn from_onnx_code(code: i32) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.onnx_code() == code)
    }

    /// Bytes one element occupies in host memory (sub-byte types are stored unpacked; strings
    /// are not stored as bytes and report 0).
    pub fn size_of(self) -> usize {
        use DType::*;
        match self {
            Bool | U8 | I8 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1
            | F8E8M0 | U2 | I2 => 1,
            U16 | I16 | F16 | BF16 => 2,
            F32 | I32 | U32 => 4,
            F64 | I64 | U64 | Complex64 => 8,
            Complex128 => 16,
            String => 0,
        }
    }

    /// Whether this is a floating-point type with a native Rust representation.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// Whether this is an integer type with a native Rust representation.
    pub fn is_integer(self) -> bool {
        use DType::*;
        matches!(self, U8 | I8 | U16 | I16 | U32 | I32 | U64 | I64)
    }

    /// Whether elements live in a byte buffer (everything but strings).
    pub fn is_plain(self) -> bool {
        self != DType::String
    }

    /// ONNX's name for the type, as in `tensor(float)`.
    pub fn onnx_name(self) -> &'static str {
        use DType::*;
        match self {
            F32 => "float",
            U8 => "uint8",
            I8 => "int8",
            U16 => "uint16",
            I16 => "int16",
            I32 => "int32",
            I64 => "int64",
            String => "string",
            Bool => "bool",
            F16 => "float16",
            F64 => "double",
            U32 => "uint32",
            U64 => "uint64",
            Complex64 => "complex64",
            Complex128 => "complex128",
            BF16 => "bfloat16",
            F8E4M3FN => "float8e4m3fn",
            F8E4M3FNUZ => "float8e4m3fnuz",
            F8E5M2 => "float8e5m2",
            F8E5M2FNUZ => "float8e5m2fnuz",
            U4 => "uint4",
            I4 => "int4",
            F4E2M1 => "float4e2m1",
            F8E8M0 => "float8e8m0",
            U2 => "uint2",
            I2 => "int2",
        }
    }

    /// NumPy's name for the type (`float32`, `int64`, `bool`, ...), used in manifests.
    pub fn numpy_name(self) -> &'static str {
        use DType::*;
        match self {
            F32 => "float32",
            F64 => "float64",
            F16 => "float16",
            Bool => "bool",
            String => "str",
            other => other.onnx_name(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.numpy_name())
    }
}

/// A Rust type whose values a tensor of [`Element::DTYPE`] holds, viewable in place.
///
/// Conversions through `f64` and `i128` give every numeric type one path for casts and
/// generic kernels.
pub trait Element:
    bytemuck::Pod + Copy + Default + PartialOrd + fmt::Debug + Send + Sync + 'static
{
    /// The tag of tensors holding this type.
    const DTYPE: DType;
    /// Whether the type is floating point.
    const IS_FLOAT: bool;
    /// The value as f64 (may round for 64-bit integers).
    fn to_f64(self) -> f64;
    /// The nearest value to `v` (floats round, integers truncate and saturate like `as`).
    fn from_f64(v: f64) -> Self;
    /// The value as i128 (floats truncate toward zero).
    fn to_i128(self) -> i128;
    /// `v` wrapped into the type's range (two's complement, as ONNX Cast does for integers).
    fn from_i128(v: i128) -> Self;
}

macro_rules! int_element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            const IS_FLOAT: bool = false;
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)]
            fn from_f64(v: f64) -> Self { v as $t }
            #[inline(always)]
            fn to_i128(self) -> i128 { self as i128 }
            #[inline(always)]
            fn from_i128(v: i128) -> Self { v as $t }
        }
    )*};
}
int_element!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64, i64 => I64);

macro_rules! float_element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            const IS_FLOAT: bool = true;
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)]
            fn from_f64(v: f64) -> Self { v as $t }
            #[inline(always)]
            fn to_i128(self) -> i128 { self as i128 }
            #[inline(always)]
            fn from_i128(v: i128) -> Self { v as $t }
        }
    )*};
}
float_element!(f32 => F32, f64 => F64);

macro_rules! half_element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            const IS_FLOAT: bool = true;
            #[inline(always)]
            fn to_f64(self) -> f64 { <$t>::to_f64(self) }
            #[inline(always)]
            fn from_f64(v: f64) -> Self { <$t>::from_f64(v) }
            #[inline(always)]
            fn to_i128(self) -> i128 { <$t>::to_f64(self) as i128 }
            #[inline(always)]
            fn from_i128(v: i128) -> Self { <$t>::from_f64(v as f64) }
        }
    )*};
}
half_element!(f16 => F16, bf16 => BF16);

/// Runs `$body` with `$T` bound to the Rust type of a numeric `$dtype`
/// (u8..u64, i8..i64, f16, bf16, f32, f64); evaluates `$fallback` for any other dtype.
///
/// ```
/// use strata_tensor::{dispatch_numeric, DType, Element};
/// let size = dispatch_numeric!(DType::I16, T => std::mem::size_of::<T>(), 0);
/// assert_eq!(size, 2);
/// ```
#[macro_export]
macro_rules! dispatch_numeric {
    ($dtype:expr, $T:ident => $body:expr, $fallback:expr) => {{
        match $dtype {
            $crate::DType::F32 => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::DType::F16 => {
                #[allow(dead_code)]
                type $T = $crate::half::f16;
                $body
            }
            $crate::DType::BF16 => {
                #[allow(dead_code)]
                type $T = $crate::half::bf16;
                $body
            }
            $crate::DType::I8 => {
                #[allow(dead_code)]
                type $T = i8;
                $body
            }
            $crate::DType::I16 => {
                #[allow(dead_code)]
                type $T = i16;
                $body
            }
            $crate::DType::I32 => {
                #[allow(dead_code)]
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            $crate::DType::U8 => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            $crate::DType::U16 => {
                #[allow(dead_code)]
                type $T = u16;
                $body
            }
            $crate::DType::U32 => {
                #[allow(dead_code)]
                type $T = u32;
                $body
            }
            $crate::DType::U64 => {
                #[allow(dead_code)]
                type $T = u64;
                $body
            }
            #[allow(unreachable_patterns)]
            _ => $fallback,
        }
    }};
}

/// Like [`dispatch_numeric!`] but for the float types only (f16, bf16, f32, f64).
#[macro_export]
macro_rules! dispatch_float {
    ($dtype:expr, $T:ident => $body:expr, $fallback:expr) => {{
        match $dtype {
            $crate::DType::F32 => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::DType::F16 => {
                #[allow(dead_code)]
                type $T = $crate::half::f16;
                $body
            }
            $crate::DType::BF16 => {
                #[allow(dead_code)]
                type $T = $crate::half::bf16;
                $body
            }
            #[allow(unreachable_patterns)]
            _ => $fallback,
        }
    }};
}

/// Runs `$body` with `$T` bound to the storage type of any plain (non-string) dtype: the
/// numeric types as in [`dispatch_numeric!`], `u8` for bool and the one-byte exotic types,
/// `u64` for complex64 and `[u64; 2]` for complex128. For moving data without interpreting it.
#[macro_export]
macro_rules! dispatch_storage {
    ($dtype:expr, $T:ident => $body:expr, $fallback:expr) => {{
        match $dtype.size_of() {
            1 => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            2 => {
                #[allow(dead_code)]
                type $T = u16;
                $body
            }
            4 => {
                #[allow(dead_code)]
                type $T = u32;
                $body
            }
            8 => {
                #[allow(dead_code)]
                type $T = u64;
                $body
            }
            16 => {
                #[allow(dead_code)]
                type $T = [u64; 2];
                $body
            }
            _ => $fallback,
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_onnx_code(d.onnx_code()), Some(d));
        }
        assert_eq!(DType::from_onnx_code(0), None);
        assert_eq!(DType::from_onnx_code(99), None);
    }

    #[test]
    fn dispatch_binds_the_right_type() {
        for d in [DType::F32, DType::I64, DType::F16, DType::U8] {
            let size = dispatch_numeric!(d, T => std::mem::size_of::<T>(), 0);
            assert_eq!(size, d.size_of());
            let tag = dispatch_numeric!(d, T => T::DTYPE, DType::String);
            assert_eq!(tag, d);
        }
        assert_eq!(dispatch_numeric!(DType::String, T => 1, 0), 0);
    }

    #[test]
    fn integer_conversion_wraps_like_onnx_cast() {
        assert_eq!(<u8 as Element>::from_i128(300), 44);
        assert_eq!(<i8 as Element>::from_i128(-129), 127);
        assert_eq!(<f32 as Element>::from_f64(0.5), 0.5);
    }
}
