"""Seeded fixtures the tests, gates and benchmarks make for themselves (never real weights).

Import with ``python/`` on ``sys.path`` (``tests/it/common.rs`` sets PYTHONPATH for every test
snippet; scripts in this folder import it directly).
"""
import os

import numpy as np
import torch
import torch.nn as nn


def random_fid_inception(seed=0, portable=False):
    """pytorch-fid's FID Inception (``fid_inception_v3()``'s architecture) with seeded random
    weights. BatchNorm running statistics come from one calibration batch, so activations stay
    O(1) through all 94 layers, and its affine parameters are random. Returns the eval-mode
    ``torchvision`` Inception whose ``state_dict()`` the FID weights files hold.

    ``portable=True`` gives the same bits on every CPU (the CI gate identifies its cells by the
    SHA-256 of their inputs): numpy draws instead of torch's per-ISA vectorised random kernels,
    and calibrated statistics rounded far coarser than the CPUs' summation-order differences.
    The tests' parity fixtures keep the torch-seeded weights their bounds were checked with."""
    import pytorch_fid.inception as inc

    torch.manual_seed(seed)
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
    if portable:
        portable_reinit(net, seed)
    rng = np.random.default_rng(seed + 1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            with torch.no_grad():
                if portable:
                    m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.weight.shape)))
                    m.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.2, m.bias.shape)))
                else:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.2)
    if portable:
        calib = torch.from_numpy(rng.uniform(-1.0, 1.0, (2, 3, 160, 160)))
    else:
        calib = (torch.rand(2, 3, 160, 160) * 2 - 1).double()
    net.double().train()
    with torch.no_grad():
        net(calib)
        for m in net.modules():
            if portable and isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(_coarse(m.running_mean))
                m.running_var.copy_(_coarse(m.running_var))
    return net.float().eval()


def _coarse(t, bits=12):
    m, e = np.frexp(t.numpy())
    return torch.from_numpy(np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e))


def portable_reinit(net, seed):
    """Replaces every randomly initialised parameter (any that is not constant) with numpy draws,
    uniform in ±(the power of two nearest its largest magnitude): torch's CPU random kernels are
    vectorised per instruction set, so torch-seeded weights differ between CPUs, numpy's do not.
    Constant parameters (norm scales and shifts) are kept."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _, p in sorted(net.named_parameters()):
            if p.numel() > 1 and float(p.max()) != float(p.min()):
                b = 2.0 ** np.round(np.log2(float(p.abs().max())))
                p.copy_(torch.from_numpy(rng.uniform(-b, b, tuple(p.shape))))


def pytorch_fid_model(net, dims=(0, 1, 2, 3)):
    """pytorch-fid's ``InceptionV3`` feature extractor built from ``net``'s weights (its
    ``load_state_dict_from_url`` patched to return them)."""
    import pytorch_fid.inception as inc

    sd = net.state_dict()
    inc.load_state_dict_from_url = lambda *a, **k: sd
    return inc.InceptionV3(list(dims), resize_input=True, normalize_input=True).eval()


def perturb(model, scale=0.05):
    """Adds seeded noise to every parameter: default inits leave norms at 1/0 and some
    projections at zero, where a swapped or skipped tensor would not show."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


def perturb_norms(model):
    """LayerNorm affine parameters start at exactly 1 and 0; make them non-trivial."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))


def tiny_sd_pipeline(d, seed, pad, scheduler, unet=None, text=None, sample_size=8):
    """A seeded random-weight StableDiffusionPipeline folder at ``d``, shaped like SD 1.x/2.x at
    toy widths (UNet (32, 64), a 2-layer CLIP text encoder over the real 49408-token vocabulary,
    an AutoencoderKL with downscale factor 2), saved with save_pretrained; the tokenizer folder in
    the hub checkpoints' layout (vocab.json + merges.txt), padded with ``pad``."""
    import shutil
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from clip_tokenizer_folder import write_tokenizer

    torch.manual_seed(seed)
    unet = perturb(UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=32, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **(unet or dict(attention_head_dim=8))))
    vae = perturb(AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, sample_size=2 * sample_size,
        scaling_factor=0.18215))
    text = perturb(CLIPTextModel(CLIPTextConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=37, vocab_size=49408,
        max_position_embeddings=77, projection_dim=32, **(text or {}))))
    tok = os.path.join(d, "tokenizer")
    write_tokenizer(tok, pad)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(tok), unet=unet,
                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(d)
    # transformers 5 re-saves the tokenizer as tokenizer.json without vocab.json/merges.txt.
    shutil.rmtree(tok)
    write_tokenizer(tok, pad)


def tiny_clip_model(d, seed=3):
    """A seeded random-weight transformers CLIPModel folder (ViT-B/32-like layout at toy widths,
    224² input, OpenAI's preprocessing config, the real tokenizer vocabulary): CLIP score's model."""
    import json
    from transformers import CLIPConfig, CLIPModel
    from clip_tokenizer_folder import write_tokenizer

    write_tokenizer(d, "<|endoftext|>")
    json.dump({"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
               "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
               "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224},
              open(os.path.join(d, "preprocessor_config.json"), "w"))
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2,
                           image_size=224, patch_size=32, hidden_act="gelu"),
        projection_dim=40)
    model = CLIPModel(cfg).eval()
    perturb_norms(model)
    model.save_pretrained(d)
    return model
