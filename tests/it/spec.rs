//! Spec parsing and planning: a table of valid and invalid specs with the exact error text for
//! each invalid one, and every shipped spec under experiments/.
use samplerbench::plan::{self, Host, Plan};
use samplerbench::spec::{self, ParamValue, Skip};
use std::path::{Path, PathBuf};

const CPU: Host = Host { cuda_devices: 0 };

/// The valid spec the invalid ones are edits of (line numbers in the expectations refer to it).
const BASE: &str = "\
name: t
model: {kind: oracle, data: {kind: gaussian, shape: [3, 8, 8], std: [0.2, 0.5, 1.0]}}
samplers:
  - {name: ddim, eta: [0.0, 0.5]}
steps: [10, 20]
samples: 100
";

/// Writes `text` as `spec.yaml` in a fresh temp dir and plans it.
fn plan_text(text: &str, host: &Host) -> (tempfile::TempDir, PathBuf, samplerbench::Result<Plan>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    std::fs::write(&path, text).unwrap();
    // Missing files are reported by `check_files` (a dry run plans without them).
    let r = plan::load_with(&path, host).and_then(|p| p.check_files().map(|()| p));
    (dir, path, r)
}

/// `BASE` with line `n` (1-based) replaced by `line` (several lines allowed).
fn edit(n: usize, line: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines[n - 1] = line;
    lines.join("\n") + "\n"
}

/// None if planning `text` fails with exactly `expected` (SPEC/DIR stand for the spec file and
/// its folder) as a one-line exit-2 user error; else what went wrong.
fn check_error(text: &str, host: &Host, expected: &str) -> Option<String> {
    let (dir, path, r) = plan_text(text, host);
    let e = match r {
        Ok(p) => return Some(format!("no error ({} cells) for\n{text}", p.cells.len())),
        Err(e) => e,
    };
    let want = expected.replace("SPEC", &path.display().to_string()).replace("DIR", &dir.path().display().to_string());
    let got = e.to_string();
    if e.exit_code() != 2 || !matches!(e, samplerbench::BenchError::User(_)) || got.contains('\n') {
        return Some(format!("not a one-line user error: {e:?}"));
    }
    (got != want).then(|| format!("spec:\n{text}\n  want: {want}\n  got:  {got}"))
}

fn expect_error(text: &str, host: &Host, expected: &str) {
    if let Some(m) = check_error(text, host, expected) {
        panic!("{m}");
    }
}

