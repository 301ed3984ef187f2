//! `bench check`: the regression gate passes on its own baseline and fails, naming the cell,
//! on a worse metric, a changed NFE or a missing cell; improvements pass unless asked not to.
use crate::common::*;
use std::path::Path;

const SPEC: &str = "name: gate\nmodel:\n  kind: oracle\n  data: {kind: gaussian, shape: [2, 2, 2], mean: 0.1, std: [0.3, 0.9]}\n\
samplers:\n  - {name: ddim, eta: [0.0, 1.0], skip: uniform}\nsteps: 5\nsamples: 300\nbatch_size: 100\nseed: 3\n\
device: cpu\nmetrics:\n  fd_pixel: {}\n  fd_exact: {}\nsave_samples: 0\noutput: out\n";

fn check(dir: &Path, extra: &[&str]) -> std::process::Output {
    let spec = dir.join("gate.yaml");
    let baseline = dir.join("baseline.json");
    let mut args = vec!["check", spec.to_str().unwrap(), "--baseline", baseline.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    bench(&args)
}

fn edit_baseline(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("baseline.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gate.yaml"), SPEC).unwrap();
    let out = check(dir.path(), &["--update-baseline"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    dir
}

#[test]
fn the_gate_passes_on_its_own_baseline_and_updates_deterministically() {
    let dir = setup();
    let first = std::fs::read_to_string(dir.path().join("baseline.json")).unwrap();
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "check [cpu-fp32]: 4 ok, 0 improved, 0 regressed, 0 NFE changed, 0 missing, 0 new: passed\n");
    // Rewriting the baseline from the same results gives the same bytes (reviewable diffs).
    assert_eq!(check(dir.path(), &["--update-baseline"]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(dir.path().join("baseline.json")).unwrap(), first);
    assert!(first.contains("\"cell\": \"ddim eta=0 skip=uniform S=5\""), "{first}");
}

#[test]
fn a_worse_metric_fails_with_exit_1_and_names_the_cell() {
    let dir = setup();
    // A deliberately better baseline: the current run is then a regression of the η=1 cell.
    edit_baseline(dir.path(), |v| {
        let cell = &mut v["classes"]["cpu-fp32"][1];
        assert_eq!(cell["cell"], "ddim eta=1 skip=uniform S=5");
        let fd = cell["metrics"]["fd_exact"].as_f64().unwrap();
        cell["metrics"]["fd_exact"] = serde_json::json!(fd * 0.9);
    });
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let s = stdout(&out);
    let line = s.lines().find(|l| l.contains("REGRESSED")).unwrap_or_else(|| panic!("{s}"));
    assert!(line.starts_with("| ddim eta=1 skip=uniform S=5 | fd_exact | "), "{line}");
    assert!(s.ends_with("check [cpu-fp32]: 3 ok, 0 improved, 1 regressed, 0 NFE changed, 0 missing, 0 new: FAILED\n"), "{s}");
    assert!(stderr(&out).contains("regression gate failed"), "{}", stderr(&out));
    // A tolerance wide enough (11% of the baseline) lets it pass.
    assert_eq!(check(dir.path(), &["--tolerance-rel", "0.12"]).status.code(), Some(0));
}

#[test]
fn improvements_pass_unless_asked_to_fail_and_nfe_or_missing_cells_fail() {
    let dir = setup();
    edit_baseline(dir.path(), |v| {
        let cell = &mut v["classes"]["cpu-fp32"][0];
        let fd = cell["metrics"]["fd_pixel"].as_f64().unwrap();
        cell["metrics"]["fd_pixel"] = serde_json::json!(fd * 2.0);
    });
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("| fd_pixel | ") && stdout(&out).contains("| improved |"), "{}", stdout(&out));
    assert_eq!(check(dir.path(), &["--fail-on-improvement"]).status.code(), Some(1));

    edit_baseline(dir.path(), |v| v["classes"]["cpu-fp32"][0]["nfe"] = serde_json::json!(6));
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("| ddim eta=0 skip=uniform S=5 | nfe | 6.000000e0 | 5.000000e0 | -1.000e0 | 0.000000e0 | NFE CHANGED |"), "{}", stdout(&out));

    edit_baseline(dir.path(), |v| {
        let cells = v["classes"]["cpu-fp32"].as_array_mut().unwrap();
        let mut extra = cells[1].clone();
        extra["cell"] = serde_json::json!("ddim eta=0.5 skip=uniform S=5");
        extra["cell_hash"] = serde_json::json!("0000");
        cells.push(extra);
    });
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("| ddim eta=0.5 skip=uniform S=5 | - | - | - | - | - | MISSING |"), "{}", stdout(&out));
}

