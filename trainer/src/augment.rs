//! Augmentation as the method describes it: horizontal and vertical flips, random crops and
//! small distortions (a small rotation and a gentle elastic warp).
//!
//! It works on the square grey image that [`Preprocessing::resize`] makes, before
//! normalisation, so training sees scans exactly as serving does except for the augmentation.
//! All of it is one inverse mapping from output to input pixel with bilinear sampling.
//!
//! [`Preprocessing::resize`]: fingerprint_common::Preprocessing::resize

use image::{GrayImage, Luma};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Ranges of the random transformations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Probability of a horizontal flip, and of a vertical flip.
    pub flip_probability: f32,
    /// The crop keeps a square whose side is this fraction of the image (uniform in range),
    /// placed at random, then scaled back to full size.
    pub crop_fraction: (f32, f32),
    /// Largest rotation, in degrees, either way.
    pub max_rotation_degrees: f32,
    /// Largest elastic displacement, as a fraction of the image side.
    pub elastic_amplitude: f32,
}

impl Default for Augmentation {
    fn default() -> Self {
        Self {
            flip_probability: 0.5,
            crop_fraction: (0.8, 1.0),
            max_rotation_degrees: 10.0,
            elastic_amplitude: 0.015,
        }
    }
}

/// One smooth displacement component: a sum of a few random low-frequency waves.
struct Wave {
    terms: [(f32, f32, f32, f32); 3], // (amplitude, frequency x, frequency y, phase)
}

impl Wave {
    fn random(rng: &mut impl Rng, amplitude: f32) -> Self {
        let mut term = || {
            let tau = std::f32::consts::TAU;
            (
                amplitude * rng.gen_range(-1.0..=1.0) / 3.0,
                tau * rng.gen_range(0.5..2.0),
                tau * rng.gen_range(0.5..2.0),
                tau * rng.gen::<f32>(),
            )
        };
        Self {
            terms: [term(), term(), term()],
        }
    }

    /// Displacement at normalised coordinates (x, y in [0, 1]).
    fn at(&self, x: f32, y: f32) -> f32 {
        self.terms
            .iter()
            .map(|(a, fx, fy, p)| a * (fx * x + fy * y + p).sin())
            .sum()
    }
}

/// Samples a grey image at a real-valued position, bilinearly, clamped to the edges.
pub fn sample_bilinear(img: &GrayImage, x: f32, y: f32) -> f32 {
    let (w, h) = img.dimensions();
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = |x, y| img.get_pixel(x, y).0[0] as f32;
    let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
    let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

impl Augmentation {
    /// The default without flips: a sensor never sees a finger mirrored, and a mirrored print
    /// is another finger's, so for open-set use flipping teaches the network to ignore what
    /// tells fingers apart.
    pub fn without_flips() -> Self {
        Self {
            flip_probability: 0.0,
            ..Self::default()
        }
    }

    /// A randomly transformed copy of `img`, same size.
    pub fn apply(&self, img: &GrayImage, rng: &mut impl Rng) -> GrayImage {
        let (w, h) = img.dimensions();
        let (wf, hf) = (w as f32, h as f32);
        let flip_x = rng.gen::<f32>() < self.flip_probability;
        let flip_y = rng.gen::<f32>() < self.flip_probability;
        let (lo, hi) = self.crop_fraction;
        let fraction = if hi > lo { rng.gen_range(lo..=hi) } else { hi };
        // Centre of the crop, kept inside the image.
        let slack = (1.0 - fraction) / 2.0;
        let cx = 0.5 + rng.gen_range(-slack..=slack);
        let cy = 0.5 + rng.gen_range(-slack..=slack);
        let max_angle = self.max_rotation_degrees.to_radians();
        let angle = rng.gen_range(-max_angle..=max_angle);
        let (sin, cos) = angle.sin_cos();
        let dx = Wave::random(rng, self.elastic_amplitude);
        let dy = Wave::random(rng, self.elastic_amplitude);

        GrayImage::from_fn(w, h, |u, v| {
            // Output pixel centre in [0, 1], warped elastically.
            let (x, y) = ((u as f32 + 0.5) / wf, (v as f32 + 0.5) / hf);
            let (x, y) = (x + dx.at(x, y), y + dy.at(x, y));
            // Rotate about the centre and shrink into the crop window.
            let (rx, ry) = (x - 0.5, y - 0.5);
            let (rx, ry) = (cos * rx - sin * ry, sin * rx + cos * ry);
            let (mut sx, mut sy) = (cx + fraction * rx, cy + fraction * ry);
            if flip_x {
                sx = 1.0 - sx;
            }
            if flip_y {
                sy = 1.0 - sy;
            }
            let value = sample_bilinear(img, sx * wf - 0.5, sy * hf - 0.5);
            Luma([value.round().clamp(0.0, 255.0) as u8])
        })
    }

    /// No transformation at all (for tests and for switching augmentation off).
    pub fn none() -> Self {
        Self {
            flip_probability: 0.0,
            crop_fraction: (1.0, 1.0),
            max_rotation_degrees: 0.0,
            elastic_amplitude: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn pattern() -> GrayImage {
        GrayImage::from_fn(32, 32, |x, y| Luma([((x * 5 + y * 11) % 256) as u8]))
    }

    #[test]
    fn identity_settings_leave_the_image_unchanged() {
        let img = pattern();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(Augmentation::none().apply(&img, &mut rng), img);
    }

    #[test]
    fn flips_mirror_the_image() {
        let img = pattern();
        let flip = Augmentation {
            flip_probability: 1.0,
            ..Augmentation::none()
        };
        let out = flip.apply(&img, &mut ChaCha8Rng::seed_from_u64(1));
        let expected = image::imageops::flip_vertical(&image::imageops::flip_horizontal(&img));
        assert_eq!(out, expected);
    }

    #[test]
    fn augmentation_is_seeded_and_varies_between_draws() {
        let img = pattern();
        let aug = Augmentation::default();
        let a = aug.apply(&img, &mut ChaCha8Rng::seed_from_u64(7));
        let b = aug.apply(&img, &mut ChaCha8Rng::seed_from_u64(7));
        let c = aug.apply(&img, &mut ChaCha8Rng::seed_from_u64(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.dimensions(), img.dimensions());
    }
}
