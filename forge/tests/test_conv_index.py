"""decoder_prefill's `conv_index` (forge/conv_index.py): the graph edit, and a partial prefill chunk
giving what single steps give on the committed fixture."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from forge.conv_index import INPUT, GraphShapeError, add_conv_index, indices
from forge.runtime import Runner


def _old_style_graph(h: int = 4, t: int = 5, k: int = 3) -> onnx.ModelProto:
    """What the exporter made before conv_index: present_conv = Slice(Concat(past_conv, B*x))[T:]."""
    const = lambda name, v: helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [1], [v]))
    nodes = [
        helper.make_node("Concat", ["past_conv.0", "bx"], ["window"], axis=-1),
        const("starts", t), const("ends", t + k), const("axes", 2),
        helper.make_node("Slice", ["window", "starts", "ends", "axes"], ["present_conv.0"]),
    ]
    g = helper.make_graph(
        nodes,
        "prefill",
        [helper.make_tensor_value_info("past_conv.0", TensorProto.FLOAT, [1, h, k]),
         helper.make_tensor_value_info("bx", TensorProto.FLOAT, [1, h, t])],
        [helper.make_tensor_value_info("present_conv.0", TensorProto.FLOAT, [1, h, k])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(m: onnx.ModelProto, feed: dict) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feed)[0]


def test_the_edit_selects_the_window_columns_the_runtime_names():
    m = _old_style_graph()
    rng = np.random.default_rng(0)
    feed = {"past_conv.0": rng.standard_normal((1, 4, 3), np.float32), "bx": rng.standard_normal((1, 4, 5), np.float32)}
    before = _run(m, feed)
    assert add_conv_index(m)
    assert not add_conv_index(m), "a second upgrade is a no-op"
    assert [n.op_type for n in m.graph.node] == ["Concat", "Gather"], "the Slice's constants are gone"
    onnx.checker.check_model(m)
    window = np.concatenate([feed["past_conv.0"], feed["bx"]], -1)
    full = _run(m, {**feed, INPUT: np.array(indices(5, 3), np.int32)})
    np.testing.assert_array_equal(full, before)  # a full chunk: exactly the old slice
    for valid in (1, 2, 4):
        got = _run(m, {**feed, INPUT: np.array(indices(valid, 3), np.int32)})
        np.testing.assert_array_equal(got, window[:, :, valid : valid + 3])


def test_a_graph_of_another_shape_is_refused_with_its_output_named():
    m = _old_style_graph()
    slice_node = m.graph.node[-1]
    slice_node.op_type = "Identity"
    del slice_node.input[1:]
    with pytest.raises(GraphShapeError, match="present_conv.0 is produced by Identity"):
        add_conv_index(m, "x.onnx")


def test_a_partial_prefill_chunk_gives_what_single_steps_give(committed_bundle):
    r = Runner(committed_bundle, "fp32", threads=1)
    assert r.spec.prefill_conv_index
    t, h = r.spec.prefill_chunk, r.spec.hidden
    rows = np.random.default_rng(1).standard_normal((t + 5, h)).astype(np.float32) * 0.5
    chunked, stepped = r.new_state(), r.new_state()
    calls = []
    r.recorder = type("R", (), {"add": lambda self, g, f: calls.append((g, int(f.get(INPUT, [0])[0])))})()
    a = r.feed(chunked, rows)
    assert calls == [("decoder_prefill", t), ("decoder_prefill", 5)], "two prefill calls, the second partial"
    r.recorder = None
    b = np.concatenate([r._step(stepped, rows[i : i + 1], "decoder_step") for i in range(t + 5)])
    assert chunked.pos == stepped.pos == t + 5
    np.testing.assert_allclose(a, b, atol=2e-4)
    for i in r.spec.conv_layers:
        np.testing.assert_allclose(chunked.conv[i], stepped.conv[i], atol=2e-4)
    for i in r.spec.attention_layers:
        for x, y in zip(chunked.kv[i], stepped.kv[i]):
            np.testing.assert_allclose(x[:, :, : t + 5], y[:, :, : t + 5], atol=2e-4)
