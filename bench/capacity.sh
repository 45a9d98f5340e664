#!/usr/bin/env bash
# Attend over what is filled (issue 15 item 2), side by side in one run: the inference crate's
# capacity_bench on a random-weight LFM2-VL-450M bundle (forge convert-vl of the checkpoint
# `forge random-vl 450m` makes; fp32, KV capacity 4096, prefill chunk 128) whose decoder graphs
# name their KV capacity (forge/capacity.py), fp32 and its cpu-int4 variant (forge cpu-int4:
# MatMulNBits), each measured three ways: capacity buckets (the runtime's
# default), `preallocate_kv` (the whole capacity bound from the start) and, as forge exported
# before, the same graphs with the capacity fixed (bench/cache: .onnx files copied, weights
# hard-linked). Decode tok/s and prefill time at contexts of 256/1024/4096 positions. The bundle is
# made once into $BUNDLES_CACHE (~1.8 GB, never committed). Writes bench/capacity.md (the table
# between the row markers) and bench/capacity.json. Rows during which other processes used more
# than 0.3 cores are marked INVALID: run on an idle machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${BUNDLES_CACHE:-$root/bench/cache/bundles}"
threads="${THREADS:-2}"
iters="${ITERS:-3}"
contexts="${CONTEXTS:-256,1024,4096}"
variants="${VARIANTS:-fp32,cpu-int4}"
./forge/setup >/dev/null
export AUTONEURAL_VENV="$root/.venv"
model="$cache/lfm2-vl-450m-c4096"
fixed="$cache/lfm2-vl-450m-c4096-static"
bench/bundle_450m.sh "$cache" 4096
if ! grep -q '^\[variants.cpu-int4\]' "$model/manifest.toml"; then
  .venv-forge/bin/python -m forge cpu-int4 "$model"   # MatMulNBits, block 32, float LM head
fi
.venv-forge/bin/python - "$model" "$fixed" <<'PY'
import os, shutil, sys
from pathlib import Path

import numpy as np
import onnx

from forge import capacity
from forge.bundle import save_manifest
from forge.manifest import read

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(dst, ignore_errors=True)
for p in src.rglob("*"):
    q = dst / p.relative_to(src)
    if p.is_dir():
        q.mkdir(parents=True, exist_ok=True)
        continue
    q.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".onnx" or p.name in ("manifest.toml", "golden.json"):
        shutil.copyfile(p, q)  # rewritten below: never through a hard link into the source
    else:
        os.link(p, q)
man = read(dst)
c, t = man["decoder"]["kv_capacity"], man["decoder"]["prefill_chunk"]
for name, v in man["variants"].items():
    if v["quantization"] not in ("none", "int4"):
        continue
    for g, width in (("decoder_prefill", t), ("decoder_step", 1)):
        path = dst / v[g]
        m = onnx.load(str(path), load_external_data=False)
        sizes = {capacity.CAPACITY_DIM: c, capacity.MASK_DIM: c + width}
        example = {i.name: np.zeros([sizes.get(d.dim_param, d.dim_value) for d in i.type.tensor_type.shape.dim],
                                    np.float32) for i in m.graph.input}
        capacity.make_static(m, example)
        onnx.save(m, str(path))
    print(f"{dst}: {name} decoder graphs fixed at kv_capacity {c}")
save_manifest(dst, man, checksums=True)
PY
cargo build --release -p autoneural-inference --example capacity_bench
table=$(mktemp)
target/release/examples/capacity_bench --model "$model" --static "$fixed" --variants "$variants" \
  --threads "$threads" --iters "$iters" --contexts "$contexts" --json bench/capacity.json | tee "$table"
python3 -m bench.md_rows bench/capacity.md "$table" 7
rm -f "$table"
echo "bench/capacity.md updated"
