//! What the library's unit tests share.

use fingerprint_common::{Decision, MatchMode, ScanSource, SourceKind, Verdict};

/// A decision on a scan from the sensor directory, with the parts the tests vary.
pub(crate) fn decision(scan_id: &str, verdict: Verdict, error: Option<&str>) -> Decision {
    Decision {
        scan_id: scan_id.into(),
        source: ScanSource {
            kind: SourceKind::Directory,
            name: scan_id.into(),
            sensor: None,
        },
        timestamp: String::new(),
        decision: verdict,
        mode: MatchMode::Identification,
        claimed_identity: None,
        identity: None,
        score: None,
        threshold: 0.5,
        matcher: None,
        network_score: None,
        minutiae_score: None,
        fused_score: None,
        candidates: Vec::new(),
        model: None,
        latency_ms: 1.0,
        error: error.map(Into::into),
        locked_out: false,
    }
}
