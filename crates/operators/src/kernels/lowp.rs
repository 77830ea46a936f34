//! Codecs for the element types without a native Rust type, each stored as one raw byte per
//! element: the float8 family, float4e2m1, float8e8m0 and the 4- and 2-bit integers (signed
//! ones sign-extended to the byte), and the ONNX `Cast` between them and everything else.
//!
//! Minifloats round to nearest even, as the ONNX reference (ml_dtypes) does; `saturate`
//! decides whether out-of-range values clamp to the largest finite value or become
//! infinity/NaN (float4e2m1 has neither and always clamps). float8e8m0 follows
//! `onnx.numpy_helper.to_float8e8m0` with its `round_mode`. Integers convert like ONNX
//! integer casts: floats truncate toward zero, then the value wraps to the type's width.

use crate::OpResult;
use strata_tensor::{DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    /// e4m3fn: no infinities, NaN is S.1111.111.
    Fn,
    /// e4m3fnuz / e5m2fnuz: no infinities, no negative zero, NaN is 0x80.
    Fnuz,
    /// e5m2: IEEE-like, with infinities.
    Ieee,
    /// e2m1: no infinities and no NaN.
    Finite,
}

/// A small binary float format: `bits` wide, sign in the top bit.
#[derive(Debug, Clone, Copy)]
struct Minifloat {
    bits: u32,
    mant_bits: u32,
    exp_bits: u32,
    bias: i32,
    special: Special,
}

/// How float8e8m0 rounds values that are not powers of two (Cast `round_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoundMode {
    /// Toward +infinity in magnitude (the default).
    #[default]
    Up,
    /// Truncate to the power of two below.
    Down,
    /// To nearest, ties to even.
    Nearest,
}

impl RoundMode {
    /// Parses the Cast `round_mode` attribute.
    pub fn parse(s: &str) -> Option<RoundMode> {
        match s {
            "up" => Some(RoundMode::Up),
            "down" => Some(RoundMode::Down),
            "nearest" => Some(RoundMode::Nearest),
            _ => None,
        }
    }
}

/// Options for converting into a low-precision float type.
#[derive(Debug, Clone, Copy)]
pub struct Encode {
    /// Clamp out-of-range values to the largest finite value.
    pub saturate: bool,
    /// Rounding of float8e8m0.
    pub round: RoundMode,
}

/// One of the byte-stored types without a native Rust type.
#[derive(Debug, Clone, Copy)]
enum LowP {
    Float(Minifloat),
    E8M0,
    Int { bits: u32, signed: bool },
}

fn low_precision(dtype: DType) -> Option<LowP> {
    let mini = |bits, mant_bits, exp_bits, bias, special| {
        Some(LowP::Float(Minifloat {
            bits,
            mant_bits,
            exp_bits,
            bias,
            special,
        }))
    };
    let int = |bits, signed| Some(LowP::Int { bits, signed });
    match dtype {
        DType::F8E4M3FN => mini(8, 3, 4, 7, Special::Fn),
        DType::F8E4M3FNUZ => mini(8, 3, 4, 8, Special::Fnuz),
        DType::F8E5M2 => mini(8, 2, 5, 15, Special::Ieee),
        DType::F8E5M2FNUZ => mini(8, 2, 5, 16, Special::Fnuz),
        DType::F4E2M1 => mini(4, 1, 2, 1, Special::Finite),
        DType::F8E8M0 => Some(LowP::E8M0),
        DType::U4 => int(4, false),
        DType::I4 => int(4, true),
        DType::U2 => int(2, false),
        DType::I2 => int(2, true),
        _ => None,
    }
}

/// Whether `dtype` is a byte-stored low-precision float (float8, float4e2m1, float8e8m0).
pub fn is_low_precision_float(dtype: DType) -> bool {
    matches!(low_precision(dtype), Some(LowP::Float(_) | LowP::E8M0))
}

impl Minifloat {
    fn sign_bit(self) -> u8 {
        1 << (self.bits - 1)
    }

    fn max_code(self) -> u8 {
        match self.special {
            Special::Fn => 0x7E,
            Special::Fnuz => 0x7F,
            Special::Ieee => 0x7B,
            Special::Finite => self.sign_bit() - 1,
        }
    }

    fn nan(self, sign: u8) -> u8 {
        match self.special {
            Special::Fnuz => 0x80,
            Special::Ieee => sign | 0x7E,
            Special::Fn => sign | 0x7F,
            // ml_dtypes turns NaN into a zero with the sign bit flipped.
            Special::Finite => sign ^ self.sign_bit(),
        }
    }

