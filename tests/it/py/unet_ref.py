# Reference ε from diffusers' UNet2DModel with seeded random weights, saved in every layout the
# product reads: diffusers folder (safetensors, and .bin with old attention names), DDIM-repo
# state dict (zip) and the DDIM authors' [model, optimizer, epoch, step, ema] list (legacy
# format), and a traced TorchScript module. The renaming to the DDIM layout is done here,
# independently of the product code.
import json, os, sys
import numpy as np
import torch
from diffusers import UNet2DModel

out, which = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if which == "cifar10":
    cfg = dict(sample_size=32, block_out_channels=(128, 256, 256, 256),
               down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    ddim_cfg = dict(ch=128, ch_mult=[1, 2, 2, 2], attn_resolutions=[16], resolution=32)
    batch = 2
else:  # the 256-px google/ddpm-ema-*-256 layout with fewer channels
    cfg = dict(sample_size=256, block_out_channels=(32, 32, 64, 64, 128, 128),
               down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4)
    ddim_cfg = dict(ch=32, ch_mult=[1, 1, 2, 2, 4, 4], attn_resolutions=[16], resolution=256)
    batch = 1
model = UNet2DModel(in_channels=3, out_channels=3, layers_per_block=2, attention_head_dim=None,
                    norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, **cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name:  # make GroupNorm affine parameters non-trivial too
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(batch, 3, cfg["sample_size"], cfg["sample_size"])
    t = torch.tensor([10.0, 500.5][:batch] if batch == 2 else [333.0], dtype=torch.float64)
    eps = model(x, t).sample
np.save(os.path.join(out, "x.npy"), x.numpy())
np.save(os.path.join(out, "t.npy"), t.numpy())
np.save(os.path.join(out, "eps.npy"), eps.numpy())
json.dump(ddim_cfg, open(os.path.join(out, "ddim_config.json"), "w"))

model.save_pretrained(os.path.join(out, "diffusers_st"))
sd = model.state_dict()
os.makedirs(os.path.join(out, "diffusers_bin"), exist_ok=True)
old = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
        .replace(".to_out.0.", ".proj_attn."): v for k, v in sd.items()}
torch.save(old, os.path.join(out, "diffusers_bin", "diffusion_pytorch_model.bin"))
with open(os.path.join(out, "diffusers_st", "config.json")) as f:
    conf = f.read()
open(os.path.join(out, "diffusers_bin", "config.json"), "w").write(conf)

n = len(cfg["block_out_channels"])
def to_ddim(k, v):
    p = k.split(".")
    res = {"time_emb_proj": "temb_proj", "conv_shortcut": "nin_shortcut"}
    att = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    if k.startswith("time_embedding.linear_1"): return "temb.dense.0." + p[-1], v
    if k.startswith("time_embedding.linear_2"): return "temb.dense.1." + p[-1], v
    if k.startswith("conv_norm_out"): return "norm_out." + p[-1], v
    if p[0] in ("down_blocks", "up_blocks"):
        d = "down" if p[0] == "down_blocks" else "up"
        i = int(p[1]) if d == "down" else n - 1 - int(p[1])
        if p[2] == "resnets": return f"{d}.{i}.block.{p[3]}.{res.get(p[4], p[4])}.{p[-1]}", v
        if p[2] == "attentions":
            if p[4] != "group_norm" and p[-1] == "weight": v = v[:, :, None, None]
            return f"{d}.{i}.attn.{p[3]}.{att[p[4]]}.{p[-1]}", v
        if p[2] == "downsamplers": return f"down.{i}.downsample.conv.{p[-1]}", v
        if p[2] == "upsamplers": return f"up.{i}.upsample.conv.{p[-1]}", v
    if p[0] == "mid_block":
        if p[1] == "resnets": return f"mid.block_{int(p[2]) + 1}.{res.get(p[3], p[3])}.{p[-1]}", v
        if p[1] == "attentions":
            if p[3] != "group_norm" and p[-1] == "weight": v = v[:, :, None, None]
            return f"mid.attn_1.{att[p[3]]}.{p[-1]}", v
    return k, v
ddim = dict(to_ddim(k, v.clone()) for k, v in sd.items())
torch.save(ddim, os.path.join(out, "ddim_plain.ckpt"))
raw = {"module." + k: v * 0.9 for k, v in ddim.items()}  # the non-EMA weights differ
ema = {"module." + k: v for k, v in ddim.items()}
torch.save([raw, {"state": {}}, 100, 790000, ema], os.path.join(out, "ddim_list.pth"),
           _use_new_zipfile_serialization=False)

class Eps(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, x, t):
        return self.m(x, t).sample
traced = torch.jit.trace(Eps(model), (x, t.float()))
traced.save(os.path.join(out, "traced.pt"))
print(len(sd))
