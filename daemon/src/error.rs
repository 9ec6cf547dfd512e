//! The error the library's file operations share: what was being done, to which path, and
//! why (as ripgrep's errors carry their path). Each stage has its own typed error on top of it;
//! `anyhow` stays in the binary.

use std::io;
use std::path::{Path, PathBuf};

/// An I/O failure, with the action and the path it concerned.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {error}", path.display())]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    pub error: io::Error,
}

impl IoError {
    pub fn new(action: &'static str, path: &Path, error: io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            error,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.error.kind()
    }
}

/// `std::fs::rename(a, b).at("moving", a)?`: an I/O result with its action and path.
pub trait At<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, IoError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, IoError> {
        self.map_err(|error| IoError::new(action, path, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_names_its_action_path_and_cause() {
        let missing = std::fs::read(Path::new("/nonexistent/scan.png"))
            .at("reading", Path::new("/nonexistent/scan.png"));
        let e = missing.expect_err("no such file");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let text = e.to_string();
        assert!(
            text.starts_with("reading /nonexistent/scan.png: "),
            "{text}"
        );
    }
}
