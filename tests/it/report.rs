//! `bench report`: golden tables, plot files, missing/NaN/single-cell results, exit codes.
use crate::common::*;
use samplerbench::report::{self, tables, Metric};
use samplerbench::results::{write_results, write_run_info, ResultRow, RunInfo};
use std::path::Path;

const CIFAR: &str = "ddim:data/models/ddim_cifar10/model-790000.ckpt";

#[allow(clippy::too_many_arguments)]
fn row(sampler: &str, variant: Option<&str>, order: Option<u32>, eta: Option<f64>, steps: u64, nfe: u64, fid: f64, secs: f64) -> ResultRow {
    let label = format!("{sampler}-{variant:?}-{order:?}-{eta:?}-{steps}");
    ResultRow {
        experiment: "golden".into(),
        model: CIFAR.into(),
        dataset: Some("cifar10".into()),
        sampler: sampler.into(),
        variant: variant.map(String::from),
        order,
        eta,
        skip: Some("quadratic".into()),
        steps,
        nfe,
        samples: 1000,
        seed: 0,
        metrics: [("fid".to_string(), fid)].into_iter().collect(),
        seconds_sampling: secs,
        seconds_metrics: 0.5,
        seconds_per_step: secs / steps as f64 / 10.0,
        images_per_second: 1000.0 / secs,
        batch_size: 100,
        device: "cpu".into(),
        precision: "fp32".into(),
        fid_mode: Some("pytorch-fid".into()),
        bench_version: "0.1.0".into(),
        git_commit: "0000000".into(),
        spec_hash: "spec".into(),
        cell_hash: format!("{:0>16x}", label.bytes().fold(1469598103934665603u64, |h, b| (h ^ b as u64).wrapping_mul(1099511628211))),
        ..Default::default()
    }
}

/// DDIM η ∈ {0, 1} × S ∈ {10, 20, 50} with a NaN cell, σ̂ missing S=20, the PNDM family, and
/// two solvers by NFE.
fn fixture() -> Vec<ResultRow> {
    let mut rows = Vec::new();
    for (eta, fids) in [(0.0, [13.1, 7.0, 4.5]), (1.0, [f64::NAN, 18.0, 8.2])] {
        for (s, f) in [10u64, 20, 50].into_iter().zip(fids) {
            rows.push(row("ddim", None, None, Some(eta), s, s, f, s as f64 * 0.1));
        }
    }
    rows[3].nan_samples = 3;
    rows[3].first_nan_index = Some(17);
    rows.push(row("ddpm_large", None, None, None, 10, 10, 360.0, 1.0));
    rows.push(row("ddpm_large", None, None, None, 50, 50, 30.0, 5.0));
    for (v, fids) in [("s_pndm", [9.0, 5.5, 4.2]), ("f_pndm", [8.5, 5.0, 4.0])] {
        for (s, f) in [10u64, 20, 50].into_iter().zip(fids) {
            let extra = if v == "f_pndm" { 12 } else { 1 };
            rows.push(row("pndm", Some(v), None, None, s, s + extra, f, (s + extra) as f64 * 0.1));
        }
    }
    rows.push(row("pndm", Some("plms"), None, None, 10, 10, 10.5, 1.0));
    rows.push(row("dpm_solver", None, Some(2), None, 5, 10, 5.9, 1.0));
    rows.push(row("dpm_solver", None, Some(2), None, 10, 20, 3.1, 2.0));
    rows.push(row("unipc", None, None, None, 10, 10, 4.1, 1.05));
    rows
}

#[test]
fn golden_tables_for_the_fixture() {
    let rows = fixture();
    let blocks = tables::blocks(&rows);
    assert_eq!(blocks.len(), 1);
    let b = &blocks[0];
    let published = report::published::load(None).unwrap();
    let mut md = String::new();
    for t in tables::eta_tables(b, Metric::FID) {
        md += &t.to_markdown();
        md.push('\n');
    }
    md += &tables::pndm_table(b, Metric::FID).unwrap().to_markdown();
    md.push('\n');
    md += &tables::nfe_table(b, Metric::FID).unwrap().to_markdown();
    md.push('\n');
    md += &tables::published_table(b, Metric::FID, &published, None).unwrap().to_markdown();
    md.push('\n');
    md += &report::cells_table(b, Metric::FID).to_markdown();
    insta::assert_snapshot!("report_tables", md);
}

