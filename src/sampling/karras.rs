//! The Karras/k-diffusion family in diffusers' discrete form: Euler, Euler ancestral, Heun,
//! DPM2 (KDPM2) and its ancestral variant, LMS, and the stochastic Karras VE sampler.
//!
//! They integrate the VE probability-flow ODE dx/dσ = ε̂ in x = x_vp·√(1+σ²), σ = σ̃ =
//! √((1−ᾱ)/ᾱ) (Karras et al. 2022, eq. 1 with s = 1). The ε-model is called with
//! x_vp = x/√(σ²+1) (diffusers `scale_model_input`) and the label of σ: on the grid the label
//! diffusers computes, between grid levels `_sigma_to_t` (log σ̃ linear between integer labels).
//!
//! **`sample()` takes z ~ N(0, I)** like every sampler, and starts from x = `init_noise_sigma`·z
//! as diffusers does: σ_max for `timestep_spacing` linspace and trailing, √(σ_max²+1) for
//! leading. The result at σ = 0 is in data space.
use super::continuous::{exponential_sigmas, f32r, interp_labels, karras_sigmas, sigma_levels, sigma_to_t, ve_sigmas};
use super::ddim::STEPS_OFFSET;
use super::def::{Args, EtaColumn, ParamDef, ParamKind, SamplerDef, ALL_PREDICTIONS};
use super::{Counted, EndPoint, Node, NoiseSource, Sampler, Schedule};
use crate::models::Prediction;
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

/// A σ grid: S levels σ_0 > … > σ_{S−1} > 0 then σ_S = 0, the model label at each level, and the
/// schedule's log σ̃ table for labels of levels between grid points.
#[derive(Debug, Clone)]
pub struct SigmaGrid {
    pub sigmas: Vec<f64>,
    pub labels: Vec<f64>,
    log_sigmas: Vec<f64>,
    /// diffusers keeps labels in float32, except KDPM2's Karras grids (float64).
    f32_labels: bool,
    /// `timestep_spacing="leading"`: diffusers starts from √(σ_max²+1)·z instead of σ_max·z.
    init_vp: bool,
}

