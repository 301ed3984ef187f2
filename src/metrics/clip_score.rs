//! CLIP score of text-to-image samples (Hessel et al. 2021, "CLIPScore"; the form torchmetrics
//! computes and text-to-image papers report): for each (image, prompt) pair,
//! 100 · cos(E_image, E_text) with CLIP's projected embeddings, averaged over the pairs.
//!
//! torchmetrics (`CLIPScore.compute`, `functional.clip_score`) averages the raw per-pair scores
//! and clamps the *mean* at 0: max(mean(100·cos), 0). Its docstring (and the CLIPScore paper,
//! with weight 2.5 instead of 100) clamp each pair: mean(max(100·cos, 0)). The two agree whenever
//! no pair has a negative cosine, which is the normal case for a trained CLIP; [`ClipScoreStats`]
//! keeps both sums so either can be reported.
//!
//! Prompts are tokenized with truncation to 77 tokens keeping the end token (as SD pipelines
//! tokenize). torchmetrics instead tokenizes untruncated and slices the ids to 77, which drops the
//! end token of a longer caption and pools CLIP at another position; scores of captions over 75
//! tokens therefore differ from torchmetrics by design.
use crate::metrics::stats::{npz_writer, open_npz, read_array, read_f64, write_npz};
use crate::metrics::{Accumulator, Batch, Better, ColumnDef, FinishContext, Metric, MetricDef, Tolerance};
use crate::models::clip::{ClipImageProcessor, ClipModel, ClipResize, ClipTokenizer};
use ndarray::{Array1, Ix1};
use crate::{BenchError, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A CLIP model with its tokenizer and image preprocessing, from one transformers CLIP folder
/// (e.g. openai/clip-vit-large-patch14, torchmetrics' default).
pub struct ClipScorer {
    model: ClipModel,
    tokenizer: ClipTokenizer,
    processor: ClipImageProcessor,
    source: String,
}

impl ClipScorer {
    /// Loads `dir` (config.json, model.safetensors or pytorch_model.bin [or fp16 variants],
    /// vocab.json + merges.txt + tokenizer_config.json, preprocessor_config.json) to run in
    /// `kind` on `device`, resizing images like transformers 5's `CLIPImageProcessor`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        Self::load_with(dir, device, kind, ClipResize::Torchvision)
    }

    /// As [`ClipScorer::load`], with the resize of another reference (see [`ClipResize`]).
    pub fn load_with(dir: &Path, device: Device, kind: Kind, resize: ClipResize) -> Result<Self> {
        let model = ClipModel::load(dir, device, kind)?;
        let tokenizer = ClipTokenizer::load(dir)?;
        let processor = ClipImageProcessor::load(dir, model.vision.config.image_size, resize)?;
        if processor.crop != Some((model.vision.config.image_size, model.vision.config.image_size)) {
            return Err(BenchError::file(
                dir.join("preprocessor_config.json"),
                format!(
                    "crop_size {:?} does not give the vision model's {s}×{s} input",
                    processor.crop,
                    s = model.vision.config.image_size
                ),
            ));
        }
        Ok(ClipScorer { model, tokenizer, processor, source: dir.display().to_string() })
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }
    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }
    pub fn model(&self) -> &ClipModel {
        &self.model
    }
    pub fn describe(&self) -> String {
        format!("clip-score:{}:{:?}", self.source, self.processor.resize)
    }

    /// Per-pair 100·cos(image i, prompt i), unclamped, float64 [B] on the CPU. `images`: uint8
    /// [B,3,H,W], or float samples in [-1,1] (quantised to uint8 first), any device; `token_ids`:
    /// [B,T] from [`ClipScorer::tokenizer`].
    pub fn scores(&self, images: &Tensor, token_ids: &Tensor) -> Result<Tensor> {
        let (bi, bt) = (images.size().first().copied(), token_ids.size().first().copied());
        if bi != bt {
            return Err(BenchError::Internal(format!("CLIP score needs one prompt per image: {bi:?} images, {bt:?} prompts")));
        }
        let pixels = self.processor.preprocess(images)?;
        let img = self.model.vision.image_embeds(&pixels)?.to_kind(Kind::Double);
        let txt = self.model.text.text_embeds(token_ids)?.to_kind(Kind::Double);
        let _guard = tch::no_grad_guard();
        let unit = |e: Tensor| &e / e.norm_scalaropt_dim(2, [-1], true);
        Ok(((unit(img) * unit(txt)).sum_dim_intlist(&[-1i64][..], false, Kind::Double) * 100.0).to_device(Device::Cpu))
    }

    /// [`ClipScorer::scores`] with the prompts tokenized here.
    pub fn scores_for_prompts<S: AsRef<str>>(&self, images: &Tensor, prompts: &[S]) -> Result<Tensor> {
        let ids = self.tokenizer.encode_batch(prompts)?;
        self.scores(images, &ids)
    }
}

/// Streaming, mergeable CLIP-score statistic: sums over all pairs seen, in f64.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipScoreStats {
    /// Σ 100·cos.
    pub sum: f64,
    /// Σ max(100·cos, 0).
    pub sum_clamped: f64,
    pub count: u64,
}

