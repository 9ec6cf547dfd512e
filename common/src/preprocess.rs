//! The one preprocessing of a scan, used by training and by serving alike.
//!
//! A decoded grey scan is (1) made square by the [`ResizePolicy`] (stretched, padded, a
//! window of fixed size cut around the print, or a window of fixed ridge count with the
//! scan rescaled to a fixed ridge period) and resized to `size`x`size`, with a
//! triangle (bilinear, area-aware when shrinking) filter, then (2) replicated to three
//! channels and normalised per channel: `(v / 255 - mean[c]) / std[c]`, laid out CHW.
//! Training augments between (1) and (2); serving does not. Nothing else differs.

use image::{imageops, GrayImage, Luma};
use serde::{Deserialize, Serialize};

/// How a scan that is not square becomes square.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizePolicy {
    /// Resize width and height independently to `size` (the method's plain down-sampling;
    /// ridges of a non-square scan are squeezed along one axis).
    #[default]
    Stretch,
    /// Keep the aspect ratio: centre the scan on a square canvas filled with its background
    /// (the median of its border pixels), then resize.
    Pad,
    /// A `side`x`side` pixel window of the scan at its own resolution, centred on the print
    /// (the centroid of its ridged blocks), padded with the background where it overhangs,
    /// then resized: ridges reach the network at the scale it learned whatever the scan's
    /// size (a whole 500 dpi scan squeezed to 64 px leaves ridges 1-2 px apart).
    Window { side: u32 },
    /// Ridges `period` input pixels apart whatever the sensor's resolution: a window of
    /// `size * scan_period / period` scan pixels cut around the print (background where it
    /// overhangs) is resized to `size`, so every input shows about the same number of ridges
    /// (`size / period`; 14 at 64 px and 4.5), and the network sees the ridge scale it
    /// learned on any sensor. `scan_period` is the adult ridge period at the sensor's
    /// resolution where the door knows it ([`Preprocessing::resize_at`]: a fixed physical
    /// window, so a finger's own ridge spacing still shows), else the scan's own period,
    /// measured ([`ridge_period`]).
    #[serde(rename = "ridge-scale")]
    RidgeScale { period: f32 },
}

/// ImageNet statistics, the ones ResNet checkpoints were trained with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How one channel of the network input is made from a grey value `v` (0..=255):
/// `v * scale - shift`, i.e. `(v / 255 - mean) / std`. The one formula: the CPU engine
/// recognises inputs made by it (three channels of one grey scan) and runs its first layer on
/// the grey values alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChannelNorm {
    pub scale: f32,
    pub shift: f32,
}

impl ChannelNorm {
    /// The network's input value for grey value `v`.
    #[inline]
    pub fn normalize(self, v: u8) -> f32 {
        self.normalize_level(f32::from(v))
    }

