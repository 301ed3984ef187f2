//! Rectified-flow sampling (flow matching, Liu et al. 2023 / Lipman et al. 2023; SD3, Flux):
//! x_t = (1 − t)·x0 + t·ε is integrated from t = 1 to 0 along the model's velocity v = ε − x0.
//! The grid and the Euler step are diffusers' `FlowMatchEulerDiscreteScheduler`, float32 where
//! diffusers keeps float32 (its `sigmas`, the timesteps and the state); Heun is
//! `FlowMatchHeunDiscreteScheduler` on the same grid, and DPM-Solver++ is
//! `DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")`, which
//! runs the VP exponential integrator with α = 1 − t, σ = t (its own grid, integer labels).
use super::def::{Args, ParamDef, ParamKind, SamplerDef};
use super::dpm_solver::{DpmSolver, Integrand, EULER_AT_FINAL, LOWER_ORDER_FINAL, SOLVER_TYPE};
use super::unipc::{UniPc, Variant, DISABLE_CORRECTOR, VARIANT};
use super::{Counted, EndPoint, NoiseSource, Node, Sampler};
use crate::models::Prediction;
use crate::timesteps::{numpy_linspace, Skip};
use crate::Result;
use tch::{Kind, Tensor};

/// How the uniform grid is bent towards high noise (diffusers' `shift` / dynamic shifting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// t' = s·t / (1 + (s − 1)·t) (SD3: s = 3).
    Static(f64),
    /// `time_shift(mu, 1, t)`: e^μ / (e^μ + 1/t − 1) (Flux, resolution-dependent μ).
    Exponential(f64),
    /// μ / (μ + 1/t − 1).
    Linear(f64),
}

impl Shift {
    fn apply(self, t: f64) -> f64 {
        match self {
            Shift::Static(s) => s * t / (1.0 + (s - 1.0) * t),
            Shift::Exponential(mu) => mu.exp() / (mu.exp() + (1.0 / t - 1.0)),
            Shift::Linear(mu) => mu / (mu + (1.0 / t - 1.0)),
        }
    }
}

/// The noise levels t_0 > … > t_{S−1} > t_S = 0 of diffusers' `set_timesteps(S)` (float32).
pub fn flow_grid(steps: usize, train_steps: usize, shift: Shift) -> Vec<f64> {
    let n = train_steps as f64;
    // `__init__`: the training grid (float32) shifted statically; its ends bound the inference grid.
    let static_shift = |t: f32| match shift {
        Shift::Static(s) => (s as f32 * t / (1.0 + (s as f32 - 1.0) * t)) as f64,
        _ => t as f64,
    };
    let (t_max, t_min) = (static_shift(1.0), static_shift(1.0f32 / n as f32));
    numpy_linspace(t_max * n, t_min * n, steps)
        .into_iter()
        .map(|ts| shift.apply(ts / n) as f32 as f64)
        .chain([0.0])
        .collect()
}

pub struct FlowEuler {
    levels: Vec<f64>,
    train_steps: usize,
    /// diffusers' `stochastic_sampling`: re-noise x̂0 to the next level with fresh noise.
    stochastic: bool,
}

/// The model's label at level t: diffusers' timestep t·T, in float32.
fn label32(t: f64, train_steps: usize) -> f64 {
    (t as f32 * train_steps as f32) as f64
}

