"""Generates the benchmark's random-weight graphs with the forge's own model code (run in the forge
venv, from the repository root: `python -m bench.export_models ...`). Each call exports one thing, so
the caller can free memory between big steps and never runs two big exports at once.

  vision  --config C --size S --out DIR [--quant w8a16]   DIR/vision.onnx (+ DIR/w8a16/vision.onnx)
  decoder --config C --out DIR [--all-attention] [--graphs step,prefill,embed] [--capacities 256,1024]

Why not `python -m forge export`: it builds the whole bundle at the config's one image size and KV
capacity (with golden outputs and QNN checks); the benchmark needs the encoders at 256/512/768 and
the decoder at several capacities. This script reuses the forge's modules (configs, model, graph
wrappers, quantizer), so the graphs are the ones the bundles contain, only with other static shapes.

Big decoders are written with all weights in one `weights.data` file that decoder_step and
decoder_prefill share (identical tensors are stored once), and the capacity variants
`decoder_step_c{C}.onnx` are the step graph with other KV input shapes: the traced graph has no
reshape that depends on the capacity (K/V are concatenated along the sequence axis and the mask is
added), which `bench_decode.py` checks by comparing logits across capacities.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from forge import export as fx
from forge.config import TINY_STAGES, DecoderConfig, ModelConfig, get_config
from forge.model import build_model

ALIGN = 4096


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


class SharedData:
    """One external-data file, appended to, identical tensors stored once (by SHA-1 of the bytes)."""

    def __init__(self, path: Path):
        self.path = path
        self.index: dict[str, tuple[int, int]] = {}
        if path.exists():
            path.unlink()
        self.f = open(path, "wb")
        self.reused = 0

    def put(self, raw: bytes) -> tuple[int, int, bool]:
        h = hashlib.sha1(raw).hexdigest()
        if h in self.index:
            self.reused += len(raw)
            return (*self.index[h], True)
        off = self.f.tell()
        pad = (-off) % ALIGN
        if pad:
            self.f.write(b"\0" * pad)
            off += pad
        self.f.write(raw)
        self.index[h] = (off, len(raw))
        return off, len(raw), False

    def close(self):
        self.f.close()


def _tensor_bytes(t: onnx.TensorProto, base: Path) -> bytes:
    ext = {e.key: e.value for e in t.external_data}
    with open(base / ext["location"], "rb") as f:
        f.seek(int(ext.get("offset", 0)))
        n = int(ext["length"]) if "length" in ext else -1
        return f.read(n)


def export_lowmem(module, args, dst: Path, inputs, outputs, data: SharedData | None, params_as_inputs: bool = False) -> dict:
    """torch.onnx.export into a scratch dir, then rewrite: compact names, static output shapes,
    IR <= 10, and (with `data`) every initializer above 1 KiB moved into the shared data file one
    tensor at a time.

    params_as_inputs (for the ~2B decoders): the exporter gets `export_params=False`, so it never
    holds a second copy of the weights (the legacy exporter's copy is what makes a 7.6 GB model peak
    near 17 GB); the weights are then written from the torch parameters one by one, and the
    Transpose nodes the tracer puts on Linear weights are applied to the stored tensors, which is
    what the exporter's constant folding would have done."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        res = module(*args)
    res = res if isinstance(res, tuple) else (res,)
    shapes = {n: list(t.shape) for n, t in zip(outputs, res)}
    del res
    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(raw), input_names=inputs, output_names=outputs,
                              opset_version=fx.OPSET, dynamo=False, do_constant_folding=not params_as_inputs,
                              export_params=not params_as_inputs)
        # small graphs (vision, < 2 GiB) keep their weights inline; big ones go to the shared file
        m = onnx.load(str(raw), load_external_data=data is None)
        if params_as_inputs:
            attach_params(m, module, set(inputs), data)
        m.ir_version = min(m.ir_version, fx.MAX_IR)
        fx.compact_names(m.graph)
        for vi in m.graph.output:
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for n in shapes[vi.name]:
                shape.dim.add().dim_value = n
        if data is not None:
            for t in m.graph.initializer:
                if any(e.key == "location" and e.value == data.path.name for e in t.external_data):
                    continue  # already streamed into the shared file by attach_params
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    b = _tensor_bytes(t, Path(tmp))
                elif len(t.raw_data) > 1024:
                    b = t.raw_data
                else:
                    continue
                off, n, _ = data.put(b)
                t.ClearField("raw_data")
                del t.external_data[:]
                t.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", data.path.name), ("offset", str(off)), ("length", str(n))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
        onnx.save(m, str(dst))
    return {"export_s": round(time.time() - t0, 1)}


