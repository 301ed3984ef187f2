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
use crate::metrics::fid_cli::ReferenceFile;
use crate::metrics::frechet::frechet_distance;
use crate::metrics::inception_score::{InceptionScore, InceptionScoreStats, IsParams};
use crate::metrics::kid::{kid, Kid, KidParams};
use crate::metrics::prdc::{prdc, Prdc, PrdcParams};
use crate::metrics::stats::{npz_writer, open_npz, FeatureStats};
use crate::{BenchError, Result};
use std::path::Path;
use tch::Device;

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
        let mut w = npz_writer(path)?;
        self.fid.write_arrays(&mut w, path)?;
        if let Some(is) = &self.inception_score {
            is.write_arrays(&mut w, path)?;
        }
        if let Some(bank) = &self.features {
            bank.write_arrays(&mut w, path)?;
        }
        w.finish().map_err(|e| BenchError::file(path, format!("writing .npz: {e}")))?;
        Ok(())
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
