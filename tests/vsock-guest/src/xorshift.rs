//! Marsaglia's xorshift64 (shifts 13, 7, 17), the random source of the unit
//! tests' randomized checks: no dependency, and the same sequence from the
//! same seed on every run, so a failure reproduces.

pub struct XorShift64(u64);

impl XorShift64 {
    /// `seed` must not be 0 (xorshift stays at 0 forever).
    pub fn new(seed: u64) -> XorShift64 {
        assert_ne!(seed, 0);
        XorShift64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
