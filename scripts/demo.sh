#!/usr/bin/env bash
# The README's first command: builds trainer and fingerprintd (release) and runs `trainer demo`,
# the whole system end to end on synthetic prints (no dataset, broker or GPU). Arguments go to
# `trainer demo` (see `target/release/trainer demo --help`), e.g. --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p trainer -p fingerprintd
exec target/release/trainer demo --fingerprintd target/release/fingerprintd "$@"
