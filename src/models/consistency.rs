//! Consistency-model parameterisation (Song et al. 2023, "Consistency Models", Eq. 7 and App. C;
//! openai/consistency_models `KarrasDenoiser`): f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ))
//! with the boundary condition f(x, σ_min) = x built into c_skip and c_out.

use super::{Condition, Denoiser};
use crate::{BenchError, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// σ_data of the released consistency models (and of EDM).
pub const SIGMA_DATA: f64 = 0.5;
/// The smallest noise level ε, where f is the identity.
pub const SIGMA_MIN: f64 = 0.002;
/// The largest noise level of the released models.
pub const SIGMA_MAX: f64 = 80.0;

/// (c_skip, c_out, c_in) at `sigma`: `get_scalings_for_boundary_condition`,
/// c_skip = σ_d² / ((σ−σ_min)² + σ_d²), c_out = (σ−σ_min)·σ_d / √(σ² + σ_d²), c_in = 1/√(σ² + σ_d²).
pub fn boundary_scalings(sigma: f64, sigma_data: f64, sigma_min: f64) -> (f64, f64, f64) {
    let sd2 = sigma_data * sigma_data;
    let c_skip = sd2 / ((sigma - sigma_min).powi(2) + sd2);
    let c_out = (sigma - sigma_min) * sigma_data / (sigma * sigma + sd2).sqrt();
    let c_in = 1.0 / (sigma * sigma + sd2).sqrt();
    (c_skip, c_out, c_in)
}

/// The network's noise input: `1000 · ¼ · ln(σ + 1e-44)` (`KarrasDenoiser.denoise`'s
/// `rescaled_t`, EDM's ¼ ln σ scaled to the 0–1000 range of the ADM time embedding).
pub fn noise_input(sigma: f64) -> f64 {
    1000.0 * 0.25 * (sigma + 1e-44).ln()
}

/// f(x, σ) from the network output F: c_skip·x + c_out·F.
pub fn denoised(x: &tch::Tensor, model_output: &tch::Tensor, sigma: f64, sigma_data: f64, sigma_min: f64) -> tch::Tensor {
    let (c_skip, c_out, _) = boundary_scalings(sigma, sigma_data, sigma_min);
    x * c_skip + model_output * c_out
}

/// The constants a diffusers `CMStochasticIterativeScheduler` config gives the model (the
/// sampler's grid options live with the `consistency` sampler).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundaryConfig {
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub sigma_data: f64,
}

