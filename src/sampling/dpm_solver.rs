//! DPM-Solver (Lu et al. 2022, arXiv:2206.00927) and DPM-Solver++ (Lu et al. 2022,
//! arXiv:2211.01095): exponential integrators of the probability-flow ODE in λ = log(α/σ).
//!
//! The λ-space pieces (φ functions, the exponential-integrator update, the multistep history)
//! are shared with UniPC (`unipc.rs`).
use super::continuous::{check_vp_steps, time_steps, vp_grid, FinalSigma, Node, TimeRule, VpContinuous, VpRule};
use super::ddim::{DYNAMIC_THRESHOLDING_RATIO, SAMPLE_MAX_VALUE, STEPS_OFFSET, THRESHOLDING};
use super::def::{Args, ParamDef, ParamKind, SamplerDef, ALL_PREDICTIONS};
use super::{Counted, EndPoint, NoiseSource, Output, Sampler, X0Clip};
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

/// What the solver integrates: ε̂ (DPM-Solver, "dpmsolver") or x̂0 (DPM-Solver++, "dpmsolver++").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrand {
    Noise,
    Data,
}

impl Integrand {
    /// The integration variable's step: h for noise prediction, −h for data prediction.
    pub fn hh(self, h: f64) -> f64 {
        match self {
            Integrand::Noise => h,
            Integrand::Data => -h,
        }
    }
    /// Linear part e^{∫...}: α_t/α_s (DPM-Solver eq. 3.4) or σ_t/σ_s (DPM-Solver++ eq. 8).
    pub fn linear(self, s: &Node, t: &Node) -> f64 {
        match self {
            Integrand::Noise => t.alpha / s.alpha,
            Integrand::Data => t.sigma / s.sigma,
        }
    }
    /// Factor in front of the integral: σ_t (noise) or α_t (data).
    pub fn scale(self, t: &Node) -> f64 {
        match self {
            Integrand::Noise => t.sigma,
            Integrand::Data => t.alpha,
        }
    }
    /// The model output as this integrand (DPM-Solver++ §3: x̂0 = (x − σ ε̂)/α), after x̂0
    /// thresholding (diffusers `convert_model_output`: ε̂ is recomputed from the thresholded x̂0).
    pub fn of(self, out: &Output, clip: &X0Clip) -> Tensor {
        match self {
            Integrand::Noise => out.eps_clipped(clip),
            Integrand::Data => out.x0_clipped(clip),
        }
    }
}

/// h·φ_k(h) for k = 1, 2, 3 in the signed step hh: φ1 = e^hh − 1, φ2 = φ1/hh − 1,
/// φ3 = φ2/hh − ½ (DPM-Solver eq. 3.6–3.8, UniPC's `h_phi_k` recursion).
pub fn phis(hh: f64) -> [f64; 3] {
    let p1 = hh.exp_m1();
    let p2 = p1 / hh - 1.0;
    let p3 = p2 / hh - 0.5;
    [p1, p2, p3]
}

/// The exponential-integrator step shared by every solver here:
/// x_t = linear(s→t)·x − scale(t)·Σ c_k D_k.
pub fn exp_update(pred: Integrand, x: &Tensor, s: &Node, t: &Node, terms: &[(f64, &Tensor)]) -> Tensor {
    let mut acc = x * pred.linear(s, t);
    for (c, d) in terms {
        acc -= *d * (pred.scale(t) * c);
    }
    acc
}

/// The last few (node, converted model output) pairs, newest last (the multistep history).
pub struct History {
    keep: usize,
    entries: Vec<(Node, Tensor)>,
}

