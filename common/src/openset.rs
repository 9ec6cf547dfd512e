//! Open-set figures, as a door sees them: scans of enrolled fingers and of fingers never
//! enrolled, matched against a gallery by the door's own rule (`crate::matcher`). Shared by
//! the trainer's evaluation and the daemon's calibration.
//!
//! - Identification (1:N): rank-1 of enrolled probes; at the threshold, true accepts (granted
//!   the right identity) and false accepts (a never-enrolled probe granted anybody).
//! - Verification (1:1): mated scores (probe vs its own identity) against non-mated ones
//!   (every probe vs every other enrolled identity): EER, FNMR at FMR 1% and 0.1%, DET curve.

use serde::{Deserialize, Serialize};

use crate::gallery::similarity;
use crate::matcher::{
    minutiae_comparisons, shipped_minutiae_threshold, Fusion, Index, MatcherMode, PairScores,
    Probe, Rule,
};
use crate::minutiae::Prepared;
use crate::{Candidate, Gallery};

/// A scan to match and, for an enrolled finger, its identity.
pub struct LabelledProbe {
    pub probe: Probe,
    /// None: a finger that is not enrolled.
    pub identity: Option<String>,
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

/// Every probe's candidates with their raw scores, before any threshold: gathered once over
/// one or more galleries, then scored by any rule (fusions are fitted on them).
#[derive(Clone, Debug, Default)]
pub struct Comparisons {
    probes: Vec<(Option<String>, Vec<Candidate>)>,
    enrolled_identities: usize,
    templates: usize,
}

impl Comparisons {
    /// Ranks `probes` against `index` (built from a gallery of `templates` impressions).
    pub fn add(&mut self, index: &Index, templates: usize, rule: &Rule, probes: &[LabelledProbe]) {
        for p in probes {
            let ranked = index.rank(&p.probe, None, rule);
            self.probes.push((p.identity.clone(), ranked));
        }
        self.enrolled_identities = index.len();
        self.templates = templates;
    }

    /// Mated and non-mated comparisons with both scores (gathered in fused mode), to fit a
    /// fusion on.
    pub fn pairs(&self) -> (Vec<PairScores>, Vec<PairScores>) {
        let (mut mated, mut non_mated) = (Vec::new(), Vec::new());
        for (own, ranked) in &self.probes {
            for c in ranked {
                let (Some(network), Some(minutiae)) = (c.network_score, c.minutiae_score) else {
                    continue;
                };
                let s = PairScores { network, minutiae };
                if own.as_deref() == Some(c.identity.as_str()) {
                    mated.push(s);
                } else {
                    non_mated.push(s);
                }
            }
        }
        (mated, non_mated)
    }

    /// The comparisons scored by `rule`'s mode (fused scores by its fusion), ranked again.
    pub fn scores(&self, rule: &Rule) -> Scores {
        let mut scores = Scores {
            enrolled_identities: self.enrolled_identities,
            templates: self.templates,
            ..Scores::default()
        };
        for (own, ranked) in &self.probes {
            let mut rescored: Vec<(&str, f32)> = ranked
                .iter()
                .filter_map(|c| {
                    let s = match rule.mode {
                        MatcherMode::Network => c.network_score?,
                        MatcherMode::Minutiae => c.minutiae_score?,
                        MatcherMode::Fused => rule.fusion.score(PairScores {
                            network: c.network_score?,
                            minutiae: c.minutiae_score?,
                        }),
                    };
                    Some((c.identity.as_str(), s))
                })
                .collect();
            rescored.sort_by(|a, b| b.1.total_cmp(&a.1));
            scores.add(own.as_deref(), &rescored);
        }
        scores
    }
}

/// The scores of probes against galleries, from which the figures are computed.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    mated: Vec<f32>,
    non_mated: Vec<f32>,
    /// Best score of each never-enrolled probe.
    impostor_best: Vec<f32>,
    /// (own identity, best identity, best score) of enrolled probes.
    identified: Vec<(String, Option<String>, f32)>,
    enrolled_identities: usize,
    templates: usize,
}

