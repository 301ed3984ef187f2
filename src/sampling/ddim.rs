//! DDIM (Song et al. 2021) with η ≥ 0, DDPM ancestral sampling (= DDIM η = 1), and the DDIM
//! paper's σ̂ row (`ddpm_large`), on a discrete label grid.
use super::{check_params, ddim_sigma, ddim_step, param, x0_from_eps, Counted, EndPoint, NoiseSource, Sampler, SamplerInfo, SamplerParams};
use crate::schedule::NoiseSchedule;
use crate::timesteps::{Grid, GridConfig, PrevRule, Skip};
use crate::{BenchError, Result};
use tch::Tensor;

/// Which update the sampler applies at each transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DdimRule {
    /// DDIM eq. 12 with σ_t(η) of eq. 16; `ddpm` is η = 1.
    Generalized { eta: f64 },
    /// DDIM repo `ddpm_steps`: clamped x̂0, noise std √β_t.
    LargeVariance,
}

pub struct Ddim {
    name: &'static str,
    rule: DdimRule,
    grid: Grid,
}

impl Ddim {
    pub fn new(name: &'static str, rule: DdimRule, schedule: &NoiseSchedule, cfg: &GridConfig) -> Result<Self> {
        if let DdimRule::Generalized { eta } = rule {
            if !(eta >= 0.0 && eta.is_finite()) {
                return Err(BenchError::user(format!("sampler {name}: eta={eta} is not allowed (need a finite eta ≥ 0)")));
            }
        }
        Ok(Ddim { name, rule, grid: Grid::new(schedule, cfg)? })
    }
    pub fn grid(&self) -> &Grid {
        &self.grid
    }
}

/// DDIM eq. 12 (repo `functions/denoising.py::generalized_steps`): no x̂0 clipping; noise
/// only where σ_t > 0, so repeated labels and the step to ᾱ = 1 draw none.
fn generalized_step(x: &Tensor, eps: &Tensor, a: f64, a_prev: f64, eta: f64, step: usize, noise: &mut dyn NoiseSource) -> Tensor {
    let z = (ddim_sigma(a, a_prev, eta) > 0.0).then(|| noise.noise(step, x));
    ddim_step(x, eps, a, a_prev, eta, z.as_ref())
}

/// DDIM repo `ddpm_steps` (the paper's σ̂ row): x̂0 clamped to [−1, 1], DDPM posterior mean
/// (Ho et al. eq. 7) with β_t = 1 − ᾱ_t/ᾱ_prev, noise variance β_t, none at label 0.
fn large_variance_step(x: &Tensor, eps: &Tensor, a: f64, a_prev: f64, label: i64, step: usize, noise: &mut dyn NoiseSource) -> Tensor {
    let beta = 1.0 - a / a_prev;
    let x0 = x0_from_eps(x, eps, a).clamp(-1.0, 1.0);
    let mean = (x0 * (a_prev.sqrt() * beta) + x * ((1.0 - beta).sqrt() * (1.0 - a_prev))) / (1.0 - a);
    if label == 0 || beta <= 0.0 {
        mean
    } else {
        mean + noise.noise(step, x) * beta.sqrt()
    }
}

impl Sampler for Ddim {
    fn name(&self) -> &'static str {
        self.name
    }
    fn nfe(&self) -> usize {
        self.grid.pairs.len()
    }
    fn labels(&self) -> Vec<f64> {
        self.grid.pairs.iter().map(|&(t, _)| t as f64).collect()
    }
    fn end_point(&self) -> EndPoint {
        if self.grid.ends_at_one() {
            EndPoint::AlphaBarOne
        } else {
            EndPoint::AlphaBarZero
        }
    }
    fn sample(&self, model: &Counted, x_t: Tensor, noise: &mut dyn NoiseSource) -> Tensor {
        let mut x = x_t;
        for (k, &(t, prev)) in self.grid.pairs.iter().enumerate() {
            let (a, a_prev) = (self.grid.alpha_bar(t), self.grid.alpha_bar(prev));
            let eps = model.eps(&x, t as f64);
            x = match self.rule {
                DdimRule::Generalized { eta } => generalized_step(&x, &eps, a, a_prev, eta, k, noise),
                DdimRule::LargeVariance => large_variance_step(&x, &eps, a, a_prev, t, k, noise),
            };
        }
        x
    }
}