impl History {
    pub fn new(keep: usize) -> Self {
        History { keep: keep.max(1), entries: Vec::new() }
    }
    pub fn push(&mut self, node: Node, m: Tensor) {
        self.entries.push((node, m));
        if self.entries.len() > self.keep {
            drop(self.entries.remove(0));
        }
    }
    /// k-th newest: 0 = the latest.
    pub fn get(&self, k: usize) -> (&Node, &Tensor) {
        let (n, m) = &self.entries[self.entries.len() - 1 - k];
        (n, m)
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// DPM-Solver-1 = DDIM (DPM-Solver eq. 3.7 / DPM-Solver++ eq. 9): x_t = lin·x − scale·φ1·m_s.
fn first_order(pred: Integrand, x: &Tensor, s: &Node, t: &Node, m_s: &Tensor) -> Tensor {
    let [p1, _, _] = phis(pred.hh(t.lambda - s.lambda));
    exp_update(pred, x, s, t, &[(p1, m_s)])
}

/// Multistep order 2 (repo `multistep_dpm_solver_second_order_update`, DPM-Solver++ Alg. 2):
/// D1 = (m0 − m1)/r0, x_t = lin·x − scale·(φ1 m0 + ½ φ1 D1) ("midpoint"), or with φ2 D1 in
/// place of ½ φ1 D1 (diffusers `solver_type="heun"`).
fn multistep_second(pred: Integrand, x: &Tensor, hist: &History, t: &Node, heun: bool) -> Tensor {
    let ((s0, m0), (s1, m1)) = (hist.get(0), hist.get(1));
    let h = t.lambda - s0.lambda;
    let r0 = (s0.lambda - s1.lambda) / h;
    let d1 = (m0 - m1) / r0;
    let [p1, p2, _] = phis(pred.hh(h));
    exp_update(pred, x, s0, t, &[(p1, m0), (if heun { p2 } else { 0.5 * p1 }, &d1)])
}

/// Multistep order 3 (repo `multistep_dpm_solver_third_order_update`):
/// D1 = D1_0 + r0/(r0+r1)(D1_0 − D1_1), D2 = (D1_0 − D1_1)/(r0+r1), x_t = lin·x − scale·(φ1 m0 + φ2 D1 + φ3 D2).
fn multistep_third(pred: Integrand, x: &Tensor, hist: &History, t: &Node) -> Tensor {
    let ((s0, m0), (s1, m1), (s2, m2)) = (hist.get(0), hist.get(1), hist.get(2));
    let h = t.lambda - s0.lambda;
    let r0 = (s0.lambda - s1.lambda) / h;
    let r1 = (s1.lambda - s2.lambda) / h;
    let d1_0 = (m0 - m1) / r0;
    let d1_1 = (m1 - m2) / r1;
    let diff = &d1_0 - &d1_1;
    let d1 = &d1_0 + &diff * (r0 / (r0 + r1));
    let d2 = &diff / (r0 + r1);
    let [p1, p2, p3] = phis(pred.hh(h));
    exp_update(pred, x, s0, t, &[(p1, m0), (p2, &d1), (p3, &d2)])
}

/// The multistep SDE-DPM-Solver(++) step (Lu et al. 2022b §4 / diffusers
/// `DPMSolverMultistepScheduler`, algorithm_type `sde-dpmsolver++` | `sde-dpmsolver`, solver_type
/// midpoint, or heun for order 2) of order 1–3 (3: data prediction only) with injected noise z:
/// data: x_t = (σ_t/σ_s)e^{−h} x + α_t(1−e^{−2h})(D0 + ½D1) + σ_t√(1−e^{−2h}) z (order 2; order 3 below);
/// noise: x_t = (α_t/α_s) x − 2σ_t(e^h−1) D0 − σ_t(e^h−1) D1 + σ_t√(e^{2h}−1) z.
fn sde_multistep(pred: Integrand, x: &Tensor, hist: &History, t: &Node, order: usize, heun: bool, z: &Tensor) -> Tensor {
    let (s0, m0) = hist.get(0);
    let h = t.lambda - s0.lambda;
    // D1, D2 as in the deterministic multistep updates (midpoint form).
    let diffs = |order: usize| -> (Option<Tensor>, Option<Tensor>) {
        match order {
            1 => (None, None),
            2 => {
                let (s1, m1) = hist.get(1);
                (Some((m0 - m1) / ((s0.lambda - s1.lambda) / h)), None)
            }
            _ => {
                let ((s1, m1), (s2, m2)) = (hist.get(1), hist.get(2));
                let (r0, r1) = ((s0.lambda - s1.lambda) / h, (s1.lambda - s2.lambda) / h);
                let (d1_0, d1_1) = ((m0 - m1) / r0, (m1 - m2) / r1);
                let diff = &d1_0 - &d1_1;
                (Some(&d1_0 + &diff * (r0 / (r0 + r1))), Some(diff / (r0 + r1)))
            }
        }
    };
    let (d1, d2) = diffs(order);
    match pred {
        Integrand::Data => {
            // e = 1 − e^{−2h}; at a σ = 0 end h = ∞, e = 1 and the noise term vanishes (σ_t = 0).
            let e = -(-2.0 * h).exp_m1();
            let mut out = x * (t.sigma / s0.sigma * (-h).exp()) + m0 * (t.alpha * e);
            match (&d1, &d2) {
                (Some(d1), None) if heun => out += d1 * (t.alpha * (e / (-2.0 * h) + 1.0)),
                (Some(d1), None) => out += d1 * (0.5 * t.alpha * e),
                (Some(d1), Some(d2)) => {
                    out += d1 * (t.alpha * (e / (-2.0 * h) + 1.0));
                    out += d2 * (t.alpha * ((e - 2.0 * h) / (4.0 * h * h) - 0.5));
                }
                _ => {}
            }
            if t.sigma > 0.0 {
                out += z * (t.sigma * e.sqrt());
            }
            out
        }
        Integrand::Noise => {
            let e = h.exp_m1();
            let mut out = x * (t.alpha / s0.alpha) - m0 * (2.0 * t.sigma * e);
            if let Some(d1) = &d1 {
                out -= d1 * if heun { 2.0 * t.sigma * (e / h - 1.0) } else { t.sigma * e };
            }
            out + z * (t.sigma * (2.0 * h).exp_m1().sqrt())
        }
    }
}

/// Singlestep order-2 update from s over (s1, t) with models at s and s1 (repo
/// `singlestep_dpm_solver_second_order_update`, solver_type 'dpmsolver'; diffusers "midpoint"):
/// x_t = lin·x_s − scale·(φ1 m_s + ½ φ1 (m_s1 − m_s)/r1).
fn singlestep_second(pred: Integrand, x_s: &Tensor, s: &Node, s1: &Node, t: &Node, m_s: &Tensor, m_s1: &Tensor) -> Tensor {
    let h = t.lambda - s.lambda;
    let r1 = (s1.lambda - s.lambda) / h;
    let d = (m_s1 - m_s) / r1;
    let [p1, _, _] = phis(pred.hh(h));
    exp_update(pred, x_s, s, t, &[(p1, m_s), (0.5 * p1, &d)])
}

/// The φ2 form of the order-2 step (repo third-order update's x_s2, DPM-Solver Alg. 5 line 6):
/// x_t = lin·x_s − scale·(φ1 m_s + φ2 (m_s1 − m_s)/r1).
fn singlestep_second_phi2(pred: Integrand, x_s: &Tensor, s: &Node, s1: &Node, t: &Node, m_s: &Tensor, m_s1: &Tensor) -> Tensor {
    let h = t.lambda - s.lambda;
    let r1 = (s1.lambda - s.lambda) / h;
    let d = (m_s1 - m_s) / r1;
    let [p1, p2, _] = phis(pred.hh(h));
    exp_update(pred, x_s, s, t, &[(p1, m_s), (p2, &d)])
}

/// Singlestep order-3 final update (DPM-Solver Alg. 5 line 8 / diffusers third order "midpoint"):
/// x_t = lin·x_s − scale·(φ1 m_s + φ2 (m_s2 − m_s)/r2).
fn singlestep_third(pred: Integrand, x_s: &Tensor, s: &Node, s2: &Node, t: &Node, m_s: &Tensor, m_s2: &Tensor) -> Tensor {
    singlestep_second_phi2(pred, x_s, s, s2, t, m_s, m_s2)
}

/// How the middle point of a third-order singlestep block is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdOrderMiddle {
    /// DPM-Solver repo: φ2 form.
    Repo,
    /// diffusers `DPMSolverSinglestepScheduler`: its order-2 ("midpoint") step.
    Diffusers,
}

/// A DPM-Solver(++) run: the grid and the order of every step (multistep) or block (singlestep).
pub struct DpmSolver {
    name: &'static str,
    pred: Integrand,
    clip: X0Clip,
    multistep: bool,
    nodes: Vec<Node>,
    /// Multistep: one order per step. Singlestep: one order per block (block k spans
    /// nodes[start_k ..= start_k + order_k]).
    orders: Vec<usize>,
    middle: ThirdOrderMiddle,
    end: EndPoint,
    /// Multistep only: the SDE variant, which draws fresh noise at every step.
    sde: bool,
    /// Multistep only: diffusers `solver_type="heun"` for the order-2 steps.
    heun: bool,
}

/// Multistep orders (repo `sample(method='multistep')`, diffusers `step`): warm-up with lower
/// orders, and with `lower_order_final` below `below` steps the last steps use min(order, S−i);
/// a final σ = 0 step is always first order (diffusers).
pub fn multistep_orders(order: usize, steps: usize, lower_order_final: bool, below: usize, final_zero: bool) -> Vec<usize> {
    (0..steps)
        .map(|i| {
            let mut o = order.min(i + 1);
            if lower_order_final && steps < below {
                o = o.min(steps - i);
            }
            if final_zero && i + 1 == steps {
                o = 1;
            }
            o
        })
        .collect()
}

/// diffusers `DPMSolverSinglestepScheduler.get_order_list`, grouped into blocks (each block
/// starts at a 1 in diffusers' per-step list).
pub fn diffusers_singlestep_blocks(order: usize, steps: usize, lower_order_final: bool, final_zero: bool) -> Vec<usize> {
    let rep = |pat: &[usize], n: usize| -> Vec<usize> { pat.iter().copied().cycle().take(pat.len() * n).collect() };
    // diffusers forces lower_order_final when steps % order ≠ 0 or the final sigma is zero.
    let lof = lower_order_final || !steps.is_multiple_of(order) || final_zero;
    let mut per_step: Vec<usize> = match (order, lof) {
        (3, true) if steps.is_multiple_of(3) => [rep(&[1, 2, 3], steps / 3 - 1), vec![1, 2, 1]].concat(),
        (3, true) if steps % 3 == 1 => [rep(&[1, 2, 3], steps / 3), vec![1]].concat(),
        (3, true) => [rep(&[1, 2, 3], steps / 3), vec![1, 2]].concat(),
        (2, true) if steps.is_multiple_of(2) => [rep(&[1, 2], steps / 2 - 1), vec![1, 1]].concat(),
        (2, true) => [rep(&[1, 2], steps / 2), vec![1]].concat(),
        (3, false) => rep(&[1, 2, 3], steps / 3),
        (2, false) => rep(&[1, 2], steps / 2),
        _ => vec![1; steps],
    };
    if final_zero {
        if let Some(l) = per_step.last_mut() {
            *l = 1;
        }
    }
    let mut blocks: Vec<usize> = Vec::new();
    for o in per_step {
        if o == 1 || blocks.is_empty() {
            blocks.push(1);
        } else if let Some(b) = blocks.last_mut() {
            *b += 1;
        }
    }
    blocks
}

/// Repo `get_orders_and_timesteps_for_singlestep_solver` orders ("DPM-Solver-fast", paper §3.4).
pub fn fast_orders(order: usize, steps: usize) -> Vec<usize> {
    match order {
        3 => {
            let k = steps / 3 + 1;
            match steps % 3 {
                0 => [vec![3; k - 2], vec![2, 1]].concat(),
                1 => [vec![3; k - 1], vec![1]].concat(),
                _ => [vec![3; k - 1], vec![2]].concat(),
            }
        }
        2 if steps.is_multiple_of(2) => vec![2; steps / 2],
        2 => [vec![2; steps / 2], vec![1]].concat(),
        _ => vec![1; steps],
    }
}

/// Repo singlestep grid: outer points (logSNR: K outer steps; otherwise the S-step grid at the
/// block boundaries), then each block's inner points by the same rule with N = order.
fn repo_singlestep_nodes(vp: &VpContinuous, rule: TimeRule, t_end: f64, steps: usize, orders: &[usize]) -> Vec<Node> {
    let outer: Vec<f64> = if rule == TimeRule::LogSnr {
        time_steps(vp, rule, 1.0, t_end, orders.len())
    } else {
        let all = time_steps(vp, rule, 1.0, t_end, steps);
        let mut idx = 0;
        let mut v = vec![all[0]];
        for o in orders {
            idx += o;
            v.push(all[idx]);
        }
        v
    };
    let mut ts = vec![outer[0]];
    for (k, &o) in orders.iter().enumerate() {
        let inner = time_steps(vp, rule, outer[k], outer[k + 1], o);
        ts.extend_from_slice(&inner[1..]);
    }
    ts.into_iter().map(|t| vp.node(t)).collect()
}

impl DpmSolver {
    /// Multistep DPM-Solver(++) on a grid of S+1 nodes.
    pub fn multistep(name: &'static str, pred: Integrand, order: usize, nodes: Vec<Node>, lower_order_final: bool, below: usize) -> Self {
        let steps = nodes.len() - 1;
        let final_zero = nodes[steps].sigma == 0.0;
        let orders = multistep_orders(order, steps, lower_order_final, below, final_zero);
        let end = end_of(&nodes);
        DpmSolver { name, pred, clip: X0Clip::OFF, multistep: true, nodes, orders, middle: ThirdOrderMiddle::Repo, end, sde: false, heun: false }
    }

