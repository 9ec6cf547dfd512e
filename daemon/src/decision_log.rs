//! Where decisions go without a broker: JSON lines on stdout or in a file.
//!
//! The decision log holds whole lines only: a write that fails part-way (a full disk) is cut
//! back off before anything else is written, and a file left with a partial last line (a
//! power cut) is repaired when it is opened. Every line parses, whatever happened.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::error::{At, IoError};
use fingerprint_common::Decision;

/// The file under a decision log: appends, cutting back, syncing. A trait so that tests can
/// make writes fail part-way, as a full disk does.
pub trait LogFile: Write + Send {
    /// Cuts the file back to `len` bytes.
    fn truncate_to(&mut self, len: u64) -> io::Result<()>;
    /// Returns once what was written is on disk.
    fn sync(&mut self) -> io::Result<()>;
}

impl LogFile for File {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// JSON-lines output of decisions.
pub enum DecisionLog {
    Stdout,
    File {
        path: PathBuf,
        file: Box<dyn LogFile>,
        /// Length of the whole lines in the file.
        len: u64,
        /// A failed write may have left part of a line that could not be cut off yet.
        torn: bool,
    },
}

impl DecisionLog {
    /// Opens `stdout` or a file (appending), cutting off a partial last line left by a crash.
    pub fn open(target: &str) -> Result<Self, IoError> {
        if target == "stdout" {
            return Ok(Self::Stdout);
        }
        let path = PathBuf::from(target);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .at("opening decision log", &path)?;
        let size = file.metadata().at("decision log", &path)?.len();
        let len = whole_lines_len(&mut file, size).at("reading decision log", &path)?;
        if len < size {
            file.set_len(len).at("repairing decision log", &path)?;
            tracing::warn!(
                path = %path.display(),
                "the decision log ended in a partial line ({} bytes, from an interrupted write): removed",
                size - len
            );
        }
        Ok(Self::over(path, Box::new(file), len))
    }

    /// A log over any file whose first `len` bytes are whole lines.
    pub fn over(path: PathBuf, file: Box<dyn LogFile>, len: u64) -> Self {
        Self::File {
            path,
            file,
            len,
            torn: false,
        }
    }

    /// Writes one decision as one line; returns once it is on disk (or handed to stdout). On
    /// error the file is as it was before.
    pub fn write(&mut self, decision: &Decision) -> Result<(), IoError> {
        let stdout = std::path::Path::new("stdout");
        let target = match self {
            Self::Stdout => stdout,
            Self::File { path, .. } => path.as_path(),
        };
        let mut line = serde_json::to_vec(decision)
            .map_err(io::Error::other)
            .at("serialising a decision for", target)?;
        line.push(b'\n');
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)
                    .and_then(|()| out.flush())
                    .at("writing decisions to", stdout)?;
            }
            Self::File {
                path,
                file,
                len,
                torn,
            } => {
                if *torn {
                    file.truncate_to(*len)
                        .at("cutting a partial line off decision log", path)?;
                    *torn = false;
                }
                if let Err(e) = file.write_all(&line).and_then(|()| file.sync()) {
                    // Part of the line may be in the file: cut it off now, or before the next
                    // write, so that no line is ever appended to half of another.
                    *torn = file.truncate_to(*len).is_err();
                    return Err(IoError::new("writing decision log", path, e));
                }
                *len += line.len() as u64;
            }
        }
        Ok(())
    }
}

/// Length of the file's prefix that ends with its last newline (0 when it has none).
fn whole_lines_len(file: &mut File, size: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = size;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;
    use fingerprint_common::Verdict;
    use std::fs;
    use std::sync::{Arc, Mutex};

    fn decision(scan_id: &str) -> Decision {
        crate::test_support::decision(scan_id, Verdict::Deny, None)
    }

    /// A file in memory that takes `room` more bytes, then fails as a full disk does (after
    /// writing what fitted), and whose truncation can be made to fail too.
    #[derive(Clone, Default)]
    struct Disk(Arc<Mutex<DiskState>>);

    #[derive(Default)]
    struct DiskState {
        bytes: Vec<u8>,
        room: Option<usize>,
        truncate_fails: bool,
    }

    impl Disk {
        fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
            crate::lock::lock(&self.0)
        }

        fn lines(&self) -> Vec<Decision> {
            let bytes = self.state().bytes.clone();
            assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "a partial line");
            bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).expect("every line parses"))
                .collect()
        }
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.state();
            let n = s.room.map_or(buf.len(), |room| room.min(buf.len()));
            if n == 0 && !buf.is_empty() {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            s.bytes.extend_from_slice(&buf[..n]);
            if let Some(room) = &mut s.room {
                *room -= n;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl LogFile for Disk {
        fn truncate_to(&mut self, len: u64) -> io::Result<()> {
            let mut s = self.state();
            if s.truncate_fails {
                return Err(io::Error::other("truncate refused"));
            }
            let freed = s.bytes.len().saturating_sub(len as usize);
            s.bytes.truncate(len as usize);
            if let Some(room) = &mut s.room {
                *room += freed;
            }
            Ok(())
        }

        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_that_fills_the_disk_leaves_only_whole_lines() {
        let disk = Disk::default();
        let mut log = DecisionLog::over("log".into(), Box::new(disk.clone()), 0);
        log.write(&decision("a")).expect("room");
        // Room for half a line: the write fails, and the half line is cut off again.
        disk.state().room = Some(40);
        let error = log.write(&decision("b")).expect_err("disk full");
        assert!(format!("{error:#}").contains("log"), "{error:#}");
        assert_eq!(disk.lines(), vec![decision("a")]);
        // Space freed: the same decision goes in whole, after the first one.
        disk.state().room = None;
        log.write(&decision("b")).expect("room again");
        log.write(&decision("c")).expect("room");
        let ids: Vec<String> = disk.lines().into_iter().map(|d| d.scan_id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn a_partial_line_that_could_not_be_cut_off_is_cut_before_the_next_write() {
        let disk = Disk::default();
        let mut log = DecisionLog::over("log".into(), Box::new(disk.clone()), 0);
        log.write(&decision("a")).expect("room");
        {
            let mut s = disk.state();
            s.room = Some(10);
            s.truncate_fails = true;
        }
        assert!(log.write(&decision("b")).is_err());
        // Left torn on disk for now ...
        assert!(!disk.state().bytes.ends_with(b"\n"));
        {
            let mut s = disk.state();
            s.room = None;
            s.truncate_fails = false;
        }
        // ... and cut off before anything else is appended.
        log.write(&decision("c")).expect("room");
        let ids: Vec<String> = disk.lines().into_iter().map(|d| d.scan_id).collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn opening_a_log_cuts_off_a_partial_last_line() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("decisions.jsonl");
        let mut whole = serde_json::to_vec(&decision("a"))?;
        whole.push(b'\n');
        let mut torn = whole.clone();
        torn.extend_from_slice(br#"{"scan_id":"b","sour"#);
        fs::write(&path, &torn)?;
        let mut log = DecisionLog::open(&path.display().to_string())?;
        assert_eq!(fs::read(&path)?, whole);
        log.write(&decision("c"))?;
        let text = fs::read_to_string(&path)?;
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Decision>(l).map(|d| d.scan_id))
            .collect::<Result<_, _>>()?;
        assert_eq!(ids, ["a", "c"]);
        // A file of one partial line is emptied; an empty one stays empty.
        fs::write(&path, b"{\"scan")?;
        drop(DecisionLog::open(&path.display().to_string())?);
        assert!(fs::read(&path)?.is_empty());
        Ok(())
    }
}
