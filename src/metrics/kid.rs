//! Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the polynomial kernel
//! k(x, y) = (xᵀy / d + 1)³, averaged over random subsets, as torch-fidelity 0.4.0 computes it
//! (metric_kid.py `kid_features_to_metric`, `mmd2(..., "unbiased")`): for each of `subsets`
//! rounds, `rng.choice(n_gen, m, replace=False)` then `rng.choice(n_ref, m, replace=False)` from
//! one `np.random.RandomState(seed)` (seed 2020), and
//! MMD² = (ΣK_xx − tr K_xx + ΣK_yy − tr K_yy) / (m(m−1)) − 2 ΣK_xy / m².
//! clean-fid's `kernel_distance` is the same estimator (with global, unseeded numpy draws).
//!
//! torch-fidelity evaluates the kernels in the features' float32; here they are f64 (products of
//! f32 features are exact there), so the two agree to torch-fidelity's own f32 rounding.
use crate::metrics::feature_bank::FeatureBank;
use crate::metrics::image_metrics::{KeptFeatures, SharedInception};
use crate::metrics::numpy_random::RandomState;
use crate::metrics::{Accumulator, Better, ColumnDef, Metric, MetricDef, Tolerance};
use crate::{BenchError, Result};
use std::rc::Rc;
use tch::{Kind, Tensor};

/// torch-fidelity's defaults: `kid_subsets = 100`, `kid_subset_size = 1000`, `rng_seed = 2020`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KidParams {
    pub subsets: usize,
    pub subset_size: usize,
    pub seed: u32,
}

impl Default for KidParams {
    fn default() -> Self {
        KidParams { subsets: 100, subset_size: 1000, seed: 2020 }
    }
}

/// KID over subsets.
#[derive(Clone, Debug, PartialEq)]
pub struct Kid {
    /// Mean of the subset MMD² values (torch-fidelity's `kernel_inception_distance_mean`).
    pub mean: f64,
    /// Their population std (torch-fidelity's `kernel_inception_distance_std`, `np.std`).
    pub std: f64,
    /// Standard error of `mean` as a Monte-Carlo average over subsets: sample std (ddof 1) / √S.
    /// Subsets overlap, so this is the error due to subset choice for the given features; a
    /// regression gate can use it as the noise floor of the estimate (0 when S = 1).
    pub standard_error: f64,
    pub subset_values: Vec<f64>,
}

/// Polynomial kernel (x yᵀ / d + 1)³ of two f64 matrices.
fn poly_kernel(x: &Tensor, y: &Tensor, d: f64) -> Result<Tensor> {
    Ok(x.f_mm(&y.f_tr()?)?.f_div_scalar(d)?.f_add_scalar(1.0)?.f_pow_tensor_scalar(3)?)
}

/// KID between `generated` [n1, d] and `reference` [n2, d] features (any float dtype; computed in
/// f64 on `generated`'s device). `generated` plays torch-fidelity's input1, `reference` input2.
pub fn kid(generated: &Tensor, reference: &Tensor, params: &KidParams) -> Result<Kid> {
    let (g, r) = (generated.size(), reference.size());
    if g.len() != 2 || r.len() != 2 || g[1] != r[1] {
        return Err(BenchError::user(format!(
            "KID needs two feature sets of equal width; got {g:?} and {r:?}"
        )));
    }
    let (n1, n2, m) = (g[0] as usize, r[0] as usize, params.subset_size);
    if m < 2 || params.subsets == 0 {
        return Err(BenchError::user(format!(
            "KID needs kid_subset_size ≥ 2 and kid_subsets ≥ 1; got {m} and {}",
            params.subsets
        )));
    }
    if n1 < m || n2 < m {
        return Err(BenchError::user(format!(
            "KID subset size {m} is larger than the generated ({n1}) or reference ({n2}) sample count; lower kid_subset_size"
        )));
    }
    let dev = generated.device();
    let x_all = generated.f_to_kind(Kind::Double)?;
    let y_all = reference.f_to_device(dev)?.f_to_kind(Kind::Double)?;
    let d = g[1] as f64;
    let mf = m as f64;
    let mut rng = RandomState::new(params.seed);
    let mut values = Vec::with_capacity(params.subsets);
    for _ in 0..params.subsets {
        let i1: Vec<i64> = rng.choice_without_replacement(n1, m)?.into_iter().map(|i| i as i64).collect();
        let i2: Vec<i64> = rng.choice_without_replacement(n2, m)?.into_iter().map(|i| i as i64).collect();
        let x = x_all.f_index_select(0, &Tensor::from_slice(&i1).f_to_device(dev)?)?;
        let y = y_all.f_index_select(0, &Tensor::from_slice(&i2).f_to_device(dev)?)?;
        let kxx = poly_kernel(&x, &x, d)?;
        let kyy = poly_kernel(&y, &y, d)?;
        let kxy = poly_kernel(&x, &y, d)?;
        let off_diag = |k: &Tensor| -> Result<f64> {
            Ok(k.f_sum(Kind::Double)?.double_value(&[]) - k.f_trace()?.double_value(&[]))
        };
        let mmd2 = (off_diag(&kxx)? + off_diag(&kyy)?) / (mf * (mf - 1.0))
            - 2.0 * kxy.f_sum(Kind::Double)?.double_value(&[]) / (mf * mf);
        values.push(mmd2);
    }
    let s = values.len() as f64;
    let mean = values.iter().sum::<f64>() / s;
    let ss = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
    let standard_error = if values.len() > 1 { (ss / (s - 1.0)).sqrt() / s.sqrt() } else { 0.0 };
    Ok(Kid { mean, std: (ss / s).sqrt(), standard_error, subset_values: values })
}