    fn overflow(self, sign: u8) -> u8 {
        match self.special {
            Special::Ieee => sign | 0x7C,
            Special::Finite => sign | self.max_code(),
            _ => self.nan(sign),
        }
    }

    fn decode(self, b: u8) -> f32 {
        let sign_bit = self.sign_bit();
        let low = b & (sign_bit - 1);
        match self.special {
            Special::Fnuz if b == 0x80 => return f32::NAN,
            Special::Fn if low == 0x7F => return f32::NAN,
            Special::Ieee if low > 0x7C => return f32::NAN,
            Special::Ieee if low == 0x7C => {
                return if b & 0x80 != 0 {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                }
            }
            _ => {}
        }
        let m = self.mant_bits;
        let e = ((low >> m) as i32) & ((1 << self.exp_bits) - 1);
        let mant = (low & ((1 << m) - 1)) as f32;
        let scale = 1.0 / (1u32 << m) as f32;
        let mag = if e == 0 {
            mant * scale * 2f32.powi(1 - self.bias)
        } else {
            (1.0 + mant * scale) * 2f32.powi(e - self.bias)
        };
        if b & sign_bit != 0 {
            -mag
        } else {
            mag
        }
    }

    /// The code nearest to magnitude `a` (ties to the even code), `a` at most the maximum.
    fn nearest_code(self, a: f64) -> u8 {
        let max_code = self.max_code();
        // Largest code whose value is <= a (values grow with codes).
        let (mut lo, mut hi) = (0u8, max_code);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.decode(mid) as f64 <= a {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let v_lo = self.decode(lo) as f64;
        if v_lo == a || lo == max_code {
            return lo;
        }
        let v_hi = self.decode(lo + 1) as f64;
        let (d_lo, d_hi) = (a - v_lo, v_hi - a);
        if d_lo < d_hi || (d_lo == d_hi && lo.is_multiple_of(2)) {
            lo
        } else {
            lo + 1
        }
    }

    fn encode(self, x: f32, saturate: bool) -> u8 {
        let sign = if x.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        if x.is_nan() {
            return self.nan(sign);
        }
        let max_code = self.max_code();
        if x.is_infinite() {
            return if saturate {
                sign | max_code
            } else {
                self.overflow(sign)
            };
        }
        let a = x.abs() as f64;
        let max_val = self.decode(max_code) as f64;
        let code = if a <= max_val || saturate {
            self.nearest_code(a.min(max_val))
        } else {
            // Beyond the largest value: round down to it if within half a step (ties even).
            let half = (max_val - self.decode(max_code - 1) as f64) / 2.0;
            if a < max_val + half || (a == max_val + half && max_code.is_multiple_of(2)) {
                max_code
            } else {
                return self.overflow(sign);
            }
        };
        if code == 0 && self.special == Special::Fnuz {
            0
        } else {
            sign | code
        }
    }
}

fn e8m0_decode(b: u8) -> f32 {
    if b == 0xFF {
        f32::NAN
    } else {
        2f64.powi(b as i32 - 127) as f32
    }
}

/// float8e8m0 of `x` (sign ignored), as `onnx.numpy_helper.to_float8e8m0`.
fn e8m0_encode(x: f32, opts: Encode) -> u8 {
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xFF) as u16;
    if exponent == 0xFF {
        return 0xFF;
    }
    let round_up = match opts.round {
        RoundMode::Down => false,
        RoundMode::Up => bits & 0x7F_FFFF != 0,
        RoundMode::Nearest => {
            let g = bits & 0x40_0000 != 0;
            let r = bits & 0x20_0000 != 0;
            let s = bits & 0x1F_FFFF != 0;
            g && (r || s || exponent > 0)
        }
    };
    let bump = round_up && !(opts.saturate && exponent == 0xFE);
    (exponent + u16::from(bump)) as u8
}

impl LowP {
    /// The value of code `b` (integers sign-extended from their width).
    fn decode(self, b: u8) -> f64 {
        match self {
            LowP::Float(f) => f.decode(b) as f64,
            LowP::E8M0 => e8m0_decode(b) as f64,
            LowP::Int { bits, signed } => {
                let shift = 8 - bits;
                if signed {
                    (((b << shift) as i8) >> shift) as f64
                } else {
                    ((b << shift) >> shift) as f64
                }
            }
        }
    }

    /// Integer `v` wrapped to an integer type's width, as its stored byte.
    fn wrap(self, v: i64) -> u8 {
        let LowP::Int { bits, signed } = self else {
            return 0;
        };
        let shift = 64 - bits;
        if signed {
            ((v << shift) >> shift) as u8
        } else {
            ((v << shift) as u64 >> shift) as u8
        }
    }

