//! DDIM/DDPM/PNDM family: parity with diffusers and with the DDIM/PNDM repos' conventions,
//! convergence order on the exact probability-flow ODE, exact vs sampled Fréchet distance,
//! and NFE accounting.
use crate::common::*;
use samplerbench::models::oracle::GaussianOracle;
use samplerbench::sampling::exact::{diagonal_fd, exact_fd, exact_output_moments};
use samplerbench::models::Prediction;
use samplerbench::sampling::{build_from_text, Counted, GlobalRng, NoiseSource, Sampler};
use samplerbench::schedule::{NoiseSchedule, ScheduleKind};
use samplerbench::timesteps::{discrete_labels, Skip};
use tch::{Device, Kind, Tensor};

const SHAPE: [i64; 3] = [3, 4, 4];

fn schedule(kind: &str) -> NoiseSchedule {
    match kind {
        "linear" => NoiseSchedule::ddpm_linear(),
        "cosine" => NoiseSchedule::new(ScheduleKind::Cosine, 0.0, 0.0, 1000).unwrap(),
        other => panic!("{other}"),
    }
}

/// Sampler parameters as `key=value` text, as `bench sample --set` takes them.
type SamplerParams = Vec<(String, String)>;

fn params(kv: &[(&str, &str)]) -> SamplerParams {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn build_sampler(name: &str, p: &SamplerParams, steps: usize, sch: &NoiseSchedule) -> samplerbench::Result<Box<dyn Sampler>> {
    let kv: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    build_from_text(name, &kv, steps, sch)
}

/// Per-pixel data mean and std (seeded), the oracle for a schedule, and a batch of x_T.
fn setup(seed: i64, batch: i64) -> (Tensor, Tensor, Tensor) {
    seed_torch(seed);
    let opts = (Kind::Double, Device::Cpu);
    let mu = Tensor::randn(SHAPE, opts) * 0.3;
    let std = Tensor::rand(SHAPE, opts) * 0.5 + 0.1;
    let mut full = vec![batch];
    full.extend(SHAPE);
    let x_t = Tensor::randn(full.as_slice(), opts);
    (mu, std, x_t)
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let n = (a - b).square().sum(Kind::Double).sqrt().double_value(&[]);
    n / b.square().sum(Kind::Double).sqrt().double_value(&[])
}

/// Noise recorded by the Python side: step k gets row k.
/// Noise by step key from a stacked array, recording the keys in draw order.
struct Replay(Tensor, Vec<usize>);
impl NoiseSource for Replay {
    fn noise(&mut self, step: usize, _like: &Tensor) -> Tensor {
        self.1.push(step);
        self.0.get(step as i64)
    }
}

/// Runs diffusers schedulers on the Gaussian oracle from the same x_T, in float64 (the
/// schedule is overridden with the f64 one so the comparison tests conventions, not float32
/// rounding of ᾱ). Per case: labels the model was called at, and the final sample / noise.
const DIFFUSERS_DRIVER: &str = r#"
import sys, json, math, numpy as np, torch
from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler
d = sys.argv[1]
cases = json.load(open(d + '/cases.json'))
x_T = torch.from_numpy(np.load(d + '/xT.npy'))
mu = torch.from_numpy(np.load(d + '/mu.npy')); sd = torch.from_numpy(np.load(d + '/std.npy'))
def betas(kind, T=1000):
    if kind == 'linear':
        return np.linspace(1e-4, 0.02, T, dtype=np.float64)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])
res = []
for i, c in enumerate(cases):
    b = betas(c['schedule']); ac = torch.from_numpy(np.cumprod(1 - b))
    cls = {'ddim': DDIMScheduler, 'ddpm': DDPMScheduler, 'pndm': PNDMScheduler}[c['cls']]
    s = cls(num_train_timesteps=1000, **c['config'])
    s.betas = torch.from_numpy(b); s.alphas = 1 - s.betas; s.alphas_cumprod = ac
    if hasattr(s, 'final_alpha_cumprod'):
        one = c['config'].get('set_alpha_to_one', cls is DDIMScheduler)
        s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if one else ac[0]
    s.set_timesteps(c['steps'])
    x = x_T.clone(); labels = []; noises = []
    for k, t in enumerate(s.timesteps):
        a = ac[int(t)]
        e = (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * sd ** 2 + 1 - a)
        labels.append(int(t))
        kw = {}
        if c['cls'] in ('ddim', 'ddpm') and c.get('stochastic'):
            g = lambda: torch.Generator().manual_seed(1000 + k)
            noises.append(torch.randn(x.shape, generator=g(), dtype=torch.float64))
            kw = dict(eta=c['eta'], variance_noise=noises[-1]) if c['cls'] == 'ddim' else dict(generator=g())
        x = s.step(e, t, x, **kw).prev_sample
    np.save(f'{d}/out{i}.npy', x.numpy())
    if noises:
        np.save(f'{d}/noise{i}.npy', torch.stack(noises).numpy())
    res.append(labels)
