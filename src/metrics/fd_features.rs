//! Fréchet distance in the feature space of any TorchScript encoder (`metrics.fd_features`):
//! FD_DINOv2 as EDM2 computes it, a time-series encoder's FD, or any other. Features stream into
//! [`FeatureStats`] (mergeable across shards like FID's) and the distance is
//! [`crate::metrics::frechet::frechet_distance`] against a reference: a statistics `.npz`
//! (`mu`, `sigma`) or a `.npy` of reference features [N, D].
//!
//! Image input follows EDM2's `DINOv2Detector` with `resize_mode='torch'`
//! (calculate_metrics.py): uint8 → float32 → `F.interpolate(size, mode, antialias)` on the 0..255
//! values → /255 → (x − mean) / std per channel. Raw input hands the float32 tensor to the encoder
//! unchanged (latents, time series).
//!
//! In `bench run` each entry is one metric whose column is the entry's `name` (starting `fd_`).
//! Default gate tolerance: as FID's (`fid.rs`): float32 encoder features move by ~1e-6 relative
//! between machines and FD, a difference of traces, carries that relative to the traces: rel 1e-4.
use crate::metrics::fid_cli::FeatureExtractor;
use crate::metrics::frechet::frechet_distance;
use crate::metrics::stats::{FeatureStats, Moments};
use crate::metrics::stats::FrechetAccumulator;
use crate::metrics::{Accumulator, Batch, Better, ColumnDef, Metric, MetricDef, Tolerance};
use crate::{BenchError, Result};
use ndarray::Array2;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

/// One `metrics.fd_features` entry.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdFeaturesSpec {
    /// Results column, e.g. `fd_dinov2`.
    pub name: String,
    /// TorchScript encoder: [B, ...] float32 → [B, D] features.
    pub encoder: PathBuf,
    /// Reference statistics `.npz` (`mu`, `sigma`) or reference features `.npy` [N, D].
    pub reference: PathBuf,
    #[serde(default)]
    pub input: EncoderInput,
    #[serde(default)]
    pub resize: Option<ResizeSpec>,
    #[serde(default)]
    pub normalize: Normalize,
}

/// What the encoder receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderInput {
    /// uint8 images [B, 3, H, W], resized and normalised as the spec says.
    #[default]
    Images,
    /// The samples as float32, unchanged.
    Raw,
}

/// `F.interpolate` of the float 0..255 image to `size` before normalising.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeSpec {
    pub size: Size,
    #[serde(default)]
    pub filter: Filter,
    /// torch's antialiased resampling (EDM2: on).
    #[serde(default = "yes")]
    pub antialias: bool,
}

fn yes() -> bool {
    true
}

/// `224` or `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Size {
    Square(usize),
    HeightWidth([usize; 2]),
}

