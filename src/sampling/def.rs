//! One typed definition per sampler: its name, every parameter (type, default, allowed values,
//! one-line help, the diffusers keyword it mirrors), its timestep rules, NFE formula, end point,
//! reference and constructor. Spec validation and default filling ([`SamplerDef::resolve`]),
//! `bench samplers`, the README's sampler table and the results columns all read these; nothing
//! else describes a sampler's parameters.
use super::{consistency, ddim, deis, dpm_solver, edm, flow, ipndm, k_diffusion, karras, lcm, pndm, sa_solver, unipc, Sampler, Schedule};
use crate::models::{NoiseSpace, Prediction};
use crate::spec::{suggest, ParamValue};
use crate::timesteps::Skip;
use crate::{BenchError, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A parameter's type, range and default (the default lives with its type so it cannot disagree).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamKind {
    /// A real number in [min, max] (max may be infinite); integers in a spec are accepted.
    Float { min: f64, max: f64, default: f64 },
    /// A real number in [min, max], or `auto` (the default): a value the sampler derives from the
    /// schedule, which the help text names.
    FloatOrAuto { min: f64, max: f64 },
    /// An integer in min..=max.
    Int { min: i64, max: i64, default: i64 },
    Choice { allowed: &'static [&'static str], default: &'static str },
    Bool { default: bool },
    /// Non-negative integers (step indices, section counts, …) written as one string "0,2" (a
    /// bare integer is one, "" none), so that a YAML list stays a sweep; default none.
    IntList,
}

/// The integers of a [`ParamKind::IntList`] value, or None if it is not "i,j,…" / "".
fn parse_int_list(s: &str) -> Option<Vec<usize>> {
    if s.trim().is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|v| v.trim().parse::<usize>().ok()).collect()
}

