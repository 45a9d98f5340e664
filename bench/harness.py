"""The benchmark's driver: runs every step as its own process (so memory is returned between big
steps), records what each step measured, how long it took and how busy the machine was meanwhile,
then writes bench/REPORT.md (see report.py). Started by bench/run, which installs the venvs first.
Every script runs as a module from the repository root (`python -m bench.NAME`; bench/__init__.py).

Steps (each writes CACHE/results/<step>.json; a step whose inputs are missing records why):
  machine, bandwidth, export, vision, decode, ttft, genai, rust, runtime, cabin, camera, daemon, then
  the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

VISION_SIZES = {  # the ViT needs multiples of 28 (patch 14, pixel shuffle 2): nearest to 256/512/768
    "autoneural-1.5b": [256, 512, 768],
    "internvl2-2b-like": [252, 504, 756],
}
TTFT_SIZES = {"autoneural-1.5b": 512, "internvl2-2b-like": 448}  # InternVL2 resizes a 512 px image to its 448 tile


def module(script: str) -> str:
    """bench_vision.py -> bench.bench_vision (what `python -m` takes)."""
    return "bench." + script.removesuffix(".py")


def rel(p) -> str:
    try:
        return str(Path(os.path.abspath(p)).relative_to(ROOT))
    except ValueError:
        return str(p)


def killed(e: Exception) -> str:
    s = str(e)
    if "failed (-9)" in s:
        return "killed by the kernel's OOM killer (signal 9): not enough free memory on the shared machine"
    return s[-400:]


class Monitor:
    """Samples the machine while a step runs: load average and the CPU time used by processes
    other than this benchmark (total busy time from /proc/stat minus our children's CPU time)."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()

    @staticmethod
    def busy_s() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def _run(self):
        while not self._stop.wait(2.0):
            with open("/proc/loadavg") as f:
                self.samples.append((time.time(), float(f.read().split()[0])))

    def __enter__(self):
        self.t0 = time.time()
        self.busy0 = self.busy_s()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.ours0 = ru.ru_utime + ru.ru_stime
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.wall = time.time() - self.t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = ru.ru_utime + ru.ru_stime - self.ours0
        busy = self.busy_s() - self.busy0
        loads = [x for _, x in self.samples] or [os.getloadavg()[0]]
        self.summary = {
            "wall_s": round(self.wall, 1),
            "our_cpu_cores": round(ours / max(self.wall, 1e-9), 2),
            "other_cpu_cores": round(max(busy - ours, 0) / max(self.wall, 1e-9), 2),
            "load1_mean": round(sum(loads) / len(loads), 2),
            "load1_max": round(max(loads), 2),
        }


class Harness:
    def __init__(self, a):
        self.a = a
        self.cache = Path(a.cache).resolve()
        self.results = self.cache / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.models = self.cache / "models"
        self.bench_py = sys.executable
        self.forge_py = Path(a.forge_venv) / "bin" / "python"
        self.commands: list[dict] = []
        self.steps: dict[str, dict] = {}
        self.t_start = time.time()

    # -- plumbing -------------------------------------------------------------------------------
    def run(self, step: str, argv: list[str], env: dict | None = None, timeout: float | None = None,
            log: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        shown = " ".join(shlex.quote(rel(x) if os.path.isabs(str(x)) else str(x)) for x in argv)
        print(f"[bench] {step}: {shown}", flush=True)
        t = time.time()
        e = {**os.environ, **(env or {})}
        p = subprocess.run([str(x) for x in argv], cwd=ROOT, env=e, text=True, capture_output=True, timeout=timeout)
        self.commands.append({"step": step, "command": shown, "s": round(time.time() - t, 1), "rc": p.returncode})
        if log:
            log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
        if check and p.returncode != 0:
            raise RuntimeError(f"{shown} failed ({p.returncode}): {p.stderr.strip()[-1500:]}")
        return p

    def wait_for_memory(self, need_gib: float, what: str, limit_s: float = 1800) -> None:
        """Big exports need many GB: never start one while another big export (anyone's) runs or
        while the shared machine lacks the memory; wait (up to limit_s) instead."""
        t0 = time.time()
        me = os.getpid()
        while True:
            others = []
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == me:
                    continue
                try:
                    cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    rss = next(int(x.split()[1]) for x in (Path("/proc") / pid / "status").read_text().splitlines()
                               if x.startswith("VmRSS:"))
                except (OSError, StopIteration, ValueError):
                    continue
                if ("forge export" in cmd or "bench.export_models" in cmd or "models.builder" in cmd) and rss > 2 * 2**20:
                    others.append(f"{pid} ({rss // 2**20} GB)")
            avail = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20
            if not others and avail >= need_gib:
                return
            if time.time() - t0 > limit_s:
                print(f"[bench] {what}: still waiting after {limit_s:.0f} s; going ahead", flush=True)
                return
            print(f"[bench] {what}: waiting for memory ({avail:.1f} GiB available, need {need_gib}; "
                  f"other big exports: {', '.join(others) or 'none'})", flush=True)
            time.sleep(20)

    def step(self, name: str, fn):
        if self.a.only and name not in self.a.only.split(","):
            return
        print(f"[bench] === {name}", flush=True)
        with Monitor() as m:
            try:
                res = fn()
                status = "ok"
            except Exception as e:  # a missing part must not stop the other measurements
                res, status = {"error": str(e)}, "error"
                print(f"[bench] {name}: {e}", flush=True)
        res = res or {}
        res.setdefault("status", status)
        res["machine_during_step"] = m.summary
        (self.results / f"{name}.json").write_text(json.dumps(res, indent=1))
        print(f"[bench] {name}: {res.get('status')} in {m.summary['wall_s']} s "
              f"(other processes used {m.summary['other_cpu_cores']} cores)", flush=True)

    def bench_json(self, script: str, out: Path, *args, step: str) -> dict:
        self.run(step, [self.bench_py, "-m", module(script), "--out", out, *args], log=out.with_suffix(".log"))
        return json.loads(out.read_text())

    # -- steps ----------------------------------------------------------------------------------
    def machine(self) -> dict:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info = {}
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache", "Flags",
                             "Hypervisor vendor", "CPU max MHz"):
                info[k.strip()] = v.strip()
        flags = set(info.pop("Flags", "").split())
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags)
        mem = Path("/proc/meminfo").read_text()
        info["mem_total_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", mem).group(1)) / 2**20, 1)
        info["kernel"] = platform.release()
        info["python"] = platform.python_version()
        ort = subprocess.run([self.bench_py, "-c", "import onnxruntime as o, onnxruntime_genai as g; print(o.__version__, g.__version__)"],
                             capture_output=True, text=True).stdout.split()
        info["onnxruntime"], info["onnxruntime_genai"] = (ort + ["?", "?"])[:2]
        info["loadavg_at_start"] = os.getloadavg()
        info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return info

    def bandwidth(self) -> dict:
        exe = self.cache / "triad"
        self.run("bandwidth", ["gcc", "-O3", "-march=native", "-fopenmp", BENCH / "triad.c", "-o", exe])
        out = {}
        for threads in (2, 1):
            p = self.run("bandwidth", [exe, "512", "10" if self.a.quick else "20"], env={"OMP_NUM_THREADS": str(threads)})
            out[f"threads_{threads}"] = json.loads(p.stdout)
        return out

    def forge_hash(self) -> str:
        """What decides the generated graphs: the benchmark's configs (their values, not the whole
        config file, which other configs share) and the forge modules that build, randomise and
        calibrate them. Other forge changes do not invalidate the multi-GB cache."""
        from forge.config import CONFIGS  # plain dataclasses: no torch needed in the bench venv

        h = hashlib.sha256()
        for name in ("autoneural-1.5b", "internvl2-2b-like", "tiny-random"):
            h.update(repr(CONFIGS[name]).encode())
        # model.py is left out on purpose: it changes for training and checkpoint I/O far more often
        # than for the random initialisation (use --regenerate after such a change)
        for name in ("vision.py", "lfm2.py", "images.py"):
            f = ROOT / "forge" / name
            h.update(f.read_bytes() if f.exists() else b"")
        return h.hexdigest()[:16]

    def export(self) -> dict:
        if not self.forge_py.exists():
            raise RuntimeError(f"the forge venv {rel(self.a.forge_venv)} is missing (forge/setup makes it)")
        stamp = self.models / "forge.sha"
        fh = self.forge_hash()
        if self.a.regenerate and self.models.exists():
            shutil.rmtree(self.models)
        if stamp.exists() and stamp.read_text().strip() != fh and not self.a.keep_models:
            print("[bench] the forge's code changed since the cached graphs were made: regenerating", flush=True)
            shutil.rmtree(self.models)
        self.models.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fh)
        ex = ["-m", "bench.export_models"]
        done, failed = [], []

        def vision(cfg, size, quant):
            out = self.models / "vision" / f"{cfg}-{size}"
            want_q = quant and not (out / "w8a16" / "vision.onnx").exists()
            if (out / "export.json").exists() and (out / "vision.onnx").exists() and not want_q:
                return
            self.wait_for_memory(12, f"vision {cfg} {size}")
            argv = [self.forge_py, *ex, "vision", "--config", cfg, "--size", str(size), "--out", out]
            if quant:
                argv += ["--quant", "w8a16"]
            try:
                self.run("export", argv, log=out.parent / f"{cfg}-{size}.log")
                done.append(f"vision {cfg} {size}{' +w8a16' if quant else ''}")
            except RuntimeError as e:
                failed.append({"what": f"vision {cfg} {size}{' +w8a16' if quant else ''}", "error": killed(e)})

        def decoder(cfg, name, graphs, caps, all_attention=False):
            out = self.models / "decoder" / name
            if (out / "export.json").exists():
                return
            self.wait_for_memory(10 if "internvl" in cfg else 12, f"decoder {name}")
            argv = [self.forge_py, *ex, "decoder", "--config", cfg, "--out", out, "--graphs", graphs, "--capacities", caps]
            if all_attention:
                argv.append("--all-attention")
            if "internvl" in cfg:
                argv.append("--lowmem")  # 1.9 B fp32: the exporter's own weight copy would not fit
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.run("export", argv, log=out.parent / f"{name}.log")
                done.append(f"decoder {name}")
            except RuntimeError as e:
                failed.append({"what": f"decoder {name}", "error": killed(e)})

        # W8A16 at 256 px only: ORT's calibrator keeps every intermediate tensor of an image, which
        # at 512 px is more than this shared 24 GB machine has (the MobileNet's calibration was
        # killed by the OOM killer there)
        quant_sizes = {256, 252}
        for cfg, sizes in VISION_SIZES.items():
            for s in sizes[:1] if self.a.quick else sizes:
                vision(cfg, s, s in quant_sizes)
        caps = "256,1024" if self.a.quick else "256,1024,4096"
        decoder("autoneural-1.5b", "lfm2-1.2b-hybrid", "step,prefill,embed", caps)
        decoder("autoneural-1.5b", "lfm2-1.2b-all-attention", "step", caps, all_attention=True)
        if not self.a.quick:
            for cfg, s in TTFT_SIZES.items():
                vision(cfg, s, False)
            decoder("internvl2-2b-like", "internvl2-2b-like", "step,prefill,embed", "1024")
        return {"generated": done, "failed": failed, "forge_sha": fh,
                "cache_bytes": sum(f.stat().st_size for f in self.models.rglob("*") if f.is_file())}

    def vision(self) -> dict:
        budget = "4" if self.a.quick else "15"
        return self.bench_json("bench_vision.py", self.results / "vision_rows.json",
                               "--models", self.models / "vision", "--budget", budget, "--min-n", "3" if self.a.quick else "5",
                               step="vision")

    def decode(self) -> dict:
        caps = "256,1024" if self.a.quick else "256,1024,4096"
        return self.bench_json("bench_decode.py", self.results / "decode_rows.json", "--models", self.models / "decoder",
                               "--capacities", caps, "--budget", "3" if self.a.quick else "8",
                               "--names", "lfm2-1.2b-hybrid,lfm2-1.2b-all-attention", step="decode")

    def ttft(self) -> dict:
        rows, missing = [], []
        tok = ROOT / "models" / "tiny-random" / "tokenizer.json"
        for cfg, dec in (("autoneural-1.5b", "lfm2-1.2b-hybrid"), ("internvl2-2b-like", "internvl2-2b-like")):
            v = self.models / "vision" / f"{cfg}-{TTFT_SIZES[cfg]}" / "vision.onnx"
            d = self.models / "decoder" / dec
            if not v.exists() or not (d / "decoder_prefill.onnx").exists():
                missing.append(f"{cfg}: {rel(v) if not v.exists() else rel(d)} not generated"
                               + (" (--quick skips it)" if self.a.quick else ""))
                continue
            out = self.results / f"ttft_{cfg}.json"
            rows.append(self.bench_json("bench_ttft.py", out, "--name", cfg, "--vision", v, "--decoder", d,
                                        "--tokenizer", tok, "--vision-runs", "1" if self.a.quick else "3",
                                        step="ttft"))
        return {"rows": rows, "missing": missing}

    def genai_builder_env(self, d: Path) -> dict:
        """genai's model builder needs torch + transformers (forge venv) and onnxruntime_genai +
        onnx_ir (bench venv): it runs with the forge's python and only those two packages added to
        its path (links in d/pythonpath)."""
        import sysconfig

        path = d / "pythonpath"
        path.mkdir(parents=True, exist_ok=True)
        for pkg in ("onnxruntime_genai", "onnx_ir"):
            if not (path / pkg).exists():
                (path / pkg).symlink_to(Path(sysconfig.get_paths()["purelib"]) / pkg)
        return {"PYTHONPATH": str(path)}

    def genai(self) -> dict:
        """Builds the genai comparison's inputs (tiny: always; LFM2-1.2B: full mode), then measures."""
        g = self.cache / "genai"
        g.mkdir(parents=True, exist_ok=True)
        if not self.forge_py.exists():
            raise RuntimeError(f"the forge venv {rel(self.a.forge_venv)} is missing (forge/setup makes it)")
        env = self.genai_builder_env(g)
        tok = ROOT / "models" / "tiny-random" / "tokenizer.json"

        def build(config: str, name: str):
            out = g / f"{name}-genai"
            if (out / "genai_config.json").exists():
                return out
            hf = g / f"{name}-hf"
            self.wait_for_memory(14 if name != "tiny" else 1, f"genai build {name}")
            self.run("genai", [self.forge_py, "-m", "bench.genai_hf", "--config", config, "--out", hf, "--tokenizer", tok])
            self.run("genai", [self.forge_py, "-m", "onnxruntime_genai.models.builder", "-i", hf, "-o", out,
                               "-p", "fp32", "-e", "cpu", "-c", g / "builder-cache"], env=env, log=g / f"{name}-builder.log")
            shutil.rmtree(hf, ignore_errors=True)
            shutil.rmtree(g / "builder-cache", ignore_errors=True)
            return out

        static = g / "tiny-static"
        if not (static / "export.json").exists():
            self.run("genai", [self.forge_py, "-m", "bench.export_models", "decoder", "--config", "tiny-random",
                               "--out", static, "--graphs", "step,prefill,embed"])
        tiny = build("tiny-random", "tiny")
        args = ["--work", g, "--tiny-static", static, "--tiny-genai", tiny,
                "--ttft-json", self.results / "ttft_autoneural-1.5b.json", "--decode-json", self.results / "decode_rows.json"]
        if not self.a.quick:
            args += ["--big-genai", build("autoneural-1.5b", "lfm2-1.2b")]
        return self.bench_json("bench_genai.py", self.results / "genai_rows.json", *args, step="genai")

    def rust(self) -> dict:
        """The Rust runtime on the tiny bundle and on a bundle assembled from the cached 1.5B graphs
        (vision at 512 px, the TTFT setting)."""
        bundles = [ROOT / "models" / "tiny-random"]
        big = self.cache / "bundles" / "autoneural-1.5b-512"
        vis = self.models / "vision" / "autoneural-1.5b-512" / "vision.onnx"
        dec = self.models / "decoder" / "lfm2-1.2b-hybrid"
        if not self.a.quick and vis.exists() and (dec / "decoder_prefill.onnx").exists() and self.forge_py.exists():
            if not (big / "manifest.toml").exists():
                self.run("rust", [self.forge_py, "-m", "bench.make_bundle", "--config", "autoneural-1.5b", "--vision", vis,
                                  "--decoder", dec, "--out", big])
            bundles.append(big)
            self.wait_for_memory(12, "rust 1.5B bundle")
        image = ROOT / "models" / "tiny-random" / "golden" / "0.png"
        return self.bench_json("bench_rust.py", self.results / "rust_rows.json",
                               "--bundles", ",".join(str(b) for b in bundles), "--image", image, step="rust")

    def runtime(self) -> dict:
        """The side-by-side runtime benchmark (bench_runtime.py) on LFM2-1.2B random weights: makes
        its models once into CACHE/runtime (runtime_models), builds the Rust examples, then measures
        every runner alone; writes bench/runtime.json and bench/runtime.md."""
        w = self.cache / "runtime"
        self.runtime_models(w)
        self.run("runtime", ["cargo", "build", "--release", "-p", "autoneural-inference", "--example", "runtime_bench",
                             "--example", "preempt_bench"])
        self.run("runtime", [self.bench_py, "-m", "bench.bench_runtime", "run", "--work", w, "--out", BENCH / "runtime.json",
                             "--md", BENCH / "runtime.md"], log=w / "run.log")
        doc = json.loads((BENCH / "runtime.json").read_text())
        return {"markdown": (BENCH / "runtime.md").read_text(), "rows": doc["rows"], "failed": doc["failed"]}

    def runtime_models(self, w: Path) -> None:
        """LFM2-VL-1.6B random weights (forge random-vl: seed 1234) -> our bundle (convert-vl, fp32,
        KV capacity 4224, prefill chunk 128, + cpu-int4 with genai's int4 recipe) and its text decoder as a Hugging Face
        LFM2 checkpoint -> genai's builder (fp32, int4) and llama.cpp's GGUF (Q4_0). ~25 GB."""
        w.mkdir(parents=True, exist_ok=True)
        if not self.forge_py.exists():
            raise RuntimeError(f"the forge venv {rel(self.a.forge_venv)} is missing (forge/setup makes it)")
        hf, bundle, text = w / "hf-1.6b", w / "bundle", w / "lfm2-1.2b-text"
        genai = {p: w / f"genai-{p}" for p in ("fp32", "int4")}
        gguf = w / "gguf" / "model-q4_0.gguf"
        need_text = not gguf.exists() or any(not (d / "genai_config.json").exists() for d in genai.values())
        if not (bundle / "manifest.toml").exists() or (need_text and not (text / "model.safetensors").exists()):
            if not (hf / "model.safetensors").exists():
                self.wait_for_memory(10, "random-vl 1.6b")
                self.run("runtime", [self.forge_py, "-m", "forge", "random-vl", "1.6b", hf], log=w / "random-vl.log")
        if not (bundle / "manifest.toml").exists():
            self.wait_for_memory(16, "convert-vl 1.6b")
            self.run("runtime", [self.forge_py, "-m", "forge", "convert-vl", "--checkpoint", hf, "--out", bundle,
                                 "--quant", "none", "--no-qnn", "--kv-capacity", "4224", "--prefill-chunk", "128"],
                     log=w / "convert-vl.log")
        if "[variants.cpu-int4]" not in (bundle / "manifest.toml").read_text():
            # the recipe of genai's CPU int4 builds (int4 head, int8 activations), so the int4 rows compare runtimes
            self.run("runtime", [self.forge_py, "-m", "forge", "cpu-int4", bundle, "--head", "int4", "--compute", "int8"],
                     log=w / "cpu-int4.log")
        if need_text and not (text / "model.safetensors").exists():
            self.run("runtime", [self.forge_py, "-m", "bench.runtime_text", hf, text])
        for precision, out in genai.items():
            if not (out / "genai_config.json").exists():
                self.wait_for_memory(14, f"genai build {precision}")
                self.run("runtime", [self.forge_py, "-m", "onnxruntime_genai.models.builder", "-i", text, "-o", out,
                                     "-p", precision, "-e", "cpu", "-c", w / "builder-cache"],
                         env=self.genai_builder_env(w), log=w / f"genai-{precision}.log")
                shutil.rmtree(w / "builder-cache", ignore_errors=True)
        llama = w / "llama-venv"
        req = "llama-cpp-python==0.3.36"
        if not (llama / ".requirements").exists() or (llama / ".requirements").read_text() != req:
            print("[bench] runtime: building llama-cpp-python from source (about 9 minutes on 2 cores)", flush=True)
            self.run("runtime", [sys.executable, "-m", "venv", llama])
            self.run("runtime", [llama / "bin/pip", "install", "-q", "--disable-pip-version-check", req, "numpy"],
                     log=w / "llama-venv.log")
            (llama / ".requirements").write_text(req)
        if not gguf.exists():
            self.run("runtime", [llama / "bin/python", BENCH / "llama_gguf.py", "--checkpoint", text, "--out-dir", w / "gguf",
                                 "--cache", w / "llama-src", "--python", self.forge_py], log=w / "gguf.log")

    def camera(self) -> dict:
        md = BENCH / "camera-conversions.md"
        if not md.exists():
            return {"status": "missing", "reason": "bench/camera-conversions.md is not there (the camera crate's conversion benchmark writes it)"}
        return {"status": "ok", "markdown": md.read_text()}

    def cabin(self) -> dict:
        from forge.manifest import load  # standard library only: fine in the bench venv

        man = ROOT / "models" / "autoneural-cabin" / "manifest.toml"
        if not man.exists():
            return {"status": "missing", "reason": "models/autoneural-cabin/ has not landed"}
        m = load(man.parent)
        rows = []
        for variant, v in m.get("variants", {}).items():
            for graph, db in (v.get("sqnr_db") or {}).items():
                rows.append({"variant": variant, "graph": graph, "sqnr_db": db})
        if not rows:
            return {"status": "missing", "reason": f"{rel(man)} carries no sqnr_db"}
        return {"rows": rows, "manifest": rel(man)}

    def daemon(self) -> dict:
        return self.bench_json("bench_daemon.py", self.results / "daemon_rows.json",
                               "--seconds", "60" if self.a.quick else "300", step="daemon")

    def main(self) -> int:
        self.step("machine", self.machine)
        self.step("bandwidth", self.bandwidth)
        self.step("export", self.export)
        self.step("vision", self.vision)
        self.step("decode", self.decode)
        self.step("ttft", self.ttft)
        self.step("genai", self.genai)
        self.step("rust", self.rust)
        self.step("runtime", self.runtime)
        self.step("cabin", self.cabin)
        self.step("camera", self.camera)
        self.step("daemon", self.daemon)
        run = {"quick": self.a.quick, "only": self.a.only, "total_s": round(time.time() - self.t_start, 1),
               "commands": self.commands, "argv": sys.argv[1:]}
        prev = self.results / "run.json"
        if self.a.only and prev.exists():  # a partial run keeps the earlier full run's command list
            old = json.loads(prev.read_text())
            run["commands"] = [c for c in old.get("commands", []) if c["step"] not in self.a.only.split(",")] + self.commands
            run["total_s_full_run"] = old.get("total_s_full_run", old.get("total_s"))
            earlier = old.get("reruns") or ([{"only": old["only"], "total_s": old["total_s"]}] if old.get("only") else [])
            run["reruns"] = earlier + [{"only": self.a.only, "total_s": run["total_s"]}]
        prev.write_text(json.dumps(run, indent=1))
        # A partial run whose cache lacks the other steps' results would turn their sections of the
        # committed report into "not measured": it writes its report beside the cache instead.
        missing = [s for s in ("vision", "decode", "ttft", "genai", "rust", "runtime", "daemon")
                   if not (self.results / f"{s}.json").exists()]
        out = BENCH / "REPORT.md" if not (self.a.only and missing) else self.cache / "REPORT.partial.md"
        subprocess.run([self.bench_py, "-m", "bench.report", "--results", self.results, "--out", out],
                       cwd=ROOT, check=True)
        print(f"[bench] wrote {rel(out)} in {run['total_s']} s"
              + (f" (not bench/REPORT.md: no results here for {', '.join(missing)})" if out != BENCH / "REPORT.md" else ""),
              flush=True)
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="development mode: 256 px only, short timings")
    p.add_argument("--only", default="", help="comma list of steps to rerun (the report uses earlier results for the rest)")
    p.add_argument("--cache", default=str(BENCH / "cache"))
    p.add_argument("--forge-venv", default=os.environ.get("FORGE_VENV", str(ROOT / ".venv-forge")))
    p.add_argument("--keep-models", action="store_true", help="reuse cached graphs even if forge's code changed")
    p.add_argument("--regenerate", action="store_true", help="delete the cached graphs and generate them again")
    return Harness(p.parse_args()).main()


if __name__ == "__main__":
    raise SystemExit(main())