impl Size {
    pub fn hw(self) -> [i64; 2] {
        match self {
            Size::Square(s) => [s as i64, s as i64],
            Size::HeightWidth([h, w]) => [h as i64, w as i64],
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    #[default]
    Bicubic,
    Bilinear,
}

/// Per-channel normalisation after /255.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Normalize {
    Named(NamedNormalize),
    Custom { mean: Vec<f64>, std: Vec<f64> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedNormalize {
    /// torchvision's ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225): DINOv2.
    Imagenet,
    /// x/255 ∈ [0, 1].
    Unit,
    /// 2x/255 − 1 ∈ [−1, 1] (mean 0.5, std 0.5).
    Symmetric,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize::Named(NamedNormalize::Unit)
    }
}

impl Normalize {
    /// (mean, std) per channel.
    pub fn mean_std(&self) -> (Vec<f64>, Vec<f64>) {
        match self {
            Normalize::Named(NamedNormalize::Imagenet) => (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
            Normalize::Named(NamedNormalize::Unit) => (vec![0.0; 3], vec![1.0; 3]),
            Normalize::Named(NamedNormalize::Symmetric) => (vec![0.5; 3], vec![0.5; 3]),
            Normalize::Custom { mean, std } => (mean.clone(), std.clone()),
        }
    }
}

impl FdFeaturesSpec {
    /// Checks what a spec author can get wrong, naming the key.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        let reserved = crate::metrics::METRICS.iter().flat_map(|m| m.columns).any(|c| c.name == n);
        if !n.starts_with("fd_")
            || n.len() < 4
            || reserved
            || n.ends_with(crate::metrics::repeats::CI_SUFFIX)
            || !n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(BenchError::user(format!(
                "metrics.fd_features.name: {n:?} must be a column name `fd_...` of a-z, 0-9 and _ (e.g. fd_dinov2), not another metric's column and not ending in `{}`",
                crate::metrics::repeats::CI_SUFFIX
            )));
        }
        let (mean, std) = self.normalize.mean_std();
        if mean.len() != 3 || std.len() != 3 || std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(BenchError::user(format!(
                "metrics.fd_features[{n}].normalize: needs 3 means and 3 positive stds; got {mean:?} and {std:?}"
            )));
        }
        if let Some(r) = &self.resize {
            if r.size.hw().iter().any(|&s| s < 1) {
                return Err(BenchError::user(format!("metrics.fd_features[{n}].resize.size must be positive")));
            }
            if self.input == EncoderInput::Raw {
                return Err(BenchError::user(format!(
                    "metrics.fd_features[{n}]: resize applies to input: images, not raw"
                )));
            }
        }
        Ok(())
    }
}

/// A TorchScript module used as a feature encoder, in eval mode, without autograd.
pub struct TorchScriptEncoder {
    module: CModule,
    path: PathBuf,
    device: Device,
}

impl TorchScriptEncoder {
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.is_file() {
            return Err(BenchError::file(path, "encoder not found (expected a TorchScript .pt file)"));
        }
        let mut module = CModule::load_on_device(path, device)
            .map_err(|e| BenchError::file(path, format!("not a loadable TorchScript module: {e}")))?;
        module.set_eval();
        Ok(TorchScriptEncoder { module, path: path.to_path_buf(), device })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// `module(x)` for float32 `x` on this device; the output must be a float tensor whose first
    /// dimension is the batch.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.f_to_device(self.device)?.f_to_kind(Kind::Float)?;
        let b = x.size().first().copied().unwrap_or(0);
        let y = tch::no_grad(|| self.module.forward_ts(&[&x]))
            .map_err(|e| BenchError::file(&self.path, format!("encoder forward failed on input {:?}: {e}", x.size())))?;
        if !y.is_floating_point() || y.size().first() != Some(&b) {
            return Err(BenchError::file(
                &self.path,
                format!("encoder returned {:?} {:?} for a batch of {b}; expected float features [B, ...]", y.kind(), y.size()),
            ));
        }
        Ok(y.f_to_kind(Kind::Float)?)
    }
}

/// Reference moments: `.npz` statistics (pytorch-fid/EDM/`bench stats` keys `mu`, `sigma`) or
/// `.npy` features [N, D] (float32 or float64), whose mean and N−1 covariance are taken here.
pub fn load_reference(path: &Path) -> Result<Moments> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npz") => Moments::load_npz(path),
        Some("npy") => {
            let rows: Array2<f64> = match ndarray_npy::read_npy::<_, Array2<f64>>(path) {
                Ok(a) => a,
                Err(_) => ndarray_npy::read_npy::<_, Array2<f32>>(path)
                    .map_err(|e| BenchError::file(path, format!("expected a float32 or float64 array [N, D] of reference features: {e}")))?
                    .mapv(f64::from),
            };
            let (n, d) = rows.dim();
            let t = Tensor::from_slice(rows.as_standard_layout().as_slice().unwrap_or(&[])).f_reshape([n as i64, d as i64])?;
            let mut s = FeatureStats::new(d, Device::Cpu);
            s.add_batch(&t)?;
            s.moments().map_err(|e| BenchError::file(path, e.to_string()))
        }
        _ => Err(BenchError::file(path, "reference must be a statistics .npz (mu, sigma) or a features .npy [N, D]")),
    }
}

