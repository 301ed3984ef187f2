//! SA-Solver (Xue et al. 2023, arXiv:2309.05019): a stochastic Adams predictor–corrector on the
//! VP λ grid. The SDE with stochasticity τ(t) is integrated in closed form in its linear part; the
//! model term is a Lagrange polynomial in λ through the last model outputs, integrated against
//! the exponential weight exactly. The SA-Corrector reuses the model output at the predicted
//! point, so every step costs one NFE. Written against diffusers `SASolverScheduler`.
use super::continuous::{vp_grid, Node, VpRule};
use super::ddim::{DYNAMIC_THRESHOLDING_RATIO, SAMPLE_MAX_VALUE, STEPS_OFFSET, THRESHOLDING};
use super::def::{Args, ParamDef, ParamKind, SamplerDef, ALL_PREDICTIONS};
use super::dpm_solver::{vp_rule_for, DiffusersGrids, History, Integrand, LAMBDA_MIN_CLIPPED, LOWER_ORDER_FINAL, T_END};
use super::{Counted, EndPoint, NoiseSource, Sampler, X0Clip};
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

/// g_k(z) = ∫₀¹ e^{−zs} s^k ds for k = 0..=3: the exponentially weighted moments every SA-Solver
/// coefficient is built from. The power series is used where the closed-form recursion
/// g_k = (k·g_{k−1} − e^{−z})/z would cancel (|z| small); the recursion where the series would.
fn exp_moments(z: f64) -> [f64; 4] {
    let mut g = [0.0; 4];
    if z.abs() < 2.0 {
        // g_k = Σ_n (−z)^n / (n! (n + k + 1)); at |z| < 2 forty terms are below 1e-30.
        for (k, gk) in g.iter_mut().enumerate() {
            let mut term = 1.0;
            for n in 0..40 {
                *gk += term / (n + k + 1) as f64;
                term *= -z / (n + 1) as f64;
            }
        }
    } else {
        let e = (-z).exp();
        g[0] = -(-z).exp_m1() / z;
        for k in 1..4 {
            g[k] = (k as f64 * g[k - 1] - e) / z;
        }
    }
    g
}

/// Coefficients (constant term first) of the Lagrange basis polynomials ℓ_i(s) through the nodes
/// `s` (at most 4): ℓ_i(s_j) = δ_ij.
fn lagrange_basis(s: &[f64]) -> Vec<[f64; 4]> {
    (0..s.len())
        .map(|i| {
            let mut p = [0.0; 4];
            p[0] = 1.0;
            let mut denom = 1.0;
            for (_, &sj) in s.iter().enumerate().filter(|&(j, _)| j != i) {
                // p ← p·(s − s_j)
                for k in (0..4).rev() {
                    p[k] = -sj * p[k] + if k > 0 { p[k - 1] } else { 0.0 };
                }
                denom *= s[i] - sj;
            }
            p.map(|c| c / denom)
        })
        .collect()
}

/// ∫_{λ_s}^{λ_t} e^{κ(λ−λ_t)} ℓ_i(λ) dλ for the Lagrange basis through `lambdas` (newest first),
/// with h = λ_t − λ_s: in s = (λ_t − λ)/h it is h Σ_k p_ik g_k(κh). These are diffusers'
/// `get_coefficients_fn` (monomial Lagrange coefficients times `get_coefficients_exponential_*`)
/// divided by e^{κλ_t}, computed without their cancellation.
fn lagrange_integrals(kappa: f64, lambda_s: f64, lambda_t: f64, lambdas: &[f64]) -> Vec<f64> {
    let h = lambda_t - lambda_s;
    if h == 0.0 {
        return vec![0.0; lambdas.len()];
    }
    let s: Vec<f64> = lambdas.iter().map(|l| (lambda_t - l) / h).collect();
    let g = exp_moments(kappa * h);
    lagrange_basis(&s).iter().map(|p| h * p.iter().zip(&g).map(|(c, gk)| c * gk).sum::<f64>()).collect()
}

/// diffusers' order-2 adjustment of the data-prediction weights ("similar to UniPC"; the
/// `order == 2` branches of both updates): h²·(½ − (κh − 1 + e^{−κh})/(κh)²)/(λ_0 − λ_1), added to
/// the newest point's weight and taken from the other's. With (κh − 1 + e^{−κh})/(κh)² = g_0 − g_1
/// the bracket keeps its precision as h → 0.
fn order2_adjustment(kappa: f64, h: f64, lambda_0: f64, lambda_1: f64) -> f64 {
    let g = exp_moments(kappa * h);
    h * h * (0.5 - (g[0] - g[1])) / (lambda_0 - lambda_1)
}

