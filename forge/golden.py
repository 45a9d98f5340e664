"""Golden outputs (golden.json + golden/*.png): per variant, for a few fixed images and questions, the
first 64 greedy tokens (generation not stopped at stop tokens) and every probe's answer
probabilities — computed by forge.runtime on ONNX Runtime's CPU EP, the Rust runtime's parity fixture."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .images import QUESTIONS, draw, pixel_values
from .probes import Probe

GREEDY_TOKENS = 64
GOLDEN_SEEDS = (7, 21, 42, 63)


def golden_images(out: Path, size: int, n: int, images: list[Image.Image] | None = None) -> list[str]:
    """Writes golden/{i}.png at the model's image size: `images` (e.g. rendered scenes, resized) or
    procedurally drawn ones."""
    (out / "golden").mkdir(exist_ok=True)
    names = []
    for i in range(n if images is None else min(n, len(images))):
        if images is None:
            img, _ = draw(GOLDEN_SEEDS[i], size)
        else:
            img = images[i].convert("RGB").resize((size, size), Image.BILINEAR)
        name = f"golden/{i}.png"
        img.save(out / name, optimize=True)
        names.append(name)
    return names


def run_cases(bundle: Path, variant: str, images: list[str], probes: tuple[Probe, ...]) -> list[dict]:
    from .runtime import Runner

    probe_r = Runner(bundle, variant, threads=1)
    img_cfg = probe_r.image
    cases = []
    for i, name in enumerate(images):
        pv = pixel_values(Image.open(bundle / name), img_cfg["size"], img_cfg["mean"], img_cfg["std"])
        prefix = probe_r.prefix_state(pv)
        question = QUESTIONS[i % len(QUESTIONS)]
        tokens, _ = probe_r.generate(prefix, question, max_new=GREEDY_TOKENS)
        cases.append(
            {
                "image": name,
                "question": question,
                "prompt_ids": probe_r.prompt(question).prefix_ids + probe_r.prompt(question).question_ids,
                "greedy_tokens": tokens,
                "probes": {p.id: probe_r.probe(prefix, p.question, list(p.answers)) for p in probes},
            }
        )
    return cases


def write_golden(out: Path, man: dict, n: int, probes: tuple[Probe, ...], images: list[Image.Image] | None = None) -> dict:
    images = golden_images(out, man["image"]["size"], n, images)
    golden = {v: {"cases": run_cases(out, v, images, probes)} for v in man["variants"]}
    (out / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    return golden
