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
//!
//! Table 1 of the paper casts the earlier samplers (VP, VE, iDDPM/DDIM) in the same form: a time
//! discretisation, a noise schedule σ(t), a scaling s(t) and Heun's α. [`ablation_sampler`] is
//! that general form (`generate.py::ablation_sampler`); EDM's own choices run [`edm_sampler`],
//! as EDM's `generate.py` does.
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
    /// Table 1's columns; EDM's own: `Edm`, `Linear`, `None`, α = 1.
    pub discretization: Discretization,
    pub schedule: SigmaSchedule,
    pub scaling: Scaling,
    /// Heun's intermediate point at t + α·h (α = 1: Heun's method).
    pub alpha: f64,
    /// VP's end time ε_s (its σ_min default is σ(ε_s) of β_d = 19.9, β_min = 0.1).
    pub epsilon_s: f64,
    /// iDDPM's grid: ᾱ ratio clip C_1, cosine offset C_2, M levels.
    pub c_1: f64,
    pub c_2: f64,
    pub m: usize,
}

/// Time steps (EDM Table 1, "Time steps").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discretization {
    /// t_i = 1 + i/(N−1)·(ε_s − 1) under the VP schedule (Song et al. 2021b).
    Vp,
    /// σ_i² = σ_max²·(σ_min²/σ_max²)^(i/(N−1)) (geometric in σ).
    Ve,
    /// N of the M levels u_j of iDDPM's cosine schedule, evenly by index (DDIM on iDDPM).
    Iddpm,
    /// Eq. 5 with ρ.
    Edm,
}

/// σ(t) (EDM Table 1, "Schedule").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaSchedule {
    /// σ(t) = √(e^(½β_d t² + β_min t) − 1), β_d and β_min fitted to σ_min = σ(ε_s), σ_max = σ(1).
    Vp,
    /// σ(t) = √t.
    Ve,
    /// σ(t) = t.
    Linear,
}

/// s(t) (EDM Table 1, "Scaling").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scaling {
    /// s(t) = 1/√(1 + σ(t)²).
    Vp,
    None,
}

impl Discretization {
    pub const NAMES: &'static [&'static str] = &["edm", "vp", "ve", "iddpm"];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "edm" => Discretization::Edm,
            "vp" => Discretization::Vp,
            "ve" => Discretization::Ve,
            "iddpm" => Discretization::Iddpm,
            _ => return None,
        })
    }
    /// EDM's default σ range for these time steps (`ablation_sampler` with sigma_min/max None).
    pub fn default_range(self, epsilon_s: f64) -> (f64, f64) {
        let vp = |t: f64| vp_sigma(19.9, 0.1, t);
        match self {
            Discretization::Vp => (vp(epsilon_s), vp(1.0)),
            Discretization::Ve => (0.02, 100.0),
            Discretization::Iddpm => (0.002, 81.0),
            Discretization::Edm => (0.002, 80.0),
        }
    }
}

impl SigmaSchedule {
    pub const NAMES: &'static [&'static str] = &["linear", "vp", "ve"];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "linear" => SigmaSchedule::Linear,
            "vp" => SigmaSchedule::Vp,
            "ve" => SigmaSchedule::Ve,
            _ => return None,
        })
    }
}

impl Scaling {
    pub const NAMES: &'static [&'static str] = &["none", "vp"];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Scaling::None,
            "vp" => Scaling::Vp,
            _ => return None,
        })
    }
}

/// VP's σ(t) = √(e^(½β_d t² + β_min t) − 1) (EDM's `vp_sigma`, with its `np.e **`).
fn vp_sigma(beta_d: f64, beta_min: f64, t: f64) -> f64 {
    (std::f64::consts::E.powf(0.5 * beta_d * t * t + beta_min * t) - 1.0).sqrt()
}

/// σ(t), σ'(t), t(σ), s(t), s'(t) of one configuration.
#[derive(Clone, Copy, Debug)]
struct Odes {
    schedule: SigmaSchedule,
    scaling: Scaling,
    /// VP's β_d, β_min fitted to the σ range.
    beta_d: f64,
    beta_min: f64,
}

