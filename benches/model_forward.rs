//! Benchmark (issue 5, Performance): images/s of one UNet forward on the CIFAR10 DDPM config
//! (35.7M parameters, 12.44 GFLOP per 32×32 forward), samplerbench's tch UNet vs diffusers'
//! UNet2DModel in eager PyTorch, same seeded random weights, same inputs, same batch sizes,
//! side by side in one run. Writes reports/perf/model_forward.md.
//!
//!     eval "$(./dev env)" && cargo bench --bench model_forward [-- BATCH ...]
//!
//! Both sides: inference mode, fp32, libtorch's own thread count; the median of several timed
//! forwards after a warm-up forward.
use samplerbench::models::unet::load_diffusers;
use samplerbench::models::Denoiser;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const REFERENCE_PY: &str = r#"
import sys, json, time, torch
from diffusers import UNet2DModel
d, batches = sys.argv[1], [int(b) for b in sys.argv[2].split(",")]
torch.manual_seed(0)
unet = UNet2DModel(sample_size=32, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                   down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                   attention_head_dim=None, norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False,
                   freq_shift=1).eval()
unet.save_pretrained(d + "/unet")
out = {}
with torch.inference_mode():
    for b in batches:
        x, t = torch.randn(b, 3, 32, 32), torch.full((b,), 500.0)
        unet(x, t)
        times = []
        for _ in range(3):
            s = time.perf_counter(); unet(x, t); times.append(time.perf_counter() - s)
        out[b] = sorted(times)[1]
print(json.dumps({"seconds": out, "threads": torch.get_num_threads(), "torch": torch.__version__}))
"#;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let batches = if args.is_empty() { vec![1, 16, 64] } else { args };
    let python = std::env::var("BENCH_PYTHON").expect("BENCH_PYTHON (run `eval \"$(./dev env)\"` first)");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let list = batches.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",");
    eprintln!("diffusers UNet2DModel, batches {list} ...");
    let out = Command::new(&python).args(["-c", REFERENCE_PY, d.to_str().expect("utf8"), &list]).output().expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let unet = load_diffusers(&d.join("unet"), Device::Cpu, Kind::Float).expect("unet");
    let mut rows = vec![];
    for &b in &batches {
        let x = Tensor::randn([b as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
        let t = Tensor::full([b as i64], 500.0, (Kind::Double, Device::Cpu));
        let _ = Denoiser::forward(&unet, &x, &t, None);
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let s = Instant::now();
                let _ = Denoiser::forward(&unet, &x, &t, None);
                s.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let ours = times[1];
        let theirs = reference["seconds"][b.to_string()].as_f64().expect("seconds");
        let (ips_ours, ips_theirs) = (b as f64 / ours, b as f64 / theirs);
        let gflops = ips_ours * 12.44;
        eprintln!("batch {b}: ours {ips_ours:.1} img/s, diffusers {ips_theirs:.1} img/s ({:.2}x)", ips_ours / ips_theirs);
        rows.push(format!("| cpu | {b} | {ips_theirs:.2} | {ips_ours:.2} | **{:.2}×** | {gflops:.0} |", ips_ours / ips_theirs));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let table = format!(
        "# UNet forward: samplerbench vs diffusers UNet2DModel (eager PyTorch)\n\n\
         Command: `eval \"$(./dev env)\" && cargo bench --bench model_forward -- {}` (writes this file).\n\n\
         CIFAR10 DDPM config (35.7M parameters, 12.44 GFLOP per forward), fp32, same seeded random weights,\n\
         diffusers {} / torch {} with {} threads vs samplerbench on the same libtorch; median of 3 forwards\n\
         after one warm-up. Machine load average at the end: {}.\n\n\
         | device | batch | diffusers img/s | samplerbench img/s | speedup | samplerbench GFLOP/s |\n\
         |---|---|---|---|---|---|\n{}\n",
        batches.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" "),
        "0.42.1",
        reference["torch"].as_str().unwrap_or("?"),
        reference["threads"],
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        rows.join("\n")
    );
    std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/perf/model_forward.md"), &table).expect("write");
    print!("{table}");
}