    fn encode_float(self, x: f32, opts: Encode) -> u8 {
        match self {
            LowP::Float(f) => f.encode(x, opts.saturate),
            LowP::E8M0 => e8m0_encode(x, opts),
            LowP::Int { .. } => self.wrap(x as i64),
        }
    }
}

/// The value of float8 byte `byte` of type `dtype` (None when `dtype` is not a float8 type).
pub fn f8_to_f32(byte: u8, dtype: DType) -> Option<f32> {
    match low_precision(dtype) {
        Some(LowP::Float(f)) if f.bits == 8 => Some(f.decode(byte)),
        _ => None,
    }
}

/// `x` rounded to float8 type `dtype` (nearest, ties to even). Out-of-range values and
/// infinities become the largest finite value when `saturate`, else infinity (e5m2) or NaN.
/// None when `dtype` is not a float8 type.
pub fn f32_to_f8(x: f32, dtype: DType, saturate: bool) -> Option<u8> {
    match low_precision(dtype) {
        Some(LowP::Float(f)) if f.bits == 8 => Some(f.encode(x, saturate)),
        _ => None,
    }
}

/// The value of every element of a tensor of a low-precision `dtype` (None for other types).
pub fn decode_values(t: &Tensor) -> OpResult<Option<Vec<f64>>> {
    let Some(lp) = low_precision(t.dtype()) else {
        return Ok(None);
    };
    let t = t.contiguous();
    Ok(Some(t.raw_bytes()?.iter().map(|&b| lp.decode(b)).collect()))
}

/// Stores `values` as low-precision `dtype` codes: floats round per `opts`, integer types
/// truncate and wrap (callers clamp first where they need saturation). None for other types.
pub fn encode_values(values: &[f64], dtype: DType, opts: Encode) -> Option<Vec<u8>> {
    let lp = low_precision(dtype)?;
    Some(match lp {
        LowP::Int { .. } => values.iter().map(|&v| lp.wrap(v as i64)).collect(),
        _ => values
            .iter()
            .map(|&v| lp.encode_float(v as f32, opts))
            .collect(),
    })
}

