//! How a scan is compared with the enrolled fingers: by the network's templates (cosine
//! similarity), by minutiae (MINDTCT's minutiae compared by Minutia Cylinder-Code, a score of
//! 0-100: [`crate::minutiae::Prepared::score`]), or by both, fused. Shared by the daemon's decisions,
//! its enrolment and calibration, and the trainer's open-set evaluation, so that what is
//! measured is what the door does.
//!
//! **The fused score** of a scan and an identity is the log-odds, under a logistic regression
//! fitted on genuine and impostor comparisons, that they are one finger:
//! `bias + network_weight * cosine + minutiae_weight * ln(1 + minutiae)`, each matcher's score
//! being its best over the identity's templates. The parameters are fitted at calibration
//! ([`Fusion::fit`]), on scores of the door's own sensor where possible; the fit keeps the
//! network only where it improves held-out comparisons, so a network that is weak on these
//! prints gets no weight rather than a hand-set one.
//!
//! **1:N** (identification): with fewer than `exhaustive_below` identities every one is
//! compared by both matchers. Above that, the network shortlists the `shortlist` identities
//! whose mean template is closest to the scan and minutiae re-rank those only (a minutiae
//! comparison costs a few hundred microseconds, a cosine one). **1:1** (a claim): both
//! matchers against the claimed identity only.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::gallery::similarity;
use crate::minutiae::Prepared;
use crate::{Candidate, Gallery};

pub use crate::decision::MatcherMode;

/// What a calibration's scans were.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prints {
    /// All from `trainer synth`.
    Synthetic,
    /// None from `trainer synth`.
    Real,
    /// Some of each.
    Mixed,
}

/// The minutiae score shipped as the minutiae threshold for galleries of up to 52 fingers
/// ([`shipped_minutiae_threshold`] raises it for larger ones), calibrated on real impostor
/// pairs: just above the highest of 57,760 same-sensor impostor comparisons (a scan against a
/// finger enrolled from 3 scans) of six real sets, FVC2002 DB1-3_B, Neurotechnology's CrossMatch and
/// U.are.U samples and toy16 (`common/examples/minutiae_eval.rs`; README, "Thresholds that
/// hold on real strangers").
pub const SHIPPED_MINUTIAE_THRESHOLD: f32 = 3.3;

/// The fusion shipped: fitted on the same real genuine and impostor comparisons, minutiae
/// alone (`common/examples/minutiae_eval.rs`).
/// No network has been measured on real prints before a door's calibration, so it gives the
/// network no weight; `fingerprintd calibrate` fits both on the door's own scans.
pub const SHIPPED_FUSION: Fusion = Fusion {
    bias: -10.0481,
    network_weight: 0.0,
    minutiae_weight: 7.2887,
};

/// The fused threshold shipped: [`shipped_minutiae_threshold`] under the shipped fusion.
pub fn shipped_fused_threshold(comparisons: usize) -> f32 {
    SHIPPED_FUSION.score(PairScores {
        network: 0.0,
        minutiae: shipped_minutiae_threshold(comparisons),
    })
}

/// The upper tail of minutiae impostor scores (a scan against one finger enrolled from 3
/// scans, the same sensor), from the same 57,760 real comparisons: the share of comparisons
/// at or above the shipped threshold, and the score over which the share falls e-fold above
/// it (an exponential tail fitted on each set's top 2% of comparisons: `minutiae_eval`
/// prints the fit). Each is the largest of the six sets' (toy16's share, 1.9e-5; DB3_B's
/// decay, 0.171, rounded up), so a stranger's chance is not underestimated on any of them.
/// Measured before small prints' scores were lowered (`minutiae::small_print_score`); with
/// it, the largest are 1.88e-5 and 0.167 (toy16's both), still within these. Small prints'
/// scores are mapped onto this tail, so it holds for them too.
pub const MINUTIAE_IMPOSTOR_TAIL: ImpostorTail = ImpostorTail {
    share_at_shipped: 1.9e-5,
    decay: 0.18,
};

/// The share of a stranger's scans the shipped threshold may let in, however many identities
/// the gallery holds (`fingerprintd calibrate`'s default target too).
pub const SHIPPED_STRANGER_FAR: f64 = 1e-3;

/// An exponential upper tail of minutiae impostor scores above the shipped threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImpostorTail {
    /// Share of impostor comparisons scoring at least [`SHIPPED_MINUTIAE_THRESHOLD`].
    pub share_at_shipped: f64,
    /// Score over which the share falls by a factor e.
    pub decay: f64,
}

