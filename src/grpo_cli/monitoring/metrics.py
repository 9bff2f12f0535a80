"""The one vocabulary of completion statistics, shared by training steps (metrics.jsonl) and evals
(evals.jsonl, `grpo eval`, `grpo sft`), so the same number has the same name wherever it is logged.

    reward/mean, reward/std        over all completions
    reward/correct_mean            fraction the verifier judged correct
    reward/<name>                  each reward function's (verifier.rewards.custom) unweighted mean over the
                                   completions it rewarded (None returned: left out; none rewarded: null)
    completions/len_mean, len_max  generated tokens
    completions/truncated_frac     fraction stopped by sampler.max_new_tokens
    verifier/parse_failures        completions with no answer found (count)
    verifier/timeouts, errors      checks that timed out or crashed (count)
"""

from __future__ import annotations

import statistics

from grpo_cli.sampler.base import Completion
from grpo_cli.verifier.score import Score


def completion_metrics(completions: list[Completion], scores: list[Score]) -> dict[str, float | None]:
    """Statistics of `completions` and their `scores` (same order, at least one).

    Returns the keys listed in this module's docstring.
    """
    rewards = [score.reward for score in scores]
    lengths = [len(completion.token_ids) for completion in completions]
    total = len(completions)
    by_function = {}
    for name in dict.fromkeys(name for score in scores for name in score.by_function):
        values = [score.by_function[name] for score in scores if score.by_function.get(name) is not None]
        by_function[f"reward/{name}"] = sum(values) / len(values) if values else None
    return by_function | {
        "reward/mean": sum(rewards) / total,
        "reward/std": statistics.stdev(rewards) if total > 1 else 0.0,
        "reward/correct_mean": sum(score.correct for score in scores) / total,
        "completions/len_mean": sum(lengths) / total,
        "completions/len_max": max(lengths),
        "completions/truncated_frac": sum(c.finish_reason == "length" for c in completions) / total,
        "verifier/parse_failures": sum(score.reason == "no_answer" for score in scores),
        "verifier/timeouts": sum(score.reason == "timeout" for score in scores),
        "verifier/errors": sum(score.reason == "error" for score in scores),
    }


def print_results(title: str, columns: dict[str, dict], pass_at: list[int]) -> None:
    """One table of eval results, a column per result (`{"before": ..., "after": ...}` or `{"value": ...}`):
    pass@k for each k, then the sample counts and the completion statistics above. The one printer of
    `grpo eval`, `grpo sft` and the end of `grpo train`."""
    from rich.console import Console
    from rich.table import Table

    rows = [(f"pass@{k}", f"pass@{k}", "{:.1%}") for k in pass_at] + [
        ("mean reward", "reward/mean", "{:.4f}"),
        ("correct", "reward/correct_mean", "{:.1%}"),
        ("no answer (count)", "verifier/parse_failures", "{:d}"),
        ("mean length (tokens)", "completions/len_mean", "{:.1f}"),
        ("truncated", "completions/truncated_frac", "{:.1%}"),
    ]
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for label, key, form in rows:
        table.add_row(label, *(form.format(results[key]) for results in columns.values()))
    table.add_row("prompts x samples", *(f"{r['num_prompts']} x {r['num_samples']}" for r in columns.values()))
    table.add_row("temperature", *(f"{r['temperature']:g}" for r in columns.values()))
    Console().print(table)
