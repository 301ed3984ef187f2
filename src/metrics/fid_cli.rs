//! `bench fid` and `bench stats`: source → uint8 batches → features → statistics → Fréchet distance,
//! mirroring `python -m pytorch_fid`. The feature network comes in through `FeatureExtractor`, so
//! the pipeline does not depend on how the network is built or loaded.
use crate::metrics::datasets::{open_input_with, ImageSource, Input};
use crate::metrics::feature_bank::{reference_subset, FeatureBank};
use crate::metrics::frechet::frechet_distance;
use crate::metrics::inception::{default_weights_path, FidInception};
use crate::metrics::preprocess::preprocess;
use crate::metrics::stats::{npz_writer, write_npz, open_npz, FeatureStats, Moments, NpzOut};
use crate::metrics::ResizeMode;
use crate::{BenchError, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::Array0;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tch::{Device, Tensor};

/// Images read from a source: one tensor when they share a size, else one [1,3,H,W] per image.
pub enum ImageBatch {
    Uniform(Tensor),
    Mixed(Vec<Tensor>),
}

impl ImageBatch {
    pub fn len(&self) -> usize {
        match self {
            ImageBatch::Uniform(t) => t.size()[0] as usize,
            ImageBatch::Mixed(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Maps uint8 [B,3,H,W] images to [B, dims] features (the FID Inception, or a stand-in in tests).
pub trait FeatureExtractor {
    fn features(&self, images_u8: &Tensor) -> Result<Tensor>;
    fn dims(&self) -> usize;
    /// Features of images of different sizes, each preprocessed (resized) on its own. The default
    /// runs the extractor once per image; extractors that can batch after preprocessing override it.
    fn features_of_images(&self, images: &[Tensor]) -> Result<Tensor> {
        let f = images.iter().map(|im| self.features(im)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_cat(&f, 0)?)
    }
    /// Features and, when asked and the network has a classifier, its logits from the same
    /// forward (the Inception Score's input). The default has no logits.
    fn features_and_logits(&self, batch: &ImageBatch, _logits: bool) -> Result<(Tensor, Option<Tensor>)> {
        let f = match batch {
            ImageBatch::Uniform(t) => self.features(t)?,
            ImageBatch::Mixed(v) => self.features_of_images(v)?,
        };
        Ok((f, None))
    }
}

/// The FID Inception as a `FeatureExtractor`: preprocessing and network on the network's device,
/// features stay there (so statistics accumulate on the GPU when there is one).
pub struct InceptionExtractor {
    pub net: FidInception,
    pub mode: ResizeMode,
    pub dims: usize,
}

impl InceptionExtractor {
    /// Network input of a batch: each image of a mixed batch resized on its own, then stacked.
    fn network_input(&self, batch: &ImageBatch) -> Result<Tensor> {
        let dev = self.net.device();
        tch::no_grad(|| match batch {
            ImageBatch::Uniform(t) => preprocess(&t.to_device(dev), self.mode),
            ImageBatch::Mixed(v) => {
                let xs = v.iter().map(|im| preprocess(&im.to_device(dev), self.mode)).collect::<Result<Vec<_>>>()?;
                Ok(Tensor::f_cat(&xs, 0)?)
            }
        })
    }
}

impl FeatureExtractor for InceptionExtractor {
    fn features(&self, images_u8: &Tensor) -> Result<Tensor> {
        let x = tch::no_grad(|| preprocess(&images_u8.to_device(self.net.device()), self.mode))?;
        self.net.forward(&x, self.dims)
    }
    fn features_of_images(&self, images: &[Tensor]) -> Result<Tensor> {
        let x = self.network_input(&ImageBatch::Mixed(images.iter().map(|t| t.shallow_clone()).collect()))?;
        self.net.forward(&x, self.dims)
    }
    fn features_and_logits(&self, batch: &ImageBatch, logits: bool) -> Result<(Tensor, Option<Tensor>)> {
        if let (false, ImageBatch::Uniform(t)) = (logits, batch) {
            return Ok((self.features(t)?, None));
        }
        let x = self.network_input(batch)?;
        if logits {
            let (f, l) = self.net.forward_with_logits(&x, self.dims)?;
            Ok((f, Some(l)))
        } else {
            Ok((self.net.forward(&x, self.dims)?, None))
        }
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
    /// Also keep the features of a seeded subset of at most this many images of each input
    /// computed from images (0: none), for the metrics that need samples (KID, precision/recall),
    /// saved as `features` / `features_index` beside `mu` and `sigma`.
    pub ref_features: usize,
    /// Seed of that subset (numpy `RandomState(seed).choice(n, ref_features, replace=False)`).
    pub ref_features_seed: u32,
    /// Saved statistics also carry the mergeable sums (`bench stats --sums`); otherwise only
    /// `mu` and `sigma`, pytorch-fid's file.
    pub sums: bool,
    /// Image folders are searched recursively (pytorch-fid lists only the folder itself).
    pub recursive: bool,
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
            ref_features: 0,
            ref_features_seed: 0,
            sums: false,
            recursive: false,
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

/// Runs every image of `source` through `extractor` in batches of `batch_size`, calling
/// `f(first_index, features, logits)` per batch (logits only when `logits` is asked and the
/// extractor has them); reading the next batch overlaps with feature extraction of the current
/// one. Sources of mixed image sizes are read image by image and resized one by one.
pub fn for_each_batch(
    source: &dyn ImageSource,
    extractor: &dyn FeatureExtractor,
    batch_size: usize,
    quiet: bool,
    logits: bool,
    f: &mut dyn FnMut(u64, &Tensor, Option<&Tensor>) -> Result<()>,
) -> Result<()> {
    let batch_size = batch_size.max(1);
    let total = source.len();
    let uniform = source.uniform_size();
    let bar = progress_bar(total as u64, &source.describe(), quiet);
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Result<ImageBatch>>(2);
        scope.spawn(move || {
            for start in (0..total).step_by(batch_size) {
                let batch = if uniform {
                    source.read_batch(start, batch_size).map(ImageBatch::Uniform)
                } else {
                    source.read_images(start, batch_size).map(ImageBatch::Mixed)
                };
                if tx.send(batch).is_err() {
                    break; // consumer stopped on an error
                }
            }
        });
        let mut next = 0u64;
        for batch in rx {
            let batch = batch?;
            let (feats, lg) = extractor.features_and_logits(&batch, logits)?;
            f(next, &feats, lg.as_ref())?;
            next += batch.len() as u64;
            bar.inc(batch.len() as u64);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// Feature statistics of every image of `source` (see [`for_each_batch`]).
pub fn source_stats(source: &dyn ImageSource, extractor: &dyn FeatureExtractor, batch_size: usize, quiet: bool) -> Result<FeatureStats> {
    let mut stats: Option<FeatureStats> = None;
    for_each_batch(source, extractor, batch_size, quiet, false, &mut |_, feats, _| {
        stats.get_or_insert_with(|| FeatureStats::new(extractor.dims(), feats.device())).add_batch(feats)
    })?;
    stats.ok_or_else(|| BenchError::user(format!("{}: no images", source.describe())))
}

/// Statistics of `source` plus the features of a seeded subset of at most `max_features` of its
/// images (all of them when `max_features ≥ len`), from one pass.
pub fn source_stats_and_features(
    source: &dyn ImageSource,
    extractor: &dyn FeatureExtractor,
    batch_size: usize,
    quiet: bool,
    max_features: usize,
    seed: u32,
) -> Result<(FeatureStats, FeatureBank)> {
    let keep = reference_subset(source.len(), max_features, seed)?;
    let mut stats: Option<FeatureStats> = None;
    let mut bank = FeatureBank::new(extractor.dims());
    for_each_batch(source, extractor, batch_size, quiet, false, &mut |first, feats, _| {
        stats.get_or_insert_with(|| FeatureStats::new(extractor.dims(), feats.device())).add_batch(feats)?;
        bank.add_batch_subset(first, feats, &keep)
    })?;
    let stats = stats.ok_or_else(|| BenchError::user(format!("{}: no images", source.describe())))?;
    Ok((stats, bank))
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
    /// Features of a seeded subset of the images (`ref_features`), with the image count it was
    /// drawn from and the seed.
    pub features: Option<(FeatureBank, usize, u32)>,
}

fn input_stats(
    input: Input,
    opts: &FidOptions,
    extractor: &mut dyn FnMut() -> Result<Box<dyn FeatureExtractor>>,
    cache: &mut Option<Box<dyn FeatureExtractor>>,
) -> Result<InputStats> {
    if opts.ref_features > 0 && !matches!(input, Input::Images(_)) {
        return Err(BenchError::user(
            "--ref-features keeps features of images; this input is a statistics file without them",
        ));
    }
    match input {
        Input::Stats(moments) => Ok(InputStats { moments, sums: None, features: None }),
        Input::Sums(sums) => Ok(InputStats { moments: sums.moments()?, sums: Some(sums), features: None }),
        Input::Images(src) => {
            if cache.is_none() {
                *cache = Some(extractor()?);
            }
            let ex = cache.as_deref().ok_or_else(|| BenchError::Internal("feature extractor missing".into()))?;
            if opts.ref_features > 0 {
                let (sums, bank) =
                    source_stats_and_features(src.as_ref(), ex, opts.batch_size, opts.quiet, opts.ref_features, opts.ref_features_seed)?;
                let features = Some((bank, src.len(), opts.ref_features_seed));
                return Ok(InputStats { moments: sums.moments()?, sums: Some(sums), features });
            }
            let sums = source_stats(src.as_ref(), ex, opts.batch_size, opts.quiet)?;
            Ok(InputStats { moments: sums.moments()?, sums: Some(sums), features: None })
        }
    }
}

fn save(stats: &InputStats, out: &Path, opts: &FidOptions) -> Result<()> {
    let mut w = npz_writer();
    match &stats.sums {
        Some(s) if opts.sums => s.write_arrays(&mut w, out, true)?,
        Some(_) | None => write_moments(&stats.moments, &mut w, out)?,
    }
    if let Some((bank, total, seed)) = &stats.features {
        bank.write_arrays(&mut w, out)?;
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(out, format!("writing .npz: {e}"));
        w.add_array("features_source_count", &Array0::from_elem((), *total as u64)).map_err(err)?;
        w.add_array("features_seed", &Array0::from_elem((), *seed as u64)).map_err(err)?;
    }
    write_npz(w, out)
}

fn write_moments(m: &Moments, w: &mut NpzOut, path: &Path) -> Result<()> {
    let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
    w.add_array("mu", &m.mu).map_err(err)?;
    w.add_array("sigma", &m.sigma).map_err(err)?;
    Ok(())
}

/// A reference for the sample-based metrics: moments, and the per-sample features that
/// `bench stats --ref-features` stored (None for plain statistics files).
pub struct ReferenceFile {
    pub moments: Moments,
    pub features: Option<FeatureBank>,
}

/// Reads a statistics `.npz` (pytorch-fid, clean-fid, EDM or `bench stats`) with its reference
/// features when it has them.
pub fn load_reference_file(path: &Path) -> Result<ReferenceFile> {
    let moments = Moments::load_npz(path)?;
    let features = FeatureBank::read_arrays(&mut open_npz(path)?, path)?;
    Ok(ReferenceFile { moments, features })
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
    for out in save_stats.iter().chain(&save_ref_stats) {
        ensure_writable_destination(out)?;
    }
    let in1 = open_input_with(path1, opts.recursive)?;
    let in2 = open_input_with(path2, opts.recursive)?;
    let mut cache = None;
    let s1 = input_stats(in1, opts, make_extractor, &mut cache)?;
    let s2 = input_stats(in2, opts, make_extractor, &mut cache)?;
    if let Some(out) = save_stats {
        save(&s1, out, opts)?;
    }
    if let Some(out) = save_ref_stats {
        save(&s2, out, opts)?;
    }
    fid_of(&s1.moments, &s2.moments)
}

/// The folder of an output file must be writable before any features are computed.
fn ensure_writable_destination(out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(BenchError::file(out, "is a folder; expected an output .npz file name"));
    }
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::fsutil::ensure_writable_dir(dir)
}

/// `bench stats SOURCE --out FILE.npz`: statistics of one input (mu and sigma; with
/// `opts.sums` also the mergeable sums).
pub fn run_stats(
    source: &str,
    out: &Path,
    opts: &FidOptions,
    make_extractor: &mut dyn FnMut() -> Result<Box<dyn FeatureExtractor>>,
) -> Result<Moments> {
    check_dims(opts.dims)?;
    ensure_writable_destination(out)?;
    let input = open_input_with(source, opts.recursive)?;
    let stats = input_stats(input, opts, make_extractor, &mut None)?;
    save(&stats, out, opts)?;
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