    /// [`normalize`](Self::normalize) of a grey value held as f32 (a whole number 0..=255).
    #[inline]
    pub fn normalize_level(self, v: f32) -> f32 {
        v * self.scale - self.shift
    }
}

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

    /// Step (1): the scan as a `size`x`size` grey image, its sensor's resolution unknown.
    pub fn resize(&self, scan: &GrayImage) -> GrayImage {
        self.resize_at(scan, None)
    }

    /// Step (1) for a scan from a sensor of `sensor_dpi` (known: the door's configuration
    /// says so; only [`ResizePolicy::RidgeScale`] uses it).
    pub fn resize_at(&self, scan: &GrayImage, sensor_dpi: Option<u32>) -> GrayImage {
        let square = match self.resize {
            ResizePolicy::Stretch => None,
            ResizePolicy::Pad => pad_to_square(scan),
            ResizePolicy::Window { side } => Some(window_at(scan, side.max(1), print_centre(scan))),
            ResizePolicy::RidgeScale { period } => {
                // One centre for both: the period is measured where the window is cut.
                let centre = print_centre(scan);
                let scan_period = match sensor_dpi {
                    Some(dpi) => ridge_period_at_dpi(dpi),
                    None => ridge_period_at(scan, centre).unwrap_or(DEFAULT_RIDGE_PERIOD),
                };
                let side = (self.size as f32 * scan_period / period.max(1.0)).round();
                Some(window_at(scan, (side as u32).max(1), centre))
            }
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
        for channel in self.channels() {
            out.extend(square.as_raw().iter().map(|&v| channel.normalize(v)));
        }
    }

    /// The three channels' normalisations, in order.
    pub fn channels(&self) -> [ChannelNorm; 3] {
        std::array::from_fn(|c| ChannelNorm {
            scale: 1.0 / (255.0 * self.std[c]),
            shift: self.mean[c] / self.std[c],
        })
    }

    /// Both steps: the network input for one scan, 3 x size x size values, CHW.
    pub fn apply(&self, scan: &GrayImage) -> Vec<f32> {
        self.apply_at(scan, None)
    }

    /// Both steps for a scan from a sensor of known resolution (see [`resize_at`](Self::resize_at)).
    pub fn apply_at(&self, scan: &GrayImage, sensor_dpi: Option<u32>) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.normalize_into(&self.resize_at(scan, sensor_dpi), &mut out);
        out
    }

    /// Step (1) for the scan turned by `degrees` about its centre first
    /// ([`turn`]; 0: exactly [`resize_at`](Self::resize_at)). Enrolment uses it
    /// for the extra templates of [`ENROLMENT_TURNS_DEGREES`].
    pub fn resize_turned_at(
        &self,
        scan: &GrayImage,
        sensor_dpi: Option<u32>,
        degrees: f32,
    ) -> GrayImage {
        if degrees == 0.0 {
            return self.resize_at(scan, sensor_dpi);
        }
        self.resize_at(&turn(scan, degrees), sensor_dpi)
    }

    /// Both steps for the scan turned by `degrees` (see [`resize_turned_at`](Self::resize_turned_at)).
    pub fn apply_turned_at(
        &self,
        scan: &GrayImage,
        sensor_dpi: Option<u32>,
        degrees: f32,
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.normalize_into(&self.resize_turned_at(scan, sensor_dpi, degrees), &mut out);
        out
    }
}

/// The turns, in degrees, of each enrolled scan whose network templates a gallery keeps
/// beside the scan's own: a finger is seldom laid twice at one angle (FVC2002's impressions
/// of a finger differ by up to about 20 degrees), the network is only partly indifferent to
/// that, and a probe compared with an enrolled scan turned its way scores as a probe laid
/// alike. The probe itself is never turned, so identification costs one network pass as
/// before. On the five real open-set splits (README, "Enrolment turns") these lifted the
/// network's rank-1 from 78.6% to 80.8% of 360 genuine probes (int8), EER unchanged.
pub const ENROLMENT_TURNS_DEGREES: [f32; 4] = [-20.0, -10.0, 10.0, 20.0];

/// The scan turned by `degrees` (counter-clockwise as displayed, y down) about its centre,
/// same size, bilinear, the background (the median of its border) where the turned scan has
/// no source pixel. The window that preprocessing then cuts is centred on the print as
/// found in the turned scan. (Turned about the print's centre instead, the network's rank-1
/// on the real open-set splits was 2 points lower: 78.9% against 80.8% of 360 probes.)
pub fn turn(scan: &GrayImage, degrees: f32) -> GrayImage {
    let (w, h) = scan.dimensions();
    if w == 0 || h == 0 {
        return scan.clone();
    }
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let background = f32::from(border_median(scan));
    let (sin, cos) = degrees.to_radians().sin_cos();
    GrayImage::from_fn(w, h, |x, y| {
        // The source of an output pixel: the output turned back by -degrees.
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let sx = cx + cos * dx - sin * dy;
        let sy = cy + sin * dx + cos * dy;
        Luma([bilinear(scan, sx, sy, background)])
    })
}

