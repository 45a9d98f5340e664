import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `import forge` from the repository root, wherever pytest runs
torch.set_num_threads(int(os.environ.get("FORGE_THREADS", "2")))


@pytest.fixture(scope="session")
def committed_bundle() -> Path:
    return ROOT / "models" / "tiny-random"


@pytest.fixture(scope="session")
def json_close():
    """Asserts two JSON texts equal, floats within 1e-6 (ints, strings and token ids exactly): golden
    cases rewritten by a graph edit that moves float rounding only."""

    def close(got, want, where="json"):
        if isinstance(want, float):
            assert got == pytest.approx(want, abs=1e-6), where
        elif isinstance(want, dict):
            assert got.keys() == want.keys(), where
            for k in want:
                close(got[k], want[k], f"{where}.{k}")
        elif isinstance(want, list):
            assert len(got) == len(want), where
            for i, (x, y) in enumerate(zip(got, want)):
                close(x, y, f"{where}[{i}]")
        else:
            assert got == want, where

    return lambda got, want: close(json.loads(got), json.loads(want))
