//! A `samplers:` entry `{diffusers_config: FILE}`: a diffusers `scheduler_config.json` (as the
//! scheduler's `save_config` writes it, or an older one with fewer keys) read as the bench
//! sampler, timestep rule and parameters that sample as that scheduler does.
//!
//! Every key is honoured or refused by name: the class picks the sampler; the training-schedule
//! keys and `prediction_type` must agree with the spec's model (checked by the plan); a key bench
//! spells the same or lists as a parameter's diffusers keyword sets that parameter; a few keys
//! choose the sampler or its timestep rule; keys at a value bench does anyway are accepted; any
//! other key or value is an error naming it. Keys the file leaves out take the class's diffusers
//! default, so an old config means what diffusers makes of it.
use super::def::SamplerDef;
use crate::spec::ParamValue;
use crate::timesteps::Skip;
use serde_json::{json, Value};

/// What a scheduler config amounts to in bench.
#[derive(Debug, Clone, PartialEq)]
pub struct FromConfig {
    pub sampler: &'static str,
    pub skip: Skip,
    /// Parameters by bench name, in a fixed order.
    pub params: Vec<(String, ParamValue)>,
    /// The keys of the file that describe the model, which the plan checks against the spec's.
    pub model_keys: &'static [&'static str],
}

/// A diffusers scheduler class: the bench sampler it is, the parameters that make bench step
/// as that class does, and the class's defaults for the keys that matter to sampling.
struct Class {
    name: &'static str,
    sampler: &'static str,
    implied: &'static [(&'static str, &'static str)],
    /// The class's keys that pick another sampler or parameter (README).
    choose: &'static str,
    /// The class's `__init__` arguments besides [`MODEL_KEYS`] (diffusers 0.42.1). Any other key
    /// came from another class's config through `from_config` (which keeps it) and is never
    /// read, so it is skipped whatever its value.
    accepts: &'static [&'static str],
    /// Keys the class stores but never reads when sampling (any value is accepted).
    ignored: &'static [&'static str],
    defaults: fn() -> Value,
}

/// The keys of the training schedule and output parameterisation: the model's, not the sampler's.
pub const MODEL_KEYS: &[&str] =
    &["num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr", "prediction_type"];

/// A class's model keys: the discrete-VP classes' [`MODEL_KEYS`]; the flow classes have no β
/// schedule and no prediction type, only the label scale T (`num_train_timesteps`);
/// `CMStochasticIterativeScheduler`'s `num_train_timesteps` is its grid size N, a parameter of
/// `consistency`.
fn model_keys(class: &str) -> &'static [&'static str] {
    match class {
        "FlowMatchEulerDiscreteScheduler" | "FlowMatchHeunDiscreteScheduler" => &["num_train_timesteps"],
        "CMStochasticIterativeScheduler" => &[],
        _ => MODEL_KEYS,
    }
}

/// The flow classes' keys that only feed a pipeline's μ for dynamic shifting (`calculate_shift`).
const FLOW_PIPELINE_KEYS: &[&str] = &["base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len"];

/// LCMScheduler and TCDScheduler lay out their own labels and end at the last label's x̂0: they
/// store these keys but never read them.
const LCM_IGNORED: &[&str] = &["timestep_spacing", "steps_offset", "set_alpha_to_one"];
/// TCDScheduler also stores LCM's clipping keys and `timestep_scaling` without reading them.
const TCD_IGNORED: &[&str] = &[
    "timestep_spacing",
    "steps_offset",
    "set_alpha_to_one",
    "timestep_scaling",
    "clip_sample",
    "clip_sample_range",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
];

