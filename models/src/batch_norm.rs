//! Batch normalisation in train mode on the CPU: one node of the graph, two passes forward and
//! two backward.
//!
//! candle_nn's `BatchNorm::forward_train` is eight tensor-sized operations (a transposed copy,
//! subtract, square, divide, multiply, add, ...), each a node of the graph whose gradient
//! candle's backward pass starts as zeros and adds into: after the convolutions' products, the
//! largest share of a CPU training step. Here the per-channel statistics are one pass
//! ([`ChannelStats`]), the normalisation another ([`Normalize`]), and its backward pass the
//! two per-channel gradient sums ([`GradSums`]) and the input's gradient ([`GradInput`]). The
//! arithmetic is the same as candle_nn's (biased variance to normalise, unbiased in the running
//! variance, the same momentum); sums are taken in f64. Other devices and dtypes take
//! candle_nn's own path.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, Var,
};
use candle_nn::BatchNorm;
use rayon::prelude::*;

/// The activations `x` (N, C, H, W) normalised by their batch statistics as `bn` does in
/// train mode, and `bn`'s running statistics updated the same way.
pub fn forward_train(bn: &BatchNorm, x: &Tensor) -> Result<Tensor> {
    let Some((weight, bias)) = bn.weight_and_bias() else {
        return bn.forward_train(x);
    };
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.rank() != 4 {
        return bn.forward_train(x);
    }
    let (batch, channels, height, width) = x.dims4()?;
    if channels != bn.running_mean().dim(0)? {
        bail!(
            "batch norm: input has {channels} channels, the layer {}",
            bn.running_mean().dim(0)?
        );
    }
    let count = batch * height * width;
    if count < 2 {
        bail!("batch norm in train mode needs more than one value per channel, got {count}");
    }
    let x = x.contiguous()?;
    let geometry = Planes {
        batch,
        channels,
        plane: height * width,
    };
    let stats = x
        .apply_op1_no_bwd(&ChannelStats(geometry))?
        .to_vec2::<f32>()?;
    let (mean, variance) = (&stats[0], &stats[1]);

    let momentum = bn.momentum();
    let running_mean = Var::from_tensor(bn.running_mean())?;
    let running_var = Var::from_tensor(bn.running_var())?;
    let device = x.device();
    let batch_mean = Tensor::new(mean.as_slice(), device)?;
    let unbiased = count as f64 / (count as f64 - 1.0);
    let batch_var = (Tensor::new(variance.as_slice(), device)? * unbiased)?;
    running_mean
        .set(&((running_mean.as_tensor() * (1.0 - momentum))? + (batch_mean * momentum)?)?)?;
    running_var.set(&((running_var.as_tensor() * (1.0 - momentum))? + (batch_var * momentum)?)?)?;

    let eps = bn.eps();
    let inv_std = variance
        .iter()
        .map(|&v| (1.0 / (f64::from(v) + eps).sqrt()) as f32)
        .collect();
    x.apply_op3(
        weight,
        bias,
        Normalize(BatchStatistics {
            geometry,
            mean: mean.clone(),
            inv_std,
        }),
    )
}

/// (N, C, plane) of a contiguous NCHW tensor: channel `c` of image `n` is the `plane` values
/// from `(n * C + c) * plane`.
#[derive(Clone, Copy, Debug)]
struct Planes {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Planes {
    fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    /// Channel `c`'s planes in `data`, image by image.
    fn channel<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let g = *self;
        (0..g.batch).map(move |n| &data[(n * g.channels + c) * g.plane..][..g.plane])
    }
}

/// The `expected` f32 values of a contiguous operand.
fn values<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    expected: usize,
) -> Result<&'a [f32]> {
    let data = crate::conv::contiguous_f32(op, storage, layout)?;
    if data.len() != expected {
        bail!("{op}: {} values, expected {expected}", data.len());
    }
    Ok(data)
}

/// Rows of a (2, C) result: one value of each kind per channel, computed in parallel.
fn per_channel_pairs(channels: usize, f: impl Fn(usize) -> (f32, f32) + Sync + Send) -> Vec<f32> {
    let pairs: Vec<(f32, f32)> = (0..channels).into_par_iter().map(f).collect();
    pairs
        .iter()
        .map(|p| p.0)
        .chain(pairs.iter().map(|p| p.1))
        .collect()
}

