//! What the trainer and the daemon share, so that they can never drift apart: decoding a scan
//! from the formats sensors produce, with limits against hostile input, the preprocessing
//! that turns it into the network's input, the service's configuration and the decision
//! message it publishes.

pub mod config;
pub mod decision;
pub mod durable;
pub mod gallery;
pub mod matcher;
pub mod mcc;
pub mod minutiae;
pub mod openset;
pub mod patches;
pub mod preprocess;
pub mod scan;

pub use config::{DaemonConfig, DEFAULT_CONFIG};
pub use decision::{Candidate, Decision, MatchMode, ModelRef, ScanSource, SourceKind, Verdict};
pub use gallery::Gallery;
pub use matcher::MatcherMode;
pub use preprocess::{ChannelNorm, Preprocessing, ResizePolicy};
/// The model class of scans of fingers that are not to be recognised (`trainer train
/// --background`): it teaches the network that other fingers exist, so a stranger lands
/// there rather than on the enrolled finger it most resembles. Never granted, never enrolled.
pub const BACKGROUND_LABEL: &str = "(background)";

pub use scan::{decode_raw, decode_scan, read_limited, read_scan, ScanError, ScanLimits};