impl ParamKind {
    pub fn default_value(&self) -> ParamValue {
        match *self {
            ParamKind::Float { default, .. } => ParamValue::Float(default),
            ParamKind::FloatOrAuto { .. } => ParamValue::Str("auto".into()),
            ParamKind::Int { default, .. } => ParamValue::Int(default),
            ParamKind::Choice { default, .. } => ParamValue::Str(default.into()),
            ParamKind::Bool { default } => ParamValue::Bool(default),
            ParamKind::IntList => ParamValue::Str(String::new()),
        }
    }
    /// "a number ≥ 0", "an integer from 1 to 3", ... (error messages and the README table).
    pub fn describe(&self) -> String {
        let range = |min: f64, max: f64| match (min.is_finite(), max.is_finite()) {
            (false, false) => "a number".to_string(),
            // Positive-only ranges are written with a tiny minimum; say what they mean.
            (true, false) if min > 0.0 && min < 1e-6 => "a number > 0".to_string(),
            (true, false) => format!("a number ≥ {min}"),
            _ if min > 0.0 && min < 1e-6 => format!("a number in (0, {max}]"),
            _ => format!("a number in [{min}, {max}]"),
        };
        match *self {
            ParamKind::Float { min, max, .. } => range(min, max),
            ParamKind::FloatOrAuto { min, max } => format!("{} or auto", range(min, max)),
            ParamKind::Int { min, max, .. } => format!("an integer from {min} to {max}"),
            ParamKind::Choice { allowed, .. } => format!("one of {}", allowed.join(", ")),
            ParamKind::Bool { .. } => "true or false".into(),
            ParamKind::IntList => "integers \"i,j,…\" (\"\" for none)".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
    pub help: &'static str,
    /// The diffusers scheduler keyword with the same meaning and values, if there is one.
    pub diffusers: Option<&'static str>,
}

/// What the `eta` results column holds for a sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EtaColumn {
    /// The sampler's `eta` parameter.
    Param,
    /// A fixed η (DDPM ancestral sampling is DDIM with η = 1).
    Fixed(f64),
}

#[derive(Debug)]
pub struct SamplerDef {
    pub name: &'static str,
    pub params: &'static [ParamDef],
    /// The timestep rules it accepts; the first is not necessarily the default.
    pub skips: &'static [Skip],
    pub default_skip: Skip,
    /// NFE as a formula in S (the counted NFE of every cell is recorded too).
    pub nfe: &'static str,
    pub end_point: &'static str,
    pub reference: &'static str,
    /// Model output parameterisations it accepts.
    pub predictions: &'static [Prediction],
    /// Anything a user comparing with a reference must know (one line), or "".
    pub note: &'static str,
    pub eta: Option<EtaColumn>,
    /// The parameter shown in the results' `variant` column.
    pub variant: Option<&'static str>,
    pub build: fn(&Args) -> Result<Box<dyn Sampler>>,
}

/// Definitions are statics: one per name.
impl PartialEq for SamplerDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

pub const ALL_PREDICTIONS: &[Prediction] = &[Prediction::Epsilon, Prediction::VPrediction, Prediction::Sample];
pub const DISCRETE_SKIPS: &[Skip] = &[Skip::Uniform, Skip::Quadratic, Skip::Leading, Skip::Trailing, Skip::Linspace];
/// Every integer-label rule, respaced ones included: the samplers that step label to label.
pub const RESPACED_SKIPS: &[Skip] = &Skip::DISCRETE;

/// The samplers whose diffusers scheduler takes `rescale_betas_zero_snr` (DDIM, DDPM, Euler,
/// Euler ancestral, DPMSolverMultistep, UniPC, LCM, TCD); the σ-grid ones among them read the schedule
/// through [`crate::schedule::NoiseSchedule::finite_terminal_sigma`] as diffusers does.
pub const ZERO_SNR_SAMPLERS: &[&str] = &["ddim", "ddpm", "ddpm_large", "euler", "euler_ancestral", "dpm_solver", "dpm_solver++", "unipc", "lcm", "tcd"];

/// Every sampler, in the order `bench samplers` lists them.
pub static DEFINITIONS: &[&SamplerDef] = &[
    &ddim::DDIM,
    &ddim::DDPM,
    &ddim::DDPM_LARGE,
    &pndm::F_PNDM,
    &pndm::S_PNDM,
    &pndm::FON,
    &pndm::PLMS,
    &dpm_solver::DPM_SOLVER,
    &dpm_solver::DPM_SOLVER_PP,
    &unipc::UNIPC,
    &deis::DEIS,
    &sa_solver::SA_SOLVER,
    &karras::EULER,
    &karras::EULER_ANCESTRAL,
    &karras::HEUN,
    &karras::KDPM2,
    &karras::KDPM2_ANCESTRAL,
    &karras::LMS,
    &karras::KARRAS_VE,
    &k_diffusion::DPMPP_2S_ANCESTRAL,
    &k_diffusion::DPMPP_SDE,
    &k_diffusion::DPMPP_2M_SDE,
    &k_diffusion::DPMPP_3M_SDE,
    &k_diffusion::DPM_FAST,
    &k_diffusion::DPM_ADAPTIVE,
    &lcm::LCM,
    &lcm::TCD,
    &edm::EDM_HEUN,
    &edm::EDM_EULER,
    &ipndm::IPNDM,
    &ipndm::IPNDM_V,
    &consistency::CONSISTENCY,
    &flow::FLOW_EULER,
    &flow::FLOW_HEUN,
    &flow::FLOW_DPM_SOLVER_PP,
    &flow::FLOW_UNIPC,
];

/// A parameter of every discrete-VP sampler: the arithmetic of the training schedule's tables.
/// Its default is float64; an entry written in diffusers' spelling (or read from a
/// `scheduler_config.json`) defaults to float32, as diffusers computes.
pub const SCHEDULE_DTYPE: ParamDef = ParamDef {
    name: "schedule_dtype",
    kind: ParamKind::Choice { allowed: &["float64", "float32"], default: "float64" },
    help: "ᾱ and σ̃ tables in float64, or in float32 as diffusers builds them (bit for bit)",
    diffusers: None,
};

pub fn find(name: &str) -> Option<&'static SamplerDef> {
    DEFINITIONS.iter().copied().find(|d| d.name == name)
}