/// One SA-Solver update from s to t (the SA-Predictor with the history, diffusers
/// `stochastic_adams_bashforth_update`; the SA-Corrector with the new model output first,
/// `stochastic_adams_moulton_update`), `points` = (λ_j, m_j) newest first:
/// data:  x_t = e^{−τ²h}(σ_t/σ_s) x_s + (1+τ²) α_t Σ_j c_j m_j + σ_t √(1 − e^{−2τ²h}) ξ, κ = 1+τ²;
/// noise: x_t = (α_t/α_s) x_s − (1+τ²) σ_t Σ_j c_j m_j + τ σ_t √(e^{2h} − 1) ξ,          κ = −1;
/// c_j = ∫_{λ_s}^{λ_t} e^{κ(λ−λ_t)} ℓ_j(λ) dλ (plus the order-2 adjustment for data).
fn sa_update(pred: Integrand, x_s: &Tensor, s: &Node, t: &Node, points: &[(f64, &Tensor)], tau: f64, xi: Option<&Tensor>) -> Tensor {
    let h = t.lambda - s.lambda;
    let tau2 = tau * tau;
    let kappa = match pred {
        Integrand::Data => 1.0 + tau2,
        Integrand::Noise => -1.0,
    };
    let lambdas: Vec<f64> = points.iter().map(|(l, _)| *l).collect();
    let mut c = lagrange_integrals(kappa, s.lambda, t.lambda, &lambdas);
    if pred == Integrand::Data && points.len() == 2 && h != 0.0 {
        let d = order2_adjustment(kappa, h, lambdas[0], lambdas[1]);
        c[0] += d;
        c[1] -= d;
    }
    let (mut x, gain, noise_scale) = match pred {
        Integrand::Data => (x_s * ((-tau2 * h).exp() * t.sigma / s.sigma), (1.0 + tau2) * t.alpha, t.sigma * (-(-2.0 * tau2 * h).exp_m1()).sqrt()),
        Integrand::Noise => (x_s * (t.alpha / s.alpha), -(1.0 + tau2) * t.sigma, tau * t.sigma * (2.0 * h).exp_m1().sqrt()),
    };
    for (cj, (_, m)) in c.iter().zip(points) {
        x += *m * (gain * cj);
    }
    match xi {
        Some(xi) if noise_scale != 0.0 => x + xi * noise_scale,
        _ => x,
    }
}

/// Predictor order of each step: warm-up min(P, i+1); `lower_order_final` min(P, S−i)
/// (diffusers `step`: `this_predictor_order`).
fn predictor_orders(p: usize, steps: usize, lower_order_final: bool) -> Vec<usize> {
    (0..steps).map(|i| if lower_order_final { p.min(i + 1).min(steps - i) } else { p.min(i + 1) }).collect()
}

/// Order of the corrector that step i+1 applies to step i's prediction: warm-up min(C, i+2)
/// (the new output plus i+1 old ones); `lower_order_final` min(C, S−i+1) (diffusers
/// `this_corrector_order`, set at step i).
fn corrector_orders(c: usize, steps: usize, lower_order_final: bool) -> Vec<usize> {
    (0..steps).map(|i| if lower_order_final { c.min(i + 2).min(steps - i + 1) } else { c.min(i + 2) }).collect()
}

pub struct SaSolver {
    pred: Integrand,
    clip: X0Clip,
    /// S+1 nodes; the model is called at the first S.
    nodes: Vec<Node>,
    predictor: Vec<usize>,
    corrector: Vec<usize>,
    /// τ of each step (τ(label of the step's start), as diffusers' `tau_func(timestep)`).
    tau: Vec<f64>,
}

impl SaSolver {
    pub fn new(pred: Integrand, nodes: Vec<Node>, predictor_order: usize, corrector_order: usize, lower_order_final: bool, tau: impl Fn(f64) -> f64) -> Self {
        let steps = nodes.len() - 1;
        SaSolver {
            pred,
            clip: X0Clip::OFF,
            predictor: predictor_orders(predictor_order, steps, lower_order_final),
            corrector: corrector_orders(corrector_order, steps, lower_order_final),
            tau: nodes[..steps].iter().map(|n| tau(n.label)).collect(),
            nodes,
        }
    }
    fn stochastic(&self) -> bool {
        self.tau.iter().any(|&t| t > 0.0)
    }
}