#[test]
fn invalid_specs_give_exact_one_line_errors() {
    let cases: Vec<(String, &str)> = vec![
        // Unknown keys, with suggestions, at every level.
        (
            edit(6, "sampels: 100"),
            "SPEC:6:1: sampels: unknown key `sampels`; did you mean `samples`? (allowed: name, model, dataset, schedule, samplers, steps, samples, batch_size, seed, device, precision, metrics, output, save_samples, keep_stats, repeats, conditioning)",
        ),
        (
            edit(2, "model: {kind: oracle, dat: {kind: gaussian, shape: [3, 8, 8]}}"),
            "SPEC:2:23: model.dat: unknown key `dat`; did you mean `data`? (allowed: kind, path, config, ema, shape, data, prediction, decoder, override_model_scheduler, space, text_encoder)",
        ),
        (
            BASE.to_owned() + "metrics:\n  fd_pixel: {refrence: x.npz}\n",
            "SPEC:8:14: metrics.fd_pixel.refrence: unknown key `refrence`; did you mean `reference`? (allowed: reference)",
        ),
        (
            BASE.to_owned() + "schedule: {kind: linear, timestep: 500}\n",
            "SPEC:7:26: schedule.timestep: unknown key `timestep`; did you mean `timesteps`? (allowed: kind, beta_start, beta_end, timesteps, rescale_betas_zero_snr)",
        ),
        // Wrong types.
        (edit(6, "samples: many"), "SPEC:6:10: samples: expected an integer, got string \"many\""),
        (edit(5, "steps: [10, ten]"), "SPEC:5:13: steps[1]: expected an integer, got string \"ten\""),
        (
            edit(2, "model: {kind: oracle, data: {kind: gaussian, shape: 3}}"),
            "SPEC:2:53: model.data.shape: expected a list, got integer `3`",
        ),
        // Unknown values of closed vocabularies.
        (
            edit(2, "model: {kind: oracel}"),
            "SPEC:2:15: model.kind: unknown value `oracel`; did you mean `oracle`? (allowed: diffusers, ddim, torchscript, oracle, edm)",
        ),
        (
            edit(4, "  - {name: ddim, skip: quadratc}"),
            "SPEC:4:24: samplers[0].skip: unknown value `quadratc`; did you mean `quadratic`? (allowed: uniform, quadratic, leading, trailing, linspace, ddim_stride, sections, diffusion_ts, time_uniform, logsnr, time_quadratic, karras, exponential, beta, lu, edm, consistency, flow, lcm)",
        ),
        (
            BASE.to_owned() + "precision: fp64\n",
            "SPEC:7:12: precision: unknown value `fp64`; did you mean `fp32`? (allowed: fp32, tf32, bf16, fp16)",
        ),
        // Negative and out-of-range numbers.
        (edit(5, "steps: [10, -5]"), "SPEC:5:13: steps[1]: must be an integer from 1 to 1000 (schedule.timesteps), got -5"),
        (
            edit(4, "  - {name: ddim, eta: 0.5, steps: 0}"),
            "SPEC:4:28: samplers[0].steps: must be an integer from 1 to 1000 (schedule.timesteps), got 0",
        ),
        (edit(6, "samples: -3"), "SPEC:6:1: samples: must be ≥ 1, got -3"),
        (
            edit(4, "  - {name: ddim, eta: [0.0, -0.5]}"),
            "SPEC:4:29: samplers[0].eta[1]: `eta` of `ddim` must be a number ≥ 0, got -0.5",
        ),
        (
            edit(4, "  - {name: dpm_solver, order: 4}"),
            "SPEC:4:24: samplers[0].order: `order` of `dpm_solver` must be an integer from 1 to 3, got 4",
        ),
        // Sampler parameters are checked against the sampler.
        (
            edit(4, "  - {name: dpm_solver, eta: 0.5}"),
            "SPEC:4:24: samplers[0].eta: `eta` is not a parameter of `dpm_solver` (allowed: order, method, sde, solver_type, lower_order_final, euler_at_final, t_end, steps_offset, final_sigmas, lambda_min_clipped, thresholding, dynamic_thresholding_ratio, sample_max_value, schedule_dtype, skip, steps)",
        ),
        (
            edit(4, "  - {name: ddim, etta: 0.5}"),
            "SPEC:4:18: samplers[0].etta: `etta` is not a parameter of `ddim`; did you mean `eta`? (allowed: eta, steps_offset, prev, alpha_to_one, section_counts, clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value, use_clipped_model_output, schedule_dtype, skip, steps)",
        ),
        (
            edit(4, "  - {name: dpm_solver, method: multstep}"),
            "SPEC:4:24: samplers[0].method: unknown value `multstep` for `method` of `dpm_solver`; did you mean `multistep`? (allowed: singlestep, multistep, singlestep_fixed)",
        ),
        (
            edit(4, "  - {name: ddpm-large}"),
            "SPEC:4:6: samplers[0].name: unknown sampler `ddpm-large`; did you mean `ddpm_large`? (known: ddim, ddpm, ddpm_large, f-pndm, s-pndm, fon, plms, dpm_solver, dpm_solver++, unipc, deis, sa_solver, euler, euler_ancestral, heun, kdpm2, kdpm2_ancestral, lms, karras_ve, dpmpp_2s_ancestral, dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde, dpm_fast, dpm_adaptive, lcm, tcd, edm_heun, edm_euler, ipndm, ipndm_v, consistency, flow_euler, flow_heun, flow_dpm_solver++, flow_unipc)",
        ),
        (edit(4, "  - {eta: 0.5}"), "SPEC:4:5: samplers[0]: missing required key `name`"),
        (
            edit(4, "  - {name: dpm_adaptive, rtol: 0.1}"),
            "SPEC:4:5: samplers[0]: dpm_adaptive rtol=0.1 skip=exponential steps=10: it picks its own steps (rtol, atol, h_init): give its entry `steps: 1`, not 10",
        ),
        // Empty sweeps.
        (edit(4, "  - {name: ddim, eta: []}"), "SPEC:4:18: samplers[0].eta: empty list; give at least one value"),
        (edit(5, "steps: []"), "SPEC:5:1: steps: empty list; give at least one value"),
        (
            edit(3, "samplers: []\n#").replace("  - {name: ddim, eta: [0.0, 0.5]}\n", ""),
            "SPEC:3:1: samplers: empty list; give at least one sampler, e.g. `- {name: ddim}`",
        ),
        (
            edit(5, "seed: 1"),
            "SPEC:4:5: samplers[0]: no `steps`: set `steps:` at the top level or in this entry",
        ),
        (
            edit(4, "  - {name: ddim, eta: [0.5, 0.5]}"),
            "SPEC:4:5: samplers[0]: repeats cell #0 of samplers[0] (ddim eta=0.5 skip=quadratic steps=10); remove the repeated value",
        ),
        // Files.
        (
            edit(2, "model: {kind: diffusers, path: models/none}") + "metrics: {fid: {reference: s.npz, weights: w.pth}}\n",
            "SPEC:2:26: model.path: not found: DIR/models/none (relative paths start from the spec file's folder); also metrics.fid.reference: not found: DIR/s.npz (relative paths start from the spec file's folder); also metrics.fid.weights: not found: DIR/w.pth (relative paths start from the spec file's folder)",
        ),
        (
            edit(2, "model: {kind: diffusers, path: models/none}") + "device: gpu\n",
            "SPEC:7:1: device: unknown device `gpu`; did you mean `cpu`? (allowed: auto, cpu, cuda, cuda:N)",
        ),
        (
            edit(2, "model: {kind: diffusers, path: models/none}"),
            "SPEC:2:26: model.path: not found: DIR/models/none (relative paths start from the spec file's folder)",
        ),
        (
            edit(2, "model: {kind: diffusers, path: ../data/models/ddpm-cifar10-32}"),
            "SPEC:2:26: model.path: not found: DIR/../data/models/ddpm-cifar10-32 (Ho et al. CIFAR10 DDPM, diffusers folder (config.json + safetensors); get it from https://huggingface.co/google/ddpm-cifar10-32)",
        ),
        (edit(2, "model: {kind: diffusers}"), "SPEC:2:1: model: model kind `diffusers` needs `path` (a diffusers model folder)"),
        (
            edit(2, "model: {kind: diffusers, path: m, config: cifar10}"),
            "SPEC:2:35: model.config: `config` does not apply to model kind `diffusers` (allowed: kind, path, prediction, override_model_scheduler)",
        ),
        (
            edit(2, "model: {kind: ddim, path: m.ckpt, config: cifar}"),
            "SPEC:2:35: model.config: unknown preset `cifar`; did you mean `cifar10`? (allowed: cifar10, celeba, or a map with ch, ch_mult, ...)",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gaussian, shape: [3, 8, 8], std: [0.2, 0.5]}}"),
            "SPEC:2:64: model.data.std: needs one value per channel: shape[0] is 3, got 2 values",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gaussian, shape: [3, 8, 8], std: 0}}"),
            "SPEC:2:64: model.data.std: must be a number > 0, got 0",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gaussian, shape: [3, 8, 8], mean: mu.npy}}"),
            "SPEC:2:64: model.data.mean: not found: DIR/mu.npy (relative paths start from the spec file's folder)",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gmm, shape: [3, 8, 8], components: 4, weights: [1.0]}}"),
            "SPEC:2:59: model.data.components: a gmm takes either `weights`, `means` and `stds`, or `components` (and optionally `seed`), not both",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gmm, shape: [3, 8, 8], weights: [0.5, 0.4], means: [0, 1], stds: [1, 1]}}"),
            "SPEC:2:59: model.data.weights: must sum to 1, got 0.9",
        ),
        // Metrics.
        (
            BASE.to_owned() + "metrics:\n  fid: {reference: stats.npz, weights: spec.yaml}\n",
            "SPEC:8:9: metrics.fid.reference: not found: DIR/stats.npz (relative paths start from the spec file's folder)",
        ),
        (
            BASE.to_owned() + "metrics:\n  fid: {reference: spec.yaml, weights: spec.yaml, dims: 1000}\n",
            "SPEC:8:51: metrics.fid.dims: must be one of 64, 192, 768, 2048 (Inception feature blocks), got 1000",
        ),
        (
            BASE.to_owned() + "metrics:\n  fid: {reference: spec.yaml, mode: pytorch_fid}\n",
            "SPEC:8:37: metrics.fid.mode: unknown value `pytorch_fid`; did you mean `pytorch-fid`? (allowed: pytorch-fid, tf, clean)",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gmm, shape: [3, 8, 8], components: 2}}") + "metrics: {fd_exact: {}}\n",
            "SPEC:7:11: metrics.fd_exact: needs a Gaussian oracle model (`model: {kind: oracle, data: {kind: gaussian, ...}}`)",
        ),
        // Schedule.
        (
            BASE.to_owned() + "schedule: {beta_start: 0.03}\n",
            "SPEC:7:1: schedule.beta_end: need 0 < beta_start ≤ beta_end < 1, got beta_start=0.03, beta_end=0.02",
        ),
        (
            BASE.to_owned() + "schedule: {kind: cosine, beta_end: 0.02}\n",
            "SPEC:7:26: schedule.beta_end: has no effect with the cosine schedule; remove it",
        ),
        // Device and precision on a machine without CUDA.
        (
            BASE.to_owned() + "device: gpu\n",
            "SPEC:7:1: device: unknown device `gpu`; did you mean `cpu`? (allowed: auto, cpu, cuda, cuda:N)",
        ),
        (
            BASE.to_owned() + "device: cuda\n",
            "SPEC:7:1: device: `cuda` requested but CUDA is not available on this machine (libtorch sees no GPU); use `cpu` or `auto`",
        ),
        (
            BASE.to_owned() + "precision: tf32\n",
            "SPEC:7:1: precision: `tf32` is a CUDA math mode but device `auto` resolved to cpu (no CUDA on this machine) (allowed on cpu: fp32, bf16, fp16 where libtorch's CPU kernels run it)",
        ),
        (
            edit(2, "model: {kind: oracle, prediction: velocity, data: {kind: gaussian, shape: [3, 8, 8]}}"),
            "SPEC:2:35: model.prediction: unknown value `velocity` (allowed: epsilon, v_prediction, sample, flow)",
        ),
        // Other shapes of input.
        (BASE.to_owned() + "save_samples: some\n", "SPEC:7:15: save_samples: expected a number of samples ≥ 0 or `all`, got string \"some\""),
        (BASE.replace("name: t\n", ""), "SPEC:1:1: missing required key `name`"),
        (
            edit(1, "name: t\ndataset: cifar 10"),
            "SPEC:2:1: dataset: `cifar 10` is not a usable dataset name (allowed: letters, digits, `_`, `-`, `.`; e.g. cifar10, celeba64)",
        ),
        (edit(1, "name: my run"), "SPEC:1:1: name: `my run` is not a usable name (allowed: letters, digits, `_`, `-`, `.`)"),
        (edit(5, "steps: [10, 20"), "SPEC:6:8: invalid YAML: did not find expected ',' or ']', while parsing a flow sequence at line 5 column 8"),
        // Conditioning.
        (
            BASE.to_owned() + "conditioning: {prompt: p.txt}\n",
            "SPEC:7:16: conditioning.prompt: unknown key `prompt`; did you mean `prompts`? (allowed: prompts, negative_prompt, class_labels, num_classes, guidance_scale)",
        ),
        (
            BASE.to_owned() + "conditioning: {guidance_scale: 2.0}\n",
            "SPEC:7:1: conditioning: needs `prompts` (a text-to-image model) or `class_labels` with `num_classes` (a class-conditional one)",
        ),
        (
            BASE.to_owned() + "conditioning: {prompts: p.txt}\n",
            "SPEC:7:16: conditioning.prompts: the model has no text encoder: prompts need a diffusers StableDiffusionPipeline folder, or a torchscript model with `text_encoder`",
        ),
        (
            BASE.to_owned() + "conditioning: {class_labels: uniform}\n",
            "SPEC:7:1: conditioning: `class_labels` needs `num_classes` (the classes the model was trained on, e.g. 1000)",
        ),
        (
            BASE.to_owned() + "conditioning: {class_labels: random, num_classes: 10}\n",
            "SPEC:7:16: conditioning.class_labels: `random` is not a label rule (allowed: uniform, or a list of labels)",
        ),
        (
            BASE.to_owned() + "conditioning: {class_labels: [1, 12], num_classes: 10}\n",
            "SPEC:7:34: conditioning.class_labels[1]: label 12 is outside 0..10 (num_classes: 10)",
        ),
        (
            BASE.to_owned() + "conditioning: {class_labels: uniform, num_classes: 10, guidance_scale: [1.0, -2]}\n",
            "SPEC:7:78: conditioning.guidance_scale[1]: must be a finite number ≥ 0 (1 = no guidance), got -2",
        ),
        (
            BASE.to_owned() + "conditioning: {class_labels: uniform, num_classes: 10, guidance_scale: [2, 2.0]}\n",
            "SPEC:7:76: conditioning.guidance_scale[1]: 2 is listed twice",
        ),
        (
            BASE.to_owned() + "conditioning: {class_labels: uniform, num_classes: 10, negative_prompt: bad}\n",
            "SPEC:7:56: conditioning.negative_prompt: a negative prompt goes with `prompts`, not `class_labels`",
        ),
        (
            BASE.to_owned() + "metrics: {clip_score: {model: clip}}\n",
            "SPEC:7:11: metrics.clip_score: needs prompts: a text-to-image model with `conditioning: {prompts: FILE}`",
        ),
    ];
    let failures: Vec<String> = cases.iter().filter_map(|(t, want)| check_error(t, &CPU, want)).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn sampler_definitions_check_parameters_and_cells() {
    let cases = [
        (
            edit(4, "  - {name: dpm_solver, eta: 0.5}"),
            "SPEC:4:24: samplers[0].eta: `eta` is not a parameter of `dpm_solver`",
        ),
        (
            edit(4, "  - {name: dpm_solver, method: fast}"),
            "SPEC:4:24: samplers[0].method: unknown value `fast` for `method` of `dpm_solver` (allowed: singlestep, multistep, singlestep_fixed)",
        ),
        (
            edit(4, "  - {name: dpm_solver, method: singlestep_fixed, order: 3}"),
            "SPEC:4:5: samplers[0]: dpm_solver method=singlestep_fixed skip=logsnr steps=2: steps=2 is too small",
        ),
    ];
    for (text, want_prefix) in cases {
        let text = text.replace("steps: [10, 20]", "steps: [10, 2]");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, &text).unwrap();
        let got = plan::load_with(&path, &CPU).map(|p| p.cells.len()).unwrap_err().to_string();
        let want = want_prefix.replace("SPEC", &path.display().to_string());
        assert!(got.starts_with(&want), "want prefix: {want}\ngot: {got}");
        assert!(!got.contains('\n'));
    }
    // Defaults are filled: DDIM's skip is quadratic and its η is shown even when not written.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    std::fs::write(&path, edit(4, "  - {name: ddim}\n  - {name: dpm_solver, order: 2}")).unwrap();
    let p = plan::load_with(&path, &CPU).unwrap();
    let first = |i: usize| {
        let c = &p.cells[i];
        format!("{} {} {} {}", c.sampler, c.params_text(), c.skip, c.steps)
    };
    assert_eq!((first(0), first(2)), ("ddim eta=0 quadratic 10".to_owned(), "dpm_solver order=2 method=singlestep logsnr 10".to_owned()));
}

