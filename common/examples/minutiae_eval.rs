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
//! `cargo run --release -p fingerprint-common --example minutiae_eval -- \
//!     ../shared/datasets/fvc2002/DB1_B:500 ../shared/datasets/fvc2002/DB2_B:569 ...`

use std::collections::BTreeMap;
use std::path::Path;

use fingerprint_common::matcher::{Fusion, PairScores};
use fingerprint_common::minutiae::{self, Prepared};

struct Folder {
    name: String,
    minutiae_mean: f64,
    genuine: Vec<f32>,
    impostor: Vec<f32>,
}

fn scores(dir: &Path, dpi: u32) -> anyhow::Result<Folder> {
    let limits = fingerprint_common::ScanLimits::default();
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
        let template = minutiae::extract(&image, dpi).ok();
        counts.push(template.as_ref().map_or(0, |t| t.len()) as f64);
        let template = template.map(|t| t.prepared());
        by.entry(finger.into()).or_default().push((imp, template));
    }
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    let (mut genuine_time, mut impostor_time) = (0.0, 0.0);
    for v in by.values_mut() {
        v.sort_by_key(|x| x.0);
    }
    for (enrolled, scans) in &by {
        let gallery: Vec<&Prepared> = scans.iter().take(3).filter_map(|x| x.1.as_ref()).collect();
        for (finger, probes) in &by {
            let own = finger == enrolled;
            for (_, probe) in probes.iter().skip(if own { 3 } else { 0 }) {
                let t = std::time::Instant::now();
                let s = probe.as_ref().map_or(0.0, |p| {
                    gallery.iter().map(|g| p.score(g)).fold(0.0f32, f32::max)
                });
                let ms = t.elapsed().as_secs_f64() * 1e3 / gallery.len().max(1) as f64;
                if own {
                    genuine.push(s);
                    genuine_time += ms;
                } else {
                    impostor.push(s);
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
    for spec in std::env::args().skip(1) {
        let (dir, dpi) = spec
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("{spec}: give DIR:DPI"))?;
        let folder = scores(Path::new(dir), dpi.parse()?)?;
        let top = folder.impostor.iter().copied().fold(0.0f32, f32::max);
        println!(
            "{}: {:.0} minutiae a scan; {} genuine, {} impostor comparisons; highest impostor score {top:.3}; above it: {:.1}% of genuine probes",
            folder.name,
            folder.minutiae_mean,
            folder.genuine.len(),
            folder.impostor.len(),
            100.0 * folder.genuine.iter().filter(|&&s| s > top).count() as f64
                / folder.genuine.len().max(1) as f64
        );
        folders.push(folder);
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
