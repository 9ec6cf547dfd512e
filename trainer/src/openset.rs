//! Open-set evaluation and calibration in the trainer: galleries of enrolled fingers built
//! from dataset samples, probes of enrolled fingers and of fingers never enrolled, scored by
//! the daemon's own matchers and figures (`fingerprint_common::matcher`, `::openset`).

use std::collections::BTreeMap;

use fingerprint_common::gallery::Impression;
use fingerprint_common::matcher::{MatcherMode, Prints, Probe, Rule};
use fingerprint_common::preprocess::ENROLMENT_TURNS_DEGREES;
use fingerprint_common::Gallery;
use fingerprint_models::export::Calibration;

use crate::dataset::Sample;

pub use fingerprint_common::openset::{
    fit_door, threshold_for_far, Comparisons, DoorFit, LabelledProbe, OpenSetReport, Scores,
};

/// The matcher's view of an impression: what a probe of it compares.
pub fn probe_of(impression: &Impression) -> Probe {
    Probe {
        embedding: impression.embedding.clone(),
        minutiae: impression.minutiae.as_ref().map(|t| t.prepared()),
    }
}

/// A rule of one matcher (network: the fusion is unused) comparing every identity.
pub fn rule(mode: MatcherMode, fusion: fingerprint_common::matcher::Fusion) -> Rule {
    Rule {
        mode,
        fusion,
        shortlist: usize::MAX,
        exhaustive_below: usize::MAX,
        enough: None,
        turned_templates: true,
    }
}

