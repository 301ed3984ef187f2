//! Streaming feature statistics for FID: count, Σf and Σffᵀ in f64, mergeable across batches,
//! shards and processes; mean and unbiased covariance (N−1, like `np.cov`) at the end. The one
//! moments accumulator of every Fréchet metric (FID's Inception features, fd_pixel's samples).
//!
//! The sums live as f64 tensors on the feature extractor's device, so a batch costs one f64
//! `XᵀX` there (every product of two f32 features is exact in f64). Batch contributions are added
//! with Knuth's TwoSum into a (sum, rounding error) pair, so the accumulated value is the exact
//! sum of the batch contributions to ~2⁻¹⁰⁴ relative and its f64 rounding does not depend on the
//! order or grouping of additions: shards merged in any order give bit-identical mu and sigma to
//! one pass over the same batches, and a resumed run equals an uninterrupted one. Σffᵀ is kept
//! exactly symmetric (each batch's upper triangle mirrored), so files store one triangle.
//!
//! Files (`.npz`, readable by numpy):
//! - statistics: `mu` [D], `sigma` [D,D] (f64) — the pytorch-fid / TTUR / clean-fid / EDM keys;
//! - raw sums (for merge/resume): `count` (u64, shape ()), `feature_sum`, `feature_sum_err` [D],
//!   `outer_sum_packed` [D(D+1)/2] (the upper triangle of Σffᵀ, row by row) and its TwoSum error:
//!   absent when zero (one batch), as `outer_sum_err_index` (u32) / `outer_sum_err_value` where
//!   fewer than two thirds of the entries are nonzero, else dense `outer_sum_err_packed`.
//!   Checkpoints hold the sums only; `bench stats --sums` writes both. Files with the older
//!   dense `outer_sum` / `outer_sum_err` [D,D] still load.
use super::frechet::frechet_distance;
use super::{Accumulator, Batch, FinishContext};
use crate::{BenchError, Result};
use ndarray::{Array0, Array1, Array2, Ix0, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpzError};
use std::fs::File;
use std::io::Cursor;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The accumulator of every Fréchet-distance metric (FID, fd_pixel): each batch's features
/// (`features` says what they are) go into one [`FeatureStats`]; part checkpoints hold its sums;
/// the result is the Fréchet distance of the moments to `reference`.
pub struct FrechetAccumulator<'a> {
    pub column: String,
    pub features: Box<dyn Fn(&Batch) -> Result<Tensor> + 'a>,
    pub reference: &'a Moments,
    pub stats: FeatureStats,
}

