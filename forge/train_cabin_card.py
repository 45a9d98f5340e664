"""MODEL.md for models/autoneural-cabin, written from the bundle's eval.json and manifest (so the
card's numbers are always the measured ones):

    .venv-forge/bin/python -m forge.train_cabin_card models/autoneural-cabin
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .bundle import load_manifest, save_manifest

ROOT = Path(__file__).resolve().parent.parent
from .probes import DEFAULT_PROBES


def _row(name: str, per: dict) -> str:
    cells = " | ".join(f"{per[p.id]:.1f}" for p in DEFAULT_PROBES)
    return f"| {name} | {cells} | {sum(per.values()) / len(per):.1f} |"


def _status(pt: dict, bu: dict) -> str:
    """Which of issue 4's targets the measured numbers meet (>= 97 % held-out, >= 90 % shifted per
    probe, quantized within 1 point of fp32)."""
    fp, q = bu.get("fp32", {}), bu.get("w8a16", {})
    checks = []
    for name, target in (("held_out", 97.0), ("shifted", 90.0)):
        per = fp.get(name, pt[name]["probes"])["per_probe_pct"]
        worst = min(per, key=per.get)
        met = per[worst] >= target
        checks.append((met, f"{name.replace('_', '-')} >= {target:.0f} % per probe: "
                            f"{'met' if met else '**NOT met**'} (worst: {worst} {per[worst]:.1f} %)"))
    gaps = [abs(q[n]["per_probe_pct"][k] - fp[n]["per_probe_pct"][k])
            for n in ("held_out", "shifted") if n in q and n in fp for k in fp[n]["per_probe_pct"]]
    if gaps:
        met = max(gaps) <= 1.0
        checks.append((met, f"w8a16 within 1 point of fp32: {'met' if met else '**NOT met**'} "
                            f"(largest gap {max(gaps):.1f} points)"))
    lead = "all targets met" if all(m for m, _ in checks) else "targets partly met"
    return f"{lead} (exported fp32 graphs on ONNX Runtime) — " + "; ".join(t for _, t in checks) + "."


def _read_out_curve(ev: dict) -> str:
    """The training-only read-outs' accuracy over training: how the encoder learned each attribute."""
    rows = ev["training"].get("read_out_curve", [])
    if not rows:
        return ""
    lines = ["| step | set | " + " | ".join(p.id for p in DEFAULT_PROBES) + " |",
             "|---" * (len(DEFAULT_PROBES) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['set'].replace('_', '-')} | "
                     + " | ".join(f"{r['per_probe_pct'][p.id]:.1f}" for p in DEFAULT_PROBES) + " |")
    return "\n".join(lines)


