//! Which matcher decides, at which threshold, and where that threshold came from: the
//! configuration, the door's own calibration (`fingerprintd calibrate`), the model's
//! calibration (network only), or the values shipped with the project.
//!
//! A threshold is only as good as the impostors it was calibrated on. So a network threshold
//! calibrated on synthetic prints is never applied to a door's scans without the installer
//! saying so, and the start-up log names the source of the threshold in force.

use std::path::Path;

use fingerprint_common::config::{DaemonConfig, FALLBACK_MATCH_THRESHOLD};
use fingerprint_common::matcher::{
    minutiae_comparisons, shipped_fused_threshold, shipped_minutiae_threshold, Fusion, MatcherMode,
    Prints, Rule, SHIPPED_FUSION, SHIPPED_MINUTIAE_THRESHOLD, SHIPPED_STRANGER_FAR,
};
use fingerprint_common::openset::{shipped_floor, ThresholdBasis};
use fingerprint_common::{minutiae, Gallery};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;

/// Where `fingerprintd calibrate` writes the door's calibration, in the state directory.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// A door's own calibration, from its gallery and other people's scans on its sensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoorCalibration {
    pub mode: MatcherMode,
    /// The model whose templates it was fitted with (None for minutiae alone): another model
    /// makes it void.
    pub model_digest: Option<String>,
    /// The fitted fusion (fused mode).
    pub fusion: Option<Fusion>,
    /// The minutiae comparator whose scores it was fitted on ([`minutiae::COMPARATOR`]);
    /// absent in calibrations made with BOZORTH3, which no longer apply.
    #[serde(default)]
    pub minutiae_comparator: Option<String>,
    pub threshold: f32,
    /// What set the threshold; absent in calibrations from before it was recorded.
    #[serde(default)]
    pub basis: Option<ThresholdBasis>,
    /// Whether the gallery it was fitted with kept turned templates (enrolment turns); false
    /// in calibrations from before them. Where false, the door leaves the turned templates
    /// out of its scores, which then are those the threshold was set on.
    #[serde(default)]
    pub enrolment_turns: bool,
    pub target_far: f64,
    /// Share of the strangers' scans accepted at the threshold.
    pub far: f64,
    /// Share of the enrolled impressions refused at the threshold (each against the rest of
    /// its identity).
    pub frr: f64,
    pub genuine_scores: usize,
    pub stranger_scans: usize,
    /// Identities enrolled when it was made; absent in calibrations from before it was
    /// recorded.
    #[serde(default)]
    pub identities: Option<usize>,
    /// The lowest and highest network scores of the strangers' comparisons (fused mode), for
    /// the shipped floor as the gallery grows ([`shipped_floor`]); absent in calibrations from
    /// before it was recorded.
    #[serde(default)]
    pub strangers_network: Option<[f32; 2]>,
    /// The folder of other people's scans it was calibrated with.
    pub strangers: String,
    /// RFC 3339 time it was made.
    pub created: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {reason}")]
    Calibration { path: String, reason: String },
    #[error(
        "the model's gallery threshold ({threshold:.3}) was calibrated on synthetic prints and does not hold on real scans: run `fingerprintd calibrate --strangers DIR` with other people's scans from this sensor, set model.match_threshold, or set matcher.accept_synthetic_threshold = true"
    )]
    SyntheticThreshold { threshold: f32 },
    #[error("matcher.mode = \"{0}\" needs a model (model.path)")]
    NoModel(MatcherMode),
    #[error("{0}")]
    Unusable(String),
}

impl DoorCalibration {
    pub fn path(config: &DaemonConfig) -> std::path::PathBuf {
        config.state_dir.join(CALIBRATION_FILE)
    }

