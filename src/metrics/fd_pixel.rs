//! Fréchet distance on the raw (unquantised) samples in the model's [−1, 1] units, against the
//! oracle's exact data moments or a reference `.npz` of pixel statistics.
//!
//! Default gate tolerance: samples are float32 (rounding ~6e-8 relative per element, the same on
//! every CPU for the elementwise oracle path) and their statistics f64 with compensated sums; the
//! LAPACK Fréchet step (OpenBLAS kernels differ by CPU) adds ~1e-12 relative to the traces. The
//! distance is a difference of traces, so allow 1e-6 relative to the traces' scale: with FD and
//! the traces of the same order on the gate's oracle specs, rel 1e-6 of the value.
use super::stats::{FeatureStats, FrechetAccumulator, Moments};
use super::{Accumulator, Better, ColumnDef, Metric, MetricDef, Tolerance};
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
        Box::new(FrechetAccumulator {
            column: "fd_pixel".into(),
            features: Box::new(|batch| {
                let n = batch.samples.size()[0];
                Ok(batch.samples.f_reshape([n, -1])?.f_to_kind(Kind::Double)?)
            }),
            reference: &self.reference,
            stats: FeatureStats::new(self.reference.dims(), self.device),
        })
    }
}
