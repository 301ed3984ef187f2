//! Inception Score (Salimans et al. 2016) as torch-fidelity 0.4.0 computes it
//! (metric_isc.py `isc_features_to_metric`): softmax of the FID Inception's unbiased logits in
//! f64, samples shuffled by `np.random.RandomState(2020).permutation(N)`, 10 splits of
//! rows `[i·N//10, (i+1)·N//10)`, per split exp(mean_x KL(p(y|x) ‖ p(y))), then mean and
//! population std over splits.
//!
//! Streaming form: with n samples in a split, mean KL = (1/n) Σ_x Σ_y p log p − Σ_y q log q,
//! q = (1/n) Σ_x p. So a split needs only Σ_x p (one 1008-vector) and Σ_x Σ_y p log p (a
//! number): 10 × 1009 f64 sums for the whole run, instead of per-sample probabilities. Which
//! split a sample falls in depends on N (the permutation of all N samples), so N is fixed when the
//! statistics are created; sums are added with TwoSum like [`crate::metrics::stats`], so shards
//! merge in any order to the same values.
//!
//! `.npz` keys: `is_total`, `is_splits` (u64), `is_shuffle_seed` (i64, −1 = no shuffle),
//! `is_count` [S] u64, `is_prob_sum`, `is_prob_sum_err` [S, C] f64, `is_plogp_sum`,
//! `is_plogp_sum_err` [S] f64.
use crate::metrics::numpy_random::RandomState;
use crate::metrics::image_metrics::{contiguous_runs, SharedInception, INCEPTION_CLASSES};
use crate::metrics::stats::{compensated_add, npz_writer, open_npz, write_npz, read_array, read_f64, to_array1, to_array2, NpzOut};
use crate::metrics::{Accumulator, Batch, Better, ColumnDef, FinishContext, Metric, MetricDef, Tolerance};
use crate::{BenchError, Result};
use ndarray::{Array0, Array1, Ix0, Ix1, Ix2};
use ndarray_npy::NpzReader;
use std::fs::File;
use std::path::Path;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

/// torch-fidelity's defaults: `isc_splits = 10`, `samples_shuffle = True`, `rng_seed = 2020`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IsParams {
    pub splits: usize,
    /// Seed of the sample shuffle before splitting; None keeps sample order.
    pub shuffle_seed: Option<u32>,
}

impl Default for IsParams {
    fn default() -> Self {
        IsParams { splits: 10, shuffle_seed: Some(2020) }
    }
}

/// The score: mean and population std over splits (torch-fidelity's `inception_score_mean/std`).
#[derive(Clone, Debug, PartialEq)]
pub struct InceptionScore {
    pub mean: f64,
    pub std: f64,
    pub splits: Vec<f64>,
}

/// Running per-split sums over the N samples of one set.
#[derive(Debug)]
pub struct InceptionScoreStats {
    total: u64,
    params: IsParams,
    classes: usize,
    /// Split of each sample index (derived from total and params, not stored).
    split_of: Vec<u32>,
    count: Vec<u64>,
    prob_sum: Tensor,
    prob_err: Tensor,
    plogp_sum: Tensor,
    plogp_err: Tensor,
}

/// Split of every sample: torch-fidelity reorders rows as `feature[perm]`, so sample `perm[r]`
/// lands at row r, in split i where i·N//S ≤ r < (i+1)·N//S.
fn split_assignment(total: usize, params: &IsParams) -> Vec<u32> {
    let perm: Vec<usize> = match params.shuffle_seed {
        Some(seed) => RandomState::new(seed).permutation(total),
        None => (0..total).collect(),
    };
    let s = params.splits;
    let mut split_of = vec![0u32; total];
    for i in 0..s {
        for &sample in &perm[i * total / s..(i + 1) * total / s] {
            split_of[sample] = i as u32;
        }
    }
    split_of
}

