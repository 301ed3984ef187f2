//! Exact output moments of a sampler on the Gaussian oracle, hence the exact Fréchet distance
//! to the data distribution, with no sampling noise.
//!
//! With data N(μ, diag s²) the oracle's ε* is affine in x per coordinate, so any sampler whose
//! update is affine in x plus independent Gaussian noise outputs, per coordinate,
//! out = A·x_T + Σ_k B_k·z_k + m with x_T, z_k ~ N(0, 1) independent. Mean m and variance
//! A² + Σ_k B_k² follow from probing the sampler itself (in f64): all probes run as one batch,
//! since samplers act on each batch row independently.
use super::space_view::SpaceView;
use super::{Counted, NoiseSource, Sampler};
use crate::models::oracle::GaussianOracle;
use crate::{BenchError, Result};
use std::collections::BTreeSet;
use tch::{Device, Kind, Tensor};

/// Records which steps draw noise and returns zeros.
struct RecordSteps(BTreeSet<usize>);
impl NoiseSource for RecordSteps {
    fn noise(&mut self, step: usize, like: &Tensor) -> Tensor {
        self.0.insert(step);
        like.zeros_like()
    }
}

/// Row `first + j` gets 1 at the j-th noisy step, every other row 0.
struct UnitProbes {
    steps: Vec<usize>,
    first: i64,
}
impl NoiseSource for UnitProbes {
    fn noise(&mut self, step: usize, like: &Tensor) -> Tensor {
        let z = like.zeros_like();
        if let Some(j) = self.steps.iter().position(|&s| s == step) {
            let _ = z.get(self.first + j as i64).fill_(1.0);
        }
        z
    }
}

const PROBE: f64 = 1e3;

/// Exact per-coordinate output mean and variance, each of the oracle's shape [C,H,W] in f64.
///
/// Errors if the sampler is not affine in x_T (e.g. `ddpm_large` clamps x̂0).
pub fn exact_output_moments(sampler: &dyn Sampler, oracle: &GaussianOracle) -> Result<(Tensor, Tensor)> {
    let shape = oracle.shape();
    let one = |b: i64| {
        let mut s = vec![b];
        s.extend(&shape);
        s
    };
    let opts = (Kind::Double, Device::Cpu);
    // An oracle of another space is seen through the sampler's (the view is linear in x).
    let view = SpaceView::new(sampler.space(), oracle.space, oracle.output, &oracle.schedule);
    let counted = || Counted::new(oracle, oracle.output).viewed(view.as_ref());
    let model = counted();
    let mut rec = RecordSteps(BTreeSet::new());
    let _ = sampler.sample(&model, Tensor::zeros(one(1), opts), &mut rec)?;
    let steps: Vec<usize> = rec.0.into_iter().collect();

    // Rows: 0: x_T=0; 1: x_T=1; 2: x_T=PROBE (affinity check, large enough to reach a clamp
    // even through a contracting sampler); 3+j: x_T=0, unit noise at step j.
    let n = 3 + steps.len() as i64;
    let x = Tensor::zeros(one(n), opts);
    let _ = x.get(1).fill_(1.0);
    let _ = x.get(2).fill_(PROBE);
    let out = sampler.sample(&counted(), x, &mut UnitProbes { steps, first: 3 })?;
    let m = out.get(0);
    let a = out.get(1) - &m;
    let a2 = out.get(2) - &m;
    let nonlin = (&a2 - &a * PROBE).abs().max().double_value(&[]);
    let scale = 1.0 + PROBE * a.abs().max().double_value(&[]);
    // NaN (a diverging sampler) counts as non-affine too.
    if nonlin.is_nan() || nonlin > 1e-9 * scale {
        return Err(BenchError::user(format!(
            "exact moments: sampler {} is not affine in x_T (deviation {nonlin:.3e}); exact FD needs an affine sampler",
            sampler.name()
        )));
    }
    let b = out.narrow(0, 3, n - 3) - m.unsqueeze(0);
    let var = a.square() + b.square().sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
    Ok((m, var))
}

/// Fréchet distance between N(m, diag v) and N(μ, diag s²): Σ (m−μ)² + Σ (√v − s)².
pub fn diagonal_fd(mean: &Tensor, var: &Tensor, data_mean: &Tensor, data_std: &Tensor) -> f64 {
    let d_mean = (mean - data_mean).square().sum(Kind::Double).double_value(&[]);
    let d_std = (var.sqrt() - data_std).square().sum(Kind::Double).double_value(&[]);
    d_mean + d_std
}

