"""Growable KV capacity (forge/capacity.py): the graph edit, the buckets, and that attending over
the filled bucket gives what attending over the whole capacity gives, on the committed fixture."""

import shutil

import numpy as np
import onnx
import pytest

from forge import capacity
from forge.images import QUESTIONS, draw, pixel_values
from forge.manifest import read
from forge.prefill_width import WIDTH_DIM
from forge.runtime import Runner


def test_buckets_grow_by_four_from_64_up_to_the_capacity():
    assert capacity.buckets(4096) == [64, 256, 1024, 4096]
    assert capacity.buckets(3000) == [64, 256, 1024, 3000]
    assert capacity.buckets(256) == [64, 256]
    assert capacity.buckets(40) == [40]
    assert [capacity.bucket_for(4096, n) for n in (1, 64, 65, 257, 1025, 4096)] == [64, 64, 256, 1024, 4096, 4096]


def test_committed_bundles_name_the_capacity_of_cpu_graphs_only(committed_bundle):
    bundles = [b for b in sorted(committed_bundle.parent.iterdir()) if "\n[decoder]" in _text(b / "manifest.toml")]
    assert len(bundles) == 4, bundles
    for bundle in bundles:
        for name, v in read(bundle)["variants"].items():
            for g in ("decoder_prefill", "decoder_step"):
                m = onnx.load(str(bundle / v[g]), load_external_data=False)
                kv = next(i for i in m.graph.input if i.name.startswith(capacity.KV_PREFIX))
                named = kv.type.tensor_type.shape.dim[2].dim_param
                want = capacity.CAPACITY_DIM if v["quantization"] in ("none", "int4") else ""
                assert named == want, f"{bundle.name} {name}/{g}"


def test_the_edit_refuses_qdq_graphs_and_is_undone_for_quantization(committed_bundle):
    qdq = onnx.load(str(committed_bundle / "w8a16/decoder_step.onnx"), load_external_data=False)
    with pytest.raises(ValueError, match="QDQ graph keeps static shapes"):
        capacity.make_growable(qdq)
    m = onnx.load(str(committed_bundle / "fp32/decoder_step.onnx"), load_external_data=False)
    assert not capacity.make_growable(m), "already growable: a second edit is a no-op"
    c = read(committed_bundle)["decoder"]["kv_capacity"]
    example = {i.name: np.zeros([c if isinstance(d, str) else d for d in _shape(i)], np.float32) for i in m.graph.input}
    assert capacity.make_static(m, example)
    for i in m.graph.input:
        assert all(d.HasField("dim_value") for d in i.type.tensor_type.shape.dim), i.name


def _text(path):
    return path.read_text() if path.exists() else ""


def _shape(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_buckets_give_what_the_whole_capacity_gives(committed_bundle, tmp_path):
    """A copy of the fixture allowed 2048 positions: a 300-token generation moves the KV from the
    256 into the 1024 bucket; tokens and logits equal those of binding all 2048 slots."""
    b = tmp_path / "tiny"
    shutil.copytree(committed_bundle, b)
    man = (b / "manifest.toml").read_text()
    assert "kv_capacity = 256\n" in man
    (b / "manifest.toml").write_text(man.replace("kv_capacity = 256\n", "kv_capacity = 2048\n"))
    out = {}
    for buckets in (True, False):
        r = Runner(b, "fp32", threads=1, kv_buckets=buckets)
        img, _ = draw(7, r.image["size"])
        prefix = r.prefix_state(pixel_values(img, r.image["size"], r.image["mean"], r.image["std"]))
        first = next(iter(prefix.kv.values()))[0].shape[2]
        state = prefix.clone()
        logits = [r.feed(state, r.embed(r.prompt(QUESTIONS[0]).question_ids))[-1]]
        tokens = []
        for _ in range(300):
            tokens.append(int(np.argmax(logits[-1])))
            logits.append(r.feed(state, r.embed(tokens[-1:]))[-1])
        out[buckets] = (tokens, np.stack(logits), first, next(iter(state.kv.values()))[0].shape[2], state.pos)
    (tok_b, log_b, first_b, last_b, pos), (tok_f, log_f, first_f, last_f, _) = out[True], out[False]
    assert 256 < pos <= 1024
    assert (first_b, last_b) == (256, 1024) and (first_f, last_f) == (2048, 2048)
    assert tok_b == tok_f
    np.testing.assert_allclose(log_b, log_f, rtol=0, atol=1e-4)


def test_upgrade_names_the_capacity_of_an_older_bundle(committed_bundle, tmp_path, json_close):
    b = tmp_path / "old"
    shutil.copytree(committed_bundle, b)
    c = read(b)["decoder"]["kv_capacity"]
    for g in ("decoder_prefill", "decoder_step"):  # what forge exported before
        m = onnx.load(str(b / f"fp32/{g}.onnx"), load_external_data=False)
        t = 1 if g == "decoder_step" else read(b)["decoder"]["prefill_chunk"]
        capacity.make_static(m, {i.name: np.zeros([c + t if d == capacity.MASK_DIM else t if d == WIDTH_DIM
                                                   else c if isinstance(d, str) else d
                                                   for d in _shape(i)]) for i in m.graph.input})
        onnx.save(m, str(b / f"fp32/{g}.onnx"))
    golden_before = (b / "golden.json").read_text()
    rep = capacity.upgrade_bundle(b, log=lambda *_: None)
    assert rep == {"upgraded": ["fp32/decoder_prefill.onnx", "fp32/decoder_step.onnx"], "golden_rewritten": ["fp32"]}
    assert (b / "fp32/decoder_step.onnx").read_bytes() == (committed_bundle / "fp32/decoder_step.onnx").read_bytes()
    # the committed golden was made the same way; the committed prefill graph also runs short parts
    # at a smaller width (forge/prefill_width.py), which moves float rounding only
    json_close((b / "golden.json").read_text(), golden_before)
    assert capacity.upgrade_bundle(b) == {"upgraded": []}

