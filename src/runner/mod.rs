//! Execution: a validated plan → for each cell, batches of seeded noise → sampler(model) →
//! decoder → quantised samples → every metric's streaming statistics → one result row.
//!
//! Work is split into parts (see [`parts`]): a cell's row is written only after all its parts
//! are done and their statistics merged (sums, not averages), so a crash never leaves a row that
//! claims work that was not done, and any interruption resumes exactly.
pub mod lease;
pub mod parts;
pub mod sample_cmd;
pub mod timing;

pub use parts::{PartState, Shard};
pub use sample_cmd::{sample_trajectory, SampleRequest};

use crate::metrics::fid::Fid;
use crate::metrics::fid_cli::InceptionExtractor;
use crate::metrics::inception::FidInception;
use crate::metrics::preprocess::quantize;
use crate::metrics::stats::Moments;
use crate::metrics::image_metrics::{reference_features, SharedInception};
use crate::metrics::inception_score::InceptionScoreMetric;
use crate::metrics::kid::KidMetric;
use crate::metrics::prdc::PrdcMetric;
use crate::metrics::context_fid::{ContextFid, ContextFidMetric};
use crate::metrics::fd_features::{FdFeatures, FdFeaturesMetric};
use crate::metrics::{fd_exact::FdExact, fd_pixel::FdPixel, Batch, FinishContext, Metric};
use crate::conditioning::{Choice, ConditionSource};
use crate::models::{load_model, Condition, Denoiser, LoadedModel};
use crate::noise::SeededNoise;
use crate::plan::{Cell, Plan};
use crate::results::{self, CellTiming, ResultRow, RunInfo};
use crate::sampling::space_view::SpaceView;
use crate::sampling::{Counted, Sampler};
use crate::{BenchError, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lease::{Holder, Lease};
use parts::{checkpoint, existing_partition, read_state, stats_path, NamedAccumulator};
use std::cell::Cell as StdCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Checkpoint every this many batches (and at the end of every part).
const CHECKPOINT_EVERY: usize = 4;

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

/// Everything a cell run needs besides the cell itself.
struct Ctx<'a> {
    plan: &'a Plan,
    model: &'a LoadedModel,
    metrics: Vec<Box<dyn Metric>>,
    schedule: crate::schedule::NoiseSchedule,
    device: Device,
    progress: MultiProgress,
    overall: ProgressBar,
}

impl Ctx<'_> {
    fn cell_dir(&self, cell: &Cell) -> PathBuf {
        self.plan.output.join("cells").join(&cell.hash)
    }
    fn repeat_dir(&self, cell: &Cell, r: u32) -> PathBuf {
        repeat_dir(&self.cell_dir(cell), self.plan.repeats, r)
    }
    /// The model as `sampler` sees it: converted when their noise spaces differ.
    fn view(&self, sampler: &dyn Sampler) -> Result<Option<SpaceView>> {
        Ok(SpaceView::new(sampler.space(), self.plan.model_identity.space, self.model.prediction, &self.plan.schedule.noise_schedule()?))
    }
    fn needs_images(&self) -> bool {
        self.metrics.iter().any(|m| m.needs_images())
    }
    /// Fresh accumulators of every metric that keeps statistics.
    fn accumulators(&self) -> Vec<NamedAccumulator<'_>> {
        self.metrics.iter().filter(|m| m.has_statistics()).map(|m| NamedAccumulator { name: m.key(), acc: m.accumulator() }).collect()
    }
    /// Accumulators loaded from a checkpoint tag.
    fn load_accumulators(&self, dir: &Path, tag: &str) -> Result<Vec<NamedAccumulator<'_>>> {
        let mut accs = self.accumulators();
        for a in &mut accs {
            a.acc.merge_file(&stats_path(dir, tag, &a.name))?;
        }
        Ok(accs)
    }
}

/// Run (or resume) a plan. Returns what was done; the results table and report are in
/// `plan.output`.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<RunSummary> {
    crate::fsutil::ensure_writable_dir(&plan.output)?;
    let model = load_model(plan)?;
    run_with(plan, &model, opts)
}

