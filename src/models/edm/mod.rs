//! NVlabs/edm networks (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
//! Generative Models") from their `network-snapshot-*.pkl` files, in native tch.
//!
//! The pickle is read as data ([`crate::checkpoint::persistence`]): the preconditioner object
//! under `ema` gives the preconditioning and its constants, its `model` the architecture
//! (`SongUNet` for DDPM++/NCSN++, `DhariwalUNet` for ADM) through its constructor arguments, and
//! every parameter and buffer by its state-dict name, checked in both directions.
//!
//! [`EdmNetwork::denoise`] is D(x; σ), the denoiser of EDM Eq. 7: the clean-image estimate x̂₀.
mod config;
pub mod dhariwal_unet;
mod layers;
pub mod precond;
pub mod sampler;
pub mod song_unet;

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, persistence, Object, Value};
use crate::models::weights::{WeightSource, WeightTaker};
use crate::{BenchError, Result};
use config::Kwargs;
use dhariwal_unet::{DhariwalUNet, DhariwalUNetConfig};
use precond::{Coefficients, Preconditioning};
use song_unet::{SongUNet, SongUNetConfig};

/// The network F inside the preconditioning.
pub enum Backbone {
    /// DDPM++ / NCSN++.
    Song(SongUNet),
    /// ADM.
    Dhariwal(DhariwalUNet),
}

impl Backbone {
    pub fn class_name(&self) -> &'static str {
        match self {
            Backbone::Song(_) => "SongUNet",
            Backbone::Dhariwal(_) => "DhariwalUNet",
        }
    }
    fn levels(&self) -> usize {
        match self {
            Backbone::Song(n) => n.config.channel_mult.len(),
            Backbone::Dhariwal(n) => n.config.channel_mult.len(),
        }
    }
    fn augment_dim(&self) -> i64 {
        match self {
            Backbone::Song(n) => n.config.augment_dim,
            Backbone::Dhariwal(n) => n.config.augment_dim,
        }
    }
}

/// An EDM network: preconditioning plus backbone, ready to denoise.
pub struct EdmNetwork {
    pub precond: Preconditioning,
    pub backbone: Backbone,
    img_resolution: i64,
    img_channels: i64,
    label_dim: i64,
    sigma_min: f64,
    sigma_max: f64,
    use_fp16: bool,
    device: Device,
    kind: Kind,
    source: String,
    parameters: i64,
}

/// The attribute `name` of a pickled object, as a number / integer.
fn attr_f64(o: &Object, name: &str, what: &str) -> Result<f64> {
    match o.attr(name) {
        Some(Value::Float(f)) => Ok(*f),
        Some(Value::Int(i)) => Ok(*i as f64),
        Some(v) => Err(BenchError::user(format!("{what}: attribute `{name}` is a {}, expected a number", v.kind()))),
        None => Err(BenchError::user(format!("{what}: attribute `{name}` is missing"))),
    }
}
fn attr_i64(o: &Object, name: &str, what: &str) -> Result<i64> {
    match o.attr(name) {
        Some(Value::Int(i)) if *i >= 0 => Ok(*i),
        Some(v) => Err(BenchError::user(format!("{what}: attribute `{name}` is a {}, expected a non-negative integer", v.kind()))),
        None => Err(BenchError::user(format!("{what}: attribute `{name}` is missing"))),
    }
}

impl EdmNetwork {
    /// Reads an EDM pickle (a training snapshot dict with `ema`, or a pickled network object)
    /// without running any of it. Weights stay fp32 as in EDM; `kind` is the dtype the backbone
    /// runs in (`Kind::Half` is what EDM's `use_fp16` does on CUDA), the preconditioning is fp32.
    pub fn load_pickle(path: &Path, device: Device, kind: Kind) -> Result<Self> {
        if !path.is_file() {
            return Err(BenchError::file(path, "EDM network pickle not found"));
        }
        let root = checkpoint::load_object_pickle(path)?;
        Self::from_snapshot(&root, &path.display().to_string(), device, kind)
    }

