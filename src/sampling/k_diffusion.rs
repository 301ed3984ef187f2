//! The samplers of k-diffusion's `sampling.py` that diffusers lacks, in σ: the DPM-Solver++
//! family (Lu et al. 2022, "DPM-Solver++"): ancestral 2S, the stochastic singlestep "DPM++ SDE",
//! the multistep 2M SDE and 3M SDE that image tools call "DPM++ 2M SDE (Karras)" and "DPM++ 3M
//! SDE"; and DPM-Solver-fast (Lu et al. 2022, "DPM-Solver" §3.4, `sample_dpm_fast`).
//!
//! They run on the Karras family's σ grids ([`SigmaGrid`]) with the ε-model seen as k-diffusion's
//! discrete-DDPM wrapper sees it: x = x_vp·√(σ²+1), denoised D(x, σ) = x − σ·ε̂. Time is
//! t = −log σ (k-diffusion's `t_fn`), so a step of length h = t_next − t shrinks the noise by e^−h.
//!
//! k-diffusion draws the SDE noise of `dpmpp_sde`, `dpmpp_2m_sde` and `dpmpp_3m_sde` from a
//! Brownian tree; here every draw is a standard normal from the per-sample seeded stream, keyed
//! by (seed, sample, step) like every other stochastic sampler: one draw per step, two for
//! `dpmpp_sde` (keys 2i and 2i+1). Given the same draws (k-diffusion's `noise_sampler`) the
//! trajectories agree.
use super::def::{Args, EtaColumn, ParamDef, ParamKind, SamplerDef, ALL_PREDICTIONS};
use super::continuous::{exponential_sigmas, ve_sigmas};
use super::karras::{ancestral_split, eps_at, euler_step, SigmaGrid, SIGMA_LEVEL_SKIPS};
use super::{Counted, EndPoint, Node, NoiseSource, Sampler};
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    TwoSAncestral,
    Sde,
    TwoMSde { heun: bool },
    ThreeMSde,
}

pub struct DpmppSampler {
    family: Family,
    grid: SigmaGrid,
    eta: f64,
    s_noise: f64,
    /// `dpmpp_sde`'s intermediate point: s = t + r·h.
    r: f64,
}

/// D(x, σ) = x − σ·ε̂ (k-diffusion `DiscreteEpsDDPMDenoiser`).
fn denoised(model: &Counted, x: &Tensor, sigma: f64, label: f64) -> Result<Tensor> {
    Ok(x - eps_at(model, x, sigma, label)? * sigma)
}

/// The data-prediction exponential-integrator step from σ to σ_to (DPM-Solver++ eq. 9, first
/// order): x_to = (σ_to/σ)·x − expm1(−h)·D with h = log σ − log σ_to.
fn dpmpp_1(x: &Tensor, d: &Tensor, sigma: f64, sigma_to: f64) -> Tensor {
    let h = sigma.ln() - sigma_to.ln();
    x * (sigma_to / sigma) - d * (-h).exp_m1()
}

impl DpmppSampler {
    /// The level of step i's second model call, if it makes one: DPM-Solver++(2S) at the
    /// log-midpoint of σ_i and σ_down (`sample_dpmpp_2s_ancestral`), DPM++ SDE at
    /// t + r·h between σ_i and σ_{i+1} (`sample_dpmpp_sde`).
    fn second_level(&self, i: usize) -> Option<f64> {
        let (sigma, next) = (self.grid.sigmas[i], self.grid.sigmas[i + 1]);
        let to = match self.family {
            Family::TwoSAncestral => ancestral_split(sigma, next, self.eta).0,
            Family::Sde => next,
            _ => return None,
        };
        if to == 0.0 {
            return None;
        }
        let r = if self.family == Family::Sde { self.r } else { 0.5 };
        let (t, t_next) = (-sigma.ln(), -to.ln());
        Some((-(t + r * (t_next - t))).exp())
    }
}

