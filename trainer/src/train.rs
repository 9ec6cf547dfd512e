//! Fine-tuning as the method does it: cross-entropy plus lambda times the squared Frobenius
//! norm of the last layer's weights, Adam at 1e-4, batches of 24, the best model chosen on the
//! validation split, top-1 and top-5 accuracy on the untouched test split.
//!
//! The run's folder is [`crate::run`]; models are loaded by [`crate::model`] and evaluated by
//! [`crate::evaluate`].

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::{loss::cross_entropy, Module, VarMap};
use fingerprint_common::ScanLimits;
use fingerprint_models::checkpoint::save_varmap;
use fingerprint_models::resnet::trainable_vars;
use fingerprint_models::{load_checkpoint, ResNet};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Split;
use crate::evaluate::{bar, evaluate_probabilities, predict_probabilities};
use crate::loader::{make_batch, BatchMode, ImageCache};
use crate::model::Classifier;
use crate::model::{build_model, load_run_model};
use crate::optim::{Adam, AdamConfig};
use crate::run::{
    draw_curves, write_json, EpochMetrics, Evaluation, Loss, Report, RunDir, RunInfo, RunState,
    TrainConfig,
};

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

/// The logits the loss is taken of: the head's own (softmax), or CosFace's: `scale` times the
/// cosines between each feature row and each row of the head's weight, with `margin` taken off
/// each sample's true class.
pub fn loss_logits(
    loss: Loss,
    logits: &Tensor,
    features: &Tensor,
    head_weight: &Tensor,
    labels: &Tensor,
) -> Result<Tensor> {
    match loss {
        Loss::Softmax => Ok(logits.clone()),
        Loss::CosFace { scale, margin } => {
            let cosines = unit_rows(features)?.matmul(&unit_rows(head_weight)?.t()?)?;
            let margins = candle_nn::encoding::one_hot(
                labels.clone(),
                head_weight.dim(0)?,
                margin as f32,
                0f32,
            )?;
            Ok(((cosines - margins)? * scale)?)
        }
    }
}

/// `x` (a matrix) with each row scaled to unit length.
fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norms = (x.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    Ok(x.broadcast_div(&norms)?)
}

/// Puts the head in the form CosFace trains it in: unit rows and zero bias, so that its logits
/// (the feature's length times the cosines) rank classes as the cosines do, wherever the
/// model is used as a plain classifier. The loss does not depend on the rows' lengths, so
/// this changes nothing it sees.
pub fn normalise_head(varmap: &VarMap) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow!("the model's variables are poisoned"))?;
    let weight = vars
        .get("fc.weight")
        .context("the model has no fc.weight")?;
    weight.set(&unit_rows(weight.as_tensor())?)?;
    if let Some(bias) = vars.get("fc.bias") {
        bias.set(&bias.as_tensor().zeros_like()?)?;
    }
    Ok(())
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
    // Where it is refused (not glibc), training only runs slower.
    fingerprint_models::memory::keep_freed_memory();
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
            eprintln!("warning: no --pretrained checkpoint: training {} from scratch; accuracy will suffer (ImageNet weights help a lot; resnet18 with --resize ridge-scale starts from the shipped backbone unless --from-scratch; see README)", config.arch);
        }
        build_model(
            config.arch,
            classes,
            device,
            config.seed,
            config.pretrained.as_deref(),
        )?
    };
    let cosface = matches!(config.loss, Loss::CosFace { .. });
    if cosface && !resuming {
        normalise_head(&varmap)?;
    }
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
        let cache = ImageCache::load(samples, pre, config.sensor_dpi, &session.limits, || {
            pb.inc(1)
        })?;
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
            let (logits, features, labels) = match &frozen {
                Some(f) => {
                    let labels = batch.iter().map(|&(i, _)| train_cache.labels[i]).collect();
                    let features = f.train_rows(batch, device)?;
                    (model.head().forward(&features)?, features, labels)
                }
                None => {
                    let (x, labels) = training_batch(&train_cache, batch, config, epoch, device)?;
                    let (logits, features) = model.forward_with_features(&x, true)?;
                    (logits, features, labels)
                }
            };
            let y = Tensor::new(labels.as_slice(), device)?;
            let trained_logits = loss_logits(config.loss, &logits, &features, &head_weight, &y)?;
            let (loss, ce) = method_loss(&trained_logits, &y, &head_weight, config.l2)?;
            adam.config.lr = config
                .lr_schedule
                .rate(config.lr, adam.steps_taken(), total_steps);
            adam.backward_step(&loss)?;
            if cosface {
                normalise_head(&varmap)?;
            }
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
