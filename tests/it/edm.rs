//! EDM networks from NVlabs/edm snapshot pickles: the data-only reader, the native SongUNet /
//! DhariwalUNet / preconditionings / edm_sampler against EDM's own numbers, and refusal of
//! pickles that would run code.
//!
//! The pickles are written at test time by `py/edm_pickles.py` (EDM's layout, seeded random
//! weights, no EDM code). `golden/edm.npz` holds what EDM's own code computed on exactly these
//! files once (NVlabs/edm at 008a4e5, CPU fp32): D(x; σ), the raw network F, three sampler
//! trajectories, and fingerprints of the weights and inputs so a change in torch's seeded RNG
//! shows up as such rather than as a parity failure.
use crate::common::*;
use samplerbench::checkpoint::{self, persistence, Value};
use samplerbench::models::edm::sampler::EdmSamplerOptions;
use samplerbench::models::edm::EdmNetwork;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

const PY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/golden/edm.npz");
const CONFIGS: [&str; 5] = ["vp_ddpmpp", "ve_ncsnpp", "edm_song_skip_cond", "iddpm_adm_cond", "edm_adm"];

/// The fixture pickles, written once per test run (about 15 s of Python).
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("edm_fixtures");
        let script = std::fs::read_to_string(Path::new(PY_DIR).join("edm_pickles.py")).unwrap();
        run_python(&script, &[dir.to_str().unwrap()]);
        dir
    })
}

fn npz(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_npz(path).unwrap().into_iter().collect()
}

fn golden() -> HashMap<String, Tensor> {
    npz(Path::new(GOLDEN))
}

fn inputs() -> HashMap<String, Tensor> {
    npz(&fixtures().join("inputs.npz"))
}

fn load(name: &str) -> EdmNetwork {
    EdmNetwork::load_pickle(&fixtures().join(format!("{name}.pkl")), Device::Cpu, Kind::Float).unwrap()
}

/// The fixture weights and inputs are the ones EDM's numbers were computed from: equal sums of
/// all weights and of their squares. Sums of ≤ 4M fp32 values in f64 in another order agree to
/// n·2⁻⁵³·Σ|w| ≤ 1e-9·√(n·Σw²) (Cauchy–Schwarz); squares are positive, so 1e-9 relative.
#[test]
fn fixtures_reproduce_the_weights_edm_saw() {
    let g = golden();
    for name in CONFIGS {
        let root = checkpoint::load_object_pickle(&fixtures().join(format!("{name}.pkl"))).unwrap();
        let sd = persistence::module_tensors(root.at("ema").unwrap()).unwrap();
        let n: i64 = sd.values().map(|t| t.numel() as i64).sum();
        let sum: f64 = sd.values().map(|t| t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])).sum();
        let sumsq: f64 = sd.values().map(|t| t.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])).sum();
        let (gsum, gsq) = (g[&format!("{name}__wsum")].double_value(&[]), g[&format!("{name}__wsumsq")].double_value(&[]));
        assert!((sumsq - gsq).abs() <= 1e-9 * gsq, "{name}: Σw² {sumsq} vs EDM's {gsq}");
        assert!((sum - gsum).abs() <= 1e-9 * (n as f64 * gsq).sqrt(), "{name}: Σw {sum} vs EDM's {gsum}");
    }
    let inp = inputs();
    for k in ["x", "latents", "churn_noise"] {
        let s = inp[k].to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        let want = g[&format!("inputs__{k}_sum")].double_value(&[]);
        assert!((s - want).abs() <= 1e-9 * (inp[k].numel() as f64), "input {k}: Σ {s} vs {want}");
    }
}

