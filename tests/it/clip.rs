//! Native CLIP (tokenizer, text tower, vision tower, image preprocessing, CLIP score) against
//! transformers 5 on seeded random weights and open_clip's real BPE vocabulary
//! (fixtures: tests/it/py/clip_fixtures.py).
//!
//! fp32 bounds: both sides run the same float32 ops in a different order (attention kernel,
//! fused LayerNorm), each ≈ 6e-8 relative per op over accumulations of a few hundred terms and
//! a handful of layers, so 1e-5 relative L2 leaves a wide margin while catching any real
//! difference (a wrong activation, mask or pooling index moves the output by O(1)).
use crate::common::*;
use samplerbench::metrics::clip_score::{ClipScoreStats, ClipScorer};
use samplerbench::metrics::preprocess::resize_bicubic_pil_u8;
use samplerbench::models::clip::{ClipImageProcessor, ClipModel, ClipResize, ClipTextModel, ClipTokenizer};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn fixtures(mode: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_python(include_str!("py/clip_fixtures.py"), &[mode, dir.path().to_str().unwrap()]);
    dir
}

fn npy(dir: &Path, name: &str) -> Tensor {
    Tensor::read_npy(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

fn prompts(dir: &Path) -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("prompts.json")).unwrap()).unwrap()
}

/// Token ids identical to transformers' CLIPTokenizer (padding="max_length", truncation=True)
/// on every prompt, for SD 1.x and 2.x folders, the added_tokens_decoder layout and folders
/// re-saved by transformers 5.
#[test]
fn tokenizer_ids_match_transformers() {
    let dir = fixtures("tokenizer");
    let d = dir.path();
    let prompts = prompts(d);
    assert!(prompts.len() >= 50, "{} prompts", prompts.len());
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    for variant in ["sd1", "sd2", "decoder", "sd1_resaved", "sd2_resaved"] {
        let tok = ClipTokenizer::load(&d.join(variant)).unwrap();
        let exp = &expected[variant];
        assert_eq!(tok.max_length(), 77);
        assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (exp["bos_id"].as_i64().unwrap(), exp["eos_id"].as_i64().unwrap(), exp["pad_id"].as_i64().unwrap()), "{variant}");
        let mut mismatches = vec![];
        for (i, p) in prompts.iter().enumerate() {
            let want: Vec<i64> = exp["ids"][i].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
            let (ids, truncated) = tok.encode(p).unwrap();
            if ids != want || truncated != exp["truncated"][i].as_bool().unwrap() {
                mismatches.push(format!("{i} {p:?}:\n  ours {ids:?} {truncated}\n  want {want:?}"));
            }
        }
        assert!(mismatches.is_empty(), "{variant}: {} of {} prompts differ:\n{}", mismatches.len(), prompts.len(), mismatches.join("\n"));
        let batch = tok.encode_batch(&prompts).unwrap();
        assert_eq!(batch.size(), [prompts.len() as i64, 77]);
        assert_eq!(batch.get(7), Tensor::from_slice(&tok.encode(&prompts[7]).unwrap().0));
    }
    // SD 2's pad "!" is a special token: a "!" in the prompt is id 0 there, "!</w>" (256) in SD 1.
    let (sd1, sd2) = (ClipTokenizer::load(&d.join("sd1")).unwrap(), ClipTokenizer::load(&d.join("sd2")).unwrap());
    assert_eq!(sd1.encode("wow!").unwrap().0[..4], [49406, 2781, 256, 49407]);
    assert_eq!(sd2.encode("wow!").unwrap().0[..5], [49406, 2781, 0, 49407, 0]);
}

