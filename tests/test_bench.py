"""`grpo bench` end to end on the tiny model: the report's fields, the table, the ratios (no timing assertions)."""

import json

from conftest import TINY_RUN
from grpo_cli.cli import main

SMALL = ["train.prompts_per_step=2", "algorithm.group_size=2", "sampler.max_new_tokens=8", "train.micro_batch_tokens=64"]


def test_bench_reports_every_phase_and_the_bare_limits(tiny_model, capsys):
    main(["bench", "--steps", "1", "--json", *TINY_RUN, *SMALL, f"model.name_or_path={tiny_model}"])
    report = json.loads(capsys.readouterr().out)
    for key in ("sample", "verify", "learn", "sync", "step", "bare_generate", "bare_fwd_bwd"):
        assert report[key] >= 0
    for key in ("sampler_vs_bare", "learner_vs_bare", "step_vs_bare", "tokens_per_s", "peak_memory_gib"):
        assert report[key] > 0
    assert report["steps"] == 1 and report["mfu"] is None  # MFU on GPU only
    assert report["step"] >= report["sample"] + report["learn"]
    # 2 prompts x G=2, every completion with its whole prompt, at least one token each
    assert report["learner_tokens"] >= 4 * 2 and 4 <= report["generated_tokens"] <= 4 * 8


def test_bench_prints_a_table(tiny_model, capsys):
    main(["bench", "--steps", "1", *TINY_RUN, *SMALL, f"model.name_or_path={tiny_model}"])
    table = capsys.readouterr().out
    for row in ("time/sample_s", "bare generate s", "bare fwd+bwd s", "sampler vs bare", "learner vs bare",
                "step / (sum of bare)", "generated tokens/s", "peak memory GiB", "MFU"):
        assert row in table
