//! `fingerprintd calibrate`: the door's threshold (and, for the fused matcher, the fusion)
//! from its own gallery and a folder of other people's scans on its sensor. A threshold is
//! only as good as the impostors it was calibrated on; these are the door's.
//!
//! The fitting itself is `fingerprint_common::openset::fit_door`, which the trainer's
//! open-set evaluation uses too: this module reads the strangers' scans as the door would.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fingerprint_common::matcher::{MatcherMode, Probe};
use fingerprint_common::minutiae;
use fingerprint_common::openset::fit_door;
use fingerprint_common::scan::is_scan_file_name;
use fingerprint_common::{decode_scan, read_limited, DaemonConfig, Gallery, ScanLimits};

use crate::engine::Engine;
use crate::policy::{self, DoorCalibration, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("nothing is enrolled in {0}: enrol the door's people first")]
    NoGallery(PathBuf),
    #[error("{0}: no usable scans (images with enough minutiae)")]
    NoStrangers(PathBuf),
    #[error("no identity has two impressions to compare")]
    NoGenuine,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Gallery(#[from] fingerprint_common::gallery::GalleryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

/// What a calibration measured, besides what it writes.
#[derive(Debug)]
pub struct Calibrated {
    pub calibration: DoorCalibration,
    /// Stranger files left out, with the reason.
    pub skipped: Vec<String>,
}

/// Image files directly in `dir`, sorted.
fn scan_files(dir: &Path) -> Result<Vec<PathBuf>, CalibrateError> {
    let io = |source| CalibrateError::Io {
        path: dir.into(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_scan_file_name(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Calibrates the door for the matcher its gallery allows and writes `calibration.json` in
/// the state directory.
pub fn calibrate(
    engine: Option<&Engine>,
    config: &DaemonConfig,
    strangers: &Path,
    target_far: f64,
    limits: &ScanLimits,
) -> Result<Calibrated, CalibrateError> {
    let gallery = Gallery::load(&config.gallery_path())?
        .filter(|g| !g.is_empty())
        .ok_or_else(|| CalibrateError::NoGallery(config.gallery_path()))?;
    let digest = engine.map(|e| e.model.digest.as_str());
    let (mode, _) =
        policy::mode_for(config.matcher.mode, &gallery, digest).map_err(PolicyError::Unusable)?;
    let dpi = config.matcher.minutiae_dpi();

    // The strangers, as the door would see them.
    let mut skipped = Vec::new();
    let mut probes = Vec::new();
    let mut images = Vec::new();
    for path in scan_files(strangers)? {
        let decoded = read_limited(&path, limits).and_then(|b| decode_scan(&b, limits));
        match decoded {
            Err(e) => skipped.push(format!("{}: {e}", path.display())),
            Ok(image) => {
                let minutiae = if mode.needs_minutiae() {
                    match minutiae::extract(&image, dpi) {
                        Ok(t) => Some(t.prepared()),
                        Err(e) => {
                            skipped.push(format!("{}: {e}", path.display()));
                            continue;
                        }
                    }
                } else {
                    None
                };
                probes.push(Probe {
                    embedding: None,
                    minutiae,
                });
                images.push(image);
            }
        }
    }
    if probes.is_empty() {
        return Err(CalibrateError::NoStrangers(strangers.into()));
    }
    if let (true, Some(engine)) = (mode.needs_network(), engine) {
        for (chunk, probes) in images.chunks(16).zip(probes.chunks_mut(16)) {
            let inputs: Vec<Vec<f32>> = chunk
                .iter()
                .map(|i| {
                    engine
                        .preprocessing()
                        .apply_at(i, config.matcher.sensor_dpi)
                })
                .collect();
            let embeddings = engine
                .embeddings(&inputs)
                .map_err(CalibrateError::Inference)?;
            for (p, e) in probes.iter_mut().zip(embeddings) {
                p.embedding = Some(e);
            }
        }
    }
    let fit = fit_door(&gallery, mode, &probes, target_far).ok_or(CalibrateError::NoGenuine)?;
    let calibration = DoorCalibration {
        mode,
        model_digest: digest.map(str::to_string).filter(|_| mode.needs_network()),
        fusion: fit.fusion,
        minutiae_comparator: mode
            .needs_minutiae()
            .then(|| minutiae::COMPARATOR.to_string()),
        threshold: fit.threshold,
        basis: Some(fit.basis),
        enrolment_turns: gallery.has_turned(),
        target_far,
        far: fit.far,
        frr: fit.frr,
        genuine_scores: fit.genuine_scores,
        stranger_scans: fit.stranger_scans,
        identities: Some(fit.identities),
        strangers_network: (mode == MatcherMode::Fused).then_some(fit.strangers_network),
        strangers: strangers.display().to_string(),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    calibration.save(&DoorCalibration::path(config))?;
    Ok(Calibrated {
        calibration,
        skipped,
    })
}
