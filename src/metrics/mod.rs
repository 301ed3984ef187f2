//! Sample quality: images → FID Inception features (preprocessing, network) → statistics →
//! Fréchet distance; image sources and the `bench fid` / `bench stats` pipeline. Beside FID, from
//! the same Inception pass: Inception Score, KID, precision/recall/density/coverage; FD in any
//! TorchScript encoder's feature space; Context-FID and the Sines data for time series.
pub mod context_fid;
pub mod datasets;
pub mod fd_features;
pub mod feature_bank;
pub mod fid_cli;
pub mod frechet;
pub mod image_metrics;
pub mod inception;
pub mod inception_score;
pub mod kid;
pub mod numpy_random;
pub mod prdc;
pub mod preprocess;
pub mod sines;
pub mod stats;

pub use preprocess::ResizeMode;
