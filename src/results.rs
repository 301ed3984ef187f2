//! The results table: one row per finished cell, kept in `OUTPUT/results.parquet` (the record the
//! report reads) and `OUTPUT/results.csv` (the same rows for spreadsheets and `grep`), plus the
//! run's environment record `OUTPUT/run.json` ([`RunInfo`]).
//!
//! Every write replaces the whole file through write-to-temp → fsync → rename, so a crash (even
//! `kill -9`) leaves either the previous table or the new one, never a torn file. Rows are keyed by
//! `cell_hash`: appending a row whose `cell_hash` is already present replaces that row in place.
//! Concurrent writers (shards sharing one output folder) serialise on an advisory lock
//! (`results.lock`, `flock`), which the OS releases when a process dies.
//!
//! ## Columns
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `experiment` | str | the spec's `name` |
//! | `model` | str | model description (kind and path, or the oracle's distribution and shape) |
//! | `dataset` | str? | dataset the model was trained on, used to find published numbers (`cifar10`, `celeba64`, `lsun_bedroom`, `lsun_church`); empty when not known |
//! | `sampler` | str | sampler registry name (`ddim`, `ddpm_large` = DDIM Table 1's σ̂, `pndm`, `dpm_solver`, `dpm_solver++`, `unipc`, ...) |
//! | `variant` | str? | the sampler's variant parameter (`singlestep`/`multistep` for `dpm_solver`; `bh1`/`bh2` for `unipc`), written or default |
//! | `order` | int? | solver order where the sampler has one, written or default |
//! | `eta` | float? | DDIM η (0 deterministic, 1 DDPM-like: `ddpm` and the ancestral samplers are 1); empty for samplers without η |
//! | `skip` | str? | timestep selection (`uniform`, `quadratic`, `time_uniform`, `logSNR`, ...) |
//! | `steps` | int | sampler steps S as given in the spec |
//! | `guidance_scale` | float? | classifier-free guidance scale w (1 = one conditional call); empty for unconditional models |
//! | `nfe` | int | model evaluations per sample actually made (counted, not computed from S); under an adaptive sampler (`dpm_adaptive`), the mean over samples, rounded |
//! | `unet_evals` | int | network evaluations per sample: `nfe`, or 2·`nfe` under classifier-free guidance (rounded mean likewise) |
//! | `nfe_mean` | float? | mean model evaluations per sample, exact (differs from `nfe` only under an adaptive sampler) |
//! | `nfe_max` | int? | the most model evaluations one sample needed |
//! | `samples` | int | number of samples the metrics were computed on |
//! | `seed` | int | base seed; sample i's noise depends only on (seed, i, step) |
//! | *metric columns* | float? | one per metric column the spec asked for (`fid`, `fd_exact`, `fd_pixel`, …; see `crate::metrics::METRICS` and the README's metrics section) |
//! | `nan_samples` | int | samples containing NaN/Inf (excluded from the metrics) |
//! | `first_nan_index` | int? | index of the first such sample |
//! | `seconds_sampling` | float | wall seconds spent sampling (device-synchronised, warm-up excluded) |
//! | `seconds_metrics` | float | wall seconds spent on features and statistics |
//! | `seconds_model` | float? | part of `seconds_sampling` spent inside the model |
//! | `seconds_overhead` | float? | `seconds_sampling − seconds_model`: the sampler's own arithmetic |
//! | `seconds_per_step` | float | seconds per sampler step for one batch of `batch_size` (the PNDM paper's time column) |
//! | `images_per_second` | float | `samples / seconds_sampling` |
//! | `peak_memory_bytes` | int? | peak device memory during the cell (not measured yet: tch exposes no CUDA memory statistics; empty) |
//! | `batch_size` | int | samples per batch |
//! | `device` | str | device name (`cpu`, `cuda:0 (NVIDIA H100 …)`) |
//! | `precision` | str | `fp32`, `tf32`, `bf16` or `fp16` |
//! | `fid_mode` | str? | FID pipeline (`pytorch-fid`, ...); empty when the cell has no FID |
//! | `bench_version` | str | `bench` crate version |
//! | `git_commit` | str | commit `bench` was built from |
//! | `spec_hash` | str | SHA-256 of the canonicalised spec |
//! | `cell_hash` | str | SHA-256 of everything that determines the cell's numbers; the row key |
use crate::{BenchError, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub const RESULTS_PARQUET: &str = "results.parquet";
pub const RESULTS_CSV: &str = "results.csv";
pub const RUN_INFO: &str = "run.json";
const LOCK: &str = "results.lock";

/// One finished cell. See the module documentation for each column's meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResultRow {
    pub experiment: String,
    pub model: String,
    pub dataset: Option<String>,
    pub sampler: String,
    pub variant: Option<String>,
    pub order: Option<u32>,
    pub eta: Option<f64>,
    pub skip: Option<String>,
    pub steps: u64,
    pub guidance_scale: Option<f64>,
    pub nfe: u64,
    pub unet_evals: u64,
    pub nfe_mean: Option<f64>,
    pub nfe_max: Option<u64>,
    pub samples: u64,
    pub seed: u64,
    /// Metric column → value (absent when the cell has no such number).
    pub metrics: BTreeMap<String, f64>,
    pub nan_samples: u64,
    pub first_nan_index: Option<u64>,
    pub seconds_sampling: f64,
    pub seconds_metrics: f64,
    pub seconds_model: Option<f64>,
    pub seconds_overhead: Option<f64>,
    pub seconds_per_step: f64,
    pub images_per_second: f64,
    pub peak_memory_bytes: Option<u64>,
    pub batch_size: u64,
    pub device: String,
    pub precision: String,
    pub fid_mode: Option<String>,
    pub bench_version: String,
    pub git_commit: String,
    pub spec_hash: String,
    pub cell_hash: String,
}

