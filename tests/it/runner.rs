//! `bench run`: per-sample seeding, sharding, exact resume after SIGKILL, partial recomputation,
//! and the quickstart's fd_exact against the exact computation.
use crate::common::*;
use samplerbench::plan::{self, Registry};
use samplerbench::results::{read_results, ResultRow};
use samplerbench::runner::{self, sample_batch};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn write_spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn small_spec(samplers: &str, samples: u64, batch: u64, extra: &str) -> String {
    format!(
        "name: small\nmodel:\n  kind: oracle\n  data: {{kind: gaussian, shape: [2, 3, 3], mean: [0.1, -0.2], std: [0.3, 0.8]}}\n\
         samplers:\n{samplers}\nsamples: {samples}\nbatch_size: {batch}\nseed: 7\ndevice: cpu\n\
         metrics:\n  fd_pixel: {{}}\n  fd_exact: {{}}\nsave_samples: 0\n{extra}"
    )
}

fn run_ok(args: &[&str]) -> String {
    let out = bench(args);
    assert_eq!(out.status.code(), Some(0), "bench {args:?}:\n{}", stderr(&out));
    stdout(&out)
}

fn rows_by_cell(dir: &Path) -> Vec<ResultRow> {
    let mut rows = read_results(dir).unwrap();
    rows.sort_by(|a, b| a.cell_hash.cmp(&b.cell_hash));
    rows
}

#[test]
fn samples_do_not_depend_on_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "s.yaml", &small_spec("  - {name: ddim, eta: 1.0, skip: uniform}", 64, 64, "steps: 10\n"));
    let plan = plan::load(&spec, &Registry).unwrap();
    let model = runner::load_model(&plan).unwrap();
    let schedule = plan.schedule.noise_schedule().unwrap();
    let sampler = runner::build_sampler(&plan, &plan.cells[0], &schedule).unwrap();
    let all = |batch: u64| {
        let parts: Vec<Tensor> = (0..64)
            .step_by(batch as usize)
            .map(|first| {
                let count = batch.min(64 - first);
                sample_batch(7, model.model.as_ref(), sampler.as_ref(), &model.sample_shape, Device::Cpu, first, count).0
            })
            .collect();
        Tensor::cat(&parts, 0)
    };
    let reference = all(64);
    for b in [1, 7] {
        let other = all(b);
        assert!(other.equal(&reference), "batch size {b} changed the samples");
    }
    // And the samples are the stochastic sampler's, not constant: different per sample.
    assert!(reference.get(0).ne_tensor(&reference.get(1)).any().int64_value(&[]) == 1);
    assert_eq!(reference.kind(), Kind::Float);
}

#[test]
fn sharded_runs_merge_to_the_single_run_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let body = small_spec("  - {name: ddim, eta: [0.0, 1.0], skip: uniform}", 300, 32, "steps: 8\n");
    let spec = write_spec(dir.path(), "s.yaml", &body);
    let single = dir.path().join("single");
    run_ok(&["run", spec.to_str().unwrap(), "--out", single.to_str().unwrap(), "--quiet"]);
    let reference = rows_by_cell(&single);
    assert_eq!(reference.len(), 2);
    for n in [2, 3] {
        let out = dir.path().join(format!("shards{n}"));
        for k in 1..=n {
            // Until every part of a cell is done, no row claims it; the shard that completes the
            // last part merges the cell.
            assert!(read_results(&out).unwrap_or_default().is_empty(), "row before shard {k}/{n}");
            let shard = format!("{k}/{n}");
            run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--shard", &shard, "--quiet"]);
        }
        // A plain run afterwards finds everything done and changes nothing.
        run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
        let rows = rows_by_cell(&out);
        assert_eq!(rows.len(), 2);
        for (a, b) in rows.iter().zip(&reference) {
            let (x, y) = (a.fd_pixel.unwrap(), b.fd_pixel.unwrap());
            assert!((x - y).abs() <= 1e-12 * y.abs(), "{n} shards: fd_pixel {x} vs {y}");
            assert_eq!(a.fd_exact, b.fd_exact);
            assert_eq!((a.samples, a.nfe, a.nan_samples), (b.samples, b.nfe, b.nan_samples));
        }
    }
}

