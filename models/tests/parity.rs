//! Numerical parity with torchvision: same weights (by formula), same input, same outputs.
//! Expected numbers come from `scripts/make_parity_fixture.py` (torch + torchvision).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{loss::cross_entropy, VarBuilder, VarMap};
use fingerprint_models::{formula, Arch, ResNet};
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

fn fixture() -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision_parity.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// Compares a tensor with a fixture entry (sampled values and the full L2 norm); returns the
/// relative error of the samples and of the norm.
fn compare(what: &str, actual: &Tensor, expected: &Value) -> Result<()> {
    let flat = actual
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    assert_eq!(
        flat.len() as u64,
        expected["numel"].as_u64().context("numel")?,
        "{what}: size"
    );
    let idx: Vec<usize> = serde_json::from_value(expected["idx"].clone())?;
    let want: Vec<f64> = serde_json::from_value(expected["values"].clone())?;
    let got: Vec<f64> = idx.iter().map(|&i| flat[i]).collect();
    let diff: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let scale: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    let rel = diff / scale.max(1e-30);
    let norm = flat.iter().map(|v| v * v).sum::<f64>().sqrt();
    let want_norm = expected["norm"].as_f64().context("norm")?;
    let rel_norm = (norm - want_norm).abs() / want_norm.max(1e-30);
    println!("{what}: relative error {rel:.2e} (samples), {rel_norm:.2e} (norm)");
    assert!(
        rel <= TOLERANCE,
        "{what}: relative error {rel:e} > {TOLERANCE:e}\n got {got:?}\nwant {want:?}"
    );
    assert!(rel_norm <= TOLERANCE, "{what}: norm {norm} vs {want_norm}");
    Ok(())
}

fn build(arch: Arch, classes: usize, dtype: DType) -> Result<(VarMap, ResNet)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let model = ResNet::new(arch, classes, vb)?;
    formula::fill_varmap(&varmap)?;
    Ok((varmap, model))
}

fn check_arch(arch: Arch) -> Result<()> {
    let doc = fixture()?;
    let classes = doc["num_classes"].as_u64().context("num_classes")? as usize;
    let shape: Vec<usize> = serde_json::from_value(doc["input_shape"].clone())?;
    let targets: Vec<u32> = serde_json::from_value(doc["targets"].clone())?;
    let reference = &doc["archs"][arch.name()];
    let x = formula::input((shape[0], shape[1], shape[2], shape[3]), &Device::Cpu)?;

    // Eval mode, float32: running statistics.
    let (_, model) = build(arch, classes, DType::F32)?;
    let (logits, features) = model.forward_with_features(&x, false)?;
    compare(
        &format!("{arch} eval logits"),
        &logits,
        &reference["eval"]["logits"],
    )?;
    compare(
        &format!("{arch} eval features"),
        &features,
        &reference["eval"]["features"],
    )?;

    // Train mode, float64 like the reference (the fixture's script says why): batch
    // statistics, running statistics updated, gradients.
    let (varmap, model) = build(arch, classes, DType::F64)?;
    let x = x.to_dtype(DType::F64)?;
    let (logits, features) = model.forward_with_features(&x, true)?;
    let train = &reference["train"];
    compare(&format!("{arch} train logits"), &logits, &train["logits"])?;
    compare(
        &format!("{arch} train features"),
        &features,
        &train["features"],
    )?;
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?;
    let loss = cross_entropy(&logits, &targets)?;
    let want_loss = train["loss"].as_f64().context("loss")?;
    let got_loss = loss.to_scalar::<f64>()?;
    assert!(
        (got_loss - want_loss).abs() / want_loss <= TOLERANCE,
        "loss {got_loss} vs {want_loss}"
    );
    let grads = loss.backward()?;
    let vars = varmap.data().lock().expect("var map");
    for (key, expected) in train.as_object().context("train")? {
        if let Some(param) = key.strip_prefix("grad_") {
            let grad = grads.get(vars[param].as_tensor()).context("no gradient")?;
            compare(&format!("{arch} d loss / d {param}"), grad, expected)?;
        } else if key.contains("running") {
            compare(
                &format!("{arch} {key} after one train step"),
                vars[key].as_tensor(),
                expected,
            )?;
        }
    }
    Ok(())
}

#[test]
fn resnet18_matches_torchvision() -> Result<()> {
    check_arch(Arch::ResNet18)
}

#[test]
fn resnet50_matches_torchvision() -> Result<()> {
    check_arch(Arch::ResNet50)
}
