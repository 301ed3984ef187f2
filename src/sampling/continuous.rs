//! The continuous-time view of a discrete schedule used by the ODE solvers (DPM-Solver, UniPC),
//! the σ-space view used by the Karras/k-diffusion family, and their timestep rules.
//!
//! Two conventions meet here and are kept apart on purpose:
//! - **DPM-Solver repo** (`NoiseScheduleVP('discrete')` in `dpm_solver_pytorch.py`): t_n = (n+1)/N,
//!   log α(t) piecewise linear in t through (t_n, ½ log ᾱ_n), sampling from t_T = 1 to t_0 = 1/N
//!   (= 1e-3 for N = 1000). The model label is (t − 1/N)·N, i.e. exactly the integer label n at
//!   t_n; the repo writes (t − 1/N)·1000, which is the same thing for N = 1000. Between grid points
//!   this is the oracle's fractional-label convention (log ᾱ linear between integer labels).
//! - **diffusers** (`DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`, Euler, ...): integer
//!   or fractional labels on the discrete grid, noise level σ̃ = √((1−ᾱ)/ᾱ) stored in float32.
use crate::schedule::{NoiseSchedule, ScheduleKind};
use crate::timesteps::Skip;

/// One point of a VP sampling grid: the model label there and (α, σ, λ) with α² + σ² = 1,
/// λ = log(α/σ). The last grid point of diffusers' `final_sigmas_type="zero"` has σ = 0, λ = +∞
/// and no model label (the model is never called there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    pub label: f64,
    pub alpha: f64,
    pub sigma: f64,
    pub lambda: f64,
}

impl Node {
    pub fn from_log_alpha(label: f64, log_alpha: f64) -> Self {
        let alpha = log_alpha.exp();
        let sigma = (1.0 - (2.0 * log_alpha).exp()).sqrt();
        Node { label, alpha, sigma, lambda: log_alpha - sigma.ln() }
    }
    /// From the VE noise level σ̃ (diffusers `_sigma_to_alpha_sigma_t`: α = 1/√(σ̃²+1), σ = σ̃ α).
    pub fn from_sigma_ve(label: f64, sigma_ve: f64) -> Self {
        let alpha = 1.0 / (sigma_ve * sigma_ve + 1.0).sqrt();
        let sigma = sigma_ve * alpha;
        Node { label, alpha, sigma, lambda: alpha.ln() - sigma.ln() }
    }
    /// From ᾱ at an integer or fractional label: α = √ᾱ, σ = √(1−ᾱ).
    pub fn from_alpha_bar(label: f64, alpha_bar: f64) -> Self {
        let (alpha, sigma) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
        Node { label, alpha, sigma, lambda: alpha.ln() - sigma.ln() }
    }
    /// ᾱ = α² at this node (what `x0_from_eps` expects).
    pub fn alpha_bar(&self) -> f64 {
        self.alpha * self.alpha
    }
}

/// DPM-Solver's `interpolate_fn` for one query: piecewise linear through (xp, fp) with xp
/// increasing, extrapolating linearly with the end segments outside [xp_0, xp_last].
fn interpolate(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    let k = xp.partition_point(|&v| v <= x).saturating_sub(1).min(n - 2);
    let w = (x - xp[k]) / (xp[k + 1] - xp[k]);
    fp[k] + w * (fp[k + 1] - fp[k])
}

/// DPM-Solver's `NoiseScheduleVP(schedule='discrete', alphas_cumprod=...)`.
#[derive(Debug, Clone)]
pub struct VpContinuous {
    /// t_n = (n+1)/N, increasing.
    t_array: Vec<f64>,
    /// ½ log ᾱ_n, decreasing.
    log_alpha_array: Vec<f64>,
}

