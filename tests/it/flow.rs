//! Rectified-flow sampling against diffusers' `FlowMatchEulerDiscreteScheduler` on the flow
//! oracle (exact velocity of Gaussian data), driven through `bench sample`.
use crate::common::*;
use tch::{Kind, Tensor};

/// Static shift (SD3's 3.0) and dynamic exponential shifting (Flux's form, μ = 0.7), 8 steps,
/// same x_1. Both sides evaluate the same closed-form velocity at the same float32 timesteps;
/// diffusers in float32 throughout, bench's oracle in float64 then float32: 8 Euler steps of
/// gain ≤ 1 keep the difference at float32 rounding, far inside 1e-5.
#[test]
fn flow_euler_matches_diffusers_on_the_flow_oracle() {
    let d = tempfile::tempdir().unwrap();
    run_python(
        r#"
import sys, os, numpy as np, torch
from diffusers import FlowMatchEulerDiscreteScheduler as F
out = sys.argv[1]
mean = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64).view(3, 1, 1)
var = torch.tensor([0.5, 0.8, 1.3], dtype=torch.float64).view(3, 1, 1) ** 2
def v(x, timestep):
    b = float(timestep) / 1000.0
    a = 1.0 - b
    xd = x.double()
    return (((b - a * var) / (a * a * var + b * b)) * (xd - a * mean) - mean).float()
torch.manual_seed(0)
x1 = torch.randn(4, 3, 4, 4)
np.save(os.path.join(out, "x1.npy"), x1.numpy())
for name, sched, kw in [("static", F(shift=3.0), {}), ("dynamic", F(use_dynamic_shifting=True), {"mu": 0.7})]:
    sched.set_timesteps(8, **kw)
    x = x1.clone()
    for t in sched.timesteps:
        x = sched.step(v(x, t), t, x).prev_sample
    np.save(os.path.join(out, f"ref_{name}.npy"), x.numpy())
"#,
        &[d.path().to_str().unwrap()],
    );
    let spec = d.path().join("flow.yaml");
    std::fs::write(
        &spec,
        "name: flow\nmodel: {kind: oracle, prediction: flow, data: {kind: gaussian, shape: [3, 4, 4], mean: [0.3, -0.2, 0.1], std: [0.5, 0.8, 1.3]}}\n\
         samplers:\n  - {name: flow_euler}\nsteps: 8\ndevice: cpu\n",
    )
    .unwrap();
    let x1 = d.path().join("x1.npy");
    for (name, sets) in [("static", vec!["shift=3.0"]), ("dynamic", vec!["use_dynamic_shifting=true", "mu=0.7"])] {
        let out = d.path().join(format!("{name}.npy"));
        let mut args = vec!["sample", spec.to_str().unwrap(), "--noise", x1.to_str().unwrap(), "--out", out.to_str().unwrap()];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (ours, reference) = (Tensor::read_npy(&out).unwrap(), Tensor::read_npy(d.path().join(format!("ref_{name}.npy"))).unwrap());
        let e = (&ours - &reference).to_kind(Kind::Double).norm().double_value(&[]) / reference.to_kind(Kind::Double).norm().double_value(&[]);
        let moved = (&ours - Tensor::read_npy(&x1).unwrap()).norm().double_value(&[]);
        eprintln!("flow_euler {name} vs diffusers: relative L2 {e:.1e} (moved {moved:.2})");
        assert!(moved > 1.0, "{name}: the samples did not move from x_1");
        assert!(e <= 1e-5, "{name}: relative L2 error {e}");
    }
    // A VP sampler on a flow model is refused before anything runs.
    let o = bench(&["sample", spec.to_str().unwrap(), "--noise", x1.to_str().unwrap(), "--out", d.path().join("x.npy").to_str().unwrap(), "--sampler", "ddim"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`ddim` runs on discrete-VP models; this model is a rectified-flow model: use flow_euler"), "{}", stderr(&o));
}
