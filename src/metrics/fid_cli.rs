//! `bench fid` and `bench stats`: source → uint8 batches → features → statistics → Fréchet distance,
//! mirroring `python -m pytorch_fid`. The feature network comes in through `FeatureExtractor`, so
//! the pipeline does not depend on how the network is built or loaded.
use crate::metrics::datasets::{open_input, ImageSource, Input};
use crate::metrics::frechet::frechet_distance;
use crate::metrics::inception::{default_weights_path, FidInception};
use crate::metrics::preprocess::preprocess;
use crate::metrics::stats::{FeatureStats, Moments};
use crate::metrics::ResizeMode;
use crate::{BenchError, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tch::{Device, Tensor};

/// Maps uint8 [B,3,H,W] images to [B, dims] features (the FID Inception, or a stand-in in tests).
pub trait FeatureExtractor {
    fn features(&self, images_u8: &Tensor) -> Result<Tensor>;
    fn dims(&self) -> usize;
}

/// The FID Inception as a `FeatureExtractor`: preprocessing and network on the network's device,
/// features stay there (so statistics accumulate on the GPU when there is one).
pub struct InceptionExtractor {
    pub net: FidInception,
    pub mode: ResizeMode,
    pub dims: usize,
}

impl FeatureExtractor for InceptionExtractor {
    fn features(&self, images_u8: &Tensor) -> Result<Tensor> {
        let x = tch::no_grad(|| preprocess(&images_u8.to_device(self.net.device()), self.mode))?;
        self.net.forward(&x, self.dims)
    }
    fn dims(&self) -> usize {
        self.dims
    }
}

/// Loads the Inception named by `--weights` (default: the pytorch-fid file in the data dir).
pub fn load_inception(opts: &FidOptions) -> Result<Box<dyn FeatureExtractor>> {
    let path = opts.weights.clone().unwrap_or_else(default_weights_path);
    let net = FidInception::load(&path, opts.device, opts.allow_custom_weights)?;
    Ok(Box::new(InceptionExtractor { net, mode: opts.mode, dims: opts.dims }))
}

/// Options shared by `bench fid` and `bench stats`.
#[derive(Clone, Debug)]
pub struct FidOptions {
    pub mode: ResizeMode,
    pub dims: usize,
    pub batch_size: usize,
    pub device: Device,
    pub weights: Option<PathBuf>,
    pub allow_custom_weights: bool,
    pub quiet: bool,
}

impl Default for FidOptions {
    fn default() -> Self {
        FidOptions {
            mode: ResizeMode::PytorchFid,
            dims: 2048,
            batch_size: 50,
            device: Device::Cpu,
            weights: None,
            allow_custom_weights: false,
            quiet: false,
        }
    }
}

/// `--dims` must be one of pytorch-fid's four Inception block outputs.
pub fn check_dims(dims: usize) -> Result<usize> {
    if crate::metrics::inception::FEATURE_DIMS.contains(&dims) {
        Ok(dims)
    } else {
        Err(BenchError::user(format!("--dims {dims} is not supported; allowed: 64, 192, 768, 2048")))
    }
}

/// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA if available).
pub fn parse_device(s: &str) -> Result<Device> {
    let cuda_missing = || BenchError::user(format!("--device {s}: no CUDA device is available (use cpu or auto)"));
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => tch::Cuda::is_available().then_some(Device::Cuda(0)).ok_or_else(cuda_missing),
        _ => match s.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()) {
            Some(i) if i < tch::Cuda::device_count() as usize => Ok(Device::Cuda(i)),
            Some(_) => Err(cuda_missing()),
            None => Err(BenchError::user(format!("--device '{s}' is not allowed; use cpu, cuda, cuda:N or auto"))),
        },
    }
}

/// Runs every image of `source` through `extractor` in batches; reading the next batch overlaps
/// with feature extraction of the current one.
pub fn source_stats(source: &dyn ImageSource, extractor: &dyn FeatureExtractor, batch_size: usize, quiet: bool) -> Result<FeatureStats> {
    let batch_size = batch_size.max(1);
    let total = source.len();
    let bar = progress_bar(total as u64, &source.describe(), quiet);
    let mut stats: Option<FeatureStats> = None;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Result<Tensor>>(2);
        scope.spawn(move || {
            for start in (0..total).step_by(batch_size) {
                if tx.send(source.read_batch(start, batch_size)).is_err() {
                    break; // consumer stopped on an error
                }
            }
        });
        for batch in rx {
            let batch = batch?;
            let feats = extractor.features(&batch)?;
            let s = stats.get_or_insert_with(|| FeatureStats::new(extractor.dims(), feats.device()));
            s.add_batch(&feats)?;
            bar.inc(batch.size()[0] as u64);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    stats.ok_or_else(|| BenchError::user(format!("{}: no images", source.describe())))
}

fn progress_bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images ({per_sec}, eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("features of {what}"));
    bar
}

