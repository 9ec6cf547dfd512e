//! Writing a file so that a crash or power cut leaves either the old contents or the new ones.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Reads a JSON file written with [`write_atomically`]; `Ok(None)` when there is none. A file
/// that does not parse is an `InvalidData` error carrying the parser's message.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `<path>.tmp`, flushes it to disk, renames it over `path`, and flushes
/// the directory so the rename itself is durable. A stale `<path>.tmp` from an interrupted
/// write is overwritten. The new file's modification time is strictly later than the one it
/// replaces, even within one tick of the file system's coarse clock, so a reader watching the
/// modification time sees every replacement.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let previous = fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    let now = SystemTime::now();
    let modified = match previous {
        Some(p) if p >= now => p + Duration::from_micros(1),
        _ => now,
    };
    file.set_modified(modified)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}