impl Sampler for DpmppSampler {
    fn name(&self) -> &'static str {
        match self.family {
            Family::TwoSAncestral => "dpmpp_2s_ancestral",
            Family::Sde => "dpmpp_sde",
            Family::TwoMSde { .. } => "dpmpp_2m_sde",
            Family::ThreeMSde => "dpmpp_3m_sde",
        }
    }
    fn nfe(&self) -> usize {
        (0..self.grid.steps()).map(|i| 1 + usize::from(self.second_level(i).is_some())).sum()
    }
    fn labels(&self) -> Vec<f64> {
        let g = &self.grid;
        (0..g.steps()).flat_map(|i| std::iter::once(g.labels[i]).chain(self.second_level(i).map(|s| g.label_of(s)))).collect()
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::SigmaZero
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let g = &self.grid;
        let (eta, s_noise) = (self.eta, self.s_noise);
        let mut x = z * g.init_sigma();
        // Multistep history: the last two denoised outputs and step lengths, newest first.
        let (mut d1, mut d2): (Option<Tensor>, Option<Tensor>) = (None, None);
        let (mut h1, mut h2): (Option<f64>, Option<f64>) = (None, None);
        for i in 0..g.steps() {
            let (sigma, next) = (g.sigmas[i], g.sigmas[i + 1]);
            let d = denoised(model, &x, sigma, g.labels[i])?;
            let mid = self.second_level(i);
            x = match self.family {
                // `sample_dpmpp_2s_ancestral`: DPM-Solver++(2S) to σ_down, then σ_up of fresh noise.
                Family::TwoSAncestral => {
                    let (down, up) = ancestral_split(sigma, next, eta);
                    let x = match mid {
                        None => euler_step(&x, &((&x - &d) / sigma), sigma, down),
                        Some(s) => {
                            let x_2 = dpmpp_1(&x, &d, sigma, s);
                            dpmpp_1(&x, &denoised(model, &x_2, s, g.label_of(s))?, sigma, down)
                        }
                    };
                    if next > 0.0 && up > 0.0 {
                        x + noise.noise(i, &d) * (s_noise * up)
                    } else {
                        x
                    }
                }
                // `sample_dpmpp_sde`: two ancestral sub-steps, to σ(s) with D, then to σ_{i+1}
                // with (1 − 1/2r)·D + 1/2r·D(x_2, σ(s)).
                Family::Sde => match mid {
                    None => euler_step(&x, &((&x - &d) / sigma), sigma, next),
                    Some(s) => {
                        let (down, up) = ancestral_split(sigma, s, eta);
                        let mut x_2 = dpmpp_1(&x, &d, sigma, down);
                        if up > 0.0 {
                            x_2 += noise.noise(2 * i, &d) * (s_noise * up);
                        }
                        let d_2 = denoised(model, &x_2, s, g.label_of(s))?;
                        let fac = 0.5 / self.r;
                        let (down, up) = ancestral_split(sigma, next, eta);
                        let x = dpmpp_1(&x, &(&d * (1.0 - fac) + d_2 * fac), sigma, down);
                        if up > 0.0 {
                            x + noise.noise(2 * i + 1, &d) * (s_noise * up)
                        } else {
                            x
                        }
                    }
                },
                Family::TwoMSde { .. } | Family::ThreeMSde if next == 0.0 => d.shallow_clone(),
                // `sample_dpmpp_2m_sde`: SDE-DPM-Solver++(2M) with the midpoint or Heun correction.
                Family::TwoMSde { heun } => {
                    let h = sigma.ln() - next.ln();
                    let eh = eta * h;
                    let c = -(-h - eh).exp_m1();
                    let mut x = &x * (next / sigma * (-eh).exp()) + &d * c;
                    if let (Some(prev), Some(h_last)) = (&d1, h1) {
                        let r = h_last / h;
                        let w = if heun { c / (-h - eh) + 1.0 } else { 0.5 * c };
                        x += (&d - prev) * (w / r);
                    }
                    h2 = h1;
                    h1 = Some(h);
                    self.sde_noise(x, next, h, i, noise)
                }
                // `sample_dpmpp_3m_sde`: third-order multistep in the data prediction with φ₂, φ₃.
                Family::ThreeMSde => {
                    let h = sigma.ln() - next.ln();
                    let he = h * (eta + 1.0);
                    let mut x = &x * (-he).exp() - &d * (-he).exp_m1();
                    let phi_2 = (-he).exp_m1() / he + 1.0;
                    match (&d1, &d2, h1, h2) {
                        (Some(p1), Some(p2), Some(hh1), Some(hh2)) => {
                            let (r0, r1) = (hh1 / h, hh2 / h);
                            let d1_0 = (&d - p1) / r0;
                            let d1_1 = (p1 - p2) / r1;
                            let dd1 = &d1_0 + (&d1_0 - &d1_1) * (r0 / (r0 + r1));
                            let dd2 = (&d1_0 - &d1_1) / (r0 + r1);
                            let phi_3 = phi_2 / he - 0.5;
                            x += dd1 * phi_2 - dd2 * phi_3;
                        }
                        (Some(p1), _, Some(hh1), _) => x += (&d - p1) / (hh1 / h) * phi_2,
                        _ => {}
                    }
                    h2 = h1;
                    h1 = Some(h);
                    self.sde_noise(x, next, h, i, noise)
                }
            };
            d2 = d1.take();
            d1 = Some(d);
        }
        Ok(x)
    }
}

