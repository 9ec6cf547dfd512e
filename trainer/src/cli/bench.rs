use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::ModuleT;
use clap::Args;
use fingerprint_models::resnet::trainable_vars;
use fingerprint_models::{device_from_name, formula, Arch};
use trainer::optim::{Adam, AdamConfig};
use trainer::train::{build_model, method_loss};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value = "resnet50")]
    arch: Arch,
    /// Batch size of the training steps.
    #[arg(long, default_value_t = 24)]
    batch: usize,
    /// Batch size of the inference passes.
    #[arg(long, default_value_t = 1)]
    infer_batch: usize,
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Classes of the head (the method's PolyU set has 148 fingers).
    #[arg(long, default_value_t = 148)]
    classes: usize,
    /// Timed repetitions of each measurement (after one warm-up).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// Median seconds of `iters` runs of `f`, after one warm-up run.
fn time(iters: usize, device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    sync(device)?;
    let mut times = Vec::new();
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        sync(device)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = device_from_name(&args.device)?;
    let (varmap, model) = build_model(args.arch, args.classes, &device, 0, None)?;
    let s = args.size;
    let x = formula::input((args.batch, 3, s, s), &Device::Cpu)?.to_device(&device)?;
    let labels: Vec<u32> = (0..args.batch).map(|i| (i % args.classes) as u32).collect();
    let y = Tensor::new(labels.as_slice(), &device)?;
    let mut adam = Adam::new(trainable_vars(&varmap), AdamConfig::default())?;
    let head = model.head().weight().clone();

    let forward = time(args.iters, &device, || {
        model.forward_t(&x, true)?;
        Ok(())
    })?;
    let step = time(args.iters, &device, || {
        let (loss, _) = method_loss(&model.forward_t(&x, true)?, &y, &head, 1e-3)?;
        adam.backward_step(&loss)?;
        Ok(())
    })?;
    let xi = formula::input((args.infer_batch, 3, s, s), &Device::Cpu)?.to_device(&device)?;
    let infer = time(args.iters, &device, || {
        model.forward_t(&xi, false)?;
        Ok(())
    })?;
    println!("{} {s}x{s} on {:?}", args.arch, device,);
    println!(
        "training   batch {:>3}: {:8.2} images/s  (step {:.3} s: forward {:.3} s, backward + Adam {:.3} s)",
        args.batch,
        args.batch as f64 / step,
        step,
        forward,
        step - forward
    );
    println!(
        "inference  batch {:>3}: {:8.2} images/s  ({:.1} ms a batch)",
        args.infer_batch,
        args.infer_batch as f64 / infer,
        1e3 * infer
    );
    Ok(())
}
