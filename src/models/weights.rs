//! Weights of a model, read one tensor at a time straight into the precision and device the
//! network runs in, with every name and shape checked in both directions.
//!
//! A safetensors file is not read whole: its header is parsed, and each tensor's byte range is
//! read when the network asks for that tensor, converted, and the file-precision copy dropped.
//! Peak memory is therefore the network in its target precision plus one tensor, and an fp16
//! file loaded for fp16 never passes through fp32. (Not mmap: mapped pages count towards the
//! process's resident set until unmapped, which would double the peak.) `torch.save` files are
//! read through the data-only pickle reader, storage by storage from the zip archive.
use crate::checkpoint::{self, Select};
use crate::{BenchError, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Where a stored tensor lives.
enum Stored {
    /// A byte range of one of the safetensors files, read on demand.
    Range { file: usize, kind: Kind, shape: Vec<i64>, start: u64, len: usize },
    /// Already in memory (torch.save checkpoints, state dicts renamed in memory).
    Tensor(Tensor),
}

/// The tensors of a weight file (or a set of shards), addressable by name.
pub struct WeightSource {
    files: Vec<(PathBuf, std::fs::File)>,
    entries: BTreeMap<String, Stored>,
    /// Path shown in messages.
    pub origin: String,
}

fn safetensors_kind(dtype: &str) -> Option<(Kind, usize)> {
    Some(match dtype {
        "F64" => (Kind::Double, 8),
        "F32" => (Kind::Float, 4),
        "F16" => (Kind::Half, 2),
        "BF16" => (Kind::BFloat16, 2),
        "I64" => (Kind::Int64, 8),
        "I32" => (Kind::Int, 4),
        "I16" => (Kind::Int16, 2),
        "I8" => (Kind::Int8, 1),
        "U8" => (Kind::Uint8, 1),
        "BOOL" => (Kind::Bool, 1),
        _ => return None,
    })
}

impl WeightSource {
    /// A state dict already in memory.
    pub fn from_state_dict(sd: BTreeMap<String, Tensor>, origin: &str) -> Self {
        WeightSource {
            files: vec![],
            entries: sd.into_iter().map(|(k, v)| (k, Stored::Tensor(v))).collect(),
            origin: origin.to_string(),
        }
    }

    /// Opens a weight file by extension: `.safetensors`, a sharded `*.safetensors.index*.json`,
    /// or anything else as a `torch.save` checkpoint (read eagerly).
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".safetensors") {
            let mut s = WeightSource { files: vec![], entries: BTreeMap::new(), origin: path.display().to_string() };
            s.add_safetensors(path)?;
            Ok(s)
        } else if name.contains(".safetensors.index") && name.ends_with(".json") {
            Self::open_sharded(path)
        } else {
            let sd = checkpoint::load_state_dict(path, &Select::Auto)?;
            Ok(Self::from_state_dict(sd, &path.display().to_string()))
        }
    }

    /// A sharded safetensors checkpoint: `{"weight_map": {tensor name: shard file}}`.
    fn open_sharded(index: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(index).map_err(|e| BenchError::file(index, format!("cannot read: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BenchError::file(index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| BenchError::file(index, "no \"weight_map\" object"))?;
        let shards: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut s = WeightSource { files: vec![], entries: BTreeMap::new(), origin: index.display().to_string() };
        for shard in shards {
            s.add_safetensors(&dir.join(shard))?;
        }
        for (name, file) in map {
            if !s.entries.contains_key(name) {
                return Err(BenchError::file(index, format!("tensor `{name}` is mapped to {file} but that shard does not hold it")));
            }
        }
        Ok(s)
    }

    /// Reads a safetensors header (8-byte little-endian length, then JSON) and records where each
    /// tensor's bytes are; no tensor data is read.
    fn add_safetensors(&mut self, path: &Path) -> Result<()> {
        let err = |m: String| BenchError::file(path, m);
        let mut file =
            std::fs::File::open(path).map_err(|e| BenchError::io(format!("opening weights {}", path.display()), e))?;
        let file_len = file.metadata().map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?.len();
        let mut len8 = [0u8; 8];
        file.read_exact(&mut len8).map_err(|_| err("not a safetensors file (shorter than its 8-byte header length)".into()))?;
        let n = u64::from_le_bytes(len8);
        if n > 100_000_000 || 8 + n > file_len {
            return Err(err(format!("not a valid safetensors file: header length {n} for a {file_len}-byte file")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(|e| err(format!("reading the safetensors header: {e}")))?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| err(format!("not a valid safetensors file: header is not a JSON object ({e})")))?;
        let data_start = 8 + n;
        let index = self.files.len();
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
            let (kind, size) =
                safetensors_kind(dtype).ok_or_else(|| err(format!("tensor `{name}` has unsupported dtype {dtype}")))?;
            let shape: Vec<i64> = info
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|s| s.iter().map(|d| d.as_i64().unwrap_or(-1)).collect())
                .unwrap_or_default();
            let offsets: Vec<u64> = info
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .map(|s| s.iter().filter_map(|d| d.as_u64()).collect())
                .unwrap_or_default();
            let numel = shape.iter().try_fold(1u64, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
            let ok = match (numel, offsets.as_slice()) {
                (Some(numel), [a, b]) => a <= b && b - a == numel * size as u64 && data_start + b <= file_len,
                _ => false,
            };
            if !ok {
                return Err(err(format!(
                    "tensor `{name}`: shape {shape:?} / data_offsets {offsets:?} do not fit the {file_len}-byte file"
                )));
            }
            let len = (offsets[1] - offsets[0]) as usize;
            let stored = Stored::Range { file: index, kind, shape, start: data_start + offsets[0], len };
            if self.entries.insert(name.clone(), stored).is_some() {
                return Err(err(format!("tensor `{name}` appears in more than one shard")));
            }
        }
        self.files.push((path.to_path_buf(), file));
        Ok(())
    }

    /// Renames every tensor (e.g. an older naming scheme to the current one).
    pub fn rename(mut self, f: impl Fn(&str) -> String) -> Self {
        self.entries = std::mem::take(&mut self.entries).into_iter().map(|(k, v)| (f(&k), v)).collect();
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.entries.get(name).map(|s| match s {
            Stored::Range { shape, .. } => shape.clone(),
            Stored::Tensor(t) => t.size(),
        })
    }

    /// Removes a tensor from the source and returns it in its stored precision, on the CPU.
    fn read(&mut self, name: &str) -> std::result::Result<Option<Tensor>, String> {
        match self.entries.remove(name) {
            None => Ok(None),
            Some(Stored::Tensor(t)) => Ok(Some(t)),
            Some(Stored::Range { file, kind, shape, start, len }) => {
                let (path, f) = &self.files[file];
                let mut buf = vec![0u8; len];
                let mut f: &std::fs::File = f;
                f.seek(SeekFrom::Start(start))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|e| format!("{}: reading `{name}`: {e}", path.display()))?;
                Tensor::f_from_data_size(&buf, &shape, kind).map(Some).map_err(|e| format!("{name}: {e}"))
            }
        }
    }
}

