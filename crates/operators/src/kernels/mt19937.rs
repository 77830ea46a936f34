//! The MT19937 Mersenne Twister as NumPy's legacy `RandomState` seeds and uses it, so ops
//! with a `seed` attribute (Dropout in training mode) reproduce the ONNX reference
//! implementation's draws exactly.

const N: usize = 624;
const M: usize = 397;

/// A Mersenne Twister generator.
#[derive(Debug, Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

impl Mt19937 {
    /// The generator `numpy.random.RandomState(seed)` starts from (seeds up to 2^32 - 1).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: N }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % N] & 0x7FFF_FFFF);
            let mag = if y & 1 == 1 { 0x9908_B0DF } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index % N];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^ (y >> 18)
    }

    /// A uniform double in [0, 1) with 53 random bits, as `RandomState.random_sample`.
    pub fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from numpy: RandomState(0).randint / random_sample.
    #[test]
    fn matches_numpy_random_state() {
        let mut g = Mt19937::new(5489);
        // The reference MT19937 output for the default seed 5489.
        assert_eq!(g.next_u32(), 3_499_211_612);
        let mut g = Mt19937::new(0);
        assert!((g.next_f64() - 0.548_813_503_927_324_8).abs() < 1e-15);
        assert!((g.next_f64() - 0.715_189_366_372_419_5).abs() < 1e-15);
    }
}
