#!/usr/bin/env bash
# Checks that the cuda feature compiles on a machine without CUDA or a GPU: nvcc and CUDA 13
# from PyPI (scripts/cuda-env.sh, about 1.2 GB in .cuda/), then the libraries of both binaries
# (`--lib`: every CUDA code path and candle's kernels) in the main target directory, so that
# every crate without CUDA code is shared with the CPU release build (RUSTFLAGS, which only
# the link needs, would change them all). Linking is left to a machine with CUDA.
#
# Most of the time is nvcc on candle's kernels: compiled here without optimisation
# (NVCC_APPEND_FLAGS; nothing runs them), about 7 minutes on 2 cores instead of 12 to 16.
# scripts/cuda-env.sh alone, for a build that runs on a GPU, keeps nvcc's -O3.
#
# CI runs it only when `.ci/inputs cuda` (Cargo.lock, the manifests, the toolchain, the CUDA
# scripts and every Rust file that mentions CUDA) differs from the hash of its last recorded
# pass: after a change to any of those, `.ci/record cuda` and commit .ci/verified/cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
(
    source scripts/cuda-env.sh || exit 1
    export NVCC_APPEND_FLAGS="-Xcicc -O0 -Xptxas -O0"
    RUSTFLAGS= cargo build --release --features cuda -p fingerprintd -p trainer --lib
)
echo "cuda build check passed"