impl ResultRow {
    pub fn metric(&self, column: &str) -> Option<f64> {
        self.metrics.get(column).copied()
    }
}

/// The run's environment, written by the runner to `OUTPUT/run.json` and printed by the report's
/// reproducibility block. Fields the runner cannot know stay `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunInfo {
    pub bench_version: String,
    pub git_commit: String,
    pub libtorch_version: Option<String>,
    pub cuda_version: Option<String>,
    pub cudnn_version: Option<String>,
    pub device_name: String,
    pub precision: String,
    pub fid_mode: Option<String>,
    /// Feature dimensions of the FID Inception features (2048 unless `metrics.fid.dims` says otherwise).
    pub fid_dims: Option<u64>,
    /// SHA-256 of every file the cells' numbers depend on, by role (`model.weights`,
    /// `metrics.fid.reference`, …); null for a file that was missing.
    pub input_sha256: BTreeMap<String, Option<String>>,
    /// Where the schedule and prediction type came from (`spec` or the model's scheduler config).
    pub schedule_source: Option<String>,
    pub seed: u64,
    pub samples: u64,
    pub spec_hash: String,
    /// RFC 3339 UTC start and end of the run.
    pub started_utc: Option<String>,
    pub finished_utc: Option<String>,
    pub total_wall_seconds: Option<f64>,
    pub hostname: Option<String>,
    /// The command line as run.
    pub command: Option<String>,
    /// 1-, 5- and 15-minute load averages (`/proc/loadavg`) when the run started and ended:
    /// timings from a loaded machine are slower and more spread out.
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    /// libtorch intra-op threads, rayon threads and `OMP_WAIT_POLICY` the run had.
    pub torch_threads: Option<i32>,
    pub rayon_threads: Option<usize>,
    pub omp_wait_policy: Option<String>,
    /// Per cell: the spread of seconds per step over its batches.
    pub cell_timing: Vec<CellTiming>,
}

/// The spread of one cell's time per step over its batches (each batch timed alone), and the
/// load average when the cell finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CellTiming {
    pub cell: usize,
    pub cell_hash: String,
    pub batches: u64,
    pub seconds_per_step_median: f64,
    pub seconds_per_step_min: f64,
    pub seconds_per_step_q1: f64,
    pub seconds_per_step_q3: f64,
    pub seconds_per_step_max: f64,
    pub load_average: Option<[f64; 3]>,
}

