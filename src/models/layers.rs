//! The building blocks diffusers' UNets and autoencoders share, as functional tch: weights are
//! plain tensors taken by name from a [`WeightTaker`], and each `forward` is the diffusers
//! module's forward at inference (dropout is the identity). Names follow diffusers' state dicts.
//!
//! Shapes are fixed at construction from the config and checked against the file, and callers
//! validate inputs at their entry points, so the ops below cannot meet a mismatched shape.
use super::weights::WeightTaker;
use tch::{Kind, Tensor};

pub(crate) struct Conv {
    w: Tensor,
    b: Option<Tensor>,
    stride: i64,
    padding: i64,
}
impl Conv {
    pub(crate) fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Self {
        Conv {
            w: wt.take(&format!("{name}.weight"), &[cout, cin, k, k]),
            b: Some(wt.take(&format!("{name}.bias"), &[cout])),
            stride,
            padding,
        }
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.w, self.b.as_ref(), [self.stride], [self.padding], [1], 1)
    }
}

pub(crate) struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}
impl Linear {
    pub(crate) fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64) -> Self {
        Self::with_bias(wt, name, cin, cout, true)
    }
    pub(crate) fn with_bias(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64, bias: bool) -> Self {
        Linear {
            w: wt.take(&format!("{name}.weight"), &[cout, cin]),
            b: bias.then(|| wt.take(&format!("{name}.bias"), &[cout])),
        }
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, self.b.as_ref())
    }
}

pub(crate) struct GroupNorm {
    w: Tensor,
    b: Tensor,
    groups: i64,
    eps: f64,
}
impl GroupNorm {
    pub(crate) fn new(wt: &mut WeightTaker, name: &str, c: i64, groups: i64, eps: f64) -> Self {
        if groups <= 0 || c % groups != 0 {
            wt.inconsistent(format!("{name}: {groups} groups do not divide {c} channels (norm_num_groups)"));
        }
        GroupNorm { w: wt.take(&format!("{name}.weight"), &[c]), b: wt.take(&format!("{name}.bias"), &[c]), groups, eps }
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(self.groups, Some(&self.w), Some(&self.b), self.eps, true)
    }
}

pub(crate) struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}
impl LayerNorm {
    pub(crate) fn new(wt: &mut WeightTaker, name: &str, c: i64, eps: f64) -> Self {
        LayerNorm { w: wt.take(&format!("{name}.weight"), &[c]), b: wt.take(&format!("{name}.bias"), &[c]), eps }
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let c = self.w.size()[0];
        x.layer_norm([c], Some(&self.w), Some(&self.b), self.eps, true)
    }
}

/// Nearest-neighbour 2× upsampling to `size` (diffusers `Upsample2D` without its conv). An exact
/// 2× takes the scale-factor path `F.interpolate(scale_factor=2)` takes; other sizes (odd
/// skip resolutions in UNet2DConditionModel) the size path.
pub(crate) fn upsample_nearest(x: &Tensor, size: [i64; 2]) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    if size == [2 * h, 2 * w] {
        x.upsample_nearest2d(size, 2.0, 2.0)
    } else {
        x.upsample_nearest2d(size, None, None)
    }
}

/// How a ResNet block changes resolution, when it does (diffusers `ResnetBlock2D(up/down)`):
/// both the residual and the main path are resampled after the first norm and activation.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum ResnetResample {
    /// Nearest-neighbour 2× (`Upsample2D(use_conv=False)`).
    Up,
    /// 2×2 average pooling (`Downsample2D(use_conv=False)`).
    Down,
}

pub(crate) struct ResBlockSpec {
    pub cin: i64,
    pub cout: i64,
    /// Width of the time embedding, when the block is conditioned on one.
    pub temb: Option<i64>,
    pub groups: i64,
    pub eps: f64,
    /// AdaGN (`resnet_time_scale_shift: scale_shift`, Dhariwal & Nichol 2021 §3): the embedding
    /// gives a per-channel scale and shift applied after the second GroupNorm, instead of a bias
    /// added before it.
    pub scale_shift: bool,
    pub out_scale: f64,
    pub resample: Option<ResnetResample>,
}

