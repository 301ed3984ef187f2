//! experiments/timeseries_sines*.yaml end to end: sequence samples [C, L], `prediction: sample`,
//! DDIM strides, Context-FID streamed per part, `repeats` (mean and 95% t-interval), `.npy`
//! sample dumps and the report's series plots; on the Gaussian oracle also the closed form.
use crate::common::*;
use samplerbench::metrics::context_fid::{ContextFid, TsScaling};
use samplerbench::metrics::frechet::frechet_distance;
use samplerbench::metrics::repeats::mean_ci95;
use samplerbench::metrics::sines::{sines, SinesConfig};
use samplerbench::metrics::stats::{FeatureStats, Moments};
use samplerbench::report::tables::fmt_value;
use samplerbench::results::{read_results, ResultRow};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

const FIXTURES: &str = include_str!("py/timeseries.py");

/// The spec copied into a temp folder beside freshly made fixtures: ts/denoiser.pt, ts/ts2vec.pt
/// (seeded random TorchScript modules) and ts/sines_real.npy (500 Sines windows, seed 123), with
/// `keep_stats: true` so the test can read each repeat's statistics after the row is written.
fn setup(spec: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ts = dir.path().join("ts");
    std::fs::create_dir_all(&ts).unwrap();
    run_python(FIXTURES, &[ts.to_str().unwrap()]);
    let real = sines(&SinesConfig { num: 500, window: 24, dim: 5, seed: 123 }).unwrap();
    ndarray_npy::write_npy(ts.join("sines_real.npy"), &real).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments").join(spec);
    let dst = dir.path().join(spec);
    std::fs::write(&dst, std::fs::read_to_string(src).unwrap() + "keep_stats: true\n").unwrap();
    (dir, dst)
}

fn run_and_report(spec: &Path, out: &Path) -> Vec<ResultRow> {
    let o = bench(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "bench run: {}", stderr(&o));
    let o = bench(&["report", out.to_str().unwrap(), "--metric", "context_fid"]);
    assert!(o.status.success(), "bench report: {}", stderr(&o));
    let mut rows = read_results(out).unwrap();
    rows.sort_by_key(|r| r.steps);
    rows
}

/// The reference's representation moments, as the run computes them.
fn reference(cf: &ContextFid, dir: &Path) -> Moments {
    samplerbench::metrics::context_fid::load_reference(cf, &dir.join("ts/sines_real.npy"), 256).unwrap()
}

/// Each repeat's Context-FID from its final checkpointed statistics (cells/<hash>/r<k>/).
fn per_repeat(out: &Path, row: &ResultRow, reference: &Moments, k: usize) -> Vec<f64> {
    (0..k)
        .map(|r| {
            let d = out.join("cells").join(&row.cell_hash).join(format!("r{r}"));
            let f = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_str().unwrap().ends_with(".context_fid.npz"))
                .unwrap_or_else(|| panic!("no context_fid statistics in {}", d.display()));
            let m = FeatureStats::load_npz(&f, Device::Cpu).unwrap().moments().unwrap();
            frechet_distance(m.mu.view(), m.sigma.view(), reference.mu.view(), reference.sigma.view()).unwrap()
        })
        .collect()
}

/// Repeat 0's saved samples [n, 5, 24] (all of them when save_samples covers the cell).
fn saved_samples(out: &Path, row: &ResultRow) -> Tensor {
    let d = out.join("samples").join(&row.cell_hash);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.iter().all(|p| p.extension().unwrap() == "npy"), "sequences are never written as PNG: {files:?}");
    Tensor::cat(&files.iter().map(|p| Tensor::read_npy(p).unwrap()).collect::<Vec<_>>(), 0)
}

