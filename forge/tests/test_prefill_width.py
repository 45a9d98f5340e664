"""Width-free prefill graphs (forge/prefill_width.py): the edit, its check, the widths, and that a
short part run at a smaller width gives what the full width gives, on the committed fixture."""

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from forge import capacity, prefill_width
from forge.images import QUESTIONS, draw, pixel_values
from forge.manifest import read
from forge.runtime import Runner


def test_widths_halve_the_chunk_down_to_four():
    assert prefill_width.widths(128) == [4, 8, 16, 32, 64, 128]
    assert prefill_width.widths(16) == [4, 8, 16]
    assert prefill_width.widths(12) == [6, 12]
    assert prefill_width.widths(5) == [5]
    assert [prefill_width.width_for(128, n) for n in (1, 4, 5, 64, 65, 128)] == [4, 4, 8, 64, 128, 128]


def test_committed_bundles_name_the_width_of_cpu_prefill_graphs_only(committed_bundle):
    bundles = [b for b in sorted(committed_bundle.parent.iterdir())
               if (b / "manifest.toml").exists() and "\n[decoder]" in (b / "manifest.toml").read_text()]
    assert len(bundles) == 4, bundles
    for bundle in bundles:
        for name, v in read(bundle)["variants"].items():
            m = onnx.load(str(bundle / v["decoder_prefill"]), load_external_data=False)
            shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
            want = v["quantization"] in ("none", "int4")
            assert prefill_width.is_width_free(shapes) == want, f"{bundle.name} {name}"