    /// Singlestep with explicit block orders on a grid of Σorders + 1 nodes.
    pub fn singlestep(name: &'static str, pred: Integrand, nodes: Vec<Node>, blocks: Vec<usize>, middle: ThirdOrderMiddle) -> Self {
        let end = end_of(&nodes);
        DpmSolver { name, pred, clip: X0Clip::OFF, multistep: false, nodes, orders: blocks, middle, end, sde: false, heun: false }
    }
    pub fn with_clip(mut self, clip: X0Clip) -> Self {
        self.clip = clip;
        self
    }
    /// Multistep: diffusers `solver_type="heun"` (order-2 steps) and `euler_at_final` (a
    /// first-order last step).
    pub fn with_multistep_options(mut self, heun: bool, euler_at_final: bool) -> Self {
        if self.multistep {
            self.heun = heun;
            if euler_at_final {
                if let Some(o) = self.orders.last_mut() {
                    *o = 1;
                }
            }
        }
        self
    }
    /// The multistep SDE variant (noise drawn per step from the sampler's [`NoiseSource`]).
    pub fn with_sde(mut self, sde: bool) -> Self {
        self.sde = sde && self.multistep;
        self
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn orders(&self) -> &[usize] {
        &self.orders
    }
}

fn end_of(nodes: &[Node]) -> EndPoint {
    if nodes[nodes.len() - 1].sigma == 0.0 {
        EndPoint::AlphaBarOne
    } else {
        EndPoint::AlphaBarZero
    }
}

impl Sampler for DpmSolver {
    fn name(&self) -> &'static str {
        self.name
    }
    fn nfe(&self) -> usize {
        // One model call per grid node except the last, for both multistep and singlestep.
        self.nodes.len() - 1
    }
    fn labels(&self) -> Vec<f64> {
        self.nodes[..self.nodes.len() - 1].iter().map(|n| n.label).collect()
    }
    fn end_point(&self) -> EndPoint {
        self.end
    }
    fn sample(&self, model: &Counted, x_t: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let pred = self.pred;
        let mut x = x_t;
        let eval = |x: &Tensor, n: &Node| -> Result<Tensor> { Ok(pred.of(&model.call(x, n)?, &self.clip)) };
        if self.multistep {
            let mut hist = History::new(3);
            for (i, &o) in self.orders.iter().enumerate() {
                let (s, t) = (&self.nodes[i], &self.nodes[i + 1]);
                hist.push(*s, eval(&x, s)?);
                if self.sde {
                    let z = noise.noise(i, &x);
                    x = sde_multistep(pred, &x, &hist, t, o, self.heun, &z);
                    continue;
                }
                x = match o {
                    1 => first_order(pred, &x, s, t, hist.get(0).1),
                    2 => multistep_second(pred, &x, &hist, t, self.heun),
                    _ => multistep_third(pred, &x, &hist, t),
                };
            }
        } else {
            let mut k = 0;
            for &o in &self.orders {
                let n = &self.nodes[k..=k + o];
                let m_s = eval(&x, &n[0])?;
                x = match o {
                    1 => first_order(pred, &x, &n[0], &n[1], &m_s),
                    2 => {
                        let x1 = first_order(pred, &x, &n[0], &n[1], &m_s);
                        let m1 = eval(&x1, &n[1])?;
                        singlestep_second(pred, &x, &n[0], &n[1], &n[2], &m_s, &m1)
                    }
                    _ => {
                        let x1 = first_order(pred, &x, &n[0], &n[1], &m_s);
                        let m1 = eval(&x1, &n[1])?;
                        let x2 = match self.middle {
                            ThirdOrderMiddle::Repo => singlestep_second_phi2(pred, &x, &n[0], &n[1], &n[2], &m_s, &m1),
                            ThirdOrderMiddle::Diffusers => singlestep_second(pred, &x, &n[0], &n[1], &n[2], &m_s, &m1),
                        };
                        let m2 = eval(&x2, &n[2])?;
                        singlestep_third(pred, &x, &n[0], &n[2], &n[3], &m_s, &m2)
                    }
                };
                k += o;
            }
        }
        Ok(x)
    }
}

/// How a diffusers scheduler lays out its grids (what [`vp_rule_for`] accepts and how).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffusersGrids {
    /// `DPMSolverMultistepScheduler`'s unrounded karras/lu labels for `squaredcos_cap_v2` (see `VpRule`).
    pub truncate_cosine: bool,
    /// The scheduler offers `use_exponential_sigmas` / `use_beta_sigmas` / `use_lu_lambdas`.
    pub more_levels: bool,
    /// The scheduler reads `lambda_min_clipped` on its spaced grids.
    pub lambda_min_clipped: bool,
}

