//! A small, fast, seedable PRNG (SplitMix64) for the generators: deterministic for a seed and
//! cheap enough to call several times per generated row.

#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator's state (a checkpointed position); `new(state)` continues from it.
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift (no division on the hot path).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Appends `len` random lowercase letters (with the odd space) to `out`.
    pub fn fill_letters(&mut self, out: &mut Vec<u8>, len: usize) {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz eaiot";
        let mut left = len;
        while left > 0 {
            let mut bits = self.next_u64();
            for _ in 0..left.min(12) {
                out.push(ALPHABET[(bits & 31) as usize]);
                bits >>= 5;
            }
            left -= left.min(12);
        }
    }

    /// Appends `len` random hex digits (Flink datagen's random strings).
    pub fn fill_hex(&mut self, out: &mut Vec<u8>, len: usize) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut left = len;
        while left > 0 {
            let mut bits = self.next_u64();
            for _ in 0..left.min(16) {
                out.push(HEX[(bits & 15) as usize]);
                bits >>= 4;
            }
            left -= left.min(16);
        }
    }
}
