//! Exact-score oracle models: when the data distribution is known in closed form, the optimal
//! ε-predictor E[ε | x_t] is closed form too, so samplers can be measured without a network.
use super::{Condition, Denoiser, NoiseSpace, Prediction};
use crate::schedule::NoiseSchedule;
use crate::{BenchError, Result};
use tch::{Kind, Tensor};

/// ᾱ at a possibly fractional label τ ∈ [0, T−1]: log ᾱ linear between integer labels
/// (the same piecewise-linear log α as DPM-Solver's discrete-time wrapper).
pub fn alpha_bar_at(schedule: &NoiseSchedule, tau: f64) -> f64 {
    let last = (schedule.len() - 1) as f64;
    let tau = tau.clamp(0.0, last);
    let lo = tau.floor() as usize;
    let hi = (lo + 1).min(schedule.len() - 1);
    let w = tau - lo as f64;
    if w == 0.0 {
        // On a label (also where ᾱ = 0 under zero terminal SNR, whose log is −∞).
        return schedule.alpha_bar(lo);
    }
    (schedule.alpha_bar(lo).ln() * (1.0 - w) + schedule.alpha_bar(hi).ln() * w).exp()
}

/// Per-sample labels as f64 on the host.
fn host_labels(t: &Tensor) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)
        .map_err(|e| BenchError::Internal(format!("oracle labels: {e}")))
}

/// The exact ε* re-expressed as another parameterisation at ᾱ(label): v = α ε − σ x0 =
/// (ε − σ x)/α and x0 = (x − σ ε)/α, so the same oracle can stand in for v- and x0-models.
fn express(output: Prediction, schedule: &NoiseSchedule, eps: Tensor, x: &Tensor, labels: &[f64]) -> Result<Tensor> {
    if output == Prediction::Epsilon {
        return Ok(eps);
    }
    let ab: Vec<f64> = labels.iter().map(|&l| alpha_bar_at(schedule, l)).collect();
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, x.dim().saturating_sub(1)));
    let ab = Tensor::from_slice(&ab).to_device(x.device()).view(shape.as_slice());
    let (alpha, sigma) = (ab.sqrt(), (ab.ones_like() - &ab).sqrt());
    let (e, xd) = (eps.to_kind(Kind::Double), x.to_kind(Kind::Double));
    let out = match output {
        Prediction::VPrediction => (&e - &sigma * &xd) / &alpha,
        _ => (&xd - &sigma * &e) / &alpha,
    };
    Ok(out.to_kind(x.kind()))
}

/// Data x0 ~ N(μ, diag(s²)) with μ, s of the sample shape [C,H,W] (broadcast from a number or
/// per-channel list by the caller). Then x_t ~ N(√ᾱ μ, ᾱ s² + 1 − ᾱ) and
/// ε*(x_t) = √(1−ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ).
///
/// In σ space (x = x0 + σ ε, label σ) it answers EDM's exact denoiser instead:
/// D*(x; σ) = μ + s²/(s² + σ²)·(x − μ).
pub struct GaussianOracle {
    pub schedule: NoiseSchedule,
    /// [C,H,W], f64.
    pub mean: Tensor,
    /// [C,H,W], f64, standard deviations.
    pub std: Tensor,
    /// The parameterisation `forward` answers in (ε* re-expressed).
    pub output: Prediction,
    pub space: NoiseSpace,
}

impl GaussianOracle {
    pub fn new(schedule: NoiseSchedule, mean: Tensor, std: Tensor) -> Self {
        let (mean, std) = (mean.to_kind(Kind::Double), std.to_kind(Kind::Double));
        GaussianOracle { schedule, mean, std, output: Prediction::Epsilon, space: NoiseSpace::Vp }
    }
    /// The same oracle answering as a v- or x0-model.
    pub fn with_output(mut self, output: Prediction) -> Self {
        self.output = output;
        self
    }
    /// The same data in σ space (the output is EDM's denoiser D*(x; σ), an x0 prediction) or in
    /// rectified-flow space (the output is the velocity).
    pub fn in_space(mut self, space: NoiseSpace) -> Self {
        self.space = space;
        match space {
            NoiseSpace::Sigma => self.output = Prediction::Sample,
            NoiseSpace::Flow => self.output = Prediction::Flow,
            NoiseSpace::Vp => {}
        }
        self
    }
    /// Another data distribution with this oracle's schedule, output and space.
    pub fn with_data(&self, mean: Tensor, std: Tensor) -> Self {
        GaussianOracle { output: self.output, space: self.space, ..GaussianOracle::new(self.schedule.clone(), mean, std) }
    }
    pub fn shape(&self) -> Vec<i64> {
        self.mean.size()
    }
    /// ε*(x, t) for per-sample labels t.
    pub fn eps(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.eps_at(x, &host_labels(t)?)
    }

