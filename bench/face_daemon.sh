#!/usr/bin/env bash
# The daemon with both perception paths on (face pipeline every frame, the default model's probes
# every 3rd frame) on a replayed 640x480 real-face frame at 15 fps for DURATION seconds (default
# 60), on a private bus; prints autoneuralctl status (latency p50/p99 per stage, budgets).
# Run on an idle machine after `cargo build --release -p autoneural-daemon -p autoneural-face --examples`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration="${1:-60}"
export AUTONEURAL_VENV="$root/.venv"
bin="$root/target/release"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/frames"
"$bin/examples/face_bench" --frames 1 --frame-out "$tmp/frames/000.png" >/dev/null
cat > "$tmp/autoneurald.toml" <<TOML
[camera]
source = "replay"
directory = "$tmp/frames"
loop = true
width = 640
height = 480
fps = 15
[model]
bundle = "$root/models/autoneural-cabin"
variant = "fp32"
execution_providers = ["cpu"]
cpu_threads = 1
[face]
bundle = "$root/models/mediapipe-face"
[fusion]
model_every_frames = 3
[description]
interval_ms = 0
[bus]
kind = "address"
address = "unix:path=$tmp/bus"
TOML
dbus-daemon --session --address="unix:path=$tmp/bus" --nofork --nopidfile &
for _ in $(seq 50); do [ -S "$tmp/bus" ] && break; sleep 0.1; done
"$bin/autoneurald" --config "$tmp/autoneurald.toml" 2>"$tmp/log" &
daemon=$!
sleep "$duration"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); daemon CPU: $(ps -o %cpu= -p $daemon)%, RSS: $(ps -o rss= -p $daemon) KiB"
"$bin/autoneuralctl" --address "unix:path=$tmp/bus" status