impl SigmaGrid {
    /// diffusers (Euler/Heun/KDPM2/LMS) `set_timesteps`, float32 like the reference:
    /// `linspace`: t = linspace(0, T−1, S)[::-1] (fractional), σ = np.interp(t, arange(T), σ̃);
    /// `karras`: Karras levels between σ̃(label 0) and σ̃(label T−1), t = `_sigma_to_t(σ)`;
    /// `exponential`: levels uniform in log σ between the same ends (`use_exponential_sigmas`);
    /// `beta`: at Beta(0.6, 0.6) quantiles between them (`use_beta_sigmas`).
    pub fn new(schedule: &Schedule, rule: Skip, steps: usize) -> Self {
        let sig = ve_sigmas(schedule);
        let log_sigmas = schedule.log_sigmas();
        let last = (schedule.len() - 1) as f64;
        let (lo, hi) = (sig[0], sig[sig.len() - 1]);
        let levels_from = |levels: Vec<f64>| levels.into_iter().map(|s| (s, sigma_to_t(&log_sigmas, s))).unzip();
        let (levels, labels): (Vec<f64>, Vec<f64>) = if let Some(levels) = sigma_levels(rule, lo, hi, steps) {
            levels_from(levels)
        } else {
            (0..steps)
                .rev()
                .map(|i| {
                    let t = f32r(if steps == 1 { 0.0 } else { last * i as f64 / (steps - 1) as f64 });
                    (interp_labels(&sig, t), t)
                })
                .unzip()
        };
        let mut sigmas: Vec<f64> = levels.into_iter().map(f32r).collect();
        sigmas.push(0.0);
        SigmaGrid { sigmas, labels: labels.into_iter().map(f32r).collect(), log_sigmas, f32_labels: true, init_vp: false }
    }
    /// diffusers `timestep_spacing="leading"` / `"trailing"`: integer labels from
    /// [`crate::timesteps::discrete_labels`] (leading: arange(S)·(T//S) + steps_offset; trailing:
    /// round(arange(T, 0, −T/S)) − 1), σ = σ̃ at each label; leading also changes
    /// `init_noise_sigma` to √(σ_max²+1).
    pub fn spaced(schedule: &Schedule, skip: Skip, steps_offset: usize, steps: usize) -> Result<Self> {
        let sig = ve_sigmas(schedule);
        let log_sigmas = schedule.log_sigmas();
        let labels = crate::timesteps::discrete_labels(skip, steps, schedule.len(), steps_offset)?;
        let mut sigmas: Vec<f64> = labels.iter().map(|&t| f32r(sig[t])).collect();
        sigmas.push(0.0);
        let labels = labels.into_iter().map(|t| t as f64).collect();
        Ok(SigmaGrid { sigmas, labels, log_sigmas, f32_labels: true, init_vp: skip == Skip::Leading })
    }
    /// KDPM2(-ancestral) with Karras levels: diffusers rounds the grid labels to integers and
    /// keeps the midpoint labels unrounded in float64.
    pub fn kdpm2_karras_labels(mut self, schedule: &Schedule) -> Self {
        let sig = ve_sigmas(schedule);
        let k = karras_sigmas(sig[0], sig[sig.len() - 1], self.labels.len());
        self.labels = k.iter().map(|&s| sigma_to_t(&self.log_sigmas, s).round_ties_even()).collect();
        self.with_f64_off_grid_labels()
    }
    /// Levels given as they are (float64, no σ = 0 appended), labels `_sigma_to_t` unrounded.
    pub fn from_levels(schedule: &Schedule, sigmas: Vec<f64>) -> Self {
        let log_sigmas = schedule.log_sigmas();
        let labels = sigmas.iter().map(|&s| sigma_to_t(&log_sigmas, s)).collect();
        SigmaGrid { sigmas, labels, log_sigmas, f32_labels: false, init_vp: false }
    }
    /// Labels of levels off the grid in float64, as k-diffusion and diffusers' DPMSolverSDEScheduler
    /// compute them (the grid's own labels stay as they are).
    pub fn with_f64_off_grid_labels(mut self) -> Self {
        self.f32_labels = false;
        self
    }
    pub fn steps(&self) -> usize {
        self.labels.len()
    }
    /// Label of a level off the grid (diffusers `_sigma_to_t`, stored as float32).
    pub fn label_of(&self, sigma: f64) -> f64 {
        let t = sigma_to_t(&self.log_sigmas, sigma);
        if self.f32_labels {
            f32r(t)
        } else {
            t
        }
    }
    /// diffusers `init_noise_sigma`: max σ for linspace/trailing spacing, √(σ_max²+1) for leading.
    pub fn init_sigma(&self) -> f64 {
        let max = self.sigmas[0];
        if self.init_vp {
            (max * max + 1.0).sqrt()
        } else {
            max
        }
    }
}

/// ε̂ at level σ: the model sees x/√(σ²+1) (diffusers `scale_model_input`).
pub(super) fn eps_at(model: &Counted, x: &Tensor, sigma: f64, label: f64) -> Result<Tensor> {
    model.eps(&(x / (sigma * sigma + 1.0).sqrt()), &Node::from_sigma_ve(label, sigma))
}

/// Ancestral split of σ_from → σ_to (k-diffusion `get_ancestral_step`):
/// σ_up = min(σ_to, η·√(σ_to²(σ_from² − σ_to²)/σ_from²)), σ_down = √(σ_to² − σ_up²).
pub fn ancestral_split(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let up = (eta * (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) / (sigma_from * sigma_from)).max(0.0).sqrt()).min(sigma_to);
    let down = (sigma_to * sigma_to - up * up).max(0.0).sqrt();
    (down, up)
}

/// Euler step of dx/dσ = ε (Karras et al. 2022 Alg. 1 line 5; diffusers `EulerDiscreteScheduler.step`).
pub(super) fn euler_step(x: &Tensor, d: &Tensor, sigma: f64, sigma_next: f64) -> Tensor {
    x + d * (sigma_next - sigma)
}

/// Heun's correction (Karras et al. 2022 Alg. 1 lines 7–8; diffusers `HeunDiscreteScheduler.step`):
/// x_{i+1} = x_i + (σ_{i+1} − σ_i)·(d_i + d'_{i+1})/2.
fn heun_step(x: &Tensor, d: &Tensor, d_next: &Tensor, sigma: f64, sigma_next: f64) -> Tensor {
    x + (d + d_next) * (0.5 * (sigma_next - sigma))
}

