"""Decoder graphs whose KV capacity is chosen by the runtime: attention over what is filled.

A decoder graph reads its whole KV buffer on every call: `past_key_values.{i}.*` [1,KV,C,D] and the
additive `attention_mask` [1,1,T,C+T]. With C fixed at the manifest's `kv_capacity`, a decode step
near the start of a 4096-slot context still reads and scores all 4096 slots. Nothing inside the
graph depends on C (the past is concatenated with the T new rows, scored, softmaxed and applied),
so the CPU variants name that dimension instead of fixing it:

- `past_key_values.{i}.key` / `.value` dimension 2 becomes `kv_capacity`,
- `attention_mask` dimension 3 becomes `mask_width` (= kv_capacity + T).

The runtimes (Rust inference/src/decoder.rs and forge/runtime.py) then keep the KV in capacity
buckets (`buckets`: 64, 256, 1024, ... up to the manifest's kv_capacity) and bind the smallest one
the context fits in, copying the filled rows once when the context grows into the next bucket.

Only float and int4 (MatMulNBits) graphs are edited: QDQ graphs are for the NPU, whose compiled
graphs need static shapes; `make_static` fixes the dimensions again (quantize.quantize_graph calls
it on the shapes it calibrates with). Like conv_index.py this is a graph edit, so that built
bundles upgrade in place (`python -m forge upgrade-capacity BUNDLE`) and new exports get the same
graph (export.export_float_graphs applies it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

CAPACITY_DIM = "kv_capacity"
MASK_DIM = "mask_width"
KV_PREFIX = "past_key_values."
MASK = "attention_mask"
SMALLEST_BUCKET = 64
BUCKET_GROWTH = 4


def buckets(capacity: int) -> list[int]:
    """The KV capacities a runtime binds, smallest first: 64, 256, 1024, ... below `capacity`, then
    `capacity` itself (the Rust runtime's `kv_buckets` gives the same list)."""
    out, b = [], SMALLEST_BUCKET
    while b < capacity:
        out.append(b)
        b *= BUCKET_GROWTH
    return out + [capacity]


def bucket_for(capacity: int, needed: int) -> int:
    """The smallest bucket that holds `needed` positions (the capacity itself when none does)."""
    return next((b for b in buckets(capacity) if b >= needed), capacity)


def _capacity_dims(m: onnx.ModelProto):
    """(value_info, dimension index, symbolic name) of every capacity dimension of a decoder graph."""
    for vi in m.graph.input:
        if vi.name.startswith(KV_PREFIX):
            yield vi, 2, CAPACITY_DIM
        elif vi.name == MASK:
            yield vi, 3, MASK_DIM


def make_growable(m: onnx.ModelProto, where: str = "decoder graph") -> bool:
    """Names the capacity dimensions of a static decoder graph. Returns False when they are named
    already. Refuses QDQ graphs (NPU graphs stay static) and graphs without KV inputs."""
    found = list(_capacity_dims(m))
    if not any(name == CAPACITY_DIM for _, _, name in found) or not any(name == MASK_DIM for _, _, name in found):
        raise ValueError(f"{where}: no past_key_values / attention_mask inputs (not a decoder graph)")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node):
        raise ValueError(f"{where}: a QDQ graph keeps static shapes (the NPU compiles them)")
    changed = False
    for vi, axis, name in found:
        dim = vi.type.tensor_type.shape.dim[axis]
        if dim.dim_param == name:
            continue
        if dim.dim_param:
            raise ValueError(f"{where}: {vi.name} dimension {axis} is already named `{dim.dim_param}`")
        dim.Clear()
        dim.dim_param = name
        changed = True
    return changed


def make_static(m: onnx.ModelProto, example: dict[str, np.ndarray]) -> bool:
    """Fixes every named dimension of the graph inputs to the shape of `example`'s arrays (the
    calibration feeds a QDQ graph is quantized on), and the outputs' dimensions of the same names.
    Returns whether anything changed."""
    changed, sizes = False, {}
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if dim.dim_param:
                if vi.name not in example:
                    raise ValueError(f"{vi.name} has the symbolic dimension `{dim.dim_param}` and no example feed")
                size = int(example[vi.name].shape[axis])
                sizes[dim.dim_param] = size
                dim.Clear()
                dim.dim_value = size
                changed = True
    # outputs named after an input dimension (the prefill width, forge/prefill_width.py) follow it
    for vi in m.graph.output:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param in sizes:
                size = sizes[dim.dim_param]
                dim.Clear()
                dim.dim_value = size
                changed = True
    return changed


def is_growable(input_shapes: dict[str, list]) -> bool:
    """Whether a decoder graph (its inputs' shapes as onnxruntime reports them: a str for a named
    dimension) takes any capacity."""
    return any(isinstance(shape[2], str) for name, shape in input_shapes.items() if name.startswith(KV_PREFIX))


def upgrade_file(path: Path) -> bool:
    """Applies make_growable to an ONNX file in place (external weight files stay untouched)."""
    m = onnx.load(str(path), load_external_data=False)
    if not make_growable(m, str(path)):
        return False
    onnx.save(m, str(path))
    return True


def upgrade_bundle(bundle: Path, log=print) -> dict:
    """Makes the decoder graphs of a built bundle's float and int4 variants growable, in place (same
    weights), and rewrites those variants' golden cases (the runtime now binds capacity buckets:
    the same tokens, probabilities equal up to float rounding). QDQ variants are untouched."""
    return upgrade_cpu_graphs(bundle, ("decoder_prefill", "decoder_step"), upgrade_file, log)


def upgrade_cpu_graphs(bundle: Path, graphs: tuple[str, ...], upgrade, log=print) -> dict:
    """Applies `upgrade(path) -> bool` (a graph edit in place) to the `graphs` of a built bundle's
    float and int4 variants and, when any changed, rewrites those variants' golden cases and the
    manifest's checksums. QDQ variants are untouched (a graph file they share is refused)."""
    import json

    from .bundle import save_manifest
    from .golden import run_cases
    from .manifest import read
    from .probes import read_probes

    man = read(bundle)
    cpu = {n: v for n, v in man["variants"].items() if v["quantization"] in ("none", "int4")}
    files = sorted({v[g] for v in cpu.values() for g in graphs})
    qdq_files = {v[g] for n, v in man["variants"].items() if n not in cpu for g in graphs}
    shared = sorted(set(files) & qdq_files)
    if shared:
        raise ValueError(f"{bundle}: {shared} are shared by a float and a QDQ variant")
    upgraded = [f for f in files if upgrade(bundle / f)]
    if not upgraded:
        return {"upgraded": []}
    save_manifest(bundle, man, checksums=False)
    golden_path = bundle / "golden.json"
    rewritten = []
    if golden_path.exists():
        probes = read_probes(bundle / "probes.toml")
        golden = json.loads(golden_path.read_text())
        for name in sorted(set(golden) & set(cpu)):
            images = [c["image"] for c in golden[name]["cases"]]
            golden[name] = {"cases": run_cases(bundle, name, images, probes)}
            rewritten.append(name)
            log(f"golden: {name} rewritten on {len(images)} images")
        golden_path.write_text(json.dumps(golden, indent=1) + "\n")
    save_manifest(bundle, man, checksums=True)
    return {"upgraded": upgraded, "golden_rewritten": rewritten}
