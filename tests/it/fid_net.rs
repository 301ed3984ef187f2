//! FID network parity with pytorch-fid (random weights, no download), the checkpoint reader on
//! torch.save's legacy and zip formats, the three resize modes against their references, and
//! refusal of bad or malicious weight files.
use std::collections::BTreeMap;
use std::path::Path;

use samplerbench::checkpoint::{self, Select, Value};
use samplerbench::metrics::inception::FidInception;
use samplerbench::metrics::preprocess::{preprocess, ResizeMode};
use tch::{Device, Kind, Tensor};

use crate::common::run_python;

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn read_images(path: &Path, shape: [i64; 4]) -> Tensor {
    Tensor::from_slice(&std::fs::read(path).unwrap()).view(shape)
}

/// max |a−b| / max |b|.
fn rel_err(ours: &Tensor, reference: &[f32]) -> f64 {
    let ours = Vec::<f32>::try_from(ours.to_kind(Kind::Float).contiguous().view([-1])).unwrap();
    assert_eq!(ours.len(), reference.len());
    let scale = reference.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    assert!(scale > 0.0);
    ours.iter()
        .zip(reference)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()))
        / scale
}

/// pytorch-fid's network with seeded random weights (`python/bench_fixtures.py`). Saves the state
/// dict in torch.save's legacy format, its zip format and safetensors; 4 random 32×32 uint8
/// images; and pytorch-fid's features for dims 64..2048.
pub(crate) const PYTORCH_FID_ORACLE: &str = r#"
import sys, os, numpy as np, torch, torch.nn as nn
from safetensors.torch import save_file
from bench_fixtures import random_fid_inception, pytorch_fid_model
out = sys.argv[1]
net = random_fid_inception(seed=0)
sd = net.state_dict()
model = pytorch_fid_model(net)
torch.save(sd, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
torch.save(sd, os.path.join(out, "zip.pth"))
save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, "w.safetensors"))
imgs = np.random.default_rng(1).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
open(os.path.join(out, "images.u8"), "wb").write(imgs.tobytes())
with torch.no_grad():
    feats = model(torch.from_numpy(imgs).float() / 255.0)
for dims, f in zip([64, 192, 768, 2048], feats):
    if f.shape[2] != 1 or f.shape[3] != 1:
        f = torch.nn.functional.adaptive_avg_pool2d(f, output_size=(1, 1))
    f.squeeze(3).squeeze(2).numpy().astype("<f4").tofile(os.path.join(out, f"feat_{dims}.f32"))
"#;

