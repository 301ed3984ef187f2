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
    assert!(s.contains("BLAS         OpenBLAS ("), "{s}");
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
