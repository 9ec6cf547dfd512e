//! The loaded model and how a batch of scans becomes decisions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use candle_core::{Device, Tensor};
use fingerprint_common::config::{FALLBACK_MATCH_THRESHOLD, FALLBACK_THRESHOLD};
use fingerprint_common::gallery::normalize;
use fingerprint_common::{
    Candidate, Decision, Gallery, MatchMode, ModelRef, Preprocessing, ScanLimits, ScanSource,
    Verdict,
};
use fingerprint_models::export::{Backend, ExportError, ExportedModel, Manifest};

use crate::input::encoded_scan_input;

/// An exported model ready to classify scans.
pub struct Engine {
    pub manifest: Manifest,
    pub model: ModelRef,
    pub path: PathBuf,
    /// Probability a class needs (classifier mode).
    pub threshold: f32,
    /// Similarity an enrolled identity needs (gallery mode).
    pub match_threshold: f32,
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
    /// Opens an exported model on `device` (`cpu`, `cuda`, `cuda:N`). The thresholds given
    /// override the model's calibrated ones.
    pub fn load(
        path: &Path,
        device: &str,
        threshold: Option<f32>,
        match_threshold: Option<f32>,
    ) -> Result<Self, EngineError> {
        Self::load_with(path, device, threshold, match_threshold, Backend::Auto)
    }

    /// As [`load`](Self::load), on a chosen backend (benchmarks compare them).
    pub fn load_with(
        path: &Path,
        device: &str,
        threshold: Option<f32>,
        match_threshold: Option<f32>,
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
        let match_threshold = match_threshold
            .or(exported
                .manifest
                .calibration
                .as_ref()
                .map(|c| c.similarity_threshold))
            .unwrap_or(FALLBACK_MATCH_THRESHOLD);
        Ok(Self {
            model: ModelRef {
                name,
                digest: exported.manifest.data_digest.clone(),
            },
            manifest: exported.manifest,
            path: path.to_path_buf(),
            threshold,
            match_threshold,
            file_size: exported.file_size,
            network: exported.network,
            device,
        })
    }

    /// Which implementation runs the network (`fast` or `candle`).
    pub fn backend_name(&self) -> &'static str {
        self.network.name()
    }

    pub fn preprocessing(&self) -> &Preprocessing {
        &self.manifest.preprocessing
    }

    fn batch(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Tensor> {
        let size = self.manifest.preprocessing.size as usize;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
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

/// The model in use, swapped whole on reload so a batch always sees one model.
#[derive(Clone)]
pub struct EngineSlot(Arc<RwLock<Arc<Engine>>>);

impl EngineSlot {
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(engine))))
    }

    pub fn current(&self) -> Arc<Engine> {
        // A poisoned lock still holds a whole Arc: swapping is a single assignment.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, engine: Engine) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
    }
}

/// A scan waiting for its decision.
pub struct ScanRequest {
    pub scan_id: String,
    pub source: ScanSource,
    /// The encoded image, or why there is none to decode (too large, bad message).
    pub payload: Result<Vec<u8>, String>,
    /// Identity to verify against (1:1) instead of identifying (1:N).
    pub claim: Option<String>,
    pub received: Instant,
}

/// What scans are compared with.
pub enum Matcher<'a> {
    /// The model's own classes (nothing enrolled).
    Classifier,
    /// Enrolled templates.
    Gallery(&'a Gallery),
}

