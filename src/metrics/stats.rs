//! Streaming feature statistics for FID: count, Σf and Σffᵀ in f64, mergeable across batches,
//! shards and processes; mean and unbiased covariance (N−1, like `np.cov`) at the end.
//!
//! The sums live as f64 tensors on the feature extractor's device, so a batch costs one f64
//! `XᵀX` there (every product of two f32 features is exact in f64). Batch contributions are added
//! with Knuth's TwoSum into a (sum, rounding error) pair, so the accumulated value is the exact
//! sum of the batch contributions to ~2⁻¹⁰⁴ relative and its f64 rounding does not depend on the
//! order or grouping of additions: shards merged in any order give bit-identical mu and sigma to
//! one pass over the same batches, and a resumed run equals an uninterrupted one.
//!
//! Files (`.npz`, readable by numpy):
//! - statistics: `mu` [D], `sigma` [D,D] (f64) — the pytorch-fid / TTUR / clean-fid / EDM keys;
//! - raw sums (for merge/resume), written alongside by `save_npz`: `count` (u64, shape ()),
//!   `feature_sum`, `feature_sum_err` [D], `outer_sum`, `outer_sum_err` [D,D].
use crate::{BenchError, Result};
use ndarray::{Array0, Array1, Array2, Ix0, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpzError};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Mean and covariance of a feature set: what FID compares and what stats files hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub mu: Array1<f64>,
    pub sigma: Array2<f64>,
}

/// Running sums of features; `add_batch` per batch, `merge` across shards.
#[derive(Debug)]
pub struct FeatureStats {
    dims: usize,
    count: u64,
    sum: Tensor,
    sum_err: Tensor,
    outer: Tensor,
    outer_err: Tensor,
}

/// value + err += x, carrying the rounding error of the addition into `err` (TwoSum, exact).
pub(crate) fn compensated_add(value: &mut Tensor, err: &mut Tensor, x: &Tensor) -> Result<()> {
    let s = value.f_add(x)?;
    let x_part = s.f_sub(value)?;
    let value_part = s.f_sub(&x_part)?;
    let rounding = value.f_sub(&value_part)?.f_add(&x.f_sub(&x_part)?)?;
    *err = err.f_add(&rounding)?;
    *value = s;
    Ok(())
}

impl FeatureStats {
    pub fn new(dims: usize, device: Device) -> Self {
        let d = dims as i64;
        let z = |shape: &[i64]| Tensor::zeros(shape, (Kind::Double, device));
        FeatureStats { dims, count: 0, sum: z(&[d]), sum_err: z(&[d]), outer: z(&[d, d]), outer_err: z(&[d, d]) }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn device(&self) -> Device {
        self.sum.device()
    }

    /// Adds a [B, dims] batch of features (any float dtype, any device: it is moved here).
    pub fn add_batch(&mut self, features: &Tensor) -> Result<()> {
        let size = features.size();
        if size.len() != 2 || size[1] != self.dims as i64 {
            return Err(BenchError::Internal(format!(
                "feature batch has shape {size:?}, expected [B, {}]",
                self.dims
            )));
        }
        if size[0] == 0 {
            return Ok(());
        }
        let x = features.f_to_device(self.device())?.f_to_kind(Kind::Double)?;
        let batch_sum = x.f_sum_dim_intlist(Some(&[0i64][..]), false, Kind::Double)?;
        let batch_outer = x.f_tr()?.f_matmul(&x)?;
        compensated_add(&mut self.sum, &mut self.sum_err, &batch_sum)?;
        compensated_add(&mut self.outer, &mut self.outer_err, &batch_outer)?;
        self.count += size[0] as u64;
        Ok(())
    }

    /// Adds another shard's sums (same dims); the result does not depend on merge order.
    pub fn merge(&mut self, other: &FeatureStats) -> Result<()> {
        if other.dims != self.dims {
            return Err(BenchError::user(format!(
                "cannot merge feature statistics of {} and {} dimensions",
                self.dims, other.dims
            )));
        }
        let dev = self.device();
        compensated_add(&mut self.sum, &mut self.sum_err, &other.sum.f_to_device(dev)?)?;
        self.sum_err = self.sum_err.f_add(&other.sum_err.f_to_device(dev)?)?;
        compensated_add(&mut self.outer, &mut self.outer_err, &other.outer.f_to_device(dev)?)?;
        self.outer_err = self.outer_err.f_add(&other.outer_err.f_to_device(dev)?)?;
        self.count += other.count;
        Ok(())
    }

    /// μ = Σf / N and Σ = (Σffᵀ − N μμᵀ) / (N−1), symmetrised; needs N ≥ 2.
    pub fn moments(&self) -> Result<Moments> {
        if self.count < 2 {
            return Err(BenchError::user(format!(
                "FID needs at least 2 images to estimate a covariance; got {}",
                self.count
            )));
        }
        let n = self.count as f64;
        let sum = self.sum.f_add(&self.sum_err)?;
        let outer = self.outer.f_add(&self.outer_err)?;
        let mu = sum.f_div_scalar(n)?;
        let centered = outer.f_sub(&mu.f_outer(&sum)?)?.f_div_scalar(n - 1.0)?;
        let sigma = centered.f_add(&centered.f_tr()?)?.f_mul_scalar(0.5)?;
        Ok(Moments { mu: to_array1(&mu)?, sigma: to_array2(&sigma, self.dims)? })
    }

    /// Writes `mu`/`sigma` (when N ≥ 2) and the raw sums, so the file is both a pytorch-fid
    /// statistics file and a mergeable/resumable checkpoint.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer(path)?;
        self.write_arrays(&mut w, path)?;
        w.finish().map_err(|e| BenchError::file(path, format!("writing .npz: {e}")))?;
        Ok(())
    }