/// The state's arithmetic: diffusers upcasts it to float32 in `step` (float64 stays float64 here).
fn work_kind(kind: Kind) -> Kind {
    if kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

impl FlowEuler {
    fn label(&self, t: f64) -> f64 {
        label32(t, self.train_steps)
    }
}

impl Sampler for FlowEuler {
    fn name(&self) -> &'static str {
        "flow_euler"
    }
    fn nfe(&self) -> usize {
        self.levels.len() - 1
    }
    fn labels(&self) -> Vec<f64> {
        self.levels[..self.levels.len() - 1].iter().map(|&t| self.label(t)).collect()
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::SigmaZero
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let kind = z.kind();
        let work = work_kind(kind);
        let mut x = z.to_kind(work);
        for (i, w) in self.levels.windows(2).enumerate() {
            let v = model.raw(&x.to_kind(kind), self.label(w[0]))?.to_kind(work);
            x = if self.stochastic {
                // `stochastic_sampling`: x̂0 = x − t·v, then x_next = (1 − t_next)·x̂0 + t_next·z with
                // fresh z (drawn on every step, as diffusers does, also the last where t_next = 0).
                let x0 = x - v * w[0];
                let z = noise.noise(i, &x0);
                x0 * (1.0 - w[1]) + z * w[1]
            } else {
                // FlowMatchEulerDiscreteScheduler.step: x + (t_next − t)·v, dt in float32.
                let dt = (w[1] as f32 - w[0] as f32) as f64;
                x + v * dt
            };
        }
        Ok(x.to_kind(kind))
    }
}

/// diffusers' `FlowMatchHeunDiscreteScheduler` (Karras et al. 2022 Alg. 1 with churn 0 in
/// t): Heun steps between the levels of [`flow_grid`] and an Euler step into t = 0.
pub struct FlowHeun {
    levels: Vec<f64>,
    train_steps: usize,
}

/// The derivative as `FlowMatchHeunDiscreteScheduler.step` forms it, through the denoised
/// x̂0 = x − t·v: (x − x̂0)/t (equal to v up to float32 rounding, which parity keeps).
fn heun_derivative(x: &Tensor, v: &Tensor, t: f64) -> Tensor {
    let denoised = x - v * t;
    (x - denoised) / t
}

impl Sampler for FlowHeun {
    fn name(&self) -> &'static str {
        "flow_heun"
    }
    fn nfe(&self) -> usize {
        2 * (self.levels.len() - 1) - 1
    }
    fn labels(&self) -> Vec<f64> {
        let s = self.levels.len() - 1;
        let l = |t: f64| label32(t, self.train_steps);
        (0..s).flat_map(|i| if i + 1 < s { vec![l(self.levels[i]), l(self.levels[i + 1])] } else { vec![l(self.levels[i])] }).collect()
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::SigmaZero
    }
    fn sample(&self, model: &Counted, z: Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let kind = z.kind();
        let work = work_kind(kind);
        let mut x = z.to_kind(work);
        for w in self.levels.windows(2) {
            let (t, t_next) = (w[0], w[1]);
            let dt = (t_next as f32 - t as f32) as f64;
            let v = model.raw(&x.to_kind(kind), label32(t, self.train_steps))?.to_kind(work);
            let d = heun_derivative(&x, &v, t);
            if t_next == 0.0 {
                // The last interval is an Euler step: the derivative is undefined at t = 0.
                x = &x + d * dt;
                break;
            }
            // The corrector: the trapezoid of the derivatives at t and at the Euler prediction.
            let x_pred = (&x + &d * dt).to_kind(kind);
            let v2 = model.raw(&x_pred, label32(t_next, self.train_steps))?.to_kind(work);
            let d2 = heun_derivative(&x_pred.to_kind(work), &v2, t_next);
            x = &x + (d + d2) * 0.5 * dt;
        }
        Ok(x.to_kind(kind))
    }
}

/// `DPMSolverMultistepScheduler.set_timesteps` with `use_flow_sigmas`: t uniform on
/// [(1 − 1/T)/S, 1 − 1/T], shifted by s·t/(1 + (s − 1)·t) (float64, then float32 levels), labels
/// the float64 t·T truncated to integers, then the final level (0 or `sigma_last`).
pub fn flow_dpm_grid(steps: usize, train_steps: usize, shift: f64, sigma_last: f64) -> Vec<Node> {
    let n = train_steps as f64;
    let mut levels: Vec<f64> = numpy_linspace(1.0, 1.0 / n, steps + 1)
        .into_iter()
        .map(|a| {
            let t = 1.0 - a;
            shift * t / (1.0 + (shift - 1.0) * t)
        })
        .collect();
    levels.reverse();
    levels.pop();
    levels.iter().map(|&t| flow_node((t * n).trunc(), t as f32 as f64)).chain([flow_node(0.0, sigma_last)]).collect()
}