impl ImpostorTail {
    /// The lowest minutiae score, never below the shipped threshold, at which a stranger's
    /// scan compared with `identities` enrolled fingers is let in at most `far` of the
    /// time: each comparison taken as independent (checked on the real sets: a scan's best
    /// over a set's other fingers exceeds a score as often as this predicts, or less often),
    /// `1 - (1 - share)^identities <= far`.
    pub fn threshold_for(&self, identities: usize, far: f64) -> f32 {
        let identities = identities.max(1) as f64;
        // The per-comparison share allowed: 1 - (1 - far)^(1/identities), without
        // cancellation.
        let share = -((-far).ln_1p() / identities).exp_m1();
        if share.is_nan() || share <= 0.0 {
            // No stranger may pass (or a nonsense target): nothing is let in.
            return f32::INFINITY;
        }
        if share >= self.share_at_shipped {
            return SHIPPED_MINUTIAE_THRESHOLD;
        }
        let above = self.decay * (self.share_at_shipped / share).ln();
        (f64::from(SHIPPED_MINUTIAE_THRESHOLD) + above) as f32
    }
}

/// Impressions a finger was enrolled from in the comparisons the impostor tail was measured on
/// ([`MINUTIAE_IMPOSTOR_TAIL`]).
pub const TAIL_IMPRESSIONS: usize = 3;

/// How many comparisons of the measured kind (a finger enrolled from [`TAIL_IMPRESSIONS`]
/// scans) a stranger's scan meets in `gallery`: one for each enrolled identity, and one more
/// for each further 3 impressions it holds (a best score over 6 impressions is about a best
/// over two such fingers). Every identity takes part, except in fused mode from
/// `exhaustive_below` identities on, where minutiae compare the network's shortlist only; that
/// is counted as the largest gallery compared in full, not as the few shortlisted, since the
/// shortlist holds the identities whose prints the network finds most like the scan's.
pub fn minutiae_comparisons(
    mode: MatcherMode,
    gallery: &Gallery,
    exhaustive_below: usize,
) -> usize {
    let identities = gallery.identities.len();
    let comparisons: usize = gallery
        .identities
        .values()
        .map(|impressions| {
            let with_minutiae = impressions.iter().filter(|i| i.minutiae.is_some()).count();
            with_minutiae.div_ceil(TAIL_IMPRESSIONS).max(1)
        })
        .sum();
    let largest = exhaustive_below.max(1);
    match mode {
        // Scaled to `largest` identities of this gallery's kind.
        MatcherMode::Fused if identities > largest => {
            (comparisons as f64 * largest as f64 / identities as f64).ceil() as usize
        }
        MatcherMode::Fused | MatcherMode::Minutiae | MatcherMode::Network => comparisons,
    }
}

/// The shipped minutiae threshold for a gallery whose stranger's scan meets `comparisons`
/// enrolled fingers ([`minutiae_comparisons`]): 3.3 up to 52 of them, then higher,
/// so that at most [`SHIPPED_STRANGER_FAR`] of a stranger's scans are let in whatever the
/// gallery's size (about 3.54 at 199 identities, 3.83 at 1,000, 4.24 at 10,000).
pub fn shipped_minutiae_threshold(comparisons: usize) -> f32 {
    MINUTIAE_IMPOSTOR_TAIL.threshold_for(comparisons, SHIPPED_STRANGER_FAR)
}

/// The fused score's parameters: log-odds = bias + network_weight * cosine
/// + minutiae_weight * ln(1 + minutiae score).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fusion {
    pub bias: f64,
    pub network_weight: f64,
    pub minutiae_weight: f64,
}

/// The two scores of one comparison (best over an identity's templates).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairScores {
    pub network: f32,
    pub minutiae: f32,
}

impl PairScores {
    fn features(self) -> [f64; 3] {
        [
            1.0,
            f64::from(self.network),
            f64::from(self.minutiae.max(0.0)).ln_1p(),
        ]
    }
}

impl Fusion {
    /// The fused score (log-odds of one finger).
    pub fn score(&self, s: PairScores) -> f32 {
        let [_, n, m] = s.features();
        (self.bias + self.network_weight * n + self.minutiae_weight * m) as f32
    }

    /// Fits the regression on genuine and impostor comparisons (the two classes weighted
    /// equally), twice: on both scores, and on minutiae alone (network weight 0). The network
    /// is kept only if it lowers the held-out log-loss, over 4 folds, by at least 1%, and
    /// only from at least [`MIN_GENUINE_FOR_NETWORK`] genuine comparisons.
    pub fn fit(genuine: &[PairScores], impostor: &[PairScores]) -> Fusion {
        if genuine.len() < MIN_GENUINE_FOR_NETWORK {
            return fit_logistic(genuine, impostor, false);
        }
        let with_network = cross_validated_loss(genuine, impostor, true);
        let without = cross_validated_loss(genuine, impostor, false);
        let use_network = with_network < without * 0.99;
        fit_logistic(genuine, impostor, use_network)
    }
}

/// Fewest genuine comparisons [`Fusion::fit`] gives the network a weight from (10 fingers
/// enrolled from 3 scans). Fewer let one finger's luck decide the weight: on FVC2002 DB3_B,
/// 15 genuine comparisons (5 fingers) gave the network weight 2.2, and the door's fused EER
/// on unseen scans rose from 0.7% (minutiae alone) to 3.1%. The demo's door (10 synthetic
/// fingers, a network trained on their kind) needs the network's weight: minutiae alone let
/// 2 of its 40 strangers' scans in.
pub const MIN_GENUINE_FOR_NETWORK: usize = 30;

