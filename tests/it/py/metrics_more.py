# Oracles for tests/it/metrics_more.rs: torch-fidelity 0.4.0 (IS, KID, precision/recall), the
# prdc package's density/coverage formulas, clean-fid on mixed-size folders, EDM2-style FD in a
# TorchScript feature space, Diffusion-TS's Sines data and Context-FID, guided-diffusion's
# space_timesteps and Diffusion-TS's fast-sampling times. Test oracle only; every fixture is made
# here from fixed seeds. Usage: python metrics_more.py TASK OUT_DIR [ARGS...]; prints JSON.
import json, os, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch

task, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
torch.set_num_threads(2)


def save_images(folder, imgs):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(os.path.join(folder, f"{i:04d}.png"))


def smooth_images(rng, n, h, w, shift=0.0):
    # Low-frequency random images (blocky noise, upsampled), so the features differ in structure.
    low = rng.normal(shift, 1.0, (n, 4, 4, 3))
    img = np.repeat(np.repeat(low, -(-h // 4), axis=1), -(-w // 4), axis=2)[:, :h, :w]
    img = img + rng.normal(0, 0.25, img.shape)
    return np.clip(128 + 55 * img, 0, 255).astype(np.uint8)


# prdc package (clovaai/generative-evaluation-prdc, prdc/prdc.py): radii and density/coverage.
# `dist` is sklearn's pairwise_distances there; here either exact f64 distances of the f32
# features, or (batch given) torch-fidelity's f32 `calc_cdist_full` blocks, the distances
# torch-fidelity's precision/recall compare.
def prdc_oracle(real, fake, k, batch=None):
    def dist(a, b):
        if batch is not None:
            from torch_fidelity.metric_prc import calc_cdist_full
            return calc_cdist_full(torch.from_numpy(a), torch.from_numpy(b), batch).numpy()
        # In f64 the Gram form's cancellation error (~1e-16·|a|²/d²) is far below f32 rounding.
        a, b = a.astype(np.float64), b.astype(np.float64)
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.maximum(sq, 0))

    def kth(unsorted, kk):
        idx = np.argpartition(unsorted, kk, axis=-1)[..., :kk]
        return np.take_along_axis(unsorted, idx, axis=-1).max(axis=-1)

    r_real = kth(dist(real, real), k + 1)
    r_fake = kth(dist(fake, fake), k + 1)
    d = dist(real, fake)
    density_count = int((d < r_real[:, None]).sum())
    coverage_count = int((d.min(axis=1) < r_real).sum())
    # Smallest relative gap between a distance and the radius it is compared with: the margin that
    # f32 rounding (~1e-6 relative) would have to cross to flip a comparison.
    margin = min(np.abs(d / r_real[:, None] - 1).min(), np.abs(d / r_fake[None, :] - 1).min())
    # f32 `cdist` computes d² = |a|² + |b|² − 2a·b: its relative error in d scales with
    # (|a|² + |b|²) / d², the cancellation factor.
    sq = lambda a: (a.astype(np.float64) ** 2).sum(1)
    cancel = float((sq(real)[:, None] + sq(fake)[None, :]).max() / (d[d > 0] ** 2).min())
    return density_count, coverage_count, float(margin), cancel


def prc_reference(fake, real, k, batch, prefix):
    # torch-fidelity's float32 distances and radii (metric_prc.py `calc_cdist_full`, `kthvalue`),
    # saved, and the smallest |d − radius| over precision/recall's ≤ comparisons.
    from torch_fidelity.metric_prc import calc_cdist_full
    fake, real = torch.as_tensor(fake), torch.as_tensor(real)
    r_fake = calc_cdist_full(fake, fake, batch).kthvalue(k + 1).values
    r_real = calc_cdist_full(real, real, batch).kthvalue(k + 1).values
    d21 = calc_cdist_full(real, fake, batch)
    for name, t in [("d21", d21), ("r_fake", r_fake), ("r_real", r_real)]:
        np.save(f"{out}/{prefix}_{name}.npy", t.numpy())
    d = d21.double()
    return min(float((d - r_fake.double()[None, :]).abs().min()), float((d - r_real.double()[:, None]).abs().min()))


if task == "rng":
    # numpy's legacy RandomState: permutation, choice without replacement, uniform.
    res = {}
    for seed in [0, 1, 2020, 123, 4294967295]:
        r = np.random.RandomState(seed)
        res[str(seed)] = {
            "perm10": r.permutation(10).tolist(),
            "perm1000": r.permutation(1000).tolist(),
            "choice": r.choice(50000, 7, replace=False).tolist(),
            # As IEEE bit patterns: JSON decimal floats need not parse back exactly.
            "uniform_bits": [int(np.float64(r.uniform(0, 0.1)).view(np.uint64)) for _ in range(5)],
        }
    print(json.dumps(res))

elif task == "arrays":
    # Identical feature/logit arrays through torch-fidelity's metric functions.
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    rng = np.random.default_rng(5)
    d, n1, n2 = 2048, 230, 250
    # Post-ReLU features of one 16-d latent distribution; the reference slightly shifted. No
    # common offset, so squared norms stay comparable to squared distances (little cancellation
    # in f32 `cdist`).
    W = rng.standard_normal((16, d)) / 4
    X = np.maximum(rng.standard_normal((n1, 16)) @ W, 0).astype(np.float32)
    Y = np.maximum((rng.standard_normal((n2, 16)) + 0.15) @ W, 0).astype(np.float32)
    L = (rng.standard_normal((n1, 1008)) * 3).astype(np.float32)
    np.save(f"{out}/gen.npy", X)
    np.save(f"{out}/ref.npy", Y)
    np.save(f"{out}/logits.npy", L)
    res = {}
    res["isc"] = isc_features_to_metric(torch.from_numpy(L), splits=10, shuffle=True, rng_seed=2020)
    kw = dict(kid_subsets=20, kid_subset_size=100, rng_seed=2020, verbose=False)
    res["kid_f32"] = kid_features_to_metric(torch.from_numpy(X), torch.from_numpy(Y), **kw)
    res["kid_f64"] = kid_features_to_metric(torch.from_numpy(X).double(), torch.from_numpy(Y).double(), **kw)
    prc = prc_features_to_metric(torch.from_numpy(X), torch.from_numpy(Y), prc_neighborhood=3, prc_batch_size=64,
                                 save_cpu_ram=False, verbose=False)
    res["prc"] = {"precision_count": round(prc["precision"] * n1), "recall_count": round(prc["recall"] * n2),
                  "gap": prc_reference(X, Y, 3, 64, "arrays"), **prc}
    dc, cc, _, _ = prdc_oracle(Y, X, 3, batch=64)
    dc64, cc64, margin, cancel = prdc_oracle(Y, X, 3)
    res["prdc"] = {"density_count": dc, "coverage_count": cc, "density_count_f64": dc64, "coverage_count_f64": cc64,
                   "margin": margin, "cancel": cancel}
    print(json.dumps(res))

elif task == "tfid":
    # End to end through torch-fidelity with the same random FID Inception as ours: weights from
    # fid_net.rs's oracle (argv[3]), rescaled so the numbers mean something: Mixed_7c's last
    # BatchNorms (before ReLU, which commutes with a positive scale) scaled by 1/300 so pool
    # features are O(1) instead of O(300), and the classifier by 30 so softmax is far from uniform.
    # torch-fidelity's own features and logits come from its feature cache.
    import glob
    from torch_fidelity import calculate_metrics

    sd = torch.load(sys.argv[3])
    last = ["branch1x1.bn", "branch3x3_2a.bn", "branch3x3_2b.bn", "branch3x3dbl_3a.bn", "branch3x3dbl_3b.bn", "branch_pool.bn"]
    for k in list(sd):
        if k.startswith("Mixed_7c.") and any(f".{b}." in k for b in last) and k.endswith((".weight", ".bias")):
            sd[k] = sd[k] / 300
    sd["fc.weight"] = sd["fc.weight"] * 30
    torch.save(sd, f"{out}/w.pth")
    rng = np.random.default_rng(11)

    def varied_images(n, shift):
        a = smooth_images(rng, n, 32, 32, shift).astype(np.float64)
        gain = rng.uniform(0.3, 1.7, (n, 1, 1, 1))
        offset = rng.normal(0, 40, (n, 1, 1, 3))
        return np.clip((a - 128) * gain + 128 + offset, 0, 255).astype(np.uint8)

    save_images(f"{out}/gen", varied_images(30, 0.0))
    save_images(f"{out}/ref", varied_images(34, 0.4))
    m = calculate_metrics(input1=f"{out}/gen", input2=f"{out}/ref", cuda=False, isc=True, kid=True, prc=True,
                          feature_extractor="inception-v3-compat", feature_extractor_weights_path=f"{out}/w.pth",
                          kid_subset_size=25, kid_subsets=10, cache=True, cache_root=f"{out}/cache",
                          input1_cache_name="gen", input2_cache_name="ref", verbose=False, batch_size=16)
    cached = lambda name, layer: torch.load(glob.glob(f"{out}/cache/{name}-*-features-{layer}.pt")[0])
    fg, lg, fr = cached("gen", "2048"), cached("gen", "logits_unbiased"), cached("ref", "2048")
    np.save(f"{out}/tf_gen_features.npy", fg.numpy())
    np.save(f"{out}/tf_gen_logits.npy", lg.numpy())
    np.save(f"{out}/tf_ref_features.npy", fr.numpy())
    gap = prc_reference(fg, fr, 3, 10000, "tfid")  # torch-fidelity's default prc_batch_size
    m = {k: float(v) for k, v in m.items()}
    m.update(precision_count=round(m["precision"] * 30), recall_count=round(m["recall"] * 34), gap=gap)
    print(json.dumps(m))

elif task == "fd":
    # EDM2 DINOv2Detector preprocessing ('torch' resize: bicubic, antialias) and FD
    # (calculate_metrics.py `calculate_metrics_from_stats`) with a small scripted encoder, on as
    # many threads as the Rust side uses (argv[3]): oneDNN's convolution splits its sums by
    # thread count, which moves features by an ulp.
    import scipy.linalg

    torch.set_num_threads(int(sys.argv[3]))

    torch.manual_seed(3)
    # Convolutions only: they run in libtorch's own oneDNN on both sides, whereas a Linear layer's
    # GEMM goes to MKL in PyTorch but to the system OpenBLAS in `bench` (an ulp apart).
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.GELU(), torch.nn.Conv2d(16, 24, 3, stride=2),
                              torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    torch.jit.script(enc).save(f"{out}/enc.pt")
    enc = torch.jit.load(f"{out}/enc.pt")  # the module the Rust side runs, JIT and all
    rng = np.random.default_rng(4)
    gen = smooth_images(rng, 60, 40, 36)
    ref = smooth_images(rng, 70, 28, 28, shift=1.2)
    save_images(f"{out}/gen", gen)

    def features(imgs):
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()  # NCHW, as EDM2's loader yields
        out_f = []
        for b in x.split(16):
            y = torch.nn.functional.interpolate(b.to(torch.float32), size=(32, 32), mode="bicubic", antialias=True)
            y = y.to(torch.float32) / 255
            y = y - torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).reshape(1, -1, 1, 1)
            y = y / torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).reshape(1, -1, 1, 1)
            with torch.no_grad():
                out_f.append(enc(y))
        return torch.cat(out_f).numpy()

    fg, fr = features(gen), features(ref)
    np.save(f"{out}/py_gen_features.npy", fg)
    np.save(f"{out}/ref_features.npy", fr)
    stats = lambda f: (f.astype(np.float64).mean(0), np.cov(f.astype(np.float64), rowvar=False))
    (m1, s1), (m2, s2) = stats(fg), stats(fr)
    np.savez(f"{out}/ref_stats.npz", mu=m2, sigma=s2)
    s, _ = scipy.linalg.sqrtm(np.dot(s1, s2), disp=False)
    fd = float(np.real(np.square(m1 - m2).sum() + np.trace(s1 + s2 - s * 2)))
    print(json.dumps({"fd": fd}))

