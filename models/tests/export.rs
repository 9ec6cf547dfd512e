//! Exported models: batch-norm folding, round trips in every format, and refusal of every
//! kind of bad file with its own error.

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{ModuleT, VarMap};
use fingerprint_common::Preprocessing;
use fingerprint_models::export::{
    fold_batch_norm, write_exported, ExportError, ExportedModel, FoldedResNet, Manifest,
    Quantization, DATA_ALIGNMENT, FORMAT_NAME, FORMAT_VERSION, MANIFEST_KEY,
};
use fingerprint_models::{formula, Arch, ResNet};

const CLASSES: usize = 5;

fn trained_like(arch: Arch) -> Result<(VarMap, ResNet)> {
    // Formula weights give every batch norm non-trivial statistics to fold.
    Ok(formula::resnet(arch, CLASSES)?)
}

fn manifest(arch: Arch, quantization: Quantization) -> Manifest {
    manifest_with_classes(arch, CLASSES, quantization)
}

fn manifest_with_classes(arch: Arch, classes: usize, quantization: Quantization) -> Manifest {
    Manifest::new(
        arch,
        (0..classes).map(|i| format!("finger-{i}")).collect(),
        Preprocessing::imagenet(64),
        quantization,
        "test".into(),
    )
}

fn relative_error(a: &Tensor, b: &Tensor) -> Result<f32> {
    let diff = (a - b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    Ok(diff / b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?)
}

#[test]
fn folding_batch_norm_leaves_eval_outputs_unchanged() -> Result<()> {
    for arch in Arch::ALL {
        let (_, model) = trained_like(arch)?;
        let x = formula::input((2, 3, 64, 64), &Device::Cpu)?;
        let reference = model.forward_t(&x, false)?;
        let folded = FoldedResNet::new(arch, &fold_batch_norm(&model)?, &Device::Cpu)?;
        let err = relative_error(&folded.forward(&x)?, &reference)?;
        println!("{arch}: relative error after folding {err:.2e}");
        assert!(err <= 1e-5, "{arch}: {err}");
    }
    Ok(())
}

#[test]
fn every_format_round_trips() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, model) = trained_like(Arch::ResNet18)?;
    let weights = fold_batch_norm(&model)?;
    let x = formula::input((4, 3, 64, 64), &Device::Cpu)?;
    let reference = model.forward_t(&x, false)?;
    let mut sizes = Vec::new();
    for (q, tolerance) in [
        (Quantization::F32, 1e-6),
        (Quantization::F16, 5e-3),
        (Quantization::Int8, 5e-2),
    ] {
        let path = dir.path().join(format!("model-{q}.safetensors"));
        let written = write_exported(&path, &weights, manifest(Arch::ResNet18, q))?;
        let loaded = ExportedModel::open(&path, &Device::Cpu)?;
        assert_eq!(loaded.manifest, written);
        assert_eq!(loaded.manifest.format, FORMAT_NAME);
        assert_eq!(loaded.manifest.labels[4], "finger-4");
        let err = relative_error(&loaded.network.forward(&x)?, &reference)?;
        println!("{q}: relative error {err:.2e}, {} bytes", loaded.file_size);
        assert!(err <= tolerance, "{q}: {err}");
        sizes.push(loaded.file_size as f64);
    }
    let (f32_size, f16_size, int8_size) = (sizes[0], sizes[1], sizes[2]);
    assert!(
        (f16_size / f32_size - 0.5).abs() < 0.02,
        "f16 is half of f32"
    );
    assert!(
        (int8_size / f32_size - 0.25).abs() < 0.02,
        "int8 is a quarter of f32"
    );
    Ok(())
}

#[test]
fn packed_int8_weights_start_on_cache_lines() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Even class counts: an odd one leaves the f32 tensors 4 bytes off the 8 bytes the header
    // pads to, and the weights where they fall (the file reads the same).
    for classes in [6, 148] {
        let (_, model) = formula::resnet(Arch::ResNet18, classes)?;
        let path = dir.path().join(format!("model-{classes}.safetensors"));
        let manifest = manifest_with_classes(Arch::ResNet18, classes, Quantization::Int8);
        write_exported(&path, &fold_batch_norm(&model)?, manifest)?;
        let bytes = std::fs::read(&path)?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&bytes)?;
        let starts: Vec<(String, usize)> = metadata
            .tensors()
            .into_iter()
            .filter(|(_, t)| t.dtype == safetensors::Dtype::I8)
            .map(|(name, t)| (name, 8 + header_len + t.data_offsets.0))
            .collect();
        assert!(starts.len() > 10, "{classes}: int8 tensors {starts:?}");
        for (name, start) in &starts {
            assert_eq!(
                start % DATA_ALIGNMENT,
                0,
                "{classes} classes: {name} at {start}"
            );
        }
        ExportedModel::open(&path, &Device::Cpu)?;
    }
    Ok(())
}

