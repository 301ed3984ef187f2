//! Latent decoders of latent diffusion models (Rombach et al. 2022 §3.1) in tch: diffusers
//! `AutoencoderKL` (Stable Diffusion, SD3/Flux-style `shift_factor`) and `VQModel` (the LDM
//! checkpoints, e.g. CompVis/ldm-celebahq-256). Only the decoding half is built; the encoder and
//! `quant_conv` weights in the file are skipped unread.
//!
//! `decode` takes the latents a sampler produced and returns images in [-1, 1] (unclamped),
//! applying the config's latent scaling as the diffusers pipelines do before calling the model:
//! - KL (StableDiffusionPipeline, SD3/Flux pipelines): z = latents / scaling_factor + shift_factor,
//!   image = decoder(post_quant_conv(z));
//! - VQ (LDMPipeline): z = latents / scaling_factor, then `VQModel.decode` with its default
//!   `force_not_quantize=False`: each latent vector snaps to its nearest codebook entry
//!   (Euclidean, `VectorQuantizer.forward`), then post_quant_conv and the decoder.
use super::diffusers_config::{square_sample_size, ConfigReader};
use super::layers::{upsample_nearest, Conv, GroupNorm, ResBlock, ResBlockSpec, SpatialAttention};
use super::weights::{diffusers_attention_rename, DiffusersFolder, WeightSource, WeightStats, WeightTaker};
use crate::{BenchError, Result};
use serde_json::Value;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The decoder half shared by both autoencoders (diffusers `Decoder`, `norm_type: group`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DecoderConfig {
    /// Channels the decoder's conv_in reads (diffusers `latent_channels`).
    pub latent_channels: i64,
    pub out_channels: i64,
    /// Encoder order (shallowest first); the decoder runs them deepest first.
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: usize,
    pub norm_num_groups: i64,
    pub mid_block_add_attention: bool,
    /// Image resolution the model was trained at, when the config states it.
    pub sample_size: Option<i64>,
}

impl DecoderConfig {
    fn parse(r: &ConfigReader, latent_default: i64) -> Result<Self> {
        r.choice("act_fn", &["silu", "swish"], "silu")?;
        r.choice("norm_type", &["group"], "group")?;
        let block_out_channels = r.ints("block_out_channels")?;
        let up = r.strings("up_block_types")?;
        if up.len() != block_out_channels.len() {
            return Err(r.err(format!(
                "up_block_types ({}) and block_out_channels ({}) must have equal lengths",
                up.len(),
                block_out_channels.len()
            )));
        }
        if let Some(other) = up.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(r.err(format!("up_block_types contains {other:?}; supported: \"UpDecoderBlock2D\"")));
        }
        Ok(DecoderConfig {
            latent_channels: r.positive("latent_channels", latent_default)?,
            out_channels: r.positive("out_channels", 3)?,
            layers_per_block: r.positive("layers_per_block", 1)? as usize,
            norm_num_groups: r.positive("norm_num_groups", 32)?,
            mid_block_add_attention: r.boolean("mid_block_add_attention", true)?,
            sample_size: square_sample_size(r)?,
            block_out_channels,
        })
    }

    /// Image pixels per latent pixel along each side: 2^(levels − 1) (8 for Stable Diffusion).
    pub fn downscale_factor(&self) -> i64 {
        1 << (self.block_out_channels.len() - 1)
    }
}