impl InceptionScoreStats {
    /// Statistics for a set of exactly `total` samples (indices 0..total) with `classes` logits.
    pub fn new(total: usize, params: IsParams, classes: usize, device: Device) -> Result<Self> {
        if params.splits == 0 || total < params.splits {
            return Err(BenchError::user(format!(
                "the Inception Score with {} splits needs at least {} samples; got {total}",
                params.splits,
                params.splits.max(1)
            )));
        }
        Ok(Self::empty(total, params, classes, device))
    }

    /// [`Self::new`] for parameters already checked (1 ≤ splits ≤ total).
    fn empty(total: usize, params: IsParams, classes: usize, device: Device) -> Self {
        let (s, c) = (params.splits as i64, classes as i64);
        let z = |shape: &[i64]| Tensor::zeros(shape, (Kind::Double, device));
        InceptionScoreStats {
            total: total as u64,
            params,
            classes,
            split_of: split_assignment(total, &params),
            count: vec![0; params.splits],
            prob_sum: z(&[s, c]),
            prob_err: z(&[s, c]),
            plogp_sum: z(&[s]),
            plogp_err: z(&[s]),
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }
    pub fn params(&self) -> IsParams {
        self.params
    }
    /// Samples added so far.
    pub fn count(&self) -> u64 {
        self.count.iter().sum()
    }

    /// Adds the logits [B, C] (any float dtype and device) of samples `first_index .. first_index+B`.
    pub fn add_batch(&mut self, first_index: u64, logits: &Tensor) -> Result<()> {
        let size = logits.size();
        if size.len() != 2 || size[1] != self.classes as i64 {
            return Err(BenchError::Internal(format!(
                "logits batch has shape {size:?}, expected [B, {}]",
                self.classes
            )));
        }
        let b = size[0] as u64;
        if first_index + b > self.total {
            return Err(BenchError::Internal(format!(
                "samples {first_index}..{} are outside the {} the Inception Score was set up for",
                first_index + b,
                self.total
            )));
        }
        if b == 0 {
            return Ok(());
        }
        let dev = self.prob_sum.device();
        let logp = logits.f_to_device(dev)?.f_to_kind(Kind::Double)?.f_log_softmax(1, Kind::Double)?;
        let p = logp.f_exp()?;
        let plogp = p.f_mul(&logp)?.f_sum_dim_intlist(Some(&[1i64][..]), false, Kind::Double)?;
        let mut rows_of: Vec<Vec<i64>> = vec![Vec::new(); self.params.splits];
        for r in 0..b {
            rows_of[self.split_of[(first_index + r) as usize] as usize].push(r as i64);
        }
        // Per-split sums of this batch (zero for splits it does not touch: adding an exact zero
        // leaves the TwoSum pair unchanged).
        let c = self.classes as i64;
        let mut prob_rows = Vec::with_capacity(self.params.splits);
        let mut plogp_rows = Vec::with_capacity(self.params.splits);
        for (s, rows) in rows_of.iter().enumerate() {
            if rows.is_empty() {
                prob_rows.push(Tensor::zeros([c], (Kind::Double, dev)));
                plogp_rows.push(Tensor::zeros([], (Kind::Double, dev)));
                continue;
            }
            let idx = Tensor::from_slice(rows).f_to_device(dev)?;
            prob_rows.push(p.f_index_select(0, &idx)?.f_sum_dim_intlist(Some(&[0i64][..]), false, Kind::Double)?);
            plogp_rows.push(plogp.f_index_select(0, &idx)?.f_sum(Kind::Double)?);
            self.count[s] += rows.len() as u64;
        }
        compensated_add(&mut self.prob_sum, &mut self.prob_err, &Tensor::f_stack(&prob_rows, 0)?)?;
        compensated_add(&mut self.plogp_sum, &mut self.plogp_err, &Tensor::f_stack(&plogp_rows, 0)?)?;
        Ok(())
    }

    /// Adds another shard's sums (same N, splits, seed and classes).
    pub fn merge(&mut self, other: &InceptionScoreStats) -> Result<()> {
        if (other.total, other.params, other.classes) != (self.total, self.params, self.classes) {
            return Err(BenchError::user(format!(
                "cannot merge Inception Score statistics set up for N={} ({:?}, {} classes) and N={} ({:?}, {} classes)",
                self.total, self.params, self.classes, other.total, other.params, other.classes
            )));
        }
        let dev = self.prob_sum.device();
        compensated_add(&mut self.prob_sum, &mut self.prob_err, &other.prob_sum.f_to_device(dev)?)?;
        self.prob_err = self.prob_err.f_add(&other.prob_err.f_to_device(dev)?)?;
        compensated_add(&mut self.plogp_sum, &mut self.plogp_err, &other.plogp_sum.f_to_device(dev)?)?;
        self.plogp_err = self.plogp_err.f_add(&other.plogp_err.f_to_device(dev)?)?;
        for (a, b) in self.count.iter_mut().zip(&other.count) {
            *a += b;
        }
        Ok(())
    }

    /// The score, once every one of the N samples has been added.
    pub fn score(&self) -> Result<InceptionScore> {
        if self.count() != self.total {
            return Err(BenchError::user(format!(
                "the Inception Score was set up for {} samples but has {}",
                self.total,
                self.count()
            )));
        }
        self.score_of_present()
    }

    /// The score of the samples added, each split over the samples of it that are present (a
    /// run leaves NaN/Inf samples out, as for every metric).
    pub fn score_of_present(&self) -> Result<InceptionScore> {
        if let Some(s) = self.count.iter().position(|&c| c == 0) {
            return Err(BenchError::user(format!("the Inception Score's split {s} has no (finite) sample")));
        }
        let prob = to_array2_rect(&self.prob_sum.f_add(&self.prob_err)?, self.params.splits, self.classes)?;
        let plogp = to_array1(&self.plogp_sum.f_add(&self.plogp_err)?)?;
        let scores: Vec<f64> = (0..self.params.splits)
            .map(|s| {
                let n = self.count[s] as f64;
                // Σ_y q log q, with 0 log 0 = 0.
                let q_log_q: f64 = prob.row(s).iter().map(|&ps| ps / n).filter(|&q| q > 0.0).map(|q| q * q.ln()).sum();
                (plogp[s] / n - q_log_q).exp()
            })
            .collect();
        let k = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / k;
        let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / k).sqrt();
        Ok(InceptionScore { mean, std, splits: scores })
    }

