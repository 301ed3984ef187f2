//! A model of one noise space seen exactly from a sampler of another, so VP samplers (DDIM,
//! DPM-Solver(++), UniPC, DEIS, PNDM, the diffusers and k-diffusion Karras family, …) run on σ-space
//! and rectified-flow models, and σ samplers (`edm_heun`, `edm_euler`, `ipndm`) on VP and flow
//! models.
//!
//! Every space writes a noisy sample as x = a·x0 + b·ε: VP a = √ᾱ, b = √(1−ᾱ); σ (VE/EDM)
//! a = 1, b = σ; flow a = 1 − t, b = t. Two levels with the same ratio b/a (the VE noise level
//! σ̃, Karras et al. 2022 Eq. 4 with s(t) = a) hold the same information, and their samples differ
//! by the factor a'/a (= b'/b). So the model is called on x·a'/a at its own label for σ̃, its
//! output is read as x̂0 there, and x̂0 is handed to the sampler in the parameterisation it reads:
//! ε̂ = (x − a·x̂0)/b for VP samplers, x̂0 for σ samplers. No step of the sampler changes.
//!
//! Labels: VP labels τ are read on the spec's schedule with log ᾱ linear between integer labels
//! (the oracle's and DPM-Solver's convention); σ labels are σ; flow labels are t·T with T the
//! schedule's length. Where a VP sampler states its node (α, σ) the level is taken from it, so
//! the model is evaluated at exactly the noise level the sampler's update assumes.
use super::continuous::Node;
use crate::models::oracle::alpha_bar_at;
use crate::models::{Condition, Denoiser, NoiseSpace, Prediction};
use crate::schedule::NoiseSchedule;
use crate::{BenchError, Result};
use tch::Tensor;

/// How a sampler of space `sampler` sees a model of space `model` whose output means
/// `model_prediction`.
#[derive(Debug, Clone)]
pub struct SpaceView {
    sampler: NoiseSpace,
    model: NoiseSpace,
    model_prediction: Prediction,
    schedule: NoiseSchedule,
}

impl SpaceView {
    /// None when the spaces agree (the model is called as it is).
    pub fn new(sampler: NoiseSpace, model: NoiseSpace, model_prediction: Prediction, schedule: &NoiseSchedule) -> Option<SpaceView> {
        (sampler != model).then(|| SpaceView { sampler, model, model_prediction, schedule: schedule.clone() })
    }

    /// What a sampler of `space` reads from a converted model: ε̂ (every VP sampler takes it) or x̂0.
    pub fn prediction_seen(space: NoiseSpace) -> Prediction {
        match space {
            NoiseSpace::Vp => Prediction::Epsilon,
            NoiseSpace::Sigma => Prediction::Sample,
            NoiseSpace::Flow => Prediction::Flow,
        }
    }

    pub fn prediction(&self) -> Prediction {
        Self::prediction_seen(self.sampler)
    }

    /// The level (a, b) of a sampler's label (its node's α and σ).
    pub fn level(&self, label: f64) -> Node {
        match self.sampler {
            NoiseSpace::Vp => Node::from_alpha_bar(label, alpha_bar_at(&self.schedule, label)),
            NoiseSpace::Sigma => ab_node(label, 1.0, label),
            NoiseSpace::Flow => {
                let t = label / self.schedule.len() as f64;
                ab_node(label, 1.0 - t, t)
            }
        }
    }

    /// The σ range a σ sampler can visit: a VP model's σ̃ from label 0 to T−1; any σ for a flow model.
    pub fn sigma_range(&self) -> (f64, f64) {
        match self.model {
            NoiseSpace::Vp => {
                let sigma = |t: usize| ((1.0 - self.schedule.alpha_bar(t)) / self.schedule.alpha_bar(t)).sqrt();
                (sigma(0), sigma(self.schedule.len() - 1))
            }
            _ => (0.0, f64::INFINITY),
        }
    }

    /// The model's label and level at the sampler's level `at` (same ratio b/a).
    fn model_level(&self, at: &Node) -> Result<Node> {
        let (a, b) = (at.alpha, at.sigma);
        match self.model {
            NoiseSpace::Sigma if a > 0.0 => Ok(ab_node(b / a, 1.0, b / a)),
            NoiseSpace::Sigma => Err(BenchError::user("a σ-space model cannot be evaluated at infinite noise (a schedule with zero terminal SNR)")),
            NoiseSpace::Flow => {
                let t = b / (a + b);
                Ok(ab_node(t * self.schedule.len() as f64, 1.0 - t, t))
            }
            NoiseSpace::Vp => {
                let n = a.hypot(b);
                let label = label_at_alpha_bar(&self.schedule, (a / n) * (a / n)).ok_or_else(|| {
                    let (lo, hi) = self.sigma_range();
                    BenchError::user(format!("σ = {} lies outside the VP model's levels (σ̃ from {lo:.4} to {hi:.4} on its schedule)", b / a))
                })?;
                Ok(ab_node(label, a / n, b / n))
            }
        }
    }