elif task == "ctx":
    # Diffusion-TS: Sines data (Utils/Data_utils/sine_dataset.py `sine_data_generation`) and
    # Context-FID (Utils/context_fid.py `calculate_fid`, TS2Vec `encode(encoding_window=
    # 'full_series')`) with a scripted stand-in for the trained TS2Vec encoder.
    import scipy.linalg

    torch.set_num_threads(int(sys.argv[3]))  # as many threads as the Rust side (see "fd")

    def sine_data_generation(no, seq_len, dim, seed):
        st0 = np.random.get_state()
        np.random.seed(seed)
        data = list()
        for i in range(0, no):
            temp = list()
            for k in range(dim):
                freq = np.random.uniform(0, 0.1)
                phase = np.random.uniform(0, 0.1)
                temp_data = [np.sin(freq * j + phase) for j in range(seq_len)]
                temp.append(temp_data)
            temp = np.transpose(np.asarray(temp))
            temp = (temp + 1) * 0.5
            data.append(temp)
        np.random.set_state(st0)
        return np.array(data)

    def calculate_fid(act1, act2):
        mu1, sigma1 = act1.mean(axis=0), np.cov(act1, rowvar=False)
        mu2, sigma2 = act2.mean(axis=0), np.cov(act2, rowvar=False)
        ssdiff = np.sum((mu1 - mu2) ** 2.0)
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
        if np.iscomplexobj(covmean):
            covmean = covmean.real
        return ssdiff + np.trace(sigma1 + sigma2 - 2.0 * covmean)

    class Encoder(torch.nn.Module):
        # TS2Vec-shaped: [B, T, C] → [B, T, D] by dilated 1-d convolutions over time.
        def __init__(self, c, d):
            super().__init__()
            # TS2Vec's input projection is a Linear; a 1x1 convolution computes the same map in
            # oneDNN on both sides (see "fd" on GEMM libraries).
            self.inp = torch.nn.Conv1d(c, 32, 1)
            self.c1 = torch.nn.Conv1d(32, 32, 3, padding=1)
            self.c2 = torch.nn.Conv1d(32, d, 3, padding=2, dilation=2)

        def forward(self, x):
            h = self.inp(x.transpose(1, 2))
            h = self.c2(torch.nn.functional.gelu(self.c1(h)))
            return h.transpose(1, 2)

    torch.manual_seed(8)
    enc = Encoder(5, 40).eval()
    torch.jit.trace(enc, torch.zeros(2, 24, 5)).save(f"{out}/ts2vec.pt")
    enc = torch.jit.load(f"{out}/ts2vec.pt")
    ori = sine_data_generation(300, 24, 5, 123)
    np.save(f"{out}/ori.npy", ori)
    # "Generated" windows in model space [-1, 1]: other sines, a little noisy.
    fake01 = sine_data_generation(300, 24, 5, 7)
    fake = (fake01 * 2 - 1 + np.random.default_rng(1).normal(0, 0.3, fake01.shape)).astype(np.float32)
    np.save(f"{out}/fake_model_space.npy", fake)
    fake_unit = (torch.from_numpy(fake) + 1) * 0.5

    def encode(data):
        x = torch.from_numpy(np.asarray(data)).to(torch.float)
        outs = []
        with torch.no_grad():
            for b in x.split(8):
                o = enc(b)
                outs.append(torch.nn.functional.max_pool1d(o.transpose(1, 2), kernel_size=o.size(1)).transpose(1, 2).squeeze(1))
        return torch.cat(outs).numpy()

    r_ori, r_fake = encode(ori), encode(fake_unit.numpy())
    np.save(f"{out}/py_ori_repr.npy", r_ori)
    np.save(f"{out}/py_fake_repr.npy", r_fake)
    print(json.dumps({"context_fid": float(calculate_fid(r_ori.astype(np.float64), r_fake.astype(np.float64)))}))

