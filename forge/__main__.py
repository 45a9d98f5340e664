"""python -m forge {export,compile-qnn,golden,check,parity,published-fixture,convert-vl,assemble,random-vl,cpu-int4,upgrade-prefill} ... (see forge/README.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


BIG_CONFIGS = ("autoneural-1.5b", "internvl2-2b-like")


def _export(a) -> int:
    import torch

    from .bundle import BuildOptions, build_bundle
    from .config import get_config
    from .model import build_model

    torch.set_num_threads(a.threads)
    cfg = get_config(a.config)
    big = cfg.name in BIG_CONFIGS
    if a.quant is None:
        a.quant = "none" if big else "w8a16,w4a16"
    quant = () if a.quant in ("", "none") else tuple(q.strip() for q in a.quant.split(","))
    for q in quant:
        if q not in ("w8a16", "w4a16"):
            raise SystemExit(f"unknown quantization {q!r} (want w8a16, w4a16 or none)")
    state = None
    if a.state_dict:
        from safetensors.torch import load_file

        state = load_file(a.state_dict)
    tokenizer = None
    if a.tokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(a.tokenizer)
    if quant and big:
        # calibration runs every activation of the graph through ONNX Runtime over hundreds of feeds:
        # hours and tens of GB for a 1-2 B model here, and the HTP simulator could not run it anyway
        raise SystemExit(f"{cfg.name}: quantizing the full-size configs is not supported here; "
                         "export with --quant none (float graphs for the CPU/CUDA benchmarks)")
    t = time.time()
    model = build_model(cfg, state)
    print(f"built {cfg.name}: {sum(p.numel() for p in model.parameters()):,} parameters in {time.time() - t:.1f} s")
    opts = BuildOptions(quant=quant, qnn=not a.no_qnn and bool(quant), htp_arch=a.htp_arch, soc_model=a.soc_model,
                        golden=not a.no_golden and not big)
    if a.calibration_dir:
        from .scenes import read_scenes

        scenes = read_scenes(a.calibration_dir)
        if len(scenes) < 8:
            raise SystemExit(f"{a.calibration_dir}: {len(scenes)} scenes; want at least 8 (calibration + held out)")
        images = [s.load() for s in scenes[:64]]
        k = max(4, len(images) // 5)
        opts.calibration_images, opts.held_out_images = images[:-k], images[-k:]
        opts.golden_images = images[-k:]
        print(f"calibrating on {len(images) - k} rendered scenes, SQNR on {k} held-out ones")
    rep = build_bundle(model, Path(a.out), opts, tokenizer)
    print(json.dumps(rep, indent=1))
    return 0


def _compile_qnn(a) -> int:
    from .bundle import compile_qnn, load_manifest, save_manifest

    out = Path(a.dir)
    man = load_manifest(out)
    rep = compile_qnn(out, man, a.htp_arch, a.soc_model)
    save_manifest(out, man, checksums=True)
    print(json.dumps(rep, indent=1))
    return 0


def _golden(a) -> int:
    from .bundle import load_manifest, save_manifest
    from .golden import write_golden
    from .probes import DEFAULT_PROBES

    out = Path(a.dir)
    man = load_manifest(out)
    write_golden(out, man, a.cases, DEFAULT_PROBES)
    save_manifest(out, man, checksums=True)
    print(f"wrote {out / 'golden.json'}")
    return 0


def _check(a) -> int:
    from .check_bundles import check_bundle

    errors = check_bundle(Path(a.dir))
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


def _parity(a) -> int:
    from .parity import parity_report

    print(json.dumps(parity_report(Path(a.dir), a.config), indent=1))
    return 0


def _published(a) -> int:
    from .published import build_fixture

    variants = [] if a.variants in ("", "none") else [v.strip() for v in a.variants.split(",")]
    for v in variants:
        if v not in ("q4", "q8", "fp16"):
            raise SystemExit(f"unknown variant {v!r} (want q4, q8, fp16 or none)")
    rep = build_fixture(Path(a.out), Path(a.checkpoint) if a.checkpoint else None, variants,
                        reference=not a.no_reference and not a.checkpoint)
    print(json.dumps(rep, indent=1))
    return 0


def _random_vl(a) -> int:
    from .random_vl import main as build

    build(a.size, Path(a.out))
    return 0


def _convert_vl(a) -> int:
    from .convert_vl import convert, tiny_fixture

    quant = () if a.quant in ("", "none") else tuple(q.strip() for q in a.quant.split(","))
    for q in quant:
        if q not in ("w8a16", "w4a16"):
            raise SystemExit(f"unknown quantization {q!r} (want w8a16, w4a16 or none)")
    if a.tiny_fixture:
        rep = tiny_fixture(Path(a.out), quant, qnn=not a.no_qnn)
    elif not a.checkpoint:
        raise SystemExit("convert-vl needs --checkpoint HF_DIR (or --tiny-fixture)")
    else:
        images = None
        if a.golden_images:
            from PIL import Image

            images = [Image.open(p) for p in a.golden_images.split(",")]
        rep = convert(Path(a.checkpoint), Path(a.out), a.image_size, quant, a.kv_capacity, a.prefill_chunk,
                      qnn=not a.no_qnn, htp_arch=a.htp_arch, soc_model=a.soc_model, context=not a.no_context,
                      **({"system_prompt": a.system_prompt} if a.system_prompt else {}),
                      reference=a.reference, golden_images=images)
    print(json.dumps(rep, indent=1))
    return 0


def _assemble(a) -> int:
    from .assemble import AssemblyError, assemble, tiny_fixture

    if a.quant is None:  # the fixture: w8a16 only (see forge/README.md)
        a.quant = "w8a16" if a.tiny_fixture else "w8a16,w4a16"
    quant = () if a.quant in ("", "none") else tuple(q.strip() for q in a.quant.split(","))
    for q in quant:
        if q not in ("w8a16", "w4a16"):
            raise SystemExit(f"unknown quantization {q!r} (want w8a16, w4a16 or none)")
    try:
        if a.tiny_fixture:
            rep = tiny_fixture(Path(a.out), quant, qnn=not a.no_qnn, context=a.context)
        elif not (a.lfm2 and a.vision):
            raise SystemExit("assemble needs --lfm2 DIR and --vision FILE (or --tiny-fixture)")
        else:
            images = None
            if a.golden_images:
                from PIL import Image

                images = [Image.open(p) for p in a.golden_images.split(",")]
            rep = assemble(Path(a.lfm2), Path(a.vision), Path(a.out), Path(a.connector) if a.connector else None,
                           a.vision_arch, quant, a.image_size, a.grid, a.image_token, a.system_prompt,
                           a.kv_capacity, a.prefill_chunk, a.seed, qnn=not a.no_qnn, context=not a.no_context,
                           htp_arch=a.htp_arch, soc_model=a.soc_model, reference=a.reference,
                           golden_images=images, name=a.name)
    except AssemblyError as e:
        raise SystemExit(f"assemble: {e}") from None
    print(json.dumps(rep, indent=1))
    return 0


def _upgrade_prefill(a) -> int:
    from .conv_index import upgrade_bundle

    calib = held = None
    if a.calibration_dir:
        from .scenes import read_scenes

        images = [s.load() for s in read_scenes(a.calibration_dir)[:20]]
        if len(images) < 8:
            raise SystemExit(f"{a.calibration_dir}: {len(images)} scenes; want at least 8 (calibration + held out)")
        k = max(4, len(images) // 5)
        calib, held = images[:-k], images[-k:]
    print(json.dumps(upgrade_bundle(Path(a.dir), calib, held), indent=1))
    return 0


def _upgrade_width(a) -> int:
    from .prefill_width import WidthError, upgrade_bundle

    try:
        print(json.dumps(upgrade_bundle(Path(a.dir)), indent=1))
    except WidthError as e:
        raise SystemExit(f"upgrade-width: {e}") from None
    return 0


def _upgrade_capacity(a) -> int:
    from .capacity import upgrade_bundle

    print(json.dumps(upgrade_bundle(Path(a.dir)), indent=1))
    return 0


def _cpu_int4(a) -> int:
    from .cpu_int4 import add_variant

    print(json.dumps(add_variant(Path(a.dir), a.block, a.head, a.compute), indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m forge", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("export", help="build a bundle from a named config (random weights or --state-dict)")
    e.add_argument("--config", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--quant", help="comma list of w8a16,w4a16, or none (default: both; none for the "
                   "full-size configs, which also skip golden outputs)")
    e.add_argument("--no-qnn", action="store_true", help="skip the HTP offload check and context binaries")
    e.add_argument("--no-golden", action="store_true")
    e.add_argument("--state-dict", help="safetensors file with AutoNeural weights (else random from the config seed)")
    e.add_argument("--tokenizer", help="tokenizer.json to use (else BPE trained by forge)")
    e.add_argument("--calibration-dir", help="rendered scenes (contract 2) to calibrate on, instead of "
                   "forge's procedurally drawn images")
    e.add_argument("--htp-arch", type=int, default=68)
    e.add_argument("--soc-model", type=int, default=39)
    e.add_argument("--threads", type=int, default=2)
    e.set_defaults(fn=_export)

    c = sub.add_parser("compile-qnn", help="HTP offload check + EP context binaries for a bundle's quantized variants")
    c.add_argument("dir")
    c.add_argument("--htp-arch", type=int, default=68)
    c.add_argument("--soc-model", type=int, default=39)
    c.set_defaults(fn=_compile_qnn)

    g = sub.add_parser("golden", help="(re)write golden.json + golden/*.png for every variant")
    g.add_argument("dir")
    g.add_argument("--cases", type=int, default=3)
    g.set_defaults(fn=_golden)

    k = sub.add_parser("check", help="verify a bundle's manifest schema and checksums (no torch)")
    k.add_argument("dir")
    k.set_defaults(fn=_check)

    r = sub.add_parser("parity", help="ORT CPU vs PyTorch over a 64-token greedy generation")
    r.add_argument("dir")
    r.add_argument("--config", required=True)
    r.set_defaults(fn=_parity)

    f = sub.add_parser("published-fixture", help="LFM2-VL in the published ONNX layout (embed_tokens, embed_images, "
                       "decoder) + transformers references; tiny random model unless --checkpoint")
    f.add_argument("--out", required=True)
    f.add_argument("--checkpoint", help="a transformers LFM2-VL checkpoint directory to export instead "
                   "(no references are written for it)")
    f.add_argument("--variants", default="q4,q8,fp16", help="comma list of q4, q8, fp16, or none (fp32 always)")
    f.add_argument("--no-reference", action="store_true", help="graphs only: skip the transformers references")
    f.set_defaults(fn=_published)

    rv = sub.add_parser("random-vl", help="random-weight LFM2-VL checkpoint with the real dimensions of "
                       "LFM2-VL-450M or LFM2(.5)-VL-1.6B (benchmarks only)")
    rv.add_argument("size", choices=["450m", "1.6b"])
    rv.add_argument("out")
    rv.set_defaults(fn=_random_vl)

    v = sub.add_parser("convert-vl", help="a Hugging Face LFM2-VL checkpoint -> a static-shape NPU bundle "
                       "(vision/embed/decoder graphs, fp32 + quantized, HTP check, transformers references)")
    v.add_argument("--checkpoint", help="directory written by Lfm2VlForConditionalGeneration.save_pretrained "
                   "+ the processor's files")
    v.add_argument("--out", required=True)
    v.add_argument("--image-size", type=int, default=256, help="S (multiple of patch x downsample = 32)")
    v.add_argument("--quant", default="w8a16", help="comma list of w8a16,w4a16, or none")
    v.add_argument("--kv-capacity", type=int, default=1024)
    v.add_argument("--prefill-chunk", type=int, default=32)
    v.add_argument("--system-prompt", help="the bundle's system prompt (default: a driver-monitoring one)")
    v.add_argument("--golden-images", help="comma list of images for golden.json (center-cropped to S x S)")
    v.add_argument("--reference", action="store_true", help="also write conversion_reference.json "
                   "(transformers' generations and probes) and fail unless the fp32 graphs reproduce them")
    v.add_argument("--tiny-fixture", action="store_true", help="convert the tiny random LFM2-VL of "
                   "models/lfm2-vl-tiny-onnx (rebuilt by forge.published), with references")
    v.add_argument("--no-qnn", action="store_true", help="skip the HTP offload check and context binaries")
    v.add_argument("--no-context", action="store_true", help="HTP offload check only, no EP context binaries")
    v.add_argument("--htp-arch", type=int, default=68)
    v.add_argument("--soc-model", type=int, default=39)
    v.set_defaults(fn=_convert_vl)

    s = sub.add_parser("assemble", help="AutoNeural from public parts (an LFM2 checkpoint + a timm / Gemma 3n "
                       "MobileNetV5 encoder state dict + a connector, trained or fresh) -> a static-shape NPU bundle")
    s.add_argument("--lfm2", help="directory written by Lfm2ForCausalLM.save_pretrained + its tokenizer")
    s.add_argument("--vision", help="MobileNetV5 encoder state dict (.safetensors; timm names, or Gemma 3n's "
                   "model.vision_tower.timm_model.* — a file or a directory of shards)")
    s.add_argument("--vision-arch", help="encoder layout (forge.config.VISION_ARCHS: mobilenetv5_300m_enc, "
                   "forge-tiny); default: the one whose names and shapes match")
    s.add_argument("--connector", help="connector state dict (.safetensors, fc1.* / fc2.*); default: fresh from "
                   "--seed (untrained: image answers are meaningless)")
    s.add_argument("--out", required=True)
    s.add_argument("--quant", help="comma list of w8a16,w4a16, or none (default: both; w8a16 for --tiny-fixture)")
    s.add_argument("--image-size", type=int, help="S (default: the layout's, 768 for mobilenetv5_300m_enc)")
    s.add_argument("--grid", type=int, help="MSFA output grid, tokens = grid^2 (default: the layout's, 16)")
    s.add_argument("--image-token", default="<image>", help="the tokenizer's special token the image replaces")
    s.add_argument("--system-prompt")
    s.add_argument("--kv-capacity", type=int, default=1024)
    s.add_argument("--prefill-chunk", type=int, default=32)
    s.add_argument("--seed", type=int, default=0, help="seed of a fresh connector")
    s.add_argument("--name", help="bundle name (manifest)")
    s.add_argument("--golden-images", help="comma list of images for golden.json")
    s.add_argument("--reference", action="store_true", help="also write assembly_reference.json (transformers' "
                   "LFM2 tokens, timm's encoder) and fail unless the fp32 graphs reproduce them")
    s.add_argument("--tiny-fixture", action="store_true", help="make tiny random parts (transformers LFM2, timm "
                   "encoder) and assemble them, with references (models/autoneural-assembled-tiny)")
    s.add_argument("--context", action="store_true", help="--tiny-fixture: also store the EP context binaries")
    s.add_argument("--no-qnn", action="store_true", help="skip the HTP offload check and context binaries")
    s.add_argument("--no-context", action="store_true", help="HTP offload check only, no EP context binaries")
    s.add_argument("--htp-arch", type=int, default=68)
    s.add_argument("--soc-model", type=int, default=39)
    s.set_defaults(fn=_assemble)

    q = sub.add_parser("cpu-int4", help="add the cpu-int4 variant to a bundle: decoder MatMuls as ONNX Runtime "
                       "MatMulNBits (int4 on the CPU), with its accuracy against fp32 and its golden cases")
    q.add_argument("dir")
    q.add_argument("--block", type=int, default=32, help="weights per scale (default 32)")
    q.add_argument("--head", choices=("float", "int4"), default="float", help="the LM head (tied token "
                   "table): kept float (default) or int4")
    q.add_argument("--compute", choices=("float", "int8"), default="float", help="MatMulNBits arithmetic: float "
                   "(default) or int8 activations (accuracy_level 4: integer dot products, faster, a little less exact)")
    q.set_defaults(fn=_cpu_int4)
    u = sub.add_parser("upgrade-prefill", help="give an older bundle's decoder_prefill the conv_index input (prompts of "
                       "any length prefill in full-width calls); recompiles QNN contexts and rewrites golden.json")
    u.add_argument("dir")
    u.add_argument("--calibration-dir", help="rendered scenes (autoneural-scenes render) to calibrate the QDQ "
                   "variants' decoder_prefill on, instead of forge's drawn images")
    u.set_defaults(fn=_upgrade_prefill)
    u = sub.add_parser("upgrade-capacity", help="name the KV capacity dimension of an older bundle's float and int4 "
                       "decoder graphs (the CPU then attends over the filled capacity bucket, not all of it); "
                       "rewrites those variants' golden cases")
    u.add_argument("dir")
    u.set_defaults(fn=_upgrade_capacity)
    u = sub.add_parser("upgrade-width", help="name the width of an older bundle's float and int4 decoder_prefill "
                       "(a short prompt part runs at a smaller width instead of padded to prefill_chunk); "
                       "needs upgrade-prefill and upgrade-capacity first; rewrites those variants' golden cases")
    u.add_argument("dir")
    u.set_defaults(fn=_upgrade_width)

    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
