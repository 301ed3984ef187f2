//! The text-conditioned latent UNet of Stable Diffusion 1.x/2.x (Rombach et al. 2022, LDM §3.3)
//! in tch, from a diffusers `UNet2DConditionModel` folder.
//!
//! ResNet blocks carry the time embedding; each cross-attention level follows every ResNet
//! block with a `Transformer2DModel`: GroupNorm, a 1×1 conv or linear input projection
//! (`use_linear_projection`, SD 2), then `BasicTransformerBlock`s (self-attention,
//! cross-attention to the text encoder's hidden states, GEGLU feed-forward; pre-LayerNorm and a
//! residual around each), an output projection and a residual.
//!
//! Attention is libtorch's scaled_dot_product_attention, what diffusers' default processor
//! (`AttnProcessor2_0`) calls. That processor ignores `upcast_attention` (only the legacy
//! processor upcast the score matrix): libtorch's fused kernels accumulate the softmax in f32
//! for fp16/bf16 inputs, so the flag is read and recorded but changes nothing here either.
//!
//! diffusers' naming quirk: for these models `attention_head_dim` is the number of heads per
//! block (SD 1.x: 8 everywhere; SD 2.x: [5, 10, 20, 20], i.e. 64 channels per head);
//! `num_attention_heads` is refused, as diffusers itself refuses it.
use super::diffusers_config::{square_sample_size, ConfigReader};
use super::layers::{
    sinusoidal_embedding, upsample_nearest, Attention, ClassEmbedder, ClassEmbedding, Conv, GroupNorm, LayerNorm, Linear,
    ResBlock, ResBlockSpec, TimestepEmbedding,
};
use super::unet::{batch_timesteps, check_sample};
use super::weights::{diffusers_attention_rename, DiffusersFolder, WeightSource, WeightStats, WeightTaker};
use crate::{BenchError, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The middle of the network (diffusers `mid_block_type`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum CondMidBlock {
    /// ResNet, transformer, ResNet (`UNetMidBlock2DCrossAttn`).
    CrossAttn,
    /// One ResNet block (`UNetMidBlock2D` as UNet2DConditionModel builds it).
    Resnet,
    /// None (`mid_block_type: null`).
    None,
}

/// The architecture of a `UNet2DConditionModel`, with per-block options expanded to lists
/// (index i: down block i, which pairs with up block n−1−i).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UNet2DConditionConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    /// Latent training resolution, when the config states it (SD 1.x: 64; SD 2.x-v: 96).
    pub sample_size: Option<i64>,
    pub block_out_channels: Vec<i64>,
    /// Down block i is `CrossAttnDownBlock2D` (true) or `DownBlock2D`.
    pub down_cross_attention: Vec<bool>,
    /// Up block i (deepest first) is `CrossAttnUpBlock2D` (true) or `UpBlock2D`.
    pub up_cross_attention: Vec<bool>,
    pub mid_block: CondMidBlock,
    /// ResNet blocks per down block (up blocks have one more).
    pub layers_per_block: Vec<usize>,
    /// `BasicTransformerBlock`s per transformer, per down block.
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per down block (from `attention_head_dim`, see the module docs).
    pub attention_heads: Vec<i64>,
    /// Width of the encoder hidden states, per down block.
    pub cross_attention_dim: Vec<i64>,
    /// The first attention of each transformer block attends to the context too, per down block.
    pub only_cross_attention: Vec<bool>,
    pub use_linear_projection: bool,
    /// Read and recorded; no numerical effect (see the module docs).
    pub upcast_attention: bool,
    pub norm_num_groups: i64,
    pub norm_eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub time_embed_dim: i64,
    pub class_embedding: ClassEmbedding,
    pub scale_shift: bool,
    pub downsample_padding: i64,
    pub mid_block_scale_factor: f64,
    pub center_input_sample: bool,
    pub conv_in_kernel: i64,
    pub conv_out_kernel: i64,
}

/// Every `UNet2DConditionModel.__init__` parameter of diffusers 0.42.
const KEYS: &[&str] = &[
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "dropout", "act_fn", "norm_num_groups",
    "norm_eps", "cross_attention_dim", "transformer_layers_per_block", "reverse_transformer_layers_per_block",
    "encoder_hid_dim", "encoder_hid_dim_type", "attention_head_dim", "num_attention_heads", "dual_cross_attention",
    "use_linear_projection", "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
    "num_class_embeds", "upcast_attention", "resnet_time_scale_shift", "resnet_skip_time_act",
    "resnet_out_scale_factor", "time_embedding_type", "time_embedding_dim", "time_embedding_act_fn",
    "timestep_post_act", "time_cond_proj_dim", "conv_in_kernel", "conv_out_kernel",
    "projection_class_embeddings_input_dim", "attention_type", "class_embeddings_concat",
    "mid_block_only_cross_attention", "cross_attention_norm", "addition_embed_type_num_heads",
];

impl UNet2DConditionConfig {
    pub fn from_diffusers_json(path: &Path, text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
        Self::from_diffusers_value(path, &v)
    }

    /// Parse a diffusers `UNet2DConditionModel` config. Options not implemented here are refused
    /// by name. `resnet_skip_time_act`, `resnet_out_scale_factor` and
    /// `mid_block_only_cross_attention` are accepted: diffusers passes them only to block types
    /// (SimpleCrossAttn*, ResnetDownsample*) this loader refuses, so they change nothing.
    pub(crate) fn from_diffusers_value(path: &Path, v: &Value) -> Result<Self> {
        let r = ConfigReader::new(
            path,
            v,
            "UNet2DConditionModel",
            " (pixel-space UNet2DModel folders load with models::unet::load)",
        )?;
        r.warn_unknown(KEYS);
        r.refuse_unless("dual_cross_attention", &[json!(false)], "dual-text-encoder transformers (Versatile Diffusion) are not implemented")?;
        r.refuse_unless("num_attention_heads", &[], "diffusers derives the heads from attention_head_dim and refuses this key too")?;
        r.refuse_unless("addition_embed_type", &[], "added embeddings (SDXL text_time, Kandinsky, image hints) are not implemented")?;
        r.refuse_unless("encoder_hid_dim", &[], "an encoder hidden-state projection is not implemented")?;
        r.refuse_unless("encoder_hid_dim_type", &[], "an encoder hidden-state projection is not implemented")?;
        r.refuse_unless("class_embeddings_concat", &[json!(false)], "concatenated class embeddings are not implemented")?;
        r.refuse_unless("time_embedding_act_fn", &[], "an activation after the time embedding is not implemented")?;
        r.refuse_unless("timestep_post_act", &[], "a post-activation in the time embedding is not implemented")?;
        r.refuse_unless("time_cond_proj_dim", &[], "timestep conditioning (LCM guidance embedding) is not implemented")?;
        r.refuse_unless("reverse_transformer_layers_per_block", &[], "separate up-path transformer depths are not implemented")?;
        r.refuse_unless("cross_attention_norm", &[], "a norm on the encoder hidden states is not implemented")?;
        r.choice("attention_type", &["default"], "default")?;
        r.choice("time_embedding_type", &["positional"], "positional")?;
        r.choice("act_fn", &["silu", "swish"], "silu")?;
        let scale_shift = r.choice("resnet_time_scale_shift", &["default", "scale_shift"], "default")? == "scale_shift";
        if !r.is_set("norm_num_groups") && v.get("norm_num_groups").is_some() {
            return Err(r.err("norm_num_groups = null (no output GroupNorm) is not supported"));
        }
        let mid_block = match v.get("mid_block_type") {
            Some(Value::Null) => CondMidBlock::None,
            _ => match r
                .choice("mid_block_type", &["UNetMidBlock2DCrossAttn", "UNetMidBlock2D"], "UNetMidBlock2DCrossAttn")?
                .as_str()
            {
                "UNetMidBlock2D" => CondMidBlock::Resnet,
                _ => CondMidBlock::CrossAttn,
            },
        };
        let block_out_channels = r.ints("block_out_channels")?;
        let n = block_out_channels.len();
        let types = |k: &str, cross: &str, plain: &str| -> Result<Vec<bool>> {
            r.strings(k)?
                .iter()
                .map(|t| match t.as_str() {
                    x if x == cross => Ok(true),
                    x if x == plain => Ok(false),
                    other => Err(r.err(format!("{k} contains {other:?}; supported: {cross:?}, {plain:?}"))),
                })
                .collect()
        };
        let down_cross_attention = types("down_block_types", "CrossAttnDownBlock2D", "DownBlock2D")?;
        let up_cross_attention = types("up_block_types", "CrossAttnUpBlock2D", "UpBlock2D")?;
        if n == 0 || down_cross_attention.len() != n || up_cross_attention.len() != n {
            return Err(r.err(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have equal, nonzero lengths",
                down_cross_attention.len(),
                up_cross_attention.len()
            )));
        }
        let positive = |x: &Value| x.as_i64().filter(|i| *i > 0);
        let class_embedding = match (r.opt_str("class_embed_type")?, r.opt_int("num_class_embeds")?) {
            (None, None) => ClassEmbedding::None,
            (None, Some(k)) if k > 0 => ClassEmbedding::Table(k),
            (None, Some(k)) => return Err(r.err(format!("num_class_embeds = {k} must be positive"))),
            (Some("timestep"), _) => ClassEmbedding::Timestep,
            (Some("identity"), _) => ClassEmbedding::Identity,
            (Some(other), _) => {
                return Err(r.err(format!(
                    "class_embed_type = {other:?} is not supported (supported: null with num_class_embeds, \"timestep\", \"identity\")"
                )))
            }
        };
        let ch0 = block_out_channels[0];
        let kernel = |k: &str| -> Result<i64> {
            let s = r.positive(k, 3)?;
            if s % 2 == 0 {
                return Err(r.err(format!("{k} = {s} must be odd")));
            }
            Ok(s)
        };
        Ok(UNet2DConditionConfig {
            in_channels: r.positive("in_channels", 4)?,
            out_channels: r.positive("out_channels", 4)?,
            sample_size: square_sample_size(&r)?,
            down_cross_attention,
            up_cross_attention,
            mid_block,
            layers_per_block: r
                .per_block("layers_per_block", n, 2usize, |x| positive(x).map(|i| i as usize), "positive integers")?,
            transformer_layers_per_block: r.per_block(
                "transformer_layers_per_block",
                n,
                1usize,
                |x| positive(x).map(|i| i as usize),
                "positive integers (nested per-layer lists are not supported)",
            )?,
            attention_heads: r.per_block("attention_head_dim", n, 8, positive, "positive integers")?,
            cross_attention_dim: r.per_block("cross_attention_dim", n, 1280, positive, "positive integers")?,
            only_cross_attention: r.per_block("only_cross_attention", n, false, |x| x.as_bool(), "booleans")?,
            use_linear_projection: r.boolean("use_linear_projection", false)?,
            upcast_attention: r.boolean("upcast_attention", false)?,
            norm_num_groups: r.positive("norm_num_groups", 32)?,
            norm_eps: r.float("norm_eps", 1e-5)?,
            flip_sin_to_cos: r.boolean("flip_sin_to_cos", true)?,
            freq_shift: r.float("freq_shift", 0.0)?,
            time_embed_dim: r.opt_int("time_embedding_dim")?.unwrap_or(4 * ch0),
            class_embedding,
            scale_shift,
            downsample_padding: r.int("downsample_padding", 1)?,
            mid_block_scale_factor: r.float("mid_block_scale_factor", 1.0)?,
            center_input_sample: r.boolean("center_input_sample", false)?,
            conv_in_kernel: kernel("conv_in_kernel")?,
            conv_out_kernel: kernel("conv_out_kernel")?,
            block_out_channels,
        })
    }

    /// Stable Diffusion 1.x's UNet (CompVis/stable-diffusion-v1-4, runwayml/stable-diffusion-v1-5).
    pub fn sd15() -> Self {
        let n = 4;
        UNet2DConditionConfig {
            in_channels: 4,
            out_channels: 4,
            sample_size: Some(64),
            block_out_channels: vec![320, 640, 1280, 1280],
            down_cross_attention: vec![true, true, true, false],
            up_cross_attention: vec![false, true, true, true],
            mid_block: CondMidBlock::CrossAttn,
            layers_per_block: vec![2; n],
            transformer_layers_per_block: vec![1; n],
            attention_heads: vec![8; n],
            cross_attention_dim: vec![768; n],
            only_cross_attention: vec![false; n],
            use_linear_projection: false,
            upcast_attention: false,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            time_embed_dim: 1280,
            class_embedding: ClassEmbedding::None,
            scale_shift: false,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            center_input_sample: false,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
        }
    }
}