impl DpmppSampler {
    /// The multistep SDE samplers' fresh noise: σ_next·√(1 − e^{−2ηh})·s_noise·z.
    fn sde_noise(&self, x: Tensor, next: f64, h: f64, step: usize, noise: &mut dyn NoiseSource) -> Tensor {
        if self.eta == 0.0 {
            return x;
        }
        let scale = next * (-(-2.0 * self.eta * h).exp_m1()).sqrt() * self.s_noise;
        let z = noise.noise(step, &x);
        x + z * scale
    }
}

fn build(family: Family, a: &Args) -> Result<Box<dyn Sampler>> {
    let family = match family {
        Family::TwoMSde { .. } => Family::TwoMSde { heun: a.str("solver_type")? == "heun" },
        f => f,
    };
    let r = if family == Family::Sde { a.f64("r")? } else { 0.5 };
    let grid = super::karras::sigma_grid(a)?.with_f64_off_grid_labels();
    Ok(Box::new(DpmppSampler { family, grid, eta: a.f64("eta")?, s_noise: a.f64("s_noise")?, r }))
}

const ETA: ParamDef = ParamDef {
    name: "eta",
    kind: ParamKind::Float { min: 0.0, max: 1.0, default: 1.0 },
    help: "noise amount (0: the deterministic DPM-Solver++ of the same order; 1: the reverse SDE)",
    diffusers: None,
};
const S_NOISE: ParamDef = ParamDef {
    name: "s_noise",
    kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 1.0 },
    help: "scale of the injected noise",
    diffusers: None,
};
/// A definition's note: the deterministic (η = 0) order measured on the exact ODE, then what
/// all of them share.
macro_rules! note {
    ($order:literal) => {
        concat!(
            $order,
            "; k-diffusion draws SDE noise from a Brownian tree, bench from the per-sample seeded stream (identical given k-diffusion's noise_sampler); skip as euler's, default karras (image tools' \"Karras\" variants)"
        )
    };
}

pub static DPMPP_2S_ANCESTRAL: SamplerDef = SamplerDef {
    name: "dpmpp_2s_ancestral",
    params: &[ETA, S_NOISE, super::ddim::STEPS_OFFSET],
    skips: SIGMA_LEVEL_SKIPS,
    default_skip: Skip::Karras,
    nfe: "2S−1 (last step Euler to σ=0)",
    end_point: "σ=0",
    reference: "k-diffusion sample_dpmpp_2s_ancestral (Lu et al. 2022, DPM-Solver++(2S) with ancestral noise)",
    predictions: ALL_PREDICTIONS,
    note: note!("η=0: DPM-Solver++(2S), order 2 on the exact ODE (measured 1.99)"),
    eta: Some(EtaColumn::Param),
    variant: None,
    build: |a| build(Family::TwoSAncestral, a),
};

pub static DPMPP_SDE: SamplerDef = SamplerDef {
    name: "dpmpp_sde",
    params: &[
        ETA,
        S_NOISE,
        ParamDef { name: "r", kind: ParamKind::Float { min: 1e-9, max: 1.0, default: 0.5 }, help: "position of the intermediate point in t = −log σ", diffusers: None },
        super::ddim::STEPS_OFFSET,
    ],
    reference: "k-diffusion sample_dpmpp_sde (DPM-Solver++ stochastic, 2 evaluations per step); diffusers DPMSolverSDEScheduler",
    note: note!("η=0, r=1/2: order 2 on the exact ODE (measured 1.99)"),
    build: |a| build(Family::Sde, a),
    ..DPMPP_2S_ANCESTRAL
};

