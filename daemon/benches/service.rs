//! Service benchmark: runs the `fingerprintd` binary on a ResNet-50 (224x224, the method's
//! network; weights by formula, since only speed is measured) exported as f32 and as int8,
//! with the sensor directory as input and decisions as JSON lines, and reports
//!
//! - time from start to READY (sd_notify over a socket of our own, as systemd sees it),
//! - scan-to-decision latency p50/p99, one scan at a time (file renamed into the directory
//!   -> decision line on disk, and the service's own `latency_ms`),
//! - scans/s under a burst (all files at once, decided in batches),
//! - resident memory (VmRSS after the burst, and the peak VmHWM).
//!
//! With `--prints DIR` (real scans, FVC/PolyU names `<finger>_<impression>.<ext>`) one more
//! int8 row runs the fused matcher: every finger of DIR enrolled from its first 3 scans
//! (fingerprintd's own enrolment), its other scans offered one at a time, so each decision
//! extracts minutiae beside the network and matches them against the gallery.
//!
//! `cargo bench -p fingerprintd --bench service [-- --scans N --burst N --arch resnet18
//!  --prints ../shared/datasets/fvc2002/DB1_B]`

use std::io::Cursor;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

#[path = "../tests/support/mod.rs"]
mod support;
use fingerprint_common::config::{
    LimitsConfig, MatcherConfig, ModelConfig, OutputConfig, QueueConfig, SensorConfig,
};
use fingerprint_common::{DaemonConfig, Decision, MatcherMode, ScanLimits};
use fingerprint_models::export::Quantization;
use fingerprint_models::Arch;
use image::{GrayImage, ImageFormat, Luma};

const BIN: &str = env!("CARGO_BIN_EXE_fingerprintd");

struct Args {
    scans: usize,
    burst: usize,
    arch: Arch,
    classes: usize,
    prints: Option<std::path::PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        scans: 30,
        burst: 32,
        arch: Arch::ResNet50,
        classes: 148,
        prints: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("missing value");
        match flag.as_str() {
            "--scans" => a.scans = value()?.parse()?,
            "--burst" => a.burst = value()?.parse()?,
            "--arch" => a.arch = value()?.parse().map_err(anyhow::Error::msg)?,
            "--classes" => a.classes = value()?.parse()?,
            "--prints" => a.prints = Some(value()?.into()),
            _ => {} // cargo bench passes --bench
        }
    }
    Ok(a)
}

