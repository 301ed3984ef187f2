//! `kind: torchscript`: any model exported with `torch.jit.trace`/`torch.jit.script` that takes
//! (x [B,C,H,W] float, t [B] float labels) and returns ε with x's shape (EDM/ADM/own models).
use super::EpsModel;
use crate::{BenchError, Result};
use std::path::Path;
use tch::{CModule, Device, Kind, Tensor};

pub struct TorchScriptModel {
    module: CModule,
    device: Device,
    kind: Kind,
    source: String,
}

impl TorchScriptModel {
    pub fn load(path: &Path, device: Device, kind: Kind) -> Result<Self> {
        if !path.is_file() {
            return Err(BenchError::file(path, "TorchScript file not found"));
        }
        let mut module = CModule::load_on_device(path, device)
            .map_err(|e| BenchError::file(path, format!("not a loadable TorchScript module: {}", first_line(&e.to_string()))))?;
        module.set_eval();
        if kind != Kind::Float {
            module.to(device, kind, false);
        }
        Ok(TorchScriptModel { module, device, kind, source: path.display().to_string() })
    }
}

impl TorchScriptModel {
    /// Run one tiny batch so a module with the wrong signature or output shape is a clear user
    /// error before any sampling starts (the runner calls this with the sample shape).
    pub fn probe(&self, sample_shape: &[i64]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut shape = vec![2];
        shape.extend_from_slice(sample_shape);
        let x = Tensor::zeros(shape.as_slice(), (self.kind, self.device));
        let t = Tensor::from_slice(&[10f32, 500.5]).to_device(self.device);
        let out = self.module.forward_ts(&[x, t]).map_err(|e| {
            BenchError::file(&self.source, format!("forward(x {shape:?}, t [2]) failed: {}", first_line(&e.to_string())))
        })?;
        if out.size() != shape {
            return Err(BenchError::file(
                &self.source,
                format!("forward returned shape {:?}, expected x's shape {shape:?}", out.size()),
            ));
        }
        Ok(())
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

impl EpsModel for TorchScriptModel {
    fn eps(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let xin = x.to_device(self.device).to_kind(self.kind);
        let tin = t.to_device(self.device).to_kind(Kind::Float);
        let out = self
            .module
            .forward_ts(&[xin, tin])
            .unwrap_or_else(|e| panic!("TorchScript model {} failed: {}", self.source, first_line(&e.to_string())));
        assert_eq!(out.size(), x.size(), "TorchScript model {} returned a tensor of another shape than x", self.source);
        out.to_device(x.device()).to_kind(x.kind())
    }
    fn describe(&self) -> String {
        format!("torchscript:{}", self.source)
    }
}
