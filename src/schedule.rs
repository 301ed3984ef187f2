//! Discrete noise schedules (β_t, ᾱ_t for t = 0..T-1), in float64, or as diffusers computes them
//! in float32 torch tensors ([`ScheduleDtype`]).
//!
//! Conventions follow the DDPM/DDIM papers and diffusers: index t ∈ [0, T) is the model's
//! integer timestep label; ᾱ_t = Π_{s≤t} (1 − β_s).

use crate::{BenchError, Result};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Ho et al. 2020: β linear from beta_start to beta_end.
    Linear,
    /// Stable Diffusion / LDM: β = linspace(√β_start, √β_end, T)².
    ScaledLinear,
    /// Nichol & Dhariwal 2021 eq. 17, s = 0.008, β capped at 0.999.
    Cosine,
    /// diffusers `betas_for_alpha_bar(alpha_transform_type="exp")`: ᾱ(t) = e^{−12t}, β capped at 0.999.
    Exp,
    /// GeoDiff's sigmoid schedule (diffusers DDPMScheduler): β = sigmoid(linspace(−6, 6, T))·(β_end − β_start) + β_start.
    Sigmoid,
}

#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub kind: ScheduleKind,
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub dtype: ScheduleDtype,
    /// What it was built from, so that [`NoiseSchedule::in_float32`] can rebuild it.
    recipe: Recipe,
    /// Float32 only: σ̃ and λ of every label as torch computes them from ᾱ in one vectorised op
    /// (its SIMD square root and log differ from correctly rounded ones in the last bit).
    float32_tables: Option<Float32Tables>,
}

#[derive(Debug, Clone)]
struct Float32Tables {
    sigmas: Vec<f64>,
    lambdas: Vec<f64>,
}

impl Float32Tables {
    /// diffusers: `((1 − ᾱ)/ᾱ) ** 0.5` and `log(√ᾱ) − log(√(1 − ᾱ))` on the float32 ᾱ tensor.
    fn of(alphas_cumprod: &[f64]) -> Result<Self> {
        let ac = tch::Tensor::from_slice(alphas_cumprod).to_kind(tch::Kind::Float);
        let one_minus = -&ac + 1.0;
        Ok(Float32Tables {
            sigmas: float32_vec(&(&one_minus / &ac).pow_tensor_scalar(0.5))?,
            lambdas: float32_vec(&(ac.sqrt().log() - one_minus.sqrt().log()))?,
        })
    }
}

fn float32_vec(t: &tch::Tensor) -> Result<Vec<f64>> {
    let v: Vec<f32> = Vec::try_from(t).map_err(|e| BenchError::Internal(format!("float32 schedule: {e}")))?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// The arithmetic of a schedule's ᾱ, σ̃ and λ tables. The DDIM, PNDM and DPM-Solver repositories
/// use float64; diffusers builds β and ᾱ as float32 tensors and its σ̃ tables from them, which
/// moves its samples by up to 4e-4 relative and its fractional labels by up to 8e-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleDtype {
    #[default]
    Float64,
    Float32,
}

#[derive(Debug, Clone, Copy)]
struct Recipe {
    beta_start: f64,
    beta_end: f64,
    rescaled: bool,
}

impl ScheduleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Linear => "linear",
            ScheduleKind::ScaledLinear => "scaled_linear",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Exp => "exp",
            ScheduleKind::Sigmoid => "sigmoid",
        }
    }
}

