"""An AutoNeural assembly from public parts -> a static-shape NPU bundle (ARCHITECTURE.md contract 1).

    python -m forge assemble --lfm2 DIR --vision FILE.safetensors [--vision-arch NAME]
                             [--connector FILE.safetensors] --out BUNDLE [--quant w8a16,w4a16]

AutoNeural's own weights are not public; its parts are:
- the language model: an LFM2 checkpoint (`DIR` = what `Lfm2ForCausalLM.save_pretrained` and its
  tokenizer's `save_pretrained` write: config.json, *.safetensors, tokenizer.json + chat template),
  loaded by `forge.hf` (config derivation, names, tied head);
- the vision encoder: a timm MobileNetV5 encoder state dict (`timm.create_model(
  'mobilenetv5_300m_enc').state_dict()` saved with safetensors), or the Gemma 3n vision tower (names
  under `model.vision_tower.timm_model.`, stripped; a directory of shards is read key by key). Its
  layout is one of `forge.config.VISION_ARCHS` (`--vision-arch`, else the one whose parameter names and
  shapes match); the stem and MSFA widths and the MSFA expansion come from the tensors' shapes;
- the connector (AutoNeural's normalization-free 2-layer MLP, `forge.model.Connector`: `fc1.*`,
  `fc2.*`, optionally under `connector.`): loaded when given, else fresh from `--seed` — then the
  bundle's image answers are untrained, and the manifest description and model card say so.

Every part loads strictly: a missing, unexpected or mis-shaped tensor is an `AssemblyError` naming the
file. The model then goes through the ordinary export (`forge.bundle.build_bundle`): fp32 graphs,
W8A16 / W4A16 QDQ variants with SQNR per graph, the HTP offload check with CPU fallback disabled and
EP context binaries (htp_arch 68 / soc_model 39 by default), golden outputs. The prompt is the LFM2
chat template rendered for [system, user: `<image>` + question].

With `--reference` (the tiny fixture always) it writes `assembly_reference.json`: transformers'
`Lfm2ForCausalLM` greedy tokens for text-only prompts (the ids both sides are fed are stored), and
timm's encoder (+ the connector, plain torch) against the bundle's vision graph; the command fails
unless the fp32 graphs on ONNX Runtime give transformers' tokens exactly and timm's features within
`VISION_TOL` (relative to the features' max |x|). A model card (`README.md`) records the parts'
provenance (paths, SHA-256) and the measured numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VISION_PREFIXES = ("model.vision_tower.timm_model.", "vision_tower.timm_model.", "timm_model.")
CONNECTOR_PREFIXES = ("connector.", "model.connector.")
SIGLIP2_BUNDLE = REPO / "models" / "lfm2-vl-tiny-bundle"
FIXTURE = "autoneural-assembled-tiny"
REFERENCE_PROMPTS = ("Is the driver looking at the road?", "Describe the cabin of a car.",
                     "What should a tired driver do?")
MAX_NEW = 12
VISION_TOL = 1e-4
MARK_SYS, MARK_Q = "@@SYSTEM@@", "@@QUESTION@@"


class AssemblyError(Exception):
    """A part does not fit: the message names the file and the tensors."""


def _torch():
    import torch
    return torch


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# reading the parts


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise AssemblyError(f"{path}: no *.safetensors files")
        return files
    if not path.is_file():
        raise AssemblyError(f"{path}: no such file")
    return [path]


def read_state(path: Path, prefixes: tuple[str, ...] = ()) -> dict:
    """Tensors (float32) of a safetensors file or a directory of shards. When names carry one of
    `prefixes` (e.g. a whole Gemma 3n checkpoint), only those are read, the prefix stripped."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    files = _safetensors_files(path)
    keys = {}
    try:
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    keys[k] = f
    except (SafetensorError, OSError) as e:
        raise AssemblyError(f"{path}: not a safetensors file ({e})") from None
    prefix = next((p for p in prefixes if any(k.startswith(p) for k in keys)), "")
    state = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                if k.startswith(prefix):
                    state[k[len(prefix):]] = st.get_tensor(k).float()
    if not state:
        raise AssemblyError(f"{path}: no tensors")
    return state


