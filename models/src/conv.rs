//! Convolution for training on the CPU: im2col and one matrix product, both with gradients.
//!
//! candle's CPU backward pass of `conv2d` computes the input's gradient with a direct
//! `conv_transpose2d` (one dot product per input element and kernel tap) and the kernel's
//! gradient with a convolution whose batch is the channels; together with their copies they
//! took most of a ResNet training step here. In this module a convolution is one node of
//! the graph ([`Conv2d`]): its forward pass lays the input's patches out as the columns of a
//! matrix ([`Im2Col`]) and multiplies the kernel by it, and its backward pass is two matrix
//! products and the scatter-add of the patches' gradient back into the image ([`Col2Im`]).
//! One node, not the five of im2col, product, reshape, transpose and copy, because candle's
//! backward pass starts each node's gradient as zeros and adds into it: for the patches alone
//! (9 times the input for a 3x3 kernel) that was a fill and an add of hundreds of MB a step.
//! The patches are made again in the backward pass rather than kept. On other devices, or for
//! other dtypes, candle's own `conv2d` runs.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Shape of one convolution: square kernel, same stride and zero padding on both axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    out_h: usize,
    out_w: usize,
}

impl Geometry {
    /// One row per (channel, kernel row, kernel column).
    fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// One column per (image, output row, output column).
    fn cols(&self) -> usize {
        self.batch * self.out_h * self.out_w
    }

    /// Output columns `ox` whose input column `ox * stride + kx - padding` is inside the
    /// image: `lo..hi` (empty when `lo >= hi`).
    fn valid_x(&self, kx: usize) -> (usize, usize) {
        let first = self.padding.saturating_sub(kx).div_ceil(self.stride);
        // Largest ox with ox * stride + kx < width + padding.
        let end = (self.width + self.padding)
            .checked_sub(kx + 1)
            .map_or(0, |last| last / self.stride + 1);
        (first.min(self.out_w), end.min(self.out_w))
    }

    /// Input row of output row `oy` under kernel row `ky`, if inside the image.
    fn input_y(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.padding)
            .filter(|&y| y < self.height)
    }

    /// Where kernel tap (`ky`, `kx`) reads the image: one span per output row whose input row
    /// is inside the image (none when every column of the tap falls in the padding).
    fn spans(&self, ky: usize, kx: usize) -> impl Iterator<Item = Span> {
        let g = *self;
        let (lo, hi) = g.valid_x(kx);
        let rows = if lo < hi { 0..g.out_h } else { 0..0 };
        rows.filter_map(move |oy| {
            g.input_y(oy, ky).map(|iy| Span {
                oy,
                iy,
                lo,
                hi,
                first_x: lo * g.stride + kx - g.padding,
            })
        })
    }

    /// Splits a row index into (channel, kernel row, kernel column).
    fn tap(&self, row: usize) -> (usize, usize, usize) {
        let k = self.kernel;
        (row / (k * k), (row / k) % k, row % k)
    }
}

/// One output row of a kernel tap: output columns `lo..hi` read input row `iy` from column
/// `first_x` on, every `stride` columns; the other columns read padding.
#[derive(Clone, Copy, Debug)]
struct Span {
    oy: usize,
    iy: usize,
    lo: usize,
    hi: usize,
    first_x: usize,
}

/// Input (N, C, H, W) -> patches (C k k, N Ho Wo).
struct Im2Col(Geometry);

/// Gradient of the patches (C k k, N Ho Wo) -> gradient of the input (N, C, H, W): every
/// patch element adds back into the pixel it was copied from.
struct Col2Im(Geometry);

/// The f32 values of a contiguous operand of a custom op.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: f32 only, got {:?}", storage.dtype())
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: the input must be contiguous"),
    }
}

