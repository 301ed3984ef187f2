//! `bench report OUTPUT_DIR`: the papers' tables, ours beside the published numbers, speed-vs-
//! quality plots, sample grids and a reproducibility record, as `report.md` and a self-contained
//! `report.html` (plots inline as SVG, sample grids as base64 PNG: readable offline, one file).
//!
//! Inputs in OUTPUT_DIR: `results.parquet` (required), `run.json` and `spec.yaml` (optional, the
//! runner writes them), `samples/<cell_hash>/*.png` (optional). Outputs: `report.md`,
//! `report.html`, `plots/*.{png,svg}`.
pub mod plots;
pub mod published;
pub mod tables;

use crate::results::{self, ResultRow, RunInfo};
use crate::{BenchError, Result};
use plots::{Palette, PlotFile};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tables::{html_escape, series_label, Block, Table};

/// The quality number shown in tables and plots: a metric column of the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric(&'static str);

impl Metric {
    pub const FID: Metric = Metric("fid");
    pub fn name(self) -> &'static str {
        self.0
    }
    /// The metric column a report shows when none is asked for: the first known metric any cell
    /// has (FID, then the exact Fréchet distance of oracle runs, then the pixel one), else any.
    pub fn preferred(rows: &[ResultRow]) -> Metric {
        Self::present(rows).into_iter().next().unwrap_or(Metric::FID)
    }
    /// Every metric column some row has, in the registry's order.
    pub fn present(rows: &[ResultRow]) -> Vec<Metric> {
        results::metric_columns(rows).iter().map(|n| Metric::named(n)).collect()
    }
    /// The column `name` (interned: a report run names a handful of columns, each leaked once).
    pub fn named(name: &str) -> Metric {
        // Known columns by their static name (an `fd_features` column's def is a pattern).
        if let Some(c) = crate::metrics::column(name).filter(|c| c.name == name) {
            return Metric(c.name);
        }
        static INTERNED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let mut v = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = v.iter().find(|s| **s == name) {
            return Metric(s);
        }
        let s: &'static str = Box::leak(name.to_owned().into_boxed_str());
        v.push(s);
        Metric(s)
    }
    /// `--metric NAME` for these results: an error naming the metrics they have when absent.
    pub fn choose(name: &str, rows: &[ResultRow]) -> Result<Metric> {
        let have: Vec<&str> = Self::present(rows).into_iter().map(Metric::name).collect();
        if have.contains(&name) {
            return Ok(Metric::named(name));
        }
        Err(BenchError::user(format!(
            "--metric {name}: no cell has it; the results have: {}",
            if have.is_empty() { "no metric at all".to_string() } else { have.join(", ") }
        )))
    }
    pub fn of(self, r: &ResultRow) -> Option<f64> {
        r.metric(self.0)
    }
}

/// What `write_report` produced.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub plots: Vec<PlotFile>,
    pub sample_grids: Vec<PathBuf>,
    pub rows: usize,
    /// Every missing or NaN cell and absent input, one phrase each (also printed in the report).
    pub missing: Vec<String>,
}

/// One section of the report, rendered to both formats from the same parts.
enum Part {
    Heading(usize, String),
    Para(String),
    List(Vec<String>),
    Table(Table),
    Plot(PlotFile),
    Image { title: String, path: PathBuf },
    Code(String, String),
}

/// Sequence plots show at most this many samples per cell.
const SERIES_SAMPLES: usize = 4;
/// Grids show at most this many samples per cell.
const GRID_SAMPLES: usize = 64;

fn slug(i: usize, block: &Block) -> String {
    let base = block.dataset.clone().unwrap_or_else(|| block.model.clone()).to_lowercase();
    let mut s: String = base.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    let s: String = s.trim_matches('_').chars().take(32).collect();
    format!("{}-{}", i + 1, s)
}

