//! What the command line's unit tests share.

use fingerprint_common::{Decision, MatchMode, ModelRef, ScanSource, SourceKind, Verdict};

/// A decision as fingerprintd writes it, with the parts the tests vary.
pub(crate) fn decision(verdict: Verdict, identity: Option<&str>, latency_ms: f64) -> Decision {
    Decision {
        scan_id: "scan".into(),
        source: ScanSource {
            kind: SourceKind::Directory,
            name: "scan".into(),
            sensor: None,
        },
        timestamp: String::new(),
        decision: verdict,
        mode: MatchMode::Identification,
        claimed_identity: None,
        identity: identity.map(Into::into),
        score: Some(0.5),
        threshold: 0.9,
        matcher: Some(fingerprint_common::MatcherMode::Fused),
        network_score: None,
        minutiae_score: None,
        fused_score: None,
        candidates: Vec::new(),
        model: Some(ModelRef {
            name: "m".into(),
            digest: "d".into(),
        }),
        latency_ms,
        error: None,
        locked_out: false,
    }
}
