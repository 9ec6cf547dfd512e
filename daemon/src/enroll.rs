//! Enrolment: templates of new identities into the gallery (each impression kept as the
//! network's template and as its minutiae), removal, listing; and enrolment over MQTT.

use std::path::{Path, PathBuf};

use fingerprint_common::gallery::{
    agreement, check_name, GalleryError, GalleryLock, Impression, MIN_IMPRESSIONS,
};
use fingerprint_common::matcher::{MatcherMode, PairScores};
use fingerprint_common::preprocess::ENROLMENT_TURNS_DEGREES;
use fingerprint_common::{decode_scan, minutiae, DaemonConfig, Gallery, ScanLimits};

use std::sync::Arc;

use crate::engine::{Engine, EngineSlot};
use crate::policy::{self, DoorCalibration, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Gallery(#[from] GalleryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("at least {MIN_IMPRESSIONS} impressions are needed to enrol, got {0}")]
    TooFew(usize),
    #[error("{name}: {reason}")]
    BadScan { name: String, reason: String },
    #[error("impressions unusable for minutiae: {0}")]
    NoMinutiae(String),
    #[error("impressions disagree, so they may not all be of one finger ({matcher} score against the closer half of the others, needed {needed:.3}): {details}")]
    Inconsistent {
        matcher: MatcherMode,
        needed: f32,
        details: String,
    },
    #[error("the gallery was enrolled with model {gallery}, this model is {model}: remove {path} and enrol again")]
    OtherModel {
        gallery: String,
        model: String,
        path: PathBuf,
    },
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

/// What an enrolment stored.
#[derive(Debug)]
pub struct Enrolled {
    pub identity: String,
    pub templates: usize,
    /// The matcher the impressions were checked against each other with.
    pub matcher: MatcherMode,
    /// Each impression's score against the closer half of the others (`gallery::agreement`),
    /// in the order given.
    pub agreement: Vec<f32>,
    /// The threshold they had to reach.
    pub threshold: f32,
    /// True when the identity was enrolled before and its templates were replaced.
    pub replaced: bool,
    /// The impressions whose minutiae cover less than [`minutiae::FULL_PRINT_AREA`], with that
    /// area in mm²: their comparisons are scored lower ([`minutiae::small_print_score`]), so
    /// a scan of the finger needs a closer match to be let in.
    pub small_prints: Vec<(String, f32)>,
}

impl Enrolled {
    /// A line for the installer when impressions were small prints, else None.
    pub fn small_prints_note(&self) -> Option<String> {
        if self.small_prints.is_empty() {
            return None;
        }
        let listed: Vec<String> = self
            .small_prints
            .iter()
            .map(|(name, mm2)| format!("{name}: {mm2:.0} mm²"))
            .collect();
        Some(format!(
            "{} of {} impressions show minutiae over less than {:.0} mm² ({}): comparisons with them must match more closely to let the finger in; enrolling again with the finger laid flat over the whole sensor helps, where the sensor allows",
            self.small_prints.len(),
            self.templates,
            MM2_PER_PX2_AT_500_DPI * minutiae::FULL_PRINT_AREA,
            listed.join(", ")
        ))
    }
}

/// Square millimetres a pixel covers at 500 dpi.
const MM2_PER_PX2_AT_500_DPI: f32 = (25.4 / 500.0) * (25.4 / 500.0);

fn gallery_for(engine: Option<&Engine>, path: &Path) -> Result<Gallery, EnrollError> {
    let digest = engine.map(|e| e.model.digest.as_str());
    match Gallery::load(path)? {
        Some(g) if g.is_empty() => Ok(Gallery::new(digest)),
        Some(g) => match (&g.model_digest, digest) {
            (Some(had), Some(model)) if had != model => Err(EnrollError::OtherModel {
                gallery: had.clone(),
                model: model.into(),
                path: path.into(),
            }),
            _ => Ok(g),
        },
        None => Ok(Gallery::new(digest)),
    }
}

/// A scan's network template and those of the scan turned by each enrolment turn.
type ScanTemplates = (Option<Vec<f32>>, Vec<Vec<f32>>);

/// Enrols (or re-enrols, replacing its templates) `identity` from encoded scans given with a
/// name each. Each impression keeps the network's template (when a model is loaded) with
/// those of the scan turned by each of `ENROLMENT_TURNS_DEGREES`, and its
/// minutiae (required unless the matcher is the network alone: a scan with too few is
/// refused, with the count). Every impression must match at least half of the others at the
/// door's threshold, by the door's matcher (`gallery::agreement`): a scan of another finger
/// among them is refused, with the scores.
pub fn enroll(
    engine: Option<&Engine>,
    config: &DaemonConfig,
    identity: &str,
    scans: &[(String, Vec<u8>)],
    limits: &ScanLimits,
) -> Result<Enrolled, EnrollError> {
    check_name(identity)?;
    if scans.len() < MIN_IMPRESSIONS {
        return Err(EnrollError::TooFew(scans.len()));
    }
    let images = scans
        .iter()
        .map(|(name, bytes)| {
            decode_scan(bytes, limits).map_err(|e| EnrollError::BadScan {
                name: name.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Each scan's template, then those of the scan turned by each enrolment turn.
    let templates: Vec<ScanTemplates> = match engine {
        Some(engine) => {
            let inputs: Vec<Vec<f32>> = images
                .iter()
                .flat_map(|i| {
                    std::iter::once(0.0)
                        .chain(ENROLMENT_TURNS_DEGREES)
                        .map(move |degrees| {
                            engine.preprocessing().apply_turned_at(
                                i,
                                config.matcher.sensor_dpi,
                                degrees,
                            )
                        })
                })
                .collect();
            let mut embeddings = engine
                .embeddings(&inputs)
                .map_err(EnrollError::Inference)?
                .into_iter();
            (0..images.len())
                .map(|_| {
                    let own = embeddings.next();
                    (
                        own,
                        embeddings
                            .by_ref()
                            .take(ENROLMENT_TURNS_DEGREES.len())
                            .collect(),
                    )
                })
                .collect()
        }
        None => vec![(None, Vec::new()); images.len()],
    };
    let extracted: Vec<Result<minutiae::Template, minutiae::MinutiaeError>> = images
        .iter()
        .map(|i| minutiae::extract(i, config.matcher.minutiae_dpi()))
        .collect();
    if config.matcher.mode.needs_minutiae() {
        let refused: Vec<String> = scans
            .iter()
            .zip(&extracted)
            .filter_map(|((name, _), m)| m.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        if !refused.is_empty() {
            return Err(EnrollError::NoMinutiae(refused.join("; ")));
        }
    }
    let impressions: Vec<Impression> = templates
        .into_iter()
        .zip(extracted)
        .map(|((embedding, turned), m)| Impression {
            embedding,
            minutiae: m.ok(),
            turned,
        })
        .collect();

    let _lock = GalleryLock::acquire(&config.gallery_path())?;
    let mut gallery = gallery_for(engine, &config.gallery_path())?;
    let replaced = gallery
        .identities
        .insert(identity.into(), impressions.clone())
        .is_some();
    // The door's rule for the gallery as it will be, applied within the enrolment.
    let door = DoorCalibration::load(&DoorCalibration::path(config))?;
    let policy = policy::resolve(config, engine, &gallery, door.as_ref())?;
    let prepared: Vec<Option<minutiae::Prepared>> = impressions
        .iter()
        .map(|i| i.minutiae.as_ref().map(|t| t.prepared()))
        .collect();
    let cosine = |i: usize, j: usize| match (&impressions[i].embedding, &impressions[j].embedding) {
        (Some(a), Some(b)) => fingerprint_common::gallery::similarity(a, b),
        _ => f32::NEG_INFINITY,
    };
    let minutiae = |i: usize, j: usize| match (&prepared[i], &prepared[j]) {
        (Some(a), Some(b)) => a.score(b),
        _ => 0.0,
    };
    let rule = policy.rule;
    let agreement = agreement(impressions.len(), |i, j| match rule.mode {
        MatcherMode::Network => cosine(i, j),
        MatcherMode::Minutiae => minutiae(i, j),
        MatcherMode::Fused => rule.fusion.score(PairScores {
            network: cosine(i, j),
            minutiae: minutiae(i, j),
        }),
    });
    // Only where the door compares minutiae: the network alone does not lower them.
    let small_prints: Vec<(String, f32)> = scans
        .iter()
        .zip(&prepared)
        .filter(|_| rule.mode.needs_minutiae())
        .filter_map(|((name, _), p)| {
            let area = p.as_ref()?.area();
            (area < minutiae::FULL_PRINT_AREA)
                .then(|| (name.clone(), area * MM2_PER_PX2_AT_500_DPI))
        })
        .collect();
    let outliers: Vec<String> = scans
        .iter()
        .zip(&agreement)
        .filter(|(_, a)| **a < policy.threshold)
        .map(|((name, _), a)| format!("{name}: {a:.3}"))
        .collect();
    if !outliers.is_empty() {
        return Err(EnrollError::Inconsistent {
            matcher: rule.mode,
            needed: policy.threshold,
            details: outliers.join(", "),
        });
    }
    gallery.save(&config.gallery_path())?;
    Ok(Enrolled {
        identity: identity.into(),
        templates: scans.len(),
        matcher: rule.mode,
        agreement,
        threshold: policy.threshold,
        replaced,
        small_prints,
    })
}

/// Removes an identity; false if it was not enrolled.
pub fn remove(gallery_path: &Path, identity: &str) -> Result<bool, GalleryError> {
    let _lock = GalleryLock::acquire(gallery_path)?;
    let Some(mut gallery) = Gallery::load(gallery_path)? else {
        return Ok(false);
    };
    let removed = gallery.identities.remove(identity).is_some();
    if removed {
        gallery.save(gallery_path)?;
    }
    Ok(removed)
}

/// Enrolled identities and their template counts.
pub fn list(gallery_path: &Path) -> Result<Vec<(String, usize)>, GalleryError> {
    Ok(Gallery::load(gallery_path)?
        .map(|g| {
            g.identities
                .into_iter()
                .map(|(name, t)| (name, t.len()))
                .collect()
        })
        .unwrap_or_default())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminRequest {
    request_id: Option<String>,
    identity: String,
    /// Base64 image files (enrolment only).
    #[serde(default)]
    images: Vec<String>,
}

#[derive(serde::Serialize)]
struct AdminReply<'a> {
    request_id: Option<String>,
    action: &'a str,
    identity: Option<String>,
    ok: bool,
    /// Templates stored (enrolment).
    templates: Option<usize>,
    error: Option<String>,
}

fn action(enroll: bool) -> &'static str {
    if enroll {
        "enroll"
    } else {
        "remove"
    }
}

/// A reply for a request that could not be handled at all.
pub fn failure_reply(enroll: bool, error: &str) -> Vec<u8> {
    serde_json::to_vec(&AdminReply {
        request_id: None,
        action: action(enroll),
        identity: None,
        ok: false,
        templates: None,
        error: Some(error.into()),
    })
    .unwrap_or_default()
}

/// Enrolment and removal on request (over MQTT): what they need of the running service.
#[derive(Clone)]
pub struct Admin {
    pub engine: EngineSlot,
    pub config: Arc<DaemonConfig>,
}

impl Admin {
    /// Handles an enrolment (`enroll`) or removal request and returns the JSON reply:
    /// `{"request_id", "action", "identity", "ok", "templates", "error"}`.
    pub fn handle_request(&self, enroll: bool, payload: &[u8], limits: &ScanLimits) -> Vec<u8> {
        handle_request(self, enroll, payload, limits)
    }
}

fn handle_request(admin: &Admin, enroll: bool, payload: &[u8], limits: &ScanLimits) -> Vec<u8> {
    let request: AdminRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => return failure_reply(enroll, &format!("bad request: {e}")),
    };
    let result: Result<Option<usize>, String> = if enroll {
        use base64::Engine as _;
        let scans: Result<Vec<(String, Vec<u8>)>, String> = request
            .images
            .iter()
            .enumerate()
            .map(|(i, b64)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("image {i}: not base64: {e}"))?;
                if bytes.len() > limits.max_bytes {
                    return Err(format!("image {i}: larger than {} bytes", limits.max_bytes));
                }
                Ok((format!("image {i}"), bytes))
            })
            .collect();
        scans.and_then(|scans| {
            let engine = admin.engine.current();
            self::enroll(
                engine.as_deref(),
                &admin.config,
                &request.identity,
                &scans,
                limits,
            )
            .map(|done| {
                if let Some(note) = done.small_prints_note() {
                    tracing::warn!(identity = %request.identity, "{note}");
                }
                Some(done.templates)
            })
            .map_err(|e| e.to_string())
        })
    } else {
        remove(&admin.config.gallery_path(), &request.identity)
            .map_err(|e| e.to_string())
            .and_then(|removed| {
                if removed {
                    Ok(None)
                } else {
                    Err(format!("{} is not enrolled", request.identity))
                }
            })
    };
    match &result {
        Ok(_) => tracing::info!(identity = %request.identity, "{} over MQTT", action(enroll)),
        Err(e) => {
            tracing::warn!(identity = %request.identity, "{} over MQTT refused: {e}", action(enroll))
        }
    }
    serde_json::to_vec(&AdminReply {
        request_id: request.request_id,
        action: action(enroll),
        identity: Some(request.identity),
        ok: result.is_ok(),
        templates: result.as_ref().ok().copied().flatten(),
        error: result.err(),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolled(small_prints: Vec<(String, f32)>) -> Enrolled {
        Enrolled {
            identity: "alice".into(),
            templates: 3,
            matcher: MatcherMode::Minutiae,
            agreement: vec![10.0; 3],
            threshold: 3.3,
            replaced: false,
            small_prints,
        }
    }

    #[test]
    fn small_prints_are_named_to_the_installer() {
        assert_eq!(enrolled(Vec::new()).small_prints_note(), None);
        let note = enrolled(vec![("a.png".into(), 41.4), ("c.png".into(), 70.0)])
            .small_prints_note()
            .expect("a note");
        assert!(
            note.starts_with("2 of 3 impressions show minutiae over less than 93 mm² (a.png: 41 mm², c.png: 70 mm²)"),
            "{note}"
        );
    }
}
