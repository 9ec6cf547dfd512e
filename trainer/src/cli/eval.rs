use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fingerprint_common::ScanLimits;
use fingerprint_models::device_from_name;
use trainer::dataset::{Dataset, Layout, Sample};
use trainer::loader::ImageCache;
use trainer::openset::{draw_det, enrol_first, evaluate, first_per_identity, Probe};
use trainer::train::{
    evaluate_probabilities, predict_embeddings, predict_probabilities, LoadedModel, RunDir,
};

use super::DataArgs;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder: its best model, and its test split unless --data is given.
    #[arg(long, required_unless_present = "model")]
    run: Option<PathBuf>,
    /// An exported model file to evaluate instead of the run's checkpoint.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Which checkpoint of the run: best or last.
    #[arg(long, default_value = "best", value_parser = ["best", "last"])]
    checkpoint: String,
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
    /// Scans per finger enrolled (the first ones by file name).
    #[arg(long, default_value_t = 3)]
    enroll_impressions: usize,
    /// Decision threshold (cosine similarity); default: the model's calibration, else the
    /// one reaching --target-far on these strangers.
    #[arg(long)]
    threshold: Option<f32>,
    #[arg(long, default_value_t = 0.001)]
    target_far: f64,
    /// Write the DET curve here (PNG).
    #[arg(long)]
    det: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    let run = args.run.clone().map(RunDir);
    let loaded = LoadedModel::choose(
        args.model.as_deref(),
        run.as_ref(),
        &device,
        &format!("{}.safetensors", args.checkpoint),
    )?;
    if args.open_set {
        return open_set(&args, &loaded, run.as_ref(), &device);
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
    let cache =
        ImageCache::load(&samples, pre, &ScanLimits::default(), || {}).context("reading scans")?;
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

/// Embeddings of `samples`, named by identity.
fn embed_named(
    loaded: &LoadedModel,
    samples: &[Sample],
    names: &[String],
    device: &candle_core::Device,
    batch_size: usize,
) -> Result<Vec<(String, Vec<f32>)>> {
    let cache = ImageCache::load(
        samples,
        &loaded.preprocessing,
        &ScanLimits::default(),
        || {},
    )
    .context("reading scans")?;
    let e = predict_embeddings(
        &loaded.classifier(),
        &cache,
        &loaded.preprocessing,
        device,
        batch_size,
    )?;
    Ok(samples
        .iter()
        .zip(e)
        .map(|(s, e)| (names[s.identity].clone(), e))
        .collect())
}

fn load_root(root: &std::path::Path) -> Result<Dataset> {
    Dataset::load(&[root.to_path_buf()], &Layout::Auto)
        .with_context(|| format!("reading {}", root.display()))
}

fn open_set(
    args: &EvalArgs,
    loaded: &LoadedModel,
    run: Option<&RunDir>,
    device: &candle_core::Device,
) -> Result<()> {
    let b = args.batch_size;
    let (enrol, strangers, source) = match (&args.enroll_data, run) {
        (Some(root), _) => {
            let d = load_root(root)?;
            let enrol = embed_named(loaded, &d.samples, &d.identities, device, b)?;
            let strangers = match &args.strangers {
                Some(root) => {
                    let s = load_root(root)?;
                    embed_named(loaded, &s.samples, &s.identities, device, b)?
                }
                None => Vec::new(),
            };
            (enrol, strangers, format!("fingers of {}", root.display()))
        }
        (None, Some(run)) => {
            let split = run.split()?;
            // Enrol from training scans, probe with test scans: templates first.
            let templates = first_per_identity(&split.enrollable_train(), args.enroll_impressions);
            let mut enrol = embed_named(loaded, &templates, &split.identities, device, b)?;
            enrol.extend(embed_named(
                loaded,
                &split.test,
                &split.identities,
                device,
                b,
            )?);
            let strangers =
                embed_named(loaded, &split.impostors, &split.impostor_names, device, b)?;
            (
                enrol,
                strangers,
                format!("the split of {}", run.0.display()),
            )
        }
        (None, None) => bail!("--open-set needs --enroll-data DIR, or --run RUN"),
    };
    let (gallery, mut probes) = enrol_first(enrol, args.enroll_impressions);
    probes.extend(strangers.into_iter().map(|(_, embedding)| Probe {
        embedding,
        identity: None,
    }));
    let threshold = args.threshold.or(loaded.similarity_threshold);
    let report = evaluate(&gallery, &probes, threshold, args.target_far);
    if let Some(path) = &args.det {
        draw_det(&report, &loaded.description, path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} on {source}: {} fingers enrolled from {} scans each; {} genuine and {} stranger probes",
        loaded.description,
        report.enrolled_identities,
        args.enroll_impressions,
        report.genuine_probes,
        report.impostor_probes
    );
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
        "open set at threshold {:.4} ({}): true accepts {:.2}%, misidentified {:.2}%, false accepts {} of {} strangers ({:.2}%)",
        report.threshold,
        if args.threshold.is_some() {
            "given"
        } else if loaded.similarity_threshold.is_some() {
            "the model's calibration"
        } else {
            "for the target FAR on these strangers"
        },
        100.0 * report.true_accept_rate,
        100.0 * report.misidentification_rate,
        report.false_accepts,
        report.impostor_probes,
        100.0 * report.false_accept_rate
    );
    Ok(())
}
