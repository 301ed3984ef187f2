//! The DDPM UNet (Ho et al. 2020) in tch, configured from a diffusers `UNet2DModel` config or a
//! DDIM-repo (ermongroup/ddim `Model`) config, with weights from either layout.
//!
//! Weights are held as plain tensors and the forward pass is functional: nothing here trains,
//! and plain tensors make precision changes a `to_kind` away. Both layouts are renamed to one
//! canonical key space (diffusers' current names) before the network is built, and every key is
//! checked in both directions (tch's `VarStore::load` would silently ignore extra keys).
use super::{Condition, Denoiser};
use crate::checkpoint::{self, Select};
use crate::{BenchError, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The architecture, independent of the file layout it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UNetConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub block_out_channels: Vec<i64>,
    /// Self-attention after each ResNet block of down block i.
    pub down_attention: Vec<bool>,
    /// Self-attention after each ResNet block of up block i (up blocks run deepest first).
    pub up_attention: Vec<bool>,
    pub layers_per_block: usize,
    pub norm_num_groups: i64,
    pub norm_eps: f64,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    /// 0: pad right/bottom by one then stride-2 conv without padding (DDPM/DDIM); 1: conv padding 1.
    pub downsample_padding: i64,
    /// Channels per attention head; None = one head over all channels.
    pub attention_head_dim: Option<i64>,
    /// Conv after nearest upsampling / strided conv for downsampling (else avg-pool down, no conv up).
    pub resamp_with_conv: bool,
    pub center_input_sample: bool,
    pub mid_block_scale_factor: f64,
    /// Training resolution, when the config states it (diffusers `sample_size`, DDIM `resolution`).
    pub sample_size: Option<i64>,
}

impl UNetConfig {
    /// DDIM-repo `Model` config: `ch`, `ch_mult`, `num_res_blocks`, `attn_resolutions`, `resolution`.
    pub fn from_ddim(ddim: &DdimModelConfig) -> Self {
        let levels = ddim.ch_mult.len();
        let down_attention: Vec<bool> =
            (0..levels).map(|i| ddim.attn_resolutions.contains(&(ddim.resolution >> i))).collect();
        UNetConfig {
            in_channels: ddim.in_channels,
            out_channels: ddim.out_ch,
            block_out_channels: ddim.ch_mult.iter().map(|m| m * ddim.ch).collect(),
            up_attention: down_attention.iter().rev().copied().collect(),
            down_attention,
            layers_per_block: ddim.num_res_blocks,
            norm_num_groups: 32,
            norm_eps: 1e-6,
            freq_shift: 1.0,
            flip_sin_to_cos: false,
            downsample_padding: 0,
            attention_head_dim: None,
            resamp_with_conv: ddim.resamp_with_conv,
            center_input_sample: false,
            mid_block_scale_factor: 1.0,
            sample_size: Some(ddim.resolution),
        }
    }