    /// Reads the door's calibration; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, PolicyError> {
        let error = |reason: String| PolicyError::Calibration {
            path: path.display().to_string(),
            reason,
        };
        fingerprint_common::durable::read_json(path).map_err(|e| error(e.to_string()))
    }

    /// Writes it atomically.
    pub fn save(&self, path: &Path) -> Result<(), PolicyError> {
        let error = |reason: String| PolicyError::Calibration {
            path: path.display().to_string(),
            reason,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| error(e.to_string()))?;
        fingerprint_common::durable::write_atomically(path, &json).map_err(|e| error(e.to_string()))
    }

    /// Whether it was made for this matcher, model and minutiae comparator.
    fn applies(&self, mode: MatcherMode, model_digest: Option<&str>) -> bool {
        self.mode == mode
            && (mode == MatcherMode::Minutiae || self.model_digest.as_deref() == model_digest)
            && (!mode.needs_minutiae() || self.same_comparator())
    }

    /// Whether its minutiae scores are today's comparator's.
    fn same_comparator(&self) -> bool {
        self.minutiae_comparator.as_deref() == Some(minutiae::COMPARATOR)
    }
}

/// What decides a gallery match, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchPolicy {
    pub rule: Rule,
    /// Score the best identity needs (cosine, minutiae score or fused log-odds, by mode).
    pub threshold: f32,
    /// Score a claimed identity needs (1:1): a stranger's scan then meets one identity, so
    /// where the threshold in force is the shipped one raised for the gallery's size, the
    /// shipped one for a single identity; otherwise `threshold`.
    pub claim_threshold: f32,
    /// Where the threshold came from, for the log.
    pub source: String,
    /// Why the mode in force differs from the configured one, if it does.
    pub downgrade: Option<String>,
}

/// The matcher this gallery allows with the model loaded (its digest; None: no model). A
/// version-1 gallery has no minutiae (network only); one enrolled without a model, or with
/// another model, has no usable network templates (minutiae only). None with a reason when
/// nothing is usable.
pub fn mode_for(
    configured: MatcherMode,
    gallery: &Gallery,
    model_digest: Option<&str>,
) -> Result<(MatcherMode, Option<String>), String> {
    let network = gallery.has_network()
        && model_digest.is_some()
        && gallery.model_digest.as_deref() == model_digest;
    let minutiae = gallery.has_minutiae();
    let other_model = match (&gallery.model_digest, model_digest) {
        (Some(g), Some(m)) if g != m => Some(format!(
            "the gallery was enrolled with model {g}, not the loaded {m}"
        )),
        _ => None,
    };
    match (configured, network, minutiae) {
        (MatcherMode::Network, true, _) | (MatcherMode::Minutiae, _, true) => Ok((configured, None)),
        (MatcherMode::Fused, true, true) => Ok((configured, None)),
        (MatcherMode::Fused | MatcherMode::Minutiae, true, false) => Ok((
            MatcherMode::Network,
            Some(format!(
                "the gallery (version {}) holds no minutiae for some identities: decisions are network-only; enrol each identity again (fingerprintd enroll) to use minutiae",
                gallery.version
            )),
        )),
        (MatcherMode::Fused | MatcherMode::Network, false, true) => Ok((
            MatcherMode::Minutiae,
            Some(match other_model {
                Some(why) => format!("{why}: its network templates are void, decisions are minutiae-only; enrol again to use the network"),
                None => "the gallery has no network templates of the loaded model: decisions are minutiae-only".into(),
            }),
        )),
        _ => Err(match other_model {
            Some(why) => format!("{why}: enrol again"),
            None => format!("the gallery holds no templates the {configured} matcher can use: enrol again"),
        }),
    }
}