def state_diff(module, state: dict) -> dict:
    """{missing, unexpected, shapes} between a module's state dict and `state` (empty lists: a fit)."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    return {"missing": sorted(set(want) - set(got)), "unexpected": sorted(set(got) - set(want)),
            "shapes": [f"{k}: file {got[k]} vs model {want[k]}" for k in sorted(set(want) & set(got)) if want[k] != got[k]]}


def describe_diff(d: dict, n: int = 6) -> str:
    parts = []
    for what in ("missing", "unexpected", "shapes"):
        if d[what]:
            more = f" (+{len(d[what]) - n} more)" if len(d[what]) > n else ""
            parts.append(f"{len(d[what])} {'mis-shaped' if what == 'shapes' else what}: {d[what][:n]}{more}")
    return "; ".join(parts)


def load_part(module, state: dict, where: str, what: str) -> None:
    d = state_diff(module, state)
    if any(d.values()):
        raise AssemblyError(f"{where}: does not fit the {what}: {describe_diff(d)}")
    module.load_state_dict(state, strict=True)


def vision_config_from_state(state: dict, where: str, arch: str | None = None, image_size: int | None = None,
                             grid: int | None = None):
    """(arch name, VisionConfig) for a MobileNetV5 encoder state dict: the widths from the shapes, the
    block layout from `arch` or the first of VISION_ARCHS whose names and shapes all match."""
    torch = _torch()
    from .config import VISION_ARCHS
    from .vision import MobileNetV5Encoder

    need = ("conv_stem.conv.weight", "msfa.norm.weight", "msfa.ffn.pw_exp.conv.weight")
    absent = [k for k in need if k not in state]
    if absent:
        raise AssemblyError(f"{where}: not a MobileNetV5 encoder state dict (no {absent}; its names start "
                            f"{sorted(state)[:4]}; a Gemma 3n checkpoint's are stripped of {VISION_PREFIXES[0]!r})")
    if arch is not None and arch not in VISION_ARCHS:
        raise AssemblyError(f"--vision-arch {arch!r}: known layouts are {', '.join(VISION_ARCHS)}")
    mid, cin = state["msfa.ffn.pw_exp.conv.weight"].shape[:2]
    diffs = {}
    for name in [arch] if arch else list(VISION_ARCHS):
        base = VISION_ARCHS[name]
        vc = dataclasses.replace(base, stem_channels=int(state["conv_stem.conv.weight"].shape[0]),
                                 msfa_channels=int(state["msfa.norm.weight"].shape[0]), msfa_expansion=mid / cin,
                                 image_size=image_size or base.image_size, grid=grid or base.grid)
        try:
            with torch.device("meta"):  # names and shapes only: no memory, no init
                enc = MobileNetV5Encoder(vc)
        except (ValueError, RuntimeError) as e:
            diffs[name] = f"cannot build ({e})"
            continue
        d = state_diff(enc, state)
        if not any(d.values()):
            return name, vc
        diffs[name] = describe_diff(d)
    raise AssemblyError(f"{where}: matches no known MobileNetV5 layout: " +
                        " | ".join(f"{k}: {v}" for k, v in diffs.items()))


def timm_encoder(vc, arch: str | None = None):
    """timm's own MobileNetV5 encoder for a VisionConfig: `timm.create_model(arch)` for a timm model
    name, else built from the block strings with timm's classes (its arch-def decoder, blocks, MSFA).
    Eval mode, unfused attention."""
    from functools import partial

    import timm
    from timm.layers import RmsNorm2d
    from timm.models import mobilenetv5 as mv5
    from timm.models._efficientnet_builder import decode_arch_def, round_channels

    if arch in timm.list_models("mobilenetv5*"):
        t = timm.create_model(arch, pretrained=False, msfa_output_resolution=vc.grid)
    else:
        t = mv5.MobileNetV5Encoder(
            block_args=decode_arch_def([list(s) for s in vc.stages]), stem_size=vc.stem_channels, pad_type="same",
            round_chs_fn=partial(round_channels, multiplier=1.0), norm_layer=RmsNorm2d, act_layer=mv5._GELU,
            layer_scale_init_value=vc.layer_scale_init, msfa_output_resolution=vc.grid,
        )
        t.msfa = mv5.MobileNetV5MultiScaleFusionAdapter(
            in_chs=t.msfa_in_chs, out_chs=vc.msfa_channels, output_resolution=vc.grid, norm_layer=RmsNorm2d,
            act_layer=mv5._GELU, expansion_ratio=vc.msfa_expansion,
        )
    for m in t.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return t.eval()


def connector_state(path: Path) -> dict:
    return read_state(path, CONNECTOR_PREFIXES)


# ----------------------------------------------------------------------------------------------
# the prompt


def text_config(lfm2_dir: Path, image_token: str, system_prompt: str):
    """TextConfig from the checkpoint's tokenizer: its special tokens and its chat template rendered
    for [system, user: image token + question]."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from .config import TextConfig

    if not (lfm2_dir / "tokenizer.json").is_file():
        raise AssemblyError(f"{lfm2_dir / 'tokenizer.json'}: missing (save the tokenizer with the checkpoint)")
    hft = AutoTokenizer.from_pretrained(str(lfm2_dir))
    tok = Tokenizer.from_file(str(lfm2_dir / "tokenizer.json"))
    if tok.token_to_id(image_token) is None:
        reserved = [t for t in sorted(tok.get_added_tokens_decoder().values(), key=str)
                    if "reserved" in t.content][:3]
        raise AssemblyError(f"{lfm2_dir / 'tokenizer.json'}: no {image_token!r} token; pick one of its unused "
                            f"special tokens with --image-token (e.g. {[t.content for t in reserved]})")
    if not hft.chat_template:
        raise AssemblyError(f"{lfm2_dir}: the tokenizer has no chat template")
    conv = [{"role": "system", "content": MARK_SYS}, {"role": "user", "content": image_token + MARK_Q}]
    s = hft.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    if s.count(image_token) != 1 or s.count(MARK_SYS) != 1 or s.count(MARK_Q) != 1:
        raise AssemblyError(f"{lfm2_dir}: the chat template does not render one system turn and question: {s!r}")
    template = s.replace(MARK_SYS, "{system}").replace(MARK_Q, "{question}")
    pad = hft.pad_token or hft.eos_token
    for t in (hft.bos_token, hft.eos_token, pad, "<|im_start|>"):
        if t is None or tok.token_to_id(t) is None:
            raise AssemblyError(f"{lfm2_dir / 'tokenizer.json'}: no special token {t!r}")
    return TextConfig(pad_token=pad, bos_token=hft.bos_token, eos_token=hft.eos_token, image_token=image_token,
                      system_prompt=system_prompt, template=template), tok