impl NoiseSchedule {
    pub fn new(kind: ScheduleKind, beta_start: f64, beta_end: f64, timesteps: usize) -> Result<Self> {
        if timesteps < 2 {
            return Err(BenchError::user(format!("schedule.timesteps: {timesteps} is too small (need ≥ 2)")));
        }
        if !matches!(kind, ScheduleKind::Cosine | ScheduleKind::Exp) && !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) {
            return Err(BenchError::user(format!(
                "schedule: need 0 < beta_start ≤ beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
            )));
        }
        let n = timesteps;
        let lin = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (n - 1) as f64;
        // diffusers `betas_for_alpha_bar`: β_i = min(1 − f((i+1)/T)/f(i/T), 0.999).
        let from_alpha_bar = |f: &dyn Fn(f64) -> f64| -> Vec<f64> {
            (0..n).map(|i| (1.0 - f((i + 1) as f64 / n as f64) / f(i as f64 / n as f64)).min(0.999)).collect()
        };
        let betas: Vec<f64> = match kind {
            ScheduleKind::Linear => (0..n).map(|i| lin(beta_start, beta_end, i)).collect(),
            ScheduleKind::ScaledLinear => (0..n).map(|i| lin(beta_start.sqrt(), beta_end.sqrt(), i).powi(2)).collect(),
            ScheduleKind::Cosine => from_alpha_bar(&|t| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2)),
            ScheduleKind::Exp => from_alpha_bar(&|t| (-12.0 * t).exp()),
            ScheduleKind::Sigmoid => (0..n)
                .map(|i| {
                    let x = lin(-6.0, 6.0, i);
                    beta_start + (beta_end - beta_start) / (1.0 + (-x).exp())
                })
                .collect(),
        };
        Ok(Self::from_betas(kind, betas, Recipe { beta_start, beta_end, rescaled: false }))
    }

    /// ᾱ_t = Π_{s≤t} (1 − β_s).
    fn from_betas(kind: ScheduleKind, betas: Vec<f64>, recipe: Recipe) -> Self {
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        NoiseSchedule { kind, betas, alphas_cumprod, dtype: ScheduleDtype::Float64, recipe, float32_tables: None }
    }

    /// The same schedule as diffusers' scheduler `__init__` builds it: β with torch's float32
    /// `linspace`/`sigmoid` (cosine and exp from float64 `betas_for_alpha_bar`, then cast), ᾱ by
    /// float32 `cumprod`, zero terminal SNR rescaled in float32. libtorch's own kernels do the
    /// arithmetic, so the values are diffusers' bit for bit.
    pub fn in_float32(&self) -> Result<Self> {
        use tch::{Device, Kind, Tensor};
        if self.dtype == ScheduleDtype::Float32 {
            return Ok(self.clone());
        }
        let Recipe { beta_start: b0, beta_end: b1, rescaled } = self.recipe;
        let n = self.betas.len() as i64;
        let o = (Kind::Float, Device::Cpu);
        let f = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(|e| BenchError::Internal(format!("float32 schedule: {e}")));
        let betas = match self.kind {
            ScheduleKind::Linear => f(Tensor::f_linspace(b0, b1, n, o))?,
            ScheduleKind::ScaledLinear => f(Tensor::f_linspace(b0.sqrt(), b1.sqrt(), n, o))?.pow_tensor_scalar(2),
            ScheduleKind::Cosine | ScheduleKind::Exp => {
                let unrescaled = Self::new(self.kind, b0, b1, self.betas.len())?;
                Tensor::from_slice(&unrescaled.betas).to_kind(Kind::Float)
            }
            ScheduleKind::Sigmoid => f(Tensor::f_linspace(-6.0, 6.0, n, o))?.sigmoid() * (b1 - b0) + b0,
        };
        let cumprod = |betas: &Tensor| (-betas + 1.0).cumprod(0, Kind::Float);
        // diffusers `rescale_zero_terminal_snr`, tensor for tensor.
        let betas = if rescaled {
            let s = cumprod(&betas).sqrt();
            let (first, last) = (s.get(0), s.get(n - 1));
            let ab = ((&s - &last) * (&first / (&first - &last))).pow_tensor_scalar(2);
            let ratios = ab.narrow(0, 1, n - 1) / ab.narrow(0, 0, n - 1);
            -Tensor::cat(&[ab.narrow(0, 0, 1), ratios], 0) + 1.0
        } else {
            betas
        };
        let alphas_cumprod = float32_vec(&cumprod(&betas))?;
        Ok(NoiseSchedule {
            kind: self.kind,
            float32_tables: Some(Float32Tables::of(&alphas_cumprod)?),
            alphas_cumprod,
            betas: float32_vec(&betas)?,
            dtype: ScheduleDtype::Float32,
            recipe: self.recipe,
        })
    }

    /// Zero terminal SNR (Lin et al. 2024 Alg. 1; diffusers `rescale_zero_terminal_snr`): shift √ᾱ
    /// so that √ᾱ_{T−1} = 0, scale it so that √ᾱ_0 is unchanged, and recompute β from the ratios.
    pub fn rescaled_zero_terminal_snr(&self) -> Self {
        let sq: Vec<f64> = self.alphas_cumprod.iter().map(|a| a.sqrt()).collect();
        let (first, last) = (sq[0], sq[sq.len() - 1]);
        let ab: Vec<f64> = sq.iter().map(|v| ((v - last) * (first / (first - last))).powi(2)).collect();
        let betas: Vec<f64> = (0..ab.len()).map(|i| 1.0 - if i == 0 { ab[0] } else { ab[i] / ab[i - 1] }).collect();
        Self::from_betas(self.kind, betas, Recipe { rescaled: true, ..self.recipe })
    }
    /// ᾱ_{T−1} = 0: the last label carries no signal (σ̃ = ∞ there).
    pub fn zero_terminal_snr(&self) -> bool {
        self.alphas_cumprod.last() == Some(&0.0)
    }
    /// The σ-grid schedulers' view of a zero-terminal-SNR schedule: diffusers' Euler, Euler
    /// ancestral, DPMSolverMultistep and UniPC set ᾱ_{T−1} = 2⁻²⁴ so that σ̃_max is finite.
    pub fn finite_terminal_sigma(&self) -> Self {
        let mut s = self.clone();
        if let Some(last) = s.alphas_cumprod.last_mut() {
            if *last == 0.0 {
                *last = 2f64.powi(-24);
                if s.float32_tables.is_some() {
                    if let Ok(t) = Float32Tables::of(&s.alphas_cumprod) {
                        s.float32_tables = Some(t);
                    }
                }
            }
        }
        s
    }

    /// Ho et al.'s CIFAR10 schedule: linear 1e-4 → 0.02 over 1000 steps.
    pub fn ddpm_linear() -> Self {
        Self::new(ScheduleKind::Linear, 1e-4, 0.02, 1000).expect("valid constants")
    }

    pub fn len(&self) -> usize {
        self.betas.len()
    }
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
    /// ᾱ_t for an integer label.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t]
    }
    /// Karras/VE noise level σ̃_t = √((1−ᾱ_t)/ᾱ_t) (diffusers' `sigmas` table, in the schedule's dtype).
    pub fn sigma(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        match &self.float32_tables {
            None => ((1.0 - a) / a).sqrt(),
            Some(tab) => tab.sigmas[t],
        }
    }
    /// log σ̃ of every label: diffusers' `log_sigmas`, `np.log` of the float32 table, here
    /// correctly rounded to float32 (numpy's SIMD log, chosen per CPU, is within an ulp of it).
    pub fn log_sigmas(&self) -> Vec<f64> {
        (0..self.len())
            .map(|t| match self.dtype {
                ScheduleDtype::Float64 => self.sigma(t).ln(),
                ScheduleDtype::Float32 => f64::from(self.sigma(t).ln() as f32),
            })
            .collect()
    }
    /// Half log-SNR λ_t = log(α_t/σ_t) with α_t = √ᾱ_t, σ_t = √(1−ᾱ_t) (DPM-Solver's λ;
    /// diffusers' `lambda_t`).
    pub fn lambda(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        match &self.float32_tables {
            None => 0.5 * (a.ln() - (1.0 - a).ln()),
            Some(tab) => tab.lambdas[t],
        }
    }
}

