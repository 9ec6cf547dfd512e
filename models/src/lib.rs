//! The networks of the fingerprint system: a trainable ResNet family with torchvision's
//! parameter names, and the import of pretrained checkpoints.
//!
//! Everything here is generic over the candle [`Device`](candle_core::Device): the same code
//! trains on CUDA and serves on a door controller's CPU.

pub mod batch_norm;
pub mod checkpoint;
pub mod conv;
pub mod device;
pub mod error;
pub mod export;
pub mod fast;
pub mod fold;
pub mod format;
pub mod formula;
// One FFI call to glibc's `mallopt`, with its SAFETY reasoning.
#[allow(unsafe_code)]
pub mod memory;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod pool;
pub mod resnet;
pub mod seeded;

pub use checkpoint::{load_checkpoint, load_into_varmap, CheckpointReport};
pub use device::device_from_name;
pub use error::{ModelError, Result};
pub use resnet::{Arch, ResNet};
