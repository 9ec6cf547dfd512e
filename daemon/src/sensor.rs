//! The sensor directory: scans already there at start, then each new file once it is
//! complete (closed after writing, or moved in).

use std::path::{Path, PathBuf};
use std::time::Instant;

use fingerprint_common::{read_limited, ScanError, ScanLimits, ScanSource, SourceKind};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::{At, IoError};
use crate::job::{Job, Origin, PayloadError, ScanRequest};
use crate::settle::Settler;

/// Dot-files and `*.tmp` / `*.part` are still being written (or are not scans).
pub fn is_candidate_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !(name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part"))
}

/// Watches the directory; stops when `jobs` closes or the returned guard is dropped.
pub struct SensorWatch {
    _watcher: notify::RecommendedWatcher,
    pub task: tokio::task::JoinHandle<()>,
}

/// Why the sensor directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("watching {}: {error}", path.display())]
    Watch { path: PathBuf, error: notify::Error },
}

/// Starts watching `dir` and queues every complete scan in it, oldest first.
pub fn watch(
    dir: &Path,
    limits: ScanLimits,
    settler: Settler,
    jobs: mpsc::Sender<Job>,
) -> Result<SensorWatch, SensorError> {
    // Absolute, as the watcher reports paths: one file, one name, one claim.
    let dir = &std::fs::canonicalize(dir).at("sensor directory", dir)?;
    let watch_error = |error| SensorError::Watch {
        path: dir.to_path_buf(),
        error,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .map_err(watch_error)?;
    // Watch before listing, so that no file falls between the two.
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    let existing = list_scans(dir)?;
    let dir = dir.to_path_buf();
    let task = tokio::spawn(async move {
        for path in existing {
            if !queue(&path, limits, &settler, &jobs).await {
                return;
            }
        }
        while let Some(event) = rx.recv().await {
            let paths = match event {
                Ok(event) => completed_paths(event),
                Err(e) => {
                    // Overflow or a watch error: look at the whole directory again.
                    tracing::warn!("sensor watch: {e}; listing {} again", dir.display());
                    list_scans(&dir).unwrap_or_default()
                }
            };
            for path in paths {
                if !queue(&path, limits, &settler, &jobs).await {
                    return;
                }
            }
        }
    });
    Ok(SensorWatch {
        _watcher: watcher,
        task,
    })
}

/// Paths of files the event says are complete.
fn completed_paths(event: notify::Event) -> Vec<PathBuf> {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            event.paths.into_iter().skip(1).collect()
        }
        EventKind::Other if event.need_rescan() => event
            .paths
            .first()
            .and_then(|d| list_scans(d).ok())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Regular files with candidate names, oldest first.
fn list_scans(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).at("listing", dir)? {
        let item = item.at("listing", dir)?;
        let Ok(meta) = item.metadata() else { continue };
        if meta.is_file() && is_candidate_name(&item.path()) {
            files.push((meta.modified().ok(), item.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Reads a scan and queues it; false once the queue is closed.
async fn queue(
    path: &Path,
    limits: ScanLimits,
    settler: &Settler,
    jobs: &mpsc::Sender<Job>,
) -> bool {
    if !is_candidate_name(path) || !path.is_file() || !settler.claim(path) {
        return true;
    }
    let received = Instant::now();
    let read_path = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_limited(&read_path, &limits)).await;
    let payload = match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(ScanError::Io { source, .. })) if source.kind() == std::io::ErrorKind::NotFound => {
            settler.release(path);
            return true;
        }
        Ok(Err(e)) => Err(PayloadError::Unreadable(e.to_string())),
        Err(e) => Err(PayloadError::Unreadable(format!("reading failed: {e}"))),
    };
    let scan_id = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tracing::debug!(scan_id, "scan from sensor directory");
    let job = Job {
        scan: ScanRequest {
            scan_id,
            source: ScanSource {
                kind: SourceKind::Directory,
                name: path.display().to_string(),
                sensor: None,
            },
            payload,
            claim: None,
            received,
        },
        origin: Origin::File(path.to_path_buf()),
    };
    jobs.send(job).await.is_ok()
}