fn polars_err(path: &Path, e: PolarsError) -> BenchError {
    BenchError::file(path, format!("not a valid results table: {e}"))
}

/// The metric columns present in `rows`: known metrics in registry order, then others by name.
pub fn metric_columns(rows: &[ResultRow]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in crate::metrics::METRICS.iter().flat_map(|m| m.columns.iter()) {
        if rows.iter().any(|r| r.metrics.contains_key(c.name)) {
            names.push(c.name.to_string());
        }
    }
    let mut others: Vec<String> =
        rows.iter().flat_map(|r| r.metrics.keys()).filter(|k| !names.contains(k)).cloned().collect();
    others.sort();
    others.dedup();
    names.extend(others);
    names
}

/// Columns that are not metrics (everything else in a results table is one).
const FIXED_COLUMNS: &[&str] = &[
    "experiment", "model", "dataset", "sampler", "variant", "order", "eta", "skip", "steps", "guidance_scale", "nfe", "unet_evals", "nfe_mean", "nfe_max", "samples",
    "seed", "nan_samples", "first_nan_index", "seconds_sampling", "seconds_metrics", "seconds_model", "seconds_overhead", "seconds_per_step",
    "images_per_second", "peak_memory_bytes", "batch_size", "device", "precision", "fid_mode", "bench_version", "git_commit",
    "spec_hash", "cell_hash",
];

fn rows_to_frame(rows: &[ResultRow]) -> PolarsResult<DataFrame> {
    fn s<'a>(rows: &'a [ResultRow], f: impl Fn(&'a ResultRow) -> &'a str) -> Vec<&'a str> {
        rows.iter().map(f).collect()
    }
    fn os<'a>(rows: &'a [ResultRow], f: impl Fn(&'a ResultRow) -> &'a Option<String>) -> Vec<Option<&'a str>> {
        rows.iter().map(|r| f(r).as_deref()).collect()
    }
    fn u(rows: &[ResultRow], f: impl Fn(&ResultRow) -> u64) -> Vec<u64> {
        rows.iter().map(f).collect()
    }
    fn ou(rows: &[ResultRow], f: impl Fn(&ResultRow) -> Option<u64>) -> Vec<Option<u64>> {
        rows.iter().map(f).collect()
    }
    fn fl(rows: &[ResultRow], f: impl Fn(&ResultRow) -> f64) -> Vec<f64> {
        rows.iter().map(f).collect()
    }
    fn of(rows: &[ResultRow], f: impl Fn(&ResultRow) -> Option<f64>) -> Vec<Option<f64>> {
        rows.iter().map(f).collect()
    }
    let columns = vec![
        Column::new("experiment".into(), s(rows, |r| &r.experiment)),
        Column::new("model".into(), s(rows, |r| &r.model)),
        Column::new("dataset".into(), os(rows, |r| &r.dataset)),
        Column::new("sampler".into(), s(rows, |r| &r.sampler)),
        Column::new("variant".into(), os(rows, |r| &r.variant)),
        Column::new("order".into(), ou(rows, |r| r.order.map(u64::from))),
        Column::new("eta".into(), of(rows, |r| r.eta)),
        Column::new("skip".into(), os(rows, |r| &r.skip)),
        Column::new("steps".into(), u(rows, |r| r.steps)),
        Column::new("guidance_scale".into(), of(rows, |r| r.guidance_scale)),
        Column::new("nfe".into(), u(rows, |r| r.nfe)),
        Column::new("unet_evals".into(), u(rows, |r| r.unet_evals)),
        Column::new("nfe_mean".into(), of(rows, |r| r.nfe_mean)),
        Column::new("nfe_max".into(), ou(rows, |r| r.nfe_max)),
        Column::new("samples".into(), u(rows, |r| r.samples)),
        Column::new("seed".into(), u(rows, |r| r.seed)),
    ];
    let mut columns = columns;
    for name in metric_columns(rows) {
        columns.push(Column::new(name.as_str().into(), of(rows, |r| r.metric(&name))));
    }
    columns.extend([
        Column::new("nan_samples".into(), u(rows, |r| r.nan_samples)),
        Column::new("first_nan_index".into(), ou(rows, |r| r.first_nan_index)),
        Column::new("seconds_sampling".into(), fl(rows, |r| r.seconds_sampling)),
        Column::new("seconds_metrics".into(), fl(rows, |r| r.seconds_metrics)),
        Column::new("seconds_model".into(), of(rows, |r| r.seconds_model)),
        Column::new("seconds_overhead".into(), of(rows, |r| r.seconds_overhead)),
        Column::new("seconds_per_step".into(), fl(rows, |r| r.seconds_per_step)),
        Column::new("images_per_second".into(), fl(rows, |r| r.images_per_second)),
        Column::new("peak_memory_bytes".into(), ou(rows, |r| r.peak_memory_bytes)),
        Column::new("batch_size".into(), u(rows, |r| r.batch_size)),
        Column::new("device".into(), s(rows, |r| &r.device)),
        Column::new("precision".into(), s(rows, |r| &r.precision)),
        Column::new("fid_mode".into(), os(rows, |r| &r.fid_mode)),
        Column::new("bench_version".into(), s(rows, |r| &r.bench_version)),
        Column::new("git_commit".into(), s(rows, |r| &r.git_commit)),
        Column::new("spec_hash".into(), s(rows, |r| &r.spec_hash)),
        Column::new("cell_hash".into(), s(rows, |r| &r.cell_hash)),
    ]);
    DataFrame::new(rows.len(), columns)
}

