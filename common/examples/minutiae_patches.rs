//! The network on minutiae-centred patches (README, "Minutiae-centred patches"; issue 21), the
//! steps around `trainer train` and `trainer predict` that `scripts/real-closedset.sh` runs
//! with PATCHES=1 (the closed set: `cut`, `score`) and `scripts/patches-openset.sh` runs (the
//! open set: `cut-dir`, `openset`):
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
//! - `cut-dir DIR OUT DPI`: the scans of a folder (FVC names, `<finger>_<impression>.<ext>`,
//!   at DPI) become `OUT/<finger>/<scan>_m<k>.png`, as `cut` cuts them.
//! - `openset ENROLLED_DIR ENROLLED_TEMPLATES STRANGERS_DIR STRANGERS_TEMPLATES N`: `trainer
//!   predict --embeddings` JSON of both folders' patches in; the first N scans of each finger
//!   of ENROLLED_DIR enrolled, its other scans and every scan of STRANGERS_DIR probes, scored
//!   by [`patch_set_similarity`]; the open-set report (`fingerprint_common::openset`: rank-1,
//!   EER, ...) out as JSON, with `probes_without_patches`, and under `test_normalised` the
//!   report of the same scores each rescaled against the probe's scores across the gallery
//!   ([`test_normalised`]). A probe that gave no patches identifies nobody.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use fingerprint_common::minutiae;
use fingerprint_common::patches::{
    add_log_probabilities, minutia_patches, patch_set_similarity, test_normalised, PatchSpec,
};
use fingerprint_common::scan::is_scan_file_name;
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

/// Patch templates by (finger, scan stem).
type ScanTemplates = BTreeMap<(String, String), Vec<Vec<f32>>>;

/// One patch's (finger, probability) pairs.
type PatchProbabilities = Vec<(String, f32)>;

fn read_split(split: &Path) -> anyhow::Result<Split> {
    serde_json::from_slice(
        &std::fs::read(split).with_context(|| format!("reading {}", split.display()))?,
    )
    .with_context(|| format!("{} is not a trainer split", split.display()))
}

/// Cuts the patches of the scan at `path` (at `dpi`) into `dir` as `<scan>_m<k>.png`; their
/// number, or None (said on stderr) where its minutiae cannot be extracted.
fn cut_scan(path: &Path, dpi: u32, dir: &Path) -> anyhow::Result<Option<usize>> {
    let image = fingerprint_common::read_scan(path, &fingerprint_common::ScanLimits::default())
        .with_context(|| format!("reading {}", path.display()))?;
    let template = match minutiae::extract(&image, dpi) {
        Ok(template) => template,
        Err(e) => {
            eprintln!("{}: {e}; skipped", path.display());
            return Ok(None);
        }
    };
    let native = minutiae::to_native_resolution(&image, dpi);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{}: no file name", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let patches = minutia_patches(&native, &template, &PatchSpec::default());
    for (k, patch) in patches.iter().enumerate() {
        let file = dir.join(format!("{stem}_m{k:03}.png"));
        patch
            .save(&file)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(Some(patches.len()))
}

fn cut(split: &Path, out: &Path, dpis: &[(String, u32)]) -> anyhow::Result<()> {
    let split = read_split(split)?;
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
            let dir = out.join(part).join(name.replace('/', "-"));
            if let Some(n) = cut_scan(Path::new(&scan.path), dpi, &dir)? {
                cut += 1;
                patches += n;
            }
        }
        eprintln!(
            "{part}: {patches} patches of {cut} of {} scans",
            scans.len()
        );
    }
    Ok(())
}

/// Patches of the scans in `dir` (FVC names, `<finger>_<impression>.<ext>`, at `dpi`) as
/// `out/<finger>/<scan>_m<k>.png`.
fn cut_dir(dir: &Path, out: &Path, dpi: u32) -> anyhow::Result<()> {
    let (mut scans, mut cut, mut patches) = (0, 0, 0);
    for (finger, paths) in scans_by_finger(dir)? {
        for path in paths {
            scans += 1;
            if let Some(n) = cut_scan(&path, dpi, &out.join(&finger))? {
                cut += 1;
                patches += n;
            }
        }
    }
    eprintln!(
        "{}: {patches} patches of {cut} of {scans} scans",
        dir.display()
    );
    Ok(())
}

#[derive(Deserialize)]
struct PatchTemplate {
    scan: String,
    embedding: Vec<f32>,
}

/// `trainer predict --embeddings` output grouped by scan: (finger, scan) -> patch templates.
fn read_templates(path: &Path) -> anyhow::Result<ScanTemplates> {
    let templates: Vec<PatchTemplate> = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| {
        format!(
            "{} is not `trainer predict --embeddings` output",
            path.display()
        )
    })?;
    let mut scans = ScanTemplates::new();
    for t in templates {
        let (finger, stem) = finger_and_scan(&t.scan)?;
        scans.entry((finger, stem)).or_default().push(t.embedding);
    }
    Ok(scans)
}

/// Finger folder and scan stem of a patch `<finger>/<scan>_m<k>.png`.
fn finger_and_scan(patch: &str) -> anyhow::Result<(String, String)> {
    let path = Path::new(patch);
    let finger = path
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str())
        .with_context(|| format!("{patch}: no finger folder"))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit_once("_m"))
        .with_context(|| format!("{patch}: not a patch name <scan>_m<k>"))?
        .0;
    Ok((finger.to_string(), stem.to_string()))
}

