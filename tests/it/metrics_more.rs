//! Inception Score, KID, precision/recall/density/coverage, FD in a TorchScript feature space,
//! Context-FID, the Sines data, timestep respacing and mixed-size image folders against their
//! Python references (tests/it/py/metrics_more.py: torch-fidelity 0.4.0, the prdc package's
//! formulas, clean-fid, EDM2's preprocessing, Diffusion-TS, guided-diffusion).
use crate::common::*;
use crate::fid_net::PYTORCH_FID_ORACLE;
use ndarray::{Array2, Array3};
use samplerbench::metrics::context_fid::{context_fid, ContextFid, TsScaling};
use samplerbench::metrics::datasets::{open_input, Input};
use samplerbench::metrics::fd_features::{FdFeatures, FdFeaturesSpec};
use samplerbench::metrics::fid_cli::{self, InceptionExtractor, ReferenceFile};
use samplerbench::metrics::frechet::frechet_distance;
use samplerbench::metrics::image_metrics::{image_metrics, ImageMetricsConfig, ImageMetricsState};
use samplerbench::metrics::inception::FidInception;
use samplerbench::metrics::inception_score::{InceptionScoreStats, IsParams};
use samplerbench::metrics::kid::{kid, KidParams};
use samplerbench::metrics::numpy_random::RandomState;
use samplerbench::metrics::prdc::{self, prdc, PrdcParams};
use samplerbench::metrics::sines::{sines, SinesConfig};
use samplerbench::metrics::stats::FeatureStats;
use samplerbench::metrics::ResizeMode;
use samplerbench::respacing::{diffusion_ts_fast_sampling, space_timesteps};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

const ORACLE: &str = include_str!("py/metrics_more.py");

/// Runs one task of the oracle script; its last stdout line is JSON.
fn oracle(task: &str, dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec![task, dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run_python(ORACLE, &args);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// pytorch-fid's seeded random FID Inception (fid_net.rs's oracle), made once per test run.
pub(crate) fn random_inception() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("metrics_more_inception");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run_python(PYTORCH_FID_ORACLE, &[dir.to_str().unwrap()]);
        dir
    })
}

fn npy2(path: &Path) -> Tensor {
    let a: Array2<f32> = ndarray_npy::read_npy(path).unwrap();
    let (n, d) = a.dim();
    Tensor::from_slice(a.as_slice().unwrap()).reshape([n as i64, d as i64])
}