#[test]
fn inception_matches_pytorch_fid_from_legacy_zip_and_safetensors_weights() {
    let dir = tempfile::tempdir().unwrap();
    run_python(PYTORCH_FID_ORACLE, &[dir.path().to_str().unwrap()]);
    let images = read_images(&dir.path().join("images.u8"), [4, 3, 32, 32]);
    let want = read_f32(&dir.path().join("feat_2048.f32"));

    let mut nets = Vec::new();
    for file in ["legacy.pth", "zip.pth", "w.safetensors"] {
        let net = FidInception::load(&dir.path().join(file), Device::Cpu, true).unwrap();
        let f = net.features(&images, ResizeMode::PytorchFid, 2048).unwrap();
        assert_eq!(f.size(), vec![4, 2048]);
        // The random network must separate images, or equal features would prove little.
        let spread = (f.get(0) - f.get(1)).abs().max().double_value(&[]);
        assert!(
            spread > 1e-2 * f.abs().max().double_value(&[]),
            "{file}: degenerate features"
        );
        let err = rel_err(&f, &want);
        eprintln!("{file}: 2048-d features rel err {err:.3e}");
        assert!(err <= 1e-4, "{file}: relative error {err}");
        nets.push(net);
    }
    for dims in [64usize, 192, 768] {
        let want = read_f32(&dir.path().join(format!("feat_{dims}.f32")));
        let f = nets[0].features(&images, ResizeMode::PytorchFid, dims).unwrap();
        assert_eq!(f.size(), vec![4, dims as i64]);
        let err = rel_err(&f, &want);
        eprintln!("{dims}-d features rel err {err:.3e}");
        assert!(err <= 1e-4, "dims {dims}: relative error {err}");
    }

    // On a GPU the network must run in true fp32: with cuDNN's default TF32 convolutions the
    // features drift by ~1e-3 relative through the 94 layers.
    if tch::Cuda::is_available() {
        let net = FidInception::load(&dir.path().join("zip.pth"), Device::Cuda(0), true).unwrap();
        let f = net.features(&images, ResizeMode::PytorchFid, 2048).unwrap();
        let err = rel_err(&f, &want);
        eprintln!("cuda: 2048-d features rel err {err:.3e}");
        assert!(err <= 1e-4, "cuda: relative error {err}");
    }

    // Not pytorch-fid's published file: refused without the override, naming both hashes.
    let legacy = dir.path().join("legacy.pth");
    let err = FidInception::load(&legacy, Device::Cpu, false)
        .err()
        .expect("hash must be checked")
        .to_string();
    assert!(
        err.contains("6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"),
        "{err}"
    );
    assert!(err.contains("legacy.pth") && err.contains("SHA-256"), "{err}");

    // A missing file names itself, the URL and the hash.
    let missing = dir.path().join("nope.pth");
    let e = FidInception::load(&missing, Device::Cpu, true).err().unwrap();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("nope.pth")
            && msg.contains("https://github.com/mseitzer/pytorch-fid/releases")
            && msg.contains("6726825d0af5"),
        "{msg}"
    );

    // Truncated files (legacy: inside a storage; zip: the central directory is gone).
    for (file, needle) in [("legacy.pth", "truncated"), ("zip.pth", "not a valid zip checkpoint")] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        let cut = dir.path().join(format!("cut_{file}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = FidInception::load(&cut, Device::Cpu, true).err().unwrap();
        assert_eq!(e.exit_code(), 2, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(cut.to_str().unwrap()) && msg.contains(needle),
            "{file}: {msg}"
        );
    }

    // Keys are checked both ways, and shapes.
    let mut sd = checkpoint::load_state_dict(&legacy, &Select::Auto).unwrap();
    sd.remove("Mixed_6c.branch7x7_2.conv.weight");
    sd.insert(
        "Mixed_6c.extra.weight".into(),
        Tensor::zeros([3], (Kind::Float, Device::Cpu)),
    );
    sd.insert(
        "Conv2d_1a_3x3.bn.running_var".into(),
        Tensor::ones([31], (Kind::Float, Device::Cpu)),
    );
    let msg = FidInception::from_state_dict(sd, Device::Cpu).err().unwrap();
    assert!(msg.contains("3 problems"), "{msg}");
    assert!(
        msg.contains("missing `Mixed_6c.branch7x7_2.conv.weight` (shape [160, 160, 1, 7])"),
        "{msg}"
    );
    assert!(msg.contains("unexpected `Mixed_6c.extra.weight`"), "{msg}");
    assert!(msg.contains("`Conv2d_1a_3x3.bn.running_var` has shape [31]"), "{msg}");
}

/// Strided views, several dtypes and the DDIM authors' `[model, optimizer, epoch, step, ema]` list.
const CHECKPOINT_ORACLE: &str = r#"
import sys, os, torch, collections
out = sys.argv[1]
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
model = collections.OrderedDict([
    ("w_t", base.t()),                        # stride (1, 6)
    ("w_slice", base[1:3, 2:5]),              # storage offset 8, stride (6, 1)
    ("f64", torch.linspace(-1, 1, 5, dtype=torch.float64)),
    ("f16", torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16)),
    ("bf16", torch.tensor([1.5, -3.0], dtype=torch.bfloat16)),
    ("i64", torch.tensor([-(2**40), 7])),
    ("i32", torch.tensor([-5, 2**30], dtype=torch.int32)),
    ("u8", torch.tensor([0, 255], dtype=torch.uint8)),
    ("b", torch.tensor([True, False, True])),
    ("scalar", torch.tensor(3.25)),
])
model._metadata = collections.OrderedDict([("", {"version": 1})])
ema = collections.OrderedDict([("w", torch.full((2, 2), 0.5))])
opt = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(2)}},
       "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "foreach": None, "params": [0, 1]}]}