#[test]
fn device_checks_use_the_hosts_cuda_count() {
    let two = Host { cuda_devices: 2 };
    expect_error(
        &(BASE.to_owned() + "device: cuda:2\n"),
        &two,
        "SPEC:7:1: device: `cuda:2` does not exist: this machine has 2 CUDA device(s), cuda:0 to cuda:1",
    );
    for (device, want) in [
        ("cuda:1", plan::DevicePlan::Cuda(1)),
        ("cuda", plan::DevicePlan::Cuda(0)),
        ("auto", plan::DevicePlan::Cuda(0)),
        ("cpu", plan::DevicePlan::Cpu),
    ] {
        let (_d, _p, r) = plan_text(&(BASE.to_owned() + &format!("device: {device}\nprecision: tf32\n")), &two);
        match (device, r) {
            ("cpu", Err(e)) => assert!(
                e.to_string()
                    .ends_with("precision: `tf32` is a CUDA math mode but the device is cpu (allowed on cpu: fp32, bf16, fp16 where libtorch's CPU kernels run it)"),
                "{e}"
            ),
            (_, Ok(p)) => assert_eq!(p.device, want),
            (_, Err(e)) => panic!("{device}: {e}"),
        }
    }
}

/// σ samplers lay their grids out in σ: their steps are not bounded by the schedule's labels,
/// unless a top-level list also serves a sampler that is.
#[test]
fn sigma_samplers_take_more_steps_than_the_schedule_has_labels() {
    let text = |samplers: &str| {
        format!("name: s\nmodel: {{kind: oracle, space: sigma, data: {{kind: gaussian, shape: [1, 2, 2], mean: 0.0, std: 1.0}}}}\nsamplers: {samplers}\nsteps: [2000]\nsamples: 4\ndevice: cpu\n")
    };
    let (_d, _p, r) = plan_text(&text("[{name: edm_heun}]"), &CPU);
    assert_eq!(r.unwrap().cells.iter().map(|c| c.steps).collect::<Vec<_>>(), [2000]);
    expect_error(&text("[{name: edm_heun}, {name: ddim}]"), &CPU, "SPEC:4:9: steps[0]: must be an integer from 1 to 1000 (schedule.timesteps), got 2000");
    expect_error(
        &text("[{name: edm_heun, steps: 200000}]"),
        &CPU,
        "SPEC:3:29: samplers[0].steps: must be an integer from 1 to 100000, got 200000",
    );
}

