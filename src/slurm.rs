//! `bench submit --slurm`: a sweep as a Slurm job array of `bench run --shard K/N` tasks plus a
//! merge job, and the Slurm side of `bench status`.
//!
//! `OUT/slurm/array.sbatch` runs shard `SLURM_ARRAY_TASK_ID + 1` of N (array indices count from
//! 0, shards from 1); `OUT/slurm/merge.sbatch` is a plain `bench run` (merge, any missing part,
//! report) submitted with `--dependency=afterok:<array job>` and `--kill-on-invalid-dep=yes`. Both
//! scripts are plain sbatch files, resubmittable by hand. `OUT/slurm/jobs.json` records which
//! Slurm task runs each shard and the merge job. `bench submit --resume OUT` resubmits the shards
//! that are neither finished nor queued or running, and a new merge job that depends on each
//! remaining task by ID: a merge job that depended on a whole array stays cancelled once one of
//! its tasks failed, even if that task is requeued later.
//!
//! States come from `squeue` and `scontrol show job` only: no accounting database (`sacct`) is
//! assumed. A job that slurmctld has already forgotten (after `MinJobAge`) shows as `unknown`;
//! the part files say what it did.
use crate::plan::{self, Plan};
use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const ARRAY_SCRIPT: &str = "array.sbatch";
pub const MERGE_SCRIPT: &str = "merge.sbatch";
pub const JOBS_FILE: &str = "jobs.json";

/// `OUT/slurm`.
pub fn slurm_dir(out: &Path) -> PathBuf {
    out.join("slurm")
}

/// Resources asked for per task (and for the merge job, which may have to run a missing part).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub time: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub mem: Option<String>,
    /// Further sbatch options, verbatim (`--qos=high`, `--constraint=a100`).
    pub sbatch_args: Vec<String>,
}

impl Resources {
    /// sbatch options, in a fixed order.
    pub fn options(&self) -> Vec<String> {
        let mut o = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                o.push(format!("--{k}={v}"));
            }
        };
        add("partition", self.partition.clone());
        add("account", self.account.clone());
        add("time", self.time.clone());
        add("cpus-per-task", self.cpus_per_task.map(|c| c.to_string()));
        add("gpus-per-task", self.gpus_per_task.map(|g| g.to_string()));
        add("mem", self.mem.clone());
        o.extend(self.sbatch_args.iter().cloned());
        o
    }

    /// Every value must fit on an `#SBATCH` line as one word.
    pub fn validate(&self) -> Result<()> {
        let word = |flag: &str, v: &str| -> Result<()> {
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '#' || c.is_control()) {
                return Err(BenchError::user(format!("{flag} {v:?}: expected one word without spaces, quotes or #")));
            }
            Ok(())
        };
        for (flag, v) in [("--partition", &self.partition), ("--account", &self.account), ("--mem", &self.mem)] {
            if let Some(v) = v {
                word(flag, v)?;
            }
        }
        if let Some(t) = &self.time {
            word("--time", t)?;
            // Slurm's forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
            let (days, clock) = t.split_once('-').map_or((None, t.as_str()), |(d, c)| (Some(d), c));
            let parts: Vec<&str> = clock.split(':').collect();
            let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            if !(days.is_none_or(numeric) && parts.len() <= 3 && parts.iter().all(|p| numeric(p))) {
                return Err(BenchError::user(format!("--time {t:?}: expected HH:MM:SS (or D-HH:MM:SS, MM)")));
            }
        }
        for (flag, v) in [("--gpus-per-task", self.gpus_per_task), ("--cpus-per-task", self.cpus_per_task)] {
            if v == Some(0) {
                return Err(BenchError::user(format!("{flag} 0: expected at least 1")));
            }
        }
        for a in &self.sbatch_args {
            word("--sbatch-arg", a)?;
            if !a.starts_with('-') || a.starts_with("--array") || a.starts_with("--dependency") {
                return Err(BenchError::user(format!(
                    "--sbatch-arg {a:?}: expected an sbatch option like --qos=high (bench sets --array and --dependency itself)"
                )));
            }
        }
        Ok(())
    }
}