ckpt = [model, opt, 7, 790000, ema]
torch.save(ckpt, os.path.join(out, "ckpt_zip.pth"))
torch.save(ckpt, os.path.join(out, "ckpt_legacy.pth"), _use_new_zipfile_serialization=False)
"#;

#[test]
fn checkpoint_reader_handles_views_dtypes_and_ddim_lists_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    run_python(CHECKPOINT_ORACLE, &[dir.path().to_str().unwrap()]);
    for file in ["ckpt_zip.pth", "ckpt_legacy.pth"] {
        let path = dir.path().join(file);
        let root = checkpoint::load(&path).unwrap();
        let Value::List(items) = &root else {
            panic!("{file}: root is {}", root.kind())
        };
        assert_eq!(items.len(), 5);
        assert!(matches!(items[2], Value::Int(7)) && matches!(items[3], Value::Int(790000)));
        let lr = root.at("1.param_groups.0.lr").unwrap();
        assert!(matches!(lr, Value::Float(v) if *v == 2e-4), "{lr:?}");
        assert!(matches!(root.at("1.param_groups.0.betas").unwrap(), Value::Tuple(t) if t.len() == 2));
        assert!(matches!(root.at("1.state.0.step").unwrap(), Value::Tensor(_)));

        let sd: BTreeMap<String, Tensor> = checkpoint::load_state_dict(&path, &Select::Path("0".into())).unwrap();
        let base = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([4, 6]);
        assert!(sd["w_t"].equal(&base.transpose(0, 1)), "{file}: transposed view");
        assert!(
            sd["w_slice"].equal(&base.slice(0, 1, 3, 1).slice(1, 2, 5, 1)),
            "{file}: offset view"
        );
        assert_eq!(
            Vec::<f64>::try_from(&sd["f64"]).unwrap(),
            vec![-1.0, -0.5, 0.0, 0.5, 1.0]
        );
        assert_eq!(sd["f16"].kind(), Kind::Half);
        assert_eq!(
            Vec::<f32>::try_from(sd["f16"].to_kind(Kind::Float)).unwrap(),
            vec![0.5, -2.0, 65504.0]
        );
        assert_eq!(sd["bf16"].kind(), Kind::BFloat16);
        assert_eq!(
            Vec::<f32>::try_from(sd["bf16"].to_kind(Kind::Float)).unwrap(),
            vec![1.5, -3.0]
        );
        assert_eq!(Vec::<i64>::try_from(&sd["i64"]).unwrap(), vec![-(1i64 << 40), 7]);
        assert_eq!(Vec::<i32>::try_from(&sd["i32"]).unwrap(), vec![-5, 1 << 30]);
        assert_eq!(Vec::<u8>::try_from(&sd["u8"]).unwrap(), vec![0, 255]);
        assert_eq!(Vec::<bool>::try_from(&sd["b"]).unwrap(), vec![true, false, true]);
        assert_eq!(sd["scalar"].size(), Vec::<i64>::new());
        assert_eq!(sd["scalar"].double_value(&[]), 3.25);

        let ema = checkpoint::load_state_dict(&path, &Select::Path("4".into())).unwrap();
        assert_eq!(ema.keys().collect::<Vec<_>>(), vec!["w"]);
        // A list root has no unambiguous state dict: Auto says how to choose.
        let e = checkpoint::load_state_dict(&path, &Select::Auto)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("list (5 entries)") && e.contains("`4`"), "{e}");
    }
}