    /// Parse a diffusers `UNet2DModel` `config.json`. Options this UNet does not implement are
    /// refused by name rather than silently ignored.
    pub fn from_diffusers_json(path: &std::path::Path, text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
        let err = |msg: String| BenchError::file(path, msg);
        if let Some(class) = v.get("_class_name").and_then(|c| c.as_str()) {
            if class != "UNet2DModel" {
                return Err(err(format!("_class_name is {class:?}; only \"UNet2DModel\" is supported")));
            }
        }
        let int = |k: &str, d: i64| v.get(k).and_then(|x| x.as_i64()).unwrap_or(d);
        let float = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
        let boolean = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
        let strings = |k: &str| -> Result<Vec<String>> {
            v.get(k)
                .and_then(|x| x.as_array())
                .ok_or_else(|| err(format!("missing list {k:?}")))?
                .iter()
                .map(|s| s.as_str().map(str::to_string).ok_or_else(|| err(format!("{k:?} must list strings"))))
                .collect()
        };
        let require = |k: &str, allowed: &[&str], default: &str| -> Result<()> {
            let got = v.get(k).and_then(|x| x.as_str()).unwrap_or(default);
            if allowed.contains(&got) {
                Ok(())
            } else {
                Err(err(format!("{k} = {got:?} is not supported (supported: {allowed:?})")))
            }
        };
        require("time_embedding_type", &["positional"], "positional")?;
        require("resnet_time_scale_shift", &["default"], "default")?;
        require("act_fn", &["silu", "swish"], "silu")?;
        require("downsample_type", &["conv"], "conv")?;
        require("upsample_type", &["conv"], "conv")?;
        require("mid_block_type", &["UNetMidBlock2D"], "UNetMidBlock2D")?;
        for k in ["class_embed_type", "num_class_embeds", "attn_norm_num_groups", "time_embedding_dim"] {
            if v.get(k).is_some_and(|x| !x.is_null()) {
                return Err(err(format!("{k} is set; class conditioning and custom embeddings are not supported")));
            }
        }
        let block_out_channels: Vec<i64> = v
            .get("block_out_channels")
            .and_then(|x| x.as_array())
            .ok_or_else(|| err("missing list \"block_out_channels\"".into()))?
            .iter()
            .map(|c| c.as_i64().ok_or_else(|| err("block_out_channels must list integers".into())))
            .collect::<Result<_>>()?;
        let attn = |types: Vec<String>, key: &str, plain: &str, with_attn: &str| -> Result<Vec<bool>> {
            types
                .iter()
                .map(|t| match t.as_str() {
                    x if x == plain => Ok(false),
                    x if x == with_attn => Ok(true),
                    other => Err(err(format!("{key} contains {other:?}; supported: {plain:?}, {with_attn:?}"))),
                })
                .collect()
        };
        let down_attention = attn(strings("down_block_types")?, "down_block_types", "DownBlock2D", "AttnDownBlock2D")?;
        let up_attention = attn(strings("up_block_types")?, "up_block_types", "UpBlock2D", "AttnUpBlock2D")?;
        if down_attention.len() != block_out_channels.len() || up_attention.len() != block_out_channels.len() {
            return Err(err(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({}) must have equal lengths",
                down_attention.len(),
                up_attention.len(),
                block_out_channels.len()
            )));
        }
        Ok(UNetConfig {
            in_channels: int("in_channels", 3),
            out_channels: int("out_channels", 3),
            block_out_channels,
            down_attention,
            up_attention,
            layers_per_block: int("layers_per_block", 2) as usize,
            norm_num_groups: int("norm_num_groups", 32),
            norm_eps: float("norm_eps", 1e-5),
            freq_shift: float("freq_shift", 0.0),
            flip_sin_to_cos: boolean("flip_sin_to_cos", true),
            downsample_padding: int("downsample_padding", 1),
            attention_head_dim: v.get("attention_head_dim").and_then(|x| x.as_i64()).or(Some(8)).filter(|_| {
                // diffusers treats an explicit null as "one head over all channels".
                !v.get("attention_head_dim").is_some_and(|x| x.is_null())
            }),
            resamp_with_conv: true,
            center_input_sample: boolean("center_input_sample", false),
            mid_block_scale_factor: float("mid_block_scale_factor", 1.0),
            sample_size: v.get("sample_size").and_then(|x| x.as_i64()),
        })
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

/// Older diffusers checkpoints name attention weights `query/key/value/proj_attn`.
pub fn diffusers_to_canonical(sd: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    sd.into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(".query.", ".to_q.")
                .replace(".key.", ".to_k.")
                .replace(".value.", ".to_v.")
                .replace(".proj_attn.", ".to_out.0.");
            (k, v)
        })
        .collect()
}

/// Pulls tensors out of a state dict by name with shape checks, and reports every problem
/// (missing, mis-shaped, unexpected) at the end instead of stopping at the first.
struct WeightTaker {
    map: BTreeMap<String, Tensor>,
    requested: Vec<(String, Vec<i64>)>,
    missing: Vec<String>,
    misshaped: Vec<String>,
    device: Device,
    kind: Kind,
}

impl WeightTaker {
    fn new(map: BTreeMap<String, Tensor>, device: Device, kind: Kind) -> Self {
        WeightTaker { map, requested: vec![], missing: vec![], misshaped: vec![], device, kind }
    }
    fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
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
    fn finish(self, source: &str) -> Result<()> {
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
        Err(BenchError::user(format!("{source}: weights do not match the UNet config; {}", parts.join("; "))))
    }
}

struct Conv {
    w: Tensor,
    b: Tensor,
    stride: i64,
    padding: i64,
}
impl Conv {
    fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Self {
        Conv {
            w: wt.take(&format!("{name}.weight"), &[cout, cin, k, k]),
            b: wt.take(&format!("{name}.bias"), &[cout]),
            stride,
            padding,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.w, Some(&self.b), [self.stride], [self.padding], [1], 1)
    }
}

