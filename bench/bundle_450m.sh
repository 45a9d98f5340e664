#!/usr/bin/env bash
# The random-weight LFM2-VL-450M bundle the bench scripts share, made once:
#   bench/bundle_450m.sh CACHE CAPACITY   ->  CACHE/lfm2-vl-450m-cCAPACITY
# (forge random-vl 450m -> CACHE/hf-450m, then forge convert-vl: fp32, no QNN, prefill chunk 128).
set -euo pipefail
cache="$1" capacity="$2"
out="$cache/lfm2-vl-450m-c$capacity"
if [ ! -f "$out/manifest.toml" ]; then
  hf="$cache/hf-450m"
  [ -f "$hf/config.json" ] || .venv-forge/bin/python -m forge random-vl 450m "$hf"
  .venv-forge/bin/python -m forge convert-vl --checkpoint "$hf" --out "$out" --quant none --no-qnn \
    --kv-capacity "$capacity" --prefill-chunk 128
fi
