//! Samplers: one trait, the shared pieces (model calls with NFE counting and the conversions
//! between parameterisations, x̂0 clipping, the DDIM step φ, noise), the one definition per
//! sampler in [`def`], and one file per family next to the equations it implements.
pub mod consistency;
pub mod continuous;
pub mod ddim;
pub mod deis;
pub mod def;
pub mod diffusers_config;
pub mod edm;
pub mod dpm_solver;
pub mod exact;
pub mod flow;
pub mod ipndm;
pub mod k_diffusion;
pub mod karras;
pub mod lcm;
pub mod multistep;
pub mod pndm;
pub mod sa_solver;
pub mod space_view;
pub mod unipc;

pub use continuous::Node;
pub use def::{find, Args, ParamDef, ParamKind, SamplerDef, DEFINITIONS};

use crate::models::{Condition, Denoiser, Guidance, Prediction};
use crate::{BenchError, Result};
use std::cell::{Cell, RefCell};
use tch::{Kind, Tensor};

/// Every model evaluation goes through here, so NFE (sampler calls) and network evaluations
/// (2 per call under classifier-free guidance) are counted in exactly one place.
pub struct Counted<'a> {
    model: &'a dyn Denoiser,
    prediction: Prediction,
    cond: Option<&'a Condition>,
    guidance: Option<&'a Guidance>,
    nfe: Cell<usize>,
    network_evals: Cell<usize>,
    /// Model calls per sample, when an adaptive sampler's samples differ (see [`Counted::set_nfe_each`]).
    nfe_each: RefCell<Option<Vec<usize>>>,
    /// Optional per-NFE trace of (label, x, raw output), for `bench sample --trace` and parity tests.
    trace: Option<RefCell<Vec<(f64, Tensor, Tensor)>>>,
    /// A model of another noise space, converted exactly (see [`space_view`]).
    view: Option<&'a space_view::SpaceView>,
}