    /// D*(x; σ) = μ + s²/(s² + σ²)·(x − μ) for per-sample σ (the labels), in x's dtype.
    fn denoised(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        let dev = x.device();
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, x.dim().saturating_sub(1)));
        let s2 = sigma.to_kind(Kind::Double).to_device(dev).square().view(shape.as_slice());
        let (mean, var) = (self.mean.to_device(dev).unsqueeze(0), self.std.to_device(dev).square().unsqueeze(0));
        let d = &mean + (x.to_kind(Kind::Double) - &mean) * &var / (&var + s2);
        d.to_kind(x.kind())
    }

    /// Rectified flow x_t = a·x0 + b·ε with a = 1 − t, b = t, t = label/T: the exact velocity
    /// v* = E[ε − x0 | x_t] = (b − a s²)/(a² s² + b²)·(x_t − a μ) − μ.
    fn velocity(&self, x: &Tensor, labels: &Tensor) -> Tensor {
        let dev = x.device();
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, x.dim().saturating_sub(1)));
        let b = (labels.to_kind(Kind::Double).to_device(dev) / self.schedule.len() as f64).view(shape.as_slice());
        let a = b.ones_like() - &b;
        let (mean, var) = (self.mean.to_device(dev).unsqueeze(0), self.std.to_device(dev).square().unsqueeze(0));
        let centred = x.to_kind(Kind::Double) - &a * &mean;
        let gain = (&b - &a * &var) / (a.square() * &var + b.square());
        (gain * centred - mean).to_kind(x.kind())
    }

    fn eps_at(&self, x: &Tensor, labels: &[f64]) -> Result<Tensor> {
        let dev = x.device();
        if labels.windows(2).all(|w| w[0] == w[1]) && !labels.is_empty() {
            // One label for the batch (every sampler): ε* = a ⊙ x − b with per-coordinate a, b
            // computed once in f64, then two elementwise ops in x's precision.
            let ab = alpha_bar_at(&self.schedule, labels[0]);
            let a = (self.std.square() * ab + (1.0 - ab)).reciprocal() * (1.0 - ab).sqrt();
            let b = &a * &self.mean * ab.sqrt();
            let (a, b) = (a.to_device(dev).to_kind(x.kind()), b.to_device(dev).to_kind(x.kind()));
            return Ok(x * a.unsqueeze(0) - b.unsqueeze(0));
        }
        let ab: Vec<f64> = labels.iter().map(|&l| alpha_bar_at(&self.schedule, l)).collect();
        let ab = Tensor::from_slice(&ab).to_device(dev).view([-1, 1, 1, 1]);
        let mean = self.mean.to_device(dev).unsqueeze(0);
        let var = self.std.to_device(dev).square().unsqueeze(0);
        let xd = x.to_kind(Kind::Double);
        let one_minus_ab = ab.ones_like() - &ab;
        let num = (&xd - ab.sqrt() * mean) * one_minus_ab.sqrt();
        let den = &ab * var + one_minus_ab;
        Ok((num / den).to_kind(x.kind()))
    }
}

impl Denoiser for GaussianOracle {
    fn forward(&self, x: &Tensor, t: &Tensor, _cond: Option<&Condition>) -> Result<Tensor> {
        match self.space {
            NoiseSpace::Sigma => return Ok(self.denoised(x, t)),
            NoiseSpace::Flow => return Ok(self.velocity(x, t)),
            NoiseSpace::Vp => {}
        }
        let labels = host_labels(t)?;
        if self.output != Prediction::Epsilon && labels.iter().all(|&l| alpha_bar_at(&self.schedule, l) == 0.0) {
            // At ᾱ = 0 (zero terminal SNR) x_t holds no signal: x̂0* = μ and v* = α ε − σ x0 = −μ;
            // the ε route would divide by α = 0.
            let x0 = self.mean.to_device(x.device()).to_kind(x.kind()).unsqueeze(0).f_expand_as(x)?;
            return Ok(if self.output == Prediction::VPrediction { -x0 } else { x0 });
        }
        express(self.output, &self.schedule, self.eps_at(x, &labels)?, x, &labels)
    }
    fn describe(&self) -> String {
        format!("oracle:gaussian{:?}", self.shape())
    }
}