/// What a network's weights amount to once loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WeightStats {
    pub parameters: i64,
    pub bytes: i64,
    /// Element types of the loaded tensors (one entry when the load converted everything).
    pub kinds: Vec<String>,
}

/// Hands tensors to a network under construction by name and expected shape, converting each to
/// the target precision and device, and reports every problem (missing, mis-shaped, unexpected,
/// unreadable) at the end instead of stopping at the first.
pub(crate) struct WeightTaker {
    source: WeightSource,
    pub(crate) requested: Vec<(String, Vec<i64>)>,
    missing: Vec<String>,
    misshaped: Vec<String>,
    unreadable: Vec<String>,
    /// Layers the config makes impossible (e.g. a GroupNorm whose groups do not divide its channels).
    inconsistent: Vec<String>,
    pub(crate) device: Device,
    pub(crate) kind: Kind,
    parameters: i64,
    bytes: i64,
    kinds: BTreeSet<String>,
}

impl WeightTaker {
    pub(crate) fn new(source: WeightSource, device: Device, kind: Kind) -> Self {
        WeightTaker {
            source,
            requested: vec![],
            missing: vec![],
            misshaped: vec![],
            unreadable: vec![],
            inconsistent: vec![],
            device,
            kind,
            parameters: 0,
            bytes: 0,
            kinds: BTreeSet::new(),
        }
    }

