//! Fréchet distance between two Gaussians, d² = |μ1−μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1Σ2)^{1/2}
//! (Heusel et al. 2017, eq. 6; pytorch-fid `calculate_frechet_distance`), in f64.
//!
//! pytorch-fid takes a general `scipy.linalg.sqrtm` of the non-symmetric Σ1Σ2 (Schur form, 6–50 s
//! at 2048 dims). Only its trace is needed, and the eigenvalues of Σ1Σ2 are those of the symmetric
//! positive semi-definite Fᵀ Σ2 F for any factor Σ1 = F Fᵀ, so tr (Σ1Σ2)^{1/2} = Σ √λᵢ(Fᵀ Σ2 F):
//! - F = Cholesky factor L of whichever covariance is numerically full rank (LᵀΣL by LAPACK
//!   `dsygst`, then symmetric eigenvalues only, `dsyev` without vectors);
//! - if both are rank deficient (fewer samples than dimensions), F = V_r diag(√λ_r) from the
//!   symmetric eigendecomposition of Σ1, keeping its numerically non-zero eigenvalues.
//!
//! Eigenvalues of the product at rounding-noise level (|λ| ≤ n·ε·λ_max) are true zeros and count
//! as 0, so rank-deficient inputs give a finite result and never NaN.
use crate::{BenchError, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ShapeBuilder};
use ndarray_linalg::{Cholesky, UPLO};
use std::os::raw::c_char;

/// Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2). Mismatched shapes or non-finite entries
/// are user errors (they come from stats files).
pub fn frechet_distance(
    mu1: ArrayView1<f64>,
    sigma1: ArrayView2<f64>,
    mu2: ArrayView1<f64>,
    sigma2: ArrayView2<f64>,
) -> Result<f64> {
    let n = mu1.len();
    if mu2.len() != n {
        return Err(BenchError::user(format!(
            "FID statistics have different dimensions: mu {} vs {} (compute both with the same --dims)",
            n,
            mu2.len()
        )));
    }
    for (which, dim) in [("first", sigma1.dim()), ("second", sigma2.dim())] {
        if dim != (n, n) {
            return Err(BenchError::user(format!(
                "{which} statistics: sigma has shape {dim:?} but mu has {n} entries (need {n}x{n})"
            )));
        }
    }
    let all_finite = mu1.iter().chain(mu2.iter()).all(|x| x.is_finite())
        && sigma1.iter().chain(sigma2.iter()).all(|x| x.is_finite());
    if !all_finite {
        return Err(BenchError::user("FID statistics contain NaN or infinite values"));
    }
    let diff = &mu1 - &mu2;
    let mean_term = diff.dot(&diff);
    let tr1 = sigma1.diag().sum();
    let tr2 = sigma2.diag().sum();
    // Identical covariances: tr (Σ²)^{1/2} = tr Σ exactly, so identical statistics give exactly 0.
    let tr_covmean = if sigma1 == sigma2 { tr1 } else { trace_sqrt_product(sigma1, sigma2)? };
    Ok(mean_term + tr1 + tr2 - 2.0 * tr_covmean)
}

/// Which factorisation `trace_sqrt_product` used (reported by the benchmark and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorPath {
    CholeskyFirst,
    CholeskySecond,
    EigenFirst,
}

/// tr (Σ1Σ2)^{1/2} for symmetric positive semi-definite Σ1, Σ2 of equal shape.
pub fn trace_sqrt_product(sigma1: ArrayView2<f64>, sigma2: ArrayView2<f64>) -> Result<f64> {
    Ok(trace_sqrt_product_with_path(sigma1, sigma2)?.0)
}

pub fn trace_sqrt_product_with_path(sigma1: ArrayView2<f64>, sigma2: ArrayView2<f64>) -> Result<(f64, FactorPath)> {
    let n = sigma1.nrows();
    if n == 0 {
        return Ok((0.0, FactorPath::CholeskyFirst));
    }
    let (product, path) = if let Some(l) = full_rank_cholesky(sigma1) {
        (congruence_triangular(&l, sigma2)?, FactorPath::CholeskyFirst)
    } else if let Some(l) = full_rank_cholesky(sigma2) {
        (congruence_triangular(&l, sigma1)?, FactorPath::CholeskySecond)
    } else {
        (congruence_eigen(sigma1, sigma2)?, FactorPath::EigenFirst)
    };
    let eig = symmetric_eigenvalues(product)?;
    Ok((sum_sqrt_nonzero(&eig, n), path))
}

