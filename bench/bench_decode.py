"""Decode speed of static-shape decoder_step graphs at several KV capacities (ONNX Runtime CPU,
2 threads), with the plain-Python runtime loop the contract describes: the KV buffers are numpy
arrays owned by the loop, each step's new K/V row is written into its slot in place, conv states
are replaced by the step's outputs.

With static shapes a step attends over all C buffer slots (masked ones included), so "decode at
context C" is the graph with capacity C, measured with C-1 slots filled (the last position).

Also checks that the capacity variants (export_models.with_capacity) compute the same thing: the
logits of one step with the same 64 filled slots must agree across capacities."""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
from pathlib import Path

import numpy as np
import onnx

from bench.common import peak_rss_bytes, rss_bytes, session, stats_ms, timed_runs, write_json


def graph_weight_bytes(path: Path) -> int:
    """Bytes of the graph's initializers (external data lengths plus inline raw data)."""
    m = onnx.load(str(path), load_external_data=False)
    n = 0
    for t in m.graph.initializer:
        ext = {e.key: e.value for e in t.external_data}
        n += int(ext["length"]) if "length" in ext else len(t.raw_data)
    return n


class Loop:
    """State of one decoding stream for a decoder graph (B = 1)."""

    def __init__(self, sess, mask_value: float = -100.0):
        self.s = sess
        self.inputs = {i.name: i for i in sess.get_inputs()}
        self.outputs = [o.name for o in sess.get_outputs()]
        self.t = self.inputs["inputs_embeds"].shape[1]
        self.hidden = self.inputs["inputs_embeds"].shape[2]
        self.cap = self.inputs["attention_mask"].shape[3] - self.t
        self.mask_value = mask_value
        self.conv = {n: np.zeros(i.shape, np.float32) for n, i in self.inputs.items() if n.startswith("past_conv.")}
        self.kv = {n: np.zeros(i.shape, np.float32) for n, i in self.inputs.items() if n.startswith("past_key_values.")}
        self.in_run_s = 0.0  # time inside InferenceSession.run (the rest of step() is the loop's own)

    def kv_bytes_per_token(self) -> int:
        return sum(a[0, :, 0, :].nbytes for a in self.kv.values())

    def conv_bytes(self) -> int:
        return sum(a.nbytes for a in self.conv.values())

    def fill(self, filled: int, seed: int) -> None:
        """Slots [0, filled) get the same random rows whatever the capacity."""
        r = np.random.default_rng(seed)
        for n in sorted(self.kv):
            a = self.kv[n]
            a[:] = 0
            a[:, :, :filled, :] = r.standard_normal((a.shape[0], a.shape[1], filled, a.shape[3]), np.float32)
        for n in sorted(self.conv):
            self.conv[n][:] = 0.1 * r.standard_normal(self.conv[n].shape, np.float32)

    def mask(self, pos: int) -> np.ndarray:
        m = np.full((1, 1, self.t, self.cap + self.t), self.mask_value, np.float32)
        m[..., :pos] = 0
        for i in range(self.t):
            m[0, 0, i, self.cap : self.cap + i + 1] = 0
        return m

    def step(self, embeds: np.ndarray, pos: int, valid: int | None = None) -> np.ndarray:
        """One call: embeds [1,T,H] at positions pos..pos+T, of which the first `valid` rows (default
        all) are the prompt's (a prefill graph with `conv_index` keeps the padding out of the conv
        state, contract 1); writes the valid rows' K/V in place."""
        rows_valid = self.t if valid is None else valid
        feed = {"inputs_embeds": embeds, "position_ids": np.arange(pos, pos + self.t, dtype=np.int32)[None],
                "attention_mask": self.mask(pos), **self.conv, **self.kv}
        if "conv_index" in self.inputs:
            feed["conv_index"] = np.arange(rows_valid, rows_valid + 3, dtype=np.int32)
        t = time.perf_counter()
        res = self.s.run(self.outputs, feed)
        self.in_run_s += time.perf_counter() - t
        out = dict(zip(self.outputs, res))
        for n in self.conv:
            self.conv[n] = out["present_conv." + n.split(".", 1)[1]]
        for n, buf in self.kv.items():
            _, i, kind = n.split(".")
            rows = out[f"present.{i}.{kind}"]
            end = min(pos + rows_valid, self.cap)
            buf[:, :, pos:end, :] = rows[:, :, : end - pos, :]
        return out["logits"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", required=True, help="directory of decoder dirs (export_models.py decoder)")
    p.add_argument("--out", required=True)
    p.add_argument("--capacities", default="256,1024,4096")
    p.add_argument("--budget", type=float, default=8.0, help="seconds of timed steps per row")
    p.add_argument("--names", default="", help="comma list of decoder dirs to measure (default all)")
    a = p.parse_args()
    caps = [int(c) for c in a.capacities.split(",")]
    names = [n for n in a.names.split(",") if n]
    rows = []
    for d in sorted(Path(a.models).iterdir()):
        if names and d.name not in names or not (d / "export.json").exists():
            continue
        meta = json.loads((d / "export.json").read_text())
        ref_logits = None
        for c in caps:
            path = d / f"decoder_step_c{c}.onnx"
            if not path.exists():
                continue
            gc.collect()
            base = rss_bytes()
            t0 = time.perf_counter()
            s = session(path)
            load_s = time.perf_counter() - t0
            weights_rss = rss_bytes() - base
            loop = Loop(s)
            r = np.random.default_rng(1)
            # same-content check across capacities (64 filled slots, position 64)
            loop.fill(64, seed=7)
            check_embeds = r.standard_normal((1, 1, loop.hidden), np.float32)
            logits = loop.step(check_embeds, 64)[0, -1]
            if ref_logits is None:
                ref_logits, max_diff = logits, 0.0
            else:
                max_diff = float(np.abs(logits - ref_logits).max())
            # decode at context c: c-1 slots filled, the step writes slot c-1
            loop.fill(c - 1, seed=11)
            emb = r.standard_normal((1, 1, loop.hidden), np.float32)
            samples = timed_runs(lambda: loop.step(emb, c - 1), a.budget, min_n=5, max_n=40)
            st = stats_ms(samples)
            kv_total = sum(x.nbytes for x in loop.kv.values())
            row = {
                "decoder": d.name,
                "config": meta["config"],
                "all_attention": meta.get("all_attention", False),
                "params": meta.get("decoder_params"),
                "attention_layers": sum(1 for t in meta["layer_types"] if t == "full_attention"),
                "conv_layers": sum(1 for t in meta["layer_types"] if t == "conv"),
                "capacity": c,
                "session_s": round(load_s, 1),
                "weights_rss_mb": round(weights_rss / 2**20),
                "process_rss_mb": round(rss_bytes() / 2**20),
                "kv_bytes_per_token": loop.kv_bytes_per_token(),
                "kv_buffer_mb": round(kv_total / 2**20, 1),
                "conv_state_bytes": loop.conv_bytes(),
                "weight_bytes": graph_weight_bytes(path),
                "logits_max_diff_vs_first_capacity": max_diff,
                "tok_s": round(1000.0 / st["median_ms"], 3),
                **st,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            del s, loop
        gc.collect()
    write_json(Path(a.out), {"rows": rows, "peak_rss_mb": round(peak_rss_bytes() / 2**20)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
