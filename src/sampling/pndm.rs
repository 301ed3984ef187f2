//! Pseudo numerical methods (Liu et al. 2022, "PNDM"): F-PNDM, S-PNDM, the classical FON
//! baseline, and diffusers' PLMS variant, all built on the transfer φ (PNDM eq. 9), which is
//! the DDIM η = 0 step.
//!
//! Two index conventions exist (`alpha_index`):
//! - `repo` (luping-liu/PNDM `runner/method.py::transfer`): ᾱ is read at index ⌊t⌋+1 of the
//!   un-padded cumulative product, so label t uses ᾱ_{t+1} and the last step (t_next = −1)
//!   ends at ᾱ_0; midpoints are the float (t + t_next)/2, truncated for the ᾱ read. This
//!   produced the paper's tables and is the default for f-pndm, s-pndm and fon.
//! - `diffusers` (`PNDMScheduler`): ᾱ_t at label t; PRK midpoints t − ⌊r/2⌋ and t_next + ⌊r/2⌋
//!   with r = T // S; multistep steps go to t − r; a negative level is `final_alpha_cumprod`
//!   (ᾱ_0 unless alpha_to_one). Default for plms.
//!
//! Measured order (tests/it/samplers_a.rs, Gaussian oracle): the multistep extrapolates ε in
//! label time, while φ is exact only for the σ̃-weighted mean of ε over the step; the two
//! differ by O(h²) wherever σ̃ is not linear in the label. So on the DDPM linear schedule
//! F-PNDM/PLMS converge with order ≈ 2 (like S-PNDM); with labels uniform in σ̃ they reach
//! ≈ 3.5 (S = 50..200).
use super::ddim::{ALPHA_TO_ONE, STEPS_OFFSET};
use super::def::{Args, ParamDef, ParamKind, SamplerDef, DISCRETE_SKIPS};
use super::multistep::History;
use super::{ddim_step, raw_to_eps, Counted, EndPoint, Node, NoiseSource, Sampler};
use crate::models::Prediction;
use crate::timesteps::{Grid, GridConfig, PrevRule, Skip};
use crate::{BenchError, Result};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PndmMethod {
    /// 3 pseudo Runge–Kutta steps, then pseudo linear multistep of order 4 (PNDM eq. 12-13).
    FPndm,
    /// Pseudo improved Euler, then order-2 pseudo linear multistep.
    SPndm,
    /// Classical RK4 warm-up then AB4 on the unit-step DDIM increment (the paper's FON).
    Fon,
    /// diffusers `PNDMScheduler(skip_prk_steps=True)` (crowsonkb's PLMS for LDM): improved
    /// Euler, then Adams–Bashforth of orders 2, 3, 4.
    Plms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlphaIndex {
    Repo,
    Diffusers,
}

pub struct Pndm {
    method: PndmMethod,
    index: AlphaIndex,
    grid: Grid,
}

impl Pndm {
    /// `grid` must come from `pndm_grid` (repo: next-label transitions; diffusers: stride).
    pub fn new(method: PndmMethod, index: AlphaIndex, grid: Grid) -> Result<Self> {
        let name = method_name(method);
        let s = grid.labels.len();
        let min_steps = match method {
            PndmMethod::FPndm | PndmMethod::Fon => 4,
            PndmMethod::SPndm | PndmMethod::Plms => 2,
        };
        if s < min_steps {
            return Err(BenchError::user(format!(
                "sampler {name}: {s} timestep labels are too few (its warm-up needs at least {min_steps})"
            )));
        }
        if index == AlphaIndex::Repo {
            let top = grid.labels[0];
            if top + 1 >= grid.train_steps() {
                return Err(BenchError::user(format!(
                    "sampler {name}: alpha_index=repo reads ᾱ at label+1 and label {top} has none (T={}); \
                     use fewer steps, another skip, or alpha_index=diffusers",
                    grid.train_steps()
                )));
            }
        }
        Ok(Pndm { method, index, grid })
    }

    /// ᾱ as the convention reads it at a (possibly fractional, possibly −1) level.
    fn alpha(&self, level: f64) -> f64 {
        match self.index {
            // `alphas_cump[t.long() + 1]`: truncation toward zero, so −0.5 reads index 1.
            AlphaIndex::Repo => self.grid.schedule_alpha_bar((level.trunc() as i64 + 1) as usize).unwrap_or(f64::NAN),
            AlphaIndex::Diffusers => self.grid.alpha_bar(level as i64),
        }
    }

    /// PNDM eq. 9 (repo `transfer`, diffusers `_get_prev_sample`), equal to DDIM η = 0. `out` is
    /// a (combination of) raw model output(s), converted to ε at the transfer's start (x, from).
    fn transfer(&self, p: Prediction, x: &Tensor, from: f64, to: f64, out: &Tensor) -> Tensor {
        let a = self.alpha(from);
        let eps = raw_to_eps(p, out, x, &Node::from_alpha_bar(from, a));
        ddim_step(x, &eps, a, self.alpha(to), 0.0, None)
    }

    /// Unit-step increment the FON baseline integrates: φ(x, t → t−1, ε) − x (repo `gen_fon`).
    fn increment(&self, p: Prediction, x: &Tensor, t: f64, out: &Tensor) -> Tensor {
        self.transfer(p, x, t, t - 1.0, out) - x
    }

    /// The k-th transition the method integrates over: repo uses the label list, diffusers'
    /// PRK phase too (its multistep phase uses the stride, `self.grid.pairs`).
    fn rk_pair(&self, k: usize) -> (f64, f64) {
        match self.index {
            AlphaIndex::Repo => {
                let (t, n) = self.grid.pairs[k];
                (t as f64, n as f64)
            }
            AlphaIndex::Diffusers => (self.grid.labels[k] as f64, self.grid.labels[k + 1] as f64),
        }
    }

    /// (level the first half-step goes to, label of the two midpoint evaluations).
    fn midpoints(&self, t: f64, t_next: f64) -> (f64, f64) {
        match self.index {
            AlphaIndex::Repo => ((t + t_next) / 2.0, (t + t_next) / 2.0),
            AlphaIndex::Diffusers => {
                let h = (self.grid.stride / 2) as f64;
                (t - h, t_next + h)
            }
        }
    }

    /// PNDM eq. 13, pseudo RK4 (repo `runge_kutta`, diffusers `step_prk`): returns ε'.
    fn pseudo_runge_kutta(&self, model: &Counted, x: &Tensor, t: f64, t_next: f64, hist: &mut History) -> Result<Tensor> {
        let p = model.prediction();
        let (half, mid) = self.midpoints(t, t_next);
        let e1 = model.raw(x, t)?;
        let x2 = self.transfer(p, x, t, half, &e1);
        let e2 = model.raw(&x2, mid)?;
        let x3 = self.transfer(p, x, t, mid, &e2);
        let e3 = model.raw(&x3, mid)?;
        let x4 = self.transfer(p, x, t, t_next, &e3);
        let e4 = model.raw(&x4, t_next)?;
        let e = (&e1 + &e2 * 2.0 + &e3 * 2.0 + &e4) / 6.0;
        hist.push(e1);
        Ok(e)
    }

    /// Pseudo improved Euler (repo `improved_eular`; diffusers `step_plms` counters 0-1):
    /// returns the new x at the first step's target.
    fn pseudo_improved_euler(&self, model: &Counted, x: &Tensor, hist: &mut History) -> Result<Tensor> {
        let p = model.prediction();
        let e1 = model.raw(x, self.grid.labels[0] as f64)?;
        let (x2, l1, from, to) = match self.index {
            AlphaIndex::Repo => {
                let (t, n) = self.rk_pair(0);
                (self.transfer(p, x, t, n, &e1), n, t, n)
            }
            // diffusers: predictor to t − r, corrector from l1 + r to l1 (the same for leading).
            AlphaIndex::Diffusers => {
                let t = self.grid.labels[0] as f64;
                let l1 = self.grid.labels[1] as f64;
                let r = self.grid.stride as f64;
                (self.transfer(p, x, t, t - r, &e1), l1, l1 + r, l1)
            }
        };
        let e2 = model.raw(&x2, l1)?;
        let e = (&e1 + e2) / 2.0;
        hist.push(e1);
        Ok(self.transfer(p, x, from, to, &e))
    }

    /// FON warm-up: classical RK4 on the increment with step t − t_next (repo `gen_fon`; the
    /// repo evaluates every stage's increment at the step's start x and t, only ε moves).
    fn fon_runge_kutta(&self, model: &Counted, x: &Tensor, t: f64, t_next: f64, hist: &mut History) -> Result<Tensor> {
        let p = model.prediction();
        let h = t - t_next;
        let mid = (t + t_next) / 2.0;
        let d1 = self.increment(p, x, t, &model.raw(x, t)?);
        let d2 = self.increment(p, x, t, &model.raw(&(x + &d1 * (h / 2.0)), mid)?);
        let d3 = self.increment(p, x, t, &model.raw(&(x + &d2 * (h / 2.0)), mid)?);
        let d4 = self.increment(p, x, t, &model.raw(&(x + &d3 * h), t_next)?);
        let d = (&d1 + &d2 * 2.0 + &d3 * 2.0 + &d4) / 6.0;
        hist.push(d1);
        Ok(x + d * h)
    }

    fn max_order(&self) -> usize {
        match self.method {
            PndmMethod::SPndm => 2,
            _ => 4,
        }
    }

    /// Number of warm-up transitions before the multistep phase.
    fn warmup(&self) -> usize {
        match self.method {
            PndmMethod::FPndm | PndmMethod::Fon => 3,
            PndmMethod::SPndm | PndmMethod::Plms => 1,
        }
    }
}

fn method_name(m: PndmMethod) -> &'static str {
    match m {
        PndmMethod::FPndm => "f-pndm",
        PndmMethod::SPndm => "s-pndm",
        PndmMethod::Fon => "fon",
        PndmMethod::Plms => "plms",
    }
}