impl Odes {
    fn sigma(&self, t: f64) -> f64 {
        match self.schedule {
            SigmaSchedule::Vp => vp_sigma(self.beta_d, self.beta_min, t),
            SigmaSchedule::Ve => t.sqrt(),
            SigmaSchedule::Linear => t,
        }
    }
    fn sigma_deriv(&self, t: f64) -> f64 {
        match self.schedule {
            SigmaSchedule::Vp => 0.5 * (self.beta_min + self.beta_d * t) * (self.sigma(t) + 1.0 / self.sigma(t)),
            SigmaSchedule::Ve => 0.5 / t.sqrt(),
            SigmaSchedule::Linear => 1.0,
        }
    }
    fn sigma_inv(&self, sigma: f64) -> f64 {
        match self.schedule {
            SigmaSchedule::Vp => ((self.beta_min * self.beta_min + 2.0 * self.beta_d * (sigma * sigma + 1.0).ln()).sqrt() - self.beta_min) / self.beta_d,
            SigmaSchedule::Ve => sigma * sigma,
            SigmaSchedule::Linear => sigma,
        }
    }
    fn s(&self, t: f64) -> f64 {
        match self.scaling {
            Scaling::Vp => 1.0 / (1.0 + self.sigma(t).powi(2)).sqrt(),
            Scaling::None => 1.0,
        }
    }
    fn s_deriv(&self, t: f64) -> f64 {
        match self.scaling {
            Scaling::Vp => -self.sigma(t) * self.sigma_deriv(t) * self.s(t).powi(3),
            Scaling::None => 0.0,
        }
    }
    /// dx/dt at (x, t) from the denoised D (EDM Eq. 4 with scaling): the coefficients of x and D.
    fn derivative(&self, x: &Tensor, denoised: &Tensor, t: f64) -> Tensor {
        let (sigma, ds, s) = (self.sigma(t), self.sigma_deriv(t), self.s(t));
        x * (ds / sigma + self.s_deriv(t) / s) - denoised * (ds * s / sigma)
    }
}

impl EdmSamplerOptions {
    /// EDM's own sampler (Eq. 5, σ(t) = t, no scaling, α = 1): [`edm_sampler`] runs it.
    pub fn is_edm(&self) -> bool {
        self.discretization == Discretization::Edm && self.schedule == SigmaSchedule::Linear && self.scaling == Scaling::None && self.alpha == 1.0
    }

    fn odes(&self) -> Odes {
        // EDM writes log(σ² + 1), not log1p.
        let (lo, hi) = ((self.sigma_min * self.sigma_min + 1.0).ln(), (self.sigma_max * self.sigma_max + 1.0).ln());
        let e = self.epsilon_s;
        let beta_d = 2.0 * (lo / e - hi) / (e - 1.0);
        Odes { schedule: self.schedule, scaling: self.scaling, beta_d, beta_min: hi - 0.5 * beta_d }
    }

    /// The N noise levels of the time discretisation, before rounding.
    fn sigma_steps(&self, odes: &Odes) -> Vec<f64> {
        let n = self.num_steps;
        let ramp = |i: usize| if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
        let (lo, hi) = (self.sigma_min, self.sigma_max);
        match self.discretization {
            Discretization::Vp => {
                let vp = Odes { schedule: SigmaSchedule::Vp, ..*odes };
                (0..n).map(|i| vp.sigma(1.0 + ramp(i) * (self.epsilon_s - 1.0))).collect()
            }
            Discretization::Ve => (0..n).map(|i| (hi * hi * (lo * lo / (hi * hi)).powf(ramp(i))).sqrt()).collect(),
            Discretization::Iddpm => {
                let m = self.m;
                let alpha_bar = |j: usize| (0.5 * std::f64::consts::PI * j as f64 / m as f64 / (self.c_2 + 1.0)).sin().powi(2);
                let mut u = vec![0.0; m + 1];
                for j in (1..=m).rev() {
                    u[j - 1] = ((u[j] * u[j] + 1.0) / (alpha_bar(j - 1) / alpha_bar(j)).max(self.c_1) - 1.0).sqrt();
                }
                let kept: Vec<f64> = u.into_iter().filter(|&v| v >= lo && v <= hi).collect();
                if kept.is_empty() {
                    return Vec::new();
                }
                // torch's `round` is half-to-even.
                (0..n).map(|i| kept[((kept.len() - 1) as f64 * ramp(i)).round_ties_even() as usize]).collect()
            }
            Discretization::Edm => Vec::<f64>::try_from(edm_sigmas(n, lo, hi, self.rho)).unwrap_or_default(),
        }
    }

    /// Times t_0 … t_{N−1}, t_N = 0 of the general sampler (σ levels rounded by the network).
    fn t_steps(&self, odes: &Odes, round_sigma: &dyn Fn(&Tensor) -> Tensor) -> Result<Vec<f64>> {
        let sigmas = self.sigma_steps(odes);
        if sigmas.len() != self.num_steps {
            return Err(crate::BenchError::user(format!(
                "no iDDPM level u_j (M = {}) lies in [sigma_min, sigma_max] = [{}, {}]",
                self.m, self.sigma_min, self.sigma_max
            )));
        }
        let rounded = Vec::<f64>::try_from(round_sigma(&Tensor::from_slice(&sigmas)).to_kind(Kind::Double)).map_err(crate::BenchError::Torch)?;
        Ok(rounded.into_iter().map(|s| odes.sigma_inv(s)).chain([0.0]).collect())
    }