/// The parameters of one cell, resolved: every parameter of the sampler, typed, defaults filled.
pub type Resolved = BTreeMap<String, ParamValue>;

impl SamplerDef {
    /// Its own parameters, then those every sampler of its noise space takes.
    pub fn all_params(&self) -> impl Iterator<Item = &'static ParamDef> {
        let common: &'static [ParamDef] = if self.space() == NoiseSpace::Vp { std::slice::from_ref(&SCHEDULE_DTYPE) } else { &[] };
        self.params.iter().chain(common)
    }

    pub fn param(&self, name: &str) -> Option<&'static ParamDef> {
        self.all_params().find(|p| p.name == name)
    }

    /// The parameter a written key names: bench's name, or the diffusers keyword it mirrors
    /// (same meaning and values) where that is spelled differently.
    pub fn lookup(&self, key: &str) -> Option<&'static ParamDef> {
        self.param(key).or_else(|| self.all_params().find(|p| p.diffusers == Some(key)))
    }

    /// Whether a written key is diffusers' spelling of a parameter that bench spells otherwise.
    pub fn is_diffusers_spelling(&self, key: &str) -> bool {
        self.lookup(key).is_some_and(|p| p.name != key)
    }

    /// Err when two written keys are one parameter (bench's and diffusers' spelling).
    pub fn check_spellings<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> std::result::Result<(), String> {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for k in keys {
            let Some(p) = self.lookup(k) else { continue };
            if let Some((first, _)) = seen.iter().find(|(_, n)| *n == p.name) {
                return Err(if *first == k {
                    format!("`{k}` is given twice")
                } else {
                    format!("`{first}` and `{k}` are one parameter of `{}` (bench's and diffusers' spelling); give one", self.name)
                });
            }
            seen.push((k, p.name));
        }
        Ok(())
    }

    /// Checks one written value; integers become floats for float parameters, `auto` is kept.
    /// Err is the message after the location ("`eta` of `ddim` must be …").
    pub fn check_value(&self, p: &ParamDef, v: &ParamValue) -> std::result::Result<ParamValue, String> {
        let bad = || format!("`{}` of `{}` must be {}, got {v}", p.name, self.name, p.kind.describe());
        let number = match v {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(x) => Some(*x),
            _ => None,
        };
        match (p.kind, v) {
            (ParamKind::Float { min, max, .. } | ParamKind::FloatOrAuto { min, max }, _) if number.is_some() => {
                let x = number.unwrap_or(f64::NAN);
                // An infinite bound is itself a value (lambda_min_clipped: -inf, s_tmax: inf).
                if (x.is_finite() || x == min || x == max) && !x.is_nan() && x >= min && x <= max {
                    Ok(ParamValue::Float(x))
                } else {
                    Err(bad())
                }
            }
            (ParamKind::FloatOrAuto { .. }, ParamValue::Str(s)) if s == "auto" => Ok(v.clone()),
            (ParamKind::Int { min, max, .. }, ParamValue::Int(i)) if *i >= min && *i <= max => Ok(v.clone()),
            (ParamKind::Choice { allowed, .. }, ParamValue::Str(s)) => {
                if allowed.contains(&s.as_str()) {
                    return Ok(v.clone());
                }
                let mut msg = format!("unknown value `{s}` for `{}` of `{}`", p.name, self.name);
                if let Some(sug) = suggest(s, allowed.iter().copied()) {
                    msg += &format!("; did you mean `{sug}`?");
                }
                Err(msg + &format!(" (allowed: {})", allowed.join(", ")))
            }
            (ParamKind::Bool { .. }, ParamValue::Bool(_)) => Ok(v.clone()),
            (ParamKind::IntList, ParamValue::Int(i)) if *i >= 0 => Ok(ParamValue::Str(i.to_string())),
            (ParamKind::IntList, ParamValue::Str(s)) => match parse_int_list(s) {
                Some(v) => Ok(ParamValue::Str(v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","))),
                None => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// "`etta` is not a parameter of `ddim`; did you mean `eta`? (allowed: …)".
    pub fn unknown_param(&self, key: &str) -> String {
        let allowed: Vec<&str> = self.all_params().map(|p| p.name).chain(["skip", "steps"]).collect();
        let mut msg = format!("`{key}` is not a parameter of `{}`", self.name);
        if let Some(s) = suggest(key, allowed.iter().copied()) {
            msg += &format!("; did you mean `{s}`?");
        }
        msg + &format!(" (allowed: {})", allowed.join(", "))
    }

    /// Every parameter at its default.
    pub fn defaults(&self) -> Resolved {
        self.all_params().map(|p| (p.name.to_owned(), p.kind.default_value())).collect()
    }

    /// Written `key: value` pairs → every parameter, checked, defaults filled.
    pub fn resolve(&self, written: &[(String, ParamValue)]) -> std::result::Result<Resolved, String> {
        let mut out = self.defaults();
        self.check_spellings(written.iter().map(|(k, _)| k.as_str()))?;
        for (k, v) in written {
            let p = self.lookup(k).ok_or_else(|| self.unknown_param(k))?;
            out.insert(p.name.to_owned(), self.check_value(p, v)?);
        }
        Ok(out)
    }

    pub fn check_skip(&self, skip: Skip) -> std::result::Result<(), String> {
        if self.skips.contains(&skip) {
            return Ok(());
        }
        let names: Vec<&str> = self.skips.iter().map(|k| k.name()).collect();
        Err(format!("`{}` does not support skip `{skip}` (allowed: {})", self.name, names.join(", ")))
    }

    /// The noise space its timestep rules and updates live in (models of other spaces are
    /// converted, see [`SamplerDef::check_space`]).
    pub fn space(&self) -> NoiseSpace {
        self.default_skip.space()
    }

    /// VP and σ samplers read a denoiser, which converts exactly between spaces.
    pub(crate) fn runs_converted(&self) -> bool {
        match self.space() {
            NoiseSpace::Vp => true,
            NoiseSpace::Sigma => self.default_skip != crate::timesteps::Skip::Consistency,
            NoiseSpace::Flow => false,
        }
    }

    /// The models it runs on, for `bench samplers` and the README.
    pub fn models_text(&self) -> &'static str {
        match (self.space(), self.runs_converted()) {
            (NoiseSpace::Vp, _) => "discrete-VP models; σ-space and rectified-flow models through the exact conversion",
            (NoiseSpace::Sigma, true) => "σ-space models; discrete-VP and rectified-flow models through the exact conversion",
            (NoiseSpace::Sigma, false) => "σ-space models",
            (NoiseSpace::Flow, _) => "rectified-flow models",
        }
    }

    /// Whether it runs on a model of `space` (`consistency_model`: a consistency model, whose
    /// output is its consistency function, not a denoiser): in its own space, or through an exact
    /// [`super::space_view::SpaceView`], as VP and σ samplers run on any denoiser. Flow samplers
    /// stay on flow models (their grids start at t = 1, pure noise, where no VP or σ model can
    /// be evaluated) and `consistency` on σ models.
    pub fn check_space(&self, space: NoiseSpace, consistency_model: bool) -> std::result::Result<(), String> {
        let own = self.space();
        if own == space {
            return Ok(());
        }
        if consistency_model {
            let same: Vec<&str> = DEFINITIONS.iter().filter(|d| d.space() == NoiseSpace::Sigma).map(|d| d.name).collect();
            return Err(format!(
                "`{}` would convert this consistency model to another noise space, but its output is the consistency function, not a denoiser (samplers in its own σ space: {})",
                self.name,
                same.join(", ")
            ));
        }
        if self.runs_converted() {
            return Ok(());
        }
        let fits: Vec<&str> = DEFINITIONS.iter().filter(|d| d.space() == space || d.runs_converted()).map(|d| d.name).collect();
        let model = match own {
            NoiseSpace::Flow => "rectified-flow models (prediction: flow; its grid starts at t = 1, pure noise)",
            _ => "consistency models (its steps call the consistency function)",
        };
        let space_of_model = match space {
            NoiseSpace::Vp => "a discrete-VP model",
            NoiseSpace::Sigma => "in σ space (x = x0 + σ·ε)",
            NoiseSpace::Flow => "a rectified-flow model",
        };
        Err(format!("`{}` runs on {model}; this model is {space_of_model}: use {}", self.name, fits.join(", ")))
    }

    /// [`SamplerDef::check_space`] and [`SamplerDef::check_prediction`] for a model of `space`
    /// whose output is `prediction` (a converted model's as the view presents it); a VP sampler
    /// on a σ-space model also needs finite noise levels (`zero_terminal_snr`: the schedule
    /// reaches σ = ∞).
    pub fn check_model(&self, space: NoiseSpace, prediction: Prediction, consistency_model: bool, zero_terminal_snr: bool) -> std::result::Result<(), String> {
        self.check_space(space, consistency_model)?;
        if self.space() == space {
            return self.check_prediction(prediction);
        }
        if self.space() == NoiseSpace::Vp && space == NoiseSpace::Sigma && zero_terminal_snr {
            return Err(format!(
                "`{}` on a σ-space model reads the schedule's levels, but it has zero terminal SNR (σ = ∞), where no σ-space model can be evaluated",
                self.name
            ));
        }
        self.check_prediction(super::space_view::SpaceView::prediction_seen(self.space()))
    }

    pub fn check_prediction(&self, p: Prediction) -> std::result::Result<(), String> {
        if self.predictions.contains(&p) {
            return Ok(());
        }
        let names: Vec<&str> = self.predictions.iter().map(|p| p.as_str()).collect();
        Err(format!("`{}` does not support model prediction `{}` (supported: {})", self.name, p.as_str(), names.join(", ")))
    }

    /// The configured sampler for resolved parameters (every cell is built once at plan time, so
    /// combinations that per-parameter ranges cannot express are refused before anything runs).
    pub fn build(&'static self, params: &Resolved, skip: Skip, steps: usize, schedule: &Schedule) -> Result<Box<dyn Sampler>> {
        if steps == 0 {
            return Err(BenchError::user(format!("sampler {}: steps must be ≥ 1", self.name)));
        }
        if schedule.zero_terminal_snr() && !ZERO_SNR_SAMPLERS.contains(&self.name) {
            return Err(BenchError::user(format!(
                "sampler {}: the schedule has zero terminal SNR (rescale_betas_zero_snr), which its reference does not offer \
                 (samplers that take it, as diffusers' schedulers do: {})",
                self.name,
                ZERO_SNR_SAMPLERS.join(", ")
            )));
        }
        let float32;
        let schedule = match params.get(SCHEDULE_DTYPE.name) {
            Some(ParamValue::Str(s)) if s == "float32" => {
                float32 = schedule.in_float32()?;
                &float32
            }
            _ => schedule,
        };
        (self.build)(&Args { def: self, values: params, skip, steps, schedule })
    }

    /// Non-default parameters as `k=v` (stable order), for labels and hashes.
    pub fn non_default<'p>(&self, params: &'p Resolved) -> Vec<(&'p str, &'p ParamValue)> {
        let d = self.defaults();
        params.iter().filter(|(k, v)| d.get(*k) != Some(*v)).map(|(k, v)| (k.as_str(), v)).collect()
    }

    /// The `eta` results column of a cell.
    pub fn eta_column(&self, params: &Resolved) -> Option<f64> {
        match self.eta? {
            EtaColumn::Fixed(v) => Some(v),
            EtaColumn::Param => match params.get("eta")? {
                ParamValue::Float(x) => Some(*x),
                ParamValue::Int(i) => Some(*i as f64),
                _ => None,
            },
        }
    }
    pub fn order_column(&self, params: &Resolved) -> Option<u32> {
        match params.get("order")? {
            ParamValue::Int(i) => u32::try_from(*i).ok(),
            _ => None,
        }
    }
    pub fn variant_column(&self, params: &Resolved) -> Option<String> {
        params.get(self.variant?).map(|v| v.to_string())
    }
}

