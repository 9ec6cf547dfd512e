//! The loaded model: the network's class probabilities and templates for preprocessed scans.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use candle_core::{Device, Tensor};
use fingerprint_common::config::FALLBACK_THRESHOLD;
use fingerprint_common::gallery::normalize;
use fingerprint_common::{ModelRef, Preprocessing};
use fingerprint_models::export::{Backend, ExportError, ExportedModel, Manifest};

/// An exported model ready to classify scans.
pub struct Engine {
    pub manifest: Manifest,
    pub model: ModelRef,
    pub path: PathBuf,
    /// Probability a class needs (classifier mode).
    pub threshold: f32,
    pub file_size: u64,
    network: fingerprint_models::export::Network,
    device: Device,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ExportError),
    #[error("device '{name}': {reason}")]
    Device { name: String, reason: String },
}

impl Engine {
    /// Opens an exported model on `device` (`cpu`, `cuda`, `cuda:N`). The classifier
    /// threshold given overrides the model's.
    pub fn load(path: &Path, device: &str, threshold: Option<f32>) -> Result<Self, EngineError> {
        Self::load_with(path, device, threshold, Backend::Auto)
    }

    /// As [`load`](Self::load), on a chosen backend (benchmarks compare them).
    pub fn load_with(
        path: &Path,
        device: &str,
        threshold: Option<f32>,
        backend: Backend,
    ) -> Result<Self, EngineError> {
        let device = fingerprint_models::device::device_from_name(device).map_err(|e| {
            EngineError::Device {
                name: device.into(),
                reason: e.to_string(),
            }
        })?;
        let exported = ExportedModel::open_with(path, &device, backend)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let threshold = threshold
            .or(exported.manifest.threshold)
            .unwrap_or(FALLBACK_THRESHOLD);
        Ok(Self {
            model: ModelRef {
                name,
                digest: exported.manifest.data_digest.clone(),
            },
            manifest: exported.manifest,
            path: path.to_path_buf(),
            threshold,
            file_size: exported.file_size,
            network: exported.network,
            device,
        })
    }

    /// Which implementation runs the network (`fast` or `candle`).
    /// The backend, and on the fast path the CPU kernels in use (`fast, avx2 kernels`).
    pub fn backend_name(&self) -> String {
        match self.network.kernels() {
            Some(kernels) => format!("{}, {kernels} kernels", self.network.name()),
            None => self.network.name().to_string(),
        }
    }

    pub fn preprocessing(&self) -> &Preprocessing {
        &self.manifest.preprocessing
    }

    fn batch(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Tensor> {
        let size = self.manifest.preprocessing.size as usize;
        let per_input = 3 * size * size;
        // Checked one by one: a long input beside a short one would fill the batch's shape.
        if let Some((i, input)) = inputs
            .iter()
            .enumerate()
            .find(|(_, input)| input.len() != per_input)
        {
            return Err(candle_core::Error::Msg(format!(
                "input {i} holds {} values; the model takes 3 x {size} x {size} = {per_input}",
                input.len()
            )));
        }
        // One copy of each input (an element-wise collect grew the batch push by push: 0.2 ms
        // of a 224 x 224 picture, on the critical path of every decision).
        let flat: Vec<f32> = inputs.concat();
        Tensor::from_vec(flat, (inputs.len(), 3, size, size), &self.device)
    }

    /// Logits for preprocessed inputs (each 3 x size x size, CHW).
    pub fn logits(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        self.network.forward(&self.batch(inputs)?)?.to_vec2::<f32>()
    }

    /// Class probabilities for preprocessed inputs (each 3 x size x size, CHW).
    pub fn probabilities(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let logits = self.network.forward(&self.batch(inputs)?)?;
        candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?.to_vec2::<f32>()
    }

    /// Templates: the network's pooled features, L2-normalised.
    pub fn embeddings(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let features = self.network.features(&self.batch(inputs)?)?;
        Ok(features
            .to_vec2::<f32>()?
            .into_iter()
            .map(normalize)
            .collect())
    }
}

/// The model in use (None: the door matches minutiae alone), swapped whole on reload so a
/// batch always sees one model.
#[derive(Clone)]
pub struct EngineSlot(Arc<RwLock<Option<Arc<Engine>>>>);

impl EngineSlot {
    pub fn new(engine: Option<Engine>) -> Self {
        Self(Arc::new(RwLock::new(engine.map(Arc::new))))
    }

    pub fn current(&self) -> Option<Arc<Engine>> {
        // A poisoned lock still holds a whole Arc: swapping is a single assignment.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, engine: Engine) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(engine));
    }
}
