//! Speed-vs-quality plots (PNG and SVG) and per-cell sample grids.
//!
//! Text uses the bundled DejaVu Sans (registered with plotters' `ab_glyph` backend), so plots
//! render the same on a headless server without fontconfig. Every series keeps one colour across
//! all plots of a report ([`Palette`]).
use super::tables::{fmt_seconds, series_label, Block};
use super::Metric;
use crate::results::ResultRow;
use crate::{BenchError, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// DejaVu Sans 2.37 (Bitstream Vera licence, see assets/fonts/DejaVu-LICENSE.txt).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (960, 620);

/// Register the bundled font as plotters' "sans-serif" (once per process).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType file compiled into the binary; a failure here would be a
        // build defect caught by the plot tests, and text would then fail to draw with an error.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Colour-blind-friendly categorical colours (Tableau 10, then its lighter partners).
const COLOURS: [(u8, u8, u8); 20] = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
];

/// One colour per series label, fixed for the whole report.
#[derive(Debug, Clone)]
pub struct Palette {
    labels: Vec<String>,
}

impl Palette {
    pub fn new(mut labels: Vec<String>) -> Self {
        labels.sort();
        labels.dedup();
        Palette { labels }
    }
    pub fn colour(&self, label: &str) -> RGBColor {
        let i = self.labels.iter().position(|l| l == label).unwrap_or(0);
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        RGBColor(r, g, b)
    }
}

/// A plot written as `<stem>.png` and `<stem>.svg`.
#[derive(Debug, Clone)]
pub struct PlotFile {
    pub title: String,
    pub png: PathBuf,
    pub svg: PathBuf,
    /// Legend entries, in drawing order.
    pub legend: Vec<String>,
}

#[derive(Debug, Clone)]
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

struct XyPlot {
    title: String,
    x_desc: String,
    y_desc: String,
    series: Vec<Series>,
    log_x: bool,
    log_y: bool,
    /// Pareto-optimal points, drawn as a frontier with highlighted markers.
    frontier: Option<Vec<(f64, f64)>>,
}

/// Plot text: `ab_glyph` draws without shaping, so the combining hat of σ̂ would land beside σ.
pub fn plot_label(label: &str) -> String {
    label.replace("σ̂", "σ-hat")
}

fn plot_err(what: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Internal(format!("plot {}: {e}", what.display()))
}

/// Tick labels: up to three significant digits, no trailing zeros.
fn fmt_tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn span(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| v.is_finite() && (!log || *v > 0.0)).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return None;
    }
    Some(if log {
        (lo / 1.35, hi * 1.35)
    } else {
        let pad = if hi > lo { (hi - lo) * 0.08 } else { lo.abs().max(1.0) * 0.1 };
        (lo - pad, hi + pad)
    })
}

/// Log scale when positive data span more than `decades_ratio`.
fn wants_log(values: impl Iterator<Item = f64> + Clone, ratio: f64) -> bool {
    let pos = values.filter(|v| v.is_finite());
    let (lo, hi) = pos.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    lo > 0.0 && hi / lo > ratio
}

fn draw_xy<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plot: &XyPlot, pal: &Palette) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    // A log axis cannot place zero or negative values (e.g. a cell that reports 0 NFE).
    let keep = |p: &(f64, f64)| (!plot.log_x || p.0 > 0.0) && (!plot.log_y || p.1 > 0.0);
    let series: Vec<Series> =
        plot.series.iter().map(|s| Series { label: s.label.clone(), points: s.points.iter().copied().filter(keep).collect() }).collect();
    let frontier = plot.frontier.as_ref().map(|f| f.iter().copied().filter(keep).collect());
    let plot = &XyPlot { title: plot.title.clone(), x_desc: plot.x_desc.clone(), y_desc: plot.y_desc.clone(), series, frontier, ..*plot };
    let xs = || plot.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = || plot.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (Some((x0, x1)), Some((y0, y1))) = (span(xs(), plot.log_x), span(ys(), plot.log_y)) else {
        // Nothing finite to draw: an empty frame with the title says so.
        root.titled(&format!("{} — no finite values", plot.title), (FAMILY, 22)).map_err(|e| e.to_string())?;
        return Ok(());
    };
    match (plot.log_x, plot.log_y) {
        (true, true) => xy_chart(root, plot, pal, (x0..x1).log_scale(), (y0..y1).log_scale()),
        (true, false) => xy_chart(root, plot, pal, (x0..x1).log_scale(), y0..y1),
        (false, true) => xy_chart(root, plot, pal, x0..x1, (y0..y1).log_scale()),
        (false, false) => xy_chart(root, plot, pal, x0..x1, y0..y1),
    }
}

