"""The llama.cpp leg of the side-by-side LLM runtime benchmark: time-to-first-token and greedy
decode speed of a GGUF model (made by bench/llama_gguf.py) through llama-cpp-python. Run it with
the python that has llama-cpp-python:

    python -m bench.runtime_llama --model DIR/model-q4_0.gguf --threads 2 \\
        --lengths 64,256,1024,4096 --decode 32 --iters-small 3 --ctx 4224

The last line of stdout is one JSON object:
    {"runner": "llama.cpp", "precision": "q4_0", "load_s": .., "ttft_ms": {"64": .., ..},
     "decode_tok_s": {"64": .., ..}, "weights_bytes": <GGUF file size>, "llama_cpp_python": "0.3.36"}

Protocol (every runner of the benchmark follows it exactly; the weights are random, so no text is
involved and token ids are fed directly):
  * load_s: wall time of constructing `Llama(model_path, n_ctx=ctx, n_threads=threads,
    n_threads_batch=threads, n_batch=512, logits_all=False, verbose=False)` (mmap'd weights,
    context and KV/conv-state buffers).
  * prompt ids for length n: `[low + (i * 7919) % (vocab - low) for i in range(n)]`, with
    `low = vocab // 4` and vocab = the model's n_vocab (ids away from the special tokens, all
    in range, 7919 prime so the sequence does not repeat within the vocabulary).
  * warm-up: once, n = 64 and 4 decoded tokens (not reported).
  * for each L in lengths, `iters` = iters-small when L <= 256 else 1 iteration; each iteration
    starts from an EMPTY context (the KV cache and LFM2's conv states cleared, outside the timing);
    - TTFT: from just before the prompt is fed until the first generated token's id is known:
      the prompt goes through llama_decode in chunks of n_batch (512) tokens, only the prompt's
      last position asks for logits (no logits are computed for the other positions), and the
      token is the argmax of that single logits row (read in place, not copied);
    - decode: `decode` more greedy steps, each feeding the previous token (one llama_decode of
      one token, argmax of its logits); decode_tok_s = decode / (wall time of those steps).
  * reported: medians over the iterations, ttft in milliseconds.
The Python work inside the timed regions is filling the llama_batch arrays and one numpy argmax
per token, which is what any Python caller of llama.cpp does; nothing copies whole score arrays.

Other knobs are llama-cpp-python's defaults: n_ubatch 512, f16 KV cache, flash attention off
(`--flash-attn` turns it on), mmap on, CPU only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp import Llama

N_BATCH = 512
WARMUP_LEN, WARMUP_DECODE = 64, 4


def prompt_ids(n: int, vocab: int) -> list[int]:
    low = vocab // 4
    return [low + (i * 7919) % (vocab - low) for i in range(n)]


class Runner:
    """Greedy prefill + decode on one sequence through the C API of a loaded `Llama`."""

    def __init__(self, llm: Llama):
        self.llm = llm
        self.ctx = llm.ctx
        self.n_vocab = llm.n_vocab()
        self.n_batch = llm.n_batch
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)

    def close(self):
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None

    def clear(self):
        """Empty context: no cached positions, conv states zeroed."""
        self.llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def _decode(self, tokens, pos0: int, want_logits: bool):
        b = self.batch
        n = len(tokens)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 0
        b.logits[n - 1] = 1 if want_logits else 0
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (pos {pos0}, {n} tokens)")

    def _argmax_last(self) -> int:
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def prefill(self, ids: list[int]) -> int:
        """Feed the prompt in n_batch chunks; logits only for its last position; greedy token."""
        for s in range(0, len(ids), self.n_batch):
            chunk = ids[s:s + self.n_batch]
            self._decode(chunk, s, s + len(chunk) == len(ids))
        return self._argmax_last()

    def step(self, token: int, pos: int) -> int:
        self._decode((token,), pos, True)
        return self._argmax_last()

    def run(self, ids: list[int], decode: int) -> tuple[float, float, list[int]]:
        """(ttft seconds, decode seconds, generated ids: 1 + decode) from an empty context."""
        self.clear()
        t0 = time.perf_counter()
        tok = self.prefill(ids)
        t1 = time.perf_counter()
        out = [tok]
        pos = len(ids)
        for _ in range(decode):
            tok = self.step(tok, pos)
            pos += 1
            out.append(tok)
        t2 = time.perf_counter()
        self.llm.n_tokens = 0  # the Llama object's own bookkeeping is not used here
        return t1 - t0, t2 - t1, out


def precision(llm: Llama, path: str) -> str:
    ftype = llm.metadata.get("general.file_type")
    if ftype is not None:
        names = {v: k for k, v in vars(llama_cpp).items()
                 if k.startswith("LLAMA_FTYPE_") and isinstance(v, int) and k != "LLAMA_FTYPE_GUESSED"}
        name = names.get(int(ftype))
        if name:
            return name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    m = re.search(r"(q\d+_[a-z0-9_]+|bf16|f16|f32)", os.path.basename(path).lower())
    return m.group(1) if m else "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="64,256,1024,4096")
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--iters-small", type=int, default=3, help="iterations for lengths <= 256")
    ap.add_argument("--ctx", type=int, default=4224)
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp flash attention (default off)")
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    need = max(lengths + [WARMUP_LEN]) + max(args.decode, WARMUP_DECODE) + 1
    if need > args.ctx:
        ap.error(f"--ctx {args.ctx} is too small for length {max(lengths)} + {args.decode} decoded tokens")
    if not os.path.isfile(args.model):
        ap.error(f"--model {args.model} does not exist")

    t = time.perf_counter()
    llm = Llama(model_path=args.model, n_ctx=args.ctx, n_threads=args.threads,
                n_threads_batch=args.threads, n_batch=N_BATCH, logits_all=False, verbose=False,
                flash_attn=args.flash_attn)
    load_s = time.perf_counter() - t
    runner = Runner(llm)
    vocab = runner.n_vocab

    runner.run(prompt_ids(WARMUP_LEN, vocab), WARMUP_DECODE)
    ttft, tok_s = {}, {}
    for L in lengths:
        ids = prompt_ids(L, vocab)
        iters = args.iters_small if L <= 256 else 1
        tt, ds = [], []
        for _ in range(iters):
            t_first, t_dec, _ = runner.run(ids, args.decode)
            tt.append(t_first * 1e3)
            ds.append(args.decode / t_dec if args.decode else float("nan"))
        ttft[str(L)] = round(statistics.median(tt), 2)
        tok_s[str(L)] = round(statistics.median(ds), 3)
        print(f"runtime_llama: L={L} iters={iters} ttft_ms={ttft[str(L)]} decode_tok_s={tok_s[str(L)]}",
              file=sys.stderr, flush=True)
    result = {
        "runner": "llama.cpp",
        "precision": precision(llm, args.model),
        "load_s": round(load_s, 3),
        "ttft_ms": ttft,
        "decode_tok_s": tok_s,
        "weights_bytes": os.path.getsize(args.model),
        "llama_cpp_python": llama_cpp.__version__,
    }
    runner.close()
    llm.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