#[test]
fn a_missing_baseline_is_a_user_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gate.yaml"), SPEC).unwrap();
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("create it with `bench check SPEC --baseline FILE --update-baseline`"), "{}", stderr(&out));
}

/// The network gate's tolerance is wide enough for another CPU (emulated here: oneDNN and MKL
/// limited to AVX kernels and one thread, where this machine uses AVX2 and two) and narrow enough that a
/// slightly worse model fails: its FID moves by far more than the tolerance, and its cells no
/// longer match the baseline's (their inputs changed).
#[test]
fn the_network_gate_tolerates_another_cpu_and_fails_a_worse_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = d.join("w");
    let made = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/make_ci_weights.py"))
        .arg(&w)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    // The gate's inputs are the same bits on any CPU: rebuild them under emulated other ones.
    let again = d.join("w2");
    let made = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/make_ci_weights.py"))
        .arg(&again)
        .envs([
            ("ATEN_CPU_CAPABILITY", "default"),
            ("OMP_NUM_THREADS", "1"),
            ("OPENBLAS_CORETYPE", "Sandybridge"),
            ("ONEDNN_MAX_CPU_ISA", "AVX"),
            ("MKL_ENABLE_INSTRUCTIONS", "AVX"),
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    for f in ["inception.pth", "reference_stats.npz", "unet/diffusion_pytorch_model.safetensors", "unet/config.json"] {
        assert!(std::fs::read(w.join(f)).unwrap() == std::fs::read(again.join(f)).unwrap(), "{f} differs on an emulated other CPU");
    }
    let spec = format!(
        "name: gate\nmodel: {{kind: diffusers, path: w/unet}}\nsamplers: [{{name: ddim, eta: 0.0, skip: uniform}}]\nsteps: 3\nsamples: 24\nbatch_size: 24\n\
         device: cpu\nmetrics: {{fid: {{reference: w/reference_stats.npz, weights: w/inception.pth, allow_custom_weights: true}}}}\nsave_samples: 0\n"
    );
    std::fs::write(d.join("gate.yaml"), &spec).unwrap();
    let gate = |out: &str, envs: &[(&str, &str)], extra: &[&str]| {
        let mut c = std::process::Command::new(bench_bin());
        c.args(["check", d.join("gate.yaml").to_str().unwrap(), "--baseline", d.join("b.json").to_str().unwrap(), "--out", d.join(out).to_str().unwrap(), "--quiet"]);
        c.args(extra).envs(envs.iter().copied());
        c.output().unwrap()
    };
    assert_eq!(gate("base", &[], &["--update-baseline"]).status.code(), Some(0));
    let other = gate("other", &[("ONEDNN_MAX_CPU_ISA", "AVX"), ("MKL_ENABLE_INSTRUCTIONS", "AVX"), ("OMP_NUM_THREADS", "1")], &[]);
    assert_eq!(other.status.code(), Some(0), "{}", stdout(&other));
    let fid = |out: &str| samplerbench::results::read_results(&d.join(out)).unwrap()[0].metric("fid").unwrap();
    let (base, emulated) = (fid("base"), fid("other"));
    let tol = samplerbench::metrics::column("fid").unwrap().tolerance.rel;
    eprintln!("gate FID: this CPU {base:.9e}, emulated other CPU {emulated:.9e} (rel {:.2e}, tolerance {tol:e})", ((emulated - base) / base).abs());
    // A worse model: the UNet's output layer 2% off. Against the gate's synthetic reference
    // statistics FID is mostly the samples' own mean and spread, so it moves by a few tolerances
    // (5e-4 measured), not by orders of magnitude; the gate fails it anyway: its inputs changed.
    let perturb = r#"
import sys
from safetensors.torch import load_file, save_file
p = sys.argv[1] + "/diffusion_pytorch_model.safetensors"
sd = load_file(p); sd["conv_out.weight"] = sd["conv_out.weight"] * 1.02; save_file(sd, p)
"#;
    run_python(perturb, &[w.join("unet").to_str().unwrap()]);
    let worse = gate("worse", &[], &[]);
    assert_eq!(worse.status.code(), Some(1), "{}", stdout(&worse));
    assert!(stdout(&worse).contains("| MISSING |") && stdout(&worse).contains("new (not in baseline)"), "{}", stdout(&worse));
    let moved = ((fid("worse") - base) / base).abs();
    assert!(moved > 3.0 * tol, "a 2% worse output layer moved FID by only {moved:.2e} (tolerance {tol:e})");
}