    /// The arrays of [`Self::save_npz`], into an open writer (so other metrics' arrays can share
    /// the file).
    pub fn write_arrays(&self, w: &mut NpzOut, path: &Path) -> Result<()> {
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
        if self.count >= 2 {
            let m = self.moments()?;
            w.add_array("mu", &m.mu).map_err(err)?;
            w.add_array("sigma", &m.sigma).map_err(err)?;
        }
        w.add_array("count", &Array0::from_elem((), self.count)).map_err(err)?;
        w.add_array("feature_sum", &to_array1(&self.sum)?).map_err(err)?;
        w.add_array("feature_sum_err", &to_array1(&self.sum_err)?).map_err(err)?;
        w.add_array("outer_sum", &to_array2(&self.outer, self.dims)?).map_err(err)?;
        w.add_array("outer_sum_err", &to_array2(&self.outer_err, self.dims)?).map_err(err)?;
        Ok(())
    }

    /// Reads the raw sums written by `save_npz` onto `device`.
    pub fn load_npz(path: &Path, device: Device) -> Result<Self> {
        let mut r = open_npz(path)?;
        let names = r.names().map_err(|e| BenchError::file(path, format!("not a readable .npz: {e}")))?;
        for key in ["count", "feature_sum", "feature_sum_err", "outer_sum", "outer_sum_err"] {
            if !names.iter().any(|n| n == key) {
                return Err(BenchError::file(
                    path,
                    format!(
                        "has no '{key}' array, so it holds no mergeable feature sums (found: {}); \
                         write it with `bench stats`",
                        names.join(", ")
                    ),
                ));
            }
        }
        let count: Array0<u64> = read_array::<Ix0, u64>(&mut r, path, "count")?;
        let sum = read_f64::<Ix1>(&mut r, path, "feature_sum")?;
        let dims = sum.len();
        let sum_err = read_f64::<Ix1>(&mut r, path, "feature_sum_err")?;
        let outer = read_f64::<Ix2>(&mut r, path, "outer_sum")?;
        let outer_err = read_f64::<Ix2>(&mut r, path, "outer_sum_err")?;
        if sum_err.len() != dims || outer.dim() != (dims, dims) || outer_err.dim() != (dims, dims) {
            return Err(BenchError::file(path, "feature sums have inconsistent shapes"));
        }
        let t1 = |a: &Array1<f64>| Tensor::from_slice(a.as_slice().unwrap_or(&a.to_vec())).to_device(device);
        let t2 = |a: &Array2<f64>| {
            let v: Vec<f64> = a.iter().cloned().collect();
            Tensor::from_slice(&v).reshape([dims as i64, dims as i64]).to_device(device)
        };
        Ok(FeatureStats {
            dims,
            count: count.into_scalar(),
            sum: t1(&sum),
            sum_err: t1(&sum_err),
            outer: t2(&outer),
            outer_err: t2(&outer_err),
        })
    }
}

impl Moments {
    pub fn dims(&self) -> usize {
        self.mu.len()
    }

    /// `mu` and `sigma` as float64, the pytorch-fid / TTUR format.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer(path)?;
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
        w.add_array("mu", &self.mu).map_err(err)?;
        w.add_array("sigma", &self.sigma).map_err(err)?;
        w.finish().map_err(err)?;
        Ok(())
    }

    /// Reads `mu` [D] and `sigma` [D,D] (float64 or float32), as written by pytorch-fid
    /// (`--save-stats`), TTUR, clean-fid, EDM (`fid.py ref --dest=*.npz`) and `bench stats`.
    pub fn load_npz(path: &Path) -> Result<Self> {
        let mut r = open_npz(path)?;
        let names = r.names().map_err(|e| BenchError::file(path, format!("not a readable .npz: {e}")))?;
        for key in ["mu", "sigma"] {
            if !names.iter().any(|n| n == key) {
                return Err(BenchError::file(
                    path,
                    format!(
                        "statistics file has no '{key}' array (found: {}); expected 'mu' and 'sigma' \
                         as written by pytorch-fid, clean-fid, EDM or `bench stats`",
                        if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
                    ),
                ));
            }
        }
        let mu = read_f64::<Ix1>(&mut r, path, "mu")?;
        let sigma = read_f64::<Ix2>(&mut r, path, "sigma")?;
        let d = mu.len();
        if sigma.dim() != (d, d) {
            return Err(BenchError::file(
                path,
                format!("'sigma' has shape {:?} but 'mu' has {d} entries (need {d}x{d})", sigma.dim()),
            ));
        }
        Ok(Moments { mu, sigma })
    }
}

