#!/usr/bin/env bash
# The method's closed set on real prints (README, "A backbone pretrained on a GPU"; issue 21):
# per finger 1 validation and 4 test scans (TEST=N for another count), the rest training
# (seed 0), a ResNet-18 fine-tuned at the ridge scale the shipped backbone learned (4 input
# pixels a ridge, windows of fixed physical size: --sensor-dpi 500, no mirrored prints), once
# from the shipped backbone and once from scratch, exported to int8 and tested in f32 and
# int8. Sets of ../shared/datasets (never part of the project): FVC2002 DB1-3_B together (30
# fingers, `fvc2002`) or each alone as FVC reports them (10 fingers of one sensor: `db1_b`,
# `db2_b`, `db3_b`), Neurotechnology's CrossMatch (51) and U.are.U (65) samples. Prints a
# Markdown table, with the door's minutiae matcher (MINDTCT + MCC, no network) on the same
# split beside the network; each run folder stays in OUT. PATCHES=1 adds the network on
# minutiae-centred patches on the same split (README, "Minutiae-centred patches": 64 px
# patches around each scan's 40 best minutiae, the shipped backbone fine-tuned on the
# training scans' patches, a test scan given the finger its patches' log-probabilities add
# up to most, a test scan without enough minutiae for patches a miss; f32 and int8): about
# 27 minutes for FVC2002.
# Usage: scripts/real-closedset.sh [OUT] (default runs/real-closedset); SIZE=144 (input side),
# SETS="fvc2002 crossmatch uareu", STARTS="backbone scratch" (or NAME:CHECKPOINT, a candidate
# backbone's `best.safetensors`, as --pretrained), DATASETS=..., BIN_DIR=... (binaries
# already built: no build here), EPOCHS=N (instead of each set's schedule: a dry run), TEST=N
# (test scans per finger, default 4, the method's; another count wants another OUT). On 2
# cores at SIZE=144: FVC2002 about 12 minutes a run, CrossMatch 15, U.are.U 25.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/real-closedset}
data=${DATASETS:-../shared/datasets}
size=${SIZE:-144}
sets=${SETS:-fvc2002 crossmatch uareu}
starts=${STARTS:-backbone scratch}
test=${TEST:-4}
[ -n "${BIN_DIR:-}" ] || cargo build --release -p trainer
trainer=${BIN_DIR:-target/release}/trainer
cutter=target/release/examples/minutiae_patches
[ "${PATCHES:-0}" != 1 ] || cargo build --release -p fingerprint-common --example minutiae_patches
mkdir -p "$out"
for set in $sets; do
    case $set in
        fvc2002) roots=(--data "$data/fvc2002/DB1_B" --data "$data/fvc2002/DB2_B" --data "$data/fvc2002/DB3_B")
                 schedule=(--epochs 30 --patience 10) ;;
        db1_b|db2_b|db3_b) roots=(--data "$data/fvc2002/${set^^}")
                 schedule=(--epochs 30 --patience 10) ;;
        crossmatch|uareu) roots=(--data "$data/neurotech/$set")
                 schedule=(--epochs 20 --patience 8) ;;
        *) echo "unknown set $set (fvc2002, db1_b, db2_b, db3_b, crossmatch, uareu)" >&2; exit 1 ;;
    esac
    [ -n "${EPOCHS:-}" ] && schedule=(--epochs "$EPOCHS" --patience 0)
    for start in $starts; do
        case $start in
            backbone) init=() ;; # the trainer's default for a resnet18 ridge-scale run
            scratch) init=(--from-scratch) ;;
            *:*) [ -f "${start#*:}" ] || { echo "no checkpoint ${start#*:}" >&2; exit 1; }
                 init=(--pretrained "${start#*:}"); start=${start%%:*} ;;
            *) echo "unknown start $start (backbone, scratch, NAME:CHECKPOINT)" >&2; exit 1 ;;
        esac
        case $start in *-*|"") echo "a start's name needs no '-' (the run folder's name is SET-START-SIZE)" >&2; exit 1 ;; esac
        run="$out/$set-$start-$size"
        [ -f "$run/export.json" ] && { echo "== $run done before"; continue; }
        rm -rf "$run"
        echo "== $run"
        "$trainer" train "${roots[@]}" --out "$run" --arch resnet18 --size "$size" \
            --resize ridge-scale --ridge-period 4.0 --sensor-dpi 500 --no-flip \
            --batch-size 16 --lr 3e-4 --seed 0 --impostors 0 "${schedule[@]}" \
            --test-per-identity "$test" --val-per-identity 1 \
            --export int8 "${init[@]}" > "$run.log" 2>&1 || { tail -n 20 "$run.log" >&2; exit 1; }
    done
    # The door's matcher on the same split (every start of a set splits alike): minutiae
    # alone, each test scan given the finger whose training scans match it best.
    minutiae="$out/$set.minutiae.json"
    if [ ! -s "$minutiae" ]; then
        "$trainer" eval --run "$run" --open-set --matcher minutiae --sensor-dpi 500 \
            --enroll-impressions 100 --json > "$minutiae" 2> "$out/$set.minutiae.log" \
            || { tail -n 20 "$out/$set.minutiae.log" >&2; rm -f "$minutiae"; exit 1; }
    fi
    patches="$out/$set.patches"
    if [ "${PATCHES:-0}" = 1 ] && [ ! -s "$patches.json" ]; then
        rm -rf "$patches"
        patch_schedule=(--epochs 12 --patience 4)
        [ -n "${EPOCHS:-}" ] && patch_schedule=(--epochs "$EPOCHS" --patience 0)
        # FVC2002 DB2_B's sensor is 569 dpi: its scans are resampled to 500 dpi (the other
        # sets are at 500 already) before minutiae are found and patches cut.
        { "$cutter" cut "$run/split.json" "$patches/data" DB2_B=569 \
            && "$trainer" train --data "$patches/data/train" --layout folders \
                --out "$patches/run" --arch resnet18 \
                --pretrained trainer/backbones/resnet18-synthetic.f16.safetensors \
                --size 64 --resize stretch --no-flip --max-rotation 10 --copies 2 \
                --batch-size 32 --lr 3e-4 --seed 0 --impostors 0 "${patch_schedule[@]}" \
                --test-per-identity 0 --val-per-identity 10 --export int8 \
            && "$trainer" predict --run "$patches/run" --top-k 100000 \
                "$patches"/data/test/*/*.png > "$patches/f32.predictions.json" \
            && "$trainer" predict --model "$patches/run/model-int8.safetensors" --top-k 100000 \
                "$patches"/data/test/*/*.png > "$patches/int8.predictions.json" \
            && echo "{\"f32\": $("$cutter" score "$patches/f32.predictions.json" "$run/split.json"), \"int8\": $("$cutter" score "$patches/int8.predictions.json" "$run/split.json")}" > "$patches.json.part" \
            && mv "$patches.json.part" "$patches.json"
        } > "$patches.log" 2>&1 || { tail -n 20 "$patches.log" >&2; exit 1; }
    fi
