//! The network trains: gradients reach every parameter, and train mode updates batch-norm
//! running statistics.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{loss::cross_entropy, AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use fingerprint_models::resnet::{is_buffer, trainable_vars};
use fingerprint_models::{formula, Arch, ResNet};

fn snapshot(varmap: &VarMap) -> Result<Vec<(String, Vec<f32>)>> {
    let vars = varmap.data().lock().expect("var map");
    let mut all = vars
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
        .collect::<Result<Vec<_>>>()?;
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

fn one_adam_step_changes_everything(arch: Arch) -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = ResNet::new(arch, 5, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let trainable = trainable_vars(&varmap);
    assert!(trainable.iter().all(|(name, _)| !is_buffer(name)));
    assert!(
        trainable.len() < varmap.all_vars().len(),
        "running statistics are not trained"
    );

    let before = snapshot(&varmap)?;
    let params = ParamsAdamW {
        lr: 1e-4,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut adam = AdamW::new(trainable.into_iter().map(|(_, v)| v).collect(), params)?;
    let x = formula::input((4, 3, 64, 64), &dev)?;
    let y = Tensor::new(&[0u32, 1, 2, 3], &dev)?;
    let loss = cross_entropy(&model.forward_with_features(&x, true)?.0, &y)?;
    adam.backward_step(&loss)?;
    let after = snapshot(&varmap)?;

    let unchanged: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|((_, a), (_, b))| a == b)
        .map(|((name, _), _)| name)
        .collect();
    assert!(
        unchanged.is_empty(),
        "{arch}: unchanged after one step: {unchanged:?}"
    );
    Ok(())
}

#[test]
fn resnet18_one_step_updates_every_parameter_and_running_statistic() -> Result<()> {
    one_adam_step_changes_everything(Arch::ResNet18)
}

#[test]
fn resnet50_one_step_updates_every_parameter_and_running_statistic() -> Result<()> {
    one_adam_step_changes_everything(Arch::ResNet50)
}

#[test]
fn eval_mode_leaves_running_statistics_alone_and_is_deterministic() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = ResNet::new(
        Arch::ResNet34,
        3,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    let before = snapshot(&varmap)?;
    let x = formula::input((2, 3, 48, 48), &dev)?;
    let a = model
        .forward_with_features(&x, false)?
        .0
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = model
        .forward_with_features(&x, false)?
        .0
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(a, b);
    assert_eq!(snapshot(&varmap)?, before);
    Ok(())
}