/// Input/output projection of a `Transformer2DModel`: 1×1 conv (SD 1) or linear (SD 2).
enum Projection {
    Conv(Conv),
    Linear(Linear),
}

/// `BasicTransformerBlock` (norm_type "layer_norm", GEGLU feed-forward).
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    only_cross_attention: bool,
}
impl TransformerBlock {
    fn new(wt: &mut WeightTaker, name: &str, dim: i64, heads: i64, dim_head: i64, context: i64, only_cross: bool) -> Self {
        let ff = 4 * dim;
        TransformerBlock {
            norm1: LayerNorm::new(wt, &format!("{name}.norm1"), dim, 1e-5),
            attn1: Attention::new(wt, &format!("{name}.attn1"), dim, if only_cross { context } else { dim }, heads, dim_head, false),
            norm2: LayerNorm::new(wt, &format!("{name}.norm2"), dim, 1e-5),
            attn2: Attention::new(wt, &format!("{name}.attn2"), dim, context, heads, dim_head, false),
            norm3: LayerNorm::new(wt, &format!("{name}.norm3"), dim, 1e-5),
            ff_in: Linear::new(wt, &format!("{name}.ff.net.0.proj"), dim, 2 * ff),
            ff_out: Linear::new(wt, &format!("{name}.ff.net.2"), ff, dim),
            only_cross_attention: only_cross,
        }
    }
    fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let ctx1 = self.only_cross_attention.then_some(context);
        let x = self.attn1.forward(&self.norm1.forward(x), ctx1) + x;
        let x = self.attn2.forward(&self.norm2.forward(&x), Some(context)) + x;
        // GEGLU (Shazeer 2020): the projection's first half gated by GELU of its second half.
        let ag = self.ff_in.forward(&self.norm3.forward(&x)).chunk(2, -1);
        self.ff_out.forward(&(&ag[0] * ag[1].gelu("none"))) + x
    }
}

