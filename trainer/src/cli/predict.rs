use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, D};
use clap::Args;
use fingerprint_common::{read_scan, Preprocessing, ScanLimits};
use fingerprint_models::resnet::imagenet_classes;
use fingerprint_models::{device_from_name, Arch};
use serde::Serialize;
use trainer::model::{build_model, LoadedModel};
use trainer::run::RunDir;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Scans to identify.
    #[arg(required = true)]
    scans: Vec<PathBuf>,
    /// A run folder (its best model, labels and preprocessing).
    #[arg(long, conflicts_with_all = ["checkpoint", "model"])]
    run: Option<PathBuf>,
    /// An exported model file (labels and preprocessing from its manifest).
    #[arg(long, conflicts_with = "checkpoint")]
    model: Option<PathBuf>,
    /// A raw checkpoint (.safetensors or .pth) instead of a run; needs --arch. Its classes
    /// are numbered, or ImageNet's names if it has 1000.
    #[arg(long, requires = "arch")]
    checkpoint: Option<PathBuf>,
    #[arg(long)]
    arch: Option<Arch>,
    /// Input size for a raw checkpoint.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Candidates listed per scan.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Serialize)]
struct Candidate {
    identity: String,
    probability: f32,
}

#[derive(Serialize)]
struct Prediction {
    scan: PathBuf,
    top: Vec<Candidate>,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    let loaded = match (&args.model, &args.run, &args.checkpoint, args.arch) {
        (Some(path), _, _, _) => LoadedModel::exported(path, &device)?,
        (None, Some(run), _, _) => {
            LoadedModel::from_run(&RunDir(run.clone()), &device, "best.safetensors")?
        }
        (None, None, Some(path), Some(arch)) => {
            let tensors = fingerprint_models::checkpoint::read_checkpoint(path)?;
            let classes = tensors
                .get("fc.weight")
                .and_then(|w| w.dims().first().copied())
                .context("the checkpoint has no fc.weight: no classifier to predict with")?;
            let (_, model) = build_model(arch, classes, &device, 0, Some(path))?;
            let labels = if classes == 1000 {
                imagenet_classes()
            } else {
                (0..classes).map(|c| c.to_string()).collect()
            };
            LoadedModel::trained(model, labels, Preprocessing::imagenet(args.size))
        }
        _ => bail!("give --run RUN, --model FILE, or --checkpoint FILE with --arch"),
    };
    let (classifier, labels, pre) = (loaded.classifier(), &loaded.labels, &loaded.preprocessing);
    let limits = ScanLimits::default();
    let mut predictions = Vec::new();
    for scan in &args.scans {
        let input = pre.apply(&read_scan(scan, &limits)?);
        let s = pre.size as usize;
        let x = Tensor::from_vec(input, (1, 3, s, s), &device)?;
        let probs = candle_nn::ops::softmax(&classifier.logits(&x)?, D::Minus1)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        predictions.push(Prediction {
            scan: scan.clone(),
            top: order
                .into_iter()
                .take(args.top_k)
                .map(|c| Candidate {
                    identity: labels.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    probability: probs[c],
                })
                .collect(),
        });
    }
    // A reader that stops early (`| head`) is not an error.
    let json = serde_json::to_string_pretty(&predictions)?;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{json}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(())
}
