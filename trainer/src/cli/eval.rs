use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fingerprint_common::gallery::Impression;
use fingerprint_common::matcher::{
    minutiae_comparisons, shipped_fused_threshold, shipped_minutiae_threshold, Fusion, MatcherMode,
    Probe, SHIPPED_FUSION,
};
use fingerprint_common::minutiae;
use fingerprint_common::ScanLimits;
use fingerprint_models::device_from_name;
use rayon::prelude::*;
use trainer::dataset::{Dataset, Layout, Sample};
use trainer::evaluate::{evaluate_probabilities, predict_embeddings, predict_probabilities};
use trainer::loader::ImageCache;
use trainer::model::LoadedModel;
use trainer::openset::{
    add_enrolment_turns, draw_det, enrol_first, evaluate, first_per_identity, fit_door, probe_of,
    rule, LabelledProbe, OpenSetReport,
};
use trainer::run::RunDir;

use super::DataArgs;

/// Which checkpoint of a run (`--checkpoint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CheckpointArg {
    /// The best epoch by validation accuracy.
    Best,
    /// The last epoch trained.
    Last,
}

impl CheckpointArg {
    fn file_name(self) -> &'static str {
        match self {
            CheckpointArg::Best => "best.safetensors",
            CheckpointArg::Last => "last.safetensors",
        }
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder: its best model, and its test split unless --data is given.
    #[arg(long)]
    run: Option<PathBuf>,
    /// An exported model file to evaluate instead of the run's checkpoint.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Which checkpoint of the run: best or last.
    #[arg(long, value_enum, default_value_t = CheckpointArg::Best)]
    checkpoint: CheckpointArg,
    /// Evaluate on these scans instead of the run's test split; their identities must be
    /// among the model's.
    #[command(flatten)]
    data: Option<DataArgs>,
    /// Print the evaluation as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Open-set evaluation as a door would see it: fingers enrolled into a gallery from
    /// --enroll-impressions scans each, their other scans identified, never-enrolled
    /// fingers' scans (--strangers) to be denied. Without --enroll-data, the run's split:
    /// enrol from its training scans, probe with its test scans, strangers are its held-out
    /// impostor fingers.
    #[arg(long)]
    open_set: bool,
    /// Fingers to enrol (a dataset root; FVC/PolyU names or a folder per finger).
    #[arg(long, requires = "open_set")]
    enroll_data: Option<PathBuf>,
    /// Fingers never enrolled (a dataset root).
    #[arg(long, requires = "open_set")]
    strangers: Option<PathBuf>,
    /// Scans per finger enrolled: the first ones by file name of --enroll-data, or of the
    /// run's training scans (at most all of them; its test scans are always probes).
    #[arg(long, default_value_t = 3)]
    enroll_impressions: usize,
    /// Which matcher scores the open set, as fingerprintd's [matcher] mode: the network's
    /// templates (cosine), minutiae (NIST's MINDTCT, compared by Minutia Cylinder-Code; no model needed), or both
    /// fused (a logistic regression: the shipped one, or fitted with --calibrate-strangers).
    #[arg(long, value_enum, default_value = "network", requires = "open_set")]
    matcher: MatcherMode,
    /// Resolution of the scans, where known: minutiae are found at 500 dpi (others are
    /// resampled; unset: taken as 500), and ridge-scale inputs cut a window of fixed physical
    /// size (unset: sized by each scan's measured ridge period), as fingerprintd's
    /// [matcher] sensor_dpi.
    #[arg(long)]
    sensor_dpi: Option<u32>,
    /// Feed the network a window of this many scan pixels around the print instead of the
    /// model's own resize policy (e.g. real 500 dpi scans to a model trained on 128 px
    /// synthetic scans: ridges then arrive at the scale it learned).
    #[arg(long, conflicts_with = "ridge_period")]
    window: Option<u32>,
    /// Feed the network each scan rescaled so that its ridges are this many input pixels
    /// apart (`ridge-scale`: its own period measured) instead of the model's resize policy.
    #[arg(long)]
    ridge_period: Option<f32>,
    /// Feed the network square inputs of this side instead of the model's own (with
    /// ridge-scale inputs a larger side shows more of the print at the same ridge scale).
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=1024))]
    size: Option<u32>,
    /// Calibrate as `fingerprintd calibrate` would before evaluating: the threshold (and for
    /// the fused matcher the fusion) fitted on the enrolled gallery and these scans of other
    /// never-enrolled fingers (a dataset root; keep them apart from --strangers).
    #[arg(long, requires = "open_set")]
    calibrate_strangers: Option<PathBuf>,
    /// Decision threshold in the matcher's score (cosine, minutiae score 0-100 or fused log-odds);
    /// default: --calibrate-strangers' if given, else the network's calibration (network) or
    /// the shipped threshold (minutiae, fused), else the one reaching --target-far on these
    /// strangers.
    #[arg(long)]
    threshold: Option<f32>,
    #[arg(long, default_value_t = 0.001)]
    target_far: f64,
    /// Write the DET curve here (PNG).
    #[arg(long)]
    det: Option<PathBuf>,
    /// Enrol each scan's network template alone, without those of the scan turned by
    /// -20, -10, 10 and 20 degrees that `fingerprintd enroll` keeps beside it (to compare).
    #[arg(long, requires = "open_set")]
    no_enrolment_turns: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    let run = args.run.clone().map(RunDir);
    if args.open_set
        && args.matcher == MatcherMode::Minutiae
        && args.model.is_none()
        && run.is_none()
    {
        return open_set(&args, None, None, &device);
    }
    let mut loaded = LoadedModel::choose(
        args.model.as_deref(),
        run.as_ref(),
        &device,
        args.checkpoint.file_name(),
    )?;
    if let Some(side) = args.window {
        loaded.preprocessing.resize = fingerprint_common::ResizePolicy::Window { side };
    }
    if let Some(period) = args.ridge_period {
        loaded.preprocessing.resize = fingerprint_common::ResizePolicy::RidgeScale { period };
    }
    if let Some(size) = args.size {
        loaded.preprocessing.size = size;
    }
    if args.open_set {
        return open_set(&args, Some(&loaded), run.as_ref(), &device);
    }
    let (classifier, identities, pre, arch) = (
        loaded.classifier(),
        &loaded.labels,
        &loaded.preprocessing,
        &loaded.description,
    );
    let (samples, source) = match (&args.data, &run) {
        (Some(data), _) => {
            let dataset = data.load()?;
            let mut samples = Vec::new();
            let mut unknown = Vec::new();
            for sample in &dataset.samples {
                let name = &dataset.identities[sample.identity];
                match identities.iter().position(|i| i == name) {
                    Some(identity) => samples.push(Sample {
                        path: sample.path.clone(),
                        identity,
                    }),
                    None => unknown.push(name.clone()),
                }
            }
            unknown.dedup();
            if !unknown.is_empty() {
                bail!(
                    "{} identities of the dataset are unknown to the model (e.g. {}); evaluate on enrolled fingers only",
                    unknown.len(),
                    unknown.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                );
            }
            (samples, "the given scans".to_string())
        }
        (None, Some(run)) => (
            run.split()?.test,
            format!("the test split of {}", run.0.display()),
        ),
        (None, None) => {
            bail!("an exported model needs --data DIR, or --run RUN for its test split")
        }
    };
    let cache = ImageCache::load(
        &samples,
        pre,
        args.sensor_dpi,
        &ScanLimits::default(),
        || {},
    )
    .context("reading scans")?;
    let probs = predict_probabilities(&classifier, &cache, pre, &device, args.batch_size)?;
    let evaluation = evaluate_probabilities(&probs, &cache, identities)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
        return Ok(());
    }
    println!(
        "{arch} on {source}: top-1 {:.2}%, top-5 {:.2}% over {} scans",
        100.0 * evaluation.top1,
        100.0 * evaluation.top5,
        evaluation.scans
    );
    for m in &evaluation.misidentified {
        println!(
            "  {}: {} taken for {} (p = {:.3})",
            m.path.display(),
            m.identity,
            m.predicted,
            m.probability
        );
    }
    Ok(())
}

