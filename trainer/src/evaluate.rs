//! Evaluation: class probabilities and embeddings of a split's scans in batches, and top-1 /
//! top-5 accuracy with the scans that were misidentified.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use fingerprint_common::Preprocessing;
use indicatif::{ProgressBar, ProgressStyle};

use crate::loader::{for_each_plain_batch, ImageCache};
use crate::model::Classifier;
use crate::run::{Evaluation, Misidentified};

pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
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
        // Detached: a trained network's output would otherwise keep its batch's whole graph
        // (every activation) alive until the last batch, tens of GB for a large validation set.
        outputs.push(
            candle_nn::ops::softmax(&logits, D::Minus1)?
                .to_device(&Device::Cpu)?
                .detach(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build_model;
    use fingerprint_models::Arch;

    /// The probabilities of a trained (graph-recording) network hold no graph: each batch's
    /// activations are freed when the next batch runs.
    #[test]
    fn predicted_probabilities_keep_no_graph() {
        let device = Device::Cpu;
        let (_varmap, model) = build_model(Arch::ResNet18, 3, &device, 0, None).unwrap();
        let images: Vec<_> = (0..5u8)
            .map(|i| {
                image::GrayImage::from_fn(32, 32, |x, y| image::Luma([(x * 7 + y * 3) as u8 ^ i]))
            })
            .collect();
        let cache = ImageCache {
            paths: (0..images.len())
                .map(|i| format!("{i}.png").into())
                .collect(),
            labels: (0..images.len() as u32).map(|i| i % 3).collect(),
            images,
        };
        let pre = Preprocessing::imagenet(32);
        let probs =
            predict_probabilities(&Classifier::Trained(&model), &cache, &pre, &device, 2).unwrap();
        assert_eq!(probs.dims(), &[5, 3]);
        assert!(
            !probs.track_op(),
            "the probabilities still record the network's graph"
        );
        for row in probs.to_vec2::<f32>().unwrap() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}
