use candle_core::{Device, Tensor, Var, D};
use std::time::Instant;

fn im2col_conv(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> candle_core::Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, _, k, _) = w.dims4()?;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let x = x
        .pad_with_zeros(2, pad, pad + stride)?
        .pad_with_zeros(3, pad, pad + stride)?;
    let mut cols = Vec::new();
    for dy in 0..k {
        for dx in 0..k {
            let v = x.narrow(2, dy, oh * stride)?.narrow(3, dx, ow * stride)?;
            let v = if stride > 1 {
                v.reshape((n, c, oh, stride, ow, stride))?
                    .narrow(3, 0, 1)?
                    .narrow(5, 0, 1)?
                    .reshape((n, c, oh, ow))?
            } else {
                v
            };
            cols.push(v);
        }
    }
    // (n, c, k*k, oh, ow) -> (n, oh*ow, c*k*k)
    let cols = Tensor::stack(&cols, 2)?
        .reshape((n, c * k * k, oh * ow))?
        .transpose(1, 2)?;
    let wm = w.reshape((o, c * k * k))?.t()?;
    let y = cols.broadcast_matmul(&wm)?; // n, oh*ow, o
    y.transpose(1, 2)?.reshape((n, o, oh, ow))
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (n, c, hw, o, k, s) in [
        (16, 64, 16, 64, 3, 1),
        (16, 64, 16, 256, 1, 1),
        (16, 128, 16, 128, 3, 2),
        (16, 3, 64, 64, 7, 2),
    ] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (o, c, k, k), &dev)?)?;
        for name in ["candle", "im2col"] {
            let t = Instant::now();
            let mut tf = 0.0;
            for _ in 0..3 {
                let t0 = Instant::now();
                let y = if name == "candle" {
                    x.as_tensor().conv2d(w.as_tensor(), k / 2, s, 1, 1)?
                } else {
                    im2col_conv(x.as_tensor(), w.as_tensor(), s, k / 2)?
                };
                let l = y.sqr()?.sum_all()?;
                tf += t0.elapsed().as_secs_f64();
                let g = l.backward()?;
                let _ = g.get(x.as_tensor()).unwrap().sum_all()?;
            }
            println!(
                "{n} {c} {hw} {o} k{k} s{s} {name}: total {:.3}s fwd {:.3}s",
                t.elapsed().as_secs_f64() / 3.0,
                tf / 3.0
            );
        }
        let a = x.as_tensor().conv2d(w.as_tensor(), k / 2, s, 1, 1)?;
        let b = im2col_conv(x.as_tensor(), w.as_tensor(), s, k / 2)?;
        println!(
            "  max diff {}",
            (a - b)?.abs()?.flatten_all()?.max(D::Minus1)?
        );
    }
    Ok(())
}
