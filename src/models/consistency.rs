//! Consistency-model parameterisation (Song et al. 2023, "Consistency Models", Eq. 7 and App. C;
//! openai/consistency_models `KarrasDenoiser`): f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ))
//! with the boundary condition f(x, σ_min) = x built into c_skip and c_out.

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