#[test]
fn eta_table_marks_best_missing_and_nan_exactly() {
    let rows = fixture();
    let blocks = tables::blocks(&rows);
    let t = &tables::eta_tables(&blocks[0], Metric::FID)[0];
    let expected = "\
#### ddim:data/models/ddim_cifar10/model-790000.ckpt (cifar10): ddim by η and steps S (DDIM Table 1 layout, skip quadratic)

| η \\ S | 10 | 20 | 50 |
|---|---:|---:|---:|
| 0.0 | **13.10** | **7.00** | **4.50** |
| 1.0 | NaN† | 18.00 | 8.20 |
| σ̂ | 360.00 | — | 30.00 |

fid (lower is better); best per column in bold; — = not run.  
† some samples of this cell were NaN/Inf and were left out of the metric.  
";
    assert_eq!(t.to_markdown(), expected);
    assert_eq!(t.missing, ["ddim σ̂ at S=20"]);
    assert_eq!(t.nan, ["ddim η=1.0 at S=10: fid = NaN, 3 of 1000 samples had NaN/Inf (first: sample 17)"]);
}

fn write_sample_pngs(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, (i * 255 / n.max(1)) as u8])
        });
        img.save(dir.join(format!("{i:05}.png"))).unwrap();
    }
}

/// The trimmed contents of an SVG's `<text>` elements.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text").skip(1).filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim().to_string())).collect()
}

fn png_is_a_real_plot(path: &Path) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    assert_eq!((img.width(), img.height()), (960, 620), "{}", path.display());
    // More than background and one ink colour: axes, text and coloured series were drawn.
    let mut colours = std::collections::BTreeSet::new();
    for p in img.pixels().step_by(7) {
        colours.insert(p.0);
    }
    assert!(colours.len() > 20, "{}: only {} colours", path.display(), colours.len());
}