/// Eigenvalues of a symmetric matrix (lower triangle read), LAPACK `dsyev` without vectors.
/// (ndarray-linalg 0.17's `eigvalsh` asks LAPACK for eigenvectors too: 15× slower at 2048.)
fn symmetric_eigenvalues(mut a: Array2<f64>) -> Result<Vec<f64>> {
    let n = a.nrows();
    if n == 0 {
        return Ok(Vec::new());
    }
    // Either memory order holds the same symmetric matrix (up to a transpose, same eigenvalues).
    if !a.is_standard_layout() && !a.t().is_standard_layout() {
        a = a.as_standard_layout().into_owned();
    }
    let buf = a.as_slice_memory_order_mut().ok_or_else(|| BenchError::Internal("non-contiguous matrix".into()))?;
    lapack::syev(b'N', n, buf)
        .map_err(|info| BenchError::Internal(format!("LAPACK dsyev failed (info {info}) on the covariance product")))
}

/// Σ √λ over eigenvalues above the rounding-noise floor n·ε·λ_max (the rest are zeros).
fn sum_sqrt_nonzero(eig: &[f64], n: usize) -> f64 {
    let max = eig.iter().cloned().fold(0.0_f64, f64::max);
    let floor = n as f64 * f64::EPSILON * max;
    eig.iter().filter(|&&l| l > floor).map(|l| l.sqrt()).sum()
}

/// Lower Cholesky factor (column-major), or None if the matrix is not numerically full rank:
/// a pivot Lᵢᵢ² below 10³·n·ε·max Σᵢᵢ means a rank-deficient matrix whose factor is noise.
fn full_rank_cholesky(sigma: ArrayView2<f64>) -> Option<Array2<f64>> {
    let n = sigma.nrows();
    let mut a = Array2::<f64>::zeros((n, n).f());
    a.assign(&sigma);
    let l = a.cholesky(UPLO::Lower).ok()?;
    let max_diag = sigma.diag().iter().cloned().fold(0.0_f64, f64::max);
    let min_pivot = l.diag().iter().map(|d| d * d).fold(f64::INFINITY, f64::min);
    if min_pivot.is_nan() || min_pivot <= 1e3 * n as f64 * f64::EPSILON * max_diag {
        return None;
    }
    let mut f = Array2::<f64>::zeros((n, n).f());
    f.assign(&l);
    Some(f)
}

/// Lᵀ S L (lower triangle) with L lower triangular, by LAPACK `dsygst` (the reduction step of
/// the generalized symmetric eigenproblem; n³ flops, half of two triangular products).
fn congruence_triangular(l: &Array2<f64>, s: ArrayView2<f64>) -> Result<Array2<f64>> {
    let n = l.nrows();
    let mut b = Array2::<f64>::zeros((n, n).f());
    b.assign(&s);
    lapack::sygst_lower(n, col_major_mut(&mut b), col_major(l))
        .map_err(|info| BenchError::Internal(format!("LAPACK dsygst failed (info {info})")))?;
    Ok(b)
}

