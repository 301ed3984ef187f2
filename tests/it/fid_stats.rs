//! FID statistics, Fréchet distance and image sources against the Python references
//! (pytorch-fid's `calculate_frechet_distance`, numpy, PIL/torchvision), and `bench fid`/`bench stats`
//! bad input.
use crate::common::*;
use ndarray::{Array1, Array2, Array4};
use ndarray_npy::{NpzReader, NpzWriter};
use samplerbench::metrics::datasets::{open_input, open_input_with, Cifar10Binary, Cifar10Split, ImageSource, Input};
use samplerbench::metrics::fid_cli::{self, FeatureExtractor, FidOptions};
use samplerbench::metrics::frechet::{frechet_distance, trace_sqrt_product_with_path, FactorPath};
use samplerbench::metrics::stats::{FeatureStats, Moments};
use std::fs::File;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn read_npz_f64_2(path: &Path, key: &str) -> Array2<f64> {
    NpzReader::new(File::open(path).unwrap()).unwrap().by_name(key).unwrap()
}
fn read_npz_f64_1(path: &Path, key: &str) -> Array1<f64> {
    NpzReader::new(File::open(path).unwrap()).unwrap().by_name(key).unwrap()
}
fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).iter().fold(0.0_f64, |m, v| m.max(v.abs()))
}

/// Random Inception-like statistics (non-negative correlated features) written by numpy, with
/// pytorch-fid's FID for each pair.
const MAKE_STATS_PY: &str = r#"
import sys, json, time, numpy as np, warnings
warnings.filterwarnings("ignore")
from pytorch_fid.fid_score import calculate_frechet_distance
out = sys.argv[1]; cases = json.loads(sys.argv[2])
res = {}
for name, (d, n1, n2, seed) in cases.items():
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    X = np.maximum(rng.standard_normal((n1, d)) @ A + 0.3, 0)
    Y = np.maximum(rng.standard_normal((n2, d)) @ A * 1.05 + 0.32, 0)
    m1, s1 = X.mean(0), np.cov(X, rowvar=False)
    m2, s2 = Y.mean(0), np.cov(Y, rowvar=False)
    np.savez(f"{out}/{name}_1.npz", mu=m1, sigma=s1)
    np.savez(f"{out}/{name}_2.npz", mu=m2, sigma=s2)
    t = time.time()
    res[name] = [float(calculate_frechet_distance(m1, s1, m2, s2)), time.time() - t]
print(json.dumps(res))
"#;

fn pytorch_fid_cases(dir: &Path, cases: &str) -> serde_json::Value {
    serde_json::from_str(&run_python(MAKE_STATS_PY, &[dir.to_str().unwrap(), cases])).unwrap()
}

#[test]
fn frechet_distance_matches_pytorch_fid() {
    let dir = tempfile::tempdir().unwrap();
    // name: [dims, samples1, samples2, seed]. Well-conditioned: more samples than dims.
    // Rank-deficient: one (Cholesky of the other) or both (eigendecomposition) below dims.
    let cases = r#"{"wc2048": [2048, 6144, 6144, 1], "wc256": [256, 2000, 1500, 2], "wc64": [64, 500, 800, 3],
                    "rd_first512": [512, 300, 2000, 4], "rd_both512": [512, 200, 300, 5],
                    "rd_second2048": [2048, 5000, 1000, 6]}"#;
    let reference = pytorch_fid_cases(dir.path(), cases);
    let mut report = Vec::new();
    for (name, want) in reference.as_object().unwrap() {
        let want_fid = want[0].as_f64().unwrap();
        let a = Moments::load_npz(&dir.path().join(format!("{name}_1.npz"))).unwrap();
        let b = Moments::load_npz(&dir.path().join(format!("{name}_2.npz"))).unwrap();
        let ours = fid_cli::fid_of(&a, &b).unwrap();
        let (_, path) = trace_sqrt_product_with_path(a.sigma.view(), b.sigma.view()).unwrap();
        let rel = ((ours - want_fid) / want_fid).abs();
        report.push(format!("{name}: ours {ours:.12} pytorch-fid {want_fid:.12} rel {rel:.2e} ({path:?})"));
        let tol = if name.starts_with("wc") { 1e-9 } else { 1e-6 };
        assert!(ours.is_finite() && rel <= tol, "{name}: {ours} vs {want_fid} (rel {rel:e})");
        let expect_path = match name.as_str() {
            "rd_both512" => FactorPath::EigenFirst,
            "rd_first512" => FactorPath::CholeskySecond,
            _ => FactorPath::CholeskyFirst,
        };
        assert_eq!(path, expect_path, "{name}");
    }
    eprintln!("{}", report.join("\n"));
    // Identical statistics: exactly zero (pytorch-fid gives rounding noise here).
    let a = Moments::load_npz(&dir.path().join("wc2048_1.npz")).unwrap();
    assert_eq!(fid_cli::fid_of(&a, &a).unwrap(), 0.0);
    // Same covariance, shifted mean: FID is |Δμ|² (to rounding).
    let mut shifted = a.clone();
    shifted.mu += 0.01;
    let f = frechet_distance(a.mu.view(), a.sigma.view(), shifted.mu.view(), shifted.sigma.view()).unwrap();
    assert!((f - 2048.0 * 1e-4).abs() < 1e-12, "{f}");
}

