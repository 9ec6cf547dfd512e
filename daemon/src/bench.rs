//! `fingerprintd bench`: how fast and how large the loaded model is on this machine, as the
//! service runs it (the engine's preprocessed-input path, softmax included).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
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
    /// Logits of the first input (the formula input, `fingerprint_models::formula`), for
    /// comparing runtimes.
    pub logits: Vec<f32>,
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
/// (at least 2) calls of `batch` inputs, after one warm-up each.
pub fn bench(model: &Path, backend: Backend, batch: usize, runs: usize) -> Result<BenchReport> {
    let started = Instant::now();
    let engine = Engine::load_with(model, "cpu", None, None, backend)
        .with_context(|| format!("loading {}", model.display()))?;
    let load_seconds = started.elapsed().as_secs_f64();
    let size = engine.preprocessing().size as usize;
    let per_input = 3 * size * size;
    let values: Vec<f32> = formula::uniform("input", batch.max(1) * per_input)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let inputs: Vec<Vec<f32>> = values.chunks(per_input).map(<[f32]>::to_vec).collect();

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

    Ok(BenchReport {
        model: model.display().to_string(),
        backend: engine.backend_name().into(),
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
    })
}
