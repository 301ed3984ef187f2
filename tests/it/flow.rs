//! Rectified-flow sampling against diffusers' `FlowMatchEulerDiscreteScheduler` on the flow
//! oracle (exact velocity of Gaussian data), driven through `bench sample`.
use crate::common::*;
use tch::{Kind, Tensor};

/// Static shift (SD3's 3.0), dynamic exponential shifting (Flux's form, μ = 0.7) and
/// `stochastic_sampling` given diffusers' draws through `--step-noise`, 8 steps, same x_1. Both sides evaluate the same closed-form velocity at the same float32 timesteps;
/// diffusers in float32 throughout, bench's oracle in float64 then float32: 8 Euler steps of
/// gain ≤ 1 keep the difference at float32 rounding, far inside 1e-5.
#[test]
fn flow_euler_matches_diffusers_on_the_flow_oracle() {
    let d = tempfile::tempdir().unwrap();
    run_python(
        &format!(
            r#"
import sys, os, numpy as np, torch
from diffusers import FlowMatchEulerDiscreteScheduler as F
import diffusers.schedulers.scheduling_flow_match_euler_discrete as fm
out = sys.argv[1]
{FLOW_ORACLE_PY}draws = torch.randn(8, 4, 3, 4, 4, generator=torch.Generator().manual_seed(5))
np.savez(os.path.join(out, "draws.npz"), *[d.numpy() for d in draws])
queue = list(draws)
fm.randn_tensor = lambda *a, **k: queue.pop(0)
cases = [("static", F(shift=3.0), {{}}), ("dynamic", F(use_dynamic_shifting=True), {{"mu": 0.7}}), ("stochastic", F(shift=3.0, stochastic_sampling=True), {{}})]
for name, sched, kw in cases:
    sched.set_timesteps(8, **kw)
    x = x1.clone()
    for t in sched.timesteps:
        x = sched.step(v(x, t), t, x).prev_sample
    np.save(os.path.join(out, f"ref_{{name}}.npy"), x.numpy())
"#
        ),
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
    let draws = d.path().join("draws.npz");
    for (name, sets) in [
        ("static", vec!["shift=3.0"]),
        ("dynamic", vec!["use_dynamic_shifting=true", "mu=0.7"]),
        ("stochastic", vec!["shift=3.0", "stochastic_sampling=true"]),
    ] {
        let out = d.path().join(format!("{name}.npy"));
        let mut args = vec!["sample", spec.to_str().unwrap(), "--noise", x1.to_str().unwrap(), "--out", out.to_str().unwrap()];
        if name == "stochastic" {
            args.extend(["--step-noise", draws.to_str().unwrap()]);
        }
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
    // A VP sampler runs on the flow model through the exact conversion; `consistency` is refused
    // before anything runs.
    let sample = |sampler: &str| bench(&["sample", spec.to_str().unwrap(), "--noise", x1.to_str().unwrap(), "--out", d.path().join("x.npy").to_str().unwrap(), "--sampler", sampler]);
    let o = sample("ddim");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = sample("consistency");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`consistency` runs on consistency models (its steps call the consistency function); this model is a rectified-flow model: use ddim,"),
        "{}",
        stderr(&o)
    );
}

/// One configuration compared with diffusers: bench's sampler and `--set`s, diffusers' class
/// keywords (JSON) and `set_timesteps` μ.
struct FlowCase {
    sampler: &'static str,
    steps: usize,
    sets: Vec<String>,
    class: &'static str,
    kwargs: String,
    mu: Option<f64>,
}

/// The Gaussian data's exact velocity (float64 inside, float32 out, as bench's oracle) and the
/// seeded x_1 both references start from; the snippet that includes it defines `out`.
const FLOW_ORACLE_PY: &str = r#"mean = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64).view(3, 1, 1)
var = torch.tensor([0.5, 0.8, 1.3], dtype=torch.float64).view(3, 1, 1) ** 2
def v(x, timestep):
    b = float(timestep) / 1000.0
    a = 1.0 - b
    xd = x.double()
    return (((b - a * var) / (a * a * var + b * b)) * (xd - a * mean) - mean).float()
torch.manual_seed(0)
x1 = torch.randn(4, 3, 4, 4)
np.save(os.path.join(out, "x1.npy"), x1.numpy())
"#;

/// The diffusers side: every case from the same x_1 on the exact Gaussian velocity (float64
/// inside, float32 out, as bench's oracle), with the timesteps the model was called at.
fn flow_reference() -> String {
    format!(
        r#"
import sys, os, json, numpy as np, torch
from diffusers import FlowMatchHeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
out, cases = sys.argv[1], json.loads(sys.argv[2])
{FLOW_ORACLE_PY}classes = {{"heun": FlowMatchHeunDiscreteScheduler, "dpm": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler}}
for k, c in enumerate(cases):
    sched = classes[c["class"]](**c["kwargs"])
    kw = {{}} if c["mu"] is None else {{"mu": c["mu"]}}
    sched.set_timesteps(c["steps"], **kw)
    x, labels = x1.clone(), []
    for t in sched.timesteps:
        labels.append(float(t))
        x = sched.step(v(x, t), t, x).prev_sample
    np.save(os.path.join(out, f"ref_{{k}}.npy"), x.numpy())
    with open(os.path.join(out, f"labels_{{k}}.txt"), "w") as f:
        f.write("\n".join(repr(l) for l in labels))
"#
    )
}

fn flow_cases() -> Vec<FlowCase> {
    let mut cases = Vec::new();
    for steps in [2, 3, 5, 8, 20] {
        for shift in [1.0, 3.0] {
            cases.push(FlowCase {
                sampler: "flow_heun",
                steps,
                sets: vec![format!("shift={shift}")],
                class: "heun",
                kwargs: format!(r#"{{"shift": {shift}}}"#),
                mu: None,
            });
        }
    }
    let multistep = |sampler: &'static str, class: &'static str, steps: usize, sets: &[(&str, &str)], mu: Option<f64>| {
        // μ goes to set_timesteps, not to the class.
        let kw: Vec<String> = sets
            .iter()
            .filter(|(k, _)| *k != "mu")
            .map(|(k, v)| {
                let dk = match *k {
                    "order" => "solver_order",
                    "final_sigmas" => "final_sigmas_type",
                    "shift" => "flow_shift",
                    "variant" => "solver_type",
                    k => k,
                };
                let dv = match *v {
                    _ if *k == "disable_corrector" => format!("[{v}]"),
                    "true" | "false" => v.to_string(),
                    v if v.parse::<f64>().is_ok() => v.to_string(),
                    v => format!("\"{v}\""),
                };
                format!(r#""{dk}": {dv}"#)
            })
            .collect();
        FlowCase {
            sampler,
            steps,
            sets: sets.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            class,
            kwargs: format!(
                r#"{{"use_flow_sigmas": true, "prediction_type": "flow_prediction"{}}}"#,
                kw.iter().map(|s| format!(", {s}")).collect::<String>()
            ),
            mu,
        }
    };
    let dpm = |steps, sets: &[(&str, &str)], mu| multistep("flow_dpm_solver++", "dpm", steps, sets, mu);
    for steps in [2, 3, 5, 8, 20] {
        for order in ["1", "2", "3"] {
            for (shift, fin) in [("1.0", "zero"), ("3.0", "sigma_min"), ("3.0", "zero")] {
                cases.push(dpm(steps, &[("order", order), ("shift", shift), ("final_sigmas", fin)], None));
            }
        }
    }
    cases.push(dpm(8, &[("order", "2"), ("solver_type", "heun"), ("shift", "3.0")], None));
    cases.push(dpm(20, &[("order", "3"), ("lower_order_final", "false"), ("final_sigmas", "sigma_min")], None));
    cases.push(dpm(6, &[("order", "3"), ("euler_at_final", "true"), ("final_sigmas", "sigma_min")], None));
    cases.push(dpm(8, &[("use_dynamic_shifting", "true"), ("mu", "0.7")], Some(0.7)));
    let unipc = |steps, sets: &[(&str, &str)], mu| multistep("flow_unipc", "unipc", steps, sets, mu);
    for steps in [2, 3, 5, 8, 20] {
        for order in ["1", "2", "3"] {
            for (shift, fin) in [("1.0", "zero"), ("3.0", "sigma_min"), ("3.0", "zero")] {
                cases.push(unipc(steps, &[("order", order), ("shift", shift), ("final_sigmas", fin)], None));
            }
        }
    }
    cases.push(unipc(8, &[("order", "3"), ("variant", "bh1"), ("shift", "3.0"), ("final_sigmas", "sigma_min")], None));
    cases.push(unipc(8, &[("disable_corrector", "0,1")], None));
    cases.push(unipc(8, &[("use_dynamic_shifting", "true"), ("mu", "0.7")], Some(0.7)));
    cases.push(unipc(8, &[("use_dynamic_shifting", "true"), ("time_shift_type", "linear"), ("mu", "2.0")], Some(2.0)));
    cases
}

/// flow_heun, flow_dpm_solver++ and flow_unipc against `FlowMatchHeunDiscreteScheduler` and
/// `DPMSolverMultistepScheduler` / `UniPCMultistepScheduler(use_flow_sigmas=True,
/// prediction_type="flow_prediction")` on the flow oracle, 108 configurations: 2–20 steps, shifts
/// 1 and 3, orders 1–3, both final levels, solver types, euler_at_final, disable_corrector and
/// dynamic shifting. Same x_1, same closed-form velocity: Heun is bit-identical, the multistep
/// solvers agree to float32 rounding of their coefficients (worst relative L2 7.7e-7 DPM-Solver++,
/// 2.5e-7 UniPC); the model-call labels are identical and NFE is diffusers' number of model calls.
#[test]
fn flow_heun_dpm_solver_pp_and_unipc_match_diffusers_on_the_flow_oracle() {
    let d = tempfile::tempdir().unwrap();
    let cases = flow_cases();
    let json = format!(
        "[{}]",
        cases
            .iter()
            .map(|c| format!(r#"{{"class": "{}", "steps": {}, "kwargs": {}, "mu": {}}}"#, c.class, c.steps, c.kwargs, c.mu.map_or("null".into(), |m| m.to_string())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    run_python(&flow_reference(), &[d.path().to_str().unwrap(), &json]);
    let spec = d.path().join("flow.yaml");
    std::fs::write(
        &spec,
        "name: flow\nmodel: {kind: oracle, prediction: flow, data: {kind: gaussian, shape: [3, 4, 4], mean: [0.3, -0.2, 0.1], std: [0.5, 0.8, 1.3]}}\n\
         samplers:\n  - {name: flow_euler}\nsteps: 8\ndevice: cpu\n",
    )
    .unwrap();
    let x1 = d.path().join("x1.npy");
    let mut worst: Vec<(&str, f64)> = vec![("flow_heun", 0.0), ("flow_dpm_solver++", 0.0), ("flow_unipc", 0.0)];
    for (k, c) in cases.iter().enumerate() {
        let out = d.path().join(format!("out_{k}.npy"));
        let trace = d.path().join(format!("trace_{k}"));
        let steps = c.steps.to_string();
        let mut args = vec!["sample", spec.to_str().unwrap(), "--noise", x1.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(["--sampler", c.sampler, "--steps", &steps, "--trace", trace.to_str().unwrap()]);
        for s in &c.sets {
            args.extend(["--set", s]);
        }
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(0), "{} {:?}: {}", c.sampler, c.sets, stderr(&o));
        let (ours, reference) = (Tensor::read_npy(&out).unwrap(), Tensor::read_npy(d.path().join(format!("ref_{k}.npy"))).unwrap());
        let e = (&ours - &reference).to_kind(Kind::Double).norm().double_value(&[]) / reference.to_kind(Kind::Double).norm().double_value(&[]);
        let labels: Vec<f64> = std::fs::read_to_string(trace.join("labels.tsv"))
            .unwrap()
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
            .collect();
        let want: Vec<f64> = std::fs::read_to_string(d.path().join(format!("labels_{k}.txt"))).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(labels, want, "{} S={} {:?}: labels", c.sampler, c.steps, c.sets);
        let nfe = if c.sampler == "flow_heun" { 2 * c.steps - 1 } else { c.steps };
        assert_eq!(labels.len(), nfe, "{} S={} {:?}: NFE", c.sampler, c.steps, c.sets);
        let moved = (&ours - Tensor::read_npy(&x1).unwrap()).norm().double_value(&[]);
        assert!(moved > 1.0, "{} S={} {:?}: the samples did not move from x_1", c.sampler, c.steps, c.sets);
        assert!(e <= 1e-5, "{} S={} {:?}: relative L2 error {e}", c.sampler, c.steps, c.sets);
        let w = worst.iter_mut().find(|(n, _)| *n == c.sampler).unwrap();
        w.1 = w.1.max(e);
    }
    eprintln!("worst relative L2 vs diffusers over {} cases: {worst:?}", cases.len());
}

/// What the flow schedulers lack is refused by name, before anything runs, in one line: dynamic
/// shifting and churn on flow_heun (FlowMatchHeunDiscreteScheduler has neither in its config),
/// a multistep last step of flow_unipc and its bh1 step into t = 0,
/// DPM-Solver (noise prediction, which diffusers' flow branch refuses too) and out-of-range values.
#[test]
fn flow_solvers_refuse_what_diffusers_lacks() {
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("flow.yaml");
    let entry = |e: &str| {
        format!(
            "name: flow\nmodel: {{kind: oracle, prediction: flow, data: {{kind: gaussian, shape: [3, 4, 4], mean: [0.3, -0.2, 0.1], std: [0.5, 0.8, 1.3]}}}}\n\
             samplers:\n  - {e}\nsteps: 8\ndevice: cpu\n"
        )
    };
    let x1 = d.path().join("x1.npy");
    Tensor::zeros([1, 3, 4, 4], (Kind::Float, tch::Device::Cpu)).write_npy(&x1).unwrap();
    let out = d.path().join("x.npy");
    let base = ["sample", spec.to_str().unwrap(), "--noise", x1.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let sets: &[(&str, &str, &str)] = &[
        ("flow_heun", "use_dynamic_shifting=true", "error: --set use_dynamic_shifting: `use_dynamic_shifting` is not a parameter of `flow_heun` (allowed: shift, skip, steps)"),
        ("flow_heun", "s_churn=1", "error: --set s_churn: `s_churn` is not a parameter of `flow_heun` (allowed: shift, skip, steps)"),
        (
            "flow_unipc",
            "lower_order_final=false",
            "error: sampler flow_unipc: lower_order_final=false needs order=1: the last step ends at t = 0 or at its own level, where a multistep coefficient is undefined (diffusers: a singular solve or an infinite sample)",
        ),
        (
            "flow_unipc",
            "variant=bh1",
            "error: sampler flow_unipc: variant=bh1 needs final_sigmas=sigma_min: B(h) = h is infinite on the last step to t = 0 (diffusers returns NaN there)",
        ),
        ("flow_dpm_solver++", "order=4", "error: --set order=4: `order` of `flow_dpm_solver++` must be an integer from 1 to 3, got 4"),
        ("flow_dpm_solver++", "shift=0", "error: --set shift=0: `shift` of `flow_dpm_solver++` must be a number > 0, got 0"),
        (
            "flow_dpm_solver++",
            "final_sigmas=sigma_max",
            "error: --set final_sigmas=sigma_max: unknown value `sigma_max` for `final_sigmas` of `flow_dpm_solver++`; did you mean `sigma_min`? (allowed: zero, sigma_min)",
        ),
    ];
    std::fs::write(&spec, entry("{name: flow_euler}")).unwrap();
    for (sampler, set, want) in sets {
        let mut args = base.to_vec();
        args.extend(["--sampler", sampler, "--set", set]);
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(2), "{sampler} {set}");
        assert_eq!(stderr(&o).trim_end(), *want);
    }
    // diffusers' spellings in a spec entry: algorithm_type is not offered (dpmsolver++ only).
    std::fs::write(&spec, entry("{name: flow_dpm_solver++, flow_shift: 3.0, algorithm_type: dpmsolver}")).unwrap();
    let o = bench(&base);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.ends_with("samplers[0].algorithm_type: `algorithm_type` is not a parameter of `flow_dpm_solver++` (allowed: order, solver_type, lower_order_final, euler_at_final, final_sigmas, shift, use_dynamic_shifting, mu, skip, steps)\n"),
        "{e}"
    );
}
