//! The gallery of enrolled identities: several impressions per identity, each kept as the
//! network's template (its L2-normalised embedding) and as its minutiae, so that either
//! matcher, or both fused, can compare a scan with it (`crate::matcher`).
//!
//! Stored as JSON (embeddings as base64 of little-endian f32, minutiae as `[x, y, theta,
//! quality]`) next to the digest of the model that made the embeddings: templates of another
//! model mean nothing. A gallery enrolled with minutiae alone has no model. Saved atomically
//! (temporary file, fsync, rename, fsync of the directory), so a power cut leaves the old
//! gallery or the new one, never a mixture; writers take an exclusive lock on `<file>.lock`.
//!
//! Versions: 2 (this one) keeps both templates of each impression, and the network's
//! templates of the scan turned by the enrolment turns where it was enrolled with them
//! (`turned`, optional: galleries from before turns load and match as they did); 1 (before
//! minutiae) kept the network's only, and still loads, as a gallery whose decisions are
//! network-only.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::minutiae::{Minutia, Template};

pub const GALLERY_FORMAT: &str = "fingerprint-gallery";
pub const GALLERY_VERSION: u32 = 2;
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

/// One enrolled scan of a finger, as each matcher keeps it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impression {
    /// The network's template (L2-normalised); None when enrolled without a model.
    pub embedding: Option<Vec<f32>>,
    /// Its minutiae; None in galleries from before minutiae (version 1).
    pub minutiae: Option<Template>,
    /// The network's templates of the same scan turned by
    /// [`ENROLMENT_TURNS_DEGREES`](crate::preprocess::ENROLMENT_TURNS_DEGREES) (L2-normalised),
    /// compared with a probe as the scan's own is; empty in galleries enrolled before turns,
    /// without a model, and for probes.
    pub turned: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gallery {
    /// `sha256:...` data digest of the model whose embeddings these are (None: minutiae only).
    pub model_digest: Option<String>,
    /// Impressions per identity.
    pub identities: BTreeMap<String, Vec<Impression>>,
    /// The version of the file it was read from (1: network templates only).
    pub version: u32,
}

impl Default for Gallery {
    fn default() -> Self {
        Self {
            model_digest: None,
            identities: BTreeMap::new(),
            version: GALLERY_VERSION,
        }
    }
}

/// Just the header, to choose how to read the rest.
#[derive(Deserialize)]
struct FileHeader {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct GalleryFileV1 {
    format: String,
    version: u32,
    model_digest: String,
    identities: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, Deserialize)]
struct GalleryFile {
    format: String,
    version: u32,
    model_digest: Option<String>,
    identities: BTreeMap<String, Vec<ImpressionFile>>,
}

#[derive(Serialize, Deserialize)]
struct ImpressionFile {
    /// Base64 of little-endian f32.
    embedding: Option<String>,
    /// `[x, y, theta, quality]` each.
    minutiae: Option<Vec<[i32; 4]>>,
    /// The turned scan's templates, base64 each as `embedding` (absent: none; a file of an
    /// older binary still loads, and an older binary ignores them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    turned: Vec<String>,
}