fn xy_chart<DB, X, Y>(root: &DrawingArea<DB, Shift>, plot: &XyPlot, pal: &Palette, xr: X, yr: Y) -> std::result::Result<(), String>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, (FAMILY, 22))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(xr, yr)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(plot.x_desc.as_str())
        .y_desc(plot.y_desc.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    for s in &plot.series {
        let c = pal.colour(&s.label);
        chart
            .draw_series(LineSeries::new(s.points.clone(), c.stroke_width(2)))
            .map_err(e)?
            .label(plot_label(&s.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(e)?;
    }
    if let Some(front) = &plot.frontier {
        chart
            .draw_series(LineSeries::new(front.clone(), BLACK.stroke_width(1)))
            .map_err(e)?
            .label("Pareto-optimal")
            .legend(|(x, y)| Circle::new((x + 10, y), 7, BLACK.stroke_width(2)));
        chart.draw_series(front.iter().map(|&p| Circle::new(p, 8, BLACK.stroke_width(2)))).map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FAMILY, 13))
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Horizontal bars, one per series, value and label written beside each bar.
fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    bars: &[(String, f64)],
    pal: &Palette,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let max = bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(12)
        // Room on the right for the labels written after each bar.
        .build_cartesian_2d(0.0..max * 1.9, -0.6..n - 0.4)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(x_desc)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .x_label_formatter(&|v| fmt_tick(*v))
        .light_line_style(WHITE)
        .draw()
        .map_err(e)?;
    let text = TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, v)) in bars.iter().enumerate() {
        // Top bar first, as a reader scans.
        let y = n - 1.0 - i as f64;
        let v = if v.is_finite() { *v } else { 0.0 };
        let c = pal.colour(label);
        chart.draw_series(std::iter::once(Rectangle::new([(0.0, y - 0.36), (v, y + 0.36)], c.filled()))).map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(format!("  {}: {}", plot_label(label), fmt_seconds(v / 1e3)), (v, y), text.clone())))
            .map_err(e)?;
    }
    Ok(())
}

macro_rules! png_and_svg {
    ($stem:expr, |$root:ident| $body:expr) => {{
        let stem: &Path = $stem;
        let png = stem.with_extension("png");
        let svg = stem.with_extension("svg");
        {
            let $root = BitMapBackend::new(&png, SIZE).into_drawing_area();
            $body.map_err(|m| plot_err(&png, m))?;
            $root.present().map_err(|m| plot_err(&png, m))?;
        }
        {
            let $root = SVGBackend::new(&svg, SIZE).into_drawing_area();
            $body.map_err(|m| plot_err(&svg, m))?;
            $root.present().map_err(|m| plot_err(&svg, m))?;
        }
        (png, svg)
    }};
}

