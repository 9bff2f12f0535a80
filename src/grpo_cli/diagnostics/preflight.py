"""`grpo preflight`: will GRPO learn anything from this model on this data, and how long will the run take?

GRPO learns only from groups whose rewards differ, and a group with no positive reward teaches little. Before
spending the run, preflight samples preflight.num_prompts training prompts x G from the starting model,
verifies them, and times one learner pass (forward and backward, gradients discarded: the model is unchanged).
It reports the fraction of groups with at least one positive reward (the bar: monitor.MIN_POSITIVE_GROUP_FRACTION,
the same the run warns about), zero-variance groups, parse failures, mean length, truncation, seconds and peak
memory per phase, and the projected time of the run:

    step seconds  = (sample + verify + learn x algorithm.num_iterations) x train.prompts_per_step / num_prompts
    eval seconds  = (sample + verify) / (num_prompts x G) x eval prompts x n, per eval
    projected     = steps x step seconds + evals x eval seconds       (weight sync and checkpoints not counted)

Peak memory is torch's peak allocation per phase on a GPU; on CPU it is the process's peak resident set so far.
"""

from __future__ import annotations

import argparse
import random
import time
from contextlib import closing

import torch

from grpo_cli.algo.advantages import compute_advantages
from grpo_cli.algo.stats import group_stats
from grpo_cli.config import Config
from grpo_cli.errors import GrpoError
from grpo_cli.monitoring.monitor import MIN_POSITIVE_GROUP_FRACTION, TRUNCATION_RATE
from grpo_cli.monitoring.progress import Progress
from grpo_cli.sampler.base import sampling_seed

GiB = 1024**3


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / GiB
    # VmHWM, this process's own peak: ru_maxrss starts at the parent's peak (Linux carries it across exec), so a
    # command started by a large process (a notebook, a test run after a vLLM engine) would report the parent's.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024 / GiB  # in kB