/// ∫_{σ_i}^{σ_{i+1}} of the Lagrange basis polynomial k through σ_i, σ_{i−1}, … (diffusers
/// `get_lms_coefficient`; 4-point Gauss–Legendre is exact for these degree-≤3 polynomials).
pub fn lms_coefficient(sigmas: &[f64], order: usize, i: usize, k: usize) -> f64 {
    const NODES: [(f64, f64); 4] = [
        (-0.861_136_311_594_052_6, 0.347_854_845_137_453_85),
        (-0.339_981_043_584_856_3, 0.652_145_154_862_546_2),
        (0.339_981_043_584_856_3, 0.652_145_154_862_546_2),
        (0.861_136_311_594_052_6, 0.347_854_845_137_453_85),
    ];
    let (a, b) = (sigmas[i], sigmas[i + 1]);
    let basis = |tau: f64| -> f64 {
        (0..order).filter(|&j| j != k).map(|j| (tau - sigmas[i - j]) / (sigmas[i - k] - sigmas[i - j])).product()
    };
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    NODES.iter().map(|(x, w)| w * basis(mid + half * x)).sum::<f64>() * half
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Euler,
    EulerAncestral,
    Heun,
    Kdpm2,
    Kdpm2Ancestral,
    Lms,
    KarrasVe,
}

/// Karras et al. 2022 Alg. 2 churn: γ_i = min(S_churn/S, √2−1) on S_tmin ≤ σ_i ≤ S_tmax.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

pub struct KarrasSampler {
    family: Family,
    grid: SigmaGrid,
    /// LMS order (diffusers default 4).
    lms_order: usize,
    churn: Churn,
}

impl KarrasSampler {
    pub fn new(family: Family, grid: SigmaGrid) -> Self {
        let churn = Churn { s_churn: 0.0, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 };
        KarrasSampler { family, grid, lms_order: 4, churn }
    }
    pub fn with_lms_order(mut self, order: usize) -> Self {
        self.lms_order = order;
        self
    }
    pub fn with_churn(mut self, churn: Churn) -> Self {
        self.churn = churn;
        self
    }
    pub fn grid(&self) -> &SigmaGrid {
        &self.grid
    }

    /// KDPM2's midpoint level: geometric mean of σ_i and σ_{i+1} (diffusers `sigmas_interpol`),
    /// and for the ancestral variant of σ_i and σ_down.
    fn dpm2_mid(&self, i: usize) -> f64 {
        let (s, n) = (self.grid.sigmas[i], self.grid.sigmas[i + 1]);
        let target = match self.family {
            Family::Kdpm2Ancestral => ancestral_split(s, n, 1.0).0,
            _ => n,
        };
        if target == 0.0 {
            0.0
        } else {
            f32r((0.5 * (s.ln() + target.ln())).exp())
        }
    }

    /// γ-inflated level σ̂_i of Karras VE (Alg. 2 lines 4–5).
    fn sigma_hat(&self, i: usize) -> f64 {
        let s = self.grid.sigmas[i];
        let c = &self.churn;
        let gamma = if c.s_tmin <= s && s <= c.s_tmax { (c.s_churn / self.grid.steps() as f64).min(2f64.sqrt() - 1.0) } else { 0.0 };
        s * (1.0 + gamma)
    }
}