/// Column readers that tolerate a column being absent (an older file) when it is optional, and
/// integer/float width differences (a CSV round trip or another writer).
struct FrameReader<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl FrameReader<'_> {
    fn col(&self, name: &str, dtype: &DataType, required: bool) -> Result<Option<Column>> {
        match self.df.column(name) {
            Ok(c) => c
                .cast(dtype)
                .map(Some)
                .map_err(|e| BenchError::file(self.path, format!("column {name}: expected {dtype}: {e}"))),
            Err(_) if !required => Ok(None),
            Err(_) => Err(BenchError::file(self.path, format!("column {name} is missing"))),
        }
    }
    fn opt_str(&self, name: &str, required: bool) -> Result<Vec<Option<String>>> {
        Ok(match self.col(name, &DataType::String, required)? {
            Some(c) => c
                .str()
                .map_err(|e| polars_err(self.path, e))?
                .iter()
                .map(|v| v.filter(|s| !s.is_empty()).map(str::to_string))
                .collect(),
            None => vec![None; self.df.height()],
        })
    }
    fn str(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.opt_str(name, true)?.into_iter().map(Option::unwrap_or_default).collect())
    }
    fn opt_u64(&self, name: &str, required: bool) -> Result<Vec<Option<u64>>> {
        Ok(match self.col(name, &DataType::UInt64, required)? {
            Some(c) => c.u64().map_err(|e| polars_err(self.path, e))?.iter().collect(),
            None => vec![None; self.df.height()],
        })
    }
    fn u64(&self, name: &str) -> Result<Vec<u64>> {
        self.opt_u64(name, true)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| BenchError::file(self.path, format!("column {name}: row {i} is empty"))))
            .collect()
    }
    fn opt_f64(&self, name: &str, required: bool) -> Result<Vec<Option<f64>>> {
        Ok(match self.col(name, &DataType::Float64, required)? {
            Some(c) => c.f64().map_err(|e| polars_err(self.path, e))?.iter().collect(),
            None => vec![None; self.df.height()],
        })
    }
    fn f64(&self, name: &str) -> Result<Vec<f64>> {
        // A required timing that was not written reads as NaN rather than failing the whole table.
        Ok(self.opt_f64(name, true)?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }
}