    /// Writes the `is_*` arrays into an open `.npz`.
    pub fn write_arrays(&self, w: &mut NpzOut, path: &Path) -> Result<()> {
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
        let seed = self.params.shuffle_seed.map(i64::from).unwrap_or(-1);
        w.add_array("is_total", &Array0::from_elem((), self.total)).map_err(err)?;
        w.add_array("is_splits", &Array0::from_elem((), self.params.splits as u64)).map_err(err)?;
        w.add_array("is_shuffle_seed", &Array0::from_elem((), seed)).map_err(err)?;
        w.add_array("is_count", &Array1::from(self.count.clone())).map_err(err)?;
        let (s, c) = (self.params.splits, self.classes);
        w.add_array("is_prob_sum", &to_array2_rect(&self.prob_sum, s, c)?).map_err(err)?;
        w.add_array("is_prob_sum_err", &to_array2_rect(&self.prob_err, s, c)?).map_err(err)?;
        w.add_array("is_plogp_sum", &to_array1(&self.plogp_sum)?).map_err(err)?;
        w.add_array("is_plogp_sum_err", &to_array1(&self.plogp_err)?).map_err(err)?;
        Ok(())
    }

    /// Reads the `is_*` arrays; None if the file has none.
    pub fn read_arrays(r: &mut NpzReader<File>, path: &Path, device: Device) -> Result<Option<Self>> {
        let names = r.names().map_err(|e| BenchError::file(path, format!("not a readable .npz: {e}")))?;
        if !names.iter().any(|n| n == "is_total") {
            return Ok(None);
        }
        let total = read_array::<Ix0, u64>(r, path, "is_total")?.into_scalar();
        let splits = read_array::<Ix0, u64>(r, path, "is_splits")?.into_scalar() as usize;
        let seed = read_array::<Ix0, i64>(r, path, "is_shuffle_seed")?.into_scalar();
        let count = read_array::<Ix1, u64>(r, path, "is_count")?.to_vec();
        let prob = read_f64::<Ix2>(r, path, "is_prob_sum")?;
        let prob_err = read_f64::<Ix2>(r, path, "is_prob_sum_err")?;
        let plogp = read_f64::<Ix1>(r, path, "is_plogp_sum")?;
        let plogp_err = read_f64::<Ix1>(r, path, "is_plogp_sum_err")?;
        let classes = prob.ncols();
        if count.len() != splits
            || prob.nrows() != splits
            || prob_err.dim() != prob.dim()
            || plogp.len() != splits
            || plogp_err.len() != splits
            || !(-1..=u32::MAX as i64).contains(&seed)
        {
            return Err(BenchError::file(path, "Inception Score sums have inconsistent shapes"));
        }
        let params = IsParams { splits, shuffle_seed: (seed >= 0).then_some(seed as u32) };
        let mut st = Self::new(total as usize, params, classes, device).map_err(|e| BenchError::file(path, e.to_string()))?;
        let t2 = |a: &ndarray::Array2<f64>| -> Result<Tensor> {
            let v: Vec<f64> = a.iter().copied().collect();
            Ok(Tensor::from_slice(&v).f_reshape([splits as i64, classes as i64])?.f_to_device(device)?)
        };
        let t1 = |a: &Array1<f64>| -> Result<Tensor> { Ok(Tensor::from_slice(&a.to_vec()).f_to_device(device)?) };
        st.count = count;
        st.prob_sum = t2(&prob)?;
        st.prob_err = t2(&prob_err)?;
        st.plogp_sum = t1(&plogp)?;
        st.plogp_err = t1(&plogp_err)?;
        Ok(Some(st))
    }
}

