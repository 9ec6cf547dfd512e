//! How a batch of scans becomes decisions: each scan is decoded once; the network (class
//! probabilities, or templates) and the minutiae extraction run side by side; the gallery's
//! matcher ranks the identities; the policy's threshold grants or denies. Never panics on
//! input: a scan that cannot be judged gets an "error" decision that says why.

use std::time::SystemTime;

use fingerprint_common::matcher::{Index, MatcherMode, MinutiaeAhead, Probe};
use fingerprint_common::minutiae::{self, Prepared};
use fingerprint_common::{decode_scan, Candidate, Decision, MatchMode, ScanLimits, Verdict};
use image::GrayImage;
use rayon::prelude::*;

use crate::engine::Engine;
use crate::job::ScanRequest;
use crate::policy::MatchPolicy;

/// What scans are compared with.
pub enum Matcher<'a> {
    /// The model's own classes (nothing enrolled).
    Classifier,
    /// Enrolled identities, by the policy in force.
    Gallery {
        index: &'a Index,
        policy: &'a MatchPolicy,
    },
    /// Nothing can be decided: every scan gets this error (a gallery of another model).
    Refuse(String),
}

/// What every decision of a service shares.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub limits: ScanLimits,
    pub top_k: usize,
    /// The sensor's resolution where the configuration gives it (minutiae are found at
    /// 500 dpi; ridge-scale models cut a window of fixed physical size).
    pub sensor_dpi: Option<u32>,
}

/// The network's output for one scan: class probabilities or its template.
type NetworkRow = Result<Vec<f32>, String>;

/// Runs the network on the decoded scans, in one batch; one row (or the reason) per scan.
fn run_network(
    engine: Option<&Engine>,
    images: &[Option<&GrayImage>],
    classify: bool,
    sensor_dpi: Option<u32>,
) -> Vec<NetworkRow> {
    let Some(engine) = engine else {
        return images
            .iter()
            .map(|_| Err("no model is loaded (model.path)".to_string()))
            .collect();
    };
    let inputs: Vec<Vec<f32>> = images
        .iter()
        .flatten()
        .map(|img| engine.preprocessing().apply_at(img, sensor_dpi))
        .collect();
    let run = || {
        if classify {
            engine.probabilities(&inputs)
        } else {
            engine.embeddings(&inputs)
        }
    };
    let mut rows = if inputs.is_empty() {
        Ok(Vec::new())
    } else {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .unwrap_or_else(|_| Err(candle_core::Error::Msg("inference panicked".into())))
            .map_err(|e| format!("inference failed: {e}"))
    }
    .map(|r| r.into_iter());
    images
        .iter()
        .map(|img| match (img, &mut rows) {
            (None, _) => Err(String::new()),
            (Some(_), Ok(rows)) => rows
                .next()
                .ok_or_else(|| "inference returned too few rows".to_string()),
            (Some(_), Err(e)) => Err(e.clone()),
        })
        .collect()
}

/// A scan's minutiae, with its comparisons when they could run ahead of the network.
type MinutiaeRow = Result<(Prepared, Option<MinutiaeAhead>), String>;

/// Minutiae of each decoded scan (or why there are none to compare), compared with the
/// gallery at once where the comparisons do not wait for the network's shortlist.
fn minutiae_side(
    matcher: &Matcher,
    scans: &[ScanRequest],
    images: &[Option<&GrayImage>],
    dpi: u32,
) -> Vec<MinutiaeRow> {
    let run = || {
        images
            .par_iter()
            .zip(scans.par_iter())
            .map(|(img, scan)| {
                let img = img.ok_or_else(String::new)?;
                let prepared = minutiae::extract(img, dpi)
                    .map(|t| t.prepared())
                    .map_err(|e| format!("minutiae: {e}"))?;
                let ahead = match matcher {
                    Matcher::Gallery { index, policy } => {
                        index.minutiae_ahead(&prepared, scan.claim.as_deref(), &policy.rule)
                    }
                    _ => None,
                };
                Ok((prepared, ahead))
            })
            .collect()
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
        images
            .iter()
            .map(|_| Err("minutiae extraction failed".into()))
            .collect()
    })
}