#[test]
fn valid_specs_expand_to_the_expected_cells() {
    // (spec, number of cells, first cell as "sampler params skip steps")
    let cases: Vec<(String, usize, &str)> = vec![
        (BASE.to_owned(), 4, "ddim eta=0 quadratic 10"),
        (
            edit(4, "  - {name: ddim, eta: [0.0, 0.2, 0.5, 1.0], skip: quadratic}\n  - {name: ddpm_large, skip: quadratic}")
                .replace("steps: [10, 20]", "steps: [10, 20, 50, 100, 1000]"),
            25,
            "ddim eta=0 quadratic 10",
        ),
        (
            edit(4, "  - name: unipc\n    order: [1, 2, 3]\n    variant: [bh1, bh2]\n    skip: [time_uniform, logsnr]\n    steps: 10"),
            12,
            "unipc order=1 variant=bh1 time_uniform 10",
        ),
        (
            edit(4, "  - {name: karras_ve, s_churn: [0, 10], skip: karras}"),
            4,
            "karras_ve s_churn=0 karras 10",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gmm, shape: [1, 2, 2], weights: [0.25, 0.75], means: [-1, [1]], stds: [0.5, 0.5]}}"),
            4,
            "ddim eta=0 quadratic 10",
        ),
        (
            edit(2, "model: {kind: oracle, data: {kind: gmm, shape: [3, 2, 2], components: 8, seed: 3}}")
                + "metrics:\n  fd_pixel:\nsave_samples: all\nschedule: {kind: cosine, timesteps: 500}\n",
            4,
            "ddim eta=0 quadratic 10",
        ),
    ];
    for (text, n, first) in &cases {
        let (_d, _p, r) = plan_text(text, &CPU);
        let p = r.unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(p.cells.len(), *n, "{text}");
        let c = &p.cells[0];
        assert_eq!(format!("{} {} {} {}", c.sampler, c.params_text(), c.skip.name(), c.steps), *first, "{text}");
        // Hashes are distinct and stable across re-planning.
        let (_d2, _p2, again) = plan_text(text, &CPU);
        let again = again.unwrap();
        assert_eq!(
            p.cells.iter().map(|c| &c.hash).collect::<Vec<_>>(),
            again.cells.iter().map(|c| &c.hash).collect::<Vec<_>>()
        );
        assert_eq!(p.spec_hash, again.spec_hash);
    }
}

