//! Decisions waiting to be published, kept on disk so that neither a broker outage nor a
//! restart loses one. Each entry is its own file, `<seq>.json`, written atomically
//! ([`write_atomically`]), so a power cut leaves either the whole entry or none.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use fingerprint_common::durable::write_atomically;
use fingerprint_common::Decision;
use serde::{Deserialize, Serialize};

use crate::job::Settle;

/// A decision and what to do with its scan once the decision is published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub decision: Decision,
    pub settle: Settle,
}

pub struct Outbox {
    dir: PathBuf,
    capacity: usize,
    next_seq: u64,
    entries: VecDeque<(u64, Entry)>,
}

#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {source}")]
pub struct OutboxError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError {
        path: path.to_path_buf(),
        source,
    }
}

impl Outbox {
    /// Opens (creating) the outbox in `dir` and loads what a previous run left. Half-written
    /// temporary files are removed; an unreadable entry is renamed `*.bad` and logged.
    pub fn open(dir: &Path, capacity: usize) -> Result<Self, OutboxError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut entries = Vec::new();
        for item in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = item.map_err(io_err(dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name else { continue };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) => entries.push((seq, entry)),
                Err(e) => {
                    tracing::error!(path = %path.display(), "unreadable outbox entry set aside: {e}");
                    let _ = fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        entries.sort_by_key(|(seq, _)| *seq);
        let next_seq = entries.last().map_or(0, |(seq, _)| seq + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            capacity,
            next_seq,
            entries: entries.into(),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Stores an entry durably. When the outbox is full the oldest entry is dropped and
    /// returned, so that its scan can still be settled.
    pub fn push(&mut self, entry: Entry) -> Result<Option<Entry>, OutboxError> {
        let seq = self.next_seq;
        let path = self.path(seq);
        let bytes = serde_json::to_vec(&entry).map_err(|e| OutboxError {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(&path, &bytes).map_err(io_err(&path))?;
        self.next_seq += 1;
        self.entries.push_back((seq, entry));
        if self.entries.len() > self.capacity {
            if let Some((old, entry)) = self.entries.pop_front() {
                let _ = fs::remove_file(self.path(old));
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Entries in order, with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, Entry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes a published entry and returns it.
    pub fn complete(&mut self, seq: u64) -> Option<Entry> {
        let index = self.entries.iter().position(|(s, _)| *s == seq)?;
        let (_, entry) = self.entries.remove(index)?;
        if let Err(e) = fs::remove_file(self.path(seq)) {
            tracing::warn!("could not remove published outbox entry {seq}: {e}");
        }
        Some(entry)
    }
}