elif task == "respace":
    # guided-diffusion guided_diffusion/respace.py `space_timesteps` (verbatim logic).
    def space_timesteps(num_timesteps, section_counts):
        if isinstance(section_counts, str):
            if section_counts.startswith("ddim"):
                desired_count = int(section_counts[len("ddim"):])
                for i in range(1, num_timesteps):
                    if len(range(0, num_timesteps, i)) == desired_count:
                        return set(range(0, num_timesteps, i))
                raise ValueError(f"cannot create exactly {num_timesteps} steps with an integer stride")
            section_counts = [int(x) for x in section_counts.split(",")]
        size_per = num_timesteps // len(section_counts)
        extra = num_timesteps % len(section_counts)
        start_idx = 0
        all_steps = []
        for i, section_count in enumerate(section_counts):
            size = size_per + (1 if i < extra else 0)
            if size < section_count:
                raise ValueError(f"cannot divide section of {size} steps into {section_count}")
            if section_count <= 1:
                frac_stride = 1
            else:
                frac_stride = (size - 1) / (section_count - 1)
            cur_idx = 0.0
            taken_steps = []
            for _ in range(section_count):
                taken_steps.append(start_idx + round(cur_idx))
                cur_idx += frac_stride
            all_steps += taken_steps
            start_idx += size
        return set(all_steps)

    cases = json.loads(sys.argv[3])
    res = {"space": [], "dts": []}
    for t, spec in cases["space"]:
        try:
            res["space"].append(sorted(space_timesteps(t, spec), reverse=True))
        except ValueError:
            res["space"].append(None)
    for t, s in cases["dts"]:
        # Diffusion-TS gaussian_diffusion.py `fast_sample`: the model is called at every `time`.
        times = torch.linspace(-1, t - 1, steps=s + 1)
        times = list(reversed(times.int().tolist()))
        res["dts"].append([a for a, _ in zip(times[:-1], times[1:])])
    print(json.dumps(res))

