//! Stage 1 of `bench run`: the experiment spec as written — YAML text → typed raw structs.
//!
//! This stage only knows the file's *shape*: which keys exist, their types, and the closed
//! vocabularies (model kinds, skips, precisions, FID modes). Everything that needs context
//! (which keys a model kind takes, sampler parameters, file existence, devices, sweeps) is
//! checked by [`crate::plan`], which turns a [`SpecFile`] into a runnable `Plan`.
//!
//! ## Errors: file, YAML path, line, what is allowed
//! Every error is one line, `FILE:LINE:COLUMN: PATH: MESSAGE`, e.g.
//! `exp.yaml:7:30: samplers[1].etta: unknown key `etta`; did you mean `eta`? (allowed: ...)`.
//! Lines and paths come from two sources:
//! - serde_yaml_ng errors carry the line/column of the offending node and (in their text) the
//!   YAML path of the node being deserialized; [`parse`] splits that text back into path and
//!   message (the format is pinned by a unit test below) and rewrites serde's wording into the
//!   spec's vocabulary ("unknown key … did you mean …").
//! - for errors found later (stage 2) the line of a YAML path is recovered by [`locate`]: it
//!   re-reads the text with a `DeserializeSeed` that walks down the path and fails on purpose at
//!   the target node. serde_yaml_ng stamps the innermost failing node's position on an error, so
//!   the position returned is exactly that of the key (for a path ending in a key) or of the
//!   element (for one ending in `[i]`). This uses the real YAML parser — flow maps, anchors and
//!   quoting need no special casing, unlike scanning lines for `key:` at an indentation.
//!
//! "Did you mean" suggestions use a plain Levenshtein distance ([`suggest`]); no extra crate.
pub use crate::metrics::preprocess::ResizeMode;
use crate::schedule::ScheduleKind;
use crate::{BenchError, Result};
use serde::de::{self, DeserializeSeed, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// `experiments/quickstart.yaml`, built in so `bench run` has a default that needs no files.
/// Parse it with `parse(Path::new("experiments/quickstart.yaml"), QUICKSTART_YAML)`.
pub const QUICKSTART_YAML: &str = include_str!("../experiments/quickstart.yaml");

/// A spec file that parsed: its path (as given), its text (kept to locate later errors) and
/// the raw structure.
#[derive(Debug, Clone)]
pub struct SpecFile {
    pub path: PathBuf,
    pub text: String,
    pub raw: RawSpec,
}

/// The top level of a spec. See `crate::plan` for the defaults table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub name: String,
    pub model: RawModel,
    /// What the model was trained on (`cifar10`, `celeba64`, ...), to find published numbers.
    pub dataset: Option<String>,
    pub schedule: Option<RawSchedule>,
    pub samplers: Vec<RawSamplerEntry>,
    pub steps: Option<Sweep<i64>>,
    pub samples: Option<i64>,
    pub batch_size: Option<i64>,
    pub seed: Option<i64>,
    pub device: Option<String>,
    pub precision: Option<Precision>,
    pub metrics: Option<RawMetrics>,
    pub output: Option<String>,
    pub save_samples: Option<SaveSamples>,
    /// Keep each part's statistics checkpoint after the cell's row is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_stats: Option<bool>,
    /// Independent seeds per cell (mean and 95% t-interval per metric column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<i64>,
    /// Per-sample conditions (prompts or class labels) and the classifier-free guidance sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditioning: Option<RawConditioning>,
}

/// `conditioning:`: what each sample is conditioned on, and the guidance scales to sweep.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConditioning {
    /// COCO captions `.json`, `.txt` (one prompt per line) or `.jsonl` (`{"prompt": ...}` lines).
    pub prompts: Option<String>,
    pub negative_prompt: Option<String>,
    /// `uniform` (a seeded draw per sample) or a list cycled over the samples.
    pub class_labels: Option<RawClassLabels>,
    pub num_classes: Option<i64>,
    pub guidance_scale: Option<Sweep<f64>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawClassLabels {
    Rule(String),
    List(Vec<i64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Diffusers,
    Ddim,
    Torchscript,
    Oracle,
    /// An NVlabs/EDM `network-snapshot-*.pkl` (σ space).
    Edm,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Diffusers => "diffusers",
            ModelKind::Ddim => "ddim",
            ModelKind::Torchscript => "torchscript",
            ModelKind::Oracle => "oracle",
            ModelKind::Edm => "edm",
        }
    }
}

