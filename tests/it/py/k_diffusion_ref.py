# Reference driver for tests/it/k_diffusion.rs: runs k-diffusion's samplers (and diffusers'
# DPMSolverSDEScheduler) on the Gaussian oracle through k-diffusion's discrete-DDPM wrappers,
# on the σ grid diffusers' EulerDiscreteScheduler lays out for the same options, with the SDE
# noise injected through `noise_sampler` (the arrays bench's sampler receives, in draw order).
# argv: DIR (cases.json, betas_*.npy, mean.npy, std.npy, z.npy, noise_*.npy) → out_*.npy,
# stdout: {case id: model-call labels}.
import json, sys
import numpy as np
import torch
import diffusers
from k_diffusion import external, sampling

d = sys.argv[1]
cases = json.load(open(f"{d}/cases.json"))
mean = torch.from_numpy(np.load(f"{d}/mean.npy"))
std = torch.from_numpy(np.load(f"{d}/std.npy"))
z = torch.from_numpy(np.load(f"{d}/z.npy"))


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
    inner = Oracle(ab, v)
    wrapper = (external.DiscreteVDDPMDenoiser if v else external.DiscreteEpsDDPMDenoiser)(inner, ab, quantize=False)
    grid = float64_schedule(diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, **c["grid"]), ab)
    grid.set_timesteps(c["steps"])
    sigmas = grid.sigmas.double()
    queue = list(torch.from_numpy(np.load(f"{d}/{c['noise']}"))) if c["noise"] else []
    # η = 0: the reference still draws, scaled by 0; bench draws nothing.
    noise_sampler = lambda s, sn: queue.pop(0) if queue else torch.zeros_like(z)
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
    else:
        fn = getattr(sampling, c["fn"])
        x = fn(wrapper, x, sigmas, disable=True, noise_sampler=noise_sampler, **c["kwargs"])
    assert not queue, f"{c['id']}: {len(queue)} noise draws unused"
    np.save(f"{d}/out_{c['id']}.npy", x.numpy())
    # One label per model call (the oracle sees the batch; keep the first sample's).
    out_labels[c["id"]] = inner.labels[:: x.shape[0]]
print(json.dumps(out_labels))
