//! `{diffusers_config: FILE}` sampler entries: configs written by diffusers' own `save_config`
//! plan to the same cells as the bench entries whose sampling matches those schedulers (the
//! parity tests of samplers_a/samplers_b/prediction), and what bench cannot honour is refused by
//! name.
use crate::common::*;
use samplerbench::plan;

const SCHEDULE: &str = "schedule: {kind: scaled_linear, beta_start: 0.00085, beta_end: 0.012, timesteps: 1000}\n";

/// (diffusers class, its keyword arguments as Python, the bench entry it must equal).
const CASES: &[(&str, &str, &str)] = &[
    ("DDIMScheduler", "clip_sample=False, set_alpha_to_one=False, steps_offset=1", "{name: ddim, skip: leading, prev: stride, alpha_to_one: false, steps_offset: 1}"),
    ("DDIMScheduler", "", "{name: ddim, skip: leading, prev: stride, clip_sample: true}"),
    ("DDPMScheduler", "clip_sample=False", "{name: ddpm, skip: leading}"),
    ("PNDMScheduler", "skip_prk_steps=True, steps_offset=1", "{name: plms, skip: leading, alpha_index: diffusers, steps_offset: 1}"),
    ("PNDMScheduler", "", "{name: f-pndm, skip: leading, alpha_index: diffusers}"),
    ("EulerDiscreteScheduler", "timestep_spacing='trailing', final_sigmas_type='sigma_min'", "{name: euler, skip: trailing, final_sigmas: sigma_min}"),
    ("EulerAncestralDiscreteScheduler", "timestep_spacing='leading', steps_offset=1", "{name: euler_ancestral, skip: leading, steps_offset: 1}"),
    ("HeunDiscreteScheduler", "", "{name: heun, skip: linspace}"),
    ("KDPM2DiscreteScheduler", "", "{name: kdpm2, skip: linspace}"),
    ("KDPM2AncestralDiscreteScheduler", "", "{name: kdpm2_ancestral, skip: linspace}"),
    ("LMSDiscreteScheduler", "use_karras_sigmas=True", "{name: lms, skip: karras}"),
    ("HeunDiscreteScheduler", "use_exponential_sigmas=True", "{name: heun, skip: exponential}"),
    ("EulerDiscreteScheduler", "use_beta_sigmas=True", "{name: euler, skip: beta}"),
    ("EulerDiscreteScheduler", "interpolation_type='log_linear'", "{name: euler, skip: linspace, interpolation: log_linear}"),
    ("DPMSolverMultistepScheduler", "", "{name: dpm_solver++, method: multistep, skip: linspace}"),
    ("DPMSolverMultistepScheduler", "use_lu_lambdas=True", "{name: dpm_solver++, method: multistep, skip: lu}"),
    ("DPMSolverMultistepScheduler", "lambda_min_clipped=-5.1", "{name: dpm_solver++, method: multistep, skip: linspace, lambda_min_clipped: -5.1}"),
    ("DPMSolverMultistepScheduler", "algorithm_type='sde-dpmsolver++', use_karras_sigmas=True", "{name: dpm_solver++, method: multistep, sde: true, skip: karras}"),
    (
        "DPMSolverMultistepScheduler",
        "algorithm_type='dpmsolver', solver_order=3, final_sigmas_type='sigma_min'",
        "{name: dpm_solver, method: multistep, order: 3, final_sigmas: sigma_min, skip: linspace}",
    ),
    ("DPMSolverSinglestepScheduler", "lower_order_final=True", "{name: dpm_solver++, method: singlestep, lower_order_final: true, skip: linspace}"),
    ("UniPCMultistepScheduler", "solver_type='bh1'", "{name: unipc, variant: bh1, skip: linspace}"),
    ("UniPCMultistepScheduler", "disable_corrector=[0, 2]", "{name: unipc, variant: bh2, skip: linspace, disable_corrector: \"0,2\"}"),
    ("DEISMultistepScheduler", "", "{name: deis, skip: linspace}"),
    ("DPMSolverSDEScheduler", "", "{name: dpmpp_sde, skip: linspace}"),
    ("LCMScheduler", "", "{name: lcm}"),
    ("LCMScheduler", "original_inference_steps=100, timestep_spacing='trailing', steps_offset=1, clip_sample=True", "{name: lcm, original_inference_steps: 100, clip_sample: true}"),
    ("TCDScheduler", "clip_sample=True", "{name: tcd}"),
    ("DPMSolverSDEScheduler", "use_karras_sigmas=True", "{name: dpmpp_sde, skip: karras}"),
    ("SASolverScheduler", "", "{name: sa_solver, skip: linspace}"),
    (
        "SASolverScheduler",
        "algorithm_type='noise_prediction', predictor_order=3, corrector_order=4, timestep_spacing='leading', steps_offset=1, lambda_min_clipped=-5.1",
        "{name: sa_solver, predict: noise, predictor_order: 3, corrector_order: 4, skip: leading, steps_offset: 1, lambda_min_clipped: -5.1}",
    ),
    ("SASolverScheduler", "use_exponential_sigmas=True, lower_order_final=False", "{name: sa_solver, skip: exponential, lower_order_final: false}"),
];

