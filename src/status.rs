//! `bench status OUT`: how far a run is, for any output folder (local, sharded or Slurm).
//!
//! Reads only what runs write: each cell's part checkpoints (`OUT/cells/<hash>/part-K-of-N.json`,
//! [`crate::runner::PartState`]) and the results table (a row = a finished cell). The ETA divides each shard's
//! remaining work by its measured speed: images/s of its parts so far (sampling and metric time),
//! weighted by each cell's NFE per sample, since a 1000-step cell costs 100 times a 10-step one;
//! shards are assumed to run in parallel (the largest shard ETA is the run's). With a Slurm
//! submission recorded (`OUT/slurm/jobs.json`), each shard's task and the merge job show their
//! state from `squeue`/`scontrol`.
use crate::plan::Plan;
use crate::runner::parts::{existing_partition, read_state};
use crate::runner::{estimate_nfe, repeat_dir, Shard};
use crate::slurm::{self, JobState, Jobs};
use crate::Result;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub out: PathBuf,
    pub spec: PathBuf,
    pub name: String,
    pub samples: u64,
    /// Independent seeds per cell; a cell's `total` counts every repeat's samples.
    pub repeats: u32,
    pub shards: usize,
    pub cells: Vec<CellStatus>,
    pub shard_progress: Vec<ShardStatus>,
    pub cells_finished: usize,
    pub cells_total: usize,
    /// Samples per second over every part's measured time.
    pub images_per_second: Option<f64>,
    /// Seconds until every shard is done (None: nothing measured yet).
    pub eta_seconds: Option<f64>,
    pub merge_job: Option<Job>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellStatus {
    pub index: usize,
    pub label: String,
    pub hash: String,
    /// Its results row exists.
    pub finished: bool,
    pub done: u64,
    pub total: u64,
    /// Per shard, samples done (of the shard's range); empty when the cell is finished.
    pub parts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// 1-based.
    pub shard: usize,
    pub done: u64,
    pub total: u64,
    pub finished: bool,
    pub images_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub task: Option<Job>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    /// From squeue/scontrol; `unknown` when slurmctld no longer knows the job.
    pub state: String,
    pub reason: String,
}

/// Which shards have finished every cell (their part done, or the cell's row written).
pub struct ShardCompletion {
    pub shard_finished: Vec<bool>,
    pub all_cells_finished: bool,
}

pub fn shard_completion(plan: &Plan, shards: usize) -> ShardCompletion {
    let finished = finished_cells(&plan.output);
    let shard_finished = (1..=shards)
        .map(|k| {
            plan.cells.iter().all(|c| {
                finished.contains(&c.hash)
                    || part_states(&plan.output, &c.hash, plan.repeats, Shard { index: k, count: shards }).iter().all(|s| s.as_ref().is_some_and(|s| s.done))
            })
        })
        .collect();
    ShardCompletion { shard_finished, all_cells_finished: plan.cells.iter().all(|c| finished.contains(&c.hash)) }
}

