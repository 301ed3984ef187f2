//! Published numbers (`data/published/*.csv`) and how a result row finds its published
//! counterparts.
//!
//! The CSVs shipped in the repository are compiled into the binary, so every report can compare
//! without a data folder; further `*.csv` files with other names in `$BENCH_DATA/published/` are
//! read too. Columns (header names; empty = "any"/"not stated"): `source, table, dataset,
//! model_checkpoint, fid_pipeline, sampler, variant, order, eta, skip, steps, nfe, samples,
//! metric, value, notes`.
//!
//! ## Matching
//!
//! A published row P is the counterpart of result row R when all of these hold:
//! 1. `P.dataset == dataset_of(R)`: R's `dataset` column, or, when empty, the dataset named in R's
//!    `model` or `experiment` (case-insensitive, `-` and `_` ignored: `cifar` → `cifar10`,
//!    `celeba` → `celeba64`, `bedroom` → `lsun_bedroom`, `church` → `lsun_church`, `imagenet64` →
//!    `imagenet64`, `ffhq64` → `ffhq64`, `afhqv264` → `afhqv2_64`, `cat256` → `lsun_cat`; so
//!    `edm-ffhq-64x64-uncond-vp.pkl` and `cd_cat256_lpips.pt` name theirs). Oracle models have none.
//! 2. `P.metric` is the report's metric and `P.sampler == R.sampler`.
//! 3. each of `variant, order, eta, skip, steps, nfe` that P states equals R's (η within 1e-9;
//!    P's variant may also be one word of R's variant text, e.g. `singlestep` in
//!    `method=singlestep order=3`, see [`super::tables::variant_text`]);
//!    an empty field in P matches anything. So DDIM Table 1's CIFAR10 rows (skip `quadratic`)
//!    match only quadratic-skip runs, while the solver headline numbers (NFE only) match by NFE.
//!
//! ## Caveats
//!
//! A match is not a like-for-like comparison. [`caveats`] lists what differs between our setup
//! (the result row and `run.json`) and the paper's: custom Inception weights, another sample
//! count, no more samples than feature dimensions (FID's covariance is then singular), a model
//! checkpoint whose SHA-256 is not the published one (the optional `model_sha256` column), an
//! FID pipeline that is not ours or not stated. Where the setups are known to differ the report
//! shows no Δ.
use crate::results::{ResultRow, RunInfo};
use crate::{BenchError, Result};
use polars::prelude::*;
use std::path::Path;

/// (file name, contents) of the CSVs shipped in `data/published/`.
pub const SHIPPED: &[(&str, &str)] = &[
    ("ddim_table1.csv", include_str!("../../data/published/ddim_table1.csv")),
    ("ddim_lsun_table3.csv", include_str!("../../data/published/ddim_lsun_table3.csv")),
    ("solvers_headline.csv", include_str!("../../data/published/solvers_headline.csv")),
    ("ldm_tables.csv", include_str!("../../data/published/ldm_tables.csv")),
    ("edm_table2.csv", include_str!("../../data/published/edm_table2.csv")),
    ("cm_tables.csv", include_str!("../../data/published/cm_tables.csv")),
    ("diffusion_ts_table.csv", include_str!("../../data/published/diffusion_ts_table.csv")),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub source: String,
    pub table: String,
    pub dataset: String,
    pub model_checkpoint: String,
    /// SHA-256 of the published checkpoint file, where known (optional column `model_sha256`).
    pub model_sha256: Option<String>,
    pub fid_pipeline: String,
    pub sampler: String,
    pub variant: Option<String>,
    pub order: Option<u32>,
    pub eta: Option<f64>,
    pub skip: Option<String>,
    pub steps: Option<u64>,
    pub nfe: Option<u64>,
    pub samples: Option<u64>,
    /// Classifier-free guidance scale w (optional column `guidance_scale`; 1 = unguided).
    pub guidance_scale: Option<f64>,
    pub metric: String,
    pub value: f64,
    pub notes: String,
}