def attach_params(m: onnx.ModelProto, module, user_inputs: set[str], data: SharedData | None) -> None:
    """Graph inputs named after module parameters/buffers become initializers (Transposes of them
    applied). With `data`, each tensor goes straight into the shared file (the proto only gets a
    reference), so memory never holds a second copy of the weights."""
    from onnx import numpy_helper

    def initializer(arr: np.ndarray, name: str) -> onnx.TensorProto:
        arr = np.ascontiguousarray(arr)
        if data is None or arr.nbytes <= 1024:
            return numpy_helper.from_array(arr, name)
        off, n, _ = data.put(arr.tobytes())
        t = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", data.path.name), ("offset", str(off)), ("length", str(n))):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(dict(module.named_buffers(remove_duplicate=False)))
    g = m.graph
    params = {vi.name for vi in g.input if vi.name not in user_inputs}
    missing = params - set(tensors)
    if missing:
        raise RuntimeError(f"graph inputs that are neither inputs nor parameters: {sorted(missing)[:5]}")
    consumers: dict[str, int] = {}
    for n in g.node:
        for x in n.input:
            consumers[x] = consumers.get(x, 0) + 1
    keep = []
    folded = []
    for n in g.node:
        if n.op_type == "Transpose" and n.input[0] in params:
            perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), None)
            arr = tensors[n.input[0]].detach().numpy()
            folded.append(initializer(arr.transpose(perm) if perm else arr.T, n.output[0]))
            consumers[n.input[0]] -= 1
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(folded)
    for name in sorted(params):
        if consumers.get(name, 0) > 0:
            g.initializer.append(initializer(tensors[name].detach().numpy(), name))
    kept_inputs = [vi for vi in g.input if vi.name in user_inputs]
    del g.input[:]
    g.input.extend(kept_inputs)


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
    from forge.images import draw

    s = cfg.vision.image_size
    mean = np.array(cfg.vision.mean, np.float32)[:, None, None]
    std = np.array(cfg.vision.std, np.float32)[:, None, None]
    out = []
    for i in range(n):
        img, _ = draw(seed0 + i, s)
        x = np.asarray(img.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0
        out.append(((x - mean) / std)[None].astype(np.float32))
    return out


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
        rep.update(export_lowmem(fx.VisionGraph(model), (torch.zeros(1, 3, s, s),), fp32,
                                 ["pixel_values"], ["image_embeds"], None))
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
    data = SharedData(out / "weights.data")
    done = []
    for g in graphs:
        t = time.time()
        if g == "embed":
            args = (torch.zeros(1, cfg.prefill_chunk, dtype=torch.int32),)
            export_lowmem(fx.EmbedGraph(model), args, out / "embed.onnx", ["input_ids"], ["inputs_embeds"], data,
                          params_as_inputs=a.lowmem)
        elif g in ("step", "prefill"):
            tt = 1 if g == "step" else cfg.prefill_chunk
            ins, outs, example = fx.decoder_io(model, tt)
            export_lowmem(fx.DecoderGraph(model), tuple(example), out / f"decoder_{g}.onnx", ins, outs, data,
                          params_as_inputs=a.lowmem)
        else:
            raise SystemExit(f"unknown graph {g!r}")
        done.append({"graph": g, "s": round(time.time() - t, 1)})
    data.close()
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
