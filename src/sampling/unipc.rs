//! UniPC (Zhao et al. 2023, arXiv:2302.04867): a multistep predictor (UniP-p) plus a corrector
//! (UniC-p) that reuses the model output at the new point, so the order rises by one at no NFE.
//! Written against wl-zhao/UniPC `multistep_uni_pc_bh_update` and diffusers
//! `UniPCMultistepScheduler` (B(h) variants only).
use super::continuous::{vp_grid, Node};
use super::ddim::{DYNAMIC_THRESHOLDING_RATIO, SAMPLE_MAX_VALUE, STEPS_OFFSET, THRESHOLDING};
use super::def::{Args, ParamDef, ParamKind, SamplerDef, ALL_PREDICTIONS};
use super::dpm_solver::{ends_at_zero, exp_update, final_sigmas, order, phis, vp_rule, History, Integrand, LOWER_ORDER_FINAL, T_END, VP_SKIPS};
use super::{Counted, EndPoint, NoiseSource, Sampler, X0Clip};
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

/// B(h) of UniPC eq. 9's family: bh1 = hh, bh2 = e^hh − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Bh1,
    Bh2,
}

/// The UniPC coefficients' right-hand side b_i = h φ_{i+1}(h) · i! / B(h), i = 1..order
/// (UniPC Alg. 2/3; the `h_phi_k`/`factorial_i` recursion of both references).
fn rhs(hh: f64, order: usize, variant: Variant) -> Vec<f64> {
    let [p1, _, _] = phis(hh);
    let b_h = match variant {
        Variant::Bh1 => hh,
        Variant::Bh2 => p1,
    };
    let mut h_phi_k = p1 / hh - 1.0;
    let mut fact = 1.0;
    let mut b = Vec::with_capacity(order);
    for i in 1..=order {
        b.push(h_phi_k * fact / b_h);
        fact *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / fact;
    }
    b
}

/// Solve R ρ = b for R_ij = r_j^i (i, j < n; n ≤ 3) by Gaussian elimination with pivoting.
fn solve_vandermonde(rks: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut a: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| rks[j].powi(i as i32)).chain([b[i]]).collect()).collect();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        a.swap(c, p);
        let pivot = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (v, q) in row[c..].iter_mut().zip(&pivot[c..]) {
                    *v -= f * q;
                }
            }
        }
    }
    (0..n).map(|i| a[i][n] / a[i][i]).collect()
}

/// D1s and r_k of the history relative to the newest entry s0 (UniPC eq. 7: D_k = (m_k − m0)/r_k).
fn differences(hist: &History, h: f64, count: usize) -> (Vec<f64>, Vec<Tensor>) {
    let (s0, m0) = hist.get(0);
    (1..=count)
        .map(|k| {
            let (sk, mk) = hist.get(k);
            let rk = (sk.lambda - s0.lambda) / h;
            (rk, (mk - m0) / rk)
        })
        .unzip()
}

/// UniP-p (`multistep_uni_p_bh_update`): x_t = lin·x − scale·(φ1 m0 + B(h) Σ ρ_k D_k),
/// ρ = ½ for order 2, else solved from the (order−1)×(order−1) system.
fn predictor(pred: Integrand, variant: Variant, x: &Tensor, hist: &History, t: &Node, order: usize) -> Tensor {
    let (s0, m0) = hist.get(0);
    let h = t.lambda - s0.lambda;
    let hh = pred.hh(h);
    let [p1, _, _] = phis(hh);
    let b_h = match variant {
        Variant::Bh1 => hh,
        Variant::Bh2 => p1,
    };
    let (rks, d1s) = differences(hist, h, order - 1);
    let rhos = match order {
        1 => vec![],
        2 => vec![0.5],
        _ => solve_vandermonde(&rks, &rhs(hh, order - 1, variant)),
    };
    let mut terms: Vec<(f64, &Tensor)> = vec![(p1, m0)];
    terms.extend(rhos.iter().zip(&d1s).map(|(r, d)| (b_h * r, d)));
    exp_update(pred, x, s0, t, &terms)
}

