//! FID, Inception Score, KID and precision/recall/density/coverage of one set of images, all fed
//! from one streamed FID-Inception pass (one forward per image: pool features and logits).
//!
//! [`ImageMetricsState`] is what a run accumulates and saves per shard: FID's [`FeatureStats`],
//! the Inception Score's per-split sums, and (when KID or precision/recall are asked for) the
//! per-sample features. Shards merge in any order. [`image_metrics`] turns a complete state and a
//! reference ([`ReferenceFile`]: statistics, plus the features `bench stats --ref-features` keeps)
//! into the numbers.
//!
//! Shard `.npz`: FeatureStats' keys (`mu`, `sigma`, `count`, sums), the `is_*` keys of
//! [`InceptionScoreStats`] and `features` / `features_index` of [`FeatureBank`]. Storage per
//! 50,000 samples at 2048 dims: 64 MiB of sums (as for FID alone), 80 KiB of IS sums, 400 MB of
//! features when KID or precision/recall are on.
use crate::metrics::feature_bank::FeatureBank;
use crate::metrics::fid_cli::{FeatureExtractor, ImageBatch, InceptionExtractor, ReferenceFile};
use crate::metrics::frechet::frechet_distance;
use crate::metrics::inception_score::{InceptionScore, InceptionScoreStats, IsParams};
use crate::metrics::kid::{kid, Kid, KidParams};
use crate::metrics::prdc::{prdc, Prdc, PrdcParams};
use crate::metrics::stats::{npz_writer, write_npz, open_npz, FeatureStats};
use crate::metrics::{Accumulator, Batch, FinishContext};
use crate::{BenchError, Result};
use std::cell::Ref;
use std::path::Path;
use tch::{Device, Tensor};

/// Which metrics besides FID, with their parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageMetricsConfig {
    pub inception_score: Option<IsParams>,
    pub kid: Option<KidParams>,
    pub prdc: Option<PrdcParams>,
}

impl ImageMetricsConfig {
    /// Whether per-sample features must be kept (KID, precision/recall).
    pub fn keeps_features(&self) -> bool {
        self.kid.is_some() || self.prdc.is_some()
    }
}

/// Sums and features of a (part of a) set of `total` samples.
#[derive(Debug)]
pub struct ImageMetricsState {
    pub fid: FeatureStats,
    pub inception_score: Option<InceptionScoreStats>,
    pub features: Option<FeatureBank>,
}

/// The FID Inception's classifier width.
pub const INCEPTION_CLASSES: usize = 1008;

impl ImageMetricsState {
    /// Empty state for samples 0..`total` with `dims`-wide features, sums on `device`.
    pub fn new(cfg: &ImageMetricsConfig, total: usize, dims: usize, device: Device) -> Result<Self> {
        Ok(ImageMetricsState {
            fid: FeatureStats::new(dims, device),
            inception_score: cfg
                .inception_score
                .map(|p| InceptionScoreStats::new(total, p, INCEPTION_CLASSES, device))
                .transpose()?,
            features: cfg.keeps_features().then(|| FeatureBank::new(dims)),
        })
    }

    /// Adds one batch of samples `first_index ..` (features [B, dims], logits [B, 1008]).
    pub fn add_batch(&mut self, first_index: u64, features: &tch::Tensor, logits: Option<&tch::Tensor>) -> Result<()> {
        self.fid.add_batch(features)?;
        if let Some(is) = &mut self.inception_score {
            let logits = logits.ok_or_else(|| BenchError::Internal("the Inception Score needs the logits".into()))?;
            is.add_batch(first_index, logits)?;
        }
        if let Some(bank) = &mut self.features {
            bank.add_batch(first_index, features)?;
        }
        Ok(())
    }

