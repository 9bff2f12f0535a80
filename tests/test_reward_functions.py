"""Reward functions of verifier.rewards.custom: TRL's batch form beside the per-completion one, weights, None,
the columns and token ids they see, and one-line errors naming the function that failed."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from grpo_cli.algo.rewards import per_component_rewards
from grpo_cli.config import RewardConfig, VerifierConfig
from grpo_cli.data import Example
from grpo_cli.errors import ConfigError, GrpoError
from grpo_cli.monitoring.metrics import completion_metrics
from grpo_cli.sampler.base import Completion
from grpo_cli.verifier import build_verifier
from grpo_cli.verifier.edge_cases import check_at_start
from grpo_cli.verifier.rewards import batch_arguments, batch_failure, call_batched, reward_functions


@pytest.fixture
def batch_rewards(tmp_path, monkeypatch):
    """A user's module of reward functions on sys.path (the workers receive the parent's sys.path)."""
    (tmp_path / "batch_rewards.py").write_text(textwrap.dedent("""
        import time

        def seen(prompts, completions, completion_ids, trainer_state, difficulty, **kwargs):
            # Encodes what it was given: the step, the difficulty, the token count, a chat completion (+0.5).
            return [None if d is None else trainer_state.global_step * 100 + d * 10 + len(ids) + 0.5 * isinstance(c, list)
                    for c, ids, d in zip(completions, completion_ids, difficulty)]

        def brevity(completion, answer):
            return 1.0 if len(completion) < 10 else 0.0

        def raises(completions, **kwargs):
            return [{}[completion] for completion in completions]

        def one_short(completions, **kwargs):
            return [1.0] * (len(completions) - 1)

        def text_entry(completions, **kwargs):
            return ["1.0" for _ in completions]

        def slow(completions, **kwargs):
            time.sleep(5)

        def two_arguments(x):
            return 0.0

        def mean(completions, **kwargs):
            return [0.0 for _ in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))


def verifier_with(*functions: str, weights=None, **settings):
    rewards = RewardConfig(custom=list(functions), **({"custom_weight": weights} if weights is not None else {}))
    return build_verifier(VerifierConfig(extract="final_line", num_workers=2, rewards=rewards, **settings))


def test_batch_functions_see_prompts_columns_token_ids_and_the_step(batch_rewards):
    chat = Example("c", [{"role": "user", "content": "1 + 1?"}], "2", columns={"answer": "2", "difficulty": 3})
    plain = Example("p", "1 + 2?", "3", columns={"answer": "3", "difficulty": None})
    with verifier_with("batch_rewards:seen", "batch_rewards:brevity", weights=[0.01, 2.0]) as verifier:
        chat_score, plain_score = verifier.score(
            ["FINAL: 2", "a longer way\nFINAL: 4"], ["2", "3"], step=7, examples=[chat, plain], completion_ids=[[5, 6], [1, 2, 3, 4]]
        )
    # seen: 7 x 100 + 3 x 10 + 2 tokens + 0.5 for the chat completion; None for the row without a difficulty.
    assert chat_score.by_function == {"seen": 732.5, "brevity": 1.0}
    assert chat_score.reward == pytest.approx(1.0 + 0.01 * 732.5 + 2.0 * 1.0)
    assert chat_score.components["custom"] == pytest.approx(9.325)
    assert plain_score.by_function == {"seen": None, "brevity": 0.0}
    assert (plain_score.reward, plain_score.reason) == (0.0, "wrong")  # None adds 0


def test_one_weight_for_all_and_the_single_string_form(batch_rewards):
    with build_verifier(VerifierConfig(extract="final_line", rewards=RewardConfig(custom="batch_rewards:brevity", custom_weight=0.5))) as verifier:
        [score] = verifier.score(["FINAL: 1"], ["1"])
    assert (score.reward, score.by_function) == (1.5, {"brevity": 1.0})


@pytest.mark.parametrize(("function", "problem"), [
    ("raises", "raised KeyError: 'FINAL: 1'"),
    ("one_short", "returned 1 values for 2 completions; return a list with one float or None each"),
    ("text_entry", "returned '1.0' for completion 0; each entry must be a finite number or None"),
])
def test_what_a_batch_function_did_wrong_is_said_in_one_line(batch_rewards, function, problem):
    [reward] = reward_functions(RewardConfig(custom=[f"batch_rewards:{function}"]))
    failure = call_batched(reward, batch_arguments(["FINAL: 1", "FINAL: 2"], ["", ""], [{}, {}], [[], []], 0))
    assert str(batch_failure(reward, failure, 2, 1.0)) == f"verifier.rewards.custom[0]='batch_rewards:{function}' {problem}"


