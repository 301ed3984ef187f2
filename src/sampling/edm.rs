//! EDM's samplers on σ-space models (Karras et al. 2022, Algorithm 2; NVlabs/edm
//! `generate.py::edm_sampler`): Heun with optional churn, and its first-order Euler form; with
//! Table 1's other time steps, σ(t), s(t) and α, the earlier samplers as EDM recasts them
//! (`ablation_sampler`: VP, VE and iDDPM/DDIM time steps for the Figure 2 comparisons).
//!
//! The trajectories themselves are [`crate::models::edm::sampler::edm_sampler`] and
//! [`crate::models::edm::sampler::ablation_sampler`] (pinned against EDM's own code); this file
//! is their sampler definition: parameters, σ range clamped to the model's as EDM does, the
//! model's σ rounding, and noise from the per-(seed, sample, step) stream.
use super::def::{Args, ParamDef, ParamKind, SamplerDef};
use super::{Counted, EndPoint, NoiseSource, Sampler};
use crate::models::edm::sampler::{ablation_sampler, edm_sampler, Discretization, EdmSamplerOptions, Scaling, SigmaSchedule};
use crate::models::Prediction;
use crate::timesteps::Skip;
use crate::{BenchError, Result};
use tch::Tensor;

pub struct EdmSampler {
    name: &'static str,
    opts: EdmSamplerOptions,
}

impl Sampler for EdmSampler {
    fn name(&self) -> &'static str {
        self.name
    }
    fn nfe(&self) -> usize {
        if self.opts.second_order {
            2 * self.opts.num_steps - 1
        } else {
            self.opts.num_steps
        }
    }
    /// The σ of every call before the model's σ rounding and range clamping (which need the model).
    fn labels(&self) -> Vec<f64> {
        self.opts.ablation_calls(&|s| s.shallow_clone()).unwrap_or_default()
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::SigmaZero
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let (sigma_min, sigma_max) = clamp_to_model(model, self.opts.sigma_min, self.opts.sigma_max);
        let opts = EdmSamplerOptions { sigma_min, sigma_max, ..self.opts.clone() };
        let kind = z.kind();
        let mut denoise = |x: &Tensor, sigma: f64| model.raw(&x.to_kind(kind), sigma);
        let mut step_noise = |i: usize, x: &Tensor| Ok(noise.noise(i, &x.to_kind(kind)));
        let run = if opts.is_edm() { edm_sampler } else { ablation_sampler };
        let (x, _) = run(&mut denoise, &|s| model.round_sigma(s), &z, &opts, &mut step_noise)?;
        Ok(x.to_kind(kind))
    }
}

const fn number(name: &'static str, min: f64, default: f64, help: &'static str) -> ParamDef {
    ParamDef { name, kind: ParamKind::Float { min, max: f64::INFINITY, default }, help, diffusers: None }
}

/// EDM's σ grid (Eq. 5), for every sampler that lays it out.
pub(super) const SIGMA_MIN: ParamDef = number("sigma_min", 1e-9, 0.002, "lowest σ of the grid (EDM Eq. 5), raised to the network's own minimum");
pub(super) const SIGMA_MAX: ParamDef = number("sigma_max", 1e-9, 80.0, "highest σ of the grid, lowered to the network's own maximum");
pub(super) const RHO: ParamDef = number("rho", 1e-9, 7.0, "ρ of the σ discretisation (EDM Eq. 5)");

/// The entry's σ range, checked (the grid runs from `sigma_max` down to `sigma_min`).
pub(super) fn sigma_range(a: &Args) -> Result<(f64, f64)> {
    let (sigma_min, sigma_max) = (a.f64("sigma_min")?, a.f64("sigma_max")?);
    if sigma_min >= sigma_max {
        return Err(a.error(format!("sigma_min={sigma_min} must be below sigma_max={sigma_max}")));
    }
    Ok((sigma_min, sigma_max))
}

/// EDM clamps its σ range to the network's (`max(sigma_min, net.sigma_min)`, …).
pub(super) fn clamp_to_model(model: &Counted, sigma_min: f64, sigma_max: f64) -> (f64, f64) {
    let (lo, hi) = model.sigma_range();
    (sigma_min.max(lo), sigma_max.min(hi))
}

