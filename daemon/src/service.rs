//! The running service: model, inputs, inference worker, outputs, and the order in which
//! they start and stop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fingerprint_common::{DaemonConfig, Decision, ScanLimits, Verdict};
use tokio::sync::{mpsc, watch, Notify};

use crate::decide::Settings;
use crate::decision_log::DecisionLog;
use crate::engine::EngineError;
use crate::engine::{Engine, EngineSlot};
use crate::enroll::Admin;
use crate::error::{At, IoError};
use crate::gallery::GallerySlot;
use crate::gallery::LiveGalleryError;
use crate::job::{Origin, Outcome, Settle};
use crate::lock::lock;
use crate::mqtt::{self, Topics};
use crate::outbox::OutboxError;
use crate::outbox::{Entry, Outbox};
use crate::policy::DoorCalibration;
use crate::policy::PolicyError;
use crate::sensor::SensorError;
use crate::sensor::{self, SensorWatch};
use crate::settle::Settler;
use crate::worker::{self, Stats, WorkerConfig};

/// How long a stopping service keeps trying to publish what is left in the outbox.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A decision that could not be stored (a full disk) is tried again after this, doubling up
/// to [`STORE_RETRY_MAX`]; later decisions wait behind it, and the inputs behind them.
const STORE_RETRY_FIRST: Duration = Duration::from_secs(1);
const STORE_RETRY_MAX: Duration = Duration::from_secs(8);

/// Why the service could not start, reload or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("loading model {}: {error}", path.display())]
    Model {
        path: PathBuf,
        error: Box<EngineError>,
    },
    #[error(transparent)]
    Gallery(#[from] LiveGalleryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttSetupError),
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error("starting the inference thread: {0}")]
    Thread(std::io::Error),
    #[error("{0} panicked")]
    Panicked(&'static str),
    #[error("the MQTT connection did not close within {0:?}")]
    MqttStuck(Duration),
}

pub struct Service {
    config: Arc<DaemonConfig>,
    engine: EngineSlot,
    shutdown: watch::Sender<bool>,
    worker: std::thread::JoinHandle<()>,
    router: tokio::task::JoinHandle<()>,
    mqtt: Option<tokio::task::JoinHandle<()>>,
    sensor: Option<SensorWatch>,
    stats: Stats,
    gallery_watch: tokio::task::JoinHandle<()>,
}

/// Loads the model named by the configuration (on a blocking thread); None when the
/// configuration names none (minutiae alone).
pub async fn load_engine(config: &DaemonConfig) -> Result<Option<Engine>, ServiceError> {
    let m = config.model.clone();
    let Some(path) = m.path.clone() else {
        return Ok(None);
    };
    let load = path.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::load(&load, &m.device, m.threshold))
        .await
        .map_err(|_| ServiceError::Panicked("model loading"))?
        .map_err(|error| ServiceError::Model {
            path,
            error: Box::new(error),
        })?;
    Ok(Some(engine))
}

/// What the router does with each decision.
enum Sink {
    Log(DecisionLog),
    Outbox {
        outbox: Arc<Mutex<Outbox>>,
        changed: Arc<Notify>,
        client: rumqttc::AsyncClient,
    },
}

