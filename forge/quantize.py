"""QDQ quantization for the QNN HTP with onnxruntime's QNN helpers (`qnn_preprocess_model`,
`get_qnn_qdq_config`), calibrated on recorded real inputs, and SQNR against fp32.

Schemes (weights / activations):
- w8a16: int8 weights, symmetric, per output channel; uint16 activations (the embedding table:
  uint8 per tensor);
- w4a16: int4 weights, symmetric (zero point 0: the only int4 form v68 computes correctly),
  per output channel for MatMul and Conv weights; uint16 activations.
Graph inputs/outputs stay float32 (the HTP quantizes at the boundary).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize
from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

from .capacity import make_static

MAX_IR = 10

SCHEMES = {
    # int8 symmetric weights per output channel (Conv: the helper's per_channel; MatMul: axis 1 by
    # explicit overrides). On tiny-random vs per-tensor uint8: vision 29.5 vs 26.5 dB, decoder
    # 26.9/30.7 vs 24.4/28.1 dB (prefill/step); all still fully on the v68 HTP.
    "w8a16": dict(weight=QuantType.QInt8, act=QuantType.QUInt16, per_channel=True, symmetric=True),
    # the embedding table (a Gather): per-tensor uint8 is already ~90 dB
    "w8a16-table": dict(weight=QuantType.QUInt8, act=QuantType.QUInt16, per_channel=False, symmetric=None),
    "w4a16": dict(weight=QuantType.QInt4, act=QuantType.QUInt16, per_channel=True, symmetric=True),
}


class _Reader:
    def __init__(self, feeds):
        self.feeds = list(feeds)
        self.it = iter(self.feeds)

    def get_next(self):
        return next(self.it, None)

    def __len__(self):
        return len(self.feeds)

    def set_range(self, start_index, end_index):
        self.it = iter(self.feeds[start_index:end_index])

    def rewind(self):
        self.it = iter(self.feeds)


def _cap_ir(path: Path) -> None:
    m = onnx.load(str(path))
    if m.ir_version > MAX_IR:
        m.ir_version = MAX_IR
        onnx.save(m, str(path))


def preprocess(src: Path, dst: Path) -> None:
    """ORT basic graph optimizations (constant folding of the traced shape arithmetic) followed by
    `qnn_preprocess_model` (fuses decomposed patterns the QNN EP maps better)."""
    tmp = dst.with_suffix(".basic.onnx")
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp)
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    model = str(src)
    if any(t.data_location == onnx.TensorProto.EXTERNAL
           for t in onnx.load(str(src), load_external_data=False).graph.initializer):
        # weights beside the graph (e.g. decoder.onnx.data shared by both decoder graphs): hand ONNX
        # Runtime the whole model, so the optimized copy keeps its weights inline (not a reference
        # to a data file that does not exist beside dst)
        model = onnx.load(str(src)).SerializeToString()
    ort.InferenceSession(model, so, providers=["CPUExecutionProvider"], disabled_optimizers=["ConstantSharing"])
    if not qnn_preprocess_model(str(tmp), str(dst)):
        shutil.move(tmp, dst)
    elif tmp.exists():
        tmp.unlink()
    _cap_ir(dst)


def quantize_graph(src: Path, dst: Path, scheme: str, calibration: list[dict[str, np.ndarray]]) -> None:
    """src: a float graph; dst: its QDQ form for the HTP, calibrated (min/max) on `calibration`."""
    s = SCHEMES[scheme]
    dst.parent.mkdir(parents=True, exist_ok=True)
    pre = dst.with_suffix(".pre.onnx")
    preprocess(src, pre)
    if calibration:
        # a growable CPU decoder graph (forge/capacity.py) is quantized at the capacity it is
        # calibrated on: QDQ graphs are for the NPU, which compiles static shapes only
        m = onnx.load(str(pre), load_external_data=False)
        if make_static(m, calibration[0]):
            onnx.save(m, str(pre))
    overrides = None
    if s["per_channel"]:
        # get_qnn_qdq_config's per_channel covers Conv/Gemm; MatMul weights need an explicit axis
        m = onnx.load(str(pre))
        inits = {i.name for i in m.graph.initializer}
        outputs = {o.name for o in m.graph.output}
        weights = {i.name: i for i in m.graph.initializer}
        overrides = {}
        for n in m.graph.node:
            if n.op_type == "MatMul" and n.input[1] in inits:
                if n.output[0] in outputs:
                    # the LM head (the MatMul that makes the logits) keeps 8-bit weights, as is usual
                    # for 4-bit LLMs: its errors go straight into the token choice
                    overrides[n.input[1]] = [{"axis": 1, "quant_type": QuantType.QInt8, "symmetric": True}]
                    continue
                w = onnx.numpy_helper.to_array(weights[n.input[1]])
                levels = 15 if s["weight"] == QuantType.QInt4 else 255
                overrides[n.input[1]] = [
                    {"axis": 1, "quant_type": s["weight"], "symmetric": True, "rmin": -c, "rmax": c}
                    for c in mse_clip(w.reshape(-1, w.shape[-1]), levels).tolist()
                ]
    names = {i.name for i in onnx.load(str(pre), load_external_data=False).graph.input}
    feeds = [{k: v for k, v in f.items() if k in names} for f in calibration]
    cfg = get_qnn_qdq_config(
        str(pre),
        _Reader(feeds),
        activation_type=s["act"],
        weight_type=s["weight"],
        per_channel=s["per_channel"],
        weight_symmetric=s["symmetric"],
        init_overrides=overrides,
    )
    quantize(str(pre), str(dst), cfg)
    pre.unlink()
    for extra in dst.parent.glob(pre.name + "*"):
        extra.unlink()
    _cap_ir(dst)


def mse_clip(w: np.ndarray, levels: int, steps: int = 20) -> np.ndarray:
    """Per output column of w [K,N]: the symmetric clipping range c that minimises the squared
    error of quantizing to `levels` steps with scale 2c/levels (ONNX Runtime's symmetric scheme).
    With 4 bits, clipping the few largest weights buys finer steps for all the others (about
    +2 dB per matrix for Gaussian-like weights versus the plain max)."""
    w = w.astype(np.float32)
    amax = np.maximum(np.abs(w).max(0), 1e-12)
    best, best_err = amax.copy(), np.full(w.shape[1], np.inf, np.float32)
    half = levels // 2
    for r in np.linspace(1.0, 0.3, steps):
        c = amax * r
        scale = 2 * c / levels
        q = np.clip(np.round(w / scale), -half - 1, half) * scale
        err = ((w - q) ** 2).sum(0)
        better = err < best_err
        best[better], best_err[better] = c[better], err[better]
    return best


def sqnr_db(ref: np.ndarray, x: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    x = np.asarray(x, np.float64)
    return float(10 * np.log10((ref**2).sum() / max(((ref - x) ** 2).sum(), 1e-30)))


def graph_sqnr(fp32: Path, qdq: Path, held_out: list[dict[str, np.ndarray]], session=None) -> float:
    """SQNR (dB) of the first output (image_embeds / inputs_embeds / logits), all held-out feeds
    pooled, QDQ graph (on CPU, or `session`) vs the fp32 graph on CPU. Of a partial prefill chunk
    (`conv_index` starts below the chunk width) only the valid rows count: the padded rows' logits
    are never read."""
    from .runtime import cpu_session

    a, b = cpu_session(fp32), session or cpu_session(qdq)
    names_a = {i.name for i in a.get_inputs()}
    names_b = {i.name for i in b.get_inputs()}
    ref, out = [], []
    for f in held_out:
        valid = int(f["conv_index"][0]) if "conv_index" in f else None
        ref.append(a.run(None, {k: v for k, v in f.items() if k in names_a})[0][:, :valid])
        out.append(b.run(None, {k: v for k, v in f.items() if k in names_b})[0][:, :valid])
    return sqnr_db(np.concatenate([r.ravel() for r in ref]), np.concatenate([o.ravel() for o in out]))


def file_size(path: Path) -> int:
    return os.path.getsize(path)
