//! The native UNet against diffusers' UNet2DModel: same seeded random weights in every layout.
use crate::common::*;
use samplerbench::models::torchscript::TorchScriptModel;
use samplerbench::models::unet::{self, load_ddim, DdimModelConfig};
use samplerbench::models::Denoiser;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn reference(which: &str) -> (tempfile::TempDir, Tensor, Tensor, Tensor) {
    let dir = tempfile::tempdir().unwrap();
    let script = include_str!("py/unet_ref.py");
    run_python(script, &[dir.path().to_str().unwrap(), which]);
    let load = |f: &str| Tensor::read_npy(dir.path().join(f)).unwrap();
    let (x, t, eps) = (load("x.npy"), load("t.npy"), load("eps.npy"));
    (dir, x, t, eps)
}

fn check_all_layouts(which: &str) {
    let (dir, x, t, eps) = reference(which);
    let p = |f: &str| dir.path().join(f);
    let ddim_cfg: DdimModelConfig =
        serde_json::from_str(&std::fs::read_to_string(p("ddim_config.json")).unwrap()).unwrap();
    let mut errs = vec![];
    let mut check = |name: &str, model: &dyn Denoiser| {
        let e = rel_err(&model.forward(&x, &t, None).unwrap(), &eps);
        errs.push(format!("{name}: {e:.2e}"));
        assert!(e <= 1e-4, "{which} {name}: relative L2 error {e}");
    };
    check("diffusers safetensors", &unet::load(&p("diffusers_st"), Device::Cpu, Kind::Float).unwrap());
    check("diffusers .bin (old attention names)", &unet::load(&p("diffusers_bin"), Device::Cpu, Kind::Float).unwrap());
    check("ddim state dict (zip)", &load_ddim(&p("ddim_plain.ckpt"), &ddim_cfg, true, Device::Cpu, Kind::Float).unwrap());
    check("ddim [model,...,ema] list (legacy)", &load_ddim(&p("ddim_list.pth"), &ddim_cfg, true, Device::Cpu, Kind::Float).unwrap());
    check("torchscript", &TorchScriptModel::load(&p("traced.pt"), Device::Cpu, Kind::Float).unwrap());
    // The non-EMA entry of the list holds other weights: selecting it must change ε.
    let raw = load_ddim(&p("ddim_list.pth"), &ddim_cfg, false, Device::Cpu, Kind::Float).unwrap();
    let raw_err = rel_err(&Denoiser::forward(&raw, &x, &t, None).unwrap(), &eps);
    assert!(raw_err > 1e-2, "non-EMA weights gave the EMA result: {raw_err}");
    eprintln!("{which}: {}", errs.join(", "));
}

#[test]
fn cifar10_unet_matches_diffusers_in_every_layout() {
    check_all_layouts("cifar10");
}

#[test]
fn unet_256px_layout_matches_diffusers() {
    check_all_layouts("256");
}

#[test]
fn bad_checkpoints_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DdimModelConfig::preset("cifar10").unwrap();
    // A state dict of the wrong architecture (the celeba preset's weights for the cifar10 config).
    run_python(
        "import torch,sys; torch.save({'conv_in.weight': torch.zeros(128,3,3,3), 'temb.dense.0.weight': torch.zeros(5,5)}, sys.argv[1])",
        &[dir.path().join("wrong.ckpt").to_str().unwrap()],
    );
    let err = load_ddim(&dir.path().join("wrong.ckpt"), &cfg, true, Device::Cpu, Kind::Float).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("weights do not match the UNet config; missing keys: conv_in.bias, "), "{msg}");
    assert!(msg.contains("wrong shapes: time_embedding.linear_1.weight (file [5, 5], expected [512, 128])"), "{msg}");
    assert_eq!(err.exit_code(), 2);
    // Truncated file.
    let full = dir.path().join("full.ckpt");
    run_python("import torch,sys; torch.save({'a': torch.ones(1000)}, sys.argv[1])", &[full.to_str().unwrap()]);
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.ckpt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_ddim(&cut, &cfg, true, Device::Cpu, Kind::Float).err().unwrap();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().starts_with(&format!("{}: ", cut.display())), "{err}");
    // Missing folder / file.
    let err = unet::load(Path::new("/nonexistent/ddpm-cifar10-32"), Device::Cpu, Kind::Float).err().unwrap();
    assert_eq!(
        err.to_string(),
        "/nonexistent/ddpm-cifar10-32: diffusers model folder not found (expected config.json + diffusion_pytorch_model.safetensors)"
    );
}

/// DDIM 10 steps through `bench sample` with a random-weight UNet equals a diffusers
/// UNet2DModel + DDIMScheduler loop from the same initial noise.
#[test]
fn ddim_sampling_with_the_unet_matches_a_diffusers_pipeline_loop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(
        r#"
import sys, os, numpy as np, torch
from diffusers import UNet2DModel, DDIMScheduler
out = sys.argv[1]
torch.manual_seed(1)
unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None, norm_eps=1e-6,
                   downsample_padding=0, flip_sin_to_cos=False, freq_shift=1).eval()
unet.save_pretrained(os.path.join(out, "unet"))
sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
sched.set_timesteps(10)
x = torch.randn(3, 3, 16, 16)
np.save(os.path.join(out, "xT.npy"), x.numpy())
with torch.no_grad():
    for t in sched.timesteps:
        x = sched.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
np.save(os.path.join(out, "x0_ref.npy"), x.numpy())
print(" ".join(str(int(t)) for t in sched.timesteps))
"#,
        &[d.to_str().unwrap()],
    );
    let spec = d.join("spec.yaml");
    std::fs::write(
        &spec,
        "name: e2e\nmodel: {kind: diffusers, path: unet}\nsamplers:\n  - {name: ddim}\nsteps: 10\ndevice: cpu\n",
    )
    .unwrap();
    let out = bench(&[
        "sample",
        spec.to_str().unwrap(),
        "--noise",
        d.join("xT.npy").to_str().unwrap(),
        "--out",
        d.join("x0.npy").to_str().unwrap(),
        "--set",
        "skip=leading",
        "--set",
        "prev=stride",
        "--trace",
        d.join("trace").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("(10 model evaluations)"), "{}", stderr(&out));
    let labels = std::fs::read_to_string(d.join("trace/labels.tsv")).unwrap();
    let ours: Vec<String> = labels.lines().map(|l| format!("{}", l.split('\t').nth(1).unwrap().parse::<f64>().unwrap())).collect();
    assert_eq!(ours.join(" "), "900 800 700 600 500 400 300 200 100 0");
    let ours = Tensor::read_npy(d.join("x0.npy")).unwrap();
    let reference = Tensor::read_npy(d.join("x0_ref.npy")).unwrap();
    let e = rel_err(&ours, &reference);
    eprintln!("DDIM-10 with UNet vs diffusers loop: relative L2 {e:.2e}");
    assert!(e <= 1e-4, "relative L2 error {e}");
}
