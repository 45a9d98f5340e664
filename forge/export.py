"""ONNX export of the bundle's float graphs (ARCHITECTURE.md contract 1): vision, embed,
decoder_prefill (T = prefill_chunk) and decoder_step (T = 1), static shapes, opset 17, IR <= 10."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

from . import capacity, prefill_width
from .conv_index import upgrade_file
from .model import AutoNeural

OPSET = 17
MAX_IR = 10
# protobuf's 2 GiB limit: bigger graphs keep their weights in `<graph>.onnx.data` beside them
EXTERNAL_DATA_BYTES = 1 << 30


class VisionGraph(nn.Module):
    def __init__(self, model: AutoNeural):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.image_embeds(pixel_values)


class EmbedGraph(nn.Module):
    def __init__(self, model: AutoNeural):
        super().__init__()
        self.embed = model.language.embed_tokens

    def forward(self, input_ids):
        return self.embed(input_ids)


class DecoderGraph(nn.Module):
    """The static decoder step with flat, named inputs/outputs (see `Lfm2Decoder.step`)."""

    def __init__(self, model: AutoNeural):
        super().__init__()
        self.lm = model.language
        self.n_conv = len(self.lm.cfg.conv_layers)

    def forward(self, inputs_embeds, position_ids, attention_mask, *state):
        conv = state[: self.n_conv]
        kv = [(state[self.n_conv + 2 * i], state[self.n_conv + 2 * i + 1]) for i in range(len(self.lm.cfg.attention_layers))]
        logits, new_conv, new_kv = self.lm.step(inputs_embeds, position_ids, attention_mask, conv, kv)
        return (logits, *new_conv, *[t for pair in new_kv for t in pair])


def decoder_io(model: AutoNeural, t: int) -> tuple[list[str], list[str], list[torch.Tensor]]:
    """Input names, output names and example inputs (zeros, mask all-visible) of a decoder graph."""
    cfg = model.cfg
    d = cfg.decoder
    c = cfg.kv_capacity
    names = ["inputs_embeds", "position_ids", "attention_mask"]
    example = [
        torch.zeros(1, t, d.hidden),
        torch.arange(t, dtype=torch.int32)[None],
        torch.zeros(1, 1, t, c + t),
    ]
    outs = ["logits"]
    for i in d.conv_layers:
        names.append(f"past_conv.{i}")
        example.append(torch.zeros(1, d.hidden, d.conv_kernel))
        outs.append(f"present_conv.{i}")
    for i in d.attention_layers:
        for kind in ("key", "value"):
            names.append(f"past_key_values.{i}.{kind}")
            example.append(torch.zeros(1, d.num_kv_heads, c, d.head_dim))
            outs.append(f"present.{i}.{kind}")
    return names, outs, example


class WeightFile:
    """An external-data file that several graphs share: tensors are appended once (deduplicated by
    content, page-aligned), so decoder_prefill and decoder_step of a big model keep one copy of the
    weights on disk instead of two. `reused` counts the bytes a repeated tensor did not add."""

    ALIGN = 4096

    def __init__(self, path: Path):
        self.path = path
        self.index: dict[bytes, tuple[int, int]] = {}
        self.reused = 0
        path.unlink(missing_ok=True)
        path.touch()

    def put(self, data: bytes) -> tuple[int, int]:
        key = hashlib.sha256(data).digest()
        if key in self.index:
            self.reused += len(data)
        else:
            with open(self.path, "ab") as f:
                off = f.tell()
                pad = (-off) % self.ALIGN
                f.write(b"\0" * pad)
                f.write(data)
            self.index[key] = (off + pad, len(data))
        return self.index[key]

    def store(self, t: onnx.TensorProto, data: bytes) -> None:
        """Moves `data` (the tensor's bytes) into the file and points `t` at it."""
        off, n = self.put(bytes(data))
        t.ClearField("raw_data")
        del t.external_data[:]
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", str(off)), ("length", str(n))):
            e = t.external_data.add()
            e.key, e.value = k, v

    def holds(self, t: onnx.TensorProto) -> bool:
        return any(e.key == "location" and e.value == self.path.name for e in t.external_data)


def export_graph(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                 weights: WeightFile | None = None, params_as_inputs: bool = False) -> None:
    """torch.onnx.export (opset 17, the legacy tracer) of `module` on `args` to `path`, then
    `finalize`: short names, static output shapes, IR <= 10, and with `weights` every initializer
    over 1 KiB in that shared external-data file.

    `params_as_inputs` (for multi-GB models): the exporter runs with `export_params=False`, so it
    never holds its own copy of the weights (the copy that takes a 7.6 GB model near 17 GB peak);
    `attach_params` then writes the weights from the module's tensors one at a time, applying the
    Transposes the tracer puts on Linear weights (what the exporter's constant folding would do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        result = module(*args)
    result = result if isinstance(result, tuple) else (result,)
    shapes = {n: list(t.shape) for n, t in zip(outputs, result)}
    del result
    # Export into a scratch directory: above 2 GiB the exporter spills one file per tensor there.
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / path.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings: shapes are static on purpose
            torch.onnx.export(
                module,
                args,
                str(raw),
                input_names=inputs,
                output_names=outputs,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=not params_as_inputs,
                export_params=not params_as_inputs,
            )
        m = onnx.load(str(raw), load_external_data=False)
        if params_as_inputs:
            attach_params(m, module, set(inputs), weights)
        finalize(m, raw.parent, path, shapes, weights)


def attach_params(m: onnx.ModelProto, module: nn.Module, user_inputs: set[str], weights: WeightFile | None) -> None:
    """The graph inputs an `export_params=False` export made of the module's parameters and buffers
    become initializers again (a Transpose of one is applied to the stored tensor). With `weights`,
    each tensor goes straight into that file (the proto only gets a reference), so memory never
    holds a second copy of the weights."""

    def initializer(arr: np.ndarray, name: str) -> onnx.TensorProto:
        arr = np.ascontiguousarray(arr)
        if weights is None or arr.nbytes <= 1024:
            return numpy_helper.from_array(arr, name)
        t = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)
        weights.store(t, arr.tobytes())
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
    keep, folded = [], []
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


def finalize(m: onnx.ModelProto, src_dir: Path, dst: Path, output_shapes: dict[str, list[int]],
             weights: WeightFile | None = None) -> None:
    """Cap the IR version, shorten names, write the outputs' static shapes (the tracer leaves some
    unknown), check every graph input/output is fully static, save to dst. `m` is loaded without
    external data; tensors the exporter spilled are read from `src_dir`. With `weights`, every
    initializer over 1 KiB goes into that shared external-data file (streamed: a multi-GB graph
    is never loaded whole)."""
    m.ir_version = min(m.ir_version, MAX_IR)
    compact_names(m.graph)
    for vi in m.graph.output:
        shape = vi.type.tensor_type.shape
        shape.ClearField("dim")
        for n in output_shapes[vi.name]:
            shape.dim.add().dim_value = n
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims or any(not x.HasField("dim_value") for x in dims):
            raise RuntimeError(f"{dst.name}: {vi.name} has a symbolic or unknown dimension")
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            if weights is not None and weights.holds(t):
                continue  # already written by attach_params
            info = {e.key: e.value for e in t.external_data}
            with open(src_dir / info["location"], "rb") as f:
                f.seek(int(info.get("offset", 0)))
                data = f.read(int(info["length"])) if "length" in info else f.read()
        elif weights is not None and len(t.raw_data) > 1024:
            data = t.raw_data
        else:
            continue
        if weights is None:
            raise RuntimeError(f"{dst.name}: the exporter spilled weights; pass a WeightFile")
        weights.store(t, data)
    onnx.save(m, str(dst))


def compact_names(g: onnx.GraphProto) -> None:
    """Short node and tensor names (n0.., t0..): the tracer's module paths take more bytes than the
    weights of a tiny graph. Graph input and output names (the contract) are kept."""
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    rename: dict[str, str] = {}

    def new(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in rename:
            rename[name] = f"t{len(rename)}"
        return rename[name]

    for t in g.initializer:
        t.name = new(t.name)
    for i, n in enumerate(g.node):
        n.name = f"n{i}"
        for j, x in enumerate(n.input):
            n.input[j] = new(x)
        for j, x in enumerate(n.output):
            n.output[j] = new(x)
        if any(a.type == onnx.AttributeProto.GRAPH for a in n.attribute):
            raise RuntimeError("subgraphs are not expected in exported graphs")
    for vi in g.value_info:
        vi.name = new(vi.name)
    del g.value_info[:]  # shapes are re-inferred by ONNX Runtime; stale entries only cost bytes


def export_float_graphs(model: AutoNeural, out: Path, shared_decoder_weights: bool = False,
                        width_free: bool = True) -> dict[str, Path]:
    """Writes out/{vision,embed,decoder_prefill,decoder_step}.onnx (decoder_prefill with `conv_index`,
    forge/conv_index.py, and, with `width_free`, a named width, forge/prefill_width.py; both decoder
    graphs with a named KV capacity, forge/capacity.py); returns their paths by graph.
    A bundle with QDQ variants passes width_free=False and applies prefill_width.upgrade_file after
    quantizing: the NPU's graphs are quantized from the fixed-width graph (static shapes throughout).
    Models over EXTERNAL_DATA_BYTES keep weights outside the graphs: vision.onnx.data,
    embed.onnx.data, and decoder.onnx.data shared by both decoder graphs. `shared_decoder_weights`:
    the decoder graphs share decoder.onnx.data whatever the size (one copy of the weights on disk)."""
    cfg = model.cfg
    s = cfg.vision.image_size
    model.eval()
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    out.mkdir(parents=True, exist_ok=True)

    def store(name: str) -> WeightFile | None:
        return WeightFile(out / f"{name}.onnx.data") if big else None

    paths = {}
    paths["vision"] = out / "vision.onnx"
    export_graph(VisionGraph(model), (torch.zeros(1, 3, s, s),), paths["vision"], ["pixel_values"], ["image_embeds"],
            store("vision"))
    paths["embed"] = out / "embed.onnx"
    export_graph(
        EmbedGraph(model),
        (torch.zeros(1, cfg.prefill_chunk, dtype=torch.int32),),
        paths["embed"],
        ["input_ids"],
        ["inputs_embeds"],
        store("embed"),
    )
    shared = WeightFile(out / "decoder.onnx.data") if shared_decoder_weights and not big else store("decoder")
    for name, t in (("decoder_prefill", cfg.prefill_chunk), ("decoder_step", 1)):
        ins, outs, example = decoder_io(model, t)
        paths[name] = out / f"{name}.onnx"
        export_graph(DecoderGraph(model), tuple(example), paths[name], ins, outs, shared)
    upgrade_file(paths["decoder_prefill"])  # any number of valid rows per prefill call
    for name in ("decoder_prefill", "decoder_step"):
        capacity.upgrade_file(paths[name])  # the runtime picks the KV capacity (forge/capacity.py)
    if width_free:
        prefill_width.upgrade_file(paths["decoder_prefill"])  # ... and the prefill width (forge/prefill_width.py)
    return paths


def external_data_files(path: Path) -> list[Path]:
    """The external data files an ONNX file references (for checksums and copying)."""
    m = onnx.load(str(path), load_external_data=False)
    locs = set()
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                locs.add(e.value)
    return [path.parent / os.path.normpath(loc) for loc in sorted(locs)]
