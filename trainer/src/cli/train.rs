use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use clap::Args;
use fingerprint_common::{Preprocessing, ScanLimits};
use fingerprint_models::export::Quantization;
use fingerprint_models::{device_from_name, Arch};
use trainer::augment::Augmentation;
use trainer::backbone::{shipped_backbone_suits, write_shipped_backbone, SHIPPED_BACKBONE_FILE};
use trainer::dataset::{Dataset, Layout, Split, SplitConfig};
use trainer::export::{export_run, print_summary};
use trainer::run::{Loss, LrSchedule, Report, RunDir, TrainConfig};
use trainer::train::{start_run, train, Outcome, Session};

use super::{DataArgs, ResizeArg};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LossArg {
    Softmax,
    Cosface,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LrScheduleArg {
    Constant,
    Cosine,
}

static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: Option<DataArgs>,
    /// Run folder to create (arguments, split, metrics, curves, checkpoints, report).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Resume the interrupted run in this folder, with its own settings.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Network: resnet18, resnet34 or resnet50.
    #[arg(long, default_value = "resnet50")]
    arch: Arch,
    /// Checkpoint to start from (.safetensors or .pth, torchvision or timm names). Without
    /// it, a resnet18 run with --resize ridge-scale starts from the backbone shipped with the
    /// trainer (pretrained on synthetic prints only; copied into the run folder), and any other
    /// run from scratch.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Start from random weights even where the shipped backbone suits the run.
    #[arg(long, conflicts_with = "pretrained")]
    from_scratch: bool,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    #[arg(long, default_value_t = 24)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// How the learning rate moves: constant (the method's), or cosine (a short warm-up,
    /// then a decay to zero at the last epoch; better features from scratch).
    #[arg(long, value_enum, default_value = "constant")]
    lr_schedule: LrScheduleArg,
    /// Weight of the squared Frobenius norm of the last layer's weights in the loss.
    #[arg(long, default_value_t = 1e-3)]
    l2: f64,
    /// The loss: softmax cross-entropy (the method's), or cosface (a margin between each
    /// finger's features and every other finger's, in cosine: features that tell unseen
    /// fingers apart; the head stays a plain classifier, see the README).
    #[arg(long, value_enum, default_value = "softmax")]
    loss: LossArg,
    /// With --loss cosface: the margin taken off the true class's cosine.
    #[arg(long, default_value_t = 0.35)]
    margin: f64,
    /// With --loss cosface: the scale of the cosines in the logits.
    #[arg(long, default_value_t = 30.0)]
    margin_scale: f64,
    /// Side of the square network input, in pixels.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// How scans are made square: stretched (the method's), padded, a window of --window
    /// scan pixels cut around the print (ridges reach the network at the scale they have in
    /// the scan, whatever its size; the daemon cuts the same window), or ridge-scale (the
    /// scan rescaled to --ridge-period, whatever its sensor).
    #[arg(long, value_enum, default_value = "stretch")]
    resize: ResizeArg,
    /// With --resize window: the window's side in scan pixels (128 at 500 dpi: 6.5 mm).
    #[arg(long, default_value_t = 128)]
    window: u32,
    /// With --resize ridge-scale: the ridge period in input pixels (4.5: what a 64 px
    /// network sees of 128 px synthetic scans; the scan's own period is measured).
    #[arg(long, default_value_t = 4.5)]
    ridge_period: f32,
    /// With --resize ridge-scale: the training scans' resolution, where known (windows of
    /// fixed physical size, as on a door with [matcher] sensor_dpi); unset: each scan's
    /// ridge period is measured.
    #[arg(long)]
    sensor_dpi: Option<u32>,
    /// Train on the scans as they are, without flips, crops and distortions.
    #[arg(long)]
    no_augment: bool,
    /// Augment without flips (a sensor never sees a finger mirrored; for open-set use the
    /// mirror image of a print is another print).
    #[arg(long, conflicts_with = "no_augment")]
    no_flip: bool,
    /// Largest rotation of the augmentation, in degrees either way (the method's small
    /// distortions: 10; a finger laid on a sensor turns by up to 20-30).
    #[arg(long, default_value_t = Augmentation::default().max_rotation_degrees, conflicts_with = "no_augment")]
    max_rotation: f32,
    /// Times each training scan is shown per epoch: once as is, the rest augmented.
    #[arg(long, default_value_t = 3)]
    copies: usize,
    /// Stop after this many epochs without a better validation accuracy (0: never).
    #[arg(long, default_value_t = 20)]
    patience: usize,
    /// Keep the (pretrained) backbone fixed and train the last layer only, on features
    /// computed once: fast even on a CPU.
    #[arg(long)]
    freeze_backbone: bool,
    /// Seed of the split, the initialisation, the shuffling and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Test scans held out per identity.
    #[arg(long, default_value_t = 4)]
    test_per_identity: usize,
    /// Validation scans held out per identity, to choose the best epoch.
    #[arg(long, default_value_t = 1)]
    val_per_identity: usize,
    /// Leave out identities with too few scans for the split, instead of failing.
    #[arg(long)]
    skip_small: bool,
    /// Identities held out of training as never-enrolled impostors, to calibrate the open-set
    /// threshold at export (default: a tenth of the identities).
    #[arg(long)]
    impostors: Option<usize>,
    /// Scans of fingers that are not to be recognised (a dataset root, any layout; e.g. a
    /// public database, or `trainer synth`), trained as one background class so that
    /// strangers land there instead of on the enrolled finger they most resemble. For a
    /// door whose fingers are the trained ones: its threshold is calibrated for them alone.
    #[arg(long)]
    background: Option<PathBuf>,
    /// False-accept rate the exported threshold is calibrated for (on the impostors).
    #[arg(long, default_value_t = 0.001)]
    target_far: f64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// When training ends, export the best model in this format (int8, f16 or f32) to
    /// <run>/model-<format>.safetensors.
    #[arg(long = "export")]
    export: Option<Quantization>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    // First Ctrl-C: finish the batch, save, exit. Second: exit at once.
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this batch and saving; Ctrl-C again to quit at once");
    })
    .context("installing the Ctrl-C handler")?;
    let session = Session {
        device,
        limits: ScanLimits::default(),
        stop: &STOP,
        verbose: true,
        on_epoch: None,
    };

    let (dir, outcome) = if let Some(dir) = args.resume {
        let outcome = train(&RunDir(dir.clone()), &session)?;
        (dir, outcome)
    } else {
        let Some(data) = &args.data else {
            bail!("--data is required for a new run");
        };
        let dir = args
            .out
            .clone()
            .context("--out is required for a new run")?;
        let dataset = data.load()?;
        let split = Split::new(
            &dataset,
            SplitConfig {
                test_per_identity: args.test_per_identity,
                val_per_identity: args.val_per_identity,
                seed: args.seed,
                skip_small: args.skip_small,
                impostor_identities: args.impostors.unwrap_or(dataset.identities.len() / 10),
            },
        )?;
        let split = match &args.background {
            Some(root) => {
                let background = Dataset::load(std::slice::from_ref(root), &Layout::Auto)?;
                split.with_background(background.samples.into_iter().map(|s| s.path).collect())?
            }
            None => split,
        };
        for name in &split.skipped {
            eprintln!("warning: identity {name} has too few scans and is left out");
        }
        println!(
            "{} identities{}: {} train, {} validation, {} test scans; {} identities ({} scans) held out as impostors",
            split.identities.len(),
            if split.background().is_some() { " (one of them the background)" } else { "" },
            split.train.len(),
            split.val.len(),
            split.test.len(),
            split.impostor_names.len(),
            split.impostors.len()
        );
        if matches!(args.loss, LossArg::Cosface)
            && !(args.margin >= 0.0 && args.margin < 1.0 && args.margin_scale > 0.0)
        {
            bail!(
                "--margin must lie in 0..1 and --margin-scale above 0 (got {} and {})",
                args.margin,
                args.margin_scale
            );
        }
        let augmentation = augmentation(args.no_augment, args.no_flip, args.max_rotation)?;
        let preprocessing = Preprocessing {
            resize: args.resize.policy(args.window, args.ridge_period),
            ..Preprocessing::imagenet(args.size)
        };
        let pretrained = match args.pretrained {
            Some(path) => Some(path),
            None if !args.from_scratch
                && shipped_backbone_suits(args.arch, &preprocessing)
                && !dir.join("run.json").exists() =>
            {
                let path = dir.join(SHIPPED_BACKBONE_FILE);
                write_shipped_backbone(&path)?;
                println!(
                    "starting from the shipped backbone (ResNet-18 pretrained on synthetic prints; trainer/backbones/README.md), copied to {}; --from-scratch for random weights",
                    path.display()
                );
                Some(path)
            }
            None => None,
        };
        let config = TrainConfig {
            arch: args.arch,
            pretrained,
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr,
            lr_schedule: match args.lr_schedule {
                LrScheduleArg::Constant => LrSchedule::Constant,
                LrScheduleArg::Cosine => LrSchedule::Cosine,
            },
            l2: args.l2,
            loss: match args.loss {
                LossArg::Softmax => Loss::Softmax,
                LossArg::Cosface => Loss::CosFace {
                    scale: args.margin_scale,
                    margin: args.margin,
                },
            },
            preprocessing,
            sensor_dpi: args.sensor_dpi,
            augmentation,
            copies: args.copies,
            patience: (args.patience > 0).then_some(args.patience),
            freeze_backbone: args.freeze_backbone,
            seed: args.seed,
        };
        let outcome = start_run(&dir, config, split, &session)?;
        (dir, outcome)
    };
    match outcome {
        Outcome::Finished(report) => {
            print_report(&report, &dir);
            if let Some(q) = args.export {
                let run = RunDir(dir.clone());
                let out = run.file(&format!("model-{q}.safetensors"));
                print_summary(&export_run(
                    &run,
                    q,
                    &out,
                    args.target_far,
                    &session.device,
                )?);
            }
        }
        Outcome::Interrupted { epochs_done } => {
            println!(
                "interrupted after {epochs_done} complete epochs; saved. Resume with: trainer train --resume {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The augmentation `--no-augment`, `--no-flip` and `--max-rotation` ask for.
fn augmentation(
    no_augment: bool,
    no_flip: bool,
    max_rotation: f32,
) -> Result<Option<Augmentation>> {
    if !(0.0..=90.0).contains(&max_rotation) {
        bail!("--max-rotation must lie in 0..=90 degrees (got {max_rotation})");
    }
    let base = match (no_augment, no_flip) {
        (true, _) => return Ok(None),
        (false, true) => Augmentation::without_flips(),
        (false, false) => Augmentation::default(),
    };
    Ok(Some(Augmentation {
        max_rotation_degrees: max_rotation,
        ..base
    }))
}

pub fn print_report(report: &Report, dir: &std::path::Path) {
    println!(
        "test: top-1 {:.2}% top-5 {:.2}% on {} scans of {} identities ({} misidentified); best epoch {} (validation {:.2}%); {:.0} s",
        100.0 * report.test.top1,
        100.0 * report.test.top5,
        report.test.scans,
        report.identities,
        report.test.misidentified.len(),
        report.best_epoch.map_or("-".into(), |e| e.to_string()),
        100.0 * report.val_accuracy,
        report.train_seconds
    );
    println!(
        "run folder: {} (report.json, curves.png, best.safetensors)",
        dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rotation_reaches_the_augmentation_and_is_bounded() -> Result<()> {
        let turned = augmentation(false, true, 25.0)?.context("augmentation expected")?;
        assert_eq!(turned.max_rotation_degrees, 25.0);
        assert_eq!(turned.flip_probability, 0.0);
        let default = augmentation(false, false, 10.0)?.context("augmentation expected")?;
        assert_eq!(default, Augmentation::default());
        assert!(augmentation(true, false, 10.0)?.is_none());
        for bad in [-1.0, 91.0, f32::NAN] {
            let err = augmentation(false, false, bad).expect_err("out of range");
            assert!(err.to_string().contains("--max-rotation"), "{err}");
        }
        Ok(())
    }
}
