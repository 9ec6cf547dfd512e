#!/usr/bin/env bash
# The network on minutiae-centred patches in the open set (README, "Minutiae-centred patches";
# issue 21): fingers the network never saw, enrolled from 3 scans. On the five real splits of
# scripts/real-openset.sh (the same seeded split, scripts/openset_split.py: half of a set's
# fingers enrolled, their other scans probes; the test strangers never enrolled), each scan's
# patches (64 px around its 40 best minutiae) get templates from a patch network fine-tuned on
# another set's fingers, and a probe scores against an enrolled finger by how well its patches
# are found among the finger's (fingerprint_common::patches::patch_set_similarity). f32 (the
# run's best checkpoint) and int8 (its export). Rank-1 and EER, and the EER with each probe's
# scores test-normalised against the gallery (fingerprint_common::patches::test_normalised);
# no door threshold is calibrated here (fingerprintd does not serve patch models yet).
# Patch networks are the runs `PATCHES=1 scripts/real-closedset.sh` leaves: FVC_PATCH_RUN
# (default runs/real-closedset/crossmatch.patches/run, fine-tuned on CrossMatch fingers) for the
# FVC2002 sets, NEUROTECH_PATCH_RUN (default runs/real-closedset/fvc2002.patches/run, FVC2002
# fingers) for CrossMatch and U.are.U: never a set's own fingers.
# Usage: scripts/patches-openset.sh [OUT] (default runs/patches-openset); DATASETS=...,
# BIN_DIR=... (binaries already built: no build here), SETS="SET_DIR:DPI ..." (default the five
# sets of real-openset.sh). About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/patches-openset}
data=${DATASETS:-../shared/datasets}
fvc_run=${FVC_PATCH_RUN:-runs/real-closedset/crossmatch.patches/run}
neurotech_run=${NEUROTECH_PATCH_RUN:-runs/real-closedset/fvc2002.patches/run}
sets=${SETS:-fvc2002/DB1_B:500 fvc2002/DB2_B:569 fvc2002/DB3_B:500 neurotech/crossmatch:500 neurotech/uareu:500}
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -p trainer
    cargo build --release -p fingerprint-common --example minutiae_patches
fi
trainer=${BIN_DIR:-target/release}/trainer
patches=target/release/examples/minutiae_patches
mkdir -p "$out"
for spec in $sets; do
    set_dir=${spec%%:*}
    dpi=${spec##*:}
    name=$(echo "$set_dir" | tr / -)
    case $set_dir in
        fvc2002/*) run=$fvc_run ;;
        *) run=$neurotech_run ;;
    esac
    [ -f "$run/best.safetensors" ] && [ -f "$run/model-int8.safetensors" ] \
        || { echo "no patch network $run (PATCHES=1 scripts/real-closedset.sh makes it)" >&2; exit 1; }
    src="$data/$set_dir"
    [ -d "$src" ] || { echo "no $src" >&2; exit 1; }
    split="$out/$name"
    rm -rf "$split" && mkdir -p "$split/enrolled" "$split/calibration" "$split/strangers"
    python3 scripts/openset_split.py "$src" "$split"
    echo "== $set_dir: patch network $run"
    {
        for part in enrolled strangers; do
            "$patches" cut-dir "$split/$part" "$split/patches-$part" "$dpi"
            "$trainer" predict --run "$run" --embeddings "$split/patches-$part"/*/*.png \
                > "$split/$part.f32.json"
            "$trainer" predict --model "$run/model-int8.safetensors" --embeddings \
                "$split/patches-$part"/*/*.png > "$split/$part.int8.json"
        done
        for precision in f32 int8; do
            "$patches" openset "$split/enrolled" "$split/enrolled.$precision.json" \
                "$split/strangers" "$split/strangers.$precision.json" 3 > "$split/report.$precision.json"
        done
        echo "$run" > "$split/network.txt"
    } > "$split.log" 2>&1 || { tail -n 20 "$split.log" >&2; exit 1; }
done

python3 - "$out" $sets <<'PY'
import json, sys
out, sets = sys.argv[1], sys.argv[2:]
print("| set (real) | patch network fine-tuned on | enrolled fingers / genuine probes / strangers' scans | rank-1 f32 / int8 | EER f32 / int8 | FNMR at FMR 1%, int8 | EER / FNMR at FMR 1%, int8, test-normalised |")
print("|---|---|---|---|---|---|---|")
hits = {"f32": 0, "int8": 0}
probes = 0
for spec in sets:
    name = spec.split(":")[0].replace("/", "-")
    r = {p: json.load(open(f"{out}/{name}/report.{p}.json")) for p in ("f32", "int8")}
    network = open(f"{out}/{name}/network.txt").read().strip()
    for p in hits:
        hits[p] += round(r[p]["rank1"] * r[p]["genuine_probes"])
    probes += r["int8"]["genuine_probes"]
    print(f"| {spec.split(':')[0]} | {network} | {r['int8']['enrolled_identities']} / {r['int8']['genuine_probes']} / {r['int8']['impostor_probes']} "
          f"| {100*r['f32']['rank1']:.1f}% / {100*r['int8']['rank1']:.1f}% | {100*r['f32']['eer']:.1f}% / {100*r['int8']['eer']:.1f}% "
          f"| {100*r['int8']['fnmr_at_fmr_1pct']:.1f}% "
          f"| {100*r['int8']['test_normalised']['eer']:.1f}% / {100*r['int8']['test_normalised']['fnmr_at_fmr_1pct']:.1f}% |")
print(f"| all | | {probes} genuine probes | {100*hits['f32']/max(probes,1):.1f}% / {100*hits['int8']/max(probes,1):.1f}% | | | |")
PY
