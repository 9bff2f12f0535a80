"""A run killed with SIGKILL mid-training and resumed ends where an uninterrupted run ends (slow)."""

import json
import signal
import subprocess
import time

import pytest

from conftest import GRPO, TINY_RUN
from grpo_cli.training import checkpoint

pytestmark = pytest.mark.slow

STEPS = 8


def grpo_train(model, out, *extra):
    args = [*TINY_RUN, f"model.name_or_path={model}", f"train.output_dir={out}", f"train.max_steps={STEPS}",
            "train.save_every=2", "train.eval_every=4", *extra]
    return [GRPO, "train", *args]


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_model, tmp_path):
    model = tiny_model

    straight = tmp_path / "straight"
    subprocess.run(grpo_train(model, straight), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(grpo_train(model, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        last = checkpoint.read_pointer(killed / "checkpoints", "last")
        if last is not None and last.name >= "step_000004":
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint.read_pointer(killed / "checkpoints", "last").name
    assert killed_at < f"step_{STEPS:06d}", "the run finished before it could be killed"

    resumed = subprocess.run(grpo_train(model, killed, "resume=true"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr

    a, b = records(straight / "metrics.jsonl"), records(killed / "metrics.jsonl")
    assert [m["step"] for m in b] == list(range(1, STEPS + 1))
    # Same prompts, same sampling seeds, same optimizer state: the resumed steps repeat the straight run's.
    assert [m["reward/mean"] for m in b] == pytest.approx([m["reward/mean"] for m in a], abs=1e-6)
    summary_a = json.loads((straight / "summary.json").read_text())
    summary_b = json.loads((killed / "summary.json").read_text())
    assert summary_b["steps"] == summary_a["steps"] == STEPS
    assert summary_b["pass@1_after"] == pytest.approx(summary_a["pass@1_after"], abs=0.05)
    assert [e["step"] for e in records(killed / "evals.jsonl")] == [0, 4, 8]
