//! Rectified-flow sampling (flow matching, Liu et al. 2023 / Lipman et al. 2023; SD3, Flux):
//! x_t = (1 − t)·x0 + t·ε is integrated from t = 1 to 0 along the model's velocity v = ε − x0.
//! The grid and the Euler step are diffusers' `FlowMatchEulerDiscreteScheduler`, float32 where
//! diffusers keeps float32 (its `sigmas`, the timesteps and the state).
use super::def::{Args, ParamDef, ParamKind, SamplerDef};
use super::{Counted, EndPoint, NoiseSource, Sampler};
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
}

impl FlowEuler {
    /// The model's label at level t: diffusers' timestep t·T, in float32.
    fn label(&self, t: f64) -> f64 {
        (t as f32 * self.train_steps as f32) as f64
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
    fn sample(&self, model: &Counted, z: Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let kind = z.kind();
        // diffusers upcasts the state to float32 in `step` (float64 stays float64 here).
        let work = if kind == Kind::Double { Kind::Double } else { Kind::Float };
        let mut x = z.to_kind(work);
        for w in self.levels.windows(2) {
            let v = model.raw(&x.to_kind(kind), self.label(w[0]))?;
            // FlowMatchEulerDiscreteScheduler.step: x + (t_next − t)·v, dt in float32.
            let dt = (w[1] as f32 - w[0] as f32) as f64;
            x = x + v.to_kind(work) * dt;
        }
        Ok(x.to_kind(kind))
    }
}

fn build(a: &Args) -> Result<Box<dyn Sampler>> {
    let mu = a.f64("mu")?;
    let shift = match (a.bool("use_dynamic_shifting")?, a.str("time_shift_type")?) {
        (false, _) => Shift::Static(a.f64("shift")?),
        (true, "linear") if mu <= 0.0 => return Err(a.error(format!("time_shift_type linear needs mu > 0, got {mu}"))),
        (true, "linear") => Shift::Linear(mu),
        (true, _) => Shift::Exponential(mu),
    };
    let train_steps = a.schedule.len();
    Ok(Box::new(FlowEuler { levels: flow_grid(a.steps, train_steps, shift), train_steps }))
}

pub static FLOW_EULER: SamplerDef = SamplerDef {
    name: "flow_euler",
    params: &[
        ParamDef { name: "shift", kind: ParamKind::Float { min: 1e-9, max: f64::INFINITY, default: 1.0 }, help: "static timestep shift s (SD3: 3.0)", diffusers: Some("shift") },
        ParamDef { name: "use_dynamic_shifting", kind: ParamKind::Bool { default: false }, help: "shift by mu instead of shift (Flux)", diffusers: Some("use_dynamic_shifting") },
        ParamDef { name: "mu", kind: ParamKind::Float { min: f64::NEG_INFINITY, max: f64::INFINITY, default: 0.0 }, help: "μ of dynamic shifting (the pipeline's calculate_shift for the image size)", diffusers: None },
        ParamDef {
            name: "time_shift_type",
            kind: ParamKind::Choice { allowed: &["exponential", "linear"], default: "exponential" },
            help: "form of dynamic shifting",
            diffusers: Some("time_shift_type"),
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
}
