//! Where decisions go without a broker (JSON lines on stdout or in a file), and what happens
//! to a scan file once its decision is out: moved to `processed/`, deleted, or moved to
//! `rejected/` with a `.reason` file.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use fingerprint_common::config::{AfterDecision, SensorConfig};
use fingerprint_common::Decision;
use serde::{Deserialize, Serialize};

/// What to do with a scan after its decision has been published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Settle {
    /// Nothing (MQTT scans: their message was acknowledged when the decision was stored).
    Nothing,
    /// A sensor file that was judged.
    Processed(PathBuf),
    /// A sensor file that could not be judged, and why.
    Rejected(PathBuf, String),
}

/// JSON-lines output of decisions.
pub enum DecisionLog {
    Stdout,
    File { path: PathBuf, file: File },
}

impl DecisionLog {
    pub fn open(target: &str) -> Result<Self> {
        if target == "stdout" {
            return Ok(Self::Stdout);
        }
        let path = PathBuf::from(target);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening decision log {}", path.display()))?;
        Ok(Self::File { path, file })
    }

    /// Writes one decision; returns once it is on disk (or handed to stdout).
    pub fn write(&mut self, decision: &Decision) -> Result<()> {
        let mut line = serde_json::to_vec(decision)?;
        line.push(b'\n');
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()?;
            }
            Self::File { path, file } => {
                file.write_all(&line)
                    .and_then(|_| file.sync_data())
                    .with_context(|| format!("writing decision log {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Moves or deletes scan files once their decisions are out, and remembers which files are
/// in progress so that a file is never queued twice.
#[derive(Clone)]
pub struct Settler {
    after: AfterDecision,
    processed: PathBuf,
    rejected: PathBuf,
    in_progress: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Settler {
    /// Creates the processed and rejected directories.
    pub fn new(sensor: &SensorConfig) -> Result<Self> {
        let (processed, rejected) = (sensor.processed_dir(), sensor.rejected_dir());
        for dir in [&processed, &rejected] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self {
            after: sensor.after_decision,
            processed,
            rejected,
            in_progress: Arc::default(),
        })
    }

    /// Marks a file as taken; false if it already was.
    pub fn claim(&self, path: &Path) -> bool {
        self.lock().insert(path.to_path_buf())
    }

    /// Forgets a claim without settling (the file vanished before it was read).
    pub fn release(&self, path: &Path) {
        self.lock().remove(path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        crate::mqtt::lock(&self.in_progress)
    }

    /// Moves or deletes a scan whose decision has been published. Errors are logged: the
    /// decision is out, and the file stays where it is (it will be judged again after a
    /// restart, never lost).
    pub fn settle(&self, settle: &Settle) {
        let result = match settle {
            Settle::Nothing => return,
            Settle::Processed(path) => match self.after {
                AfterDecision::Delete => {
                    fs::remove_file(path).with_context(|| format!("deleting {}", path.display()))
                }
                AfterDecision::Move => move_into(path, &self.processed).map(drop),
            },
            Settle::Rejected(path, reason) => move_into(path, &self.rejected).and_then(|to| {
                let mut name = to.clone().into_os_string();
                name.push(".reason");
                fs::write(&name, format!("{reason}\n"))
                    .with_context(|| format!("writing {}", PathBuf::from(&name).display()))
            }),
        };
        if let Err(e) = result {
            tracing::error!("{e:#}");
        }
        if let Settle::Processed(path) | Settle::Rejected(path, _) = settle {
            self.release(path);
        }
    }
}

/// Moves `path` into `dir`, adding `.1`, `.2`, ... when the name is taken there.
fn move_into(path: &Path, dir: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut target = dir.join(name);
    let mut n = 0;
    while target.exists() {
        n += 1;
        let mut numbered = name.to_os_string();
        numbered.push(format!(".{n}"));
        target = dir.join(numbered);
    }
    fs::rename(path, &target)
        .with_context(|| format!("moving {} to {}", path.display(), target.display()))?;
    Ok(target)
}