/// ResNet block (Ho et al. 2020 App. B; diffusers `ResnetBlock2D`).
pub(crate) struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv,
    temb: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv,
    shortcut: Option<Conv>,
    scale_shift: bool,
    out_scale: f64,
    resample: Option<ResnetResample>,
}
impl ResBlock {
    pub(crate) fn new(wt: &mut WeightTaker, name: &str, s: ResBlockSpec) -> Self {
        let temb_out = if s.scale_shift { 2 * s.cout } else { s.cout };
        ResBlock {
            norm1: GroupNorm::new(wt, &format!("{name}.norm1"), s.cin, s.groups, s.eps),
            conv1: Conv::new(wt, &format!("{name}.conv1"), s.cin, s.cout, 3, 1, 1),
            temb: s.temb.map(|t| Linear::new(wt, &format!("{name}.time_emb_proj"), t, temb_out)),
            norm2: GroupNorm::new(wt, &format!("{name}.norm2"), s.cout, s.groups, s.eps),
            conv2: Conv::new(wt, &format!("{name}.conv2"), s.cout, s.cout, 3, 1, 1),
            shortcut: (s.cin != s.cout).then(|| Conv::new(wt, &format!("{name}.conv_shortcut"), s.cin, s.cout, 1, 1, 0)),
            scale_shift: s.scale_shift,
            out_scale: s.out_scale,
            resample: s.resample,
        }
    }

    /// `emb_act` is SiLU(time embedding): every block applies SiLU before its projection, so the
    /// caller does it once per forward.
    pub(crate) fn forward(&self, x: &Tensor, emb_act: Option<&Tensor>) -> Tensor {
        let h = self.norm1.forward(x).silu();
        let resample = |t: &Tensor| match self.resample {
            None => t.shallow_clone(),
            Some(ResnetResample::Up) => {
                let (hh, ww) = (t.size()[2], t.size()[3]);
                upsample_nearest(t, [2 * hh, 2 * ww])
            }
            Some(ResnetResample::Down) => t.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>),
        };
        let (x, h) = (resample(x), resample(&h));
        let mut h = self.conv1.forward(&h);
        let t = match (&self.temb, emb_act) {
            (Some(lin), Some(e)) => Some(lin.forward(e).unsqueeze(-1).unsqueeze(-1)),
            _ => None,
        };
        h = match (self.scale_shift, t) {
            (true, Some(t)) => {
                let st = t.chunk(2, 1);
                self.norm2.forward(&h) * (&st[0] + 1.0) + &st[1]
            }
            (false, Some(t)) => self.norm2.forward(&(h + t)),
            (_, None) => self.norm2.forward(&h),
        };
        let h = self.conv2.forward(&h.silu());
        let skip = match &self.shortcut {
            Some(c) => c.forward(&x),
            None => x,
        };
        let out = skip + h;
        if self.out_scale == 1.0 {
            out
        } else {
            out / self.out_scale
        }
    }
}

