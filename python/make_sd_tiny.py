# The tiny text-to-image setup experiments/sd_guidance.yaml runs on: a seeded random-weight
# StableDiffusionPipeline (SD 1.x's layout and scheduler config at toy widths), a seeded
# random-weight CLIPModel for CLIP score, and a prompts file. Made by us; never real weights.
# Usage: python python/make_sd_tiny.py OUT_DIR   (writes OUT_DIR/sd_tiny/, OUT_DIR/clip/)
import os, sys

import torch
from diffusers import PNDMScheduler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fixtures import tiny_clip_model, tiny_sd_pipeline

out = sys.argv[1]
torch.set_num_threads(1)
torch.set_grad_enabled(False)
sd = os.path.join(out, "sd_tiny")
# SD 1.x's scheduler_config.json (runwayml/stable-diffusion-v1-5): PLMS, leading spacing, offset 1.
scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                          steps_offset=1, set_alpha_to_one=False)
tiny_sd_pipeline(sd, seed=11, pad="<|endoftext|>", scheduler=scheduler, sample_size=8,
                 text=dict(hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1))
prompts = [
    "a photograph of an astronaut riding a horse",
    "a red bicycle leaning against a brick wall",
    "two dogs playing in the snow",
    "a bowl of fruit on a wooden table",
    "a lighthouse on a cliff at sunset",
    "a city street at night in the rain",
    "an oil painting of a sailing ship in a storm",
    "a cat sleeping on a windowsill",
]
with open(os.path.join(sd, "prompts.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(prompts) + "\n")
tiny_clip_model(os.path.join(out, "clip"))