    /// Builds the network from an already loaded pickle; `source` names it in errors.
    pub fn from_snapshot(root: &Value, source: &str, device: Device, kind: Kind) -> Result<Self> {
        if !matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double) {
            return Err(BenchError::user(format!("{source}: EDM networks run in fp32, fp16, bf16 or fp64, not {kind:?}")));
        }
        let err = |m: String| BenchError::user(format!("{source}: {m}"));
        let ema = match root {
            Value::Dict(_) => root.at("ema").map_err(|m| err(format!("not an EDM network snapshot: {m}")))?,
            Value::Object(_) => root,
            other => return Err(err(format!("expected an EDM snapshot (a dict with `ema`) or a network, found a {}", other.kind()))),
        };
        let Value::Object(net) = ema else {
            return Err(err(format!("`ema` is a {}, not a pickled network", ema.kind())));
        };
        let what = format!("{source}: {}", net.class);
        let f = |name: &str| attr_f64(net, name, &what);
        let i = |name: &str| attr_i64(net, name, &what);
        const PRECONDS: [&str; 4] = ["EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond"];
        let unsupported = || err(format!("`ema` is a {}; supported preconditioners: {}", net.class, PRECONDS.join(", ")));
        // Checked before walking the object as a module, so any other object gets this message.
        if !PRECONDS.contains(&net.class.as_str()) {
            return Err(unsupported());
        }
        let mut tensors = persistence::module_tensors(ema).map_err(|m| err(format!("`ema`: {m}")))?;
        let precond = match net.class.as_str() {
            "EDMPrecond" => Preconditioning::Edm { sigma_data: f("sigma_data")? },
            "VPPrecond" => Preconditioning::Vp { beta_d: f("beta_d")?, beta_min: f("beta_min")?, m: i("M")?, epsilon_t: f("epsilon_t")? },
            "VEPrecond" => Preconditioning::Ve,
            "iDDPMPrecond" => {
                let m = i("M")?;
                let u = tensors.remove("u").ok_or_else(|| err("iDDPMPrecond without its `u` buffer".into()))?;
                if u.size() != [m + 1] || u.kind() != Kind::Float {
                    return Err(err(format!("iDDPMPrecond buffer `u` is {:?} {:?}, expected [{}] float32", u.size(), u.kind(), m + 1)));
                }
                Preconditioning::Iddpm { m, c_1: f("C_1")?, c_2: f("C_2")?, u: u.to_device(device) }
            }
            _ => return Err(unsupported()),
        };
        if let Preconditioning::Vp { m, .. } | Preconditioning::Iddpm { m, .. } = &precond {
            if *m < 2 {
                return Err(err(format!("{}: M = {m} must be at least 2", net.class)));
            }
        }
        let img_resolution = i("img_resolution")?;
        let img_channels = i("img_channels")?;
        let label_dim = i("label_dim")?;
        let use_fp16 = matches!(net.attr("use_fp16"), Some(Value::Bool(true)));
        let (sigma_min, sigma_max) = (f("sigma_min")?, f("sigma_max")?);

        let Some(Value::Object(model)) = net.attr("model") else {
            return Err(err(format!("{} has no `model` network", net.class)));
        };
        let kwargs_value = model.attr("_init_kwargs").unwrap_or(&Value::None);
        let mut kw = Kwargs::new(format!("{source}: {} arguments (ema.model._init_kwargs)", model.class), kwargs_value)?;
        let mut wt = WeightTaker::new(WeightSource::from_state_dict(tensors, source), device, Kind::Float);
        let backbone = match model.class.as_str() {
            "SongUNet" => Backbone::Song(SongUNet::new(SongUNetConfig::from_kwargs(&mut kw)?, &mut wt, "model.")?),
            "DhariwalUNet" => Backbone::Dhariwal(DhariwalUNet::new(DhariwalUNetConfig::from_kwargs(&mut kw)?, &mut wt, "model.")?),
            other => return Err(err(format!("`ema.model` is a {other}; supported: SongUNet, DhariwalUNet"))),
        };
        // EDM's buffers are the FIR filters and Fourier frequencies; everything else is a parameter.
        let parameters = wt
            .requested
            .iter()
            .filter(|(name, _)| !name.ends_with(".resample_filter") && !name.ends_with(".freqs"))
            .map(|(_, s)| s.iter().product::<i64>())
            .sum();
        wt.finish(&format!("{} {} configuration", net.class, model.class), &[])?;