/// SD 1.x- and 2.x-like text encoders in every layout: last_hidden_state, the pooled end-token
/// state and clip_skip against transformers' CLIPTextModel; the fp16 variant loads as fp16.
#[test]
fn sd_text_encoders_match_transformers() {
    let dir = fixtures("text");
    let d = dir.path();
    let prompts = prompts(d);
    for name in ["sd1", "sd2"] {
        let ids = npy(d, &format!("{name}_ids.npy"));
        // tokenize → encode, as the pipeline will call it.
        let tok = ClipTokenizer::load(&d.join(format!("tok_{name}"))).unwrap();
        assert_eq!(tok.encode_batch(&prompts).unwrap(), ids, "{name} token ids");
        let (last, pooled, skip1) = (npy(d, &format!("{name}_last.npy")), npy(d, &format!("{name}_pooled.npy")), npy(d, &format!("{name}_skip1.npy")));
        for layout in ["st", "bin", "old_st"] {
            let model = ClipTextModel::load(&d.join(format!("{name}_{layout}")), Device::Cpu, Kind::Float).unwrap();
            let out = model.forward(&ids).unwrap();
            assert_eq!(out.last_hidden_state.size(), last.size());
            let errs = [
                rel_err(&out.last_hidden_state, &last),
                rel_err(&out.pooled, &pooled),
                rel_err(&model.forward_clip_skip(&ids, 1).unwrap().last_hidden_state, &skip1),
            ];
            eprintln!("{name} {layout}: last {:.2e}, pooled {:.2e}, clip_skip=1 {:.2e}", errs[0], errs[1], errs[2]);
            assert!(errs.iter().all(|e| *e <= 1e-5), "{name} {layout}: {errs:?}");
        }
        // The pooled state is the one at the first end token (SD 2 pads with "!", so the two
        // pooling rules of transformers both land there).
        let pos = npy(d, &format!("{name}_eos_pos.npy"));
        let b = ids.size()[0];
        let at_eos = last.index(&[Some(Tensor::arange(b, (Kind::Int64, Device::Cpu))), Some(pos)]);
        assert!(rel_err(&pooled, &at_eos) == 0.0, "{name}: transformers pooled elsewhere");

        // fp16: the fp16 variant is chosen and held as fp16. Both sides round weights and
        // activations to fp16 (unit roundoff 4.9e-4) through a few layers; 1e-2 relative bounds
        // that, and a wrong op would be O(1) off.
        let model = ClipTextModel::load(&d.join(format!("{name}_old_st")), Device::Cpu, Kind::Half).unwrap();
        assert!(model.describe().ends_with("model.fp16.safetensors"), "{}", model.describe());
        let out = model.forward(&ids).unwrap();
        assert_eq!(out.last_hidden_state.kind(), Kind::Half);
        let (e32, e16) = (rel_err(&out.last_hidden_state, &last), rel_err(&out.last_hidden_state, &npy(d, &format!("{name}_last_fp16.npy"))));
        eprintln!("{name} fp16: vs fp32 reference {e32:.2e}, vs transformers fp16 {e16:.2e}");
        assert!(e32 <= 1e-2 && e16 <= 1e-2, "{name} fp16: {e32} {e16}");
        // A bf16 run reads the fp32 file, converted tensor by tensor.
        let model = ClipTextModel::load(&d.join(format!("{name}_old_st")), Device::Cpu, Kind::BFloat16).unwrap();
        assert!(model.describe().ends_with("/model.safetensors"), "{}", model.describe());
        assert_eq!(model.forward(&ids).unwrap().last_hidden_state.kind(), Kind::BFloat16);
    }
}

