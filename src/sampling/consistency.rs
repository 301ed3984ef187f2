//! Multistep consistency sampling (Song et al. 2023, Algorithm 1; diffusers
//! `CMStochasticIterativeScheduler`): x̂0 = f(x, σ_i), then re-noise to σ_{i+1} with
//! √(σ_{i+1}² − σ_min²)·z; one step is the one-shot generator x0 = f(σ_max·z, σ_max).
use super::def::{Args, ParamDef, ParamKind, SamplerDef};
use super::{Counted, EndPoint, NoiseSource, Sampler};
use crate::models::Prediction;
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

pub struct ConsistencySampler {
    /// Grid indices k in 0..N (N = num_train_timesteps), in call order (descending σ).
    indices: Vec<usize>,
    train_steps: usize,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    rho: f64,
    s_noise: f64,
    clip_denoised: bool,
}

impl ConsistencySampler {
    /// σ of the calls, then the end level σ_min: the N-level Karras grid at `indices`, rounded
    /// to float32 as diffusers stores `sigmas` (`set_timesteps`).
    fn sigmas(&self, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
        let (lo, hi) = (sigma_min.powf(1.0 / self.rho), sigma_max.powf(1.0 / self.rho));
        let level = |k: usize| (hi + k as f64 / (self.train_steps - 1) as f64 * (lo - hi)).powf(self.rho);
        self.indices.iter().map(|&k| level(k)).chain([sigma_min]).map(|s| s as f32 as f64).collect()
    }
    /// The σ range: the parameters when given, else the model's (a σ-space network's trained
    /// range; the released models' 0.002 and 80 for a model without one).
    fn range(&self, model: Option<&Counted>) -> (f64, f64) {
        let (lo, hi) = model.map_or((0.0, f64::INFINITY), |m| m.sigma_range());
        let lo = self.sigma_min.unwrap_or(if lo > 0.0 { lo } else { crate::models::consistency::SIGMA_MIN });
        let hi = self.sigma_max.unwrap_or(if hi.is_finite() { hi } else { crate::models::consistency::SIGMA_MAX });
        (lo, hi)
    }
}

impl Sampler for ConsistencySampler {
    fn name(&self) -> &'static str {
        "consistency"
    }
    fn nfe(&self) -> usize {
        self.indices.len()
    }
    fn labels(&self) -> Vec<f64> {
        let (lo, hi) = self.range(None);
        let mut s = self.sigmas(lo, hi);
        s.pop();
        s
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::SigmaZero
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let (sigma_min, sigma_max) = self.range(Some(model));
        let sigmas = self.sigmas(sigma_min, sigma_max);
        // diffusers starts from `init_noise_sigma` = σ_max whatever the first level is.
        let mut x = z * sigma_max;
        for (i, w) in sigmas.windows(2).enumerate() {
            let mut x0 = model.raw(&x, w[0])?;
            if self.clip_denoised {
                x0 = x0.clamp(-1.0, 1.0);
            }
            let hat = w[1].clamp(sigma_min, sigma_max);
            let scale = (hat * hat - sigma_min * sigma_min).max(0.0).sqrt() * self.s_noise;
            x = if scale > 0.0 { &x0 + noise.noise(i, &x0) * scale } else { x0 };
        }
        Ok(x)
    }
}

fn build(a: &Args) -> Result<Box<dyn Sampler>> {
    let n = a.usize("num_train_timesteps")?;
    let custom = a.int_list("timesteps")?;
    // diffusers `set_timesteps(S)` or `set_timesteps(timesteps=…)`: grid indices t descending,
    // read on the ramp reversed, so level k = t reversed (default t = arange(S)·⌊N/S⌋ reversed).
    let indices: Vec<usize> = if custom.is_empty() {
        if a.steps > n {
            return Err(a.error(format!("steps={} exceeds num_train_timesteps={n}", a.steps)));
        }
        (0..a.steps).map(|k| k * (n / a.steps)).collect()
    } else {
        let listed = custom.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
        if custom.len() != a.steps {
            return Err(a.error(format!("timesteps \"{listed}\" are {} steps; steps={} must equal that", custom.len(), a.steps)));
        }
        if custom.windows(2).any(|w| w[1] >= w[0]) || custom[0] >= n {
            return Err(a.error(format!("timesteps \"{listed}\" must descend and stay below num_train_timesteps={n}")));
        }
        custom.into_iter().rev().collect()
    };
    let (sigma_min, sigma_max) = (a.f64_or_auto("sigma_min")?, a.f64_or_auto("sigma_max")?);
    if let (Some(lo), Some(hi)) = (sigma_min, sigma_max) {
        if lo >= hi {
            return Err(a.error(format!("sigma_min={lo} must be below sigma_max={hi}")));
        }
    }
    Ok(Box::new(ConsistencySampler {
        indices,
        train_steps: n,
        sigma_min,
        sigma_max,
        rho: a.f64("rho")?,
        s_noise: a.f64("s_noise")?,
        clip_denoised: a.bool("clip_denoised")?,
    }))
}