fn rel(ours: f64, theirs: f64) -> f64 {
    ((ours - theirs) / theirs).abs()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn npy1(path: &Path) -> Tensor {
    let a: ndarray::Array1<f32> = ndarray_npy::read_npy(path).unwrap();
    Tensor::from_slice(a.as_slice().unwrap())
}

/// How far our float32 distances and radii lie from torch-fidelity's own (saved by the oracle as
/// `{prefix}_d21/r_fake/r_real.npy`): precision/recall are provably equal when no comparison lies
/// closer than this to its radius in torch-fidelity's numbers (the oracle's `gap`).
fn prc_moved(dir: &Path, prefix: &str, fake: &Tensor, real: &Tensor, batch: usize) -> f64 {
    let max_abs = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    let d = max_abs(&prdc::distance_matrix(real, fake, batch).unwrap(), &npy2(&dir.join(format!("{prefix}_d21.npy"))));
    let rf = max_abs(&prdc::knn_radii(fake, 3, batch).unwrap(), &npy1(&dir.join(format!("{prefix}_r_fake.npy"))));
    let rr = max_abs(&prdc::knn_radii(real, 3, batch).unwrap(), &npy1(&dir.join(format!("{prefix}_r_real.npy"))));
    d + rf.max(rr)
}

#[test]
fn numpy_random_state_is_reproduced_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let want = oracle("rng", dir.path(), &[]);
    for seed in [0u32, 1, 2020, 123, 4_294_967_295] {
        let w = &want[seed.to_string()];
        let mut r = RandomState::new(seed);
        let as_vec = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect::<Vec<_>>();
        assert_eq!(r.permutation(10), as_vec(&w["perm10"]), "seed {seed}");
        assert_eq!(r.permutation(1000), as_vec(&w["perm1000"]), "seed {seed}");
        assert_eq!(r.choice_without_replacement(50_000, 7).unwrap(), as_vec(&w["choice"]), "seed {seed}");
        let uniform: Vec<u64> = (0..5).map(|_| r.uniform(0.0, 0.1).to_bits()).collect();
        let want_u: Vec<u64> = w["uniform_bits"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(uniform, want_u, "seed {seed}");
    }
}

/// The metric math on identical arrays: torch-fidelity's `isc/kid/prc_features_to_metric` and
/// the prdc package's density/coverage formulas against ours; then the same arrays through the
/// shard-merge/save/load path of `ImageMetricsState`.
#[test]
fn is_kid_prdc_match_torch_fidelity_on_identical_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let want = oracle("arrays", dir.path(), &[]);
    let (gen, refs, logits) = (npy2(&dir.path().join("gen.npy")), npy2(&dir.path().join("ref.npy")), npy2(&dir.path().join("logits.npy")));
    let n = gen.size()[0];

    // IS: torch-fidelity takes softmax in f64 of the same f32 logits; both sides are f64 sums of
    // ≤ 230 terms, so they agree to ~1e-13 (the issue asks for 1e-4).
    let mut is = InceptionScoreStats::new(n as usize, IsParams::default(), 1008, Device::Cpu).unwrap();
    for start in (0..n).step_by(37) {
        is.add_batch(start as u64, &logits.narrow(0, start, 37.min(n - start))).unwrap();
    }
    let score = is.score().unwrap();
    let w = &want["isc"];
    let (e_mean, e_std) = (rel(score.mean, f(w, "inception_score_mean")), rel(score.std, f(w, "inception_score_std")));
    eprintln!("IS {:.12} ± {:.6}: rel err mean {e_mean:.2e} std {e_std:.2e}", score.mean, score.std);
    assert!(e_mean < 1e-12 && e_std < 1e-10, "{score:?} vs {w}");

    // KID: torch-fidelity on float64 arrays does our f64 arithmetic on the same subsets: agreement
    // to summation-order rounding, |Σ| ~ m²·k with k ~ 1 against KID ~ 0.02: < 1e-10. Its default
    // float32 arithmetic is then within its own rounding of ours (issue bound 1e-4).
    let p = KidParams { subsets: 20, subset_size: 100, seed: 2020 };
    let k = kid(&gen, &refs, &p).unwrap();
    let (w64, w32) = (&want["kid_f64"], &want["kid_f32"]);
    let e64 = rel(k.mean, f(w64, "kernel_inception_distance_mean"));
    let e64s = rel(k.std, f(w64, "kernel_inception_distance_std"));
    let e32 = rel(k.mean, f(w32, "kernel_inception_distance_mean"));
    let e32s = rel(k.std, f(w32, "kernel_inception_distance_std"));
    eprintln!("KID {:.9} ± {:.6}: rel err vs f64 {e64:.2e}/{e64s:.2e}, vs torch-fidelity f32 {e32:.2e}/{e32s:.2e}", k.mean, k.std);
    assert!(e64 < 1e-10 && e64s < 1e-9, "{k:?} vs {w64}");
    assert!(e32 < 1e-4 && e32s < 1e-4, "{k:?} vs {w32}");
    let s = k.subset_values.len() as f64;
    let sample_std = k.std * (s / (s - 1.0)).sqrt();
    assert!((k.standard_error - sample_std / s.sqrt()).abs() < 1e-15);

    // Precision/recall: the same float32 `cdist` blocks (prc_batch_size 64), whose GEMM rounding
    // may differ (thread count, blocking); equal counts, provably: every comparison is farther from
    // its radius than the two sides' distances differ. Density/coverage: prdc's formulas on
    // torch-fidelity's distances, the same comparisons (d < radius) under the same guard.
    let pr = prdc(&gen, &refs, &PrdcParams { k: 3, batch_size: 64 }).unwrap();
    let (wp, wd) = (&want["prc"], &want["prdc"]);
    let moved = prc_moved(dir.path(), "arrays", &gen, &refs, 64);
    eprintln!(
        "P/R/D/C {:.4} {:.4} {:.4} {:.4}; smallest |d − radius| {:.1e}, distances move by ≤ {moved:.1e}",
        pr.precision,
        pr.recall,
        pr.density,
        pr.coverage,
        f(wp, "gap")
    );
    assert!(f(wp, "gap") > moved, "fixture too close to a tie for exact equality");
    assert_eq!((pr.precision_count, pr.recall_count), (u(wp, "precision_count"), u(wp, "recall_count")));
    assert_eq!((pr.density_count, pr.coverage_count), (u(wd, "density_count"), u(wd, "coverage_count")));
    assert!(pr.precision > 0.3 && pr.precision < 1.0 && pr.recall > 0.3 && pr.recall < 1.0, "degenerate fixture: {pr:?}");

    // The same arrays as two shards of ImageMetricsState, merged, saved, loaded: same numbers.
    let cfg = ImageMetricsConfig {
        inception_score: Some(IsParams::default()),
        kid: Some(p),
        prdc: Some(PrdcParams { k: 3, batch_size: 64 }),
    };
    let shard = |lo: i64, hi: i64| {
        let mut st = ImageMetricsState::new(&cfg, n as usize, 2048, Device::Cpu).unwrap();
        for start in (lo..hi).step_by(37) {
            let len = 37.min(hi - start);
            st.add_batch(start as u64, &gen.narrow(0, start, len), Some(&logits.narrow(0, start, len))).unwrap();
        }
        st
    };
    let mut merged = shard(111, n);
    merged.merge(&shard(0, 111)).unwrap();
    let path = dir.path().join("state.npz");
    merged.save_npz(&path).unwrap();
    let loaded = ImageMetricsState::load_npz(&path, Device::Cpu).unwrap();
    let mut rs = FeatureStats::new(2048, Device::Cpu);
    rs.add_batch(&refs).unwrap();
    let mut bank = samplerbench::metrics::feature_bank::FeatureBank::new(2048);
    bank.add_batch(0, &refs).unwrap();
    let reference = ReferenceFile { moments: rs.moments().unwrap(), features: Some(bank) };
    let m = image_metrics(&loaded, &reference, &cfg, Device::Cpu).unwrap();
    let is_m = m.inception_score.unwrap();
    assert!(rel(is_m.mean, score.mean) < 1e-14, "{} vs {}", is_m.mean, score.mean);
    assert_eq!(m.kid.unwrap(), k);
    assert_eq!(m.prdc.unwrap(), pr);
}

