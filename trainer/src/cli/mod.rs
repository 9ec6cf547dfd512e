use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use trainer::dataset::{Dataset, Layout, FVC_PATTERN};

mod sheet;
mod synth;

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
}

impl Cli {
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Synth(args) => synth::run(args),
            Command::Sheet(args) => sheet::run(args),
        }
    }
}

/// Where the scans are and how they are labelled.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// A dataset root; repeat to combine several (identities become <root>/<id>).
    #[arg(long = "data", required = true)]
    pub roots: Vec<PathBuf>,
    /// How files are labelled: a folder per identity, flat files named by --pattern, or
    /// auto (folders if the root has sub-folders, else flat).
    #[arg(long, default_value = "auto", value_parser = ["auto", "folders", "flat"])]
    pub layout: String,
    /// Regular expression with a named group `id`, matched against file names of a flat
    /// layout. The default reads FVC/PolyU names: <finger>_<impression>.<ext>.
    #[arg(long, default_value = FVC_PATTERN)]
    pub pattern: String,
}

impl DataArgs {
    pub fn load(&self) -> Result<Dataset> {
        let layout = match self.layout.as_str() {
            "folders" => Layout::Folders,
            "flat" => Layout::Flat {
                pattern: self.pattern.clone(),
            },
            _ if self.pattern != FVC_PATTERN => Layout::Flat {
                pattern: self.pattern.clone(),
            },
            _ => Layout::Auto,
        };
        Dataset::load(&self.roots, &layout).context("reading the dataset")
    }
}
