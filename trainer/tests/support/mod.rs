//! Running the `trainer` binary from integration tests.

use std::process::Command;

use anyhow::{ensure, Context, Result};

/// The `trainer` binary built for these tests.
pub fn trainer_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

/// Runs `command`, fails with its stderr unless it succeeds, and returns its stdout.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}
