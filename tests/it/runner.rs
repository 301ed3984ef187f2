//! `bench run`: per-sample seeding, sharding, exact resume after SIGKILL, partial recomputation,
//! and the quickstart's fd_exact against the exact computation.
use crate::common::*;
use samplerbench::models::load_model;
use samplerbench::plan;
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
    let plan = plan::load(&spec).unwrap();
    let model = load_model(&plan).unwrap();
    let schedule = plan.schedule.noise_schedule().unwrap();
    let sampler = runner::build_sampler(&plan, &plan.cells[0], &schedule).unwrap();
    let all = |batch: u64| {
        let parts: Vec<Tensor> = (0..64)
            .step_by(batch as usize)
            .map(|first| {
                let count = batch.min(64 - first);
                sample_batch(7, model.denoiser.as_ref(), &model, sampler.as_ref(), None, Device::Cpu, first, count, None).unwrap().0
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

/// An adaptive sampler's steps are chosen per sample: a sample's result and NFE do not depend on
/// the batch, and the results record the mean and maximum NFE over samples, also when shards merge.
#[test]
fn adaptive_nfe_is_per_sample_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let entry = "  - {name: dpm_adaptive, steps: 1, eta: 0.5, rtol: 0.02}";
    let spec = write_spec(dir.path(), "s.yaml", &small_spec(entry, 12, 12, ""));
    let plan = plan::load(&spec).unwrap();
    let model = load_model(&plan).unwrap();
    let sampler = runner::build_sampler(&plan, &plan.cells[0], &plan.schedule.noise_schedule().unwrap()).unwrap();
    let all = |batch: u64| {
        let (mut xs, mut nfe) = (Vec::new(), Vec::new());
        for first in (0..12).step_by(batch as usize) {
            let (x, cost) = sample_batch(7, model.denoiser.as_ref(), &model, sampler.as_ref(), None, Device::Cpu, first, batch.min(12 - first), None).unwrap();
            xs.push(x);
            nfe.extend(cost.iter().map(|c| c.0 as u64));
        }
        (Tensor::cat(&xs, 0), nfe)
    };
    let (x12, nfe12) = all(12);
    let (x5, nfe5) = all(5);
    assert!(x5.equal(&x12), "batch size changed the samples");
    assert_eq!(nfe5, nfe12);
    let (min, max) = (*nfe12.iter().min().unwrap(), *nfe12.iter().max().unwrap());
    assert!(min < max && nfe12.iter().all(|n| n % 3 == 0), "per-sample NFE {nfe12:?}");
    let mean = nfe12.iter().sum::<u64>() as f64 / 12.0;
    for shards in [1, 2] {
        let out = dir.path().join(format!("out{shards}"));
        for k in 1..=shards {
            run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--shard", &format!("{k}/{shards}"), "--quiet"]);
        }
        let row = &read_results(&out).unwrap()[0];
        assert_eq!((row.nfe_mean, row.nfe_max, row.nfe), (Some(mean), Some(max), mean.round() as u64), "{shards} shards");
    }
    let csv = std::fs::read_to_string(dir.path().join("out1").join("results.csv")).unwrap();
    assert!(csv.starts_with("experiment,model,dataset,sampler,variant,order,eta,skip,steps,guidance_scale,nfe,unet_evals,nfe_mean,nfe_max,"), "{csv}");
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
            let (x, y) = (a.metric("fd_pixel").unwrap(), b.metric("fd_pixel").unwrap());
            assert!((x - y).abs() <= 1e-12 * y.abs(), "{n} shards: fd_pixel {x} vs {y}");
            assert_eq!(a.metric("fd_exact"), b.metric("fd_exact"));
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
    assert_eq!(a.metric("fd_pixel").unwrap().to_bits(), b.metric("fd_pixel").unwrap().to_bits(), "resumed {:?} vs {:?}", a.metrics, b.metrics);
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
    let plan = plan::load(&spec).unwrap();
    let model = load_model(&plan).unwrap();
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
                assert_eq!(row.metric("fd_exact"), Some(fd), "cell {}", cell.index);
                checked += 1;
            }
            // ddpm_large clamps x̂0: not affine, so no exact FD.
            Err(_) => assert_eq!((row.metric("fd_exact"), cell.sampler.as_str()), (None, "ddpm_large")),
        }
        assert_eq!(row.samples, 500);
    }
    assert_eq!(checked, plan.cells.len() - 5);
    // DDIM Table 1's shape: for every S, quality worsens as η grows.
    let fd = |eta: f64, s: u64| rows.iter().find(|r| r.sampler == "ddim" && r.eta == Some(eta) && r.steps == s).unwrap().metric("fd_exact").unwrap();
    for s in [10, 20, 50, 100, 1000] {
        assert!(fd(0.0, s) < fd(0.2, s) && fd(0.2, s) < fd(0.5, s) && fd(0.5, s) < fd(1.0, s), "S={s}");
    }
}

