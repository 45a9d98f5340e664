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
