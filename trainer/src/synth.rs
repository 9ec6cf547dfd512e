//! Synthetic fingerprints, for tests, the demo and load tests (never for the edge binary).
//!
//! A finger is a *master print*: an orientation field from singular points (the zero-pole
//! model of Sherlock and Monro: arch, left and right loops, whorl), a ridge-frequency map, and
//! ridges grown from noise by repeated orientation- and frequency-tuned Gabor filtering (as
//! SFinGe does), so minutiae appear where ridges meet or end. An *impression* of it is the
//! master seen through a random pose (translation, rotation), an elastic skin distortion, a
//! pressure (dry prints have thin broken ridges, wet ones thick), a partial elliptic contact
//! area, and sensor noise. Dark ridges on a light background, like an optical sensor.

use std::f32::consts::{PI, TAU};
use std::path::{Path, PathBuf};

use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::sample_bilinear;

/// Henry's main pattern classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternClass {
    Arch,
    LeftLoop,
    RightLoop,
    Whorl,
}

/// How much of a real sensor's output an impression imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Realism {
    /// Pose, skin distortion, pressure, contact area, dry blotches and light noise (the
    /// prints every test and the demo were tuned on).
    #[default]
    Plain,
    /// Also what differs between sensors and skins: creases and scars that every impression
    /// of a finger shares; ridge breaks (pores, dry skin) and wet smudges; the sensor's
    /// response curve (gamma), uneven lighting, background, contrast, blur and noise each
    /// drawn over a wide range.
    Sensor,
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub fingers: usize,
    pub impressions: usize,
    /// Side of the square scans, in pixels (ridge period about 9 px, as at 500 dpi).
    pub size: u32,
    pub seed: u64,
    /// Markers written before this field: plain.
    #[serde(default)]
    pub realism: Realism,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            fingers: 20,
            impressions: 8,
            size: 256,
            seed: 0,
            realism: Realism::Plain,
        }
    }
}

/// A finger's ridge pattern, independent of any impression: values in [-1, 1], ridges high.
pub struct MasterPrint {
    pub class: PatternClass,
    side: u32,
    ridges: GrayImage,
}

/// Number of orientation bins and frequency bins of the Gabor filter bank.
const ORIENTATIONS: usize = 24;
const FREQUENCIES: usize = 3;
const KERNEL_RADIUS: i32 = 6;
const GROWTH_ITERATIONS: usize = 14;

struct FilterBank {
    /// [frequency][orientation] -> (2r+1)^2 taps.
    kernels: Vec<Vec<Vec<f32>>>,
}

impl FilterBank {
    fn new(base_period: f32) -> Self {
        let periods = [base_period * 0.9, base_period, base_period * 1.12];
        let r = KERNEL_RADIUS;
        let sigma = 0.45 * base_period;
        let kernels = periods
            .iter()
            .map(|&period| {
                (0..ORIENTATIONS)
                    .map(|o| {
                        // Ridge direction theta: the cosine runs across the ridges.
                        let theta = o as f32 * PI / ORIENTATIONS as f32;
                        let (s, c) = theta.sin_cos();
                        let mut taps = Vec::with_capacity(((2 * r + 1) * (2 * r + 1)) as usize);
                        for dy in -r..=r {
                            for dx in -r..=r {
                                let (x, y) = (dx as f32, dy as f32);
                                let along = x * c + y * s;
                                let across = -x * s + y * c;
                                let envelope = (-(along * along + across * across)
                                    / (2.0 * sigma * sigma))
                                    .exp();
                                taps.push(envelope * (TAU * across / period).cos());
                            }
                        }
                        let mean = taps.iter().sum::<f32>() / taps.len() as f32;
                        taps.iter_mut().for_each(|t| *t -= mean);
                        taps
                    })
                    .collect()
            })
            .collect();
        Self { kernels }
    }
}

/// A position in master-print pixels.
type Point = (f32, f32);

/// Angle (mod pi) of the ridges at (x, y) by the zero-pole model.
fn orientation(cores: &[Point], deltas: &[Point], base: f32, x: f32, y: f32) -> f32 {
    let arg = |(px, py): Point| (y - py).atan2(x - px);
    let theta = base
        + 0.5
            * (deltas.iter().map(|&d| arg(d)).sum::<f32>()
                - cores.iter().map(|&c| arg(c)).sum::<f32>());
    theta.rem_euclid(PI)
}

