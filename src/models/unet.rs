//! The pixel-space UNet of DDPM (Ho et al. 2020) and its descendants in tch, configured from a
//! diffusers `UNet2DModel` config or a DDIM-repo (ermongroup/ddim `Model`) config, with weights
//! from either layout.
//!
//! Beyond the DDPM layout this covers what diffusers' `UNet2DModel` expresses for ADM-style
//! networks (Dhariwal & Nichol 2021) such as the consistency-model checkpoints
//! (openai/diffusers-cd_imagenet64_*, *_lsun_256): class conditioning (`num_class_embeds`,
//! `class_embed_type`), AdaGN (`resnet_time_scale_shift: scale_shift`), ResNet blocks that
//! resample (`ResnetDownsampleBlock2D`, `ResnetUpsampleBlock2D`, `down/upsample_type: resnet`),
//! multi-head attention (`attention_head_dim`), `attn_norm_num_groups`, `add_attention`, Fourier
//! time features, and learned-variance outputs (`out_channels` = 2 × `in_channels`: ε, then the
//! variance interpolation v of Nichol & Dhariwal 2021 eq. 15), which `forward` returns raw.
//!
//! Weights are held as plain tensors and the forward pass is functional: nothing here trains,
//! and plain tensors make precision changes a `to_kind` away. Both layouts are renamed to one
//! canonical key space (diffusers' current names) before the network is built, and every key is
//! checked in both directions (tch's `VarStore::load` would silently ignore extra keys).
use super::diffusers_config::{square_sample_size, ConfigReader};
use super::layers::{
    fourier_embedding, sinusoidal_embedding, spatial_heads, upsample_nearest, ClassEmbedder, ClassEmbedding, Conv,
    GroupNorm, ResBlock, ResBlockSpec, ResnetResample, SpatialAttention, TimestepEmbedding,
};
use super::weights::{diffusers_attention_rename, DiffusersFolder, WeightSource, WeightStats, WeightTaker};
use super::{Condition, Denoiser};
use crate::checkpoint::{self, Select};
use crate::{BenchError, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A level of the contracting path (diffusers `down_block_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum DownBlock {
    /// ResNet blocks, then a strided-conv downsampler (`DownBlock2D`).
    Plain,
    /// ResNet blocks each followed by self-attention; downsampler per `downsample_type` (`AttnDownBlock2D`).
    Attn,
    /// ResNet blocks, then a downsampling ResNet block (`ResnetDownsampleBlock2D`).
    Resnet,
}

/// A level of the expanding path (diffusers `up_block_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum UpBlock {
    /// `UpBlock2D`: nearest 2× and a conv.
    Plain,
    /// `AttnUpBlock2D`: upsampler per `upsample_type`.
    Attn,
    /// `ResnetUpsampleBlock2D`: an upsampling ResNet block.
    Resnet,
}

/// How `AttnDownBlock2D`/`AttnUpBlock2D` resample (diffusers `downsample_type`/`upsample_type`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Resampler {
    Conv,
    Resnet,
}

/// The time features fed to the time-embedding MLP (diffusers `time_embedding_type`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum TimeFeatures {
    /// Sinusoids of the timestep label (DDPM; `flip_sin_to_cos`, `freq_shift` apply).
    Positional,
    /// Random Fourier features of log σ, output divided by σ (NCSN++ style, `fourier`).
    Fourier,
}

/// The architecture, independent of the file layout it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UNetConfig {
    pub in_channels: i64,
    /// Equal to `in_channels` for ε-prediction; twice it for learned variance (ε, then v).
    pub out_channels: i64,
    pub block_out_channels: Vec<i64>,
    pub down_blocks: Vec<DownBlock>,
    /// Deepest first, as diffusers runs them.
    pub up_blocks: Vec<UpBlock>,
    pub layers_per_block: usize,
    pub norm_num_groups: i64,
    pub norm_eps: f64,
    pub time_features: TimeFeatures,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    /// Width of the time embedding (diffusers `time_embedding_dim`, default 4 × first block).
    pub time_embed_dim: i64,
    pub class_embedding: ClassEmbedding,
    /// AdaGN: the time embedding scales and shifts after the second GroupNorm of each block.
    pub scale_shift: bool,
    /// 0: pad right/bottom by one then stride-2 conv without padding (DDPM/DDIM); 1: conv padding 1.
    pub downsample_padding: i64,
    pub downsample_type: Resampler,
    pub upsample_type: Resampler,
    /// Channels per attention head; None = one head over all channels.
    pub attention_head_dim: Option<i64>,
    /// Conv after nearest upsampling / strided conv for downsampling (else avg-pool down, no conv
    /// up; DDIM-repo `resamp_with_conv: false`).
    pub resamp_with_conv: bool,
    /// Whether there is a middle block (diffusers `mid_block_type: null` removes it).
    pub mid_block: bool,
    /// Self-attention in the middle block (diffusers `add_attention`).
    pub mid_attention: bool,
    /// GroupNorm groups of the middle block's attention; None = no GroupNorm there.
    pub mid_attn_norm_groups: Option<i64>,
    pub center_input_sample: bool,
    pub mid_block_scale_factor: f64,
    /// Training resolution, when the config states it (diffusers `sample_size`, DDIM `resolution`).
    pub sample_size: Option<i64>,
}

