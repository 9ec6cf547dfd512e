//! Where the shipped minutiae threshold and fusion come from: minutiae scores (MCC) of real prints,
//! as a door sees them. For each folder (FVC/PolyU names `<finger>_<impression>.<ext>`, given
//! as `DIR:DPI`), every finger is enrolled from its first 3 impressions; its other
//! impressions are genuine probes; every scan of the folder's other fingers is an impostor
//! probe against it (same sensor). A probe's score for an identity is its best over the 3
//! templates, as in `fingerprint_common::matcher`.
//!
//! Prints, per folder: the highest impostor score, and the share of genuine probes accepted
//! at the zero-false-accept threshold; then the pooled threshold (the highest impostor score
//! of all folders, rounded up to the next tenth above it), each folder's result at the threshold its *other* folders
//! give (leave one out: how it carries to a sensor it was not fitted on), and the logistic
//! fusion fitted on all pairs (minutiae alone), and each folder's upper tail of impostor
//! scores (how the shipped threshold rises with the gallery's size). Scans are read, never
//! copied.
//!
//! `--crop SIDE` first cuts every scan down to a square SIDE pixels wide at 500 dpi around
//! the print's centre (moved by up to a sixth of SIDE either way, seeded): a small sensor's
//! view, to measure how its strangers score (`minutiae::small_print_score`).
//!
//! `cargo run --release -p fingerprint-common --example minutiae_eval -- [--crop 192] \
//!     ../shared/datasets/fvc2002/DB1_B:500 ../shared/datasets/fvc2002/DB2_B:569 ...`

use std::collections::BTreeMap;
use std::path::Path;

use fingerprint_common::matcher::{
    shipped_minutiae_threshold, Fusion, PairScores, SHIPPED_MINUTIAE_THRESHOLD,
};
use fingerprint_common::minutiae::{self, Prepared};
use image::GrayImage;

struct Folder {
    name: String,
    minutiae_mean: f64,
    genuine: Vec<f32>,
    impostor: Vec<f32>,
    /// The same comparisons' MCC scores before small prints are lowered.
    genuine_mcc: Vec<f32>,
    impostor_mcc: Vec<f32>,
    /// Each single impostor comparison (a scan against one impression): the smaller print's
    /// minutiae area, MCC's score and the score.
    impostor_singles: Vec<(f32, f32, f32)>,
}

/// A square `side` pixels wide around the print's centre (its ink's centroid), moved by up
/// to a sixth of `side` either way by `jitter`; the whole scan where it is no larger.
fn crop(image: &GrayImage, side: u32, jitter: &mut impl FnMut() -> f64) -> GrayImage {
    let (width, height) = image.dimensions();
    if side >= width.min(height) {
        return image.clone();
    }
    let (mut sx, mut sy, mut ink) = (0.0, 0.0, 0.0);
    for (x, y, p) in image.enumerate_pixels() {
        let w = f64::from(255 - p.0[0]);
        sx += w * f64::from(x);
        sy += w * f64::from(y);
        ink += w;
    }
    let (cx, cy) = if ink > 0.0 {
        (sx / ink, sy / ink)
    } else {
        (f64::from(width) / 2.0, f64::from(height) / 2.0)
    };
    let half = f64::from(side) / 2.0;
    let mut corner = |centre: f64, extent: u32| {
        let moved = centre + (2.0 * jitter() - 1.0) * f64::from(side) / 6.0;
        (moved - half).clamp(0.0, f64::from(extent - side)) as u32
    };
    let (x, y) = (corner(cx, width), corner(cy, height));
    image::imageops::crop_imm(image, x, y, side, side).to_image()
}