/// Data x0 ~ Σ_k w_k N(μ_k, diag(s_k²)). Given x_t, component k has likelihood
/// N(x_t; √ᾱ μ_k, ᾱ s_k² + 1 − ᾱ) and its own exact ε*_k (the Gaussian formula), so
/// ε*(x_t) = Σ_k r_k(x_t) ε*_k(x_t) with posterior responsibilities r_k = softmax_k(log w_k +
/// log N_k), normalised with logsumexp so far-out x_t stays finite.
pub struct GmmOracle {
    pub schedule: NoiseSchedule,
    /// The parameterisation `forward` answers in (ε* re-expressed).
    pub output: Prediction,
    /// [K], f64, positive, summing to 1.
    pub weights: Tensor,
    /// [K,C,H,W], f64.
    pub means: Tensor,
    /// [K,C,H,W], f64, standard deviations.
    pub stds: Tensor,
}

impl GmmOracle {
    pub fn new(schedule: NoiseSchedule, weights: Tensor, means: Tensor, stds: Tensor) -> crate::Result<Self> {
        let w = weights.to_kind(Kind::Double);
        let (means, stds) = (means.to_kind(Kind::Double), stds.to_kind(Kind::Double));
        let k = w.size1().map_err(|_| crate::BenchError::user("gmm: weights must be a 1-d list"))?;
        if means.size() != stds.size() || means.size().first() != Some(&k) || means.dim() < 2 {
            return Err(crate::BenchError::user(format!(
                "gmm: means {:?} and stds {:?} must both be [K, ...] with K = {k} weights",
                means.size(),
                stds.size()
            )));
        }
        let wsum = w.sum(Kind::Double).double_value(&[]);
        if w.min().double_value(&[]) <= 0.0 || !(wsum.is_finite()) || stds.min().double_value(&[]) <= 0.0 {
            return Err(crate::BenchError::user("gmm: weights and stds must be positive"));
        }
        Ok(GmmOracle { schedule, output: Prediction::Epsilon, weights: w / wsum, means, stds })
    }

    /// K components of the given sample shape from a seed: weights ∝ U(0.5, 1.5), means
    /// U(−0.6, 0.6), stds U(0.05, 0.3), from a SplitMix64 stream (independent of torch's RNG).
    pub fn from_seed(schedule: NoiseSchedule, shape: &[i64], k: usize, seed: u64) -> crate::Result<Self> {
        if k == 0 {
            return Err(crate::BenchError::user("gmm: need at least one component"));
        }
        let mut rng = SplitMix64(seed);
        let numel: i64 = shape.iter().product();
        let mut full = vec![k as i64];
        full.extend_from_slice(shape);
        let w: Vec<f64> = (0..k).map(|_| 0.5 + rng.unit()).collect();
        let m: Vec<f64> = (0..k as i64 * numel).map(|_| -0.6 + 1.2 * rng.unit()).collect();
        let s: Vec<f64> = (0..k as i64 * numel).map(|_| 0.05 + 0.25 * rng.unit()).collect();
        Self::new(schedule, Tensor::from_slice(&w), Tensor::from_slice(&m).view(full.as_slice()), Tensor::from_slice(&s).view(full.as_slice()))
    }
    pub fn shape(&self) -> Vec<i64> {
        self.means.size()[1..].to_vec()
    }
    /// E[x0] = Σ_k w_k μ_k, flattened.
    pub fn data_mean(&self) -> Tensor {
        let k = self.weights.size()[0];
        self.weights.matmul(&self.means.view([k, -1]))
    }
    /// Cov[x0] = Σ_k w_k (diag s_k² + μ_k μ_kᵀ) − μ μᵀ, [D, D].
    pub fn data_covariance(&self) -> Tensor {
        let k = self.weights.size()[0];
        let m = self.means.view([k, -1]);
        let w = self.weights.view([k, 1]);
        let second = (&m * &w).transpose(0, 1).matmul(&m)
            + (self.stds.view([k, -1]).square() * &w).sum_dim_intlist(0, false, Kind::Double).diag(0);
        let mu = self.data_mean();
        second - mu.outer(&mu)
    }
}

