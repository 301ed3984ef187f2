//! Discrete noise schedules (β_t, ᾱ_t for t = 0..T-1), all arithmetic in f64.
//!
//! Conventions follow the DDPM/DDIM papers and diffusers: index t ∈ [0, T) is the model's
//! integer timestep label; ᾱ_t = Π_{s≤t} (1 − β_s).

use crate::{BenchError, Result};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Ho et al. 2020: β linear from beta_start to beta_end.
    Linear,
    /// Stable Diffusion / LDM: β = linspace(√β_start, √β_end, T)².
    ScaledLinear,
    /// Nichol & Dhariwal 2021 eq. 17, s = 0.008, β capped at 0.999.
    Cosine,
}

#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub kind: ScheduleKind,
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    pub fn new(kind: ScheduleKind, beta_start: f64, beta_end: f64, timesteps: usize) -> Result<Self> {
        if timesteps < 2 {
            return Err(BenchError::user(format!("schedule.timesteps: {timesteps} is too small (need ≥ 2)")));
        }
        if kind != ScheduleKind::Cosine && !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) {
            return Err(BenchError::user(format!(
                "schedule: need 0 < beta_start ≤ beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
            )));
        }
        let n = timesteps;
        let lin = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (n - 1) as f64;
        let betas: Vec<f64> = match kind {
            ScheduleKind::Linear => (0..n).map(|i| lin(beta_start, beta_end, i)).collect(),
            ScheduleKind::ScaledLinear => (0..n).map(|i| lin(beta_start.sqrt(), beta_end.sqrt(), i).powi(2)).collect(),
            ScheduleKind::Cosine => {
                // diffusers `betas_for_alpha_bar(alpha_transform_type="cosine")`.
                let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n)
                    .map(|i| (1.0 - f((i + 1) as f64 / n as f64) / f(i as f64 / n as f64)).min(0.999))
                    .collect()
            }
        };
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(NoiseSchedule { kind, betas, alphas_cumprod })
    }

    /// Ho et al.'s CIFAR10 schedule: linear 1e-4 → 0.02 over 1000 steps.
    pub fn ddpm_linear() -> Self {
        Self::new(ScheduleKind::Linear, 1e-4, 0.02, 1000).expect("valid constants")
    }

    pub fn len(&self) -> usize {
        self.betas.len()
    }
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
    /// ᾱ_t for an integer label.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t]
    }
    /// Karras/VE noise level σ̃_t = √((1−ᾱ_t)/ᾱ_t).
    pub fn sigma(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        ((1.0 - a) / a).sqrt()
    }
    /// Half log-SNR λ_t = log(α_t/σ_t) with α_t = √ᾱ_t, σ_t = √(1−ᾱ_t) (DPM-Solver's λ).
    pub fn lambda(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        0.5 * (a.ln() - (1.0 - a).ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_end_points() {
        let s = NoiseSchedule::ddpm_linear();
        assert_eq!(s.len(), 1000);
        assert_eq!(s.betas[0], 1e-4);
        assert!((s.betas[999] - 0.02).abs() < 1e-15);
        // ᾱ_999 of Ho et al.'s schedule, as printed by diffusers' DDPMScheduler: 4.0358e-05.
        assert!((s.alpha_bar(999) - 4.035829e-5).abs() < 1e-9, "{}", s.alpha_bar(999));
    }

    #[test]
    fn cosine_caps_beta() {
        let s = NoiseSchedule::new(ScheduleKind::Cosine, 0.0, 0.0, 1000).unwrap();
        assert_eq!(s.betas[999], 0.999);
        assert!(s.betas.iter().all(|&b| b > 0.0 && b <= 0.999));
    }

    #[test]
    fn bad_betas_are_user_errors() {
        let e = NoiseSchedule::new(ScheduleKind::Linear, 0.02, 1e-4, 1000).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