/// Multi-head attention of a sequence [B, L, C] over itself or a context [B, S, D]
/// (diffusers `Attention` with `AttnProcessor2_0`: softmax(QKᵀ/√d)V through libtorch's
/// scaled_dot_product_attention, which is what diffusers calls).
pub(crate) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: i64,
}
impl Attention {
    pub(crate) fn new(
        wt: &mut WeightTaker,
        name: &str,
        query_dim: i64,
        context_dim: i64,
        heads: i64,
        dim_head: i64,
        qkv_bias: bool,
    ) -> Self {
        let inner = heads * dim_head;
        Attention {
            q: Linear::with_bias(wt, &format!("{name}.to_q"), query_dim, inner, qkv_bias),
            k: Linear::with_bias(wt, &format!("{name}.to_k"), context_dim, inner, qkv_bias),
            v: Linear::with_bias(wt, &format!("{name}.to_v"), context_dim, inner, qkv_bias),
            out: Linear::new(wt, &format!("{name}.to_out.0"), inner, query_dim),
            heads,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Tensor {
        let context = context.unwrap_or(x);
        let q = self.q.forward(x);
        let k = self.k.forward(context);
        let v = self.v.forward(context);
        let (b, inner) = (q.size()[0], q.size()[2]);
        let d = inner / self.heads;
        let split = |t: Tensor| t.view([b, -1, self.heads, d]).transpose(1, 2);
        let a = Tensor::scaled_dot_product_attention(&split(q), &split(k), &split(v), None::<Tensor>, 0.0, false, None, false);
        self.out.forward(&a.transpose(1, 2).reshape([b, -1, inner]))
    }
}

/// Spatial self-attention with a residual (diffusers `Attention(_from_deprecated_attn_block)`,
/// the DDPM/ADM `AttnBlock`): optional GroupNorm, attention over the H·W positions, residual,
/// division by `rescale_output_factor`.
pub(crate) struct SpatialAttention {
    norm: Option<GroupNorm>,
    attn: Attention,
    out_scale: f64,
}
impl SpatialAttention {
    /// `norm`: (groups, eps) of the GroupNorm, or None where diffusers builds none.
    pub(crate) fn new(wt: &mut WeightTaker, name: &str, c: i64, heads: i64, norm: Option<(i64, f64)>, out_scale: f64) -> Self {
        SpatialAttention {
            norm: norm.map(|(g, eps)| GroupNorm::new(wt, &format!("{name}.group_norm"), c, g, eps)),
            attn: Attention::new(wt, name, c, c, heads, c / heads, true),
            out_scale,
        }
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = (x.size()[0], x.size()[1], x.size()[2], x.size()[3]);
        let normed = match &self.norm {
            Some(n) => n.forward(x),
            None => x.shallow_clone(),
        };
        let seq = normed.reshape([b, c, h * w]).transpose(1, 2);
        let a = self.attn.forward(&seq, None);
        let out = a.transpose(1, 2).reshape([b, c, h, w]) + x;
        if self.out_scale == 1.0 {
            out
        } else {
            out / self.out_scale
        }
    }
}

/// Heads of a diffusers spatial attention block: `channels // attention_head_dim`, one head
/// over all channels when the head width is unset.
pub(crate) fn spatial_heads(channels: i64, head_dim: Option<i64>) -> std::result::Result<i64, String> {
    match head_dim {
        None => Ok(1),
        Some(d) if d > 0 && channels % d == 0 => Ok(channels / d),
        Some(d) => Err(format!("attention_head_dim {d} does not divide the {channels} channels of an attention block")),
    }
}

/// The MLP on the sinusoidal/Fourier features (diffusers `TimestepEmbedding`, act SiLU).
pub(crate) struct TimestepEmbedding {
    l1: Linear,
    l2: Linear,
}
impl TimestepEmbedding {
    pub(crate) fn new(wt: &mut WeightTaker, name: &str, cin: i64, cout: i64) -> Self {
        TimestepEmbedding {
            l1: Linear::new(wt, &format!("{name}.linear_1"), cin, cout),
            l2: Linear::new(wt, &format!("{name}.linear_2"), cout, cout),
        }
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).silu())
    }
}

/// Sinusoidal embedding of (possibly fractional) labels t [B], computed in f32 as both
/// references do (DDPM `get_timestep_embedding`; diffusers `get_timestep_embedding` with
/// `downscale_freq_shift` and `flip_sin_to_cos`).
pub(crate) fn sinusoidal_embedding(t: &Tensor, dim: i64, flip_sin_to_cos: bool, freq_shift: f64) -> Tensor {
    let half = dim / 2;
    let freqs =
        (Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln())) / (half as f64 - freq_shift)).exp();
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    let (sin, cos) = (args.sin(), args.cos());
    let emb = if flip_sin_to_cos { Tensor::cat(&[cos, sin], 1) } else { Tensor::cat(&[sin, cos], 1) };
    if dim % 2 == 1 {
        emb.constant_pad_nd([0, 1, 0, 0])
    } else {
        emb
    }
}

/// Random Fourier features of log σ (Song et al. 2021, NCSN++; diffusers
/// `GaussianFourierProjection(log=True, flip_sin_to_cos=False)`), in f32.
pub(crate) fn fourier_embedding(t: &Tensor, weight: &Tensor) -> Tensor {
    let x = t.to_kind(Kind::Float).log().unsqueeze(1) * weight.to_kind(Kind::Float).unsqueeze(0) * (2.0 * std::f64::consts::PI);
    Tensor::cat(&[x.sin(), x.cos()], 1)
}

