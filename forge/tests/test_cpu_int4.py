"""forge cpu-int4: the variant's graphs are MatMulNBits, its manifest entry and golden cases pass the
bundle check, and its accuracy is measured against fp32 (not copied)."""

import json
import shutil

import onnx

from forge import manifest
from forge.check_bundles import check_bundle
from forge.cpu_int4 import VARIANT, add_variant


def test_cpu_int4_variant_is_int4_checked_and_measured(committed_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(committed_bundle, b)
    rep = add_variant(b, block=32, head="float")
    assert check_bundle(b) == []
    man = manifest.read(b)
    v = man["variants"][VARIANT]
    assert v["quantization"] == "int4" and v["int4"] == {"block": 32, "head": "float"}
    assert v["vision"] == man["variants"]["fp32"]["vision"]
    for g in ("decoder_prefill", "decoder_step"):
        ops = [n.op_type for n in onnx.load(str(b / v[g])).graph.node]
        assert rep["matmulnbits"][g] == ops.count("MatMulNBits") > 0
        # The head (tied token table) stays float: exactly one float MatMul left, the logits one.
        assert ops.count("MatMul") >= 1
    acc = v["accuracy"]
    assert 0 < acc["first_logits_rel_err"]
    agree, total = map(int, acc["greedy_tokens_agreeing"].split("/"))
    assert 0 <= agree <= total > 0
    golden = json.loads((b / "golden.json").read_text())
    assert len(golden[VARIANT]["cases"]) == len(golden["fp32"]["cases"])


def test_int8_compute_sets_accuracy_level_4_and_an_int4_head(committed_bundle, tmp_path):
    """`--head int4 --compute int8` (genai's CPU int4 recipe): every MatMul, the head's too, is a
    MatMulNBits with accuracy_level 4; the recipe is in the manifest and the bundle still checks."""
    b = tmp_path / "b"
    shutil.copytree(committed_bundle, b)
    add_variant(b, block=32, head="int4", compute="int8")
    assert check_bundle(b) == []
    v = manifest.read(b)["variants"][VARIANT]
    assert v["int4"] == {"block": 32, "head": "int4", "compute": "int8"}
    for g in ("decoder_prefill", "decoder_step"):
        nodes = onnx.load(str(b / v[g])).graph.node
        nbits = [n for n in nodes if n.op_type == "MatMulNBits"]
        assert nbits and not [n for n in nodes if n.op_type == "MatMul" and "logits" in n.output]
        levels = {a.i for n in nbits for a in n.attribute if a.name == "accuracy_level"}
        assert levels == {4}, levels
