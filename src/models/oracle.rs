//! Exact-score oracle models: when the data distribution is known in closed form, the optimal
//! ε-predictor E[ε | x_t] is closed form too, so samplers can be measured without a network.
use super::EpsModel;
use crate::schedule::NoiseSchedule;
use tch::{Kind, Tensor};

/// ᾱ at a possibly fractional label τ ∈ [0, T−1]: log ᾱ linear between integer labels
/// (the same piecewise-linear log α as DPM-Solver's discrete-time wrapper).
pub fn alpha_bar_at(schedule: &NoiseSchedule, tau: f64) -> f64 {
    let last = (schedule.len() - 1) as f64;
    let tau = tau.clamp(0.0, last);
    let lo = tau.floor() as usize;
    let hi = (lo + 1).min(schedule.len() - 1);
    let w = tau - lo as f64;
    (schedule.alpha_bar(lo).ln() * (1.0 - w) + schedule.alpha_bar(hi).ln() * w).exp()
}

/// Data x0 ~ N(μ, diag(s²)) with μ, s of the sample shape [C,H,W] (broadcast from a number or
/// per-channel list by the caller). Then x_t ~ N(√ᾱ μ, ᾱ s² + 1 − ᾱ) and
/// ε*(x_t) = √(1−ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ).
pub struct GaussianOracle {
    pub schedule: NoiseSchedule,
    /// [C,H,W], f64.
    pub mean: Tensor,
    /// [C,H,W], f64, standard deviations.
    pub std: Tensor,
}

impl GaussianOracle {
    pub fn new(schedule: NoiseSchedule, mean: Tensor, std: Tensor) -> Self {
        GaussianOracle { schedule, mean: mean.to_kind(Kind::Double), std: std.to_kind(Kind::Double) }
    }
    pub fn shape(&self) -> Vec<i64> {
        self.mean.size()
    }
}

impl EpsModel for GaussianOracle {
    fn eps(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let dev = x.device();
        let labels: Vec<f64> = Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu))
            .expect("labels are a 1-d tensor");
        let ab: Vec<f64> = labels.iter().map(|&l| alpha_bar_at(&self.schedule, l)).collect();
        let ab = Tensor::from_slice(&ab).to_device(dev).view([-1, 1, 1, 1]);
        let mean = self.mean.to_device(dev).unsqueeze(0);
        let var = self.std.to_device(dev).square().unsqueeze(0);
        let xd = x.to_kind(Kind::Double);
        let one_minus_ab = ab.ones_like() - &ab;
        let num = (&xd - ab.sqrt() * mean) * one_minus_ab.sqrt();
        let den = &ab * var + one_minus_ab;
        (num / den).to_kind(x.kind())
    }
    fn describe(&self) -> String {
        format!("oracle:gaussian{:?}", self.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_eps_is_posterior_mean_of_noise() {
        // Monte Carlo check of E[ε | x_t] on a 1-pixel Gaussian: regress ε on x_t.
        tch::manual_seed(0);
        let s = NoiseSchedule::ddpm_linear();
        let o = GaussianOracle::new(s.clone(), Tensor::from(0.3).view([1, 1, 1]), Tensor::from(0.5).view([1, 1, 1]));
        let n = 200_000;
        let t = 400usize;
        let ab = s.alpha_bar(t);
        let x0 = Tensor::randn([n, 1, 1, 1], (Kind::Double, tch::Device::Cpu)) * 0.5 + 0.3;
        let e = Tensor::randn([n, 1, 1, 1], (Kind::Double, tch::Device::Cpu));
        let xt = &x0 * ab.sqrt() + &e * (1.0 - ab).sqrt();
        let pred = o.eps(&xt, &Tensor::full([n], t as f64, (Kind::Double, tch::Device::Cpu)));
        // E[(ε − ε*)·x_t] = 0 for the exact posterior mean; and ε* explains the regression fully.
        let resid: f64 = ((&e - &pred) * &xt).mean(Kind::Double).double_value(&[]);
        assert!(resid.abs() < 5e-3, "{resid}");
        assert!((alpha_bar_at(&s, t as f64) - ab).abs() < 1e-15);
    }

    #[test]
    fn fractional_labels_interpolate_log_alpha_bar() {
        let s = NoiseSchedule::ddpm_linear();
        let mid = alpha_bar_at(&s, 10.5);
        assert!((mid - (s.alpha_bar(10) * s.alpha_bar(11)).sqrt()).abs() < 1e-15);
    }
}