#[test]
fn configs_saved_by_diffusers_plan_to_the_matching_bench_entries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let calls: Vec<String> = CASES
        .iter()
        .enumerate()
        .map(|(i, (class, kwargs, _))| {
            let sep = if kwargs.is_empty() { "" } else { ", " };
            format!("diffusers.{class}(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012{sep}{kwargs}).save_config(f'{{d}}/{i}')")
        })
        .collect();
    run_python(&format!("import sys, diffusers\nd = sys.argv[1]\n{}\n", calls.join("\n")), &[d.to_str().unwrap()]);
    let cells = |samplers: &str| {
        let spec = d.join("spec.yaml");
        std::fs::write(
            &spec,
            format!("name: t\nmodel: {{kind: oracle, data: {{kind: gaussian, shape: [3, 4, 4]}}}}\n{SCHEDULE}samplers: [{samplers}]\nsteps: [10, 25]\n"),
        )
        .unwrap();
        plan::load(&spec).unwrap_or_else(|e| panic!("{samplers}: {e}")).cells.into_iter().map(|c| (c.sampler, c.skip, c.hash)).collect::<Vec<_>>()
    };
    for (i, (class, kwargs, entry)) in CASES.iter().enumerate() {
        let file = d.join(i.to_string()).join("scheduler_config.json");
        let from_file = cells(&format!("{{diffusers_config: {}}}", file.display()));
        // A config means diffusers' float32 schedule arithmetic.
        let bench_entry = format!("{}, schedule_dtype: float32}}", entry.strip_suffix('}').unwrap());
        assert_eq!(from_file, cells(&bench_entry), "{class}({kwargs})");
        assert_ne!(from_file, cells(entry), "{class}({kwargs}) in float64");
        // An old config that names only the class and schedule means the class's defaults.
        if kwargs.is_empty() {
            let old = d.join(format!("old-{i}.json"));
            std::fs::write(&old, format!(r#"{{"_class_name": "{class}", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}}"#)).unwrap();
            assert_eq!(cells(&format!("{{diffusers_config: {}}}", old.display())), from_file, "{class} defaults");
        }
    }
}

#[test]
fn what_bench_cannot_honour_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(
        "import sys, diffusers\nd = sys.argv[1]\n\
         diffusers.DPMSolverMultistepScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012, variance_type='learned_range').save_config(f'{d}/exp')\n\
         diffusers.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012, prediction_type='v_prediction').save_config(f'{d}/v')\n",
        &[d.to_str().unwrap()],
    );
    let run = |sub: &str, extra: &str| {
        let spec = d.join("spec.yaml");
        std::fs::write(
            &spec,
            format!("name: t\nmodel: {{kind: oracle, data: {{kind: gaussian, shape: [3, 4, 4]}}}}\n{SCHEDULE}samplers: [{{diffusers_config: {sub}/scheduler_config.json{extra}}}]\nsteps: 10\n"),
        )
        .unwrap();
        let o = bench(&["run", spec.to_str().unwrap(), "--dry-run"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        stderr(&o)
    };
    let file = |sub: &str| d.join(sub).join("scheduler_config.json").display().to_string();
    assert_eq!(run("exp", ""), format!("error: {}: `variance_type: \"learned_range\"` is not honoured: bench's `dpm_solver++` has no such setting\n", file("exp")));
    assert_eq!(
        run("v", ""),
        format!(
            "error: {}: prediction_type v_prediction contradicts the spec's model (epsilon); a scheduler config must describe the model it samples\n",
            file("v")
        )
    );
    assert!(run("v", ", eta: 0.5").contains("with `diffusers_config` an entry takes only `steps`"));
}

/// The flow-matching and consistency classes: a config saved by diffusers plans to the same
/// cells as the bench entry; dynamic shifting (μ depends on the image size) and a boundary
/// condition other than the model's are refused by name.
#[test]
fn flow_and_consistency_configs_plan_to_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(
        "import sys, diffusers\nd = sys.argv[1]\n\
         diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True).save_config(f'{d}/euler')\n\
         diffusers.FlowMatchEulerDiscreteScheduler().save_config(f'{d}/plain')\n\
         diffusers.FlowMatchHeunDiscreteScheduler(shift=3.0).save_config(f'{d}/heun')\n\
         diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).save_config(f'{d}/dynamic')\n\
         diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=500).save_config(f'{d}/t500')\n\
         diffusers.CMStochasticIterativeScheduler(s_noise=0.9).save_config(f'{d}/cm')\n\
         diffusers.CMStochasticIterativeScheduler(sigma_data=0.25).save_config(f'{d}/cm_data')\n",
        &[d.to_str().unwrap()],
    );
    let spec = d.join("spec.yaml");
    let write = |model: &str, samplers: &str| {
        std::fs::write(&spec, format!("name: t\nmodel: {{kind: oracle, {model}data: {{kind: gaussian, shape: [3, 4, 4]}}}}\nsamplers: [{samplers}]\nsteps: [2, 8]\n")).unwrap();
    };
    let cells = |model: &str, samplers: &str| {
        write(model, samplers);
        plan::load(&spec).unwrap_or_else(|e| panic!("{samplers}: {e}")).cells.into_iter().map(|c| (c.sampler, c.skip, c.hash)).collect::<Vec<_>>()
    };
    let entry = |sub: &str| format!("{{diffusers_config: {}}}", d.join(sub).join("scheduler_config.json").display());
    let (flow, sigma) = ("prediction: flow, ", "space: sigma, ");
    for (sub, model, bench_entry) in [
        ("euler", flow, "{name: flow_euler, shift: 3.0, stochastic_sampling: true}"),
        ("plain", flow, "{name: flow_euler}"),
        ("heun", flow, "{name: flow_heun, shift: 3.0}"),
        ("cm", sigma, "{name: consistency, s_noise: 0.9, num_train_timesteps: 40, sigma_min: 0.002, sigma_max: 80.0}"),
    ] {
        assert_eq!(cells(model, &entry(sub)), cells(model, bench_entry), "{sub}");
    }
    let refused = |sub: &str, model: &str| {
        write(model, &entry(sub));
        let o = bench(&["run", spec.to_str().unwrap(), "--dry-run"]);
        assert_eq!(o.status.code(), Some(2), "{sub}: {}", stderr(&o));
        stderr(&o).replace(&d.join(sub).join("scheduler_config.json").display().to_string(), "FILE")
    };
    assert_eq!(
        refused("dynamic", flow),
        "error: FILE: `use_dynamic_shifting: true` is not honoured: μ depends on the image size, which the config does not say: write the entry as {name: flow_euler, use_dynamic_shifting: true, mu: …}\n"
    );
    assert_eq!(refused("t500", flow), "error: FILE: num_train_timesteps 500 contradicts the spec's model (1000); a scheduler config must describe the model it samples\n");
    assert_eq!(refused("cm_data", sigma), "error: FILE: `sigma_data: 0.25` is not honoured: bench's `consistency` has no such setting\n");
}
