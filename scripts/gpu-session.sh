#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool's `run`), as it ran on the H200 on
# 2026-12-04: scripts/gpu-check.sh, then as much synthetic pretraining
# (scripts/pretrain-backbone.sh on --device cuda) as the time left allows, packed for the
# trip back (the tool returns at most 8 files of 16 MiB from $OUT).
#
#   BIN_DIR=.gpu-bin LIMIT_S=570 scripts/gpu-session.sh OUT
#
# BIN_DIR holds a `--features cuda` trainer built here (scripts/cuda-env.sh with
# CUDA_COMPUTE_CAP=90 for Hopper), stripped and xz-compressed as trainer.xz to fit the trip
# there. FINGERS and BATCH go to the pretraining (2000 and 64), SIZE and SCAN as
# pretrain-backbone.sh reads them (INIT, SEED, LR too); PRETRAIN=0 skips it, CHECK=0 skips
# gpu-check (already in the README) to leave its minutes to training.
set -uo pipefail
out=${1:?usage: scripts/gpu-session.sh OUT}
bin=${BIN_DIR:-.gpu-bin}
limit=${LIMIT_S:-570}
export PYTHONUNBUFFERED=1
t0=$(date +%s)
[ -x "$bin/trainer" ] || xz -dkf "$bin/trainer.xz" || exit 1
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
mkdir -p "$out" /tmp/pack
log=$out/device.log
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo "cpus: $(nproc)"; grep -m1 'model name' /proc/cpuinfo
    grep -m1 flags /proc/cpuinfo | tr ' ' '\n' \
        | grep -E '^(avx2|avx512f|avx512_vnni|avx_vnni|amx_int8)$' | tr '\n' ' '; echo
    python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; ldd "$bin/trainer" | grep -E 'cuda|cublas|curand|not found'
} > /tmp/pack/machine.txt 2>&1
tee "$log" < /tmp/pack/machine.txt
if [ "${CHECK:-1}" = 1 ]; then
    scripts/gpu-check.sh --bin "$bin" --out /tmp/gc 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
else
    rc=0
    echo "gpu-check skipped (CHECK=0)" | tee -a "$log"
fi
cp /tmp/gc/gpu-check.md /tmp/gc/ours.json /tmp/gc/torch.json /tmp/gc/run/metrics.jsonl /tmp/pack/ 2>/dev/null
tar cf "$out/check.tar" -C /tmp/pack .
echo "gpu-check status $rc after $(( $(date +%s) - t0 )) s" | tee -a "$log"
[ "$rc" -eq 0 ] || exit "$rc"
[ "${PRETRAIN:-1}" = 1 ] || exit 0
budget=$(( limit - ($(date +%s) - t0) - 25 ))
BIN_DIR=$bin DEVICE=cuda FINGERS=${FINGERS:-2000} BUDGET_S=$budget BATCH=${BATCH:-64} \
    scripts/pretrain-backbone.sh /tmp/pre 2>&1 | tee -a "$log"
cp /tmp/pre/bench.json /tmp/pack/ 2>/dev/null
tar cf "$out/check.tar" -C /tmp/pack .
# The trip back holds 64 MiB: the int8 export goes along where it fits beside the checkpoint
# (a 2,470-finger ResNet-18: 50 + 12.5 MB). Else `trainer export` makes it on the way back,
# given the run's synthetic prints again (the same `trainer synth` command, to the same folder).
run_files=(best.safetensors run.json split.json metrics.jsonl report.json curves.png state.json)
(cd /tmp/pre/run && tar cf /tmp/run.tar --ignore-failed-read "${run_files[@]}" model-int8.safetensors)
if [ "$(stat -c %s /tmp/run.tar)" -gt $(( 62 * 1024 * 1024 )) ]; then
    echo "model-int8.safetensors left behind: the run is too large for the trip back" | tee -a "$log"
    (cd /tmp/pre/run && tar cf /tmp/run.tar --ignore-failed-read "${run_files[@]}")
fi
split -b 15M /tmp/run.tar "$out/run.tar."
echo "gpu-session done after $(( $(date +%s) - t0 )) s" | tee -a "$log"
