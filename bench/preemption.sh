#!/usr/bin/env bash
# How long a safety probe waits while a question generates (issue 15, "safety preempts"): the
# inference crate's preempt_bench on the default cabin model and, when bench/releases.sh has made
# them, the random-weight LFM2-VL-450M release (fp32 and q4). One row per model into
# bench/preemption.md, the figures into bench/preemption.json. A row during which other processes
# used more than 0.3 cores is marked INVALID (run on an idle machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${RELEASES_CACHE:-$root/bench/cache/releases}"
threads="${THREADS:-2}"
rounds="${ROUNDS:-8}"
./scripts/setup >/dev/null
export AUTONEURAL_VENV="$root/.venv"
cargo build --release -p autoneural-inference --example preempt_bench
bin=target/release/examples/preempt_bench
rows=$(mktemp)
json=$(mktemp)
echo "[" > "$json"
first=1
run() {  # label, model dir, variant, tokens
  local out
  out=$(mktemp)
  "$bin" --model "$2" --variant "$3" --threads "$threads" --rounds "$rounds" --tokens "$4" \
    --label "$1" --json "$out" | tail -1 > "$out.row"
  local others
  others=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["other_cores"])' "$out")
  if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0.3 else 1)' "$others"; then
    sed 's/ |$/ (INVALID: other processes used more than 0.3 cores) |/' "$out.row" >> "$rows"
  else
    cat "$out.row" >> "$rows"
  fi
  [ $first = 1 ] || echo "," >> "$json"
  first=0
  cat "$out" >> "$json"
  rm -f "$out" "$out.row"
}
run "autoneural-cabin (default model)" models/autoneural-cabin fp32 120
for v in fp32 q4; do
  if [ -d "$cache/lfm2-vl-450m-random" ]; then
    run "LFM2-VL-450M (random)" "$cache/lfm2-vl-450m-random" "$v" 48
  else
    echo "bench/preemption.sh: $cache/lfm2-vl-450m-random missing (make it with bench/releases.sh); skipped" >&2
  fi
done
echo "]" >> "$json"
mv "$json" bench/preemption.json
python3 - bench/preemption.md "$rows" <<'PY'
import sys
report, rows = sys.argv[1], open(sys.argv[2]).read()
text = open(report).read()
start = text.index("<!-- rows -->") + len("<!-- rows -->\n")
end = text.index("<!-- /rows -->")
open(report, "w").write(text[:start] + rows + text[end:])
PY
rm -f "$rows"
echo "bench/preemption.md updated"