pub static DPMPP_2M_SDE: SamplerDef = SamplerDef {
    name: "dpmpp_2m_sde",
    params: &[
        ETA,
        S_NOISE,
        ParamDef {
            name: "solver_type",
            kind: ParamKind::Choice { allowed: &["midpoint", "heun"], default: "midpoint" },
            help: "second-order correction of the multistep update",
            diffusers: Some("solver_type"),
        },
        super::ddim::STEPS_OFFSET,
    ],
    nfe: "S",
    reference: "k-diffusion sample_dpmpp_2m_sde (Lu et al. 2022, SDE-DPM-Solver++(2M))",
    note: note!("η=0: DPM-Solver++(2M), order 2 on the exact ODE (measured 2.10)"),
    variant: Some("solver_type"),
    build: |a| build(Family::TwoMSde { heun: false }, a),
    ..DPMPP_2S_ANCESTRAL
};

pub static DPMPP_3M_SDE: SamplerDef = SamplerDef {
    name: "dpmpp_3m_sde",
    nfe: "S",
    reference: "k-diffusion sample_dpmpp_3m_sde (third-order multistep DPM-Solver++ SDE)",
    note: note!("η=0: order 2 on the exact ODE over the Karras grid (measured 1.85–1.93: the order-1 warm-up step's error dominates)"),
    build: |a| build(Family::ThreeMSde, a),
    ..DPMPP_2S_ANCESTRAL
};

/// DPM-Solver-fast (`DPMSolver.dpm_solver_fast`): ⌊S/3⌋+1 blocks uniform in t = −log σ from
/// σ̃(T−1) to σ̃(0), of orders 3, …, 3 and then 2, 1 (3 | S) or S mod 3, S model calls in all;
/// with η > 0 each block ends at its ancestral σ_down and adds fresh noise. It ends at σ̃(0).
pub struct DpmFast {
    grid: SigmaGrid,
    orders: Vec<usize>,
    eta: f64,
    s_noise: f64,
}

/// DPM-Solver's intermediate fractions r of singlestep orders 2 (1/2) and 3 (1/3, 2/3).
fn fractions(order: usize) -> &'static [f64] {
    match order {
        1 => &[],
        2 => &[0.5],
        _ => &[R3.0, R3.1],
    }
}

/// DPM-Solver-3's fractions (r1, r2).
const R3: (f64, f64) = (1.0 / 3.0, 2.0 / 3.0);

// DPM-Solver's singlestep updates in σ, a step of length h = log σ_from − log σ_to (Lu et al.
// 2022 eq. 3.7, Algorithms 4–5; k-diffusion `DPMSolver.dpm_solver_{1,2,3}_step`).

/// DPM-Solver-1: x − σ_to·(e^h − 1)·ε̂.
fn dpm1(x: &Tensor, e: &Tensor, to: f64, h: f64) -> Tensor {
    x - e * (to * h.exp_m1())
}
/// The first-order point at σ_r = σ_from·e^(−r·h): x − σ_r·(e^(r·h) − 1)·ε̂.
fn dpm_mid(x: &Tensor, e: &Tensor, sigma_r: f64, r: f64, h: f64) -> Tensor {
    x - e * (sigma_r * (r * h).exp_m1())
}
/// DPM-Solver-2 (Alg. 4) with ε̂ at fraction r1: DPM-Solver-1's result corrected by ε̂_r1 − ε̂.
fn dpm2(first: &Tensor, e: &Tensor, e1: &Tensor, to: f64, r1: f64, h: f64) -> Tensor {
    first - (e1 - e) * (to / (2.0 * r1) * h.exp_m1())
}
/// DPM-Solver-3's second intermediate point (Alg. 5, u_2 at r2 = 2/3, from ε̂_r1 at r1 = 1/3).
fn dpm3_mid(x: &Tensor, e: &Tensor, e1: &Tensor, s2: f64, h: f64) -> Tensor {
    let (r1, r2) = R3;
    dpm_mid(x, e, s2, r2, h) - (e1 - e) * (s2 * (r2 / r1) * ((r2 * h).exp_m1() / (r2 * h) - 1.0))
}
/// DPM-Solver-3 (Alg. 5) from ε̂_r2.
fn dpm3(first: &Tensor, e: &Tensor, e2: &Tensor, to: f64, h: f64) -> Tensor {
    first - (e2 - e) * (to / R3.1 * (h.exp_m1() / h - 1.0))
}

