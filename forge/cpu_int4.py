"""The `cpu-int4` variant of a bundle (issue 15, item 3): the decoder graphs with ONNX Runtime's
MatMulNBits (4-bit weights, block-wise symmetric scales, float activations), which the CPU runs as
int4 kernels — unlike the NPU's QDQ variants, which a CPU runs as dequantize + float op.

- decoder_prefill / decoder_step: every MatMul with a constant weight becomes MatMulNBits, except
  the LM head by default (`head="float"`): its weight is the tied token table; block-wise int4 there
  costs the most accuracy per byte saved (llama.cpp keeps its output matrix at higher precision for
  the same reason). `head="int4"` quantizes it too.
- `compute`: what the CPU multiplies in. `float` (default) dequantizes each block and multiplies in
  fp32; `int8` (MatMulNBits accuracy_level 4) quantizes the activations to int8 per block and uses
  the integer dot-product units (AVX512-VNNI / AVX-VNNI, Arm SDOT/I8MM): faster, above all for
  prefill, at a small extra error. ONNX Runtime GenAI's CPU int4 builds use int8 and an int4 head.
- vision and embed stay the fp32 graphs (shared files, as w4a16 shares w8a16's vision): the vision
  encoder runs once per frame, and embed is a Gather (a lookup, not a MatMul).

The manifest's variant records the recipe and its accuracy against fp32 on the bundle's golden
cases (`accuracy`: the first decision's logit error with the same context, the greedy tokens that
agree before the first divergence, the largest probe-probability change), and golden.json gets the
variant's own cases, so the Rust runtime is checked against ONNX Runtime's Python loop as for every
other variant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from . import manifest as manifest_reader
from .bundle import save_manifest

VARIANT = "cpu-int4"
DECODER_GRAPHS = ("decoder_prefill", "decoder_step")


COMPUTE = {"float": None, "int8": 4}  # -> MatMulNBits accuracy_level (None: the attribute left out)


def quantize_graph(src: Path, dst: Path, block: int, head: str, compute: str = "float") -> int:
    """MatMulNBits of `src` into `dst`; returns the number of MatMuls quantized."""
    import onnx

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    model = onnx.load(str(src))
    exclude = [] if head == "int4" else [n.name for n in model.graph.node if "logits" in n.output]
    level = COMPUTE[compute]
    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, bits=4, accuracy_level=level)
    q = MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=True, accuracy_level=level,
                             nodes_to_exclude=exclude, algo_config=cfg)
    q.process()
    out = q.model.model
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(out, str(dst))
    return sum(1 for n in out.graph.node if n.op_type == "MatMulNBits")


def accuracy(bundle: Path, golden: dict) -> dict:
    """int4 against fp32 on the golden cases: the first decision's logits (same context), greedy
    agreement before the first divergence, probe probabilities."""
    from PIL import Image

    from .images import pixel_values
    from .runtime import Runner

    ref, q = Runner(bundle, "fp32", threads=1), Runner(bundle, VARIANT, threads=1)
    img = ref.image
    rel_err, agree, total, probe_diff = 0.0, 0, 0, 0.0
    for case in golden["fp32"]["cases"]:
        pv = pixel_values(Image.open(bundle / case["image"]), img["size"], img["mean"], img["std"])
        p_ref, p_q = ref.prefix_state(pv), q.prefix_state(pv)
        ids = ref.prompt(case["question"]).question_ids
        l_ref = ref.feed(p_ref.clone(), ref.embed(ids))[-1]
        l_q = q.feed(p_q.clone(), q.embed(ids))[-1]
        rel_err = max(rel_err, float(np.abs(l_q - l_ref).max() / max(np.abs(l_ref).max(), 1e-9)))
        t_ref = case["greedy_tokens"]
        t_q, _ = q.generate(p_q, case["question"], max_new=len(t_ref))
        n = next((i for i, (a, b) in enumerate(zip(t_ref, t_q)) if a != b), len(t_ref))
        agree += n
        total += len(t_ref)
    for case_ref, case_q in zip(golden["fp32"]["cases"], golden[VARIANT]["cases"]):
        for pid, probs in case_ref["probes"].items():
            for a, p in probs.items():
                probe_diff = max(probe_diff, abs(p - case_q["probes"][pid][a]))
    return {
        "first_logits_rel_err": round(rel_err, 5),
        "greedy_tokens_agreeing": f"{agree}/{total}",
        "probe_probability_max_diff": round(probe_diff, 5),
    }


def add_variant(bundle: Path, block: int = 32, head: str = "float", compute: str = "float") -> dict:
    """Writes `cpu-int4/` graphs, the variant in manifest.toml (with its accuracy) and its golden
    cases; returns the report."""
    from .golden import run_cases
    from .probes import read_probes

    if head not in ("float", "int4"):
        raise ValueError(f"head must be float or int4, not {head!r}")
    if compute not in COMPUTE:
        raise ValueError(f"compute must be float or int8, not {compute!r}")
    man = manifest_reader.read(bundle)
    fp32 = man["variants"]["fp32"]
    quantized = {}
    for g in DECODER_GRAPHS:
        rel = f"{VARIANT}/{g}.onnx"
        quantized[g] = quantize_graph(bundle / fp32[g], bundle / rel, block, head, compute)
    variant = {
        "quantization": "int4",
        "int4": {"block": block, "head": head, **({"compute": compute} if compute != "float" else {})},
        "vision": fp32["vision"],
        "embed": fp32["embed"],
        **{g: f"{VARIANT}/{g}.onnx" for g in DECODER_GRAPHS},
    }
    man["variants"][VARIANT] = variant
    save_manifest(bundle, man, checksums=False)
    golden_path = bundle / "golden.json"
    golden = json.loads(golden_path.read_text())
    images = [c["image"] for c in golden["fp32"]["cases"]]
    probes = read_probes(bundle / "probes.toml")
    ids = {p.id for p in probes}
    if any(set(c["probes"]) != ids for c in golden["fp32"]["cases"]):
        raise ValueError(f"{golden_path}: its probes are not the bundle's probes.toml; rewrite it with `forge golden`")
    golden[VARIANT] = {"cases": run_cases(bundle, VARIANT, images, probes)}
    golden_path.write_text(json.dumps(golden, indent=1) + "\n")
    variant["accuracy"] = accuracy(bundle, golden)
    man["variants"][VARIANT] = variant
    save_manifest(bundle, man, checksums=True)
    sizes = {g: (bundle / variant[g]).stat().st_size for g in DECODER_GRAPHS}
    return {"variant": VARIANT, "matmulnbits": quantized, "bytes": sizes, "accuracy": variant["accuracy"]}