/// The CLIPModel behind CLIP score: preprocessing (both resize backends, bit for bit), text and
/// image embeddings, and the score of (image, prompt) pairs end to end.
#[test]
fn clip_model_and_clip_score_match_transformers() {
    let dir = fixtures("clip");
    let d = dir.path();
    let prompts = prompts(d);
    let images: Vec<Tensor> = (0..5).map(|i| npy(d, &format!("image{i}.npy")).unsqueeze(0)).collect();
    let tv = ClipImageProcessor::load(&d.join("clip"), 224, ClipResize::Torchvision).unwrap();
    let pil = ClipImageProcessor::load(&d.join("clip"), 224, ClipResize::Pil).unwrap();
    let mut pixels_tv = vec![];
    for (i, img) in images.iter().enumerate() {
        let ours = tv.preprocess(img).unwrap();
        let want = npy(d, &format!("pixels_tv{i}.npy"));
        assert_eq!(ours.size(), [1, 3, 224, 224]);
        assert_eq!(max_abs(&ours, &want), 0.0, "image {i}: torchvision preprocessing not bit-identical");
        pixels_tv.push(want);
        // Pillow's resampler alone is reproduced bit for bit.
        let (h, w) = (img.size()[2], img.size()[3]);
        let (rh, rw) = pil.resized_size(h, w);
        let resized = resize_bicubic_pil_u8(img, rh as usize, rw as usize).unwrap();
        assert_eq!(resized, npy(d, &format!("pil_resized{i}.npy")).unsqueeze(0), "image {i}: PIL resize");
        // After it, PIL's rescale/normalise in f64→f32 numpy order; bit-identical too.
        let e = max_abs(&pil.preprocess(img).unwrap(), &npy(d, &format!("pixels_pil{i}.npy")));
        assert_eq!(e, 0.0, "image {i}: PIL preprocessing");
        let differ = tv.resize_and_crop(img).unwrap().ne_tensor(&pil.resize_and_crop(img).unwrap()).sum(Kind::Int64).int64_value(&[]);
        eprintln!("image {i} ({h}×{w}): torchvision and PIL resizes differ in {differ} of {} uint8 values", 3 * 224 * 224);
    }
    let pixels_tv = Tensor::cat(&pixels_tv, 0);
    let ids = npy(d, "ids.npy");
    assert_eq!(ClipTokenizer::load(&d.join("clip")).unwrap().encode_batch(&prompts).unwrap(), ids);
    for (folder, kind) in [("clip", Kind::Float), ("clip_bin", Kind::Float), ("clip", Kind::Half)] {
        let model = ClipModel::load(&d.join(folder), Device::Cpu, kind).unwrap();
        let text = model.text.text_embeds(&ids).unwrap();
        let image = model.vision.image_embeds(&pixels_tv).unwrap();
        let (et, ei) = (rel_err(&text, &npy(d, "text_embeds.npy")), rel_err(&image, &npy(d, "image_embeds_tv.npy")));
        eprintln!("{folder} {kind:?}: text embeds {et:.2e}, image embeds {ei:.2e}");
        if kind == Kind::Float {
            assert!(et <= 1e-5 && ei <= 1e-5, "{folder}: {et} {ei}");
            assert!((model.logit_scale - npy(d, "logit_scale.npy").double_value(&[])).abs() < 1e-4);
        } else {
            // fp16 weights and activations (see the text-encoder test for the bound).
            assert_eq!(image.kind(), Kind::Half);
            let e16 = rel_err(&image, &npy(d, "image_embeds_fp16.npy"));
            eprintln!("fp16 image embeds vs transformers fp16: {e16:.2e}");
            assert!(et <= 1e-2 && ei <= 1e-2 && e16 <= 1e-2, "fp16: {et} {ei} {e16}");
        }
    }
    // CLIP score end to end: our tokenizer, preprocessing and model against transformers +
    // torchmetrics' formula. 100·cos with cos from f32 embeddings (error ~1e-6) → 1e-3 absolute.
    for (resize, reference) in [(ClipResize::Torchvision, "scores_tv.npy"), (ClipResize::Pil, "scores_pil.npy")] {
        let scorer = ClipScorer::load_with(&d.join("clip"), Device::Cpu, Kind::Float, resize).unwrap();
        let mut stats = ClipScoreStats::default();
        let mut ours = vec![];
        for (img, p) in images.iter().zip(&prompts) {
            let s = scorer.scores_for_prompts(img, &[p]).unwrap();
            stats.add(&s).unwrap();
            ours.push(s);
        }
        let ours = Tensor::cat(&ours, 0);
        let want = npy(d, reference).to_kind(Kind::Double);
        let e = max_abs(&ours, &want);
        eprintln!("CLIP score ({resize:?}): ours {:?}, max |Δ| vs transformers {e:.2e}", Vec::<f64>::try_from(&ours).unwrap());
        assert!(e <= 1e-3, "{resize:?}: {e}");
        let mean = want.mean(Kind::Double).double_value(&[]);
        assert!((stats.torchmetrics().unwrap() - mean.max(0.0)).abs() <= 1e-3);
        assert_eq!(stats.count, 5);
    }
    let resize_effect = max_abs(&npy(d, "scores_tv.npy"), &npy(d, "scores_pil.npy"));
    eprintln!("CLIP score: torchvision vs PIL resize changes per-pair scores by up to {resize_effect:.2e}");
    // Float samples in [-1,1] score as the uint8 images they quantise to.
    let scorer = ClipScorer::load(&d.join("clip"), Device::Cpu, Kind::Float).unwrap();
    let as_float = images[3].to_kind(Kind::Float) / 127.5 - 1.0;
    assert_eq!(scorer.scores_for_prompts(&as_float, &[&prompts[3]]).unwrap(), scorer.scores_for_prompts(&images[3], &[&prompts[3]]).unwrap());
}