/// [`run`] with an already loaded model (library users, tests that wrap a model).
pub fn run_with(plan: &Plan, model: &LoadedModel, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let load_at_start = timing::load_average();
    prepare_output(plan)?;
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
    let metrics = load_metrics(plan, model)?;
    let done = keep_current_rows(plan)?;
    let progress = MultiProgress::with_draw_target(if opts.quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() });
    let shard = opts.shard.unwrap_or(Shard::WHOLE);
    let todo: Vec<&Cell> = plan.cells.iter().filter(|c| opts.force || !done.contains(&c.hash)).collect();
    let work: u64 = todo.iter().map(|c| estimate_nfe(plan, c) * plan.samples / shard.count as u64).sum();
    let overall = progress.add(ProgressBar::new(work.max(1)));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {percent:>3}% {msg} ETA {eta}").expect("valid template").progress_chars("=> "),
    );
    overall.set_prefix("overall");
    let schedule = plan.schedule.noise_schedule()?;
    let ctx = Ctx { plan, model, metrics, schedule, device, progress, overall };

    let mut summary = RunSummary { cells_total: plan.cells.len(), cells_skipped: plan.cells.len() - todo.len(), ..Default::default() };
    let mut warmed = false;
    for cell in todo {
        let sampler = build_sampler(plan, cell, &ctx.schedule)?;
        if !warmed {
            warm_up(&ctx, sampler.as_ref())?;
            warmed = true;
        }
        run_cell(&ctx, cell, sampler.as_ref(), shard, opts.force, &mut summary)?;
    }
    ctx.overall.finish_and_clear();
    write_run_info(plan, model, device, started, load_at_start)?;
    Ok(summary)
}

/// The output folder must be writable before any work starts; the spec is copied there.
fn prepare_output(plan: &Plan) -> Result<()> {
    crate::fsutil::ensure_writable_dir(&plan.output)?;
    let spec = fs_err::read(&plan.spec_path).map_err(|e| BenchError::file(&plan.spec_path, format!("cannot read the spec: {e}")))?;
    crate::fsutil::write_atomic(&plan.output.join("spec.yaml"), &spec)
}

/// The metrics the plan asks for, with their reference data and networks loaded.
fn load_metrics(plan: &Plan, model: &LoadedModel) -> Result<Vec<Box<dyn Metric>>> {
    let device = plan.device.to_tch();
    let mut metrics: Vec<Box<dyn Metric>> = Vec::new();
    if let Some(f) = &plan.metrics.fid {
        fid_channels(plan, model)?;
        let net = FidInception::load(&f.weights, device, f.allow_custom_weights)?;
        let reference = Moments::load_npz(&f.reference)?;
        if reference.mu.len() != f.dims {
            return Err(BenchError::file(
                &f.reference,
                format!("reference statistics have {} dims but metrics.fid.dims is {}", reference.mu.len(), f.dims),
            ));
        }
        let m = &plan.metrics;
        let inception = Rc::new(SharedInception {
            extractor: InceptionExtractor { net, mode: f.mode, dims: f.dims },
            logits: m.inception_score.is_some(),
        });
        metrics.push(Box::new(Fid { inception: inception.clone(), reference }));
        if let Some(params) = m.inception_score {
            metrics.push(Box::new(InceptionScoreMetric::new(inception.clone(), params, plan.samples as usize)?));
        }
        if m.kid.is_some() || m.prdc.is_some() {
            let features = reference_features(&f.reference, f.dims, device)?;
            let n_ref = features.size()[0] as usize;
            if let Some(params) = m.kid {
                if params.subset_size > n_ref {
                    return Err(BenchError::file(
                        &f.reference,
                        format!("keeps {n_ref} reference features, fewer than metrics.kid.subset_size {}", params.subset_size),
                    ));
                }
                metrics.push(Box::new(KidMetric { inception: inception.clone(), reference: features.shallow_clone(), params }));
            }
            if let Some(params) = m.prdc {
                if params.k >= n_ref {
                    return Err(BenchError::file(&f.reference, format!("keeps {n_ref} reference features; metrics.prdc.k {} needs more", params.k)));
                }
                metrics.push(Box::new(PrdcMetric { inception, reference: features, params }));
            }
        }
    }
    if plan.metrics.fd_exact {
        metrics.push(Box::new(FdExact));
    }
    if let Some(p) = &plan.metrics.fd_pixel {
        let reference = match &p.reference {
            Some(path) => Moments::load_npz(path)?,
            None => model.data_moments.clone().ok_or_else(|| {
                BenchError::user(format!(
                    "{}: metrics.fd_pixel needs `reference:` (a stats .npz) unless the model is an oracle",
                    plan.spec_path.display()
                ))
            })?,
        };
        let dims: i64 = model.image_shape.iter().product();
        if reference.dims() != dims as usize {
            return Err(BenchError::user(format!(
                "metrics.fd_pixel: the reference has {} dimensions but a sample has {dims} ({:?})",
                reference.dims(),
                model.image_shape
            )));
        }
        if plan.samples <= reference.mu.len() as u64 {
            tracing::warn!(
                "fd_pixel: {} samples in {} dimensions: the sample covariance is rank-deficient and the estimate is dominated by its bias",
                plan.samples,
                reference.mu.len()
            );
        }
        metrics.push(Box::new(FdPixel { reference, device }));
    }
    if let Some(dir) = &plan.metrics.clip_score {
        let scorer = crate::metrics::clip_score::ClipScorer::load(dir, device, Kind::Float)?;
        metrics.push(Box::new(crate::metrics::clip_score::ClipScoreMetric { scorer }));
    }
    for e in &plan.metrics.fd_features {
        metrics.push(Box::new(FdFeaturesMetric(FdFeatures::load(e, device)?)));
    }
    if let Some(c) = &plan.metrics.context_fid {
        if model.image_shape.len() != 2 {
            return Err(BenchError::user(format!(
                "{}: metrics.context_fid needs sequence samples [C, L]; this model's samples are {:?}",
                plan.spec_path.display(),
                model.image_shape
            )));
        }
        let cf = ContextFid::load(&c.encoder, c.scaling.clone(), device)?;
        let reference = crate::metrics::context_fid::load_reference(&cf, &c.reference, c.batch_size)?;
        metrics.push(Box::new(ContextFidMetric { cf, reference }));
    }
    Ok(metrics)
}