/// Series of (x, metric) per label, x from `x_of`; points without a finite metric are left out.
fn series_of(block: &Block, metric: Metric, x_of: impl Fn(&ResultRow) -> Option<f64>) -> Vec<Series> {
    let with_skip = block.mixes_skips();
    let mut out: Vec<Series> = Vec::new();
    for r in &block.rows {
        let (Some(x), Some(y)) = (x_of(r), metric.of(r)) else { continue };
        if !x.is_finite() || !y.is_finite() {
            continue;
        }
        let label = series_label(r, with_skip);
        match out.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((x, y)),
            None => out.push(Series { label, points: vec![(x, y)] }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out.sort_by(|a, b| a.label.cmp(&b.label));
    out
}

/// The Pareto front for a metric that improves in direction `better`: lower cost and a better
/// metric; for higher-is-better metrics (IS, precision, recall, ...) the metric is negated.
pub fn pareto_front_for(points: &[(f64, f64)], better: crate::metrics::Better) -> Vec<(f64, f64)> {
    match better {
        crate::metrics::Better::Lower => pareto_front(points),
        crate::metrics::Better::Higher => {
            let flipped: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x, -y)).collect();
            pareto_front(&flipped).into_iter().map(|(x, y)| (x, -y)).collect()
        }
    }
}

/// Which way a metric column improves (unknown columns: lower, like distances).
pub fn better_of(metric: &str) -> crate::metrics::Better {
    crate::metrics::column(metric).map_or(crate::metrics::Better::Lower, |c| c.better)
}

/// Points not dominated by another (lower-or-equal cost and metric, one strictly lower), by cost.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if front.last().is_none_or(|q| p.1 < q.1) {
            front.push(p);
        }
    }
    front
}

/// Seconds of sampling per 1,000 samples: the cost axis of the frontier plot.
pub fn seconds_per_1k(r: &ResultRow) -> Option<f64> {
    (r.samples > 0 && r.seconds_sampling.is_finite()).then(|| r.seconds_sampling / r.samples as f64 * 1000.0)
}

/// All plots of one block, written as `dir/<slug>-<kind>.{png,svg}`.
pub fn block_plots(dir: &Path, slug: &str, block: &Block, metric: Metric, pal: &Palette) -> Result<Vec<PlotFile>> {
    register_font();
    let m = metric.name();
    let who = block.title();
    let mut out = Vec::new();
    let mut xy = |kind: &str, plot: XyPlot| -> Result<()> {
        let legend: Vec<String> = plot.series.iter().map(|s| plot_label(&s.label)).chain(plot.frontier.as_ref().map(|_| "Pareto-optimal".to_string())).collect();
        let (png, svg) = png_and_svg!(&dir.join(format!("{slug}-{kind}")), |root| draw_xy(&root, &plot, pal));
        out.push(PlotFile { title: plot.title.clone(), png, svg, legend });
        Ok(())
    };
    let by_steps = series_of(block, metric, |r| Some(r.steps as f64));
    let log_y = wants_log(by_steps.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect::<Vec<_>>().into_iter(), 20.0);
    let better = better_of(m);
    let direction = match better {
        crate::metrics::Better::Lower => "lower is better",
        crate::metrics::Better::Higher => "higher is better",
    };
    let y_desc = format!("{m} ({direction}{})", if log_y { ", log scale" } else { "" });
    xy("steps", XyPlot {
        title: format!("{m} vs steps — {who}"),
        x_desc: "sampler steps S (log scale)".into(),
        y_desc: y_desc.clone(),
        series: by_steps,
        log_x: true,
        log_y,
        frontier: None,
    })?;
    xy("nfe", XyPlot {
        title: format!("{m} vs NFE — {who}"),
        x_desc: "model evaluations per sample, NFE (log scale)".into(),
        y_desc: y_desc.clone(),
        series: series_of(block, metric, |r| Some(r.nfe as f64)),
        log_x: true,
        log_y,
        frontier: None,
    })?;
    let by_time = series_of(block, metric, seconds_per_1k);
    let all: Vec<(f64, f64)> = by_time.iter().flat_map(|s| s.points.iter().copied()).collect();
    let log_t = wants_log(all.iter().map(|p| p.0).collect::<Vec<_>>().into_iter(), 10.0);
    xy("time", XyPlot {
        title: format!("{m} vs sampling time — {who}"),
        x_desc: format!("wall-clock seconds per 1,000 samples{}", if log_t { " (log scale)" } else { "" }),
        y_desc,
        frontier: Some(pareto_front_for(&all, better)),
        series: by_time,
        log_x: log_t,
        log_y,
    })?;
    // Time per step: the median over the series' cells, in milliseconds.
    let with_skip = block.mixes_skips();
    let mut per: Vec<(String, Vec<f64>)> = Vec::new();
    for r in &block.rows {
        let label = series_label(r, with_skip);
        match per.iter_mut().find(|p| p.0 == label) {
            Some(p) => p.1.push(r.seconds_per_step * 1e3),
            None => per.push((label, vec![r.seconds_per_step * 1e3])),
        }
    }
    per.sort_by(|a, b| a.0.cmp(&b.0));
    let bars: Vec<(String, f64)> = per
        .into_iter()
        .map(|(l, v)| (l, super::tables::median(v)))
        .collect();
    let batch: Vec<u64> = {
        let mut b: Vec<u64> = block.rows.iter().map(|r| r.batch_size).collect();
        b.sort_unstable();
        b.dedup();
        b
    };
    let batch = batch.iter().map(u64::to_string).collect::<Vec<_>>().join("/");
    let title = format!("time per sampler step — {who}");
    let x_desc = format!("milliseconds per step for one batch of {batch} (median over cells)");
    let (png, svg) = png_and_svg!(&dir.join(format!("{slug}-time_per_step")), |root| draw_bars(&root, &title, &x_desc, &bars, pal));
    out.push(PlotFile { title, png, svg, legend: bars.iter().map(|b| plot_label(&b.0)).collect() });
    Ok(out)
}