impl VpContinuous {
    pub fn new(schedule: &NoiseSchedule) -> Self {
        let n = schedule.len();
        VpContinuous {
            t_array: (0..n).map(|i| (i + 1) as f64 / n as f64).collect(),
            log_alpha_array: schedule.alphas_cumprod.iter().map(|a| 0.5 * a.ln()).collect(),
        }
    }
    pub fn total_n(&self) -> usize {
        self.t_array.len()
    }
    /// The repo's default end time t_0 = 1/N (`t_end=None` in `DPM_Solver.sample`).
    pub fn t_min(&self) -> f64 {
        1.0 / self.total_n() as f64
    }
    /// log α(t) (`marginal_log_mean_coeff`).
    pub fn log_alpha(&self, t: f64) -> f64 {
        interpolate(t, &self.t_array, &self.log_alpha_array)
    }
    /// λ(t) = log α − ½ log(1 − α²) (`marginal_lambda`).
    pub fn lambda(&self, t: f64) -> f64 {
        let la = self.log_alpha(t);
        la - 0.5 * (-(2.0 * la).exp()).ln_1p()
    }
    /// t(λ) (`inverse_lambda`): log α = −½ logaddexp(0, −2λ), then invert the piecewise-linear log α.
    pub fn inverse_lambda(&self, lambda: f64) -> f64 {
        let log_alpha = -0.5 * logaddexp(0.0, -2.0 * lambda);
        let xp: Vec<f64> = self.log_alpha_array.iter().rev().copied().collect();
        let fp: Vec<f64> = self.t_array.iter().rev().copied().collect();
        interpolate(log_alpha, &xp, &fp)
    }
    /// Model label for continuous time t: (t − 1/N)·N (`model_wrapper`, with N in place of 1000).
    pub fn label(&self, t: f64) -> f64 {
        (t - self.t_min()) * self.total_n() as f64
    }
    pub fn node(&self, t: f64) -> Node {
        Node::from_log_alpha(self.label(t), self.log_alpha(t))
    }
}

fn logaddexp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// DPM-Solver/UniPC `get_time_steps` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRule {
    /// Uniform in t.
    TimeUniform,
    /// Uniform in λ (the repos' `logSNR`).
    LogSnr,
    /// Uniform in √t (`time_quadratic`, t_order = 2).
    TimeQuadratic,
}

/// `get_time_steps(skip_type, t_T, t_0, N)`: N+1 times from t_T down to t_0.
pub fn time_steps(vp: &VpContinuous, rule: TimeRule, t_start: f64, t_end: f64, n: usize) -> Vec<f64> {
    let lin = |a: f64, b: f64| -> Vec<f64> { (0..=n).map(|i| a + (b - a) * i as f64 / n as f64).collect() };
    match rule {
        TimeRule::TimeUniform => lin(t_start, t_end),
        TimeRule::LogSnr => lin(vp.lambda(t_start), vp.lambda(t_end)).into_iter().map(|l| vp.inverse_lambda(l)).collect(),
        TimeRule::TimeQuadratic => lin(t_start.sqrt(), t_end.sqrt()).into_iter().map(|s| s * s).collect(),
    }
}

/// Karras et al. 2022 eq. 5 (diffusers `_convert_to_karras`): n levels from σ_max down to σ_min,
/// uniform in σ^(1/ρ), ρ = 7.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (lo, hi) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    (0..n)
        .map(|i| {
            let ramp = if n == 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
            (hi + ramp * (lo - hi)).powf(RHO)
        })
        .collect()
}

/// diffusers `_convert_to_lu` (Lu et al. 2022, DPM-Solver++ §3.2: uniform in λ = log σ̃ here):
/// exp(λ_max + u·(λ_min − λ_max)), u = linspace(0, 1, n).
pub fn lu_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let (lmin, lmax) = (sigma_min.ln(), sigma_max.ln());
    crate::timesteps::numpy_linspace(0.0, 1.0, n).into_iter().map(|u| (lmax + u * (lmin - lmax)).exp()).collect()
}

/// diffusers `_convert_to_exponential`: n levels from σ_max down to σ_min, uniform in log σ
/// (`exp(linspace(log σ_max, log σ_min, n))`).
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    crate::timesteps::numpy_linspace(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect()
}

/// diffusers `_convert_to_beta` (Lee et al. 2024, "Beta Sampling is All You Need"): n levels
/// σ_min + F⁻¹(1 − u)·(σ_max − σ_min), u = linspace(0, 1, n), F the Beta(0.6, 0.6) CDF.
pub fn beta_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    use statrs::distribution::{Beta, ContinuousCDF};
    let beta = Beta::new(0.6, 0.6).expect("Beta(0.6, 0.6) has valid shape parameters");
    crate::timesteps::numpy_linspace(0.0, 1.0, n).into_iter().map(|u| sigma_min + beta.inverse_cdf(1.0 - u) * (sigma_max - sigma_min)).collect()
}

/// diffusers' σ̃-level grids by rule (`use_karras_sigmas`, `use_exponential_sigmas`,
/// `use_beta_sigmas`, `use_lu_lambdas`): n levels from σ_max down to σ_min; None for rules that
/// are not level grids.
pub fn sigma_levels(rule: Skip, sigma_min: f64, sigma_max: f64, n: usize) -> Option<Vec<f64>> {
    let f = match rule {
        Skip::Karras => karras_sigmas,
        Skip::Exponential => exponential_sigmas,
        Skip::Beta => beta_sigmas,
        Skip::Lu => lu_sigmas,
        _ => return None,
    };
    Some(f(sigma_min, sigma_max, n))
}

