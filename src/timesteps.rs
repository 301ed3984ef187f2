//! Timestep rules (`skip`): which integer model labels a discrete-time sampler visits.
//!
//! Every rule returns the labels in the order the sampler calls the model (descending), each
//! exactly as its source computes it, rounding and off-by-one conventions included. The
//! continuous-time rules (`time_uniform`, `logsnr`, `time_quadratic`, `karras`) produce
//! fractional times for the ODE solvers and live with them in `sampling::continuous`.
use crate::{BenchError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// DDIM repo `skip_type=uniform`: `range(0, T, T // S)`.
    Uniform,
    /// DDIM repo `skip_type=quad`: `int(linspace(0, sqrt(0.8 T), S)²)`.
    Quadratic,
    /// diffusers `timestep_spacing="leading"`.
    Leading,
    /// diffusers `timestep_spacing="trailing"`.
    Trailing,
    /// diffusers `timestep_spacing="linspace"`.
    Linspace,
    /// guided-diffusion `space_timesteps(T, "ddimS")`: the integer stride giving exactly S labels.
    DdimStride,
    /// guided-diffusion `space_timesteps(T, "S")`: one section strided to S labels, rounded
    /// half to even.
    Sections,
    /// Diffusion-TS `fast_sample`: `int(linspace(-1, T − 1, S + 1))` without the final −1.
    DiffusionTs,
    /// DPM-Solver/UniPC: uniform in continuous time t.
    TimeUniform,
    /// DPM-Solver/UniPC: uniform in log-SNR λ.
    Logsnr,
    /// DPM-Solver: quadratic in continuous time t.
    TimeQuadratic,
    /// Karras et al. 2022 eq. 5, ρ = 7.
    Karras,
    /// diffusers `use_exponential_sigmas`: levels uniform in log σ between σ̃(0) and σ̃(T−1).
    Exponential,
    /// diffusers `use_beta_sigmas`: levels at the Beta(0.6, 0.6) quantiles between the same ends.
    Beta,
    /// diffusers `use_lu_lambdas` (DPM-Solver multistep): levels uniform in log σ̃ from σ̃(T−1) to
    /// σ̃(0), labels rounded.
    Lu,
    /// Karras et al. 2022 eq. 5 in a σ-space model's own σ (EDM's samplers; ρ a parameter).
    Edm,
    /// diffusers `CMStochasticIterativeScheduler`: S levels of an N-level Karras grid at
    /// indices k·⌊N/S⌋ (consistency models).
    Consistency,
    /// diffusers `FlowMatchEulerDiscreteScheduler`: t uniform from 1 to 1/T (in timesteps t·T),
    /// then shifted (rectified-flow models).
    Flow,
    /// diffusers `LCMScheduler` / `TCDScheduler`: S labels at evenly spaced indices of the
    /// consistency-distillation grid (the sampler's `original_inference_steps`).
    Lcm,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Skip {
    pub const ALL: [Skip; 19] = [
        Skip::Uniform,
        Skip::Quadratic,
        Skip::Leading,
        Skip::Trailing,
        Skip::Linspace,
        Skip::DdimStride,
        Skip::Sections,
        Skip::DiffusionTs,
        Skip::TimeUniform,
        Skip::Logsnr,
        Skip::TimeQuadratic,
        Skip::Karras,
        Skip::Exponential,
        Skip::Beta,
        Skip::Lu,
        Skip::Edm,
        Skip::Consistency,
        Skip::Flow,
        Skip::Lcm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skip::Uniform => "uniform",
            Skip::Quadratic => "quadratic",
            Skip::Leading => "leading",
            Skip::Trailing => "trailing",
            Skip::Linspace => "linspace",
            Skip::DdimStride => "ddim_stride",
            Skip::Sections => "sections",
            Skip::DiffusionTs => "diffusion_ts",
            Skip::TimeUniform => "time_uniform",
            Skip::Logsnr => "logsnr",
            Skip::TimeQuadratic => "time_quadratic",
            Skip::Karras => "karras",
            Skip::Exponential => "exponential",
            Skip::Beta => "beta",
            Skip::Lu => "lu",
            Skip::Edm => "edm",
            Skip::Consistency => "consistency",
            Skip::Flow => "flow",
            Skip::Lcm => "lcm",
        }
    }

    pub fn parse(s: &str) -> Result<Skip> {
        Skip::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = Skip::ALL.iter().map(|k| k.name()).collect();
            BenchError::user(format!("skip: unknown timestep rule {s:?}; allowed: {}", names.join(", ")))
        })
    }

    /// Rules that produce integer labels, for the samplers that step label to label (DDIM,
    /// DDPM): diffusers' and the DDIM repo's rules, then those of respaced processes
    /// (guided-diffusion, Diffusion-TS), whose last label steps to the end point.
    pub const DISCRETE: [Skip; 8] = [
        Skip::Uniform,
        Skip::Quadratic,
        Skip::Leading,
        Skip::Trailing,
        Skip::Linspace,
        Skip::DdimStride,
        Skip::Sections,
        Skip::DiffusionTs,
    ];

    pub fn is_discrete(self) -> bool {
        Skip::DISCRETE.contains(&self)
    }

    /// The kind of model whose noise levels the rule produces (a sampler's rules share one).
    pub fn space(self) -> crate::models::NoiseSpace {
        use crate::models::NoiseSpace;
        match self {
            Skip::Edm | Skip::Consistency => NoiseSpace::Sigma,
            Skip::Flow => NoiseSpace::Flow,
            _ => NoiseSpace::Vp,
        }
    }
}

