//! DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs") as
//! NVlabs/edm `SongUNet` re-implements them: layers named `enc.<R>x<R>_…` / `dec.<R>x<R>_…`
//! exactly as in EDM's snapshots.
use super::config::Kwargs;
use super::layers::{BlockSpec, Conv2d, ConvSpec, GroupNorm, Linear, NoiseEmbedding, Resample, UNetBlock};
use crate::models::weights::WeightTaker;
use crate::{BenchError, Result};
use tch::Tensor;

/// `SongUNet`'s constructor arguments (defaults as in EDM; `dropout`, `label_dropout` only train).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SongUNetConfig {
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
    /// `positional` (DDPM++) or `fourier` (NCSN++).
    pub embedding_type: String,
    pub channel_mult_noise: i64,
    /// `standard`, `skip` or `residual` (NCSN++).
    pub encoder_type: String,
    /// `standard` or `skip`.
    pub decoder_type: String,
    /// [1,1] (DDPM++) or [1,3,3,1] (NCSN++).
    pub resample_filter: Vec<i64>,
}

impl SongUNetConfig {
    pub(super) fn from_kwargs(k: &mut Kwargs) -> Result<Self> {
        let cfg = SongUNetConfig {
            img_resolution: k.int("img_resolution", None)?,
            in_channels: k.int("in_channels", None)?,
            out_channels: k.int("out_channels", None)?,
            label_dim: k.int("label_dim", Some(0))?,
            augment_dim: k.int("augment_dim", Some(0))?,
            model_channels: k.int("model_channels", Some(128))?,
            channel_mult: k.ints("channel_mult", Some(&[1, 2, 2, 2]))?,
            channel_mult_emb: k.int("channel_mult_emb", Some(4))?,
            num_blocks: k.int("num_blocks", Some(4))?,
            attn_resolutions: k.ints("attn_resolutions", Some(&[16]))?,
            embedding_type: k.choice("embedding_type", "positional", &["positional", "fourier"])?,
            channel_mult_noise: k.int("channel_mult_noise", Some(1))?,
            encoder_type: k.choice("encoder_type", "standard", &["standard", "skip", "residual"])?,
            decoder_type: k.choice("decoder_type", "standard", &["standard", "skip"])?,
            resample_filter: k.ints("resample_filter", Some(&[1, 1]))?,
        };
        k.float("dropout", Some(0.1))?;
        k.float("label_dropout", Some(0.0))?;
        k.finish()?;
        super::config::check_levels(k.what(), cfg.img_resolution, &cfg.channel_mult, &cfg.resample_filter)?;
        super::config::check_positive(
            k.what(),
            &[
                ("in_channels", cfg.in_channels),
                ("out_channels", cfg.out_channels),
                ("model_channels", cfg.model_channels),
                ("channel_mult_emb", cfg.channel_mult_emb),
                ("channel_mult_noise", cfg.channel_mult_noise),
            ],
        )?;
        super::config::check_even(k.what(), "model_channels * channel_mult_noise", cfg.model_channels * cfg.channel_mult_noise)?;
        Ok(cfg)
    }
}

enum Enc {
    Conv(Conv2d),
    Block(UNetBlock),
    AuxDown(Conv2d),
    AuxSkip(Conv2d),
    AuxResidual(Conv2d),
}

enum Dec {
    Block(UNetBlock),
    AuxUp(Conv2d),
    AuxNorm(GroupNorm),
    AuxConv(Conv2d),
}

pub struct SongUNet {
    pub config: SongUNetConfig,
    map_noise: NoiseEmbedding,
    map_label: Option<Linear>,
    map_augment: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    enc: Vec<Enc>,
    dec: Vec<Dec>,
}