/// Network-only probes and impressions, for code that has embeddings alone.
pub fn embedding_only(embedding: Vec<f32>) -> Impression {
    Impression {
        embedding: Some(embedding),
        minutiae: None,
        turned: Vec::new(),
    }
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

/// Gives the first `per_identity` impressions of each identity that `enrollable` accepts
/// (in the order given, as [`enrol_first`] takes them) the network templates of their scans
/// turned by each of [`ENROLMENT_TURNS_DEGREES`], as `fingerprintd enroll` keeps them.
/// `embed_turned(scans, degrees)` gives the templates of `scans` turned by `degrees`;
/// `samples[i]` is the scan of `impressions[i]`.
pub fn add_enrolment_turns(
    samples: &[Sample],
    impressions: &mut [(String, Impression)],
    per_identity: usize,
    enrollable: impl Fn(&Impression) -> bool,
    mut embed_turned: impl FnMut(&[Sample], f32) -> anyhow::Result<Vec<Vec<f32>>>,
) -> anyhow::Result<()> {
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let chosen: Vec<usize> = (0..impressions.len())
        .filter(|&i| {
            let (name, impression) = &impressions[i];
            if !enrollable(impression) {
                return false;
            }
            let n = taken.entry(name.as_str()).or_default();
            *n += 1;
            *n <= per_identity
        })
        .collect();
    let scans: Vec<Sample> = chosen.iter().map(|&i| samples[i].clone()).collect();
    for degrees in ENROLMENT_TURNS_DEGREES {
        let templates = embed_turned(&scans, degrees)?;
        anyhow::ensure!(
            templates.len() == scans.len(),
            "one template per turned scan"
        );
        for (&i, t) in chosen.iter().zip(templates) {
            impressions[i].1.turned.push(t);
        }
    }
    Ok(())
}

/// Builds a gallery from the first `per_identity` impressions of each identity (in the order
/// given); the others are returned as probes.
pub fn enrol_first(
    impressions: Vec<(String, Impression)>,
    per_identity: usize,
) -> (Gallery, Vec<LabelledProbe>) {
    let mut gallery = Gallery::new(Some("trainer"));
    let mut probes = Vec::new();
    for (identity, impression) in impressions {
        let templates = gallery.identities.entry(identity.clone()).or_default();
        if templates.len() < per_identity {
            templates.push(impression);
        } else {
            probes.push(LabelledProbe {
                probe: probe_of(&impression),
                identity: Some(identity),
            });
        }
    }
    (gallery, probes)
}

/// Scores `probes` against `gallery` by `rule` and reports the figures; with no
/// `threshold`, the one for `target_far` on these impostor probes.
pub fn evaluate(
    gallery: &Gallery,
    probes: &[LabelledProbe],
    rule: &Rule,
    threshold: Option<f32>,
    target_far: f64,
) -> OpenSetReport {
    let mut comparisons = Comparisons::default();
    comparisons.add(
        &fingerprint_common::matcher::Index::new(gallery),
        templates(gallery),
        rule,
        probes,
    );
    comparisons.scores(rule).report(threshold, target_far)
}

/// Impressions in a gallery.
pub fn templates(gallery: &Gallery) -> usize {
    gallery.identities.values().map(Vec::len).sum()
}

/// The calibration a report implies, for the manifest, with what its scans were and whether
/// its enrolled scans kept turned templates.
pub fn calibration(
    report: &OpenSetReport,
    target_far: f64,
    prints: Prints,
    enrolment_turns: bool,
) -> Calibration {
    Calibration {
        similarity_threshold: report.threshold,
        target_far,
        far: report.false_accept_rate,
        frr: 1.0 - report.true_accept_rate,
        genuine_scores: report.genuine_probes,
        impostor_scores: report.impostor_probes,
        prints: Some(prints),
        enrolment_turns,
    }
}

/// Whether `samples` come from `trainer synth` (its output folders hold [`SYNTH_MARKER`]).
pub fn prints_of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Prints {
    let mut dirs = std::collections::BTreeSet::new();
    for s in samples {
        if let Some(dir) = s.path.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    let synthetic = dirs
        .iter()
        .filter(|d| d.join(crate::synth::SYNTH_MARKER).is_file())
        .count();
    match synthetic {
        0 => Prints::Real,
        n if n == dirs.len() => Prints::Synthetic,
        _ => Prints::Mixed,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_turns_go_to_the_enrolled_impressions_only() {
        let sample = |identity: usize, n: usize| Sample {
            path: format!("{identity}_{n}.png").into(),
            identity,
        };
        let samples = vec![
            sample(0, 1),
            sample(0, 2),
            sample(1, 1),
            sample(0, 3),
            sample(0, 4),
        ];
        let mut impressions: Vec<(String, Impression)> = samples
            .iter()
            .map(|s| (s.identity.to_string(), embedding_only(vec![1.0, 0.0])))
            .collect();
        // The second scan of finger 0 cannot be enrolled (as a scan without minutiae).
        impressions[1].1.embedding = None;
        let mut calls = Vec::new();
        add_enrolment_turns(
            &samples,
            &mut impressions,
            2,
            |i| i.embedding.is_some(),
            |scans, degrees| {
                calls.push((scans.len(), degrees));
                Ok(scans.iter().map(|_| vec![0.0, degrees]).collect())
            },
        )
        .expect("turns");
        assert_eq!(calls.len(), ENROLMENT_TURNS_DEGREES.len());
        assert!(calls.iter().all(|&(n, _)| n == 3));
        // Finger 0 enrols scans 1 and 3 (two enrollable); scan 4 is a probe.
        let counts: Vec<usize> = impressions.iter().map(|(_, i)| i.turned.len()).collect();
        assert_eq!(counts, vec![4, 0, 4, 4, 0]);
        assert_eq!(
            impressions[3].1.turned[1],
            vec![0.0, ENROLMENT_TURNS_DEGREES[1]]
        );
    }

    #[test]
    fn galleries_take_the_first_impressions_and_probe_with_the_rest() {
        let unit = |a: f32| embedding_only(vec![a.cos(), a.sin()]);
        let items = vec![
            ("a".to_string(), unit(0.0)),
            ("a".to_string(), unit(0.1)),
            ("b".to_string(), unit(1.5)),
            ("a".to_string(), unit(0.05)),
        ];
        let (gallery, probes) = enrol_first(items, 2);
        assert_eq!(gallery.identities["a"].len(), 2);
        assert_eq!(gallery.identities["b"].len(), 1);
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].identity.as_deref(), Some("a"));
        let report = evaluate(
            &gallery,
            &probes,
            &rule(MatcherMode::Network, Default::default()),
            None,
            0.0,
        );
        assert_eq!(report.rank1, 1.0);
        assert_eq!(report.templates, 3);
    }
}
