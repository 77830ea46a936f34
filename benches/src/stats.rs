//! Summary statistics of timing samples.

/// The median of `samples` (any order); NaN when empty.
pub fn median(samples: &[f64]) -> f64 {
    let sorted = sorted(samples);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The value below which a fraction `q` (0..=1) of `samples` fall (nearest rank); NaN when
/// empty.
pub fn percentile(samples: &[f64], q: f64) -> f64 {
    let sorted = sorted(samples);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The smallest sample; NaN when empty.
pub fn min(samples: &[f64]) -> f64 {
    samples.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let s = [10.0, 2.0, 3.0, 4.0, 1.0];
        assert_eq!(median(&s), 3.0);
        assert_eq!(median(&[2.0, 1.0]), 1.5);
        assert!(median(&[]).is_nan());
        assert_eq!(percentile(&s, 0.9), 10.0);
        assert_eq!(percentile(&s, 0.2), 1.0);
        assert_eq!(min(&s), 1.0);
    }
}
