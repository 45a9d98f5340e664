"""decoder_prefill for any number of valid rows: the `conv_index` input (contract 1).

A prefill graph has a static width T (`prefill_chunk`). A prompt of n < T rows used to go through
decoder_step one row at a time, because right-padding the chunk would push the padded rows' B*x
into the conv state: the graph's new conv state was a constant slice, the last k columns of the
window cat(past_conv, B*x) of k + T columns. Here that slice becomes a Gather along the window's
last axis whose indices are an input, `conv_index` int32 [k], which the runtime sets to
[n, n+1, ..., n+k-1] for n valid rows ([T, T+k) for a full chunk: the old slice). Attention needs no
graph change: padded rows come after the valid ones, so the causal mask already hides them from the
valid rows, and the runtime copies only the n valid K/V rows into its buffers.

A Gather is a data-movement op: in a QDQ graph it sits between the DequantizeLinear/QuantizeLinear
pair the Slice had (same scales), and the HTP runs it. The rewrite is a graph edit rather than a
change to the torch model so that already-built bundles (their weights, quantization parameters and
calibration) can be upgraded in place (`python -m forge upgrade-prefill BUNDLE`) and new exports get
exactly the same graph (export.export_float_graphs applies it).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

INPUT = "conv_index"
MANIFEST_KEY = "prefill_conv_index"


class GraphShapeError(ValueError):
    """The graph does not have the shape the exporter produces (names the file and the output)."""


def add_conv_index(m: onnx.ModelProto, where: str = "decoder_prefill") -> bool:
    """Rewrites every present_conv.{i} producer (Slice of the window, possibly between a
    DequantizeLinear and QuantizeLinear) into Gather(window, conv_index, axis=2) and adds the input.
    Returns False when the graph already has `conv_index`."""
    g = m.graph
    if any(i.name == INPUT for i in g.input):
        return False
    producer = {o: n for n in g.node for o in n.output}
    width = None
    for out in g.output:
        if not out.name.startswith("present_conv."):
            continue
        dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
        width = dims[-1] if dims else width
        node = producer.get(out.name)
        while node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear"):
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Slice":
            found = "nothing" if node is None else node.op_type
            raise GraphShapeError(f"{where}: {out.name} is produced by {found}, want the exporter's Slice")
        data = node.input[0]
        node.op_type = "Gather"
        del node.input[:]
        node.input.extend([data, INPUT])
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("axis", 2))
    if width is None:
        raise GraphShapeError(f"{where}: no present_conv output (a decoder graph without conv layers?)")
    after = next((i + 1 for i, x in enumerate(g.input) if x.name == "attention_mask"), len(g.input))
    g.input.insert(after, helper.make_tensor_value_info(INPUT, TensorProto.INT32, [width]))
    _drop_dead(g)
    return True


def _drop_dead(g: onnx.GraphProto) -> None:
    """Removes nodes and initializers no graph output depends on (the Slices' constant operands)."""
    producer = {o: n for n in g.node for o in n.output}
    live, todo = set(), [o.name for o in g.output]
    while todo:
        name = todo.pop()
        if name in live:
            continue
        live.add(name)
        n = producer.get(name)
        if n is not None:
            todo.extend(i for i in n.input if i)
    keep = [n for n in g.node if any(o in live for o in n.output)]
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in live]
    del g.initializer[:]
    g.initializer.extend(inits)


def upgrade_file(path: Path) -> bool:
    """Applies add_conv_index to an ONNX file in place (external weight files stay untouched)."""
    m = onnx.load(str(path), load_external_data=False)
    if not add_conv_index(m, str(path)):
        return False
    onnx.save(m, str(path))
    return True


def indices(valid: int, width: int) -> list[int]:
    """The conv_index value for a chunk with `valid` real rows."""
    return list(range(valid, valid + width))