/// σ̃ of every integer label, as diffusers computes `sigmas` in `set_timesteps` (f64 here).
pub fn ve_sigmas(schedule: &NoiseSchedule) -> Vec<f64> {
    (0..schedule.len()).map(|t| schedule.sigma(t)).collect()
}

/// diffusers `_sigma_to_t`: the fractional label whose log σ̃ interpolates log σ̃ of the integer
/// labels linearly (clamped to [0, T−1]).
pub fn sigma_to_t(log_sigmas: &[f64], sigma: f64) -> f64 {
    let ls = sigma.max(1e-10).ln();
    // low_idx = last index with log_sigmas[i] ≤ log σ, clipped to T−2 (log_sigmas increase).
    let count = log_sigmas.iter().filter(|&&v| ls - v >= 0.0).count();
    let low = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let (l, h) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((l - ls) / (l - h)).clamp(0.0, 1.0);
    low as f64 + w
}

/// `np.interp(t, arange(T), values)`: linear interpolation of per-label values at fractional t.
pub fn interp_labels(values: &[f64], t: f64) -> f64 {
    let last = values.len() - 1;
    let t = t.clamp(0.0, last as f64);
    let lo = (t.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let w = t - lo as f64;
    values[lo] * (1.0 - w) + values[hi] * w
}

/// diffusers stores sigmas and (float) timesteps as float32; mirroring that rounding keeps the
/// grids bit-compatible with the reference.
pub fn f32r(v: f64) -> f64 {
    v as f32 as f64
}

/// Where a diffusers-style grid ends (`final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigma {
    /// σ = 0: the last step lands on the data prediction.
    Zero,
    /// σ̃ = σ̃ of label 0 (ᾱ_0).
    SigmaMin,
}

/// The timestep rule of a VP ODE solver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VpRule {
    /// diffusers `timestep_spacing="linspace"`: round(linspace(0, T−1, S+1))[::-1][:-1],
    /// integer labels, σ̃ in float32, and a final node from `final_sigmas_type`. `top` is T, or
    /// fewer labels under `lambda_min_clipped` (the spacing then spans only labels below it).
    DiffusersLinspace { final_sigma: FinalSigma, top: usize },
    /// diffusers `timestep_spacing="leading"` of the multistep solvers: ratio = T // (S+1),
    /// labels S·ratio, …, ratio, plus `steps_offset` (Lin et al. 2024, Table 2).
    DiffusersLeading { offset: usize, final_sigma: FinalSigma, top: usize },
    /// diffusers `timestep_spacing="trailing"`: round(arange(T, 0, −T/S)) − 1, starting at T − 1.
    DiffusersTrailing { final_sigma: FinalSigma, top: usize },
    /// diffusers' σ̃-level grids, `levels` one of `karras` (`use_karras_sigmas`), and, for
    /// `DPMSolverMultistepScheduler`, `exponential`, `beta`, `lu` (`use_exponential_sigmas`,
    /// `use_beta_sigmas`, `use_lu_lambdas`): labels `_sigma_to_t` of the levels, stored as int64;
    /// the node's (α, σ) come from the level, not from the label. Karras and Lu labels are rounded
    /// first, except that `DPMSolverMultistepScheduler` skips the rounding for
    /// `squaredcos_cap_v2` (`truncate_cosine`; singlestep and UniPC round); exponential and beta
    /// labels are never rounded, so the int64 cast truncates them.
    DiffusersLevels { levels: Skip, final_sigma: FinalSigma, truncate_cosine: bool },
    /// DPM-Solver/UniPC repo continuous time from t_T = 1 to `t_end`.
    Continuous { rule: TimeRule, t_end: f64 },
}