#[test]
fn snapshot_objects_are_walked_by_attribute_path() {
    let root = checkpoint::load_object_pickle(&fixtures().join("edm_song_skip_cond.pkl")).unwrap();
    let Value::Object(ema) = root.at("ema").unwrap() else { panic!("ema is not an object") };
    assert_eq!((ema.class.as_str(), ema.persistent), ("EDMPrecond", true));
    // Attributes, hyperparameters, submodules through `_modules`, ModuleDict entries, tensors.
    assert!(matches!(root.at("ema.img_resolution").unwrap(), Value::Int(16)));
    assert!(matches!(root.at("ema.sigma_max").unwrap(), Value::Float(f) if f.is_infinite()));
    assert!(matches!(root.at("ema._init_kwargs.model_type").unwrap(), Value::Str(s) if s == "SongUNet"));
    assert!(matches!(root.at("ema.model._init_kwargs.encoder_type").unwrap(), Value::Str(s) if s == "skip"));
    let Value::Object(enc) = root.at("ema.model.enc").unwrap() else { panic!() };
    assert_eq!((enc.class.as_str(), enc.persistent), ("torch.nn.modules.container.ModuleDict", false));
    let Value::Tensor(w) = root.at("ema.model.enc.16x16_conv.weight").unwrap() else { panic!() };
    assert_eq!(w.size(), [16, 3, 3, 3]);
    let Value::Tensor(f) = root.at("ema.model.enc.8x8_aux_down.resample_filter").unwrap() else { panic!() };
    assert_eq!(Vec::<f32>::try_from(f.flatten(0, -1)).unwrap(), vec![0.25; 4]);
    // NumPy float64 attributes are numbers; None-valued parameters stay None.
    assert!(matches!(root.at("ema.model.enc.16x16_block0.skip_scale").unwrap(), Value::Float(f) if *f == 0.5f64.sqrt()));
    assert!(matches!(root.at("ema.model.map_augment.bias").unwrap(), Value::None));
    let Value::Object(loss) = root.at("loss_fn").unwrap() else { panic!() };
    assert_eq!(loss.class, "EDMLoss");
    assert!(matches!(root.at("loss_fn.sigma_data").unwrap(), Value::Float(f) if *f == 0.5));
    assert!(matches!(root.at("dataset_kwargs.resolution").unwrap(), Value::Int(16)));
    let err = root.at("ema.model.enc.99x99_conv").unwrap_err();
    assert!(err.starts_with("no attribute `99x99_conv` in torch.nn.modules.container.ModuleDict (attributes: 16x16_conv, "), "{err}");

    let net = load("edm_song_skip_cond");
    assert_eq!((net.resolution(), net.channels(), net.label_dim(), net.augment_dim()), (16, 3, 10, 9));
    assert_eq!((net.sigma_min(), net.sigma_max()), (0.0, f64::INFINITY));
    assert_eq!(net.parameter_count(), 313_737); // EDM's sum(p.numel() for p in net.parameters())
    let vp = load("vp_ddpmpp");
    // VPPrecond's σ(ε_t) and σ(1) as EDM computes and stores them (fp32; the one-time run
    // checked the fixture's values against a VPPrecond built by EDM's code).
    assert_eq!((vp.sigma_min(), vp.sigma_max()), (0.0009765625, 152.16697692871094));
}

/// D(x; σ) and the raw network F against EDM's, fp32 on the CPU. The same libtorch kernels run in
/// the same order, so on one machine the difference is a few fp32 ulps (~1e-7); another CPU may
/// pick other convolution / GEMM blockings, changing sums of ≤ 1.2k products per output by
/// ~√k·2⁻²⁴ each through ~20 layers: 1e-5 relative L2 bounds that with margin.
#[test]
fn native_networks_match_edm() {
    let (g, inp) = (golden(), inputs());
    let mut report = vec![];
    for name in CONFIGS {
        let net = load(name);
        let labels = (net.label_dim() > 0).then(|| &inp["labels"]);
        let d = net.denoise(&inp["x"], &inp["sigma"], labels).unwrap();
        let e = rel_err(&d, &g[&format!("{name}__D")]);
        report.push(format!("{name} D {e:.1e}"));
        assert!(e <= 1e-5, "{name}: D relative L2 error {e}");
        let kind = name.split('_').next().unwrap();
        let augment = (net.augment_dim() > 0).then(|| &inp["augment"]);
        let f = net.network_forward(&inp["x"], &inp[&format!("noise_labels_{kind}")], labels, augment).unwrap();
        let e = rel_err(&f, &g[&format!("{name}__F")]);
        report.push(format!("F {e:.1e}"));
        assert!(e <= 1e-5, "{name}: F relative L2 error {e}");
        if let Some(a) = augment {
            let d = net.denoise_with_augment(&inp["x"], &inp["sigma"], labels, Some(a)).unwrap();
            let e = rel_err(&d, &g[&format!("{name}__D_aug")]);
            report.push(format!("D(aug) {e:.1e}"));
            assert!(e <= 1e-5, "{name}: D with augment labels, relative L2 error {e}");
        }
        // The output keeps the input's dtype: fp64 in, the fp32 result widened.
        let d64 = net.denoise(&inp["x"].to_kind(Kind::Double), &inp["sigma"], labels).unwrap();
        assert_eq!(d64.kind(), Kind::Double);
        assert!(rel_err(&d64, &d) <= 1e-7);
    }
    eprintln!("native vs EDM: {}", report.join(", "));
}

