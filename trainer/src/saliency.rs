//! Occlusion saliency, as the method visualises what matters: a `window`x`window` square of
//! the scan is zeroed (black, in pixel terms), slid over it with `stride`, and the network's
//! answer recorded at each position. Two maps come out:
//!
//! - **drop**: how much the probability of the identity predicted for the whole scan falls
//!   when that part is hidden (per pixel: the mean over the windows covering it);
//! - **flip**: where hiding that part changes the decision to another identity (per pixel:
//!   the share of covering windows that flip it), the method's definition.
//!
//! The occluded copies are evaluated in batches.

use anyhow::Result;
use candle_core::{Device, Tensor};
use fingerprint_common::Preprocessing;
use image::{GrayImage, Rgb, RgbImage};

/// Window and stride in input pixels. At 224x224 the defaults (28 and 8) give a 26x26 grid
/// (the last position flush with the edge) of 676 occluded copies: fine enough to follow
/// ridge structures, one window about three ridges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occlusion {
    pub window: usize,
    pub stride: usize,
}

impl Default for Occlusion {
    fn default() -> Self {
        Self {
            window: 28,
            stride: 8,
        }
    }
}

/// The result for one scan, per input pixel (row-major, `size` x `size`).
pub struct SaliencyMap {
    pub size: usize,
    /// Class predicted for the unoccluded scan, and its probability.
    pub predicted: usize,
    pub probability: f32,
    pub drop: Vec<f32>,
    pub flip: Vec<f32>,
    /// Window positions (top-left x, y), the probability drop and the top-1 class at each.
    pub windows: Vec<(usize, usize, f32, usize)>,
}

/// Positions of a window sliding over `size` pixels, the last flush with the edge.
fn positions(size: usize, window: usize, stride: usize) -> Vec<usize> {
    if window >= size {
        return vec![0];
    }
    let mut p: Vec<usize> = (0..=size - window).step_by(stride.max(1)).collect();
    if p.last() != Some(&(size - window)) {
        p.push(size - window);
    }
    p
}

/// Occlusion maps of one preprocessed scan (3 x size x size, CHW, normalised).
/// `probabilities` maps an N x 3 x size x size batch to N x classes probabilities.
pub fn occlusion_map(
    input: &[f32],
    pre: &Preprocessing,
    occlusion: Occlusion,
    batch_size: usize,
    device: &Device,
    probabilities: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<SaliencyMap> {
    let s = pre.size as usize;
    anyhow::ensure!(input.len() == 3 * s * s, "input is not 3x{s}x{s}");
    let base = probabilities(&Tensor::from_vec(input.to_vec(), (1, 3, s, s), device)?)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let predicted = argmax(&base);
    // A black square: pixel value 0, normalised by the one formula (so an occluded scan is
    // still one grey image normalised, and runs on the same stem as the scan itself).
    let zero: Vec<f32> = pre.channels().iter().map(|c| c.normalize(0)).collect();
    let window = occlusion.window.min(s);
    let xs = positions(s, window, occlusion.stride);
    let places: Vec<(usize, usize)> = xs
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| (x, y)))
        .collect();
    let mut windows = Vec::with_capacity(places.len());
    for chunk in places.chunks(batch_size.max(1)) {
        let mut batch = Vec::with_capacity(chunk.len() * input.len());
        for &(x0, y0) in chunk {
            let mut copy = input.to_vec();
            for (c, z) in zero.iter().enumerate() {
                for y in y0..y0 + window {
                    let row = c * s * s + y * s;
                    copy[row + x0..row + x0 + window].fill(*z);
                }
            }
            batch.extend(copy);
        }
        let probs = probabilities(&Tensor::from_vec(batch, (chunk.len(), 3, s, s), device)?)?
            .to_vec2::<f32>()?;
        for (&(x, y), p) in chunk.iter().zip(probs) {
            windows.push((x, y, base[predicted] - p[predicted], argmax(&p)));
        }
    }
    let (mut drop, mut flip, mut count) = (vec![0f32; s * s], vec![0f32; s * s], vec![0f32; s * s]);
    for &(x0, y0, d, top) in &windows {
        let flipped = if top != predicted { 1.0 } else { 0.0 };
        for y in y0..y0 + window {
            for x in x0..x0 + window {
                drop[y * s + x] += d;
                flip[y * s + x] += flipped;
                count[y * s + x] += 1.0;
            }
        }
    }
    for i in 0..s * s {
        let n = count[i].max(1.0);
        drop[i] /= n;
        flip[i] /= n;
    }
    Ok(SaliencyMap {
        size: s,
        predicted,
        probability: base[predicted],
        drop,
        flip,
        windows,
    })
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Blue (0) through green to red (1).
fn heat(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    [
        (1.5 - (4.0 * v - 3.0).abs()).clamp(0.0, 1.0),
        (1.5 - (4.0 * v - 2.0).abs()).clamp(0.0, 1.0),
        (1.5 - (4.0 * v - 1.0).abs()).clamp(0.0, 1.0),
    ]
}

/// The scan with a map laid over it (the map scaled to its own maximum; half transparent).
pub fn overlay(scan: &GrayImage, map: &[f32]) -> RgbImage {
    let (w, h) = scan.dimensions();
    let max = map.iter().cloned().fold(0f32, f32::max).max(1e-6);
    RgbImage::from_fn(w, h, |x, y| {
        let g = scan.get_pixel(x, y).0[0] as f32 / 255.0;
        let m = map[(y * w + x) as usize].max(0.0) / max;
        let c = heat(m);
        let alpha = 0.55 * m.sqrt();
        Rgb(std::array::from_fn(|i| {
            (255.0 * ((1.0 - alpha) * g + alpha * c[i])).round() as u8
        }))
    })
}
