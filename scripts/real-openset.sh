#!/usr/bin/env bash
# The door on real prints, as a door sees them (README, "Real prints: the fused door"): on each
# real set of ../shared/datasets (FVC2002 DB1-3_B, Neurotechnology's CrossMatch and U.are.U
# samples), fingers split by a seeded shuffle into enrolled (half; 3 scans each enrolled, the
# others probed), calibration strangers (a quarter: the installer's folder of other people's
# scans for `fingerprintd calibrate`) and test strangers (the rest: never enrolled, same sensor,
# never seen by any calibration). Rows:
#   network   the network's templates (a ResNet-18 trained on synthetic prints only), threshold
#             calibrated on the calibration strangers (its own synthetic one lets strangers in)
#   minutiae  MINDTCT (fprint-pipeline) compared by Minutia Cylinder-Code, the shipped threshold
#             (no calibration)
#   fused     both, fusion and threshold fitted on the calibration strangers (fingerprintd calibrate)
#   fused, shipped   both, the shipped fusion and threshold (what a door does before calibration)
#   NIST      NIST's C tools, mindtct + bozorth3 (PyPI nbis-py 0.1.3, in a venv this script
#             makes), at 46: the BOZORTH3 threshold shipped before MCC, from the same real
#             impostor pairs
# Prints a Markdown table and leaves every JSON report in OUT. About 15 minutes on 2 cores,
# plus the network's training if MODEL does not exist (trainer/tests/openset.rs's recipe, ~12 min).
# Usage: scripts/real-openset.sh [OUT] (default runs/real-openset); MODEL=..., DATASETS=...,
# BIN_DIR=... (binaries already built, e.g. target/release: no build here)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/real-openset}
data=${DATASETS:-../shared/datasets}
model=${MODEL:-runs/openset-r18/model-int8.safetensors}
sets="fvc2002/DB1_B:500 fvc2002/DB2_B:569 fvc2002/DB3_B:500 neurotech/crossmatch:500 neurotech/uareu:500"
if [ -n "${BIN_DIR:-}" ]; then
    trainer=$BIN_DIR/trainer
else
    cargo build --release -p trainer
    trainer=target/release/trainer
fi
mkdir -p "$out"
if [ ! -f "$model" ]; then
    echo "== training the network on synthetic prints (no real print is used)"
    "$trainer" synth --out runs/openset-train --fingers 230 --impressions 8 --size 128 --seed 101
    "$trainer" train --data runs/openset-train --out "$(dirname "$model")" --arch resnet18 \
        --size 64 --epochs 4 --copies 3 --batch-size 32 --lr 1e-3 --lr-schedule cosine \
        --no-flip --test-per-identity 1 --val-per-identity 1 --impostors 30 --patience 0 \
        --export int8 --seed 0
fi
venv=${NBIS_VENV:-.nbis-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q nbis-py==0.1.3

for spec in $sets; do
    set_dir=${spec%%:*}
    dpi=${spec##*:}
    name=$(echo "$set_dir" | tr / -)
    src="$data/$set_dir"
    [ -d "$src" ] || { echo "no $src" >&2; exit 1; }
    split="$out/$name"
    rm -rf "$split" && mkdir -p "$split/enrolled" "$split/calibration" "$split/strangers"
    python3 scripts/openset_split.py "$src" "$split"
    echo "== $set_dir: $(ls "$split/enrolled" | wc -l) enrolled-finger scans, $(ls "$split/calibration" | wc -l) calibration, $(ls "$split/strangers" | wc -l) test strangers"
    common=(--open-set --enroll-data "$split/enrolled" --strangers "$split/strangers"
        --enroll-impressions 3 --sensor-dpi "$dpi" --json)
    "$trainer" eval --model "$model" "${common[@]}" --matcher network \
        --calibrate-strangers "$split/calibration" > "$split/network.json"
    "$trainer" eval "${common[@]}" --matcher minutiae > "$split/minutiae.json"
    "$trainer" eval --model "$model" "${common[@]}" --matcher fused \
        --calibrate-strangers "$split/calibration" > "$split/fused.json"
    "$trainer" eval --model "$model" "${common[@]}" --matcher fused > "$split/fused-shipped.json"
    "$venv/bin/python" scripts/minutiae_baseline.py --enroll "$split/enrolled" \
        --strangers "$split/strangers" --threshold "$(python3 -c 'print(46)')" > "$split/nist.json"
done

python3 - "$out" $sets <<'PY'
import json, sys
out, sets = sys.argv[1], sys.argv[2:]
rows = [("network", "network (ResNet-18, synthetic-trained), door-calibrated"),
        ("minutiae", "minutiae (ours: MINDTCT + MCC), shipped threshold"),
        ("fused", "fused, door-calibrated"),
        ("fused-shipped", "fused, shipped (before calibration)"),
        ("nist", "NIST mindtct + bozorth3 (C), BOZORTH3 threshold 46")]
print("| set (real) | matcher | enrolled / test strangers | rank-1 | EER | FNMR at FMR 1% | FNMR at FMR 0.1% | threshold | true accepts | false accepts (strangers' scans) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for spec in sets:
    name = spec.split(":")[0].replace("/", "-")
    for kind, label in rows:
        r = json.load(open(f"{out}/{name}/{kind}.json"))
        print(f"| {spec.split(':')[0]} | {label} | {r['enrolled_identities']} / {r['impostor_probes']} "
              f"| {100*r['rank1']:.1f}% | {100*r['eer']:.1f}% | {100*r['fnmr_at_fmr_1pct']:.1f}% "
              f"| {100*r['fnmr_at_fmr_0_1pct']:.1f}% | {r['threshold']:.3g} "
              f"| {100*r['true_accept_rate']:.1f}% | {r['false_accepts']} ({100*r['false_accept_rate']:.1f}%) |")
PY
