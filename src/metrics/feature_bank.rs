//! Per-sample features kept for the metrics that need the samples themselves rather than their
//! mean and covariance: KID (random subsets of both sets) and precision/recall/density/coverage
//! (nearest neighbours). Rows are float32 exactly as the network produced them, keyed by sample
//! index, so shards merge by concatenation and the merged bank does not depend on shard order.
//!
//! Cost: 4·D bytes per sample: 8 KiB at D = 2048, i.e. 400 MB for 50,000 samples, in memory
//! and in each shard's `.npz`. Both KID (torch-fidelity draws its subsets from all samples) and
//! precision/recall (every sample's neighbourhood) are defined on all generated samples, so the
//! generated side keeps them all; f16 would change the features by ~5e-4 relative and with them
//! the neighbourhood tests, so rows stay f32. The reference side may be a seeded subset
//! ([`reference_subset`]): that changes the reference set the metrics see, and is recorded.
//!
//! `.npz` keys: `features` [n, D] float32 and `features_index` [n] uint64.
use crate::metrics::numpy_random::RandomState;
use crate::metrics::stats::{read_array, NpzOut};
use crate::{BenchError, Result};
use ndarray::{Array1, Array2, Ix1, Ix2};
use ndarray_npy::NpzReader;
use std::fs::File;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Feature rows by sample index.
#[derive(Clone, Debug, Default)]
pub struct FeatureBank {
    dims: usize,
    index: Vec<u64>,
    rows: Vec<f32>,
}

impl FeatureBank {
    pub fn new(dims: usize) -> Self {
        FeatureBank { dims, index: Vec::new(), rows: Vec::new() }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    /// Sample indices held, in insertion order.
    pub fn indices(&self) -> &[u64] {
        &self.index
    }

    /// Adds a [B, D] batch (any float dtype, any device) for samples `first_index .. first_index+B`.
    pub fn add_batch(&mut self, first_index: u64, features: &Tensor) -> Result<()> {
        let b = self.check_batch(features)?;
        let idx: Vec<u64> = (first_index..first_index + b as u64).collect();
        self.push(&idx, features)
    }

    /// Adds the rows of a [B, D] batch whose sample index (`first_index + row`) is in `keep`
    /// (sorted ascending): how `bench stats` keeps its seeded reference subset while streaming.
    pub fn add_batch_subset(&mut self, first_index: u64, features: &Tensor, keep: &[u64]) -> Result<()> {
        let b = self.check_batch(features)? as u64;
        let lo = keep.partition_point(|&i| i < first_index);
        let hi = keep.partition_point(|&i| i < first_index + b);
        if lo == hi {
            return Ok(());
        }
        let idx = &keep[lo..hi];
        let rows: Vec<i64> = idx.iter().map(|&i| (i - first_index) as i64).collect();
        let sel = features.f_index_select(0, &Tensor::from_slice(&rows).f_to_device(features.device())?)?;
        self.push(idx, &sel)
    }

    fn check_batch(&self, features: &Tensor) -> Result<usize> {
        let size = features.size();
        if size.len() != 2 || size[1] != self.dims as i64 {
            return Err(BenchError::Internal(format!(
                "feature batch has shape {size:?}, expected [B, {}]",
                self.dims
            )));
        }
        Ok(size[0] as usize)
    }

    fn push(&mut self, idx: &[u64], features: &Tensor) -> Result<()> {
        let f = features.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
        let v = Vec::<f32>::try_from(f.f_reshape([-1])?)?;
        self.rows.extend_from_slice(&v);
        self.index.extend_from_slice(idx);
        Ok(())
    }

    /// Adds another shard's rows (same D); a sample index present in both is an error.
    pub fn merge(&mut self, other: &FeatureBank) -> Result<()> {
        if other.dims != self.dims {
            return Err(BenchError::user(format!(
                "cannot merge per-sample features of {} and {} dimensions",
                self.dims, other.dims
            )));
        }
        self.index.extend_from_slice(&other.index);
        self.rows.extend_from_slice(&other.rows);
        self.order().map(|_| ())
    }

    /// Row positions in ascending sample-index order; duplicates are an error.
    fn order(&self) -> Result<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.index.len()).collect();
        order.sort_by_key(|&i| self.index[i]);
        if let Some(w) = order.windows(2).find(|w| self.index[w[0]] == self.index[w[1]]) {
            return Err(BenchError::user(format!(
                "sample {} has features twice (overlapping shards?)",
                self.index[w[0]]
            )));
        }
        Ok(order)
    }

    /// All rows as a float32 [n, D] tensor in ascending sample-index order.
    pub fn to_tensor(&self, device: Device) -> Result<Tensor> {
        let order = self.order()?;
        let d = self.dims;
        let mut out = Vec::with_capacity(self.rows.len());
        for i in order {
            out.extend_from_slice(&self.rows[i * d..(i + 1) * d]);
        }
        Ok(Tensor::from_slice(&out).f_reshape([self.index.len() as i64, d as i64])?.f_to_device(device)?)
    }

    /// Writes `features` and `features_index` (ascending sample index) into an open `.npz`.
    pub fn write_arrays(&self, w: &mut NpzOut, path: &Path) -> Result<()> {
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
        let order = self.order()?;
        let d = self.dims;
        let mut rows = Vec::with_capacity(self.rows.len());
        for &i in &order {
            rows.extend_from_slice(&self.rows[i * d..(i + 1) * d]);
        }
        let index: Vec<u64> = order.iter().map(|&i| self.index[i]).collect();
        let rows = Array2::from_shape_vec((index.len(), d), rows)
            .map_err(|e| BenchError::Internal(format!("feature rows: {e}")))?;
        w.add_array("features", &rows).map_err(err)?;
        w.add_array("features_index", &Array1::from(index)).map_err(err)?;
        Ok(())
    }

    /// Reads `features` / `features_index` from an open `.npz`; None if the file has neither.
    pub fn read_arrays(r: &mut NpzReader<File>, path: &Path) -> Result<Option<FeatureBank>> {
        let names = r.names().map_err(|e| BenchError::file(path, format!("not a readable .npz: {e}")))?;
        let has = |k: &str| names.iter().any(|n| n == k);
        match (has("features"), has("features_index")) {
            (false, false) => return Ok(None),
            (true, true) => {}
            _ => return Err(BenchError::file(path, "has only one of 'features' and 'features_index'")),
        }
        let rows: Array2<f32> = read_array::<Ix2, f32>(r, path, "features")
            .map_err(|_| BenchError::file(path, "'features' must be a float32 array [n, D]"))?;
        let index: Array1<u64> = read_array::<Ix1, u64>(r, path, "features_index")
            .map_err(|_| BenchError::file(path, "'features_index' must be a uint64 array [n]"))?;
        if index.len() != rows.nrows() {
            return Err(BenchError::file(
                path,
                format!("'features' has {} rows but 'features_index' {} entries", rows.nrows(), index.len()),
            ));
        }
        let bank = FeatureBank {
            dims: rows.ncols(),
            index: index.to_vec(),
            rows: rows.iter().copied().collect(),
        };
        bank.order().map_err(|e| BenchError::file(path, e.to_string()))?;
        Ok(Some(bank))
    }
}