fn scan_png(seed: u32) -> Vec<u8> {
    // A 300x300 ridge-like pattern: decoding and resizing cost as much as a real scan's.
    let img = GrayImage::from_fn(300, 300, |x, y| {
        let v = ((x as f32 * 0.7 + y as f32 * 0.3 + seed as f32).sin() * 100.0 + 128.0) as u8;
        Luma([v])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("PNG in memory");
    out.into_inner()
}

fn write_model(path: &Path, arch: Arch, classes: usize, q: Quantization) -> Result<u64> {
    support::write_model_with(path, arch, classes, 224, q, 0.0)?;
    Ok(std::fs::metadata(path)?.len())
}

fn decisions(path: &Path) -> Vec<Decision> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_for_count(log: &Path, n: usize, limit: Duration) -> Result<Vec<Decision>> {
    let until = Instant::now() + limit;
    loop {
        let d = decisions(log);
        if d.len() >= n {
            return Ok(d);
        }
        anyhow::ensure!(Instant::now() < until, "{} of {n} decisions", d.len());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    format: String,
    file_mb: f64,
    ready_s: f64,
    p50: f64,
    p99: f64,
    service_p50: f64,
    burst_rate: f64,
    rss_mb: f64,
    peak_mb: f64,
}

/// Real scans by finger, in impression order.
fn prints_by_finger(dir: &Path) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut by: std::collections::BTreeMap<String, Vec<(u32, Vec<u8>)>> = Default::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if let Some((finger, imp)) = stem.rsplit_once('_') {
            if let Ok(imp) = imp.parse() {
                by.entry(finger.into())
                    .or_default()
                    .push((imp, std::fs::read(&path)?));
            }
        }
    }
    Ok(by
        .into_values()
        .map(|mut v| {
            v.sort_by_key(|x| x.0);
            v.into_iter().map(|x| x.1).collect()
        })
        .collect())
}

/// `prints`: run the fused matcher on these real scans (enrolled first) instead of patterns
/// in classifier mode.
fn run(args: &Args, q: Quantization, prints: Option<&Path>) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let model = root.join(format!("model-{q}.safetensors"));
    let size = write_model(&model, args.arch, args.classes, q)?;
    let sensor = root.join("sensor");
    std::fs::create_dir_all(&sensor)?;
    let log = root.join("decisions.jsonl");
    let config = DaemonConfig {
        door_id: "bench".into(),
        state_dir: root.join("state"),
        model: ModelConfig {
            path: Some(model.clone()),
            device: "cpu".into(),
            threshold: None,
            match_threshold: None,
            top_k: 3,
        },
        matcher: MatcherConfig {
            mode: MatcherMode::Fused,
            ..MatcherConfig::default()
        },
        limits: LimitsConfig::default(),
        queue: QueueConfig::default(),
        sensor: Some(SensorConfig {
            dir: sensor.clone(),
            after_decision: Default::default(),
            processed_dir: None,
            rejected_dir: None,
        }),
        mqtt: None,
        output: OutputConfig {
            decisions: log.display().to_string(),
            outbox_capacity: 1000,
        },
    };
    let mut offered: Vec<Vec<u8>> = Vec::new();
    if let Some(dir) = prints {
        let engine = fingerprintd::Engine::load(&model, "cpu", None)?;
        let limits = ScanLimits::default();
        for (i, scans) in prints_by_finger(dir)?.into_iter().enumerate() {
            let (enrol, probes) = scans.split_at(scans.len().min(3));
            let named: Vec<(String, Vec<u8>)> = enrol
                .iter()
                .enumerate()
                .map(|(k, b)| (format!("{i}-{k}"), b.clone()))
                .collect();
            match fingerprintd::enroll::enroll(
                Some(&engine),
                &config,
                &format!("finger-{i}"),
                &named,
                &limits,
            ) {
                Ok(_) => offered.extend(probes.iter().cloned()),
                Err(e) => eprintln!("finger {i} not enrolled: {e}"),
            }
        }
        anyhow::ensure!(!offered.is_empty(), "{}: nothing enrolled", dir.display());
    }
    let config_path = root.join("config.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    let socket_path = root.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_secs(120)))?;

    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let mut buf = [0u8; 512];
    loop {
        let n = socket
            .recv(&mut buf)
            .context("no READY from fingerprintd")?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break;
        }
    }
    let ready_s = started.elapsed().as_secs_f64();

    let pngs: Vec<Vec<u8>> = if offered.is_empty() {
        (0..args.scans.max(args.burst) as u32)
            .map(scan_png)
            .collect()
    } else {
        offered
    };
    // One at a time (after a warm-up scan).
    let mut wall = Vec::new();
    for i in 0..=args.scans {
        let part = sensor.join(format!(".seq-{i}.png"));
        std::fs::write(&part, &pngs[i % pngs.len()])?;
        let t = Instant::now();
        std::fs::rename(&part, sensor.join(format!("seq-{i}.png")))?;
        wait_for_count(&log, i + 1, Duration::from_secs(60))?;
        if i > 0 {
            wall.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut service: Vec<f64> = decisions(&log)
        .iter()
        .skip(1)
        .map(|d| d.latency_ms)
        .collect();
    wall.sort_by(f64::total_cmp);
    service.sort_by(f64::total_cmp);

    // A burst: every file written first (hidden), then all renamed in at once.
    for (i, png) in pngs.iter().take(args.burst).enumerate() {
        std::fs::write(sensor.join(format!(".burst-{i}.png")), png)?;
    }
    let before = decisions(&log).len();
    let t = Instant::now();
    for i in 0..args.burst {
        std::fs::rename(
            sensor.join(format!(".burst-{i}.png")),
            sensor.join(format!("burst-{i}.png")),
        )?;
    }
    wait_for_count(&log, before + args.burst, Duration::from_secs(600))?;
    let burst_rate = args.burst as f64 / t.elapsed().as_secs_f64();
    let rss = proc_status_kb(child.id(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let peak = proc_status_kb(child.id(), "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait()?;
    Ok(Row {
        format: match prints {
            Some(dir) => format!("{q}, fused matcher ({})", dir.display()),
            None => format!("{q}, classifier (network only)"),
        },
        file_mb: size as f64 / 1e6,
        ready_s,
        p50: percentile(&wall, 0.5),
        p99: percentile(&wall, 0.99),
        service_p50: percentile(&service, 0.5),
        burst_rate,
        rss_mb: rss,
        peak_mb: peak,
    })
}

fn main() -> Result<()> {
    let args = args()?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "fingerprintd service benchmark: {} ({} classes, 224x224), {} scans one at a time, \
         burst of {}; {cpu}, {cores} cores",
        args.arch, args.classes, args.scans, args.burst
    );
    let mut rows = Vec::new();
    for q in [Quantization::F32, Quantization::Int8] {
        eprintln!("running {q} ...");
        rows.push(run(&args, q, None)?);
    }
    if let Some(dir) = &args.prints {
        eprintln!(
            "running int8 with the fused matcher on {} ...",
            dir.display()
        );
        rows.push(run(&args, Quantization::Int8, Some(dir))?);
    }
    println!();
    println!("| model | file MB | start to READY s | latency p50 ms | p99 ms | service p50 ms | burst scans/s | RSS MB | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
            r.format,
            r.file_mb,
            r.ready_s,
            r.p50,
            r.p99,
            r.service_p50,
            r.burst_rate,
            r.rss_mb,
            r.peak_mb
        );
    }
    Ok(())
}