/// `Transformer2DModel` on continuous inputs.
struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}
impl Transformer2D {
    #[allow(clippy::too_many_arguments)]
    fn new(
        wt: &mut WeightTaker,
        name: &str,
        c: i64,
        heads: i64,
        layers: usize,
        context: i64,
        only_cross: bool,
        cfg: &UNet2DConditionConfig,
    ) -> Self {
        let inner = c; // heads divide c (checked at build), so heads × (c / heads) = c
        let proj = |wt: &mut WeightTaker, n: &str, cin: i64, cout: i64| {
            if cfg.use_linear_projection {
                Projection::Linear(Linear::new(wt, &format!("{name}.{n}"), cin, cout))
            } else {
                Projection::Conv(Conv::new(wt, &format!("{name}.{n}"), cin, cout, 1, 1, 0))
            }
        };
        Transformer2D {
            norm: GroupNorm::new(wt, &format!("{name}.norm"), c, cfg.norm_num_groups, 1e-6),
            proj_in: proj(wt, "proj_in", c, inner),
            blocks: (0..layers)
                .map(|l| {
                    let bn = format!("{name}.transformer_blocks.{l}");
                    TransformerBlock::new(wt, &bn, inner, heads, inner / heads, context, only_cross)
                })
                .collect(),
            proj_out: proj(wt, "proj_out", inner, c),
        }
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let (b, c, h, w) = (x.size()[0], x.size()[1], x.size()[2], x.size()[3]);
        let normed = self.norm.forward(x);
        let to_seq = |t: Tensor| t.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        let mut s = match &self.proj_in {
            Projection::Conv(conv) => to_seq(conv.forward(&normed)),
            Projection::Linear(lin) => lin.forward(&to_seq(normed)),
        };
        for block in &self.blocks {
            s = block.forward(&s, context);
        }
        let to_map = |t: Tensor| t.reshape([b, h, w, c]).permute([0, 3, 1, 2]).contiguous();
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(s)),
            Projection::Linear(lin) => to_map(lin.forward(&s)),
        };
        out + x
    }
}

