"""The side-by-side runtime benchmark (issue 15 item 6): the same LFM2-1.2B random weights run by the
project's Rust runtime (fp32 bundle variant and its cpu-int4 variant), ONNX Runtime GenAI 0.18 (its
model builder's fp32 and int4 graphs), a plain Python loop over the bundle's graphs, and llama.cpp
(Q4_0, through llama-cpp-python), one runner at a time, in one run.

  python -m bench.bench_runtime run --work CACHE/runtime --out bench/runtime.json --md bench/runtime.md
  python -m bench.bench_runtime genai --model DIR [protocol options]          (one runner: a JSON line)
  python -m bench.bench_runtime python-loop --model BUNDLE --variant fp32 [protocol options]

The protocol every runner follows (inference/examples/runtime_bench.rs and bench/runtime_llama.py
implement the same): the prompt of length n is the token ids low + (i * 7919) % (vocab - low), i < n,
low = vocab // 4; one warm-up (64 tokens, 4 decoded); then for each length L (64, 256, 1024, 4096)
--iters-small iterations when L <= 256, else one, each from an empty context: the time from feeding
the prompt to the first greedy token (TTFT), then --decode more greedy tokens (decode tok/s over
those steps, i.e. at positions L .. L + decode). Medians.

`run` starts every runner as its own process, reads its JSON line, its peak RSS (wait4) and the
cores other processes used while it ran (/proc/stat minus the runner's own CPU time); a row during
which others used more than 0.3 cores is marked invalid. The roofline share of a decode rate is
tok/s x bytes read per token / the machine's triad bandwidth (bench/triad.c, 2 threads), the bytes
being the weights the decoding graph reads per token (initializers not only consumed by a Gather:
an embedding lookup reads one row; the GGUF file for llama.cpp) plus the KV filled at that context.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIMIT_OTHER_CORES = 0.3


# --- the protocol -------------------------------------------------------------------------------
def prompt_ids(n: int, vocab: int) -> list[int]:
    low = vocab // 4
    return [low + (i * 7919) % (vocab - low) for i in range(n)]


def measure(first, step, vocab: int, lengths: list[int], decode: int, iters_small: int) -> dict:
    """first(ids) -> the first greedy token from an empty context; step(tok) -> the next one."""
    tok = first(prompt_ids(64, vocab))
    for _ in range(4):
        tok = step(tok)
    ttft, rate = {}, {}
    for n in lengths:
        ids = prompt_ids(n, vocab)
        ts, rs = [], []
        for _ in range(iters_small if n <= 256 else 1):
            t0 = time.perf_counter()
            tok = first(ids)
            t1 = time.perf_counter()
            for _ in range(decode):
                tok = step(tok)
            t2 = time.perf_counter()
            ts.append((t1 - t0) * 1e3)
            rs.append(decode / (t2 - t1))
        ttft[str(n)], rate[str(n)] = float(np.median(ts)), float(np.median(rs))
        print(f"{n} tokens: TTFT {ttft[str(n)]:.0f} ms, decode {rate[str(n)]:.2f} tok/s", file=sys.stderr, flush=True)
    return {"ttft_ms": ttft, "decode_tok_s": rate}


def genai_runner(a) -> dict:
    import onnxruntime_genai as og

    cfg_path = Path(a.model) / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    so = cfg["model"]["decoder"].setdefault("session_options", {})
    if so.get("intra_op_num_threads") != a.threads or so.get("inter_op_num_threads") != 1:
        so["intra_op_num_threads"], so["inter_op_num_threads"] = a.threads, 1
        cfg_path.write_text(json.dumps(cfg, indent=1))
    t = time.perf_counter()
    model = og.Model(str(a.model))
    load_s = time.perf_counter() - t
    vocab = int(cfg["model"]["vocab_size"])
    state: dict = {}

    def first(ids):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=a.ctx, do_sample=False)
        state["gen"] = og.Generator(model, params)  # a new generator: an empty context
        state["gen"].append_tokens(np.array([ids], dtype=np.int32))
        state["gen"].generate_next_token()
        return int(state["gen"].get_next_tokens()[0])

    def step(_tok):
        state["gen"].generate_next_token()  # genai feeds the token it chose itself
        return int(state["gen"].get_next_tokens()[0])

    res = measure(first, step, vocab, a.lengths, a.decode, a.iters_small)
    return {"runner": "onnxruntime-genai", "precision": cfg_precision(Path(a.model)), "load_s": load_s,
            "onnxruntime_genai": og.__version__, **res}


def cfg_precision(d: Path) -> str:
    """fp32 or int4, from the builder's graph: MatMulNBits nodes mean int4."""
    import onnx

    m = onnx.load(str(d / "model.onnx"), load_external_data=False)
    return "int4" if any(n.op_type == "MatMulNBits" for n in m.graph.node) else "fp32"