fn random_features(rows: i64, dims: i64, seed: i64) -> Tensor {
    seed_torch(seed);
    ((Tensor::randn([rows, dims], (Kind::Float, Device::Cpu)) + 0.4).relu() * 3.0).contiguous()
}

fn save_f32_npz(path: &Path, key: &str, t: &Tensor) {
    let s = t.size();
    let v = Vec::<f32>::try_from(t.reshape([-1])).unwrap();
    let a = Array2::from_shape_vec((s[0] as usize, s[1] as usize), v).unwrap();
    let mut w = NpzWriter::new(File::create(path).unwrap());
    w.add_array(key, &a).unwrap();
    w.finish().unwrap();
}

#[test]
fn streaming_stats_match_numpy_and_npz_is_readable_by_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let feats = random_features(3000, 256, 7);
    let mut stats = FeatureStats::new(256, Device::Cpu);
    for b in feats.split(128, 0) {
        stats.add_batch(&b).unwrap();
    }
    let out = dir.path().join("stats.npz");
    stats.save_npz(&out).unwrap();
    save_f32_npz(&dir.path().join("feats.npz"), "f", &feats);
    let py = r#"
import sys, numpy as np
d = sys.argv[1]
f = np.load(d + "/feats.npz")["f"].astype(np.float64)
s = np.load(d + "/stats.npz")
assert s["mu"].dtype == np.float64 and s["sigma"].shape == (256, 256), s["sigma"].shape
assert int(s["count"]) == 3000
mu, sigma = f.mean(0), np.cov(f, rowvar=False)
print(np.abs(s["mu"] - mu).max() / np.abs(mu).max(), np.abs(s["sigma"] - sigma).max() / np.abs(sigma).max())
"#;
    let out_py = run_python(py, &[dir.path().to_str().unwrap()]);
    let errs: Vec<f64> = out_py.split_whitespace().map(|s| s.parse().unwrap()).collect();
    eprintln!("stats vs numpy: mu rel {:.2e}, sigma rel {:.2e}", errs[0], errs[1]);
    assert!(errs[0] < 1e-14 && errs[1] < 1e-13, "{errs:?}");
}

#[test]
fn shards_merged_from_files_and_resume_equal_one_pass_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Tensor> = (0..8).map(|i| random_features(50, 64, 100 + i)).collect();
    let mut single = FeatureStats::new(64, Device::Cpu);
    batches.iter().for_each(|b| single.add_batch(b).unwrap());
    // Three "processes" write shards; a fourth merges them in another order.
    for (k, idx) in [vec![0, 1, 2], vec![3, 4], vec![5, 6, 7]].iter().enumerate() {
        let mut s = FeatureStats::new(64, Device::Cpu);
        idx.iter().for_each(|&i| s.add_batch(&batches[i]).unwrap());
        s.save_npz(&dir.path().join(format!("shard{k}.npz"))).unwrap();
    }
    let mut merged = FeatureStats::load_npz(&dir.path().join("shard2.npz"), Device::Cpu).unwrap();
    for k in [0, 1] {
        merged.merge(&FeatureStats::load_npz(&dir.path().join(format!("shard{k}.npz")), Device::Cpu).unwrap()).unwrap();
    }
    assert_eq!(merged.count(), 400);
    let want = single.moments().unwrap();
    assert_eq!(merged.moments().unwrap(), want);
    // Resume: checkpoint after 5 batches, reload, continue.
    let mut first = FeatureStats::new(64, Device::Cpu);
    batches[..5].iter().for_each(|b| first.add_batch(b).unwrap());
    first.save_npz(&dir.path().join("ckpt.npz")).unwrap();
    let mut resumed = FeatureStats::load_npz(&dir.path().join("ckpt.npz"), Device::Cpu).unwrap();
    batches[5..].iter().for_each(|b| resumed.add_batch(b).unwrap());
    assert_eq!(resumed.moments().unwrap(), want);
    // A `bench stats` file is also a statistics file.
    single.save_npz(&dir.path().join("all.npz")).unwrap();
    assert_eq!(Moments::load_npz(&dir.path().join("all.npz")).unwrap(), want);
}

