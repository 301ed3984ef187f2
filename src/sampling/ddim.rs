//! DDIM (Song et al. 2021) with η ≥ 0, DDPM ancestral sampling (= DDIM η = 1), and the DDIM
//! paper's σ̂ row (`ddpm_large`), on a discrete label grid.
use super::def::{Args, EtaColumn, ParamDef, ParamKind, SamplerDef, ALL_PREDICTIONS, RESPACED_SKIPS};
use super::{ddim_sigma, ddim_update, x0_from_eps, Counted, EndPoint, Node, NoiseSource, Output, Sampler, X0Clip};
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
    /// DDPM posterior mean with the model's learned variance.
    Learned(LearnedVariance),
}

/// How a learned-variance model's variance values v become the step's log variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LearnedVariance {
    /// log σ² = f log β_t + (1 − f) log β̃_t with f = (v + 1)/2 (Nichol & Dhariwal 2021 eq. 15;
    /// guided-diffusion `LEARNED_RANGE`, diffusers `learned_range`).
    Range,
    /// log σ² = v (guided-diffusion `LEARNED`).
    Log,
}

pub struct Ddim {
    name: &'static str,
    rule: DdimRule,
    grid: Grid,
    clip: X0Clip,
    /// With clipping: step with ε̂ recomputed from the clipped x̂0 (DDPMScheduler always;
    /// DDIMScheduler with `use_clipped_model_output`) rather than the model's ε̂.
    clipped_eps: bool,
}

impl Ddim {
    pub fn new(name: &'static str, rule: DdimRule, schedule: &NoiseSchedule, cfg: &GridConfig) -> Result<Self> {
        if let DdimRule::Generalized { eta } = rule {
            if !(eta >= 0.0 && eta.is_finite()) {
                return Err(BenchError::user(format!("sampler {name}: eta={eta} is not allowed (need a finite eta ≥ 0)")));
            }
        }
        Ok(Ddim { name, rule, grid: Grid::new(schedule, cfg)?, clip: X0Clip::OFF, clipped_eps: false })
    }
    /// x̂0 clipping / thresholding before the step; `clipped_eps`: see the field.
    pub fn with_clip(mut self, clip: X0Clip, clipped_eps: bool) -> Self {
        self.clip = clip;
        self.clipped_eps = clipped_eps;
        self
    }
    pub fn grid(&self) -> &Grid {
        &self.grid
    }
}