def test_a_failing_batch_function_stops_the_scoring_with_its_error(batch_rewards):
    with verifier_with("batch_rewards:raises", timeout_s=0.3) as verifier:
        with pytest.raises(GrpoError, match=r"^verifier.rewards.custom\[0\]='batch_rewards:raises' raised KeyError"):
            verifier.score(["FINAL: 1", "FINAL: 2"], ["1", "2"])
    with verifier_with("batch_rewards:slow", timeout_s=0.3) as verifier:
        with pytest.raises(GrpoError, match=r"^verifier.rewards.custom\[0\]='batch_rewards:slow' did not return within 0.6 s "
                                            r"\(verifier.timeout_s=0.3 per completion, 2 completions\); make it faster"):
            verifier.score(["FINAL: 1", "FINAL: 2"], ["1", "2"])


@pytest.mark.parametrize(("functions", "message"), [
    (["batch_rewards:two_arguments"], r"custom\[0\]='batch_rewards:two_arguments': takes neither fn\(completion, answer\) nor TRL's"),
    (["batch_rewards:brevity", "batch_rewards:brevity"], r"custom\[1\]=.*its name 'brevity' would log as reward/brevity, which another function"),
    (["batch_rewards:mean"], r"its name 'mean' would log as reward/mean, which another metric uses; rename the function"),
])
def test_functions_that_cannot_be_told_apart_are_config_errors(batch_rewards, functions, message):
    with pytest.raises(ConfigError, match=message):
        build_verifier(VerifierConfig(rewards=RewardConfig(custom=functions)))


def test_the_edge_battery_runs_batch_functions_and_names_the_one_that_crashed(batch_rewards):
    example = Example("e", "Q", "42", columns={"answer": "42", "difficulty": 1})
    assert check_at_start(VerifierConfig(extract="final_line", rewards=RewardConfig(custom=["batch_rewards:seen"])), example) == []
    with pytest.raises(GrpoError, match=r"crashed on the edge case 'right answer': batch_rewards:raises raised KeyError"):
        check_at_start(VerifierConfig(extract="final_line", rewards=RewardConfig(custom=["batch_rewards:raises"])), example)


def test_reward_name_means_leave_out_none():
    from grpo_cli.verifier.score import Score

    completions = [Completion([1, 2], [0.0, 0.0], "x", "stop")] * 3
    scores = [Score(1.0, True, "1", "correct", by_function={"f": value, "g": None}) for value in (1.0, None, 0.5)]
    metrics = completion_metrics(completions, scores)
    assert (metrics["reward/f"], metrics["reward/g"]) == (0.75, None)


def test_per_component_normalization_leaves_out_none():
    """Group of 3, two components: the second has no value (NaN) for the middle completion."""
    nan = math.nan
    components = torch.tensor([[1.0, 2.0], [0.0, nan], [0.0, 4.0]], dtype=torch.float64)
    rewards = per_component_rewards(components, torch.tensor([1.0, 0.5]), 3, 0.0)
    # first: mean 1/3, unbiased std sqrt(1/3); second over {2, 4}: mean 3, std sqrt(2), the None adds 0.
    first = [(x - 1 / 3) / math.sqrt(1 / 3) for x in (1.0, 0.0, 0.0)]
    second = [(2 - 3) / math.sqrt(2), 0.0, (4 - 3) / math.sqrt(2)]
    assert rewards.tolist() == pytest.approx([a + 0.5 * b for a, b in zip(first, second)])
    # Without NaN the result is unchanged from plain mean and std.
    full = torch.tensor([[1.0, 2.0], [0.0, 3.0], [0.0, 4.0]], dtype=torch.float64)
    plain = (full - full.mean(0)) / full.std(0)
    assert per_component_rewards(full, torch.tensor([1.0, 0.5]), 3, 0.0).tolist() == pytest.approx((plain[:, 0] + 0.5 * plain[:, 1]).tolist())
