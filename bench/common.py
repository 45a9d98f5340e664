"""Helpers shared by the benchmark scripts (bench venv: numpy + onnxruntime, no torch)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

THREADS = 2  # the brief: ONNX Runtime CPU, 2 threads


def session(path: Path, threads: int = THREADS, prepack: bool = True):
    """A CPU session as the runtime makes one: intra-op threads, sequential, full graph optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def stats_ms(samples_s: list[float]) -> dict:
    a = np.asarray(samples_s) * 1e3
    return {
        "n": int(a.size),
        "median_ms": round(float(np.median(a)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "min_ms": round(float(a.min()), 2),
        "max_ms": round(float(a.max()), 2),
    }


def timed_runs(fn, budget_s: float, min_n: int = 3, max_n: int = 30, warmup: int = 1) -> list[float]:
    """Runs fn warmup times, then as many times as fit in budget_s (at least min_n, at most max_n)."""
    t_first = 0.0
    for _ in range(warmup):
        t = time.perf_counter()
        fn()
        t_first = time.perf_counter() - t
    n = int(min(max_n, max(min_n, budget_s / max(t_first, 1e-6))))
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def sqnr_db(ref: np.ndarray, x: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64).ravel()
    x = np.asarray(x, np.float64).ravel()
    return float(10 * np.log10((ref**2).sum() / max(((ref - x) ** 2).sum(), 1e-30)))


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
