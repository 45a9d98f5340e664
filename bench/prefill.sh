#!/usr/bin/env bash
# Prefill without single steps (issue 15 item 1), side by side in one run: the inference crate's
# prefill_bench on a static-shape bundle of a random-weight LFM2-VL-450M (forge convert-vl of the
# checkpoint `forge random-vl 450m` makes; fp32, KV capacity 1024, prefill chunk 128, as the big
# configs use), once with `conv_index` (a prompt's remainder is one padded prefill call) and once
# in the contract before it (bench.old_prefill: the remainder one decoder_step per token). The
# bundles are made once into $BUNDLES_CACHE (~2.2 GB, never committed). Writes bench/prefill.md
# (the table between the row markers) and bench/prefill.json. Rows during which other processes
# used more than 0.3 cores are marked INVALID: run on an idle machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${BUNDLES_CACHE:-$root/bench/cache/bundles}"
threads="${THREADS:-2}"
iters="${ITERS:-5}"
lengths="${LENGTHS:-8,40,100}"
./forge/setup >/dev/null
export AUTONEURAL_VENV="$root/.venv"
new="$cache/lfm2-vl-450m-c1024"
old="$cache/lfm2-vl-450m-c1024-single-steps"
bench/bundle_450m.sh "$cache" 1024
.venv-forge/bin/python -m bench.old_prefill "$new" "$old"
cargo build --release -p autoneural-inference --example prefill_bench
table=$(mktemp)
target/release/examples/prefill_bench --model "$new" --old "$old" --threads "$threads" \
  --iters "$iters" --lengths "$lengths" --json bench/prefill.json | tee "$table"
python3 -m bench.md_rows bench/prefill.md "$table" 5
rm -f "$table"
echo "bench/prefill.md updated"