/// The policy for `gallery` under `config`, with the model `engine` (None: minutiae only)
/// and the door's calibration, if any.
pub fn resolve(
    config: &DaemonConfig,
    engine: Option<&Engine>,
    gallery: &Gallery,
    door: Option<&DoorCalibration>,
) -> Result<MatchPolicy, PolicyError> {
    let digest = engine.map(|e| e.model.digest.as_str());
    let (mode, downgrade) =
        mode_for(config.matcher.mode, gallery, digest).map_err(PolicyError::Unusable)?;
    if mode.needs_network() && engine.is_none() {
        return Err(PolicyError::NoModel(mode));
    }
    // A calibration fitted on another comparator's minutiae scores (BOZORTH3's before MCC,
    // MCC's before small prints were lowered) is void: its threshold is in another unit.
    // Said in the source of the one in force.
    let stale = door
        .filter(|d| d.mode == mode && mode.needs_minutiae() && !d.same_comparator())
        .map(|d| {
            format!(
                "; the door's {CALIBRATION_FILE} was fitted on another minutiae comparator's scores ({}; this version's: {}) and no longer applies: run `fingerprintd calibrate` again",
                d.minutiae_comparator.as_deref().unwrap_or("BOZORTH3"),
                minutiae::COMPARATOR
            )
        })
        .unwrap_or_default();
    let door = door.filter(|d| d.applies(mode, digest));
    let door_source = |d: &DoorCalibration| {
        format!(
            "the door's calibration ({}, {} on {} stranger scans from {}, target FAR {}{})",
            CALIBRATION_FILE,
            d.created,
            d.stranger_scans,
            d.strangers,
            d.target_far,
            d.basis.map(|b| format!("; set by {b}")).unwrap_or_default()
        )
    };
    // The identities a stranger's scan meets: the shipped threshold rises with them.
    let comparisons = minutiae_comparisons(mode, gallery, config.matcher.exhaustive_below);
    let shipped_minutiae = shipped_minutiae_threshold(comparisons);
    let mut shipped_source = "shipped, calibrated on real impostor pairs (README: \"Thresholds that hold on real strangers\")".to_string();
    if shipped_minutiae > SHIPPED_MINUTIAE_THRESHOLD {
        shipped_source += &format!(
            ", raised from {SHIPPED_MINUTIAE_THRESHOLD} to minutiae score {shipped_minutiae:.2} for a stranger's scan meeting {comparisons} enrolled fingers of 3 impressions (at most {} of strangers' scans let in)",
            SHIPPED_STRANGER_FAR
        );
    }
    // A door's calibrated threshold was never below the shipped one for its gallery then;
    // as the gallery grows, the shipped one rises and the door's follows it. (A calibration
    // from before the strangers' network scores were recorded is followed where its fusion
    // gives the network no weight, so that no network score matters.)
    let door_threshold = |d: &DoorCalibration| -> (f32, String) {
        let range = d.strangers_network.or_else(|| {
            d.fusion
                .is_none_or(|f| f.network_weight == 0.0)
                .then_some([0.0, 0.0])
        });
        match range.and_then(|r| shipped_floor(mode, d.fusion, r, comparisons)) {
            Some(floor) if floor > d.threshold => (
                floor,
                format!(
                    "{}; raised to the shipped threshold for a stranger's scan meeting {comparisons} enrolled fingers of 3 impressions (calibrated on a gallery of {}): run `fingerprintd calibrate` again",
                    door_source(d),
                    d.identities.map_or("fewer".to_string(), |n| n.to_string())
                ),
            ),
            _ => (d.threshold, door_source(d)),
        }
    };
    let configured = "the configuration (matcher.threshold)";
    // Whether the threshold in force was set on scores with the gallery's turned templates
    // (the calibrations record it; a configured threshold is the installer's own measure).
    let (fusion, threshold, source, turned_templates) = match mode {
        MatcherMode::Network => {
            let model_calibration = engine.and_then(|e| e.manifest.calibration.as_ref());
            if let Some(t) = config.model.match_threshold {
                (
                    SHIPPED_FUSION,
                    t,
                    "the configuration (model.match_threshold)".to_string(),
                    true,
                )
            } else if let Some(d) = door {
                (
                    SHIPPED_FUSION,
                    d.threshold,
                    door_source(d),
                    d.enrolment_turns,
                )
            } else if let Some(c) = model_calibration {
                let t = c.similarity_threshold;
                let source = match c.prints {
                    Some(Prints::Real) => "the model's calibration (real prints)".to_string(),
                    Some(_) if !config.matcher.accept_synthetic_threshold => {
                        return Err(PolicyError::SyntheticThreshold { threshold: t });
                    }
                    Some(_) => "the model's calibration, on synthetic prints (allowed by matcher.accept_synthetic_threshold)".to_string(),
                    None => "the model's calibration (prints of unknown origin: check it with fingerprintd calibrate)".to_string(),
                };
                (SHIPPED_FUSION, t, source, c.enrolment_turns)
            } else {
                (
                    SHIPPED_FUSION,
                    FALLBACK_MATCH_THRESHOLD,
                    "the strict fallback (no calibration anywhere)".to_string(),
                    true,
                )
            }
        }
        MatcherMode::Minutiae => match (config.matcher.threshold, door) {
            (Some(t), _) => (SHIPPED_FUSION, t, configured.to_string(), true),
            (None, Some(d)) => {
                let (threshold, source) = door_threshold(d);
                (SHIPPED_FUSION, threshold, source, true)
            }
            (None, None) => (SHIPPED_FUSION, shipped_minutiae, shipped_source, true),
        },
        MatcherMode::Fused => {
            let fusion = door.and_then(|d| d.fusion).unwrap_or(SHIPPED_FUSION);
            match (config.matcher.threshold, door) {
                (Some(t), _) => (fusion, t, configured.to_string(), true),
                (None, Some(d)) => {
                    let (threshold, source) = door_threshold(d);
                    (fusion, threshold, source, d.enrolment_turns)
                }
                // The shipped rule gives the network no weight: its templates only shortlist.
                (None, None) => (
                    SHIPPED_FUSION,
                    shipped_fused_threshold(comparisons),
                    format!("{shipped_source}; the network only shortlists until the door is calibrated"),
                    true,
                ),
            }
        }
    };
    let left_out = if gallery.has_turned() && !turned_templates {
        "; the gallery's turned templates are left out: this threshold was set without them (run `fingerprintd calibrate` to use them)"
    } else {
        ""
    };
    let source = source + &stale + left_out;
    let mut rule = Rule {
        mode,
        fusion,
        shortlist: config.matcher.shortlist,
        exhaustive_below: config.matcher.exhaustive_below,
        enough: None,
        turned_templates,
    };
    // Stopping at `enough` suits claims too: it clears the lower claim threshold as well.
    rule.enough = rule.enough_for(threshold);
    let claim_threshold = match (mode, config.matcher.threshold, door) {
        (MatcherMode::Minutiae, None, None) => shipped_minutiae_threshold(1),
        (MatcherMode::Fused, None, None) => shipped_fused_threshold(1),
        _ => threshold,
    };
    Ok(MatchPolicy {
        rule,
        threshold,
        claim_threshold,
        source,
        downgrade,
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use fingerprint_common::gallery::Impression;
    use fingerprint_common::minutiae::{Minutia, Template};

    /// A gallery of one identity, "alice", with 3 impressions holding a network template
    /// and/or 20 minutiae.
    pub(crate) fn gallery(embedding: bool, minutiae: bool, version: u32) -> Gallery {
        let impression = Impression {
            embedding: embedding.then(|| vec![1.0, 0.0]),
            minutiae: minutiae.then(|| Template {
                minutiae: vec![
                    Minutia {
                        x: 1,
                        y: 2,
                        theta: 3,
                        quality: 50
                    };
                    20
                ],
            }),
            turned: Vec::new(),
        };
        let mut g = Gallery::new(embedding.then_some("sha256:a"));
        g.version = version;
        g.identities.insert("alice".into(), vec![impression; 3]);
        g
    }

    /// A door's minutiae calibration at `threshold`, set by its strangers' scores.
    pub(crate) fn minutiae_door(threshold: f32) -> DoorCalibration {
        DoorCalibration {
            mode: MatcherMode::Minutiae,
            model_digest: None,
            fusion: None,
            minutiae_comparator: Some(minutiae::COMPARATOR.into()),
            threshold,
            basis: Some(ThresholdBasis::Strangers),
            enrolment_turns: true,
            target_far: 0.001,
            far: 0.0,
            frr: 0.05,
            genuine_scores: 30,
            stranger_scans: 200,
            identities: Some(1),
            strangers_network: None,
            strangers: "/srv/strangers".into(),
            created: "2026-12-02T00:00:00Z".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{gallery, minutiae_door};
    use super::*;

    #[test]
    fn the_gallery_decides_which_matchers_can_run() {
        let fused = MatcherMode::Fused;
        // Both templates: as configured.
        assert_eq!(
            mode_for(fused, &gallery(true, true, 2), Some("sha256:a")),
            Ok((fused, None))
        );
        // Version 1 (no minutiae): network only, said so.
        let (mode, why) =
            mode_for(fused, &gallery(true, false, 1), Some("sha256:a")).unwrap_or((fused, None));
        assert_eq!(mode, MatcherMode::Network);
        assert!(why.is_some_and(|w| w.contains("version 1") && w.contains("enrol")));
        // Templates of another model: minutiae only; with no minutiae either, nothing.
        let (mode, why) =
            mode_for(fused, &gallery(true, true, 2), Some("sha256:b")).unwrap_or((fused, None));
        assert_eq!(mode, MatcherMode::Minutiae);
        assert!(why.is_some_and(|w| w.contains("sha256:b")));
        let err = mode_for(fused, &gallery(true, false, 1), Some("sha256:b"));
        assert!(err.is_err_and(|e| e.contains("enrol again")));
        // No model at all: minutiae.
        assert_eq!(
            mode_for(MatcherMode::Minutiae, &gallery(false, true, 2), None),
            Ok((MatcherMode::Minutiae, None))
        );
    }

    /// The default configuration, minutiae alone and no model.
    fn minutiae_config() -> DaemonConfig {
        let mut config =
            DaemonConfig::parse(fingerprint_common::DEFAULT_CONFIG, Path::new("config.toml"))
                .expect("the default configuration parses");
        config.matcher.mode = MatcherMode::Minutiae;
        config.model.path = None;
        config
    }

    #[test]
    fn the_threshold_comes_from_the_config_then_the_door_then_the_shipped_one() {
        let mut config = minutiae_config();
        let g = gallery(false, true, 2);
        let shipped = resolve(&config, None, &g, None).expect("policy");
        assert_eq!(shipped.threshold, SHIPPED_MINUTIAE_THRESHOLD);
        assert!(shipped.source.starts_with("shipped"));
        let door = minutiae_door(61.0);
        let calibrated = resolve(&config, None, &g, Some(&door)).expect("policy");
        assert_eq!(calibrated.threshold, 61.0);
        assert!(calibrated.source.contains("/srv/strangers"));
        assert!(
            calibrated.source.contains("set by the strangers' scores"),
            "{}",
            calibrated.source
        );
        // A calibration for another matcher does not apply.
        let fused_door = DoorCalibration {
            mode: MatcherMode::Fused,
            ..door.clone()
        };
        let other = resolve(&config, None, &g, Some(&fused_door)).expect("policy");
        assert_eq!(other.threshold, SHIPPED_MINUTIAE_THRESHOLD);
        // Nor one fitted on BOZORTH3's scores (written before MCC: no comparator), and the
        // log's source says why.
        let bozorth_door = DoorCalibration {
            minutiae_comparator: None,
            ..door.clone()
        };
        let stale = resolve(&config, None, &g, Some(&bozorth_door)).expect("policy");
        assert_eq!(stale.threshold, SHIPPED_MINUTIAE_THRESHOLD);
        assert!(stale.source.contains("BOZORTH3"), "{}", stale.source);
        // Nor one fitted on MCC's scores before small prints were lowered.
        let unlowered_door = DoorCalibration {
            minutiae_comparator: Some("mcc-lssr/100".into()),
            // Stricter than shipped: kept, were it applied.
            threshold: 4.5,
            ..door.clone()
        };
        let stale = resolve(&config, None, &g, Some(&unlowered_door)).expect("policy");
        assert_eq!(stale.threshold, SHIPPED_MINUTIAE_THRESHOLD);
        assert!(
            stale
                .source
                .contains("(mcc-lssr/100; this version's: mcc-lssr-area/100)"),
            "{}",
            stale.source
        );
        let old_json = serde_json::to_string(&bozorth_door)
            .expect("json")
            .replace(",\"minutiae_comparator\":null", "")
            .replace(",\"enrolment_turns\":true", "");
        assert!(!old_json.contains("minutiae_comparator") && !old_json.contains("enrolment_turns"));
        let parsed: DoorCalibration = serde_json::from_str(&old_json).expect("an old file parses");
        // A calibration from before enrolment turns was set without turned templates.
        assert_eq!(
            parsed,
            DoorCalibration {
                enrolment_turns: false,
                ..bozorth_door
            }
        );
        config.matcher.threshold = Some(70.0);
        let configured = resolve(&config, None, &g, Some(&door)).expect("policy");
        assert_eq!(configured.threshold, 70.0);
        assert!(configured.source.contains("matcher.threshold"));
        // Fused without a model (the configuration check refuses it first) falls back to
        // minutiae, and says so.
        config.matcher.mode = MatcherMode::Fused;
        let fallback = resolve(&config, None, &gallery(true, true, 2), None).expect("policy");
        assert_eq!(fallback.rule.mode, MatcherMode::Minutiae);
        assert!(fallback.downgrade.is_some());
    }

    #[test]
    fn the_shipped_and_door_thresholds_rise_as_the_gallery_grows() {
        let config = minutiae_config();
        let grown = |identities: usize| {
            let mut g = gallery(false, true, 2);
            let alice = g.identities["alice"].clone();
            for i in 1..identities {
                g.identities.insert(format!("person{i}"), alice.clone());
            }
            g
        };
        let small = resolve(&config, None, &grown(50), None).expect("policy");
        assert_eq!(small.threshold, SHIPPED_MINUTIAE_THRESHOLD);
        assert!(!small.source.contains("raised"), "{}", small.source);
        let large = resolve(&config, None, &grown(1000), None).expect("policy");
        assert_eq!(large.threshold, shipped_minutiae_threshold(1000));
        assert!(large.threshold > SHIPPED_MINUTIAE_THRESHOLD + 0.3);
        assert!(
            large.source.contains("raised") && large.source.contains("1000 enrolled fingers"),
            "{}",
            large.source
        );
        assert_eq!(large.rule.enough, Some(large.threshold));
        // A claim (1:1) meets one identity: the shipped threshold for one.
        assert_eq!(large.claim_threshold, SHIPPED_MINUTIAE_THRESHOLD);
        assert_eq!(small.claim_threshold, small.threshold);
        // A door calibrated on one identity, its gallery grown since: the shipped floor for
        // today's gallery, and the log asks for a new calibration.
        let door = minutiae_door(SHIPPED_MINUTIAE_THRESHOLD + 0.1);
        let followed = resolve(&config, None, &grown(1000), Some(&door)).expect("policy");
        assert_eq!(followed.threshold, large.threshold);
        // The door's own threshold (and what follows the gallery) holds for claims too.
        assert_eq!(followed.claim_threshold, followed.threshold);
        assert!(
            followed.source.contains("/srv/strangers")
                && followed.source.contains("calibrated on a gallery of 1)")
                && followed.source.contains("calibrate` again"),
            "{}",
            followed.source
        );
        // A stricter calibration stays as it is.
        let strict = minutiae_door(6.0);
        let kept = resolve(&config, None, &grown(1000), Some(&strict)).expect("policy");
        assert_eq!(kept.threshold, 6.0);
        assert!(!kept.source.contains("raised"), "{}", kept.source);
    }
}
