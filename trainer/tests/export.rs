//! `trainer export`: a run's best model measured in every format and written for the daemon.

use std::sync::atomic::AtomicBool;

mod support;

use anyhow::Result;
use candle_core::Device;
use fingerprint_common::Preprocessing;
use fingerprint_models::export::{ExportedModel, Quantization};
use fingerprint_models::Arch;
use support::{stdout_of, trainer_command};
use trainer::dataset::{Dataset, Layout, Split, SplitConfig};
use trainer::export::export_run;
use trainer::run::{RunDir, TrainConfig};
use trainer::synth::{write_dataset, SynthConfig};
use trainer::train::{start_run, Session};

/// 4 synthetic fingers x 6 scans of 48 px.
fn four_fingers(dir: &std::path::Path) -> Result<()> {
    write_dataset(
        &SynthConfig {
            fingers: 4,
            impressions: 6,
            size: 48,
            seed: 2,
            ..SynthConfig::default()
        },
        dir,
    )?;
    Ok(())
}

#[test]
fn export_measures_every_format_and_records_it_in_the_manifest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    four_fingers(&data)?;
    let split = Split::new(
        &Dataset::load(&[data], &Layout::Auto)?,
        SplitConfig {
            test_per_identity: 2,
            // One finger never trained on: the impostor the threshold is calibrated with.
            impostor_identities: 1,
            ..SplitConfig::default()
        },
    )?;
    let config = TrainConfig {
        arch: Arch::ResNet18,
        epochs: 1,
        batch_size: 8,
        preprocessing: Preprocessing::imagenet(32),
        augmentation: None,
        copies: 1,
        ..TrainConfig::default()
    };
    let stop = AtomicBool::new(false);
    let session = Session::cpu(&stop, false);
    start_run(&dir.path().join("run"), config, split, &session)?;

    let run = RunDir(dir.path().join("run"));
    let out = dir.path().join("model-int8.safetensors");
    let summary = export_run(&run, Quantization::Int8, &out, 0.001, &Device::Cpu)?;
    let formats: Vec<Quantization> = summary.formats.iter().map(|f| f.quantization).collect();
    assert_eq!(
        formats,
        [Quantization::F32, Quantization::F16, Quantization::Int8]
    );
    assert_eq!(summary.test_scans, 6);
    let (f32_bytes, int8_bytes) = (
        summary.formats[0].file_bytes as f64,
        summary.formats[2].file_bytes as f64,
    );
    assert!(
        (int8_bytes / f32_bytes - 0.25).abs() < 0.02,
        "{int8_bytes} vs {f32_bytes}"
    );
    assert_eq!(summary.formats[0].agreement_with_f32, 1.0);

    let model = ExportedModel::open(&out, &Device::Cpu)?;
    let accuracy = model.manifest.accuracy.expect("accuracy recorded");
    assert_eq!(accuracy.test_scans, 6);
    assert_eq!(accuracy.top1, summary.formats[2].top1);
    let split = run.split()?;
    assert_eq!(split.impostor_names.len(), 1);
    assert_eq!(model.manifest.labels.len(), 3);
    assert!(!model.manifest.labels.contains(&split.impostor_names[0]));
    let calibration = model.manifest.calibration.expect("calibration recorded");
    assert_eq!(
        calibration.impostor_scores, 6,
        "the impostor finger's 6 scans"
    );
    assert_eq!(
        calibration.genuine_scores, 3,
        "one validation scan per finger"
    );
    assert!(calibration.far <= calibration.target_far);
    assert!(calibration.similarity_threshold.is_finite());
    assert_eq!(summary.calibration, Some(calibration));
    assert_eq!(model.manifest.preprocessing.size, 32);
    assert!(run.file("export.json").exists());

    // The door's view of the same run: enrol from training scans, probe with test scans,
    // the held-out finger as the stranger; the model's calibrated threshold by default.
    let det = dir.path().join("det.png");
    let report: serde_json::Value = serde_json::from_str(&stdout_of(
        trainer_command()
            .args(["eval", "--open-set", "--json", "--model"])
            .arg(&out)
            .arg("--run")
            .arg(&run.0)
            .arg("--det")
            .arg(&det),
    )?)?;
    assert_eq!(report["enrolled_identities"], 3);
    assert_eq!(report["genuine_probes"], 6, "the test scans");
    assert_eq!(report["impostor_probes"], 6, "the held-out finger's scans");
    assert_eq!(report["mated_scores"], 6);
    assert_eq!(report["non_mated_scores"], 6 * 2 + 6 * 3);
    let threshold = report["threshold"].as_f64().unwrap_or(f64::NAN) as f32;
    assert_eq!(
        threshold,
        summary
            .calibration
            .as_ref()
            .map_or(f32::NAN, |c| c.similarity_threshold)
    );
    assert!(image::open(&det).is_ok(), "DET curve written");

    // --size feeds the network larger inputs than it was trained with (more of the print at
    // the same scale): the scores move; a side too small for the network is refused.
    let larger: serde_json::Value = serde_json::from_str(&stdout_of(
        trainer_command()
            .args(["eval", "--open-set", "--json", "--size", "48", "--model"])
            .arg(&out)
            .arg("--run")
            .arg(&run.0),
    )?)?;
    assert_eq!(larger["mated_scores"], 6);
    assert_ne!(
        larger["eer_threshold"], report["eer_threshold"],
        "48 px inputs score as 32 px ones: --size was not applied"
    );
    let refused = trainer_command()
        .args(["eval", "--open-set", "--json", "--size", "8", "--model"])
        .arg(&out)
        .arg("--run")
        .arg(&run.0)
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--size"));
    Ok(())
}