impl DpmFast {
    /// Block i: its start σ, the σ it steps to (σ_down with η > 0, never below the end), the
    /// σ_up of its noise, and the σ of its intermediate calls.
    fn block(&self, i: usize) -> (f64, f64, f64, Vec<f64>) {
        let (from, next) = (self.grid.sigmas[i], self.grid.sigmas[i + 1]);
        let end = self.grid.sigmas[self.orders.len()];
        let (to, up) = if self.eta > 0.0 {
            let to = ancestral_split(from, next, self.eta).0.max(end);
            (to, (next * next - to * to).max(0.0).sqrt())
        } else {
            (next, 0.0)
        };
        let (t, h) = (-from.ln(), from.ln() - to.ln());
        let inner = fractions(self.orders[i]).iter().map(|r| (-(t + r * h)).exp()).collect();
        (from, to, up, inner)
    }
}

impl Sampler for DpmFast {
    fn name(&self) -> &'static str {
        "dpm_fast"
    }
    fn nfe(&self) -> usize {
        self.orders.iter().sum()
    }
    fn labels(&self) -> Vec<f64> {
        let g = &self.grid;
        (0..self.orders.len()).flat_map(|i| std::iter::once(g.labels[i]).chain(self.block(i).3.into_iter().map(|s| g.label_of(s)))).collect()
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::SigmaMin
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let g = &self.grid;
        let mut x = z * g.init_sigma();
        for (i, &order) in self.orders.iter().enumerate() {
            let (from, to, up, inner) = self.block(i);
            let h = from.ln() - to.ln();
            let e = eps_at(model, &x, from, g.labels[i])?;
            let first = dpm1(&x, &e, to, h);
            x = match order {
                1 => first,
                2 => {
                    let s1 = inner[0];
                    let e1 = eps_at(model, &dpm_mid(&x, &e, s1, 0.5, h), s1, g.label_of(s1))?;
                    dpm2(&first, &e, &e1, to, 0.5, h)
                }
                _ => {
                    let (s1, s2) = (inner[0], inner[1]);
                    let e1 = eps_at(model, &dpm_mid(&x, &e, s1, R3.0, h), s1, g.label_of(s1))?;
                    let e2 = eps_at(model, &dpm3_mid(&x, &e, &e1, s2, h), s2, g.label_of(s2))?;
                    dpm3(&first, &e, &e2, to, h)
                }
            };
            // k-diffusion draws every block's noise when η > 0 (σ_up = 0 in the last).
            if self.eta > 0.0 {
                x = x + noise.noise(i, &e) * (up * self.s_noise);
            }
        }
        Ok(x)
    }
}

fn build_fast(a: &Args) -> Result<Box<dyn Sampler>> {
    let n = a.steps;
    let blocks = n / 3 + 1;
    let orders: Vec<usize> = if n % 3 == 0 {
        std::iter::repeat_n(3, blocks - 2).chain([2, 1]).collect()
    } else {
        std::iter::repeat_n(3, blocks - 1).chain([n % 3]).collect()
    };
    // Float64 levels uniform in log σ, ending at σ̃(0) itself (no last step to σ = 0).
    let finite = a.schedule.finite_terminal_sigma();
    let sig = ve_sigmas(&finite);
    let grid = SigmaGrid::from_levels(&finite, exponential_sigmas(sig[0], sig[sig.len() - 1], orders.len() + 1));
    Ok(Box::new(DpmFast { grid, orders, eta: a.f64("eta")?, s_noise: a.f64("s_noise")? }))
}

pub static DPM_FAST: SamplerDef = SamplerDef {
    name: "dpm_fast",
    params: &[
        ParamDef {
            kind: ParamKind::Float { min: 0.0, max: 1.0, default: 0.0 },
            help: "ancestral noise per block (0: the deterministic DPM-Solver-fast)",
            ..ETA
        },
        S_NOISE,
    ],
    skips: &[Skip::Exponential],
    default_skip: Skip::Exponential,
    nfe: "S (blocks of orders 3, …, 3, then 2, 1 or S mod 3)",
    end_point: "σ̃(0) (the sample keeps that noise)",
    reference: "Lu et al. 2022 (DPM-Solver) §3.4 DPM-Solver-fast; k-diffusion sample_dpm_fast",
    predictions: ALL_PREDICTIONS,
    note: "⌊S/3⌋+1 blocks uniform in log σ between σ̃(T−1) and σ̃(0) (skip exponential); η > 0 adds ancestral noise per block; η=0: order 3 on the exact ODE (measured 4.04 over 12–96 steps, as dpm_solver's fast schedule)",
    eta: Some(EtaColumn::Param),
    variant: None,
    build: build_fast,
};

