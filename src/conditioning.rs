//! Per-sample conditions and classifier-free guidance (the spec's `conditioning:` section).
//!
//! The prompt or class of sample i is a function of (seed, i) only, like its noise: batch size,
//! shards and resuming never change what a sample is conditioned on. A guidance scale w ≠ 1 runs
//! each model call once on [unconditional; conditional] (2B) and combines u + w·(c − u); w = 1 is
//! one plain conditional call, as diffusers' pipelines do (`do_classifier_free_guidance` is
//! `guidance_scale > 1`).
use crate::models::clip::PromptEncoder;
use crate::models::{Condition, Guidance};
use crate::{BenchError, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// What the samples are conditioned on, validated (prompt files read, labels checked).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionSource {
    /// Text prompts, drawn per sample from the file's list; the negative prompt is the
    /// unconditional half of guidance ("" = the empty prompt, as diffusers uses).
    Prompts {
        /// Counted by content through the plan's `conditioning.prompts` input.
        #[serde(skip)]
        file: PathBuf,
        #[serde(skip)]
        prompts: Vec<String>,
        negative_prompt: String,
    },
    /// Class labels below `num_classes`; the unconditional half is the null class `num_classes`
    /// (the extra embedding class-conditional guided models are trained with).
    Classes { labels: ClassLabels, num_classes: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassLabels {
    /// A seeded uniform draw per sample.
    Uniform,
    /// Sample i gets `list[i mod len]`.
    Cycle(Vec<i64>),
}

/// The condition chosen for one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice<'a> {
    Prompt(&'a str),
    Class(i64),
}

impl ConditionSource {
    pub fn choice(&self, seed: u64, sample: u64) -> Choice<'_> {
        match self {
            ConditionSource::Prompts { prompts, .. } => {
                Choice::Prompt(&prompts[crate::noise::uniform_index(seed, sample, prompts.len())])
            }
            ConditionSource::Classes { labels: ClassLabels::Uniform, num_classes } => {
                Choice::Class(crate::noise::uniform_index(seed, sample, *num_classes as usize) as i64)
            }
            ConditionSource::Classes { labels: ClassLabels::Cycle(list), .. } => Choice::Class(list[sample as usize % list.len()]),
        }
    }

    /// One `prompts.jsonl` line: what sample `index` was conditioned on.
    pub fn record(&self, seed: u64, index: u64) -> String {
        let value = match self.choice(seed, index) {
            Choice::Prompt(p) => serde_json::json!({"index": index, "prompt": p}),
            Choice::Class(k) => serde_json::json!({"index": index, "class": k}),
        };
        value.to_string()
    }
}

/// The validated `conditioning:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditioningPlan {
    pub source: ConditionSource,
    /// One cell per scale (default `[1.0]`: no guidance).
    pub guidance_scales: Vec<f64>,
}

/// Reads a prompts file: COCO captions JSON (`{"annotations": [{"caption": ...}]}`, in file
/// order), `.jsonl` (one `{"prompt": ...}` per line) or plain text (one prompt per line, blank
/// lines skipped). Errors name the file and what was expected.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = fs_err::read_to_string(path).map_err(|e| BenchError::file(path, format!("cannot read: {e}")))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let prompts: Vec<String> = match ext.as_str() {
        "json" => {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))?;
            let anns = v.get("annotations").and_then(|a| a.as_array()).ok_or_else(|| {
                BenchError::file(path, "expected COCO captions JSON: an object with an `annotations` list of {\"caption\": ...}")
            })?;
            anns.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.get("caption").and_then(|c| c.as_str()).map(|c| c.trim().to_owned()).ok_or_else(|| {
                        BenchError::file(path, format!("annotations[{i}] has no string `caption`"))
                    })
                })
                .collect::<Result<_>>()?
        }
        "jsonl" => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .map_err(|e| BenchError::file(path, format!("line {}: not valid JSON: {e}", i + 1)))?;
                v.get("prompt").and_then(|p| p.as_str()).map(str::to_owned).ok_or_else(|| {
                    BenchError::file(path, format!("line {}: expected {{\"prompt\": \"...\"}}", i + 1))
                })
            })
            .collect::<Result<_>>()?,
        _ => text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
    };
    if prompts.is_empty() {
        return Err(BenchError::file(path, "contains no prompts"));
    }
    Ok(prompts)
}

/// What a loaded model turns choices into.
pub enum Conditioner {
    /// Text embeddings from the pipeline's text encoder.
    Text(PromptEncoder),
    /// Integer class labels [B] for the network's class embedding.
    Classes,
}

impl Conditioner {
    /// The guidance of the batch of samples `first..first+count` at `scale`: the samples'
    /// conditions and the unconditional one (computed only when w ≠ 1).
    pub fn guidance(&self, source: &ConditionSource, seed: u64, first: u64, count: u64, scale: f64, device: Device) -> Result<Guidance> {
        let choices: Vec<Choice> = (first..first + count).map(|i| source.choice(seed, i)).collect();
        self.guidance_of(source, &choices, scale, device)
    }