/// The timestep rule of a VP ODE solver from its skip, `final_sigmas` and `t_end`.
/// `truncate_cosine`: diffusers' multistep DPM-Solver labels for karras + cosine (see `VpRule`);
/// it also marks `DPMSolverMultistepScheduler`, the only one of these schedulers with the extra
/// σ grids and `lambda_min_clipped`.
pub fn vp_rule(a: &Args, truncate_cosine: bool) -> Result<VpRule> {
    vp_rule_for(a, DiffusersGrids { truncate_cosine, more_levels: truncate_cosine, lambda_min_clipped: truncate_cosine })
}

/// [`vp_rule`] for a scheduler described by `grids`; a sampler without `final_sigmas` ends its
/// diffusers grids at σ_min.
pub fn vp_rule_for(a: &Args, grids: DiffusersGrids) -> Result<VpRule> {
    let fin = match a.def.param("final_sigmas").map(|_| a.str("final_sigmas")).transpose()? {
        Some("zero") => FinalSigma::Zero,
        _ => FinalSigma::SigmaMin,
    };
    let t_min = 1.0 / a.schedule.len() as f64;
    let t_end = a.f64_or_auto("t_end")?.unwrap_or(t_min);
    if t_end < t_min || t_end >= 1.0 {
        return Err(a.error(format!("t_end={t_end} is outside [1/T, 1) = [{t_min}, 1)")));
    }
    let cont = |rule| VpRule::Continuous { rule, t_end };
    // diffusers `lambda_min_clipped`: the spacings span only the labels whose half log-SNR λ_t is at
    // least the clip (`T − searchsorted(flip(λ), clip)`).
    let clip = if a.def.param("lambda_min_clipped").is_some() { a.f64("lambda_min_clipped")? } else { f64::NEG_INFINITY };
    let top = a.schedule.len() - (0..a.schedule.len()).filter(|&t| a.schedule.lambda(t) < clip).count();
    if clip > f64::NEG_INFINITY && (matches!(a.skip, Skip::Logsnr | Skip::TimeUniform | Skip::TimeQuadratic) || !grids.lambda_min_clipped) {
        return Err(a.error(if grids.lambda_min_clipped {
            format!("lambda_min_clipped applies to diffusers' grids (skip linspace, leading, trailing), not skip {}", a.skip)
        } else {
            "lambda_min_clipped applies to the diffusers grids of method=multistep (DPMSolverMultistepScheduler)".to_string()
        }));
    }
    if top < a.schedule.len() && a.skip == Skip::Trailing {
        // diffusers keeps the T/S stride from the clipped top, so its grid has fewer than S steps.
        return Err(a.error("lambda_min_clipped with skip=trailing gives diffusers' grid fewer than `steps` steps; use linspace or leading"));
    }
    if top < 2 {
        return Err(a.error(format!("lambda_min_clipped={clip} leaves {top} labels")));
    }
    let rule = match a.skip {
        Skip::Logsnr => cont(TimeRule::LogSnr),
        Skip::TimeUniform => cont(TimeRule::TimeUniform),
        Skip::TimeQuadratic => cont(TimeRule::TimeQuadratic),
        Skip::Linspace => VpRule::DiffusersLinspace { final_sigma: fin, top },
        Skip::Leading => VpRule::DiffusersLeading { offset: a.usize("steps_offset")?, final_sigma: fin, top },
        Skip::Trailing => VpRule::DiffusersTrailing { final_sigma: fin, top },
        Skip::Exponential | Skip::Beta | Skip::Lu if !grids.more_levels => {
            return Err(a.error(format!("skip {} follows diffusers' DPMSolverMultistepScheduler: it needs method=multistep", a.skip)))
        }
        levels => VpRule::DiffusersLevels { levels, final_sigma: fin, truncate_cosine: grids.truncate_cosine },
    };
    check_vp_steps(a.def.name, rule, a.steps, a.schedule)?;
    Ok(rule)
}