impl VpRule {
    /// Name as written in `bench samplers` / specs.
    pub fn skip_name(&self) -> &'static str {
        match self {
            VpRule::DiffusersLinspace { .. } => "linspace",
            VpRule::DiffusersLeading { .. } => "leading",
            VpRule::DiffusersTrailing { .. } => "trailing",
            VpRule::DiffusersLevels { levels, .. } => levels.name(),
            VpRule::Continuous { rule: TimeRule::TimeUniform, .. } => "time_uniform",
            VpRule::Continuous { rule: TimeRule::LogSnr, .. } => "logsnr",
            VpRule::Continuous { rule: TimeRule::TimeQuadratic, .. } => "time_quadratic",
        }
    }
    /// Where a diffusers grid ends; None for the repos' continuous grids.
    pub fn final_sigma(&self) -> Option<FinalSigma> {
        match *self {
            VpRule::DiffusersLinspace { final_sigma, .. }
            | VpRule::DiffusersTrailing { final_sigma, .. }
            | VpRule::DiffusersLeading { final_sigma, .. }
            | VpRule::DiffusersLevels { final_sigma, .. } => Some(final_sigma),
            VpRule::Continuous { .. } => None,
        }
    }
    /// The lower-order-final threshold: the DPM-Solver repo drops the order only for < 10 steps,
    /// diffusers' `DPMSolverMultistepScheduler` for < 15.
    pub fn lower_order_final_below(&self) -> usize {
        match self {
            VpRule::Continuous { .. } => 10,
            _ => 15,
        }
    }
}

/// diffusers `timestep_spacing="linspace"` labels of the DPM-Solver/UniPC schedulers.
pub fn diffusers_linspace_labels(t_train: usize, steps: usize) -> Vec<f64> {
    let last = (t_train - 1) as f64;
    let mut v: Vec<f64> = (0..=steps).map(|i| (last * i as f64 / steps as f64).round_ties_even()).collect();
    v.reverse();
    v.pop();
    v
}

/// The integer labels of diffusers' spaced grids (linspace, leading, trailing), in call order;
/// None for the other rules. Grids whose labels would repeat or leave [0, T) are refused (with
/// linspace labels repeat once S ≥ T, making λ-steps of zero length).
pub fn spaced_labels(sampler: &str, rule: VpRule, steps: usize, t_train: usize) -> crate::Result<Option<Vec<f64>>> {
    let err = |m: String| crate::BenchError::user(format!("sampler {sampler}: steps={steps} with skip={}: {m}", rule.skip_name()));
    let labels: Vec<f64> = match rule {
        VpRule::DiffusersLinspace { top, .. } => {
            if steps >= top {
                return Err(err(format!("needs steps < {top} (labels would repeat)")));
            }
            diffusers_linspace_labels(top, steps)
        }
        VpRule::DiffusersLeading { offset, top, .. } => {
            let ratio = top / (steps + 1);
            if ratio == 0 {
                return Err(err(format!("needs steps < T={t_train} (labels would repeat)")));
            }
            let top = steps * ratio + offset;
            if top >= t_train {
                return Err(err(format!("steps_offset={offset} pushes label {top} past the schedule's last label {}", t_train - 1)));
            }
            (1..=steps).rev().map(|i| (i * ratio + offset) as f64).collect()
        }
        VpRule::DiffusersTrailing { top, .. } => crate::timesteps::discrete_labels(crate::timesteps::Skip::Trailing, steps, top, 0)?
            .into_iter()
            .map(|l| l as f64)
            .collect(),
        _ => return Ok(None),
    };
    Ok(Some(labels))
}

/// Refuses step counts a rule cannot lay out (see [`spaced_labels`]).
pub fn check_vp_steps(sampler: &str, rule: VpRule, steps: usize, schedule: &NoiseSchedule) -> crate::Result<()> {
    spaced_labels(sampler, rule, steps, schedule.len()).map(|_| ())
}

