//! FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to FID Inception pool
//! features of the samples and of the reference set, as pytorch-fid computes it.
//!
//! Default gate tolerance: the features come from float32 convolutions whose summation order
//! depends on the CPU's kernels (oneDNN picks them by ISA and thread count), so a feature moves
//! by ~1e-6 relative between machines; FID is a difference of traces (tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂)
//! + |μ₁ − μ₂|²), which carries that error relative to the traces, not to FID. On the gate's
//! random-weight Inception, where FID is of the order of the traces, the measured spread across
//! thread counts and emulated ISAs is below 1e-5 relative: 1e-4 leaves a 10× margin.
//! When FID ≪ the traces (real models), set an absolute tolerance in the baseline.
use super::fid_cli::FeatureExtractor;
use super::image_metrics::SharedInception;
use super::stats::{FeatureStats, FrechetAccumulator, Moments};
use super::{Accumulator, Better, ColumnDef, Metric, MetricDef, Tolerance};
use std::rc::Rc;
use tch::Kind;

pub static DEF: MetricDef = MetricDef {
    name: "fid",
    columns: &[ColumnDef {
        name: "fid",
        help: "FID against the reference statistics (`fid_mode` says which pipeline)",
        better: Better::Lower,
        tolerance: Tolerance { abs: 0.0, rel: 1e-4 },
    }],
};

pub struct Fid {
    /// The run's Inception pass (shared with the Inception Score, KID and PRDC).
    pub inception: Rc<SharedInception>,
    pub reference: Moments,
}

impl Metric for Fid {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn needs_images(&self) -> bool {
        true
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        let ex = &self.inception.extractor;
        Box::new(FrechetAccumulator {
            column: "fid".into(),
            features: Box::new(move |batch| Ok(self.inception.outputs(batch)?.features.f_to_kind(Kind::Double)?)),
            reference: &self.reference,
            stats: FeatureStats::new(ex.dims(), ex.net.device()),
        })
    }
}