/// One streamed pass of our FID Inception (features and unbiased logits from one forward) against
/// torch-fidelity's `calculate_metrics` on the same folders with the same random weights.
#[test]
fn image_metrics_match_torch_fidelity_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let want = oracle("tfid", d, &[random_inception().join("zip.pth").to_str().unwrap()]);
    let net = FidInception::load(&d.join("w.pth"), Device::Cpu, true).unwrap();
    assert!(net.has_classifier());
    let ex = InceptionExtractor { net, mode: ResizeMode::Tf, dims: 2048 };
    let cfg = ImageMetricsConfig {
        inception_score: Some(IsParams::default()),
        kid: Some(KidParams { subsets: 10, subset_size: 25, seed: 2020 }),
        prdc: Some(PrdcParams::default()),
    };
    let Input::Images(gen) = open_input(d.join("gen").to_str().unwrap()).unwrap() else { panic!() };
    let Input::Images(refs) = open_input(d.join("ref").to_str().unwrap()).unwrap() else { panic!() };
    let mut state = ImageMetricsState::new(&cfg, gen.len(), 2048, Device::Cpu).unwrap();
    let mut our_logits = Vec::new();
    fid_cli::for_each_batch(gen.as_ref(), &ex, 16, true, true, &mut |first, feats, logits| {
        our_logits.push(logits.unwrap().shallow_clone());
        state.add_batch(first, feats, logits)
    })
    .unwrap();
    let (ref_stats, ref_bank) = fid_cli::source_stats_and_features(refs.as_ref(), &ex, 16, true, usize::MAX, 0).unwrap();
    let reference = ReferenceFile { moments: ref_stats.moments().unwrap(), features: Some(ref_bank) };

    // Our pool features and logits against torch-fidelity's `2048` and `logits_unbiased` (its
    // `x.mm(fc.weight.T)`): the f32 network bound of fid_net.rs, ≤ 1e-4 of the largest entry.
    let max_rel = |a: &Tensor, b: &Tensor| ((a - b).abs().max().double_value(&[])) / b.abs().max().double_value(&[]);
    let our_gen = state.features.as_ref().unwrap().to_tensor(Device::Cpu).unwrap();
    let our_ref = reference.features.as_ref().unwrap().to_tensor(Device::Cpu).unwrap();
    let (tf_gen, tf_ref) = (npy2(&d.join("tf_gen_features.npy")), npy2(&d.join("tf_ref_features.npy")));
    let e_feat = max_rel(&our_gen, &tf_gen).max(max_rel(&our_ref, &tf_ref));
    let e_logit = max_rel(&Tensor::cat(&our_logits, 0), &npy2(&d.join("tf_gen_logits.npy")));
    eprintln!("features rel err {e_feat:.2e}, logits rel err {e_logit:.2e}");
    assert!(e_feat < 1e-4 && e_logit < 1e-4, "{e_feat} {e_logit}");

    let m = image_metrics(&state, &reference, &cfg, Device::Cpu).unwrap();
    let is = m.inception_score.unwrap();
    let kd = m.kid.unwrap();
    let pr = m.prdc.unwrap();
    let e_is = rel(is.mean, f(&want, "inception_score_mean"));
    let e_kid = rel(kd.mean, f(&want, "kernel_inception_distance_mean"));
    eprintln!(
        "IS {:.6} (torch-fidelity {:.6}, rel {e_is:.2e}); KID {:.6e} (torch-fidelity {:.6e}, rel {e_kid:.2e}); P {} R {}",
        is.mean,
        f(&want, "inception_score_mean"),
        kd.mean,
        f(&want, "kernel_inception_distance_mean"),
        pr.precision,
        pr.recall
    );
    assert!(is.mean > 1.05, "the fixture's IS must be away from 1: {is:?}");
    assert!(e_is < 1e-4, "IS {is:?} vs {want}");
    assert!(e_kid < 1e-4, "KID {kd:?} vs {want}");

    // Precision/recall are equal, and provably so: no ≤ comparison lies closer to its radius (in
    // torch-fidelity's own f32 distances) than our distances and radii differ from theirs.
    let moved = prc_moved(d, "tfid", &our_gen, &our_ref, 10_000);
    eprintln!("P/R: smallest |d − radius| {:.2e}, our distances and radii move by ≤ {moved:.2e}", f(&want, "gap"));
    assert!(f(&want, "gap") > moved, "fixture too close to a tie for exact equality");
    assert_eq!((pr.precision_count, pr.recall_count), (u(&want, "precision_count"), u(&want, "recall_count")));
}

