#!/usr/bin/env bash
# fingerprintd against Mosquitto, driven with mosquitto_pub / mosquitto_sub as an operator
# would: scans over MQTT (raw and JSON) and from the sensor directory, bad payloads, a broker
# stopped while scans keep arriving and started again (re-subscription, outbox), the retained
# status and last will, and a TLS listener with client certificates and a password. Prints
# what it checks and fails on the first surprise.
#
# Needs: mosquitto and mosquitto-clients (Debian packages), openssl, python3, and the release
# binaries (`cargo build --release`, or BIN_DIR=...). CI runs it after the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-$root/target/release}
port=${PORT:-18883}
tls_port=$((port + 1))
door=door-ci
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- daemon log" >&2; tail -30 "$work/daemon.log" >&2; exit 1; }

echo "== a small model (synthetic prints, ResNet-18 at 32 px, int8)"
"$bin/trainer" synth --out "$work/data" --fingers 4 --impressions 8 --size 96 --seed 3 >/dev/null
"$bin/trainer" train --data "$work/data" --out "$work/run" --arch resnet18 --size 32 \
    --epochs 2 --batch-size 8 --test-per-identity 2 --export int8 >/dev/null 2>&1
model="$work/run/model-int8.safetensors"
test -f "$model" || fail "no exported model"

cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/
CONF
# Run as root (CI containers), mosquitto would switch to its own user, which cannot read this
# private temporary directory.
[ "$(id -u)" -eq 0 ] && sed -i "1i user root" "$work/mosquitto.conf"
start_broker() {
    mosquitto -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
    broker=$!
    pids+=("$broker")
    for _ in $(seq 50); do
        mosquitto_pub -h 127.0.0.1 -p "$port" -t ping -n 2>/dev/null && return 0
        sleep 0.1
    done
    fail "mosquitto did not start"
}
start_broker

mkdir -p "$work/sensor"
cat > "$work/config.toml" <<CONF
door_id = "$door"
state_dir = "$work/state"
[model]
path = "$model"
threshold = 0.0
[sensor]
dir = "$work/sensor"
[mqtt]
host = "127.0.0.1"
port = $port
keep_alive_s = 5
max_backoff_s = 1
CONF
"$bin/fingerprintd" check-config "$work/config.toml"

# A persistent session (-c with an id, QoS 1): decisions published while this subscriber is
# reconnecting after the broker restart are queued for it.
mosquitto_sub -h 127.0.0.1 -p "$port" -i ci-watcher -c -q 1 -v -t "fingerprintd/$door/#" \
    >"$work/sub.log" 2>/dev/null &
pids+=("$!")
sleep 0.5
# Debug logs: each publication of a decision is logged, so publications can be counted.
RUST_LOG=fingerprintd=debug "$bin/fingerprintd" --config "$work/config.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")

count_decisions() {
    python3 - "$work/sub.log" <<'PY'
import json, sys
ids = []
for line in open(sys.argv[1], errors="replace"):
    topic, _, payload = line.rstrip("\n").partition(" ")
    if topic.endswith("/decision"):
        ids.append(json.loads(payload)["scan_id"])
print(len(ids), len(set(ids)))
PY
}
wait_decisions() { # until this many distinct scans have a decision
    for _ in $(seq 600); do
        read -r n unique < <(count_decisions)
        [ "$unique" -ge "$1" ] && return 0
        sleep 0.1
    done
    fail "expected $1 decisions, got $(count_decisions)"
}
for _ in $(seq 100); do grep -q "status online" "$work/sub.log" && break; sleep 0.1; done
grep -q "status online" "$work/sub.log" || fail "no 'online' status"
echo "status: online"

echo "== scans over MQTT: raw PNG, JSON, and bad payloads"
scan="$work/data/1_1.png"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$scan"
printf '{"scan_id": "ci-json", "sensor": "reader-1", "image": "%s"}' "$(base64 -w0 "$scan")" \
    >"$work/scan.json"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$work/scan.json"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -n
head -c 3000 /dev/urandom >"$work/random.bin"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$work/random.bin"
head -c 500 "$scan" >"$work/truncated.png"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$work/truncated.png"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -m '{"image": 1}'
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$scan"
wait_decisions 7
grep -q '"scan_id":"ci-json".*"decision":"grant"' "$work/sub.log" || fail "JSON scan not granted"
errors=$(grep -c '"decision":"error"' "$work/sub.log" || true)
[ "$errors" -eq 4 ] || fail "expected 4 error decisions, got $errors"
echo "7 decisions: 3 scans judged, 4 bad payloads answered with errors"

echo "== broker stopped while scans arrive in the sensor directory"
kill "$broker"; wait "$broker" 2>/dev/null || true
for i in 1 2 3; do cp "$work/data/2_$i.png" "$work/sensor/.s$i.part"; mv "$work/sensor/.s$i.part" "$work/sensor/outage-$i.png"; done
for _ in $(seq 100); do [ "$(ls "$work/state/outbox" | wc -l)" -ge 3 ] && break; sleep 0.1; done
[ "$(ls "$work/state/outbox" | wc -l)" -eq 3 ] || fail "decisions not in the outbox"
[ "$(ls "$work/sensor"/outage-*.png | wc -l)" -eq 3 ] || fail "scans moved before publication"
echo "3 decisions wait in the outbox; their scans are still in the sensor directory"
start_broker
wait_decisions 10
for _ in $(seq 50); do [ -z "$(ls "$work/sensor"/*.png 2>/dev/null)" ] && break; sleep 0.1; done
[ "$(ls "$work/sensor/processed" | wc -l)" -eq 3 ] || fail "scans not moved after publication"
read -r n unique < <(count_decisions)
published=$(grep -c "decision handed to the MQTT client" "$work/daemon.log" || true)
[ "$unique" -eq 10 ] && [ "$published" -eq 10 ] \
    || fail "after the outage: $unique scans with decisions, $published publications"