/// The status of output folder `out`. The spec is `spec`, else the one of a recorded Slurm
/// submission, else the copy a run leaves in `OUT/spec.yaml`.
pub fn status(out: &Path, spec: Option<&Path>) -> Result<Status> {
    let jobs = Jobs::load(out)?;
    let spec: PathBuf = match (spec, &jobs) {
        (Some(s), _) => s.to_path_buf(),
        (None, Some(j)) => j.spec.clone(),
        (None, None) => out.join("spec.yaml"),
    };
    if !spec.exists() {
        return Err(crate::BenchError::file(&spec, "no spec here: is this an output folder of `bench run`/`bench submit`? (or pass --spec)"));
    }
    let plan = slurm::load_plan(&spec, out, None)?;
    let shards = jobs.as_ref().map(|j| j.shards).or_else(|| plan.cells.iter().filter_map(|c| existing_partition(&repeat_dir(&out.join("cells").join(&c.hash), plan.repeats, 0))).map(|p| p.count).max()).unwrap_or(1);
    let finished = finished_cells(out);
    let repeats = u64::from(plan.repeats.max(1));

    struct Measured {
        samples: u64,
        work: f64,
        seconds: f64,
    }
    let mut per_shard: Vec<(u64, u64, f64, bool, Measured)> = (0..shards)
        .map(|_| (0, 0, 0.0, true, Measured { samples: 0, work: 0.0, seconds: 0.0 }))
        .collect();
    let mut cells = Vec::new();
    for c in &plan.cells {
        let is_finished = finished.contains(&c.hash);
        let nfe = estimate_nfe(&plan, c) as f64;
        let mut parts = Vec::new();
        for (k, acc) in per_shard.iter_mut().enumerate() {
            let part = Shard { index: k + 1, count: shards };
            let (first, end) = part.range(plan.samples);
            let shard_total = (end - first) * repeats;
            let states = part_states(out, &c.hash, plan.repeats, part);
            let mut done = 0;
            for s in states.iter().flatten() {
                done += s.next.saturating_sub(first).min(end - first);
                acc.4.samples += s.next.saturating_sub(s.first);
                acc.4.work += s.next.saturating_sub(s.first) as f64 * s.nfe_per_sample as f64;
                acc.4.seconds += s.seconds_sampling + s.seconds_metrics;
            }
            if is_finished {
                done = shard_total;
            }
            acc.0 += done;
            acc.1 += shard_total;
            acc.2 += (shard_total - done) as f64 * nfe;
            acc.3 &= is_finished || states.iter().all(|s| s.as_ref().is_some_and(|s| s.done));
            parts.push(done);
        }
        let label = format!("{} {} S={}", c.sampler, c.params_text(), c.steps);
        let done = if is_finished { plan.samples * repeats } else { parts.iter().sum() };
        cells.push(CellStatus {
            index: c.index,
            label,
            hash: c.hash.clone(),
            finished: is_finished,
            done,
            total: plan.samples * repeats,
            parts: if is_finished { Vec::new() } else { parts },
        });
    }
    let (all_work, all_seconds, all_samples) =
        per_shard.iter().fold((0.0, 0.0, 0u64), |(w, s, n), p| (w + p.4.work, s + p.4.seconds, n + p.4.samples));
    let overall_rate = (all_seconds > 0.0).then(|| all_work / all_seconds);
    let states = jobs.as_ref().map(|j| {
        let mut ids = j.tasks.clone();
        ids.extend(j.merge_job.clone());
        slurm::job_states(&ids)
    });
    let job = |id: &str| -> Job {
        let s = states.as_ref().and_then(|m| m.get(id)).cloned().unwrap_or(JobState { state: "unknown".into(), reason: String::new() });
        Job { id: id.to_string(), state: s.state, reason: s.reason }
    };
    let shard_progress: Vec<ShardStatus> = per_shard
        .iter()
        .enumerate()
        .map(|(k, (done, total, remaining_work, shard_finished, m))| {
            let rate = if m.seconds > 0.0 { Some(m.work / m.seconds) } else { overall_rate };
            ShardStatus {
                shard: k + 1,
                done: *done,
                total: *total,
                finished: *shard_finished,
                images_per_second: (m.seconds > 0.0).then(|| m.samples as f64 / m.seconds),
                eta_seconds: if *remaining_work == 0.0 { Some(0.0) } else { rate.filter(|r| *r > 0.0).map(|r| remaining_work / r) },
                task: jobs.as_ref().and_then(|j| j.tasks.get(k)).map(|t| job(t)),
            }
        })
        .collect();
    let eta_seconds = shard_progress.iter().try_fold(0.0f64, |acc, s| s.eta_seconds.map(|e| acc.max(e)));
    Ok(Status {
        out: out.to_path_buf(),
        spec,
        name: plan.name.clone(),
        samples: plan.samples,
        repeats: plan.repeats.max(1),
        shards,
        cells_finished: cells.iter().filter(|c| c.finished).count(),
        cells_total: cells.len(),
        cells,
        shard_progress,
        images_per_second: (all_seconds > 0.0).then(|| all_samples as f64 / all_seconds),
        eta_seconds,
        merge_job: jobs.as_ref().and_then(|j| j.merge_job.as_deref()).map(job),
    })
}

