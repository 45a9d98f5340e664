"""A Hugging Face LFM2-VL checkpoint -> an AutoNeural bundle for the NPU (ARCHITECTURE.md contract 1).

    python -m forge convert-vl --checkpoint HF_DIR --out DIR [--image-size 256] [--quant w8a16]

The checkpoint is what `Lfm2VlForConditionalGeneration.save_pretrained` writes (config.json +
safetensors, transformers 5 names `model.vision_tower.*`, `model.multi_modal_projector.*`,
`model.language_model.*`, `lm_head`) plus the processor files (tokenizer, chat template,
preprocessor_config.json). The bundle's graphs have static shapes:

- vision: `pixel_values` [1,3,S,S] normalised with the processor's mean/std (in the manifest, so the
  Rust Preprocessor reproduces it) -> `image_embeds` [1,N,H]. Inside: the processor's patchify
  (p x p patches, row-major, each flattened channel-last), SigLIP2's patch embedding, its learned
  position grid resized ONCE here for the fixed (S/p) x (S/p) grid by transformers' own
  `resize_positional_embeddings` (antialiased bilinear; every patch valid, no padding), transformers'
  encoder layers and post-LayerNorm, then transformers' LFM2-VL projector (pixel unshuffle by the
  downsample factor, LayerNorm, MLP). N = (S / p / factor)^2: 64 tokens at S = 256.
- embed / decoder_prefill / decoder_step: forge's own Lfm2Decoder (forge.hf.load_lfm2_vl_language)
  exported by forge.export exactly as for every other bundle.
- template: the release's chat template rendered for [system, user: image + question], with the
  image as `<|image_start|><image><|image_end|>` (what the processor's expansion gives a single
  untiled image; the runtime replaces the one `<image>` by the N image embeddings).
- quantized variants: forge's QDQ path (calibrated on the fp32 bundle's own feeds), SQNR per graph,
  the HTP offload check with CPU fallback disabled, EP context binaries.

The projector's GELU is the exact (erf) form, and `Erf` does not run on the v68 HTP. The fp32 graph
keeps the exact op; the quantized vision graph is made from a float graph where GELU is computed
as relu(x) - |x|/2 * q(|x|/sqrt 2), q(z) = poly(t) exp(-z^2), t = 1/(1 + 0.3275911 z) (Abramowitz &
Stegun 7.1.26: |error of erf| <= 1.5e-7) — only Relu/Abs/Mul/Add/Div/Exp, all on the HTP. The
converter first quantizes the exact graph and reports which ops the HTP refuses (`htp.refused`),
then uses the substitution only for those it knows (Erf); any other refused op fails the command.

With `--reference` (the tiny fixture) it also writes `conversion_reference.json`: transformers'
greedy generation and yes/no probe probabilities on the golden images (S x S already, so neither
side resizes), and checks ONNX Runtime running the fp32 graphs reproduces them (the command fails
otherwise).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .bundle import GRAPHS, FORMAT, load_manifest, save_manifest  # noqa: F401
from .probes import Probe, read_probes

REPO = Path(__file__).resolve().parent.parent
INSTRUCT_PROBES = REPO / "inference" / "src" / "published" / "instruct_probes.toml"
SYSTEM_PROMPT = "You are a careful driver-monitoring assistant. Answer briefly."
MARK_SYS, MARK_Q = "@@SYSTEM@@", "@@QUESTION@@"
REFERENCE_QUESTIONS = ("Describe the image.", "Is the driver looking at the road?")
REFERENCE_PROBES = ("eyes", "gaze", "phone", "face")
MAX_NEW = 16


def load_probes(path: Path = INSTRUCT_PROBES) -> tuple[Probe, ...]:
    return read_probes(path)


# ----------------------------------------------------------------------------------------------
# the vision graph


def _torch():
    import torch
    return torch


class GeluErfHtp:
    """x * Phi(x) without Erf: relu(x) - |x|/2 * q, q = 1 - erf(|x|/sqrt 2) (A&S 7.1.26)."""

    @staticmethod
    def module():
        torch = _torch()

        class M(torch.nn.Module):
            def forward(self, x):
                a = torch.abs(x)
                z = a * 0.7071067811865476
                t = 1.0 / (1.0 + 0.3275911 * z)
                poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
                return torch.relu(x) - 0.5 * a * (poly * torch.exp(-z * z))

        return M()


HTP_FORMS = {
    # op the v68 HTP refuses (as the QNN EP reports it) -> what the HTP form of the graph does instead
    "LayerNormalization": "layernorm",  # decomposed: ReduceMean, Sub, Mul, Add, Sqrt, Div
    "Erf": "gelu",                       # GELU(erf) without Erf (A&S 7.1.26)
    "Gelu": "gelu",
}


class LayerNormHtp:
    @staticmethod
    def module(ln):
        torch = _torch()

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

            def forward(self, x):
                d = x - x.mean(-1, keepdim=True)
                y = d / torch.sqrt((d * d).mean(-1, keepdim=True) + self.eps)
                y = y * self.weight
                return y + self.bias if self.bias is not None else y

        return M()


def htp_form(hf_model, forms: set[str]):
    """A copy of the model whose vision tower and projector avoid ops the HTP refuses: `forms` from
    HTP_FORMS' values. Same math in float (the decomposed LayerNorm exactly; GELU within 1e-7)."""
    import copy

    torch = _torch()
    m = copy.deepcopy(hf_model)
    if "layernorm" in forms:
        for root in (m.model.vision_tower, m.model.multi_modal_projector):
            for name, mod in list(root.named_modules()):
                for cn, child in list(mod.named_children()):
                    if isinstance(child, torch.nn.LayerNorm):
                        setattr(mod, cn, LayerNormHtp.module(child))
    return m