fn scores(dir: &Path, dpi: u32, crop_side: Option<u32>) -> anyhow::Result<Folder> {
    let limits = fingerprint_common::ScanLimits::default();
    // A fixed seed: the same crops on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut jitter = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut by: BTreeMap<String, Vec<(u32, Option<Prepared>)>> = BTreeMap::new();
    let mut counts = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in &files {
        let Some(stem) = f.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some((finger, imp)) = stem.rsplit_once('_') else {
            continue;
        };
        let (Ok(imp), Ok(image)) = (imp.parse(), fingerprint_common::read_scan(f, &limits)) else {
            continue;
        };
        let image = match crop_side {
            // The side at the scan's own resolution.
            Some(side) => crop(
                &image,
                (f64::from(side) * f64::from(dpi) / 500.0).round() as u32,
                &mut jitter,
            ),
            None => image,
        };
        let template = minutiae::extract(&image, dpi).ok();
        counts.push(template.as_ref().map_or(0, |t| t.len()) as f64);
        let template = template.map(|t| t.prepared());
        by.entry(finger.into()).or_default().push((imp, template));
    }
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    let (mut genuine_mcc, mut impostor_mcc) = (Vec::new(), Vec::new());
    let mut impostor_singles = Vec::new();
    let (mut genuine_time, mut impostor_time) = (0.0, 0.0);
    for v in by.values_mut() {
        v.sort_by_key(|x| x.0);
    }
    for (enrolled, scans) in &by {
        let gallery: Vec<&Prepared> = scans.iter().take(3).filter_map(|x| x.1.as_ref()).collect();
        for (finger, probes) in &by {
            let own = finger == enrolled;
            for (_, probe) in probes.iter().skip(if own { 3 } else { 0 }) {
                // Each impression's MCC score, once: the score is that lowered for small
                // prints, as `Prepared::score` does.
                let t = std::time::Instant::now();
                let singles: Vec<(f32, f32, f32)> = probe.as_ref().map_or(Vec::new(), |p| {
                    gallery
                        .iter()
                        .map(|g| {
                            let area = p.area().min(g.area());
                            let mcc = p.mcc_score(g);
                            (area, mcc, minutiae::small_print_score(mcc, area))
                        })
                        .collect()
                });
                let ms = t.elapsed().as_secs_f64() * 1e3 / gallery.len().max(1) as f64;
                let best = |pick: fn(&(f32, f32, f32)) -> f32| {
                    singles.iter().map(pick).fold(0.0f32, f32::max)
                };
                let (s, mcc) = (best(|x| x.2), best(|x| x.1));
                if !own {
                    impostor_singles.extend(singles);
                }
                if own {
                    genuine.push(s);
                    genuine_mcc.push(mcc);
                    genuine_time += ms;
                } else {
                    impostor.push(s);
                    impostor_mcc.push(mcc);
                    impostor_time += ms;
                }
            }
        }
    }
    eprintln!(
        "{}: a minutiae comparison takes {:.2} ms (genuine) and {:.2} ms (impostor) on average",
        dir.display(),
        genuine_time / genuine.len().max(1) as f64,
        impostor_time / impostor.len().max(1) as f64
    );
    Ok(Folder {
        name: dir.display().to_string(),
        minutiae_mean: counts.iter().sum::<f64>() / counts.len().max(1) as f64,
        genuine,
        impostor,
        genuine_mcc,
        impostor_mcc,
        impostor_singles,
    })
}

fn accepted(v: &[f32], t: f32) -> usize {
    v.iter().filter(|&&s| s >= t).count()
}

/// The threshold shipped above a highest impostor score: the next tenth above it.
fn above(top: f32) -> f32 {
    ((top * 10.0).floor() + 1.0) / 10.0
}

/// An exponential fitted on the top 2% (at least 20) of `impostor` scores: the share of
/// comparisons at or above `at`, and the score over which the share falls e-fold (the mean
/// excess over the lowest score kept). None with too few scores.
fn tail_fit(impostor: &[f32], at: f32) -> Option<(f64, f64)> {
    let mut sorted: Vec<f64> = impostor.iter().map(|&s| f64::from(s)).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let k = (sorted.len() / 50).max(20);
    let cut = *sorted.get(k)?;
    let decay = sorted[..k].iter().map(|s| s - cut).sum::<f64>() / k as f64;
    (decay > 0.0).then(|| {
        let share = k as f64 / sorted.len() as f64 * (-(f64::from(at) - cut) / decay).exp();
        (share, decay)
    })
}

