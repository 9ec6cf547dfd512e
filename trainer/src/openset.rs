//! Open-set evaluation and calibration: templates of enrolled fingers in a gallery (the
//! daemon's own matching, `fingerprint_common::gallery`), probes of enrolled fingers and of
//! fingers never enrolled, and what a door would do with them.
//!
//! - Identification (1:N): rank-1 of enrolled probes; at the threshold, true accepts (granted
//!   the right identity) and false accepts (a never-enrolled probe granted anybody).
//! - Verification (1:1): mated scores (probe vs its own identity) against non-mated ones
//!   (every probe vs every other enrolled identity): EER, FNMR at FMR 1% and 0.1%, DET curve.

use std::collections::BTreeMap;

use fingerprint_common::Gallery;
use fingerprint_models::export::Calibration;

use crate::dataset::Sample;
use serde::{Deserialize, Serialize};

/// A scan to match: its embedding and, for an enrolled finger, its identity.
pub struct Probe {
    pub embedding: Vec<f32>,
    /// None: a finger that is not enrolled.
    pub identity: Option<String>,
}

/// The first `k` samples of each identity, in the order given (the scans to enrol).
pub fn first_per_identity(samples: &[Sample], k: usize) -> Vec<Sample> {
    let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
    samples
        .iter()
        .filter(|s| {
            let n = taken.entry(s.identity).or_default();
            *n += 1;
            *n <= k
        })
        .cloned()
        .collect()
}

/// Builds a gallery from the first `per_identity` embeddings of each identity (in the order
/// given); the others are returned as probes.
pub fn enrol_first(
    embeddings: Vec<(String, Vec<f32>)>,
    per_identity: usize,
) -> (Gallery, Vec<Probe>) {
    let mut gallery = Gallery::default();
    let mut probes = Vec::new();
    for (identity, embedding) in embeddings {
        let templates = gallery.identities.entry(identity.clone()).or_default();
        if templates.len() < per_identity {
            templates.push(embedding);
        } else {
            probes.push(Probe {
                embedding,
                identity: Some(identity),
            });
        }
    }
    (gallery, probes)
}

/// What the open-set evaluation measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenSetReport {
    pub enrolled_identities: usize,
    pub templates: usize,
    pub genuine_probes: usize,
    pub impostor_probes: usize,
    /// Enrolled probes whose best identity is their own.
    pub rank1: f64,
    /// Verification equal error rate, and the threshold where it is reached.
    pub eer: f64,
    pub eer_threshold: f32,
    pub fnmr_at_fmr_1pct: f64,
    pub fnmr_at_fmr_0_1pct: f64,
    pub mated_scores: usize,
    pub non_mated_scores: usize,
    /// The decision threshold the open-set rates below are for.
    pub threshold: f32,
    /// Enrolled probes granted their own identity.
    pub true_accept_rate: f64,
    /// Enrolled probes granted somebody else.
    pub misidentification_rate: f64,
    /// Never-enrolled probes granted anybody.
    pub false_accept_rate: f64,
    pub false_accepts: usize,
    /// (FMR, FNMR) pairs, for a DET curve.
    pub det: Vec<(f64, f64)>,
}

/// Share of `scores` at or above `t`.
fn share_at_least(sorted: &[f32], t: f32) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let below = sorted.partition_point(|&s| s < t);
    (sorted.len() - below) as f64 / sorted.len() as f64
}

/// The lowest threshold at which at most `target` of the impostor best scores would be
/// accepted (just above the highest impostor score allowed to pass).
pub fn threshold_for_far(impostor_best: &[f32], target: f64) -> f32 {
    let mut sorted: Vec<f32> = impostor_best.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let allowed = (target * sorted.len() as f64).floor() as usize;
    match sorted.get(allowed) {
        // Accept only what is strictly above the first impostor that must be refused.
        Some(&s) => next_up(s),
        None => f32::MIN,
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let next = if x == 0.0 {
        1
    } else if x > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(next)
}

/// Evaluates `probes` against `gallery`. With no `threshold`, the one for `target_far` on
/// these impostor probes is used.
pub fn evaluate(
    gallery: &Gallery,
    probes: &[Probe],
    threshold: Option<f32>,
    target_far: f64,
) -> OpenSetReport {
    let mut scores = Scores::default();
    scores.add(gallery, probes);
    scores.report(gallery, threshold, target_far)
}

/// The scores of probes against galleries, gathered over one or more galleries before the
/// figures are computed from all of them at once.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    mated: Vec<f32>,
    non_mated: Vec<f32>,
    /// Best score of each never-enrolled probe.
    impostor_best: Vec<f32>,
    /// (own identity, best identity, best score) of enrolled probes.
    identified: Vec<(String, Option<String>, f32)>,
}

impl Scores {
    /// Scores `probes` against `gallery`.
    pub fn add(&mut self, gallery: &Gallery, probes: &[Probe]) {
        for probe in probes {
            let ranked = gallery.rank(&probe.embedding, None);
            for c in &ranked {
                if Some(&c.identity) == probe.identity.as_ref() {
                    self.mated.push(c.score);
                } else {
                    self.non_mated.push(c.score);
                }
            }
            let best = ranked.first();
            match &probe.identity {
                Some(own) => self.identified.push((
                    own.clone(),
                    best.map(|c| c.identity.clone()),
                    best.map_or(f32::MIN, |c| c.score),
                )),
                None => self.impostor_best.push(best.map_or(f32::MIN, |c| c.score)),
            }
        }
    }

