//! EDM's samplers on σ-space models (Karras et al. 2022, Algorithm 2; NVlabs/edm
//! `generate.py::edm_sampler`): Heun with optional churn, and its first-order Euler form.
//!
//! The trajectory itself is [`crate::models::edm::sampler::edm_sampler`] (pinned against EDM's
//! own code); this file is its sampler definition: parameters, σ range clamped to the model's as
//! EDM does, the model's σ rounding, and noise from the per-(seed, sample, step) stream.
use super::def::{Args, ParamDef, ParamKind, SamplerDef};
use super::{Counted, EndPoint, NoiseSource, Sampler};
use crate::models::edm::sampler::{edm_sampler, edm_sigmas, EdmSamplerOptions};
use crate::models::Prediction;
use crate::timesteps::Skip;
use crate::Result;
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
        let o = &self.opts;
        let s = Vec::<f64>::try_from(edm_sigmas(o.num_steps, o.sigma_min, o.sigma_max, o.rho)).unwrap_or_default();
        let mut out = Vec::with_capacity(self.nfe());
        for (i, &sigma) in s.iter().enumerate() {
            out.push(sigma);
            if o.second_order && i + 1 < s.len() {
                out.push(s[i + 1]);
            }
        }
        out
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
        let (x, _) = edm_sampler(&mut denoise, &|s| model.round_sigma(s), &z, &opts, &mut step_noise)?;
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

const EDM_PARAMS: &[ParamDef] = &[
    SIGMA_MIN,
    SIGMA_MAX,
    RHO,
    number("s_churn", 0.0, 0.0, "total churn S_churn: γ_i = min(S_churn/S, √2−1) (0: deterministic)"),
    number("s_tmin", 0.0, 0.0, "churn only for σ ≥ S_tmin"),
    ParamDef { name: "s_tmax", kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 1e30 }, help: "churn only for σ ≤ S_tmax (default: no limit)", diffusers: None },
    number("s_noise", 0.0, 1.0, "noise inflation S_noise"),
];

fn build(a: &Args, second_order: bool) -> Result<Box<dyn Sampler>> {
    let (sigma_min, sigma_max) = sigma_range(a)?;
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
    };
    Ok(Box::new(EdmSampler { name: a.def.name, opts }))
}

pub static EDM_HEUN: SamplerDef = SamplerDef {
    name: "edm_heun",
    params: EDM_PARAMS,
    skips: &[Skip::Edm],
    default_skip: Skip::Edm,
    nfe: "2S−1 (last step Euler to σ=0)",
    end_point: "σ=0",
    reference: "Karras et al. 2022 Alg. 2; NVlabs/edm generate.py edm_sampler",
    predictions: &[Prediction::Sample],
    note: "σ-space models only (model kind edm, or an oracle with space: sigma); the state is fp64 as in EDM",
    eta: None,
    variant: None,
    build: |a| build(a, true),
};

pub static EDM_EULER: SamplerDef = SamplerDef {
    name: "edm_euler",
    nfe: "S",
    reference: "Karras et al. 2022 Alg. 2 without the 2nd-order correction; NVlabs/edm edm_sampler",
    build: |a| build(a, false),
    ..EDM_HEUN
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::oracle::GaussianOracle;
    use crate::models::NoiseSpace;
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
