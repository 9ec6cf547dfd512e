#!/usr/bin/env bash
# fingerprintd's engine against ONNX Runtime and OpenVINO on the same weights, in one run:
# median batch-1 latency, images/s at batch 8, resident memory, and each one's ratio to ours.
#
#   scripts/bench-inference.sh [--arch resnet50] [--size 224] [--classes 148] [--runs 30]
#                              [--rounds 2] [--pretrained CKPT] [--out DIR]
#                              [--levels "avx2 avx-vnni avx512-vnni amx"]
#
# One network (seeded, or --pretrained) is exported three ways by `trainer export --init`:
# f32 and int8 for fingerprintd, ONNX (f32) for the others; ONNX Runtime's static int8
# (QDQ, per-channel weights, u8 activations) is made from that ONNX file and run by both
# peers. OpenVINO's f32 row runs at f32 precision (INFERENCE_PRECISION_HINT; its default may
# be bf16), with a labelled bf16 row beside it on CPUs that have bf16. Every runtime gets the same input (formula grey scans, normalised as the service's
# preprocessing does: fingerprint_models::formula::grey_scans); the table also shows how far each one's
# logits are from ours in f32 (largest difference relative to the largest logit), the CPU's
# vector features and the kernels each runtime ran. FINGERPRINT_KERNELS=avx2 (or another
# level) runs ours as on a CPU with only that level, and OpenVINO too (ONEDNN_MAX_CPU_ISA, set
# here to the same ISA: AVX2, AVX2_VNNI, AVX512_CORE_VNNI); ONNX Runtime's MLAS cannot be
# capped, so its rows always use the whole CPU (the table says so). --levels runs ours and
# OpenVINO, int8 and f32, at each listed level in turn: one table of the CPU classes this
# CPU can stand in for. Every runtime runs --rounds times (in turn); the round with its
# lowest median is reported.
# The peers come from PyPI, in a venv this script makes (.bench-venv, or BENCH_VENV).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
arch=resnet50
size=224
classes=148
runs=30
rounds=2
pretrained=()
out=""
levels=""
while [ $# -gt 0 ]; do
    case $1 in
        --arch) arch=$2; shift ;;
        --size) size=$2; shift ;;
        --classes) classes=$2; shift ;;
        --runs) runs=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --pretrained) pretrained=(--pretrained "$2"); shift ;;
        --out) out=$2; shift ;;
        --levels) levels=$2; shift ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-inference: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
out=${out:-$(mktemp -d)}
mkdir -p "$out"
venv=${BENCH_VENV:-$root/.bench-venv}
if [ ! -x "$venv/bin/python" ]; then
    echo "bench-inference: making $venv (onnxruntime, openvino from PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "onnxruntime==1.32.*" "openvino==2026.4.*" onnx numpy
fi
py=$venv/bin/python

(cd "$root" && cargo build --release -q -p trainer -p fingerprintd)
bin=$root/target/release
for format in f32 int8 onnx; do
    ext=safetensors
    [ "$format" = onnx ] && ext=onnx
    "$bin/trainer" export --init "$arch" --classes "$classes" --size "$size" \
        "${pretrained[@]}" --export "$format" --out "$out/model-$format.$ext" >&2
done
"$py" "$root/scripts/bench_runtimes.py" quantize --model "$out/model-onnx.onnx" \
    --out "$out/model-onnx-int8.onnx" 2>/dev/null

# oneDNN's cap (OpenVINO's convolutions) for one of our kernel levels: the same instructions.
# amx and the default: none (the whole CPU).
onednn_isa() {
    case $1 in
        portable) echo SSE41 ;;
        avx2) echo AVX2 ;;
        avx-vnni) echo AVX2_VNNI ;;
        avx512-vnni) echo AVX512_CORE_VNNI ;;
        *) echo "" ;;
    esac
}

