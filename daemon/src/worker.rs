//! Inference off the async runtime: one thread takes scans from the bounded queue, batching
//! those that wait, and hands decisions on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use fingerprint_common::{DaemonConfig, Decision};
use tokio::sync::mpsc;

use crate::decide::{decide_batch, Matcher, Settings};
use crate::engine::{Engine, EngineSlot};
use crate::gallery::{GallerySlot, LiveGallery};
use crate::job::{Job, Origin, Outcome, ScanRequest};
use crate::lockout::{self, Applied, Lockout, SavedLockout};
use crate::policy::{self, MatchPolicy, PolicyError};

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
            let mut policies = PolicyCache::default();
            let lockout_path = lockout::path(&config.config);
            let mut lockout = Lockout::from_config(&config.config.matcher);
            if config.config.matcher.lockout_after > 0 {
                take_up_kept_lockout(&mut lockout, &lockout_path);
            }
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
                let policy = policies.get(&config.config, &engine, &gallery);
                announce(&mut announced, policy);
                let matcher = match (&gallery, policy) {
                    (Some(g), Some(Ok(policy))) => Matcher::Gallery {
                        index: &g.index,
                        policy,
                    },
                    (_, Some(Err(e))) => Matcher::Refuse(e.to_string()),
                    _ => Matcher::Classifier,
                };
                let mut decisions =
                    decide_batch(engine.as_deref(), &matcher, &scans, &config.settings);
                let before = lockout.clone();
                for decision in &mut decisions {
                    log_lockout(lockout.apply(decision, Instant::now()), decision);
                }
                tracing::debug!(batch = scans.len(), "batch decided");
                stats.scans.fetch_add(scans.len() as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                let published = decisions
                    .into_iter()
                    .zip(origins)
                    .all(|(decision, origin)| {
                        outcomes.blocking_send(Outcome { decision, origin }).is_ok()
                    });
                // Kept once the decisions are on their way: its fsync need not delay them.
                if lockout != before {
                    keep_lockout(&lockout, &lockout_path);
                }
                if !published {
                    return;
                }
            }
        })
}

