//! What the daemon's tests share: a small exported model, scans good and bad, a broker on
//! loopback, a proxy that can cut the daemon off from it, and a subscriber.
#![allow(dead_code)]

use std::io::Cursor;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use fingerprint_common::config::{
    LimitsConfig, MatcherConfig, ModelConfig, MqttConfig, OutputConfig, QueueConfig, SensorConfig,
};
use fingerprint_common::MatcherMode;
use fingerprint_common::{DaemonConfig, Decision, Preprocessing};
use fingerprint_models::export::{
    fold_batch_norm, write_exported, Calibration, Manifest, Quantization,
};
use fingerprint_models::{formula, Arch, ResNet};
use image::{GrayImage, ImageFormat, Luma};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

pub const CLASSES: usize = 3;
/// Scans above this many bytes are refused in these tests.
pub const MAX_SCAN_BYTES: usize = 64 * 1024;

/// Writes a ResNet-18 for 32x32 inputs with formula weights, exported as `quantization`;
/// a non-zero `weight_seed` gives a different model.
pub fn write_model(path: &Path, quantization: Quantization, weight_seed: f32) -> Result<()> {
    write_model_with(path, Arch::ResNet18, CLASSES, 32, quantization, weight_seed)
}

/// As [`write_model`], for any network, class count and input size.
pub fn write_model_with(
    path: &Path,
    arch: Arch,
    classes: usize,
    size: u32,
    quantization: Quantization,
    weight_seed: f32,
) -> Result<()> {
    write_model_calibrated(path, arch, classes, size, quantization, weight_seed, None)
}

/// As [`write_model_with`], with an open-set calibration in the manifest.
pub fn write_model_calibrated(
    path: &Path,
    arch: Arch,
    classes: usize,
    size: u32,
    quantization: Quantization,
    weight_seed: f32,
    calibration: Option<Calibration>,
) -> Result<()> {
    let varmap = VarMap::new();
    let model = ResNet::new(
        arch,
        classes,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    formula::fill_varmap(&varmap)?;
    if weight_seed != 0.0 {
        // A different model: scale the head.
        let data = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let fc = data.get("fc.weight").context("fc.weight")?;
        fc.set(&(fc.as_tensor() * (1.0 + weight_seed as f64))?)?;
    }
    let mut manifest = Manifest::new(
        arch,
        (0..classes).map(|i| format!("person-{i}")).collect(),
        Preprocessing::imagenet(size),
        quantization,
        "daemon tests".into(),
    );
    manifest.calibration = calibration;
    write_exported(path, &fold_batch_norm(&model)?, manifest)?;
    Ok(())
}

/// A PNG of a grey pattern that depends on `seed`.
pub fn good_scan(seed: u32) -> Vec<u8> {
    let img = GrayImage::from_fn(48, 40, |x, y| {
        Luma([((x * (3 + seed % 7) + y * (5 + seed % 11) + seed * 17) % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

/// A PNG whose header claims 100000x100000 pixels (valid CRC), as a decompression bomb does.
pub fn bomb_scan() -> Vec<u8> {
    let mut png = good_scan(1);
    // IHDR data starts at byte 16: width, height; its CRC follows the 13 data bytes.
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// Bad scans, each with a name: empty, truncated, random, oversized, bomb.
pub fn bad_scans() -> Vec<(&'static str, Vec<u8>)> {
    let good = good_scan(2);
    let mut state = 0x2545_f491u32;
    let random: Vec<u8> = (0..4000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let mut oversized = good_scan(3);
    oversized.resize(MAX_SCAN_BYTES + 1000, 0);
    vec![
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("random", random),
        ("oversized", oversized),
        ("bomb", bomb_scan()),
    ]
}

/// A configuration for tests: the model, a state directory, small limits, no inputs.
pub fn config(root: &Path, model: &Path) -> DaemonConfig {
    DaemonConfig {
        door_id: "test-door".into(),
        state_dir: root.join("state"),
        model: ModelConfig {
            path: Some(model.to_path_buf()),
            device: "cpu".into(),
            threshold: Some(0.0),
            match_threshold: None,
            top_k: 2,
        },
        // These tests' scans are patterns, not prints: the network's templates alone.
        matcher: MatcherConfig {
            mode: MatcherMode::Network,
            ..MatcherConfig::default()
        },
        limits: LimitsConfig {
            max_scan_bytes: MAX_SCAN_BYTES,
            max_side: 1024,
        },
        queue: QueueConfig::default(),
        sensor: None,
        mqtt: None,
        output: OutputConfig {
            decisions: root.join("decisions.jsonl").display().to_string(),
            outbox_capacity: 1000,
        },
    }
}

/// A temporary root with a model, a sensor directory and a configuration using both, with
/// decisions going to `log`.
pub struct Setup {
    pub root: tempfile::TempDir,
    pub model: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub config: DaemonConfig,
}

impl Setup {
    pub fn new(quantization: Quantization) -> Result<Self> {
        Self::with_model(|path| write_model(path, quantization, 0.0))
    }

    pub fn with_model(write: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        let root = tempfile::tempdir()?;
        let model = root.path().join("model.safetensors");
        write(&model)?;
        let dir = root.path().join("sensor");
        let mut config = config(root.path(), &model);
        config.sensor = Some(sensor(&dir));
        let log = root.path().join("decisions.jsonl");
        Ok(Self {
            root,
            model,
            dir,
            log,
            config,
        })
    }
}

pub fn sensor(dir: &Path) -> SensorConfig {
    std::fs::create_dir_all(dir).expect("creating the sensor directory");
    SensorConfig {
        dir: dir.to_path_buf(),
        after_decision: Default::default(),
        processed_dir: None,
        rejected_dir: None,
    }
}

pub fn mqtt(port: u16) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: None,
        topic_prefix: "fingerprintd".into(),
        subscribe_scans: true,
        enrollment: false,
        username: None,
        password_file: None,
        password: None,
        keep_alive_s: 5,
        max_backoff_s: 1,
        max_message_bytes: 1 << 20,
        tls: None,
    }
}

/// Writes a scan the way a sensor should: to a `.part` name, then renamed.
pub fn drop_scan(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let part = dir.join(format!("{name}.part"));
    std::fs::write(&part, bytes)?;
    let path = dir.join(name);
    std::fs::rename(&part, &path)?;
    Ok(path)
}

/// Decisions in a JSON-lines file.
pub fn read_decisions(path: &Path) -> Result<Vec<Decision>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("decision line {l}")))
        .collect()
}

/// Polls `check` every 50 ms until it returns Some, or fails after `secs`.
pub async fn wait_for<T>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts rumqttd on a loopback port, in a thread of its own, for the rest of the test.
pub fn start_broker() -> Result<u16> {
    let port = free_port()?;
    let config = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 100
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&config)?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("test broker stopped: {e}");
        }
    });
    // Wait until it listens.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("test broker did not start on port {port}")
}