/// UniC-p (`multistep_uni_c_bh_update`): with the model output m_t at the predicted x_t,
/// x_t^c = lin·x − scale·(φ1 m0 + B(h)(Σ ρ_k D_k + ρ_t (m_t − m0))), ρ from the full system
/// with r = 1 appended (ρ = ½ for order 1).
fn corrector(pred: Integrand, variant: Variant, x_prev: &Tensor, hist: &History, t: &Node, m_t: &Tensor, order: usize) -> Tensor {
    let (s0, m0) = hist.get(0);
    let h = t.lambda - s0.lambda;
    let hh = pred.hh(h);
    let [p1, _, _] = phis(hh);
    let b_h = match variant {
        Variant::Bh1 => hh,
        Variant::Bh2 => p1,
    };
    let (mut rks, d1s) = differences(hist, h, order - 1);
    rks.push(1.0);
    let rhos = if order == 1 { vec![0.5] } else { solve_vandermonde(&rks, &rhs(hh, order, variant)) };
    let d1_t = m_t - m0;
    let mut terms: Vec<(f64, &Tensor)> = vec![(p1, m0)];
    terms.extend(rhos.iter().zip(&d1s).map(|(r, d)| (b_h * r, d)));
    terms.push((b_h * rhos[rhos.len() - 1], &d1_t));
    exp_update(pred, x_prev, s0, t, &terms)
}

pub struct UniPc {
    name: &'static str,
    pred: Integrand,
    clip: X0Clip,
    variant: Variant,
    nodes: Vec<Node>,
    /// Predictor order of every step (warm-up and lower_order_final applied).
    orders: Vec<usize>,
    /// Corrector after step i's predictor (at node i+1), never after the last step.
    corrector: Vec<bool>,
}

impl UniPc {
    /// `lower_order_final` here is the references' rule without a step threshold: the last steps
    /// use min(order, S − i) (both wl-zhao/UniPC and diffusers).
    pub fn new(pred: Integrand, variant: Variant, order: usize, nodes: Vec<Node>, lower_order_final: bool, disable_corrector: &[usize]) -> Self {
        let steps = nodes.len() - 1;
        let orders = (0..steps)
            .map(|i| {
                let o = order.min(i + 1);
                if lower_order_final {
                    o.min(steps - i)
                } else {
                    o
                }
            })
            .collect();
        let corrector = (0..steps).map(|i| i + 1 < steps && !disable_corrector.contains(&i)).collect();
        UniPc { name: "unipc", pred, clip: X0Clip::OFF, variant, nodes, orders, corrector }
    }
    /// The same solver registered under another name (the flow version).
    pub fn named(self, name: &'static str) -> Self {
        UniPc { name, ..self }
    }
}

impl Sampler for UniPc {
    fn name(&self) -> &'static str {
        self.name
    }
    fn nfe(&self) -> usize {
        self.nodes.len() - 1
    }
    fn labels(&self) -> Vec<f64> {
        self.nodes[..self.nodes.len() - 1].iter().map(|n| n.label).collect()
    }
    fn end_point(&self) -> EndPoint {
        if self.nodes[self.nodes.len() - 1].sigma == 0.0 {
            EndPoint::AlphaBarOne
        } else {
            EndPoint::AlphaBarZero
        }
    }
    fn sample(&self, model: &Counted, x_t: Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let pred = self.pred;
        let mut hist = History::new(3);
        let mut x = x_t;
        let mut m = pred.of(&model.call(&x, &self.nodes[0])?, &self.clip);
        for (i, &o) in self.orders.iter().enumerate() {
            let (s, t) = (&self.nodes[i], &self.nodes[i + 1]);
            hist.push(*s, m);
            let x_pred = predictor(pred, self.variant, &x, &hist, t, o);
            if i + 1 == self.orders.len() {
                x = x_pred;
                break;
            }
            // The model output at the predicted point feeds both the corrector and the next step.
            m = pred.of(&model.call(&x_pred, t)?, &self.clip);
            x = if self.corrector[i] { corrector(pred, self.variant, &x, &hist, t, &m, o) } else { x_pred };
        }
        Ok(x)
    }
}

pub const VARIANT: ParamDef = ParamDef {
    name: "variant",
    kind: ParamKind::Choice { allowed: &["bh1", "bh2"], default: "bh1" },
    help: "bh1 (B(h)=h; the UniPC paper's choice for unconditional sampling) | bh2 (B(h)=e^h−1; diffusers' default)",
    diffusers: Some("solver_type"),
};

