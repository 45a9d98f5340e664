"""Generates the benchmark's random-weight graphs with the forge's own model code (run in the forge
venv, from the repository root: `python -m bench.export_models ...`). Each call exports one thing, so
the caller can free memory between big steps and never runs two big exports at once.

  vision  --config C --size S --out DIR [--quant w8a16]   DIR/vision.onnx (+ DIR/w8a16/vision.onnx)
  decoder --config C --out DIR [--all-attention] [--graphs step,prefill,embed] [--capacities 256,1024]

Why not `python -m forge export`: it builds the whole bundle at the config's one image size and KV
capacity (with golden outputs and QNN checks); the benchmark needs the encoders at 256/512/768 and
the decoder at several capacities. This script reuses the forge's modules (configs, model, graph
wrappers, exporter, quantizer): every graph goes through `forge.export.export_graph`, so the graphs
are the ones the bundles contain, only with other static shapes.

Decoders are written with all weights in one `weights.data` file (a `forge.export.WeightFile`) that
embed, decoder_step and decoder_prefill share (identical tensors are stored once); `--lowmem` (always
on above 1.5 B decoder parameters) is the exporter's `params_as_inputs` mode, which never holds a
second copy of the weights. The capacity variants
`decoder_step_c{C}.onnx` are the step graph with other KV input shapes: the traced graph has no
reshape that depends on the capacity (K/V are concatenated along the sequence axis and the mask is
added), which `bench_decode.py` checks by comparing logits across capacities.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from forge import export as fx
from forge.config import TINY_STAGES, ModelConfig, get_config
from forge.conv_index import upgrade_file
from forge.images import draw, pixel_values
from forge.model import build_model


def vision_config(name: str, size: int) -> ModelConfig:
    """The config's encoder at `size` px, with a one-layer decoder (the vision graph never uses it;
    building the real 1.2-1.9B decoder would only cost memory). The ViT's grid follows the size
    (patch 14, pixel shuffle 2: the size must be a multiple of 28)."""
    cfg = get_config(name)
    v = cfg.vision
    if v.kind == "vit":
        step = v.patch_size * v.pixel_shuffle
        if size % step:
            raise SystemExit(f"{name}: image size {size} is not a multiple of {step}")
        v = dataclasses.replace(v, image_size=size, grid=size // step)
    else:
        v = dataclasses.replace(v, image_size=size)
    d = dataclasses.replace(cfg.decoder, vocab_size=64, intermediate=64, layer_types=("conv",))
    return cfg.replace(vision=v, decoder=d)


def decoder_config(name: str, all_attention: bool) -> ModelConfig:
    """The config's decoder (optionally with every layer full attention: the same-size all-attention
    comparator), with a tiny vision encoder the decoder graphs never use."""
    cfg = get_config(name)
    d = cfg.decoder
    if all_attention:
        d = dataclasses.replace(d, layer_types=("full_attention",) * d.num_layers)
    tiny = dataclasses.replace(cfg.vision, kind="mobilenetv5", image_size=128, stem_channels=16,
                               stages=TINY_STAGES, msfa_channels=48, grid=4)
    return cfg.replace(vision=tiny, decoder=d)


def with_capacity(step: Path, dst: Path, capacity: int) -> None:
    """The step graph with KV buffers of `capacity` rows: past K/V dim 2 and the mask's last dim."""
    m = onnx.load(str(step), load_external_data=False)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name.startswith("past_key_values."):
            dims[2].dim_value = capacity
        elif vi.name == "attention_mask":
            t = dims[2].dim_value
            dims[3].dim_value = capacity + t
    onnx.save(m, str(dst))


def calibration_images(cfg: ModelConfig, n: int, seed0: int) -> list[np.ndarray]:
    """n procedurally drawn cabin images (seeds seed0..), normalised as the bundle's runtime does."""
    v = cfg.vision
    return [pixel_values(draw(seed0 + i, v.image_size)[0], v.image_size, v.mean, v.std) for i in range(n)]