/// Everything the two scripts are rendered from. Paths are absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub name: String,
    pub spec: PathBuf,
    pub out: PathBuf,
    /// The `bench` binary the tasks run (this one).
    pub bench: PathBuf,
    /// Working directory of the tasks (where `bench submit` ran: relative defaults resolve as here).
    pub workdir: PathBuf,
    pub shards: usize,
    pub resources: Resources,
    pub lease_timeout: Option<Duration>,
}

impl Submission {
    pub fn array_script(&self) -> PathBuf {
        slurm_dir(&self.out).join(ARRAY_SCRIPT)
    }
    pub fn merge_script(&self) -> PathBuf {
        slurm_dir(&self.out).join(MERGE_SCRIPT)
    }
    fn job_name(&self) -> String {
        let safe: String = self.name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        format!("bench-{safe}")
    }
    fn directives(&self, name: &str, extra: &[String], log: &str) -> String {
        let mut lines = vec![format!("--job-name={name}")];
        lines.extend(extra.iter().cloned());
        lines.push("--ntasks=1".into());
        // Requeue after node failure or preemption; one log per task across restarts.
        lines.push("--requeue".into());
        lines.push("--open-mode=append".into());
        lines.push(format!("--output={}", slurm_dir(&self.out).join("logs").join(log).display()));
        lines.push(format!("--chdir={}", self.workdir.display()));
        lines.extend(self.resources.options());
        lines.iter().map(|l| format!("#SBATCH {l}\n")).collect()
    }
    /// `exec bench run SPEC [--shard ..] --out OUT --quiet --wait-for-locks [--lease-timeout S]`.
    fn run_line(&self, shard: Option<&str>) -> String {
        let mut words = vec![sh_quote(&self.bench.display().to_string()), "run".into(), sh_quote(&self.spec.display().to_string())];
        if let Some(s) = shard {
            words.extend(["--shard".into(), s.to_string()]);
        }
        words.extend(["--out".into(), sh_quote(&self.out.display().to_string()), "--quiet".into(), "--wait-for-locks".into()]);
        if let Some(t) = self.lease_timeout {
            words.extend(["--lease-timeout".into(), format!("{}", t.as_secs_f64())]);
        }
        format!("exec {}\n", words.join(" "))
    }

    /// `OUT/slurm/array.sbatch`.
    pub fn render_array(&self) -> String {
        let n = self.shards;
        format!(
            "#!/bin/bash\n\
             # Shard tasks of experiment {name:?}, written by `bench submit --slurm`.\n\
             # Task K (SLURM_ARRAY_TASK_ID, counted from 0) runs `bench run --shard K+1/{n}`: the\n\
             # (K+1)-th sample range of every cell. A requeued or resubmitted task resumes from its\n\
             # shard's checkpoints. Submit by hand (all tasks, or some: --array=1,3):\n\
             #   sbatch --array=0-{last} {script}\n\
             {directives}\
             set -eu\n\
             shard=\"$((SLURM_ARRAY_TASK_ID + 1))/{n}\"\n\
             echo \"bench shard $shard: task ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} (job $SLURM_JOB_ID) on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}, CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-none}}\" >&2\n\
             {common}\
             {run}",
            name = self.name,
            last = n - 1,
            script = sh_quote(&self.array_script().display().to_string()),
            directives = self.directives(&self.job_name(), &[format!("--array=0-{}", n - 1)], "task-%A_%a.out"),
            common = COMMON_ENV,
            run = self.run_line(Some("\"$shard\"")),
        )
    }

    /// `OUT/slurm/merge.sbatch`.
    pub fn render_merge(&self) -> String {
        format!(
            "#!/bin/bash\n\
             # Merge job of experiment {name:?}, written by `bench submit --slurm`: once every shard\n\
             # task succeeded, a plain `bench run` merges each cell's parts (sums, not averages),\n\
             # runs any part still missing, and writes the results and the report.\n\
             # Submit by hand after the shard tasks (their IDs: OUT/slurm/jobs.json, bench status):\n\
             #   sbatch --dependency=afterok:<array job id> {script}\n\
             {directives}\
             set -eu\n\
             echo \"bench merge: job $SLURM_JOB_ID on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}\" >&2\n\
             {common}\
             {run}",
            name = self.name,
            script = sh_quote(&self.merge_script().display().to_string()),
            directives = self.directives(&format!("{}-merge", self.job_name()), &["--kill-on-invalid-dep=yes".into()], "merge-%j.out"),
            common = COMMON_ENV,
            run = self.run_line(None),
        )
    }
}

