//! Loading pretrained checkpoints written with torchvision's names and shapes.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fingerprint_models::checkpoint::{read_checkpoint, save_varmap};
use fingerprint_models::{formula, load_checkpoint, Arch, ModelError, ResNet};

fn network(arch: Arch, classes: usize) -> Result<(VarMap, ResNet)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ResNet::new(arch, classes, vb)?;
    Ok((varmap, model))
}

/// Writes a checkpoint as torchvision's `state_dict()` would hold it: formula weights, plus the
/// `num_batches_tracked` counters a real checkpoint carries.
fn write_checkpoint(arch: Arch, classes: usize, path: &Path) -> Result<HashMap<String, Tensor>> {
    let (varmap, _) = network(arch, classes)?;
    formula::fill_varmap(&varmap)?;
    let mut tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("var map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    tensors.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[7i64], &Device::Cpu)?.squeeze(0)?,
    );
    candle_core::safetensors::save(&tensors, path)?;
    Ok(tensors)
}

fn value(varmap: &VarMap, name: &str) -> Result<Vec<f32>> {
    let vars = varmap.data().lock().expect("var map");
    Ok(vars[name].as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

fn same(a: &Tensor, b: &[f32]) -> Result<bool> {
    Ok(a.flatten_all()?.to_vec1::<f32>()? == b)
}

#[test]
fn imagenet_resnet50_checkpoint_loads_into_a_10_class_network() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("resnet50-imagenet.safetensors");
    let file = write_checkpoint(Arch::ResNet50, 1000, &path)?;

    let (varmap, model) = network(Arch::ResNet50, 10)?;
    let head_before = value(&varmap, "fc.weight")?;
    let report = load_checkpoint(&path, &varmap, Arch::ResNet50)?;
    assert!(report.head_reinitialised);
    assert_eq!(report.file_classes, Some(1000));
    // 161 backbone tensors of torchvision's resnet50 state dict, minus nothing, head skipped.
    assert_eq!(report.loaded, varmap.all_vars().len() - 2);
    for name in [
        "conv1.weight",
        "layer3.5.conv2.weight",
        "layer4.2.bn3.running_var",
        "layer2.0.downsample.1.bias",
    ] {
        assert!(
            same(&file[name], &value(&varmap, name)?)?,
            "{name} not loaded"
        );
    }
    assert_eq!(
        value(&varmap, "fc.weight")?,
        head_before,
        "head must keep its initialisation"
    );
    let logits =
        model.forward_with_features(&formula::input((1, 3, 64, 64), &Device::Cpu)?, false)?;
    assert_eq!(logits.0.dims(), &[1, 10]);
    assert_eq!(logits.1.dims(), &[1, 2048]);
    Ok(())
}

#[test]
fn a_head_with_the_same_class_count_is_loaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("resnet18.safetensors");
    let file = write_checkpoint(Arch::ResNet18, 10, &path)?;
    let (varmap, _) = network(Arch::ResNet18, 10)?;
    let report = load_checkpoint(&path, &varmap, Arch::ResNet18)?;
    assert!(!report.head_reinitialised);
    assert_eq!(report.loaded, varmap.all_vars().len());
    assert!(same(&file["fc.weight"], &value(&varmap, "fc.weight")?)?);
    assert!(same(&file["fc.bias"], &value(&varmap, "fc.bias")?)?);
    Ok(())
}

#[test]
fn our_own_checkpoints_round_trip() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("saved.safetensors");
    let (saved, _) = network(Arch::ResNet18, 4)?;
    save_varmap(&saved, &path)?;
    let (loaded, _) = network(Arch::ResNet18, 4)?;
    load_checkpoint(&path, &loaded, Arch::ResNet18)?;
    for name in ["conv1.weight", "layer4.1.bn2.running_mean", "fc.bias"] {
        assert_eq!(value(&saved, name)?, value(&loaded, name)?, "{name}");
    }
    Ok(())
}

