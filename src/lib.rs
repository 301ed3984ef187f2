//! samplerbench: measures diffusion samplers' speed against their sample quality.
//!
//! Data flow, one module per stage:
//! spec → cells → sampling(model) → quantised samples → metrics (features → statistics) → results → report.
pub mod error;
pub mod doctor;
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
pub mod check;

// Links the system OpenBLAS that ndarray-linalg's LAPACK calls resolve to.
use openblas_src as _;

pub use error::{BenchError, Result};


/// Version string recorded in every result: crate version and the commit it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("BENCH_GIT_COMMIT");