/// Read the results in `dir` and write `report.md`, `report.html` and `plots/` there.
pub fn write_report(dir: &Path, metric: Metric) -> Result<ReportSummary> {
    let rows = results::read_results(dir)?;
    let run = results::read_run_info(dir)?;
    let spec = match std::fs::read_to_string(dir.join("spec.yaml")) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(BenchError::io(format!("read {}", dir.join("spec.yaml").display()), e)),
    };
    let published = published::load(Some(&crate::registry::data_dir().join("published")))?;
    let plot_dir = dir.join("plots");
    std::fs::create_dir_all(&plot_dir).map_err(|e| BenchError::io(format!("create {}", plot_dir.display()), e))?;

    let blocks = tables::blocks(&rows);
    let palette = Palette::new(blocks.iter().flat_map(|b| b.rows.iter().map(|r| series_label(r, b.mixes_skips()))).collect());
    let mut parts = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let mut nan: Vec<String> = Vec::new();
    let mut all_plots = Vec::new();

    let experiments = distinct(rows.iter().map(|r| r.experiment.clone()));
    parts.push(Part::Heading(1, format!("Benchmark report: {}", if experiments.is_empty() { "(no results)".into() } else { experiments.join(", ") })));
    parts.push(Part::Para(format!(
        "{} cell{} from `results.parquet`; quality metric: **{}** ({}). Report written by bench {} ({}).",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        metric.name(),
        match plots::better_of(metric.name()) {
            crate::metrics::Better::Lower => "lower is better",
            crate::metrics::Better::Higher => "higher is better",
        },
        crate::VERSION,
        crate::GIT_COMMIT
    )));
    if rows.is_empty() {
        missing.push("the results file has no rows: no cell has finished yet".into());
    }
    if !rows.is_empty() && rows.iter().all(|r| metric.of(r).is_none()) {
        let have: Vec<&str> = Metric::present(&rows).into_iter().map(Metric::name).collect();
        missing.push(format!(
            "no cell has {}; the results have: {} (choose with --metric)",
            metric.name(),
            if have.is_empty() { "no metric at all".to_string() } else { have.join(", ") }
        ));
    }

    let mut body = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        body.push(Part::Heading(2, block.title()));
        body.push(Part::Heading(3, "Tables".into()));
        let mut tabs = tables::eta_tables(block, metric);
        tabs.extend(tables::pndm_table(block, metric));
        tabs.extend(tables::nfe_table(block, metric));
        for t in &tabs {
            missing.extend(t.missing.iter().map(|m| format!("{}: {m}", block.title())));
            nan.extend(t.nan.iter().map(|m| format!("{}: {m}", block.title())));
        }
        body.extend(tabs.into_iter().map(Part::Table));
        body.push(Part::Heading(3, "Published numbers".into()));
        match tables::published_table(block, metric, &published, run.as_ref()) {
            Some(t) => body.push(Part::Table(t)),
            None => body.push(Part::Para(match &block.dataset {
                None => "No published counterpart: the model names no known dataset (set the results' `dataset` column, \
                         or name cifar10/celeba/bedroom/church in the model or experiment)."
                    .into(),
                Some(d) => format!("No published {} number for these {d} cells (matching: dataset, sampler, and each of variant, order, η, skip, S, NFE that the paper states).", metric.name()),
            })),
        }
        body.push(Part::Table(cells_table(block, metric)));
        body.push(Part::Heading(3, "Plots".into()));
        let plots = plots::block_plots(&plot_dir, &slug(i, block), block, metric, &palette)?;
        all_plots.extend(plots.iter().cloned());
        body.extend(plots.into_iter().map(Part::Plot));
    }

    let models_guided = distinct(rows.iter().filter(|r| r.guidance_scale.is_some()).map(|r| r.model.clone()));
    if !models_guided.is_empty() {
        let all: Vec<&ResultRow> = rows.iter().collect();
        let guided_palette = Palette::new(
            rows.iter().filter(|r| r.guidance_scale.is_some()).map(|r| format!("{}, S={}", series_label(r, false), r.steps)).collect(),
        );
        body.push(Part::Heading(2, "Guidance".into()));
        for (i, model) in models_guided.iter().enumerate() {
            if let Some(t) = tables::guidance_table(model, &all, metric) {
                missing.extend(t.missing.iter().map(|m| format!("{model}: {m}")));
                body.push(Part::Table(t));
            }
            let plots = plots::guidance_plots(&plot_dir, &format!("g{}", i + 1), model, &all, metric, &guided_palette)?;
            all_plots.extend(plots.iter().cloned());
            body.extend(plots.into_iter().map(Part::Plot));
        }
    }

    let mut grids = Vec::new();
    let samples_root = dir.join("samples");
    let mut grid_parts = Vec::new();
    for r in &rows {
        let cell_dir = samples_root.join(&r.cell_hash);
        if r.cell_hash.is_empty() || !cell_dir.is_dir() {
            continue;
        }
        let short: String = r.cell_hash.chars().take(12).collect();
        // The full hash: a shortened one could name two cells alike.
        let out = plot_dir.join(format!("samples-{}.png", r.cell_hash));
        let mut n = plots::sample_grid(&cell_dir, &out, GRID_SAMPLES)?;
        let mut what = "samples";
        if n == 0 {
            // Sequences (`.npy`, never quantised): a few series, one line per channel.
            n = plots::sequence_plot(&cell_dir, &out, SERIES_SAMPLES)?;
            what = "series";
        }
        if n == 0 {
            continue;
        }
        grid_parts.push(Part::Image {
            title: format!("{} — {}, S={}, NFE={} ({n} {what}, cell {short})", r.model, series_label(r, false), r.steps, r.nfe),
            path: out.clone(),
        });
        grids.push(out);
    }
    if !grid_parts.is_empty() {
        body.push(Part::Heading(2, "Samples".into()));
        body.push(Part::Para(format!(
            "The first {GRID_SAMPLES} saved samples of each cell, in sample order (sequences: the first {SERIES_SAMPLES}, one line per channel)."
        )));
        body.extend(grid_parts);
    } else if !rows.is_empty() {
        missing.push("no saved samples (samples/<cell_hash>/*.png or *.npy); set save_samples in the spec for sample grids".into());
    }

    parts.push(Part::Heading(2, "What is missing".into()));
    let mut problems: Vec<String> = missing.clone();
    problems.extend(nan.iter().map(|n| format!("NaN: {n}")));
    if run.is_none() {
        problems.push("run.json is absent: the environment below is taken from the result rows".into());
    }
    if spec.is_none() {
        problems.push("spec.yaml is absent from the output folder: the spec cannot be shown".into());
    }
    if problems.is_empty() {
        parts.push(Part::Para(format!("Nothing: every cell of every table has a finite {}.", metric.name())));
    } else {
        parts.push(Part::List(problems.clone()));
    }
    parts.extend(body);
    parts.extend(reproducibility(&rows, run.as_ref(), spec.as_deref()));

    let markdown = dir.join("report.md");
    let html = dir.join("report.html");
    write_file(&markdown, &render_markdown(&parts, dir))?;
    write_file(&html, &render_html(&parts, &experiments)?)?;
    Ok(ReportSummary { markdown, html, plots: all_plots, sample_grids: grids, rows: rows.len(), missing: problems })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}