struct Decoder {
    conv_in: Conv,
    mid_first: ResBlock,
    mid_attention: Option<SpatialAttention>,
    mid_second: ResBlock,
    up: Vec<(Vec<ResBlock>, Option<Conv>)>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Decoder {
    fn new(wt: &mut WeightTaker, cfg: &DecoderConfig, source: &str) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let g = cfg.norm_num_groups;
        if n == 0 {
            return Err(BenchError::user(format!("{source}: block_out_channels is empty")));
        }
        // The decoder's norms all use eps 1e-6, whatever the config (diffusers `Decoder`).
        let eps = 1e-6;
        let res = |cin: i64, cout: i64| ResBlockSpec {
            cin,
            cout,
            temb: None,
            groups: g,
            eps,
            scale_shift: false,
            out_scale: 1.0,
            resample: None,
        };
        let top = ch[n - 1];
        let p = "decoder";
        let conv_in = Conv::new(wt, &format!("{p}.conv_in"), cfg.latent_channels, top, 3, 1, 1);
        let mid_first = ResBlock::new(wt, &format!("{p}.mid_block.resnets.0"), res(top, top));
        let mid_attention = cfg
            .mid_block_add_attention
            .then(|| SpatialAttention::new(wt, &format!("{p}.mid_block.attentions.0"), top, 1, Some((g, eps)), 1.0));
        let mid_second = ResBlock::new(wt, &format!("{p}.mid_block.resnets.1"), res(top, top));
        let mut up = vec![];
        let mut prev = top;
        for i in 0..n {
            let cout = ch[n - 1 - i];
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| ResBlock::new(wt, &format!("{p}.up_blocks.{i}.resnets.{j}"), res(if j == 0 { prev } else { cout }, cout)))
                .collect();
            let upsample = (i + 1 < n).then(|| Conv::new(wt, &format!("{p}.up_blocks.{i}.upsamplers.0.conv"), cout, cout, 3, 1, 1));
            up.push((resnets, upsample));
            prev = cout;
        }
        Ok(Decoder {
            conv_in,
            mid_first,
            mid_attention,
            mid_second,
            up,
            norm_out: GroupNorm::new(wt, &format!("{p}.conv_norm_out"), ch[0], g, eps),
            conv_out: Conv::new(wt, &format!("{p}.conv_out"), ch[0], cfg.out_channels, 3, 1, 1),
        })
    }

    fn forward(&self, z: &Tensor) -> Tensor {
        let mut h = self.mid_first.forward(&self.conv_in.forward(z), None);
        if let Some(a) = &self.mid_attention {
            h = a.forward(&h);
        }
        h = self.mid_second.forward(&h, None);
        for (resnets, upsample) in &self.up {
            for r in resnets {
                h = r.forward(&h, None);
            }
            if let Some(conv) = upsample {
                let (hh, ww) = (h.size()[2], h.size()[3]);
                h = conv.forward(&upsample_nearest(&h, [2 * hh, 2 * ww]));
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h).silu())
    }
}

/// `AutoencoderKL` options besides the decoder's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AutoencoderKlConfig {
    pub decoder: DecoderConfig,
    /// Latents were multiplied by this after encoding (SD 1/2: 0.18215).
    pub scaling_factor: f64,
    /// Subtracted before scaling at encoding (SD3: 0.0609, Flux: 0.1159); 0 when absent.
    pub shift_factor: f64,
    pub use_post_quant_conv: bool,
    /// diffusers pipelines run this VAE in fp32 even in fp16 pipelines (its activations overflow fp16).
    pub force_upcast: bool,
}

/// Every `AutoencoderKL.__init__` parameter of diffusers 0.42.
const KL_KEYS: &[&str] = &[
    "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
    "act_fn", "latent_channels", "norm_num_groups", "sample_size", "scaling_factor", "shift_factor",
    "latents_mean", "latents_std", "force_upcast", "use_quant_conv", "use_post_quant_conv",
    "mid_block_add_attention",
];

impl AutoencoderKlConfig {
    pub fn from_diffusers_json(path: &Path, text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
        Self::from_value(path, &v)
    }

    fn from_value(path: &Path, v: &Value) -> Result<Self> {
        let r = ConfigReader::new(path, v, "AutoencoderKL", "")?;
        r.warn_unknown(KL_KEYS);
        r.refuse_unless(
            "latents_mean",
            &[],
            "per-channel latent statistics belong to pipelines (SDXL-based) whose latent normalisation is not implemented",
        )?;
        r.refuse_unless("latents_std", &[], "per-channel latent statistics are not implemented")?;
        Ok(AutoencoderKlConfig {
            decoder: DecoderConfig::parse(&r, 4)?,
            scaling_factor: r.float("scaling_factor", 0.18215)?,
            shift_factor: r.float("shift_factor", 0.0)?,
            use_post_quant_conv: r.boolean("use_post_quant_conv", true)?,
            force_upcast: r.boolean("force_upcast", true)?,
        })
    }
}

/// `VQModel` options besides the decoder's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VqModelConfig {
    pub decoder: DecoderConfig,
    pub num_vq_embeddings: i64,
    /// Width of the codebook vectors, which is what a diffusion model's latents are.
    pub vq_embed_dim: i64,
    pub scaling_factor: f64,
    pub force_upcast: bool,
}

const VQ_KEYS: &[&str] = &[
    "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
    "act_fn", "latent_channels", "sample_size", "num_vq_embeddings", "norm_num_groups", "vq_embed_dim",
    "scaling_factor", "norm_type", "mid_block_add_attention", "lookup_from_codebook", "force_upcast",
];

impl VqModelConfig {
    pub fn from_diffusers_json(path: &Path, text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
        Self::from_value(path, &v)
    }

