"""A reference runtime over a bundle's ONNX graphs (numpy + onnxruntime, no torch): what the Rust
runtime does, in the same order, so its outputs are the golden ones.

Sequence handling (forge/README.md, "decoder contract"):
- every `feed` of n embedding rows goes through decoder_prefill in full chunks of prefill_chunk rows;
  a remainder of r >= 2 rows is one more decoder_prefill call, right-padded with copies of its last
  row (zero rows are out of distribution and would widen a QDQ graph's calibrated ranges) and
  `conv_index` = [r, r+k) (forge/conv_index.py), of which only the r valid K/V rows are kept and
  the position advances by r; a remainder of 1 row, and every remainder of a bundle whose manifest
  lacks `decoder.prefill_conv_index`, goes through decoder_step one row at a time;
- the caller's KV buffers have C slots; each graph returns the T new K/V rows, written into
  slots [pos, pos+T); conv states are replaced by the graph's present_conv outputs;
- C is kv_capacity for static graphs; for growable ones (forge/capacity.py: float and int4 decoder
  graphs with a named capacity dimension) it is the smallest capacity bucket that holds the
  positions a call needs: the buffers move into the next bucket (filled rows copied) as the context
  grows, and back into a smaller one when it shrinks (a new frame, a probe after a long question);
- a width-free prefill graph (forge/prefill_width.py: float and int4 graphs) runs each part in the
  smallest of `prefill_width.widths(prefill_chunk)` that holds it (T below is that width);
- attention_mask [1,1,T,C+T]: columns < C are buffer slots (0 if slot < pos, else mask_value), the
  last T columns are the chunk itself (causal: 0 where column <= row).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import capacity, manifest, prefill_width
from .config import TextConfig


class ContextFull(Exception):
    pass


@dataclass
class DecoderSpec:
    hidden: int
    layer_types: list[str]
    num_kv_heads: int
    head_dim: int
    conv_kernel: int
    kv_capacity: int
    prefill_chunk: int
    mask_value: float
    prefill_conv_index: bool = False

    @property
    def conv_layers(self):
        return [i for i, t in enumerate(self.layer_types) if t == "conv"]

    @property
    def attention_layers(self):
        return [i for i, t in enumerate(self.layer_types) if t == "full_attention"]


@dataclass
class State:
    """The decoder state the runtime owns: conv states, KV buffers, the next position."""

    conv: dict[int, np.ndarray]
    kv: dict[int, tuple[np.ndarray, np.ndarray]]
    pos: int = 0

    def clone(self) -> "State":
        return copy.deepcopy(self)


def cpu_session(path: Path, threads: int = 2) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def causal_mask(spec: DecoderSpec, pos: int, t: int, c: int) -> np.ndarray:
    neg = np.float32(spec.mask_value)
    m = np.full((1, 1, t, c + t), neg, np.float32)
    m[..., :pos] = 0
    m[..., c:] = np.triu(np.full((t, t), neg, np.float32), 1)
    return m


@dataclass
class Recorder:
    """Collects the exact feeds each graph received (calibration / held-out data for quantization)."""

    feeds: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)

    def add(self, graph: str, feed: dict[str, np.ndarray]) -> None:
        self.feeds.setdefault(graph, []).append({k: v.copy() for k, v in feed.items()})


class Runner:
    """Runs a bundle variant. `sessions` maps graph name -> anything with onnxruntime's
    `run(None, feed)` (CPU sessions by default; QNN sessions for the HTP checks).
    `kv_buckets=False` binds the whole kv_capacity and the full prefill width even to growable and
    width-free graphs (calibration feeds for a static QDQ graph; the comparison in the capacity tests)."""

    def __init__(
        self,
        bundle: Path,
        variant: str = "fp32",
        sessions: dict | None = None,
        recorder: Recorder | None = None,
        threads: int = 2,
        kv_buckets: bool = True,
    ):
        self.bundle = Path(bundle)
        self.manifest = manifest.read(self.bundle)
        man = self.manifest
        if variant not in man["variants"]:
            raise manifest.ManifestError(self.bundle / "manifest.toml", [f"no [variants.{variant}]"])
        self.variant = man["variants"][variant]
        d = man["decoder"]
        self.spec = DecoderSpec(
            d["hidden"], d["layer_types"], d["num_kv_heads"], d["head_dim"], d["conv_kernel"], d["kv_capacity"],
            d["prefill_chunk"], d["mask_value"], d.get("prefill_conv_index", False),
        )
        t = man["text"]
        self.text = TextConfig(system_prompt=t["system_prompt"], template=t["template"], image_token=t["image_token"])
        try:  # optional: the torch-free bundle check replays token ids without it
            from tokenizers import Tokenizer

            self.tok = Tokenizer.from_file(str(self.bundle / t["tokenizer"]))
        except ImportError:
            self.tok = None
        self.eos_id = t["eos_id"]
        self.pad_id, self.image_id = t["pad_id"], t["image_token_id"]
        self.image = man["image"]
        self.sessions = sessions or {
            g: cpu_session(self.bundle / self.variant[g], threads) for g in ("vision", "embed", "decoder_prefill", "decoder_step")
        }
        self.recorder = recorder
        growable = {
            g: capacity.is_growable({i.name: i.shape for i in self.sessions[g].get_inputs()})
            for g in ("decoder_prefill", "decoder_step")
        }
        if len(set(growable.values())) != 1:
            raise ValueError(f"{self.bundle}: variant {variant}: one decoder graph has a named KV capacity, the other not")
        self.kv_buckets = kv_buckets and growable["decoder_step"]
        # a width-free prefill graph (forge/prefill_width.py) runs a part in the smallest width that holds it
        self.width_free = kv_buckets and prefill_width.is_width_free(
            {i.name: i.shape for i in self.sessions["decoder_prefill"].get_inputs()}
        )

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.recorder is not None:
            self.recorder.add(graph, feed)
        return self.sessions[graph].run(None, feed)

    # --- graphs ---------------------------------------------------------------------------------
    def image_embeds(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run("vision", {"pixel_values": pixel_values.astype(np.float32)})[0][0]

    def embed(self, ids: list[int]) -> np.ndarray:
        p = self.spec.prefill_chunk
        rows = []
        for i in range(0, len(ids), p):
            chunk = ids[i : i + p]
            padded = np.full((1, p), self.pad_id, np.int32)
            padded[0, : len(chunk)] = chunk
            rows.append(self._run("embed", {"input_ids": padded})[0][0, : len(chunk)])
        return np.concatenate(rows, 0) if rows else np.zeros((0, self.spec.hidden), np.float32)

    def new_state(self) -> State:
        s = self.spec
        c = capacity.buckets(s.kv_capacity)[0] if self.kv_buckets else s.kv_capacity
        return State(
            conv={i: np.zeros((1, s.hidden, s.conv_kernel), np.float32) for i in s.conv_layers},
            kv={
                i: (
                    np.zeros((1, s.num_kv_heads, c, s.head_dim), np.float32),
                    np.zeros((1, s.num_kv_heads, c, s.head_dim), np.float32),
                )
                for i in s.attention_layers
            },
        )

    def _fit(self, state: State, needed: int) -> int:
        """Moves the KV into the bucket for `needed` positions (the filled rows copied); returns
        the buffers' capacity."""
        if not self.kv_buckets:
            return self.spec.kv_capacity
        c = capacity.bucket_for(self.spec.kv_capacity, needed)
        for i, (k, v) in state.kv.items():
            if k.shape[2] != c:
                nk, nv = (np.zeros(k.shape[:2] + (c,) + k.shape[3:], np.float32) for _ in range(2))
                nk[:, :, : state.pos], nv[:, :, : state.pos] = k[:, :, : state.pos], v[:, :, : state.pos]
                state.kv[i] = (nk, nv)
        return c

    def _step(self, state: State, rows: np.ndarray, graph: str) -> np.ndarray:
        """Runs `rows` (n <= T valid rows; fewer than T only for a prefill graph with conv_index)
        at the state's position; returns the n rows' logits."""
        s, n = self.spec, rows.shape[0]
        t = s.prefill_chunk if graph == "decoder_prefill" else 1
        if graph == "decoder_prefill" and self.width_free:
            t = prefill_width.width_for(t, n)
        if state.pos + n > s.kv_capacity:
            raise ContextFull(f"{state.pos + n} positions > kv_capacity {s.kv_capacity}")
        c = self._fit(state, state.pos + n)
        padded = np.empty((t, s.hidden), np.float32)
        padded[:n] = rows
        padded[n:] = rows[n - 1]  # in-distribution padding: zero rows widen a QDQ graph's activation ranges
        feed = {
            "inputs_embeds": padded[None],
            "position_ids": np.arange(state.pos, state.pos + t, dtype=np.int32)[None],
            "attention_mask": causal_mask(s, state.pos, t, c),
        }
        if graph == "decoder_prefill" and s.prefill_conv_index:
            feed["conv_index"] = np.arange(n, n + s.conv_kernel, dtype=np.int32)
        elif n != t:
            raise ValueError(f"{graph}: {n} rows for a graph of width {t} without conv_index")
        for i in s.conv_layers:
            feed[f"past_conv.{i}"] = state.conv[i]
        for i in s.attention_layers:
            feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = state.kv[i]
        out = self._run(graph, feed)
        j = 1
        for i in s.conv_layers:
            state.conv[i] = out[j]
            j += 1
        for i in s.attention_layers:
            k, v = state.kv[i]
            k[:, :, state.pos : state.pos + n] = out[j][:, :, :n]
            v[:, :, state.pos : state.pos + n] = out[j + 1][:, :, :n]
            j += 2
        state.pos += n
        return out[0][0][:n]

    def feed(self, state: State, rows: np.ndarray) -> np.ndarray:
        """Feeds embedding rows [n,H]; returns the logits of every row [n,V]."""
        p, n = self.spec.prefill_chunk, rows.shape[0]
        logits = []
        full = n - n % p
        for i in range(0, full, p):
            logits.append(self._step(state, rows[i : i + p], "decoder_prefill"))
        if n - full >= 2 and self.spec.prefill_conv_index:
            logits.append(self._step(state, rows[full:], "decoder_prefill"))
        else:
            for i in range(full, n):
                logits.append(self._step(state, rows[i : i + 1], "decoder_step"))
        return np.concatenate(logits, 0)

    # --- pipeline -------------------------------------------------------------------------------
    def prompt(self, question: str):
        from .tokenizer import render_prompt

        return render_prompt(self.tok, self.text, question)

    def prefix_state(self, pixel_values: np.ndarray, prefix_ids: list[int] | None = None) -> State:
        """The per-frame shared prefix (system turn + image) fed once."""
        ids = prefix_ids if prefix_ids is not None else self.prompt("").prefix_ids
        if ids[-1] != self.image_id:
            raise ValueError("the prefix must end with the image token")
        rows = np.concatenate([self.embed(ids[:-1]), self.image_embeds(pixel_values)], 0)
        state = self.new_state()
        self.feed(state, rows)
        return state

    def generate(
        self, prefix: State, question: str | list[int], max_new: int = 64, stop: bool = False
    ) -> tuple[list[int], np.ndarray]:
        """Greedy decoding after the question (text, or its ids incl. the assistant header).
        Returns (tokens, logits of each decision [n,V])."""
        state = prefix.clone()
        ids = self.prompt(question).question_ids if isinstance(question, str) else question
        logits = self.feed(state, self.embed(ids))[-1:]
        eos = self.eos_id
        tokens, all_logits = [], []
        for _ in range(max_new):
            nxt = int(np.argmax(logits[-1]))
            tokens.append(nxt)
            all_logits.append(logits[-1])
            if stop and nxt == eos:
                break
            if len(tokens) == max_new:
                break
            logits = self.feed(state, self.embed([nxt]))
        return tokens, np.stack(all_logits)

    def probe(self, prefix: State, question: str, answers: list[str]) -> dict[str, float]:
        """P(answer) for each answer: softmax over the answer set of the summed log-probabilities
        of the answer's tokens (no end token), scored after the question's assistant header."""
        from .tokenizer import answer_ids

        state = prefix.clone()
        first = self.feed(state, self.embed(self.prompt(question).question_ids))[-1]
        scores = []
        for a in answers:
            ids = answer_ids(self.tok, a)
            st = state.clone()
            rows = self.feed(st, self.embed(ids[:-1])) if len(ids) > 1 else np.zeros((0, first.shape[0]), np.float32)
            logits = np.concatenate([first[None], rows], 0)
            scores.append(sum(float(log_softmax(logits[j])[tok]) for j, tok in enumerate(ids)))
        p = np.exp(np.asarray(scores) - max(scores))
        p /= p.sum()
        return {a: float(x) for a, x in zip(answers, p)}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())
