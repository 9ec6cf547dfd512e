//! Networks as the commands take them: a new one for a run (ImageNet-initialised or seeded),
//! a run's checkpoint, or an exported file.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use fingerprint_common::Preprocessing;
use fingerprint_models::export::Network;
use fingerprint_models::resnet::initialize_seeded;
use fingerprint_models::{load_checkpoint, Arch, ResNet};

use crate::run::{RunDir, RunInfo};

/// A network with `classes` outputs, initialised from `seed` (and `pretrained`, if given).
pub fn build_model(
    arch: Arch,
    classes: usize,
    device: &Device,
    seed: u64,
    pretrained: Option<&Path>,
) -> Result<(VarMap, ResNet)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = ResNet::new(arch, classes, vb)?;
    initialize_seeded(&varmap, seed)?;
    if let Some(path) = pretrained {
        let report = load_checkpoint(path, &varmap, arch)?;
        if report.head_reinitialised {
            eprintln!(
                "loaded {} tensors from {}; its head ({} classes) was not used: the last layer starts fresh with {classes}",
                report.loaded,
                path.display(),
                report.file_classes.map_or("no".into(), |c| c.to_string()),
            );
        }
    }
    Ok((varmap, model))
}

/// Loads a trained network from a run folder's checkpoint (`best.safetensors` by default).
pub fn load_run_model(run: &RunDir, device: &Device, file: &str) -> Result<(RunInfo, ResNet)> {
    let info = run.info()?;
    let (_, model) = build_model(
        info.config.arch,
        info.identities.len(),
        device,
        0,
        Some(&run.file(file)),
    )?;
    Ok((info, model))
}

/// A network to evaluate: a trained one (eval mode) or an exported file's.
pub enum Classifier<'a> {
    Trained(&'a ResNet),
    Exported(&'a Network),
}

impl Classifier<'_> {
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Classifier::Trained(m) => m.forward_t(x, false),
            Classifier::Exported(m) => m.forward(x),
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Classifier::Trained(m) => m.num_classes(),
            Classifier::Exported(m) => m.num_classes(),
        }
    }

    /// Pooled features (the templates of gallery matching, before normalisation).
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Classifier::Trained(m) => m.features_t(x, false),
            Classifier::Exported(m) => m.features(x),
        }
    }
}

/// An owned network with what is needed to feed it and name its outputs: a run's checkpoint
/// or an exported file, as the `eval`, `predict` and `saliency` commands take it.
pub struct LoadedModel {
    network: LoadedNetwork,
    pub labels: Vec<String>,
    pub preprocessing: Preprocessing,
    /// Architecture, and the format for an exported file.
    pub description: String,
    /// The open-set similarity threshold calibrated into an exported file.
    pub similarity_threshold: Option<f32>,
}

enum LoadedNetwork {
    Trained(ResNet),
    Exported(Network),
}

impl LoadedModel {
    /// An exported model file.
    pub fn exported(path: &Path, device: &Device) -> Result<Self> {
        let e = fingerprint_models::export::ExportedModel::open(path, device)?;
        Ok(Self {
            description: format!("{} ({})", e.manifest.arch, e.manifest.quantization),
            labels: e.manifest.labels,
            preprocessing: e.manifest.preprocessing,
            similarity_threshold: e.manifest.calibration.map(|c| c.similarity_threshold),
            network: LoadedNetwork::Exported(e.network),
        })
    }

    /// A run folder's checkpoint (`best.safetensors`, `last.safetensors`).
    pub fn from_run(run: &RunDir, device: &Device, file: &str) -> Result<Self> {
        let (info, model) = load_run_model(run, device, file)?;
        if !device.is_cpu() {
            return Ok(Self::trained(
                model,
                info.identities,
                info.config.preprocessing,
            ));
        }
        // On the CPU, the checkpoint runs as the daemon would run its f32 export: batch norm
        // folded, on our fast path (same outputs as candle's eval mode, several times faster).
        let weights = fingerprint_models::export::fold_batch_norm(&model)?;
        let fast = fingerprint_models::fast::FastResNet::new(model.arch(), &weights)?
            .with_grey_scans(info.config.preprocessing.channels());
        Ok(Self {
            description: model.arch().to_string(),
            labels: info.identities,
            preprocessing: info.config.preprocessing,
            similarity_threshold: None,
            network: LoadedNetwork::Exported(Network::Fast(Box::new(fast))),
        })
    }

    /// A network already built.
    pub fn trained(model: ResNet, labels: Vec<String>, preprocessing: Preprocessing) -> Self {
        Self {
            description: model.arch().to_string(),
            labels,
            preprocessing,
            similarity_threshold: None,
            network: LoadedNetwork::Trained(model),
        }
    }

    /// The exported file if one is given, else the run's checkpoint `file`.
    pub fn choose(
        model: Option<&Path>,
        run: Option<&RunDir>,
        device: &Device,
        file: &str,
    ) -> Result<Self> {
        match (model, run) {
            (Some(path), _) => Self::exported(path, device),
            (None, Some(run)) => Self::from_run(run, device, file),
            (None, None) => bail!("give --model FILE or --run RUN"),
        }
    }

    pub fn classifier(&self) -> Classifier<'_> {
        match &self.network {
            LoadedNetwork::Trained(m) => Classifier::Trained(m),
            LoadedNetwork::Exported(m) => Classifier::Exported(m),
        }
    }
}
