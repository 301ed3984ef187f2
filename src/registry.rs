//! Known pretrained files: where `bench` looks for them and where they are published.
//! The harness never downloads at run time; a missing file is an error that names this entry.
use std::path::{Path, PathBuf};

pub struct Artifact {
    pub name: &'static str,
    /// Path relative to the data directory.
    pub file: &'static str,
    pub sha256: Option<&'static str>,
    pub size: Option<u64>,
    pub url: &'static str,
    pub what: &'static str,
}

impl Artifact {
    pub fn default_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.file)
    }
}

pub const FID_INCEPTION: Artifact = Artifact {
    name: "pt_inception-2015-12-05",
    file: "models/pt_inception-2015-12-05-6726825d.pth",
    sha256: Some("6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"),
    size: Some(95_628_359),
    url: "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    what: "FID Inception v3 (TF 2015-12-05 graph, pytorch-fid port)",
};

pub const ARTIFACTS: &[Artifact] = &[
    FID_INCEPTION,
    Artifact {
        name: "ddpm-cifar10-32",
        file: "models/ddpm-cifar10-32",
        sha256: None,
        size: None,
        url: "https://huggingface.co/google/ddpm-cifar10-32",
        what: "Ho et al. CIFAR10 DDPM, diffusers folder (config.json + safetensors)",
    },
    Artifact {
        name: "ddim-cifar10-ema",
        file: "models/ddim_cifar10/model-790000.ckpt",
        sha256: None,
        size: None,
        url: "https://heibox.uni-heidelberg.de/d/01207c3f6b8441779abf/",
        what: "Ho et al. CIFAR10 DDPM, pesser's conversion used by the DDIM repo",
    },
    Artifact {
        name: "ddim-celeba-64",
        file: "models/ddim_celeba/ckpt.pth",
        sha256: None,
        size: None,
        url: "https://drive.google.com/file/d/1R_H-fJYXSH79wfSKs9D-fuKQVan5L-GR",
        what: "DDIM authors' CelebA 64x64 model ([model, optimizer, epoch, step, ema])",
    },
    Artifact {
        name: "edm-cifar10-32x32-uncond-vp",
        file: "models/edm-cifar10-32x32-uncond-vp.pkl",
        sha256: None,
        size: None,
        url: "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl",
        what: "Karras et al. 2022 (EDM) CIFAR10 unconditional VP network, DDPM++ with EDM's preconditioning (config F)",
    },
    Artifact {
        name: "baseline-cifar10-32x32-uncond-vp",
        file: "models/baseline-cifar10-32x32-uncond-vp.pkl",
        sha256: None,
        size: None,
        url: "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/baseline/baseline-cifar10-32x32-uncond-vp.pkl",
        what: "Song et al. 2021 CIFAR10 VP (DDPM++) network as EDM packages it (config A, EDM Figure 2a)",
    },
    Artifact {
        name: "baseline-cifar10-32x32-uncond-ve",
        file: "models/baseline-cifar10-32x32-uncond-ve.pkl",
        sha256: None,
        size: None,
        url: "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/baseline/baseline-cifar10-32x32-uncond-ve.pkl",
        what: "Song et al. 2021 CIFAR10 VE (NCSN++) network as EDM packages it (config A, EDM Figure 2b)",
    },
    Artifact {
        name: "cifar10-train-stats",
        file: "stats/cifar10_train.npz",
        sha256: None,
        size: None,
        url: "(compute with `bench stats cifar10:train:DIR --out data/stats/cifar10_train.npz`)",
        what: "FID reference statistics of the CIFAR10 training set",
    },
];

/// The data directory: `$BENCH_DATA` if set, else `./data`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("BENCH_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data"))
}