/// `edm_sampler` (5 steps: 9 evaluations) against EDM's `generate.py::edm_sampler` with the
/// same latents and injected noise: deterministic Heun on an EDM and a VP network, and the
/// stochastic variant (S_churn = 40, S_min = 0.05, S_max = 50, S_noise = 1.003) on iDDPM's
/// discrete levels. The fp64 state only adds rounding; the fp32 network's ≤1e-6 differences
/// pass through 9 evaluations with gains of order one, so 1e-5 bounds them.
#[test]
fn edm_sampler_matches_edm() {
    let (g, inp) = (golden(), inputs());
    let cases = [
        ("traj_heun__edm_song_skip_cond", EdmSamplerOptions { num_steps: 5, ..Default::default() }),
        ("traj_heun__vp_ddpmpp", EdmSamplerOptions { num_steps: 5, ..Default::default() }),
        (
            "traj_churn__iddpm_adm_cond",
            EdmSamplerOptions { num_steps: 5, s_churn: 40.0, s_min: 0.05, s_max: 50.0, s_noise: 1.003, ..Default::default() },
        ),
    ];
    let mut report = vec![];
    for (key, opts) in cases {
        let name = key.split("__").nth(1).unwrap();
        let net = load(name);
        let labels = (net.label_dim() > 0).then(|| &inp["labels"]);
        let stream = &inp["churn_noise"];
        let mut noise = |i: usize, _: &Tensor| Ok(stream.get(i as i64));
        let (x, evals) = net.sample(&inp["latents"], labels, &opts, &mut noise).unwrap();
        assert_eq!(evals, 9);
        assert_eq!(x.kind(), Kind::Double);
        let e = rel_err(&x, &g[key]);
        report.push(format!("{key} {e:.1e}"));
        assert!(e <= 1e-5, "{key}: relative L2 error {e}");
    }
    eprintln!("edm_sampler vs EDM: {}", report.join(", "));
}

#[test]
fn iddpm_rounds_sigma_to_its_levels() {
    let net = load("iddpm_adm_cond");
    let top = Tensor::from_slice(&[net.sigma_max(), net.sigma_min(), 1e6, 0.0]);
    let r = Vec::<f64>::try_from(net.round_sigma(&top)).unwrap();
    // σ_max = u_0 and σ_min = u_{M−1} are levels; far outside, the nearest end level; 0 = u_M.
    assert_eq!(r, vec![net.sigma_max(), net.sigma_min(), net.sigma_max(), 0.0]);
    let c = net.coefficients(&Tensor::from_slice(&[net.sigma_max(), net.sigma_min()]));
    assert_eq!(Vec::<f32>::try_from(c.c_noise).unwrap(), vec![999.0, 0.0]);
}

/// Runs Python `code` with the fixture module importable (as `E`, its stand-in for EDM's
/// persistence registered) and `args` as sys.argv[1:].
fn with_fixture_module(code: &str, args: &[&str]) {
    run_python(
        &format!(
            "import sys; sys.path.insert(0, {PY_DIR:?})\nimport edm_pickles as E\n\
             E.RECONSTRUCT = E.stand_in('torch_utils.persistence', '_reconstruct_persistent_obj')\n\
             E.SOURCES.update({{'training.networks': '', 'training.loss': ''}})\n{code}"
        ),
        args,
    );
}

