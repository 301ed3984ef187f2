//! Shared test helpers: the `bench` binary and the Python reference environment.
use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of the built `bench` binary (cargo builds it for integration tests).
pub fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bench"))
}

pub fn bench(args: &[&str]) -> Output {
    Command::new(bench_bin()).args(args).output().expect("spawn bench")
}

/// The managed Python reference environment (`./dev` sets BENCH_PYTHON). The oracle tests are
/// not optional: a missing interpreter is a test failure, not a skip.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BENCH_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("SAMPLERBENCH_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/samplerbench"));
    let p = home.join("venv/bin/python");
    assert!(p.exists(), "reference Python env missing at {} (run ./dev setup)", p.display());
    p
}

/// Run a Python snippet in the reference env with `args` as sys.argv[1:]; panics with its
/// stderr on failure and returns its stdout.
pub fn run_python(code: &str, args: &[&str]) -> String {
    // From a file, not `-c`: torch.jit.script and inspect need the snippet's source.
    let script = tempfile::Builder::new().suffix(".py").tempfile().expect("temp file");
    std::fs::write(script.path(), code).expect("write the snippet");
    let out = Command::new(python())
        .arg(script.path())
        .args(args)
        .env("PYTHONHASHSEED", "0")
        // Shared seeded fixtures (python/bench_fixtures.py).
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        .env("OMP_NUM_THREADS", "2")
        .output()
        .expect("spawn python");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
