"""The reward edge-case battery: built-in verifiers pass it, a custom reward that divides by zero is caught."""

import math
import os
import sys

import pytest

from conftest import TINY_RUN
from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.config import VerifierConfig
from grpo_cli.errors import GrpoError
from grpo_cli.verifier.edge_cases import edge_cases, run_edge_cases

TESTS = os.path.dirname(__file__)


@pytest.fixture(autouse=True)
def custom_rewards_importable(monkeypatch):
    monkeypatch.syspath_prepend(TESTS)  # the workers re-import tests/edge_rewards.py by module name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, *sys.path]))


EXPECTED_CASES = [
    "right answer", "empty", "whitespace only", "1 MB of text", "only a marker", "marker with nothing after it",
    "control characters", "invalid UTF-8 (surrogates)", "malformed JSON", "divides by zero", "overflows",
    "nested LaTeX 10,000 deep", "answer on the wrong line",
]


@pytest.mark.parametrize("extract", ["final_line", "auto", "boxed", "gsm8k", "answer_is", "last_number"])
def test_the_math_verifier_passes_the_battery(extract):
    outcomes = run_edge_cases(VerifierConfig(name="math", extract=extract, timeout_s=1.0))
    assert [o.case for o in outcomes] == EXPECTED_CASES
    assert [o.failure for o in outcomes if not o.passed] == []
    assert all(math.isfinite(o.reward) for o in outcomes)
    # Only the right answer scores (and, reading the last number wherever it is, the answer on the wrong line).
    rewarded = {o.case for o in outcomes if o.reward > 0}
    assert rewarded == {"right answer"} | ({"answer on the wrong line"} if extract == "last_number" else set())


def test_the_code_verifier_passes_the_battery():
    outcomes = run_edge_cases(VerifierConfig(name="code", timeout_s=10.0))
    assert [o.failure for o in outcomes if not o.passed] == []
    assert {o.case for o in outcomes if o.reward > 0} == {"right answer"}
    # The program holding lone surrogates is written with "?" for them: it fails to run, the check survives.
    assert next(o for o in outcomes if o.case == "invalid UTF-8 (surrogates)").reason == "wrong"


def test_the_cases_put_the_answer_where_the_verifier_reads_it():
    _, cases = edge_cases(VerifierConfig(extract="final_line", marker="ANSWER:"))
    by_name = {case.name: case for case in cases}
    assert by_name["right answer"].completion.endswith("\nANSWER: 42")
    assert by_name["only a marker"].completion == "ANSWER:"
    assert by_name["answer on the wrong line"].completion == "ANSWER: 41\n42"
    assert len(by_name["1 MB of text"].completion) == 1_000_000
    assert by_name["nested LaTeX 10,000 deep"].completion.count("\\frac{1}{") == 10_000


def test_a_custom_reward_that_divides_by_zero_fails_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--edge-cases", "verifier.extract=final_line", "verifier.rewards.custom=edge_rewards:ratio_of_digits"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "empty" in captured.out and "FAILED: edge_rewards:ratio_of_digits raised ZeroDivisionError" in captured.out
    assert "edge cases failed: empty: edge_rewards:ratio_of_digits raised ZeroDivisionError: division by zero" in captured.err
    # Completions with digits are fine: only the digit-free ones fail.
    assert "right answer" not in captured.err.split("failed:")[1]


def test_a_well_behaved_custom_reward_passes_and_shows_in_the_reward(capsys):
    main(["verify", "--edge-cases", "verifier.extract=final_line", "verifier.rewards.custom=edge_rewards:length_bonus"])
    captured = capsys.readouterr()
    assert "all 13 edge cases passed" in captured.err
    assert [line.split()[-3] for line in captured.out.splitlines() if line.startswith("empty")] == ["0.000"]
    assert [line.split()[-3] for line in captured.out.splitlines() if line.startswith("right answer")] == ["1.038"]  # 1 + len("Working it out step by step.\nFINAL: 42") / 1000


def test_train_refuses_to_start_naming_the_case(tiny_model, tmp_path):
    from grpo_cli.training.trainer import train

    config = compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={tmp_path / 'run'}",
                      "verifier.rewards.custom=edge_rewards:ratio_of_digits"])
    with pytest.raises(GrpoError, match=r"verifier.rewards.custom crashed on the edge case 'empty': edge_rewards:ratio_of_digits raised ZeroDivisionError"):
        train(config)
    assert not (tmp_path / "run").exists()
