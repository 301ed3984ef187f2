//! Improved PNDM on σ-space models (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with
//! Exponential Integrator" §4.1; as zju-pi/diff-sampler `solvers.py` defines it): Adams–Bashforth
//! steps of the probability-flow ODE dx/dσ = d = (x − D(x; σ))/σ over EDM's polynomial σ grid,
//! warming up with orders 1, 2, 3 and ending at σ_min.
//!
//! `ipndm` uses the equal-step weights on the unequal grid; `ipndm_v` weights each step by the
//! actual step sizes, with diff-sampler's order-3 and order-4 formulas exactly as written there
//! (they are not the exact variable-step Adams–Bashforth weights: with equal steps its order 4
//! gives (57, −65, 43, −11)/24, not AB4's (55, −59, 37, −9)/24, and on unequal steps its weights
//! do not sum to 1).
use super::def::{Args, ParamDef, ParamKind, SamplerDef};
use super::multistep::History;
use super::{Counted, EndPoint, NoiseSource, Sampler};
use super::edm::{clamp_to_model, sigma_range, RHO, SIGMA_MAX, SIGMA_MIN};
use crate::models::edm::sampler::edm_sigmas;
use crate::models::Prediction;
use crate::timesteps::Skip;
use crate::Result;
use tch::Tensor;

pub struct Ipndm {
    variable: bool,
    max_order: usize,
    steps: usize,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
    /// Analytical first step: d = x/√(1+σ²) instead of the first model call.
    afs: bool,
    /// One more call at σ_min, returning D(x; σ_min).
    denoise_to_zero: bool,
}

/// diff-sampler `ipndm_v_sampler`'s weights, newest first; `h[k]` is the step k steps back
/// (h[0] = σ_{i+1} − σ_i, h[1] = σ_i − σ_{i−1}, …), written in the reference's operation order.
fn variable_weights(order: usize, h: &[f64]) -> Vec<f64> {
    let (hn, hn1) = (h[0], h.get(1).copied().unwrap_or(f64::NAN));
    let c1 = (2.0 + hn / hn1) / 2.0;
    let c2 = -(hn / hn1) / 2.0;
    match order {
        1 => vec![1.0],
        2 => vec![c1, c2],
        _ => {
            let hn2 = h[2];
            let temp1 = (1.0 - hn / (3.0 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2))) / 2.0;
            if order == 3 {
                return vec![c1 + temp1, c2 - (1.0 + hn1 / hn2) * temp1, temp1 * hn1 / hn2];
            }
            let hn3 = h[3];
            let temp2 = ((1.0 - hn / (3.0 * (hn + hn1))) / 2.0 + (1.0 - hn / (2.0 * (hn + hn1))) * hn / (6.0 * (hn + hn1 + hn2)))
                * (hn * (hn + hn1) * (hn + hn1 + hn2))
                / (hn1 * (hn1 + hn2) * (hn1 + hn2 + hn3));
            let r = hn1 * (hn1 + hn2) / (hn2 * (hn2 + hn3));
            vec![
                c1 + temp1 + temp2,
                c2 - (1.0 + hn1 / hn2) * temp1 - (1.0 + hn1 / hn2 + r) * temp2,
                temp1 * hn1 / hn2 + (hn1 / hn2 + r * (1.0 + hn2 / hn3)) * temp2,
                -temp2 * r * hn1 / hn2,
            ]
        }
    }
}

impl Ipndm {
    /// The S+1 levels from σ_max to σ_min (EDM eq. 5; diff-sampler `get_schedule('polynomial')`).
    fn grid(&self, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
        Vec::<f64>::try_from(edm_sigmas(self.steps + 1, sigma_min, sigma_max, self.rho)).unwrap_or_default()
    }
}

impl Sampler for Ipndm {
    fn name(&self) -> &'static str {
        if self.variable {
            "ipndm_v"
        } else {
            "ipndm"
        }
    }
    fn nfe(&self) -> usize {
        self.steps - usize::from(self.afs) + usize::from(self.denoise_to_zero)
    }
    /// The σ of every call, before the model's σ range clamps the grid's ends.
    fn labels(&self) -> Vec<f64> {
        let g = self.grid(self.sigma_min, self.sigma_max);
        let first = usize::from(self.afs);
        let mut v = g[first..self.steps].to_vec();
        if self.denoise_to_zero {
            v.push(g[self.steps]);
        }
        v
    }
    fn end_point(&self) -> EndPoint {
        if self.denoise_to_zero {
            EndPoint::SigmaZero
        } else {
            EndPoint::SigmaMin
        }
    }
    fn sample(&self, model: &Counted, z: Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let (lo, hi) = clamp_to_model(model, self.sigma_min, self.sigma_max);
        let t = self.grid(lo, hi);
        let mut x = z * t[0];
        let mut history = History::new(self.max_order);
        for i in 0..self.steps {
            let (s, next) = (t[i], t[i + 1]);
            let d = if self.afs && i == 0 { &x / (1.0 + s * s).sqrt() } else { (&x - model.raw(&x, s)?) / s };
            history.push(d);
            let order = self.max_order.min(i + 1);
            let combined = if self.variable {
                let h: Vec<f64> = (0..order).map(|k| t[i + 1 - k] - t[i - k]).collect();
                history.weighted(&variable_weights(order, &h))
            } else {
                history.adams_bashforth(order)
            };
            // diff-sampler: x_{i+1} = x_i + (σ_{i+1} − σ_i)·Σ_k c_k d_{i−k}.
            x = &x + combined * (next - s);
        }
        if self.denoise_to_zero {
            x = model.raw(&x, t[self.steps])?;
        }
        Ok(x)
    }
}

