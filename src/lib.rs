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
pub mod conditioning;
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


/// Tests share tch's global generator across threads: [`test_rng::seed`] seeds it and keeps it
/// to the calling test until the test's thread ends, so tests that draw from it run one at a time
/// and a parallel test cannot consume numbers between a seed and its draws. Used by the unit
/// tests and the integration tests.
#[doc(hidden)]
pub mod test_rng {
    pub fn seed(seed: i64) {
        static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
        thread_local!(static HELD: std::cell::RefCell<Option<std::sync::MutexGuard<'static, ()>>> = const { std::cell::RefCell::new(None) });
        HELD.with(|h| {
            if h.borrow().is_none() {
                *h.borrow_mut() = Some(RNG.lock().unwrap_or_else(|e| e.into_inner()));
            }
        });
        tch::manual_seed(seed);
    }
}
