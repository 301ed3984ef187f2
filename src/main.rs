//! `bench`: thin clap front end over the samplerbench library.
use clap::{Args, Parser, Subcommand};
use samplerbench::metrics::fid_cli::{self, FidOptions};
use samplerbench::metrics::ResizeMode;
use samplerbench::runner;
use samplerbench::BenchError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bench", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BENCH_GIT_COMMIT"), ")"),
          about = "Measure diffusion samplers' speed against their sample quality")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the build, libtorch, CUDA and BLAS setup and which data files are present.
    Doctor,
    /// Run every cell of an experiment spec (resumes; finished cells are skipped), then report.
    Run {
        /// Experiment spec (YAML), e.g. experiments/quickstart.yaml.
        spec: PathBuf,
        /// Print the cells with NFE and cost, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Recompute every cell, even finished ones.
        #[arg(long)]
        force: bool,
        /// Run only the K-th of N disjoint parts of the work (e.g. 2/4) into the shared output.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
        /// One worker per listed GPU (e.g. 0,1,2,3), each running one shard, then merge.
        #[arg(long, value_name = "LIST", conflicts_with = "shard")]
        devices: Option<String>,
        /// Override the spec's device (cpu, cuda, cuda:N).
        #[arg(long)]
        device: Option<String>,
        /// Override the spec's `output` folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Seconds after which a part's lease that was not renewed counts as stale
        /// [default: $BENCH_LEASE_TIMEOUT, else 120].
        #[arg(long, value_name = "SECS", value_parser = samplerbench::runner::lease::parse_timeout)]
        lease_timeout: Option<std::time::Duration>,
        /// Wait for parts another live process holds instead of skipping them.
        #[arg(long)]
        wait_for_locks: bool,
    },
    /// Run a sweep on a cluster: `bench submit SPEC --slurm --shards N` submits a job array of N
    /// `bench run --shard K/N` tasks and a merge job; `bench submit --resume OUT` continues one.
    Submit {
        /// Experiment spec (YAML).
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        spec: Option<PathBuf>,
        /// Submit to Slurm (sbatch): the launcher.
        #[arg(long)]
        slurm: bool,
        /// Resubmit the unfinished shards of the submission recorded in DIR/slurm/jobs.json, and a
        /// new merge job. Resource options given with it override the scripts' #SBATCH lines.
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// Number of shard tasks (each runs 1/N of every cell's samples).
        #[arg(long, default_value_t = 1, conflicts_with = "resume")]
        shards: usize,
        /// Slurm partition.
        #[arg(long, value_name = "P")]
        partition: Option<String>,
        /// Slurm account to charge.
        #[arg(long, value_name = "A")]
        account: Option<String>,
        /// Time limit per task, HH:MM:SS.
        #[arg(long, value_name = "HH:MM:SS")]
        time: Option<String>,
        /// GPUs per task (Slurm sets each task's CUDA_VISIBLE_DEVICES).
        #[arg(long, value_name = "G")]
        gpus_per_task: Option<u32>,
        /// CPUs per task (also the task's OMP_NUM_THREADS).
        #[arg(long, value_name = "C")]
        cpus_per_task: Option<u32>,
        /// Memory per node, e.g. 32G.
        #[arg(long, value_name = "M")]
        mem: Option<String>,
        /// Any other sbatch option, repeatable: --sbatch-arg=--qos=high.
        #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
        sbatch_arg: Vec<String>,
        /// Output folder (default: the spec's `output`).
        #[arg(long, value_name = "DIR", conflicts_with = "resume")]
        out: Option<PathBuf>,
        /// Lease timeout the tasks use (see `bench run --lease-timeout`).
        #[arg(long, value_name = "SECS", value_parser = samplerbench::runner::lease::parse_timeout, conflicts_with = "resume")]
        lease_timeout: Option<std::time::Duration>,
        /// Print the scripts and sbatch commands; write and submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Progress of an output folder: samples done per cell and shard, finished cells, ETA, and
    /// the Slurm tasks' states when it was submitted with `bench submit`.
    Status {
        /// Output folder of `bench run` or `bench submit`.
        out: PathBuf,
        /// The spec (default: the submitted one, else OUT/spec.yaml).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run one sampler from given initial noise and write the final samples (unquantised .npy).
    Sample {
        spec: PathBuf,
        /// Initial noise x_T: float32 .npy of shape [B,C,H,W].
        #[arg(long, value_name = "X_T.npy")]
        noise: PathBuf,
        #[arg(long, value_name = "X_0.npy")]
        out: PathBuf,
        /// Sampler name (default: the spec's first cell).
        #[arg(long)]
        sampler: Option<String>,
        #[arg(long)]
        steps: Option<usize>,
        /// Sampler parameter, repeatable: --set eta=0.5 --set skip=uniform.
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Also write every model input (x, label) and output per NFE into this folder.
        #[arg(long, value_name = "DIR")]
        trace: Option<PathBuf>,
        /// The stochastic steps' noise, in the order the sampler draws it, as a reference run
        /// drew it: .npz of float32 arrays [B,C,H,W] (`np.savez(FILE, *draws)`).
        #[arg(long, value_name = "NOISE.npz")]
        step_noise: Option<PathBuf>,
        /// Text-to-image models: the prompt, once for every sample or once per sample
        /// (default: the spec's seeded draw from its prompts).
        #[arg(long, value_name = "TEXT")]
        prompt: Vec<String>,
        /// Text-to-image models: the unconditional half of guidance (default: the spec's).
        #[arg(long, value_name = "TEXT")]
        negative_prompt: Option<String>,
        /// Class-conditional models: the class, once for every sample or once per sample.
        #[arg(long = "class", value_name = "K")]
        class: Vec<i64>,
        /// Latent models: also write the final latents (before the decoder).
        #[arg(long, value_name = "LATENTS.npy")]
        latents_out: Option<PathBuf>,
    },
    /// List every sampler: parameters, timestep rules, NFE, end point, reference.
    Samplers {
        /// Only samplers whose name contains this text.
        filter: Option<String>,
        /// Print the definitions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Regression gate: run the spec (reusing finished cells) and compare with a baseline.
    /// Exit 1 when a metric worsens beyond tolerance, NFE changes or a baseline cell is missing.
    Check {
        spec: PathBuf,
        /// Baseline JSON (cells keyed by cell_hash, per hardware/precision class).
        #[arg(long, value_name = "FILE")]
        baseline: PathBuf,
        /// Allowed worsening, absolute (overrides the baseline's per-metric tolerances).
        #[arg(long)]
        tolerance_abs: Option<f64>,
        /// Allowed worsening, relative to the baseline value.
        #[arg(long)]
        tolerance_rel: Option<f64>,
        /// Rewrite this class's cells in the baseline from this run (sorted, stable formatting).
        #[arg(long)]
        update_baseline: bool,
        /// Also fail on improvements beyond tolerance (forces baseline updates).
        #[arg(long)]
        fail_on_improvement: bool,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long)]
        quiet: bool,
    },
    /// Fréchet Inception Distance between two image sets or statistics files (like `python -m pytorch_fid`).
    /// `bench fid --save-stats SOURCE OUT.npz` (pytorch-fid's form) writes SOURCE's statistics.
    Fid {
        /// Image folder, images .npz (arr_0), statistics .npz, cifar10:train:DIR, cifar10:test:DIR or celeba:DIR.
        path1: String,
        /// Same kinds as PATH1 (usually the reference set).
        path2: Option<String>,
        #[command(flatten)]
        feat: FeatureArgs,
        /// Also write PATH1's statistics (mu, sigma; with --sums the mergeable sums) to this .npz.
        #[arg(long, value_name = "OUT.npz")]
        save_stats: Option<PathBuf>,
        /// Also write PATH2's statistics to this .npz.
        #[arg(long, value_name = "OUT.npz")]
        save_ref_stats: Option<PathBuf>,
    },
    /// Precompute FID reference statistics (mu, sigma, mergeable sums) of one source.
    Stats {
        /// Image folder, images .npz, cifar10:train:DIR, cifar10:test:DIR or celeba:DIR.
        source: String,
        #[arg(long, value_name = "FILE.npz")]
        out: PathBuf,
        /// Also store the features of a seeded subset of at most N images (keys `features`,
        /// `features_index`), the reference side of KID and precision/recall.
        #[arg(long, value_name = "N", default_value_t = 0)]
        ref_features: usize,
        /// Seed of that subset (numpy RandomState(seed).choice).
        #[arg(long, value_name = "SEED", default_value_t = 0)]
        ref_features_seed: u32,
        #[command(flatten)]
        feat: FeatureArgs,
    },
    /// Write report.md, report.html and plots/ from OUTPUT_DIR/results.parquet.
    Report {
        /// Output folder of `bench run` (holds results.parquet).
        output_dir: std::path::PathBuf,
        /// Quality number in tables and plots: fid, fd_pixel or fd_exact
        /// [default: fid if the results have it, else fd_exact, else fd_pixel].
        #[arg(long)]
        metric: Option<String>,
    },
}

