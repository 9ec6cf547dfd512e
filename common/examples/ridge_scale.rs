//! The ridge-scale preprocessing measured on folders of scans: each scan's ridge period as
//! found ([`ridge_period`]), then the period in the network input it becomes under
//! `resize = ridge-scale` (measured the same way on the `size`x`size` input), against the
//! target. Prints, per folder: scans, the median source period, the median input period, and
//! the share of scans whose input period lies within 15% of the target. Scans are read, never
//! copied.
//!
//! `cargo run --release -p fingerprint-common --example ridge_scale -- [--period 4.5]
//!     [--size 64] ../shared/datasets/fvc2002/DB1_B ../shared/datasets/neurotech/uareu ...`

use std::path::PathBuf;

use anyhow::Context;
use fingerprint_common::preprocess::{ridge_period, Preprocessing, ResizePolicy};
use fingerprint_common::{read_scan, ScanLimits};

fn median(values: &mut [f32]) -> f32 {
    values.sort_by(f32::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f32::NAN)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut period, mut size, mut dirs) = (4.5f32, 64u32, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--period" => period = args.next().context("--period P")?.parse()?,
            "--size" => size = args.next().context("--size N")?.parse()?,
            dir => dirs.push(PathBuf::from(dir)),
        }
    }
    anyhow::ensure!(!dirs.is_empty(), "give folders of scans");
    let pre = Preprocessing {
        resize: ResizePolicy::RidgeScale { period },
        ..Preprocessing::imagenet(size)
    };
    println!("| folder | scans | source period (median, px) | input period (median, px) | within 15% of {period} |");
    println!("|---|---|---|---|---|");
    let limits = ScanLimits::default();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let (mut sources, mut inputs, mut within) = (Vec::new(), Vec::new(), 0usize);
        for file in &files {
            let Ok(scan) = read_scan(file, &limits) else {
                continue;
            };
            sources.push(ridge_period(&scan).unwrap_or(f32::NAN));
            let input = ridge_period(&pre.resize(&scan)).unwrap_or(f32::NAN);
            if (input - period).abs() <= 0.15 * period {
                within += 1;
            }
            inputs.push(input);
        }
        let n = inputs.len();
        println!(
            "| {} | {n} | {:.1} | {:.2} | {:.1}% |",
            dir.display(),
            median(&mut sources),
            median(&mut inputs),
            100.0 * within as f64 / n.max(1) as f64
        );
    }
    Ok(())
}
