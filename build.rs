// Make the `bench` binary (and test binaries) self-contained with respect to libtorch:
// - `--no-as-needed -ltorch_cuda`: the linker otherwise drops libtorch_cuda.so because no symbol
//   references it directly, and tch then reports CUDA unavailable even on a GPU machine
//   (tch-rs issue 907).
// - rpath to the libtorch lib dir, so target/release/bench runs outside `cargo`.
// The lib dir arrives as DEP_TCH_LIBTORCH_LIB only because torch-sys is a direct dependency.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=build.rs");
    // Re-read the commit whenever HEAD moves, so results record the commit actually built.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set; the binary will need LD_LIBRARY_PATH");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-env=BENCH_BUILD_LIBTORCH_LIB={lib_dir}");
    // libtorch_cpu first among the shared libraries: it exports the BLAS symbols of the MKL it
    // bundles (sgemm_, …), and the dynamic linker binds every `sgemm_` to the first library that
    // defines one. With system OpenBLAS (ndarray-linalg's) ahead of it, libtorch's matrix products
    // ran on OpenBLAS's own spinning thread pool nested inside libtorch's OpenMP regions: ~3× slower
    // than PyTorch on two idle cores and ~5× on a busy machine, and not PyTorch's numbers.
    println!("cargo:rustc-link-search=native={lib_dir}");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    let dir = Path::new(&lib_dir);
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{lib_dir}");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BENCH_GIT_COMMIT={commit}");
}
