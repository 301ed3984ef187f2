//! Sample quality. Every metric is one [`Metric`]: a static [`MetricDef`] (its result columns,
//! their meaning and default `bench check` tolerance) and a per-run object that says what it
//! consumes (samples, uint8 images) and makes mergeable per-part [`Accumulator`]s.
//!
//! Metrics: `fid.rs` (FID), `fd_pixel.rs` (Fréchet distance of raw samples), `fd_exact.rs`
//! (closed form on the Gaussian oracle); from the same Inception pass as FID,
//! `inception_score.rs` (IS), `kid.rs` (KID), `prdc.rs` (precision/recall/density/coverage).
//! Their machinery: images → FID Inception features (`preprocess.rs`, `inception.rs`) →
//! streaming statistics (`stats.rs`) or kept features (`feature_bank.rs`) → Fréchet distance
//! (`frechet.rs`); image sources and the `bench fid` / `bench stats` pipeline (`datasets.rs`,
//! `fid_cli.rs`, `image_metrics.rs`). Beside them: FD in any TorchScript encoder's feature space
//! (`fd_features.rs`), Context-FID and the Sines data for time series (`context_fid.rs`,
//! `sines.rs`); CLIP score (`clip_score.rs`).
pub mod clip_score;
pub mod context_fid;
pub mod datasets;
pub mod fd_exact;
pub mod fd_features;
pub mod fd_pixel;
pub mod feature_bank;
pub mod fid;
pub mod fid_cli;
pub mod frechet;
pub mod image_metrics;
pub mod inception;
pub mod inception_score;
pub mod kid;
pub mod numpy_random;
pub mod prdc;
pub mod preprocess;
pub mod repeats;
pub mod sines;
pub mod stats;

pub use preprocess::ResizeMode;

use crate::models::LoadedModel;
use crate::sampling::Sampler;
use crate::Result;
use std::path::Path;
use tch::Tensor;

/// A metric may worsen by at most max(abs, rel·|baseline|) in `bench check`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.abs != 0.0, self.rel != 0.0) {
            (true, true) => write!(f, "max(abs {:e}, rel {:e})", self.abs, self.rel),
            (true, false) => write!(f, "abs {:e}", self.abs),
            (false, _) => write!(f, "rel {:e}", self.rel),
        }
    }
}

/// Which way a column improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// One result column a metric fills.
#[derive(Debug)]
pub struct ColumnDef {
    pub name: &'static str,
    pub help: &'static str,
    pub better: Better,
    /// `bench check`'s default, derived from the arithmetic that produces the number (see the
    /// metric's module); baselines record the tolerance they were written with.
    pub tolerance: Tolerance,
}

#[derive(Debug)]
pub struct MetricDef {
    /// The key under `metrics:` in a spec.
    pub name: &'static str,
    pub columns: &'static [ColumnDef],
}

/// Every metric, in the order reports prefer them.
pub static METRICS: &[&MetricDef] = &[
    &fid::DEF,
    &fd_exact::DEF,
    &fd_pixel::DEF,
    &inception_score::DEF,
    &kid::DEF,
    &prdc::DEF,
    &fd_features::DEF,
    &context_fid::DEF,
    &clip_score::DEF,
];

/// The column definition of a metric column: a known name, else an `fd_features` entry's column
/// (its spec `name`, which starts with `fd_`).
pub fn column(name: &str) -> Option<&'static ColumnDef> {
    METRICS.iter().flat_map(|m| m.columns.iter()).find(|c| c.name == name).or_else(|| {
        (name.starts_with("fd_") && !name.ends_with(repeats::CI_SUFFIX)).then(|| &fd_features::DEF.columns[0])
    })
}

/// The README's metric reference (between its `metrics:begin/end` markers; a test keeps it in
/// sync with the definitions).
pub fn render_markdown() -> String {
    let mut out = String::from("| spec key | column | meaning | default `bench check` tolerance |\n|---|---|---|---|\n");
    for m in METRICS {
        for c in m.columns {
            let dir = match c.better {
                Better::Lower => "lower is better",
                Better::Higher => "higher is better",
            };
            out += &format!("| `metrics.{}` | `{}` | {} ({dir}) | {} |\n", m.name, c.name, c.help, c.tolerance);
        }
    }
    out
}

/// What one batch gives the metrics: the finite samples (after the decoder, in [−1, 1]) and,
/// when some metric asked for them, the same samples quantised to uint8 images.
pub struct Batch<'a> {
    pub samples: &'a Tensor,
    pub images: Option<&'a Tensor>,
    /// Index within the cell of each row (rows of NaN/Inf samples are left out, so gaps occur).
    pub indices: &'a [u64],
    /// The FID Inception's outputs for `images`, filled by the first metric that reads them
    /// ([`image_metrics::SharedInception`]), so one forward serves FID, IS, KID and PRDC.
    pub inception: &'a std::cell::RefCell<Option<image_metrics::InceptionOutput>>,
    /// The prompt each row was conditioned on (empty unless the run has prompts).
    pub prompts: &'a [&'a str],
}

/// What a metric's final numbers may use besides its statistics.
pub struct FinishContext<'a> {
    pub sampler: &'a dyn Sampler,
    pub model: &'a LoadedModel,
}

/// A metric's running statistics for one part of one cell: fed batch by batch, saved with the
/// part's checkpoint, merged across parts (sums, so the order does not matter).
pub trait Accumulator {
    fn observe(&mut self, batch: &Batch) -> Result<()>;
    /// Writes the statistics to `path`, atomically ([`stats::write_npz`]): a failure leaves
    /// neither a partial file nor a temporary one.
    fn save(&self, path: &Path) -> Result<()>;
    /// Adds the statistics another part saved at `path`.
    fn merge_file(&mut self, path: &Path) -> Result<()>;
    /// The metric's columns and values.
    fn finish(&self, cx: &FinishContext) -> Result<Vec<(String, f64)>>;
}

/// A metric configured for one run (reference statistics and networks loaded).
pub trait Metric {
    fn def(&self) -> &'static MetricDef;
    /// Names its statistics files; unique per run (several `fd_features` entries share one def).
    fn key(&self) -> String {
        self.def().name.to_owned()
    }
    /// Whether batches must carry uint8 images.
    fn needs_images(&self) -> bool {
        false
    }
    /// Whether it keeps per-sample statistics (fd_exact does not: it is computed from the sampler).
    fn has_statistics(&self) -> bool {
        true
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_>;
}
