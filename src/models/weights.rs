//! Weights by name: a state dict consumed key by key with shape checks, every mismatch reported.
use crate::{BenchError, Result};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Pulls tensors out of a state dict by name with shape checks, and reports every problem
/// (missing, mis-shaped, unexpected) at the end instead of stopping at the first.
pub(crate) struct WeightTaker {
    map: BTreeMap<String, Tensor>,
    /// Every (name, shape) asked for, in order: a config's expected weights.
    pub(crate) requested: Vec<(String, Vec<i64>)>,
    missing: Vec<String>,
    misshaped: Vec<String>,
    pub(crate) device: Device,
    pub(crate) kind: Kind,
}

impl WeightTaker {
    pub(crate) fn new(map: BTreeMap<String, Tensor>, device: Device, kind: Kind) -> Self {
        WeightTaker { map, requested: vec![], missing: vec![], misshaped: vec![], device, kind }
    }
    pub(crate) fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
        self.requested.push((name.to_string(), shape.to_vec()));
        match self.map.remove(name) {
            Some(t) if t.size() == shape => t.to_device(self.device).to_kind(self.kind),
            Some(t) => {
                self.misshaped.push(format!("{name} (file {:?}, expected {shape:?})", t.size()));
                Tensor::zeros(shape, (self.kind, self.device))
            }
            None => {
                self.missing.push(name.to_string());
                Tensor::zeros(shape, (self.kind, self.device))
            }
        }
    }
    /// `what` names the architecture in the error, e.g. "the UNet config".
    pub(crate) fn finish(self, source: &str, what: &str) -> Result<()> {
        let unexpected: Vec<&String> = self.map.keys().collect();
        if self.missing.is_empty() && self.misshaped.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let few = |v: Vec<String>| {
            let n = v.len();
            let mut s = v.into_iter().take(5).collect::<Vec<_>>().join(", ");
            if n > 5 {
                s.push_str(&format!(", ... ({n} in all)"));
            }
            s
        };
        let mut parts = vec![];
        if !self.missing.is_empty() {
            parts.push(format!("missing keys: {}", few(self.missing)));
        }
        if !self.misshaped.is_empty() {
            parts.push(format!("wrong shapes: {}", few(self.misshaped)));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected keys: {}", few(unexpected.into_iter().cloned().collect())));
        }
        Err(BenchError::user(format!("{source}: weights do not match {what}; {}", parts.join("; "))))
    }
}

