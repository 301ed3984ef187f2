//! Execution: a validated plan → for each cell, batches of seeded noise → sampler(model) →
//! quantised samples → streaming metric statistics → one result row.
//!
//! Work is split into *parts*: contiguous sample ranges of a cell (`--shard K/N` runs part K of
//! N of every cell; an unsharded run is part 1 of 1). Each part checkpoints its statistics and
//! next sample index atomically every few batches, so any interruption resumes exactly; a cell's
//! row is written only after all its parts are done and their statistics merged (sums, not
//! averages), so a crash never leaves a row that claims work that was not done.
use crate::metrics::fid_cli::{FeatureExtractor, InceptionExtractor};
use crate::metrics::frechet::frechet_distance;
use crate::metrics::inception::FidInception;
use crate::metrics::preprocess::quantize;
use crate::metrics::stats::{FeatureStats, Moments};
use crate::models::oracle::{GaussianOracle, GmmOracle};
use crate::models::EpsModel;
use crate::noise::SeededNoise;
use crate::plan::{Cell, DataPlan, GmmPlan, ModelPlan, MomentPlan, Plan};
use crate::results::{self, ResultRow, RunInfo};
use crate::sampling::{self, Counted, Sampler};
use crate::{BenchError, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::Cell as StdCell;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Checkpoint every this many batches (and at the end of every part).
const CHECKPOINT_EVERY: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || BenchError::user(format!("--shard {s:?}: expected K/N with 1 ≤ K ≤ N, e.g. 2/4"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (k.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
    /// The sample range of this part of a cell of `samples` samples.
    pub fn range(&self, samples: u64) -> (u64, u64) {
        let n = self.count as u64;
        let k = self.index as u64 - 1;
        (samples * k / n, samples * (k + 1) / n)
    }
    pub fn tag(&self) -> String {
        format!("part-{}-of-{}", self.index, self.count)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub force: bool,
    pub shard: Option<Shard>,
    pub quiet: bool,
}

/// What a finished `bench run` did.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub cells_total: usize,
    pub cells_skipped: usize,
    pub cells_finished: usize,
    /// Cells whose part (this shard) finished but whose other parts are still missing.
    pub cells_partial: usize,
    pub cells_locked: usize,
}

/// The model a plan names, plus the exact data distribution when it is an oracle.
pub struct LoadedModel {
    pub model: Box<dyn EpsModel>,
    pub sample_shape: Vec<i64>,
    pub gaussian: Option<GaussianOracle>,
    /// Exact data moments (flattened mean, full covariance) for `fd_pixel` against an oracle.
    pub data_moments: Option<Moments>,
}

fn moment_tensor(m: &MomentPlan, shape: [i64; 3], what: &str) -> Result<Tensor> {
    let opts = (Kind::Double, Device::Cpu);
    Ok(match m {
        MomentPlan::Scalar(v) => Tensor::full(shape, *v, opts),
        MomentPlan::PerChannel(v) => Tensor::from_slice(v).view([shape[0], 1, 1]).expand(shape, false).contiguous(),
        MomentPlan::Npy(p) => {
            let t = Tensor::read_npy(p).map_err(|e| BenchError::file(p, format!("cannot read {what} .npy: {e}")))?;
            if t.size() != shape {
                return Err(BenchError::file(p, format!("{what} has shape {:?}, expected {shape:?}", t.size())));
            }
            t.to_kind(Kind::Double)
        }
    })
}

fn to_moments(mean: &Tensor, cov: &Tensor) -> Result<Moments> {
    let mu: Vec<f64> = Vec::try_from(mean.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    let d = mu.len();
    let sigma: Vec<f64> = Vec::try_from(cov.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    Ok(Moments {
        mu: ndarray::Array1::from(mu),
        sigma: ndarray::Array2::from_shape_vec((d, d), sigma).map_err(|e| BenchError::Internal(e.to_string()))?,
    })
}

pub fn precision_kind(plan: &Plan) -> Kind {
    use crate::spec::Precision;
    match plan.precision {
        Precision::Bf16 => Kind::BFloat16,
        Precision::Fp16 => Kind::Half,
        Precision::Fp32 | Precision::Tf32 => Kind::Float,
    }
}

pub fn load_model(plan: &Plan) -> Result<LoadedModel> {
    let device = plan.device.to_tch();
    let kind = precision_kind(plan);
    let schedule = plan.schedule.noise_schedule()?;
    Ok(match &plan.model {
        ModelPlan::Diffusers { path } => {
            let unet = crate::models::unet::load_diffusers(path, device, kind)?;
            let c = unet.config.in_channels;
            let size = unet.config.sample_size.ok_or_else(|| {
                BenchError::file(path.join("config.json"), "no sample_size: the sample resolution is unknown")
            })?;
            LoadedModel { sample_shape: vec![c, size, size], model: Box::new(unet), gaussian: None, data_moments: None }
        }
        ModelPlan::Ddim { path, config, ema } => {
            let unet = crate::models::unet::load_ddim(path, config, *ema, device, kind)?;
            let shape = vec![config.in_channels, config.resolution, config.resolution];
            LoadedModel { sample_shape: shape, model: Box::new(unet), gaussian: None, data_moments: None }
        }
        ModelPlan::Torchscript { path, shape } => {
            let m = crate::models::torchscript::TorchScriptModel::load(path, device, kind)?;
            m.probe(shape)?;
            LoadedModel { sample_shape: shape.to_vec(), model: Box::new(m), gaussian: None, data_moments: None }
        }
        ModelPlan::Oracle(DataPlan::Gaussian { shape, mean, std }) => {
            let mean = moment_tensor(mean, *shape, "mean")?;
            let std = moment_tensor(std, *shape, "std")?;
            let cov = std.flatten(0, -1).square().diag(0);
            let data_moments = Some(to_moments(&mean, &cov)?);
            let oracle = GaussianOracle::new(schedule.clone(), mean.shallow_clone(), std.shallow_clone());
            let model = GaussianOracle::new(schedule, mean, std);
            LoadedModel { sample_shape: shape.to_vec(), model: Box::new(model), gaussian: Some(oracle), data_moments }
        }
        ModelPlan::Oracle(DataPlan::Gmm { shape, mixture }) => {
            let oracle = match mixture {
                GmmPlan::Explicit { weights, means, stds } => {
                    let m: Vec<Tensor> = means.iter().map(|m| moment_tensor(m, *shape, "gmm mean")).collect::<Result<_>>()?;
                    let s: Vec<Tensor> = stds.iter().map(|s| moment_tensor(s, *shape, "gmm std")).collect::<Result<_>>()?;
                    GmmOracle::new(schedule, Tensor::from_slice(weights), Tensor::stack(&m, 0), Tensor::stack(&s, 0))?
                }
                GmmPlan::Random { components, seed } => GmmOracle::from_seed(schedule, shape, *components, *seed)?,
            };
            let data_moments = Some(to_moments(&oracle.data_mean(), &oracle.data_covariance())?);
            LoadedModel { sample_shape: shape.to_vec(), model: Box::new(oracle), gaussian: None, data_moments }
        }
    })
}

/// Wraps a model to measure the seconds spent inside it (synchronised on CUDA), so a cell's
/// time splits into model time and sampler overhead.
struct TimedModel<'a> {
    inner: &'a dyn EpsModel,
    device: Device,
    seconds: StdCell<f64>,
}

impl EpsModel for TimedModel<'_> {
    fn eps(&self, x: &Tensor, t: &Tensor) -> Tensor {
        sync(self.device);
        let start = Instant::now();
        let e = self.inner.eps(x, t);
        sync(self.device);
        self.seconds.set(self.seconds.get() + start.elapsed().as_secs_f64());
        e
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Progress of one part of one cell, checkpointed as JSON next to its statistics files.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PartState {
    pub first: u64,
    pub end: u64,
    pub next: u64,
    pub done: bool,
    pub nan_samples: u64,
    pub first_nan_index: Option<u64>,
    pub seconds_sampling: f64,
    pub seconds_model: f64,
    pub seconds_metrics: f64,
    pub batches: u64,
    pub nfe_per_sample: u64,
    /// Suffix of the statistics files that belong to this state (`next` at the time of writing).
    pub stats_tag: Option<String>,
}

/// Everything a cell run needs besides the cell itself.
struct Ctx<'a> {
    plan: &'a Plan,
    model: &'a LoadedModel,
    schedule: crate::schedule::NoiseSchedule,
    fid: Option<(InceptionExtractor, Moments)>,
    pixel_reference: Option<Moments>,
    device: Device,
    progress: MultiProgress,
    overall: ProgressBar,
}

impl Ctx<'_> {
    fn cell_dir(&self, cell: &Cell) -> PathBuf {
        self.plan.output.join("cells").join(&cell.hash)
    }
}

/// Run (or resume) a plan. Returns what was done; the results table and report are in
/// `plan.output`.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let out = &plan.output;
    std::fs::create_dir_all(out).map_err(|e| BenchError::io(format!("creating output folder {}", out.display()), e))?;
    let spec_copy = out.join("spec.yaml");
    std::fs::copy(&plan.spec_path, &spec_copy)
        .map_err(|e| BenchError::io(format!("copying the spec to {}", spec_copy.display()), e))?;

    let model = load_model(plan)?;
    let device = plan.device.to_tch();
    if device.is_cuda() {
        // Fixed shapes for a whole run: let cuDNN pick the fastest convolution algorithms once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    if let crate::spec::Precision::Tf32 = plan.precision {
        // tch exposes no global TF32 switch; TF32 applies where libtorch enables it by default
        // (cuDNN convolutions). Recorded as requested.
        tracing::info!("precision tf32: cuDNN convolutions use TF32 (libtorch default); matmuls stay fp32");
    }
    let fid = match &plan.metrics.fid {
        Some(f) => {
            let net = FidInception::load(&f.weights, device, f.allow_custom_weights)?;
            let reference = Moments::load_npz(&f.reference)?;
            if reference.mu.len() != f.dims {
                return Err(BenchError::file(
                    &f.reference,
                    format!("reference statistics have {} dims but metrics.fid.dims is {}", reference.mu.len(), f.dims),
                ));
            }
            Some((InceptionExtractor { net, mode: f.mode, dims: f.dims }, reference))
        }
        None => None,
    };
    let pixel_reference = match &plan.metrics.fd_pixel {
        Some(p) => Some(match &p.reference {
            Some(path) => Moments::load_npz(path)?,
            None => model.data_moments.clone().ok_or_else(|| {
                BenchError::user(format!(
                    "{}: metrics.fd_pixel needs `reference:` (a stats .npz) unless the model is an oracle",
                    plan.spec_path.display()
                ))
            })?,
        }),
        None => None,
    };

    if let Some(r) = &pixel_reference {
        if plan.samples <= r.mu.len() as u64 {
            tracing::warn!(
                "fd_pixel: {} samples in {} dimensions: the sample covariance is rank-deficient and the estimate is dominated by its bias",
                plan.samples,
                r.mu.len()
            );
        }
    }
    // Rows of cells this spec no longer has (a changed parameter changes the hash) are dropped,
    // so the table and report show exactly the current sweep.
    let existing = results::read_results(out).unwrap_or_default();
    let current: std::collections::HashSet<&str> = plan.cells.iter().map(|c| c.hash.as_str()).collect();
    let (keep, stale): (Vec<ResultRow>, Vec<ResultRow>) =
        existing.into_iter().partition(|r| current.contains(r.cell_hash.as_str()));
    if !stale.is_empty() {
        tracing::info!("dropping {} result rows of cells no longer in the spec", stale.len());
        results::write_results(out, &keep)?;
    }
    let done: std::collections::HashSet<String> = keep.into_iter().map(|r| r.cell_hash).collect();
    let progress = MultiProgress::with_draw_target(if opts.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let shard = opts.shard.unwrap_or(Shard::WHOLE);
    let todo: Vec<&Cell> = plan.cells.iter().filter(|c| opts.force || !done.contains(&c.hash)).collect();
    let work: u64 = todo.iter().map(|c| estimate_nfe(plan, c) * plan.samples / shard.count as u64).sum();
    let overall = progress.add(ProgressBar::new(work.max(1)));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {percent:>3}% {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    overall.set_prefix("overall");
    let schedule = plan.schedule.noise_schedule()?;
    let ctx = Ctx { plan, model: &model, schedule, fid, pixel_reference, device, progress, overall };

    let mut summary = RunSummary { cells_total: plan.cells.len(), cells_skipped: plan.cells.len() - todo.len(), ..Default::default() };
    let mut warmed = false;
    for cell in todo {
        let dir = ctx.cell_dir(cell);
        if opts.force && dir.exists() && shard == Shard::WHOLE {
            std::fs::remove_dir_all(&dir).map_err(|e| BenchError::io(format!("clearing {}", dir.display()), e))?;
        }
        let sampler = build_sampler(plan, cell, &ctx.schedule)?;
        if !warmed {
            warm_up(&ctx, sampler.as_ref());
            warmed = true;
        }
        match run_part(&ctx, cell, sampler.as_ref(), shard)? {
            PartOutcome::Locked(pid) => {
                tracing::warn!("cell {} part {}: locked by process {pid}; skipped", cell.index, shard.tag());
                summary.cells_locked += 1;
                continue;
            }
            PartOutcome::Done => {}
        }
        // An unsharded run finishes whatever partition the cell's finished parts came from.
        let partition = if shard == Shard::WHOLE { existing_partition(&dir).unwrap_or(Shard::WHOLE) } else { shard };
        if partition != Shard::WHOLE && shard == Shard::WHOLE {
            for k in 1..=partition.count {
                let part = Shard { index: k, count: partition.count };
                if let PartOutcome::Locked(pid) = run_part(&ctx, cell, sampler.as_ref(), part)? {
                    return Err(BenchError::user(format!(
                        "cell {} {}: locked by running process {pid}; wait for it or stop it",
                        cell.index,
                        part.tag()
                    )));
                }
            }
        }
        match finish_cell(&ctx, cell, sampler.as_ref(), partition)? {
            true => summary.cells_finished += 1,
            false => summary.cells_partial += 1,
        }
    }
    ctx.overall.finish_and_clear();
    let env = crate::doctor::Environment::probe();
    let info = RunInfo {
        bench_version: crate::VERSION.into(),
        git_commit: crate::GIT_COMMIT.into(),
        libtorch_version: Some(env.libtorch_version.clone()),
        cuda_version: None,
        cudnn_version: env.cudnn_version.map(|v| v.to_string()),
        device_name: device_name(&env, device),
        precision: plan.precision.to_string(),
        fid_mode: plan.metrics.fid.as_ref().map(|f| f.mode.as_str().to_string()),
        fid_weights_sha256: plan.metrics.fid.as_ref().and_then(|f| sha256_file(&f.weights).ok()),
        model_weights_sha256: plan.model_fingerprint.clone(),
        reference_stats_sha256: plan.metrics.fid.as_ref().and_then(|f| sha256_file(&f.reference).ok()),
        seed: plan.seed,
        samples: plan.samples,
        spec_hash: plan.spec_hash.clone(),
        started_utc: None,
        finished_utc: None,
        total_wall_seconds: Some(started.elapsed().as_secs_f64()),
        hostname: std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()),
        command: Some(std::env::args().collect::<Vec<_>>().join(" ")),
        ..RunInfo::default()
    };
    results::write_run_info(out, &info)?;
    Ok(summary)
}

fn device_name(env: &crate::doctor::Environment, device: Device) -> String {
    match device {
        Device::Cuda(i) => env.cuda_devices.get(i).cloned().unwrap_or_else(|| format!("cuda:{i}")),
        _ => format!("cpu ({} threads)", env.threads),
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// The sampler a cell names, configured from the cell's parameters.
pub fn build_sampler(plan: &Plan, cell: &Cell, schedule: &crate::schedule::NoiseSchedule) -> Result<Box<dyn Sampler>> {
    let mut params: sampling::SamplerParams = cell.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    params.insert("skip".into(), cell.skip.to_string());
    sampling::build_sampler(&cell.sampler, &params, cell.steps, schedule)
        .map_err(|e| BenchError::user(format!("{}: cell {} ({}): {e}", plan.spec_path.display(), cell.index, cell.sampler)))
}

/// NFE per sample of a cell (for cost estimates before anything runs).
pub fn estimate_nfe(plan: &Plan, cell: &Cell) -> u64 {
    plan.schedule
        .noise_schedule()
        .ok()
        .and_then(|s| build_sampler(plan, cell, &s).ok())
        .map_or(cell.steps as u64, |s| s.nfe() as u64)
}

/// One model call on a full batch before anything is timed: first calls pay for allocator
/// growth, cuDNN autotuning and lazy initialisation.
fn warm_up(ctx: &Ctx, sampler: &dyn Sampler) {
    let b = ctx.plan.batch_size.min(ctx.plan.samples).max(1) as i64;
    let mut shape = vec![b];
    shape.extend(sample_shape(ctx));
    let x = Tensor::zeros(shape.as_slice(), (Kind::Float, ctx.device));
    let label = sampler.labels().first().copied().unwrap_or(0.0);
    let _ = Counted::new(ctx.model.model.as_ref()).eps(&x, label);
    sync(ctx.device);
}

fn sample_shape(ctx: &Ctx) -> Vec<i64> {
    ctx.model.sample_shape.clone()
}

enum PartOutcome {
    Done,
    Locked(crate::lease::Holder),
}

/// Streaming statistics of one part, for every metric the plan asks for.
struct PartStats {
    fid: Option<FeatureStats>,
    pixel: Option<FeatureStats>,
}

impl PartStats {
    fn new(ctx: &Ctx) -> Self {
        let pixel_dims = sample_shape(ctx).iter().product::<i64>() as usize;
        PartStats {
            fid: ctx.fid.as_ref().map(|(x, _)| FeatureStats::new(x.dims(), ctx.device)),
            pixel: ctx.pixel_reference.as_ref().map(|_| FeatureStats::new(pixel_dims, ctx.device)),
        }
    }
    fn paths(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
        (dir.join(format!("{tag}.fid.npz")), dir.join(format!("{tag}.pixel.npz")))
    }
    fn save(&self, dir: &Path, tag: &str) -> Result<()> {
        let (f, p) = Self::paths(dir, tag);
        if let Some(s) = &self.fid {
            atomic_write_with(&f, |tmp| s.save_npz(tmp))?;
        }
        if let Some(s) = &self.pixel {
            atomic_write_with(&p, |tmp| s.save_npz(tmp))?;
        }
        Ok(())
    }
    fn load(ctx: &Ctx, dir: &Path, tag: &str) -> Result<Self> {
        let (f, p) = Self::paths(dir, tag);
        let mut s = PartStats::new(ctx);
        if s.fid.is_some() {
            s.fid = Some(FeatureStats::load_npz(&f, ctx.device)?);
        }
        if s.pixel.is_some() {
            s.pixel = Some(FeatureStats::load_npz(&p, ctx.device)?);
        }
        Ok(s)
    }
    fn merge(&mut self, other: &PartStats) -> Result<()> {
        if let (Some(a), Some(b)) = (&mut self.fid, &other.fid) {
            a.merge(b)?;
        }
        if let (Some(a), Some(b)) = (&mut self.pixel, &other.pixel) {
            a.merge(b)?;
        }
        Ok(())
    }
}

/// Write through a temporary file in the same folder, then rename: readers see the old or the
/// new file, never a torn one.
fn atomic_write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| BenchError::io(format!("renaming {} into place", path.display()), e))
}

fn read_state(path: &Path) -> Option<PartState> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_state(path: &Path, state: &PartState) -> Result<()> {
    atomic_write_with(path, |tmp| {
        let text = serde_json::to_string_pretty(state).map_err(|e| BenchError::Internal(e.to_string()))?;
        std::fs::write(tmp, text).map_err(|e| BenchError::io(format!("writing {}", tmp.display()), e))
    })
}

/// The partition (N) of a cell's finished or started parts, if any.
fn existing_partition(dir: &Path) -> Option<Shard> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| {
            let rest = n.strip_prefix("part-")?.strip_suffix(".json")?;
            let (k, count) = rest.split_once("-of-")?;
            Some(Shard { index: k.parse().ok()?, count: count.parse().ok()? })
        })
        .map(|s| Shard { index: 1, count: s.count })
        .max_by_key(|s| s.count)
}

/// Run (or resume) one part of one cell to completion.
fn run_part(ctx: &Ctx, cell: &Cell, sampler: &dyn Sampler, part: Shard) -> Result<PartOutcome> {
    let plan = ctx.plan;
    let dir = ctx.cell_dir(cell);
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let tag = part.tag();
    let lock = match crate::lease::Lease::acquire(dir.join(format!("{tag}.lock")))? {
        Ok(l) => l,
        Err(pid) => return Ok(PartOutcome::Locked(pid)),
    };
    let state_path = dir.join(format!("{tag}.json"));
    let (first, end) = part.range(plan.samples);
    let (mut state, mut stats) = match read_state(&state_path) {
        Some(s) if s.first == first && s.end == end => {
            let stats = match &s.stats_tag {
                Some(t) => PartStats::load(ctx, &dir, t)?,
                None => PartStats::new(ctx),
            };
            (s, stats)
        }
        _ => (PartState { first, end, next: first, ..Default::default() }, PartStats::new(ctx)),
    };
    if state.next > first && !state.done {
        tracing::info!("cell {} {tag}: resuming at sample {} from its checkpoint", cell.index, state.next);
    }
    if state.done {
        drop(lock);
        return Ok(PartOutcome::Done);
    }
    let bar = ctx.progress.add(ProgressBar::new(end - first));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("cell {}", cell.index));
    bar.set_message(format!("{} {} S={}", cell.sampler, cell.params_text(), cell.steps));
    bar.set_position(state.next - first);
    let shape = sample_shape(ctx);
    let batch = plan.batch_size.max(1);
    let save_limit = plan.save_samples.limit(plan.samples);
    let mut since_checkpoint = 0;
    while state.next < end {
        let count = batch.min(end - state.next);
        let timed = TimedModel { inner: ctx.model.model.as_ref(), device: ctx.device, seconds: StdCell::new(0.0) };
        sync(ctx.device);
        let t0 = Instant::now();
        let (x0, nfe) = sample_batch(plan.seed, &timed, sampler, &shape, ctx.device, state.next, count);
        sync(ctx.device);
        state.seconds_sampling += t0.elapsed().as_secs_f64();
        state.seconds_model += timed.seconds.get();
        state.nfe_per_sample = nfe as u64;
        let t1 = Instant::now();
        observe_batch(ctx, &mut stats, &mut state, &x0, &dir, save_limit)?;
        sync(ctx.device);
        state.seconds_metrics += t1.elapsed().as_secs_f64();
        state.batches += 1;
        state.next += count;
        bar.set_position(state.next - first);
        ctx.overall.inc(count * state.nfe_per_sample);
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_EVERY || state.next >= end || crate::interrupt::requested() {
            since_checkpoint = 0;
            state.done = state.next >= end;
            lock.check()?;
            checkpoint(&dir, &tag, &mut state, &stats, &state_path)?;
            crate::interrupt::check()?;
        }
    }
    bar.finish_and_clear();
    ctx.progress.remove(&bar);
    drop(lock);
    Ok(PartOutcome::Done)
}