/// The human-readable form (stdout of `bench status`).
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "{}: experiment {}, {} cells × {} samples{} in {} shard{}\n\n",
        s.out.display(),
        s.name,
        s.cells_total,
        s.samples,
        if s.repeats > 1 { format!(" × {} repeats", s.repeats) } else { String::new() },
        s.shards,
        if s.shards == 1 { "" } else { "s" }
    );
    let mut rows = vec![vec!["cell".to_string(), "sampler".into(), "samples".into(), "per shard".into()]];
    for c in &s.cells {
        let parts = if c.finished { "finished".to_string() } else { c.parts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ") };
        rows.push(vec![c.index.to_string(), c.label.clone(), format!("{}/{}", c.done, c.total), parts]);
    }
    out += &table(&rows, &[true, false, true, false]);
    out += "\n";
    let mut rows = vec![vec!["shard".to_string(), "samples".into(), "images/s".into(), "ETA".into(), "slurm".into()]];
    for sh in &s.shard_progress {
        rows.push(vec![
            format!("{}/{}", sh.shard, s.shards),
            format!("{}/{}", sh.done, sh.total),
            sh.images_per_second.map_or("-".into(), |r| format!("{r:.1}")),
            if sh.finished { "done".into() } else { sh.eta_seconds.map_or("-".into(), clock) },
            sh.task.as_ref().map_or(String::new(), job_text),
        ]);
    }
    if let Some(m) = &s.merge_job {
        rows.push(vec!["merge".into(), String::new(), String::new(), String::new(), job_text(m)]);
    }
    out += &table(&rows, &[false, true, true, true, false]);
    out += &format!(
        "\nfinished cells {}/{}; {}\n",
        s.cells_finished,
        s.cells_total,
        match (s.cells_finished == s.cells_total, s.eta_seconds) {
            (true, _) => "all done".to_string(),
            (false, Some(e)) => format!("ETA {} (measured images/s per shard, shards in parallel)", clock(e)),
            (false, None) => "ETA unknown (nothing measured yet)".to_string(),
        }
    );
    out
}

fn job_text(j: &Job) -> String {
    let reason = if j.reason.is_empty() || j.reason == "None" { String::new() } else { format!(" ({})", j.reason) };
    format!("{} {}{reason}", j.id, j.state)
}

/// `H:MM:SS`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).ceil() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let mut width = vec![0usize; right.len()];
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let pad = " ".repeat(width[k] - c.chars().count());
                if right[k] {
                    format!("{pad}{c}")
                } else {
                    format!("{c}{pad}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out += "\n";
    }
    out
}

fn finished_cells(out: &Path) -> HashSet<String> {
    crate::results::read_results(out).unwrap_or_default().into_iter().map(|r| r.cell_hash).collect()
}

/// A shard's part of a cell, one state per repeat (None where that part has not started).
fn part_states(out: &Path, hash: &str, repeats: u32, part: Shard) -> Vec<Option<crate::runner::PartState>> {
    let cell = out.join("cells").join(hash);
    (0..repeats.max(1)).map(|r| read_state(&repeat_dir(&cell, repeats, r).join(format!("{}.json", part.tag())))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_table_format() {
        assert_eq!(clock(0.2), "0:00:01");
        assert_eq!(clock(3725.0), "1:02:05");
        let t = table(&[vec!["a".into(), "bb".into()], vec!["ccc".into(), "d".into()]], &[true, false]);
        assert_eq!(t, "  a  bb\nccc  d\n");
    }
}