struct Linear {
    w: Tensor,
    b: Tensor,
}
impl Linear {
    fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64) -> Self {
        Linear { w: wt.take(&format!("{name}.weight"), &[cout, cin]), b: wt.take(&format!("{name}.bias"), &[cout]) }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, Some(&self.b))
    }
}

struct GroupNorm {
    w: Tensor,
    b: Tensor,
    groups: i64,
    eps: f64,
}
impl GroupNorm {
    fn new(wt: &mut WeightTaker, name: &str, c: i64, cfg: &UNetConfig) -> Self {
        GroupNorm {
            w: wt.take(&format!("{name}.weight"), &[c]),
            b: wt.take(&format!("{name}.bias"), &[c]),
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(self.groups, Some(&self.w), Some(&self.b), self.eps, true)
    }
}

/// DDPM ResNet block (Ho et al. App. B; diffusers `ResnetBlock2D`, DDIM repo `ResnetBlock`).
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv,
    temb: Linear,
    norm2: GroupNorm,
    conv2: Conv,
    shortcut: Option<Conv>,
    out_scale: f64,
}
impl ResBlock {
    fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64, temb: i64, cfg: &UNetConfig, out_scale: f64) -> Self {
        ResBlock {
            norm1: GroupNorm::new(wt, &format!("{name}.norm1"), cin, cfg),
            conv1: Conv::new(wt, &format!("{name}.conv1"), cin, cout, 3, 1, 1),
            temb: Linear::new(wt, &format!("{name}.time_emb_proj"), temb, cout),
            norm2: GroupNorm::new(wt, &format!("{name}.norm2"), cout, cfg),
            conv2: Conv::new(wt, &format!("{name}.conv2"), cout, cout, 3, 1, 1),
            shortcut: (cin != cout).then(|| Conv::new(wt, &format!("{name}.conv_shortcut"), cin, cout, 1, 1, 0)),
            out_scale,
        }
    }
    fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = h + self.temb.forward(emb_act).unsqueeze(-1).unsqueeze(-1);
        // Dropout is identity at inference.
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        let skip = match &self.shortcut {
            Some(c) => c.forward(x),
            None => x.shallow_clone(),
        };
        let out = skip + h;
        if self.out_scale == 1.0 {
            out
        } else {
            out / self.out_scale
        }
    }
}

/// Spatial self-attention with a residual (diffusers `Attention` with `residual_connection`,
/// DDIM repo `AttnBlock`: softmax(qᵀk/√d) over the H·W positions).
struct AttnBlock {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: i64,
    out_scale: f64,
}
impl AttnBlock {
    fn new(wt: &mut WeightTaker, name: &str, c: i64, cfg: &UNetConfig, out_scale: f64) -> Self {
        let heads = cfg.attention_head_dim.map_or(1, |d| (c / d).max(1));
        AttnBlock {
            norm: GroupNorm::new(wt, &format!("{name}.group_norm"), c, cfg),
            q: Linear::new(wt, &format!("{name}.to_q"), c, c),
            k: Linear::new(wt, &format!("{name}.to_k"), c, c),
            v: Linear::new(wt, &format!("{name}.to_v"), c, c),
            out: Linear::new(wt, &format!("{name}.to_out.0"), c, c),
            heads,
            out_scale,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("4-d activations");
        let d = c / self.heads;
        let seq = self.norm.forward(x).view([b, c, h * w]).transpose(1, 2);
        let split = |t: Tensor| t.view([b, h * w, self.heads, d]).transpose(1, 2);
        let q = split(self.q.forward(&seq));
        let k = split(self.k.forward(&seq));
        let v = split(self.v.forward(&seq));
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
        let a = self.out.forward(&a.transpose(1, 2).reshape([b, h * w, c]));
        let out = a.transpose(1, 2).reshape([b, c, h, w]) + x;
        if self.out_scale == 1.0 {
            out
        } else {
            out / self.out_scale
        }
    }
}

struct Level {
    resnets: Vec<ResBlock>,
    attentions: Vec<AttnBlock>,
    resample: Option<Conv>,
}

pub struct UNet {
    pub config: UNetConfig,
    kind: Kind,
    device: Device,
    conv_in: Conv,
    temb1: Linear,
    temb2: Linear,
    down: Vec<Level>,
    mid: (ResBlock, AttnBlock, ResBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv,
    source: String,
    parameters: i64,
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
        let mut wt = WeightTaker::new(sd, device, kind);
        let unet = Self::build(config, &mut wt, source)?;
        wt.finish(source)?;
        Ok(unet)
    }

