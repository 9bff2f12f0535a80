"""grpo preflight on the tiny untrained model: it cannot answer, so preflight must say so and what to change."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import TINY_RUN
from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.training.trainer import train


def preflight_lines(capsys, tiny_model, *extra) -> tuple[int, list[str], str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["preflight", *TINY_RUN, f"model.name_or_path={tiny_model}", "preflight.num_prompts=6", *extra])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out.splitlines(), captured.err


def test_an_untrained_model_is_below_the_bar_and_strict_exits_1(capsys, tiny_model):
    code, lines, err = preflight_lines(capsys, tiny_model, "--strict")
    assert code == 1
    assert err.splitlines()[-1] == "error: preflight: 0% of groups had a positive reward (< 30%); see the fixes above"
    assert lines[0] == "preflight: 6 training prompts x G=4"
    # 24 tokens of noise: no group has a correct answer (and the length penalty makes every reward negative).
    assert lines[1] == "  groups with a positive reward  0.0%  (bar > 30%: TOO FEW)"
    assert lines[4] == "  parse failures                 100.0%"
    phases = [line.split()[0] for line in lines if "peak memory" in line]
    assert phases == ["sample", "verify", "learn"]
    projected = next(line for line in lines if "projected run" in line)
    # data.num_train=400 prompts, 4 per step, 1 epoch: 100 steps, capped at the demo's train.max_steps=80;
    # evals at the start and the end.
    assert projected.startswith("  projected run: 80 steps x ") and " + 2 evals x " in projected
    fixes = [line for line in lines if line.startswith("  fix: ")]
    assert any("raise algorithm.group_size (now 4)" in line for line in fixes)
    assert any("raise sampler.temperature (now 1)" in line for line in fixes)
    assert any("easier data" in line for line in fixes)
    assert any("sampler.max_new_tokens=24: raise it" in line for line in fixes)

    code, _, err = preflight_lines(capsys, tiny_model)
    assert code == 0 and "error" not in err  # without --strict it only reports


@pytest.fixture
def always_rewarded(tmp_path, monkeypatch):
    """A custom reward that pays every completion 1: every group has a positive reward."""
    (tmp_path / "flat_reward.py").write_text("def one(completion, answer):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["verifier.rewards.custom=flat_reward:one", "verifier.rewards.custom_weight=1.0",
            "verifier.rewards.length_penalty=0.0", "sampler.max_new_tokens=8"]


def test_a_task_above_the_bar_passes_strict_with_no_advice(capsys, tiny_model, always_rewarded):
    code, lines, err = preflight_lines(capsys, tiny_model, "--strict", *always_rewarded)
    assert code == 0, err
    assert lines[1] == "  groups with a positive reward  100.0%  (bar > 30%: ok)"
    assert lines[2] == "  zero-variance groups           100.0%"  # identical rewards: no gradient, but a signal
    assert lines[3].startswith("  mean reward                    1.000")
    assert [line for line in lines if "fix:" in line and "max_new_tokens" not in line] == []


def test_train_runs_preflight_before_step_1_without_changing_the_model(capsys, tiny_model, tmp_path):
    def run(out, *extra):
        train(compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=1",
                       *extra]))
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    with_preflight = run(tmp_path / "a", "train.preflight=true")
    assert "groups with a positive reward" in capsys.readouterr().err
    without = run(tmp_path / "b")
    # Preflight discards its gradients: step 1 samples and learns exactly as it would have.
    assert with_preflight[0]["reward/mean"] == without[0]["reward/mean"]
    assert with_preflight[0]["loss"] == pytest.approx(without[0]["loss"], rel=1e-6)


def test_cpu_peak_memory_is_the_process_own_not_its_parents():
    # ru_maxrss starts at the parent's peak (Linux carries it across exec): a command started by a process that
    # once held 1 GiB more would report at least that.
    held = torch.ones(2**28)  # 1 GiB, written
    script = "import torch; from grpo_cli.diagnostics.preflight import peak_memory_gib; print(peak_memory_gib(torch.device('cpu')))"
    child = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    del held
    assert 0.05 < child < 1.0  # torch and grpo_cli imported: a few hundred MiB
