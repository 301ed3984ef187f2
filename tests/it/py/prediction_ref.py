# Reference driver for tests/it/prediction.rs: diffusers schedulers with a random-weight
# UNet2DModel in float64 (every parameterisation: prediction_type epsilon / v_prediction /
# sample), injected noise, and the float64 schedule both sides use.
# argv: DIR (holds cases.json, betas.npy, z.npy, noise_*.npy); writes DIR/unet (once), out_<id>.npy and
# prints {id: [model labels]}.
import json, os, sys
import numpy as np
import torch
import diffusers
from diffusers import UNet2DModel
from diffusers.schedulers import (
    scheduling_ddpm as m_ddpm,
    scheduling_euler_ancestral_discrete as m_ea,
    scheduling_k_dpm_2_ancestral_discrete as m_ka,
    scheduling_lcm as m_lcm,
    scheduling_sasolver as m_sa,
    scheduling_tcd as m_tcd,
)

d = sys.argv[1]
cases = json.load(open(f"{d}/cases.json"))
z = torch.from_numpy(np.load(f"{d}/z.npy"))

torch.manual_seed(0)
unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(32, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_eps=1e-6,
                   downsample_padding=0, flip_sin_to_cos=False, freq_shift=1).eval()
if not os.path.exists(f"{d}/unet"):
    unet.save_pretrained(f"{d}/unet")
unet = unet.double()

queue = []


def fake_randn(shape, *a, **k):
    return queue.pop(0)


for m in (m_ddpm, m_ea, m_ka, m_lcm, m_tcd, m_sa):
    m.randn_tensor = fake_randn

def keep_float64(cls):
    """Some `step`s round the sample to float32 each step ("upcast" for fp16 pipelines); the
    reference runs them in float64 like the rest (as tests/it/samplers_b_ref.py does)."""
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

betas = torch.from_numpy(np.load(f"{d}/betas.npy"))
out = {}
for c in cases:
    cfg = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type=c["prediction"])
    cfg.update(c["config"])
    # SASolverScheduler's `tau_func` is a callable: [τ, t_min, t_max] gives τ on [t_min, t_max], else 0.
    if "tau_window" in cfg:
        tau, lo, hi = cfg.pop("tau_window")
        cfg["tau_func"] = lambda t, tau=tau, lo=lo, hi=hi: tau if lo <= t <= hi else 0
    sched = getattr(diffusers, c["cls"])(**cfg)
    # The exact float64 schedule both sides use (diffusers computes it in float32).
    sched.betas = betas
    sched.alphas = 1.0 - betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    ac = sched.alphas_cumprod
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if cfg.get("set_alpha_to_one", c["cls"] == "DDIMScheduler") else ac[0]
    if hasattr(sched, "alpha_t"):
        sched.alpha_t = ac.sqrt()
        sched.sigma_t = (1 - ac).sqrt()
        sched.lambda_t = sched.alpha_t.log() - sched.sigma_t.log()
    sched.sigmas = ((1 - ac) / ac) ** 0.5
    sched.set_timesteps(c["steps"])
    for name in ["sigmas", "sigmas_interpol", "sigmas_up", "sigmas_down"]:
        if hasattr(sched, name) and isinstance(getattr(sched, name), torch.Tensor):
            setattr(sched, name, getattr(sched, name).double())
    noise = list(torch.from_numpy(np.load(f"{d}/{c['noise']}"))) if c["noise"] else []
    queue[:] = list(noise)
    x = z.clone() * float(sched.init_noise_sigma)
    labels = []
    for k, t in enumerate(sched.timesteps):
        xin = sched.scale_model_input(x, t)
        labels.append(float(t))
        with torch.no_grad():
            o = unet(xin, t).sample
        kw = {}
        if c["eta"] is not None:
            kw = dict(eta=c["eta"], variance_noise=noise[k])
        x = sched.step(o, t, x, **kw).prev_sample
    np.save(f"{d}/out_{c['id']}.npy", x.numpy())
    out[c["id"]] = labels
print(json.dumps(out))