/// A pickle whose object reduces to `os.system(...)` (protocol 2 names it `posix.system`; `eval`
/// becomes `__builtin__.eval`): written by torch.save (zip and legacy) and
/// by plain pickle. Loading must refuse it without running the command.
const MALICIOUS_ORACLE: &str = r#"
import sys, os, pickle, torch
out = sys.argv[1]
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "pwned"),))
torch.save({"w": torch.zeros(2), "x": Evil()}, os.path.join(out, "evil_zip.pth"))
torch.save({"w": torch.zeros(2), "x": Evil()}, os.path.join(out, "evil_legacy.pth"), _use_new_zipfile_serialization=False)
pickle.dump({"x": Evil()}, open(os.path.join(out, "evil.pkl"), "wb"), protocol=2)
class Eval:
    def __reduce__(self):
        return (eval, ("1+1",))
torch.save({"x": Eval()}, os.path.join(out, "eval_zip.pth"))
"#;

#[test]
fn checkpoints_that_call_functions_are_refused_without_running_them() {
    let dir = tempfile::tempdir().unwrap();
    run_python(MALICIOUS_ORACLE, &[dir.path().to_str().unwrap()]);
    assert!(!dir.path().join("pwned").exists());
    for (file, global) in [
        ("evil_zip.pth", "posix.system"),
        ("evil_legacy.pth", "posix.system"),
        ("eval_zip.pth", "__builtin__.eval"),
    ] {
        let path = dir.path().join(file);
        let e = checkpoint::load(&path).err().expect("must refuse");
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains(file) && msg.contains(&format!("`{global}`")) && msg.contains("refusing"),
            "{msg}"
        );
        // Through the weights loader too (custom weights allowed, so only the content is judged).
        assert!(FidInception::load(&path, Device::Cpu, true)
            .err()
            .unwrap()
            .to_string()
            .contains(global));
    }
    // A plain pickle is neither a zip nor the legacy format (its first value is no magic number).
    let msg = checkpoint::load(&dir.path().join("evil.pkl"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("not a PyTorch checkpoint"), "{msg}");
    let pkl = std::fs::read(dir.path().join("evil.pkl")).unwrap();
    let err = checkpoint::pickle::unpickle(&pkl).unwrap_err();
    assert!(err.contains("`posix.system`"), "{err}");
    assert!(!dir.path().join("pwned").exists());
}

/// References for the three resize modes on the same uint8 images: pytorch-fid's own
/// `F.interpolate` path, a NumPy transcription of TF1 `resize_bilinear(align_corners=False)`
/// (float32, as tensorflow/core/kernels/image/resize_bilinear_op.cc computes it), and clean-fid's
/// per-channel PIL "F" bicubic resize with its clip.
const RESIZE_ORACLE: &str = r#"
import sys, os, numpy as np, torch, torch.nn.functional as F
from PIL import Image
out, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
imgs = np.random.default_rng(h * 1000 + w).integers(0, 256, (2, 3, h, w), dtype=np.uint8)
open(os.path.join(out, "in.u8"), "wb").write(imgs.tobytes())
x = torch.from_numpy(imgs).float() / 255.0
(2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1).numpy().astype("<f4").tofile(os.path.join(out, "pytorch-fid.f32"))

def tf1_axis(n_in, n_out):
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.arange(n_out, dtype=np.float32) * scale
    lo = np.maximum(np.floor(src).astype(np.int64), 0)
    hi = np.minimum(np.ceil(src).astype(np.int64), n_in - 1)
    return lo, hi, (src - np.floor(src)).astype(np.float32)
y0, y1, yl = tf1_axis(h, 299)
x0, x1, xl = tf1_axis(w, 299)
f = imgs.astype(np.float32)
tl, tr = f[:, :, y0][:, :, :, x0], f[:, :, y0][:, :, :, x1]
bl, br = f[:, :, y1][:, :, :, x0], f[:, :, y1][:, :, :, x1]
top = tl + (tr - tl) * xl[None, None, None, :]
bottom = bl + (br - bl) * xl[None, None, None, :]
tf = top + (bottom - top) * yl[None, None, :, None]
((tf - 128) / 128).astype("<f4").tofile(os.path.join(out, "tf.f32"))

