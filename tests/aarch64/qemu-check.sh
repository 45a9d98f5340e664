#!/bin/bash
# Runs inside the aarch64 build root (scripts/build-aarch64, step 5): the aarch64 binaries under
# qemu-aarch64 on the Debian 12 arm64 libraries of the sysroot at /sysroot (glibc 2.36,
# libstdc++ 12: the oldest userland the package is for), with the aarch64 ONNX Runtime of the
# Debian package. Only the aarch64 programs are emulated; dbus-daemon and python3 are the root's.
# The package's tree is linked where it installs itself (/usr/bin stays the root's: the binaries
# are run from the unpacked tree), so the packaged configuration is checked as it will be read on
# the target.
#
#   tests/aarch64/qemu-check.sh TRIPLE_RELEASE_DIR PKGROOT OUTDIR [QNN_DIR]
# QNN_DIR: the aarch64 onnxruntime-qnn wheel's onnxruntime_qnn/ (not packaged); without it the QNN
# check is skipped (and reported as skipped).
# Exit status 0 only when every check passed; logs and outputs in OUTDIR.
set -euo pipefail
bin=$1 pkg=$2 out=$3 qnn=${4:-}
repo=$(pwd)
# LD_LIBRARY_PATH: the sysroot has no ld.so.cache (it is only unpacked), and without one the
# loader would take the build root's, whose /usr/lib entries (libstdc++: sid's, needing
# GLIBC_2.38) are not in the sysroot's /lib and so resolve outside it.
# (An array, not a function: `q ... &` must give the pid of qemu itself, which passes SIGTERM on
# to the program, not of a subshell.)
q=(qemu-aarch64 -L /sysroot -E LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu)
pass() { echo "PASS $*" | tee -a "$out/results.txt" >&2; }
fail() { echo "FAIL $*" | tee -a "$out/results.txt" >&2; failed=1; }
failed=0
: > "$out/results.txt"
# Every library the binaries and ONNX Runtime need is the sysroot's (else qemu would take the
# build root's newer one without a word).
for f in "$pkg/usr/bin/autoneurald" "$pkg/usr/bin/autoneuralctl" "$pkg"/usr/lib/autoneural/onnxruntime/libonnxruntime.so.*; do
  for n in $(objdump -p "$f" | awk '/NEEDED/ {print $2}'); do
    [ -e "/sysroot/usr/lib/aarch64-linux-gnu/$n" ] || [ -e "/sysroot/usr/lib/$n" ] || fail "$n (needed by $f) is not in the bookworm sysroot"
  done
done
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# (symbolic links, removed at the end: the build root has no mount(8))
links=(usr/share/autoneural usr/lib/autoneural etc/autoneural)
unlink_pkg() { for d in "${links[@]}"; do [ -L "/$d" ] && rm "/$d"; done; return 0; }
trap unlink_pkg EXIT
for d in "${links[@]}"; do
  [ -e "/$d" ] && { echo "/$d exists in the build root" >&2; exit 1; }
  ln -s "$pkg/$d" "/$d"
done
ort=/usr/lib/autoneural/onnxruntime/libonnxruntime.so.1.31.1
export ORT_DISABLE_TELEMETRY=1

# 1. The binaries start.
v=$("${q[@]}" "$pkg/usr/bin/autoneurald" --version) && pass "autoneurald --version: $v" || fail "autoneurald --version"
"${q[@]}" "$pkg/usr/bin/autoneuralctl" --help >/dev/null 2>&1 && pass "autoneuralctl --help" || fail "autoneuralctl --help"

# 2. The configurations: the packaged one (arm64: QNN, full offload, the packaged paths) and the
# shipped examples.
for c in /etc/autoneural/autoneurald.toml examples/demo.toml examples/webcam.toml; do
  if "${q[@]}" "$pkg/usr/bin/autoneurald" --check-config "$c" > "$out/check-config.txt" 2>&1; then
    pass "autoneurald --check-config $c"
  else
    fail "autoneurald --check-config $c: $(cat "$out/check-config.txt")"
  fi
done
"${q[@]}" "$pkg/usr/bin/autoneuralctl" check-config /etc/autoneural/autoneurald.toml >/dev/null 2>&1 \
  && pass "autoneuralctl check-config (packaged config)" || fail "autoneuralctl check-config"

