"""Vision encoder latency (fp32 and W8A16 QDQ, ONNX Runtime CPU, 2 threads) and W8A16 SQNR.

Reads the directories export_models.py wrote (DIR/<config>-<size>/{vision.onnx, w8a16/vision.onnx,
heldout.npy, export.json}); writes one JSON with a row per (encoder, size, variant)."""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np

from bench.common import rss_bytes, session, sqnr_db, stats_ms, timed_runs, write_json


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed runs per row")
    p.add_argument("--min-n", type=int, default=5)
    a = p.parse_args()
    rows = []
    for d in sorted(Path(a.models).iterdir()):
        meta_path = d / "export.json"
        if not meta_path.exists() or not (d / "vision.onnx").exists():
            continue
        meta = json.loads(meta_path.read_text())
        x = np.load(d / "heldout.npy")
        ref = None
        for variant, path in (("fp32", d / "vision.onnx"), ("w8a16", d / "w8a16" / "vision.onnx")):
            if not path.exists():
                continue
            gc.collect()
            base = rss_bytes()
            t = time.perf_counter()
            s = session(path)
            load_s = time.perf_counter() - t
            feed = {"pixel_values": x[:1]}
            samples = timed_runs(lambda: s.run(None, feed), a.budget, min_n=a.min_n)
            outs = [s.run(None, {"pixel_values": x[i : i + 1]})[0] for i in range(len(x))]
            row = {"config": meta["config"], "size": meta["size"], "tokens": meta.get("tokens"),
                   "params": meta.get("vision_params", 0) + meta.get("connector_params", 0),
                   "variant": variant, "session_s": round(load_s, 1),
                   "session_rss_mb": round((rss_bytes() - base) / 2**20), **stats_ms(samples)}
            if variant == "fp32":
                ref = outs
            elif ref is not None:
                row["sqnr_db"] = round(sqnr_db(np.concatenate(ref), np.concatenate(outs)), 2)
                err = np.concatenate(outs) - np.concatenate(ref)
                row["rms_err_pct"] = round(float(100 * np.sqrt((err**2).mean() / (np.concatenate(ref) ** 2).mean())), 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
            del s
        gc.collect()
    write_json(Path(a.out), {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
