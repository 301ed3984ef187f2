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
