//! The latent/conditional networks against diffusers (tests/it/py/sd_fixtures.py): Stable
//! Diffusion-style UNet2DConditionModels, AutoencoderKL and VQModel decoders, and the
//! class-conditional / learned-variance pixel UNet2DModels, each from the same seeded random
//! weights in every file layout diffusers writes.
//!
//! Tolerances. fp32 parity: ≤ 1e-5 relative L2 (the house target). Both sides run the same
//! libtorch kernels in the same order on the same weights, so the only differences are
//! reassociations inside a kernel (thread splits), O(10 · 2⁻²⁴ · depth) ≈ 1e-6.
//! Reduced precision: our fp16/bf16 forward must be about as accurate as diffusers' own at that
//! precision: its error against the fp32 reference at most 1.5× diffusers' error (rounding at
//! u = 2⁻¹¹ / 2⁻⁸ dominates both and differs between them only in where roundings fall).
use crate::common::*;
use samplerbench::models::unet;
use samplerbench::models::unet_cond;
use samplerbench::models::vae::{self, LatentDecoder};
use samplerbench::models::{Condition, Decoder, Denoiser};
use std::path::Path;
use tch::{Device, Kind, Tensor};

const FP32: f64 = 1e-5;
const LOW_PRECISION_FACTOR: f64 = 1.5;

fn fixtures(which: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_python(include_str!("py/sd_fixtures.py"), &[dir.path().to_str().unwrap(), which]);
    dir
}

fn npy(d: &Path, name: &str) -> Tensor {
    Tensor::read_npy(d.join(format!("{name}.npy"))).unwrap()
}

fn check(what: &str, ours: &Tensor, reference: &Tensor, bound: f64) -> f64 {
    assert_eq!(ours.size(), reference.size(), "{what}: shape");
    let e = rel_err(ours, reference);
    eprintln!("{what}: relative L2 {e:.2e} (bound {bound:.1e})");
    assert!(e <= bound, "{what}: relative L2 error {e} > {bound}");
    e
}

/// A conditional UNet fixture's inputs and forward.
fn cond_forward(m: &unet_cond::UNet2DCondition, d: &Path, name: &str) -> Tensor {
    let labels = d.join(format!("{name}_labels.npy")).exists().then(|| npy(d, &format!("{name}_labels")));
    let x = npy(d, &format!("{name}_x"));
    let ehs = npy(d, &format!("{name}_ehs"));
    m.forward(&x, &npy(d, &format!("{name}_t")), &ehs, labels.as_ref()).unwrap()
}

