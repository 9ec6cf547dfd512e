use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use fingerprint_models::device_from_name;
use fingerprint_models::export::Quantization;
use trainer::export::{export_run, print_summary};
use trainer::train::RunDir;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run folder whose best model is exported.
    run: PathBuf,
    /// Weight format: int8 (a quarter of f32's size), f16 or f32.
    #[arg(long = "export", default_value = "int8")]
    quantization: Quantization,
    /// File to write (default: <run>/model-<format>.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// False-accept rate the open-set threshold is calibrated for, on the run's held-out
    /// impostor fingers (none held out: no calibration).
    #[arg(long, default_value_t = 0.001)]
    target_far: f64,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    let run = RunDir(args.run.clone());
    let out = args
        .out
        .unwrap_or_else(|| run.file(&format!("model-{}.safetensors", args.quantization)));
    print_summary(&export_run(
        &run,
        args.quantization,
        &out,
        args.target_far,
        &device,
    )?);
    Ok(())
}