    /// A taker with no weights: construction records the names and shapes a config needs.
    pub(crate) fn dry_run() -> Self {
        Self::new(WeightSource::from_state_dict(BTreeMap::new(), "config"), Device::Cpu, Kind::Float)
    }

    /// The tensor `name` of shape `shape`, in the target precision on the target device. A
    /// problem is recorded and an empty placeholder returned: `finish` then fails, so the
    /// placeholder is never computed with.
    pub(crate) fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
        self.requested.push((name.to_string(), shape.to_vec()));
        let placeholder = || Tensor::zeros([0], (Kind::Float, Device::Cpu));
        match self.source.shape(name) {
            None => {
                self.missing.push(name.to_string());
                return placeholder();
            }
            Some(s) if s != shape => {
                self.source.entries.remove(name);
                self.misshaped.push(format!("{name} (file {s:?}, expected {shape:?})"));
                return placeholder();
            }
            Some(_) => {}
        }
        match self.source.read(name) {
            Ok(Some(t)) => {
                let t = if t.is_floating_point() { t.to_kind(self.kind) } else { t };
                let t = t.to_device(self.device);
                self.parameters += t.numel() as i64;
                self.bytes += t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
                self.kinds.insert(format!("{:?}", t.kind()));
                t
            }
            Ok(None) => {
                self.missing.push(name.to_string());
                placeholder()
            }
            Err(e) => {
                self.unreadable.push(e);
                placeholder()
            }
        }
    }

    /// Records that the config asks for an impossible layer; `finish` then fails with `msg`.
    pub(crate) fn inconsistent(&mut self, msg: String) {
        self.inconsistent.push(msg);
    }

    /// Fails unless every requested tensor was present with its shape and every stored tensor
    /// was used; stored tensors under `ignored` prefixes (parts of a checkpoint this network
    /// does not run, e.g. a VAE's encoder) are neither read nor reported.
    pub(crate) fn finish(self, what: &str, ignored: &[&str]) -> Result<WeightStats> {
        if !self.inconsistent.is_empty() {
            let n = self.inconsistent.len();
            let first: Vec<String> = self.inconsistent.into_iter().take(3).collect();
            return Err(BenchError::user(format!(
                "{}: the {what} is inconsistent: {}{}",
                self.source.origin,
                first.join("; "),
                if n > 3 { format!(" (and {} more)", n - 3) } else { String::new() }
            )));
        }
        let unexpected: Vec<String> =
            self.source.names().filter(|k| !ignored.iter().any(|p| k.starts_with(p))).cloned().collect();
        if self.missing.is_empty() && self.misshaped.is_empty() && unexpected.is_empty() && self.unreadable.is_empty() {
            return Ok(WeightStats { parameters: self.parameters, bytes: self.bytes, kinds: self.kinds.into_iter().collect() });
        }
        let few = |v: Vec<String>| {
            let n = v.len();
            let mut s = v.into_iter().take(5).collect::<Vec<_>>().join(", ");
            if n > 5 {
                s.push_str(&format!(" (and {} more)", n - 5));
            }
            s
        };
        let mut parts = vec![];
        if !self.unreadable.is_empty() {
            parts.push(format!("unreadable: {}", few(self.unreadable)));
        }
        if !self.missing.is_empty() {
            parts.push(format!("missing keys: {}", few(self.missing)));
        }
        if !self.misshaped.is_empty() {
            parts.push(format!("wrong shapes: {}", few(self.misshaped)));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected keys: {}", few(unexpected)));
        }
        Err(BenchError::user(format!("{}: weights do not match the {what}; {}", self.source.origin, parts.join("; "))))
    }
}

