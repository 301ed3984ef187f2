//! Multistep sampling of consistency-distilled discrete VP models: latent consistency models
//! (Luo et al. 2023, Algorithm 1; diffusers `LCMScheduler`) and trajectory consistency
//! distillation (Zheng et al. 2024, "TCD", eq. 10 with γ; diffusers `TCDScheduler`).
//!
//! Both visit S of the `original_inference_steps` labels the model was distilled on
//! (k·j − 1, k = T // original_inference_steps), taken at evenly spaced indices.
use super::def::{Args, EtaColumn, ParamDef, ParamKind, SamplerDef, ALL_PREDICTIONS};
use super::{Counted, EndPoint, Node, NoiseSource, Sampler, Schedule, X0Clip};
use crate::timesteps::Skip;
use crate::{BenchError, Result};
use tch::Tensor;

/// diffusers `LCMScheduler.set_timesteps` / `TCDScheduler.set_timesteps` (no custom timesteps,
/// strength 1): the distillation grid (1..=N)·(T // N) − 1 reversed, at indices
/// ⌊linspace(0, N, S, endpoint=False)⌋.
pub fn lcm_labels(train_steps: usize, original_steps: usize, steps: usize) -> Result<Vec<usize>> {
    if original_steps > train_steps || steps == 0 || steps > original_steps {
        return Err(BenchError::user(format!(
            "steps={steps} with original_inference_steps={original_steps}: need 1 ≤ steps ≤ original_inference_steps ≤ T={train_steps}"
        )));
    }
    let k = train_steps / original_steps;
    let origin: Vec<usize> = (1..=original_steps).rev().map(|j| j * k - 1).collect();
    let step = original_steps as f64 / steps as f64;
    Ok((0..steps).map(|i| origin[(i as f64 * step).floor() as usize]).collect())
}

/// LCM's boundary-condition scalings (`get_scalings_for_boundary_condition_discrete`, σ_data =
/// 0.5): c_skip = σ_d²/((t·s)² + σ_d²), c_out = t·s/√((t·s)² + σ_d²).
fn boundary_scalings(label: usize, timestep_scaling: f64) -> (f64, f64) {
    let (sd2, t) = (0.25, label as f64 * timestep_scaling);
    (sd2 / (t * t + sd2), t / (t * t + sd2).sqrt())
}

/// TCD's intermediate label s = ⌊(1 − γ)·t_prev⌋, in float32 as diffusers computes it (torch
/// multiplies the integer label by γ's float32; in float64 the product falls just below the
/// integer for many labels, e.g. 0.7·90).
fn tcd_label_s(gamma: f64, prev: usize) -> usize {
    ((1.0 - gamma) as f32 * prev as f32).floor() as usize
}

enum Kind {
    /// LCM: `timestep_scaling` of the boundary condition and x̂0 clipping.
    Lcm { timestep_scaling: f64, clip: X0Clip },
    /// TCD: γ (diffusers' `eta`), 0 = deterministic.
    Tcd { gamma: f64 },
}

pub struct LcmSampler {
    kind: Kind,
    labels: Vec<usize>,
    alphas_cumprod: Vec<f64>,
}

impl LcmSampler {
    fn node(&self, label: usize) -> Node {
        Node::from_alpha_bar(label as f64, self.alphas_cumprod[label])
    }
}

impl Sampler for LcmSampler {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Lcm { .. } => "lcm",
            Kind::Tcd { .. } => "tcd",
        }
    }
    fn nfe(&self) -> usize {
        self.labels.len()
    }
    fn labels(&self) -> Vec<f64> {
        self.labels.iter().map(|&t| t as f64).collect()
    }
    fn end_point(&self) -> EndPoint {
        match self.kind {
            Kind::Lcm { .. } => EndPoint::AlphaBarOne,
            Kind::Tcd { .. } => EndPoint::AlphaBarZero,
        }
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let mut x = z;
        let n = self.labels.len();
        for (i, &t) in self.labels.iter().enumerate() {
            let last = i + 1 == n;
            let out = model.call(&x, &self.node(t))?;
            x = match &self.kind {
                // LCM Alg. 1: the consistency function f = c_skip·x + c_out·x̂0, then re-noise to
                // the next label (nothing after the last).
                Kind::Lcm { timestep_scaling, clip } => {
                    let (c_skip, c_out) = boundary_scalings(t, *timestep_scaling);
                    let denoised = out.x0_clipped(clip) * c_out + &x * c_skip;
                    if last {
                        denoised
                    } else {
                        let ab = self.alphas_cumprod[self.labels[i + 1]];
                        denoised * ab.sqrt() + noise.noise(i, &x) * (1.0 - ab).sqrt()
                    }
                }
                // TCD eq. 10: to the intermediate level s = ⌊(1−γ)·t_prev⌋ along the predicted
                // (x̂0, ε̂), then forward-noise from s up to t_prev (γ > 0, not after the last).
                Kind::Tcd { gamma } => {
                    let prev = if last { 0 } else { self.labels[i + 1] };
                    let ab_s = self.alphas_cumprod[tcd_label_s(*gamma, prev)];
                    let x_s = out.x0() * ab_s.sqrt() + out.eps() * (1.0 - ab_s).sqrt();
                    if *gamma > 0.0 && !last {
                        let ratio = self.alphas_cumprod[prev] / ab_s;
                        x_s * ratio.sqrt() + noise.noise(i, &x) * (1.0 - ratio).sqrt()
                    } else {
                        x_s
                    }
                }
            };
        }
        Ok(x)
    }
}

