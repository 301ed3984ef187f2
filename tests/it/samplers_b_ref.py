# Reference driver for tests/it/samplers_b.rs: runs diffusers schedulers on the Gaussian
# oracle (exact ε, same fractional-label convention as src/models/oracle.rs: log ᾱ linear
# between integer labels) and writes each case's final sample and model-call labels.
# argv: DIR (holds cases.json, betas_*.npy, mean.npy, std.npy, z.npy, noise_*.npy).
import inspect, json, sys
import numpy as np
import torch
import diffusers
from diffusers.schedulers import (
    scheduling_dpmsolver_multistep as m_dm,
    scheduling_euler_ancestral_discrete as m_ea,
    scheduling_euler_discrete as m_e,
    scheduling_k_dpm_2_ancestral_discrete as m_ka,
    scheduling_lcm as m_lcm,
    scheduling_sasolver as m_sa,
    scheduling_tcd as m_tcd,
)

d = sys.argv[1]
cases = json.load(open(f"{d}/cases.json"))
mean = torch.from_numpy(np.load(f"{d}/mean.npy"))
std = torch.from_numpy(np.load(f"{d}/std.npy"))
z = torch.from_numpy(np.load(f"{d}/z.npy"))


def oracle_ab(log_ab, t):
    t = float(t)
    last = len(log_ab) - 1
    t = min(max(t, 0.0), float(last))
    lo = int(np.floor(t))
    hi = min(lo + 1, last)
    w = t - lo
    if w == 0:  # on a label; also where ᾱ = 0 (zero terminal SNR, log ᾱ = −∞)
        return float(np.exp(log_ab[lo]))
    return float(np.exp(log_ab[lo] * (1 - w) + log_ab[hi] * w))


def oracle(log_ab, x, t, prediction):
    ab = oracle_ab(log_ab, t)
    if prediction == "v_prediction":
        if ab == 0:  # no signal left: x0* = μ, v* = −μ
            return -mean.expand_as(x).clone()
        eps = (1 - ab) ** 0.5 * (x - ab ** 0.5 * mean) / (ab * std ** 2 + 1 - ab)
        return (eps - (1 - ab) ** 0.5 * x) / ab ** 0.5
    return (1 - ab) ** 0.5 * (x - ab ** 0.5 * mean) / (ab * std ** 2 + 1 - ab)


queue = []


def fake_randn(shape, *a, **k):
    return queue.pop(0)


# The stochastic schedulers draw their step noise through their module's `randn_tensor`; it is
# replaced by the arrays bench's sampler receives (one per step, in order), so both sides see
# the same noise without sharing a generator.
m_dm.randn_tensor = fake_randn
m_ea.randn_tensor = fake_randn
m_e.randn_tensor = fake_randn
m_ka.randn_tensor = fake_randn
m_lcm.randn_tensor = fake_randn
m_tcd.randn_tensor = fake_randn
m_sa.randn_tensor = fake_randn


class Float64Numpy:
    """numpy with float32 → float64, for KDPM2AncestralDiscreteScheduler.set_timesteps: it forms
    σ_down = √(σ_to² − σ_up²) in float32, which cancels catastrophically when σ_from ≫ σ_to
    (the cosine schedule's first step); the Rust sampler computes it in float64."""

    float32 = np.float64

    def __getattr__(self, k):
        return getattr(np, k)


m_ka.np = Float64Numpy()


def keep_float64(cls):
    """Some `step`s round the sample to float32 each step ("upcast" for fp16 pipelines); that is
    a precision artefact, not a convention, so the reference runs them without it."""
    import inspect, textwrap
    src = textwrap.dedent(inspect.getsource(cls.step))
    if "sample = sample.to(torch.float32)" not in src:
        return
    src = src.replace("sample = sample.to(torch.float32)", "pass")
    mod = sys.modules[cls.__module__]
    ns = {}
    exec(compile(src, mod.__file__, "exec"), mod.__dict__, ns)
    cls.step = ns["step"]


for name in {c["cls"] for c in cases}:
    keep_float64(getattr(diffusers, name))

out = {}
for c in cases:
    betas = torch.from_numpy(np.load(f"{d}/betas_{c['schedule']}.npy"))
    cfg = dict(num_train_timesteps=len(betas), beta_schedule=c["beta_schedule"])
    # The test schedules' β ranges (the classes' defaults differ: Heun's is Stable Diffusion's).
    cfg.update({"linear": dict(beta_start=1e-4, beta_end=0.02), "scaled_linear": dict(beta_start=0.00085, beta_end=0.012)}.get(c["beta_schedule"], {}))
    cfg.update(c["config"])
    # `step_kwargs` are arguments of `step` (TCD's eta), not of the config.
    step_kwargs = cfg.pop("step_kwargs", {})
    # SASolverScheduler's `tau_func` is a callable: [τ, t_min, t_max] gives τ on [t_min, t_max], else 0.
    if "tau_window" in cfg:
        tau, lo, hi = cfg.pop("tau_window")
        cfg["tau_func"] = lambda t, tau=tau, lo=lo, hi=hi: tau if lo <= t <= hi else 0
    sched = getattr(diffusers, c["cls"])(**cfg)
    # The model's schedule, bench's float64 ᾱ (ᾱ_{T−1} = 0 under zero terminal SNR).
    log_ab = np.log(torch.cumprod(1.0 - betas, 0).numpy())
    # `native` cases keep diffusers' own float32 schedule (bench's `schedule_dtype: float32`); the
    # others replace it by the float64 one both sides use.
    if not c["native"]:
        sched.betas = betas
        sched.alphas = 1.0 - betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
        # The σ-grid schedulers replace ᾱ_{T−1} = 0 by 2⁻²⁴ in __init__.
        if c["config"].get("rescale_betas_zero_snr") and "2**-24" in inspect.getsource(type(sched).__init__):
            sched.alphas_cumprod[-1] = 2**-24
        ac = sched.alphas_cumprod
        if hasattr(sched, "alpha_t"):
            sched.alpha_t = ac.sqrt()
            sched.sigma_t = (1 - ac).sqrt()
            sched.lambda_t = sched.alpha_t.log() - sched.sigma_t.log()
        sched.sigmas = ((1 - ac) / ac) ** 0.5
    sched.set_timesteps(c["steps"])
    # Keep diffusers' float32 grid values but do the step arithmetic in float64.
    for name in ["sigmas", "sigmas_interpol", "sigmas_up", "sigmas_down"]:
        if hasattr(sched, name) and isinstance(getattr(sched, name), torch.Tensor):
            setattr(sched, name, getattr(sched, name).double())
    if c["noise"]:
        queue[:] = list(torch.from_numpy(np.load(f"{d}/{c['noise']}")))
    x = z.clone() * float(sched.init_noise_sigma)
    labels = []
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        labels.append(float(t))
        out_ = oracle(log_ab, xin, t, c["config"].get("prediction_type", "epsilon"))
        x = sched.step(out_, t, x, **step_kwargs).prev_sample
    np.save(f"{d}/out_{c['id']}.npy", x.numpy())
    out[c["id"]] = labels
print(json.dumps(out))
