#!/usr/bin/env bash
# Proves a `--features cuda` build on a GPU machine, with binaries built elsewhere: no Rust and
# no internet needed there. Prints a Markdown table (also written to OUT/gpu-check.md):
#   (a) ResNet-50 eval-mode outputs on the GPU against the CPU (relative error, top-1 agreement)
#   (b) a short training run on synthetic fingerprints, with the loss falling
#   (c) training images/s (ResNet-50, batch 24, 224x224), inference images/s in f32 and f16
#   (d) the same speeds for PyTorch/torchvision where `python3 -c 'import torch'` works there
#
#   scripts/gpu-check.sh [--cpu] [--bin DIR] [--out DIR]
#
#   --cpu      dry mode: everything on the CPU with a small network, so CI tests the script
#   --bin DIR  where `trainer` is (default target/release)
#   --out DIR  where the run, the JSON figures and the table go (default: a temporary folder)
#
# CUDA libraries: libcuda.so.1 comes from the driver; libcudart/libcublas/libcurand (CUDA 13
# for a build made with scripts/cuda-env.sh) are looked for in LD_LIBRARY_PATH, .cuda/ (made
# by scripts/cuda-env.sh), Python's nvidia-* packages and /usr/local/cuda. PYTHON picks the
# interpreter for the PyTorch figures (default python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=cuda
bin=$root/target/release
out=""
while [ $# -gt 0 ]; do
    case $1 in
        --cpu) mode=cpu ;;
        --bin) bin=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
trainer=$bin/trainer
[ -x "$trainer" ] || { echo "gpu-check: no trainer binary at $trainer (build it, or pass --bin DIR)" >&2; exit 1; }
if [ -z "$out" ]; then
    out=$(mktemp -d)
fi
mkdir -p "$out"
python=${PYTHON:-python3}

# A cuda build needs its libraries in either mode (ldd lists them).
dirs=("$root"/.cuda/venv/lib/python3*/site-packages/nvidia/cu13/lib)
if command -v "$python" >/dev/null; then
    while IFS= read -r d; do dirs+=("$d"); done < <("$python" - <<'EOF' 2>/dev/null || true
import glob, os, site
for s in site.getsitepackages():
    for d in sorted(glob.glob(os.path.join(s, "nvidia", "*", "lib"))):
        print(d)
EOF
)
fi
dirs+=(/usr/local/cuda/lib64)
for d in "${dirs[@]}"; do
    [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
if missing=$(ldd "$trainer" | grep "not found"); then
    echo "gpu-check: $trainer cannot find these libraries:" >&2
    echo "$missing" >&2
    echo "libcuda.so.1 comes with the NVIDIA driver; the others with the CUDA toolkit or pip's nvidia-* packages (see the README)" >&2
    exit 1
fi

if [ "$mode" = cuda ]; then
    device=cuda
    # The network and sizes of the issue: ResNet-50, 224x224, batch 24; inference at batch 32.
    bench=(--arch resnet50 --size 224 --batch 24 --infer-batch 32 --iters 10)
    synth=(--fingers 24 --impressions 8 --size 160)
    train=(--arch resnet18 --size 128 --epochs 6 --lr 1e-3)
    gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
    gpu=${gpu:-"unknown GPU (no nvidia-smi)"}
else
    device=cpu
    # Dry mode: the same steps, small enough for CI.
    bench=(--arch resnet18 --size 64 --batch 4 --infer-batch 2 --iters 1)
    synth=(--fingers 6 --impressions 6 --size 96)
    train=(--arch resnet18 --size 48 --epochs 3 --lr 1e-3)
    gpu="CPU (dry run: --cpu)"
fi
echo "gpu-check on $gpu; figures in $out" >&2

# (a) and (c): parity and speed of our binary.
"$trainer" bench --device "$device" "${bench[@]}" --f16 --parity --json "$out/ours.json"

# (b) a short training run on synthetic fingerprints.
rm -rf "$out/synth" "$out/run"
"$trainer" synth --out "$out/synth" "${synth[@]}"
"$trainer" train --data "$out/synth" --out "$out/run" --device "$device" --batch-size 24 \
    --impostors 0 --patience 0 --val-per-identity 1 --test-per-identity 1 "${train[@]}"

# (d) PyTorch, where the machine has it.
torch=""
if "$python" -c 'import torch, torchvision' 2>/dev/null; then
    "$python" "$root/scripts/torch_bench.py" --device "$device" "${bench[@]}" \
        --json "$out/torch.json" >/dev/null
    torch=$out/torch.json
else
    echo "gpu-check: no PyTorch/torchvision for $python: its column stays empty" >&2
fi

"$python" - "$out" "$gpu" "$torch" <<'EOF'
import json, pathlib, sys

out, gpu, torch_path = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
ours = json.loads((out / "ours.json").read_text())
torch = json.loads(pathlib.Path(torch_path).read_text()) if torch_path else None
losses = [json.loads(l)["train_loss"] for l in (out / "run" / "metrics.jsonl").read_text().splitlines() if l.strip()]
falling = len(losses) >= 2 and losses[-1] < losses[0]

def speed(key):
    a = ours.get(key)
    b = torch.get(key) if torch else None
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    ratio = f"{a / b:.2f}" if a and b else "-"
    return f"{fmt(a)} | {fmt(b)} | {ratio}"

shape = f"{ours['arch']}, {ours['size']}x{ours['size']}"
rows = [
    f"gpu-check on {gpu}" + (f"; {torch['runtime']}" if torch else "; no PyTorch here"),
    "",
    "| check | ours (candle) | PyTorch | ours / PyTorch |",
    "|---|---|---|---|",
    f"| (a) eval outputs vs CPU, {shape}: max relative error, top-1 agreement | "
    f"{ours['parity_max_rel_error']:.1e}, {100 * ours['parity_top1_agreement']:.0f}% | | |",
    f"| (b) training loss on synthetic prints, epoch 1 -> {len(losses)} | "
    f"{losses[0]:.3f} -> {losses[-1]:.3f} ({'falling' if falling else 'NOT falling'}) | | |",
    f"| (c) training images/s, {shape}, batch {ours['train_batch']} | {speed('train_images_per_s')} |",
    f"| (c) inference images/s f32, batch {ours['infer_batch']} | {speed('infer_f32_images_per_s')} |",
    f"| (c) inference images/s f16, batch {ours['infer_batch']} | {speed('infer_f16_images_per_s')} |",
]
table = "\n".join(rows)
print(table)
(out / "gpu-check.md").write_text(table + "\n")
ok = falling and ours["parity_max_rel_error"] <= 1e-2 and ours["parity_top1_agreement"] >= 0.99
if not ok:
    print("gpu-check: FAILED (parity or loss, see above)", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