/// The guided rows of one model, by series "sampler, S=…": the metric against the guidance scale
/// and, when the rows have CLIP score, the CLIP-score-vs-FID trade-off curves (one point per scale,
/// the Stable Diffusion model card's figure). Written as `dir/<slug>-guidance*.{png,svg}`.
pub fn guidance_plots(dir: &Path, slug: &str, model: &str, rows: &[&ResultRow], metric: Metric, pal: &Palette) -> Result<Vec<PlotFile>> {
    register_font();
    let guided: Vec<&ResultRow> = rows.iter().copied().filter(|r| r.model == model && r.guidance_scale.is_some()).collect();
    if guided.is_empty() {
        return Ok(Vec::new());
    }
    let series = |xy: &dyn Fn(&ResultRow) -> Option<(f64, f64)>| -> Vec<Series> {
        let mut out: Vec<Series> = Vec::new();
        let mut sorted = guided.clone();
        sorted.sort_by(|a, b| a.guidance_scale.unwrap_or(0.0).total_cmp(&b.guidance_scale.unwrap_or(0.0)));
        for r in sorted {
            let Some((x, y)) = xy(r).filter(|(x, y)| x.is_finite() && y.is_finite()) else { continue };
            let label = format!("{}, S={}", series_label(r, false), r.steps);
            match out.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push((x, y)),
                None => out.push(Series { label, points: vec![(x, y)] }),
            }
        }
        out.sort_by(|a, b| a.label.cmp(&b.label));
        out
    };
    let m = metric.name();
    let direction = |name: &str| match better_of(name) {
        crate::metrics::Better::Lower => "lower is better",
        crate::metrics::Better::Higher => "higher is better",
    };
    let mut plots = vec![(
        "guidance",
        XyPlot {
            title: format!("{m} vs guidance scale — {model}"),
            x_desc: "classifier-free guidance scale w".into(),
            y_desc: format!("{m} ({})", direction(m)),
            series: series(&|r| Some((r.guidance_scale?, metric.of(r)?))),
            log_x: false,
            log_y: false,
            frontier: None,
        },
    )];
    let (clip, fid) = (Metric::named("clip_score"), Metric::named("fid"));
    let tradeoff = series(&|r| Some((clip.of(r)?, fid.of(r)?)));
    if !tradeoff.is_empty() {
        plots.push((
            "clip_fid",
            XyPlot {
                title: format!("FID vs CLIP score over guidance scales — {model}"),
                x_desc: "CLIP score (higher is better); w grows along each curve".into(),
                y_desc: "FID (lower is better)".into(),
                series: tradeoff,
                log_x: false,
                log_y: false,
                frontier: None,
            },
        ));
    }
    let mut out = Vec::new();
    for (kind, plot) in plots {
        let legend: Vec<String> = plot.series.iter().map(|s| plot_label(&s.label)).collect();
        let (png, svg) = png_and_svg!(&dir.join(format!("{slug}-{kind}")), |root| draw_xy(&root, &plot, pal));
        out.push(PlotFile { title: plot.title.clone(), png, svg, legend });
    }
    Ok(out)
}

