"""train.async_steps=1: the sampler process one step ahead of the learner (pipeline.py)."""

import json

import pytest

from conftest import TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.data.loaders import load_examples
from grpo_cli.errors import ConfigError, GrpoError
from grpo_cli.models import load_model, load_tokenizer
from grpo_cli.sampler import build_sampler
from grpo_cli.sampler.base import sampling_seed
from grpo_cli.training.evaluate import evaluate
from grpo_cli.training.pipeline import RolloutPipeline
from grpo_cli.training.trainer import train
from grpo_cli.verifier import build_verifier

ASYNC = ["train.async_steps=1", "algorithm.tis_cap=2"]


def run_config(tiny_model, out, *overrides):
    return compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", *ASYNC, *overrides])


@pytest.fixture
def pipelines(monkeypatch) -> list[RolloutPipeline]:
    """Every RolloutPipeline the trainer builds, to look at its sampler process afterwards."""
    built = []
    init = RolloutPipeline.__init__

    def recording_init(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(RolloutPipeline, "__init__", recording_init)
    return built


def test_async_training_learns_one_step_stale_and_evals_sample_the_current_policy(tiny_model, tmp_path, pipelines):
    out = tmp_path / "run"
    # The length penalty of TINY_RUN: rewards rise as completions get shorter (measured: -0.24 -> -0.17).
    config = run_config(tiny_model, out, "train.max_steps=8", "optimizer.lr=1e-2")
    train(config)

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # Step 1 is sampled by the starting policy; every later batch before the previous step's update.
    assert [m["async/staleness"] for m in metrics] == [0, 1, 1, 1, 1, 1, 1, 1]
    rewards = [m["reward/mean"] for m in metrics]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.03, rewards
    assert all(m["tis/weight_mean"] > 0 and m["async/sample_s"] > 0 for m in metrics)

    # The last eval sampled the final policy: the same eval of the final checkpoint in this process, with the
    # same seed, draws the same completions.
    (pipeline,) = pipelines
    assert not pipeline.process.is_alive() and pipeline.process.exitcode == 0
    final = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()][-1]
    assert final["step"] == 8
    checkpoint_config = compose([*TINY_RUN, f"model.name_or_path={out / 'checkpoints' / 'step_000008'}"])
    model = load_model(checkpoint_config.model)
    tokenizer = load_tokenizer(checkpoint_config.model.name_or_path)
    with build_verifier(config.verifier) as verifier:
        sampler = build_sampler(config, model, tokenizer)
        again = evaluate(sampler, tokenizer, load_examples(config, "eval"), verifier, config, seed=sampling_seed(config.train.seed, "eval", 8))
    assert again["reward/mean"] == final["reward/mean"] and again["completions/len_mean"] == final["completions/len_mean"]


def test_the_sampler_process_is_gone_after_a_failed_run(tiny_model, tmp_path, pipelines):
    config = run_config(tiny_model, tmp_path / "run", "optimizer.lr=1e30", "optimizer.max_grad_norm=1e30",
                        "train.max_nonfinite_steps=1", "train.max_steps=4")
    with pytest.raises(GrpoError, match="NaN/inf"):
        train(config)
    (pipeline,) = pipelines
    assert not pipeline.process.is_alive()


@pytest.mark.parametrize("overrides, message", [
    (["train.async_steps=1"], r"train.async_steps=1 needs algorithm.tis_cap: .*algorithm.tis_cap=2"),
    ([*ASYNC, "data.skip_solved=1"], r"train.async_steps=1 with data.skip_solved=1, data.skip_unsolved=0: "),
    (["train.async_steps=2"], "train.async_steps=2: must be 0 or 1"),
])
def test_async_settings_that_cannot_work_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        compose([*TINY_RUN, *overrides])
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_two_ranks_each_with_a_sampler_process_sample_what_the_synchronous_run_samples(tiny_model, tmp_path):
    from test_distributed import records, torchrun, train_args

    pipelined, synchronous = tmp_path / "async", tmp_path / "sync"
    for out, extra in ((pipelined, [*ASYNC, "train.max_steps=3"]), (synchronous, ["algorithm.tis_cap=2", "train.max_steps=1"])):
        result = torchrun(train_args(tiny_model, out, *extra))
        assert result.returncode == 0, result.stderr[-3000:]
    metrics = records(pipelined / "metrics.jsonl")
    assert [m["async/staleness"] for m in metrics] == [0, 1, 1]
    # Step 1 (the starting policy on both): the same prompt shares, seeds and gathers in the sampler processes'
    # own process group as in the ranks', so the same groups, and the same update.
    first = {name: [(g["prompt"], g["completions"], g["rewards"]) for g in records(out / "samples.jsonl") if g["step"] == 1]
             for name, out in (("async", pipelined), ("sync", synchronous))}
    assert first["async"] == first["sync"] and len(first["sync"]) == 2
    assert metrics[0]["loss"] == pytest.approx(records(synchronous / "metrics.jsonl")[0]["loss"], rel=1e-5)