/// Parse one published CSV (`name` is used in error messages).
pub fn parse_csv(name: &str, text: &str) -> Result<Vec<Published>> {
    let bad = |msg: String| BenchError::user(format!("published numbers {name}: {msg}"));
    let df = CsvReadOptions::default()
        .with_has_header(true)
        // Every column as text: empty fields stay empty instead of changing a column's type.
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(std::io::Cursor::new(text.as_bytes().to_vec()))
        .finish()
        .map_err(|e| bad(format!("not a valid CSV: {e}")))?;
    let column = |key: &str, required: bool| -> Result<Vec<String>> {
        match df.column(key) {
            Ok(c) => Ok(c
                .str()
                .map_err(|e| bad(format!("column {key}: {e}")))?
                .iter()
                .map(|v| v.unwrap_or("").trim().to_string())
                .collect()),
            Err(_) if !required => Ok(vec![String::new(); df.height()]),
            Err(_) => Err(bad(format!("column {key} is missing"))),
        }
    };
    let cols: Vec<Vec<String>> = [
        ("source", true),
        ("table", true),
        ("dataset", true),
        ("model_checkpoint", false),
        ("fid_pipeline", false),
        ("sampler", true),
        ("variant", false),
        ("order", false),
        ("eta", false),
        ("skip", false),
        ("steps", false),
        ("nfe", false),
        ("samples", false),
        ("metric", true),
        ("value", true),
        ("notes", false),
        ("model_sha256", false),
        ("guidance_scale", false),
    ]
    .iter()
    .map(|(k, req)| column(k, *req))
    .collect::<Result<_>>()?;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut out = Vec::with_capacity(df.height());
    // i indexes the same row in all 18 columns; an iterator over one column would not read better.
    #[allow(clippy::needless_range_loop)]
    for i in 0..df.height() {
        // Row i of column k (the columns are in the order listed above).
        let c = |k: usize| -> &str { &cols[k][i] };
        let num = |k: usize, key: &str| -> Result<Option<f64>> {
            match c(k) {
                "" => Ok(None),
                s => s.parse::<f64>().map(Some).map_err(|_| bad(format!("row {}: {key}={s:?} is not a number", i + 2))),
            }
        };
        let int = |k: usize, key: &str| -> Result<Option<u64>> {
            match c(k) {
                "" => Ok(None),
                s => s.parse::<u64>().map(Some).map_err(|_| bad(format!("row {}: {key}={s:?} is not a whole number", i + 2))),
            }
        };
        out.push(Published {
            source: c(0).into(),
            table: c(1).into(),
            dataset: c(2).into(),
            model_checkpoint: opt(c(3)).unwrap_or_else(|| "unknown".into()),
            fid_pipeline: opt(c(4)).unwrap_or_else(|| "unknown".into()),
            sampler: c(5).into(),
            variant: opt(c(6)),
            order: int(7, "order")?.map(|o| o as u32),
            eta: num(8, "eta")?,
            skip: opt(c(9)),
            steps: int(10, "steps")?,
            nfe: int(11, "nfe")?,
            samples: int(12, "samples")?,
            guidance_scale: num(17, "guidance_scale")?,
            metric: c(13).into(),
            value: num(14, "value")?.ok_or_else(|| bad(format!("row {}: value is empty", i + 2)))?,
            notes: c(15).into(),
            model_sha256: opt(c(16)).map(|h| h.to_lowercase()),
        });
    }
    Ok(out)
}

/// The shipped numbers plus `extra_dir/*.csv` (files whose names are not shipped ones).
pub fn load(extra_dir: Option<&Path>) -> Result<Vec<Published>> {
    let mut all = Vec::new();
    for (name, text) in SHIPPED {
        all.extend(parse_csv(name, text)?);
    }
    let Some(dir) = extra_dir else { return Ok(all) };
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(all) };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .filter(|p| !SHIPPED.iter().any(|(n, _)| p.file_name().is_some_and(|f| f == *n)))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| BenchError::io(format!("read {}", p.display()), e))?;
        all.extend(parse_csv(&p.display().to_string(), &text)?);
    }
    Ok(all)
}