/// `bench fid` on folders of mixed image sizes against clean-fid (each image resized on its own
/// with PIL bicubic), and `bench stats --ref-features` on such a folder: readable by pytorch-fid,
/// subset = numpy's `RandomState(seed).choice`.
#[test]
fn mixed_size_folders_match_clean_fid_and_stats_keep_reference_features() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = random_inception().join("zip.pth");
    let want = f(&oracle("cleanfid", d, &[weights.to_str().unwrap()]), "fid");
    let p = |s: &str| d.join(s).to_str().unwrap().to_string();
    let common = ["--dims", "64", "--mode", "clean", "--weights", weights.to_str().unwrap(), "--allow-custom-weights", "--device", "cpu", "--quiet"];
    let mut args = vec!["fid".to_string(), p("gen"), p("ref")];
    args.extend(common.iter().map(|s| s.to_string()));
    let out = bench(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ours: f64 = stdout(&out).trim().strip_prefix("FID: ").unwrap().parse().unwrap();
    // 64-d features of the first Inception block (3 convolutions) in f32 on both sides; clean-fid
    // takes a general sqrtm of the product of 64-d covariances from 80 and 90 images: its
    // rounding, ~1e-7 of the traces, against an FID of ~0.1 of them bounds the agreement at 1e-5.
    eprintln!("mixed sizes: FID ours {ours} clean-fid {want} rel {:.2e}", rel(ours, want));
    assert!(rel(ours, want) < 1e-5, "{ours} vs {want}");

    for (k, seed) in [(10usize, 3u32), (1000, 0)] {
        let npz = p(&format!("s{k}.npz"));
        let mut args = vec!["stats".to_string(), p("gen"), "--out".into(), npz.clone(), "--ref-features".into(), k.to_string(), "--ref-features-seed".into(), seed.to_string()];
        args.extend(common.iter().map(|s| s.to_string()));
        let out = bench(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let r = oracle("read_stats", d, &[&npz, "80", &k.min(80).to_string(), &seed.to_string()]);
        assert_eq!((r["mu_len"].as_u64(), r["sigma_shape"].clone()), (Some(64), serde_json::json!([64, 64])), "{r}");
        // pytorch-fid's FID of the file with itself: 0 up to scipy sqrtm's rounding.
        assert!(f(&r, "fid_self").abs() < 1e-6, "{r}");
        assert_eq!(r["index"], r["want_index"], "{r}");
        assert_eq!(r["features_shape"], serde_json::json!([k.min(80), 64]));
        assert_eq!(r["features_dtype"], "float32");
        assert_eq!(r["meta"], serde_json::json!([80, seed]));
        // With every image kept, the stored features average to `mu` (f64 sums of the same f32s).
        if k >= 80 {
            let reference = fid_cli::load_reference_file(Path::new(&npz)).unwrap();
            let rows = reference.features.unwrap().to_tensor(Device::Cpu).unwrap().to_kind(Kind::Double);
            let mean = Vec::<f64>::try_from(rows.mean_dim(Some(&[0i64][..]), false, Kind::Double)).unwrap();
            let err = mean.iter().zip(reference.moments.mu.iter()).fold(0f64, |m, (a, b)| m.max((a - b).abs() / b.abs().max(1e-3)));
            assert!(err < 1e-12, "{err}");
        }
    }
    // A statistics file has no images to keep features of.
    let out = bench(&["stats", &p("s10.npz"), "--out", &p("x.npz"), "--ref-features", "5", "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim_end(),
        "error: --ref-features keeps features of images; this input is a statistics file without them"
    );
}

/// FD in a TorchScript feature space with EDM2's DINOv2 preprocessing equals numpy/scipy's FD of
/// the encoder's features computed in Python.
#[test]
fn fd_features_match_edm2_preprocessing_and_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let want = f(&oracle("fd", d, &[&tch::get_num_threads().to_string()]), "fd");
    let yaml = format!(
        "name: fd_test\nencoder: {}\nreference: {}\nresize: {{size: 32}}\nnormalize: imagenet\n",
        d.join("enc.pt").display(),
        d.join("ref_features.npy").display()
    );
    let spec: FdFeaturesSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    let fd = FdFeatures::load(&spec, Device::Cpu).unwrap();
    let Input::Images(gen) = open_input(d.join("gen").to_str().unwrap()).unwrap() else { panic!() };
    let stats = fid_cli::source_stats(gen.as_ref(), &fd, 16, true).unwrap();
    let ours = fd.distance(&stats).unwrap();
    // Same TorchScript module, libtorch, batches and thread count: the features are the same floats.
    let batch = gen.read_batch(0, 16).unwrap();
    let py = npy2(&d.join("py_gen_features.npy"));
    let feat_err = (fd.features(&batch).unwrap() - py.narrow(0, 0, 16)).abs().max().double_value(&[]);
    eprintln!("fd_features: ours {ours} numpy {want} rel {:.2e}; feature max abs diff {feat_err:.1e}; threads {}", rel(ours, want), tch::get_num_threads());
    assert_eq!(feat_err, 0.0);
    // f64 moments of identical features; our trace-sqrt (Cholesky + symmetric eigenvalues) against
    // scipy's sqrtm, both backward stable on 24 dims: ~1e-13 of the traces, FD ~0.1 of them: 1e-9.
    assert!(rel(ours, want) < 1e-9, "{ours} vs {want}");
    // A statistics reference gives the same FD.
    let spec_npz = FdFeaturesSpec { reference: d.join("ref_stats.npz"), ..spec };
    let via_npz = FdFeatures::load(&spec_npz, Device::Cpu).unwrap().distance(&stats).unwrap();
    assert!(rel(via_npz, ours) < 1e-12, "{via_npz} vs {ours}");
}

/// Diffusion-TS's Sines windows bit for bit (up to `sin`'s last bit) and its Context-FID pipeline.
#[test]
fn sines_and_context_fid_match_diffusion_ts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let want = f(&oracle("ctx", d, &[&tch::get_num_threads().to_string()]), "context_fid");
    let ori: Array3<f64> = ndarray_npy::read_npy(d.join("ori.npy")).unwrap();
    let ours = sines(&SinesConfig { num: 300, window: 24, dim: 5, seed: 123 }).unwrap();
    // Same uniform draws (numpy's generator, reproduced exactly); `sin` of numpy and of Rust's libm
    // are each within 1 ulp, so after (x + 1)/2 the windows agree to 2⁻⁵³ (one ulp of 0.5..1).
    let max_diff = (&ours - &ori).iter().fold(0f64, |m, v| m.max(v.abs()));
    eprintln!("sines max |ours − Diffusion-TS| {max_diff:.1e}");
    assert!(max_diff <= f64::EPSILON / 2.0, "{max_diff}");

    let to_t = |a: &Array3<f64>| {
        let (n, t, c) = a.dim();
        Tensor::from_slice(a.as_slice().unwrap()).reshape([n as i64, t as i64, c as i64])
    };
    let fake: Array3<f32> = ndarray_npy::read_npy(d.join("fake_model_space.npy")).unwrap();
    let (n, t, c) = fake.dim();
    let fake = Tensor::from_slice(fake.as_slice().unwrap()).reshape([n as i64, t as i64, c as i64]);
    let cf = ContextFid::load(&d.join("ts2vec.pt"), TsScaling::NegOneToOne, Device::Cpu).unwrap();
    let real = cf.reference_stats(&to_t(&ori), 8).unwrap();
    let gen = cf.stats(&fake, 8).unwrap();
    let ours_fid = context_fid(&gen, &real).unwrap();
    // Representations: same module, batches of 8, thread count and float32 inputs ((x+1)/2 rounds
    // once either way) → the same floats.
    let py_fake = npy2(&d.join("py_fake_repr.npy"));
    let repr_err = (cf.features(&fake.narrow(0, 0, 8)).unwrap() - py_fake.narrow(0, 0, 8)).abs().max().double_value(&[]);
    eprintln!("Context-FID ours {ours_fid} Diffusion-TS {want} rel {:.2e}; repr max abs diff {repr_err:.1e}", rel(ours_fid, want));
    assert_eq!(repr_err, 0.0);
    // FD of 40-d representations of 300 windows each, FD ~ 6e-3 against traces ~1e-1; scipy's
    // sqrtm (Schur) vs our symmetric route agree to ~1e-12 of the traces → 1e-8 of the FD.
    assert!(rel(ours_fid, want) < 1e-8, "{ours_fid} vs {want}");
    // The FD math alone on Diffusion-TS's own representations.
    let stats_of = |x: &Tensor| {
        let mut s = FeatureStats::new(x.size()[1] as usize, Device::Cpu);
        s.add_batch(x).unwrap();
        s.moments().unwrap()
    };
    let (a, b) = (stats_of(&npy2(&d.join("py_ori_repr.npy"))), stats_of(&py_fake));
    let on_theirs = frechet_distance(b.mu.view(), b.sigma.view(), a.mu.view(), a.sigma.view()).unwrap();
    assert!(rel(on_theirs, want) < 1e-8, "{on_theirs} vs {want}");
}

