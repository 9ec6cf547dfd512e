//! `fingerprintd`: the door controller's fingerprint identification service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fingerprint_common::{DaemonConfig, MatcherMode, ScanLimits, DEFAULT_CONFIG};
use fingerprintd::Service;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

/// Identifies fingers from a sensor directory or an MQTT topic and publishes a decision for
/// every scan. Runs under systemd (Type=notify, watchdog, SIGHUP reloads the model, SIGTERM
/// finishes what is in flight).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML; see --print-default-config).
    #[arg(long, short, default_value = "/etc/fingerprintd/config.toml")]
    config: PathBuf,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Validate a configuration file without starting: syntax, values, model, TLS files.
    CheckConfig {
        /// Configuration file to check.
        file: PathBuf,
    },
    /// Enrol an identity from at least 3 scans of one finger (again: replaces its templates).
    /// Each scan is kept as the network's template and as its minutiae; scans with too few
    /// minutiae, or that do not match each other, are refused with the reason. A running
    /// service picks the change up within a second.
    Enroll {
        /// Name to grant scans of this finger as.
        #[arg(long)]
        identity: String,
        /// The matcher that checks the impressions against each other (default: the
        /// configuration's matcher.mode).
        #[arg(long, value_enum)]
        matcher: Option<MatcherMode>,
        /// Scans (image files) of the finger.
        #[arg(required = true)]
        scans: Vec<PathBuf>,
    },
    /// Set the door's threshold for a target false-accept rate from its gallery and a folder
    /// of other people's scans taken on its sensor (never enrolled here); for the fused
    /// matcher, fit the fusion too. Writes <state_dir>/calibration.json, which a running
    /// service picks up within a second.
    Calibrate {
        /// Scans of fingers not enrolled at this door (image files directly in it).
        #[arg(long)]
        strangers: PathBuf,
        /// Largest share of the strangers' scans that may be accepted (with fewer than
        /// 1/target scans: none).
        #[arg(long, default_value_t = 0.001)]
        target_far: f64,
    },
    /// Remove an enrolled identity.
    Remove { identity: String },
    /// List enrolled identities.
    List,
    /// Time the model on this machine as the service runs it: median batch-1 latency,
    /// images/s at --batch, load time, resident memory (JSON with --json), and the CPU
    /// kernels in use (the best this CPU runs; FINGERPRINT_KERNELS=portable, avx2, avx-vnni,
    /// avx512-vnni, amx, neon, neon-dot or neon-i8mm picks a lower one, for comparisons).
    Bench {
        /// Exported model file.
        model: PathBuf,
        /// fast (ours; int8 in integer arithmetic) or candle.
        #[arg(long, value_enum, default_value_t = BackendArg::Fast)]
        backend: BackendArg,
        /// Batch size of the throughput runs.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Timed batch-1 calls (after one warm-up).
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Print the figures as one JSON object (with the first input's logits).
        #[arg(long)]
        json: bool,
        /// Also time what the matcher adds to the network: minutiae extraction of each scan
        /// in --scans, and a probe matched 1:1 and 1:N against a gallery of --gallery
        /// identities generated from those scans' minutiae (3 impressions each).
        #[arg(long, value_enum, default_value = "network")]
        matcher: MatcherMode,
        /// Folder of scans (real fingerprints) for --matcher minutiae or fused.
        #[arg(long)]
        scans: Option<PathBuf>,
        /// Identities of the generated gallery.
        #[arg(long, default_value_t = 10_000)]
        gallery: usize,
    },
}