#[test]
fn a_killed_run_resumes_to_the_identical_row() {
    let dir = tempfile::tempdir().unwrap();
    let body = small_spec("  - {name: ddim, eta: 1.0, skip: uniform}", 6000, 20, "steps: 200\n");
    let spec = write_spec(dir.path(), "s.yaml", &body);
    let whole = dir.path().join("whole");
    run_ok(&["run", spec.to_str().unwrap(), "--out", whole.to_str().unwrap(), "--quiet"]);

    let out = dir.path().join("killed");
    let mut child = std::process::Command::new(bench_bin())
        .args(["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    // Wait for a checkpoint mid-cell, then SIGKILL.
    let start = std::time::Instant::now();
    let state = loop {
        let found = std::fs::read_dir(out.join("cells"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("part-1-of-1.json"))
            .filter(|p| p.exists());
        if let Some(p) = found {
            break p;
        }
        assert!(start.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let next = saved["next"].as_u64().unwrap();
    assert!(next > 0 && next < 6000, "killed at sample {next}: not mid-cell");
    assert!(read_results(&out).unwrap_or_default().is_empty(), "a killed run left a row");
    // The stale lock of the killed process must not block the rerun.
    run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let (a, b) = (&rows_by_cell(&out)[0], &rows_by_cell(&whole)[0]);
    assert_eq!(a.fd_pixel.unwrap().to_bits(), b.fd_pixel.unwrap().to_bits(), "resumed {:?} vs {:?}", a.fd_pixel, b.fd_pixel);
    assert_eq!((a.samples, a.nfe, &a.cell_hash), (b.samples, b.nfe, &b.cell_hash));
}

#[test]
fn a_changed_parameter_recomputes_only_its_cells() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spec = write_spec(dir.path(), "s.yaml", &small_spec("  - {name: ddim, eta: [0.0, 1.0], skip: uniform}", 50, 25, "steps: 5\n"));
    run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let before = rows_by_cell(&out);
    let spec = write_spec(dir.path(), "s.yaml", &small_spec("  - {name: ddim, eta: [0.0, 0.5], skip: uniform}", 50, 25, "steps: 5\n"));
    run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let after = rows_by_cell(&out);
    assert_eq!(after.len(), 2);
    let kept = |rows: &[ResultRow]| rows.iter().find(|r| r.eta == Some(0.0)).cloned().unwrap();
    // The unchanged cell was not recomputed: its row, timings included, is the same.
    assert_eq!(format!("{:?}", kept(&before)), format!("{:?}", kept(&after)));
    let etas: Vec<_> = after.iter().map(|r| r.eta.unwrap()).collect();
    assert!(etas.contains(&0.5) && !etas.contains(&1.0), "{etas:?}");
}

#[test]
fn bad_run_input_is_a_one_line_user_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "s.yaml", &small_spec("  - {name: ddim, eta: 0.0}", 10, 5, "steps: 5\n"));
    let out = bench(&["run", spec.to_str().unwrap(), "--shard", "3/2"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim(), "error: --shard \"3/2\": expected K/N with 1 ≤ K ≤ N, e.g. 2/4");
    let out = bench(&["run", "/nonexistent/spec.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn quickstart_fd_exact_matches_the_exact_computation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = root.join("experiments/quickstart.yaml");
    let stdout = run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(stdout.contains("report.md"), "{stdout}");
    let plan = plan::load(&spec, &Registry).unwrap();
    let model = runner::load_model(&plan).unwrap();
    let oracle = model.gaussian.as_ref().unwrap();
    let schedule = plan.schedule.noise_schedule().unwrap();
    let rows = read_results(&out).unwrap();
    assert_eq!(rows.len(), plan.cells.len());
    let mut checked = 0;
    for cell in &plan.cells {
        let row = rows.iter().find(|r| r.cell_hash == cell.hash).unwrap();
        let sampler = runner::build_sampler(&plan, cell, &schedule).unwrap();
        match samplerbench::sampling::exact::exact_fd(sampler.as_ref(), oracle) {
            Ok(fd) => {
                assert_eq!(row.fd_exact, Some(fd), "cell {}", cell.index);
                checked += 1;
            }
            // ddpm_large clamps x̂0: not affine, so no exact FD.
            Err(_) => assert_eq!((row.fd_exact, cell.sampler.as_str()), (None, "ddpm_large")),
        }
        assert_eq!(row.samples, 500);
    }
    assert_eq!(checked, plan.cells.len() - 5);
    // DDIM Table 1's shape: for every S, quality worsens as η grows.
    let fd = |eta: f64, s: u64| rows.iter().find(|r| r.sampler == "ddim" && r.eta == Some(eta) && r.steps == s).unwrap().fd_exact.unwrap();
    for s in [10, 20, 50, 100, 1000] {
        assert!(fd(0.0, s) < fd(0.2, s) && fd(0.2, s) < fd(0.5, s) && fd(0.5, s) < fd(1.0, s), "S={s}");
    }
}