print(json.dumps(res))
"#;

struct Case {
    cls: &'static str,
    config: serde_json::Value,
    steps: usize,
    schedule: &'static str,
    stochastic: bool,
    eta: f64,
    /// Our sampler and its parameters.
    ours: &'static str,
    params: SamplerParams,
}

/// Runs every case through diffusers and through our sampler; returns the max relative L2.
fn check_against_diffusers(cases: &[Case], tol: f64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (mu, std, x_t) = setup(3, 4);
    x_t.write_npy(dir.path().join("xT.npy")).unwrap();
    mu.write_npy(dir.path().join("mu.npy")).unwrap();
    std.write_npy(dir.path().join("std.npy")).unwrap();
    let json: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({"cls": c.cls, "config": c.config, "steps": c.steps, "schedule": c.schedule,
                               "stochastic": c.stochastic, "eta": c.eta})
        })
        .collect();
    std::fs::write(dir.path().join("cases.json"), serde_json::to_string(&json).unwrap()).unwrap();
    let out = run_python(DIFFUSERS_DRIVER, &[dir.path().to_str().unwrap()]);
    let labels: Vec<Vec<i64>> = serde_json::from_str(out.trim()).unwrap();
    let mut worst: f64 = 0.0;
    for (i, c) in cases.iter().enumerate() {
        let what = format!("case {i}: {} {} S={} {} {:?}", c.cls, c.config, c.steps, c.schedule, c.params);
        let sch = schedule(c.schedule);
        let sampler = build_sampler(c.ours, &c.params, c.steps, &sch).unwrap_or_else(|e| panic!("{what}: {e}"));
        let oracle = GaussianOracle::new(sch, mu.shallow_clone(), std.shallow_clone());
        let model = Counted::new(&oracle, Prediction::Epsilon).with_trace();
        let want = Tensor::read_npy(dir.path().join(format!("out{i}.npy"))).unwrap();
        let x = if c.stochastic {
            let z = Tensor::read_npy(dir.path().join(format!("noise{i}.npy"))).unwrap();
            let mut replay = Replay(z, Vec::new());
            let x = sampler.sample(&model, x_t.copy(), &mut replay).unwrap();
            // The same run through `bench sample --step-noise`, given diffusers' draws in draw order.
            let draws: Vec<Tensor> = replay.1.iter().map(|&k| replay.0.get(k as i64)).collect();
            let schedule = if c.schedule == "linear" { "{kind: linear}" } else { "{kind: cosine}" };
            let entry = format!("{{name: {}{}}}", c.ours, c.params.iter().map(|(k, v)| format!(", {k}: {v}")).collect::<String>());
            let cli = bench_sample_oracle(dir.path(), &i.to_string(), schedule, "epsilon", (&mu, &std), &entry, c.steps, &x_t, &draws);
            let e = rel_l2(&cli, &want);
            assert!(e < tol, "{what}: bench sample --step-noise: relative L2 {e:.3e}");
            x
        } else {
            sampler.sample(&model, x_t.copy(), &mut GlobalRng).unwrap()
        };
        let traced: Vec<f64> = model.take_trace().iter().map(|(t, _, _)| *t).collect();
        let theirs: Vec<f64> = labels[i].iter().map(|&t| t as f64).collect();
        assert_eq!(traced, theirs, "{what}: model labels differ");
        assert_eq!(sampler.labels(), theirs, "{what}: labels() differs");
        assert_eq!(model.nfe(), theirs.len(), "{what}");
        assert_eq!(sampler.nfe(), theirs.len(), "{what}");
        let err = rel_l2(&x, &want);
        assert!(err < tol, "{what}: relative L2 {err:.3e}");
        worst = worst.max(err);
    }
    worst
}

const STEPS: [usize; 4] = [7, 10, 50, 333];
const SPACINGS: [(&str, usize); 4] = [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)];

fn spacing_cases(cls: &'static str, ours: &'static str, extra: &[(&str, &str)], config: serde_json::Value) -> Vec<Case> {
    let mut v = Vec::new();
    for (n, &steps) in STEPS.iter().enumerate() {
        for (m, &(spacing, offset)) in SPACINGS.iter().enumerate() {
            let schedule = if (n + m) % 2 == 0 { "linear" } else { "cosine" };
            let mut cfg = config.clone();
            cfg["timestep_spacing"] = spacing.into();
            cfg["steps_offset"] = offset.into();
            let off = offset.to_string();
            let mut p = params(&[("skip", spacing), ("steps_offset", off.as_str())]);
            p.extend(params(extra));
            v.push(Case { cls, config: cfg, steps, schedule, stochastic: false, eta: 0.0, ours, params: p });
        }
    }
    v
}

