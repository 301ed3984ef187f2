//! DEIS (Zhang & Chen 2023, arXiv:2204.13902), the ρAB "log-rho" multistep variant as in
//! diffusers `DEISMultistepScheduler`: in ρ = σ/α (= σ̃), x/α evolves as dx̄/dρ = ε, and ε is
//! extrapolated by the Lagrange polynomial in log ρ through the last `order` model outputs,
//! integrated exactly over [ρ_s, ρ_t] (DEIS eq. 15 with the log-ρ basis).
use super::continuous::{vp_grid, Node};
use super::ddim::{DYNAMIC_THRESHOLDING_RATIO, SAMPLE_MAX_VALUE, STEPS_OFFSET, THRESHOLDING};
use super::def::{SamplerDef, ALL_PREDICTIONS};
use super::dpm_solver::{ends_at_zero, final_sigmas, multistep_orders, order, vp_rule, History, LOWER_ORDER_FINAL, T_END, VP_SKIPS};
use super::{Counted, EndPoint, NoiseSource, Sampler, X0Clip};
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

fn rho(n: &Node) -> f64 {
    n.sigma / n.alpha
}

/// ∫ (log t − log c)/(log b − log c) dt (diffusers `ind_fn`, order 2).
fn ind2(t: f64, b: f64, c: f64) -> f64 {
    t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln())
}

/// ∫ (log t − log c)(log t − log d)/((log b − log c)(log b − log d)) dt (order 3).
fn ind3(t: f64, b: f64, c: f64, d: f64) -> f64 {
    let (lt, lc, ld) = (t.ln(), c.ln(), d.ln());
    t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0) / ((b.ln() - lc) * (b.ln() - ld))
}

/// One ρAB step (diffusers `deis_first_order_update` / `multistep_deis_{second,third}_order_update`):
/// x_t = α_t (x_s/α_s + Σ_k c_k ε_k), c_k = ∫_{ρ_s}^{ρ_t} ℓ_k(log ρ) dρ.
fn deis_step(x: &Tensor, hist: &History, t: &Node, order: usize) -> Tensor {
    let (s0, m0) = hist.get(0);
    let (rt, r0) = (rho(t), rho(s0));
    let coefs: Vec<(f64, &Tensor)> = match order {
        1 => vec![(rt - r0, m0)],
        2 => {
            let (s1, m1) = hist.get(1);
            let r1 = rho(s1);
            vec![(ind2(rt, r0, r1) - ind2(r0, r0, r1), m0), (ind2(rt, r1, r0) - ind2(r0, r1, r0), m1)]
        }
        _ => {
            let ((s1, m1), (s2, m2)) = (hist.get(1), hist.get(2));
            let (r1, r2) = (rho(s1), rho(s2));
            vec![
                (ind3(rt, r0, r1, r2) - ind3(r0, r0, r1, r2), m0),
                (ind3(rt, r1, r2, r0) - ind3(r0, r1, r2, r0), m1),
                (ind3(rt, r2, r0, r1) - ind3(r0, r2, r0, r1), m2),
            ]
        }
    };
    let mut xbar = x / s0.alpha;
    for (c, m) in coefs {
        xbar += m * c;
    }
    xbar * t.alpha
}

pub struct Deis {
    nodes: Vec<Node>,
    orders: Vec<usize>,
    clip: X0Clip,
}

impl Deis {
    pub fn new(order: usize, nodes: Vec<Node>, lower_order_final: bool) -> Self {
        let steps = nodes.len() - 1;
        Deis { orders: multistep_orders(order, steps, lower_order_final, 15, false), nodes, clip: X0Clip::OFF }
    }
}

impl Sampler for Deis {
    fn name(&self) -> &'static str {
        "deis"
    }
    fn nfe(&self) -> usize {
        self.nodes.len() - 1
    }
    fn labels(&self) -> Vec<f64> {
        self.nodes[..self.nodes.len() - 1].iter().map(|n| n.label).collect()
    }
    fn end_point(&self) -> EndPoint {
        EndPoint::AlphaBarZero
    }
    fn sample(&self, model: &Counted, x_t: Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let mut hist = History::new(3);
        let mut x = x_t;
        for (i, &o) in self.orders.iter().enumerate() {
            let (s, t) = (&self.nodes[i], &self.nodes[i + 1]);
            hist.push(*s, model.call(&x, s)?.eps_clipped(&self.clip));
            // The first order step is DDIM in its exponential form (diffusers `deis_first_order_update`).
            x = if o == 1 {
                let h = t.lambda - s.lambda;
                &x * (t.alpha / s.alpha) - hist.get(0).1 * (t.sigma * h.exp_m1())
            } else {
                deis_step(&x, &hist, t, o)
            };
        }
        Ok(x)
    }
}

pub static DEIS: SamplerDef = SamplerDef {
    name: "deis",
    params: &[
        order(2, "1 | 2 | 3 (ρAB order; 1 = DDIM)"),
        LOWER_ORDER_FINAL,
        T_END,
        STEPS_OFFSET,
        final_sigmas("sigma_min"),
        THRESHOLDING,
        DYNAMIC_THRESHOLDING_RATIO,
        SAMPLE_MAX_VALUE,
    ],
    skips: VP_SKIPS,
    default_skip: Skip::Linspace,
    nfe: "S",
    end_point: "ᾱ_0",
    reference: "Zhang & Chen 2023, DEIS (arXiv:2204.13902), log-ρ AB; diffusers DEISMultistepScheduler",
    predictions: ALL_PREDICTIONS,
    note: "",
    eta: None,
    variant: None,
    build: |a| {
        let rule = vp_rule(a, false)?;
        if ends_at_zero(rule) {
            return Err(a.error("final_sigmas=zero is not allowed (log ρ of σ=0; use sigma_min)"));
        }
        let d = Deis::new(a.usize("order")?, vp_grid(a.schedule, rule, a.steps)?, a.bool("lower_order_final")?);
        Ok(Box::new(Deis { clip: X0Clip::from_args(a)?, ..d }))
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rho_coefficients_integrate_the_basis() {
        // Partition of unity: the two order-2 basis integrals sum to ρ_t − ρ_s.
        let (rt, r0, r1) = (0.5, 2.0, 5.0);
        let c0 = ind2(rt, r0, r1) - ind2(r0, r0, r1);
        let c1 = ind2(rt, r1, r0) - ind2(r0, r1, r0);
        assert!((c0 + c1 - (rt - r0)).abs() < 1e-12);
        let r2 = 9.0;
        let d: f64 = [ind3(rt, r0, r1, r2) - ind3(r0, r0, r1, r2), ind3(rt, r1, r2, r0) - ind3(r0, r1, r2, r0), ind3(rt, r2, r0, r1) - ind3(r0, r2, r0, r1)].iter().sum();
        assert!((d - (rt - r0)).abs() < 1e-12);
        // Exact for f = log ρ: Σ c_k log ρ_k = ∫ log ρ dρ.
        let exact = (rt * rt.ln() - rt) - (r0 * r0.ln() - r0);
        assert!((c0 * r0.ln() + c1 * r1.ln() - exact).abs() < 1e-12);
    }
}