/// A σ = 0 end under noise prediction (x_t = x0 needs ε at σ = 0) is refused.
pub fn ends_at_zero(rule: VpRule) -> bool {
    rule.final_sigma() == Some(FinalSigma::Zero)
}

fn build(pred: Integrand, a: &Args) -> Result<Box<dyn Sampler>> {
    let zero_snr = a.schedule.zero_terminal_snr();
    let finite = a.schedule.finite_terminal_sigma();
    let a = &Args { schedule: &finite, ..*a };
    let name = a.def.name;
    let order = a.usize("order")?;
    let method = a.str("method")?;
    let lof = a.bool("lower_order_final")?;
    let rule = vp_rule(a, method == "multistep")?;
    if method == "singlestep_fixed" {
        a.need_steps(order, "singlestep_fixed runs blocks of `order` steps")?;
    }
    if pred == Integrand::Noise && ends_at_zero(rule) {
        return Err(a.error("final_sigmas=zero needs data prediction (use dpm_solver++ or final_sigmas=sigma_min)"));
    }
    if method != "multistep" && matches!(rule, VpRule::DiffusersLeading { .. } | VpRule::DiffusersTrailing { .. }) {
        return Err(a.error(format!("skip={} is diffusers' multistep spacing (its singlestep scheduler has linspace only); use method=multistep", a.skip)));
    }
    if zero_snr && (method != "multistep" || rule.final_sigma().is_none()) {
        return Err(a.error("a zero-terminal-SNR schedule needs method=multistep on a diffusers grid (as DPMSolverMultistepScheduler)"));
    }
    let sde = a.bool("sde")?;
    let heun = a.str("solver_type")? == "heun";
    let euler_at_final = a.bool("euler_at_final")?;
    if (heun || euler_at_final) && method != "multistep" {
        return Err(a.error("solver_type=heun and euler_at_final=true are options of the multistep solver here; use method=multistep"));
    }
    if sde && method != "multistep" {
        return Err(a.error("sde=true is the multistep SDE solver; use method=multistep"));
    }
    if sde && pred == Integrand::Noise && order > 2 {
        return Err(a.error("sde=true with noise prediction has orders 1 and 2 only (as diffusers' sde-dpmsolver)"));
    }
    let schedule = a.schedule;
    let steps = a.steps;
    let sampler = match (method, rule) {
        ("multistep", rule) => DpmSolver::multistep(name, pred, order, vp_grid(schedule, rule, steps)?, lof, rule.lower_order_final_below()),
        (m, VpRule::Continuous { rule: tr, t_end }) => {
            let orders = if m == "singlestep" { fast_orders(order, steps) } else { vec![order; steps / order] };
            let vp = VpContinuous::new(schedule);
            DpmSolver::singlestep(name, pred, repo_singlestep_nodes(&vp, tr, t_end, steps, &orders), orders, ThirdOrderMiddle::Repo)
        }
        (_, rule) => {
            let nodes = vp_grid(schedule, rule, steps)?;
            let final_zero = nodes[steps].sigma == 0.0;
            DpmSolver::singlestep(name, pred, nodes, diffusers_singlestep_blocks(order, steps, lof, final_zero), ThirdOrderMiddle::Diffusers)
        }
    };
    Ok(Box::new(sampler.with_clip(X0Clip::from_args(a)?).with_sde(sde).with_multistep_options(heun, euler_at_final)))
}