/// A flow level as a VP-form node (`_sigma_to_alpha_sigma_t` with flow sigmas): α = 1 − t, σ = t.
pub fn flow_node(label: f64, t: f64) -> Node {
    let alpha = (1.0 - t as f32) as f64;
    Node { label, alpha, sigma: t, lambda: alpha.ln() - t.ln() }
}

/// `final_sigmas_type="sigma_min"` ends at diffusers' VP σ̃ of label 0, √((1 − ᾱ_0)/ᾱ_0), which
/// its flow branch reads as a flow level (float32, from the scheduler's β table).
fn flow_sigma_min(schedule: &crate::schedule::NoiseSchedule) -> f64 {
    let beta0 = (1.0 - schedule.alpha_bar(0)) as f32;
    let ab0 = 1.0f32 - beta0;
    ((1.0f32 - ab0) / ab0).sqrt() as f64
}

fn build_heun(a: &Args) -> Result<Box<dyn Sampler>> {
    let train_steps = a.schedule.len();
    Ok(Box::new(FlowHeun { levels: flow_grid(a.steps, train_steps, Shift::Static(a.f64("shift")?)), train_steps }))
}

fn build_dpm(a: &Args) -> Result<Box<dyn Sampler>> {
    // `set_timesteps(mu=…)` sets flow_shift = e^μ (exponential time shift only).
    let shift = if a.bool("use_dynamic_shifting")? { a.f64("mu")?.exp() } else { a.f64("shift")? };
    let sigma_last = if a.str("final_sigmas")? == "zero" { 0.0 } else { flow_sigma_min(a.schedule) };
    let nodes = flow_dpm_grid(a.steps, a.schedule.len(), shift, sigma_last);
    let heun = a.str("solver_type")? == "heun";
    // diffusers lowers the last orders below 15 steps.
    let dpm = DpmSolver::multistep("flow_dpm_solver++", Integrand::Data, a.usize("order")?, nodes, a.bool("lower_order_final")?, 15);
    Ok(Box::new(dpm.with_multistep_options(heun, a.bool("euler_at_final")?)))
}

/// `UniPCMultistepScheduler.set_timesteps` with `use_flow_sigmas`: t uniform on
/// [1/T + (1 − 1/T)/S, 1], shifted as flow_euler (static or dynamic), a first level of 1 moved to
/// 1 − 1e-6 (λ finite), integer labels ⌊t·T⌋, then 0 or (sigma_min) the last level again.
pub fn flow_unipc_grid(steps: usize, train_steps: usize, shift: Shift, sigma_min: bool) -> Vec<Node> {
    let n = train_steps as f64;
    let mut levels: Vec<f64> = numpy_linspace(1.0, 1.0 / n, steps + 1).into_iter().take(steps).map(|t| shift.apply(t)).collect();
    if (levels[0] - 1.0).abs() < 1e-6 {
        levels[0] -= 1e-6;
    }
    let last = if sigma_min { levels[steps - 1] } else { 0.0 };
    levels.iter().map(|&t| flow_node((t * n).trunc(), t as f32 as f64)).chain([flow_node(0.0, last as f32 as f64)]).collect()
}