if [ -n "$levels" ]; then
    for round in $(seq "$rounds"); do
        for level in $levels; do
            isa=$(onednn_isa "$level")
            for format in int8 f32; do
                FINGERPRINT_KERNELS=$level "$bin/fingerprintd" bench \
                    "$out/model-$format.safetensors" --runs "$runs" --json \
                    > "$out/level-$level-ours-$format.$round.json"
            done
            ONEDNN_MAX_CPU_ISA=$isa "$py" "$root/scripts/bench_runtimes.py" run \
                --runtime openvino --model "$out/model-onnx-int8.onnx" --runs "$runs" \
                > "$out/level-$level-openvino-int8.$round.json"
            ONEDNN_MAX_CPU_ISA=$isa "$py" "$root/scripts/bench_runtimes.py" run \
                --runtime openvino --precision f32 --model "$out/model-onnx.onnx" --runs "$runs" \
                > "$out/level-$level-openvino-f32.$round.json"
        done
    done
    "$py" - "$out" "$arch" "$size" "$levels" <<'EOF'
import json, os, pathlib, sys

out, arch, size, levels = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split()


def load(name):
    rounds = [json.loads(p.read_text()) for p in sorted(out.glob(f"{name}.*.json"))]
    return min(rounds, key=lambda d: d["latency_ms_median"])


def figures(d):
    return f"{d['latency_ms_median']:.1f} ms / {d['images_per_second']:.0f}"


def ratios(peer, ours):
    # Batch 1: the peer's time over ours; batch 8: ours images/s over the peer's. Above 1
    # both ways: ours is faster.
    return (f"{peer['latency_ms_median'] / ours['latency_ms_median']:.2f}x / "
            f"{ours['images_per_second'] / peer['images_per_second']:.2f}x")


cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rounds = len(list(out.glob(f"level-{levels[0]}-ours-int8.*.json")))
print(f"{arch} {size}x{size} on {cpu} ({os.cpu_count()} cores), best of {rounds} rounds: ours "
      "(FINGERPRINT_KERNELS) and OpenVINO (ONEDNN_MAX_CPU_ISA) held to the same instructions at "
      "each level; median batch-1 latency / images/s at batch 8; the ratios are ours' speed "
      "over OpenVINO's at batch 1 / batch 8 (above 1: ours faster)")
print()
print("| level | ours int8 | OpenVINO int8 | OpenVINO's convolutions | int8 ratio | ours f32 | OpenVINO f32 | f32 ratio |")
print("|---|---|---|---|---|---|---|---|")
for level in levels:
    o8, v8 = load(f"level-{level}-ours-int8"), load(f"level-{level}-openvino-int8")
    o32, v32 = load(f"level-{level}-ours-f32"), load(f"level-{level}-openvino-f32")
    # What ours ran (a level this CPU lacks falls back to its best, and says so).
    ran = o8["backend"].split(", ")[-1].removesuffix(" kernels")
    shown = level if ran == level else f"{level} (ran {ran})"
    print(f"| {shown} | {figures(o8)} | {figures(v8)} | {v8['kernels']} | {ratios(v8, o8)} | "
          f"{figures(o32)} | {figures(v32)} | {ratios(v32, o32)} |")
EOF
    echo "figures in $out" >&2
    exit 0
fi

# FINGERPRINT_KERNELS holds ours to a level: OpenVINO is held to the same instructions.
peer_isa=$(onednn_isa "${FINGERPRINT_KERNELS:-}")
# A bf16 row left in --out by an earlier run without a cap would join the table.
rm -f "$out"/openvino-bf16.*.json

