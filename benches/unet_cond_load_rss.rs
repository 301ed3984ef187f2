//! Measurement: peak resident memory while loading a Stable Diffusion 1.5-size UNet from an fp16
//! safetensors file for fp16 on the CPU, against the file's size. Writes
//! reports/perf/unet_cond_load_rss.md.
//!
//!     eval "$(./dev env)" && cargo bench --bench unet_cond_load_rss
//!
//! The checkpoint (runwayml SD 1.5's UNet config, seeded random fp16 weights, 1.7 GB) is made
//! once under $SAMPLERBENCH_RSS_DIR (default /tmp/samplerbench-sd15-fp16), never in the repo.
//! Each measurement runs in a fresh child process (this binary with `--child`), whose peak RSS
//! (VmHWM in /proc/self/status) covers only starting up, libtorch's initialisation and the load:
//! one child only initialises libtorch (the baseline), one loads the UNet.
use samplerbench::models::unet_cond;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const MAKE_PY: &str = r#"
import sys, os, torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
d = sys.argv[1]
# runwayml/stable-diffusion-v1-5 unet/config.json (the other keys are the diffusers defaults it lists)
cfg = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
           layers_per_block=2, cross_attention_dim=768, attention_head_dim=8)
with torch.device("meta"):
    unet = UNet2DConditionModel(**cfg)
g = torch.Generator().manual_seed(0)
sd = {k: (torch.randn(v.shape, generator=g) * 0.02).half() for k, v in unet.state_dict().items()}
os.makedirs(d, exist_ok=True)
save_file(sd, os.path.join(d, "diffusion_pytorch_model.fp16.safetensors"))
unet.save_config(d)
print(sum(v.numel() for v in sd.values()))
"#;

/// VmHWM and VmRSS of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn child(what: &str, dir: &Path) {
    let start = Instant::now();
    // Measured while the loaded network is alive.
    let report = |params: i64| {
        let (hwm, rss) = memory();
        println!("{hwm} {rss} {params} {:.2}", start.elapsed().as_secs_f64());
    };
    if what == "load" {
        let unet = unet_cond::load(dir, Device::Cpu, Kind::Half).expect("load");
        let s = unet.weight_stats();
        assert_eq!(s.kinds, ["Half"]);
        report(s.parameters);
    } else {
        // libtorch initialised and an op run, nothing loaded.
        let _ = Tensor::ones([16], (Kind::Half, Device::Cpu)).sum(Kind::Float).double_value(&[]);
        report(0);
    }
}

fn run_child(what: &str, dir: &Path) -> (u64, u64, i64, f64) {
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(exe).args(["--child", what, dir.to_str().expect("utf8")]).output().expect("spawn");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = s.split_whitespace().collect();
    (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 4 && args[1] == "--child" {
        child(&args[2], Path::new(&args[3]));
        return;
    }
    let dir = PathBuf::from(std::env::var("SAMPLERBENCH_RSS_DIR").unwrap_or_else(|_| "/tmp/samplerbench-sd15-fp16".into()));
    let file = dir.join("diffusion_pytorch_model.fp16.safetensors");
    if !file.is_file() {
        let python = std::env::var("BENCH_PYTHON").expect("BENCH_PYTHON (run `eval \"$(./dev env)\"` first)");
        eprintln!("writing a random SD 1.5-size fp16 UNet to {} ...", dir.display());
        let out = Command::new(python).args(["-c", MAKE_PY, dir.to_str().expect("utf8")]).output().expect("python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let size = std::fs::metadata(&file).expect("file").len();
    let (base_hwm, _, _, _) = run_child("baseline", &dir);
    let (hwm, rss, params, secs) = run_child("load", &dir);
    let gb = |b: u64| b as f64 / 1e9;
    let ratio = hwm as f64 / size as f64;
    eprintln!("file {:.3} GB, peak RSS {:.3} GB ({ratio:.3}×), baseline {:.3} GB", gb(size), gb(hwm), gb(base_hwm));
    let md = format!(
        "# Loading an SD 1.5-size UNet in fp16: peak memory\n\n\
         Command: `eval \"$(./dev env)\" && cargo bench --bench unet_cond_load_rss` (writes this file).\n\n\
         A random-weight UNet2DConditionModel with runwayml SD 1.5's config ({params} parameters), saved as\n\
         `diffusion_pytorch_model.fp16.safetensors` in {dir}, loaded by `models::unet_cond::load(dir, Cpu, Half)`\n\
         in a fresh process; peak RSS is that process's VmHWM after the load (start-up, libtorch, load).\n\
         The loader reads the safetensors header, then each tensor's bytes into its own fp16 tensor (no mmap,\n\
         no fp32 copy), so the peak is the weights plus libtorch's fixed footprint plus one tensor.\n\n\
         | quantity | value |\n|---|---|\n\
         | file size | {:.3} GB |\n\
         | peak RSS, loading (VmHWM) | {:.3} GB |\n\
         | **peak RSS / file size** | **{ratio:.3}** (goal < 1.3) |\n\
         | RSS after the load, network held (VmRSS) | {:.3} GB |\n\
         | baseline peak RSS (libtorch initialised, nothing loaded) | {:.3} GB |\n\
         | load time | {secs:.1} s |\n",
        gb(size),
        gb(hwm),
        gb(rss),
        gb(base_hwm),
        dir = dir.display(),
    );
    std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/perf/unet_cond_load_rss.md"), &md).expect("write");
    print!("{md}");
}
