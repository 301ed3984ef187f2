//! The FID Inception v3: TF's 2015-12-05 ImageNet graph as pytorch-fid defines it
//! (pytorch_fid/inception.py `fid_inception_v3`): torchvision's Inception3 with 1008 classes and
//! no aux head, whose Mixed_5b–5d, 6b–6e and 7b average pools exclude the zero padding
//! (`count_include_pad=False`, as TF) and whose Mixed_7c pool branch is a max pool.
//!
//! Parameter names are pytorch-fid's state-dict keys (`Mixed_5b.branch1x1.conv.weight`, ...), so
//! its `pt_inception-2015-12-05-6726825d.pth` loads as is (via [`crate::checkpoint`]).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::preprocess::{preprocess, ResizeMode};
use crate::checkpoint;
use crate::error::{BenchError, Result};
use crate::registry::FID_INCEPTION;

/// Feature sizes pytorch-fid offers (`--dims`): after the first and second stem max pools,
/// before the aux head (Mixed_6e), and the final average pool.
pub const FEATURE_DIMS: [usize; 4] = [64, 192, 768, 2048];

/// BatchNorm epsilon of the TF graph (torchvision's BasicConv2d uses 0.001).
const BN_EPS: f64 = 1e-3;

/// conv (no bias) → BatchNorm(eps 1e-3, running stats) → ReLU.
struct BasicConv {
    weight: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    stride: [i64; 2],
    padding: [i64; 2],
}

impl BasicConv {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, None::<&Tensor>, self.stride, self.padding, [1, 1], 1)
            .batch_norm(
                Some(&self.bn_weight),
                Some(&self.bn_bias),
                Some(&self.running_mean),
                Some(&self.running_var),
                false,
                0.0,
                BN_EPS,
                true,
            )
            .relu()
    }
}

/// Takes parameters out of a state dict by name, recording what is missing or mis-shaped so that
/// one error can list every problem.
struct Params {
    sd: BTreeMap<String, Tensor>,
    used: BTreeSet<String>,
    problems: Vec<String>,
    device: Device,
}

impl Params {
    fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
        self.used.insert(name.to_string());
        match self.sd.get(name) {
            None => {
                self.problems.push(format!("missing `{name}` (shape {shape:?})"));
                Tensor::zeros(shape, (Kind::Float, self.device))
            }
            Some(t) if t.size() != shape || !t.is_floating_point() => {
                self.problems.push(format!(
                    "`{name}` has shape {:?} {:?}, expected {shape:?} float",
                    t.size(),
                    t.kind()
                ));
                Tensor::zeros(shape, (Kind::Float, self.device))
            }
            Some(t) => t.to_kind(Kind::Float).to_device(self.device),
        }
    }

    /// `name` is a BasicConv2d: `name.conv.weight` and `name.bn.{weight,bias,running_mean,running_var}`.
    fn conv(
        &mut self,
        name: &str,
        cin: i64,
        cout: i64,
        kernel: (i64, i64),
        stride: i64,
        padding: (i64, i64),
    ) -> BasicConv {
        let bn = |p: &mut Self, field: &str| p.take(&format!("{name}.bn.{field}"), &[cout]);
        let num_batches = format!("{name}.bn.num_batches_tracked");
        if self.sd.contains_key(&num_batches) {
            self.used.insert(num_batches);
        }
        BasicConv {
            weight: self.take(&format!("{name}.conv.weight"), &[cout, cin, kernel.0, kernel.1]),
            bn_weight: bn(self, "weight"),
            bn_bias: bn(self, "bias"),
            running_mean: bn(self, "running_mean"),
            running_var: bn(self, "running_var"),
            stride: [stride, stride],
            padding: [padding.0, padding.1],
        }
    }
    fn c1(&mut self, name: &str, cin: i64, cout: i64) -> BasicConv {
        self.conv(name, cin, cout, (1, 1), 1, (0, 0))
    }
}

/// TF's average pool over the 3×3 window that lies inside the image (padding not counted).
fn avg_pool_3x3_same(x: &Tensor) -> Tensor {
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
}