impl Service {
    /// Loads the model, opens the outputs and then the inputs. When this returns the service
    /// is ready (time to tell systemd).
    pub async fn start(config: DaemonConfig) -> Result<Self, ServiceError> {
        // What survives a restart lives here (the gallery, the door's calibration, the
        // lockout, the MQTT outbox); made now, so a door without a broker keeps its lockout.
        std::fs::create_dir_all(&config.state_dir)
            .at("creating the state directory", &config.state_dir)?;
        let engine = load_engine(&config).await?;
        match &engine {
            Some(engine) => tracing::info!(
                model = %engine.path.display(),
                arch = %engine.manifest.arch,
                quantization = %engine.manifest.quantization,
                identities = engine.manifest.num_classes,
                threshold = engine.threshold,
                backend = %engine.backend_name(),
                "model loaded"
            ),
            None => tracing::info!("no model: the door matches minutiae alone"),
        }
        if let Some(problem) = fingerprint_models::fast::Kernels::override_problem() {
            tracing::warn!("{problem}");
        }
        let gallery = GallerySlot::open(&config.gallery_path(), &DoorCalibration::path(&config))?;
        match gallery.current() {
            Some(g) => {
                tracing::info!(
                    identities = g.gallery.identities.len(),
                    version = g.gallery.version,
                    "gallery loaded"
                );
                // The matcher and threshold in force, and where the threshold came from; a
                // gallery no decision can be made with stops the start.
                let policy =
                    crate::policy::resolve(&config, engine.as_ref(), &g.gallery, g.door.as_ref())?;
                if let Some(why) = &policy.downgrade {
                    tracing::warn!("{why}");
                }
                tracing::info!(
                    matcher = %policy.rule.mode,
                    threshold = policy.threshold,
                    "threshold in force from {}",
                    policy.source
                );
            }
            None if engine.is_none() => {
                tracing::warn!("no identities enrolled and no model: every scan is denied until someone is enrolled (fingerprintd enroll)")
            }
            None => tracing::info!("no identities enrolled: deciding with the model's classes"),
        }
        let engine = EngineSlot::new(engine);
        let config = Arc::new(config);
        let limits: ScanLimits = config.limits.into();
        let (jobs_tx, jobs_rx) = mpsc::channel(config.queue.capacity);
        let (outcomes_tx, outcomes_rx) = mpsc::channel(config.queue.capacity);
        let settler = config.sensor.as_ref().map(Settler::new).transpose()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let self_shutdown_rx = shutdown_rx.clone();
        let (drained_tx, drained_rx) = watch::channel(false);
        let outbox_dir = config.state_dir.join("outbox");

        let (sink, mqtt) = if let Some(mqtt_config) = &config.mqtt {
            let outbox = Outbox::open(&outbox_dir, config.output.outbox_capacity)?;
            if let Some(settler) = &settler {
                // Files whose decisions wait in the outbox are not judged again.
                for (_, entry) in outbox.iter() {
                    if let Settle::Processed(p) | Settle::Rejected(p, _) = &entry.settle {
                        settler.claim(p);
                    }
                }
            }
            if !outbox.is_empty() {
                tracing::info!(
                    "{} decisions from the last run wait to be published",
                    outbox.len()
                );
            }
            let outbox = Arc::new(Mutex::new(outbox));
            let changed = Arc::new(Notify::new());
            let options = mqtt::options(mqtt_config, &config.door_id)?;
            tracing::info!(
                host = %mqtt_config.host,
                port = mqtt_config.port,
                "MQTT: persistent session; {}",
                mqtt::broker_limit_advice(mqtt_config)
            );
            let connection = mqtt::start(
                options,
                mqtt_config,
                Topics::new(mqtt_config, &config.door_id),
                limits,
                mqtt::Shared {
                    outbox: outbox.clone(),
                    outbox_changed: changed.clone(),
                    settler: settler.clone(),
                    admin: mqtt_config.enrollment.then(|| Admin {
                        engine: engine.clone(),
                        config: config.clone(),
                    }),
                },
                mqtt_config.subscribe_scans.then(|| jobs_tx.clone()),
                shutdown_rx,
                drained_rx,
                SHUTDOWN_GRACE,
            );
            let sink = Sink::Outbox {
                outbox,
                changed,
                client: connection.client,
            };
            (sink, Some(connection.task))
        } else {
            let mut log = DecisionLog::open(&config.output.decisions)?;
            flush_old_outbox(&outbox_dir, &mut log, settler.as_ref())?;
            (Sink::Log(log), None)
        };

        let stats = Stats::default();
        let worker = worker::spawn(
            engine.clone(),
            gallery.clone(),
            jobs_rx,
            outcomes_tx,
            WorkerConfig {
                config: config.clone(),
                max_batch: config.queue.max_batch,
                settings: Settings {
                    limits,
                    top_k: config.model.top_k,
                    sensor_dpi: config.matcher.sensor_dpi,
                },
            },
            stats.clone(),
        )
        .map_err(ServiceError::Thread)?;
        let router = tokio::spawn(route(
            sink,
            settler.clone(),
            outcomes_rx,
            drained_tx,
            self_shutdown_rx,
        ));
        let sensor = match (&config.sensor, settler) {
            (Some(s), Some(settler)) => {
                Some(sensor::watch(&s.dir, limits, settler, jobs_tx.clone())?)
            }
            _ => None,
        };
        drop(jobs_tx);
        let gallery_watch = tokio::spawn(watch_gallery(gallery.clone()));
        Ok(Self {
            config,
            engine,
            shutdown,
            worker,
            router,
            mqtt,
            sensor,
            stats,
            gallery_watch,
        })
    }

    /// Loads the configured model file again and swaps it in; on error the current model
    /// stays and the error is returned.
    pub async fn reload(&self) -> Result<(), ServiceError> {
        if let Some(engine) = load_engine(&self.config).await? {
            tracing::info!(digest = %engine.model.digest, "model reloaded");
            self.engine.replace(engine);
        }
        Ok(())
    }

