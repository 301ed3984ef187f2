//! k-diffusion's DPM-Solver++ samplers (and diffusers' DPMSolverSDEScheduler) against their
//! references on the Gaussian oracle, through k-diffusion's discrete-DDPM wrappers, with the
//! SDE noise injected as k-diffusion's `noise_sampler` (bench's per-step draws, in draw order).
use crate::common::{rel_err, run_python, seed_torch};
use crate::samplers_b::{f64_opts, from_array, gaussian_data, schedule, to_array, BATCH, SHAPE};
use ndarray::ArrayD;
use ndarray_npy::{read_npy, write_npy};
use samplerbench::models::oracle::GaussianOracle;
use samplerbench::models::unet;
use samplerbench::models::{Denoiser, Prediction};
use samplerbench::sampling::{build_from_text, Counted};
use serde_json::json;
use tch::{Device, Kind, Tensor};

const REF_PY: &str = include_str!("py/k_diffusion_ref.py");
/// The random-weight UNet's sample shape (with batch), as in tests/it/prediction.rs.
const UNET_SHAPE: [i64; 4] = [2, 3, 8, 8];

struct Case {
    sampler: &'static str,
    params: Vec<(&'static str, &'static str)>,
    steps: usize,
    schedule: &'static str,
    /// The reference: a k-diffusion `sample_*` function or a diffusers scheduler class.
    reference: &'static str,
    kwargs: serde_json::Value,
    /// diffusers EulerDiscreteScheduler options that lay out the same σ grid.
    grid: serde_json::Value,
    prediction: Prediction,
    /// The random-weight UNet instead of the Gaussian oracle.
    unet: bool,
}

fn case(sampler: &'static str, params: &[(&'static str, &'static str)], steps: usize, schedule: &'static str, reference: &'static str, kwargs: serde_json::Value) -> Case {
    let skip = params.iter().find(|(k, _)| *k == "skip").map_or("karras", |(_, v)| v);
    let grid = match skip {
        "karras" => json!({"use_karras_sigmas": true}),
        "exponential" => json!({"use_exponential_sigmas": true}),
        "leading" => json!({"timestep_spacing": "leading", "steps_offset": 1}),
        other => json!({"timestep_spacing": other}),
    };
    Case { sampler, params: params.to_vec(), steps, schedule, reference, kwargs, grid, prediction: Prediction::Epsilon, unet: false }
}

impl Case {
    fn id(&self) -> String {
        let p: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}{v}")).collect();
        let model = if self.unet { "unet" } else { "oracle" };
        format!("{}_{}_{}_{}_{:?}_{model}", self.sampler, self.steps, self.schedule, p.join("_"), self.prediction)
    }
}

