//! Inference off the async runtime: one thread takes scans from the bounded queue, batching
//! those that wait, and hands decisions on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fingerprint_common::DaemonConfig;
use tokio::sync::mpsc;

use crate::decide::{decide_batch, Matcher, Settings};
use crate::engine::EngineSlot;
use crate::gallery::GallerySlot;
use crate::job::{Job, Origin, Outcome, ScanRequest};
use crate::policy;

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
    pub config: Arc<DaemonConfig>,
    pub max_batch: usize,
    pub settings: Settings,
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
            let mut announced = None;
            while let Some(first) = jobs.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < config.max_batch {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let engine = engine.current();
                let (scans, origins): (Vec<ScanRequest>, Vec<Origin>) =
                    batch.into_iter().map(|j| (j.scan, j.origin)).unzip();
                let gallery = gallery.current();
                let policy = gallery.as_ref().map(|g| {
                    policy::resolve(
                        &config.config,
                        engine.as_deref(),
                        &g.gallery,
                        g.door.as_ref(),
                    )
                });
                announce(&mut announced, policy.as_ref());
                let matcher = match (&gallery, &policy) {
                    (Some(g), Some(Ok(policy))) => Matcher::Gallery {
                        index: &g.index,
                        policy,
                    },
                    (_, Some(Err(e))) => Matcher::Refuse(e.to_string()),
                    _ => Matcher::Classifier,
                };
                let decisions = decide_batch(engine.as_deref(), &matcher, &scans, &config.settings);
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

/// Logs the matcher and threshold in force whenever they change (an enrolment, a
/// calibration, a model reload).
fn announce(
    announced: &mut Option<String>,
    policy: Option<&Result<crate::policy::MatchPolicy, crate::policy::PolicyError>>,
) {
    let line = match policy {
        None => "no identities enrolled: deciding with the model's classes".to_string(),
        Some(Ok(p)) => format!(
            "matcher {}, threshold {:.3} from {}{}",
            p.rule.mode,
            p.threshold,
            p.source,
            p.downgrade
                .as_ref()
                .map(|d| format!("; {d}"))
                .unwrap_or_default()
        ),
        Some(Err(e)) => format!("no gallery decision possible, every scan is refused: {e}"),
    };
    if announced.as_ref() != Some(&line) {
        match policy {
            Some(Err(_)) => tracing::error!("{line}"),
            _ => tracing::info!("{line}"),
        }
        *announced = Some(line);
    }
}
