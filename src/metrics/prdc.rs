//! Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et
//! al. 2020) from k-nearest-neighbour balls in feature space.
//!
//! Precision/recall follow torch-fidelity 0.4.0 (metric_prc.py, `calculate_precision_recall_full`):
//! a set's radii are the (k+1)-th smallest entry of each row of its self-distance matrix (the
//! k-th neighbour, the sample itself at distance ~0 being the first), distances are
//! `torch.cdist` in the features' float32 over blocks of `batch_size` rows × `batch_size` columns,
//! and membership is `d ≤ radius`:
//! - precision = fraction of generated samples inside some real ball,
//! - recall = fraction of real samples inside some generated ball.
//!
//! Density and coverage follow the `prdc` package (clovaai/generative-evaluation-prdc,
//! `compute_prdc`), which uses the same radii but strict `d < radius`:
//! - density = (1/k) · mean over generated samples of the number of real balls containing it,
//! - coverage = fraction of real samples whose nearest generated sample lies inside their ball.
//!
//! The same blocks as torch-fidelity's give the same float32 distances up to the GEMM library's
//! rounding (`cdist` is a matrix product for more than 25 rows: PyTorch's wheel uses MKL, `bench`
//! resolves BLAS to the system OpenBLAS), so the ≤ comparisons, and with them precision and
//! recall, are identical unless a distance lies within ~1e-6 relative of a radius. Only
//! block-sized distance matrices exist at a time (and the k+1 smallest distances per row), not
//! the n × n matrix.
use crate::metrics::feature_bank::FeatureBank;
use crate::metrics::image_metrics::{KeptFeatures, SharedInception};
use crate::metrics::{Accumulator, Better, ColumnDef, Metric, MetricDef, Tolerance};
use crate::{BenchError, Result};
use std::rc::Rc;
use tch::{Kind, Tensor};

/// torch-fidelity's defaults: `prc_neighborhood = 3`, `prc_batch_size = 10000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrdcParams {
    pub k: usize,
    pub batch_size: usize,
}

impl Default for PrdcParams {
    fn default() -> Self {
        PrdcParams { k: 3, batch_size: 10_000 }
    }
}

/// The four values with the counts they are fractions of.
#[derive(Clone, Debug, PartialEq)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    /// Generated samples inside some real ball (≤).
    pub precision_count: u64,
    /// Real samples inside some generated ball (≤).
    pub recall_count: u64,
    /// Σ over generated samples of the number of real balls containing them (<).
    pub density_count: u64,
    /// Real samples whose nearest generated sample is inside their ball (<).
    pub coverage_count: u64,
    pub generated: u64,
    pub real: u64,
}

fn blocks(n: i64, size: i64) -> Vec<(i64, i64)> {
    (0..n).step_by(size as usize).map(|s| (s, size.min(n - s))).collect()
}

/// torch-fidelity's `calc_cdist_full(a, b, batch_size)`: float32 `cdist` over blocks of
/// `batch_size` rows × `batch_size` columns, as one [n_a, n_b] matrix (for tests and small sets;
/// [`prdc`] never holds it).
pub fn distance_matrix(a: &Tensor, b: &Tensor, batch_size: usize) -> Result<Tensor> {
    let size = batch_size.max(1) as i64;
    let (a, b) = (a.f_to_kind(Kind::Float)?, b.f_to_kind(Kind::Float)?);
    let mut rows = Vec::new();
    for (r0, rn) in blocks(a.size()[0], size) {
        let ra = a.f_narrow(0, r0, rn)?;
        let cols = blocks(b.size()[0], size)
            .into_iter()
            .map(|(c0, cn)| Tensor::f_cdist(&ra, &b.f_narrow(0, c0, cn)?, 2.0, None::<i64>))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        rows.push(Tensor::f_cat(&cols, 1)?);
    }
    Ok(Tensor::f_cat(&rows, 0)?)
}

/// k-th neighbour radius of every row of `x` [n, d] (float32), `cdist(x, x).kthvalue(k + 1)`
/// over the full row in torch-fidelity's blocks.
pub fn knn_radii(x: &Tensor, k: usize, batch_size: usize) -> Result<Tensor> {
    radii(&x.f_to_kind(Kind::Float)?, k as i64, batch_size.max(1) as i64)
}

