"""Seeded fixtures the tests, gates and benchmarks make for themselves (never real weights).

Import with ``python/`` on ``sys.path`` (``tests/it/common.rs`` sets PYTHONPATH for every test
snippet; scripts in this folder import it directly).
"""
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
