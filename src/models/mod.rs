//! Models: what a sampler calls (a [`Denoiser`]: the network, its output parameterisation, an
//! optional per-sample condition) and what turns its final samples into images (a [`Decoder`]).
//!
//! - `oracle`: exact-score models of known data distributions (no network);
//! - `unet`: pixel-space UNets in tch (DDPM; ADM-style class-conditional / learned-variance;
//!   diffusers `UNet2DModel` and DDIM-repo layouts);
//! - `unet_cond`: the text-conditioned latent UNet of Stable Diffusion 1.x/2.x (diffusers
//!   `UNet2DConditionModel`);
//! - `clip`: CLIP tokenizer, text and vision towers (text conditions, CLIP score);
//! - `vae`: latent decoders (diffusers `AutoencoderKL`, `VQModel`);
//! - `torchscript`: any exported model `(x, t[, cond]) → output`, and TorchScript decoders;
//! - `layers`, `weights`, `diffusers_config`: the shared blocks, weight loading and config
//!   reading behind the diffusers networks;
//! - `edm`: the NVlabs EDM networks (SongUNet, DhariwalUNet) and their preconditionings;
//!   `consistency`: consistency-model denoisers;
//! - `load`: a plan's `model:` section → a [`LoadedModel`].
pub mod clip;
pub(crate) mod diffusers_config;
pub(crate) mod layers;
pub mod load;
pub mod oracle;
pub mod torchscript;
pub mod unet;
pub mod unet_cond;
pub mod vae;
pub mod edm;
pub mod consistency;
pub mod weights;

pub use layers::ClassEmbedding;

pub use load::{load_model, LoadedModel};

use crate::{BenchError, Result};
use tch::Tensor;

/// What the network's output means (diffusers' `prediction_type`). Converted to ε or x̂0 in one
/// place, [`crate::sampling::Output`], so every sampler works with every parameterisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// ε̂: the noise (Ho et al. 2020).
    #[default]
    Epsilon,
    /// v̂ = α ε − σ x0 (Salimans & Ho 2022; Stable Diffusion 2.x 768 models).
    VPrediction,
    /// x̂0: the clean sample (diffusers `sample`; Diffusion-TS).
    Sample,
    /// The rectified-flow velocity v = ε − x0 of x_t = (1 − t)·x0 + t·ε (flow matching; SD3,
    /// Flux); such a model is in [`NoiseSpace::Flow`].
    Flow,
}

impl Prediction {
    pub const ALL: [Prediction; 4] = [Prediction::Epsilon, Prediction::VPrediction, Prediction::Sample, Prediction::Flow];
    pub fn as_str(self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::VPrediction => "v_prediction",
            Prediction::Sample => "sample",
            Prediction::Flow => "flow",
        }
    }
    pub fn parse(s: &str) -> Option<Prediction> {
        Prediction::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// How a model's noise level enters its input and label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSpace {
    /// The discrete VP chain: x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, labels are timesteps of the schedule.
    #[default]
    Vp,
    /// σ (VE/EDM): x = x0 + σ ε, the label is σ itself and the output is the denoised x̂0
    /// (EDM's D(x; σ), Karras et al. 2022 Eq. 7).
    Sigma,
    /// Rectified flow: x_t = (1 − t)·x0 + t·ε, t ∈ [0, 1], the label is t·T (diffusers'
    /// flow-matching timesteps) and the output the velocity ε − x0.
    Flow,
}

impl NoiseSpace {
    pub fn as_str(self) -> &'static str {
        match self {
            NoiseSpace::Vp => "vp",
            NoiseSpace::Sigma => "sigma",
            NoiseSpace::Flow => "flow",
        }
    }
    /// What the output of a model in this space means, where the space fixes it.
    pub fn implied_prediction(self) -> Option<Prediction> {
        match self {
            NoiseSpace::Vp => None,
            NoiseSpace::Sigma => Some(Prediction::Sample),
            NoiseSpace::Flow => Some(Prediction::Flow),
        }
    }
}

/// A per-sample condition, batched like x (first dimension B).
#[derive(Debug)]
pub enum Condition {
    /// Class labels, int64 [B].
    Labels(Tensor),
    /// Token embeddings (text encoder output), [B, L, D].
    Embeddings(Tensor),
}

