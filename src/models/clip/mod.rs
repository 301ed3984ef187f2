//! CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision") in tch, read from transformers' folders: the BPE tokenizer, the text transformer
//! (Stable Diffusion 1.x's text encoder is OpenAI's CLIP ViT-L/14 text tower, 2.x's the OpenCLIP
//! ViT-H/14 one converted to this layout), and the vision transformer with both projections (the
//! network behind CLIP score).
//!
//! Weights are plain tensors read one at a time into the target precision (`models::weights`),
//! the layers are the shared ones of `models::layers`, and every key of the file is checked
//! against the config in both directions.
pub mod image_processor;
pub mod text_model;
pub mod tokenizer;
pub mod vision_model;

pub use image_processor::{ClipImageProcessor, ClipResize};
pub use text_model::{ClipTextModel, ClipTextOutput};
pub use tokenizer::ClipTokenizer;
pub use vision_model::ClipVisionModel;

use super::layers::{Attention, LayerNorm, Linear};
use super::weights::{pick_weight_file, WeightSource, WeightTaker};
use crate::{BenchError, Result};
use serde_json::Value;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The MLP nonlinearity (`hidden_act`; transformers `ACT2FN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Activation {
    /// x·σ(1.702x), OpenAI CLIP's approximation (SD 1.x).
    QuickGelu,
    /// The exact (erf) GELU (OpenCLIP, SD 2.x).
    Gelu,
}

impl Activation {
    fn forward(self, x: &Tensor) -> Tensor {
        match self {
            // transformers `QuickGELUActivation`: input * sigmoid(1.702 * input).
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::Gelu => x.gelu("none"),
        }
    }
}

/// The transformer shared by both towers.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EncoderConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

/// transformers `CLIPTextConfig` (defaults: its class defaults, the openai/clip-vit-base-patch32 text tower).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClipTextConfig {
    pub encoder: EncoderConfig,
    pub vocab_size: i64,
    pub max_position_embeddings: i64,
    /// Selects the pooled (end-of-text) position; see `ClipTextModel::pooled_positions`.
    pub eos_token_id: i64,
}

/// transformers `CLIPVisionConfig`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClipVisionConfig {
    pub encoder: EncoderConfig,
    pub image_size: i64,
    pub patch_size: i64,
    pub num_channels: i64,
}

/// A config.json section with transformers' defaults and refusal of what is not implemented.
struct Section<'a> {
    v: &'a Value,
    path: &'a Path,
    name: &'a str,
}

impl Section<'_> {
    fn err(&self, msg: String) -> BenchError {
        BenchError::file(self.path, if self.name.is_empty() { msg } else { format!("{}: {msg}", self.name) })
    }
    fn int(&self, k: &str, default: i64) -> Result<i64> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_i64()
                .filter(|&n| n > 0)
                .ok_or_else(|| self.err(format!("{k} must be a positive integer, found {x}"))),
        }
    }
    fn float(&self, k: &str, default: f64) -> Result<f64> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| self.err(format!("{k} must be a number, found {x}"))),
        }
    }
    /// A square size given as an integer or as an equal pair.
    fn square(&self, k: &str, default: i64) -> Result<i64> {
        match self.v.get(k) {
            Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] && a[0].as_i64().is_some_and(|n| n > 0) => {
                Ok(a[0].as_i64().unwrap_or(default))
            }
            Some(Value::Array(_)) => Err(self.err(format!("{k} must be square (one integer); found {}", self.v[k]))),
            _ => self.int(k, default),
        }
    }
    fn encoder(&self, defaults: (i64, i64, i64, i64)) -> Result<EncoderConfig> {
        let act = match self.v.get("hidden_act").and_then(Value::as_str).unwrap_or("quick_gelu") {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(self.err(format!("hidden_act = {other:?} is not supported (supported: \"quick_gelu\", \"gelu\")")))
            }
        };
        let (hidden, intermediate, layers, heads) = defaults;
        let cfg = EncoderConfig {
            hidden_size: self.int("hidden_size", hidden)?,
            intermediate_size: self.int("intermediate_size", intermediate)?,
            num_hidden_layers: self.int("num_hidden_layers", layers)? as usize,
            num_attention_heads: self.int("num_attention_heads", heads)?,
            hidden_act: act,
            layer_norm_eps: self.float("layer_norm_eps", 1e-5)?,
        };
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(self.err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        Ok(cfg)
    }
}

impl ClipTextConfig {
    fn parse(s: &Section) -> Result<Self> {
        Ok(ClipTextConfig {
            encoder: s.encoder((512, 2048, 12, 8))?,
            vocab_size: s.int("vocab_size", 49408)?,
            max_position_embeddings: s.int("max_position_embeddings", 77)?,
            eos_token_id: s.int("eos_token_id", 49407)?,
        })
    }
}

impl ClipVisionConfig {
    fn parse(s: &Section) -> Result<Self> {
        let cfg = ClipVisionConfig {
            encoder: s.encoder((768, 3072, 12, 12))?,
            image_size: s.square("image_size", 224)?,
            patch_size: s.square("patch_size", 32)?,
            num_channels: s.int("num_channels", 3)?,
        };
        if cfg.image_size % cfg.patch_size != 0 {
            return Err(s.err(format!("image_size {} is not a multiple of patch_size {}", cfg.image_size, cfg.patch_size)));
        }
        Ok(cfg)
    }
}

/// What a transformers CLIP `config.json` describes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum ClipConfig {
    /// `CLIPTextModel` (a diffusers pipeline's `text_encoder/`), or `CLIPTextModelWithProjection`
    /// with its projection width.
    Text { text: ClipTextConfig, projection_dim: Option<i64> },
    /// `CLIPModel`: both towers and their projections into one embedding space.
    Full { text: ClipTextConfig, vision: ClipVisionConfig, projection_dim: i64 },
}

impl ClipConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(BenchError::file(dir, "CLIP model folder not found (expected config.json and model.safetensors)"));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::file(&path, format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| BenchError::file(&path, format!("not valid JSON: {e}")))?;
        Self::parse(&path, &v)
    }

    pub fn parse(path: &Path, v: &Value) -> Result<Self> {
        let top = Section { v, path, name: "" };
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or(if v.get("text_config").is_some() { "clip" } else { "clip_text_model" });
        let architectures: Vec<&str> =
            v.get("architectures").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        match model_type {
            "clip_text_model" => {
                if let Some(a) = architectures.iter().find(|a| !matches!(**a, "CLIPTextModel" | "CLIPTextModelWithProjection")) {
                    return Err(top.err(format!(
                        "architecture {a:?} is not supported (supported: \"CLIPTextModel\", \"CLIPTextModelWithProjection\", \"CLIPModel\")"
                    )));
                }
                let projection_dim =
                    if architectures.contains(&"CLIPTextModelWithProjection") { Some(top.int("projection_dim", 512)?) } else { None };
                Ok(ClipConfig::Text { text: ClipTextConfig::parse(&top)?, projection_dim })
            }
            "clip" => {
                if let Some(a) = architectures.iter().find(|a| **a != "CLIPModel") {
                    return Err(top.err(format!("architecture {a:?} is not supported (supported: \"CLIPModel\")")));
                }
                // Old configs carry `text_config_dict` / `vision_config_dict`, which override
                // `text_config` / `vision_config` (transformers `CLIPConfig.__post_init__`).
                let merged = |name: &str| -> Value {
                    let mut base = v.get(name).cloned().filter(Value::is_object).unwrap_or_else(|| Value::Object(Default::default()));
                    if let (Some(Value::Object(over)), Value::Object(b)) = (v.get(format!("{name}_dict")), &mut base) {
                        for (k, x) in over {
                            b.insert(k.clone(), x.clone());
                        }
                    }
                    base
                };
                let (t, vi) = (merged("text_config"), merged("vision_config"));
                Ok(ClipConfig::Full {
                    text: ClipTextConfig::parse(&Section { v: &t, path, name: "text_config" })?,
                    vision: ClipVisionConfig::parse(&Section { v: &vi, path, name: "vision_config" })?,
                    projection_dim: top.int("projection_dim", 512)?,
                })
            }
            other => Err(top.err(format!(
                "model_type = {other:?} is not supported (supported: \"clip_text_model\", \"clip\")"
            ))),
        }
    }
}

/// The weights of a transformers CLIP folder (`model.safetensors`, `pytorch_model.bin`, their
/// fp16 variants or shards; see [`pick_weight_file`]), read lazily into the run's precision.
fn folder_weights(dir: &Path, kind: Kind) -> Result<WeightSource> {
    let file = pick_weight_file(dir, "model", "pytorch_model", kind)?;
    tracing::info!("loading CLIP weights from {} as {kind:?}", file.display());
    WeightSource::open(&file)
}

/// Buffers that older transformers versions saved with the weights and the model recomputes:
/// neither used nor unexpected.
const POSITION_IDS: [&str; 3] =
    ["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids", "embeddings.position_ids"];

/// A full CLIP model (`CLIPModel`): both towers, each with its projection.
pub struct ClipModel {
    pub text: ClipTextModel,
    pub vision: ClipVisionModel,
    /// exp of the learned `logit_scale` (CLIP's temperature; 100 for the OpenAI models).
    pub logit_scale: f64,
}

impl ClipModel {
    /// Loads a transformers `CLIPModel` folder (e.g. openai/clip-vit-large-patch14): config.json
    /// and model.safetensors / pytorch_model.bin (or their fp16 variants or shards).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let ClipConfig::Full { text, vision, projection_dim } = ClipConfig::load(dir)? else {
            return Err(BenchError::file(
                dir.join("config.json"),
                "this is a text-only CLIP model; CLIP score needs a full CLIPModel folder (model_type \"clip\", e.g. openai/clip-vit-large-patch14)",
            ));
        };
        let source = folder_weights(dir, kind)?;
        let origin = source.origin.clone();
        let mut wt = WeightTaker::new(source, device, kind);
        let text = ClipTextModel::build(&mut wt, "text_model.", text, Some(("text_projection.weight", projection_dim)), &origin);
        let vision = ClipVisionModel::build(&mut wt, "vision_model.", vision, Some(("visual_projection.weight", projection_dim)));
        let logit_scale = wt.take("logit_scale", &[]);
        wt.finish("CLIP config", &POSITION_IDS)?;
        let logit_scale = logit_scale.to_kind(Kind::Double).exp().f_double_value(&[])?;
        Ok(ClipModel { text, vision, logit_scale })
    }
}

/// A text-to-image pipeline's prompt encoding (diffusers `encode_prompt` without LoRA or
/// clip_skip): tokenizer → text tower → `last_hidden_state` [B,77,D]. Distinct prompts are
/// encoded once and kept, up to [`PROMPT_CACHE`] of them (a 77×768 fp32 embedding is 236 KB: a
/// whole caption set would not fit), so a guidance sweep's negative prompt and repeated captions
/// are not re-encoded.
/// Prompt embeddings [`PromptEncoder`] keeps at most (about 240 MB at SD 1.x's width).
pub const PROMPT_CACHE: usize = 1024;

pub struct PromptEncoder {
    pub tokenizer: ClipTokenizer,
    pub model: ClipTextModel,
    cache: std::cell::RefCell<std::collections::HashMap<String, Tensor>>,
}

impl PromptEncoder {
    /// A pipeline folder's `tokenizer/` and `text_encoder/`.
    pub fn load(pipeline: &Path, device: Device, kind: Kind) -> Result<Self> {
        let tokenizer = ClipTokenizer::load(&pipeline.join("tokenizer"))?;
        let model = ClipTextModel::load(&pipeline.join("text_encoder"), device, kind)?;
        Ok(PromptEncoder { tokenizer, model, cache: Default::default() })
    }

    /// The embeddings [B, 77, D] of `prompts`, in the text model's precision on its device.
    pub fn embed(&self, prompts: &[&str]) -> Result<Tensor> {
        let mut cache = self.cache.borrow_mut();
        if cache.len() + prompts.len() > PROMPT_CACHE {
            cache.clear();
        }
        let mut new: Vec<&str> = prompts.iter().copied().filter(|p| !cache.contains_key(*p)).collect();
        new.sort_unstable();
        new.dedup();
        if !new.is_empty() {
            let ids = self.tokenizer.encode_batch(&new)?;
            let states = crate::models::catch_torch("CLIP text encoder", || self.model.forward(&ids))??.last_hidden_state;
            for (i, p) in new.iter().enumerate() {
                cache.insert((*p).to_owned(), states.get(i as i64));
            }
        }
        let rows: Vec<&Tensor> = prompts.iter().map(|p| &cache[*p]).collect();
        Ok(Tensor::f_stack(&rows, 0)?)
    }
}

/// One pre-LN transformer block (transformers `CLIPEncoderLayer`):
/// x + attn(ln1(x)), then h + fc2(act(fc1(ln2(h)))).
struct EncoderLayer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

/// The stack of blocks (transformers `CLIPEncoder`).
struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    fn new(wt: &mut WeightTaker, prefix: &str, cfg: &EncoderConfig) -> Self {
        let (d, i, heads) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads);
        let layers = (0..cfg.num_hidden_layers)
            .map(|n| {
                let p = format!("{prefix}encoder.layers.{n}");
                EncoderLayer {
                    ln1: LayerNorm::new(wt, &format!("{p}.layer_norm1"), d, cfg.layer_norm_eps),
                    // transformers `CLIPAttention`; its scale head_dim^-0.5 is SDPA's default.
                    attn: Attention::named(
                        wt,
                        ["q_proj", "k_proj", "v_proj", "out_proj"].map(|n| format!("{p}.self_attn.{n}")),
                        d,
                        d,
                        heads,
                        d / heads,
                        true,
                    ),
                    ln2: LayerNorm::new(wt, &format!("{p}.layer_norm2"), d, cfg.layer_norm_eps),
                    fc1: Linear::new(wt, &format!("{p}.mlp.fc1"), d, i),
                    fc2: Linear::new(wt, &format!("{p}.mlp.fc2"), i, d),
                    act: cfg.hidden_act,
                }
            })
            .collect();
        Encoder { layers }
    }

    /// The hidden states after the first `depth` blocks of x [B,T,D]; `causal` masks each
    /// position's attention to itself and earlier ones (the text tower).
    fn forward(&self, x: &Tensor, causal: bool, depth: usize) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in self.layers.iter().take(depth) {
            // Out of place: `h` may share storage with the caller's `x`.
            h = &h + layer.attn.forward_masked(&layer.ln1.forward(&h), None, causal);
            h = &h + layer.fc2.forward(&layer.act.forward(&layer.fc1.forward(&layer.ln2.forward(&h))));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ClipConfig> {
        ClipConfig::parse(Path::new("config.json"), &v)
    }

    #[test]
    fn sd2_text_encoder_config_parses() {
        // stabilityai/stable-diffusion-2-1 text_encoder/config.json (OpenCLIP ViT-H/14 text tower).
        let cfg = parse(json!({
            "architectures": ["CLIPTextModel"], "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu",
            "hidden_size": 1024, "intermediate_size": 4096, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
            "model_type": "clip_text_model", "num_attention_heads": 16, "num_hidden_layers": 23, "pad_token_id": 1,
            "projection_dim": 512, "torch_dtype": "float32", "vocab_size": 49408
        }))
        .unwrap();
        let ClipConfig::Text { text, projection_dim } = cfg else { panic!("not a text config") };
        assert_eq!(projection_dim, None);
        assert_eq!((text.encoder.hidden_size, text.encoder.num_hidden_layers, text.encoder.hidden_act), (1024, 23, Activation::Gelu));
        assert_eq!(text.eos_token_id, 2);
    }

    #[test]
    fn clip_model_config_dicts_override_and_defaults_apply() {
        // The openai/clip-vit-large-patch14 layout: `*_config_dict` entries win.
        let cfg = parse(json!({
            "model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": 768,
            "text_config": {"hidden_size": 512, "num_attention_heads": 8},
            "text_config_dict": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
            "vision_config_dict": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                                   "num_hidden_layers": 24, "patch_size": 14}
        }))
        .unwrap();
        let ClipConfig::Full { text, vision, projection_dim } = cfg else { panic!("not a full config") };
        assert_eq!((text.encoder.hidden_size, text.encoder.num_attention_heads, text.encoder.intermediate_size), (768, 12, 3072));
        assert_eq!((text.vocab_size, text.max_position_embeddings, text.eos_token_id), (49408, 77, 49407));
        assert_eq!((vision.encoder.hidden_size, vision.patch_size, vision.image_size, vision.encoder.hidden_act), (1024, 14, 224, Activation::QuickGelu));
        assert_eq!(projection_dim, 768);
    }

    #[test]
    fn unsupported_configs_are_refused_by_name() {
        let err = |v: Value| parse(v).err().unwrap().to_string();
        assert_eq!(
            err(json!({"model_type": "clip_text_model", "architectures": ["CLIPTextModel"], "hidden_size": 10, "num_attention_heads": 4})),
            "config.json: hidden_size 10 is not a multiple of num_attention_heads 4"
        );
        assert_eq!(
            err(json!({"model_type": "clip", "vision_config": {"image_size": [224, 160]}})),
            "config.json: vision_config: image_size must be square (one integer); found [224,160]"
        );
        assert_eq!(
            err(json!({"model_type": "clip", "architectures": ["CLIPForImageClassification"]})),
            "config.json: architecture \"CLIPForImageClassification\" is not supported (supported: \"CLIPModel\")"
        );
        let ok = parse(json!({"model_type": "clip_text_model", "architectures": ["CLIPTextModelWithProjection"], "projection_dim": 1280})).unwrap();
        assert!(matches!(ok, ClipConfig::Text { projection_dim: Some(1280), .. }));
    }
}
