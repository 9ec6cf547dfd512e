//! Deterministic tensors defined by a formula that Python computes bit for bit the same way
//! (`scripts/make_parity_fixture.py`). They let the parity tests compare this crate with
//! torchvision without committing megabytes of weights: only the expected outputs are stored.
//!
//! Value `i` of the tensor named `name` is `u = 2 * (splitmix64(fnv1a64(name) + i) >> 40) / 2^24 - 1`,
//! a number in [-1, 1) that is exact in f32, then scaled by the kind of parameter.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarMap;

pub use crate::seeded::{seeded_uniform, uniform};

/// The formula value of a ResNet parameter with torchvision's `name` and `shape`.
pub fn parameter(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let u = uniform(name, n);
    let (scale, offset) = if name.ends_with("running_var") {
        (0.25, 0.75)
    } else if name.ends_with("running_mean") || name.ends_with("bias") {
        (0.1, 0.0)
    } else if shape.len() == 1 {
        // Batch-norm weight.
        (0.25, 0.5)
    } else {
        // Convolution or linear weight: variance 1 / fan_in.
        let fan_in: usize = shape[1..].iter().product();
        ((3.0 / fan_in as f64).sqrt(), 0.0)
    };
    u.into_iter().map(|v| (offset + scale * v) as f32).collect()
}

/// A ResNet whose every parameter (batch-norm statistics included) has its formula value: a
/// network with non-trivial weights to fold, export and compare, made without training.
pub fn resnet(arch: crate::Arch, classes: usize) -> Result<(VarMap, crate::ResNet)> {
    let varmap = VarMap::new();
    let model = crate::ResNet::new(
        arch,
        classes,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu),
    )?;
    fill_varmap(&varmap)?;
    Ok((varmap, model))
}

/// Sets every variable of `varmap` to its formula value.
pub fn fill_varmap(varmap: &VarMap) -> Result<()> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in vars.iter() {
        let values = parameter(name, var.dims());
        let t = Tensor::from_vec(values, var.dims(), &Device::Cpu)?.to_device(var.device())?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// An input batch of the given NCHW shape, uniform in [-1, 1).
pub fn input(shape: (usize, usize, usize, usize), device: &Device) -> Result<Tensor> {
    let (n, c, h, w) = shape;
    let values: Vec<f32> = uniform("input", n * c * h * w)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// `n` grey scans of `preprocessing.size` pixels a side, normalised as preprocessing
/// normalises a scan: n x 3 x size x size values, CHW (what the service feeds its network).
/// Grey level of pixel `i` (image after image, row-major) is `floor((u + 1) * 128)` with `u`
/// value `i` of `uniform("input")`; `scripts/bench_runtimes.py` makes the same values.
pub fn grey_scans(n: usize, preprocessing: &fingerprint_common::Preprocessing) -> Vec<f32> {
    let pixels = (preprocessing.size as usize).pow(2);
    let levels: Vec<u8> = uniform("input", n * pixels)
        .into_iter()
        .map(|u| ((u + 1.0) * 128.0) as u8)
        .collect();
    let channels = preprocessing.channels();
    let mut out = Vec::with_capacity(n * 3 * pixels);
    for image in levels.chunks_exact(pixels.max(1)) {
        for channel in channels {
            out.extend(image.iter().map(|&v| channel.normalize(v)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_match_the_python_side() {
        // Printed by `scripts/make_parity_fixture.py --selftest`.
        assert_eq!(crate::seeded::fnv1a64(b"input"), 0x1ebb_ae8f_5810_b65b);
        assert_eq!(
            uniform("input", 3),
            vec![-0.8043633699417114, -0.705042839050293, 0.14816880226135254]
        );
        let conv: Vec<f64> = parameter("layer1.0.conv1.weight", &[64, 64, 1, 1])[..3]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        assert_eq!(
            conv,
            [
                0.14784923195838928,
                0.21429245173931122,
                -0.08210989087820053
            ]
        );
    }
}