/// Decides a batch. Scans that decode run through the network together while their minutiae
/// are extracted (and compared, where that needs no shortlist); the others get an "error"
/// decision.
pub fn decide_batch(
    engine: Option<&Engine>,
    matcher: &Matcher,
    scans: &[ScanRequest],
    settings: &Settings,
) -> Vec<Decision> {
    let decoded: Vec<Result<GrayImage, String>> = scans
        .iter()
        .map(|s| match &s.payload {
            Err(reason) => Err(reason.to_string()),
            Ok(bytes) => decode_scan(bytes, &settings.limits).map_err(|e| e.to_string()),
        })
        .collect();
    let (mode, refuse) = match matcher {
        Matcher::Classifier => (None, None),
        Matcher::Gallery { policy, .. } => (Some(policy.rule.mode), None),
        Matcher::Refuse(reason) => (None, Some(reason.clone())),
    };
    let images: Vec<Option<&GrayImage>> = decoded
        .iter()
        .map(|d| d.as_ref().ok().filter(|_| refuse.is_none()))
        .collect();
    let needs_network = mode.is_none_or(MatcherMode::needs_network);
    let needs_minutiae = mode.is_some_and(MatcherMode::needs_minutiae);
    fn none<T>(n: usize) -> Vec<Result<T, String>> {
        (0..n).map(|_| Err(String::new())).collect()
    }
    // Both sides are rayon tasks, so they share the cores without preempting each other: a
    // thread of their own would stall the network's layers, each of which waits for its
    // slowest tile.
    let (network, minutiae) = rayon::join(
        || {
            if needs_network {
                run_network(engine, &images, mode.is_none(), settings.sensor_dpi)
            } else {
                none(images.len())
            }
        },
        || {
            if needs_minutiae {
                let dpi = minutiae::scan_dpi(settings.sensor_dpi);
                minutiae_side(matcher, scans, &images, dpi)
            } else {
                none(images.len())
            }
        },
    );
    scans
        .iter()
        .zip(decoded)
        .zip(network.into_iter().zip(minutiae))
        .map(|((scan, decoded), (network, minutiae))| {
            let claim = scan.claim.as_deref();
            let ranked = match (&refuse, decoded) {
                (Some(reason), _) => Err(reason.clone()),
                (None, Err(reason)) => Err(reason),
                (None, Ok(_)) => match matcher {
                    Matcher::Classifier => {
                        network.map(|p| rank_classes(engine, p.as_slice(), claim))
                    }
                    Matcher::Gallery { index, policy } => {
                        let mode = policy.rule.mode;
                        (|| {
                            let (minutiae, ahead) = if mode.needs_minutiae() {
                                let (prepared, ahead) = minutiae?;
                                (Some(prepared), ahead)
                            } else {
                                (None, None)
                            };
                            let probe = Probe {
                                embedding: if mode.needs_network() {
                                    Some(network?)
                                } else {
                                    None
                                },
                                minutiae,
                            };
                            Ok(index.rank_with(&probe, claim, &policy.rule, ahead))
                        })()
                    }
                    Matcher::Refuse(reason) => Err(reason.clone()),
                },
            };
            decision_for(engine, matcher, scan, ranked, settings.top_k)
        })
        .collect()
}