/// Decides a batch: scans that decode run through the network together; the others get an
/// "error" decision with the reason. Never panics on input.
pub fn decide_batch(
    engine: &Engine,
    matcher: &Matcher,
    scans: &[ScanRequest],
    limits: &ScanLimits,
    top_k: usize,
) -> Vec<Decision> {
    let pre = engine.preprocessing();
    // The inputs that decode go into one batch; per scan, whether it did or why not.
    let mut good: Vec<Vec<f32>> = Vec::with_capacity(scans.len());
    let inputs: Vec<Result<(), String>> = scans
        .iter()
        .map(|s| match &s.payload {
            Ok(bytes) => encoded_scan_input(bytes, pre, limits)
                .map(|input| good.push(input))
                .map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        })
        .collect();
    let run = || match matcher {
        Matcher::Classifier => engine.probabilities(&good),
        Matcher::Gallery(_) => engine.embeddings(&good),
    };
    let mut outputs = if good.is_empty() {
        Ok(Vec::new())
    } else {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .unwrap_or_else(|_| Err(candle_core::Error::Msg("inference panicked".into())))
            .map_err(|e| format!("inference failed: {e}"))
    }
    .map(|p| p.into_iter());
    scans
        .iter()
        .zip(inputs)
        .map(|(scan, input)| {
            let output = input.and_then(|()| match &mut outputs {
                Ok(rows) => rows
                    .next()
                    .ok_or_else(|| "inference returned too few rows".to_string()),
                Err(e) => Err(e.clone()),
            });
            let claim = scan.claim.as_deref();
            let ranked = output.map(|row| match matcher {
                Matcher::Classifier => rank_classes(engine, &row, claim),
                Matcher::Gallery(g) => g.rank(&row, claim),
            });
            decision_for(engine, matcher, scan, ranked, top_k)
        })
        .collect()
}

/// The model's classes by probability (only the claimed one when there is a claim).
fn rank_classes(engine: &Engine, p: &[f32], claim: Option<&str>) -> Vec<Candidate> {
    let labels = &engine.manifest.labels;
    let mut ranked: Vec<Candidate> = p
        .iter()
        .enumerate()
        .map(|(i, &score)| Candidate {
            identity: labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class-{i}")),
            score,
        })
        .filter(|c| claim.is_none_or(|claimed| claimed == c.identity))
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked
}

/// The candidate granted: the best one, if it clears the threshold and is not the background
/// class (which stands for fingers nobody enrolled).
fn granted(ranked: &[Candidate], threshold: f32) -> Option<&Candidate> {
    ranked
        .first()
        .filter(|c| c.score >= threshold && c.identity != fingerprint_common::BACKGROUND_LABEL)
}

fn decision_for(
    engine: &Engine,
    matcher: &Matcher,
    scan: &ScanRequest,
    ranked: Result<Vec<Candidate>, String>,
    top_k: usize,
) -> Decision {
    let (mode, threshold) = match (matcher, &scan.claim) {
        (Matcher::Classifier, _) => (MatchMode::Classifier, engine.threshold),
        (Matcher::Gallery(_), None) => (MatchMode::Identification, engine.match_threshold),
        (Matcher::Gallery(_), Some(_)) => (MatchMode::Verification, engine.match_threshold),
    };
    let (verdict, identity, score, candidates, error) = match ranked {
        Ok(mut candidates) => {
            candidates.truncate(top_k);
            let best = candidates.first().map(|c| c.score);
            let identity = granted(&candidates, threshold).map(|c| c.identity.clone());
            let granted = identity.is_some();
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
        mode,
        claimed_identity: scan.claim.clone(),
        identity,
        score,
        threshold,
        candidates,
        model: engine.model.clone(),
        latency_ms: scan.received.elapsed().as_secs_f64() * 1e3,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(scores: &[(&str, f32)]) -> Vec<Candidate> {
        scores
            .iter()
            .map(|&(identity, score)| Candidate {
                identity: identity.into(),
                score,
            })
            .collect()
    }

    #[test]
    fn the_best_candidate_is_granted_over_the_threshold_unless_it_is_the_background() {
        let alice = ranked(&[("alice", 0.9), ("bob", 0.1)]);
        assert_eq!(
            granted(&alice, 0.8).map(|c| c.identity.as_str()),
            Some("alice")
        );
        assert!(granted(&alice, 0.95).is_none());
        let background = ranked(&[(fingerprint_common::BACKGROUND_LABEL, 0.9), ("alice", 0.1)]);
        assert!(granted(&background, 0.05).is_none());
        assert!(granted(&[], 0.0).is_none());
    }
}