/// `model:`. One flat struct for all kinds (not a serde tagged enum: those buffer their content
/// and lose line numbers); which keys each kind takes is checked by the plan stage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub kind: ModelKind,
    pub path: Option<String>,
    pub config: Option<DdimConfigSpec>,
    pub ema: Option<bool>,
    pub shape: Option<Vec<i64>>,
    pub data: Option<RawData>,
    /// What the network outputs; default: the model's scheduler config, else `epsilon`.
    pub prediction: Option<crate::models::Prediction>,
    /// A TorchScript decoder (latents → images) for `torchscript` models.
    pub decoder: Option<String>,
    /// Let the spec's `schedule`/`prediction` replace what the model folder's scheduler config says.
    pub override_model_scheduler: Option<bool>,
    /// An oracle's noise parameterisation: `vp` (default) or `sigma` (EDM's denoiser in σ).
    pub space: Option<crate::models::NoiseSpace>,
    /// A folder with `tokenizer/` and `text_encoder/` (e.g. a StableDiffusionPipeline folder) whose
    /// prompt embeddings a `torchscript` model takes as its third input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<String>,
}

/// `model.config` of a `ddim` model: a preset name or the DDIM repo's `model:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DdimConfigSpec {
    Preset(String),
    Explicit(crate::models::unet::DdimModelConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    Gaussian,
    Gmm,
}

/// `model.data` of an oracle model (flat, like [`RawModel`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub kind: DataKind,
    pub shape: Option<Vec<i64>>,
    pub mean: Option<Moment>,
    pub std: Option<Moment>,
    pub weights: Option<Vec<f64>>,
    pub means: Option<Vec<Moment>>,
    pub stds: Option<Vec<Moment>>,
    pub components: Option<i64>,
    pub seed: Option<i64>,
}

/// A mean or standard deviation: one number, one per channel, or an `.npy` of the full shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Moment {
    Scalar(f64),
    PerChannel(Vec<f64>),
    Npy(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub kind: Option<ScheduleKind>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub timesteps: Option<i64>,
    /// Lin et al. 2024 zero terminal SNR (diffusers `rescale_betas_zero_snr`).
    pub rescale_betas_zero_snr: Option<bool>,
}

pub use crate::timesteps::Skip;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Tf32,
    Bf16,
    Fp16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub fid: Option<RawFid>,
    /// `fd_pixel:` with no value (YAML null) means "on, with defaults", like `fd_pixel: {}`.
    #[serde(default, deserialize_with = "null_means_default")]
    pub fd_pixel: Option<RawFdPixel>,
    #[serde(default, deserialize_with = "null_means_default")]
    pub fd_exact: Option<RawFdExact>,
    /// The three below read `fid`'s Inception pass (and, KID and PRDC, its reference's features).
    #[serde(default, deserialize_with = "null_means_default")]
    pub inception_score: Option<RawInceptionScore>,
    #[serde(default, deserialize_with = "null_means_default")]
    pub kid: Option<RawKid>,
    #[serde(default, deserialize_with = "null_means_default")]
    pub prdc: Option<RawPrdc>,
    /// FD in TorchScript encoders' feature spaces, one named column each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_features: Option<Vec<crate::metrics::fd_features::FdFeaturesSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_fid: Option<RawContextFid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_score: Option<RawClipScore>,
}

/// CLIP score with a transformers `CLIPModel` folder (e.g. openai/clip-vit-large-patch14).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClipScore {
    pub model: String,
}

/// Context-FID: a TS2Vec TorchScript encoder, the real windows (or their statistics), and how
/// generated samples reach the real data's [0, 1] scale.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawContextFid {
    pub encoder: String,
    pub reference: String,
    pub scaling: Option<crate::metrics::context_fid::TsScaling>,
    pub batch_size: Option<u64>,
}

/// torch-fidelity's `isc_splits` and shuffle seed (`rng_seed`; `shuffle: false` keeps sample order).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawInceptionScore {
    pub splits: Option<u64>,
    pub shuffle: Option<bool>,
    pub seed: Option<u32>,
}

/// torch-fidelity's `kid_subsets`, `kid_subset_size`, `rng_seed`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKid {
    pub subsets: Option<u64>,
    pub subset_size: Option<u64>,
    pub seed: Option<u32>,
}