done
python3 - "$out" "$size" <<'PY'
import json, pathlib, sys
out, size = pathlib.Path(sys.argv[1]), sys.argv[2]
print(f"| set | start | input | test scans | top-1 f32 | top-1 int8 | best epoch | training | minutiae, same split | patches f32 / int8, same split |")
print("|---|---|---|---|---|---|---|---|---|---|")
for run in sorted(p for p in out.iterdir() if (p / "export.json").is_file()):
    report = json.loads((run / "report.json").read_text())
    export = json.loads((run / "export.json").read_text())
    top1 = {f["quantization"]: f["top1"] for f in export["formats"]}
    s, start, side = run.name.rsplit("-", 2)
    minutiae = out / f"{s}.minutiae.json"
    door = f"{100 * json.loads(minutiae.read_text())['rank1']:.1f}%" if minutiae.is_file() else ""
    patches = out / f"{s}.patches.json"
    if patches.is_file():
        p = json.loads(patches.read_text())
        patched = f"{100 * p['f32']['top1']:.1f}% / {100 * p['int8']['top1']:.1f}%"
    else:
        patched = ""
    print(f"| {s} | {start} | {side} px | {export['test_scans']} | {100 * top1['f32']:.1f}% "
          f"| {100 * top1['int8']:.1f}% | {report['best_epoch']} | {report['train_seconds'] / 60:.0f} min | {door} | {patched} |")
PY
