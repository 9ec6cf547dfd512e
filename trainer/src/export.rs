//! `trainer export`: a run's best model as an exported file (see `docs/model-format.md`), with
//! the accuracy of every format measured on the run's test split; or as ONNX.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use fingerprint_common::ScanLimits;
use fingerprint_models::export::{
    fold_batch_norm, write_exported, Calibration, ExportAccuracy, ExportedModel, Manifest, Network,
    Quantization,
};
use fingerprint_models::onnx::write_onnx;
use fingerprint_models::Arch;
use serde::{Deserialize, Serialize};

use crate::loader::{for_each_plain_batch, ImageCache};
use crate::model::{build_model, load_run_model};
use crate::run::{write_json, RunDir};

/// One format's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FormatFigures {
    pub quantization: Quantization,
    pub top1: f64,
    pub agreement_with_f32: f64,
    pub file_bytes: u64,
}

/// What `trainer export` measured (also written as `export.json` in the run folder).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub test_scans: usize,
    pub formats: Vec<FormatFigures>,
    /// The open-set calibration written into the model, when impostors were held out.
    pub calibration: Option<Calibration>,
}

/// Top-1 class of every scan of `cache` under an exported network.
pub fn top1_predictions(
    network: &Network,
    cache: &ImageCache,
    pre: &fingerprint_common::Preprocessing,
    device: &Device,
) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(cache.len());
    for_each_plain_batch(cache, pre, device, 16, |x| {
        out.extend(network.forward(&x)?.argmax(1)?.to_vec1::<u32>()?);
        Ok(())
    })?;
    Ok(out)
}

/// Calibrates the open-set threshold of `network` on a gallery like a door's: the training
/// identities, each enrolled from its first training scans (as many as the daemon requires),
/// and, in two folds, half of the held-out identities enrolled the same way (people enrolled
/// after training, whom the network never saw) while the other half's scans are the
/// never-enrolled probes. Genuine probes: the training identities' validation scans and the
/// enrolled held-out identities' other scans. Strangers score higher against templates of
/// fingers the network never learnt than against those it did, so a threshold set with
/// trained fingers alone lets more of them in at the door. With a single held-out identity
/// (or none with scans to spare) it is only a never-enrolled probe. A model trained with a
/// background class is for its trained fingers only (it learnt to put every other finger in
/// the background), so there the held-out identities are never-enrolled probes only.
pub fn calibrate(
    network: &Network,
    split: &crate::dataset::Split,
    pre: &fingerprint_common::Preprocessing,
    sensor_dpi: Option<u32>,
    target_far: f64,
    device: &Device,
) -> Result<Option<(Calibration, crate::openset::OpenSetReport)>> {
    use crate::openset::{
        add_enrolment_turns, calibration, embedding_only, enrol_first, first_per_identity,
        prints_of, rule, templates, Comparisons, LabelledProbe,
    };
    use fingerprint_common::gallery::MIN_IMPRESSIONS;
    use fingerprint_common::matcher::{Index, MatcherMode, Probe};
    if split.impostors.is_empty() {
        return Ok(None);
    }
    let limits = ScanLimits::default();
    let classifier = crate::model::Classifier::Exported(network);
    let embed = |samples: &[crate::dataset::Sample]| -> Result<Vec<Vec<f32>>> {
        let cache = ImageCache::load(samples, pre, sensor_dpi, &limits, || {})?;
        crate::evaluate::predict_embeddings(&classifier, &cache, pre, device, 16)
    };
    let named = |samples: &[crate::dataset::Sample], names: &[String], e: Vec<Vec<f32>>| {
        samples
            .iter()
            .zip(e)
            .map(|(s, e)| (names[s.identity].clone(), embedding_only(e)))
            .collect::<Vec<_>>()
    };
    let network_probe = |embedding: Option<Vec<f32>>, identity: Option<String>| LabelledProbe {
        probe: Probe {
            embedding,
            minutiae: None,
        },
        identity,
    };
    // Enrolled scans keep their turned scans' templates too, as `fingerprintd enroll` does:
    // the threshold is set on the scores a door will see.
    let embed_turned = |samples: &[crate::dataset::Sample], degrees: f32| {
        let cache = ImageCache::load_turned(samples, pre, sensor_dpi, &limits, degrees, || {})?;
        crate::evaluate::predict_embeddings(&classifier, &cache, pre, device, 16)
    };
    let enrolled = first_per_identity(&split.enrollable_train(), MIN_IMPRESSIONS);
    let mut enrolled_impressions = named(&enrolled, &split.identities, embed(&enrolled)?);
    add_enrolment_turns(
        &enrolled,
        &mut enrolled_impressions,
        MIN_IMPRESSIONS,
        |_| true,
        embed_turned,
    )?;
    let (trained_gallery, _) = enrol_first(enrolled_impressions, MIN_IMPRESSIONS);
    let val_probes: Vec<LabelledProbe> = named(&split.val, &split.identities, embed(&split.val)?)
        .into_iter()
        .map(|(name, impression)| network_probe(impression.embedding, Some(name)))
        .collect();
    // Held-out scans by identity, in split order (so the first ones are enrolled).
    let mut held_out = named(
        &split.impostors,
        &split.impostor_names,
        embed(&split.impostors)?,
    );
    add_enrolment_turns(
        &split.impostors,
        &mut held_out,
        MIN_IMPRESSIONS,
        |_| true,
        embed_turned,
    )?;
    let mut scans_of = vec![0usize; split.impostor_names.len()];
    split
        .impostors
        .iter()
        .for_each(|s| scans_of[s.identity] += 1);
    // Identities that can be enrolled and still leave a probe; alternately in fold 0 and 1.
    let enrollable: Vec<&String> = split
        .impostor_names
        .iter()
        .zip(&scans_of)
        .filter(|(_, &n)| n > MIN_IMPRESSIONS)
        .map(|(name, _)| name)
        .collect();
    // The held-out identities each fold enrols (none: all are never-enrolled probes).
    let folds: Vec<Vec<&String>> = if split.impostor_names.len() >= 2
        && !enrollable.is_empty()
        && split.background().is_none()
    {
        (0..2)
            .map(|fold| enrollable.iter().skip(fold).step_by(2).copied().collect())
            .collect()
    } else {
        vec![Vec::new()]
    };
    let network = rule(MatcherMode::Network, Default::default());
    let mut comparisons = Comparisons::default();
    for (fold, enrolled_here) in folds.iter().enumerate() {
        let (extra, mut probes) = enrol_first(
            held_out
                .iter()
                .filter(|(name, _)| enrolled_here.contains(&name))
                .cloned()
                .collect(),
            MIN_IMPRESSIONS,
        );
        let mut gallery = trained_gallery.clone();
        gallery.identities.extend(extra.identities);
        probes.extend(
            held_out
                .iter()
                .filter(|(name, _)| !enrolled_here.contains(&name))
                .map(|(_, impression)| network_probe(impression.embedding.clone(), None)),
        );
        let index = Index::new(&gallery);
        if fold == 0 {
            comparisons.add(&index, templates(&gallery), &network, &val_probes);
        }
        comparisons.add(&index, templates(&gallery), &network, &probes);
    }
    let report = comparisons.scores(&network).report(None, target_far);
    let prints = prints_of(split.train.iter().chain(&split.impostors));
    // The enrolled scans kept their turned templates above, as a door's do.
    Ok(Some((
        calibration(&report, target_far, prints, true),
        report,
    )))
}

