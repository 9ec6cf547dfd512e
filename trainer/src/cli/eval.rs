use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fingerprint_common::ScanLimits;
use fingerprint_models::device_from_name;
use trainer::dataset::Sample;
use trainer::loader::ImageCache;
use trainer::train::{evaluate_probabilities, load_run_model, predict_probabilities, RunDir};

use super::DataArgs;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder whose best model is evaluated.
    #[arg(long)]
    run: PathBuf,
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
    let run = RunDir(args.run.clone());
    let (info, model) = load_run_model(&run, &device, &format!("{}.safetensors", args.checkpoint))?;
    let (samples, source) = match &args.data {
        Some(data) => {
            let dataset = data.load()?;
            let mut samples = Vec::new();
            let mut unknown = Vec::new();
            for sample in &dataset.samples {
                let name = &dataset.identities[sample.identity];
                match info.identities.iter().position(|i| i == name) {
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
        None => (
            run.split()?.test,
            format!("the test split of {}", args.run.display()),
        ),
    };
    let pre = &info.config.preprocessing;
    let cache =
        ImageCache::load(&samples, pre, &ScanLimits::default(), || {}).context("reading scans")?;
    let probs = predict_probabilities(&model, &cache, pre, &device, args.batch_size)?;
    let evaluation = evaluate_probabilities(&probs, &cache, &info.identities)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
        return Ok(());
    }
    println!(
        "{} on {}: top-1 {:.2}%, top-5 {:.2}% over {} scans",
        info.config.arch,
        source,
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
