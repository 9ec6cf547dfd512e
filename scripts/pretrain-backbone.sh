#!/usr/bin/env bash
# Pretrains the fingerprint backbone on synthetic prints only (issue 21; no real print is
# used, so the weights' licence is the project's): `trainer synth` with sensor realism at
# full fingertip size, then `trainer train` with the input the network is used with
# (ResNet-18, ridge-scale 4.0 at 500 dpi, 112 px by default) from random weights (or INIT),
# ending with an int8 export. The backbone shipped in trainer/backbones/ was made so, on a GPU
# (trainer/backbones/README.md).
#
#   scripts/pretrain-backbone.sh OUT
#
# Environment (defaults in brackets):
#   BIN_DIR   where `trainer` is [target/release]
#   DEVICE    cpu, cuda or cuda:N [cpu]
#   FINGERS   synthetic fingers, 8 impressions each [1000]
#   EPOCHS    training epochs [8]
#   BUDGET_S  instead of EPOCHS: seconds this script may take in all; the epochs are then
#             worked out from a `trainer bench` of the network on DEVICE, and training is
#             stopped (Ctrl-C, saved, resumable) if it runs over
#   BATCH     batch size [64]; LR Adam's learning rate, cosine schedule [1e-3]
#   SEED      the synthetic fingers' seed [101]
#   SIZE      the network's input side [112]; SCAN the synthetic scans' side [256]. Synthetic
#             ridges are about 9 px apart, 4 in the input: a SCAN of 2.25 x SIZE fills it
#             (fine-tuned on real prints, 144 px inputs did better than 112: README)
#   INIT      where training starts: scratch (random weights), backbone (the shipped one,
#             to carry it on at another SIZE or on new fingers) or a checkpoint's path
#             (`--pretrained`) [scratch]
#
# OUT/synth holds the prints, OUT/run the run (best.safetensors: `--pretrained` for
# `trainer train`; model-int8.safetensors: the network for `trainer eval` and fingerprintd).
set -euo pipefail
out=${1:?usage: scripts/pretrain-backbone.sh OUT}
start=$(date +%s)
trainer=${BIN_DIR:-target/release}/trainer
device=${DEVICE:-cpu}
fingers=${FINGERS:-1000}
batch=${BATCH:-64}
lr=${LR:-1e-3}
seed=${SEED:-101}
size=${SIZE:-112}
scan=${SCAN:-256}
case ${INIT:-scratch} in
    scratch) init=(--from-scratch) ;;
    backbone) init=() ;;
    *) [ -f "$INIT" ] || { echo "pretrain-backbone: INIT $INIT is neither scratch, backbone nor a file" >&2; exit 1; }
       init=(--pretrained "$INIT") ;;
esac
impressions=8
impostors=30
copies=2
[ -x "$trainer" ] || { echo "pretrain-backbone: no trainer at $trainer (build it, or set BIN_DIR)" >&2; exit 1; }
mkdir -p "$out"

echo "== $fingers synthetic fingers x $impressions ($scan px, sensor realism, seed $seed)"
[ -f "$out/synth/.complete" ] || {
    rm -rf "$out/synth"
    "$trainer" synth --out "$out/synth" --fingers "$fingers" --impressions "$impressions" \
        --size "$scan" --realism sensor --seed "$seed"
    touch "$out/synth/.complete"
}

# Per epoch: every training finger's scans less one test and one validation scan, `copies`
# times each.
per_epoch=$(( (fingers - impostors) * (impressions - 2) * copies ))
if [ -n "${BUDGET_S:-}" ]; then
    "$trainer" bench --device "$device" --arch resnet18 --size "$size" --batch "$batch" \
        --infer-batch "$batch" --classes "$fingers" --iters 5 --json "$out/bench.json" >/dev/null
    left=$(( BUDGET_S - ($(date +%s) - start) ))
    # A training step as the bench times it, at 65% of that pace (augmentation, validation
    # and the end-of-run test and export take the rest).
    epochs=$(python3 -c "import json,sys; ips=json.load(open('$out/bench.json'))['train_images_per_s']; print(max(1, int(0.65 * $left * ips / $per_epoch)))")
    echo "== ${left} s left, $(python3 -c "import json; print(round(json.load(open('$out/bench.json'))['train_images_per_s']))") training images/s on $device: $epochs epochs of $per_epoch images"
    guard=(timeout -s INT "$(( left > 30 ? left - 30 : 1 ))")
else
    epochs=${EPOCHS:-8}
    guard=()
fi

rm -rf "$out/run"
"${guard[@]}" "$trainer" train --data "$out/synth" --out "$out/run" --device "$device" \
    --arch resnet18 --size "$size" --resize ridge-scale --ridge-period 4.0 --sensor-dpi 500 \
    --epochs "$epochs" --copies "$copies" --batch-size "$batch" --lr "$lr" --lr-schedule cosine \
    --no-flip --test-per-identity 1 --val-per-identity 1 --impostors "$impostors" --patience 0 \
    "${init[@]}" --export int8 --seed 0 || true
[ -f "$out/run/report.json" ] || echo "pretrain-backbone: stopped by the time budget before the run's end (trainer train --resume $out/run continues it)" >&2
[ -f "$out/run/model-int8.safetensors" ] || "$trainer" export "$out/run" --export int8
echo "== done in $(( $(date +%s) - start )) s: $out/run/best.safetensors"
