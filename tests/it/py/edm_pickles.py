# Writes NVlabs/edm network snapshots (the `network-snapshot-*.pkl` layout) with seeded random
# weights, WITHOUT EDM's code: the object graph that EDM's `torch_utils.persistence` pickles is
# built here from plain torch objects, and pickle is made to name EDM's globals by registering
# stand-in functions under those names. The layout, from EDM's persistence.py / training_loop.py:
#
#   pickle.dump(dict(ema=<precond>, loss_fn=<loss>, augment_pipe=None, dataset_kwargs={...}))
#   <persistent object> = torch_utils.persistence._reconstruct_persistent_obj(
#       dict(type='class', version=6, module_src=<module source>, class_name=..., state=<__dict__>))
#   torch.nn.ModuleDict  = NEWOBJ torch.nn.modules.container.ModuleDict () + BUILD <__dict__>
#   parameters / buffers = real torch tensors (pickled by torch's own reducers)
#
# A module's `__dict__` is a real `torch.nn.Module().__getstate__()` (so hooks etc. are exactly
# this torch version's), with `_parameters` / `_buffers` / `_modules` and the attributes EDM's
# `training/networks.py` sets, in its order, then `_init_args` / `_init_kwargs`.
#
# usage: edm_pickles.py OUT_DIR [--edm-src EDM_CHECKOUT]
#   writes OUT_DIR/<config>.pkl for every config below and OUT_DIR/inputs.npz (the fixed inputs
#   of the parity checks). `--edm-src` embeds EDM's real module sources as `module_src` so EDM's
#   own unpickler can load the files (the one-time comparison against EDM); without it the
#   sources are a placeholder comment (samplerbench never reads them).
import argparse
import math
import os
import pickle
import sys
import types

import numpy as np
import torch

VERSION = 6  # torch_utils.persistence._version


def stand_in(module, name):
    """A function that pickle writes as the global `module.name`; never called."""
    def f(*args, **kwargs):
        raise RuntimeError(f"{module}.{name} is a stand-in")
    f.__module__, f.__name__, f.__qualname__ = module, name, name
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    setattr(sys.modules[module], name, f)
    return f


RECONSTRUCT = None  # the stand-in for torch_utils.persistence._reconstruct_persistent_obj (see main)
SOURCES = {}  # module name -> module_src text


class Persistent:
    """An instance of an EDM `@persistent_class`, as persistence pickles it."""

    def __init__(self, module, class_name, state):
        self.module, self.class_name, self.state = module, class_name, state

    def __reduce__(self):
        meta = dict(type="class", version=VERSION, module_src=SOURCES[self.module],
                    class_name=self.class_name, state=self.state)
        return (RECONSTRUCT, (meta,))


def ModuleDict(modules):
    """A `torch.nn.ModuleDict` (not persistent itself) holding persistent modules: a real, empty
    instance whose `__dict__` is set directly, so torch's own reducer pickles it."""
    md = torch.nn.ModuleDict.__new__(torch.nn.ModuleDict)
    md.__dict__.update(module_state(modules=modules))
    return md


def module_state(params=None, buffers=None, modules=None, attrs=(), init_kwargs=None):
    """A torch.nn.Module `__dict__` in eval mode. `attrs` is a list of (name, value) in the order
    `__init__` sets them; a value that is a parameter/module goes to its table instead."""
    st = torch.nn.Module().eval().__getstate__()
    st["_parameters"] = dict(params or {})
    st["_buffers"] = dict(buffers or {})
    st["_modules"] = dict(modules or {})
    for k, v in attrs:
        st[k] = v
    if init_kwargs is not None:
        st["_init_args"] = ()
        st["_init_kwargs"] = init_kwargs
    return st


