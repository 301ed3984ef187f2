//! CLI contract: doctor output, exit codes.
use crate::common::*;

#[test]
fn doctor_reports_linked_libtorch_cuda_and_exits_0() {
    let out = bench(&["doctor"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("libtorch     2.11.0"), "{s}");
    // The build must link libtorch_cuda (so the same binary uses a GPU where there is one).
    assert!(s.contains("torch_cuda   linked"), "{s}");
    // libtorch's matrix products must run on the MKL it bundles (as in PyTorch), not on OpenBLAS.
    assert!(
        s.contains("BLAS         sgemm_ dgemm_ dpotrf_ dsyevd_ from libtorch_cpu.so (the MKL bundled with PyTorch); dsyev_ dsygst_ from libopenblas"),
        "{s}"
    );
    assert!(s.contains("pt_inception-2015-12-05"), "{s}");
}

#[test]
fn binary_needs_no_library_path() {
    // rpath: the binary runs with an empty LD_LIBRARY_PATH, outside cargo.
    let out = std::process::Command::new(bench_bin())
        .arg("doctor")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let readelf = std::process::Command::new("readelf").args(["-d"]).arg(bench_bin()).output().unwrap();
    let dynamic = stdout(&readelf);
    assert!(dynamic.contains("libtorch_cuda.so"), "libtorch_cuda.so not NEEDED:\n{dynamic}");
    assert!(dynamic.contains("RUNPATH") || dynamic.contains("RPATH"), "{dynamic}");
}

#[test]
fn unknown_subcommand_is_a_user_error() {
    let out = bench(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unrecognized subcommand 'frobnicate'"), "{}", stderr(&out));
}

/// README's sampler and metric tables are generated from their definitions: they must not drift.
/// `BENCH_UPDATE_README=1 cargo test readme_tables` rewrites them.
#[test]
fn readme_tables_match_the_definitions() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    for (marker, want) in [
        ("samplers", samplerbench::sampling::def::render_markdown()),
        ("metrics", samplerbench::metrics::render_markdown()),
        ("diffusers", samplerbench::sampling::diffusers_config::render_markdown()),
    ] {
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = (format!("<!-- {marker}:begin -->\n"), format!("<!-- {marker}:end -->"));
        let a = text.find(&begin).unwrap_or_else(|| panic!("README lacks {begin}")) + begin.len();
        let b = text.find(&end).unwrap_or_else(|| panic!("README lacks {end}"));
        if std::env::var_os("BENCH_UPDATE_README").is_some() {
            std::fs::write(&path, format!("{}{want}{}", &text[..a], &text[b..])).unwrap();
            continue;
        }
        assert_eq!(&text[a..b], want, "README's {marker} table drifted; rerun with BENCH_UPDATE_README=1");
    }
}

#[test]
fn samplers_lists_filters_and_prints_json() {
    let out = bench(&["samplers", "dpm_solver"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    let names: Vec<&str> = s.lines().filter(|l| !l.starts_with(' ') && !l.is_empty()).collect();
    assert_eq!(names, ["dpm_solver", "dpm_solver++", "flow_dpm_solver++", "every discrete-VP sampler"]);
    assert!(s.contains("  --set order=3"), "{s}");
    assert!(s.ends_with("  --set schedule_dtype=float64  ᾱ and σ̃ tables in float64, or in float32 as diffusers builds them (bit for bit); one of float64, float32\n"), "{s}");
    let out = bench(&["samplers", "--json", "ddim"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["name"], "ddim");
    assert_eq!(v[0]["params"][0]["name"], "eta");
    assert_eq!(v[0]["params"][0]["default"], "0");
    let params = v[0]["params"].as_array().unwrap();
    assert_eq!(params[params.len() - 1]["name"], "schedule_dtype");
    // σ-space samplers have no discrete schedule to compute.
    let out = bench(&["samplers", "edm_heun"]);
    assert!(!stdout(&out).contains("schedule_dtype"), "{}", stdout(&out));
    assert!(stdout(&out).contains("\n  models        σ-space models; discrete-VP and rectified-flow models through the exact conversion\n"), "{}", stdout(&out));
    assert_eq!(v[0]["models"], "discrete-VP models; σ-space and rectified-flow models through the exact conversion");
    let out = bench(&["samplers", "nothing-like-this"]);
    assert_eq!(out.status.code(), Some(2));
}