# 2b. The QNN execution provider: onnxruntime-qnn 2.7.0's aarch64 plugin and HTP backend, found
# the way the service finds them on the target (AUTONEURAL_QNN_EP_LIB / AUTONEURAL_QNN_BACKEND, as
# in a systemd drop-in). An emulated CPU has no Hexagon DSP (and the sysroot no FastRPC
# libcdsprpc.so, which the HTP stubs need: it comes with the board's BSP), so the plugin must load
# and the provider must be reported unavailable, naming why: with the packaged configuration (QNN
# only, full offload) `autoneuralctl check-model` fails with the daemon's typed error; with
# ["qnn", "cpu"] the model loads on the CPU and the report says QNN was skipped and why. Not a
# crash, a hang or a silent success.
if [ -n "$qnn" ]; then
  # What the QNN libraries need, and which of it the bookworm arm64 userland lacks (informational:
  # the stubs' libcdsprpc.so is the BSP's; libatomic.so.1 is Debian's libatomic1).
  for f in libonnxruntime_providers_qnn.so libQnnHtp.so libQnnSystem.so libQnnHtpV68Stub.so; do
    needed=$(objdump -p "$qnn/$f" | awk '/NEEDED/ {print $2}' | tr '\n' ' ')
    lacks=$(for n in $needed; do [ -e "/sysroot/usr/lib/aarch64-linux-gnu/$n" ] || [ -e "/sysroot/usr/lib/$n" ] || [ -e "$qnn/$n" ] || echo -n "$n "; done)
    echo "$f: NEEDED $needed; not in the bookworm sysroot: ${lacks:-nothing}"
  done > "$out/qnn-libs.txt"
  grep -E '^lib(onnxruntime_providers_qnn|QnnHtp)\.so:.*sysroot: nothing$' "$out/qnn-libs.txt" | wc -l | grep -qx 2 \
    || fail "the QNN plugin or HTP backend needs a library the bookworm sysroot lacks: $(tr '\n' ' ' < "$out/qnn-libs.txt")"
  export AUTONEURAL_QNN_EP_LIB=$qnn/libonnxruntime_providers_qnn.so AUTONEURAL_QNN_BACKEND=$qnn/libQnnHtp.so
  set +e
  timeout 900 "${q[@]}" "$pkg/usr/bin/autoneuralctl" check-model /etc/autoneural/autoneurald.toml > "$out/qnn-check-model.txt" 2>&1
  rc=$?
  set -e
  why=$(grep -o 'qnn: unavailable: .*' "$out/qnn-check-model.txt" | head -1 | sed 's/)$//')
  if [ $rc = 1 ] && [[ "$why" == *"no QNN HTP device"* ]] && grep -q 'no execution provider could run it' "$out/qnn-check-model.txt"; then
    pass "QNN EP (onnxruntime-qnn 2.7.0 aarch64), packaged config (qnn only, full offload): check-model exits 1: $(grep -m1 'no execution provider' "$out/qnn-check-model.txt" | cut -c1-400)"
  else
    fail "QNN EP, packaged config: check-model exit $rc (want 1 and 'qnn: unavailable'): $(tail -3 "$out/qnn-check-model.txt" | tr '\n' ' ' | cut -c1-400)"
  fi
  tmpq=$(mktemp -d)
  sed -e 's/^execution_providers = \["qnn"\]$/execution_providers = ["qnn", "cpu"]/' \
      -e 's/^require_full_offload = true$/require_full_offload = false/' /etc/autoneural/autoneurald.toml > "$tmpq/qnn-cpu.toml"
  set +e
  timeout 900 "${q[@]}" "$pkg/usr/bin/autoneuralctl" check-model "$tmpq/qnn-cpu.toml" > "$out/qnn-cpu-check-model.txt" 2>&1
  rc=$?
  set -e
  skipped=$(grep -c 'skipped: qnn: unavailable' "$out/qnn-cpu-check-model.txt")
  if [ $rc = 0 ] && [ "$skipped" -ge 1 ] && grep -q 'skipped: qnn: unavailable: no QNN HTP device' "$out/qnn-cpu-check-model.txt" \
     && ! grep -E '^graph ' "$out/qnn-cpu-check-model.txt" | grep -qv ' cpu '; then
    pass "QNN EP, [\"qnn\", \"cpu\"]: every graph on cpu, QNN skipped and reported ($skipped graphs): $(grep -m1 'skipped: qnn' "$out/qnn-cpu-check-model.txt" | sed 's/^ *//' | cut -c1-300)"
  else
    fail "QNN EP, [\"qnn\", \"cpu\"]: check-model exit $rc, $skipped graphs report QNN skipped: $(tail -4 "$out/qnn-cpu-check-model.txt" | tr '\n' ' ' | cut -c1-400)"
  fi
  unset AUTONEURAL_QNN_EP_LIB AUTONEURAL_QNN_BACKEND
  rm -rf "$tmpq"