#[test]
fn respacing_rules_match_guided_diffusion_and_diffusion_ts() {
    let dir = tempfile::tempdir().unwrap();
    let space: Vec<(usize, &str)> = vec![
        (1000, "ddim50"),
        (1000, "ddim25"),
        (1000, "ddim3"),
        (1000, "ddim7"),
        (4000, "ddim100"),
        (1000, "250"),
        (1000, "10,10,20"),
        (300, "10,15,20"),
        (1000, "1,1,1"),
        (1000, "0,5"),
        (999, "7,13,17,2"),
        (4000, "25"),
        (100, "60,60"),
        (1000, "ddim3000"),
    ];
    let dts: Vec<(usize, usize)> = vec![(500, 500), (500, 50), (500, 7), (1000, 333), (1000, 100), (200, 3), (50, 49), (1000, 1)];
    let cases = serde_json::json!({"space": space, "dts": dts});
    let want = oracle("respace", dir.path(), &[&cases.to_string()]);
    for (i, (t, spec)) in space.iter().enumerate() {
        let w = &want["space"][i];
        match space_timesteps(*t, spec) {
            Ok(ours) => assert_eq!(serde_json::json!(ours), *w, "space_timesteps({t}, {spec:?})"),
            Err(e) => assert!(w.is_null(), "space_timesteps({t}, {spec:?}): ours failed ({e}) but guided-diffusion gives {w}"),
        }
    }
    for (i, (t, s)) in dts.iter().enumerate() {
        let ours = diffusion_ts_fast_sampling(*t, *s).unwrap();
        assert_eq!(serde_json::json!(ours), want["dts"][i], "fast_sample T={t} S={s}");
        assert_eq!(ours.len(), *s);
    }
}

