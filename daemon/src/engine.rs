//! The loaded model and how a batch of scans becomes decisions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use candle_core::{Device, Tensor};
use fingerprint_common::config::FALLBACK_THRESHOLD;
use fingerprint_common::{
    Candidate, Decision, ModelRef, Preprocessing, ScanLimits, ScanSource, Verdict,
};
use fingerprint_models::export::{ExportError, ExportedModel, Manifest};

use crate::input::encoded_scan_input;

/// An exported model ready to classify scans.
pub struct Engine {
    pub manifest: Manifest,
    pub model: ModelRef,
    pub path: PathBuf,
    pub threshold: f32,
    pub file_size: u64,
    network: fingerprint_models::export::FoldedResNet,
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
    /// Opens an exported model on `device` (`cpu`, `cuda`, `cuda:N`). `threshold` overrides
    /// the model's calibrated one.
    pub fn load(path: &Path, device: &str, threshold: Option<f32>) -> Result<Self, EngineError> {
        let device = fingerprint_models::device::device_from_name(device).map_err(|e| {
            EngineError::Device {
                name: device.into(),
                reason: e.to_string(),
            }
        })?;
        let exported = ExportedModel::open(path, &device)?;
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

    pub fn preprocessing(&self) -> &Preprocessing {
        &self.manifest.preprocessing
    }

    /// Class probabilities for preprocessed inputs (each 3 x size x size, CHW).
    pub fn probabilities(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let size = self.manifest.preprocessing.size as usize;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (inputs.len(), 3, size, size), &self.device)?;
        let logits = self.network.forward(&x)?;
        softmax_rows(&logits)?.to_vec2::<f32>()
    }
}

fn softmax_rows(logits: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(1)?;
    let exp = logits.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(1)?)
}

/// The model in use, swapped whole on reload so a batch always sees one model.
#[derive(Clone)]
pub struct EngineSlot(Arc<RwLock<Arc<Engine>>>);

impl EngineSlot {
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(engine))))
    }

    pub fn current(&self) -> Arc<Engine> {
        // A poisoned lock still holds a whole Arc: swapping is a single assignment.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn replace(&self, engine: Engine) {
        let engine = Arc::new(engine);
        match self.0.write() {
            Ok(mut g) => *g = engine,
            Err(p) => *p.into_inner() = engine,
        }
    }
}

/// A scan waiting for its decision.
pub struct ScanRequest {
    pub scan_id: String,
    pub source: ScanSource,
    /// The encoded image, or why there is none to decode (too large, bad message).
    pub payload: Result<Vec<u8>, String>,
    pub received: Instant,
}

/// Decides a batch: scans that decode run through the network together; the others get an
/// "error" decision with the reason. Never panics on input.
pub fn decide_batch(
    engine: &Engine,
    scans: &[ScanRequest],
    limits: &ScanLimits,
    top_k: usize,
) -> Vec<Decision> {
    let pre = engine.preprocessing();
    let inputs: Vec<Result<Vec<f32>, String>> = scans
        .iter()
        .map(|s| match &s.payload {
            Ok(bytes) => encoded_scan_input(bytes, pre, limits).map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        })
        .collect();
    let good: Vec<Vec<f32>> = inputs
        .iter()
        .filter_map(|i| i.as_ref().ok().cloned())
        .collect();
    let mut probabilities = if good.is_empty() {
        Ok(Vec::new())
    } else {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.probabilities(&good)))
            .unwrap_or_else(|_| Err(candle_core::Error::Msg("inference panicked".into())))
            .map_err(|e| format!("inference failed: {e}"))
    }
    .map(|p| p.into_iter());
    scans
        .iter()
        .zip(inputs)
        .map(|(scan, input)| {
            let outcome = input.and_then(|_| match &mut probabilities {
                Ok(rows) => rows
                    .next()
                    .ok_or_else(|| "inference returned too few rows".to_string()),
                Err(e) => Err(e.clone()),
            });
            decision_for(engine, scan, outcome, top_k)
        })
        .collect()
}

fn decision_for(
    engine: &Engine,
    scan: &ScanRequest,
    probabilities: Result<Vec<f32>, String>,
    top_k: usize,
) -> Decision {
    let (verdict, identity, score, candidates, error) = match probabilities {
        Ok(p) => {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let label = |i: usize| {
                engine
                    .manifest
                    .labels
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("class-{i}"))
            };
            let candidates: Vec<Candidate> = order
                .iter()
                .take(top_k)
                .map(|&i| Candidate {
                    identity: label(i),
                    score: p[i],
                })
                .collect();
            let best = candidates.first().map(|c| c.score);
            let granted = best.is_some_and(|s| s >= engine.threshold);
            let identity = granted.then(|| candidates[0].identity.clone());
            let verdict = if granted {
                Verdict::Grant
            } else {
                Verdict::Deny
            };
            (verdict, identity, best, candidates, None)
        }
        Err(reason) => (Verdict::Error, None, None, Vec::new(), Some(reason)),
    };
    Decision {
        scan_id: scan.scan_id.clone(),
        source: scan.source.clone(),
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        decision: verdict,
        identity,
        score,
        threshold: engine.threshold,
        candidates,
        model: engine.model.clone(),
        latency_ms: scan.received.elapsed().as_secs_f64() * 1e3,
        error,
    }
}
