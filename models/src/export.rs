//! An exported model ready to run: its file read and checked ([`crate::format`]), its network
//! built on the path that suits the device ([`Backend`]): our CPU engine ([`crate::fast`]),
//! int8 weights used in place from the mapped file, or candle's convolutions on the folded
//! graph ([`crate::fold`]) on any device.
//!
//! The file format's types are re-exported here, where the trainer and the daemon have always
//! found them.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::fast::int8::{PackedInt8, WeightBytes};
use crate::fast::{ConvWeights, FastResNet};
pub use crate::fold::{fold_batch_norm, FoldedResNet, FoldedWeights};
pub use crate::format::{
    write_exported, Calibration, ExportAccuracy, ExportError, Manifest, ModelFile, Quantization,
    DATA_ALIGNMENT, FORMAT_NAME, FORMAT_VERSION, MANIFEST_KEY, OLDEST_READABLE_VERSION,
};

/// An exported model, checked and ready to run.
pub struct ExportedModel {
    pub manifest: Manifest,
    pub network: Network,
    /// Size of the file in bytes.
    pub file_size: u64,
}

/// Which implementation runs an exported model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Ours on the CPU ([`FastResNet`]), candle on other devices.
    Auto,
    /// Candle's convolutions on any device (int8 and f16 dequantised to f32).
    Candle,
}

/// An exported model's network, on the path that suits its device.
pub enum Network {
    /// Our CPU path: int8 models in integer arithmetic from the mapped file, others in f32.
    Fast(Box<FastResNet>),
    Candle(FoldedResNet),
}

impl Network {
    pub fn num_classes(&self) -> usize {
        match self {
            Network::Fast(n) => n.num_classes(),
            Network::Candle(n) => n.num_classes(),
        }
    }

    /// Pooled features of an NCHW batch.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Network::Fast(n) => n.features(x),
            Network::Candle(n) => n.features(x),
        }
    }

    /// Logits of an NCHW batch.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Network::Fast(n) => n.forward(x),
            Network::Candle(n) => n.forward(x),
        }
    }

    /// `fast` or `candle`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Network::Fast(_) => "fast",
            Network::Candle(_) => "candle",
        }
    }

    /// The CPU kernels of the fast path (None on candle).
    pub fn kernels(&self) -> Option<crate::fast::Kernels> {
        match self {
            Network::Fast(n) => Some(n.kernels()),
            Network::Candle(_) => None,
        }
    }
}

impl ExportedModel {
    /// Memory-maps and validates an exported model, then builds its network for `device`:
    /// our fast path on the CPU (int8 weights used from the mapped file), candle elsewhere.
    pub fn open(path: &Path, device: &Device) -> Result<Self, ExportError> {
        Self::open_with(path, device, Backend::Auto)
    }

    /// As [`open`](Self::open), on a chosen backend.
    pub fn open_with(path: &Path, device: &Device, backend: Backend) -> Result<Self, ExportError> {
        let file = ModelFile::open(path)?;
        // Scans reach the network as three normalised copies of one grey image: the fast
        // path's stem reads the grey image once (a third of its products).
        let grey_scans = file.manifest.preprocessing.channels();
        let network = if device.is_cpu() && backend == Backend::Auto && file.is_packed_int8() {
            // int8 weights straight from the mapped file; biases, scales and the classifier
            // (small) decoded.
            let fast = FastResNet::from_parts(
                file.manifest.arch,
                |spec| {
                    let name = format!("{}.weight", spec.name);
                    let (map, range) = file.mapped(&name)?;
                    let weights = PackedInt8::new(
                        WeightBytes::Mapped { map, range },
                        file.values(&format!("{name}_scale"))?,
                        spec.out_channels,
                        spec.in_channels,
                        spec.kernel,
                    );
                    Ok((
                        ConvWeights::Int8(weights),
                        file.values(&format!("{}.bias", spec.name))?,
                    ))
                },
                file.tensor("fc.weight")?,
                file.values("fc.bias")?,
            )?;
            Network::Fast(Box::new(fast.with_grey_scans(grey_scans)))
        } else {
            let mut weights = FoldedWeights::new();
            for (name, _) in file.tensors().filter(|(n, _)| !n.ends_with("_scale")) {
                weights.insert(name.to_string(), file.tensor(name)?);
            }
            if device.is_cpu() && backend == Backend::Auto {
                Network::Fast(Box::new(
                    FastResNet::new(file.manifest.arch, &weights)?.with_grey_scans(grey_scans),
                ))
            } else {
                Network::Candle(FoldedResNet::new(file.manifest.arch, &weights, device)?)
            }
        };
        Ok(Self {
            manifest: file.manifest,
            network,
            file_size: file.file_size,
        })
    }
}