/// Fᵀ S F with F = V_r diag(√λ_r) from the eigendecomposition of `sigma1` (rank r).
fn congruence_eigen(sigma1: ArrayView2<f64>, sigma2: ArrayView2<f64>) -> Result<Array2<f64>> {
    let n = sigma1.nrows();
    let mut v = Array2::<f64>::zeros((n, n).f());
    v.assign(&sigma1);
    // Divide and conquer (dsyevd): several times faster than dsyev when vectors are needed.
    let w = lapack::syevd_vectors(n, col_major_mut(&mut v))
        .map_err(|info| BenchError::Internal(format!("LAPACK dsyevd failed (info {info}) on a covariance")))?;
    let max = w.iter().cloned().fold(0.0_f64, f64::max);
    let floor = n as f64 * f64::EPSILON * max;
    let keep: Vec<usize> = (0..n).filter(|&i| w[i] > floor).collect();
    let r = keep.len();
    if r == 0 {
        return Ok(Array2::zeros((0, 0).f()));
    }
    let mut f = Array2::<f64>::zeros((n, r).f());
    for (j, &i) in keep.iter().enumerate() {
        let scale = w[i].sqrt();
        f.column_mut(j).assign(&(&v.column(i) * scale));
    }
    let mut s = Array2::<f64>::zeros((n, n).f());
    s.assign(&sigma2);
    let mut sf = Array2::<f64>::zeros((n, r).f());
    blas::gemm(b'N', b'N', n, r, n, col_major(&s), col_major(&f), col_major_mut(&mut sf));
    let mut m = Array2::<f64>::zeros((r, r).f());
    blas::gemm(b'T', b'N', r, r, n, col_major(&f), col_major(&sf), col_major_mut(&mut m));
    Ok(m)
}

fn col_major(a: &Array2<f64>) -> &[f64] {
    debug_assert!(a.t().is_standard_layout());
    a.as_slice_memory_order().expect("contiguous array")
}

fn col_major_mut(a: &mut Array2<f64>) -> &mut [f64] {
    debug_assert!(a.t().is_standard_layout());
    a.as_slice_memory_order_mut().expect("contiguous array")
}

/// The BLAS-3 product ndarray-linalg does not wrap, from the OpenBLAS it links
/// (`openblas-system`). Column-major, Fortran calling convention.
mod blas {
    use super::c_char;

    extern "C" {
        fn dgemm_(
            transa: *const c_char,
            transb: *const c_char,
            m: *const i32,
            n: *const i32,
            k: *const i32,
            alpha: *const f64,
            a: *const f64,
            lda: *const i32,
            b: *const f64,
            ldb: *const i32,
            beta: *const f64,
            c: *mut f64,
            ldc: *const i32,
        );
    }

    fn dim(x: usize) -> i32 {
        i32::try_from(x.max(1)).expect("matrix dimension fits in a BLAS int")
    }

    /// C(m×n) := op(A)·op(B) with op(A) m×k, op(B) k×n.
    #[allow(clippy::too_many_arguments)] // mirrors BLAS dgemm
    pub fn gemm(ta: u8, tb: u8, m: usize, n: usize, k: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
        let (lda, ldb) = (if ta == b'N' { m } else { k }, if tb == b'N' { k } else { n });
        assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
        let (ta, tb) = (ta as c_char, tb as c_char);
        let (mi, ni, ki, ldai, ldbi, ldc) = (dim(m), dim(n), dim(k), dim(lda), dim(ldb), dim(m));
        // SAFETY: the slices hold the column-major matrices whose sizes are asserted above; BLAS
        // reads/writes only within them.
        unsafe { dgemm_(&ta, &tb, &mi, &ni, &ki, &1.0, a.as_ptr(), &ldai, b.as_ptr(), &ldbi, &0.0, c.as_mut_ptr(), &ldc) }
    }
}

/// The two LAPACK drivers used here, called directly (column-major, lower triangle).
mod lapack {
    use super::c_char;

    extern "C" {
        fn dsygst_(
            itype: *const i32,
            uplo: *const c_char,
            n: *const i32,
            a: *mut f64,
            lda: *const i32,
            b: *const f64,
            ldb: *const i32,
            info: *mut i32,
        );
        fn dsyev_(
            jobz: *const c_char,
            uplo: *const c_char,
            n: *const i32,
            a: *mut f64,
            lda: *const i32,
            w: *mut f64,
            work: *mut f64,
            lwork: *const i32,
            info: *mut i32,
        );
        fn dsyevd_(
            jobz: *const c_char,
            uplo: *const c_char,
            n: *const i32,
            a: *mut f64,
            lda: *const i32,
            w: *mut f64,
            work: *mut f64,
            lwork: *const i32,
            iwork: *mut i32,
            liwork: *const i32,
            info: *mut i32,
        );
    }