/// The Inception metrics take RGB images; grayscale ones are repeated to three channels (as
/// pytorch-fid's loader does for grayscale files). Returns the number of image channels; any
/// other shape is refused before anything is sampled.
fn fid_channels(plan: &Plan, model: &LoadedModel) -> Result<i64> {
    match model.image_shape.as_slice() {
        [c @ (1 | 3), _, _] => Ok(*c),
        shape => Err(BenchError::user(format!(
            "{}: metrics.fid needs images with 1 or 3 channels, but model {} makes samples of shape {shape:?} ({})",
            plan.spec_path.display(),
            model.describe(),
            match shape {
                [c, _, _] => format!("{c} channels"),
                _ => "not [C,H,W]".to_string(),
            }
        ))),
    }
}

/// The `fid_mode` column: the preprocessing pipeline, and a note when grayscale samples were
/// repeated to RGB for the Inception network.
fn fid_mode(plan: &Plan, model: &LoadedModel) -> Option<String> {
    let f = plan.metrics.fid.as_ref()?;
    Some(match fid_channels(plan, model) {
        Ok(1) => format!("{} (grayscale repeated to RGB)", f.mode.as_str()),
        _ => f.mode.as_str().to_string(),
    })
}

/// Drops rows of this experiment whose cells the spec no longer has (a changed parameter or
/// input file changes the hash); rows of other experiments in the same folder are kept.
/// Returns the finished cells' hashes.
fn keep_current_rows(plan: &Plan) -> Result<std::collections::HashSet<String>> {
    let out = &plan.output;
    let existing = if out.join(results::RESULTS_PARQUET).exists() { results::read_results(out)? } else { Vec::new() };
    let current: std::collections::HashSet<&str> = plan.cells.iter().map(|c| c.hash.as_str()).collect();
    let (keep, stale): (Vec<ResultRow>, Vec<ResultRow>) =
        existing.into_iter().partition(|r| r.experiment != plan.name || current.contains(r.cell_hash.as_str()));
    if !stale.is_empty() {
        tracing::info!("dropping {} result rows of cells no longer in the spec", stale.len());
        results::write_results(out, &keep)?;
    }
    Ok(keep.into_iter().filter(|r| r.experiment == plan.name).map(|r| r.cell_hash).collect())
}