impl<'a> Counted<'a> {
    pub fn new(model: &'a dyn Denoiser, prediction: Prediction) -> Self {
        Counted { model, prediction, cond: None, guidance: None, nfe: Cell::new(0), network_evals: Cell::new(0), nfe_each: RefCell::new(None), trace: None, view: None }
    }
    /// Every call converts the model from its noise space to the sampler's; the sampler reads
    /// the view's parameterisation.
    pub fn viewed(mut self, view: Option<&'a space_view::SpaceView>) -> Self {
        if let Some(v) = view {
            self.prediction = v.prediction();
        }
        self.view = view;
        self
    }
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(RefCell::new(Vec::new()));
        self
    }
    /// Every call passes this per-sample condition (no guidance).
    pub fn conditioned(mut self, cond: Option<&'a Condition>) -> Self {
        self.cond = cond;
        self
    }
    /// Every call applies classifier-free guidance (one network call on 2B unless w = 1).
    pub fn guided(mut self, guidance: Option<&'a Guidance>) -> Self {
        self.guidance = guidance;
        self
    }
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }
    /// The σ range a σ-space model supports (a converted model: the levels it can be evaluated at).
    pub fn sigma_range(&self) -> (f64, f64) {
        match self.view {
            Some(v) => v.sigma_range(),
            None => self.model.sigma_range(),
        }
    }
    /// σ snapped to the model's trained levels (a converted model takes any level).
    pub fn round_sigma(&self, sigma: &Tensor) -> Tensor {
        match self.view {
            Some(_) => sigma.shallow_clone(),
            None => self.model.round_sigma(sigma),
        }
    }

    /// The network's raw output at (x, label), guidance applied.
    pub fn raw(&self, x: &Tensor, label: f64) -> Result<Tensor> {
        Ok(self.raw_with_variance(x, label)?.0)
    }

    /// [`Counted::raw`] and the learned-variance values of the same call, if the model has them.
    pub fn raw_with_variance(&self, x: &Tensor, label: f64) -> Result<(Tensor, Option<Tensor>)> {
        self.raw_at(x, label, None)
    }

    /// The raw output at `label`, whose level is `at` where the sampler states it (a view reads
    /// it from the label otherwise).
    fn raw_at(&self, x: &Tensor, label: f64, at: Option<&Node>) -> Result<(Tensor, Option<Tensor>)> {
        let b = x.size()[0];
        let labels = Tensor::full([b], label, (Kind::Double, x.device()));
        let levels = self.view.map(|v| vec![at.copied().unwrap_or_else(|| v.level(label)); b as usize]);
        let (out, var) = self.guided_call(x, &labels, levels.as_deref())?;
        self.record(label, x, &out);
        Ok((out, var))
    }

    fn record(&self, label: f64, x: &Tensor, out: &Tensor) {
        if let Some(tr) = &self.trace {
            tr.borrow_mut().push((label, x.shallow_clone(), out.shallow_clone()));
        }
    }

    /// ε̂ with a node per sample (an adaptive sampler's samples sit at different noise levels);
    /// one model call. The trace records sample 0's label.
    pub fn eps_each(&self, x: &Tensor, at: &[Node]) -> Result<Tensor> {
        let labels = Tensor::from_slice(&at.iter().map(|n| n.label).collect::<Vec<_>>()).to_device(x.device());
        let (raw, _) = self.guided_call(x, &labels, Some(at))?;
        self.record(at.first().map_or(0.0, |n| n.label), x, &raw);
        if self.prediction == Prediction::Epsilon {
            return Ok(raw);
        }
        per_row(&raw, x, at, |r, xi, n| raw_to_eps(self.prediction, r, xi, n))
    }

    /// Under guidance the variance is the conditional half's, as guided-diffusion's and
    /// diffusers' (DeepFloyd IF) pipelines take it: only the mean is guided. `levels` (one per
    /// sample) are the sampler's levels when a view converts the model.
    fn guided_call(&self, x: &Tensor, labels: &Tensor, levels: Option<&[Node]>) -> Result<(Tensor, Option<Tensor>)> {
        self.nfe.set(self.nfe.get() + 1);
        let b = x.size()[0];
        match self.guidance {
            Some(g) if g.scale != 1.0 => {
                self.network_evals.set(self.network_evals.get() + 2);
                let x2 = Tensor::f_cat(&[x, x], 0)?;
                let c2 = g.uncond.cat(&g.cond)?;
                let levels2 = levels.map(|l| [l, l].concat());
                let (out, var) = self.forward(&x2, &Tensor::f_cat(&[labels, labels], 0)?, levels2.as_deref(), Some(&c2))?;
                let (u, c) = (out.f_narrow(0, 0, b)?, out.f_narrow(0, b, b)?);
                let var = var.map(|v| v.f_narrow(0, b, b)).transpose()?;
                Ok((&u + (&c - &u) * g.scale, var))
            }
            Some(g) => {
                self.network_evals.set(self.network_evals.get() + 1);
                self.forward(x, labels, levels, Some(&g.cond))
            }
            None => {
                self.network_evals.set(self.network_evals.get() + 1);
                self.forward(x, labels, levels, self.cond)
            }
        }
    }

    /// One network evaluation, converted by the view when there is one (a converted model's
    /// learned variance is not offered: its VP samplers read ε̂ only).
    fn forward(&self, x: &Tensor, labels: &Tensor, levels: Option<&[Node]>, cond: Option<&Condition>) -> Result<(Tensor, Option<Tensor>)> {
        match (self.view, levels) {
            (Some(v), Some(at)) => Ok((v.forward(self.model, x, at, cond)?, None)),
            (Some(_), None) => Err(BenchError::Internal("a converted model was called without the sampler's levels".into())),
            (None, _) => self.model.forward_with_variance(x, labels, cond),
        }
    }

    /// The model's prediction at grid node `at` (its label and VP coefficients α, σ), ready to
    /// be read as ε̂ or x̂0.
    pub fn call<'x>(&self, x: &'x Tensor, at: &Node) -> Result<Output<'x>> {
        let (raw, variance) = self.raw_at(x, at.label, Some(at))?;
        Ok(Output { raw, variance, x, at: *at, prediction: self.prediction })
    }
    /// ε̂ at `at` (the common case).
    pub fn eps(&self, x: &Tensor, at: &Node) -> Result<Tensor> {
        Ok(self.call(x, at)?.eps())
    }
    pub fn nfe(&self) -> usize {
        self.nfe.get()
    }
    /// Network evaluations per sample: NFE, or 2·NFE under guidance with w ≠ 1.
    pub fn network_evals(&self) -> usize {
        self.network_evals.get()
    }
    /// An adaptive sampler states the calls each sample needed (the batch made `nfe()` calls,
    /// but a sample that finished early does not count those after).
    pub fn set_nfe_each(&self, nfe: Vec<usize>) {
        *self.nfe_each.borrow_mut() = Some(nfe);
    }
    /// (NFE, network evaluations) of each of the batch's `count` samples.
    pub fn cost_each(&self, count: usize) -> Vec<(usize, usize)> {
        let per_call = if self.nfe() == 0 { 1 } else { self.network_evals() / self.nfe() };
        match &*self.nfe_each.borrow() {
            Some(v) => v.iter().map(|&n| (n, n * per_call)).collect(),
            None => vec![(self.nfe(), self.network_evals()); count],
        }
    }
    pub fn take_trace(&self) -> Vec<(f64, Tensor, Tensor)> {
        self.trace.as_ref().map(|t| std::mem::take(&mut *t.borrow_mut())).unwrap_or_default()
    }
}

