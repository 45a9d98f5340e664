"""forge convert-vl (forge.convert_vl): the documented command rebuilds models/lfm2-vl-tiny-bundle
(every file byte for byte; the command itself fails
unless ONNX Runtime on the fp32 graphs reproduces transformers' tokens and P(yes) within 1e-4), every
w8a16 graph loads on the HTP simulator with CPU fallback disabled, the vision graph equals
transformers' get_image_features, and the VL language loader gives transformers' logits."""

import json
from pathlib import Path

import numpy as np
import pytest

from forge.__main__ import main
from forge.manifest import read as read_manifest

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "lfm2-vl-tiny-bundle"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert-vl") / "lfm2-vl-tiny-bundle"
    assert main(["convert-vl", "--tiny-fixture", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from forge.published import build_tiny

    torch.set_num_threads(1)
    return build_tiny(tmp_path_factory.mktemp("hf") / "lfm2-vl-tiny")


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_fixture_rebuilds(rebuilt):
    assert _files(rebuilt) == _files(COMMITTED)
    for rel in _files(COMMITTED):  # every byte: graphs, QDQ graphs, manifest, references
        assert (rebuilt / rel).read_bytes() == (COMMITTED / rel).read_bytes(), rel
    par = json.loads((rebuilt / "conversion_reference.json").read_text())["parity"]
    assert par["fp32_all_tokens_equal"] and par["fp32_max_abs_p_yes_err"] <= 1e-4


def test_quantized_graphs_run_fully_on_the_htp():
    from forge.qnn import assignment, htp_session

    man = read_manifest(COMMITTED)
    v = man["variants"]["w8a16"]
    for g in ("vision", "embed", "decoder_prefill", "decoder_step"):
        sess = htp_session(COMMITTED / v[g], threads=1)  # raises unless every node is on the HTP
        assert set(assignment(sess)) == {"QNNExecutionProvider"}, g
        assert isinstance(v["sqnr_db"][g], float)


def test_vision_graph_equals_transformers(tiny_checkpoint):
    import onnxruntime as ort
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Lfm2VlForConditionalGeneration

    from forge.images import pixel_values

    hf = Lfm2VlForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    proc = AutoProcessor.from_pretrained(tiny_checkpoint)
    sess = ort.InferenceSession(str(COMMITTED / "fp32/vision.onnx"), providers=["CPUExecutionProvider"])
    for name in ("golden/0.png", "golden/1.png"):
        img = Image.open(COMMITTED / name).convert("RGB")
        enc = proc(images=[img], text="<image>", return_tensors="pt", do_image_splitting=False)
        with torch.no_grad():
            want = hf.model.get_image_features(pixel_values=enc["pixel_values"], spatial_shapes=enc["spatial_shapes"],
                                               pixel_attention_mask=enc["pixel_attention_mask"]).pooler_output
        want = torch.cat(list(want)).numpy()
        got = sess.run(None, {"pixel_values": pixel_values(img, 256, [0.5] * 3, [0.5] * 3)})[0][0]
        assert got.shape == want.shape == (64, 64)
        assert np.abs(got - want).max() < 1e-4, name


def test_vl_language_loader_matches_transformers(tiny_checkpoint):
    import torch
    from transformers import Lfm2VlForConditionalGeneration

    from forge.hf import load_lfm2_vl_language

    hf = Lfm2VlForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    ours = load_lfm2_vl_language(tiny_checkpoint)
    ids = torch.tensor([[1, 3, 40, 200, 7, 50, 60, 9, 300, 4]])  # no <image> (5): text only
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        got = ours(ours.embed_tokens(ids))
    assert (got - want).abs().max() < 1e-4