impl Sampler for KarrasSampler {
    fn name(&self) -> &'static str {
        match self.family {
            Family::Euler => "euler",
            Family::EulerAncestral => "euler_ancestral",
            Family::Heun => "heun",
            Family::Kdpm2 => "kdpm2",
            Family::Kdpm2Ancestral => "kdpm2_ancestral",
            Family::Lms => "lms",
            Family::KarrasVe => "karras_ve",
        }
    }
    fn nfe(&self) -> usize {
        let s = self.grid.steps();
        match self.family {
            Family::Euler | Family::EulerAncestral | Family::Lms => s,
            // Second-order families: one extra call per step except the last (an Euler step to σ=0).
            Family::Heun | Family::Kdpm2 | Family::Kdpm2Ancestral | Family::KarrasVe => 2 * s - 1,
        }
    }
    fn labels(&self) -> Vec<f64> {
        let g = &self.grid;
        let s = g.steps();
        match self.family {
            Family::Euler | Family::EulerAncestral | Family::Lms => g.labels.clone(),
            Family::Heun => (0..s).flat_map(|i| if i + 1 < s { vec![g.labels[i], g.labels[i + 1]] } else { vec![g.labels[i]] }).collect(),
            Family::Kdpm2 | Family::Kdpm2Ancestral => (0..s)
                .flat_map(|i| if i + 1 < s { vec![g.labels[i], g.label_of(self.dpm2_mid(i))] } else { vec![g.labels[i]] })
                .collect(),
            Family::KarrasVe => (0..s)
                .flat_map(|i| {
                    let first = g.label_of(self.sigma_hat(i));
                    if i + 1 < s {
                        vec![first, g.labels[i + 1]]
                    } else {
                        vec![first]
                    }
                })
                .collect(),
        }
    }
    fn end_point(&self) -> EndPoint {
        if self.grid.sigmas.last().is_some_and(|&s| s > 0.0) {
            EndPoint::SigmaMin
        } else {
            EndPoint::SigmaZero
        }
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let g = &self.grid;
        let (sig, lab) = (&g.sigmas, &g.labels);
        let s = g.steps();
        let mut x = z * g.init_sigma();
        let mut history: Vec<Tensor> = Vec::new();
        for i in 0..s {
            let (sigma, next) = (sig[i], sig[i + 1]);
            x = match self.family {
                Family::Euler => {
                    let hat = self.sigma_hat(i);
                    if hat == sigma {
                        euler_step(&x, &eps_at(model, &x, sigma, lab[i])?, sigma, next)
                    } else {
                        // diffusers `EulerDiscreteScheduler.step` with s_churn: noise up to σ̂ after
                        // the model call at σ, then read that output at σ̂ (Karras et al. 2022
                        // Alg. 2 evaluates at σ̂ instead; diffusers' per-parameterisation x̂0 kept).
                        let x_vp = &x / (sigma * sigma + 1.0).sqrt();
                        let out = model.call(&x_vp, &Node::from_sigma_ve(lab[i], sigma))?;
                        let x_hat = &x + noise.noise(i, &x) * (self.churn.s_noise * (hat * hat - sigma * sigma).sqrt());
                        let x0 = match model.prediction() {
                            Prediction::Epsilon => &x_hat - out.eps() * hat,
                            Prediction::VPrediction => out.x0() + (&x_hat - &x) / (sigma * sigma + 1.0),
                            _ => out.x0(),
                        };
                        euler_step(&x_hat, &((&x_hat - x0) / hat), hat, next)
                    }
                }
                // Euler ancestral (k-diffusion `sample_euler_ancestral`): Euler to σ_down, then add σ_up noise.
                Family::EulerAncestral => {
                    let d = eps_at(model, &x, sigma, lab[i])?;
                    let (down, up) = ancestral_split(sigma, next, 1.0);
                    let x = euler_step(&x, &d, sigma, down);
                    if up > 0.0 {
                        x + noise.noise(i, &d) * up
                    } else {
                        x
                    }
                }
                Family::Heun => {
                    let d = eps_at(model, &x, sigma, lab[i])?;
                    let x_pred = euler_step(&x, &d, sigma, next);
                    if next == 0.0 {
                        x_pred
                    } else {
                        heun_step(&x, &d, &eps_at(model, &x_pred, next, lab[i + 1])?, sigma, next)
                    }
                }
                // DPM-Solver-2 in σ (Karras et al. 2022 App. / k-diffusion `sample_dpm_2`): Euler to the
                // geometric midpoint, then the full step with the midpoint slope.
                Family::Kdpm2 | Family::Kdpm2Ancestral => {
                    let d = eps_at(model, &x, sigma, lab[i])?;
                    let mid = self.dpm2_mid(i);
                    if mid == 0.0 {
                        euler_step(&x, &d, sigma, 0.0)
                    } else {
                        let x_mid = euler_step(&x, &d, sigma, mid);
                        let d_mid = eps_at(model, &x_mid, mid, g.label_of(mid))?;
                        if self.family == Family::Kdpm2 {
                            euler_step(&x, &d_mid, sigma, next)
                        } else {
                            let (down, up) = ancestral_split(sigma, next, 1.0);
                            euler_step(&x, &d_mid, sigma, down) + noise.noise(i, &d_mid) * up
                        }
                    }
                }
                // Linear multistep (k-diffusion `sample_lms`): x += Σ_k c_k d_{i−k}.
                Family::Lms => {
                    history.push(eps_at(model, &x, sigma, lab[i])?);
                    if history.len() > self.lms_order {
                        drop(history.remove(0));
                    }
                    let order = (i + 1).min(self.lms_order);
                    (0..order).fold(x.shallow_clone(), |acc, k| acc + &history[history.len() - 1 - k] * lms_coefficient(sig, order, i, k))
                }
                // Karras et al. 2022 Alg. 2: churn up to σ̂, Heun step σ̂ → σ_{i+1} (Euler for the last).
                Family::KarrasVe => {
                    let hat = self.sigma_hat(i);
                    let x_hat = if hat > sigma {
                        let z = noise.noise(i, &x);
                        &x + z * (self.churn.s_noise * (hat * hat - sigma * sigma).sqrt())
                    } else {
                        x.shallow_clone()
                    };
                    let d = eps_at(model, &x_hat, hat, g.label_of(hat))?;
                    let x_pred = euler_step(&x_hat, &d, hat, next);
                    if next == 0.0 {
                        x_pred
                    } else {
                        heun_step(&x_hat, &d, &eps_at(model, &x_pred, next, lab[i + 1])?, hat, next)
                    }
                }
            };
        }
        Ok(x)
    }
}