/// The integer model labels of a discrete rule, in call order (descending, repeats kept).
///
/// `train_steps` is T, `steps` is S, `steps_offset` is diffusers' `steps_offset` (only
/// `leading` uses it, as in diffusers).
pub fn discrete_labels(skip: Skip, steps: usize, train_steps: usize, steps_offset: usize) -> Result<Vec<usize>> {
    let (s, t) = (steps, train_steps);
    if s == 0 || s > t {
        return Err(BenchError::user(format!("steps: {s} is out of range (need 1 ≤ steps ≤ {t}, the schedule's T)")));
    }
    let ascending: Vec<usize> = match skip {
        // DDIM repo runners/diffusion.py: `skip = T // S; seq = range(0, T, skip)`. When S ∤ T
        // this visits ceil(T / skip) > S labels (e.g. S=333: 334 labels ending at 999).
        Skip::Uniform => (0..t).step_by(t / s).collect(),
        // DDIM repo: `seq = linspace(0, sqrt(0.8 T), S)**2; [int(x) for x in seq]`, truncation
        // toward zero; small labels repeat (0, 0, 1, ...) when S is large.
        Skip::Quadratic => numpy_linspace(0.0, (t as f64 * 0.8).sqrt(), s).into_iter().map(|v| (v * v) as usize).collect(),
        // diffusers: `(arange(S) * (T // S)).round() + steps_offset`; T mod S labels at the top
        // are never visited.
        Skip::Leading => (0..s).map(|i| i * (t / s) + steps_offset).collect(),
        // diffusers: `round(arange(T, 0, -T / S)) - 1` with numpy's float arange and
        // round-half-to-even; the first label is T − 1.
        // For some S (61, 103, ... with T=1000) numpy's arange yields S+1 values and the last
        // label is −1; diffusers then indexes ᾱ[−1]. That is refused here, not reproduced.
        Skip::Trailing => {
            let v: Vec<i64> = numpy_arange(t as f64, 0.0, -(t as f64) / s as f64)
                .into_iter()
                .map(|x| x.round_ties_even() as i64 - 1)
                .collect();
            if v.len() != s || v.iter().any(|&l| l < 0) {
                return Err(BenchError::user(format!(
                    "steps: {s} with skip \"trailing\" and T={t} makes diffusers' float arange produce {} labels \
                     ending at {}; choose another step count",
                    v.len(),
                    v.last().copied().unwrap_or(0)
                )));
            }
            v.into_iter().rev().map(|l| l as usize).collect()
        }
        // diffusers: `linspace(0, T − 1, S).round()` (round-half-to-even); no steps_offset.
        Skip::Linspace => numpy_linspace(0.0, (t - 1) as f64, s).into_iter().map(|x| x.round_ties_even() as usize).collect(),
        Skip::DdimStride => crate::respacing::space_timesteps(t, &format!("ddim{s}"))?.into_iter().rev().collect(),
        Skip::Sections => crate::respacing::space_timesteps(t, &s.to_string())?.into_iter().rev().collect(),
        Skip::DiffusionTs => crate::respacing::diffusion_ts_fast_sampling(t, s)?.into_iter().rev().collect(),
        Skip::TimeUniform
        | Skip::Logsnr
        | Skip::TimeQuadratic
        | Skip::Karras
        | Skip::Exponential
        | Skip::Beta
        | Skip::Lu
        | Skip::Edm
        | Skip::Consistency
        | Skip::Flow
        | Skip::Lcm => {
            return Err(BenchError::user(format!(
                "skip: {:?} applies to the continuous-time solvers (dpm_solver, unipc, karras family); \
                 discrete samplers take uniform, quadratic, leading, trailing, linspace, ddim_stride, sections or diffusion_ts",
                skip.name()
            )))
        }
    };
    if let Some(&max) = ascending.iter().max() {
        if max >= t {
            return Err(BenchError::user(format!(
                "steps_offset: {steps_offset} pushes label {max} past the schedule's last label {}",
                t - 1
            )));
        }
    }
    Ok(ascending.into_iter().rev().collect())
}