    /// Adds another shard's state (same configuration).
    pub fn merge(&mut self, other: &ImageMetricsState) -> Result<()> {
        self.fid.merge(&other.fid)?;
        match (&mut self.inception_score, &other.inception_score) {
            (Some(a), Some(b)) => a.merge(b)?,
            (None, None) => {}
            _ => return Err(BenchError::user("cannot merge shards computed with and without the Inception Score")),
        }
        match (&mut self.features, &other.features) {
            (Some(a), Some(b)) => a.merge(b)?,
            (None, None) => {}
            _ => return Err(BenchError::user("cannot merge shards computed with and without per-sample features")),
        }
        Ok(())
    }

    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer();
        self.fid.write_arrays(&mut w, path, true)?;
        if let Some(is) = &self.inception_score {
            is.write_arrays(&mut w, path)?;
        }
        if let Some(bank) = &self.features {
            bank.write_arrays(&mut w, path)?;
        }
        write_npz(w, path)
    }

    pub fn load_npz(path: &Path, device: Device) -> Result<Self> {
        let fid = FeatureStats::load_npz(path, device)?;
        let mut r = open_npz(path)?;
        let inception_score = InceptionScoreStats::read_arrays(&mut r, path, device)?;
        let features = FeatureBank::read_arrays(&mut r, path)?;
        Ok(ImageMetricsState { fid, inception_score, features })
    }
}

/// The numbers of one set against a reference.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageMetrics {
    pub fid: f64,
    pub inception_score: Option<InceptionScore>,
    pub kid: Option<Kid>,
    pub prdc: Option<Prdc>,
}

/// FID and the configured metrics of a complete state against `reference`. KID and
/// precision/recall need the reference's features (`bench stats --ref-features N`); they run on
/// `device`.
pub fn image_metrics(
    state: &ImageMetricsState,
    reference: &ReferenceFile,
    cfg: &ImageMetricsConfig,
    device: Device,
) -> Result<ImageMetrics> {
    let m = state.fid.moments()?;
    let r = &reference.moments;
    let fid = frechet_distance(m.mu.view(), m.sigma.view(), r.mu.view(), r.sigma.view())?;
    let inception_score = match (&cfg.inception_score, &state.inception_score) {
        (Some(_), Some(s)) => Some(s.score()?),
        (Some(_), None) => return Err(BenchError::user("the Inception Score was asked for but not accumulated")),
        _ => None,
    };
    let (mut kid_out, mut prdc_out) = (None, None);
    if cfg.keeps_features() {
        let gen = state
            .features
            .as_ref()
            .ok_or_else(|| BenchError::user("KID / precision-recall were asked for but no per-sample features were kept"))?;
        let refs = reference.features.as_ref().ok_or_else(|| {
            BenchError::user(
                "KID and precision/recall need reference features: make the reference with `bench stats --ref-features N`",
            )
        })?;
        let g = gen.to_tensor(device)?;
        let rf = refs.to_tensor(device)?;
        if let Some(p) = &cfg.kid {
            kid_out = Some(kid(&g, &rf, p)?);
        }
        if let Some(p) = &cfg.prdc {
            prdc_out = Some(prdc(&g, &rf, p)?);
        }
    }
    Ok(ImageMetrics { fid, inception_score, kid: kid_out, prdc: prdc_out })
}

// ---------------------------------------------------------------------------------------------
// The same metrics in `bench run`: one Inception pass per batch, read by every metric's accumulator.

/// The FID Inception's outputs for one batch of images: pool features [B, dims] and, when some
/// metric needs them, the unbiased logits [B, 1008].
pub struct InceptionOutput {
    pub features: Tensor,
    pub logits: Option<Tensor>,
}

/// The FID Inception of a run, shared by `fid`, `inception_score`, `kid` and `prdc`: the first of
/// them to see a batch runs the network and leaves the outputs in [`Batch::inception`] for the rest.
pub struct SharedInception {
    pub extractor: InceptionExtractor,
    /// Whether the pass also computes the logits (the Inception Score is on).
    pub logits: bool,
}