fn build(a: &Args, variable: bool) -> Result<Box<dyn Sampler>> {
    let (sigma_min, sigma_max) = sigma_range(a)?;
    let afs = a.bool("afs")?;
    if afs && a.steps < 2 {
        return Err(a.error("afs=true replaces the first of the steps' model calls: needs steps ≥ 2"));
    }
    Ok(Box::new(Ipndm {
        variable,
        max_order: a.usize("max_order")?,
        steps: a.steps,
        sigma_min,
        sigma_max,
        rho: a.f64("rho")?,
        afs,
        denoise_to_zero: a.bool("denoise_to_zero")?,
    }))
}

const fn flag(name: &'static str, help: &'static str) -> ParamDef {
    ParamDef { name, kind: ParamKind::Bool { default: false }, help, diffusers: None }
}

pub static IPNDM: SamplerDef = SamplerDef {
    name: "ipndm",
    params: &[
        ParamDef { name: "max_order", kind: ParamKind::Int { min: 1, max: 4, default: 4 }, help: "highest Adams–Bashforth order (the first steps use 1, 2, 3)", diffusers: None },
        SIGMA_MIN,
        SIGMA_MAX,
        RHO,
        flag("afs", "analytical first step: d = x/√(1+σ_max²) instead of the first model call"),
        flag("denoise_to_zero", "one more call at σ_min, returning D(x; σ_min)"),
    ],
    skips: &[Skip::Edm],
    default_skip: Skip::Edm,
    nfe: "S (−1 with afs, +1 with denoise_to_zero)",
    end_point: "σ_min (σ=0 with denoise_to_zero)",
    reference: "Zhang & Chen 2023 §4.1; zju-pi/diff-sampler solvers.py ipndm_sampler",
    predictions: &[Prediction::Sample],
    note: "steps = S intervals of S+1 levels (diff-sampler's num_steps = S+1); fixed AB weights on EDM's smooth grid: order 2 on the exact ODE (measured 2.04 over 40–320 steps; max_order 1: 0.99)",
    eta: None,
    variant: Some("max_order"),
    build: |a| build(a, false),
};

pub static IPNDM_V: SamplerDef = SamplerDef {
    name: "ipndm_v",
    reference: "Zhang & Chen 2023 §4.1 (variable steps); zju-pi/diff-sampler solvers.py ipndm_v_sampler",
    note: "steps = S intervals of S+1 levels (diff-sampler's num_steps = S+1); order-3/4 weights as diff-sampler writes them (not exact variable-step AB); measured order on the exact ODE over 40–320 steps: 1.93, 2.52, 0.87 for max_order 2, 3, 4 (prefer 3)",
    build: |a| build(a, true),
    ..IPNDM
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_weights_on_equal_steps() {
        use crate::sampling::multistep::ADAMS_BASHFORTH;
        let h = [-1.0, -1.0, -1.0, -1.0];
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-14);
        // Orders 2 and 3 reduce to Adams–Bashforth; order 4 is diff-sampler's own (57, −65, 43, −11)/24.
        assert!(close(&variable_weights(2, &h), ADAMS_BASHFORTH[1]));
        assert!(close(&variable_weights(3, &h), ADAMS_BASHFORTH[2]));
        assert!(close(&variable_weights(4, &h), &[57.0 / 24.0, -65.0 / 24.0, 43.0 / 24.0, -11.0 / 24.0]));
        // Orders 1–3 sum to 1 on any grid (they are consistent); diff-sampler's order 4 does not
        // on unequal steps, which is why it converges slowest.
        let g = [-0.3, -0.7, -1.6, -3.1];
        for order in 1..=3 {
            assert!((variable_weights(order, &g).iter().sum::<f64>() - 1.0).abs() < 1e-13, "order {order}");
        }
        assert!((variable_weights(4, &g).iter().sum::<f64>() - 1.000_704_326_991_821).abs() < 1e-12);
    }
}