/// The LDM model zoo's precision/recall numbers parse as published numbers (the report's reader)
/// and carry their sampler settings.
#[test]
fn ldm_precision_recall_numbers_parse() {
    let text = include_str!("../../data/published/ldm_precision_recall.csv");
    let rows = samplerbench::report::published::parse_csv("ldm_precision_recall.csv", text).unwrap();
    assert_eq!(rows.len(), 12);
    // Named as bench's PRDC columns (k = 3, ADM's evaluator), so the report shows them beside ours.
    assert!(rows.iter().all(|r| (r.metric == "prdc_precision" || r.metric == "prdc_recall") && r.sampler == "ddim"));
    let p = rows.iter().find(|r| r.dataset == "celebahq256" && r.metric == "prdc_precision").unwrap();
    assert_eq!((p.value, p.steps, p.nfe, p.eta), (0.72, Some(200), Some(200), Some(0.0)));
    let r = rows.iter().find(|r| r.dataset == "lsun_church" && r.metric == "prdc_recall").unwrap();
    assert_eq!((r.value, r.steps, r.eta), (0.52, Some(400), Some(0.0)));
}

/// `bench run` with `inception_score`, `kid` and `prdc` beside `fid` (one Inception pass), in two
/// shards that merge, equals the library's one-pass computation on the PNGs the run saved (uint8
/// images round-trip PNG exactly, and the same 12-image batches go through the same network, so
/// the features are the same floats); IS sums are merged in another order (TwoSum-compensated:
/// ≤ 1e-12 relative), KID and PRDC see the same features (equal). Spec errors exit 2.
#[test]
fn bench_run_computes_is_kid_prdc_from_fids_inception_pass_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = d.join("w");
    let made = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/make_ci_weights.py"))
        .arg(&w)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    // The parity fixtures' Inception (make_ci_weights' portable one gives IS − 1 ≈ 2e-9 and
    // all-zero PRDC on these images: too degenerate to show anything).
    let weights = random_inception().join("zip.pth");
    let head = "name: m\noutput: out_m\nmodel: {kind: diffusers, path: w/unet}\nsamplers: [{name: ddim, eta: 0.0}]\nsteps: 2\nsamples: 24\n\
                batch_size: 12\ndevice: cpu\nsave_samples: all\n";
    // The reference: the same model's samples from other seeds, so the generated and reference
    // features come from one distribution and their k-NN balls overlap (the make_ci_weights
    // reference images lie far from this model's samples: PRDC would be all zero).
    let ref_spec = d.join("r.yaml");
    std::fs::write(&ref_spec, head.replace("name: m", "name: r").replace("out_m", "out_r").replace("samples: 24", "samples: 48") + "seed: 1000\n").unwrap();
    let o = bench(&["run", ref_spec.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ref_rows = samplerbench::results::read_results(&d.join("out_r")).unwrap();
    let ref_images = d.join("out_r/samples").join(&ref_rows[0].cell_hash);
    let refstats = d.join("ref.npz");
    let o = bench(&[
        "stats", ref_images.to_str().unwrap(), "--out", refstats.to_str().unwrap(),
        "--weights", weights.to_str().unwrap(), "--allow-custom-weights", "--ref-features", "60", "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let metrics = format!(
        "metrics:\n  fid: {{reference: ref.npz, weights: {}, allow_custom_weights: true}}\n  \
         inception_score: {{splits: 4}}\n  kid: {{subsets: 7, subset_size: 10}}\n  prdc:\n",
        weights.display()
    );
    std::fs::write(d.join("m.yaml"), format!("{head}{metrics}")).unwrap();
    let spec = d.join("m.yaml");
    for shard in ["2/2", "1/2"] {
        let o = bench(&["run", spec.to_str().unwrap(), "--shard", shard, "--quiet"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let rows = samplerbench::results::read_results(&d.join("out_m")).unwrap();
    assert_eq!(rows.len(), 1);
    let got = |k: &str| rows[0].metric(k).unwrap_or_else(|| panic!("no {k} in {:?}", rows[0].metrics));

    // The library on the saved PNGs, in one pass with the same batches.
    let net = FidInception::load(&weights, Device::Cpu, true).unwrap();
    let ex = InceptionExtractor { net, mode: ResizeMode::PytorchFid, dims: 2048 };
    let cfg = ImageMetricsConfig {
        inception_score: Some(IsParams { splits: 4, shuffle_seed: Some(2020) }),
        kid: Some(KidParams { subsets: 7, subset_size: 10, seed: 2020 }),
        prdc: Some(PrdcParams::default()),
    };
    let samples = d.join("out_m/samples").join(&rows[0].cell_hash);
    let Input::Images(gen) = open_input(samples.to_str().unwrap()).unwrap() else { panic!() };
    assert_eq!(gen.len(), 24);
    let mut state = ImageMetricsState::new(&cfg, 24, 2048, Device::Cpu).unwrap();
    fid_cli::for_each_batch(gen.as_ref(), &ex, 12, true, true, &mut |first, feats, logits| state.add_batch(first, feats, logits))
        .unwrap();
    let reference = fid_cli::load_reference_file(&refstats).unwrap();
    let want = image_metrics(&state, &reference, &cfg, Device::Cpu).unwrap();
    let (is, kd, pr) = (want.inception_score.unwrap(), want.kid.unwrap(), want.prdc.unwrap());
    eprintln!(
        "bench run: FID {} IS {} KID {:e} P {} R {} D {} C {}; library: FID {} IS {} KID {:e}",
        got("fid"), got("inception_score"), got("kid"), got("prdc_precision"), got("prdc_recall"), got("prdc_density"), got("prdc_coverage"),
        want.fid, is.mean, kd.mean
    );
    assert!(rel(got("fid"), want.fid) < 1e-12, "{} vs {}", got("fid"), want.fid);
    // The random Inception's logits are small, so IS is 1 + O(1e-7): compare log IS, which the
    // merged f64 sums carry to ~1e-16 absolute, i.e. ≤ 1e-6 relative at this size.
    assert!(is.mean - 1.0 > 1e-8, "degenerate fixture: {is:?}");
    assert!(rel(got("inception_score").ln(), is.mean.ln()) < 1e-6, "{} vs {is:?}", got("inception_score"));
    assert_eq!(got("kid"), kd.mean);
    assert_eq!(got("kid_se"), kd.standard_error);
    assert_eq!((got("prdc_precision"), got("prdc_recall"), got("prdc_density"), got("prdc_coverage")), (pr.precision, pr.recall, pr.density, pr.coverage));
    // A fixture where every PRDC number means something: none is 0 (no overlap) and precision,
    // recall and coverage are not all 1 (everything covered).
    for (k, v) in [("precision", pr.precision), ("recall", pr.recall), ("density", pr.density), ("coverage", pr.coverage)] {
        assert!(v > 0.0, "degenerate fixture: {k} = {v} ({pr:?})");
    }
    assert!(pr.precision < 1.0 || pr.recall < 1.0 || pr.coverage < 1.0, "degenerate fixture: {pr:?}");

    // Without fid, or with a reference that keeps no features: exit 2, one line naming the key/file.
    std::fs::write(d.join("nofid.yaml"), format!("{head}metrics: {{kid: {{}}}}\n")).unwrap();
    let o = bench(&["run", d.join("nofid.yaml").to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("metrics.kid") && stderr(&o).contains("needs `metrics.fid`"), "{}", stderr(&o));
    let plain = d.join("plain.npz");
    let o = bench(&["stats", refstats.to_str().unwrap(), "--out", plain.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::write(d.join("plain.yaml"), format!("{}{}", head.replace("out_m", "out_p"), metrics.replace("ref.npz", "plain.npz"))).unwrap();
    let o = bench(&["run", d.join("plain.yaml").to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("plain.npz") && stderr(&o).contains("--ref-features"), "{}", stderr(&o));
}