/// Shared by both scripts: threads = allocated CPUs; info logs (resume points, lease take-overs).
const COMMON_ENV: &str = "if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export OMP_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"; fi\n\
                          export BENCH_LOG=\"${BENCH_LOG:-info}\"\n";

/// A word for a POSIX shell: as is when safe, else single-quoted.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `OUT/slurm/jobs.json`: which Slurm job runs what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    pub spec: PathBuf,
    pub out: PathBuf,
    pub shards: usize,
    /// `tasks[k-1]` is the Slurm task (`ARRAYJOB_INDEX`) that runs shard k.
    pub tasks: Vec<String>,
    pub merge_job: Option<String>,
    /// Every sbatch call, oldest first.
    pub submissions: Vec<SubmitRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRecord {
    pub job_id: String,
    /// `array` or `merge`.
    pub kind: String,
    /// The sbatch arguments.
    pub args: Vec<String>,
    pub unix_time: u64,
}

impl Jobs {
    pub fn path(out: &Path) -> PathBuf {
        slurm_dir(out).join(JOBS_FILE)
    }
    /// `Ok(None)` when `out` has no recorded submission.
    pub fn load(out: &Path) -> Result<Option<Jobs>> {
        let path = Jobs::path(out);
        match fs_err::read_to_string(&path) {
            Ok(s) => serde_json::from_str(&s).map(Some).map_err(|e| BenchError::file(&path, format!("invalid jobs.json: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BenchError::file(&path, format!("cannot read: {e}"))),
        }
    }
    fn save(&self) -> Result<()> {
        let path = Jobs::path(&self.out);
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Internal(e.to_string()))?;
        crate::fsutil::write_atomic(&path, (text + "\n").as_bytes())
    }
    fn record(&mut self, job_id: &str, kind: &str, args: &[String]) {
        let unix_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.submissions.push(SubmitRecord { job_id: job_id.into(), kind: kind.into(), args: args.to_vec(), unix_time });
    }
}

/// The Slurm task ID of shard `k` (1-based) in array job `job`.
pub fn task_id(job: &str, shard: usize) -> String {
    format!("{job}_{}", shard - 1)
}

/// What `submit`/`resume` did (or, dry, would do).
#[derive(Debug, Default)]
pub struct SubmitReport {
    /// `sbatch` argument lists, in order.
    pub commands: Vec<Vec<String>>,
    pub array_job: Option<String>,
    /// Shards given to the new array job.
    pub shards_submitted: Vec<usize>,
    /// Shards left to tasks already queued or running: (shard, task ID, state).
    pub shards_kept: Vec<(usize, String, String)>,
    pub merge_job: Option<String>,
    pub merge_dependency: Option<String>,
    /// Set when nothing was submitted: why.
    pub nothing: Option<String>,
    pub cancelled_merge: Option<String>,
}

/// Loads a plan for another machine's benefit: the tasks re-plan on their node, so only the
/// spec's validity matters here (CUDA devices are assumed to exist there).
pub fn load_plan(spec: &Path, out: &Path, gpus: Option<u32>) -> Result<Plan> {
    let host = plan::Host { cuda_devices: gpus.map_or(64, |g| g as usize) };
    let mut plan = plan::load_with(spec, &host)?;
    plan.output = out.to_path_buf();
    // Cell folders are named by hashes over the input files' contents.
    plan.hash_inputs_cached()?;
    Ok(plan)
}

/// Writes the scripts and submits the array and the merge job (or, `dry_run`, only renders).
pub fn submit(sub: &Submission, dry_run: bool) -> Result<SubmitReport> {
    sub.resources.validate()?;
    for (what, p) in [("output folder", &sub.out), ("working directory", &sub.workdir), ("spec", &sub.spec), ("bench binary", &sub.bench)] {
        let s = p.display().to_string();
        if s.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'' || c.is_control()) {
            return Err(BenchError::user(format!("{what} {s:?}: Slurm scripts need paths without spaces or quotes")));
        }
    }
    let array_args = vec!["--parsable".to_string(), sub.array_script().display().to_string()];
    let mut report = SubmitReport { shards_submitted: (1..=sub.shards).collect(), ..Default::default() };
    if dry_run {
        report.commands.push(array_args);
        report.commands.push(merge_args("afterok:<array job id>", &[], &sub.merge_script()));
        return Ok(report);
    }
    if let Some(jobs) = Jobs::load(&sub.out)? {
        return Err(BenchError::user(format!(
            "{} records an earlier submission (jobs {}); continue it with `bench submit --resume {}`, or remove {} to start over",
            Jobs::path(&sub.out).display(),
            jobs.submissions.iter().map(|s| s.job_id.as_str()).collect::<Vec<_>>().join(", "),
            sub.out.display(),
            slurm_dir(&sub.out).display()
        )));
    }
    if !on_path("sbatch") {
        return Err(missing_tool("sbatch"));
    }
    let logs = slurm_dir(&sub.out).join("logs");
    fs_err::create_dir_all(&logs).map_err(|e| BenchError::file(&logs, format!("cannot create: {e}")))?;
    for (path, text) in [(sub.array_script(), sub.render_array()), (sub.merge_script(), sub.render_merge())] {
        crate::fsutil::write_atomic(&path, text.as_bytes())?;
    }
    let array = sbatch(&array_args)?;
    report.commands.push(array_args.clone());
    let mut jobs = Jobs {
        spec: sub.spec.clone(),
        out: sub.out.clone(),
        shards: sub.shards,
        tasks: (1..=sub.shards).map(|k| task_id(&array, k)).collect(),
        merge_job: None,
        submissions: Vec::new(),
    };
    jobs.record(&array, "array", &array_args);
    // Recorded before the merge is submitted: if that fails, --resume submits it.
    jobs.save()?;
    let dependency = format!("afterok:{array}");
    let args = merge_args(&dependency, &[], &sub.merge_script());
    let merge = sbatch(&args)?;
    report.commands.push(args.clone());
    jobs.merge_job = Some(merge.clone());
    jobs.record(&merge, "merge", &args);
    jobs.save()?;
    report.array_job = Some(array);
    report.merge_job = Some(merge);
    report.merge_dependency = Some(dependency);
    Ok(report)
}

fn merge_args(dependency: &str, overrides: &[String], script: &Path) -> Vec<String> {
    let mut a = vec!["--parsable".to_string()];
    if !dependency.is_empty() {
        a.push(format!("--dependency={dependency}"));
    }
    a.push("--kill-on-invalid-dep=yes".into());
    a.extend(overrides.iter().cloned());
    a.push(script.display().to_string());
    a
}

/// `bench submit --resume OUT`: resubmits the unfinished shards that have no queued or running
/// task, and a merge job after every unfinished shard's task. `overrides` (e.g. a longer
/// `--time`) go on the sbatch command lines, ahead of the scripts' own `#SBATCH` lines.
pub fn resume(out: &Path, overrides: &Resources, dry_run: bool) -> Result<SubmitReport> {
    overrides.validate()?;
    let mut jobs = Jobs::load(out)?.ok_or_else(|| {
        BenchError::file(Jobs::path(out), "not found: --resume continues a submission of `bench submit SPEC --slurm --out OUT`")
    })?;
    let plan = load_plan(&jobs.spec, &jobs.out, overrides.gpus_per_task)?;
    let progress = crate::status::shard_completion(&plan, jobs.shards);
    let mut report = SubmitReport::default();
    let mut ids: Vec<String> = jobs.tasks.clone();
    ids.extend(jobs.merge_job.clone());
    let states = job_states(&ids);
    let state_of = |id: &str| states.get(id).map_or("unknown".to_string(), |s| s.state.clone());
    let merge_state = jobs.merge_job.as_deref().map(state_of);
    if progress.all_cells_finished {
        report.nothing = Some(format!("all {} cells are finished; nothing to submit", plan.cells.len()));
        return Ok(report);
    }
    if merge_state.as_deref() == Some("RUNNING") {
        report.nothing = Some(format!(
            "merge job {} is running (it runs any part still missing); nothing to submit",
            jobs.merge_job.as_deref().unwrap_or_default()
        ));
        return Ok(report);
    }
    for k in 1..=jobs.shards {
        if progress.shard_finished[k - 1] {
            continue;
        }
        let task = &jobs.tasks[k - 1];
        let st = state_of(task);
        if is_active(&st) {
            report.shards_kept.push((k, task.clone(), st));
        } else {
            report.shards_submitted.push(k);
        }
    }
    let merge_active = merge_state.as_deref().is_some_and(is_active);
    if report.shards_submitted.is_empty() && merge_active {
        report.nothing = Some(format!(
            "every unfinished shard has a queued or running task and merge job {} is {}; nothing to submit",
            jobs.merge_job.as_deref().unwrap_or_default(),
            merge_state.unwrap_or_default()
        ));
        return Ok(report);
    }
    let overrides = overrides.options();
    let array_script = slurm_dir(&jobs.out).join(ARRAY_SCRIPT);
    let merge_script = slurm_dir(&jobs.out).join(MERGE_SCRIPT);
    let mut deps: Vec<String> = report.shards_kept.iter().map(|(_, t, _)| t.clone()).collect();
    if !report.shards_submitted.is_empty() {
        let indices: Vec<String> = report.shards_submitted.iter().map(|k| (k - 1).to_string()).collect();
        let mut args = vec!["--parsable".to_string(), format!("--array={}", indices.join(","))];
        args.extend(overrides.iter().cloned());
        args.push(array_script.display().to_string());
        report.commands.push(args.clone());
        if dry_run {
            deps.extend(report.shards_submitted.iter().map(|&k| task_id("<array job id>", k)));
        } else {
            let array = sbatch(&args)?;
            for &k in &report.shards_submitted {
                jobs.tasks[k - 1] = task_id(&array, k);
                deps.push(task_id(&array, k));
            }
            jobs.record(&array, "array", &args);
            jobs.save()?;
            report.array_job = Some(array);
        }
    }
    if merge_active {
        // The old merge job waits on the whole old array, of which a task failed: it would be
        // cancelled as never satisfiable. The new one replaces it.
        let old = jobs.merge_job.clone().unwrap_or_default();
        if !dry_run {
            scancel(&old)?;
        }
        report.cancelled_merge = Some(old);
    }
    let dependency = if deps.is_empty() { String::new() } else { format!("afterok:{}", deps.join(":")) };
    let args = merge_args(&dependency, &overrides, &merge_script);
    report.commands.push(args.clone());
    if !dry_run {
        let merge = sbatch(&args)?;
        jobs.merge_job = Some(merge.clone());
        jobs.record(&merge, "merge", &args);
        jobs.save()?;
        report.merge_job = Some(merge);
    }
    report.merge_dependency = (!dependency.is_empty()).then_some(dependency);
    Ok(report)
}

/// Queued, running or about to run again.
pub fn is_active(state: &str) -> bool {
    matches!(
        state,
        "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SUSPENDED"
            | "STOPPED" | "SIGNALING" | "STAGE_OUT"
    )
}

/// A Slurm job's state and the reason slurmctld gives (`None`, `Resources`, `Dependency`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobState {
    pub state: String,
    pub reason: String,
}

