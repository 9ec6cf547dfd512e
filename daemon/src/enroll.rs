//! Enrolment: templates of new identities into the gallery, removal, listing; and the gallery
//! the running service matches against, reloaded when the file changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use fingerprint_common::gallery::{
    agreement, check_name, GalleryError, GalleryLock, MIN_IMPRESSIONS,
};
use fingerprint_common::{Gallery, ScanLimits};

use crate::engine::Engine;
use crate::input::encoded_scan_input;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Gallery(#[from] GalleryError),
    #[error("at least {MIN_IMPRESSIONS} impressions are needed to enrol, got {0}")]
    TooFew(usize),
    #[error("{name}: {reason}")]
    BadScan { name: String, reason: String },
    #[error("impressions disagree, so they may not all be of one finger (similarity to the closer half of the others, needed {needed:.3}): {details}")]
    Inconsistent { needed: f32, details: String },
    #[error("the gallery was enrolled with model {gallery}, this model is {model}: remove {path} and enrol again")]
    OtherModel {
        gallery: String,
        model: String,
        path: PathBuf,
    },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// What an enrolment stored.
#[derive(Debug)]
pub struct Enrolled {
    pub identity: String,
    pub templates: usize,
    /// Each impression's similarity to the closer half of the others (`gallery::agreement`),
    /// in the order given.
    pub agreement: Vec<f32>,
    /// True when the identity was enrolled before and its templates were replaced.
    pub replaced: bool,
}

fn gallery_for(engine: &Engine, path: &Path) -> Result<Gallery, EnrollError> {
    match Gallery::load(path)? {
        Some(g) if g.is_empty() => Ok(Gallery::new(&engine.model.digest)),
        Some(g) if g.model_digest != engine.model.digest => Err(EnrollError::OtherModel {
            gallery: g.model_digest,
            model: engine.model.digest.clone(),
            path: path.into(),
        }),
        Some(g) => Ok(g),
        None => Ok(Gallery::new(&engine.model.digest)),
    }
}

/// Enrols (or re-enrols, replacing its templates) `identity` from encoded scans given with a
/// name each. Every impression must match at least half of the others at the match threshold
/// (`gallery::agreement`): a scan of another finger among them is refused, with the scores.
pub fn enroll(
    engine: &Engine,
    gallery_path: &Path,
    identity: &str,
    scans: &[(String, Vec<u8>)],
    limits: &ScanLimits,
) -> Result<Enrolled, EnrollError> {
    check_name(identity)?;
    if scans.len() < MIN_IMPRESSIONS {
        return Err(EnrollError::TooFew(scans.len()));
    }
    let inputs = scans
        .iter()
        .map(|(name, bytes)| {
            encoded_scan_input(bytes, engine.preprocessing(), limits).map_err(|e| {
                EnrollError::BadScan {
                    name: name.clone(),
                    reason: e.to_string(),
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let templates = engine
        .embeddings(&inputs)
        .map_err(|e| EnrollError::Inference(e.to_string()))?;
    let agreement = agreement(&templates);
    let needed = engine.match_threshold;
    let outliers: Vec<String> = scans
        .iter()
        .zip(&agreement)
        .filter(|(_, a)| **a < needed)
        .map(|((name, _), a)| format!("{name}: {a:.3}"))
        .collect();
    if !outliers.is_empty() {
        return Err(EnrollError::Inconsistent {
            needed,
            details: outliers.join(", "),
        });
    }
    let _lock = GalleryLock::acquire(gallery_path)?;
    let mut gallery = gallery_for(engine, gallery_path)?;
    let replaced = gallery
        .identities
        .insert(identity.into(), templates)
        .is_some();
    gallery.save(gallery_path)?;
    Ok(Enrolled {
        identity: identity.into(),
        templates: scans.len(),
        agreement,
        replaced,
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

/// The file's modification time when read, and what it held (None: nothing enrolled).
type LoadedGallery = (Option<SystemTime>, Option<Arc<Gallery>>);

/// The gallery the service matches against, swapped whole when the file changes.
#[derive(Clone)]
pub struct GallerySlot {
    path: PathBuf,
    state: Arc<RwLock<LoadedGallery>>,
}

impl GallerySlot {
    /// Loads the gallery if there is one.
    pub fn open(path: &Path) -> Result<Self, GalleryError> {
        let slot = Self {
            path: path.into(),
            state: Arc::default(),
        };
        slot.refresh()?;
        Ok(slot)
    }

    /// The gallery in use (None: nothing enrolled).
    pub fn current(&self) -> Option<Arc<Gallery>> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Reloads the file if it changed; true when it did. On error the gallery in use stays.
    pub fn refresh(&self) -> Result<bool, GalleryError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let seen = self.state.read().unwrap_or_else(PoisonError::into_inner).0;
        if modified == seen {
            return Ok(false);
        }
        let gallery = Gallery::load(&self.path)?.filter(|g| !g.is_empty());
        *self.state.write().unwrap_or_else(PoisonError::into_inner) =
            (modified, gallery.map(Arc::new));
        Ok(true)
    }
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

/// Handles an MQTT enrolment (`enroll`) or removal request and returns the JSON reply:
/// `{"request_id", "action", "identity", "ok", "templates", "error"}`.
pub fn handle_request(
    admin: &crate::mqtt::Admin,
    enroll: bool,
    payload: &[u8],
    limits: &ScanLimits,
) -> Vec<u8> {
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
            crate::enroll::enroll(&engine, &admin.gallery, &request.identity, &scans, limits)
                .map(|done| Some(done.templates))
                .map_err(|e| e.to_string())
        })
    } else {
        remove(&admin.gallery, &request.identity)
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
