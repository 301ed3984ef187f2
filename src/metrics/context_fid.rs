//! Context-FID (Jeha et al. 2022) as Diffusion-TS computes it (Utils/context_fid.py
//! `Context_FID`): a TS2Vec encoder maps each window [T, C] to per-step representations
//! [T, D]; `encode(..., encoding_window='full_series')` max-pools them over time to one D-vector
//! per window; the score is the Fréchet distance between the real and generated windows'
//! vectors. Both sides are in the [0, 1] scale of the real data (Diffusion-TS compares
//! `unnormalize_to_zero_to_one(samples)` with the min-max-scaled "norm_truth", or with the
//! Sines data, which are already in [0, 1]).
//!
//! The encoder is a TorchScript export of TS2Vec's network (see README, "Context-FID"): input
//! float32 [B, T, C], output [B, T, D]. Diffusion-TS trains a fresh TS2Vec on the real windows for
//! every evaluation; here the trained encoder is a file, so repeated evaluations share it.
//! Features stream into [`FeatureStats`] like FID's.
//!
//! In `bench run` (`metrics.context_fid`), a sample [C, L] is the window transposed ([L, C]
//! after `x.transpose(1, 2)`, Diffusion-TS's layout), and the reference is the real windows
//! `.npy` [N, T, C] in [0, 1] (encoded once at load) or an `.npz` of their representations'
//! statistics (`mu`, `sigma`). Default gate tolerance: as FID's (`fid.rs`), rel 1e-4: float32
//! representations, FD a difference of traces.
use crate::metrics::fd_features::TorchScriptEncoder;
use crate::metrics::frechet::frechet_distance;
use crate::metrics::stats::{FeatureStats, Moments};
use crate::metrics::stats::FrechetAccumulator;
use crate::metrics::{Accumulator, Batch, Better, ColumnDef, Metric, MetricDef, Tolerance};
use crate::{BenchError, Result};
use ndarray::ArrayView2;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// How windows get to the [0, 1] scale the encoder was trained on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsScaling {
    /// Already in [0, 1].
    Unit,
    /// Model space [−1, 1] → (x + 1)/2 (Diffusion-TS `unnormalize_to_zero_to_one`).
    NegOneToOne,
    /// Raw units → sklearn `MinMaxScaler` fitted on the real series: x·scale + min_ with
    /// scale = 1/(max − min) (1 where max = min) and min_ = −min·scale, per feature.
    MinMax { min: Vec<f64>, max: Vec<f64> },
}

impl TsScaling {
    /// sklearn's `MinMaxScaler().fit(rows)` on the real series, rows [L, C].
    pub fn fit_min_max(rows: ArrayView2<f64>) -> Self {
        let c = rows.ncols();
        let mut min = vec![f64::INFINITY; c];
        let mut max = vec![f64::NEG_INFINITY; c];
        for r in rows.rows() {
            for (j, &v) in r.iter().enumerate() {
                min[j] = min[j].min(v);
                max[j] = max[j].max(v);
            }
        }
        TsScaling::MinMax { min, max }
    }

    /// Windows [B, T, C] (any float) → float32 [B, T, C] in the [0, 1] scale.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.f_to_kind(Kind::Double)?;
        let y = match self {
            TsScaling::Unit => x,
            TsScaling::NegOneToOne => x.f_add_scalar(1.0)?.f_mul_scalar(0.5)?,
            TsScaling::MinMax { min, max } => {
                let c = x.size().last().copied().unwrap_or(0);
                if min.len() as i64 != c || max.len() as i64 != c {
                    return Err(BenchError::user(format!(
                        "min-max scaling has {} features but the windows have {c}",
                        min.len()
                    )));
                }
                let scale: Vec<f64> =
                    min.iter().zip(max).map(|(lo, hi)| if hi - lo == 0.0 { 1.0 } else { 1.0 / (hi - lo) }).collect();
                let offset: Vec<f64> = min.iter().zip(&scale).map(|(lo, s)| -lo * s).collect();
                let dev = x.device();
                x.f_mul(&Tensor::from_slice(&scale).f_to_device(dev)?)?
                    .f_add(&Tensor::from_slice(&offset).f_to_device(dev)?)?
            }
        };
        Ok(y.f_to_kind(Kind::Float)?)
    }
}

