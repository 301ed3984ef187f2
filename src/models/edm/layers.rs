//! The layers of NVlabs/edm `training/networks.py` in functional tch. Weights are plain fp32
//! tensors taken by their state-dict names and cast to the activations' dtype at each use, as
//! EDM does (so fp16 activations still get an fp32 embedding MLP); each forward pass uses EDM's
//! ops in EDM's order, so the results agree with EDM's to rounding. This mixed precision (fp32
//! weights, fp16 activations) is why these are not [`crate::models::layers`]' diffusers layers,
//! whose weights are stored in the activations' dtype.
use crate::models::weights::WeightTaker;
use crate::{BenchError, Result};
use tch::{Kind, Tensor};

/// EDM `Linear`: `x @ wᵀ + b`.
pub(super) struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    pub(super) fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64, bias: bool) -> Self {
        Linear {
            w: wt.take(&format!("{name}.weight"), &[cout, cin]),
            b: bias.then(|| wt.take(&format!("{name}.bias"), &[cout])),
        }
    }
    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.matmul(&self.w.to_kind(x.kind()).tr());
        match &self.b {
            Some(b) => y + b.to_kind(x.kind()),
            None => y,
        }
    }
}

/// EDM `Conv2d`: optional FIR up/downsampling (the `resample_filter` buffer, f⊗f / (Σf)²) before
/// an optional k×k convolution; `fused` runs the filter after the convolution when downsampling
/// (NCSN++'s residual encoder branch) and before it when upsampling.
pub(super) struct Conv2d {
    w: Option<Tensor>,
    b: Option<Tensor>,
    /// Transposed-convolution weight for ×2 upsampling: 4·f per input channel.
    up_filter: Option<Tensor>,
    /// Depthwise weight for ×2 downsampling: f per channel.
    down_filter: Option<Tensor>,
    fused: bool,
    w_pad: i64,
    f_pad: i64,
    cin: i64,
    cout: i64,
}

/// Geometry of one [`Conv2d`]: `kernel` 0 means resampling only (no weight, no bias).
#[derive(Clone, Copy)]
pub(super) struct ConvSpec {
    pub kernel: i64,
    pub bias: bool,
    pub up: bool,
    pub down: bool,
    pub fused: bool,
    /// Number of taps of the 1-D resampling filter (2 for [1,1], 4 for [1,3,3,1]).
    pub filter_taps: i64,
}

impl ConvSpec {
    pub(super) fn plain(kernel: i64) -> Self {
        ConvSpec { kernel, bias: true, up: false, down: false, fused: false, filter_taps: 2 }
    }
}

impl Conv2d {
    pub(super) fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64, s: ConvSpec) -> Self {
        let k = s.kernel;
        let w = (k > 0).then(|| wt.take(&format!("{name}.weight"), &[cout, cin, k, k]));
        let b = (k > 0 && s.bias).then(|| wt.take(&format!("{name}.bias"), &[cout]));
        let f = (s.up || s.down).then(|| wt.take(&format!("{name}.resample_filter"), &[1, 1, s.filter_taps, s.filter_taps]));
        let fused = s.fused && w.is_some();
        let up_filter = f.as_ref().filter(|_| s.up).map(|f| (f * 4).tile([cin, 1, 1, 1]));
        // Fused downsampling filters the convolution's output channels, plain the input's.
        let down_channels = if fused { cout } else { cin };
        let down_filter = f.as_ref().filter(|_| s.down).map(|f| f.tile([down_channels, 1, 1, 1]));
        Conv2d { w, b, up_filter, down_filter, fused, w_pad: k / 2, f_pad: (s.filter_taps - 1) / 2, cin, cout }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        let (w_pad, f_pad) = (self.w_pad, self.f_pad);
        let k = x.kind();
        let mut x = x.shallow_clone();
        let w = self.w.as_ref().map(|w| w.to_kind(k));
        let uf = self.up_filter.as_ref().map(|f| f.to_kind(k));
        let df = self.down_filter.as_ref().map(|f| f.to_kind(k));
        match (&w, &uf, &df) {
            (Some(w), Some(uf), _) if self.fused => {
                x = x.conv_transpose2d(uf, None::<Tensor>, [2], [(f_pad - w_pad).max(0)], [0], self.cin, [1]);
                x = x.conv2d(w, None::<Tensor>, [1], [(w_pad - f_pad).max(0)], [1], 1);
            }
            (Some(w), _, Some(df)) if self.fused => {
                x = x.conv2d(w, None::<Tensor>, [1], [w_pad + f_pad], [1], 1);
                x = x.conv2d(df, None::<Tensor>, [2], [0], [1], self.cout);
            }
            _ => {
                if let Some(uf) = &uf {
                    x = x.conv_transpose2d(uf, None::<Tensor>, [2], [f_pad], [0], self.cin, [1]);
                }
                if let Some(df) = &df {
                    x = x.conv2d(df, None::<Tensor>, [2], [f_pad], [1], self.cin);
                }
                if let Some(w) = &w {
                    x = x.conv2d(w, None::<Tensor>, [1], [w_pad], [1], 1);
                }
            }
        }
        match &self.b {
            Some(b) => x + b.to_kind(k).reshape([1, -1, 1, 1]),
            None => x,
        }
    }
}