#[test]
fn a_written_default_is_the_same_cell_and_fills_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = write_spec(dir.path(), "a.yaml", &small_spec("  - {name: ddim}\n  - {name: dpm_solver++}", 40, 20, "steps: 5\n"));
    run_ok(&["run", first.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let second = write_spec(
        dir.path(),
        "b.yaml",
        &small_spec("  - {name: ddim, eta: 0.0, skip: quadratic}\n  - {name: dpm_solver++, order: 2, method: multistep}", 40, 20, "steps: 5\n"),
    );
    let o = bench(&["run", second.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 cells: 0 finished now, 2 already done"), "{}", stderr(&o));
    let rows = read_results(&out).unwrap();
    let ddim = rows.iter().find(|r| r.sampler == "ddim").unwrap();
    assert_eq!((ddim.eta, ddim.skip.as_deref()), (Some(0.0), Some("quadratic")));
    let pp = rows.iter().find(|r| r.sampler == "dpm_solver++").unwrap();
    assert_eq!((pp.order, pp.variant.as_deref(), pp.skip.as_deref()), (Some(2), Some("multistep"), Some("logsnr")));
    assert_eq!((pp.nfe, pp.unet_evals), (5, 5));
}

#[test]
fn cells_follow_file_content_not_paths() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("proj");
    std::fs::create_dir_all(&data).unwrap();
    Tensor::full([2, 3, 3], 0.25, (Kind::Double, Device::Cpu)).write_npy(data.join("mean.npy")).unwrap();
    let body = small_spec("  - {name: ddim, eta: 0.0, skip: uniform}", 30, 30, "steps: 4\noutput: out\n")
        .replace("mean: [0.1, -0.2]", "mean: mean.npy");
    let spec = write_spec(&data, "s.yaml", &body);
    run_ok(&["run", spec.to_str().unwrap(), "--quiet"]);
    let first = read_results(&data.join("out")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("out/run.json")).unwrap()).unwrap();
    assert_eq!(info["input_sha256"]["model.data.mean"].as_str().map(str::len), Some(64), "{info}");
    // Moving the spec with its data and results keeps the finished cell.
    let moved = dir.path().join("elsewhere");
    std::fs::rename(&data, &moved).unwrap();
    let o = bench(&["run", moved.join("s.yaml").to_str().unwrap(), "--quiet"]);
    assert!(stderr(&o).contains("1 cells: 0 finished now, 1 already done"), "{}", stderr(&o));
    // New content at the same path recomputes it, and the stale row is dropped.
    Tensor::full([2, 3, 3], -0.5, (Kind::Double, Device::Cpu)).write_npy(moved.join("mean.npy")).unwrap();
    let o = bench(&["run", moved.join("s.yaml").to_str().unwrap(), "--quiet"]);
    assert!(stderr(&o).contains("1 cells: 1 finished now, 0 already done"), "{}", stderr(&o));
    let second = read_results(&moved.join("out")).unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].cell_hash, first[0].cell_hash);
    assert_ne!(second[0].metric("fd_exact"), first[0].metric("fd_exact"));
}

/// A model that returns NaN for chosen batch rows (with one batch, rows are sample indices).
struct NanRows {
    inner: Box<dyn samplerbench::models::Denoiser>,
    rows: Vec<i64>,
}
impl samplerbench::models::Denoiser for NanRows {
    fn forward(&self, x: &Tensor, t: &Tensor, c: Option<&samplerbench::models::Condition>) -> samplerbench::Result<Tensor> {
        let out = self.inner.forward(x, t, c)?;
        for &r in &self.rows {
            let _ = out.get(r).fill_(f64::NAN);
        }
        Ok(out)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn nan_samples_are_counted_excluded_and_leave_the_other_numbers_alone() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "s.yaml", &small_spec("  - {name: ddim, eta: 0.0, skip: uniform}", 60, 60, "steps: 6\n"));
    let mut plan = plan::load(&spec).unwrap();
    plan.output = dir.path().join("out");
    let mut model = load_model(&plan).unwrap();
    // The same samples without the NaN ones, straight from the sampler.
    let schedule = plan.schedule.noise_schedule().unwrap();
    let sampler = runner::build_sampler(&plan, &plan.cells[0], &schedule).unwrap();
    let clean = sample_batch(plan.seed, model.denoiser.as_ref(), &model, sampler.as_ref(), None, Device::Cpu, 0, 60, None).unwrap().0;
    let keep: Vec<i64> = (0..60).filter(|i| ![7, 41].contains(i)).collect();
    let finite = clean.index_select(0, &Tensor::from_slice(&keep)).view([58, -1]).to_kind(Kind::Double);
    let mut stats = samplerbench::metrics::stats::FeatureStats::new(18, Device::Cpu);
    stats.add_batch(&finite).unwrap();
    let m = stats.moments().unwrap();
    let data = model.data_moments.clone().unwrap();
    let want = samplerbench::metrics::frechet::frechet_distance(m.mu.view(), m.sigma.view(), data.mu.view(), data.sigma.view()).unwrap();

