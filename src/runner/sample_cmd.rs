//! `bench sample`: one sampler with the spec's model and schedule from given initial noise; the
//! final samples unquantised (decoded for latent models), optionally every model input and raw
//! output per NFE (`--trace`), for sample-by-sample comparisons with reference implementations.
use crate::conditioning::{Choice, ConditionSource};
use crate::models::{load_model, Guidance, LoadedModel};
use crate::noise::SeededNoise;
use crate::plan::Plan;
use crate::sampling::space_view::SpaceView;
use crate::sampling::{find, Counted};
use crate::spec::ParamValue;
use crate::timesteps::Skip;
use crate::{BenchError, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub struct SampleRequest<'a> {
    pub noise: &'a Path,
    pub out: &'a Path,
    /// Default: the spec's first cell's sampler (with that cell's parameters).
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    /// `--set key=value` overrides (`skip` sets the timestep rule).
    pub set: Vec<(String, String)>,
    pub trace: Option<&'a Path>,
    /// `--step-noise`: the stochastic steps' noise in draw order instead of the seeded stream.
    pub step_noise: Option<&'a Path>,
    /// `--prompt`, repeatable: one for every sample, or one per sample (default: the spec's
    /// seeded draw).
    pub prompts: Vec<String>,
    pub negative_prompt: Option<String>,
    /// `--class`, repeatable like `prompts`.
    pub classes: Vec<i64>,
    /// `--latents-out`: a latent model's final latents, before the decoder.
    pub latents_out: Option<&'a Path>,
}

/// Noise given in a file, handed out in draw order. A sampler cannot fail mid-draw, so a
/// shortage or a wrong shape is recorded and reported after sampling.
struct InjectedNoise {
    arrays: Vec<Tensor>,
    next: usize,
    problem: Option<String>,
}

impl InjectedNoise {
    /// `np.savez(FILE, *draws)`: arrays arr_0, arr_1, … in draw order.
    fn read(path: &Path) -> Result<InjectedNoise> {
        let bad = |m: String| BenchError::file(path, m);
        let named = Tensor::read_npz(path).map_err(|e| bad(format!("cannot read as .npz: {}", crate::models::first_line(&e.to_string()))))?;
        let mut indexed = named
            .into_iter()
            .map(|(name, t)| match name.strip_prefix("arr_").and_then(|k| k.parse::<usize>().ok()) {
                Some(k) => Ok((k, t)),
                None => Err(bad(format!("array {name:?}: expected arr_0, arr_1, … as np.savez(FILE, *draws) names them"))),
            })
            .collect::<Result<Vec<_>>>()?;
        indexed.sort_by_key(|(k, _)| *k);
        if indexed.iter().enumerate().any(|(i, (k, _))| i != *k) {
            return Err(bad("arrays must be arr_0 … arr_{N−1} with none missing".into()));
        }
        Ok(InjectedNoise { arrays: indexed.into_iter().map(|(_, t)| t).collect(), next: 0, problem: None })
    }
}

impl crate::sampling::NoiseSource for InjectedNoise {
    fn noise(&mut self, _step: usize, like: &Tensor) -> Tensor {
        let k = self.next;
        match self.arrays.get(k) {
            Some(a) if a.size() == like.size() => {
                self.next += 1;
                a.to_kind(like.kind()).to_device(like.device())
            }
            Some(a) => {
                self.problem.get_or_insert(format!("arr_{k} has shape {:?}; draw {k} of the sampler is {:?}", a.size(), like.size()));
                like.zeros_like()
            }
            None => {
                self.problem.get_or_insert(format!("holds {} arrays; the sampler draws more", self.arrays.len()));
                like.zeros_like()
            }
        }
    }
}