fn distinct<T: PartialEq>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in it {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Every cell of a block with its cost: the numbers behind the plots.
pub fn cells_table(block: &Block, metric: Metric) -> Table {
    let with_skip = block.mixes_skips();
    let mut t = Table {
        title: format!("{}: all cells", block.title()),
        header: ["sampler", "S", "NFE", metric.name(), "s / 1k samples", "time/step", "images/s", "samples", "NaN samples"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let mut rows = block.rows.clone();
    rows.sort_by(|a, b| series_label(a, with_skip).cmp(&series_label(b, with_skip)).then(a.steps.cmp(&b.steps)));
    for r in rows {
        t.rows.push(
            [
                series_label(r, with_skip),
                r.steps.to_string(),
                r.nfe.to_string(),
                metric.of(r).map_or("n/a".into(), tables::fmt_value),
                plots::seconds_per_1k(r).map_or("n/a".into(), |s| format!("{s:.2}")),
                tables::fmt_seconds(r.seconds_per_step),
                if r.images_per_second.is_finite() { format!("{:.1}", r.images_per_second) } else { "n/a".into() },
                r.samples.to_string(),
                r.nan_samples.to_string(),
            ]
            .into_iter()
            .map(|text| tables::Cell { text, best: false })
            .collect(),
        );
    }
    t
}

fn reproducibility(rows: &[ResultRow], run: Option<&RunInfo>, spec: Option<&str>) -> Vec<Part> {
    let join = |v: Vec<String>| if v.is_empty() { "unknown".to_string() } else { v.join(", ") };
    let col = |f: &dyn Fn(&ResultRow) -> String| join(distinct(rows.iter().map(f).filter(|s| !s.is_empty())));
    let opt = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unknown".into());
    let cell_seconds: f64 = rows.iter().map(|r| r.seconds_sampling + r.seconds_metrics).filter(|s| s.is_finite()).sum();
    let mut t = Table { title: "Environment".into(), header: vec!["what".into(), "value".into()], ..Default::default() };
    let mut add = |k: &str, v: String| t.rows.push(vec![tables::Cell { text: k.into(), best: false }, tables::Cell { text: v, best: false }]);
    if let Some(i) = run {
        {
            add("bench version", format!("{} ({})", i.bench_version, i.git_commit));
            add("libtorch", opt(i.libtorch_version.as_ref()));
            add("CUDA / cuDNN", format!("{} / {}", opt(i.cuda_version.as_ref()), opt(i.cudnn_version.as_ref())));
            add("device", i.device_name.clone());
            add("precision", i.precision.clone());
            add("FID mode", opt(i.fid_mode.as_ref()));
            add("schedule from", opt(i.schedule_source.as_ref()));
            for (role, sha) in &i.input_sha256 {
                add(&format!("{role} SHA-256"), opt(sha.as_ref()));
            }
            add("seed", i.seed.to_string());
            add("samples per cell", i.samples.to_string());
            add("spec hash", if i.spec_hash.is_empty() { "unknown".into() } else { i.spec_hash.clone() });
            add("started / finished (UTC)", format!("{} / {}", opt(i.started_utc.as_ref()), opt(i.finished_utc.as_ref())));
            add("total wall time", i.total_wall_seconds.map_or("unknown".into(), |s| format!("{s:.1} s")));
            add("host", opt(i.hostname.as_ref()));
            add("command", opt(i.command.as_ref()));
        }
    }
    add("results: bench version (commit)", col(&|r| format!("{} ({})", r.bench_version, r.git_commit)));
    add("results: device", col(&|r| r.device.clone()));
    add("results: precision", col(&|r| r.precision.clone()));
    add("results: FID mode", col(&|r| r.fid_mode.clone().unwrap_or_default()));
    add("results: seeds", col(&|r| r.seed.to_string()));
    add("results: samples per cell", col(&|r| r.samples.to_string()));
    add("results: batch sizes", col(&|r| r.batch_size.to_string()));
    add("results: spec hashes", col(&|r| r.spec_hash.clone()));
    add("results: sum of cell times (sampling + metrics)", format!("{cell_seconds:.1} s"));
    let mut parts = vec![Part::Heading(2, "Reproducibility".into()), Part::Table(t)];
    parts.push(Part::Heading(3, "Spec (verbatim)".into()));
    parts.push(match spec {
        Some(s) => Part::Code("yaml".into(), s.to_string()),
        None => Part::Para("spec.yaml is not in the output folder.".into()),
    });
    parts
}

fn rel(path: &Path, dir: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

fn render_markdown(parts: &[Part], dir: &Path) -> String {
    let mut s = String::new();
    for p in parts {
        match p {
            Part::Heading(level, text) => {
                let _ = writeln!(s, "{} {text}\n", "#".repeat(*level));
            }
            Part::Para(text) => {
                let _ = writeln!(s, "{text}\n");
            }
            Part::List(items) => {
                for i in items {
                    let _ = writeln!(s, "- {i}");
                }
                s.push('\n');
            }
            Part::Table(t) => {
                let _ = writeln!(s, "{}", t.to_markdown());
            }
            Part::Plot(p) => {
                let _ = writeln!(s, "![{}]({}) ([SVG]({}))\n", p.title, rel(&p.png, dir), rel(&p.svg, dir));
            }
            Part::Image { title, path } => {
                let _ = writeln!(s, "**{title}**\n\n![{title}]({})\n", rel(path, dir));
            }
            Part::Code(lang, code) => {
                let fence = if code.contains("```") { "````" } else { "```" };
                let _ = writeln!(s, "{fence}{lang}\n{}\n{fence}\n", code.trim_end());
            }
        }
    }
    s
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
thead th{background:#f2f2f2}tbody th{text-align:left;font-weight:normal}td.best{background:#e8f4e8}\
p.note{font-size:.85em;color:#555;margin:.2em 0}pre{background:#f6f6f6;padding:1em;overflow:auto}\
figure{margin:1em 0}figure svg,figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9em;color:#444}";

fn render_html(parts: &[Part], experiments: &[String]) -> Result<String> {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        html_escape(&format!("bench report: {}", experiments.join(", ")))
    );
    for p in parts {
        match p {
            Part::Heading(level, text) => {
                let _ = writeln!(s, "<h{level}>{}</h{level}>", html_escape(text));
            }
            Part::Para(text) => {
                // The only markup in paragraphs is `code` and **bold**.
                let _ = writeln!(s, "<p>{}</p>", inline_markup(&html_escape(text)));
            }
            Part::List(items) => {
                s += "<ul>\n";
                for i in items {
                    let _ = writeln!(s, "<li>{}</li>", html_escape(i));
                }
                s += "</ul>\n";
            }
            Part::Table(t) => s += &t.to_html(),
            Part::Plot(p) => {
                let svg = std::fs::read_to_string(&p.svg).map_err(|e| BenchError::io(format!("read {}", p.svg.display()), e))?;
                let svg = match svg.find("<svg") {
                    Some(k) => &svg[k..],
                    None => svg.as_str(),
                };
                let _ = writeln!(s, "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>", html_escape(&p.title));
            }
            Part::Image { title, path } => {
                let bytes = std::fs::read(path).map_err(|e| BenchError::io(format!("read {}", path.display()), e))?;
                let _ = writeln!(
                    s,
                    "<figure>\n<img alt=\"{t}\" src=\"data:image/png;base64,{}\">\n<figcaption>{t}</figcaption>\n</figure>",
                    base64(&bytes),
                    t = html_escape(title)
                );
            }
            Part::Code(_, code) => {
                let _ = writeln!(s, "<pre>{}</pre>", html_escape(code.trim_end()));
            }
        }
    }
    s += "</body>\n</html>\n";
    Ok(s)
}

fn inline_markup(escaped: &str) -> String {
    let mut out = String::new();
    for (i, seg) in escaped.split("**").enumerate() {
        let inner: String = seg.split('`').enumerate().map(|(j, t)| if j % 2 == 1 { format!("<code>{t}</code>") } else { t.to_string() }).collect();
        out += &if i % 2 == 1 { format!("<b>{inner}</b>") } else { inner };
    }
    out
}

/// Standard base64 (RFC 4648, with padding) for inline images.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                s.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let v = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")];
        for (i, o) in v {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    fn with(metrics: &[(&str, f64)]) -> ResultRow {
        ResultRow { metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(), ..Default::default() }
    }

    #[test]
    fn a_metric_the_results_lack_is_an_error_naming_those_they_have() {
        let rows = [with(&[("fid", 3.0)])];
        assert_eq!(Metric::choose("fid", &rows).unwrap(), Metric::FID);
        let e = Metric::choose("fd_exact", &rows).unwrap_err();
        assert_eq!(e.to_string(), "--metric fd_exact: no cell has it; the results have: fid");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn preferred_metric_is_fid_then_exact_then_pixel_then_others() {
        assert_eq!(Metric::preferred(&[with(&[("fd_pixel", 1.0)])]).name(), "fd_pixel");
        assert_eq!(Metric::preferred(&[with(&[("fd_pixel", 1.0), ("fd_exact", 1.0)])]).name(), "fd_exact");
        assert_eq!(Metric::preferred(&[ResultRow::default(), with(&[("fd_exact", 1.0), ("fid", 1.0)])]), Metric::FID);
        assert_eq!(Metric::preferred(&[with(&[("fd_dinov2", 1.0)])]).name(), "fd_dinov2");
        assert_eq!(Metric::preferred(&[]), Metric::FID);
    }

    #[test]
    fn inline_markup_bold_and_code() {
        assert_eq!(inline_markup("a **b** `c`"), "a <b>b</b> <code>c</code>");
    }
}