/// The dataset a result row's model was trained on, for matching (see the module docs).
pub fn dataset_of(row: &ResultRow) -> Option<String> {
    if let Some(d) = row.dataset.as_deref().filter(|d| !d.is_empty()) {
        return Some(d.to_lowercase());
    }
    // Separators dropped, so `edm-imagenet-64x64` and `cd_imagenet64` both say `imagenet64`.
    let text: String = format!("{} {}", row.model, row.experiment).to_lowercase().chars().filter(|c| !matches!(c, '-' | '_')).collect();
    [
        ("cifar", "cifar10"),
        ("celeba", "celeba64"),
        ("bedroom", "lsun_bedroom"),
        ("church", "lsun_church"),
        ("imagenet64", "imagenet64"),
        ("ffhq64", "ffhq64"),
        ("afhqv264", "afhqv2_64"),
        ("cat256", "lsun_cat"),
    ]
    .iter()
    .find(|(needle, _)| text.contains(needle))
    .map(|(_, d)| d.to_string())
}

/// Whether `p` is a published counterpart of `row` for `metric` (see the module docs).
pub fn matches(p: &Published, row: &ResultRow, metric: &str) -> bool {
    fn same<T: PartialEq>(stated: &Option<T>, ours: Option<T>) -> bool {
        stated.as_ref().is_none_or(|s| ours.as_ref() == Some(s))
    }
    p.metric == metric
        && p.sampler == row.sampler
        && dataset_of(row).as_deref() == Some(p.dataset.as_str())
        && p.variant.as_deref().is_none_or(|v| {
            super::tables::variant_text(row).is_some_and(|ours| ours == v || ours.split_whitespace().any(|t| t == v))
        })
        && same(&p.order, row.order)
        && same(&p.skip, row.skip.clone())
        && same(&p.steps, Some(row.steps))
        && same(&p.nfe, Some(row.nfe))
        && p.eta.is_none_or(|e| row.eta.is_some_and(|r| (r - e).abs() < 1e-9))
        && p.guidance_scale.is_none_or(|w| row.guidance_scale.unwrap_or(1.0) == w)
}

/// One reason a published number is not directly comparable with ours.
#[derive(Debug, Clone, PartialEq)]
pub struct Caveat {
    /// Short form for the table cell.
    pub label: String,
    /// One sentence for the notes under the table.
    pub detail: String,
    /// The setups are known to differ, so ours − paper measures the setup, not the sampler: the
    /// report shows no Δ.
    pub no_delta: bool,
}

/// Metrics computed from the FID Inception network's features or logits.
fn inception_based(metric: &str) -> bool {
    matches!(metric, "fid" | "kid" | "inception_score" | "precision" | "recall") || metric.starts_with("prdc_")
}

