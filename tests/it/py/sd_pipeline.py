# Tiny seeded random-weight diffusers pipelines saved with save_pretrained, with the outputs of
# diffusers' own pipelines on them: the end-to-end oracle for the latent pipelines.
#
#   python sd_pipeline.py OUT WHICH      WHICH: sd1, sd2, ldm, classcond (comma-separated)
#
# Writes OUT/<pipeline>/ folders, OUT/*.npy (float32; images NCHW in [-1, 1]) and OUT/cases.json,
# one entry per reference run (entries of the pipelines built here replace earlier ones).
import json, math, os, sys

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, LDMPipeline, LMSDiscreteScheduler, PNDMScheduler,
                       StableDiffusionPipeline, UNet2DModel, VQModel)
from diffusers.utils.torch_utils import randn_tensor

from bench_fixtures import perturb, tiny_sd_pipeline

out, which = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
torch.set_num_threads(1)
torch.set_grad_enabled(False)

PROMPTS = ["a photograph of an astronaut riding a horse", "café 日本 !!! (unicode)"]
STEPS = 4


def save(name, a):
    np.save(os.path.join(out, name + ".npy"), np.asarray(a, dtype=np.float32))
    return name + ".npy"


def nchw(images):
    # diffusers' "np" output: NHWC in [0, 1], clamped.
    return images.transpose(0, 3, 1, 2) * 2 - 1


def config_json(scheduler):
    # The config as save_pretrained writes it, less non-finite values (DPM-Solver's default
    # lambda_min_clipped = -inf), which strict JSON cannot hold; absent means that default.
    cfg = json.loads(scheduler.to_json_string())
    return {k: v for k, v in cfg.items() if not (isinstance(v, float) and not math.isfinite(v))}


def vae_images(vae, z):
    # StableDiffusionPipeline: vae.decode(latents / scaling_factor), then (x/2 + 0.5).clamp(0, 1).
    return vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1).numpy()


def fmt(a):
    return f"{tuple(a.shape)} [{a.min():.3f}, {a.max():.3f}]"