const SKIP: (&str, &str, &str) = ("skip", "quadratic", "uniform, quadratic, leading, trailing, linspace");
const STEPS_OFFSET: (&str, &str, &str) = ("steps_offset", "0", "diffusers steps_offset (leading only)");
const PREV: (&str, &str, &str) = ("prev", "next_label", "next_label (DDIM repo, DDPMScheduler) or stride (DDIMScheduler: t − T//S)");
const ALPHA_TO_ONE: (&str, &str, &str) = ("alpha_to_one", "true", "end at ᾱ=1 (DDIM repo), false: ᾱ_0 (diffusers set_alpha_to_one=False)");

pub const INFOS: &[SamplerInfo] = &[
    SamplerInfo {
        name: "ddim",
        params: &[("eta", "0", "η ≥ 0 of DDIM eq. 16; 1 = DDPM posterior variance"), SKIP, STEPS_OFFSET, PREV, ALPHA_TO_ONE],
        default_skip: "quadratic",
        nfe: "S (labels of the skip rule; uniform with S ∤ T gives more)",
        end_point: "ᾱ=1 (alpha_to_one=false: ᾱ_0)",
        reference: "Song et al. 2021 eq. 12; ermongroup/ddim functions/denoising.py generalized_steps (quadratic on CIFAR10, uniform on CelebA)",
    },
    SamplerInfo {
        name: "ddpm",
        params: &[SKIP, STEPS_OFFSET, PREV, ALPHA_TO_ONE],
        default_skip: "quadratic",
        nfe: "S",
        end_point: "ᾱ=1",
        reference: "Ho et al. 2020 eq. 6-7 (posterior variance) = DDIM η=1; diffusers DDPMScheduler (variance fixed_small, clip_sample=False)",
    },
    SamplerInfo {
        name: "ddpm_large",
        params: &[SKIP, STEPS_OFFSET, PREV, ALPHA_TO_ONE],
        default_skip: "quadratic",
        nfe: "S",
        end_point: "ᾱ=1, no noise at label 0",
        reference: "DDIM paper Table 1 σ̂ row; ermongroup/ddim functions/denoising.py ddpm_steps (x̂0 clamped, noise std √β)",
    },
];

/// Reads skip/steps_offset/prev/alpha_to_one with the family's defaults.
pub(crate) fn grid_config(name: &str, params: &SamplerParams, steps: usize, skip: Skip, prev: PrevRule, alpha_to_one: bool) -> Result<GridConfig> {
    let skip = match params.get("skip") {
        Some(s) => Skip::parse(s.trim())?,
        None => skip,
    };
    let prev = match params.get("prev").map(|s| s.trim()) {
        None => prev,
        Some("next_label") => PrevRule::NextLabel,
        Some("stride") => PrevRule::Stride,
        Some(other) => return Err(BenchError::user(format!("sampler {name}: prev={other:?} is not allowed; allowed: next_label, stride"))),
    };
    Ok(GridConfig {
        steps,
        skip,
        steps_offset: param(name, params, "steps_offset", 0usize)?,
        prev,
        alpha_to_one: param(name, params, "alpha_to_one", alpha_to_one)?,
    })
}

