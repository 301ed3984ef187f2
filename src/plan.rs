//! Stage 2 of `bench run`: a parsed spec ([`crate::spec::SpecFile`]) → a validated [`Plan`]:
//! defaults filled in, paths resolved (relative to the spec file's folder) and checked to exist,
//! sampler parameters checked against the sampler catalog, the device checked against this
//! machine, and the sweep expanded into [`Cell`]s with stable hashes. Nothing runs until this
//! succeeds; the first problem found is returned as a one-line `BenchError::User`
//! (`FILE:LINE:COL: PATH: MESSAGE`, see `crate::spec`).
//!
//! ## Spec keys, defaults and allowed values
//! | key | default | allowed |
//! |---|---|---|
//! | `name` | required | letters, digits, `_`, `-`, `.` (names the results rows) |
//! | `dataset` | none; `cifar10`/`celeba64` for the DDIM presets | what the model was trained on (`cifar10`, `celeba64`, ...); finds published numbers |
//! | `model.kind` | required | `diffusers`, `ddim`, `torchscript`, `oracle`, `edm` |
//! | `model.path` | required for diffusers, ddim, torchscript, edm | diffusers: a folder with `config.json`; ddim/torchscript: a file; edm: a `network-snapshot-*.pkl` |
//! | `model.space` | `vp`; `flow` when `prediction: flow` | oracle only: `vp`, `sigma` (x = x0 + σ·ε; answers EDM's denoiser D(x; σ)) or `flow` (x_t = (1−t)·x0 + t·ε; answers the velocity) |
//! | `model.config` | required for ddim | `cifar10`, `celeba`, or a map: `ch`, `ch_mult`, `num_res_blocks` (2), `attn_resolutions`, `resolution`, `in_channels` (3), `out_ch` (3), `dropout` (0), `resamp_with_conv` (true) |
//! | `model.ema` | `true` | ddim only: use the checkpoint's EMA weights |
//! | `model.shape` | required for torchscript | `[C, H, W]` |
//! | `model.data.kind` | required for oracle | `gaussian`, `gmm` |
//! | `model.data.shape` | required | one sample's shape, sizes ≥ 1: `[C, H, W]` images, `[C, L]` sequences, any rank |
//! | `model.data.mean` | `0` | gaussian: a number, one number per channel, or an `.npy` path of the full shape |
//! | `model.data.std` | `1` | gaussian: like `mean`, values > 0 |
//! | `model.data.weights`, `means`, `stds` | — | gmm, explicit: K weights > 0 summing to 1, K means and K stds (each like `mean`/`std`) |
//! | `model.data.components`, `seed` | —, `0` | gmm, random: K ≥ 1 components drawn from the seed (instead of the explicit form) |
//! | `schedule.kind` | `linear` | `linear`, `scaled_linear`, `cosine` |
//! | `schedule.beta_start` | `0.0001` (linear), `0.00085` (scaled_linear) | 0 < beta_start ≤ beta_end < 1; not for cosine |
//! | `schedule.beta_end` | `0.02` (linear), `0.012` (scaled_linear) | as above |
//! | `schedule.timesteps` | `1000` | ≥ 2 |
//! | `conditioning` | none | `prompts` (a StableDiffusionPipeline; COCO captions `.json`, `.txt`, `.jsonl`) with `negative_prompt` (`""`), or `class_labels` (`uniform` or a list) with `num_classes`; `guidance_scale` (`1.0`; a list sweeps) |
//! | `samplers` | required, ≥ 1 entry | each `{name, <params>, skip?, steps?}`; a list value sweeps |
//! | `samplers[i].<param>` | the sampler's default (catalog) | the sampler's parameters only, by bench's name or diffusers' keyword |
//! | `samplers[i].skip` (diffusers: `timestep_spacing`, `use_karras_sigmas`/`use_exponential_sigmas`/`use_beta_sigmas`/`use_lu_lambdas: true`) | the sampler's default (catalog; `uniform`) | `uniform`, `quadratic`, `leading`, `trailing`, `linspace`, `ddim_stride`, `sections`, `diffusion_ts`, `time_uniform`, `logsnr`, `time_quadratic`, `karras`, `exponential`, `beta`, `lu`, `edm`, `consistency`, `flow` |
//! | `samplers[i].steps` | top-level `steps` | integers 1..=`schedule.timesteps` |
//! | `samplers[i].schedule_dtype` | `float64`; `float32` when the entry uses diffusers' spelling | `float64`, `float32` (discrete-VP samplers) |
//! | `steps` | required unless every entry has `steps` | as above |
//! | `samples` | `50000` | ≥ 1 |
//! | `batch_size` | `500` | ≥ 1 (does not change any sample; not in `cell_hash`) |
//! | `seed` | `0` | ≥ 0 |
//! | `device` | `auto` | `auto` (cuda:0 if CUDA is available, else cpu), `cpu`, `cuda`, `cuda:N` |
//! | `precision` | `fp32` | `fp32`; `tf32`, `bf16`, `fp16` need a CUDA device (an error on cpu, no silent fallback) |
//! | `metrics` | none; a Gaussian oracle always gets `fd_exact` | `fid`, `fd_pixel`, `fd_exact`, `inception_score`, `kid`, `prdc`, `fd_features`, `context_fid`, `clip_score` (`{model: CLIPModel folder}`; needs prompts) |
//! | `metrics.fid.reference` | required | an `.npz` of reference statistics |
//! | `metrics.fid.weights` | `$BENCH_DATA/models/pt_inception-2015-12-05-6726825d.pth` (`$BENCH_DATA` defaults to `./data`) | a file |
//! | `metrics.fid.mode` | `pytorch-fid` | `pytorch-fid`, `tf`, `clean` |
//! | `metrics.fid.dims` | `2048` | `64`, `192`, `768`, `2048` |
//! | `metrics.fid.allow_custom_weights` | `false` | `true` accepts Inception weights other than pytorch-fid's file |
//! | `metrics.fd_pixel.reference` | the oracle's exact moments | an `.npz`; required unless the model is an oracle |
//! | `metrics.fd_exact` | on for a Gaussian oracle | Gaussian oracle only |
//! | `metrics.inception_score` | off; `{}` or no value: torch-fidelity's defaults | `splits` (`10`, ≤ `samples`), `shuffle` (`true`), `seed` (`2020`); needs `metrics.fid` with classifier weights |
//! | `metrics.kid` | off | `subsets` (`100`), `subset_size` (`min(1000, samples)`), `seed` (`2020`); needs `metrics.fid` whose reference keeps features (`bench stats --ref-features N`) |
//! | `metrics.prdc` | off | `k` (`3`), `batch_size` (`10000`); needs `metrics.fid` whose reference keeps features |
//! | `metrics.fd_features` | none | a list of `{name, encoder, reference, input, resize, normalize}`: FD in a TorchScript encoder's feature space, column `name` (`fd_...`); see `metrics::fd_features` |
//! | `metrics.context_fid` | off | `encoder` (TS2Vec TorchScript, [B, T, C] → [B, T, D]), `reference` (real windows `.npy` [N, T, C] in [0, 1], or an `.npz` of their statistics), `scaling` (`neg_one_to_one`; `unit`, `{min_max: {min, max}}`), `batch_size` (`256`); samples must be sequences [C, L] |
//! | `repeats` | `1` | 1..=1000: independent seeds per cell (`seed + r`); each metric column is the mean and `<column>_ci95` the 95% t-interval half-width |
//! | `output` | `reports/<name>` under the working directory | a folder |
//! | `save_samples` | `64` | integer ≥ 0, or `all` |
//! | `keep_stats` | `false` | `true` keeps each part's statistics checkpoint (`OUT/cells/<hash>/`) after the cell's row is written |
//!
//! Relative paths written in a spec are resolved against the spec file's folder (so a spec and its
//! data can move together); defaults that are not written (FID weights, output) are relative to
//! the working directory / `$BENCH_DATA`.
//!
//! ## Cells and hashes
//! Each sampler entry expands to the cartesian product of its list-valued parameters (in written
//! order, first key slowest), then `skip`, then `steps`, then `conditioning.guidance_scale`
//! (fastest). A cell's parameters include
//! the catalog defaults of those not written. `cell_hash` = SHA-256 of a JSON document of
//! everything that determines the cell's samples and metrics: the model as written (kind, path
//! string, resolved DDIM config, data) plus an optional weights fingerprint, the schedule, the
//! sampler, its parameters, skip, steps, samples, seed, precision and the metric configuration.
//! Not in it: device, batch size, output, save_samples, keep_stats (they must not change any number).
//! `spec_hash` = SHA-256 of the JSON of the whole parsed spec (comments and formatting excluded).
use crate::conditioning::{read_prompts, ClassLabels, ConditionSource, ConditioningPlan};
use crate::hashing::HashCache;
use crate::metrics::inception_score::IsParams;
use crate::metrics::kid::KidParams;
use crate::metrics::context_fid::TsScaling;
use crate::metrics::fd_features::FdFeaturesSpec;
use crate::metrics::prdc::PrdcParams;
use crate::models::unet::DdimModelConfig;
use crate::models::{NoiseSpace, Prediction};
use crate::registry;
use crate::sampling::{self, SamplerDef};
use crate::schedule::{NoiseSchedule, ScheduleKind};
use crate::spec::{
    self, DataKind, DdimConfigSpec, ModelKind, Moment, RawClassLabels, RawConditioning, RawData, RawModel, SpecFile, Sweep, YamlPath,
};
pub use crate::spec::{ParamValue, Precision, ResizeMode, SaveSamples, Skip};
use crate::{BenchError, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// The plan.

/// What the machine offers; `Host::probe()` asks libtorch, tests construct it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub cuda_devices: usize,
}

