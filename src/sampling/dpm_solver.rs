//! DPM-Solver (Lu et al. 2022, arXiv:2206.00927) and DPM-Solver++ (Lu et al. 2022,
//! arXiv:2211.01095): exponential integrators of the probability-flow ODE in λ = log(α/σ).
//!
//! The λ-space pieces (φ functions, the exponential-integrator update, the multistep history)
//! are shared with UniPC (`unipc.rs`).
use super::continuous::{check_vp_steps, time_steps, vp_grid, FinalSigma, Node, TimeRule, VpContinuous, VpRule};
use super::params::{check_steps, ParamMap, Params};
use super::{x0_from_eps, Counted, EndPoint, NoiseSource, Sampler, SamplerInfo, Schedule};
use crate::Result;
use tch::Tensor;

/// What the solver integrates: ε̂ (DPM-Solver, "dpmsolver") or x̂0 (DPM-Solver++, "dpmsolver++").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Noise,
    Data,
}

impl Prediction {
    /// The integration variable's step: h for noise prediction, −h for data prediction.
    pub fn hh(self, h: f64) -> f64 {
        match self {
            Prediction::Noise => h,
            Prediction::Data => -h,
        }
    }
    /// Linear part e^{∫...}: α_t/α_s (DPM-Solver eq. 3.4) or σ_t/σ_s (DPM-Solver++ eq. 8).
    pub fn linear(self, s: &Node, t: &Node) -> f64 {
        match self {
            Prediction::Noise => t.alpha / s.alpha,
            Prediction::Data => t.sigma / s.sigma,
        }
    }
    /// Factor in front of the integral: σ_t (noise) or α_t (data).
    pub fn scale(self, t: &Node) -> f64 {
        match self {
            Prediction::Noise => t.sigma,
            Prediction::Data => t.alpha,
        }
    }
    /// The model output in this parametrisation (DPM-Solver++ §3: x̂0 = (x − σ ε̂)/α).
    pub fn convert(self, x: &Tensor, eps: &Tensor, at: &Node) -> Tensor {
        match self {
            Prediction::Noise => eps.shallow_clone(),
            Prediction::Data => x0_from_eps(x, eps, at.alpha_bar()),
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
pub fn exp_update(pred: Prediction, x: &Tensor, s: &Node, t: &Node, terms: &[(f64, &Tensor)]) -> Tensor {
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
fn first_order(pred: Prediction, x: &Tensor, s: &Node, t: &Node, m_s: &Tensor) -> Tensor {
    let [p1, _, _] = phis(pred.hh(t.lambda - s.lambda));
    exp_update(pred, x, s, t, &[(p1, m_s)])
}

/// Multistep order 2 ("midpoint"; repo `multistep_dpm_solver_second_order_update`, DPM-Solver++
/// Alg. 2): D1 = (m0 − m1)/r0, x_t = lin·x − scale·(φ1 m0 + ½ φ1 D1).
fn multistep_second(pred: Prediction, x: &Tensor, hist: &History, t: &Node) -> Tensor {
    let ((s0, m0), (s1, m1)) = (hist.get(0), hist.get(1));
    let h = t.lambda - s0.lambda;
    let r0 = (s0.lambda - s1.lambda) / h;
    let d1 = (m0 - m1) / r0;
    let [p1, _, _] = phis(pred.hh(h));
    exp_update(pred, x, s0, t, &[(p1, m0), (0.5 * p1, &d1)])
}

/// Multistep order 3 (repo `multistep_dpm_solver_third_order_update`):
/// D1 = D1_0 + r0/(r0+r1)(D1_0 − D1_1), D2 = (D1_0 − D1_1)/(r0+r1), x_t = lin·x − scale·(φ1 m0 + φ2 D1 + φ3 D2).
fn multistep_third(pred: Prediction, x: &Tensor, hist: &History, t: &Node) -> Tensor {
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

/// Singlestep order-2 update from s over (s1, t) with models at s and s1 (repo
/// `singlestep_dpm_solver_second_order_update`, solver_type 'dpmsolver'; diffusers "midpoint"):
/// x_t = lin·x_s − scale·(φ1 m_s + ½ φ1 (m_s1 − m_s)/r1).
fn singlestep_second(pred: Prediction, x_s: &Tensor, s: &Node, s1: &Node, t: &Node, m_s: &Tensor, m_s1: &Tensor) -> Tensor {
    let h = t.lambda - s.lambda;
    let r1 = (s1.lambda - s.lambda) / h;
    let d = (m_s1 - m_s) / r1;
    let [p1, _, _] = phis(pred.hh(h));
    exp_update(pred, x_s, s, t, &[(p1, m_s), (0.5 * p1, &d)])
}

/// The φ2 form of the order-2 step (repo third-order update's x_s2, DPM-Solver Alg. 5 line 6):
/// x_t = lin·x_s − scale·(φ1 m_s + φ2 (m_s1 − m_s)/r1).
fn singlestep_second_phi2(pred: Prediction, x_s: &Tensor, s: &Node, s1: &Node, t: &Node, m_s: &Tensor, m_s1: &Tensor) -> Tensor {
    let h = t.lambda - s.lambda;
    let r1 = (s1.lambda - s.lambda) / h;
    let d = (m_s1 - m_s) / r1;
    let [p1, p2, _] = phis(pred.hh(h));
    exp_update(pred, x_s, s, t, &[(p1, m_s), (p2, &d)])
}

/// Singlestep order-3 final update (DPM-Solver Alg. 5 line 8 / diffusers third order "midpoint"):
/// x_t = lin·x_s − scale·(φ1 m_s + φ2 (m_s2 − m_s)/r2).
fn singlestep_third(pred: Prediction, x_s: &Tensor, s: &Node, s2: &Node, t: &Node, m_s: &Tensor, m_s2: &Tensor) -> Tensor {
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
    pred: Prediction,
    multistep: bool,
    nodes: Vec<Node>,
    /// Multistep: one order per step. Singlestep: one order per block (block k spans
    /// nodes[start_k ..= start_k + order_k]).
    orders: Vec<usize>,
    middle: ThirdOrderMiddle,
    end: EndPoint,
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
    pub fn multistep(name: &'static str, pred: Prediction, order: usize, nodes: Vec<Node>, lower_order_final: bool, below: usize) -> Self {
        let steps = nodes.len() - 1;
        let final_zero = nodes[steps].sigma == 0.0;
        let orders = multistep_orders(order, steps, lower_order_final, below, final_zero);
        let end = end_of(&nodes);
        DpmSolver { name, pred, multistep: true, nodes, orders, middle: ThirdOrderMiddle::Repo, end }
    }

    /// Singlestep with explicit block orders on a grid of Σorders + 1 nodes.
    pub fn singlestep(name: &'static str, pred: Prediction, nodes: Vec<Node>, blocks: Vec<usize>, middle: ThirdOrderMiddle) -> Self {
        let end = end_of(&nodes);
        DpmSolver { name, pred, multistep: false, nodes, orders: blocks, middle, end }
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
    fn sample(&self, model: &Counted, x_t: Tensor, _noise: &mut dyn NoiseSource) -> Tensor {
        let pred = self.pred;
        let mut x = x_t;
        let eval = |x: &Tensor, n: &Node| pred.convert(x, &model.eps(x, n.label), n);
        if self.multistep {
            let mut hist = History::new(3);
            for (i, &o) in self.orders.iter().enumerate() {
                let (s, t) = (&self.nodes[i], &self.nodes[i + 1]);
                hist.push(*s, eval(&x, s));
                x = match o {
                    1 => first_order(pred, &x, s, t, hist.get(0).1),
                    2 => multistep_second(pred, &x, &hist, t),
                    _ => multistep_third(pred, &x, &hist, t),
                };
            }
        } else {
            let mut k = 0;
            for &o in &self.orders {
                let n = &self.nodes[k..=k + o];
                let m_s = eval(&x, &n[0]);
                x = match o {
                    1 => first_order(pred, &x, &n[0], &n[1], &m_s),
                    2 => {
                        let x1 = first_order(pred, &x, &n[0], &n[1], &m_s);
                        let m1 = eval(&x1, &n[1]);
                        singlestep_second(pred, &x, &n[0], &n[1], &n[2], &m_s, &m1)
                    }
                    _ => {
                        let x1 = first_order(pred, &x, &n[0], &n[1], &m_s);
                        let m1 = eval(&x1, &n[1]);
                        let x2 = match self.middle {
                            ThirdOrderMiddle::Repo => singlestep_second_phi2(pred, &x, &n[0], &n[1], &n[2], &m_s, &m1),
                            ThirdOrderMiddle::Diffusers => singlestep_second(pred, &x, &n[0], &n[1], &n[2], &m_s, &m1),
                        };
                        let m2 = eval(&x2, &n[2]);
                        singlestep_third(pred, &x, &n[0], &n[2], &n[3], &m_s, &m2)
                    }
                };
                k += o;
            }
        }
        x
    }
}

/// Parse the shared `skip`/`final_sigmas`/`t_end` parameters of the VP ODE solvers.
/// `truncate_cosine`: diffusers' multistep DPM-Solver labels for karras + cosine (see `VpRule`).
pub fn parse_vp_rule(p: &mut Params, schedule: &Schedule, default_skip: &'static str, default_final: &'static str, truncate_cosine: bool) -> Result<VpRule> {
    let skip = p.choice("skip", default_skip, &["logsnr", "time_uniform", "time_quadratic", "linspace", "karras"])?;
    let fin = match p.choice("final_sigmas", default_final, &["zero", "sigma_min"])? {
        "zero" => FinalSigma::Zero,
        _ => FinalSigma::SigmaMin,
    };
    let n = schedule.len() as f64;
    let t_end = p.f64_min("t_end", 1.0 / n, 1.0 / n)?;
    let cont = |rule| VpRule::Continuous { rule, t_end };
    Ok(match skip {
        "logsnr" => cont(TimeRule::LogSnr),
        "time_uniform" => cont(TimeRule::TimeUniform),
        "time_quadratic" => cont(TimeRule::TimeQuadratic),
        "linspace" => VpRule::DiffusersLinspace(fin),
        _ => VpRule::DiffusersKarras { final_sigma: fin, truncate_cosine },
    })
}

#[allow(clippy::too_many_arguments)]
fn build(name: &'static str, pred: Prediction, params: &ParamMap, steps: usize, schedule: &Schedule, default_order: usize, default_method: &'static str, default_final: &'static str) -> Result<Box<dyn Sampler>> {
    let mut p = Params::new(name, params);
    let order = p.usize_in("order", default_order, 1, 3)?;
    let method = p.choice("method", default_method, &["multistep", "singlestep", "singlestep_fixed"])?;
    let lof = p.bool("lower_order_final", true)?;
    let rule = parse_vp_rule(&mut p, schedule, "logsnr", default_final, method == "multistep")?;
    p.finish()?;
    let min_steps = if method == "singlestep_fixed" { order } else { 1 };
    check_steps(name, steps, min_steps)?;
    check_vp_steps(name, rule, steps, schedule)?;
    if pred == Prediction::Noise && matches!(rule, VpRule::DiffusersLinspace(FinalSigma::Zero) | VpRule::DiffusersKarras { final_sigma: FinalSigma::Zero, .. }) {
        return Err(crate::BenchError::user(format!(
            "sampler {name}: final_sigmas=zero needs data prediction (use dpm_solver++ or final_sigmas=sigma_min)"
        )));
    }
    let sampler = match (method, rule) {
        ("multistep", rule) => DpmSolver::multistep(name, pred, order, vp_grid(schedule, rule, steps), lof, rule.lower_order_final_below()),
        (m, VpRule::Continuous { rule: tr, t_end }) => {
            let orders = if m == "singlestep" { fast_orders(order, steps) } else { vec![order; steps / order] };
            let vp = VpContinuous::new(schedule);
            DpmSolver::singlestep(name, pred, repo_singlestep_nodes(&vp, tr, t_end, steps, &orders), orders, ThirdOrderMiddle::Repo)
        }
        (_, rule) => {
            let nodes = vp_grid(schedule, rule, steps);
            let final_zero = nodes[steps].sigma == 0.0;
            DpmSolver::singlestep(name, pred, nodes, diffusers_singlestep_blocks(order, steps, lof, final_zero), ThirdOrderMiddle::Diffusers)
        }
    };
    Ok(Box::new(sampler))
}

/// `dpm_solver`: noise-prediction DPM-Solver; default DPM-Solver-3 "fast" singlestep (paper §3.4).
pub fn dpm_solver(params: &ParamMap, steps: usize, schedule: &Schedule) -> Result<Box<dyn Sampler>> {
    build("dpm_solver", Prediction::Noise, params, steps, schedule, 3, "singlestep", "sigma_min")
}

/// `dpm_solver++`: data-prediction DPM-Solver++; default 2M (the paper's recommended solver).
pub fn dpm_solver_pp(params: &ParamMap, steps: usize, schedule: &Schedule) -> Result<Box<dyn Sampler>> {
    build("dpm_solver++", Prediction::Data, params, steps, schedule, 2, "multistep", "zero")
}

const VP_PARAMS_NOTE: &str = "logsnr | time_uniform | time_quadratic (DPM-Solver repo, continuous t from 1 to t_end) | linspace | karras (diffusers discrete grid)";

pub const DPM_SOLVER_INFO: SamplerInfo = SamplerInfo {
    name: "dpm_solver",
    params: &[
        ("order", "3", "1 | 2 | 3"),
        ("method", "singlestep", "singlestep (DPM-Solver-fast order schedule) | singlestep_fixed | multistep"),
        ("skip", "logsnr", VP_PARAMS_NOTE),
        ("lower_order_final", "true", "lower orders for the last steps (multistep: only below 10 steps on repo grids, 15 on diffusers grids; diffusers' singlestep scheduler defaults to false)"),
        ("t_end", "1/T", "end time of the continuous grid (repo default 1/N = 1e-3 for T=1000)"),
        ("final_sigmas", "sigma_min", "diffusers grids only: sigma_min (zero needs dpm_solver++)"),
    ],
    default_skip: "logsnr (DPM-Solver README: logSNR for low-resolution pixel models)",
    nfe: "S (singlestep_fixed: order·⌊S/order⌋)",
    end_point: "ᾱ_0 (t_end = 1/T, label 0)",
    reference: "Lu et al. 2022, DPM-Solver (arXiv:2206.00927); LuChengTHU/dpm-solver dpm_solver_pytorch.py; diffusers DPMSolverSinglestep/MultistepScheduler (algorithm_type=dpmsolver)",
};

pub const DPM_SOLVER_PP_INFO: SamplerInfo = SamplerInfo {
    name: "dpm_solver++",
    params: &[
        ("order", "2", "1 | 2 | 3 (2S = order 2 singlestep, 2M = order 2 multistep, 3M = order 3 multistep)"),
        ("method", "multistep", "multistep | singlestep | singlestep_fixed"),
        ("skip", "logsnr", VP_PARAMS_NOTE),
        ("lower_order_final", "true", "as dpm_solver (diffusers' singlestep scheduler defaults to false)"),
        ("t_end", "1/T", "end time of the continuous grid"),
        ("final_sigmas", "zero", "diffusers grids only: zero (last step lands on x̂0) | sigma_min"),
    ],
    default_skip: "logsnr",
    nfe: "S",
    end_point: "ᾱ_0 on repo grids; ᾱ=1 (σ=0) on diffusers grids with final_sigmas=zero",
    reference: "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095); LuChengTHU/dpm-solver; diffusers DPMSolverMultistepScheduler (algorithm_type=dpmsolver++)",
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
    fn multistep_lower_order_final_thresholds() {
        // Repo: below 10 steps only.
        assert_eq!(multistep_orders(3, 9, true, 10, false), vec![1, 2, 3, 3, 3, 3, 3, 2, 1]);
        assert_eq!(multistep_orders(3, 10, true, 10, false), vec![1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
        // diffusers: below 15, and a σ = 0 end is always first order.
        assert_eq!(multistep_orders(3, 12, true, 15, false)[10..], [2, 1]);
        assert_eq!(multistep_orders(2, 20, true, 15, true)[18..], [2, 1]);
    }
}
