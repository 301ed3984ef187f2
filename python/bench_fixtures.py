"""Seeded fixtures the tests, gates and benchmarks make for themselves (never real weights).

Import with ``python/`` on ``sys.path`` (``tests/it/common.rs`` sets PYTHONPATH for every test
snippet; scripts in this folder import it directly).
"""
import torch
import torch.nn as nn


def random_fid_inception(seed=0):
    """pytorch-fid's FID Inception (``fid_inception_v3()``'s architecture) with seeded random
    weights. BatchNorm running statistics come from one calibration batch, so activations stay
    O(1) through all 94 layers, and its affine parameters are random. Returns the eval-mode
    ``torchvision`` Inception whose ``state_dict()`` the FID weights files hold."""
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
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    # Calibrated in float64, then rounded to float32: float32 convolutions sum in an order that
    # depends on the CPU (oneDNN picks kernels by ISA), float64 ones differ only far below
    # float32's resolution, so the fixture's weights are the same on every machine.
    calib = torch.rand(2, 3, 160, 160) * 2 - 1
    net.double().train()
    with torch.no_grad():
        net(calib.double())
    return net.float().eval()


def pytorch_fid_model(net, dims=(0, 1, 2, 3)):
    """pytorch-fid's ``InceptionV3`` feature extractor built from ``net``'s weights (its
    ``load_state_dict_from_url`` patched to return them)."""
    import pytorch_fid.inception as inc

    sd = net.state_dict()
    inc.load_state_dict_from_url = lambda *a, **k: sd
    return inc.InceptionV3(list(dims), resize_input=True, normalize_input=True).eval()
