//! `trainer`: fine-tunes ResNets to recognise fingers, and makes the data to do it with.

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    cli::Cli::parse().run()
}