impl MasterPrint {
    /// Grows the master print of a finger from its seed.
    pub fn new(side: u32, rng: &mut impl Rng) -> Self {
        let s = side as f32;
        let class = match rng.gen_range(0..10) {
            0 => PatternClass::Arch,
            1..=3 => PatternClass::LeftLoop,
            4..=6 => PatternClass::RightLoop,
            _ => PatternClass::Whorl,
        };
        let jitter = |rng: &mut dyn rand::RngCore, v: f32| v + s * rng.gen_range(-0.06..0.06);
        let (cx, cy) = (jitter(rng, 0.5 * s), jitter(rng, 0.42 * s));
        let (cores, deltas): (Vec<Point>, Vec<Point>) = match class {
            PatternClass::Arch => (vec![], vec![]),
            PatternClass::LeftLoop | PatternClass::RightLoop => {
                let side_sign = if class == PatternClass::LeftLoop {
                    1.0
                } else {
                    -1.0
                };
                let dx = side_sign * s * rng.gen_range(0.15..0.28);
                let dy = s * rng.gen_range(0.2..0.32);
                (vec![(cx, cy)], vec![(cx + dx, cy + dy)])
            }
            PatternClass::Whorl => {
                let half = s * rng.gen_range(0.03..0.07);
                let tilt = rng.gen_range(-0.6..0.6f32);
                let dy = s * rng.gen_range(0.22..0.32);
                let spread = s * rng.gen_range(0.22..0.3);
                (
                    vec![
                        (cx - half * tilt.cos(), cy - half * tilt.sin()),
                        (cx + half * tilt.cos(), cy + half * tilt.sin()),
                    ],
                    vec![(cx - spread, cy + dy), (cx + spread, cy + dy)],
                )
            }
        };
        // An arch bends the ridges upward in the middle, more towards the bottom.
        let arch_amp = rng.gen_range(0.5..0.9f32);
        let base = rng.gen_range(-0.1..0.1f32);
        let base_period = rng.gen_range(8.0..10.0f32);
        let bank = FilterBank::new(base_period);
        let freq_wave = (
            rng.gen::<f32>() * TAU,
            rng.gen::<f32>() * TAU,
            rng.gen_range(1.0..2.5),
        );

        let n = side as usize;
        // (orientation bin, frequency bin) of every pixel.
        let bins: Vec<(u8, u8)> = (0..n * n)
            .map(|i| {
                let (x, y) = ((i % n) as f32, (i / n) as f32);
                let theta = if class == PatternClass::Arch {
                    let u = (x - cx) / (0.3 * s);
                    let slope = -2.0 * u * (-u * u).exp() * arch_amp * (y / s);
                    slope.atan().rem_euclid(PI)
                } else {
                    orientation(&cores, &deltas, base, x, y)
                };
                let o = ((theta / PI * ORIENTATIONS as f32).round() as usize) % ORIENTATIONS;
                let (px, py, k) = freq_wave;
                let wave = (k * TAU * x / s + px).sin() * (k * TAU * y / s + py).cos();
                let f = (((wave + 1.0) / 2.0 * FREQUENCIES as f32) as usize).min(FREQUENCIES - 1);
                (o as u8, f as u8)
            })
            .collect();

        let mut field: Vec<f32> = (0..n * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let r = KERNEL_RADIUS as usize;
        let padded = n + 2 * r;
        let mut buffer = vec![0f32; padded * padded];
        for _ in 0..GROWTH_ITERATIONS {
            for y in 0..n {
                buffer[(y + r) * padded + r..(y + r) * padded + r + n]
                    .copy_from_slice(&field[y * n..(y + 1) * n]);
            }
            field.par_chunks_mut(n).enumerate().for_each(|(y, row)| {
                for (x, out) in row.iter_mut().enumerate() {
                    let (o, f) = bins[y * n + x];
                    let taps = &bank.kernels[f as usize][o as usize];
                    let k = 2 * r + 1;
                    let mut acc = 0.0;
                    for ky in 0..k {
                        let src = &buffer[(y + ky) * padded + x..(y + ky) * padded + x + k];
                        let w = &taps[ky * k..(ky + 1) * k];
                        acc += src.iter().zip(w).map(|(a, b)| a * b).sum::<f32>();
                    }
                    *out = acc;
                }
            });
            let rms = (field.iter().map(|v| v * v).sum::<f32>() / field.len() as f32).sqrt();
            let gain = 2.5 / rms.max(1e-12);
            field.iter_mut().for_each(|v| *v = (*v * gain).tanh());
        }
        let ridges = GrayImage::from_fn(side, side, |x, y| {
            let v = field[y as usize * n + x as usize];
            Luma([((v + 1.0) * 127.5).round() as u8])
        });
        Self {
            class,
            side,
            ridges,
        }
    }

    /// Creases and scars, which every impression of the finger shows: lines (mostly across
    /// the finger) and short wider cuts where the skin does not touch the sensor.
    fn add_marks(&mut self, rng: &mut impl Rng) {
        let s = self.side as f32;
        let marks: Vec<(f32, f32, f32, f32, f32, f32)> = (0..rng.gen_range(0..5))
            .map(|i| {
                let scar = i == 0 && rng.gen_bool(0.3);
                let angle = if scar {
                    rng.gen_range(0.0..PI)
                } else {
                    rng.gen_range(-0.5..0.5f32)
                };
                let (cx, cy) = (rng.gen_range(0.15..0.85) * s, rng.gen_range(0.2..0.9) * s);
                let half_len = if scar {
                    rng.gen_range(0.05..0.15) * s
                } else {
                    rng.gen_range(0.2..0.6) * s
                };
                let width = if scar {
                    rng.gen_range(2.5..5.0)
                } else {
                    rng.gen_range(0.8..2.2)
                };
                (cx, cy, angle, half_len, width, rng.gen_range(0.6..1.0))
            })
            .collect();
        if marks.is_empty() {
            return;
        }
        for (x, y, p) in self.ridges.enumerate_pixels_mut() {
            let (x, y) = (x as f32, y as f32);
            let mut keep = 1f32;
            for &(cx, cy, angle, half_len, width, depth) in &marks {
                let (sin, cos) = angle.sin_cos();
                let (dx, dy) = (x - cx, y - cy);
                let along = dx * cos + dy * sin;
                let across = (-dx * sin + dy * cos).abs();
                if along.abs() < half_len {
                    let taper = 1.0 - (along.abs() / half_len).powi(4);
                    let cut = (1.0 - across / width).clamp(0.0, 1.0) * depth * taper;
                    keep = keep.min(1.0 - cut);
                }
            }
            // Towards a valley (0 in the picture's -1..1 scale is 127.5): no ink.
            let v = f32::from(p.0[0]);
            p.0[0] = (v * keep).round() as u8;
        }
    }

    /// The ridge pattern as a picture (ridges dark).
    pub fn picture(&self) -> GrayImage {
        let mut img = self.ridges.clone();
        img.pixels_mut().for_each(|p| p.0[0] = 255 - p.0[0]);
        img
    }

    /// One impression of the finger, `size`x`size`, drawn with `rng`.
    pub fn impression(&self, size: u32, rng: &mut impl Rng) -> GrayImage {
        self.impression_as(size, Realism::Plain, rng)
    }

    /// One impression with the given realism (plain draws exactly what it always drew).
    pub fn impression_as(&self, size: u32, realism: Realism, rng: &mut impl Rng) -> GrayImage {
        let m = self.side as f32;
        let s = size as f32;
        let angle = rng.gen_range(-12f32..12.0).to_radians();
        let (sin, cos) = angle.sin_cos();
        let shift = (
            rng.gen_range(-0.06..0.06) * m,
            rng.gen_range(-0.06..0.06) * m,
        );
        // Elastic distortion: smooth displacement, in master pixels.
        let amp = rng.gen_range(0.0..0.012) * m;
        let waves: Vec<(f32, f32, f32, f32, f32)> = (0..4)
            .map(|_| {
                (
                    amp * rng.gen_range(-1.0..1.0),
                    TAU * rng.gen_range(0.4..1.5) / m,
                    TAU * rng.gen_range(0.4..1.5) / m,
                    rng.gen::<f32>() * TAU,
                    rng.gen::<f32>() * TAU,
                )
            })
            .collect();
        // Pressure: > 0 wet (thick ridges), < 0 dry (thin).
        let pressure = rng.gen_range(-0.35..0.35f32);
        let contrast = rng.gen_range(0.65..0.9f32);
        let noise = rng.gen_range(2.0..9.0f32);
        // Contact area: an ellipse, shifted and sized at random; partial contact cuts it.
        let (ex, ey) = (
            s * (0.5 + rng.gen_range(-0.08..0.08)),
            s * (0.5 + rng.gen_range(-0.06..0.1)),
        );
        let (rx, ry) = (s * rng.gen_range(0.3..0.42), s * rng.gen_range(0.38..0.5));
        let background = rng.gen_range(225.0..250.0f32);
        // Dry skin: a few blotches where the ridges do not print.
        let blotches: Vec<(f32, f32, f32)> = (0..rng.gen_range(0..6))
            .map(|_| {
                (
                    rng.gen_range(0.0..s),
                    rng.gen_range(0.0..s),
                    rng.gen_range(3.0..9.0),
                )
            })
            .collect();
        let sensor = (realism == Realism::Sensor).then(|| SensorLook::draw(s, rng));
        let (background, contrast, noise) = match &sensor {
            Some(look) => (look.background, look.contrast, look.noise),
            None => (background, contrast, noise),
        };

        let mut img = GrayImage::new(size, size);
        for (u, v, px) in img.enumerate_pixels_mut() {
            let (x, y) = (u as f32, v as f32);
            // Output pixel -> master coordinates.
            let (cx, cy) = (x * m / s - m / 2.0, y * m / s - m / 2.0);
            let (mut mx, mut my) = (
                cos * cx - sin * cy + m / 2.0 + shift.0,
                sin * cx + cos * cy + m / 2.0 + shift.1,
            );
            for (a, fx, fy, p, q) in &waves {
                mx += a * (fx * mx + fy * my + p).sin();
                my += a * (fx * mx + fy * my + q).cos();
            }
            let ridge = sample_bilinear(&self.ridges, mx, my) / 127.5 - 1.0;
            let mut ink = 1.0 / (1.0 + (-(ridge + pressure) * 4.0).exp());
            if let Some(look) = &sensor {
                ink = look.ink(ink, mx, my, x, y);
            }
            let d = ((x - ex) / rx).powi(2) + ((y - ey) / ry).powi(2);
            // Fade out towards the master's border, which would otherwise repeat its edge.
            let edge = mx.min(my).min(m - 1.0 - mx).min(m - 1.0 - my);
            let mut contact =
                (1.0 - (d - 0.8) / 0.3).clamp(0.0, 1.0) * (edge / 8.0).clamp(0.0, 1.0);
            for (bx, by, br) in &blotches {
                let dd = ((x - bx).powi(2) + (y - by).powi(2)).sqrt() / br;
                contact *= dd.clamp(0.3, 1.0);
            }
            let lit = match &sensor {
                Some(look) => background * look.light(x / s, y / s),
                None => background,
            };
            let mut value = lit * (1.0 - contrast * ink * contact) + noise * gaussian(rng);
            if let Some(look) = &sensor {
                value = 255.0 * (value.clamp(0.0, 255.0) / 255.0).powf(look.gamma);
            }
            *px = Luma([value.round().clamp(0.0, 255.0) as u8]);
        }
        image::imageops::blur(&img, sensor.as_ref().map_or(0.6, |look| look.blur))
    }
}

/// What one sensor and one touch add to an impression ([`Realism::Sensor`]).
struct SensorLook {
    background: f32,
    contrast: f32,
    noise: f32,
    gamma: f32,
    blur: f32,
    /// Lighting gradient across x and y.
    light: (f32, f32),
    /// Ridge breaks: a coarse random grid (cells of about a third of a ridge period, in
    /// master pixels) and how much of a ridge's ink a break takes.
    breaks: (Vec<f32>, usize, f32, f32),
    /// Wet smudges: (x, y, radius) in scan pixels, and how dark.
    smudges: Vec<(f32, f32, f32, f32)>,
}

impl SensorLook {
    fn draw(s: f32, rng: &mut impl Rng) -> Self {
        let cell = rng.gen_range(2.5..4.0f32);
        let cells = (s * 1.4 / cell).ceil() as usize + 2;
        let grid = (0..cells * cells).map(|_| rng.gen::<f32>()).collect();
        Self {
            background: rng.gen_range(170.0..252.0),
            contrast: rng.gen_range(0.35..0.95),
            noise: rng.gen_range(2.0..14.0),
            gamma: rng.gen_range(0.6..1.6),
            blur: rng.gen_range(0.4..1.3),
            light: (rng.gen_range(-0.2..0.2), rng.gen_range(-0.2..0.2)),
            breaks: (grid, cells, cell, rng.gen_range(0.0..0.8)),
            smudges: (0..rng.gen_range(0..3))
                .map(|_| {
                    (
                        rng.gen_range(0.0..s),
                        rng.gen_range(0.0..s),
                        rng.gen_range(0.04..0.15) * s,
                        rng.gen_range(0.3..0.8),
                    )
                })
                .collect(),
        }
    }