    /// The canonical weight names and shapes a config needs, in construction order.
    pub fn expected_weights(config: &UNetConfig) -> Result<Vec<(String, Vec<i64>)>> {
        let mut wt = WeightTaker::new(BTreeMap::new(), Device::Cpu, Kind::Float);
        Self::build(config.clone(), &mut wt, "config")?;
        Ok(wt.requested)
    }

    pub fn parameter_count(&self) -> i64 {
        self.parameters
    }

    fn build(config: UNetConfig, wt: &mut WeightTaker, source: &str) -> Result<Self> {
        let cfg = &config;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        if n == 0 {
            return Err(BenchError::user(format!("{source}: the UNet config has no blocks")));
        }
        if let Some(c) = ch.iter().find(|c| *c % cfg.norm_num_groups != 0) {
            return Err(BenchError::user(format!(
                "{source}: block channels {c} are not divisible by norm_num_groups {}",
                cfg.norm_num_groups
            )));
        }
        let temb = ch[0] * 4;
        let conv_in = Conv::new(wt, "conv_in", cfg.in_channels, ch[0], 3, 1, 1);
        let temb1 = Linear::new(wt, "time_embedding.linear_1", ch[0], temb);
        let temb2 = Linear::new(wt, "time_embedding.linear_2", temb, temb);
        let mut down = vec![];
        let mut skip_channels = vec![ch[0]];
        let mut cin = ch[0];
        for i in 0..n {
            let cout = ch[i];
            let mut level = Level { resnets: vec![], attentions: vec![], resample: None };
            for j in 0..cfg.layers_per_block {
                let name = format!("down_blocks.{i}.resnets.{j}");
                level.resnets.push(ResBlock::new(wt, &name, if j == 0 { cin } else { cout }, cout, temb, cfg, 1.0));
                if cfg.down_attention[i] {
                    level.attentions.push(AttnBlock::new(wt, &format!("down_blocks.{i}.attentions.{j}"), cout, cfg, 1.0));
                }
                skip_channels.push(cout);
            }
            if i + 1 < n {
                if cfg.resamp_with_conv {
                    let pad = cfg.downsample_padding;
                    level.resample = Some(Conv::new(wt, &format!("down_blocks.{i}.downsamplers.0.conv"), cout, cout, 3, 2, pad));
                }
                skip_channels.push(cout);
            }
            down.push(level);
            cin = cout;
        }
        let c = ch[n - 1];
        let s = cfg.mid_block_scale_factor;
        let mid = (
            ResBlock::new(wt, "mid_block.resnets.0", c, c, temb, cfg, s),
            AttnBlock::new(wt, "mid_block.attentions.0", c, cfg, s),
            ResBlock::new(wt, "mid_block.resnets.1", c, c, temb, cfg, s),
        );
        let mut up = vec![];
        let mut prev = c;
        for i in 0..n {
            let cout = ch[n - 1 - i];
            let mut level = Level { resnets: vec![], attentions: vec![], resample: None };
            for j in 0..=cfg.layers_per_block {
                let skip = skip_channels.pop().expect("skip channel bookkeeping");
                let name = format!("up_blocks.{i}.resnets.{j}");
                let rin = if j == 0 { prev } else { cout } + skip;
                level.resnets.push(ResBlock::new(wt, &name, rin, cout, temb, cfg, 1.0));
                if cfg.up_attention[i] {
                    level.attentions.push(AttnBlock::new(wt, &format!("up_blocks.{i}.attentions.{j}"), cout, cfg, 1.0));
                }
            }
            if i + 1 < n && cfg.resamp_with_conv {
                level.resample = Some(Conv::new(wt, &format!("up_blocks.{i}.upsamplers.0.conv"), cout, cout, 3, 1, 1));
            }
            up.push(level);
            prev = cout;
        }
        let norm_out = GroupNorm::new(wt, "conv_norm_out", ch[0], cfg);
        let conv_out = Conv::new(wt, "conv_out", ch[0], cfg.out_channels, 3, 1, 1);
        let parameters = wt.requested.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
        let (kind, device) = (wt.kind, wt.device);
        Ok(UNet { config, kind, device, parameters, conv_in, temb1, temb2, down, mid, up, norm_out, conv_out, source: source.into() })
    }

