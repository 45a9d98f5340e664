"""Parity of a bundle's fp32 graphs (ONNX Runtime CPU, through forge.runtime's chunked prefill and KV
buffers) against the PyTorch model's plain full-sequence forward, over a 64-token greedy generation
from an image: the tokens must be identical and max |logits difference| small (<= 1e-3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import QUESTIONS, pixel_values
from .model import AutoNeural
from .runtime import Runner

TOKENS = 64


def torch_greedy(model: AutoNeural, pv: np.ndarray, ids: list[int], image_token_id: int, n: int):
    """Greedy decoding by re-running the whole sequence each step (no caches at all)."""
    x = torch.tensor(pv)
    seq = torch.tensor([ids])
    tokens, logits = [], []
    with torch.no_grad():
        img = model.image_embeds(x)
        for _ in range(n):
            lg = model.language(model.splice(img, seq, image_token_id))[0, -1]
            t = int(lg.argmax())
            tokens.append(t)
            logits.append(lg.numpy())
            seq = torch.cat([seq, torch.tensor([[t]])], 1)
    return tokens, np.stack(logits)


def parity(model: AutoNeural, bundle: Path, image: Image.Image, question: str, n: int = TOKENS) -> dict:
    r = Runner(bundle, "fp32")
    man = r.manifest
    pv = pixel_values(image, man["image"]["size"], man["image"]["mean"], man["image"]["std"])
    ort_tokens, ort_logits = r.generate(r.prefix_state(pv), question, max_new=n)
    pr = r.prompt(question)
    pt_tokens, pt_logits = torch_greedy(model, pv, pr.prefix_ids + pr.question_ids, man["text"]["image_token_id"], n)
    first_diff = next((i for i, (a, b) in enumerate(zip(ort_tokens, pt_tokens)) if a != b), None)
    k = len(ort_tokens) if first_diff is None else first_diff + 1
    return {
        "question": question,
        "tokens_identical": ort_tokens == pt_tokens,
        "first_difference": first_diff,
        "max_abs_dlogits": float(np.abs(ort_logits[:k] - pt_logits[:k]).max()),
        "logits_absmax": float(np.abs(pt_logits).max()),
    }


def parity_report(bundle: Path, config: str) -> list[dict]:
    from .config import get_config
    from .model import build_model

    model = build_model(get_config(config))
    out = []
    for i, png in enumerate(sorted((Path(bundle) / "golden").glob("*.png"))):
        out.append({"image": png.name, **parity(model, bundle, Image.open(png), QUESTIONS[i % len(QUESTIONS)])})
    return out
