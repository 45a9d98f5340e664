"""Export details: external data for big graphs (shared by both decoder graphs) and the int4 clip."""

import numpy as np
import pytest

import forge.export as fx
from forge import capacity
from forge.conv_index import upgrade_file
from forge.config import CONFIGS
from forge.prefill_width import WIDTH_DIM
from forge.model import build_model
from forge.quantize import mse_clip
from forge.runtime import cpu_session


def test_external_weights_are_shared_and_exact(tmp_path, monkeypatch, committed_bundle):
    """With the big-model path forced on the tiny config, the graphs compute exactly what the
    committed self-contained ones do, and the decoder weights are stored once."""
    monkeypatch.setattr(fx, "EXTERNAL_DATA_BYTES", 0)
    paths = fx.export_float_graphs(build_model(CONFIGS["tiny-random"]), tmp_path)
    assert fx.external_data_files(paths["decoder_prefill"]) == fx.external_data_files(paths["decoder_step"]) == [
        tmp_path / "decoder.onnx.data"
    ]
    committed = committed_bundle / "fp32/decoder_step.onnx"
    assert (tmp_path / "decoder.onnx.data").stat().st_size < committed.stat().st_size  # one copy, no graph
    rng = np.random.default_rng(0)
    for g, p in paths.items():
        a, b = cpu_session(p), cpu_session(committed_bundle / f"fp32/{g}.onnx")
        t = next((i.shape[1] for i in a.get_inputs() if i.name == "inputs_embeds"), 0)
        t = 8 if t == WIDTH_DIM else t  # a width-free prefill graph: run it at a width below the chunk
        sizes = {capacity.CAPACITY_DIM: 256, capacity.MASK_DIM: 256 + t, WIDTH_DIM: t}  # growable decoder graphs
        feed = {}
        for i in a.get_inputs():
            shape = [sizes.get(d, d) for d in i.shape]
            feed[i.name] = (rng.integers(0, 300, shape).astype(np.int32) if "int32" in i.type
                            else rng.standard_normal(shape).astype(np.float32))
        if "conv_index" in feed:  # window columns: a partial chunk of 5 valid rows
            feed["conv_index"] = np.arange(5, 8, dtype=np.int32)
        for x, y in zip(a.run(None, feed), b.run(None, feed)):
            assert np.array_equal(x, y), g


@pytest.mark.parametrize("levels", [15, 255])
def test_mse_clip_never_worse_than_max(levels):
    w = np.random.default_rng(1).standard_normal((256, 32)).astype(np.float32)
    w[0, 0] = 12.0  # an outlier in column 0

    def err(c):
        s = 2 * c / levels
        return ((w - np.clip(np.round(w / s), -(levels // 2) - 1, levels // 2) * s) ** 2).sum(0)

    amax = np.abs(w).max(0)
    c = mse_clip(w, levels)
    assert np.all(c <= amax + 1e-6)
    assert np.all(err(c) <= err(amax) + 1e-9)
    if levels == 15:
        assert err(c)[0] < 0.9 * err(amax)[0]  # the outlier column gains


def test_params_as_inputs_export_is_exact(tmp_path, committed_bundle):
    """The low-memory path (export without the exporter's weight copy, weights streamed from the
    module into one shared file) computes exactly what the committed graphs do."""
    model = build_model(CONFIGS["tiny-random"])
    weights = fx.WeightFile(tmp_path / "weights.data")
    for name, t in (("decoder_prefill", model.cfg.prefill_chunk), ("decoder_step", 1)):
        ins, outs, example = fx.decoder_io(model, t)
        fx.export_graph(fx.DecoderGraph(model), tuple(example), tmp_path / f"{name}.onnx", ins, outs, weights,
                        params_as_inputs=True)
    upgrade_file(tmp_path / "decoder_prefill.onnx")  # as bench/export_models.py does
    assert weights.reused > 0  # the second graph's weights were already in the file
    rng = np.random.default_rng(0)
    for g in ("decoder_prefill", "decoder_step"):
        assert fx.external_data_files(tmp_path / f"{g}.onnx") == [tmp_path / "weights.data"]
        a, b = cpu_session(tmp_path / f"{g}.onnx"), cpu_session(committed_bundle / f"fp32/{g}.onnx")
        feed = {i.name: rng.standard_normal(i.shape).astype(np.float32) if "float" in i.type
                else np.arange(2, 5, dtype=np.int32) if i.name == "conv_index"
                else np.arange(i.shape[1], dtype=np.int32)[None] for i in a.get_inputs()}
        for x, y in zip(a.run(None, feed), b.run(None, feed)):
            assert np.array_equal(x, y), g