#[test]
fn reads_float32_and_float64_stats_written_by_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let py = r#"
import sys, numpy as np
d = sys.argv[1]; rng = np.random.default_rng(0)
mu = rng.standard_normal(8); a = rng.standard_normal((8, 8)); s = a @ a.T
np.savez(d + "/f64.npz", mu=mu, sigma=s)
np.savez_compressed(d + "/f32.npz", mu=mu.astype(np.float32), sigma=s.astype(np.float32))
np.savez(d + "/nosigma.npz", mu=mu)
np.save(d + "/ref.npy", np.concatenate([mu, s.ravel()]))
"#;
    run_python(py, &[dir.path().to_str().unwrap()]);
    let r: Array1<f64> = ndarray_npy::read_npy(dir.path().join("ref.npy")).unwrap();
    let m64 = Moments::load_npz(&dir.path().join("f64.npz")).unwrap();
    assert_eq!(m64.mu.as_slice().unwrap(), &r.as_slice().unwrap()[..8]);
    assert_eq!(m64.sigma.as_slice().unwrap(), &r.as_slice().unwrap()[8..]);
    let m32 = Moments::load_npz(&dir.path().join("f32.npz")).unwrap();
    assert_eq!(m32.mu, m64.mu.mapv(|v| v as f32 as f64));
    let e = Moments::load_npz(&dir.path().join("nosigma.npz")).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().ends_with(
        "nosigma.npz: statistics file has no 'sigma' array (found: mu); expected 'mu' and 'sigma' as written by pytorch-fid, clean-fid, EDM or `bench stats`"
    ), "{e}");
}

#[test]
fn cifar10_binary_reader_yields_chw_images_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&nested).unwrap();
    // Record r of file f: label then pixel bytes (f*7 + r*3 + i) mod 256.
    let write = |name: &str, f: usize, records: usize| {
        let mut bytes = Vec::new();
        for r in 0..records {
            bytes.push((r % 10) as u8);
            bytes.extend((0..3072).map(|i| ((f * 7 + r * 3 + i) % 256) as u8));
        }
        std::fs::write(nested.join(name), bytes).unwrap();
    };
    for f in 1..=5 {
        write(&format!("data_batch_{f}.bin"), f, 3);
    }
    write("test_batch.bin", 0, 4);
    let train = Cifar10Binary::open(dir.path(), Cifar10Split::Train).unwrap();
    assert_eq!(train.len(), 15);
    let b = train.read_batch(4, 3).unwrap(); // file 2 record 1, file 2 record 2, file 3 record 0
    assert_eq!(b.size(), [3, 3, 32, 32]);
    assert_eq!(b.kind(), Kind::Uint8);
    let v = Vec::<u8>::try_from(b.reshape([-1])).unwrap();
    let expect = |f: usize, r: usize| (0..3072).map(move |i| ((f * 7 + r * 3 + i) % 256) as u8);
    let want: Vec<u8> = expect(2, 1).chain(expect(2, 2)).chain(expect(3, 0)).collect();
    assert_eq!(v, want);
    // Channel planes: pixel (y=1, x=2) of the green plane is byte 1024 + 32 + 2.
    assert_eq!(b.int64_value(&[0, 1, 1, 2]) as usize, (2 * 7 + 3 + 1024 + 32 + 2) % 256);
    match open_input(&format!("cifar10:test:{}", dir.path().display())).unwrap() {
        Input::Images(src) => assert_eq!((src.len(), src.image_size()), (4, (32, 32))),
        _ => panic!("expected images"),
    }
    std::fs::write(nested.join("test_batch.bin"), vec![0u8; 3073 * 2 + 5]).unwrap();
    let e = Cifar10Binary::open(dir.path(), Cifar10Split::Test).err().unwrap();
    assert!(e.to_string().ends_with("test_batch.bin: 6151 bytes is not a whole number of 3073-byte CIFAR-10 records"), "{e}");
}

/// PIL writes images (RGB, RGBA, grayscale; PNG and WebP lossless, nested folders); our reader
/// must equal `Image.open(p).convert('RGB')` in sorted path order.
#[test]
fn image_folder_matches_pil_convert_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let py = r#"
import sys, os, numpy as np
from PIL import Image
d = sys.argv[1]; rng = np.random.default_rng(0)
os.makedirs(d + "/imgs/sub", exist_ok=True)
paths = ["imgs/b.png", "imgs/a.webp", "imgs/sub/c.png", "imgs/sub/d.PNG"]
modes = ["RGB", "RGB", "RGBA", "L"]
for p, m in zip(paths, modes):
    ch = {"RGB": 3, "RGBA": 4, "L": 1}[m]
    a = rng.integers(0, 256, (20, 24, ch), dtype=np.uint8)
    img = Image.fromarray(a[..., 0] if ch == 1 else a, m)
    img.save(d + "/" + p, lossless=True) if p.endswith("webp") else img.save(d + "/" + p)