echo "broker back: all 10 scans have a decision, each published once by the daemon;"
echo "  scans moved to processed/; the subscriber received $n messages (Mosquitto re-sends to"
echo "  a persistent session what was in flight to it when it stopped: QoS 1 is at least once)"
# The daemon subscribed again after reconnecting (its session is clean).
for _ in $(seq 50); do
    mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$scan"
    sleep 0.2
    read -r n unique < <(count_decisions)
    [ "$unique" -gt 10 ] && break
done
[ "$unique" -gt 10 ] || fail "no decision for an MQTT scan after the broker restart"
echo "MQTT scans are taken again after the restart"

echo "== SIGTERM: offline status, retained"
kill -TERM "$daemon"; wait "$daemon" || fail "daemon exited with an error"
status=$(mosquitto_sub -h 127.0.0.1 -p "$port" -t "fingerprintd/$door/status" -C 1 -W 5)
[ "$status" = "offline" ] || fail "status is '$status'"
echo "status: offline (retained)"

echo "== SIGKILL: the broker publishes the last will"
"$bin/fingerprintd" --config "$work/config.toml" >>"$work/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")
for _ in $(seq 100); do
    s=$(mosquitto_sub -h 127.0.0.1 -p "$port" -t "fingerprintd/$door/status" -C 1 -W 2 || true)
    [ "$s" = "online" ] && break
done
[ "$s" = "online" ] || fail "not online again"
kill -KILL "$daemon"; wait "$daemon" 2>/dev/null || true
for _ in $(seq 100); do
    s=$(mosquitto_sub -h 127.0.0.1 -p "$port" -t "fingerprintd/$door/status" -C 1 -W 2 || true)
    [ "$s" = "offline" ] && break
    sleep 0.1
done
[ "$s" = "offline" ] || fail "no last will after SIGKILL: '$s'"
echo "status: offline (last will)"

echo "== TLS with a client certificate and a password"
tls="$work/tls"
mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fingerprintd CI CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
sign() { # name CN extensions
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$tls/$1.key" \
        -out "$tls/$1.csr" 2>/dev/null
    openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 2 -out "$tls/$1.pem" -extfile <(printf '%s' "$3") 2>/dev/null
}
sign server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1"
sign door "$door" "extendedKeyUsage=clientAuth"
sign operator operator "extendedKeyUsage=clientAuth"
mosquitto_passwd -c -b "$tls/passwd" "$door" door-secret
mosquitto_passwd -b "$tls/passwd" operator operator-secret
chmod 0644 "$tls"/*
cat >> "$work/mosquitto.conf" <<CONF
per_listener_settings true
listener $tls_port 127.0.0.1
cafile $tls/ca.pem
certfile $tls/server.pem
keyfile $tls/server.key
require_certificate true
password_file $tls/passwd
allow_anonymous false
CONF
# per_listener_settings must come first in the file.
{ echo "per_listener_settings true"; grep -v per_listener_settings "$work/mosquitto.conf"; } \
    >"$work/m.conf" && mv "$work/m.conf" "$work/mosquitto.conf"
kill "$broker"; wait "$broker" 2>/dev/null || true
start_broker
printf 'door-secret\n' >"$work/mqtt-password"
mkdir -p "$work/sensor-tls"
cat > "$work/config-tls.toml" <<CONF
door_id = "door-tls"
state_dir = "$work/state-tls"
[model]
path = "$model"
threshold = 0.0
[sensor]
dir = "$work/sensor-tls"
[mqtt]
host = "localhost"
port = $tls_port
client_id = "$door"
username = "$door"
password_file = "$work/mqtt-password"
[mqtt.tls]
ca_file = "$tls/ca.pem"
client_cert_file = "$tls/door.pem"
client_key_file = "$tls/door.key"
CONF
"$bin/fingerprintd" check-config "$work/config-tls.toml" >/dev/null
op=(-h localhost -p "$tls_port" --cafile "$tls/ca.pem" --cert "$tls/operator.pem"
    --key "$tls/operator.key" -u operator -P operator-secret)
mosquitto_sub "${op[@]}" -q 1 -v -t "fingerprintd/door-tls/#" >"$work/sub-tls.log" 2>&1 &
pids+=("$!")
"$bin/fingerprintd" --config "$work/config-tls.toml" >"$work/daemon-tls.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do grep -q "door-tls/status online" "$work/sub-tls.log" && break; sleep 0.1; done
grep -q "door-tls/status online" "$work/sub-tls.log" \
    || { tail "$work/daemon-tls.log" "$work/sub-tls.log" >&2; fail "daemon not online over TLS"; }
mosquitto_pub "${op[@]}" -q 1 -t "fingerprintd/door-tls/scan" -f "$scan"
for _ in $(seq 100); do grep -q "door-tls/decision .*\"decision\":\"grant\"" "$work/sub-tls.log" && break; sleep 0.1; done
grep -q "door-tls/decision .*\"decision\":\"grant\"" "$work/sub-tls.log" || fail "no decision over TLS"
echo "TLS (client certificate + password): online, scan in, decision out"
# Without a certificate the broker refuses the connection.
if mosquitto_pub -h localhost -p "$tls_port" --cafile "$tls/ca.pem" -u operator \
    -P operator-secret -t x -m y 2>/dev/null; then
    fail "the TLS listener accepted a client without a certificate"
fi
echo "mosquitto check passed"
