//! The gallery the running service matches against, with the door's calibration: both
//! reloaded when their files change (an enrolment by `fingerprintd enroll` or over MQTT, a
//! `fingerprintd calibrate`), and swapped whole so a batch always sees one of each.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use fingerprint_common::gallery::GalleryError;
use fingerprint_common::matcher::Index;
use fingerprint_common::Gallery;

use crate::policy::{DoorCalibration, PolicyError};

/// An enrolled gallery, prepared for matching, and the door's calibration.
pub struct LiveGallery {
    pub gallery: Gallery,
    pub index: Index,
    pub door: Option<DoorCalibration>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveGalleryError {
    #[error(transparent)]
    Gallery(#[from] GalleryError),
    #[error(transparent)]
    Calibration(#[from] PolicyError),
}

/// Modification times of the two files when read.
type Seen = (Option<SystemTime>, Option<SystemTime>);

/// The gallery in use (None: nothing enrolled).
#[derive(Clone)]
pub struct GallerySlot {
    path: PathBuf,
    calibration: PathBuf,
    state: Arc<RwLock<(Seen, Option<Arc<LiveGallery>>)>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl GallerySlot {
    /// Loads the gallery at `path`, and the door's calibration at `calibration`, if there are.
    pub fn open(path: &Path, calibration: &Path) -> Result<Self, LiveGalleryError> {
        let slot = Self {
            path: path.into(),
            calibration: calibration.into(),
            state: Arc::default(),
        };
        slot.refresh()?;
        Ok(slot)
    }

    /// The gallery in use (None: nothing enrolled).
    pub fn current(&self) -> Option<Arc<LiveGallery>> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Reloads the files if either changed; true when they did. On error what is in use
    /// stays.
    pub fn refresh(&self) -> Result<bool, LiveGalleryError> {
        let now = (modified(&self.path), modified(&self.calibration));
        let seen = self.state.read().unwrap_or_else(PoisonError::into_inner).0;
        if now == seen {
            return Ok(false);
        }
        let door = DoorCalibration::load(&self.calibration)?;
        let live = Gallery::load(&self.path)?
            .filter(|g| !g.is_empty())
            .map(|gallery| {
                Arc::new(LiveGallery {
                    index: Index::new(&gallery),
                    gallery,
                    door,
                })
            });
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = (now, live);
        Ok(true)
    }
}