        // The preconditioner built its model from its own arguments: they must agree.
        let (res, cin, cout, ldim) = match &backbone {
            Backbone::Song(n) => (n.config.img_resolution, n.config.in_channels, n.config.out_channels, n.config.label_dim),
            Backbone::Dhariwal(n) => (n.config.img_resolution, n.config.in_channels, n.config.out_channels, n.config.label_dim),
        };
        // iDDPM's network also predicts the variance: twice the channels, the first half is used.
        let want_out = if matches!(precond, Preconditioning::Iddpm { .. }) { 2 * img_channels } else { img_channels };
        if (res, cin, cout, ldim) != (img_resolution, img_channels, want_out, label_dim) {
            return Err(err(format!(
                "the {} (resolution {res}, channels {cin}→{cout}, label_dim {ldim}) does not fit its {} (resolution {img_resolution}, {img_channels} channels, label_dim {label_dim})",
                model.class, net.class
            )));
        }
        Ok(EdmNetwork {
            precond,
            backbone,
            img_resolution,
            img_channels,
            label_dim,
            sigma_min,
            sigma_max,
            use_fp16,
            device,
            kind,
            source: source.to_string(),
            parameters,
        })
    }

    pub fn resolution(&self) -> i64 {
        self.img_resolution
    }
    pub fn channels(&self) -> i64 {
        self.img_channels
    }
    /// Number of classes; 0 for an unconditional network.
    pub fn label_dim(&self) -> i64 {
        self.label_dim
    }
    /// Dimension of the augmentation labels the network was trained with (0: none).
    pub fn augment_dim(&self) -> i64 {
        self.backbone.augment_dim()
    }
    /// Lowest noise level the network supports (the preconditioner's `sigma_min`; VP: σ(ε_t),
    /// iDDPM: u_{M−1}, VE 0.02, EDM 0 by default).
    pub fn sigma_min(&self) -> f64 {
        self.sigma_min
    }
    /// Highest noise level the network supports (VP: σ(1), iDDPM: u_0, VE 100, EDM ∞ by default).
    pub fn sigma_max(&self) -> f64 {
        self.sigma_max
    }
    /// Whether EDM would run the backbone in fp16 on CUDA (`use_fp16`); [`Self::load_pickle`]'s
    /// `kind` decides here.
    pub fn use_fp16(&self) -> bool {
        self.use_fp16
    }
    /// Number of trainable parameters (buffers excluded), as `sum(p.numel() for p in net.parameters())`.
    pub fn parameter_count(&self) -> i64 {
        self.parameters
    }
    pub fn describe(&self) -> String {
        format!("edm:{}+{}:{}", self.precond.class_name(), self.backbone.class_name(), self.source)
    }

    /// σ snapped to what the network was trained on (iDDPM's discrete levels; else unchanged),
    /// in σ's dtype and device: EDM's `round_sigma`.
    pub fn round_sigma(&self, sigma: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        self.precond.round_sigma(sigma)
    }

    /// The preconditioning's c_skip, c_out, c_in, c_noise at `sigma` (fp32, σ's shape).
    pub fn coefficients(&self, sigma: &Tensor) -> Coefficients {
        let _guard = tch::no_grad_guard();
        self.precond.coefficients(&sigma.to_device(self.device))
    }

    /// D(x; σ): the denoised estimate x̂₀ (EDM Eq. 7 with the preconditioning's c's). `x` is
    /// [B, C, H, W] (H, W divisible by 2^(levels−1)), `sigma` has B entries or one, class labels
    /// are [B, label_dim] (or one row; omitted: zeros, as EDM does) and only for conditional
    /// networks. The result has x's shape, dtype and device; internally x is rounded to fp32
    /// first, as EDM does.
    pub fn denoise(&self, x: &Tensor, sigma: &Tensor, class_labels: Option<&Tensor>) -> Result<Tensor> {
        self.denoise_with_augment(x, sigma, class_labels, None)
    }

    /// [`Self::denoise`] with EDM's augmentation labels ([B, augment_dim]) for networks trained
    /// with `augment_dim > 0`; sampling passes none.
    pub fn denoise_with_augment(&self, x: &Tensor, sigma: &Tensor, class_labels: Option<&Tensor>, augment_labels: Option<&Tensor>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let b = self.check_x(x)?;
        let n = sigma.numel() as i64;
        if n != 1 && n != b {
            return Err(BenchError::user(format!("{}: σ has {n} entries for a batch of {b}", self.source)));
        }
        let labels = self.check_labels(class_labels, b)?;
        let augment = self.check_augment(augment_labels, b)?;
        let x32 = x.to_device(self.device).to_kind(Kind::Float);
        let sigma = sigma.to_device(self.device).to_kind(Kind::Float).reshape([-1, 1, 1, 1]);
        let c = self.precond.coefficients(&sigma);
        let f = self.backbone_forward(&(&c.c_in * &x32).to_kind(self.kind), &c.c_noise.flatten(0, -1), labels.as_ref(), augment.as_ref())?;
        let f = match self.precond {
            Preconditioning::Iddpm { .. } => f.narrow(1, 0, self.img_channels),
            _ => f,
        };
        let d = &c.c_skip * &x32 + &c.c_out * f.to_kind(Kind::Float);
        Ok(d.to_device(x.device()).to_kind(x.kind()))
    }

    /// The raw backbone F(x_in; c_noise): what EDM's `net.model(x, noise_labels, class_labels,
    /// augment_labels)` returns (fp32 result; iDDPM networks give 2·C channels).
    pub fn network_forward(&self, x_in: &Tensor, noise_labels: &Tensor, class_labels: Option<&Tensor>, augment_labels: Option<&Tensor>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let b = self.check_x(x_in)?;
        if noise_labels.numel() as i64 != b && noise_labels.numel() != 1 {
            return Err(BenchError::user(format!("{}: {} noise labels for a batch of {b}", self.source, noise_labels.numel())));
        }
        let labels = self.check_labels(class_labels, b)?;
        let augment = self.check_augment(augment_labels, b)?;
        let noise = noise_labels.to_device(self.device).to_kind(Kind::Float).flatten(0, -1);
        let f = self.backbone_forward(&x_in.to_device(self.device).to_kind(self.kind), &noise, labels.as_ref(), augment.as_ref())?;
        Ok(f.to_kind(Kind::Float))
    }

    fn backbone_forward(&self, x: &Tensor, noise: &Tensor, labels: Option<&Tensor>, augment: Option<&Tensor>) -> Result<Tensor> {
        match &self.backbone {
            Backbone::Song(n) => n.forward(x, noise, labels, augment),
            Backbone::Dhariwal(n) => n.forward(x, noise, labels, augment),
        }
    }

    /// Batch size of a valid input.
    fn check_x(&self, x: &Tensor) -> Result<i64> {
        let size = x.size();
        let step = 1i64 << (self.backbone.levels() - 1);
        match size.as_slice() {
            &[b, c, h, w] if c == self.img_channels && b > 0 && h > 0 && w > 0 && h % step == 0 && w % step == 0 && x.is_floating_point() => Ok(b),
            _ => Err(BenchError::user(format!(
                "{}: input of shape {size:?} ({:?}); expected a floating-point [B, {}, H, W] with H and W divisible by {step} (trained at {}×{})",
                self.source,
                x.kind(),
                self.img_channels,
                self.img_resolution,
                self.img_resolution
            ))),
        }
    }

    /// Class labels as EDM passes them: fp32 [B or 1, label_dim], zeros when omitted.
    fn check_labels(&self, labels: Option<&Tensor>, b: i64) -> Result<Option<Tensor>> {
        match (labels, self.label_dim) {
            (None, 0) => Ok(None),
            (Some(_), 0) => Err(BenchError::user(format!("{}: class labels given to an unconditional network", self.source))),
            (None, l) => Ok(Some(Tensor::zeros([1, l], (Kind::Float, self.device)))),
            (Some(t), l) => {
                let n = t.numel() as i64;
                if n != b * l && n != l {
                    return Err(BenchError::user(format!(
                        "{}: class labels of shape {:?} for a batch of {b} with label_dim {l} (expected [{b}, {l}], e.g. one-hot)",
                        self.source,
                        t.size()
                    )));
                }
                Ok(Some(t.to_device(self.device).to_kind(Kind::Float).reshape([-1, l])))
            }
        }
    }

    fn check_augment(&self, augment: Option<&Tensor>, b: i64) -> Result<Option<Tensor>> {
        let dim = self.backbone.augment_dim();
        match augment {
            None => Ok(None),
            Some(_) if dim == 0 => Err(BenchError::user(format!("{}: augmentation labels given to a network without augment_dim", self.source))),
            Some(t) if t.numel() as i64 == b * dim => Ok(Some(t.to_device(self.device).to_kind(Kind::Float).reshape([b, dim]))),
            Some(t) => Err(BenchError::user(format!("{}: augmentation labels of shape {:?}, expected [{b}, {dim}]", self.source, t.size()))),
        }
    }
}

/// A σ-space [`crate::models::Denoiser`]: labels are σ, the output is D(x; σ); class conditions
/// (int64 labels) are passed one-hot, as EDM's `generate.py` does. The label `label_dim` (the null
/// class of guidance) is the zero vector, the unconditional input EDM trains with `label_dropout`.
impl crate::models::Denoiser for EdmNetwork {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&crate::models::Condition>) -> Result<Tensor> {
        let labels = match cond {
            Some(crate::models::Condition::Labels(l)) if self.label_dim > 0 => {
                Some(l.to_kind(Kind::Int64).onehot(self.label_dim + 1).narrow(1, 0, self.label_dim).to_kind(Kind::Float))
            }
            Some(_) => return Err(BenchError::user(format!("{}: this network takes no such condition", self.source))),
            None => None,
        };
        self.denoise(x, t, labels.as_ref())
    }
    fn describe(&self) -> String {
        EdmNetwork::describe(self)
    }
    fn sigma_range(&self) -> (f64, f64) {
        (self.sigma_min, self.sigma_max)
    }
    fn round_sigma(&self, sigma: &Tensor) -> Tensor {
        EdmNetwork::round_sigma(self, sigma)
    }
}