impl Sampler for SaSolver {
    fn name(&self) -> &'static str {
        "sa_solver"
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
    fn sample(&self, model: &Counted, x_t: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let pred = self.pred;
        let keep = self.predictor.iter().chain(&self.corrector).copied().max().unwrap_or(1);
        let mut hist = History::new(keep);
        let mut x = x_t;
        // The previous step's start and noise: the corrector redoes that step with the new output.
        let mut prev: Option<(Tensor, Option<Tensor>)> = None;
        for i in 0..self.predictor.len() {
            let (s, t) = (&self.nodes[i], &self.nodes[i + 1]);
            let m = pred.of(&model.call(&x, s)?, &self.clip);
            if let Some((x_prev, xi_prev)) = &prev {
                let mut points = vec![(s.lambda, &m)];
                points.extend((0..self.corrector[i - 1] - 1).map(|k| {
                    let (n, mk) = hist.get(k);
                    (n.lambda, mk)
                }));
                x = sa_update(pred, x_prev, &self.nodes[i - 1], s, &points, self.tau[i - 1], xi_prev.as_ref());
            }
            hist.push(*s, m);
            // One draw per step whenever τ is ever positive: diffusers' draw order.
            let xi = self.stochastic().then(|| noise.noise(i, &x));
            let points: Vec<(f64, &Tensor)> = (0..self.predictor[i]).map(|k| (hist.get(k).0.lambda, hist.get(k).1)).collect();
            let next = sa_update(pred, &x, s, t, &points, self.tau[i], xi.as_ref());
            prev = Some((x, xi));
            x = next;
        }
        Ok(x)
    }
}

const fn order_param(name: &'static str, help: &'static str) -> ParamDef {
    ParamDef { name, kind: ParamKind::Int { min: 1, max: 4, default: 2 }, help, diffusers: Some(name) }
}

/// diffusers' grids for SASolverScheduler: karras labels always rounded, exponential/beta offered,
/// `lambda_min_clipped` read.
const GRIDS: DiffusersGrids = DiffusersGrids { truncate_cosine: false, more_levels: true, lambda_min_clipped: true };

fn build(a: &Args) -> Result<Box<dyn Sampler>> {
    let pred = if a.str("predict")? == "noise" { Integrand::Noise } else { Integrand::Data };
    let clip = X0Clip::from_args(a)?;
    if pred == Integrand::Noise && clip.thresholding {
        // diffusers' noise_prediction branch thresholds with `alpha_t[timestep]` of a timestep it is never given.
        return Err(a.error("thresholding needs predict=data (diffusers' noise_prediction thresholding fails)"));
    }
    let (tau, lo, hi) = (a.f64("tau")?, a.f64("tau_t_min")?, a.f64("tau_t_max")?);
    let rule = vp_rule_for(a, GRIDS)?;
    let mut nodes = vp_grid(a.schedule, rule, a.steps)?;
    if let VpRule::DiffusersLevels { .. } = rule {
        // diffusers repeats the last level (`sigmas[-1:]`): the last step has h = 0 and only
        // feeds the corrector of the step before.
        let last = nodes[a.steps - 1];
        nodes[a.steps] = last;
    }
    let s = SaSolver::new(pred, nodes, a.usize("predictor_order")?, a.usize("corrector_order")?, a.bool("lower_order_final")?, |label| {
        if (lo..=hi).contains(&label) {
            tau
        } else {
            0.0
        }
    });
    Ok(Box::new(SaSolver { clip, ..s }))
}

pub const SA_SKIPS: &[Skip] =
    &[Skip::Linspace, Skip::Leading, Skip::Trailing, Skip::Karras, Skip::Exponential, Skip::Beta, Skip::Logsnr, Skip::TimeUniform, Skip::TimeQuadratic];