/// ONNX `Cast` where either side is a low-precision type: the source widens exactly to i64
/// (integer types) or f32 (floats), then converts to the target. `None` when neither side is
/// low-precision.
pub fn cast_low_precision(x: &Tensor, to: DType, opts: Encode) -> OpResult<Option<Tensor>> {
    let (from_lp, to_lp) = (low_precision(x.dtype()), low_precision(to));
    if from_lp.is_none() && to_lp.is_none() {
        return Ok(None);
    }
    let x = x.contiguous();
    let wide = match from_lp {
        Some(lp @ LowP::Int { .. }) => {
            let v: Vec<i64> = x
                .raw_bytes()?
                .iter()
                .map(|&b| lp.decode(b) as i64)
                .collect();
            Tensor::from_vec(v, x.shape())?
        }
        Some(lp) => {
            let v: Vec<f32> = x
                .raw_bytes()?
                .iter()
                .map(|&b| lp.decode(b) as f32)
                .collect();
            Tensor::from_vec(v, x.shape())?
        }
        None => x,
    };
    let bytes: Vec<u8> = match to_lp {
        None => return Ok(Some(wide.cast(to)?)),
        Some(lp @ LowP::Int { .. }) => {
            let v = wide.cast(DType::I64)?.to_vec::<i64>()?;
            v.iter().map(|&v| lp.wrap(v)).collect()
        }
        Some(lp) => {
            let v = wide.cast(DType::F32)?.to_vec::<f32>()?;
            v.iter().map(|&v| lp.encode_float(v, opts)).collect()
        }
    };
    Ok(Some(Tensor::from_raw_bytes(to, wide.shape(), &bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAT: Encode = Encode {
        saturate: true,
        round: RoundMode::Up,
    };

    fn cast_f32(values: &[f32], to: DType, opts: Encode) -> Vec<u8> {
        let x = Tensor::from_vec(values.to_vec(), &[values.len()]).unwrap();
        let y = cast_low_precision(&x, to, opts).unwrap().unwrap();
        y.raw_bytes().unwrap().to_vec()
    }

    fn back_to_f32(bytes: &[u8], from: DType) -> Vec<f32> {
        let x = Tensor::from_raw_bytes(from, &[bytes.len()], bytes).unwrap();
        let y = cast_low_precision(&x, DType::F32, SAT).unwrap().unwrap();
        y.to_vec::<f32>().unwrap()
    }

    #[test]
    fn cast_through_float8_saturates_or_overflows() {
        let x = [1.0f32, 0.3, 1000.0, -1e6];
        let sat = cast_f32(&x, DType::F8E4M3FN, SAT);
        assert_eq!(
            back_to_f32(&sat, DType::F8E4M3FN),
            &[1.0, 0.3125, 448.0, -448.0]
        );
        let no_sat = Encode {
            saturate: false,
            ..SAT
        };
        let wrap = cast_f32(&x, DType::F8E4M3FN, no_sat);
        assert!(back_to_f32(&wrap, DType::F8E4M3FN)[2].is_nan());
        let t = Tensor::from_vec(x.to_vec(), &[4]).unwrap();
        assert!(cast_low_precision(&t, DType::F16, SAT).unwrap().is_none());
    }

    // Expected bytes from ml_dtypes / onnx.reference.
    #[test]
    fn float8e5m2_nan_and_infinity() {
        let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e6, 0.47];
        assert_eq!(
            cast_f32(&x, DType::F8E5M2, SAT),
            [0x7E, 0x7B, 0xFB, 0x7B, 56]
        );
        let no_sat = Encode {
            saturate: false,
            ..SAT
        };
        assert_eq!(
            cast_f32(&x, DType::F8E5M2, no_sat),
            [0x7E, 0x7C, 0xFC, 0x7C, 56]
        );
    }

    #[test]
    fn float4e2m1_rounds_and_clamps() {
        let x = [
            0.48f32,
            0.25,
            1.05,
            -3.5,
            -8.0,
            f32::INFINITY,
            f32::NAN,
            -0.0,
            2.5,
        ];
        let codes = cast_f32(&x, DType::F4E2M1, SAT);
        assert_eq!(codes, [1, 0, 2, 0xE, 0xF, 7, 8, 8, 4]);
        assert_eq!(
            back_to_f32(&codes, DType::F4E2M1),
            [0.5, 0.0, 1.0, -4.0, -6.0, 6.0, -0.0, -0.0, 2.0]
        );
    }

    #[test]
    fn float8e8m0_round_modes() {
        let x = [0.0f32, 0.124, 0.25, 1.1, 1.5, f32::NAN];
        for (round, want) in [
            (RoundMode::Up, [0, 124, 125, 128, 128, 255]),
            (RoundMode::Down, [0, 123, 125, 127, 127, 255]),
            (RoundMode::Nearest, [0, 124, 125, 127, 128, 255]),
        ] {
            let enc = Encode { round, ..SAT };
            assert_eq!(cast_f32(&x, DType::F8E8M0, enc), want, "{round:?}");
        }
        assert_eq!(back_to_f32(&[127, 130], DType::F8E8M0), [1.0, 8.0]);
    }

    #[test]
    fn sub_byte_integers_truncate_and_wrap() {
        let x = [-9.0f32, -8.0, 7.9, 8.0, 15.0];
        assert_eq!(cast_f32(&x, DType::I4, SAT), [7, 0xF8, 7, 0xF8, 0xFF]);
        assert_eq!(cast_f32(&x, DType::U4, SAT), [7, 8, 7, 8, 15]);
        let x = [-3.0f32, -2.0, 2.0, 3.0];
        assert_eq!(cast_f32(&x, DType::I2, SAT), [1, 0xFE, 0xFE, 0xFF]);
        assert_eq!(cast_f32(&x, DType::U2, SAT), [1, 2, 2, 3]);
        assert_eq!(back_to_f32(&[0xFE, 1], DType::I2), [-2.0, 1.0]);
        let i4 = Tensor::from_raw_bytes(DType::I4, &[2], &[0xF8, 7]).unwrap();
        let y = cast_low_precision(&i4, DType::I8, SAT).unwrap().unwrap();
        assert_eq!(y.to_vec::<i8>().unwrap(), [-8, 7]);
    }

    #[test]
    fn float8_round_trips_every_code() {
        for dt in [
            DType::F8E4M3FN,
            DType::F8E4M3FNUZ,
            DType::F8E5M2,
            DType::F8E5M2FNUZ,
        ] {
            for b in 0..=255u8 {
                let v = f8_to_f32(b, dt).unwrap();
                let back = f32_to_f8(v, dt, false).unwrap();
                if v.is_nan() {
                    assert!(f8_to_f32(back, dt).unwrap().is_nan());
                } else {
                    assert_eq!(back, b, "{dt} {b:#x} -> {v}");
                }
            }
        }
        assert_eq!(f8_to_f32(0x7E, DType::F8E4M3FN), Some(448.0));
        assert_eq!(f8_to_f32(0x7B, DType::F8E5M2), Some(57344.0));
        assert_eq!(f8_to_f32(0x7F, DType::F8E4M3FNUZ), Some(240.0));
        assert_eq!(f32_to_f8(1.0, DType::F32, true), None);
    }
}