/// A TCP proxy in front of the broker that can be cut (all connections dropped, new ones
/// closed at once) and restored: to the daemon, the broker is down.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: u16) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2
                    .lock()
                    .expect("proxy connection list")
                    .push(task.abort_handle());
            }
        });
        Ok(Self {
            port,
            up,
            connections,
        })
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self
            .connections
            .lock()
            .expect("proxy connection list")
            .drain(..)
        {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A client that records every message on the topics it subscribes to.
pub struct Subscriber {
    pub client: AsyncClient,
    pub messages: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
}

impl Subscriber {
    /// Connects and subscribes; returns once the subscription is acknowledged.
    pub async fn start(port: u16, name: &str, topics: &[&str]) -> Result<Self> {
        let mut options = MqttOptions::new(name, "127.0.0.1", port);
        options.set_max_packet_size(8 << 20, 8 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        for t in topics {
            client.subscribe(*t, QoS::AtLeastOnce).await?;
        }
        let (tx, messages) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::channel(topics.len().max(1));
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec(), p.retain));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for _ in topics {
            tokio::time::timeout(Duration::from_secs(10), ready.recv())
                .await
                .context("subscription not acknowledged")?;
        }
        Ok(Self { client, messages })
    }

    /// The next message, or an error after `secs`.
    pub async fn next(&mut self, secs: u64) -> Result<(String, Vec<u8>, bool)> {
        tokio::time::timeout(Duration::from_secs(secs), self.messages.recv())
            .await
            .context("no message in time")?
            .context("subscriber stopped")
    }

    /// Decisions until `n` have arrived (status messages are skipped).
    pub async fn decisions(&mut self, n: usize, secs: u64) -> Result<Vec<Decision>> {
        let mut out = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        while out.len() < n {
            let (topic, payload, _) = tokio::time::timeout_at(until, self.messages.recv())
                .await
                .with_context(|| format!("{} of {n} decisions in {secs} s", out.len()))?
                .context("subscriber stopped")?;
            if topic.ends_with("/decision") {
                out.push(serde_json::from_slice(&payload)?);
            }
        }
        Ok(out)
    }

    /// Decisions that arrive within `secs` (for checking that no more come).
    pub async fn more_decisions(&mut self, secs: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        while let Ok(Some((topic, payload, _))) =
            tokio::time::timeout_at(until, self.messages.recv()).await
        {
            if topic.ends_with("/decision") {
                if let Ok(d) = serde_json::from_slice(&payload) {
                    out.push(d);
                }
            }
        }
        out
    }
}

/// A PNG of one grey level.
pub fn flat_scan(level: u8) -> Vec<u8> {
    let img = GrayImage::from_pixel(48, 40, Luma([level]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

/// A PNG of sinusoidal stripes: `angle` in degrees, `period` in pixels, `phase` in pixels.
/// Same angle and period, other phase: like two impressions of one finger.
pub fn stripes(angle: f32, period: f32, phase: f32) -> Vec<u8> {
    let (s, c) = angle.to_radians().sin_cos();
    let img = GrayImage::from_fn(64, 64, |x, y| {
        let t = (x as f32 * c + y as f32 * s + phase) / period * std::f32::consts::TAU;
        Luma([(127.5 + 120.0 * t.sin()) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}