fn max_pool_3x3_s2(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// Mixed_5b..5d (torchvision InceptionA, FID pool patch).
struct BlockA {
    b1: BasicConv,
    b5: [BasicConv; 2],
    b3dbl: [BasicConv; 3],
    pool: BasicConv,
}

impl BlockA {
    fn load(p: &mut Params, name: &str, cin: i64, pool_features: i64) -> Self {
        let n = |s: &str| format!("{name}.{s}");
        BlockA {
            b1: p.c1(&n("branch1x1"), cin, 64),
            b5: [
                p.c1(&n("branch5x5_1"), cin, 48),
                p.conv(&n("branch5x5_2"), 48, 64, (5, 5), 1, (2, 2)),
            ],
            b3dbl: [
                p.c1(&n("branch3x3dbl_1"), cin, 64),
                p.conv(&n("branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1)),
                p.conv(&n("branch3x3dbl_3"), 96, 96, (3, 3), 1, (1, 1)),
            ],
            pool: p.c1(&n("branch_pool"), cin, pool_features),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.b1.forward(x);
        let b5 = chain(&self.b5, x);
        let b3 = chain(&self.b3dbl, x);
        let bp = self.pool.forward(&avg_pool_3x3_same(x));
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

/// Mixed_6a (torchvision InceptionB): grid reduction 35→17.
struct BlockB {
    b3: BasicConv,
    b3dbl: [BasicConv; 3],
}

impl BlockB {
    fn load(p: &mut Params, name: &str, cin: i64) -> Self {
        let n = |s: &str| format!("{name}.{s}");
        BlockB {
            b3: p.conv(&n("branch3x3"), cin, 384, (3, 3), 2, (0, 0)),
            b3dbl: [
                p.c1(&n("branch3x3dbl_1"), cin, 64),
                p.conv(&n("branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1)),
                p.conv(&n("branch3x3dbl_3"), 96, 96, (3, 3), 2, (0, 0)),
            ],
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(&[self.b3.forward(x), chain(&self.b3dbl, x), max_pool_3x3_s2(x)], 1)
    }
}

/// Mixed_6b..6e (torchvision InceptionC, FID pool patch): factorised 7×7.
struct BlockC {
    b1: BasicConv,
    b7: [BasicConv; 3],
    b7dbl: [BasicConv; 5],
    pool: BasicConv,
}

impl BlockC {
    fn load(p: &mut Params, name: &str, cin: i64, c7: i64) -> Self {
        let n = |s: &str| format!("{name}.{s}");
        let (row, col) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
        BlockC {
            b1: p.c1(&n("branch1x1"), cin, 192),
            b7: [
                p.c1(&n("branch7x7_1"), cin, c7),
                p.conv(&n("branch7x7_2"), c7, c7, row.0, 1, row.1),
                p.conv(&n("branch7x7_3"), c7, 192, col.0, 1, col.1),
            ],
            b7dbl: [
                p.c1(&n("branch7x7dbl_1"), cin, c7),
                p.conv(&n("branch7x7dbl_2"), c7, c7, col.0, 1, col.1),
                p.conv(&n("branch7x7dbl_3"), c7, c7, row.0, 1, row.1),
                p.conv(&n("branch7x7dbl_4"), c7, c7, col.0, 1, col.1),
                p.conv(&n("branch7x7dbl_5"), c7, 192, row.0, 1, row.1),
            ],
            pool: p.c1(&n("branch_pool"), cin, 192),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let bp = self.pool.forward(&avg_pool_3x3_same(x));
        Tensor::cat(&[self.b1.forward(x), chain(&self.b7, x), chain(&self.b7dbl, x), bp], 1)
    }
}

/// Mixed_7a (torchvision InceptionD): grid reduction 17→8.
struct BlockD {
    b3: [BasicConv; 2],
    b7x3: [BasicConv; 4],
}

impl BlockD {
    fn load(p: &mut Params, name: &str, cin: i64) -> Self {
        let n = |s: &str| format!("{name}.{s}");
        BlockD {
            b3: [
                p.c1(&n("branch3x3_1"), cin, 192),
                p.conv(&n("branch3x3_2"), 192, 320, (3, 3), 2, (0, 0)),
            ],
            b7x3: [
                p.c1(&n("branch7x7x3_1"), cin, 192),
                p.conv(&n("branch7x7x3_2"), 192, 192, (1, 7), 1, (0, 3)),
                p.conv(&n("branch7x7x3_3"), 192, 192, (7, 1), 1, (3, 0)),
                p.conv(&n("branch7x7x3_4"), 192, 192, (3, 3), 2, (0, 0)),
            ],
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(&[chain(&self.b3, x), chain(&self.b7x3, x), max_pool_3x3_s2(x)], 1)
    }
}

/// Mixed_7b / 7c (torchvision InceptionE; FIDInceptionE_1 avg pool without padding, E_2 max pool).
struct BlockE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2: [BasicConv; 2],
    b3dbl: [BasicConv; 2],
    b3dbl_3: [BasicConv; 2],
    pool: BasicConv,
    max_pool: bool,
}

impl BlockE {
    fn load(p: &mut Params, name: &str, cin: i64, max_pool: bool) -> Self {
        let n = |s: &str| format!("{name}.{s}");
        BlockE {
            b1: p.c1(&n("branch1x1"), cin, 320),
            b3_1: p.c1(&n("branch3x3_1"), cin, 384),
            b3_2: [
                p.conv(&n("branch3x3_2a"), 384, 384, (1, 3), 1, (0, 1)),
                p.conv(&n("branch3x3_2b"), 384, 384, (3, 1), 1, (1, 0)),
            ],
            b3dbl: [
                p.c1(&n("branch3x3dbl_1"), cin, 448),
                p.conv(&n("branch3x3dbl_2"), 448, 384, (3, 3), 1, (1, 1)),
            ],
            b3dbl_3: [
                p.conv(&n("branch3x3dbl_3a"), 384, 384, (1, 3), 1, (0, 1)),
                p.conv(&n("branch3x3dbl_3b"), 384, 384, (3, 1), 1, (1, 0)),
            ],
            pool: p.c1(&n("branch_pool"), cin, 192),
            max_pool,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.b1.forward(x);
        let b3 = self.b3_1.forward(x);
        let b3 = Tensor::cat(&[self.b3_2[0].forward(&b3), self.b3_2[1].forward(&b3)], 1);
        let bd = chain(&self.b3dbl, x);
        let bd = Tensor::cat(&[self.b3dbl_3[0].forward(&bd), self.b3dbl_3[1].forward(&bd)], 1);
        let pooled = if self.max_pool {
            // pytorch-fid: "The FID Inception model uses max pooling instead of average pooling".
            x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            avg_pool_3x3_same(x)
        };
        Tensor::cat(&[b1, b3, bd, self.pool.forward(&pooled)], 1)
    }
}

fn chain(convs: &[BasicConv], x: &Tensor) -> Tensor {
    let mut y = convs[0].forward(x);
    for c in &convs[1..] {
        y = c.forward(&y);
    }
    y
}

/// The FID Inception v3 with loaded weights, evaluation only (no autograd).
pub struct FidInception {
    stem0: [BasicConv; 3],
    stem1: [BasicConv; 2],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7b: BlockE,
    mixed_7c: BlockE,
    /// The 1008-way classifier's weight `[1008, 2048]` (`fc.weight`), when the file has it: the
    /// Inception Score's logits are `pool · fcᵀ` without the bias, torch-fidelity's `logits_unbiased`.
    fc_weight: Option<Tensor>,
    device: Device,
    /// SHA-256 of the weights file, recorded with results.
    pub weights_sha256: String,
}

/// Where the pytorch-fid weights are looked for when no file is given: `$BENCH_DATA/models/...`.
pub fn default_weights_path() -> PathBuf {
    FID_INCEPTION.default_path(&crate::registry::data_dir())
}

fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| BenchError::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl FidInception {
    /// Loads weights from a `torch.save` file (legacy or zip) or `.safetensors` with pytorch-fid's
    /// key names. Unless `allow_custom_weights`, the file must be pytorch-fid's published
    /// `pt_inception-2015-12-05` (its SHA-256 is checked): FID numbers are only comparable with it.
    pub fn load(path: &Path, device: Device, allow_custom_weights: bool) -> Result<Self> {
        let expected = FID_INCEPTION.sha256.unwrap_or_default();
        if !path.is_file() {
            return Err(BenchError::file(
                path,
                format!(
                    "FID Inception weights not found (looked for {}; default location is {}). Download {} (SHA-256 {}) there, or pass another weights file",
                    path.display(),
                    default_weights_path().display(),
                    FID_INCEPTION.url,
                    expected
                ),
            ));
        }
        let sha = sha256_file(path)?;
        if sha != expected && !allow_custom_weights {
            return Err(BenchError::file(
                path,
                format!(
                    "SHA-256 {sha} is not that of pytorch-fid's {} ({expected}, from {}); FID with other weights is not comparable. Allow it explicitly with the custom-weights override",
                    FID_INCEPTION.name, FID_INCEPTION.url
                ),
            ));
        }
        let sd = checkpoint::load_state_dict(path, &checkpoint::Select::Auto)?;
        let mut net = Self::from_state_dict(sd, device).map_err(|m| BenchError::file(path, m))?;
        net.weights_sha256 = sha;
        if device.is_cuda() {
            disable_tf32_for_cudnn();
        }
        Ok(net)
    }

    /// Builds the network from a state dict; every expected key must be present with its shape,
    /// and no unknown key may be left over (`fc.*` and `*.num_batches_tracked` are allowed extras).
    pub fn from_state_dict(sd: BTreeMap<String, Tensor>, device: Device) -> std::result::Result<Self, String> {
        let mut p = Params {
            sd,
            used: BTreeSet::new(),
            problems: Vec::new(),
            device,
        };
        let net = FidInception {
            stem0: [
                p.conv("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
                p.conv("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
                p.conv("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)),
            ],
            stem1: [
                p.c1("Conv2d_3b_1x1", 64, 80),
                p.conv("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0)),
            ],
            mixed_5: [
                BlockA::load(&mut p, "Mixed_5b", 192, 32),
                BlockA::load(&mut p, "Mixed_5c", 256, 64),
                BlockA::load(&mut p, "Mixed_5d", 288, 64),
            ],
            mixed_6a: BlockB::load(&mut p, "Mixed_6a", 288),
            mixed_6: [
                BlockC::load(&mut p, "Mixed_6b", 768, 128),
                BlockC::load(&mut p, "Mixed_6c", 768, 160),
                BlockC::load(&mut p, "Mixed_6d", 768, 160),
                BlockC::load(&mut p, "Mixed_6e", 768, 192),
            ],
            mixed_7a: BlockD::load(&mut p, "Mixed_7a", 768),
            mixed_7b: BlockE::load(&mut p, "Mixed_7b", 1280, false),
            mixed_7c: BlockE::load(&mut p, "Mixed_7c", 2048, true),
            fc_weight: None,
            device,
            weights_sha256: String::new(),
        };
        // The 1008-way classifier is part of the published file but not of the features; its
        // weight is kept for the Inception Score.
        let mut net = net;
        for (name, shape) in [("fc.weight", vec![1008i64, 2048]), ("fc.bias", vec![1008])] {
            if let Some(t) = p.sd.get(name) {
                p.used.insert(name.to_string());
                if t.size() != shape || !t.is_floating_point() {
                    p.problems
                        .push(format!("`{name}` has shape {:?}, expected {shape:?}", t.size()));
                } else if name == "fc.weight" {
                    net.fc_weight = Some(t.to_kind(Kind::Float).to_device(device));
                }
            }
        }
        for k in p.sd.keys() {
            if !p.used.contains(k) {
                p.problems.push(format!("unexpected `{k}`"));
            }
        }
        if !p.problems.is_empty() {
            let n = p.problems.len();
            let first: Vec<&str> = p.problems.iter().take(5).map(String::as_str).collect();
            return Err(format!(
                "not FID Inception v3 weights ({n} problem{}): {}{}",
                if n == 1 { "" } else { "s" },
                first.join("; "),
                if n > 5 { "; ..." } else { "" }
            ));
        }
        Ok(net)
    }

    /// [`Self::load`] from `weights`, or from [`default_weights_path`] when none is given.
    pub fn load_or_default(weights: Option<&Path>, device: Device, allow_custom_weights: bool) -> Result<Self> {
        match weights {
            Some(p) => Self::load(p, device, allow_custom_weights),
            None => Self::load(&default_weights_path(), device, allow_custom_weights),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Network input `[B,3,299,299]` float (already preprocessed, on this device) → features
    /// `[B,dims]` float32 on this device. Blocks before 2048 are global-average-pooled as
    /// pytorch-fid's `get_activations` does.
    pub fn forward(&self, x: &Tensor, dims: usize) -> Result<Tensor> {
        Ok(self.forward_outputs(x, dims, false)?.0)
    }

    /// One forward → (features `[B,dims]`, unbiased logits `[B,1008]`), both float32 on this
    /// device. The logits are torch-fidelity's `logits_unbiased` (feature_extractor_inceptionv3.py:
    /// `x.mm(self.fc.weight.T)` on the 2048-d pool features, no bias), which its Inception Score
    /// uses. The features are exactly those of [`Self::forward`].
    pub fn forward_with_logits(&self, x: &Tensor, dims: usize) -> Result<(Tensor, Tensor)> {
        let (features, logits) = self.forward_outputs(x, dims, true)?;
        let logits = logits.ok_or_else(|| BenchError::Internal("logits were not computed".into()))?;
        Ok((features, logits))
    }

    /// Whether the weights include the classifier (`fc.weight`) that the Inception Score needs.
    pub fn has_classifier(&self) -> bool {
        self.fc_weight.is_some()
    }

    fn forward_outputs(&self, x: &Tensor, dims: usize, logits: bool) -> Result<(Tensor, Option<Tensor>)> {
        if !FEATURE_DIMS.contains(&dims) {
            return Err(BenchError::user(format!(
                "unsupported feature dims {dims}; allowed: 64, 192, 768, 2048"
            )));
        }
        let fc = match (logits, &self.fc_weight) {
            (false, _) => None,
            (true, Some(w)) => Some(w),
            (true, None) => {
                return Err(BenchError::user(
                    "the Inception weights have no classifier (`fc.weight` [1008, 2048]); the Inception Score needs it",
                ))
            }
        };
        let pooled = |y: &Tensor| y.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        let out = tch::no_grad(|| -> Result<(Tensor, Option<Tensor>)> {
            let mut features = None;
            let x = max_pool_3x3_s2(&chain(&self.stem0, &x.to_kind(Kind::Float)));
            if dims == 64 {
                let f = pooled(&x);
                if fc.is_none() {
                    return Ok((f, None));
                }
                features = Some(f);
            }
            let x = max_pool_3x3_s2(&chain(&self.stem1, &x));
            if dims == 192 {
                let f = pooled(&x);
                if fc.is_none() {
                    return Ok((f, None));
                }
                features = Some(f);
            }
            let mut x = x;
            for b in &self.mixed_5 {
                x = b.forward(&x);
            }
            x = self.mixed_6a.forward(&x);
            for b in &self.mixed_6 {
                x = b.forward(&x);
            }
            if dims == 768 {
                let f = pooled(&x);
                if fc.is_none() {
                    return Ok((f, None));
                }
                features = Some(f);
            }
            let x = self
                .mixed_7c
                .forward(&self.mixed_7b.forward(&self.mixed_7a.forward(&x)));
            let pool = pooled(&x);
            let logits = match fc {
                Some(w) => Some(pool.f_mm(&w.f_tr()?)?),
                None => None,
            };
            Ok((features.unwrap_or(pool), logits))
        })?;
        Ok(out)
    }

    /// uint8 images `[B,3,H,W]` → (features `[B,dims]`, unbiased logits `[B,1008]`), float32 on
    /// this network's device, resized/normalised per `mode` there: one forward for FID, IS, KID
    /// and precision/recall.
    pub fn features_and_logits(&self, images_u8: &Tensor, mode: ResizeMode, dims: usize) -> Result<(Tensor, Tensor)> {
        let x = tch::no_grad(|| preprocess(&images_u8.to_device(self.device), mode))?;
        self.forward_with_logits(&x, dims)
    }

    /// uint8 images `[B,3,H,W]` (any device) → features `[B,dims]` float32 on the CPU, with the
    /// resize/normalisation of `mode` done on this network's device.
    pub fn features(&self, images_u8: &Tensor, mode: ResizeMode, dims: usize) -> Result<Tensor> {
        let x = tch::no_grad(|| preprocess(&images_u8.to_device(self.device), mode))?;
        Ok(self.forward(&x, dims)?.to_device(Device::Cpu))
    }
}

/// PyTorch lets cuDNN convolutions use TF32 by default (`torch.backends.cudnn.allow_tf32 = True`),
/// which would change features in the 3rd–4th digit on Ampere+ GPUs. `tch` exposes no switch, so
/// this calls libtorch's `at::globalContext().setAllowTF32CuDNN(false)` directly (libtorch_cpu is
/// linked by torch-sys). It is process-wide: other cuDNN convolutions in this process (a sampler's
/// UNet) then run in full fp32 too. cuBLAS matmuls already default to full fp32 in libtorch.
pub fn disable_tf32_for_cudnn() {
    extern "C" {
        #[link_name = "_ZN2at13globalContextEv"]
        fn at_global_context() -> *mut std::ffi::c_void;
        #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
        fn at_context_set_allow_tf32_cudnn(ctx: *mut std::ffi::c_void, allow: bool);
    }
    // SAFETY: globalContext() returns a reference to the process-wide at::Context singleton;
    // setAllowTF32CuDNN is a non-virtual member taking (this, bool), the Itanium C++ ABI.
    unsafe { at_context_set_allow_tf32_cudnn(at_global_context(), false) }
}