class Builder:
    """Builds the persistent objects of training/networks.py with seeded random weights."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g)

    def param(self, t):
        return torch.nn.Parameter(t, requires_grad=False)

    def net(self, class_name, params=None, buffers=None, modules=None, attrs=(), init_kwargs=None):
        # Attributes set to None where EDM assigns None to a would-be parameter/module name.
        return Persistent("training.networks", class_name,
                          module_state(params, buffers, modules, attrs, init_kwargs or {}))

    def linear(self, cin, cout, bias=True, **init):
        params = {"weight": self.param(self.randn(cout, cin) / math.sqrt(cin))}
        attrs = [("in_features", cin), ("out_features", cout)]
        if bias:
            params["bias"] = self.param(0.1 * self.randn(cout))
        else:
            attrs.append(("bias", None))
        return self.net("Linear", params, attrs=attrs,
                        init_kwargs=dict(in_features=cin, out_features=cout, bias=bias, **init))

    def conv(self, cin, cout, kernel, bias=True, up=False, down=False, resample_filter=(1, 1),
             fused_resample=False, **init):
        params, attrs = {}, [("in_channels", cin), ("out_channels", cout), ("up", up), ("down", down),
                             ("fused_resample", fused_resample)]
        if kernel:
            params["weight"] = self.param(self.randn(cout, cin, kernel, kernel) / math.sqrt(cin * kernel * kernel))
        else:
            attrs.append(("weight", None))
        if kernel and bias:
            params["bias"] = self.param(0.1 * self.randn(cout))
        else:
            attrs.append(("bias", None))
        f = torch.as_tensor(list(resample_filter), dtype=torch.float32)
        f = f.ger(f).unsqueeze(0).unsqueeze(1) / f.sum().square()
        buffers = {"resample_filter": f if up or down else None}
        return self.net("Conv2d", params, buffers, attrs=attrs, init_kwargs=dict(
            in_channels=cin, out_channels=cout, kernel=kernel, bias=bias, up=up, down=down,
            resample_filter=list(resample_filter), fused_resample=fused_resample, **init))

    def group_norm(self, c, eps=1e-5):
        params = {"weight": self.param(1 + 0.1 * self.randn(c)), "bias": self.param(0.1 * self.randn(c))}
        attrs = [("num_groups", min(32, c // 4)), ("eps", eps)]
        return self.net("GroupNorm", params, attrs=attrs, init_kwargs=dict(num_channels=c, eps=eps))

    def block(self, cin, cout, emb, up=False, down=False, attention=False, num_heads=None,
              channels_per_head=64, dropout=0.1, skip_scale=1, eps=1e-5, resample_filter=(1, 1),
              resample_proj=False, adaptive_scale=True, init=None, init_zero=None, init_attn=None):
        init, init_zero = init or {}, init_zero or {}
        heads = 0 if not attention else num_heads if num_heads is not None else cout // channels_per_head
        rf = dict(resample_filter=resample_filter)
        m = {
            "norm0": self.group_norm(cin, eps),
            "conv0": self.conv(cin, cout, 3, up=up, down=down, **rf, **init),
            "affine": self.linear(emb, cout * (2 if adaptive_scale else 1), **init),
            "norm1": self.group_norm(cout, eps),
            "conv1": self.conv(cout, cout, 3, **init_zero),
        }
        attrs = [("in_channels", cin), ("out_channels", cout), ("emb_channels", emb), ("num_heads", heads),
                 ("dropout", dropout), ("skip_scale", skip_scale), ("adaptive_scale", adaptive_scale)]
        if cout != cin or up or down:
            kernel = 1 if resample_proj or cout != cin else 0
            m["skip"] = self.conv(cin, cout, kernel, up=up, down=down, **rf, **init)
        else:
            attrs.append(("skip", None))
        if heads:
            m["norm2"] = self.group_norm(cout, eps)
            m["qkv"] = self.conv(cout, cout * 3, 1, **(init_attn if init_attn is not None else init))
            m["proj"] = self.conv(cout, cout, 1, **init_zero)
        return self.net("UNetBlock", modules=m, attrs=attrs, init_kwargs=dict(
            in_channels=cin, out_channels=cout, emb_channels=emb, up=up, down=down, attention=attention,
            num_heads=num_heads, channels_per_head=channels_per_head, dropout=dropout,
            skip_scale=skip_scale, eps=eps, resample_filter=list(resample_filter),
            resample_proj=resample_proj, adaptive_scale=adaptive_scale, init=init, init_zero=init_zero,
            init_attn=init_attn))

    def song_unet(self, kw):
        """EDM's SongUNet (DDPM++ / NCSN++) from its constructor arguments `kw`."""
        a = dict(label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
                 num_blocks=4, attn_resolutions=[16], dropout=0.10, label_dropout=0,
                 embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                 decoder_type="standard", resample_filter=[1, 1])
        a.update(kw)
        mc, res0 = a["model_channels"], a["img_resolution"]
        emb, noise = mc * a["channel_mult_emb"], mc * a["channel_mult_noise"]
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2))
        bk = dict(num_heads=1, dropout=a["dropout"], skip_scale=np.sqrt(0.5), eps=1e-6,
                  resample_filter=a["resample_filter"], resample_proj=True, adaptive_scale=False,
                  init=init, init_zero=init_zero, init_attn=init_attn)
        m, attrs = {}, [("label_dropout", a["label_dropout"])]
        if a["embedding_type"] == "positional":
            m["map_noise"] = self.net("PositionalEmbedding", attrs=[
                ("num_channels", noise), ("max_positions", 10000), ("endpoint", True)],
                init_kwargs=dict(num_channels=noise, endpoint=True))
        else:
            m["map_noise"] = self.net("FourierEmbedding", buffers={"freqs": self.randn(noise // 2) * 16},
                                      init_kwargs=dict(num_channels=noise))
        if a["label_dim"]:
            m["map_label"] = self.linear(a["label_dim"], noise, **init)
        else:
            attrs.append(("map_label", None))
        if a["augment_dim"]:
            m["map_augment"] = self.linear(a["augment_dim"], noise, bias=False, **init)
        else:
            attrs.append(("map_augment", None))
        m["map_layer0"] = self.linear(noise, emb, **init)
        m["map_layer1"] = self.linear(emb, emb, **init)
        enc, skips = {}, []
        cout = caux = a["in_channels"]
        for level, mult in enumerate(a["channel_mult"]):
            res = res0 >> level
            if level == 0:
                cin, cout = cout, mc
                enc[f"{res}x{res}_conv"] = self.conv(cin, cout, 3, **init)
            else:
                enc[f"{res}x{res}_down"] = self.block(cout, cout, emb, down=True, **bk)
                if a["encoder_type"] == "skip":
                    enc[f"{res}x{res}_aux_down"] = self.conv(caux, caux, 0, down=True, resample_filter=a["resample_filter"])
                    enc[f"{res}x{res}_aux_skip"] = self.conv(caux, cout, 1, **init)
                if a["encoder_type"] == "residual":
                    enc[f"{res}x{res}_aux_residual"] = self.conv(caux, cout, 3, down=True, resample_filter=a["resample_filter"],
                                                                 fused_resample=True, **init)
                    caux = cout
            skips.append(cout)
            for idx in range(a["num_blocks"]):
                cin, cout = cout, mc * mult
                enc[f"{res}x{res}_block{idx}"] = self.block(cin, cout, emb, attention=res in a["attn_resolutions"], **bk)
                skips.append(cout)
        dec = {}
        levels = len(a["channel_mult"])
        for level, mult in reversed(list(enumerate(a["channel_mult"]))):
            res = res0 >> level
            if level == levels - 1:
                dec[f"{res}x{res}_in0"] = self.block(cout, cout, emb, attention=True, **bk)
                dec[f"{res}x{res}_in1"] = self.block(cout, cout, emb, **bk)
            else:
                dec[f"{res}x{res}_up"] = self.block(cout, cout, emb, up=True, **bk)
            for idx in range(a["num_blocks"] + 1):
                cin, cout = cout + skips.pop(), mc * mult
                attn = idx == a["num_blocks"] and res in a["attn_resolutions"]
                dec[f"{res}x{res}_block{idx}"] = self.block(cin, cout, emb, attention=attn, **bk)
            if a["decoder_type"] == "skip" or level == 0:
                oc = a["out_channels"]
                if a["decoder_type"] == "skip" and level < levels - 1:
                    dec[f"{res}x{res}_aux_up"] = self.conv(oc, oc, 0, up=True, resample_filter=a["resample_filter"])
                dec[f"{res}x{res}_aux_norm"] = self.group_norm(cout, eps=1e-6)
                dec[f"{res}x{res}_aux_conv"] = self.conv(cout, oc, 3, **init_zero)
        m["enc"], m["dec"] = ModuleDict(enc), ModuleDict(dec)
        return self.net("SongUNet", modules=m, attrs=attrs, init_kwargs=kw)

    def dhariwal_unet(self, kw):
        """EDM's DhariwalUNet (ADM) from its constructor arguments `kw`."""
        a = dict(label_dim=0, augment_dim=0, model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4,
                 num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.10, label_dropout=0)
        a.update(kw)
        mc, res0 = a["model_channels"], a["img_resolution"]
        emb = mc * a["channel_mult_emb"]
        init = dict(init_mode="kaiming_uniform", init_weight=np.sqrt(1 / 3), init_bias=np.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        bk = dict(channels_per_head=64, dropout=a["dropout"], init=init, init_zero=init_zero)
        m, attrs = {}, [("label_dropout", a["label_dropout"])]
        m["map_noise"] = self.net("PositionalEmbedding", attrs=[
            ("num_channels", mc), ("max_positions", 10000), ("endpoint", False)], init_kwargs=dict(num_channels=mc))
        if a["augment_dim"]:
            m["map_augment"] = self.linear(a["augment_dim"], mc, bias=False, **init_zero)
        else:
            attrs.append(("map_augment", None))
        m["map_layer0"] = self.linear(mc, emb, **init)
        m["map_layer1"] = self.linear(emb, emb, **init)
        if a["label_dim"]:
            m["map_label"] = self.linear(a["label_dim"], emb, bias=False, init_mode="kaiming_normal",
                                         init_weight=np.sqrt(a["label_dim"]))
        else:
            attrs.append(("map_label", None))
        enc, skips = {}, []
        cout = a["in_channels"]
        for level, mult in enumerate(a["channel_mult"]):
            res = res0 >> level
            if level == 0:
                cin, cout = cout, mc * mult
                enc[f"{res}x{res}_conv"] = self.conv(cin, cout, 3, **init)
            else:
                enc[f"{res}x{res}_down"] = self.block(cout, cout, emb, down=True, **bk)
            skips.append(cout)
            for idx in range(a["num_blocks"]):
                cin, cout = cout, mc * mult
                enc[f"{res}x{res}_block{idx}"] = self.block(cin, cout, emb, attention=res in a["attn_resolutions"], **bk)
                skips.append(cout)
        dec = {}
        for level, mult in reversed(list(enumerate(a["channel_mult"]))):
            res = res0 >> level
            if level == len(a["channel_mult"]) - 1:
                dec[f"{res}x{res}_in0"] = self.block(cout, cout, emb, attention=True, **bk)
                dec[f"{res}x{res}_in1"] = self.block(cout, cout, emb, **bk)
            else:
                dec[f"{res}x{res}_up"] = self.block(cout, cout, emb, up=True, **bk)
            for idx in range(a["num_blocks"] + 1):
                cin, cout = cout + skips.pop(), mc * mult
                dec[f"{res}x{res}_block{idx}"] = self.block(cin, cout, emb, attention=res in a["attn_resolutions"], **bk)
        m["enc"], m["dec"] = ModuleDict(enc), ModuleDict(dec)
        m["out_norm"] = self.group_norm(cout)
        m["out_conv"] = self.conv(cout, a["out_channels"], 3, **init_zero)
        return self.net("DhariwalUNet", modules=m, attrs=attrs, init_kwargs=kw)

    def precond(self, class_name, img_resolution, img_channels, label_dim, model_type, model_kwargs, **consts):
        """A preconditioner with its model; `consts` are its own constructor arguments."""
        out_channels = img_channels * 2 if class_name == "iDDPMPrecond" else img_channels
        model_kw = dict(img_resolution=img_resolution, in_channels=img_channels, out_channels=out_channels,
                        label_dim=label_dim, **model_kwargs)
        model = self.song_unet(model_kw) if model_type == "SongUNet" else self.dhariwal_unet(model_kw)
        attrs = [("img_resolution", img_resolution), ("img_channels", img_channels), ("label_dim", label_dim),
                 ("use_fp16", False)]
        buffers = {}
        if class_name == "EDMPrecond":
            attrs += [("sigma_min", consts.get("sigma_min", 0)), ("sigma_max", consts.get("sigma_max", float("inf"))),
                      ("sigma_data", consts.get("sigma_data", 0.5))]
        elif class_name == "VEPrecond":
            attrs += [("sigma_min", consts.get("sigma_min", 0.02)), ("sigma_max", consts.get("sigma_max", 100))]
        elif class_name == "VPPrecond":
            beta_d, beta_min, M, eps_t = 19.9, 0.1, 1000, 1e-5
            # σ(t) = √(exp(½β_d t² + β_min t) − 1), evaluated in fp32 as EDM does for its attributes.
            sigma = lambda t: float(((0.5 * beta_d * (torch.as_tensor(t) ** 2) + beta_min * torch.as_tensor(t)).exp() - 1).sqrt())
            attrs += [("beta_d", beta_d), ("beta_min", beta_min), ("M", M), ("epsilon_t", eps_t),
                      ("sigma_min", sigma(eps_t)), ("sigma_max", sigma(1))]
        elif class_name == "iDDPMPrecond":
            C_1, C_2, M = 0.001, 0.008, 1000
            attrs += [("C_1", C_1), ("C_2", C_2), ("M", M)]
            # The discrete noise levels of iDDPM's cosine schedule (EDM paper, App. C.3.4), in fp32.
            alpha_bar = lambda j: (0.5 * np.pi * torch.as_tensor(j) / M / (C_2 + 1)).sin() ** 2
            u = torch.zeros(M + 1)
            for j in range(M, 0, -1):
                u[j - 1] = ((u[j] ** 2 + 1) / (alpha_bar(j - 1) / alpha_bar(j)).clip(min=C_1) - 1).sqrt()
            buffers["u"] = u
        modules = {"model": model}
        st_attrs = attrs
        state = module_state(buffers=buffers, modules=modules, attrs=st_attrs, init_kwargs=dict(
            img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim, use_fp16=False,
            model_type=model_type, **consts, **model_kwargs))
        if class_name == "iDDPMPrecond":  # these two are set after the `u` buffer is registered
            state["sigma_min"] = float(buffers["u"][M - 1])
            state["sigma_max"] = float(buffers["u"][0])
            kw = state.pop("_init_args"), state.pop("_init_kwargs")
            state["_init_args"], state["_init_kwargs"] = kw
        return Persistent("training.networks", class_name, state)


# The tiny networks of the parity checks: every SongUNet variant (positional/Fourier embedding,
# standard/skip/residual encoder, standard/skip decoder, [1,1]/[1,3,3,1] filters), ADM with 0, 1
# and 2 attention heads, each preconditioning, class labels and augmentation labels.
CONFIGS = {
    "vp_ddpmpp": dict(class_name="VPPrecond", label_dim=0, model_type="SongUNet", model_kwargs=dict(
        model_channels=16, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], dropout=0.13,
        embedding_type="positional", channel_mult_noise=1, encoder_type="standard", decoder_type="standard",
        resample_filter=[1, 1])),
    "ve_ncsnpp": dict(class_name="VEPrecond", label_dim=0, model_type="SongUNet", model_kwargs=dict(
        model_channels=16, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], dropout=0.13,
        embedding_type="fourier", channel_mult_noise=2, encoder_type="residual", decoder_type="standard",
        resample_filter=[1, 3, 3, 1])),
    "edm_song_skip_cond": dict(class_name="EDMPrecond", label_dim=10, model_type="SongUNet", model_kwargs=dict(
        augment_dim=9, model_channels=16, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[16],
        dropout=0.13, embedding_type="positional", channel_mult_noise=1, encoder_type="skip",
        decoder_type="skip", resample_filter=[1, 1])),
    "iddpm_adm_cond": dict(class_name="iDDPMPrecond", label_dim=10, model_type="DhariwalUNet", model_kwargs=dict(
        model_channels=32, channel_mult=[1, 2, 4], num_blocks=1, attn_resolutions=[16, 8, 4], dropout=0.1)),
    "edm_adm": dict(class_name="EDMPrecond", label_dim=0, model_type="DhariwalUNet", model_kwargs=dict(
        augment_dim=9, model_channels=32, channel_mult=[1, 2], num_blocks=2, attn_resolutions=[8], dropout=0.1)),
}
RESOLUTION, CHANNELS, BATCH, STEPS = 16, 3, 2, 5


def snapshot(name, seed):
    c = dict(CONFIGS[name])
    b = Builder(seed)
    ema = b.precond(c.pop("class_name"), RESOLUTION, CHANNELS, **c)
    loss = Persistent("training.loss", "EDMLoss", dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5,
                                                       _init_args=(), _init_kwargs={}))
    return dict(ema=ema, loss_fn=loss, augment_pipe=None,
                dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="datasets/tiny.zip",
                                    use_labels=c["label_dim"] > 0, xflip=False, cache=True, resolution=RESOLUTION,
                                    max_size=100))