impl Host {
    pub fn probe() -> Self {
        let n = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
        Host { cuda_devices: n }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DevicePlan {
    Cpu,
    Cuda(usize),
}

impl DevicePlan {
    pub fn to_tch(self) -> tch::Device {
        match self {
            DevicePlan::Cpu => tch::Device::Cpu,
            DevicePlan::Cuda(n) => tch::Device::Cuda(n),
        }
    }
}

impl fmt::Display for DevicePlan {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DevicePlan::Cpu => f.write_str("cpu"),
            DevicePlan::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelPlan {
    /// A diffusers `UNet2DModel` folder (config.json + weights).
    Diffusers {
        path: PathBuf,
    },
    /// A DDIM-repo checkpoint with its architecture.
    Ddim {
        path: PathBuf,
        config: DdimModelConfig,
        ema: bool,
    },
    /// A TorchScript model taking (x [B, ...shape], t [B][, cond]), optionally with a TorchScript
    /// decoder from its samples (latents) to images.
    Torchscript {
        path: PathBuf,
        shape: Vec<i64>,
        decoder: Option<PathBuf>,
        /// Prompt embeddings from this folder's tokenizer and text encoder, as a third input.
        text_encoder: Option<PathBuf>,
    },
    Oracle(DataPlan),
    /// An NVlabs/EDM network pickle, read as data (never executed); a σ-space denoiser.
    Edm {
        path: PathBuf,
    },
    /// A diffusers `StableDiffusionPipeline` folder: text encoder and tokenizer, the
    /// text-conditioned latent UNet, the AutoencoderKL decoder.
    StableDiffusion {
        dir: PathBuf,
    },
    /// A diffusers `LDMPipeline` folder: an unconditional latent UNet2DModel over a VQModel.
    Ldm {
        dir: PathBuf,
    },
    /// A diffusers `ConsistencyModelPipeline` folder: its `unet/` inside the boundary
    /// parameterisation its `scheduler/` config defines; a σ-space model.
    Consistency {
        unet: PathBuf,
        scheduler: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum DataPlan {
    /// `shape` is one sample's: images [C, H, W], sequences [C, L], any rank ≥ 1.
    Gaussian { shape: Vec<i64>, mean: MomentPlan, std: MomentPlan },
    Gmm { shape: Vec<i64>, mixture: GmmPlan },
}

#[derive(Debug, Clone, PartialEq)]
pub enum MomentPlan {
    Scalar(f64),
    PerChannel(Vec<f64>),
    Npy(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub enum GmmPlan {
    Explicit { weights: Vec<f64>, means: Vec<MomentPlan>, stds: Vec<MomentPlan> },
    Random { components: usize, seed: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SchedulePlan {
    pub kind: ScheduleKind,
    /// None for the cosine schedule, which has no β range.
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub timesteps: usize,
    /// Zero terminal SNR (omitted from hashes when off, so older cells keep theirs).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rescale_betas_zero_snr: bool,
}

impl SchedulePlan {
    pub fn noise_schedule(&self) -> Result<NoiseSchedule> {
        let s = NoiseSchedule::new(self.kind, self.beta_start.unwrap_or(0.0), self.beta_end.unwrap_or(0.0), self.timesteps)?;
        Ok(if self.rescale_betas_zero_snr { s.rescaled_zero_terminal_snr() } else { s })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsPlan {
    pub fid: Option<FidPlan>,
    pub fd_pixel: Option<FdPixelPlan>,
    /// Closed-form Fréchet distance to the Gaussian oracle's data distribution.
    pub fd_exact: bool,
    /// From `fid`'s Inception pass; KID and PRDC against the features kept in `fid`'s reference.
    pub inception_score: Option<IsParams>,
    pub kid: Option<KidParams>,
    pub prdc: Option<PrdcParams>,
    /// `metrics.fd_features` entries, paths resolved.
    pub fd_features: Vec<FdFeaturesSpec>,
    pub context_fid: Option<ContextFidPlan>,
    /// A transformers CLIPModel folder.
    pub clip_score: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContextFidPlan {
    pub encoder: PathBuf,
    /// Real windows `.npy` [N, T, C] in [0, 1], or their representations' statistics `.npz`.
    pub reference: PathBuf,
    pub scaling: TsScaling,
    pub batch_size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FidPlan {
    pub reference: PathBuf,
    pub weights: PathBuf,
    pub mode: ResizeMode,
    pub dims: usize,
    /// Skip the SHA-256 check that the weights are pytorch-fid's (numbers are then not comparable).
    pub allow_custom_weights: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FdPixelPlan {
    /// None: compare with the oracle's exact moments.
    pub reference: Option<PathBuf>,
}

/// One point of the sweep: a sampler with all its parameters fixed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Position in the plan (0-based, stable for a given spec).
    pub index: usize,
    /// Which `samplers:` entry it came from.
    pub entry: usize,
    pub sampler: String,
    /// The sampler's definition.
    #[serde(skip)]
    pub def: &'static SamplerDef,
    /// Every parameter of the sampler, typed, written or default (not `skip`/`steps`).
    pub params: BTreeMap<String, ParamValue>,
    pub skip: Skip,
    pub steps: usize,
    /// The classifier-free guidance scale (None without `conditioning:`).
    pub guidance_scale: Option<f64>,
    /// Hex SHA-256 of everything that determines this cell's samples and metrics.
    pub hash: String,
}

impl Cell {
    pub fn def(&self) -> &'static SamplerDef {
        self.def
    }
    /// `eta=0.2 order=2 …`: the results columns' parameters (eta, order, variant) always, then
    /// every other parameter that differs from its default; `-` when there is none.
    pub fn params_text(&self) -> String {
        let d = self.def();
        let mut shown: Vec<String> = Vec::new();
        let mut keys: Vec<&str> = vec![];
        if d.param("eta").is_some() {
            keys.push("eta");
        }
        if d.param("order").is_some() {
            keys.push("order");
        }
        if let Some(v) = d.variant {
            keys.push(v);
        }
        for k in &keys {
            if let Some(v) = self.params.get(*k) {
                shown.push(format!("{k}={v}"));
            }
        }
        for (k, v) in d.non_default(&self.params) {
            if !keys.contains(&k) {
                shown.push(format!("{k}={v}"));
            }
        }
        if shown.is_empty() {
            "-".into()
        } else {
            shown.join(" ")
        }
    }
}

/// The model as configured, without paths: the files it reads are identified by their content
/// hashes in [`Plan::inputs`]. Typed structs rather than JSON maps: field order is fixed by
/// declaration, so the hash cannot depend on serde_json's map-ordering feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelIdentity {
    pub kind: ModelKind,
    pub ddim_config: Option<DdimModelConfig>,
    pub ema: Option<bool>,
    pub shape: Option<Vec<i64>>,
    /// The oracle's data, with `.npy` paths replaced by the role naming their content hash.
    pub data: Option<RawData>,
    pub prediction: Prediction,
    pub decoder: bool,
    /// Left out for VP models, so their cells keep their hashes.
    #[serde(skip_serializing_if = "is_vp")]
    pub space: NoiseSpace,
}

fn is_vp(space: &NoiseSpace) -> bool {
    *space == NoiseSpace::Vp
}

/// The metric configuration, defaults resolved; files by content (see [`ModelIdentity`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsIdentity {
    pub fid: Option<FidIdentity>,
    /// Some(has a reference file) when fd_pixel is on.
    pub fd_pixel: Option<bool>,
    pub fd_exact: bool,
    // Left out when off, so cells without them keep their hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inception_score: Option<IsParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<KidParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prdc: Option<PrdcParams>,
    /// The entries with their file paths replaced by the inputs' roles (files count by content).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fd_features: Vec<FdFeaturesSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_fid: Option<TsScaling>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub clip_score: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FidIdentity {
    pub mode: ResizeMode,
    pub dims: i64,
}

/// A file whose content determines a cell's numbers, by the role it plays.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Where it is configured, e.g. `model.weights`, `metrics.fid.reference`.
    pub role: String,
    pub path: PathBuf,
    /// SHA-256 of the content; None until [`Plan::hash_inputs`] ran (or the file is missing).
    pub sha256: Option<String>,
}

/// A validated, expanded spec: what the runner consumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    /// What the model was trained on (`dataset:`, or implied by a DDIM preset), for published numbers.
    pub dataset: Option<String>,
    pub spec_path: PathBuf,
    pub spec_hash: String,
    pub model: ModelPlan,
    /// The model's configuration without paths, hashed into every cell.
    pub model_identity: ModelIdentity,
    /// What the network's output means (`model.prediction`, or the model's scheduler config).
    pub prediction: Prediction,
    /// Files whose content determines the numbers (weights, configs, reference statistics).
    pub inputs: Vec<Input>,
    pub schedule: SchedulePlan,
    /// Where the schedule and prediction type came from (`spec`, or the model's scheduler config).
    pub schedule_source: String,
    pub samples: u64,
    pub batch_size: u64,
    pub seed: u64,
    /// Independent seeds per cell: repeat r samples with `seed + r` (see `metrics::repeats`).
    pub repeats: u32,
    pub device: DevicePlan,
    pub precision: Precision,
    pub metrics: MetricsPlan,
    /// The metric configuration, hashed into every cell.
    pub metrics_identity: MetricsIdentity,
    pub output: PathBuf,
    pub save_samples: SaveSamples,
    pub keep_stats: bool,
    /// Per-sample conditions and the guidance sweep, if the spec has `conditioning:`.
    pub conditioning: Option<ConditioningPlan>,
    /// The located one-line error naming every missing file, if any (see [`Plan::check_files`]).
    pub missing_files: Option<String>,
    pub cells: Vec<Cell>,
}

/// The `_class_name` of a diffusers pipeline folder's `model_index.json`, if it has one.
fn pipeline_class(dir: &Path) -> Option<String> {
    let text = fs_err::read_to_string(dir.join("model_index.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("_class_name")?.as_str().map(str::to_owned)
}

/// Bumped whenever the identity document changes shape: every finished cell is then recomputed.
const HASH_SCHEME: u32 = 2;

impl Plan {
    /// Hashes every input file (reusing `cache` where size, mtime and inode are unchanged) and
    /// recomputes the cell hashes from the contents. Missing files stay unhashed.
    pub fn hash_inputs(&mut self, cache: &mut HashCache) -> Result<()> {
        for i in &mut self.inputs {
            i.sha256 = if i.path.exists() { Some(cache.sha256(&i.path)?) } else { None };
        }
        self.rehash_cells();
        Ok(())
    }

    /// The hashes of inputs by role (for run.json and the report).
    pub fn input_hashes(&self) -> BTreeMap<String, Option<String>> {
        self.inputs.iter().map(|i| (i.role.clone(), i.sha256.clone())).collect()
    }

    pub fn input(&self, role: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.role == role)
    }

    fn rehash_cells(&mut self) {
        let hashes: Vec<String> = self.cells.iter().map(|c| self.cell_hash(c)).collect();
        for (c, h) in self.cells.iter_mut().zip(hashes) {
            c.hash = h;
        }
    }

    fn cell_hash(&self, cell: &Cell) -> String {
        #[derive(Serialize)]
        struct CellIdentity<'a> {
            scheme: u32,
            model: &'a ModelIdentity,
            inputs: BTreeMap<&'a str, &'a Option<String>>,
            schedule: &'a SchedulePlan,
            sampler: &'a str,
            /// Only parameters that differ from their defaults: writing a default changes
            /// nothing, and a new parameter whose default keeps the old behaviour keeps hashes.
            params: BTreeMap<&'a str, &'a ParamValue>,
            skip: Skip,
            steps: usize,
            samples: u64,
            seed: u64,
            #[serde(skip_serializing_if = "is_one")]
            repeats: u32,
            precision: Precision,
            metrics: &'a MetricsIdentity,
            // Left out without conditioning, so unconditional cells keep their hashes.
            #[serde(skip_serializing_if = "Option::is_none")]
            conditioning: Option<&'a ConditionSource>,
            #[serde(skip_serializing_if = "Option::is_none")]
            guidance_scale: Option<f64>,
        }
        fn is_one(r: &u32) -> bool {
            *r == 1
        }
        sha256_json(&CellIdentity {
            scheme: HASH_SCHEME,
            model: &self.model_identity,
            inputs: self.inputs.iter().map(|i| (i.role.as_str(), &i.sha256)).collect(),
            schedule: &self.schedule,
            sampler: &cell.sampler,
            params: cell.def().non_default(&cell.params).into_iter().collect(),
            skip: cell.skip,
            steps: cell.steps,
            samples: self.samples,
            seed: self.seed,
            repeats: self.repeats,
            precision: self.precision,
            metrics: &self.metrics_identity,
            conditioning: self.conditioning.as_ref().map(|c| &c.source),
            guidance_scale: cell.guidance_scale,
        })
    }
}

fn sha256_json(v: &impl Serialize) -> String {
    // Serializing plain structs, maps with string keys and finite floats cannot fail.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads, parses and plans a spec file, probing this machine for CUDA. Input files are not
/// hashed yet (see [`Plan::hash_inputs_cached`], after any `--out` override).
pub fn load(path: &Path) -> Result<Plan> {
    load_with(path, &Host::probe())
}

/// [`load`] with an explicit host (tests; `--dry-run` on another machine's behalf).
pub fn load_with(path: &Path, host: &Host) -> Result<Plan> {
    build(&spec::read(path)?, host)
}

impl Plan {
    /// [`Plan::hash_inputs`] with the hash cache kept in the output folder (when it exists), so
    /// a large checkpoint is read once, not on every resume.
    pub fn hash_inputs_cached(&mut self) -> Result<()> {
        let mut cache = HashCache::open(&self.output);
        self.hash_inputs(&mut cache)?;
        cache.save()
    }

    /// The files the spec names that do not exist, in one located message; Ok when all exist.
    pub fn check_files(&self) -> Result<()> {
        match &self.missing_files {
            Some(msg) => Err(BenchError::user(msg.clone())),
            None => Ok(()),
        }
    }
}

/// The most steps a σ sampler's grid takes (samplers on the schedule's labels take at most its
/// timesteps).
const SIGMA_MAX_STEPS: usize = 100_000;

/// Plans an already parsed spec.
pub fn build(spec: &SpecFile, host: &Host) -> Result<Plan> {
    let raw = &spec.raw;
    let root = YamlPath::root();
    let base = spec.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let cx = Cx { spec, base, missing: Default::default() };

    if raw.name.is_empty() || !raw.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err(cx.err(
            &root.key("name"),
            format!("`{}` is not a usable name (allowed: letters, digits, `_`, `-`, `.`)", raw.name),
        ));
    }
    let setup = cx.model(&raw.model)?;
    let dataset = match (&raw.dataset, &raw.model.config) {
        (Some(d), _) if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) => {
            return Err(cx.err(
                &root.key("dataset"),
                format!("`{d}` is not a usable dataset name (allowed: letters, digits, `_`, `-`, `.`; e.g. cifar10, celeba64)"),
            ));
        }
        (Some(d), _) => Some(d.clone()),
        (None, Some(DdimConfigSpec::Preset(p))) if p == "cifar10" => Some("cifar10".to_owned()),
        (None, Some(DdimConfigSpec::Preset(p))) if p == "celeba" => Some("celeba64".to_owned()),
        (None, _) => None,
    };
    let (schedule, prediction, schedule_source) = cx.schedule(&raw.model, setup.scheduler.as_ref())?;
    let space = setup.identity.space;
    let prediction = space.implied_prediction().unwrap_or(prediction);
    let expanded = cx.expand(&schedule, prediction, space, matches!(setup.plan, ModelPlan::Consistency { .. }))?;
    let samples = cx.at_least_1(&root.key("samples"), raw.samples.unwrap_or(50_000))?;
    let batch_size = cx.at_least_1(&root.key("batch_size"), raw.batch_size.unwrap_or(500))?;
    let seed = match raw.seed.unwrap_or(0) {
        s if s >= 0 => s as u64,
        s => return Err(cx.err(&root.key("seed"), format!("must be ≥ 0, got {s}"))),
    };
    let repeats = match raw.repeats.unwrap_or(1) {
        r @ 1..=1000 => r as u32,
        r => return Err(cx.err(&root.key("repeats"), format!("must be 1..=1000 (independent seeds per cell), got {r}"))),
    };
    let device = cx.device(host)?;
    let precision = raw.precision.unwrap_or(Precision::Fp32);
    if device == DevicePlan::Cpu && precision == Precision::Tf32 {
        let why = match raw.device.as_deref() {
            None | Some("auto") => "device `auto` resolved to cpu (no CUDA on this machine)".to_owned(),
            Some(_) => "the device is cpu".to_owned(),
        };
        return Err(cx.err(
            &root.key("precision"),
            format!("`tf32` is a CUDA math mode but {why} (allowed on cpu: fp32, bf16, fp16 where libtorch's CPU kernels run it)"),
        ));
    }
    let (metrics, metrics_identity, metric_inputs) = cx.metrics(&setup.plan)?;
    let output = match &raw.output {
        Some(o) => cx.resolve(o),
        None => PathBuf::from("reports").join(&raw.name),
    };
    // Every missing file in one message (a fresh checkout of a real-model spec lacks several);
    // kept for the runner, so `--dry-run` can list cells without the files.
    let missing = cx.missing.take();
    let missing_files = missing.first().map(|(at, first)| {
        let others: Vec<String> = missing[1..].iter().map(|(a, m)| format!("; also {a}: {m}")).collect();
        cx.err(at, format!("{first}{}", others.concat())).to_string()
    });
    let mut inputs = setup.inputs;
    inputs.extend(metric_inputs);
    let conditioning = match &raw.conditioning {
        Some(c) => Some(cx.conditioning(c, &setup.plan, &mut inputs)?),
        None if matches!(setup.plan, ModelPlan::StableDiffusion { .. }) => {
            return Err(cx.err(&root.key("model"), "a text-to-image pipeline needs prompts: add `conditioning: {prompts: FILE}`"));
        }
        None => None,
    };
    let mut plan = Plan {
        name: raw.name.clone(),
        dataset,
        spec_path: spec.path.clone(),
        spec_hash: sha256_json(raw),
        model: setup.plan,
        model_identity: ModelIdentity { prediction, ..setup.identity },
        prediction,
        inputs,
        schedule,
        schedule_source,
        samples,
        batch_size,
        seed,
        repeats,
        device,
        precision,
        metrics,
        metrics_identity,
        output,
        save_samples: raw.save_samples.unwrap_or(SaveSamples::Count(64)),
        keep_stats: raw.keep_stats.unwrap_or(false),
        conditioning,
        missing_files,
        cells: Vec::new(),
    };
    let scales: Vec<Option<f64>> = match &plan.conditioning {
        Some(c) => c.guidance_scales.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let cells = expanded.into_iter().flat_map(|e| scales.iter().map(move |&w| (e.clone(), w)));
    for (index, ((entry, def, params, skip, steps), guidance_scale)) in cells.enumerate() {
        let mut cell =
            Cell { index, entry, sampler: def.name.to_owned(), def, params, skip, steps, guidance_scale, hash: String::new() };
        cell.hash = plan.cell_hash(&cell);
        if let Some(&first) = seen.get(&cell.hash) {
            let prev: &Cell = &plan.cells[first];
            return Err(cx.err(
                &root.key("samplers").index(entry),
                format!(
                    "repeats cell #{first} of samplers[{}] ({} {} skip={} steps={}); remove the repeated value",
                    prev.entry,
                    prev.sampler,
                    prev.params_text(),
                    prev.skip.name(),
                    prev.steps
                ),
            ));
        }
        seen.insert(cell.hash.clone(), index);
        plan.cells.push(cell);
    }
    Ok(plan)
}

/// What the `model:` section resolves to.
struct ModelSetup {
    plan: ModelPlan,
    identity: ModelIdentity,
    inputs: Vec<Input>,
    /// The model folder's own scheduler config, which supplies the schedule's defaults.
    scheduler: Option<crate::schedule::ModelSchedulerConfig>,
}

type Expanded = (usize, &'static SamplerDef, BTreeMap<String, ParamValue>, Skip, usize);

/// Validation context: the spec (for error positions) and the folder relative paths start from.
struct Cx<'a> {
    spec: &'a SpecFile,
    base: &'a Path,
    /// Missing files found so far: (where, message).
    missing: std::cell::RefCell<Vec<(YamlPath, String)>>,
}

impl Cx<'_> {
    fn err(&self, at: &YamlPath, msg: impl fmt::Display) -> BenchError {
        self.spec.error_at(at, msg)
    }

    fn resolve(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// `path` must exist; a missing file that is a known artifact names where to get it.
    /// Records a missing file (reported after all other checks, all files in one message) and
    /// returns the path either way.
    fn existing(&self, at: &YamlPath, path: PathBuf) -> Result<PathBuf> {
        if !path.exists() {
            let mut msg = format!("not found: {}", path.display());
            match registry::ARTIFACTS.iter().find(|a| path.ends_with(a.file)) {
                Some(a) if a.url.starts_with("http") => msg += &format!(" ({}; get it from {})", a.what, a.url),
                Some(a) => msg += &format!(" ({}; {})", a.what, a.url.trim_start_matches('(').trim_end_matches(')')),
                None => msg += " (relative paths start from the spec file's folder)",
            }
            self.missing.borrow_mut().push((at.clone(), msg));
        }
        Ok(path)
    }

    fn at_least_1(&self, at: &YamlPath, v: i64) -> Result<u64> {
        if v >= 1 {
            Ok(v as u64)
        } else {
            Err(self.err(at, format!("must be ≥ 1, got {v}")))
        }
    }

    /// Keys written in `map_at` that `kind` does not take.
    fn only_keys(&self, map_at: &YamlPath, what: &str, written: &[(&str, bool)], allowed: &[&str]) -> Result<()> {
        for (key, present) in written {
            if *present && !allowed.contains(key) {
                return Err(self.err(
                    &map_at.key(key),
                    format!("`{key}` does not apply to {what} (allowed: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// `conditioning:` → what each sample is conditioned on and the guidance scales; the model
    /// must take that kind of condition.
    fn conditioning(&self, c: &RawConditioning, model: &ModelPlan, inputs: &mut Vec<Input>) -> Result<ConditioningPlan> {
        let at = YamlPath::root().key("conditioning");
        let text_model = matches!(model, ModelPlan::StableDiffusion { .. } | ModelPlan::Torchscript { text_encoder: Some(_), .. });
        let source = match (&c.prompts, &c.class_labels) {
            (Some(_), Some(_)) => return Err(self.err(&at.key("class_labels"), "give `prompts` or `class_labels`, not both")),
            (None, None) => {
                return Err(self.err(&at, "needs `prompts` (a text-to-image model) or `class_labels` with `num_classes` (a class-conditional one)"))
            }
            (Some(p), None) => {
                if !text_model {
                    return Err(self.err(
                        &at.key("prompts"),
                        "the model has no text encoder: prompts need a diffusers StableDiffusionPipeline folder, or a torchscript model with `text_encoder`",
                    ));
                }
                if let Some(n) = c.num_classes {
                    return Err(self.err(&at.key("num_classes"), format!("`num_classes: {n}` goes with `class_labels`, not `prompts`")));
                }
                let file = self.existing(&at.key("prompts"), self.resolve(p))?;
                inputs.push(Input { role: "conditioning.prompts".into(), path: file.clone(), sha256: None });
                let prompts = if file.is_file() { read_prompts(&file).map_err(|e| self.err(&at.key("prompts"), e))? } else { Vec::new() };
                ConditionSource::Prompts { file, prompts, negative_prompt: c.negative_prompt.clone().unwrap_or_default() }
            }
            (None, Some(labels)) => {
                if text_model {
                    return Err(self.err(&at.key("class_labels"), "the model is text-conditioned: give it `prompts`"));
                }
                if c.negative_prompt.is_some() {
                    return Err(self.err(&at.key("negative_prompt"), "a negative prompt goes with `prompts`, not `class_labels`"));
                }
                let n = match c.num_classes {
                    Some(n) if n >= 1 => n,
                    Some(n) => return Err(self.err(&at.key("num_classes"), format!("must be ≥ 1, got {n}"))),
                    None => return Err(self.err(&at, "`class_labels` needs `num_classes` (the classes the model was trained on, e.g. 1000)")),
                };
                let labels = match labels {
                    RawClassLabels::Rule(r) if r == "uniform" => ClassLabels::Uniform,
                    RawClassLabels::Rule(r) => {
                        return Err(self.err(&at.key("class_labels"), format!("`{r}` is not a label rule (allowed: uniform, or a list of labels)")))
                    }
                    RawClassLabels::List(l) if l.is_empty() => return Err(self.err(&at.key("class_labels"), "the list is empty")),
                    RawClassLabels::List(l) => {
                        if let Some((i, k)) = l.iter().enumerate().find(|(_, k)| !(0..n).contains(*k)) {
                            return Err(self.err(&at.key("class_labels").index(i), format!("label {k} is outside 0..{n} (num_classes: {n})")));
                        }
                        ClassLabels::Cycle(l.clone())
                    }
                };
                ConditionSource::Classes { labels, num_classes: n }
            }
        };
        let guidance_scales = c.guidance_scale.as_ref().map_or(vec![1.0], |s| s.values().to_vec());
        if guidance_scales.is_empty() {
            return Err(self.err(&at.key("guidance_scale"), "the list is empty"));
        }
        for (i, w) in guidance_scales.iter().enumerate() {
            let here = if c.guidance_scale.as_ref().is_some_and(Sweep::is_list) { at.key("guidance_scale").index(i) } else { at.key("guidance_scale") };
            if !w.is_finite() || *w < 0.0 {
                return Err(self.err(&here, format!("must be a finite number ≥ 0 (1 = no guidance), got {w}")));
            }
            if guidance_scales[..i].contains(w) {
                return Err(self.err(&here, format!("{w} is listed twice")));
            }
        }
        Ok(ConditioningPlan { source, guidance_scales })
    }

    /// The files of a prompt encoder (`dir/tokenizer/`, `dir/text_encoder/`), hashed as inputs.
    fn text_encoder_inputs(&self, at: &YamlPath, dir: &Path, inputs: &mut Vec<Input>) -> Result<()> {
        let te = dir.join("text_encoder");
        inputs.push(Input { role: "model.text_encoder.config".into(), path: self.existing(at, te.join("config.json"))?, sha256: None });
        if let Some(w) = crate::models::weights::component_weights(&te, self.weights_kind()) {
            inputs.push(Input { role: "model.text_encoder.weights".into(), path: w, sha256: None });
        }
        for f in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
            let role = format!("model.tokenizer.{}", f.trim_end_matches(".json").trim_end_matches(".txt"));
            inputs.push(Input { role, path: self.existing(at, dir.join("tokenizer").join(f))?, sha256: None });
        }
        Ok(())
    }

    /// The dtype the run reads weights in, which picks among a folder's weight files (an fp16
    /// run reads the `.fp16` variant when there is one, and that is the file whose content counts).
    fn weights_kind(&self) -> tch::Kind {
        crate::models::load::precision_kind(self.spec.raw.precision.unwrap_or(Precision::Fp32))
    }

    fn required<'v, T>(&self, map_at: &YamlPath, v: &'v Option<T>, key: &str, what: &str, hint: &str) -> Result<&'v T> {
        v.as_ref().ok_or_else(|| self.err(map_at, format!("{what} needs `{key}` ({hint})")))
    }

    fn model(&self, m: &RawModel) -> Result<ModelSetup> {
        let at = YamlPath::root().key("model");
        let written = [
            ("kind", true),
            ("path", m.path.is_some()),
            ("config", m.config.is_some()),
            ("ema", m.ema.is_some()),
            ("shape", m.shape.is_some()),
            ("data", m.data.is_some()),
            ("prediction", m.prediction.is_some()),
            ("decoder", m.decoder.is_some()),
            ("override_model_scheduler", m.override_model_scheduler.is_some()),
            ("space", m.space.is_some()),
            ("text_encoder", m.text_encoder.is_some()),
        ];
        let what = format!("model kind `{}`", m.kind.as_str());
        let allowed: &[&str] = match m.kind {
            ModelKind::Diffusers => &["kind", "path", "prediction", "override_model_scheduler"],
            ModelKind::Ddim => &["kind", "path", "config", "ema", "prediction"],
            ModelKind::Torchscript => &["kind", "path", "shape", "prediction", "decoder", "text_encoder"],
            ModelKind::Oracle => &["kind", "data", "prediction", "space"],
            ModelKind::Edm => &["kind", "path", "prediction"],
        };
        self.only_keys(&at, &what, &written, allowed)?;
        let path = |hint: &str| -> Result<PathBuf> {
            let p = self.required(&at, &m.path, "path", &what, hint)?;
            self.existing(&at.key("path"), self.resolve(p))
        };
        let input = |role: &str, path: &Path| Input { role: role.into(), path: path.to_owned(), sha256: None };
        let mut ddim_config = None;
        let mut inputs = Vec::new();
        let mut scheduler = None;
        let mut data_identity = m.data.clone();
        let plan = match m.kind {
            ModelKind::Diffusers => 'diffusers: {
                let p = path("a diffusers model folder")?;
                let component = |inputs: &mut Vec<Input>, role: &str, dir: &Path| -> Result<()> {
                    inputs.push(input(&format!("{role}.config"), &self.existing(&at.key("path"), dir.join("config.json"))?));
                    if let Some(w) = crate::models::weights::component_weights(dir, self.weights_kind()) {
                        inputs.push(input(&format!("{role}.weights"), &w));
                    }
                    Ok(())
                };
                match pipeline_class(&p).as_deref() {
                    Some("ConsistencyModelPipeline") => {
                        let (unet, scheduler) = (p.join("unet"), p.join("scheduler").join("scheduler_config.json"));
                        inputs.push(input("model.pipeline", &p.join("model_index.json")));
                        component(&mut inputs, "model", &unet)?;
                        inputs.push(input("model.scheduler", &self.existing(&at.key("path"), scheduler.clone())?));
                        break 'diffusers ModelPlan::Consistency { unet, scheduler };
                    }
                    Some(class @ ("StableDiffusionPipeline" | "LDMPipeline")) => {
                        inputs.push(input("model.pipeline", &p.join("model_index.json")));
                        component(&mut inputs, "model", &p.join("unet"))?;
                        let text = class == "StableDiffusionPipeline";
                        let decoder = p.join(if text { "vae" } else { "vqvae" });
                        component(&mut inputs, "model.decoder", &decoder)?;
                        if text {
                            self.text_encoder_inputs(&at.key("path"), &p, &mut inputs)?;
                        }
                        let sc = self.existing(&at.key("path"), p.join("scheduler").join("scheduler_config.json"))?;
                        if sc.is_file() {
                            scheduler = Some(crate::schedule::ModelSchedulerConfig::read(&sc).map_err(|e| self.err(&at.key("path"), e))?);
                        }
                        break 'diffusers if text { ModelPlan::StableDiffusion { dir: p } } else { ModelPlan::Ldm { dir: p } };
                    }
                    Some(other) if p.join("unet").is_dir() => {
                        return Err(self.err(
                            &at.key("path"),
                            format!(
                                "{} is a `{other}` folder; pipeline folders bench loads: StableDiffusionPipeline, LDMPipeline, ConsistencyModelPipeline (or give the `unet/` folder of an unconditional UNet2DModel)",
                                p.display()
                            ),
                        ));
                    }
                    _ => {}
                }
                if p.exists() && !p.join("config.json").is_file() {
                    let hint = if p.join("model_index.json").is_file() && p.join("unet").join("config.json").is_file() {
                        format!(" — it is a pipeline folder: use {}", p.join("unet").display())
                    } else {
                        String::new()
                    };
                    return Err(self.err(
                        &at.key("path"),
                        format!("{} is not a diffusers model folder (no config.json in it){hint}", p.display()),
                    ));
                }
                if p.is_dir() {
                    component(&mut inputs, "model", &p)?;
                    if let Some(sc) = crate::schedule::ModelSchedulerConfig::find(&p) {
                        scheduler = Some(crate::schedule::ModelSchedulerConfig::read(&sc).map_err(|e| self.err(&at.key("path"), e))?);
                    }
                }
                ModelPlan::Diffusers { path: p }
            }
            ModelKind::Ddim => {
                let cfg =
                    self.required(&at, &m.config, "config", &what, "cifar10, celeba, or a map with ch, ch_mult, ...")?;
                let config = match cfg {
                    DdimConfigSpec::Preset(name) => DdimModelConfig::preset(name).map_err(|_| {
                        let mut msg = format!("unknown preset `{name}`");
                        if let Some(s) = spec::suggest(name, ["cifar10", "celeba"]) {
                            msg += &format!("; did you mean `{s}`?");
                        }
                        self.err(&at.key("config"), msg + " (allowed: cifar10, celeba, or a map with ch, ch_mult, ...)")
                    })?,
                    DdimConfigSpec::Explicit(c) => c.clone(),
                };
                ddim_config = Some(config.clone());
                let p = path("the DDIM checkpoint file")?;
                inputs.push(input("model.weights", &p));
                ModelPlan::Ddim { path: p, config, ema: m.ema.unwrap_or(true) }
            }
            ModelKind::Torchscript => {
                let s = self.required(&at, &m.shape, "shape", &what, "the shape of one sample, e.g. [C, H, W] or [C, L]")?;
                let shape = self.any_shape(&at.key("shape"), s)?;
                let p = path("a TorchScript file")?;
                inputs.push(input("model.weights", &p));
                let decoder = match &m.decoder {
                    Some(d) => {
                        let d = self.existing(&at.key("decoder"), self.resolve(d))?;
                        inputs.push(input("model.decoder", &d));
                        Some(d)
                    }
                    None => None,
                };
                let text_encoder = match &m.text_encoder {
                    Some(t) => {
                        let t = self.existing(&at.key("text_encoder"), self.resolve(t))?;
                        self.text_encoder_inputs(&at.key("text_encoder"), &t, &mut inputs)?;
                        Some(t)
                    }
                    None => None,
                };
                ModelPlan::Torchscript { path: p, shape, decoder, text_encoder }
            }
            ModelKind::Oracle => {
                let d = self.required(
                    &at,
                    &m.data,
                    "data",
                    &what,
                    "{kind: gaussian, shape: [C, H, W], ...} or {kind: gmm, ...}",
                )?;
                let data = self.data(&at.key("data"), d)?;
                // .npy moments are identified by content: the path becomes the input's role.
                if let (DataPlan::Gaussian { mean, std, .. }, Some(ident)) = (&data, data_identity.as_mut()) {
                    for (key, moment, slot) in [("mean", mean, &mut ident.mean), ("std", std, &mut ident.std)] {
                        if let MomentPlan::Npy(p) = moment {
                            let role = format!("model.data.{key}");
                            inputs.push(input(&role, p));
                            *slot = Some(Moment::Npy(role));
                        }
                    }
                }
                if let (DataPlan::Gmm { mixture: GmmPlan::Explicit { means, stds, .. }, .. }, Some(ident)) = (&data, data_identity.as_mut()) {
                    for (key, list, slot) in [("means", means, &mut ident.means), ("stds", stds, &mut ident.stds)] {
                        for (j, moment) in list.iter().enumerate() {
                            if let (MomentPlan::Npy(p), Some(v)) = (moment, slot.as_mut()) {
                                let role = format!("model.data.{key}[{j}]");
                                inputs.push(input(&role, p));
                                v[j] = Moment::Npy(role);
                            }
                        }
                    }
                }
                ModelPlan::Oracle(data)
            }
            ModelKind::Edm => {
                let p = path("an NVlabs/EDM network-snapshot-*.pkl")?;
                inputs.push(input("model.weights", &p));
                ModelPlan::Edm { path: p }
            }
        };
        let space = match (&plan, m.space, m.prediction) {
            (ModelPlan::Edm { .. } | ModelPlan::Consistency { .. }, _, _) => NoiseSpace::Sigma,
            (_, Some(s), _) => s,
            (_, None, Some(Prediction::Flow)) => NoiseSpace::Flow,
            _ => NoiseSpace::Vp,
        };
        // σ-space models output the denoised x̂0 and flow models the velocity, by definition.
        match (space.implied_prediction(), m.prediction) {
            (Some(want), Some(p)) if p != want => {
                return Err(self.err(
                    &at.key("prediction"),
                    format!("a {} model outputs `{}`: leave `prediction` out or write `{}`", space.as_str(), want.as_str(), want.as_str()),
                ))
            }
            (None, Some(Prediction::Flow)) => {
                return Err(self.err(&at.key("space"), "`prediction: flow` is a rectified-flow model: leave `space` out or write `flow`"))
            }
            _ => {}
        }
        if space != NoiseSpace::Vp && matches!(plan, ModelPlan::Oracle(DataPlan::Gmm { .. })) {
            return Err(self.err(&at.key("space"), format!("`{}` needs data kind `gaussian` (the mixture oracle is VP only)", space.as_str())));
        }
        let identity = ModelIdentity {
            kind: m.kind,
            ddim_config,
            ema: (m.kind == ModelKind::Ddim).then(|| m.ema.unwrap_or(true)),
            shape: m.shape.clone(),
            data: data_identity,
            prediction: m.prediction.unwrap_or_default(),
            decoder: m.decoder.is_some() || matches!(plan, ModelPlan::StableDiffusion { .. } | ModelPlan::Ldm { .. }),
            space,
        };
        Ok(ModelSetup { plan, identity, inputs, scheduler })
    }

    /// A sample shape of any rank ≥ 1 (images [C, H, W], sequences [C, L], …).
    fn any_shape(&self, at: &YamlPath, s: &[i64]) -> Result<Vec<i64>> {
        if s.is_empty() || s.iter().any(|&d| d < 1) {
            return Err(self.err(at, format!("must list sizes ≥ 1, e.g. [C, H, W] or [C, L], got {s:?}")));
        }
        Ok(s.to_vec())
    }

    fn data(&self, at: &YamlPath, d: &RawData) -> Result<DataPlan> {
        let written = [
            ("kind", true),
            ("shape", d.shape.is_some()),
            ("mean", d.mean.is_some()),
            ("std", d.std.is_some()),
            ("weights", d.weights.is_some()),
            ("means", d.means.is_some()),
            ("stds", d.stds.is_some()),
            ("components", d.components.is_some()),
            ("seed", d.seed.is_some()),
        ];
        let (what, allowed): (&str, &[&str]) = match d.kind {
            DataKind::Gaussian => ("data kind `gaussian`", &["kind", "shape", "mean", "std"]),
            DataKind::Gmm => ("data kind `gmm`", &["kind", "shape", "weights", "means", "stds", "components", "seed"]),
        };
        self.only_keys(at, what, &written, allowed)?;
        let shape = self.any_shape(&at.key("shape"), self.required(at, &d.shape, "shape", what, "[C, H, W] or [C, L]")?)?;
        let c = shape[0];
        match d.kind {
            DataKind::Gaussian => Ok(DataPlan::Gaussian {
                shape,
                mean: self.moment(&at.key("mean"), d.mean.as_ref().unwrap_or(&Moment::Scalar(0.0)), c, false)?,
                std: self.moment(&at.key("std"), d.std.as_ref().unwrap_or(&Moment::Scalar(1.0)), c, true)?,
            }),
            DataKind::Gmm => {
                let explicit = d.weights.is_some() || d.means.is_some() || d.stds.is_some();
                let how = "either `weights`, `means` and `stds`, or `components` (and optionally `seed`)";
                if explicit && d.components.is_some() {
                    return Err(self.err(&at.key("components"), format!("a gmm takes {how}, not both")));
                }
                if !explicit {
                    let k = self.required(at, &d.components, "components", what, how)?;
                    let components = self.at_least_1(&at.key("components"), *k)? as usize;
                    let seed = match d.seed.unwrap_or(0) {
                        s if s >= 0 => s as u64,
                        s => return Err(self.err(&at.key("seed"), format!("must be ≥ 0, got {s}"))),
                    };
                    return Ok(DataPlan::Gmm { shape, mixture: GmmPlan::Random { components, seed } });
                }
                if d.seed.is_some() {
                    return Err(self.err(&at.key("seed"), "`seed` only applies with `components` (random mixtures)"));
                }
                let weights = self.required(at, &d.weights, "weights", what, how)?;
                let means = self.required(at, &d.means, "means", what, how)?;
                let stds = self.required(at, &d.stds, "stds", what, how)?;
                let k = weights.len();
                if k == 0 {
                    return Err(self.err(&at.key("weights"), "empty list; give one weight per component"));
                }
                if let Some(j) = weights.iter().position(|w| !(w.is_finite() && *w > 0.0)) {
                    return Err(self.err(&at.key("weights").index(j), format!("must be > 0, got {}", weights[j])));
                }
                let sum: f64 = weights.iter().sum();
                if (sum - 1.0).abs() > 1e-6 {
                    return Err(self.err(&at.key("weights"), format!("must sum to 1, got {sum}")));
                }
                for (key, len) in [("means", means.len()), ("stds", stds.len())] {
                    if len != k {
                        return Err(self.err(&at.key(key), format!("has {len} entries but `weights` has {k}")));
                    }
                }
                let means = (means.iter().enumerate())
                    .map(|(j, m)| self.moment(&at.key("means").index(j), m, c, false))
                    .collect::<Result<_>>()?;
                let stds = (stds.iter().enumerate())
                    .map(|(j, m)| self.moment(&at.key("stds").index(j), m, c, true))
                    .collect::<Result<_>>()?;
                Ok(DataPlan::Gmm { shape, mixture: GmmPlan::Explicit { weights: weights.clone(), means, stds } })
            }
        }
    }

    fn moment(&self, at: &YamlPath, m: &Moment, channels: i64, positive: bool) -> Result<MomentPlan> {
        let ok = |x: f64| x.is_finite() && (!positive || x > 0.0);
        let need = if positive { "a number > 0" } else { "a finite number" };
        match m {
            Moment::Scalar(x) if ok(*x) => Ok(MomentPlan::Scalar(*x)),
            Moment::Scalar(x) => Err(self.err(at, format!("must be {need}, got {x}"))),
            Moment::PerChannel(v) => {
                if v.len() as i64 != channels {
                    return Err(self.err(
                        at,
                        format!("needs one value per channel: shape[0] is {channels}, got {} values", v.len()),
                    ));
                }
                if let Some(j) = v.iter().position(|x| !ok(*x)) {
                    return Err(self.err(&at.index(j), format!("must be {need}, got {}", v[j])));
                }
                Ok(MomentPlan::PerChannel(v.clone()))
            }
            Moment::Npy(s) if s.ends_with(".npy") => Ok(MomentPlan::Npy(self.existing(at, self.resolve(s))?)),
            Moment::Npy(s) => Err(self
                .err(at, format!("expected a number, a list with one number per channel, or an .npy path, got `{s}`"))),
        }
    }

    /// The schedule and prediction type: the spec's values, with defaults from the model folder's
    /// scheduler config when it has one; a written value contradicting that config is an error
    /// unless `model.override_model_scheduler: true`. Returns where they came from too.
    fn schedule(
        &self,
        m: &RawModel,
        model_config: Option<&crate::schedule::ModelSchedulerConfig>,
    ) -> Result<(SchedulePlan, Prediction, String)> {
        let at = YamlPath::root().key("schedule");
        let none = spec::RawSchedule { kind: None, beta_start: None, beta_end: None, timesteps: None, rescale_betas_zero_snr: None };
        let s = self.spec.raw.schedule.as_ref().unwrap_or(&none);
        let overrides = m.override_model_scheduler.unwrap_or(false);
        let mut source = "spec".to_string();
        let (mut kind, mut b0, mut b1, mut t, mut prediction, mut zero_snr) =
            (s.kind, s.beta_start, s.beta_end, s.timesteps, m.prediction, s.rescale_betas_zero_snr);
        if let Some(c) = model_config {
            let config = c.path.display();
            let cosine = matches!(c.kind, ScheduleKind::Cosine | ScheduleKind::Exp);
            let model_b0 = (!cosine).then_some(c.beta_start);
            let model_b1 = (!cosine).then_some(c.beta_end);
            let conflicts: [(YamlPath, String, String, bool); 6] = [
                (at.key("kind"), format!("{:?}", s.kind.map(|k| k.as_str())), c.kind.as_str().into(), s.kind.is_some_and(|k| k != c.kind)),
                (at.key("beta_start"), format!("{:?}", s.beta_start), format!("{:?}", model_b0), s.beta_start.is_some() && s.beta_start != model_b0),
                (at.key("beta_end"), format!("{:?}", s.beta_end), format!("{:?}", model_b1), s.beta_end.is_some() && s.beta_end != model_b1),
                (at.key("timesteps"), format!("{:?}", s.timesteps), c.timesteps.to_string(), s.timesteps.is_some_and(|v| v != c.timesteps as i64)),
                (
                    at.key("rescale_betas_zero_snr"),
                    format!("{:?}", s.rescale_betas_zero_snr),
                    c.rescale_betas_zero_snr.to_string(),
                    s.rescale_betas_zero_snr.is_some_and(|v| v != c.rescale_betas_zero_snr),
                ),
                (
                    YamlPath::root().key("model").key("prediction"),
                    m.prediction.map_or("-".into(), |p| p.as_str().into()),
                    c.prediction.as_str().into(),
                    m.prediction.is_some_and(|p| p != c.prediction),
                ),
            ];
            if !overrides {
                if let Some((path, _, model_value, _)) = conflicts.iter().find(|c| c.3) {
                    return Err(self.err(
                        path,
                        format!(
                            "contradicts the model's scheduler config {config} ({model_value}); remove it, or set `model.override_model_scheduler: true` to use the spec's value"
                        ),
                    ));
                }
            }
            source = if overrides && conflicts.iter().any(|c| c.3) {
                format!("model scheduler config {config}, overridden by the spec")
            } else {
                format!("model scheduler config {config}")
            };
            kind = kind.or(Some(c.kind));
            if kind == Some(c.kind) && !cosine {
                b0 = b0.or(Some(c.beta_start));
                b1 = b1.or(Some(c.beta_end));
            }
            t = t.or(Some(c.timesteps as i64));
            prediction = prediction.or(Some(c.prediction));
            zero_snr = zero_snr.or(Some(c.rescale_betas_zero_snr));
        }
        let kind = kind.unwrap_or(ScheduleKind::Linear);
        let t = t.unwrap_or(1000);
        if t < 2 {
            return Err(self.err(&at.key("timesteps"), format!("must be ≥ 2, got {t}")));
        }
        let (beta_start, beta_end) = match kind {
            ScheduleKind::Cosine | ScheduleKind::Exp => {
                for (key, v) in [("beta_start", s.beta_start), ("beta_end", s.beta_end)] {
                    if v.is_some() {
                        return Err(self.err(&at.key(key), format!("has no effect with the {} schedule; remove it", kind.as_str())));
                    }
                }
                (None, None)
            }
            ScheduleKind::Linear | ScheduleKind::ScaledLinear | ScheduleKind::Sigmoid => {
                let (d0, d1) = if kind == ScheduleKind::ScaledLinear { (0.00085, 0.012) } else { (1e-4, 0.02) };
                let (b0, b1) = (b0.unwrap_or(d0), b1.unwrap_or(d1));
                if !(0.0 < b0 && b0 <= b1 && b1 < 1.0) {
                    let key = if 0.0 < b0 && b0 < 1.0 { "beta_end" } else { "beta_start" };
                    return Err(self.err(
                        &at.key(key),
                        format!("need 0 < beta_start ≤ beta_end < 1, got beta_start={b0}, beta_end={b1}"),
                    ));
                }
                (Some(b0), Some(b1))
            }
        };
        let rescale_betas_zero_snr = zero_snr.unwrap_or(false);
        Ok((SchedulePlan { kind, beta_start, beta_end, timesteps: t as usize, rescale_betas_zero_snr }, prediction.unwrap_or_default(), source))
    }

    /// Values of a sweep, or an error if the list is empty.
    fn sweep<'s, T>(&self, at: &YamlPath, s: &'s Sweep<T>) -> Result<&'s [T]> {
        match s.values() {
            [] => Err(self.err(at, "empty list; give at least one value")),
            v => Ok(v),
        }
    }

    /// Path of value j of a sweep at `at` (`at[j]` for a list, `at` for a single value).
    fn elem(at: &YamlPath, s: &Sweep<impl Sized>, j: usize) -> YamlPath {
        if s.is_list() {
            at.index(j)
        } else {
            at.clone()
        }
    }

    /// Step counts from 1 to `max` (the schedule's timesteps for samplers on its labels).
    fn steps(&self, at: &YamlPath, s: &Sweep<i64>, max: usize) -> Result<Vec<usize>> {
        let vals = self.sweep(at, s)?;
        let mut out = Vec::with_capacity(vals.len());
        for (j, &v) in vals.iter().enumerate() {
            if v < 1 || v as usize > max {
                let bound = if max == SIGMA_MAX_STEPS { format!("{max}") } else { format!("{max} (schedule.timesteps)") };
                return Err(self.err(&Self::elem(at, s, j), format!("must be an integer from 1 to {bound}, got {v}")));
            }
            out.push(v as usize);
        }
        Ok(out)
    }

    /// A `{diffusers_config: FILE}` entry as the entry it stands for. The file's training schedule
    /// and prediction type must be the spec's: a scheduler config describes one model.
    fn sampler_from_config(
        &self,
        at: &YamlPath,
        e: &spec::RawSamplerEntry,
        file: &str,
        schedule: &SchedulePlan,
        prediction: Prediction,
    ) -> Result<spec::RawSamplerEntry> {
        if e.skip.is_some() || !e.params.is_empty() {
            return Err(self.err(at, "with `diffusers_config` an entry takes only `steps` (the config sets the sampler, its timestep rule and its parameters)"));
        }
        let path = self.resolve(file);
        let text = fs_err::read_to_string(&path).map_err(|e| self.err(&at.key("diffusers_config"), format!("cannot read {}: {e}", path.display())))?;
        let json = sampling::diffusers_config::parse_json(&text).map_err(|e| BenchError::file(&path, format!("not valid JSON: {e}")))?;
        let c = sampling::diffusers_config::from_json(&json).map_err(|m| BenchError::file(&path, m))?;
        let m = crate::schedule::ModelSchedulerConfig::from_json(&path, &json)?;
        let cosine = matches!(m.kind, ScheduleKind::Cosine | ScheduleKind::Exp);
        let betas = |v: f64| (!cosine).then_some(v);
        let contradictions = [
            ("beta_schedule", m.kind.as_str().to_string(), schedule.kind.as_str().to_string(), m.kind != schedule.kind),
            ("beta_start", format!("{:?}", betas(m.beta_start)), format!("{:?}", schedule.beta_start), betas(m.beta_start) != schedule.beta_start),
            ("beta_end", format!("{:?}", betas(m.beta_end)), format!("{:?}", schedule.beta_end), betas(m.beta_end) != schedule.beta_end),
            ("num_train_timesteps", m.timesteps.to_string(), schedule.timesteps.to_string(), m.timesteps != schedule.timesteps),
            (
                "rescale_betas_zero_snr",
                m.rescale_betas_zero_snr.to_string(),
                schedule.rescale_betas_zero_snr.to_string(),
                m.rescale_betas_zero_snr != schedule.rescale_betas_zero_snr,
            ),
            ("prediction_type", m.prediction.as_str().to_string(), prediction.as_str().to_string(), m.prediction != prediction),
        ];
        if let Some((key, theirs, ours, _)) = contradictions.iter().find(|(key, _, _, differs)| *differs && c.model_keys.contains(key)) {
            return Err(BenchError::file(&path, format!("{key} {theirs} contradicts the spec's model ({ours}); a scheduler config must describe the model it samples")));
        }
        Ok(spec::RawSamplerEntry {
            name: c.sampler.to_owned(),
            skip: Some(Sweep::One(c.skip)),
            skip_key: "skip",
            steps: e.steps.clone(),
            params: c.params.into_iter().map(|(k, v)| (k, Sweep::One(v))).collect(),
            diffusers_config: None,
        })
    }

    fn expand(&self, schedule: &SchedulePlan, prediction: Prediction, space: NoiseSpace, consistency_model: bool) -> Result<Vec<Expanded>> {
        let timesteps = schedule.timesteps;
        let noise_schedule = &schedule.noise_schedule()?;
        let raw = &self.spec.raw;
        let root = YamlPath::root();
        if raw.samplers.is_empty() {
            return Err(self.err(&root.key("samplers"), "empty list; give at least one sampler, e.g. `- {name: ddim}`"));
        }
        // σ samplers lay their grids out in σ, not on the schedule's labels: any step count.
        let max_steps = |def: &sampling::SamplerDef| if def.space() == NoiseSpace::Sigma { SIGMA_MAX_STEPS } else { timesteps };
        // The top-level list serves every entry: bounded by the tightest of them.
        let global_max = raw.samplers.iter().map(|e| sampling::find(&e.name).filter(|_| e.diffusers_config.is_none()).map_or(timesteps, max_steps)).min().unwrap_or(timesteps);
        let global_steps = match &raw.steps {
            Some(s) => Some(self.steps(&root.key("steps"), s, global_max)?),
            None => None,
        };
        let names: Vec<&str> = sampling::DEFINITIONS.iter().map(|d| d.name).collect();
        let mut out = Vec::new();
        for (i, written) in raw.samplers.iter().enumerate() {
            let at = root.key("samplers").index(i);
            let from_config;
            let e = match &written.diffusers_config {
                None => written,
                Some(file) => {
                    from_config = self.sampler_from_config(&at, written, file, schedule, prediction)?;
                    &from_config
                }
            };
            let Some(def) = sampling::find(&e.name) else {
                let mut msg = format!("unknown sampler `{}`", e.name);
                if let Some(s) = spec::suggest(&e.name, names.iter().copied()) {
                    msg += &format!("; did you mean `{s}`?");
                }
                return Err(self.err(&at.key("name"), msg + &format!(" (known: {})", names.join(", "))));
            };
            def.check_model(space, prediction, consistency_model, noise_schedule.zero_terminal_snr()).map_err(|m| self.err(&at.key("name"), m))?;
            // Axes of the product, in written order; then skip; then steps.
            let mut axes: Vec<(String, Vec<ParamValue>)> = Vec::new();
            def.check_spellings(e.params.iter().map(|(k, _)| k.as_str())).map_err(|m| self.err(&at, m))?;
            // diffusers' `use_karras_sigmas: true` / `use_exponential_sigmas: true` choose bench's `skip`.
            let mut skip_flag: Option<(&str, Skip)> = None;
            // An entry in diffusers' spelling asks for diffusers' arithmetic unless it says otherwise.
            let mut diffusers_spelled = written.diffusers_config.is_some() || e.skip_key == "timestep_spacing";
            for (key, sweep) in &e.params {
                let kat = at.key(key);
                diffusers_spelled |= def.is_diffusers_spelling(key);
                if let Some(rule) = crate::sampling::diffusers_config::skip_flag(key).filter(|r| def.lookup(key).is_none() && def.skips.contains(r)) {
                    diffusers_spelled = true;
                    let on = match sweep {
                        Sweep::One(ParamValue::Bool(b)) => *b,
                        _ => return Err(self.err(&kat, format!("must be true or false (diffusers' spelling of `skip: {rule}`)"))),
                    };
                    if on {
                        if let Some(first) = skip_flag.map(|(k, _)| k).or(e.skip.as_ref().map(|_| e.skip_key)) {
                            return Err(self.err(&kat, format!("`{first}` and `{key}` both choose the timestep rule; give one")));
                        }
                        skip_flag = Some((key, rule));
                    }
                    continue;
                }
                let p = def.lookup(key).ok_or_else(|| self.err(&kat, def.unknown_param(key)))?;
                let vals = self.sweep(&kat, sweep)?;
                let checked = (vals.iter().enumerate())
                    .map(|(j, v)| def.check_value(p, v).map_err(|m| self.err(&Self::elem(&kat, sweep, j), m)))
                    .collect::<Result<Vec<_>>>()?;
                axes.push((p.name.to_owned(), checked));
            }
            let skips: Vec<Skip> = match &e.skip {
                Some(s) => self.sweep(&at.key(e.skip_key), s)?.to_vec(),
                None => vec![skip_flag.map_or(def.default_skip, |(_, rule)| rule)],
            };
            if let Some(written) = &e.skip {
                for (j, k) in skips.iter().enumerate() {
                    def.check_skip(*k).map_err(|m| self.err(&Self::elem(&at.key(e.skip_key), written, j), m))?;
                }
            }
            let steps = match (&e.steps, &global_steps) {
                (Some(s), _) => self.steps(&at.key("steps"), s, max_steps(def))?,
                (None, Some(g)) => g.clone(),
                (None, None) => {
                    return Err(self.err(&at, "no `steps`: set `steps:` at the top level or in this entry"));
                }
            };
            let mut base = def.defaults();
            if diffusers_spelled && def.param(sampling::def::SCHEDULE_DTYPE.name).is_some() {
                base.insert(sampling::def::SCHEDULE_DTYPE.name.to_owned(), ParamValue::Str("float32".into()));
            }
            let mut combos: Vec<BTreeMap<String, ParamValue>> = vec![base];
            for (key, vals) in &axes {
                combos = combos
                    .iter()
                    .flat_map(|c| {
                        vals.iter().map(move |v| {
                            let mut c = c.clone();
                            c.insert(key.clone(), v.clone());
                            c
                        })
                    })
                    .collect();
            }
            for params in &combos {
                for &skip in &skips {
                    for &n in &steps {
                        // Building the sampler checks what per-parameter ranges cannot (steps vs
                        // grid, parameter combinations) before anything runs.
                        if let Err(why) = def.build(params, skip, n, noise_schedule) {
                            let p: Vec<String> = def.non_default(params).iter().map(|(k, v)| format!("{k}={v}")).collect();
                            let p = if p.is_empty() { String::new() } else { format!(" {}", p.join(" ")) };
                            let why = why.to_string();
                            let why = why.strip_prefix(&format!("sampler {}: ", e.name)).unwrap_or(&why);
                            return Err(self.err(&at, format!("{}{p} skip={skip} steps={n}: {why}", e.name)));
                        }
                        out.push((i, def, params.clone(), skip, n));
                    }
                }
            }
        }
        Ok(out)
    }

    fn device(&self, host: &Host) -> Result<DevicePlan> {
        let at = YamlPath::root().key("device");
        let written = self.spec.raw.device.as_deref().unwrap_or("auto");
        let cuda = |n: usize| -> Result<DevicePlan> {
            if host.cuda_devices == 0 {
                Err(self.err(
                    &at,
                    format!("`{written}` requested but CUDA is not available on this machine (libtorch sees no GPU); use `cpu` or `auto`"),
                ))
            } else if n >= host.cuda_devices {
                Err(self.err(
                    &at,
                    format!(
                        "`{written}` does not exist: this machine has {} CUDA device(s), cuda:0 to cuda:{}",
                        host.cuda_devices,
                        host.cuda_devices - 1
                    ),
                ))
            } else {
                Ok(DevicePlan::Cuda(n))
            }
        };
        match written {
            "auto" => Ok(if host.cuda_devices > 0 { DevicePlan::Cuda(0) } else { DevicePlan::Cpu }),
            "cpu" => Ok(DevicePlan::Cpu),
            "cuda" => cuda(0),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => cuda(n),
                None => {
                    let mut msg = format!("unknown device `{other}`");
                    if let Some(s) = spec::suggest(other, ["auto", "cpu", "cuda"]) {
                        msg += &format!("; did you mean `{s}`?");
                    }
                    Err(self.err(&at, msg + " (allowed: auto, cpu, cuda, cuda:N)"))
                }
            },
        }
    }

    fn metrics(&self, model: &ModelPlan) -> Result<(MetricsPlan, MetricsIdentity, Vec<Input>)> {
        let at = YamlPath::root().key("metrics");
        let none = spec::RawMetrics::default();
        let m = self.spec.raw.metrics.as_ref().unwrap_or(&none);
        let gaussian = matches!(model, ModelPlan::Oracle(DataPlan::Gaussian { .. }));
        let oracle = matches!(model, ModelPlan::Oracle(_));
        let fid = match &m.fid {
            None => None,
            Some(f) => {
                let fat = at.key("fid");
                let reference =
                    self.required(&fat, &f.reference, "reference", "`fid`", "an .npz of reference statistics")?;
                let reference = self.existing(&fat.key("reference"), self.resolve(reference))?;
                let weights = match &f.weights {
                    Some(w) => self.resolve(w),
                    None => registry::FID_INCEPTION.default_path(&registry::data_dir()),
                };
                let weights = self.existing(&fat.key("weights"), weights)?;
                let dims = f.dims.unwrap_or(2048);
                if ![64, 192, 768, 2048].contains(&dims) {
                    return Err(self.err(
                        &fat.key("dims"),
                        format!("must be one of 64, 192, 768, 2048 (Inception feature blocks), got {dims}"),
                    ));
                }
                Some(FidPlan {
                    reference,
                    weights,
                    mode: f.mode.unwrap_or(ResizeMode::PytorchFid),
                    dims: dims as usize,
                    allow_custom_weights: f.allow_custom_weights.unwrap_or(false),
                })
            }
        };
        let fd_pixel = match &m.fd_pixel {
            None => None,
            Some(p) => match &p.reference {
                Some(r) => Some(FdPixelPlan {
                    reference: Some(self.existing(&at.key("fd_pixel").key("reference"), self.resolve(r))?),
                }),
                None if oracle => Some(FdPixelPlan { reference: None }),
                None => {
                    return Err(self.err(
                        &at.key("fd_pixel"),
                        "needs `reference` (an .npz of pixel statistics) unless the model is an oracle",
                    ))
                }
            },
        };
        if m.fd_exact.is_some() && !gaussian {
            return Err(self.err(
                &at.key("fd_exact"),
                "needs a Gaussian oracle model (`model: {kind: oracle, data: {kind: gaussian, ...}}`)",
            ));
        }
        let (inception_score, kid, prdc) = self.inception_metrics(m)?;
        let input = |role: &str, path: &Path| Input { role: role.into(), path: path.to_owned(), sha256: None };
        let mut inputs = Vec::new();
        let mut fd_features = Vec::new();
        let mut fd_identity = Vec::new();
        for (i, e) in m.fd_features.iter().flatten().enumerate() {
            let eat = at.key("fd_features").index(i);
            e.validate().map_err(|err| self.err(&eat, err.to_string().trim_start_matches("error: ")))?;
            if fd_features.iter().any(|f: &FdFeaturesSpec| f.name == e.name) {
                return Err(self.err(&eat.key("name"), format!("`{}` names another entry's column too", e.name)));
            }
            let encoder = self.existing(&eat.key("encoder"), self.resolve(&e.encoder.to_string_lossy()))?;
            let reference = self.existing(&eat.key("reference"), self.resolve(&e.reference.to_string_lossy()))?;
            let roles = [format!("metrics.fd_features.{}.encoder", e.name), format!("metrics.fd_features.{}.reference", e.name)];
            inputs.push(input(&roles[0], &encoder));
            inputs.push(input(&roles[1], &reference));
            fd_identity.push(FdFeaturesSpec { encoder: roles[0].clone().into(), reference: roles[1].clone().into(), ..e.clone() });
            fd_features.push(FdFeaturesSpec { encoder, reference, ..e.clone() });
        }
        let context_fid = match &m.context_fid {
            None => None,
            Some(c) => {
                let cat = at.key("context_fid");
                let encoder = self.existing(&cat.key("encoder"), self.resolve(&c.encoder))?;
                let reference = self.existing(&cat.key("reference"), self.resolve(&c.reference))?;
                inputs.push(input("metrics.context_fid.encoder", &encoder));
                inputs.push(input("metrics.context_fid.reference", &reference));
                let batch_size = match c.batch_size.unwrap_or(256) {
                    b @ 1..=1_048_576 => b as usize,
                    b => return Err(self.err(&cat.key("batch_size"), format!("must be 1..=1048576 (reference windows per encoder call), got {b}"))),
                };
                Some(ContextFidPlan { encoder, reference, scaling: c.scaling.clone().unwrap_or(TsScaling::NegOneToOne), batch_size })
            }
        };
        let clip_score = match &m.clip_score {
            None => None,
            Some(c) => {
                let cat = at.key("clip_score");
                if !self.spec.raw.conditioning.as_ref().is_some_and(|c| c.prompts.is_some()) {
                    return Err(self.err(&cat, "needs prompts: a text-to-image model with `conditioning: {prompts: FILE}`"));
                }
                let dir = self.existing(&cat.key("model"), self.resolve(&c.model))?;
                for (role, file) in [("config", "config.json"), ("vocab", "vocab.json"), ("merges", "merges.txt"), ("preprocessor", "preprocessor_config.json")] {
                    inputs.push(input(&format!("metrics.clip_score.{role}"), &self.existing(&cat.key("model"), dir.join(file))?));
                }
                if let Some(w) = crate::models::weights::component_weights(&dir, tch::Kind::Float) {
                    inputs.push(input("metrics.clip_score.weights", &w));
                }
                Some(dir)
            }
        };
        let identity = MetricsIdentity {
            fid: m.fid.as_ref().map(|f| FidIdentity { mode: f.mode.unwrap_or(ResizeMode::PytorchFid), dims: f.dims.unwrap_or(2048) }),
            fd_pixel: m.fd_pixel.as_ref().map(|p| p.reference.is_some()),
            fd_exact: gaussian,
            inception_score,
            kid,
            prdc,
            fd_features: fd_identity,
            context_fid: context_fid.as_ref().map(|c| c.scaling.clone()),
            clip_score: clip_score.is_some(),
        };
        if let Some(f) = &fid {
            inputs.push(input("metrics.fid.weights", &f.weights));
            inputs.push(input("metrics.fid.reference", &f.reference));
        }
        if let Some(FdPixelPlan { reference: Some(r) }) = &fd_pixel {
            inputs.push(input("metrics.fd_pixel.reference", r));
        }
        Ok((MetricsPlan { fid, fd_pixel, fd_exact: gaussian, inception_score, kid, prdc, fd_features, context_fid, clip_score }, identity, inputs))
    }

    /// `inception_score`, `kid`, `prdc`: they read `fid`'s Inception pass, so they need `fid`.
    #[allow(clippy::type_complexity)]
    fn inception_metrics(&self, m: &spec::RawMetrics) -> Result<(Option<IsParams>, Option<KidParams>, Option<PrdcParams>)> {
        let at = YamlPath::root().key("metrics");
        for (name, on) in [("inception_score", m.inception_score.is_some()), ("kid", m.kid.is_some()), ("prdc", m.prdc.is_some())] {
            if on && m.fid.is_none() {
                return Err(self.err(
                    &at.key(name),
                    "needs `metrics.fid` (it reads FID's Inception pass; kid and prdc also the features kept in its reference by `bench stats --ref-features N`)",
                ));
            }
        }
        // `samples` itself is checked (≥ 1) with the other top-level keys.
        let samples = self.spec.raw.samples.unwrap_or(50_000).max(1) as u64;
        let positive = |key: YamlPath, v: Option<u64>, default: usize, max: u64, what: &str| -> Result<usize> {
            match v {
                None => Ok(default),
                Some(v) if v >= 1 && v <= max => Ok(v as usize),
                Some(v) => Err(self.err(&key, format!("must be 1..={max} ({what}), got {v}"))),
            }
        };
        let is = match &m.inception_score {
            None => None,
            Some(r) => {
                let iat = at.key("inception_score");
                let d = IsParams::default();
                let splits = positive(iat.key("splits"), r.splits, d.splits, samples, "at most `samples`")?;
                if splits as u64 > samples {
                    return Err(self.err(&iat.key("splits"), format!("the default {splits} splits need at least {splits} samples; `samples` is {samples}")));
                }
                let shuffle_seed = match (r.shuffle.unwrap_or(true), r.seed) {
                    (true, seed) => Some(seed.unwrap_or(2020)),
                    (false, None) => None,
                    (false, Some(_)) => return Err(self.err(&iat.key("seed"), "is the shuffle's seed; it has no effect with `shuffle: false`")),
                };
                Some(IsParams { splits, shuffle_seed })
            }
        };
        let kid = match &m.kid {
            None => None,
            Some(r) => {
                let kat = at.key("kid");
                let d = KidParams::default();
                let subset_size = positive(kat.key("subset_size"), r.subset_size, d.subset_size.min(samples as usize), samples, "at most `samples`")?;
                if subset_size < 2 {
                    return Err(self.err(&kat.key("subset_size"), "must be at least 2 (the unbiased MMD² divides by m(m − 1))"));
                }
                let subsets = positive(kat.key("subsets"), r.subsets, d.subsets, 1_000_000, "subsets drawn")?;
                Some(KidParams { subsets, subset_size, seed: r.seed.unwrap_or(d.seed) })
            }
        };
        let prdc = match &m.prdc {
            None => None,
            Some(r) => {
                let pat = at.key("prdc");
                let d = PrdcParams::default();
                let k = positive(pat.key("k"), r.k, d.k, samples.saturating_sub(1).max(1), "fewer than `samples`")?;
                let batch_size = positive(pat.key("batch_size"), r.batch_size, d.batch_size, 1 << 20, "rows per distance block")?;
                Some(PrdcParams { k, batch_size })
            }
        };
        Ok((is, kid, prdc))
    }
}

// ---------------------------------------------------------------------------------------------
// `--dry-run`.

/// The cells as an aligned text table: cell, sampler, params, skip, steps, nfe and
/// nfe×samples (the cost), with `nfe` from the caller (the sampler registry knows it; `-` if None).
pub fn render_cells(plan: &Plan, nfe: &dyn Fn(&Cell) -> Option<usize>, done: &dyn Fn(&Cell) -> bool) -> String {
    let header = ["cell", "sampler", "params", "skip", "steps", "nfe", "nfe×samples", "status"];
    let right = [true, false, false, false, true, true, true, false];
    let mut rows: Vec<[String; 8]> = vec![header.map(str::to_owned)];
    for c in &plan.cells {
        let n = nfe(c);
        rows.push([
            c.index.to_string(),
            c.sampler.clone(),
            c.params_text(),
            c.skip.name().to_owned(),
            c.steps.to_string(),
            n.map_or("-".into(), |n| n.to_string()),
            n.map_or("-".into(), |n| (n as u64 * plan.samples).to_string()),
            if done(c) { "done".into() } else { "to run".into() },
        ]);
    }
    let mut width = [0usize; 8];
    for r in &rows {
        for (w, s) in width.iter_mut().zip(r) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (k, s) in r.iter().enumerate() {
            let pad = " ".repeat(width[k] - s.chars().count());
            if k > 0 {
                line += "  ";
            }
            if right[k] {
                line += &pad;
                line += s;
            } else {
                line += s;
                line += &pad;
            }
        }
        out += line.trim_end();
        out += "\n";
    }
    out
}

/// `bench run --dry-run`: the cells with NFE, cost and whether they are already done in the
/// output folder, then the files that are missing and where to get them. Needs none of the files.
pub fn render_dry_run(plan: &Plan) -> String {
    let done: std::collections::HashSet<String> = crate::results::read_results(&plan.output)
        .map(|rows| rows.into_iter().filter(|r| r.experiment == plan.name).map(|r| r.cell_hash).collect())
        .unwrap_or_default();
    let missing = plan.inputs.iter().any(|i| i.sha256.is_none()) || plan.missing_files.is_some();
    let mut out = render_cells(plan, &|c| Some(crate::runner::estimate_nfe(plan, c) as usize), &|c| !missing && done.contains(&c.hash));
    let total: u64 = plan.cells.iter().map(|c| crate::runner::estimate_nfe(plan, c) * plan.samples).sum();
    out += &format!("{} cells, {} samples each, {total} model evaluations in all; output {}\n", plan.cells.len(), plan.samples, plan.output.display());
    if let Some(m) = &plan.missing_files {
        out += &format!("missing files (the run needs them): {m}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: Host = Host { cuda_devices: 0 };

    fn plan(text: &str) -> Result<Plan> {
        build(&spec::parse(Path::new("t.yaml"), text)?, &CPU)
    }

    const BASE: &str =
        "name: t\nmodel: {kind: oracle, data: {kind: gaussian, shape: [3, 8, 8], std: [0.2, 0.5, 1.0]}}\n";

    #[test]
    fn sweep_expands_params_then_skip_then_steps() {
        let p = plan(&format!(
            "{BASE}samplers:\n  - {{name: dpm_solver, order: [2, 3], method: [singlestep, multistep], skip: [time_uniform, logsnr]}}\n  - {{name: ddpm_large, steps: 7}}\nsteps: [10, 20]\n"
        ))
        .unwrap();
        assert_eq!(p.cells.len(), 2 * 2 * 2 * 2 + 1);
        let key = |c: &Cell| format!("{} {} {} {}", c.sampler, c.params_text(), c.skip.name(), c.steps);
        assert_eq!(key(&p.cells[0]), "dpm_solver order=2 method=singlestep time_uniform 10");
        assert_eq!(key(&p.cells[1]), "dpm_solver order=2 method=singlestep time_uniform 20");
        assert_eq!(key(&p.cells[2]), "dpm_solver order=2 method=singlestep logsnr 10");
        assert_eq!(key(&p.cells[4]), "dpm_solver order=2 method=multistep time_uniform 10");
        assert_eq!(key(&p.cells[8]), "dpm_solver order=3 method=singlestep time_uniform 10");
        assert_eq!(key(&p.cells[16]), "ddpm_large - quadratic 7");
        assert_eq!(p.cells.iter().map(|c| c.index).collect::<Vec<_>>(), (0..17).collect::<Vec<_>>());
        // Every parameter is filled; integers given to float params become floats.
        let p = plan(&format!("{BASE}samplers: [{{name: dpm_solver}}, {{name: ddim, eta: 1}}]\nsteps: 5\n")).unwrap();
        assert_eq!(p.cells[0].params["order"], ParamValue::Int(3));
        assert_eq!(p.cells[0].params["t_end"], ParamValue::Str("auto".into()));
        assert_eq!(p.cells[0].params.len(), sampling::find("dpm_solver").unwrap().all_params().count());
        assert_eq!(p.cells[0].params["schedule_dtype"], ParamValue::Str("float64".into()));
        assert_eq!(p.cells[1].params["eta"], ParamValue::Float(1.0));
    }

    #[test]
    fn cell_hash_depends_on_what_determines_samples_only() {
        let text = format!("{BASE}samplers: [{{name: ddim, eta: [0.0, 0.5]}}]\nsteps: 10\nbatch_size: 100\n");
        let a = plan(&text).unwrap();
        assert_eq!(a.cells[0].hash.len(), 64);
        assert_ne!(a.cells[0].hash, a.cells[1].hash);
        // Formatting, comments, batch size, output and written defaults leave hashes unchanged.
        let same = format!(
            "# comment\n{BASE}samplers:\n  - name: ddim\n    eta: [0, 0.5]\n    alpha_to_one: true\nsteps: [10]\nbatch_size: 7\noutput: elsewhere\nschedule: {{kind: linear}}\n"
        );
        let b = plan(&same).unwrap();
        assert_eq!(
            a.cells.iter().map(|c| &c.hash).collect::<Vec<_>>(),
            b.cells.iter().map(|c| &c.hash).collect::<Vec<_>>()
        );
        // Seed, samples, the data, the schedule, the prediction type and a parameter change them.
        for changed in [
            text.replace("steps: 10", "steps: 11"),
            text.clone() + "seed: 1\n",
            text.clone() + "samples: 10\n",
            text.replace("0.2, 0.5", "0.25, 0.5"),
            text.clone() + "schedule: {beta_end: 0.021}\n",
            text.replace("kind: oracle,", "kind: oracle, prediction: v_prediction,"),
            text.replace("eta: [0.0, 0.5]", "eta: [0.0, 0.5], clip_sample: true"),
        ] {
            let c = plan(&changed).unwrap();
            assert_ne!(a.cells[1].hash, c.cells[1].hash, "{changed}");
        }
        // Pinned: a changed hash scheme silently invalidates every finished cell of every run
        // (resume recomputes them), so it must be a deliberate change (bump HASH_SCHEME).
        assert_eq!(a.cells[0].hash, "fdc0f1cb1c573bf9087ace4e876550c6426d6346efa898b9cb272c459392289b");
        assert_eq!(a.spec_hash.len(), 64);
    }

    #[test]
    fn cell_hash_follows_file_content_not_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mean.npy"), b"first").unwrap();
        let text = "name: t\nmodel: {kind: oracle, data: {kind: gaussian, shape: [1, 2, 2], mean: mean.npy}}\nsamplers: [{name: ddim}]\nsteps: 3\n";
        let spec_path = dir.path().join("t.yaml");
        std::fs::write(&spec_path, text).unwrap();
        let hashed = |path: &Path| {
            let mut p = load_with(path, &CPU).unwrap();
            let mut cache = HashCache::default();
            p.hash_inputs(&mut cache).unwrap();
            p
        };
        let first = hashed(&spec_path);
        assert_eq!(first.inputs[0].role, "model.data.mean");
        // Same content elsewhere: same hash.
        let moved = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("mean.npy"), moved.path().join("mean.npy")).unwrap();
        std::fs::write(moved.path().join("t.yaml"), text).unwrap();
        assert_eq!(hashed(&moved.path().join("t.yaml")).cells[0].hash, first.cells[0].hash);
        // New content at the same path: a new hash.
        std::fs::write(dir.path().join("mean.npy"), b"second").unwrap();
        assert_ne!(hashed(&spec_path).cells[0].hash, first.cells[0].hash);
    }

    #[test]
    fn repeated_cells_are_rejected() {
        let e = plan(&format!("{BASE}samplers: [{{name: ddim, eta: [0.5, 0.5]}}]\nsteps: 10\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml:3:12: samplers[0]: repeats cell #0 of samplers[0] (ddim eta=0.5 skip=quadratic steps=10); remove the repeated value"
        );
        // A written default is the same cell as the default.
        let e = plan(&format!("{BASE}samplers: [{{name: ddim}}, {{name: ddim, eta: 0}}]\nsteps: 10\n")).unwrap_err();
        assert!(e.to_string().contains("repeats cell #0"), "{e}");
    }

    #[test]
    fn diffusers_spellings_are_the_same_cells() {
        let hashes = |samplers: &str| -> Vec<String> {
            plan(&format!("{BASE}samplers: [{samplers}]\nsteps: 10\n")).unwrap().cells.into_iter().map(|c| c.hash).collect()
        };
        // diffusers' spelling means diffusers' float32 schedule arithmetic unless the entry says otherwise.
        let f32 = "schedule_dtype: float32";
        assert_eq!(hashes("{name: euler, timestep_spacing: trailing}"), hashes(&format!("{{name: euler, skip: trailing, {f32}}}")));
        assert_eq!(hashes("{name: euler, timestep_spacing: trailing, schedule_dtype: float64}"), hashes("{name: euler, skip: trailing}"));
        assert_ne!(hashes("{name: euler, timestep_spacing: trailing}"), hashes("{name: euler, skip: trailing}"));
        assert_eq!(hashes("{name: euler, use_karras_sigmas: true}"), hashes(&format!("{{name: euler, skip: karras, {f32}}}")));
        assert_eq!(hashes("{name: euler, use_karras_sigmas: false}"), hashes(&format!("{{name: euler, {f32}}}")));
        assert_eq!(hashes("{name: lms, use_exponential_sigmas: true}"), hashes(&format!("{{name: lms, skip: exponential, {f32}}}")));
        assert_eq!(hashes("{name: ddim, set_alpha_to_one: false}"), hashes(&format!("{{name: ddim, alpha_to_one: false, {f32}}}")));
        assert_ne!(hashes("{name: ddim, set_alpha_to_one: false}"), hashes(&format!("{{name: ddim, {f32}}}")));
        // Names both spellings share (`eta`) are bench's too, and keep float64.
        assert_eq!(hashes("{name: ddim, eta: 0.5}"), hashes("{name: ddim, eta: 0.5, schedule_dtype: float64}"));
        let err = |samplers: &str| plan(&format!("{BASE}samplers: [{samplers}]\nsteps: 10\n")).unwrap_err().to_string();
        assert_eq!(
            err("{name: ddim, alpha_to_one: false, set_alpha_to_one: false}"),
            "t.yaml:3:12: samplers[0]: `alpha_to_one` and `set_alpha_to_one` are one parameter of `ddim` (bench's and diffusers' spelling); give one"
        );
        assert!(err("{name: euler, skip: karras, timestep_spacing: leading}").contains("`skip` and `timestep_spacing` are one setting"));
        assert_eq!(
            err("{name: euler, timestep_spacing: linspace, use_karras_sigmas: true}"),
            "t.yaml:3:54: samplers[0].use_karras_sigmas: `timestep_spacing` and `use_karras_sigmas` both choose the timestep rule; give one"
        );
        assert!(err("{name: ddim, use_karras_sigmas: true}").contains("`use_karras_sigmas` is not a parameter of `ddim`"));
    }

    #[test]
    fn dry_run_table_is_aligned() {
        let p = plan(&format!(
            "{BASE}samplers: [{{name: ddim, eta: [0, 0.25]}}, {{name: ddpm_large}}]\nsteps: [10, 100]\nsamples: 1000\n"
        ))
        .unwrap();
        let t = render_cells(&p, &|c| (c.sampler == "ddim").then_some(c.steps), &|c| c.index == 1);
        assert_eq!(
            t,
            "\
cell  sampler     params    skip       steps  nfe  nfe×samples  status
   0  ddim        eta=0     quadratic     10   10        10000  to run
   1  ddim        eta=0     quadratic    100  100       100000  done
   2  ddim        eta=0.25  quadratic     10   10        10000  to run
   3  ddim        eta=0.25  quadratic    100  100       100000  to run
   4  ddpm_large  -         quadratic     10    -            -  to run
   5  ddpm_large  -         quadratic    100    -            -  to run
"
        );
    }

    #[test]
    fn skips_predictions_and_cell_checks_run_before_anything() {
        let e = plan(&format!("{BASE}samplers: [{{name: lms, skip: [karras, uniform]}}]\nsteps: 5\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml:3:39: samplers[0].skip[1]: `lms` does not support skip `uniform` (allowed: linspace, leading, trailing, karras, exponential, beta)"
        );
        let e = plan(&format!("{BASE}samplers: [{{name: f-pndm}}]\nsteps: [10, 2]\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml:3:12: samplers[0]: f-pndm skip=uniform steps=2: 2 timestep labels are too few (its warm-up needs at least 4)"
        );
        let v = BASE.replace("kind: oracle,", "kind: oracle, prediction: sample,");
        let e = plan(&format!("{v}samplers: [{{name: plms}}]\nsteps: 10\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml:3:13: samplers[0].name: `plms` does not support model prediction `sample` (supported: epsilon, v_prediction)"
        );
    }

    #[test]
    fn save_samples_limit() {
        assert_eq!(
            (SaveSamples::Count(64).limit(10), SaveSamples::Count(5).limit(10), SaveSamples::All.limit(10)),
            (10, 5, 10)
        );
    }

    #[test]
    fn defaults() {
        let p = plan(&format!("{BASE}samplers: [{{name: ddim}}]\nsteps: 10\n")).unwrap();
        assert_eq!((p.samples, p.batch_size, p.seed), (50_000, 500, 0));
        assert_eq!((p.device, p.precision, p.prediction), (DevicePlan::Cpu, Precision::Fp32, Prediction::Epsilon));
        assert_eq!(
            p.schedule,
            SchedulePlan { kind: ScheduleKind::Linear, beta_start: Some(1e-4), beta_end: Some(0.02), timesteps: 1000, rescale_betas_zero_snr: false }
        );
        assert_eq!(p.schedule_source, "spec");
        assert_eq!(p.output, PathBuf::from("reports/t"));
        assert_eq!(p.save_samples, SaveSamples::Count(64));
        assert_eq!(
            p.metrics,
            MetricsPlan {
                fid: None,
                fd_pixel: None,
                fd_exact: true,
                inception_score: None,
                kid: None,
                prdc: None,
                fd_features: vec![],
                context_fid: None,
                clip_score: None
            }
        );
        assert_eq!(
            p.model,
            ModelPlan::Oracle(DataPlan::Gaussian {
                shape: vec![3, 8, 8],
                mean: MomentPlan::Scalar(0.0),
                std: MomentPlan::PerChannel(vec![0.2, 0.5, 1.0])
            })
        );
        let auto_gpu = build(
            &spec::parse(
                Path::new("t.yaml"),
                &format!("{BASE}samplers: [{{name: ddim}}]\nsteps: 10\nprecision: bf16\n"),
            )
            .unwrap(),
            &Host { cuda_devices: 2 },
        )
        .unwrap();
        assert_eq!((auto_gpu.device, auto_gpu.precision), (DevicePlan::Cuda(0), Precision::Bf16));
        // bf16 runs on CPU too; tf32 is a CUDA math mode.
        assert_eq!(plan(&format!("{BASE}samplers: [{{name: ddim}}]\nsteps: 10\nprecision: bf16\n")).unwrap().precision, Precision::Bf16);
        assert!(plan(&format!("{BASE}samplers: [{{name: ddim}}]\nsteps: 10\nprecision: tf32\n")).is_err());
    }
}

/// `bench run --device`: the same names as the spec's `device`, checked against this machine.
pub fn parse_device_override(s: &str) -> Result<DevicePlan> {
    Ok(match crate::metrics::fid_cli::parse_device(s)? {
        tch::Device::Cuda(n) => DevicePlan::Cuda(n),
        _ => DevicePlan::Cpu,
    })
}
