//! The network on minutiae-centred patches (README, "Minutiae-centred patches"; issue 21), the
//! two steps around `trainer train` and `trainer predict` that `scripts/real-closedset.sh`
//! runs with PATCHES=1:
//!
//! - `cut SPLIT OUT [PATH_PART=DPI ...]`: the scans of a trainer run's `split.json` become
//!   patch datasets `OUT/{train,val,test}/<finger>/<scan>_m<k>.png` ([`PatchSpec::default`]:
//!   64 px, 4 px a ridge, the 40 best minutiae of a scan), one folder per finger as the run
//!   named it (`/` becomes `-`). A scan is taken at 500 dpi unless its path contains a
//!   PATH_PART given (e.g. `DB2_B=569`). Scans whose minutiae cannot be extracted are listed
//!   and skipped. The split's scans are read, never copied whole.
//! - `score PREDICTIONS SPLIT`: `trainer predict --top-k <every finger>` JSON of the test
//!   patches in, each test scan's finger by the sum of its patches' log-probabilities out, as
//!   JSON (`test_scans`, `top1`, `without_patches`, `patches`, `patch_top1`). Every test scan
//!   of the split counts: one that gave no patches (too few minutiae) is a miss.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use fingerprint_common::minutiae;
use fingerprint_common::patches::{add_log_probabilities, minutia_patches, PatchSpec};
use serde::Deserialize;

#[derive(Deserialize)]
struct SplitScan {
    path: String,
    identity: usize,
}

#[derive(Deserialize)]
struct Split {
    identities: Vec<String>,
    train: Vec<SplitScan>,
    val: Vec<SplitScan>,
    test: Vec<SplitScan>,
}

#[derive(Deserialize)]
struct Candidate {
    identity: String,
    probability: f32,
}

#[derive(Deserialize)]
struct Prediction {
    scan: String,
    top: Vec<Candidate>,
}

/// One patch's (finger, probability) pairs.
type PatchProbabilities = Vec<(String, f32)>;

fn read_split(split: &Path) -> anyhow::Result<Split> {
    serde_json::from_slice(
        &std::fs::read(split).with_context(|| format!("reading {}", split.display()))?,
    )
    .with_context(|| format!("{} is not a trainer split", split.display()))
}

fn cut(split: &Path, out: &Path, dpis: &[(String, u32)]) -> anyhow::Result<()> {
    let split = read_split(split)?;
    let spec = PatchSpec::default();
    let limits = fingerprint_common::ScanLimits::default();
    for (part, scans) in [
        ("train", &split.train),
        ("val", &split.val),
        ("test", &split.test),
    ] {
        let (mut cut, mut patches) = (0, 0);
        for scan in scans.iter() {
            let Some(name) = split.identities.get(scan.identity) else {
                bail!("{}: identity {} not in the split", scan.path, scan.identity);
            };
            let dpi = dpis
                .iter()
                .find(|(part, _)| scan.path.contains(part.as_str()))
                .map_or(minutiae::NATIVE_DPI, |d| d.1);
            let path = Path::new(&scan.path);
            let image = fingerprint_common::read_scan(path, &limits)
                .with_context(|| format!("reading {}", path.display()))?;
            let template = match minutiae::extract(&image, dpi) {
                Ok(template) => template,
                Err(e) => {
                    eprintln!("{}: {e}; skipped", path.display());
                    continue;
                }
            };
            let native = minutiae::to_native_resolution(&image, dpi);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .with_context(|| format!("{}: no file name", path.display()))?;
            let dir = out.join(part).join(name.replace('/', "-"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (k, patch) in minutia_patches(&native, &template, &spec)
                .iter()
                .enumerate()
            {
                let file = dir.join(format!("{stem}_m{k:03}.png"));
                patch
                    .save(&file)
                    .with_context(|| format!("writing {}", file.display()))?;
                patches += 1;
            }
            cut += 1;
        }
        eprintln!(
            "{part}: {patches} patches of {cut} of {} scans",
            scans.len()
        );
    }
    Ok(())
}

fn score(predictions: &Path, split: &Path) -> anyhow::Result<()> {
    let test_scans = read_split(split)?.test.len();
    let predictions: Vec<Prediction> = serde_json::from_slice(
        &std::fs::read(predictions)
            .with_context(|| format!("reading {}", predictions.display()))?,
    )
    .with_context(|| format!("{} is not `trainer predict` output", predictions.display()))?;
    // Patches of one scan: `<finger>/<scan>_m<k>.png`, the finger as in the model's labels.
    let mut scans: BTreeMap<(String, String), Vec<PatchProbabilities>> = BTreeMap::new();
    let mut patch_hits = 0;
    for p in &predictions {
        let path = Path::new(&p.scan);
        let finger = path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|d| d.to_str())
            .with_context(|| format!("{}: no finger folder", p.scan))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit_once("_m"))
            .with_context(|| format!("{}: not a patch name <scan>_m<k>", p.scan))?
            .0;
        if p.top.first().is_some_and(|c| c.identity == finger) {
            patch_hits += 1;
        }
        scans
            .entry((finger.to_string(), stem.to_string()))
            .or_default()
            .push(
                p.top
                    .iter()
                    .map(|c| (c.identity.clone(), c.probability))
                    .collect(),
            );
    }
    let hits = scans
        .iter()
        .filter(|((finger, _), patches)| {
            add_log_probabilities(patches.iter().map(Vec::as_slice))
                .first()
                .is_some_and(|best| &best.0 == finger)
        })
        .count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    if scans.len() > test_scans {
        bail!(
            "{} scans' patches, the split has {test_scans} test scans",
            scans.len()
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "test_scans": test_scans,
            "top1": ratio(hits, test_scans),
            "without_patches": test_scans - scans.len(),
            "patches": predictions.len(),
            "patch_top1": ratio(patch_hits, predictions.len()),
        })
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, split, out, dpis @ ..] if mode == "cut" => {
            let dpis = dpis
                .iter()
                .map(|d| {
                    let (part, dpi) = d
                        .split_once('=')
                        .with_context(|| format!("{d}: not PATH_PART=DPI"))?;
                    Ok((part.to_string(), dpi.parse().with_context(|| format!("{d}: dpi"))?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            cut(Path::new(split), Path::new(out), &dpis)
        }
        [mode, predictions, split] if mode == "score" => {
            score(Path::new(predictions), Path::new(split))
        }
        _ => bail!(
            "usage: minutiae_patches cut SPLIT_JSON OUT [PATH_PART=DPI ...] | score PREDICTIONS_JSON SPLIT_JSON"
        ),
    }
}