def cmd_vision(a) -> dict:
    torch.set_num_threads(a.threads)
    cfg = vision_config(a.config, a.size)
    out = Path(a.out)
    rep: dict = {"config": a.config, "size": a.size, "tokens": cfg.vision.tokens}
    t = time.time()
    model = build_model(cfg)
    rep["vision_params"] = sum(p.numel() for p in model.vision.parameters())
    rep["connector_params"] = sum(p.numel() for p in model.connector.parameters())
    rep["build_s"] = round(time.time() - t, 1)
    fp32 = out / "vision.onnx"
    if not fp32.exists():
        s = cfg.vision.image_size
        t = time.time()
        fx.export_graph(fx.VisionGraph(model), (torch.zeros(1, 3, s, s),), fp32, ["pixel_values"], ["image_embeds"])
        rep["export_s"] = round(time.time() - t, 1)
    del model
    held = out / "heldout.npy"  # images the benchmark feeds for latency and SQNR (not calibration ones)
    if not held.exists():
        np.save(held, np.concatenate(calibration_images(cfg, a.heldout, 2000)))
    if "w8a16" in a.quant:
        from forge.quantize import quantize_graph

        q = out / "w8a16" / "vision.onnx"
        if not q.exists():
            t = time.time()
            feeds = [{"pixel_values": x} for x in calibration_images(cfg, a.calibration, 1000)]
            quantize_graph(fp32, q, "w8a16", feeds)
            rep["quantize_s"] = round(time.time() - t, 1)
    prev = json.loads((out / "export.json").read_text()) if (out / "export.json").exists() else {}
    (out / "export.json").write_text(json.dumps({**prev, **rep}, indent=1))
    return rep


def cmd_decoder(a) -> dict:
    torch.set_num_threads(a.threads)
    cfg = decoder_config(a.config, a.all_attention)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    graphs = [g for g in a.graphs.split(",") if g]
    rep: dict = {"config": a.config, "all_attention": a.all_attention, "kv_capacity": cfg.kv_capacity,
                 "prefill_chunk": cfg.prefill_chunk, "layer_types": list(cfg.decoder.layer_types)}
    t = time.time()
    model = build_model(cfg)
    lm = model.language
    rep["decoder_params"] = sum(p.numel() for p in lm.parameters())
    # above ~1.5 B fp32 parameters the exporter's own weight copy does not fit beside the model here
    a.lowmem = a.lowmem or rep["decoder_params"] > 1_500_000_000
    rep["lowmem_export"] = a.lowmem
    rep["build_s"] = round(time.time() - t, 1)
    data = fx.WeightFile(out / "weights.data")
    done = []
    for g in graphs:
        t = time.time()
        if g == "embed":
            args = (torch.zeros(1, cfg.prefill_chunk, dtype=torch.int32),)
            fx.export_graph(fx.EmbedGraph(model), args, out / "embed.onnx", ["input_ids"], ["inputs_embeds"], data,
                            params_as_inputs=a.lowmem)
        elif g in ("step", "prefill"):
            tt = 1 if g == "step" else cfg.prefill_chunk
            ins, outs, example = fx.decoder_io(model, tt)
            fx.export_graph(fx.DecoderGraph(model), tuple(example), out / f"decoder_{g}.onnx", ins, outs, data,
                            params_as_inputs=a.lowmem)
            if g == "prefill" and "conv" in cfg.decoder.layer_types:
                # conv_index: prompts of any length prefill (an all-attention decoder has no conv
                # state for padding to enter: its partial chunks only drop the padded K/V rows)
                upgrade_file(out / "decoder_prefill.onnx")
        else:
            raise SystemExit(f"unknown graph {g!r}")
        done.append({"graph": g, "s": round(time.time() - t, 1)})
    del model, lm
    rep["graphs"] = done
    rep["data_bytes"] = os.path.getsize(out / "weights.data")
    rep["dedup_bytes"] = data.reused
    for c in [int(x) for x in a.capacities.split(",") if x]:
        with_capacity(out / "decoder_step.onnx", out / f"decoder_step_c{c}.onnx", c)
    (out / "export.json").write_text(json.dumps(rep, indent=1))
    return rep


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("vision")
    v.add_argument("--config", required=True)
    v.add_argument("--size", type=int, required=True)
    v.add_argument("--out", required=True)
    v.add_argument("--quant", default="")
    v.add_argument("--calibration", type=int, default=2)
    v.add_argument("--heldout", type=int, default=2)
    v.add_argument("--threads", type=int, default=2)
    v.set_defaults(fn=cmd_vision)
    d = sub.add_parser("decoder")
    d.add_argument("--config", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--all-attention", action="store_true")
    d.add_argument("--graphs", default="step")
    d.add_argument("--capacities", default="")
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--lowmem", action="store_true", help="export without the exporter's copy of the weights")
    d.set_defaults(fn=cmd_decoder)
    a = p.parse_args()
    t = time.time()
    rep = a.fn(a)
    rep["total_s"] = round(time.time() - t, 1)
    print(json.dumps(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