/// Tile up to `max` sample PNGs from `samples_dir` (sorted by name) into one grid PNG, small
/// images enlarged (nearest neighbour) so 32×32 samples are visible. Returns how many were tiled.
pub fn sample_grid(samples_dir: &Path, out: &Path, max: usize) -> Result<usize> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(samples_dir)
        .map_err(|e| BenchError::io(format!("read {}", samples_dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    files.truncate(max);
    let mut images = Vec::new();
    for f in &files {
        match image::open(f) {
            Ok(img) => images.push(img.to_rgb8()),
            Err(e) => tracing::warn!("skipping unreadable sample {}: {e}", f.display()),
        }
    }
    if images.is_empty() {
        return Ok(0);
    }
    let (w, h) = images.iter().fold((0, 0), |(w, h), i| (w.max(i.width()), h.max(i.height())));
    let scale = (128 / w.max(h).max(1)).clamp(1, 4);
    let (tw, th) = (w * scale, h * scale);
    let cols = (images.len() as f64).sqrt().ceil() as u32;
    let rows = (images.len() as u32).div_ceil(cols);
    let gap = 2;
    let mut grid = image::RgbImage::from_pixel(cols * (tw + gap) + gap, rows * (th + gap) + gap, image::Rgb([255, 255, 255]));
    for (k, img) in images.iter().enumerate() {
        let tile = image::imageops::resize(img, img.width() * scale, img.height() * scale, image::imageops::FilterType::Nearest);
        let (c, r) = (k as u32 % cols, k as u32 / cols);
        image::imageops::replace(&mut grid, &tile, (gap + c * (tw + gap)) as i64, (gap + r * (th + gap)) as i64);
    }
    grid.save(out).map_err(|e| BenchError::Internal(format!("write {}: {e}", out.display())))?;
    Ok(images.len())
}

/// A plot of the first `max` saved sequence samples (`samples_dir/*.npy`, float32 [n, C, L] or
/// [n, L]): one panel per sample, one line per channel, value against position. Returns how many
/// samples it shows (0 when there are no sequence files).
pub fn sequence_plot(samples_dir: &Path, out: &Path, max: usize) -> Result<usize> {
    register_font();
    let mut files: Vec<PathBuf> = std::fs::read_dir(samples_dir)
        .map_err(|e| BenchError::io(format!("read {}", samples_dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")))
        .collect();
    files.sort();
    // Each sample as channels × positions.
    let mut series: Vec<Vec<Vec<f64>>> = Vec::new();
    for f in &files {
        let t = match tch::Tensor::read_npy(f) {
            Ok(t) if t.dim() == 2 || t.dim() == 3 => t.to_kind(tch::Kind::Double),
            Ok(t) => {
                tracing::warn!("skipping {}: shape {:?} is not [n, C, L] or [n, L]", f.display(), t.size());
                continue;
            }
            Err(e) => {
                tracing::warn!("skipping unreadable samples {}: {e}", f.display());
                continue;
            }
        };
        let t = if t.dim() == 2 { t.unsqueeze(1) } else { t };
        for i in 0..t.size()[0] {
            if series.len() >= max {
                break;
            }
            let s = t.get(i);
            let rows = (0..s.size()[0]).map(|c| Vec::<f64>::try_from(s.get(c)).unwrap_or_default()).collect();
            series.push(rows);
        }
    }
    if series.is_empty() {
        return Ok(0);
    }
    let n = series.len();
    let (w, h) = (960u32, 170 * n as u32 + 20);
    let e = |e: String| BenchError::Internal(format!("write {}: {e}", out.display()));
    {
        let root = BitMapBackend::new(out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let panels = root.split_evenly((n, 1));
        for (k, (panel, sample)) in panels.iter().zip(&series).enumerate() {
            let len = sample.iter().map(Vec::len).max().unwrap_or(1).max(2);
            let (lo, hi) = sample.iter().flatten().filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let (lo, hi) = if lo < hi { (lo, hi) } else if lo.is_finite() { (lo - 1.0, lo + 1.0) } else { (-1.0, 1.0) };
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("sample {k}"), (FAMILY, 14))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(52)
                .build_cartesian_2d(0f64..(len - 1) as f64, lo..hi)
                .map_err(|x| e(x.to_string()))?;
            chart
                .configure_mesh()
                .label_style((FAMILY, 12))
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&|v| fmt_tick(*v))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|x| e(x.to_string()))?;
            for (c, row) in sample.iter().enumerate() {
                let (r, g, b) = COLOURS[c % COLOURS.len()];
                let pts: Vec<(f64, f64)> = row.iter().enumerate().filter(|p| p.1.is_finite()).map(|(i, &v)| (i as f64, v)).collect();
                chart.draw_series(LineSeries::new(pts, RGBColor(r, g, b).stroke_width(2))).map_err(|x| e(x.to_string()))?;
            }
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_follows_the_metric_direction() {
        let pts = [(1.0, 5.0), (2.0, 7.0), (3.0, 6.0), (4.0, 9.0)];
        assert_eq!(pareto_front_for(&pts, crate::metrics::Better::Lower), vec![(1.0, 5.0)]);
        assert_eq!(pareto_front_for(&pts, crate::metrics::Better::Higher), vec![(1.0, 5.0), (2.0, 7.0), (4.0, 9.0)]);
        assert_eq!(better_of("inception_score"), crate::metrics::Better::Higher);
        assert_eq!(better_of("prdc_precision"), crate::metrics::Better::Higher);
        assert_eq!(better_of("fd_dinov2"), crate::metrics::Better::Lower);
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let pts = [(1.0, 10.0), (2.0, 5.0), (2.0, 7.0), (3.0, 6.0), (4.0, 1.0), (0.5, 20.0), (5.0, f64::NAN)];
        assert_eq!(pareto_front(&pts), [(0.5, 20.0), (1.0, 10.0), (2.0, 5.0), (4.0, 1.0)]);
    }

    #[test]
    fn log_axes_skip_non_positive_points_and_empty_plots_say_so() {
        register_font();
        let pal = Palette::new(vec!["a".into()]);
        let plot = |points: Vec<(f64, f64)>| XyPlot {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            series: vec![Series { label: "a".into(), points }],
            log_x: true,
            log_y: true,
            frontier: None,
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (400, 300)).into_drawing_area();
            draw_xy(&root, &plot(vec![(0.0, 1.0), (10.0, 2.0), (20.0, 0.0), (40.0, 1.5)]), &pal).unwrap();
            root.present().unwrap();
        }
        // Two of four points are drawable: two markers.
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (400, 300)).into_drawing_area();
            draw_xy(&root, &plot(vec![(f64::NAN, 1.0)]), &pal).unwrap();
            root.present().unwrap();
        }
        assert!(svg.contains("t — no finite values"), "{svg}");
    }

    #[test]
    fn ticks_and_palette() {
        assert_eq!(fmt_tick(1000.0), "1000");
        assert_eq!(fmt_tick(12.5), "12.5");
        assert_eq!(fmt_tick(0.02), "0.02");
        assert_eq!(fmt_tick(3.25678), "3.26");
        let p = Palette::new(vec!["b".into(), "a".into(), "b".into()]);
        assert_eq!(p.colour("a"), RGBColor(31, 119, 180));
        assert_eq!(p.colour("b"), RGBColor(255, 127, 14));
    }
}