/// k-th neighbour radius of every row of `x` [n, d] (f32): `cdist(x, x).kthvalue(k + 1)` over
/// the full row, computed block by block from each block's k+1 smallest distances.
fn radii(x: &Tensor, k: i64, size: i64) -> Result<Tensor> {
    let n = x.size()[0];
    let mut out = Vec::new();
    for (r0, rn) in blocks(n, size) {
        let rows = x.f_narrow(0, r0, rn)?;
        let mut smallest = Vec::new();
        for (c0, cn) in blocks(n, size) {
            let d = Tensor::f_cdist(&rows, &x.f_narrow(0, c0, cn)?, 2.0, None::<i64>)?;
            let (vals, _) = d.f_topk((k + 1).min(cn), 1, false, true)?;
            smallest.push(vals);
        }
        let (kth, _) = Tensor::f_cat(&smallest, 1)?.f_kthvalue(k + 1, 1, false)?;
        out.push(kth);
    }
    Ok(Tensor::f_cat(&out, 0)?)
}

/// Precision, recall, density and coverage of `generated` [n1, d] against `real` [n2, d] (float32
/// on `generated`'s device; other dtypes are converted as torch-fidelity's features are f32).
pub fn prdc(generated: &Tensor, real: &Tensor, params: &PrdcParams) -> Result<Prdc> {
    let (g, r) = (generated.size(), real.size());
    if g.len() != 2 || r.len() != 2 || g[1] != r[1] {
        return Err(BenchError::user(format!(
            "precision/recall need two feature sets of equal width; got {g:?} and {r:?}"
        )));
    }
    let k = params.k as i64;
    if k < 1 || params.batch_size == 0 {
        return Err(BenchError::user("precision/recall need k ≥ 1 and a batch size ≥ 1"));
    }
    if g[0] <= k || r[0] <= k {
        return Err(BenchError::user(format!(
            "precision/recall with k = {k} need more than {k} generated and real samples; got {} and {}",
            g[0], r[0]
        )));
    }
    let size = params.batch_size as i64;
    let dev = generated.device();
    let fake = generated.f_to_kind(Kind::Float)?;
    let real = real.f_to_device(dev)?.f_to_kind(Kind::Float)?;
    let r_fake = radii(&fake, k, size)?;
    let r_real = radii(&real, k, size)?;

    let (n_fake, n_real) = (g[0], r[0]);
    let precision_hit = Tensor::f_zeros([n_fake], (Kind::Bool, dev))?;
    let density = Tensor::f_zeros([n_fake], (Kind::Int64, dev))?;
    let mut recall_hit = Vec::new();
    let mut nearest = Vec::new();
    // dist_2_1 = cdist(real block, fake block), torch-fidelity's block layout; precision reads it
    // transposed (`dist_1_2 = dist_2_1.T`).
    for (r0, rn) in blocks(n_real, size) {
        let rows = real.f_narrow(0, r0, rn)?;
        let rr = r_real.f_narrow(0, r0, rn)?.f_unsqueeze(1)?;
        let mut hit = Tensor::f_zeros([rn], (Kind::Bool, dev))?;
        let mut min_d = Tensor::f_full([rn], f64::INFINITY, (Kind::Float, dev))?;
        for (c0, cn) in blocks(n_fake, size) {
            let d = Tensor::f_cdist(&rows, &fake.f_narrow(0, c0, cn)?, 2.0, None::<i64>)?;
            let rf = r_fake.f_narrow(0, c0, cn)?.f_unsqueeze(0)?;
            hit = hit.f_logical_or(&d.f_le_tensor(&rf)?.f_any_dim(1, false)?)?;
            min_d = min_d.f_minimum(&d.f_amin(&[1i64][..], false)?)?;
            let prec = d.f_le_tensor(&rr)?.f_any_dim(0, false)?;
            let cols = precision_hit.f_narrow(0, c0, cn)?.f_logical_or(&prec)?;
            precision_hit.f_narrow(0, c0, cn)?.f_copy_(&cols)?;
            let inside = d.f_lt_tensor(&rr)?.f_sum_dim_intlist(Some(&[0i64][..]), false, Kind::Int64)?;
            let cnt = density.f_narrow(0, c0, cn)?.f_add(&inside)?;
            density.f_narrow(0, c0, cn)?.f_copy_(&cnt)?;
        }
        recall_hit.push(hit);
        nearest.push(min_d);
    }
    let count = |t: &Tensor| -> Result<u64> { Ok(t.f_sum(Kind::Int64)?.int64_value(&[]) as u64) };
    let recall_count = count(&Tensor::f_cat(&recall_hit, 0)?)?;
    let coverage_count = count(&Tensor::f_cat(&nearest, 0)?.f_lt_tensor(&r_real)?)?;
    let precision_count = count(&precision_hit)?;
    let density_count = count(&density)?;
    let (nf, nr) = (n_fake as f64, n_real as f64);
    Ok(Prdc {
        precision: precision_count as f64 / nf,
        recall: recall_count as f64 / nr,
        density: density_count as f64 / (params.k as f64 * nf),
        coverage: coverage_count as f64 / nr,
        precision_count,
        recall_count,
        density_count,
        coverage_count,
        generated: n_fake as u64,
        real: n_real as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// `metrics.prdc` in `bench run`.
//
// Default gate tolerance: each value is a count over n samples (density over k·n), so it moves in
// steps of 1/n, and a step needs one distance to cross a radius under the cross-machine change of
// the generated features (~1e-6 relative, see `fid.rs`) plus the float32 distance rounding (~1e-6
// relative). With distances spread over the scale of the radii, a sample's k-th-neighbour
// comparisons land that close with probability ~1e-5 (the tests measure gaps far larger at n ≤ 10⁴),
// so abs 1e-3 (one sample in a thousand) leaves two orders of margin.

const PRDC_TOLERANCE: Tolerance = Tolerance { abs: 1e-3, rel: 0.0 };

pub static DEF: MetricDef = MetricDef {
    name: "prdc",
    columns: &[
        ColumnDef {
            name: "prdc_precision",
            help: "improved precision: fraction of samples inside some reference k-NN ball (torch-fidelity), against the features kept in `metrics.fid.reference`",
            better: Better::Higher,
            tolerance: PRDC_TOLERANCE,
        },
        ColumnDef {
            name: "prdc_recall",
            help: "improved recall: fraction of reference samples inside some sample k-NN ball (torch-fidelity)",
            better: Better::Higher,
            tolerance: PRDC_TOLERANCE,
        },
        ColumnDef {
            name: "prdc_density",
            help: "density: mean number of reference k-NN balls holding a sample, over k (prdc)",
            better: Better::Higher,
            tolerance: PRDC_TOLERANCE,
        },
        ColumnDef {
            name: "prdc_coverage",
            help: "coverage: fraction of reference balls holding their nearest sample (prdc)",
            better: Better::Higher,
            tolerance: PRDC_TOLERANCE,
        },
    ],
};

/// Precision, recall, density and coverage of a cell's samples against a reference's kept features.
pub struct PrdcMetric {
    pub inception: Rc<SharedInception>,
    /// Reference features [n, dims] (f32, on the network's device).
    pub reference: Tensor,
    pub params: PrdcParams,
}

impl Metric for PrdcMetric {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn needs_images(&self) -> bool {
        true
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        Box::new(KeptFeatures {
            inception: &self.inception,
            bank: FeatureBank::new(self.inception.extractor.dims),
            device: self.inception.extractor.net.device(),
            score: Box::new(move |g| {
                let p = prdc(g, &self.reference, &self.params)?;
                Ok(vec![
                    ("prdc_precision".into(), p.precision),
                    ("prdc_recall".into(), p.recall),
                    ("prdc_density".into(), p.density),
                    ("prdc_coverage".into(), p.coverage),
                ])
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn identical_sets_are_perfect_and_far_sets_score_zero() {
        crate::test_rng::seed(0);
        let a = Tensor::randn([60, 8], (Kind::Float, Device::Cpu));
        let p = PrdcParams { k: 3, batch_size: 7 };
        let same = prdc(&a, &a, &p).unwrap();
        assert_eq!((same.precision, same.recall, same.coverage), (1.0, 1.0, 1.0));
        let far = prdc(&(&a + 100.0), &a, &p).unwrap();
        assert_eq!((far.precision, far.recall, far.density, far.coverage), (0.0, 0.0, 0.0, 0.0));
        // Block size does not change anything.
        let b = Tensor::randn([45, 8], (Kind::Float, Device::Cpu)) * 1.3;
        let one = prdc(&b, &a, &PrdcParams { k: 3, batch_size: 1000 }).unwrap();
        let many = prdc(&b, &a, &PrdcParams { k: 3, batch_size: 4 }).unwrap();
        assert_eq!(one, many);
        assert!(prdc(&a.narrow(0, 0, 3), &a, &p).is_err());
    }
}