#[test]
fn model_files_resolve_relative_to_the_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    std::fs::create_dir_all(dir.path().join("models/unet")).unwrap();
    std::fs::write(dir.path().join("models/unet/config.json"), "{}").unwrap();
    std::fs::write(dir.path().join("ckpt.pth"), "").unwrap();
    std::fs::write(dir.path().join("stats.npz"), "").unwrap();
    std::fs::write(dir.path().join("incv3.pth"), "").unwrap();
    let rest = "samplers: [{name: ddim}]\nsteps: 10\nmetrics: {fid: {reference: ../stats.npz, weights: ../incv3.pth, mode: clean}}\noutput: ../out\n";
    let cases = [
        (
            "model: {kind: diffusers, path: ../models/unet}",
            plan::ModelPlan::Diffusers { path: dir.path().join("specs/../models/unet") },
        ),
        (
            "model: {kind: ddim, path: ../ckpt.pth, config: cifar10, ema: false}",
            plan::ModelPlan::Ddim {
                path: dir.path().join("specs/../ckpt.pth"),
                config: samplerbench::models::unet::DdimModelConfig::preset("cifar10").unwrap(),
                ema: false,
            },
        ),
    ];
    for (model, want) in cases {
        let spec = dir.path().join("specs/s.yaml");
        std::fs::write(&spec, format!("name: s\n{model}\n{rest}")).unwrap();
        let p = plan::load_with(&spec, &CPU).unwrap();
        assert_eq!(p.model, want);
        let fid = p.metrics.fid.as_ref().unwrap();
        assert_eq!(fid.reference, dir.path().join("specs/../stats.npz"));
        assert_eq!(fid.weights, dir.path().join("specs/../incv3.pth"));
        assert_eq!((fid.mode, fid.dims, fid.allow_custom_weights), (spec::ResizeMode::Clean, 2048, false));
        // The DDIM presets imply the dataset (for published numbers); a diffusers folder does not.
        let dataset = if model.contains("cifar10") { Some("cifar10".to_owned()) } else { None };
        assert_eq!(p.dataset, dataset);
        assert_eq!(p.output, dir.path().join("specs/../out"));
        assert!(!p.metrics.fd_exact);
    }
    // A folder without config.json is not a diffusers model.
    std::fs::remove_file(dir.path().join("models/unet/config.json")).unwrap();
    let spec = dir.path().join("specs/s.yaml");
    std::fs::write(&spec, format!("name: s\nmodel: {{kind: diffusers, path: ../models/unet}}\n{rest}")).unwrap();
    let e = plan::load_with(&spec, &CPU).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:26: model.path: {}/specs/../models/unet is not a diffusers model folder (no config.json in it)",
            spec.display(),
            dir.path().display()
        )
    );
    // A text-to-image pipeline without prompts is refused before anything is read.
    std::fs::write(dir.path().join("models/model_index.json"), r#"{"_class_name": "StableDiffusionPipeline"}"#).unwrap();
    std::fs::write(&spec, format!("name: s\nmodel: {{kind: diffusers, path: ../models}}\n{rest}")).unwrap();
    let e = plan::load_with(&spec, &CPU).unwrap_err();
    assert_eq!(e.to_string(), format!("{}:2:1: model: a text-to-image pipeline needs prompts: add `conditioning: {{prompts: FILE}}`", spec.display()));
}