/// Typed access to a cell's resolved parameters for a sampler's constructor. Values were checked
/// against the definition, so a missing or mistyped key is a bug (an internal error).
pub struct Args<'a> {
    pub def: &'static SamplerDef,
    pub values: &'a Resolved,
    pub skip: Skip,
    pub steps: usize,
    pub schedule: &'a Schedule,
}

impl<'a> Args<'a> {
    fn get(&self, key: &str) -> Result<&'a ParamValue> {
        self.values
            .get(key)
            .ok_or_else(|| BenchError::Internal(format!("sampler {}: parameter {key} missing from its resolved values", self.def.name)))
    }
    fn mistyped(&self, key: &str, want: &str) -> BenchError {
        BenchError::Internal(format!("sampler {}: parameter {key} is not {want}", self.def.name))
    }
    pub fn f64(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            ParamValue::Float(x) => Ok(*x),
            ParamValue::Int(i) => Ok(*i as f64),
            _ => Err(self.mistyped(key, "a number")),
        }
    }
    /// A `FloatOrAuto` parameter: None for `auto`.
    pub fn f64_or_auto(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key)? {
            ParamValue::Str(s) if s == "auto" => Ok(None),
            _ => self.f64(key).map(Some),
        }
    }
    pub fn usize(&self, key: &str) -> Result<usize> {
        match self.get(key)? {
            ParamValue::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => Err(self.mistyped(key, "a non-negative integer")),
        }
    }
    pub fn str(&self, key: &str) -> Result<&'a str> {
        match self.get(key)? {
            ParamValue::Str(s) => Ok(s),
            _ => Err(self.mistyped(key, "a name")),
        }
    }
    pub fn int_list(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key)? {
            ParamValue::Str(s) => parse_int_list(s).ok_or_else(|| self.mistyped(key, "integers \"i,j,…\"")),
            _ => Err(self.mistyped(key, "integers \"i,j,…\"")),
        }
    }
    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.get(key)? {
            ParamValue::Bool(b) => Ok(*b),
            _ => Err(self.mistyped(key, "true/false")),
        }
    }
    /// A user error naming this sampler: "sampler NAME: MSG".
    pub fn error(&self, msg: impl std::fmt::Display) -> BenchError {
        BenchError::user(format!("sampler {}: {msg}", self.def.name))
    }
    /// steps ≥ `min` or a user error.
    pub fn need_steps(&self, min: usize, why: &str) -> Result<()> {
        if self.steps < min {
            return Err(self.error(format!("steps={} is too small ({why}: need ≥ {min})", self.steps)));
        }
        Ok(())
    }
}

