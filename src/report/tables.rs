//! The papers' table layouts built from result rows: DDIM Table 1 (η × S), the PNDM comparison
//! (sampler × S with NFE and time per step), solvers by NFE, and ours-vs-published.
//!
//! A [`Table`] holds formatted cells; rendering to Markdown or HTML is a separate, dumb step, so
//! the golden tests pin the layout and number formatting exactly.
use super::published::{self, Published};
use super::Metric;
use crate::results::ResultRow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: String,
    /// Best finite value of its column (lowest, or highest for higher-is-better metrics).
    pub best: bool,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Cell { text: text.into(), best: false }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// Lines printed under the table (legend of marks, sources).
    pub notes: Vec<String>,
    /// Cells of the grid with no result row, as "row label at column" phrases.
    pub missing: Vec<String>,
    /// Cells whose metric is NaN/Inf or whose samples had NaN/Inf.
    pub nan: Vec<String>,
}

impl Table {
    pub fn to_markdown(&self) -> String {
        let mut s = format!("#### {}\n\n", self.title);
        let esc = |t: &str| t.replace('|', "\\|");
        s += &format!("| {} |\n", self.header.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | "));
        s += &format!("|{}\n", self.header.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "---:|" }).collect::<String>());
        for row in &self.rows {
            let cells: Vec<String> =
                row.iter().map(|c| if c.best { format!("**{}**", esc(&c.text)) } else { esc(&c.text) }).collect();
            s += &format!("| {} |\n", cells.join(" | "));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s += &format!("{n}  \n");
            }
        }
        s
    }

    pub fn to_html(&self) -> String {
        let mut s = format!("<h4>{}</h4>\n<table>\n<thead><tr>", html_escape(&self.title));
        for h in &self.header {
            s += &format!("<th>{}</th>", html_escape(h));
        }
        s += "</tr></thead>\n<tbody>\n";
        for row in &self.rows {
            s += "<tr>";
            for (i, c) in row.iter().enumerate() {
                let tag = if i == 0 { "th" } else { "td" };
                let text = html_escape(&c.text);
                s += &if c.best { format!("<{tag} class=\"best\"><b>{text}</b></{tag}>") } else { format!("<{tag}>{text}</{tag}>") };
            }
            s += "</tr>\n";
        }
        s += "</tbody>\n</table>\n";
        for n in &self.notes {
            s += &format!("<p class=\"note\">{}</p>\n", html_escape(n));
        }
        s
    }
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Metric values as the papers print them: two decimals from 1 up, more digits below.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else if v.abs() >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else if v.abs() >= 0.01 {
        format!("{v:.4}")
    } else if v.abs() >= 1e-4 {
        format!("{v:.6}")
    } else {
        format!("{v:.3e}")
    }
}

/// η as in DDIM Table 1 (0.0, 0.2, 1.0), more digits only when needed.
pub fn fmt_eta(e: f64) -> String {
    if (e * 10.0 - (e * 10.0).round()).abs() < 1e-9 {
        format!("{e:.1}")
    } else {
        format!("{e}")
    }
}