fn experiments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments")
}

#[test]
fn quickstart_plans_on_cpu() {
    let p = plan::load_with(&experiments().join("quickstart.yaml"), &CPU).unwrap();
    // DDIM 4 η × 5 S, σ̂ × 5 S, three PNDM variants × 4 S.
    assert_eq!(p.cells.len(), 4 * 5 + 5 + 3 * 4);
    assert_eq!((p.samples, p.batch_size, p.device), (500, 250, plan::DevicePlan::Cpu));
    assert!(p.metrics.fd_exact && p.metrics.fd_pixel.is_none() && p.metrics.fid.is_none());
    let c = &p.cells[19];
    assert_eq!(
        (c.sampler.as_str(), &c.params["eta"], c.skip, c.steps),
        ("ddim", &ParamValue::Float(1.0), Skip::Quadratic, 1000)
    );
    assert_eq!(p.cells[20].sampler, "ddpm_large");
    assert_eq!(p.cells[25].params["alpha_index"], ParamValue::Str("repo".into()));
    // The built-in copy is the shipped file.
    let embedded = spec::parse(Path::new("experiments/quickstart.yaml"), spec::QUICKSTART_YAML).unwrap();
    let embedded = plan::build(&embedded, &CPU).unwrap();
    assert_eq!((embedded.spec_hash.as_str(), embedded.cells.len()), (p.spec_hash.as_str(), 37));
    let table = plan::render_cells(&p, &|c| Some(c.steps), &|_| false);
    assert_eq!(table.lines().count(), 38);
    assert_eq!(
        table.lines().nth(1).unwrap(),
        "   0  ddim        eta=0    quadratic     10    10         5000  to run"
    );
}

