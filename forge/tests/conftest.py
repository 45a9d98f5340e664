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
