//! The preconditionings of Karras et al. 2022 (EDM), Table 1, as NVlabs/edm `VPPrecond`,
//! `VEPrecond`, `iDDPMPrecond` and `EDMPrecond` compute them:
//! D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)).
//!
//! Coefficients are computed in fp32 with EDM's expressions in EDM's order (e.g. `a / t` as
//! `t.reciprocal() * a`, which is how torch evaluates a Python number divided by a tensor), so
//! they match EDM's bit for bit on the same hardware.
use tch::{Kind, Tensor};

/// Which preconditioning, with its constants (attributes of the pickled object).
#[derive(Debug)]
pub enum Preconditioning {
    /// Variance preserving (Song et al. 2021): σ(t) = √(exp(½β_d t² + β_min t) − 1), c_noise = (M−1)·t(σ).
    Vp { beta_d: f64, beta_min: f64, m: i64, epsilon_t: f64 },
    /// Variance exploding (Song et al. 2021): c_noise = ln(½σ).
    Ve,
    /// Improved DDPM (Nichol & Dhariwal 2021): σ snaps to the discrete levels `u` (M+1, fp32),
    /// c_noise = M−1−j for the nearest level u_j.
    Iddpm { m: i64, c_1: f64, c_2: f64, u: Tensor },
    /// EDM: c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = ¼ln σ.
    Edm { sigma_data: f64 },
}

/// The four coefficients, each shaped like the σ they were computed from (fp32).
#[derive(Debug)]
pub struct Coefficients {
    pub c_skip: Tensor,
    pub c_out: Tensor,
    pub c_in: Tensor,
    pub c_noise: Tensor,
}

impl Preconditioning {
    /// The class name EDM gives it.
    pub fn class_name(&self) -> &'static str {
        match self {
            Preconditioning::Vp { .. } => "VPPrecond",
            Preconditioning::Ve => "VEPrecond",
            Preconditioning::Iddpm { .. } => "iDDPMPrecond",
            Preconditioning::Edm { .. } => "EDMPrecond",
        }
    }

    /// VP's t(σ), the inverse of σ(t) (`VPPrecond.sigma_inv`).
    fn vp_sigma_inv(beta_d: f64, beta_min: f64, sigma: &Tensor) -> Tensor {
        let log = (sigma.square() + 1.0).log();
        ((log * (2.0 * beta_d) + beta_min.powi(2)).sqrt() - beta_min) / beta_d
    }

    /// c_skip, c_out, c_in, c_noise at `sigma` (any shape; computed in fp32 like EDM).
    pub fn coefficients(&self, sigma: &Tensor) -> Coefficients {
        let sigma = sigma.to_kind(Kind::Float);
        let one = sigma.ones_like();
        // 1/√(σ²+1) as torch evaluates `1 / (sigma ** 2 + 1).sqrt()`.
        let c_in_unit = || (sigma.square() + 1.0).sqrt().reciprocal();
        match self {
            Preconditioning::Vp { beta_d, beta_min, m, .. } => Coefficients {
                c_skip: one,
                c_out: -&sigma,
                c_in: c_in_unit(),
                c_noise: Self::vp_sigma_inv(*beta_d, *beta_min, &sigma) * (m - 1),
            },
            Preconditioning::Ve => Coefficients {
                c_skip: one.shallow_clone(),
                c_out: sigma.shallow_clone(),
                c_in: one,
                c_noise: (&sigma * 0.5).log(),
            },
            Preconditioning::Iddpm { m, .. } => Coefficients {
                c_skip: one,
                c_out: -&sigma,
                c_in: c_in_unit(),
                c_noise: self.level_index(&sigma).to_kind(Kind::Float).neg() + (m - 1),
            },
            Preconditioning::Edm { sigma_data } => {
                let sd2 = sigma_data.powi(2);
                let s2 = sigma.square();
                Coefficients {
                    c_skip: (&s2 + sd2).reciprocal() * sd2,
                    c_out: (&sigma * *sigma_data) / (&s2 + sd2).sqrt(),
                    c_in: (&s2 + sd2).sqrt().reciprocal(),
                    c_noise: sigma.log() / 4,
                }
            }
        }
    }

    /// Index of the nearest level u_j for each σ (iDDPM only; others: zeros). EDM finds it with
    /// `torch.cdist(...).argmin`, and so does this, so ties and rounding resolve alike.
    fn level_index(&self, sigma: &Tensor) -> Tensor {
        match self {
            Preconditioning::Iddpm { u, .. } => {
                let s = sigma.to_kind(Kind::Float).to_device(u.device()).reshape([1, -1, 1]);
                let d = Tensor::cdist(&s, &u.reshape([1, -1, 1]), 2.0, None::<i64>);
                d.argmin(2, false).reshape(sigma.size().as_slice()).to_device(sigma.device())
            }
            _ => sigma.zeros_like().to_kind(Kind::Int64),
        }
    }

    /// σ snapped to a level the network was trained on: iDDPM's nearest u_j (an fp32 value in σ's
    /// dtype), the identity otherwise (`round_sigma`).
    pub fn round_sigma(&self, sigma: &Tensor) -> Tensor {
        match self {
            Preconditioning::Iddpm { u, .. } => {
                let idx = self.level_index(sigma).to_device(u.device()).flatten(0, -1);
                u.index_select(0, &idx)
                    .reshape(sigma.size().as_slice())
                    .to_device(sigma.device())
                    .to_kind(sigma.kind())
            }
            _ => sigma.shallow_clone(),
        }
    }
}