impl BoundaryConfig {
    /// Reads `scheduler_config.json` of a `ConsistencyModelPipeline` folder; absent keys take
    /// diffusers' defaults (those of the released models).
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path).map_err(|e| BenchError::file(path, format!("cannot read: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
        match v.get("_class_name").and_then(|c| c.as_str()) {
            Some("CMStochasticIterativeScheduler") | None => {}
            Some(other) => {
                return Err(BenchError::file(path, format!("_class_name {other:?}: a consistency pipeline needs a CMStochasticIterativeScheduler config")))
            }
        }
        let num = |k: &str, d: f64| match v.get(k) {
            None | Some(serde_json::Value::Null) => Ok(d),
            Some(x) => x.as_f64().filter(|x| *x > 0.0).ok_or_else(|| BenchError::file(path, format!("{k} must be a number > 0"))),
        };
        let c = BoundaryConfig { sigma_min: num("sigma_min", SIGMA_MIN)?, sigma_max: num("sigma_max", SIGMA_MAX)?, sigma_data: num("sigma_data", SIGMA_DATA)? };
        if c.sigma_min >= c.sigma_max {
            return Err(BenchError::file(path, format!("sigma_min {} must be below sigma_max {}", c.sigma_min, c.sigma_max)));
        }
        Ok(c)
    }
}

/// A consistency model as a σ-space denoiser: a diffusers `UNet2DModel` F inside the boundary
/// parameterisation, f(x, σ) = c_skip·x + c_out·F(c_in·x; 250·ln σ) (diffusers
/// `ConsistencyModelPipeline` with `CMStochasticIterativeScheduler`: `scale_model_input`,
/// `sigma_to_t`, `get_scalings_for_boundary_condition`).
pub struct ConsistencyModel {
    pub network: Box<dyn Denoiser>,
    pub config: BoundaryConfig,
}

impl Denoiser for ConsistencyModel {
    fn forward(&self, x: &Tensor, sigma: &Tensor, cond: Option<&Condition>) -> Result<Tensor> {
        let c = self.config;
        let sigma: Vec<f64> = Vec::try_from(sigma.to_kind(Kind::Double).to_device(tch::Device::Cpu).flatten(0, -1))
            .map_err(|e: tch::TchError| BenchError::Internal(format!("consistency σ: {e}")))?;
        let scalings: Vec<(f64, f64, f64)> = sigma.iter().map(|&s| boundary_scalings(s, c.sigma_data, c.sigma_min)).collect();
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, x.dim().saturating_sub(1)));
        let column = |f: fn(&(f64, f64, f64)) -> f64| {
            let v: Vec<f64> = scalings.iter().map(f).collect();
            Tensor::from_slice(&v).to_device(x.device()).view(shape.as_slice())
        };
        let (c_skip, c_out, c_in) = (column(|s| s.0), column(|s| s.1), column(|s| s.2));
        let labels: Vec<f64> = sigma.iter().map(|&s| noise_input(s)).collect();
        let labels = Tensor::from_slice(&labels).to_device(x.device());
        let xd = x.to_kind(Kind::Double);
        let f = self.network.forward(&(&xd * &c_in).to_kind(x.kind()), &labels, cond)?;
        Ok((xd * c_skip + f.to_kind(Kind::Double) * c_out).to_kind(x.kind()))
    }
    fn describe(&self) -> String {
        format!("consistency:{}", self.network.describe())
    }
    fn sigma_range(&self) -> (f64, f64) {
        (self.config.sigma_min, self.config.sigma_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_condition_is_the_identity_at_sigma_min() {
        let (c_skip, c_out, c_in) = boundary_scalings(SIGMA_MIN, SIGMA_DATA, SIGMA_MIN);
        assert_eq!((c_skip, c_out), (1.0, 0.0));
        assert_eq!(c_in, 1.0 / (SIGMA_MIN * SIGMA_MIN + 0.25).sqrt());
        let x = tch::Tensor::from_slice(&[0.3f64, -1.2]);
        let f = tch::Tensor::from_slice(&[5.0f64, 7.0]);
        assert_eq!(Vec::<f64>::try_from(denoised(&x, &f, SIGMA_MIN, SIGMA_DATA, SIGMA_MIN)).unwrap(), vec![0.3, -1.2]);
    }

    #[test]
    fn scalings_match_closed_forms_and_approach_edm_away_from_sigma_min() {
        // Hand-evaluated at σ = 1: c_skip = 0.25 / (0.998² + 0.25), c_out = 0.998·0.5/√1.25.
        let (c_skip, c_out, c_in) = boundary_scalings(1.0, 0.5, 0.002);
        assert!((c_skip - 0.25 / (0.998f64.powi(2) + 0.25)).abs() < 1e-15);
        assert!((c_out - 0.499 / 1.25f64.sqrt()).abs() < 1e-15);
        assert!((c_in - 1.0 / 1.25f64.sqrt()).abs() < 1e-15);
        // With σ_min = 0 they are EDM's preconditioning (Karras et al. Table 1).
        for s in [0.01, 0.5, 3.0, 80.0] {
            let (a, b, c) = boundary_scalings(s, 0.5, 0.0);
            assert!((a - 0.25 / (s * s + 0.25)).abs() < 1e-15);
            assert!((b - s * 0.5 / (s * s + 0.25).sqrt()).abs() < 1e-15);
            assert!((c - 1.0 / (s * s + 0.25).sqrt()).abs() < 1e-15);
        }
        // c_skip² σ_d²-weighted variance identity of EDM Eq. 8 fails only by the σ_min shift:
        // at large σ c_out → σ_d.
        assert!((boundary_scalings(1e6, 0.5, 0.002).1 - 0.5).abs() < 1e-6);
    }

    #[test]
    fn noise_input_is_250_ln_sigma() {
        assert_eq!(noise_input(1.0), 0.0);
        assert!((noise_input(80.0) - 250.0 * 80f64.ln()).abs() < 1e-12);
        assert!((noise_input(0.002) - 250.0 * 0.002f64.ln()).abs() < 1e-12);
        // The 1e-44 guard keeps σ = 0 finite.
        assert!((noise_input(0.0) - 250.0 * 1e-44f64.ln()).abs() < 1e-9);
    }
}