fn frame_to_rows(df: &DataFrame, path: &Path) -> Result<Vec<ResultRow>> {
    let r = FrameReader { df, path };
    let n = df.height();
    let (experiment, model, dataset, sampler) = (r.str("experiment")?, r.str("model")?, r.opt_str("dataset", false)?, r.str("sampler")?);
    let (variant, order, eta, skip) =
        (r.opt_str("variant", false)?, r.opt_u64("order", false)?, r.opt_f64("eta", false)?, r.opt_str("skip", false)?);
    let (steps, nfe, samples, seed) = (r.u64("steps")?, r.u64("nfe")?, r.u64("samples")?, r.u64("seed")?);
    let unet_evals = r.opt_u64("unet_evals", false)?;
    let (nfe_mean, nfe_max) = (r.opt_f64("nfe_mean", false)?, r.opt_u64("nfe_max", false)?);
    let guidance_scale = r.opt_f64("guidance_scale", false)?;
    let metric_names: Vec<String> =
        df.get_column_names().iter().map(|n| n.to_string()).filter(|n| !FIXED_COLUMNS.contains(&n.as_str())).collect();
    let metric_values: Vec<Vec<Option<f64>>> = metric_names.iter().map(|n| r.opt_f64(n, true)).collect::<Result<_>>()?;
    let (nan_samples, first_nan_index) = (r.opt_u64("nan_samples", false)?, r.opt_u64("first_nan_index", false)?);
    let (seconds_sampling, seconds_metrics) = (r.f64("seconds_sampling")?, r.f64("seconds_metrics")?);
    let (seconds_model, seconds_overhead) = (r.opt_f64("seconds_model", false)?, r.opt_f64("seconds_overhead", false)?);
    let (seconds_per_step, images_per_second) = (r.f64("seconds_per_step")?, r.f64("images_per_second")?);
    let (peak_memory_bytes, batch_size) = (r.opt_u64("peak_memory_bytes", false)?, r.u64("batch_size")?);
    let (device, precision, fid_mode) = (r.str("device")?, r.str("precision")?, r.opt_str("fid_mode", false)?);
    let (bench_version, git_commit) = (r.str("bench_version")?, r.str("git_commit")?);
    let (spec_hash, cell_hash) = (r.str("spec_hash")?, r.str("cell_hash")?);
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        rows.push(ResultRow {
            experiment: experiment[i].clone(),
            model: model[i].clone(),
            dataset: dataset[i].clone(),
            sampler: sampler[i].clone(),
            variant: variant[i].clone(),
            order: order[i].map(|o| o as u32),
            eta: eta[i],
            skip: skip[i].clone(),
            steps: steps[i],
            guidance_scale: guidance_scale[i],
            nfe: nfe[i],
            unet_evals: unet_evals[i].unwrap_or(nfe[i]),
            nfe_mean: nfe_mean[i],
            nfe_max: nfe_max[i],
            samples: samples[i],
            seed: seed[i],
            metrics: metric_names.iter().zip(&metric_values).filter_map(|(n, v)| Some((n.clone(), v[i]?))).collect(),
            nan_samples: nan_samples[i].unwrap_or(0),
            first_nan_index: first_nan_index[i],
            seconds_sampling: seconds_sampling[i],
            seconds_metrics: seconds_metrics[i],
            seconds_model: seconds_model[i],
            seconds_overhead: seconds_overhead[i],
            seconds_per_step: seconds_per_step[i],
            images_per_second: images_per_second[i],
            peak_memory_bytes: peak_memory_bytes[i],
            batch_size: batch_size[i],
            device: device[i].clone(),
            precision: precision[i].clone(),
            fid_mode: fid_mode[i].clone(),
            bench_version: bench_version[i].clone(),
            git_commit: git_commit[i].clone(),
            spec_hash: spec_hash[i].clone(),
            cell_hash: cell_hash[i].clone(),
        });
    }
    Ok(rows)
}