/// DPM-Solver-12 / -23 with adaptive step size (Lu et al. 2022 §4 and App. C; k-diffusion
/// `sample_dpm_adaptive`): each trial step of length h in t = −log σ computes a lower- and a
/// higher-order solution (orders 1 and 2, or 2 and 3), and a PID controller on their scaled
/// difference accepts the step or not and picks the next h. Every trial costs `order` calls,
/// rejected ones too, as k-diffusion counts them.
///
/// k-diffusion measures the error over the whole batch, so a sample's trajectory would depend on
/// its batch-mates; here every sample has its own controller (the batch's result equals
/// k-diffusion run on each sample alone). One model call serves all samples at their own σ; a
/// sample that has arrived is carried along unchanged and its NFE stops counting.
pub struct DpmAdaptive {
    /// Two levels, σ̃(T−1) and σ̃(0): where it starts and ends (and the σ → label map).
    grid: SigmaGrid,
    order: usize,
    rtol: f64,
    atol: f64,
    h_init: f64,
    pid: [f64; 3],
    accept_safety: f64,
    eta: f64,
    s_noise: f64,
}

/// Trial steps per sample before a sample is declared stuck (an error, never an endless loop).
const MAX_TRIALS: usize = 10_000;

/// k-diffusion's `PIDStepSizeController` (Söderlind's PID step-size control with an arctan
/// limiter): factor = limiter(Π (1/err_k)^b_k), accept when factor ≥ `accept_safety`, h ← h·factor.
#[derive(Clone)]
struct Pid {
    h: f64,
    b: [f64; 3],
    accept_safety: f64,
    inv_errors: Option<[f64; 3]>,
}

impl Pid {
    fn new(h: f64, [p, i, d]: [f64; 3], order: f64, accept_safety: f64) -> Self {
        Pid { h, b: [(p + i + d) / order, -(p + 2.0 * d) / order, d / order], accept_safety, inv_errors: None }
    }
    fn propose(&mut self, error: f64) -> bool {
        let inv = 1.0 / (error + 1e-8);
        let e = self.inv_errors.get_or_insert([inv; 3]);
        e[0] = inv;
        let factor = 1.0 + (e[0].powf(self.b[0]) * e[1].powf(self.b[1]) * e[2].powf(self.b[2]) - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            e[2] = e[1];
            e[1] = e[0];
        }
        self.h *= factor;
        accept
    }
}

/// ε̂ of every sample at its own σ (the model sees x/√(σ²+1), as [`eps_at`]).
fn eps_each(model: &Counted, x: &Tensor, sigmas: &[f64], grid: &SigmaGrid) -> Result<Tensor> {
    let rows: Vec<Tensor> = sigmas.iter().enumerate().map(|(i, &s)| x.get(i as i64) / (s * s + 1.0).sqrt()).collect();
    let nodes: Vec<Node> = sigmas.iter().map(|&s| Node::from_sigma_ve(grid.label_of(s), s)).collect();
    model.eps_each(&Tensor::f_stack(&rows, 0)?, &nodes)
}

/// Row i of the result is `f(i)` for the samples still on their way, row i of `x` for the others.
fn rows(x: &Tensor, active: &[bool], f: impl Fn(usize) -> Tensor) -> Result<Tensor> {
    let rows: Vec<Tensor> = active.iter().enumerate().map(|(i, &a)| if a { f(i) } else { x.get(i as i64) }).collect();
    Ok(Tensor::f_stack(&rows, 0)?)
}