fn build_unipc(a: &Args) -> Result<Box<dyn Sampler>> {
    let variant = if a.str("variant")? == "bh1" { Variant::Bh1 } else { Variant::Bh2 };
    if variant == Variant::Bh1 && a.str("final_sigmas")? == "zero" {
        return Err(a.error("variant=bh1 needs final_sigmas=sigma_min: B(h) = h is infinite on the last step to t = 0 (diffusers returns NaN there)"));
    }
    if !a.bool("lower_order_final")? && a.usize("order")? > 1 {
        return Err(a.error(
            "lower_order_final=false needs order=1: the last step ends at t = 0 or at its own level, where a multistep coefficient is undefined (diffusers: a singular solve or an infinite sample)",
        ));
    }
    let nodes = flow_unipc_grid(a.steps, a.schedule.len(), shift_of(a)?, a.str("final_sigmas")? == "sigma_min");
    let u = UniPc::new(Integrand::Data, variant, a.usize("order")?, nodes, a.bool("lower_order_final")?, &a.int_list("disable_corrector")?);
    Ok(Box::new(u.named("flow_unipc")))
}

/// The shift of flow_euler's parameters (diffusers' `shift` / `use_dynamic_shifting` + μ).
fn shift_of(a: &Args) -> Result<Shift> {
    let mu = a.f64("mu")?;
    Ok(match (a.bool("use_dynamic_shifting")?, a.str("time_shift_type")?) {
        (false, _) => Shift::Static(a.f64("shift")?),
        (true, "linear") if mu <= 0.0 => return Err(a.error(format!("time_shift_type linear needs mu > 0, got {mu}"))),
        (true, "linear") => Shift::Linear(mu),
        (true, _) => Shift::Exponential(mu),
    })
}

fn build(a: &Args) -> Result<Box<dyn Sampler>> {
    let train_steps = a.schedule.len();
    Ok(Box::new(FlowEuler { levels: flow_grid(a.steps, train_steps, shift_of(a)?), train_steps, stochastic: a.bool("stochastic_sampling")? }))
}

const SHIFT: ParamDef = ParamDef { name: "shift", kind: ParamKind::Float { min: 1e-9, max: f64::INFINITY, default: 1.0 }, help: "static timestep shift s (SD3: 3.0)", diffusers: Some("shift") };
const USE_DYNAMIC_SHIFTING: ParamDef = ParamDef { name: "use_dynamic_shifting", kind: ParamKind::Bool { default: false }, help: "shift by mu instead of shift (Flux)", diffusers: Some("use_dynamic_shifting") };
const MU: ParamDef = ParamDef { name: "mu", kind: ParamKind::Float { min: f64::NEG_INFINITY, max: f64::INFINITY, default: 0.0 }, help: "μ of dynamic shifting (the pipeline's calculate_shift for the image size)", diffusers: None };

const TIME_SHIFT_TYPE: ParamDef = ParamDef {
    name: "time_shift_type",
    kind: ParamKind::Choice { allowed: &["exponential", "linear"], default: "exponential" },
    help: "form of dynamic shifting",
    diffusers: Some("time_shift_type"),
};

pub static FLOW_EULER: SamplerDef = SamplerDef {
    name: "flow_euler",
    params: &[
        SHIFT,
        USE_DYNAMIC_SHIFTING,
        MU,
        TIME_SHIFT_TYPE,
        ParamDef {
            name: "stochastic_sampling",
            kind: ParamKind::Bool { default: false },
            help: "each step re-noises x̂0 = x − t·v to the next level with fresh noise instead of the Euler step (the flow SDE-like sampler)",
            diffusers: Some("stochastic_sampling"),
        },
    ],
    skips: &[Skip::Flow],
    default_skip: Skip::Flow,
    nfe: "S",
    end_point: "t=0",
    reference: "Liu et al. 2023 (rectified flow), Euler; diffusers FlowMatchEulerDiscreteScheduler",
    predictions: &[Prediction::Flow],
    note: "rectified-flow models (prediction: flow); labels are t·T with T = schedule.timesteps",
    eta: None,
    variant: None,
    build,
};

