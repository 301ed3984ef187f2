# Reference driver for tests/it/k_diffusion.rs: runs k-diffusion's samplers (and diffusers'
# DPMSolverSDEScheduler) on the Gaussian oracle through k-diffusion's discrete-DDPM wrappers,
# on the σ grid diffusers' EulerDiscreteScheduler lays out for the same options, with the SDE
# noise injected through `noise_sampler` (the arrays bench's sampler receives, in draw order).
# argv: DIR (cases.json, betas_*.npy, mean.npy, std.npy, z_*.npy, noise_*.npy) → unet/, out_*.npy;
# stdout: {case id: {labels: model-call labels, draws: noise draws taken}}; for
# sample_dpm_adaptive, run on each sample alone, {nfe: [per sample]} (draw k of sample j is
# row j of noise array k).
import json, sys
import numpy as np
import torch
import diffusers
from k_diffusion import external, sampling

d = sys.argv[1]
cases = json.load(open(f"{d}/cases.json"))
mean = torch.from_numpy(np.load(f"{d}/mean.npy"))
std = torch.from_numpy(np.load(f"{d}/std.npy"))
zs = {m: torch.from_numpy(np.load(f"{d}/z_{m}.npy")) for m in ("oracle", "unet")}

# The random-weight UNet of tests/it/prediction.rs, saved for bench to load.
torch.manual_seed(0)
unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                             block_out_channels=(32, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                             up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_eps=1e-6,
                             downsample_padding=0, flip_sin_to_cos=False, freq_shift=1).eval()
unet.save_pretrained(f"{d}/unet")
unet = unet.double()


class Unet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.labels = []

    def forward(self, x, t):
        self.labels.extend(float(v) for v in t)
        with torch.no_grad():
            return unet(x, t).sample


class Oracle(torch.nn.Module):
    """Exact ε (or v) of data N(mean, std²) at fractional labels, log ᾱ linear between labels
    (the convention of src/models/oracle.rs); records the labels it is called with."""

    def __init__(self, alphas_cumprod, v):
        super().__init__()
        self.log_ab = alphas_cumprod.log()
        self.v = v
        self.labels = []

    def forward(self, x, t):
        out = []
        for xi, ti in zip(x, t):
            ti = float(ti)
            self.labels.append(ti)
            lo = min(int(np.floor(ti)), len(self.log_ab) - 2)
            w = ti - lo
            ab = float(torch.exp(self.log_ab[lo] * (1 - w) + self.log_ab[lo + 1] * w))
            eps = (1 - ab) ** 0.5 * (xi - ab ** 0.5 * mean) / (ab * std ** 2 + 1 - ab)
            if self.v:
                x0 = (xi - (1 - ab) ** 0.5 * eps) / ab ** 0.5
                eps = ab ** 0.5 * eps - (1 - ab) ** 0.5 * x0
            out.append(eps)
        return torch.stack(out)


def float64_schedule(sched, ab):
    """diffusers keeps ᾱ in float32; both sides use the exact float64 schedule."""
    sched.alphas_cumprod = ab.clone()
    sched.sigmas = ((1 - ab) / ab) ** 0.5
    return sched


out_labels = {}
for c in cases:
    betas = torch.from_numpy(np.load(f"{d}/betas_{c['schedule']}.npy"))
    ab = torch.cumprod(1 - betas, 0)
    v = c["prediction"] == "v_prediction"
    inner = Unet() if c["model"] == "unet" else Oracle(ab, v)
    z = zs[c["model"]]
    wrapper = (external.DiscreteVDDPMDenoiser if v else external.DiscreteEpsDDPMDenoiser)(inner, ab, quantize=False)
    grid = float64_schedule(diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, **c["grid"]), ab)
    grid.set_timesteps(c["steps"])
    sigmas = grid.sigmas.double()
    queue = list(torch.from_numpy(np.load(f"{d}/{c['noise']}")))
    pops = len(queue)
    noise_sampler = lambda s, sn: queue.pop(0)
    x = z * float(grid.init_noise_sigma)
    if c["fn"] == "DPMSolverSDEScheduler":
        s = float64_schedule(diffusers.DPMSolverSDEScheduler(num_train_timesteps=1000, prediction_type=c["prediction"], **c["grid"]), ab)
        s.set_timesteps(c["steps"])
        s.sigmas = s.sigmas.double()
        s.noise_sampler = noise_sampler
        x = z * float(s.init_noise_sigma)
        for t in s.timesteps:
            xin = s.scale_model_input(x, t)
            out = inner(xin, torch.full([x.shape[0]], float(t), dtype=torch.float64))
            x = s.step(out, t, x).prev_sample
    elif c["fn"] == "sample_dpm_adaptive":
        outs, nfe = [], []
        for j in range(z.shape[0]):
            row = [q[j : j + 1] for q in queue]
            xj, info = sampling.sample_dpm_adaptive(wrapper, z[j : j + 1] * wrapper.sigma_max, wrapper.sigma_min, wrapper.sigma_max, disable=True,
                                                   noise_sampler=lambda s, sn: row.pop(0), return_info=True, **c["kwargs"])
            outs.append(xj)
            nfe.append(info["nfe"])
        np.save(f"{d}/out_{c['id']}.npy", torch.cat(outs).numpy())
        out_labels[c["id"]] = {"nfe": nfe}
        continue
    elif c["fn"] == "sample_dpm_fast":
        # Its own grid: blocks uniform in log σ from the wrapper's σ_max to σ_min. Its
        # `torch.linspace` of the block times takes torch's default dtype; float64 here, as the
        # rest of the reference runs (in float32 the times round by ~1e-7).
        x = z * wrapper.sigma_max
        torch.set_default_dtype(torch.float64)
        x = sampling.sample_dpm_fast(wrapper, x, wrapper.sigma_min, wrapper.sigma_max, c["steps"], disable=True, noise_sampler=noise_sampler, **c["kwargs"])
        torch.set_default_dtype(torch.float32)
    else:
        fn = getattr(sampling, c["fn"])
        x = fn(wrapper, x, sigmas, disable=True, noise_sampler=noise_sampler, **c["kwargs"])
    np.save(f"{d}/out_{c['id']}.npy", x.numpy())
    # One label per model call (the model sees the batch; keep the first sample's).
    out_labels[c["id"]] = {"labels": inner.labels[:: x.shape[0]], "draws": pops - len(queue)}
print(json.dumps(out_labels))