/// How a discrete sampler picks the level it steps to from label t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrevRule {
    /// DDIM/PNDM repos and diffusers' DDPMScheduler: the next label in the list; the last
    /// label steps to the end point (`seq_next = [-1] + seq[:-1]`).
    NextLabel,
    /// diffusers' DDIMScheduler/PNDMScheduler: `prev = t − T // S` whatever the list holds;
    /// a negative prev means the end point. With `trailing`/`linspace` this differs from the
    /// next label, and the last step may land on ᾱ at a label ≥ 0 instead of the end point.
    Stride,
}

/// (t, prev) pairs in call order; prev = −1 means the sampler's end point.
pub fn transitions(labels: &[usize], rule: PrevRule, train_steps: usize, steps: usize) -> Vec<(i64, i64)> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let prev = match rule {
                PrevRule::NextLabel => labels.get(i + 1).map(|&p| p as i64).unwrap_or(-1),
                PrevRule::Stride => (t as i64 - (train_steps / steps) as i64).max(-1),
            };
            (t as i64, prev)
        })
        .collect()
}

/// A discrete sampler's visiting plan: its labels, its (t, prev) transitions and the ᾱ it
/// reads for each, with the end point's ᾱ for prev = −1.
#[derive(Debug, Clone)]
pub struct Grid {
    pub labels: Vec<usize>,
    pub pairs: Vec<(i64, i64)>,
    /// T // S, diffusers' `step_ratio` (PNDM's stride-based rules need it).
    pub stride: i64,
    alphas: Vec<f64>,
    final_alpha: f64,
}

/// How a discrete sampler builds its [`Grid`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GridConfig {
    pub steps: usize,
    pub skip: Skip,
    pub steps_offset: usize,
    pub prev: PrevRule,
    /// ᾱ at the end point: 1 (DDIM repo, diffusers `set_alpha_to_one=True`) or ᾱ_0.
    pub alpha_to_one: bool,
    /// `skip: sections` with several sections: guided-diffusion's counts ("10,10,20" → [10, 10,
    /// 20], summing to `steps`); empty for one section of `steps`.
    pub sections: Vec<usize>,
}

impl Grid {
    pub fn new(schedule: &crate::schedule::NoiseSchedule, cfg: &GridConfig) -> Result<Grid> {
        let t = schedule.len();
        let labels = if cfg.sections.is_empty() {
            discrete_labels(cfg.skip, cfg.steps, t, cfg.steps_offset)?
        } else {
            let counts = cfg.sections.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
            if cfg.skip != Skip::Sections || cfg.sections.iter().sum::<usize>() != cfg.steps {
                return Err(BenchError::user(format!(
                    "section_counts \"{counts}\" needs skip: sections and steps equal to their sum {} (got skip {}, steps {})",
                    cfg.sections.iter().sum::<usize>(),
                    cfg.skip.name(),
                    cfg.steps
                )));
            }
            // Descending, as the labels are visited.
            crate::respacing::space_timesteps(t, &counts)?
        };
        let pairs = transitions(&labels, cfg.prev, t, cfg.steps);
        let final_alpha = if cfg.alpha_to_one { 1.0 } else { schedule.alpha_bar(0) };
        Ok(Grid { labels, pairs, stride: (t / cfg.steps) as i64, alphas: schedule.alphas_cumprod.clone(), final_alpha })
    }
    /// ᾱ at an integer label; −1 (or below) is the end point.
    pub fn alpha_bar(&self, label: i64) -> f64 {
        if label < 0 {
            self.final_alpha
        } else {
            self.alphas[label as usize]
        }
    }
    /// ᾱ_{index} of the schedule itself (PNDM repo's shifted reads use it).
    pub fn schedule_alpha_bar(&self, index: usize) -> Option<f64> {
        self.alphas.get(index).copied()
    }
    pub fn train_steps(&self) -> usize {
        self.alphas.len()
    }
    pub fn ends_at_one(&self) -> bool {
        self.final_alpha == 1.0
    }
}