/// Ridge on the weights (not the bias): keeps them finite when the classes separate.
const RIDGE: f64 = 1e-3;

/// Logistic regression by Newton's method, classes weighted equally.
fn fit_logistic(genuine: &[PairScores], impostor: &[PairScores], use_network: bool) -> Fusion {
    let mut theta = [0.0f64; 3];
    let (wg, wi) = (
        0.5 / genuine.len().max(1) as f64,
        0.5 / impostor.len().max(1) as f64,
    );
    let used = |k: usize| k != 1 || use_network;
    for _ in 0..100 {
        let mut grad = [0.0f64; 3];
        let mut hess = [[0.0f64; 3]; 3];
        let samples = genuine
            .iter()
            .map(|s| (s, 1.0, wg))
            .chain(impostor.iter().map(|s| (s, 0.0, wi)));
        for (s, y, w) in samples {
            let x = s.features();
            let z: f64 = (0..3).filter(|&k| used(k)).map(|k| theta[k] * x[k]).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            for a in 0..3 {
                grad[a] += w * (p - y) * x[a];
                for b in 0..3 {
                    hess[a][b] += w * p * (1.0 - p) * x[a] * x[b];
                }
            }
        }
        for k in 1..3 {
            grad[k] += RIDGE * theta[k];
            hess[k][k] += RIDGE;
        }
        // Unused coefficients stay 0: their row and column become the identity.
        for k in 0..3 {
            if !used(k) {
                grad[k] = 0.0;
                hess[k] = [0.0; 3];
                for row in hess.iter_mut() {
                    row[k] = 0.0;
                }
                hess[k][k] = 1.0;
            }
        }
        let Some(step) = solve3(hess, grad) else {
            break;
        };
        for k in 0..3 {
            theta[k] -= step[k];
        }
        if step.iter().map(|s| s.abs()).fold(0.0, f64::max) < 1e-9 {
            break;
        }
    }
    Fusion {
        bias: theta[0],
        network_weight: theta[1],
        minutiae_weight: theta[2],
    }
}

/// Mean held-out log-loss (classes weighted equally) over 4 folds.
fn cross_validated_loss(genuine: &[PairScores], impostor: &[PairScores], use_network: bool) -> f64 {
    const FOLDS: usize = 4;
    let split = |v: &[PairScores], f: usize| -> (Vec<PairScores>, Vec<PairScores>) {
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (i, s) in v.iter().enumerate() {
            if i % FOLDS == f {
                test.push(*s);
            } else {
                train.push(*s);
            }
        }
        (train, test)
    };
    let mut total = 0.0;
    for f in 0..FOLDS {
        let (gt, gv) = split(genuine, f);
        let (it, iv) = split(impostor, f);
        let fusion = fit_logistic(&gt, &it, use_network);
        let loss = |v: &[PairScores], y: f64| -> f64 {
            let n = v.len().max(1) as f64;
            v.iter()
                .map(|s| {
                    let z = f64::from(fusion.score(*s));
                    // -log(sigmoid(z)) for y = 1, -log(1 - sigmoid(z)) for y = 0, stably.
                    let signed = if y > 0.5 { -z } else { z };
                    signed.max(0.0) + (-signed.abs()).exp().ln_1p()
                })
                .sum::<f64>()
                / n
        };
        total += 0.5 * (loss(&gv, 1.0) + loss(&iv, 0.0));
    }
    total / FOLDS as f64
}

/// Solves the 3x3 system `a x = b` (Gaussian elimination with pivoting).
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..3 {
            let f = a[row][col] / pivot_row[col];
            for (v, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *v -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// How scores become a ranking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub mode: MatcherMode,
    pub fusion: Fusion,
    /// 1:N above `exhaustive_below` identities: how many the network shortlists.
    pub shortlist: usize,
    /// Galleries smaller than this are compared in full by both matchers.
    pub exhaustive_below: usize,
    /// Minutiae comparisons with an identity stop at the first impression scoring at least
    /// this (`None`: every impression is compared). [`Rule::enough_for`] sets it where it
    /// cannot change a decision; an identity left early reports that impression's score, not
    /// its best, and is compared in full whenever another identity could outrank it.
    pub enough: Option<f32>,
    /// Whether the enrolled scans' turned templates ([`Impression::turned`]) take part in the
    /// network score. Off where the threshold in force was set on scores without them (a
    /// calibration from before enrolment turns): more templates an identity means higher
    /// best scores for strangers too, so such a threshold would let more of them in.
    ///
    /// [`Impression::turned`]: crate::gallery::Impression::turned
    pub turned_templates: bool,
}

impl Rule {
    /// The lowest minutiae score that clears `threshold` under this rule whatever the network
    /// says (cosine in -1..1): comparing the identity's other impressions could only raise a
    /// score that is granted already. `None` where minutiae alone never decide.
    pub fn enough_for(&self, threshold: f32) -> Option<f32> {
        if !threshold.is_finite() {
            return None;
        }
        match self.mode {
            MatcherMode::Network => None,
            MatcherMode::Minutiae => Some(threshold.max(0.0)),
            MatcherMode::Fused => {
                let f = &self.fusion;
                if f.minutiae_weight <= 0.0 {
                    return None;
                }
                // The cosine that helps least (a little past -1 or 1, for rounding).
                let worst = if f.network_weight > 0.0 { -1.01 } else { 1.01 };
                let clears = |m: f32| {
                    f.score(PairScores {
                        network: worst,
                        minutiae: m,
                    }) >= threshold
                };
                let estimate =
                    ((f64::from(threshold) - f.bias - f.network_weight * f64::from(worst))
                        / f.minutiae_weight)
                        .exp_m1();
                if estimate.is_nan() || estimate >= 1e9 {
                    return None;
                }
                // The estimate, raised until it clears in the f32 arithmetic the decision uses
                // (the score grows with m).
                let mut m = estimate.max(0.0) as f32;
                for _ in 0..64 {
                    if clears(m) {
                        return Some(m);
                    }
                    m = m * (1.0 + 1e-6) + 1e-6;
                }
                None
            }
        }
    }
}

/// A scan as the matchers see it: the network's template (L2-normalised) and its minutiae.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    pub embedding: Option<Vec<f32>>,
    pub minutiae: Option<Prepared>,
}

