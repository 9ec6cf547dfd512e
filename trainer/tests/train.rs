//! Training as the method does it: the loss, the optimiser, and whole runs on synthetic
//! fingerprints (from scratch: no pretrained weights exist offline).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fingerprint_common::Preprocessing;
use fingerprint_models::{Arch, ResNet};
use trainer::dataset::{Dataset, Layout, Split, SplitConfig};
use trainer::optim::{Adam, AdamConfig};
use trainer::run::{EpochMetrics, Loss, RunDir, TrainConfig};
use trainer::synth::{write_dataset, SynthConfig};
use trainer::train::{loss_logits, method_loss, start_run, train, Outcome, Session};

#[test]
fn the_l2_term_touches_only_the_last_layer() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = ResNet::new(
        Arch::ResNet18,
        3,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev)?;
    let y = Tensor::new(&[0u32, 2], &dev)?;
    let logits = model.forward_with_features(&x, true)?.0;
    let head = model.head().weight();
    let (with_l2, ce) = method_loss(&logits, &y, head, 0.5)?;
    // Gradient of the L2 term alone = gradient of (total - cross-entropy).
    let grads = (with_l2 - ce)?.backward()?;
    let vars = varmap.data().lock().expect("var map");
    for (name, var) in vars.iter() {
        let g = grads.get(var.as_tensor());
        if name == "fc.weight" {
            let expected = (var.as_tensor() * 1.0)?; // d(0.5 * ||W||^2)/dW = W
            let diff = (g.expect("fc.weight gradient") - expected)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-6, "fc.weight: {diff}");
        } else if let Some(g) = g {
            let max = g.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(max, 0.0, "{name} gets an L2 gradient");
        }
    }
    Ok(())
}

#[test]
fn cosface_logits_are_scaled_cosines_with_the_margin_off_the_true_class() -> Result<()> {
    let dev = Device::Cpu;
    // Two samples, three classes, 2-d features; weights of any length.
    let features = Tensor::new(&[[3.0f32, 4.0], [0.0, -2.0]], &dev)?;
    let weight = Tensor::new(&[[2.0f32, 0.0], [0.0, 5.0], [1.0, 1.0]], &dev)?;
    let labels = Tensor::new(&[1u32, 0], &dev)?;
    let plain = Tensor::zeros((2, 3), DType::F32, &dev)?;
    let (scale, margin) = (10.0, 0.25);
    let got = loss_logits(
        Loss::CosFace { scale, margin },
        &plain,
        &features,
        &weight,
        &labels,
    )?
    .to_vec2::<f32>()?;
    let r = std::f32::consts::FRAC_1_SQRT_2;
    let cos = [[0.6, 0.8, 1.4 * r], [0.0, -1.0, -r]];
    let expected = [
        [
            10.0 * cos[0][0],
            10.0 * (cos[0][1] - 0.25),
            10.0 * cos[0][2],
        ],
        [
            10.0 * (cos[1][0] - 0.25),
            10.0 * cos[1][1],
            10.0 * cos[1][2],
        ],
    ];
    for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
        assert!((g - e).abs() < 1e-5, "{got:?} against {expected:?}");
    }
    // Softmax takes the head's logits as they are.
    let softmax = loss_logits(Loss::Softmax, &features, &features, &weight, &labels)?;
    assert_eq!(softmax.to_vec2::<f32>()?, features.to_vec2::<f32>()?);
    Ok(())
}