/// Replace `dir/results.parquet` and `dir/results.csv` by exactly `rows` (atomically each).
/// Callers that add rows use [`append_result`], which also takes the lock.
pub fn write_results(dir: &Path, rows: &[ResultRow]) -> Result<()> {
    let mut df = rows_to_frame(rows).map_err(|e| BenchError::Internal(format!("results table: {e}")))?;
    let parquet = dir.join(RESULTS_PARQUET);
    crate::fsutil::write_atomic_with(&parquet, |tmp| {
        let f = File::create(tmp).map_err(|e| crate::fsutil::write_error(&parquet, e))?;
        ParquetWriter::new(f).finish(&mut df).map_err(|e| crate::fsutil::write_error(&parquet, e))?;
        Ok(())
    })?;
    let csv = dir.join(RESULTS_CSV);
    crate::fsutil::write_atomic_with(&csv, |tmp| {
        let mut f = File::create(tmp).map_err(|e| crate::fsutil::write_error(&csv, e))?;
        CsvWriter::new(&mut f).include_header(true).finish(&mut df).map_err(|e| crate::fsutil::write_error(&csv, e))
    })
}

/// All rows of `dir/results.parquet`, in file order. A missing or unreadable file is a
/// [`BenchError::File`] naming it (exit 2).
pub fn read_results(dir: &Path) -> Result<Vec<ResultRow>> {
    let path = dir.join(RESULTS_PARQUET);
    let f = File::open(&path).map_err(|e| {
        BenchError::file(&path, match e.kind() {
            std::io::ErrorKind::NotFound => "no results file here (run `bench run SPEC` with this output folder first)".to_string(),
            _ => format!("cannot open: {e}"),
        })
    })?;
    let df = ParquetReader::new(f).finish().map_err(|e| polars_err(&path, e))?;
    frame_to_rows(&df, &path)
}

/// Holds `dir/results.lock` (advisory `flock`) for read-modify-write of the results table.
struct ResultsLock(#[allow(dead_code)] File);

impl ResultsLock {
    fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BenchError::io(format!("open {}", path.display()), e))?;
        f.lock().map_err(|e| BenchError::io(format!("lock {}", path.display()), e))?;
        Ok(ResultsLock(f))
    }
}

/// Add `row` to the results table in `dir` (created if absent), replacing the row with the same
/// `cell_hash` if there is one (keeping its position). Safe against crashes and concurrent
/// writers in other processes.
pub fn append_result(dir: &Path, row: &ResultRow) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
    let _lock = ResultsLock::acquire(dir)?;
    let mut rows = if dir.join(RESULTS_PARQUET).exists() { read_results(dir)? } else { Vec::new() };
    match rows.iter_mut().find(|r| r.cell_hash == row.cell_hash) {
        Some(existing) => *existing = row.clone(),
        None => rows.push(row.clone()),
    }
    write_results(dir, &rows)
}

/// Write `dir/run.json` atomically.
pub fn write_run_info(dir: &Path, info: &RunInfo) -> Result<()> {
    let path = dir.join(RUN_INFO);
    let json = serde_json::to_string_pretty(info).map_err(|e| BenchError::Internal(format!("run.json: {e}")))?;
    crate::fsutil::write_atomic(&path, json.as_bytes())
}