#[test]
fn sd1_unet_matches_diffusers_in_every_layout_and_precision() {
    let dir = fixtures("sd1");
    let d = dir.path();
    let reference = npy(d, "sd1_out");
    let load = |folder: &str, kind| unet_cond::load(&d.join(folder), Device::Cpu, kind).unwrap();
    for folder in ["sd1", "sd1_bin", "sd1_sharded", "sd1_mixed"] {
        let m = load(folder, Kind::Float);
        check(&format!("SD1 {folder} fp32"), &cond_forward(&m, d, "sd1"), &reference, FP32);
        assert_eq!(m.weight_stats().kinds, ["Float"]);
    }
    // As a Denoiser the text embeddings are the condition, and the output comes back in x's dtype.
    let m = load("sd1", Kind::Float);
    let (x, t, ehs) = (npy(d, "sd1_x"), npy(d, "sd1_t"), npy(d, "sd1_ehs"));
    let out = Denoiser::forward(&m, &x, &t, Some(&Condition::Embeddings(ehs.shallow_clone()))).unwrap();
    check("SD1 as a Denoiser", &out, &reference, FP32);
    for (cond, says) in [(None, "; none was given"), (Some(Condition::Labels(Tensor::from_slice(&[1i64, 2]))), ", not class labels")] {
        let err = Denoiser::forward(&m, &x, &t, cond.as_ref()).err().unwrap();
        assert!(err.to_string().contains("a UNet2DConditionModel needs text embeddings [batch, tokens, "), "{err}");
        assert!(err.to_string().ends_with(says), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
    // The fp16 file loaded for fp32 is exactly diffusers' fp16 weights upcast.
    let m = load("sd1_fp16", Kind::Float);
    check("SD1 fp16 file → fp32", &cond_forward(&m, d, "sd1"), &npy(d, "sd1_fp16weights"), FP32);

    // Loaded for fp16, every weight is fp16 (from the fp16 file, never via fp32) ...
    let half = load("sd1_fp16", Kind::Half);
    let stats = half.weight_stats();
    assert_eq!((stats.kinds.as_slice(), stats.bytes), (["Half".to_string()].as_slice(), 2 * stats.parameters));
    // ... a folder with both files gives the fp16 file to an fp16 load, the fp32 one otherwise ...
    let mixed = load("sd1_mixed", Kind::Half);
    let ours16 = cond_forward(&half, d, "sd1");
    assert_eq!(cond_forward(&mixed, d, "sd1"), ours16, "the fp16 load of a mixed folder read the fp16 file");
    // ... and the fp16 forward on CPU is as accurate as diffusers' fp16 forward.
    let theirs = rel_err(&npy(d, "sd1_fp16"), &reference);
    check("SD1 fp16 forward vs fp32 reference", &ours16, &reference, LOW_PRECISION_FACTOR * theirs);
    let out16 = Denoiser::forward(&half, &x, &t, Some(&Condition::Embeddings(ehs))).unwrap();
    assert_eq!((out16.kind(), out16.to_kind(Kind::Half)), (x.kind(), ours16), "the fp16 Denoiser output, upcast to x's dtype");
    let bf16 = load("sd1", Kind::BFloat16);
    assert_eq!(bf16.weight_stats().kinds, ["BFloat16"]);
    let theirs = rel_err(&npy(d, "sd1_bf16"), &reference);
    check("SD1 bf16 forward vs fp32 reference", &cond_forward(&bf16, d, "sd1"), &reference, LOW_PRECISION_FACTOR * theirs);
}

#[test]
fn sd2_unet_with_linear_projection_and_per_block_heads_matches_diffusers() {
    let dir = fixtures("sd2");
    let d = dir.path();
    let m = unet_cond::load(&d.join("sd2"), Device::Cpu, Kind::Float).unwrap();
    assert!(m.config.use_linear_projection && m.config.upcast_attention);
    assert_eq!(m.config.attention_heads, [2, 4, 4]);
    // 10×10 latents: the up path meets 5×5 and 3×3 skips (diffusers' upsample_size path).
    check("SD2 fp32 (10×10 input)", &cond_forward(&m, d, "sd2"), &npy(d, "sd2_out"), FP32);
}

#[test]
fn cond_unet_options_match_diffusers() {
    // only_cross_attention, 2-layer transformers, per-block layers, class table, AdaGN,
    // downsample_padding 0, custom time embedding width and conv kernels, mid scale factor.
    let dir = fixtures("misc");
    let d = dir.path();
    let m = unet_cond::load(&d.join("misc"), Device::Cpu, Kind::Float).unwrap();
    check("UNet2DConditionModel options fp32", &cond_forward(&m, d, "misc"), &npy(d, "misc_out"), FP32);
    // Labels are required, and must index the table.
    let (x, t, ehs) = (npy(d, "misc_x"), npy(d, "misc_t"), npy(d, "misc_ehs"));
    let err = m.forward(&x, &t, &ehs, None).err().unwrap();
    assert!(err.to_string().ends_with("the model is class-conditional: class labels are required"), "{err}");
    let err = m.forward(&x, &t, &ehs, Some(&Tensor::from_slice(&[3i64, 10]))).err().unwrap();
    assert!(err.to_string().ends_with("class labels must lie in 0..10 (num_class_embeds), got 3..=10"), "{err}");
    let err = m.forward(&x, &t, &ehs.narrow(2, 0, 16), Some(&npy(d, "misc_labels"))).err().unwrap();
    assert!(err.to_string().ends_with("encoder hidden states of shape [2, 5, 16]; expected [2, tokens, 24]"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn autoencoder_kl_and_vq_decoders_match_diffusers_pipelines() {
    let dir = fixtures("vae,ldm");
    let d = dir.path();
    for folder in ["kl", "kl_bin"] {
        let kl = vae::load(&d.join(folder), Device::Cpu, Kind::Float).unwrap();
        assert!(matches!(kl, LatentDecoder::Kl(_)));
        assert_eq!((kl.latent_channels(), kl.downscale_factor()), (4, 2));
        check(&format!("AutoencoderKL decode ({folder})"), &kl.decode(&npy(d, "kl_latents")).unwrap(), &npy(d, "kl_out"), FP32);
    }
    let kls = vae::load(&d.join("kls"), Device::Cpu, Kind::Float).unwrap();
    check("AutoencoderKL decode with shift_factor", &kls.decode(&npy(d, "kls_latents")).unwrap(), &npy(d, "kls_out"), FP32);

    // As a Decoder (the runner's interface): the same images, f32.
    let images = Decoder::decode(&kls, &npy(d, "kls_latents")).unwrap();
    assert_eq!(images.kind(), Kind::Float);
    check("AutoencoderKL as a Decoder", &images, &npy(d, "kls_out"), FP32);

    let vq = vae::load(&d.join("vq"), Device::Cpu, Kind::Float).unwrap();
    assert!(matches!(vq, LatentDecoder::Vq(_)));
    // The quantisation picks many different codebook entries, so the lookup is exercised.
    let codes = npy(d, "vq_codes");
    let distinct = codes.unique_dim(0, true, false, false).0.size()[0];
    assert!(distinct >= 20, "only {distinct} codebook entries used");
    check("VQModel decode (LDMPipeline)", &vq.decode(&npy(d, "vq_latents")).unwrap(), &npy(d, "vq_out"), FP32);
    check("VQModel as a Decoder", &Decoder::decode(&vq, &npy(d, "vq_latents")).unwrap(), &npy(d, "vq_out"), FP32);
    let unet = unet::load(&d.join("ldm_unet"), Device::Cpu, Kind::Float).unwrap();
    let out = unet.forward(&npy(d, "ldm_unet_x"), &npy(d, "ldm_unet_t"), None).unwrap();
    check("LDM UNet2DModel", &out, &npy(d, "ldm_unet_out"), FP32);

    let err = vq.decode(&Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu))).err().unwrap();
    assert!(err.to_string().ends_with("latents of shape [1, 4, 8, 8]; expected [batch, 3, h, w]"), "{err}");
}

fn pixel_forward(m: &unet::UNet, d: &Path, name: &str) -> Tensor {
    let labels = d.join(format!("{name}_labels.npy")).exists().then(|| npy(d, &format!("{name}_labels")));
    let x = npy(d, &format!("{name}_x"));
    m.forward(&x, &npy(d, &format!("{name}_t")), labels.as_ref()).unwrap()
}

#[test]
fn class_conditional_and_learned_variance_unets_match_diffusers() {
    let dir = fixtures("pixel");
    let d = dir.path();
    let load = |folder: &str, kind| unet::load(&d.join(folder), Device::Cpu, kind).unwrap();
    // Consistency-model ImageNet-64 layout: class table, AdaGN, ResNet resampling blocks.
    let reference = npy(d, "cm64_out");
    for folder in ["cm64", "cm64_bin", "cm64_sharded", "cm64_mixed"] {
        check(&format!("CM ImageNet-64 layout {folder}"), &pixel_forward(&load(folder, Kind::Float), d, "cm64"), &reference, FP32);
    }
    check("CM ImageNet-64 fp16 file → fp32", &pixel_forward(&load("cm64_fp16", Kind::Float), d, "cm64"), &npy(d, "cm64_fp16weights"), FP32);
    let half = load("cm64_fp16", Kind::Half);
    assert_eq!(half.weight_stats().kinds, ["Half"]);
    let theirs = rel_err(&npy(d, "cm64_fp16"), &reference);
    check("CM ImageNet-64 fp16", &pixel_forward(&half, d, "cm64"), &reference, LOW_PRECISION_FACTOR * theirs);
    let theirs = rel_err(&npy(d, "cm64_bf16"), &reference);
    check("CM ImageNet-64 bf16", &pixel_forward(&load("cm64", Kind::BFloat16), d, "cm64"), &reference, LOW_PRECISION_FACTOR * theirs);

    // As a Denoiser, the class labels are the condition; text embeddings are refused.
    let cm = load("cm64", Kind::Float);
    let (x, t) = (npy(d, "cm64_x"), npy(d, "cm64_t"));
    let out = Denoiser::forward(&cm, &x, &t, Some(&Condition::Labels(npy(d, "cm64_labels")))).unwrap();
    check("CM ImageNet-64 as a Denoiser", &out, &reference, FP32);
    let err = Denoiser::forward(&cm, &x, &t, Some(&Condition::Embeddings(Tensor::zeros([2, 4, 8], (Kind::Float, Device::Cpu)))))
        .err()
        .unwrap();
    assert!(err.to_string().ends_with("a UNet2DModel takes class labels, not text embeddings (those are for a UNet2DConditionModel)"), "{err}");
    let err = Denoiser::forward(&cm, &x, &t, None).err().unwrap();
    assert!(err.to_string().ends_with("the model is class-conditional: class labels are required"), "{err}");

    check("CM LSUN-256 layout", &pixel_forward(&load("cmlsun", Kind::Float), d, "cmlsun"), &npy(d, "cmlsun_out"), FP32);
    check("Fourier features + timestep class labels", &pixel_forward(&load("fourier", Kind::Float), d, "fourier"), &npy(d, "fourier_out"), FP32);
    check("identity class embeddings, one level", &pixel_forward(&load("ident", Kind::Float), d, "ident"), &npy(d, "ident_out"), FP32);

    // Learned variance: the raw output has 2 × in_channels channels (ε, then v) ...
    let var = load("var", Kind::Float);
    assert_eq!((var.config.in_channels, var.config.out_channels, var.config.learned_variance()), (3, 6, true));
    let raw = pixel_forward(&var, d, "var");
    assert_eq!(raw.size(), [2, 6, 16, 16]);
    check("learned-variance UNet raw output", &raw, &npy(d, "var_out"), FP32);
    // ... of which the Denoiser passes on the ε half, shaped like x.
    let var = unet::load(&d.join("var"), Device::Cpu, Kind::Float).unwrap();
    let eps = Denoiser::forward(&var, &npy(d, "var_x"), &npy(d, "var_t"), None).unwrap();
    assert_eq!(eps.size(), npy(d, "var_x").size());
    check("learned-variance ε half", &eps, &npy(d, "var_out").narrow(1, 0, 3), FP32);
}

#[test]
fn bad_folders_and_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |p: &Path, s: &[u8]| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap()
    };
    // A pixel UNet folder given to the conditional loader, and the other way round.
    write(&d.join("a/config.json"), br#"{"_class_name": "UNet2DModel", "block_out_channels": [32]}"#);
    write(&d.join("a/diffusion_pytorch_model.safetensors"), b"");
    let err = unet_cond::load(&d.join("a"), Device::Cpu, Kind::Float).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: _class_name is \"UNet2DModel\"; this loader reads \"UNet2DConditionModel\" (pixel-space UNet2DModel folders load with models::unet::load)",
            d.join("a/config.json").display()
        )
    );
    // A truncated safetensors file.
    write(&d.join("b/config.json"), br#"{"_class_name": "AutoencoderKL", "block_out_channels": [32], "up_block_types": ["UpDecoderBlock2D"]}"#);
    let mut st = 40u64.to_le_bytes().to_vec();
    st.extend_from_slice(br#"{"x": {"dtype": "F32", "shape": [4], "da"#);
    write(&d.join("b/diffusion_pytorch_model.safetensors"), &st);
    let err = vae::load(&d.join("b"), Device::Cpu, Kind::Float).err().unwrap();
    assert!(err.to_string().contains("diffusion_pytorch_model.safetensors: not a valid safetensors file"), "{err}");
    assert_eq!(err.exit_code(), 2);
    // A folder without weights.
    write(&d.join("c/config.json"), b"{}");
    let err = vae::load(&d.join("c"), Device::Cpu, Kind::Float).err().unwrap();
    assert!(err.to_string().ends_with("no diffusion_pytorch_model[.fp16].safetensors (or .bin, or a sharded .safetensors.index.json) in the folder"), "{err}");
}