/// Which of `total` samples a reference subset of at most `max` keeps: all when `max ≥ total`,
/// else numpy's `np.sort(np.random.RandomState(seed).choice(total, max, replace=False))`.
pub fn reference_subset(total: usize, max: usize, seed: u32) -> Result<Vec<u64>> {
    if max >= total {
        return Ok((0..total as u64).collect());
    }
    let mut idx: Vec<u64> = RandomState::new(seed)
        .choice_without_replacement(total, max)?
        .into_iter()
        .map(|i| i as u64)
        .collect();
    idx.sort_unstable();
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: i64, dims: i64, seed: i64) -> Tensor {
        crate::test_rng::seed(seed);
        Tensor::randn([rows, dims], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn shards_merge_in_any_order_to_the_same_rows() {
        let (a, b, c) = (batch(5, 4, 1), batch(3, 4, 2), batch(6, 4, 3));
        let mut one = FeatureBank::new(4);
        one.add_batch(0, &a).unwrap();
        one.add_batch(5, &b).unwrap();
        one.add_batch(8, &c).unwrap();
        let mut s1 = FeatureBank::new(4);
        s1.add_batch(8, &c).unwrap();
        let mut s2 = FeatureBank::new(4);
        s2.add_batch(5, &b).unwrap();
        s2.add_batch(0, &a).unwrap();
        s1.merge(&s2).unwrap();
        assert!(one.to_tensor(Device::Cpu).unwrap().equal(&s1.to_tensor(Device::Cpu).unwrap()));
        assert!(s1.merge(&s2).is_err(), "the same samples twice");
    }

    #[test]
    fn subset_keeps_only_the_chosen_rows() {
        let x = batch(10, 3, 4);
        let mut bank = FeatureBank::new(3);
        let keep = [2u64, 7, 11, 13];
        bank.add_batch_subset(0, &x.narrow(0, 0, 6), &keep).unwrap();
        bank.add_batch_subset(6, &x.narrow(0, 6, 4), &keep).unwrap();
        assert_eq!(bank.indices(), &[2, 7]);
        let want = Tensor::cat(&[x.get(2).unsqueeze(0), x.get(7).unsqueeze(0)], 0);
        assert!(bank.to_tensor(Device::Cpu).unwrap().equal(&want));
        assert_eq!(reference_subset(5, 9, 0).unwrap(), vec![0, 1, 2, 3, 4]);
        let s = reference_subset(100, 10, 0).unwrap();
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