fn encode_embedding(t: &[f32]) -> String {
    let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_embedding(text: &str) -> Result<Vec<f32>, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())?;
    if raw.len() % 4 != 0 {
        return Err(format!("template of {} bytes", raw.len()));
    }
    Ok(raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Cosine similarity of two unit vectors. Summed in 8 lanes, which the compiler turns into
/// vector instructions (a single running sum cannot be reordered, so it would stay scalar):
/// a 1:N shortlist computes ten thousand of these per scan.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// How well each of `n` impressions of an enrolment agrees with the others, given the score
/// of impression `i` against impression `j` (the door's matcher: cosine, minutiae or fused):
/// its score against the closer half of them (the ceil((n-1)/2)-th best of its n-1 scores;
/// with 3 impressions, its best match). An impression scoring under the match threshold would
/// not be granted against half of the others. This is the decision rule applied within the
/// enrolment, so a finger the door would grant is not refused, while one impression of
/// another finger (it matches none) or a 2 + 2 mix of two fingers (each matches only one of
/// three) is.
pub fn agreement(n: usize, score: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let rank = n.saturating_sub(1).div_ceil(2).max(1);
    (0..n)
        .map(|i| {
            let mut others: Vec<f32> = (0..n).filter(|&j| j != i).map(|j| score(i, j)).collect();
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
    /// An empty gallery for templates of the model with this digest (None: minutiae only).
    pub fn new(model_digest: Option<&str>) -> Self {
        Self {
            model_digest: model_digest.map(str::to_string),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    fn impressions(&self) -> impl Iterator<Item = &Impression> {
        self.identities.values().flatten()
    }

    /// Every impression has the network's template.
    pub fn has_network(&self) -> bool {
        self.model_digest.is_some() && self.impressions().all(|i| i.embedding.is_some())
    }

    /// Some impression keeps turned templates ([`Impression::turned`]).
    pub fn has_turned(&self) -> bool {
        self.impressions().any(|i| !i.turned.is_empty())
    }

    /// Every impression has its minutiae.
    pub fn has_minutiae(&self) -> bool {
        self.impressions().all(|i| i.minutiae.is_some())
    }

    /// Reads a gallery (version 1 or 2); `Ok(None)` when there is no file.
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
        let header: FileHeader =
            serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if header.format != GALLERY_FORMAT || !(1..=GALLERY_VERSION).contains(&header.version) {
            return Err(malformed(format!(
                "format {} version {}, expected {GALLERY_FORMAT} 1 to {GALLERY_VERSION}",
                header.format, header.version
            )));
        }
        let mut identities = BTreeMap::new();
        let model_digest = if header.version == 1 {
            let file: GalleryFileV1 =
                serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
            for (name, templates) in file.identities {
                let impressions = templates
                    .iter()
                    .map(|t| {
                        Ok(Impression {
                            embedding: Some(
                                decode_embedding(t)
                                    .map_err(|e| malformed(format!("{name}: {e}")))?,
                            ),
                            minutiae: None,
                            turned: Vec::new(),
                        })
                    })
                    .collect::<Result<Vec<_>, GalleryError>>()?;
                identities.insert(name, impressions);
            }
            Some(file.model_digest)
        } else {
            let file: GalleryFile =
                serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
            for (name, stored) in file.identities {
                let impressions = stored
                    .into_iter()
                    .map(|i| {
                        let embedding = i
                            .embedding
                            .map(|t| decode_embedding(&t))
                            .transpose()
                            .map_err(|e| malformed(format!("{name}: {e}")))?;
                        let minutiae = i.minutiae.map(|m| Template {
                            minutiae: m
                                .into_iter()
                                .map(|[x, y, theta, quality]| Minutia {
                                    x,
                                    y,
                                    theta,
                                    quality,
                                })
                                .collect(),
                        });
                        let turned = i
                            .turned
                            .iter()
                            .map(|t| decode_embedding(t))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| malformed(format!("{name}: {e}")))?;
                        Ok(Impression {
                            embedding,
                            minutiae,
                            turned,
                        })
                    })
                    .collect::<Result<Vec<_>, GalleryError>>()?;
                identities.insert(name, impressions);
            }
            file.model_digest
        };
        Ok(Some(Self {
            model_digest,
            identities,
            version: header.version,
        }))
    }

    /// Writes the gallery atomically, in the current version.
    pub fn save(&self, path: &Path) -> Result<(), GalleryError> {
        let file = GalleryFile {
            format: GALLERY_FORMAT.into(),
            version: GALLERY_VERSION,
            model_digest: self.model_digest.clone(),
            identities: self
                .identities
                .iter()
                .map(|(name, impressions)| {
                    let stored = impressions
                        .iter()
                        .map(|i| ImpressionFile {
                            embedding: i.embedding.as_deref().map(encode_embedding),
                            minutiae: i.minutiae.as_ref().map(|t| {
                                t.minutiae
                                    .iter()
                                    .map(|m| [m.x, m.y, m.theta, m.quality])
                                    .collect()
                            }),
                            turned: i.turned.iter().map(|t| encode_embedding(t)).collect(),
                        })
                        .collect();
                    (name.clone(), stored)
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

    fn cosine_agreement(templates: &[Vec<f32>]) -> Vec<f32> {
        agreement(templates.len(), |i, j| {
            similarity(&templates[i], &templates[j])
        })
    }

    #[test]
    fn agreement_is_the_match_with_the_closer_half_of_the_others() {
        // Three impressions: each one's best match (A-B 10 degrees, B-C 30, A-C 40).
        let three = cosine_agreement(&at(&[0.0, 10.0, 40.0]));
        let cos = |d: f32| d.to_radians().cos();
        for (got, want) in three.iter().zip([cos(10.0), cos(10.0), cos(30.0)]) {
            assert!((got - want).abs() < 1e-6, "{three:?}");
        }
        // One impression of another finger among five: it alone scores low.
        let five = cosine_agreement(&at(&[0.0, 5.0, 10.0, 15.0, 90.0]));
        assert!(five[..4].iter().all(|&a| a > cos(11.0)), "{five:?}");
        assert!(five[4] < cos(70.0), "{five:?}");
        // Two fingers mixed 2 + 2: every impression matches only one of the three others,
        // so each scores its second best match, a cross-finger one.
        let mixed = cosine_agreement(&at(&[0.0, 3.0, 60.0, 63.0]));
        assert!(mixed.iter().all(|&a| a < cos(50.0)), "{mixed:?}");
    }
}