fn to_array2_rect(t: &Tensor, rows: usize, cols: usize) -> Result<ndarray::Array2<f64>> {
    if rows == cols {
        return to_array2(t, rows);
    }
    let v = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?.f_contiguous()?.f_reshape([-1])?)?;
    ndarray::Array2::from_shape_vec((rows, cols), v).map_err(|e| BenchError::Internal(format!("IS sums shape: {e}")))
}

// ---------------------------------------------------------------------------------------------
// `metrics.inception_score` in `bench run`.
//
// Default gate tolerance: the logits come from the same float32 convolutions as FID's features
// and move by ~1e-6 of their scale between machines (see `fid.rs`). log IS is a mean of KL
// divergences of softmaxes, and a softmax's log-probabilities move by at most 2·max|Δz| when
// the logits z move by Δz, so |Δ log IS| ≤ 4·max|Δz| ≈ 4e-6·max|z|; with max|z| ≲ 25 (trained and
// random-weight Inceptions alike) that is ≤ 1e-4 relative, the bound used.

pub static DEF: MetricDef = MetricDef {
    name: "inception_score",
    columns: &[ColumnDef {
        name: "inception_score",
        help: "Inception Score, mean over splits (torch-fidelity's `inception_score_mean`), from `metrics.fid`'s Inception pass",
        better: Better::Higher,
        tolerance: Tolerance { abs: 0.0, rel: 1e-4 },
    }],
};

/// The Inception Score of a cell's `samples` samples.
pub struct InceptionScoreMetric {
    inception: Rc<SharedInception>,
    params: IsParams,
    samples: usize,
}

