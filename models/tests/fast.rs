//! Our CPU inference path against candle's eval-mode network, on every architecture.

use anyhow::Result;
use candle_core::{Device, Tensor};
use fingerprint_common::Preprocessing;
use fingerprint_models::export::{
    fold_batch_norm, write_exported, Backend, ExportedModel, Manifest, Quantization,
};
use fingerprint_models::fast::{FastResNet, Kernels, Level};
use fingerprint_models::{formula, Arch, ResNet};

const CLASSES: usize = 7;

fn trained_like(arch: Arch) -> Result<ResNet> {
    // Formula weights give every batch norm non-trivial statistics to fold.
    Ok(formula::resnet(arch, CLASSES)?.1)
}

/// Largest absolute difference relative to the largest reference value.
fn max_relative_error(a: &Tensor, reference: &Tensor) -> Result<f32> {
    let diff = (a - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(diff / reference.abs()?.max_all()?.to_scalar::<f32>()?)
}

#[test]
fn fast_path_matches_candle_on_every_architecture() -> Result<()> {
    for arch in Arch::ALL {
        let model = trained_like(arch)?;
        let fast = FastResNet::new(arch, &fold_batch_norm(&model)?)?;
        // Odd sizes exercise padding and rounding at every stride.
        for (n, size) in [(1, 64), (3, 45)] {
            let x = formula::input((n, 3, size, size), &Device::Cpu)?;
            let (logits, features) = model.forward_with_features(&x, false)?;
            let logits_err = max_relative_error(&fast.forward(&x)?, &logits)?;
            let features_err = max_relative_error(&fast.features(&x)?, &features)?;
            println!("{arch} {n}x{size}: logits {logits_err:.2e}, features {features_err:.2e}");
            assert!(logits_err <= 1e-4, "{arch} {size}: logits {logits_err}");
            assert!(
                features_err <= 1e-4,
                "{arch} {size}: features {features_err}"
            );
            assert_eq!(fast.num_classes(), CLASSES);
        }
    }
    Ok(())
}

#[test]
fn portable_kernels_give_the_results_of_the_vectorised_ones() -> Result<()> {
    let model = trained_like(Arch::ResNet18)?;
    let weights = fold_batch_norm(&model)?;
    let x = formula::input((2, 3, 40, 40), &Device::Cpu)?;
    let detected = Kernels::detect();
    println!("this CPU: {detected}");

    let fast = FastResNet::new(Arch::ResNet18, &weights)?;
    let portable = FastResNet::new(Arch::ResNet18, &weights)?.with_kernels(Kernels::portable());
    let err = max_relative_error(&portable.forward(&x)?, &fast.forward(&x)?)?;
    println!("f32: portable vs {detected}: {err:.2e}");
    assert!(err <= 1e-5, "f32 {err}");

    // The int8 kernels' sums are exact and equal (unit-tested in fast::int8); the f32 stem
    // and classifier round differently (FMA or not), which can move a quantised activation
    // by one step.
    let int8 = FastResNet::new_int8(Arch::ResNet18, &weights)?;
    let int8_portable =
        FastResNet::new_int8(Arch::ResNet18, &weights)?.with_kernels(Kernels::portable());
    let err = max_relative_error(&int8_portable.forward(&x)?, &int8.forward(&x)?)?;
    println!("int8: portable vs {detected}: {err:.2e}");
    assert!(err <= 1e-3, "int8 {err}");

    // Every level this CPU runs: above portable they share the f32 code (AVX2 and FMA) and
    // their int8 sums are exact, so their logits are identical, not merely close.
    let mut vectorised = Vec::new();
    for kernels in Kernels::available() {
        let f32_logits = FastResNet::new(Arch::ResNet18, &weights)?
            .with_kernels(kernels)
            .forward(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let int8_logits = FastResNet::new_int8(Arch::ResNet18, &weights)?
            .with_kernels(kernels)
            .forward(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        println!("{kernels}: int8 logits {:?}", &int8_logits[..4]);
        if kernels.level() > Level::Portable {
            vectorised.push((kernels, f32_logits, int8_logits));
        }
    }
    for (kernels, f32_logits, int8_logits) in vectorised.iter().skip(1) {
        let (first, f32_first, int8_first) = &vectorised[0];
        assert_eq!(f32_logits, f32_first, "f32 on {kernels} and {first}");
        assert_eq!(int8_logits, int8_first, "int8 on {kernels} and {first}");
    }
    Ok(())
}

#[test]
fn int8_stays_close_to_f32() -> Result<()> {
    for arch in [Arch::ResNet18, Arch::ResNet50] {
        let model = trained_like(arch)?;
        let weights = fold_batch_norm(&model)?;
        let int8 = FastResNet::new_int8(arch, &weights)?;
        let x = formula::input((4, 3, 48, 48), &Device::Cpu)?;
        let (logits, features) = model.forward_with_features(&x, false)?;
        let logits_err = max_relative_error(&int8.forward(&x)?, &logits)?;
        let features_err = max_relative_error(&int8.features(&x)?, &features)?;
        println!("{arch} int8 vs f32: logits {logits_err:.2e}, features {features_err:.2e}");
        assert!(logits_err <= 5e-2, "{arch}: {logits_err}");
        assert!(features_err <= 5e-2, "{arch}: {features_err}");
    }
    Ok(())
}

#[test]
fn an_int8_file_runs_from_its_mapped_weights() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = trained_like(Arch::ResNet18)?;
    let weights = fold_batch_norm(&model)?;
    let path = dir.path().join("model.safetensors");
    let manifest = Manifest::new(
        Arch::ResNet18,
        (0..CLASSES).map(|i| format!("finger-{i}")).collect(),
        Preprocessing::imagenet(48),
        Quantization::Int8,
        "test".into(),
    );
    write_exported(&path, &weights, manifest)?;
    let x = formula::input((2, 3, 48, 48), &Device::Cpu)?;

    let mapped = ExportedModel::open(&path, &Device::Cpu)?;
    assert_eq!(mapped.network.name(), "fast");
    let in_memory = FastResNet::new_int8(Arch::ResNet18, &weights)?;
    // Features: the file's classifier is int8 too, the in-memory one f32.
    assert_eq!(
        mapped.network.features(&x)?.to_vec2::<f32>()?,
        in_memory.features(&x)?.to_vec2::<f32>()?,
        "the file's packed weights are the ones quantised here"
    );

    // candle runs the same file dequantised: the same weights, f32 activations.
    let candle = ExportedModel::open_with(&path, &Device::Cpu, Backend::Candle)?;
    assert_eq!(candle.network.name(), "candle");
    let err = max_relative_error(&mapped.network.forward(&x)?, &candle.network.forward(&x)?)?;
    println!("int8 fast path vs candle on the same file: {err:.2e}");
    assert!(err <= 5e-2, "{err}");
    Ok(())
}