/// Exact FD between the sampler's output distribution and the oracle's data distribution.
///
/// Coordinates with the same (μ, s) have the same output moments, so the probes run once per
/// distinct pair (3 for a per-channel 3×32×32 oracle instead of 3,072) and are weighted by count.
pub fn exact_fd(sampler: &dyn Sampler, oracle: &GaussianOracle) -> Result<f64> {
    let mean: Vec<f64> = Vec::try_from(oracle.mean.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    let std: Vec<f64> = Vec::try_from(oracle.std.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    let mut pairs: std::collections::BTreeMap<(u64, u64), f64> = Default::default();
    for (m, s) in mean.iter().zip(&std) {
        *pairs.entry((m.to_bits(), s.to_bits())).or_default() += 1.0;
    }
    let k = pairs.len() as i64;
    let (mu, sd, count): (Vec<f64>, Vec<f64>, Vec<f64>) = pairs
        .iter()
        .map(|(&(m, s), &c)| (f64::from_bits(m), f64::from_bits(s), c))
        .fold((vec![], vec![], vec![]), |(mut a, mut b, mut c), (m, s, n)| {
            a.push(m);
            b.push(s);
            c.push(n);
            (a, b, c)
        });
    let reduced = oracle.with_data(Tensor::from_slice(&mu).view([k, 1, 1]), Tensor::from_slice(&sd).view([k, 1, 1]));
    let (m, v) = exact_output_moments(sampler, &reduced)?;
    let count = Tensor::from_slice(&count).view([k, 1, 1]);
    let per = (&m - &reduced.mean).square() + (v.sqrt() - &reduced.std).square();
    Ok((per * count).sum(Kind::Double).double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::build_from_text;
    use crate::schedule::NoiseSchedule;

    fn oracle() -> GaussianOracle {
        let mean = Tensor::from_slice(&[0.3f64, -0.2, 0.0, 0.5]).view([1, 2, 2]);
        let std = Tensor::from_slice(&[0.5f64, 0.1, 1.0, 0.02]).view([1, 2, 2]);
        GaussianOracle::new(NoiseSchedule::ddpm_linear(), mean, std)
    }

    #[test]
    fn distinct_coordinate_reduction_equals_the_full_computation() {
        let mean = Tensor::from_slice(&[0.3f64, -0.2, 0.3, 0.5, -0.2, 0.3]).view([1, 2, 3]);
        let std = Tensor::from_slice(&[0.5f64, 0.1, 0.5, 0.02, 0.1, 0.5]).view([1, 2, 3]);
        let o = GaussianOracle::new(NoiseSchedule::ddpm_linear(), mean, std);
        let s = build_from_text("ddim", &[("eta", "0.5")], 10, &o.schedule).unwrap();
        let (m, v) = exact_output_moments(s.as_ref(), &o).unwrap();
        let full = diagonal_fd(&m, &v, &o.mean, &o.std);
        let reduced = exact_fd(s.as_ref(), &o).unwrap();
        assert!((full - reduced).abs() <= 1e-12 * full.abs(), "{full} {reduced}");
    }

    #[test]
    fn ddpm_with_many_steps_matches_the_data_distribution() {
        // Ancestral sampling with 1000 steps is the exact reverse chain up to the
        // discretisation of the forward process, so FD is small.
        let o = oracle();
        let p = [("skip", "uniform")];
        let s = build_from_text("ddpm", &p, 1000, &o.schedule).unwrap();
        let fd = exact_fd(s.as_ref(), &o).unwrap();
        assert!(fd < 1e-4, "{fd}");
        let few = build_from_text("ddim", &p, 5, &o.schedule).unwrap();
        let fd5 = exact_fd(few.as_ref(), &o).unwrap();
        assert!(fd5 > 10.0 * fd, "{fd5} vs {fd}");
    }

    #[test]
    fn deterministic_sampler_variance_is_a_squared() {
        // For η=0 there is no noise: var = A², and DDIM with 1 step from ᾱ_T to ᾱ=1 is
        // x0 = (x − √(1−ᾱ) ε*)/√ᾱ, affine with slope A = (1 − (1−ᾱ)/(ᾱ s² + 1 − ᾱ))/√ᾱ.
        let o = oracle();
        let s = build_from_text("ddim", &[("skip", "uniform")], 1, &o.schedule).unwrap();
        let (m, v) = exact_output_moments(s.as_ref(), &o).unwrap();
        let ab = o.schedule.alpha_bar(0); // uniform with S=1: the single label is 0
        let s2 = o.std.square();
        let a = ((&s2 * ab + (1.0 - ab)).reciprocal() * (-(1.0 - ab)) + 1.0) / ab.sqrt();
        let err = (v - a.square()).abs().max().double_value(&[]);
        assert!(err < 1e-12, "{err}");
        assert!(m.abs().max().double_value(&[]) < 1.0);
    }

    #[test]
    fn clamping_sampler_is_refused() {
        // Data much wider than [−1, 1]: x̂0 gets clamped for x_T = 1, 2 but not for x_T = 0.
        let o = GaussianOracle::new(NoiseSchedule::ddpm_linear(), Tensor::from(0.0f64).view([1, 1, 1]), Tensor::from(3.0f64).view([1, 1, 1]));
        let s = build_from_text("ddpm_large", &[], 10, &o.schedule).unwrap();
        assert_eq!(exact_output_moments(s.as_ref(), &o).err().map(|e| e.exit_code()), Some(2));
    }
}