def python_loop_runner(a) -> dict:
    """The plain loop: forge's reference runtime (numpy + onnxruntime sessions) over the bundle's
    embed and decoder graphs, the prompt in prefill-chunk calls, keeping only the last logits."""
    from forge.runtime import Runner, cpu_session
    from forge.manifest import read

    man = read(Path(a.model))
    v = man["variants"][a.variant]
    t = time.perf_counter()
    sessions = {g: cpu_session(Path(a.model) / v[g], a.threads) for g in ("embed", "decoder_prefill", "decoder_step")}
    r = Runner(Path(a.model), a.variant, sessions=sessions, threads=a.threads)
    load_s = time.perf_counter() - t
    p = r.spec.prefill_chunk
    st: dict = {}

    def first(ids):
        s = st["s"] = r.new_state()
        rows = r.embed(ids)
        full = len(ids) - len(ids) % p
        logits = None
        for i in range(0, full, p):
            logits = r._step(s, rows[i : i + p], "decoder_prefill")
        if len(ids) - full >= 2 and r.spec.prefill_conv_index:
            logits = r._step(s, rows[full:], "decoder_prefill")
        else:
            for i in range(full, len(ids)):
                logits = r._step(s, rows[i : i + 1], "decoder_step")
        return int(np.argmax(logits[-1]))

    def step(tok):
        return int(np.argmax(r._step(st["s"], r.embed([tok]), "decoder_step")[-1]))

    res = measure(first, step, man["text"]["vocab_size"], a.lengths, a.decode, a.iters_small)
    return {"runner": "python-loop", "precision": "int4" if a.variant == "cpu-int4" else a.variant,
            "variant": a.variant, "load_s": load_s, **res}


