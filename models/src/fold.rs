//! Batch norm folded into the convolutions: the inference graph every exported model holds,
//! and a candle implementation of it ([`FoldedResNet`]) that runs on any device and is the
//! reference the CPU engine is tested against.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module};

use crate::pool::max_pool2d;
use crate::resnet::ConvSpec;
use crate::{Arch, ResNet};

/// The inference graph's f32 tensors: `<conv>.weight`, `<conv>.bias` for every convolution
/// (batch norm folded in), `fc.weight`, `fc.bias`.
pub type FoldedWeights = BTreeMap<String, Tensor>;

/// Folds each batch norm (eval mode) into the convolution before it:
/// `w' = w * g / sqrt(var + eps)` per output channel, `b' = beta - mean * g / sqrt(var + eps)`.
pub fn fold_batch_norm(model: &ResNet) -> candle_core::Result<FoldedWeights> {
    let mut out = BTreeMap::new();
    for (spec, conv, bn) in model.conv_bn_pairs() {
        let cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
        let (gamma, beta) = bn.weight_and_bias().ok_or_else(|| {
            candle_core::Error::Msg("batch norm without affine parameters".into())
        })?;
        let scale = (cpu(gamma)? / (cpu(bn.running_var())? + bn.eps())?.sqrt()?)?;
        let weight = cpu(conv.weight())?.broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        let bias = (cpu(beta)? - (cpu(bn.running_mean())? * &scale)?)?;
        out.insert(format!("{}.weight", spec.name), weight);
        out.insert(format!("{}.bias", spec.name), bias);
    }
    let head = model.head();
    out.insert("fc.weight".into(), head.weight().to_device(&Device::Cpu)?);
    let bias = head
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("head without bias".into()))?;
    out.insert("fc.bias".into(), bias.to_device(&Device::Cpu)?);
    Ok(out)
}

/// A ResNet's inference graph: convolutions with folded batch norm (bias), ReLU, residual
/// additions, pooling, the classifier.
pub struct FoldedResNet {
    stem: Conv2d,
    blocks: Vec<(Vec<Conv2d>, Option<Conv2d>)>,
    fc: Linear,
}

impl FoldedResNet {
    pub fn new(arch: Arch, weights: &FoldedWeights, device: &Device) -> candle_core::Result<Self> {
        let get = |name: String| -> candle_core::Result<Tensor> {
            weights
                .get(&name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))?
                .to_device(device)
        };
        let conv = |spec: &ConvSpec| -> candle_core::Result<Conv2d> {
            let cfg = Conv2dConfig {
                padding: spec.padding(),
                stride: spec.stride,
                ..Default::default()
            };
            Ok(Conv2d::new(
                get(format!("{}.weight", spec.name))?,
                Some(get(format!("{}.bias", spec.name))?),
                cfg,
            ))
        };
        let layout = arch.layout();
        let blocks = layout
            .stages
            .iter()
            .flatten()
            .map(|b| {
                Ok((
                    b.path
                        .iter()
                        .map(conv)
                        .collect::<candle_core::Result<Vec<_>>>()?,
                    b.downsample.as_ref().map(conv).transpose()?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            stem: conv(&layout.stem)?,
            blocks,
            fc: Linear::new(get("fc.weight".into())?, Some(get("fc.bias".into())?)),
        })
    }

    /// Outputs of the classifier.
    pub fn num_classes(&self) -> usize {
        self.fc.weight().dims()[0]
    }

    /// Pooled features of an NCHW batch.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = max_pool2d(&self.stem.forward(x)?.relu()?, 3, 2, 1)?;
        for (path, downsample) in &self.blocks {
            let mut y = x.clone();
            for (i, c) in path.iter().enumerate() {
                y = c.forward(&y)?;
                if i + 1 < path.len() {
                    y = y.relu()?;
                }
            }
            let shortcut = match downsample {
                Some(d) => d.forward(&x)?,
                None => x,
            };
            x = (y + shortcut)?.relu()?;
        }
        x.mean(D::Minus1)?.mean(D::Minus1)
    }

    /// Logits of an NCHW batch.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc.forward(&self.features(x)?)
    }
}
