//! GOP/s of the CPU path's matrix products (f32 and int8) on ResNet-50's convolution shapes.
//!
//!     cargo run --release -p fingerprint-models --example matmul_speed

use std::time::Instant;

use fingerprint_models::fast::int8::{matmul_int8, PackedInt8};
use fingerprint_models::fast::matmul::{matmul, Epilogue, PackedB, Rows};
use fingerprint_models::fast::Kernels;

fn best_ms(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    best
}

fn main() {
    let kernels = Kernels::detect();
    for &(m, n, k) in &[
        // The stem: 7x7 over 3 channels (int8 pads each tap to a quad: 49 x 4 = 196 would be
        // exact; 148 keeps one depth for both products).
        (12544usize, 64usize, 148usize),
        (3136, 64, 64),
        (3136, 64, 576),
        (3136, 256, 64),
        (784, 128, 1152),
        (196, 256, 2304),
        (49, 512, 4608),
        (49, 2048, 512),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32).collect();
        let a8: Vec<u8> = (0..m * k).map(|i| (i % 64) as u8).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let packed = PackedB::new(k, n, &b);
        let packed8 = PackedInt8::from_f32(&b, n, k, 1);
        let mut c = vec![0.0f32; m * n];
        let bias = vec![0.0f32; n];
        let scale = vec![1.0f32; n];
        let f32_ms = best_ms(|| {
            let epilogue = Epilogue {
                scale: None,
                row_scale: None,
                bias: &bias,
                residual: None,
                relu: true,
            };
            matmul(
                kernels,
                &Rows::matrix(&a, m, k).expect("a holds m x k values"),
                &packed,
                &epilogue,
                &mut c,
            );
        });
        let int8_ms = best_ms(|| {
            let epilogue = Epilogue {
                scale: Some(&scale),
                row_scale: None,
                bias: &bias,
                residual: None,
                relu: true,
            };
            matmul_int8(
                kernels,
                &Rows::matrix(&a8, m, k).expect("a holds m x k values"),
                &packed8,
                &epilogue,
                &mut c,
            );
        });
        let ops = 2.0 * (m * n * k) as f64 / 1e6;
        println!(
            "{m}x{n}x{k}: f32 {f32_ms:.2} ms {:.1} GFLOP/s, int8 {int8_ms:.2} ms {:.1} GOP/s ({kernels:?})",
            ops / f32_ms,
            ops / int8_ms
        );
    }
}