/// The grey value of `scan` at the fractional point `(x, y)`, interpolated between its four
/// neighbouring pixels; `background` outside the scan.
pub(crate) fn bilinear(scan: &GrayImage, x: f32, y: f32, background: f32) -> u8 {
    let (w, h) = scan.dimensions();
    let pixel = |x: i64, y: i64| -> f32 {
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
            background
        } else {
            f32::from(scan.get_pixel(x as u32, y as u32).0[0])
        }
    };
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let value = pixel(x0, y0) * (1.0 - fx) * (1.0 - fy)
        + pixel(x0 + 1, y0) * fx * (1.0 - fy)
        + pixel(x0, y0 + 1) * (1.0 - fx) * fy
        + pixel(x0 + 1, y0 + 1) * fx * fy;
    value.round().clamp(0.0, 255.0) as u8
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

/// Side of the blocks whose grey-level spread tells ridges from background.
const BLOCK: u32 = 16;

/// The centre of the print: the mean centre of the blocks whose grey-level variance is at
/// least half the largest block variance (ridges alternate dark and light; background and
/// smudges are flat). The image centre when no block stands out.
pub fn print_centre(scan: &GrayImage) -> (u32, u32) {
    let (w, h) = scan.dimensions();
    let mut blocks = Vec::new();
    for by in (0..h).step_by(BLOCK as usize) {
        for bx in (0..w).step_by(BLOCK as usize) {
            let (bw, bh) = (BLOCK.min(w - bx), BLOCK.min(h - by));
            let n = f64::from(bw * bh);
            let (mut sum, mut sq) = (0.0, 0.0);
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let v = f64::from(scan.get_pixel(x, y).0[0]);
                    sum += v;
                    sq += v * v;
                }
            }
            let variance = sq / n - (sum / n).powi(2);
            blocks.push((bx + bw / 2, by + bh / 2, variance));
        }
    }
    let top = blocks.iter().map(|b| b.2).fold(0.0, f64::max);
    let ridged: Vec<&(u32, u32, f64)> = blocks
        .iter()
        .filter(|b| top > 0.0 && b.2 >= 0.5 * top)
        .collect();
    if ridged.is_empty() {
        return (w / 2, h / 2);
    }
    let n = ridged.len() as f64;
    let cx = ridged.iter().map(|b| f64::from(b.0)).sum::<f64>() / n;
    let cy = ridged.iter().map(|b| f64::from(b.1)).sum::<f64>() / n;
    (cx.round() as u32, cy.round() as u32)
}

/// A `side`x`side` window of `scan` centred on `(cx, cy)` (the print's centre), background
/// where it overhangs.
fn window_at(scan: &GrayImage, side: u32, (cx, cy): (u32, u32)) -> GrayImage {
    let (w, h) = scan.dimensions();
    // Keep the window inside the scan where the scan is large enough.
    let origin = |c: u32, extent: u32| -> i64 {
        let start = i64::from(c) - i64::from(side / 2);
        if extent >= side {
            start.clamp(0, i64::from(extent - side))
        } else {
            -i64::from((side - extent) / 2)
        }
    };
    let (x0, y0) = (origin(cx, w), origin(cy, h));
    let mut window = GrayImage::from_pixel(side, side, Luma([border_median(scan)]));
    imageops::replace(&mut window, scan, -x0, -y0);
    window
}

/// Side of the square, centred on the print, whose spectrum gives a scan's ridge period.
const SPECTRUM_SIDE: u32 = 128;
/// Ridge periods a scan may show, in its own pixels: from 3 (a 250 dpi scan squeezed) to 25
/// (a 1000 dpi one).
const PERIOD_RANGE: (f32, f32) = (3.0, 25.0);
/// The period assumed when none can be measured (a blank scan): adult ridges at 500 dpi.
pub const DEFAULT_RIDGE_PERIOD: f32 = 9.0;

/// The adult ridge period ([`DEFAULT_RIDGE_PERIOD`] at 500 dpi, about 0.46 mm) in the pixels
/// of a sensor of `dpi`.
pub fn ridge_period_at_dpi(dpi: u32) -> f32 {
    DEFAULT_RIDGE_PERIOD * dpi.max(1) as f32 / 500.0
}