/// Seconds with a unit that keeps three significant digits readable.
pub fn fmt_seconds(s: f64) -> String {
    if !s.is_finite() {
        "n/a".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// A signed difference with the precision of the numbers compared (`scale`: their magnitude).
fn fmt_signed(d: f64, scale: f64) -> String {
    let body = |x: f64| if scale.abs() >= 1.0 { format!("{x:.2}") } else { fmt_value(x) };
    if d.is_nan() {
        "NaN".into()
    } else if d >= 0.0 {
        format!("+{}", body(d))
    } else {
        format!("−{}", body(-d))
    }
}

/// The σ̂ row of DDIM Table 1: DDPM ancestral sampling with the larger variance.
pub const SIGMA_HAT: &str = "ddpm_large";

/// A sampler/setting as one line in plots and one row in tables. `with_skip` adds the timestep
/// selection where a block mixes several.
pub fn series_label(r: &ResultRow, with_skip: bool) -> String {
    let mut s = if r.sampler == SIGMA_HAT { "σ̂ (ddpm_large)".to_string() } else { r.sampler.clone() };
    if let Some(v) = variant_text(r) {
        let _ = write!(s, ":{v}");
    }
    if let Some(o) = r.order {
        let _ = write!(s, " order {o}");
    }
    if let Some(e) = r.eta {
        let _ = write!(s, " η={}", fmt_eta(e));
    }
    if with_skip {
        let _ = write!(s, " [{}]", r.skip.as_deref().unwrap_or("default skip"));
    }
    s
}

/// The `variant` column as shown and matched. Accepts a bare name (`singlestep`) or the cell's
/// parameter list (`method=singlestep order=3`): parameters that have their own column (`eta`,
/// `order`, `skip`) are dropped and `method=`/`variant=` values are kept bare.
pub fn variant_text(r: &ResultRow) -> Option<String> {
    let v = r.variant.as_deref()?.trim();
    if v.is_empty() || v == "-" {
        return None;
    }
    let parts: Vec<&str> = v
        .split_whitespace()
        .filter_map(|kv| match kv.split_once('=') {
            Some(("eta" | "order" | "skip", _)) => None,
            Some(("method" | "variant", val)) => Some(val),
            _ => Some(kv),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Rows that belong in a DDIM Table 1 layout: samplers with η, and σ̂.
pub fn in_eta_layout(r: &ResultRow) -> bool {
    r.eta.is_some() || r.sampler == SIGMA_HAT
}

/// PNDM-paper family: pseudo numerical methods and their relatives (by sampler or variant name).
pub fn in_pndm_family(r: &ResultRow) -> bool {
    let names = format!("{} {}", r.sampler, r.variant.as_deref().unwrap_or("")).to_lowercase();
    ["pndm", "plms", "fon"].iter().any(|k| names.contains(k))
}

/// Rank within the PNDM table: the paper's order DDIM, S-PNDM, F-PNDM, FON, PLMS, others.
fn pndm_rank(label: &str) -> usize {
    let l = label.to_lowercase().replace('-', "_");
    ["ddim", "s_pndm", "f_pndm", "fon", "plms", "pndm"].iter().position(|k| l.contains(k)).unwrap_or(6)
}

/// The rows of one model: every layout is rendered per block.
#[derive(Debug, Clone)]
pub struct Block<'a> {
    pub model: String,
    pub dataset: Option<String>,
    /// Conditional runs: one block per guidance scale, so each paper layout compares like with like.
    pub guidance_scale: Option<f64>,
    pub rows: Vec<&'a ResultRow>,
}

impl Block<'_> {
    pub fn title(&self) -> String {
        let mut t = match &self.dataset {
            Some(d) => format!("{} ({d})", self.model),
            None => self.model.clone(),
        };
        if let Some(w) = self.guidance_scale {
            let _ = write!(t, ", guidance scale {}", fmt_eta(w));
        }
        t
    }
    /// Whether rows of one sampler label differ only by skip here (labels then show the skip).
    pub fn mixes_skips(&self) -> bool {
        let mut by_label: BTreeMap<String, BTreeSet<Option<&str>>> = BTreeMap::new();
        for r in &self.rows {
            by_label.entry(series_label(r, false)).or_default().insert(r.skip.as_deref());
        }
        by_label.values().any(|s| s.len() > 1)
    }
}

/// Group rows by model, in order of first appearance.
pub fn blocks(rows: &[ResultRow]) -> Vec<Block<'_>> {
    let mut out: Vec<Block> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|b| b.model == r.model && b.guidance_scale == r.guidance_scale) {
            Some(b) => b.rows.push(r),
            None => out.push(Block {
                model: r.model.clone(),
                dataset: published::dataset_of(r),
                guidance_scale: r.guidance_scale,
                rows: vec![r],
            }),
        }
    }
    out
}

