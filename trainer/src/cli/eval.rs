use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fingerprint_common::ScanLimits;
use fingerprint_models::device_from_name;
use trainer::dataset::Sample;
use trainer::loader::ImageCache;
use trainer::train::{evaluate_probabilities, predict_probabilities, LoadedModel, RunDir};

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
