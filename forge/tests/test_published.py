"""models/lfm2-vl-tiny-onnx (forge.published): the documented command rebuilds the committed fixture
byte for byte (graphs, tokenizer/processor files, images, transformers references), the rebuilt
references pass their own ORT-vs-transformers parity (the command asserts it), and the embed_images
position-embedding resize equals PyTorch's antialiased bilinear interpolation for every grid size."""

from pathlib import Path

import numpy as np
import pytest

from forge.__main__ import main

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "lfm2-vl-tiny-onnx"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("published") / "lfm2-vl-tiny-onnx"
    assert main(["published-fixture", "--out", str(out)]) == 0
    return out


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name != "README.md")


def test_fixture_rebuilds_byte_identically(rebuilt):
    assert _files(rebuilt) == _files(COMMITTED)
    for rel in _files(COMMITTED):
        assert (rebuilt / rel).read_bytes() == (COMMITTED / rel).read_bytes(), rel


def test_parity_recorded(rebuilt):
    import json

    par = json.loads((rebuilt / "reference.json").read_text())["parity"]
    assert par["all_greedy_tokens_equal"]
    assert par["embed_images_max_abs_err"] <= 1e-4
    assert par["decoder_max_abs_logit_err"] <= 1e-4


def test_position_resize_weights_match_torch():
    import torch

    from forge.published import aa_weights

    torch.manual_seed(0)
    grid = 16
    pos = torch.randn(1, 8, grid, grid)
    for h in (1, 2, 3, 7, 8, 15, 16, 17, 24, 31, 32, 33, 64):
        for w in (2, 5, 16, 20, 42):  # w = 1: see README (PyTorch quirk; never produced by LFM2-VL)
            want = torch.nn.functional.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False,
                                                   antialias=True)
            wh = aa_weights(torch, torch.arange(h), torch.full((h,), float(h)), grid)
            ww = aa_weights(torch, torch.arange(w), torch.full((w,), float(w)), grid)
            got = torch.einsum("ap,cpq,bq->cab", wh, pos[0], ww)
            assert np.abs((got - want[0]).numpy()).max() < 1e-5, (h, w)