    fn from_value(path: &Path, v: &Value) -> Result<Self> {
        let r = ConfigReader::new(path, v, "VQModel", "")?;
        r.warn_unknown(VQ_KEYS);
        // lookup_from_codebook only matters with force_not_quantize=True, which LDMPipeline never passes.
        r.boolean("lookup_from_codebook", false)?;
        let decoder = DecoderConfig::parse(&r, 3)?;
        Ok(VqModelConfig {
            num_vq_embeddings: r.positive("num_vq_embeddings", 256)?,
            vq_embed_dim: r.opt_int("vq_embed_dim")?.unwrap_or(decoder.latent_channels),
            scaling_factor: r.float("scaling_factor", 0.18215)?,
            force_upcast: r.boolean("force_upcast", false)?,
            decoder,
        })
    }
}

/// Checks latents [B, channels, h, w].
fn check_latents(z: &Tensor, channels: i64, source: &str) -> Result<()> {
    match z.size().as_slice() {
        &[b, c, h, w] if b > 0 && c == channels && h > 0 && w > 0 => Ok(()),
        s => Err(BenchError::user(format!("{source}: latents of shape {s:?}; expected [batch, {channels}, h, w]"))),
    }
}

/// A loaded `AutoencoderKL` decoder.
pub struct AutoencoderKl {
    pub config: AutoencoderKlConfig,
    post_quant_conv: Option<Conv>,
    decoder: Decoder,
    kind: Kind,
    device: Device,
    source: String,
    stats: WeightStats,
}

impl AutoencoderKl {
    /// Images [B, out_channels, f·h, f·w] (f = `downscale_factor`), in the model's precision on
    /// its device, from sampler latents [B, latent_channels, h, w].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        check_latents(latents, self.config.decoder.latent_channels, &self.source)?;
        let z = latents.to_device(self.device).to_kind(self.kind) / self.config.scaling_factor;
        let z = if self.config.shift_factor != 0.0 { z + self.config.shift_factor } else { z };
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(&z),
            None => z,
        };
        Ok(self.decoder.forward(&z))
    }
}

/// A loaded `VQModel` decoder with its codebook.
pub struct VqModel {
    pub config: VqModelConfig,
    codebook: Tensor,
    post_quant_conv: Conv,
    decoder: Decoder,
    kind: Kind,
    device: Device,
    source: String,
    stats: WeightStats,
}

impl VqModel {
    /// Images from sampler latents [B, vq_embed_dim, h, w] (see the module docs).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        check_latents(latents, self.config.vq_embed_dim, &self.source)?;
        let z = latents.to_device(self.device).to_kind(self.kind) / self.config.scaling_factor;
        let zq = self.quantize(&z);
        Ok(self.decoder.forward(&self.post_quant_conv.forward(&zq)))
    }

    /// Nearest codebook entry per latent vector (diffusers `VectorQuantizer.forward`: argmin of
    /// `torch.cdist`, then the straight-through form z + (e − z), whose rounding it keeps).
    /// Distances are taken in f32 whatever the model precision: cdist has no fp16 CPU kernel, and
    /// a rounded distance could pick a different entry.
    fn quantize(&self, z: &Tensor) -> Tensor {
        let (b, d, h, w) = (z.size()[0], z.size()[1], z.size()[2], z.size()[3]);
        let zf = z.permute([0, 2, 3, 1]).contiguous();
        let flat = zf.view([-1, d]).to_kind(Kind::Float);
        let idx = Tensor::cdist(&flat, &self.codebook.to_kind(Kind::Float), 2.0, None::<i64>).argmin(1, false);
        let e = self.codebook.index_select(0, &idx).view([b, h, w, d]);
        (&zf + (e - &zf)).permute([0, 3, 1, 2]).contiguous()
    }
}

/// The latent decoder of a latent diffusion pipeline (its `vae/` or `vqvae/` folder).
pub enum LatentDecoder {
    Kl(AutoencoderKl),
    Vq(VqModel),
}