/// The σ grid a sampler entry asks for (its `skip`, and `steps_offset` under leading spacing),
/// on the schedule with a finite terminal σ as diffusers reads it.
pub(super) fn sigma_grid(a: &Args) -> Result<SigmaGrid> {
    let finite = a.schedule.finite_terminal_sigma();
    if matches!(a.skip, Skip::Leading | Skip::Trailing) {
        let offset = if a.def.param("steps_offset").is_some() { a.usize("steps_offset")? } else { 0 };
        SigmaGrid::spaced(&finite, a.skip, offset, a.steps)
    } else {
        if a.skip == Skip::Linspace {
            // linspace(0, T−1, 1) is just [0]: no noise level to start from.
            a.need_steps(2, "skip=linspace")?;
        }
        Ok(SigmaGrid::new(&finite, a.skip, a.steps))
    }
}

fn build(family: Family, a: &Args) -> Result<Box<dyn Sampler>> {
    let finite = a.schedule.finite_terminal_sigma();
    let a = &Args { schedule: &finite, ..*a };
    let karras = a.skip == Skip::Karras;
    let lms_order = if family == Family::Lms { a.usize("order")? } else { 4 };
    let churn = if a.def.param("s_churn").is_some() {
        Churn { s_churn: a.f64("s_churn")?, s_tmin: a.f64("s_tmin")?, s_tmax: a.f64("s_tmax")?, s_noise: a.f64("s_noise")? }
    } else {
        Churn { s_churn: 0.0, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 }
    };
    let mut grid = sigma_grid(a)?;
    if karras && matches!(family, Family::Kdpm2 | Family::Kdpm2Ancestral) {
        grid = grid.kdpm2_karras_labels(a.schedule);
    }
    // diffusers EulerDiscreteScheduler `final_sigmas_type="sigma_min"`: the last step lands on σ̃(0).
    if a.def.param("final_sigmas").is_some() && a.str("final_sigmas")? == "sigma_min" {
        if let Some(last) = grid.sigmas.last_mut() {
            *last = f32r(a.schedule.sigma(0));
        }
    }
    // `interpolation_type="log_linear"`: S+1 levels uniform in log σ from σ̃(T−1) to σ̃(0) beside the
    // spacing's labels, so the last step ends at σ̃(0) (the level grids replace it, as in diffusers).
    if a.def.param("interpolation").is_some() && a.str("interpolation")? == "log_linear" && matches!(a.skip, Skip::Linspace | Skip::Leading | Skip::Trailing) {
        let sig = ve_sigmas(a.schedule);
        grid.sigmas = exponential_sigmas(sig[0], sig[sig.len() - 1], a.steps + 1).into_iter().map(f32r).collect();
    }
    Ok(Box::new(KarrasSampler::new(family, grid).with_lms_order(lms_order).with_churn(churn)))
}

const SIGMA_SKIPS: &[Skip] = &[Skip::Linspace, Skip::Leading, Skip::Trailing, Skip::Karras];
/// Euler, Heun and LMS, whose diffusers schedulers also take `use_exponential_sigmas` and
/// `use_beta_sigmas`.
pub(super) const SIGMA_LEVEL_SKIPS: &[Skip] = &[Skip::Linspace, Skip::Leading, Skip::Trailing, Skip::Karras, Skip::Exponential, Skip::Beta];