/// A model output at one node, with the conversions between parameterisations in one place
/// (x_t = α x0 + σ ε, v = α ε − σ x0; Salimans & Ho 2022 §4). A flow model's velocity
/// v = ε − x0 is read at flow nodes (α = 1 − t, σ = t): flow samplers call a flow model as it
/// is; samplers of other spaces see it through a [`space_view::SpaceView`], as ε̂ or x̂0.
pub struct Output<'x> {
    pub raw: Tensor,
    /// A learned-variance model's variance values from the same call (see
    /// [`Denoiser::forward_with_variance`]).
    pub variance: Option<Tensor>,
    x: &'x Tensor,
    at: Node,
    prediction: Prediction,
}

impl Output<'_> {
    /// ε̂. An ε-model's output is returned as is (bit-identical to the network's).
    pub fn eps(&self) -> Tensor {
        raw_to_eps(self.prediction, &self.raw, self.x, &self.at)
    }
    /// x̂0, each parameterisation by its most direct formula (no cancellation through ε for v).
    pub fn x0(&self) -> Tensor {
        raw_to_x0(self.prediction, &self.raw, self.x, &self.at)
    }
    /// x̂0 after clipping / dynamic thresholding.
    pub fn x0_clipped(&self, clip: &X0Clip) -> Tensor {
        clip.apply(self.x0())
    }
    /// ε̂ recomputed from the clipped x̂0 where clipping acts (diffusers' DDIM, DDPM,
    /// DPM-Solver, UniPC and DEIS schedulers do this), else the plain ε̂.
    pub fn eps_clipped(&self, clip: &X0Clip) -> Tensor {
        if clip.is_off() {
            return self.eps();
        }
        let x0 = self.x0_clipped(clip);
        (self.x - x0 * self.at.alpha) / self.at.sigma
    }
}

/// A raw output → ε̂ at (x, node). PNDM converts its combined outputs with this at each
/// transfer's start, as diffusers' `PNDMScheduler._get_prev_sample` does.
pub fn raw_to_eps(prediction: Prediction, raw: &Tensor, x: &Tensor, at: &Node) -> Tensor {
    match prediction {
        Prediction::Epsilon => raw.shallow_clone(),
        Prediction::VPrediction => raw * at.alpha + x * at.sigma,
        Prediction::Sample => (x - raw * at.alpha) / at.sigma,
        // On a flow node (α = 1 − t, σ = t): ε = x0 + v = x + (1 − t)·v.
        Prediction::Flow => x + raw * at.alpha,
    }
}

/// `f` on each sample at its own node, or once for the batch when the nodes agree (every
/// fixed-grid sampler).
pub fn per_row(raw: &Tensor, x: &Tensor, at: &[Node], f: impl Fn(&Tensor, &Tensor, &Node) -> Tensor) -> Result<Tensor> {
    if at.windows(2).all(|w| w[0] == w[1]) {
        return Ok(f(raw, x, &at[0]));
    }
    let rows: Vec<Tensor> = at.iter().enumerate().map(|(i, n)| f(&raw.get(i as i64), &x.get(i as i64), n)).collect();
    Ok(Tensor::f_stack(&rows, 0)?)
}