elif task == "cleanfid":
    # clean-fid (mode "clean": PIL bicubic per image and channel, float) on folders of mixed image
    # sizes, with pytorch-fid's random-weight network (argv[3]) as the feature extractor: the
    # 64-d first-block features (block 0), on (x - 128) / 128 as our "clean" mode feeds it.
    import pytorch_fid.inception as inc
    from cleanfid import fid as cfid

    sd = torch.load(sys.argv[3])
    inc.load_state_dict_from_url = lambda *a, **k: sd
    model = inc.InceptionV3([0], resize_input=False, normalize_input=False).eval()

    def extractor(x):
        with torch.no_grad():
            return model((x - 128) / 128)[0].mean(dim=(2, 3))

    rng = np.random.default_rng(21)
    sizes = [(24, 24), (32, 40), (50, 37), (64, 64), (29, 33)]
    for name, n, shift in [("gen", 80, 0.0), ("ref", 90, 0.3)]:
        folder = f"{out}/{name}"
        os.makedirs(folder)
        from PIL import Image
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            Image.fromarray(smooth_images(rng, 1, h, w, shift)[0]).save(f"{folder}/{i:04d}.png")
    score = cfid.compute_fid(f"{out}/gen", f"{out}/ref", mode="clean", custom_feat_extractor=extractor,
                             device=torch.device("cpu"), num_workers=0, batch_size=16, verbose=False,
                             use_dataparallel=False)
    print(json.dumps({"fid": float(score)}))

elif task == "read_stats":
    # A `bench stats --ref-features` file read the way pytorch-fid reads statistics, and its
    # subset against numpy's RandomState(seed).choice.
    from pytorch_fid import fid_score

    path, n, k, seed = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    m, s = fid_score.compute_statistics_of_path(path, None, 50, 64, "cpu")
    with np.load(path) as f:
        idx = f["features_index"]
        feats = f["features"]
        meta = [int(f["features_source_count"]), int(f["features_seed"])]
    want = np.sort(np.random.RandomState(seed).choice(n, k, replace=False))
    print(json.dumps({"mu_len": int(m.shape[0]), "sigma_shape": list(s.shape), "index": idx.tolist(),
                      "want_index": want.tolist(), "features_shape": list(feats.shape), "features_dtype": str(feats.dtype),
                      "meta": meta, "fid_self": float(fid_score.calculate_frechet_distance(m, s, m, s))}))

else:
    raise SystemExit(f"unknown task {task}")