/// EDM `GroupNorm`: min(32, C/4) groups.
pub(super) struct GroupNorm {
    w: Tensor,
    b: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub(super) fn new(wt: &mut WeightTaker, name: &str, c: i64, eps: f64) -> Result<Self> {
        let groups = (c / 4).min(32);
        if groups < 1 || c % groups != 0 {
            return Err(BenchError::user(format!(
                "`{name}`: {c} channels cannot be split into min(32, {c}/4) = {groups} equal groups"
            )));
        }
        Ok(GroupNorm {
            w: wt.take(&format!("{name}.weight"), &[c]),
            b: wt.take(&format!("{name}.bias"), &[c]),
            groups,
            eps,
        })
    }
    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        let k = x.kind();
        x.group_norm(self.groups, Some(&self.w.to_kind(k)), Some(&self.b.to_kind(k)), self.eps, false)
    }
}

/// Settings shared by every [`UNetBlock`] of one network (EDM's `block_kwargs`).
#[derive(Clone, Copy)]
pub(super) struct BlockSpec {
    pub emb_channels: i64,
    /// Heads of attention blocks; `None`: out_channels / channels_per_head.
    pub num_heads: Option<i64>,
    pub channels_per_head: i64,
    pub skip_scale: f64,
    pub eps: f64,
    pub filter_taps: i64,
    /// 1×1 projection on the resampled skip path even when channels do not change.
    pub resample_proj: bool,
    /// Embedding as scale and shift after the second norm (ADM) instead of an added bias.
    pub adaptive_scale: bool,
}

struct Attention {
    norm2: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    heads: i64,
}

/// EDM `UNetBlock`: the residual block of DDPM++, NCSN++ and ADM, with optional up/downsampling
/// and self-attention.
pub(super) struct UNetBlock {
    pub in_channels: i64,
    norm0: GroupNorm,
    conv0: Conv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    skip: Option<Conv2d>,
    attention: Option<Attention>,
    adaptive_scale: bool,
    skip_scale: f64,
}

/// Where a block resamples: `Up`/`Down` by 2, or not at all.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Resample {
    None,
    Up,
    Down,
}

impl UNetBlock {
    pub(super) fn new(
        wt: &mut WeightTaker,
        name: &str,
        cin: i64,
        cout: i64,
        resample: Resample,
        attention: bool,
        s: &BlockSpec,
    ) -> Result<Self> {
        let (up, down) = (resample == Resample::Up, resample == Resample::Down);
        let heads = if attention { s.num_heads.unwrap_or(cout / s.channels_per_head) } else { 0 };
        let conv = |kernel| ConvSpec { kernel, bias: true, up, down, fused: false, filter_taps: s.filter_taps };
        let norm0 = GroupNorm::new(wt, &format!("{name}.norm0"), cin, s.eps)?;
        let conv0 = Conv2d::new(wt, &format!("{name}.conv0"), cin, cout, conv(3));
        let affine = Linear::new(wt, &format!("{name}.affine"), s.emb_channels, cout * if s.adaptive_scale { 2 } else { 1 }, true);
        let norm1 = GroupNorm::new(wt, &format!("{name}.norm1"), cout, s.eps)?;
        let conv1 = Conv2d::new(wt, &format!("{name}.conv1"), cout, cout, ConvSpec::plain(3));
        let skip = (cout != cin || up || down).then(|| {
            let kernel = if s.resample_proj || cout != cin { 1 } else { 0 };
            Conv2d::new(wt, &format!("{name}.skip"), cin, cout, conv(kernel))
        });
        let attention = if heads > 0 {
            if cout % heads != 0 {
                return Err(BenchError::user(format!("`{name}`: {cout} channels do not split into {heads} attention heads")));
            }
            Some(Attention {
                norm2: GroupNorm::new(wt, &format!("{name}.norm2"), cout, s.eps)?,
                qkv: Conv2d::new(wt, &format!("{name}.qkv"), cout, cout * 3, ConvSpec::plain(1)),
                proj: Conv2d::new(wt, &format!("{name}.proj"), cout, cout, ConvSpec::plain(1)),
                heads,
            })
        } else {
            None
        };
        Ok(UNetBlock {
            in_channels: cin,
            norm0,
            conv0,
            affine,
            norm1,
            conv1,
            skip,
            attention,
            adaptive_scale: s.adaptive_scale,
            skip_scale: s.skip_scale,
        })
    }

