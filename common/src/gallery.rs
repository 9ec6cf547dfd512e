//! The gallery of enrolled identities: several templates (L2-normalised embeddings of scans)
//! per identity, matched by cosine similarity. A scan's score for an identity is its best
//! similarity to that identity's templates.
//!
//! Stored as JSON (templates as base64 of little-endian f32) next to the digest of the model
//! that made them: templates of another model mean nothing. Saved atomically (temporary
//! file, fsync, rename, fsync of the directory), so a power cut leaves the old gallery or the
//! new one, never a mixture; writers take an exclusive lock on `<file>.lock`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Candidate;

pub const GALLERY_FORMAT: &str = "fingerprint-gallery";
pub const GALLERY_VERSION: u32 = 1;
/// Fewest impressions an identity is enrolled from.
pub const MIN_IMPRESSIONS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a gallery file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "identity name '{0}' must be 1-128 characters, without '/', '+', '#' or control characters, and not the background class's name"
    )]
    BadName(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gallery {
    /// `sha256:...` data digest of the model whose embeddings these are.
    pub model_digest: String,
    /// Templates per identity (each L2-normalised).
    pub identities: BTreeMap<String, Vec<Vec<f32>>>,
}

#[derive(Serialize, Deserialize)]
struct GalleryFile {
    format: String,
    version: u32,
    model_digest: String,
    identities: BTreeMap<String, Vec<String>>,
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Cosine similarity of two unit vectors.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// How well each impression of an enrolment agrees with the others: its similarity to the
/// closer half of them (the ceil((n-1)/2)-th best of its n-1 similarities; with 3 impressions,
/// its best match). An impression scoring under the match threshold would not be granted
/// against half of the others. This is the decision rule applied within the enrolment, so a
/// finger the door would grant is not refused, while one impression of another finger (it
/// matches none) or a 2 + 2 mix of two fingers (each matches only one of three) is.
pub fn agreement(templates: &[Vec<f32>]) -> Vec<f32> {
    let n = templates.len();
    let rank = n.saturating_sub(1).div_ceil(2).max(1);
    (0..n)
        .map(|i| {
            let mut others: Vec<f32> = (0..n)
                .filter(|&j| j != i)
                .map(|j| similarity(&templates[i], &templates[j]))
                .collect();
            others.sort_by(|a, b| b.total_cmp(a));
            others.get(rank - 1).copied().unwrap_or(f32::NEG_INFINITY)
        })
        .collect()
}

pub fn check_name(name: &str) -> Result<(), GalleryError> {
    let ok = name != crate::BACKGROUND_LABEL
        && !name.is_empty()
        && name.chars().count() <= 128
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '+' | '#'));
    if ok {
        Ok(())
    } else {
        Err(GalleryError::BadName(name.into()))
    }
}

impl Gallery {
    pub fn new(model_digest: &str) -> Self {
        Self {
            model_digest: model_digest.into(),
            identities: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// Score of every identity (or of `claim` only), best first.
    pub fn rank(&self, probe: &[f32], claim: Option<&str>) -> Vec<Candidate> {
        let mut scores: Vec<Candidate> = self
            .identities
            .iter()
            .filter(|(name, _)| claim.is_none_or(|c| c == name.as_str()))
            .map(|(name, templates)| Candidate {
                identity: name.clone(),
                score: templates
                    .iter()
                    .map(|t| similarity(probe, t))
                    .fold(f32::NEG_INFINITY, f32::max),
            })
            .collect();
        scores.sort_by(|a, b| b.score.total_cmp(&a.score));
        scores
    }

    /// Reads a gallery; `Ok(None)` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Self>, GalleryError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(GalleryError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        let malformed = |reason: String| GalleryError::Malformed {
            path: path.into(),
            reason,
        };
        let file: GalleryFile =
            serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if file.format != GALLERY_FORMAT || file.version != GALLERY_VERSION {
            return Err(malformed(format!(
                "format {} version {}, expected {GALLERY_FORMAT} {GALLERY_VERSION}",
                file.format, file.version
            )));
        }
        let mut identities = BTreeMap::new();
        for (name, templates) in file.identities {
            let decoded = templates
                .iter()
                .map(|t| {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(t)
                        .map_err(|e| malformed(format!("{name}: {e}")))?;
                    if raw.len() % 4 != 0 {
                        return Err(malformed(format!(
                            "{name}: template of {} bytes",
                            raw.len()
                        )));
                    }
                    Ok(raw
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect())
                })
                .collect::<Result<Vec<Vec<f32>>, _>>()?;
            identities.insert(name, decoded);
        }
        Ok(Some(Self {
            model_digest: file.model_digest,
            identities,
        }))
    }

    /// Writes the gallery atomically.
    pub fn save(&self, path: &Path) -> Result<(), GalleryError> {
        let file = GalleryFile {
            format: GALLERY_FORMAT.into(),
            version: GALLERY_VERSION,
            model_digest: self.model_digest.clone(),
            identities: self
                .identities
                .iter()
                .map(|(name, templates)| {
                    let encoded = templates
                        .iter()
                        .map(|t| {
                            let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
                            base64::engine::general_purpose::STANDARD.encode(bytes)
                        })
                        .collect();
                    (name.clone(), encoded)
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| GalleryError::Malformed {
            path: path.into(),
            reason: e.to_string(),
        })?;
        crate::durable::write_atomically(path, &json).map_err(|source| GalleryError::Io {
            path: path.into(),
            source,
        })
    }
}

/// An exclusive lock on a gallery for a read-modify-write; released when dropped.
pub struct GalleryLock(#[allow(dead_code)] File);

impl GalleryLock {
    /// Takes the lock, creating the gallery's directory if need be (the first enrolment).
    pub fn acquire(gallery: &Path) -> Result<Self, GalleryError> {
        if let Some(dir) = gallery.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| GalleryError::Io {
                path: dir.into(),
                source,
            })?;
        }
        let mut name = gallery.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| GalleryError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock()
            .map_err(|source| GalleryError::Io { path, source })?;
        Ok(Self(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors at `angles` (degrees) in a plane: similarity = cos of the difference.
    fn at(angles: &[f32]) -> Vec<Vec<f32>> {
        angles
            .iter()
            .map(|a| vec![a.to_radians().cos(), a.to_radians().sin()])
            .collect()
    }

    #[test]
    fn names_are_refused_when_empty_unsafe_for_topics_or_the_background_class() {
        assert!(check_name("alice-left-index").is_ok());
        for bad in ["", "a/b", "a+b", "a#b", "a\nb", crate::BACKGROUND_LABEL] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn agreement_is_the_match_with_the_closer_half_of_the_others() {
        // Three impressions: each one's best match (A-B 10 degrees, B-C 30, A-C 40).
        let three = agreement(&at(&[0.0, 10.0, 40.0]));
        let cos = |d: f32| d.to_radians().cos();
        for (got, want) in three.iter().zip([cos(10.0), cos(10.0), cos(30.0)]) {
            assert!((got - want).abs() < 1e-6, "{three:?}");
        }
        // One impression of another finger among five: it alone scores low.
        let five = agreement(&at(&[0.0, 5.0, 10.0, 15.0, 90.0]));
        assert!(five[..4].iter().all(|&a| a > cos(11.0)), "{five:?}");
        assert!(five[4] < cos(70.0), "{five:?}");
        // Two fingers mixed 2 + 2: every impression matches only one of the three others,
        // so each scores its second best match, a cross-finger one.
        let mixed = agreement(&at(&[0.0, 3.0, 60.0, 63.0]));
        assert!(mixed.iter().all(|&a| a < cos(50.0)), "{mixed:?}");
    }
}
