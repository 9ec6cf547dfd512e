//! How scans look, per folder: the ridge/valley contrast inside the print (95th minus 5th
//! percentile of grey over the 16 px blocks whose grey-level spread is at least half the
//! scan's largest) and the scan's median grey; each as the median [10th-90th percentile] over
//! the folder's scans. One statistic measured alike on real and synthetic prints (README,
//! "Synthetic fingerprints"). Scans are read, never copied.
//!
//! `cargo run --release -p fingerprint-common --example scan_look -- DIR ...`

use std::path::PathBuf;

use anyhow::Context;
use fingerprint_common::{read_scan, ScanLimits};
use image::GrayImage;

const BLOCK: u32 = 16;

/// The value at `q` (0..=1) of sorted `values`, nearest rank.
fn quantile(sorted: &[f32], q: f32) -> f32 {
    let at = ((sorted.len().saturating_sub(1)) as f32 * q).round() as usize;
    sorted.get(at).copied().unwrap_or(f32::NAN)
}

/// (ridge/valley contrast inside the print, median grey) of one scan.
fn look(scan: &GrayImage) -> (f32, f32) {
    let (w, h) = scan.dimensions();
    let mut blocks: Vec<(f32, Vec<f32>)> = Vec::new();
    for by in 0..h / BLOCK {
        for bx in 0..w / BLOCK {
            let values: Vec<f32> = (0..BLOCK * BLOCK)
                .map(|i| {
                    let (x, y) = (bx * BLOCK + i % BLOCK, by * BLOCK + i / BLOCK);
                    f32::from(scan.get_pixel(x, y).0[0])
                })
                .collect();
            let mean = values.iter().sum::<f32>() / values.len() as f32;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32;
            blocks.push((var.sqrt(), values));
        }
    }
    let top = blocks.iter().map(|b| b.0).fold(0f32, f32::max);
    let mut print: Vec<f32> = blocks
        .into_iter()
        .filter(|b| b.0 >= 0.5 * top)
        .flat_map(|b| b.1)
        .collect();
    print.sort_by(f32::total_cmp);
    let mut all: Vec<f32> = scan.as_raw().iter().map(|&v| f32::from(v)).collect();
    all.sort_by(f32::total_cmp);
    (
        quantile(&print, 0.95) - quantile(&print, 0.05),
        quantile(&all, 0.5),
    )
}

fn spread(mut values: Vec<f32>) -> String {
    values.sort_by(f32::total_cmp);
    format!(
        "{:.0} [{:.0}-{:.0}]",
        quantile(&values, 0.5),
        quantile(&values, 0.1),
        quantile(&values, 0.9)
    )
}

fn main() -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    anyhow::ensure!(!dirs.is_empty(), "give folders of scans");
    println!("| folder | scans | ridge/valley contrast | median grey |");
    println!("|---|---|---|---|");
    let limits = ScanLimits::default();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let looks: Vec<(f32, f32)> = files
            .iter()
            .filter_map(|f| read_scan(f, &limits).ok())
            .map(|scan| look(&scan))
            .collect();
        println!(
            "| {} | {} | {} | {} |",
            dir.display(),
            looks.len(),
            spread(looks.iter().map(|l| l.0).collect()),
            spread(looks.iter().map(|l| l.1).collect())
        );
    }
    Ok(())
}