/// Exports the run's best model as `quantization` to `out`, measuring f32, f16 and int8 on
/// the test split first (each through the real file reader) so the file records its accuracy,
/// and calibrating the open-set threshold for `target_far` when the run held out impostors.
pub fn export_run(
    run: &RunDir,
    quantization: Quantization,
    out: &Path,
    target_far: f64,
    device: &Device,
) -> Result<ExportSummary> {
    let (info, model) = load_run_model(run, device, "best.safetensors")?;
    let weights = fold_batch_norm(&model)?;
    let split = run.split()?;
    let pre = &info.config.preprocessing;
    let sensor_dpi = info.config.sensor_dpi;
    let cache = ImageCache::load(&split.test, pre, sensor_dpi, &ScanLimits::default(), || {})
        .context("reading the test split")?;
    let manifest = Manifest::new(
        info.config.arch,
        info.identities.clone(),
        pre.clone(),
        quantization,
        format!("trainer {}", env!("CARGO_PKG_VERSION")),
    );
    let scratch = tempfile::tempdir().context("creating a temporary folder")?;
    let mut figures = Vec::new();
    let mut f32_predictions = Vec::new();
    let mut calibration = None;
    for q in [Quantization::F32, Quantization::F16, Quantization::Int8] {
        let path = scratch.path().join(format!("{q}.safetensors"));
        write_exported(
            &path,
            &weights,
            Manifest {
                quantization: q,
                ..manifest.clone()
            },
        )?;
        let exported = ExportedModel::open(&path, device)?;
        if q == quantization {
            calibration = calibrate(
                &exported.network,
                &split,
                pre,
                sensor_dpi,
                target_far,
                device,
            )?
            .map(|(c, _)| c);
        }
        let predictions = top1_predictions(&exported.network, &cache, pre, device)?;
        if q == Quantization::F32 {
            f32_predictions = predictions.clone();
        }
        let n = cache.len().max(1) as f64;
        let correct = predictions
            .iter()
            .zip(&cache.labels)
            .filter(|(p, l)| p == l)
            .count();
        let agree = predictions
            .iter()
            .zip(&f32_predictions)
            .filter(|(p, f)| p == f)
            .count();
        figures.push(FormatFigures {
            quantization: q,
            top1: correct as f64 / n,
            agreement_with_f32: agree as f64 / n,
            file_bytes: exported.file_size,
        });
    }
    let chosen = figures
        .iter()
        .find(|f| f.quantization == quantization)
        .context("format not measured")?;
    let accuracy = ExportAccuracy {
        test_scans: cache.len(),
        top1: chosen.top1,
        top1_f32: figures[0].top1,
        agreement_with_f32: chosen.agreement_with_f32,
    };
    write_exported(
        out,
        &weights,
        Manifest {
            accuracy: Some(accuracy),
            calibration: calibration.clone(),
            ..manifest
        },
    )?;
    // The file as the daemon will read it.
    ExportedModel::open(out, device).with_context(|| format!("re-reading {}", out.display()))?;
    let summary = ExportSummary {
        out: out.to_path_buf(),
        test_scans: cache.len(),
        formats: figures,
        calibration,
    };
    write_json(&run.file("export.json"), &summary)?;
    Ok(summary)
}