/// Which implementation `fingerprintd bench --backend` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    /// Ours: int8 in integer arithmetic, on the CPU kernels detected.
    Fast,
    /// Candle's convolutions (int8 and f16 dequantised to f32).
    Candle,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => runtime.block_on(run(&cli.config)),
        Command::CheckConfig { file } => runtime.block_on(check_config(&file)),
        Command::Enroll {
            identity,
            matcher,
            scans,
        } => runtime.block_on(enroll(&cli.config, &identity, matcher, &scans)),
        Command::Calibrate {
            strangers,
            target_far,
        } => runtime.block_on(calibrate(&cli.config, &strangers, target_far)),
        Command::Remove { identity } => {
            let config = DaemonConfig::load(&cli.config)?;
            if fingerprintd::enroll::remove(&config.gallery_path(), &identity)? {
                println!("removed {identity}");
                Ok(())
            } else {
                anyhow::bail!("{identity} is not enrolled")
            }
        }
        Command::Bench {
            model,
            backend,
            batch,
            runs,
            json,
            matcher,
            scans,
            gallery,
        } => {
            let backend = match backend {
                BackendArg::Candle => fingerprint_models::export::Backend::Candle,
                BackendArg::Fast => fingerprint_models::export::Backend::Auto,
            };
            let matching = match matcher {
                MatcherMode::Network => None,
                mode => Some(fingerprintd::bench::MatchBench {
                    mode,
                    scans: scans.context("--scans DIR is needed to time minutiae")?,
                    gallery,
                }),
            };
            if let Some(problem) = fingerprint_models::fast::Kernels::override_problem() {
                eprintln!("warning: {problem}");
            }
            let report =
                fingerprintd::bench::bench(&model, backend, batch, runs, matching.as_ref())?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{} ({}, {}, {:.1} MB): loaded in {:.2} s; batch 1: median {:.1} ms, p90 {:.1} ms; batch {}: {:.1} images/s; resident {:.0} MB (peak {:.0} MB)",
                    report.model,
                    report.backend,
                    report.quantization,
                    report.file_bytes as f64 / 1e6,
                    report.load_seconds,
                    report.latency_ms_median,
                    report.latency_ms_p90,
                    report.batch,
                    report.images_per_second,
                    report.rss_bytes as f64 / 1e6,
                    report.peak_rss_bytes as f64 / 1e6
                );
                if let Some(m) = &report.matching {
                    println!(
                        "{} matcher: minutiae extraction median {:.1} ms ({} scans, {:.0} minutiae each); 1:1 median {:.2} ms; 1:N over {} identities median {:.2} ms (adds {:.2} ms)",
                        m.mode,
                        m.extraction_ms_median,
                        m.scans,
                        m.minutiae_mean,
                        m.one_to_one_ms_median,
                        m.identities,
                        m.one_to_n_ms_median,
                        m.one_to_n_ms_median - m.one_to_one_ms_median
                    );
                }
            }
            Ok(())
        }
        Command::List => {
            let config = DaemonConfig::load(&cli.config)?;
            let enrolled = fingerprintd::enroll::list(&config.gallery_path())?;
            for (name, templates) in &enrolled {
                println!("{name}\t{templates} templates");
            }
            eprintln!("{} identities enrolled", enrolled.len());
            Ok(())
        }
    }
}

async fn enroll(
    config_path: &Path,
    identity: &str,
    matcher: Option<MatcherMode>,
    scans: &[PathBuf],
) -> Result<()> {
    let mut config = DaemonConfig::load(config_path)?;
    if let Some(mode) = matcher {
        config.matcher.mode = mode;
    }
    let engine = fingerprintd::service::load_engine(&config).await?;
    let limits = ScanLimits::from(config.limits);
    let mut named = Vec::new();
    for path in scans {
        let bytes = fingerprint_common::read_limited(path, &limits)?;
        named.push((path.display().to_string(), bytes));
    }
    let done = fingerprintd::enroll::enroll(engine.as_ref(), &config, identity, &named, &limits)?;
    let agreement: Vec<String> = done.agreement.iter().map(|a| format!("{a:.3}")).collect();
    println!(
        "{} {} from {} impressions ({} agreement {}; threshold {:.3})",
        if done.replaced {
            "re-enrolled"
        } else {
            "enrolled"
        },
        done.identity,
        done.templates,
        done.matcher,
        agreement.join(", "),
        done.threshold
    );
    if let Some(note) = done.small_prints_note() {
        println!("note: {note}");
    }
    Ok(())
}

async fn calibrate(config_path: &Path, strangers: &Path, target_far: f64) -> Result<()> {
    let config = DaemonConfig::load(config_path)?;
    let engine = fingerprintd::service::load_engine(&config).await?;
    let limits = ScanLimits::from(config.limits);
    let done = fingerprintd::calibrate::calibrate(
        engine.as_ref(),
        &config,
        strangers,
        target_far,
        &limits,
    )?;
    for skipped in &done.skipped {
        eprintln!("skipped {skipped}");
    }
    let c = &done.calibration;
    println!(
        "{} matcher: threshold {:.3}, set by {}, for a target FAR of {} ({} identities enrolled, {} genuine comparisons, {} stranger scans): {:.2}% of the strangers' scans accepted, {:.1}% of the enrolled impressions refused",
        c.mode,
        c.threshold,
        c.basis.map(|b| b.to_string()).unwrap_or_default(),
        c.target_far,
        c.identities.unwrap_or_default(),
        c.genuine_scores,
        c.stranger_scans,
        100.0 * c.far,
        100.0 * c.frr
    );
    if let Some(f) = &c.fusion {
        println!(
            "fusion: log-odds = {:.3} + {:.3} x cosine + {:.3} x ln(1 + minutiae){}",
            f.bias,
            f.network_weight,
            f.minutiae_weight,
            if f.network_weight == 0.0 {
                " (the network did not help on these scans, or too few genuine comparisons to tell: no weight)"
            } else {
                ""
            }
        );
    }
    println!(
        "written to {}",
        fingerprintd::policy::DoorCalibration::path(&config).display()
    );
    Ok(())
}