    /// γ_i of step i at time t (Alg. 2: churn only for S_min ≤ σ ≤ S_max).
    fn gamma(&self, sigma: f64) -> f64 {
        if self.s_min <= sigma && sigma <= self.s_max {
            (self.s_churn / self.num_steps as f64).min(2f64.sqrt() - 1.0)
        } else {
            0.0
        }
    }

    /// The σ of every network call of the general sampler, in order (the same arithmetic as
    /// [`ablation_sampler`]).
    pub fn ablation_calls(&self, round_sigma: &dyn Fn(&Tensor) -> Tensor) -> Result<Vec<f64>> {
        let odes = self.odes();
        let t = self.t_steps(&odes, round_sigma)?;
        let mut out = Vec::new();
        for i in 0..self.num_steps {
            let t_hat = self.t_hat(&odes, t[i], round_sigma);
            out.push(odes.sigma(t_hat));
            if self.second_order && i + 1 < self.num_steps {
                out.push(odes.sigma(t_hat + self.alpha * (t[i + 1] - t_hat)));
            }
        }
        Ok(out)
    }

    fn t_hat(&self, odes: &Odes, t_cur: f64, round_sigma: &dyn Fn(&Tensor) -> Tensor) -> f64 {
        let sigma = odes.sigma(t_cur);
        odes.sigma_inv(round_sigma(&Tensor::from(sigma + self.gamma(sigma) * sigma)).double_value(&[]))
    }
}

/// EDM's general sampler (Karras et al. 2022, Alg. 2 in t with σ(t) and s(t); NVlabs/edm
/// `generate.py::ablation_sampler`). Same interface as [`edm_sampler`]; `denoise` is called at
/// (x/s(t), σ(t)).
pub fn ablation_sampler(
    denoise: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    round_sigma: &dyn Fn(&Tensor) -> Tensor,
    latents: &Tensor,
    opts: &EdmSamplerOptions,
    noise: &mut dyn FnMut(usize, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, usize)> {
    let _guard = tch::no_grad_guard();
    let n = opts.num_steps;
    let odes = opts.odes();
    let t = opts.t_steps(&odes, round_sigma)?;
    let mut evals = 0;
    let mut x_next = latents.to_kind(Kind::Double) * (odes.sigma(t[0]) * odes.s(t[0]));
    for i in 0..n {
        let (t_cur, t_next) = (t[i], t[i + 1]);
        let x_cur = x_next;
        // Increase noise temporarily.
        let t_hat = opts.t_hat(&odes, t_cur, round_sigma);
        let (s_hat, sigma_hat, sigma_cur) = (odes.s(t_hat), odes.sigma(t_hat), odes.sigma(t_cur));
        let eps = noise(i, &x_cur)?.to_kind(Kind::Double);
        let x_hat = &x_cur * (s_hat / odes.s(t_cur)) + eps * ((sigma_hat * sigma_hat - sigma_cur * sigma_cur).max(0.0).sqrt() * s_hat * opts.s_noise);
        // Euler step.
        let h = t_next - t_hat;
        let denoised = denoise(&(&x_hat / s_hat), sigma_hat)?.to_kind(Kind::Double);
        evals += 1;
        let d_cur = odes.derivative(&x_hat, &denoised, t_hat);
        if !opts.second_order || i == n - 1 {
            x_next = &x_hat + &d_cur * h;
        } else {
            // Heun's correction from t' = t̂ + α·h.
            let t_prime = t_hat + opts.alpha * h;
            let x_prime = &x_hat + &d_cur * (opts.alpha * h);
            let denoised = denoise(&(&x_prime / odes.s(t_prime)), odes.sigma(t_prime))?.to_kind(Kind::Double);
            evals += 1;
            let d_prime = odes.derivative(&x_prime, &denoised, t_prime);
            let w = 1.0 / (2.0 * opts.alpha);
            x_next = &x_hat + (d_cur * (1.0 - w) + d_prime * w) * h;
        }
    }
    Ok((x_next, evals))
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
            discretization: Discretization::Edm,
            schedule: SigmaSchedule::Linear,
            scaling: Scaling::None,
            alpha: 1.0,
            epsilon_s: 1e-3,
            c_1: 0.001,
            c_2: 0.008,
            m: 1000,
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
