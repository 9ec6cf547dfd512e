//! The decision message the daemon publishes for every scan (JSON; schema in
//! `docs/decision.schema.json`). Shared so that tools and tests read what the daemon writes.

use serde::{Deserialize, Serialize};

/// What the door should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The best identity's score cleared the threshold.
    Grant,
    /// The scan was read and matched, but no identity cleared the threshold.
    Deny,
    /// The scan could not be judged (undecodable, too large, ...): `error` says why.
    Error,
}

/// Where a scan came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSource {
    /// `directory` or `mqtt`.
    pub kind: SourceKind,
    /// File path for the sensor directory, topic for MQTT.
    pub name: String,
    /// Sensor name, when the scan's message carried one.
    pub sensor: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Directory,
    Mqtt,
}

/// One of the best-scoring identities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub identity: String,
    pub score: f32,
}

/// The model that made a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// File name of the exported model.
    pub name: String,
    /// `sha256:...` digest of its tensor data, from its manifest.
    pub digest: String,
}

/// How the scan was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// 1:N against the enrolled gallery (open set: unknown fingers are denied).
    Identification,
    /// 1:1 against the templates of a claimed identity.
    Verification,
    /// The trained classifier's own identities (no gallery enrolled).
    Classifier,
}

/// One decision, published once per scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub scan_id: String,
    pub source: ScanSource,
    /// RFC 3339 UTC time at which the decision was made.
    pub timestamp: String,
    pub decision: Verdict,
    pub mode: MatchMode,
    /// The identity the scan claimed to be (verification), if any.
    pub claimed_identity: Option<String>,
    /// The granted identity; null unless `decision` is `grant`.
    pub identity: Option<String>,
    /// Score of the best candidate: gallery similarity, or the classifier's probability (null
    /// on error, or when there was nothing to compare with).
    pub score: Option<f32>,
    /// Score a candidate must reach to be granted.
    pub threshold: f32,
    /// Best candidates, best first.
    pub candidates: Vec<Candidate>,
    pub model: ModelRef,
    /// From the scan's arrival at the service to its decision, in milliseconds.
    pub latency_ms: f64,
    /// Why the scan could not be judged; null unless `decision` is `error`.
    pub error: Option<String>,
}