#[test]
fn a_background_class_is_trained_never_enrolled_and_calibrated_for_the_trained_fingers_alone(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (data, background) = (dir.path().join("data"), dir.path().join("others"));
    four_fingers(&data)?;
    write_dataset(
        &SynthConfig {
            fingers: 3,
            impressions: 2,
            size: 48,
            seed: 9,
            ..SynthConfig::default()
        },
        &background,
    )?;
    let run = dir.path().join("run");
    stdout_of(
        trainer_command()
            .args([
                "train", "--arch", "resnet18", "--size", "32", "--epochs", "1",
            ])
            .args(["--batch-size", "8", "--copies", "1", "--no-augment"])
            .args([
                "--test-per-identity",
                "2",
                "--impostors",
                "2",
                "--export",
                "int8",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--background")
            .arg(&background)
            .arg("--out")
            .arg(&run),
    )?;
    let split = RunDir(run.clone()).split()?;
    assert_eq!(
        split.background(),
        Some(2),
        "two fingers, then the background"
    );
    assert_eq!(split.train.len(), 2 * 3 + 6);
    let model = ExportedModel::open(&run.join("model-int8.safetensors"), &Device::Cpu)?;
    assert_eq!(
        model.manifest.labels.last().map(String::as_str),
        Some(fingerprint_common::BACKGROUND_LABEL)
    );
    let calibration = model.manifest.calibration.expect("calibration recorded");
    // No fold enrols a held-out finger: the genuine scores are the trained fingers'
    // validation scans only, the impostors all 12 scans of the 2 held-out fingers.
    assert_eq!(
        (calibration.genuine_scores, calibration.impostor_scores),
        (2, 12)
    );

    let report: serde_json::Value = serde_json::from_str(&stdout_of(
        trainer_command()
            .args(["eval", "--open-set", "--json", "--run"])
            .arg(&run),
    )?)?;
    assert_eq!(report["enrolled_identities"], 2, "the background is nobody");
    // More scans asked than a finger has for training: all its training scans are enrolled,
    // never a test scan, which stays a probe.
    let every_training_scan: serde_json::Value = serde_json::from_str(&stdout_of(
        trainer_command()
            .args([
                "eval",
                "--open-set",
                "--json",
                "--enroll-impressions",
                "100",
            ])
            .arg("--run")
            .arg(&run),
    )?)?;
    assert!(report["genuine_probes"].as_u64().is_some_and(|n| n > 0));
    for field in ["enrolled_identities", "templates", "genuine_probes"] {
        assert_eq!(every_training_scan[field], report[field], "{field}");
    }
    Ok(())
}
