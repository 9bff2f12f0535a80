"""The CPU demo learns: `make demo`'s three commands, run into a temporary directory (about 15 minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import GRPO


@pytest.mark.slow
def test_demo_grpo_raises_pass_at_1_by_ten_points(tmp_path):
    paths = [
        f"sft.init_from={tmp_path / 'init'}",
        f"sft.output_dir={tmp_path / 'sft'}",
        f"model.name_or_path={tmp_path / 'sft'}",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    # As `make demo` runs: torch's default threads (conftest sets OMP_NUM_THREADS=1 for the tiny test models).
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    started = time.monotonic()
    for command in ("init-model", "sft", "train"):
        subprocess.run([GRPO, command, "recipe=demo", *paths], check=True, env=env)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    print(f"demo: {time.monotonic() - started:.0f}s, {summary}")
    assert evals[0]["num_prompts"] >= 200 and evals[0]["step"] == 0
    assert (evals[0]["num_samples"], evals[0]["temperature"]) == (evals[-1]["num_samples"], evals[-1]["temperature"])
    assert summary["pass@1_after"] - summary["pass@1_before"] >= 0.10


@pytest.mark.slow
def test_demo_hard_raises_pass_at_1_and_charts_pass_at_k_for_k_1_to_12(tmp_path):
    """`make demo-hard`'s commands (about 25 minutes): pass@1 up by ten points, pass@k before and after for
    every k from 1 to 12 in summary.json, and their chart as a PNG in the report."""
    paths = [
        f"sft.init_from={tmp_path / 'init'}",
        f"sft.output_dir={tmp_path / 'sft'}",
        f"model.name_or_path={tmp_path / 'sft'}",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    started = time.monotonic()
    for command in ("init-model", "sft", "train"):
        subprocess.run([GRPO, command, "recipe=demo_hard", *paths], check=True)
    subprocess.run([GRPO, "report", str(tmp_path / "run")], check=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    print(f"demo-hard: {time.monotonic() - started:.0f}s, {summary}")
    for when in ("before", "after"):
        curve = [summary[f"pass@{k}_{when}"] for k in range(1, 13)]
        assert curve == sorted(curve), (when, curve)  # pass@k cannot fall as k grows
    assert summary["pass@1_after"] - summary["pass@1_before"] >= 0.10
    assert (tmp_path / "run" / "report" / "pass_at_k_curve.png").stat().st_size > 5000