impl Sampler for DpmAdaptive {
    fn name(&self) -> &'static str {
        "dpm_adaptive"
    }
    /// A guess for progress bars only: with the default tolerances, tens of trial steps.
    fn nfe(&self) -> usize {
        20 * self.order
    }
    fn adaptive(&self) -> bool {
        true
    }
    /// Its first call's label (the rest depend on the samples).
    fn labels(&self) -> Vec<f64> {
        vec![self.grid.labels[0]]
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::SigmaMin
    }
    fn sample(&self, model: &Counted, z: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let g = &self.grid;
        let sigma = |t: f64| (-t).exp();
        let (t_start, t_end) = (-g.sigmas[0].ln(), -g.sigmas[1].ln());
        let b = z.size()[0] as usize;
        let mut x = z * g.sigmas[0];
        let mut x_prev = x.shallow_clone();
        let order_for_pid = if self.eta > 0.0 { 1.5 } else { self.order as f64 };
        let mut pid = vec![Pid::new(self.h_init, self.pid, order_for_pid, self.accept_safety); b];
        let mut s = vec![t_start; b];
        let (mut nfe, mut accepted, mut trials) = (vec![0usize; b], vec![0usize; b], 0);
        loop {
            let active: Vec<bool> = s.iter().map(|&si| si < t_end - 1e-5).collect();
            if !active.contains(&true) {
                break;
            }
            trials += 1;
            if trials > MAX_TRIALS {
                return Err(crate::BenchError::Model(format!(
                    "dpm_adaptive: a sample has not reached σ_min after {MAX_TRIALS} trial steps (rtol={}, atol={}): loosen the tolerances",
                    self.rtol, self.atol
                )));
            }
            // Per sample: the trial's end t, the end t_ of the deterministic part (σ_down with η > 0)
            // and the noise σ_up that brings it to σ(t).
            let (mut t, mut t_, mut up) = (s.clone(), s.clone(), vec![0.0; b]);
            for i in (0..b).filter(|&i| active[i]) {
                t[i] = (s[i] + pid[i].h).min(t_end);
                t_[i] = t[i];
                if self.eta > 0.0 {
                    let down = ancestral_split(sigma(s[i]), sigma(t[i]), self.eta).0;
                    t_[i] = (-down.ln()).min(t_end);
                    up[i] = (sigma(t[i]).powi(2) - sigma(t_[i]).powi(2)).sqrt();
                }
            }
            let h: Vec<f64> = (0..b).map(|i| t_[i] - s[i]).collect();
            let at = |r: f64| -> Vec<f64> { (0..b).map(|i| sigma(s[i] + r * h[i])).collect() };
            let e = eps_each(model, &x, &at(0.0), g)?;
            let (xi, ei) = (|i: usize| x.get(i as i64), |i: usize| e.get(i as i64));
            let to = |i: usize| sigma(t_[i]);
            let (x_low, x_high) = if self.order == 2 {
                let s1 = at(0.5);
                let u1 = rows(&x, &active, |i| dpm_mid(&xi(i), &ei(i), s1[i], 0.5, h[i]))?;
                let e1 = eps_each(model, &u1, &s1, g)?;
                let low = rows(&x, &active, |i| dpm1(&xi(i), &ei(i), to(i), h[i]))?;
                let high = rows(&x, &active, |i| dpm2(&low.get(i as i64), &ei(i), &e1.get(i as i64), to(i), 0.5, h[i]))?;
                (low, high)
            } else {
                let (s1, s2) = (at(R3.0), at(R3.1));
                let u1 = rows(&x, &active, |i| dpm_mid(&xi(i), &ei(i), s1[i], R3.0, h[i]))?;
                let e1 = eps_each(model, &u1, &s1, g)?;
                let first = rows(&x, &active, |i| dpm1(&xi(i), &ei(i), to(i), h[i]))?;
                let low = rows(&x, &active, |i| dpm2(&first.get(i as i64), &ei(i), &e1.get(i as i64), to(i), R3.0, h[i]))?;
                let u2 = rows(&x, &active, |i| dpm3_mid(&xi(i), &ei(i), &e1.get(i as i64), s2[i], h[i]))?;
                let e2 = eps_each(model, &u2, &s2, g)?;
                let high = rows(&x, &active, |i| dpm3(&first.get(i as i64), &ei(i), &e2.get(i as i64), to(i), h[i]))?;
                (low, high)
            };
            // k-diffusion: δ = max(atol, rtol·max(|x_low|, |x_prev|)), error = ‖(x_low − x_high)/δ‖ / √numel.
            let delta = (x_low.abs().maximum(&x_prev.abs()) * self.rtol).clamp_min(self.atol);
            let scaled = ((&x_low - &x_high) / delta).reshape([b as i64, -1]);
            let numel = scaled.size()[1] as f64;
            let errors = Vec::<f64>::try_from(scaled.to_kind(tch::Kind::Double).square().sum_dim_intlist(1, false, tch::Kind::Double).sqrt() / numel.sqrt())?;
            let (mut next, mut prev) = (Vec::with_capacity(b), Vec::with_capacity(b));
            // Sample i's draw is row i of the stream's draw at its accepted-step index; one draw per index.
            let mut draws: std::collections::BTreeMap<usize, Tensor> = Default::default();
            for i in 0..b {
                let (xi_now, prev_i) = (x.get(i as i64), x_prev.get(i as i64));
                if !active[i] {
                    next.push(xi_now);
                    prev.push(prev_i);
                    continue;
                }
                nfe[i] += self.order;
                if !errors[i].is_finite() {
                    // A diverged sample stops here as NaN (the runner reports NaN samples).
                    next.push(xi_now.full_like(f64::NAN));
                    prev.push(prev_i);
                    s[i] = t_end;
                    continue;
                }
                if pid[i].propose(errors[i]) {
                    let mut xn = x_high.get(i as i64);
                    if self.eta > 0.0 {
                        let z = draws.entry(accepted[i]).or_insert_with(|| noise.noise(accepted[i], &x));
                        xn = xn + z.get(i as i64) * (up[i] * self.s_noise);
                    }
                    next.push(xn);
                    prev.push(x_low.get(i as i64));
                    s[i] = t[i];
                    accepted[i] += 1;
                } else {
                    next.push(xi_now);
                    prev.push(prev_i);
                }
            }
            x = Tensor::f_stack(&next, 0)?;
            x_prev = Tensor::f_stack(&prev, 0)?;
        }
        model.set_nfe_each(nfe);
        Ok(x)
    }
}