/// A configured `fd_features` metric: encoder, preprocessing and reference.
pub struct FdFeatures {
    pub spec: FdFeaturesSpec,
    encoder: TorchScriptEncoder,
    reference: Moments,
}

impl FdFeatures {
    pub fn load(spec: &FdFeaturesSpec, device: Device) -> Result<Self> {
        spec.validate()?;
        let reference = load_reference(&spec.reference)?;
        let encoder = TorchScriptEncoder::load(&spec.encoder, device)?;
        Ok(FdFeatures { spec: spec.clone(), encoder, reference })
    }

    /// Feature width, that of the reference.
    pub fn dims(&self) -> usize {
        self.reference.dims()
    }

    pub fn reference(&self) -> &Moments {
        &self.reference
    }

    /// Empty statistics on the encoder's device for this metric's features.
    pub fn new_stats(&self) -> FeatureStats {
        FeatureStats::new(self.dims(), self.encoder.device())
    }

    /// EDM2's image preprocessing: uint8 [B,3,H,W] → float32 encoder input on the encoder's device.
    pub fn preprocess(&self, images_u8: &Tensor) -> Result<Tensor> {
        let size = images_u8.size();
        if images_u8.kind() != Kind::Uint8 || size.len() != 4 || size[1] != 3 {
            return Err(BenchError::Internal(format!(
                "fd_features image input must be uint8 [B,3,H,W]; got {:?} {size:?}",
                images_u8.kind()
            )));
        }
        let dev = self.encoder.device();
        let mut x = images_u8.f_to_device(dev)?.f_to_kind(Kind::Float)?;
        if let Some(r) = &self.spec.resize {
            let hw = r.size.hw();
            x = match (r.filter, r.antialias) {
                (Filter::Bicubic, true) => x.f_internal_upsample_bicubic2d_aa(hw, false, None, None)?,
                (Filter::Bicubic, false) => x.f_upsample_bicubic2d(hw, false, None, None)?,
                (Filter::Bilinear, true) => x.f_internal_upsample_bilinear2d_aa(hw, false, None, None)?,
                (Filter::Bilinear, false) => x.f_upsample_bilinear2d(hw, false, None, None)?,
            };
        }
        let (mean, std) = self.spec.normalize.mean_std();
        let c = |v: &[f64]| -> Result<Tensor> {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Ok(Tensor::from_slice(&v).f_to_device(dev)?.f_reshape([1, 3, 1, 1])?)
        };
        Ok(x.f_div_scalar(255.0)?.f_sub(&c(&mean)?)?.f_div(&c(&std)?)?)
    }

    /// Features [B, D] (float32, encoder's device) of one batch of samples: uint8 images for
    /// `input: images`, any float tensor for `input: raw`.
    pub fn features(&self, batch: &Tensor) -> Result<Tensor> {
        let x = match self.spec.input {
            EncoderInput::Images => self.preprocess(batch)?,
            EncoderInput::Raw => batch.shallow_clone(),
        };
        self.check(self.encoder.encode(&x)?)
    }

    /// Features of images of different sizes: each resized on its own, then one encoder batch.
    pub fn features_of_images(&self, images: &[Tensor]) -> Result<Tensor> {
        if images.is_empty() {
            return Ok(Tensor::zeros([0, self.dims() as i64], (Kind::Float, self.encoder.device())));
        }
        let xs = images.iter().map(|im| self.preprocess(im)).collect::<Result<Vec<_>>>()?;
        let same = xs.iter().all(|x| x.size()[1..] == xs[0].size()[1..]);
        if !same {
            return Err(BenchError::user(format!(
                "metrics.fd_features[{}]: images of different sizes need a resize to one size",
                self.spec.name
            )));
        }
        self.check(self.encoder.encode(&Tensor::f_cat(&xs, 0)?)?)
    }

