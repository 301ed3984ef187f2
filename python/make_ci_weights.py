# Seeded random weights and reference images for experiments/ci_unet.yaml (the regression gate
# of the tch UNet and FID Inception paths). Made by us, from fixed seeds; never real weights.
# Usage: python python/make_ci_weights.py OUT_DIR
import os, sys
import numpy as np
import torch, torch.nn as nn
import pytorch_fid.inception as inc
from diffusers import UNet2DModel

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None, norm_eps=1e-6,
                   downsample_padding=0, flip_sin_to_cos=False, freq_shift=1).eval()
unet.save_pretrained(os.path.join(out, "unet"))

torch.manual_seed(0)
net = inc._inception_v3(num_classes=1008, aux_logits=False, weights=None)
net.Mixed_5b = inc.FIDInceptionA(192, pool_features=32)
net.Mixed_5c = inc.FIDInceptionA(256, pool_features=64)
net.Mixed_5d = inc.FIDInceptionA(288, pool_features=64)
net.Mixed_6b = inc.FIDInceptionC(768, channels_7x7=128)
net.Mixed_6c = inc.FIDInceptionC(768, channels_7x7=160)
net.Mixed_6d = inc.FIDInceptionC(768, channels_7x7=160)
net.Mixed_6e = inc.FIDInceptionC(768, channels_7x7=192)
net.Mixed_7b = inc.FIDInceptionE_1(1280)
net.Mixed_7c = inc.FIDInceptionE_2(2048)
# BatchNorm statistics from one calibration batch so activations stay O(1).
for m in net.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.momentum = None
        m.reset_running_stats()
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
net.train()
with torch.no_grad():
    net(torch.rand(2, 3, 160, 160) * 2 - 1)
torch.save(net.eval().state_dict(), os.path.join(out, "inception.pth"), _use_new_zipfile_serialization=False)

# Reference "dataset": smooth random images (NHWC uint8, OpenAI samples-file layout).
rng = np.random.default_rng(0)
low = rng.normal(0, 1, (100, 4, 4, 3))
imgs = np.clip(128 + 60 * np.repeat(np.repeat(low, 8, axis=1), 8, axis=2), 0, 255).astype(np.uint8)
np.savez(os.path.join(out, "reference_images.npz"), arr_0=imgs)
