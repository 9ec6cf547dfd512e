//! Fine-tuning as the method does it: cross-entropy plus lambda times the squared Frobenius
//! norm of the last layer's weights, Adam at 1e-4, batches of 24, the best model chosen on the
//! validation split, top-1 and top-5 accuracy on the untouched test split.
//!
//! A run lives in a folder that holds everything needed to reproduce and audit it:
//!
//! | file | what |
//! |---|---|
//! | `run.json` | the configuration, the identities (class labels), the device |
//! | `split.json` | the train/validation/test split |
//! | `metrics.jsonl` | one JSON line per epoch |
//! | `curves.png` | loss and accuracy curves |
//! | `best.safetensors` | the weights of the best epoch by validation accuracy (torchvision names) |
//! | `last.safetensors`, `last.adam.safetensors`, `state.json` | where to resume from |
//! | `report.json` | test accuracy of the best model and the misidentified scans |

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{loss::cross_entropy, Module, ModuleT, VarBuilder, VarMap};
use fingerprint_common::{Preprocessing, ScanLimits};
use fingerprint_models::checkpoint::save_varmap;
use fingerprint_models::export::Network;
use fingerprint_models::resnet::{initialize_seeded, trainable_vars};
use fingerprint_models::{load_checkpoint, Arch, ResNet};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::Augmentation;
use crate::dataset::Split;
use crate::loader::{for_each_plain_batch, make_batch, BatchMode, ImageCache};
use crate::optim::{Adam, AdamConfig};
use crate::plot;

/// Everything that defines a training run (saved as `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub arch: Arch,
    /// Checkpoint the backbone starts from (torchvision or timm names); none = from scratch.
    pub pretrained: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// How the learning rate moves over the run (runs saved before this field: constant).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Weight of the squared Frobenius norm of the last layer's weights in the loss.
    pub l2: f64,
    pub preprocessing: Preprocessing,
    /// None: no augmentation.
    pub augmentation: Option<Augmentation>,
    /// Each training scan appears this many times an epoch: once as is, the rest augmented
    /// (the method enlarged its training set about 3x).
    pub copies: usize,
    /// Stop after this many epochs without a better validation accuracy.
    pub patience: Option<usize>,
    /// Train the head only, on features the fixed backbone computes once.
    pub freeze_backbone: bool,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Arch::ResNet50,
            pretrained: None,
            epochs: 100,
            batch_size: 24,
            lr: 1e-4,
            lr_schedule: LrSchedule::Constant,
            l2: 1e-3,
            preprocessing: Preprocessing::imagenet(224),
            augmentation: Some(Augmentation::default()),
            copies: 3,
            patience: Some(20),
            freeze_backbone: false,
            seed: 0,
        }
    }
}

/// How the learning rate moves over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate throughout, as the method trains.
    #[default]
    Constant,
    /// A linear warm-up from a 25th of the rate over the first tenth of the steps, then a
    /// cosine decay to zero at the last step. From scratch, the decay is what makes the
    /// features settle: on synthetic prints it lifted rank-1 of fingers the network never
    /// saw (see the README).
    Cosine,
}

impl LrSchedule {
    /// The rate for step `step` (from 0) of `total`, given the configured `base` rate.
    pub fn rate(self, base: f64, step: u64, total: u64) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let total = total.max(1) as f64;
                let t = (step as f64 / total).min(1.0);
                let warmup = 0.1;
                if t < warmup {
                    base * (0.04 + 0.96 * t / warmup)
                } else {
                    let progress = (t - warmup) / (1.0 - warmup);
                    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

/// `run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub config: TrainConfig,
    /// Class labels, in output order.
    pub identities: Vec<String>,
    pub device: String,
    pub version: String,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub images_per_second: f64,
    pub seconds: f64,
}

/// `state.json`: where a run stands, for resuming.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub best_epoch: Option<usize>,
    pub best_val_accuracy: f64,
    pub best_val_loss: f64,
    pub finished: bool,
}