/// A raw output → x̂0 at (x, node).
pub fn raw_to_x0(prediction: Prediction, raw: &Tensor, x: &Tensor, at: &Node) -> Tensor {
    let (a, s) = (at.alpha, at.sigma);
    match prediction {
        Prediction::Epsilon => (x - raw * s) / a,
        Prediction::VPrediction => x * a - raw * s,
        Prediction::Sample => raw.shallow_clone(),
        // Flow nodes carry α = 1 − t, σ = t: x0 = x − t·v (diffusers' flow_prediction).
        Prediction::Flow => x - raw * s,
    }
}

/// diffusers' x̂0 clipping (`clip_sample`, `clip_sample_range`) and dynamic thresholding
/// (Saharia et al. 2022 §2.3; `thresholding`, `dynamic_thresholding_ratio`, `sample_max_value`).
/// Thresholding wins when both are set, as in diffusers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct X0Clip {
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
}

impl X0Clip {
    pub const OFF: X0Clip =
        X0Clip { clip_sample: false, clip_sample_range: 1.0, thresholding: false, dynamic_thresholding_ratio: 0.995, sample_max_value: 1.0 };

    pub fn is_off(&self) -> bool {
        !self.clip_sample && !self.thresholding
    }
    /// From the sampler parameters of the same names (those a sampler does not define are off).
    pub fn from_args(a: &Args) -> Result<X0Clip> {
        let has = |k: &str| a.def.param(k).is_some();
        Ok(X0Clip {
            clip_sample: has("clip_sample") && a.bool("clip_sample")?,
            clip_sample_range: if has("clip_sample_range") { a.f64("clip_sample_range")? } else { 1.0 },
            thresholding: has("thresholding") && a.bool("thresholding")?,
            dynamic_thresholding_ratio: if has("dynamic_thresholding_ratio") { a.f64("dynamic_thresholding_ratio")? } else { 0.995 },
            sample_max_value: if has("sample_max_value") { a.f64("sample_max_value")? } else { 1.0 },
        })
    }
    pub fn apply(&self, x0: Tensor) -> Tensor {
        if self.thresholding {
            self.threshold(&x0)
        } else if self.clip_sample {
            x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        } else {
            x0
        }
    }
    /// diffusers `_threshold_sample`: per sample, s = quantile(|x0|, ratio) clamped to
    /// [1, sample_max_value]; x0 ← clamp(x0, −s, s)/s (in float32 at least).
    fn threshold(&self, x0: &Tensor) -> Tensor {
        let shape = x0.size();
        let kind = x0.kind();
        let work = if kind == Kind::Double { x0.shallow_clone() } else { x0.to_kind(Kind::Float) };
        let flat = work.reshape([shape[0], -1]);
        let s = flat.abs().quantile_scalar(self.dynamic_thresholding_ratio, Some(1), true, "linear");
        let s = s.clamp(1.0, self.sample_max_value);
        let out = flat.clamp_tensor(Some(-&s), Some(s.shallow_clone())) / &s;
        out.reshape(shape.as_slice()).to_kind(kind)
    }
}

/// Source of the Gaussian noise a stochastic sampler injects. `step` is the sampler's step
/// index (0-based, in sampling order), so a sample's noise is a function of (seed, sample, step)
/// only, whatever the batch layout (the runner implements that; tests inject fixed noise).
pub trait NoiseSource {
    fn noise(&mut self, step: usize, like: &Tensor) -> Tensor;
}

/// Noise from tch's global generator; for tests and `bench sample` without a seed file.
pub struct GlobalRng;
impl NoiseSource for GlobalRng {
    fn noise(&mut self, _step: usize, like: &Tensor) -> Tensor {
        Tensor::randn_like(like)
    }
}

/// Where the sampler's trajectory ends.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum EndPoint {
    /// ᾱ = 1 (clean data; DDIM repo's final step uses ᾱ_{-1} = 1).
    AlphaBarOne,
    /// ᾱ_0 of the schedule (diffusers `set_alpha_to_one=False`, PNDM, DPM-Solver's t=1e-3 region).
    AlphaBarZero,
    /// σ = 0 in the Karras parametrisation.
    SigmaZero,
    /// σ̃ of label 0 in the Karras parametrisation (diffusers `final_sigmas_type="sigma_min"`): the
    /// sample keeps that noise, in the σ (VE) scale.
    SigmaMin,
}