# Each in its own process, one after the other (two cores: nothing else running), in
# --rounds rounds; each runtime's round with the lowest median counts (a shared machine's
# speed drifts; every runtime gets the same chances).
for round in $(seq "$rounds"); do
    "$bin/fingerprintd" bench "$out/model-f32.safetensors" --runs "$runs" --json \
        > "$out/ours-f32.$round.json"
    "$bin/fingerprintd" bench "$out/model-int8.safetensors" --runs "$runs" --json \
        > "$out/ours-int8.$round.json"
    "$bin/fingerprintd" bench "$out/model-f32.safetensors" --backend candle --runs "$runs" \
        --json > "$out/candle-f32.$round.json"
    "$py" "$root/scripts/bench_runtimes.py" run --runtime ort \
        --model "$out/model-onnx.onnx" --runs "$runs" > "$out/ort-f32.$round.json"
    # OpenVINO's f32 row at f32 precision: by default it computes in bf16 where the CPU has it.
    ONEDNN_MAX_CPU_ISA=$peer_isa "$py" "$root/scripts/bench_runtimes.py" run --runtime openvino \
        --precision f32 --model "$out/model-onnx.onnx" --runs "$runs" > "$out/openvino-f32.$round.json"
    # bf16 only at the whole CPU's level (the caps below it have no bf16 instructions).
    if [ -z "$peer_isa" ] && grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
        "$py" "$root/scripts/bench_runtimes.py" run --runtime openvino --precision bf16 \
            --model "$out/model-onnx.onnx" --runs "$runs" > "$out/openvino-bf16.$round.json"
    fi
    "$py" "$root/scripts/bench_runtimes.py" run --runtime ort \
        --model "$out/model-onnx-int8.onnx" --runs "$runs" > "$out/ort-int8.$round.json"
    ONEDNN_MAX_CPU_ISA=$peer_isa "$py" "$root/scripts/bench_runtimes.py" run --runtime openvino \
        --model "$out/model-onnx-int8.onnx" --runs "$runs" > "$out/openvino-int8.$round.json"
done

"$py" - "$out" "$arch" "$size" <<'EOF'
import json, pathlib, platform, sys

import numpy as np

out, arch, size = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def load(name):
    rounds = [json.loads(p.read_text()) for p in sorted(out.glob(f"{name}.*.json"))]
    return min(rounds, key=lambda d: d["latency_ms_median"])


rows = [
    (f"fingerprintd f32 (ours, {load('ours-f32')['backend']})", "ours-f32", "ours-f32"),
    (f"fingerprintd int8 (ours, {load('ours-int8')['backend']})", "ours-int8", "ours-int8"),
    ("candle f32 (fingerprintd --backend candle)", "candle-f32", "ours-f32"),
]
ort, ov = load("ort-f32")["runtime"], load("openvino-f32")["runtime"].split("-")[0].split(" (")[0]
def isa(name):
    d = load(name)
    return d["kernels"] + (f", capped at {d['isa_cap']}" if d.get("isa_cap") else "")


rows += [
    (f"{ort} f32 (MLAS: not capped)", "ort-f32", "ours-f32"),
    (f"{ort} int8 (QDQ; MLAS: not capped)", "ort-int8", "ours-int8"),
    (f"{ov} f32 (f32 precision hint; {isa('openvino-f32')})", "openvino-f32", "ours-f32"),
    (f"{ov} int8 (QDQ; {isa('openvino-int8')})", "openvino-int8", "ours-int8"),
]
if list(out.glob("openvino-bf16.*.json")):
    rows.insert(-1, (f"{ov} bf16 (the f32 model; not f32 arithmetic)", "openvino-bf16", "ours-f32"))
reference = np.array(load("ours-f32")["logits"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
import os
rounds = len(list(out.glob("ours-f32.*.json")))
print(f"{arch} {size}x{size}, batch 1 and 8, on {cpu} ({os.cpu_count()} cores), best of {rounds} rounds; memory is the whole process's")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith(("flags", "Features"))), [])
wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimddp", "i8mm")
print("CPU features: " + (", ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)))
print()
print("| runtime | median batch-1 latency | images/s at batch 8 | resident memory | latency vs ours | logits vs ours f32 |")
print("|---|---|---|---|---|---|")
for label, name, ours_name in rows:
    d, ours = load(name), load(ours_name)
    diff = np.abs(np.array(d["logits"]) - reference).max() / np.abs(reference).max()
    print(
        f"| {label} | {d['latency_ms_median']:.1f} ms | {d['images_per_second']:.1f} | "
        f"{d['rss_bytes'] / 1e6:.0f} MB | {d['latency_ms_median'] / ours['latency_ms_median']:.2f}x | {diff:.1e} |"
    )
int8 = load("ours-int8")
limit = 1.5 * int8["file_bytes"] + 40e6
print()
print(f"fingerprintd int8: file {int8['file_bytes'] / 1e6:.1f} MB, resident {int8['rss_bytes'] / 1e6:.0f} MB "
      f"(limit 1.5 x file + 40 MB = {limit / 1e6:.0f} MB): {'within' if int8['rss_bytes'] <= limit else 'OVER'}")
EOF
echo "figures in $out" >&2