/// Accuracy on a split part, with what went wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub scans: usize,
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub misidentified: Vec<Misidentified>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Misidentified {
    pub path: PathBuf,
    pub identity: String,
    pub predicted: String,
    pub probability: f32,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub arch: Arch,
    pub identities: usize,
    pub best_epoch: Option<usize>,
    pub val_accuracy: f64,
    pub test: Evaluation,
    pub train_seconds: f64,
}

/// The paths of a run folder.
#[derive(Clone, Debug)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn info(&self) -> Result<RunInfo> {
        read_json(&self.file("run.json"))
    }
    pub fn split(&self) -> Result<Split> {
        Split::load(&self.file("split.json")).map_err(Into::into)
    }
    pub fn state(&self) -> Result<RunState> {
        read_json(&self.file("state.json"))
    }
    pub fn metrics(&self) -> Result<Vec<EpochMetrics>> {
        let path = self.file("metrics.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("{}: bad line", path.display()))
            })
            .collect()
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Writes JSON through a temporary file and a rename, so a crash never leaves half a file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

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

/// Cross-entropy plus `l2` times the squared Frobenius norm of the head's weight; returns the
/// total and the cross-entropy alone.
pub fn method_loss(
    logits: &Tensor,
    labels: &Tensor,
    head_weight: &Tensor,
    l2: f64,
) -> Result<(Tensor, Tensor)> {
    let ce = cross_entropy(logits, labels)?;
    let total = (&ce + (head_weight.sqr()?.sum_all()? * l2)?)?;
    Ok((total, ce))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>10} [{{bar:30}}] {{pos}}/{{len}} {{elapsed}}<{{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
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
        let fast = fingerprint_models::fast::FastResNet::new(model.arch(), &weights)?;
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

/// Class probabilities (softmax, eval mode) for every scan of a cache.
pub fn predict_probabilities(
    model: &Classifier,
    cache: &ImageCache,
    pre: &Preprocessing,
    device: &Device,
    batch_size: usize,
) -> Result<Tensor> {
    let mut outputs = Vec::new();
    for_each_plain_batch(cache, pre, device, batch_size, |x| {
        let logits = model.logits(&x)?;
        outputs.push(candle_nn::ops::softmax(&logits, D::Minus1)?.to_device(&Device::Cpu)?);
        Ok(())
    })?;
    if outputs.is_empty() {
        return Ok(Tensor::zeros(
            (0, model.num_classes()),
            DType::F32,
            &Device::Cpu,
        )?);
    }
    Ok(Tensor::cat(&outputs, 0)?)
}

/// L2-normalised pooled features of every scan of a cache, as the daemon makes templates.
pub fn predict_embeddings(
    model: &Classifier,
    cache: &ImageCache,
    pre: &Preprocessing,
    device: &Device,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(cache.len());
    for_each_plain_batch(cache, pre, device, batch_size, |x| {
        let features = model
            .features(&x)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        out.extend(
            features
                .into_iter()
                .map(fingerprint_common::gallery::normalize),
        );
        Ok(())
    })?;
    Ok(out)
}

/// Top-1 and top-5 accuracy, mean cross-entropy and the misidentified scans.
pub fn evaluate_probabilities(
    probs: &Tensor,
    cache: &ImageCache,
    identities: &[String],
) -> Result<Evaluation> {
    let probs = probs.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let (mut top1, mut top5, mut loss) = (0usize, 0usize, 0f64);
    let mut misidentified = Vec::new();
    for (i, row) in probs.iter().enumerate() {
        let label = cache.labels[i] as usize;
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        loss -= f64::from(row[label].max(1e-12)).ln();
        if order[0] == label {
            top1 += 1;
        } else {
            misidentified.push(Misidentified {
                path: cache.paths[i].clone(),
                identity: identities.get(label).cloned().unwrap_or_default(),
                predicted: identities.get(order[0]).cloned().unwrap_or_default(),
                probability: row[order[0]],
            });
        }
        if order.iter().take(5).any(|&c| c == label) {
            top5 += 1;
        }
    }
    let n = probs.len().max(1) as f64;
    Ok(Evaluation {
        scans: probs.len(),
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        loss: loss / n,
        misidentified,
    })
}

/// Options of one invocation that are not part of the run's definition.
pub struct Session<'a> {
    pub device: Device,
    pub limits: ScanLimits,
    /// Set (by Ctrl-C) to stop after the current batch, saving where the run stands.
    pub stop: &'a AtomicBool,
    /// Print per-epoch lines (tests turn this off).
    pub verbose: bool,
    /// Called after each epoch's metrics are saved.
    pub on_epoch: Option<&'a (dyn Fn(&EpochMetrics) + Sync)>,
}

impl<'a> Session<'a> {
    /// On the CPU with the default scan limits and no per-epoch hook.
    pub fn cpu(stop: &'a AtomicBool, verbose: bool) -> Self {
        Self {
            device: Device::Cpu,
            limits: ScanLimits::default(),
            stop,
            verbose,
            on_epoch: None,
        }
    }
}

/// How a call to [`train`] ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Box<Report>),
    Interrupted { epochs_done: usize },
}

