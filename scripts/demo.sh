#!/usr/bin/env bash
# The README's first command: builds trainer and fingerprintd (release) and runs `trainer demo`,
# the whole system end to end on synthetic prints (no dataset, broker or GPU). Arguments go to
# `trainer demo` (see `target/release/trainer demo --help`), e.g. --out DIR. BIN_DIR=DIR runs
# the binaries already in DIR instead of building (CI: those its test build made).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-}
if [ -z "$bin" ]; then
    cargo build --release -p trainer -p fingerprintd
    bin=target/release
fi
exec "$bin/trainer" demo --fingerprintd "$bin/fingerprintd" "$@"
