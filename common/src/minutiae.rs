//! Minutiae: the field's classic matcher beside the network. Extraction is NIST's MINDTCT, as
//! the pure-Rust port of `fprint-pipeline` (no C, no unsafe code); comparison is Minutia
//! Cylinder-Code ([`crate::mcc`]), which replaced BOZORTH3 (the same crate's port of NIST's
//! comparator): on six real sets MCC accepts 80-100% of genuine scans where no stranger's scan
//! passes, against BOZORTH3's 60-96%, and costs a tenth of the time (README, "Minutiae and the
//! fused matcher"). This module is the small wrapper the project needs around them:
//!
//! - **Resolution.** MINDTCT and MCC are tuned for 500 dpi (MCC's distances are in pixels), so
//!   a scan of another resolution is resampled to 500 dpi first: a template is then comparable
//!   whichever sensor made it.
//! - **Quality before the cap.** At most 150 minutiae per print are kept, those of highest
//!   quality, as NIST's tools do (`fprint-pipeline` drops MINDTCT's quality on the way, so
//!   [`Template::from_detected`] sorts and cuts itself): noisy scans give hundreds of spurious
//!   minutiae.
//! - **Limits.** Extraction runs under a panic guard and refuses scans too small to hold a
//!   print; a scan with too few minutiae to compare (blank, smudged, partial) is reported as
//!   such ([`MinutiaeError::TooFew`]), never scored as a confident non-match.

use fprint_pipeline::fprint_mindtct;
use image::GrayImage;

use crate::mcc::Cylinders;
use serde::{Deserialize, Serialize};

/// The resolution MINDTCT and MCC are tuned for.
pub const NATIVE_DPI: u32 = 500;

/// The resolution to extract a sensor's scans at: its own where known, else taken as native.
pub fn scan_dpi(sensor_dpi: Option<u32>) -> u32 {
    sensor_dpi.unwrap_or(NATIVE_DPI)
}

/// Fewest minutiae a scan must show to be compared or enrolled: a print with barely 10
/// matches strangers by chance (NIST's BOZORTH3 gives up below 10).
pub const MIN_MINUTIAE: usize = 12;

/// Smallest side, in pixels at 500 dpi, of a scan minutiae are looked for in (about 4 mm).
pub const MIN_SIDE: u32 = 80;

/// Largest side, in pixels at 500 dpi (20 cm): a low `sensor_dpi` must not blow a scan up
/// beyond what a door controller can hold.
pub const MAX_SIDE: u32 = 4096;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MinutiaeError {
    #[error("scan of {width}x{height} px at 500 dpi is too small for minutiae (at least {MIN_SIDE} px a side)")]
    TooSmall { width: u32, height: u32 },
    #[error("scan of {width}x{height} px at 500 dpi is too large for minutiae (at most {MAX_SIDE} px a side)")]
    TooLarge { width: u32, height: u32 },
    #[error(
        "{found} minutiae found, at least {MIN_MINUTIAE} needed: a blank, smudged or partial scan"
    )]
    TooFew { found: usize },
    #[error("minutiae extraction failed on this scan")]
    Failed,
}

/// One minutia in NIST xyt form (origin bottom-left, angle in degrees 0..360) with MINDTCT's
/// quality (0..100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minutia {
    pub x: i32,
    pub y: i32,
    pub theta: i32,
    pub quality: i32,
}

/// Most minutiae a template keeps, as NIST's tools do.
pub const MAX_MINUTIAE: usize = 150;

/// Names the comparator and its scale, so that a threshold fitted on another one's scores is
/// never applied to these (a door's calibration records it).
pub const COMPARATOR: &str = "mcc-lssr/100";

/// A print's minutiae, the best [`MAX_MINUTIAE`] by quality, best first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub minutiae: Vec<Minutia>,
}

impl Template {
    /// Keeps the best minutiae by quality, as NIST's tools do before matching (ties keep
    /// MINDTCT's order).
    pub fn from_detected(mut minutiae: Vec<Minutia>) -> Self {
        minutiae.sort_by_key(|m| std::cmp::Reverse(m.quality));
        minutiae.truncate(MAX_MINUTIAE);
        Self { minutiae }
    }

    pub fn len(&self) -> usize {
        self.minutiae.len()
    }

    pub fn is_empty(&self) -> bool {
        self.minutiae.is_empty()
    }

    /// The form the comparator works on (MCC's cylinders).
    pub fn prepared(&self) -> Prepared {
        Prepared(Cylinders::new(
            self.minutiae.iter().map(|m| (m.x, m.y, m.theta)),
        ))
    }

    /// The minutiae score of `self` as probe against `gallery` ([`Prepared::score`]).
    pub fn score(&self, gallery: &Template) -> f32 {
        self.prepared().score(&gallery.prepared())
    }
}

/// A template converted once for comparison, to compare with many others.
#[derive(Clone, Debug)]
pub struct Prepared(Cylinders);