/// A TS2Vec encoder, with the scaling that takes generated windows to the real data's [0, 1].
pub struct ContextFid {
    encoder: TorchScriptEncoder,
    /// Applied to generated windows; reference windows are taken as already in [0, 1].
    pub scaling: TsScaling,
}

impl ContextFid {
    pub fn load(encoder: &Path, scaling: TsScaling, device: Device) -> Result<Self> {
        Ok(ContextFid { encoder: TorchScriptEncoder::load(encoder, device)?, scaling })
    }

    /// Generated windows [B, T, C] → representations [B, D]: scaled, encoded to [B, T, D],
    /// max-pooled over T (TS2Vec `_eval_with_pooling`, `F.max_pool1d(kernel_size=T)`).
    pub fn features(&self, windows: &Tensor) -> Result<Tensor> {
        self.features_scaled(windows, &self.scaling)
    }

    /// Representations of real windows already in [0, 1] (Diffusion-TS's "norm_truth").
    pub fn reference_features(&self, windows: &Tensor) -> Result<Tensor> {
        self.features_scaled(windows, &TsScaling::Unit)
    }

    fn features_scaled(&self, windows: &Tensor, scaling: &TsScaling) -> Result<Tensor> {
        if windows.dim() != 3 {
            return Err(BenchError::user(format!(
                "Context-FID needs windows [B, T, C]; got {:?}",
                windows.size()
            )));
        }
        let x = scaling.apply(windows)?;
        let y = self.encoder.encode(&x)?;
        if y.dim() != 3 || y.size()[1] != windows.size()[1] {
            return Err(BenchError::user(format!(
                "the Context-FID encoder returned {:?} for windows {:?}; expected [B, T, D] (TS2Vec's per-step representations)",
                y.size(),
                windows.size()
            )));
        }
        Ok(y.f_amax(&[1i64][..], false)?)
    }

    /// Statistics of generated windows [N, T, C], `batch_size` windows per encoder call.
    pub fn stats(&self, windows: &Tensor, batch_size: usize) -> Result<FeatureStats> {
        self.stats_scaled(windows, batch_size, &self.scaling)
    }

    /// Statistics of real windows [N, T, C] in [0, 1].
    pub fn reference_stats(&self, windows: &Tensor, batch_size: usize) -> Result<FeatureStats> {
        self.stats_scaled(windows, batch_size, &TsScaling::Unit)
    }

    fn stats_scaled(&self, windows: &Tensor, batch_size: usize, scaling: &TsScaling) -> Result<FeatureStats> {
        let n = windows.size().first().copied().unwrap_or(0);
        let mut stats: Option<FeatureStats> = None;
        for start in (0..n).step_by(batch_size.max(1)) {
            let chunk = windows.f_narrow(0, start, (batch_size as i64).min(n - start))?;
            let f = self.features_scaled(&chunk, scaling)?;
            let s = stats.get_or_insert_with(|| FeatureStats::new(f.size()[1] as usize, f.device()));
            s.add_batch(&f)?;
        }
        stats.ok_or_else(|| BenchError::user("Context-FID: no windows"))
    }
}

pub static DEF: MetricDef = MetricDef {
    name: "context_fid",
    columns: &[ColumnDef {
        name: "context_fid",
        help: "Context-FID (Diffusion-TS): FD of a TS2Vec encoder's max-pooled representations of the windows, in the real data's [0, 1] scale, against the real windows'",
        better: Better::Lower,
        tolerance: Tolerance { abs: 0.0, rel: 1e-4 },
    }],
};