def card(bundle: Path) -> str:
    ev = json.loads((bundle / "eval.json").read_text())
    man = load_manifest(bundle)
    size_mb = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 1e6
    d, tr, pt, bu = ev["data"], ev["training"], ev["pytorch"], ev.get("bundle", {})
    head = "| set | " + " | ".join(p.id for p in DEFAULT_PROBES) + " | mean |"
    sep = "|---" * (len(DEFAULT_PROBES) + 2) + "|"
    rows = [_row(f"PyTorch, held-out ({pt['held_out']['probes']['n']})", pt["held_out"]["probes"]["per_probe_pct"]),
            _row(f"PyTorch, shifted ({pt['shifted']['probes']['n']})", pt["shifted"]["probes"]["per_probe_pct"])]
    for variant in ("fp32", "w8a16"):
        for name in ("held_out", "shifted"):
            if variant in bu and name in bu[variant]:
                r = bu[variant][name]
                rows.append(_row(f"ONNX {variant}, {name.replace('_', '-')} ({r['n']})", r["per_probe_pct"]))
    desc = []
    for name in ("held_out", "shifted"):
        s = pt[name]["description"]
        per = ", ".join(f"{k} {v:.0f}" for k, v in s["per_attribute_pct"].items())
        desc.append(f"- {name.replace('_', '-')} ({s['n']} images): attributes {s['attribute_pct']:.1f} % right "
                    f"({per}); sentence exactly right {s['exact_pct']:.1f} %; parsable {s['parsed_pct']:.1f} %.")
    bd = bu.get("fp32", {}).get("held_out_description")
    if bd:
        desc.append(f"- exported fp32 graphs on ONNX Runtime, held-out ({bd['n']} images): attributes "
                    f"{bd['attribute_pct']:.1f} % right; sentence exactly right {bd['exact_pct']:.1f} % "
                    "(the Rust-side check reproduces this count within one sentence).")
    ex = pt["held_out"]["description"].get("examples", [])[:2]
    examples = "\n".join(f"  - truth: \"{e['truth']}\"\n    model: \"{e['model']}\"" for e in ex)
    sqnr = man["variants"].get("w8a16", {}).get("sqnr_db", {})
    lat = {v: bu[v]["held_out"].get("seconds_per_frame_8_probes") for v in bu}
    status = _status(pt, bu)
    curve = _read_out_curve(ev)
    rust_test = ROOT / "inference/tests/cabin/mod.rs"
    rust_line = ("The Rust-side check (`inference/tests/cabin/mod.rs`, part of the `pipeline` test binary in the default test command) renders the first"
                 if rust_test.is_file() else
                 "The Rust-side check (to be added as `inference/tests/cabin/mod.rs` once the inference crate is on"
                 " main; not in the tree yet) renders the first")
    return f"""# autoneural-cabin — model card

The project's default model: a small model of the AutoNeural architecture trained on the project's
own synthetic cabin scenes to answer the daemon's 8 probe questions and to write a one-sentence
description of the cabin. **Synthetic data only** — see Limitations.

Status: {status}

## Data

Rendered by the project's scene renderer (scenes/, `autoneural-scenes render`, the single source of
truth for labels and description sentences; ARCHITECTURE.md contract 2), {d['train']['size']}x{d['train']['size']} px:
- training: {d['train']['count']} scenes, seed {d['train']['seed']};
- held-out: seed {d['held_out']['seed']} (same distribution, other people, poses, cars);
- shifted: seed {d['shifted']['seed']} with `--shifted`: skin, hair, clothing, seat and cabin colours from
  palettes the training set never uses, harsher light gradients and exposure, 2x sensor noise, more blur.
Labels are drawn roughly balanced and independent (gaze uniform over 5 targets, eyes closed 40 %,
phone none/in hand/at ear 50/25/25, face visible/occluded/absent 78/11/11, night 40 %, ...).

## Architecture and size

{ev['parameters'] / 1e6:.2f} M parameters (vision encoder {ev['vision_parameters'] / 1e6:.2f} M), forge config in
`forge/train_cabin.py` (`cabin_config`):
- MobileNetV5-style encoder (edge-residual stem stage, universal inverted residuals, mobile multi-query
  attention in the last two stages) + MSFA fusing the last two stages into a {man['image']['tokens']}-token grid,
  input {man['image']['size']} px;
- normalisation-free 2-layer MLP connector to the decoder width {man['decoder']['hidden']};
- LFM2-style hybrid decoder, layers {man['decoder']['layer_types']} (gated short convolutions and GQA
  attention, {man['decoder']['num_heads']}/{man['decoder']['num_kv_heads']} heads x {man['decoder']['head_dim']}), KV capacity {man['decoder']['kv_capacity']}, prefill chunk {man['decoder']['prefill_chunk']};
- byte-level BPE tokenizer, {man['text']['vocab_size']} ids, trained on the prompts and the training descriptions.

Bundle (contract 1): fp32 and w8a16 (QDQ, uint8/int8 weights, uint16 activations) graphs, QNN EP context
binaries for htp_arch 68 / soc_model 39 (every quantized graph checked to run fully on the HTP
simulator with CPU fallback disabled), tokenizer, probes.toml, golden.json on held-out renders,
eval.json (all numbers below) and train.log; {size_mb:.1f} MB in total.

## Training

`.venv-forge/bin/python -m forge.train_cabin` (one command, seed {tr['seed']}, CPU, {tr['threads']} threads):
{tr['steps']} AdamW steps of {tr['batch_images']} images (warm-up + cosine, lr {tr['lr']}); per image
{tr['probes_per_image']} probe question(s) plus, for 30 % of images, the description (one of three
"describe" questions) and for 10 % "Is the driver paying attention to the road?" (yes/no); loss on
the answer tokens and end of turn. Training-only linear read-outs of the 8 attributes from the image
tokens (not exported) give the encoder a signal on every image. Every training image is augmented
(for colour frames a random channel order and per-channel gain; for all, exposure, a linear light
gradient, gamma, blur with sigma 0.3-1.3 px on 40 % of images, sensor noise up to sigma 0.08) so that the
shifted set's unseen palettes and harsher camera are not out of reach. Training took {tr['seconds'] / 60:.1f} min
on this 2-core machine (final loss {tr['final_loss']}); the whole command (render, train, evaluate,
export, ONNX evaluation) {ev.get('total_s', 0) / 60:.1f} min.

Read-out accuracy (%) during training, on 300 held-out and 300 shifted images — the encoder learns
belt, face and passenger first, then phone, hands and yawn, and eyes and gaze last:

{curve}

## Metrics

Per-probe accuracy (%), probes scored as the runtime scores them (summed answer-token
log-probabilities, argmax over the answer set):

{head}
{sep}
{chr(10).join(rows)}

Description (greedy, "Describe the driver."), parsed back into attributes:
{chr(10).join(desc)}
{examples}

Quantization: w8a16 SQNR vs fp32 on held-out feeds (dB): {json.dumps(sqnr)}.
Probe latency, all 8 probes of one frame incl. vision and prefix, forge's reference runtime
(Python + ONNX Runtime CPU, 2 threads, shared machine): {json.dumps(lat)} s.

{rust_line}
{ev['rust_check']['count']} held-out scenes (seed {ev['rust_check']['seed']}) with the Rust renderer, runs the {ev['rust_check']['variant']} bundle through the
inference crate and must match the per-probe accuracy of eval.json's `rust_check` within 1 point; it also
generates the description of the first {ev['rust_check'].get('description', {}).get('count', 0)} and must get the same number of exactly right sentences within one.

## Limitations

- Synthetic only: flat-shaded cartoon people in a cartoon cabin. Nothing here says how the model does on
  real camera frames; it exists so that the daemon does its job end to end out of the box, and as the
  training/export/evaluation path a real model follows.
- The label space is the renderer's: 5 gaze targets, 3 phone states, etc. Hidden faces answer
  eyes=open, gaze=down by contract; occluders are a hand or a flat object.
- The targets of issue 4 are met only as far as Status says. Eyes and gaze are the hardest
  attributes (a few pixels at 128 px; the shifted set adds blur and noise on top).

## Using real AutoNeural / LFM2 weights

forge builds the same graphs at any size from a config. With real weights: load an LFM2 checkpoint
directory with `forge.hf.load_lfm2_checkpoint` (transformers layout; e.g. LiquidAI LFM2-1.2B) into the
decoder, a timm / Gemma 3n `mobilenetv5_300m_enc` state dict into the encoder (same parameter
names), build the `autoneural-1.5b` config, save the AutoNeural state dict as safetensors and export:
`.venv-forge/bin/python -m forge export --config autoneural-1.5b --state-dict W.safetensors
--tokenizer tokenizer.json --calibration-dir SCENES --out DIR` (see forge/README.md); the connector
needs training (or AutoNeural's released weights) for the two to talk.
"""


def main(argv=None) -> None:
    bundle = Path((argv or sys.argv[1:] or ["models/autoneural-cabin"])[0])
    (bundle / "MODEL.md").write_text(card(bundle))
    save_manifest(bundle, load_manifest(bundle), checksums=True)
    print(f"wrote {bundle / 'MODEL.md'}")


if __name__ == "__main__":
    main()