/// The S+1 nodes of a VP grid for `steps` steps (the model is called at the first S).
pub fn vp_grid(schedule: &NoiseSchedule, rule: VpRule, steps: usize) -> crate::Result<Vec<Node>> {
    let final_node = |f: FinalSigma| match f {
        FinalSigma::Zero => Node { label: f64::NAN, alpha: 1.0, sigma: 0.0, lambda: f64::INFINITY },
        FinalSigma::SigmaMin => Node::from_sigma_ve(0.0, f32r(schedule.sigma(0))),
    };
    Ok(match rule {
        VpRule::DiffusersLinspace { final_sigma: f, .. } | VpRule::DiffusersTrailing { final_sigma: f, .. } | VpRule::DiffusersLeading { final_sigma: f, .. } => {
            let labels = spaced_labels("", rule, steps, schedule.len())?.unwrap_or_default();
            let mut g: Vec<Node> = labels.into_iter().map(|t| Node::from_sigma_ve(t, f32r(schedule.sigma(t as usize)))).collect();
            g.push(final_node(f));
            g
        }
        VpRule::DiffusersLevels { levels, final_sigma, truncate_cosine } => {
            let sig = ve_sigmas(schedule);
            let log_sig = schedule.log_sigmas();
            let (lo, hi) = (sig[0], sig[sig.len() - 1]);
            let values = sigma_levels(levels, lo, hi, steps).unwrap_or_else(|| karras_sigmas(lo, hi, steps));
            let truncate = matches!(levels, Skip::Exponential | Skip::Beta) || (truncate_cosine && schedule.kind == ScheduleKind::Cosine);
            let mut g: Vec<Node> = values
                .into_iter()
                .map(|s| {
                    let t = sigma_to_t(&log_sig, s);
                    Node::from_sigma_ve(if truncate { t.trunc() } else { t.round_ties_even() }, f32r(s))
                })
                .collect();
            g.push(final_node(final_sigma));
            g
        }
        VpRule::Continuous { rule, t_end } => {
            let vp = VpContinuous::new(schedule);
            time_steps(&vp, rule, 1.0, t_end, steps).into_iter().map(|t| vp.node(t)).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_wrapper_hits_the_discrete_schedule_at_grid_points() {
        let s = NoiseSchedule::ddpm_linear();
        let vp = VpContinuous::new(&s);
        for n in [0usize, 1, 499, 999] {
            let t = (n + 1) as f64 / 1000.0;
            assert!((vp.log_alpha(t) - 0.5 * s.alpha_bar(n).ln()).abs() < 1e-13);
            assert!((vp.label(t) - n as f64).abs() < 1e-9);
            assert!((vp.lambda(t) - s.lambda(n)).abs() < 1e-10);
        }
        // t_0 = 1e-3 for N = 1000: the repo's end point is label 0.
        assert_eq!(vp.t_min(), 1e-3);
    }

    #[test]
    fn inverse_lambda_inverts_lambda() {
        let s = NoiseSchedule::new(ScheduleKind::Cosine, 0.0, 0.0, 1000).unwrap();
        let vp = VpContinuous::new(&s);
        for t in [1e-3, 0.0123, 0.5, 0.77777, 0.99] {
            let back = vp.inverse_lambda(vp.lambda(t));
            assert!((back - t).abs() < 1e-9, "{t} → {back}");
        }
    }

    #[test]
    fn logsnr_steps_are_uniform_in_lambda() {
        let s = NoiseSchedule::ddpm_linear();
        let vp = VpContinuous::new(&s);
        let ts = time_steps(&vp, TimeRule::LogSnr, 1.0, 1e-3, 7);
        assert_eq!(ts.len(), 8);
        assert!((ts[0] - 1.0).abs() < 1e-12 && (ts[7] - 1e-3).abs() < 1e-12);
        let l: Vec<f64> = ts.iter().map(|&t| vp.lambda(t)).collect();
        for w in l.windows(3) {
            assert!(((w[1] - w[0]) - (w[2] - w[1])).abs() < 1e-9);
        }
        let q = time_steps(&vp, TimeRule::TimeQuadratic, 1.0, 1e-3, 4);
        assert!((q[2] - ((1.0 + 1e-3f64.sqrt()) / 2.0).powi(2)).abs() < 1e-15);
    }

    #[test]
    fn beta_levels_match_scipy() {
        // scipy.stats.beta.ppf([1, 2/3, 1/3, 0], 0.6, 0.6) mapped onto [0.1, 10].
        let want = [10.0, 7.273_408_421_301_528, 2.826_591_578_698_472_8, 0.1];
        for (got, want) in beta_sigmas(0.1, 10.0, 4).into_iter().zip(want) {
            assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        }
    }

    #[test]
    fn karras_levels_and_sigma_to_t() {
        let k = karras_sigmas(0.002, 80.0, 5);
        assert!((k[0] - 80.0).abs() < 1e-9 && (k[4] - 0.002).abs() < 1e-12);
        let mid = (0.5 * (80f64.powf(1.0 / 7.0) + 0.002f64.powf(1.0 / 7.0))).powi(7);
        assert!((k[2] - mid).abs() < 1e-12);
        let s = NoiseSchedule::ddpm_linear();
        let ls = s.log_sigmas();
        assert!((sigma_to_t(&ls, s.sigma(321)) - 321.0).abs() < 1e-9);
        let geo = (s.sigma(10) * s.sigma(11)).sqrt();
        assert!((sigma_to_t(&ls, geo) - 10.5).abs() < 1e-9);
        assert_eq!(sigma_to_t(&ls, 1e6), 999.0);
    }

    #[test]
    fn diffusers_linspace_matches_reference_values() {
        // np.linspace(0, 999, 8).round()[::-1][:-1] = [999, 856, 714, 571, 428, 285, 143]
        assert_eq!(diffusers_linspace_labels(1000, 7), vec![999.0, 856.0, 714.0, 571.0, 428.0, 285.0, 143.0]);
    }
}
