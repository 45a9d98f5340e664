"""The torch-free bundle check passes on the committed fixture and catches what it claims to catch."""

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from forge import manifest
from forge.check_bundles import check_bundle, read_png
from forge.manifest import ManifestError
from forge.runtime import Runner


def copy(src, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def rehash(b, rel):
    man = (b / "manifest.toml").read_text()
    digest = hashlib.sha256((b / rel).read_bytes()).hexdigest()
    man = re.sub(rf'("{re.escape(rel)}" = )"[0-9a-f]+"', rf'\1"{digest}"', man)
    (b / "manifest.toml").write_text(man)


def test_committed_bundle_passes(committed_bundle):
    assert check_bundle(committed_bundle) == []


def test_detects_a_changed_file(committed_bundle, tmp_path):
    b = copy(committed_bundle, tmp_path)
    with open(b / "probes.toml", "a") as f:
        f.write("\n")
    assert any("probes.toml: SHA-256" in e for e in check_bundle(b))


def test_detects_an_unlisted_file(committed_bundle, tmp_path):
    b = copy(committed_bundle, tmp_path)
    (b / "extra.bin").write_bytes(b"x")
    assert any("does not list extra.bin" in e for e in check_bundle(b))


def test_replay_detects_wrong_golden_tokens(committed_bundle, tmp_path):
    b = copy(committed_bundle, tmp_path)
    g = json.loads((b / "golden.json").read_text())
    g["w8a16"]["cases"][0]["greedy_tokens"][40] ^= 1
    (b / "golden.json").write_text(json.dumps(g))
    rehash(b, "golden.json")
    errors = check_bundle(b)
    assert errors and all("w8a16: replayed greedy tokens differ" in e for e in errors), errors


def test_png_reader_matches_pillow(committed_bundle):
    for p in sorted((committed_bundle / "golden").glob("*.png")):
        assert np.array_equal(read_png(p), np.asarray(Image.open(p).convert("RGB")))


def test_manifest_reader_names_every_problem(committed_bundle, tmp_path):
    """The one manifest reader (forge.manifest) that the checker and the runtime share: a broken
    manifest is refused with all its problems, and the runtime refuses it too."""
    b = copy(committed_bundle, tmp_path)
    man = (b / "manifest.toml").read_text()
    man = man.replace("hidden = ", "hidden_size = ")
    man = man.replace('decoder_step = "fp32/decoder_step.onnx"', 'decoder_step = "../x.onnx"')
    (b / "manifest.toml").write_text(man)
    with pytest.raises(ManifestError) as e:
        manifest.read(b)
    assert "manifest.toml: missing decoder key 'hidden'" in e.value.problems
    assert "manifest.toml: variants.fp32: ../x.onnx is not a file inside the bundle" in e.value.problems
    assert any("missing decoder key 'hidden'" in x for x in check_bundle(b))
    with pytest.raises(ManifestError):
        Runner(b, "fp32")
    assert manifest.load(b)["decoder"]["hidden_size"] == 64  # parse only: for tools mid-build