/// A configured sampler for a fixed number of steps.
pub trait Sampler {
    /// Registry name, e.g. `ddim`.
    fn name(&self) -> &'static str;
    /// Exact number of model evaluations for this configuration; an adaptive sampler's guess
    /// (for progress bars: its counts are recorded per sample).
    fn nfe(&self) -> usize;
    /// Whether it picks its own steps, so that NFE differs from sample to sample.
    fn adaptive(&self) -> bool {
        false
    }
    /// The model labels in call order (one per NFE), for pinning tests and `--dry-run`.
    fn labels(&self) -> Vec<f64>;
    fn end_point(&self) -> EndPoint;
    /// The noise space its grid and updates live in (its definition's; a model of another
    /// space is converted by a [`space_view::SpaceView`]).
    fn space(&self) -> crate::models::NoiseSpace {
        find(self.name()).map_or(crate::models::NoiseSpace::Vp, |d| d.space())
    }
    /// Run from x_T (already scaled as the sampler expects: N(0, I) for VP samplers) to x_0.
    fn sample(&self, model: &Counted, x_t: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor>;
}

/// x̂0 from ε̂: x0 = (x − √(1−ᾱ) ε) / √ᾱ (DDPM eq. 15 rearranged).
pub fn x0_from_eps(x: &Tensor, eps: &Tensor, alpha_bar: f64) -> Tensor {
    (x - eps * (1.0 - alpha_bar).sqrt()) / alpha_bar.sqrt()
}

/// ε from x̂0: ε = (x − √ᾱ x0) / √(1−ᾱ).
pub fn eps_from_x0(x: &Tensor, x0: &Tensor, alpha_bar: f64) -> Tensor {
    (x - x0 * alpha_bar.sqrt()) / (1.0 - alpha_bar).sqrt()
}

/// DDIM's generalised step φ (Song et al. 2021, eq. 12): from x_t with ε̂ to the level ᾱ_prev,
/// with σ_t = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_prev); `noise` is used only when σ_t > 0.
pub fn ddim_step(x: &Tensor, eps: &Tensor, alpha_bar: f64, alpha_bar_prev: f64, eta: f64, noise: Option<&Tensor>) -> Tensor {
    ddim_update(&x0_from_eps(x, eps, alpha_bar), eps, alpha_bar, alpha_bar_prev, eta, noise)
}

/// DDIM eq. 12 from x̂0 and ε̂ given separately: √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ_t²) ε̂ + σ_t z
/// (they disagree when x̂0 was clipped and ε̂ was not, as diffusers' DDIMScheduler does by default).
pub fn ddim_update(x0: &Tensor, eps: &Tensor, alpha_bar: f64, alpha_bar_prev: f64, eta: f64, noise: Option<&Tensor>) -> Tensor {
    let sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta);
    let dir = eps * (1.0 - alpha_bar_prev - sigma * sigma).max(0.0).sqrt();
    let mean = x0 * alpha_bar_prev.sqrt() + dir;
    match noise {
        Some(z) if sigma > 0.0 => mean + z * sigma,
        _ => mean,
    }
}

/// σ_t(η) of DDIM eq. 16.
pub fn ddim_sigma(alpha_bar: f64, alpha_bar_prev: f64, eta: f64) -> f64 {
    eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)).sqrt()
}

/// Keeps the schedule available to every sampler in one form.
pub type Schedule = crate::schedule::NoiseSchedule;

/// Builds a configured sampler by name from written `key: value` parameters (validated and
/// defaults filled by its definition).
pub fn build_sampler(
    name: &str,
    written: &[(String, crate::spec::ParamValue)],
    skip: Option<crate::timesteps::Skip>,
    steps: usize,
    schedule: &Schedule,
) -> Result<Box<dyn Sampler>> {
    let def = find(name).ok_or_else(|| {
        let names: Vec<_> = DEFINITIONS.iter().map(|d| d.name).collect();
        BenchError::user(format!("sampler: unknown name {name:?}; allowed: {}", names.join(", ")))
    })?;
    let params = def.resolve(written).map_err(|e| BenchError::user(format!("sampler {name}: {e}")))?;
    let skip = skip.unwrap_or(def.default_skip);
    def.check_skip(skip).map_err(|e| BenchError::user(format!("sampler {name}: {e}")))?;
    def.build(&params, skip, steps, schedule)
}