#[test]
fn timestep_rules_match_diffusers_and_the_ddim_repo() {
    let code = r#"
import json, numpy as np
from diffusers import DDIMScheduler
out = {}
for S in [1, 7, 10, 50, 100, 333, 500, 999, 1000]:
    for sp, off in [('leading', 0), ('leading', 1), ('trailing', 0), ('linspace', 0)]:
        if sp == 'leading' and off == 1 and S == 1000: continue
        s = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=sp, steps_offset=off)
        s.set_timesteps(S)
        out[f'{sp}/{off}/{S}'] = s.timesteps.tolist()
    out[f'uniform/0/{S}'] = list(range(0, 1000, 1000 // S))[::-1]
    out[f'quadratic/0/{S}'] = [int(x) for x in np.linspace(0, np.sqrt(1000 * 0.8), S) ** 2][::-1]
print(json.dumps(out))
"#;
    let want: std::collections::BTreeMap<String, Vec<usize>> = serde_json::from_str(run_python(code, &[]).trim()).unwrap();
    assert_eq!(want.len(), 9 * 6 - 1);
    for (key, labels) in &want {
        let parts: Vec<&str> = key.split('/').collect();
        let (skip, off, s) = (Skip::parse(parts[0]).unwrap(), parts[1].parse().unwrap(), parts[2].parse().unwrap());
        assert_eq!(&discrete_labels(skip, s, 1000, off).unwrap(), labels, "{key}");
    }
}

#[test]
fn ddim_eta0_matches_diffusers_ddim_scheduler() {
    let mut cases = spacing_cases("ddim", "ddim", &[("prev", "stride")], serde_json::json!({"clip_sample": false}));
    // set_alpha_to_one=False ends at ᾱ_0 (leading with steps_offset=1 reaches it).
    for c in cases.iter_mut().step_by(3) {
        c.config["set_alpha_to_one"] = false.into();
        c.params.push(("alpha_to_one".into(), "false".into()));
    }
    let worst = check_against_diffusers(&cases, 1e-5);
    eprintln!("ddim η=0 vs DDIMScheduler: {} cases, max relative L2 {worst:.3e}", cases.len());
}

#[test]
fn ddim_stochastic_and_ddpm_match_diffusers_with_the_same_noise() {
    let mut cases = Vec::new();
    for (i, &steps) in STEPS.iter().enumerate() {
        let schedule = if i % 2 == 0 { "linear" } else { "cosine" };
        for eta in [0.5, 1.0] {
            cases.push(Case {
                cls: "ddim",
                config: serde_json::json!({"clip_sample": false, "timestep_spacing": "leading"}),
                steps,
                schedule,
                stochastic: true,
                eta,
                ours: "ddim",
                params: params(&[("skip", "leading"), ("prev", "stride"), ("eta", if eta == 0.5 { "0.5" } else { "1" })]),
            });
        }
        for (spacing, off) in [("leading", "1"), ("trailing", "0")] {
            cases.push(Case {
                cls: "ddpm",
                config: serde_json::json!({"clip_sample": false, "timestep_spacing": spacing, "steps_offset": off.parse::<i64>().unwrap()}),
                steps,
                schedule,
                stochastic: true,
                eta: 1.0,
                ours: "ddpm",
                params: params(&[("skip", spacing), ("steps_offset", off)]),
            });
        }
    }
    let worst = check_against_diffusers(&cases, 1e-5);
    eprintln!("ddim η>0 / ddpm vs diffusers (same noise): {} cases, max relative L2 {worst:.3e}", cases.len());
}

#[test]
fn pndm_prk_and_plms_match_diffusers_pndm_scheduler() {
    let mut cases = spacing_cases("pndm", "f-pndm", &[("alpha_index", "diffusers")], serde_json::json!({"skip_prk_steps": false}));
    cases.extend(spacing_cases("pndm", "plms", &[("alpha_index", "diffusers")], serde_json::json!({"skip_prk_steps": true})));
    for c in cases.iter_mut().step_by(5) {
        c.config["set_alpha_to_one"] = true.into();
        c.params.push(("alpha_to_one".into(), "true".into()));
    }
    let worst = check_against_diffusers(&cases, 1e-5);
    eprintln!("f-pndm/plms vs PNDMScheduler (PRK, skip_prk_steps): {} cases, max relative L2 {worst:.3e}", cases.len());
}

/// The PNDM repo's `runner/method.py` conventions, re-derived in numpy from the paper's
/// equations and the repo's indexing (ᾱ read at ⌊t⌋+1 of the un-padded cumprod, float
/// midpoints, seq_next = [-1] + seq[:-1]).
const PNDM_REPO_DRIVER: &str = r#"
import sys, json, numpy as np
d = sys.argv[1]; cases = json.load(open(d + '/cases.json'))
xT = np.load(d + '/xT.npy'); mu = np.load(d + '/mu.npy'); sd = np.load(d + '/std.npy')
ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
def A(t): return ac[int(np.trunc(t)) + 1]
def lab_ab(t):  # the oracle's ᾱ at a fractional label: log-linear between integers
    lo = int(np.floor(t)); hi = min(lo + 1, 999); w = t - lo
    return np.exp(np.log(ac[lo]) * (1 - w) + np.log(ac[hi]) * w)
calls = []
def model(x, t):
    calls.append(float(t)); a = lab_ab(t)
    return np.sqrt(1 - a) * (x - np.sqrt(a) * mu) / (a * sd ** 2 + 1 - a)
def transfer(x, t, tn, e):
    at, an = A(t), A(tn)
    return x + (an - at) * (x / (np.sqrt(at) * (np.sqrt(at) + np.sqrt(an))) - e / (np.sqrt(at) * (np.sqrt((1 - an) * at) + np.sqrt((1 - at) * an))))
res = []
for i, c in enumerate(cases):
    calls.clear(); S = c['steps']; seq = list(range(0, 1000, 1000 // S)); nxt = [-1] + seq[:-1]
    x = xT.copy(); ets = []
    for t, tn in zip(reversed(seq), reversed(nxt)):
        m = (t + tn) / 2
        if c['method'] == 'f-pndm':
            if len(ets) > 2:
                ets.append(model(x, t)); e = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
            else:
                e1 = model(x, t); ets.append(e1)
                e2 = model(transfer(x, t, m, e1), m); e3 = model(transfer(x, t, m, e2), m)
                e4 = model(transfer(x, t, tn, e3), tn); e = (e1 + 2 * e2 + 2 * e3 + e4) / 6
            x = transfer(x, t, tn, e)
        elif c['method'] == 's-pndm':
            if ets:
                ets.append(model(x, t)); e = (3 * ets[-1] - ets[-2]) / 2
            else:
                e1 = model(x, t); ets.append(e1); e = (e1 + model(transfer(x, t, tn, e1), tn)) / 2
            x = transfer(x, t, tn, e)
        else:  # fon: RK4 / AB4 on the unit-step increment, stages re-use the start x and t
            D = lambda e: transfer(x, t, t - 1, e) - x
            h = t - tn
            if len(ets) > 2:
                ets.append(D(model(x, t))); dl = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
            else:
                d1 = D(model(x, t)); ets.append(d1)
                d2 = D(model(x + d1 * h / 2, m)); d3 = D(model(x + d2 * h / 2, m)); d4 = D(model(x + d3 * h, tn))
                dl = (d1 + 2 * d2 + 2 * d3 + d4) / 6
            x = x + dl * h
    np.save(f'{d}/out{i}.npy', x)
    res.append(list(calls))
print(json.dumps(res))
"#;

#[test]
fn pndm_repo_conventions_t_plus_one_indexing() {
    let dir = tempfile::tempdir().unwrap();
    let (mu, std, x_t) = setup(5, 4);
    x_t.write_npy(dir.path().join("xT.npy")).unwrap();
    mu.write_npy(dir.path().join("mu.npy")).unwrap();
    std.write_npy(dir.path().join("std.npy")).unwrap();
    // 7 (stride 142, top label 994), 8 (stride 125: midpoints at .5), 10, 50.
    let mut cases = Vec::new();
    for m in ["f-pndm", "s-pndm", "fon"] {
        for s in [7usize, 8, 10, 50] {
            cases.push((m, s));
        }
    }
    let json: Vec<_> = cases.iter().map(|(m, s)| serde_json::json!({"method": m, "steps": s})).collect();
    std::fs::write(dir.path().join("cases.json"), serde_json::to_string(&json).unwrap()).unwrap();
    let labels: Vec<Vec<f64>> = serde_json::from_str(run_python(PNDM_REPO_DRIVER, &[dir.path().to_str().unwrap()]).trim()).unwrap();
    let sch = NoiseSchedule::ddpm_linear();
    let oracle = GaussianOracle::new(sch.clone(), mu, std);
    let mut worst: f64 = 0.0;
    for (i, &(m, s)) in cases.iter().enumerate() {
        let sampler = build_sampler(m, &SamplerParams::new(), s, &sch).unwrap();
        assert_eq!(sampler.end_point(), samplerbench::sampling::EndPoint::AlphaBarZero);
        let model = Counted::new(&oracle, Prediction::Epsilon).with_trace();
        let x = sampler.sample(&model, x_t.copy(), &mut GlobalRng).unwrap();
        let traced: Vec<f64> = model.take_trace().iter().map(|(t, _, _)| *t).collect();
        assert_eq!(traced, labels[i], "{m} S={s}");
        assert_eq!(sampler.labels(), labels[i], "{m} S={s}");
        assert_eq!(sampler.nfe(), labels[i].len());
        let want = Tensor::read_npy(dir.path().join(format!("out{i}.npy"))).unwrap();
        let err = rel_l2(&x, &want);
        assert!(err < 1e-10, "{m} S={s}: {err:.3e}");
        worst = worst.max(err);
        // The diffusers index convention gives a measurably different sample.
        let p = params(&[("alpha_index", "diffusers"), ("skip", "uniform")]);
        let other = build_sampler(m, &p, s, &sch).unwrap().sample(&Counted::new(&oracle, Prediction::Epsilon), x_t.copy(), &mut GlobalRng).unwrap();
        assert!(rel_l2(&other, &want) > 1e-4, "{m} S={s}: index conventions indistinguishable");
    }
    eprintln!("PNDM repo conventions: max relative L2 {worst:.3e}");
}

/// Exact probability-flow ODE end point for the Gaussian oracle: with x̄ = x/√ᾱ and
/// σ̃ = √((1−ᾱ)/ᾱ), dx̄/dσ̃ = ε* = σ̃ (x̄ − μ)/(s² + σ̃²), so
/// x̄(σ̃) = μ + (x̄_T − μ) √((s² + σ̃²)/(s² + σ̃_T²)).
fn exact_ode_end(x_t: &Tensor, mu: &Tensor, std: &Tensor, a_start: f64, a_end: f64) -> Tensor {
    let sig = |a: f64| ((1.0 - a) / a).sqrt();
    let s2 = std.square();
    let xb = x_t / a_start.sqrt();
    let ratio = ((&s2 + sig(a_end).powi(2)) / (&s2 + sig(a_start).powi(2))).sqrt();
    (mu + (xb - mu) * ratio) * a_end.sqrt()
}

fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (lx, ly): (Vec<f64>, Vec<f64>) = points.iter().map(|&(s, e)| (s.ln(), e.ln())).unzip();
    let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
    let cov: f64 = lx.iter().zip(&ly).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = lx.iter().map(|x| (x - mx).powi(2)).sum();
    -cov / var
}

/// Linear schedule with β_0 = 0.5: σ̃_t = √((1−ᾱ_t)/ᾱ_t) then starts at 1 and is smooth in t
/// down to the end point ᾱ_0, instead of behaving like 0.01·√(t+1) (a square-root singularity
/// one label below the grid, which caps every method's observed order near t = 0).
fn smooth_end_schedule() -> NoiseSchedule {
    let mut sch = NoiseSchedule::ddpm_linear();
    sch.betas[0] = 0.5;
    let mut acc = 1.0;
    sch.alphas_cumprod = sch.betas.iter().map(|b| {
        acc *= 1.0 - b;
        acc
    }).collect();
    sch
}

/// Relative L2 error to the exact ODE end point for each step count.
fn ode_errors(sch: &NoiseSchedule, name: &str, kv: &[(&str, &str)], a_end: Option<f64>, steps: &[usize]) -> Vec<(f64, f64)> {
    seed_torch(11);
    let opts = (Kind::Double, Device::Cpu);
    let mu = Tensor::randn(SHAPE, opts) * 0.3;
    let std = Tensor::rand(SHAPE, opts) * 0.5 + 0.5;
    let x_t = Tensor::randn([8, 3, 4, 4], opts);
    let oracle = GaussianOracle::new(sch.clone(), mu.shallow_clone(), std.shallow_clone());
    steps
        .iter()
        .map(|&s| {
            let sampler = build_sampler(name, &params(kv), s, sch).unwrap();
            let top = sampler.labels()[0] as usize;
            let exact = exact_ode_end(&x_t, &mu, &std, sch.alpha_bar(top), a_end.unwrap_or(sch.alpha_bar(0)));
            let x = sampler.sample(&Counted::new(&oracle, Prediction::Epsilon), x_t.copy(), &mut GlobalRng).unwrap();
            (s as f64, rel_l2(&x, &exact))
        })
        .collect()
}

#[test]
fn convergence_order_to_the_exact_ode_end_point() {
    let steps = [20usize, 25, 50, 100, 200];
    let mut report = Vec::new();
    // DDIM is Euler in (σ̃, x̄): order 1 on the standard schedule, to ᾱ = 1.
    let lin = NoiseSchedule::ddpm_linear();
    let e = ode_errors(&lin, "ddim", &[("skip", "uniform")], Some(1.0), &steps);
    let k = slope(&e);
    report.push(format!("ddim (linear, to ᾱ=1): slope {k:.2}"));
    assert!((0.9..1.1).contains(&k), "ddim slope {k}: {e:?}");
    // Smooth regime, diffusers index (ε and ᾱ at the same label), even strides, end at ᾱ_0.
    let sch = smooth_end_schedule();
    let diff = [("skip", "uniform"), ("alpha_index", "diffusers"), ("alpha_to_one", "false")];
    let ddim = ode_errors(&sch, "ddim", &[("skip", "uniform"), ("prev", "stride"), ("alpha_to_one", "false")], None, &steps);
    let k = slope(&ddim);
    report.push(format!("ddim (smooth): slope {k:.2}"));
    assert!((0.9..1.1).contains(&k), "ddim slope {k}: {ddim:?}");
    for name in ["f-pndm", "s-pndm", "plms"] {
        let e = ode_errors(&sch, name, &diff, None, &steps);
        let k = slope(&e);
        report.push(format!("{name} (smooth): slope {k:.2}, err@200 {:.2e}", e[4].1));
        // Measured ≈ 2 for all three: the pseudo multistep extrapolates ε in label time, but
        // the transfer φ is exact only for the σ̃-weighted mean of ε over the step; the gap is
        // O(h²) per unit step, i.e. global order 2 whatever the multistep order.
        assert!((1.8..2.6).contains(&k), "{name} slope {k}: {e:?}");
        assert!(e[4].1 < ddim[4].1 / 50.0, "{name} not more accurate than DDIM: {e:?} vs {ddim:?}");
    }
    // Labels uniform in σ̃ (σ̃_t linear from 0.5 to 20): the label-time and σ̃-weighted means
    // of ε coincide, and the multistep's own order shows.
    let sch = sigma_linear_schedule(0.5, 20.0);
    let fine = [50usize, 100, 200];
    let ddim = ode_errors(&sch, "ddim", &[("skip", "uniform"), ("prev", "stride"), ("alpha_to_one", "false")], None, &fine);
    let k = slope(&ddim);
    report.push(format!("ddim (σ̃-uniform): slope {k:.2}"));
    assert!((0.9..1.1).contains(&k), "ddim slope {k}: {ddim:?}");
    for (name, lo, hi) in [("f-pndm", 3.0, 4.5), ("plms", 3.0, 4.5), ("s-pndm", 1.6, 2.4)] {
        let e = ode_errors(&sch, name, &diff, None, &fine);
        let k = slope(&e);
        report.push(format!("{name} (σ̃-uniform): slope {k:.2}, err@200 {:.2e}", e[2].1));
        assert!((lo..hi).contains(&k), "{name} slope {k}: {e:?}");
    }
    eprintln!("convergence: {}", report.join("; "));
}

/// ᾱ_t = 1/(1 + σ̃_t²) with σ̃_t linear in the label from `lo` to `hi`.
fn sigma_linear_schedule(lo: f64, hi: f64) -> NoiseSchedule {
    let mut sch = NoiseSchedule::ddpm_linear();
    sch.alphas_cumprod = (0..1000)
        .map(|t| {
            let s = lo + (hi - lo) * t as f64 / 999.0;
            1.0 / (1.0 + s * s)
        })
        .collect();
    let mut prev = 1.0;
    sch.betas = sch.alphas_cumprod.iter().map(|&a| {
        let b = 1.0 - a / prev;
        prev = a;
        b
    }).collect();
    sch
}

/// Diagonal Gaussian FD from samples [N, ...] against N(μ, diag s²); also its expected bias
/// E[FD̂] − FD ≈ Σ v/N + Σ v/(2N) (mean and std estimation noise) and its standard deviation
/// (delta method plus the second-order χ² terms that dominate when FD ≈ 0).
fn sample_fd(x: &Tensor, mu: &Tensor, std: &Tensor) -> (f64, f64, f64) {
    let n = x.size()[0] as f64;
    let m = x.mean_dim([0i64].as_slice(), false, Kind::Double);
    let v = x.var_dim([0i64].as_slice(), true, false);
    let fd = diagonal_fd(&m, &v, mu, std);
    let sd = v.sqrt();
    let bias = (&v / n).sum(Kind::Double).double_value(&[]) + (&v / (2.0 * n)).sum(Kind::Double).double_value(&[]);
    let first = (&m - mu).square() * &v * (4.0 / n) + (&sd - std).square() * &v * (2.0 / n);
    let second = (&v / n).square() * 2.0 + (&v / (2.0 * n)).square() * 2.0;
    let var_fd = (first + second).sum(Kind::Double).double_value(&[]);
    (fd, bias, var_fd.sqrt())
}

#[test]
fn exact_fd_agrees_with_20k_samples() {
    let (mu, std, _) = setup(21, 1);
    let sch = NoiseSchedule::ddpm_linear();
    let oracle = GaussianOracle::new(sch.clone(), mu.shallow_clone(), std.shallow_clone());
    let mut report = Vec::new();
    for (name, kv, steps) in [
        ("ddim", vec![("skip", "quadratic")], 5usize),
        ("ddpm", vec![("skip", "uniform")], 10),
        ("ddim", vec![("skip", "uniform"), ("eta", "0.5")], 8),
        ("f-pndm", vec![], 5),
        ("plms", vec![], 4),
        // The moments are computed through the Sampler API alone, so part B's samplers work too.
        ("dpm_solver++", vec![], 6),
        ("euler_ancestral", vec![], 8),
    ] {
        let sampler = build_sampler(name, &params(&kv), steps, &sch).unwrap();
        let (m_exact, v_exact) = exact_output_moments(sampler.as_ref(), &oracle).unwrap();
        let fd_exact = exact_fd(sampler.as_ref(), &oracle).unwrap();
        seed_torch(99);
        let x_t = Tensor::randn([20_000, 3, 4, 4], (Kind::Double, Device::Cpu));
        let x = sampler.sample(&Counted::new(&oracle, Prediction::Epsilon), x_t, &mut GlobalRng).unwrap();
        let (fd, bias, sd) = sample_fd(&x, &mu, &std);
        let z = (fd - bias - fd_exact) / sd.max(1e-12);
        report.push(format!("{name} S={steps}: exact {fd_exact:.5} sampled {fd:.5} (bias {bias:.1e}, sd {sd:.1e}, z {z:.2})"));
        assert!(z.abs() < 5.0, "{}", report.last().unwrap());
        // Per-coordinate moments within 5 standard errors too.
        let n = 20_000f64;
        let zm = ((x.mean_dim([0i64].as_slice(), false, Kind::Double) - &m_exact) / (&v_exact / n).sqrt()).abs().max().double_value(&[]);
        assert!(zm < 5.0, "{name}: mean z {zm}");
    }
    eprintln!("exact vs sampled FD: {}", report.join("; "));
}

#[test]
fn counted_nfe_equals_formula_for_every_sampler_and_step_count() {
    let sch = schedule("cosine");
    let (mu, std, x_t) = setup(7, 2);
    let oracle = GaussianOracle::new(sch.clone(), mu, std);
    let mut checked = 0;
    for name in ["ddim", "ddpm", "ddpm_large", "f-pndm", "s-pndm", "fon", "plms"] {
        for index in ["repo", "diffusers"] {
            let is_pndm = ["f-pndm", "s-pndm", "fon", "plms"].contains(&name);
            if !is_pndm && index == "diffusers" {
                continue;
            }
            for s in [4usize, 7, 10, 50, 333] {
                let mut p = SamplerParams::new();
                if is_pndm {
                    p.push(("alpha_index".into(), index.into()));
                    p.push(("skip".into(), "uniform".into()));
                }
                let sampler = match build_sampler(name, &p, s, &sch) {
                    Ok(x) => x,
                    // Only the repo index at the top label 999 (uniform, S=333) is refused.
                    Err(e) => {
                        assert!(is_pndm && index == "repo" && s == 333, "{name} {index} {s}: {e}");
                        continue;
                    }
                };
                let model = Counted::new(&oracle, Prediction::Epsilon).with_trace();
                let _ = sampler.sample(&model, x_t.copy(), &mut GlobalRng).unwrap();
                let traced: Vec<f64> = model.take_trace().iter().map(|(t, _, _)| *t).collect();
                assert_eq!(model.nfe(), sampler.nfe(), "{name} {index} S={s}");
                assert_eq!(traced, sampler.labels(), "{name} {index} S={s}");
                let labels = if name == "ddim" || name == "ddpm" || name == "ddpm_large" {
                    discrete_labels(Skip::Quadratic, s, 1000, 0).unwrap().len()
                } else {
                    discrete_labels(Skip::Uniform, s, 1000, 0).unwrap().len()
                };
                let formula = match name {
                    "f-pndm" | "fon" => labels + 9,
                    "s-pndm" | "plms" => labels + 1,
                    _ => labels,
                };
                assert_eq!(sampler.nfe(), formula, "{name} {index} S={s}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 5 + 4 * 10 - 4);
}

/// The DDIM repo's `generalized_steps` and `ddpm_steps` (functions/denoising.py), re-derived in
/// numpy: ᾱ from the zero-padded cumprod at t+1 (so label −1 reads ᾱ=1), seq_next =
/// [-1] + seq[:-1], `uniform` and `quad` sequences as in runners/diffusion.py.
const DDIM_REPO_DRIVER: &str = r#"
import sys, json, numpy as np
d = sys.argv[1]; cases = json.load(open(d + '/cases.json'))
xT = np.load(d + '/xT.npy'); mu = np.load(d + '/mu.npy'); sd = np.load(d + '/std.npy')
b = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
padded = np.cumprod(1 - np.concatenate([[0.0], b]))
def A(t): return padded[t + 1]
def model(x, t):
    a = A(t); return np.sqrt(1 - a) * (x - np.sqrt(a) * mu) / (a * sd ** 2 + 1 - a)
res = []
for i, c in enumerate(cases):
    S = c['steps']
    seq = list(range(0, 1000, 1000 // S)) if c['skip'] == 'uniform' else [int(s) for s in np.linspace(0, np.sqrt(1000 * 0.8), S) ** 2]
    nxt = [-1] + seq[:-1]
    x = xT.copy(); noises = []; labels = []
    for k, (t, tn) in enumerate(zip(reversed(seq), reversed(nxt))):
        at, an = A(t), A(tn); e = model(x, t); labels.append(t)
        z = np.random.default_rng(100 + k).standard_normal(x.shape); noises.append(z)
        if c['kind'] == 'generalized':
            x0 = (x - e * np.sqrt(1 - at)) / np.sqrt(at)
            c1 = c['eta'] * np.sqrt((1 - at / an) * (1 - an) / (1 - at))
            c2 = np.sqrt((1 - an) - c1 ** 2)
            x = np.sqrt(an) * x0 + c1 * z + c2 * e
        else:
            beta = 1 - at / an
            x0 = np.clip(np.sqrt(1 / at) * x - np.sqrt(1 / at - 1) * e, -1, 1)
            mean = (np.sqrt(an) * beta * x0 + np.sqrt(1 - beta) * (1 - an) * x) / (1 - at)
            x = mean + (0.0 if t == 0 else 1.0) * np.exp(0.5 * np.log(beta)) * z
    np.save(f'{d}/out{i}.npy', x); np.save(f'{d}/noise{i}.npy', np.stack(noises))
    res.append(labels)
print(json.dumps(res))
"#;

#[test]
fn ddim_and_ddpm_large_match_the_ddim_repo() {
    let dir = tempfile::tempdir().unwrap();
    let (mu, std, x_t) = setup(9, 4);
    // Data wider than [−1, 1] in places, so ddpm_large's clamp is exercised.
    let std = std * 3.0;
    x_t.write_npy(dir.path().join("xT.npy")).unwrap();
    mu.write_npy(dir.path().join("mu.npy")).unwrap();
    std.write_npy(dir.path().join("std.npy")).unwrap();
    let mut cases = Vec::new();
    for skip in ["uniform", "quadratic"] {
        for s in [7usize, 10, 50, 100] {
            for (kind, eta) in [("generalized", 0.0), ("generalized", 1.0), ("large", 0.0)] {
                cases.push((skip, s, kind, eta));
            }
        }
    }
    let json: Vec<_> = cases
        .iter()
        .map(|(skip, s, kind, eta)| serde_json::json!({"skip": skip, "steps": s, "kind": kind, "eta": eta}))
        .collect();
    std::fs::write(dir.path().join("cases.json"), serde_json::to_string(&json).unwrap()).unwrap();
    let labels: Vec<Vec<f64>> = serde_json::from_str(run_python(DDIM_REPO_DRIVER, &[dir.path().to_str().unwrap()]).trim()).unwrap();
    let sch = NoiseSchedule::ddpm_linear();
    let oracle = GaussianOracle::new(sch.clone(), mu, std);
    let mut worst: f64 = 0.0;
    for (i, &(skip, s, kind, eta)) in cases.iter().enumerate() {
        let what = format!("{skip} S={s} {kind} η={eta}");
        let (name, p) = match kind {
            "large" => ("ddpm_large", params(&[("skip", skip)])),
            _ => ("ddim", params(&[("skip", skip), ("eta", &eta.to_string())])),
        };
        let sampler = build_sampler(name, &p, s, &sch).unwrap();
        assert_eq!(sampler.labels(), labels[i], "{what}");
        assert_eq!(sampler.end_point(), samplerbench::sampling::EndPoint::AlphaBarOne);
        let z = Tensor::read_npy(dir.path().join(format!("noise{i}.npy"))).unwrap();
        let x = sampler.sample(&Counted::new(&oracle, Prediction::Epsilon), x_t.copy(), &mut Replay(z, Vec::new())).unwrap();
        let want = Tensor::read_npy(dir.path().join(format!("out{i}.npy"))).unwrap();
        let err = rel_l2(&x, &want);
        assert!(err < 1e-10, "{what}: {err:.3e}");
        worst = worst.max(err);
    }
    eprintln!("DDIM repo generalized_steps/ddpm_steps: {} cases, max relative L2 {worst:.3e}", cases.len());
}

#[test]
fn registry_lists_and_builds_every_sampler_in_float_and_double() {
    let defs = samplerbench::sampling::DEFINITIONS;
    let names: Vec<_> = defs.iter().map(|d| d.name).collect();
    assert_eq!(&names[..7], ["ddim", "ddpm", "ddpm_large", "f-pndm", "s-pndm", "fon", "plms"]);
    let sch = NoiseSchedule::ddpm_linear();
    let (mu, std, x_t) = setup(4, 2);
    let oracle = GaussianOracle::new(sch.clone(), mu, std);
    for d in &defs[..7] {
        // Every default written out explicitly builds the same sampler as none written.
        let all: Vec<(String, String)> = d.defaults().iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        let explicit = build_sampler(d.name, &all, 10, &sch).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        let sampler = build_sampler(d.name, &vec![], 10, &sch).unwrap();
        assert_eq!(explicit.labels(), sampler.labels(), "{}", d.name);
        let dd = sampler.sample(&Counted::new(&oracle, Prediction::Epsilon), x_t.copy(), &mut GlobalRng).unwrap();
        let f = sampler.sample(&Counted::new(&oracle, Prediction::Epsilon), x_t.to_kind(Kind::Float), &mut GlobalRng).unwrap();
        assert_eq!((dd.kind(), f.kind()), (Kind::Double, Kind::Float), "{}", d.name);
        if !["ddpm", "ddpm_large"].contains(&d.name) {
            let err = rel_l2(&f.to_kind(Kind::Double), &dd);
            // FON scales a unit-step increment x − φ(x) (a float32 cancellation) by t − t_next.
            let tol = if d.name == "fon" { 1e-3 } else { 1e-5 };
            assert!(err < tol, "{}: float vs double {err:.2e}", d.name);
        }
    }
    let e = build_sampler("dpm", &vec![], 10, &sch).err().unwrap();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("ddim, ddpm, ddpm_large"), "{e}");
}