/// A file that would run code when unpickled is refused before anything is built from it,
/// whatever the gadget; the marker file the payload would create never appears. The same file
/// does create it under Python's `pickle.load`, so the payload is live.
#[test]
fn pickles_that_would_run_code_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    // EDM snapshots whose payload sits after the network, deep inside `dataset_kwargs`.
    with_fixture_module(
        r#"
import os, builtins, subprocess, pickle
out, m = sys.argv[1], sys.argv[2]
gadgets = {
    "os_system": (os.system, (f"touch {m}",)),
    "exec": (builtins.exec, (f"open({m!r}, 'w').write('x')",)),
    "popen": (subprocess.Popen, (["touch", m],)),
    "eval": (builtins.eval, (f"open({m!r}, 'w')",)),
}
class Payload:
    def __init__(self, reduce): self.reduce = reduce
    def __reduce__(self): return self.reduce
for name, reduce in gadgets.items():
    snap = E.snapshot("vp_ddpmpp", 0)
    snap["dataset_kwargs"]["hook"] = [Payload(reduce)]
    pickle.dump(snap, open(os.path.join(out, name + ".pkl"), "wb"))
"#,
        &[dir.path().to_str().unwrap(), marker.to_str().unwrap()],
    );
    for (file, global) in [("os_system", "posix.system"), ("exec", "builtins.exec"), ("popen", "subprocess.Popen"), ("eval", "builtins.eval")] {
        let path = dir.path().join(format!("{file}.pkl"));
        let err = EdmNetwork::load_pickle(&path, Device::Cpu, Kind::Float).err().expect("refused");
        let msg = err.to_string();
        assert_eq!(err.exit_code(), 2, "{msg}");
        assert_eq!(
            msg,
            format!(
                "{}: refusing to load: the pickle references `{global}`, which would run code or reach the system when unpickled; this is not a model file (nothing was executed)",
                path.display()
            )
        );
        assert!(!marker.exists(), "{file}: the payload ran");
        // The generic reader refuses it the same way.
        assert!(checkpoint::load_object_pickle(&path).is_err());
    }
    // The os.system file is a live exploit for Python's own unpickler (given EDM's module, here
    // a stand-in that returns the meta dict).
    run_python(
        r#"
import pickle, sys, types
sys.modules["torch_utils"] = types.ModuleType("torch_utils")
sys.modules["torch_utils.persistence"] = m = types.ModuleType("torch_utils.persistence")
m._reconstruct_persistent_obj = lambda meta: meta
pickle.load(open(sys.argv[1], "rb"))
"#,
        &[dir.path().join("os_system.pkl").to_str().unwrap()],
    );
    assert!(marker.exists(), "Python's pickle.load should have run the payload");
}

/// Unknown classes are never imported or called: they stay inert objects recording their
/// arguments, so a snapshot from a different codebase reads as data and fails as "not EDM".
#[test]
fn unknown_classes_stay_inert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.pkl");
    run_python(
        r#"
import pickle, sys, types
mod = types.ModuleType("somelab.nets"); sys.modules["somelab"] = types.ModuleType("somelab"); sys.modules["somelab.nets"] = mod
def build(*a): raise RuntimeError("must not be called")
build.__module__ = "somelab.nets"; mod.build = build
class Net:
    def __reduce__(self):
        return (build, (3, "wide"), {"depth": 7})
pickle.dump({"ema": Net()}, open(sys.argv[1], "wb"))
"#,
        &[path.to_str().unwrap()],
    );
    let root = checkpoint::load_object_pickle(&path).unwrap();
    let Value::Object(o) = root.at("ema").unwrap() else { panic!() };
    assert_eq!((o.class.as_str(), o.persistent), ("somelab.nets.build", false));
    assert!(matches!(o.args.as_slice(), [Value::Int(3), Value::Str(s)] if s == "wide"));
    assert!(matches!(root.at("ema.depth").unwrap(), Value::Int(7)));
    let err = EdmNetwork::load_pickle(&path, Device::Cpu, Kind::Float).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: `ema` is a somelab.nets.build; supported preconditioners: EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond",
            path.display()
        )
    );
    assert_eq!(err.exit_code(), 2);
}

