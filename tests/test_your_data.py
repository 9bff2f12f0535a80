"""Your data, your rewards: two GRPO steps on the tiny model from parquet (chat prompts), CSV and a save_to_disk
folder, scored by reward functions written for TRL's GRPOTrainer (tests/trl_rewards.py), one of them reading an
extra column and returning None for rows without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.data.harbor import generate
from grpo_cli.training.trainer import train

TESTS = str(Path(__file__).resolve().parent)
SYSTEM = "Work it out, then give the answer after FINAL:."
# format_reward, length_reward (TRL's documentation's examples) and difficulty_bonus, weighted as
# TRL's reward_weights would weight them.
CHAT_REWARDS = ["verifier.rewards.custom=[trl_rewards:format_reward,trl_rewards:length_reward,trl_rewards:difficulty_bonus]",
                "verifier.rewards.custom_weight=[1.0,0.01,0.5]"]
TEXT_REWARDS = ["verifier.rewards.custom=[trl_rewards:characters,trl_rewards:difficulty_bonus]",
                "verifier.rewards.custom_weight=[0.001,0.5]"]


@pytest.fixture
def trl_rewards(monkeypatch):
    monkeypatch.syspath_prepend(TESTS)  # the workers import tests/trl_rewards.py by module name


def rows(chat: bool) -> list[dict]:
    """Ten Harbor problems as a user's dataset: the prompt (chat messages or text), the answer, and a
    difficulty column that every third row leaves empty."""
    problems, _, _ = generate(compose(["recipe=demo", "data.num_train=10", "data.num_eval=1", "data.num_select=1"]).data)
    return [
        {
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p.question}] if chat else p.question,
            "answer": p.answer,
            "difficulty": None if i % 3 == 0 else i,
        }
        for i, p in enumerate(problems)
    ]


def train_two_steps(tiny_model, out: Path, path: str, *overrides: str) -> tuple[list[dict], list[dict]]:
    train(compose([
        *TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=2",
        "data=hf", f"data.train_path={path}", f"data.eval_path={path}", "data.num_select=2", "data.prompt_field=prompt",
        "verifier.rewards.length_penalty=0", "train.log_groups_per_step=4", *overrides,
    ]))
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return read("metrics.jsonl"), read("samples.jsonl")


def check_rewards(metrics: list[dict], samples: list[dict], data: list[dict], weights: dict[str, float]) -> None:
    """Each step's reward/mean is correctness plus each function's weighted mean, difficulty_bonus's None
    counting 0 (weight 0.5), and reward/difficulty_bonus the mean over the completions of rows with a difficulty."""
    difficulty = {row["answer"]: row["difficulty"] for row in data}  # Harbor's answers are distinct here
    assert len(difficulty) == len(data)
    for m in metrics:
        groups = [g for g in samples if g["step"] == m["step"]]
        levels = [difficulty[g["answer"]] for g in groups for _ in g["completions"]]
        given = [level / 10 for level in levels if level is not None]
        assert m["reward/difficulty_bonus"] == (pytest.approx(sum(given) / len(given)) if given else None)
        expected = m["reward/correct_mean"] + sum(w * m[f"reward/{name}"] for name, w in weights.items()) + 0.5 * sum(given) / len(levels)
        assert m["reward/mean"] == pytest.approx(expected)


def test_two_steps_from_conversational_parquet_with_trl_reward_functions(tiny_model, tmp_path, trl_rewards):
    import datasets

    data = rows(chat=True)
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_list(data).to_parquet(str(path))
    metrics, samples = train_two_steps(tiny_model, tmp_path / "run", str(path), *CHAT_REWARDS)
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["reward/format_reward"] == 0.0  # the untrained tiny model writes no <think>...<answer> layout
        # format_reward indexes completion[0]["content"]: completions came as assistant messages
        assert m["reward/length_reward"] == pytest.approx(m["completions/len_mean"])  # token counts
    check_rewards(metrics, samples, data, {"format_reward": 1.0, "length_reward": 0.01})
    # The prompts went through the chat template, system message included (the tiny template: BOS, then each
    # message's content on its own line).
    assert samples[0]["prompt"][0] == {"role": "system", "content": SYSTEM}


def test_two_steps_from_csv_with_plain_text_prompts(tiny_model, tmp_path, trl_rewards):
    import datasets

    data = rows(chat=False)
    path = tmp_path / "train.csv"
    datasets.Dataset.from_list(data).to_csv(str(path), index=False)
    metrics, samples = train_two_steps(tiny_model, tmp_path / "run", str(path), *TEXT_REWARDS)
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        characters = [len(c) for g in samples if g["step"] == m["step"] for c in g["completions"]]
        assert m["reward/characters"] == pytest.approx(sum(characters) / len(characters))
    # CSV has no types: the difficulty column reads back as floats, its empty cells as None.
    check_rewards(metrics, samples, data, {"characters": 0.001})


def test_two_steps_from_a_save_to_disk_folder(tiny_model, tmp_path, trl_rewards):
    import datasets

    data = rows(chat=True)
    datasets.Dataset.from_list(data).save_to_disk(str(tmp_path / "saved"))
    metrics, samples = train_two_steps(tiny_model, tmp_path / "run", str(tmp_path / "saved"), *CHAT_REWARDS)
    assert [m["step"] for m in metrics] == [1, 2]
    check_rewards(metrics, samples, data, {"format_reward": 1.0, "length_reward": 0.01})