pub const VP_SKIPS: &[Skip] = &[Skip::Logsnr, Skip::TimeUniform, Skip::TimeQuadratic, Skip::Linspace, Skip::Leading, Skip::Trailing, Skip::Karras];
/// DPM-Solver(++) also takes the σ-level grids of `DPMSolverMultistepScheduler`.
const DPM_SKIPS: &[Skip] = &[
    Skip::Logsnr,
    Skip::TimeUniform,
    Skip::TimeQuadratic,
    Skip::Linspace,
    Skip::Leading,
    Skip::Trailing,
    Skip::Karras,
    Skip::Exponential,
    Skip::Beta,
    Skip::Lu,
];

pub const fn order(default: i64, help: &'static str) -> ParamDef {
    ParamDef { name: "order", kind: ParamKind::Int { min: 1, max: 3, default }, help, diffusers: Some("solver_order") }
}
pub const LOWER_ORDER_FINAL: ParamDef = ParamDef {
    name: "lower_order_final",
    kind: ParamKind::Bool { default: true },
    help: "lower orders for the last steps (multistep: only below 10 steps on repo grids, 15 on diffusers grids; diffusers' singlestep scheduler defaults to false)",
    diffusers: Some("lower_order_final"),
};
pub const T_END: ParamDef = ParamDef {
    name: "t_end",
    kind: ParamKind::FloatOrAuto { min: 0.0, max: 1.0 },
    help: "end time of the continuous (repo) grids; auto = 1/T, the repos' default (1e-3 for T=1000)",
    diffusers: None,
};
pub const LAMBDA_MIN_CLIPPED: ParamDef = ParamDef {
    name: "lambda_min_clipped",
    kind: ParamKind::Float { min: f64::NEG_INFINITY, max: f64::INFINITY, default: f64::NEG_INFINITY },
    help: "multistep linspace/leading/trailing grids span only labels with half log-SNR λ_t ≥ this (DeepFloyd IF: −5.1 on its cosine schedule)",
    diffusers: Some("lambda_min_clipped"),
};
pub const fn final_sigmas(default: &'static str) -> ParamDef {
    ParamDef {
        name: "final_sigmas",
        kind: ParamKind::Choice { allowed: &["zero", "sigma_min"], default },
        help: "diffusers grids only: zero (the last step lands on x̂0; needs data prediction) or sigma_min (ᾱ_0)",
        diffusers: Some("final_sigmas_type"),
    }
}
const fn sde(diffusers_value: &'static str) -> ParamDef {
    ParamDef {
        name: "sde",
        kind: ParamKind::Bool { default: false },
        help: diffusers_value,
        diffusers: None,
    }
}
pub const SOLVER_TYPE: ParamDef = ParamDef {
    name: "solver_type",
    kind: ParamKind::Choice { allowed: &["midpoint", "heun"], default: "midpoint" },
    help: "multistep order-2 steps: midpoint (½φ1·D1, the repos' dpmsolver form) | heun (φ2·D1)",
    diffusers: Some("solver_type"),
};
pub const EULER_AT_FINAL: ParamDef = ParamDef {
    name: "euler_at_final",
    kind: ParamKind::Bool { default: false },
    help: "multistep: a first-order last step whatever the step count",
    diffusers: Some("euler_at_final"),
};
const fn method(default: &'static str) -> ParamDef {
    ParamDef {
        name: "method",
        kind: ParamKind::Choice { allowed: &["singlestep", "multistep", "singlestep_fixed"], default },
        help: "singlestep (DPM-Solver-fast order schedule on repo grids, diffusers' singlestep scheduler otherwise) | singlestep_fixed | multistep",
        diffusers: None,
    }
}