    /// One model call for a batch whose sample i sits at the sampler's level `at[i]`; returns
    /// what the sampler reads ([`SpaceView::prediction`]) in x's dtype.
    pub fn forward(&self, model: &dyn Denoiser, x: &Tensor, at: &[Node], cond: Option<&Condition>) -> Result<Tensor> {
        let inner: Vec<Node> = at.iter().map(|n| self.model_level(n)).collect::<Result<_>>()?;
        // x' = x·a'/a, or x·b'/b where a = 0 (pure noise, reachable only by flow models).
        let gain: Vec<f64> = at.iter().zip(&inner).map(|(o, i)| if o.alpha > 0.0 { i.alpha / o.alpha } else { i.sigma / o.sigma }).collect();
        let dev = x.device();
        let per_sample = |v: &[f64]| -> Result<Tensor> {
            let mut shape = vec![-1i64];
            shape.extend(std::iter::repeat_n(1, x.dim().saturating_sub(1)));
            Ok(Tensor::from_slice(v).f_to_device(dev)?.f_to_kind(x.kind())?.f_view(shape.as_slice())?)
        };
        let x_in = x * per_sample(&gain)?;
        let labels = Tensor::from_slice(&inner.iter().map(|n| n.label).collect::<Vec<_>>()).f_to_device(dev)?;
        let raw = model.forward(&x_in, &labels, cond)?;
        let x0 = super::per_row(&raw, &x_in, &inner, |r, xi, n| super::raw_to_x0(self.model_prediction, r, xi, n))?;
        match self.sampler {
            NoiseSpace::Sigma => Ok(x0),
            NoiseSpace::Vp => Ok((x - x0 * per_sample(&at.iter().map(|n| n.alpha).collect::<Vec<_>>())?) / per_sample(&at.iter().map(|n| n.sigma).collect::<Vec<_>>())?),
            NoiseSpace::Flow => Err(BenchError::Internal("flow samplers run on flow models only".into())),
        }
    }
}

fn ab_node(label: f64, a: f64, b: f64) -> Node {
    Node { label, alpha: a, sigma: b, lambda: a.ln() - b.ln() }
}

