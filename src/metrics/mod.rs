//! Sample quality: images → FID Inception features (preprocessing, network) → statistics →
//! Fréchet distance; image sources and the `bench fid` / `bench stats` pipeline.
pub mod clip_score;
pub mod datasets;
pub mod fid_cli;
pub mod frechet;
pub mod inception;
pub mod preprocess;
pub mod stats;

pub use preprocess::ResizeMode;
