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
        // Shared seeded fixtures (python/bench_fixtures.py, python/clip_tokenizer_folder.py).
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

/// A Gaussian-oracle run through `bench sample --step-noise`: data N(mean, std²) and `schedule`
/// (YAML) as a spec whose one sampler entry is `entry`, x_T and the step draws (in draw order)
/// in float64, so the trajectory stays float64. Returns the final sample.
pub fn bench_sample_oracle(dir: &std::path::Path, tag: &str, schedule: &str, prediction: &str, (mean, std): (&tch::Tensor, &tch::Tensor), entry: &str, steps: usize, x_t: &tch::Tensor, draws: &[tch::Tensor]) -> tch::Tensor {
    let file = |suffix: &str| dir.join(format!("cli_{tag}_{suffix}"));
    let (spec, x_t_path, npz, out) = (file("spec.yaml"), file("z.npy"), file("noise.npz"), file("x0.npy"));
    mean.to_kind(tch::Kind::Double).write_npy(file("mean.npy")).unwrap();
    std.to_kind(tch::Kind::Double).write_npy(file("std.npy")).unwrap();
    let shape: Vec<String> = mean.size().iter().map(|d| d.to_string()).collect();
    std::fs::write(
        &spec,
        format!(
            "name: t\nmodel: {{kind: oracle, prediction: {prediction}, data: {{kind: gaussian, shape: [{}], mean: cli_{tag}_mean.npy, std: cli_{tag}_std.npy}}}}\n\
             schedule: {schedule}\nsamplers: [{entry}]\nsteps: {steps}\ndevice: cpu\n",
            shape.join(", ")
        ),
    )
    .unwrap();
    x_t.to_kind(tch::Kind::Double).write_npy(&x_t_path).unwrap();
    let named: Vec<(String, tch::Tensor)> = draws.iter().enumerate().map(|(k, t)| (format!("arr_{k}"), t.to_kind(tch::Kind::Double))).collect();
    tch::Tensor::write_npz(&named, &npz).unwrap();
    let o = bench(&["sample", spec.to_str().unwrap(), "--noise", x_t_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--step-noise", npz.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{tag}: {}", stderr(&o));
    let x = tch::Tensor::read_npy(&out).unwrap();
    assert_eq!(x.kind(), tch::Kind::Double, "{tag}");
    x
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small tmpfs mounted on a fresh temporary folder (unmounted on drop): a real full disk, or,
/// after [`Tmpfs::read_only`], a read-only folder that root cannot write either. Needs
/// CAP_SYS_ADMIN (the test machines run as root); a mount failure fails the test.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).output().expect("spawn mount");
        assert!(o.status.success(), "mount -t tmpfs failed (these tests need root): {}", String::from_utf8_lossy(&o.stderr));
        Tmpfs { dir }
    }
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
    /// Remounts it read-only.
    pub fn read_only(self) -> Tmpfs {
        let o = Command::new("mount").args(["-o", "remount,ro"]).arg(self.dir.path()).output().expect("spawn mount");
        assert!(o.status.success(), "remount,ro failed: {}", String::from_utf8_lossy(&o.stderr));
        self
    }
    /// Every name in the folder (recursively), relative to it.
    pub fn files(&self) -> Vec<String> {
        fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

pub use samplerbench::test_rng::seed as seed_torch;

/// Relative L2 error ‖a − b‖ / ‖b‖, in float64.
pub fn rel_err(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    let (a, b) = (a.to_kind(tch::Kind::Double), b.to_kind(tch::Kind::Double));
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}