/// Statistics of one input: loaded, or computed with `extractor` (built on first need).
pub struct InputStats {
    pub moments: Moments,
    /// Present when computed from images or loaded from a sums file (mergeable, savable).
    pub sums: Option<FeatureStats>,
}

fn input_stats(
    input: Input,
    opts: &FidOptions,
    extractor: &mut dyn FnMut() -> Result<Box<dyn FeatureExtractor>>,
    cache: &mut Option<Box<dyn FeatureExtractor>>,
) -> Result<InputStats> {
    match input {
        Input::Stats(moments) => Ok(InputStats { moments, sums: None }),
        Input::Sums(sums) => Ok(InputStats { moments: sums.moments()?, sums: Some(sums) }),
        Input::Images(src) => {
            if cache.is_none() {
                *cache = Some(extractor()?);
            }
            let ex = cache.as_deref().ok_or_else(|| BenchError::Internal("feature extractor missing".into()))?;
            let sums = source_stats(src.as_ref(), ex, opts.batch_size, opts.quiet)?;
            Ok(InputStats { moments: sums.moments()?, sums: Some(sums) })
        }
    }
}

fn save(stats: &InputStats, out: &Path) -> Result<()> {
    match &stats.sums {
        Some(s) => s.save_npz(out),
        None => stats.moments.save_npz(out),
    }
}

/// `bench fid PATH1 PATH2`: FID between two inputs. Both are opened and validated before the
/// network is loaded, so bad paths fail fast; `make_extractor` runs only if images need features.
pub fn run_fid(
    path1: &str,
    path2: &str,
    opts: &FidOptions,
    save_stats: Option<&Path>,
    save_ref_stats: Option<&Path>,
    make_extractor: &mut dyn FnMut() -> Result<Box<dyn FeatureExtractor>>,
) -> Result<f64> {
    check_dims(opts.dims)?;
    let in1 = open_input(path1)?;
    let in2 = open_input(path2)?;
    let mut cache = None;
    let s1 = input_stats(in1, opts, make_extractor, &mut cache)?;
    let s2 = input_stats(in2, opts, make_extractor, &mut cache)?;
    if let Some(out) = save_stats {
        save(&s1, out)?;
    }
    if let Some(out) = save_ref_stats {
        save(&s2, out)?;
    }
    fid_of(&s1.moments, &s2.moments)
}

/// `bench stats SOURCE --out FILE.npz`: statistics of one input (mu, sigma and mergeable sums).
pub fn run_stats(
    source: &str,
    out: &Path,
    opts: &FidOptions,
    make_extractor: &mut dyn FnMut() -> Result<Box<dyn FeatureExtractor>>,
) -> Result<Moments> {
    check_dims(opts.dims)?;
    let input = open_input(source)?;
    let stats = input_stats(input, opts, make_extractor, &mut None)?;
    save(&stats, out)?;
    Ok(stats.moments)
}

pub fn fid_of(a: &Moments, b: &Moments) -> Result<f64> {
    frechet_distance(a.mu.view(), a.sigma.view(), b.mu.view(), b.sigma.view())
}

/// `FID: <value>` with 12 significant digits (pytorch-fid prints the full float repr).
pub fn format_fid(fid: f64) -> String {
    if fid == 0.0 || !fid.is_finite() {
        return format!("FID: {fid}");
    }
    let digits = 12_i32;
    let decimals = (digits - 1 - fid.abs().log10().floor() as i32).max(0) as usize;
    format!("FID: {fid:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fid_line_has_twelve_significant_digits() {
        assert_eq!(format_fid(1.23456789012345), "FID: 1.23456789012");
        assert_eq!(format_fid(123.456789012345), "FID: 123.456789012");
        assert_eq!(format_fid(0.00123456789012345), "FID: 0.00123456789012");
        assert_eq!(format_fid(0.0), "FID: 0");
    }

    #[test]
    fn bad_dims_and_device_are_user_errors() {
        let e = check_dims(1000).unwrap_err();
        assert_eq!(e.to_string(), "--dims 1000 is not supported; allowed: 64, 192, 768, 2048");
        let e = parse_device("tpu").unwrap_err();
        assert_eq!(e.to_string(), "--device 'tpu' is not allowed; use cpu, cuda, cuda:N or auto");
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    }
}