pub static DPM_SOLVER: SamplerDef = SamplerDef {
    name: "dpm_solver",
    params: &[
        order(3, "1 | 2 | 3"),
        method("singlestep"),
        sde("multistep SDE-DPM-Solver-1/2 with fresh noise each step (diffusers algorithm_type=sde-dpmsolver)"),
        SOLVER_TYPE,
        LOWER_ORDER_FINAL,
        EULER_AT_FINAL,
        T_END,
        STEPS_OFFSET,
        final_sigmas("sigma_min"),
        LAMBDA_MIN_CLIPPED,
        THRESHOLDING,
        DYNAMIC_THRESHOLDING_RATIO,
        SAMPLE_MAX_VALUE,
    ],
    skips: DPM_SKIPS,
    default_skip: Skip::Logsnr,
    nfe: "S (singlestep_fixed: order·⌊S/order⌋)",
    end_point: "ᾱ_0 (t_end = 1/T, label 0)",
    reference: "Lu et al. 2022, DPM-Solver (arXiv:2206.00927); LuChengTHU/dpm-solver dpm_solver_pytorch.py; diffusers DPMSolverSinglestep/MultistepScheduler (algorithm_type=dpmsolver)",
    predictions: ALL_PREDICTIONS,
    note: "skip logsnr | time_uniform | time_quadratic are the DPM-Solver repo's continuous grids (t from 1 to t_end); linspace | leading | trailing | karras are diffusers' discrete grids (leading/trailing: multistep only)",
    eta: None,
    variant: Some("method"),
    build: |a| build(Integrand::Noise, a),
};