/// [`build_sampler`] from `key=value` text (`bench sample --set`, tests): values are read as YAML
/// scalars (`0.5`, `true`, `leading`); a `skip` key sets the timestep rule.
pub fn build_from_text(name: &str, kv: &[(&str, &str)], steps: usize, schedule: &Schedule) -> Result<Box<dyn Sampler>> {
    let mut skip = None;
    let mut written = Vec::new();
    for (k, v) in kv {
        if *k == "skip" {
            skip = Some(crate::timesteps::Skip::parse(v.trim())?);
        } else {
            written.push((k.to_string(), crate::spec::ParamValue::from_text(v)));
        }
    }
    build_sampler(name, &written, skip, steps, schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameterisations_convert_consistently() {
        let at = Node::from_alpha_bar(3.0, 0.3);
        let x = Tensor::from_slice(&[0.7f64, -1.3, 0.2]);
        let eps = Tensor::from_slice(&[0.2f64, 0.9, -0.4]);
        let x0 = (&x - &eps * at.sigma) / at.alpha;
        let v = &eps * at.alpha - &x0 * at.sigma;
        for (p, raw) in [(Prediction::Epsilon, &eps), (Prediction::VPrediction, &v), (Prediction::Sample, &x0)] {
            let o = Output { raw: raw.shallow_clone(), variance: None, x: &x, at, prediction: p };
            let de = (o.eps() - &eps).abs().max().double_value(&[]);
            let dx = (o.x0() - &x0).abs().max().double_value(&[]);
            assert!(de < 1e-14 && dx < 1e-14, "{p:?}: {de} {dx}");
        }
        // A flow node (α = 1 − t, σ = t) and the velocity v = ε − x0.
        let t = 0.3;
        let at = Node { label: 300.0, alpha: 1.0 - t, sigma: t, lambda: ((1.0 - t) / t).ln() };
        let x = &x0 * (1.0 - t) + &eps * t;
        let o = Output { raw: &eps - &x0, variance: None, x: &x, at, prediction: Prediction::Flow };
        let de = (o.eps() - &eps).abs().max().double_value(&[]);
        let dx = (o.x0() - &x0).abs().max().double_value(&[]);
        assert!(de < 1e-14 && dx < 1e-14, "flow: {de} {dx}");
    }

    #[test]
    fn clipping_recomputes_eps_and_thresholding_matches_diffusers_rule() {
        let at = Node::from_alpha_bar(3.0, 0.5);
        let x = Tensor::from_slice(&[3.0f64, 0.0]).view([1, 2]);
        let eps = Tensor::zeros([1, 2], (Kind::Double, tch::Device::Cpu));
        let o = Output { raw: eps.shallow_clone(), variance: None, x: &x, at, prediction: Prediction::Epsilon };
        let clip = X0Clip { clip_sample: true, ..X0Clip::OFF };
        // x̂0 = x/α = (4.24, 0) → clipped to (1, 0); ε = (x − α x̂0)/σ.
        let e = o.eps_clipped(&clip);
        let want = (3.0 - 0.5f64.sqrt()) / 0.5f64.sqrt();
        assert!((e.double_value(&[0, 0]) - want).abs() < 1e-12 && e.double_value(&[0, 1]) == 0.0);
        // Thresholding: s = quantile(|x0|, 0.5) over [4, 2, 1, 0.5] = 1.5 → clamp to ±1.5, / 1.5.
        let t = X0Clip { thresholding: true, dynamic_thresholding_ratio: 0.5, sample_max_value: 10.0, ..X0Clip::OFF };
        let y = t.apply(Tensor::from_slice(&[4.0f64, -2.0, 1.0, 0.5]).view([1, 4]));
        let got: Vec<f64> = Vec::try_from(y.view([-1])).unwrap();
        assert_eq!(got, vec![1.0, -1.0, 1.0 / 1.5, 0.5 / 1.5]);
        // s is clamped to ≥ 1: small samples pass unchanged.
        let small = t.apply(Tensor::from_slice(&[0.25f64, -0.5]).view([1, 2]));
        assert_eq!(Vec::<f64>::try_from(small.view([-1])).unwrap(), vec![0.25, -0.5]);
    }
}