/// k-diffusion calls the model at `sigma_to_t(σ)`, the log-σ̃ interpolation; on diffusers'
/// linspace grid bench (like diffusers) calls it at the fractional linspace label, which
/// differs by up to 1e-3, so the k-diffusion cases use grids whose labels agree (Karras,
/// exponential, leading, trailing) and linspace is checked against diffusers.
fn cases() -> Vec<Case> {
    let mut v = vec![
        case("dpmpp_2s_ancestral", &[], 10, "linear", "sample_dpmpp_2s_ancestral", json!({})),
        case("dpmpp_2s_ancestral", &[("skip", "trailing")], 10, "cosine", "sample_dpmpp_2s_ancestral", json!({})),
        case("dpmpp_2s_ancestral", &[("eta", "0")], 8, "linear", "sample_dpmpp_2s_ancestral", json!({"eta": 0.0})),
        case("dpmpp_2s_ancestral", &[("eta", "0.5"), ("s_noise", "1.1")], 9, "cosine", "sample_dpmpp_2s_ancestral", json!({"eta": 0.5, "s_noise": 1.1})),
        case("dpmpp_sde", &[], 10, "linear", "sample_dpmpp_sde", json!({})),
        case("dpmpp_sde", &[("skip", "exponential"), ("r", "0.3")], 11, "cosine", "sample_dpmpp_sde", json!({"r": 0.3})),
        case("dpmpp_sde", &[("eta", "0")], 7, "linear", "sample_dpmpp_sde", json!({"eta": 0.0})),
        case("dpmpp_2m_sde", &[], 10, "linear", "sample_dpmpp_2m_sde", json!({})),
        case("dpmpp_2m_sde", &[("solver_type", "heun")], 12, "cosine", "sample_dpmpp_2m_sde", json!({"solver_type": "heun"})),
        case("dpmpp_2m_sde", &[("skip", "trailing"), ("eta", "0.7")], 10, "cosine", "sample_dpmpp_2m_sde", json!({"eta": 0.7})),
        case("dpmpp_2m_sde", &[("eta", "0")], 15, "linear", "sample_dpmpp_2m_sde", json!({"eta": 0.0})),
        case("dpmpp_3m_sde", &[], 10, "linear", "sample_dpmpp_3m_sde", json!({})),
        case("dpmpp_3m_sde", &[("skip", "leading"), ("steps_offset", "1"), ("s_noise", "0.9")], 14, "cosine", "sample_dpmpp_3m_sde", json!({"s_noise": 0.9})),
        case("dpmpp_3m_sde", &[("eta", "0")], 9, "linear", "sample_dpmpp_3m_sde", json!({"eta": 0.0})),
        // diffusers' DPMSolverSDEScheduler is k-diffusion's DPM++ SDE with r = 1/2, η = 1.
        case("dpmpp_sde", &[("skip", "linspace")], 10, "linear", "DPMSolverSDEScheduler", json!({})),
        case("dpmpp_sde", &[], 12, "cosine", "DPMSolverSDEScheduler", json!({})),
        case("dpmpp_sde", &[("skip", "leading"), ("steps_offset", "1")], 8, "linear", "DPMSolverSDEScheduler", json!({})),
    ];
    for (steps, eta) in [(10, "0"), (9, "0"), (11, "0"), (7, "0.5"), (12, "0.8")] {
        let kwargs = json!({"eta": eta.parse::<f64>().unwrap()});
        let schedule = if steps % 2 == 0 { "linear" } else { "cosine" };
        v.push(case("dpm_fast", &[("eta", eta)], steps, schedule, "sample_dpm_fast", kwargs));
    }
    // Adaptive: k-diffusion run on each sample alone (its controller is batch-wide, bench's per sample).
    for (params, schedule, kwargs) in [
        (&[][..], "linear", json!({})),
        (&[("order", "2")][..], "cosine", json!({"order": 2})),
        (&[("rtol", "0.01"), ("atol", "0.001"), ("h_init", "0.2")][..], "linear", json!({"rtol": 0.01, "atol": 0.001, "h_init": 0.2})),
        (&[("eta", "0.6"), ("s_noise", "0.9"), ("pcoeff", "0.1"), ("dcoeff", "0.05")][..], "cosine", json!({"eta": 0.6, "s_noise": 0.9, "pcoeff": 0.1, "dcoeff": 0.05})),
    ] {
        v.push(case("dpm_adaptive", params, 1, schedule, "sample_dpm_adaptive", kwargs));
    }
    let mut vpred = case("dpmpp_2m_sde", &[], 10, "cosine", "sample_dpmpp_2m_sde", json!({}));
    vpred.prediction = Prediction::VPrediction;
    v.push(vpred);
    let mut vsde = case("dpmpp_sde", &[], 9, "linear", "DPMSolverSDEScheduler", json!({}));
    vsde.prediction = Prediction::VPrediction;
    v.push(vsde);
    // The same samplers on a random-weight UNet (float64 on both sides).
    for (sampler, reference) in [
        ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral"),
        ("dpmpp_sde", "sample_dpmpp_sde"),
        ("dpmpp_2m_sde", "sample_dpmpp_2m_sde"),
        ("dpmpp_3m_sde", "sample_dpmpp_3m_sde"),
        ("dpmpp_sde", "DPMSolverSDEScheduler"),
        ("dpm_adaptive", "sample_dpm_adaptive"),
    ] {
        let steps = if sampler == "dpm_adaptive" { 1 } else { 6 };
        let mut c = case(sampler, &[], steps, "linear", reference, json!({}));
        c.unet = true;
        v.push(c);
    }
    v
}

/// Two standard-normal draws per step: `dpmpp_sde` uses keys 2i and 2i+1, the others key i;
/// `dpm_adaptive` one per accepted step.
fn noise_for(c: &Case) -> Vec<Tensor> {
    seed_torch(300 + c.steps as i64);
    let shape = if c.unet { UNET_SHAPE } else { [BATCH, SHAPE[0], SHAPE[1], SHAPE[2]] };
    let n = if c.sampler == "dpm_adaptive" { 300 } else { 2 * c.steps };
    (0..n).map(|_| Tensor::randn(shape, f64_opts())).collect()
}

/// Bench's draws by key, recording the keys it asks for.
struct Recording<'a> {
    draws: &'a [Tensor],
    keys: Vec<usize>,
}
impl samplerbench::sampling::NoiseSource for Recording<'_> {
    fn noise(&mut self, step: usize, _like: &Tensor) -> Tensor {
        self.keys.push(step);
        self.draws[step].shallow_clone()
    }
}

