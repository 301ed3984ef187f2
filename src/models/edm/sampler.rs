//! EDM's deterministic/stochastic sampler (Karras et al. 2022, Algorithm 2; NVlabs/edm
//! `generate.py::edm_sampler`) as a pure trajectory function, for parity checks against EDM and
//! for the bench's `edm_heun` / `edm_euler` samplers to build on.
//!
//! σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ for i < N, σ_N = 0 (Eq. 5), each
//! snapped by the network's `round_sigma`. Step i: γ_i = min(S_churn/N, √2−1) if S_min ≤ σ_i ≤
//! S_max else 0; σ̂ = round(σ_i + γ_i σ_i); x̂ = x + √(σ̂² − σ_i²)·S_noise·ε; an Euler step to
//! σ_{i+1} and, except on the last step, Heun's correction: 2N−1 evaluations (N for Euler).
//! The state is fp64 as in EDM; the noise callback is called on every step (EDM draws
//! `randn_like` even when γ = 0), so an injected stream lines up with EDM's.
use tch::{Kind, Tensor};

use crate::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct EdmSamplerOptions {
    pub num_steps: usize,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    pub s_churn: f64,
    pub s_min: f64,
    pub s_max: f64,
    pub s_noise: f64,
    /// Heun's 2nd-order correction (EDM's sampler); false: Euler steps only.
    pub second_order: bool,
}

impl Default for EdmSamplerOptions {
    /// `edm_sampler`'s defaults: 18 steps, σ ∈ [0.002, 80], ρ = 7, deterministic.
    fn default() -> Self {
        EdmSamplerOptions {
            num_steps: 18,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            s_churn: 0.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
            second_order: true,
        }
    }
}