    fn check(&self, y: Tensor) -> Result<Tensor> {
        let s = y.size();
        if s.len() != 2 || s[1] != self.dims() as i64 {
            return Err(BenchError::file(
                &self.spec.encoder,
                format!("encoder features have shape {s:?}; the reference has {} dimensions ([B, {}] expected)", self.dims(), self.dims()),
            ));
        }
        Ok(y)
    }

    /// FD of the accumulated features against the reference.
    pub fn distance(&self, stats: &FeatureStats) -> Result<f64> {
        let m = stats.moments()?;
        frechet_distance(m.mu.view(), m.sigma.view(), self.reference.mu.view(), self.reference.sigma.view())
    }
}

pub static DEF: MetricDef = MetricDef {
    name: "fd_features",
    columns: &[ColumnDef {
        name: "fd_<name>",
        help: "Fréchet distance in a TorchScript encoder's feature space (e.g. FD_DINOv2), one column per entry, named by its `name`",
        better: Better::Lower,
        tolerance: Tolerance { abs: 0.0, rel: 1e-4 },
    }],
};

/// One `metrics.fd_features` entry in `bench run`.
pub struct FdFeaturesMetric(pub FdFeatures);

impl Metric for FdFeaturesMetric {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn key(&self) -> String {
        format!("fd_features.{}", self.0.spec.name)
    }
    fn needs_images(&self) -> bool {
        self.0.spec.input == EncoderInput::Images
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        let m = &self.0;
        Box::new(FrechetAccumulator {
            column: m.spec.name.clone(),
            features: Box::new(move |batch: &Batch| {
                let x = match m.spec.input {
                    EncoderInput::Images => {
                        batch.images.ok_or_else(|| BenchError::Internal("fd_features: the batch carries no images".into()))?
                    }
                    EncoderInput::Raw => batch.samples,
                };
                Ok(m.features(x)?.f_to_kind(Kind::Double)?)
            }),
            reference: &m.reference,
            stats: m.new_stats(),
        })
    }
}

impl FeatureExtractor for FdFeatures {
    fn features(&self, images_u8: &Tensor) -> Result<Tensor> {
        FdFeatures::features(self, images_u8)
    }
    fn features_of_images(&self, images: &[Tensor]) -> Result<Tensor> {
        FdFeatures::features_of_images(self, images)
    }
    fn dims(&self) -> usize {
        FdFeatures::dims(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_edm2_dinov2_and_rejects_bad_names() {
        let yaml = "name: fd_dinov2\nencoder: dinov2.pt\nreference: ref.npz\nresize: {size: 224}\nnormalize: imagenet\n";
        let s: FdFeaturesSpec = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(s.input, EncoderInput::Images);
        assert_eq!(s.resize, Some(ResizeSpec { size: Size::Square(224), filter: Filter::Bicubic, antialias: true }));
        assert_eq!(s.normalize, Normalize::Named(NamedNormalize::Imagenet));
        s.validate().unwrap();
        let custom: FdFeaturesSpec =
            serde_yaml_ng::from_str("name: fd_x\nencoder: e.pt\nreference: r.npy\ninput: raw\nnormalize: {mean: [0,0,0], std: [1,1,1]}\n").unwrap();
        custom.validate().unwrap();
        for name in ["FD DINO", "dinov2", "fd_", "fd_pixel", "fid", "fd_x_ci95"] {
            let bad = FdFeaturesSpec { name: name.into(), ..s.clone() };
            assert!(bad.validate().unwrap_err().to_string().contains("metrics.fd_features.name"), "{name}");
        }
        let bad = FdFeaturesSpec { input: EncoderInput::Raw, ..s };
        assert!(bad.validate().is_err());
    }
}