    pub(super) fn forward(&self, x: &Tensor, emb: &Tensor) -> Tensor {
        let orig = x;
        let mut x = self.conv0.forward(&self.norm0.forward(x).silu());
        let params = self.affine.forward(emb).unsqueeze(2).unsqueeze(3).to_kind(x.kind());
        if self.adaptive_scale {
            let halves = params.chunk(2, 1);
            let (scale, shift) = (&halves[0], &halves[1]);
            x = shift.addcmul(&self.norm1.forward(&x), &(scale + 1.0)).silu();
        } else {
            x = self.norm1.forward(&(x + params)).silu();
        }
        // Dropout is the identity at inference.
        x = self.conv1.forward(&x);
        x = match &self.skip {
            Some(s) => x + s.forward(orig),
            None => x + orig,
        };
        x = x * self.skip_scale;
        if let Some(a) = &self.attention {
            let size = x.size();
            let (b, c) = (size[0], size[1]);
            // Channels are laid out as [head, channel-in-head, (q, k, v)].
            let qkv = a.qkv.forward(&a.norm2.forward(&x)).reshape([b * a.heads, c / a.heads, 3, -1]);
            let qkv = qkv.unbind(2);
            let (q, k, v) = (&qkv[0], &qkv[1], &qkv[2]);
            // EDM `AttentionOp`: softmax(qᵀk/√d) in fp32 whatever the activations' precision.
            let scale = ((c / a.heads) as f64).sqrt();
            let logits = Tensor::einsum(
                "ncq,nck->nqk",
                &[q.to_kind(Kind::Float), (k / scale).to_kind(Kind::Float)],
                None::<i64>,
            );
            let w = logits.softmax(2, Kind::Float).to_kind(q.kind());
            let attn = Tensor::einsum("nqk,nck->ncq", &[&w, v], None::<i64>);
            x = a.proj.forward(&attn.reshape(size.as_slice())) + &x;
            x = x * self.skip_scale;
        }
        x
    }
}

/// The noise-level embedding: DDPM++/ADM sinusoids or NCSN++ random Fourier features; both
/// return `[cos, sin]` of the same arguments.
pub(super) enum NoiseEmbedding {
    /// EDM `PositionalEmbedding`: frequencies (1/max_positions)^(i / (C/2 − endpoint)).
    Positional { channels: i64, max_positions: f64, endpoint: bool },
    /// EDM `FourierEmbedding`: the `freqs` buffer, here already multiplied by 2π.
    Fourier { freqs_2pi: Tensor },
}

impl NoiseEmbedding {
    pub(super) fn fourier(wt: &mut WeightTaker, name: &str, channels: i64) -> Self {
        let freqs = wt.take(&format!("{name}.freqs"), &[channels / 2]);
        NoiseEmbedding::Fourier { freqs_2pi: freqs * (2.0 * std::f64::consts::PI) }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        let x = match self {
            NoiseEmbedding::Positional { channels, max_positions, endpoint } => {
                let half = channels / 2;
                let freqs = Tensor::arange(half, (Kind::Float, x.device())) / (half - i64::from(*endpoint));
                let freqs = Tensor::pow_scalar(1.0 / max_positions, &freqs);
                x.outer(&freqs.to_kind(x.kind()))
            }
            NoiseEmbedding::Fourier { freqs_2pi } => x.outer(&freqs_2pi.to_kind(x.kind())),
        };
        Tensor::cat(&[x.cos(), x.sin()], 1)
    }
}