impl Prepared {
    /// The minutiae score, 0-100: MCC's similarity (LSS-R) times 100. Higher means more
    /// minutiae whose neighbourhoods agree; strangers' scans score below about 3.5 on the real
    /// sets measured, one finger's impressions mostly 5 to 60.
    pub fn score(&self, gallery: &Prepared) -> f32 {
        // The comparison indexes only arrays it sized itself; a guard all the same, since a
        // panic here would take a door's decision with it.
        std::panic::catch_unwind(|| 100.0 * self.0.score(&gallery.0)).unwrap_or(0.0)
    }
}

/// The size of a `width`x`height` scan of `dpi` at 500 dpi.
fn native_size(width: u32, height: u32, dpi: u32) -> (u32, u32) {
    if dpi == NATIVE_DPI || dpi == 0 {
        return (width, height);
    }
    let scale = f64::from(NATIVE_DPI) / f64::from(dpi);
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (side(width), side(height))
}

/// Resamples a scan of `dpi` to 500 dpi (a triangle filter; no change at 500).
pub fn to_native_resolution(image: &GrayImage, dpi: u32) -> GrayImage {
    let (w, h) = native_size(image.width(), image.height(), dpi);
    if (w, h) == image.dimensions() {
        return image.clone();
    }
    image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle)
}

/// Extracts the minutiae of a decoded scan taken at `dpi` (MINDTCT on the scan at 500 dpi).
/// Errors when the scan is too small, or shows fewer than [`MIN_MINUTIAE`] minutiae.
pub fn extract(image: &GrayImage, dpi: u32) -> Result<Template, MinutiaeError> {
    let (width, height) = native_size(image.width(), image.height(), dpi);
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(MinutiaeError::TooSmall { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(MinutiaeError::TooLarge { width, height });
    }
    let native = to_native_resolution(image, dpi);
    let detected = std::panic::catch_unwind(|| {
        let view = fprint_mindtct::GrayImage::new(
            native.as_raw(),
            width as usize,
            height as usize,
            NATIVE_DPI as u16,
        )
        .map_err(|_| MinutiaeError::Failed)?;
        Ok(fprint_mindtct::detect_minutiae(view))
    })
    .map_err(|_| MinutiaeError::Failed)??;
    let template = Template::from_detected(
        detected
            .iter()
            .map(|m| Minutia {
                x: m.x,
                y: m.y,
                theta: m.theta,
                quality: m.quality,
            })
            .collect(),
    );
    if template.len() < MIN_MINUTIAE {
        return Err(MinutiaeError::TooFew {
            found: template.len(),
        });
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutia(x: i32, quality: i32) -> Minutia {
        Minutia {
            x,
            y: 0,
            theta: 0,
            quality,
        }
    }

    #[test]
    fn the_cap_keeps_the_best_minutiae_by_quality() {
        // 200 minutiae, quality rising with x: the 150 kept are those of x 50..200.
        let detected: Vec<Minutia> = (0..200).map(|i| minutia(i, i)).collect();
        let t = Template::from_detected(detected);
        assert_eq!(t.len(), MAX_MINUTIAE);
        assert!(
            t.minutiae.iter().all(|m| m.x >= 50),
            "{:?}",
            &t.minutiae[..3]
        );
        assert_eq!(t.minutiae[0].quality, 199);
    }

    #[test]
    fn blank_and_tiny_scans_are_refused_with_the_reason() {
        let blank = GrayImage::from_pixel(300, 300, image::Luma([200]));
        assert_eq!(
            extract(&blank, 500),
            Err(MinutiaeError::TooFew { found: 0 })
        );
        let tiny = GrayImage::from_pixel(60, 300, image::Luma([200]));
        assert!(matches!(
            extract(&tiny, 500),
            Err(MinutiaeError::TooSmall { width: 60, .. })
        ));
        // At 1000 dpi a 150 px scan is 75 px at 500 dpi: too small.
        let fine = GrayImage::from_pixel(150, 150, image::Luma([200]));
        assert!(matches!(
            extract(&fine, 1000),
            Err(MinutiaeError::TooSmall { width: 75, .. })
        ));
        // At 100 dpi a 1000 px scan would be 5000 px at 500 dpi: refused before resampling.
        let coarse = GrayImage::from_pixel(1000, 900, image::Luma([200]));
        assert!(matches!(
            extract(&coarse, 100),
            Err(MinutiaeError::TooLarge { width: 5000, .. })
        ));
    }

    #[test]
    fn resampling_to_500_dpi_scales_the_scan() {
        let scan = GrayImage::from_pixel(569, 296, image::Luma([128]));
        let native = to_native_resolution(&scan, 569);
        assert_eq!(native.dimensions(), (500, 260));
        assert_eq!(to_native_resolution(&scan, 500).dimensions(), (569, 296));
    }
}