fn check_repeats(rows: &[ResultRow], out: &Path, reference: &Moments) {
    for row in rows {
        let vals = per_repeat(out, row, reference, 3);
        let (mean, ci) = mean_ci95(&vals);
        eprintln!("S={} context_fid per repeat {vals:?} → {mean} ± {ci}", row.steps);
        // The row's numbers are these three FDs' mean and interval; the same f64 arithmetic on
        // the same statistics, up to the order of summation: 1e-12 relative.
        let got = row.metric("context_fid").unwrap();
        assert!((got - mean).abs() <= 1e-12 * mean.abs(), "{got} vs {mean}");
        assert!((row.metric("context_fid_ci95").unwrap() - ci).abs() <= 1e-9 * ci.abs(), "{:?} vs {ci}", row.metric("context_fid_ci95"));
        // Independent seeds give different samples, hence different values.
        assert!(vals[0] != vals[1] && vals[1] != vals[2], "{vals:?}");
        assert!(ci > 0.0);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in rows {
        let cell = format!("{} ± {}", fmt_value(row.metric("context_fid").unwrap()), fmt_value(row.metric("context_fid_ci95").unwrap()));
        assert!(md.contains(&cell), "report.md lacks {cell:?}:\n{md}");
    }
    assert!(md.contains("series, cell"), "report.md has no series plot:\n{md}");
}

/// A random TorchScript denoiser of [5, 24] sequences predicting x̂0, DDIM at 5, 10 and 20 steps,
/// Context-FID over 3 seeds; repeat 0's Context-FID recomputed from its dumped samples.
#[test]
fn timeseries_spec_runs_with_context_fid_repeats_and_report() {
    let (dir, spec) = setup("timeseries_sines.yaml");
    let out = dir.path().join("out");
    let rows = run_and_report(&spec, &out);
    assert_eq!(rows.iter().map(|r| (r.steps, r.nfe, r.samples)).collect::<Vec<_>>(), vec![(5, 5, 200), (10, 10, 200), (20, 20, 200)]);
    let cf = ContextFid::load(&dir.path().join("ts/ts2vec.pt"), TsScaling::NegOneToOne, Device::Cpu).unwrap();
    let reference = reference(&cf, dir.path());
    check_repeats(&rows, &out, &reference);
    // save_samples: 8 → one .npy of repeat 0's first 8 samples [8, 5, 24].
    let saved = saved_samples(&out, &rows[0]);
    assert_eq!(saved.size(), vec![8, 5, 24]);
}

/// The Gaussian oracle in sequence shape [5, 24]: Context-FID from the dumped samples equals the
/// run's (repeat 0), and the sampled pixel FD agrees with the closed form within sampling error.
#[test]
fn timeseries_oracle_matches_closed_form() {
    let (dir, spec) = setup("timeseries_sines_oracle.yaml");
    let out = dir.path().join("out");
    let rows = run_and_report(&spec, &out);
    let cf = ContextFid::load(&dir.path().join("ts/ts2vec.pt"), TsScaling::NegOneToOne, Device::Cpu).unwrap();
    let reference = reference(&cf, dir.path());
    check_repeats(&rows, &out, &reference);
    let (n, k, d) = (2000.0, 3.0, 120.0);
    // tr Σ of the data: 24 positions × (0.3² + 0.4² + 0.5² + 0.3² + 0.4²).
    let tr = 24.0 * (0.09 + 0.16 + 0.25 + 0.09 + 0.16);
    let sigma_max2: f64 = 0.25;
    for row in &rows {
        // Repeat 0 from its samples (all 2000 saved, in batches of 1000 as the run encodes them):
        // the same representations, FD of the same moments: 1e-9 relative.
        let x = saved_samples(&out, row);
        assert_eq!(x.size(), vec![2000, 5, 24]);
        let stats = cf.stats(&x.transpose(1, 2), 1000).unwrap();
        let m = stats.moments().unwrap();
        let r0 = frechet_distance(m.mu.view(), m.sigma.view(), reference.mu.view(), reference.sigma.view()).unwrap();
        let want = per_repeat(&out, row, &reference, 1)[0];
        assert!((r0 - want).abs() <= 1e-9 * want, "S={}: {r0} vs {want}", row.steps);

        // Closed form: fd_exact is DDIM's exact output distribution against the data. The
        // sampled fd_pixel (mean of K = 3 repeats of N = 2000 in d = 120 dimensions) is biased
        // upwards by the sample moments' noise: tr Σ/N from the mean and, to second order in
        // the covariance error E (Σ̂ = Σ^½(I + E)Σ^½, E[tr E²] = d(d+1)/N), tr Σ·(d + 1)/(4N)
        // from the covariance term (exact for Σ_g = Σ_d; DDIM's Σ_g is within a few % of Σ_d
        // here, which the 50% allowance on the bias covers). First-order fluctuations
        // (2Δμᵀδμ + tr(δΣ·∂FD/∂Σ)) have variance ≤ 8·FD·σ²_max/N per repeat: allow 5 standard
        // deviations of their K-mean.
        let exact = row.metric("fd_exact").unwrap();
        let sampled = row.metric("fd_pixel").unwrap();
        let bias = tr / n + tr * (d + 1.0) / (4.0 * n);
        let tol = 0.5 * bias + 5.0 * (8.0 * exact * sigma_max2 / (n * k)).sqrt();
        eprintln!("S={}: fd_exact {exact:.5} fd_pixel {sampled:.5} (expected bias {bias:.5}, allowed ±{tol:.5})", row.steps);
        assert!((sampled - exact - bias).abs() <= tol, "S={}: fd_pixel {sampled} vs fd_exact {exact} + bias {bias} (±{tol})", row.steps);
        // The closed form does not depend on the seed: the interval is the rounding of the mean of
        // three equal numbers (a few ulps).
        let ci = row.metric("fd_exact_ci95").unwrap();
        assert!(ci.abs() <= 1e-14 * exact, "fd_exact_ci95 {ci}");
    }
    // More steps bring DDIM closer to the data.
    let exact: Vec<f64> = rows.iter().map(|r| r.metric("fd_exact").unwrap()).collect();
    assert!(exact[0] > exact[1] && exact[1] > exact[2], "{exact:?}");
}
