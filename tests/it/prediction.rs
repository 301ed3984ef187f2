//! Model output parameterisations (`model.prediction`): every sampler with v- and x0-prediction
//! models against diffusers on a random-weight UNet (float64 on both sides, same noise), and the
//! Gaussian oracle re-expressed as a v- or x0-model giving the ε oracle's samples.
use crate::common::*;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{read_npy, write_npy};
use samplerbench::models::oracle::GaussianOracle;
use samplerbench::models::unet;
use samplerbench::models::Prediction;
use samplerbench::sampling::{build_from_text, Counted, NoiseSource};
use samplerbench::schedule::NoiseSchedule;
use serde_json::json;
use tch::{Device, Kind, Tensor};

const REF_PY: &str = include_str!("py/prediction_ref.py");
const SHAPE: [i64; 4] = [2, 3, 8, 8];

fn to_array(t: &Tensor) -> ArrayD<f64> {
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    ArrayD::from_shape_vec(IxDyn(&shape), Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()).unwrap()
}

fn from_array(a: &ArrayD<f64>) -> Tensor {
    let shape: Vec<i64> = a.shape().iter().map(|&s| s as i64).collect();
    Tensor::from_slice(a.as_slice().unwrap()).view(shape.as_slice())
}

/// The exact float64 schedule both sides use (diffusers would compute it in float32).
fn write_betas(d: &std::path::Path) {
    write_npy(d.join("betas.npy"), &ndarray::Array1::from(NoiseSchedule::ddpm_linear().betas)).unwrap();
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / b.norm().double_value(&[])
}

struct FixedNoise(Vec<Tensor>);
impl NoiseSource for FixedNoise {
    fn noise(&mut self, step: usize, _like: &Tensor) -> Tensor {
        self.0[step].shallow_clone()
    }
}

/// (our sampler, its parameters, diffusers class, its config, η of a stochastic DDIM step,
/// whether the sampler draws noise).
type Case = (&'static str, Vec<(&'static str, &'static str)>, &'static str, serde_json::Value, Option<f64>, bool);