pub static EULER: SamplerDef = SamplerDef {
    name: "euler",
    params: &[
        STEPS_OFFSET,
        ParamDef {
            name: "final_sigmas",
            kind: ParamKind::Choice { allowed: &["zero", "sigma_min"], default: "zero" },
            help: "level of the last step: zero (x̂0) or sigma_min (σ̃ of label 0; the sample keeps that noise)",
            diffusers: Some("final_sigmas_type"),
        },
        ParamDef {
            name: "interpolation",
            kind: ParamKind::Choice { allowed: &["linear", "log_linear"], default: "linear" },
            help: "σ at the spacing's labels: linear (σ̃ interpolated) or log_linear (S+1 levels uniform in log σ, ending at σ̃(0))",
            diffusers: Some("interpolation_type"),
        },
        churn("s_churn", 0.0, "churn S_churn of diffusers' step(): γ = min(S_churn/S, √2−1) (0: deterministic)"),
        churn("s_tmin", 0.0, "churn only for σ ≥ S_tmin"),
        churn("s_tmax", f64::INFINITY, "churn only for σ ≤ S_tmax"),
        churn("s_noise", 1.0, "noise inflation S_noise"),
    ],
    skips: SIGMA_LEVEL_SKIPS,
    default_skip: Skip::Linspace,
    nfe: "S",
    end_point: "σ=0 (final_sigmas=sigma_min: σ̃(0))",
    reference: "Karras et al. 2022 Alg. 1 (Euler); diffusers EulerDiscreteScheduler",
    predictions: ALL_PREDICTIONS,
    note: "skip linspace | leading | trailing = diffusers timestep_spacing (linspace: fractional labels; leading starts from √(σ_max²+1)·z); karras = use_karras_sigmas (ρ=7) over the full label range; exponential, beta = use_exponential_sigmas, use_beta_sigmas (euler, heun, lms)",
    eta: None,
    variant: None,
    build: |a| build(Family::Euler, a),
};

pub static EULER_ANCESTRAL: SamplerDef = SamplerDef {
    name: "euler_ancestral",
    reference: "k-diffusion sample_euler_ancestral; diffusers EulerAncestralDiscreteScheduler",
    eta: Some(EtaColumn::Fixed(1.0)),
    build: |a| build(Family::EulerAncestral, a),
    skips: SIGMA_SKIPS,
    params: &[STEPS_OFFSET],
    end_point: "σ=0",
    ..EULER
};

pub static HEUN: SamplerDef = SamplerDef {
    name: "heun",
    nfe: "2S−1 (last step Euler to σ=0)",
    reference: "Karras et al. 2022 Alg. 1; diffusers HeunDiscreteScheduler",
    build: |a| build(Family::Heun, a),
    params: &[STEPS_OFFSET],
    end_point: "σ=0",
    ..EULER
};

pub static KDPM2: SamplerDef = SamplerDef {
    name: "kdpm2",
    nfe: "2S−1 (last step Euler to σ=0)",
    reference: "k-diffusion sample_dpm_2; diffusers KDPM2DiscreteScheduler",
    build: |a| build(Family::Kdpm2, a),
    skips: SIGMA_SKIPS,
    params: &[STEPS_OFFSET],
    end_point: "σ=0",
    ..EULER
};

pub static KDPM2_ANCESTRAL: SamplerDef = SamplerDef {
    name: "kdpm2_ancestral",
    nfe: "2S−1 (last step Euler to σ=0)",
    reference: "k-diffusion sample_dpm_2_ancestral; diffusers KDPM2AncestralDiscreteScheduler",
    eta: Some(EtaColumn::Fixed(1.0)),
    build: |a| build(Family::Kdpm2Ancestral, a),
    skips: SIGMA_SKIPS,
    params: &[STEPS_OFFSET],
    end_point: "σ=0",
    ..EULER
};

pub static LMS: SamplerDef = SamplerDef {
    name: "lms",
    params: &[ParamDef { name: "order", kind: ParamKind::Int { min: 1, max: 4, default: 4 }, help: "linear multistep order", diffusers: None }, STEPS_OFFSET],
    reference: "k-diffusion sample_lms; diffusers LMSDiscreteScheduler",
    build: |a| build(Family::Lms, a),
    end_point: "σ=0",
    ..EULER
};

