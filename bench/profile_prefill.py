"""Where a prompt's prefill time goes, per operator: ONNX Runtime's own profiler on a bundle's
decoder_prefill while a prompt of n tokens is fed the way the runtime feeds it (forge's reference
runtime: full chunks, then the remainder padded to the chunk width with conv_index). Run in the
bench venv from the repository root; the side-by-side runtime benchmark (bench/runtime.md) cites it.

  python -m bench.profile_prefill --model BUNDLE --variant cpu-int4 --tokens 64 [--threads 2]

Prints one JSON object: the prefill calls' wall time, the time per operator type, and the LM head's
share (the node that produces `logits`: it runs for every row of the chunk, padding included).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.bench_runtime import prompt_ids


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--variant", default="cpu-int4")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    from forge.manifest import read
    from forge.runtime import Runner, cpu_session

    bundle = Path(a.model)
    v = read(bundle)["variants"][a.variant]
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(Path("/tmp") / "prefill-profile")
    sessions = {g: cpu_session(bundle / v[g], a.threads) for g in ("embed", "decoder_step")}
    sessions["decoder_prefill"] = ort.InferenceSession(str(bundle / v["decoder_prefill"]), so,
                                                       providers=["CPUExecutionProvider"])
    r = Runner(bundle, a.variant, sessions=sessions, threads=a.threads)
    ids = prompt_ids(a.tokens, read(bundle)["text"]["vocab_size"])
    r.feed(r.new_state(), r.embed(ids))  # warm-up (shapes planned, weights prepacked)
    t = time.perf_counter()
    r.feed(r.new_state(), r.embed(ids))
    wall = time.perf_counter() - t
    trace = json.loads(Path(sessions["decoder_prefill"].end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last = runs[-(len(runs) // 2):]  # the measured feed's calls (the warm-up made the same number)
    t0 = min(e["ts"] for e in last)
    by_op, head_us, total_us = defaultdict(float), 0.0, 0.0
    logits_nodes = {n.name for n in _graph(bundle / v["decoder_prefill"]).node if "logits" in n.output}
    for e in trace:
        if e.get("cat") != "Node" or e["ts"] < t0 or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        by_op[e["args"].get("op_name", "?")] += e["dur"]
        total_us += e["dur"]
        if node in logits_nodes:
            head_us += e["dur"]
    print(json.dumps({
        "variant": a.variant, "tokens": a.tokens, "prefill_calls": len(last),
        "feed_wall_ms": round(wall * 1e3, 1),
        "prefill_run_ms": round(sum(e["dur"] for e in last) / 1e3, 1),
        "ops_ms": {k: round(x / 1e3, 1) for k, x in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]},
        "lm_head_ms": round(head_us / 1e3, 1), "lm_head_share": round(head_us / max(total_us, 1.0), 3),
    }, indent=1))
    return 0


def _graph(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


if __name__ == "__main__":
    raise SystemExit(main())
