//! Max pooling with a backward pass.
//!
//! candle's `max_pool2d_with_stride` has no gradient, so the ResNet stem's 3x3/stride-2 pool is
//! written as an element-wise maximum over the nine strided shifted views of the padded input.
//! `maximum` has a backward pass, so the pool trains.

use candle_core::{Result, Tensor, D};

/// Takes every `stride`-th element of dimension `dim`, starting at `start`, `count` times.
/// Built from `narrow` and `reshape`, both differentiable.
fn strided_view(
    x: &Tensor,
    dim: usize,
    start: usize,
    count: usize,
    stride: usize,
) -> Result<Tensor> {
    let x = x.narrow(dim, start, count * stride)?;
    let mut dims = x.dims().to_vec();
    dims[dim] = count;
    dims.insert(dim + 1, stride);
    x.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Pads the last two dimensions with negative infinity (as PyTorch's max pool does).
fn pad_neg_inf(x: &Tensor, before: usize, after_h: usize, after_w: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let fill = |hh: usize, ww: usize| {
        Tensor::full(f32::NEG_INFINITY, (n, c, hh, ww), x.device())?.to_dtype(x.dtype())
    };
    let x = Tensor::cat(&[&fill(before, w)?, x, &fill(after_h, w)?], 2)?;
    let hp = before + h + after_h;
    Tensor::cat(&[&fill(hp, before)?, &x, &fill(hp, after_w)?], D::Minus1)
}

/// `kernel`x`kernel` max pooling with the given stride and padding, on an NCHW tensor,
/// matching `torch.nn.MaxPool2d(kernel, stride, padding)` (floor mode).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h + 2 * padding < kernel || w + 2 * padding < kernel {
        candle_core::bail!(
            "max_pool2d: input {h}x{w} is smaller than the {kernel}x{kernel} window"
        );
    }
    let out_h = (h + 2 * padding - kernel) / stride + 1;
    let out_w = (w + 2 * padding - kernel) / stride + 1;
    // Each view reads `stride * out` elements from its offset; pad the end so the last
    // offset (kernel - 1) stays in range.
    let need_h = kernel - 1 + stride * out_h;
    let need_w = kernel - 1 + stride * out_w;
    let padded = pad_neg_inf(x, padding, need_h - h - padding, need_w - w - padding)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..kernel {
        let rows = strided_view(&padded, 2, dy, out_h, stride)?;
        for dx in 0..kernel {
            let view = strided_view(&rows, 3, dx, out_w, stride)?;
            out = Some(match out {
                None => view,
                Some(acc) => acc.maximum(&view)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("max_pool2d: empty kernel".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_forward_on_odd_and_even_sizes() -> Result<()> {
        let dev = Device::Cpu;
        for (h, w) in [(8, 8), (7, 9), (112, 112), (3, 3)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let ours = max_pool2d(&x, 3, 2, 1)?;
            // Reference: candle's forward-only pool on an input padded with -inf.
            let padded = pad_neg_inf(&x, 1, 1, 1)?;
            let reference = padded.max_pool2d_with_stride(3, 2)?;
            assert_eq!(ours.dims(), reference.dims(), "{h}x{w}");
            let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{h}x{w}");
        }
        Ok(())
    }

    #[test]
    fn gradient_goes_to_the_maximum_of_each_window() -> Result<()> {
        let dev = Device::Cpu;
        // 4x4 input with distinct values: each output's gradient lands on its window's argmax.
        let values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let x = Var::from_vec(values, (1, 1, 4, 4), &dev)?;
        let y = max_pool2d(x.as_tensor(), 3, 2, 1)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            vec![5.0, 7.0, 13.0, 15.0]
        );
        let grads = y.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut expected = vec![0f32; 16];
        for i in [5, 7, 13, 15] {
            expected[i] = 1.0;
        }
        assert_eq!(g, expected);
        Ok(())
    }
}