#[test]
fn adam_matches_a_hand_computed_step() -> Result<()> {
    let dev = Device::Cpu;
    let w = Var::new(&[1.0f32, -2.0, 0.5], &dev)?;
    let mut adam = Adam::new(vec![("w".into(), w.clone())], AdamConfig::default())?;
    // loss = sum(w^2 * c): gradient 2 c w.
    let c = Tensor::new(&[1.0f32, 3.0, -4.0], &dev)?;
    let mut expected = vec![1.0f64, -2.0, 0.5];
    let (b1, b2, lr, eps) = (0.9f64, 0.999f64, 1e-4f64, 1e-8f64);
    let (mut m, mut v) = (vec![0f64; 3], vec![0f64; 3]);
    for t in 1..=3 {
        let loss = (w.as_tensor().sqr()? * &c)?.sum_all()?;
        adam.backward_step(&loss)?;
        for i in 0..3 {
            let g = 2.0 * [1.0, 3.0, -4.0][i] * expected[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let m_hat = m[i] / (1.0 - b1.powi(t));
            let v_hat = v[i] / (1.0 - b2.powi(t));
            expected[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
    let got = w.as_tensor().to_vec1::<f32>()?;
    for (g, e) in got.iter().zip(&expected) {
        assert!((f64::from(*g) - e).abs() < 1e-7, "{got:?} vs {expected:?}");
    }
    // A step of lr 1e-4 moves each weight by about lr (Adam's step is scale-free).
    assert!(((expected[0] - 1.0).abs() - 3e-4).abs() < 1e-5);
    Ok(())
}

fn synthetic_split(
    dir: &Path,
    fingers: usize,
    impressions: usize,
    size: u32,
    test: usize,
) -> Result<Split> {
    synthetic_split_val(dir, fingers, impressions, size, test, 1)
}

/// `fingers` x `impressions` synthetic scans of `size` px, split with `test` and `val` scans
/// per finger held out.
fn synthetic_split_val(
    dir: &Path,
    fingers: usize,
    impressions: usize,
    size: u32,
    test: usize,
    val: usize,
) -> Result<Split> {
    let data = dir.join("data");
    write_dataset(
        &SynthConfig {
            fingers,
            impressions,
            size,
            seed: 11,
            ..SynthConfig::default()
        },
        &data,
    )?;
    let dataset = Dataset::load(&[data], &Layout::Auto)?;
    Ok(Split::new(
        &dataset,
        SplitConfig {
            test_per_identity: test,
            val_per_identity: val,
            seed: 1,
            skip_small: false,
            impostor_identities: 0,
        },
    )?)
}

fn session<'a>(
    stop: &'a AtomicBool,
    hook: Option<&'a (dyn Fn(&EpochMetrics) + Sync)>,
) -> Session<'a> {
    Session {
        on_epoch: hook,
        ..Session::cpu(stop, true)
    }
}

fn small_config() -> TrainConfig {
    TrainConfig {
        arch: Arch::ResNet18,
        epochs: 12,
        batch_size: 16,
        lr: 1e-3,
        preprocessing: Preprocessing::imagenet(64),
        copies: 2,
        patience: None,
        ..TrainConfig::default()
    }
}

/// From scratch, ResNet-18 at 48x48 on 6 synthetic fingers (14 training scans each): the
/// method's recipe (Adam, L2 on the head, selection on validation) at a size a CPU test can
/// afford in about a minute. Augmentation is off here: it triples the work per epoch, and its
/// own tests are elsewhere.
#[test]
fn resnet18_learns_synthetic_fingers_from_scratch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Two validation scans per finger: one is too few to choose the best epoch reliably.
    let split = synthetic_split_val(dir.path(), 6, 20, 72, 4, 2)?;
    let stop = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let config = TrainConfig {
        batch_size: 8,
        lr: 3e-4,
        epochs: 10,
        preprocessing: Preprocessing::imagenet(48),
        augmentation: None,
        copies: 1,
        ..small_config()
    };
    let Outcome::Finished(report) = start_run(
        &dir.path().join("run"),
        config,
        split,
        &session(&stop, None),
    )?
    else {
        panic!("not interrupted");
    };
    println!(
        "test top-1 {:.1}% top-5 {:.1}% on {} scans, best epoch {:?}, {:.0} s",
        100.0 * report.test.top1,
        100.0 * report.test.top5,
        report.test.scans,
        report.best_epoch,
        started.elapsed().as_secs_f64()
    );
    assert!(report.test.top1 >= 0.9, "top-1 {}", report.test.top1);
    let run = RunDir(dir.path().join("run"));
    for file in [
        "run.json",
        "split.json",
        "metrics.jsonl",
        "curves.png",
        "best.safetensors",
        "report.json",
    ] {
        assert!(run.file(file).exists(), "{file} missing");
    }
    assert_eq!(run.metrics()?.len(), 10);

    // The int8 export, as the daemon runs it (our CPU path, integer arithmetic), decides the
    // test split as the f32 network does.
    let out = dir.path().join("model-int8.safetensors");
    let summary = trainer::export::export_run(
        &run,
        fingerprint_models::export::Quantization::Int8,
        &out,
        0.001,
        &Device::Cpu,
    )?;
    let (f32_figures, int8_figures) = (&summary.formats[0], &summary.formats[2]);
    println!(
        "int8: top-1 {:.1}% (f32 {:.1}%), top-1 agreement with f32 {:.1}% on {} scans",
        100.0 * int8_figures.top1,
        100.0 * f32_figures.top1,
        100.0 * int8_figures.agreement_with_f32,
        summary.test_scans
    );
    assert!(int8_figures.agreement_with_f32 >= 0.99);
    assert!(int8_figures.top1 >= f32_figures.top1 - 0.005);
    Ok(())
}

/// Stopping after the first epoch (as Ctrl-C does) and resuming gives the same run as never
/// stopping: weights, optimiser state and the random streams are all restored.
#[test]
fn an_interrupted_run_resumes_to_the_same_result() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let split = synthetic_split(dir.path(), 4, 6, 64, 2)?;
    let config = TrainConfig {
        epochs: 2,
        preprocessing: Preprocessing::imagenet(32),
        ..small_config()
    };

    let stop = AtomicBool::new(false);
    let straight = start_run(
        &dir.path().join("straight"),
        config.clone(),
        split.clone(),
        &session(&stop, None),
    )?;

    let stop_after_first = |m: &EpochMetrics| {
        if m.epoch == 1 {
            stop.store(true, Ordering::SeqCst);
        }
    };
    let interrupted = start_run(
        &dir.path().join("resumed"),
        config,
        split,
        &session(&stop, Some(&stop_after_first)),
    )?;
    assert!(
        matches!(interrupted, Outcome::Interrupted { epochs_done: 1 }),
        "{interrupted:?}"
    );
    stop.store(false, Ordering::SeqCst);
    let resumed = train(&RunDir(dir.path().join("resumed")), &session(&stop, None))?;

    let (Outcome::Finished(a), Outcome::Finished(b)) = (straight, resumed) else {
        panic!("both runs must finish");
    };
    assert_eq!(a.test, b.test);
    let ma = RunDir(dir.path().join("straight")).metrics()?;
    let mb = RunDir(dir.path().join("resumed")).metrics()?;
    assert_eq!(ma.len(), 2);
    assert_eq!(mb.len(), 2);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(
            (x.train_loss, x.val_loss),
            (y.train_loss, y.val_loss),
            "epoch {}",
            x.epoch
        );
    }
    Ok(())
}