/// Missing/unexpected keys, unsupported options and missing files are refused with messages
/// naming the file and the problem.
#[test]
fn bad_clip_folders_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = serde_json::json!({
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 8,
        "intermediate_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10,
        "max_position_embeddings": 5, "hidden_act": "quick_gelu"
    });
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    let z = |s: &[i64]| Tensor::zeros(s, (Kind::Float, Device::Cpu));
    let mut weights: Vec<(String, Tensor)> = vec![
        ("text_model.embeddings.token_embedding.weight".into(), z(&[10, 8])),
        ("text_model.embeddings.position_embedding.weight".into(), z(&[5, 8])),
        ("text_model.embeddings.position_ids".into(), Tensor::arange(5, (Kind::Int64, Device::Cpu)).unsqueeze(0)),
        ("text_model.final_layer_norm.weight".into(), z(&[8])),
        ("text_model.final_layer_norm.bias".into(), z(&[9])),
        ("text_model.extra.weight".into(), z(&[1])),
    ];
    for p in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"] {
        weights.push((format!("text_model.encoder.layers.0.{p}.weight"), z(&[8, 8])));
        weights.push((format!("text_model.encoder.layers.0.{p}.bias"), z(&[8])));
    }
    Tensor::write_safetensors(&weights, d.join("model.safetensors")).unwrap();
    let err = ClipTextModel::load(d, Device::Cpu, Kind::Float).err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: weights do not match the CLIP text model config; missing keys: text_model.encoder.layers.0.layer_norm1.weight, ",
            d.join("model.safetensors").display()
        )),
        "{msg}"
    );
    assert!(msg.contains("wrong shapes: text_model.final_layer_norm.bias (file [9], expected [8]); unexpected keys: text_model.extra.weight"), "{msg}");
    assert_eq!(err.exit_code(), 2);

    let mut bad = config.clone();
    bad["hidden_act"] = "gelu_new".into();
    std::fs::write(d.join("config.json"), bad.to_string()).unwrap();
    let err = ClipTextModel::load(d, Device::Cpu, Kind::Float).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!("{}: hidden_act = \"gelu_new\" is not supported (supported: \"quick_gelu\", \"gelu\")", d.join("config.json").display())
    );
    let mut bad = config.clone();
    bad["model_type"] = "siglip_text_model".into();
    std::fs::write(d.join("config.json"), bad.to_string()).unwrap();
    let err = ClipTextModel::load(d, Device::Cpu, Kind::Float).err().unwrap();
    assert!(err.to_string().ends_with("model_type = \"siglip_text_model\" is not supported (supported: \"clip_text_model\", \"clip\")"), "{err}");
    // A text-only folder is not a CLIP-score model.
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    let err = ClipModel::load(d, Device::Cpu, Kind::Float).err().unwrap();
    assert!(err.to_string().contains("CLIP score needs a full CLIPModel folder"), "{err}");
    // Tokenizer folder without merges.txt.
    std::fs::write(d.join("vocab.json"), "{}").unwrap();
    let err = ClipTokenizer::load(d).err().unwrap();
    assert_eq!(err.to_string(), format!("{}: missing: a CLIP tokenizer folder needs vocab.json and merges.txt", d.join("merges.txt").display()));
    assert_eq!(err.exit_code(), 2);
    // No weights at all.
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let err = ClipTextModel::load(d, Device::Cpu, Kind::Float).err().unwrap();
    assert!(err.to_string().ends_with("no model[.fp16].safetensors (or pytorch_model.bin, or a sharded .safetensors.index.json) in the folder"), "{err}");
}
