//! The `fingerprintd` binary as systemd runs it: READY, WATCHDOG and STOPPING notifications, SIGHUP
//! reloading the model (and refusing a broken one), SIGTERM, SIGKILL mid-scan, and the
//! configuration commands.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use fingerprint_common::{DaemonConfig, Verdict};
use fingerprint_models::export::Quantization;
use fingerprint_models::Arch;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_fingerprintd");

fn write_config(root: &Path, config: &DaemonConfig) -> Result<PathBuf> {
    let path = root.join("config.toml");
    std::fs::write(&path, toml::to_string(config)?)?;
    Ok(path)
}

fn spawn(config: &Path, notify_socket: Option<&Path>) -> Result<Child> {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).stdin(Stdio::null());
    if let Some(socket) = notify_socket {
        // As systemd sets them for Type=notify with WatchdogSec=1s.
        cmd.env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", "1000000");
    }
    Ok(cmd.spawn()?)
}

fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

/// Reads notifications until one contains `wanted`.
fn await_notification(socket: &UnixDatagram, wanted: &str, secs: u64) -> Result<Vec<String>> {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        socket.set_read_timeout(Some(until - Instant::now()))?;
        let Ok(n) = socket.recv(&mut buf) else { break };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = message.lines().any(|l| l == wanted);
        seen.push(message);
        if done {
            return Ok(seen);
        }
    }
    anyhow::bail!("no {wanted} in {secs} s; got {seen:?}")
}

async fn decide_one(
    dir: &Path,
    log: &Path,
    name: &str,
    seed: u32,
) -> Result<fingerprint_common::Decision> {
    drop_scan(dir, name, &good_scan(seed))?;
    wait_for(30, name, || {
        Ok(read_decisions(log)?.into_iter().find(|d| d.scan_id == name))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_systemd_reloads_on_sighup_and_stops_cleanly_on_sigterm() -> Result<()> {
    let Setup {
        root,
        model,
        dir,
        log,
        config,
    } = Setup::new(Quantization::Int8)?;
    let config_path = write_config(root.path(), &config)?;
    let socket_path = root.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    let mut child = spawn(&config_path, Some(&socket_path))?;

    await_notification(&socket, "READY=1", 30)?;
    // Pings at half the interval.
    await_notification(&socket, "WATCHDOG=1", 5)?;
    let first = decide_one(&dir, &log, "a.png", 1).await?;

    // A new model replaced by rename, then SIGHUP: picked up.
    let staged = root.path().join("new.safetensors");
    write_model(&staged, Quantization::Int8, 0.5)?;
    std::fs::rename(&staged, &model)?;
    signal(&child, "HUP")?;
    let seen = await_notification(&socket, "READY=1", 30)?;
    assert!(seen.iter().any(|m| m.contains("RELOADING=1")), "{seen:?}");
    let second = decide_one(&dir, &log, "b.png", 2).await?;
    let digest = |d: &fingerprint_common::Decision| d.model.as_ref().map(|m| m.digest.clone());
    assert!(digest(&first).is_some());
    assert_ne!(digest(&first), digest(&second), "new model not used");

    // A broken model: refused, the running one stays.
    std::fs::write(&staged, b"not a model")?;
    std::fs::rename(&staged, &model)?;
    signal(&child, "HUP")?;
    await_notification(&socket, "READY=1", 30)?;
    let third = decide_one(&dir, &log, "c.png", 3).await?;
    assert_eq!(digest(&third), digest(&second));
    assert_eq!(third.decision, Verdict::Grant);

    signal(&child, "TERM")?;
    await_notification(&socket, "STOPPING=1", 30)?;
    let status = child.wait()?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_in_flight_when_killed_is_decided_after_restart() -> Result<()> {
    // Large enough inputs that a burst takes a while to decide.
    let Setup {
        root,
        dir,
        log,
        mut config,
        ..
    } = Setup::with_model(|path| {
        write_model_with(path, Arch::ResNet18, CLASSES, 160, Quantization::F32, 0.0)
    })?;
    config.queue.max_batch = 4;
    let config_path = write_config(root.path(), &config)?;
    let names: Vec<String> = (0..24).map(|i| format!("burst-{i:02}.png")).collect();

    let mut child = spawn(&config_path, None)?;
    for (i, name) in names.iter().enumerate() {
        std::fs::write(dir.join(name), good_scan(i as u32))?;
    }
    wait_for(60, "a first decision", || {
        Ok((!read_decisions(&log)?.is_empty()).then_some(()))
    })
    .await?;
    child.kill()?; // SIGKILL
    child.wait()?;
    let processed = std::fs::read_dir(dir.join("processed"))?.count();
    println!(
        "killed after {processed} of {} scans were settled",
        names.len()
    );
    assert!(
        processed < names.len(),
        "the kill came too late to test anything"
    );
    for name in &names {
        assert!(
            dir.join(name).is_file() || dir.join("processed").join(name).is_file(),
            "{name} lost"
        );
    }

    let mut child = spawn(&config_path, None)?;
    let result = wait_for(120, "every scan settled", || {
        Ok((std::fs::read_dir(dir.join("processed"))?.count() == names.len()).then_some(()))
    })
    .await;
    signal(&child, "TERM")?;
    child.wait()?;
    result?;
    let decisions = read_decisions(&log)?;
    for name in &names {
        assert!(
            decisions.iter().any(|d| &d.scan_id == name),
            "{name}: no decision"
        );
    }
    println!(
        "{} decisions for {} scans (at least once)",
        decisions.len(),
        names.len()
    );
    Ok(())
}

#[test]
fn default_config_is_printed_and_check_config_catches_mistakes() -> Result<()> {
    let out = Command::new(BIN).arg("--print-default-config").output()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    let config = DaemonConfig::parse(&text, Path::new("default"))?;
    assert_eq!(config.door_id, "door-1");
    assert!(config.sensor.is_some() && config.mqtt.is_none());

    let root = tempfile::tempdir()?;
    let model = root.path().join("model.safetensors");
    write_model(&model, Quantization::F32, 0.0)?;
    let mut config = support::config(root.path(), &model);
    config.sensor = Some(sensor(&root.path().join("sensor")));
    let path = write_config(root.path(), &config)?;
    let check = |path: &Path| -> Result<(bool, String)> {
        let out = Command::new(BIN).arg("check-config").arg(path).output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.success(), text))
    };
    let (ok, text) = check(&path)?;
    assert!(ok, "{text}");
    assert!(text.contains("configuration OK"), "{text}");
    assert!(
        text.contains("lockout: after 5 denials in a row every scan is denied for 30 s"),
        "{text}"
    );

    let good = std::fs::read_to_string(&path)?;
    let typo = root.path().join("typo.toml");
    std::fs::write(&typo, good.replace("top_k", "topk"))?;
    let (ok, text) = check(&typo)?;
    assert!(!ok);
    assert!(
        text.contains("topk") && text.contains("typo.toml"),
        "{text}"
    );

    let no_model = root.path().join("no-model.toml");
    std::fs::write(
        &no_model,
        good.replace("model.safetensors", "missing.safetensors"),
    )?;
    let (ok, text) = check(&no_model)?;
    assert!(!ok);
    assert!(text.contains("missing.safetensors"), "{text}");
    Ok(())
}