fn build_adaptive(a: &Args) -> Result<Box<dyn Sampler>> {
    if a.steps != 1 {
        return Err(a.error(format!("it picks its own steps (rtol, atol, h_init): give its entry `steps: 1`, not {}", a.steps)));
    }
    let (rtol, atol) = (a.f64("rtol")?, a.f64("atol")?);
    if rtol == 0.0 && atol == 0.0 {
        return Err(a.error("rtol and atol are both 0: no step would ever be accepted"));
    }
    let finite = a.schedule.finite_terminal_sigma();
    let sig = ve_sigmas(&finite);
    let grid = SigmaGrid::from_levels(&finite, exponential_sigmas(sig[0], sig[sig.len() - 1], 2));
    Ok(Box::new(DpmAdaptive {
        grid,
        order: a.usize("order")?,
        rtol,
        atol,
        h_init: a.f64("h_init")?,
        pid: [a.f64("pcoeff")?, a.f64("icoeff")?, a.f64("dcoeff")?],
        accept_safety: a.f64("accept_safety")?,
        eta: a.f64("eta")?,
        s_noise: a.f64("s_noise")?,
    }))
}

const fn float(name: &'static str, min: f64, default: f64, help: &'static str) -> ParamDef {
    ParamDef { name, kind: ParamKind::Float { min, max: f64::INFINITY, default }, help, diffusers: None }
}

pub static DPM_ADAPTIVE: SamplerDef = SamplerDef {
    name: "dpm_adaptive",
    params: &[
        ParamDef { name: "order", kind: ParamKind::Int { min: 2, max: 3, default: 3 }, help: "3: DPM-Solver-23 (error of order 2 vs 3), 2: DPM-Solver-12", diffusers: None },
        float("rtol", 0.0, 0.05, "relative tolerance of the local error"),
        float("atol", 0.0, 0.0078, "absolute tolerance (k-diffusion's default: one 8-bit level on [−1, 1])"),
        float("h_init", 1e-9, 0.05, "first trial step in t = −log σ"),
        float("pcoeff", 0.0, 0.0, "PID controller: proportional coefficient"),
        float("icoeff", 0.0, 1.0, "PID controller: integral coefficient"),
        float("dcoeff", 0.0, 0.0, "PID controller: derivative coefficient"),
        ParamDef { name: "accept_safety", kind: ParamKind::Float { min: 0.0, max: 1.0, default: 0.81 }, help: "a step is accepted when the controller's factor is at least this", diffusers: None },
        ParamDef { kind: ParamKind::Float { min: 0.0, max: 1.0, default: 0.0 }, help: "ancestral noise per accepted step (0: the deterministic solver)", ..ETA },
        S_NOISE,
    ],
    skips: &[Skip::Exponential],
    default_skip: Skip::Exponential,
    nfe: "adaptive: order × trial steps, counted per sample (results: nfe_mean, nfe_max); steps must be 1",
    end_point: "σ̃(0) (the sample keeps that noise)",
    reference: "Lu et al. 2022 (DPM-Solver) §4 adaptive step size; k-diffusion sample_dpm_adaptive",
    predictions: ALL_PREDICTIONS,
    note: "from σ̃(T−1) to σ̃(0); one step-size controller per sample (k-diffusion's is batch-wide: equal to it run on each sample alone); η > 0 draws noise by accepted-step index",
    eta: Some(EtaColumn::Param),
    variant: None,
    build: build_adaptive,
};
