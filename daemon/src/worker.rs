//! Inference off the async runtime: one thread takes scans from the bounded queue, batching
//! those that wait, and hands decisions on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fingerprint_common::{Decision, ScanLimits};
use tokio::sync::mpsc;

use crate::engine::{decide_batch, EngineSlot, Matcher, ScanRequest};
use crate::enroll::GallerySlot;

/// Where a scan came from, to settle it once its decision is out.
pub enum Origin {
    File(PathBuf),
    /// Acknowledged to the broker once the decision is stored.
    Mqtt(rumqttc::Publish),
}

pub struct Job {
    pub scan: ScanRequest,
    pub origin: Origin,
}

pub struct Outcome {
    pub decision: Decision,
    pub origin: Origin,
}

/// Counts kept by the worker, for logs, tests and benchmarks.
#[derive(Clone, Default)]
pub struct Stats {
    scans: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl Stats {
    /// Scans decided and batches run so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.scans.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }
}

pub struct WorkerConfig {
    pub limits: ScanLimits,
    pub max_batch: usize,
    pub top_k: usize,
}

/// Runs until the job queue is closed and drained, or nobody takes outcomes any more.
pub fn spawn(
    engine: EngineSlot,
    gallery: GallerySlot,
    mut jobs: mpsc::Receiver<Job>,
    outcomes: mpsc::Sender<Outcome>,
    config: WorkerConfig,
    stats: Stats,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            while let Some(first) = jobs.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < config.max_batch {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let engine = engine.current();
                let (mut scans, origins): (Vec<ScanRequest>, Vec<Origin>) =
                    batch.into_iter().map(|j| (j.scan, j.origin)).unzip();
                let gallery = gallery.current();
                let matcher = match &gallery {
                    None => Matcher::Classifier,
                    Some(g) => {
                        if g.model_digest != engine.model.digest {
                            // Templates of another model mean nothing: refuse every scan.
                            let reason = format!(
                                "the gallery was enrolled with model {}, not the loaded {}: enrol again",
                                g.model_digest, engine.model.digest
                            );
                            for scan in &mut scans {
                                scan.payload = Err(reason.clone());
                            }
                        }
                        Matcher::Gallery(g)
                    }
                };
                let decisions =
                    decide_batch(&engine, &matcher, &scans, &config.limits, config.top_k);
                tracing::debug!(batch = scans.len(), "batch decided");
                stats.scans.fetch_add(scans.len() as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                for (decision, origin) in decisions.into_iter().zip(origins) {
                    if outcomes
                        .blocking_send(Outcome { decision, origin })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        })
}
