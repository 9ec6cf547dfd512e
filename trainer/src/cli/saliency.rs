use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, D};
use clap::Args;
use fingerprint_common::{read_scan, ScanLimits};
use fingerprint_models::device_from_name;
use image::{imageops, DynamicImage, RgbImage};
use trainer::model::LoadedModel;
use trainer::run::RunDir;
use trainer::saliency::{occlusion_map, overlay, Occlusion};

#[derive(Args, Debug)]
pub struct SaliencyArgs {
    /// Scans to explain.
    #[arg(required = true)]
    scans: Vec<PathBuf>,
    /// An exported model file.
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    model: Option<PathBuf>,
    /// A run folder (its best model).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Side of the zeroed square, in input pixels (default 28 = 1/8 of 224).
    #[arg(long, default_value_t = 28)]
    window: usize,
    /// Step of the square, in input pixels.
    #[arg(long, default_value_t = 8)]
    stride: usize,
    /// Occluded copies evaluated at once.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Folder for `<scan>-saliency.png` (scan | probability drop | decision flips) and
    /// `<scan>-saliency.csv` (one row per window position).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: SaliencyArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    let run = args.run.clone().map(RunDir);
    let loaded = LoadedModel::choose(
        args.model.as_deref(),
        run.as_ref(),
        &device,
        "best.safetensors",
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let occlusion = Occlusion {
        window: args.window,
        stride: args.stride,
    };
    for scan_path in &args.scans {
        let started = Instant::now();
        let written = write_saliency(
            &loaded,
            scan_path,
            occlusion,
            args.batch_size,
            &args.out,
            &device,
        )?;
        println!("{written} in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Writes `<scan>-saliency.png` (scan | probability drop | decision flips) and
/// `<scan>-saliency.csv` for one scan into `out`; returns a line saying what was found.
pub fn write_saliency(
    loaded: &LoadedModel,
    scan_path: &Path,
    occlusion: Occlusion,
    batch_size: usize,
    out: &Path,
    device: &Device,
) -> Result<String> {
    let (classifier, labels, pre) = (loaded.classifier(), &loaded.labels, &loaded.preprocessing);
    let scan = pre.resize(&read_scan(scan_path, &ScanLimits::default())?);
    let mut input = Vec::with_capacity(pre.len());
    pre.normalize_into(&scan, &mut input);
    let map = occlusion_map(&input, pre, occlusion, batch_size, device, |x| {
        candle_nn::ops::softmax(&classifier.logits(x)?, D::Minus1)
    })?;
    let s = pre.size;
    let mut sheet = RgbImage::from_pixel(3 * s + 8, s, image::Rgb([255, 255, 255]));
    let grey = DynamicImage::ImageLuma8(scan.clone()).to_rgb8();
    imageops::replace(&mut sheet, &grey, 0, 0);
    imageops::replace(&mut sheet, &overlay(&scan, &map.drop), i64::from(s + 4), 0);
    imageops::replace(
        &mut sheet,
        &overlay(&scan, &map.flip),
        i64::from(2 * s + 8),
        0,
    );
    let stem = scan_path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or("scan");
    let png = out.join(format!("{stem}-saliency.png"));
    sheet
        .save(&png)
        .with_context(|| format!("writing {}", png.display()))?;
    let mut csv = String::from("x,y,window,probability_drop,top1\n");
    for (x, y, drop, top) in &map.windows {
        let _ = writeln!(
            csv,
            "{x},{y},{},{drop},{}",
            occlusion.window,
            labels.get(*top).map_or("?", String::as_str)
        );
    }
    let csv_path = out.join(format!("{stem}-saliency.csv"));
    std::fs::write(&csv_path, csv).with_context(|| format!("writing {}", csv_path.display()))?;
    let flips = map.windows.iter().filter(|w| w.3 != map.predicted).count();
    Ok(format!(
        "{}: {} (p = {:.3}); {} of {} occlusions flip it; {}",
        scan_path.display(),
        labels.get(map.predicted).map_or("?", String::as_str),
        map.probability,
        flips,
        map.windows.len(),
        png.display(),
    ))
}