/// SplitMix64 (Steele et al. 2014): a tiny, well-mixed generator for reproducible oracle draws.
struct SplitMix64(u64);
impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        crate::noise::mix(self.0)
    }
    /// Uniform in [0, 1) with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl GmmOracle {
    pub fn with_output(mut self, output: Prediction) -> Self {
        self.output = output;
        self
    }
    /// ε*(x, t) for per-sample labels t.
    pub fn eps(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.eps_at(x, &host_labels(t)?)
    }
    fn eps_at(&self, x: &Tensor, labels: &[f64]) -> Result<Tensor> {
        let dev = x.device();
        let b = labels.len() as i64;
        let ab: Vec<f64> = labels.iter().map(|&l| alpha_bar_at(&self.schedule, l)).collect();
        let k = self.weights.size()[0];
        let nd = self.means.dim() as i64 - 1;
        // Broadcast shapes: x [B,1,...], ᾱ [B,1,1..], components [1,K,...].
        let mut ab_shape = vec![b, 1];
        ab_shape.extend(std::iter::repeat_n(1, nd as usize));
        let ab = Tensor::from_slice(&ab).to_device(dev).view(ab_shape.as_slice());
        let xd = x.to_kind(Kind::Double).unsqueeze(1);
        let mu = self.means.to_device(dev).unsqueeze(0);
        let var_data = self.stds.to_device(dev).square().unsqueeze(0);
        let var = &ab * var_data + (1.0f64 - &ab);
        let diff = &xd - ab.sqrt() * mu;
        let eps_k = &diff * (1.0f64 - &ab).sqrt() / &var;
        // log w_k + log N(x; √ᾱ μ_k, var_k) up to a constant shared by all k.
        let dims: Vec<i64> = (2..2 + nd).collect();
        let loglik = (diff.square() / &var + var.log()).sum_dim_intlist(dims.as_slice(), false, Kind::Double) * -0.5;
        let logits = loglik + self.weights.to_device(dev).log().view([1, k]);
        let resp = (&logits - logits.logsumexp([1i64].as_slice(), true)).exp();
        let mut r_shape = vec![b, k];
        r_shape.extend(std::iter::repeat_n(1, nd as usize));
        Ok((eps_k * resp.view(r_shape.as_slice())).sum_dim_intlist([1i64].as_slice(), false, Kind::Double).to_kind(x.kind()))
    }
}

