#!/usr/bin/env bash
# The CPU engine on aarch64 (a Jetson's or a Raspberry Pi's CPU): cross-builds the engine's
# tests (fingerprint-models: `fast` unit tests and tests/fast.rs) for aarch64-unknown-linux-gnu
# with Debian's cross gcc, warnings as errors, and runs them under qemu-user. They include
# `int8_logits_are_the_same_on_every_cpu`, whose expected int8 logits were computed on x86-64:
# an int8 model must answer to the bit the same on both, on the portable, neon, neon-dot and
# neon-i8mm kernels (qemu's max CPU has the dot product and the int8 matrix multiply), and
# each CPU must get its own best level (qemu's max, Cortex-A76 and Cortex-A72 CPUs). About 8 minutes on 2 cores from a clean
# target directory (6 of them the cross build), under 2 when it is warm.
# Needs rustup, and apt (as root or with sudo) when the cross gcc or qemu-user is missing.
#
# CI runs it only when `.ci/inputs aarch64` (common/, models/, Cargo.lock, the manifests, the
# toolchain and this script) differs from the hash of its last recorded pass: after a change
# to any of those, `.ci/record aarch64` and commit .ci/verified/aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
if ! rustup target add "$target" >/dev/null; then
    # The standard library for aarch64 comes from rustup's server, which a machine limited to
    # the package registries may not reach: say so loudly rather than fail the whole CI.
    # (.ci/record sets AARCH64_CHECK_REQUIRED=1: a skip is no pass to record.)
    echo "aarch64-check: SKIPPED: rustup could not install the $target standard library" >&2
    [ "${AARCH64_CHECK_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
runner="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu"
# qemu's `max` CPU has NEON, the dot-product and the int8 matrix-multiply instructions: the
# engine's tests must find and run the neon-i8mm kernels there (the test checks
# FINGERPRINT_EXPECT_KERNELS), and compare every level below it with the portable one.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner max"
export FINGERPRINT_EXPECT_KERNELS=neon-i8mm
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# Only the aarch64 build sees these flags (the host's artefacts are not rebuilt).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-D warnings"
cargo test --release --target "$target" -p fingerprint-models --lib fast
# A CPU with the dot product and no matrix multiply (a Raspberry Pi 5's, a Jetson Orin's) and
# one with neither: detection alone must pick their levels.
for cpu_level in cortex-a76:neon-dot cortex-a72:neon; do
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner ${cpu_level%%:*}" \
        FINGERPRINT_EXPECT_KERNELS="${cpu_level##*:}" \
        cargo test --release --target "$target" -p fingerprint-models --lib \
        fast::tests::aarch64_chooses_the_neon_kernels
done
# Candle's own f32 forward is slow under qemu (about 45 s of these tests' 113): the comparison with
# it runs on x86-64 only. Here NEON is compared with the portable path (the same code x86
# compares with candle) and int8 with the committed logits.
cargo test --release --target "$target" -p fingerprint-models --test fast -- \
    --skip fast_path_matches_candle_on_every_architecture
echo "aarch64 check passed"
