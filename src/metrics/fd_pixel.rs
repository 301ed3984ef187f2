//! Fréchet distance on the raw (unquantised) samples in the model's [−1, 1] units, against the
//! oracle's exact data moments or a reference `.npz` of pixel statistics.
//!
//! Default gate tolerance: samples are float32 (rounding ~6e-8 relative per element, the same on
//! every CPU for the elementwise oracle path) and their statistics f64 with compensated sums; the
//! LAPACK Fréchet step (OpenBLAS kernels differ by CPU) adds ~1e-12 relative to the traces. The
//! distance is a difference of traces, so allow 1e-6 relative to the traces' scale: with FD and
//! the traces of the same order on the gate's oracle specs, rel 1e-6 of the value.
use super::frechet::frechet_distance;
use super::stats::{FeatureStats, Moments};
use super::{Accumulator, Better, Batch, ColumnDef, FinishContext, Metric, MetricDef, Tolerance};
use crate::Result;
use std::path::Path;
use tch::{Device, Kind};

pub static DEF: MetricDef = MetricDef {
    name: "fd_pixel",
    columns: &[ColumnDef {
        name: "fd_pixel",
        help: "Fréchet distance on the raw (unquantised) samples, in the model's [−1, 1] units, against the oracle's exact moments or a reference .npz",
        better: Better::Lower,
        tolerance: Tolerance { abs: 0.0, rel: 1e-6 },
    }],
};

pub struct FdPixel {
    pub reference: Moments,
    pub device: Device,
}

impl Metric for FdPixel {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        Box::new(PixelStats { metric: self, stats: FeatureStats::new(self.reference.dims(), self.device) })
    }
}

struct PixelStats<'a> {
    metric: &'a FdPixel,
    stats: FeatureStats,
}

impl Accumulator for PixelStats<'_> {
    fn observe(&mut self, batch: &Batch) -> Result<()> {
        let n = batch.samples.size()[0];
        self.stats.add_batch(&batch.samples.reshape([n, -1]).to_kind(Kind::Double))
    }
    fn save(&self, path: &Path) -> Result<()> {
        self.stats.save_npz(path)
    }
    fn merge_file(&mut self, path: &Path) -> Result<()> {
        self.stats.merge(&FeatureStats::load_npz(path, self.stats.device())?)
    }
    fn finish(&self, _cx: &FinishContext) -> Result<Vec<(String, f64)>> {
        let m = self.stats.moments()?;
        let r = &self.metric.reference;
        Ok(vec![("fd_pixel".into(), frechet_distance(m.mu.view(), m.sigma.view(), r.mu.view(), r.sigma.view())?)])
    }
}