const fn choice(name: &'static str, allowed: &'static [&'static str], help: &'static str) -> ParamDef {
    ParamDef { name, kind: ParamKind::Choice { allowed, default: allowed[0] }, help, diffusers: None }
}

const EDM_RANGE: [ParamDef; 2] = [
    ParamDef { name: "sigma_min", kind: ParamKind::FloatOrAuto { min: 1e-9, max: f64::INFINITY }, help: "lowest σ of the grid (auto: 0.002; EDM's defaults for the other time steps: vp σ(ε_s), ve 0.02, iddpm 0.002), raised to the network's own minimum", diffusers: None },
    ParamDef { name: "sigma_max", kind: ParamKind::FloatOrAuto { min: 1e-9, max: f64::INFINITY }, help: "highest σ of the grid (auto: 80; vp σ(1) ≈ 152, ve 100, iddpm 81), lowered to the network's own maximum", diffusers: None },
];

const EDM_PARAMS: &[ParamDef] = &[
    EDM_RANGE[0],
    EDM_RANGE[1],
    RHO,
    number("s_churn", 0.0, 0.0, "total churn S_churn: γ_i = min(S_churn/S, √2−1) (0: deterministic)"),
    number("s_tmin", 0.0, 0.0, "churn only for σ ≥ S_tmin"),
    ParamDef { name: "s_tmax", kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 1e30 }, help: "churn only for σ ≤ S_tmax (default: no limit)", diffusers: None },
    number("s_noise", 0.0, 1.0, "noise inflation S_noise"),
    choice("discretization", Discretization::NAMES, "time steps (EDM Table 1): edm (Eq. 5 with ρ), vp (uniform t from 1 to ε_s), ve (geometric σ), iddpm (levels of iDDPM's cosine schedule, as DDIM)"),
    choice("sigma_schedule", SigmaSchedule::NAMES, "σ(t) (EDM Table 1): linear σ = t, vp √(e^(½β_d t² + β_min t) − 1), ve √t"),
    choice("scaling", Scaling::NAMES, "s(t) (EDM Table 1): none, or vp 1/√(1 + σ²)"),
    number("epsilon_s", 1e-9, 1e-3, "VP's end time ε_s (vp time steps and schedule)"),
    number("c_1", 0.0, 0.001, "iDDPM's clip C_1 of the ᾱ ratios"),
    number("c_2", 0.0, 0.008, "iDDPM's cosine offset C_2"),
    ParamDef { name: "m", kind: ParamKind::Int { min: 1, max: 100_000, default: 1000 }, help: "iDDPM's number of levels M", diffusers: None },
];

const EDM_HEUN_PARAMS: &[ParamDef] = &{
    let mut p = [EDM_PARAMS[0]; EDM_PARAMS.len() + 1];
    let mut i = 0;
    while i < EDM_PARAMS.len() {
        p[i] = EDM_PARAMS[i];
        i += 1;
    }
    p[i] = ParamDef { name: "alpha", kind: ParamKind::Float { min: 1e-9, max: 1.0, default: 1.0 }, help: "Heun's intermediate point t + α·h (EDM Table 1; 1: Heun's method)", diffusers: None };
    p
};

fn build(a: &Args, second_order: bool) -> Result<Box<dyn Sampler>> {
    // Choice values were checked against the definition's names.
    let unknown = |key: &str| BenchError::Internal(format!("{}: {key} outside its choices", a.def.name));
    let discretization = Discretization::parse(a.str("discretization")?).ok_or_else(|| unknown("discretization"))?;
    let epsilon_s = a.f64("epsilon_s")?;
    if epsilon_s >= 1.0 {
        return Err(a.error(format!("epsilon_s={epsilon_s} must be below 1 (VP's time runs from 1 down to ε_s)")));
    }
    let (lo, hi) = discretization.default_range(epsilon_s);
    let (sigma_min, sigma_max) = (a.f64_or_auto("sigma_min")?.unwrap_or(lo), a.f64_or_auto("sigma_max")?.unwrap_or(hi));
    if sigma_min >= sigma_max {
        return Err(a.error(format!("sigma_min={sigma_min} must be below sigma_max={sigma_max}")));
    }
    let opts = EdmSamplerOptions {
        num_steps: a.steps,
        sigma_min,
        sigma_max,
        rho: a.f64("rho")?,
        s_churn: a.f64("s_churn")?,
        s_min: a.f64("s_tmin")?,
        s_max: a.f64("s_tmax")?,
        s_noise: a.f64("s_noise")?,
        second_order,
        discretization,
        schedule: SigmaSchedule::parse(a.str("sigma_schedule")?).ok_or_else(|| unknown("sigma_schedule"))?,
        scaling: Scaling::parse(a.str("scaling")?).ok_or_else(|| unknown("scaling"))?,
        alpha: if second_order { a.f64("alpha")? } else { 1.0 },
        epsilon_s,
        c_1: a.f64("c_1")?,
        c_2: a.f64("c_2")?,
        m: a.usize("m")?,
    };
    // An iDDPM grid with no level in range is refused now, not when the cell runs.
    opts.ablation_calls(&|s| s.shallow_clone()).map_err(|e| a.error(e))?;
    Ok(Box::new(EdmSampler { name: a.def.name, opts }))
}

