//! What happens to a scan file once its decision is out: moved to `processed/`, deleted, or
//! moved to `rejected/` with a `.reason` file. Until then the file is claimed, so that it is
//! never queued twice.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{At, IoError};
use fingerprint_common::config::{AfterDecision, SensorConfig};

use crate::job::Settle;
use crate::lock::lock;

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
    pub fn new(sensor: &SensorConfig) -> Result<Self, IoError> {
        let (processed, rejected) = (sensor.processed_dir(), sensor.rejected_dir());
        for dir in [&processed, &rejected] {
            fs::create_dir_all(dir).at("creating", dir)?;
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
        lock(&self.in_progress)
    }

    /// Moves or deletes a scan whose decision has been published. Errors are logged: the
    /// decision is out, and the file stays where it is (it will be judged again after a
    /// restart, never lost).
    pub fn settle(&self, settle: &Settle) {
        let result = match settle {
            Settle::Nothing => return,
            Settle::Processed(path) => match self.after {
                AfterDecision::Delete => fs::remove_file(path).at("deleting", path),
                AfterDecision::Move => move_into(path, &self.processed).map(drop),
            },
            Settle::Rejected(path, reason) => move_into(path, &self.rejected).and_then(|to| {
                let mut name = to.clone().into_os_string();
                name.push(".reason");
                fs::write(&name, format!("{reason}\n")).at("writing", Path::new(&name))
            }),
        };
        if let Err(e) = result {
            tracing::error!("{e}");
        }
        if let Settle::Processed(path) | Settle::Rejected(path, _) = settle {
            self.release(path);
        }
    }
}

/// Moves `path` into `dir`, adding `.1`, `.2`, ... when the name is taken there.
fn move_into(path: &Path, dir: &Path) -> Result<PathBuf, IoError> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))
        .at("moving", path)?;
    let mut target = dir.join(name);
    let mut n = 0;
    while target.exists() {
        n += 1;
        let mut numbered = name.to_os_string();
        numbered.push(format!(".{n}"));
        target = dir.join(numbered);
    }
    fs::rename(path, &target)
        .map_err(|e| io::Error::new(e.kind(), format!("to {}: {e}", target.display())))
        .at("moving", path)?;
    Ok(target)
}