impl SongUNet {
    /// Takes the weights under `prefix` (e.g. `model.`), building the layers in EDM's order.
    pub(super) fn new(config: SongUNetConfig, wt: &mut WeightTaker, prefix: &str) -> Result<Self> {
        let c = &config;
        let p = |n: &str| format!("{prefix}{n}");
        let emb_channels = c.model_channels * c.channel_mult_emb;
        let noise_channels = c.model_channels * c.channel_mult_noise;
        let taps = c.resample_filter.len() as i64;
        let spec = BlockSpec {
            emb_channels,
            num_heads: Some(1),
            channels_per_head: 64,
            skip_scale: 0.5f64.sqrt(),
            eps: 1e-6,
            filter_taps: taps,
            resample_proj: true,
            adaptive_scale: false,
        };
        let map_noise = match c.embedding_type.as_str() {
            "fourier" => NoiseEmbedding::fourier(wt, &p("map_noise"), noise_channels),
            _ => NoiseEmbedding::Positional { channels: noise_channels, max_positions: 10000.0, endpoint: true },
        };
        let map_label = (c.label_dim > 0).then(|| Linear::new(wt, &p("map_label"), c.label_dim, noise_channels, true));
        let map_augment = (c.augment_dim > 0).then(|| Linear::new(wt, &p("map_augment"), c.augment_dim, noise_channels, false));
        let map_layer0 = Linear::new(wt, &p("map_layer0"), noise_channels, emb_channels, true);
        let map_layer1 = Linear::new(wt, &p("map_layer1"), emb_channels, emb_channels, true);

        // Encoder: `skips` tracks the channels of every output the decoder will concatenate.
        let mut enc = vec![];
        let mut skips = vec![];
        let (mut cout, mut caux) = (c.in_channels, c.in_channels);
        for (level, &mult) in c.channel_mult.iter().enumerate() {
            let res = c.img_resolution >> level;
            let name = |s: &str| p(&format!("enc.{res}x{res}_{s}"));
            if level == 0 {
                let cin = cout;
                cout = c.model_channels;
                enc.push(Enc::Conv(Conv2d::new(wt, &name("conv"), cin, cout, ConvSpec::plain(3))));
            } else {
                enc.push(Enc::Block(UNetBlock::new(wt, &name("down"), cout, cout, Resample::Down, false, &spec)?));
                if c.encoder_type == "skip" {
                    let down = ConvSpec { kernel: 0, bias: true, up: false, down: true, fused: false, filter_taps: taps };
                    enc.push(Enc::AuxDown(Conv2d::new(wt, &name("aux_down"), caux, caux, down)));
                    enc.push(Enc::AuxSkip(Conv2d::new(wt, &name("aux_skip"), caux, cout, ConvSpec::plain(1))));
                }
                if c.encoder_type == "residual" {
                    let fused = ConvSpec { kernel: 3, bias: true, up: false, down: true, fused: true, filter_taps: taps };
                    enc.push(Enc::AuxResidual(Conv2d::new(wt, &name("aux_residual"), caux, cout, fused)));
                    caux = cout;
                }
            }
            skips.push(cout);
            for idx in 0..c.num_blocks {
                let cin = cout;
                cout = c.model_channels * mult;
                let attn = c.attn_resolutions.contains(&res);
                enc.push(Enc::Block(UNetBlock::new(wt, &name(&format!("block{idx}")), cin, cout, Resample::None, attn, &spec)?));
                skips.push(cout);
            }
        }

        let mut dec = vec![];
        let levels = c.channel_mult.len();
        for (level, &mult) in c.channel_mult.iter().enumerate().rev() {
            let res = c.img_resolution >> level;
            let name = |s: &str| p(&format!("dec.{res}x{res}_{s}"));
            if level == levels - 1 {
                dec.push(Dec::Block(UNetBlock::new(wt, &name("in0"), cout, cout, Resample::None, true, &spec)?));
                dec.push(Dec::Block(UNetBlock::new(wt, &name("in1"), cout, cout, Resample::None, false, &spec)?));
            } else {
                dec.push(Dec::Block(UNetBlock::new(wt, &name("up"), cout, cout, Resample::Up, false, &spec)?));
            }
            for idx in 0..=c.num_blocks {
                let skip = skips.pop().ok_or_else(|| BenchError::Internal("SongUNet skip bookkeeping".into()))?;
                let cin = cout + skip;
                cout = c.model_channels * mult;
                let attn = idx == c.num_blocks && c.attn_resolutions.contains(&res);
                dec.push(Dec::Block(UNetBlock::new(wt, &name(&format!("block{idx}")), cin, cout, Resample::None, attn, &spec)?));
            }
            if c.decoder_type == "skip" || level == 0 {
                if c.decoder_type == "skip" && level < levels - 1 {
                    let up = ConvSpec { kernel: 0, bias: true, up: true, down: false, fused: false, filter_taps: taps };
                    dec.push(Dec::AuxUp(Conv2d::new(wt, &name("aux_up"), c.out_channels, c.out_channels, up)));
                }
                dec.push(Dec::AuxNorm(GroupNorm::new(wt, &name("aux_norm"), cout, 1e-6)?));
                dec.push(Dec::AuxConv(Conv2d::new(wt, &name("aux_conv"), cout, c.out_channels, ConvSpec::plain(3))));
            }
        }
        Ok(SongUNet { config, map_noise, map_label, map_augment, map_layer0, map_layer1, enc, dec })
    }