/// The training schedule and output parameterisation a diffusers `scheduler_config.json` states
/// (the parts that belong to the model; timestep spacing and the like belong to the sampler).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSchedulerConfig {
    pub path: std::path::PathBuf,
    pub kind: ScheduleKind,
    pub beta_start: f64,
    pub beta_end: f64,
    pub timesteps: usize,
    pub prediction: crate::models::Prediction,
    pub rescale_betas_zero_snr: bool,
}

impl ModelSchedulerConfig {
    /// `scheduler_config.json` beside a model's `config.json`, or in the pipeline's `scheduler/`
    /// next to a `unet/` folder; None when there is none.
    pub fn find(model_dir: &std::path::Path) -> Option<std::path::PathBuf> {
        let beside = model_dir.join("scheduler_config.json");
        let pipeline = model_dir.parent().map(|p| p.join("scheduler").join("scheduler_config.json"));
        std::iter::once(beside).chain(pipeline).find(|p| p.is_file())
    }

    pub fn read(path: &std::path::Path) -> Result<Self> {
        let text = fs_err::read_to_string(path).map_err(|e| BenchError::file(path, format!("cannot read: {e}")))?;
        let v = crate::sampling::diffusers_config::parse_json(&text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
        Self::from_json(path, &v)
    }

    /// The model's part of a scheduler config already parsed from `path` (named in errors).
    pub fn from_json(path: &std::path::Path, v: &serde_json::Value) -> Result<Self> {
        let err = |m: String| BenchError::file(path, m);
        let num = |k: &str, d: f64| -> Result<f64> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(x) => x.as_f64().ok_or_else(|| err(format!("{k} must be a number"))),
            }
        };
        let kind = match v.get("beta_schedule").and_then(|x| x.as_str()).unwrap_or("linear") {
            "linear" => ScheduleKind::Linear,
            "scaled_linear" => ScheduleKind::ScaledLinear,
            "squaredcos_cap_v2" => ScheduleKind::Cosine,
            "exp" => ScheduleKind::Exp,
            "sigmoid" => ScheduleKind::Sigmoid,
            other => return Err(err(format!("beta_schedule {other:?} is not supported (supported: linear, scaled_linear, squaredcos_cap_v2, exp, sigmoid)"))),
        };
        if v.get("trained_betas").is_some_and(|x| !x.is_null()) {
            return Err(err("trained_betas is set; explicit beta lists are not supported".into()));
        }
        let rescale_betas_zero_snr = match v.get("rescale_betas_zero_snr") {
            None | Some(serde_json::Value::Null) => false,
            Some(x) => x.as_bool().ok_or_else(|| err("rescale_betas_zero_snr must be true or false".into()))?,
        };
        let prediction = match v.get("prediction_type").and_then(|x| x.as_str()) {
            None => crate::models::Prediction::Epsilon,
            Some(p) => crate::models::Prediction::parse(p)
                .ok_or_else(|| err(format!("prediction_type {p:?} is not supported (supported: epsilon, v_prediction, sample)")))?,
        };
        let timesteps = num("num_train_timesteps", 1000.0)?;
        if !(timesteps >= 2.0 && timesteps.fract() == 0.0) {
            return Err(err(format!("num_train_timesteps {timesteps} must be an integer ≥ 2")));
        }
        Ok(ModelSchedulerConfig {
            path: path.to_owned(),
            kind,
            beta_start: num("beta_start", 0.0001)?,
            beta_end: num("beta_end", 0.02)?,
            timesteps: timesteps as usize,
            prediction,
            rescale_betas_zero_snr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_end_points() {
        let s = NoiseSchedule::ddpm_linear();
        assert_eq!(s.len(), 1000);
        assert_eq!(s.betas[0], 1e-4);
        assert!((s.betas[999] - 0.02).abs() < 1e-15);
        // ᾱ_999 of Ho et al.'s schedule, as printed by diffusers' DDPMScheduler: 4.0358e-05.
        assert!((s.alpha_bar(999) - 4.035829e-5).abs() < 1e-9, "{}", s.alpha_bar(999));
    }

    #[test]
    fn cosine_caps_beta() {
        let s = NoiseSchedule::new(ScheduleKind::Cosine, 0.0, 0.0, 1000).unwrap();
        assert_eq!(s.betas[999], 0.999);
        assert!(s.betas.iter().all(|&b| b > 0.0 && b <= 0.999));
    }

    #[test]
    fn zero_terminal_snr_keeps_the_first_level_and_zeroes_the_last() {
        let s = NoiseSchedule::new(ScheduleKind::ScaledLinear, 0.00085, 0.012, 1000).unwrap();
        let z = s.rescaled_zero_terminal_snr();
        assert!(z.zero_terminal_snr() && !s.zero_terminal_snr());
        assert!((z.alpha_bar(0) - s.alpha_bar(0)).abs() < 1e-15);
        assert_eq!(z.finite_terminal_sigma().alpha_bar(999), 2f64.powi(-24));
        // exp: ᾱ_t = e^{−12(t+1)/T} exactly (β never reaches the 0.999 cap for T = 1000).
        let e = NoiseSchedule::new(ScheduleKind::Exp, 0.0, 0.0, 1000).unwrap();
        assert!((e.alpha_bar(999) - (-12.0f64).exp()).abs() < 1e-15);
        // sigmoid: β runs from β_start + (β_end − β_start)·sigmoid(−6) to the mirror value.
        let g = NoiseSchedule::new(ScheduleKind::Sigmoid, 1e-4, 0.02, 1000).unwrap();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        assert!((g.betas[0] - (1e-4 + 0.0199 * sig(-6.0))).abs() < 1e-16 && (g.betas[999] - (1e-4 + 0.0199 * sig(6.0))).abs() < 1e-16);
    }

    #[test]
    fn bad_betas_are_user_errors() {
        let e = NoiseSchedule::new(ScheduleKind::Linear, 0.02, 1e-4, 1000).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
