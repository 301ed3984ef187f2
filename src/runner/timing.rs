//! How fast a cell ran and on how busy a machine: per-batch time per step summarised as a
//! spread, the load average, and the CPU thread settings both thread pools run with.
use crate::results::CellTiming;

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`); None where there is none.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Quantile q of sorted values by linear interpolation (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl CellTiming {
    /// The spread of the per-batch seconds per step; None without a finite one.
    pub fn from_batches(cell: usize, cell_hash: &str, per_batch: &[f64], load_average: Option<[f64; 3]>) -> Option<CellTiming> {
        let mut v: Vec<f64> = per_batch.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(CellTiming {
            cell,
            cell_hash: cell_hash.to_string(),
            batches: v.len() as u64,
            seconds_per_step_median: quantile(&v, 0.5),
            seconds_per_step_min: v[0],
            seconds_per_step_q1: quantile(&v, 0.25),
            seconds_per_step_q3: quantile(&v, 0.75),
            seconds_per_step_max: v[v.len() - 1],
            load_average,
        })
    }
}

/// The CPU thread defaults of `bench run` / `bench sample`, before libtorch's OpenMP runtime
/// starts: OpenMP workers that wait passively (GNU OpenMP's default busy-waits after every
/// parallel region, which takes the cores rayon's noise and PNG work and other processes need,
/// and stalls its own barriers on a loaded machine), and a rayon pool no larger than libtorch's.
/// libgomp reads `OMP_WAIT_POLICY` when the library loads, before `main`, so an unset policy is
/// applied by re-executing the binary once with it set. Returns only if no re-exec happened.
pub fn configure_cpu_threads() {
    #[cfg(unix)]
    if std::env::var_os("OMP_WAIT_POLICY").is_none() && std::env::var_os("BENCH_NO_REEXEC").is_none() {
        use std::os::unix::process::CommandExt;
        if let Ok(exe) = std::env::current_exe() {
            let err = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env("OMP_WAIT_POLICY", "PASSIVE")
                .env("BENCH_NO_REEXEC", "1")
                .exec();
            tracing::warn!("could not re-execute with OMP_WAIT_POLICY=PASSIVE ({err}); OpenMP threads may busy-wait");
        }
    }
    let threads = tch::get_num_threads().max(1) as usize;
    if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global() {
        tracing::debug!("rayon pool already configured: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_batches() {
        let t = CellTiming::from_batches(3, "h", &[0.4, 0.1, f64::NAN, 0.2, 0.3], Some([1.0, 2.0, 3.0])).unwrap();
        assert_eq!(t.batches, 4);
        assert_eq!((t.seconds_per_step_min, t.seconds_per_step_max), (0.1, 0.4));
        // numpy.quantile([0.1, 0.2, 0.3, 0.4], [0.25, 0.5, 0.75]) = 0.175, 0.25, 0.325.
        for (got, want) in [(t.seconds_per_step_q1, 0.175), (t.seconds_per_step_median, 0.25), (t.seconds_per_step_q3, 0.325)] {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
        assert!(CellTiming::from_batches(0, "h", &[f64::NAN], None).is_none());
    }

    #[test]
    fn load_average_reads_three_numbers() {
        if std::path::Path::new("/proc/loadavg").exists() {
            let l = load_average().unwrap();
            assert!(l.iter().all(|x| x.is_finite() && *x >= 0.0), "{l:?}");
        }
    }
}
