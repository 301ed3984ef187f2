//! numpy's legacy `np.random.RandomState` (MT19937), for the seeded draws that reference metric
//! code makes through it: torch-fidelity's IS shuffle (`permutation`) and KID subsets
//! (`choice(n, m, replace=False)`), TimeGAN's / Diffusion-TS's Sines data (`np.random.seed` +
//! `uniform`). Same seed, same numbers, bit for bit.
//!
//! Sources: numpy/random/src/mt19937/mt19937.c (`mt19937_seed`, `mt19937_gen`, tempering),
//! numpy/random/src/legacy/legacy-distributions.c and distributions.c (`random_interval`,
//! `legacy_double` = `mt19937_next_double`), numpy/random/mtrand.pyx (`shuffle`'s Fisher–Yates
//! from the end, `choice` without replacement = `permutation(n)[:m]`).
use crate::{BenchError, Result};

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// numpy's `np.random.RandomState(seed)` for an integer seed in [0, 2³²).
#[derive(Clone)]
pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl RandomState {
    /// `RandomState(seed)` / `np.random.seed(seed)`: numpy seeds an integer with `mt19937_seed`
    /// (Knuth's linear initialisation), not with `init_by_array`.
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        let mut s = seed;
        for (pos, k) in key.iter_mut().enumerate() {
            *k = s;
            s = 1_812_433_253u32.wrapping_mul(s ^ (s >> 30)).wrapping_add(pos as u32 + 1);
        }
        RandomState { key, pos: N }
    }

    fn generate(&mut self) {
        let k = &mut self.key;
        for i in 0..N {
            let y = (k[i] & UPPER_MASK) | (k[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            k[i] = k[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// One tempered 32-bit MT19937 output.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random_sample()`: 53-bit double in [0, 1) from two draws, (a·2²⁶ + b) / 2⁵³.
    pub fn random_sample(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// `uniform(low, high)` = low + (high − low)·random_sample().
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.random_sample()
    }

    /// `random_interval(max)`: uniform in [0, max] by masked rejection.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if max <= u32::MAX as u64 {
            loop {
                let v = (self.next_u32() as u64) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = (((self.next_u32() as u64) << 32) | self.next_u32() as u64) & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `permutation(n)`: `arange(n)` shuffled by Fisher–Yates from the last element down.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            v.swap(i, j);
        }
        v
    }

    /// `choice(n, size, replace=False)` = `permutation(n)[:size]`, in that order.
    pub fn choice_without_replacement(&mut self, n: usize, size: usize) -> Result<Vec<usize>> {
        if size > n {
            return Err(BenchError::user(format!(
                "cannot take {size} distinct samples out of {n}"
            )));
        }
        let mut p = self.permutation(n);
        p.truncate(size);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_outputs() {
        // MT19937 with init_genrand(5489) (the reference implementation's default seed):
        // first output 3499211612, 10000th output 4123659995 (C++ std::mt19937 requirement).
        let mut r = RandomState::new(5489);
        assert_eq!(r.next_u32(), 3_499_211_612);
        for _ in 1..9999 {
            r.next_u32();
        }
        assert_eq!(r.next_u32(), 4_123_659_995);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let p = RandomState::new(2020).permutation(1000);
        let mut s = p.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_ne!(p, s);
    }
}