/// One enrolled identity, ready to compare with.
struct Entry {
    name: String,
    /// The scans' templates, then their turned ones.
    embeddings: Vec<Vec<f32>>,
    /// How many of `embeddings` are the scans' own.
    own: usize,
    /// Mean of the scans' own templates, L2-normalised: the shortlist compares with this alone.
    centroid: Option<Vec<f32>>,
    minutiae: Vec<Prepared>,
}

/// A gallery prepared for matching: minutiae converted once, a centroid per identity.
pub struct Index {
    entries: Vec<Entry>,
}

impl Index {
    pub fn new(gallery: &Gallery) -> Self {
        let entries = gallery
            .identities
            .iter()
            .map(|(name, impressions)| {
                let own: Vec<&Vec<f32>> = impressions
                    .iter()
                    .filter_map(|i| i.embedding.as_ref())
                    .collect();
                let centroid = own.first().map(|first| {
                    let mut sum = vec![0.0f32; first.len()];
                    for e in &own {
                        sum.iter_mut().zip(e.iter()).for_each(|(s, x)| *s += x);
                    }
                    crate::gallery::normalize(sum)
                });
                // The turned scans' templates count as the scans' own: the identity's
                // network score is the best over all of them.
                let turned = impressions.iter().flat_map(|i| i.turned.iter());
                Entry {
                    name: name.clone(),
                    own: own.len(),
                    embeddings: own.into_iter().chain(turned).cloned().collect(),
                    centroid,
                    minutiae: impressions
                        .iter()
                        .filter_map(|i| i.minutiae.as_ref().map(|t| t.prepared()))
                        .collect(),
                }
            })
            .collect();
        Self { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identities a probe is compared with: the claimed one, or all of them.
    fn claimed<'a>(&'a self, claim: Option<&'a str>) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| claim.is_none_or(|c| c == e.name))
    }

    /// Whether `rank` compares minutiae with every one of the `claimed` identities, so that
    /// the comparisons need not wait for the network (no shortlist: a claim, a small gallery,
    /// minutiae mode).
    fn compares_all(rule: &Rule, claimed: usize) -> bool {
        rule.mode != MatcherMode::Fused || claimed < rule.exhaustive_below.max(1)
    }

    /// The minutiae side of `rank`, run ahead of the network where it does not need the
    /// shortlist (`None` where it does, or the rule compares no minutiae): a door computes it
    /// while the network runs and hands it to [`Index::rank_with`].
    pub fn minutiae_ahead(
        &self,
        minutiae: &Prepared,
        claim: Option<&str>,
        rule: &Rule,
    ) -> Option<MinutiaeAhead> {
        let pool: Vec<&Entry> = self.claimed(claim).collect();
        if !rule.mode.needs_minutiae() || !Self::compares_all(rule, pool.len()) {
            return None;
        }
        Some(MinutiaeAhead(best_minutiae(minutiae, &pool, rule)))
    }

    /// Candidates, best first: every identity (or the claimed one only) in network and
    /// minutiae modes and in small galleries; the network's shortlist in large ones (fused).
    /// A matcher the probe or the gallery lacks scores nothing (the caller checks first).
    pub fn rank(&self, probe: &Probe, claim: Option<&str>, rule: &Rule) -> Vec<Candidate> {
        self.rank_with(probe, claim, rule, None)
    }

    /// `rank`, with the minutiae scores `minutiae_ahead` gave for the same probe, claim and
    /// rule (computed here when `ahead` is `None`).
    pub fn rank_with(
        &self,
        probe: &Probe,
        claim: Option<&str>,
        rule: &Rule,
        ahead: Option<MinutiaeAhead>,
    ) -> Vec<Candidate> {
        let mut pool: Vec<&Entry> = self.claimed(claim).collect();
        let compares_all = Self::compares_all(rule, pool.len());
        let ahead = ahead.filter(|a| a.0.len() == pool.len() && compares_all);
        if !compares_all {
            if let Some(embedding) = &probe.embedding {
                let mut by_centroid: Vec<(f32, &Entry)> = pool
                    .par_iter()
                    .map(|e| {
                        let s = e
                            .centroid
                            .as_ref()
                            .map_or(f32::NEG_INFINITY, |c| similarity(embedding, c));
                        (s, *e)
                    })
                    .collect();
                let k = rule.shortlist.max(1).min(by_centroid.len());
                by_centroid.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
                pool = by_centroid[..k].iter().map(|(_, e)| *e).collect();
            }
        }
        let network = |e: &Entry| -> Option<f32> {
            let p = probe.embedding.as_ref()?;
            let compared = if rule.turned_templates {
                e.embeddings.len()
            } else {
                e.own
            };
            e.embeddings[..compared]
                .iter()
                .map(|t| similarity(p, t))
                .reduce(f32::max)
        };
        let mut minutiae: Vec<Best> = match (ahead, &probe.minutiae, rule.mode.needs_minutiae()) {
            (Some(ahead), _, true) => ahead.0,
            (None, Some(p), true) => best_minutiae(p, &pool, rule),
            _ => vec![Best::default(); pool.len()],
        };
        let mut ranked = candidates(&pool, &minutiae, &network, rule);
        // An identity left early is first, or every identity is compared in full: the
        // decision is the one all impressions would give.
        let first = ranked.first().map(|(i, _)| *i);
        let left_early = (0..pool.len())
            .any(|i| Some(i) != first && minutiae[i].compared < pool[i].minutiae.len());
        if let (true, Some(p)) = (left_early, &probe.minutiae) {
            compare_rest(p, &pool, &mut minutiae, |_| usize::MAX);
            ranked = candidates(&pool, &minutiae, &network, rule);
        }
        ranked.into_iter().map(|(_, c)| c).collect()
    }
}

/// The pool's candidates by score, best first, each with its place in the pool.
fn candidates(
    pool: &[&Entry],
    minutiae: &[Best],
    network: &dyn Fn(&Entry) -> Option<f32>,
    rule: &Rule,
) -> Vec<(usize, Candidate)> {
    let mut ranked: Vec<(usize, Candidate)> = pool
        .iter()
        .zip(minutiae)
        .enumerate()
        .filter_map(|(i, (e, m))| {
            let m = m.score;
            let (n, m) = match rule.mode {
                MatcherMode::Network => (network(e), None),
                MatcherMode::Minutiae => (None, m),
                MatcherMode::Fused => (network(e), m),
            };
            let score = match rule.mode {
                MatcherMode::Network => n?,
                MatcherMode::Minutiae => m?,
                MatcherMode::Fused => rule.fusion.score(PairScores {
                    network: n?,
                    minutiae: m?,
                }),
            };
            Some((
                i,
                Candidate {
                    identity: e.name.clone(),
                    score,
                    network_score: n,
                    minutiae_score: m,
                },
            ))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    ranked
}

/// Minutiae scores computed ahead of the network ([`Index::minutiae_ahead`]).
#[derive(Clone, Debug)]
pub struct MinutiaeAhead(Vec<Best>);

/// An identity's best minutiae score so far, over its first `compared` impressions.
#[derive(Clone, Copy, Debug, Default)]
struct Best {
    score: Option<f32>,
    compared: usize,
}

/// Compares the probe with each identity's impressions from the first not yet compared up to
/// `upto(i)` (exclusive), all at once, on every core.
fn compare_rest(
    probe: &Prepared,
    pool: &[&Entry],
    best: &mut [Best],
    upto: impl Fn(usize) -> usize,
) {
    let pairs: Vec<(usize, &Prepared)> = pool
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            let end = upto(i).min(e.minutiae.len());
            let start = best[i].compared.min(end);
            e.minutiae[start..end].iter().map(move |t| (i, t))
        })
        .collect();
    let scores: Vec<(usize, f32)> = pairs
        .par_iter()
        .map(|&(i, t)| (i, probe.score(t)))
        .collect();
    for (i, s) in scores {
        best[i].score = Some(best[i].score.map_or(s, |b| b.max(s)));
        best[i].compared += 1;
    }
}

/// Each identity's best score over its impressions, or, under `rule.enough`, the first
/// impression's that reaches it. Where two identities reach it, both are compared in full.
fn best_minutiae(probe: &Prepared, pool: &[&Entry], rule: &Rule) -> Vec<Best> {
    let mut best = vec![Best::default(); pool.len()];
    let Some(enough) = rule.enough else {
        compare_rest(probe, pool, &mut best, |_| usize::MAX);
        return best;
    };
    let reached = |b: &Best| b.score.is_some_and(|s| s >= enough);
    compare_rest(probe, pool, &mut best, |_| 1);
    let stopped: Vec<bool> = best.iter().map(reached).collect();
    compare_rest(probe, pool, &mut best, |i| {
        if stopped[i] {
            0
        } else {
            usize::MAX
        }
    });
    if best.iter().filter(|b| reached(b)).count() > 1 {
        compare_rest(probe, pool, &mut best, |_| usize::MAX);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_prints_are_scored_against_the_shipped_tail() {
        // Small prints' scores are mapped onto the tail the shipped threshold rests on.
        assert_eq!(crate::minutiae::TAIL_ANCHOR, SHIPPED_MINUTIAE_THRESHOLD);
        assert!(
            (f64::from(crate::minutiae::TAIL_DECAY) - MINUTIAE_IMPOSTOR_TAIL.decay).abs() < 1e-6
        );
    }

    fn pairs(v: &[(f32, u32)]) -> Vec<PairScores> {
        v.iter()
            .map(|&(network, minutiae)| PairScores {
                network,
                minutiae: minutiae as f32,
            })
            .collect()
    }

    #[test]
    fn the_fit_weighs_the_network_only_where_it_tells_fingers_apart() {
        // Minutiae separate the classes; the network is noise: the fit drops it.
        let mut genuine = Vec::new();
        let mut impostor = Vec::new();
        for i in 0..200u32 {
            let noise = ((i * 37) % 100) as f32 / 100.0;
            genuine.push((noise, 40 + i % 60));
            impostor.push((((i * 53) % 100) as f32 / 100.0, 5 + i % 25));
        }
        let fusion = Fusion::fit(&pairs(&genuine), &pairs(&impostor));
        assert_eq!(fusion.network_weight, 0.0, "{fusion:?}");
        assert!(fusion.minutiae_weight > 0.0, "{fusion:?}");
        // Both informative, overlapping: both get weight, and the fused score separates the
        // classes better than either alone (each at its best threshold).
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for i in 0..400u32 {
            let a = ((i * 37) % 100) as f32 / 100.0;
            let c = ((i * 71 + 13) % 100) as f32 / 100.0;
            let b = (i * 53) % 30;
            let d = (i * 29 + 7) % 30;
            genuine.push((0.3 + 0.5 * a, 10 + b));
            impostor.push((0.5 * c, d));
        }
        let fusion = Fusion::fit(&pairs(&genuine), &pairs(&impostor));
        assert!(
            fusion.network_weight > 0.0 && fusion.minutiae_weight > 0.0,
            "{fusion:?}"
        );
        let fewest_errors = |f: &dyn Fn(PairScores) -> f32| {
            let (g, i) = (pairs(&genuine), pairs(&impostor));
            g.iter()
                .chain(&i)
                .map(|t| {
                    let t = f(*t);
                    g.iter().filter(|s| f(**s) < t).count()
                        + i.iter().filter(|s| f(**s) >= t).count()
                })
                .min()
                .unwrap_or(usize::MAX)
        };
        let fused = fewest_errors(&|s| fusion.score(s));
        let network_alone = fewest_errors(&|s| s.network);
        let minutiae_alone = fewest_errors(&|s| s.minutiae);
        assert!(
            fused < network_alone && fused < minutiae_alone,
            "{fused} {network_alone} {minutiae_alone}"
        );
    }

    #[test]
    fn too_few_genuine_comparisons_give_the_network_no_weight() {
        // Both scores informative, as in the test above: with enough genuine comparisons the
        // network is weighed; with one fewer than the minimum it is not.
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for i in 0..400u32 {
            let a = ((i * 37) % 100) as f32 / 100.0;
            let c = ((i * 71 + 13) % 100) as f32 / 100.0;
            genuine.push((0.3 + 0.5 * a, 10 + (i * 53) % 30));
            impostor.push((0.5 * c, (i * 29 + 7) % 30));
        }
        let (g, i) = (pairs(&genuine), pairs(&impostor));
        let enough = Fusion::fit(&g[..MIN_GENUINE_FOR_NETWORK], &i);
        assert!(enough.network_weight > 0.0, "{enough:?}");
        let few = Fusion::fit(&g[..MIN_GENUINE_FOR_NETWORK - 1], &i);
        assert_eq!(few.network_weight, 0.0, "{few:?}");
        assert!(few.minutiae_weight > 0.0, "{few:?}");
    }

    #[test]
    fn the_fused_score_grows_with_either_score() {
        let f = Fusion {
            bias: -3.0,
            network_weight: 2.0,
            minutiae_weight: 1.0,
        };
        let s = |network, minutiae| f.score(PairScores { network, minutiae });
        assert!(s(0.9, 4.0) > s(0.5, 4.0));
        assert!(s(0.5, 6.0) > s(0.5, 4.0));
        assert!((s(0.0, 0.0) + 3.0).abs() < 1e-6);
    }

    #[test]
    fn turned_templates_count_only_where_the_rule_takes_them() {
        use crate::gallery::Impression;
        let mut gallery = Gallery::new(Some("sha256:model"));
        gallery.identities.insert(
            "alice".into(),
            vec![Impression {
                embedding: Some(vec![1.0, 0.0]),
                minutiae: None,
                turned: vec![vec![0.0, 1.0]],
            }],
        );
        assert!(gallery.has_turned());
        let index = Index::new(&gallery);
        // A probe like the turned template alone.
        let probe = Probe {
            embedding: Some(vec![0.0, 1.0]),
            minutiae: None,
        };
        let rule = |turned_templates| Rule {
            mode: MatcherMode::Network,
            fusion: SHIPPED_FUSION,
            shortlist: 5,
            exhaustive_below: 200,
            enough: None,
            turned_templates,
        };
        let score = |turned| index.rank(&probe, None, &rule(turned))[0].score;
        assert!((score(true) - 1.0).abs() < 1e-6);
        assert!(score(false).abs() < 1e-6);
    }

    #[test]
    fn the_shipped_threshold_holds_strangers_to_the_target_whatever_the_gallery() {
        // Up to 52 identities the measured tail keeps strangers below 0.1% at 3.3.
        for n in [0, 1, 10, 52] {
            assert_eq!(
                shipped_minutiae_threshold(n),
                SHIPPED_MINUTIAE_THRESHOLD,
                "{n}"
            );
        }
        let tail = MINUTIAE_IMPOSTOR_TAIL;
        let stranger_far = |n: usize, t: f32| {
            let share = tail.share_at_shipped
                * (-(f64::from(t) - f64::from(SHIPPED_MINUTIAE_THRESHOLD)) / tail.decay).exp();
            1.0 - (1.0 - share).powi(n as i32)
        };
        let mut last = SHIPPED_MINUTIAE_THRESHOLD;
        for n in [53, 100, 199, 1000, 10_000, 1_000_000] {
            let t = shipped_minutiae_threshold(n);
            assert!(t > last, "{n}: {t} after {last}");
            let far = stranger_far(n, t);
            assert!(
                (far - SHIPPED_STRANGER_FAR).abs() < 1e-3 * SHIPPED_STRANGER_FAR,
                "{n}: {far}"
            );
            last = t;
        }
        // The figures the README gives.
        for (n, t) in [(199, 3.54), (1000, 3.83), (10_000, 4.24)] {
            assert!((shipped_minutiae_threshold(n) - t).abs() < 0.005, "{n}");
        }
        // A stricter target asks more of every gallery; none asks nothing of it.
        assert!(tail.threshold_for(1, 1e-7) > SHIPPED_MINUTIAE_THRESHOLD);
        assert_eq!(tail.threshold_for(1, 0.0), f32::INFINITY);
        // The fused equivalent under the shipped fusion.
        let fused = shipped_fused_threshold(1000);
        let back = (f64::from(fused) - SHIPPED_FUSION.bias) / SHIPPED_FUSION.minutiae_weight;
        assert!((back.exp_m1() as f32 - shipped_minutiae_threshold(1000)).abs() < 1e-3);
    }

    #[test]
    fn comparisons_count_identities_and_their_impressions_by_threes() {
        use crate::gallery::Impression;
        let with = |minutiae: bool| Impression {
            embedding: None,
            minutiae: minutiae.then(crate::minutiae::Template::default),
            turned: Vec::new(),
        };
        let gallery = |identities: usize, impressions: usize| {
            let mut g = Gallery::new(None);
            for i in 0..identities {
                g.identities.insert(
                    format!("p{i}"),
                    (0..impressions).map(|_| with(true)).collect(),
                );
            }
            g
        };
        let count = |mode, g: &Gallery, below| minutiae_comparisons(mode, g, below);
        assert_eq!(count(MatcherMode::Minutiae, &gallery(5000, 3), 200), 5000);
        assert_eq!(count(MatcherMode::Fused, &gallery(150, 3), 200), 150);
        // A shortlisted gallery counts as the largest compared in full.
        assert_eq!(count(MatcherMode::Fused, &gallery(5000, 3), 200), 200);
        assert_eq!(count(MatcherMode::Fused, &gallery(5000, 3), 0), 1);
        // 4 to 6 impressions count twice, 7 three times.
        assert_eq!(count(MatcherMode::Minutiae, &gallery(10, 4), 200), 20);
        assert_eq!(count(MatcherMode::Minutiae, &gallery(10, 6), 200), 20);
        assert_eq!(count(MatcherMode::Minutiae, &gallery(10, 7), 200), 30);
        assert_eq!(count(MatcherMode::Fused, &gallery(5000, 6), 200), 400);
        // An identity without minutiae (network only) still counts once.
        let mut mixed = gallery(2, 3);
        mixed
            .identities
            .insert("old".into(), vec![with(false), with(false), with(false)]);
        assert_eq!(count(MatcherMode::Minutiae, &mixed, 200), 3);
    }

    #[test]
    fn enough_clears_the_threshold_whatever_the_network_says() {
        let rule = |mode, fusion| Rule {
            mode,
            fusion,
            shortlist: 5,
            exhaustive_below: 200,
            enough: None,
            turned_templates: true,
        };
        assert_eq!(
            rule(MatcherMode::Minutiae, SHIPPED_FUSION).enough_for(4.5),
            Some(4.5)
        );
        assert_eq!(
            rule(MatcherMode::Network, SHIPPED_FUSION).enough_for(0.9),
            None
        );
        assert_eq!(
            rule(MatcherMode::Fused, SHIPPED_FUSION).enough_for(f32::INFINITY),
            None
        );
        // The shipped fusion gives the network no weight: the shipped threshold's own score.
        let shipped = rule(MatcherMode::Fused, SHIPPED_FUSION)
            .enough_for(shipped_fused_threshold(1))
            .expect("a bound");
        assert!(
            (shipped - SHIPPED_MINUTIAE_THRESHOLD).abs() < 1e-3 * SHIPPED_MINUTIAE_THRESHOLD,
            "{shipped}"
        );
        let fusion = Fusion {
            bias: -12.0,
            network_weight: 3.0,
            minutiae_weight: 4.0,
        };
        let t = 2.5;
        let enough = rule(MatcherMode::Fused, fusion)
            .enough_for(t)
            .expect("a bound");
        let s = |network, minutiae| fusion.score(PairScores { network, minutiae });
        assert!(s(-1.0, enough) >= t, "{enough}");
        // And not far above what the worst cosine needs.
        assert!(s(-1.01, enough * 0.999) < t, "{enough}");
        let blind = Fusion {
            minutiae_weight: 0.0,
            ..fusion
        };
        assert_eq!(rule(MatcherMode::Fused, blind).enough_for(t), None);
    }

    /// Pseudo-random minutiae of `fingers` fingers, each enrolled from 3 impressions (the
    /// finger's minutiae moved by a few pixels, some dropped), and 2 more impressions of each
    /// as probes.
    fn fingers(fingers: usize) -> (Gallery, Vec<(String, Prepared)>) {
        use crate::gallery::Impression;
        use crate::minutiae::{Minutia, Template};
        let mut next = crate::mcc::tests::xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: i32| next(n as u64) as i32;
        let mut gallery = Gallery::default();
        let mut probes = Vec::new();
        for f in 0..fingers {
            let base: Vec<(i32, i32, i32)> = (0..45)
                .map(|_| (20 + next(300), 20 + next(300), next(360)))
                .collect();
            let impression = |next: &mut dyn FnMut(i32) -> i32| {
                let mut minutiae = Vec::new();
                for &(x, y, theta) in &base {
                    if next(10) > 1 {
                        minutiae.push(Minutia {
                            x: x + next(5) - 2,
                            y: y + next(5) - 2,
                            theta: (theta + next(7) - 3).rem_euclid(360),
                            quality: 50,
                        });
                    }
                }
                Template { minutiae }
            };
            let name = format!("finger-{f}");
            let enrolled = (0..3)
                .map(|_| Impression {
                    embedding: None,
                    minutiae: Some(impression(&mut next)),
                    turned: Vec::new(),
                })
                .collect();
            gallery.identities.insert(name.clone(), enrolled);
            for _ in 0..2 {
                probes.push((name.clone(), impression(&mut next).prepared()));
            }
        }
        (gallery, probes)
    }

    #[test]
    fn stopping_at_enough_gives_the_decisions_of_every_impression() {
        let (gallery, probes) = fingers(6);
        let index = Index::new(&gallery);
        let full = Rule {
            mode: MatcherMode::Minutiae,
            fusion: SHIPPED_FUSION,
            shortlist: 5,
            exhaustive_below: 200,
            enough: None,
            turned_templates: true,
        };
        let mut stopped_early = 0;
        for threshold in [5.0f32, 20.0, 60.0] {
            let early = Rule {
                enough: full.enough_for(threshold),
                ..full
            };
            for (own, p) in &probes {
                let probe = Probe {
                    embedding: None,
                    minutiae: Some(p.clone()),
                };
                for claim in [None, Some(own.as_str()), Some("finger-0")] {
                    let all = index.rank(&probe, claim, &full);
                    let ahead = index.minutiae_ahead(p, claim, &early);
                    assert!(ahead.is_some());
                    let some = index.rank_with(&probe, claim, &early, ahead);
                    let decision = |r: &[Candidate]| {
                        r.first()
                            .map(|c| (c.identity.clone(), c.score >= threshold))
                    };
                    assert_eq!(
                        decision(&all),
                        decision(&some),
                        "{own} {claim:?} {threshold}"
                    );
                    assert_eq!(all.len(), some.len());
                    if let (Some(a), Some(b)) = (all.first(), some.first()) {
                        assert!(b.score <= a.score);
                        if b.score < a.score {
                            stopped_early += 1;
                            assert!(b.score >= threshold, "left early below the threshold");
                        }
                    }
                    // Every other candidate keeps its best score.
                    for (a, b) in all.iter().skip(1).zip(some.iter().skip(1)) {
                        assert_eq!((&a.identity, a.score), (&b.identity, b.score));
                    }
                }
            }
        }
        assert!(stopped_early > 0, "no comparison was saved");
    }
}
