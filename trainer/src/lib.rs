//! The trainer's library: datasets and splits, augmentation, synthetic fingerprints and
//! contact sheets. The `trainer` binary is a thin command line over it.

pub mod augment;
pub mod dataset;
pub mod loader;
pub mod sheet;
pub mod synth;