with open(d + "/imgs/notes.txt", "w") as f: f.write("not an image")
order = sorted(paths)
arr = np.stack([np.asarray(Image.open(d + "/" + p).convert("RGB")) for p in order])
np.savez(d + "/want.npz", arr_0=arr)
"#;
    run_python(py, &[dir.path().to_str().unwrap()]);
    let want: Array4<u8> = NpzReader::new(File::open(dir.path().join("want.npz")).unwrap()).unwrap().by_name("arr_0").unwrap();
    let Input::Images(folder) = open_input_with(dir.path().join("imgs").to_str().unwrap(), true).unwrap() else { panic!() };
    let Input::Images(npz) = open_input(dir.path().join("want.npz").to_str().unwrap()).unwrap() else { panic!() };
    assert_eq!((folder.len(), folder.image_size()), (4, (20, 24)));
    let ours = folder.read_batch(0, 4).unwrap();
    let theirs = npz.read_batch(0, 4).unwrap();
    assert_eq!(ours.size(), [4, 3, 20, 24]);
    let nhwc: Vec<u8> = want.iter().copied().collect();
    assert_eq!(Vec::<u8>::try_from(ours.permute([0, 2, 3, 1]).reshape([-1])).unwrap(), nhwc);
    assert!(ours.equal(&theirs));
}