impl Sampler for Pndm {
    fn name(&self) -> &'static str {
        method_name(self.method)
    }
    fn nfe(&self) -> usize {
        let s = self.grid.pairs.len();
        match self.method {
            PndmMethod::FPndm | PndmMethod::Fon => s + 9,
            PndmMethod::SPndm | PndmMethod::Plms => s + 1,
        }
    }
    fn labels(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(self.nfe());
        for k in 0..self.warmup() {
            let (t, n) = self.rk_pair(k);
            match self.method {
                PndmMethod::FPndm => {
                    let (_, mid) = self.midpoints(t, n);
                    v.extend([t, mid, mid, n]);
                }
                PndmMethod::Fon => v.extend([t, (t + n) / 2.0, (t + n) / 2.0, n]),
                PndmMethod::SPndm | PndmMethod::Plms => v.extend([t, self.grid.labels[1] as f64]),
            }
        }
        v.extend(self.grid.pairs[self.warmup()..].iter().map(|&(t, _)| t as f64));
        v
    }
    fn end_point(&self) -> EndPoint {
        match self.index {
            AlphaIndex::Repo => EndPoint::AlphaBarZero,
            AlphaIndex::Diffusers if self.grid.ends_at_one() => EndPoint::AlphaBarOne,
            AlphaIndex::Diffusers => EndPoint::AlphaBarZero,
        }
    }
    fn sample(&self, model: &Counted, x_t: Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let p = model.prediction();
        let mut hist = History::new(4);
        let mut x = x_t;
        for k in 0..self.grid.pairs.len() {
            x = if k < self.warmup() {
                let (t, n) = self.rk_pair(k);
                match self.method {
                    PndmMethod::FPndm => {
                        let e = self.pseudo_runge_kutta(model, &x, t, n, &mut hist)?;
                        self.transfer(p, &x, t, n, &e)
                    }
                    PndmMethod::Fon => self.fon_runge_kutta(model, &x, t, n, &mut hist)?,
                    PndmMethod::SPndm | PndmMethod::Plms => self.pseudo_improved_euler(model, &x, &mut hist)?,
                }
            } else {
                let (t, prev) = self.grid.pairs[k];
                let (t, prev) = (t as f64, prev as f64);
                let e = model.raw(&x, t)?;
                if self.method == PndmMethod::Fon {
                    // repo `gen_fon`: AB4 on the increments, step t − t_next.
                    hist.push(self.increment(p, &x, t, &e));
                    &x + hist.adams_bashforth(4) * (t - prev)
                } else {
                    // PNDM eq. 12 (repo `gen_order_4`/`gen_order_2`, diffusers `step_plms`).
                    hist.push(e);
                    let e = hist.adams_bashforth(hist.len().min(self.max_order()));
                    self.transfer(p, &x, t, prev, &e)
                }
            };
        }
        Ok(x)
    }
}

