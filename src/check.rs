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

/// `kid`'s gate tolerance is this many standard errors (`kid_se`, from its subsets' spread): a
/// real change of the generated distribution moves KID by more than its subset-sampling noise;
/// 3 SE is a two-sided 99.7% band for a normal estimate.
pub const KID_SE_FACTOR: f64 = 3.0;

/// The tolerance a new baseline records for `metric`: the metric's default, except `kid`, whose
/// absolute tolerance is max(default, KID_SE_FACTOR × the largest `kid_se` of the cells).
pub fn derived_tolerance(metric: &str, cells: &[BaselineCell]) -> Option<Tolerance> {
    let col = crate::metrics::column(metric)?;
    if metric != "kid" {
        return Some(col.tolerance);
    }
    let se = cells.iter().filter_map(|c| c.metrics.get("kid_se").copied()).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    Some(Tolerance { abs: col.tolerance.abs.max(KID_SE_FACTOR * se), rel: col.tolerance.rel })
}

impl Baseline {
    /// Replaces one class's cells and records the default tolerance of every metric they hold
    /// that has none yet (existing tolerances are kept: they may have been edited on purpose).
    pub fn set_class(&mut self, class: &str, cells: Vec<BaselineCell>) {
        for c in &cells {
            for m in c.metrics.keys() {
                if !self.tolerances.contains_key(m) {
                    if let Some(t) = derived_tolerance(m, &cells) {
                        self.tolerances.insert(m.clone(), t);
                    }
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
        // With `repeats`, the gate compares the means; their intervals describe seed spread.
        for (metric, &base) in b.metrics.iter().filter(|(m, _)| !m.ends_with(crate::metrics::repeats::CI_SUFFIX)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_and_row() -> (Plan, ResultRow) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        let text = "name: t\nmodel: {kind: oracle, data: {kind: gaussian, shape: [1, 2, 2]}}\nsamplers: [{name: ddim}]\nsteps: 3\nsamples: 8\n";
        std::fs::write(&path, text).unwrap();
        let plan = crate::plan::load_with(&path, &crate::plan::Host { cuda_devices: 0 }).unwrap();
        let row = ResultRow {
            cell_hash: plan.cells[0].hash.clone(),
            nfe: 3,
            metrics: BTreeMap::from([("kid".to_string(), 0.0200), ("kid_se".to_string(), 0.0015)]),
            ..ResultRow::default()
        };
        (plan, row)
    }

    /// The baseline records kid's tolerance as 3 SE; a rerun passes, a move beyond 3 SE fails.
    #[test]
    fn kid_is_gated_by_its_standard_error() {
        let (plan, row) = plan_and_row();
        let mut b = Baseline::default();
        b.set_class("cpu-fp32", cells_from_rows(&plan, std::slice::from_ref(&row)));
        // 3 × 0.0015 = 0.0045 > the default abs 1e-4.
        assert!((b.tolerances["kid"].abs - 0.0045).abs() < 1e-15, "{:?}", b.tolerances["kid"]);
        assert_eq!(b.tolerances["kid_se"], crate::metrics::column("kid_se").unwrap().tolerance);
        let check = |kid: f64| {
            let mut r = row.clone();
            r.metrics.insert("kid".into(), kid);
            compare(&b, "cpu-fp32", &plan, &[r], None, false).failed
        };
        assert!(!check(0.0200), "a rerun passes");
        assert!(!check(0.0200 + 0.0044), "within 3 SE passes");
        assert!(check(0.0200 + 0.0046), "beyond 3 SE fails");
        // Lower KID is an improvement, not a failure, unless improvements fail too.
        assert!(!check(0.0200 - 0.0046));
        // Without kid_se (older runs) the default applies.
        assert_eq!(derived_tolerance("kid", &[]), Some(crate::metrics::column("kid").unwrap().tolerance));
    }

    /// With repeats, `_ci95` columns are recorded but not gated.
    #[test]
    fn interval_columns_are_not_gated() {
        let (plan, mut row) = plan_and_row();
        row.metrics.insert("kid_ci95".into(), 0.001);
        let mut b = Baseline::default();
        b.set_class("cpu-fp32", cells_from_rows(&plan, std::slice::from_ref(&row)));
        row.metrics.insert("kid_ci95".into(), 0.5);
        let out = compare(&b, "cpu-fp32", &plan, &[row], None, false);
        assert!(!out.failed);
        assert!(out.lines.iter().all(|l| l.metric != "kid_ci95"));
    }
}
