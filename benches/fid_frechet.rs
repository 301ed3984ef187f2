//! Benchmark (issue 4, Performance): our Fréchet distance vs pytorch-fid's
//! `calculate_frechet_distance` (scipy `sqrtm`) on the same 2048-d statistics, side by side in
//! one run. Writes the table to reports/perf/fid_frechet.md.
//!
//!     eval "$(./dev env)" && cargo bench --bench fid_frechet
//!
//! The Python reference runs in the managed env ($BENCH_PYTHON) as the comparison only.
use samplerbench::metrics::frechet::trace_sqrt_product_with_path;
use samplerbench::metrics::stats::Moments;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const REFERENCE_PY: &str = r#"
import sys, json, time, warnings, numpy as np, scipy
warnings.filterwarnings("ignore")
from pytorch_fid.fid_score import calculate_frechet_distance
out = sys.argv[1]; res = {"numpy": np.__version__, "scipy": scipy.__version__}
for name, (d, n1, n2, seed) in json.loads(sys.argv[2]).items():
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    X = np.maximum(rng.standard_normal((n1, d)) @ A + 0.3, 0)
    Y = np.maximum(rng.standard_normal((n2, d)) @ A * 1.05 + 0.32, 0)
    m1, s1, m2, s2 = X.mean(0), np.cov(X, rowvar=False), Y.mean(0), np.cov(Y, rowvar=False)
    np.savez(f"{out}/{name}_1.npz", mu=m1, sigma=s1); np.savez(f"{out}/{name}_2.npz", mu=m2, sigma=s2)
    t = time.perf_counter(); fid = calculate_frechet_distance(m1, s1, m2, s2); dt = time.perf_counter() - t
    res[name] = [float(fid), dt]
print(json.dumps(res))
"#;

/// name → (dims, samples 1, samples 2, seed, description)
const CASES: [(&str, usize, usize, usize, u64, &str); 2] = [
    ("full", 2048, 10_000, 10_000, 1, "2048-d, 10k vs 10k samples (full rank)"),
    ("fewer", 2048, 10_000, 1_000, 2, "2048-d, 10k vs 1k samples (second rank 999)"),
];

fn main() {
    let python = std::env::var("BENCH_PYTHON").expect("BENCH_PYTHON (run `eval \"$(./dev env)\"` first)");
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: serde_json::Map<String, serde_json::Value> = CASES
        .iter()
        .map(|(n, d, a, b, s, _)| (n.to_string(), serde_json::json!([d, a, b, s])))
        .collect();
    eprintln!("running pytorch-fid's calculate_frechet_distance (scipy sqrtm) ...");
    let out = Command::new(&python)
        .args(["-c", REFERENCE_PY, dir.path().to_str().expect("utf8 path"), &serde_json::Value::Object(cases).to_string()])
        .env("OMP_NUM_THREADS", std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| "2".into()))
        .output()
        .expect("spawn python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");

    let mut rows = Vec::new();
    for (name, _, _, _, _, what) in CASES {
        let load = |k: u8| Moments::load_npz(&dir.path().join(format!("{name}_{k}.npz"))).expect("stats");
        let (a, b) = (load(1), load(2));
        let mut times = Vec::new();
        let mut fid = 0.0;
        let mut path = None;
        for _ in 0..3 {
            let t = Instant::now();
            let (tr, p) = trace_sqrt_product_with_path(a.sigma.view(), b.sigma.view()).expect("fd");
            let diff = &a.mu - &b.mu;
            fid = diff.dot(&diff) + a.sigma.diag().sum() + b.sigma.diag().sum() - 2.0 * tr;
            times.push(t.elapsed().as_secs_f64());
            path = Some(p);
        }
        times.sort_by(f64::total_cmp);
        let ours = times[1];
        let (want, theirs) = (reference[name][0].as_f64().expect("fid"), reference[name][1].as_f64().expect("time"));
        let rel = ((fid - want) / want).abs();
        eprintln!("{what}: ours {ours:.3} s, pytorch-fid {theirs:.3} s, speedup {:.1}x, rel diff {rel:.2e}", theirs / ours);
        rows.push(format!(
            "| {what} | {theirs:.2} | {ours:.3} | **{:.1}×** | {want:.10} | {fid:.10} | {rel:.1e} | {:?} |",
            theirs / ours,
            path.expect("path")
        ));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let table = format!(
        "# Fréchet distance: samplerbench vs pytorch-fid\n\n\
         Command: `eval \"$(./dev env)\" && cargo bench --bench fid_frechet` (writes this file).\n\n\
         Machine: {cpu}, {threads} hardware threads; samplerbench {} ({}) with system OpenBLAS; \
         reference: pytorch-fid 0.3.0 `calculate_frechet_distance` (scipy {} `sqrtm`, numpy {}) in the same run.\n\
         Times are wall-clock seconds for one distance from (mu, sigma) in memory; ours is the median of 3.\n\n\
         | statistics | pytorch-fid (s) | samplerbench (s) | speedup | FID pytorch-fid | FID samplerbench | rel. diff | factor path |\n\
         |---|---|---|---|---|---|---|---|\n{}\n\n\
         Machine load average at the end (other jobs shared the 2 cores): {}.\n\n\
         Feature-extraction throughput: `cargo bench --bench fid_features` → reports/perf/fid_features.md.\n",
        samplerbench::VERSION,
        // Not GIT_COMMIT: build.rs only re-reads it when build.rs changes.
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
        reference["scipy"].as_str().unwrap_or("?"),
        reference["numpy"].as_str().unwrap_or("?"),
        rows.join("\n"),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/perf/fid_frechet.md");
    std::fs::create_dir_all(report.parent().expect("parent")).expect("mkdir reports/perf");
    std::fs::write(&report, &table).expect("write report");
    print!("{table}");
}