/// The grid each convention walks: repo: `seq_next = [-1] + seq[:-1]`; diffusers: stride.
fn pndm_grid(a: &Args, index: AlphaIndex) -> Result<Grid> {
    let alpha_to_one = a.bool("alpha_to_one")?;
    if index == AlphaIndex::Repo && alpha_to_one {
        return Err(a.error("alpha_to_one applies to alpha_index=diffusers only"));
    }
    let prev = match index {
        AlphaIndex::Repo => PrevRule::NextLabel,
        AlphaIndex::Diffusers => PrevRule::Stride,
    };
    Grid::new(a.schedule, &GridConfig { steps: a.steps, skip: a.skip, steps_offset: a.usize("steps_offset")?, prev, alpha_to_one, sections: Vec::new() })
}

fn build(method: PndmMethod, a: &Args) -> Result<Box<dyn Sampler>> {
    let index = match a.str("alpha_index")? {
        "repo" => AlphaIndex::Repo,
        _ => AlphaIndex::Diffusers,
    };
    Ok(Box::new(Pndm::new(method, index, pndm_grid(a, index)?)?))
}

const fn alpha_index(default: &'static str) -> ParamDef {
    ParamDef {
        name: "alpha_index",
        kind: ParamKind::Choice { allowed: &["repo", "diffusers"], default },
        help: "repo: ᾱ[t+1], ends at ᾱ_0 (PNDM paper tables); diffusers: ᾱ[t] (PNDMScheduler)",
        diffusers: None,
    }
}
const ALPHA_TO_ONE_PNDM: ParamDef = ParamDef {
    kind: ParamKind::Bool { default: false },
    help: "alpha_index=diffusers only: end at ᾱ=1 instead of ᾱ_0",
    ..ALPHA_TO_ONE
};
const REPO_PARAMS: &[ParamDef] = &[alpha_index("repo"), STEPS_OFFSET, ALPHA_TO_ONE_PNDM];
const EPS_AND_V: &[Prediction] = &[Prediction::Epsilon, Prediction::VPrediction];
const V_NOTE: &str = "v_prediction: the combined model outputs are converted to ε at each transfer's start, as diffusers' PNDMScheduler does, not per model call";