pub const DISABLE_CORRECTOR: ParamDef =
    ParamDef { name: "disable_corrector", kind: ParamKind::IntList, help: "steps without the corrector (UniPC's advice: the first ones under strong guidance)", diffusers: Some("disable_corrector") };

pub static UNIPC: SamplerDef = SamplerDef {
    name: "unipc",
    params: &[
        order(2, "1 | 2 | 3 (predictor order; UniC adds one)"),
        VARIANT,
        ParamDef {
            name: "predict",
            kind: ParamKind::Choice { allowed: &["data", "noise"], default: "data" },
            help: "data (UniPC with x̂0; diffusers predict_x0=True) | noise",
            diffusers: None,
        },
        ParamDef { help: "last steps use min(order, S−i) (no step threshold, as both references)", ..LOWER_ORDER_FINAL },
        DISABLE_CORRECTOR,
        T_END,
        STEPS_OFFSET,
        final_sigmas("zero"),
        THRESHOLDING,
        DYNAMIC_THRESHOLDING_RATIO,
        SAMPLE_MAX_VALUE,
    ],
    skips: VP_SKIPS,
    default_skip: Skip::Logsnr,
    nfe: "S (no corrector after the last step)",
    end_point: "ᾱ_0 on repo grids; ᾱ=1 (σ=0) on diffusers grids with final_sigmas=zero",
    reference: "Zhao et al. 2023, UniPC (arXiv:2302.04867); wl-zhao/UniPC uni_pc.py; diffusers UniPCMultistepScheduler",
    predictions: ALL_PREDICTIONS,
    note: "",
    eta: None,
    variant: Some("variant"),
    build: |a| {
        let variant = if a.str("variant")? == "bh2" { Variant::Bh2 } else { Variant::Bh1 };
        let pred = if a.str("predict")? == "noise" { Integrand::Noise } else { Integrand::Data };
        let zero_snr = a.schedule.zero_terminal_snr();
        let finite = a.schedule.finite_terminal_sigma();
        let a = &Args { schedule: &finite, ..*a };
        let rule = vp_rule(a, false)?;
        if zero_snr && rule.final_sigma().is_none() {
            return Err(a.error("a zero-terminal-SNR schedule needs a diffusers grid (skip linspace, leading, trailing or karras)"));
        }
        if pred == Integrand::Noise && ends_at_zero(rule) {
            return Err(a.error("final_sigmas=zero needs predict=data (or final_sigmas=sigma_min)"));
        }
        let u = UniPc::new(pred, variant, a.usize("order")?, vp_grid(a.schedule, rule, a.steps)?, a.bool("lower_order_final")?, &a.int_list("disable_corrector")?);
        Ok(Box::new(UniPc { clip: X0Clip::from_args(a)?, ..u }))
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vandermonde_solve() {
        let r = [0.5, -0.7, 1.0];
        let b = [1.0, 2.0, 3.0];
        let rho = solve_vandermonde(&r, &b);
        for (i, bi) in b.iter().enumerate() {
            let lhs: f64 = r.iter().zip(&rho).map(|(rj, pj)| rj.powi(i as i32) * pj).sum();
            assert!((lhs - bi).abs() < 1e-12);
        }
    }

    #[test]
    fn lower_order_final_has_no_step_threshold_and_last_step_has_no_corrector() {
        // wl-zhao/UniPC and diffusers: min(order, S − i) at every S (DPM-Solver's < 10 rule does not apply).
        let nodes: Vec<Node> = (0..=20).map(|i| Node::from_sigma_ve(i as f64, 10.0 / (i as f64 + 1.0))).collect();
        let u = UniPc::new(Integrand::Data, Variant::Bh1, 3, nodes, true, &[]);
        assert_eq!(u.orders[..3], [1, 2, 3]);
        assert_eq!(u.orders[17..], [3, 2, 1]);
        assert_eq!(u.corrector.iter().filter(|&&c| c).count(), 19);
        assert!(!u.corrector[19]);
    }

    #[test]
    fn bh1_rhs_tends_to_taylor_coefficients() {
        // For B(h) = h and h → 0: b_i → i!/(i+1)! = 1/(i+1).
        let b = rhs(-1e-2, 3, Variant::Bh1);
        for (i, v) in b.iter().enumerate() {
            assert!((v - 1.0 / (i as f64 + 2.0)).abs() < 5e-3, "{i}: {v}");
        }
    }
}
