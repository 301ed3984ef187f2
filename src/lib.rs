//! samplerbench: measures diffusion samplers' speed against their sample quality.
//!
//! Data flow, one module per stage:
//! spec → plan (cells) → models (denoiser, decoder) → sampling → runner (quantised samples →
//! metrics: features → mergeable statistics) → results → report; check gates results.
pub mod error;
pub mod doctor;
pub mod fsutil;
pub mod hashing;
pub mod registry;
pub mod schedule;
pub mod timesteps;
pub mod respacing;
pub mod models;
pub mod sampling;
pub mod spec;
pub mod plan;
pub mod results;
pub mod report;
pub mod noise;
pub mod checkpoint;
pub mod metrics;
pub mod runner;
pub mod interrupt;
pub mod slurm;
pub mod status;
pub mod check;

// Links the system OpenBLAS that ndarray-linalg's LAPACK calls resolve to.
use openblas_src as _;

pub use error::{BenchError, Result};


/// Version string recorded in every result: crate version and the commit it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("BENCH_GIT_COMMIT");

