//! `kind: torchscript`: any model exported with `torch.jit.trace`/`torch.jit.script` that takes
//! (x [B, ...] float, t [B] float labels[, cond]) and returns its output with x's shape
//! (EDM/ADM/DiT/own models), and TorchScript decoders (latents → images).
use super::{first_line, Condition, Decoder, Denoiser};
use crate::{BenchError, Result};
use std::path::Path;
use tch::{CModule, Device, IValue, Kind, Tensor};

pub struct TorchScriptModel {
    module: CModule,
    device: Device,
    kind: Kind,
    source: String,
}

fn load_module(path: &Path, device: Device, kind: Kind) -> Result<CModule> {
    if !path.is_file() {
        return Err(BenchError::file(path, "TorchScript file not found"));
    }
    let mut module = CModule::load_on_device(path, device)
        .map_err(|e| BenchError::file(path, format!("not a loadable TorchScript module: {}", first_line(&e.to_string()))))?;
    module.set_eval();
    if kind != Kind::Float {
        module.to(device, kind, false);
    }
    Ok(module)
}

impl TorchScriptModel {
    pub fn load(path: &Path, device: Device, kind: Kind) -> Result<Self> {
        Ok(TorchScriptModel { module: load_module(path, device, kind)?, device, kind, source: path.display().to_string() })
    }

    /// Run one tiny batch so a module with the wrong signature or output shape is a clear user
    /// error before any sampling starts (the loader calls this with the sample shape).
    pub fn probe(&self, sample_shape: &[i64], cond: Option<&Condition>) -> Result<()> {
        let mut shape = vec![2];
        shape.extend_from_slice(sample_shape);
        let x = Tensor::zeros(shape.as_slice(), (Kind::Float, self.device));
        let t = Tensor::from_slice(&[10f64, 500.5]).to_device(self.device);
        let out = self.forward(&x, &t, cond).map_err(|e| {
            BenchError::file(&self.source, format!("probe forward(x {shape:?}, t [2]) failed: {e}"))
        })?;
        if out.size() != shape {
            return Err(BenchError::file(&self.source, format!("forward returned shape {:?}, expected x's shape {shape:?}", out.size())));
        }
        Ok(())
    }
}

impl Denoiser for TorchScriptModel {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Condition>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let mut inputs = vec![IValue::Tensor(x.f_to_device(self.device)?.f_to_kind(self.kind)?), IValue::Tensor(t.f_to_device(self.device)?.f_to_kind(Kind::Float)?)];
        if let Some(c) = cond {
            let c = c.tensor().f_to_device(self.device)?;
            let c = if c.is_floating_point() { c.f_to_kind(self.kind)? } else { c };
            inputs.push(IValue::Tensor(c));
        }
        let out = self
            .module
            .forward_is(&inputs)
            .map_err(|e| BenchError::Model(format!("TorchScript model {} failed: {}", self.source, first_line(&e.to_string()))))?;
        let out = match out {
            IValue::Tensor(t) => t,
            other => {
                return Err(BenchError::Model(format!("TorchScript model {} returned {other:?}, expected one tensor", self.source)))
            }
        };
        if out.size() != x.size() {
            return Err(BenchError::Model(format!(
                "TorchScript model {} returned shape {:?}, expected x's shape {:?}",
                self.source,
                out.size(),
                x.size()
            )));
        }
        Ok(out.f_to_device(x.device())?.f_to_kind(x.kind())?)
    }
    fn describe(&self) -> String {
        format!("torchscript:{}", self.source)
    }
}

/// A TorchScript decoder: latents [B, ...] → images [B, C, H, W] in [−1, 1].
pub struct TorchScriptDecoder {
    module: CModule,
    device: Device,
    kind: Kind,
    source: String,
}

impl TorchScriptDecoder {
    pub fn load(path: &Path, device: Device, kind: Kind) -> Result<Self> {
        Ok(TorchScriptDecoder { module: load_module(path, device, kind)?, device, kind, source: path.display().to_string() })
    }
    /// The image shape this decoder gives for one latent of `latent_shape` (one probe call).
    pub fn image_shape(&self, latent_shape: &[i64]) -> Result<Vec<i64>> {
        let mut shape = vec![1];
        shape.extend_from_slice(latent_shape);
        let out = self
            .decode(&Tensor::zeros(shape.as_slice(), (Kind::Float, self.device)))
            .map_err(|e| BenchError::file(&self.source, format!("probe decode of a {shape:?} latent failed: {e}")))?;
        match out.size().as_slice() {
            [1, c, h, w] if *c >= 1 => Ok(vec![*c, *h, *w]),
            other => Err(BenchError::file(&self.source, format!("decoder returned shape {other:?}, expected [1, C, H, W]"))),
        }
    }
}

impl Decoder for TorchScriptDecoder {
    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let z = latents.f_to_device(self.device)?.f_to_kind(self.kind)?;
        let out = self
            .module
            .forward_ts(&[z])
            .map_err(|e| BenchError::Model(format!("TorchScript decoder {} failed: {}", self.source, first_line(&e.to_string()))))?;
        Ok(out.f_to_kind(Kind::Float)?)
    }
    fn describe(&self) -> String {
        format!("torchscript:{}", self.source)
    }
}