/// The guided rows of one model: (sampler label, S) → metric at each guidance scale (the SD
/// model card's sweep as a table). None when no row has a guidance scale.
pub fn guidance_table(model: &str, rows: &[&ResultRow], metric: Metric) -> Option<Table> {
    let guided: Vec<&ResultRow> = rows.iter().copied().filter(|r| r.model == model && r.guidance_scale.is_some()).collect();
    let mut scales: Vec<f64> = guided.iter().filter_map(|r| r.guidance_scale).collect();
    scales.sort_by(f64::total_cmp);
    scales.dedup();
    if scales.is_empty() {
        return None;
    }
    let mut keys: Vec<(String, u64)> = guided.iter().map(|r| (series_label(r, false), r.steps)).collect();
    keys.sort();
    keys.dedup();
    let mut t = Table {
        title: format!("{model}: {} by guidance scale w", metric.name()),
        header: ["sampler", "S"].map(String::from).into_iter().chain(scales.iter().map(|w| format!("w={}", fmt_eta(*w)))).collect(),
        notes: vec![format!(
            "{} ({}); w = 1 is one conditional call per step, w ≠ 1 two (`unet_evals` = 2·NFE); — = not run.",
            metric.name(),
            if super::plots::better_of(metric.name()) == crate::metrics::Better::Lower { "lower is better" } else { "higher is better" }
        )],
        ..Default::default()
    };
    for (label, steps) in keys {
        let mut row = vec![Cell::plain(label.clone()), Cell::plain(steps.to_string())];
        for w in &scales {
            let r = guided.iter().rev().find(|r| series_label(r, false) == label && r.steps == steps && r.guidance_scale == Some(*w));
            row.push(Cell::plain(match r.and_then(|r| metric.of(r)) {
                Some(v) => fmt_value(v),
                None => {
                    t.missing.push(format!("{label} S={steps} at w={}", fmt_eta(*w)));
                    "—".into()
                }
            }));
        }
        t.rows.push(row);
    }
    Some(t)
}

/// A column after the grid: header, and its text from the row's present cells.
type ExtraColumn<'f> = (&'f str, &'f dyn Fn(&[&ResultRow]) -> String);

/// A rows × columns grid of result rows with the metric in each cell.
struct Grid<'a> {
    title: String,
    corner: String,
    row_labels: Vec<String>,
    col_name: &'static str,
    cols: Vec<u64>,
    cells: BTreeMap<(usize, u64), &'a ResultRow>,
    duplicates: Vec<String>,
}

impl<'a> Grid<'a> {
    fn new(title: String, corner: &str, col_name: &'static str, row_labels: Vec<String>) -> Self {
        Grid { title, corner: corner.into(), row_labels, col_name, cols: Vec::new(), cells: BTreeMap::new(), duplicates: Vec::new() }
    }
    fn put(&mut self, label: &str, col: u64, r: &'a ResultRow) {
        let Some(i) = self.row_labels.iter().position(|l| l == label) else { return };
        if !self.cols.contains(&col) {
            self.cols.push(col);
            self.cols.sort_unstable();
        }
        if self.cells.insert((i, col), r).is_some() {
            self.duplicates.push(format!("{label} at {}={col}", self.col_name));
        }
    }

