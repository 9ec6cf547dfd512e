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
/// never applied to these (a door's calibration records it). `area` since scores of small
/// prints are lowered ([`small_print_score`]): calibrations fitted before no longer apply.
pub const COMPARATOR: &str = "mcc-lssr-area/100";

/// The score at which strangers' comparisons were measured on full-size prints: the shipped
/// minutiae threshold (`matcher::SHIPPED_MINUTIAE_THRESHOLD`; a test there checks they agree).
pub(crate) const TAIL_ANCHOR: f32 = 3.3;
/// How fast that tail falls above it (`matcher::MINUTIAE_IMPOSTOR_TAIL`'s decay).
pub(crate) const TAIL_DECAY: f32 = 0.18;
/// Minutiae area (convex hull, square pixels at 500 dpi: about 93 mm²) from which two
/// prints' comparisons have the full-size prints' impostor tail.
pub const FULL_PRINT_AREA: f32 = 36_000.0;

/// MCC's score (0-100) of two prints, the smaller of which spreads its minutiae over `area`
/// (square pixels at 500 dpi), made comparable with full-size prints' scores.
///
/// MCC averages its few best-matching minutia pairs, so two small prints (a small sensor, a
/// finger barely touching) reach a stranger's high score far more often: on crops of the six
/// real sets' scans (`minutiae_eval --crop`), below 20,000 px² of minutiae 0.27% of
/// impostor comparisons scored 3.3 or more, against none of 221,429 from 36,000 px². Below
/// [`FULL_PRINT_AREA`] the score is mapped so that strangers reach any score as rarely as on
/// full-size prints: the score where their measured tail matched full prints' at 3.3 rises
/// as 3.3 + 0.0048 * d² and their tail's e-fold width as 0.18 + 0.0112 * d, d the area short
/// of 36,000 px² in thousands (fitted on such crops in bins of area, at or above every
/// bin); the score is then 3.3 plus its distance above that point in tail widths, times
/// 0.18, and never above MCC's own. Genuine scores fall with it, so a small print's owner is
/// refused more often; thresholds, fusion and calibration need nothing new.
pub fn small_print_score(score: f32, area: f32) -> f32 {
    let short = ((FULL_PRINT_AREA - area) / 1000.0).max(0.0);
    if short == 0.0 || score.is_nan() {
        return score;
    }
    let matched = TAIL_ANCHOR + 0.0048 * short * short;
    let width = TAIL_DECAY + 0.0112 * short;
    // Below that point the mapping would lift some low scores a little; no score is raised.
    (TAIL_ANCHOR + (score - matched) * TAIL_DECAY / width)
        .min(score)
        .max(0.0)
}

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
    /// Area of the print's minutiae (convex hull), in square pixels at 500 dpi.
    pub fn area(&self) -> f32 {
        self.0.area()
    }

    /// The minutiae score, 0-100: MCC's similarity (LSS-R) times 100, lowered where the
    /// smaller print shows less than [`FULL_PRINT_AREA`] ([`small_print_score`]). Higher
    /// means more minutiae whose neighbourhoods agree; strangers' scans score below about 3.5
    /// on the real sets measured, one finger's impressions mostly 5 to 60.
    pub fn score(&self, gallery: &Prepared) -> f32 {
        small_print_score(self.mcc_score(gallery), self.area().min(gallery.area()))
    }

    /// MCC's own score, 0-100, before small prints are lowered: for measuring what
    /// [`small_print_score`] changes (`minutiae_eval`), never for a decision.
    pub fn mcc_score(&self, gallery: &Prepared) -> f32 {
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
    use crate::mcc::tests::random_template;

    fn minutia(x: i32, quality: i32) -> Minutia {
        Minutia {
            x,
            y: 0,
            theta: 0,
            quality,
        }
    }

    #[test]
    fn small_prints_need_a_higher_similarity_for_the_same_score() {
        // From the full-print area up, the score is MCC's.
        for score in [0.0, 3.3, 7.5, 60.0] {
            assert_eq!(small_print_score(score, FULL_PRINT_AREA), score);
            assert_eq!(small_print_score(score, 90_000.0), score);
            // No jump at the boundary.
            let just_below = small_print_score(score, FULL_PRINT_AREA - 1.0);
            assert!((just_below - score).abs() < 0.01, "{score}: {just_below}");
        }
        // Below it, a stranger-like 3.3 is no longer a match; the score where small prints'
        // strangers were measured as rare as full prints' at 3.3 is (16,000 px²: 5.22).
        assert!(small_print_score(3.3, 16_000.0) < 3.0);
        assert!((small_print_score(5.22, 16_000.0) - 3.3).abs() < 1e-4);
        for area in [0.0, 8_000.0, 20_000.0, 30_000.0, 35_000.0] {
            let mut last = -1.0;
            for tenth in 0..1000 {
                let score = tenth as f32 / 10.0;
                let small = small_print_score(score, area);
                // Order kept, never negative, never above what the same similarity scores at
                // full size, and from the threshold up the smaller the lower.
                assert!(small >= last && small >= 0.0, "{area}: {score} -> {small}");
                assert!(small <= score, "{area}: {score} -> {small}");
                if score >= 3.3 {
                    assert!(small <= small_print_score(score, area + 1_000.0));
                }
                last = small;
            }
        }
    }

    #[test]
    fn a_small_print_scores_below_its_full_size_similarity() {
        let keep = |t: Vec<(i32, i32, i32)>, side: i32| Template {
            minutiae: t
                .into_iter()
                .filter(|&(x, y, _)| x < 40 + side && y < 40 + side)
                .map(|(x, y, theta)| Minutia {
                    x,
                    y,
                    theta,
                    quality: 50,
                })
                .collect(),
        };
        let full = keep(random_template(7, 45), 300);
        let similarity = |t: &Template| {
            let c = crate::mcc::Cylinders::new(t.minutiae.iter().map(|m| (m.x, m.y, m.theta)));
            100.0 * c.score(&c)
        };
        assert!(full.prepared().area() >= FULL_PRINT_AREA);
        assert_eq!(full.score(&full), similarity(&full));
        // The same finger's corner on a sensor 150 px (7.6 mm) wide.
        let small = keep(random_template(7, 120), 150);
        assert!(small.prepared().area() < 20_000.0);
        assert!(similarity(&small) > 50.0);
        assert!(small.score(&small) < similarity(&small));
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
