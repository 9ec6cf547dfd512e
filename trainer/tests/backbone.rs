//! The shipped backbone: it loads whole into a ResNet-18, tells apart synthetic fingers it
//! never saw far better than random weights do, and `trainer train` starts from it where it
//! suits the run, and only there.

mod support;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use fingerprint_common::{Preprocessing, ResizePolicy};
use fingerprint_models::resnet::initialize_seeded;
use fingerprint_models::{load_checkpoint, Arch, ResNet};
use support::{stdout_of, trainer_command};
use trainer::backbone::{
    shipped_backbone_suits, write_shipped_backbone, SHIPPED_BACKBONE, SHIPPED_BACKBONE_FILE,
};
use trainer::run::RunDir;
use trainer::synth::{generate, write_dataset, Realism, SynthConfig};

/// A ResNet-18 with seeded weights, then the shipped backbone where `shipped`.
fn resnet18(shipped: bool) -> Result<(ResNet, Option<fingerprint_models::CheckpointReport>)> {
    let varmap = VarMap::new();
    let model = ResNet::new(
        Arch::ResNet18,
        10,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    initialize_seeded(&varmap, 0)?;
    if !shipped {
        return Ok((model, None));
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(SHIPPED_BACKBONE_FILE);
    write_shipped_backbone(&path)?;
    let report = load_checkpoint(&path, &varmap, Arch::ResNet18)?;
    Ok((model, Some(report)))
}

#[test]
fn the_shipped_backbone_loads_whole_and_leaves_the_head_fresh() -> Result<()> {
    let (_, report) = resnet18(true)?;
    let report = report.expect("loaded");
    // Every convolution and batch-norm tensor of ResNet-18 (weights, biases, running stats).
    assert_eq!(report.loaded, 100);
    assert!(report.head_reinitialised);
    assert_eq!(report.file_classes, None, "shipped without a head");
    Ok(())
}

/// The synthetic scans' and the network input's sides the backbone was last trained with.
const SCAN_SIDE: u32 = 320;
const INPUT_SIDE: u32 = 144;

/// Rank-1 of `fingers` synthetic fingers the backbone never saw (another seed than its
/// training prints), one impression enrolled and two probing, on cosine similarity of the
/// pooled features, with the input the backbone was trained on.
fn rank1_on_unseen_fingers(model: &ResNet, fingers: usize) -> Result<f32> {
    let prints = generate(&SynthConfig {
        fingers,
        impressions: 3,
        size: SCAN_SIDE,
        seed: 7,
        realism: Realism::Sensor,
    });
    let pre = Preprocessing {
        resize: ResizePolicy::RidgeScale { period: 4.0 },
        ..Preprocessing::imagenet(INPUT_SIDE)
    };
    let mut x = Vec::new();
    for impressions in &prints {
        for scan in impressions {
            x.extend(pre.apply_at(scan, Some(500)));
        }
    }
    let side = INPUT_SIDE as usize;
    let x = Tensor::from_vec(x, (fingers * 3, 3, side, side), &Device::Cpu)?;
    let f = model.features_t(&x, false)?;
    let f = f.broadcast_div(&f.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?;
    let f: Vec<Vec<f32>> = f.to_vec2()?;
    let mut right = 0;
    for finger in 0..fingers {
        for probe in 1..3 {
            let p = &f[finger * 3 + probe];
            let best = (0..fingers)
                .map(|g| {
                    let e = &f[g * 3];
                    (g, p.iter().zip(e).map(|(a, b)| a * b).sum::<f32>())
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(g, _)| g);
            right += usize::from(best == Some(finger));
        }
    }
    Ok(right as f32 / (2 * fingers) as f32)
}

#[test]
fn the_shipped_backbone_tells_unseen_synthetic_fingers_apart() -> Result<()> {
    let (shipped, _) = resnet18(true)?;
    let (random, _) = resnet18(false)?;
    let fingers = 12;
    let with_backbone = rank1_on_unseen_fingers(&shipped, fingers)?;
    let with_random = rank1_on_unseen_fingers(&random, fingers)?;
    println!("rank-1 on {fingers} unseen fingers: shipped {with_backbone}, random {with_random}");
    assert!(
        with_backbone >= 0.9,
        "shipped backbone rank-1 {with_backbone}"
    );
    assert!(
        with_backbone >= with_random + 0.25,
        "shipped {with_backbone} against random {with_random}"
    );
    Ok(())
}

#[test]
fn the_shipped_backbone_suits_resnet18_with_ridge_scale_input_only() {
    let ridge = Preprocessing {
        resize: ResizePolicy::RidgeScale { period: 4.5 },
        ..Preprocessing::imagenet(64)
    };
    assert!(shipped_backbone_suits(Arch::ResNet18, &ridge));
    assert!(!shipped_backbone_suits(Arch::ResNet50, &ridge));
    assert!(!shipped_backbone_suits(
        Arch::ResNet18,
        &Preprocessing::imagenet(64)
    ));
}

/// `trainer train` on four tiny synthetic fingers for one epoch, with `extra` arguments;
/// returns the run folder's `pretrained` and the command's output.
fn train_with(
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> Result<(Option<std::path::PathBuf>, String)> {
    let data = dir.join("data");
    if !data.exists() {
        write_dataset(
            &SynthConfig {
                fingers: 4,
                impressions: 4,
                size: 96,
                seed: 3,
                ..SynthConfig::default()
            },
            &data,
        )?;
    }
    let run = dir.join(name);
    let out = stdout_of(
        trainer_command()
            .args([
                "train", "--arch", "resnet18", "--size", "32", "--epochs", "1",
            ])
            .args(["--batch-size", "4", "--copies", "1", "--no-augment"])
            .args(["--test-per-identity", "1", "--val-per-identity", "1"])
            .args(["--impostors", "0", "--patience", "0"])
            .args(extra)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&run),
    )?;
    Ok((RunDir(run).info()?.config.pretrained, out))
}

#[test]
fn train_starts_from_the_shipped_backbone_where_it_suits_and_says_so() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (pretrained, out) = train_with(dir.path(), "ridge", &["--resize", "ridge-scale"])?;
    let copy = dir.path().join("ridge").join(SHIPPED_BACKBONE_FILE);
    assert_eq!(pretrained.as_deref(), Some(copy.as_path()));
    assert_eq!(std::fs::read(&copy)?, SHIPPED_BACKBONE);
    assert!(out.contains("shipped backbone"), "{out}");

    let (pretrained, _) = train_with(
        dir.path(),
        "scratch",
        &["--resize", "ridge-scale", "--from-scratch"],
    )?;
    assert_eq!(pretrained, None);
    assert!(!dir
        .path()
        .join("scratch")
        .join(SHIPPED_BACKBONE_FILE)
        .exists());

    let (pretrained, out) = train_with(dir.path(), "stretch", &[])?;
    assert_eq!(pretrained, None, "stretched input: from scratch");
    assert!(!out.contains("shipped backbone"), "{out}");
    Ok(())
}
