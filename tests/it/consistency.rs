//! Consistency models: a diffusers `ConsistencyModelPipeline` folder (tiny random-weight
//! `UNet2DModel`, written by the test) sampled by `bench sample` with the `consistency` sampler,
//! against the pipeline itself.
use crate::common::*;
use tch::Tensor;

/// 1, 2 and 3 steps, and the custom timesteps [22, 0]. One step draws no noise; for 2 and 3 both sides run with `s_noise: 0`, so
/// the grid, the boundary scalings, the network input c_in·x at 250·ln σ, the x̂0 clipping and
/// the re-noising levels are compared without sampling noise. The pipeline's image is
/// (x/2 + 0.5) clamped to [0, 1]; ours is mapped the same way. Both compute the scalings from
/// float32 σ, diffusers in float32 and bench in float64: ≤1e-6 relative, well inside 1e-5. A
/// class-conditional UNet (`num_class_embeds`) takes the labels the pipeline's `class_labels` gives.
#[test]
fn consistency_pipeline_folder_matches_diffusers() {
    let d = tempfile::tempdir().unwrap();
    let report = run_python(
        r#"
import sys, os, json, numpy as np, torch
from diffusers import UNet2DModel, CMStochasticIterativeScheduler, ConsistencyModelPipeline
out = sys.argv[1]
torch.manual_seed(0)
unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()
pipe = ConsistencyModelPipeline(unet=unet, scheduler=CMStochasticIterativeScheduler())
pipe.save_pretrained(os.path.join(out, "pipe"))
x = torch.randn(2, 3, 16, 16)
np.save(os.path.join(out, "xT.npy"), x.numpy())
for steps in (1, 2, 3):
    pipe.scheduler = CMStochasticIterativeScheduler(s_noise=0.0 if steps > 1 else 1.0)
    with torch.no_grad():
        img = pipe(batch_size=2, latents=x.clone(), num_inference_steps=steps, output_type="pt").images
    np.save(os.path.join(out, f"ref{steps}.npy"), img.numpy())
pipe.scheduler = CMStochasticIterativeScheduler(s_noise=0.0)
with torch.no_grad():
    img = pipe(batch_size=2, latents=x.clone(), timesteps=[22, 0], output_type="pt").images
np.save(os.path.join(out, "ref_custom.npy"), img.numpy())
sigmas = [float(s) for s in pipe.scheduler.sigmas]
# Class-conditional (the ImageNet-64 checkpoints' layout): labels through the class table.
torch.manual_seed(1)
unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, num_class_embeds=10,
                   block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()
pipe = ConsistencyModelPipeline(unet=unet, scheduler=CMStochasticIterativeScheduler(s_noise=0.0))
pipe.save_pretrained(os.path.join(out, "pipe_cond"))
with torch.no_grad():
    img = pipe(batch_size=2, class_labels=torch.tensor([3, 7]), latents=x.clone(), num_inference_steps=2, output_type="pt").images
np.save(os.path.join(out, "ref_cond.npy"), img.numpy())
print(json.dumps(sigmas))
"#,
        &[d.path().to_str().unwrap()],
    );
    let spec = d.path().join("cm.yaml");
    std::fs::write(&spec, "name: cm\nmodel: {kind: diffusers, path: pipe}\nsamplers:\n  - {name: consistency}\nsteps: 1\ndevice: cpu\n").unwrap();
    let cond_spec = d.path().join("cm_cond.yaml");
    std::fs::write(
        &cond_spec,
        "name: cmc\nmodel: {kind: diffusers, path: pipe_cond}\nconditioning: {class_labels: uniform, num_classes: 10}\nsamplers:\n  - {name: consistency}\nsteps: 2\ndevice: cpu\n",
    )
    .unwrap();
    let x_t = d.path().join("xT.npy");
    let mut errs = vec![];
    // (steps, the reference's file, custom timesteps)
    let cases = [(1, "ref1", None), (2, "ref2", None), (3, "ref3", None), (2, "ref_custom", Some("timesteps=22,0")), (2, "ref_cond", None)];
    for (steps, name, custom) in cases {
        let out = d.path().join(format!("x{name}.npy"));
        let steps_arg = format!("--steps={steps}");
        let spec = if name == "ref_cond" { &cond_spec } else { &spec };
        let mut args = vec!["sample", spec.to_str().unwrap(), "--noise", x_t.to_str().unwrap(), "--out", out.to_str().unwrap()];
        if name == "ref_cond" {
            args.extend(["--class", "3", "--class", "7"]);
        }
        args.push(&steps_arg);
        if steps > 1 {
            args.extend(["--set", "s_noise=0"]);
        }
        if let Some(t) = custom {
            args.extend(["--set", t]);
        }
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("({steps} model evaluations)")), "{}", stderr(&o));
        let ours = (Tensor::read_npy(&out).unwrap() / 2.0 + 0.5).clamp(0.0, 1.0);
        let reference = Tensor::read_npy(d.path().join(format!("{name}.npy"))).unwrap();
        let e = rel_err(&ours, &reference);
        errs.push(format!("{name} {e:.1e}"));
        assert!(e <= 1e-5, "{steps} steps: relative L2 error {e}; sigmas {report}");
    }
    eprintln!("consistency vs ConsistencyModelPipeline: {}", errs.join(", "));
}
