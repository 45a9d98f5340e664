"""Assembles a contract-1 bundle (fp32 variant) from graphs export_models.py made, for the Rust
runtime's benchmark: hard links (no copy of the multi-GB weights), the forge's default tokenizer,
probes.toml and a manifest with SHA-256 checksums. Run in the forge venv from the repository root.

  python -m bench.make_bundle --config autoneural-1.5b --vision DIR/vision.onnx --decoder DIR --out BUNDLE
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import onnx

from forge.bundle import default_tokenizer, manifest_dict, save_manifest
from forge.config import get_config
from forge.conv_index import INPUT, MANIFEST_KEY
from forge.probes import probes_toml


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--vision", required=True)
    p.add_argument("--decoder", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    t = time.time()
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "fp32").mkdir(parents=True)
    vis = onnx.load(a.vision, load_external_data=False)
    size = vis.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    tokens = vis.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    cfg = get_config(a.config)
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, image_size=size))
    dec = Path(a.decoder)
    os.link(a.vision, out / "fp32" / "vision.onnx")
    for name in ("embed.onnx", "decoder_prefill.onnx", "decoder_step.onnx", "weights.data"):
        os.link(dec / name, out / "fp32" / name)
    tok = default_tokenizer(cfg)
    tok.save(str(out / "tokenizer.json"))
    (out / "probes.toml").write_text(probes_toml())
    man = manifest_dict(cfg, tok)
    man["image"]["tokens"] = tokens
    man["description"] = (f"{cfg.description} Assembled by bench/make_bundle.py: vision at {size} px, "
                          "random weights, fp32 only, no golden outputs.")
    # graphs exported before conv_index (an older cache) keep the single-step remainder
    prefill = onnx.load(str(dec / "decoder_prefill.onnx"), load_external_data=False)
    man["decoder"][MANIFEST_KEY] = any(i.name == INPUT for i in prefill.graph.input)
    man["variants"]["fp32"] = {"quantization": "none", **{g: f"fp32/{g}.onnx" for g in
                                                         ("vision", "embed", "decoder_prefill", "decoder_step")}}
    save_manifest(out, man, checksums=True)
    print(json.dumps({"bundle": str(out), "image_size": size, "s": round(time.time() - t, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