pub static EDM_HEUN: SamplerDef = SamplerDef {
    name: "edm_heun",
    params: EDM_HEUN_PARAMS,
    skips: &[Skip::Edm],
    default_skip: Skip::Edm,
    nfe: "2S−1 (last step Euler to σ=0)",
    end_point: "σ=0",
    reference: "Karras et al. 2022 Alg. 2 and Table 1; NVlabs/edm generate.py edm_sampler / ablation_sampler",
    predictions: &[Prediction::Sample],
    note: "the state is fp64 as in EDM; Table 1's VP sampler is discretization/sigma_schedule/scaling vp, VE ve/ve/none, DDIM on iDDPM iddpm/linear/none",
    eta: None,
    variant: None,
    build: |a| build(a, true),
};

pub static EDM_EULER: SamplerDef = SamplerDef {
    name: "edm_euler",
    nfe: "S",
    reference: "Karras et al. 2022 Alg. 2 without the 2nd-order correction; NVlabs/edm edm_sampler / ablation_sampler(solver='euler')",
    params: EDM_PARAMS,
    build: |a| build(a, false),
    ..EDM_HEUN
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::oracle::GaussianOracle;
    use crate::models::{Denoiser, NoiseSpace};
    use crate::sampling::{build_from_text, exact, GlobalRng};
    use crate::schedule::NoiseSchedule;
    use tch::Kind;

    fn oracle(mean: f64, std: f64) -> GaussianOracle {
        let t = |v: f64| Tensor::from(v).view([1, 1, 1]);
        GaussianOracle::new(NoiseSchedule::ddpm_linear(), t(mean), t(std)).in_space(NoiseSpace::Sigma)
    }

    /// On Gaussian data EDM's denoiser is exact, so the deterministic samplers' error is pure
    /// discretisation. FD is quadratic in the output-moment error, so doubling S divides it by
    /// ≈4 for Euler (1st order) and by ≈16 for Heun (2nd order; its last step to σ = 0 is Euler,
    /// which is why the bound is 8, not 16). Values cross-checked with a numpy transcription of
    /// EDM's loop: Heun 16/32 steps 1.3057e-3/6.506e-5, Euler 7.447e-3/1.922e-3.
    #[test]
    fn heun_is_second_order_and_euler_first_on_the_exact_denoiser() {
        let o = oracle(0.3, 0.5);
        let s = &o.schedule;
        let fd = |name: &str, steps: usize| exact::exact_fd(build_from_text(name, &[], steps, s).unwrap().as_ref(), &o).unwrap();
        let (h16, h32, e16, e32) = (fd("edm_heun", 16), fd("edm_heun", 32), fd("edm_euler", 16), fd("edm_euler", 32));
        assert!((h16 / 1.3056678205409e-3 - 1.0).abs() < 1e-6, "heun 16: {h16:e}");
        assert!(h16 / h32 > 16.0 && (3.5..4.5).contains(&(e16 / e32)), "heun {h16:e} → {h32:e}, euler {e16:e} → {e32:e}");
        assert!(h32 < e32 / 10.0);
    }

    #[test]
    fn counts_and_labels_follow_eq_5() {
        let s = build_from_text("edm_heun", &[], 18, &NoiseSchedule::ddpm_linear()).unwrap();
        assert_eq!(s.nfe(), 35);
        let l = s.labels();
        assert_eq!((l.len(), l[0]), (35, 80.0));
        assert!((l[34] - 0.002).abs() < 1e-15, "{}", l[34]);
        let e = build_from_text("edm_euler", &[("sigma_max", "10")], 4, &NoiseSchedule::ddpm_linear()).unwrap();
        assert!(e.nfe() == 4 && (e.labels()[0] - 10.0).abs() < 1e-14);
        let bad = build_from_text("edm_heun", &[("sigma_min", "90")], 4, &NoiseSchedule::ddpm_linear());
        assert_eq!(bad.err().map(|e| e.exit_code()), Some(2));
    }

    /// EDM's general form with EDM's own choices is EDM's sampler (to rounding); Table 1's
    /// default σ ranges; an iDDPM grid with no level in range is a user error at build time.
    #[test]
    fn general_form_reduces_to_edm_and_fills_table_1_ranges() {
        use crate::models::edm::sampler::{ablation_sampler, Discretization};
        let o = oracle(0.3, 0.5);
        let den = |x: &Tensor, s: f64| -> Result<Tensor> { o.forward(x, &Tensor::from_slice(&[s]).repeat([x.size()[0]]), None) };
        let z = Tensor::from_slice(&[0.4f64, -1.1, 2.0]).view([3, 1, 1, 1]);
        let opts = EdmSamplerOptions { num_steps: 7, s_churn: 5.0, ..Default::default() };
        let mut noise = |i: usize, x: &Tensor| Ok(x.ones_like() * (0.1 * i as f64));
        let (a, na) = edm_sampler(&mut { den }, &|s| s.shallow_clone(), &z, &opts, &mut noise).unwrap();
        let (b, nb) = ablation_sampler(&mut { den }, &|s| s.shallow_clone(), &z, &opts, &mut noise).unwrap();
        let d = (&a - &b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
        assert!(na == nb && na == 13 && d < 1e-13, "{d:e}");
        // VP: σ(ε_s) and σ(1) of β_d = 19.9, β_min = 0.1.
        let (lo, hi) = Discretization::Vp.default_range(1e-3);
        assert!((lo - ((0.5 * 19.9 * 1e-6 + 1e-4f64).exp() - 1.0).sqrt()).abs() < 1e-15 && (hi - (10.05f64.exp() - 1.0).sqrt()).abs() < 1e-9, "{lo} {hi}");
        let vp = build_from_text("edm_euler", &[("discretization", "vp")], 5, &NoiseSchedule::ddpm_linear()).unwrap();
        let l = vp.labels();
        assert!((l[0] - hi).abs() < 1e-9 * hi && (l[4] - lo).abs() < 1e-12, "{l:?}");
        let ve = build_from_text("edm_heun", &[("discretization", "ve"), ("sigma_schedule", "ve")], 3, &NoiseSchedule::ddpm_linear()).unwrap();
        assert_eq!(ve.nfe(), 5);
        assert!((ve.labels()[0] - 100.0).abs() < 1e-12 && (ve.labels()[4] - 0.02).abs() < 1e-14, "{:?}", ve.labels());
        let none = build_from_text("edm_euler", &[("discretization", "iddpm"), ("sigma_min", "500"), ("sigma_max", "600")], 4, &NoiseSchedule::ddpm_linear());
        let e = none.err().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("no iDDPM level"), "{e}");
        // α belongs to Heun only.
        assert!(build_from_text("edm_euler", &[("alpha", "0.5")], 4, &NoiseSchedule::ddpm_linear()).is_err());
    }

    /// Churn draws noise at every step from the sampler's stream and keeps the output's dtype.
    #[test]
    fn churned_sampling_runs_in_the_inputs_dtype() {
        let o = oracle(0.0, 1.0);
        let s = build_from_text("edm_heun", &[("s_churn", "10")], 5, &o.schedule).unwrap();
        let model = Counted::new(&o, Prediction::Sample);
        crate::test_rng::seed(5);
        let z = Tensor::randn([2, 1, 1, 1], (Kind::Float, tch::Device::Cpu));
        let x = s.sample(&model, z, &mut GlobalRng).unwrap();
        assert_eq!((x.kind(), model.nfe()), (Kind::Float, 9));
    }
}