def vision_module(hf_model, image_size: int, htp_gelu: bool = False):
    torch = _torch()
    from torch import nn

    cfg = hf_model.config
    vt = getattr(hf_model.model.vision_tower, "vision_model", hf_model.model.vision_tower)
    p = cfg.vision_config.patch_size
    f = cfg.downsample_factor
    if image_size % (p * f):
        raise SystemExit(f"--image-size {image_size} must be a multiple of patch {p} x downsample {f} = {p * f}")
    g = image_size // p

    class Vision(nn.Module):
        def __init__(self):
            super().__init__()
            emb = vt.embeddings
            self.patch = emb.patch_embedding
            grid = emb.position_embedding_size
            table = emb.position_embedding.weight.reshape(grid, grid, -1)
            with torch.no_grad():
                pos = emb.resize_positional_embeddings(table, torch.tensor([[g, g]]), max_length=g * g)[0]
            self.register_buffer("pos", pos.clone(), persistent=False)
            self.layers = vt.encoder.layers
            self.post = vt.post_layernorm
            self.proj = hf_model.model.multi_modal_projector
            self.act = GeluErfHtp.module() if htp_gelu else self.proj.act

        def forward(self, pixel_values):
            # the processor's patchify: row-major patches, each flattened (py, px, channel)
            x = pixel_values.reshape(1, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(1, g * g, p * p * 3)
            x = self.patch(x) + self.pos
            for layer in self.layers:
                x = layer(x, None)
                x = x[0] if isinstance(x, tuple) else x
            x = self.post(x).reshape(1, g, g, -1)
            pr = self.proj
            y = pr.pixel_unshuffle(x)
            if pr.layer_norm is not None:
                y = pr.layer_norm(y)
            y = pr.linear_2(self.act(pr.linear_1(y)))
            return y.reshape(1, -1, y.shape[-1])

    return Vision().eval()


def converted_model(cfg, language, vision):
    """What forge.export needs of a model (an nn.Module with cfg, language and image_embeds)."""
    torch = _torch()

    class ConvertedModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg, self.language, self.vision = cfg, language, vision

        def image_embeds(self, pixel_values):
            return self.vision(pixel_values)

    return ConvertedModel().eval()


# ----------------------------------------------------------------------------------------------
# prompt


def bundle_template(proc) -> str:
    """The release's chat template rendered for [system, user: image + question] with {system},
    {question} placeholders and the one image as <|image_start|><image><|image_end|>."""
    tok = proc.tokenizer
    image = proc.image_token
    conv = [{"role": "system", "content": MARK_SYS},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": MARK_Q}]}]
    s = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    if s.count(image) != 1 or s.count(MARK_SYS) != 1 or s.count(MARK_Q) != 1:
        raise SystemExit(f"the chat template does not render one image, system and question: {s!r}")
    start = getattr(proc, "image_start_token", "<|image_start|>")
    end = getattr(proc, "image_end_token", "<|image_end|>")
    for t in (start, end):
        if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id):
            raise SystemExit(f"the tokenizer has no {t}")
    return s.replace(MARK_SYS, "{system}").replace(MARK_Q, "{question}").replace(image, start + image + end)


# ----------------------------------------------------------------------------------------------
# the conversion


def convert(checkpoint: Path, out: Path, image_size: int = 256, quant=("w8a16",), kv_capacity: int = 1024,
            prefill_chunk: int = 32, qnn: bool = True, htp_arch: int = 68, soc_model: int = 39,
            system_prompt: str = SYSTEM_PROMPT, reference: bool = False, golden_images=None,
            name: str | None = None, context: bool = True, shared_decoder_weights: bool = True, log=print) -> dict:
    torch = _torch()
    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import AutoProcessor, Lfm2VlForConditionalGeneration

    from . import prefill_width
    from .bundle import compile_qnn, manifest_dict, record_feeds, _subsample
    from .config import ModelConfig, TextConfig, VisionConfig
    from .export import export_float_graphs, export_graph
    from .golden import write_golden
    from .hf import load_lfm2_vl_language
    from .images import QUESTIONS, draw
    from .probes import probes_toml

    torch.set_num_threads(1)
    t0 = time.time()
    checkpoint, out = Path(checkpoint), Path(out)
    rep: dict = {}
    hf = Lfm2VlForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    hf.config.vision_config._attn_implementation = "eager"
    hf.model.vision_tower.config._attn_implementation = "eager"
    proc = AutoProcessor.from_pretrained(checkpoint)
    ip, tok = proc.image_processor, proc.tokenizer
    language = load_lfm2_vl_language(checkpoint)
    vc = hf.config.vision_config
    grid = image_size // vc.patch_size // hf.config.downsample_factor
    template = bundle_template(proc)
    text = TextConfig(pad_token=tok.pad_token, bos_token=tok.bos_token, eos_token=tok.eos_token,
                      image_token=proc.image_token, system_prompt=system_prompt, template=template)
    cfg = ModelConfig(
        name=name or f"{checkpoint.name}-{image_size}",
        description=(f"{checkpoint.name} (LFM2-VL: SigLIP2 {vc.num_hidden_layers} x {vc.hidden_size}, patch "
                     f"{vc.patch_size}, + LFM2 {language.cfg.num_layers} layers x {language.cfg.hidden}) converted by "
                     f"forge convert-vl at {image_size} px -> {grid * grid} image tokens"),
        vision=VisionConfig(kind="siglip2", image_size=image_size, mean=tuple(float(x) for x in ip.image_mean),
                            std=tuple(float(x) for x in ip.image_std), grid=grid, patch_size=vc.patch_size),
        decoder=language.cfg, text=text, kv_capacity=kv_capacity, prefill_chunk=prefill_chunk)
    model = converted_model(cfg, language, vision_module(hf, image_size))

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(checkpoint / "tokenizer.json", out / "tokenizer.json")
    btok = Tokenizer.from_file(str(out / "tokenizer.json"))
    probes = load_probes()
    (out / "probes.toml").write_text(probes_toml(probes))
    man = manifest_dict(cfg, btok)
    man["description"] = cfg.description
    if man["text"]["vocab_size"] < btok.get_vocab_size():
        raise SystemExit(f"tokenizer has {btok.get_vocab_size()} tokens > vocab {man['text']['vocab_size']}")
    man["variants"]["fp32"] = {"quantization": "none", **{g: f"fp32/{g}.onnx" for g in GRAPHS}}
    t = time.time()
    export_float_graphs(model, out / "fp32", shared_decoder_weights, width_free=not quant)
    rep["export_s"] = round(time.time() - t, 1)
    save_manifest(out, man, checksums=False)
    log(f"exported fp32 graphs in {rep['export_s']} s (template {template!r})")

    # the processor's view of the prompt must be ours: same ids, one image expanded to N tokens
    check_prompt(proc, out, cfg, grid * grid)

    # golden images: S x S, so the bundle, transformers and the Rust runtime see the same pixels
    gimgs = golden_images or [draw(s, image_size)[0] for s in (7, 21)]
    gimgs = [square(im, image_size) for im in gimgs]

    if quant:
        from .qnn import assignment, htp_session
        from .quantize import graph_sqnr, quantize_graph

        t = time.time()
        calib_imgs = [draw(s, image_size)[0] for s in range(100, 116)]
        held_imgs = [draw(s, image_size)[0] for s in range(1000, 1004)]
        calib = record_feeds(out, calib_imgs, QUESTIONS, probes)
        held = record_feeds(out, held_imgs, QUESTIONS[::-1], probes[::-1])
        rep["calibration_feeds"] = {g: len(v) for g, v in calib.items()}
        rep["htp"] = {}
        with tempfile.TemporaryDirectory() as td:
            for scheme in quant:
                v = {"quantization": scheme, "sqnr_db": {}}
                for g in GRAPHS:
                    dst = out / scheme / f"{g}.onnx"
                    gs = scheme if g in ("decoder_prefill", "decoder_step") else "w8a16-table" if g == "embed" else "w8a16"
                    src = out / f"fp32/{g}.onnx"
                    quantize_graph(src, dst, gs, _subsample(calib[g], 256))
                    if qnn:
                        refused = htp_refused(dst, htp_arch, soc_model)
                        if refused:
                            rep["htp"].setdefault("refused", {})[f"{scheme}/{g}.onnx"] = refused
                            log(f"{scheme}/{g}: the HTP refuses {refused} (with fallback they would run on the CPU)")
                            ops = set(refused) - {"QuantizeLinear", "DequantizeLinear"}
                            if g == "vision" and ops <= set(HTP_FORMS):
                                forms = {HTP_FORMS[o] for o in ops}
                                alt = Path(td) / f"vision_htp_{'_'.join(sorted(forms))}.onnx"
                                if not alt.exists():
                                    export_graph(vision_module(htp_form(hf, forms), image_size, htp_gelu="gelu" in forms),
                                                 (torch.zeros(1, 3, image_size, image_size),), alt, ["pixel_values"],
                                                 ["image_embeds"])
                                diff = float(max(np.abs(_run(alt, f) - _run(src, f)).max() for f in held["vision"]))
                                log(f"{scheme}/{g}: re-quantized from the HTP form {sorted(forms)} (float max |d| "
                                    f"{diff:.1e} vs the fp32 graph)")
                                quantize_graph(alt, dst, gs, _subsample(calib[g], 256))
                                rep.setdefault("substitutions", {})[f"{scheme}/{g}.onnx"] = {
                                    "refused": refused, "forms": sorted(forms), "float_max_abs_diff": diff}
                                refused = htp_refused(dst, htp_arch, soc_model)
                            if refused:
                                raise SystemExit(f"{scheme}/{g}.onnx: ops the HTP does not take: {refused}")
                    v[g] = f"{scheme}/{g}.onnx"
                    v["sqnr_db"][g] = round(graph_sqnr(src, dst, _subsample(held[g], 64)), 2)
                    log(f"{scheme}/{g}: SQNR {v['sqnr_db'][g]} dB")
                man["variants"][scheme] = v
        rep["sqnr_db"] = {k: v["sqnr_db"] for k, v in man["variants"].items() if "sqnr_db" in v}
        rep["quantize_s"] = round(time.time() - t, 1)
        save_manifest(out, man, checksums=False)
        prefill_width.upgrade_file(out / "fp32/decoder_prefill.onnx")  # the CPU graph only (QDQ made above)
        if qnn:
            t = time.time()
            rep["htp"]["placement"] = compile_qnn(out, man, htp_arch, soc_model, log, context)
            rep["qnn_s"] = round(time.time() - t, 1)
            save_manifest(out, man, checksums=False)
    if rep.get("substitutions"):
        forms = sorted({f for x in rep["substitutions"].values() for f in x["forms"]})
        man["description"] += (f"; quantized vision made from an HTP form of the float graph ({', '.join(forms)}: "
                               "ops the v68 HTP refuses, computed with ops it takes)")

    t = time.time()
    write_golden(out, man, len(gimgs), probes, gimgs)
    rep["golden_s"] = round(time.time() - t, 1)
    if reference:
        rep["reference"] = write_reference(hf, proc, out, man, probes, log)
    save_manifest(out, man, checksums=True)
    rep["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    rep["total_s"] = round(time.time() - t0, 1)
    return rep


def square(img, size: int):
    """Center-crop to a square and resize (PIL bilinear) to size x size, RGB."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img if img.size == (size, size) else img.resize((size, size), Image.Resampling.BILINEAR)


def _run(path: Path, feed: dict) -> np.ndarray:
    from .runtime import cpu_session

    s = cpu_session(path, 1)
    names = {i.name for i in s.get_inputs()}
    return s.run(None, {k: v for k, v in feed.items() if k in names})[0]


def htp_refused(path: Path, htp_arch: int, soc_model: int) -> dict[str, int]:
    """{} when the graph loads on the QNN HTP with CPU fallback disabled (it runs fully there);
    else the op types (with counts) a session WITH fallback leaves to the CPU — the refused ops and
    the Q/DQ nodes around them (the QNN EP also lists a graph input's QuantizeLinear and a graph
    output's DequantizeLinear there, even for graphs that load without fallback)."""
    from .qnn import assignment, htp_session

    try:
        del_me = htp_session(path, htp_arch, soc_model, threads=1)
        del del_me
        return {}
    except Exception:  # noqa: BLE001 - the EP's error is a generic one; the placement says which ops
        pass
    sess = htp_session(path, htp_arch, soc_model, fallback=True, threads=1)
    placed = assignment(sess)
    del sess
    return {op: n for ep, ops in placed.items() if ep != "QNNExecutionProvider" for op, n in ops.items()}


def check_prompt(proc, out: Path, cfg, n_image: int) -> None:
    """transformers' processor expansion of the chat prompt == the bundle's prompt ids with the one
    image token replaced by N."""
    from PIL import Image
    from tokenizers import Tokenizer

    from .tokenizer import render_prompt

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    q = REFERENCE_QUESTIONS[1]
    p = render_prompt(tok, cfg.text, q)
    conv = [{"role": "system", "content": cfg.text.system_prompt},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    s = cfg.vision.image_size
    enc = proc(images=[Image.new("RGB", (s, s), (90, 120, 150))], text=prompt, return_tensors="np",
               do_image_splitting=False)
    want = enc["input_ids"][0].tolist()
    img = p.prefix_ids[-1]
    ours = p.prefix_ids[:-1] + [img] * n_image + p.question_ids
    if ours != want:
        raise SystemExit(f"the bundle's prompt differs from the processor's:\n{ours}\n{want}")
    if enc["pixel_values"].shape[1] < (s // cfg.vision.patch_size) ** 2 or int(enc["pixel_attention_mask"].sum()) != (s // cfg.vision.patch_size) ** 2:
        raise SystemExit("the processor does not keep an S x S image at S x S")


# ----------------------------------------------------------------------------------------------
# transformers references + the ONNX check


def write_reference(hf, proc, out: Path, man: dict, probes, log=print, tol: float = 1e-4) -> dict:
    """transformers' greedy tokens and probe P(yes) on the golden images; fails unless the fp32
    bundle on ONNX Runtime reproduces them (tokens identical, P(yes) within `tol`)."""
    torch = _torch()
    from PIL import Image

    from .images import pixel_values
    from .published import logprob_answers
    from .runtime import Runner
    from .tokenizer import answer_ids

    golden = json.loads((out / "golden.json").read_text())
    images = [c["image"] for c in golden["fp32"]["cases"]]
    tok = proc.tokenizer
    eos = tok.eos_token_id
    runners = {v: Runner(out, v, threads=1) for v in man["variants"]}
    system = man["text"]["system_prompt"]
    img_cfg = man["image"]
    by_id = {p.id: p for p in probes}
    ref = {"what": "transformers (the reference implementation) on this bundle's checkpoint; see forge/convert_vl.py",
           "system_prompt": system, "max_new_tokens": MAX_NEW, "eos_token_id": eos, "generations": [], "probes": []}
    worst_p, equal = 0.0, True
    for i, rel in enumerate(images):
        img = Image.open(out / rel).convert("RGB")
        pv = pixel_values(img, img_cfg["size"], img_cfg["mean"], img_cfg["std"])
        prefixes = {v: r.prefix_state(pv) for v, r in runners.items()}
        q = REFERENCE_QUESTIONS[i % len(REFERENCE_QUESTIONS)]
        conv = [{"role": "system", "content": system},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
        prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        enc = proc(images=[img], text=prompt, return_tensors="pt", do_image_splitting=False)
        assert int((enc["input_ids"] == proc.image_token_id).sum()) == img_cfg["tokens"]
        with torch.no_grad():
            g = hf.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW)
        hf_toks = g[0, enc["input_ids"].shape[1]:].tolist()
        entry = {"image": rel, "question": q, "input_ids": enc["input_ids"][0].tolist(), "generated_ids": hf_toks,
                 "generated_text": tok.decode(hf_toks, skip_special_tokens=False), "bundle": {}}
        for v, r in runners.items():
            toks, _ = r.generate(prefixes[v], q, max_new=MAX_NEW, stop=True)
            lead = next((k for k, (a, b) in enumerate(zip(toks, hf_toks)) if a != b), min(len(toks), len(hf_toks)))
            entry["bundle"][v] = {"generated_ids": toks, "tokens_equal": toks == hf_toks, "leading_tokens_equal": lead}
        equal &= entry["bundle"]["fp32"]["tokens_equal"]
        ref["generations"].append(entry)
        log(f"{rel} {q!r}: transformers {hf_toks}; " + ", ".join(
            f"{v} equal {e['tokens_equal']} ({e['leading_tokens_equal']} leading)" for v, e in entry["bundle"].items()))
        for pid in REFERENCE_PROBES:
            p = by_id[pid]
            conv = [{"role": "system", "content": system},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.question}]}]
            prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
            enc = proc(images=[img], text=prompt, return_tensors="pt", do_image_splitting=False)
            lps = logprob_answers(torch, hf, enc, [answer_ids(runners["fp32"].tok, a) for a in p.answers])
            pr = np.exp(np.array(lps) - max(lps))
            pr /= pr.sum()
            probs = dict(zip(p.answers, pr.tolist()))
            p_yes = float(sum(probs[a] for a in p.positive))
            pe = {"image": rel, "probe": pid, "question": p.question, "answers": list(p.answers),
                  "positive": list(p.positive), "logprobs": lps, "p": probs, "p_yes": p_yes, "bundle": {}}
            for v, r in runners.items():
                ours = r.probe(prefixes[v], p.question, list(p.answers))
                py = float(sum(ours[a] for a in p.positive))
                pe["bundle"][v] = {"p_yes": py, "abs_err": abs(py - p_yes)}
            worst_p = max(worst_p, pe["bundle"]["fp32"]["abs_err"])
            ref["probes"].append(pe)
            log(f"{rel} {pid}: P(yes) transformers {p_yes:.6f}, " +
                ", ".join(f"{v} {e['p_yes']:.6f}" for v, e in pe["bundle"].items()))
    ref["parity"] = {"fp32_all_tokens_equal": equal, "fp32_max_abs_p_yes_err": worst_p}
    for v in runners:
        if v != "fp32":
            ref["parity"][f"{v}_max_abs_p_yes_err"] = max(p["bundle"][v]["abs_err"] for p in ref["probes"])
            ref["parity"][f"{v}_generations_equal"] = sum(g["bundle"][v]["tokens_equal"] for g in ref["generations"])
    (out / "conversion_reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    if not equal or worst_p > tol:
        raise SystemExit(f"the fp32 bundle does not reproduce transformers: tokens equal {equal}, "
                         f"max |dP(yes)| {worst_p:.2e} (tol {tol})")
    return ref["parity"]


# ----------------------------------------------------------------------------------------------
# the committed tiny fixture


FIXTURE_IMAGES = ("astronaut_512x512", "chelsea_451x300")


def fixture_images(size: int) -> list:
    """The astronaut and chelsea photos of models/lfm2-vl-tiny-onnx, center-cropped to size x size
    and reduced to 64 colours (as the source fixture: small PNGs; the pixels are what both sides see)."""
    from PIL import Image

    src = REPO / "models" / "lfm2-vl-tiny-onnx" / "images"
    imgs = []
    for n in FIXTURE_IMAGES:
        im = square(Image.open(src / f"{n}.png"), size)
        imgs.append(im.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB"))
    return imgs


def tiny_fixture(out: Path, quant=("w8a16",), qnn: bool = True, context: bool = False, log=print) -> dict:
    """models/lfm2-vl-tiny-bundle: the tiny random LFM2-VL of models/lfm2-vl-tiny-onnx, rebuilt by
    forge.published.build_tiny (deterministic) into a temporary directory and converted, with
    transformers' references on two of that fixture's photos center-cropped to 256 x 256. The HTP
    offload check runs, but no context binaries are stored by default (they would double the
    quantized graphs' bytes; the runtime compiles and caches them)."""
    from .published import build_tiny

    imgs = fixture_images(256)
    with tempfile.TemporaryDirectory() as td:
        hf_dir = build_tiny(Path(td) / "lfm2-vl-tiny")
        return convert(hf_dir, out, 256, quant, kv_capacity=512, prefill_chunk=16, qnn=qnn, reference=True,
                       golden_images=imgs, name="lfm2-vl-tiny-bundle", context=context, log=log)
