//! Denoising networks and exact-score oracles.
//!
//! - [`oracle`]: exact-score models for known data distributions.
//! - [`unet`]: pixel-space UNets (DDPM, ADM-style class-conditional / learned-variance; diffusers
//!   `UNet2DModel`, DDIM repo).
//! - [`unet_cond`]: the text-conditioned latent UNet of Stable Diffusion 1.x/2.x (diffusers
//!   `UNet2DConditionModel`).
//! - [`vae`]: latent decoders (diffusers `AutoencoderKL`, `VQModel`).
//! - [`torchscript`]: traced/scripted ε-models.
//! - [`edm`]: the NVlabs EDM networks (SongUNet, DhariwalUNet) and their preconditionings;
//!   [`consistency`]: consistency-model denoisers.
//! - [`layers`], [`weights`], [`diffusers_config`]: the shared blocks, weight loading and config
//!   reading behind the diffusers networks.
pub mod oracle;
pub mod unet;
pub mod unet_cond;
pub mod vae;
pub mod torchscript;
pub mod edm;
pub mod consistency;
pub(crate) mod layers;
pub mod weights;
pub(crate) mod diffusers_config;

pub use layers::ClassEmbedding;

use tch::Tensor;

/// An ε-prediction model: x [B,C,H,W] and per-sample timestep labels t [B] (f64, may be
/// fractional, in the schedule's discrete label units 0..T-1) → ε̂ with x's shape and dtype.
pub trait EpsModel {
    fn eps(&self, x: &Tensor, t: &Tensor) -> Tensor;
    /// Short description recorded in results.
    fn describe(&self) -> String;
}