def inputs():
    """The fixed inputs of the parity checks, from their own seeded generator."""
    g = torch.Generator().manual_seed(2022)
    x = 0.5 * torch.randn(BATCH, CHANNELS, RESOLUTION, RESOLUTION, generator=g)
    sigma = torch.tensor([0.35, 6.0])
    x = x + sigma.reshape(-1, 1, 1, 1) * torch.randn(x.shape, generator=g)
    labels = torch.nn.functional.one_hot(torch.tensor([3, 7]), 10).float()
    augment = torch.randn(BATCH, 9, generator=g)
    latents = torch.randn(BATCH, CHANNELS, RESOLUTION, RESOLUTION, generator=g, dtype=torch.float64)
    churn_noise = torch.randn(STEPS, BATCH, CHANNELS, RESOLUTION, RESOLUTION, generator=g, dtype=torch.float64)
    # Raw network inputs: c_noise in the ranges each preconditioning produces.
    noise_labels = dict(vp=torch.tensor([12.5, 730.0]), ve=torch.tensor([-1.9, 2.3]),
                        edm=torch.tensor([-0.9, 0.6]), iddpm=torch.tensor([40.0, 955.0]))
    out = dict(x=x, sigma=sigma, labels=labels, augment=augment, latents=latents, churn_noise=churn_noise)
    out.update({f"noise_labels_{k}": v for k, v in noise_labels.items()})
    return {k: v.numpy() for k, v in out.items()}


SEEDS = {name: 100 + i for i, name in enumerate(CONFIGS)}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--edm-src")
    args = ap.parse_args()
    RECONSTRUCT = stand_in("torch_utils.persistence", "_reconstruct_persistent_obj")
    for module, rel in [("training.networks", "training/networks.py"), ("training.loss", "training/loss.py")]:
        SOURCES[module] = (open(os.path.join(args.edm_src, rel)).read() if args.edm_src else
                           f"# source of {module} omitted: samplerbench never executes pickled code\n")
    os.makedirs(args.out, exist_ok=True)
    for name in CONFIGS:
        with open(os.path.join(args.out, f"{name}.pkl"), "wb") as f:
            pickle.dump(snapshot(name, SEEDS[name]), f)
    np.savez(os.path.join(args.out, "inputs.npz"), **inputs())
