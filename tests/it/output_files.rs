//! What runs leave on disk: checkpoint sizes, cleanup after a cell's row, and failures (full
//! disk, read-only folder, missing GPUs) that end in one line, exit 2 and no debris.
use crate::common::*;
use samplerbench::metrics::stats::{FeatureStats, Moments};
use samplerbench::results::read_results;
use std::path::Path;

fn oracle_spec(dir: &Path, name: &str, shape: &str, samples: u64, batch: u64, extra: &str) -> String {
    let body = format!(
        "name: {name}\nmodel:\n  kind: oracle\n  data: {{kind: gaussian, shape: {shape}, mean: 0.1, std: 0.5}}\n\
         samplers: [{{name: ddim, eta: 1.0}}]\nsteps: 3\nsamples: {samples}\nbatch_size: {batch}\nseed: 3\ndevice: cpu\n\
         metrics:\n  fd_pixel: {{}}\nsave_samples: 0\n{extra}"
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn one_line_error(o: &std::process::Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line:\n{err}");
    assert!(!err.contains("ZipWriter"), "{err}");
    err
}

/// A cell's checkpoint holds the sums only, Σffᵀ as its upper triangle: D(D+1)/2 float64, plus
/// Σf and its error (2·D float64), the count and the npy/zip headers (< 1 KiB per array, 6
/// arrays at most). The TwoSum error of Σffᵀ is absent after one batch (nothing was rounded)
/// and at most as large as the triangle again after several. Once the row is written the
/// checkpoints are removed unless `keep_stats: true`, and the numbers are the same either way.
#[test]
fn a_cells_checkpoint_is_a_packed_triangle_removed_after_its_row_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dims = 3 * 8 * 8;
    let triangle = 8 * dims * (dims + 1) / 2;
    let overhead = 8 * 2 * dims + 6 * 1024;
    for (batch, bound) in [(64, triangle + overhead), (16, 2 * triangle + overhead)] {
        let kept = d.join(format!("kept{batch}"));
        let spec = oracle_spec(d, &format!("k{batch}"), "[3, 8, 8]", 64, batch, "keep_stats: true\n");
        let o = bench(&["run", &spec, "--out", kept.to_str().unwrap(), "--quiet"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let npz: Vec<_> = files_under(&kept.join("cells")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "npz")).collect();
        assert_eq!(npz.len(), 1, "{npz:?}");
        let size = std::fs::metadata(&npz[0]).unwrap().len() as usize;
        eprintln!("batch {batch}: checkpoint {size} bytes (triangle {triangle}, full matrices would be {})", 4 * 8 * dims * dims);
        assert!(size <= bound, "batch {batch}: checkpoint of {size} bytes > {bound}");
        if batch == 64 {
            assert!(size >= triangle, "{size}");
        }
        let plain = d.join(format!("plain{batch}"));
        let spec = oracle_spec(d, &format!("p{batch}"), "[3, 8, 8]", 64, batch, "");
        let o = bench(&["run", &spec, "--out", plain.to_str().unwrap(), "--quiet"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        // Only the cell's timing summary (a few hundred bytes, read by run.json) stays.
        let left: Vec<_> = files_under(&plain.join("cells")).into_iter().filter(|p| !p.ends_with("timing.json")).collect();
        assert_eq!(left, Vec::<std::path::PathBuf>::new());
        let (a, b) = (&read_results(&kept).unwrap()[0], &read_results(&plain).unwrap()[0]);
        assert_eq!(a.metric("fd_pixel").unwrap().to_bits(), b.metric("fd_pixel").unwrap().to_bits());
    }
}

/// A 64 KiB tmpfs: `bench stats` of 2048-d statistics (33 MB) and a run whose checkpoint does
/// not fit both fail with one line naming the file, exit 2, and leave no file behind.
#[test]
fn a_full_disk_fails_in_one_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stats = d.join("ref.npz");
    Moments { mu: ndarray::Array1::zeros(2048), sigma: ndarray::Array2::eye(2048) }.save_npz(&stats).unwrap();
    let full = Tmpfs::new("64k");
    let out = full.path().join("out.npz");
    let o = bench(&["stats", stats.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let err = one_line_error(&o, 2);
    assert!(err.contains(out.to_str().unwrap()) && err.contains("No space left"), "{err}");
    assert_eq!(full.files(), Vec::<String>::new());

    // 768 dimensions: the checkpoint's triangle alone is 2.4 MB (more samples than dimensions,
    // so no rank warning).
    let spec = oracle_spec(d, "big", "[3, 16, 16]", 1000, 1000, "");
    let full = Tmpfs::new("256k");
    let o = bench(&["run", &spec, "--out", full.path().join("o").to_str().unwrap(), "--quiet"]);
    let err = one_line_error(&o, 2);
    assert!(err.contains("No space left") && err.contains("/part-1-of-1.next-1000.fd_pixel.npz: cannot write"), "{err}");
    let debris: Vec<String> = full.files().into_iter().filter(|f| f.contains(".tmp") || f.ends_with(".npz")).collect();
    assert_eq!(debris, Vec::<String>::new());
}

/// A read-only folder (a tmpfs remounted read-only: root cannot write it either) is refused
/// before any work: `bench stats` names the folder, not the missing Inception weights it would
/// have loaded next; `bench run` and `bench fid --save-stats` likewise. One line, exit 2.
#[test]
fn a_read_only_folder_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = d.join("images.npz");
    let a = ndarray::Array4::<u8>::from_shape_fn((4, 8, 8, 3), |(i, y, x, c)| (i * 31 + y * 7 + x * 3 + c) as u8);
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&images).unwrap());
    w.add_array("arr_0", &a).unwrap();
    w.finish().unwrap();
    let ro = Tmpfs::new("1m").read_only();
    let out = ro.path().join("o.npz");
    let missing = d.join("no-weights.pth");
    let o = bench(&["stats", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--weights", missing.to_str().unwrap(), "--quiet"]);
    let err = one_line_error(&o, 2);
    assert!(err.contains(ro.path().to_str().unwrap()) && err.contains("not writable") && err.contains("Read-only file system"), "{err}");
    let o = bench(&["fid", images.to_str().unwrap(), images.to_str().unwrap(), "--save-stats", out.to_str().unwrap(), "--weights", missing.to_str().unwrap(), "--quiet"]);
    let err = one_line_error(&o, 2);
    assert!(err.contains("not writable"), "{err}");

    let spec = oracle_spec(d, "ro", "[2, 3, 3]", 8, 8, "");
    let o = bench(&["run", &spec, "--out", ro.path().join("out").to_str().unwrap(), "--quiet"]);
    let err = one_line_error(&o, 2);
    assert!(err.contains(ro.path().to_str().unwrap()) && err.contains("Read-only file system"), "{err}");
    assert_eq!(ro.files(), Vec::<String>::new());
}

#[test]
fn devices_that_do_not_exist_are_a_one_line_user_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = oracle_spec(dir.path(), "dev", "[2, 3, 3]", 8, 8, "");
    let n = tch::Cuda::device_count();
    let o = bench(&["run", &spec, "--out", dir.path().join("o").to_str().unwrap(), "--devices", "0,99", "--quiet"]);
    let err = one_line_error(&o, 2);
    let seen = if n == 0 { "no CUDA device is available".to_string() } else { format!("only {n} CUDA devices are visible") };
    assert!(err.contains("--devices 0,99: GPU ") && err.contains(&seen), "{err}");
    if n == 0 {
        assert_eq!(err.trim_end(), "error: --devices 0,99: GPU 0 does not exist; no CUDA device is available");
    }
}

/// `bench stats` writes pytorch-fid's file (mu, sigma: 8·(D + D²) bytes and headers) unless
/// `--sums` asks for the mergeable sums too, which then merge/load as before.
#[test]
fn bench_stats_is_no_larger_than_pytorch_fids_file_unless_sums_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dims = 64usize;
    seed_torch(4);
    let feats = tch::Tensor::randn([300, dims as i64], (tch::Kind::Float, tch::Device::Cpu)).relu();
    let mut s = FeatureStats::new(dims, tch::Device::Cpu);
    for b in feats.split(50, 0) {
        s.add_batch(&b).unwrap();
    }
    let sums = d.join("sums.npz");
    s.save_npz(&sums).unwrap();
    let (plain, with_sums) = (d.join("plain.npz"), d.join("with_sums.npz"));
    for (out, extra) in [(&plain, None), (&with_sums, Some("--sums"))] {
        let mut args = vec!["stats", sums.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dims", "64", "--quiet"];
        args.extend(extra);
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let names = |p: &Path| {
        let mut n = ndarray_npy::NpzReader::new(std::fs::File::open(p).unwrap()).unwrap().names().unwrap();
        n.sort();
        n
    };
    assert_eq!(names(&plain), ["mu", "sigma"]);
    let size = std::fs::metadata(&plain).unwrap().len() as usize;
    assert!(size <= 8 * (dims + dims * dims) + 2 * 1024, "{size}");
    let want = s.moments().unwrap();
    assert_eq!(Moments::load_npz(&plain).unwrap(), want);
    let merged = FeatureStats::load_npz(&with_sums, tch::Device::Cpu).unwrap();
    assert_eq!((merged.count(), merged.moments().unwrap()), (300, want));
}