/// An `.npz` being written.
pub type NpzOut = NpzWriter<BufWriter<File>>;

/// Creates `path` (and its folder) for writing arrays.
pub fn npz_writer(path: &Path) -> Result<NpzOut> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    }
    let f = File::create(path).map_err(|e| BenchError::io(format!("creating {}", path.display()), e))?;
    Ok(NpzWriter::new(BufWriter::new(f)))
}

pub(crate) fn open_npz(path: &Path) -> Result<NpzReader<File>> {
    let f = File::open(path).map_err(|e| BenchError::file(path, format!("cannot open: {e}")))?;
    NpzReader::new(f).map_err(|e| BenchError::file(path, format!("not a readable .npz (zip) file: {e}")))
}

pub(crate) fn read_array<D: ndarray::Dimension, T: ndarray_npy::ReadableElement>(
    r: &mut NpzReader<File>,
    path: &Path,
    key: &str,
) -> Result<ndarray::Array<T, D>> {
    r.by_name(key).map_err(|e| BenchError::file(path, format!("array '{key}': {e}")))
}

/// Reads a float64 array, accepting float32 files (some published statistics are float32).
pub(crate) fn read_f64<D: ndarray::Dimension>(r: &mut NpzReader<File>, path: &Path, key: &str) -> Result<ndarray::Array<f64, D>> {
    match r.by_name::<ndarray::OwnedRepr<f64>, D>(key) {
        Ok(a) => Ok(a),
        Err(ReadNpzError::Npy(ndarray_npy::ReadNpyError::WrongDescriptor(_))) => {
            let a: ndarray::Array<f32, D> = read_array(r, path, key)
                .map_err(|_| BenchError::file(path, format!("array '{key}' is neither float64 nor float32")))?;
            Ok(a.mapv(f64::from))
        }
        Err(e) => Err(BenchError::file(path, format!("array '{key}': {e}"))),
    }
}

pub(crate) fn to_array1(t: &Tensor) -> Result<Array1<f64>> {
    let v = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?.f_contiguous()?)?;
    Ok(Array1::from(v))
}

pub(crate) fn to_array2(t: &Tensor, d: usize) -> Result<Array2<f64>> {
    let v = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?.f_contiguous()?.f_reshape([-1])?)?;
    Array2::from_shape_vec((d, d), v).map_err(|e| BenchError::Internal(format!("covariance shape: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::frechet::moments_of_rows;

    fn features(rows: i64, dims: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        // Non-negative, correlated, offset like post-ReLU Inception pool features.
        (Tensor::randn([rows, dims], (Kind::Float, Device::Cpu)) + 0.5).relu() * 2.0
    }

    fn to_nd(t: &Tensor) -> Array2<f64> {
        let d = t.size();
        let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap();
        Array2::from_shape_vec((d[0] as usize, d[1] as usize), v).unwrap()
    }

    #[test]
    fn moments_match_centered_two_pass_formula() {
        let x = features(500, 24, 0);
        let mut s = FeatureStats::new(24, Device::Cpu);
        for chunk in x.split(64, 0) {
            s.add_batch(&chunk).unwrap();
        }
        let m = s.moments().unwrap();
        let (mu, sigma) = moments_of_rows(to_nd(&x).view());
        let err_mu = (&m.mu - &mu).mapv(f64::abs).fold(0.0_f64, |a, &b| a.max(b));
        let err_sigma = (&m.sigma - &sigma).mapv(f64::abs).fold(0.0_f64, |a, &b| a.max(b));
        assert!(err_mu < 1e-14 && err_sigma < 1e-13, "{err_mu} {err_sigma}");
        assert_eq!(m.sigma, m.sigma.t());
    }

    #[test]
    fn merge_in_any_grouping_is_bit_identical_to_one_pass() {
        let batches: Vec<Tensor> = (0..6).map(|i| features(40, 16, 10 + i)).collect();
        let mut single = FeatureStats::new(16, Device::Cpu);
        batches.iter().for_each(|b| single.add_batch(b).unwrap());
        let shard = |idx: &[usize]| {
            let mut s = FeatureStats::new(16, Device::Cpu);
            idx.iter().for_each(|&i| s.add_batch(&batches[i]).unwrap());
            s
        };
        let mut merged = shard(&[5, 1]);
        merged.merge(&shard(&[3])).unwrap();
        merged.merge(&shard(&[0, 4, 2])).unwrap();
        assert_eq!(merged.count(), 240);
        assert_eq!(merged.moments().unwrap(), single.moments().unwrap());
    }

    #[test]
    fn one_image_is_a_user_error() {
        let mut s = FeatureStats::new(8, Device::Cpu);
        s.add_batch(&features(1, 8, 3)).unwrap();
        let e = s.moments().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "FID needs at least 2 images to estimate a covariance; got 1");
    }
}