/// Every `UNet2DModel.__init__` parameter of diffusers 0.42 (others are ignored with a warning).
const UNET2D_KEYS: &[&str] = &[
    "sample_size", "in_channels", "out_channels", "center_input_sample", "time_embedding_type",
    "time_embedding_dim", "freq_shift", "flip_sin_to_cos", "down_block_types", "mid_block_type",
    "up_block_types", "block_out_channels", "layers_per_block", "mid_block_scale_factor",
    "downsample_padding", "downsample_type", "upsample_type", "dropout", "act_fn", "attention_head_dim",
    "norm_num_groups", "attn_norm_num_groups", "norm_eps", "resnet_time_scale_shift", "add_attention",
    "class_embed_type", "num_class_embeds", "num_train_timesteps",
];

impl UNetConfig {
    /// DDIM-repo `Model` config: `ch`, `ch_mult`, `num_res_blocks`, `attn_resolutions`, `resolution`.
    pub fn from_ddim(ddim: &DdimModelConfig) -> Self {
        let levels = ddim.ch_mult.len();
        let down_blocks: Vec<DownBlock> = (0..levels)
            .map(|i| if ddim.attn_resolutions.contains(&(ddim.resolution >> i)) { DownBlock::Attn } else { DownBlock::Plain })
            .collect();
        let ch0 = ddim.ch_mult.first().copied().unwrap_or(1) * ddim.ch;
        UNetConfig {
            in_channels: ddim.in_channels,
            out_channels: ddim.out_ch,
            block_out_channels: ddim.ch_mult.iter().map(|m| m * ddim.ch).collect(),
            up_blocks: down_blocks
                .iter()
                .rev()
                .map(|b| if *b == DownBlock::Attn { UpBlock::Attn } else { UpBlock::Plain })
                .collect(),
            down_blocks,
            layers_per_block: ddim.num_res_blocks,
            norm_num_groups: 32,
            norm_eps: 1e-6,
            time_features: TimeFeatures::Positional,
            freq_shift: 1.0,
            flip_sin_to_cos: false,
            time_embed_dim: 4 * ch0,
            class_embedding: ClassEmbedding::None,
            scale_shift: false,
            downsample_padding: 0,
            downsample_type: Resampler::Conv,
            upsample_type: Resampler::Conv,
            attention_head_dim: None,
            resamp_with_conv: ddim.resamp_with_conv,
            mid_block: true,
            mid_attention: true,
            mid_attn_norm_groups: Some(32),
            center_input_sample: false,
            mid_block_scale_factor: 1.0,
            sample_size: Some(ddim.resolution),
        }
    }

    /// Parse a diffusers `UNet2DModel` `config.json`. Options this UNet does not implement are
    /// refused by name rather than silently ignored.
    pub fn from_diffusers_json(path: &Path, text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
        Self::from_diffusers_value(path, &v)
    }