struct DownLevel {
    resnets: Vec<ResBlock>,
    attentions: Vec<Transformer2D>,
    down: Option<Conv>,
}
struct UpLevel {
    resnets: Vec<ResBlock>,
    attentions: Vec<Transformer2D>,
    up: Option<Conv>,
}
struct Mid {
    first: ResBlock,
    rest: Option<(Transformer2D, ResBlock)>,
}

/// A loaded `UNet2DConditionModel`.
pub struct UNet2DCondition {
    pub config: UNet2DConditionConfig,
    kind: Kind,
    device: Device,
    conv_in: Conv,
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

impl UNet2DCondition {
    /// Build from a state dict in diffusers' key space; every key is used exactly once.
    pub fn from_state_dict(
        config: UNet2DConditionConfig,
        sd: BTreeMap<String, Tensor>,
        device: Device,
        kind: Kind,
        source: &str,
    ) -> Result<Self> {
        Self::from_source(config, WeightSource::from_state_dict(sd, source), device, kind, source)
    }

    fn from_source(config: UNet2DConditionConfig, source: WeightSource, device: Device, kind: Kind, name: &str) -> Result<Self> {
        let mut wt = WeightTaker::new(source, device, kind);
        let mut unet = Self::build(config, &mut wt, name)?;
        unet.stats = wt.finish("UNet2DConditionModel config", &[])?;
        Ok(unet)
    }