/// Samples `first..first+count` of a cell: the one place x_T and step noise are drawn, both
/// functions of (seed, sample index, step) only. Returns the samples and the NFE per sample.
pub fn sample_batch(
    seed: u64,
    model: &dyn EpsModel,
    sampler: &dyn Sampler,
    shape: &[i64],
    device: Device,
    first: u64,
    count: u64,
) -> (Tensor, usize) {
    let counted = Counted::new(model);
    let mut noise = SeededNoise { seed, first, count: count as usize };
    let x_t = noise.initial(shape, device, Kind::Float);
    let x0 = tch::no_grad(|| sampler.sample(&counted, x_t, &mut noise));
    (x0, counted.nfe())
}

/// Statistics files first (under a new name), then the JSON that points at them, then the old
/// statistics are removed: a crash at any point leaves a consistent (state, statistics) pair.
fn checkpoint(dir: &Path, tag: &str, state: &mut PartState, stats: &PartStats, state_path: &Path) -> Result<()> {
    let stats_tag = format!("{tag}.next-{}", state.next);
    stats.save(dir, &stats_tag)?;
    let old = state.stats_tag.replace(stats_tag);
    write_state(state_path, state)?;
    if let Some(old) = old.filter(|o| Some(o) != state.stats_tag.as_ref()) {
        let (f, p) = PartStats::paths(dir, &old);
        let _ = std::fs::remove_file(f);
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Quantise, check for NaN/Inf, feed every metric, keep PNGs of the first samples.
fn observe_batch(ctx: &Ctx, stats: &mut PartStats, state: &mut PartState, x0: &Tensor, dir: &Path, save_limit: u64) -> Result<()> {
    let b = x0.size()[0];
    let flat = x0.view([b, -1]);
    let finite = flat.isfinite().all_dim(1, false);
    let finite_idx = finite.nonzero().squeeze_dim(1);
    let n_finite = finite_idx.size()[0];
    if n_finite < b {
        let bad: Vec<bool> = Vec::try_from(finite.logical_not().to_device(Device::Cpu)).unwrap_or_default();
        let first_bad = bad.iter().position(|&x| x).map(|p| state.next + p as u64);
        state.nan_samples += (b - n_finite) as u64;
        if state.first_nan_index.is_none() {
            state.first_nan_index = first_bad;
        }
    }
    let good = if n_finite < b { x0.index_select(0, &finite_idx) } else { x0.shallow_clone() };
    if let Some(s) = &mut stats.pixel {
        s.add_batch(&good.view([n_finite, -1]).to_kind(Kind::Double))?;
    }
    let needs_u8 = stats.fid.is_some() || state.next < save_limit;
    if !needs_u8 {
        return Ok(());
    }
    let images = quantize(&x0.nan_to_num(0.0, 0.0, 0.0));
    if let (Some(s), Some((extractor, _))) = (&mut stats.fid, &ctx.fid) {
        let imgs = if n_finite < b { images.index_select(0, &finite_idx) } else { images.shallow_clone() };
        if n_finite > 0 {
            s.add_batch(&extractor.features(&imgs)?.to_kind(Kind::Double))?;
        }
    }
    if state.next < save_limit {
        let keep = (save_limit - state.next).min(b as u64) as i64;
        save_pngs(&images.narrow(0, 0, keep), &ctx.plan.output.join("samples").join(dir.file_name().unwrap_or_default()), state.next)?;
    }
    Ok(())
}

fn save_pngs(images: &Tensor, dir: &Path, first: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let (n, c, h, w) = images.size4().map_err(|e| BenchError::Internal(e.to_string()))?;
    if c != 3 && c != 1 {
        return Ok(());
    }
    let hwc = images.permute([0, 2, 3, 1]).contiguous().to_device(Device::Cpu);
    let data: Vec<u8> = Vec::try_from(hwc.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    let per = (h * w * c) as usize;
    for i in 0..n as usize {
        let path = dir.join(format!("{:05}.png", first + i as u64));
        let color = if c == 3 { image::ExtendedColorType::Rgb8 } else { image::ExtendedColorType::L8 };
        image::save_buffer(&path, &data[i * per..(i + 1) * per], w as u32, h as u32, color)
            .map_err(|e| BenchError::Internal(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Merge the parts of a finished cell, compute its metrics and append its row. Returns false
/// when some part is not finished yet (another shard's work).
fn finish_cell(ctx: &Ctx, cell: &Cell, sampler: &dyn Sampler, partition: Shard) -> Result<bool> {
    let plan = ctx.plan;
    let dir = ctx.cell_dir(cell);
    let mut total = PartState::default();
    let mut stats = PartStats::new(ctx);
    for k in 1..=partition.count {
        let part = Shard { index: k, count: partition.count };
        let Some(s) = read_state(&dir.join(format!("{}.json", part.tag()))).filter(|s| s.done) else {
            return Ok(false);
        };
        let part_stats = match &s.stats_tag {
            Some(t) => PartStats::load(ctx, &dir, t)?,
            None => PartStats::new(ctx),
        };
        stats.merge(&part_stats)?;
        total.nan_samples += s.nan_samples;
        total.first_nan_index = total.first_nan_index.or(s.first_nan_index);
        total.seconds_sampling += s.seconds_sampling;
        total.seconds_model += s.seconds_model;
        total.seconds_metrics += s.seconds_metrics;
        total.batches += s.batches;
        total.nfe_per_sample = s.nfe_per_sample;
    }
    let t0 = Instant::now();
    let fid = match (&stats.fid, &ctx.fid) {
        (Some(s), Some((_, reference))) => Some(fd_of(s, reference)?),
        _ => None,
    };
    let fd_pixel = match (&stats.pixel, &ctx.pixel_reference) {
        (Some(s), Some(reference)) => Some(fd_of(s, reference)?),
        _ => None,
    };
    let fd_exact = match (&ctx.model.gaussian, plan.metrics.fd_exact) {
        (Some(oracle), true) => sampling::exact::exact_fd(sampler, oracle).ok(),
        _ => None,
    };
    total.seconds_metrics += t0.elapsed().as_secs_f64();
    if total.nan_samples > 0 {
        tracing::warn!(
            "cell {} ({} {}): {} samples are NaN/Inf (first at index {}); metrics use the finite ones",
            cell.index,
            cell.sampler,
            cell.params_text(),
            total.nan_samples,
            total.first_nan_index.unwrap_or(0)
        );
    }
    let steps_run = (total.batches.max(1) * cell.steps as u64) as f64;
    let param_f64 = |k: &str| cell.params.get(k).and_then(|v| v.to_string().parse::<f64>().ok());
    let row = ResultRow {
        experiment: plan.name.clone(),
        model: ctx.model.model.describe(),
        dataset: plan.dataset.clone(),
        sampler: cell.sampler.clone(),
        variant: cell.params.get("variant").or_else(|| cell.params.get("method")).map(|v| v.to_string()),
        order: param_f64("order").map(|o| o as u32),
        eta: param_f64("eta"),
        skip: Some(cell.skip.to_string()),
        steps: cell.steps as u64,
        nfe: total.nfe_per_sample,
        samples: plan.samples,
        seed: plan.seed,
        fid,
        fd_pixel,
        fd_exact,
        nan_samples: total.nan_samples,
        first_nan_index: total.first_nan_index,
        seconds_sampling: total.seconds_sampling,
        seconds_metrics: total.seconds_metrics,
        seconds_model: Some(total.seconds_model),
        seconds_overhead: Some((total.seconds_sampling - total.seconds_model).max(0.0)),
        seconds_per_step: total.seconds_sampling / steps_run,
        images_per_second: plan.samples as f64 / total.seconds_sampling.max(1e-12),
        peak_memory_bytes: None,
        batch_size: plan.batch_size,
        device: plan.device.to_string(),
        precision: plan.precision.to_string(),
        fid_mode: plan.metrics.fid.as_ref().map(|f| f.mode.as_str().to_string()),
        bench_version: crate::VERSION.into(),
        git_commit: crate::GIT_COMMIT.into(),
        spec_hash: plan.spec_hash.clone(),
        cell_hash: cell.hash.clone(),
        ..ResultRow::default()
    };
    results::append_result(&plan.output, &row)?;
    Ok(true)
}

fn fd_of(stats: &FeatureStats, reference: &Moments) -> Result<f64> {
    let m = stats.moments()?;
    frechet_distance(m.mu.view(), m.sigma.view(), reference.mu.view(), reference.sigma.view())
}

/// `bench sample`: one sampler with the spec's model and schedule from given initial noise,
/// final samples unquantised; optionally every model input and output per NFE.
pub struct SampleRequest<'a> {
    pub noise: &'a Path,
    pub out: &'a Path,
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    pub set: Vec<(String, String)>,
    pub trace: Option<&'a Path>,
}

pub fn sample_trajectory(plan: &Plan, req: &SampleRequest) -> Result<usize> {
    let model = load_model(plan)?;
    let device = plan.device.to_tch();
    let x_t = Tensor::read_npy(req.noise)
        .map_err(|e| BenchError::file(req.noise, format!("cannot read as .npy: {}", e.to_string().lines().next().unwrap_or(""))))?;
    if x_t.kind() != Kind::Float || x_t.dim() != 4 || x_t.size()[1..] != model.sample_shape[..] {
        return Err(BenchError::file(
            req.noise,
            format!(
                "expected float32 [B,{}] noise, got {:?} {:?}",
                model.sample_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
                x_t.kind(),
                x_t.size()
            ),
        ));
    }
    let first = plan.cells.first().ok_or_else(|| BenchError::user("the spec has no cells"))?;
    let name = req.sampler.clone().unwrap_or_else(|| first.sampler.clone());
    let mut params: sampling::SamplerParams = if name == first.sampler {
        first.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
    } else {
        Default::default()
    };
    if name == first.sampler {
        params.insert("skip".into(), first.skip.to_string());
    }
    for (k, v) in &req.set {
        params.insert(k.clone(), v.clone());
    }
    let steps = req.steps.unwrap_or(first.steps);
    let schedule = plan.schedule.noise_schedule()?;
    let sampler = sampling::build_sampler(&name, &params, steps, &schedule)?;
    let counted = if req.trace.is_some() { Counted::with_trace(model.model.as_ref()) } else { Counted::new(model.model.as_ref()) };
    let b = x_t.size()[0] as usize;
    let mut noise = SeededNoise { seed: plan.seed, first: 0, count: b };
    let x0 = tch::no_grad(|| sampler.sample(&counted, x_t.to_device(device), &mut noise));
    let write = |path: &Path, t: &Tensor| {
        t.to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .write_npy(path)
            .map_err(|e| BenchError::Internal(format!("writing {}: {e}", path.display())))
    };
    write(req.out, &x0)?;
    if let Some(dir) = req.trace {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
        let mut labels = String::new();
        for (k, (label, x, eps)) in counted.take_trace().into_iter().enumerate() {
            write(&dir.join(format!("nfe-{k:04}-x.npy")), &x)?;
            write(&dir.join(format!("nfe-{k:04}-eps.npy")), &eps)?;
            labels.push_str(&format!("{k}\t{label:.17}\n"));
        }
        std::fs::write(dir.join("labels.tsv"), labels).map_err(|e| BenchError::io("writing labels.tsv", e))?;
    }
    Ok(counted.nfe())
}
