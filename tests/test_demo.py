"""The CPU demo learns: `make demo`'s three commands, run into a temporary directory (about 15 minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import GRPO


def run_demo(recipe: str, tmp_path) -> dict:
    """`make demo`'s (or demo-hard's) commands for `recipe` into tmp_path; its summary.json (the time is printed).
    They run as the make targets do, on torch's default threads (conftest sets OMP_NUM_THREADS=1 for the tiny
    test models)."""
    paths = [
        f"sft.init_from={tmp_path / 'init'}",
        f"sft.output_dir={tmp_path / 'sft'}",
        f"model.name_or_path={tmp_path / 'sft'}",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    started = time.monotonic()
    for command in ("init-model", "sft", "train"):
        subprocess.run([GRPO, command, f"recipe={recipe}", *paths], check=True, env=env)
    subprocess.run([GRPO, "report", str(tmp_path / "run")], check=True, env=env)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    print(f"{recipe}: {time.monotonic() - started:.0f}s, {summary}")
    return summary


@pytest.mark.slow
def test_demo_grpo_raises_pass_at_1_by_ten_points(tmp_path):
    summary = run_demo("demo", tmp_path)
    evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert evals[0]["num_prompts"] >= 200 and evals[0]["step"] == 0
    assert (evals[0]["num_samples"], evals[0]["temperature"]) == (evals[-1]["num_samples"], evals[-1]["temperature"])
    assert summary["pass@1_after"] - summary["pass@1_before"] >= 0.10


@pytest.mark.slow
def test_demo_hard_raises_pass_at_1_and_charts_pass_at_k_for_k_1_to_12(tmp_path):
    """`make demo-hard`'s commands: pass@1 up by ten points, pass@k before and after for every k from 1 to 12
    in summary.json, and their chart as a PNG in the report."""
    summary = run_demo("demo_hard", tmp_path)
    for when in ("before", "after"):
        curve = [summary[f"pass@{k}_{when}"] for k in range(1, 13)]
        assert curve == sorted(curve), (when, curve)  # pass@k cannot fall as k grows
    assert summary["pass@1_after"] - summary["pass@1_before"] >= 0.10
    assert (tmp_path / "run" / "report" / "pass_at_k_curve.png").stat().st_size > 5000
