use anyhow::{bail, Result};

fn main() -> Result<()> {
    bail!("fingerprintd: the service itself is not built yet; only its scan intake exists")
}
