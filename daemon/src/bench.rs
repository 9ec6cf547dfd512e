//! `fingerprintd bench`: how fast and how large the loaded model is on this machine, as the
//! service runs it (the engine's preprocessed-input path, softmax included), and what the
//! minutiae and fused matchers add: extraction per scan, and 1:1 against 1:N matching over a
//! generated gallery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::EngineError;
use crate::error::{At, IoError};
use fingerprint_common::gallery::{normalize, Impression};
use fingerprint_common::matcher::{Index, MatcherMode, Probe, Rule, SHIPPED_FUSION};
use fingerprint_common::minutiae::{self, Minutia, Template};
use fingerprint_common::preprocess::ENROLMENT_TURNS_DEGREES;
use fingerprint_common::{Gallery, ScanLimits};
use fingerprint_models::export::Backend;
use fingerprint_models::formula;
use serde::Serialize;

use crate::Engine;

/// What `fingerprintd bench` measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    pub quantization: String,
    pub file_bytes: u64,
    pub load_seconds: f64,
    /// Median and 90th percentile of batch-1 calls, milliseconds.
    pub latency_ms_median: f64,
    pub latency_ms_p90: f64,
    pub batch: usize,
    /// Images per second at `batch`.
    pub images_per_second: f64,
    /// Resident and peak resident memory of this process after the runs, bytes.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Logits of the first input (a formula grey scan, `fingerprint_models::formula::grey_scans`), for
    /// comparing runtimes.
    pub logits: Vec<f32>,
    /// What the minutiae or fused matcher adds, when asked for.
    pub matching: Option<MatchReport>,
}

/// What to time besides the network.
pub struct MatchBench {
    pub mode: MatcherMode,
    /// Real scans: their minutiae are extracted, and the gallery is made of them.
    pub scans: PathBuf,
    /// Identities in the generated gallery.
    pub gallery: usize,
}

/// Matching times, in milliseconds (medians over the probes).
#[derive(Debug, Serialize)]
pub struct MatchReport {
    pub mode: MatcherMode,
    pub scans: usize,
    pub minutiae_mean: f64,
    pub extraction_ms_median: f64,
    pub identities: usize,
    pub one_to_one_ms_median: f64,
    pub one_to_n_ms_median: f64,
}

/// A small deterministic generator (the gallery is the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `t` turned by up to 20 degrees and moved by up to 30 px, a tenth of its minutiae dropped:
/// another impression, as far as the matcher's work goes.
fn another_impression(t: &Template, rng: &mut Lcg) -> Template {
    let angle = (rng.next() - 0.5) * 40f64.to_radians();
    let (dx, dy) = ((rng.next() - 0.5) * 60.0, (rng.next() - 0.5) * 60.0);
    let (c, s) = (angle.cos(), angle.sin());
    let minutiae = t
        .minutiae
        .iter()
        .filter(|_| rng.next() > 0.1)
        .map(|m| {
            let (x, y) = (f64::from(m.x), f64::from(m.y));
            Minutia {
                x: (c * x - s * y + dx).round() as i32,
                y: (s * x + c * y + dy).round() as i32,
                theta: (m.theta + angle.to_degrees().round() as i32).rem_euclid(360),
                quality: m.quality,
            }
        })
        .collect();
    Template { minutiae }
}