pub static FLOW_HEUN: SamplerDef = SamplerDef {
    name: "flow_heun",
    params: &[SHIFT],
    nfe: "2S − 1",
    reference: "Karras et al. 2022 (Heun, Alg. 1) in rectified-flow time; diffusers FlowMatchHeunDiscreteScheduler",
    note: "flow_euler's grid with a static shift only (the scheduler has no dynamic shifting; its step-time churn is not offered); labels t·T; the last step is Euler; second order on the exact flow ODE (measured slopes 1.97–2.12)",
    build: build_heun,
    ..FLOW_EULER
};

pub static FLOW_DPM_SOLVER_PP: SamplerDef = SamplerDef {
    name: "flow_dpm_solver++",
    params: &[
        super::dpm_solver::order(2, "1 | 2 | 3 (multistep)"),
        SOLVER_TYPE,
        ParamDef { help: "lower orders for the last steps below 15 steps", ..LOWER_ORDER_FINAL },
        EULER_AT_FINAL,
        ParamDef {
            help: "zero (the last step lands on x̂0) or sigma_min (stops at t = √((1−ᾱ_0)/ᾱ_0) of the schedule, as diffusers does with flow sigmas)",
            ..super::dpm_solver::final_sigmas("zero")
        },
        ParamDef { name: "shift", diffusers: Some("flow_shift"), ..SHIFT },
        USE_DYNAMIC_SHIFTING,
        ParamDef { help: "μ of dynamic shifting: the shift is e^μ (diffusers' exponential time shift)", ..MU },
    ],
    nfe: "S",
    end_point: "t=0 (final_sigmas=zero) or t=σ̃_0",
    reference: "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095) with α = 1 − t, σ = t; diffusers DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type=flow_prediction, algorithm_type=dpmsolver++)",
    note: "its own grid: t from 1 − 1/T to (1 − 1/T)/S, integer labels ⌊t·T⌋ (orders 2 and 3 stop converging near 1e-3 on the exact flow ODE, order 1 is first order); sigma_min = 0.01 for the DDPM β table lies above the last level from S = 100",
    variant: Some("order"),
    build: build_dpm,
    ..FLOW_EULER
};