/// The patches of `x` (N, C, H, W), laid out as `g`'s (C k k, N Ho Wo) matrix.
fn im2col(g: Geometry, x: &[f32]) -> Result<Vec<f32>> {
    let plane = g.height * g.width;
    if x.len() != g.batch * g.channels * plane {
        bail!("im2col: input has {} elements, expected {:?}", x.len(), g);
    }
    let mut cols = vec![0f32; g.rows() * g.cols()];
    cols.par_chunks_mut(g.cols())
        .enumerate()
        .for_each(|(row, out)| {
            let (c, ky, kx) = g.tap(row);
            // What no span covers reads padding and stays zero.
            for b in 0..g.batch {
                let image = &x[(b * g.channels + c) * plane..][..plane];
                for Span {
                    oy,
                    iy,
                    lo,
                    hi,
                    first_x,
                } in g.spans(ky, kx)
                {
                    let src = &image[iy * g.width..][..g.width];
                    let dst = &mut out[(b * g.out_h + oy) * g.out_w..][lo..hi];
                    if g.stride == 1 {
                        dst.copy_from_slice(&src[first_x..first_x + hi - lo]);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src[first_x..].iter().step_by(g.stride)) {
                            *d = *s;
                        }
                    }
                }
            }
        });
    Ok(cols)
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = im2col(g, contiguous_f32(self.name(), storage, layout)?)?;
        Ok((CpuStorage::F32(cols), Shape::from((g.rows(), g.cols()))))
    }
}

/// The convolution of `x` (N, C, H, W) by a kernel (O, C, k, k): one node of candle's graph,
/// whose backward pass computes both gradients as matrix products.
struct Conv2d(Geometry);

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        kernel: &CpuStorage,
        kernel_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = im2col(g, contiguous_f32(self.name(), x, x_layout)?)?;
        let (rows, cols_n) = (g.rows(), g.cols());
        let weights = contiguous_f32(self.name(), kernel, kernel_layout)?;
        if weights.is_empty() || weights.len() % rows != 0 {
            bail!(
                "conv2d: kernel has {} elements, not a multiple of {rows}",
                weights.len()
            );
        }
        let out_c = weights.len() / rows;
        // The kernel as an (O, C k k) matrix, read in place; the product is (O, N Ho Wo).
        let kernel_matrix =
            Layout::contiguous_with_offset((out_c, rows), kernel_layout.start_offset());
        let product = kernel.matmul(
            &CpuStorage::F32(cols),
            (1, out_c, cols_n, rows),
            &kernel_matrix,
            &Layout::contiguous((rows, cols_n)),
        )?;
        let product = contiguous_f32(self.name(), &product, &Layout::contiguous((out_c, cols_n)))?;
        // (O, N, Ho Wo) -> (N, O, Ho Wo).
        let plane = g.out_h * g.out_w;
        let mut out = vec![0f32; product.len()];
        out.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
            let (b, o) = (i / out_c, i % out_c);
            dst.copy_from_slice(&product[o * cols_n + b * plane..][..plane]);
        });
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.batch, out_c, g.out_h, g.out_w)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let out_c = kernel.dim(0)?;
        // The output's gradient as the product's (O, N Ho Wo).
        let grad = grad_res
            .reshape((g.batch, out_c, g.out_h * g.out_w))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((out_c, g.cols()))?;
        let cols = x.contiguous()?.apply_op1_no_bwd(&Im2Col(g))?;
        let grad_kernel = grad.matmul(&cols.t()?)?.reshape(kernel.shape())?;
        drop(cols);
        let grad_x = kernel
            .reshape((out_c, g.rows()))?
            .t()?
            .matmul(&grad)?
            .apply_op1_no_bwd(&Col2Im(g))?;
        Ok((Some(grad_x), Some(grad_kernel)))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = contiguous_f32(self.name(), storage, layout)?;
        if cols.len() != g.rows() * g.cols() {
            bail!(
                "col2im: gradient has {} elements, expected {:?}",
                cols.len(),
                g
            );
        }
        let plane = g.height * g.width;
        let k = g.kernel;
        let mut x = vec![0f32; g.batch * g.channels * plane];
        // One task per (image, channel) plane: no two tasks write the same pixel.
        x.par_chunks_mut(plane).enumerate().for_each(|(p, image)| {
            let (b, c) = (p / g.channels, p % g.channels);
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    for Span {
                        oy,
                        iy,
                        lo,
                        hi,
                        first_x,
                    } in g.spans(ky, kx)
                    {
                        let src = &cols[row * g.cols() + (b * g.out_h + oy) * g.out_w..][lo..hi];
                        let dst = &mut image[iy * g.width..][..g.width];
                        for (d, s) in dst[first_x..].iter_mut().step_by(g.stride).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        });
        Ok((
            CpuStorage::F32(x),
            Shape::from((g.batch, g.channels, g.height, g.width)),
        ))
    }
}