const CLASSES: &[Class] = &[
    Class {
        name: "DDIMScheduler",
        sampler: "ddim",
        accepts: &["clip_sample", "set_alpha_to_one", "steps_offset", "thresholding", "dynamic_thresholding_ratio", "clip_sample_range", "sample_max_value", "timestep_spacing"],
        implied: &[("prev", "stride")],
        choose: "",
        ignored: &[],
        defaults: || json!({"clip_sample": true, "set_alpha_to_one": true, "steps_offset": 0, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading"}),
    },
    Class {
        name: "DDPMScheduler",
        sampler: "ddpm",
        accepts: &["variance_type", "clip_sample", "thresholding", "dynamic_thresholding_ratio", "clip_sample_range", "sample_max_value", "timestep_spacing", "steps_offset"],
        implied: &[],
        choose: "",
        ignored: &[],
        defaults: || json!({"variance_type": "fixed_small", "clip_sample": true, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading", "steps_offset": 0}),
    },
    Class {
        name: "PNDMScheduler",
        sampler: "plms",
        accepts: &["skip_prk_steps", "set_alpha_to_one", "timestep_spacing", "steps_offset"],
        implied: &[("alpha_index", "diffusers")],
        choose: "`skip_prk_steps: false` (the default) → `f-pndm`",
        ignored: &[],
        defaults: || json!({"skip_prk_steps": false, "set_alpha_to_one": false, "timestep_spacing": "leading", "steps_offset": 0}),
    },
    Class {
        name: "EulerDiscreteScheduler",
        sampler: "euler",
        accepts: &["interpolation_type", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "sigma_min", "sigma_max", "timestep_spacing", "timestep_type", "steps_offset", "final_sigmas_type"],
        implied: &[],
        choose: "",
        ignored: &[],
        defaults: || json!({"timestep_spacing": "linspace", "steps_offset": 0, "use_karras_sigmas": false}),
    },
    Class {
        name: "EulerAncestralDiscreteScheduler",
        sampler: "euler_ancestral",
        accepts: &["timestep_spacing", "steps_offset"],
        implied: &[],
        choose: "",
        ignored: &[],
        defaults: || json!({"timestep_spacing": "linspace", "steps_offset": 0}),
    },
    Class { name: "HeunDiscreteScheduler", sampler: "heun", accepts: &["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "clip_sample", "clip_sample_range", "timestep_spacing", "steps_offset"], implied: &[], choose: "", ignored: &[], defaults: || json!({"timestep_spacing": "linspace", "steps_offset": 0, "use_karras_sigmas": false}) },
    Class { name: "KDPM2DiscreteScheduler", sampler: "kdpm2", accepts: &["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing", "steps_offset"], implied: &[], choose: "", ignored: &[], defaults: || json!({"timestep_spacing": "linspace", "steps_offset": 0, "use_karras_sigmas": false}) },
    Class {
        name: "KDPM2AncestralDiscreteScheduler",
        sampler: "kdpm2_ancestral",
        accepts: &["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing", "steps_offset"],
        implied: &[],
        choose: "",
        ignored: &[],
        defaults: || json!({"timestep_spacing": "linspace", "steps_offset": 0, "use_karras_sigmas": false}),
    },
    Class {
        name: "DPMSolverSDEScheduler",
        sampler: "dpmpp_sde",
        accepts: &["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "noise_sampler_seed", "timestep_spacing", "steps_offset"],
        implied: &[],
        choose: "",
        ignored: &[],
        defaults: || json!({"timestep_spacing": "linspace", "steps_offset": 0, "use_karras_sigmas": false}),
    },
    Class {
        name: "LCMScheduler",
        sampler: "lcm",
        accepts: &["original_inference_steps", "clip_sample", "clip_sample_range", "set_alpha_to_one", "steps_offset", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing", "timestep_scaling"],
        implied: &[],
        choose: "",
        ignored: LCM_IGNORED,
        defaults: || json!({"original_inference_steps": 50, "timestep_scaling": 10.0, "clip_sample": false, "clip_sample_range": 1.0, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}),
    },
    Class { name: "TCDScheduler", sampler: "tcd", accepts: &["original_inference_steps", "clip_sample", "clip_sample_range", "set_alpha_to_one", "steps_offset", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing", "timestep_scaling"], implied: &[], choose: "", ignored: TCD_IGNORED, defaults: || json!({"original_inference_steps": 50}) },
    Class { name: "LMSDiscreteScheduler", sampler: "lms", accepts: &["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing", "steps_offset"], implied: &[], choose: "", ignored: &[], defaults: || json!({"timestep_spacing": "linspace", "steps_offset": 0, "use_karras_sigmas": false}) },
    Class {
        name: "DPMSolverMultistepScheduler",
        sampler: "dpm_solver++",
        accepts: &["solver_order", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "algorithm_type", "solver_type", "lower_order_final", "euler_at_final", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "flow_shift", "final_sigmas_type", "lambda_min_clipped", "variance_type", "timestep_spacing", "steps_offset", "use_dynamic_shifting", "time_shift_type"],
        implied: &[("method", "multistep")],
        choose: "`algorithm_type`: `dpmsolver` → `dpm_solver`; `sde-dpmsolver++`, `sde-dpmsolver` → `sde: true`",
        ignored: &[],
        defaults: || json!({"solver_order": 2, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": true, "euler_at_final": false, "use_karras_sigmas": false, "final_sigmas_type": "zero", "timestep_spacing": "linspace", "steps_offset": 0}),
    },
    Class {
        name: "DPMSolverSinglestepScheduler",
        sampler: "dpm_solver++",
        accepts: &["solver_order", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "algorithm_type", "solver_type", "lower_order_final", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "flow_shift", "final_sigmas_type", "lambda_min_clipped", "variance_type", "use_dynamic_shifting", "time_shift_type"],
        implied: &[("method", "singlestep")],
        choose: "`algorithm_type` as above",
        ignored: &[],
        defaults: || json!({"solver_order": 2, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": false, "use_karras_sigmas": false, "final_sigmas_type": "zero", "timestep_spacing": "linspace", "steps_offset": 0}),
    },
    Class {
        name: "UniPCMultistepScheduler",
        sampler: "unipc",
        accepts: &["solver_order", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "predict_x0", "solver_type", "lower_order_final", "disable_corrector", "solver_p", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "flow_shift", "timestep_spacing", "steps_offset", "final_sigmas_type", "use_dynamic_shifting", "time_shift_type", "sigma_min", "sigma_max", "shift_terminal"],
        implied: &[],
        choose: "`predict_x0` → `predict: data` / `noise`",
        ignored: &[],
        defaults: || json!({"solver_order": 2, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "predict_x0": true, "solver_type": "bh2", "lower_order_final": true, "use_karras_sigmas": false, "timestep_spacing": "linspace", "steps_offset": 0, "final_sigmas_type": "zero"}),
    },
    Class {
        name: "DEISMultistepScheduler",
        sampler: "deis",
        accepts: &["solver_order", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "algorithm_type", "solver_type", "lower_order_final", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "flow_shift", "timestep_spacing", "steps_offset", "use_dynamic_shifting", "time_shift_type"],
        implied: &[],
        choose: "`algorithm_type: deis`, `solver_type: logrho` only",
        ignored: &[],
        defaults: || json!({"solver_order": 2, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "deis", "solver_type": "logrho", "lower_order_final": true, "use_karras_sigmas": false, "timestep_spacing": "linspace", "steps_offset": 0}),
    },
    Class {
        name: "SASolverScheduler",
        sampler: "sa_solver",
        accepts: &["predictor_order", "corrector_order", "tau_func", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "algorithm_type", "lower_order_final", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "flow_shift", "lambda_min_clipped", "variance_type", "timestep_spacing", "steps_offset"],
        implied: &[],
        choose: "`algorithm_type: noise_prediction` → `predict: noise`; `tau_func` (a callable, which `save_config` cannot write) is diffusers' default window (`tau`, `tau_t_min`, `tau_t_max` at their defaults)",
        ignored: &[],
        defaults: || json!({"predictor_order": 2, "corrector_order": 2, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "data_prediction", "lower_order_final": true, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "timestep_spacing": "linspace", "steps_offset": 0}),
    },
    Class {
        name: "FlowMatchEulerDiscreteScheduler",
        sampler: "flow_euler",
        accepts: &["shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len", "invert_sigmas", "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "time_shift_type", "stochastic_sampling"],
        implied: &[],
        choose: "`use_dynamic_shifting: true` is refused (μ depends on the image size: write `{name: flow_euler, use_dynamic_shifting: true, mu: …}`)",
        ignored: FLOW_PIPELINE_KEYS,
        defaults: || json!({"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": false, "time_shift_type": "exponential", "stochastic_sampling": false}),
    },
    Class {
        name: "FlowMatchHeunDiscreteScheduler",
        sampler: "flow_heun",
        accepts: &["shift"],
        implied: &[],
        choose: "",
        ignored: &[],
        defaults: || json!({"num_train_timesteps": 1000, "shift": 1.0}),
    },
    Class {
        name: "CMStochasticIterativeScheduler",
        sampler: "consistency",
        accepts: &["num_train_timesteps", "sigma_min", "sigma_max", "sigma_data", "s_noise", "rho", "clip_denoised"],
        implied: &[],
        choose: "",
        ignored: &[],
        defaults: || json!({"num_train_timesteps": 40, "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "s_noise": 1.0, "rho": 7.0, "clip_denoised": true}),
    },
];

/// Keys accepted at these values only (JSON): what bench does anyway, or keys that do not
/// change sampling.
const INERT: &[(&str, &str)] = &[
    ("use_flow_sigmas", "false"),
    ("use_dynamic_shifting", "false"),
    ("thresholding", "false"),
    ("clip_sample", "false"),
    ("euler_at_final", "false"),
    ("flow_shift", "1.0"),
    ("clip_sample_range", "1.0"),
    ("sample_max_value", "1.0"),
    ("dynamic_thresholding_ratio", "0.995"),
    ("steps_offset", "0"),
    ("lambda_min_clipped", "\"-Infinity\""),
    ("variance_type", "null"),
    ("solver_p", "null"),
    ("sigma_min", "null"),
    ("sigma_max", "null"),
    ("shift_terminal", "null"),
    ("interpolation_type", "\"linear\""),
    ("timestep_type", "\"discrete\""),
    ("time_shift_type", "\"exponential\""),
    ("final_sigmas_type", "\"zero\""),
    ("noise_sampler_seed", "null"),
    ("tau_func", "null"),
    ("invert_sigmas", "false"),
    // The consistency boundary condition is the model's (its pipeline's scheduler config).
    ("sigma_data", "0.5"),
];

fn inert(key: &str, v: &Value) -> bool {
    let Some(want) = INERT.iter().find(|(k, _)| *k == key).and_then(|(_, w)| serde_json::from_str::<Value>(w).ok()) else {
        return false;
    };
    // Integers and floats compare by value (older files write 1 for 1.0).
    match (v.as_f64(), want.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => *v == want,
    }
}

/// The diffusers flags that choose a timestep rule (`use_karras_sigmas: true` is `skip: karras`).
pub fn skip_flag(key: &str) -> Option<Skip> {
    match key {
        "use_karras_sigmas" => Some(Skip::Karras),
        "use_exponential_sigmas" => Some(Skip::Exponential),
        "use_beta_sigmas" => Some(Skip::Beta),
        "use_lu_lambdas" => Some(Skip::Lu),
        _ => None,
    }
}

/// README: the classes read, what each becomes, and the keys accepted only at one value.
pub fn render_markdown() -> String {
    let mut out = String::from("| `_class_name` | bench sampler | set by the class | keys that choose |\n|---|---|---|---|\n");
    for c in CLASSES {
        let implied: Vec<String> = c.implied.iter().map(|(k, v)| format!("`{k}: {v}`")).collect();
        let ignored: Vec<String> = c.ignored.iter().map(|k| format!("`{k}`")).collect();
        let choose = match (c.choose, ignored.is_empty()) {
            (choose, true) => choose.to_string(),
            ("", false) => format!("stored but unused: {}", ignored.join(", ")),
            (choose, false) => format!("{choose}; stored but unused: {}", ignored.join(", ")),
        };
        out += &format!("| {} | `{}` | {} | {choose} |\n", c.name, c.sampler, implied.join(", "));
    }
    let inert: Vec<String> = INERT.iter().map(|(k, v)| format!("`{k}: {}`", v.trim_matches('"'))).collect();
    out += &format!("\nAccepted only at the value bench does anyway: {}.\n", inert.join(", "));
    out
}

/// The class names read, for messages and the README.
pub fn class_names() -> Vec<&'static str> {
    CLASSES.iter().map(|c| c.name).collect()
}

/// JSON as Python's `json` writes it: ±inf become the bare tokens `-Infinity`/`Infinity` (diffusers
/// saves `lambda_min_clipped: -inf`), which are read here as the strings "-Infinity"/"Infinity".
pub fn parse_json(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str(&text.replace(": -Infinity", ": \"-Infinity\"").replace(": Infinity", ": \"Infinity\""))
}

/// Reads a scheduler config's text. Err is a message about the file (the caller names it).
pub fn read(text: &str) -> Result<FromConfig, String> {
    from_json(&parse_json(text).map_err(|e| format!("not valid JSON: {e}"))?)
}

/// [`read`] of a config already parsed with [`parse_json`].
pub fn from_json(v: &Value) -> Result<FromConfig, String> {
    let map = v.as_object().ok_or("not a JSON object")?;
    let class_name = map.get("_class_name").and_then(Value::as_str).ok_or("no `_class_name`: is this a diffusers scheduler_config.json?")?;
    let class = CLASSES
        .iter()
        .find(|c| c.name == class_name)
        .ok_or_else(|| format!("_class_name {class_name:?} is not a scheduler bench reads (known: {})", class_names().join(", ")))?;
    let model_keys = model_keys(class.name);
    let mut keys = match (class.defaults)() {
        Value::Object(m) => m,
        _ => unreachable!("class defaults are JSON objects"),
    };
    // A key the class does not take never reaches it: the class's own default (if it fixes one,
    // e.g. the singlestep solver's linspace grid) stands.
    for (k, v) in map.iter().filter(|(k, _)| k.starts_with('_') || model_keys.contains(&k.as_str()) || class.accepts.contains(&k.as_str())) {
        keys.insert(k.clone(), v.clone());
    }
    let mut sampler = class.sampler;
    let mut extra: Vec<(String, ParamValue)> = Vec::new();
    let bad = |k: &str, v: &Value, why: &str| format!("`{k}: {v}` is not honoured: {why}");
    // Keys that pick the sampler first: the others are checked against that sampler.
    if let Some(a) = keys.get("algorithm_type") {
        match (class.sampler, a.as_str()) {
            ("dpm_solver++", Some("dpmsolver++")) | ("deis", Some("deis")) | ("sa_solver", Some("data_prediction")) => {}
            ("sa_solver", Some("noise_prediction")) => extra.push(("predict".into(), ParamValue::Str("noise".into()))),
            ("dpm_solver++", Some("dpmsolver")) => sampler = "dpm_solver",
            ("dpm_solver++", Some("sde-dpmsolver++")) => extra.push(("sde".into(), ParamValue::Bool(true))),
            ("dpm_solver++", Some("sde-dpmsolver")) => {
                sampler = "dpm_solver";
                extra.push(("sde".into(), ParamValue::Bool(true)));
            }
            _ => return Err(bad("algorithm_type", a, "bench has no such algorithm for this class")),
        }
    }
    if class.name == "PNDMScheduler" && keys.get("skip_prk_steps") == Some(&json!(false)) {
        sampler = "f-pndm";
    }
    if class.sampler == "flow_euler" && keys.get("use_dynamic_shifting") == Some(&json!(true)) {
        return Err(bad(
            "use_dynamic_shifting",
            &json!(true),
            "μ depends on the image size, which the config does not say: write the entry as {name: flow_euler, use_dynamic_shifting: true, mu: …}",
        ));
    }
    let def: &SamplerDef = super::find(sampler).ok_or_else(|| format!("internal: no sampler {sampler}"))?;
    let mut params: Vec<(String, ParamValue)> = class.implied.iter().map(|(k, v)| (k.to_string(), ParamValue::Str(v.to_string()))).collect();
    params.extend(extra);
    let mut spacing: Option<Skip> = None;
    let mut levels: Option<(&str, Skip)> = None;
    for (k, v) in &keys {
        match k.as_str() {
            k if k.starts_with('_') || model_keys.contains(&k) => {}
            k if class.ignored.contains(&k) => {}
            "algorithm_type" | "skip_prk_steps" => {}
            "timestep_spacing" => {
                let s = (v.as_str().and_then(|s| Skip::parse(s).ok()))
                    .filter(|s| matches!(s, Skip::Linspace | Skip::Leading | Skip::Trailing))
                    .ok_or_else(|| bad(k, v, "timestep_spacing must be linspace, leading or trailing"))?;
                spacing = Some(s);
            }
            k if skip_flag(k).is_some() => {
                if v.as_bool().ok_or_else(|| bad(k, v, "must be true or false"))? {
                    if let Some((first, _)) = levels {
                        return Err(format!("`{first}` and `{k}` are both true; diffusers allows one"));
                    }
                    levels = skip_flag(k).map(|rule| (k, rule));
                }
            }
            "solver_type" if def.name == "deis" => {
                if v != "logrho" {
                    return Err(bad(k, v, "bench's deis is the log-ρ form"));
                }
            }
            "predict_x0" if def.name == "unipc" => {
                let x0 = v.as_bool().ok_or_else(|| bad(k, v, "must be true or false"))?;
                params.push(("predict".into(), ParamValue::Str(if x0 { "data" } else { "noise" }.into())));
            }
            _ => match def.lookup(k) {
                Some(p) if !v.is_null() => {
                    let value = match v {
                        Value::Bool(b) => ParamValue::Bool(*b),
                        Value::Number(n) if n.is_i64() => ParamValue::Int(n.as_i64().unwrap_or_default()),
                        Value::Number(n) => ParamValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                        Value::String(s) if s == "-Infinity" => ParamValue::Float(f64::NEG_INFINITY),
                        Value::String(s) if s == "Infinity" => ParamValue::Float(f64::INFINITY),
                        Value::String(s) => ParamValue::Str(s.clone()),
                        // diffusers' lists of step indices (`disable_corrector: [0, 1]`).
                        Value::Array(items) if items.iter().all(Value::is_u64) => {
                            ParamValue::Str(items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","))
                        }
                        _ => return Err(bad(k, v, "not a value bench's parameters take")),
                    };
                    def.check_value(p, &value).map_err(|m| bad(k, v, &m))?;
                    params.push((p.name.to_owned(), value));
                }
                _ if inert(k, v) => {}
                _ => return Err(bad(k, v, &format!("bench's `{}` has no such setting", def.name))),
            },
        }
    }
    let spacing = spacing.unwrap_or(def.default_skip);
    let skip = match levels {
        // diffusers takes these grids' ends from the spaced σ's: the full range with linspace.
        Some((flag, _)) if spacing != Skip::Linspace => {
            return Err(format!(
                "`{flag}: true` with `timestep_spacing: {spacing}` is not honoured (bench's grid spans the whole σ range, as diffusers' does with linspace)"
            ))
        }
        Some((_, rule)) => rule,
        None => spacing,
    };
    def.check_skip(skip)?;
    Ok(FromConfig { sampler: def.name, skip, params, model_keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_diffusion_1_pndm_config_is_plms_with_leading_and_offset() {
        // runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (diffusers 0.6.0).
        let sd = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;
        let c = read(sd).unwrap();
        assert_eq!((c.sampler, c.skip), ("plms", Skip::Leading));
        assert_eq!(
            c.params,
            vec![
                ("alpha_index".to_string(), ParamValue::Str("diffusers".into())),
                ("alpha_to_one".into(), ParamValue::Bool(false)),
                ("steps_offset".into(), ParamValue::Int(1)),
            ]
        );
    }

    #[test]
    fn algorithm_type_and_refusals_name_the_key() {
        let c = read(r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": true, "lambda_min_clipped": -Infinity}"#).unwrap();
        assert_eq!((c.sampler, c.skip), ("dpm_solver++", Skip::Karras));
        assert!(c.params.contains(&("sde".into(), ParamValue::Bool(true))), "{:?}", c.params);
        let e = read(r#"{"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": true}"#).unwrap_err();
        assert_eq!(e, "`use_flow_sigmas: true` is not honoured: bench's `dpm_solver++` has no such setting");
        // Keys another class's config carried over (`from_config` keeps them) are never read.
        let plain = read(r#"{"_class_name": "EulerDiscreteScheduler"}"#).unwrap();
        assert_eq!(read(r#"{"_class_name": "EulerDiscreteScheduler", "use_flow_sigmas": true, "skip_prk_steps": true}"#).unwrap(), plain);
        let e = read(r#"{"_class_name": "EulerDiscreteScheduler", "use_beta_sigmas": true, "use_karras_sigmas": true}"#).unwrap_err();
        assert_eq!(e, "`use_beta_sigmas` and `use_karras_sigmas` are both true; diffusers allows one");
        assert_eq!(read(r#"{"_class_name": "HeunDiscreteScheduler", "use_exponential_sigmas": true}"#).unwrap().skip, Skip::Exponential);
        let e = read(r#"{"_class_name": "DDIMScheduler", "clip_sample_range": 2.0, "clip_sample": false, "thresholding": true, "sample_max_value": 2.0, "dynamic_thresholding_ratio": 0.9, "set_alpha_to_one": "no"}"#).unwrap_err();
        assert!(e.starts_with("`set_alpha_to_one: \"no\"` is not honoured"), "{e}");
        let e = read(r#"{"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading", "use_karras_sigmas": true}"#).unwrap_err();
        assert!(e.starts_with("`use_karras_sigmas: true` with `timestep_spacing: leading` is not honoured"), "{e}");
        assert!(read(r#"{"_class_name": "IPNDMScheduler"}"#).unwrap_err().starts_with("_class_name \"IPNDMScheduler\" is not a scheduler bench reads"));
        let c = read(r#"{"_class_name": "SASolverScheduler", "algorithm_type": "noise_prediction", "predictor_order": 3, "use_karras_sigmas": true, "tau_func": null}"#).unwrap();
        assert_eq!((c.sampler, c.skip), ("sa_solver", Skip::Karras));
        assert!(c.params.contains(&("predict".to_string(), ParamValue::Str("noise".into()))), "{:?}", c.params);
        assert!(c.params.contains(&("predictor_order".to_string(), ParamValue::Int(3))), "{:?}", c.params);
        assert!(c.params.contains(&("corrector_order".to_string(), ParamValue::Int(2))), "{:?}", c.params);
        let e = read(r#"{"_class_name": "SASolverScheduler", "variance_type": "learned_range"}"#).unwrap_err();
        assert_eq!(e, "`variance_type: \"learned_range\"` is not honoured: bench's `sa_solver` has no such setting");
        let e = read(r#"{"_class_name": "SASolverScheduler", "use_flow_sigmas": true}"#).unwrap_err();
        assert_eq!(e, "`use_flow_sigmas: true` is not honoured: bench's `sa_solver` has no such setting");
    }
}
