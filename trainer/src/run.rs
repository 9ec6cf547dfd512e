//! A training run's folder: what defines the run and everything it leaves, enough to
//! reproduce and audit it.
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

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fingerprint_common::Preprocessing;
use fingerprint_models::Arch;
use serde::{Deserialize, Serialize};

use crate::augment::Augmentation;
use crate::dataset::Split;
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
    /// What the head is trained with (runs saved before this field: softmax).
    #[serde(default)]
    pub loss: Loss,
    pub preprocessing: Preprocessing,
    /// The training scans' sensor resolution, where known: ridge-scale preprocessing then
    /// cuts windows of fixed physical size, as a door configured with it does (runs saved
    /// before this field: unknown, each scan's ridge period measured).
    #[serde(default)]
    pub sensor_dpi: Option<u32>,
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
            loss: Loss::Softmax,
            preprocessing: Preprocessing::imagenet(224),
            sensor_dpi: None,
            augmentation: Some(Augmentation::default()),
            copies: 3,
            patience: Some(20),
            freeze_backbone: false,
            seed: 0,
        }
    }
}

/// The loss the network is trained with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Loss {
    /// Cross-entropy of the head's logits, as the method trains.
    #[default]
    Softmax,
    /// CosFace (large-margin cosine loss, Wang et al. 2018): cross-entropy of `scale` times
    /// the cosines between the feature and each class's weight, with `margin` taken off the
    /// true class's. It asks a finger's features to lie closer to their own class than to any
    /// other by the margin, which is what a door compares unseen fingers by (cosines). The
    /// head's rows are kept at unit length and its bias at zero, so its logits rank classes
    /// as the cosines do and every other part (evaluation, export, the daemon) is unchanged.
    CosFace { scale: f64, margin: f64 },
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
