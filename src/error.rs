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
    /// Exit code contract shared by every subcommand: 2 user error, 1 internal failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::User(_) | BenchError::File { .. } => 2,
            BenchError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 2,
            _ => 1,
        }
    }
}