else
  echo "SKIP QNN EP (no QNN_DIR given)" | tee -a "$out/results.txt" >&2
fi

# 2c. The synthetic camera's renderer under emulation: ms per frame at the demo's size (640x480)
# bracketed by the square sizes `autoneural-scenes bench` renders, on one thread.
if [ -x "$bin/autoneural-scenes" ]; then
  for size in 320 480 640; do
    r=$("${q[@]}" "$bin/autoneural-scenes" bench --size $size --frames 10) || { fail "autoneural-scenes bench --size $size"; continue; }
    fps=$(echo "$r" | awk '{print $2}')
    echo "${size}x${size}: $(awk -v f="$fps" 'BEGIN{printf "%.0f", 1000/f}') ms per frame ($r)"
  done > "$out/scenes-bench.txt"
  pass "autoneural-scenes bench under qemu: $(cut -d'(' -f1 "$out/scenes-bench.txt" | tr '\n' ';')"
fi

# 3. Inference: the vlm example on the default model's golden images, both variants, on the CPU
# with the aarch64 ONNX Runtime; compared with golden.json (written by forge on x86_64).
m=models/autoneural-cabin
for variant in fp32 w8a16; do
  t=$(now)
  ok=1
  for i in 0 1 2; do
    question=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["cases"][int(sys.argv[3])]["question"])' "$m/golden.json" "$variant" "$i")
    AUTONEURAL_ORT_LIB=$ort "${q[@]}" "$bin/examples/vlm" --bundle "$m" --variant "$variant" \
      --image "$m/golden/$i.png" --probe bundle > "$out/vlm-$variant-probe-$i.txt" 2>&1 || ok=0
    AUTONEURAL_ORT_LIB=$ort "${q[@]}" "$bin/examples/vlm" --bundle "$m" --variant "$variant" \
      --image "$m/golden/$i.png" --ask "$question" --max-tokens 64 > "$out/vlm-$variant-ask-$i.txt" 2>&1 || ok=0
  done
  [ $ok = 1 ] || { fail "vlm $variant under qemu (see $out/vlm-$variant-*.txt)"; continue; }
  if python3 tests/aarch64/compare.py "$m" "$variant" "$out" > "$out/compare-$variant.txt" 2>&1; then
    pass "vlm $variant: probes and greedy answers = golden.json ($(tail -1 "$out/compare-$variant.txt" | sed 's/.*; //'); $(secs "$t") s for 6 runs)"
  else
    fail "vlm $variant differs from golden.json: $(grep DIFF "$out/compare-$variant.txt" | head -3 | tr '\n' ' ')"
  fi
done
cat "$out"/compare-*.txt >&2 || true

# 4. The daemon's perception (model probes + MediaPipe face networks) on the golden images.
tmp=$(mktemp -d)
cat > "$tmp/observe.toml" <<TOML
[camera]
source = "synthetic"
scenario = "phone-use"

[model]
bundle = "$repo/$m"
variant = "fp32"
execution_providers = ["cpu"]
runtime_dir = "/usr/lib/autoneural/onnxruntime"

[face]
bundle = "$repo/models/mediapipe-face"
variant = "fp32"
fields = ["face_visible", "eyes_closed", "eyes_on_road"]

[bus]
kind = "session"
TOML
if "${q[@]}" "$pkg/usr/bin/autoneurald" --config "$tmp/observe.toml" --observe "$m"/golden/{0,1,2}.png --json \
     > "$out/observe.jsonl" 2> "$out/observe.log" && [ "$(grep -c '"fields"' "$out/observe.jsonl")" = 3 ]; then
  pass "autoneurald --observe (model + face networks) on 3 images"
else
  fail "autoneurald --observe: $(tail -3 "$out/observe.log")"
fi

