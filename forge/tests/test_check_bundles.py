"""The torch-free bundle check passes on the committed fixture and catches what it claims to catch."""

import hashlib
import json
import re
import shutil

import numpy as np
from PIL import Image

from forge.check_bundles import check_bundle, read_png


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