/// `dir/run.json` if present; `Ok(None)` when absent, an error naming the file when malformed.
pub fn read_run_info(dir: &Path) -> Result<Option<RunInfo>> {
    let path: PathBuf = dir.join(RUN_INFO);
    match std::fs::read_to_string(&path) {
        Ok(s) => serde_json::from_str(&s).map(Some).map_err(|e| BenchError::file(&path, format!("invalid run.json: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BenchError::io(format!("read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_metric_column_shadows_a_fixed_column() {
        for c in crate::metrics::METRICS.iter().flat_map(|m| m.columns.iter()) {
            assert!(!FIXED_COLUMNS.contains(&c.name), "metric column {} is also a fixed column", c.name);
        }
    }

    fn row(cell: &str, sampler: &str, eta: Option<f64>, steps: u64, fid: Option<f64>) -> ResultRow {
        ResultRow {
            experiment: "t".into(),
            model: "oracle:gaussian[3, 32, 32]".into(),
            sampler: sampler.into(),
            eta,
            skip: Some("uniform".into()),
            steps,
            nfe: steps,
            unet_evals: steps,
            samples: 100,
            metrics: fid.map(|v| ("fid".to_string(), v)).into_iter().collect(),
            seconds_sampling: 1.5,
            seconds_metrics: 0.25,
            seconds_per_step: 0.015,
            images_per_second: 66.0,
            batch_size: 50,
            device: "cpu".into(),
            precision: "fp32".into(),
            bench_version: "0.1.0".into(),
            git_commit: "abc".into(),
            spec_hash: "s".into(),
            cell_hash: cell.into(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_keeps_every_field_including_nones_and_nan() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = row("a", "ddim", Some(0.2), 10, Some(12.5));
        a.dataset = Some("cifar10".into());
        a.variant = Some("plms".into());
        a.order = Some(3);
        a.metrics.insert("fd_exact".into(), f64::NAN);
        a.metrics.insert("fd_dinov2".into(), 3.5);
        a.nan_samples = 4;
        a.first_nan_index = Some(17);
        a.seconds_model = Some(1.25);
        a.seconds_overhead = Some(0.25);
        a.peak_memory_bytes = Some(1 << 33);
        a.fid_mode = Some("pytorch-fid".into());
        let b = row("b", "ddpm_large", None, 20, None);
        append_result(dir.path(), &a).unwrap();
        append_result(dir.path(), &b).unwrap();
        let back = read_results(dir.path()).unwrap();
        assert_eq!(back.len(), 2);
        assert!(back[0].metric("fd_exact").unwrap().is_nan());
        assert_eq!(format!("{:?}", back[0]), format!("{a:?}"));
        assert_eq!(back[1], b);
        let csv = std::fs::read_to_string(dir.path().join(RESULTS_CSV)).unwrap();
        assert!(csv.starts_with("experiment,model,dataset,sampler,variant,order,eta,skip,steps,guidance_scale,nfe,unet_evals,nfe_mean,nfe_max,samples,seed,fid,fd_exact,fd_dinov2,nan_samples,"), "{csv}");
        assert_eq!(csv.lines().count(), 3);
    }

    #[test]
    fn same_cell_hash_replaces_in_place() {
        let dir = tempfile::tempdir().unwrap();
        append_result(dir.path(), &row("a", "ddim", Some(0.0), 10, Some(3.0))).unwrap();
        append_result(dir.path(), &row("b", "ddim", Some(0.0), 20, Some(2.0))).unwrap();
        append_result(dir.path(), &row("a", "ddim", Some(0.0), 10, Some(1.0))).unwrap();
        let back = read_results(dir.path()).unwrap();
        assert_eq!(back.iter().map(|r| (r.cell_hash.as_str(), r.metric("fid"))).collect::<Vec<_>>(), [("a", Some(1.0)), ("b", Some(2.0))]);
        // No temp files left behind.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
    }

    #[test]
    fn concurrent_appends_lose_no_row() {
        // Shards append to one folder at once; the lock serialises read-modify-write.
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for k in 0..6 {
                let d = dir.path();
                s.spawn(move || append_result(d, &row(&format!("c{k}"), "ddim", Some(0.0), 10 + k, Some(k as f64))).unwrap());
            }
        });
        let mut cells: Vec<String> = read_results(dir.path()).unwrap().into_iter().map(|r| r.cell_hash).collect();
        cells.sort();
        assert_eq!(cells, ["c0", "c1", "c2", "c3", "c4", "c5"]);
    }

    #[test]
    fn missing_and_corrupt_files_are_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_results(dir.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("results.parquet: no results file here"), "{e}");
        std::fs::write(dir.path().join(RESULTS_PARQUET), b"not parquet").unwrap();
        let e = read_results(dir.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not a valid results table"), "{e}");
    }

    #[test]
    fn run_info_round_trip_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_run_info(dir.path()).unwrap(), None);
        let info = RunInfo { bench_version: "0.1.0".into(), seed: 7, samples: 50_000, total_wall_seconds: Some(12.5), ..Default::default() };
        write_run_info(dir.path(), &info).unwrap();
        assert_eq!(read_run_info(dir.path()).unwrap(), Some(info));
    }
}
