# Tiny seeded random-weight diffusers models for the latent/conditional network tests, saved with
# save_pretrained in the layouts the product reads, with reference outputs from diffusers itself.
#
#   python sd_fixtures.py OUT WHICH
#
# WHICH selects one fixture family (see FIXTURES). Every fixture writes OUT/<name>/ model folders
# and OUT/*.npy inputs and reference outputs (float32 unless named otherwise).
import copy, json, os, sys
import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel, VQModel

out, which = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
torch.set_num_threads(2)


def perturb(model):
    # Default inits leave norms at weight 1 / bias 0 and some projections at zero; perturb every
    # parameter so a swapped or skipped tensor changes the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def save(name, a):
    np.save(os.path.join(out, name + ".npy"), a.detach().float().numpy() if a.is_floating_point() else a.numpy())


def variants(model, name, all_layouts):
    model.save_pretrained(os.path.join(out, name))
    if not all_layouts:
        return
    model.save_pretrained(os.path.join(out, name + "_bin"), safe_serialization=False)
    half = copy.deepcopy(model).half()
    half.save_pretrained(os.path.join(out, name + "_fp16"), variant="fp16")
    # Both files in one folder: the loader picks by target precision.
    model.save_pretrained(os.path.join(out, name + "_mixed"))
    half.save_pretrained(os.path.join(out, name + "_mixed"), variant="fp16")
    model.save_pretrained(os.path.join(out, name + "_sharded"), max_shard_size="200KB")


def low_precision_refs(model, run, prefix):
    """diffusers' own bf16 (and fp16) outputs on CPU from the same fp32 weights, and its fp32
    output from fp16-rounded weights (what loading the fp16 file into fp32 must give)."""
    with torch.no_grad():
        save(prefix + "_fp16weights", run(copy.deepcopy(model).half().float(), torch.float32))
        save(prefix + "_bf16", run(copy.deepcopy(model).to(torch.bfloat16), torch.bfloat16))
        save(prefix + "_fp16", run(copy.deepcopy(model).half(), torch.float16))


def cond_unet(name, cfg, x_hw, tokens, labels=None, all_layouts=False):
    model = perturb(UNet2DConditionModel(**cfg))
    b = 2
    x = torch.randn(b, cfg.get("in_channels", 4), *x_hw)
    t = torch.tensor([999.0, 10.5])
    d = cfg["cross_attention_dim"]
    ehs = torch.randn(b, tokens, d if isinstance(d, int) else d[0])
    save(name + "_x", x); save(name + "_t", t); save(name + "_ehs", ehs)
    if labels is not None:
        save(name + "_labels", labels)

    def run(m, dtype):
        return m(x.to(dtype), t, ehs.to(dtype), class_labels=labels).sample

    with torch.no_grad():
        save(name + "_out", run(model, torch.float32))
    if all_layouts:
        low_precision_refs(model, run, name)
    variants(model, name, all_layouts)


def pixel_unet(name, cfg, labels=None, t=None, all_layouts=False):
    model = perturb(UNet2DModel(**cfg))
    b = 2
    s = cfg["sample_size"]
    x = torch.randn(b, cfg.get("in_channels", 3), s, s)
    t = torch.tensor([10.0, 500.5], dtype=torch.float64) if t is None else t
    save(name + "_x", x); save(name + "_t", t)
    if labels is not None:
        save(name + "_labels", labels)

    def run(m, dtype):
        return m(x.to(dtype), t, class_labels=labels).sample

    with torch.no_grad():
        save(name + "_out", run(model, torch.float32))
    if all_layouts:
        low_precision_refs(model, run, name)
    variants(model, name, all_layouts)


SD_DOWN = ("CrossAttnDownBlock2D", "DownBlock2D")
SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D")


def sd1():
    # SD 1.x layout (conv projections, 8 heads, one cross-attention dim), tiny widths.
    cond_unet("sd1", dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=2, cross_attention_dim=32,
                          attention_head_dim=8, down_block_types=SD_DOWN, up_block_types=SD_UP),
              (16, 16), 77, all_layouts=True)