    let inner = std::mem::replace(&mut model.denoiser, Box::new(samplerbench::models::oracle::GaussianOracle::new(schedule.clone(), Tensor::zeros([1], (Kind::Double, Device::Cpu)), Tensor::ones([1], (Kind::Double, Device::Cpu)))));
    model.denoiser = Box::new(NanRows { inner, rows: vec![41, 7] });
    runner::run_with(&plan, &model, &runner::RunOptions { quiet: true, ..Default::default() }).unwrap();
    let row = &read_results(&plan.output).unwrap()[0];
    assert_eq!((row.nan_samples, row.first_nan_index, row.samples), (2, Some(7), 60));
    let got = row.metric("fd_pixel").unwrap();
    assert!((got - want).abs() <= 1e-12 * want.abs(), "fd_pixel {got} vs {want} without the NaN samples");
}

/// A TorchScript model that raises mid-cell (simulated out-of-memory at batch size 5 after its
/// 26th call): one error line, no panic, the checkpoint kept; with the cause fixed (a smaller
/// batch: not part of the cell's identity) the cell resumes and equals an uninterrupted run.
#[test]
fn a_model_failing_mid_cell_ends_with_one_line_and_resumes_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let code = r#"
import sys, torch
class Flaky(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
    def forward(self, x, t):
        self.calls += 1
        if self.calls > 26 and x.size(0) == 5:
            raise RuntimeError("simulated: CUDA out of memory")
        return x * 0.5
torch.jit.script(Flaky()).save(sys.argv[1])
"#;
    let pt = dir.path().join("flaky.pt");
    run_python(code, &[pt.to_str().unwrap()]);
    let body = |batch: u64| {
        format!(
            "name: flaky\nmodel: {{kind: torchscript, path: flaky.pt, shape: [2, 3, 3]}}\nsamplers:\n  - {{name: ddim, eta: 0.0, skip: uniform}}\n\
             steps: 5\nsamples: 60\nbatch_size: {batch}\nseed: 1\ndevice: cpu\nmetrics: {{fd_pixel: {{reference: ref.npz}}}}\nsave_samples: 0\n"
        )
    };
    let reference = samplerbench::metrics::stats::Moments { mu: ndarray::Array1::zeros(18), sigma: ndarray::Array2::eye(18) };
    reference.save_npz(&dir.path().join("ref.npz")).unwrap();
    let spec = write_spec(dir.path(), "s.yaml", &body(5));
    let out = dir.path().join("out");
    let o = bench(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: model failed: cell 0 (ddim eta=0): TorchScript model "), "{err}");
    assert!(err.contains("simulated: CUDA out of memory") && err.contains("rerun the same command to resume"), "{err}");
    let state = std::fs::read_dir(out.join("cells")).unwrap().next().unwrap().unwrap().path().join("part-1-of-1.json");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    assert_eq!(saved["next"], 20, "the checkpoint after 4 batches of 5 is kept");
    // Fixed: batch size 4 (not part of the cell's identity) resumes from sample 20.
    write_spec(dir.path(), "s.yaml", &body(4));
    run_ok(&["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let whole = dir.path().join("whole");
    run_ok(&["run", spec.to_str().unwrap(), "--out", whole.to_str().unwrap(), "--quiet"]);
    let (a, b) = (&read_results(&out).unwrap()[0], &read_results(&whole).unwrap()[0]);
    assert_eq!(a.cell_hash, b.cell_hash);
    let (x, y) = (a.metric("fd_pixel").unwrap(), b.metric("fd_pixel").unwrap());
    assert!((x - y).abs() <= 1e-12 * y.abs(), "resumed {x} vs uninterrupted {y}");
}

/// `run.json` carries what a timing needs to be trusted on a shared machine: the load average at
/// start and end, the thread settings (the binary re-executes itself with passive OpenMP waits),
/// and per cell the spread of seconds per step over its batches (min ≤ q1 ≤ median ≤ q3 ≤ max).
#[test]
fn run_json_records_timing_spread_load_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "s.yaml",
        &small_spec("  - {name: ddim, skip: uniform}\n  - {name: ddpm, skip: uniform}", 12, 4, "steps: 5\n"),
    );
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let cmd = std::process::Command::new(bench_bin())
        .args(["run", spec.to_str().unwrap(), "--out", out_s, "--quiet"])
        .env_remove("OMP_WAIT_POLICY")
        .env_remove("BENCH_NO_REEXEC")
        .output()
        .unwrap();
    assert_eq!(cmd.status.code(), Some(0), "{}", stderr(&cmd));
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    for key in ["load_average_start", "load_average_end"] {
        let l = info[key].as_array().unwrap_or_else(|| panic!("{key}: {info}"));
        assert_eq!(l.len(), 3, "{key}");
        assert!(l.iter().all(|v| v.as_f64().is_some_and(|x| x >= 0.0)), "{key}: {l:?}");
    }
    assert_eq!(info["omp_wait_policy"], "PASSIVE");
    assert!(info["torch_threads"].as_i64().unwrap() >= 1);
    assert_eq!(info["rayon_threads"].as_i64().unwrap(), info["torch_threads"].as_i64().unwrap());
    let cells = info["cell_timing"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    for c in cells {
        // 12 samples in batches of 4.
        assert_eq!(c["batches"], 3, "{c}");
        let q: Vec<f64> = ["min", "q1", "median", "q3", "max"].iter().map(|k| c[format!("seconds_per_step_{k}")].as_f64().unwrap()).collect();
        assert!(q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
        assert_eq!(c["load_average"].as_array().unwrap().len(), 3);
    }
    let rows = read_results(&out).unwrap();
    let hashes: std::collections::BTreeSet<&str> = cells.iter().map(|c| c["cell_hash"].as_str().unwrap()).collect();
    assert_eq!(hashes, rows.iter().map(|r| r.cell_hash.as_str()).collect());
}

/// A 1-channel model with FID: the samples go to the Inception network repeated to three
/// channels (pytorch-fid's `convert('RGB')` of a grayscale file), so the cell's FID equals FID
/// computed on the saved 1-channel PNGs, which the folder reader repeats to RGB: the same uint8
/// images in the same batches give the same features, and the one-part sums the same moments
/// (1e-12 relative leaves room only for LAPACK's square root). `fid_mode` says so. A 2-channel
/// model is refused before anything is sampled.
#[test]
fn a_one_channel_model_gets_fid_on_its_samples_repeated_to_rgb() {
    use samplerbench::metrics::datasets::{open_input, Input};
    use samplerbench::metrics::fid_cli::{self, InceptionExtractor};
    use samplerbench::metrics::inception::FidInception;
    use samplerbench::metrics::stats::Moments;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = crate::metrics_more::random_inception().join("zip.pth");
    let reference = Moments { mu: ndarray::Array1::from_elem(2048, 0.1), sigma: ndarray::Array2::eye(2048) };
    reference.save_npz(&d.join("ref.npz")).unwrap();
    let spec = |shape: &str| {
        format!(
            "name: gray\nmodel:\n  kind: oracle\n  data: {{kind: gaussian, shape: {shape}, mean: 0.1, std: 0.6}}\n\
             samplers: [{{name: ddim, eta: 0.0}}]\nsteps: 2\nsamples: 6\nbatch_size: 6\nseed: 5\ndevice: cpu\n\
             metrics:\n  fid: {{reference: ref.npz, weights: {}, allow_custom_weights: true}}\nsave_samples: all\n",
            weights.display()
        )
    };
    let gray = write_spec(d, "gray.yaml", &spec("[1, 12, 12]"));
    let out = d.join("out");
    run_ok(&["run", gray.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let row = &read_results(&out).unwrap()[0];
    assert_eq!(row.fid_mode.as_deref(), Some("pytorch-fid (grayscale repeated to RGB)"));
    let got = row.metric("fid").unwrap();

    let samples = out.join("samples").join(&row.cell_hash);
    let Input::Images(src) = open_input(samples.to_str().unwrap()).unwrap() else { panic!() };
    assert_eq!((src.len(), src.read_batch(0, 1).unwrap().size()), (6, vec![1, 3, 12, 12]));
    let net = FidInception::load(&weights, Device::Cpu, true).unwrap();
    let ex = InceptionExtractor { net, mode: samplerbench::metrics::ResizeMode::PytorchFid, dims: 2048 };
    let m = fid_cli::source_stats(src.as_ref(), &ex, 6, true).unwrap().moments().unwrap();
    let want = fid_cli::fid_of(&m, &reference).unwrap();
    eprintln!("1-channel cell FID {got} vs the PNGs repeated to RGB {want}");
    assert!(((got - want) / want).abs() < 1e-12, "{got} vs {want}");

    let two = write_spec(d, "two.yaml", &spec("[2, 12, 12]"));
    let o = bench(&["run", two.to_str().unwrap(), "--out", d.join("out2").to_str().unwrap(), "--quiet"]);
    let err = stderr(&o);
    assert_eq!((o.status.code(), err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("metrics.fid needs images with 1 or 3 channels, but model oracle:gaussian[2, 12, 12]") && err.contains("(2 channels)"), "{err}");
    assert!(read_results(&d.join("out2")).unwrap_or_default().is_empty());
}