fn write_valid(dir: &Path) -> Result<std::path::PathBuf> {
    let (_, model) = trained_like(Arch::ResNet18)?;
    let path = dir.join("model.safetensors");
    write_exported(
        &path,
        &fold_batch_norm(&model)?,
        manifest(Arch::ResNet18, Quantization::Int8),
    )?;
    Ok(path)
}

#[test]
fn truncated_files_are_malformed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_valid(dir.path())?;
    let bytes = std::fs::read(&path)?;
    for cut in [0, 5, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut])?;
        let err = ExportedModel::open(&path, &Device::Cpu)
            .err()
            .expect("must fail");
        assert!(
            matches!(err, ExportError::Malformed { .. }),
            "cut at {cut}: {err}"
        );
    }
    Ok(())
}

#[test]
fn a_flipped_data_byte_fails_the_digest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_valid(dir.path())?;
    let mut bytes = std::fs::read(&path)?;
    let last = bytes.len() - 10;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    let err = ExportedModel::open(&path, &Device::Cpu)
        .err()
        .expect("must fail");
    assert!(matches!(err, ExportError::DigestMismatch { .. }), "{err}");
    Ok(())
}

/// Rewrites the safetensors header JSON of a file (its length prefix kept valid).
fn with_header(path: &Path, edit: impl Fn(&mut serde_json::Value)) -> Result<()> {
    let bytes = std::fs::read(path)?;
    let n = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])?;
    edit(&mut header);
    let mut new_header = serde_json::to_vec(&header)?;
    while new_header.len() % 8 != 0 {
        new_header.push(b' ');
    }
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend(new_header);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out)?;
    Ok(())
}

/// Rewrites the manifest of a valid exported file.
fn with_manifest(path: &Path, edit: impl Fn(&mut serde_json::Value)) -> Result<()> {
    with_header(path, |header| {
        let text = header["__metadata__"][MANIFEST_KEY]
            .as_str()
            .unwrap_or("{}");
        let mut manifest: serde_json::Value =
            serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        edit(&mut manifest);
        header["__metadata__"][MANIFEST_KEY] = serde_json::Value::String(manifest.to_string());
    })
}

#[test]
fn manifest_problems_each_get_their_own_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_valid(dir.path())?;
    let original = std::fs::read(&path)?;
    let open = || {
        ExportedModel::open(&path, &Device::Cpu)
            .err()
            .expect("must fail")
    };

    with_manifest(&path, |m| {
        m["version"] = serde_json::json!(FORMAT_VERSION + 1)
    })?;
    assert!(
        matches!(open(), ExportError::UnsupportedVersion { version, .. } if version == FORMAT_VERSION + 1),
        "{}",
        open()
    );

    std::fs::write(&path, &original)?;
    with_manifest(&path, |m| m["num_classes"] = serde_json::json!(7))?;
    assert!(
        matches!(open(), ExportError::BadManifest { .. }),
        "{}",
        open()
    );

    std::fs::write(&path, &original)?;
    with_manifest(&path, |m| m["arch"] = serde_json::json!("resnet34"))?;
    assert!(
        matches!(open(), ExportError::TensorMismatch { .. }),
        "{}",
        open()
    );

    std::fs::write(&path, &original)?;
    with_manifest(&path, |m| m["quantization"] = serde_json::json!("f16"))?;
    let err = open();
    assert!(matches!(err, ExportError::TensorMismatch { .. }), "{err}");
    assert!(err.to_string().contains("layer1.0.conv1.weight"), "{err}");
    Ok(())
}

#[test]
fn a_safetensors_file_without_manifest_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_valid(dir.path())?;
    // The same tensors, the metadata (and with it the manifest) removed.
    with_header(&path, |header| {
        if let Some(h) = header.as_object_mut() {
            h.remove("__metadata__");
        }
    })?;
    let err = ExportedModel::open(&path, &Device::Cpu)
        .err()
        .expect("must fail");
    assert!(matches!(err, ExportError::NoManifest { .. }), "{err}");
    Ok(())
}

#[test]
fn a_plain_checkpoint_is_not_an_exported_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (varmap, _) = trained_like(Arch::ResNet18)?;
    let path = dir.path().join("best.safetensors");
    fingerprint_models::checkpoint::save_varmap(&varmap, &path)?;
    let err = ExportedModel::open(&path, &Device::Cpu)
        .err()
        .expect("must fail");
    assert!(
        matches!(err, ExportError::TrainingCheckpoint { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("trainer export"), "{err}");
    let missing = ExportedModel::open(&dir.path().join("none.safetensors"), &Device::Cpu)
        .err()
        .expect("fail");
    assert!(matches!(missing, ExportError::Io { .. }));
    Ok(())
}
