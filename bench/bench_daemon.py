"""autoneurald on the demo scenario (examples/demo.toml: synthetic camera, the default model on the
CPU) for a fixed time on a private bus, with one HMI question per second (`autoneuralctl ask`):
per-stage latency p50/p99 (the daemon's Diagnostics.Latency), sustained frame rate
(Diagnostics.FramesProcessed over the run), CPU % and RSS of the daemon (/proc), the answers'
round-trip times, and every change of the degradation level."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import write_json

ROOT = Path(__file__).resolve().parents[1]
NAME = "org.autoneural.Cockpit1"
PATH = "/org/autoneural/Cockpit1"
DIAG = "org.autoneural.Cockpit1.Diagnostics"
QUESTIONS = ["Is the driver looking at the road?", "Is the driver using a phone?", "Is the driver wearing the seat belt?",
             "Is there a passenger?"]


def bench_config(demo: Path, out: Path) -> None:
    """The demo config with the scenario looping (so a 5-minute run has frames throughout) and
    absolute paths (the daemon resolves them relative to the config file)."""
    text = demo.read_text()
    text = re.sub(r'(?m)^end_of_stream\s*=.*$', "", text)
    text = re.sub(r'(?m)^loop\s*=.*$', "", text)
    text = text.replace("[camera]\n", "[camera]\nloop = true\n", 1)

    def absolute(m):
        p = m.group(2)
        return f'{m.group(1)}"{(demo.parent / p).resolve()}"' if not p.startswith("/") else m.group(0)

    text = re.sub(r'(?m)^(bundle\s*=\s*)"([^"]+)"', absolute, text)
    text = re.sub(r'(?m)^(rules\s*=\s*)"([^"]+)"', absolute, text)
    out.write_text(text)


def busctl(addr: str, *args: str) -> str:
    r = subprocess.run(["busctl", f"--address={addr}", "--json=short", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return r.stdout


def prop(addr: str, iface: str, name: str):
    return json.loads(busctl(addr, "get-property", NAME, PATH, iface, name))["data"]


def proc_cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    demo = ROOT / "examples" / "demo.toml"
    bins = [ROOT / "daemon" / "src" / "bin" / "autoneurald.rs", ROOT / "daemon" / "src" / "bin" / "autoneuralctl.rs"]
    if not all(b.exists() for b in bins) or not demo.exists():
        write_json(Path(a.out), {"status": "missing", "reason": "the daemon (autoneurald, autoneuralctl, examples/demo.toml) has not landed"})
        return 0
    for tool in ("dbus-daemon", "busctl"):
        if not shutil.which(tool):
            write_json(Path(a.out), {"status": "error", "reason": f"{tool} is not installed (scripts/setup installs dbus)"})
            return 0
    env = {**os.environ, "AUTONEURAL_VENV": str(ROOT / ".venv")}
    t = time.time()
    b = subprocess.run(["cargo", "build", "--release", "--locked", "-p", "autoneural-daemon"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if b.returncode != 0:
        write_json(Path(a.out), {"status": "error", "reason": f"cargo build --release -p autoneural-daemon failed: {b.stderr[-600:]}"})
        return 0
    build_s = time.time() - t
    target = Path(os.environ.get("CARGO_TARGET_DIR", "")) if os.environ.get("CARGO_TARGET_DIR") else None
    if target is None:
        meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
                                         capture_output=True, text=True).stdout)
        target = Path(meta["target_directory"])
    daemon_bin, ctl_bin = target / "release" / "autoneurald", target / "release" / "autoneuralctl"

    res: dict = {"seconds": a.seconds, "build_s": round(build_s, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = tmp / "bench.toml"
        bench_config(demo, cfg)
        res["config"] = cfg.read_text()
        sock = tmp / "bus"
        bus = subprocess.Popen(["dbus-daemon", "--session", f"--address=unix:path={sock}", "--nofork", "--print-address"],
                               stdout=subprocess.PIPE, text=True)
        addr = bus.stdout.readline().strip()
        denv = {**env, "DBUS_SESSION_BUS_ADDRESS": addr}
        log = open(tmp / "daemon.log", "w")
        d = subprocess.Popen([str(daemon_bin), "--config", str(cfg)], env=denv, stdout=log, stderr=subprocess.STDOUT)
        try:
            t0 = time.time()
            while True:
                try:
                    prop(addr, DIAG, "FramesProcessed")
                    break
                except RuntimeError:
                    if d.poll() is not None or time.time() - t0 > 120:
                        raise RuntimeError(f"autoneurald did not come up: {(tmp / 'daemon.log').read_text()[-800:]}")
                    time.sleep(0.5)
            res["startup_s"] = round(time.time() - t0, 1)
            time.sleep(5)  # warm-up: first frames, caches
            f0, c0, w0 = prop(addr, DIAG, "FramesProcessed"), proc_cpu_s(d.pid), time.time()
            d0 = prop(addr, DIAG, "FramesDropped")
            asks, samples, events = [], [], []
            level = (prop(addr, DIAG, "DegradationLevel"), prop(addr, DIAG, "DegradationReason"))
            events.append({"t": 0.0, "level": level[0], "reason": level[1]})
            # One thread per question, timed from launch to the answer (autoneuralctl's start-up included).
            askers: list[threading.Thread] = []
            lock = threading.Lock()

            def ask(question: str) -> None:
                t_ask = time.time()
                try:
                    r = subprocess.run([str(ctl_bin), "--address", addr, "ask", question], capture_output=True,
                                       text=True, timeout=30)
                    rec = {"s": time.time() - t_ask, "ok": r.returncode == 0, "err": r.stderr.strip()[-200:]}
                except subprocess.TimeoutExpired:
                    rec = {"s": None, "ok": False, "err": "no answer within 30 s"}
                with lock:
                    asks.append(rec)

            i = 0
            while time.time() - w0 < a.seconds:
                tick = time.time()
                q = QUESTIONS[i % len(QUESTIONS)]
                i += 1
                askers.append(threading.Thread(target=ask, args=(q,), daemon=True))
                askers[-1].start()
                samples.append({"t": tick - w0, "cpu_s": proc_cpu_s(d.pid), "rss_mb": proc_rss_mb(d.pid)})
                now = (prop(addr, DIAG, "DegradationLevel"), prop(addr, DIAG, "DegradationReason"))
                if now != level:
                    level = now
                    events.append({"t": round(tick - w0, 1), "level": now[0], "reason": now[1]})
                time.sleep(max(0.0, 1.0 - (time.time() - tick)))
            w1 = time.time()
            f1, c1, d1 = prop(addr, DIAG, "FramesProcessed"), proc_cpu_s(d.pid), prop(addr, DIAG, "FramesDropped")
            latency = prop(addr, DIAG, "Latency")
            for th in askers:
                th.join(timeout=35)
        finally:
            d.send_signal(signal.SIGTERM)
            try:
                d.wait(timeout=20)
            except subprocess.TimeoutExpired:
                d.kill()
            bus.terminate()
            log.close()
        res["daemon_log_tail"] = (tmp / "daemon.log").read_text()[-1500:]
    dur = w1 - w0
    ok = [x["s"] for x in asks if x["ok"] and x["s"] is not None]
    rss = [x["rss_mb"] for x in samples]
    res.update({
        "status": "ok",
        "fps": round((f1 - f0) / dur, 2), "frames": f1 - f0, "frames_dropped": d1 - d0,
        "cpu_percent": round(100 * (c1 - c0) / dur, 1),
        "rss_mb_median": round(float(np.median(rss)), 1), "rss_mb_max": round(max(rss), 1),
        "rss_mb_first": round(rss[0], 1), "rss_mb_last": round(rss[-1], 1),
        "latency": [{"stage": s, "p50_ms": p50, "p99_ms": p99, "samples": n} for s, p50, p99, n in latency],
        "asks": len(asks), "asks_ok": len(ok),
        "ask_p50_ms": round(1e3 * float(np.median(ok)), 1) if ok else None,
        "ask_p99_ms": round(1e3 * float(np.percentile(ok, 99)), 1) if ok else None,
        "ask_errors": sorted({x["err"] for x in asks if not x["ok"]})[:5],
        "degradation_events": events,
    })
    res["markdown"] = markdown(res)
    write_json(Path(a.out), res)
    return 0


def markdown(r: dict) -> str:
    out = [f"`autoneurald` with `examples/demo.toml` (synthetic phone-use scenario looping, the default bundle on "
           f"the CPU) on a private dbus-daemon for {r['seconds']} s after a 5 s warm-up, `autoneuralctl ask` once a "
           "second (questions rotating), daemon sampled once a second.", "",
           "| stage (Diagnostics.Latency) | p50 ms | p99 ms | samples |", "|---|---|---|---|"]
    out += [f"| {x['stage']} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | {x['samples']} |" for x in r["latency"]]
    out += ["", "| | |", "|---|---|",
            f"| sustained frame rate | {r['fps']} frames/s ({r['frames']} processed, {r['frames_dropped']} dropped by latest-frame-wins) |",
            f"| CPU | {r['cpu_percent']} % of one core (2 cores = 200 %) |",
            f"| RSS | median {r['rss_mb_median']} MB, max {r['rss_mb_max']} MB (first {r['rss_mb_first']}, last {r['rss_mb_last']}) |",
            f"| HMI questions | {r['asks_ok']} of {r['asks']} answered; round trip p50 {r['ask_p50_ms']} ms, p99 {r['ask_p99_ms']} ms |",
            f"| start-up (process start -> on the bus) | {r['startup_s']} s |", ""]
    if r["ask_errors"]:
        out += ["Errors seen by `autoneuralctl ask`: " + "; ".join(f"`{e}`" for e in r["ask_errors"]), ""]
    out.append("Degradation level over the run: " + ", ".join(
        f"t={e['t']} s {e['level']}" + (f" ({e['reason']})" if e["reason"] else "") for e in r["degradation_events"]))
    return "\n".join(out)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RuntimeError as e:  # the daemon failing is a finding for the report, not a crash
        out = Path(__import__("sys").argv[__import__("sys").argv.index("--out") + 1])
        write_json(out, {"status": "error", "reason": str(e)[-1500:]})
