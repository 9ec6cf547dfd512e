//! Median inference time of an exported-model graph (batch norm folded) on the CPU: candle's
//! path against ours, on seeded ResNet weights of the given architecture.
//!
//!     cargo run --release -p fingerprint-models --example inference_speed -- resnet50 224 1

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use fingerprint_models::export::{fold_batch_norm, FoldedResNet};
use fingerprint_models::fast::FastResNet;
use fingerprint_models::{formula, Arch};

fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[runs / 2])
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arch: Arch = args.get(1).map_or("resnet50", String::as_str).parse()?;
    let size: usize = args.get(2).map_or(Ok(224), |s| s.parse())?;
    let batch: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let runs: usize = args.get(4).map_or(Ok(10), |s| s.parse())?;
    let (_, model) = formula::resnet(arch, 148)?;
    let weights = fold_batch_norm(&model)?;
    let candle = FoldedResNet::new(arch, &weights, &Device::Cpu)?;
    let fast = FastResNet::new(arch, &weights)?;
    let fast_int8 = FastResNet::new_int8(arch, &weights)?;
    let x = formula::input((batch, 3, size, size), &Device::Cpu)?;
    let ours = median_ms(runs, || {
        fast.forward(&x)?;
        Ok(())
    })?;
    let ours_int8 = median_ms(runs, || {
        fast_int8.forward(&x)?;
        Ok(())
    })?;
    let theirs = median_ms(runs.min(5), || {
        candle.forward(&x)?;
        Ok(())
    })?;
    println!(
        "{arch} {size}x{size} batch {batch}: ours f32 {ours:.1} ms ({:.1} images/s), int8 {ours_int8:.1} ms, candle {theirs:.1} ms; {:.2}x",
        batch as f64 * 1e3 / ours,
        theirs / ours
    );
    Ok(())
}