/// The summary as a table for the terminal.
pub fn print_summary(summary: &ExportSummary) {
    println!(
        "format  top-1 (test, {} scans)  agrees with f32  file size",
        summary.test_scans
    );
    for f in &summary.formats {
        println!(
            "{:<7} {:>22.2}% {:>15.2}% {:>8.1} MB",
            f.quantization.to_string(),
            100.0 * f.top1,
            100.0 * f.agreement_with_f32,
            f.file_bytes as f64 / 1e6
        );
    }
    match &summary.calibration {
        Some(c) => println!(
            "open-set threshold {:.4} (cosine) for FAR {}: measured FAR {:.4} on {} impostor scans, FRR {:.4} on {} genuine scans",
            c.similarity_threshold, c.target_far, c.far, c.impostor_scores, c.frr, c.genuine_scores
        ),
        None => println!(
            "no open-set calibration: the run held out no impostor fingers (trainer train --impostors N)"
        ),
    }
    println!("wrote {}", summary.out.display());
}

/// What `trainer export --export` writes: an exported model in one of its weight formats, or
/// the same network as ONNX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Model(Quantization),
    Onnx,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "onnx" => Ok(Self::Onnx),
            other => other
                .parse()
                .map(Self::Model)
                .map_err(|_| format!("unknown format '{other}' (expected int8, f16, f32 or onnx)")),
        }
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Model(q) => write!(f, "{q}"),
            Self::Onnx => f.write_str("onnx"),
        }
    }
}

/// Writes `weights` as ONNX with the labels and preprocessing as metadata, for whoever runs
/// it.
fn write_labelled_onnx(
    out: &Path,
    arch: Arch,
    weights: &fingerprint_models::export::FoldedWeights,
    labels: &[String],
    pre: &fingerprint_common::Preprocessing,
) -> Result<()> {
    let metadata = BTreeMap::from([
        ("labels".to_string(), serde_json::to_string(labels)?),
        ("preprocessing".to_string(), serde_json::to_string(pre)?),
    ]);
    write_onnx(out, arch, weights, pre.size as usize, &metadata)?;
    Ok(())
}

/// The run's best model as ONNX (f32, batch norm folded: the network every exported format
/// of the run holds).
pub fn export_run_onnx(run: &RunDir, out: &Path, device: &Device) -> Result<()> {
    let (info, model) = load_run_model(run, device, "best.safetensors")?;
    write_labelled_onnx(
        out,
        info.config.arch,
        &fold_batch_norm(&model)?,
        &info.identities,
        &info.config.preprocessing,
    )
}

/// A network that no run trained: seeded initialisation, or a pretrained checkpoint's weights
/// (its head kept when it has `classes` outputs). For benchmarks and for comparing runtimes on
/// the same weights; labels are `class-<i>`.
pub struct Untrained<'a> {
    pub arch: Arch,
    pub classes: usize,
    pub size: u32,
    pub pretrained: Option<&'a Path>,
    pub seed: u64,
}

pub fn export_untrained(spec: &Untrained, format: ExportFormat, out: &Path) -> Result<()> {
    let (_, model) = build_model(
        spec.arch,
        spec.classes,
        &Device::Cpu,
        spec.seed,
        spec.pretrained,
    )?;
    let weights = fold_batch_norm(&model)?;
    let labels: Vec<String> = (0..spec.classes).map(|i| format!("class-{i}")).collect();
    let pre = fingerprint_common::Preprocessing::imagenet(spec.size);
    match format {
        ExportFormat::Onnx => write_labelled_onnx(out, spec.arch, &weights, &labels, &pre)?,
        ExportFormat::Model(quantization) => {
            write_exported(
                out,
                &weights,
                Manifest::new(
                    spec.arch,
                    labels,
                    pre,
                    quantization,
                    format!("trainer {} (untrained)", env!("CARGO_PKG_VERSION")),
                ),
            )?;
        }
    }
    Ok(())
}