impl SharedInception {
    /// This batch's outputs, computed on first use.
    pub fn outputs<'b>(&self, batch: &'b Batch) -> Result<Ref<'b, InceptionOutput>> {
        if batch.inception.borrow().is_none() {
            let images = batch.images.ok_or_else(|| BenchError::Internal("Inception metrics: batch without images".into()))?;
            // Grayscale samples go in as pytorch-fid feeds grayscale files: PIL's
            // convert('RGB') repeats the one channel three times.
            let images = match images.size().as_slice() {
                [_, 1, _, _] => images.f_expand([-1, 3, -1, -1], false)?,
                _ => images.shallow_clone(),
            };
            let (features, logits) = self.extractor.features_and_logits(&ImageBatch::Uniform(images), self.logits)?;
            *batch.inception.borrow_mut() = Some(InceptionOutput { features, logits });
        }
        Ref::filter_map(batch.inception.borrow(), Option::as_ref)
            .map_err(|_| BenchError::Internal("Inception outputs missing".into()))
    }
}

/// Runs of consecutive sample indices in a batch, as (first sample index, first row, length):
/// the per-index statistics take contiguous blocks, and rows of NaN samples leave gaps.
pub fn contiguous_runs(indices: &[u64]) -> Vec<(u64, i64, i64)> {
    let mut runs: Vec<(u64, i64, i64)> = Vec::new();
    for (row, &i) in indices.iter().enumerate() {
        match runs.last_mut() {
            Some((first, _, len)) if *first + *len as u64 == i => *len += 1,
            _ => runs.push((i, row as i64, 1)),
        }
    }
    runs
}

/// What KID and PRDC compute from: the generated samples' features against the reference's.
pub type FeatureScore<'a> = dyn Fn(&Tensor) -> Result<Vec<(String, f64)>> + 'a;

/// Keeps every sample's pool features for a metric that needs the whole set (KID, PRDC). A part's
/// file holds its features ([`FeatureBank`]'s `features`, `features_index`: 8 KiB per sample at
/// 2048 dims), so parts and resumed checkpoints merge by sample index.
pub struct KeptFeatures<'a> {
    pub inception: &'a SharedInception,
    pub bank: FeatureBank,
    pub device: Device,
    pub score: Box<FeatureScore<'a>>,
}

impl Accumulator for KeptFeatures<'_> {
    fn observe(&mut self, batch: &Batch) -> Result<()> {
        let out = self.inception.outputs(batch)?;
        for (first, row, len) in contiguous_runs(batch.indices) {
            self.bank.add_batch(first, &out.features.f_narrow(0, row, len)?)?;
        }
        Ok(())
    }
    fn save(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer();
        self.bank.write_arrays(&mut w, path)?;
        write_npz(w, path)
    }
    fn merge_file(&mut self, path: &Path) -> Result<()> {
        let other = FeatureBank::read_arrays(&mut open_npz(path)?, path)?
            .ok_or_else(|| BenchError::file(path, "has no per-sample features"))?;
        self.bank.merge(&other)
    }
    fn finish(&self, _cx: &FinishContext) -> Result<Vec<(String, f64)>> {
        (self.score)(&self.bank.to_tensor(self.device)?)
    }
}

/// A reference's kept features on `device`, checked for width: what KID and PRDC compare with.
pub fn reference_features(path: &Path, dims: usize, device: Device) -> Result<Tensor> {
    let bank = FeatureBank::read_arrays(&mut open_npz(path)?, path)?.ok_or_else(|| {
        BenchError::file(
            path,
            "has no reference features, which metrics.kid and metrics.prdc need: make it with `bench stats --ref-features N`",
        )
    })?;
    if bank.dims() != dims {
        return Err(BenchError::file(path, format!("reference features have {} dims but metrics.fid.dims is {dims}", bank.dims())));
    }
    bank.to_tensor(device)
}