fn skips_text(d: &SamplerDef) -> String {
    d.skips.iter().map(|k| if *k == d.default_skip { format!("{k}*") } else { k.to_string() }).collect::<Vec<_>>().join(" | ")
}

fn default_text(k: &ParamKind) -> String {
    k.default_value().to_string()
}

/// `bench samplers [FILTER]`: one block per sampler whose name contains `filter`, columns aligned.
pub fn render_text(filter: Option<&str>) -> String {
    let mut out = String::new();
    for d in DEFINITIONS.iter().filter(|d| filter.is_none_or(|f| d.name.contains(f))) {
        let _ = writeln!(out, "{}", d.name);
        let preds: Vec<&str> = d.predictions.iter().map(|p| p.as_str()).collect();
        let mut rows: Vec<(String, String)> = vec![
            ("skip".into(), skips_text(d) + "   (* default)"),
            ("NFE".into(), d.nfe.into()),
            ("end point".into(), d.end_point.into()),
            ("models".into(), d.models_text().into()),
            ("prediction".into(), preds.join(" | ")),
            ("reference".into(), d.reference.into()),
        ];
        if !d.note.is_empty() {
            rows.push(("note".into(), d.note.into()));
        }
        for (k, v) in &rows {
            let _ = writeln!(out, "  {k:<13} {v}");
        }
        let name_w = d.params.iter().map(|p| p.name.len() + default_text(&p.kind).chars().count() + 1).max().unwrap_or(0);
        for p in d.params {
            let kv = format!("{}={}", p.name, default_text(&p.kind));
            let diffusers = p.diffusers.map(|k| format!(" [diffusers: {k}]")).unwrap_or_default();
            let _ = writeln!(out, "  --set {kv:<name_w$}  {}; {}{diffusers}", p.help, p.kind.describe());
        }
        out.push('\n');
    }
    let p = &SCHEDULE_DTYPE;
    if DEFINITIONS.iter().any(|d| filter.is_none_or(|f| d.name.contains(f)) && d.space() == NoiseSpace::Vp) {
        let _ = writeln!(out, "every discrete-VP sampler\n  --set {}={}  {}; {}", p.name, default_text(&p.kind), p.help, p.kind.describe());
    }
    out
}