/// The scan's dominant ridge period, in its pixels: the peak of the radially averaged power
/// spectrum of a Hann-windowed square (up to 128 px) around the print's centre, refined
/// between frequency bins by a parabola. None when the scan is too small or shows no ridges
/// in the range.
pub fn ridge_period(scan: &GrayImage) -> Option<f32> {
    ridge_period_at(scan, print_centre(scan))
}

/// [`ridge_period`] around a centre already found.
fn ridge_period_at(scan: &GrayImage, (cx, cy): (u32, u32)) -> Option<f32> {
    let (w, h) = scan.dimensions();
    let side = SPECTRUM_SIDE.min(w).min(h);
    if side < 24 {
        return None;
    }
    let origin = |c: u32, extent: u32| c.saturating_sub(side / 2).min(extent - side);
    let (x0, y0) = (origin(cx, w), origin(cy, h));
    let n = side as usize;
    let mut values: Vec<f64> = Vec::with_capacity(n * n);
    for y in y0..y0 + side {
        for x in x0..x0 + side {
            values.push(f64::from(scan.get_pixel(x, y).0[0]));
        }
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let hann: Vec<f64> = (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
        .collect();
    for (i, v) in values.iter_mut().enumerate() {
        *v = (*v - mean) * hann[i / n] * hann[i % n];
    }
    // Frequencies (in cycles per square) whose periods lie in the range.
    let r_min = (n as f32 / PERIOD_RANGE.1).floor().max(1.0) as usize;
    let r_max = ((n as f32 / PERIOD_RANGE.0).ceil() as usize).min(n / 2 - 1);
    let (cos, sin): (Vec<f64>, Vec<f64>) = (0..n)
        .map(|k| {
            let a = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
            (a.cos(), a.sin())
        })
        .unzip();
    // Rows first, for u in 0..=r_max: the input is real, so -u is the conjugate of u.
    let mut rows = vec![(0f64, 0f64); n * (r_max + 1)];
    for y in 0..n {
        let line = &values[y * n..(y + 1) * n];
        for u in 0..=r_max {
            let (mut re, mut im) = (0.0, 0.0);
            for (x, v) in line.iter().enumerate() {
                let k = (u * x) % n;
                re += v * cos[k];
                im -= v * sin[k];
            }
            rows[y * (r_max + 1) + u] = (re, im);
        }
    }
    // Then columns, for v in -r_max..=r_max; power summed by ring, each (u, v) split
    // between the two rings around its radius.
    let mut ring_power = vec![0f64; r_max + 2];
    let mut ring_weight = vec![0f64; r_max + 2];
    for u in 0..=r_max {
        for v in -(r_max as i64)..=(r_max as i64) {
            let radius = ((u * u) as f64 + (v * v) as f64).sqrt();
            if radius < 1.0 || radius > r_max as f64 {
                continue;
            }
            let (mut re, mut im) = (0.0, 0.0);
            for y in 0..n {
                let k = ((v.rem_euclid(n as i64) as usize) * y) % n;
                let (a, b) = rows[y * (r_max + 1) + u];
                // (a + ib)(cos - i sin)
                re += a * cos[k] + b * sin[k];
                im += b * cos[k] - a * sin[k];
            }
            let power = re * re + im * im;
            let low = radius.floor() as usize;
            let frac = radius - low as f64;
            ring_power[low] += power * (1.0 - frac);
            ring_weight[low] += 1.0 - frac;
            ring_power[low + 1] += power * frac;
            ring_weight[low + 1] += frac;
        }
    }
    let profile: Vec<f64> = ring_power
        .iter()
        .zip(&ring_weight)
        .enumerate()
        .map(|(r, (p, w))| {
            if *w > 0.0 {
                p / w * (r * r) as f64
            } else {
                0.0
            }
        })
        .collect();
    let peak = (r_min..=r_max).max_by(|a, b| profile[*a].total_cmp(&profile[*b]))?;
    if profile[peak] <= 0.0 {
        return None;
    }
    // A parabola through the peak and its neighbours places it between bins.
    let offset = if peak > r_min && peak < r_max {
        let (l, c, r) = (profile[peak - 1], profile[peak], profile[peak + 1]);
        let denom = l - 2.0 * c + r;
        if denom < 0.0 {
            (0.5 * (l - r) / denom).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    } else {
        0.0
    };
    Some(n as f32 / (peak as f64 + offset) as f32)
}

/// Median of the outermost rows and columns: the background a sensor shows around a finger.
pub(crate) fn border_median(scan: &GrayImage) -> u8 {
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

    /// A print-like grating: rings of `period` pixels around an off-centre core, on a light
    /// background outside an ellipse.
    fn rings(width: u32, height: u32, period: f32) -> GrayImage {
        let (cx, cy) = (width as f32 * 0.45, height as f32 * 0.55);
        GrayImage::from_fn(width, height, |x, y| {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let inside =
                (dx / (0.4 * width as f32)).powi(2) + (dy / (0.45 * height as f32)).powi(2) < 1.0;
            let phase = 2.0 * std::f32::consts::PI * (dx * dx + dy * dy).sqrt() / period;
            Luma([if inside {
                (128.0 + 100.0 * phase.cos()) as u8
            } else {
                230
            }])
        })
    }

    #[test]
    fn a_turn_moves_the_scan_about_its_centre_and_fills_the_background() {
        // A print area (a fine checkerboard) with one dark mark right of the scan's centre.
        let scan = GrayImage::from_fn(201, 201, |x, y| {
            let inside = (60..140).contains(&x) && (60..140).contains(&y);
            let mark = (128..133).contains(&x) && (98..103).contains(&y);
            Luma([match (inside, mark) {
                (_, true) => 0,
                (true, false) => [60, 200][((x / 2 + y / 2) % 2) as usize],
                (false, false) => 230,
            }])
        });
        assert_eq!(turn(&scan, 0.0), scan);
        let turned = turn(&scan, 90.0);
        assert_eq!(turned.dimensions(), scan.dimensions());
        // Counter-clockwise as displayed: the mark right of the centre goes above it.
        let dark = |img: &GrayImage, x: u32, y: u32| img.get_pixel(x, y).0[0] < 30;
        assert!(dark(&scan, 130, 100));
        assert!(dark(&turned, 100, 70), "the mark went elsewhere");
        assert!(!dark(&turned, 130, 100));
        // A turn by 45 degrees brings corners of the scan from outside it: background.
        let corner = turn(&scan, 45.0);
        assert_eq!(corner.get_pixel(0, 0).0[0], 230);
        // The network input of a turn of 0 is the plain one; a turn changes it.
        let pre = Preprocessing {
            resize: ResizePolicy::Window { side: 96 },
            ..Preprocessing::imagenet(32)
        };
        assert_eq!(pre.apply_turned_at(&scan, None, 0.0), pre.apply(&scan));
        assert_ne!(pre.apply_turned_at(&scan, None, 10.0), pre.apply(&scan));
    }

    #[test]
    fn the_ridge_period_is_measured_whatever_the_scale() {
        for (w, h, period) in [
            (300, 300, 7.0),
            (388, 374, 9.0),
            (296, 560, 10.3),
            (504, 480, 14.0),
        ] {
            let measured = ridge_period(&rings(w, h, period)).expect("a period");
            assert!(
                (measured - period).abs() <= 0.07 * period,
                "{w}x{h}: {period} measured as {measured}"
            );
        }
        assert_eq!(
            ridge_period(&GrayImage::from_pixel(200, 200, Luma([128]))),
            None
        );
        assert_eq!(ridge_period(&GrayImage::new(16, 16)), None);
    }

    /// The spec's test on made prints: whatever the scan's ridge period, the network input
    /// shows ridges within 15% of the target period.
    #[test]
    fn ridge_scale_brings_every_scan_to_the_target_period() {
        let pre = Preprocessing {
            resize: ResizePolicy::RidgeScale { period: 4.5 },
            ..Preprocessing::imagenet(64)
        };
        for (w, h, period) in [
            (300, 300, 7.0),
            (388, 374, 9.0),
            (296, 560, 10.3),
            (504, 480, 14.0),
        ] {
            let input = pre.resize(&rings(w, h, period));
            assert_eq!(input.dimensions(), (64, 64));
            let seen = ridge_period(&input).expect("ridges in the input");
            assert!(
                (seen - 4.5).abs() <= 0.15 * 4.5,
                "{w}x{h} at {period}: {seen}"
            );
        }
        let json = serde_json::to_string(&pre.resize).unwrap_or_default();
        assert_eq!(json, r#"{"ridge-scale":{"period":4.5}}"#);
    }

    /// With the sensor's resolution known, the window is a fixed physical size: scans of
    /// one finger at two resolutions give the same input, and a finger whose ridges are
    /// closer than an adult's keeps them closer (its spacing is part of what identifies it).
    #[test]
    fn a_known_resolution_cuts_a_fixed_physical_window() {
        let pre = Preprocessing {
            resize: ResizePolicy::RidgeScale { period: 4.5 },
            ..Preprocessing::imagenet(64)
        };
        // An adult finger at 500 and 1000 dpi: ridges 9 and 18 scan pixels apart.
        for (dpi, w, h, period) in [(500, 388, 374, 9.0), (1000, 776, 748, 18.0)] {
            let seen = ridge_period(&pre.resize_at(&rings(w, h, period), Some(dpi)))
                .expect("ridges in the input");
            assert!((seen - 4.5).abs() <= 0.15 * 4.5, "{dpi} dpi: {seen}");
        }
        // A child's finger at 500 dpi, ridges 6.5 px apart: measured, it would be stretched
        // to 4.5; at the known resolution it stays at 4.5 x 6.5 / 9 = 3.25.
        let child = rings(388, 374, 6.5);
        let known = ridge_period(&pre.resize_at(&child, Some(500))).expect("ridges");
        let measured = ridge_period(&pre.resize_at(&child, None)).expect("ridges");
        assert!((known - 3.25).abs() <= 0.15 * 3.25, "known: {known}");
        assert!((measured - 4.5).abs() <= 0.15 * 4.5, "measured: {measured}");
        // Other policies ignore the resolution.
        let stretch = Preprocessing::imagenet(64);
        assert_eq!(stretch.resize_at(&child, Some(300)), stretch.resize(&child));
        assert!((ridge_period_at_dpi(569) - 10.24).abs() < 0.01);
    }

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
    fn a_window_is_cut_around_the_print_at_the_scan_resolution() {
        // A 300x200 light scan with "ridges" (stripes) in a 80x80 patch off centre.
        let mut scan = GrayImage::from_pixel(300, 200, Luma([230]));
        for y in 100..180 {
            for x in 190..270 {
                scan.put_pixel(x, y, Luma([if (x / 4) % 2 == 0 { 30 } else { 220 }]));
            }
        }
        let (cx, cy) = print_centre(&scan);
        assert!(
            (220..=240).contains(&cx) && (130..=150).contains(&cy),
            "{cx},{cy}"
        );
        let p = Preprocessing {
            resize: ResizePolicy::Window { side: 100 },
            ..Preprocessing::imagenet(50)
        };
        let out = p.resize(&scan);
        assert_eq!(out.dimensions(), (50, 50));
        // Most of the window is the patch, at half scale: stripes 2 px wide.
        let dark = out.pixels().filter(|p| p.0[0] < 100).count();
        assert!(dark > 50 * 50 / 4, "{dark}");
        // A scan smaller than the window is padded with its background.
        let small = GrayImage::from_pixel(40, 40, Luma([200]));
        let w = window_at(&small, 100, print_centre(&small));
        assert_eq!(w.dimensions(), (100, 100));
        assert_eq!(w.get_pixel(0, 0).0[0], 200);
        // Old manifests name the policy as a word; the window carries its side.
        assert_eq!(
            serde_json::from_str::<ResizePolicy>("\"pad\"").ok(),
            Some(ResizePolicy::Pad)
        );
        let json = serde_json::to_string(&ResizePolicy::Window { side: 128 }).unwrap_or_default();
        assert_eq!(json, r#"{"window":{"side":128}}"#);
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
