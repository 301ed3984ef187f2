# Reference driver for tests/it/prediction.rs `learned_variance_ddpm_matches_diffusers`:
# diffusers' DDPMScheduler(variance_type="learned_range") with a random-weight 6-channel
# UNet2DModel (ε, then v) in float64, the float64 schedule both sides use and injected noise.
# argv: DIR (holds betas.npy, z.npy, noise.npy, cases.json); writes DIR/unet and out_<id>.npy.
import json, sys
import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.schedulers import scheduling_ddpm as m_ddpm

d = sys.argv[1]
cases = json.load(open(f"{d}/cases.json"))
z = torch.from_numpy(np.load(f"{d}/z.npy"))
noise = list(torch.from_numpy(np.load(f"{d}/noise.npy")))
betas = torch.from_numpy(np.load(f"{d}/betas.npy"))

torch.manual_seed(0)
unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=6, layers_per_block=1,
                   block_out_channels=(32, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), resnet_time_scale_shift="scale_shift")
# Default inits leave some projections at zero; perturb every parameter so the variance half
# is a function of (x, t) that moves.
with torch.no_grad():
    for p in unet.parameters():
        p.add_(0.05 * torch.randn_like(p))
unet = unet.eval()
unet.save_pretrained(f"{d}/unet")
unet = unet.double()

queue = []
m_ddpm.randn_tensor = lambda *a, **k: queue.pop(0)

for c in cases:
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", **c["config"])
    # The exact float64 schedule both sides use (diffusers computes it in float32).
    sched.betas = betas
    sched.alphas = 1.0 - betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(c["steps"])
    queue[:] = list(noise)
    x = z.clone()
    vs = []
    for t in sched.timesteps:
        with torch.no_grad():
            o = unet(x, t).sample
        vs.append(o[:, 3:])
        x = sched.step(o, t, x).prev_sample
    np.save(f"{d}/out_{c['id']}.npy", x.numpy())
    np.save(f"{d}/v_{c['id']}.npy", torch.stack(vs).numpy())