def text_prompt_ids(tok, text, question: str) -> list[int]:
    """The ids of a text-only prompt: the bundle's template without the image token."""
    s = text.template.replace(text.image_token, "").replace("{system}", text.system_prompt)
    return tok.encode(s.replace("{question}", question), add_special_tokens=False).ids


# ----------------------------------------------------------------------------------------------
# the assembly


def provenance(path: Path, given: str | None = None) -> dict:
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return {"path": given or str(path), "sha256": {p.name: sha256(p) for p in files}}


def assemble_model(lfm2_dir: Path, vision: Path, connector: Path | None = None, vision_arch: str | None = None,
                   image_size: int | None = None, grid: int | None = None, image_token: str = "<image>",
                   system_prompt: str | None = None, kv_capacity: int = 1024, prefill_chunk: int = 32,
                   seed: int = 0, name: str | None = None):
    """-> (forge.model.AutoNeural with the parts' weights, its tokenizer, info dict). Raises
    AssemblyError (naming the file) when a part does not fit."""
    torch = _torch()
    from .config import ModelConfig
    from .convert_vl import SYSTEM_PROMPT
    from .hf import CheckpointError, load_lfm2_checkpoint
    from .model import AutoNeural, randomize_vision_

    lfm2_dir, vision = Path(lfm2_dir), Path(vision)
    try:
        language = load_lfm2_checkpoint(lfm2_dir)
    except CheckpointError as e:
        raise AssemblyError(str(e)) from None
    d = language.cfg
    vstate = read_state(vision, VISION_PREFIXES)
    arch, vc = vision_config_from_state(vstate, str(vision), vision_arch, image_size, grid)
    cstate = connector_state(connector) if connector else None
    hidden = None
    if cstate is not None:
        if "fc1.weight" not in cstate or "fc2.weight" not in cstate:
            raise AssemblyError(f"{connector}: not a connector state dict (want fc1.*, fc2.*; has {sorted(cstate)[:6]})")
        hidden = int(cstate["fc1.weight"].shape[0])
    text, tok = text_config(lfm2_dir, image_token, system_prompt or SYSTEM_PROMPT)
    if tok.get_vocab_size() > d.vocab_size:
        raise AssemblyError(f"{lfm2_dir / 'tokenizer.json'}: {tok.get_vocab_size()} tokens > vocab_size {d.vocab_size}")
    if kv_capacity < vc.tokens + 128:  # the image, the system turn, a question and an answer must fit
        raise AssemblyError(f"--kv-capacity {kv_capacity} leaves no room for the prompt and answer around "
                            f"{vc.tokens} image tokens; want at least {vc.tokens + 128}")
    fresh = cstate is None
    cname = f"fresh (seed {seed}, untrained: image answers are meaningless)" if fresh else f"trained ({connector.name})"
    cfg = ModelConfig(
        name=name or f"autoneural-{lfm2_dir.name}-{arch}-{vc.image_size}",
        description=(f"AutoNeural assembled from public parts by forge assemble: LFM2 {lfm2_dir.name} ({d.num_layers} "
                     f"layers x {d.hidden}), MobileNetV5 encoder {arch} ({vision.name}) at {vc.image_size} px -> "
                     f"{vc.tokens} image tokens, connector {cname}"),
        vision=vc, decoder=d, text=text, connector_hidden=hidden, kv_capacity=kv_capacity,
        prefill_chunk=prefill_chunk, seed=seed)
    torch.manual_seed(seed)
    model = AutoNeural(cfg)
    model.language = language
    load_part(model.vision, vstate, str(vision), f"MobileNetV5 encoder {arch}")
    if fresh:
        randomize_vision_(model.connector, torch.Generator().manual_seed(seed))
    else:
        load_part(model.connector, cstate, str(connector),
                  f"connector {vc.msfa_channels} -> {hidden} -> {d.hidden} (MSFA width -> LFM2 hidden)")
    info = {"arch": arch, "fresh_connector": fresh, "seed": seed}
    return model.eval(), tok, info