pub static F_PNDM: SamplerDef = SamplerDef {
    name: "f-pndm",
    params: REPO_PARAMS,
    skips: DISCRETE_SKIPS,
    default_skip: Skip::Uniform,
    nfe: "S+9 (3 pseudo-RK4 steps of 4 NFE, then 1 per step)",
    end_point: "ᾱ_0 (repo index t+1 at t=−1)",
    reference: "Liu et al. 2022 eq. 9, 12, 13; luping-liu/PNDM runner/method.py gen_order_4; diffusers PNDMScheduler PRK (alpha_index=diffusers)",
    predictions: EPS_AND_V,
    note: V_NOTE,
    eta: None,
    variant: None,
    build: |a| build(PndmMethod::FPndm, a),
};

pub static S_PNDM: SamplerDef = SamplerDef {
    name: "s-pndm",
    nfe: "S+1",
    end_point: "ᾱ_0",
    reference: "Liu et al. 2022; luping-liu/PNDM runner/method.py gen_order_2 (pseudo improved Euler, then order-2 multistep)",
    build: |a| build(PndmMethod::SPndm, a),
    ..F_PNDM
};

pub static FON: SamplerDef = SamplerDef {
    name: "fon",
    nfe: "S+9",
    end_point: "ᾱ_0",
    reference: "Liu et al. 2022 (FON baseline); luping-liu/PNDM runner/method.py gen_fon (RK4 then AB4 on the unit DDIM increment)",
    build: |a| build(PndmMethod::Fon, a),
    ..F_PNDM
};

