use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use fingerprint_common::{read_scan, Preprocessing, ResizePolicy, ScanLimits};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use trainer::augment::Augmentation;

use super::DataArgs;

#[derive(Args, Debug)]
pub struct SheetArgs {
    #[command(flatten)]
    data: DataArgs,
    /// PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// Identities shown, one a row.
    #[arg(long, default_value_t = 4)]
    identities: usize,
    /// Augmented copies shown beside each preprocessed scan.
    #[arg(long, default_value_t = 5)]
    copies: usize,
    /// Network input size.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// How non-square scans are made square.
    #[arg(long, value_enum, default_value = "stretch")]
    resize: ResizeArg,
    /// With --resize window: the window's side in scan pixels.
    #[arg(long, default_value_t = 128)]
    window: u32,
    /// With --resize ridge-scale: the ridge period in input pixels.
    #[arg(long, default_value_t = 4.5)]
    ridge_period: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ResizeArg {
    /// Width and height resized independently (the method's).
    Stretch,
    /// Centred on a square of the scan's background.
    Pad,
    /// A window of --window scan pixels around the print (ridges keep their scale).
    Window,
    /// The scan rescaled so that ridges are --ridge-period input pixels apart (its period
    /// measured), a window of the same number of ridges around the print.
    RidgeScale,
}

impl ResizeArg {
    /// The policy, with `window` pixels a side for [`ResizeArg::Window`] and ridges
    /// `ridge_period` input pixels apart for [`ResizeArg::RidgeScale`].
    pub fn policy(self, window: u32, ridge_period: f32) -> ResizePolicy {
        match self {
            ResizeArg::Stretch => ResizePolicy::Stretch,
            ResizeArg::Pad => ResizePolicy::Pad,
            ResizeArg::Window => ResizePolicy::Window { side: window },
            ResizeArg::RidgeScale => ResizePolicy::RidgeScale {
                period: ridge_period,
            },
        }
    }
}

/// Each row: a scan as preprocessed for the network (no augmentation), then augmented copies.
pub fn run(args: SheetArgs) -> Result<()> {
    let dataset = args.data.load()?;
    let pre = Preprocessing {
        resize: args.resize.policy(args.window, args.ridge_period),
        ..Preprocessing::imagenet(args.size)
    };
    let augmentation = Augmentation::default();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut rows = Vec::new();
    for group in dataset.by_identity().into_iter().take(args.identities) {
        let Some(sample) = group.first() else {
            continue;
        };
        let square = pre.resize(&read_scan(&sample.path, &ScanLimits::default())?);
        let mut row = vec![square.clone()];
        row.extend((0..args.copies).map(|_| augmentation.apply(&square, &mut rng)));
        rows.push(row);
    }
    trainer::sheet::contact_sheet(&rows)
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: {} identities, first column as served, then {} augmented copies",
        args.out.display(),
        rows.len(),
        args.copies
    );
    Ok(())
}