    /// A valid condition for `b` samples (the empty prompt, class 0), for calls made before any
    /// sample is drawn (warm-up, probes).
    pub fn probe(&self, b: i64, device: Device) -> Result<Condition> {
        Ok(match self {
            Conditioner::Text(enc) => Condition::Embeddings(enc.embed(&vec![""; b as usize])?),
            Conditioner::Classes => Condition::Labels(Tensor::zeros([b], (tch::Kind::Int64, device))),
        })
    }

    /// [`Conditioner::guidance`] for given choices (`bench sample --prompt/--class`).
    pub fn guidance_of(&self, source: &ConditionSource, choices: &[Choice], scale: f64, device: Device) -> Result<Guidance> {
        let guided = scale != 1.0;
        let (cond, uncond) = match (self, source) {
            (Conditioner::Text(enc), ConditionSource::Prompts { negative_prompt, .. }) => {
                let prompts: Vec<&str> = choices.iter().map(|c| if let Choice::Prompt(p) = c { *p } else { "" }).collect();
                let cond = enc.embed(&prompts)?;
                let uncond = if guided { enc.embed(&vec![negative_prompt.as_str(); prompts.len()])? } else { cond.shallow_clone() };
                (Condition::Embeddings(cond), Condition::Embeddings(uncond))
            }
            (Conditioner::Classes, ConditionSource::Classes { num_classes, .. }) => {
                let labels: Vec<i64> = choices.iter().map(|c| if let Choice::Class(k) = c { *k } else { 0 }).collect();
                let cond = Tensor::from_slice(&labels).to_device(device);
                let uncond = Tensor::full([labels.len() as i64], *num_classes, (tch::Kind::Int64, device));
                (Condition::Labels(cond), Condition::Labels(uncond))
            }
            (Conditioner::Text(_), ConditionSource::Classes { .. }) => {
                return Err(BenchError::user("conditioning.class_labels: the model is text-conditioned; give it `prompts`"));
            }
            (Conditioner::Classes, ConditionSource::Prompts { .. }) => {
                return Err(BenchError::user("conditioning.prompts: the model has no text encoder"));
            }
        };
        Ok(Guidance { cond, uncond, scale })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_samples_condition_depends_on_seed_and_index_only() {
        let prompts: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        let s = ConditionSource::Prompts { file: PathBuf::new(), prompts, negative_prompt: String::new() };
        let draws: Vec<String> = (0..2000).map(|i| s.record(3, i)).collect();
        assert_eq!(draws[5], s.record(3, 5));
        // Pinned: changing the draw would change every conditioned result.
        assert_eq!(draws[..3], [r#"{"index":0,"prompt":"p0"}"#, r#"{"index":1,"prompt":"p3"}"#, r#"{"index":2,"prompt":"p5"}"#]);
        // Every prompt is drawn, near uniformly (2000/7 ≈ 286 each).
        for k in 0..7 {
            let n = draws.iter().filter(|d| d.contains(&format!("\"p{k}\""))).count();
            assert!((220..=350).contains(&n), "prompt {k}: {n}");
        }
        assert_ne!((0..50).map(|i| s.record(4, i)).collect::<Vec<_>>(), draws[..50]);
        let c = ConditionSource::Classes { labels: ClassLabels::Cycle(vec![3, 1]), num_classes: 10 };
        assert_eq!([c.choice(0, 0), c.choice(9, 3)], [Choice::Class(3), Choice::Class(1)]);
    }

    #[test]
    fn prompt_files_in_each_format() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| {
            let p = d.path().join(n);
            std::fs::write(&p, t).unwrap();
            p
        };
        let coco = w("c.json", r#"{"annotations": [{"image_id": 1, "caption": " A cat. "}, {"caption": "A dog"}]}"#);
        assert_eq!(read_prompts(&coco).unwrap(), ["A cat.", "A dog"]);
        assert_eq!(read_prompts(&w("p.jsonl", "{\"prompt\": \"x\"}\n\n{\"prompt\": \"y z\"}\n")).unwrap(), ["x", "y z"]);
        assert_eq!(read_prompts(&w("p.txt", "one\n\n two \n")).unwrap(), ["one", " two"]);
        let e = read_prompts(&w("b.jsonl", "{\"text\": 1}\n")).unwrap_err().to_string();
        assert!(e.ends_with("b.jsonl: line 1: expected {\"prompt\": \"...\"}"), "{e}");
        let e = read_prompts(&w("e.txt", "\n \n")).unwrap_err().to_string();
        assert!(e.ends_with("e.txt: contains no prompts"), "{e}");
    }
}