fn cases() -> Vec<Case> {
    let lin = ("skip", "linspace");
    vec![
        ("ddim", vec![("skip", "leading"), ("prev", "stride")], "DDIMScheduler", json!({"clip_sample": false}), None, false),
        ("ddim", vec![("skip", "leading"), ("prev", "stride"), ("eta", "0.5")], "DDIMScheduler", json!({"clip_sample": false}), Some(0.5), true),
        ("ddpm", vec![("skip", "leading")], "DDPMScheduler", json!({"clip_sample": false}), None, true),
        ("dpm_solver++", vec![lin], "DPMSolverMultistepScheduler", json!({}), None, false),
        ("dpm_solver++", vec![lin, ("method", "singlestep")], "DPMSolverSinglestepScheduler", json!({"lower_order_final": true}), None, false),
        (
            "dpm_solver",
            vec![lin, ("method", "multistep"), ("order", "2")],
            "DPMSolverMultistepScheduler",
            json!({"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
            None,
            false,
        ),
        (
            "dpm_solver",
            vec![lin, ("method", "singlestep"), ("order", "2")],
            "DPMSolverSinglestepScheduler",
            json!({"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "lower_order_final": true}),
            None,
            false,
        ),
        ("unipc", vec![lin, ("variant", "bh2")], "UniPCMultistepScheduler", json!({"solver_type": "bh2"}), None, false),
        ("deis", vec![], "DEISMultistepScheduler", json!({}), None, false),
        ("euler", vec![], "EulerDiscreteScheduler", json!({}), None, false),
        ("euler_ancestral", vec![], "EulerAncestralDiscreteScheduler", json!({}), None, true),
        ("heun", vec![], "HeunDiscreteScheduler", json!({}), None, false),
        ("lms", vec![], "LMSDiscreteScheduler", json!({}), None, false),
        ("kdpm2", vec![], "KDPM2DiscreteScheduler", json!({}), None, false),
        ("f-pndm", vec![("alpha_index", "diffusers"), ("skip", "leading")], "PNDMScheduler", json!({"skip_prk_steps": false}), None, false),
        ("plms", vec![], "PNDMScheduler", json!({"skip_prk_steps": true}), None, false),
        ("lcm", vec![], "LCMScheduler", json!({}), None, true),
        ("tcd", vec![], "TCDScheduler", json!({}), None, true),
        // SASolverScheduler draws noise at every step, also where τ = 0: both cases feed it.
        ("sa_solver", vec![], "SASolverScheduler", json!({}), None, true),
        (
            "sa_solver",
            vec![("tau", "0"), ("predict", "noise"), ("predictor_order", "3"), ("corrector_order", "3")],
            "SASolverScheduler",
            json!({"tau_window": [0, 200, 800], "algorithm_type": "noise_prediction", "predictor_order": 3, "corrector_order": 3}),
            None,
            true,
        ),
        ("sa_solver", vec![("skip", "karras"), ("predictor_order", "4"), ("corrector_order", "1")], "SASolverScheduler", json!({"use_karras_sigmas": true, "predictor_order": 4, "corrector_order": 1}), None, true),
    ]
}

/// The UNet's ε/v/x0 are never clipped here; where diffusers would clip (DDPM, DDIM defaults)
/// the configs turn it off, and clipping itself is checked in `clipping_matches_diffusers`.
#[test]
fn v_and_sample_prediction_match_diffusers_on_a_random_unet() {
    const STEPS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_betas(d);
    seed_torch(11);
    let z = Tensor::randn(SHAPE, (Kind::Double, Device::Cpu));
    write_npy(d.join("z.npy"), &to_array(&z)).unwrap();
    seed_torch(12);
    let noise: Vec<Tensor> = (0..STEPS).map(|_| Tensor::randn(SHAPE, (Kind::Double, Device::Cpu))).collect();
    write_npy(d.join("noise.npy"), &to_array(&Tensor::stack(&noise, 0))).unwrap();
    let mut json_cases = Vec::new();
    let mut ours = Vec::new();
    for prediction in ["v_prediction", "sample"] {
        for (name, kv, cls, config, eta, stochastic) in cases() {
            // diffusers' PNDMScheduler refuses x0-prediction (so does bench); its Euler-ancestral
            // and KDPM2 schedulers have not implemented it.
            if prediction == "sample" && ["PNDMScheduler", "EulerAncestralDiscreteScheduler", "KDPM2DiscreteScheduler"].contains(&cls) {
                continue;
            }
            let id = format!("{prediction}-{name}-{}", json_cases.len());
            json_cases.push(json!({"id": id, "cls": cls, "config": config, "prediction": prediction, "steps": STEPS,
                                   "eta": eta, "noise": if stochastic { Some("noise.npy") } else { None }}));
            ours.push((id, name, kv, prediction, stochastic));
        }
    }
    std::fs::write(d.join("cases.json"), serde_json::to_string(&json_cases).unwrap()).unwrap();
    let labels: serde_json::Value = serde_json::from_str(run_python(REF_PY, &[d.to_str().unwrap()]).trim()).unwrap();
    let unet = unet::load(&d.join("unet"), Device::Cpu, Kind::Double).unwrap();
    let sch = NoiseSchedule::ddpm_linear();
    let (mut worst, mut report) = (0f64, String::new());
    for (id, name, kv, prediction, stochastic) in ours {
        let sampler = build_from_text(name, &kv, STEPS, &sch).unwrap_or_else(|e| panic!("{id}: {e}"));
        let counted = Counted::new(&unet, Prediction::parse(prediction).unwrap()).with_trace();
        let mut fixed = FixedNoise(if stochastic { noise.iter().map(|t| t.shallow_clone()).collect() } else { vec![] });
        let x = sampler.sample(&counted, z.shallow_clone(), &mut fixed).unwrap();
        let want: Vec<f64> = labels[&id].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let traced: Vec<f64> = counted.take_trace().into_iter().map(|(t, _, _)| t).collect();
        assert_eq!(traced.len(), want.len(), "{id}: NFE");
        let dl = traced.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(dl <= 1e-4, "{id}: labels {traced:?} vs {want:?}");
        let reference: ArrayD<f64> = read_npy(d.join(format!("out_{id}.npy"))).unwrap();
        let err = rel_l2(&x, &from_array(&reference));
        report += &format!("{id:<40} rel L2 {err:.2e}\n");
        worst = worst.max(err);
        assert!(err <= 1e-5, "{id}: rel L2 {err:.3e} vs diffusers");
    }
    eprintln!("{report}worst {worst:.3e}");
}

/// diffusers' DDIM and DDPM default to `clip_sample: True`: x̂0 clipped to ±1 and ε recomputed
/// from it; DPM-Solver++ with dynamic thresholding. A v-model on noisy data clips at every step.
#[test]
fn clipping_and_thresholding_match_diffusers() {
    const STEPS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_betas(d);
    seed_torch(21);
    let z = Tensor::randn(SHAPE, (Kind::Double, Device::Cpu)) * 3.0;
    write_npy(d.join("z.npy"), &to_array(&z)).unwrap();
    seed_torch(22);
    let noise: Vec<Tensor> = (0..STEPS).map(|_| Tensor::randn(SHAPE, (Kind::Double, Device::Cpu))).collect();
    write_npy(d.join("noise.npy"), &to_array(&Tensor::stack(&noise, 0))).unwrap();
    let cases: Vec<Case> = vec![
        ("ddim", vec![("skip", "leading"), ("prev", "stride"), ("clip_sample", "true")], "DDIMScheduler", json!({}), None, false),
        (
            "ddim",
            vec![("skip", "leading"), ("prev", "stride"), ("clip_sample", "true"), ("clip_sample_range", "0.5")],
            "DDIMScheduler",
            json!({"clip_sample_range": 0.5}),
            None,
            false,
        ),
        ("ddpm", vec![("skip", "leading"), ("clip_sample", "true")], "DDPMScheduler", json!({}), None, true),
        (
            "ddim",
            vec![("skip", "leading"), ("prev", "stride"), ("thresholding", "true"), ("dynamic_thresholding_ratio", "0.9"), ("sample_max_value", "1.5")],
            "DDIMScheduler",
            json!({"thresholding": true, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}),
            None,
            false,
        ),
        (
            "dpm_solver++",
            vec![("skip", "linspace"), ("thresholding", "true"), ("dynamic_thresholding_ratio", "0.9"), ("sample_max_value", "1.5")],
            "DPMSolverMultistepScheduler",
            json!({"thresholding": true, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}),
            None,
            false,
        ),
        (
            "sa_solver",
            vec![("tau", "0"), ("thresholding", "true"), ("dynamic_thresholding_ratio", "0.9"), ("sample_max_value", "1.5")],
            "SASolverScheduler",
            json!({"tau_window": [0, 200, 800], "thresholding": true, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}),
            None,
            true,
        ),
    ];
    let mut json_cases = Vec::new();
    for (i, (_, _, cls, config, eta, stochastic)) in cases.iter().enumerate() {
        json_cases.push(json!({"id": i.to_string(), "cls": cls, "config": config, "prediction": "v_prediction", "steps": STEPS,
                               "eta": eta, "noise": if *stochastic { Some("noise.npy") } else { None }}));
    }
    std::fs::write(d.join("cases.json"), serde_json::to_string(&json_cases).unwrap()).unwrap();
    run_python(REF_PY, &[d.to_str().unwrap()]);
    let unet = unet::load(&d.join("unet"), Device::Cpu, Kind::Double).unwrap();
    let sch = NoiseSchedule::ddpm_linear();
    for (i, (name, kv, _, _, _, stochastic)) in cases.into_iter().enumerate() {
        let sampler = build_from_text(name, &kv, STEPS, &sch).unwrap();
        let mut fixed = FixedNoise(if stochastic { noise.iter().map(|t| t.shallow_clone()).collect() } else { vec![] });
        let x = sampler.sample(&Counted::new(&unet, Prediction::VPrediction), z.shallow_clone(), &mut fixed).unwrap();
        let reference: ArrayD<f64> = read_npy(d.join(format!("out_{i}.npy"))).unwrap();
        let err = rel_l2(&x, &from_array(&reference));
        assert!(err <= 1e-5, "{name} {kv:?}: rel L2 {err:.3e} vs diffusers");
        // Clipping acts: the unclipped sampler gives another result.
        let clip_keys = ["clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio", "sample_max_value"];
        let unclipped: Vec<(&str, &str)> = kv.iter().copied().filter(|(k, _)| !clip_keys.contains(k)).collect();
        let plain = build_from_text(name, &unclipped, STEPS, &sch).unwrap();
        let mut fixed = FixedNoise(if stochastic { noise.iter().map(|t| t.shallow_clone()).collect() } else { vec![] });
        let y = plain.sample(&Counted::new(&unet, Prediction::VPrediction), z.shallow_clone(), &mut fixed).unwrap();
        assert!(rel_l2(&y, &x) > 1e-3, "{name} {kv:?}: clipping had no effect");
    }
}

/// The Gaussian oracle answering as a v- or x0-model gives the ε oracle's samples wherever the
/// sampler's ᾱ at a call is the schedule's ᾱ at the call's label (integer labels, the DPM-Solver
/// repo's continuous grid). On diffusers' grids the sampler's ᾱ comes from σ̃ rounded to float32
/// and differs from the label's by ~1e-7: a real v-model sees the same mismatch. The PNDM family
/// is not in this list on purpose: it converts a combination of outputs taken at different
/// points (as diffusers does), which is a different method for v than for ε.
#[test]
fn v_and_x0_oracles_give_the_eps_oracles_samples() {
    let sch = NoiseSchedule::ddpm_linear();
    seed_torch(3);
    let opts = (Kind::Double, Device::Cpu);
    let (mean, std) = (Tensor::randn([3, 4, 4], opts) * 0.3, Tensor::rand([3, 4, 4], opts) * 0.5 + 0.1);
    let z = Tensor::randn([4, 3, 4, 4], opts);
    let eps = GaussianOracle::new(sch.clone(), mean.shallow_clone(), std.shallow_clone());
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("ddim", vec![("skip", "uniform")]),
        ("ddim", vec![("skip", "quadratic"), ("eta", "0.7")]),
        ("ddpm", vec![("skip", "uniform")]),
        ("dpm_solver", vec![]),
        ("dpm_solver", vec![("method", "multistep"), ("skip", "time_uniform")]),
        ("dpm_solver++", vec![]),
        ("dpm_solver++", vec![("method", "singlestep"), ("order", "3")]),
        ("unipc", vec![("order", "3")]),
        ("deis", vec![("skip", "logsnr"), ("order", "3")]),
    ];
    for (name, kv) in cases {
        let s = build_from_text(name, &kv, 10, &sch).unwrap();
        seed_torch(9);
        let want = s.sample(&Counted::new(&eps, Prediction::Epsilon), z.shallow_clone(), &mut samplerbench::sampling::GlobalRng).unwrap();
        for p in [Prediction::VPrediction, Prediction::Sample] {
            let model = GaussianOracle::new(sch.clone(), mean.shallow_clone(), std.shallow_clone()).with_output(p);
            seed_torch(9);
            let got = s.sample(&Counted::new(&model, p), z.shallow_clone(), &mut samplerbench::sampling::GlobalRng).unwrap();
            let err = rel_l2(&got, &want);
            assert!(err <= 1e-12, "{name} {kv:?} {p:?}: {err:.3e}");
        }
    }
}

/// DDPM with a learned-variance model (6-channel UNet: ε, then v) against diffusers'
/// `DDPMScheduler(variance_type="learned_range")`, float64 on both sides, the same injected noise,
/// with and without x̂0 clipping. Both sides run the same float64 arithmetic on the same weights,
/// so the only differences are op-order roundings (~1e-15 per op over 10 steps of a UNet whose
/// outputs are O(1)): 1e-5 leaves a wide margin, while taking the fixed posterior variance
/// instead of the learned one moves the result by > 1e-3.
#[test]
fn learned_variance_ddpm_matches_diffusers() {
    const STEPS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_betas(d);
    seed_torch(31);
    let z = Tensor::randn(SHAPE, (Kind::Double, Device::Cpu));
    write_npy(d.join("z.npy"), &to_array(&z)).unwrap();
    seed_torch(32);
    let noise: Vec<Tensor> = (0..STEPS).map(|_| Tensor::randn(SHAPE, (Kind::Double, Device::Cpu))).collect();
    write_npy(d.join("noise.npy"), &to_array(&Tensor::stack(&noise, 0))).unwrap();
    let cases = [
        (vec![("skip", "leading"), ("variance_type", "learned_range")], json!({"variance_type": "learned_range", "clip_sample": false})),
        (
            vec![("skip", "leading"), ("variance_type", "learned_range"), ("clip_sample", "true")],
            json!({"variance_type": "learned_range", "clip_sample": true}),
        ),
    ];
    let json_cases: Vec<_> =
        cases.iter().enumerate().map(|(i, (_, cfg))| json!({"id": i.to_string(), "config": cfg, "steps": STEPS})).collect();
    std::fs::write(d.join("cases.json"), serde_json::to_string(&json_cases).unwrap()).unwrap();
    run_python(include_str!("py/ddpm_learned_ref.py"), &[d.to_str().unwrap()]);
    let unet = unet::load(&d.join("unet"), Device::Cpu, Kind::Double).unwrap();
    assert!(unet.config.learned_variance());
    let sch = NoiseSchedule::ddpm_linear();
    let run = |kv: &[(&str, &str)]| {
        let sampler = build_from_text("ddpm", kv, STEPS, &sch).unwrap();
        let mut fixed = FixedNoise(noise.iter().map(|t| t.shallow_clone()).collect());
        sampler.sample(&Counted::new(&unet, Prediction::Epsilon), z.shallow_clone(), &mut fixed).unwrap()
    };
    for (i, (kv, _)) in cases.iter().enumerate() {
        // The variance half is not degenerate: v spans a range of values around the steps.
        let v: ArrayD<f64> = read_npy(d.join(format!("v_{i}.npy"))).unwrap();
        let spread = v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.1, "v spread {spread}");
        let x = run(kv);
        let reference: ArrayD<f64> = read_npy(d.join(format!("out_{i}.npy"))).unwrap();
        let err = rel_l2(&x, &from_array(&reference));
        eprintln!("learned_range case {i} ({kv:?}): rel L2 {err:.3e}");
        assert!(err <= 1e-5, "case {i}: rel L2 {err:.3e} vs diffusers");
        let fixed_kv: Vec<(&str, &str)> = kv.iter().copied().filter(|(k, _)| *k != "variance_type").collect();
        let moved = rel_l2(&run(&fixed_kv), &x);
        assert!(moved > 1e-3, "case {i}: the learned variance had no effect ({moved:.3e})");
    }
}