// ---------------------------------------------------------------------------------------------
// `metrics.kid` in `bench run`.
//
// Default gate tolerance: only the generated features change between machines (~1e-6 relative,
// float32 convolutions, see `fid.rs`); the reference's are read from its file and the kernels are
// f64. With s = xᵀy/d, k = (s + 1)³ moves by 3(s + 1)²·Δs ≤ 3ε·k·s/(s + 1) ≤ 3ε·k̄ per entry, so each
// of MMD²'s three kernel means moves by ≤ 3ε·k̄ and MMD² by ≤ 12ε·k̄ ≈ 1.2e-5·k̄. KID is a
// difference of those means (≈ 0 for a good model), so the bound is absolute: 1e-4 covers kernel
// means k̄ up to 8 (s̄ ≤ 1, i.e. pool features of mean square ≤ 1).

pub static DEF: MetricDef = MetricDef {
    name: "kid",
    columns: &[ColumnDef {
        name: "kid",
        help: "Kernel Inception Distance, mean unbiased MMD² over subsets (torch-fidelity's `kernel_inception_distance_mean`) against the features kept in `metrics.fid.reference`",
        better: Better::Lower,
        tolerance: Tolerance { abs: 1e-4, rel: 0.0 },
    }, ColumnDef {
        name: "kid_se",
        help: "standard error of `kid` from its subsets' spread, s/√subsets (torch-fidelity's `kernel_inception_distance_std` / √subsets); `bench check` gates `kid` with 3× it",
        better: Better::Lower,
        // The same kernel means' drift as `kid` (see above), through s/√S: abs 1e-4.
        tolerance: Tolerance { abs: 1e-4, rel: 0.0 },
    }],
};

/// KID of a cell's samples against a reference's kept features.
pub struct KidMetric {
    pub inception: Rc<SharedInception>,
    /// Reference features [n, dims] (f32, on the network's device).
    pub reference: Tensor,
    pub params: KidParams,
}

impl Metric for KidMetric {
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
                let k = kid(g, &self.reference, &self.params)?;
                Ok(vec![("kid".into(), k.mean), ("kid_se".into(), k.standard_error)])
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn same_distribution_is_near_zero_and_a_shift_is_positive() {
        crate::test_rng::seed(0);
        let a = Tensor::randn([300, 16], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([300, 16], (Kind::Float, Device::Cpu));
        let p = KidParams { subsets: 20, subset_size: 100, seed: 1 };
        let same = kid(&a, &b, &p).unwrap();
        let shifted = kid(&a, &(&b + 0.5), &p).unwrap();
        assert!(same.mean.abs() < 3.0 * same.std.max(1e-3), "{same:?}");
        assert!(shifted.mean > 10.0 * same.mean.abs(), "{shifted:?} vs {same:?}");
        assert!(shifted.standard_error > 0.0 && shifted.standard_error < shifted.std);
        assert!(kid(&a.narrow(0, 0, 50), &b, &p).is_err());
    }
}
