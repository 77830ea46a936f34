//! The ONNX backend-test accuracy rule: an output matches the reference when every element
//! satisfies `|actual - expected| <= ATOL + RTOL * |expected|`.

/// Absolute tolerance of the ONNX backend tests.
pub const ATOL: f64 = 1e-7;
/// Relative tolerance of the ONNX backend tests.
pub const RTOL: f64 = 1e-3;

/// How one output compares with its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Largest `|actual - expected|` over all elements (NaN when a NaN was involved).
    pub max_abs_diff: f64,
    /// Elements outside the tolerance (NaN against non-NaN counts as outside).
    pub mismatches: usize,
    /// Whether the shapes agreed; when they do not, nothing else was compared.
    pub shape_ok: bool,
}

impl Check {
    /// Whether the output matches: same shape and no element outside the tolerance.
    pub fn passed(&self) -> bool {
        self.shape_ok && self.mismatches == 0
    }

    /// Merges the checks of several outputs into one (worst of each).
    pub fn merge(self, other: Check) -> Check {
        Check {
            max_abs_diff: if self.max_abs_diff.is_nan() || other.max_abs_diff.is_nan() {
                f64::NAN
            } else {
                self.max_abs_diff.max(other.max_abs_diff)
            },
            mismatches: self.mismatches + other.mismatches,
            shape_ok: self.shape_ok && other.shape_ok,
        }
    }
}

/// Compares `actual` (shape `actual_shape`) with `expected` (shape `expected_shape`),
/// elements in row-major order.
pub fn check(
    actual_shape: &[usize],
    actual: &[f64],
    expected_shape: &[usize],
    expected: &[f64],
) -> Check {
    if actual_shape != expected_shape || actual.len() != expected.len() {
        return Check {
            max_abs_diff: f64::NAN,
            mismatches: expected.len(),
            shape_ok: false,
        };
    }
    let mut max_abs_diff = 0.0f64;
    let mut mismatches = 0;
    for (&a, &e) in actual.iter().zip(expected) {
        if a.is_nan() && e.is_nan() {
            continue;
        }
        // Equal values (infinities included) differ by nothing.
        let diff = if a == e { 0.0 } else { (a - e).abs() };
        // NaN propagates through `max` only if we ask for it.
        max_abs_diff = if diff.is_nan() {
            f64::NAN
        } else {
            max_abs_diff.max(diff)
        };
        // NaN differences fail: `within` is false for them.
        let within = diff <= ATOL + RTOL * e.abs();
        if !within {
            mismatches += 1;
        }
    }
    Check {
        max_abs_diff,
        mismatches,
        shape_ok: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance() {
        let c = check(&[3], &[1.0, 2.0005, 0.0], &[3], &[1.0, 2.0, 0.0]);
        assert!(c.passed());
        assert!((c.max_abs_diff - 0.0005).abs() < 1e-12);
        let c = check(&[2], &[1.0, 2.01], &[2], &[1.0, 2.0]);
        assert_eq!(c.mismatches, 1);
        assert!(!c.passed());
        let c = check(&[1, 2], &[1.0, 2.0], &[2], &[1.0, 2.0]);
        assert!(!c.shape_ok);
        let c = check(&[1], &[f64::NAN], &[1], &[1.0]);
        assert!(!c.passed() && c.max_abs_diff.is_nan());
        assert!(check(&[1], &[f64::INFINITY], &[1], &[f64::INFINITY]).passed());
    }
}