impl Accumulator for FrechetAccumulator<'_> {
    fn observe(&mut self, batch: &Batch) -> Result<()> {
        let f = (self.features)(batch)?;
        self.stats.add_batch(&f)
    }
    fn save(&self, path: &Path) -> Result<()> {
        self.stats.save_sums_npz(path)
    }
    fn merge_file(&mut self, path: &Path) -> Result<()> {
        self.stats.merge(&FeatureStats::load_npz(path, self.stats.device())?)
    }
    fn finish(&self, _cx: &FinishContext) -> Result<Vec<(String, f64)>> {
        let m = self.stats.moments()?;
        let r = self.reference;
        Ok(vec![(self.column.clone(), frechet_distance(m.mu.view(), m.sigma.view(), r.mu.view(), r.sigma.view())?)])
    }
}

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
        let full = x.f_tr()?.f_matmul(&x)?;
        // BLAS need not round (i,j) and (j,i) alike: mirror the upper triangle.
        let batch_outer = full.f_triu(0)?.f_add(&full.f_triu(1)?.f_tr()?)?;
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
    /// statistics file and a mergeable/resumable one (`bench stats --sums`).
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer();
        self.write_arrays(&mut w, path, true)?;
        write_npz(w, path)
    }

    /// The raw sums only (a part checkpoint: what merge/resume needs, nothing more).
    pub fn save_sums_npz(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer();
        self.write_arrays(&mut w, path, false)?;
        write_npz(w, path)
    }

    /// The arrays of [`Self::save_npz`] (without `mu`/`sigma` unless `moments`), into an open
    /// writer (so other metrics' arrays can share the file).
    pub fn write_arrays(&self, w: &mut NpzOut, path: &Path, moments: bool) -> Result<()> {
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
        if moments && self.count >= 2 {
            let m = self.moments()?;
            w.add_array("mu", &m.mu).map_err(err)?;
            w.add_array("sigma", &m.sigma).map_err(err)?;
        }
        w.add_array("count", &Array0::from_elem((), self.count)).map_err(err)?;
        w.add_array("feature_sum", &to_array1(&self.sum)?).map_err(err)?;
        w.add_array("feature_sum_err", &to_array1(&self.sum_err)?).map_err(err)?;
        w.add_array("outer_sum_packed", &Array1::from(pack_upper(&self.outer, self.dims)?)).map_err(err)?;
        let e = pack_upper(&self.outer_err, self.dims)?;
        let nonzero: Vec<u32> = (0..e.len() as u32).filter(|&i| e[i as usize] != 0.0).collect();
        if nonzero.is_empty() {
            // One batch (or exact sums): nothing to compensate.
        } else if nonzero.len() * 3 < e.len() * 2 {
            // 4 + 8 bytes per listed entry against 8 per entry when dense.
            let values: Array1<f64> = nonzero.iter().map(|&i| e[i as usize]).collect();
            w.add_array("outer_sum_err_index", &Array1::from(nonzero)).map_err(err)?;
            w.add_array("outer_sum_err_value", &values).map_err(err)?;
        } else {
            w.add_array("outer_sum_err_packed", &Array1::from(e)).map_err(err)?;
        }
        Ok(())
    }

    /// Reads the raw sums written by `save_npz` / `save_sums_npz` onto `device`.
    pub fn load_npz(path: &Path, device: Device) -> Result<Self> {
        let mut r = open_npz(path)?;
        let names = r.names().map_err(|e| BenchError::file(path, format!("not a readable .npz: {e}")))?;
        let has = |k: &str| names.iter().any(|n| n == k);
        for key in ["count", "feature_sum", "feature_sum_err"] {
            if !has(key) || !(has("outer_sum_packed") || has("outer_sum")) {
                let key = if has(key) { "outer_sum_packed" } else { key };
                return Err(BenchError::file(
                    path,
                    format!(
                        "has no '{key}' array, so it holds no mergeable feature sums (found: {}); \
                         write it with `bench stats --sums`",
                        names.join(", ")
                    ),
                ));
            }
        }
        let count: Array0<u64> = read_array::<Ix0, u64>(&mut r, path, "count")?;
        let sum = read_f64::<Ix1>(&mut r, path, "feature_sum")?;
        let dims = sum.len();
        let sum_err = read_f64::<Ix1>(&mut r, path, "feature_sum_err")?;
        let packed_len = dims * (dims + 1) / 2;
        let bad = || BenchError::file(path, "feature sums have inconsistent shapes");
        let (outer, outer_err) = if has("outer_sum_packed") {
            let outer = read_f64::<Ix1>(&mut r, path, "outer_sum_packed")?;
            let mut err = vec![0.0; packed_len];
            if has("outer_sum_err_packed") {
                err = read_f64::<Ix1>(&mut r, path, "outer_sum_err_packed")?.to_vec();
            } else if has("outer_sum_err_index") {
                let index: Array1<u32> = read_array::<Ix1, u32>(&mut r, path, "outer_sum_err_index")?;
                let value = read_f64::<Ix1>(&mut r, path, "outer_sum_err_value")?;
                if index.len() != value.len() {
                    return Err(bad());
                }
                for (&i, &v) in index.iter().zip(value.iter()) {
                    *err.get_mut(i as usize).ok_or_else(bad)? = v;
                }
            }
            if outer.len() != packed_len || err.len() != packed_len {
                return Err(bad());
            }
            (unpack_upper(&outer.to_vec(), dims), unpack_upper(&err, dims))
        } else {
            let outer = read_f64::<Ix2>(&mut r, path, "outer_sum")?;
            let outer_err = read_f64::<Ix2>(&mut r, path, "outer_sum_err")?;
            if outer.dim() != (dims, dims) || outer_err.dim() != (dims, dims) {
                return Err(bad());
            }
            (outer.iter().cloned().collect(), outer_err.iter().cloned().collect())
        };
        if sum_err.len() != dims {
            return Err(bad());
        }
        let t1 = |a: &Array1<f64>| Tensor::from_slice(&a.to_vec()).to_device(device);
        let t2 = |v: &[f64]| Tensor::from_slice(v).reshape([dims as i64, dims as i64]).to_device(device);
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

/// The upper triangle (diagonal included) of a [d,d] tensor, row by row.
fn pack_upper(t: &Tensor, d: usize) -> Result<Vec<f64>> {
    let full = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?.f_contiguous()?.f_reshape([-1])?)?;
    let mut out = Vec::with_capacity(d * (d + 1) / 2);
    for i in 0..d {
        out.extend_from_slice(&full[i * d + i..(i + 1) * d]);
    }
    Ok(out)
}

/// The symmetric [d,d] matrix (row-major) of a packed upper triangle.
fn unpack_upper(packed: &[f64], d: usize) -> Vec<f64> {
    let mut full = vec![0.0; d * d];
    let mut k = 0;
    for i in 0..d {
        for j in i..d {
            full[i * d + j] = packed[k];
            full[j * d + i] = packed[k];
            k += 1;
        }
    }
    full
}

impl Moments {
    pub fn dims(&self) -> usize {
        self.mu.len()
    }

    /// `mu` and `sigma` as float64, the pytorch-fid / TTUR format.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let mut w = npz_writer();
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
        w.add_array("mu", &self.mu).map_err(err)?;
        w.add_array("sigma", &self.sigma).map_err(err)?;
        write_npz(w, path)
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

/// An `.npz` being assembled in memory: nothing touches the destination until [`write_npz`], so
/// a failed write (full disk, read-only folder) leaves no partial file and no zip writer that
/// fails again when dropped.
pub type NpzOut = NpzWriter<Cursor<Vec<u8>>>;

pub fn npz_writer() -> NpzOut {
    NpzWriter::new(Cursor::new(Vec::new()))
}

/// Finishes `w` and writes it to `path` (creating its folder) through a temporary file, fsync and
/// rename ([`crate::fsutil::write_atomic`]).
pub fn write_npz(w: NpzOut, path: &Path) -> Result<()> {
    let bytes = w.finish().map_err(|e| BenchError::file(path, format!("writing .npz: {e}")))?.into_inner();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::file(dir, format!("cannot create the folder: {e}")))?;
    }
    crate::fsutil::write_atomic(path, &bytes)
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
        crate::test_rng::seed(seed);
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