/// Starts a new run in `dir` (which must not hold one already).
pub fn start_run(
    dir: &Path,
    config: TrainConfig,
    split: Split,
    session: &Session,
) -> Result<Outcome> {
    if dir.join("run.json").exists() {
        bail!(
            "{} already holds a run: resume it with --resume, or choose another folder",
            dir.display()
        );
    }
    if config.batch_size < 2 && !config.freeze_backbone {
        bail!("batch norm needs batches of at least 2 scans");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let run = RunDir(dir.to_path_buf());
    let info = RunInfo {
        config,
        identities: split.identities.clone(),
        device: format!("{:?}", session.device),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    write_json(&run.file("run.json"), &info)?;
    split.save(&run.file("split.json"))?;
    train(&run, session)
}

/// Trains (or resumes) the run in `run`, to the end or until stopped.
pub fn train(run: &RunDir, session: &Session) -> Result<Outcome> {
    let info = run.info()?;
    let split = run.split()?;
    let config = &info.config;
    let mut state = if run.file("state.json").exists() {
        run.state()?
    } else {
        RunState::default()
    };
    if state.finished {
        bail!("{} is finished; see its report.json", run.0.display());
    }
    let device = &session.device;
    let pre = &config.preprocessing;
    let classes = split.identities.len();
    let started = Instant::now();

    let resuming = state.epochs_done > 0;
    let (varmap, model) = if resuming {
        let (varmap, model) = build_model(config.arch, classes, device, config.seed, None)?;
        load_checkpoint(&run.file("last.safetensors"), &varmap, config.arch)?;
        (varmap, model)
    } else {
        if config.pretrained.is_none() {
            eprintln!("warning: no --pretrained checkpoint: training {} from scratch; accuracy will suffer (ImageNet weights help a lot, see README)", config.arch);
        }
        build_model(
            config.arch,
            classes,
            device,
            config.seed,
            config.pretrained.as_deref(),
        )?
    };
    let params: Vec<_> = trainable_vars(&varmap)
        .into_iter()
        .filter(|(name, _)| !config.freeze_backbone || name.starts_with("fc."))
        .collect();
    let mut adam = Adam::new(
        params,
        AdamConfig {
            lr: config.lr,
            ..AdamConfig::default()
        },
    )?;
    if resuming {
        adam.load(&run.file("last.adam.safetensors"))?;
        eprintln!(
            "resuming {} after epoch {}",
            run.0.display(),
            state.epochs_done
        );
    }

    let load = |samples: &[crate::dataset::Sample], what: &str| -> Result<ImageCache> {
        let pb = bar(samples.len() as u64, what);
        let cache = ImageCache::load(samples, pre, &session.limits, || pb.inc(1))?;
        pb.finish_and_clear();
        Ok(cache)
    };
    let train_cache = load(&split.train, "decode")?;
    let val_cache = load(&split.val, "decode")?;
    let test_cache = load(&split.test, "decode")?;
    let head_weight = model.head().weight().clone();

    // Frozen backbone: features of every copy of every training scan, computed once.
    let frozen = if config.freeze_backbone {
        Some(FrozenFeatures::compute(
            &model,
            &train_cache,
            &val_cache,
            config,
            device,
        )?)
    } else {
        None
    };

    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.file("metrics.jsonl"))
        .with_context(|| format!("opening {}", run.file("metrics.jsonl").display()))?;
    let mut history = run.metrics()?;
    history.truncate(state.epochs_done);

    let slots = train_cache.len() * config.copies.max(1);
    let rest = slots % config.batch_size;
    let per_epoch = slots / config.batch_size + usize::from(rest > 0 && trains_on(rest, config));
    let total_steps = (per_epoch * config.epochs) as u64;
    for epoch in state.epochs_done + 1..=config.epochs {
        let epoch_start = Instant::now();
        let mut order: Vec<(usize, usize)> = (0..slots)
            .map(|slot| (slot % train_cache.len(), slot))
            .collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            config.seed ^ (epoch as u64) << 32,
        ));
        let batches: Vec<&[(usize, usize)]> = order
            .chunks(config.batch_size)
            .filter(|b| trains_on(b.len(), config))
            .collect();
        let pb = bar(batches.len() as u64, &format!("epoch {epoch}"));
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for batch in batches {
            if session.stop.load(Ordering::SeqCst) {
                pb.finish_and_clear();
                return interrupted(run, &varmap, &adam, &state);
            }
            let (logits, labels) = match &frozen {
                Some(f) => {
                    let labels = batch.iter().map(|&(i, _)| train_cache.labels[i]).collect();
                    (model.head().forward(&f.train_rows(batch, device)?)?, labels)
                }
                None => {
                    let (x, labels) = training_batch(&train_cache, batch, config, epoch, device)?;
                    (model.forward_t(&x, true)?, labels)
                }
            };
            let y = Tensor::new(labels.as_slice(), device)?;
            let (loss, ce) = method_loss(&logits, &y, &head_weight, config.l2)?;
            adam.config.lr = config
                .lr_schedule
                .rate(config.lr, adam.steps_taken(), total_steps);
            adam.backward_step(&loss)?;
            let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            correct += predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
            loss_sum += f64::from(ce.to_scalar::<f32>()?) * batch.len() as f64;
            seen += batch.len();
            pb.inc(1);
            pb.set_message(format!(
                "loss {:.3} acc {:.1}% {:.1} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                seen as f64 / epoch_start.elapsed().as_secs_f64()
            ));
        }
        pb.finish_and_clear();
        let train_seconds = epoch_start.elapsed().as_secs_f64();

        let val = match &frozen {
            Some(f) => f.evaluate_val(&model, &val_cache, &split.identities)?,
            None => {
                let probs = predict_probabilities(
                    &Classifier::Trained(&model),
                    &val_cache,
                    pre,
                    device,
                    config.batch_size,
                )?;
                evaluate_probabilities(&probs, &val_cache, &split.identities)?
            }
        };
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss: val.loss,
            val_accuracy: val.top1,
            images_per_second: seen as f64 / train_seconds,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)?;
        metrics_file.flush()?;
        if session.verbose {
            println!(
                "epoch {epoch:>3}: loss {:.4} train {:.1}% val {:.1}% (val loss {:.3}) {:.1} img/s {:.0} s",
                m.train_loss,
                100.0 * m.train_accuracy,
                100.0 * m.val_accuracy,
                m.val_loss,
                m.images_per_second,
                m.seconds
            );
        }
        if let Some(hook) = session.on_epoch {
            hook(&m);
        }
        history.push(m.clone());

        // Without a validation split the latest epoch is taken.
        let better = split.val.is_empty()
            || state.best_epoch.is_none()
            || m.val_accuracy > state.best_val_accuracy
            || (m.val_accuracy == state.best_val_accuracy && m.val_loss < state.best_val_loss);
        if better {
            state.best_epoch = Some(epoch);
            state.best_val_accuracy = m.val_accuracy;
            state.best_val_loss = m.val_loss;
            save_varmap(&varmap, &run.file("best.safetensors"))?;
        }
        state.epochs_done = epoch;
        save_resume_point(run, &varmap, &adam, &state)?;
        draw_curves(&history, &run.file("curves.png"))?;
        if let (Some(patience), Some(best)) = (config.patience, state.best_epoch) {
            if epoch - best >= patience {
                if session.verbose {
                    println!("early stop: no better validation accuracy for {patience} epochs");
                }
                break;
            }
        }
    }

    // The final report: the best model on the untouched test split.
    let (_, best) = load_run_model(run, device, "best.safetensors")?;
    let probs = predict_probabilities(
        &Classifier::Trained(&best),
        &test_cache,
        pre,
        device,
        config.batch_size,
    )?;
    let test = evaluate_probabilities(&probs, &test_cache, &split.identities)?;
    let report = Report {
        arch: config.arch,
        identities: classes,
        best_epoch: state.best_epoch,
        val_accuracy: state.best_val_accuracy,
        test,
        train_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&run.file("report.json"), &report)?;
    state.finished = true;
    write_json(&run.file("state.json"), &state)?;
    Ok(Outcome::Finished(Box::new(report)))
}