impl InceptionScoreMetric {
    pub fn new(inception: Rc<SharedInception>, params: IsParams, samples: usize) -> Result<Self> {
        if !inception.extractor.net.has_classifier() {
            return Err(BenchError::user(
                "metrics.inception_score needs Inception weights with the classifier (fc) layer; metrics.fid.weights has none",
            ));
        }
        InceptionScoreStats::new(samples, params, INCEPTION_CLASSES, Device::Cpu)?;
        Ok(InceptionScoreMetric { inception, params, samples })
    }
}

impl Metric for InceptionScoreMetric {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn needs_images(&self) -> bool {
        true
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        let device = self.inception.extractor.net.device();
        Box::new(IsAccumulator {
            inception: &self.inception,
            stats: InceptionScoreStats::empty(self.samples, self.params, INCEPTION_CLASSES, device),
        })
    }
}

struct IsAccumulator<'a> {
    inception: &'a SharedInception,
    stats: InceptionScoreStats,
}

impl Accumulator for IsAccumulator<'_> {
    fn observe(&mut self, batch: &Batch) -> Result<()> {
        let out = self.inception.outputs(batch)?;
        let logits = out.logits.as_ref().ok_or_else(|| BenchError::Internal("inception_score: pass without logits".into()))?;
        for (first, row, len) in contiguous_runs(batch.indices) {
            self.stats.add_batch(first, &logits.f_narrow(0, row, len)?)?;
        }
        Ok(())
    }
    fn save(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer();
        self.stats.write_arrays(&mut w, path)?;
        write_npz(w, path)
    }
    fn merge_file(&mut self, path: &Path) -> Result<()> {
        let other = InceptionScoreStats::read_arrays(&mut open_npz(path)?, path, self.stats.prob_sum.device())?
            .ok_or_else(|| BenchError::file(path, "has no Inception Score statistics"))?;
        self.stats.merge(&other)
    }
    fn finish(&self, _cx: &FinishContext) -> Result<Vec<(String, f64)>> {
        Ok(vec![("inception_score".into(), self.stats.score_of_present()?.mean)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_predictions_score_one_and_confident_distinct_ones_score_the_class_count() {
        // Identical p(y|x) for all x: KL = 0, IS = 1. One-hot-like distinct classes: IS → C.
        let n = 40;
        let mut st = InceptionScoreStats::new(n, IsParams { splits: 4, shuffle_seed: Some(1) }, 8, Device::Cpu).unwrap();
        st.add_batch(0, &Tensor::zeros([n as i64, 8], (Kind::Float, Device::Cpu))).unwrap();
        let s = st.score().unwrap();
        assert!((s.mean - 1.0).abs() < 1e-14 && s.std < 1e-14, "{s:?}");

        let mut st = InceptionScoreStats::new(n, IsParams { splits: 1, shuffle_seed: None }, 8, Device::Cpu).unwrap();
        let labels = Tensor::arange(n as i64, (Kind::Int64, Device::Cpu)).remainder(8);
        let logits = labels.one_hot(8).to_kind(Kind::Float) * 60.0;
        st.add_batch(0, &logits.narrow(0, 0, 15)).unwrap();
        st.add_batch(15, &logits.narrow(0, 15, 25)).unwrap();
        let s = st.score().unwrap();
        assert!((s.mean - 8.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn incomplete_or_mismatched_statistics_are_refused() {
        let mut a = InceptionScoreStats::new(20, IsParams::default(), 4, Device::Cpu).unwrap();
        a.add_batch(0, &Tensor::zeros([5, 4], (Kind::Float, Device::Cpu))).unwrap();
        assert!(a.score().is_err());
        let b = InceptionScoreStats::new(21, IsParams::default(), 4, Device::Cpu).unwrap();
        assert!(a.merge(&b).is_err());
        assert!(InceptionScoreStats::new(9, IsParams::default(), 4, Device::Cpu).is_err());
    }
}
