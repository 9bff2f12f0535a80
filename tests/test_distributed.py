"""Data-parallel runs under torchrun on CPU (gloo): 2 ranks against 1 process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_learner_worker as worker

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def torchrun(args: list[str], nproc: int = 2, timeout: float = 240, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --nproc-per-node nproc ARGS` with this checkout's source first."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist") / "two.pt"
    result = torchrun([str(TESTS / "distributed_learner_worker.py"), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("case", worker.CASES, ids=[f"{agg}-{'lora' if lora else 'full'}" for agg, lora in worker.CASES])
def test_two_ranks_match_one_process_on_the_same_global_batch(case, two_rank_results):
    one, two = worker.run(*case, rank=0, size=1), two_rank_results[case]
    for key in ("loss", "grad_norm", "kl", "ratio_min", "entropy"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
    assert one["loss"][1] != one["loss"][0] and one["kl"][2] > 0  # the steps changed the policy
    assert one["weights"].keys() == two["weights"].keys()
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], weight, atol=5e-5, rtol=1e-4, msg=name)
