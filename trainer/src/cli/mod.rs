use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use trainer::dataset::{Dataset, Layout, FVC_PATTERN};

mod bench;
mod demo;
mod eval;
mod export;
mod predict;
mod saliency;
mod service_process;
mod sheet;
mod synth;
#[cfg(test)]
mod test_support;
mod train;

pub use sheet::ResizeArg;

/// Fine-tunes ResNets to recognise fingers, and makes the data to do it with.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a synthetic fingerprint dataset as <finger>_<impression>.png.
    Synth(synth::SynthArgs),
    /// Write a PNG contact sheet of scans as the network sees them, augmented.
    Sheet(sheet::SheetArgs),
    /// Fine-tune a ResNet on a dataset (or resume an interrupted run).
    Train(train::TrainArgs),
    /// Export a run's best model (batch norm folded; int8, f16 or f32) for the daemon, or as
    /// ONNX for other runtimes.
    Export(export::ExportArgs),
    /// Top-1/top-5 accuracy of a run's model on its test split or on given scans.
    Eval(eval::EvalArgs),
    /// Identify scans: the top-k identities and probabilities of each, as JSON.
    Predict(predict::PredictArgs),
    /// Occlusion saliency maps: which parts of a scan the decision rests on.
    Saliency(saliency::SaliencyArgs),
    /// The whole system end to end on synthetic prints: train, export int8, enrol, run
    /// fingerprintd on a sensor folder, offer enrolled fingers' and strangers' scans, summarise.
    Demo(demo::DemoArgs),
    /// Measure training and inference speed (images/s) of an architecture on a device.
    Bench(bench::BenchArgs),
}

impl Cli {
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Synth(args) => synth::run(args),
            Command::Sheet(args) => sheet::run(args),
            Command::Train(args) => train::run(args),
            Command::Bench(args) => bench::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Eval(args) => eval::run(args),
            Command::Export(args) => export::run(args),
            Command::Predict(args) => predict::run(args),
            Command::Saliency(args) => saliency::run(args),
        }
    }
}

/// How a dataset's files are labelled (`--layout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    Auto,
    Folders,
    Flat,
}

/// Where the scans are and how they are labelled.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// A dataset root; repeat to combine several (identities become <root>/<id>).
    #[arg(long = "data")]
    pub roots: Vec<PathBuf>,
    /// How files are labelled: a folder per identity, flat files named by --pattern, or
    /// auto (folders if the root has sub-folders, else flat).
    #[arg(long, value_enum, default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,
    /// Regular expression with a named group `id`, matched against file names of a flat
    /// layout. The default reads FVC/PolyU names: <finger>_<impression>.<ext>.
    #[arg(long, default_value = FVC_PATTERN)]
    pub pattern: String,
}

impl DataArgs {
    pub fn load(&self) -> Result<Dataset> {
        if self.roots.is_empty() {
            anyhow::bail!("no dataset given: pass --data DIR (repeat it to combine several)");
        }
        let layout = match self.layout {
            LayoutArg::Folders => Layout::Folders,
            LayoutArg::Flat => Layout::Flat {
                pattern: self.pattern.clone(),
            },
            LayoutArg::Auto if self.pattern != FVC_PATTERN => Layout::Flat {
                pattern: self.pattern.clone(),
            },
            LayoutArg::Auto => Layout::Auto,
        };
        Dataset::load(&self.roots, &layout).context("reading the dataset")
    }
}
