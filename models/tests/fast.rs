//! Our CPU inference path against candle's eval-mode network, on every architecture.

use anyhow::Result;
use candle_core::{Device, Tensor};
use fingerprint_common::Preprocessing;
use fingerprint_models::export::{
    fold_batch_norm, write_exported, Backend, ExportedModel, Manifest, Network, Quantization,
};
use fingerprint_models::fast::{FastResNet, Kernels, Level};
use fingerprint_models::{formula, Arch, ResNet};

const CLASSES: usize = 7;

fn trained_like(arch: Arch) -> Result<ResNet> {
    // Formula weights give every batch norm non-trivial statistics to fold.
    Ok(formula::resnet(arch, CLASSES)?.1)
}

/// A network's logits for `x` on `kernels`, flat.
fn logits_on(network: FastResNet, kernels: Kernels, x: &Tensor) -> Result<Vec<f32>> {
    Ok(network
        .with_kernels(kernels)
        .forward(x)?
        .flatten_all()?
        .to_vec1::<f32>()?)
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

/// Scans as preprocessing makes them (three normalised copies of one grey image) run the stem
/// on their grey values, a third of its products: the same outputs within f32 rounding.
#[test]
fn grey_scans_give_what_their_three_channels_give() -> Result<()> {
    for arch in Arch::ALL {
        let model = trained_like(arch)?;
        let weights = fold_batch_norm(&model)?;
        for (n, size) in [(1, 64), (3, 45)] {
            let preprocessing = Preprocessing::imagenet(size as u32);
            let x = grey_scans(n, &preprocessing)?;
            let three = FastResNet::new(arch, &weights)?;
            let grey = FastResNet::new(arch, &weights)?.with_grey_scans(preprocessing.channels());
            let first = x.get(0)?.flatten_all()?.to_vec1::<f32>()?;
            assert!(grey.reads_as_grey(&first), "{arch} {size}");
            assert!(!three.reads_as_grey(&first), "{arch} {size}: no grey stem");

            let (grey_logits, three_logits) = (grey.forward(&x)?, three.forward(&x)?);
            let err = max_relative_error(&grey_logits, &three_logits)?;
            let (candle_logits, features) = model.forward_with_features(&x, false)?;
            let candle_err = max_relative_error(&grey_logits, &candle_logits)?;
            let features_err = max_relative_error(&grey.features(&x)?, &features)?;
            println!(
                "{arch} {n}x{size}: grey vs three channels {err:.2e}, vs candle {candle_err:.2e}"
            );
            assert!(err <= 1e-5, "{arch} {size}: {err}");
            assert!(candle_err <= 1e-4, "{arch} {size}: {candle_err}");
            assert!(features_err <= 1e-4, "{arch} {size}: {features_err}");
            // The grey stem did run: its rounding is not the three-channel stem's.
            assert_ne!(
                grey_logits.to_vec2::<f32>()?,
                three_logits.to_vec2::<f32>()?,
                "{arch} {size}"
            );

            let int8 =
                FastResNet::new_int8(arch, &weights)?.with_grey_scans(preprocessing.channels());
            let int8_err = max_relative_error(&int8.forward(&x)?, &candle_logits)?;
            assert!(int8_err <= 5e-2, "{arch} {size}: int8 {int8_err}");
        }
    }
    Ok(())
}

/// `n` formula grey scans normalised by `preprocessing`, NCHW.
fn grey_scans(n: usize, preprocessing: &Preprocessing) -> Result<Tensor> {
    let size = preprocessing.size as usize;
    Ok(Tensor::from_vec(
        formula::grey_scans(n, preprocessing),
        (n, 3, size, size),
        &Device::Cpu,
    )?)
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

    // int8: the kernels' sums are exact and the f32 products (the stem, the classifier) are
    // fused in one order on every level, so the logits are identical, not merely close.
    let int8_portable = logits_on(
        FastResNet::new_int8(Arch::ResNet18, &weights)?,
        Kernels::portable(),
        &x,
    )?;
    // f32: every level above portable shares the AVX2/FMA code (the portable Winograd
    // transforms round apart from it, within the bound above).
    let mut f32_vectorised: Option<(Kernels, Vec<f32>)> = None;
    for kernels in Kernels::available() {
        let int8_logits = logits_on(FastResNet::new_int8(Arch::ResNet18, &weights)?, kernels, &x)?;
        assert_eq!(int8_logits, int8_portable, "int8 on {kernels} and portable");
        if kernels.level() > Level::Portable {
            let f32_logits = logits_on(FastResNet::new(Arch::ResNet18, &weights)?, kernels, &x)?;
            match &f32_vectorised {
                None => f32_vectorised = Some((kernels, f32_logits)),
                Some((first, logits)) => {
                    assert_eq!(&f32_logits, logits, "f32 on {kernels} and {first}")
                }
            }
        }
    }
    Ok(())
}

/// ResNet-50's bottlenecks, which ResNet-18 lacks: 1x1 convolutions on activations quantised
/// per pixel, 256 to 2048 channels, downsampling 1x1s of stride 2; on two threads, so that the
/// first stage's products (16x16 rows at 64x64) run in tasks of whole rows on AMX. The int8
/// logits must be the portable code's on every level.
#[test]
fn int8_bottlenecks_are_the_same_on_every_level() -> Result<()> {
    let weights = fold_batch_norm(&trained_like(Arch::ResNet50)?)?;
    let x = formula::input((2, 3, 64, 64), &Device::Cpu)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    pool.install(|| -> Result<()> {
        let network = || FastResNet::new_int8(Arch::ResNet50, &weights);
        let portable = logits_on(network()?, Kernels::portable(), &x)?;
        for kernels in Kernels::available() {
            let logits = logits_on(network()?, kernels, &x)?;
            assert_eq!(logits, portable, "int8 ResNet-50 on {kernels} and portable");
        }
        Ok(())
    })
}

#[test]
fn a_batch_gives_each_image_the_logits_it_has_alone() -> Result<()> {
    // A batch's images run in parallel, one run per thread, each with its own buffers; three
    // threads over five images make runs of two, two and one, whatever this machine's cores.
    // The f32 network takes each run of two through its layers as one pair.
    // Images 0, 2 and 3 are grey scans, 1 and 4 not: the first run mixes them.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build()?;
    let weights = fold_batch_norm(&trained_like(Arch::ResNet18)?)?;
    let preprocessing = Preprocessing::imagenet(36);
    let (grey, other) = (
        grey_scans(3, &preprocessing)?,
        formula::input((2, 3, 36, 36), &Device::Cpu)?,
    );
    let batch = Tensor::cat(
        &[
            grey.narrow(0, 0, 1)?,
            other.narrow(0, 0, 1)?,
            grey.narrow(0, 1, 2)?,
            other.narrow(0, 1, 1)?,
        ],
        0,
    )?;
    for int8 in [false, true] {
        let network = if int8 {
            FastResNet::new_int8(Arch::ResNet18, &weights)?
        } else {
            FastResNet::new(Arch::ResNet18, &weights)?
        }
        .with_grey_scans(preprocessing.channels());
        pool.install(|| -> Result<()> {
            // Twice: the second pass reuses the buffers the first one left.
            for pass in 0..2 {
                let together = network.forward(&batch)?.to_vec2::<f32>()?;
                assert_eq!(together.len(), 5);
                for (i, logits) in together.iter().enumerate() {
                    let alone = network.forward(&batch.narrow(0, i, 1)?)?.to_vec2::<f32>()?;
                    assert_eq!(logits, &alone[0], "int8 {int8}, pass {pass}, image {i}");
                }
                let features = network.features(&batch)?;
                assert_eq!(features.dims(), [5, 512]);
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The int8 logits of the formula ResNet-18 (7 classes) on the formula input at 32x32, as
/// f32 bit patterns, computed once on x86-64 and checked on aarch64 under qemu-user: a model
/// must give the same int8 answers, to the bit, on every CPU and kernel level (a threshold
/// calibrated on one machine then holds on a door of another).
const INT8_LOGITS: [u32; CLASSES] = [
    0x3d8c_c1d0, // 0.06872904
    0xbd6b_d1a6, // -0.057572983
    0x3d6e_fe2a, // 0.05834786
    0xbd89_f4e6, // -0.06736164
    0xbd2b_7991, // -0.04186398
    0x3df4_d16a, // 0.11954005
    0xbd58_1e18, // -0.052763075
];

/// As [`INT8_LOGITS`], for a grey scan (`formula::grey_scans`, ImageNet's normalisation, 32x32):
/// the stem on its grey values.
const INT8_GREY_LOGITS: [u32; CLASSES] = [
    0x3d47_6da1, // 0.048688535
    0xbd82_561e, // -0.06364082
    0x3d95_fa34, // 0.07323113
    0xbd22_dcec, // -0.03976147
    0x3aec_2b40, // 0.0018018261
    0x3de9_12f6, // 0.1138057
    0xbd70_7540, // -0.05870557
];

#[test]
fn int8_logits_are_the_same_on_every_cpu() -> Result<()> {
    let weights = fold_batch_norm(&trained_like(Arch::ResNet18)?)?;
    let preprocessing = Preprocessing::imagenet(32);
    let inputs = [
        (
            "three channels",
            formula::input((1, 3, 32, 32), &Device::Cpu)?,
            INT8_LOGITS,
        ),
        ("grey", grey_scans(1, &preprocessing)?, INT8_GREY_LOGITS),
    ];
    for (input, x, expected) in inputs {
        for kernels in Kernels::available() {
            let network = FastResNet::new_int8(Arch::ResNet18, &weights)?
                .with_grey_scans(preprocessing.channels());
            let logits = logits_on(network, kernels, &x)?;
            let bits: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
            println!("{input}, {kernels}: {logits:?} = {bits:#010x?}");
            assert_eq!(bits, expected, "{input}, {kernels}");
        }
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
    // A scan as the service preprocesses it runs on the grey stem.
    let scan = image::GrayImage::from_fn(60, 50, |x, y| image::Luma([(x * 3 + y * 2) as u8]));
    let Network::Fast(fast) = &mapped.network else {
        unreachable!("named fast above")
    };
    assert!(fast.reads_as_grey(&mapped.manifest.preprocessing.apply(&scan)));
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