const fn churn(name: &'static str, default: f64, help: &'static str) -> ParamDef {
    ParamDef { name, kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default }, help, diffusers: Some(name) }
}

pub static KARRAS_VE: SamplerDef = SamplerDef {
    name: "karras_ve",
    params: &[
        churn("s_churn", 80.0, "total churn S_churn (γ_i = min(S_churn/S, √2−1))"),
        churn("s_tmin", 0.05, "churn only for σ ≥ S_tmin"),
        churn("s_tmax", 50.0, "churn only for σ ≤ S_tmax"),
        churn("s_noise", 1.007, "noise inflation S_noise"),
    ],
    skips: &[Skip::Linspace, Skip::Karras],
    default_skip: Skip::Karras,
    note: "skip linspace = diffusers timestep_spacing=linspace (fractional labels); karras = Karras levels (ρ=7)",
    nfe: "2S−1 (last step Euler to σ=0)",
    reference: "Karras et al. 2022 Alg. 2 (stochastic sampler; defaults of diffusers KarrasVeScheduler), on the discrete VP model",
    build: |a| build(Family::KarrasVe, a),
    ..EULER
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lms_coefficients_integrate_polynomials_exactly() {
        // Σ_k c_k f(σ_{i−k}) = ∫ f for a cubic f when order = 4.
        let s = [10.0, 6.0, 3.5, 2.0, 1.1, 0.0];
        let f = |x: f64| 1.0 + 2.0 * x - 0.3 * x * x + 0.05 * x * x * x;
        let prim = |x: f64| x + x * x - 0.1 * x.powi(3) + 0.0125 * x.powi(4);
        let i = 3;
        let approx: f64 = (0..4).map(|k| lms_coefficient(&s, 4, i, k) * f(s[i - k])).sum();
        assert!((approx - (prim(s[i + 1]) - prim(s[i]))).abs() < 1e-12);
        // Order 1 is Euler: c_0 = σ_{i+1} − σ_i.
        assert!((lms_coefficient(&s, 1, 0, 0) - (6.0 - 10.0)).abs() < 1e-14);
    }

    #[test]
    fn ancestral_split_preserves_variance() {
        let (down, up) = ancestral_split(3.0, 1.2, 1.0);
        assert!((down * down + up * up - 1.44).abs() < 1e-12);
        assert_eq!(ancestral_split(3.0, 0.0, 1.0), (0.0, 0.0));
        assert_eq!(ancestral_split(3.0, 1.2, 0.0), (1.2, 0.0));
    }

    #[test]
    fn leading_grid_starts_from_the_vp_scaled_noise() {
        let s = crate::schedule::NoiseSchedule::ddpm_linear();
        // diffusers leading, S = 10, steps_offset = 1: labels 901, 801, …, 1; init √(σ_901²+1).
        let g = SigmaGrid::spaced(&s, Skip::Leading, 1, 10).unwrap();
        assert_eq!(g.labels, (0..10).rev().map(|i| (100 * i + 1) as f64).collect::<Vec<_>>());
        assert_eq!(g.sigmas[0], f32r(s.sigma(901)));
        assert_eq!(g.init_sigma(), (g.sigmas[0] * g.sigmas[0] + 1.0).sqrt());
        let t = SigmaGrid::spaced(&s, Skip::Trailing, 0, 10).unwrap();
        assert_eq!((t.labels[0], t.init_sigma()), (999.0, f32r(s.sigma(999))));
    }

    #[test]
    fn linspace_grid_matches_diffusers() {
        let s = crate::schedule::NoiseSchedule::ddpm_linear();
        let g = SigmaGrid::new(&s, Skip::Linspace, 7);
        assert_eq!(g.labels[0], 999.0);
        assert_eq!(g.labels[6], 0.0);
        // 999·5/6 = 832.5 exactly; σ there is the mean of σ̃_832 and σ̃_833.
        assert_eq!(g.labels[1], 832.5);
        assert!((g.sigmas[1] - f32r(0.5 * (s.sigma(832) + s.sigma(833)))).abs() < 1e-12);
        assert_eq!(g.sigmas[7], 0.0);
    }
}
