"""Building a model bundle (ARCHITECTURE.md contract 1) from a model: tokenizer, probes, float graphs,
quantized variants with SQNR, QNN EP context binaries, golden outputs, and the manifest with the
SHA-256 of every file.

Entry points: `build_bundle` (random-weight configs and trained models alike) and
`bundle_from_state_dict` (a trained state dict, e.g. from the cabin training of issue 4).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from .config import ModelConfig
from .conv_index import MANIFEST_KEY
from . import prefill_width
from .export import export_float_graphs, external_data_files
from .images import QUESTIONS, describe, draw, pixel_values
from .manifest import FORMAT, GRAPHS
from .manifest import load as load_manifest  # noqa: F401  (the one reader; re-exported for the build tools)
from .probes import DEFAULT_PROBES, Probe, probes_toml
from .tokenizer import base_corpus, train_tokenizer

LANGUAGE_GRAPHS = ("decoder_prefill", "decoder_step")


@dataclass
class BuildOptions:
    quant: tuple[str, ...] = ("w8a16", "w4a16")
    qnn: bool = True  # compile EP context binaries (and so check full HTP offload)
    context: bool = True  # with qnn: store the EP context binaries (False: the offload check only)
    shared_decoder_weights: bool = False  # fp32 decoder graphs share one decoder.onnx.data (one copy on disk)
    htp_arch: int = 68
    soc_model: int = 39
    golden: bool = True
    golden_cases: int = 3
    golden_images: list[Image.Image] | None = None  # None: procedurally drawn (forge.images)
    calibration_images: list[Image.Image] | None = None  # None: procedurally drawn (forge.images)
    held_out_images: list[Image.Image] | None = None
    calibration_questions: tuple[str, ...] = QUESTIONS
    probes: tuple[Probe, ...] = DEFAULT_PROBES
    log: callable = print
    report: dict = field(default_factory=dict)  # filled: timings, sizes, SQNR, HTP placement


# --- manifest ---------------------------------------------------------------------------------


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _value(x) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, str):
        return _q(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in x) + "]"
    if isinstance(x, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in x.items()) + " }"
    raise TypeError(f"cannot write {type(x).__name__} to TOML")


def dump_manifest(man: dict) -> str:
    """The manifest dict as TOML: top-level keys, then [image], [text], [decoder], [variants.*],
    [files] (values inline; tables in the dict's order)."""
    lines = [f"{k} = {_value(v)}" for k, v in man.items() if not isinstance(v, dict)]
    for section in ("image", "text", "decoder"):
        lines += ["", f"[{section}]"] + [f"{k} = {_value(v)}" for k, v in man[section].items()]
    for name, v in man["variants"].items():
        lines += ["", f"[variants.{name}]"] + [f"{k} = {_value(x)}" for k, x in v.items()]
    if "files" in man:
        lines += ["", "[files]"] + [f"{_q(k)} = {_q(v)}" for k, v in man["files"].items()]
    return "\n".join(lines) + "\n"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_dict(cfg: ModelConfig, tok: Tokenizer) -> dict:
    t, d = cfg.text, cfg.decoder
    return {
        "format": FORMAT,
        "name": cfg.name,
        "description": cfg.description,
        "image": {
            "size": cfg.vision.image_size,
            "channels": 3,
            "mean": [float(x) for x in cfg.vision.mean],
            "std": [float(x) for x in cfg.vision.std],
            "tokens": cfg.vision.tokens,
        },
        "text": {
            "tokenizer": "tokenizer.json",
            "vocab_size": d.vocab_size,
            "bos_id": tok.token_to_id(t.bos_token),
            "eos_id": tok.token_to_id(t.eos_token),
            "pad_id": tok.token_to_id(t.pad_token),
            "image_token": t.image_token,
            "image_token_id": tok.token_to_id(t.image_token),
            "stop_tokens": [t.eos_token],
            "system_prompt": t.system_prompt,
            "template": t.template,
        },
        "decoder": {
            "hidden": d.hidden,
            "layer_types": list(d.layer_types),
            "num_heads": d.num_heads,
            "num_kv_heads": d.num_kv_heads,
            "head_dim": d.head_dim,
            "conv_kernel": d.conv_kernel,
            "kv_capacity": cfg.kv_capacity,
            "prefill_chunk": cfg.prefill_chunk,
            MANIFEST_KEY: True,
            "mask_value": float(cfg.mask_value),
            "rope_theta": float(d.rope_theta),
        },
        "variants": {},
    }


def save_manifest(out: Path, man: dict, checksums: bool) -> None:
    """Writes out/manifest.toml; with `checksums`, [files] lists every other file's SHA-256."""
    man = dict(man)
    man.pop("files", None)
    if checksums:
        man["files"] = {p.relative_to(out).as_posix(): sha256(p) for p in bundle_files(out)}
    (out / "manifest.toml").write_text(dump_manifest(man))


# --- calibration data -------------------------------------------------------------------------


def _images(opts: BuildOptions, cfg: ModelConfig, held_out: bool) -> list[Image.Image]:
    given = opts.held_out_images if held_out else opts.calibration_images
    if given is not None:
        return given
    seeds = range(1000, 1004) if held_out else range(100, 116)
    return [draw(s, cfg.vision.image_size)[0] for s in seeds]


def record_feeds(bundle: Path, images, questions, probes, gen_tokens: int = 12):
    """Runs the fp32 bundle over images x questions (prefix, question, a short greedy answer, two
    probes) and returns the feeds each graph received."""
    from .runtime import Recorder, Runner

    rec = Recorder()
    r = Runner(bundle, "fp32", recorder=rec, threads=1, kv_buckets=False)  # QDQ graphs are static at kv_capacity
    spec = r.image
    for i, img in enumerate(images):
        pv = pixel_values(img, spec["size"], spec["mean"], spec["std"])
        prefix = r.prefix_state(pv)
        r.generate(prefix, questions[i % len(questions)], max_new=gen_tokens)
        for p in (probes[i % len(probes)], probes[(i + 3) % len(probes)]):
            r.probe(prefix, p.question, list(p.answers))
    return rec.feeds


def _subsample(feeds: list, n: int) -> list:
    if len(feeds) <= n:
        return feeds
    idx = np.linspace(0, len(feeds) - 1, n).round().astype(int)
    return [feeds[i] for i in idx]


# --- the build --------------------------------------------------------------------------------


def default_tokenizer(cfg: ModelConfig, extra_texts: list[str] | None = None) -> Tokenizer:
    """BPE over the prompt texts plus descriptions of procedurally drawn scenes."""
    texts = base_corpus(cfg.text) + list(QUESTIONS) + [describe(draw(s, 32)[1]) for s in range(400)]
    return train_tokenizer(texts + list(extra_texts or []), cfg.decoder.vocab_size, cfg.text)


def build_bundle(model, out: Path, opts: BuildOptions | None = None, tokenizer: Tokenizer | None = None) -> dict:
    """Writes a complete bundle for `model` (a forge.model.AutoNeural) into `out` (replaced).
    Returns a report (timings, sizes, SQNR, HTP placement)."""
    opts = opts or BuildOptions()
    cfg: ModelConfig = model.cfg
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rep = opts.report
    t0 = time.time()

    tok = tokenizer or default_tokenizer(cfg)
    tok.save(str(out / "tokenizer.json"))
    (out / "probes.toml").write_text(probes_toml(opts.probes))
    man = manifest_dict(cfg, tok)
    variants = man["variants"]
    variants["fp32"] = {"quantization": "none", **{g: f"fp32/{g}.onnx" for g in GRAPHS}}

    t = time.time()
    export_float_graphs(model, out / "fp32", opts.shared_decoder_weights, width_free=not opts.quant)
    rep["export_s"] = round(time.time() - t, 1)
    opts.log(f"exported float graphs in {rep['export_s']} s")
    save_manifest(out, man, checksums=False)

    if opts.quant:
        from .quantize import graph_sqnr, quantize_graph

        t = time.time()
        calib = record_feeds(out, _images(opts, cfg, False), opts.calibration_questions, opts.probes)
        held = record_feeds(out, _images(opts, cfg, True), opts.calibration_questions[::-1], opts.probes[::-1])
        rep["calibration_feeds"] = {g: len(v) for g, v in calib.items()}
        for scheme in opts.quant:
            v = {"quantization": scheme, "sqnr_db": {}}
            for g in GRAPHS:
                if scheme == "w4a16" and g not in LANGUAGE_GRAPHS and "w8a16" in opts.quant:
                    v[g] = variants["w8a16"][g]  # vision and embed stay 8-bit: shared with w8a16
                    v["sqnr_db"][g] = variants["w8a16"]["sqnr_db"][g]
                    continue
                dst = out / scheme / f"{g}.onnx"
                graph_scheme = scheme if g in LANGUAGE_GRAPHS else "w8a16-table" if g == "embed" else "w8a16"
                quantize_graph(out / f"fp32/{g}.onnx", dst, graph_scheme, _subsample(calib[g], 256))
                v[g] = f"{scheme}/{g}.onnx"
                v["sqnr_db"][g] = round(graph_sqnr(out / f"fp32/{g}.onnx", dst, _subsample(held[g], 64)), 2)
                opts.log(f"{scheme}/{g}: SQNR {v['sqnr_db'][g]} dB")
            variants[scheme] = v
        rep["quantize_s"] = round(time.time() - t, 1)
        rep["sqnr_db"] = {k: v["sqnr_db"] for k, v in variants.items() if "sqnr_db" in v}
        save_manifest(out, man, checksums=False)
        prefill_width.upgrade_file(out / "fp32/decoder_prefill.onnx")  # the CPU graph only (QDQ made above)

        if opts.qnn:
            t = time.time()
            rep["htp"] = compile_qnn(out, man, opts.htp_arch, opts.soc_model, opts.log, opts.context)
            rep["qnn_s"] = round(time.time() - t, 1)
            save_manifest(out, man, checksums=False)

    if opts.golden:
        from .golden import write_golden

        t = time.time()
        write_golden(out, man, opts.golden_cases, opts.probes, opts.golden_images)
        rep["golden_s"] = round(time.time() - t, 1)

    save_manifest(out, man, checksums=True)
    rep["total_s"] = round(time.time() - t0, 1)
    rep["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return rep


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def compile_qnn(out: Path, man: dict, htp_arch: int, soc_model: int, log=print, context: bool = True,
                only: set[str] | None = None) -> dict:
    """For every QDQ variant (or those named in `only`): check each graph runs fully on the HTP (CPU fallback disabled),
    compile its EP context model into <variant>/qnn/<graph>_ctx.onnx (shared files compile once) and
    record `qnn_context` in the manifest dict. Returns {graph file: {EP: {op: count}}}. Without
    `context`, only the offload check (no binaries, no `qnn_context`)."""
    from .qnn import assignment, compile_context, htp_session

    compiled: dict[str, str] = {}
    placement = {}
    for name, v in man["variants"].items():
        if v["quantization"] not in ("w8a16", "w4a16") or (only is not None and name not in only):
            continue
        ctx = {"htp_arch": htp_arch, "soc_model": soc_model}
        for g in GRAPHS:
            src = v[g]
            if src not in compiled:
                dst = (Path(src).parent / "qnn" / (Path(src).stem + "_ctx.onnx")).as_posix()
                sess = htp_session(out / src, htp_arch, soc_model)  # raises unless fully offloaded
                placement[src] = assignment(sess)
                del sess
                if not context:
                    compiled[src] = ""
                    log(f"{src}: fully on the HTP {placement[src]}")
                    continue
                # ONNX Runtime names the compiled partition after a hash of the model path, and the
                # name is stored in the context binary: compiling from the bundle directory with
                # relative paths makes the binaries byte-identical wherever the bundle is built
                with _cwd(out):
                    compile_context(Path(src), Path(dst), htp_arch, soc_model)
                compiled[src] = dst
                log(f"{src}: fully on the HTP {placement[src]}; context -> {dst}")
            ctx[g] = compiled[src]
        if context:
            v["qnn_context"] = ctx
    return placement


def bundle_from_state_dict(cfg: ModelConfig, state_dict: dict, out: Path, tokenizer: Tokenizer,
                           opts: BuildOptions | None = None) -> dict:
    """A trained model's bundle: `state_dict` of forge.model.AutoNeural(cfg), its tokenizer (the one
    it was trained with), calibration on real images (`opts.calibration_images`)."""
    from .model import build_model

    return build_bundle(build_model(cfg, state_dict), out, opts, tokenizer)


def bundle_files(out: Path) -> list[Path]:
    """Every file a bundle's manifest must list (ONNX external data included)."""
    files = [p for p in sorted(Path(out).rglob("*")) if p.is_file() and p.name != "manifest.toml"]
    for p in list(files):
        if p.suffix == ".onnx":
            for d in external_data_files(p):
                if d not in files:
                    raise RuntimeError(f"{p}: external data {d} is missing")
    return files