/// The guidance of a `bench sample` batch of `b`: the spec's seeded conditions unless
/// `--prompt`/`--class` give them (one for all, or one per sample).
fn guidance_of(plan: &Plan, model: &LoadedModel, req: &SampleRequest, b: usize, scale: Option<f64>, device: Device) -> Result<Option<Guidance>> {
    let (Some(conditioner), Some(c), Some(scale)) = (&model.conditioner, &plan.conditioning, scale) else {
        if !req.prompts.is_empty() || !req.classes.is_empty() || req.negative_prompt.is_some() {
            return Err(BenchError::user("--prompt/--class/--negative-prompt: the spec's model takes no conditions"));
        }
        return Ok(None);
    };
    let mut source = c.source.clone();
    if let (Some(n), ConditionSource::Prompts { negative_prompt, .. }) = (&req.negative_prompt, &mut source) {
        negative_prompt.clone_from(n);
    }
    let per_sample = |n: usize, flag: &str| -> Result<()> {
        if n == 1 || n == b {
            Ok(())
        } else {
            Err(BenchError::user(format!("{flag} given {n} times: give it once (every sample) or {b} times (one per sample)")))
        }
    };
    let choices: Vec<Choice> = match (&source, req.prompts.is_empty(), req.classes.is_empty()) {
        (ConditionSource::Prompts { .. }, false, true) => {
            per_sample(req.prompts.len(), "--prompt")?;
            (0..b).map(|i| Choice::Prompt(&req.prompts[i % req.prompts.len()])).collect()
        }
        (ConditionSource::Classes { num_classes, .. }, true, false) => {
            per_sample(req.classes.len(), "--class")?;
            if let Some(k) = req.classes.iter().find(|k| !(0..*num_classes).contains(*k)) {
                return Err(BenchError::user(format!("--class {k}: outside 0..{num_classes} (conditioning.num_classes)")));
            }
            (0..b).map(|i| Choice::Class(req.classes[i % req.classes.len()])).collect()
        }
        (_, true, true) => (0..b as u64).map(|i| c.source.choice(plan.seed, i)).collect(),
        (ConditionSource::Prompts { .. }, _, _) => return Err(BenchError::user("--class: the model is text-conditioned; use --prompt")),
        (ConditionSource::Classes { .. }, _, _) => return Err(BenchError::user("--prompt: the model is class-conditional; use --class")),
    };
    Ok(Some(tch::no_grad(|| conditioner.guidance_of(&source, &choices, scale, device))?))
}

/// float64 stays float64 (an oracle's float64 trajectory); anything else is written as float32.
fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let kind = if t.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    crate::fsutil::write_atomic_with(path, |tmp| t.to_kind(kind).to_device(Device::Cpu).write_npy(tmp).map_err(|e| crate::fsutil::write_error(path, e)))
}

