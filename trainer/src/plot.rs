//! Small line charts as PNG (training curves, DET curves): axes, ticks, a legend, no
//! dependencies beyond `image` and an 8x8 bitmap font, so they render on any machine.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

pub const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
pub const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
pub const GREEN: Rgb<u8> = Rgb([44, 160, 44]);
pub const RED: Rgb<u8> = Rgb([214, 39, 40]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub color: Rgb<u8>,
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title, axis labels and its lines.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range (for accuracies); otherwise fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

const PANEL_W: u32 = 520;
const PANEL_H: u32 = 380;
const LEFT: u32 = 70;
const RIGHT: u32 = 20;
const TOP: u32 = 40;
const BOTTOM: u32 = 50;

/// Draws text with the 8x8 font scaled by `scale`, top-left at (x, y).
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as i64 * 8 + col) * scale as i64 + dx as i64;
                        let py = y + row as i64 * scale as i64 + dy as i64;
                        put(img, px, py, color);
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

/// A line `width` pixels wide.
pub fn draw_line(img: &mut RgbImage, from: (f64, f64), to: (f64, f64), width: i64, color: Rgb<u8>) {
    let steps = ((to.0 - from.0).abs().max((to.1 - from.1).abs()).ceil() as usize).max(1);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (from.0 + t * (to.0 - from.0), from.1 + t * (to.1 - from.1));
        for dy in 0..width {
            for dx in 0..width {
                put(
                    img,
                    x as i64 + dx - width / 2,
                    y as i64 + dy - width / 2,
                    color,
                );
            }
        }
    }
}

/// A readable number for a tick label.
fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.0e}")
    }
}

fn draw_panel(img: &mut RgbImage, x0: u32, panel: &Panel) {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if xmin > xmax {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((lo, hi)) = panel.y_range {
        (ymin, ymax) = (lo, hi);
    }
    if xmax - xmin < 1e-12 {
        xmax = xmin + 1.0;
    }
    if ymax - ymin < 1e-12 {
        ymax = ymin + 1.0;
    }
    let (w, h) = (
        (PANEL_W - LEFT - RIGHT) as f64,
        (PANEL_H - TOP - BOTTOM) as f64,
    );
    let px = |x: f64| x0 as f64 + LEFT as f64 + (x - xmin) / (xmax - xmin) * w;
    let py = |y: f64| TOP as f64 + h - (y - ymin) / (ymax - ymin) * h;

    for i in 0..=4 {
        let fy = ymin + (ymax - ymin) * i as f64 / 4.0;
        let fx = xmin + (xmax - xmin) * i as f64 / 4.0;
        draw_line(img, (px(xmin), py(fy)), (px(xmax), py(fy)), 1, GRID);
        draw_line(img, (px(fx), py(ymin)), (px(fx), py(ymax)), 1, GRID);
        let label = tick_label(fy);
        draw_text(
            img,
            px(xmin) as i64 - 8 * label.len() as i64 - 6,
            py(fy) as i64 - 4,
            &label,
            1,
            INK,
        );
        let label = tick_label(fx);
        draw_text(
            img,
            px(fx) as i64 - 4 * label.len() as i64,
            py(ymin) as i64 + 8,
            &label,
            1,
            INK,
        );
    }
    draw_line(img, (px(xmin), py(ymin)), (px(xmax), py(ymin)), 1, INK);
    draw_line(img, (px(xmin), py(ymin)), (px(xmin), py(ymax)), 1, INK);
    let title_x = x0 as i64 + (PANEL_W as i64 - 16 * panel.title.len() as i64) / 2;
    draw_text(img, title_x, 10, &panel.title, 2, INK);
    let xl_x = px((xmin + xmax) / 2.0) as i64 - 4 * panel.x_label.len() as i64;
    draw_text(img, xl_x, (PANEL_H - 20) as i64, &panel.x_label, 1, INK);
    draw_text(img, x0 as i64 + 4, TOP as i64 - 14, &panel.y_label, 1, INK);

    for (i, series) in panel.series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (px(x), py(y.clamp(ymin, ymax))))
            .collect();
        for pair in pts.windows(2) {
            draw_line(img, pair[0], pair[1], 2, series.color);
        }
        if let [only] = pts.as_slice() {
            draw_line(img, *only, *only, 5, series.color);
        }
        // Legend, top right.
        let lx = (x0 + PANEL_W - RIGHT - 150) as f64;
        let ly = (TOP + 10 + 14 * i as u32) as f64;
        draw_line(img, (lx, ly + 4.0), (lx + 20.0, ly + 4.0), 3, series.color);
        draw_text(img, lx as i64 + 26, ly as i64, &series.label, 1, INK);
    }
}

/// Panels side by side on a white canvas.
pub fn chart(panels: &[Panel]) -> RgbImage {
    let mut img = RgbImage::from_pixel(
        PANEL_W * panels.len().max(1) as u32,
        PANEL_H,
        Rgb([255, 255, 255]),
    );
    for (i, panel) in panels.iter().enumerate() {
        draw_panel(&mut img, i as u32 * PANEL_W, panel);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_lines_in_their_colours() {
        let panel = Panel {
            title: "loss".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![Series {
                label: "train".into(),
                color: RED,
                points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)],
            }],
            y_range: None,
        };
        let img = chart(&[panel]);
        assert_eq!(img.dimensions(), (PANEL_W, PANEL_H));
        let red = img.pixels().filter(|p| **p == RED).count();
        assert!(red > 300, "line drawn: {red} red pixels");
        let ink = img.pixels().filter(|p| **p == INK).count();
        assert!(ink > 200, "axes and text drawn: {ink}");
    }
}
