"""autoneurald on the demo scenario for a fixed time with one HMI question per second: capture ->
observation latency per stage (p50/p99), sustained frame rate, CPU % and RSS, degradation events."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import write_json

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    bins = [ROOT / "daemon" / "src" / "bin" / "autoneurald.rs", ROOT / "daemon" / "src" / "bin" / "autoneuralctl.rs"]
    if not all(b.exists() for b in bins):
        write_json(Path(a.out), {"status": "missing", "reason": "the daemon (autoneurald, autoneuralctl) has not landed"})
        return 0
    write_json(Path(a.out), {"status": "missing", "reason": "the daemon has landed but this benchmark does not drive it yet"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
