"""The GRPO training loop (`grpo train`), written to read like the algorithm:

    for each step:
        prompts  <- the next train.prompts_per_step prompts (fractional epochs, reshuffled each epoch)
        groups   <- G completions per prompt from the sampler              (time/sample_s)
        rewards  <- the verifier's score of every completion                (time/verify_s)
        A        <- (r - mean_group) / (std_group + eps)                    (algo/advantages.py)
        repeat algorithm.num_iterations times: one clipped policy-gradient step with KL to the reference
                                                                            (learner.py, algo/loss.py)
        push the new weights to the sampler                                 (time/sync_s)
        log metrics, health warnings; evaluate and checkpoint when due

Everything a run writes lives in train.output_dir: config.yaml, run.json (verifier identity), metrics.jsonl,
samples.jsonl, evals.jsonl, checkpoints/, summary.json and, with train.merge_with_reference, merged/.
Under torchrun (distributed.py) every rank runs this loop on its share of each step's prompts; rank 0 alone
writes these files and prints.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from grpo_cli import checkpoint, distributed
from grpo_cli.algo.advantages import group_advantages
from grpo_cli.algo.stats import group_stats
from grpo_cli.config import Config
from grpo_cli.data.loaders import encode_prompt, load_examples
from grpo_cli.errors import ConfigError, GrpoError
from grpo_cli.evaluate import evaluate
from grpo_cli.learner import Learner, RolloutBatch
from grpo_cli.metrics import completion_metrics, print_results
from grpo_cli.models import load_model, load_tokenizer
from grpo_cli.monitor import RunMonitor
from grpo_cli.sampler import build_sampler
from grpo_cli.verifier import build_verifier


@dataclass
class PromptSchedule:
    """Which prompts each step sees: a fresh seeded permutation per epoch, fractional epochs allowed.

    The position is a function of the step alone, so a resumed run sees exactly the prompts it would have.
    """

    num_prompts: int
    prompts_per_step: int
    epochs: float
    seed: int

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.epochs * self.num_prompts / self.prompts_per_step))

    def epoch_at(self, step: int) -> float:
        return step * self.prompts_per_step / self.num_prompts

    def indices(self, step: int) -> list[int]:
        start = step * self.prompts_per_step
        positions = [divmod(position, self.num_prompts) for position in range(start, start + self.prompts_per_step)]
        # Shuffle each epoch the step draws from once, not once per prompt (a step can cross an epoch boundary).
        permutations = {epoch: self._permutation(epoch) for epoch in {epoch for epoch, _ in positions}}
        return [permutations[epoch][offset] for epoch, offset in positions]

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.num_prompts))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order


class RunLog:
    """Append-only JSON lines, flushed per record, so a killed run keeps every finished step."""

    def __init__(self, path: Path, truncate: bool):
        self.path = path
        self.writes = distributed.world().is_main  # the same records on every rank: rank 0 writes them
        if self.writes and truncate and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if not self.writes:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def drop_after(self, step: int) -> None:
        """On resume: forget records of steps the restored checkpoint never saw."""
        if not self.writes or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


def train_command(args, config: Config) -> None:
    with distributed.running(config):
        train(config)


def train(config: Config) -> dict:
    run_dir = Path(config.train.output_dir)
    checkpoints = run_dir / "checkpoints"
    torch.manual_seed(config.train.seed)
    random.seed(config.train.seed)

    # Data and model load before anything is written, so a bad path fails without touching the run dir.
    train_examples = load_examples(config, "train")
    eval_examples = load_examples(config, "eval")
    tokenizer = load_tokenizer(config.model.name_or_path)
    model = load_model(config.model)
    schedule = PromptSchedule(len(train_examples), config.train.prompts_per_step, config.train.epochs, config.train.seed)
    total_steps = min(schedule.total_steps, config.train.max_steps or schedule.total_steps)
    learner = Learner(config, model, total_steps)

    with build_verifier(config.verifier) as verifier:
        state = _start_or_resume(config, run_dir, checkpoints, learner, verifier)
        sampler = build_sampler(config, learner.full_model, tokenizer)
        metrics_log = RunLog(run_dir / "metrics.jsonl", truncate=not config.resume)
        samples_log = RunLog(run_dir / "samples.jsonl", truncate=not config.resume)
        evals_log = RunLog(run_dir / "evals.jsonl", truncate=not config.resume)
        for log in (metrics_log, samples_log, evals_log):
            log.drop_after(state["step"])
        monitor = RunMonitor(kl_coef=config.algorithm.kl_coef)
        console = Console(total_steps, state["step"])

        def run_eval(step: int) -> dict:
            results = evaluate(sampler, tokenizer, eval_examples, verifier, config, seed=config.train.seed)
            results["step"] = step
            evals_log.write(results)
            console.eval_line(step, results, config.eval.pass_at)
            console.warn(monitor.after_eval(results, config.eval.pass_at), step)
            return results

        if state["before"] is None:
            state["before"] = run_eval(0)
        for step in range(state["step"] + 1, total_steps + 1):
            examples = [train_examples[i] for i in schedule.indices(step - 1)]
            metrics, groups = grpo_step(config, step, examples, tokenizer, sampler, verifier, learner)
            metrics["epoch"] = schedule.epoch_at(step)
            warnings = monitor.after_step(step, metrics)
            state["nonfinite_streak"] = state["nonfinite_streak"] + 1 if metrics["nonfinite"] else 0
            if metrics["nonfinite"]:
                warnings.append("loss or gradient was NaN/inf: the update was skipped")
            metrics["warnings"] = warnings
            metrics_log.write(metrics)
            for group in groups[: config.train.log_groups_per_step]:
                samples_log.write({"step": step, **group})
            console.step_line(step, metrics)
            console.warn(warnings, step)
            if state["nonfinite_streak"] >= config.train.max_nonfinite_steps:
                last = checkpoint.read_pointer(checkpoints, "last")
                raise GrpoError(
                    f"loss was NaN/inf for {state['nonfinite_streak']} steps in a row (step {step}); "
                    f"last good checkpoint: {last or 'none'}. Fix: lower optimizer.lr or optimizer.max_grad_norm"
                )

            is_last = step == total_steps
            if (config.train.eval_every and step % config.train.eval_every == 0) or is_last:
                results = run_eval(step)
                state["last_eval"] = results
                if state["best"] is None or results["pass@1"] > state["best"]["pass@1"]:
                    state["best"] = results
            if step % config.train.save_every == 0 or is_last or state["last_eval"].get("step") == step:
                state["step"] = step
                _save(checkpoints, step, learner, tokenizer, state)

        console.progress.stop()
    return _finish(config, run_dir, checkpoints, state, tokenizer)


def grpo_step(config, step, examples, tokenizer, sampler, verifier, learner) -> tuple[dict, list[dict]]:
    """One GRPO step on a batch of prompts; returns the step's metrics and its groups for samples.jsonl.

    Under torchrun this rank samples, verifies and learns from its share of `examples` (distributed.share);
    completions and scores are gathered, so advantages, group statistics and metrics are the global batch's.
    """
    G = config.algorithm.group_size
    timings = {}
    local_examples = distributed.share(examples)
    # vLLM seeds prompt i with seed + i * G: offsetting by this rank's first prompt gives every prompt the seed
    # it has in one process.
    seed = config.train.seed * 100_003 + step + distributed.world().rank * len(local_examples) * G

    tic = time.perf_counter()
    prompt_ids = [encode_prompt(ex, tokenizer, config.data) for ex in local_examples]
    groups = sampler.generate(prompt_ids, n=G, seed=seed)
    timings["time/sample_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    answers = [ex.answer for ex in local_examples for _ in range(G)]
    local_completions = [c for group in groups for c in group]
    local_scores = verifier.score([c.text for c in local_completions], answers, step=step)
    timings["time/verify_s"] = time.perf_counter() - tic
    scored = distributed.gather(list(zip(local_completions, local_scores)))
    completions, scores = [c for c, _ in scored], [s for _, s in scored]

    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32)
    advantages = group_advantages(rewards, G, config.algorithm.scale_rewards, config.algorithm.std_eps)
    stats = group_stats(rewards, G)

    tic = time.perf_counter()
    batch = RolloutBatch.build(prompt_ids, groups, distributed.share(advantages))
    if config.algorithm.filter_zero_variance:
        batch = batch.select(distributed.share(stats.keep_mask).repeat_interleave(G))
    kept = int(distributed.all_reduce([batch.size])[0])
    learn = learner.train_on(batch) if kept else learner.skipped_metrics()
    timings["time/learn_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if kept and not learn["nonfinite"]:
        sampler.sync_weights(learner.refresh_full_model())
    timings["time/sync_s"] = time.perf_counter() - tic
    timings = distributed.reduce_metrics(timings, dict.fromkeys(timings, "max"))  # the slowest rank's

    generated_tokens = sum(len(c.token_ids) for c in completions)
    step_seconds = sum(timings.values())
    metrics = {
        "step": step,
        **completion_metrics(completions, scores),
        "groups/any_positive_frac": stats.any_positive_frac,
        "groups/zero_variance_frac": stats.zero_variance_frac,
        "groups/kept_frac": kept / len(completions),
        "learn/skipped": float(not kept),
        "completions/max_new_tokens": config.sampler.max_new_tokens,
        **learn,
        **timings,
        "time/step_s": step_seconds,
        "tokens_per_s": generated_tokens / step_seconds,
    }
    logged_groups = []
    all_groups = [completions[g * G : (g + 1) * G] for g in range(len(examples))]
    for g, (example, group) in enumerate(zip(examples, all_groups)):
        members = range(g * G, (g + 1) * G)
        logged_groups.append({
            "prompt": example.question,
            "answer": example.answer,
            "completions": [c.text for c in group],
            "rewards": [scores[i].reward for i in members],
            "reasons": [scores[i].reason for i in members],
            "advantages": [round(advantages[i].item(), 4) for i in members],
        })
    return metrics, logged_groups


def _start_or_resume(config, run_dir, checkpoints, learner, verifier) -> dict:
    identity = {"verifier_version": verifier.version, "verifier_config_hash": verifier.config_hash}
    fresh = {"step": 0, "before": None, "best": None, "last_eval": {}, "nonfinite_streak": 0}
    last = checkpoint.read_pointer(checkpoints, "last")
    if not config.resume:
        if last is not None:
            raise ConfigError(
                f"{run_dir} already holds a run (last checkpoint {last.name}); add resume=true to continue it, "
                "or set train.output_dir to a new folder"
            )
        if distributed.world().is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            (run_dir / "run.json").write_text(json.dumps(identity, indent=2) + "\n")
        distributed.barrier()
        return fresh
    if last is None:
        raise ConfigError(f"resume=true but {checkpoints} has no checkpoint yet; drop resume=true to start the run")
    recorded = json.loads((run_dir / "run.json").read_text())
    if recorded != identity:
        raise ConfigError(
            f"the verifier changed since this run started ({recorded['verifier_version']}/"
            f"{recorded['verifier_config_hash']} -> {identity['verifier_version']}/{identity['verifier_config_hash']}): "
            "rewards before and after would not be comparable. Restore the verifier settings, or start a new run "
            "in another train.output_dir"
        )
    saved = checkpoint.load_trainer_state(last)
    learner.load_weights(last)
    optimizer = checkpoint.load_sharded(last, {"optimizer": learner.state_dict()["optimizer"]})
    learner.load_state_dict(saved["learner"] | optimizer)
    checkpoint.set_rng_state(saved["rng"])
    return saved["run"]


def _save(checkpoints: Path, step: int, learner: Learner, tokenizer, state: dict) -> None:
    learner_state = learner.state_dict()
    # The optimizer state (by parameter name, sharded under torchrun) goes through torch.distributed.checkpoint.
    optimizer = {"optimizer": learner_state.pop("optimizer")}
    trainer_state = {"run": dict(state), "learner": learner_state, "rng": checkpoint.rng_state()}
    path = checkpoint.save_checkpoint(checkpoints, step, learner.full_model, tokenizer, trainer_state, optimizer)
    if not distributed.world().is_main:
        return
    best = state["best"]
    if best is not None and best["step"] == step:
        checkpoint.write_pointer(checkpoints / "best", path.name)
    keep = {path.name}
    best_dir = checkpoint.read_pointer(checkpoints, "best")
    if best_dir is not None:
        keep.add(best_dir.name)
    checkpoint.prune_checkpoints(checkpoints, keep)


def _finish(config: Config, run_dir: Path, checkpoints: Path, state: dict, tokenizer) -> dict:
    before, after = state["before"], state["last_eval"]
    distributed.barrier()  # rank 0's last checkpoint pointers are written
    summary = {f"{key}_before": before[key] for key in before if key.startswith("pass@")}
    summary |= {f"{key}_after": after[key] for key in after if key.startswith("pass@")}
    summary |= {"steps": state["step"], "num_eval_prompts": after["num_prompts"]}
    best = checkpoint.read_pointer(checkpoints, "best")
    if best is not None:
        summary |= {"best_checkpoint": str(best), "best_step": state["best"]["step"], "pass@1_best": state["best"]["pass@1"]}
    if not distributed.world().is_main:
        return summary
    if config.train.merge_with_reference is not None and best is not None:
        from grpo_cli.export import merge_models

        merged = run_dir / "merged"
        merge_models(best, Path(config.model.name_or_path), config.train.merge_with_reference, merged)
        summary["merged_model"] = str(merged)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_results("GRPO: before and after", {"before": before, "after": after}, config.eval.pass_at)
    return summary


class Console:
    """A rich progress bar with ETA, one compact line per step, warnings in yellow."""

    def __init__(self, total_steps: int, start_step: int):
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # soft_wrap: a warning stays one line in logs and pipes, whatever the terminal width.
        self.console = RichConsole(stderr=True, soft_wrap=True, quiet=not distributed.world().is_main)
        self.progress = Progress(
            TextColumn("[bold]grpo"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step)
        self.progress.start()

    def step_line(self, step: int, m: dict) -> None:
        kl = f" kl {m['kl/mean']:.4f}" if m.get("kl/mean") is not None else ""
        self.progress.console.print(
            f"step {step:>4}  reward {m['reward/mean']:.3f}  correct {m['reward/correct_mean']:.2f}  "
            f"zero-var {m['groups/zero_variance_frac']:.2f}{kl}  len {m['completions/len_mean']:.0f}  "
            f"trunc {m['completions/truncated_frac']:.2f}  {m['time/step_s']:.1f}s",
            highlight=False,
        )
        self.progress.update(self.task, completed=step)

    def eval_line(self, step: int, results: dict, pass_at: list[int]) -> None:
        figures = "  ".join(f"pass@{k} {results[f'pass@{k}']:.3f}" for k in pass_at)
        self.progress.console.print(f"[bold]eval[/] step {step:>4}  {figures}  (n={results['num_prompts']} prompts)")

    def warn(self, warnings: list[str], step: int) -> None:
        for line in warnings:
            self.progress.console.print(f"[yellow]warning (step {step}): {line}[/]", highlight=False)
