#!/usr/bin/env bash
# Open-set figures on real prints (README, "Unknown fingers"): a ResNet-18 trained on FVC2002
# DB1_B + DB2_B (2 of their fingers held out to calibrate the threshold), then DB3_B's fingers
# enrolled from 3 impressions each and identified from the other 5, DB4_B's fingers offered as
# never-enrolled strangers; beside it, NIST's mindtct + bozorth3 (PyPI nbis-py 0.1.3, in a venv
# this script makes) on the same split. Needs ../shared/datasets/fvc2002; about 20 minutes on
# 2 cores. Usage: scripts/fvc-openset.sh [OUT] (default runs/fvc-openset).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fvc-openset}
data=${FVC_DATA:-../shared/datasets/fvc2002}
for db in DB1_B DB2_B DB3_B DB4_B; do
    [ -d "$data/$db" ] || { echo "no FVC2002 $db at $data" >&2; exit 1; }
done
cargo build --release -p trainer
trainer=target/release/trainer
mkdir -p "$out"

if [ ! -f "$out/run/report.json" ]; then
    "$trainer" train --data "$data/DB1_B" --data "$data/DB2_B" --out "$out/run" \
        --arch resnet18 --size 112 --batch-size 16 --seed 0 --impostors 2 \
        --test-per-identity 2 --val-per-identity 1 --lr 3e-4 --epochs 25 --patience 10 \
        --copies 2 --export int8
fi
# Two protocols: strangers from another sensor (DB4_B), and strangers from the same sensor
# (DB3_B's fingers 106-110, with 101-105 enrolled): a network can tell sensors apart, so the
# first flatters its false-accept figure.
same="$out/db3-split"
rm -rf "$same" && mkdir -p "$same/enrolled" "$same/strangers"
for f in "$data"/DB3_B/10[1-5]_*; do ln -s "$(realpath "$f")" "$same/enrolled/"; done
for f in "$data"/DB3_B/10[6-9]_* "$data"/DB3_B/110_*; do ln -s "$(realpath "$f")" "$same/strangers/"; done

venv=${NBIS_VENV:-.nbis-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q nbis-py==0.1.3

run_protocol() { # name enrolled strangers
    "$trainer" eval --model "$out/run/model-int8.safetensors" --open-set \
        --enroll-data "$2" --strangers "$3" --enroll-impressions 3 \
        --det "$out/det-cnn-$1.png" --json > "$out/cnn-$1.json"
    "$venv/bin/python" scripts/minutiae_baseline.py --enroll "$2" --strangers "$3" \
        --calibrate-enroll "$data/DB1_B" --calibrate-impostors "$data/DB2_B" \
        > "$out/minutiae-$1.json"
}
run_protocol db4 "$data/DB3_B" "$data/DB4_B"
run_protocol db3 "$same/enrolled" "$same/strangers"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print("| strangers | matcher | enrolled / strangers | rank-1 | EER | FNMR at FMR 1% | FNMR at FMR 0.1% | true accepts | misidentified | false accepts (never enrolled) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for proto, label in [("db4", "DB4_B (other sensor)"), ("db3", "DB3_B 106-110 (same sensor)")]:
    for kind, name in [("cnn", "ResNet-18 int8 (ours)"), ("minutiae", "mindtct + bozorth3")]:
        r = json.load(open(f"{out}/{kind}-{proto}.json"))
        print(f"| {label} | {name} | {r['enrolled_identities']} / {r['impostor_probes']} scans "
              f"| {100*r['rank1']:.0f}% | {100*r['eer']:.1f}% | {100*r['fnmr_at_fmr_1pct']:.0f}% "
              f"| {100*r['fnmr_at_fmr_0_1pct']:.0f}% | {100*r['true_accept_rate']:.0f}% "
              f"| {100*r['misidentification_rate']:.0f}% "
              f"| {r['false_accepts']} ({100*r['false_accept_rate']:.1f}%) |")
PY
