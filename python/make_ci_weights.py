# Seeded random weights and reference images for experiments/ci_unet.yaml (the regression gate
# of the tch UNet and FID Inception paths). Made by us, from fixed seeds; never real weights.
# Usage: python python/make_ci_weights.py OUT_DIR
import os, sys
import numpy as np
import torch
from diffusers import UNet2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fixtures import portable_reinit, random_fid_inception

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None, norm_eps=1e-6,
                   downsample_padding=0, flip_sin_to_cos=False, freq_shift=1).eval()
portable_reinit(unet, seed=0)
unet.save_pretrained(os.path.join(out, "unet"))

net = random_fid_inception(seed=0, portable=True)
torch.save(net.state_dict(), os.path.join(out, "inception.pth"))

# Reference "dataset": smooth random images (NHWC uint8, OpenAI samples-file layout).
rng = np.random.default_rng(0)
low = rng.normal(0, 1, (100, 4, 4, 3))
imgs = np.clip(128 + 60 * np.repeat(np.repeat(low, 8, axis=1), 8, axis=2), 0, 255).astype(np.uint8)
np.savez(os.path.join(out, "reference_images.npz"), arr_0=imgs)

# Reference statistics (pytorch-fid's mu/sigma layout), the same bits on every machine: features
# computed by a network would differ between CPUs in their last bits, and the gate identifies its
# cells by the SHA-256 of their inputs. Integer-valued features make every sum below exact in
# float64 whatever order BLAS adds in; the divisions are single IEEE roundings.
n, d = 2100, 2048
feats = np.random.default_rng(1).integers(-8, 9, size=(n, d)).astype(np.float64)
total = feats.sum(axis=0)
gram = feats.T @ feats
sigma = (gram - np.outer(total, total) / n) / (n - 1) * 64.0
np.savez(os.path.join(out, "reference_stats.npz"), mu=total / n * 8.0, sigma=sigma)
