//! Library error type. The CLI maps `BenchError::User` to exit 2 and everything else to exit 1.
use std::path::PathBuf;

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad input the user can fix: a path, a key, a value. The message names it and what is allowed.
    #[error("{0}")]
    User(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The model failed while running (a TorchScript exception, out of memory): the cell's
    /// last checkpoint is kept and a rerun resumes it once the cause is fixed.
    #[error("model failed: {0}")]
    Model(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// SIGTERM/SIGINT stopped a run at a batch boundary, after a checkpoint.
    #[error("interrupted ({}); rerun the same command to resume", signal_name(*signal))]
    Interrupted { signal: i32 },
    /// A part's lease was lost to another process (see `crate::runner::lease`).
    #[error("{0}")]
    Lease(String),
}

fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}

impl BenchError {
    pub fn user(msg: impl Into<String>) -> Self {
        BenchError::User(msg.into())
    }
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        BenchError::File { path: path.into(), message: message.into() }
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io { context: context.into(), source }
    }
    /// Exit code contract shared by every subcommand: 2 user error, 1 internal failure,
    /// 128 + signal number when interrupted (the shell's convention: 130 Ctrl-C, 143 SIGTERM).
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Interrupted { signal } => 128 + signal,
            BenchError::User(_) | BenchError::File { .. } => 2,
            // A missing path, a read-only folder or a full disk is the user's to fix.
            BenchError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                2
            }
            _ => 1,
        }
    }
}