pub static CONSISTENCY: SamplerDef = SamplerDef {
    name: "consistency",
    params: &[
        ParamDef {
            name: "num_train_timesteps",
            kind: ParamKind::Int { min: 2, max: 100_000, default: 40 },
            help: "N: levels of the Karras grid the steps are taken from",
            diffusers: Some("num_train_timesteps"),
        },
        ParamDef {
            name: "sigma_min",
            kind: ParamKind::FloatOrAuto { min: 1e-9, max: f64::INFINITY },
            help: "lowest σ (auto: the model's, e.g. its scheduler config; 0.002 for models without one)",
            diffusers: Some("sigma_min"),
        },
        ParamDef {
            name: "sigma_max",
            kind: ParamKind::FloatOrAuto { min: 1e-9, max: f64::INFINITY },
            help: "highest σ and the initial noise scale (auto: the model's; 80 for models without one)",
            diffusers: Some("sigma_max"),
        },
        ParamDef { name: "rho", kind: ParamKind::Float { min: 1e-9, max: f64::INFINITY, default: 7.0 }, help: "ρ of the Karras grid", diffusers: Some("rho") },
        ParamDef { name: "s_noise", kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 1.0 }, help: "scale of the re-noising", diffusers: Some("s_noise") },
        ParamDef { name: "clip_denoised", kind: ParamKind::Bool { default: true }, help: "clamp x̂0 to [−1, 1] after each step", diffusers: Some("clip_denoised") },
        ParamDef {
            name: "timesteps",
            kind: ParamKind::IntList,
            help: "grid indices to visit, descending (set_timesteps(timesteps=…); \"22,0\": the CM paper's ImageNet-64 two steps); as many as steps",
            diffusers: None,
        },
    ],
    skips: &[Skip::Consistency],
    default_skip: Skip::Consistency,
    nfe: "S",
    end_point: "σ_min (x̂0 of the last call)",
    reference: "Song et al. 2023 Alg. 1; diffusers CMStochasticIterativeScheduler",
    predictions: &[Prediction::Sample],
    note: "steps S take grid indices k·⌊N/S⌋ as diffusers' set_timesteps(S) does, or the listed timesteps",
    eta: None,
    variant: None,
    build,
};

#[cfg(test)]
mod tests {
    use crate::sampling::build_from_text;
    use crate::schedule::NoiseSchedule;

    /// diffusers `CMStochasticIterativeScheduler().set_timesteps(2)`: sigmas [80, σ(20/39), 0.002]
    /// in float32 (printed by diffusers 0.42.1: 80.0, 2.2404396533966064, 0.0020000000949949026).
    #[test]
    fn grid_matches_diffusers_set_timesteps() {
        let s = build_from_text("consistency", &[], 2, &NoiseSchedule::ddpm_linear()).unwrap();
        let l = s.labels();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0], 80.0);
        let want = (80f64.powf(1.0 / 7.0) + 20.0 / 39.0 * (0.002f64.powf(1.0 / 7.0) - 80f64.powf(1.0 / 7.0))).powf(7.0);
        assert_eq!((l[1], want as f32 as f64), (2.2404396533966064, 2.2404396533966064));
        let too_many = build_from_text("consistency", &[], 41, &NoiseSchedule::ddpm_linear());
        assert_eq!(too_many.err().map(|e| e.exit_code()), Some(2));
        // Custom timesteps [22, 0]: levels at ramp 0 and 22/39.
        let c = build_from_text("consistency", &[("timesteps", "22,0")], 2, &NoiseSchedule::ddpm_linear()).unwrap().labels();
        let want = (80f64.powf(1.0 / 7.0) + 22.0 / 39.0 * (0.002f64.powf(1.0 / 7.0) - 80f64.powf(1.0 / 7.0))).powf(7.0);
        assert_eq!(c, vec![80.0, want as f32 as f64]);
        for (t, steps, msg) in [("22,0", 3, "timesteps \"22,0\" are 2 steps; steps=3 must equal that"), ("0,22", 2, "must descend"), ("40,0", 2, "must descend")] {
            let e = build_from_text("consistency", &[("timesteps", t)], steps, &NoiseSchedule::ddpm_linear()).err().unwrap();
            assert!(e.to_string().contains(msg), "{e}");
        }
    }
}