/// The model's classes by probability (only the claimed one when there is a claim).
fn rank_classes(engine: Option<&Engine>, p: &[f32], claim: Option<&str>) -> Vec<Candidate> {
    let labels = engine
        .map(|e| e.manifest.labels.as_slice())
        .unwrap_or_default();
    let mut ranked: Vec<Candidate> = p
        .iter()
        .enumerate()
        .map(|(i, &score)| {
            Candidate::scored(
                labels
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("class-{i}")),
                score,
            )
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
    engine: Option<&Engine>,
    matcher: &Matcher,
    scan: &ScanRequest,
    ranked: Result<Vec<Candidate>, String>,
    top_k: usize,
) -> Decision {
    let verification = scan.claim.is_some();
    let (mode, threshold, matcher_mode) = match matcher {
        Matcher::Classifier => (
            MatchMode::Classifier,
            engine.map_or(fingerprint_common::config::FALLBACK_THRESHOLD, |e| {
                e.threshold
            }),
            None,
        ),
        Matcher::Gallery { policy, .. } => (
            if verification {
                MatchMode::Verification
            } else {
                MatchMode::Identification
            },
            if verification {
                policy.claim_threshold
            } else {
                policy.threshold
            },
            Some(policy.rule.mode),
        ),
        Matcher::Refuse(_) => (
            if verification {
                MatchMode::Verification
            } else {
                MatchMode::Identification
            },
            f32::INFINITY,
            None,
        ),
    };
    let (verdict, identity, candidates, error) = match ranked {
        Ok(mut candidates) => {
            candidates.truncate(top_k);
            let identity = granted(&candidates, threshold).map(|c| c.identity.clone());
            let verdict = if identity.is_some() {
                Verdict::Grant
            } else {
                Verdict::Deny
            };
            (verdict, identity, candidates, None)
        }
        Err(reason) => (Verdict::Error, None, Vec::new(), Some(reason)),
    };
    let best = candidates.first();
    Decision {
        scan_id: scan.scan_id.clone(),
        source: scan.source.clone(),
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        decision: verdict,
        mode,
        claimed_identity: scan.claim.clone(),
        identity,
        score: best.map(|c| c.score),
        threshold: if threshold.is_finite() {
            threshold
        } else {
            0.0
        },
        matcher: matcher_mode,
        network_score: best.and_then(|c| c.network_score),
        minutiae_score: best.and_then(|c| c.minutiae_score),
        fused_score: best
            .filter(|_| matcher_mode == Some(MatcherMode::Fused))
            .map(|c| c.score),
        candidates,
        model: engine.map(|e| e.model.clone()),
        latency_ms: scan.received.elapsed().as_secs_f64() * 1e3,
        error,
        locked_out: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(scores: &[(&str, f32)]) -> Vec<Candidate> {
        scores
            .iter()
            .map(|&(identity, score)| Candidate::scored(identity.into(), score))
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

    #[test]
    fn a_claim_is_judged_at_the_claim_threshold_an_identification_at_the_gallery_one() {
        use fingerprint_common::{DaemonConfig, Gallery, ScanSource, SourceKind};
        let index = Index::new(&Gallery::new(None));
        let mut config = DaemonConfig::parse(
            fingerprint_common::DEFAULT_CONFIG,
            std::path::Path::new("config.toml"),
        )
        .expect("the default configuration parses");
        config.matcher.mode = MatcherMode::Minutiae;
        let gallery = crate::policy::test_support::gallery(false, true, 2);
        let mut policy = crate::policy::resolve(&config, None, &gallery, None).expect("policy");
        (policy.threshold, policy.claim_threshold) = (3.8, 3.3);
        let matcher = Matcher::Gallery {
            index: &index,
            policy: &policy,
        };
        let scan = |claim: Option<&str>| ScanRequest {
            scan_id: "s".into(),
            source: ScanSource {
                kind: SourceKind::Directory,
                name: "s".into(),
                sensor: None,
            },
            payload: Ok(Vec::new()),
            claim: claim.map(Into::into),
            received: std::time::Instant::now(),
        };
        let alice = || Ok(ranked(&[("alice", 3.5)]));
        let claimed = decision_for(None, &matcher, &scan(Some("alice")), alice(), 3);
        assert_eq!(
            (claimed.mode, claimed.decision, claimed.threshold),
            (MatchMode::Verification, Verdict::Grant, 3.3)
        );
        let identified = decision_for(None, &matcher, &scan(None), alice(), 3);
        assert_eq!(
            (identified.mode, identified.decision, identified.threshold),
            (MatchMode::Identification, Verdict::Deny, 3.8)
        );
    }
}
