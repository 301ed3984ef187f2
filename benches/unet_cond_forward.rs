//! Benchmark: one UNet2DConditionModel forward on the CPU, samplerbench's tch network vs
//! diffusers' eager PyTorch, same seeded random weights, same inputs, same precision and thread
//! count, side by side in one run. Writes reports/perf/unet_cond_forward.md.
//!
//!     eval "$(./dev env)" && cargo bench --bench unet_cond_forward [-- BATCH ...]
//!
//! Config: Stable Diffusion 1.x's UNet at half width (block_out_channels 160/320/640/640, 8
//! heads, 2 layers per block, 768-wide text states, 77 tokens) on 32×32 latents (a 256-px image):
//! SD's structure at a cost that runs in seconds on two cores. Both sides: fp32, 2 intra-op
//! threads, no autograd; the median of 5 timed forwards after one warm-up forward, in two
//! alternating rounds (diffusers, samplerbench, diffusers, samplerbench), the faster round of each.
use samplerbench::models::unet_cond;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const THREADS: i32 = 2;
const REPEATS: usize = 5;

const REFERENCE_PY: &str = r#"
import sys, json, time, torch
from diffusers import UNet2DConditionModel
d, batches, threads, repeats = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
if sys.argv[5] == "create":
    unet = UNet2DConditionModel(sample_size=32, block_out_channels=(160, 320, 640, 640), layers_per_block=2,
                                cross_attention_dim=768, attention_head_dim=8).eval()
    unet.save_pretrained(d + "/unet")
else:
    unet = UNet2DConditionModel.from_pretrained(d + "/unet").eval()
out = {}
with torch.inference_mode():
    for b in batches:
        x, t, ehs = torch.randn(b, 4, 32, 32), torch.full((b,), 500.0), torch.randn(b, 77, 768)
        unet(x, t, ehs)
        times = []
        for _ in range(repeats):
            s = time.perf_counter(); unet(x, t, ehs); times.append(time.perf_counter() - s)
        out[b] = sorted(times)[len(times) // 2]
params = sum(p.numel() for p in unet.parameters())
print(json.dumps({"seconds": out, "threads": torch.get_num_threads(), "torch": torch.__version__, "params": params}))
"#;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let batches = if args.is_empty() { vec![1, 2] } else { args };
    let python = std::env::var("BENCH_PYTHON").expect("BENCH_PYTHON (run `eval \"$(./dev env)\"` first)");
    tch::set_num_threads(THREADS);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let list = batches.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",");
    // Two rounds, diffusers then samplerbench each time, and the faster round of each: on a
    // shared machine this cancels load that drifts during the run.
    let reference_round = |mode: &str| -> serde_json::Value {
        eprintln!("diffusers UNet2DConditionModel ({mode}), batches {list} ...");
        let out = Command::new(&python)
            .args(["-c", REFERENCE_PY, d.to_str().expect("utf8"), &list, &THREADS.to_string(), &REPEATS.to_string(), mode])
            .output()
            .expect("python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let reference = reference_round("create");
    let unet = unet_cond::load(&d.join("unet"), Device::Cpu, Kind::Float).expect("unet");
    assert_eq!(Some(unet.weight_stats().parameters), reference["params"].as_i64(), "same network");
    let ours_round = || -> Vec<f64> {
        batches
            .iter()
            .map(|&b| {
                let b64 = b as i64;
                let x = Tensor::randn([b64, 4, 32, 32], (Kind::Float, Device::Cpu));
                let t = Tensor::full([b64], 500.0, (Kind::Double, Device::Cpu));
                let ehs = Tensor::randn([b64, 77, 768], (Kind::Float, Device::Cpu));
                let run = || unet.forward(&x, &t, &ehs, None).expect("forward");
                let _ = run();
                let mut times: Vec<f64> = (0..REPEATS)
                    .map(|_| {
                        let s = Instant::now();
                        let _ = run();
                        s.elapsed().as_secs_f64()
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                times[REPEATS / 2]
            })
            .collect()
    };
    let ours1 = ours_round();
    let reference2 = reference_round("load");
    let ours2 = ours_round();
    let mut rows = vec![];
    for (i, &b) in batches.iter().enumerate() {
        let theirs_each = [&reference, &reference2].map(|r| r["seconds"][b.to_string()].as_f64().expect("seconds"));
        let theirs = theirs_each[0].min(theirs_each[1]);
        let ours = ours1[i].min(ours2[i]);
        eprintln!(
            "batch {b}: ours {:.3}/{:.3} s, diffusers {:.3}/{:.3} s (ours/theirs {:.2})",
            ours1[i], ours2[i], theirs_each[0], theirs_each[1], ours / theirs
        );
        rows.push(format!(
            "| cpu | fp32 | {b} | {theirs:.3} ({:.3}, {:.3}) | {ours:.3} ({:.3}, {:.3}) | **{:.2}** |",
            theirs_each[0], theirs_each[1], ours1[i], ours2[i], ours / theirs
        ));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let table = format!(
        "# UNet2DConditionModel forward: samplerbench vs diffusers (eager PyTorch)\n\n\
         Command: `eval \"$(./dev env)\" && cargo bench --bench unet_cond_forward -- {}` (writes this file).\n\n\
         Stable Diffusion 1.x's UNet at half width ({:.0}M parameters: block_out_channels 160/320/640/640, 8 heads,\n\
         2 layers per block, cross-attention to 77×768 text states) on 32×32 latents; same seeded random weights.\n\
         diffusers 0.42.1 / torch {} in `torch.inference_mode()` with {} threads vs samplerbench (tch, same libtorch,\n\
         `tch::set_num_threads({THREADS})`); seconds per forward: median of {REPEATS} after one warm-up, in two\n\
         alternating rounds (diffusers, samplerbench, diffusers, samplerbench); the table shows the faster\n\
         round (both rounds in parentheses).\n\
         Goal: samplerbench/diffusers ≤ 1.10. Machine: {} cores shared with other jobs; load average at the end: {}.\n\n\
         | device | precision | batch | diffusers s (rounds) | samplerbench s (rounds) | samplerbench / diffusers |\n\
         |---|---|---|---|---|---|\n{}\n",
        batches.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" "),
        reference["params"].as_f64().unwrap_or(0.0) / 1e6,
        reference["torch"].as_str().unwrap_or("?"),
        reference["threads"],
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        rows.join("\n")
    );
    std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/perf/unet_cond_forward.md"), &table).expect("write");
    print!("{table}");
}
