#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Tests make their own data and weights:
# no dataset, network or GPU is needed. Release mode: the training tests need candle at full
# speed, and the demo shares the build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release "$@"
