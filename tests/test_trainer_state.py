"""What a run carries across a resume (settings, monitor history, learning rate), how it picks its best checkpoint
(on the select split, reported on the eval split), and its step-1 sampler/learner check, on a tiny model."""

import json
import re

import pytest
import yaml

from conftest import TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.errors import ConfigError
from grpo_cli.training import checkpoint, trainer
from grpo_cli.training.trainer import train


def run_config(tiny_model, out, *overrides):
    return compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", *overrides])


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pass_at_without_1_still_selects_and_keeps_every_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "run"
    summary = train(run_config(tiny_model, out, "eval.pass_at=[2]", "train.max_steps=2", "train.eval_every=1"))
    assert checkpoint.read_pointer(out / "checkpoints", "last").name == "step_000002"
    assert summary["steps"] == 2 and {"pass@1_before", "pass@2_after", "pass@1_best", "select/pass@1_best"} <= set(summary)
    # A healthy run: the tiny model's HF sampler and learner agree at step 1 (no mismatch warning).
    first = records(out / "metrics.jsonl")[0]
    assert first["logprob_mismatch/mean"] < 1e-3
    assert not any("max_initial_mismatch" in warning for warning in first["warnings"])


def test_best_checkpoint_is_chosen_on_the_select_split_and_reported_on_the_eval_split(tiny_model, tmp_path, monkeypatch):
    # Adversarial scores: eval pass@1 is best at step 1, select pass@1 at step 2.
    scores = {"eval": iter([0.5, 0.9, 0.8, 0.7]), "select": iter([0.1, 0.3, 0.2])}
    seen = {"eval": set(), "select": set()}

    real_evaluate = trainer.evaluate

    def scripted_evaluate(sampler, tokenizer, examples, verifier, config, seed, environments=None):
        split = examples[0].id.split("-")[1]
        seen[split] |= {example.question for example in examples}
        score = next(scores[split])
        results = real_evaluate(sampler, tokenizer, examples, verifier, config, seed, environments=environments)
        return results | {"pass@1": score, "pass@2": score + 0.05}

    monkeypatch.setattr(trainer, "evaluate", scripted_evaluate)
    out = tmp_path / "run"
    summary = train(run_config(tiny_model, out, "train.max_steps=3", "train.eval_every=1"))
    assert seen["eval"] and seen["select"] and not seen["eval"] & seen["select"]
    assert summary["best_step"] == 2 and summary["best_checkpoint"].endswith("step_000002")
    assert summary["select/pass@1_best"] == 0.3 and summary["num_select_prompts"] == 4
    assert (summary["pass@1_before"], summary["pass@1_best"], summary["pass@1_after"]) == (0.5, 0.8, 0.7)
    assert summary["pass@2_best"] == pytest.approx(0.85)
    assert [e.get("select/pass@1") for e in records(out / "evals.jsonl")] == [None, 0.1, 0.3, 0.2]