#[test]
fn parity_with_k_diffusion_and_diffusers_sde() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mean, std) = gaussian_data();
    seed_torch(12);
    let z = Tensor::randn([BATCH, SHAPE[0], SHAPE[1], SHAPE[2]], f64_opts());
    let z_unet = Tensor::randn(UNET_SHAPE, f64_opts());
    write_npy(d.join("mean.npy"), &to_array(&mean)).unwrap();
    write_npy(d.join("std.npy"), &to_array(&std)).unwrap();
    write_npy(d.join("z_oracle.npy"), &to_array(&z)).unwrap();
    write_npy(d.join("z_unet.npy"), &to_array(&z_unet)).unwrap();
    for s in ["linear", "cosine"] {
        write_npy(d.join(format!("betas_{s}.npy")), &ndarray::Array1::from(schedule(s).betas)).unwrap();
    }
    let cases = cases();
    let json_cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            let name = format!("noise_{}.npy", c.id());
            write_npy(d.join(&name), &to_array(&Tensor::stack(&noise_for(c), 0))).unwrap();
            let prediction = if c.prediction == Prediction::VPrediction { "v_prediction" } else { "epsilon" };
            let model = if c.unet { "unet" } else { "oracle" };
            json!({"id": c.id(), "fn": c.reference, "kwargs": c.kwargs, "grid": c.grid, "steps": c.steps,
                "schedule": c.schedule, "noise": name, "prediction": prediction, "model": model})
        })
        .collect();
    std::fs::write(d.join("cases.json"), serde_json::to_string(&json_cases).unwrap()).unwrap();
    let reference: serde_json::Value = serde_json::from_str(run_python(REF_PY, &[d.to_str().unwrap()]).trim()).unwrap();
    let unet = unet::load(&d.join("unet"), Device::Cpu, Kind::Double).unwrap();
    let mut report = String::new();
    let mut through_cli = std::collections::HashSet::new();
    for c in &cases {
        let sch = schedule(c.schedule);
        let oracle = GaussianOracle::new(sch.clone(), mean.shallow_clone(), std.shallow_clone()).with_output(c.prediction);
        let model: &dyn Denoiser = if c.unet { &unet } else { &oracle };
        let sampler = build_from_text(c.sampler, &c.params, c.steps, &sch).unwrap();
        let counted = Counted::new(model, c.prediction).with_trace();
        let draws = noise_for(c);
        let mut rec = Recording { draws: &draws, keys: Vec::new() };
        let x = sampler.sample(&counted, if c.unet { z_unet.shallow_clone() } else { z.shallow_clone() }, &mut rec).unwrap();
        let labels: Vec<f64> = counted.take_trace().into_iter().map(|(t, _, _)| t).collect();
        let id = c.id();
        let r = &reference[&id];
        let out: ArrayD<f64> = read_npy(d.join(format!("out_{id}.npy"))).unwrap();
        if sampler.adaptive() {
            // Per-sample NFE as k-diffusion counts it (order × trial steps, rejected ones too).
            let nfe: Vec<u64> = counted.cost_each(x.size()[0] as usize).iter().map(|c| c.0 as u64).collect();
            let want: Vec<u64> = r["nfe"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(nfe, want, "{id}: NFE per sample");
            assert_eq!(labels[0], sampler.labels()[0], "{id}");
            let err = rel_err(&x, &from_array(&out));
            report.push_str(&format!("{id:<66} {:<26} nfe {nfe:?} rel_l2 {err:.2e}\n", c.reference));
            assert!(err <= 1e-5, "{id}: rel L2 {err:.3e} vs {}", c.reference);
            continue;
        }
        assert_eq!(counted.nfe(), sampler.nfe(), "{}", c.id());
        assert_eq!(labels, sampler.labels(), "{}", c.id());
        // The reference pops the draws in order: bench must ask for keys 0, 1, 2, … and, unless
        // η = 0 (the reference draws and multiplies by 0; bench does not draw), as many.
        let pops = r["draws"].as_u64().unwrap() as usize;
        assert_eq!(rec.keys, (0..rec.keys.len()).collect::<Vec<_>>(), "{id}");
        assert!(rec.keys.len() == pops || rec.keys.is_empty(), "{id}: bench drew {} noises, the reference {pops}", rec.keys.len());
        let want: Vec<f64> = r["labels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(labels.len(), want.len(), "{id}: NFE ours {} vs reference {}", labels.len(), want.len());
        let dl = labels.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(dl <= 1e-4, "{id}: labels differ by {dl}\n ours {labels:?}\n ref  {want:?}");
        let err = rel_err(&x, &from_array(&out));
        report.push_str(&format!("{id:<66} {:<26} nfe {:>2} draws {:>2} rel_l2 {err:.2e} label_diff {dl:.1e}\n", c.reference, labels.len(), pops));
        assert!(err <= 1e-5, "{id}: rel L2 {err:.3e} vs {}", c.reference);
        // Each sampler's first oracle case again through `bench sample --step-noise`, given the reference's draws.
        if !c.unet && !rec.keys.is_empty() && through_cli.insert(c.sampler) {
            let schedule = format!("{{kind: {}}}", c.schedule);
            let prediction = if c.prediction == Prediction::VPrediction { "v_prediction" } else { "epsilon" };
            let entry = format!("{{name: {}{}}}", c.sampler, c.params.iter().map(|(k, v)| format!(", {k}: {v}")).collect::<String>());
            let used: Vec<Tensor> = rec.keys.iter().map(|&k| draws[k].shallow_clone()).collect();
            let cli = crate::common::bench_sample_oracle(d, &id, &schedule, prediction, (&mean, &std), &entry, c.steps, &z, &used);
            let e = rel_err(&cli, &from_array(&out));
            assert!(e <= 1e-5, "{id}: bench sample --step-noise: rel L2 {e:.3e} vs {}", c.reference);
        }
    }
    eprintln!("{report}");
}

/// `bench sample --step-noise`: the arrays of an .npz feed the sampler's draws in order (the
/// same result as the in-process sampler given those draws), and a file with too few or too
/// many arrays, or arrays of another shape, is a one-line error.
#[test]
fn bench_sample_step_noise_feeds_the_draws_in_order() {
    use crate::common::{bench, stderr};
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("s.yaml");
    std::fs::write(&spec, "name: t\nmodel: {kind: oracle, data: {kind: gaussian, shape: [3, 4, 4], std: [0.2, 0.5, 1.0]}}\nsamplers: [{name: dpmpp_2m_sde}]\nsteps: 6\ndevice: cpu\n").unwrap();
    seed_torch(40);
    let opts = (Kind::Float, Device::Cpu);
    let z = Tensor::randn([2, 3, 4, 4], opts);
    let draws: Vec<Tensor> = (0..6).map(|_| Tensor::randn([2, 3, 4, 4], opts)).collect();
    let copies = |ts: &[Tensor]| ts.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>();
    let x_t = d.path().join("z.npy");
    z.write_npy(&x_t).unwrap();
    let npz = |name: &str, arrays: &[Tensor]| {
        let path = d.path().join(name);
        let named: Vec<(String, Tensor)> = arrays.iter().enumerate().map(|(k, t)| (format!("arr_{k}"), t.shallow_clone())).collect();
        Tensor::write_npz(&named, &path).unwrap();
        path
    };
    let run = |noise: &std::path::Path| {
        let out = d.path().join("x.npy");
        let o = bench(&["sample", spec.to_str().unwrap(), "--noise", x_t.to_str().unwrap(), "--out", out.to_str().unwrap(), "--step-noise", noise.to_str().unwrap()]);
        (o.status.code(), stderr(&o), out)
    };
    // 6 steps draw 5 times (none after the last).
    let (code, err, out) = run(&npz("five.npz", &draws[..5]));
    assert_eq!(code, Some(0), "{err}");
    let plan = samplerbench::plan::load(&spec).unwrap();
    let model = samplerbench::models::load_model(&plan).unwrap();
    let sampler = build_from_text("dpmpp_2m_sde", &[], 6, &plan.schedule.noise_schedule().unwrap()).unwrap();
    let counted = Counted::new(model.denoiser.as_ref(), model.prediction);
    let mut fixed = crate::samplers_b::FixedNoise(copies(&draws[..5]));
    let want = tch::no_grad(|| sampler.sample(&counted, z.shallow_clone(), &mut fixed)).unwrap();
    let got = Tensor::read_npy(&out).unwrap();
    assert!(rel_err(&got, &want) < 1e-6, "{}", rel_err(&got, &want));
    // Other draws give another sample: the file is what was used.
    let (_, _, other) = run(&npz("five_b.npz", &draws[1..6]));
    assert!(rel_err(&Tensor::read_npy(&other).unwrap(), &want) > 1e-3);
    for (name, arrays, msg) in [
        ("four.npz", copies(&draws[..4]), "holds 4 arrays; the sampler draws more"),
        ("six.npz", copies(&draws), "holds 6 arrays; the sampler drew 5"),
        ("shape.npz", (0..5).map(|_| Tensor::zeros([1, 3, 4, 4], opts)).collect(), "arr_0 has shape [1, 3, 4, 4]; draw 0 of the sampler is [2, 3, 4, 4]"),
    ] {
        let path = npz(name, &arrays);
        let (code, err, _) = run(&path);
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err, format!("error: {}: {msg}\n", path.display()));
    }
}
