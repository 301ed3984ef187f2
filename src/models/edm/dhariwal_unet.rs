//! ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis") as NVlabs/edm
//! `DhariwalUNet` re-implements it, with EDM's layer names.
use super::config::Kwargs;
use super::layers::{BlockSpec, Conv2d, ConvSpec, GroupNorm, Linear, NoiseEmbedding, Resample, UNetBlock};
use crate::models::weights::WeightTaker;
use crate::{BenchError, Result};
use tch::Tensor;

/// `DhariwalUNet`'s constructor arguments (defaults as in EDM; `dropout`, `label_dropout` only train).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DhariwalUNetConfig {
    pub img_resolution: i64,
    pub in_channels: i64,
    pub out_channels: i64,
    pub label_dim: i64,
    pub augment_dim: i64,
    pub model_channels: i64,
    pub channel_mult: Vec<i64>,
    pub channel_mult_emb: i64,
    pub num_blocks: i64,
    pub attn_resolutions: Vec<i64>,
}

impl DhariwalUNetConfig {
    pub(super) fn from_kwargs(k: &mut Kwargs) -> Result<Self> {
        let cfg = DhariwalUNetConfig {
            img_resolution: k.int("img_resolution", None)?,
            in_channels: k.int("in_channels", None)?,
            out_channels: k.int("out_channels", None)?,
            label_dim: k.int("label_dim", Some(0))?,
            augment_dim: k.int("augment_dim", Some(0))?,
            model_channels: k.int("model_channels", Some(192))?,
            channel_mult: k.ints("channel_mult", Some(&[1, 2, 3, 4]))?,
            channel_mult_emb: k.int("channel_mult_emb", Some(4))?,
            num_blocks: k.int("num_blocks", Some(3))?,
            attn_resolutions: k.ints("attn_resolutions", Some(&[32, 16, 8]))?,
        };
        k.float("dropout", Some(0.1))?;
        k.float("label_dropout", Some(0.0))?;
        k.finish()?;
        super::config::check_levels(k.what(), cfg.img_resolution, &cfg.channel_mult, &[1, 1])?;
        super::config::check_positive(
            k.what(),
            &[
                ("in_channels", cfg.in_channels),
                ("out_channels", cfg.out_channels),
                ("model_channels", cfg.model_channels),
                ("channel_mult_emb", cfg.channel_mult_emb),
            ],
        )?;
        super::config::check_even(k.what(), "model_channels", cfg.model_channels)?;
        Ok(cfg)
    }
}

pub struct DhariwalUNet {
    pub config: DhariwalUNetConfig,
    map_noise: NoiseEmbedding,
    map_augment: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    map_label: Option<Linear>,
    /// The first encoder layer is a plain convolution, the rest are blocks.
    enc_conv: Conv2d,
    enc: Vec<UNetBlock>,
    dec: Vec<UNetBlock>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
}