/// The weight file of a diffusers model folder. diffusers writes `diffusion_pytorch_model` +
/// `.safetensors` or `.bin`, optionally with a `.fp16` variant infix, optionally sharded
/// (`.safetensors.index.json`). safetensors is preferred (read lazily); for an fp16 target the
/// fp16 variant comes first (half the bytes, and exactly what fp16 would round to), otherwise
/// the full-precision file does (an fp16 file would have rounded the weights already).
pub fn pick_weights(dir: &Path, kind: Kind) -> Result<PathBuf> {
    pick_weight_file(dir, "diffusion_pytorch_model", "diffusion_pytorch_model", kind)
}

/// The weight file of a diffusers or transformers component folder, if it has one (for hashing:
/// the same choice the loaders make).
pub fn component_weights(dir: &Path, kind: Kind) -> Option<PathBuf> {
    pick_weights(dir, kind).or_else(|_| pick_weight_file(dir, "model", "pytorch_model", kind)).ok()
}

/// [`pick_weights`] for any file stems: transformers names its weights `model.safetensors` and
/// `pytorch_model.bin` (`st` = "model", `bin` = "pytorch_model"), diffusers both
/// `diffusion_pytorch_model`; the variants and the preference order are the same.
pub fn pick_weight_file(dir: &Path, st: &str, bin: &str, kind: Kind) -> Result<PathBuf> {
    let full = [format!("{st}.safetensors"), format!("{st}.safetensors.index.json")];
    let half = [format!("{st}.fp16.safetensors"), format!("{st}.safetensors.index.fp16.json")];
    let bins = [format!("{bin}.bin"), format!("{bin}.fp16.bin")];
    let order: Vec<&String> = if kind == Kind::Half {
        half.iter().chain(full.iter()).chain(bins.iter().rev()).collect()
    } else {
        full.iter().chain(half.iter()).chain(bins.iter()).collect()
    };
    order.iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
        let alt = if bin == st { "" } else { bin };
        BenchError::file(dir, format!("no {st}[.fp16].safetensors (or {alt}.bin, or a sharded .safetensors.index.json) in the folder"))
    })
}

/// A diffusers model folder's parsed `config.json` and chosen weight file.
pub(crate) struct DiffusersFolder {
    pub(crate) config_path: PathBuf,
    pub(crate) config: serde_json::Value,
    pub(crate) weights: PathBuf,
}

impl DiffusersFolder {
    pub(crate) fn open(dir: &Path, kind: Kind, what: &str) -> Result<Self> {
        if !dir.is_dir() {
            return Err(BenchError::file(
                dir,
                "diffusers model folder not found (expected config.json + diffusion_pytorch_model.safetensors)",
            ));
        }
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| BenchError::file(&config_path, format!("cannot read the {what} config: {e}")))?;
        let config = serde_json::from_str(&text)
            .map_err(|e| BenchError::file(&config_path, format!("not valid JSON: {e}")))?;
        let weights = pick_weights(dir, kind)?;
        tracing::info!("loading {what} weights from {}", weights.display());
        Ok(DiffusersFolder { config_path, config, weights })
    }
}

/// Older diffusers checkpoints name attention weights `query/key/value/proj_attn`.
pub fn diffusers_attention_rename(k: &str) -> String {
    k.replace(".query.", ".to_q.").replace(".key.", ".to_k.").replace(".value.", ".to_v.").replace(".proj_attn.", ".to_out.0.")
}
