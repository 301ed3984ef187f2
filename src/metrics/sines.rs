//! The synthetic Sines data set of TimeGAN (Yoon et al. 2019, `sine_data_generation`) as
//! Diffusion-TS generates it (Utils/Data_utils/sine_dataset.py `SineDataset.sine_data_generation`):
//! `np.random.seed(seed)`, then per window and per feature freq ~ U(0, 0.1), phase ~ U(0, 0.1)
//! (in that order), x_t = sin(freq·t + phase) for t = 0 .. window−1, and (x + 1)·0.5 into [0, 1].
//! numpy's legacy generator is reproduced exactly ([`RandomState`]), so the windows equal
//! Diffusion-TS's `sine_ground_truth_24_train.npy` up to the last bit of `sin`.
//!
//! Diffusion-TS (Config/sines.yaml) trains on `num = 10000, dim = 5, window = 24, seed = 123` and
//! feeds the model 2x − 1 (`neg_one_to_one`); its samples are mapped back with (x + 1)/2 before
//! Context-FID, which therefore compares windows in this [0, 1] scale. (The Sines data are not
//! min-max scaled: the fixed affine map above is its scaling.)
use crate::metrics::numpy_random::RandomState;
use crate::{BenchError, Result};
use ndarray::Array3;

/// Diffusion-TS's Sines training set: 10,000 windows of 24 steps × 5 features, seed 123.
pub const DIFFUSION_TS_SINES: SinesConfig = SinesConfig { num: 10_000, window: 24, dim: 5, seed: 123 };

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinesConfig {
    pub num: usize,
    pub window: usize,
    pub dim: usize,
    pub seed: u32,
}

/// The windows, `[num, window, dim]`, each value in [0, 1].
pub fn sines(cfg: &SinesConfig) -> Result<Array3<f64>> {
    if cfg.num == 0 || cfg.window == 0 || cfg.dim == 0 {
        return Err(BenchError::user(format!(
            "sines: num, window and dim must be positive; got {}, {}, {}",
            cfg.num, cfg.window, cfg.dim
        )));
    }
    let mut rng = RandomState::new(cfg.seed);
    let mut out = Array3::<f64>::zeros((cfg.num, cfg.window, cfg.dim));
    for i in 0..cfg.num {
        for k in 0..cfg.dim {
            let freq = rng.uniform(0.0, 0.1);
            let phase = rng.uniform(0.0, 0.1);
            for t in 0..cfg.window {
                out[[i, t, k]] = ((freq * t as f64 + phase).sin() + 1.0) * 0.5;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_slow_rising_sines_in_the_unit_interval() {
        let x = sines(&SinesConfig { num: 50, window: 24, dim: 5, seed: 123 }).unwrap();
        // freq, phase < 0.1 and t ≤ 23: the argument stays in [0, 2.4) where sin > −0.7, and at
        // t = 0 the value is (sin(phase) + 1)/2 ∈ [0.5, 0.55).
        assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(x.slice(ndarray::s![.., 0, ..]).iter().all(|&v| (0.5..0.5 + 0.5 * 0.1f64.sin()).contains(&v)));
        assert_eq!(x, sines(&SinesConfig { num: 50, window: 24, dim: 5, seed: 123 }).unwrap());
    }
}