/// iDDPM's discrete levels: u_M = 0, u_{j−1} = √((u_j² + 1) / max(ᾱ_{j−1}/ᾱ_j, C₁) − 1) with
/// ᾱ_j = sin²(½π j / (M (C₂+1))), in fp32 as EDM builds its `u` buffer. Pickles carry the buffer;
/// this is for tests and for building the preconditioning without one.
pub fn iddpm_levels(m: i64, c_1: f64, c_2: f64) -> Tensor {
    let alpha_bar = |j: i64| {
        let t = Tensor::from(j as f32) * (0.5 * std::f64::consts::PI) / m / (c_2 + 1.0);
        t.sin().square()
    };
    let mut u = vec![0f32; (m + 1) as usize];
    for j in (1..=m).rev() {
        let uj = Tensor::from(u[j as usize]);
        let ratio = (alpha_bar(j - 1) / alpha_bar(j)).clamp_min(c_1);
        let v = ((uj.square() + 1.0) / ratio - 1.0).sqrt();
        u[(j - 1) as usize] = v.double_value(&[]) as f32;
    }
    Tensor::from_slice(&u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// Every coefficient equals its closed form (EDM Table 1) evaluated in f64, to fp32 rounding:
    /// a handful of fp32 operations each, so a relative error of a few 1e-7; 2e-6 bounds it.
    fn assert_close(got: &Tensor, want: impl Fn(f64) -> f64, sigmas: &[f64], what: &str) {
        for (g, &s) in vals(got).iter().zip(sigmas) {
            let w = want(s);
            assert!((g - w).abs() <= 2e-6 * w.abs().max(1e-3), "{what} at σ={s}: {g} vs {w}");
        }
    }

    const SIGMAS: [f64; 6] = [0.002, 0.05, 0.5, 1.0, 7.3, 80.0];

    #[test]
    fn edm_coefficients_match_table_1() {
        let p = Preconditioning::Edm { sigma_data: 0.5 };
        let c = p.coefficients(&Tensor::from_slice(&SIGMAS));
        let sd: f64 = 0.5;
        assert_close(&c.c_skip, |s| sd * sd / (s * s + sd * sd), &SIGMAS, "c_skip");
        assert_close(&c.c_out, |s| s * sd / (s * s + sd * sd).sqrt(), &SIGMAS, "c_out");
        assert_close(&c.c_in, |s| 1.0 / (s * s + sd * sd).sqrt(), &SIGMAS, "c_in");
        assert_close(&c.c_noise, |s| s.ln() / 4.0, &SIGMAS, "c_noise");
    }

    #[test]
    fn vp_coefficients_match_table_1() {
        let (beta_d, beta_min) = (19.9, 0.1);
        let p = Preconditioning::Vp { beta_d, beta_min, m: 1000, epsilon_t: 1e-5 };
        let c = p.coefficients(&Tensor::from_slice(&SIGMAS));
        assert_close(&c.c_skip, |_| 1.0, &SIGMAS, "c_skip");
        assert_close(&c.c_out, |s| -s, &SIGMAS, "c_out");
        assert_close(&c.c_in, |s| 1.0 / (s * s + 1.0).sqrt(), &SIGMAS, "c_in");
        // t(σ) inverts σ(t) = √(exp(½β_d t² + β_min t) − 1); c_noise = (M−1)·t.
        let t_of = |s: f64| ((beta_min * beta_min + 2.0 * beta_d * (1.0 + s * s).ln()).sqrt() - beta_min) / beta_d;
        // fp32 ln(1 + σ²) loses σ² below 2⁻²⁴ absolute (EDM computes it so too); through
        // dt/dL ≤ 1/β_min and the factor 999 that is ≤ 999·2⁻²⁴/β_min ≈ 6e-4 absolute.
        let bound = 999.0 * 2f64.powi(-24) / beta_min;
        for (g, &s) in vals(&c.c_noise).iter().zip(&SIGMAS) {
            let w = 999.0 * t_of(s);
            assert!((g - w).abs() <= bound + 2e-6 * w, "c_noise at σ={s}: {g} vs {w}");
        }
        for s in SIGMAS {
            let t = t_of(s);
            let back = ((0.5 * beta_d * t * t + beta_min * t).exp() - 1.0).sqrt();
            assert!((back - s).abs() <= 1e-12 * s.max(1.0), "σ(t(σ)) = {back} vs {s}");
        }
    }

    #[test]
    fn ve_coefficients_match_table_1() {
        let c = Preconditioning::Ve.coefficients(&Tensor::from_slice(&SIGMAS));
        assert_close(&c.c_skip, |_| 1.0, &SIGMAS, "c_skip");
        assert_close(&c.c_out, |s| s, &SIGMAS, "c_out");
        assert_close(&c.c_in, |_| 1.0, &SIGMAS, "c_in");
        assert_close(&c.c_noise, |s| (0.5 * s).ln(), &SIGMAS, "c_noise");
    }

    #[test]
    fn iddpm_snaps_to_the_nearest_level() {
        let u = iddpm_levels(1000, 0.001, 0.008);
        let uv = vals(&u);
        assert_eq!(uv.len(), 1001);
        assert_eq!(uv[1000], 0.0);
        // Levels fall monotonically; the ends are EDM's fp32 values (`iDDPMPrecond.sigma_max`
        // and `sigma_min` printed by NVlabs/edm), equal bit for bit.
        assert!(uv.windows(2).all(|w| w[0] > w[1]), "levels must decrease");
        assert_eq!((uv[0], uv[999]), (20291.171875, 0.006422337144613266));
        let p = Preconditioning::Iddpm { m: 1000, c_1: 0.001, c_2: 0.008, u: u.shallow_clone() };
        // Midway between two levels (slightly towards one) snaps to that one; c_noise = M−1−j.
        let j = 600usize;
        let near = uv[j] + 0.3 * (uv[j - 1] - uv[j]);
        let c = p.coefficients(&Tensor::from_slice(&[near, uv[10], uv[999]]));
        assert_eq!(vals(&c.c_noise), vec![(999 - j) as f64, 989.0, 0.0]);
        let s = Tensor::from_slice(&[near, uv[10]]);
        assert_eq!(vals(&p.round_sigma(&s)), vec![uv[j], uv[10]]);
        assert_close(&c.c_out, |s| -s, &[near, uv[10], uv[999]], "c_out");
        assert_close(&c.c_in, |s| 1.0 / (s * s + 1.0).sqrt(), &[near, uv[10], uv[999]], "c_in");
        // Other preconditionings do not round.
        assert_eq!(vals(&Preconditioning::Ve.round_sigma(&s)), vals(&s));
    }
}