    fn render(self, metric: Metric, extra: &[ExtraColumn]) -> Table {
        let mut t = Table { title: self.title, ..Default::default() };
        t.header.push(self.corner);
        t.header.extend(self.cols.iter().map(|c| c.to_string()));
        t.header.extend(extra.iter().map(|(h, _)| h.to_string()));
        let better = super::plots::better_of(metric.name());
        let higher = better == crate::metrics::Better::Higher;
        let best: BTreeMap<u64, f64> = self
            .cols
            .iter()
            .filter_map(|&c| {
                let vals = (0..self.row_labels.len()).filter_map(|i| self.cells.get(&(i, c)).and_then(|r| metric.of(r)));
                vals.filter(|v| v.is_finite()).reduce(if higher { f64::max } else { f64::min }).map(|m| (c, m))
            })
            .collect();
        let mut any_nan_samples = false;
        for (i, label) in self.row_labels.iter().enumerate() {
            let mut row = vec![Cell::plain(label.clone())];
            let mut present: Vec<&ResultRow> = Vec::new();
            for &c in &self.cols {
                let Some(r) = self.cells.get(&(i, c)) else {
                    row.push(Cell::plain("—"));
                    t.missing.push(format!("{label} at {}={c}", self.col_name));
                    continue;
                };
                present.push(r);
                let v = metric.of(r);
                let mut text = v.map_or_else(|| "n/a".to_string(), fmt_value);
                // With `repeats`, the mean ± its 95% t-interval half-width.
                if let (Some(_), Some(ci)) = (v, r.metric(&format!("{}{}", metric.name(), crate::metrics::repeats::CI_SUFFIX))) {
                    text += &format!(" ± {}", fmt_value(ci));
                }
                if r.nan_samples > 0 {
                    text.push('†');
                    any_nan_samples = true;
                }
                match v {
                    None => t.missing.push(format!("{label} at {}={c} has no {}", self.col_name, metric.name())),
                    Some(x) if !x.is_finite() || r.nan_samples > 0 => t.nan.push(format!(
                        "{label} at {}={c}: {} = {}, {} of {} samples had NaN/Inf{}",
                        self.col_name,
                        metric.name(),
                        fmt_value(x),
                        r.nan_samples,
                        r.samples,
                        r.first_nan_index.map_or(String::new(), |k| format!(" (first: sample {k})"))
                    )),
                    _ => {}
                }
                let is_best = v.is_some_and(|x| x.is_finite() && best.get(&c) == Some(&x));
                row.push(Cell { text, best: is_best });
            }
            for (_, f) in extra {
                row.push(Cell::plain(f(&present)));
            }
            t.rows.push(row);
        }
        let direction = if higher { "higher is better" } else { "lower is better" };
        t.notes.push(format!("{} ({direction}); best per column in bold; — = not run.", metric.name()));
        if any_nan_samples {
            t.notes.push("† some samples of this cell were NaN/Inf and were left out of the metric.".into());
        }
        for d in self.duplicates {
            t.notes.push(format!("several rows for {d}; the last one is shown."));
        }
        t
    }
}

