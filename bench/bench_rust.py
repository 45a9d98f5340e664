"""The Rust pipeline (autoneural-inference) on the same graphs: its `vlm` example, one request per
process, whose `timings:` lines give vision, prefill, TTFT, decode tok/s, probe time and the time
inside/outside `Session::run` (the `bench` example prints markdown for people, not rows)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

from bench.common import write_json

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "inference" / "examples"
QUESTION = "Is the driver looking at the road?"


def parse_timings(line: str) -> dict:
    """`timings: total 12.3 ms | preprocess ... | in Session::run 10.0 ms (5 runs), outside 2.3 ms`."""
    out: dict = {}
    for key, pat in (("total_ms", r"total ([\d.]+) ms"), ("preprocess_ms", r"preprocess ([\d.]+) ms"),
                     ("vision_ms", r"vision ([\d.]+) ms"), ("prefix_prefill_ms", r"prefix prefill ([\d.]+) ms"),
                     ("prefix_tokens", r"prefix prefill [\d.]+ ms \((\d+) tok\)"),
                     ("prefill_ms", r"\| prefill ([\d.]+) ms"), ("prefill_tokens", r"\| prefill [\d.]+ ms \((\d+) tok\)"),
                     ("ttft_ms", r"TTFT ([\d.]+) ms"), ("decode_tok_s", r"decode ([\d.]+) tok/s"),
                     ("probes_ms", r"probes ([\d.]+) ms"), ("in_run_ms", r"in Session::run ([\d.]+) ms"),
                     ("session_runs", r"\((\d+) runs\)"), ("outside_run_ms", r"outside ([\d.]+) ms")):
        m = re.search(pat, line)
        if m:
            out[key] = float(m.group(1))
    out["prefix_reused"] = "prefix reused" in line
    if "in_run_ms" in out and out.get("total_ms"):
        out["outside_share_pct"] = round(100 * out.get("outside_run_ms", 0) / out["total_ms"], 2)
    return out


def run_vlm(bundle: Path, image: Path, mode: list[str], env: dict) -> dict:
    cmd = ["cargo", "run", "--release", "--locked", "-q", "-p", "autoneural-inference", "--example", "vlm", "--",
           "--bundle", str(bundle), "--image", str(image), "--ep", "cpu", *mode]
    t = time.time()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()[-600:]}")
    lines = [x for x in r.stdout.splitlines() if x.startswith("timings:")]
    if not lines:
        raise RuntimeError(f"no timings line in the output of {' '.join(cmd)}")
    load = re.search(r"loaded in ([\d.]+) ms", r.stdout)
    row = parse_timings(lines[-1])
    row.update(command=" ".join(cmd[cmd.index("--") + 1 :]), wall_s=round(time.time() - t, 1),
               load_ms=float(load.group(1)) if load else None)
    return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bundles", required=True, help="comma list of bundle dirs (tiny first)")
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-tokens", type=int, default=16)
    a = p.parse_args()
    env = {**os.environ, "AUTONEURAL_VENV": str(ROOT / ".venv")}
    if not (EXAMPLES / "vlm.rs").exists():
        write_json(Path(a.out), {"status": "missing", "rows": [],
                                 "reason": "the inference crate's examples (vlm / bench) have not landed"})
        return 0
    t = time.time()
    b = subprocess.run(["cargo", "build", "--release", "--locked", "-p", "autoneural-inference", "--example", "vlm"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    if b.returncode != 0:
        write_json(Path(a.out), {"status": "error", "rows": [], "reason": f"building the vlm example failed: {b.stderr[-600:]}"})
        return 0
    build_s = round(time.time() - t, 1)
    rows = []
    for bundle in [Path(x) for x in a.bundles.split(",") if x]:
        if not (bundle / "manifest.toml").exists():
            continue
        for kind, mode in (("ask", ["--ask", QUESTION, "--max-tokens", str(a.max_tokens)]), ("probes", ["--probe", "bundle"])):
            try:
                rows.append({"bundle": bundle.name, "request": kind, **run_vlm(bundle, Path(a.image), mode, env)})
            except RuntimeError as e:
                rows.append({"bundle": bundle.name, "request": kind, "error": str(e)})
            print(json.dumps(rows[-1]), flush=True)
    write_json(Path(a.out), {"status": "ok", "source": "inference/examples/vlm.rs (timings line)", "build_s": build_s,
                             "rows": rows,
                             "note": "One request per process (`vlm` example): session creation is excluded by the example's "
                                     "own timings; `outside` = total - time inside Session::run (preprocessing, tokenizer, "
                                     "masks, buffer updates, sampling)."})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