def _static_prefill(bundle):
    """The fixture's fp32 decoder_prefill as forge exported it before the width edit."""
    d = read(bundle)["decoder"]
    t = d["prefill_chunk"]
    m = onnx.load(str(bundle / "fp32/decoder_prefill.onnx"), load_external_data=False)
    consts = {x.name: x for x in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Reshape" and n.input[1] in consts:
            shape = numpy_helper.to_array(consts[n.input[1]])
            if (shape == -1).any():
                fixed = shape.copy()
                fixed[shape == -1] = 0  # filled below from the known layout
                # the entry that scales with T: T itself, or T times the query group
                g = d["num_heads"] // d["num_kv_heads"]
                others = int(np.prod(shape[shape != -1]))
                rows = t * (g if shape[1] == d["num_kv_heads"] and others * t * g == t * d["num_heads"] * d["head_dim"]
                            else 1)
                fixed[shape == -1] = rows
                consts[n.input[1]].CopyFrom(numpy_helper.from_array(fixed.astype(np.int64), consts[n.input[1]].name))
    for vi in list(m.graph.input) + list(m.graph.output):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param == prefill_width.WIDTH_DIM:
                dim.Clear()
                dim.dim_value = t
    return m


def test_the_edit_refuses_qdq_and_fixed_capacity_graphs_and_a_second_edit_is_a_no_op(committed_bundle):
    qdq = onnx.load(str(committed_bundle / "w8a16/decoder_prefill.onnx"), load_external_data=False)
    with pytest.raises(prefill_width.WidthError, match="QDQ graph keeps static shapes"):
        prefill_width.make_width_free(qdq)
    step = onnx.load(str(committed_bundle / "fp32/decoder_step.onnx"), load_external_data=False)
    with pytest.raises(prefill_width.WidthError, match="only a prefill graph"):
        prefill_width.make_width_free(step)
    m = onnx.load(str(committed_bundle / "fp32/decoder_prefill.onnx"), load_external_data=False)
    assert not prefill_width.make_width_free(m), "already width-free"
    static = _static_prefill(committed_bundle)
    c = read(committed_bundle)["decoder"]["kv_capacity"]
    fixed = onnx.ModelProto()
    fixed.CopyFrom(static)
    capacity.make_static(fixed, {i.name: np.zeros([c if isinstance(d, str) else d for d in
                                                   [x.dim_param or x.dim_value for x in i.type.tensor_type.shape.dim]])
                                 for i in fixed.graph.input})
    with pytest.raises(prefill_width.WidthError, match="KV capacity is fixed"):
        prefill_width.make_width_free(fixed)


def test_make_static_fixes_the_outputs_named_after_an_input(committed_bundle):
    """A QDQ graph quantized from a width-free float graph gets static outputs too."""
    m = onnx.load(str(committed_bundle / "fp32/decoder_prefill.onnx"), load_external_data=False)
    d = read(committed_bundle)["decoder"]
    example = {}
    for i in m.graph.input:
        dims = [x.dim_param or x.dim_value for x in i.type.tensor_type.shape.dim]
        size = {prefill_width.WIDTH_DIM: d["prefill_chunk"], capacity.CAPACITY_DIM: 64,
                capacity.MASK_DIM: 64 + d["prefill_chunk"]}
        example[i.name] = np.zeros([size.get(x, x) for x in dims], np.float32)
    assert capacity.make_static(m, example)
    for vi in list(m.graph.input) + list(m.graph.output):
        assert all(x.HasField("dim_value") for x in vi.type.tensor_type.shape.dim), vi.name
    logits = next(o for o in m.graph.output if o.name == "logits")
    assert logits.type.tensor_type.shape.dim[1].dim_value == d["prefill_chunk"]


def test_the_check_catches_a_wrong_entry_taken_for_the_width(committed_bundle, tmp_path):
    b = tmp_path / "tiny"
    shutil.copytree(committed_bundle, b)
    path = b / "fp32/decoder_prefill.onnx"
    t = read(b)["decoder"]["prefill_chunk"]
    assert prefill_width.check(path, t) < 1e-4
    m = onnx.load(str(path), load_external_data=False)
    consts = {x.name: x for x in m.graph.initializer}
    moved = 0
    for n in m.graph.node:  # [1,-1,NH,D] -> [1,T,-1,D]: valid at width T, wrong at any other
        if n.op_type == "Reshape" and n.input[1] in consts:
            shape = numpy_helper.to_array(consts[n.input[1]]).copy()
            if shape.size == 4 and shape[1] == -1:
                shape[1], shape[2] = t, -1
                consts[n.input[1]].CopyFrom(numpy_helper.from_array(shape, consts[n.input[1]].name))
                moved += 1
                break
    assert moved == 1
    onnx.save(m, str(path))
    with pytest.raises(prefill_width.WidthError):
        prefill_width.check(path, t)


def test_smaller_widths_give_what_the_full_width_gives(committed_bundle):
    """Questions of every length up to two chunks after a frame's prefix: tokens and logits of the
    width-free graph at its widths equal those of the same graph always run at full width."""
    out = {}
    for free in (True, False):
        r = Runner(committed_bundle, "fp32", threads=1, kv_buckets=free)
        assert r.width_free == free
        img, _ = draw(3, r.image["size"])
        prefix = r.prefix_state(pixel_values(img, r.image["size"], r.image["mean"], r.image["std"]))
        rows = []
        for n in range(1, 2 * r.spec.prefill_chunk + 2):
            state = prefix.clone()
            ids = (r.prompt(QUESTIONS[0]).question_ids * 8)[:n]
            rows.append(r.feed(state, r.embed(ids)))
        out[free] = rows
    for a, b in zip(out[True], out[False]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_upgrade_names_the_width_of_an_older_bundle_and_keeps_its_golden(committed_bundle, tmp_path, json_close):
    b = tmp_path / "old"
    shutil.copytree(committed_bundle, b)
    onnx.save(_static_prefill(b), str(b / "fp32/decoder_prefill.onnx"))
    golden_before = (b / "golden.json").read_text()
    rep = prefill_width.upgrade_bundle(b, log=lambda *_: None)
    assert rep == {"upgraded": ["fp32/decoder_prefill.onnx"], "golden_rewritten": ["fp32"]}
    assert _layout(b / "fp32/decoder_prefill.onnx") == _layout(committed_bundle / "fp32/decoder_prefill.onnx")
    json_close((b / "golden.json").read_text(), golden_before)  # the same tokens, rounding-level changes
    assert prefill_width.upgrade_bundle(b) == {"upgraded": []}


def _layout(path):
    """A graph's I/O shapes and its Reshape shapes in node order (what the edit changes)."""
    m = onnx.load(str(path), load_external_data=False)
    consts = {x.name: x for x in m.graph.initializer}
    io = [(vi.name, [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim])
          for vi in list(m.graph.input) + list(m.graph.output)]
    shapes = [numpy_helper.to_array(consts[n.input[1]]).tolist() for n in m.graph.node
              if n.op_type == "Reshape" and n.input[1] in consts]
    return io, shapes
