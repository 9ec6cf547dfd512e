use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use clap::Args;
use fingerprint_common::{read_scan, Preprocessing, ScanLimits};
use fingerprint_models::resnet::imagenet_classes;
use fingerprint_models::{device_from_name, Arch};
use serde::Serialize;
use trainer::model::{build_model, Classifier, LoadedModel};
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
    /// Print each scan's template instead of its identities: the network's pooled features,
    /// L2-normalised, as fingerprintd enrols and compares them (for matching outside the
    /// daemon, e.g. minutiae-centred patches' open set).
    #[arg(long, conflicts_with = "top_k")]
    embeddings: bool,
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

#[derive(Serialize)]
struct Template {
    scan: PathBuf,
    embedding: Vec<f32>,
}

/// A scan read and preprocessed as the network's input: a batch of one.
fn input(scan: &Path, pre: &Preprocessing, device: &Device) -> Result<Tensor> {
    let image = read_scan(scan, &ScanLimits::default())?;
    let s = pre.size as usize;
    Ok(Tensor::from_vec(pre.apply(&image), (1, 3, s, s), device)?)
}

/// The template of each scan (one at a time: scans of any size, as they come).
fn templates(
    classifier: &Classifier,
    pre: &Preprocessing,
    scans: &[PathBuf],
    device: &Device,
) -> Result<Vec<Template>> {
    scans
        .iter()
        .map(|scan| {
            let x = input(scan, pre, device)?;
            let features = classifier.features(&x)?.squeeze(0)?.to_vec1::<f32>()?;
            Ok(Template {
                scan: scan.clone(),
                embedding: fingerprint_common::gallery::normalize(features),
            })
        })
        .collect()
}

/// Writes `value` as JSON to stdout; a reader that stops early (`| head`) is not an error.
fn print_json(value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{json}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(())
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
    if args.embeddings {
        return print_json(&templates(&classifier, pre, &args.scans, &device)?);
    }
    let mut predictions = Vec::new();
    for scan in &args.scans {
        let x = input(scan, pre, &device)?;
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
    print_json(&predictions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_unit_vectors_that_tell_scans_apart() {
        let device = Device::Cpu;
        let (_, model) = build_model(Arch::ResNet18, 3, &device, 7, None).expect("model");
        let dir = tempfile::tempdir().expect("dir");
        let scan = |name: &str, period: u32| {
            let image = image::GrayImage::from_fn(40, 40, |x, y| {
                image::Luma([if ((x + 2 * y) / period).is_multiple_of(2) {
                    30
                } else {
                    220
                }])
            });
            let path = dir.path().join(name);
            image.save(&path).expect("scan");
            path
        };
        let scans = vec![scan("a.png", 2), scan("b.png", 7), scan("a2.png", 2)];
        let loaded = LoadedModel::trained(model, vec!["0".into(); 3], Preprocessing::imagenet(32));
        let t = templates(&loaded.classifier(), &loaded.preprocessing, &scans, &device)
            .expect("templates");
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].scan, scans[1]);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        for template in &t {
            assert_eq!(template.embedding.len(), 512, "resnet18's pooled features");
            assert!((dot(&template.embedding, &template.embedding) - 1.0).abs() < 1e-4);
        }
        // The same image twice gives the same template; another image another.
        assert!(dot(&t[0].embedding, &t[2].embedding) > 0.9999);
        assert!(dot(&t[0].embedding, &t[1].embedding) < 0.9999);
        // A scan that cannot be read is an error that names it.
        let missing = dir.path().join("missing.png");
        let err = templates(
            &loaded.classifier(),
            &loaded.preprocessing,
            &[missing],
            &device,
        )
        .err()
        .expect("an error");
        assert!(format!("{err:#}").contains("missing.png"), "{err:#}");
    }
}
