"""Retention: the policy's NLL of general reference text against the starting model's, at every eval."""

import json

import pytest

from conftest import REPO, TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.errors import GrpoError
from grpo_cli.monitoring.monitor import RunMonitor
from grpo_cli.monitoring.retention import load_retention_set
from grpo_cli.training.trainer import train

DEMO_SET = REPO / "recipes" / "demo_retention.jsonl"


def run(tiny_model, out, *overrides):
    config = compose([
        *TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", f"eval.retention_path={DEMO_SET}",
        "train.max_steps=6", "train.eval_every=3", *overrides,
    ])
    summary = train(config)
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    return summary, evals


def test_retention_rises_with_a_high_lr_and_holds_with_a_kl_penalty(tiny_model, tmp_path):
    summary, free = run(tiny_model, tmp_path / "free", "optimizer.lr=3e-2", "train.merge_with_reference=0.7")
    _, anchored = run(tiny_model, tmp_path / "anchored", "optimizer.lr=3e-2", "algorithm.kl_coef=5.0")
    for evals in (free, anchored):
        assert [e["step"] for e in evals] == [0, 3, 6]
        assert evals[0]["retention/ratio"] == 1.0
        assert all(e["retention/nll_start"] == evals[0]["retention/nll"] for e in evals)
    # Measured: free 1.00, 1.09, 2.00 at steps 0, 3, 6; anchored by a KL penalty 1.00, 1.10, 1.02.
    assert free[-1]["retention/ratio"] > 1.05
    assert abs(anchored[-1]["retention/ratio"] - 1) < abs(free[-1]["retention/ratio"] - 1) / 2
    # The best checkpoint (step 3: pass@1 is 0 throughout, the first eval after step 0 is kept) and the
    # 0.7 x best + 0.3 x start merge, which sits nearer the starting model.
    assert summary["best_step"] == 3
    assert summary["retention/ratio_best"] == free[1]["retention/ratio"]
    assert 1.0 < summary["retention/ratio_merged"] < summary["retention/ratio_best"]


def test_the_warning_names_the_ratio_and_the_fixes():
    monitor = RunMonitor(kl_coef=0.0, max_retention_drift=1.10)
    assert monitor.after_eval({"pass@1": 0.5, "retention/nll": 1.0, "retention/nll_start": 1.0, "retention/ratio": 1.0}, [1]) == []
    assert monitor.after_eval({"pass@1": 0.5, "retention/nll": 1.1, "retention/nll_start": 1.0, "retention/ratio": 1.1}, [1]) == []
    (warning,) = monitor.after_eval({"pass@1": 0.5, "retention/nll": 1.5, "retention/nll_start": 1.2, "retention/ratio": 1.25}, [1])
    assert "1.25x the starting model's (1.500 vs 1.200 nats/token" in warning
    for fix in ("algorithm.kl_coef", "optimizer.lr", "train.merge_with_reference"):
        assert fix in warning


def test_a_bad_row_is_a_one_line_error(tiny_model, tmp_path):
    from grpo_cli.models import load_tokenizer

    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    config = compose([*TINY_RUN, f"eval.retention_path={path}"])
    with pytest.raises(GrpoError, match=r"set.jsonl:2: a retention row needs"):
        load_retention_set(config, load_tokenizer(str(tiny_model)))


def test_grpo_eval_of_a_lora_checkpoint_repeats_the_runs_figures(tiny_model, tmp_path):
    """The trainer's LoRA policy and `grpo eval` of its checkpoint agree: nll at that step, nll_start of the base."""
    from grpo_cli.cli import main

    out = tmp_path / "lora"
    _, evals = run(tiny_model, out, "model.lora.enabled=true", "model.lora.rank=8", "optimizer.lr=3e-2")
    assert evals[-1]["retention/ratio"] != 1.0  # the adapter moved the policy
    checkpoint = out / "checkpoints" / "step_000006"
    main(["eval", *TINY_RUN, f"model.name_or_path={checkpoint}", f"eval.retention_path={DEMO_SET}",
          f"eval.output={tmp_path / 'eval.json'}"])
    results = json.loads((tmp_path / "eval.json").read_text())
    for key in ("retention/nll", "retention/nll_start", "retention/ratio"):
        assert results[key] == pytest.approx(evals[-1][key], rel=1e-5)

    # A whole model has no recorded start: its own NLL only, here the run's step-0 figure.
    main(["eval", *TINY_RUN, f"model.name_or_path={tiny_model}", f"eval.retention_path={DEMO_SET}",
          f"eval.output={tmp_path / 'start.json'}"])
    start = json.loads((tmp_path / "start.json").read_text())
    assert start["retention/nll"] == pytest.approx(evals[0]["retention/nll"], rel=1e-5)
    assert "retention/ratio" not in start


def test_the_committed_demo_set_is_what_the_script_writes():
    from grpo_cli.data.harbor import generate

    train_split, _, _ = generate(compose(["recipe=demo"]).data)
    rows = [json.loads(line) for line in DEMO_SET.read_text().splitlines()]
    assert rows == [{"prompt": ex.question, "response": ex.solution} for ex in train_split[:64]]
    assert compose(["recipe=demo"]).eval.retention_path == "recipes/demo_retention.jsonl"