fn run_cell(ctx: &Ctx, cell: &Cell, sampler: &dyn Sampler, shard: Shard, force: bool, summary: &mut RunSummary) -> Result<()> {
    let dir = ctx.cell_dir(cell);
    if force && dir.exists() && shard == Shard::WHOLE {
        fs_err::remove_dir_all(&dir).map_err(|e| BenchError::file(&dir, format!("cannot clear: {e}")))?;
    }
    let mut partitions = Vec::new();
    for r in 0..ctx.plan.repeats.max(1) {
        let dir = ctx.repeat_dir(cell, r);
        if let PartOutcome::Locked(holder) = run_part(ctx, cell, sampler, shard, r)? {
            tracing::warn!("cell {} part {}: locked by process {holder}; skipped", cell.index, shard.tag());
            summary.cells_locked += 1;
            return Ok(());
        }
        // An unsharded run finishes whatever partition the cell's finished parts came from.
        let partition = if shard == Shard::WHOLE { existing_partition(&dir).unwrap_or(Shard::WHOLE) } else { shard };
        if partition != Shard::WHOLE && shard == Shard::WHOLE {
            for k in 1..=partition.count {
                let part = Shard { index: k, count: partition.count };
                if let PartOutcome::Locked(holder) = run_part(ctx, cell, sampler, part, r)? {
                    return Err(BenchError::user(format!(
                        "cell {} {}: locked by running process {holder}; wait for it or stop it",
                        cell.index,
                        part.tag()
                    )));
                }
            }
        }
        partitions.push(partition);
    }
    if finish_cell(ctx, cell, sampler, &partitions)? {
        summary.cells_finished += 1;
    } else {
        summary.cells_partial += 1;
    }
    Ok(())
}

/// A finished cell's [`CellTiming`], next to its part states.
const TIMING_FILE: &str = "timing.json";

fn write_run_info(plan: &Plan, model: &LoadedModel, device: Device, started: Instant, load_at_start: Option<[f64; 3]>) -> Result<()> {
    let cell_timing = plan
        .cells
        .iter()
        .filter_map(|c| fs_err::read_to_string(plan.output.join("cells").join(&c.hash).join(TIMING_FILE)).ok())
        .filter_map(|text| serde_json::from_str::<CellTiming>(&text).ok())
        .collect();
    let env = crate::doctor::Environment::probe();
    let info = RunInfo {
        bench_version: crate::VERSION.into(),
        git_commit: crate::GIT_COMMIT.into(),
        libtorch_version: Some(env.libtorch_version.clone()),
        cuda_version: None,
        cudnn_version: env.cudnn_version.map(|v| v.to_string()),
        device_name: device_name(&env, device),
        precision: plan.precision.to_string(),
        fid_mode: fid_mode(plan, model),
        fid_dims: plan.metrics.fid.as_ref().map(|f| f.dims as u64),
        input_sha256: plan.input_hashes(),
        schedule_source: Some(plan.schedule_source.clone()),
        seed: plan.seed,
        samples: plan.samples,
        spec_hash: plan.spec_hash.clone(),
        total_wall_seconds: Some(started.elapsed().as_secs_f64()),
        hostname: std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()),
        command: Some(std::env::args().collect::<Vec<_>>().join(" ")),
        load_average_start: load_at_start,
        load_average_end: timing::load_average(),
        torch_threads: Some(tch::get_num_threads()),
        rayon_threads: Some(rayon::current_num_threads()),
        omp_wait_policy: std::env::var("OMP_WAIT_POLICY").ok(),
        cell_timing,
        ..RunInfo::default()
    };
    results::write_run_info(&plan.output, &info)
}

fn device_name(env: &crate::doctor::Environment, device: Device) -> String {
    match device {
        Device::Cuda(i) => env.cuda_devices.get(i).cloned().unwrap_or_else(|| format!("cuda:{i}")),
        _ => format!("cpu ({} threads)", env.threads),
    }
}

/// The sampler a cell names, configured from the cell's parameters.
pub fn build_sampler(plan: &Plan, cell: &Cell, schedule: &crate::schedule::NoiseSchedule) -> Result<Box<dyn Sampler>> {
    cell.def()
        .build(&cell.params, cell.skip, cell.steps, schedule)
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
fn warm_up(ctx: &Ctx, sampler: &dyn Sampler) -> Result<()> {
    let b = ctx.plan.batch_size.min(ctx.plan.samples).max(1) as i64;
    let mut shape = vec![b];
    shape.extend(&ctx.model.sample_shape);
    let x = Tensor::zeros(shape.as_slice(), (Kind::Float, ctx.device));
    let label = sampler.labels().first().copied().unwrap_or(0.0);
    let cond = ctx.model.probe_condition(b, ctx.device)?;
    let view = ctx.view(sampler)?;
    let counted = Counted::new(ctx.model.denoiser.as_ref(), ctx.model.prediction).conditioned(cond.as_ref()).viewed(view.as_ref());
    let _ = tch::no_grad(|| counted.raw(&x, label))?;
    sync(ctx.device);
    Ok(())
}

/// Wraps a model to measure the seconds spent inside it (synchronised on CUDA), so a cell's
/// time splits into model time and sampler overhead.
struct TimedModel<'a> {
    inner: &'a dyn Denoiser,
    device: Device,
    seconds: StdCell<f64>,
}

