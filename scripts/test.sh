#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Tests make their own data and weights:
# no dataset, network or GPU is needed. Release mode: the training tests need candle at full
# speed, and the demo shares the build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release "$@"
# The vendored, faster fprint-mindtct (vendor/README.md): its own tests, among them every stage
# compared with NIST's C MINDTCT on the crate's corpus. Its code is not ours to lint.
env -u RUSTC_WORKSPACE_WRAPPER cargo test --release --target-dir target \
    --manifest-path vendor/fprint-mindtct/Cargo.toml --features unstable-diagnostics