    /// A := Lᵀ A L (ITYPE 2, lower triangle of A read and written), L = lower triangle of `l`.
    pub fn sygst_lower(n: usize, a: &mut [f64], l: &[f64]) -> Result<(), i32> {
        assert!(a.len() >= n * n && l.len() >= n * n && n > 0);
        let (uplo, ni) = (b'L' as c_char, i32::try_from(n).map_err(|_| -1)?);
        let mut info = 0;
        // SAFETY: both buffers are n×n column-major (asserted).
        unsafe { dsygst_(&2, &uplo, &ni, a.as_mut_ptr(), &ni, l.as_ptr(), &ni, &mut info) };
        if info != 0 {
            return Err(info);
        }
        Ok(())
    }

    /// Eigenvalues (ascending) of the symmetric n×n `a`; `a` is destroyed. Err(info) on failure.
    pub fn syev(jobz: u8, n: usize, a: &mut [f64]) -> Result<Vec<f64>, i32> {
        assert!(a.len() >= n * n && n > 0);
        let (jobz, uplo, ni) = (jobz as c_char, b'L' as c_char, i32::try_from(n).map_err(|_| -1)?);
        let mut w = vec![0.0; n];
        let mut info = 0;
        let mut query = [0.0f64];
        // SAFETY: a is n×n column-major (asserted), w has n entries, work sizes come from LAPACK's query.
        unsafe { dsyev_(&jobz, &uplo, &ni, a.as_mut_ptr(), &ni, w.as_mut_ptr(), query.as_mut_ptr(), &-1, &mut info) };
        if info != 0 {
            return Err(info);
        }
        let lwork = query[0] as i32;
        let mut work = vec![0.0; lwork.max(1) as usize];
        unsafe { dsyev_(&jobz, &uplo, &ni, a.as_mut_ptr(), &ni, w.as_mut_ptr(), work.as_mut_ptr(), &lwork, &mut info) };
        if info != 0 {
            return Err(info);
        }
        Ok(w)
    }

    /// Eigenvalues (ascending) and, in `a`, the orthonormal eigenvectors (columns).
    pub fn syevd_vectors(n: usize, a: &mut [f64]) -> Result<Vec<f64>, i32> {
        assert!(a.len() >= n * n && n > 0);
        let (jobz, uplo, ni) = (b'V' as c_char, b'L' as c_char, i32::try_from(n).map_err(|_| -1)?);
        let mut w = vec![0.0; n];
        let mut info = 0;
        let mut query = [0.0f64];
        let mut iquery = [0i32];
        // SAFETY: as in syev; iwork size also from the query.
        unsafe {
            dsyevd_(&jobz, &uplo, &ni, a.as_mut_ptr(), &ni, w.as_mut_ptr(), query.as_mut_ptr(), &-1, iquery.as_mut_ptr(), &-1, &mut info)
        };
        if info != 0 {
            return Err(info);
        }
        let (lwork, liwork) = (query[0] as i32, iquery[0]);
        let mut work = vec![0.0; lwork.max(1) as usize];
        let mut iwork = vec![0i32; liwork.max(1) as usize];
        unsafe {
            dsyevd_(&jobz, &uplo, &ni, a.as_mut_ptr(), &ni, w.as_mut_ptr(), work.as_mut_ptr(), &lwork, iwork.as_mut_ptr(), &liwork, &mut info)
        };
        if info != 0 {
            return Err(info);
        }
        Ok(w)
    }
}

