//! Latent and conditional pipelines end to end through the CLI, against diffusers' own pipelines
//! on tiny seeded random-weight folders (tests/it/py/sd_pipeline.py): StableDiffusionPipeline
//! (SD1-like and SD2-like: v-prediction, linear projections, upcast attention, "!" padding) with
//! and without classifier-free guidance and a negative prompt under four schedulers, LDMPipeline
//! (VQModel decoder), and a class-conditional UNet2DModel with guidance against a hand-written
//! diffusers loop. Bound: ≤ 1e-4 relative L2 on decoded images (the issue's end-to-end target).
use crate::common::*;
use serde_json::Value;
use std::path::Path;
use tch::Tensor;

const IMAGES: f64 = 1e-4;

fn fixtures(which: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for w in which {
        run_python(include_str!("py/sd_pipeline.py"), &[dir.path().to_str().unwrap(), w]);
    }
    dir
}

fn cases(d: &Path) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(&std::fs::read_to_string(d.join("cases.json")).unwrap()).unwrap()
}

fn npy(d: &Path, name: &str) -> Tensor {
    Tensor::read_npy(d.join(name)).unwrap()
}

/// A diffusers model folder's `model:` map.
fn diffusers(dir: &Path) -> String {
    format!("{{kind: diffusers, path: {}}}", dir.display())
}

