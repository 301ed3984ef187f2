//! Benchmark (issue 4, Performance): FID feature extraction images/s, samplerbench vs pytorch-fid
//! with the same (seeded random) weights, images and batch size, side by side in one run, on
//! the CPU (and on CUDA when both sides have one). Appends its table to reports/perf/fid_features.md.
//!
//!     eval "$(./dev env)" && cargo bench --bench fid_features [-- IMAGES BATCH]
//!
//! Both sides include PNG decoding; neither includes building/loading the network.
use samplerbench::metrics::datasets::ImageFolder;
use samplerbench::metrics::fid_cli::{source_stats, InceptionExtractor};
use samplerbench::metrics::inception::FidInception;
use samplerbench::metrics::ResizeMode;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::Device;

const REFERENCE_PY: &str = r#"
import sys, os, json, time, warnings, numpy as np, torch
warnings.filterwarnings("ignore")
from PIL import Image
import pytorch_fid.fid_score as fs
sys.path.insert(0, sys.argv[5])
from bench_fixtures import random_fid_inception, pytorch_fid_model
d, n, batch, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
net = random_fid_inception(seed=0)
torch.save(net.state_dict(), d + "/w.pth", _use_new_zipfile_serialization=False)
os.makedirs(d + "/imgs", exist_ok=True)
rng = np.random.default_rng(0)
for i in range(n):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(f"{d}/imgs/{i:05d}.png")
model = pytorch_fid_model(net, [3]).to(device).eval()
files = sorted(f"{d}/imgs/{f}" for f in os.listdir(d + "/imgs"))
workers = min(len(os.sched_getaffinity(0)), 8)
fs.calculate_activation_statistics(files[:batch], model, batch, 2048, device, workers)  # warm-up
t = time.perf_counter()
mu, sigma = fs.calculate_activation_statistics(files, model, batch, 2048, device, workers)
dt = time.perf_counter() - t
np.save(d + "/mu.npy", mu)
print(json.dumps({"seconds": dt, "threads": torch.get_num_threads(), "workers": workers, "torch": torch.__version__}))
"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let n: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(200);
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let python = std::env::var("BENCH_PYTHON").expect("BENCH_PYTHON (run `eval \"$(./dev env)\"` first)");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    let mut rows = Vec::new();
    for device in devices {
        let dev_name = if device.is_cuda() { "cuda" } else { "cpu" };
        eprintln!("pytorch-fid on {dev_name}: {n} images, batch {batch} ...");
        let out = Command::new(&python)
            .args(["-c", REFERENCE_PY, d.to_str().expect("utf8"), &n.to_string(), &batch.to_string(), dev_name, concat!(env!("CARGO_MANIFEST_DIR"), "/python")])
            .output()
            .expect("spawn python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reference: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let theirs = reference["seconds"].as_f64().expect("seconds");

        let net = FidInception::load(&d.join("w.pth"), device, true).expect("weights");
        let ex = InceptionExtractor { net, mode: ResizeMode::PytorchFid, dims: 2048 };
        let folder = ImageFolder::open(&d.join("imgs")).expect("images");
        let warm = ImageFolder::open(&d.join("imgs")).expect("images");
        let _ = source_stats(&TakeFirst(&warm, batch), &ex, batch, true).expect("warm-up");
        let t = Instant::now();
        let stats = source_stats(&folder, &ex, batch, true).expect("features");
        let ours = t.elapsed().as_secs_f64();
        let mu = stats.moments().expect("moments").mu;
        let want: ndarray::Array1<f64> = ndarray_npy::read_npy(d.join("mu.npy")).expect("mu");
        let rel = (&mu - &want).iter().fold(0.0_f64, |m, v| m.max(v.abs())) / want.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let (ips_ours, ips_theirs) = (n as f64 / ours, n as f64 / theirs);
        eprintln!("mu max |want| {:.3e}", want.iter().fold(0.0_f64, |m, v| m.max(v.abs())));
        eprintln!("{dev_name}: ours {ips_ours:.2} img/s, pytorch-fid {ips_theirs:.2} img/s ({:.2}x), mu rel diff {rel:.1e}", ips_ours / ips_theirs);
        rows.push(format!(
            "| {dev_name} | {n} | {batch} | {ips_theirs:.2} | {ips_ours:.2} | **{:.2}×** | {rel:.1e} |",
            ips_ours / ips_theirs
        ));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let table = format!(
        "# FID feature extraction: samplerbench vs pytorch-fid\n\n\
         Command: `eval \"$(./dev env)\" && cargo bench --bench fid_features -- {n} {batch}` (writes this file).\n\n\
         32×32 PNG images (decoded by both), `--mode pytorch-fid`, 2048-d, same seeded random weights;\n\
         pytorch-fid 0.3.0 `calculate_activation_statistics` (its DataLoader workers = CPU count) vs\n\
         samplerbench `source_stats` (decode on a prefetch thread + rayon). Both after one warm-up batch.\n\
         Machine load average at the end: {}.\n\n\
         | device | images | batch | pytorch-fid img/s | samplerbench img/s | speedup | mu max rel diff |\n\
         |---|---|---|---|---|---|---|\n{}\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        rows.join("\n")
    );
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/perf/fid_features.md");
    std::fs::write(&report, &table).expect("write report");
    print!("{table}");
}

/// The first `k` images of a source (warm-up).
struct TakeFirst<'a>(&'a ImageFolder, usize);

impl samplerbench::metrics::datasets::ImageSource for TakeFirst<'_> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn len(&self) -> usize {
        self.1.min(self.0.len())
    }
    fn image_size(&self) -> (usize, usize) {
        self.0.image_size()
    }
    fn read_batch(&self, start: usize, count: usize) -> samplerbench::Result<tch::Tensor> {
        self.0.read_batch(start, count.min(self.len() - start))
    }
}