    /// The model in use (None: minutiae alone).
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.current()
    }

    /// Scans decided and batches run so far.
    pub fn stats(&self) -> (u64, u64) {
        self.stats.get()
    }

    /// False once the inference thread has died (the watchdog stops being fed).
    pub fn is_healthy(&self) -> bool {
        !self.worker.is_finished() && !self.router.is_finished()
    }

    /// Stops taking scans, decides those already queued, publishes their decisions (waiting
    /// a few seconds for the broker), announces "offline" and returns.
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        self.gallery_watch.abort();
        if let Some(sensor) = self.sensor {
            sensor.task.abort();
            let _ = sensor.task.await;
        }
        let _ = self.shutdown.send(true);
        let worker = self.worker;
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .map_err(|_| ServiceError::Panicked("joining the inference thread"))?
            .map_err(|_| ServiceError::Panicked("the inference thread"))?;
        self.router
            .await
            .map_err(|_| ServiceError::Panicked("the decision router"))?;
        if let Some(mqtt) = self.mqtt {
            tokio::time::timeout(SHUTDOWN_GRACE * 2, mqtt)
                .await
                .map_err(|_| ServiceError::MqttStuck(SHUTDOWN_GRACE * 2))?
                .map_err(|_| ServiceError::Panicked("the MQTT connection task"))?;
        }
        Ok(())
    }
}

/// Picks up enrolments and removals (by `fingerprintd enroll` / `remove`, or over MQTT) by
/// looking at the gallery file's modification time every second.
async fn watch_gallery(gallery: GallerySlot) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let slot = gallery.clone();
        match tokio::task::spawn_blocking(move || slot.refresh()).await {
            Ok(Ok(true)) => {
                let n = gallery.current().map_or(0, |g| g.gallery.identities.len());
                tracing::info!(identities = n, "gallery or door calibration reloaded");
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!("gallery not reloaded, the previous one stays: {e}"),
            Err(e) => tracing::error!("gallery reload failed: {e}"),
        }
    }
}

/// Decisions left in the outbox by a run with MQTT, when MQTT is now off: they go to the log.
fn flush_old_outbox(
    dir: &Path,
    log: &mut DecisionLog,
    settler: Option<&Settler>,
) -> Result<(), ServiceError> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mut outbox = Outbox::open(dir, usize::MAX)?;
    let entries: Vec<(u64, Entry)> = outbox.iter().cloned().collect();
    for (seq, entry) in entries {
        log.write(&entry.decision)?;
        outbox.complete(seq);
        if let Some(settler) = settler {
            settler.settle(&entry.settle);
        }
    }
    Ok(())
}

fn log_decision(d: &Decision) {
    match d.decision {
        Verdict::Error => tracing::warn!(
            scan_id = %d.scan_id,
            error = d.error.as_deref().unwrap_or(""),
            "decision: error"
        ),
        v => tracing::info!(
            scan_id = %d.scan_id,
            identity = d.identity.as_deref().unwrap_or("-"),
            score = d.score.unwrap_or(0.0),
            latency_ms = format!("{:.1}", d.latency_ms),
            "decision: {}",
            if v == Verdict::Grant { "grant" } else { "deny" }
        ),
    }
}

impl Sink {
    /// Stores a decision durably, then settles what may be settled once it is: a scan file
    /// whose decision is in the log is moved; an MQTT scan whose decision is in the outbox is
    /// acknowledged (its file, if any, waits for the broker's acknowledgement).
    fn store(
        &mut self,
        decision: &Decision,
        settle: &Settle,
        origin: &Origin,
        settler: Option<&Settler>,
    ) -> Result<(), ServiceError> {
        match self {
            Sink::Log(log) => {
                log.write(decision)?;
                if let Some(settler) = settler {
                    settler.settle(settle);
                }
            }
            Sink::Outbox {
                outbox,
                changed,
                client,
            } => {
                let dropped = lock(outbox).push(Entry {
                    decision: decision.clone(),
                    settle: settle.clone(),
                })?;
                if let Some(old) = dropped {
                    tracing::error!(
                        "outbox full: the decision for {} was dropped unpublished",
                        old.decision.scan_id
                    );
                    if let Some(settler) = settler {
                        settler.settle(&old.settle);
                    }
                }
                if let Origin::Message(ack) = origin {
                    mqtt::acknowledge(client, ack);
                }
                changed.notify_one();
            }
        }
        Ok(())
    }
}

