//! Parts of a cell and their crash-safe bookkeeping.
//!
//! A *part* is a contiguous sample range of a cell (`--shard K/N` runs part K of N of every
//! cell; an unsharded run is part 1 of 1). Each part keeps, in `OUTPUT/cells/<cell_hash>/`:
//! - `part-K-of-N.json` ([`PartState`]): the next sample index, timings, NaN counts, and which
//!   statistics files belong to it;
//! - `part-K-of-N.next-I.<metric>.npz`: each metric's running statistics after sample I−1;
//! - `part-K-of-N.lock` while a process works on it: its lease (see [`super::lease`]).
//!
//! A checkpoint writes the statistics under a new name first, then the JSON that points at them,
//! then removes the old statistics: a crash at any point leaves a consistent pair.
use crate::fsutil::write_atomic;
use crate::metrics::Accumulator;
use crate::{BenchError, Result};
use std::path::{Path, PathBuf};

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
    /// The last batch's most model calls per sample (progress and `bench status` estimates).
    pub nfe_per_sample: u64,
    #[serde(default)]
    pub unet_evals_per_sample: u64,
    /// Model calls and network evaluations summed over the part's samples, and the most one
    /// sample needed (they differ from sample to sample only under an adaptive sampler).
    #[serde(default)]
    pub nfe_sum: u64,
    #[serde(default)]
    pub unet_evals_sum: u64,
    #[serde(default)]
    pub nfe_max: u64,
    /// Suffix of the statistics files that belong to this state (`next` at the time of writing).
    pub stats_tag: Option<String>,
    /// Seconds per step of each batch, in order (the spread recorded in `run.json`).
    #[serde(default)]
    pub batch_seconds_per_step: Vec<f64>,
}

impl PartState {
    /// Adds one batch's per-sample (NFE, network evaluations).
    pub fn add_cost(&mut self, cost: &[(usize, usize)]) {
        let max = cost.iter().map(|c| c.0 as u64).max().unwrap_or(0);
        self.nfe_per_sample = max;
        self.unet_evals_per_sample = cost.iter().map(|c| c.1 as u64).max().unwrap_or(0);
        self.nfe_sum += cost.iter().map(|c| c.0 as u64).sum::<u64>();
        self.unet_evals_sum += cost.iter().map(|c| c.1 as u64).sum::<u64>();
        self.nfe_max = self.nfe_max.max(max);
    }
    /// Adds a finished part's counts (a part checkpointed before the sums were kept counts
    /// its per-sample NFE for every sample).
    pub fn merge_cost(&mut self, part: &PartState) {
        let n = part.end - part.first;
        let (nfe, evals) = if part.nfe_sum > 0 { (part.nfe_sum, part.unet_evals_sum) } else { (part.nfe_per_sample * n, part.unet_evals_per_sample * n) };
        self.nfe_sum += nfe;
        self.unet_evals_sum += evals;
        self.nfe_max = self.nfe_max.max(part.nfe_max.max(part.nfe_per_sample));
        self.end += n;
    }
    /// Mean NFE over the samples `first..end` (of a finished part, or of merged parts).
    pub fn nfe_mean(&self) -> f64 {
        self.nfe_sum as f64 / (self.end - self.first).max(1) as f64
    }
    pub fn unet_evals_mean(&self) -> f64 {
        self.unet_evals_sum as f64 / (self.end - self.first).max(1) as f64
    }
}

pub fn read_state(path: &Path) -> Option<PartState> {
    serde_json::from_str(&fs_err::read_to_string(path).ok()?).ok()
}

fn write_state(path: &Path, state: &PartState) -> Result<()> {
    let text = serde_json::to_string_pretty(state).map_err(|e| BenchError::Internal(e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// The statistics file of one metric for one checkpoint tag.
pub fn stats_path(dir: &Path, tag: &str, metric: &str) -> PathBuf {
    dir.join(format!("{tag}.{metric}.npz"))
}

/// A metric's accumulator with the name its files carry.
pub struct NamedAccumulator<'a> {
    pub name: String,
    pub acc: Box<dyn Accumulator + 'a>,
}

/// Statistics files first (under a new name), then the JSON that points at them, then the old
/// statistics are removed.
pub fn checkpoint(dir: &Path, tag: &str, state: &mut PartState, stats: &[NamedAccumulator], state_path: &Path) -> Result<()> {
    let stats_tag = format!("{tag}.next-{}", state.next);
    for s in stats {
        let path = stats_path(dir, &stats_tag, &s.name);
        s.acc.save(&path)?;
    }
    let old = state.stats_tag.replace(stats_tag);
    write_state(state_path, state)?;
    if let Some(old) = old.filter(|o| Some(o) != state.stats_tag.as_ref()) {
        for s in stats {
            let _ = std::fs::remove_file(stats_path(dir, &old, &s.name));
        }
    }
    Ok(())
}

/// Removes the checkpoints (state and statistics files) of every part of `partition` once the
/// cell's row is written, and the cell's folder if nothing else is left in it. Best effort: a
/// file that cannot be removed costs disk space, not correctness.
pub fn remove_parts(dir: &Path, partition: Shard) {
    for k in 1..=partition.count {
        let tag = Shard { index: k, count: partition.count }.tag();
        // Every checkpoint generation of the part (a crash may have left an older one).
        let prefix = format!("{tag}.next-");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name.ends_with(".npz") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_file(dir.join(format!("{tag}.json")));
    }
    let _ = std::fs::remove_dir(dir);
}

/// The partition (N) of a cell's finished or started parts, if any.
pub fn existing_partition(dir: &Path) -> Option<Shard> {
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