/// States of the given jobs and array tasks, from `squeue` (one line per array task, any state
/// slurmctld still holds), then `scontrol show job` for any it did not list. Jobs neither knows
/// are missing from the map.
pub fn job_states(ids: &[String]) -> BTreeMap<String, JobState> {
    let mut map = BTreeMap::new();
    let mut jobs: Vec<&str> = ids.iter().map(|i| i.split('_').next().unwrap_or(i)).collect();
    jobs.sort();
    jobs.dedup();
    if !jobs.is_empty() {
        let out = Command::new("squeue").args(["--noheader", "--array", "--states=all", "--format=%i|%T|%r", "--jobs"]).arg(jobs.join(",")).output();
        if let Ok(o) = out {
            map.extend(parse_squeue(&String::from_utf8_lossy(&o.stdout)));
        }
    }
    for id in ids {
        if map.contains_key(id) {
            continue;
        }
        if let Ok(o) = Command::new("scontrol").args(["--oneliner", "show", "job", id]).output() {
            if o.status.success() {
                if let Some(s) = parse_scontrol(&String::from_utf8_lossy(&o.stdout)) {
                    map.insert(id.clone(), s);
                }
            }
        }
    }
    map
}

/// `ID|STATE|REASON` lines of `squeue --format=%i|%T|%r`.
pub fn parse_squeue(text: &str) -> BTreeMap<String, JobState> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, '|');
            let (id, state, reason) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            (!id.is_empty() && !state.is_empty()).then(|| (id.to_string(), JobState { state: state.into(), reason: reason.into() }))
        })
        .collect()
}