    /// The weight names and shapes a config needs, in construction order.
    pub fn expected_weights(config: &UNet2DConditionConfig) -> Result<Vec<(String, Vec<i64>)>> {
        let mut wt = WeightTaker::dry_run();
        Self::build(config.clone(), &mut wt, "config")?;
        Ok(wt.requested)
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

    fn build(config: UNet2DConditionConfig, wt: &mut WeightTaker, source: &str) -> Result<Self> {
        let cfg = &config;
        let bad = |m: String| BenchError::user(format!("{source}: {m}"));
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let lists = [
            cfg.down_cross_attention.len(),
            cfg.up_cross_attention.len(),
            cfg.layers_per_block.len(),
            cfg.transformer_layers_per_block.len(),
            cfg.attention_heads.len(),
            cfg.cross_attention_dim.len(),
            cfg.only_cross_attention.len(),
        ];
        if n == 0 || lists.iter().any(|l| *l != n) {
            return Err(bad(format!("per-block options must have one entry per block ({n})")));
        }
        let g = cfg.norm_num_groups;
        let heads_ok = |c: i64, h: i64| -> Result<()> {
            if h <= 0 || c % h != 0 {
                return Err(bad(format!("{h} attention heads (attention_head_dim) do not divide {c} channels")));
            }
            Ok(())
        };
        if ch[0] % 2 == 1 || cfg.time_embed_dim <= 0 {
            return Err(bad(format!("time embedding width {} / first block width {} are not usable", cfg.time_embed_dim, ch[0])));
        }
        let temb = cfg.time_embed_dim;
        let res = |cin: i64, cout: i64, out_scale: f64| ResBlockSpec {
            cin,
            cout,
            temb: Some(temb),
            groups: g,
            eps: cfg.norm_eps,
            scale_shift: cfg.scale_shift,
            out_scale,
            resample: None,
        };

        let (ki, ko) = (cfg.conv_in_kernel, cfg.conv_out_kernel);
        let conv_in = Conv::new(wt, "conv_in", cfg.in_channels, ch[0], ki, 1, (ki - 1) / 2);
        let time_embedding = TimestepEmbedding::new(wt, "time_embedding", ch[0], temb);
        let class_embedding = ClassEmbedder::new(wt, &cfg.class_embedding, ch[0], temb);

        let mut down = vec![];
        let mut skip_channels = vec![ch[0]];
        let mut cin = ch[0];
        for i in 0..n {
            let cout = ch[i];
            let name = |part: String| format!("down_blocks.{i}.{part}");
            let mut level = DownLevel { resnets: vec![], attentions: vec![], down: None };
            if cfg.down_cross_attention[i] {
                heads_ok(cout, cfg.attention_heads[i])?;
            }
            for j in 0..cfg.layers_per_block[i] {
                let rin = if j == 0 { cin } else { cout };
                level.resnets.push(ResBlock::new(wt, &name(format!("resnets.{j}")), res(rin, cout, 1.0)));
                if cfg.down_cross_attention[i] {
                    level.attentions.push(Transformer2D::new(
                        wt,
                        &name(format!("attentions.{j}")),
                        cout,
                        cfg.attention_heads[i],
                        cfg.transformer_layers_per_block[i],
                        cfg.cross_attention_dim[i],
                        cfg.only_cross_attention[i],
                        cfg,
                    ));
                }
                skip_channels.push(cout);
            }
            if i + 1 < n {
                let pad = cfg.downsample_padding;
                level.down = Some(Conv::new(wt, &name("downsamplers.0.conv".into()), cout, cout, 3, 2, pad));
                skip_channels.push(cout);
            }
            down.push(level);
            cin = cout;
        }

        let c = ch[n - 1];
        let s = cfg.mid_block_scale_factor;
        let mid = match cfg.mid_block {
            CondMidBlock::None => None,
            CondMidBlock::Resnet => Some(Mid { first: ResBlock::new(wt, "mid_block.resnets.0", res(c, c, s)), rest: None }),
            CondMidBlock::CrossAttn => {
                heads_ok(c, cfg.attention_heads[n - 1])?;
                let first = ResBlock::new(wt, "mid_block.resnets.0", res(c, c, s));
                let attn = Transformer2D::new(
                    wt,
                    "mid_block.attentions.0",
                    c,
                    cfg.attention_heads[n - 1],
                    cfg.transformer_layers_per_block[n - 1],
                    cfg.cross_attention_dim[n - 1],
                    false,
                    cfg,
                );
                let second = ResBlock::new(wt, "mid_block.resnets.1", res(c, c, s));
                Some(Mid { first, rest: Some((attn, second)) })
            }
        };

        let mut up = vec![];
        let mut prev = c;
        for i in 0..n {
            let r = n - 1 - i; // the down block this up block mirrors
            let cout = ch[r];
            let name = |part: String| format!("up_blocks.{i}.{part}");
            let mut level = UpLevel { resnets: vec![], attentions: vec![], up: None };
            if cfg.up_cross_attention[i] {
                heads_ok(cout, cfg.attention_heads[r])?;
            }
            for j in 0..=cfg.layers_per_block[r] {
                let skip = skip_channels.pop().ok_or_else(|| {
                    bad("up blocks need more skip connections than the down blocks make (layers_per_block)".into())
                })?;
                let rin = if j == 0 { prev } else { cout } + skip;
                level.resnets.push(ResBlock::new(wt, &name(format!("resnets.{j}")), res(rin, cout, 1.0)));
                if cfg.up_cross_attention[i] {
                    level.attentions.push(Transformer2D::new(
                        wt,
                        &name(format!("attentions.{j}")),
                        cout,
                        cfg.attention_heads[r],
                        cfg.transformer_layers_per_block[r],
                        cfg.cross_attention_dim[r],
                        cfg.only_cross_attention[r],
                        cfg,
                    ));
                }
            }
            if i + 1 < n {
                level.up = Some(Conv::new(wt, &name("upsamplers.0.conv".into()), cout, cout, 3, 1, 1));
            }
            up.push(level);
            prev = cout;
        }
        let norm_out = GroupNorm::new(wt, "conv_norm_out", ch[0], g, cfg.norm_eps);
        let conv_out = Conv::new(wt, "conv_out", ch[0], cfg.out_channels, ko, 1, (ko - 1) / 2);
        let (kind, device) = (wt.kind, wt.device);
        Ok(UNet2DCondition {
            config,
            kind,
            device,
            conv_in,
            time_embedding,
            class_embedding,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            source: source.into(),
            stats: WeightStats { parameters: 0, bytes: 0, kinds: vec![] },
        })
    }

    fn time_features(&self, t: &Tensor) -> Tensor {
        sinusoidal_embedding(t, self.config.block_out_channels[0], self.config.flip_sin_to_cos, self.config.freq_shift)
    }

    /// The network output for latents x [B, in_channels, H, W] at labels t ([B] or one for all;
    /// any numeric kind, may be fractional), attending to `encoder_hidden_states` [B, L, D]
    /// (D = `cross_attention_dim`; e.g. CLIP's last hidden states [B, 77, 768] for SD 1.x),
    /// with class labels when the model is class-conditional (see [`super::unet::UNet::forward`]).
    /// Returns [B, out_channels, H, W] in the model's precision on its device: whatever the
    /// model predicts (ε, or v for SD 2.x-v; the scheduler config says which).
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        encoder_hidden_states: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let cfg = &self.config;
        // Any size works (the up path meets each skip's size), down to one pixel at the deepest level.
        let n = cfg.block_out_channels.len();
        let b = check_sample(x, cfg.in_channels, 1, 1 << (n - 1), &self.source)?;
        let used_dims: Vec<i64> = (0..n)
            .filter(|&i| cfg.down_cross_attention[i] || cfg.up_cross_attention[n - 1 - i])
            .map(|i| cfg.cross_attention_dim[i])
            .chain((cfg.mid_block == CondMidBlock::CrossAttn).then(|| cfg.cross_attention_dim[n - 1]))
            .collect();
        match encoder_hidden_states.size().as_slice() {
            &[eb, l, d] if eb == b && l > 0 && used_dims.iter().all(|u| *u == d) => {}
            s => {
                return Err(BenchError::user(format!(
                    "{}: encoder hidden states of shape {s:?}; expected [{b}, tokens, {}]",
                    self.source,
                    used_dims.first().copied().unwrap_or(0)
                )))
            }
        }
        let t = batch_timesteps(t, b, &self.source)?.to_device(self.device);
        let labels = class_labels.map(|l| l.to_device(self.device));
        self.class_embedding.check(labels.as_ref(), b).map_err(|m| BenchError::user(format!("{}: {m}", self.source)))?;

        let x = x.to_device(self.device).to_kind(self.kind);
        let x = if cfg.center_input_sample { x * 2.0 - 1.0 } else { x };
        let context = encoder_hidden_states.to_device(self.device).to_kind(self.kind);
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
                    h = a.forward(&h, &context);
                }
                skips.push(h.shallow_clone());
            }
            if let Some(conv) = &level.down {
                h = if self.config.downsample_padding == 0 {
                    conv.forward(&h.constant_pad_nd([0, 1, 0, 1]))
                } else {
                    conv.forward(&h)
                };
                skips.push(h.shallow_clone());
            }
        }
        if let Some(mid) = &self.mid {
            h = mid.first.forward(&h, emb_act);
            if let Some((attn, second)) = &mid.rest {
                h = second.forward(&attn.forward(&h, &context), emb_act);
            }
        }
        for level in &self.up {
            for (j, r) in level.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| BenchError::Internal("one skip per up ResNet block".into()))?;
                h = r.forward(&Tensor::cat(&[h, skip], 1), emb_act);
                if let Some(a) = level.attentions.get(j) {
                    h = a.forward(&h, &context);
                }
            }
            if let Some(conv) = &level.up {
                // Up to the resolution of the skip connection it meets next (2× unless a
                // downsampling met an odd size; diffusers' `upsample_size`).
                let target = skips.last().map(|s| [s.size()[2], s.size()[3]]).unwrap_or([h.size()[2] * 2, h.size()[3] * 2]);
                h = conv.forward(&upsample_nearest(&h, target));
            }
        }
        Ok(self.conv_out.forward(&self.norm_out.forward(&h).silu()))
    }
}