impl DhariwalUNet {
    /// Takes the weights under `prefix` (e.g. `model.`), building the layers in EDM's order.
    pub(super) fn new(config: DhariwalUNetConfig, wt: &mut WeightTaker, prefix: &str) -> Result<Self> {
        let c = &config;
        let p = |n: &str| format!("{prefix}{n}");
        let emb_channels = c.model_channels * c.channel_mult_emb;
        let spec = BlockSpec {
            emb_channels,
            num_heads: None,
            channels_per_head: 64,
            skip_scale: 1.0,
            eps: 1e-5,
            filter_taps: 2,
            resample_proj: false,
            adaptive_scale: true,
        };
        let map_noise = NoiseEmbedding::Positional { channels: c.model_channels, max_positions: 10000.0, endpoint: false };
        let map_augment = (c.augment_dim > 0).then(|| Linear::new(wt, &p("map_augment"), c.augment_dim, c.model_channels, false));
        let map_layer0 = Linear::new(wt, &p("map_layer0"), c.model_channels, emb_channels, true);
        let map_layer1 = Linear::new(wt, &p("map_layer1"), emb_channels, emb_channels, true);
        let map_label = (c.label_dim > 0).then(|| Linear::new(wt, &p("map_label"), c.label_dim, emb_channels, false));

        let mut enc_conv = None;
        let mut enc = vec![];
        let mut skips = vec![];
        let mut cout = c.in_channels;
        for (level, &mult) in c.channel_mult.iter().enumerate() {
            let res = c.img_resolution >> level;
            let name = |s: &str| p(&format!("enc.{res}x{res}_{s}"));
            if level == 0 {
                let cin = cout;
                cout = c.model_channels * mult;
                enc_conv = Some(Conv2d::new(wt, &name("conv"), cin, cout, ConvSpec::plain(3)));
            } else {
                enc.push(UNetBlock::new(wt, &name("down"), cout, cout, Resample::Down, false, &spec)?);
            }
            skips.push(cout);
            for idx in 0..c.num_blocks {
                let cin = cout;
                cout = c.model_channels * mult;
                let attn = c.attn_resolutions.contains(&res);
                enc.push(UNetBlock::new(wt, &name(&format!("block{idx}")), cin, cout, Resample::None, attn, &spec)?);
                skips.push(cout);
            }
        }
        let enc_conv = enc_conv.ok_or_else(|| BenchError::user(format!("{}: channel_mult is empty", prefix)))?;

        let mut dec = vec![];
        let levels = c.channel_mult.len();
        for (level, &mult) in c.channel_mult.iter().enumerate().rev() {
            let res = c.img_resolution >> level;
            let name = |s: &str| p(&format!("dec.{res}x{res}_{s}"));
            if level == levels - 1 {
                dec.push(UNetBlock::new(wt, &name("in0"), cout, cout, Resample::None, true, &spec)?);
                dec.push(UNetBlock::new(wt, &name("in1"), cout, cout, Resample::None, false, &spec)?);
            } else {
                dec.push(UNetBlock::new(wt, &name("up"), cout, cout, Resample::Up, false, &spec)?);
            }
            for idx in 0..=c.num_blocks {
                let skip = skips.pop().ok_or_else(|| BenchError::Internal("DhariwalUNet skip bookkeeping".into()))?;
                let cin = cout + skip;
                cout = c.model_channels * mult;
                let attn = c.attn_resolutions.contains(&res);
                dec.push(UNetBlock::new(wt, &name(&format!("block{idx}")), cin, cout, Resample::None, attn, &spec)?);
            }
        }
        let out_norm = GroupNorm::new(wt, &p("out_norm"), cout, 1e-5)?;
        let out_conv = Conv2d::new(wt, &p("out_conv"), cout, c.out_channels, ConvSpec::plain(3));
        Ok(DhariwalUNet { config, map_noise, map_augment, map_layer0, map_layer1, map_label, enc_conv, enc, dec, out_norm, out_conv })
    }

    /// F(x; c_noise, class labels, augment labels) of EDM's `DhariwalUNet.forward`.
    pub(super) fn forward(&self, x: &Tensor, noise_labels: &Tensor, class_labels: Option<&Tensor>, augment_labels: Option<&Tensor>) -> Result<Tensor> {
        let mut emb = self.map_noise.forward(noise_labels);
        if let (Some(m), Some(a)) = (&self.map_augment, augment_labels) {
            emb = emb + m.forward(a);
        }
        let emb = self.map_layer0.forward(&emb).silu();
        let mut emb = self.map_layer1.forward(&emb);
        if let (Some(m), Some(l)) = (&self.map_label, class_labels) {
            emb = emb + m.forward(l);
        }
        let emb = emb.silu();

        let mut x = self.enc_conv.forward(x);
        let mut skips = vec![x.shallow_clone()];
        for block in &self.enc {
            x = block.forward(&x, &emb);
            skips.push(x.shallow_clone());
        }
        for block in &self.dec {
            if x.size()[1] != block.in_channels {
                let skip = skips.pop().ok_or_else(|| BenchError::Internal("DhariwalUNet skip bookkeeping".into()))?;
                x = Tensor::cat(&[x, skip], 1);
            }
            x = block.forward(&x, &emb);
        }
        Ok(self.out_conv.forward(&self.out_norm.forward(&x).silu()))
    }
}