/// `JobState=` and `Reason=` of `scontrol --oneliner show job` (first record).
pub fn parse_scontrol(text: &str) -> Option<JobState> {
    let line = text.lines().find(|l| l.contains("JobState="))?;
    let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_string);
    Some(JobState { state: field("JobState=")?, reason: field("Reason=").unwrap_or_default() })
}

fn missing_tool(name: &str) -> BenchError {
    BenchError::user(format!(
        "{name}: not found on PATH: the Slurm client tools are missing (Debian/Ubuntu: apt-get install slurm-client; on a cluster: module load slurm)"
    ))
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn tool(name: &str, args: &[String]) -> Result<std::process::Output> {
    Command::new(name).args(args).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing_tool(name),
        _ => BenchError::io(format!("running {name}"), e),
    })
}

/// `sbatch --parsable ...` → the job ID (`123`, or `123;cluster` → `123`).
fn sbatch(args: &[String]) -> Result<String> {
    let o = tool("sbatch", args)?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if !o.status.success() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        let err = String::from_utf8_lossy(&o.stderr);
        return Err(BenchError::user(format!("sbatch {} failed: {}", args.join(" "), err.trim().lines().last().unwrap_or(stdout.trim()))));
    }
    Ok(id)
}

fn scancel(id: &str) -> Result<()> {
    let o = tool("scancel", &[id.to_string()])?;
    if !o.status.success() {
        tracing::warn!("scancel {id}: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(resources: Resources, lease: Option<Duration>) -> Submission {
        Submission {
            name: "ddim eta".into(),
            spec: "/home/u/exp/ddim.yaml".into(),
            out: "/scratch/u/ddim".into(),
            bench: "/opt/bench/bin/bench".into(),
            workdir: "/home/u/exp".into(),
            shards: 4,
            resources,
            lease_timeout: lease,
        }
    }

    #[test]
    fn array_script_runs_shard_index_plus_one() {
        let r = Resources {
            partition: Some("gpu".into()),
            account: Some("proj7".into()),
            time: Some("04:00:00".into()),
            gpus_per_task: Some(1),
            cpus_per_task: Some(8),
            mem: Some("32G".into()),
            sbatch_args: vec!["--qos=high".into()],
        };
        let expected = r#"#!/bin/bash
# Shard tasks of experiment "ddim eta", written by `bench submit --slurm`.
# Task K (SLURM_ARRAY_TASK_ID, counted from 0) runs `bench run --shard K+1/4`: the
# (K+1)-th sample range of every cell. A requeued or resubmitted task resumes from its
# shard's checkpoints. Submit by hand (all tasks, or some: --array=1,3):
#   sbatch --array=0-3 /scratch/u/ddim/slurm/array.sbatch
#SBATCH --job-name=bench-ddim_eta
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=/scratch/u/ddim/slurm/logs/task-%A_%a.out
#SBATCH --chdir=/home/u/exp
#SBATCH --partition=gpu
#SBATCH --account=proj7
#SBATCH --time=04:00:00
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-task=1
#SBATCH --mem=32G
#SBATCH --qos=high
set -eu
shard="$((SLURM_ARRAY_TASK_ID + 1))/4"
echo "bench shard $shard: task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (job $SLURM_JOB_ID) on $(hostname), restart ${SLURM_RESTART_COUNT:-0}, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-none}" >&2
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK"; fi
export BENCH_LOG="${BENCH_LOG:-info}"
exec /opt/bench/bin/bench run /home/u/exp/ddim.yaml --shard "$shard" --out /scratch/u/ddim --quiet --wait-for-locks
"#;
        assert_eq!(sub(r, None).render_array(), expected);
    }

    #[test]
    fn merge_script_is_a_plain_run_killed_on_an_invalid_dependency() {
        let expected = r#"#!/bin/bash
# Merge job of experiment "ddim eta", written by `bench submit --slurm`: once every shard
# task succeeded, a plain `bench run` merges each cell's parts (sums, not averages),
# runs any part still missing, and writes the results and the report.
# Submit by hand after the shard tasks (their IDs: OUT/slurm/jobs.json, bench status):
#   sbatch --dependency=afterok:<array job id> /scratch/u/ddim/slurm/merge.sbatch
#SBATCH --job-name=bench-ddim_eta-merge
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --ntasks=1
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=/scratch/u/ddim/slurm/logs/merge-%j.out
#SBATCH --chdir=/home/u/exp
set -eu
echo "bench merge: job $SLURM_JOB_ID on $(hostname), restart ${SLURM_RESTART_COUNT:-0}" >&2
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK"; fi
export BENCH_LOG="${BENCH_LOG:-info}"
exec /opt/bench/bin/bench run /home/u/exp/ddim.yaml --out /scratch/u/ddim --quiet --wait-for-locks --lease-timeout 30
"#;
        assert_eq!(sub(Resources::default(), Some(Duration::from_secs(30))).render_merge(), expected);
    }

    #[test]
    fn array_indices_map_to_shards_from_one() {
        assert_eq!(task_id("812", 1), "812_0");
        assert_eq!(task_id("812", 4), "812_3");
    }

    #[test]
    fn quoting_and_validation() {
        assert_eq!(sh_quote("/a/b-c_d.yaml"), "/a/b-c_d.yaml");
        assert_eq!(sh_quote("it's here"), "'it'\\''s here'");
        let bad = |r: Resources| r.validate().unwrap_err().to_string();
        assert_eq!(bad(Resources { time: Some("4h".into()), ..Default::default() }), "--time \"4h\": expected HH:MM:SS (or D-HH:MM:SS, MM)");
        assert!(Resources { time: Some("1-04:00:00".into()), ..Default::default() }.validate().is_ok());
        assert_eq!(
            bad(Resources { partition: Some("gpu a100".into()), ..Default::default() }),
            "--partition \"gpu a100\": expected one word without spaces, quotes or #"
        );
        assert!(bad(Resources { sbatch_args: vec!["--array=1-3".into()], ..Default::default() }).contains("bench sets --array"));
        assert!(bad(Resources { gpus_per_task: Some(0), ..Default::default() }).contains("at least 1"));
    }

    #[test]
    fn squeue_and_scontrol_output_parse() {
        let q = "812_0|COMPLETED|None\n812_1|RUNNING|None\n812_2|PENDING|Resources\n813|PENDING|Dependency\n";
        let m = parse_squeue(q);
        assert_eq!(m.len(), 4);
        assert_eq!(m["812_2"], JobState { state: "PENDING".into(), reason: "Resources".into() });
        assert_eq!(m["813"].reason, "Dependency");
        let s = "JobId=815 ArrayJobId=812 ArrayTaskId=1 JobName=bench-x UserId=root(0) JobState=CANCELLED Reason=DependencyNeverSatisfied Dependency=afterok:812_*(failed)\n";
        assert_eq!(parse_scontrol(s), Some(JobState { state: "CANCELLED".into(), reason: "DependencyNeverSatisfied".into() }));
        assert_eq!(parse_scontrol("slurm_load_jobs error: Invalid job id specified\n"), None);
        assert!(is_active("REQUEUED") && is_active("PENDING") && !is_active("CANCELLED") && !is_active("unknown"));
    }
}
