"""Evaluation: n completions per eval prompt, verified, summarized as unbiased pass@k.

For a prompt with c correct completions out of n, pass@k = 1 - C(n-c, k) / C(n, k) (grpo_cli.algo.passk),
averaged over prompts. `evaluate` is shared by `grpo eval`, SFT and the trainer's periodic eval; the
command wrapper `eval_command` adds model loading, the console table and the JSON file.
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack, closing
from pathlib import Path

from grpo_cli.algo.passk import mean_pass_at_k
from grpo_cli.config import Config
from grpo_cli.data import Example
from grpo_cli.environment import open_environments
from grpo_cli.errors import GrpoError
from grpo_cli.monitoring.metrics import completion_metrics, print_results
from grpo_cli.training import distributed
from grpo_cli.training.rollout import final_texts, sample_groups


def evaluate(sampler, tokenizer, examples: list[Example], verifier, config: Config, seed: int, progress=None, environments=None) -> dict:
    """Sample n = config.eval_num_samples per prompt (the first eval.num_prompts), verify, summarize.

    With environment.name set the samples are the multi-turn rollouts training makes (rollout.py), in
    `environments` or, when None, in environments opened for this call.

    Returns pass@k for each k in eval.pass_at and for k = 1 (checkpoint selection and the health checks
    read it) whether listed or not, num_prompts, num_samples, temperature, and the completion statistics of
    grpo_cli.monitoring.metrics over all prompts x n completions (the names training steps use).
    Under torchrun each rank samples and verifies its share of the prompts (distributed.share) and the
    results are gathered: every rank returns the figures of the whole eval set.
    """
    examples = examples[: config.eval.num_prompts]
    if not examples:
        raise GrpoError(f"no eval prompts: the eval split of data={config.data.name} is empty")
    n = config.eval_num_samples
    temperature = config.sampler.temperature if config.eval.temperature is None else config.eval.temperature
    mine = distributed.share(examples)
    with ExitStack() as stack:
        if environments is None:
            environments = stack.enter_context(open_environments(config, tokenizer))
        sampled = sample_groups(sampler, tokenizer, mine, n, seed, config, environments, temperature=temperature)
    groups = sampled.groups
    if progress:  # `grpo eval`'s bar: sampling, then verifying
        progress.advance()
    completions = [completion for group in groups for completion in group]
    examples_per_completion = [example for example in mine for _ in range(n)]
    scores = verifier.score(
        final_texts(completions), [example.answer for example in examples_per_completion], split="eval",
        examples=examples_per_completion, completion_ids=[c.token_ids for c in completions],
    )
    if progress:
        progress.advance()
    scored = distributed.gather(list(zip(completions, scores)))
    completions, scores = [completion for completion, _ in scored], [score for _, score in scored]

    num_correct = [sum(score.correct for score in scores[i * n : (i + 1) * n]) for i in range(len(examples))]
    results: dict = {f"pass@{k}": mean_pass_at_k(num_correct, n, k) for k in sorted({1, *config.eval.pass_at})}
    results |= {"num_prompts": len(examples), "num_samples": n, "temperature": temperature}
    return results | completion_metrics(completions, scores)


def _retention(config: Config, model, tokenizer) -> dict[str, float]:
    """retention/nll of `model`; with a LoRA adapter (a checkpoint of a LoRA run) also nll_start and ratio, the
    starting model being the adapter's base. A full model has no recorded start: evaluate that one the same way."""
    import dataclasses

    from grpo_cli.models import adapter_base, is_adapter, load_model
    from grpo_cli.monitoring.retention import load_retention_set, response_nll, retention_metrics

    pairs = load_retention_set(config, tokenizer)
    nll = response_nll(model, pairs, config.train.micro_batch_tokens, next(model.parameters()).dtype)
    nll_start = None
    if is_adapter(config.model.name_or_path):
        base = load_model(dataclasses.replace(config.model, name_or_path=adapter_base(config.model.name_or_path)))
        nll_start = response_nll(base, pairs, config.train.micro_batch_tokens, next(base.parameters()).dtype)
    return retention_metrics(nll, nll_start)


def eval_command(args: argparse.Namespace, config: Config) -> None:
    from grpo_cli.data.loaders import load_examples
    from grpo_cli.models import load_model, load_tokenizer
    from grpo_cli.monitoring.progress import Progress
    from grpo_cli.sampler import build_sampler
    from grpo_cli.sampler.base import sampling_seed
    from grpo_cli.verifier import build_verifier

    examples = load_examples(config, "eval")
    model, tokenizer = load_model(config.model), load_tokenizer(config.model.name_or_path)
    with closing(build_sampler(config, model, tokenizer)) as sampler, build_verifier(config.verifier) as verifier:
        # The seeds of a training run's eval at step 0: `grpo eval` of the starting model repeats pass@k_before.
        seed = sampling_seed(config.train.seed, "eval", 0)
        with Progress("eval", 2) as progress:  # sampling, then verifying
            results = evaluate(sampler, tokenizer, examples, verifier, config, seed=seed, progress=progress)
    if config.eval.retention_path:
        results |= _retention(config, model, tokenizer)
    results["model"] = config.model.name_or_path
    output = Path(config.eval.output or Path(config.train.output_dir) / "eval.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print_results(f"eval: {results['model']}", {"value": results}, config.eval.pass_at)
    print(f"wrote {output}")
