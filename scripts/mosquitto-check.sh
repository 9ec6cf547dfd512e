#!/usr/bin/env bash
# fingerprintd against Mosquitto, driven with mosquitto_pub / mosquitto_sub as an operator
# would: scans over MQTT (raw and JSON) and from the sensor directory, bad payloads, an
# oversized scan followed by good ones, a flood of bad payloads between good scans, a broker
# stopped while scans keep arriving and started again (re-subscription, outbox), the retained
# status and last will, the daemon killed while scans are published (the persistent session
# keeps them), and a TLS listener with client certificates and a password. Prints what it
# checks and fails on the first surprise.
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
# Below the daemon's mqtt.max_message_bytes (64 MiB by default), as the README says.
message_size_limit 33554432
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
[limits]
max_scan_bytes = 1048576
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
mosquitto_sub -h 127.0.0.1 -p "$port" -i ci-watcher -c -q 1 -v \
    -t "fingerprintd/$door/decision" -t "fingerprintd/$door/status" >"$work/sub.log" 2>/dev/null &
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
decided() { # PREFIX: distinct scans whose id starts with it, and how many of them are errors
    python3 - "$work/sub.log" "$1" <<'PY'
import json, sys
verdict = {}
for line in open(sys.argv[1], errors="replace"):
    topic, _, payload = line.rstrip("\n").partition(" ")
    if topic.endswith("/decision"):
        d = json.loads(payload)
        if d["scan_id"].startswith(sys.argv[2]):
            verdict[d["scan_id"]] = d["decision"]
print(len(verdict), sum(v == "error" for v in verdict.values()))
PY
}
pub_scan() { mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" "$@"; }
json_scan() { # ID FILE: a JSON scan message in $work/ID.json
    printf '{"scan_id": "%s", "image": "%s"}' "$1" "$(base64 -w0 "$2")" >"$work/$1.json"
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
# Another scan: a message without a scan_id is named by its bytes, so the same file again
# would carry the same id.
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$work/data/1_2.png"
wait_decisions 7
grep -q '"scan_id":"ci-json".*"decision":"grant"' "$work/sub.log" || fail "JSON scan not granted"
errors=$(grep -c '"decision":"error"' "$work/sub.log" || true)
[ "$errors" -eq 4 ] || fail "expected 4 error decisions, got $errors"
echo "7 decisions: 3 scans judged, 4 bad payloads answered with errors"

echo "== a 5 MB scan (limit 1 MiB), then 5 good scans 0.2 s apart"
head -c 5000000 /dev/urandom >"$work/big.bin"
pub_scan -f "$work/big.bin"
for i in 1 2 3 4 5; do
    json_scan "after-big-$i" "$work/data/3_$i.png"
    sleep 0.2
    pub_scan -f "$work/after-big-$i.json"
done
wait_decisions 13
read -r good good_errors < <(decided after-big-)
[ "$good" -eq 5 ] && [ "$good_errors" -eq 0 ] || fail "after the big scan: $good decided, $good_errors errors"
grep -q '"decision":"error".*5000000 bytes is larger than the limit of 1048576 bytes' "$work/sub.log" \
    || fail "no error decision naming the big scan's size and the limit"
grep -q "MQTT connection lost" "$work/daemon.log" && fail "the big scan cut the connection"
echo "the 5 MB scan got an error decision naming its size and the limit; the 5 scans behind it"
echo "  were decided; the connection stayed up"

echo "== a flood: 50 oversized or undecodable payloads between 10 good scans"
read -r before _ < <(count_decisions)
for i in $(seq 50); do
    if [ $((i % 2)) -eq 0 ]; then
        head -c 2000000 /dev/urandom >"$work/flood.bin"   # over the 1 MiB limit
    else
        head -c 2000 /dev/urandom >"$work/flood.bin"      # not an image
    fi
    pub_scan -f "$work/flood.bin"
    if [ $((i % 5)) -eq 0 ]; then
        json_scan "flood-good-$((i / 5))" "$work/data/4_$(( (i / 5 - 1) % 8 + 1 )).png"
        pub_scan -f "$work/flood-good-$((i / 5)).json"
    fi
done
wait_decisions $((before + 60))
read -r good good_errors < <(decided flood-good-)
read -r after _ < <(count_decisions)
[ "$good" -eq 10 ] && [ "$good_errors" -eq 0 ] || fail "flood: $good good scans decided, $good_errors errors"
[ "$after" -eq $((before + 60)) ] || fail "flood: $((after - before)) decisions for 60 messages"
grep -q "MQTT connection lost" "$work/daemon.log" && fail "the flood cut the connection"
echo "10 good scans decided, 50 bad payloads each answered with an error; the connection stayed up"

echo "== broker stopped while scans arrive in the sensor directory"
read -r before _ < <(count_decisions)
published_before=$(grep -c "decision handed to the MQTT client" "$work/daemon.log" || true)
kill "$broker"; wait "$broker" 2>/dev/null || true
for i in 1 2 3; do cp "$work/data/2_$i.png" "$work/sensor/.s$i.part"; mv "$work/sensor/.s$i.part" "$work/sensor/outage-$i.png"; done
for _ in $(seq 100); do [ "$(ls "$work/state/outbox" | wc -l)" -ge 3 ] && break; sleep 0.1; done
[ "$(ls "$work/state/outbox" | wc -l)" -eq 3 ] || fail "decisions not in the outbox"
[ "$(ls "$work/sensor"/outage-*.png | wc -l)" -eq 3 ] || fail "scans moved before publication"
echo "3 decisions wait in the outbox; their scans are still in the sensor directory"
start_broker
wait_decisions $((before + 3))
for _ in $(seq 50); do [ -z "$(ls "$work/sensor"/*.png 2>/dev/null)" ] && break; sleep 0.1; done
[ "$(ls "$work/sensor/processed" | wc -l)" -eq 3 ] || fail "scans not moved after publication"
read -r n unique < <(count_decisions)
published=$(grep -c "decision handed to the MQTT client" "$work/daemon.log" || true)
[ "$unique" -eq $((before + 3)) ] && [ "$published" -eq $((published_before + 3)) ] \
    || fail "after the outage: $((unique - before)) new scans with decisions, $((published - published_before)) publications"
echo "broker back: all $unique scans have a decision, the 3 new ones published once by the daemon;"
echo "  scans moved to processed/; the subscriber received $n messages (Mosquitto re-sends to"
echo "  a persistent session what was in flight to it when it stopped: QoS 1 is at least once)"
# The daemon is subscribed again after reconnecting.
for _ in $(seq 50); do
    mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fingerprintd/$door/scan" -f "$work/data/1_3.png"
    sleep 0.2
    read -r n unique < <(count_decisions)
    [ "$unique" -gt $((before + 3)) ] && break
done
[ "$unique" -gt $((before + 3)) ] || fail "no decision for an MQTT scan after the broker restart"
echo "MQTT scans are taken again after the restart"

echo "== SIGKILL while 5 QoS 1 scans are published, then a restart"
for i in 1 2 3 4 5; do json_scan "killed-$i" "$work/data/2_$i.png"; done
pub_scan -f "$work/killed-1.json"
kill -KILL "$daemon"; wait "$daemon" 2>/dev/null || true
for i in 2 3 4 5; do pub_scan -f "$work/killed-$i.json"; sleep 0.1; done
RUST_LOG=fingerprintd=debug "$bin/fingerprintd" --config "$work/config.toml" >>"$work/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")
for _ in $(seq 300); do
    read -r n _ < <(decided killed-)
    [ "$n" -eq 5 ] && break
    sleep 0.1
done
read -r n errors < <(decided killed-)
[ "$n" -eq 5 ] && [ "$errors" -eq 0 ] || fail "after SIGKILL and a restart: $n of 5 scans decided"
echo "all 5 decided after the restart (the broker kept them in the door's persistent session)"

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
