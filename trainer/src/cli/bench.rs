use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::ModuleT;
use clap::Args;
use fingerprint_models::export::{fold_batch_norm, FoldedResNet};
use fingerprint_models::resnet::trainable_vars;
use fingerprint_models::{device_from_name, formula, Arch};
use serde::Serialize;
use trainer::model::build_model;
use trainer::optim::{Adam, AdamConfig};
use trainer::train::method_loss;

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
    /// Also time inference in f16 (batch norm folded, as exported models run).
    #[arg(long)]
    f16: bool,
    /// Also compare the eval-mode outputs on --device with the same network on the CPU
    /// (maximum relative error of the logits, top-1 agreement).
    #[arg(long)]
    parity: bool,
    /// Write the figures to this JSON file as well.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What `trainer bench` measured, as `--json` writes it.
#[derive(Debug, Serialize)]
struct BenchReport {
    arch: String,
    size: usize,
    device: String,
    train_batch: usize,
    train_images_per_s: f64,
    train_step_s: f64,
    infer_batch: usize,
    infer_f32_images_per_s: f64,
    infer_f16_images_per_s: Option<f64>,
    /// Largest |device - cpu| / max|cpu| over the logits of the eval-mode network.
    parity_max_rel_error: Option<f64>,
    parity_top1_agreement: Option<f64>,
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

/// Eval-mode logits of the seeded network on `device` against the same network on the CPU:
/// the largest absolute difference relative to the largest CPU logit, and the share of
/// inputs with the same top-1 class.
fn parity(args: &BenchArgs, device: &Device) -> Result<(f64, f64)> {
    let n = args.infer_batch.max(4);
    let s = args.size;
    let x = formula::input((n, 3, s, s), &Device::Cpu)?;
    // Training-mode passes first give the batch norms running statistics other than the
    // initial ones, as a trained network has; then both copies hold the same state.
    let (varmap, model) = build_model(args.arch, args.classes, device, 0, None)?;
    model.forward_t(&x.to_device(device)?, true)?;
    let (cpu_varmap, cpu_model) = build_model(args.arch, args.classes, &Device::Cpu, 0, None)?;
    let poisoned = |_| anyhow::anyhow!("poisoned");
    let cpu_vars = cpu_varmap.data().lock().map_err(poisoned)?;
    for (name, var) in varmap.data().lock().map_err(poisoned)?.iter() {
        let target = cpu_vars
            .get(name)
            .with_context(|| format!("{name} missing on the CPU copy"))?;
        target.set(&var.as_tensor().to_device(&Device::Cpu)?)?;
    }
    drop(cpu_vars);
    let on_device = model
        .forward_t(&x.to_device(device)?, false)?
        .to_device(&Device::Cpu)?;
    let on_cpu = cpu_model.forward_t(&x, false)?;
    let scale = on_cpu
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?
        .max(f32::MIN_POSITIVE);
    let diff = (&on_device - &on_cpu)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    let top_device = on_device.argmax(1)?.to_vec1::<u32>()?;
    let top_cpu = on_cpu.argmax(1)?.to_vec1::<u32>()?;
    let same = top_device
        .iter()
        .zip(&top_cpu)
        .filter(|(a, b)| a == b)
        .count();
    Ok(((diff / scale) as f64, same as f64 / n as f64))
}

pub fn run(args: BenchArgs) -> Result<()> {
    // As `trainer train` runs (trainer::train::train).
    fingerprint_models::memory::keep_freed_memory();
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
    println!("{} {s}x{s} on {:?}", args.arch, device);
    println!(
        "training   batch {:>3}: {:8.2} images/s  (step {:.3} s: forward {:.3} s, backward + Adam {:.3} s)",
        args.batch,
        args.batch as f64 / step,
        step,
        forward,
        step - forward
    );
    println!(
        "inference  batch {:>3}: {:8.2} images/s  f32 ({:.1} ms a batch)",
        args.infer_batch,
        args.infer_batch as f64 / infer,
        1e3 * infer
    );
    let infer_f16 = if args.f16 {
        let half = fold_batch_norm(&model)?
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_dtype(DType::F16)?)))
            .collect::<candle_core::Result<_>>()?;
        let folded = FoldedResNet::new(args.arch, &half, &device)?;
        let xh = xi.to_dtype(DType::F16)?;
        let t = time(args.iters, &device, || {
            folded.forward(&xh)?;
            Ok(())
        })?;
        println!(
            "inference  batch {:>3}: {:8.2} images/s  f16 ({:.1} ms a batch)",
            args.infer_batch,
            args.infer_batch as f64 / t,
            1e3 * t
        );
        Some(args.infer_batch as f64 / t)
    } else {
        None
    };
    let parity = if args.parity {
        let (rel, agree) = parity(&args, &device)?;
        println!(
            "parity     {:?} vs CPU: max relative error {rel:.2e}, top-1 agreement {:.0}%",
            device,
            100.0 * agree
        );
        Some((rel, agree))
    } else {
        None
    };
    if let Some(path) = &args.json {
        let report = BenchReport {
            arch: args.arch.to_string(),
            size: s,
            device: args.device.clone(),
            train_batch: args.batch,
            train_images_per_s: args.batch as f64 / step,
            train_step_s: step,
            infer_batch: args.infer_batch,
            infer_f32_images_per_s: args.infer_batch as f64 / infer,
            infer_f16_images_per_s: infer_f16,
            parity_max_rel_error: parity.map(|p| p.0),
            parity_top1_agreement: parity.map(|p| p.1),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
