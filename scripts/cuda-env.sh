#!/usr/bin/env bash
# Sets up what `cargo build --features cuda` needs on a machine without CUDA installed or a
# GPU: nvcc, the CUDA headers and the CUDA libraries from PyPI in a local prefix, plus a stub
# libcuda.so for the linker (the real one comes with the GPU driver at run time).
#
#   source scripts/cuda-env.sh            # creates .cuda/ on first use, then exports
#   cargo build --release --features cuda -p fingerprintd -p trainer
#
# Exports PATH (nvcc), CUDA_ROOT, CUDARC_CUDA_VERSION, CUDA_COMPUTE_CAP (default 87: Jetson
# Orin; 90: H100), LIBRARY_PATH and RUSTFLAGS' link search path.
# Sourced: no `set -e` here, it would close the caller's shell on the first error.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${CUDA_PREFIX:-$root/.cuda}
version=${CUDA_PIP_VERSION:-13.0}
if [ ! -x "$prefix/venv/bin/python" ]; then
    python3 -m venv "$prefix/venv" || return 1
    "$prefix/venv/bin/pip" install -q \
        "nvidia-cuda-nvcc==$version.*" "nvidia-cuda-crt==$version.*" \
        "nvidia-cuda-runtime==$version.*" "nvidia-cuda-nvrtc==$version.*" \
        "nvidia-cuda-cccl==$version.*" "nvidia-nvvm==$version.*" \
        "nvidia-cublas==$version.*" "nvidia-curand" || return 1
fi
nv=$(echo "$prefix"/venv/lib/python3*/site-packages/nvidia/cu13)
export CUDA_ROOT="$nv"
export PATH="$nv/bin:$PATH"
export CUDARC_CUDA_VERSION="${version%%.*}0${version#*.}0"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-87}
# The linker wants unversioned names and a libcuda; the stub only satisfies the link.
lib="$prefix/lib"
mkdir -p "$lib"
for so in "$nv"/lib/*.so.*; do
    base=$(basename "$so")
    ln -sf "$so" "$lib/${base%%.so.*}.so"
done
if [ ! -f "$lib/libcuda.so" ]; then
    # Every driver function cudarc declares, as an empty function: enough for the linker,
    # never called (the soname makes the binary load the driver's libcuda.so.1).
    echo "building the libcuda.so link stub" >&2
    (cd "$root" && cargo fetch -q)
    grep -hoE '^\s+fn cu[A-Za-z0-9_]+\(' "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs \
        | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u \
        | sed 's/.*/int &(void) { return 0; }/' > "$lib/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/libcuda.so" "$lib/cuda_stub.c" \
        || return 1
fi
export LIBRARY_PATH="$lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$lib"
echo "CUDA $version from PyPI in $prefix: nvcc $(command -v nvcc), compute capability $CUDA_COMPUTE_CAP" >&2
