//! `trainer export`: a run's best model measured in every format and written for the daemon.

use std::sync::atomic::AtomicBool;

use anyhow::Result;
use candle_core::Device;
use fingerprint_common::{Preprocessing, ScanLimits};
use fingerprint_models::export::{ExportedModel, Quantization};
use fingerprint_models::Arch;
use trainer::dataset::{Dataset, Layout, Split, SplitConfig};
use trainer::export::export_run;
use trainer::synth::{write_dataset, SynthConfig};
use trainer::train::{start_run, RunDir, Session, TrainConfig};

#[test]
fn export_measures_every_format_and_records_it_in_the_manifest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    write_dataset(
        &SynthConfig {
            fingers: 3,
            impressions: 6,
            size: 48,
            seed: 2,
        },
        &data,
    )?;
    let split = Split::new(
        &Dataset::load(&[data], &Layout::Auto)?,
        SplitConfig {
            test_per_identity: 2,
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
    let session = Session {
        device: Device::Cpu,
        limits: ScanLimits::default(),
        stop: &stop,
        verbose: false,
        on_epoch: None,
    };
    start_run(&dir.path().join("run"), config, split, &session)?;

    let run = RunDir(dir.path().join("run"));
    let out = dir.path().join("model-int8.safetensors");
    let summary = export_run(&run, Quantization::Int8, &out, &Device::Cpu)?;
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
    assert_eq!(model.manifest.labels, ["1", "2", "3"]);
    assert_eq!(model.manifest.preprocessing.size, 32);
    assert!(run.file("export.json").exists());
    Ok(())
}
