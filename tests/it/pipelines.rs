//! Latent and conditional pipelines end to end through the CLI, against diffusers' own pipelines
//! on tiny seeded random-weight folders (tests/it/py/sd_pipeline.py): StableDiffusionPipeline
//! (SD1-like and SD2-like: v-prediction, linear projections, upcast attention, "!" padding) with
//! and without classifier-free guidance and a negative prompt under four schedulers, LDMPipeline
//! (VQModel decoder), and a class-conditional UNet2DModel with guidance against a hand-written
//! diffusers loop. Bound: ≤ 1e-4 relative L2 on decoded images (the end-to-end target).
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

/// A spec for `model` whose one sampler is the case's diffusers scheduler config.
fn spec(d: &Path, tag: &str, model: &str, conditioning: &str, case: &Value) -> std::path::PathBuf {
    let sched = d.join(format!("{tag}.scheduler.json"));
    std::fs::write(&sched, case["scheduler_config"].to_string()).unwrap();
    let path = d.join(format!("{tag}.yaml"));
    let text = format!(
        "name: {tag}\nmodel: {{kind: diffusers, path: {model}}}\n{conditioning}samplers:\n  - {{diffusers_config: {}}}\nsteps: {}\nsamples: 2\ndevice: cpu\nmetrics: {{}}\n",
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
        let spec = spec(d, &format!("case{i}"), &d.join(pipeline).display().to_string(), &conditioning, case);
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
}

#[test]
fn ldm_and_class_conditional_pipelines_match_diffusers() {
    let dir = fixtures(&["ldm", "classcond"]);
    let d = dir.path();
    for (i, case) in cases(d).iter().enumerate() {
        let latents = d.join(case["latents"].as_str().unwrap());
        let out = d.join(format!("case{i}.npy"));
        if case["pipeline"] == "ldm" {
            let spec = spec(d, "ldm", &d.join("ldm").display().to_string(), "", case);
            sample(&spec, &latents, &out, &[]);
            check("LDMPipeline", &Tensor::read_npy(&out).unwrap(), &npy(d, "ldm_images.npy"), IMAGES);
            continue;
        }
        let w = case["guidance_scale"].as_f64().unwrap();
        let conditioning = format!("conditioning: {{class_labels: uniform, num_classes: 10, guidance_scale: {w}}}\n");
        let spec = spec(d, &format!("classcond{i}"), &d.join("classcond").display().to_string(), &conditioning, case);
        sample(&spec, &latents, &out, &["--class", "3", "--class", "7"]);
        check(&format!("class-conditional w={w}"), &Tensor::read_npy(&out).unwrap(), &npy(d, case["samples"].as_str().unwrap()), IMAGES);
    }
}