fn main() -> anyhow::Result<()> {
    let mut folders = Vec::new();
    let mut crop_side = None;
    let mut args = std::env::args().skip(1);
    while let Some(spec) = args.next() {
        if spec == "--crop" {
            let side = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("--crop needs a side in pixels"))?;
            crop_side = Some(side.parse()?);
            continue;
        }
        let (dir, dpi) = spec
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("{spec}: give DIR:DPI"))?;
        let folder = scores(Path::new(dir), dpi.parse()?, crop_side)?;
        let top = folder.impostor.iter().copied().fold(0.0f32, f32::max);
        let shipped = SHIPPED_MINUTIAE_THRESHOLD;
        println!(
            "{}{}: {:.0} minutiae a scan; {} genuine, {} impostor comparisons; highest impostor score {top:.3}; above it: {:.1}% of genuine probes; at the shipped {shipped}: {} impostor comparisons, {:.1}% of genuine probes (MCC before small prints are lowered: {}, {:.1}%)",
            folder.name,
            crop_side.map_or(String::new(), |s| format!(" (cropped to {s} px)")),
            folder.minutiae_mean,
            folder.genuine.len(),
            folder.impostor.len(),
            100.0 * folder.genuine.iter().filter(|&&s| s > top).count() as f64
                / folder.genuine.len().max(1) as f64,
            accepted(&folder.impostor, shipped),
            100.0 * accepted(&folder.genuine, shipped) as f64
                / folder.genuine.len().max(1) as f64,
            accepted(&folder.impostor_mcc, shipped),
            100.0 * accepted(&folder.genuine_mcc, shipped) as f64
                / folder.genuine_mcc.len().max(1) as f64
        );
        // What the threshold's rise with the gallery costs the enrolled.
        let rises: Vec<String> = [199, 1_000, 10_000]
            .iter()
            .map(|&n| {
                let t = shipped_minutiae_threshold(n);
                format!(
                    "{n} identities ({t:.2}): {:.1}%",
                    100.0 * accepted(&folder.genuine, t) as f64
                        / folder.genuine.len().max(1) as f64
                )
            })
            .collect();
        println!(
            "  genuine probes accepted at the shipped threshold for {}",
            rises.join(", ")
        );
        folders.push(folder);
    }
    // Strangers' single comparisons by how much of the finger the smaller print shows.
    let shipped = SHIPPED_MINUTIAE_THRESHOLD;
    for (low, high) in [
        (0.0, 20_000.0),
        (20_000.0, 30_000.0),
        (30_000.0, 36_000.0),
        (36_000.0, f32::INFINITY),
    ] {
        let (mut total, mut mcc, mut lowered) = (0, 0, 0);
        for &(area, m, s) in folders.iter().flat_map(|f| &f.impostor_singles) {
            if (low..high).contains(&area) {
                total += 1;
                mcc += usize::from(m >= shipped);
                lowered += usize::from(s >= shipped);
            }
        }
        println!(
            "single impostor comparisons, smaller print's minutiae area {low:.0}-{high:.0} px²: {total}; at or above {shipped}: MCC {mcc}, lowered for small prints {lowered}"
        );
    }
    let top = |skip: Option<usize>| {
        folders
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .flat_map(|(_, f)| f.impostor.iter().copied())
            .fold(0.0f32, f32::max)
    };
    let pooled = above(top(None));
    println!("pooled: threshold {pooled:.1} (no impostor comparison of any folder reaches it)");
    for (i, f) in folders.iter().enumerate() {
        let t = above(top(Some(i)));
        println!(
            "  {}: at {t:.1} (from the other folders): {} of {} impostor comparisons accepted, {:.1}% of genuine probes; at {pooled:.1}: {:.1}%",
            f.name,
            accepted(&f.impostor, t),
            f.impostor.len(),
            100.0 * accepted(&f.genuine, t) as f64 / f.genuine.len().max(1) as f64,
            100.0 * accepted(&f.genuine, pooled) as f64 / f.genuine.len().max(1) as f64
        );
    }
    // The upper tail that sets how the shipped threshold rises with the gallery
    // (`matcher::MINUTIAE_IMPOSTOR_TAIL`): an exponential fitted on each folder's top 2%.
    let (mut share_max, mut decay_max) = (0f64, 0f64);
    for f in &folders {
        let Some((share, decay)) = tail_fit(&f.impostor, pooled) else {
            continue;
        };
        println!(
            "  {}: impostor tail (top 2%): {share:.2e} of comparisons at or above {pooled:.1}, falling e-fold every {decay:.3}",
            f.name
        );
        share_max = share_max.max(share);
        decay_max = decay_max.max(decay);
    }
    println!(
        "impostor tail, the largest of each: {share_max:.2e} at {pooled:.1}, e-fold every {decay_max:.3}"
    );
    let pairs = |pick: fn(&Folder) -> &Vec<f32>| -> Vec<PairScores> {
        folders
            .iter()
            .flat_map(|f| pick(f).iter())
            .map(|&minutiae| PairScores {
                network: 0.0,
                minutiae,
            })
            .collect()
    };
    let fusion = Fusion::fit(&pairs(|f| &f.genuine), &pairs(|f| &f.impostor));
    println!(
        "fusion fitted on all pairs (minutiae alone): bias {:.4}, minutiae_weight {:.4}; the pooled threshold as fused log-odds: {:.4}",
        fusion.bias,
        fusion.minutiae_weight,
        fusion.score(PairScores {
            network: 0.0,
            minutiae: pooled
        })
    );
    Ok(())
}