def sd2():
    # SD 2.x layout: linear projections, upcast_attention, per-block heads (64-wide in SD 2; 16 here).
    # A 10×10 input exercises the odd-size path (10 → 5 → 3 → up to 5 → 10).
    cond_unet("sd2", dict(sample_size=12, block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=48,
                          attention_head_dim=[2, 4, 4], use_linear_projection=True, upcast_attention=True,
                          down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
              (10, 10), 7)


def cond_misc():
    # The remaining UNet2DConditionModel options this loader implements, in one model.
    cond_unet("misc", dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=[1, 2],
                           transformer_layers_per_block=[2, 1], only_cross_attention=[True, False],
                           num_class_embeds=10, resnet_time_scale_shift="scale_shift", cross_attention_dim=24,
                           attention_head_dim=[4, 8], downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
                           time_embedding_dim=96, conv_in_kernel=5, conv_out_kernel=1, mid_block_scale_factor=1.5,
                           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
              (8, 8), 5, labels=torch.tensor([3, 9]))


def vae():
    enc, dec = ("DownEncoderBlock2D",) * 2, ("UpDecoderBlock2D",) * 2
    kl = perturb(AutoencoderKL(block_out_channels=(32, 64), down_block_types=enc, up_block_types=dec,
                               layers_per_block=1, latent_channels=4, sample_size=16))
    z = torch.randn(2, 4, 8, 8)
    save("kl_latents", z)
    with torch.no_grad():
        # StableDiffusionPipeline: vae.decode(latents / scaling_factor)
        save("kl_out", kl.decode(z / kl.config.scaling_factor).sample)
    kl.save_pretrained(os.path.join(out, "kl"))
    kl.save_pretrained(os.path.join(out, "kl_bin"), safe_serialization=False)
    # SD3/Flux-style: shift_factor, no (post_)quant_conv, more latent channels.
    kls = perturb(AutoencoderKL(block_out_channels=(32, 64), down_block_types=enc, up_block_types=dec,
                                layers_per_block=1, latent_channels=8, scaling_factor=0.3611, shift_factor=0.1159,
                                use_quant_conv=False, use_post_quant_conv=False))
    z = torch.randn(1, 8, 6, 6)
    save("kls_latents", z)
    with torch.no_grad():
        save("kls_out", kls.decode(z / kls.config.scaling_factor + kls.config.shift_factor).sample)
    kls.save_pretrained(os.path.join(out, "kls"))


def ldm():
    # LDMPipeline parts: a UNet2DModel in the CompVis/ldm-celebahq-256 layout over a VQModel.
    pixel_unet("ldm_unet", dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                                layers_per_block=1, attention_head_dim=8,
                                down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                up_block_types=("AttnUpBlock2D", "UpBlock2D")))
    vq = perturb(VQModel(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=3,
                         num_vq_embeddings=64, scaling_factor=0.5))
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_()  # spread the codebook so many entries get picked
        z = torch.randn(2, 3, 8, 8) * vq.config.scaling_factor
        save("vq_latents", z)
        # LDMPipeline: vqvae.decode(latents / scaling_factor) with the default quantisation.
        save("vq_out", vq.decode(z / vq.config.scaling_factor).sample)
        zq, _, (_, _, idx) = vq.quantize(z / vq.config.scaling_factor)
        save("vq_codes", idx.reshape(-1))
    vq.save_pretrained(os.path.join(out, "vq"))


def pixel():
    # Consistency-model ImageNet-64 layout (diffusers' convert_consistency_to_diffusers TEST config).
    pixel_unet("cm64", dict(sample_size=16, in_channels=3, out_channels=3, layers_per_block=2, num_class_embeds=1000,
                            block_out_channels=(32, 64), attention_head_dim=8,
                            down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
                            resnet_time_scale_shift="scale_shift", attn_norm_num_groups=32,
                            upsample_type="resnet", downsample_type="resnet"),
               labels=torch.tensor([7, 999]), all_layouts=True)
    # Consistency-model LSUN-256 layout (unconditional, default shift), fewer levels and channels.
    pixel_unet("cmlsun", dict(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                              block_out_channels=(32, 32, 64), attention_head_dim=8,
                              down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
                              upsample_type="resnet", downsample_type="resnet"))
    # iDDPM/ADM-style learned variance: 6 output channels (ε, v), AdaGN, and (AdaGN without
    # attn_norm_num_groups) a middle attention without GroupNorm.
    pixel_unet("var", dict(sample_size=16, in_channels=3, out_channels=6, layers_per_block=1,
                           block_out_channels=(32, 64), attention_head_dim=None,
                           down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), resnet_time_scale_shift="scale_shift"))
    # Fourier time features (NCSN++-style output division) with timestep-embedded class labels,
    # no middle attention.
    pixel_unet("fourier", dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                               block_out_channels=(32, 64), time_embedding_type="fourier", class_embed_type="timestep",
                               down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                               add_attention=False),
               labels=torch.tensor([3.0, 250.5]), t=torch.tensor([0.5, 20.0]))
    # Identity class embeddings (per-sample vectors added to the time embedding), a single level.
    pixel_unet("ident", dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32,),
                             down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
                             class_embed_type="identity"),
               labels=torch.randn(2, 128))


FIXTURES = dict(sd1=sd1, sd2=sd2, misc=cond_misc, vae=vae, ldm=ldm, pixel=pixel)
for w in which.split(","):
    FIXTURES[w]()
print(json.dumps(sorted(os.listdir(out))))
