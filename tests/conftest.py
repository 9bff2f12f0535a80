import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = REPO.parent / "shared" / "data" / "gsm8k"
GRPO = str(Path(sys.executable).parent / "grpo")

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine a second thread only thrashes.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def repo() -> Path:
    return REPO