/// The VP label τ with ᾱ(τ) = `alpha_bar` under [`alpha_bar_at`]'s convention (log ᾱ linear
/// between integer labels), or None outside the schedule's levels (a relative 1e-9 of slack at
/// either end is read as the end label).
pub fn label_at_alpha_bar(schedule: &NoiseSchedule, alpha_bar: f64) -> Option<f64> {
    let last = schedule.len() - 1;
    let log = |t: usize| schedule.alpha_bar(t).ln();
    let target = alpha_bar.ln();
    if target >= log(0) {
        return (target - log(0) <= 1e-9 * log(0).abs().max(1e-300)).then_some(0.0);
    }
    if target <= log(last) {
        return (log(last) - target <= 1e-9 * log(last).abs()).then_some(last as f64);
    }
    // log ᾱ decreases with the label: bisect for log ᾱ_lo > target ≥ log ᾱ_hi, hi = lo + 1.
    let (mut lo, mut hi) = (0, last);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if log(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo as f64 + (target - log(lo)) / (log(hi) - log(lo)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::oracle::GaussianOracle;
    use tch::Kind;

    fn oracle(space: NoiseSpace) -> GaussianOracle {
        let mean = Tensor::from_slice(&[0.3f64, -0.2]).view([2, 1, 1]);
        let std = Tensor::from_slice(&[0.5f64, 1.4]).view([2, 1, 1]);
        GaussianOracle::new(NoiseSchedule::ddpm_linear(), mean, std).in_space(space)
    }

    #[test]
    fn labels_invert_the_vp_convention() {
        let s = NoiseSchedule::ddpm_linear();
        for tau in [0.0, 0.25, 17.0, 499.5, 998.75, 999.0] {
            let back = label_at_alpha_bar(&s, alpha_bar_at(&s, tau)).unwrap();
            assert!((back - tau).abs() < 1e-9, "{tau} → {back}");
        }
        assert_eq!(label_at_alpha_bar(&s, 0.99999999), None);
        assert_eq!(label_at_alpha_bar(&s, 1e-6), None);
    }

    /// Every model space answers the same ε̂ to a VP sampler and the same x̂0 to a σ sampler:
    /// the Gaussian oracle is one distribution written in three spaces.
    #[test]
    fn every_space_answers_alike() {
        let x = Tensor::from_slice(&[0.7f64, -1.3, 0.2, 2.0]).view([2, 2, 1, 1]);
        let vp_nodes = [Node::from_alpha_bar(123.5, alpha_bar_at(&NoiseSchedule::ddpm_linear(), 123.5)); 2];
        let sigma_nodes = [ab_node(3.0, 1.0, 3.0), ab_node(0.05, 1.0, 0.05)];
        for (sampler, at) in [(NoiseSpace::Vp, &vp_nodes[..]), (NoiseSpace::Sigma, &sigma_nodes[..])] {
            let native = oracle(sampler);
            let want = match sampler {
                NoiseSpace::Vp => native.forward(&x, &Tensor::from_slice(&[123.5f64, 123.5]), None).unwrap(),
                _ => native.forward(&x, &Tensor::from_slice(&[3.0f64, 0.05]), None).unwrap(),
            };
            for model in [NoiseSpace::Vp, NoiseSpace::Sigma, NoiseSpace::Flow] {
                let o = oracle(model);
                let got = match SpaceView::new(sampler, model, o.output, &o.schedule) {
                    Some(v) => v.forward(&o, &x, at, None).unwrap(),
                    None => continue,
                };
                let d = (&got - &want).abs().max().double_value(&[]);
                assert!(d < 1e-12, "{sampler:?} sampler on {model:?} model: {d}");
            }
        }
    }

    fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).norm().double_value(&[]) / b.norm().double_value(&[])
    }

    /// One sampler on the oracle of `model` space, seen from its own space; same x_T and step noise.
    fn run(sampler: &dyn super::super::Sampler, model: NoiseSpace, z: &Tensor) -> Tensor {
        let o = oracle(model);
        let view = SpaceView::new(sampler.space(), model, o.output, &o.schedule);
        let counted = super::super::Counted::new(&o, o.output).viewed(view.as_ref());
        tch::manual_seed(7);
        sampler.sample(&counted, z.shallow_clone(), &mut super::super::GlobalRng).unwrap()
    }

    /// Every VP and σ sampler gives the same samples on the same data written in any space:
    /// through the σ and flow views exactly alike (both evaluate the model at the sampler's own
    /// node); on the VP model too for σ samplers (whose σ lies between the VP levels, where the
    /// labels invert exactly), and for VP samplers up to the difference between a node's level
    /// and the level its fractional label has on the VP model (none on integer labels).
    #[test]
    fn every_denoiser_sampler_runs_alike_on_every_space() {
        let schedule = NoiseSchedule::ddpm_linear();
        tch::manual_seed(3);
        let z = Tensor::randn([3, 2, 1, 1], (Kind::Double, tch::Device::Cpu));
        let mut worst_vp: (f64, &str) = (0.0, "");
        for d in super::super::DEFINITIONS.iter().filter(|d| d.runs_converted()) {
            let steps = if d.nfe.starts_with("adaptive") { 1 } else { 8 };
            // σ samplers on the VP model keep to its σ̃ range [0.01, 157].
            let range: &[(&str, &str)] = if d.space() == NoiseSpace::Sigma { &[("sigma_min", "0.02"), ("sigma_max", "80")] } else { &[] };
            let sm = super::super::build_from_text(d.name, range, steps, &schedule).unwrap();
            let spaces = [NoiseSpace::Vp, NoiseSpace::Sigma, NoiseSpace::Flow];
            let [vp, sigma, flow] = spaces.map(|s| run(sm.as_ref(), s, &z));
            let e = rel_l2(&flow, &sigma);
            assert!(e < 1e-10, "{}: flow vs σ model {e}", d.name);
            let e = rel_l2(&vp, &sigma);
            if d.space() == NoiseSpace::Sigma {
                assert!(e < 1e-10, "{}: VP vs σ model {e}", d.name);
            } else {
                // Integer labels on the float64 table (DEIS and SA-Solver read diffusers' float32
                // one, the Karras family fractional labels: 1e-8 to 1e-5 here).
                let integer = ["ddim", "ddpm", "ddpm_large", "f-pndm", "s-pndm", "fon", "plms", "dpm_solver", "dpm_solver++", "unipc", "lcm", "tcd"];
                if integer.contains(&d.name) {
                    assert!(e < 1e-13, "{}: VP vs σ model on integer labels {e}", d.name);
                }
                if e > worst_vp.0 {
                    worst_vp = (e, d.name);
                }
            }
        }
        assert!(worst_vp.0 < 1e-4, "{worst_vp:?}");
    }

    #[test]
    fn sigma_outside_a_vp_model_is_an_error() {
        let o = oracle(NoiseSpace::Vp);
        let v = SpaceView::new(NoiseSpace::Sigma, NoiseSpace::Vp, o.output, &o.schedule).unwrap();
        let x = Tensor::zeros([1, 2, 1, 1], (Kind::Double, tch::Device::Cpu));
        let e = v.forward(&o, &x, &[ab_node(500.0, 1.0, 500.0)], None).unwrap_err().to_string();
        assert!(e.contains("σ = 500 lies outside the VP model's levels (σ̃ from 0.0100 to 157.4"), "{e}");
        assert_eq!(v.sigma_range().0, NoiseSchedule::ddpm_linear().sigma(0));
        // With EDM's default range the grid is clamped to the VP model's ends, which it reaches.
        let sm = super::super::build_from_text("edm_heun", &[], 8, &o.schedule).unwrap();
        let x = run(sm.as_ref(), NoiseSpace::Vp, &Tensor::ones([1, 2, 1, 1], (Kind::Double, tch::Device::Cpu)));
        assert!(x.isfinite().all().int64_value(&[]) == 1);
    }
}