fn build(a: &Args, tcd: bool) -> Result<Box<dyn Sampler>> {
    let schedule: &Schedule = a.schedule;
    let labels = lcm_labels(schedule.len(), a.usize("original_inference_steps")?, a.steps).map_err(|e| a.error(e))?;
    let kind = if tcd { Kind::Tcd { gamma: a.f64("eta")? } } else { Kind::Lcm { timestep_scaling: a.f64("timestep_scaling")?, clip: X0Clip::from_args(a)? } };
    Ok(Box::new(LcmSampler { kind, labels, alphas_cumprod: schedule.alphas_cumprod.clone() }))
}

const ORIGINAL_STEPS: ParamDef = ParamDef {
    name: "original_inference_steps",
    kind: ParamKind::Int { min: 1, max: 1_000_000, default: 50 },
    help: "size of the distillation grid the S labels are taken from",
    diffusers: Some("original_inference_steps"),
};

pub static LCM: SamplerDef = SamplerDef {
    name: "lcm",
    params: &[
        ORIGINAL_STEPS,
        ParamDef {
            name: "timestep_scaling",
            kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 10.0 },
            help: "label scaling of the boundary condition c_skip, c_out",
            diffusers: Some("timestep_scaling"),
        },
        super::ddim::CLIP_SAMPLE,
        super::ddim::CLIP_SAMPLE_RANGE,
        super::ddim::THRESHOLDING,
        super::ddim::DYNAMIC_THRESHOLDING_RATIO,
        super::ddim::SAMPLE_MAX_VALUE,
    ],
    skips: &[Skip::Lcm],
    default_skip: Skip::Lcm,
    nfe: "S",
    end_point: "ᾱ=1 (the consistency function's x̂0)",
    reference: "Luo et al. 2023 Alg. 1 (latent consistency models); diffusers LCMScheduler",
    predictions: ALL_PREDICTIONS,
    note: "for consistency-distilled models (LCM, LCM-LoRA); fresh noise between steps, none after the last",
    eta: None,
    variant: None,
    build: |a| build(a, false),
};

pub static TCD: SamplerDef = SamplerDef {
    name: "tcd",
    params: &[
        ORIGINAL_STEPS,
        ParamDef {
            name: "eta",
            kind: ParamKind::Float { min: 0.0, max: 1.0, default: 0.3 },
            help: "γ of TCD (diffusers' step(eta=…)): 0 deterministic, 1 the LCM-like fully stochastic step",
            diffusers: None,
        },
    ],
    end_point: "ᾱ_0 (label ⌊(1−γ)·0⌋ = 0)",
    reference: "Zheng et al. 2024 eq. 10 (trajectory consistency distillation); diffusers TCDScheduler",
    note: "for TCD-distilled models; γ is the results' eta column",
    eta: Some(EtaColumn::Param),
    build: |a| build(a, true),
    ..LCM
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_diffusers() {
        // LCMScheduler().set_timesteps(4).timesteps = [999, 759, 499, 259]
        assert_eq!(lcm_labels(1000, 50, 4).unwrap(), vec![999, 759, 499, 259]);
        // set_timesteps(7): indices ⌊0, 7.14, 14.3, …⌋ of [999, 979, …, 19]
        assert_eq!(lcm_labels(1000, 50, 7).unwrap(), vec![999, 859, 719, 579, 439, 299, 159]);
        assert_eq!(lcm_labels(1000, 50, 1).unwrap(), vec![999]);
        assert!(lcm_labels(1000, 50, 51).is_err());
        // torch's float32 product: ⌊0.7·90⌋ = 63 (in float64 0.7·90 = 62.99999… → 62).
        assert_eq!(tcd_label_s(0.3, 90), 63);
        assert_eq!(tcd_label_s(0.3, 759), 531);
    }
}
