//! The one preprocessing of a scan, used by training and by serving alike.
//!
//! A decoded grey scan is (1) resized to `size`x`size` by the [`ResizePolicy`], with a
//! triangle (bilinear, area-aware when shrinking) filter, then (2) replicated to three
//! channels and normalised per channel: `(v / 255 - mean[c]) / std[c]`, laid out CHW.
//! Training augments between (1) and (2); serving does not. Nothing else differs.

use image::{imageops, GrayImage, Luma};
use serde::{Deserialize, Serialize};

/// How a scan that is not square becomes square.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizePolicy {
    /// Resize width and height independently to `size` (the method's plain down-sampling;
    /// ridges of a non-square scan are squeezed along one axis).
    #[default]
    Stretch,
    /// Keep the aspect ratio: centre the scan on a square canvas filled with its background
    /// (the median of its border pixels), then resize.
    Pad,
}

/// ImageNet statistics, the ones ResNet checkpoints were trained with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Parameters of the preprocessing; recorded in every exported model so the daemon applies
/// exactly what the trainer did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Side of the square network input, in pixels.
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: ResizePolicy,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Self::imagenet(224)
    }
}

impl Preprocessing {
    /// ImageNet normalisation at `size`x`size`, stretched as the method does.
    pub fn imagenet(size: u32) -> Self {
        Self {
            size,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            resize: ResizePolicy::Stretch,
        }
    }

    /// Number of values of one preprocessed scan (3 x size x size).
    pub fn len(&self) -> usize {
        3 * (self.size as usize).pow(2)
    }

    /// Always false: a preprocessed scan has at least one pixel.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Step (1): the scan as a `size`x`size` grey image.
    pub fn resize(&self, scan: &GrayImage) -> GrayImage {
        let square = match self.resize {
            ResizePolicy::Stretch => None,
            ResizePolicy::Pad => pad_to_square(scan),
        };
        let source = square.as_ref().unwrap_or(scan);
        if source.width() == self.size && source.height() == self.size {
            return source.clone();
        }
        imageops::resize(source, self.size, self.size, imageops::FilterType::Triangle)
    }

    /// Step (2): a `size`x`size` grey image as normalised CHW values, appended to `out`.
    pub fn normalize_into(&self, square: &GrayImage, out: &mut Vec<f32>) {
        debug_assert_eq!(square.dimensions(), (self.size, self.size));
        for c in 0..3 {
            let scale = 1.0 / (255.0 * self.std[c]);
            let shift = self.mean[c] / self.std[c];
            out.extend(square.as_raw().iter().map(|&v| v as f32 * scale - shift));
        }
    }

    /// Both steps: the network input for one scan, 3 x size x size values, CHW.
    pub fn apply(&self, scan: &GrayImage) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.normalize_into(&self.resize(scan), &mut out);
        out
    }
}

/// Centres a non-square scan on a square canvas of its background value; `None` if square.
fn pad_to_square(scan: &GrayImage) -> Option<GrayImage> {
    let (w, h) = scan.dimensions();
    if w == h {
        return None;
    }
    let side = w.max(h);
    let mut canvas = GrayImage::from_pixel(side, side, Luma([border_median(scan)]));
    imageops::replace(
        &mut canvas,
        scan,
        i64::from((side - w) / 2),
        i64::from((side - h) / 2),
    );
    Some(canvas)
}

/// Median of the outermost rows and columns: the background a sensor shows around a finger.
fn border_median(scan: &GrayImage) -> u8 {
    let (w, h) = scan.dimensions();
    let mut histogram = [0usize; 256];
    let mut count = 0;
    for (x, y, p) in scan.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            histogram[p.0[0] as usize] += 1;
            count += 1;
        }
    }
    let mut seen = 0;
    for (value, n) in histogram.iter().enumerate() {
        seen += n;
        if 2 * seen >= count {
            return value as u8;
        }
    }
    255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_is_imagenet_per_channel_chw() {
        let p = Preprocessing::imagenet(2);
        let img = GrayImage::from_raw(2, 2, vec![0, 255, 128, 64]).expect("image");
        let v = p.apply(&img);
        assert_eq!(v.len(), 12);
        for c in 0..3 {
            let at = |i: usize| v[c * 4 + i];
            assert!((at(0) - (0.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]).abs() < 1e-6);
            assert!((at(1) - (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]).abs() < 1e-6);
            assert!((at(3) - (64.0 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]).abs() < 1e-6);
        }
    }

    #[test]
    fn pad_keeps_aspect_ratio_and_fills_with_the_background() {
        // A 40x20 white scan with a black 10x10 square in the middle.
        let mut scan = GrayImage::from_pixel(40, 20, Luma([255]));
        for y in 5..15 {
            for x in 15..25 {
                scan.put_pixel(x, y, Luma([0]));
            }
        }
        let padded = pad_to_square(&scan).expect("not square");
        assert_eq!(padded.dimensions(), (40, 40));
        assert_eq!(padded.get_pixel(0, 0).0[0], 255);
        assert_eq!(padded.get_pixel(20, 20).0[0], 0, "content stays centred");
        let p = Preprocessing {
            resize: ResizePolicy::Pad,
            ..Preprocessing::imagenet(20)
        };
        let out = p.resize(&scan);
        assert_eq!(out.dimensions(), (20, 20));
        // The black square stays square: 5x5 after halving.
        let dark = out.pixels().filter(|p| p.0[0] < 128).count();
        assert!((16..=36).contains(&dark), "{dark}");
        let stretched = Preprocessing::imagenet(20).resize(&scan);
        let dark_stretched = stretched.pixels().filter(|p| p.0[0] < 128).count();
        assert!(
            dark_stretched > dark,
            "stretching doubles the square's height"
        );
    }
}
