# Seeded random weights and reference images for experiments/ci_unet.yaml (the regression gate
# of the tch UNet and FID Inception paths). Made by us, from fixed seeds; never real weights.
# Usage: python python/make_ci_weights.py OUT_DIR
import os, sys
import numpy as np
import torch
from diffusers import UNet2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fixtures import random_fid_inception

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None, norm_eps=1e-6,
                   downsample_padding=0, flip_sin_to_cos=False, freq_shift=1).eval()
unet.save_pretrained(os.path.join(out, "unet"))

net = random_fid_inception(seed=0)
torch.save(net.state_dict(), os.path.join(out, "inception.pth"), _use_new_zipfile_serialization=False)

# Reference "dataset": smooth random images (NHWC uint8, OpenAI samples-file layout).
rng = np.random.default_rng(0)
low = rng.normal(0, 1, (100, 4, 4, 3))
imgs = np.clip(128 + 60 * np.repeat(np.repeat(low, 8, axis=1), 8, axis=2), 0, 255).astype(np.uint8)
np.savez(os.path.join(out, "reference_images.npz"), arr_0=imgs)