/// `x.conv2d(kernel, padding, stride, 1, 1)` for a square kernel, computed as im2col and a
/// matrix product on the CPU for f32 (see the module's documentation); candle's `conv2d`
/// elsewhere.
pub fn conv2d(x: &Tensor, kernel: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, in_c, kh, kw) = kernel.dims4()?;
    if !x.device().is_cpu() || x.dtype() != DType::F32 || kh != kw || stride == 0 {
        return x.conv2d(kernel, padding, stride, 1, 1);
    }
    let (batch, channels, height, width) = x.dims4()?;
    if channels != in_c {
        bail!("conv2d: input has {channels} channels, the kernel expects {in_c}");
    }
    if height + 2 * padding < kh || width + 2 * padding < kh {
        bail!("conv2d: input {height}x{width} is smaller than the {kh}x{kh} kernel");
    }
    let g = Geometry {
        batch,
        channels,
        height,
        width,
        kernel: kh,
        stride,
        padding,
        out_h: (height + 2 * padding - kh) / stride + 1,
        out_w: (width + 2 * padding - kh) / stride + 1,
    };
    x.contiguous()?.apply_op2(&kernel.contiguous()?, Conv2d(g))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The largest difference between `a` and `b`, relative to `b`'s largest magnitude.
    pub(crate) fn max_relative(a: &Tensor, b: &Tensor) -> f32 {
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        diff.to_scalar::<f32>().unwrap() / scale.max(1e-12)
    }

    /// Output and both gradients agree with candle's own convolution, for kernels, strides
    /// and paddings of every ResNet layer and odd sizes (padding wider than some taps reach).
    #[test]
    fn matches_candle_conv2d_and_its_gradients() {
        let dev = Device::Cpu;
        for (n, c, h, w, oc, k, stride, pad) in [
            (2, 3, 17, 13, 8, 7, 2, 3),
            (3, 5, 9, 11, 6, 3, 1, 1),
            // (candle's own backward pass fails when the height and width need different
            // output paddings in its transposed convolution, e.g. 10x7 here: not compared.)
            (2, 4, 10, 8, 3, 3, 2, 1),
            (2, 6, 8, 8, 5, 1, 1, 0),
            (2, 6, 9, 7, 5, 1, 2, 0),
            (1, 2, 4, 5, 3, 3, 1, 2),
        ] {
            let x = Var::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
            let kernel = Var::randn(0f32, 1.0, (oc, c, k, k), &dev).unwrap();
            let ours = conv2d(&x, &kernel, stride, pad).unwrap();
            let theirs = x.conv2d(&kernel, pad, stride, 1, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(
                max_relative(&ours, &theirs) < 1e-5,
                "forward {k}x{k}/{stride}"
            );
            // A loss that weighs every output differently, so a misplaced gradient shows.
            let weights = Tensor::randn(0f32, 1.0, theirs.dims(), &dev).unwrap();
            let g_ours = (ours * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_theirs = (theirs * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for var in [&x, &kernel] {
                let (a, b) = (g_ours.get(var).unwrap(), g_theirs.get(var).unwrap());
                assert!(
                    max_relative(a, b) < 1e-5,
                    "gradient {k}x{k}/{stride} pad {pad}"
                );
            }
        }
    }

    #[test]
    fn valid_columns_exclude_padding() {
        let g = Geometry {
            batch: 1,
            channels: 1,
            height: 5,
            width: 5,
            kernel: 3,
            stride: 2,
            padding: 1,
            out_h: 3,
            out_w: 3,
        };
        // kx 0 reads x = 2 ox - 1: ox 0 is padding, ox 1 and 2 read 1 and 3.
        assert_eq!(g.valid_x(0), (1, 3));
        // kx 2 reads x = 2 ox + 1: 1, 3, 5 (padding).
        assert_eq!(g.valid_x(2), (0, 2));
        assert_eq!(g.input_y(0, 0), None);
        assert_eq!(g.input_y(2, 2), None);
        assert_eq!(g.input_y(1, 1), Some(2));
    }
}
