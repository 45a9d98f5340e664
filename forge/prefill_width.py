"""decoder_prefill of any width: a prompt part of n rows runs in a call of about n rows, not T.

A prefill graph is exported at the width T = `prefill_chunk`. With `conv_index` (forge/conv_index.py)
a part of n < T rows already runs as one call, but padded to T rows: a 64-token prompt on a bundle
with T = 128 computes 128 rows, half of them padding. Nothing in the graph needs T except the
exporter's Reshape shapes, which bake it (q `[1,T,NH,D]`, k/v `[1,T,KV,D]`, the grouped-query
`[1,KV,g*T,D]`, `[1,NH,T,D]`, `[1,T,NH*D]`): each has exactly one entry that scales with T, at
index 1 or 2. The CPU variants turn that entry into -1 (Reshape infers it) and name the width:

- `inputs_embeds` dimension 1, `position_ids` dimension 1, `attention_mask` dimension 2, `logits`
  dimension 1 and every `present.*` dimension 2 become `prefill_width`.

The runtimes (inference/src/decoder.rs, forge/runtime.py) then run a prompt part in the smallest
width of `widths(T)` (T, T/2, T/4, ... down to MIN_WIDTH) that holds it, padded as before with
`conv_index` keeping the padding out of the conv state and only the valid K/V rows kept.

Which entry scales with T: the first entry after the batch entry that is a multiple of T. That is
the exporter's layout (batch, then heads or T) whenever the head counts are below T; `check`
proves it on the edited graph: a run at a smaller width must give the same valid rows as a run at
width T (a wrong entry gives another shape or other numbers), and `make_width_free` refuses a
graph where any shape would be ambiguous in a way the check cannot settle.

Only float and int4 graphs with `conv_index` (or without conv layers) and a named KV capacity
(forge/capacity.py) are edited: QDQ graphs keep static shapes for the NPU. Like the other edits,
built bundles upgrade in place (`python -m forge upgrade-width BUNDLE`) and new exports get the same
graph (export.export_float_graphs applies it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from . import capacity
from .conv_index import INPUT as CONV_INDEX
from .conv_index import _drop_dead

WIDTH_DIM = "prefill_width"
MIN_WIDTH = 4
# (graph input or output name or prefix, axis) of every width dimension
_INPUT_DIMS = {"inputs_embeds": 1, "position_ids": 1, "attention_mask": 2}
_OUTPUT_DIMS = {"logits": 1}
_PRESENT_PREFIX, _PRESENT_AXIS = "present.", 2


class WidthError(ValueError):
    """The graph cannot take any width (names the file and the reason)."""


def widths(chunk: int) -> list[int]:
    """The widths a runtime runs a width-free prefill graph at, smallest first: `chunk` halved while
    it stays even and >= MIN_WIDTH (the Rust runtime's `prefill_widths` gives the same list)."""
    out, w = [chunk], chunk
    while w % 2 == 0 and w // 2 >= MIN_WIDTH:
        w //= 2
        out.append(w)
    return sorted(out)


def width_for(chunk: int, rows: int) -> int:
    """The smallest width that holds `rows` (<= chunk) rows."""
    return next(w for w in widths(chunk) if w >= rows)


def is_width_free(input_shapes: dict[str, list]) -> bool:
    """Whether a prefill graph (its inputs' shapes as onnxruntime reports them: a str for a named
    dimension) takes any width."""
    shape = input_shapes.get("inputs_embeds")
    return bool(shape) and isinstance(shape[1], str)


def _width(m: onnx.ModelProto) -> int:
    for vi in m.graph.input:
        if vi.name == "inputs_embeds":
            d = vi.type.tensor_type.shape.dim[1]
            return -1 if d.dim_param else d.dim_value
    raise WidthError("no inputs_embeds input (not a decoder graph)")


def make_width_free(m: onnx.ModelProto, where: str = "decoder_prefill") -> bool:
    """Names the width of a static CPU prefill graph (see the module doc). Returns False when it is
    named already."""
    g = m.graph
    t = _width(m)
    if t == -1:
        return False
    if t <= 1:
        raise WidthError(f"{where}: width {t}: only a prefill graph (width > 1) is edited")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node):
        raise WidthError(f"{where}: a QDQ graph keeps static shapes (the NPU compiles them)")
    names = {i.name for i in g.input}
    if any(o.name.startswith("present_conv.") for o in g.output) and CONV_INDEX not in names:
        raise WidthError(f"{where}: no `{CONV_INDEX}` input: the conv state would be a slice at column {t} "
                         "(`python -m forge upgrade-prefill` first)")
    if not any(name.startswith(capacity.KV_PREFIX) for name in names) or not capacity.is_growable(
        {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in g.input}
    ):
        raise WidthError(f"{where}: the KV capacity is fixed (`python -m forge upgrade-capacity` first)")
    consts = {x.name: x for x in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = next(a.t for a in n.attribute if a.name == "value")
    # the only ops that take a shape the exporter could bake T into
    for n in g.node:
        if n.op_type in ("Expand", "Tile", "ConstantOfShape", "Range") and any(
            x in consts and _scales(numpy_helper.to_array(consts[x]), t) for x in n.input
        ):
            raise WidthError(f"{where}: {n.op_type} node `{n.name}` has a constant operand that may bake the width {t}")
    edited = 0
    for n in g.node:
        if n.op_type != "Reshape" or n.input[1] not in consts:
            continue
        proto = consts[n.input[1]]
        shape = numpy_helper.to_array(proto).astype(np.int64)
        hits = [i for i in range(1, shape.size) if shape[i] % t == 0]
        if not hits:
            continue  # a reshape of something without rows (weights, per-head constants)
        if (shape == -1).any() or (shape == 0).any():
            raise WidthError(f"{where}: Reshape `{n.name}` has shape {shape.tolist()}: -1 or 0 with width {t}")
        new = shape.copy()
        new[hits[0]] = -1
        # the shape constant may feed other nodes too: give this Reshape its own
        fresh = numpy_helper.from_array(new, name=f"{n.input[1]}.w{edited}")
        g.initializer.append(fresh)
        n.input[1] = fresh.name
        edited += 1
    if not edited:
        raise WidthError(f"{where}: no Reshape shape holds the width {t} (not the exporter's graph?)")

    def rename(vi, axis: int) -> None:
        dim = vi.type.tensor_type.shape.dim[axis]
        if dim.dim_param:
            raise WidthError(f"{where}: {vi.name} dimension {axis} is already named `{dim.dim_param}`")
        if dim.dim_value != t:
            raise WidthError(f"{where}: {vi.name} dimension {axis} is {dim.dim_value}, want the width {t}")
        dim.Clear()
        dim.dim_param = WIDTH_DIM

    for vi in g.input:
        if vi.name in _INPUT_DIMS:
            rename(vi, _INPUT_DIMS[vi.name])
    for vi in g.output:
        if vi.name in _OUTPUT_DIMS:
            rename(vi, _OUTPUT_DIMS[vi.name])
        elif vi.name.startswith(_PRESENT_PREFIX):
            rename(vi, _PRESENT_AXIS)
    del g.value_info[:]  # intermediate shapes at width T: onnxruntime infers them again
    _drop_dead(g)
    return True


def _scales(v: np.ndarray, t: int) -> bool:
    return v.dtype.kind in "iu" and 0 < v.size <= 8 and any(int(e) != 0 and int(e) % t == 0 for e in v.flatten())


def check(path: Path, t: int, rows: int | None = None, seed: int = 0) -> float:
    """Runs the edited graph at width T and at a smaller width on the same first rows (random
    embeddings, an empty KV of the smallest capacity bucket) and returns the largest difference
    between their valid rows' logits, K/V rows and conv states; raises WidthError when it is more
    than float rounding. `rows`: the smaller width (default: the smallest of widths(T) >= 3)."""
    import onnxruntime as ort

    n = rows or next((w for w in widths(t) if w >= 3 and w < t), max(1, t // 2))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in s.get_inputs()}
    rng = np.random.default_rng(seed)
    h = ins["inputs_embeds"].shape[2]
    c = capacity.SMALLEST_BUCKET
    x = (rng.standard_normal((1, t, h)) * 0.5).astype(np.float32)

    def feed(w: int) -> dict:
        f = {"inputs_embeds": x[:, :w], "position_ids": np.arange(w, dtype=np.int32)[None]}
        mask = np.zeros((1, 1, w, c + w), np.float32)
        mask[..., :c] = -1e4
        mask[0, 0, :, c:] = np.triu(np.full((w, w), -1e4, np.float32), 1)
        f["attention_mask"] = mask
        for name, i in ins.items():
            if name == CONV_INDEX:
                f[name] = np.arange(n, n + i.shape[0], dtype=np.int32)
            elif name.startswith("past_conv."):
                f[name] = np.zeros([int(d) for d in i.shape], np.float32)
            elif name.startswith(capacity.KV_PREFIX):
                f[name] = np.zeros((1, i.shape[1], c, i.shape[3]), np.float32)
        return f

    names = [o.name for o in s.get_outputs()]
    full = dict(zip(names, s.run(None, feed(t))))
    try:
        part = dict(zip(names, s.run(None, feed(n))))
    except Exception as e:  # onnxruntime's shape errors: a Reshape entry taken for the width wrongly
        raise WidthError(f"{path}: the graph fails at width {n}: {e}") from None
    worst, scale = 0.0, 0.0
    for name in names:
        a, b = full[name], part[name]
        if name == "logits":
            a = a[:, :n]
        elif name.startswith(_PRESENT_PREFIX):
            a = a[:, :, :n]
        if a.shape != b.shape:
            raise WidthError(f"{path}: {name} at width {n} has shape {list(b.shape)}, want {list(a.shape)}")
        worst = max(worst, float(np.abs(a - b).max()))
        scale = max(scale, float(np.abs(a).max()))
    if not worst <= 1e-3 * max(scale, 1.0):
        raise WidthError(f"{path}: at width {n} the valid rows differ from width {t} by {worst:g} "
                         f"(largest value {scale:g}): a Reshape entry was taken for the width wrongly")
    return worst


def upgrade_file(path: Path, verify: bool = True) -> bool:
    """Applies make_width_free to an ONNX file in place (external weight files stay untouched) and
    checks the result. Returns False when the graph takes any width already."""
    original = path.read_bytes()
    m = onnx.load(str(path), load_external_data=False)
    t = _width(m)
    if not make_width_free(m, str(path)):
        return False
    onnx.save(m, str(path))
    if verify:
        try:
            check(path, t)
        except Exception:
            path.write_bytes(original)  # the graph as it was: nothing lost
            raise
    return True


def upgrade_bundle(bundle: Path, log=print) -> dict:
    """Makes decoder_prefill of a built bundle's float and int4 variants width-free, in place (same
    weights), and rewrites those variants' golden cases (the runtime now runs short parts at a
    smaller width: the same tokens, probabilities equal up to float rounding). Needs `conv_index`
    and a named KV capacity first (upgrade-prefill, upgrade-capacity). QDQ variants are untouched."""
    return capacity.upgrade_cpu_graphs(bundle, ("decoder_prefill",), upgrade_file, log)
