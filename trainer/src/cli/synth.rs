use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use trainer::synth::{self, Realism, SynthConfig};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Folder to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 20)]
    fingers: usize,
    #[arg(long, default_value_t = 8)]
    impressions: usize,
    /// Side of the square scans in pixels (ridges about 9 px apart, as at 500 dpi).
    #[arg(long, default_value_t = 256)]
    size: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// plain (pose, distortion, pressure, contact, light noise: what the tests and the demo
    /// use) or sensor (also creases and scars, ridge breaks, wet smudges, and each
    /// impression's own gamma, lighting, background, contrast, blur and noise).
    #[arg(long, value_enum, default_value = "plain")]
    realism: RealismArg,
    /// Also write a contact sheet (up to 6 fingers x 6 impressions, a finger a row) here.
    #[arg(long)]
    sheet: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RealismArg {
    Plain,
    Sensor,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let config = SynthConfig {
        fingers: args.fingers,
        impressions: args.impressions,
        size: args.size,
        seed: args.seed,
        realism: match args.realism {
            RealismArg::Plain => Realism::Plain,
            RealismArg::Sensor => Realism::Sensor,
        },
    };
    let started = std::time::Instant::now();
    let paths = synth::write_dataset(&config, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} scans of {} fingers to {} in {:.1} s",
        paths.len(),
        args.fingers,
        args.out.display(),
        started.elapsed().as_secs_f32()
    );
    if let Some(sheet) = args.sheet {
        let prints = synth::generate(&SynthConfig {
            fingers: args.fingers.min(6),
            impressions: args.impressions.min(6),
            ..config
        });
        trainer::sheet::contact_sheet(&prints)
            .save(&sheet)
            .with_context(|| format!("writing {}", sheet.display()))?;
        println!("contact sheet: {}", sheet.display());
    }
    Ok(())
}
