//! Building a network from a state dict: tensors are taken by name with their expected shape,
//! moved to the target device and precision one at a time, and every mismatch (missing,
//! mis-shaped, unexpected) is reported together at the end. tch's `VarStore::load` would
//! silently ignore extra keys; here every key of the file must be used exactly once.
use crate::checkpoint::{self, Select};
use crate::{BenchError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub struct WeightTaker {
    map: BTreeMap<String, Tensor>,
    requested: Vec<(String, Vec<i64>)>,
    missing: Vec<String>,
    misshaped: Vec<String>,
    device: Device,
    kind: Kind,
}

impl WeightTaker {
    pub fn new(map: BTreeMap<String, Tensor>, device: Device, kind: Kind) -> Self {
        WeightTaker { map, requested: vec![], missing: vec![], misshaped: vec![], device, kind }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Names and shapes asked for so far, in order.
    pub fn requested(&self) -> &[(String, Vec<i64>)] {
        &self.requested
    }

    /// The number of parameters asked for so far.
    pub fn parameter_count(&self) -> i64 {
        self.requested.iter().map(|(_, s)| s.iter().product::<i64>()).sum()
    }

    /// The tensor `name` of shape `shape`, converted to the target precision (on the CPU, before
    /// the move, so a device never holds a copy in the file's precision) and moved to the target
    /// device. A missing or mis-shaped tensor is recorded and zeros stand in, so that one load
    /// reports every problem.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
        self.requested.push((name.to_string(), shape.to_vec()));
        match self.map.remove(name) {
            Some(t) if t.size() == shape => t.to_kind(self.kind).to_device(self.device),
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

    /// Whether any key not yet taken starts with `prefix` (to tell checkpoint layouts apart).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.map.keys().any(|k| k.starts_with(prefix))
    }

    /// Drops the keys for which `unused` holds (buffers that old checkpoints saved but the
    /// network recomputes, e.g. `position_ids`), so they count neither as used nor unexpected.
    pub fn discard(&mut self, unused: impl Fn(&str) -> bool) {
        self.map.retain(|k, _| !unused(k));
    }

    /// Ok if every requested key was present with its shape and no key of the file was left
    /// unused; else one user error naming `source` and listing the problems (first 5 of each).
    pub fn finish(self, source: &str, what: &str) -> Result<()> {
        let unexpected: Vec<String> = self.map.keys().cloned().collect();
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
            parts.push(format!("unexpected keys: {}", few(unexpected)));
        }
        Err(BenchError::user(format!("{source}: weights do not match the {what} config; {}", parts.join("; "))))
    }
}

/// The weight files of a transformers or diffusers model folder, for a model to be run in
/// `kind`: `{st}.safetensors` or `{bin}.bin` (transformers: `model` / `pytorch_model`; diffusers:
/// `diffusion_pytorch_model` for both), their `fp16` variants (`{st}.fp16.safetensors`), and the
/// sharded forms (`{st}.safetensors.index.json`, variant `{st}.safetensors.index.fp16.json`).
/// A half-precision run prefers the fp16 variant (no fp32 copy is ever made); every other
/// precision prefers the full-precision files (an fp16 file would lose bits before a bf16 or
/// fp32 run) and falls back to the variant if it is all the folder has.
pub fn find_weight_files(dir: &Path, st: &str, bin: &str, kind: Kind) -> Result<Vec<PathBuf>> {
    let full = [
        format!("{st}.safetensors"),
        format!("{st}.safetensors.index.json"),
        format!("{bin}.bin"),
        format!("{bin}.bin.index.json"),
    ];
    let fp16 = [
        format!("{st}.fp16.safetensors"),
        format!("{st}.safetensors.index.fp16.json"),
        format!("{bin}.fp16.bin"),
        format!("{bin}.bin.index.fp16.json"),
    ];
    let order: Vec<&String> = if kind == Kind::Half {
        fp16.iter().chain(full.iter()).collect()
    } else {
        full.iter().chain(fp16.iter()).collect()
    };
    let Some(found) = order.iter().map(|f| dir.join(f)).find(|p| p.is_file()) else {
        return Err(BenchError::file(
            dir,
            format!("no weights in the folder (looked for {})", full.iter().chain(fp16.iter()).cloned().collect::<Vec<_>>().join(", ")),
        ));
    };
    if !found.to_string_lossy().ends_with(".json") {
        return Ok(vec![found]);
    }
    // A sharded checkpoint: the index maps each tensor name to its shard file.
    let text = std::fs::read_to_string(&found).map_err(|e| BenchError::file(&found, format!("cannot read: {e}")))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BenchError::file(&found, format!("not valid JSON: {e}")))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| BenchError::file(&found, "no \"weight_map\" object"))?;
    let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() || shards.iter().any(|s| s.contains('/') || s.contains('\\')) {
        return Err(BenchError::file(&found, "weight_map must name shard files in the same folder"));
    }
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// The union of the state dicts in `files` (safetensors or torch.save), floating-point tensors
/// converted to `kind` one at a time as they are read (see `checkpoint::load_safetensors_as`).
pub fn load_weight_files(files: &[PathBuf], kind: Kind) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for file in files {
        let sd = if file.extension().is_some_and(|e| e == "safetensors") {
            checkpoint::load_safetensors_as(file, Some(kind))?
        } else {
            checkpoint::load_state_dict(file, &Select::Auto)?
                .into_iter()
                .map(|(k, t)| {
                    let t = if matches!(t.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) { t.to_kind(kind) } else { t };
                    (k, t)
                })
                .collect()
        };
        for (k, t) in sd {
            if out.insert(k.clone(), t).is_some() {
                return Err(BenchError::file(file, format!("tensor `{k}` is also in another shard")));
            }
        }
    }
    Ok(out)
}