/// Impressions of `samples` as the matcher needs them, named by identity: the network's
/// templates (with a model), minutiae (a scan with too few gets none: as a probe it cannot be
/// matched, as an enrolment it is skipped, and the count is printed). The first `enrolled`
/// scans of each identity that can be enrolled also get the templates of their turned scans,
/// as `fingerprintd enroll` keeps them (unless --no-enrolment-turns).
fn impressions(
    loaded: Option<&LoadedModel>,
    mode: MatcherMode,
    samples: &[Sample],
    names: &[String],
    enrolled: usize,
    args: &EvalArgs,
    device: &candle_core::Device,
) -> Result<Vec<(String, Impression)>> {
    let limits = ScanLimits::default();
    let embeddings: Vec<Option<Vec<f32>>> = match (loaded, mode.needs_network()) {
        (Some(loaded), true) => {
            let pre = &loaded.preprocessing;
            let cache = ImageCache::load(samples, pre, args.sensor_dpi, &limits, || {})
                .context("reading scans")?;
            predict_embeddings(
                &loaded.classifier(),
                &cache,
                &loaded.preprocessing,
                device,
                args.batch_size,
            )?
            .into_iter()
            .map(Some)
            .collect()
        }
        (None, true) => bail!("the {mode} matcher needs --model or --run"),
        (_, false) => vec![None; samples.len()],
    };
    let minutiae: Vec<Option<minutiae::Template>> = if mode.needs_minutiae() {
        samples
            .par_iter()
            .map(|s| {
                let image = fingerprint_common::read_scan(&s.path, &limits)?;
                Ok(minutiae::extract(&image, minutiae::scan_dpi(args.sensor_dpi)).ok())
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        vec![None; samples.len()]
    };
    let missing = minutiae.iter().filter(|m| m.is_none()).count();
    if mode.needs_minutiae() && missing > 0 {
        eprintln!(
            "{missing} of {} scans have too few minutiae to be matched by minutiae",
            samples.len()
        );
    }
    let mut impressions: Vec<(String, Impression)> = samples
        .iter()
        .zip(embeddings.into_iter().zip(minutiae))
        .map(|(s, (embedding, minutiae))| {
            (
                names[s.identity].clone(),
                Impression {
                    embedding,
                    minutiae,
                    turned: Vec::new(),
                },
            )
        })
        .collect();
    if let (Some(loaded), true, false) = (loaded, mode.needs_network(), args.no_enrolment_turns) {
        let pre = &loaded.preprocessing;
        add_enrolment_turns(
            samples,
            &mut impressions,
            enrolled,
            |i| !mode.needs_minutiae() || i.minutiae.is_some(),
            |scans, degrees| {
                let cache =
                    ImageCache::load_turned(scans, pre, args.sensor_dpi, &limits, degrees, || {})
                        .context("reading scans")?;
                predict_embeddings(&loaded.classifier(), &cache, pre, device, args.batch_size)
            },
        )?;
    }
    Ok(impressions)
}

fn load_root(root: &std::path::Path) -> Result<Dataset> {
    Dataset::load(&[root.to_path_buf()], &Layout::Auto)
        .with_context(|| format!("reading {}", root.display()))
}

/// The open-set figures with what they were measured with.
#[derive(serde::Serialize)]
struct OpenSetOutput {
    matcher: MatcherMode,
    fusion: Option<Fusion>,
    threshold_source: String,
    #[serde(flatten)]
    report: OpenSetReport,
}

fn open_set(
    args: &EvalArgs,
    loaded: Option<&LoadedModel>,
    run: Option<&RunDir>,
    device: &candle_core::Device,
) -> Result<()> {
    let mode = args.matcher;
    let described = loaded.map_or("minutiae (no model)".to_string(), |l| l.description.clone());
    // `enrolled`: how many scans of each identity may be enrolled (they get turned templates).
    let of = |samples: &[Sample], names: &[String], enrolled: usize| {
        impressions(loaded, mode, samples, names, enrolled, args, device)
    };
    // `enrol`: candidates for the gallery, the first --enroll-impressions of each identity
    // (the rest are probes); `probes_of_enrolled`: scans that are probes whatever the count.
    let (enrol, probes_of_enrolled, strangers, source) = match (&args.enroll_data, run) {
        (Some(root), _) => {
            let d = load_root(root)?;
            let enrol = of(&d.samples, &d.identities, args.enroll_impressions)?;
            let strangers = match &args.strangers {
                Some(root) => {
                    let s = load_root(root)?;
                    of(&s.samples, &s.identities, 0)?
                }
                None => Vec::new(),
            };
            (
                enrol,
                Vec::new(),
                strangers,
                format!("fingers of {}", root.display()),
            )
        }
        (None, Some(run)) => {
            let split = run.split()?;
            // Enrol from training scans, probe with test scans: a test scan is never enrolled,
            // even where a finger has fewer usable training scans than asked.
            let templates = first_per_identity(&split.enrollable_train(), args.enroll_impressions);
            let enrol = of(&templates, &split.identities, args.enroll_impressions)?;
            let tests = of(&split.test, &split.identities, 0)?;
            let strangers = of(&split.impostors, &split.impostor_names, 0)?;
            (
                enrol,
                tests,
                strangers,
                format!("the split of {}", run.0.display()),
            )
        }
        (None, None) => bail!("--open-set needs --enroll-data DIR, or --run RUN"),
    };
    // A scan without minutiae is not enrolled (the daemon refuses it); as a probe it stays,
    // and can match nothing.
    let enrol: Vec<(String, Impression)> = {
        let mut taken = std::collections::BTreeMap::<String, usize>::new();
        enrol
            .into_iter()
            .filter(|(name, i)| {
                let n = taken.entry(name.clone()).or_default();
                if *n >= args.enroll_impressions {
                    return true;
                }
                let usable = !mode.needs_minutiae() || i.minutiae.is_some();
                *n += usize::from(usable);
                usable
            })
            .collect()
    };
    let (gallery, mut probes) = enrol_first(enrol, args.enroll_impressions);
    probes.extend(
        probes_of_enrolled
            .iter()
            .map(|(identity, i)| LabelledProbe {
                probe: probe_of(i),
                identity: Some(identity.clone()),
            }),
    );
    probes.extend(strangers.iter().map(|(_, i)| LabelledProbe {
        probe: probe_of(i),
        identity: None,
    }));
    let door = match &args.calibrate_strangers {
        Some(root) => {
            let d = load_root(root)?;
            let calibration: Vec<Probe> = of(&d.samples, &d.identities, 0)?
                .iter()
                .filter(|(_, i)| !mode.needs_minutiae() || i.minutiae.is_some())
                .map(|(_, i)| probe_of(i))
                .collect();
            let fit = fit_door(&gallery, mode, &calibration, args.target_far)
                .context("nothing to calibrate on")?;
            Some((fit, root.display().to_string()))
        }
        None => None,
    };
    let fusion = door
        .as_ref()
        .and_then(|(f, _)| f.fusion)
        .unwrap_or(SHIPPED_FUSION);
    let (threshold, threshold_source) = match (args.threshold, &door, mode) {
        (Some(t), _, _) => (Some(t), "given".to_string()),
        (None, Some((fit, root)), _) => (
            Some(fit.threshold),
            format!(
                "calibrated on {} scans of {root}, set by {}",
                fit.stranger_scans, fit.basis
            ),
        ),
        (None, None, MatcherMode::Network) => match loaded.and_then(|l| l.similarity_threshold) {
            Some(t) => (Some(t), "the model's calibration".to_string()),
            None => (None, "for the target FAR on these strangers".to_string()),
        },
        // Every identity compared, as this evaluation's rule does.
        (None, None, MatcherMode::Minutiae) => (
            Some(shipped_minutiae_threshold(minutiae_comparisons(
                mode,
                &gallery,
                usize::MAX,
            ))),
            "shipped (real impostor pairs)".to_string(),
        ),
        (None, None, MatcherMode::Fused) => (
            Some(shipped_fused_threshold(minutiae_comparisons(
                mode,
                &gallery,
                usize::MAX,
            ))),
            "shipped (real impostor pairs; the network gets no weight)".to_string(),
        ),
    };
    let report = evaluate(
        &gallery,
        &probes,
        &rule(mode, fusion),
        threshold,
        args.target_far,
    );
    if let Some(path) = &args.det {
        draw_det(&report, &format!("{described}, {mode}"), path)?;
    }
    if args.json {
        let output = OpenSetOutput {
            matcher: mode,
            fusion: (mode == MatcherMode::Fused).then_some(fusion),
            threshold_source,
            report,
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(());
    }
    // What was enrolled, not what was asked: a finger may have fewer usable scans.
    let counts = gallery.identities.values().map(Vec::len);
    let (fewest, most) = (counts.clone().min().unwrap_or(0), counts.max().unwrap_or(0));
    let scans_each = if fewest == most {
        most.to_string()
    } else {
        format!("{fewest}-{most}")
    };
    println!(
        "{described}, {mode} matcher, on {source}: {} fingers enrolled from {scans_each} scans each; {} genuine and {} stranger probes",
        report.enrolled_identities,
        report.genuine_probes,
        report.impostor_probes
    );
    if mode == MatcherMode::Fused {
        println!(
            "fusion: log-odds = {:.3} + {:.3} x cosine + {:.3} x ln(1 + minutiae)",
            fusion.bias, fusion.network_weight, fusion.minutiae_weight
        );
    }
    println!(
        "identification: rank-1 {:.2}%\nverification: EER {:.2}% (at {:.4}), FNMR {:.2}% at FMR 1%, {:.2}% at FMR 0.1% ({} mated, {} non-mated scores)",
        100.0 * report.rank1,
        100.0 * report.eer,
        report.eer_threshold,
        100.0 * report.fnmr_at_fmr_1pct,
        100.0 * report.fnmr_at_fmr_0_1pct,
        report.mated_scores,
        report.non_mated_scores
    );
    println!(
        "open set at threshold {:.4} ({threshold_source}): true accepts {:.2}%, misidentified {:.2}%, false accepts {} of {} strangers ({:.2}%)",
        report.threshold,
        100.0 * report.true_accept_rate,
        100.0 * report.misidentification_rate,
        report.false_accepts,
        report.impostor_probes,
        100.0 * report.false_accept_rate
    );
    Ok(())
}
