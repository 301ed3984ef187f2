//! `bench doctor`: what this build links, what hardware it sees, which data files are present.
use crate::registry::{self, Artifact};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Facts about the running libtorch and devices, also recorded in results and reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Environment {
    pub bench_version: String,
    pub git_commit: String,
    pub libtorch_version: String,
    pub libtorch_dir: String,
    pub libtorch_cuda_linked: bool,
    pub cuda_available: bool,
    pub cuda_devices: Vec<String>,
    pub cudnn_version: Option<i64>,
    pub threads: i32,
    pub blas: String,
}

impl Environment {
    pub fn probe() -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let loaded = |name: &str| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|p| Path::new(p).file_name().is_some_and(|f| f.to_string_lossy().starts_with(name)))
                .map(PathBuf::from)
        };
        let libtorch = loaded("libtorch_cpu.so");
        let libtorch_dir = libtorch.as_deref().and_then(Path::parent).map(Path::to_path_buf);
        // PyTorch wheels keep `version.py` one level above `lib/`.
        let libtorch_version = libtorch_dir
            .as_deref()
            .and_then(|d| std::fs::read_to_string(d.join("../version.py")).ok())
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string()))
            })
            .unwrap_or_else(|| "2.11.0 (required by tch 0.24; version.py not found)".into());
        let cuda_available = tch::Cuda::is_available();
        let cuda_devices = if cuda_available { cuda_device_names() } else { vec![] };
        let cudnn_version = (cuda_available && tch::Cuda::cudnn_is_available()).then(tch::utils::version_cudnn);
        let blas = blas_providers(&maps);
        Environment {
            bench_version: crate::VERSION.into(),
            git_commit: crate::GIT_COMMIT.into(),
            libtorch_version,
            libtorch_dir: libtorch_dir.map(|d| d.display().to_string()).unwrap_or_else(|| "?".into()),
            libtorch_cuda_linked: loaded("libtorch_cuda.so").is_some(),
            cuda_available,
            cuda_devices,
            cudnn_version,
            threads: tch::get_num_threads(),
            blas,
        }
    }
}

/// Which loaded library each BLAS/LAPACK routine binds to. The dynamic linker binds a symbol to
/// the first library that defines it, for libtorch as for bench's own linear algebra, so this is
/// what actually runs: libtorch's bundled MKL must come first or PyTorch's matrix products run on
/// another BLAS's threads (build.rs orders the libraries).
fn blas_providers(maps: &str) -> String {
    let ranges: Vec<(usize, usize, &str)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let path = f.nth(4)?;
            Some((usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?, path))
        })
        .collect();
    let this = libloading::os::unix::Library::this();
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for sym in ["sgemm_", "dgemm_", "dpotrf_", "dsyevd_", "dsyev_", "dsygst_"] {
        // SAFETY: only the symbol's address is read; nothing is called.
        let addr = unsafe { this.get::<*const ()>(sym.as_bytes()) }.map(|s| *s as usize).ok();
        let lib = addr
            .and_then(|a| ranges.iter().find(|(lo, hi, _)| (*lo..*hi).contains(&a)))
            .and_then(|(_, _, p)| Path::new(p).file_name())
            .map_or_else(|| "not found".to_string(), |f| f.to_string_lossy().into_owned());
        match groups.iter_mut().find(|(l, _)| *l == lib) {
            Some((_, syms)) => syms.push(sym),
            None => groups.push((lib, vec![sym])),
        }
    }
    let describe = |lib: &str| match lib {
        l if l.starts_with("libtorch_cpu") => format!("{l} (the MKL bundled with PyTorch)"),
        l if l.starts_with("libopenblas") => format!("{l} ({})", openblas_config()),
        l => l.to_string(),
    };
    groups.iter().map(|(lib, syms)| format!("{} from {}", syms.join(" "), describe(lib))).collect::<Vec<_>>().join("; ")
}

fn openblas_config() -> String {
    // Linked through openblas-src; a `#[link]` here would put OpenBLAS ahead of libtorch (build.rs).
    extern "C" {
        fn openblas_get_config() -> *const std::os::raw::c_char;
    }
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(openblas_get_config()) }.to_string_lossy().trim().to_string()
}

/// tch has no device-name API; ask the CUDA driver directly (it is loaded once CUDA is available).
fn cuda_device_names() -> Vec<String> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetName = unsafe extern "C" fn(*mut std::os::raw::c_char, i32, i32) -> i32;
    let n = tch::Cuda::device_count();
    let unknown = || (0..n).map(|i| format!("cuda:{i}")).collect();
    // SAFETY: symbols have the documented CUDA driver API signatures.
    unsafe {
        let Ok(lib) = libloading::Library::new("libcuda.so.1") else { return unknown() };
        let (Ok(init), Ok(get), Ok(name)) = (
            lib.get::<CuInit>(b"cuInit"),
            lib.get::<CuDeviceGet>(b"cuDeviceGet"),
            lib.get::<CuDeviceGetName>(b"cuDeviceGetName"),
        ) else {
            return unknown();
        };
        if init(0) != 0 {
            return unknown();
        }
        (0..n as i32)
            .map(|i| {
                let mut dev = 0;
                let mut buf = [0 as std::os::raw::c_char; 256];
                if get(&mut dev, i) == 0 && name(buf.as_mut_ptr(), 256, dev) == 0 {
                    format!("cuda:{i} {}", std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy())
                } else {
                    format!("cuda:{i}")
                }
            })
            .collect()
    }
}

pub fn report(data_dir: &Path) -> String {
    let env = Environment::probe();
    let mut s = String::new();
    let _ = writeln!(s, "bench        {} (commit {})", env.bench_version, env.git_commit);
    let _ = writeln!(s, "libtorch     {} at {}", env.libtorch_version, env.libtorch_dir);
    let _ = writeln!(s, "torch_cuda   {}", if env.libtorch_cuda_linked { "linked" } else { "NOT linked (CPU only)" });
    let _ = writeln!(s, "CUDA         {}", if env.cuda_available { "available" } else { "not available" });
    for d in &env.cuda_devices {
        let _ = writeln!(s, "  device     {d}");
    }
    let _ = writeln!(s, "cuDNN        {}", env.cudnn_version.map_or("-".into(), |v| v.to_string()));
    let _ = writeln!(s, "threads      {} (libtorch intra-op), {} (rayon)", env.threads, rayon::current_num_threads());
    let _ = writeln!(s, "BLAS         {}", env.blas);
    let _ = writeln!(s, "data dir     {}", data_dir.display());
    for a in registry::ARTIFACTS {
        let _ = writeln!(s, "  {:<28} {}", a.name, presence(a, data_dir));
    }
    s
}

fn presence(a: &Artifact, data_dir: &Path) -> String {
    let p = a.default_path(data_dir);
    if p.exists() {
        format!("present  {}", p.display())
    } else {
        format!("missing  {} (obtain: {})", p.display(), a.url)
    }
}