/// σ_0 … σ_{N−1} of Eq. 5 (fp64, before rounding and without the final 0), computed with the
/// same tensor operations as EDM so the values agree bit for bit.
pub fn edm_sigmas(num_steps: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Tensor {
    let n = num_steps as i64;
    let steps = Tensor::arange(n, (Kind::Double, tch::Device::Cpu));
    let (hi, lo) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    // A single step has no spacing; EDM's division by N−1 = 0 would give NaN·0, here σ_max.
    let ramp = if n > 1 { steps / (n - 1) } else { steps };
    (ramp * (lo - hi) + hi).pow_tensor_scalar(rho)
}

/// Runs the sampler from `latents` (the unit-variance noise; x_0 = latents·σ_0).
/// `denoise(x, σ)` is D(x; σ) for an fp64 batch x and a scalar σ; `round_sigma` snaps an fp64
/// tensor of σs; `noise(i, x)` gives step i's ε (shaped like x). Returns the final x (fp64) and
/// the number of `denoise` calls.
pub fn edm_sampler(
    denoise: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    round_sigma: &dyn Fn(&Tensor) -> Tensor,
    latents: &Tensor,
    opts: &EdmSamplerOptions,
    noise: &mut dyn FnMut(usize, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, usize)> {
    let _guard = tch::no_grad_guard();
    let n = opts.num_steps;
    if n == 0 {
        return Err(crate::BenchError::user("the EDM sampler needs at least one step"));
    }
    let t = round_sigma(&edm_sigmas(n, opts.sigma_min, opts.sigma_max, opts.rho));
    let mut t_steps = Vec::<f64>::try_from(&t.to_kind(Kind::Double)).map_err(crate::BenchError::Torch)?;
    t_steps.push(0.0);
    let mut evals = 0;
    let mut x_next = latents.to_kind(Kind::Double) * t_steps[0];
    for i in 0..n {
        let (t_cur, t_next) = (t_steps[i], t_steps[i + 1]);
        let x_cur = x_next;
        // Increase noise temporarily.
        let gamma = if opts.s_min <= t_cur && t_cur <= opts.s_max { (opts.s_churn / n as f64).min(2f64.sqrt() - 1.0) } else { 0.0 };
        let t_hat = round_sigma(&Tensor::from(t_cur + gamma * t_cur)).double_value(&[]);
        let eps = noise(i, &x_cur)?.to_kind(Kind::Double);
        let x_hat = &x_cur + eps * ((t_hat * t_hat - t_cur * t_cur).sqrt() * opts.s_noise);
        // Euler step.
        let denoised = denoise(&x_hat, t_hat)?.to_kind(Kind::Double);
        evals += 1;
        let d_cur = (&x_hat - denoised) / t_hat;
        x_next = &x_hat + &d_cur * (t_next - t_hat);
        // Second-order correction.
        if opts.second_order && i < n - 1 {
            let denoised = denoise(&x_next, t_next)?.to_kind(Kind::Double);
            evals += 1;
            let d_prime = (&x_next - denoised) / t_next;
            x_next = &x_hat + (d_cur * 0.5 + d_prime * 0.5) * (t_next - t_hat);
        }
    }
    Ok((x_next, evals))
}

impl super::EdmNetwork {
    /// [`edm_sampler`] with this network: σ range clamped to what it supports (as EDM does),
    /// its `round_sigma`, the same class labels at every step.
    pub fn sample(&self, latents: &Tensor, class_labels: Option<&Tensor>, opts: &EdmSamplerOptions, noise: &mut dyn FnMut(usize, &Tensor) -> Result<Tensor>) -> Result<(Tensor, usize)> {
        let mut opts = opts.clone();
        opts.sigma_min = opts.sigma_min.max(self.sigma_min());
        opts.sigma_max = opts.sigma_max.min(self.sigma_max());
        let b = latents.size().first().copied().unwrap_or(0);
        let mut denoise = |x: &Tensor, sigma: f64| {
            let s = Tensor::full([b], sigma, (Kind::Double, x.device()));
            self.denoise(x, &s, class_labels)
        };
        edm_sampler(&mut denoise, &|s| self.round_sigma(s), latents, &opts, noise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmas_follow_eq_5() {
        let s = Vec::<f64>::try_from(edm_sigmas(18, 0.002, 80.0, 7.0)).unwrap();
        assert_eq!(s.len(), 18);
        assert!((s[0] - 80.0).abs() < 1e-12 && (s[17] - 0.002).abs() < 1e-15, "{s:?}");
        // Eq. 5 in closed form at i = 9.
        let want = (80f64.powf(1.0 / 7.0) + 9.0 / 17.0 * (0.002f64.powf(1.0 / 7.0) - 80f64.powf(1.0 / 7.0))).powf(7.0);
        assert!((s[9] - want).abs() <= 1e-14 * want, "{} vs {want}", s[9]);
    }

    /// For D ≡ 0 the probability-flow ODE dx/dσ = x/σ is solved exactly by x ∝ σ, so Euler and
    /// Heun must both give x_N = x_0·σ_N/σ_0 = 0 and pass through x_0·σ_i/σ_0; with D ≡ x it is
    /// dx/dσ = 0: x stays x_0. Counts: 2N−1 evaluations for Heun, N for Euler.
    #[test]
    fn exact_on_linear_odes_and_counts_evaluations() {
        let latents = Tensor::from_slice(&[1.0f64, -2.0, 0.5]).reshape([1, 3, 1, 1]);
        let mut zero_noise = |_: usize, x: &Tensor| Ok(x.zeros_like());
        let mut opts = EdmSamplerOptions { num_steps: 5, ..Default::default() };
        let mut identity = |x: &Tensor, _: f64| Ok(x.shallow_clone());
        let (x, evals) = edm_sampler(&mut identity, &|s| s.shallow_clone(), &latents, &opts, &mut zero_noise).unwrap();
        assert_eq!(evals, 9);
        assert!((x - &latents * 80.0).abs().max().double_value(&[]) < 1e-12);
        opts.second_order = false;
        let mut zero = |x: &Tensor, _: f64| Ok(x.zeros_like());
        let (x, evals) = edm_sampler(&mut zero, &|s| s.shallow_clone(), &latents, &opts, &mut zero_noise).unwrap();
        assert_eq!(evals, 5);
        // The last step computes x + (x/σ)·(0 − σ): zero up to one rounding of x/σ·σ.
        assert!(x.abs().max().double_value(&[]) < 1e-15);
    }

    /// Churn adds √(σ̂² − σ²)·S_noise·ε with σ̂ = (1+γ)σ, γ = min(S_churn/N, √2−1), only inside
    /// [S_min, S_max]; with D ≡ x the state is unchanged by the ODE steps, so after one step the
    /// added noise is visible exactly.
    #[test]
    fn churn_adds_the_stated_noise() {
        let latents = Tensor::zeros([1, 1, 1, 1], (Kind::Double, tch::Device::Cpu));
        let opts = EdmSamplerOptions { num_steps: 1, s_churn: 0.2, s_noise: 1.5, ..Default::default() };
        let mut ones = |_: usize, x: &Tensor| Ok(x.ones_like());
        let mut identity = |x: &Tensor, _: f64| Ok(x.shallow_clone());
        let (x, _) = edm_sampler(&mut identity, &|s| s.shallow_clone(), &latents, &opts, &mut ones).unwrap();
        let (s, s_hat) = (80.0f64, 80.0 * 1.2);
        let want = (s_hat * s_hat - s * s).sqrt() * 1.5;
        assert!((x.double_value(&[0, 0, 0, 0]) - want).abs() < 1e-9, "{} vs {want}", x.double_value(&[0, 0, 0, 0]));
        // Outside [S_min, S_max] no noise is added (but ε is still drawn).
        let opts = EdmSamplerOptions { s_max: 10.0, ..opts };
        let mut draws = 0;
        let mut counting = |_: usize, x: &Tensor| {
            draws += 1;
            Ok(x.ones_like())
        };
        let (x, _) = edm_sampler(&mut identity, &|s| s.shallow_clone(), &latents, &opts, &mut counting).unwrap();
        assert_eq!((x.double_value(&[0, 0, 0, 0]), draws), (0.0, 1));
    }
}
