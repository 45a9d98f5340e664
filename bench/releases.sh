#!/usr/bin/env bash
# Published LFM2-VL releases at real size on this CPU (issue 12): random-weight LFM2-VL-450M and
# LFM2(.5)-VL-1.6B checkpoints with the real dimensions (forge random-vl), exported in the published
# ONNX layout (forge published-fixture --checkpoint, fp32 + q4) into bench/cache/releases/ once
# (~10 GB, never committed), then one release_bench row per model and variant into
# bench/releases.md. Run on an idle machine: the rows record the load average.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${RELEASES_CACHE:-$root/bench/cache/releases}"
threads="${THREADS:-2}"
iters="${ITERS:-3}"
./forge/setup
export AUTONEURAL_VENV="$root/.venv"
cargo build --release -p autoneural-inference --example release_bench
for size in 450m 1.6b; do
  out="$cache/lfm2-vl-$size-random"
  if [ ! -f "$out/onnx/decoder_q4.onnx" ]; then
    hf="$cache/hf-$size"
    .venv-forge/bin/python -m forge random-vl "$size" "$hf"
    .venv-forge/bin/python -m forge published-fixture --checkpoint "$hf" --out "$out" --variants q4
    rm -rf "$hf"
  fi
done
report="$root/bench/releases.md"
rows=$(mktemp)
for size in 450m 1.6b; do
  for variant in fp32 q4; do
    target/release/examples/release_bench --model "$cache/lfm2-vl-$size-random" --variant "$variant" \
      --threads "$threads" --iters "$iters" --label "LFM2-VL-$size (random)" | tail -1 >> "$rows"
  done
done
python3 - "$report" "$rows" <<'PY'
import sys, re
report, rows = sys.argv[1], open(sys.argv[2]).read()
text = open(report).read()
start = text.index("<!-- rows -->") + len("<!-- rows -->\n")
end = text.index("<!-- /rows -->")
open(report, "w").write(text[:start] + rows + text[end:])
PY
echo "bench/releases.md updated"
