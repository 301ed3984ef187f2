//! ε-prediction models: the exact-score oracles, and (later) the DDPM UNet and TorchScript.
pub mod oracle;
pub mod unet;
pub mod torchscript;
pub mod edm;
pub mod consistency;
mod weights;

use tch::Tensor;

/// An ε-prediction model: x [B,C,H,W] and per-sample timestep labels t [B] (f64, may be
/// fractional, in the schedule's discrete label units 0..T-1) → ε̂ with x's shape and dtype.
pub trait EpsModel {
    fn eps(&self, x: &Tensor, t: &Tensor) -> Tensor;
    /// Short description recorded in results.
    fn describe(&self) -> String;
}