#[test]
fn report_writes_markdown_html_plots_and_grids() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture();
    write_results(dir.path(), &rows).unwrap();
    write_run_info(
        dir.path(),
        &RunInfo {
            bench_version: "0.1.0".into(),
            git_commit: "0000000".into(),
            libtorch_version: Some("2.11.0".into()),
            device_name: "cpu".into(),
            precision: "fp32".into(),
            seed: 0,
            samples: 1000,
            total_wall_seconds: Some(42.5),
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::write(dir.path().join("spec.yaml"), "name: golden\nsteps: [10, 20, 50]\n").unwrap();
    write_sample_pngs(&dir.path().join("samples").join(&rows[0].cell_hash), 20);

    let out = bench(&["report", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    if let Some(keep) = std::env::var_os("BENCH_TEST_KEEP_REPORT") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap();
        for e in std::fs::read_dir(dir.path().join("plots")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, keep.join(p.file_name().unwrap())).unwrap();
        }
        std::fs::copy(dir.path().join("report.md"), keep.join("report.md")).unwrap();
        std::fs::copy(dir.path().join("report.html"), keep.join("report.html")).unwrap();
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for needle in [
        "## What is missing",
        "- ddim:data/models/ddim_cifar10/model-790000.ckpt (cifar10): ddim σ̂ at S=20",
        "NaN: ddim:data/models/ddim_cifar10/model-790000.ckpt (cifar10): ddim η=1.0 at S=10: fid = NaN, 3 of 1000 samples",
        // 1000 samples ≤ 2048 Inception dimensions: caveats and no Δ.
        "| ddim η=0.0 | 10 | 10 | 13.10 | 13.36 | — | 1000 vs 50000 samples; 1000 samples ≤ 2048 dims; FID pipeline not stated | [1] |",
        "[1] Song, Meng & Ermon 2021, Denoising Diffusion Implicit Models (ICLR 2021, arXiv 2010.02502), Table 1",
        "| total wall time | 42.5 s |",
        "```yaml\nname: golden\nsteps: [10, 20, 50]\n```",
        "![fid vs steps",
        "plots/samples-",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    // Self-contained: plots inline, sample grid embedded, nothing fetched from elsewhere.
    assert_eq!(html.matches("<svg").count(), 4, "four plots inline");
    assert_eq!(html.matches("data:image/png;base64,").count(), 1);
    assert!(!html.contains("src=\"plots/") && !html.contains("href=\"http"), "external references in report.html");
    assert!(html.contains("<td class=\"best\"><b>13.10</b></td>"));

    let plots = dir.path().join("plots");
    let series = ["ddim η=0.0", "ddim η=1.0", "σ-hat (ddpm_large)", "pndm:s_pndm", "pndm:f_pndm", "pndm:plms", "dpm_solver order 2", "unipc"];
    for kind in ["steps", "nfe", "time", "time_per_step"] {
        let stem = plots.join(format!("1-cifar10-{kind}"));
        png_is_a_real_plot(&stem.with_extension("png"));
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{kind}: not an SVG document");
        let texts = svg_texts(&svg);
        for s in series {
            // Legend entries (and bar labels) are text elements.
            assert!(texts.iter().any(|t| t == s || t.starts_with(&format!("{s}: "))), "{kind}.svg lacks series {s:?}: {texts:?}");
        }
        assert_eq!(texts.iter().any(|t| t == "Pareto-optimal"), kind == "time");
        if kind != "time_per_step" {
            assert!(svg.contains("log scale"), "{kind}: log axis expected");
        }
    }
    // Independent parsers: every SVG is well-formed XML, report.html has balanced tags.
    let checked = run_python(
        r#"
import sys, glob, xml.etree.ElementTree as ET
from html.parser import HTMLParser
d = sys.argv[1]
n = 0
for f in sorted(glob.glob(d + "/plots/*.svg")):
    ET.parse(f); n += 1
class P(HTMLParser):
    void = {"meta", "img", "br", "hr", "link", "input"}
    def __init__(s): super().__init__(); s.stack = []; s.bad = 0
    def handle_starttag(s, t, a):
        if t not in s.void: s.stack.append(t)
    def handle_endtag(s, t):
        if t in s.void: return
        if s.stack and s.stack[-1] == t: s.stack.pop()
        else: s.bad += 1
p = P(); p.feed(open(d + "/report.html", encoding="utf-8").read())
print(n, len(p.stack), p.bad)
"#,
        &[dir.path().to_str().unwrap()],
    );
    assert_eq!(checked.trim(), "4 0 0", "svg files parsed, unclosed html tags, mismatched html tags");
    let grid = image::open(plots.join(format!("samples-{}.png", rows[0].cell_hash))).unwrap().to_rgb8();
    // 20 samples → 5 × 4 tiles of 32·4 = 128 px with 2 px gaps.
    assert_eq!((grid.width(), grid.height()), (5 * 130 + 2, 4 * 130 + 2));
}

#[test]
fn single_cell_without_the_metric_renders_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = row("ddim", None, None, Some(0.0), 10, 10, 0.0, 0.2);
    r.model = "oracle:gaussian[3, 32, 32]".into();
    r.dataset = None;
    r.metrics = [("fd_exact".to_string(), 0.01234)].into_iter().collect();
    write_results(dir.path(), &[r]).unwrap();
    let s = report::write_report(dir.path(), Metric::FID).unwrap();
    assert_eq!(s.rows, 1);
    assert_eq!(s.plots.len(), 4);
    let md = std::fs::read_to_string(&s.markdown).unwrap();
    for needle in [
        "1 cell from `results.parquet`",
        "- no cell has fid; the results have: fd_exact (choose with --metric)",
        "- oracle:gaussian[3, 32, 32]: ddim η=0.0 at S=10 has no fid",
        "- run.json is absent",
        "- spec.yaml is absent",
        "No published counterpart: the model names no known dataset",
        "| 0.0 | n/a |",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    // The same file with the metric it has: one best cell, nothing missing but the inputs.
    let s = report::write_report(dir.path(), Metric::named("fd_exact")).unwrap();
    let md = std::fs::read_to_string(&s.markdown).unwrap();
    assert!(md.contains("| 0.0 | **0.0123** |"), "{md}");
    assert_eq!(s.missing.len(), 3, "{:?}", s.missing);
    png_is_a_real_plot(&s.plots[0].png);
}

#[test]
fn empty_results_render_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    write_results(dir.path(), &[]).unwrap();
    let s = report::write_report(dir.path(), Metric::FID).unwrap();
    let md = std::fs::read_to_string(&s.markdown).unwrap();
    assert!(md.contains("- the results file has no rows: no cell has finished yet"), "{md}");
    assert!(s.plots.is_empty());
}

#[test]
fn cli_picks_the_metric_the_results_have() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = row("ddim", None, None, Some(0.0), 10, 10, 0.0, 0.2);
    r.metrics = [("fd_exact".to_string(), 0.5)].into_iter().collect();
    write_results(dir.path(), &[r]).unwrap();
    let out = bench(&["report", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n{}\n", dir.path().join("report.md").display(), dir.path().join("report.html").display()));
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("quality metric: **fd_exact**") && md.contains("| 0.0 | **0.5000** |"), "{md}");
}

#[test]
fn cli_missing_results_or_bad_metric_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["report", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("results.parquet: no results file here (run `bench run SPEC` with this output folder first)"), "{err}");
    std::fs::write(dir.path().join("results.parquet"), b"PAR1 garbage").unwrap();
    let out = bench(&["report", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a valid results table"));
    // A metric the results lack: exit 2 naming the ones they have, and no report is overwritten.
    write_results(dir.path(), &[row("ddim", None, None, Some(0.0), 10, 10, 3.0, 0.2)]).unwrap();
    std::fs::write(dir.path().join("report.md"), "earlier report").unwrap();
    let out = bench(&["report", dir.path().to_str().unwrap(), "--metric", "fd_exact"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim(), "error: --metric fd_exact: no cell has it; the results have: fid");
    assert_eq!(std::fs::read_to_string(dir.path().join("report.md")).unwrap(), "earlier report");
}

/// A published comparison says what differs. A 64-sample FID with random Inception weights next
/// to a 50,000-sample published number gets every caveat that applies and no Δ; the paper's own
/// setup (its sample count, pytorch-fid's weights and pipeline, its checkpoint) gets a Δ and none.
#[test]
fn published_comparisons_show_caveats_and_no_delta_where_setups_differ() {
    let standard = samplerbench::registry::FID_INCEPTION.sha256.unwrap();
    let checkpoint = "ab".repeat(32);
    let csv = format!(
        "source,table,dataset,model_checkpoint,fid_pipeline,sampler,variant,order,eta,skip,steps,nfe,samples,metric,value,notes,model_sha256\n\
         Paper,T1,cifar10,ckpt,pytorch-fid,ddim,,,0.0,quadratic,10,10,50000,fid,13.36,,{checkpoint}\n"
    );
    let published = report::published::parse_csv("p.csv", &csv).unwrap();
    let run = |weights: &str, model: &str| RunInfo {
        fid_mode: Some("pytorch-fid".into()),
        input_sha256: [("metrics.fid.weights".to_string(), Some(weights.to_string())), ("model.weights".to_string(), Some(model.to_string()))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let table = |samples: u64, fid: f64, info: &RunInfo| {
        let mut r = row("ddim", None, None, Some(0.0), 10, 10, fid, 1.0);
        r.samples = samples;
        let rows = vec![r];
        let blocks = tables::blocks(&rows);
        tables::published_table(&blocks[0], Metric::FID, &published, Some(info)).unwrap().to_markdown()
    };
    let random = table(64, 5.3e7, &run(&"0".repeat(64), &"cd".repeat(32)));
    let want_random = "#### ddim:data/models/ddim_cifar10/model-790000.ckpt (cifar10): ours vs published (fid)\n\n\
| sampler | S | NFE | ours | paper | Δ (ours − paper) | caveats | ref |\n\
|---|---:|---:|---:|---:|---:|---:|---:|\n\
| ddim η=0.0 | 10 | 10 | 53000000.00 | 13.36 | — | custom Inception weights; 64 vs 50000 samples; 64 samples ≤ 2048 dims; other checkpoint | [1] |\n\n\
[1] Paper, T1; checkpoint: ckpt; FID pipeline: pytorch-fid; 50000 samples.  \n\
Δ —: the setups are known to differ (see the caveats), so the difference would not measure the sampler.  \n\
Caveat: custom Inception weights: ours (SHA-256 000000000000…) are not pytorch-fid's pt_inception-2015-12-05, so our fid is in another network's feature space.  \n\
Caveat: a different sample count: FID is biased upward, the more the fewer samples (Chong & Forsyth 2020); compare at the paper's count.  \n\
Caveat: samples ≤ feature dimensions (2048): the sample covariance is singular and FID is heavily biased upward; the number is not comparable with any published FID.  \n\
Caveat: another checkpoint: our model weights' SHA-256 cdcdcdcdcdcd… is not the published one (abababababab…).  \n";
    assert_eq!(random, want_random, "{random}");
    let matching = table(50_000, 13.1, &run(standard, &checkpoint));
    let want_matching = "#### ddim:data/models/ddim_cifar10/model-790000.ckpt (cifar10): ours vs published (fid)\n\n\
| sampler | S | NFE | ours | paper | Δ (ours − paper) | caveats | ref |\n\
|---|---:|---:|---:|---:|---:|---:|---:|\n\
| ddim η=0.0 | 10 | 10 | 13.10 | 13.36 | −0.26 | none | [1] |\n\n\
[1] Paper, T1; checkpoint: ckpt; FID pipeline: pytorch-fid; 50000 samples.  \n";
    assert_eq!(matching, want_matching, "{matching}");
    // Another FID pipeline alone withholds Δ too.
    let mut tf = run(standard, &checkpoint);
    tf.fid_mode = Some("tf".into());
    let mut r = row("ddim", None, None, Some(0.0), 10, 10, 13.1, 1.0);
    r.samples = 50_000;
    r.fid_mode = Some("tf".into());
    let caveats = report::published::caveats(&published[0], &r, Some(&tf), "fid");
    assert_eq!(caveats.iter().map(|c| (c.label.as_str(), c.no_delta)).collect::<Vec<_>>(), [("other FID pipeline", true)]);
}