#[test]
fn a_mismatch_lists_missing_unexpected_and_misshapen_names_and_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broken.safetensors");
    let (source, _) = network(Arch::ResNet18, 10)?;
    let mut tensors: HashMap<String, Tensor> = source
        .data()
        .lock()
        .expect("var map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    tensors.remove("layer1.0.conv1.weight");
    tensors.insert(
        "layer9.0.conv1.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu)?,
    );
    tensors.insert(
        "layer2.0.bn1.weight".into(),
        Tensor::zeros(5, DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&tensors, &path)?;

    let (varmap, _) = network(Arch::ResNet18, 10)?;
    let before = value(&varmap, "conv1.weight")?;
    let err = load_checkpoint(&path, &varmap, Arch::ResNet18).expect_err("must not load");
    let ModelError::CheckpointMismatch { mismatch, .. } = &err else {
        panic!("wrong error: {err}");
    };
    assert_eq!(mismatch.missing, vec!["layer1.0.conv1.weight".to_string()]);
    assert_eq!(
        mismatch.unexpected,
        vec!["layer9.0.conv1.weight".to_string()]
    );
    assert_eq!(
        mismatch.wrong_shape,
        vec![("layer2.0.bn1.weight".to_string(), vec![128], vec![5])]
    );
    let message = err.to_string();
    for needle in [
        "broken.safetensors",
        "resnet18",
        "layer1.0.conv1.weight",
        "layer9.0.conv1.weight",
        "[128] vs [5]",
    ] {
        assert!(
            message.contains(needle),
            "message lacks {needle}: {message}"
        );
    }
    assert_eq!(
        value(&varmap, "conv1.weight")?,
        before,
        "a failed load must change nothing"
    );
    Ok(())
}

#[test]
fn a_resnet18_checkpoint_is_refused_by_resnet50_with_a_readable_list() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("r18.safetensors");
    write_checkpoint(Arch::ResNet18, 10, &path)?;
    let (varmap, _) = network(Arch::ResNet50, 10)?;
    let message = load_checkpoint(&path, &varmap, Arch::ResNet50)
        .expect_err("must fail")
        .to_string();
    assert!(message.contains("missing from the file"), "{message}");
    assert!(message.contains("with the wrong shape"), "{message}");
    assert!(message.contains("more"), "long lists are cut: {message}");
    assert!(message.lines().count() < 80, "{message}");
    Ok(())
}

#[test]
fn unreadable_files_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.safetensors");
    write_checkpoint(Arch::ResNet18, 2, &good)?;
    let bytes = std::fs::read(&good)?;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "random",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("truncated-zip", b"PK\x03\x04 not really a zip".to_vec()),
        ("header-only", bytes[..100].to_vec()),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content)?;
        let err = read_checkpoint(&path).expect_err(name);
        match err {
            ModelError::UnreadableCheckpoint { path: p, .. } | ModelError::Io { path: p, .. } => {
                assert_eq!(p, path, "{name}")
            }
            other => panic!("{name}: wrong error {other}"),
        }
    }
    let missing = dir.path().join("absent.pth");
    assert!(matches!(
        read_checkpoint(&missing),
        Err(ModelError::Io { .. })
    ));
    Ok(())
}

/// `.pth` files written by `torch.save` (see `scripts/make_parity_fixture.py --pth`): a bare
/// state dict with a `module.` prefix, half-precision and transposed tensors, and the same
/// wrapped as `{"state_dict": ...}`.
#[test]
fn pytorch_zip_checkpoints_are_read() -> Result<()> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for file in ["tiny_state_dict.pth", "tiny_wrapped.pth"] {
        let tensors = read_checkpoint(&fixtures.join(file))?;
        let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["bn1.running_var", "conv1.weight", "fc.weight"],
            "{file}"
        );
        let expected = |name: &str, shape: &[usize]| formula::parameter(name, shape);
        let conv = tensors["conv1.weight"].to_dtype(DType::F32)?;
        assert_eq!(conv.dims(), &[2, 3, 1, 1]);
        assert!(
            same(&conv, &expected("conv1.weight", &[2, 3, 1, 1]))?,
            "{file}"
        );
        let var = tensors["bn1.running_var"].to_dtype(DType::F32)?;
        let want: Vec<f32> = expected("bn1.running_var", &[4])
            .into_iter()
            .map(|v| half::f16::from_f32(v).to_f32())
            .collect();
        assert!(same(&var, &want)?, "{file}: f16 tensor");
        // Saved as the transpose of a (2, 3) tensor: values follow the logical layout.
        let fc = tensors["fc.weight"].to_dtype(DType::F32)?;
        assert_eq!(fc.dims(), &[3, 2]);
        let base = Tensor::from_vec(expected("fc.weight", &[2, 3]), (2, 3), &Device::Cpu)?;
        assert!(
            same(
                &fc,
                &base.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?
            )?,
            "{file}: strides"
        );
    }
    Ok(())
}