/// A snapshot whose weights or arguments do not fit is a user error naming the key, and bad
/// inputs to `denoise` are user errors too, never panics.
#[test]
fn malformed_snapshots_and_inputs_are_user_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Each variant edits a fresh VP DDPM++ snapshot: `snap`, its model's `__dict__` `model`.
    let variants = [
        ("shape", "model['_modules']['map_layer0'].state['_parameters']['bias'] = torch.zeros(5)",
         "weights do not match the VPPrecond SongUNet configuration; wrong shapes: model.map_layer0.bias (file [5], expected [64])"),
        ("missing", "del model['_modules']['enc'].__dict__['_modules']['16x16_block0'].state['_modules']['conv1'].state['_parameters']['weight']",
         "missing keys: model.enc.16x16_block0.conv1.weight"),
        ("kwarg", "model['_init_kwargs']['frobnicate'] = 1", "SongUNet arguments (ema.model._init_kwargs): unsupported argument(s) `frobnicate`"),
        ("enc", "model['_init_kwargs']['encoder_type'] = 'fancy'", "`encoder_type` is \"fancy\", expected one of [\"standard\", \"skip\", \"residual\"]"),
        ("res", "model['_init_kwargs']['img_resolution'] = 18", "img_resolution 18 is not divisible by 2^2"),
        ("precond", "snap['ema'].class_name = 'FancyPrecond'", "`ema` is a FancyPrecond; supported preconditioners"),
    ];
    let edits: Vec<String> = variants.iter().map(|(f, e, _)| format!("({f:?}, {e:?})")).collect();
    with_fixture_module(
        &format!(
            r#"
import os, pickle, torch
for name, edit in [{}]:
    snap = E.snapshot("vp_ddpmpp", 0)
    model = snap["ema"].state["_modules"]["model"].state
    exec(edit)
    pickle.dump(snap, open(os.path.join(sys.argv[1], name + ".pkl"), "wb"))
"#,
            edits.join(", ")
        ),
        &[dir.path().to_str().unwrap()],
    );
    for (file, _, want) in &variants {
        let path = dir.path().join(format!("{file}.pkl"));
        let err = EdmNetwork::load_pickle(&path, Device::Cpu, Kind::Float).err().unwrap_or_else(|| panic!("{} loaded", path.display()));
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}: ", path.display())) && msg.contains(want), "{msg}\nwanted: {want}");
        assert_eq!(err.exit_code(), 2, "{msg}");
    }
    let err = EdmNetwork::load_pickle(&dir.path().join("absent.pkl"), Device::Cpu, Kind::Float).err().unwrap();
    assert_eq!(err.to_string(), format!("{}: EDM network pickle not found", dir.path().join("absent.pkl").display()));

    let net = load("vp_ddpmpp");
    let x = Tensor::zeros([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let s = Tensor::from_slice(&[1.0f32, 2.0]);
    let bad = [
        net.denoise(&Tensor::zeros([2, 4, 16, 16], (Kind::Float, Device::Cpu)), &s, None).err(),
        net.denoise(&Tensor::zeros([2, 3, 18, 16], (Kind::Float, Device::Cpu)), &s, None).err(),
        net.denoise(&x, &Tensor::from_slice(&[1.0f32, 2.0, 3.0]), None).err(),
        net.denoise(&x, &s, Some(&Tensor::zeros([2, 10], (Kind::Float, Device::Cpu)))).err(),
        net.denoise_with_augment(&x, &s, None, Some(&Tensor::zeros([2, 9], (Kind::Float, Device::Cpu)))).err(),
        load("edm_song_skip_cond").denoise(&x, &s, Some(&Tensor::zeros([2, 7], (Kind::Float, Device::Cpu)))).err(),
    ];
    for (i, e) in bad.iter().enumerate() {
        let e = e.as_ref().unwrap_or_else(|| panic!("bad input {i} accepted"));
        assert_eq!(e.exit_code(), 2, "{e}");
    }
    assert!(bad[1].as_ref().unwrap().to_string().contains("expected a floating-point [B, 3, H, W] with H and W divisible by 4"));

    // Class labels reach the network one-hot; the null class (label_dim) is the zero vector,
    // EDM's unconditional input under label dropout.
    let cond = load("edm_song_skip_cond");
    let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let onehot = Tensor::zeros([2, 10], (Kind::Float, Device::Cpu));
    let _ = onehot.get(0).get(3).fill_(1.0);
    let direct = cond.denoise(&x, &s, Some(&onehot)).unwrap();
    let labels = samplerbench::models::Condition::Labels(Tensor::from_slice(&[3i64, 10]));
    let via = samplerbench::models::Denoiser::forward(&cond, &x, &s, Some(&labels)).unwrap();
    assert_eq!(rel_err(&via, &direct), 0.0);
}

/// `model: {kind: edm}` end to end: `bench sample` with `edm_heun` reproduces EDM's own
/// 5-step trajectory (the golden one above; latents rounded to fp32 first, 6e-8 relative), and
/// a DDIM entry is refused at plan time with the samplers that fit.
#[test]
fn bench_sample_and_run_drive_an_edm_pickle() {
    let (g, inp) = (golden(), inputs());
    let d = tempfile::tempdir().unwrap();
    let pkl = fixtures().join("vp_ddpmpp.pkl");
    inp["latents"].to_kind(Kind::Float).write_npy(d.path().join("latents.npy")).unwrap();
    let spec = d.path().join("edm.yaml");
    let text = format!(
        "name: edm\nmodel: {{kind: edm, path: {}}}\nsamplers:\n  - {{name: edm_heun}}\nsteps: 5\nsamples: 4\nbatch_size: 2\ndevice: cpu\noutput: {}\n",
        pkl.display(),
        d.path().join("out").display()
    );
    std::fs::write(&spec, &text).unwrap();
    let (latents, out) = (d.path().join("latents.npy"), d.path().join("x0.npy"));
    let o = bench(&["sample", spec.to_str().unwrap(), "--noise", latents.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("(9 model evaluations)"), "{}", stderr(&o));
    let e = rel_err(&Tensor::read_npy(&out).unwrap(), &g["traj_heun__vp_ddpmpp"]);
    eprintln!("bench sample edm_heun vs EDM: relative L2 {e:.1e}");
    assert!(e <= 1e-5, "relative L2 error {e}");
    // float64 noise is for oracle models; a network takes float32.
    inp["latents"].write_npy(d.path().join("latents64.npy")).unwrap();
    let latents64 = d.path().join("latents64.npy");
    let o = bench(&["sample", spec.to_str().unwrap(), "--noise", latents64.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let shape = inp["latents"].size();
    assert_eq!(
        stderr(&o),
        format!("error: {}: expected float32 [B,{},{},{}] noise, got Double {shape:?}\n", latents64.display(), shape[1], shape[2], shape[3])
    );

    let o = bench(&["run", spec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = samplerbench::results::read_results(&d.path().join("out")).unwrap();
    assert_eq!((rows.len(), rows[0].sampler.as_str(), rows[0].nfe, rows[0].samples), (1, "edm_heun", 9, 4));
    assert!(rows[0].seconds_per_step > 0.0 && rows[0].nan_samples == 0, "{:?}", rows[0]);

    // A VP sampler plans on the σ-space network (through the exact conversion); a flow sampler
    // does not.
    std::fs::write(&spec, text.replace("{name: edm_heun}", "{name: ddim}")).unwrap();
    let o = bench(&["run", spec.to_str().unwrap(), "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::write(&spec, text.replace("{name: edm_heun}", "{name: flow_euler}")).unwrap();
    let o = bench(&["run", spec.to_str().unwrap(), "--dry-run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "samplers[0].name: `flow_euler` runs on rectified-flow models (prediction: flow; its grid starts at t = 1, pure noise); this model is in σ space (x = x0 + σ·ε): use ddim,"
        ),
        "{}",
        stderr(&o)
    );
}

/// EDM's samplers on the exact Gaussian denoiser through `bench run` (`space: sigma`): fd_exact
/// equals the closed-form values of a numpy transcription of EDM's loop on N(0.3, 0.5²) data
/// (per coordinate: Heun 16 steps 1.3056678205e-3, Euler 16 steps 7.447337748e-3; 4 coordinates).
#[test]
fn sigma_space_oracle_runs_edm_samplers_with_exact_fd() {
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("s.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: s\nmodel: {{kind: oracle, space: sigma, data: {{kind: gaussian, shape: [1, 2, 2], mean: 0.3, std: 0.5}}}}\n\
             samplers:\n  - {{name: edm_heun}}\n  - {{name: edm_euler}}\nsteps: 16\nsamples: 8\nbatch_size: 8\ndevice: cpu\n\
             metrics: {{fd_exact: {{}}}}\noutput: {}\n",
            d.path().join("out").display()
        ),
    )
    .unwrap();
    let o = bench(&["run", spec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = samplerbench::results::read_results(&d.path().join("out")).unwrap();
    let fd = |name: &str| rows.iter().find(|r| r.sampler == name).and_then(|r| r.metric("fd_exact")).unwrap();
    for (name, want) in [("edm_heun", 4.0 * 1.3056678205409e-3), ("edm_euler", 4.0 * 7.447337748187e-3)] {
        assert!((fd(name) / want - 1.0).abs() < 1e-9, "{name}: {} vs {want}", fd(name));
    }
    // The σ-space oracle outputs x̂0 by definition; another prediction is refused.
    std::fs::write(&spec, std::fs::read_to_string(&spec).unwrap().replace("space: sigma,", "space: sigma, prediction: epsilon,")).unwrap();
    let o = bench(&["run", spec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("model.prediction: a sigma model outputs `sample`: leave `prediction` out or write `sample`"), "{}", stderr(&o));
}

/// Samplers across noise spaces through `bench run`: VP samplers on the σ-space oracle give the
/// VP oracle's exact FD (DDIM's integer labels: the same numbers), `edm_heun` on the flow oracle
/// gives the σ oracle's (the closed form above), and the pairs no exact conversion serves are
/// refused at plan time.
#[test]
fn samplers_run_on_models_of_other_noise_spaces() {
    let d = tempfile::tempdir().unwrap();
    let run = |space: &str, samplers: &str, extra: &str| {
        let spec = d.path().join(format!("{space}.yaml"));
        let out = d.path().join(format!("out-{space}"));
        std::fs::write(
            &spec,
            format!(
                "name: s\nmodel: {{kind: oracle, space: {space}, data: {{kind: gaussian, shape: [1, 2, 2], mean: 0.3, std: 0.5}}}}\n\
                 samplers:\n{samplers}steps: 16\nsamples: 8\nbatch_size: 8\ndevice: cpu\n{extra}\
                 metrics: {{fd_exact: {{}}}}\noutput: {}\n",
                out.display()
            ),
        )
        .unwrap();
        let o = bench(&["run", spec.to_str().unwrap()]);
        (o.status.code(), stderr(&o), samplerbench::results::read_results(&out).unwrap_or_default())
    };
    let fd = |rows: &[samplerbench::results::ResultRow], name: &str| rows.iter().find(|r| r.sampler == name).and_then(|r| r.metric("fd_exact")).unwrap();
    let vp_samplers = "  - {name: ddim}\n  - {name: dpm_solver++}\n  - {name: unipc}\n";
    let (code, err, vp) = run("vp", vp_samplers, "");
    assert_eq!(code, Some(0), "{err}");
    let (code, err, sigma) = run("sigma", vp_samplers, "");
    assert_eq!(code, Some(0), "{err}");
    for name in ["ddim", "dpm_solver++", "unipc"] {
        let (a, b) = (fd(&vp, name), fd(&sigma, name));
        assert!((a / b - 1.0).abs() < 1e-9, "{name}: VP model {a}, σ model {b}");
    }
    let (code, err, flow) = run("flow", "  - {name: edm_heun}\n", "");
    assert_eq!(code, Some(0), "{err}");
    let want = 4.0 * 1.3056678205409e-3;
    assert!((fd(&flow, "edm_heun") / want - 1.0).abs() < 1e-9, "{} vs {want}", fd(&flow, "edm_heun"));
    // `bench sample` converts too: DPM-Solver++ from the same float64 x_T on the VP and σ models.
    tch::manual_seed(5);
    let z = d.path().join("z.npy");
    Tensor::randn([3, 1, 2, 2], (Kind::Double, Device::Cpu)).write_npy(&z).unwrap();
    let sample = |space: &str| {
        let out = d.path().join(format!("x0-{space}.npy"));
        let spec = d.path().join(format!("{space}.yaml"));
        let o = bench(&["sample", spec.to_str().unwrap(), "--noise", z.to_str().unwrap(), "--out", out.to_str().unwrap(), "--sampler", "dpm_solver++"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        Tensor::read_npy(&out).unwrap()
    };
    let gap = (sample("vp") - sample("sigma")).abs().max().double_value(&[]);
    assert!(gap < 1e-13, "{gap}");

    let (code, err, _) = run("sigma", "  - {name: flow_euler}\n", "");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("samplers[0].name: `flow_euler` runs on rectified-flow models (prediction: flow; its grid starts at t = 1, pure noise); this model is in σ space (x = x0 + σ·ε): use "),
        "{err}"
    );
    let zsnr = "schedule: {kind: scaled_linear, beta_start: 0.00085, beta_end: 0.012, rescale_betas_zero_snr: true}\n";
    let (code, err, _) = run("sigma", "  - {name: ddim}\n", zsnr);
    assert_eq!(code, Some(2));
    assert!(err.contains("samplers[0].name: `ddim` on a σ-space model reads the schedule's levels, but it has zero terminal SNR (σ = ∞)"), "{err}");
}

/// EDM Table 1's general sampler (VP, VE and iDDPM time steps, σ(t), s(t), α, churn) against what
/// EDM's own `ablation_sampler` computed once on the exact Gaussian denoiser
/// (`golden/edm_ablation.json`): every call's σ and the final samples.
#[test]
fn ablation_sampler_matches_edm() {
    use samplerbench::models::oracle::GaussianOracle;
    use samplerbench::models::NoiseSpace;
    use samplerbench::sampling::{build_from_text, Counted, NoiseSource};
    let g: serde_json::Value = serde_json::from_str(include_str!("golden/edm_ablation.json")).unwrap();
    let rows = |v: &serde_json::Value| {
        let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
        let n = rows.len() as i64;
        Tensor::from_slice(&rows.concat()).view([n, 1, 2, 2])
    };
    let vec = |k: &str| Tensor::from_slice(&serde_json::from_value::<Vec<f64>>(g[k].clone()).unwrap()).view([1, 2, 2]);
    let o = GaussianOracle::new(samplerbench::schedule::NoiseSchedule::ddpm_linear(), vec("mean"), vec("std")).in_space(NoiseSpace::Sigma);
    let latents = rows(&g["latents"]);
    struct Injected(Vec<Tensor>);
    impl NoiseSource for Injected {
        fn noise(&mut self, step: usize, like: &Tensor) -> Tensor {
            self.0.get(step).map_or_else(|| like.zeros_like(), |t| t.shallow_clone())
        }
    }
    let mut report = String::new();
    for c in g["cases"].as_array().unwrap() {
        let name = c["sampler"].as_str().unwrap();
        let steps = c["steps"].as_u64().unwrap() as usize;
        let kv: Vec<(String, String)> = c["kwargs"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        let kv_ref: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let s = build_from_text(name, &kv_ref, steps, &o.schedule).unwrap();
        let counted = Counted::new(&o, o.output).with_trace();
        let noise = c.get("noise").map_or(Vec::new(), |n| n.as_array().unwrap().iter().map(rows).collect());
        let x = s.sample(&counted, latents.shallow_clone(), &mut Injected(noise)).unwrap();
        let calls: Vec<f64> = counted.take_trace().into_iter().map(|(t, _, _)| t).collect();
        let want: Vec<f64> = serde_json::from_value(c["calls"].clone()).unwrap();
        assert_eq!((calls.len(), s.nfe()), (want.len(), want.len()), "{name} {kv:?}: NFE");
        assert_eq!(calls, s.labels(), "{name} {kv:?}");
        let dl = calls.iter().zip(&want).map(|(a, b)| ((a - b) / b).abs()).fold(0.0, f64::max);
        let err = rel_err(&x, &rows(&c["out"]));
        report += &format!("{name:<9} S={steps:<2} {kv:?}: rel L2 {err:.1e}, σ rel diff {dl:.1e}\n");
        assert!(dl < 1e-12 && err < 1e-12, "{name} {kv:?}: σ {dl:e}, x {err:e}");
    }
    eprintln!("{report}");
}
