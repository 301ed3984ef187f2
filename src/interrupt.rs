//! SIGTERM and SIGINT stop `bench run` cleanly at the next batch boundary.
//!
//! Slurm sends SIGTERM at a time limit, on preemption, `scancel` and `scontrol requeue`, and
//! SIGKILL `KillWait` seconds (default 30) later. With [`install`]ed handlers the first signal
//! only sets a flag; the runner checkpoints after the batch in progress, releases its lease and
//! exits 128 + signal number with "rerun the same command to resume". A second signal takes the
//! default action at once (Ctrl-C twice quits immediately); the checkpoint written every few
//! batches still bounds what is lost.
use crate::{BenchError, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// Installs the handlers (once per process, before the run starts).
pub fn install() -> Result<()> {
    let err = |e: std::io::Error| BenchError::Internal(format!("installing signal handlers: {e}"));
    for sig in [SIGTERM, SIGINT] {
        // Handlers run in registration order: the default action only once the flag is already set.
        signal_hook::flag::register_conditional_default(sig, &REQUESTED).map_err(err)?;
        signal_hook::flag::register_usize(sig, &SIGNAL, sig as usize).map_err(err)?;
        signal_hook::flag::register(sig, &REQUESTED).map_err(err)?;
    }
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop was asked for: call where stopping leaves consistent files.
pub fn check() -> Result<()> {
    if requested() {
        return Err(BenchError::Interrupted { signal: SIGNAL.load(Ordering::SeqCst) as i32 });
    }
    Ok(())
}