impl Denoiser for TimedModel<'_> {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Condition>) -> Result<Tensor> {
        sync(self.device);
        let start = Instant::now();
        let e = self.inner.forward(x, t, cond);
        sync(self.device);
        self.seconds.set(self.seconds.get() + start.elapsed().as_secs_f64());
        e
    }
    fn forward_with_variance(&self, x: &Tensor, t: &Tensor, cond: Option<&Condition>) -> Result<(Tensor, Option<Tensor>)> {
        sync(self.device);
        let start = Instant::now();
        let e = self.inner.forward_with_variance(x, t, cond);
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

enum PartOutcome {
    Done,
    Locked(Holder),
}

/// Where repeat `r` of a cell keeps its parts: the cell's folder itself without repeats.
pub fn repeat_dir(cell_dir: &Path, repeats: u32, r: u32) -> PathBuf {
    if repeats <= 1 {
        cell_dir.to_path_buf()
    } else {
        cell_dir.join(format!("r{r}"))
    }
}

/// Run (or resume) one part of one repeat of one cell to completion.
fn run_part(ctx: &Ctx, cell: &Cell, sampler: &dyn Sampler, part: Shard, repeat: u32) -> Result<PartOutcome> {
    let plan = ctx.plan;
    let dir = ctx.repeat_dir(cell, repeat);
    fs_err::create_dir_all(&dir).map_err(|e| BenchError::file(&dir, format!("cannot create: {e}")))?;
    let tag = part.tag();
    let lock = match Lease::acquire(dir.join(format!("{tag}.lock")))? {
        Ok(l) => l,
        Err(holder) => return Ok(PartOutcome::Locked(holder)),
    };
    let state_path = dir.join(format!("{tag}.json"));
    let (first, end) = part.range(plan.samples);
    let (mut state, mut stats) = match read_state(&state_path) {
        Some(s) if s.first == first && s.end == end => {
            let stats = match &s.stats_tag {
                Some(t) => ctx.load_accumulators(&dir, t)?,
                None => ctx.accumulators(),
            };
            (s, stats)
        }
        _ => (PartState { first, end, next: first, ..Default::default() }, ctx.accumulators()),
    };
    if state.next > first && !state.done {
        tracing::info!("cell {} {tag}: resuming at sample {} from its checkpoint", cell.index, state.next);
    }
    if state.done {
        drop(lock);
        return Ok(PartOutcome::Done);
    }
    let bar = ctx.progress.add(ProgressBar::new(end - first));
    bar.set_style(ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}").expect("valid template").progress_chars("=> "));
    bar.set_prefix(format!("cell {}", cell.index));
    bar.set_message(format!("{} {} S={}", cell.sampler, cell.params_text(), cell.steps));
    bar.set_position(state.next - first);
    let batch = plan.batch_size.max(1);
    // Samples are kept of the first repeat only.
    let save_limit = if repeat == 0 { plan.save_samples.limit(plan.samples) } else { 0 };
    let mut since_checkpoint = 0;
    let view = ctx.view(sampler)?;
    while state.next < end {
        let count = batch.min(end - state.next);
        let timed = TimedModel { inner: ctx.model.denoiser.as_ref(), device: ctx.device, seconds: StdCell::new(0.0) };
        sync(ctx.device);
        let t0 = Instant::now();
        let conditioning = plan.conditioning.as_ref().zip(cell.guidance_scale).map(|(c, w)| (&c.source, w));
        let sampled = sample_batch(plan.seed + repeat as u64, &timed, ctx.model, sampler, view.as_ref(), ctx.device, state.next, count, conditioning)
            .map_err(|e| interrupted_cell(cell, &e));
        let (x0, cost) = sampled?;
        sync(ctx.device);
        let seconds = t0.elapsed().as_secs_f64();
        state.seconds_sampling += seconds;
        state.batch_seconds_per_step.push(seconds / cell.steps.max(1) as f64);
        state.seconds_model += timed.seconds.get();
        state.add_cost(&cost);
        let t1 = Instant::now();
        observe_batch(ctx, &mut stats, &mut state, &x0, &ctx.cell_dir(cell), save_limit, plan.seed + repeat as u64)
            .map_err(|e| interrupted_cell(cell, &e))?;
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

/// A failure mid-cell keeps the last checkpoint: the message says so (one line).
fn interrupted_cell(cell: &Cell, e: &BenchError) -> BenchError {
    let what = match e {
        BenchError::Model(m) => m.clone(),
        other => other.to_string(),
    };
    let msg = format!(
        "cell {} ({} {}): {what}; its last checkpoint is kept: fix the cause and rerun the same command to resume",
        cell.index,
        cell.sampler,
        cell.params_text()
    );
    match e {
        BenchError::User(_) | BenchError::File { .. } => BenchError::User(msg),
        _ => BenchError::Model(msg),
    }
}

/// Samples `first..first+count` of a cell: the one place x_T, step noise and conditions are
/// drawn, all functions of (seed, sample index, step) only. Returns the samples (decoded to
/// images for latent models) and each sample's (NFE, network evaluations).
#[allow(clippy::too_many_arguments)]
pub fn sample_batch(
    seed: u64,
    denoiser: &dyn Denoiser,
    model: &LoadedModel,
    sampler: &dyn Sampler,
    view: Option<&SpaceView>,
    device: Device,
    first: u64,
    count: u64,
    conditioning: Option<(&ConditionSource, f64)>,
) -> Result<(Tensor, Vec<(usize, usize)>)> {
    let guidance = match (&model.conditioner, conditioning) {
        (Some(c), Some((source, w))) => Some(tch::no_grad(|| c.guidance(source, seed, first, count, w, device))?),
        _ => None,
    };
    let counted = Counted::new(denoiser, model.prediction).guided(guidance.as_ref()).viewed(view);
    let mut noise = SeededNoise { seed, first, count: count as usize };
    let x_t = noise.initial(&model.sample_shape, device, Kind::Float);
    let x0 = tch::no_grad(|| sampler.sample(&counted, x_t, &mut noise))?;
    Ok((decode(model, &x0)?, counted.cost_each(count as usize)))
}

/// A latent model's samples as images in [−1, 1], clamped as diffusers' pipelines clamp them
/// before any metric or file sees them; other models' samples as they are.
pub fn decode(model: &LoadedModel, x0: &Tensor) -> Result<Tensor> {
    match &model.decoder {
        Some(d) => Ok(tch::no_grad(|| d.decode(x0))?.f_clamp(-1.0, 1.0)?),
        None => Ok(x0.shallow_clone()),
    }
}

/// Check for NaN/Inf, quantise if a metric needs images, feed every metric, keep the first
/// samples (PNGs of images; `.npy` of the float samples of any other shape, never quantised)
/// with what each was conditioned on (`prompts.jsonl`).
#[allow(clippy::too_many_arguments)]
fn observe_batch(ctx: &Ctx, stats: &mut [NamedAccumulator], state: &mut PartState, x0: &Tensor, dir: &Path, save_limit: u64, seed: u64) -> Result<()> {
    let source = ctx.plan.conditioning.as_ref().map(|c| &c.source);
    let b = x0.size()[0];
    let flat = x0.f_reshape([b, -1])?;
    let finite = flat.f_isfinite()?.f_all_dim(1, false)?;
    let finite_idx = finite.f_nonzero()?.f_squeeze_dim(1)?;
    let n_finite = finite_idx.size()[0];
    if n_finite < b {
        let bad: Vec<bool> = Vec::try_from(finite.logical_not().to_device(Device::Cpu)).unwrap_or_default();
        let first_bad = bad.iter().position(|&x| x).map(|p| state.next + p as u64);
        state.nan_samples += (b - n_finite) as u64;
        if state.first_nan_index.is_none() {
            state.first_nan_index = first_bad;
        }
    }
    let good = if n_finite < b { x0.f_index_select(0, &finite_idx)? } else { x0.shallow_clone() };
    let is_image = matches!(x0.size().as_slice(), [_, 1 | 3, _, _]);
    let save_here = state.next < save_limit;
    let images = (ctx.needs_images() || (save_here && is_image)).then(|| quantize(&x0.nan_to_num(0.0, 0.0, 0.0)));
    let good_images = match &images {
        Some(i) if n_finite < b => Some(i.f_index_select(0, &finite_idx)?),
        Some(i) => Some(i.shallow_clone()),
        None => None,
    };
    if n_finite > 0 {
        let indices: Vec<u64> = Vec::<i64>::try_from(finite_idx.to_device(Device::Cpu))
            .map_err(|e| BenchError::Internal(e.to_string()))?
            .into_iter()
            .map(|r| state.next + r as u64)
            .collect();
        let inception = std::cell::RefCell::new(None);
        let prompts: Vec<&str> = match source {
            Some(s @ ConditionSource::Prompts { .. }) => indices
                .iter()
                .map(|&i| match s.choice(seed, i) {
                    Choice::Prompt(p) => p,
                    Choice::Class(_) => "",
                })
                .collect(),
            _ => Vec::new(),
        };
        let batch = Batch { samples: &good, images: good_images.as_ref(), indices: &indices, inception: &inception, prompts: &prompts };
        for s in stats.iter_mut() {
            s.acc.observe(&batch)?;
        }
    }
    let keep = save_limit.saturating_sub(state.next).min(b as u64) as i64;
    let samples_dir = ctx.plan.output.join("samples").join(dir.file_name().unwrap_or_default());
    match (save_here, &images) {
        (true, Some(images)) if is_image => save_pngs(&images.narrow(0, 0, keep), &samples_dir, state.next)?,
        (true, _) => save_npy(&x0.narrow(0, 0, keep), &samples_dir, state.next)?,
        _ => {}
    }
    if let (true, Some(source)) = (save_here, source) {
        let path = samples_dir.join("prompts.jsonl");
        if !path.exists() {
            let lines: String = (0..save_limit.min(ctx.plan.samples)).map(|i| source.record(seed, i) + "\n").collect();
            crate::fsutil::write_atomic(&path, lines.as_bytes())?;
        }
    }
    Ok(())
}

/// Samples that are not images, as float32 `samples/<cell>/<first index>.npy` [n, ...shape].
fn save_npy(samples: &Tensor, dir: &Path, first: u64) -> Result<()> {
    fs_err::create_dir_all(dir).map_err(|e| BenchError::file(dir, format!("cannot create: {e}")))?;
    let path = dir.join(format!("{first:05}.npy"));
    let x = samples.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_contiguous()?;
    crate::fsutil::write_atomic_with(&path, |tmp| x.write_npy(tmp).map_err(|e| crate::fsutil::write_error(&path, e)))
}

fn save_pngs(images: &Tensor, dir: &Path, first: u64) -> Result<()> {
    fs_err::create_dir_all(dir).map_err(|e| BenchError::file(dir, format!("cannot create: {e}")))?;
    let (n, c, h, w) = images.size4().map_err(|e| BenchError::Internal(e.to_string()))?;
    let hwc = images.permute([0, 2, 3, 1]).contiguous().to_device(Device::Cpu);
    let data: Vec<u8> = Vec::try_from(hwc.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    let per = (h * w * c) as usize;
    for i in 0..n as usize {
        let path = dir.join(format!("{:05}.png", first + i as u64));
        let color = if c == 3 { image::ExtendedColorType::Rgb8 } else { image::ExtendedColorType::L8 };
        crate::fsutil::write_atomic_with(&path, |tmp| {
            image::save_buffer_with_format(tmp, &data[i * per..(i + 1) * per], w as u32, h as u32, color, image::ImageFormat::Png)
                .map_err(|e| crate::fsutil::write_error(&path, e))
        })?;
    }
    Ok(())
}

/// Merge the parts of a finished cell (of each repeat), compute its metrics and append its row.
/// Returns false when some part is not finished yet (another shard's work).
fn finish_cell(ctx: &Ctx, cell: &Cell, sampler: &dyn Sampler, partitions: &[Shard]) -> Result<bool> {
    let mut total = PartState::default();
    let fcx = FinishContext { sampler, model: ctx.model };
    let mut per_repeat = Vec::new();
    let t0 = Instant::now();
    for (r, &partition) in partitions.iter().enumerate() {
        let Some(values) = finish_repeat(ctx, &ctx.repeat_dir(cell, r as u32), partition, &fcx, &mut total)? else {
            return Ok(false);
        };
        per_repeat.push(values);
    }
    let values = if per_repeat.len() == 1 { per_repeat.remove(0) } else { crate::metrics::repeats::combine(&per_repeat)? };
    total.seconds_metrics += t0.elapsed().as_secs_f64();
    write_row(ctx, cell, total, values)?;
    if !ctx.plan.keep_stats {
        for (r, &partition) in partitions.iter().enumerate() {
            parts::remove_parts(&ctx.repeat_dir(cell, r as u32), partition);
        }
    }
    Ok(true)
}

/// One repeat's merged statistics → its metric values (None while a part is unfinished); its
/// parts' counts and times are added to `total`.
fn finish_repeat(
    ctx: &Ctx,
    dir: &Path,
    partition: Shard,
    fcx: &FinishContext,
    total: &mut PartState,
) -> Result<Option<std::collections::BTreeMap<String, f64>>> {
    let mut stats = ctx.accumulators();
    for k in 1..=partition.count {
        let part = Shard { index: k, count: partition.count };
        let Some(s) = read_state(&dir.join(format!("{}.json", part.tag()))).filter(|s| s.done) else {
            return Ok(None);
        };
        if let Some(t) = &s.stats_tag {
            for a in &mut stats {
                a.acc.merge_file(&stats_path(dir, t, &a.name))?;
            }
        }
        total.nan_samples += s.nan_samples;
        total.first_nan_index = total.first_nan_index.or(s.first_nan_index);
        total.seconds_sampling += s.seconds_sampling;
        total.seconds_model += s.seconds_model;
        total.seconds_metrics += s.seconds_metrics;
        total.batches += s.batches;
        total.batch_seconds_per_step.extend(&s.batch_seconds_per_step);
        total.merge_cost(&s);
    }
    let mut values = std::collections::BTreeMap::new();
    for a in &stats {
        values.extend(a.acc.finish(fcx)?);
    }
    for m in ctx.metrics.iter().filter(|m| !m.has_statistics()) {
        values.extend(m.accumulator().finish(fcx)?);
    }
    Ok(Some(values))
}

fn write_row(ctx: &Ctx, cell: &Cell, total: PartState, values: std::collections::BTreeMap<String, f64>) -> Result<()> {
    let plan = ctx.plan;
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
    if let Some(t) = CellTiming::from_batches(cell.index, &cell.hash, &total.batch_seconds_per_step, timing::load_average()) {
        let text = serde_json::to_string_pretty(&t).map_err(|e| BenchError::Internal(e.to_string()))?;
        crate::fsutil::write_atomic(&ctx.cell_dir(cell).join(TIMING_FILE), text.as_bytes())?;
    }
    let def = cell.def();
    let steps_run = (total.batches.max(1) * cell.steps as u64) as f64;
    let sampled = plan.samples * plan.repeats.max(1) as u64;
    let row = ResultRow {
        experiment: plan.name.clone(),
        model: ctx.model.describe(),
        dataset: plan.dataset.clone(),
        sampler: cell.sampler.clone(),
        variant: def.variant_column(&cell.params),
        order: def.order_column(&cell.params),
        eta: def.eta_column(&cell.params),
        skip: Some(cell.skip.to_string()),
        steps: cell.steps as u64,
        guidance_scale: cell.guidance_scale,
        nfe: total.nfe_mean().round() as u64,
        unet_evals: total.unet_evals_mean().round() as u64,
        nfe_mean: Some(total.nfe_mean()),
        nfe_max: Some(total.nfe_max),
        samples: plan.samples,
        seed: plan.seed,
        metrics: values,
        nan_samples: total.nan_samples,
        first_nan_index: total.first_nan_index,
        seconds_sampling: total.seconds_sampling,
        seconds_metrics: total.seconds_metrics,
        seconds_model: Some(total.seconds_model),
        seconds_overhead: Some((total.seconds_sampling - total.seconds_model).max(0.0)),
        seconds_per_step: total.seconds_sampling / steps_run,
        images_per_second: sampled as f64 / total.seconds_sampling.max(1e-12),
        peak_memory_bytes: None,
        batch_size: plan.batch_size,
        device: plan.device.to_string(),
        precision: plan.precision.to_string(),
        fid_mode: fid_mode(plan, ctx.model),
        bench_version: crate::VERSION.into(),
        git_commit: crate::GIT_COMMIT.into(),
        spec_hash: plan.spec_hash.clone(),
        cell_hash: cell.hash.clone(),
        ..ResultRow::default()
    };
    results::append_result(&plan.output, &row)
}
