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
    /// The score the decision rests on (the matcher's: cosine, minutiae score or fused).
    pub score: f32,
    /// Best cosine similarity of the network's templates, when the network was used.
    #[serde(default)]
    pub network_score: Option<f32>,
    /// Best minutiae score (MCC, 0-100), when minutiae were compared.
    #[serde(default)]
    pub minutiae_score: Option<f32>,
}

impl Candidate {
    /// A candidate scored by one number alone (the classifier's probability).
    pub fn scored(identity: String, score: f32) -> Self {
        Self {
            identity,
            score,
            network_score: None,
            minutiae_score: None,
        }
    }
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
    /// Score of the best candidate, by the matcher in use: gallery cosine similarity
    /// (network), minutiae score 0-100 (minutiae), fused log-odds (fused), or the classifier's
    /// probability (null on error, or when there was nothing to compare with).
    pub score: Option<f32>,
    /// Score a candidate must reach to be granted.
    pub threshold: f32,
    /// Which matcher decided (null in classifier mode and on errors before matching).
    #[serde(default)]
    pub matcher: Option<MatcherMode>,
    /// The best candidate's network score (cosine similarity), when the network was used.
    #[serde(default)]
    pub network_score: Option<f32>,
    /// The best candidate's minutiae score (MCC, 0-100), when minutiae were compared.
    #[serde(default)]
    pub minutiae_score: Option<f32>,
    /// The best candidate's fused score (log-odds of one finger), in fused mode.
    #[serde(default)]
    pub fused_score: Option<f32>,
    /// Best candidates, best first.
    pub candidates: Vec<Candidate>,
    /// The model that made the network's templates (null when no model is loaded: minutiae).
    pub model: Option<ModelRef>,
    /// From the scan's arrival at the service to its decision, in milliseconds.
    pub latency_ms: f64,
    /// Why the scan could not be judged; null unless `decision` is `error`.
    pub error: Option<String>,
    /// The door was locked out after repeated denials (`matcher.lockout_after`) when this scan
    /// was decided: it is denied whatever it scored (a grant was withheld where `score`
    /// clears `threshold`). False in messages from before lockouts.
    #[serde(default)]
    pub locked_out: bool,
}

/// Which scores a decision rests on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MatcherMode {
    /// Cosine similarity of the network's templates.
    Network,
    /// Minutiae (MINDTCT, compared by Minutia Cylinder-Code); needs no model.
    Minutiae,
    /// Both, fused by a fitted logistic regression.
    #[default]
    Fused,
}

impl MatcherMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Minutiae => "minutiae",
            Self::Fused => "fused",
        }
    }

    pub fn needs_network(self) -> bool {
        self != Self::Minutiae
    }

    pub fn needs_minutiae(self) -> bool {
        self != Self::Network
    }
}

impl std::fmt::Display for MatcherMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