/// Times extraction on every scan in the folder, then a probe matched against one identity
/// (1:1, a claim) and against a generated gallery of `identities` (1:N), by `mode`.
/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("loading {}: {error}", path.display())]
    Model {
        path: PathBuf,
        error: Box<EngineError>,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: fewer than 2 scans with minutiae", .0.display())]
    TooFewScans(PathBuf),
    #[error("inference: {0}")]
    Inference(#[from] candle_core::Error),
}

fn bench_matching(engine: &Engine, m: &MatchBench, runs: usize) -> Result<MatchReport, BenchError> {
    let limits = ScanLimits::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&m.scans)
        .at("reading", &m.scans)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut templates = Vec::new();
    let mut extraction = Vec::new();
    for path in &files {
        let Ok(image) = fingerprint_common::read_scan(path, &limits) else {
            continue;
        };
        let t = Instant::now();
        let extracted = minutiae::extract(&image, 500);
        extraction.push(t.elapsed().as_secs_f64() * 1e3);
        if let Ok(template) = extracted {
            templates.push(template);
        }
    }
    if templates.len() < 2 {
        return Err(BenchError::TooFewScans(m.scans.clone()));
    }
    extraction.sort_by(f64::total_cmp);
    let size = engine.preprocessing().size as usize;
    let dim = engine
        .embeddings(&[vec![0.0; 3 * size * size]])?
        .first()
        .map_or(0, Vec::len);
    let mut rng = Lcg(7);
    let random_unit =
        |rng: &mut Lcg| normalize((0..dim).map(|_| (rng.next() - 0.5) as f32).collect());
    let mut identities = BTreeMap::new();
    for i in 0..m.gallery.max(1) {
        let base = &templates[1 + i % (templates.len() - 1)];
        let impressions = (0..3)
            .map(|_| Impression {
                embedding: Some(random_unit(&mut rng)),
                minutiae: Some(another_impression(base, &mut rng)),
                // As many turned templates as an enrolment keeps: 1:N compares them all.
                turned: ENROLMENT_TURNS_DEGREES
                    .iter()
                    .map(|_| random_unit(&mut rng))
                    .collect(),
            })
            .collect();
        identities.insert(format!("person-{i:05}"), impressions);
    }
    let gallery = Gallery {
        model_digest: Some(engine.model.digest.clone()),
        identities,
        version: fingerprint_common::gallery::GALLERY_VERSION,
    };
    let index = Index::new(&gallery);
    let defaults = fingerprint_common::config::MatcherConfig::default();
    let rule = Rule {
        mode: m.mode,
        fusion: SHIPPED_FUSION,
        shortlist: defaults.shortlist,
        exhaustive_below: defaults.exhaustive_below,
        enough: None,
        turned_templates: true,
    };
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for r in 0..runs.max(3) {
        // A genuine probe of identity `i`: another impression of its print, and a template
        // near its own (as a network that knows the finger gives), so that the 1:1 claim and
        // the 1:N shortlist both meet the genuine comparisons, the slow ones.
        let i = r % m.gallery.max(1);
        let claimed = format!("person-{i:05}");
        let near = gallery
            .identities
            .get(&claimed)
            .and_then(|impressions| impressions.first())
            .and_then(|first| first.embedding.as_ref())
            .map(|e| {
                let noise = random_unit(&mut rng);
                normalize(e.iter().zip(&noise).map(|(a, b)| a + 0.3 * b).collect())
            });
        let probe = Probe {
            embedding: near,
            minutiae: Some(
                another_impression(&templates[1 + i % (templates.len() - 1)], &mut rng).prepared(),
            ),
        };
        let t = Instant::now();
        std::hint::black_box(index.rank(&probe, Some(&claimed), &rule));
        one.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(index.rank(&probe, None, &rule));
        many.push(t.elapsed().as_secs_f64() * 1e3);
    }
    one.sort_by(f64::total_cmp);
    many.sort_by(f64::total_cmp);
    Ok(MatchReport {
        mode: m.mode,
        scans: extraction.len(),
        minutiae_mean: templates.iter().map(|t| t.len() as f64).sum::<f64>()
            / templates.len() as f64,
        extraction_ms_median: percentile(&extraction, 0.5),
        identities: index.len(),
        one_to_one_ms_median: percentile(&one, 0.5),
        one_to_n_ms_median: percentile(&many, 0.5),
    })
}

/// A `/proc/self/status` field in bytes (Linux; 0 elsewhere).
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Loads `model` on the CPU with `backend`, then times `runs` batch-1 calls and `runs / 4`
/// (at least 2) calls of `batch` inputs, after one warm-up each; and the matcher, if asked.
pub fn bench(
    model: &Path,
    backend: Backend,
    batch: usize,
    runs: usize,
    matching: Option<&MatchBench>,
) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let engine =
        Engine::load_with(model, "cpu", None, backend).map_err(|error| BenchError::Model {
            path: model.to_path_buf(),
            error: Box::new(error),
        })?;
    let load_seconds = started.elapsed().as_secs_f64();
    let size = engine.preprocessing().size as usize;
    let per_input = 3 * size * size;
    // The harness holds the inputs once (resident memory is the service's, not ours).
    // Grey scans normalised as the service's preprocessing does (the fast path's stem reads
    // such inputs' grey values; `scripts/bench_runtimes.py` makes the same values).
    let inputs: Vec<Vec<f32>> = formula::grey_scans(batch.max(1), engine.preprocessing())
        .chunks(per_input)
        .map(<[f32]>::to_vec)
        .collect();

    let first = &inputs[..1];
    let logits = engine.logits(first)?.into_iter().next().unwrap_or_default();
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        engine.probabilities(first)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);

    engine.probabilities(&inputs)?;
    let batch_runs = (runs / 4).max(2);
    let t = Instant::now();
    for _ in 0..batch_runs {
        engine.probabilities(&inputs)?;
    }
    let images_per_second = (batch_runs * inputs.len()) as f64 / t.elapsed().as_secs_f64();
    let matching = matching
        .map(|m| bench_matching(&engine, m, runs))
        .transpose()?;

    Ok(BenchReport {
        model: model.display().to_string(),
        backend: engine.backend_name(),
        quantization: engine.manifest.quantization.to_string(),
        file_bytes: engine.file_size,
        load_seconds,
        latency_ms_median: percentile(&times, 0.5),
        latency_ms_p90: percentile(&times, 0.9),
        batch: inputs.len(),
        images_per_second,
        rss_bytes: status_bytes("VmRSS:"),
        peak_rss_bytes: status_bytes("VmHWM:"),
        logits,
        matching,
    })
}