impl Scores {
    /// No scores yet, for a gallery of `enrolled_identities` fingers and `templates`
    /// impressions (for matchers outside [`Comparisons`]).
    pub fn new(enrolled_identities: usize, templates: usize) -> Self {
        Self {
            enrolled_identities,
            templates,
            ..Self::default()
        }
    }

    /// One probe's ranking (best first) by identity and score; `own`: its enrolled identity,
    /// None for a stranger.
    pub fn add(&mut self, own: Option<&str>, ranked: &[(&str, f32)]) {
        for &(identity, score) in ranked {
            if Some(identity) == own {
                self.mated.push(score);
            } else {
                self.non_mated.push(score);
            }
        }
        let best = ranked.first();
        match own {
            Some(own) => self.identified.push((
                own.to_string(),
                best.map(|c| c.0.to_string()),
                best.map_or(f32::MIN, |c| c.1),
            )),
            None => self.impostor_best.push(best.map_or(f32::MIN, |c| c.1)),
        }
    }

    /// Best score of each never-enrolled probe.
    pub fn impostor_best(&self) -> &[f32] {
        &self.impostor_best
    }

    /// The figures of every score added; the last gallery gives the enrolment counts. With no
    /// `threshold`, the one for `target_far` on the impostor probes.
    pub fn report(mut self, threshold: Option<f32>, target_far: f64) -> OpenSetReport {
        self.mated.sort_by(f32::total_cmp);
        self.non_mated.sort_by(f32::total_cmp);
        let Scores {
            mated,
            non_mated,
            impostor_best,
            identified,
            enrolled_identities,
            templates,
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
            enrolled_identities,
            templates,
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

/// Share of the enrolled impressions' own scores a door calibration may leave below its
/// threshold when it moves the threshold into the gap above the strangers.
pub const GENUINE_MISS: f64 = 0.01;

/// What set a door's calibrated threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdBasis {
    /// The door's strangers: their best scores' fitted tail for the target false-accept rate.
    Strangers,
    /// The shipped threshold for the gallery's size, calibrated on real impostor pairs of six
    /// sets (its equivalent under the door's fusion): the door's strangers would allow a lower one, and a few
    /// hundred scans of them cannot show that the rarest stranger lies lower.
    Shipped,
    /// The middle of the gap between the strangers' fitted tail and the enrolled
    /// impressions' own scores.
    Gap,
}

impl std::fmt::Display for ThresholdBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ThresholdBasis::Strangers => "the strangers' scores",
            ThresholdBasis::Shipped => {
                "the shipped threshold (the strangers' scores would allow a lower one; a calibration never lowers it)"
            }
            ThresholdBasis::Gap => "the middle of the gap between the strangers and the enrolled",
        })
    }
}

/// A door's calibration, as fitted from its gallery and scans of strangers.
#[derive(Clone, Debug, PartialEq)]
pub struct DoorFit {
    pub mode: MatcherMode,
    /// Fitted in fused mode.
    pub fusion: Option<Fusion>,
    pub threshold: f32,
    pub basis: ThresholdBasis,
    /// Share of the strangers' scans accepted at the threshold.
    pub far: f64,
    /// Share of the enrolled impressions refused at the threshold (each against the rest of
    /// its identity).
    pub frr: f64,
    pub genuine_scores: usize,
    pub stranger_scans: usize,
    /// Identities enrolled when it was fitted.
    pub identities: usize,
    /// The lowest and highest network scores of the strangers' comparisons (0 among them):
    /// the range [`shipped_floor`] covers.
    pub strangers_network: [f32; 2],
}