def assemble(lfm2_dir: Path, vision: Path, out: Path, connector: Path | None = None, vision_arch: str | None = None,
             quant=("w8a16", "w4a16"), image_size: int | None = None, grid: int | None = None,
             image_token: str = "<image>", system_prompt: str | None = None, kv_capacity: int = 1024,
             prefill_chunk: int = 32, seed: int = 0, qnn: bool = True, context: bool = True, htp_arch: int = 68,
             soc_model: int = 39, reference: bool = False, golden_images=None, name: str | None = None,
             given: dict | None = None, notes: str = "", log=print) -> dict:
    """Assembles the parts and writes the bundle into `out` (replaced). `given`: how to name the parts
    in the provenance (default: their paths). Returns the export report (+ the reference's parity)."""
    torch = _torch()
    from .bundle import BuildOptions, build_bundle, load_manifest, save_manifest
    from .convert_vl import load_probes

    torch.set_num_threads(1)
    t0 = time.time()
    given = given or {}
    model, tok, info = assemble_model(lfm2_dir, vision, connector, vision_arch, image_size, grid, image_token,
                                      system_prompt, kv_capacity, prefill_chunk, seed, name)
    cfg = model.cfg
    n = sum(p.numel() for p in model.parameters())
    log(f"assembled {cfg.name}: {n:,} parameters ({info['arch']}, connector "
        f"{'fresh' if info['fresh_connector'] else 'loaded'})")
    if n > 100_000_000 and quant:
        log(f"note: {n:,} parameters: calibrating takes hours here and tens of GB, and the HTP simulator "
            "(~1.5 GFLOP/s) checks each quantized graph for hours; --quant none (float graphs) or --no-qnn")
    parts = {"lfm2": provenance(lfm2_dir, given.get("lfm2")), "vision": provenance(vision, given.get("vision")),
             "connector": (provenance(connector, given.get("connector")) if connector
                           else {"fresh": True, "seed": seed, "note": "untrained: image answers are meaningless"}),
             "vision_arch": info["arch"]}
    opts = BuildOptions(quant=tuple(quant), qnn=qnn and bool(quant), context=context, htp_arch=htp_arch,
                        soc_model=soc_model, probes=load_probes(), log=log, shared_decoder_weights=True,
                        golden_images=golden_images, golden_cases=len(golden_images) if golden_images else 3)
    rep = build_bundle(model, Path(out), opts, tok)
    rep["parameters"] = n
    out = Path(out)
    man = load_manifest(out)
    if reference:
        rep["reference"] = write_reference(model, info["arch"], Path(lfm2_dir), out, man, parts, log)
    write_card(out, man, parts, rep, notes)
    save_manifest(out, man, checksums=True)
    rep["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    rep["total_s"] = round(time.time() - t0, 1)
    return rep


# ----------------------------------------------------------------------------------------------
# references: transformers' LFM2 and timm's encoder against the bundle


def _sqnr(ref: np.ndarray, x: np.ndarray) -> float:
    err = float(((ref - x).astype(np.float64) ** 2).sum())
    return float("inf") if err == 0 else 10 * math.log10(float((ref.astype(np.float64) ** 2).sum()) / err)


def same_image_sqnr(ours: Path, theirs: Path, images: list[str]) -> dict:
    """W8A16 vs fp32 SQNR (dB) of two bundles' vision graphs on the same pictures (each at its own
    size and normalisation): a like-for-like look at how the two encoders quantize."""
    from PIL import Image

    from .bundle import load_manifest
    from .images import pixel_values
    from .runtime import cpu_session

    res = {}
    for b in (ours, theirs):
        man = load_manifest(b)
        im = man["image"]
        f32 = cpu_session(b / man["variants"]["fp32"]["vision"], 1)
        q = cpu_session(b / man["variants"]["w8a16"]["vision"], 1)
        vals = []
        for rel in images:
            pv = pixel_values(Image.open(ours / rel).convert("RGB"), im["size"], im["mean"], im["std"])
            vals.append(round(_sqnr(f32.run(None, {"pixel_values": pv})[0], q.run(None, {"pixel_values": pv})[0]), 2))
        res[man["name"]] = vals
    return {"images": images, "w8a16_vs_fp32_vision_sqnr_db": res}


def write_reference(model, arch: str, lfm2_dir: Path, out: Path, man: dict, parts: dict, log=print) -> dict:
    """assembly_reference.json; raises AssemblyError unless the fp32 bundle reproduces transformers'
    greedy tokens exactly and timm's features within VISION_TOL."""
    torch = _torch()
    import torch.nn.functional as F
    from PIL import Image
    from transformers import AutoTokenizer, Lfm2ForCausalLM

    from .bundle import load_manifest
    from .config import TextConfig
    from .images import pixel_values
    from .runtime import Runner

    t = man["text"]
    text = TextConfig(pad_token="", bos_token="", eos_token="", image_token=t["image_token"],
                      system_prompt=t["system_prompt"], template=t["template"])
    runners = {v: Runner(out, v, threads=1) for v in man["variants"]}
    tok = runners["fp32"].tok
    eos, pad = t["eos_id"], t["pad_id"]
    hf = Lfm2ForCausalLM.from_pretrained(str(lfm2_dir), dtype=torch.float32).eval()
    hft = AutoTokenizer.from_pretrained(str(lfm2_dir))
    ref = {"what": "transformers' Lfm2ForCausalLM (greedy, text only) and timm's MobileNetV5 encoder on this "
                   "bundle's parts, against the bundle's graphs; see forge/assemble.py",
           "system_prompt": t["system_prompt"], "max_new_tokens": MAX_NEW, "eos_token_id": eos, "pad_token_id": pad,
           "parts": parts, "generations": [], "vision": []}
    equal = True
    for q in REFERENCE_PROMPTS:
        ids = text_prompt_ids(tok, text, q)
        # the ids both sides get are what the checkpoint's own chat template gives a text-only chat
        chat = hft.apply_chat_template([{"role": "system", "content": t["system_prompt"]},
                                        {"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        if hft(chat, add_special_tokens=False)["input_ids"] != ids:
            raise AssemblyError(f"{lfm2_dir}: the text-only prompt differs from the chat template's: {chat!r}")
        with torch.no_grad():
            g = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=eos, pad_token_id=pad)
        hf_toks = g[0, len(ids):].tolist()
        e = {"question": q, "prompt_ids": ids, "generated_ids": hf_toks,
             "generated_text": tok.decode(hf_toks, skip_special_tokens=False), "bundle": {}}
        for v, r in runners.items():
            toks, _ = r.generate(r.new_state(), ids, max_new=MAX_NEW, stop=True)
            lead = next((k for k, (a, b) in enumerate(zip(toks, hf_toks)) if a != b), min(len(toks), len(hf_toks)))
            e["bundle"][v] = {"generated_ids": toks, "tokens_equal": toks == hf_toks, "leading_tokens_equal": lead}
        equal &= e["bundle"]["fp32"]["tokens_equal"]
        ref["generations"].append(e)
        log(f"{q!r}: transformers {hf_toks}; " + ", ".join(
            f"{v} equal {x['tokens_equal']} ({x['leading_tokens_equal']} leading)" for v, x in e["bundle"].items()))

    # vision: timm's encoder with the same weights, then the bundle's connector in plain torch
    timm_model = timm_encoder(model.cfg.vision, arch)
    timm_model.load_state_dict(model.vision.state_dict(), strict=True)
    c = model.connector
    worst_rel = 0.0
    golden = json.loads((out / "golden.json").read_text())
    img = man["image"]
    for case in golden["fp32"]["cases"][:2]:
        rel = case["image"]
        pv = pixel_values(Image.open(out / rel).convert("RGB"), img["size"], img["mean"], img["std"])
        with torch.no_grad():
            feats = timm_model(torch.from_numpy(pv))  # [1, C, g, g]
            x = feats.flatten(2).transpose(1, 2)
            want = F.linear(F.gelu(F.linear(x, c.fc1.weight, c.fc1.bias), approximate="tanh"),
                            c.fc2.weight, c.fc2.bias)[0].numpy()
        scale = float(np.abs(want).max())
        e = {"image": rel, "timm_features_shape": list(feats.shape), "embeds_shape": list(want.shape),
             "max_abs_reference": scale, "bundle": {}}
        for v, r in runners.items():
            got = r.image_embeds(pv)
            e["bundle"][v] = {"max_abs_err": float(np.abs(got - want).max()), "sqnr_db": round(_sqnr(want, got), 2)}
        worst_rel = max(worst_rel, e["bundle"]["fp32"]["max_abs_err"] / max(scale, 1.0))
        ref["vision"].append(e)
        log(f"{rel}: timm + connector vs bundle " + ", ".join(
            f"{v} max|d| {x['max_abs_err']:.2e} ({x['sqnr_db']} dB)" for v, x in e["bundle"].items()))
    ref["sqnr_db"] = {v: x["sqnr_db"] for v, x in man["variants"].items() if "sqnr_db" in x}
    if (SIGLIP2_BUNDLE / "manifest.toml").exists():
        sig = load_manifest(SIGLIP2_BUNDLE)["variants"].get("w8a16", {}).get("sqnr_db", {})
        ref["siglip2_bundle"] = {"bundle": "models/lfm2-vl-tiny-bundle", "w8a16_sqnr_db": sig}
        if "w8a16" in man["variants"]:
            ref["siglip2_bundle"]["same_images"] = same_image_sqnr(out, SIGLIP2_BUNDLE, [e["image"] for e in ref["vision"]])
    ref["parity"] = {"fp32_all_tokens_equal": equal, "fp32_vision_max_rel_err": worst_rel,
                     "fp32_vision_max_abs_err": max(e["bundle"]["fp32"]["max_abs_err"] for e in ref["vision"]),
                     "vision_tol": VISION_TOL}
    for v in runners:
        if v != "fp32":
            ref["parity"][f"{v}_generations_equal"] = sum(g["bundle"][v]["tokens_equal"] for g in ref["generations"])
            ref["parity"][f"{v}_vision_sqnr_db_vs_timm"] = min(e["bundle"][v]["sqnr_db"] for e in ref["vision"])
    (out / "assembly_reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    if not equal or worst_rel > VISION_TOL:
        raise AssemblyError(f"the fp32 bundle does not reproduce the parts: tokens equal {equal}, vision max "
                            f"|d|/max(1, max|ref|) {worst_rel:.2e} (tol {VISION_TOL})")
    return ref["parity"]


# ----------------------------------------------------------------------------------------------
# model card


def write_card(out: Path, man: dict, parts: dict, rep: dict, notes: str = "") -> None:
    fresh = parts["connector"].get("fresh", False)
    lines = [f"# {man['name']}", "", man["description"] + ".", ""]
    if fresh:
        lines += ["**The connector is fresh (random, untrained): the language model's text answers are LFM2's, "
                  "but answers about images are meaningless until the connector is trained.**", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Parts (provenance)", "", "| part | source | file | SHA-256 |", "|---|---|---|---|"]
    for part in ("lfm2", "vision", "connector"):
        p = parts[part]
        if "sha256" not in p:
            lines.append(f"| {part} | fresh, seed {p['seed']} | | |")
            continue
        for f, h in p["sha256"].items():
            lines.append(f"| {part} | `{p['path']}` | `{f}` | `{h}` |")
    lines += ["", f"Vision layout: `{parts['vision_arch']}`; image {man['image']['size']} px -> "
              f"{man['image']['tokens']} tokens; decoder {len(man['decoder']['layer_types'])} layers "
              f"({man['decoder']['layer_types'].count('full_attention')} attention), hidden {man['decoder']['hidden']}, "
              f"KV capacity {man['decoder']['kv_capacity']}, prefill chunk {man['decoder']['prefill_chunk']}.", "",
              "## Variants", "", "| variant | vision | embed | decoder_prefill | decoder_step | QNN context |",
              "|---|---|---|---|---|---|"]
    for v, x in man["variants"].items():
        s = x.get("sqnr_db", {})
        ctx = x.get("qnn_context")
        lines.append(f"| {v} | " + " | ".join(f"{s[g]} dB" if g in s else "-" for g in
                                               ("vision", "embed", "decoder_prefill", "decoder_step")) +
                     f" | {'v%d / soc %d' % (ctx['htp_arch'], ctx['soc_model']) if ctx else '-'} |")
    lines += ["", "SQNR: each quantized graph against fp32 on held-out feeds (dB)."]
    if "htp" in rep:
        lines += ["", "HTP offload (QNN EP, CPU fallback disabled): every quantized graph ran fully on the "
                  "HTP: " + ", ".join(f"`{g}`" for g in rep["htp"]) + "."]
    r = rep.get("reference")
    ref = json.loads((out / "assembly_reference.json").read_text()) if r else {}
    if r:
        lines += ["", "## Checked against the parts' own code (`assembly_reference.json`)", "",
                  f"- fp32 greedy tokens equal transformers' `Lfm2ForCausalLM`: {r['fp32_all_tokens_equal']}",
                  f"- fp32 vision graph vs timm's encoder + the connector: max |d| {r['fp32_vision_max_abs_err']:.2e}"]
        for k, v in r.items():
            if not k.startswith("fp32") and k != "vision_tol":
                lines.append(f"- {k}: {v}")
        same = ref.get("siglip2_bundle", {}).get("same_images")
        if same:
            lines += ["", "Vision W8A16 vs fp32 SQNR on the same pictures (" + ", ".join(same["images"]) + "): " +
                      "; ".join(f"{b} {v} dB" for b, v in same["w8a16_vs_fp32_vision_sqnr_db"].items()) +
                      " (MobileNetV5 here vs the SigLIP2 encoder of models/lfm2-vl-tiny-bundle; both random tiny "
                      "encoders, so this compares architectures under random weights, not trained models)."]
    (out / "README.md").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# the committed tiny fixture


TINY_LAYERS = ("conv", "conv", "full_attention", "conv", "conv", "full_attention")
TINY_SIZE, TINY_GRID = 256, 8


def tiny_lfm2(out: Path, seed: int = 7) -> Path:
    """A tiny random Lfm2ForCausalLM (transformers' own classes; LFM2's conv + attention mix and its
    FFN-width derivation) + the tokenizer of models/lfm2-vl-tiny-onnx (LFM2's chat tokens), saved
    with save_pretrained."""
    torch = _torch()
    from transformers import AutoTokenizer, Lfm2Config, Lfm2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(REPO / "models" / "lfm2-vl-tiny-onnx"))
    cfg = Lfm2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=192, block_auto_adjust_ff_dim=True,
                     block_ffn_dim_multiplier=1.0, block_multiple_of=32, num_hidden_layers=len(TINY_LAYERS),
                     num_attention_heads=4, num_key_value_heads=2, layer_types=list(TINY_LAYERS), conv_L_cache=3,
                     max_position_embeddings=4096, norm_eps=1e-5, tie_word_embeddings=True,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    m = Lfm2ForCausalLM(cfg).eval()
    # transformers' init leaves norms at 1 and biases at 0 and the 0.02-std weights make a nearly linear
    # model: perturb every parameter so the references exercise all of them and logits stay separated
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sorted(m.named_parameters()):
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    m.generation_config.eos_token_id = tok.eos_token_id
    m.generation_config.bos_token_id = tok.bos_token_id
    m.generation_config.pad_token_id = tok.pad_token_id
    m.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def tiny_vision(path: Path, seed: int = 11) -> Path:
    """A tiny MobileNetV5 encoder built with timm's classes (forge-tiny layout, MSFA 48 ch), random
    non-trivial weights, its state dict saved with safetensors."""
    torch = _torch()
    from safetensors.torch import save_file

    from .config import VISION_ARCHS
    from .model import randomize_vision_

    vc = dataclasses.replace(VISION_ARCHS["forge-tiny"], image_size=TINY_SIZE, grid=TINY_GRID)
    t = timm_encoder(vc, "forge-tiny")
    randomize_vision_(t, torch.Generator().manual_seed(seed))
    save_file({k: v.detach().contiguous() for k, v in t.state_dict().items()}, str(path))
    return path


def tiny_fixture(out: Path, quant=("w8a16",), qnn: bool = True, context: bool = False, log=print) -> dict:
    """models/autoneural-assembled-tiny: a tiny random LFM2 (transformers) + a tiny timm MobileNetV5
    encoder, both saved and then assembled like real parts (fresh connector), with references; the
    golden images are the two photos of models/lfm2-vl-tiny-onnx at 256 x 256. The HTP offload check
    runs; no context binaries are stored by default (the runtime compiles and caches them)."""
    from .convert_vl import fixture_images

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        lfm2 = tiny_lfm2(td / "lfm2-tiny")
        vision = tiny_vision(td / "mobilenetv5-tiny.safetensors")
        notes = ("Test fixture: the parts are tiny and random (a transformers `Lfm2ForCausalLM`, 6 layers x 64, "
                 "and a timm `MobileNetV5Encoder` in the forge-tiny layout), made and assembled by "
                 "`python -m forge assemble --tiny-fixture --out models/autoneural-assembled-tiny`. "
                 "Its outputs are meaningless; it exists so the Rust runtime can check the assembled graphs "
                 "against transformers' and timm's own code (`assembly_reference.json`).")
        return assemble(lfm2, vision, out, quant=quant, image_size=TINY_SIZE, grid=TINY_GRID, kv_capacity=256,
                        prefill_chunk=16, qnn=qnn, context=context, reference=True, golden_images=fixture_images(TINY_SIZE),
                        name=FIXTURE, given={"lfm2": "tiny-fixture:lfm2-tiny (forge.assemble.tiny_lfm2)",
                                             "vision": "tiny-fixture:mobilenetv5-tiny.safetensors "
                                                       "(forge.assemble.tiny_vision)"},
                        notes=notes, log=log)
