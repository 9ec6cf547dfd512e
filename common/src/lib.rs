//! What the trainer and the daemon share, so that they can never drift apart: decoding a scan
//! from the formats sensors produce, with limits against hostile input, and the preprocessing
//! that turns it into the network's input.

pub mod preprocess;
pub mod scan;

pub use preprocess::{Preprocessing, ResizePolicy};
pub use scan::{decode_raw, decode_scan, read_scan, ScanError, ScanLimits};