    pub(crate) fn from_diffusers_value(path: &Path, v: &serde_json::Value) -> Result<Self> {
        let r = ConfigReader::new(
            path,
            v,
            "UNet2DModel",
            " (text-conditioned UNets load with models::unet_cond::load)",
        )?;
        r.warn_unknown(UNET2D_KEYS);
        let time_features = match r.choice("time_embedding_type", &["positional", "fourier"], "positional")?.as_str() {
            "fourier" => TimeFeatures::Fourier,
            _ => TimeFeatures::Positional,
        };
        let scale_shift = r.choice("resnet_time_scale_shift", &["default", "scale_shift"], "default")? == "scale_shift";
        r.choice("act_fn", &["silu", "swish"], "silu")?;
        let resampler = |k: &str| -> Result<Resampler> {
            Ok(if r.choice(k, &["conv", "resnet"], "conv")? == "resnet" { Resampler::Resnet } else { Resampler::Conv })
        };
        let downsample_type = resampler("downsample_type")?;
        let upsample_type = resampler("upsample_type")?;
        // An explicit null removes the middle block.
        let mid_block = match v.get("mid_block_type") {
            Some(serde_json::Value::Null) => false,
            _ => r.choice("mid_block_type", &["UNetMidBlock2D"], "UNetMidBlock2D").map(|_| true)?,
        };
        let block_out_channels = r.ints("block_out_channels")?;
        let norm_num_groups = r.positive("norm_num_groups", 32)?;
        let class_embedding = match (r.opt_str("class_embed_type")?, r.opt_int("num_class_embeds")?) {
            (None, None) => ClassEmbedding::None,
            (None, Some(n)) if n > 0 => ClassEmbedding::Table(n),
            (None, Some(n)) => return Err(r.err(format!("num_class_embeds = {n} must be positive"))),
            (Some("timestep"), _) => ClassEmbedding::Timestep,
            (Some("identity"), _) => ClassEmbedding::Identity,
            (Some(other), _) => {
                return Err(r.err(format!(
                    "class_embed_type = {other:?} is not supported (supported: null with num_class_embeds, \"timestep\", \"identity\")"
                )))
            }
        };
        let strip = |t: &str| t.strip_prefix("UNetRes").unwrap_or(t).to_string();
        let down_blocks = r
            .strings("down_block_types")?
            .iter()
            .map(|t| match strip(t).as_str() {
                "DownBlock2D" => Ok(DownBlock::Plain),
                "AttnDownBlock2D" => Ok(DownBlock::Attn),
                "ResnetDownsampleBlock2D" => Ok(DownBlock::Resnet),
                other => Err(r.err(format!(
                    "down_block_types contains {other:?}; supported: \"DownBlock2D\", \"AttnDownBlock2D\", \"ResnetDownsampleBlock2D\""
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_blocks = r
            .strings("up_block_types")?
            .iter()
            .map(|t| match strip(t).as_str() {
                "UpBlock2D" => Ok(UpBlock::Plain),
                "AttnUpBlock2D" => Ok(UpBlock::Attn),
                "ResnetUpsampleBlock2D" => Ok(UpBlock::Resnet),
                other => Err(r.err(format!(
                    "up_block_types contains {other:?}; supported: \"UpBlock2D\", \"AttnUpBlock2D\", \"ResnetUpsampleBlock2D\""
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        if down_blocks.len() != block_out_channels.len() || up_blocks.len() != block_out_channels.len() {
            return Err(r.err(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({}) must have equal lengths",
                down_blocks.len(),
                up_blocks.len(),
                block_out_channels.len()
            )));
        }
        // diffusers: an explicit null means one head over all channels; absent means 8 per head.
        let attention_head_dim = match v.get("attention_head_dim") {
            Some(serde_json::Value::Null) => None,
            _ => Some(r.positive("attention_head_dim", 8)?),
        };
        let attn_norm_num_groups = r.opt_int("attn_norm_num_groups")?;
        let ch0 = block_out_channels[0];
        Ok(UNetConfig {
            in_channels: r.positive("in_channels", 3)?,
            out_channels: r.positive("out_channels", 3)?,
            block_out_channels,
            down_blocks,
            up_blocks,
            layers_per_block: r.positive("layers_per_block", 2)? as usize,
            norm_num_groups,
            norm_eps: r.float("norm_eps", 1e-5)?,
            time_features,
            freq_shift: r.float("freq_shift", 0.0)?,
            flip_sin_to_cos: r.boolean("flip_sin_to_cos", true)?,
            time_embed_dim: r.opt_int("time_embedding_dim")?.unwrap_or(4 * ch0),
            class_embedding,
            scale_shift,
            downsample_padding: r.int("downsample_padding", 1)?,
            downsample_type,
            upsample_type,
            attention_head_dim,
            resamp_with_conv: true,
            mid_block,
            mid_attention: r.boolean("add_attention", true)?,
            // diffusers UNetMidBlock2D: without attn_norm_num_groups, the attention has a GroupNorm
            // only in the default (non-AdaGN) layout.
            mid_attn_norm_groups: attn_norm_num_groups.or((!scale_shift).then_some(norm_num_groups)),
            center_input_sample: r.boolean("center_input_sample", false)?,
            mid_block_scale_factor: r.float("mid_block_scale_factor", 1.0)?,
            sample_size: square_sample_size(&r)?,
        })
    }

    /// Whether the output carries a learned variance after ε (`out_channels` = 2 × `in_channels`).
    pub fn learned_variance(&self) -> bool {
        self.out_channels == 2 * self.in_channels
    }
}

/// The DDIM repo's model config (its `config.model` section), or a preset.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DdimModelConfig {
    pub ch: i64,
    pub ch_mult: Vec<i64>,
    #[serde(default = "two")]
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<i64>,
    pub resolution: i64,
    #[serde(default = "three")]
    pub in_channels: i64,
    #[serde(default = "three")]
    pub out_ch: i64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "yes")]
    pub resamp_with_conv: bool,
}
fn two() -> usize {
    2
}
fn three() -> i64 {
    3
}
fn yes() -> bool {
    true
}

impl DdimModelConfig {
    /// Built-in presets matching the DDIM repo's `configs/{cifar10,celeba}.yml`.
    pub fn preset(name: &str) -> Result<Self> {
        let (ch_mult, resolution) = match name {
            "cifar10" => (vec![1, 2, 2, 2], 32),
            "celeba" => (vec![1, 2, 2, 2, 4], 64),
            other => {
                return Err(BenchError::user(format!("unknown DDIM model preset {other:?} (known: cifar10, celeba)")))
            }
        };
        Ok(DdimModelConfig {
            ch: 128,
            ch_mult,
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            resolution,
            in_channels: 3,
            out_ch: 3,
            dropout: 0.1,
            resamp_with_conv: true,
        })
    }
}

/// Rename a DDIM-repo state dict (`temb.dense.0`, `down.0.block.1.norm1`, `mid.attn_1.q`, ...)
/// into the canonical (diffusers) key space; attention 1×1 convs become linear weights.
pub fn ddim_to_canonical(cfg: &UNetConfig, sd: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let levels = cfg.block_out_channels.len();
    sd.into_iter()
        .map(|(k, v)| {
            let k = k.strip_prefix("module.").unwrap_or(&k).to_string();
            let parts: Vec<&str> = k.split('.').collect();
            let attn_leaf = |leaf: &str| match leaf {
                "norm" => "group_norm".to_string(),
                "q" => "to_q".into(),
                "k" => "to_k".into(),
                "v" => "to_v".into(),
                "proj_out" => "to_out.0".into(),
                x => x.into(),
            };
            let resnet_leaf = |leaf: &str| match leaf {
                "temb_proj" => "time_emb_proj".to_string(),
                "nin_shortcut" => "conv_shortcut".into(),
                x => x.into(),
            };
            let renamed = match parts.as_slice() {
                ["temb", "dense", "0", p] => format!("time_embedding.linear_1.{p}"),
                ["temb", "dense", "1", p] => format!("time_embedding.linear_2.{p}"),
                ["norm_out", p] => format!("conv_norm_out.{p}"),
                [dir @ ("down" | "up"), i, kind, rest @ ..] => {
                    let i: usize = i.parse().unwrap_or(usize::MAX);
                    // DDIM's `up` list is indexed by resolution level; diffusers runs deepest first.
                    let (block, idx) = if *dir == "down" {
                        ("down_blocks", i)
                    } else {
                        ("up_blocks", levels.wrapping_sub(1).wrapping_sub(i))
                    };
                    match (*kind, rest) {
                        ("block", [j, leaf, p]) => format!("{block}.{idx}.resnets.{j}.{}.{p}", resnet_leaf(leaf)),
                        ("attn", [j, leaf, p]) => format!("{block}.{idx}.attentions.{j}.{}.{p}", attn_leaf(leaf)),
                        ("downsample", ["conv", p]) => format!("{block}.{idx}.downsamplers.0.conv.{p}"),
                        ("upsample", ["conv", p]) => format!("{block}.{idx}.upsamplers.0.conv.{p}"),
                        _ => k.clone(),
                    }
                }
                ["mid", "block_1", leaf, p] => format!("mid_block.resnets.0.{}.{p}", resnet_leaf(leaf)),
                ["mid", "block_2", leaf, p] => format!("mid_block.resnets.1.{}.{p}", resnet_leaf(leaf)),
                ["mid", "attn_1", leaf, p] => format!("mid_block.attentions.0.{}.{p}", attn_leaf(leaf)),
                _ => k.clone(),
            };
            let is_attn_linear = renamed.contains(".attentions.")
                && [".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight"].iter().any(|s| renamed.ends_with(s));
            let v = if is_attn_linear && v.dim() == 4 { v.flatten(1, -1) } else { v };
            (renamed, v)
        })
        .collect()
}


/// How a level changes resolution between its blocks and the next level.
enum Downsampler {
    /// Strided 3×3 conv; `pad_right` = DDPM's asymmetric (0, 1, 0, 1) padding.
    Conv { conv: Conv, pad_right: bool },
    AvgPool,
    Resnet(ResBlock),
}
enum Upsampler {
    /// Nearest 2×, then the conv if any.
    Nearest(Option<Conv>),
    Resnet(ResBlock),
}

struct DownLevel {
    resnets: Vec<ResBlock>,
    attentions: Vec<SpatialAttention>,
    down: Option<Downsampler>,
}
struct UpLevel {
    resnets: Vec<ResBlock>,
    attentions: Vec<SpatialAttention>,
    up: Option<Upsampler>,
}
struct Mid {
    first: ResBlock,
    attention: Option<SpatialAttention>,
    second: ResBlock,
}

pub struct UNet {
    pub config: UNetConfig,
    kind: Kind,
    device: Device,
    conv_in: Conv,
    /// GaussianFourierProjection weights when the time features are Fourier.
    fourier: Option<Tensor>,
    time_embedding: TimestepEmbedding,
    class_embedding: ClassEmbedder,
    down: Vec<DownLevel>,
    mid: Option<Mid>,
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv,
    source: String,
    stats: WeightStats,
}

impl UNet {
    /// Build from a canonical-key state dict; every key is used exactly once or it is an error.
    pub fn from_state_dict(
        config: UNetConfig,
        sd: BTreeMap<String, Tensor>,
        device: Device,
        kind: Kind,
        source: &str,
    ) -> Result<Self> {
        Self::from_source(config, WeightSource::from_state_dict(sd, source), device, kind, source)
    }

    fn from_source(config: UNetConfig, source: WeightSource, device: Device, kind: Kind, name: &str) -> Result<Self> {
        let mut wt = WeightTaker::new(source, device, kind);
        let mut unet = Self::build(config, &mut wt, name)?;
        unet.stats = wt.finish("UNet config", &[])?;
        Ok(unet)
    }

    /// The canonical weight names and shapes a config needs, in construction order.
    pub fn expected_weights(config: &UNetConfig) -> Result<Vec<(String, Vec<i64>)>> {
        let mut wt = WeightTaker::dry_run();
        Self::build(config.clone(), &mut wt, "config")?;
        Ok(wt.requested)
    }

    pub fn parameter_count(&self) -> i64 {
        self.stats.parameters
    }

    /// Parameter count, bytes and element types of the loaded weights.
    pub fn weight_stats(&self) -> &WeightStats {
        &self.stats
    }

    /// The precision the network computes in.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn device(&self) -> Device {
        self.device
    }

    fn build(config: UNetConfig, wt: &mut WeightTaker, source: &str) -> Result<Self> {
        let cfg = &config;
        let bad = |m: String| BenchError::user(format!("{source}: {m}"));
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        if n == 0 || cfg.down_blocks.len() != n || cfg.up_blocks.len() != n {
            return Err(bad(format!(
                "the UNet config needs one down and one up block per entry of block_out_channels ({n})"
            )));
        }
        let g = cfg.norm_num_groups;
        if cfg.time_embed_dim <= 0 || ch[0] % 2 == 1 {
            return Err(bad(format!("time embedding width {} / first block width {} are not usable", cfg.time_embed_dim, ch[0])));
        }
        let temb = cfg.time_embed_dim;
        let res = |cin: i64, cout: i64, out_scale: f64, resample: Option<ResnetResample>| ResBlockSpec {
            cin,
            cout,
            temb: Some(temb),
            groups: g,
            eps: cfg.norm_eps,
            scale_shift: cfg.scale_shift,
            out_scale,
            resample,
        };
        let heads = |c: i64| spatial_heads(c, cfg.attention_head_dim).map_err(bad);
        let attn_norm = Some((g, cfg.norm_eps));

        let conv_in = Conv::new(wt, "conv_in", cfg.in_channels, ch[0], 3, 1, 1);
        let (fourier, time_input) = match cfg.time_features {
            TimeFeatures::Positional => (None, ch[0]),
            TimeFeatures::Fourier => (Some(wt.take("time_proj.weight", &[ch[0]])), 2 * ch[0]),
        };
        let time_embedding = TimestepEmbedding::new(wt, "time_embedding", time_input, temb);
        let class_embedding = ClassEmbedder::new(wt, &cfg.class_embedding, time_input, temb);

        let mut down = vec![];
        let mut skip_channels = vec![ch[0]];
        let mut cin = ch[0];
        for (i, &block) in cfg.down_blocks.iter().enumerate() {
            let cout = ch[i];
            let name = |part: &str| format!("down_blocks.{i}.{part}");
            let mut level = DownLevel { resnets: vec![], attentions: vec![], down: None };
            for j in 0..cfg.layers_per_block {
                let rin = if j == 0 { cin } else { cout };
                level.resnets.push(ResBlock::new(wt, &name(&format!("resnets.{j}")), res(rin, cout, 1.0, None)));
                if block == DownBlock::Attn {
                    let a = SpatialAttention::new(wt, &name(&format!("attentions.{j}")), cout, heads(cout)?, attn_norm, 1.0);
                    level.attentions.push(a);
                }
                skip_channels.push(cout);
            }
            if i + 1 < n {
                let resnet = block == DownBlock::Resnet || (block == DownBlock::Attn && cfg.downsample_type == Resampler::Resnet);
                level.down = Some(if resnet {
                    let spec = res(cout, cout, 1.0, Some(ResnetResample::Down));
                    Downsampler::Resnet(ResBlock::new(wt, &name("downsamplers.0"), spec))
                } else if cfg.resamp_with_conv {
                    let pad = cfg.downsample_padding;
                    let conv = Conv::new(wt, &name("downsamplers.0.conv"), cout, cout, 3, 2, pad);
                    Downsampler::Conv { conv, pad_right: pad == 0 }
                } else {
                    Downsampler::AvgPool
                });
                skip_channels.push(cout);
            }
            down.push(level);
            cin = cout;
        }

        let c = ch[n - 1];
        let s = cfg.mid_block_scale_factor;
        let mid = if cfg.mid_block {
            let attention = if cfg.mid_attention {
                let norm = cfg.mid_attn_norm_groups.map(|ag| (ag, cfg.norm_eps));
                Some(SpatialAttention::new(wt, "mid_block.attentions.0", c, heads(c)?, norm, s))
            } else {
                None
            };
            Some(Mid {
                first: ResBlock::new(wt, "mid_block.resnets.0", res(c, c, s, None)),
                attention,
                second: ResBlock::new(wt, "mid_block.resnets.1", res(c, c, s, None)),
            })
        } else {
            None
        };

        let mut up = vec![];
        let mut prev = c;
        for (i, &block) in cfg.up_blocks.iter().enumerate() {
            let cout = ch[n - 1 - i];
            let name = |part: &str| format!("up_blocks.{i}.{part}");
            let mut level = UpLevel { resnets: vec![], attentions: vec![], up: None };
            for j in 0..=cfg.layers_per_block {
                let skip = skip_channels.pop().ok_or_else(|| BenchError::Internal("skip channel bookkeeping".into()))?;
                let rin = if j == 0 { prev } else { cout } + skip;
                level.resnets.push(ResBlock::new(wt, &name(&format!("resnets.{j}")), res(rin, cout, 1.0, None)));
                if block == UpBlock::Attn {
                    let a = SpatialAttention::new(wt, &name(&format!("attentions.{j}")), cout, heads(cout)?, attn_norm, 1.0);
                    level.attentions.push(a);
                }
            }
            if i + 1 < n {
                let resnet = block == UpBlock::Resnet || (block == UpBlock::Attn && cfg.upsample_type == Resampler::Resnet);
                level.up = Some(if resnet {
                    let spec = res(cout, cout, 1.0, Some(ResnetResample::Up));
                    Upsampler::Resnet(ResBlock::new(wt, &name("upsamplers.0"), spec))
                } else {
                    Upsampler::Nearest(
                        cfg.resamp_with_conv.then(|| Conv::new(wt, &name("upsamplers.0.conv"), cout, cout, 3, 1, 1)),
                    )
                });
            }
            up.push(level);
            prev = cout;
        }
        let norm_out = GroupNorm::new(wt, "conv_norm_out", ch[0], g, cfg.norm_eps);
        let conv_out = Conv::new(wt, "conv_out", ch[0], cfg.out_channels, 3, 1, 1);
        let (kind, device) = (wt.kind, wt.device);
        let stats = WeightStats { parameters: 0, bytes: 0, kinds: vec![] };
        Ok(UNet {
            config,
            kind,
            device,
            conv_in,
            fourier,
            time_embedding,
            class_embedding,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            source: source.into(),
            stats,
        })
    }

    /// The time features of labels t [B] (f32, before the MLP).
    fn time_features(&self, t: &Tensor) -> Tensor {
        match &self.fourier {
            Some(w) => fourier_embedding(t, w),
            None => sinusoidal_embedding(t, self.config.block_out_channels[0], self.config.flip_sin_to_cos, self.config.freq_shift),
        }
    }

    /// The raw network output for x [B, in_channels, H, W] at labels t ([B] or one for all; f64
    /// or any numeric kind, may be fractional) with class labels when the model is
    /// class-conditional ([B] integers for `num_class_embeds`, [B] numbers for `timestep`,
    /// [B, time_embed_dim] for `identity`). Returns [B, out_channels, H, W] in the model's
    /// precision on its device: ε, or ε then the variance values for a learned-variance model.
    /// H and W must be multiples of 2^(levels − 1).
    pub fn forward(&self, x: &Tensor, t: &Tensor, class_labels: Option<&Tensor>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let n = self.config.block_out_channels.len();
        let b = check_sample(x, self.config.in_channels, 1 << (n - 1), 1 << (n - 1), &self.source)?;
        let t = batch_timesteps(t, b, &self.source)?.to_device(self.device);
        let labels = class_labels.map(|l| l.to_device(self.device));
        self.class_embedding.check(labels.as_ref(), b).map_err(|m| BenchError::user(format!("{}: {m}", self.source)))?;

        let x = x.to_device(self.device).to_kind(self.kind);
        let x = if self.config.center_input_sample { x * 2.0 - 1.0 } else { x };
        let mut emb = self.time_embedding.forward(&self.time_features(&t).to_kind(self.kind));
        if let Some(c) = self.class_embedding.forward(labels.as_ref(), self.kind, |l| self.time_features(l)) {
            emb += c;
        }
        // Every ResNet block applies SiLU to the embedding before its projection: do it once.
        let emb_act = emb.silu();
        let emb_act = Some(&emb_act);
        let mut h = self.conv_in.forward(&x);
        let mut skips = vec![h.shallow_clone()];
        for level in &self.down {
            for (j, r) in level.resnets.iter().enumerate() {
                h = r.forward(&h, emb_act);
                if let Some(a) = level.attentions.get(j) {
                    h = a.forward(&h);
                }
                skips.push(h.shallow_clone());
            }
            if let Some(d) = &level.down {
                h = match d {
                    Downsampler::Conv { conv, pad_right: true } => conv.forward(&h.constant_pad_nd([0, 1, 0, 1])),
                    Downsampler::Conv { conv, pad_right: false } => conv.forward(&h),
                    Downsampler::AvgPool => h.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>),
                    Downsampler::Resnet(r) => r.forward(&h, emb_act),
                };
                skips.push(h.shallow_clone());
            }
        }
        if let Some(mid) = &self.mid {
            h = mid.first.forward(&h, emb_act);
            if let Some(a) = &mid.attention {
                h = a.forward(&h);
            }
            h = mid.second.forward(&h, emb_act);
        }
        for level in &self.up {
            for (j, r) in level.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| BenchError::Internal("one skip per up ResNet block".into()))?;
                h = r.forward(&Tensor::cat(&[h, skip], 1), emb_act);
                if let Some(a) = level.attentions.get(j) {
                    h = a.forward(&h);
                }
            }
            h = match &level.up {
                None => h,
                Some(Upsampler::Resnet(r)) => r.forward(&h, emb_act),
                Some(Upsampler::Nearest(conv)) => {
                    let (hh, ww) = (h.size()[2], h.size()[3]);
                    let u = upsample_nearest(&h, [2 * hh, 2 * ww]);
                    match conv {
                        Some(c) => c.forward(&u),
                        None => u,
                    }
                }
            };
        }
        let out = self.conv_out.forward(&self.norm_out.forward(&h).silu());
        Ok(match self.config.time_features {
            // NCSN++ parameterisation: the network output is divided by σ.
            TimeFeatures::Fourier => out / t.to_kind(self.kind).reshape([b, 1, 1, 1]),
            TimeFeatures::Positional => out,
        })
    }
}

/// Checks a network input x [B, C, H, W] (B ≥ 1, C = `channels`, H and W multiples of
/// `multiple` and at least `min`) and returns B.
pub(crate) fn check_sample(x: &Tensor, channels: i64, multiple: i64, min: i64, source: &str) -> Result<i64> {
    match x.size().as_slice() {
        &[b, c, h, w] if b > 0 && c == channels && h >= min && w >= min && h % multiple == 0 && w % multiple == 0 => Ok(b),
        s => Err(BenchError::user(format!(
            "{source}: input of shape {s:?}; expected [batch, {channels}, H, W] with H and W multiples of {multiple}, at least {min}"
        ))),
    }
}

/// Labels t as [B]: one label for the whole batch is repeated.
pub(crate) fn batch_timesteps(t: &Tensor, b: i64, source: &str) -> Result<Tensor> {
    match t.numel() as i64 {
        n if n == b => Ok(t.reshape([b])),
        1 => Ok(t.reshape([1]).expand([b], false)),
        n => Err(BenchError::user(format!("{source}: {n} timestep labels for a batch of {b}"))),
    }
}

/// Load a diffusers `UNet2DModel` folder: `config.json` plus `diffusion_pytorch_model.safetensors`
/// (preferred; or its fp16 variant, sharded, or `.bin`; see [`super::weights::pick_weights`]).
/// Every layout this module implements loads, class-conditional and learned-variance ones too.
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<UNet> {
    let folder = DiffusersFolder::open(dir, kind, "UNet")?;
    let config = UNetConfig::from_diffusers_value(&folder.config_path, &folder.config)?;
    let source = WeightSource::open(&folder.weights)?.rename(diffusers_attention_rename);
    UNet::from_source(config, source, device, kind, &folder.weights.display().to_string())
}

/// Load a DDIM-repo checkpoint: a plain state dict (pesser's `model-790000.ckpt`) or the DDIM
/// authors' `[model, optimizer, epoch, step, ema]` list, whose last entry (EMA) the published
/// tables used; `ema: false` takes the first (raw) entry instead.
pub fn load_ddim(path: &Path, ddim: &DdimModelConfig, ema: bool, device: Device, kind: Kind) -> Result<UNet> {
    if !path.is_file() {
        return Err(BenchError::file(path, "DDIM checkpoint not found"));
    }
    let root = checkpoint::load(path)?;
    let select = match &root {
        checkpoint::Value::List(items) | checkpoint::Value::Tuple(items) if items.len() > 1 => {
            Select::Path(if ema { (items.len() - 1).to_string() } else { "0".into() })
        }
        _ => Select::Auto,
    };
    let sd = checkpoint::select_state_dict(&root, &select).map_err(|m| BenchError::file(path, m))?;
    let config = UNetConfig::from_ddim(ddim);
    UNet::from_state_dict(config.clone(), ddim_to_canonical(&config, sd), device, kind, &path.display().to_string())
}

impl Denoiser for UNet {
    /// The raw output for x [B, in_channels, H, W]: ε (or whatever [`super::Prediction`] the
    /// plan declares) with x's shape, dtype and device. A class-conditional model takes
    /// `Condition::Labels` (what its class embedding reads: integer classes [B], numbers [B]
    /// for `timestep`, [B, time_embed_dim] for `identity`). A learned-variance model returns
    /// only its first `in_channels` channels, the ε half (diffusers' schedulers split
    /// `model_output` the same way); the variance half is for samplers that use it, through
    /// [`Denoiser::forward_with_variance`].
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Condition>) -> Result<Tensor> {
        Ok(self.forward_with_variance(x, t, cond)?.0)
    }
    fn forward_with_variance(&self, x: &Tensor, t: &Tensor, cond: Option<&Condition>) -> Result<(Tensor, Option<Tensor>)> {
        let labels = match cond {
            None => None,
            Some(Condition::Labels(l)) => Some(l),
            Some(Condition::Embeddings(_)) => {
                return Err(BenchError::user(format!(
                    "{}: a UNet2DModel takes class labels, not text embeddings (those are for a UNet2DConditionModel)",
                    self.source
                )))
            }
        };
        // Shapes and labels are checked by the forward; what can still fail inside (out of
        // memory, a device error) is a libtorch exception, reported as one error line.
        let out = super::catch_torch("UNet forward", || UNet::forward(self, x, t, labels))??;
        let like_x = |t: Tensor| -> Result<Tensor> { Ok(t.f_to_device(x.device())?.f_to_kind(x.kind())?) };
        if !self.config.learned_variance() {
            return Ok((like_x(out)?, None));
        }
        let c = self.config.in_channels;
        Ok((like_x(out.f_narrow(1, 0, c)?)?, Some(like_x(out.f_narrow(1, c, c)?)?)))
    }
    fn describe(&self) -> String {
        format!("unet:{}", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state dict with every canonical key the config asks for, from seeded random values.
    fn random_state_dict(cfg: &UNetConfig) -> BTreeMap<String, Tensor> {
        crate::test_rng::seed(0);
        UNet::expected_weights(cfg)
            .unwrap()
            .into_iter()
            .map(|(k, shape)| (k, Tensor::randn(&shape, (Kind::Float, Device::Cpu)) * 0.05))
            .collect()
    }

    #[test]
    fn cifar10_preset_has_35_7m_parameters() {
        let cfg = UNetConfig::from_ddim(&DdimModelConfig::preset("cifar10").unwrap());
        let sd = random_state_dict(&cfg);
        let n: i64 = sd.values().map(|t| t.numel() as i64).sum();
        // Ho et al.: 35.7M parameters for the CIFAR10 model.
        assert_eq!(n, 35_746_307);
        let unet = UNet::from_state_dict(cfg, sd, Device::Cpu, Kind::Float, "random").unwrap();
        assert_eq!(unet.parameter_count(), 35_746_307);
    }

    #[test]
    fn key_mismatches_are_listed_in_both_directions() {
        let cfg = UNetConfig::from_ddim(&DdimModelConfig::preset("cifar10").unwrap());
        let mut sd = random_state_dict(&cfg);
        sd.remove("conv_in.bias");
        sd.insert("extra.weight".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu)));
        sd.insert("conv_out.bias".into(), Tensor::zeros([4], (Kind::Float, Device::Cpu)));
        let err = UNet::from_state_dict(cfg, sd, Device::Cpu, Kind::Float, "x.ckpt").err().unwrap();
        assert_eq!(
            err.to_string(),
            "x.ckpt: weights do not match the UNet config; missing keys: conv_in.bias; \
             wrong shapes: conv_out.bias (file [4], expected [3]); unexpected keys: extra.weight"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn group_counts_that_do_not_divide_a_layer_are_refused_at_load() {
        // diffusers' GroupNorm refuses such a layer at construction; libtorch would fail mid-forward.
        let mut cfg = UNetConfig::from_ddim(&DdimModelConfig::preset("cifar10").unwrap());
        cfg.block_out_channels = vec![128, 144, 256, 256];
        let sd = random_state_dict(&cfg);
        let err = UNet::from_state_dict(cfg, sd, Device::Cpu, Kind::Float, "x.ckpt").err().unwrap();
        assert!(
            err.to_string().starts_with(
                "x.ckpt: the UNet config is inconsistent: down_blocks.1.resnets.0.norm2: 32 groups do not divide 144 channels \
                 (norm_num_groups); "
            ),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn ddim_layout_renames_to_canonical() {
        let cfg = UNetConfig::from_ddim(&DdimModelConfig::preset("cifar10").unwrap());
        let z = || Tensor::zeros([2, 2, 1, 1], (Kind::Float, Device::Cpu));
        let sd: BTreeMap<String, Tensor> = [
            "module.temb.dense.0.weight",
            "up.3.block.2.nin_shortcut.bias",
            "up.1.attn.0.proj_out.weight",
            "down.2.downsample.conv.weight",
            "mid.attn_1.q.weight",
            "mid.block_2.temb_proj.bias",
            "norm_out.weight",
        ]
        .iter()
        .map(|k| (k.to_string(), z()))
        .collect();
        let out = ddim_to_canonical(&cfg, sd);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "conv_norm_out.weight",
                "down_blocks.2.downsamplers.0.conv.weight",
                "mid_block.attentions.0.to_q.weight",
                "mid_block.resnets.1.time_emb_proj.bias",
                "time_embedding.linear_1.weight",
                "up_blocks.0.resnets.2.conv_shortcut.bias",
                "up_blocks.2.attentions.0.to_out.0.weight",
            ]
        );
        // 1×1 attention convs become linear weights.
        assert_eq!(out["mid_block.attentions.0.to_q.weight"].size(), [2, 2]);
        assert_eq!(out["down_blocks.2.downsamplers.0.conv.weight"].size(), [2, 2, 1, 1]);
    }
}
