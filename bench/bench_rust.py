"""The Rust pipeline's timings (the inference crate's benchmark example): vision, prefill, TTFT,
decode tokens/s, probe latency with and without prefix reuse, and the share of time spent outside
Session::run. Builds and runs the example when the inference crate provides it."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from common import write_json

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "inference" / "examples" / "bench.rs"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full", action="store_true")
    a = p.parse_args()
    if not EXAMPLE.exists():
        write_json(Path(a.out), {"status": "missing", "rows": [],
                                 "reason": "the inference crate's benchmark example (inference/examples/bench.rs) has not landed"})
        return 0
    env = {**os.environ, "AUTONEURAL_VENV": str(ROOT / ".venv")}
    cmd = ["cargo", "run", "--release", "-p", "autoneural-inference", "--example", "bench", "--",
           "--bundle", str(ROOT / "models" / "tiny-random"), "--json"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        write_json(Path(a.out), {"status": "error", "rows": [], "reason": f"{' '.join(cmd)} failed: {r.stderr[-800:]}"})
        return 0
    write_json(Path(a.out), {"status": "ok", "rows": json.loads(r.stdout).get("rows", []), "command": " ".join(cmd)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
