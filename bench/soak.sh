#!/usr/bin/env bash
# The soak (issue 16): autoneurald on the default model and a looping synthetic scenario for
# DURATION seconds (default 600) on a private bus, with one Ask every 2 s; every 30 s it samples the
# daemon's RSS, open file descriptors and threads. Writes bench/soak.md (or OUT) with the samples and
# a verdict: memory, FDs and threads flat (last sample within 10 % / +2 / +2 of the first after
# warm-up) and every question answered.
#
#   bench/soak.sh [DURATION_S] [OUT]
#
# Uses target/release/autoneurald + autoneuralctl (`cargo build --release -p autoneural-daemon`);
# AUTONEURALD_BIN_DIR=target/debug runs the debug build instead (RSS then is the debug build's).
# Leak figures do not need an idle machine, but the report records the load average.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration="${1:-600}"
out="${2:-$root/bench/soak.md}"
bin="${AUTONEURALD_BIN_DIR:-$root/target/release}"
export AUTONEURAL_VENV="$root/.venv"
for b in autoneurald autoneuralctl; do
  [ -x "$bin/$b" ] || { echo "soak: $bin/$b missing (cargo build --release -p autoneural-daemon)" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
cat > "$tmp/autoneurald.toml" <<TOML
[camera]
source = "synthetic"
scenario = "phone-use"
loop = true
fps = 10
[model]
bundle = "$root/models/autoneural-cabin"
execution_providers = ["cpu"]
cpu_threads = 1
[bus]
kind = "address"
address = "unix:path=$tmp/bus"
TOML
dbus-daemon --session --address="unix:path=$tmp/bus" --nofork --nopidfile &
for _ in $(seq 50); do [ -S "$tmp/bus" ] && break; sleep 0.1; done
"$bin/autoneurald" --config "$tmp/autoneurald.toml" 2>"$tmp/daemon.log" &
pid=$!
ctl() { "$bin/autoneuralctl" --address "unix:path=$tmp/bus" "$@"; }
for _ in $(seq 1200); do
  ctl status 2>/dev/null | grep -q '"active"' && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; exit 1; }
  sleep 0.1
done

sample() {  # t rss_kb fds threads
  local rss threads fds
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  echo "$1 $rss $fds $threads $(cut -d' ' -f1 /proc/loadavg)" >> "$tmp/samples"
}
asked=0 answered=0
start=$(date +%s)
sample 0
next_sample=30
while :; do
  now=$(( $(date +%s) - start ))
  [ "$now" -ge "$duration" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "soak: the daemon died" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
  asked=$((asked + 1))
  if ctl ask "Is the driver using a phone?" >/dev/null 2>>"$tmp/ask-errors"; then
    answered=$((answered + 1))
  fi
  if [ "$now" -ge "$next_sample" ]; then
    sample "$now"
    next_sample=$((next_sample + 30))
  fi
  sleep 2
done
sample "$duration"
kill -TERM "$pid"
wait "$pid" || true

python3 - "$tmp/samples" "$out" "$asked" "$answered" "$duration" "$bin" "$tmp/ask-errors" <<'PY'
import sys, datetime, os
samples, out, asked, answered, duration, binary, errors = sys.argv[1:8]
rows = [l.split() for l in open(samples) if l.strip()]
rows = [(int(t), int(r), int(f), int(th), float(la)) for t, r, f, th, la in rows]
warm = rows[1] if len(rows) > 2 else rows[0]   # after the first 30 s (model loaded, buffers grown)
last = rows[-1]
rss_ok = last[1] <= warm[1] * 1.10
fd_ok = last[2] <= warm[2] + 2
th_ok = last[3] <= warm[3] + 2
answers_ok = int(answered) == int(asked)
err_lines = [l.strip() for l in open(errors)] if os.path.exists(errors) else []
with open(out, "w") as f:
    f.write("# Soak: autoneurald for %s s\n\n" % duration)
    f.write("Made by `bench/soak.sh %s` on %s UTC with `%s` (default model `models/autoneural-cabin`, "
            "synthetic `phone-use` looping at 10 fps, one `Ask` every 2 s, private dbus-daemon). "
            "Load average 1 min at each sample in the last column (2 cores).\n\n"
            % (duration, datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), binary))
    f.write("| t (s) | RSS (MB) | open FDs | threads | load |\n|---|---|---|---|---|\n")
    for t, r, fd, th, la in rows:
        f.write("| %d | %.1f | %d | %d | %.2f |\n" % (t, r / 1024, fd, th, la))
    f.write("\nQuestions answered: %s of %s.\n\n" % (answered, asked))
    if err_lines:
        f.write("Errors of the unanswered ones (first 5):\n\n" + "".join("    %s\n" % l for l in err_lines[:5]) + "\n")
    f.write("Verdict (after the 30 s warm-up): RSS %.1f -> %.1f MB (%s), FDs %d -> %d (%s), threads %d -> %d (%s), answers %s.\n"
            % (warm[1] / 1024, last[1] / 1024, "flat" if rss_ok else "GROWING", warm[2], last[2],
               "flat" if fd_ok else "GROWING", warm[3], last[3], "flat" if th_ok else "GROWING",
               "all" if answers_ok else "SOME MISSING"))
print(open(out).read())
sys.exit(0 if (rss_ok and fd_ok and th_ok and answers_ok) else 1)
PY