/// Runs the request; returns the NFE made.
pub fn sample_trajectory(plan: &Plan, req: &SampleRequest) -> Result<Vec<usize>> {
    let first = plan.cells.first().ok_or_else(|| BenchError::user("the spec has no cells"))?;
    let name = req.sampler.clone().unwrap_or_else(|| first.sampler.clone());
    let def = find(&name).ok_or_else(|| {
        let names: Vec<&str> = crate::sampling::DEFINITIONS.iter().map(|d| d.name).collect();
        BenchError::user(format!("--sampler {name}: unknown sampler (known: {})", names.join(", ")))
    })?;
    let (mut params, mut skip) = if name == first.sampler { (first.params.clone(), first.skip) } else { (def.defaults(), def.default_skip) };
    let mut guidance_scale = first.guidance_scale;
    for (k, v) in &req.set {
        if k == "skip" {
            skip = Skip::parse(v.trim())?;
            continue;
        }
        if k == "guidance_scale" {
            if plan.conditioning.is_none() {
                return Err(BenchError::user("--set guidance_scale: the spec has no `conditioning:` (the model is unconditional)"));
            }
            let w = v.trim().parse::<f64>().ok().filter(|w| w.is_finite() && *w >= 0.0);
            guidance_scale = Some(w.ok_or_else(|| BenchError::user(format!("--set guidance_scale={v}: expected a finite number ≥ 0")))?);
            continue;
        }
        let p = def.param(k).ok_or_else(|| BenchError::user(format!("--set {k}: {}", def.unknown_param(k))))?;
        let value = def.check_value(p, &ParamValue::from_text(v)).map_err(|m| BenchError::user(format!("--set {k}={v}: {m}")))?;
        params.insert(k.clone(), value);
    }
    def.check_skip(skip).map_err(BenchError::user)?;
    let space = plan.model_identity.space;
    let schedule = plan.schedule.noise_schedule()?;
    let consistency = matches!(plan.model, crate::plan::ModelPlan::Consistency { .. });
    def.check_model(space, plan.prediction, consistency, schedule.zero_terminal_snr()).map_err(BenchError::user)?;
    let model = load_model(plan)?;
    if req.latents_out.is_some() && model.decoder.is_none() {
        return Err(BenchError::user("--latents-out: the model has no decoder (its samples are the images)"));
    }
    let device = plan.device.to_tch();
    let x_t = Tensor::read_npy(req.noise).map_err(|e| {
        BenchError::file(req.noise, format!("cannot read as .npy: {}", crate::models::first_line(&e.to_string())))
    })?;
    let want: Vec<i64> = model.sample_shape.clone();
    // Oracle models compute in the noise's dtype, so float64 noise gives a float64 trajectory
    // (reference comparisons free of float32 rounding); networks take float32.
    let oracle = matches!(plan.model, crate::plan::ModelPlan::Oracle(_));
    let kind_ok = x_t.kind() == Kind::Float || (oracle && x_t.kind() == Kind::Double);
    if !kind_ok || x_t.dim() != want.len() + 1 || x_t.size()[1..] != want[..] {
        return Err(BenchError::file(
            req.noise,
            format!(
                "expected {} [B,{}] noise, got {:?} {:?}",
                if oracle { "float32 or float64" } else { "float32" },
                want.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
                x_t.kind(),
                x_t.size()
            ),
        ));
    }
    let steps = req.steps.unwrap_or(first.steps);
    let sampler = def.build(&params, skip, steps, &schedule)?;
    let b = x_t.size()[0] as usize;
    let guidance = guidance_of(plan, &model, req, b, guidance_scale, device)?;
    let view = SpaceView::new(def.space(), space, model.prediction, &schedule);
    let counted = Counted::new(model.denoiser.as_ref(), model.prediction).guided(guidance.as_ref()).viewed(view.as_ref());
    let counted = if req.trace.is_some() { counted.with_trace() } else { counted };
    let x0 = match req.step_noise {
        Some(path) => {
            let mut injected = InjectedNoise::read(path)?;
            let x0 = tch::no_grad(|| sampler.sample(&counted, x_t.to_device(device), &mut injected))?;
            let used = injected.next;
            match injected.problem {
                Some(p) => return Err(BenchError::file(path, p)),
                None if used < injected.arrays.len() => {
                    return Err(BenchError::file(path, format!("holds {} arrays; the sampler drew {used}", injected.arrays.len())))
                }
                None => x0,
            }
        }
        None => {
            let mut noise = SeededNoise { seed: plan.seed, first: 0, count: b };
            tch::no_grad(|| sampler.sample(&counted, x_t.to_device(device), &mut noise))?
        }
    };
    if let Some(path) = req.latents_out {
        write_npy(path, &x0)?;
    }
    write_npy(req.out, &super::decode(&model, &x0)?)?;
    if let Some(dir) = req.trace {
        fs_err::create_dir_all(dir).map_err(|e| BenchError::file(dir, format!("cannot create: {e}")))?;
        let mut labels = String::new();
        for (k, (label, x, out)) in counted.take_trace().into_iter().enumerate() {
            write_npy(&dir.join(format!("nfe-{k:04}-x.npy")), &x)?;
            write_npy(&dir.join(format!("nfe-{k:04}-out.npy")), &out)?;
            labels.push_str(&format!("{k}\t{label:.17}\n"));
        }
        crate::fsutil::write_atomic(&dir.join("labels.tsv"), labels.as_bytes())?;
    }
    Ok(counted.cost_each(b).into_iter().map(|c| c.0).collect())
}