/// DDIM Table 1 layout for each (sampler family with η, skip): rows η (σ̂ last), columns S.
pub fn eta_tables(block: &Block, metric: Metric) -> Vec<Table> {
    let rows: Vec<&ResultRow> = block.rows.iter().copied().filter(|r| in_eta_layout(r)).collect();
    // σ̂ belongs to DDIM's table (same sub-sequence, the larger DDPM variance).
    let family = |r: &ResultRow| if r.sampler == SIGMA_HAT { "ddim".to_string() } else { r.sampler.clone() };
    let mut keys: Vec<(String, Option<String>)> = Vec::new();
    for r in &rows {
        let k = (family(r), r.skip.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.sort();
    let mut out = Vec::new();
    for (fam, skip) in keys {
        let members: Vec<&ResultRow> = rows.iter().copied().filter(|r| family(r) == fam && r.skip == skip).collect();
        let etas: BTreeSet<u64> = members.iter().filter_map(|r| r.eta).map(f64::to_bits).collect();
        let mut etas: Vec<f64> = etas.into_iter().map(f64::from_bits).collect();
        etas.sort_by(f64::total_cmp);
        let mut labels: Vec<String> = etas.iter().map(|&e| fmt_eta(e)).collect();
        labels.dedup();
        if members.iter().any(|r| r.sampler == SIGMA_HAT) {
            labels.push("σ̂".into());
        }
        let title = format!(
            "{}: {fam} by η and steps S (DDIM Table 1 layout{})",
            block.title(),
            skip.as_deref().map_or(String::new(), |s| format!(", skip {s}"))
        );
        let mut g = Grid::new(title, "η \\ S", "S", labels);
        for r in &members {
            let label = match r.eta {
                Some(e) if r.sampler != SIGMA_HAT => fmt_eta(e),
                _ => "σ̂".into(),
            };
            g.put(&label, r.steps, r);
        }
        let mut t = g.render(metric, &[]);
        // The row labels are bare η values; say whose η they are.
        for m in t.missing.iter_mut().chain(t.nan.iter_mut()) {
            *m = if m.starts_with("σ̂") { format!("{fam} {m}") } else { format!("{fam} η={m}") };
        }
        out.push(t);
    }
    out
}

/// Median of the finite values, or NaN.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// PNDM-paper layout: rows sampler (DDIM η=0 first, then the PNDM family), columns S, then the
/// NFE at each S and the median time per step. `None` without any PNDM-family row.
pub fn pndm_table(block: &Block, metric: Metric) -> Option<Table> {
    if !block.rows.iter().any(|r| in_pndm_family(r)) {
        return None;
    }
    let with_skip = block.mixes_skips();
    let rows: Vec<&ResultRow> = block
        .rows
        .iter()
        .copied()
        .filter(|r| in_pndm_family(r) || (r.sampler == "ddim" && r.eta.is_none_or(|e| e == 0.0)))
        .collect();
    let mut labels: Vec<String> = rows.iter().map(|r| series_label(r, with_skip)).collect();
    labels.sort_by(|a, b| pndm_rank(a).cmp(&pndm_rank(b)).then(a.cmp(b)));
    labels.dedup();
    let mut g = Grid::new(format!("{}: PNDM comparison by steps S", block.title()), "sampler \\ S", "S", labels);
    for r in &rows {
        g.put(&series_label(r, with_skip), r.steps, r);
    }
    let cols = g.cols.clone();
    let nfe = move |present: &[&ResultRow]| {
        cols.iter()
            .map(|&c| present.iter().find(|r| r.steps == c).map_or("—".to_string(), |r| r.nfe.to_string()))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let time = |present: &[&ResultRow]| fmt_seconds(median(present.iter().map(|r| r.seconds_per_step).collect()));
    let mut t = g.render(metric, &[("NFE at each S", &nfe), ("time/step", &time)]);
    t.notes.push("time/step: median seconds per sampler step for one batch at the cell's batch size.".into());
    Some(t)
}

/// Solvers by NFE: every row that is neither in a DDIM-η table nor in the PNDM table.
pub fn nfe_table(block: &Block, metric: Metric) -> Option<Table> {
    let with_skip = block.mixes_skips();
    let rows: Vec<&ResultRow> = block.rows.iter().copied().filter(|r| !in_eta_layout(r) && !in_pndm_family(r)).collect();
    // DDIM without η that went into the PNDM table is shown there already.
    let pndm_shown = block.rows.iter().any(|r| in_pndm_family(r));
    let rows: Vec<&ResultRow> = rows.into_iter().filter(|r| !(pndm_shown && r.sampler == "ddim")).collect();
    if rows.is_empty() {
        return None;
    }
    let labels: BTreeSet<String> = rows.iter().map(|r| series_label(r, with_skip)).collect();
    let mut g = Grid::new(format!("{}: samplers by NFE", block.title()), "sampler \\ NFE", "NFE", labels.into_iter().collect());
    for r in &rows {
        g.put(&series_label(r, with_skip), r.nfe, r);
    }
    Some(g.render(metric, &[]))
}

/// Ours beside every published counterpart (see [`published`] for the matching rule), with the
/// caveats that apply to each comparison; no Δ where the setups are known to differ. `run` is the
/// run's `run.json`, if there is one.
pub fn published_table(block: &Block, metric: Metric, published: &[Published], run: Option<&crate::results::RunInfo>) -> Option<Table> {
    let with_skip = block.mixes_skips();
    let mut rows: Vec<&ResultRow> = block.rows.clone();
    rows.sort_by(|a, b| series_label(a, with_skip).cmp(&series_label(b, with_skip)).then(a.steps.cmp(&b.steps)).then(a.nfe.cmp(&b.nfe)));
    let mut t = Table {
        title: format!("{}: ours vs published ({})", block.title(), metric.name()),
        header: ["sampler", "S", "NFE", "ours", "paper", "Δ (ours − paper)", "caveats", "ref"].map(String::from).to_vec(),
        ..Default::default()
    };
    let mut refs: Vec<&Published> = Vec::new();
    let mut details: Vec<String> = Vec::new();
    let mut withheld = false;
    for r in rows {
        for p in published.iter().filter(|p| published::matches(p, r, metric.name())) {
            let same_ref = |q: &&Published| {
                q.source == p.source && q.table == p.table && q.model_checkpoint == p.model_checkpoint && q.fid_pipeline == p.fid_pipeline
            };
            let k = match refs.iter().position(same_ref) {
                Some(k) => k,
                None => {
                    refs.push(p);
                    refs.len() - 1
                }
            };
            let ours = metric.of(r);
            let caveats = published::caveats(p, r, run, metric.name());
            for c in &caveats {
                if !details.contains(&c.detail) {
                    details.push(c.detail.clone());
                }
            }
            let comparable = !caveats.iter().any(|c| c.no_delta);
            withheld |= !comparable;
            t.rows.push(
                [
                    series_label(r, with_skip),
                    r.steps.to_string(),
                    r.nfe.to_string(),
                    ours.map_or("n/a".into(), fmt_value),
                    fmt_value(p.value),
                    match ours {
                        None => "n/a".into(),
                        Some(_) if !comparable => "—".into(),
                        Some(o) => fmt_signed(o - p.value, p.value),
                    },
                    if caveats.is_empty() { "none".into() } else { caveats.iter().map(|c| c.label.as_str()).collect::<Vec<_>>().join("; ") },
                    format!("[{}]", k + 1),
                ]
                .into_iter()
                .map(Cell::plain)
                .collect(),
            );
        }
    }
    if t.rows.is_empty() {
        return None;
    }
    for (k, p) in refs.iter().enumerate() {
        t.notes.push(format!(
            "[{}] {}, {}; checkpoint: {}; FID pipeline: {}; {} samples.",
            k + 1,
            p.source,
            p.table,
            p.model_checkpoint,
            p.fid_pipeline,
            p.samples.map_or("unknown number of".into(), |s| s.to_string())
        ));
    }
    if withheld {
        t.notes.push("Δ —: the setups are known to differ (see the caveats), so the difference would not measure the sampler.".into());
    }
    for d in details {
        t.notes.push(format!("Caveat: {d}"));
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(fmt_value(4.666), "4.67");
        assert_eq!(fmt_value(367.43), "367.43");
        assert_eq!(fmt_value(0.01234), "0.0123");
        assert_eq!(fmt_value(0.007024), "0.007024");
        assert_eq!(fmt_value(0.0000123), "1.230e-5");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_eta(0.0), "0.0");
        assert_eq!(fmt_eta(0.25), "0.25");
        assert_eq!(fmt_seconds(0.0123), "12.3 ms");
        assert_eq!(fmt_seconds(2.0), "2.00 s");
        assert_eq!(fmt_seconds(4.2e-5), "42.0 µs");
        assert_eq!(fmt_signed(-0.04, 5.94), "−0.04");
        assert_eq!(fmt_signed(-0.0123, 0.5), "−0.0123");
        assert_eq!(fmt_signed(1.5, 3.0), "+1.50");
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn labels_and_families() {
        let mut r = ResultRow { sampler: "pndm".into(), variant: Some("f_pndm".into()), ..Default::default() };
        assert_eq!(series_label(&r, false), "pndm:f_pndm");
        assert!(in_pndm_family(&r) && !in_eta_layout(&r));
        r.skip = Some("uniform".into());
        assert_eq!(series_label(&r, true), "pndm:f_pndm [uniform]");
        let mut d = ResultRow { sampler: "dpm_solver".into(), order: Some(2), ..Default::default() };
        assert_eq!(series_label(&d, false), "dpm_solver order 2");
        // The runner's parameter-list form: columns already shown are not repeated.
        d.variant = Some("method=singlestep order=2".into());
        assert_eq!(series_label(&d, false), "dpm_solver:singlestep order 2");
        let e = ResultRow { sampler: "ddim".into(), eta: Some(0.2), variant: Some("eta=0.2".into()), ..Default::default() };
        assert_eq!(series_label(&e, false), "ddim η=0.2");
        let f = ResultRow { sampler: "f-pndm".into(), variant: Some("-".into()), ..Default::default() };
        assert_eq!(series_label(&f, false), "f-pndm");
        assert!(in_pndm_family(&f) && pndm_rank("f-pndm") == 2);
        let s = ResultRow { sampler: SIGMA_HAT.into(), ..Default::default() };
        assert!(in_eta_layout(&s));
        assert!(pndm_rank("ddim η=0.0") < pndm_rank("pndm:s_pndm") && pndm_rank("pndm:fon") < pndm_rank("plms"));
    }
}