    /// F(x; c_noise, class labels, augment labels) of EDM's `SongUNet.forward`.
    pub(super) fn forward(&self, x: &Tensor, noise_labels: &Tensor, class_labels: Option<&Tensor>, augment_labels: Option<&Tensor>) -> Result<Tensor> {
        // Mapping: DDPM++'s embedding is [sin, cos]; the embedding classes return [cos, sin].
        let emb = self.map_noise.forward(noise_labels);
        let halves = emb.chunk(2, 1);
        let mut emb = Tensor::cat(&[&halves[1], &halves[0]], 1);
        if let (Some(m), Some(l)) = (&self.map_label, class_labels) {
            emb = emb + m.forward(&(l * (self.config.label_dim as f64).sqrt()));
        }
        if let (Some(m), Some(a)) = (&self.map_augment, augment_labels) {
            emb = emb + m.forward(a);
        }
        let emb = self.map_layer0.forward(&emb).silu();
        let emb = self.map_layer1.forward(&emb).silu();

        let internal = || BenchError::Internal("SongUNet skip bookkeeping".into());
        let mut skips: Vec<Tensor> = vec![];
        let mut x = x.shallow_clone();
        let mut aux = x.shallow_clone();
        for layer in &self.enc {
            match layer {
                Enc::AuxDown(conv) => aux = conv.forward(&aux),
                Enc::AuxSkip(conv) => {
                    x = x + conv.forward(&aux);
                    *skips.last_mut().ok_or_else(internal)? = x.shallow_clone();
                }
                Enc::AuxResidual(conv) => {
                    x = (x + conv.forward(&aux)) / 2f64.sqrt();
                    aux = x.shallow_clone();
                    *skips.last_mut().ok_or_else(internal)? = x.shallow_clone();
                }
                Enc::Conv(conv) => {
                    x = conv.forward(&x);
                    skips.push(x.shallow_clone());
                }
                Enc::Block(block) => {
                    x = block.forward(&x, &emb);
                    skips.push(x.shallow_clone());
                }
            }
        }

        let mut aux: Option<Tensor> = None;
        let mut tmp: Option<Tensor> = None;
        for layer in &self.dec {
            match layer {
                Dec::AuxUp(conv) => aux = Some(conv.forward(aux.as_ref().ok_or_else(internal)?)),
                Dec::AuxNorm(norm) => tmp = Some(norm.forward(&x)),
                Dec::AuxConv(conv) => {
                    let t = conv.forward(&tmp.as_ref().ok_or_else(internal)?.silu());
                    aux = Some(match aux {
                        None => t,
                        Some(a) => t + a,
                    });
                    tmp = None;
                }
                Dec::Block(block) => {
                    if x.size()[1] != block.in_channels {
                        x = Tensor::cat(&[x, skips.pop().ok_or_else(internal)?], 1);
                    }
                    x = block.forward(&x, &emb);
                }
            }
        }
        aux.ok_or_else(internal)
    }
}
