"""Evaluation: n completions per eval prompt, verified, summarized as unbiased pass@k.

For a prompt with c correct completions out of n, pass@k = 1 - C(n-c, k) / C(n, k) (grpo_cli.algo.passk),
averaged over prompts. `evaluate` is shared by `grpo eval`, SFT and the trainer's periodic eval; the
command wrapper `eval_command` adds model loading, the console table and the JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from grpo_cli.algo.passk import mean_pass_at_k
from grpo_cli.config import Config
from grpo_cli.data import Example
from grpo_cli.data.loaders import encode_prompt
from grpo_cli.errors import GrpoError


def evaluate(sampler, tokenizer, examples: list[Example], verifier, config: Config, seed: int) -> dict:
    """Sample n = config.eval_num_samples per prompt (the first eval.num_prompts), verify, summarize.

    Returns pass@k for each k in eval.pass_at and for k = 1 (checkpoint selection and the health checks
    read it) whether listed or not, plus num_prompts, num_samples, temperature,
    mean_reward, parse_failure_rate (no answer found), mean_length (tokens) and truncation_rate
    (stopped by sampler.max_new_tokens), the last four over all prompts x n completions.
    """
    examples = examples[: config.eval.num_prompts]
    if not examples:
        raise GrpoError(f"no eval prompts: the eval split of data={config.data.name} is empty")
    n = config.eval_num_samples
    temperature = config.sampler.temperature if config.eval.temperature is None else config.eval.temperature
    prompt_ids = [encode_prompt(example, tokenizer, config.data) for example in examples]
    groups = sampler.generate(prompt_ids, n=n, seed=seed, temperature=temperature)
    completions = [completion for group in groups for completion in group]
    answers = [example.answer for example in examples for _ in range(n)]
    scores = verifier.score([completion.text for completion in completions], answers, split="eval")

    num_correct = [sum(score.correct for score in scores[i * n : (i + 1) * n]) for i in range(len(examples))]
    results: dict = {f"pass@{k}": mean_pass_at_k(num_correct, n, k) for k in sorted({1, *config.eval.pass_at})}
    total = len(completions)
    results |= {
        "num_prompts": len(examples),
        "num_samples": n,
        "temperature": temperature,
        "mean_reward": sum(score.reward for score in scores) / total,
        "parse_failure_rate": sum(score.reason == "no_answer" for score in scores) / total,
        "mean_length": sum(len(completion.token_ids) for completion in completions) / total,
        "truncation_rate": sum(completion.finish_reason == "length" for completion in completions) / total,
    }
    return results


def load_policy(config: Config):
    """(model, tokenizer) from model.name_or_path: a model directory, or a LoRA adapter directory
    (a run checkpoint with adapter_config.json) applied to the base model it names."""
    from grpo_cli.export import adapter_base, is_adapter
    from grpo_cli.models import load_model, load_tokenizer

    path = config.model.name_or_path
    tokenizer = load_tokenizer(path)
    if not is_adapter(path):
        return load_model(config.model), tokenizer

    from peft import PeftModel

    base = load_model(dataclasses.replace(config.model, name_or_path=adapter_base(path)))
    return PeftModel.from_pretrained(base, path), tokenizer


def eval_command(args: argparse.Namespace, config: Config) -> None:
    from grpo_cli.data.loaders import load_examples
    from grpo_cli.sampler import build_sampler
    from grpo_cli.verifier import build_verifier

    examples = load_examples(config, "eval")
    model, tokenizer = load_policy(config)
    sampler = build_sampler(config, model, tokenizer)
    with build_verifier(config.verifier) as verifier:
        results = evaluate(sampler, tokenizer, examples, verifier, config, seed=config.train.seed)
    results["model"] = config.model.name_or_path
    output = Path(config.eval.output or Path(config.train.output_dir) / "eval.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results, config.eval.pass_at, output)


def _print_table(results: dict, pass_at: list[int], output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"eval: {results['model']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in pass_at:
        table.add_row(f"pass@{k}", f"{results[f'pass@{k}']:.4f}")
    table.add_row("prompts x samples", f"{results['num_prompts']} x {results['num_samples']}")
    table.add_row("temperature", f"{results['temperature']:g}")
    table.add_row("mean reward", f"{results['mean_reward']:.4f}")
    table.add_row("parse failures", f"{results['parse_failure_rate']:.2%}")
    table.add_row("mean length (tokens)", f"{results['mean_length']:.1f}")
    table.add_row("truncated", f"{results['truncation_rate']:.2%}")
    console = Console()
    console.print(table)
    console.print(f"wrote {output}", soft_wrap=True, highlight=False)
