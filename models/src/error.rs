use std::path::PathBuf;

/// Errors of the model crate. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a checkpoint this program can read: {reason}")]
    UnreadableCheckpoint { path: PathBuf, reason: String },

    #[error("{path}: checkpoint does not fit the {arch} network:\n{mismatch}")]
    CheckpointMismatch {
        path: PathBuf,
        arch: String,
        mismatch: crate::checkpoint::Mismatch,
    },

    #[error("unknown architecture '{0}' (expected resnet18, resnet34 or resnet50)")]
    UnknownArch(String),

    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