/// DDIM eq. 12 (repo `functions/denoising.py::generalized_steps`; diffusers `DDIMScheduler.step`
/// with x̂0 clipping); noise only where σ_t > 0, so repeated labels and the step to ᾱ = 1 draw none.
fn generalized_step(x: &Tensor, x0: &Tensor, eps: &Tensor, a: f64, a_prev: f64, eta: f64, step: usize, noise: &mut dyn NoiseSource) -> Tensor {
    let z = (ddim_sigma(a, a_prev, eta) > 0.0).then(|| noise.noise(step, x));
    ddim_update(x0, eps, a, a_prev, eta, z.as_ref())
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

/// diffusers `DDPMScheduler.step` with `_get_variance` for `learned_range` (guided-diffusion
/// `p_mean_variance`): the posterior mean (Ho et al. eq. 7) plus exp(½ log σ²) z, noise only at
/// labels > 0. β̃_t is clamped to ≥ 1e-20 before its log, as diffusers does.
#[allow(clippy::too_many_arguments)]
fn learned_variance_step(
    x: &Tensor,
    x0: &Tensor,
    eps: &Tensor,
    v: &Tensor,
    kind: LearnedVariance,
    (a, a_prev): (f64, f64),
    label: i64,
    step: usize,
    noise: &mut dyn NoiseSource,
) -> Tensor {
    let mean = ddim_update(x0, eps, a, a_prev, 1.0, None);
    let beta = 1.0 - a / a_prev;
    if label <= 0 || beta <= 0.0 {
        return mean;
    }
    let posterior = ((1.0 - a_prev) / (1.0 - a) * beta).max(1e-20);
    let log_var = match kind {
        LearnedVariance::Range => {
            let frac = (v + 1.0) / 2.0;
            &frac * beta.ln() + (1.0 - frac) * posterior.ln()
        }
        LearnedVariance::Log => v.shallow_clone(),
    };
    mean + noise.noise(step, x) * (log_var * 0.5).exp()
}

impl Ddim {
    /// x̂0 (clipped if asked) and the ε̂ the step uses with it.
    fn x0_and_eps(&self, out: &Output, x: &Tensor, a: f64) -> (Tensor, Tensor) {
        if self.clip.is_off() {
            let eps = out.eps();
            // A v- or x0-model's x̂0 comes straight from its output, as diffusers computes it;
            // through ε̂ it would divide by √ᾱ = 0 at a zero-terminal-SNR label.
            let x0 = if out.prediction == crate::models::Prediction::Epsilon { x0_from_eps(x, &eps, a) } else { out.x0() };
            return (x0, eps);
        }
        let x0 = out.x0_clipped(&self.clip);
        let eps = if self.clipped_eps { super::eps_from_x0(x, &x0, a) } else { out.eps() };
        (x0, eps)
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
    fn sample(&self, model: &Counted, x_t: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let mut x = x_t;
        for (k, &(t, prev)) in self.grid.pairs.iter().enumerate() {
            let (a, a_prev) = (self.grid.alpha_bar(t), self.grid.alpha_bar(prev));
            let out = model.call(&x, &Node::from_alpha_bar(t as f64, a))?;
            x = match self.rule {
                DdimRule::Generalized { eta } => {
                    let (x0, eps) = self.x0_and_eps(&out, &x, a);
                    generalized_step(&x, &x0, &eps, a, a_prev, eta, k, noise)
                }
                DdimRule::LargeVariance => large_variance_step(&x, &out.eps(), a, a_prev, t, k, noise),
                DdimRule::Learned(kind) => {
                    let v = out.variance.as_ref().ok_or_else(|| {
                        BenchError::user(format!(
                            "sampler {}: variance_type {} needs a model that learns its variance (out_channels = 2 × in_channels); this one returns none",
                            self.name,
                            match kind {
                                LearnedVariance::Range => "learned_range",
                                LearnedVariance::Log => "learned",
                            }
                        ))
                    })?;
                    let (x0, eps) = self.x0_and_eps(&out, &x, a);
                    learned_variance_step(&x, &x0, &eps, v, kind, (a, a_prev), t, k, noise)
                }
            };
        }
        Ok(x)
    }
}

pub const STEPS_OFFSET: ParamDef = ParamDef {
    name: "steps_offset",
    kind: ParamKind::Int { min: 0, max: 1_000_000, default: 0 },
    help: "added to every label of skip=leading (Stable Diffusion configs use 1)",
    diffusers: Some("steps_offset"),
};
const PREV: ParamDef = ParamDef {
    name: "prev",
    kind: ParamKind::Choice { allowed: &["next_label", "stride"], default: "next_label" },
    help: "level each step goes to: the next label (DDIM repo, DDPMScheduler) or t − T//S (DDIMScheduler)",
    diffusers: None,
};
/// guided-diffusion's `timestep_respacing` with several sections, for `skip: sections`.
const SECTION_COUNTS: ParamDef = ParamDef {
    name: "section_counts",
    kind: ParamKind::IntList,
    help: "with skip=sections: labels per equal section of [0, T), as guided-diffusion's \"10,10,20\" (summing to steps); empty: one section",
    diffusers: None,
};
pub const ALPHA_TO_ONE: ParamDef = ParamDef {
    name: "alpha_to_one",
    kind: ParamKind::Bool { default: true },
    help: "end at ᾱ=1 (DDIM repo); false ends at ᾱ_0 (diffusers set_alpha_to_one=False)",
    diffusers: Some("set_alpha_to_one"),
};
pub const CLIP_SAMPLE: ParamDef = ParamDef {
    name: "clip_sample",
    kind: ParamKind::Bool { default: false },
    help: "clip x̂0 to ±clip_sample_range (diffusers' DDIM/DDPMScheduler default to true)",
    diffusers: Some("clip_sample"),
};
pub const CLIP_SAMPLE_RANGE: ParamDef = ParamDef {
    name: "clip_sample_range",
    kind: ParamKind::Float { min: 1e-12, max: f64::INFINITY, default: 1.0 },
    help: "the clip_sample bound",
    diffusers: Some("clip_sample_range"),
};
pub const THRESHOLDING: ParamDef = ParamDef {
    name: "thresholding",
    kind: ParamKind::Bool { default: false },
    help: "dynamic thresholding of x̂0 (Imagen §2.3); wins over clip_sample",
    diffusers: Some("thresholding"),
};
pub const DYNAMIC_THRESHOLDING_RATIO: ParamDef = ParamDef {
    name: "dynamic_thresholding_ratio",
    kind: ParamKind::Float { min: 0.0, max: 1.0, default: 0.995 },
    help: "quantile of |x̂0| per sample used as the threshold",
    diffusers: Some("dynamic_thresholding_ratio"),
};
pub const SAMPLE_MAX_VALUE: ParamDef = ParamDef {
    name: "sample_max_value",
    kind: ParamKind::Float { min: 1.0, max: f64::INFINITY, default: 1.0 },
    help: "upper bound of the dynamic threshold",
    diffusers: Some("sample_max_value"),
};
const ETA: ParamDef = ParamDef {
    name: "eta",
    kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 0.0 },
    help: "η of DDIM eq. 16; 1 = DDPM posterior variance",
    diffusers: Some("eta"),
};

pub static DDIM: SamplerDef = SamplerDef {
    name: "ddim",
    params: &[
        ETA,
        STEPS_OFFSET,
        PREV,
        ALPHA_TO_ONE,
        SECTION_COUNTS,
        CLIP_SAMPLE,
        CLIP_SAMPLE_RANGE,
        THRESHOLDING,
        DYNAMIC_THRESHOLDING_RATIO,
        SAMPLE_MAX_VALUE,
        ParamDef {
            name: "use_clipped_model_output",
            kind: ParamKind::Bool { default: false },
            help: "with clipping, step with ε̂ recomputed from the clipped x̂0 (GLIDE) instead of the model's ε̂",
            diffusers: Some("use_clipped_model_output"),
        },
    ],
    skips: RESPACED_SKIPS,
    default_skip: Skip::Quadratic,
    nfe: "S (labels of the skip rule; uniform with S ∤ T gives more)",
    end_point: "ᾱ=1 (alpha_to_one=false: ᾱ_0)",
    reference: "Song et al. 2021 eq. 12; ermongroup/ddim functions/denoising.py generalized_steps (quadratic on CIFAR10, uniform on CelebA); diffusers DDIMScheduler",
    predictions: ALL_PREDICTIONS,
    note: "",
    eta: Some(EtaColumn::Param),
    variant: None,
    build: |a| {
        let cfg = grid_config(a, true)?;
        let ddim = Ddim::new("ddim", DdimRule::Generalized { eta: a.f64("eta")? }, a.schedule, &cfg)?;
        Ok(Box::new(ddim.with_clip(X0Clip::from_args(a)?, a.bool("use_clipped_model_output")?)))
    },
};

pub static DDPM: SamplerDef = SamplerDef {
    name: "ddpm",
    params: &[
        STEPS_OFFSET,
        PREV,
        ALPHA_TO_ONE,
        SECTION_COUNTS,
        CLIP_SAMPLE,
        CLIP_SAMPLE_RANGE,
        THRESHOLDING,
        DYNAMIC_THRESHOLDING_RATIO,
        SAMPLE_MAX_VALUE,
        ParamDef {
            name: "variance_type",
            kind: ParamKind::Choice { allowed: &["fixed_small", "learned_range", "learned"], default: "fixed_small" },
            help: "fixed_small: posterior β̃_t; learned_range: the model's v interpolates log β_t and log β̃_t (iDDPM eq. 15); learned: v is log σ² (guided-diffusion LEARNED; diffusers' learned reads v as σ² instead). The learned ones need a learned-variance model",
            diffusers: Some("variance_type"),
        },
    ],
    skips: RESPACED_SKIPS,
    default_skip: Skip::Quadratic,
    nfe: "S",
    end_point: "ᾱ=1",
    reference: "Ho et al. 2020 eq. 6-7 (posterior variance) = DDIM η=1; diffusers DDPMScheduler (variance_type fixed_small, learned_range); Nichol & Dhariwal 2021 eq. 15",
    predictions: ALL_PREDICTIONS,
    note: "",
    eta: Some(EtaColumn::Fixed(1.0)),
    variant: None,
    build: |a| {
        let cfg = grid_config(a, true)?;
        let rule = match a.str("variance_type")? {
            "learned_range" => DdimRule::Learned(LearnedVariance::Range),
            "learned" => DdimRule::Learned(LearnedVariance::Log),
            _ => DdimRule::Generalized { eta: 1.0 },
        };
        // DDPMScheduler's posterior mean from the clipped x̂0 and x_t is DDIM η=1 with ε̂ from that x̂0.
        Ok(Box::new(Ddim::new("ddpm", rule, a.schedule, &cfg)?.with_clip(X0Clip::from_args(a)?, true)))
    },
};

pub static DDPM_LARGE: SamplerDef = SamplerDef {
    name: "ddpm_large",
    params: &[STEPS_OFFSET, PREV, ALPHA_TO_ONE, SECTION_COUNTS],
    skips: RESPACED_SKIPS,
    default_skip: Skip::Quadratic,
    nfe: "S",
    end_point: "ᾱ=1, no noise at label 0",
    reference: "DDIM paper Table 1 σ̂ row; ermongroup/ddim functions/denoising.py ddpm_steps (x̂0 clamped, noise std √β)",
    predictions: ALL_PREDICTIONS,
    note: "",
    eta: None,
    variant: None,
    build: |a| {
        let cfg = grid_config(a, true)?;
        Ok(Box::new(Ddim::new("ddpm_large", DdimRule::LargeVariance, a.schedule, &cfg)?))
    },
};

/// The grid of a discrete sampler from its skip, steps_offset, prev and alpha_to_one.
pub(crate) fn grid_config(a: &Args, has_prev: bool) -> Result<GridConfig> {
    let prev = if has_prev {
        match a.str("prev")? {
            "stride" => PrevRule::Stride,
            _ => PrevRule::NextLabel,
        }
    } else {
        PrevRule::NextLabel
    };
    let sections = if a.def.param("section_counts").is_some() { a.int_list("section_counts")? } else { Vec::new() };
    Ok(GridConfig { steps: a.steps, skip: a.skip, steps_offset: a.usize("steps_offset")?, prev, alpha_to_one: a.bool("alpha_to_one")?, sections })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// guided-diffusion `space_timesteps(1000, "10,10,20")`, sorted descending (computed with its
    /// formula in Python).
    #[test]
    fn several_sections_follow_guided_diffusion() {
        let s = NoiseSchedule::ddpm_linear();
        let d = crate::sampling::build_from_text("ddim", &[("skip", "sections"), ("section_counts", "10,10,20")], 40, &s).unwrap();
        let want = [
            999, 982, 964, 947, 929, 912, 894, 877, 859, 842, 824, 807, 789, 772, 754, 737, 719, 702, 684, 667, 666, 629, 592, 555, 518, 482, 445, 408, 371, 334, 333,
            296, 259, 222, 185, 148, 111, 74, 37, 0,
        ];
        assert_eq!(d.labels(), want.iter().map(|&t| t as f64).collect::<Vec<_>>());
        for (kv, steps) in [(vec![("skip", "sections"), ("section_counts", "10,10,20")], 30), (vec![("skip", "uniform"), ("section_counts", "10,10,20")], 40)] {
            let e = crate::sampling::build_from_text("ddpm", &kv, steps, &s).err().unwrap();
            assert!(e.to_string().contains("section_counts \"10,10,20\" needs skip: sections and steps equal to their sum 40"), "{e}");
        }
    }

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
        let got = generalized_step(&x, &x0_from_eps(&x, &e, a), &e, a, ap, 1.0, 0, &mut Fixed(z.shallow_clone()));
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

    /// iDDPM eq. 15 at its ends: v = −1 is the posterior variance β̃_t (fixed_small, i.e. η = 1),
    /// v = +1 is β_t; `learned` reads v as log σ²; no noise at label 0.
    #[test]
    fn learned_variance_spans_posterior_to_beta() {
        struct Ones;
        impl NoiseSource for Ones {
            fn noise(&mut self, _: usize, like: &Tensor) -> Tensor {
                like.ones_like()
            }
        }
        let s = NoiseSchedule::ddpm_linear();
        let (a, ap) = (s.alpha_bar(500), s.alpha_bar(450));
        let x = Tensor::from_slice(&[0.7f64, -1.3]);
        let e = Tensor::from_slice(&[0.2f64, 0.9]);
        let x0 = x0_from_eps(&x, &e, a);
        let v = |c: f64| Tensor::from_slice(&[c, c]);
        let std_of = |v: &Tensor, kind, label| {
            let with = learned_variance_step(&x, &x0, &e, v, kind, (a, ap), label, 0, &mut Ones);
            let mean = ddim_update(&x0, &e, a, ap, 1.0, None);
            (with - mean).double_value(&[1])
        };
        let beta = 1.0 - a / ap;
        let posterior = (1.0 - ap) / (1.0 - a) * beta;
        // exp/log round trips in f64: a few ulps.
        let close = |got: f64, want: f64| assert!((got - want).abs() <= 1e-14 * want.abs().max(1.0), "{got} vs {want}");
        close(std_of(&v(-1.0), LearnedVariance::Range, 500), posterior.sqrt());
        close(std_of(&v(1.0), LearnedVariance::Range, 500), beta.sqrt());
        close(std_of(&v(0.0), LearnedVariance::Range, 500), (beta * posterior).powf(0.25));
        close(std_of(&v(-3.0), LearnedVariance::Log, 500), (-1.5f64).exp());
        assert_eq!(std_of(&v(1.0), LearnedVariance::Range, 0), 0.0);
        // v = −1 is the η = 1 step exactly.
        let eta1 = generalized_step(&x, &x0, &e, a, ap, 1.0, 0, &mut Ones);
        let learned = learned_variance_step(&x, &x0, &e, &v(-1.0), LearnedVariance::Range, (a, ap), 500, 0, &mut Ones);
        let err = (eta1 - learned).abs().max().double_value(&[]);
        assert!(err < 1e-14, "{err}");
    }

    #[test]
    fn learned_variance_needs_a_learned_variance_model() {
        let s = NoiseSchedule::ddpm_linear();
        let sampler = super::super::build_from_text("ddpm", &[("variance_type", "learned_range")], 5, &s).unwrap();
        let oracle = crate::models::oracle::GaussianOracle::new(
            s.clone(),
            Tensor::zeros([2], (Kind::Double, Device::Cpu)),
            Tensor::ones([2], (Kind::Double, Device::Cpu)),
        );
        let counted = Counted::new(&oracle, crate::models::Prediction::Epsilon);
        let err = sampler.sample(&counted, Tensor::zeros([1, 2], (Kind::Double, Device::Cpu)), &mut super::super::GlobalRng).err().unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("variance_type learned_range needs a model that learns its variance"), "{err}");
    }

    #[test]
    fn builder_rejects_unknown_params_and_negative_eta() {
        use crate::spec::ParamValue;
        let s = NoiseSchedule::ddpm_linear();
        let build = |kv: &[(&str, ParamValue)]| {
            let w: Vec<(String, ParamValue)> = kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            super::super::build_sampler("ddim", &w, None, 10, &s)
        };
        assert_eq!(build(&[("etta", ParamValue::Float(0.5))]).err().map(|e| e.exit_code()), Some(2));
        assert_eq!(build(&[("eta", ParamValue::Float(-1.0))]).err().map(|e| e.exit_code()), Some(2));
        let d = build(&[]).unwrap();
        assert_eq!(d.labels(), vec![800.0, 632.0, 483.0, 355.0, 246.0, 158.0, 88.0, 39.0, 9.0, 0.0]);
        assert_eq!(d.end_point(), EndPoint::AlphaBarOne);
    }
}