/// Takes up the lockout kept by the service before a restart, and says so when one is in
/// force or a run of denials goes on.
fn take_up_kept_lockout(lockout: &mut Lockout, path: &std::path::Path) {
    match SavedLockout::load(path) {
        Ok(Some(saved)) => {
            let now = Instant::now();
            lockout.restore(saved, now, SystemTime::now());
            if let Some(left) = lockout.locked_for(now) {
                tracing::warn!(
                    "the door is still locked out after repeated denials before the restart: every scan is denied for {} s more ({})",
                    left.as_secs(),
                    path.display()
                );
            } else if saved.denials > 0 {
                tracing::info!(
                    "{} denials in a row before the restart still count towards a lockout ({})",
                    saved.denials,
                    path.display()
                );
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "the lockout's state in {} could not be read ({e}): starting with none",
            path.display()
        ),
    }
}

/// Keeps the lockout's state for a restart; the door goes on deciding if it cannot.
fn keep_lockout(lockout: &Lockout, path: &std::path::Path) {
    if let Err(e) = lockout.saved(Instant::now(), SystemTime::now()).save(path) {
        tracing::warn!(
            "the lockout's state could not be kept in {} ({e}): a restart would forget it",
            path.display()
        );
    }
}

/// Says when a lockout starts and which grant it withholds.
fn log_lockout(applied: Applied, decision: &Decision) {
    match applied {
        Applied::Started(duration) => tracing::warn!(
            scan = %decision.scan_id,
            "too many denials in a row (matcher.lockout_after): every scan is denied for {} s (matcher.lockout_s, doubling while lockouts follow each other, up to matcher.lockout_max_s)",
            duration.as_secs()
        ),
        Applied::Withheld(identity) => tracing::warn!(
            scan = %decision.scan_id,
            identity = %identity,
            "grant withheld: the door is locked out after repeated denials"
        ),
        Applied::Denied | Applied::Nothing => {}
    }
}

/// The match policy of the engine and gallery in use, resolved again only when either is
/// replaced (a model reload, an enrolment, a calibration): resolving walks every template of
/// the gallery, which at 10,000 identities is not work to repeat for every batch.
#[derive(Default)]
struct PolicyCache {
    /// What the policy was resolved for. Weak: a replaced model or gallery is freed as soon
    /// as its last batch is done, yet its address is not reused while this is held.
    resolved_for: Option<(Option<Weak<Engine>>, Weak<LiveGallery>)>,
    policy: Option<Result<MatchPolicy, PolicyError>>,
}

impl PolicyCache {
    /// The policy for `engine` and `gallery` (None: nothing enrolled).
    fn get(
        &mut self,
        config: &DaemonConfig,
        engine: &Option<Arc<Engine>>,
        gallery: &Option<Arc<LiveGallery>>,
    ) -> Option<&Result<MatchPolicy, PolicyError>> {
        let Some(live) = gallery else {
            self.resolved_for = None;
            self.policy = None;
            return None;
        };
        let same = self.resolved_for.as_ref().is_some_and(|(e, g)| {
            Weak::ptr_eq(g, &Arc::downgrade(live))
                && match (e, engine) {
                    (Some(a), Some(b)) => Weak::ptr_eq(a, &Arc::downgrade(b)),
                    (None, None) => true,
                    _ => false,
                }
        });
        if !same {
            self.policy = Some(policy::resolve(
                config,
                engine.as_deref(),
                &live.gallery,
                live.door.as_ref(),
            ));
            self.resolved_for = Some((engine.as_ref().map(Arc::downgrade), Arc::downgrade(live)));
        }
        self.policy.as_ref()
    }
}

/// Logs the matcher and threshold in force whenever they change (an enrolment, a
/// calibration, a model reload).
fn announce(announced: &mut Option<String>, policy: Option<&Result<MatchPolicy, PolicyError>>) {
    let line = match policy {
        None => "no identities enrolled: deciding with the model's classes".to_string(),
        Some(Ok(p)) => format!(
            "matcher {}, threshold {:.3} from {}{}{}",
            p.rule.mode,
            p.threshold,
            p.source,
            if p.claim_threshold == p.threshold {
                String::new()
            } else {
                format!(
                    "; claims (1:1) at {:.3}, the shipped threshold for one identity",
                    p.claim_threshold
                )
            },
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use fingerprint_common::{ScanLimits, ScanSource, SourceKind, Verdict, DEFAULT_CONFIG};

    use super::*;
    use crate::job::PayloadError;

    fn job(id: &str, payload: Result<Vec<u8>, PayloadError>) -> Job {
        Job {
            scan: ScanRequest {
                scan_id: id.into(),
                source: ScanSource {
                    kind: SourceKind::Directory,
                    name: id.into(),
                    sensor: None,
                },
                payload,
                claim: None,
                received: Instant::now(),
            },
            origin: Origin::File(format!("/sensor/{id}").into()),
        }
    }

    /// A replaced gallery (an enrolment, a door calibration) gets its own policy, and losing
    /// every identity leaves none: the cache never serves the policy of a gallery gone.
    #[test]
    fn the_policy_follows_the_gallery_in_use() -> anyhow::Result<()> {
        use fingerprint_common::matcher::{Index, MatcherMode, SHIPPED_MINUTIAE_THRESHOLD};

        use crate::policy::test_support::{gallery, minutiae_door};

        let mut config = DaemonConfig::parse(DEFAULT_CONFIG, Path::new("default"))?;
        config.matcher.mode = MatcherMode::Minutiae;
        config.model.path = None;
        let enrolled = gallery(false, true, 2);
        let live = |door| {
            Some(Arc::new(LiveGallery {
                index: Index::new(&enrolled),
                gallery: enrolled.clone(),
                door,
            }))
        };
        let (shipped, calibrated) = (live(None), live(Some(minutiae_door(61.0))));
        let mut cache = PolicyCache::default();
        let mut threshold = |g: &Option<Arc<LiveGallery>>| {
            cache
                .get(&config, &None, g)
                .map(|p| p.as_ref().map(|p| p.threshold).map_err(|e| e.to_string()))
        };
        assert_eq!(threshold(&shipped), Some(Ok(SHIPPED_MINUTIAE_THRESHOLD)));
        assert_eq!(threshold(&shipped), Some(Ok(SHIPPED_MINUTIAE_THRESHOLD)));
        assert_eq!(threshold(&calibrated), Some(Ok(61.0)));
        assert_eq!(threshold(&shipped), Some(Ok(SHIPPED_MINUTIAE_THRESHOLD)));
        assert_eq!(threshold(&None), None);
        Ok(())
    }

    /// Each job gives one outcome, in order, with its own origin; a scan that cannot be
    /// decided gets an error decision that says why, and does not stop the ones after it.
    #[test]
    fn every_job_gives_one_outcome_in_order_with_its_origin() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = DaemonConfig::parse(DEFAULT_CONFIG, Path::new("default"))?;
        let gallery = GallerySlot::open(&dir.path().join("gallery"), &dir.path().join("door"))?;
        let (jobs_tx, jobs) = mpsc::channel(8);
        let (outcomes_tx, mut outcomes) = mpsc::channel(8);
        let stats = Stats::default();
        let worker = spawn(
            EngineSlot::new(None),
            gallery,
            jobs,
            outcomes_tx,
            WorkerConfig {
                config: Arc::new(config),
                max_batch: 2,
                settings: Settings {
                    limits: ScanLimits::default(),
                    top_k: 3,
                    sensor_dpi: None,
                },
            },
            stats.clone(),
        )?;
        let too_large = PayloadError::TooLarge { size: 9, limit: 8 };
        jobs_tx
            .blocking_send(job("big", Err(too_large.clone())))
            .map_err(|_| anyhow::anyhow!("the worker stopped taking jobs"))?;
        jobs_tx
            .blocking_send(job("garbage", Ok(b"not an image".to_vec())))
            .map_err(|_| anyhow::anyhow!("the worker stopped taking jobs"))?;
        jobs_tx
            .blocking_send(job("png", Ok(b"\x89PNG\r\n\x1a\n".to_vec())))
            .map_err(|_| anyhow::anyhow!("the worker stopped taking jobs"))?;
        drop(jobs_tx);
        let mut seen = Vec::new();
        while let Some(Outcome { decision, origin }) = outcomes.blocking_recv() {
            let Origin::File(path) = origin else {
                anyhow::bail!("origin changed for {}", decision.scan_id);
            };
            assert_eq!(path, Path::new("/sensor").join(&decision.scan_id));
            assert_eq!(decision.decision, Verdict::Error, "{decision:?}");
            seen.push((decision.scan_id, decision.error.unwrap_or_default()));
        }
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("worker panicked"))?;
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["big", "garbage", "png"]);
        assert_eq!(seen[0].1, too_large.to_string());
        assert!(!seen[1].1.is_empty() && !seen[2].1.is_empty(), "{seen:?}");
        assert_eq!(stats.get().0, 3);
        Ok(())
    }
}