/// DDIM's CelebA transform: torchvision crop(57, 25, 128, 128) then Resize(64) on the PIL image.
#[test]
fn celeba_transform_is_bit_identical_to_torchvision_on_pil() {
    let dir = tempfile::tempdir().unwrap();
    let py = r#"
import sys, os, numpy as np
from PIL import Image
import torchvision.transforms as T
import torchvision.transforms.functional as F
d = sys.argv[1]; rng = np.random.default_rng(1)
os.makedirs(d + "/img_align_celeba")
yy, xx = np.mgrid[0:218, 0:178]
outs = []
for i in range(3):
    smooth = (127 + 100 * np.sin(xx / (7 + i) + yy / 11)[..., None] * np.array([1, -0.5, 0.7])).astype(np.int64)
    a = np.clip(smooth + rng.integers(-60, 60, (218, 178, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(a).save(f"{d}/img_align_celeba/{i:06d}.png")
    img = Image.open(f"{d}/img_align_celeba/{i:06d}.png")
    outs.append(np.asarray(T.Resize(64)(F.crop(img, 57, 25, 128, 128))))
np.savez(d + "/want.npz", arr_0=np.stack(outs))
"#;
    run_python(py, &[dir.path().to_str().unwrap()]);
    let want: Array4<u8> = NpzReader::new(File::open(dir.path().join("want.npz")).unwrap()).unwrap().by_name("arr_0").unwrap();
    let Input::Images(src) = open_input(&format!("celeba:{}", dir.path().display())).unwrap() else { panic!() };
    assert_eq!((src.len(), src.image_size()), (3, (64, 64)));
    let ours = Vec::<u8>::try_from(src.read_batch(0, 3).unwrap().permute([0, 2, 3, 1]).reshape([-1])).unwrap();
    let nhwc: Vec<u8> = want.iter().copied().collect();
    let mismatches = ours.iter().zip(&nhwc).filter(|(a, b)| a != b).count();
    assert_eq!(mismatches, 0, "{mismatches} of {} bytes differ from torchvision", nhwc.len());
}

/// JPEG decoding (image crate's zune-jpeg) vs PIL (libjpeg-turbo) on the same files: not
/// bit-identical (IDCT/colour-conversion rounding); the difference is recorded and bounded here.
#[test]
fn jpeg_decoding_is_close_to_pil() {
    let dir = tempfile::tempdir().unwrap();
    let py = r#"
import sys, os, numpy as np
from PIL import Image
d = sys.argv[1]; rng = np.random.default_rng(2)
yy, xx = np.mgrid[0:64, 0:64]
a = np.clip(127 + 90 * np.sin(xx / 5.0)[..., None] * np.array([1, 0.3, -0.8]) + rng.integers(-20, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
for sub in (0, 2):
    os.makedirs(f"{d}/j{sub}")
    for i in range(2):
        Image.fromarray(a if i == 0 else a[::-1].copy()).save(f"{d}/j{sub}/{i}.jpg", quality=90, subsampling=sub)
    np.savez(f"{d}/want{sub}.npz", arr_0=np.stack([np.asarray(Image.open(f"{d}/j{sub}/{i}.jpg").convert("RGB")) for i in range(2)]))
"#;
    run_python(py, &[dir.path().to_str().unwrap()]);
    // (chroma subsampling, max |diff| bound, mean |diff| bound) — measured: 4:4:4 max 2, mean 0.021; 4:2:0 max 3, mean 0.33.
    for (sub, max_bound, mean_bound) in [(0, 2, 0.05), (2, 3, 0.4)] {
        let want: Array4<u8> = NpzReader::new(File::open(dir.path().join(format!("want{sub}.npz"))).unwrap()).unwrap().by_name("arr_0").unwrap();
        let Input::Images(src) = open_input(dir.path().join(format!("j{sub}")).to_str().unwrap()).unwrap() else { panic!() };
        let ours = Vec::<u8>::try_from(src.read_batch(0, 2).unwrap().permute([0, 2, 3, 1]).reshape([-1])).unwrap();
        let diffs: Vec<i32> = ours.iter().zip(want.iter()).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        eprintln!("JPEG (subsampling {sub}) decode vs PIL: max |diff| {max}, mean {mean:.4}");
        assert!(max <= max_bound && mean < mean_bound, "subsampling {sub}: max {max} mean {mean}");
    }
}

/// Test-only stand-in for the Inception: features = relu(pixels/255 · W) with a fixed seeded W.
struct RandomProjection {
    w: Tensor,
}

impl FeatureExtractor for RandomProjection {
    fn features(&self, images_u8: &Tensor) -> samplerbench::Result<Tensor> {
        // Integer pixels times integer weights: every feature is an integer below 2^24, exact in
        // float32 whatever the CPU's matmul kernel sums first.
        let x = images_u8.to_kind(Kind::Float).reshape([images_u8.size()[0], -1]);
        Ok(x.matmul(&self.w).relu())
    }
    fn dims(&self) -> usize {
        self.w.size()[1] as usize
    }
}

/// source → batches → features → stats → FD with a stand-in extractor equals numpy + pytorch-fid
/// on the same features; an image folder and the same images as .npz give identical statistics.
#[test]
fn fid_pipeline_with_stand_in_features_matches_numpy_and_pytorch_fid() {
    let dir = tempfile::tempdir().unwrap();
    let py = r#"
import sys, os, numpy as np, warnings
warnings.filterwarnings("ignore")
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance
d = sys.argv[1]; rng = np.random.default_rng(3)
W = rng.integers(-4, 5, (3 * 8 * 8, 48)).astype(np.float32)
np.savez(d + "/w.npz", w=W)
sets = []
for k, (n, shift) in enumerate([(70, 0), (90, 30)]):
    imgs = np.clip(rng.integers(0, 200, (n, 8, 8, 3)) + shift, 0, 255).astype(np.uint8)
    os.makedirs(f"{d}/set{k}")
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(f"{d}/set{k}/{i:04d}.png")
    np.savez(f"{d}/set{k}.npz", arr_0=imgs)
    x = imgs.transpose(0, 3, 1, 2).reshape(n, -1).astype(np.float32)
    f = np.maximum(x @ W, 0).astype(np.float64)
    sets.append((f.mean(0), np.cov(f, rowvar=False)))
print(calculate_frechet_distance(sets[0][0], sets[0][1], sets[1][0], sets[1][1]))
"#;
    let want: f64 = run_python(py, &[dir.path().to_str().unwrap()]).trim().parse().unwrap();
    let w: Array2<f32> = NpzReader::new(File::open(dir.path().join("w.npz")).unwrap()).unwrap().by_name("w").unwrap();
    let w = Tensor::from_slice(w.as_slice().unwrap()).reshape([192, 48]);
    let opts = FidOptions { dims: 64, batch_size: 16, quiet: true, ..FidOptions::default() };
    let mut loads = 0;
    let mut make = || -> samplerbench::Result<Box<dyn FeatureExtractor>> {
        loads += 1;
        Ok(Box::new(RandomProjection { w: w.shallow_clone() }))
    };
    let p = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
    let saved = dir.path().join("set0_stats.npz");
    let ours = fid_cli::run_fid(&p("set0"), &p("set1.npz"), &opts, Some(saved.as_path()), None, &mut make).unwrap();
    let rel = ((ours - want) / want).abs();
    eprintln!("stand-in pipeline FID ours {ours} pytorch-fid {want} rel {rel:.2e}");
    // Identical (exact) features on both sides, so only the f64 statistics and the Fréchet
    // distance differ: np.cov's two-pass sums vs our compensated ones (~1e-15 relative) and
    // scipy's sqrtm vs our Cholesky/eigenvalue route (~1e-12 here, cond(Σ) ≈ 1e3).
    assert!(rel < 1e-9, "{ours} vs {want}");
    assert_eq!(loads, 1, "the extractor is built once");
    // The folder and the npz of the same images: bit-identical statistics.
    let ex = RandomProjection { w: w.shallow_clone() };
    let Input::Images(folder) = open_input(&p("set0")).unwrap() else { panic!() };
    let Input::Images(npz) = open_input(&p("set0.npz")).unwrap() else { panic!() };
    let a = fid_cli::source_stats(folder.as_ref(), &ex, 16, true).unwrap().moments().unwrap();
    let b = fid_cli::source_stats(npz.as_ref(), &ex, 16, true).unwrap().moments().unwrap();
    assert_eq!(a, b);
    // The saved statistics of PATH1 reproduce the FID without images.
    let again = fid_cli::run_fid(saved.to_str().unwrap(), &p("set1.npz"), &opts, None, None, &mut || {
        Ok(Box::new(RandomProjection { w: w.shallow_clone() }) as Box<dyn FeatureExtractor>)
    })
    .unwrap();
    assert_eq!(again, ours);
    assert_eq!(read_npz_f64_1(&saved, "mu"), a.mu);
    assert_eq!(max_abs(&read_npz_f64_2(&saved, "sigma"), &a.sigma), 0.0);
}

#[test]
fn bench_fid_on_stats_files_prints_pytorch_fid_value_last() {
    let dir = tempfile::tempdir().unwrap();
    let reference = pytorch_fid_cases(dir.path(), r#"{"c": [128, 1000, 700, 9]}"#);
    let want = reference["c"][0].as_f64().unwrap();
    let p = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
    let out = bench(&["fid", &p("c_1.npz"), &p("c_2.npz"), "--dims", "2048", "--device", "cpu", "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    let last = s.lines().last().unwrap();
    let value: f64 = last.strip_prefix("FID: ").unwrap().parse().unwrap();
    assert!(((value - want) / want).abs() < 1e-10, "{last} vs {want}");
    assert!(last.len() >= "FID: ".len() + 13, "{last}"); // 12 significant digits and a point
}

fn bench_err(args: &[&str]) -> (Option<i32>, String) {
    let out = bench(args);
    (out.status.code(), stderr(&out).trim_end().to_string())
}

#[test]
fn bad_fid_inputs_are_user_errors_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let py = r#"
import sys, os, numpy as np
from PIL import Image
d = sys.argv[1]
os.makedirs(d + "/empty/sub"); os.makedirs(d + "/one")
Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d + "/one/x.png")
open(d + "/empty/readme.txt", "w").write("x")
np.savez(d + "/nosigma.npz", mu=np.zeros(4))
np.savez(d + "/s4.npz", mu=np.zeros(4), sigma=np.eye(4))
np.savez(d + "/s8.npz", mu=np.zeros(8), sigma=np.eye(8))
np.savez(d + "/other.npz", x=np.zeros(3))
"#;
    run_python(py, &[d.to_str().unwrap()]);
    let p = |s: &str| d.join(s).display().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec![p("empty"), p("s4.npz")], format!("error: {}: no PNG, JPEG or WebP images found (subfolders are searched with --recursive)", p("empty"))),
        (vec![p("one"), p("s4.npz")], format!("error: {}: has 1 image; FID needs at least 2", p("one"))),
        (
            vec![p("s4.npz"), p("nosigma.npz")],
            format!(
                "error: {}: statistics file has no 'sigma' array (found: mu); expected 'mu' and 'sigma' as written by pytorch-fid, clean-fid, EDM or `bench stats`",
                p("nosigma.npz")
            ),
        ),
        (
            vec![p("s4.npz"), p("s8.npz")],
            "error: FID statistics have different dimensions: mu 4 vs 8 (compute both with the same --dims)".to_string(),
        ),
        (
            vec![p("s4.npz"), p("missing")],
            format!(
                "error: {}: no such file or directory; expected an image folder, an images .npz (arr_0), a statistics .npz (mu, sigma), cifar10:train:DIR, cifar10:test:DIR or celeba:DIR",
                p("missing")
            ),
        ),
        (
            vec![p("s4.npz"), p("other.npz")],
            format!("error: {}: holds neither images ('arr_0') nor statistics ('mu', 'sigma'); found: x", p("other.npz")),
        ),
        (vec![p("s4.npz"), "cifar10:valid:/x".into()], "error: 'cifar10:valid:/x': unknown CIFAR-10 split 'valid'; allowed: train, test".into()),
    ];
    for (paths, want) in cases {
        let mut args = vec!["fid"];
        args.extend(paths.iter().map(String::as_str));
        args.extend(["--device", "cpu", "--quiet"]);
        let (code, err) = bench_err(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err, want, "{args:?}");
    }
    let (code, err) = bench_err(&["stats", &p("one"), "--out", &p("o.npz"), "--dims", "100"]);
    assert_eq!((code, err.as_str()), (Some(2), "error: --dims 100 is not supported; allowed: 64, 192, 768, 2048"));
    let (code, err) = bench_err(&["fid", &p("s4.npz"), &p("s4.npz"), "--mode", "bicubic"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown resize mode `bicubic`; allowed: pytorch-fid, tf, clean"), "{err}");
    // Identical statistics files: exactly 0.
    let out = bench(&["fid", &p("s8.npz"), &p("s8.npz"), "--device", "cpu"]);
    assert_eq!(stdout(&out).trim_end(), "FID: 0");
}

/// End to end with the real network: `bench fid` on two image folders vs `python -m pytorch_fid`
/// with the same seeded random weights (legacy .pth), and `bench stats` + stats-file FID.
#[test]
fn bench_fid_on_image_folders_matches_python_m_pytorch_fid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(crate::fid_net::PYTORCH_FID_ORACLE, &[d.to_str().unwrap()]);
    let py = r#"
import sys, os, numpy as np, torch, warnings
warnings.filterwarnings("ignore")
from PIL import Image
d = sys.argv[1]; rng = np.random.default_rng(5)
for k, (n, lo) in enumerate([(14, 0), (11, 40)]):
    os.makedirs(f"{d}/set{k}")
    for i in range(n):
        Image.fromarray(rng.integers(lo, 256, (32, 32, 3), dtype=np.uint8)).save(f"{d}/set{k}/{i:03d}.png")
import pytorch_fid.inception as inc, pytorch_fid.fid_score as fs
sd = torch.load(d + "/legacy.pth")
inc.load_state_dict_from_url = lambda *a, **k: sd
sys.argv = ["pytorch_fid", f"{d}/set0", f"{d}/set1", "--device", "cpu", "--batch-size", "5", "--num-workers", "0"]
torch.set_num_threads(2)
fs.main()
"#;
    let out = run_python(py, &[d.to_str().unwrap()]);
    let want: f64 = out.lines().last().unwrap().trim_start_matches("FID:").trim().parse().unwrap();
    let p = |s: &str| d.join(s).display().to_string();
    let common = ["--weights", &p("legacy.pth"), "--allow-custom-weights", "--device", "cpu", "--batch-size", "5", "--quiet"];
    let mut args = vec!["fid".to_string(), p("set0"), p("set1"), "--save-stats".into(), p("s0.npz")];
    args.extend(common.iter().map(|s| s.to_string()));
    let o = bench(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ours: f64 = stdout(&o).lines().last().unwrap().strip_prefix("FID: ").unwrap().parse().unwrap();
    let rel = ((ours - want) / want).abs();
    eprintln!("bench fid {ours} vs python -m pytorch_fid {want}: rel {rel:.2e}");
    assert!(rel <= 1e-5, "{ours} vs {want}");
    // `bench stats` of set1, then FID from the two statistics files: the same number.
    let mut args = vec!["stats".to_string(), p("set1"), "--out".into(), p("s1.npz")];
    args.extend(common.iter().map(|s| s.to_string()));
    let o = bench(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = bench(&["fid", &p("s0.npz"), &p("s1.npz"), "--quiet"]);
    assert_eq!(stdout(&o).trim_end(), format!("FID: {}", fid_cli::format_fid(ours).trim_start_matches("FID: ")));
}

/// The CIFAR-10 python version (pickled dicts, numpy 'data') reads the same images as the binary
/// version of the same bytes.
#[test]
fn cifar10_python_version_equals_binary_version() {
    let dir = tempfile::tempdir().unwrap();
    let py = r#"
import sys, os, pickle, numpy as np
d = sys.argv[1]; rng = np.random.default_rng(4)
os.makedirs(d + "/py/cifar-10-batches-py"); os.makedirs(d + "/bin")
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8); labels = [int(x) for x in rng.integers(0, 10, 3)]
    pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": ["a.png"] * 3},
                open(f"{d}/py/cifar-10-batches-py/{name}", "wb"), protocol=2)
    open(f"{d}/bin/{name}.bin", "wb").write(b"".join(bytes([l]) + r.tobytes() for l, r in zip(labels, data)))
"#;
    run_python(py, &[dir.path().to_str().unwrap()]);
    for split in [Cifar10Split::Train, Cifar10Split::Test] {
        let a = Cifar10Binary::open(&dir.path().join("py"), split).unwrap();
        let b = Cifar10Binary::open(&dir.path().join("bin"), split).unwrap();
        let n = if split == Cifar10Split::Train { 15 } else { 3 };
        assert_eq!((a.len(), b.len()), (n, n));
        assert!(a.read_batch(0, n).unwrap().equal(&b.read_batch(0, n).unwrap()));
    }
    let e = Cifar10Binary::open(dir.path(), Cifar10Split::Test).err().unwrap();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().ends_with(
        "no CIFAR-10 test batches: expected test_batch.bin (binary version) or test_batch (python version) here or in cifar-10-batches-bin / cifar-10-batches-py"
    ), "{e}");
}

/// pytorch-fid lists only the folder's own files (`pathlib.Path.glob('*.png')`); `--recursive`
/// adds the subfolders' images.
#[test]
fn image_folders_are_listed_like_pytorch_fid_unless_recursive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("imgs");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8, y as u8, 7]));
    for name in ["a.png", "b.png", "c.png", "sub/d.png"] {
        img.save(d.join(name)).unwrap();
    }
    let count = |recursive| match open_input_with(d.to_str().unwrap(), recursive).unwrap() {
        Input::Images(src) => src.len(),
        _ => panic!("not images"),
    };
    assert_eq!((count(false), count(true)), (3, 4));
    let Input::Images(src) = open_input(d.to_str().unwrap()).unwrap() else { panic!() };
    assert_eq!(src.len(), 3);
    // A folder whose images are all in subfolders says how to reach them.
    let (code, err) = bench_err(&["stats", dir.path().to_str().unwrap(), "--out", dir.path().join("o.npz").to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no PNG, JPEG or WebP images found (subfolders are searched with --recursive)"), "{err}");
}

/// 16-bit PNGs convert as pytorch-fid's `Image.open(p).convert('RGB')` does: gray ("I;16")
/// clipped at 255, RGB / RGBA / gray+alpha to their high byte. Exact (integer) equality.
#[test]
fn sixteen_bit_pngs_convert_like_pil() {
    let dir = tempfile::tempdir().unwrap();
    let py = r#"
import sys, os, zlib, struct, numpy as np
from PIL import Image
d = sys.argv[1]; rng = np.random.default_rng(16)
def png16(path, a):  # a: H x W x C uint16, written big-endian as PNG requires
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))
    chunk = lambda t, x: struct.pack(">I", len(x)) + t + x + struct.pack(">I", zlib.crc32(t + x) & 0xffffffff)
    kind = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, kind, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
os.makedirs(d + "/imgs")
names = []
for k, c in enumerate([1, 3, 4, 2]):
    # Small values too: the gray conversion clips, so most of the range would read 255.
    a = rng.integers(0, 65536, (6, 5, c)); a[:3] //= 200
    names.append(f"imgs/{k}.png"); png16(d + "/" + names[-1], a.astype(np.uint16))
arr = np.stack([np.asarray(Image.open(d + "/" + p).convert("RGB")) for p in names])
print(" ".join(Image.open(d + "/" + p).mode for p in names))
np.savez(d + "/want.npz", arr_0=arr)
"#;
    let modes = run_python(py, &[dir.path().to_str().unwrap()]);
    assert_eq!(modes.trim(), "I;16 RGB RGBA RGBA", "PIL's modes for 16-bit gray, RGB, RGBA, gray+alpha");
    let Input::Images(folder) = open_input(dir.path().join("imgs").to_str().unwrap()).unwrap() else { panic!() };
    let Input::Images(npz) = open_input(dir.path().join("want.npz").to_str().unwrap()).unwrap() else { panic!() };
    let (ours, theirs) = (folder.read_batch(0, 4).unwrap(), npz.read_batch(0, 4).unwrap());
    assert_eq!(ours.size(), [4, 3, 6, 5]);
    for i in 0..4 {
        assert!(ours.get(i).equal(&theirs.get(i)), "image {i} differs from PIL");
    }
}

