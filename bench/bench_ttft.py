"""Time to first token with one image and a short prompt, run as a plain Python onnxruntime loop
over the bundle contract's graphs (vision -> embed -> decoder_prefill chunks -> decoder_step for
the remainder -> first token), then a few decode steps.

Memory: the 1.2-1.9 B decoders are 4.5-7.6 GB of fp32 weights, and the prefill and step graphs
would each load their own copy. To stay inside the shared machine's memory the phases run one
session at a time (vision, embed, prefill, step) and session creation is not timed; TTFT is the sum
of the phases' compute times, which is what a runtime holding all sessions would see."""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np

from bench.bench_decode import Loop
from bench.common import session, write_json

SYSTEM = "You are the driver monitoring camera of a car. Answer briefly about the driver and the cabin."
QUESTION = "Is the driver looking at the road?"


def prompt_lengths(tokenizer: Path | None) -> tuple[int, int, str]:
    """Token counts of the template before and after the image token (the forge template)."""
    before = f"<|startoftext|><|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    after = f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    if tokenizer and tokenizer.exists():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer))
        return (len(tok.encode(before, add_special_tokens=False).ids),
                len(tok.encode(after, add_special_tokens=False).ids), str(tokenizer))
    # no tokenizer: about 4 characters per token
    return len(before) // 4, len(after) // 4, "estimate (4 chars/token)"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--vision", required=True, help="vision.onnx at the TTFT image size")
    p.add_argument("--decoder", required=True, help="decoder dir with embed, decoder_prefill, decoder_step")
    p.add_argument("--tokenizer", default="")
    p.add_argument("--decode-tokens", type=int, default=8)
    p.add_argument("--vision-runs", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    d = Path(a.decoder)
    meta = json.loads((d / "export.json").read_text())
    n_before, n_after, tok_src = prompt_lengths(Path(a.tokenizer) if a.tokenizer else None)
    row: dict = {"name": a.name, "config": meta["config"], "kv_capacity": meta["kv_capacity"],
                 "prefill_chunk": meta["prefill_chunk"], "prompt_tokens_text": n_before + n_after,
                 "tokenizer": tok_src}

    # 1. vision
    s = session(Path(a.vision))
    inp = s.get_inputs()[0]
    size = inp.shape[2]
    pixels = np.random.default_rng(0).standard_normal(inp.shape, np.float32)
    s.run(None, {inp.name: pixels})  # warm-up
    ts = []
    for _ in range(a.vision_runs):
        t = time.perf_counter()
        image = s.run(None, {inp.name: pixels})[0]
        ts.append(time.perf_counter() - t)
    row.update(image_size=size, image_tokens=int(image.shape[1]), vision_ms=round(1e3 * float(np.median(ts)), 1))
    del s
    gc.collect()

    # 2. embed (the prompt's text tokens, in chunks of the embed graph's width)
    s = session(d / "embed.onnx")
    width = s.get_inputs()[0].shape[1]
    ids = np.arange(n_before + n_after, dtype=np.int32) % 1000 + 10
    t = time.perf_counter()
    parts = []
    for i in range(0, len(ids), width):
        chunk = np.zeros((1, width), np.int32)
        piece = ids[i : i + width]
        chunk[0, : len(piece)] = piece
        parts.append(s.run(None, {"input_ids": chunk})[0][0, : len(piece)])
    text = np.concatenate(parts)
    row["embed_ms"] = round(1e3 * (time.perf_counter() - t), 1)
    del s
    gc.collect()
    seq = np.concatenate([text[:n_before], image[0], text[n_before:]])[None].astype(np.float32)
    total = seq.shape[1]
    row["prompt_tokens"] = total

    # 3. prefill: full chunks through decoder_prefill (one warm-up chunk first, not counted)
    s = session(d / "decoder_prefill.onnx")
    loop = Loop(s)
    chunk = loop.t
    full = total // chunk
    loop.step(seq[:, :chunk], 0)
    loop.fill(0, seed=0)
    loop.conv = {k: np.zeros_like(v) for k, v in loop.conv.items()}
    loop.in_run_s = 0.0
    t = time.perf_counter()
    for i in range(full):
        logits = loop.step(seq[:, i * chunk : (i + 1) * chunk], i * chunk)
    row["prefill_chunks"] = full
    row["prefill_ms"] = round(1e3 * (time.perf_counter() - t), 1)
    outside = row["prefill_ms"] - 1e3 * loop.in_run_s
    conv, kv = loop.conv, loop.kv
    # the remainder: one more, partial, prefill call when the graph takes conv_index (contract 1;
    # padded with copies of the last row, only its valid K/V rows kept), else token by token below
    rest = total - full * chunk
    # (an all-attention graph has no conv state for the padding to enter: it needs no conv_index)
    partial = rest >= 2 and ("conv_index" in loop.inputs or not loop.conv)
    partial_ms = 0.0
    if partial:
        pad = np.repeat(seq[:, -1:], chunk, axis=1)
        pad[:, :rest] = seq[:, full * chunk :]
        in_run = loop.in_run_s
        t = time.perf_counter()
        logits = loop.step(pad, full * chunk, valid=rest)[:, :rest]
        partial_ms = 1e3 * (time.perf_counter() - t)
        outside += partial_ms - 1e3 * (loop.in_run_s - in_run)
        conv, kv = loop.conv, loop.kv
    del s, loop
    gc.collect()

    # 4. the remainder one token at a time through decoder_step, then decode
    s = session(d / "decoder_step.onnx")
    loop = Loop(s)
    pos = total if partial else full * chunk
    loop.conv, loop.kv = dict(conv), kv
    loop.step(seq[:, -1:] * 0, loop.cap - 1)  # warm-up in the last slot, which stays masked
    loop.conv = dict(conv)  # the warm-up's conv states are discarded
    loop.in_run_s = 0.0
    t = time.perf_counter()
    for i in range(pos, total):
        logits = loop.step(seq[:, i : i + 1], i)
    first = int(np.argmax(logits[0, -1]))
    steps_ms = 1e3 * (time.perf_counter() - t)
    outside += steps_ms - 1e3 * loop.in_run_s
    row["remainder_steps"] = total - pos
    row["remainder_partial_rows"] = rest if partial else 0
    row["remainder_ms"] = round(partial_ms + steps_ms, 1)
    # the Python loop's own work in the decoder phases (masks, feeds, in-place K/V writes)
    row["decoder_outside_run_ms"] = round(outside, 1)
    row["ttft_ms"] = round(row["vision_ms"] + row["embed_ms"] + row["prefill_ms"] + row["remainder_ms"], 1)
    # decode feeds random embeddings: the token's identity does not change the cost
    r = np.random.default_rng(3)
    ts = []
    p_ = total
    for _ in range(a.decode_tokens):
        e = r.standard_normal((1, 1, loop.hidden), np.float32)
        t = time.perf_counter()
        logits = loop.step(e, p_)
        ts.append(time.perf_counter() - t)
        p_ += 1
    row["first_token"] = first
    row["decode_tok_s"] = round(1.0 / float(np.median(ts)), 3)
    row["decode_pos"] = [total, p_]
    print(json.dumps(row), flush=True)
    write_json(Path(a.out), row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