/// Load a diffusers `UNet2DConditionModel` folder (`unet/` of a Stable Diffusion pipeline):
/// `config.json` plus `diffusion_pytorch_model[.fp16].safetensors` (or sharded, or `.bin`; see
/// [`super::weights::pick_weights`]), each tensor read straight into `kind` on `device`.
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<UNet2DCondition> {
    let folder = DiffusersFolder::open(dir, kind, "UNet")?;
    let config = UNet2DConditionConfig::from_diffusers_value(&folder.config_path, &folder.config)?;
    let source = WeightSource::open(&folder.weights)?.rename(diffusers_attention_rename);
    UNet2DCondition::from_source(config, source, device, kind, &folder.weights.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_unet_has_859_5m_parameters() {
        let w = UNet2DCondition::expected_weights(&UNet2DConditionConfig::sd15()).unwrap();
        let n: i64 = w.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
        // The published count of Stable Diffusion 1.x's UNet (e.g. diffusers' model card: 859.52M).
        assert_eq!(n, 859_520_964);
        assert_eq!(w.len(), 686);
    }

    fn parse(json: &str) -> Result<UNet2DConditionConfig> {
        UNet2DConditionConfig::from_diffusers_json(Path::new("unet/config.json"), json)
    }

    const BASE: &str = r#""block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]"#;

    #[test]
    fn sd2_lists_expand_per_block() {
        let c = parse(&format!(
            r#"{{{BASE}, "attention_head_dim": [2, 4], "cross_attention_dim": 48, "use_linear_projection": true,
                "upcast_attention": true, "only_cross_attention": [true, false], "layers_per_block": [1, 2]}}"#
        ))
        .unwrap();
        assert_eq!(c.attention_heads, [2, 4]);
        assert_eq!(c.cross_attention_dim, [48, 48]);
        assert_eq!(c.only_cross_attention, [true, false]);
        assert_eq!(c.layers_per_block, [1, 2]);
        assert!(c.use_linear_projection && c.upcast_attention);
    }

    #[test]
    fn unsupported_options_are_refused_by_name() {
        let cases = [
            (r#""dual_cross_attention": true"#, "unet/config.json: dual_cross_attention = true is not supported"),
            (r#""addition_embed_type": "text_time""#, "unet/config.json: addition_embed_type = \"text_time\" is not supported"),
            (r#""class_embed_type": "projection""#, "unet/config.json: class_embed_type = \"projection\" is not supported"),
            (r#""num_attention_heads": 8"#, "unet/config.json: num_attention_heads = 8 is not supported"),
            (r#""attention_head_dim": [8]"#, "unet/config.json: attention_head_dim lists 1 entries; one per block (2) is required"),
            (r#""transformer_layers_per_block": [[1], [1]]"#, "unet/config.json: transformer_layers_per_block = [[1],[1]] must list positive integers (nested per-layer lists are not supported)"),
            (r#""mid_block_type": "UNetMidBlock2DSimpleCrossAttn""#, "unet/config.json: mid_block_type = \"UNetMidBlock2DSimpleCrossAttn\" is not supported (supported: \"UNetMidBlock2DCrossAttn\", \"UNetMidBlock2D\")"),
            (r#""_class_name": "UNet2DModel""#, "unet/config.json: _class_name is \"UNet2DModel\"; this loader reads \"UNet2DConditionModel\" (pixel-space UNet2DModel folders load with models::unet::load)"),
        ];
        for (extra, want) in cases {
            let err = parse(&format!("{{{BASE}, {extra}}}")).err().unwrap();
            assert!(err.to_string().starts_with(want), "{extra}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
        let err = parse(r#"{"block_out_channels": [32, 64], "down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}"#).err().unwrap();
        assert_eq!(
            err.to_string(),
            "unet/config.json: down_block_types contains \"SimpleCrossAttnDownBlock2D\"; supported: \"CrossAttnDownBlock2D\", \"DownBlock2D\""
        );
    }
}