clean = np.stack([np.stack([np.asarray(Image.fromarray(imgs[b, c].astype(np.float32), mode="F").resize((299, 299), resample=Image.BICUBIC)).clip(0, 255) for c in range(3)]) for b in range(2)])
((clean.astype(np.float32) - 128) / 128).astype("<f4").tofile(os.path.join(out, "clean.f32"))
"#;

#[test]
fn resize_modes_match_their_references() {
    for (h, w) in [(32i64, 32i64), (64, 64), (400, 333)] {
        let dir = tempfile::tempdir().unwrap();
        run_python(
            RESIZE_ORACLE,
            &[dir.path().to_str().unwrap(), &h.to_string(), &w.to_string()],
        );
        let images = read_images(&dir.path().join("in.u8"), [2, 3, h, w]);
        for (mode, tol) in [
            (ResizeMode::PytorchFid, 1e-6),
            (ResizeMode::Tf, 1e-5),
            (ResizeMode::Clean, 1e-5),
        ] {
            let want = read_f32(&dir.path().join(format!("{mode}.f32")));
            let ours = preprocess(&images, mode).unwrap();
            assert_eq!(ours.size(), vec![2, 3, 299, 299]);
            let ours = Vec::<f32>::try_from(ours.contiguous().view([-1])).unwrap();
            let max_abs = ours
                .iter()
                .zip(&want)
                .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
            eprintln!("{h}x{w} {mode}: max abs err {max_abs:.3e}");
            assert!(max_abs <= tol, "{h}x{w} {mode}: max abs error {max_abs}");
        }
    }
}

/// NumPy arrays in plain pickles, as CIFAR-10's python batches hold them (protocol 2 from
/// Python 3 writes the raw bytes through `_codecs.encode(text, 'latin1')`; protocol 4 as BINBYTES).
const NUMPY_PICKLE_ORACLE: &str = r#"
import sys, os, pickle, numpy as np
out = sys.argv[1]
d = {"batch_label": "training batch 1 of 5",
     "labels": [6, 9, 9, 4],
     "data": np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072),
     "f32_fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
     "i64": np.array([-3, 2**40], dtype=np.int64)}
for proto in (2, 4):
    pickle.dump(d, open(os.path.join(out, f"batch_p{proto}"), "wb"), protocol=proto)
"#;

#[test]
fn plain_pickles_with_numpy_arrays_load_as_tensors() {
    let dir = tempfile::tempdir().unwrap();
    run_python(NUMPY_PICKLE_ORACLE, &[dir.path().to_str().unwrap()]);
    for proto in [2, 4] {
        let v = checkpoint::load_pickle(&dir.path().join(format!("batch_p{proto}"))).unwrap();
        assert!(matches!(v.get("batch_label"), Some(Value::Str(s)) if s == "training batch 1 of 5"));
        let Some(Value::List(labels)) = v.get("labels") else {
            panic!("labels")
        };
        let labels: Vec<i64> = labels
            .iter()
            .map(|l| if let Value::Int(i) = l { *i } else { panic!() })
            .collect();
        assert_eq!(labels, vec![6, 9, 9, 4]);
        let Some(Value::Tensor(data)) = v.get("data") else {
            panic!("data")
        };
        assert_eq!((data.size(), data.kind()), (vec![4, 3072], Kind::Uint8));
        let want = (Tensor::arange(4 * 3072, (Kind::Int64, Device::Cpu)).remainder(256))
            .to_kind(Kind::Uint8)
            .view([4, 3072]);
        assert!(data.equal(&want), "protocol {proto}: data bytes");
        let Some(Value::Tensor(f)) = v.get("f32_fortran") else {
            panic!("f32")
        };
        assert!(
            f.equal(&Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3])),
            "protocol {proto}: Fortran order"
        );
        let Some(Value::Tensor(i)) = v.get("i64") else {
            panic!("i64")
        };
        assert_eq!(Vec::<i64>::try_from(i).unwrap(), vec![-3, 1 << 40]);
    }
}