/// The scans of `dir` by finger (FVC names, `<finger>_<impression>.<ext>`; other names are
/// said on stderr and skipped), each finger's in name order.
fn scans_by_finger(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut fingers: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if !is_scan_file_name(&path) {
            continue;
        }
        match path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit_once('_'))
        {
            Some((finger, _)) => fingers.entry(finger.into()).or_default().push(path.clone()),
            None => eprintln!("{}: not <finger>_<impression>; skipped", path.display()),
        }
    }
    fingers.values_mut().for_each(|scans| scans.sort());
    Ok(fingers)
}

/// A scan's file stem, as its patches are named.
fn stem(scan: &Path) -> &str {
    scan.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
}

/// The patch templates of one scan (none if it gave no patches).
fn patches_of<'a>(templates: &'a ScanTemplates, finger: &str, scan: &Path) -> &'a [Vec<f32>] {
    templates
        .get(&(finger.to_string(), stem(scan).to_string()))
        .map_or(&[][..], Vec::as_slice)
}

/// `fingers` with their scores, best first.
fn ranked<'a>(fingers: &[&'a str], scores: Vec<f32>) -> Vec<(&'a str, f32)> {
    let mut ranked: Vec<(&str, f32)> = fingers.iter().copied().zip(scores).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

/// Open set on patch templates: the first `enrol` scans (by name) of each finger in
/// `enrolled_dir` form its gallery, its other scans are genuine probes, every scan of
/// `strangers_dir` an impostor probe. Scores by [`patch_set_similarity`]; a probe that gave no
/// patches (too few minutiae) identifies nobody: a miss, or a stranger turned away.
fn openset(
    enrolled_dir: &Path,
    enrolled: &Path,
    strangers_dir: &Path,
    strangers: &Path,
    enrol: usize,
) -> anyhow::Result<()> {
    let enrolled = read_templates(enrolled)?;
    let strangers = read_templates(strangers)?;
    let mut gallery: BTreeMap<&str, Vec<&[f32]>> = BTreeMap::new();
    let mut probes: Vec<(Option<String>, &[Vec<f32>])> = Vec::new();
    let enrolled_fingers = scans_by_finger(enrolled_dir)?;
    for (finger, scans) in &enrolled_fingers {
        let (enrolled_scans, probe_scans) = scans.split_at(enrol.min(scans.len()));
        let templates = gallery.entry(finger).or_default();
        for scan in enrolled_scans {
            templates.extend(
                patches_of(&enrolled, finger, scan)
                    .iter()
                    .map(Vec::as_slice),
            );
        }
        for scan in probe_scans {
            probes.push((Some(finger.clone()), patches_of(&enrolled, finger, scan)));
        }
    }
    for (finger, scans) in scans_by_finger(strangers_dir)? {
        for scan in scans {
            probes.push((None, patches_of(&strangers, &finger, &scan)));
        }
    }
    let new_scores = || {
        fingerprint_common::openset::Scores::new(
            gallery.len(),
            gallery.values().map(Vec::len).sum(),
        )
    };
    let (mut raw, mut normalised) = (new_scores(), new_scores());
    let fingers: Vec<&str> = gallery.keys().copied().collect();
    for (own, patches) in &probes {
        let similarities: Vec<f32> = if patches.is_empty() {
            Vec::new()
        } else {
            gallery
                .values()
                .map(|enrolled| patch_set_similarity(patches, enrolled))
                .collect()
        };
        // A probe without patches ranks no finger (it identifies nobody).
        let fingers = &fingers[..similarities.len()];
        normalised.add(
            own.as_deref(),
            &ranked(fingers, test_normalised(&similarities)),
        );
        raw.add(own.as_deref(), &ranked(fingers, similarities));
    }
    let report = |scores: fingerprint_common::openset::Scores| -> anyhow::Result<_> {
        let mut report = serde_json::to_value(scores.report(None, 0.001))?;
        if let Some(r) = report.as_object_mut() {
            r.remove("det");
        }
        Ok(report)
    };
    let mut out = report(raw)?;
    if let Some(r) = out.as_object_mut() {
        r.insert(
            "probes_without_patches".into(),
            probes.iter().filter(|p| p.1.is_empty()).count().into(),
        );
        r.insert("test_normalised".into(), report(normalised)?);
    }
    println!("{out}");
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
        let (finger, stem) = finger_and_scan(&p.scan)?;
        if p.top.first().is_some_and(|c| c.identity == finger) {
            patch_hits += 1;
        }
        scans.entry((finger, stem)).or_default().push(
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
        [mode, dir, out, dpi] if mode == "cut-dir" => cut_dir(
            Path::new(dir),
            Path::new(out),
            dpi.parse().with_context(|| format!("{dpi}: dpi"))?,
        ),
        [mode, enrolled_dir, enrolled, strangers_dir, strangers, enrol] if mode == "openset" => {
            openset(
                Path::new(enrolled_dir),
                Path::new(enrolled),
                Path::new(strangers_dir),
                Path::new(strangers),
                enrol.parse().with_context(|| format!("{enrol}: scans enrolled"))?,
            )
        }
        _ => bail!(
            "usage: minutiae_patches cut SPLIT_JSON OUT [PATH_PART=DPI ...] | score PREDICTIONS_JSON SPLIT_JSON | cut-dir DIR OUT DPI | openset ENROLLED_DIR ENROLLED_TEMPLATES_JSON STRANGERS_DIR STRANGERS_TEMPLATES_JSON SCANS_ENROLLED"
        ),
    }
}