/// Mean and covariance of the rows of `x` (np.mean, np.cov with N−1), for tests and tools.
pub fn moments_of_rows(x: ArrayView2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = x.nrows() as f64;
    let mu = x.mean_axis(ndarray::Axis(0)).unwrap_or_else(|| Array1::zeros(x.ncols()));
    let c = &x - &mu;
    let sigma = c.t().dot(&c) / (n - 1.0);
    (mu, sigma)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    /// Deterministic pseudo-random matrix (no rand dependency): a splitmix64 stream mapped to [−1,1).
    fn noise(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
        let mut s = seed;
        Array2::from_shape_fn((rows, cols), |_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
    }

    #[test]
    fn diagonal_covariances_have_the_closed_form() {
        // Commuting (diagonal) covariances: tr (Σ1Σ2)^{1/2} = Σ √(aᵢbᵢ).
        let s1 = Array2::from_diag(&array![1.0, 4.0, 9.0]);
        let s2 = Array2::from_diag(&array![4.0, 1.0, 16.0]);
        let mu1 = array![0.0, 1.0, 2.0];
        let mu2 = array![1.0, 1.0, 0.0];
        let fd = frechet_distance(mu1.view(), s1.view(), mu2.view(), s2.view()).unwrap();
        let expect = 5.0 + 14.0 + 21.0 - 2.0 * (2.0 + 2.0 + 12.0);
        assert!((fd - expect).abs() < 1e-12, "{fd} vs {expect}");
    }

    #[test]
    fn identical_statistics_give_zero_and_swapping_is_symmetric() {
        let x = noise(300, 40, 1);
        let y = noise(200, 40, 2).mapv(|v| v * 1.3 + 0.1);
        let (m1, s1) = moments_of_rows(x.view());
        let (m2, s2) = moments_of_rows(y.view());
        assert_eq!(frechet_distance(m1.view(), s1.view(), m1.view(), s1.view()).unwrap(), 0.0);
        let a = frechet_distance(m1.view(), s1.view(), m2.view(), s2.view()).unwrap();
        let b = frechet_distance(m2.view(), s2.view(), m1.view(), s1.view()).unwrap();
        assert!(a > 0.1 && ((a - b) / a).abs() < 1e-12, "{a} {b}");
    }

    #[test]
    fn all_three_factor_paths_agree() {
        // Rank-deficient Σ1 (10 samples in 30 dims) forces the second Cholesky; both deficient the eigen path.
        let full = moments_of_rows(noise(200, 30, 3).view()).1;
        let full2 = moments_of_rows(noise(150, 30, 4).view()).1;
        let low = moments_of_rows(noise(10, 30, 5).view()).1;
        let low2 = moments_of_rows(noise(12, 30, 6).view()).1;
        let (a, pa) = trace_sqrt_product_with_path(full.view(), full2.view()).unwrap();
        let (b, pb) = trace_sqrt_product_with_path(full2.view(), full.view()).unwrap();
        assert_eq!((pa, pb), (FactorPath::CholeskyFirst, FactorPath::CholeskyFirst));
        assert!(((a - b) / a).abs() < 1e-13);
        let (c, pc) = trace_sqrt_product_with_path(low.view(), full.view()).unwrap();
        assert_eq!(pc, FactorPath::CholeskySecond);
        // Force the eigen path on the same pair and compare.
        let e = symmetric_eigenvalues(congruence_eigen(low.view(), full.view()).unwrap()).unwrap();
        let c_eig = sum_sqrt_nonzero(&e, 30);
        assert!(((c - c_eig) / c).abs() < 1e-10, "{c} {c_eig}");
        let (d, pd) = trace_sqrt_product_with_path(low.view(), low2.view()).unwrap();
        assert_eq!(pd, FactorPath::EigenFirst);
        assert!(d.is_finite() && d > 0.0);
    }

    #[test]
    fn mismatched_dimensions_are_a_user_error() {
        let s3 = Array2::<f64>::eye(3);
        let s4 = Array2::<f64>::eye(4);
        let e = frechet_distance(Array1::zeros(3).view(), s3.view(), Array1::zeros(4).view(), s4.view()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "FID statistics have different dimensions: mu 3 vs 4 (compute both with the same --dims)"
        );
        let e = frechet_distance(Array1::zeros(3).view(), s4.view(), Array1::zeros(3).view(), s3.view()).unwrap_err();
        assert_eq!(e.to_string(), "first statistics: sigma has shape (4, 4) but mu has 3 entries (need 3x3)");
    }
}