def run_preflight(config: Config, train_examples, num_eval_prompts: int, tokenizer, sampler, verifier, learner) -> dict:
    """Sample, verify and time one learner pass on preflight.num_prompts training prompts; the report as a dict.

    Returns the measured fractions, seconds and GiB per phase, the projected seconds of the run and `advice`:
    what to change, empty when the run clears the bar.
    """
    from grpo_cli.environment import open_environments
    from grpo_cli.training.learner import RolloutBatch
    from grpo_cli.training.rollout import final_texts, sample_groups
    from grpo_cli.training.schedule import PromptSchedule

    G = config.algorithm.group_size
    num_prompts = min(config.preflight.num_prompts, len(train_examples))
    if num_prompts == 0:
        raise GrpoError(f"no training prompts: the train split of data={config.data.name} is empty")
    chosen = random.Random(config.train.seed).sample(range(len(train_examples)), num_prompts)
    examples = [train_examples[i] for i in chosen]
    seconds, memory = {}, {}
    peak_memory_gib(learner.device)

    with Progress("preflight", 3) as progress:  # sample, verify, learn
        tic = time.perf_counter()
        with open_environments(config, tokenizer) as environments:  # multi-turn rollouts with an environment
            sampled = sample_groups(sampler, tokenizer, examples, G, sampling_seed(config.train.seed, "preflight"), config, environments)
        prompt_ids, groups = sampled.prompt_ids, sampled.groups
        seconds["sample"], memory["sample"] = time.perf_counter() - tic, peak_memory_gib(learner.device)
        progress.advance()

        tic = time.perf_counter()
        completions = [completion for group in groups for completion in group]
        per_completion = [e for e in examples for _ in range(G)]
        scores = verifier.score(final_texts(completions), [e.answer for e in per_completion], step=1, examples=per_completion,
                                completion_ids=[c.token_ids for c in completions])
        seconds["verify"], memory["verify"] = time.perf_counter() - tic, peak_memory_gib(learner.device)
        progress.advance()

        rewards = torch.tensor([score.reward for score in scores], dtype=torch.float32)
        stats = group_stats(rewards, G)
        advantages = compute_advantages(rewards, config.algorithm, step=1)
        tic = time.perf_counter()
        batch = RolloutBatch.build(prompt_ids, groups, advantages).to(learner.device)
        batch.ref_logprobs = learner.reference_logprobs(batch)
        batch.old_logprobs = learner.old_logprobs(batch)
        learner.backward(batch)
        learner.optimizer.zero_grad(set_to_none=True)
        seconds["learn"], memory["learn"] = time.perf_counter() - tic, peak_memory_gib(learner.device)
        progress.advance()

    schedule = PromptSchedule(len(train_examples), config.train.prompts_per_step, config.train.epochs, config.train.seed)
    steps = min(schedule.total_steps, config.train.max_steps or schedule.total_steps)
    scale = config.train.prompts_per_step / num_prompts
    step_s = (seconds["sample"] + seconds["verify"] + seconds["learn"] * config.algorithm.num_iterations) * scale
    evals = 1 + (steps // config.train.eval_every if config.train.eval_every else 0)
    evals += 0 if config.train.eval_every and steps % config.train.eval_every == 0 else 1
    per_completion_s = (seconds["sample"] + seconds["verify"]) / len(completions)
    eval_s = per_completion_s * num_eval_prompts * config.eval_num_samples
    report = {
        "num_prompts": num_prompts,
        "group_size": G,
        "groups/any_positive_frac": stats.any_positive_frac,
        "groups/zero_variance_frac": stats.zero_variance_frac,
        "reward/mean": rewards.mean().item(),
        "reward/correct_mean": sum(score.correct for score in scores) / len(scores),
        "verifier/parse_failures_frac": sum(score.reason == "no_answer" for score in scores) / len(scores),
        "completions/len_mean": sum(len(c.token_ids) for c in completions) / len(completions),
        "completions/truncated_frac": sum(c.finish_reason == "length" for c in completions) / len(completions),
        "seconds": seconds,
        "peak_memory_gib": memory,
        "steps": steps,
        "step_s": step_s,
        "evals": evals,
        "eval_s": eval_s,
        "projected_s": steps * step_s + evals * eval_s,
    }
    report["advice"] = advice(report, config)
    return report


def advice(report: dict, config: Config) -> list[str]:
    """What to change so that enough groups carry a learning signal; empty when the run clears the bar."""
    lines = []
    truncated = report["completions/truncated_frac"]
    if truncated > TRUNCATION_RATE:
        lines.append(f"{truncated:.0%} of completions hit sampler.max_new_tokens={config.sampler.max_new_tokens}: "
                     "raise it (a cut-off completion has no final answer)")
    if report["groups/any_positive_frac"] >= MIN_POSITIVE_GROUP_FRACTION:
        return lines
    G, temperature = config.algorithm.group_size, config.sampler.temperature
    lines += [
        f"raise algorithm.group_size (now {G}): more samples per prompt, more groups with a success",
        f"raise sampler.temperature (now {temperature:g}) for more varied completions",
        "use easier data (data.difficulty, an easier split) or a supervised cold start first (grpo sft)",
    ]
    if report["verifier/parse_failures_frac"] > 0.5:
        lines.append(f"{report['verifier/parse_failures_frac']:.0%} of completions had no answer the verifier could "
                     f"read: check verifier.extract={config.verifier.extract} against the prompt template")
    return lines


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_report(report: dict) -> str:
    bar = MIN_POSITIVE_GROUP_FRACTION
    verdict = "ok" if report["groups/any_positive_frac"] >= bar else "TOO FEW"
    lines = [
        f"preflight: {report['num_prompts']} training prompts x G={report['group_size']}",
        f"  groups with a positive reward  {report['groups/any_positive_frac']:.1%}  (bar > {bar:.0%}: {verdict})",
        f"  zero-variance groups           {report['groups/zero_variance_frac']:.1%}",
        f"  mean reward                    {report['reward/mean']:.3f}  (correct {report['reward/correct_mean']:.1%})",
        f"  parse failures                 {report['verifier/parse_failures_frac']:.1%}",
        f"  mean length                    {report['completions/len_mean']:.1f} tokens",
        f"  truncated                      {report['completions/truncated_frac']:.1%}",
    ]
    for phase, seconds in report["seconds"].items():
        lines.append(f"  {phase:<6} {seconds:8.2f} s   peak memory {report['peak_memory_gib'][phase]:.2f} GiB")
    lines.append(f"  projected run: {report['steps']} steps x {report['step_s']:.1f} s + {report['evals']} evals x "
                 f"{report['eval_s']:.1f} s = {_duration(report['projected_s'])}")
    lines += [f"  fix: {line}" for line in report["advice"]]
    return "\n".join(lines)


def preflight_command(args: argparse.Namespace, config: Config) -> None:
    from grpo_cli.data.loaders import load_examples
    from grpo_cli.models import load_model, load_tokenizer
    from grpo_cli.sampler import build_sampler
    from grpo_cli.training.learner import Learner
    from grpo_cli.verifier import build_verifier

    train_examples = load_examples(config, "train")
    num_eval_prompts = len(load_examples(config, "eval")[: config.eval.num_prompts])
    tokenizer = load_tokenizer(config.model.name_or_path)
    learner = Learner(config, load_model(config.model), total_steps=1)
    with closing(build_sampler(config, learner.policy, tokenizer)) as sampler, build_verifier(config.verifier) as verifier:
        report = run_preflight(config, train_examples, num_eval_prompts, tokenizer, sampler, verifier, learner)
    print(format_report(report))
    if args.strict and report["groups/any_positive_frac"] < MIN_POSITIVE_GROUP_FRACTION:
        raise GrpoError(
            f"preflight: {report['groups/any_positive_frac']:.0%} of groups had a positive reward "
            f"(< {MIN_POSITIVE_GROUP_FRACTION:.0%}); see the fixes above"
        )