#[derive(Args)]
struct FeatureArgs {
    /// Preprocessing pipeline: pytorch-fid, tf (TTUR/torch-fidelity/EDM) or clean (clean-fid).
    #[arg(long, default_value = "pytorch-fid", value_parser = |s: &str| s.parse::<ResizeMode>().map_err(|e| e.to_string()))]
    mode: ResizeMode,
    /// Feature dimensions (Inception block): 64, 192, 768 or 2048.
    #[arg(long, default_value_t = 2048)]
    dims: usize,
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Inception weights (.pth or .safetensors); default data/models/pt_inception-2015-12-05-6726825d.pth.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Accept weights whose SHA-256 differs from pytorch-fid's published file.
    #[arg(long)]
    allow_custom_weights: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also search the subfolders of image folders (pytorch-fid does not).
    #[arg(long)]
    recursive: bool,
    /// Image decoding threads (pytorch-fid's data loader workers; 0 decodes on one thread)
    /// [default: one per core].
    #[arg(long, value_name = "N")]
    num_workers: Option<usize>,
    /// Saved statistics also carry the mergeable sums (count, Σf, packed Σffᵀ) beside mu and
    /// sigma, so shards' files can be merged; about as large again.
    #[arg(long)]
    sums: bool,
}

impl FeatureArgs {
    fn options(&self) -> samplerbench::Result<FidOptions> {
        Ok(FidOptions {
            mode: self.mode,
            dims: fid_cli::check_dims(self.dims)?,
            batch_size: self.batch_size.max(1),
            device: fid_cli::parse_device(&self.device)?,
            weights: self.weights.clone(),
            allow_custom_weights: self.allow_custom_weights,
            quiet: self.quiet,
            recursive: self.recursive,
            sums: self.sums,
            ..FidOptions::default()
        })
    }