/// The default configuration (ResNet-50, 224x224, batch 24, Adam 1e-4) runs a step.
#[test]
fn the_default_resnet50_configuration_runs_one_step() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // 4 fingers x 7 scans: 2 train each, x 3 copies = one batch of 24.
    let split = synthetic_split(dir.path(), 4, 7, 224, 4)?;
    let config = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    assert_eq!(
        (config.arch, config.batch_size, config.preprocessing.size),
        (Arch::ResNet50, 24, 224)
    );
    let stop = AtomicBool::new(false);
    let Outcome::Finished(report) = start_run(
        &dir.path().join("run"),
        config,
        split,
        &session(&stop, None),
    )?
    else {
        panic!("not interrupted");
    };
    let metrics = RunDir(dir.path().join("run")).metrics()?;
    assert_eq!(metrics.len(), 1);
    assert!(metrics[0].train_loss.is_finite() && metrics[0].train_loss > 0.0);
    assert_eq!(report.test.scans, 16);
    Ok(())
}

/// A run of `config` with a fixed backbone at 48 px (fast) on 4 synthetic fingers; its folder
/// and best checkpoint.
fn frozen_backbone_run(
    dir: &Path,
    config: TrainConfig,
) -> Result<(RunDir, std::collections::HashMap<String, Tensor>)> {
    let split = synthetic_split(dir, 4, 6, 64, 2)?;
    let config = TrainConfig {
        freeze_backbone: true,
        preprocessing: Preprocessing::imagenet(48),
        ..config
    };
    let stop = AtomicBool::new(false);
    start_run(&dir.join("run"), config, split, &session(&stop, None))?;
    let run = RunDir(dir.join("run"));
    let best = candle_core::safetensors::load(run.file("best.safetensors"), &Device::Cpu)?;
    Ok((run, best))
}

/// CosFace on a fixed backbone (fast): the head stays a unit-row, zero-bias classifier, so
/// the plain classifier every other part uses ranks classes by cosine; and it learns.
#[test]
fn cosface_keeps_a_normalised_head_that_learns() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // One batch an epoch: the head needs a few dozen steps.
    let config = TrainConfig {
        epochs: 60,
        lr: 1e-2,
        loss: Loss::CosFace {
            scale: 16.0,
            margin: 0.2,
        },
        ..small_config()
    };
    let (run, best) = frozen_backbone_run(dir.path(), config)?;
    let norms = best["fc.weight"].sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
    assert!(
        norms.iter().all(|n| (n - 1.0).abs() < 1e-4),
        "head rows {norms:?}"
    );
    let bias = best["fc.bias"].abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(bias, 0.0);
    let metrics = run.metrics()?;
    let last = metrics.last().expect("epochs ran");
    // 4 fingers: chance is 25%.
    assert!(
        last.train_accuracy > 0.6,
        "train accuracy {:.2}",
        last.train_accuracy
    );
    assert!(last.train_loss < metrics[0].train_loss, "{metrics:?}");
    Ok(())
}

#[test]
fn feature_extraction_mode_trains_only_the_head() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = TrainConfig {
        epochs: 5,
        ..small_config()
    };
    let (_, best) = frozen_backbone_run(dir.path(), config)?;
    // Same seed, no training: the backbone the run started from.
    let (varmap, _) = trainer::model::build_model(Arch::ResNet18, 4, &Device::Cpu, 0, None)?;
    let start = varmap.data().lock().expect("var map");
    for (name, var) in start.iter() {
        let same = (best[name].clone() - var.as_tensor())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?
            == 0.0;
        assert_eq!(same, !name.starts_with("fc."), "{name}");
    }
    Ok(())
}

#[test]
fn a_run_folder_is_not_overwritten() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let split = synthetic_split(dir.path(), 2, 6, 48, 2)?;
    let config = TrainConfig {
        epochs: 1,
        preprocessing: Preprocessing::imagenet(32),
        ..small_config()
    };
    let stop = AtomicBool::new(false);
    start_run(
        &dir.path().join("run"),
        config.clone(),
        split.clone(),
        &session(&stop, None),
    )?;
    let err = start_run(
        &dir.path().join("run"),
        config,
        split,
        &session(&stop, None),
    )
    .expect_err("exists");
    assert!(err.to_string().contains("already holds a run"), "{err}");
    Ok(())
}