/// x (N, C, H, W) -> (2, C): each channel's mean, then its biased variance.
struct ChannelStats(Planes);

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "batch-norm-stats"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = values(self.name(), storage, layout, g.len())?;
        let count = (g.batch * g.plane) as f64;
        let stats = per_channel_pairs(g.channels, |c| {
            let sum: f64 = g
                .channel(x, c)
                .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>())
                .sum();
            let mean = sum / count;
            let squares: f64 = g
                .channel(x, c)
                .map(|p| {
                    p.iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                })
                .sum();
            (mean as f32, (squares / count) as f32)
        });
        Ok((CpuStorage::F32(stats), Shape::from((2, g.channels))))
    }
}

/// A batch's per-channel statistics, which the normalisation and its gradients use.
#[derive(Clone, Debug)]
struct BatchStatistics {
    geometry: Planes,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl BatchStatistics {
    /// The (grad, x) pair of a backward op, both checked against the geometry.
    fn grad_and_input<'a>(
        &self,
        op: &str,
        grad: (&'a CpuStorage, &Layout),
        x: (&'a CpuStorage, &Layout),
    ) -> Result<(&'a [f32], &'a [f32])> {
        Ok((
            values(op, grad.0, grad.1, self.geometry.len())?,
            values(op, x.0, x.1, self.geometry.len())?,
        ))
    }
}

/// (x, weight, bias) -> (x - mean) * inv_std * weight + bias, per channel.
struct Normalize(BatchStatistics);

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stats = &self.0;
        let g = stats.geometry;
        let x = values(self.name(), x, x_layout, g.len())?;
        let weight = values(self.name(), weight, weight_layout, g.channels)?;
        let bias = values(self.name(), bias, bias_layout, g.channels)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(g.plane)
            .zip(x.par_chunks(g.plane))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let c = i % g.channels;
                let scale = stats.inv_std[c] * weight[c];
                let shift = bias[c] - stats.mean[c] * scale;
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = s * scale + shift;
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let sums = grad.apply_op2_no_bwd(x, &GradSums(self.0.clone()))?;
        let grad_bias = sums.get(0)?;
        let grad_weight = sums.get(1)?;
        let sums = sums.to_vec2::<f32>()?;
        let grad_x = grad.apply_op2_no_bwd(
            x,
            &GradInput {
                stats: self.0.clone(),
                weight: weight.to_vec1::<f32>()?,
                sum_grad: sums[0].clone(),
                sum_grad_normalized: sums[1].clone(),
            },
        )?;
        Ok((Some(grad_x), Some(grad_weight), Some(grad_bias)))
    }
}

/// (grad, x) -> (2, C): per channel the sum of the output's gradient (the bias's gradient),
/// then of the gradient times the normalised input (the weight's).
struct GradSums(BatchStatistics);

impl CustomOp2 for GradSums {
    fn name(&self) -> &'static str {
        "batch-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        x: &CpuStorage,
        x_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stats = &self.0;
        let g = stats.geometry;
        let (grad, x) = stats.grad_and_input(self.name(), (grad, grad_layout), (x, x_layout))?;
        let sums = per_channel_pairs(g.channels, |c| {
            let (mean, inv_std) = (f64::from(stats.mean[c]), f64::from(stats.inv_std[c]));
            let (mut sum, mut weighted) = (0f64, 0f64);
            for (dy, xs) in g.channel(grad, c).zip(g.channel(x, c)) {
                for (&d, &v) in dy.iter().zip(xs) {
                    sum += f64::from(d);
                    weighted += f64::from(d) * (f64::from(v) - mean) * inv_std;
                }
            }
            (sum as f32, weighted as f32)
        });
        Ok((CpuStorage::F32(sums), Shape::from((2, g.channels))))
    }
}

