//! Samplers: one trait, the shared pieces (ε↔x0, the DDIM step φ, NFE counting, noise), and one
//! file per family next to the equations it implements.
pub mod continuous;
pub mod ddim;
pub mod deis;
pub mod dpm_solver;
pub mod exact;
pub mod karras;
pub mod multistep;
pub mod params;
pub mod pndm;
pub mod solver_registry;
pub mod unipc;

use crate::models::EpsModel;
use crate::schedule::NoiseSchedule;
use std::cell::{Cell, RefCell};
use tch::{Kind, Tensor};

/// Every model evaluation goes through here, so NFE is counted in exactly one place.
pub struct Counted<'a> {
    model: &'a dyn EpsModel,
    nfe: Cell<usize>,
    /// Optional per-NFE trace of (label, x, ε̂), for `bench sample --trace` and parity tests.
    trace: Option<RefCell<Vec<(f64, Tensor, Tensor)>>>,
}

impl<'a> Counted<'a> {
    pub fn new(model: &'a dyn EpsModel) -> Self {
        Counted { model, nfe: Cell::new(0), trace: None }
    }
    pub fn with_trace(model: &'a dyn EpsModel) -> Self {
        Counted { model, nfe: Cell::new(0), trace: Some(RefCell::new(Vec::new())) }
    }
    /// ε̂(x, t) with the same label t for the whole batch.
    pub fn eps(&self, x: &Tensor, t: f64) -> Tensor {
        self.nfe.set(self.nfe.get() + 1);
        let labels = Tensor::full([x.size()[0]], t, (Kind::Double, x.device()));
        let e = self.model.eps(x, &labels);
        if let Some(tr) = &self.trace {
            tr.borrow_mut().push((t, x.shallow_clone(), e.shallow_clone()));
        }
        e
    }
    pub fn nfe(&self) -> usize {
        self.nfe.get()
    }
    pub fn take_trace(&self) -> Vec<(f64, Tensor, Tensor)> {
        self.trace.as_ref().map(|t| std::mem::take(&mut *t.borrow_mut())).unwrap_or_default()
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
    /// ᾱ_0 of the schedule (diffusers' `set_alpha_to_one=False`, PNDM, DPM-Solver's t=1e-3 region).
    AlphaBarZero,
    /// σ = 0 in the Karras parametrisation.
    SigmaZero,
}

/// A configured sampler for a fixed number of steps.
pub trait Sampler {
    /// Registry name, e.g. `ddim`.
    fn name(&self) -> &'static str;
    /// Exact number of model evaluations for this configuration.
    fn nfe(&self) -> usize;
    /// The model labels in call order (one per NFE), for pinning tests and `--dry-run`.
    fn labels(&self) -> Vec<f64>;
    fn end_point(&self) -> EndPoint;
    /// Run from x_T (already scaled as the sampler expects: N(0, I) for VP samplers) to x_0.
    fn sample(&self, model: &Counted, x_t: Tensor, noise: &mut dyn NoiseSource) -> Tensor;
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
    let x0 = x0_from_eps(x, eps, alpha_bar);
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
pub type Schedule = NoiseSchedule;


/// What `bench samplers` prints for one sampler.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SamplerInfo {
    pub name: &'static str,
    /// (parameter, default, allowed values / meaning).
    pub params: &'static [(&'static str, &'static str, &'static str)],
    pub default_skip: &'static str,
    pub nfe: &'static str,
    pub end_point: &'static str,
    pub reference: &'static str,
}

/// Every sampler the crate provides; each family keeps its entries in its own file.
pub fn sampler_info() -> Vec<SamplerInfo> {
    let mut v = ddim::INFOS.to_vec();
    v.extend_from_slice(pndm::INFOS);
    v.extend(solver_registry::infos());
    v
}

/// Sampler parameters as given by the user (`key: value` strings from the spec or CLI).
pub type SamplerParams = params::ParamMap;

/// Builds a configured sampler by registry name.
pub fn build_sampler(name: &str, params: &SamplerParams, steps: usize, schedule: &NoiseSchedule) -> crate::Result<Box<dyn Sampler>> {
    if let Some(s) = ddim::build(name, params, steps, schedule)? {
        return Ok(s);
    }
    if let Some(s) = pndm::build(name, params, steps, schedule)? {
        return Ok(s);
    }
    if let Some(c) = solver_registry::constructor(name) {
        return c(params, steps, schedule);
    }
    let names: Vec<_> = sampler_info().iter().map(|i| i.name).collect();
    Err(crate::BenchError::user(format!("sampler: unknown name {name:?}; allowed: {}", names.join(", "))))
}

/// Reads one parameter of `sampler` from `params`, or its default.
pub(crate) fn param<T: std::str::FromStr>(sampler: &str, params: &SamplerParams, key: &str, default: T) -> crate::Result<T> {
    match params.get(key) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| {
            crate::BenchError::user(format!("sampler {sampler}: parameter {key}={v:?} is not a valid {}", std::any::type_name::<T>()))
        }),
    }
}

/// Rejects parameters a sampler does not take, naming the ones it does.
pub(crate) fn check_params(sampler: &str, params: &SamplerParams, allowed: &[&str]) -> crate::Result<()> {
    for k in params.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(crate::BenchError::user(format!(
                "sampler {sampler}: unknown parameter {k:?}; allowed: {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// `bench samplers`: one block per sampler, as a plain-text table.
pub fn render_sampler_table() -> String {
    let mut out = String::new();
    for i in sampler_info() {
        out.push_str(&format!("{}\n", i.name));
        out.push_str(&format!("  default skip  {}\n  NFE           {}\n  end point     {}\n  reference     {}\n", i.default_skip, i.nfe, i.end_point, i.reference));
        for (name, default, help) in i.params {
            out.push_str(&format!("  --set {name}={default:<12} {help}\n"));
        }
        out.push('\n');
    }
    out
}