def test_resume_refuses_settings_that_reorder_the_data_and_warns_on_others(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    train(run_config(tiny_model, out, "train.max_steps=1"))
    refused = [
        ("train.seed=1", "train.seed=1 (the run started with 0)"),
        ("train.prompts_per_step=2", "train.prompts_per_step=2 (the run started with 4)"),
        ("algorithm.group_size=2", "algorithm.group_size=2 (the run started with 4)"),
        ("train.epochs=2.0", "train.epochs=2.0 (the run started with 1.0)"),
        ("data.num_train=300", "data.num_train=300 (the run started with 400)"),
        ("data.difficulty=[1,2]", "data.difficulty=[1, 2] (the run started with [1])"),
    ]
    for override, message in refused:
        with pytest.raises(ConfigError, match=re.escape(f"resume=true with {message}")) as error:
            train(run_config(tiny_model, out, "train.max_steps=2", "resume=true", override))
        assert "\n" not in str(error.value) and "changes which prompts each step sees" in str(error.value)
    capsys.readouterr()
    summary = train(run_config(tiny_model, out, "train.max_steps=2", "resume=true", "eval.num_prompts=3"))
    assert summary["steps"] == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "settings changed since the run started (config.yaml): eval.num_prompts 4 -> 3, train.max_steps 1 -> 2" in err


def test_resume_of_a_run_from_before_a_key_existed_counts_that_key_at_its_default(tiny_model, tmp_path):
    out = tmp_path / "run"
    train(run_config(tiny_model, out, "train.max_steps=1"))
    # As a run started before data.hf_path and data.train_split were added wrote its config.yaml.
    started = yaml.safe_load((out / "config.yaml").read_text())
    del started["data"]["hf_path"], started["data"]["train_split"]
    (out / "config.yaml").write_text(yaml.safe_dump(started))
    assert train(run_config(tiny_model, out, "train.max_steps=2", "resume=true"))["steps"] == 2
    with pytest.raises(ConfigError, match=re.escape("data.train_split='test' (the run started with 'train')")):
        train(run_config(tiny_model, out, "train.max_steps=3", "resume=true", "data.train_split=test"))


def test_resumed_run_restores_the_monitor_history_and_the_lr_schedule(tiny_model, tmp_path, monkeypatch):
    overrides = ["train.max_steps=4", "train.save_every=2", "algorithm.kl_coef=0.04", "optimizer.schedule=cosine",
                 "optimizer.warmup_steps=1"]
    straight = tmp_path / "straight"
    train(run_config(tiny_model, straight, *overrides))

    interrupted = tmp_path / "interrupted"
    grpo_step = trainer.grpo_step

    def crash_at_step_3(config, step, *args, **kwargs):
        if step == 3:
            raise KeyboardInterrupt
        return grpo_step(config, step, *args, **kwargs)

    monkeypatch.setattr(trainer, "grpo_step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(tiny_model, interrupted, *overrides))
    monkeypatch.setattr(trainer, "grpo_step", grpo_step)
    assert checkpoint.read_pointer(interrupted / "checkpoints", "last").name == "step_000002"
    train(run_config(tiny_model, interrupted, *overrides, "resume=true"))

    a, b = records(straight / "metrics.jsonl"), records(interrupted / "metrics.jsonl")
    assert [m["lr"] for m in b] == [m["lr"] for m in a]
    assert len({m["lr"] for m in a}) == 4  # warmup, then cosine: every step its own rate
    monitor_a = checkpoint.load_trainer_state(straight / "checkpoints" / "step_000004")["monitor"]
    monitor_b = checkpoint.load_trainer_state(interrupted / "checkpoints" / "step_000004")["monitor"]
    assert len(monitor_b["kl_history"]) == len(monitor_b["early_positive"]) == 4
    assert monitor_b["first_reward"] == a[0]["reward/correct_mean"]
    assert monitor_b["kl_history"] == pytest.approx(monitor_a["kl_history"], abs=1e-6)
    assert monitor_b == {**monitor_a, "kl_history": monitor_b["kl_history"]}


def test_step_one_logprob_mismatch_is_a_warning_in_metrics_jsonl(tiny_model, tmp_path, monkeypatch):
    build_sampler = trainer.build_sampler

    def off_by_half_a_nat(*args):
        sampler = build_sampler(*args)
        generate = sampler.generate

        def generate_with_wrong_logprobs(*a, **kw):
            groups = generate(*a, **kw)
            for group in groups:
                for completion in group:
                    completion.logprobs = [logprob - 0.5 for logprob in completion.logprobs]
            return groups

        sampler.generate = generate_with_wrong_logprobs
        return sampler

    monkeypatch.setattr(trainer, "build_sampler", off_by_half_a_nat)
    out = tmp_path / "run"
    train(run_config(tiny_model, out, "train.max_steps=1"))
    (step,) = records(out / "metrics.jsonl")
    assert step["logprob_mismatch/mean"] == pytest.approx(0.5, abs=1e-3)
    (warning,) = [w for w in step["warnings"] if "max_initial_mismatch" in w]
    assert "0.5 nats per token (> train.max_initial_mismatch=0.05)" in warning and "chat template" in warning


def test_rng_state_restores_python_torch_and_every_cuda_device(monkeypatch):
    import random

    import torch

    state = checkpoint.rng_state()
    drawn = (random.random(), torch.rand(3))
    checkpoint.set_rng_state(state)
    assert random.random() == drawn[0] and torch.equal(torch.rand(3), drawn[1])
    if torch.cuda.is_available():  # on a GPU machine, the real devices
        state = checkpoint.rng_state()
        on_gpu = torch.rand(3, device="cuda")
        checkpoint.set_rng_state(state)
        assert torch.equal(torch.rand(3, device="cuda"), on_gpu)
    else:
        assert "cuda" not in state  # the CPU path neither saves nor restores CUDA state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["device 0 state", "device 1 state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = checkpoint.rng_state()
    assert state["cuda"] == ["device 0 state", "device 1 state"]
    checkpoint.set_rng_state(state)
    assert restored == [["device 0 state", "device 1 state"]]
