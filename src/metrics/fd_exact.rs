//! The exact Fréchet distance between an affine sampler's output distribution and the Gaussian
//! oracle's data distribution (see `sampling::exact`): no samples, no sampling error.
//!
//! Default gate tolerance: computed in f64 from the sampler's own arithmetic (probes of the
//! affine map), so it differs between machines only by libm's last-bit differences in exp/log
//! of the schedule: 1e-9 relative.
use super::{Accumulator, Better, Batch, ColumnDef, FinishContext, Metric, MetricDef, Tolerance};
use crate::sampling::exact::exact_fd;
use crate::Result;
use std::path::Path;

pub static DEF: MetricDef = MetricDef {
    name: "fd_exact",
    columns: &[ColumnDef {
        name: "fd_exact",
        help: "Fréchet distance to the oracle's exact data moments (Gaussian oracle, affine samplers; empty otherwise)",
        better: Better::Lower,
        tolerance: Tolerance { abs: 0.0, rel: 1e-9 },
    }],
};

pub struct FdExact;

impl Metric for FdExact {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn has_statistics(&self) -> bool {
        false
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        Box::new(Exact)
    }
}

struct Exact;

impl Accumulator for Exact {
    fn observe(&mut self, _batch: &Batch) -> Result<()> {
        Ok(())
    }
    fn save(&self, _path: &Path) -> Result<()> {
        Ok(())
    }
    fn merge_file(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }
    /// Empty for samplers that are not affine in x_T (e.g. `ddpm_large` clamps x̂0).
    fn finish(&self, cx: &FinishContext) -> Result<Vec<(String, f64)>> {
        Ok(match &cx.model.gaussian {
            Some(oracle) => exact_fd(cx.sampler, oracle).ok().map(|v| vec![("fd_exact".into(), v)]).unwrap_or_default(),
            None => vec![],
        })
    }
}