/// numpy.linspace(start, stop, num): `arange(num) * step + start`, last element set to stop.
pub(crate) fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// numpy.arange(start, stop, step) for floats: length ceil((stop − start) / step), values
/// start + i·delta where delta = (start + step) − start, as numpy's fill computes them.
fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respaced_rules_of_guided_diffusion_and_diffusion_ts() {
        let labels = |skip, s, t| discrete_labels(skip, s, t, 0).unwrap();
        // "ddim8", T=1000: the first stride with len(range(0, T, i)) = 8 is 125; "ddim7" needs 143
        // (uniform would take T//S = 142 and visit 8 labels).
        assert_eq!(labels(Skip::DdimStride, 8, 1000), (0..1000).step_by(125).rev().collect::<Vec<_>>());
        assert_eq!(labels(Skip::DdimStride, 7, 1000), vec![858, 715, 572, 429, 286, 143, 0]);
        assert_eq!(labels(Skip::Uniform, 7, 1000).len(), 8);
        assert!(discrete_labels(Skip::DdimStride, 600, 1000, 0).is_err());
        // "3", T=10: stride 9/2 = 4.5, Python's round(4.5) = 4.
        assert_eq!(labels(Skip::Sections, 3, 10), vec![9, 4, 0]);
        assert_eq!(labels(Skip::Sections, 10, 1000), (0..1000).step_by(111).rev().collect::<Vec<_>>());
        // linspace(−1, 9, 4) = −1, 2.33, 5.67, 9 → 2, 5, 9; linspace(−1, 499, 6) → 99, …, 499.
        assert_eq!(labels(Skip::DiffusionTs, 3, 10), vec![9, 5, 2]);
        assert_eq!(labels(Skip::DiffusionTs, 5, 500), vec![499, 399, 299, 199, 99]);
        for skip in [Skip::DdimStride, Skip::Sections, Skip::DiffusionTs] {
            assert!(skip.is_discrete() && Skip::parse(skip.name()).unwrap() == skip);
        }
    }

    #[test]
    fn ddim_repo_uniform_gives_extra_steps_when_s_does_not_divide_t() {
        let l = discrete_labels(Skip::Uniform, 10, 1000, 0).unwrap();
        assert_eq!(l, vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        let l = discrete_labels(Skip::Uniform, 333, 1000, 0).unwrap();
        assert_eq!(l.len(), 334);
        assert_eq!((l[0], l[333]), (999, 0));
        assert_eq!(discrete_labels(Skip::Uniform, 7, 1000, 0).unwrap(), vec![994, 852, 710, 568, 426, 284, 142, 0]);
    }

    #[test]
    fn ddim_repo_quadratic_starts_at_800_and_repeats_small_labels() {
        // Values as printed by the DDIM repo's expression for T=1000, S=10.
        let l = discrete_labels(Skip::Quadratic, 10, 1000, 0).unwrap();
        assert_eq!(l, vec![800, 632, 483, 355, 246, 158, 88, 39, 9, 0]);
        let l = discrete_labels(Skip::Quadratic, 100, 1000, 0).unwrap();
        assert_eq!(&l[96..], &[0, 0, 0, 0]);
    }

    #[test]
    fn diffusers_spacings() {
        assert_eq!(discrete_labels(Skip::Leading, 7, 1000, 1).unwrap(), vec![853, 711, 569, 427, 285, 143, 1]);
        assert_eq!(discrete_labels(Skip::Trailing, 7, 1000, 0).unwrap(), vec![999, 856, 713, 570, 428, 285, 142]);
        assert_eq!(discrete_labels(Skip::Linspace, 7, 1000, 0).unwrap(), vec![999, 832, 666, 500, 333, 166, 0]);
    }

    #[test]
    fn stride_rule_differs_from_next_label_for_trailing() {
        let l = discrete_labels(Skip::Trailing, 7, 1000, 0).unwrap();
        let s = transitions(&l, PrevRule::Stride, 1000, 7);
        assert_eq!(s[0], (999, 857));
        assert_eq!(s[6], (142, 0));
        let n = transitions(&l, PrevRule::NextLabel, 1000, 7);
        assert_eq!(n[0], (999, 856));
        assert_eq!(n[6], (142, -1));
    }

    #[test]
    fn continuous_rules_and_bad_steps_are_user_errors() {
        for k in [Skip::TimeUniform, Skip::Logsnr, Skip::TimeQuadratic, Skip::Karras] {
            assert_eq!(discrete_labels(k, 10, 1000, 0).unwrap_err().exit_code(), 2);
        }
        assert_eq!(discrete_labels(Skip::Uniform, 0, 1000, 0).unwrap_err().exit_code(), 2);
        assert_eq!(discrete_labels(Skip::Leading, 1000, 1000, 1).unwrap_err().exit_code(), 2);
        assert!(Skip::parse("quad").is_err());
        // numpy.arange(1000, 0, -1000/61) has 62 elements, the last rounding to label −1.
        assert_eq!(discrete_labels(Skip::Trailing, 61, 1000, 0).unwrap_err().exit_code(), 2);
        assert_eq!(Skip::parse("time_quadratic").unwrap(), Skip::TimeQuadratic);
        for k in Skip::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.name()));
        }
    }
}
