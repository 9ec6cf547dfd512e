//! The trainer's library: datasets and splits, augmentation, synthetic fingerprints and
//! contact sheets. The `trainer` binary is a thin command line over it.

pub mod augment;
pub mod backbone;
pub mod dataset;
pub mod evaluate;
pub mod export;
pub mod loader;
pub mod model;
pub mod openset;
pub mod optim;
pub mod plot;
pub mod run;
pub mod saliency;
pub mod sheet;
pub mod synth;
pub mod train;