pub static SA_SOLVER: SamplerDef = SamplerDef {
    name: "sa_solver",
    params: &[
        order_param("predictor_order", "1 | 2 | 3 | 4 (SA-Predictor: Adams–Bashforth through the last outputs)"),
        order_param("corrector_order", "1 | 2 | 3 | 4 (SA-Corrector: Adams–Moulton with the new output, no extra NFE)"),
        ParamDef {
            name: "predict",
            kind: ParamKind::Choice { allowed: &["data", "noise"], default: "data" },
            help: "data (x̂0; diffusers algorithm_type=data_prediction) | noise (ε̂; noise_prediction)",
            diffusers: None,
        },
        ParamDef {
            name: "tau",
            kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 1.0 },
            help: "stochasticity τ at labels in [tau_t_min, tau_t_max] (τ = 0 elsewhere; diffusers' default tau_func is 1 on [200, 800]); 0 = the deterministic ODE solver",
            diffusers: None,
        },
        ParamDef {
            name: "tau_t_min",
            kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 200.0 },
            help: "lowest model label with τ > 0 (inclusive)",
            diffusers: None,
        },
        ParamDef {
            name: "tau_t_max",
            kind: ParamKind::Float { min: 0.0, max: f64::INFINITY, default: 800.0 },
            help: "highest model label with τ > 0 (inclusive)",
            diffusers: None,
        },
        ParamDef { help: "last steps use predictor order min(P, S−i) and corrector order min(C, S−i+1) (no step threshold, as diffusers)", ..LOWER_ORDER_FINAL },
        T_END,
        STEPS_OFFSET,
        LAMBDA_MIN_CLIPPED,
        THRESHOLDING,
        DYNAMIC_THRESHOLDING_RATIO,
        SAMPLE_MAX_VALUE,
    ],
    skips: SA_SKIPS,
    default_skip: Skip::Linspace,
    nfe: "S (the corrector reuses the next step's model output)",
    end_point: "ᾱ_0 (σ_min; karras/exponential/beta: their last level, repeated as diffusers does)",
    reference: "Xue et al. 2023, SA-Solver (arXiv:2309.05019); diffusers SASolverScheduler",
    predictions: ALL_PREDICTIONS,
    note: "skip logsnr | time_uniform | time_quadratic are the DPM-Solver repo's continuous grids (not diffusers'); τ=0 is the deterministic ODE solver; its order on the exact ODE (logsnr grid, 20–320 steps), predictor/corrector orders P/C: 0.91 (P1 C1, 40–640), 2.29 (P2 C2), 2.72 (P3 C3), 3.23 (P4 C4), 3.74 (P3 C3 noise), 3.05 (P3 C3, lower_order_final=false): lower_order_final's uncorrected first-order last step caps it at 2 in the limit",
    eta: None,
    variant: Some("predict"),
    build,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// diffusers' monomial form: Σ_j L_ij · ∫ e^{κλ} λ^{n−1−j} dλ / e^{κλ_t}, by composite Simpson.
    fn simpson(kappa: f64, ls: f64, lt: f64, lambdas: &[f64], i: usize) -> f64 {
        let n = 20_000;
        let f = |l: f64| {
            let li: f64 = lambdas.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &lj)| (l - lj) / (lambdas[i] - lj)).product();
            (kappa * (l - lt)).exp() * li
        };
        let dx = (lt - ls) / n as f64;
        (0..=n).map(|k| f(ls + k as f64 * dx) * if k == 0 || k == n { 1.0 } else if k % 2 == 1 { 4.0 } else { 2.0 }).sum::<f64>() * dx / 3.0
    }

    #[test]
    fn lagrange_integrals_match_quadrature() {
        for kappa in [1.0, 2.0, 1.25, -1.0] {
            for (ls, lt, hist) in [(-2.0, -1.5, vec![-2.6, -3.1, -3.5]), (0.5, 3.7, vec![-1.0, -2.0, -4.5]), (-6.0, -5.99, vec![-6.02, -6.03, -6.05])] {
                for order in 1..=4 {
                    // predictor points: s, then the history
                    let lambdas: Vec<f64> = std::iter::once(ls).chain(hist.iter().copied()).take(order).collect();
                    let got = lagrange_integrals(kappa, ls, lt, &lambdas);
                    for (i, g) in got.iter().enumerate() {
                        let want = simpson(kappa, ls, lt, &lambdas, i);
                        assert!((g - want).abs() <= 1e-10 * want.abs().max(1e-3), "κ {kappa} [{ls},{lt}] order {order} i {i}: {g} vs {want}");
                    }
                    // corrector points: t, s, history
                    let lambdas: Vec<f64> = [lt, ls].into_iter().chain(hist.iter().copied()).take(order).collect();
                    let got = lagrange_integrals(kappa, ls, lt, &lambdas);
                    for (i, g) in got.iter().enumerate() {
                        let want = simpson(kappa, ls, lt, &lambdas, i);
                        assert!((g - want).abs() <= 1e-10 * want.abs().max(1e-3), "corrector κ {kappa} order {order} i {i}: {g} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn exp_moments_agree_across_the_series_and_recursion_switch() {
        for z in [-2.0f64, 2.0] {
            let a = exp_moments(z * (1.0 - 1e-12));
            let b = exp_moments(z * (1.0 + 1e-12));
            for k in 0..4 {
                assert!((a[k] - b[k]).abs() < 1e-11 * a[k].abs(), "z {z} k {k}: {} vs {}", a[k], b[k]);
            }
        }
        // g_k(0) = 1/(k+1)
        assert_eq!(exp_moments(0.0), [1.0, 0.5, 1.0 / 3.0, 0.25]);
    }

    #[test]
    fn order2_adjustment_is_diffusers_closed_form() {
        // diffusers: h²/2 − (κh − 1 + e^{−κh})/κ², over λ_0 − λ_1.
        for (kappa, h) in [(1.0f64, 0.7f64), (2.0, 0.3), (1.5, 2.5)] {
            let want = (h * h / 2.0 - (kappa * h - 1.0 + (-kappa * h).exp()) / (kappa * kappa)) / 0.4;
            let got = order2_adjustment(kappa, h, 1.0, 0.6);
            assert!((got - want).abs() < 1e-14 * want.abs().max(1.0), "{got} vs {want}");
        }
    }

    #[test]
    fn refusals_are_one_line_user_errors() {
        use crate::spec::ParamValue;
        let s = crate::schedule::NoiseSchedule::ddpm_linear();
        let d = &SA_SOLVER;
        let err = |kv: &[(&str, ParamValue)], skip: Skip| {
            let mut p = d.defaults();
            for (k, v) in kv {
                p.insert(k.to_string(), v.clone());
            }
            let e = d.build(&p, skip, 10, &s).err().expect("refused");
            (e.exit_code(), e.to_string())
        };
        let noise = ("predict", ParamValue::Str("noise".into()));
        assert_eq!(
            err(&[noise, ("thresholding", ParamValue::Bool(true))], Skip::Linspace),
            (2, "sampler sa_solver: thresholding needs predict=data (diffusers' noise_prediction thresholding fails)".to_string())
        );
        assert_eq!(
            err(&[("lambda_min_clipped", ParamValue::Float(-3.0))], Skip::Logsnr),
            (2, "sampler sa_solver: lambda_min_clipped applies to diffusers' grids (skip linspace, leading, trailing), not skip logsnr".to_string())
        );
        let z = s.rescaled_zero_terminal_snr();
        assert!(d.build(&d.defaults(), Skip::Trailing, 10, &z).err().map(|e| e.to_string()).unwrap_or_default().contains("zero terminal SNR"));
    }

    #[test]
    fn draws_once_per_step_when_stochastic_and_never_at_tau_zero() {
        use crate::models::oracle::GaussianOracle;
        use crate::models::Prediction;
        struct Count(usize);
        impl NoiseSource for Count {
            fn noise(&mut self, _step: usize, like: &Tensor) -> Tensor {
                self.0 += 1;
                like.zeros_like()
            }
        }
        let s = crate::schedule::NoiseSchedule::ddpm_linear();
        let opts = (tch::Kind::Double, tch::Device::Cpu);
        let oracle = GaussianOracle::new(s.clone(), Tensor::zeros([1, 2, 2], opts), Tensor::ones([1, 2, 2], opts));
        for (tau, draws) in [("1", 7), ("0", 0)] {
            let sm = super::super::build_from_text("sa_solver", &[("tau", tau)], 7, &s).unwrap();
            let mut n = Count(0);
            let _ = sm.sample(&Counted::new(&oracle, Prediction::Epsilon), Tensor::ones([1, 1, 2, 2], opts), &mut n).unwrap();
            assert_eq!(n.0, draws, "tau {tau}");
        }
    }

    #[test]
    fn orders_warm_up_and_lower_at_the_end() {
        assert_eq!(predictor_orders(3, 6, true), vec![1, 2, 3, 3, 2, 1]);
        assert_eq!(predictor_orders(4, 6, false), vec![1, 2, 3, 4, 4, 4]);
        // corrector i is applied at step i+1: warm-up allows i+2 points.
        assert_eq!(corrector_orders(4, 6, true), vec![2, 3, 4, 4, 3, 2]);
        assert_eq!(corrector_orders(1, 4, true), vec![1, 1, 1, 1]);
    }
}