# 5. The daemon itself: the demo configuration (phone-use scenario, synthetic camera, default
# model on the CPU) on a private bus, watched by the aarch64 autoneuralctl, for 90 s, then SIGTERM.
# The scenario loops (`loop = true` instead of the demo's `end_of_stream = "exit"`: its 16 s would
# end the run early now that the synthetic camera keeps to real time), rendered at 320x240 instead
# of 640x480 (the model takes 128x128 either way): under emulation, with the model's two threads on
# the same cores, a 640x480 frame took ~1.8 s to render, close to frame_timeout_ms (2 s), so the
# newest frame was often already too old to use. Passes when the model
# loaded, the name was owned, observations (MonitoringState active) and a model-generated
# Description reached the watcher, frames kept coming (`autoneuralctl status` FramesProcessed >= 5
# after ~80 s: the synthetic camera delivered only frame 0 under qemu until it skipped the frames
# it renders too late), and the daemon stopped cleanly (exit 0). The scenario's alerts are not
# required: under emulation (TCG, ~5 s per probe round on this machine) the pipeline processes one
# frame in 50; see README "The aarch64 target".
cat > "$tmp/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/><allow user="*"/>
  </policy>
</busconfig>
XML
dbus-daemon --config-file="$tmp/bus.conf" --nofork --nopidfile 2>/dev/null &
bus_pid=$!
for _ in $(seq 50); do [ -S "$tmp/bus" ] && break; sleep 0.1; done
sed -e "s|^bundle = \"../models/autoneural-cabin\"|bundle = \"$repo/$m\"\nruntime_dir = \"/usr/lib/autoneural/onnxruntime\"|" \
    -e "s|^kind = \"session\"|kind = \"address\"\naddress = \"unix:path=$tmp/bus\"|" \
    -e 's|^end_of_stream = "exit"$|loop = true|' -e 's|^width = 640$|width = 320|' -e 's|^height = 480$|height = 240|' \
    examples/demo.toml > "$tmp/demo.toml"
grep -q '^kind = "address"' "$tmp/demo.toml" && grep -q '^runtime_dir' "$tmp/demo.toml" && grep -q '^loop = true' "$tmp/demo.toml" \
  && grep -q '^width = 320' "$tmp/demo.toml" \
  || fail "could not derive the demo config"
"${q[@]}" "$pkg/usr/bin/autoneurald" --config "$tmp/demo.toml" > "$out/daemon.log" 2>&1 &
daemon=$!
"${q[@]}" "$pkg/usr/bin/autoneuralctl" --address "unix:path=$tmp/bus" watch --wait 120 > "$out/watch.txt" 2>&1 &
watcher=$!
for i in $(seq 90); do
  kill -0 $daemon 2>/dev/null || break
  [ "$i" = 80 ] && "${q[@]}" "$pkg/usr/bin/autoneuralctl" --address "unix:path=$tmp/bus" status > "$out/status.txt" 2>&1
  sleep 1
done
kill -TERM $daemon 2>/dev/null || true
set +e
wait $daemon
rc=$?
set -e
sleep 2; kill $watcher 2>/dev/null || true; wait $watcher 2>/dev/null || true
kill $bus_pid 2>/dev/null || true
seen=$(grep -E 'MonitoringState|Description|ALERT' "$out/watch.txt" | sort -u -k2 | tr '\n' ';' | cut -c1-400)
frames=$(awk '$2 == "FramesProcessed" {print $3}' "$out/status.txt" 2>/dev/null)
dropped=$(awk '$2 == "FramesDropped" {print $3}' "$out/status.txt" 2>/dev/null)
timeouts=$(grep -c 'no frame for' "$out/watch.txt" || true)
if [ $rc = 0 ] && grep -q 'MonitoringState = "active"' "$out/watch.txt" && grep -q '^ *[0-9.]*s Description = "' "$out/watch.txt" \
   && grep -q 'model: autoneural-cabin (fp32) loaded' "$out/daemon.log" && [ "${frames:-0}" -ge 5 ]; then
  pass "autoneurald (demo config, looping) under qemu: model loaded, $frames frames processed in ~80 s ($dropped dropped, $timeouts 'no frame' reasons), observations + description seen by autoneuralctl, exit 0 on SIGTERM; watch: $seen"
else
  fail "autoneurald (demo config): exit $rc; frames processed ${frames:-?} (want >= 5); watch: $seen; log: $(tail -3 "$out/daemon.log" | tr '\n' ' ')"
fi
rm -rf "$tmp"
echo "$(grep -c '^PASS' "$out/results.txt") passed, $(grep -c '^FAIL' "$out/results.txt") failed" >&2
exit $failed