/// Representation statistics of the real windows: an `.npz` (`mu`, `sigma`) as is, or an `.npy`
/// of windows [N, T, C] in [0, 1] (float32 or float64) encoded here.
pub fn load_reference(cf: &ContextFid, path: &Path, batch_size: usize) -> Result<Moments> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npz") => Moments::load_npz(path),
        Some("npy") => {
            let a: ndarray::Array3<f64> = match ndarray_npy::read_npy::<_, ndarray::Array3<f64>>(path) {
                Ok(a) => a,
                Err(_) => ndarray_npy::read_npy::<_, ndarray::Array3<f32>>(path)
                    .map_err(|e| BenchError::file(path, format!("expected real windows [N, T, C] (float32 or float64) in [0, 1]: {e}")))?
                    .mapv(f64::from),
            };
            let (n, t, c) = a.dim();
            let x = Tensor::from_slice(a.as_standard_layout().as_slice().unwrap_or(&[])).f_reshape([n as i64, t as i64, c as i64])?;
            cf.reference_stats(&x, batch_size)?.moments().map_err(|e| BenchError::file(path, e.to_string()))
        }
        _ => Err(BenchError::file(path, "reference must be real windows .npy [N, T, C] or representation statistics .npz (mu, sigma)")),
    }
}

/// `metrics.context_fid` in `bench run`: samples [B, C, L] against the reference's moments.
pub struct ContextFidMetric {
    pub cf: ContextFid,
    pub reference: Moments,
}

impl Metric for ContextFidMetric {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        let dims = self.reference.dims();
        Box::new(FrechetAccumulator {
            column: "context_fid".into(),
            features: Box::new(move |batch: &Batch| self.window_features(batch.samples, dims)),
            reference: &self.reference,
            stats: FeatureStats::new(dims, Device::Cpu),
        })
    }
}

impl ContextFidMetric {
    /// Samples [B, C, L] → windows [B, L, C] → encoder features (f64), checked against the
    /// reference's dimension.
    fn window_features(&self, samples: &Tensor, dims: usize) -> Result<Tensor> {
        if samples.dim() != 3 {
            return Err(BenchError::user(format!(
                "metrics.context_fid needs sequence samples [C, L]; a sample has shape {:?}",
                &samples.size()[1..]
            )));
        }
        let f = self.cf.features(&samples.f_transpose(1, 2)?)?;
        if f.size()[1] as usize != dims {
            return Err(BenchError::user(format!(
                "metrics.context_fid: the encoder gives {} features but the reference has {dims}",
                f.size()[1]
            )));
        }
        Ok(f.f_to_kind(Kind::Double)?)
    }
}

/// Context-FID between generated and real windows' statistics.
pub fn context_fid(generated: &FeatureStats, real: &FeatureStats) -> Result<f64> {
    let (g, r) = (generated.moments()?, real.moments()?);
    frechet_distance(g.mu.view(), g.sigma.view(), r.mu.view(), r.sigma.view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn scalings_map_to_the_unit_interval() {
        let x = Tensor::from_slice(&[-1.0f64, 0.0, 1.0, 3.0, 5.0, 7.0]).reshape([1, 3, 2]);
        let unit = TsScaling::NegOneToOne.apply(&x.narrow(1, 0, 1)).unwrap();
        assert_eq!(Vec::<f32>::try_from(unit.reshape([-1])).unwrap(), vec![0.0, 0.5]);
        let mm = TsScaling::fit_min_max(array![[-1.0, 0.0], [1.0, 8.0], [0.0, 4.0]].view());
        assert_eq!(mm, TsScaling::MinMax { min: vec![-1.0, 0.0], max: vec![1.0, 8.0] });
        let y = Vec::<f32>::try_from(mm.apply(&x).unwrap().reshape([-1])).unwrap();
        assert_eq!(y, vec![0.0, 0.0, 1.0, 0.375, 3.0, 0.875]);
    }
}
