//! fingerprintd as a child process, the way systemd runs it: started with a notify socket and
//! awaited until it says READY=1, its JSON-lines decisions followed as they are written,
//! stopped with SIGTERM (SIGKILL if it hangs). The demo's script drives it.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fingerprint_common::Decision;

/// A running fingerprintd.
pub struct ServiceProcess {
    child: Child,
    socket_path: PathBuf,
    log_path: PathBuf,
}

impl ServiceProcess {
    /// Starts `fingerprintd --config config`, its log and notify socket in `dir`, and waits
    /// until it is ready.
    pub fn start(fingerprintd: &Path, config: &Path, dir: &Path) -> Result<Self> {
        let socket_path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path)
            .with_context(|| format!("binding {}", socket_path.display()))?;
        let log_path = dir.join("fingerprintd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(fingerprintd)
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", fingerprintd.display()))?;
        let mut process = Self {
            child,
            socket_path,
            log_path,
        };
        if let Err(e) = await_ready(&socket, &mut process.child, &process.log_path) {
            let _ = process.stop();
            return Err(e);
        }
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log_path
    }

    /// The child, to notice when it exits while waiting on it.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGTERM (the service finishes what is in flight), then SIGKILL if it hangs.
    pub fn stop(mut self) -> Result<()> {
        let stopped = stop(&mut self.child);
        let _ = std::fs::remove_file(&self.socket_path);
        stopped
    }
}

/// Waits for READY=1 as systemd would, failing early if the service exits.
fn await_ready(socket: &UnixDatagram, child: &mut Child, log: &Path) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            bail!(
                "fingerprintd exited ({status}) before it was ready; see {}",
                log.display()
            );
        }
        if let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return Ok(());
            }
        }
    }
    bail!("fingerprintd not ready within 60 s; see {}", log.display())
}

/// SIGTERM (the service finishes what is in flight), then SIGKILL if it hangs.
fn stop(child: &mut Child) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .context("sending SIGTERM to fingerprintd")?;
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "fingerprintd stopped with {status}");
            println!("fingerprintd stopped on SIGTERM ({status})");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    bail!("fingerprintd did not stop within 20 s of SIGTERM: killed")
}

/// Follows the service's JSON-lines decisions file.
pub struct DecisionReader {
    path: PathBuf,
    reader: Option<BufReader<std::fs::File>>,
    partial: String,
}

impl DecisionReader {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            reader: None,
            partial: String::new(),
        }
    }

    /// The next whole decision line, waiting at most `timeout`; fails if `child` exits.
    pub fn next(&mut self, timeout: Duration, child: &mut Child) -> Result<Decision> {
        let until = Instant::now() + timeout;
        loop {
            if self.reader.is_none() && self.path.exists() {
                self.reader = Some(BufReader::new(std::fs::File::open(&self.path)?));
            }
            if let Some(reader) = &mut self.reader {
                let n = reader.read_line(&mut self.partial)?;
                if n > 0 && self.partial.ends_with('\n') {
                    let line = std::mem::take(&mut self.partial);
                    return serde_json::from_str(&line)
                        .with_context(|| format!("{}: bad decision line", self.path.display()));
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("fingerprintd exited ({status})");
            }
            ensure!(Instant::now() < until, "no decision within {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::decision;
    use super::*;
    use fingerprint_common::Verdict;

    #[test]
    fn the_decision_reader_waits_for_whole_lines() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("decisions.jsonl");
        let mut child = Command::new("sleep").arg("30").spawn()?;
        let mut reader = DecisionReader::new(path.clone());
        let line = serde_json::to_string(&decision(Verdict::Deny, None, 1.0))?;
        // Half a line: not a decision yet.
        std::fs::write(&path, &line[..10])?;
        assert!(reader.next(Duration::from_millis(100), &mut child).is_err());
        std::fs::write(&path, format!("{line}\n"))?;
        let read = reader.next(Duration::from_secs(5), &mut child);
        child.kill()?;
        child.wait()?;
        assert_eq!(read?.decision, Verdict::Deny);
        Ok(())
    }
}