    /// Sinusoidal embedding of (possibly fractional) labels, in f32 as both references compute it
    /// (DDPM `get_timestep_embedding`; diffusers `get_timestep_embedding` with `downscale_freq_shift`).
    fn timestep_embedding(&self, t: &Tensor) -> Tensor {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let freqs = (Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln()))
            / (half as f64 - self.config.freq_shift))
            .exp();
        let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
        let (sin, cos) = (args.sin(), args.cos());
        if self.config.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], 1)
        } else {
            Tensor::cat(&[sin, cos], 1)
        }
    }

    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let x = x.to_device(self.device).to_kind(self.kind);
        let x = if self.config.center_input_sample { x * 2.0 - 1.0 } else { x };
        let emb = self.timestep_embedding(&t.to_device(self.device)).to_kind(self.kind);
        let emb = self.temb2.forward(&self.temb1.forward(&emb).silu());
        // Every ResNet block applies SiLU to the embedding before its projection: do it once.
        let emb_act = emb.silu();
        let mut h = self.conv_in.forward(&x);
        let mut skips = vec![h.shallow_clone()];
        let n = self.down.len();
        for (i, level) in self.down.iter().enumerate() {
            for (j, r) in level.resnets.iter().enumerate() {
                h = r.forward(&h, &emb_act);
                if let Some(a) = level.attentions.get(j) {
                    h = a.forward(&h);
                }
                skips.push(h.shallow_clone());
            }
            if i + 1 < n {
                h = match &level.resample {
                    Some(conv) if self.config.downsample_padding == 0 => {
                        conv.forward(&h.constant_pad_nd([0, 1, 0, 1]))
                    }
                    Some(conv) => conv.forward(&h),
                    None => h.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>),
                };
                skips.push(h.shallow_clone());
            }
        }
        h = self.mid.0.forward(&h, &emb_act);
        h = self.mid.1.forward(&h);
        h = self.mid.2.forward(&h, &emb_act);
        for (i, level) in self.up.iter().enumerate() {
            for (j, r) in level.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up ResNet block");
                h = r.forward(&Tensor::cat(&[h, skip], 1), &emb_act);
                if let Some(a) = level.attentions.get(j) {
                    h = a.forward(&h);
                }
            }
            if i + 1 < n {
                let (_, _, hh, ww) = h.size4().expect("4-d activations");
                h = h.upsample_nearest2d([hh * 2, ww * 2], 2.0, 2.0);
                if let Some(conv) = &level.resample {
                    h = conv.forward(&h);
                }
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h).silu())
    }
}

/// The weights file of a diffusers model folder: safetensors preferred, else the `.bin`.
pub fn diffusers_weights_file(dir: &Path) -> Option<std::path::PathBuf> {
    ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"].iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

/// Load a diffusers `UNet2DModel` folder: `config.json` plus `diffusion_pytorch_model.safetensors`
/// (preferred) or `diffusion_pytorch_model.bin` (a torch.save state dict).
pub fn load_diffusers(dir: &Path, device: Device, kind: Kind) -> Result<UNet> {
    if !dir.is_dir() {
        return Err(BenchError::file(dir, "diffusers model folder not found (expected config.json + diffusion_pytorch_model.safetensors)"));
    }
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| BenchError::file(&config_path, format!("cannot read the UNet config: {e}")))?;
    let config = UNetConfig::from_diffusers_json(&config_path, &text)?;
    let weights = diffusers_weights_file(dir).ok_or_else(|| {
        BenchError::file(dir, "no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin in the folder")
    })?;
    let sd = checkpoint::load_state_dict(&weights, &Select::Auto)?;
    UNet::from_state_dict(config, diffusers_to_canonical(sd), device, kind, &weights.display().to_string())
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
    /// The forward's shapes are checked at load; what can still fail here (out of memory, a
    /// device error) is a libtorch exception, reported as one error line.
    fn forward(&self, x: &Tensor, t: &Tensor, _cond: Option<&Condition>) -> Result<Tensor> {
        super::catch_torch("UNet forward", || UNet::forward(self, x, t).to_device(x.device()).to_kind(x.kind()))
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
        tch::manual_seed(0);
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