    /// Sizes the decoding thread pool (`--num-workers`) before any image is read.
    fn configure_workers(&self) -> anyhow::Result<()> {
        if let Some(n) = self.num_workers {
            rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global()?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    samplerbench::models::install_quiet_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's usage errors are user errors: exit 2 (help/version exit 0).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    if matches!(cli.command, Command::Run { .. } | Command::Sample { .. }) {
        samplerbench::runner::timing::configure_cpu_threads();
    }
    // A panic anywhere (a bug, or a libtorch exception outside a guarded call) is one line, not
    // a backtrace: the quiet hook prints nothing and this guard reports it.
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let code = e.downcast_ref::<BenchError>().map_or(1, BenchError::exit_code);
            // A BenchError's message already names its cause; anyhow's chain would repeat it.
            match e.downcast_ref::<BenchError>() {
                Some(b) => eprintln!("error: {b}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(code as u8)
        }
        Err(payload) => {
            eprintln!("internal error: {}", samplerbench::models::panic_text(payload.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// Writes the report of an output folder and prints where it is.
fn report_to_stdout(out: &std::path::Path) -> anyhow::Result<()> {
    use samplerbench::report::Metric;
    let rows = samplerbench::results::read_results(out)?;
    let summary = samplerbench::report::write_report(out, Metric::preferred(&rows))?;
    println!("{}", out.join(samplerbench::results::RESULTS_CSV).display());
    println!("{}", summary.markdown.display());
    println!("{}", summary.html.display());
    for m in &summary.missing {
        eprintln!("missing: {m}");
    }
    Ok(())
}

/// `--devices 0,1`: one `bench run --shard k/N --device cuda:d` worker per GPU, then a merging run.
fn run_on_devices(spec: &std::path::Path, plan: &samplerbench::plan::Plan, list: &str, force: bool, quiet: bool) -> anyhow::Result<()> {
    let devices: Vec<usize> = list
        .split(',')
        .map(|d| d.trim().parse::<usize>().map_err(|_| BenchError::user(format!("--devices {list:?}: expected GPU indices like 0,1,2"))))
        .collect::<Result<_, _>>()?;
    let available = tch::Cuda::device_count().max(0) as usize;
    if let Some(d) = devices.iter().find(|&&d| d >= available) {
        let seen = if available == 0 { "no CUDA device is available".to_string() } else { format!("only {available} CUDA devices are visible (0..{})", available - 1) };
        return Err(BenchError::user(format!("--devices {list}: GPU {d} does not exist; {seen}")).into());
    }
    let exe = std::env::current_exe()?;
    let n = devices.len();
    let children: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("run").arg(spec).arg("--shard").arg(format!("{}/{n}", k + 1)).arg("--device").arg(format!("cuda:{d}"));
            cmd.arg("--out").arg(&plan.output).arg("--quiet");
            cmd.arg("--lease-timeout").arg(samplerbench::runner::lease::config().timeout.as_secs_f64().to_string());
            if force {
                cmd.arg("--force");
            }
            cmd.spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut failed = 0;
    for mut c in children {
        if !c.wait()?.success() {
            failed += 1;
        }
    }
    samplerbench::interrupt::check()?;
    if failed > 0 {
        return Err(BenchError::Internal(format!("{failed} of {n} device workers failed")).into());
    }
    let s = runner::run(plan, &runner::RunOptions { force: false, shard: None, quiet })?;
    eprintln!("{} cells merged/finished from {n} device workers", s.cells_finished);
    report_to_stdout(&plan.output)
}

/// `bench submit`: a fresh Slurm submission, or `--resume`.
#[allow(clippy::too_many_arguments)]
fn submit(
    spec: Option<PathBuf>,
    slurm: bool,
    resume: Option<PathBuf>,
    shards: usize,
    resources: samplerbench::slurm::Resources,
    out: Option<PathBuf>,
    lease_timeout: Option<std::time::Duration>,
    dry_run: bool,
) -> anyhow::Result<()> {
    use samplerbench::slurm;
    let cwd = std::env::current_dir()?;
    let report = if let Some(dir) = resume {
        slurm::resume(&cwd.join(dir), &resources, dry_run)?
    } else {
        let spec = spec.ok_or_else(|| BenchError::user("bench submit: expected SPEC or --resume OUT"))?;
        if !slurm {
            return Err(BenchError::user("bench submit: choose a launcher: --slurm (the one there is)").into());
        }
        if shards == 0 {
            return Err(BenchError::user("--shards 0: expected at least 1").into());
        }
        let spec = cwd.join(spec);
        let plan = slurm::load_plan(&spec, &cwd, resources.gpus_per_task)?;
        let sub = slurm::Submission {
            name: plan.name.clone(),
            out: cwd.join(out.unwrap_or(plan.output.clone())),
            spec,
            bench: std::env::current_exe()?,
            workdir: cwd,
            shards,
            resources,
            lease_timeout,
        };
        if dry_run {
            print!("# {}\n{}\n# {}\n{}", sub.array_script().display(), sub.render_array(), sub.merge_script().display(), sub.render_merge());
        }
        slurm::submit(&sub, dry_run)?
    };
    for args in &report.commands {
        eprintln!("{}sbatch {}", if dry_run { "would run: " } else { "" }, args.join(" "));
    }
    if let Some(why) = &report.nothing {
        eprintln!("{why}");
        return Ok(());
    }
    for (k, task, state) in &report.shards_kept {
        println!("shard {k}: task {task} is {state}; kept");
    }
    if let Some(m) = &report.cancelled_merge {
        println!("cancelled merge job {m} (it waited on the failed tasks)");
    }
    if let Some(a) = &report.array_job {
        let tasks: Vec<String> = report.shards_submitted.iter().map(|&k| slurm::task_id(a, k)).collect();
        let shards: Vec<String> = report.shards_submitted.iter().map(|k| k.to_string()).collect();
        println!("array job {a}: shards {} as tasks {}", shards.join(","), tasks.join(" "));
    }
    if let Some(m) = &report.merge_job {
        match &report.merge_dependency {
            Some(d) => println!("merge job {m}: --dependency={d}"),
            None => println!("merge job {m}: no dependency (every shard is finished)"),
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor => {
            print!("{}", samplerbench::doctor::report(&samplerbench::registry::data_dir()));
        }
        Command::Run { spec, dry_run, force, shard, devices, device, out, quiet, lease_timeout, wait_for_locks } => {
            samplerbench::runner::lease::configure(samplerbench::runner::lease::LeaseConfig::resolve(lease_timeout, wait_for_locks)?);
            samplerbench::interrupt::install()?;
            let mut plan = samplerbench::plan::load(&spec)?;
            if let Some(out) = out {
                plan.output = out;
            }
            if let Some(d) = device {
                plan.device = samplerbench::plan::parse_device_override(&d)?;
            }
            plan.hash_inputs_cached()?;
            if dry_run {
                print!("{}", samplerbench::plan::render_dry_run(&plan));
                return Ok(());
            }
            if let Some(list) = devices {
                return run_on_devices(&spec, &plan, &list, force, quiet);
            }
            let shard = shard.as_deref().map(runner::Shard::parse).transpose()?;
            let s = runner::run(&plan, &runner::RunOptions { force, shard, quiet })?;
            eprintln!(
                "{} cells: {} finished now, {} already done, {} waiting for other shards, {} locked by other processes",
                s.cells_total, s.cells_finished, s.cells_skipped, s.cells_partial, s.cells_locked
            );
            if shard.is_none() {
                report_to_stdout(&plan.output)?;
            }
        }
        Command::Submit {
            spec,
            slurm,
            resume,
            shards,
            partition,
            account,
            time,
            gpus_per_task,
            cpus_per_task,
            mem,
            sbatch_arg,
            out,
            lease_timeout,
            dry_run,
        } => {
            let resources = samplerbench::slurm::Resources {
                partition,
                account,
                time,
                gpus_per_task,
                cpus_per_task,
                mem,
                sbatch_args: sbatch_arg,
            };
            submit(spec, slurm, resume, shards, resources, out, lease_timeout, dry_run)?;
        }
        Command::Status { out, spec, json } => {
            let s = samplerbench::status::status(&out, spec.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", samplerbench::status::render(&s));
            }
        }
        Command::Sample { spec, noise, out, sampler, steps, set, trace, step_noise, prompt, negative_prompt, class, latents_out } => {
            let plan = samplerbench::plan::load(&spec)?;
            let set = set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| BenchError::user(format!("--set {kv:?}: expected KEY=VALUE")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let req = runner::SampleRequest { noise: &noise, out: &out, sampler, steps, set, trace: trace.as_deref(), step_noise: step_noise.as_deref(), prompts: prompt, negative_prompt, classes: class, latents_out: latents_out.as_deref() };
            let nfe = runner::sample_trajectory(&plan, &req)?;
            match nfe.iter().min() == nfe.iter().max() {
                true => eprintln!("wrote {} ({} model evaluations)", out.display(), nfe.first().copied().unwrap_or(0)),
                false => eprintln!("wrote {} (model evaluations per sample: {nfe:?})", out.display()),
            }
        }
        Command::Samplers { filter, json } => {
            let f = filter.as_deref();
            let text = if json { samplerbench::sampling::def::render_json(f) } else { samplerbench::sampling::def::render_text(f) };
            if text.trim().is_empty() || text.trim() == "[]" {
                return Err(BenchError::user(format!("no sampler name contains {:?}", f.unwrap_or(""))).into());
            }
            print!("{text}");
        }
        Command::Check { spec, baseline, tolerance_abs, tolerance_rel, update_baseline, fail_on_improvement, out, quiet } => {
            use samplerbench::check;
            let mut plan = samplerbench::plan::load(&spec)?;
            if let Some(out) = out {
                plan.output = out;
            }
            plan.hash_inputs_cached()?;
            // Load (and validate) the baseline before spending time on the run.
            let existing = if update_baseline && !baseline.exists() { None } else { Some(check::Baseline::load(&baseline)?) };
            runner::run(&plan, &runner::RunOptions { force: false, shard: None, quiet })?;
            let rows = samplerbench::results::read_results(&plan.output)?;
            let class = check::class_of(&plan);
            if update_baseline {
                let mut b = existing.unwrap_or_default();
                b.set_class(&class, check::cells_from_rows(&plan, &rows));
                b.save(&baseline)?;
                eprintln!("wrote {} ({} cells for class {class})", baseline.display(), b.classes[&class].len());
                return Ok(());
            }
            let b = existing.expect("loaded above");
            let tol = match (tolerance_abs, tolerance_rel) {
                (None, None) => None,
                (a, r) => Some(check::Tolerance { abs: a.unwrap_or(0.0), rel: r.unwrap_or(0.0) }),
            };
            let outcome = check::compare(&b, &class, &plan, &rows, tol, fail_on_improvement);
            print!("{}", check::render(&outcome, &class));
            if outcome.failed {
                return Err(anyhow::anyhow!("regression gate failed against {}", baseline.display()));
            }
        }
        Command::Fid { path1, path2, feat, save_stats, save_ref_stats } => {
            let opts = feat.options()?;
            feat.configure_workers()?;
            let Some(path2) = path2 else {
                // pytorch-fid's `--save-stats SOURCE OUT`: clap reads SOURCE as the option's value.
                let Some(source) = save_stats else {
                    return Err(BenchError::user("bench fid needs PATH1 and PATH2 (or --save-stats SOURCE OUT.npz)").into());
                };
                let source = source.to_string_lossy();
                let m = fid_cli::run_stats(&source, std::path::Path::new(&path1), &opts, &mut || fid_cli::load_inception(&opts))?;
                eprintln!("wrote {path1} ({}-d mu, sigma)", m.dims());
                return Ok(());
            };
            let fid = fid_cli::run_fid(
                &path1,
                &path2,
                &opts,
                save_stats.as_deref(),
                save_ref_stats.as_deref(),
                &mut || fid_cli::load_inception(&opts),
            )?;
            println!("{}", fid_cli::format_fid(fid));
        }
        Command::Stats { source, out, ref_features, ref_features_seed, feat } => {
            let opts = FidOptions { ref_features, ref_features_seed, ..feat.options()? };
            feat.configure_workers()?;
            let m = fid_cli::run_stats(&source, &out, &opts, &mut || fid_cli::load_inception(&opts))?;
            eprintln!("wrote {} ({}-d mu, sigma)", out.display(), m.dims());
        }
        Command::Report { output_dir, metric } => {
            use samplerbench::report::Metric;
            let rows = samplerbench::results::read_results(&output_dir)?;
            let metric = match metric {
                Some(m) => Metric::choose(&m, &rows)?,
                None => Metric::preferred(&rows),
            };
            let summary = samplerbench::report::write_report(&output_dir, metric)?;
            println!("{}", summary.markdown.display());
            println!("{}", summary.html.display());
            for m in &summary.missing {
                eprintln!("missing: {m}");
            }
        }
    }
    Ok(())
}