/// How a UNet adds a class (or other per-sample) label to its time embedding (diffusers
/// `class_embed_type` / `num_class_embeds`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum ClassEmbedding {
    /// Unconditional.
    None,
    /// A learned table of `n` class vectors indexed by integer labels [B]
    /// (`num_class_embeds` with `class_embed_type: null`).
    Table(i64),
    /// Labels [B] embedded like timesteps, through their own MLP (`class_embed_type: timestep`).
    Timestep,
    /// Labels are already [B, time_embed_dim] vectors (`class_embed_type: identity`).
    Identity,
}

/// The weights and forward of a [`ClassEmbedding`].
pub(crate) enum ClassEmbedder {
    None,
    Table(Tensor),
    Timestep(TimestepEmbedding),
    Identity(i64),
}
impl ClassEmbedder {
    /// `time_input_dim`: width of the time projection (the Timestep variant's MLP input).
    pub(crate) fn new(wt: &mut WeightTaker, kind: &ClassEmbedding, time_input_dim: i64, temb: i64) -> Self {
        match kind {
            ClassEmbedding::None => ClassEmbedder::None,
            ClassEmbedding::Table(n) => ClassEmbedder::Table(wt.take("class_embedding.weight", &[*n, temb])),
            ClassEmbedding::Timestep => {
                ClassEmbedder::Timestep(TimestepEmbedding::new(wt, "class_embedding", time_input_dim, temb))
            }
            ClassEmbedding::Identity => ClassEmbedder::Identity(temb),
        }
    }

    /// Checks labels against what the embedding needs, for a batch of `batch` samples.
    pub(crate) fn check(&self, labels: Option<&Tensor>, batch: i64) -> std::result::Result<(), String> {
        let integer = |k: Kind| matches!(k, Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8);
        match (self, labels) {
            (ClassEmbedder::None, None) => Ok(()),
            (ClassEmbedder::None, Some(_)) => {
                Err("class labels were given but the model is not class-conditional (no num_class_embeds / class_embed_type)".into())
            }
            (_, None) => Err("the model is class-conditional: class labels are required".into()),
            (ClassEmbedder::Table(w), Some(l)) => {
                let n = w.size()[0];
                if !integer(l.kind()) || l.size() != [batch] {
                    return Err(format!("class labels must be {batch} integers, got {:?} of shape {:?}", l.kind(), l.size()));
                }
                let (lo, hi) = (l.min().int64_value(&[]), l.max().int64_value(&[]));
                if lo < 0 || hi >= n {
                    return Err(format!("class labels must lie in 0..{n} (num_class_embeds), got {lo}..={hi}"));
                }
                Ok(())
            }
            (ClassEmbedder::Timestep(_), Some(l)) if l.size() != [batch] => {
                Err(format!("class labels must have shape [{batch}], got {:?}", l.size()))
            }
            (ClassEmbedder::Timestep(_), Some(_)) => Ok(()),
            (ClassEmbedder::Identity(d), Some(l)) => {
                if l.size() != [batch, *d] || !l.is_floating_point() {
                    Err(format!("class embeddings must be floats of shape [{batch}, {d}], got {:?} {:?}", l.kind(), l.size()))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The class embedding in `kind`, to add to the time embedding; `time_proj` is the model's
    /// own time projection (the Timestep variant embeds labels with it). Labels are on the
    /// model's device and passed [`check`](Self::check).
    pub(crate) fn forward(&self, labels: Option<&Tensor>, kind: Kind, time_proj: impl Fn(&Tensor) -> Tensor) -> Option<Tensor> {
        let l = labels?;
        match self {
            ClassEmbedder::None => None,
            ClassEmbedder::Table(w) => Some(Tensor::embedding(w, &l.to_kind(Kind::Int64), -1, false, false)),
            ClassEmbedder::Timestep(mlp) => Some(mlp.forward(&time_proj(l).to_kind(kind))),
            ClassEmbedder::Identity(_) => Some(l.to_kind(kind)),
        }
    }
}