impl Denoiser for GmmOracle {
    fn forward(&self, x: &Tensor, t: &Tensor, _cond: Option<&Condition>) -> Result<Tensor> {
        let labels = host_labels(t)?;
        if self.output != Prediction::Epsilon && labels.iter().all(|&l| alpha_bar_at(&self.schedule, l) == 0.0) {
            // At ᾱ = 0 (zero terminal SNR) x_t holds no signal: x̂0* = E[x0] and v* = −E[x0];
            // the ε route would divide by α = 0.
            let x0 = self.data_mean().to_device(x.device()).to_kind(x.kind()).unsqueeze(0).f_expand_as(x)?;
            return Ok(if self.output == Prediction::VPrediction { -x0 } else { x0 });
        }
        express(self.output, &self.schedule, self.eps_at(x, &labels)?, x, &labels)
    }
    fn describe(&self) -> String {
        format!("oracle:gmm{{k={}, shape={:?}}}", self.weights.size()[0], self.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_eps_is_posterior_mean_of_noise() {
        // Monte Carlo check of E[ε | x_t] on a 1-pixel Gaussian: regress ε on x_t.
        crate::test_rng::seed(0);
        let s = NoiseSchedule::ddpm_linear();
        let o = GaussianOracle::new(s.clone(), Tensor::from(0.3).view([1, 1, 1]), Tensor::from(0.5).view([1, 1, 1]));
        let n = 200_000;
        let t = 400usize;
        let ab = s.alpha_bar(t);
        let x0 = Tensor::randn([n, 1, 1, 1], (Kind::Double, tch::Device::Cpu)) * 0.5 + 0.3;
        let e = Tensor::randn([n, 1, 1, 1], (Kind::Double, tch::Device::Cpu));
        let xt = &x0 * ab.sqrt() + &e * (1.0 - ab).sqrt();
        let pred = o.eps(&xt, &Tensor::full([n], t as f64, (Kind::Double, tch::Device::Cpu))).unwrap();
        // E[(ε − ε*)·x_t] = 0 for the exact posterior mean; and ε* explains the regression fully.
        let resid: f64 = ((&e - &pred) * &xt).mean(Kind::Double).double_value(&[]);
        assert!(resid.abs() < 5e-3, "{resid}");
        assert!((alpha_bar_at(&s, t as f64) - ab).abs() < 1e-15);
    }

    #[test]
    fn gmm_with_one_component_is_the_gaussian_oracle() {
        let s = NoiseSchedule::ddpm_linear();
        let mean = Tensor::from_slice(&[0.3f64, -0.4]).view([1, 1, 2]);
        let std = Tensor::from_slice(&[0.5f64, 0.2]).view([1, 1, 2]);
        let g = GaussianOracle::new(s.clone(), mean.shallow_clone(), std.shallow_clone());
        let m = GmmOracle::new(s, Tensor::from_slice(&[1.0f64]), mean.unsqueeze(0), std.unsqueeze(0)).unwrap();
        let x = Tensor::from_slice(&[0.1f64, 2.0, -1.0, 0.5]).view([2, 1, 1, 2]);
        let t = Tensor::from_slice(&[10.0f64, 700.5]);
        let err = (g.eps(&x, &t).unwrap() - m.eps(&x, &t).unwrap()).abs().max().double_value(&[]);
        assert!(err < 1e-14, "{err}");
    }

    #[test]
    fn gmm_eps_is_posterior_mean_of_noise() {
        // E[(ε − ε*) g(x_t)] = 0 for g = 1, x_t, x_t² on a 2-component, 1-pixel mixture.
        crate::test_rng::seed(1);
        let s = NoiseSchedule::ddpm_linear();
        let o = GmmOracle::new(
            s.clone(),
            Tensor::from_slice(&[0.3f64, 0.7]),
            Tensor::from_slice(&[-0.8f64, 0.5]).view([2, 1, 1, 1]),
            Tensor::from_slice(&[0.1f64, 0.3]).view([2, 1, 1, 1]),
        )
        .unwrap();
        let n = 400_000;
        let t = 300usize;
        let ab = s.alpha_bar(t);
        let opts = (Kind::Double, tch::Device::Cpu);
        let comp = Tensor::rand([n, 1, 1, 1], opts).lt(0.3);
        let x0 = (Tensor::randn([n, 1, 1, 1], opts) * 0.1 - 0.8)
            .where_self(&comp, &(Tensor::randn([n, 1, 1, 1], opts) * 0.3 + 0.5));
        let e = Tensor::randn([n, 1, 1, 1], opts);
        let xt = &x0 * ab.sqrt() + &e * (1.0 - ab).sqrt();
        let pred = o.eps(&xt, &Tensor::full([n], t as f64, opts)).unwrap();
        for g in [xt.ones_like(), xt.shallow_clone(), xt.square()] {
            let r: f64 = ((&e - &pred) * g).mean(Kind::Double).double_value(&[]);
            assert!(r.abs() < 6e-3, "{r}");
        }
        // And ε* beats the single-Gaussian predictor with the mixture's moments.
        let mse: f64 = (&e - &pred).square().mean(Kind::Double).double_value(&[]);
        assert!(mse < 0.5, "{mse}");
    }

    #[test]
    fn gmm_is_stable_far_from_the_data_and_reproducible_from_a_seed() {
        let s = NoiseSchedule::ddpm_linear();
        let a = GmmOracle::from_seed(s.clone(), &[3, 4, 4], 5, 7).unwrap();
        let b = GmmOracle::from_seed(s, &[3, 4, 4], 5, 7).unwrap();
        assert!(a.means.equal(&b.means) && a.stds.equal(&b.stds));
        let x = Tensor::full([2, 3, 4, 4], 1e3, (Kind::Double, tch::Device::Cpu));
        let e = a.eps(&x, &Tensor::from_slice(&[0.0f64, 999.0])).unwrap();
        assert_eq!(e.isfinite().all().int64_value(&[]), 1);
        let ef = a.eps(&x.to_kind(Kind::Float), &Tensor::from_slice(&[5.0f64, 5.0])).unwrap();
        assert_eq!(ef.kind(), Kind::Float);
    }

    #[test]
    fn fractional_labels_interpolate_log_alpha_bar() {
        let s = NoiseSchedule::ddpm_linear();
        let mid = alpha_bar_at(&s, 10.5);
        assert!((mid - (s.alpha_bar(10) * s.alpha_bar(11)).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn gmm_data_moments_match_samples() {
        let g = GmmOracle::from_seed(NoiseSchedule::ddpm_linear(), &[2, 1, 1], 3, 5).unwrap();
        // Draw 200k samples: pick a component by weight, then a Gaussian draw.
        crate::test_rng::seed(1);
        let n = 200_000;
        let comp = g.weights.multinomial(n, true);
        let x = g.means.view([3, 2]).index_select(0, &comp)
            + g.stds.view([3, 2]).index_select(0, &comp) * Tensor::randn([n, 2], (Kind::Double, tch::Device::Cpu));
        let mean = x.mean_dim(0, false, Kind::Double);
        let xc = &x - &mean;
        let cov = xc.transpose(0, 1).matmul(&xc) / (n as f64 - 1.0);
        let dm = (&mean - g.data_mean()).abs().max().double_value(&[]);
        let dc = (&cov - g.data_covariance()).abs().max().double_value(&[]);
        assert!(dm < 3e-3 && dc < 3e-3, "{dm} {dc}");
    }
}
