#!/usr/bin/env bash
# Trains and tests on the real FVC2002 prints in ../shared/datasets (not part of the project):
# DB1_B, DB2_B and DB3_B combined (30 fingers x 8 impressions; per finger 4 test, 1 validation,
# 3 training impressions, seed 0), once from scratch and once with a frozen backbone.
# Usage: scripts/fvc-baseline.sh [OUT_DIR]   (default runs/fvc). About an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fvc}
data=../shared/datasets/fvc2002
[ -d "$data/DB1_B" ] || { echo "no FVC2002 data at $data" >&2; exit 1; }
cargo build --release -p trainer
trainer=target/release/trainer
sets=(--data "$data/DB1_B" --data "$data/DB2_B" --data "$data/DB3_B")
# --impostors 0: every finger trained, as when the README table was measured.
common=(--arch resnet18 --size 112 --batch-size 16 --seed 0 --impostors 0)

# From scratch: the whole network trains (no ImageNet weights offline).
"$trainer" train "${sets[@]}" "${common[@]}" --out "$out/scratch" --lr 3e-4 --epochs 40 --patience 15
# Feature extraction: the backbone stays as initialised (random here, ImageNet where available).
"$trainer" train "${sets[@]}" "${common[@]}" --out "$out/frozen" --freeze-backbone --lr 1e-3 --epochs 100 --patience 30