/// Stores each decision as it comes. One that cannot be stored (a full disk) is tried again,
/// with backoff, while the service runs: nothing behind it is stored first, so the order
/// stays, and the queues fill and make the inputs wait. Once the service is stopping, a
/// decision that cannot be stored is given up: its scan was not settled, so a sensor file is
/// judged again at the next start and an MQTT scan delivered again by the broker.
async fn route(
    mut sink: Sink,
    settler: Option<Settler>,
    mut outcomes: mpsc::Receiver<Outcome>,
    drained: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stopping = false;
    while let Some(Outcome { decision, origin }) = outcomes.recv().await {
        log_decision(&decision);
        let settle = match &origin {
            Origin::File(path) => match (&decision.decision, &decision.error) {
                (Verdict::Error, Some(reason)) => Settle::Rejected(path.clone(), reason.clone()),
                _ => Settle::Processed(path.clone()),
            },
            Origin::Message(_) => Settle::Nothing,
        };
        let mut wait = STORE_RETRY_FIRST;
        loop {
            let Err(e) = sink.store(&decision, &settle, &origin, settler.as_ref()) else {
                break;
            };
            stopping = stopping || *shutdown.borrow();
            if stopping {
                tracing::error!(
                    "decision for {} not stored ({e}); its scan is decided again at the next start",
                    decision.scan_id
                );
                break;
            }
            tracing::error!(
                "decision for {} not stored ({e}); trying again in {} s",
                decision.scan_id,
                wait.as_secs()
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => stopping = changed.is_err() || *shutdown.borrow(),
            }
            wait = (wait * 2).min(STORE_RETRY_MAX);
        }
    }
    let _ = drained.send(true);
}

#[cfg(test)]
mod tests {
    use fingerprint_common::config::{AfterDecision, SensorConfig};

    use super::*;
    use crate::test_support::decision;

    fn decided(path: &Path, verdict: Verdict, error: Option<&str>) -> Outcome {
        let id = path.file_name().map(|n| n.to_string_lossy().into_owned());
        Outcome {
            decision: decision(&id.unwrap_or_default(), verdict, error),
            origin: Origin::File(path.to_path_buf()),
        }
    }

    /// The router stores each decision, in order, before it settles the scan: a judged file
    /// goes to processed/, an undecodable one to rejected/ with its reason; and it says when
    /// it has drained.
    #[tokio::test]
    async fn decisions_are_stored_in_order_then_their_scans_settled() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let sensor = SensorConfig {
            dir: dir.path().join("sensor"),
            after_decision: AfterDecision::Move,
            processed_dir: None,
            rejected_dir: None,
        };
        std::fs::create_dir_all(&sensor.dir)?;
        let settler = Settler::new(&sensor)?;
        let (good, bad) = (sensor.dir.join("a.png"), sensor.dir.join("b.png"));
        for path in [&good, &bad] {
            std::fs::write(path, b"scan")?;
        }
        let log_path = dir.path().join("decisions.jsonl");
        let log = DecisionLog::open(&log_path.display().to_string())?;
        let (outcomes_tx, outcomes) = mpsc::channel(4);
        let (drained_tx, mut drained) = watch::channel(false);
        let (_shutdown, shutdown) = watch::channel(false);
        let router = tokio::spawn(route(
            Sink::Log(log),
            Some(settler),
            outcomes,
            drained_tx,
            shutdown,
        ));
        outcomes_tx
            .send(decided(&good, Verdict::Deny, None))
            .await
            .map_err(|_| anyhow::anyhow!("router gone"))?;
        outcomes_tx
            .send(decided(&bad, Verdict::Error, Some("not an image")))
            .await
            .map_err(|_| anyhow::anyhow!("router gone"))?;
        drop(outcomes_tx);
        drained.changed().await?;
        assert!(*drained.borrow());
        router.await?;

        let lines: Vec<Decision> = std::fs::read_to_string(&log_path)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let ids: Vec<&str> = lines.iter().map(|d| d.scan_id.as_str()).collect();
        assert_eq!(ids, ["a.png", "b.png"]);
        assert!(!good.exists() && !bad.exists(), "both scans settled");
        assert!(sensor.processed_dir().join("a.png").exists());
        let rejected = sensor.rejected_dir().join("b.png");
        assert!(rejected.exists());
        let reason = std::fs::read_to_string(sensor.rejected_dir().join("b.png.reason"))?;
        assert_eq!(reason.trim(), "not an image");
        Ok(())
    }
}