impl Condition {
    pub fn tensor(&self) -> &Tensor {
        match self {
            Condition::Labels(t) | Condition::Embeddings(t) => t,
        }
    }
    /// `[self; other]` along the batch: the unconditional and conditional halves of one
    /// classifier-free-guidance call.
    pub fn cat(&self, other: &Condition) -> Result<Condition> {
        let t = Tensor::f_cat(&[self.tensor(), other.tensor()], 0)?;
        Ok(match self {
            Condition::Labels(_) => Condition::Labels(t),
            Condition::Embeddings(_) => Condition::Embeddings(t),
        })
    }
}

/// Classifier-free guidance for one batch: output = u + w·(c − u) from one model call on 2B
/// (Ho & Salimans 2022, eq. 6 in ε form; diffusers' `guidance_scale`). w = 1 is one plain
/// conditional call.
#[derive(Debug)]
pub struct Guidance {
    pub cond: Condition,
    pub uncond: Condition,
    pub scale: f64,
}

/// A diffusion network: x [B, ...] and per-sample model labels t [B] (f64, possibly fractional,
/// in the schedule's label units) → raw output with x's shape and dtype, meaning what
/// [`Prediction`] says.
pub trait Denoiser {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Condition>) -> Result<Tensor>;
    /// [`Denoiser::forward`] plus, for a model that learns its variance (Nichol & Dhariwal 2021
    /// §3.1: `out_channels` = 2 × `in_channels`), the variance half of the same evaluation: the
    /// raw values v that DDPM sampling with `variance_type: learned_range` reads. None for
    /// models without one.
    fn forward_with_variance(&self, x: &Tensor, t: &Tensor, cond: Option<&Condition>) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.forward(x, t, cond)?, None))
    }
    /// Short description recorded in results.
    fn describe(&self) -> String;
    /// σ-space models: the noise levels the network supports (EDM's `sigma_min`, `sigma_max`);
    /// samplers clamp their σ range to it as EDM's sampler does.
    fn sigma_range(&self) -> (f64, f64) {
        (0.0, f64::INFINITY)
    }
    /// σ-space models: σ snapped to a level the network was trained on (EDM's `round_sigma`).
    fn round_sigma(&self, sigma: &Tensor) -> Tensor {
        sigma.shallow_clone()
    }
}

/// The stage between a sampler's output and the metrics (latent → image).
pub trait Decoder {
    /// Latents [B, ...latent shape] → images [B, C, H, W] in [−1, 1].
    fn decode(&self, latents: &Tensor) -> Result<Tensor>;
    fn describe(&self) -> String;
}

/// Runs `f`, turning a panic inside libtorch (tch's non-`f_` ops panic on a C++ exception, e.g.
/// out of memory) into one error line instead of a crash. The panic message is captured by the
/// quiet hook `install_quiet_panic_hook` installs, so nothing is printed twice.
pub fn catch_torch<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => Err(BenchError::Model(format!("{what}: {}", panic_text(payload.as_ref())))),
    }
}

/// The first meaningful line of a panic payload (libtorch messages carry long backtraces).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let s = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    first_line(s).to_owned()
}

/// libtorch errors are multi-line (a C++ backtrace, or a TorchScript traceback ending in the
/// Python exception): the raised `SomethingError: …` line if there is one, else the first line.
pub fn first_line(s: &str) -> &str {
    let s = s.trim_start_matches("Torch(\"").trim_start_matches("Internal torch error: ");
    let raised = s.lines().map(str::trim).filter(|l| {
        l.split_once(": ").is_some_and(|(kind, _)| kind.ends_with("Error") && !kind.contains(' '))
    });
    raised.last().or_else(|| s.lines().map(str::trim).find(|l| !l.is_empty())).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_lines_name_what_was_raised() {
        let ts = "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n  File \"code/__torch__.py\", line 12, in forward\n    _0 = torch.add(x, 1)\nRuntimeError: simulated: CUDA out of memory\n";
        assert_eq!(super::first_line(ts), "RuntimeError: simulated: CUDA out of memory");
        assert_eq!(super::first_line("\n  shape mismatch in conv\nException raised from x at y"), "shape mismatch in conv");
    }
}

/// Panics must never print a backtrace at the user: the hook records nothing and prints nothing;
/// [`catch_torch`] and `main`'s top-level guard turn the payload into one line.
pub fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|_| {}));
}