#[test]
fn every_shipped_spec_parses_and_real_model_specs_name_missing_files() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(experiments())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        // The regression-gate specs (ci*.yaml) run with the real registry in `./dev test`; specs
        // over the seeded weights in target/ci-weights run in their own tests.
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ci")))
        .filter(|p| !std::fs::read_to_string(p).unwrap().contains("../target/ci-weights/"))
        .collect();
    names.sort();
    let listed: Vec<String> = names.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        listed,
        [
            "ddim_eta.yaml",
            "ddim_eta_celeba.yaml",
            "edm_figure2_ve.yaml",
            "edm_figure2_vp.yaml",
            "edm_solvers.yaml",
            "pndm.yaml",
            "pndm_celeba.yaml",
            "quickstart.yaml",
            "solvers.yaml",
            "timeseries_sines.yaml",
            "timeseries_sines_oracle.yaml"
        ]
    );
    let mut cells = Vec::new();
    for path in &names {
        let parsed = spec::read(path).unwrap_or_else(|e| panic!("{e}"));
        match plan::build(&parsed, &CPU).and_then(|p| p.check_files().map(|()| p)) {
            Ok(p) => cells.push((parsed.raw.name.clone(), p.cells.len())),
            Err(e) => {
                // Only a missing weights/statistics file may stop a shipped spec, and the message
                // says which file and (for published artifacts) where to get it.
                let msg = e.to_string();
                // The time-series specs read files the user makes (or the CI test writes) under ts/.
                if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("timeseries")) {
                    assert!(msg.contains(": not found: ") && msg.contains("/ts/"), "{msg}");
                    continue;
                }
                assert!(msg.contains(": not found: ") && msg.contains("/../data/"), "{msg}");
                assert!(msg.starts_with(&format!("{}:", path.display())), "{msg}");
                // Every file named is missing, and every missing file of the spec is named.
                let named: Vec<&str> =
                    msg.split(": not found: ").skip(1).map(|m| m.split(' ').next().unwrap()).collect();
                assert!(named.iter().all(|f| !Path::new(f).exists()), "{msg}");
                let dir = path.parent().unwrap();
                let uncommented: String = (parsed.text.lines())
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .map(|l| l.split(" #").next().unwrap().to_owned() + "\n")
                    .collect();
                let expected_missing = uncommented
                    .split("../data/")
                    .skip(1)
                    .map(|rest| dir.join("../data").join(rest.split([',', '}', '\n', ' ']).next().unwrap()))
                    .filter(|f| !f.exists())
                    .count();
                assert_eq!(named.len(), expected_missing, "{msg}");
                if path.ends_with("ddim_eta.yaml") && expected_missing == 3 {
                    assert!(
                        msg.contains("model.path: not found: ")
                            && msg.contains("get it from https://huggingface.co/google/ddpm-cifar10-32"),
                        "{msg}"
                    );
                    assert!(msg.contains("; also metrics.fid.reference: not found: "), "{msg}");
                    assert!(
                        msg.contains("; also metrics.fid.weights: not found: ") && msg.contains("pytorch-fid/releases"),
                        "{msg}"
                    );
                }
                cells.push((parsed.raw.name.clone(), usize::MAX));
            }
        }
    }
    // Without data/ the real-model specs stop at their model; quickstart always plans.
    assert!(cells.contains(&("quickstart".to_owned(), 37)), "{cells:?}");
    // The sweeps themselves are valid: plan each real-model spec against stand-in files.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for f in [
        "models/ddpm-cifar10-32/config.json",
        "models/ddim_celeba/ckpt.pth",
        "models/edm-cifar10-32x32-uncond-vp.pkl",
        "models/baseline-cifar10-32x32-uncond-vp.pkl",
        "models/baseline-cifar10-32x32-uncond-ve.pkl",
        "stats/cifar10_train.npz",
        "stats/celeba64_train.npz",
        "models/pt_inception-2015-12-05-6726825d.pth",
    ] {
        std::fs::create_dir_all(data.join(f).parent().unwrap()).unwrap();
        std::fs::write(data.join(f), "").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("experiments/ts")).unwrap();
    for f in ["denoiser.pt", "ts2vec.pt", "sines_real.npy"] {
        std::fs::write(dir.path().join("experiments/ts").join(f), "").unwrap();
    }
    let mut counts = Vec::new();
    for path in &names {
        let copy = dir.path().join("experiments").join(path.file_name().unwrap());
        std::fs::copy(path, &copy).unwrap();
        // Planning builds every cell's sampler, so every cell of a shipped spec is valid.
        let p = plan::load_with(&copy, &CPU).unwrap_or_else(|e| panic!("{e}"));
        p.check_files().unwrap();
        counts.push((p.name.clone(), p.cells.len()));
    }
    assert_eq!(
        counts,
        [
            ("ddim_eta_cifar10".to_owned(), 25),
            ("ddim_eta_celeba64".to_owned(), 25),
            ("edm_figure2_ve".to_owned(), 15),
            ("edm_figure2_vp".to_owned(), 15),
            ("edm_solvers_cifar10".to_owned(), 35),
            ("pndm_cifar10".to_owned(), 30),
            ("pndm_celeba64".to_owned(), 30),
            ("quickstart".to_owned(), 37),
            ("solvers_cifar10".to_owned(), 98),
            ("timeseries_sines".to_owned(), 3),
            ("timeseries_sines_oracle".to_owned(), 3),
        ]
    );
}