/// (grad, x) -> the input's gradient:
/// weight * inv_std * (grad - mean(grad) - x_hat * mean(grad * x_hat)), per channel.
struct GradInput {
    stats: BatchStatistics,
    weight: Vec<f32>,
    sum_grad: Vec<f32>,
    sum_grad_normalized: Vec<f32>,
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "batch-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        x: &CpuStorage,
        x_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stats = &self.stats;
        let g = stats.geometry;
        let (grad, x) = stats.grad_and_input(self.name(), (grad, grad_layout), (x, x_layout))?;
        let count = (g.batch * g.plane) as f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(g.plane)
            .zip(grad.par_chunks(g.plane).zip(x.par_chunks(g.plane)))
            .enumerate()
            .for_each(|(i, (dst, (dy, xs)))| {
                let c = i % g.channels;
                let (mean, inv_std) = (stats.mean[c], stats.inv_std[c]);
                let scale = self.weight[c] * inv_std;
                let mean_grad = self.sum_grad[c] / count;
                let mean_grad_normalized = self.sum_grad_normalized[c] / count;
                for ((d, &dyv), &v) in dst.iter_mut().zip(dy).zip(xs) {
                    let normalized = (v - mean) * inv_std;
                    *d = scale * (dyv - mean_grad - normalized * mean_grad_normalized);
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::max_relative;
    use candle_core::Device;
    use candle_nn::{BatchNormConfig, ModuleT, VarBuilder, VarMap};

    /// A batch norm layer of `channels` whose weight, bias and running statistics are not the
    /// defaults (so a swapped or ignored one shows), the same for every call.
    fn layer(channels: usize) -> (VarMap, BatchNorm) {
        let dev = Device::Cpu;
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        let bn = candle_nn::batch_norm(channels, cfg, vb).unwrap();
        let ramp = |from: f32, step: f32| {
            let values: Vec<f32> = (0..channels).map(|c| from + step * c as f32).collect();
            Tensor::new(values.as_slice(), &dev).unwrap()
        };
        for (name, value) in [
            ("weight", ramp(0.5, 0.3)),
            ("bias", ramp(-0.4, 0.2)),
            ("running_mean", ramp(0.1, 0.05)),
            ("running_var", ramp(0.8, 0.1)),
        ] {
            varmap.set_one(name, value).unwrap();
        }
        (varmap, bn)
    }

    /// Output, running statistics and the gradients of input, weight and bias agree with
    /// candle_nn's train-mode batch norm, on inputs with an offset and a spread per channel.
    #[test]
    fn matches_candle_nn_batch_norm_and_its_gradients() {
        let dev = Device::Cpu;
        for (n, c, h, w) in [(4, 3, 5, 7), (2, 8, 4, 4), (3, 2, 1, 1), (1, 5, 3, 2)] {
            let offsets = Tensor::arange(0f32, c as f32, &dev)
                .unwrap()
                .reshape((1, c, 1, 1))
                .unwrap();
            let x = Tensor::randn(0f32, 2.0, (n, c, h, w), &dev)
                .unwrap()
                .broadcast_add(&(offsets * 3.0).unwrap())
                .unwrap();
            let x = Var::from_tensor(&x).unwrap();
            let (ours_map, ours_bn) = layer(c);
            let (theirs_map, theirs_bn) = layer(c);
            let ours = forward_train(&ours_bn, &x).unwrap();
            let theirs = theirs_bn.forward_t(&x, true).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(
                max_relative(&ours, &theirs) < 1e-5,
                "output {n}x{c}x{h}x{w}"
            );
            for stat in ["running_mean", "running_var"] {
                let get = |map: &VarMap| map.data().lock().unwrap()[stat].as_tensor().clone();
                assert!(
                    max_relative(&get(&ours_map), &get(&theirs_map)) < 1e-5,
                    "{stat} {n}x{c}x{h}x{w}"
                );
            }
            // A loss that weighs every output differently, so a misplaced gradient shows.
            let weights = Tensor::randn(0f32, 1.0, theirs.dims(), &dev).unwrap();
            let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();
            let g_ours = loss(&ours).backward().unwrap();
            let g_theirs = loss(&theirs).backward().unwrap();
            assert!(
                max_relative(g_ours.get(&x).unwrap(), g_theirs.get(&x).unwrap()) < 1e-4,
                "input gradient {n}x{c}x{h}x{w}"
            );
            for name in ["weight", "bias"] {
                let var = |map: &VarMap| map.data().lock().unwrap()[name].as_tensor().clone();
                let (a, b) = (var(&ours_map), var(&theirs_map));
                assert!(
                    max_relative(g_ours.get(&a).unwrap(), g_theirs.get(&b).unwrap()) < 1e-5,
                    "{name} gradient {n}x{c}x{h}x{w}"
                );
            }
        }
    }

    /// Eval mode is untouched: after a train-mode pass, both layers normalise alike by their
    /// (now equal) running statistics.
    #[test]
    fn running_statistics_serve_eval_mode_alike() {
        let dev = Device::Cpu;
        let x = Tensor::randn(1f32, 3.0, (3, 4, 6, 5), &dev).unwrap();
        let (_ours_map, ours_bn) = layer(4);
        let (_theirs_map, theirs_bn) = layer(4);
        forward_train(&ours_bn, &x).unwrap();
        theirs_bn.forward_t(&x, true).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 4, 3, 3), &dev).unwrap();
        let (a, b) = (
            ours_bn.forward_t(&probe, false).unwrap(),
            theirs_bn.forward_t(&probe, false).unwrap(),
        );
        assert!(max_relative(&a, &b) < 1e-5);
    }

    #[test]
    fn one_value_per_channel_is_an_error() {
        let (_map, bn) = layer(3);
        let x = Tensor::zeros((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(forward_train(&bn, &x).is_err());
    }
}
