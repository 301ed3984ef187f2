//! `bench check`: a regression gate. A finished run's rows are compared with a committed
//! baseline, cell by cell (keyed by `cell_hash`, shown by a readable label) and per
//! hardware/precision class (`cpu-fp32`, `cuda-bf16`, ...), since numbers legitimately differ
//! across hardware but must not drift within a class.
pub use crate::metrics::Tolerance;
use crate::plan::{Cell, Plan};
use crate::results::ResultRow;
use crate::{BenchError, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The tolerance of a metric column: the baseline's, else the metric's default (each metric's
/// module derives it from its arithmetic; see `crate::metrics`), else exact equality for a
/// column no metric defines.
pub fn tolerance_of(baseline: &Baseline, metric: &str) -> Tolerance {
    baseline
        .tolerances
        .get(metric)
        .copied()
        .or_else(|| crate::metrics::column(metric).map(|c| c.tolerance))
        .unwrap_or(Tolerance { abs: 0.0, rel: 0.0 })
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineCell {
    pub cell: String,
    pub cell_hash: String,
    pub nfe: u64,
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Per-metric tolerances, written with the baseline from each metric's default (edit to
    /// taste); metrics not listed use their default.
    #[serde(default)]
    pub tolerances: BTreeMap<String, Tolerance>,
    /// Hardware/precision class → cells, sorted by label.
    pub classes: BTreeMap<String, Vec<BaselineCell>>,
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BenchError::file(path, format!("cannot read the baseline ({e}); create it with `bench check SPEC --baseline FILE --update-baseline`"))
        })?;
        serde_json::from_str(&text).map_err(|e| BenchError::file(path, format!("not a valid baseline: {e}")))
    }
    /// Sorted keys and cells, fixed formatting: rewrites diff cleanly in review.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Internal(e.to_string()))?;
        text.push('\n');
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// `cpu-fp32`, `cuda-bf16`, ...: numbers are compared only within one class.
pub fn class_of(plan: &Plan) -> String {
    let hw = if plan.device.to_tch().is_cuda() { "cuda" } else { "cpu" };
    format!("{hw}-{}", plan.precision)
}

/// A readable cell label: `ddim eta=0.5 skip=quadratic S=10`.
pub fn label(cell: &Cell) -> String {
    let params = cell.params_text();
    let params = if params == "-" { String::new() } else { format!(" {params}") };
    format!("{}{params} skip={} S={}", cell.sampler, cell.skip, cell.steps)
}

fn metrics_of(row: &ResultRow) -> BTreeMap<String, f64> {
    row.metrics.clone()
}

impl Baseline {
    /// Replaces one class's cells and records the default tolerance of every metric they hold
    /// that has none yet (existing tolerances are kept: they may have been edited on purpose).
    pub fn set_class(&mut self, class: &str, cells: Vec<BaselineCell>) {
        for c in &cells {
            for m in c.metrics.keys() {
                if let Some(col) = crate::metrics::column(m) {
                    self.tolerances.entry(m.clone()).or_insert(col.tolerance);
                }
            }
        }
        self.classes.insert(class.to_owned(), cells);
    }
}

/// The baseline cells a plan's finished rows give (for `--update-baseline`).
pub fn cells_from_rows(plan: &Plan, rows: &[ResultRow]) -> Vec<BaselineCell> {
    let mut cells: Vec<BaselineCell> = plan
        .cells
        .iter()
        .filter_map(|c| {
            let row = rows.iter().find(|r| r.cell_hash == c.hash)?;
            Some(BaselineCell { cell: label(c), cell_hash: c.hash.clone(), nfe: row.nfe, metrics: metrics_of(row) })
        })
        .collect();
    cells.sort_by(|a, b| a.cell.cmp(&b.cell).then(a.cell_hash.cmp(&b.cell_hash)));
    cells
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Improved,
    Regressed,
    NfeChanged,
    Missing,
    New,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Improved => "improved",
            Status::Regressed => "REGRESSED",
            Status::NfeChanged => "NFE CHANGED",
            Status::Missing => "MISSING",
            Status::New => "new (not in baseline)",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckLine {
    pub cell: String,
    pub metric: String,
    pub baseline: Option<f64>,
    pub now: Option<f64>,
    pub allowed: Option<f64>,
    pub status: Status,
}

pub struct Outcome {
    pub lines: Vec<CheckLine>,
    pub failed: bool,
}

/// Compare this class's baseline cells with the run's rows.
pub fn compare(
    baseline: &Baseline,
    class: &str,
    plan: &Plan,
    rows: &[ResultRow],
    tolerance_override: Option<Tolerance>,
    fail_on_improvement: bool,
) -> Outcome {
    let empty = vec![];
    let cells = baseline.classes.get(class).unwrap_or(&empty);
    let mut lines = vec![];
    for b in cells {
        let Some(row) = rows.iter().find(|r| r.cell_hash == b.cell_hash) else {
            lines.push(CheckLine { cell: b.cell.clone(), metric: "-".into(), baseline: None, now: None, allowed: None, status: Status::Missing });
            continue;
        };
        if row.nfe != b.nfe {
            lines.push(CheckLine {
                cell: b.cell.clone(),
                metric: "nfe".into(),
                baseline: Some(b.nfe as f64),
                now: Some(row.nfe as f64),
                allowed: Some(0.0),
                status: Status::NfeChanged,
            });
        }
        let now = metrics_of(row);
        for (metric, &base) in &b.metrics {
            let tol = tolerance_override.unwrap_or_else(|| tolerance_of(baseline, metric));
            let allowed = tol.abs.max(tol.rel * base.abs());
            let value = now.get(metric).copied();
            // How much worse than the baseline (columns that improve upwards count the other way).
            let higher = crate::metrics::column(metric).is_some_and(|c| c.better == crate::metrics::Better::Higher);
            let worse = |v: f64| if higher { base - v } else { v - base };
            let status = match value {
                None => Status::Missing,
                Some(v) if !(worse(v) <= allowed) => Status::Regressed,
                Some(v) if -worse(v) > allowed => Status::Improved,
                Some(_) => Status::Ok,
            };
            lines.push(CheckLine { cell: b.cell.clone(), metric: metric.clone(), baseline: Some(base), now: value, allowed: Some(allowed), status });
        }
    }
    for c in &plan.cells {
        if !cells.iter().any(|b| b.cell_hash == c.hash) {
            lines.push(CheckLine { cell: label(c), metric: "-".into(), baseline: None, now: None, allowed: None, status: Status::New });
        }
    }
    let failed = lines.iter().any(|l| {
        matches!(l.status, Status::Regressed | Status::NfeChanged | Status::Missing)
            || (fail_on_improvement && l.status == Status::Improved)
    });
    Outcome { lines, failed }
}

/// The gate's table: every line that is not plainly ok, then a summary line.
pub fn render(outcome: &Outcome, class: &str) -> String {
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6e}"));
    let mut s = String::new();
    let shown: Vec<&CheckLine> = outcome.lines.iter().filter(|l| l.status != Status::Ok).collect();
    if !shown.is_empty() {
        let _ = writeln!(s, "| cell | metric | baseline | now | Δ | allowed | status |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---|");
        for l in &shown {
            let delta = match (l.now, l.baseline) {
                (Some(n), Some(b)) => format!("{:+.3e}", n - b),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                l.cell,
                l.metric,
                fmt(l.baseline),
                fmt(l.now),
                delta,
                fmt(l.allowed),
                l.status.text()
            );
        }
    }
    let count = |st: Status| outcome.lines.iter().filter(|l| l.status == st).count();
    let _ = writeln!(
        s,
        "check [{class}]: {} ok, {} improved, {} regressed, {} NFE changed, {} missing, {} new: {}",
        count(Status::Ok),
        count(Status::Improved),
        count(Status::Regressed),
        count(Status::NfeChanged),
        count(Status::Missing),
        count(Status::New),
        if outcome.failed { "FAILED" } else { "passed" }
    );
    s
}
