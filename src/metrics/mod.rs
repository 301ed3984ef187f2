//! Sample-quality metrics: the FID Inception network and its input preprocessing.
pub mod inception;
pub mod preprocess;