fn save_resume_point(run: &RunDir, varmap: &VarMap, adam: &Adam, state: &RunState) -> Result<()> {
    save_varmap(varmap, &run.file("last.safetensors"))?;
    adam.save(&run.file("last.adam.safetensors"))?;
    write_json(&run.file("state.json"), state)
}

/// Whether a batch of `len` scans is trained on: batch norm cannot normalise a batch of one
/// (a frozen backbone has no batch norm in training).
fn trains_on(len: usize, config: &TrainConfig) -> bool {
    len >= 2 || config.freeze_backbone
}

/// Inputs and labels of a training batch: slots below the training set's size are the
/// scans as they are, the other copies augmented (when augmentation is on).
fn training_batch(
    cache: &ImageCache,
    batch: &[(usize, usize)],
    config: &TrainConfig,
    epoch: usize,
    device: &Device,
) -> Result<(Tensor, Vec<u32>)> {
    let pre = &config.preprocessing;
    let mode = match &config.augmentation {
        Some(augmentation) => BatchMode::Augmented {
            augmentation,
            seed: config.seed,
            epoch: epoch as u64,
            plain_slots: cache.len(),
        },
        None => BatchMode::Plain,
    };
    let (x, labels) = make_batch(cache, batch, pre, mode);
    let s = pre.size as usize;
    Ok((Tensor::from_vec(x, (batch.len(), 3, s, s), device)?, labels))
}

