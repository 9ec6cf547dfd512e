use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use fingerprint_models::{device_from_name, Arch};
use trainer::export::{
    export_run, export_run_onnx, export_untrained, print_summary, ExportFormat, Untrained,
};
use trainer::run::RunDir;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run folder whose best model is exported.
    #[arg(required_unless_present = "init", conflicts_with = "init")]
    run: Option<PathBuf>,
    /// Format: int8 (a quarter of f32's size), f16 or f32 for fingerprintd; onnx for other
    /// runtimes (the f32 network: ONNX Runtime, OpenVINO, TensorRT).
    #[arg(long = "export", default_value = "int8")]
    format: ExportFormat,
    /// File to write (default: <run>/model-<format>.safetensors, <run>/model.onnx).
    #[arg(long)]
    out: Option<PathBuf>,
    /// False-accept rate the open-set threshold is calibrated for, on the run's held-out
    /// impostor fingers (none held out: no calibration).
    #[arg(long, default_value_t = 0.001)]
    target_far: f64,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Export a network no run trained instead: this architecture, seeded or from
    /// --pretrained (for benchmarks and runtime comparisons; needs --out).
    #[arg(long)]
    init: Option<Arch>,
    /// Outputs of the --init network.
    #[arg(long, default_value_t = 148, requires = "init")]
    classes: usize,
    /// Input side of the --init network, in pixels.
    #[arg(long, default_value_t = 224, requires = "init")]
    size: u32,
    /// Checkpoint for the --init network (.safetensors or .pth, torchvision or timm names).
    #[arg(long, requires = "init")]
    pretrained: Option<PathBuf>,
    /// Seed of the --init network's initialisation.
    #[arg(long, default_value_t = 0, requires = "init")]
    seed: u64,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    if let Some(arch) = args.init {
        let Some(out) = &args.out else {
            bail!("--init needs --out FILE");
        };
        let spec = Untrained {
            arch,
            classes: args.classes,
            size: args.size,
            pretrained: args.pretrained.as_deref(),
            seed: args.seed,
        };
        export_untrained(&spec, args.format, out)?;
        println!(
            "wrote {} ({arch}, {}, untrained)",
            out.display(),
            args.format
        );
        return Ok(());
    }
    let Some(run_dir) = args.run else {
        bail!("give a run folder, or --init ARCH");
    };
    let run = RunDir(run_dir);
    match args.format {
        ExportFormat::Onnx => {
            let out = args.out.unwrap_or_else(|| run.file("model.onnx"));
            export_run_onnx(&run, &out, &device)?;
            println!("wrote {}", out.display());
        }
        ExportFormat::Model(quantization) => {
            let out = args
                .out
                .unwrap_or_else(|| run.file(&format!("model-{quantization}.safetensors")));
            print_summary(&export_run(
                &run,
                quantization,
                &out,
                args.target_far,
                &device,
            )?);
        }
    }
    Ok(())
}