/// pytorch-fid's `--save-stats SOURCE OUT` form writes SOURCE's mu and sigma to OUT, and its
/// `--num-workers` is accepted (decoding threads).
#[test]
fn bench_fid_takes_pytorch_fids_save_stats_form_and_num_workers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = Moments { mu: Array1::from_shape_fn(64, |i| i as f64 * 0.1), sigma: Array2::from_shape_fn((64, 64), |(i, j)| if i == j { 2.0 } else { 0.01 }) };
    m.save_npz(&d.join("a.npz")).unwrap();
    let out = d.join("out.npz");
    let o = bench(&["fid", "--save-stats", d.join("a.npz").to_str().unwrap(), out.to_str().unwrap(), "--num-workers", "0", "--dims", "64", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(Moments::load_npz(&out).unwrap(), m);
    let o = bench(&["fid", d.join("a.npz").to_str().unwrap(), out.to_str().unwrap(), "--num-workers", "3", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Identical moments: 0 up to the matrix square root's rounding, ~1e-16 of the traces (128).
    let fid: f64 = stdout(&o).trim_end().strip_prefix("FID: ").unwrap().parse().unwrap();
    assert!(fid.abs() < 1e-10, "{fid}");
    let (code, err) = bench_err(&["fid", d.join("a.npz").to_str().unwrap()]);
    assert_eq!((code, err.trim_end()), (Some(2), "error: bench fid needs PATH1 and PATH2 (or --save-stats SOURCE OUT.npz)"));
}
