#!/usr/bin/env bash
# fingerprintd with its decision log on a full disk: a 300 KB tmpfs filled while 10 scans
# arrive in the sensor directory. Checks that the service stays up, that every line of the
# log parses at every moment (a write that fails part-way is cut back off), that the scans
# whose decisions could not be written stay in the sensor directory and are retried while the
# service runs (no restart), and that once space is freed every scan is decided exactly once.
#
# Needs root (it mounts a tmpfs, in a mount namespace of its own), python3 and the release
# binaries (`cargo build --release`, or BIN_DIR=...). CI runs it after the tests.
set -euo pipefail
if [ -z "${FULL_DISK_NS:-}" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "full-disk check: needs root to mount a tmpfs" >&2; exit 1; }
    # A private mount namespace: the tmpfs vanishes with the script, whatever happens.
    exec env FULL_DISK_NS=1 unshare --mount --propagation private "$0" "$@"
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-$root/target/release}
work=$(mktemp -d)
daemon=""
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
    wait 2>/dev/null || true
    umount "$work/disk" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- daemon log" >&2; tail -20 "$work/daemon.log" >&2; exit 1; }

echo "== a model and 10 scans (synthetic, untrained network: only the writing is checked)"
"$bin/trainer" export --init resnet18 --classes 4 --size 32 --export int8 \
    --out "$work/model.safetensors" >/dev/null
"$bin/trainer" synth --out "$work/scans" --fingers 10 --impressions 1 --size 96 --seed 5 >/dev/null

mkdir -p "$work/disk" "$work/sensor"
mount -t tmpfs -o size=300k tmpfs "$work/disk"
log="$work/disk/decisions.jsonl"
cat > "$work/config.toml" <<CONF
door_id = "door-disk"
state_dir = "$work/state"
[model]
path = "$work/model.safetensors"
threshold = 0.0
[sensor]
dir = "$work/sensor"
[output]
decisions = "$log"
CONF
"$bin/fingerprintd" --config "$work/config.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do grep -q "ready" "$work/daemon.log" && break; sleep 0.1; done
grep -q "ready" "$work/daemon.log" || fail "daemon not ready"

check_log() { # every line parses; prints lines and distinct scan ids
    python3 - "$log" <<'PY'
import json, sys
data = open(sys.argv[1], "rb").read()
if data and not data.endswith(b"\n"):
    sys.exit(f"the log ends in a partial line: {data[-60:]!r}")
ids = [json.loads(line)["scan_id"] for line in data.splitlines()]
print(len(ids), len(set(ids)))
PY
}

echo "== the disk fills while 10 scans arrive"
# Fill the tmpfs but for one page (4 KiB): room for a few decisions (a line is about 500
# bytes), then one that fits only in part.
free=$(( $(stat -f -c '%a*%S' "$work/disk") ))
dd if=/dev/zero of="$work/disk/filler" bs=4096 count=$((free / 4096 - 1)) 2>/dev/null
for i in $(seq 10); do
    cp "$work/scans/${i}_1.png" "$work/sensor/.s$i.part"
    mv "$work/sensor/.s$i.part" "$work/sensor/scan-$i.png"
done
for _ in $(seq 100); do grep -q "not stored" "$work/daemon.log" && break; sleep 0.1; done
grep -q "not stored" "$work/daemon.log" || fail "no write failed: the disk did not fill"
sleep 3
kill -0 "$daemon" || fail "the daemon died on a full disk"
read -r lines unique < <(check_log) || fail "the decision log is damaged while the disk is full"
waiting=$(ls "$work/sensor"/scan-*.png | wc -l)
[ "$((lines + waiting))" -eq 10 ] || fail "$lines decisions written, $waiting scans waiting: not 10"
[ "$lines" -gt 0 ] && [ "$waiting" -gt 0 ] || fail "$lines written, $waiting waiting: the disk did not fill mid-way"
grep "not stored" "$work/daemon.log" | tail -1 | sed 's/^/  log: /'
echo "disk full: $lines decisions written, whole lines only; $waiting scans wait in the sensor directory"

echo "== space is freed; the running service catches up"
rm "$work/disk/filler"
for _ in $(seq 300); do
    read -r lines unique < <(check_log)
    [ "$unique" -ge 10 ] && [ -z "$(ls "$work/sensor"/scan-*.png 2>/dev/null)" ] && break
    sleep 0.1
done
read -r lines unique < <(check_log) || fail "the decision log is damaged"
[ "$lines" -eq 10 ] && [ "$unique" -eq 10 ] || fail "$lines lines for $unique scans, expected 10 and 10"
[ -z "$(ls "$work/sensor"/scan-*.png 2>/dev/null)" ] || fail "scans left in the sensor directory"
[ "$(ls "$work/sensor/processed" | wc -l)" -eq 10 ] || fail "scans not moved to processed/"
kill -TERM "$daemon"; wait "$daemon" || fail "daemon exited with an error"
daemon=""
echo "all 10 scans decided exactly once, without a restart; every line of the log parses"
echo "full-disk check passed"