impl ClipScoreStats {
    /// Adds a batch of per-pair scores (1-D, from [`ClipScorer::scores`]).
    pub fn add(&mut self, scores: &Tensor) -> Result<()> {
        if scores.dim() != 1 {
            return Err(BenchError::Internal(format!("CLIP scores must be 1-D, got {:?}", scores.size())));
        }
        let v = Vec::<f64>::try_from(scores.to_device(Device::Cpu).to_kind(Kind::Double).contiguous())
            .map_err(|e| BenchError::Internal(format!("reading CLIP scores: {e}")))?;
        for s in v {
            self.sum += s;
            self.sum_clamped += s.max(0.0);
            self.count += 1;
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &ClipScoreStats) {
        self.sum += other.sum;
        self.sum_clamped += other.sum_clamped;
        self.count += other.count;
    }

    /// torchmetrics' value: max(mean(100·cos), 0). None before any pair.
    pub fn torchmetrics(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.sum / self.count as f64).max(0.0))
    }

    /// The per-pair clamped mean, mean(max(100·cos, 0)) (torchmetrics' docstring formula).
    pub fn mean_clamped(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_clamped / self.count as f64)
    }
}

pub static DEF: MetricDef = MetricDef {
    name: "clip_score",
    columns: &[ColumnDef {
        name: "clip_score",
        help: "CLIP score: max(mean of 100·cos(image, prompt), 0) over the samples and their prompts, as torchmetrics computes it",
        better: Better::Higher,
        tolerance: Tolerance { abs: 0.0, rel: 1e-4 },
    }],
};

/// CLIP score of a run's samples against the prompts they were conditioned on.
pub struct ClipScoreMetric {
    pub scorer: ClipScorer,
}

impl Metric for ClipScoreMetric {
    fn def(&self) -> &'static MetricDef {
        &DEF
    }
    fn needs_images(&self) -> bool {
        true
    }
    fn accumulator(&self) -> Box<dyn Accumulator + '_> {
        Box::new(ClipScoreAccumulator { scorer: &self.scorer, scores: Vec::new() })
    }
}

/// The per-sample scores by sample index: parts merge exactly whatever the sharding, since the
/// mean is summed in index order at the end.
struct ClipScoreAccumulator<'a> {
    scorer: &'a ClipScorer,
    scores: Vec<(u64, f64)>,
}

impl Accumulator for ClipScoreAccumulator<'_> {
    fn observe(&mut self, batch: &Batch) -> Result<()> {
        let images = batch.images.ok_or_else(|| BenchError::Internal("clip_score: batch without images".into()))?;
        if batch.prompts.len() != batch.indices.len() {
            return Err(BenchError::Internal("clip_score: batch without one prompt per sample".into()));
        }
        let scores = self.scorer.scores_for_prompts(images, batch.prompts)?;
        let v = Vec::<f64>::try_from(scores.contiguous()).map_err(|e| BenchError::Internal(format!("reading CLIP scores: {e}")))?;
        self.scores.extend(batch.indices.iter().copied().zip(v));
        Ok(())
    }
    fn save(&self, path: &Path) -> Result<()> {
        let err = |e: ndarray_npy::WriteNpzError| BenchError::file(path, format!("writing .npz: {e}"));
        let mut w = npz_writer();
        w.add_array("clip_index", &Array1::from_iter(self.scores.iter().map(|s| s.0))).map_err(err)?;
        w.add_array("clip_score", &Array1::from_iter(self.scores.iter().map(|s| s.1))).map_err(err)?;
        write_npz(w, path)
    }
    fn merge_file(&mut self, path: &Path) -> Result<()> {
        let mut r = open_npz(path)?;
        let index = read_array::<Ix1, u64>(&mut r, path, "clip_index")?;
        let score = read_f64::<Ix1>(&mut r, path, "clip_score")?;
        if index.len() != score.len() {
            return Err(BenchError::file(path, "clip_index and clip_score differ in length"));
        }
        self.scores.extend(index.iter().copied().zip(score.iter().copied()));
        Ok(())
    }
    fn finish(&self, _cx: &FinishContext) -> Result<Vec<(String, f64)>> {
        let mut sorted = self.scores.clone();
        sorted.sort_by_key(|s| s.0);
        let mut stats = ClipScoreStats::default();
        stats.add(&Tensor::from_slice(&sorted.iter().map(|s| s.1).collect::<Vec<f64>>()))?;
        Ok(stats.torchmetrics().map(|v| vec![("clip_score".to_owned(), v)]).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_clamp_the_mean_and_each_pair_and_merge() {
        let mut a = ClipScoreStats::default();
        assert_eq!(a.torchmetrics(), None);
        a.add(&Tensor::from_slice(&[30.0f64, -10.0])).unwrap();
        let mut b = ClipScoreStats::default();
        b.add(&Tensor::from_slice(&[-50.0f32])).unwrap();
        a.merge(&b);
        // sum = -30 over 3 pairs: torchmetrics clamps the mean -10 to 0; per pair: (30+0+0)/3.
        assert_eq!(a, ClipScoreStats { sum: -30.0, sum_clamped: 30.0, count: 3 });
        assert_eq!(a.torchmetrics(), Some(0.0));
        assert_eq!(a.mean_clamped(), Some(10.0));
        a.add(&Tensor::from_slice(&[90.0f64])).unwrap();
        assert_eq!(a.torchmetrics(), Some(15.0));
        assert!(a.add(&Tensor::zeros([2, 2], (Kind::Double, Device::Cpu))).is_err());
    }
}