/// The neighbourhood size k (torch-fidelity's `prc_neighborhood`, prdc's `nearest_k`) and the
/// distance block size (`prc_batch_size`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrdc {
    pub k: Option<u64>,
    pub batch_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFid {
    pub reference: Option<String>,
    pub weights: Option<String>,
    /// Which FID pipeline (resizing and quantisation differ, so the numbers differ).
    pub mode: Option<ResizeMode>,
    pub dims: Option<i64>,
    /// Accept Inception weights other than pytorch-fid's published file (its SHA-256 is checked).
    pub allow_custom_weights: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFdPixel {
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFdExact {}

fn null_means_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `save_samples`: how many PNGs to keep per cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveSamples {
    Count(u64),
    All,
}

impl SaveSamples {
    /// How many of a cell's `samples` to save.
    pub fn limit(self, samples: u64) -> u64 {
        match self {
            SaveSamples::Count(n) => n.min(samples),
            SaveSamples::All => samples,
        }
    }
}

/// A value or a list of values; a list sweeps (one cell per value).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Sweep<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Sweep<T> {
    pub fn values(&self) -> &[T] {
        match self {
            Sweep::One(v) => std::slice::from_ref(v),
            Sweep::Many(v) => v,
        }
    }
    pub fn is_list(&self) -> bool {
        matches!(self, Sweep::Many(_))
    }
}

/// A sampler parameter value as written (checked against the sampler's catalog in stage 2).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl ParamValue {
    /// A value written on a command line (`--set eta=0.5`), read as the YAML scalar it spells.
    pub fn from_text(s: &str) -> ParamValue {
        serde_yaml_ng::from_str::<ParamValue>(s.trim()).unwrap_or_else(|_| ParamValue::Str(s.trim().to_owned()))
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// One `samplers:` entry: `name`, optional `skip` and `steps`, and any other key is a sampler
/// parameter (kept in written order; validated against the sampler in stage 2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawSamplerEntry {
    pub name: String,
    pub skip: Option<Sweep<Skip>>,
    /// How `skip` was written: `skip`, or diffusers' `timestep_spacing`.
    #[serde(skip)]
    pub skip_key: &'static str,
    /// A diffusers `scheduler_config.json` that stands for `name`, `skip` and the parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffusers_config: Option<String>,
    pub steps: Option<Sweep<i64>>,
    pub params: Vec<(String, Sweep<ParamValue>)>,
}

// ---------------------------------------------------------------------------------------------
// Hand-written Deserialize impls: they keep serde_yaml_ng's positions (no buffering) and say in
// `expecting` what is allowed.

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sweep<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Sweep<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Sweep::Many(out))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(Sweep::One)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(Sweep::One)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(Sweep::One)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(Sweep::One)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(Sweep::One)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                T::deserialize(().into_deserializer()).map(Sweep::One)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a name or true/false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamValue, E> {
                i64::try_from(v).map(ParamValue::Int).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Moment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Moment;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a list with one number per channel, or an .npy path")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Moment, E> {
                Ok(Moment::Scalar(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Moment, E> {
                Ok(Moment::Scalar(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Moment, E> {
                Ok(Moment::Scalar(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Moment, E> {
                Ok(Moment::Npy(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Moment, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<f64>()? {
                    out.push(v);
                }
                Ok(Moment::PerChannel(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for DdimConfigSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DdimConfigSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a preset name (cifar10, celeba) or a map with ch, ch_mult, num_res_blocks, attn_resolutions, resolution")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DdimConfigSpec, E> {
                Ok(DdimConfigSpec::Preset(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DdimConfigSpec, A::Error> {
                Deserialize::deserialize(de::value::MapAccessDeserializer::new(map)).map(DdimConfigSpec::Explicit)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for SaveSamples {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SaveSamples;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of samples ≥ 0 or `all`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SaveSamples, E> {
                Ok(SaveSamples::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SaveSamples, E> {
                u64::try_from(v).map(SaveSamples::Count).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SaveSamples, E> {
                match v {
                    "all" => Ok(SaveSamples::All),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for SaveSamples {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SaveSamples::Count(n) => s.serialize_u64(*n),
            SaveSamples::All => s.serialize_str("all"),
        }
    }
}

impl<'de> Deserialize<'de> for RawSamplerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSamplerEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map with `name` (or `diffusers_config`), the sampler's parameters, and optionally `skip` and `steps`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSamplerEntry, A::Error> {
                let (mut name, mut skip, mut steps) = (None, None, None);
                let mut skip_key = "skip";
                let mut diffusers_config = None;
                let mut params: Vec<(String, Sweep<ParamValue>)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let seen = match key.as_str() {
                        "name" => name.replace(map.next_value::<String>()?).is_some(),
                        "skip" | "timestep_spacing" => {
                            let k = if key == "skip" { "skip" } else { "timestep_spacing" };
                            if skip.is_some() && k != skip_key {
                                return Err(de::Error::custom(format_args!(
                                    "`skip` and `timestep_spacing` are one setting (bench's and diffusers' spelling); give one"
                                )));
                            }
                            skip_key = k;
                            skip.replace(map.next_value::<Sweep<Skip>>()?).is_some()
                        }
                        "steps" => steps.replace(map.next_value::<Sweep<i64>>()?).is_some(),
                        "diffusers_config" => diffusers_config.replace(map.next_value::<String>()?).is_some(),
                        _ => {
                            let dup = params.iter().any(|(k, _)| *k == key);
                            params.push((key.clone(), map.next_value()?));
                            dup
                        }
                    };
                    if seen {
                        return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                    }
                }
                if name.is_some() && diffusers_config.is_some() {
                    return Err(de::Error::custom("give `name` or `diffusers_config`, not both (the config's _class_name names the sampler)"));
                }
                let name = match (name, &diffusers_config) {
                    (Some(n), _) => n,
                    (None, Some(_)) => String::new(),
                    (None, None) => return Err(de::Error::missing_field("name")),
                };
                Ok(RawSamplerEntry { name, skip, skip_key, steps, params, diffusers_config })
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Paths, locations and error text.

/// One step of a YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into the document, displayed like `samplers[1].eta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    pub fn root() -> Self {
        YamlPath(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    /// Parses serde_yaml_ng's path text (`samplers[1].eta`; `.` is the root).
    pub fn parse(s: &str) -> Self {
        let mut p = YamlPath::root();
        if s == "." {
            return p;
        }
        for part in s.split('.') {
            let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
            if !key.is_empty() {
                p.0.push(Seg::Key(key.to_owned()));
            }
            while let Some((idx, after)) = rest.split_once(']') {
                match idx.parse() {
                    Ok(i) => p.0.push(Seg::Index(i)),
                    Err(_) => p.0.push(Seg::Key(idx.to_owned())),
                }
                rest = after.strip_prefix('[').unwrap_or(after);
            }
        }
        p
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

const FOUND: &str = "\u{1}samplerbench-locate-found";

/// Line and column (1-based) of the node at `at` in `text`: of the key itself when the path ends
/// in a key, of the element when it ends in an index. None if the path is not in the document.
pub fn locate(text: &str, at: &YamlPath) -> Option<(usize, usize)> {
    if at.is_root() {
        return Some((1, 1));
    }
    let err = Locate(&at.0).deserialize(serde_yaml_ng::Deserializer::from_str(text)).err()?;
    if !err.to_string().contains(FOUND) {
        return None;
    }
    err.location().map(|l| (l.line(), l.column()))
}

/// Walks down `rest` and fails with FOUND at the target (see the module doc).
struct Locate<'a>(&'a [Seg]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any node")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(if self.0.is_empty() { FOUND } else { "not found" }));
        };
        while let Some(hit) = map.next_key_seed(KeyIs { want, last: rest.is_empty() })? {
            if hit {
                return map.next_value_seed(Locate(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("not found"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(i), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(if self.0.is_empty() { FOUND } else { "not found" }));
        };
        for _ in 0..*i {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("not found"));
            }
        }
        match seq.next_element_seed(Locate(rest))? {
            Some(()) => Ok(()),
            None => Err(de::Error::custom("not found")),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Locate<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        Err(E::custom(if self.0.is_empty() { FOUND } else { "not found" }))
    }
}

/// A map key: Ok(true) if it is the wanted one; fails with FOUND there if it is the path's end.
struct KeyIs<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.want, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

impl SpecFile {
    /// A user error at `at`: `FILE:LINE:COL: PATH: MESSAGE` (line omitted if the path is absent,
    /// e.g. for a key that was not written and whose default is wrong).
    /// For a path that is not written (a default that conflicts with a written value), the
    /// position is that of its nearest written ancestor.
    pub fn error_at(&self, at: &YamlPath, message: impl fmt::Display) -> BenchError {
        let mut near = at.clone();
        let pos = loop {
            if let Some(pos) = locate(&self.text, &near) {
                break Some(pos);
            }
            if near.0.pop().is_none() {
                break None;
            }
        };
        located_error(&self.path, pos, at, message)
    }
}

fn located_error(file: &Path, pos: Option<(usize, usize)>, at: &YamlPath, message: impl fmt::Display) -> BenchError {
    let mut s = file.display().to_string();
    if let Some((line, col)) = pos {
        s += &format!(":{line}:{col}");
    }
    s += ": ";
    if !at.is_root() {
        s += &format!("{at}: ");
    }
    s += &message.to_string();
    BenchError::User(s.replace('\n', " "))
}

/// Reads and parses a spec file (stage 1 only).
pub fn read(path: &Path) -> Result<SpecFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::user(format!("{}: cannot read the spec file: {e}", path.display())))?;
    parse(path, &text)
}

/// Parses spec text; `path` names it in errors and anchors its relative paths.
pub fn parse(path: &Path, text: &str) -> Result<SpecFile> {
    // Syntax first: errors from the Value parse are YAML syntax errors, not spec errors.
    if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        let pos = e.location().map(|l| (l.line(), l.column()));
        let msg = strip_location(&e);
        return Err(located_error(path, pos, &YamlPath::root(), format!("invalid YAML: {msg}")));
    }
    match serde_yaml_ng::from_str::<RawSpec>(text) {
        Ok(raw) => Ok(SpecFile { path: path.to_owned(), text: text.to_owned(), raw }),
        Err(e) => Err(spec_error(path, text, &e)),
    }
}

/// serde_yaml_ng's Display is `PATH: MESSAGE at line L column C` (PATH omitted at the root);
/// libyaml's syntax errors put the position mid-text (`… at line L column C, while parsing …`).
/// The position is reported separately, so its first mention is removed.
fn strip_location(e: &serde_yaml_ng::Error) -> String {
    let s = e.to_string();
    match e.location() {
        Some(l) => s.replacen(&format!(" at line {} column {}", l.line(), l.column()), "", 1),
        None => s,
    }
}

/// Splits serde_yaml_ng's text into (path, message). A path has no spaces; serde messages
/// that contain `: ` ("invalid type: …") have a space before it.
fn split_path(s: &str) -> (YamlPath, &str) {
    match s.split_once(": ") {
        Some((p, m)) if !p.is_empty() && !p.contains(' ') => (YamlPath::parse(p), m),
        _ => (YamlPath::root(), s),
    }
}

fn spec_error(file: &Path, text: &str, e: &serde_yaml_ng::Error) -> BenchError {
    let pos = e.location().map(|l| (l.line(), l.column()));
    let full = strip_location(e);
    let (at, msg) = split_path(&full);
    let names = backticked(msg);
    if msg.starts_with("unknown field ") {
        // "unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`" / "there are no fields"
        let (unknown, allowed) = names.split_first().map_or(("?", &[][..]), |(u, a)| (u.as_str(), a));
        let at = at.key(unknown);
        let pos = locate(text, &at).or(pos);
        let mut m = format!("unknown key `{unknown}`");
        if let Some(s) = suggest(unknown, allowed.iter().map(String::as_str)) {
            m += &format!("; did you mean `{s}`?");
        }
        m += &format!(" (allowed: {})", allowed.join(", "));
        return located_error(file, pos, &at, m);
    }
    if msg.starts_with("unknown variant ") {
        let (unknown, allowed) = names.split_first().map_or(("?", &[][..]), |(u, a)| (u.as_str(), a));
        let mut m = format!("unknown value `{unknown}`");
        if let Some(s) = suggest(unknown, allowed.iter().map(String::as_str)) {
            m += &format!("; did you mean `{s}`?");
        }
        m += &format!(" (allowed: {})", allowed.join(", "));
        return located_error(file, pos, &at, m);
    }
    if let Some(field) = msg.strip_prefix("missing field ") {
        return located_error(file, pos, &at, format!("missing required key {field}"));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((got, expected)) = rest.split_once(", expected ") {
                return located_error(
                    file,
                    pos,
                    &at,
                    format!("expected {}, got {}", plain_type(expected), plain_got(got)),
                );
            }
        }
    }
    located_error(file, pos, &at, msg)
}

/// serde's Rust type names → the spec's words.
fn plain_type(expected: &str) -> String {
    match expected {
        "i64" | "u64" | "i32" | "u32" | "usize" | "isize" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a sequence" => "a list".into(),
        e if e.starts_with("struct ") => "a map".into(),
        e if e.starts_with("enum ") => "a name".into(),
        e => e.into(),
    }
}

fn plain_got(got: &str) -> String {
    match got {
        "unit value" => "nothing (null)".into(),
        "sequence" => "a list".into(),
        "map" => "a map".into(),
        g => g.into(),
    }
}

/// The `backticked` names in a serde message, in order.
fn backticked(msg: &str) -> Vec<String> {
    msg.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Edit distance over chars: insertions, deletions, substitutions and transpositions of
/// neighbours (optimal string alignment), so `sampels` is one edit from `samples`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let sub = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + sub);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within max(2, len/3) edits (case-insensitive); ties go to the one
/// closest in length (a typo usually keeps the length), then to the first listed.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_lowercase();
    let n = w.chars().count();
    let limit = (n / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&w, &c.to_lowercase()), c.chars().count().abs_diff(n), c))
        .filter(|(d, _, _)| *d <= limit)
        .min_by_key(|(d, len, _)| (*d, *len))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
name: t
model: {kind: oracle, data: {kind: gaussian, shape: [3, 4, 4]}}
samplers:
  - {name: ddim, eta: [0.0, 0.5]}
  - name: plms
    alpha_index: repo
metrics:
  fd_pixel:
steps: 10
";

    #[test]
    fn locate_finds_keys_and_elements_in_flow_and_block_style() {
        let at = |s: &str| locate(DOC, &YamlPath::parse(s));
        assert_eq!(at("name"), Some((1, 1)));
        assert_eq!(at("model.data.shape"), Some((2, 46)));
        assert_eq!(at("samplers[0].eta"), Some((4, 18)));
        assert_eq!(at("samplers[0].eta[1]"), Some((4, 29)));
        assert_eq!(at("samplers[1].alpha_index"), Some((6, 5)));
        assert_eq!(at("samplers[1]"), Some((5, 5)));
        assert_eq!(at("metrics.fd_pixel"), Some((8, 3)));
        assert_eq!(at("steps"), Some((9, 1)));
        assert_eq!(at("samplers[2]"), None);
        assert_eq!(at("model.path"), None);
    }

    #[test]
    fn yaml_paths_round_trip() {
        for s in ["samplers[1].eta", "model.data.means[2][0]", "steps"] {
            assert_eq!(YamlPath::parse(s).to_string(), s);
        }
        assert_eq!(YamlPath::root().key("samplers").index(3).key("eta").to_string(), "samplers[3].eta");
    }

    #[test]
    fn serde_yaml_ng_error_text_format_is_what_split_path_expects() {
        // Pins the upstream Display format ("PATH: MESSAGE at line L column C") we parse.
        let e = serde_yaml_ng::from_str::<RawSpec>("name: x\nmodel: {kind: oracel}\nsamplers: []\n").unwrap_err();
        let loc = e.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (2, 15));
        let s = strip_location(&e);
        let (p, m) = split_path(&s);
        assert_eq!(p.to_string(), "model.kind");
        assert!(m.starts_with("unknown variant `oracel`, expected one of `diffusers`"), "{m}");
    }

    #[test]
    fn parsed_doc_keeps_sweeps_params_and_null_metric() {
        let f = parse(Path::new("t.yaml"), DOC).unwrap();
        let r = &f.raw;
        assert_eq!(
            r.samplers[0].params,
            vec![("eta".to_owned(), Sweep::Many(vec![ParamValue::Float(0.0), ParamValue::Float(0.5)]))]
        );
        assert_eq!(r.samplers[1].params, vec![("alpha_index".to_owned(), Sweep::One(ParamValue::Str("repo".into())))]);
        assert_eq!(r.steps, Some(Sweep::One(10)));
        assert_eq!(r.metrics.as_ref().unwrap().fd_pixel, Some(RawFdPixel { reference: None }));
        assert_eq!(r.metrics.as_ref().unwrap().fd_exact, None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("sampels", "samples"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("sampels", ["samplers", "samples"]), Some("samples"));
        assert_eq!(suggest("sampels", ["name", "samples", "seed"]), Some("samples"));
        assert_eq!(suggest("dpmsolver++", ["dpm_solver", "dpm_solver++"]), Some("dpm_solver++"));
        assert_eq!(suggest("eta", ["order", "method"]), None);
        assert_eq!(suggest("DDIM", ["ddim", "ddpm"]), Some("ddim"));
    }
}