/// `bench samplers --json`: every definition as data.
pub fn render_json(filter: Option<&str>) -> String {
    let list: Vec<serde_json::Value> = DEFINITIONS
        .iter()
        .filter(|d| filter.is_none_or(|f| d.name.contains(f)))
        .map(|d| {
            serde_json::json!({
                "name": d.name,
                "skips": d.skips.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "default_skip": d.default_skip.name(),
                "nfe": d.nfe,
                "end_point": d.end_point,
                "models": d.models_text(),
                "predictions": d.predictions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "reference": d.reference,
                "note": d.note,
                "params": d.all_params().map(|p| serde_json::json!({
                    "name": p.name,
                    "default": default_text(&p.kind),
                    "allowed": p.kind.describe(),
                    "help": p.help,
                    "diffusers": p.diffusers,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

/// The README's sampler reference (between its `samplers:begin/end` markers; a test keeps it in
/// sync with these definitions).
pub fn render_markdown() -> String {
    let mut out = String::from("| sampler | parameter | default | allowed | meaning | diffusers |\n|---|---|---|---|---|---|\n");
    for d in DEFINITIONS {
        let _ = writeln!(out, "| **{}** | skip | {} | {} | timestep rule; NFE {}; ends at {}; runs on {} | |", d.name, d.default_skip, d.skips.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "), d.nfe, d.end_point, d.models_text());
        for p in d.params {
            let _ = writeln!(
                out,
                "| | {} | {} | {} | {} | {} |",
                p.name,
                default_text(&p.kind),
                p.kind.describe(),
                p.help.replace('|', "\\|"),
                p.diffusers.unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::NoiseSchedule;

    #[test]
    fn every_definition_builds_with_its_defaults_and_names_itself() {
        let s = NoiseSchedule::ddpm_linear();
        for d in DEFINITIONS {
            // An adaptive sampler picks its own steps and takes S = 1 only.
            let steps = if d.nfe.starts_with("adaptive") { 1 } else { 10 };
            let sampler = d.build(&d.defaults(), d.default_skip, steps, &s).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert_eq!(sampler.adaptive(), steps == 1, "{}", d.name);
            assert_eq!(sampler.name(), d.name);
            assert!(sampler.nfe() >= 10, "{}", d.name);
            assert!(d.skips.contains(&d.default_skip), "{}", d.name);
            assert!(d.variant.is_none_or(|v| d.param(v).is_some()), "{}", d.name);
        }
        let mut names: Vec<&str> = DEFINITIONS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DEFINITIONS.len());
    }

    #[test]
    fn samplers_run_converted_except_flow_and_consistency_ones() {
        let check = |name: &str, space, prediction, consistency_model| find(name).unwrap().check_model(space, prediction, consistency_model, false);
        assert_eq!(check("ddim", NoiseSpace::Flow, Prediction::Flow, false), Ok(()));
        assert_eq!(check("edm_heun", NoiseSpace::Vp, Prediction::VPrediction, false), Ok(()));
        assert_eq!(check("edm_heun", NoiseSpace::Sigma, Prediction::Sample, true), Ok(()));
        assert_eq!(
            check("ddim", NoiseSpace::Sigma, Prediction::Sample, true).unwrap_err(),
            "`ddim` would convert this consistency model to another noise space, but its output is the consistency function, not a denoiser (samplers in its own σ space: edm_heun, edm_euler, ipndm, ipndm_v, consistency)"
        );
        let e = check("consistency", NoiseSpace::Vp, Prediction::Epsilon, false).unwrap_err();
        assert!(e.starts_with("`consistency` runs on consistency models (its steps call the consistency function); this model is a discrete-VP model: use ddim, ddpm,"), "{e}");
        assert!(!e.contains("flow_euler") && e.ends_with("edm_heun, edm_euler, ipndm, ipndm_v"), "{e}");
        let e = find("ddim").unwrap().check_model(NoiseSpace::Sigma, Prediction::Sample, false, true).unwrap_err();
        assert!(e.contains("zero terminal SNR (σ = ∞)"), "{e}");
        // The prediction a converted model presents is what the sampler must read.
        assert_eq!(find("ddim").unwrap().check_model(NoiseSpace::Vp, Prediction::Flow, false, false).unwrap_err(), find("ddim").unwrap().check_prediction(Prediction::Flow).unwrap_err());
    }

    #[test]
    fn step_indices_are_one_normalised_string() {
        let d = find("unipc").unwrap();
        let p = d.param("disable_corrector").unwrap();
        let ok = |v: ParamValue| d.check_value(p, &v).unwrap();
        assert_eq!(ok(ParamValue::Str(" 0, 2,3".into())), ParamValue::Str("0,2,3".into()));
        assert_eq!(ok(ParamValue::Int(4)), ParamValue::Str("4".into()));
        assert_eq!(ok(ParamValue::Str(String::new())), ParamValue::Str(String::new()));
        let e = d.check_value(p, &ParamValue::Str("0,x".into())).unwrap_err();
        assert_eq!(e, "`disable_corrector` of `unipc` must be integers \"i,j,…\" (\"\" for none), got 0,x");
        assert!(d.check_value(p, &ParamValue::Int(-1)).is_err());
    }

    #[test]
    fn resolve_fills_defaults_and_a_written_default_resolves_identically() {
        let d = find("ddim").unwrap();
        let a = d.resolve(&[]).unwrap();
        let b = d.resolve(&[("eta".into(), ParamValue::Int(0))]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["eta"], ParamValue::Float(0.0));
        assert_eq!(d.eta_column(&a), Some(0.0));
        assert_eq!(find("ddpm").unwrap().eta_column(&find("ddpm").unwrap().defaults()), Some(1.0));
        let e = d.resolve(&[("etta".into(), ParamValue::Float(0.5))]).unwrap_err();
        assert!(e.starts_with("`etta` is not a parameter of `ddim`; did you mean `eta`?"), "{e}");
        let e = d.resolve(&[("eta".into(), ParamValue::Float(-1.0))]).unwrap_err();
        assert_eq!(e, "`eta` of `ddim` must be a number ≥ 0, got -1");
        let pp = find("dpm_solver++").unwrap();
        let r = pp.resolve(&[]).unwrap();
        assert_eq!((pp.order_column(&r), pp.variant_column(&r).as_deref()), (Some(2), Some("multistep")));
    }
}