/// The FID pipeline a published `fid_pipeline` text names, as bench's `fid_mode` names it; tf-gan
/// (ScoreSDE, DPM-Solver) has no bench mode. None: not stated or not recognised.
fn pipeline_of(text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    if has(&["tf-gan", "tfgan"]) {
        Some("tf-gan")
    } else if has(&["clean-fid", "cleanfid", "clean fid"]) {
        Some("clean")
    } else if has(&["pytorch-fid", "pytorch_fid"]) {
        Some("pytorch-fid")
    } else if has(&["ttur", "torch-fidelity", "torch_fidelity"]) {
        Some("tf")
    } else {
        None
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// What differs between the paper's setup for `p` and ours for `row` (see the module docs).
/// `run` is the run's `run.json` (None: unknown, and the caveats that need it are left out).
pub fn caveats(p: &Published, row: &ResultRow, run: Option<&RunInfo>, metric: &str) -> Vec<Caveat> {
    let mut out = Vec::new();
    let input = |role: &str| run.and_then(|r| r.input_sha256.get(role)).and_then(|h| h.clone());
    if inception_based(metric) {
        let standard = crate::registry::FID_INCEPTION.sha256.unwrap_or_default();
        if let Some(sha) = input("metrics.fid.weights").filter(|s| s != standard) {
            out.push(Caveat {
                label: "custom Inception weights".into(),
                detail: format!(
                    "custom Inception weights: ours (SHA-256 {}…) are not pytorch-fid's pt_inception-2015-12-05, so our {metric} is in another network's feature space.",
                    short(&sha)
                ),
                no_delta: true,
            });
        }
    }
    if let Some(n) = p.samples.filter(|&n| n != row.samples) {
        out.push(Caveat {
            label: format!("{} vs {n} samples", row.samples),
            detail: "a different sample count: FID is biased upward, the more the fewer samples (Chong & Forsyth 2020); compare at the paper's count.".into(),
            no_delta: false,
        });
    }
    if metric == "fid" {
        let dims = run.and_then(|r| r.fid_dims).unwrap_or(2048);
        if row.samples <= dims {
            out.push(Caveat {
                label: format!("{} samples ≤ {dims} dims", row.samples),
                detail: format!(
                    "samples ≤ feature dimensions ({dims}): the sample covariance is singular and FID is heavily biased upward; the number is not comparable with any published FID."
                ),
                no_delta: true,
            });
        }
    }
    if let Some(theirs) = &p.model_sha256 {
        match input("model.weights") {
            Some(ours) if &ours != theirs => out.push(Caveat {
                label: "other checkpoint".into(),
                detail: format!("another checkpoint: our model weights' SHA-256 {}… is not the published one ({}…).", short(&ours), short(theirs)),
                no_delta: true,
            }),
            Some(_) => {}
            None => out.push(Caveat {
                label: "checkpoint unverified".into(),
                detail: "checkpoint unverified: run.json records no model weights hash to compare with the published one.".into(),
                no_delta: false,
            }),
        }
    }
    if inception_based(metric) {
        let ours = row.fid_mode.clone().or_else(|| run.and_then(|r| r.fid_mode.clone()));
        match (pipeline_of(&p.fid_pipeline), ours) {
            (Some(theirs), Some(ours)) if theirs != ours => out.push(Caveat {
                label: "other FID pipeline".into(),
                detail: format!("another FID pipeline: the paper's is {} ({theirs}), ours is {ours}.", p.fid_pipeline),
                no_delta: true,
            }),
            (Some(_), _) => {}
            (None, _) => out.push(Caveat {
                label: "FID pipeline not stated".into(),
                detail: "the paper's FID pipeline is not stated (or not one bench knows): resize and Inception port may differ from ours.".into(),
                no_delta: false,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(model: &str, sampler: &str, eta: Option<f64>, skip: &str, steps: u64) -> ResultRow {
        ResultRow {
            model: model.into(),
            sampler: sampler.into(),
            eta,
            skip: Some(skip.into()),
            steps,
            nfe: steps,
            ..Default::default()
        }
    }

    #[test]
    fn shipped_tables_are_complete() {
        let all = load(None).unwrap();
        // DDIM Table 1: 2 datasets × 5 rows (4 η + σ̂) × 5 S; Table 3: 2 × 2 × 4; headline: 8;
        // LDM Table 1: 4 datasets × (FID, precision, recall); LDM Table 2: 2 models × (FID, IS);
        // EDM Table 2: configs A and F × 8 columns, plus the ImageNet-64 1.36 and 1.55 of the text;
        // CM Table 1: CD and CT × 1, 2 steps × (FID, IS) + EDM (FID, IS); CM Table 2: 3 datasets ×
        // CD and CT × 1, 2 steps + EDM; Diffusion-TS Table 1: Context-FID on 6 datasets.
        assert_eq!(all.iter().filter(|p| p.table == "Table 1").count(), 50);
        assert_eq!(all.iter().filter(|p| p.table == "Table 3").count(), 16);
        assert_eq!(all.iter().filter(|p| p.table.starts_with("LDM Table 1")).count(), 12);
        assert_eq!(all.iter().filter(|p| p.table.starts_with("LDM Table 2")).count(), 4);
        assert_eq!(all.iter().filter(|p| p.table.starts_with("EDM Table 2")).count(), 16);
        assert_eq!(all.iter().filter(|p| p.source.starts_with("Karras")).count(), 18);
        assert_eq!(all.iter().filter(|p| p.table.starts_with("CM Table 1")).count(), 10);
        assert_eq!(all.iter().filter(|p| p.table.starts_with("CM Table 2")).count(), 15);
        assert_eq!(all.iter().filter(|p| p.table.starts_with("Diffusion-TS Table 1")).count(), 6);
        assert_eq!(all.len(), 50 + 16 + 8 + 16 + 18 + 25 + 6);
        let v = |ds: &str, sampler: &str, eta: Option<f64>, s: u64| {
            all.iter()
                .find(|p| p.table == "Table 1" && p.dataset == ds && p.sampler == sampler && p.eta == eta && p.steps == Some(s))
                .map(|p| p.value)
        };
        assert_eq!(v("cifar10", "ddim", Some(0.0), 10), Some(13.36));
        assert_eq!(v("cifar10", "ddpm_large", None, 1000), Some(3.17));
        assert_eq!(v("celeba64", "ddim", Some(1.0), 100), Some(13.93));
        assert_eq!(v("celeba64", "ddpm_large", None, 10), Some(299.71));
        let ldm = |ds: &str, metric: &str, eta: Option<f64>, s: u64, value: f64| {
            all.iter().filter(|p| p.table.starts_with("LDM") && p.dataset == ds && p.metric == metric && p.eta == eta && p.steps == Some(s)).any(|p| p.value == value)
        };
        assert!(ldm("celebahq256", "fid", Some(0.0), 500, 5.11));
        assert!(ldm("ffhq256", "prdc_precision", Some(1.0), 200, 0.73));
        assert!(ldm("lsun_church", "prdc_recall", Some(0.0), 200, 0.52));
        assert!(ldm("lsun_bedroom", "fid", Some(1.0), 200, 2.95));
        assert!(ldm("coco256", "fid", None, 250, 12.63));
        assert!(ldm("coco256", "inception_score", None, 250, 20.03));
        let at = |prefix: &str, ds: &str, sampler: &str, metric: &str, nfe: u64| {
            all.iter()
                .filter(|p| p.table.starts_with(prefix) && p.dataset == ds && p.sampler == sampler && p.metric == metric && p.nfe == Some(nfe))
                .map(|p| p.value)
                .collect::<Vec<_>>()
        };
        // EDM Table 2, configs F then A, in the paper's column order (VP, VE; conditional first).
        assert_eq!(at("EDM Table 2", "cifar10", "edm_heun", "fid", 35), [1.79, 1.79, 1.97, 1.98, 2.48, 3.11, 3.01, 3.77]);
        assert_eq!(at("EDM Table 2", "ffhq64", "edm_heun", "fid", 79), [2.39, 2.53, 3.39, 25.95]);
        assert_eq!(at("EDM Table 2", "afhqv2_64", "edm_heun", "fid", 79), [1.96, 2.16, 2.58, 18.52]);
        assert_eq!(at("EDM Sec. 5", "imagenet64", "edm_heun", "fid", 511), [1.36]);
        // Consistency Models: CD 1, 2 steps then CT 1, 2 steps.
        assert_eq!(at("CM Table 1", "cifar10", "consistency", "fid", 1), [3.55, 8.70]);
        assert_eq!(at("CM Table 1", "cifar10", "consistency", "inception_score", 2), [9.75, 8.85]);
        assert_eq!(at("CM Table 2", "imagenet64", "consistency", "fid", 2), [4.70, 11.1]);
        assert_eq!(at("CM Table 2", "lsun_bedroom", "consistency", "fid", 1), [7.80, 16.0]);
        assert_eq!(at("CM Table 2", "lsun_cat", "consistency", "fid", 2), [8.84, 11.7]);
        assert_eq!(at("CM Table 2", "imagenet64", "edm_heun", "fid", 79), [2.44]);
        assert!(all.iter().filter(|p| p.sampler == "consistency").all(|p| p.steps == p.nfe));
        // Diffusion-TS: the full ancestral chain (T = 500 for Sines, Stocks, ETTh; 1000 for the others).
        assert_eq!(at("Diffusion-TS Table 1", "sines", "ddpm", "context_fid", 500), [0.006]);
        assert_eq!(at("Diffusion-TS Table 1", "stocks", "ddpm", "context_fid", 500), [0.147]);
        assert_eq!(at("Diffusion-TS Table 1", "fmri", "ddpm", "context_fid", 1000), [0.105]);
        assert!(all.iter().all(|p| !p.source.is_empty() && !p.fid_pipeline.is_empty() && !p.model_checkpoint.is_empty()));
    }

    #[test]
    fn matching_respects_dataset_skip_eta_and_steps() {
        let all = load(None).unwrap();
        let found = |r: &ResultRow| all.iter().filter(|p| matches(p, r, "fid")).map(|p| p.value).collect::<Vec<_>>();
        // CIFAR10 by model path, quadratic: Table 1 only (the CM 10-NFE DDIM row states no skip, so it matches too).
        assert_eq!(found(&cell("diffusers:data/models/ddpm-cifar10-32", "ddim", Some(0.0), "quadratic", 10)), [13.36, 8.23]);
        // Uniform skip on CIFAR10 is not the Table 1 setting.
        assert_eq!(found(&cell("diffusers:data/models/ddpm-cifar10-32", "ddim", Some(0.0), "uniform", 10)), [8.23]);
        assert_eq!(found(&cell("ddim:celeba", "ddim", Some(0.5), "uniform", 50)), [11.01]);
        assert_eq!(found(&cell("ddim:celeba", "ddim", Some(0.3), "uniform", 50)), Vec::<f64>::new());
        assert_eq!(found(&cell("ddim:celeba", "ddpm_large", None, "uniform", 20)), [183.83]);
        assert_eq!(found(&cell("x", "ddim", Some(1.0), "uniform", 50)), Vec::<f64>::new());
        let mut church = cell("x", "ddim", Some(1.0), "uniform", 100);
        church.dataset = Some("LSUN_Church".into());
        assert_eq!(found(&church), [8.27]);
        assert_eq!(found(&cell("oracle:gaussian", "ddim", Some(0.0), "uniform", 10)), Vec::<f64>::new());
        let mut fast = cell("cifar10", "dpm_solver", None, "logSNR", 7);
        fast.variant = Some("singlestep".into());
        fast.order = Some(3);
        fast.nfe = 10;
        assert_eq!(found(&fast), [4.70, 4.70]);
        // The runner's parameter-list form of the variant matches too.
        fast.variant = Some("method=singlestep order=3".into());
        assert_eq!(found(&fast), [4.70, 4.70]);
        // DPM-Solver-2 (order 2) is not the order-3 run; any method of order 2 is.
        fast.order = Some(2);
        fast.variant = Some("multistep".into());
        assert_eq!(found(&fast), [5.94]);
        assert!(all.iter().all(|p| !matches(p, &fast, "fd_pixel")));
        // LDM Table 2: the guided row beside a guided run only, the unguided one beside w = 1.
        let mut coco = cell("x", "ddim", Some(0.0), "leading", 250);
        coco.dataset = Some("coco256".into());
        coco.nfe = 250;
        coco.guidance_scale = Some(1.5);
        assert_eq!(found(&coco), [12.63]);
        coco.guidance_scale = Some(1.0);
        assert_eq!(found(&coco), [23.31]);
        coco.guidance_scale = Some(7.5);
        assert_eq!(found(&coco), Vec::<f64>::new());
        // EDM and Consistency Models checkpoints name their datasets in their file names.
        let mut ffhq = cell("edm:data/models/edm-ffhq-64x64-uncond-vp.pkl", "edm_heun", None, "edm", 40);
        ffhq.nfe = 79;
        assert_eq!(found(&ffhq), [2.39, 2.53, 3.39, 25.95]);
        let mut afhq = cell("edm:edm-afhqv2-64x64-uncond-vp.pkl", "edm_heun", None, "edm", 40);
        afhq.nfe = 79;
        assert_eq!(dataset_of(&afhq).as_deref(), Some("afhqv2_64"));
        let mut imagenet = cell("edm:edm-imagenet-64x64-cond-adm.pkl", "edm_heun", None, "edm", 256);
        imagenet.nfe = 511;
        // The retrained model's 1.36, and the pre-trained ADM's 1.55 (no steps stated).
        assert_eq!(found(&imagenet), [1.36, 1.55]);
        assert_eq!(found(&cell("diffusers:openai/diffusers-cd_imagenet64_l2", "consistency", None, "consistency", 1)), [6.20, 13.0]);
        assert_eq!(found(&cell("cm:cd_cat256_lpips.pt", "consistency", None, "consistency", 2)), [8.84, 11.7]);
        assert_eq!(found(&cell("cm:ct_bedroom256.pt", "consistency", None, "consistency", 2)), [5.22, 7.85]);
        assert_eq!(dataset_of(&cell("concat", "ddim", None, "uniform", 10)), None);
    }

    #[test]
    fn pipelines_are_recognised_from_their_published_names() {
        assert_eq!(pipeline_of("TF Inception (tf-gan, ScoreSDE evaluation code)"), Some("tf-gan"));
        assert_eq!(pipeline_of("pytorch-fid 0.3.0"), Some("pytorch-fid"));
        assert_eq!(pipeline_of("clean-fid (legacy_tensorflow)"), Some("clean"));
        assert_eq!(pipeline_of("TTUR"), Some("tf"));
        assert_eq!(pipeline_of("unknown"), None);
        // The shipped DDIM rows: 50,000 samples, pipeline not stated; a 50,000-sample run without
        // run.json gets only the not-stated caveat, so Δ is shown.
        let all = load(None).unwrap();
        let mut r = cell("ddim:cifar10", "ddim", Some(0.0), "quadratic", 10);
        r.samples = 50_000;
        let p = all.iter().find(|p| matches(p, &r, "fid") && p.table == "Table 1").unwrap();
        let c = caveats(p, &r, None, "fid");
        assert_eq!(c.iter().map(|c| (c.label.as_str(), c.no_delta)).collect::<Vec<_>>(), [("FID pipeline not stated", false)]);
        // fd_pixel is not an Inception metric: no Inception or pipeline caveats.
        assert!(caveats(p, &r, None, "fd_pixel").is_empty());
    }

    #[test]
    fn bad_published_csv_names_file_row_and_value() {
        let e = parse_csv("x.csv", "source,table,dataset,sampler,metric,value\ns,t,cifar10,ddim,fid,abc\n").unwrap_err();
        assert_eq!(e.to_string(), "published numbers x.csv: row 2: value=\"abc\" is not a number");
        let e = parse_csv("y.csv", "source,table,dataset,metric,value\ns,t,cifar10,fid,1\n").unwrap_err();
        assert_eq!(e.to_string(), "published numbers y.csv: column sampler is missing");
    }
}