    /// Lighting at (u, v) in 0..1 of the scan.
    fn light(&self, u: f32, v: f32) -> f32 {
        1.0 + self.light.0 * (u - 0.5) + self.light.1 * (v - 0.5)
    }

    /// `ink` at master point (mx, my), scan point (x, y), after breaks and smudges.
    fn ink(&self, ink: f32, mx: f32, my: f32, x: f32, y: f32) -> f32 {
        let (grid, cells, cell, strength) = &self.breaks;
        let (gx, gy) = ((mx / cell).max(0.0) as usize, (my / cell).max(0.0) as usize);
        let r = grid[gy.min(cells - 1) * cells + gx.min(cells - 1)];
        // A break where the grid's value is high: a pore or a dry spot on the ridge.
        let mut ink = ink * (1.0 - strength * ((r - 0.7) / 0.3).clamp(0.0, 1.0));
        for &(sx, sy, radius, darkness) in &self.smudges {
            let d = ((x - sx).powi(2) + (y - sy).powi(2)).sqrt() / radius;
            ink = ink.max(darkness * (1.0 - d).clamp(0.0, 1.0));
        }
        ink
    }
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// The random stream of finger `finger` under `seed`.
fn finger_rng(seed: u64, finger: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(finger as u64 + 1);
    rng
}

/// Every impression of every finger: `result[finger][impression]`. Deterministic for a config
/// whatever the number of threads.
pub fn generate(config: &SynthConfig) -> Vec<Vec<GrayImage>> {
    // Masters are a little larger than the scans, so a shifted impression stays on the finger.
    let master_side = (config.size as f32 * 1.15).round() as u32;
    (0..config.fingers)
        .into_par_iter()
        .map(|finger| {
            let mut rng = finger_rng(config.seed, finger);
            let mut master = MasterPrint::new(master_side, &mut rng);
            if config.realism == Realism::Sensor {
                master.add_marks(&mut rng);
            }
            (0..config.impressions)
                .map(|_| master.impression_as(config.size, config.realism, &mut rng))
                .collect()
        })
        .collect()
}

/// Writes a dataset as `<finger>_<impression>.png` (fingers from 1, impressions from 1, as
/// FVC numbers them) and returns the paths written.
/// Written beside the scans of `trainer synth`: says they are synthetic (a threshold
/// calibrated on them is marked so, and does not pass for one of real prints) and how they
/// were made.
pub const SYNTH_MARKER: &str = "synthetic-prints.json";

pub fn write_dataset(config: &SynthConfig, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let marker = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(SYNTH_MARKER), marker)?;
    let prints = generate(config);
    let mut paths = Vec::new();
    for (f, impressions) in prints.iter().enumerate() {
        for (i, img) in impressions.iter().enumerate() {
            let path = dir.join(format!("{}_{}.png", f + 1, i + 1));
            img.save(&path).map_err(std::io::Error::other)?;
            paths.push(path);
        }
    }
    Ok(paths)
}