def upgrade_bundle(bundle: Path, calibration_images=None, held_out_images=None, log=print) -> dict:
    """Upgrades a bundle built before `conv_index`, in place:
    - the float and int4 variants' decoder_prefill graphs are rewritten (same weights);
    - the QDQ variants' decoder_prefill graphs are quantized again from the upgraded fp32 graph,
      calibrated on the feeds the runtime now sends (a prompt's remainder as a padded prefill call:
      prefill rows it never saw before; keeping the old activation ranges costs up to 0.9 of probe
      probability on the cabin model), and their SQNR is measured again on held-out feeds;
    - QNN context binaries are recompiled where the manifest has them;
    - `decoder.prefill_conv_index` is set and golden.json rewritten on the same golden images with
      the bundle's own probes.toml.
    Calibration images default to forge's drawn scenes (as `forge export` uses); pass the model's
    own (e.g. rendered cabin scenes) when it was calibrated on those. Returns what changed."""
    import json

    from .bundle import _subsample, compile_qnn, record_feeds, save_manifest
    from .golden import run_cases
    from .images import QUESTIONS, draw
    from .manifest import read
    from .probes import read_probes
    from .quantize import graph_sqnr, quantize_graph

    man = read(bundle)
    if man["decoder"].get(MANIFEST_KEY, False):
        return {"upgraded": []}
    probes = read_probes(bundle / "probes.toml")
    qdq = {n: v for n, v in man["variants"].items() if v["quantization"] in ("w8a16", "w4a16")}
    fp32 = man["variants"]["fp32"]["decoder_prefill"]
    rewritten = sorted({v["decoder_prefill"] for n, v in man["variants"].items() if n not in qdq})
    if fp32 not in rewritten:
        raise ValueError(f"{bundle}: the fp32 variant's decoder_prefill is shared with a quantized variant")
    upgraded = [f for f in rewritten if upgrade_file(bundle / f)]
    d = man["decoder"]  # the key right after prefill_chunk, where forge export writes it
    man["decoder"] = {}
    for k, v in d.items():
        man["decoder"][k] = v
        if k == "prefill_chunk":
            man["decoder"][MANIFEST_KEY] = True
    save_manifest(bundle, man, checksums=False)  # the runtime below reads the flag
    requantized = {}
    if qdq:
        size = man["image"]["size"]
        calib_imgs = calibration_images or [draw(s, size)[0] for s in range(100, 116)]
        held_imgs = held_out_images or [draw(s, size)[0] for s in range(1000, 1004)]
        calib = record_feeds(bundle, calib_imgs, QUESTIONS, probes)["decoder_prefill"]
        held = record_feeds(bundle, held_imgs, QUESTIONS[::-1], probes[::-1])["decoder_prefill"]
        partial = sum(1 for f in calib if int(f[INPUT][0]) < f["inputs_embeds"].shape[1])
        log(f"calibration: {len(calib)} decoder_prefill feeds ({partial} partial chunks) on {len(calib_imgs)} images")
        for name, v in qdq.items():
            dst = bundle / v["decoder_prefill"]
            quantize_graph(bundle / fp32, dst, v["quantization"], _subsample(calib, 256))
            sqnr = round(graph_sqnr(bundle / fp32, dst, _subsample(held, 64)), 2)
            log(f"{name}/decoder_prefill: quantized again, SQNR {sqnr} dB (was {v['sqnr_db'].get('decoder_prefill')})")
            v["sqnr_db"]["decoder_prefill"] = sqnr
            requantized[name] = sqnr
    qnn = {n: v["qnn_context"] for n, v in man["variants"].items() if "qnn_context" in v}
    if qnn:
        targets = {(c["htp_arch"], c["soc_model"]) for c in qnn.values()}
        if len(targets) != 1:
            raise ValueError(f"{bundle}: variants compiled for different HTP targets {sorted(targets)}")
        (arch, soc), = targets
        compile_qnn(bundle, man, arch, soc, log=log, only=set(qnn))
    save_manifest(bundle, man, checksums=False)
    golden_path = bundle / "golden.json"
    if golden_path.exists():
        golden = json.loads(golden_path.read_text())
        for name, cases in golden.items():
            images = [c["image"] for c in cases["cases"]]
            golden[name] = {"cases": run_cases(bundle, name, images, probes)}
            log(f"golden: {name} rewritten on {len(images)} images")
        golden_path.write_text(json.dumps(golden, indent=1) + "\n")
    save_manifest(bundle, man, checksums=True)
    return {"upgraded": upgraded, "requantized_sqnr_db": requantized, "qnn_recompiled": sorted(qnn)}