impl LatentDecoder {
    /// Images in [-1, 1] (unclamped) from sampler latents; see the module docs for the scaling.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        match self {
            LatentDecoder::Kl(m) => m.decode(latents),
            LatentDecoder::Vq(m) => m.decode(latents),
        }
    }

    /// Channels of the latents a diffusion model over this autoencoder works in.
    pub fn latent_channels(&self) -> i64 {
        match self {
            LatentDecoder::Kl(m) => m.config.decoder.latent_channels,
            LatentDecoder::Vq(m) => m.config.vq_embed_dim,
        }
    }

    /// Image pixels per latent pixel along each side.
    pub fn downscale_factor(&self) -> i64 {
        self.decoder_config().downscale_factor()
    }

    pub fn decoder_config(&self) -> &DecoderConfig {
        match self {
            LatentDecoder::Kl(m) => &m.config.decoder,
            LatentDecoder::Vq(m) => &m.config.decoder,
        }
    }

    /// Whether diffusers would run this decoder in fp32 inside a reduced-precision pipeline.
    pub fn force_upcast(&self) -> bool {
        match self {
            LatentDecoder::Kl(m) => m.config.force_upcast,
            LatentDecoder::Vq(m) => m.config.force_upcast,
        }
    }

    /// Parameter count, bytes and element types of the loaded weights.
    pub fn weight_stats(&self) -> &WeightStats {
        match self {
            LatentDecoder::Kl(m) => &m.stats,
            LatentDecoder::Vq(m) => &m.stats,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            LatentDecoder::Kl(m) => format!("autoencoder_kl:{}", m.source),
            LatentDecoder::Vq(m) => format!("vq_model:{}", m.source),
        }
    }
}

/// Weights of the encoding half, present in the files but never read.
const ENCODER_PARTS: &[&str] = &["encoder.", "quant_conv."];

/// Load a diffusers `AutoencoderKL` or `VQModel` folder (by its config's `_class_name`), the
/// decoder only, each tensor read straight into `kind` on `device`.
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<LatentDecoder> {
    let folder = DiffusersFolder::open(dir, kind, "autoencoder")?;
    let class = folder.config.get("_class_name").and_then(|c| c.as_str()).unwrap_or("");
    let source = WeightSource::open(&folder.weights)?.rename(diffusers_attention_rename);
    let name = folder.weights.display().to_string();
    let mut wt = WeightTaker::new(source, device, kind);
    match class {
        "AutoencoderKL" => {
            let config = AutoencoderKlConfig::from_value(&folder.config_path, &folder.config)?;
            let lc = config.decoder.latent_channels;
            let post_quant_conv = config.use_post_quant_conv.then(|| Conv::new(&mut wt, "post_quant_conv", lc, lc, 1, 1, 0));
            let decoder = Decoder::new(&mut wt, &config.decoder, &name)?;
            let stats = wt.finish("AutoencoderKL config", ENCODER_PARTS)?;
            Ok(LatentDecoder::Kl(AutoencoderKl { config, post_quant_conv, decoder, kind, device, source: name, stats }))
        }
        "VQModel" => {
            let config = VqModelConfig::from_value(&folder.config_path, &folder.config)?;
            let (e, lc) = (config.vq_embed_dim, config.decoder.latent_channels);
            let codebook = wt.take("quantize.embedding.weight", &[config.num_vq_embeddings, e]);
            let post_quant_conv = Conv::new(&mut wt, "post_quant_conv", e, lc, 1, 1, 0);
            let decoder = Decoder::new(&mut wt, &config.decoder, &name)?;
            let stats = wt.finish("VQModel config", ENCODER_PARTS)?;
            Ok(LatentDecoder::Vq(VqModel { config, codebook, post_quant_conv, decoder, kind, device, source: name, stats }))
        }
        other => Err(BenchError::file(
            &folder.config_path,
            format!("_class_name is {other:?}; supported latent decoders: \"AutoencoderKL\", \"VQModel\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_and_refuse_by_name() {
        let p = Path::new("vae/config.json");
        let base = r#""block_out_channels": [128, 256, 512, 512], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]"#;
        let kl = AutoencoderKlConfig::from_diffusers_json(p, &format!("{{{base}, \"shift_factor\": 0.1159, \"scaling_factor\": 0.3611}}")).unwrap();
        assert_eq!((kl.scaling_factor, kl.shift_factor, kl.decoder.latent_channels), (0.3611, 0.1159, 4));
        assert_eq!(kl.decoder.downscale_factor(), 8);
        let err = AutoencoderKlConfig::from_diffusers_json(p, &format!("{{{base}, \"latents_mean\": [0.0]}}")).err().unwrap();
        assert!(err.to_string().starts_with("vae/config.json: latents_mean = [0.0] is not supported"), "{err}");
        let vq = VqModelConfig::from_diffusers_json(p, &format!("{{{base}, \"num_vq_embeddings\": 8192}}")).unwrap();
        assert_eq!((vq.vq_embed_dim, vq.num_vq_embeddings), (3, 8192));
        let err = VqModelConfig::from_diffusers_json(p, &format!("{{{base}, \"norm_type\": \"spatial\"}}")).err().unwrap();
        assert_eq!(err.to_string(), "vae/config.json: norm_type = \"spatial\" is not supported (supported: \"group\")");
    }
}
