use std::fmt;
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
        mismatch: Mismatch,
    },

    #[error("unknown architecture '{0}' (expected resnet18, resnet34 or resnet50)")]
    UnknownArch(String),

    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// How a checkpoint differed from the network it was loaded into.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// In the network, absent from the file.
    pub missing: Vec<String>,
    /// In the file, unknown to the network.
    pub unexpected: Vec<String>,
    /// In both, with different shapes: (name, shape in the network, shape in the file).
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl Mismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        let mut list = |title: &str, items: Vec<String>| -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {} {title}:", items.len())?;
            for item in items.iter().take(SHOWN) {
                writeln!(f, "    {item}")?;
            }
            if items.len() > SHOWN {
                writeln!(f, "    ... and {} more", items.len() - SHOWN)?;
            }
            Ok(())
        };
        list("missing from the file", self.missing.clone())?;
        list("unexpected in the file", self.unexpected.clone())?;
        list(
            "with the wrong shape (network vs file)",
            self.wrong_shape
                .iter()
                .map(|(n, want, got)| format!("{n}: {want:?} vs {got:?}"))
                .collect(),
        )
    }
}
