import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = REPO.parent / "shared" / "data" / "gsm8k"
GRPO = str(Path(sys.executable).parent / "grpo")

# Tests share 2 cores with each other's subprocesses; more threads only thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def repo() -> Path:
    return REPO