    /// The figures of every score added; `gallery` (the last one, or the only one) gives the
    /// enrolment counts. With no `threshold`, the one for `target_far` on the impostor probes.
    pub fn report(
        mut self,
        gallery: &Gallery,
        threshold: Option<f32>,
        target_far: f64,
    ) -> OpenSetReport {
        self.mated.sort_by(f32::total_cmp);
        self.non_mated.sort_by(f32::total_cmp);
        let Scores {
            mated,
            non_mated,
            impostor_best,
            identified,
        } = self;
        let fnmr = |t: f32| 1.0 - share_at_least(&mated, t);
        let fmr = |t: f32| share_at_least(&non_mated, t);
        // Every score is a candidate threshold.
        let mut candidates: Vec<f32> = mated.iter().chain(&non_mated).copied().collect();
        candidates.sort_by(f32::total_cmp);
        candidates.dedup();
        let mut det = Vec::new();
        let (mut eer, mut eer_threshold, mut best_gap) = (1.0, 0.0, f64::MAX);
        for &t in &candidates {
            let (a, b) = (fmr(t), fnmr(t));
            det.push((a, b));
            if (a - b).abs() < best_gap {
                best_gap = (a - b).abs();
                eer = (a + b) / 2.0;
                eer_threshold = t;
            }
        }
        let fnmr_at = |target: f64| {
            let t = threshold_for_far(&non_mated, target);
            fnmr(t)
        };
        let threshold = threshold.unwrap_or_else(|| threshold_for_far(&impostor_best, target_far));
        let n_genuine = identified.len().max(1) as f64;
        let rank1 = identified
            .iter()
            .filter(|(own, best, _)| best.as_ref() == Some(own))
            .count() as f64
            / n_genuine;
        let true_accepts = identified
            .iter()
            .filter(|(own, best, s)| best.as_ref() == Some(own) && *s >= threshold)
            .count();
        let misidentified = identified
            .iter()
            .filter(|(own, best, s)| best.as_ref() != Some(own) && *s >= threshold)
            .count();
        let false_accepts = impostor_best.iter().filter(|&&s| s >= threshold).count();
        OpenSetReport {
            enrolled_identities: gallery.identities.len(),
            templates: gallery.identities.values().map(Vec::len).sum(),
            genuine_probes: identified.len(),
            impostor_probes: impostor_best.len(),
            rank1,
            eer,
            eer_threshold,
            fnmr_at_fmr_1pct: fnmr_at(0.01),
            fnmr_at_fmr_0_1pct: fnmr_at(0.001),
            mated_scores: mated.len(),
            non_mated_scores: non_mated.len(),
            threshold,
            true_accept_rate: true_accepts as f64 / n_genuine,
            misidentification_rate: misidentified as f64 / n_genuine,
            false_accept_rate: false_accepts as f64 / impostor_best.len().max(1) as f64,
            false_accepts,
            det,
        }
    }
}

/// The calibration a report implies, for the manifest.
pub fn calibration(report: &OpenSetReport, target_far: f64) -> Calibration {
    Calibration {
        similarity_threshold: report.threshold,
        target_far,
        far: report.false_accept_rate,
        frr: 1.0 - report.true_accept_rate,
        genuine_scores: report.genuine_probes,
        impostor_scores: report.impostor_probes,
    }
}

/// A DET curve (FNMR against FMR, both on log axes from 0.01% to 100%) as a PNG, with the
/// EER marked in the title.
pub fn draw_det(report: &OpenSetReport, label: &str, path: &std::path::Path) -> anyhow::Result<()> {
    use crate::plot::{chart, Panel, Series, BLUE};
    let floor = 1e-4;
    let points: Vec<(f64, f64)> = report
        .det
        .iter()
        .map(|&(fmr, fnmr)| (fmr.max(floor).log10(), fnmr.max(floor).log10()))
        .collect();
    let panel = Panel {
        title: format!("DET: EER {:.1}%", 100.0 * report.eer),
        x_label: "log10 FMR".into(),
        y_label: "log10 FNMR".into(),
        series: vec![Series {
            label: label.into(),
            color: BLUE,
            points,
        }],
        y_range: Some((floor.log10(), 0.0)),
    };
    chart(&[panel])
        .save(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Embeddings grouped by identity name, in a stable order.
pub fn by_identity(pairs: Vec<(String, Vec<f32>)>) -> BTreeMap<String, Vec<Vec<f32>>> {
    let mut map: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    for (name, e) in pairs {
        map.entry(name).or_default().push(e);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_for_far_admits_at_most_the_target_share() {
        let impostors: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = threshold_for_far(&impostors, 0.01);
        let passed = impostors.iter().filter(|&&s| s >= t).count();
        assert_eq!(passed, 10);
        let t = threshold_for_far(&impostors, 0.0);
        assert!(impostors.iter().all(|&s| s < t));
    }

    #[test]
    fn separable_scores_give_zero_eer_and_full_rank1() {
        let unit = |a: f32| vec![a.cos(), a.sin()];
        let mut gallery = Gallery::default();
        gallery.identities.insert("a".into(), vec![unit(0.0)]);
        gallery.identities.insert("b".into(), vec![unit(1.5)]);
        let probes = vec![
            Probe {
                embedding: unit(0.05),
                identity: Some("a".into()),
            },
            Probe {
                embedding: unit(1.45),
                identity: Some("b".into()),
            },
            Probe {
                embedding: unit(3.0),
                identity: None,
            },
        ];
        let r = evaluate(&gallery, &probes, None, 0.0);
        assert_eq!(r.rank1, 1.0);
        assert_eq!(r.eer, 0.0);
        assert_eq!(r.false_accepts, 0);
        assert_eq!(r.true_accept_rate, 1.0);
        assert_eq!((r.mated_scores, r.non_mated_scores), (2, 4));
    }
}
