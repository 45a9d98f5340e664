"""The bundle path end to end: the committed tiny-random fixture rebuilds byte-identically from the
documented command (export, W8A16/W4A16 quantization, HTP offload check + v68 context binaries,
golden outputs), and the fp32 graphs match PyTorch over 64 greedy tokens."""

import pytest
from PIL import Image

from forge.__main__ import main
from forge.config import CONFIGS
from forge.images import QUESTIONS
from forge.manifest import read as read_manifest
from forge.model import build_model
from forge.parity import parity


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "tiny-random"
    assert main(["export", "--config", "tiny-random", "--out", str(out)]) == 0
    return out


def test_committed_bundle_rebuilds_byte_identically(rebuilt, committed_bundle):
    want = read_manifest(committed_bundle)
    got = read_manifest(rebuilt)
    assert got["files"] == want["files"]
    assert (rebuilt / "manifest.toml").read_bytes() == (committed_bundle / "manifest.toml").read_bytes()


def test_bundle_is_small_and_complete(rebuilt):
    man = read_manifest(rebuilt)
    assert sum(p.stat().st_size for p in rebuilt.rglob("*") if p.is_file()) <= 5_000_000
    assert set(man["variants"]) == {"fp32", "w8a16", "w4a16"}
    for name in ("w8a16", "w4a16"):
        v = man["variants"][name]
        assert set(v["qnn_context"]) >= {"htp_arch", "soc_model", "vision", "embed", "decoder_prefill", "decoder_step"}
        assert v["qnn_context"]["htp_arch"] == 68 and v["qnn_context"]["soc_model"] == 39
        assert set(v["sqnr_db"]) == {"vision", "embed", "decoder_prefill", "decoder_step"}
    assert man["variants"]["w8a16"]["sqnr_db"]["vision"] > 20
    assert man["variants"]["w8a16"]["sqnr_db"]["decoder_step"] > 20


@pytest.mark.parametrize("case", [0, 1, 2])
def test_fp32_graphs_match_pytorch_over_64_greedy_tokens(rebuilt, case):
    model = build_model(CONFIGS["tiny-random"])
    r = parity(model, rebuilt, Image.open(rebuilt / f"golden/{case}.png"), QUESTIONS[case])
    assert r["tokens_identical"], r
    assert r["max_abs_dlogits"] <= 1e-3, r