/// A spec for `model` (its YAML, plus any top-level lines) whose one sampler is the case's
/// diffusers scheduler config.
fn spec(d: &Path, tag: &str, model: &str, conditioning: &str, case: &Value) -> std::path::PathBuf {
    let sched = d.join(format!("{tag}.scheduler.json"));
    std::fs::write(&sched, case["scheduler_config"].to_string()).unwrap();
    let path = d.join(format!("{tag}.yaml"));
    let text = format!(
        "name: {tag}\nmodel: {model}\n{conditioning}samplers:\n  - {{diffusers_config: {}}}\nsteps: {}\nsamples: 2\ndevice: cpu\nmetrics: {{}}\n",
        sched.display(),
        case["steps"]
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn sample(spec: &Path, noise: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["sample", spec.to_str().unwrap(), "--noise", noise.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = bench(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn check(what: &str, ours: &Tensor, reference: &Tensor, bound: f64) -> f64 {
    assert_eq!(ours.size(), reference.size(), "{what}: shape");
    let e = rel_err(ours, reference);
    eprintln!("{what}: relative L2 {e:.2e}");
    assert!(e <= bound, "{what}: relative L2 error {e} > {bound}");
    e
}

#[test]
fn stable_diffusion_pipelines_match_diffusers_with_and_without_guidance() {
    let dir = fixtures(&["sd1", "sd2"]);
    let d = dir.path();
    let mut worst: f64 = 0.0;
    let all = cases(d);
    assert_eq!(all.len(), 28, "16 SD1 and 12 SD2 cases");
    for (i, case) in all.iter().enumerate() {
        let prompts: Vec<&str> = case["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let pipeline = case["pipeline"].as_str().unwrap();
        let prompts_file = d.join(format!("{pipeline}.prompts.txt"));
        std::fs::write(&prompts_file, prompts.join("\n")).unwrap();
        let w = case["guidance_scale"].as_f64().unwrap();
        let conditioning = format!("conditioning: {{prompts: {}, guidance_scale: {w}}}\n", prompts_file.display());
        let spec = spec(d, &format!("case{i}"), &diffusers(&d.join(pipeline)), &conditioning, case);
        let (out, latents) = (d.join(format!("case{i}.npy")), d.join(format!("case{i}.latents.npy")));
        let negative = case["negative_prompt"].as_str().unwrap();
        let mut args = vec!["--negative-prompt", negative, "--latents-out", latents.to_str().unwrap()];
        for p in &prompts {
            args.extend(["--prompt", p]);
        }
        sample(&spec, &d.join(case["latents"].as_str().unwrap()), &out, &args);
        let what = format!("{pipeline} {} w={w} negative={negative:?}", case["scheduler"]);
        worst = worst.max(check(&what, &Tensor::read_npy(&out).unwrap(), &npy(d, case["images"].as_str().unwrap()), IMAGES));
        check(&format!("{what} latents"), &Tensor::read_npy(&latents).unwrap(), &npy(d, case["latents_out"].as_str().unwrap()), IMAGES);
    }
    eprintln!("worst relative L2 over {} cases: {worst:.2e}", all.len());

    // The TorchScript route: the same UNet traced as (x, t, embeddings) → ε and the VAE decode as
    // a TorchScript decoder, the prompts encoded by the pipeline folder's tokenizer and text encoder.
    let case = all.iter().find(|c| c["pipeline"] == "sd1" && c["scheduler"] == "pndm" && c["guidance_scale"] == 7.5 && c["negative_prompt"] == "blurry").unwrap();
    let prompts: Vec<&str> = case["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let ts = d.join("sd1_ts");
    let model = format!(
        "{{kind: torchscript, path: {}, shape: [4, 8, 8], decoder: {}, text_encoder: {}}}\nschedule: {{kind: scaled_linear, beta_start: 0.00085, beta_end: 0.012}}",
        ts.join("unet.pt").display(),
        ts.join("decoder.pt").display(),
        d.join("sd1").display()
    );
    let conditioning = format!("conditioning: {{prompts: {}, guidance_scale: 7.5}}\n", d.join("sd1.prompts.txt").display());
    let spec = spec(d, "torchscript", &model, &conditioning, case);
    let out = d.join("torchscript.npy");
    let mut args = vec!["--negative-prompt", "blurry"];
    for p in &prompts {
        args.extend(["--prompt", p]);
    }
    sample(&spec, &d.join(case["latents"].as_str().unwrap()), &out, &args);
    check("TorchScript UNet + decoder + text_encoder", &Tensor::read_npy(&out).unwrap(), &npy(d, case["images"].as_str().unwrap()), IMAGES);
}

#[test]
fn ldm_and_class_conditional_pipelines_match_diffusers() {
    let dir = fixtures(&["ldm", "classcond"]);
    let d = dir.path();
    for (i, case) in cases(d).iter().enumerate() {
        let latents = d.join(case["latents"].as_str().unwrap());
        let out = d.join(format!("case{i}.npy"));
        if case["pipeline"] == "ldm" {
            let spec = spec(d, "ldm", &diffusers(&d.join("ldm")), "", case);
            sample(&spec, &latents, &out, &[]);
            check("LDMPipeline", &Tensor::read_npy(&out).unwrap(), &npy(d, "ldm_images.npy"), IMAGES);
            continue;
        }
        let w = case["guidance_scale"].as_f64().unwrap();
        let conditioning = format!("conditioning: {{class_labels: uniform, num_classes: 10, guidance_scale: {w}}}\n");
        let spec = spec(d, &format!("classcond{i}"), &diffusers(&d.join("classcond")), &conditioning, case);
        sample(&spec, &latents, &out, &["--class", "3", "--class", "7"]);
        check(&format!("class-conditional w={w}"), &Tensor::read_npy(&out).unwrap(), &npy(d, case["samples"].as_str().unwrap()), IMAGES);
    }
    // Conditions that do not fit the model are one-line user errors before any sampling.
    let all = cases(d);
    let refused = |tag: &str, model: &str, conditioning: &str, extra: &[&str], expected: &str| {
        let case = all.iter().find(|c| c["pipeline"] == model).unwrap();
        let spec = spec(d, tag, &diffusers(&d.join(model)), conditioning, case);
        let noise = d.join(case["latents"].as_str().unwrap());
        let out = d.join("refused.npy");
        let mut args = vec!["sample", spec.to_str().unwrap(), "--noise", noise.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = bench(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.trim_end().ends_with(expected) && err.trim().lines().count() == 1, "{tag}: {err}");
    };
    let config = |m: &str| d.join(m).join("config.json").display().to_string();
    refused("nocond", "classcond", "", &[], &format!(
        "{}: the UNet is class-conditional (11 class embeddings): add `conditioning: {{class_labels: uniform, num_classes: N}}` to the spec",
        config("classcond")
    ));
    refused("nonull", "classcond", "conditioning: {class_labels: uniform, num_classes: 11, guidance_scale: 4.0}\n", &[], &format!(
        "{}: num_class_embeds = 11 cannot embed conditioning.num_classes = 11: guidance needs the null class 11 as well",
        config("classcond")
    ));
    refused("uncond", "ldm", "conditioning: {class_labels: [1], num_classes: 10}\n", &[], &format!(
        "{}: the UNet is unconditional (no num_class_embeds): remove `conditioning:` from the spec",
        config("ldm/unet")
    ));
    refused("badclass", "classcond", "conditioning: {class_labels: uniform, num_classes: 10}\n", &["--class", "10"], "--class 10: outside 0..10 (conditioning.num_classes)");
    refused("prompt", "classcond", "conditioning: {class_labels: uniform, num_classes: 10}\n", &["--prompt", "a cat"], "--prompt: the model is class-conditional; use --class");
}

/// The CLIP score of saved samples against their recorded prompts, by transformers (CLIPProcessor
/// from the PNGs, torchmetrics' 100·cos averaged, clamped at 0).
const CLIP_ORACLE: &str = r#"
import json, os, sys
import numpy as np, torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor
clip, samples = sys.argv[1], sys.argv[2]
model, proc = CLIPModel.from_pretrained(clip).eval(), CLIPProcessor.from_pretrained(clip)
records = [json.loads(l) for l in open(os.path.join(samples, "prompts.jsonl"), encoding="utf-8")]
images = [torch.from_numpy(np.asarray(Image.open(os.path.join(samples, f"{r['index']:05}.png"))).transpose(2, 0, 1).copy()) for r in records]
with torch.no_grad():
    ids = proc.tokenizer([r["prompt"] for r in records], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    a = model.get_image_features(proc(images=images, return_tensors="pt").pixel_values).pooler_output.double()
    b = model.get_text_features(ids).pooler_output.double()
s = 100 * ((a / a.norm(dim=-1, keepdim=True)) * (b / b.norm(dim=-1, keepdim=True))).sum(-1)
print(max(s.mean().item(), 0.0))
"#;

#[test]
fn shipped_guidance_spec_runs_with_fid_and_clip_score_and_reports_guidance() {
    let root = tempfile::tempdir().unwrap();
    let weights = root.path().join("target").join("ci-weights");
    run_python(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/python/make_ci_weights.py")).unwrap(), &[weights.to_str().unwrap()]);
    run_python(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/python/make_sd_tiny.py")).unwrap(), &[weights.to_str().unwrap()]);
    std::fs::create_dir_all(root.path().join("experiments")).unwrap();
    let spec = root.path().join("experiments").join("sd_guidance.yaml");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/sd_guidance.yaml"), &spec).unwrap();
    let o = bench(&["run", spec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = root.path().join("target").join("bench-sd-guidance");
    let rows = samplerbench::results::read_results(&out).unwrap();
    assert_eq!(rows.len(), 4 * 2 * 3, "samplers × steps × guidance scales");
    let mut scales: Vec<f64> = rows.iter().filter_map(|r| r.guidance_scale).collect();
    scales.sort_by(f64::total_cmp);
    scales.dedup();
    assert_eq!(scales, [1.0, 3.0, 7.5]);
    for r in &rows {
        let twice = r.guidance_scale != Some(1.0);
        assert_eq!(r.unet_evals, if twice { 2 * r.nfe } else { r.nfe }, "{} S={} w={:?}", r.sampler, r.steps, r.guidance_scale);
        assert!(r.metric("fid").is_some_and(f64::is_finite) && r.metric("clip_score").is_some_and(f64::is_finite), "{r:?}");
    }
    // PLMS (SD's "PNDM") makes S + 1 evaluations; DDIM, LMS and DPM-Solver++ 2M make S.
    let plms = rows.iter().find(|r| r.sampler == "plms" && r.steps == 10).unwrap();
    assert_eq!(plms.nfe, 11);
    // The run's CLIP score of one guided cell equals transformers' on its saved samples and prompts.
    let cell = rows.iter().find(|r| r.sampler == "ddim" && r.steps == 5 && r.guidance_scale == Some(7.5)).unwrap();
    let samples = out.join("samples").join(&cell.cell_hash);
    let lines = std::fs::read_to_string(samples.join("prompts.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let prompts = std::fs::read_to_string(weights.join("sd_tiny").join("prompts.txt")).unwrap();
    for l in lines.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(prompts.lines().any(|p| p == v["prompt"].as_str().unwrap()), "{l}");
    }
    let oracle: f64 = run_python(CLIP_ORACLE, &[weights.join("clip").to_str().unwrap(), samples.to_str().unwrap()]).trim().parse().unwrap();
    let ours = cell.metric("clip_score").unwrap();
    eprintln!("clip_score: bench {ours} transformers {oracle}");
    assert!((ours - oracle).abs() <= 1e-4 * oracle.abs(), "clip_score {ours} vs transformers {oracle}");
    // The report has the guidance table and both guidance plots.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Guidance") && report.contains("| sampler | S | w=1.0 | w=3.0 | w=7.5 |"), "{report}");
    for plot in ["g1-guidance.png", "g1-clip_fid.svg"] {
        assert!(out.join("plots").join(plot).is_file(), "{plot}");
    }
}