async fn check_config(path: &Path) -> Result<()> {
    let config = DaemonConfig::load(path)?;
    let engine = fingerprintd::service::load_engine(&config).await?;
    match &engine {
        Some(engine) => println!(
            "{}: model {} ({} {}, {} identities, threshold {}; {})",
            path.display(),
            engine.path.display(),
            engine.manifest.arch,
            engine.manifest.quantization,
            engine.manifest.num_classes,
            engine.threshold,
            engine.backend_name()
        ),
        None => println!(
            "{}: no model: matcher.mode = \"minutiae\" works with enrolment alone, no training",
            path.display()
        ),
    }
    if let Some(problem) = fingerprint_models::fast::Kernels::override_problem() {
        println!("warning: {problem}");
    }
    let calibration = fingerprintd::policy::DoorCalibration::path(&config);
    let door = fingerprintd::policy::DoorCalibration::load(&calibration)?;
    match fingerprint_common::Gallery::load(&config.gallery_path())? {
        Some(gallery) if !gallery.is_empty() => {
            let policy =
                fingerprintd::policy::resolve(&config, engine.as_ref(), &gallery, door.as_ref())?;
            println!(
                "gallery: {} identities (version {}); matcher {}, threshold {:.3} from {}",
                gallery.identities.len(),
                gallery.version,
                policy.rule.mode,
                policy.threshold,
                policy.source
            );
            if policy.claim_threshold != policy.threshold {
                println!(
                    "claims (1:1): threshold {:.3}, the shipped threshold for one identity",
                    policy.claim_threshold
                );
            }
            if let Some(why) = &policy.downgrade {
                println!("note: {why}");
            }
        }
        _ => println!(
            "gallery: nothing enrolled yet (matcher {} once people are enrolled)",
            config.matcher.mode
        ),
    }
    let m = &config.matcher;
    if m.lockout_after == 0 {
        println!("lockout: off (matcher.lockout_after = 0): a stranger may try scan after scan");
    } else {
        println!(
            "lockout: after {} denials in a row every scan is denied for {} s, doubling while lockouts follow each other, up to {} s",
            m.lockout_after, m.lockout_s, m.lockout_max_s
        );
    }
    if let Some(sensor) = &config.sensor {
        anyhow::ensure!(
            sensor.dir.is_dir(),
            "sensor directory {} does not exist",
            sensor.dir.display()
        );
        println!("sensor directory {}", sensor.dir.display());
    }
    if let Some(mqtt) = &config.mqtt {
        fingerprintd::mqtt::options(mqtt, &config.door_id)?;
        let topics = fingerprintd::mqtt::Topics::new(mqtt, &config.door_id);
        println!(
            "MQTT {}:{}{}: scans {}, decisions {}, status {}",
            mqtt.host,
            mqtt.port,
            if mqtt.tls.is_some() { " (TLS)" } else { "" },
            if mqtt.subscribe_scans {
                topics.scan.as_str()
            } else {
                "(off)"
            },
            topics.decision,
            topics.status
        );
        println!(
            "MQTT broker: {}",
            fingerprintd::mqtt::broker_limit_advice(mqtt)
        );
    } else {
        println!("no MQTT: decisions to {}", config.output.decisions);
    }
    println!("configuration OK");
    Ok(())
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

async fn run(config_path: &Path) -> Result<()> {
    let config = DaemonConfig::load(config_path)?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let service = Service::start(config).await?;
    notify(&[NotifyState::Ready, NotifyState::Status("ready")]);
    tracing::info!("ready");
    // Ping at half the watchdog interval (an hour when there is none: the tick is unused).
    let period = sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(3600));
    let mut watchdog = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let mut states = vec![NotifyState::Reloading];
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    states.push(now);
                }
                notify(&states);
                if let Err(e) = service.reload().await {
                    tracing::error!("reload refused, the current model stays: {e:#}");
                }
                notify(&[NotifyState::Ready]);
            }
            _ = watchdog.tick() => {
                if service.is_healthy() {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!("inference stopped; not feeding the watchdog");
                }
            }
        }
    }
    tracing::info!("stopping: finishing scans in flight");
    notify(&[NotifyState::Stopping]);
    service.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