pub static FLOW_UNIPC: SamplerDef = SamplerDef {
    name: "flow_unipc",
    params: &[
        super::dpm_solver::order(2, "1 | 2 | 3 (predictor order; UniC adds one)"),
        ParamDef { kind: ParamKind::Choice { allowed: &["bh1", "bh2"], default: "bh2" }, ..VARIANT },
        ParamDef { help: "last steps use min(order, S−i)", ..LOWER_ORDER_FINAL },
        DISABLE_CORRECTOR,
        ParamDef {
            help: "zero (the last step lands on x̂0) or sigma_min (the last level again: the last step leaves the sample where it is)",
            ..super::dpm_solver::final_sigmas("zero")
        },
        ParamDef { name: "shift", diffusers: Some("flow_shift"), ..SHIFT },
        USE_DYNAMIC_SHIFTING,
        MU,
        TIME_SHIFT_TYPE,
    ],
    nfe: "S (no corrector after the last step)",
    end_point: "t=0 (final_sigmas=zero) or the last level",
    reference: "Zhao et al. 2023, UniPC (arXiv:2302.04867) with α = 1 − t, σ = t; diffusers UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type=flow_prediction, predict_x0=True)",
    note: "its own grid: t from 1 − 1e-6 to 1/T + (1 − 1/T)/S, integer labels ⌊t·T⌋ (every order stops converging near 9e-4 on the exact flow ODE); bh1 needs final_sigmas=sigma_min, lower_order_final=false needs order 1",
    variant: Some("order"),
    build: build_unipc,
    ..FLOW_EULER
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::oracle::GaussianOracle;
    use crate::models::NoiseSpace;
    use crate::sampling::{build_from_text, exact};
    use crate::schedule::NoiseSchedule;

    /// On Gaussian data the exact velocity makes the error pure discretisation: Euler is first
    /// order in the output moments, so FD (quadratic in them) falls ≈4× per doubling of S.
    #[test]
    fn euler_is_first_order_on_the_exact_velocity() {
        let t = |v: f64| Tensor::from(v).view([1, 1, 1]);
        let o = GaussianOracle::new(NoiseSchedule::ddpm_linear(), t(0.3), t(0.5)).in_space(NoiseSpace::Flow);
        let fd = |steps: usize| exact::exact_fd(build_from_text("flow_euler", &[], steps, &o.schedule).unwrap().as_ref(), &o).unwrap();
        let (f16, f32_, f64_) = (fd(16), fd(32), fd(64));
        assert!((3.5..4.5).contains(&(f16 / f32_)) && (3.5..4.5).contains(&(f32_ / f64_)), "{f16:e} {f32_:e} {f64_:e}");
    }

    /// As printed by diffusers 0.42.1: `FlowMatchEulerDiscreteScheduler(shift=3.0).set_timesteps(4)`
    /// and `(use_dynamic_shifting=True).set_timesteps(4, mu=0.7)`.
    #[test]
    fn shifted_grids_match_diffusers() {
        let g = flow_grid(4, 1000, Shift::Static(3.0));
        assert_eq!(g, vec![1.0, 0.857692301273346, 0.602150559425354, 0.008928571827709675, 0.0]);
        let d = flow_grid(4, 1000, Shift::Exponential(0.7));
        assert_eq!(d, vec![1.0, 0.8013331890106201, 0.5024628043174744, 0.0020117133390158415, 0.0]);
    }

    /// The exact flow map of Gaussian data between levels a and b: per coordinate the marginal is
    /// N((1 − t)μ, (1 − t)²s² + t²), and the ODE moves x affinely, x_b − m_b = (s_b/s_a)(x_a − m_a).
    fn exact_flow(x: &Tensor, a: f64, b: f64, mean: f64, std: f64) -> Tensor {
        let sd = |t: f64| ((1.0 - t).powi(2) * std * std + t * t).sqrt();
        (x - (1.0 - a) * mean) * (sd(b) / sd(a)) + (1.0 - b) * mean
    }

    /// Relative RMS error of a sampler's output against the exact flow from its first level to
    /// its last, on the exact velocity (float64 throughout).
    fn flow_error(s: &dyn Sampler, t0: f64, t_end: f64) -> f64 {
        let (mean, std) = (0.3, 0.5);
        let t = |v: f64| Tensor::from(v).view([1, 1, 1]);
        let o = GaussianOracle::new(NoiseSchedule::ddpm_linear(), t(mean), t(std)).in_space(NoiseSpace::Flow);
        tch::manual_seed(3);
        let z = Tensor::randn([256, 1, 1, 1], (Kind::Double, tch::Device::Cpu));
        let counted = Counted::new(&o, Prediction::Flow);
        let out = s.sample(&counted, z.shallow_clone(), &mut crate::sampling::GlobalRng).unwrap();
        let want = exact_flow(&z, t0, t_end, mean, std);
        (&out - &want).norm().double_value(&[]) / want.norm().double_value(&[])
    }

    fn slopes(errs: &[f64]) -> Vec<f64> {
        errs.windows(2).map(|w| (w[0] / w[1]).log2()).collect()
    }

    /// Heun on the exact velocity: second order (measured slopes 1.97, 2.02, 2.12 per doubling
    /// from 20 to 160 steps).
    #[test]
    fn heun_is_second_order_on_the_exact_flow() {
        let sch = NoiseSchedule::ddpm_linear();
        let e: Vec<f64> = [20, 40, 80, 160].iter().map(|&n| flow_error(build_from_text("flow_heun", &[], n, &sch).unwrap().as_ref(), 1.0, 0.0)).collect();
        assert!(slopes(&e).iter().all(|s| (1.9..2.2).contains(s)), "{e:?} {:?}", slopes(&e));
    }

    /// DPM-Solver++ with flow sigmas, final level 0. Its grid is uniform in t, so λ runs from
    /// ln(1/999) into +∞ in uneven steps: on labels equal to t·T, order 1 is first order and
    /// orders 2 and 3 approach their order slowly (slopes 1.73 → 1.83 and 2.19 → 2.30 from 80 to
    /// 1280 steps; the last step lands on x̂0 with an O(t²) error). diffusers' integer labels
    /// ⌊t·T⌋ evaluate the model up to 1/T before the level the solver assumes: orders 2 and 3
    /// then stop converging near 1e-3 relative error (160 → 320 steps gains × 1.3 at most).
    #[test]
    fn dpm_solver_pp_orders_on_the_exact_flow() {
        let run = |order: usize, n: usize, exact_labels: bool| {
            let mut nodes = flow_dpm_grid(n, 1000, 1.0, 0.0);
            if exact_labels {
                for nd in nodes.iter_mut() {
                    nd.label = nd.sigma * 1000.0;
                }
            }
            let t0 = nodes[0].sigma;
            flow_error(&DpmSolver::multistep("flow_dpm_solver++", Integrand::Data, order, nodes, true, 15), t0, 0.0)
        };
        let first: Vec<f64> = [10, 20, 40, 80].iter().map(|&n| run(1, n, false)).collect();
        assert!(slopes(&first).iter().all(|s| (0.9..1.1).contains(s)), "{first:?}");
        for (order, lo, hi) in [(2, 1.7, 1.9), (3, 2.15, 2.35)] {
            let e: Vec<f64> = [80, 160, 320, 640, 1280].iter().map(|&n| run(order, n, true)).collect();
            assert!(slopes(&e).iter().all(|s| (lo..hi).contains(s)), "order {order}: {e:?} {:?}", slopes(&e));
            let (e160, e320) = (run(order, 160, false), run(order, 320, false));
            assert!(e320 > 5e-4 && e160 / e320 < 1.5, "order {order} on integer labels: {e160:e} {e320:e}");
        }
    }

    /// UniPC (bh2) with flow sigmas, final level 0. Its first level 1 − 1e-6 sits at λ ≈ −13.8,
    /// so the first step is long in λ and the convergence is irregular: on labels equal to t·T,
    /// order 1 (with UniC) converges with slopes 1.72–1.80 from 20 to 640 steps, orders 2 and 3
    /// with no steady slope (order 3: 1.64, 1.74, 1.54, 1.24 per doubling from 40 steps). On
    /// diffusers' integer labels ⌊t·T⌋ every order stops near 9e-4 relative error.
    #[test]
    fn unipc_orders_on_the_exact_flow() {
        let run = |order: usize, n: usize, exact_labels: bool| {
            let mut nodes = flow_unipc_grid(n, 1000, Shift::Static(1.0), false);
            if exact_labels {
                for nd in nodes.iter_mut() {
                    nd.label = nd.sigma * 1000.0;
                }
            }
            let t0 = nodes[0].sigma;
            flow_error(&UniPc::new(Integrand::Data, Variant::Bh2, order, nodes, true, &[]), t0, 0.0)
        };
        let e: Vec<f64> = [20, 40, 80, 160, 320, 640].iter().map(|&n| run(1, n, true)).collect();
        assert!(slopes(&e).iter().all(|s| (1.7..1.85).contains(s)), "{e:?} {:?}", slopes(&e));
        let e3: Vec<f64> = [40, 80, 160, 320].iter().map(|&n| run(3, n, true)).collect();
        assert!(slopes(&e3).iter().all(|s| (1.5..1.8).contains(s)), "{e3:?} {:?}", slopes(&e3));
        for order in [1, 2, 3] {
            let (e320, e640) = (run(order, 320, false), run(order, 640, false));
            assert!((7e-4..1.1e-3).contains(&e640) && e640 > 0.75 * e320, "order {order} on integer labels: {e320:e} {e640:e}");
        }
    }
}