pub static PLMS: SamplerDef = SamplerDef {
    name: "plms",
    params: &[alpha_index("diffusers"), STEPS_OFFSET, ALPHA_TO_ONE_PNDM],
    default_skip: Skip::Leading,
    nfe: "S+1",
    end_point: "ᾱ_0 (final_alpha_cumprod; alpha_to_one=true: ᾱ=1)",
    reference: "diffusers PNDMScheduler(skip_prk_steps=True), after CompVis/latent-diffusion PLMS",
    build: |a| build(PndmMethod::Plms, a),
    ..F_PNDM
};

#[cfg(test)]
mod tests {
    use super::*;

    use crate::schedule::NoiseSchedule;

    fn sampler(name: &str, steps: usize, kv: &[(&str, &str)]) -> Result<Box<dyn Sampler>> {
        crate::sampling::build_from_text(name, kv, steps, &NoiseSchedule::ddpm_linear())
    }

    #[test]
    fn repo_index_reads_alpha_bar_at_t_plus_one_and_ends_at_alpha_bar_zero() {
        let s = NoiseSchedule::ddpm_linear();
        let cfg = GridConfig { steps: 10, skip: Skip::Uniform, steps_offset: 0, prev: PrevRule::NextLabel, alpha_to_one: false, sections: Vec::new() };
        let grid = Grid::new(&s, &cfg).unwrap();
        let p = Pndm::new(PndmMethod::FPndm, AlphaIndex::Repo, grid.clone()).unwrap();
        assert_eq!(p.alpha(900.0), s.alpha_bar(901));
        assert_eq!(p.alpha(-1.0), s.alpha_bar(0));
        // (t + t_next)/2 = −0.5 truncates to 0 → index 1, as `t.long() + 1` does.
        assert_eq!(p.alpha(-0.5), s.alpha_bar(1));
        assert_eq!(p.alpha(850.5), s.alpha_bar(851));
        assert_eq!(p.end_point(), EndPoint::AlphaBarZero);
        let d = Pndm::new(PndmMethod::FPndm, AlphaIndex::Diffusers, grid).unwrap();
        assert_eq!(d.alpha(900.0), s.alpha_bar(900));
    }

    #[test]
    fn nfe_formulas_and_labels() {
        let f = sampler("f-pndm", 10, &[]).unwrap();
        assert_eq!(f.nfe(), 19);
        assert_eq!(&f.labels()[..8], &[900.0, 850.0, 850.0, 800.0, 800.0, 750.0, 750.0, 700.0]);
        assert_eq!(f.labels().len(), 19);
        let p = sampler("plms", 10, &[]).unwrap();
        assert_eq!(p.nfe(), 11);
        assert_eq!(&p.labels()[..4], &[900.0, 800.0, 800.0, 700.0]);
        assert_eq!(sampler("s-pndm", 7, &[]).unwrap().nfe(), 9); // uniform, 7 ∤ 1000: 8 labels
        assert_eq!(sampler("fon", 20, &[]).unwrap().nfe(), 29);
    }

    #[test]
    fn repo_index_refuses_the_top_label_and_few_steps() {
        // uniform with S=333 visits label 999, which has no ᾱ[t+1].
        assert_eq!(sampler("f-pndm", 333, &[]).err().map(|e| e.exit_code()), Some(2));
        assert!(sampler("f-pndm", 333, &[("alpha_index", "diffusers")]).is_ok());
        assert_eq!(sampler("f-pndm", 3, &[]).err().map(|e| e.exit_code()), Some(2));
        assert_eq!(sampler("plms", 10, &[("alpha_index", "both")]).err().map(|e| e.exit_code()), Some(2));
    }
}