# --- the side-by-side run -----------------------------------------------------------------------
def busy_s() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def run_one(label: str, argv: list[str], env: dict | None = None, json_line: bool = True) -> dict:
    print(f"[runtime] {label}: {' '.join(map(str, argv))}", file=sys.stderr, flush=True)
    t0, b0 = time.time(), busy_s()
    p = subprocess.Popen([str(x) for x in argv], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall, others = time.time() - t0, busy_s() - b0 - (ru.ru_utime + ru.ru_stime)
    if p.returncode != 0:
        raise RuntimeError(f"{label} failed ({p.returncode}); its stderr is above")
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if json_line and not lines:
        raise RuntimeError(f"{label} printed no JSON line")
    row = json.loads(lines[-1]) if json_line else {}
    row["peak_rss_mb"] = ru.ru_maxrss / 1024
    row["wall_s"] = wall
    row["other_cores"] = max(others, 0.0) / wall
    row["valid"] = row["other_cores"] <= LIMIT_OTHER_CORES
    return row


def read_bytes(path: Path) -> int:
    """Bytes of the initializers a decoding graph reads per token: all but those only a Gather uses."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    m = onnx.load(str(path), load_external_data=False)
    users: dict[str, set] = {}
    for n in m.graph.node:
        for i in n.input:
            users.setdefault(i, set()).add(n.op_type)
    total = 0
    for t in m.graph.initializer:
        if users.get(t.name, set()) <= {"Gather"} and t.name in users:
            continue
        if uses_external_data(t):
            total += int(next((e.value for e in t.external_data if e.key == "length"), 0))
        else:
            total += len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
    return total


def kv_bytes(n: int, attn_layers: int, kv_heads: int, head_dim: int, elem: int) -> int:
    return 2 * attn_layers * kv_heads * head_dim * n * elem


def triad_gbs(work: Path) -> dict:
    exe = work / "triad"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", str(ROOT / "bench" / "triad.c"), "-o", str(exe)], check=True)
    p = subprocess.run([str(exe), "512", "20"], env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout)


def side_by_side(a) -> int:
    from forge.manifest import read

    w = Path(a.work)
    bundle = w / "bundle"
    man = read(bundle)
    d = man["decoder"]
    attn = sum(1 for t in d["layer_types"] if t == "full_attention")
    proto = ["--threads", str(a.threads), "--lengths", ",".join(map(str, a.lengths)), "--decode", str(a.decode),
             "--iters-small", str(a.iters_small)]
    py = sys.executable
    runners = [
        ("ours fp32", [ROOT / "target/release/examples/runtime_bench", "--model", bundle, "--variant", "fp32", *proto],
         lambda: read_bytes(bundle / man["variants"]["fp32"]["decoder_step"]), 4),
        ("ours cpu-int4", [ROOT / "target/release/examples/runtime_bench", "--model", bundle, "--variant", "cpu-int4", *proto],
         lambda: read_bytes(bundle / man["variants"]["cpu-int4"]["decoder_step"]), 4),
        # The daemon's default leaves intra-op spinning off; these rows turn it on (ONNX Runtime's default)
        ("ours fp32 spinning", [ROOT / "target/release/examples/runtime_bench", "--model", bundle, "--variant",
                                "fp32", "--spinning", "on", *proto],
         lambda: read_bytes(bundle / man["variants"]["fp32"]["decoder_step"]), 4),
        ("ours cpu-int4 spinning", [ROOT / "target/release/examples/runtime_bench", "--model", bundle, "--variant",
                                    "cpu-int4", "--spinning", "on", *proto],
         lambda: read_bytes(bundle / man["variants"]["cpu-int4"]["decoder_step"]), 4),
        ("onnxruntime-genai fp32", [py, "-m", "bench.bench_runtime", "genai", "--model", w / "genai-fp32", "--ctx", str(a.ctx), *proto],
         lambda: read_bytes(w / "genai-fp32" / "model.onnx"), 4),
        ("onnxruntime-genai int4", [py, "-m", "bench.bench_runtime", "genai", "--model", w / "genai-int4", "--ctx", str(a.ctx), *proto],
         lambda: read_bytes(w / "genai-int4" / "model.onnx"), 4),
        ("python-loop fp32", [py, "-m", "bench.bench_runtime", "python-loop", "--model", bundle, "--variant", "fp32", *proto],
         lambda: read_bytes(bundle / man["variants"]["fp32"]["decoder_step"]), 4),
        ("llama.cpp q4_0", [w / "llama-venv/bin/python", "-m", "bench.runtime_llama", "--model", w / "gguf/model-q4_0.gguf",
                            "--ctx", str(a.ctx), *proto],
         lambda: (w / "gguf/model-q4_0.gguf").stat().st_size, 2),
        # llama-cpp-python leaves flash attention off; llama.cpp's own CLI defaults to auto (on for the CPU)
        ("llama.cpp q4_0 flash-attn", [w / "llama-venv/bin/python", "-m", "bench.runtime_llama", "--model",
                                       w / "gguf/model-q4_0.gguf", "--ctx", str(a.ctx), "--flash-attn", *proto],
         lambda: (w / "gguf/model-q4_0.gguf").stat().st_size, 2),
    ]
    if a.runners:
        keep = a.runners.split(",")
        runners = [r for r in runners if r[0] in keep]
    bw = triad_gbs(w)
    print(f"[runtime] triad bandwidth, 2 threads: {bw}", file=sys.stderr, flush=True)
    rows, failed = [], []
    for label, argv, weights, kv_elem in runners:
        try:
            row = run_one(label, argv, env={"AUTONEURAL_VENV": str(ROOT / ".venv")})
        except Exception as e:  # a runner that fails is recorded, the others still run
            failed.append({"runner": label, "error": str(e)})
            continue
        row["label"] = label
        rows.append((row, weights, kv_elem))
        print(f"[runtime] {label}: {json.dumps(row)}", file=sys.stderr, flush=True)
    # Graph sizes only now: reading a graph with inline weights grows this process, and every runner
    # started after that would inherit the high-water mark its peak RSS is read from.
    for row, weights, kv_elem in rows:
        row["weights_read_per_token_bytes"] = weights()
        row["roofline_share"] = {
            k: v * (row["weights_read_per_token_bytes"] + kv_bytes(int(k), attn, d["num_kv_heads"], d["head_dim"], kv_elem))
            / (bw["best_gbs"] * 1e9)
            for k, v in row["decode_tok_s"].items()
        }
    rows = [r for r, _, _ in rows]
    probe = None
    if not a.runners or "safety probe" in a.runners.split(","):
        probe = safety_probe(w, bundle, a)
    if a.runners and Path(a.out).exists():  # a partial rerun keeps the other rows of the last run
        old = json.loads(Path(a.out).read_text())
        redone = {r["label"] for r in rows} | {f["runner"] for f in failed}
        rows = [r for r in old["rows"] if r["label"] not in redone] + rows
        probe = probe or old.get("safety_probe")
        a.reruns = old.get("reruns", []) + [{"runners": a.runners, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}]
        bw = {"best_gbs": old["bandwidth_triad_gbs"]}  # the run's figures; the reruns are listed
        a.first_run = (old["date"], old["git"])
    doc = {
        "model": "LFM2-1.2B, random weights (the text decoder of forge random-vl 1.6b)",
        "threads": a.threads, "decoded_tokens": a.decode, "lengths": a.lengths,
        "bandwidth_triad_gbs": bw["best_gbs"],
        "date": getattr(a, "first_run", (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),))[0],
        "git": getattr(a, "first_run", (None, subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                             capture_output=True, text=True).stdout.strip()))[1],
        "rows": rows, "failed": failed,
        "safety_probe_wait_ms": probe["safety_probe_wait_ms"] if probe else None,
        "safety_probe": probe,
        "reruns": getattr(a, "reruns", []),
    }
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    Path(a.md).write_text(markdown(doc))
    return 0


def safety_probe(w: Path, bundle: Path, a) -> dict | None:
    """preempt_bench on the same bundle: a 48-token question on the cpu-int4 variant, a safety probe
    submitted during its decoding."""
    out = w / "preempt.json"
    try:
        row = run_one("safety probe", [ROOT / "target/release/examples/preempt_bench", "--model", bundle, "--variant",
                                       "cpu-int4", "--threads", str(a.threads), "--rounds", "6", "--tokens", "48",
                                       "--label", "LFM2-VL-1.6B (random), cpu-int4", "--json", out],
                      env={"AUTONEURAL_VENV": str(ROOT / ".venv")}, json_line=False)
    except Exception as e:
        return {"error": str(e), "safety_probe_wait_ms": None}
    res = json.loads(out.read_text())
    res["peak_rss_mb"], res["valid"] = row["peak_rss_mb"], row["valid"]
    return res


def targets(doc: dict) -> list[str]:
    """The issue's targets as ratios of this run's rows (decode: ours / peer, >= 1.0 wanted; TTFT:
    ours / peer, <= 1.0 wanted)."""
    by: dict = {}
    for r in doc["rows"]:
        key = (r["runner"], r["precision"])
        if not r["valid"]:
            continue
        if r["runner"] == "ours":  # ours as the daemon ships it: the spinning rows are an A/B of a setting
            if not r.get("intra_op_spinning"):
                by[key] = r
        # of a peer's two settings (llama.cpp with and without flash attention), its faster
        elif key not in by or r["decode_tok_s"].get("1024", 0) > by[key]["decode_tok_s"].get("1024", 0):
            by[key] = r
    pairs = [(("ours", "fp32"), ("onnxruntime-genai", "fp32")), (("ours", "int4"), ("onnxruntime-genai", "int4")),
             (("ours", "int4"), ("llama.cpp", "q4_0")), (("ours", "fp32"), ("python-loop", "fp32"))]
    lines = ["", "Targets, as ratios within this run (decode: ours / peer, wanted >= 1.0; TTFT: ours / peer, "
             "wanted <= 1.0):", "", "| ours | peer | decode @256 | @1024 | @4096 | TTFT 64 | 256 | 1024 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mine, peer in pairs:
        a, b = by.get(mine), by.get(peer)
        if not a or not b:
            continue

        def ratio(key, n):
            x, y = a[key].get(n), b[key].get(n)
            return f"{x / y:.2f}" if x and y else "–"

        lines.append(f"| {a['label']} | {b['label']} | " + " | ".join(ratio("decode_tok_s", n) for n in ("256", "1024", "4096"))
                     + " | " + " | ".join(ratio("ttft_ms", n) for n in ("64", "256", "1024")) + " |")
    for r in doc["rows"]:
        if r["runner"] == "ours" and "outside_session_run_share" in r:
            lines.append(f"\n{r['label']}: {100 * r['outside_session_run_share']:.2f} % of the measured time "
                         "outside `Session::run` (target < 2 %).")
    return lines


def markdown(doc: dict) -> str:
    def cell(v, fmt="{:.0f}"):
        return "–" if v is None else fmt.format(v)

    out = [f"LFM2-1.2B random weights, {doc['threads']} threads, {doc['decoded_tokens']} tokens decoded after each "
           f"prompt; triad bandwidth {doc['bandwidth_triad_gbs']:.1f} GB/s; {doc['date']}, git {doc['git']}.", "",
           "| runner | precision | TTFT 64 ms | TTFT 256 ms | TTFT 1024 ms | decode tok/s @256 | @1024 | @4096 | "
           "roofline @256 | peak RSS MB | other cores |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        t, d, rf = r["ttft_ms"], r["decode_tok_s"], r["roofline_share"]
        flag = "" if r["valid"] else " (INVALID: other processes used more than 0.3 cores)"
        out.append(f"| {r['label']} | {r['precision']} | {cell(t.get('64'))} | {cell(t.get('256'))} | "
                   f"{cell(t.get('1024'))} | {cell(d.get('256'), '{:.2f}')} | {cell(d.get('1024'), '{:.2f}')} | "
                   f"{cell(d.get('4096'), '{:.2f}')} | {cell(100 * rf['256'] if '256' in rf else None, '{:.0f} %')} | "
                   f"{r['peak_rss_mb']:.0f} | {r['other_cores']:.2f}{flag} |")
    for f in doc["failed"]:
        out.append(f"| {f['runner']} | failed: {f['error'][:200]} | | | | | | | | | |")
    out += targets(doc)
    p = doc.get("safety_probe") or {}
    if p.get("safety_probe_wait_ms"):
        out += ["", f"Safety probe while a 48-token question generates ({p.get('model')}): wait p50 "
                f"{p['safety_probe_wait_ms']['p50']:.0f} ms, p99 {p['safety_probe_wait_ms']['p99']:.0f} ms; one decode "
                f"step {p.get('decode_step_ms', float('nan')):.0f} ms; the probe alone {p.get('probe_alone_ms', float('nan')):.0f} ms."]
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("run", "genai", "python-loop"))
    p.add_argument("--model")
    p.add_argument("--variant", default="fp32")
    p.add_argument("--work")
    p.add_argument("--out")
    p.add_argument("--md")
    p.add_argument("--runners", default="", help="run: comma list of runner labels (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256, 1024, 4096])
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--iters-small", type=int, default=3)
    p.add_argument("--ctx", type=int, default=4224, help="the context the runners allocate (>= 4096 + decode + 1)")
    a = p.parse_args()
    if a.what == "run":
        return side_by_side(a)
    row = genai_runner(a) if a.what == "genai" else python_loop_runner(a)
    row["threads"] = a.threads
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