def latents(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


SD = {
    "sd1": dict(seed=1, pad="<|endoftext|>", unet=dict(attention_head_dim=8),
                # CLIP ViT-L/14's text config (quick_gelu, its old special-token ids).
                text=dict(hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1),
                # As SD 1.x's scheduler_config.json: its clip_sample false, unused by PNDM, carries over
                # to DDIM through from_config.
                scheduler=lambda: PNDMScheduler.from_config(dict(
                    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, clip_sample=False,
                    prediction_type="epsilon"))),
    "sd2": dict(seed=2, pad="!", unet=dict(attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True),
                text=dict(hidden_act="gelu"),
                scheduler=lambda: DDIMScheduler(
                    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                    set_alpha_to_one=False, clip_sample=False, prediction_type="v_prediction", timestep_spacing="leading")),
}


def export_torchscript(pipe, d):
    """The pipeline's UNet as `(x, t, text embeddings) -> ε` and its VAE decode as `z -> image`,
    traced: the TorchScript route for text-conditioned models."""
    os.makedirs(d, exist_ok=True)

    class Eps(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, x, t, emb):
            return self.unet(x, t, encoder_hidden_states=emb).sample

    class Decode(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode(z / self.vae.config.scaling_factor).sample

    x, t, emb = torch.randn(2, 4, 8, 8), torch.tensor([999.0, 10.0]), torch.randn(2, 77, 32)
    torch.jit.trace(Eps(pipe.unet.eval()), (x, t, emb), check_trace=False).save(os.path.join(d, "unet.pt"))
    torch.jit.trace(Decode(pipe.vae.eval()), (x,), check_trace=False).save(os.path.join(d, "decoder.pt"))


def sd(name):
    spec = SD[name]
    d = os.path.join(out, name)
    tiny_sd_pipeline(d, spec["seed"], spec["pad"], spec["scheduler"](), unet=spec["unet"], text=spec["text"])
    # The references come from the folder as saved.
    pipe = StableDiffusionPipeline.from_pretrained(d)
    pipe.set_progress_bar_config(disable=True)

    x_t = latents((2, 4, 8, 8), spec["seed"])
    save(name + "_latents", x_t)
    negative = ["blurry"] * 2  # a bare string with a list of prompts is a TypeError in diffusers
    embeds, negative_embeds = pipe.encode_prompt(PROMPTS, "cpu", 1, True, negative)
    save(name + "_prompt_embeds", embeds)
    save(name + "_negative_embeds", negative_embeds)
    # No negative prompt: diffusers encodes "" per prompt.
    save(name + "_empty_embeds", pipe.encode_prompt(PROMPTS, "cpu", 1, True, None)[1])
    if name == "sd1":
        export_torchscript(pipe, os.path.join(out, "sd1_ts"))

    own = pipe.scheduler
    # SD 2's own scheduler is DDIM: one entry.
    schedulers = {
        type(own).__name__.removesuffix("Scheduler").lower(): own,
        "ddim": DDIMScheduler.from_config(own.config),
        "lms": LMSDiscreteScheduler.from_config(own.config),
        "dpmpp": DPMSolverMultistepScheduler.from_config(own.config, algorithm_type="dpmsolver++", solver_order=2),
    }
    cases = []
    for sched_name, scheduler in schedulers.items():
        pipe.scheduler = scheduler
        for w in (1.0, 7.5):
            for neg in ("blurry", ""):
                tag = f"{name}_{sched_name}_{w}_{'neg' if neg else 'noneg'}"
                run = lambda output_type: pipe(
                    prompt=PROMPTS, negative_prompt=[neg] * 2 if neg else None, latents=torch.from_numpy(x_t),
                    guidance_scale=w, num_inference_steps=STEPS, output_type=output_type).images
                images, z = run("np"), run("latent")
                # Both runs are deterministic: decoding the final latents gives the images.
                decoded = vae_images(pipe.vae, z)
                assert np.allclose(decoded, nchw(images), atol=1e-5), tag
                cases.append(dict(pipeline=name, scheduler=sched_name, scheduler_config=config_json(scheduler),
                                  guidance_scale=w, negative_prompt=neg, prompts=PROMPTS, steps=STEPS,
                                  latents=name + "_latents.npy", images=save(tag + "_images", nchw(images)),
                                  latents_out=save(tag + "_latents_out", z)))
                print(tag, "images", fmt(nchw(images)), "latents_out", fmt(z.numpy()))
    return cases


def ldm():
    torch.manual_seed(4)
    d = os.path.join(out, "ldm")
    unet = perturb(UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D")))
    vq = perturb(VQModel(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=3, num_vq_embeddings=64,
        scaling_factor=0.5))
    vq.quantize.embedding.weight.normal_()  # spread the codebook so many entries get picked
    # CompVis/ldm-celebahq-256's schedule: LDM's "linear" is linear in sqrt(β), diffusers' scaled_linear.
    scheduler = DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False)
    LDMPipeline(vqvae=vq, unet=unet, scheduler=scheduler).save_pretrained(d)
    pipe = LDMPipeline.from_pretrained(d)
    pipe.set_progress_bar_config(disable=True)

    seed = 5
    x_t = randn_tensor((2, 3, 8, 8), generator=torch.manual_seed(seed))  # LDMPipeline's one draw
    images = nchw(pipe(batch_size=2, generator=torch.manual_seed(seed), eta=0.0, num_inference_steps=STEPS,
                       output_type="np").images)
    # The same sampling by hand from the saved x_T: the pipeline started from exactly it.
    x = x_t * pipe.scheduler.init_noise_sigma
    pipe.scheduler.set_timesteps(STEPS)
    for t in pipe.scheduler.timesteps:
        x = pipe.scheduler.step(pipe.unet(x, t).sample, t, x, eta=0.0).prev_sample
    manual = pipe.vqvae.decode(x / pipe.vqvae.config.scaling_factor).sample.clamp(-1, 1).numpy()
    assert np.allclose(manual, images, atol=1e-5)
    print("ldm images", fmt(images))
    return [dict(pipeline="ldm", scheduler="ddim", scheduler_config=config_json(pipe.scheduler), eta=0.0, steps=STEPS,
                 latents=save("ldm_latents", x_t), images=save("ldm_images", images),
                 # LDMPipeline: vqvae.decode(x / scaling_factor) (quantising), (img/2 + 0.5).clamp(0, 1).
                 postprocess="decode quantises; images clamped to [-1, 1]")]


def classcond():
    torch.manual_seed(6)
    d = os.path.join(out, "classcond")
    unet = perturb(UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        num_class_embeds=11, resnet_time_scale_shift="scale_shift", down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D")))
    scheduler = DDIMScheduler()  # defaults: linear 1e-4..0.02, clip_sample True, set_alpha_to_one True
    unet.save_pretrained(d)
    scheduler.save_pretrained(d)
    x_t = latents((2, 3, 8, 8), 6)
    labels, null = torch.tensor([3, 7]), torch.tensor([10, 10])
    x_t_file = save("classcond_latents", x_t)
    cases = []
    for w in (1.0, 4.0):
        x = torch.from_numpy(x_t)
        scheduler.set_timesteps(STEPS)
        for t in scheduler.timesteps:
            if w == 1.0:
                eps = unet(x, t, class_labels=labels).sample
            else:
                # Classifier-free guidance with the null class as [uncond, cond] in one batch.
                eps_u, eps_c = unet(torch.cat([x, x]), t, class_labels=torch.cat([null, labels])).sample.chunk(2)
                eps = eps_u + w * (eps_c - eps_u)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        print(f"classcond {w}", fmt(x.numpy()))
        cases.append(dict(pipeline="classcond", scheduler="ddim", scheduler_config=config_json(scheduler), eta=0.0,
                          guidance_scale=w, labels=labels.tolist(), null_label=10, steps=STEPS,
                          latents=x_t_file, samples=save(f"classcond_{w}", x)))
    return cases


BUILDERS = dict(sd1=lambda: sd("sd1"), sd2=lambda: sd("sd2"), ldm=ldm, classcond=classcond)
path = os.path.join(out, "cases.json")
cases = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else []
for w in which.split(","):
    cases = [c for c in cases if c["pipeline"] != w] + BUILDERS[w]()
json.dump(cases, open(path, "w", encoding="utf-8"), ensure_ascii=False, indent=1)