pub static DPM_SOLVER_PP: SamplerDef = SamplerDef {
    name: "dpm_solver++",
    params: &[
        order(2, "1 | 2 | 3 (2S = order 2 singlestep, 2M = order 2 multistep, 3M = order 3 multistep)"),
        method("multistep"),
        sde("multistep SDE-DPM-Solver++ with fresh noise each step (diffusers algorithm_type=sde-dpmsolver++)"),
        SOLVER_TYPE,
        LOWER_ORDER_FINAL,
        EULER_AT_FINAL,
        T_END,
        STEPS_OFFSET,
        final_sigmas("zero"),
        LAMBDA_MIN_CLIPPED,
        THRESHOLDING,
        DYNAMIC_THRESHOLDING_RATIO,
        SAMPLE_MAX_VALUE,
    ],
    nfe: "S",
    end_point: "ᾱ_0 on repo grids; ᾱ=1 (σ=0) on diffusers grids with final_sigmas=zero",
    reference: "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095); LuChengTHU/dpm-solver; diffusers DPMSolverMultistepScheduler (algorithm_type=dpmsolver++)",
    build: |a| build(Integrand::Data, a),
    ..DPM_SOLVER
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phis_match_series() {
        let h = 1e-3;
        let [p1, p2, p3] = phis(h);
        assert!((p1 - (h + h * h / 2.0 + h.powi(3) / 6.0)).abs() < 1e-13);
        assert!((p2 - (h / 2.0 + h * h / 6.0)).abs() < 1e-10);
        assert!((p3 - h / 6.0).abs() < 1e-6);
    }

    #[test]
    fn repo_fast_orders() {
        assert_eq!(fast_orders(3, 10), vec![3, 3, 3, 1]);
        assert_eq!(fast_orders(3, 9), vec![3, 3, 2, 1]);
        assert_eq!(fast_orders(3, 20), vec![3, 3, 3, 3, 3, 3, 2]);
        assert_eq!(fast_orders(2, 7), vec![2, 2, 2, 1]);
        assert_eq!(fast_orders(2, 8), vec![2, 2, 2, 2]);
        for s in 1..30 {
            assert_eq!(fast_orders(3, s).iter().sum::<usize>(), s);
        }
    }

    #[test]
    fn diffusers_singlestep_order_list() {
        // get_order_list(6) for order 3 = [1,2,3,1,2,1]; order 2, 6 steps = [1,2,1,2,1,1].
        assert_eq!(diffusers_singlestep_blocks(3, 6, true, false), vec![3, 2, 1]);
        assert_eq!(diffusers_singlestep_blocks(2, 6, true, false), vec![2, 2, 1, 1]);
        // final σ = 0 makes the last step first order: [1,2,3,1,2] → [1,2,3,1,1].
        assert_eq!(diffusers_singlestep_blocks(3, 5, true, true), vec![3, 1, 1]);
    }

    #[test]
    fn zero_terminal_snr_only_on_diffusers_multistep_grids() {
        let z = crate::schedule::NoiseSchedule::ddpm_linear().rescaled_zero_terminal_snr();
        let pp = &DPM_SOLVER_PP;
        assert!(pp.build(&pp.defaults(), Skip::Trailing, 10, &z).is_ok());
        // The repo's continuous grids start at λ = −∞ under zero terminal SNR.
        let e = pp.build(&pp.defaults(), Skip::Logsnr, 10, &z).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("zero-terminal-SNR"), "{e}");
        let heun = super::super::def::find("heun").unwrap();
        let e = heun.build(&heun.defaults(), Skip::Trailing, 10, &z).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("zero terminal SNR"), "{e}");
    }

    #[test]
    fn multistep_lower_order_final_thresholds() {
        // Repo: below 10 steps only.
        assert_eq!(multistep_orders(3, 9, true, 10, false), vec![1, 2, 3, 3, 3, 3, 3, 2, 1]);
        assert_eq!(multistep_orders(3, 10, true, 10, false), vec![1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
        // diffusers: below 15, and a σ = 0 end is always first order.
        assert_eq!(multistep_orders(3, 12, true, 15, false)[10..], [2, 1]);
        assert_eq!(multistep_orders(2, 20, true, 15, true)[18..], [2, 1]);
    }
}