/// The floor under a door's threshold where minutiae take part: the shipped minutiae threshold
/// for a stranger's scan meeting `comparisons` identities ([`shipped_minutiae_threshold`]),
/// in fused mode under the door's fusion at the network score of `strangers_network` (the
/// range the door's strangers reached) that favours a stranger most. The fused score grows
/// or falls with the network score, so the floor holds for a stranger anywhere in that range
/// (with no network weight, any network score gives the same). None in network mode, or in
/// fused mode without a fusion.
pub fn shipped_floor(
    mode: MatcherMode,
    fusion: Option<Fusion>,
    strangers_network: [f32; 2],
    comparisons: usize,
) -> Option<f32> {
    let minutiae = shipped_minutiae_threshold(comparisons);
    match mode {
        MatcherMode::Network => None,
        MatcherMode::Minutiae => Some(minutiae),
        MatcherMode::Fused => fusion.map(|f| {
            strangers_network
                .iter()
                .map(|&network| f.score(PairScores { network, minutiae }))
                .fold(f32::MIN, f32::max)
        }),
    }
}

/// The threshold for `target` false accepts, from few impostor scans: the empirical one
/// ([`threshold_for_far`]), or, when higher, the mean of the impostor scores plus as many
/// standard deviations as a normal tail needs for `target`. A few hundred strangers' scans
/// cannot show where the rarest impostor lies (the empirical rule then sits just above the
/// highest one seen, and the next stranger may pass it); the fitted tail stands in for the
/// scans not seen, and only ever raises the threshold.
pub fn threshold_for_far_guarded(impostor_best: &[f32], target: f64) -> f32 {
    let empirical = threshold_for_far(impostor_best, target);
    let n = impostor_best.len() as f64;
    if n < 2.0 {
        return empirical;
    }
    let mean = impostor_best.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let var = impostor_best
        .iter()
        .map(|&s| (f64::from(s) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    let tail = mean + normal_quantile(1.0 - target.clamp(1e-12, 0.5)) * var.sqrt();
    empirical.max(tail as f32)
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383_577_518_672_69e2,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Fits a door's matcher on its own data: genuine comparisons are each enrolled impression
/// against the other impressions of its identity; impostor comparisons every stranger scan
/// against every enrolled identity. In fused mode the fusion is fitted on both
/// ([`Fusion::fit`]). The threshold lets in at most `target_far` of the strangers' best
/// scores, and is no lower than a normal tail fitted to them puts that share
/// ([`threshold_for_far_guarded`]). Where that leaves a gap below the enrolled impressions'
/// own scores (all but [`GENUINE_MISS`] of them above it), the threshold goes to the middle of
/// the gap: neither the strangers' unseen tail nor the enrolled fingers' comes first. Where
/// minutiae take part, it is never below the shipped threshold for the gallery's size
/// ([`shipped_floor`]): that one was calibrated on 57,760 real impostor comparisons, and a
/// door's strangers can only show that its sensor needs a stricter one. None when there is
/// nothing to fit on.
pub fn fit_door(
    gallery: &Gallery,
    mode: MatcherMode,
    strangers: &[Probe],
    target_far: f64,
) -> Option<DoorFit> {
    let mut genuine: Vec<(Option<f32>, Option<f32>)> = Vec::new();
    for impressions in gallery.identities.values() {
        let prepared: Vec<Option<Prepared>> = impressions
            .iter()
            .map(|i| i.minutiae.as_ref().map(|t| t.prepared()))
            .collect();
        for (i, probe) in impressions.iter().enumerate() {
            let others = || impressions.iter().enumerate().filter(move |(j, _)| *j != i);
            let network = probe.embedding.as_ref().and_then(|p| {
                others()
                    .filter_map(|(_, o)| o.embedding.as_ref().map(|e| similarity(p, e)))
                    .reduce(f32::max)
            });
            let minutiae = prepared[i].as_ref().and_then(|p| {
                others()
                    .filter_map(|(j, _)| prepared[j].as_ref().map(|g| p.score(g)))
                    .reduce(f32::max)
            });
            genuine.push((network, minutiae));
        }
    }
    let index = Index::new(gallery);
    let all = Rule {
        mode,
        fusion: Fusion::default(),
        shortlist: usize::MAX,
        exhaustive_below: usize::MAX,
        enough: None,
        turned_templates: true,
    };
    let impostor: Vec<Vec<(Option<f32>, Option<f32>)>> = strangers
        .iter()
        .map(|p| {
            index
                .rank(p, None, &all)
                .into_iter()
                .map(|c| (c.network_score, c.minutiae_score))
                .collect()
        })
        .collect();
    let pair = |(n, m): (Option<f32>, Option<f32>)| {
        Some(PairScores {
            network: n?,
            minutiae: m?,
        })
    };
    let fusion = (mode == MatcherMode::Fused).then(|| {
        let g: Vec<PairScores> = genuine.iter().filter_map(|&s| pair(s)).collect();
        let i: Vec<PairScores> = impostor.iter().flatten().filter_map(|&s| pair(s)).collect();
        Fusion::fit(&g, &i)
    });
    let score = |s: (Option<f32>, Option<f32>)| -> Option<f32> {
        match mode {
            MatcherMode::Network => s.0,
            MatcherMode::Minutiae => s.1,
            MatcherMode::Fused => fusion.and_then(|f| pair(s).map(|p| f.score(p))),
        }
    };
    let genuine_scores: Vec<f32> = genuine.iter().filter_map(|&s| score(s)).collect();
    if genuine_scores.is_empty() || strangers.is_empty() {
        return None;
    }
    let impostor_best: Vec<f32> = impostor
        .iter()
        .map(|ranked| {
            ranked
                .iter()
                .filter_map(|&s| score(s))
                .fold(f32::MIN, f32::max)
        })
        .collect();
    let strangers_side = threshold_for_far_guarded(&impostor_best, target_far);
    let strangers_network = impostor
        .iter()
        .flatten()
        .filter_map(|s| s.0)
        .fold([0f32; 2], |[low, high], n| [low.min(n), high.max(n)]);
    let identities = gallery.identities.len();
    // Every identity counted: the calibration cannot know the door's shortlist settings, and
    // counting more only raises the floor.
    let floor = shipped_floor(
        mode,
        fusion,
        strangers_network,
        minutiae_comparisons(mode, gallery, usize::MAX),
    );
    let mut sorted = genuine_scores.clone();
    sorted.sort_by(f32::total_cmp);
    let genuine_side = sorted[(GENUINE_MISS * sorted.len() as f64).floor() as usize];
    let (threshold, basis) = door_threshold(strangers_side, genuine_side, floor);
    Some(DoorFit {
        mode,
        fusion,
        threshold,
        basis,
        far: impostor_best.iter().filter(|&&s| s >= threshold).count() as f64
            / impostor_best.len() as f64,
        frr: genuine_scores.iter().filter(|&&s| s < threshold).count() as f64
            / genuine_scores.len() as f64,
        genuine_scores: genuine_scores.len(),
        stranger_scans: impostor_best.len(),
        identities,
        strangers_network,
    })
}

/// The door's threshold from the strangers' side (their fitted tail), the genuine side (all
/// but [`GENUINE_MISS`] of the enrolled impressions' own scores above it) and the shipped
/// floor, if any: the middle of the gap between the two sides where there is one, else the
/// strangers' side, and never below the floor.
fn door_threshold(
    strangers_side: f32,
    genuine_side: f32,
    shipped_floor: Option<f32>,
) -> (f32, ThresholdBasis) {
    let (threshold, basis) = if strangers_side < genuine_side {
        (
            strangers_side + (genuine_side - strangers_side) / 2.0,
            ThresholdBasis::Gap,
        )
    } else {
        (strangers_side, ThresholdBasis::Strangers)
    };
    match shipped_floor {
        Some(floor) if floor > threshold => (floor, ThresholdBasis::Shipped),
        _ => (threshold, basis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::Impression;
    use crate::matcher::SHIPPED_MINUTIAE_THRESHOLD;

    #[test]
    fn the_door_threshold_is_the_gap_middle_or_the_strangers_tail_never_below_the_floor() {
        use ThresholdBasis::*;
        assert_eq!(door_threshold(2.0, 10.0, None), (6.0, Gap));
        assert_eq!(door_threshold(2.0, 10.0, Some(3.3)), (6.0, Gap));
        assert_eq!(door_threshold(1.0, 4.0, Some(3.3)), (3.3, Shipped));
        assert_eq!(door_threshold(5.0, 4.0, Some(3.3)), (5.0, Strangers));
        assert_eq!(door_threshold(2.0, 1.0, Some(3.3)), (3.3, Shipped));
        assert_eq!(door_threshold(2.0, 1.0, None), (2.0, Strangers));
    }
    use crate::mcc::tests::{moved, random_template};
    use crate::minutiae::{Minutia, Template};

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
    fn few_impostor_scans_get_a_threshold_from_their_fitted_tail() {
        assert!((normal_quantile(0.999) - 3.0902).abs() < 1e-3);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.025) + 1.95996).abs() < 1e-4);
        // 100 scores, mean 0, spread 1: the empirical rule stops just above the highest
        // (about 2.3); the normal tail for 0.1% is about 3.1.
        let scores: Vec<f32> = (0..100)
            .map(|i| normal_quantile((f64::from(i) + 0.5) / 100.0) as f32)
            .collect();
        let t = threshold_for_far_guarded(&scores, 0.001);
        assert!((3.0..3.3).contains(&t), "{t}");
        assert!(t > threshold_for_far(&scores, 0.001));
        // Never below the empirical threshold.
        let many: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32).collect();
        let e = threshold_for_far(&many, 0.01);
        assert!(threshold_for_far_guarded(&many, 0.01) >= e);
    }

    #[test]
    fn a_door_calibration_puts_the_threshold_in_the_gap_above_the_strangers() {
        let unit = |a: f32| vec![a.cos(), a.sin()];
        let mut gallery = Gallery::new(Some("sha256:0"));
        // Two fingers, three impressions each, 2 degrees apart: cosine about 0.9994.
        for (name, base) in [("a", 0.0f32), ("b", 1.5)] {
            gallery.identities.insert(
                name.into(),
                (0..3)
                    .map(|i| Impression {
                        embedding: Some(unit(base + (i as f32 * 2.0).to_radians())),
                        minutiae: None,
                        turned: Vec::new(),
                    })
                    .collect(),
            );
        }
        // Strangers well away from both: best cosine about 0.7.
        let strangers: Vec<Probe> = [0.75f32, 0.78, 0.8, 0.77]
            .iter()
            .map(|&a| Probe {
                embedding: Some(unit(a)),
                minutiae: None,
            })
            .collect();
        let fit = fit_door(&gallery, MatcherMode::Network, &strangers, 0.001)
            .expect("something to fit on");
        let stranger_side = threshold_for_far_guarded(
            &strangers
                .iter()
                .map(|p| {
                    let e = p.embedding.as_deref().unwrap_or_default();
                    gallery
                        .identities
                        .values()
                        .flatten()
                        .filter_map(|i| i.embedding.as_deref().map(|t| similarity(e, t)))
                        .fold(f32::MIN, f32::max)
                })
                .collect::<Vec<_>>(),
            0.001,
        );
        let genuine_min = (2.0f32).to_radians().cos();
        assert!(
            fit.threshold > stranger_side && fit.threshold < genuine_min,
            "{fit:?}"
        );
        assert!((fit.threshold - (stranger_side + genuine_min) / 2.0).abs() < 1e-3);
        assert_eq!((fit.far, fit.frr), (0.0, 0.0));
        assert_eq!(fit.basis, ThresholdBasis::Gap);
        assert_eq!((fit.genuine_scores, fit.stranger_scans), (6, 4));
    }

    /// `n` pseudo-random minutiae (MCC's test prints), turned by `degrees` and moved by `dx`:
    /// impressions of one finger share the seed.
    fn minutiae(seed: u64, n: usize, degrees: f32, dx: f32) -> Template {
        Template::from_detected(
            moved(&random_template(seed, n), degrees, dx, 0.0)
                .into_iter()
                .map(|(x, y, theta)| Minutia {
                    x,
                    y,
                    theta,
                    quality: 50,
                })
                .collect(),
        )
    }

    /// Four fingers, three impressions each, minutiae only.
    fn minutiae_gallery() -> Gallery {
        let mut gallery = Gallery::new(None);
        for finger in 0..4u64 {
            gallery.identities.insert(
                format!("finger{finger}"),
                (0..3)
                    .map(|i| Impression {
                        embedding: None,
                        minutiae: Some(minutiae(finger + 1, 40, 4.0 * i as f32, 3.0 * i as f32)),
                        turned: Vec::new(),
                    })
                    .collect(),
            );
        }
        gallery
    }

    fn minutiae_probe(t: &Template) -> Probe {
        Probe {
            embedding: None,
            minutiae: Some(t.prepared()),
        }
    }

    #[test]
    fn a_minutiae_door_calibration_is_at_least_the_shipped_threshold() {
        let gallery = minutiae_gallery();
        // Strangers far from every finger: their tail alone would put the threshold low.
        let strangers: Vec<Probe> = (100..140u64)
            .map(|seed| minutiae_probe(&minutiae(seed, 40, 0.0, 0.0)))
            .collect();
        let fit = fit_door(&gallery, MatcherMode::Minutiae, &strangers, 0.001)
            .expect("something to fit on");
        let best: Vec<f32> = strangers
            .iter()
            .map(|p| {
                let p = p.minutiae.as_ref().expect("minutiae");
                gallery
                    .identities
                    .values()
                    .flatten()
                    .filter_map(|i| i.minutiae.as_ref().map(|t| p.score(&t.prepared())))
                    .fold(f32::MIN, f32::max)
            })
            .collect();
        assert!(
            threshold_for_far_guarded(&best, 0.001) < SHIPPED_MINUTIAE_THRESHOLD,
            "the strangers must allow a lower threshold for this test"
        );
        assert!(fit.threshold >= SHIPPED_MINUTIAE_THRESHOLD, "{fit:?}");
        assert_eq!((fit.far, fit.frr), (0.0, 0.0), "{fit:?}");
        assert_eq!(fit.identities, gallery.identities.len());
    }

    #[test]
    fn strangers_that_score_high_raise_the_door_threshold_above_the_shipped_one() {
        let gallery = minutiae_gallery();
        // A "stranger" set holding an impression of an enrolled finger, as a sensor whose
        // strangers score higher than the shipped sets' would: the threshold goes above it.
        let mut strangers: Vec<Probe> = (100..110u64)
            .map(|seed| minutiae_probe(&minutiae(seed, 40, 0.0, 0.0)))
            .collect();
        let lookalike = minutiae(1, 40, 6.0, 5.0);
        strangers.push(minutiae_probe(&lookalike));
        let fit = fit_door(&gallery, MatcherMode::Minutiae, &strangers, 0.001)
            .expect("something to fit on");
        assert_ne!(fit.basis, ThresholdBasis::Shipped, "{fit:?}");
        let lookalike_score = gallery.identities["finger0"]
            .iter()
            .filter_map(|i| i.minutiae.as_ref())
            .map(|t| lookalike.prepared().score(&t.prepared()))
            .fold(f32::MIN, f32::max);
        assert!(lookalike_score > SHIPPED_MINUTIAE_THRESHOLD);
        assert!(fit.threshold > lookalike_score, "{fit:?} {lookalike_score}");
        assert_eq!(fit.far, 0.0);
    }

    #[test]
    fn the_shipped_floor_rises_with_the_gallery_and_favours_no_stranger() {
        let floor = |mode, fusion, range, n| shipped_floor(mode, fusion, range, n);
        assert_eq!(floor(MatcherMode::Network, None, [0.0, 0.0], 1000), None);
        assert_eq!(
            floor(MatcherMode::Minutiae, None, [0.0, 0.0], 10),
            Some(SHIPPED_MINUTIAE_THRESHOLD)
        );
        let large = floor(MatcherMode::Minutiae, None, [0.0, 0.0], 1000).expect("a floor");
        assert_eq!(large, shipped_minutiae_threshold(1000));
        assert!(large > SHIPPED_MINUTIAE_THRESHOLD + 0.3, "{large}");
        // Under a fusion that weighs the network, the end of the strangers' range that
        // raises the fused score most.
        let fusion = Fusion {
            bias: -10.0,
            network_weight: 2.0,
            minutiae_weight: 7.0,
        };
        let at = |network| {
            fusion.score(PairScores {
                network,
                minutiae: shipped_minutiae_threshold(1000),
            })
        };
        assert_eq!(
            floor(MatcherMode::Fused, Some(fusion), [-0.2, 0.6], 1000),
            Some(at(0.6))
        );
        let against = Fusion {
            network_weight: -2.0,
            ..fusion
        };
        assert_eq!(
            floor(MatcherMode::Fused, Some(against), [-0.2, 0.6], 1000),
            Some(against.score(PairScores {
                network: -0.2,
                minutiae: shipped_minutiae_threshold(1000),
            }))
        );
        assert_eq!(floor(MatcherMode::Fused, None, [0.0, 0.0], 1000), None);
    }

    #[test]
    fn a_fused_door_calibration_is_at_least_the_shipped_equivalent() {
        let mut gallery = minutiae_gallery();
        let unit = |a: f32| vec![a.cos(), a.sin()];
        for (k, impressions) in gallery.identities.values_mut().enumerate() {
            for (i, imp) in impressions.iter_mut().enumerate() {
                imp.embedding = Some(unit(k as f32 + 0.01 * i as f32));
            }
        }
        let strangers: Vec<Probe> = (100..140u64)
            .map(|seed| Probe {
                embedding: Some(unit(0.3 + 0.01 * seed as f32)),
                minutiae: Some(minutiae(seed, 40, 0.0, 0.0).prepared()),
            })
            .collect();
        let fit =
            fit_door(&gallery, MatcherMode::Fused, &strangers, 0.001).expect("something to fit on");
        let fusion = fit.fusion.expect("fused mode fits a fusion");
        // 12 genuine comparisons: too few to weigh the network.
        assert_eq!(fusion.network_weight, 0.0, "{fusion:?}");
        let shipped_equivalent = fusion.score(PairScores {
            network: 1.0,
            minutiae: SHIPPED_MINUTIAE_THRESHOLD,
        });
        assert!(fit.threshold >= shipped_equivalent, "{fit:?}");
    }

    #[test]
    fn separable_scores_give_zero_eer_and_full_rank1() {
        let unit = |a: f32| vec![a.cos(), a.sin()];
        let mut gallery = Gallery::new(Some("sha256:0"));
        for (name, angle) in [("a", 0.0), ("b", 1.5)] {
            gallery.identities.insert(
                name.into(),
                vec![Impression {
                    embedding: Some(unit(angle)),
                    minutiae: None,
                    turned: Vec::new(),
                }],
            );
        }
        let probe = |angle: f32, identity: Option<&str>| LabelledProbe {
            probe: Probe {
                embedding: Some(unit(angle)),
                minutiae: None,
            },
            identity: identity.map(str::to_string),
        };
        let probes = vec![
            probe(0.05, Some("a")),
            probe(1.45, Some("b")),
            probe(3.0, None),
        ];
        let rule = Rule {
            mode: MatcherMode::Network,
            fusion: Fusion::default(),
            shortlist: 5,
            exhaustive_below: 100,
            enough: None,
            turned_templates: true,
        };
        let mut comparisons = Comparisons::default();
        comparisons.add(&Index::new(&gallery), 2, &rule, &probes);
        let r = comparisons.scores(&rule).report(None, 0.0);
        assert_eq!(r.rank1, 1.0);
        assert_eq!(r.eer, 0.0);
        assert_eq!(r.false_accepts, 0);
        assert_eq!(r.true_accept_rate, 1.0);
        assert_eq!((r.mated_scores, r.non_mated_scores), (2, 4));
        assert_eq!((r.enrolled_identities, r.templates), (2, 2));
    }
}