pub fn build(name: &str, params: &SamplerParams, steps: usize, schedule: &NoiseSchedule) -> Result<Option<Box<dyn Sampler>>> {
    let grid_keys = ["skip", "steps_offset", "prev", "alpha_to_one"];
    let s: Box<dyn Sampler> = match name {
        "ddim" => {
            check_params(name, params, &["eta", "skip", "steps_offset", "prev", "alpha_to_one"])?;
            let eta = param(name, params, "eta", 0.0f64)?;
            let cfg = grid_config(name, params, steps, Skip::Quadratic, PrevRule::NextLabel, true)?;
            Box::new(Ddim::new("ddim", DdimRule::Generalized { eta }, schedule, &cfg)?)
        }
        "ddpm" => {
            check_params(name, params, &grid_keys)?;
            let cfg = grid_config(name, params, steps, Skip::Quadratic, PrevRule::NextLabel, true)?;
            Box::new(Ddim::new("ddpm", DdimRule::Generalized { eta: 1.0 }, schedule, &cfg)?)
        }
        "ddpm_large" => {
            check_params(name, params, &grid_keys)?;
            let cfg = grid_config(name, params, steps, Skip::Quadratic, PrevRule::NextLabel, true)?;
            Box::new(Ddim::new("ddpm_large", DdimRule::LargeVariance, schedule, &cfg)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Ho et al. eq. 7: μ̃ = √ᾱ' β/(1−ᾱ) x0 + √α (1−ᾱ')/(1−ᾱ) x, σ̃² = (1−ᾱ')/(1−ᾱ) β.
    #[test]
    fn eta_one_is_the_ddpm_posterior() {
        let s = NoiseSchedule::ddpm_linear();
        let (a, ap) = (s.alpha_bar(500), s.alpha_bar(450));
        let x = Tensor::from_slice(&[0.7f64, -1.3]);
        let e = Tensor::from_slice(&[0.2f64, 0.9]);
        let z = Tensor::from_slice(&[1.0f64, -0.5]);
        struct Fixed(Tensor);
        impl NoiseSource for Fixed {
            fn noise(&mut self, _: usize, _: &Tensor) -> Tensor {
                self.0.shallow_clone()
            }
        }
        let got = generalized_step(&x, &e, a, ap, 1.0, 0, &mut Fixed(z.shallow_clone()));
        let beta = 1.0 - a / ap;
        let x0 = x0_from_eps(&x, &e, a);
        let mu = &x0 * (ap.sqrt() * beta / (1.0 - a)) + &x * ((1.0 - beta).sqrt() * (1.0 - ap) / (1.0 - a));
        let want = mu + &z * ((1.0 - ap) / (1.0 - a) * beta).sqrt();
        let err = (got - want).abs().max().double_value(&[]);
        assert!(err < 1e-14, "{err}");
    }

    #[test]
    fn large_variance_step_clamps_and_skips_noise_at_label_zero() {
        struct Ones;
        impl NoiseSource for Ones {
            fn noise(&mut self, _: usize, like: &Tensor) -> Tensor {
                like.ones_like()
            }
        }
        let s = NoiseSchedule::ddpm_linear();
        let x = Tensor::from_slice(&[3.0f64]);
        let e = Tensor::zeros([1], (Kind::Double, Device::Cpu));
        // x̂0 = 3/√ᾱ_0 is clamped to 1; label 0 → ᾱ=1: mean = x̂0 exactly, no noise.
        let out = large_variance_step(&x, &e, s.alpha_bar(0), 1.0, 0, 0, &mut Ones).double_value(&[0]);
        assert!((out - 1.0).abs() < 1e-12, "{out}");
        let (a, ap) = (s.alpha_bar(100), s.alpha_bar(50));
        let with_noise = large_variance_step(&x, &e, a, ap, 100, 0, &mut Ones).double_value(&[0]);
        let without = large_variance_step(&x, &e, a, ap, 0, 0, &mut Ones).double_value(&[0]);
        assert!((with_noise - without - (1.0 - a / ap).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn builder_rejects_unknown_params_and_negative_eta() {
        let s = NoiseSchedule::ddpm_linear();
        let mut p = SamplerParams::new();
        p.insert("etta".into(), "0.5".into());
        assert_eq!(build("ddim", &p, 10, &s).err().map(|e| e.exit_code()), Some(2));
        let mut p = SamplerParams::new();
        p.insert("eta".into(), "-1".into());
        assert_eq!(build("ddim", &p, 10, &s).err().map(|e| e.exit_code()), Some(2));
        let d = build("ddim", &SamplerParams::new(), 10, &s).unwrap().unwrap();
        assert_eq!(d.labels(), vec![800.0, 632.0, 483.0, 355.0, 246.0, 158.0, 88.0, 39.0, 9.0, 0.0]);
        assert_eq!(d.end_point(), EndPoint::AlphaBarOne);
    }
}