/// Saves the last completed epoch's weights (the interrupted epoch is redone on resume).
fn interrupted(run: &RunDir, varmap: &VarMap, adam: &Adam, state: &RunState) -> Result<Outcome> {
    if state.epochs_done == 0 {
        save_resume_point(run, varmap, adam, state)?;
    }
    Ok(Outcome::Interrupted {
        epochs_done: state.epochs_done,
    })
}

/// Loss and accuracy per epoch as a PNG.
pub fn draw_curves(history: &[EpochMetrics], path: &Path) -> Result<()> {
    let series = |label: &str, color, f: &dyn Fn(&EpochMetrics) -> f64| plot::Series {
        label: label.into(),
        color,
        points: history.iter().map(|m| (m.epoch as f64, f(m))).collect(),
    };
    let panels = [
        plot::Panel {
            title: "loss".into(),
            x_label: "epoch".into(),
            y_label: "cross-entropy".into(),
            series: vec![
                series("train", plot::BLUE, &|m| m.train_loss),
                series("validation", plot::ORANGE, &|m| m.val_loss),
            ],
            y_range: None,
        },
        plot::Panel {
            title: "accuracy".into(),
            x_label: "epoch".into(),
            y_label: "top-1".into(),
            series: vec![
                series("train", plot::BLUE, &|m| m.train_accuracy),
                series("validation", plot::ORANGE, &|m| m.val_accuracy),
            ],
            y_range: Some((0.0, 1.0)),
        },
    ];
    plot::chart(&panels)
        .save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Pooled features of the fixed backbone, computed once (feature-extraction mode).
struct FrozenFeatures {
    /// Row `slot` holds the features of training copy `slot`.
    train: Tensor,
    val: Tensor,
}

impl FrozenFeatures {
    fn compute(
        model: &ResNet,
        train: &ImageCache,
        val: &ImageCache,
        config: &TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        let features =
            |slots: Vec<(usize, usize)>, cache: &ImageCache, augment: bool| -> Result<Tensor> {
                let pb = bar(slots.len() as u64, "features");
                let mut rows = Vec::new();
                for chunk in slots.chunks(config.batch_size.max(1)) {
                    let x = if augment {
                        training_batch(cache, chunk, config, 0, device)?.0
                    } else {
                        let s = config.preprocessing.size as usize;
                        let (x, _) =
                            make_batch(cache, chunk, &config.preprocessing, BatchMode::Plain);
                        Tensor::from_vec(x, (chunk.len(), 3, s, s), device)?
                    };
                    // Detached: the backbone is fixed, and a tensor that kept its graph would make
                    // every head step backpropagate through the whole backbone again.
                    rows.push(model.features_t(&x, false)?.detach());
                    pb.inc(chunk.len() as u64);
                }
                pb.finish_and_clear();
                Ok(Tensor::cat(&rows, 0)?)
            };
        let slots = (0..train.len() * config.copies.max(1))
            .map(|s| (s % train.len(), s))
            .collect();
        let train_features = features(slots, train, true)?;
        let val_features = features((0..val.len()).map(|i| (i, i)).collect(), val, false)?;
        Ok(Self {
            train: train_features,
            val: val_features,
        })
    }

    fn train_rows(&self, batch: &[(usize, usize)], device: &Device) -> Result<Tensor> {
        let idx: Vec<u32> = batch.iter().map(|&(_, slot)| slot as u32).collect();
        Ok(self
            .train
            .index_select(&Tensor::new(idx.as_slice(), device)?, 0)?)
    }

    fn evaluate_val(
        &self,
        model: &ResNet,
        val: &ImageCache,
        identities: &[String],
    ) -> Result<Evaluation> {
        let probs = candle_nn::ops::softmax(&model.head().forward(&self.val)?, D::Minus1)?;
        evaluate_probabilities(&probs, val, identities)
    }
}

#[cfg(test)]
mod tests {
    use super::LrSchedule;

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_zero() {
        let (base, total) = (1e-3, 1000);
        let rate = |step| LrSchedule::Cosine.rate(base, step, total);
        assert!((rate(0) - base / 25.0).abs() < 1e-12);
        assert!(
            (rate(100) - base).abs() < 1e-12,
            "full rate after the warm-up"
        );
        let rates: Vec<f64> = (0..=total).map(rate).collect();
        assert!(
            rates[..=100].windows(2).all(|w| w[1] > w[0]),
            "warm-up rises"
        );
        assert!(rates[100..].windows(2).all(|w| w[1] < w[0]), "then decays");
        assert!(rate(total) < 1e-12 && rate(total + 5) < 1e-12);
        assert!(
            (rate(550) - base / 2.0).abs() < 1e-12,
            "half-way through the decay"
        );
        assert_eq!(LrSchedule::Constant.rate(base, 999, total), base);
    }
}
