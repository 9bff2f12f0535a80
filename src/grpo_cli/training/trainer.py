"""The GRPO training loop (`grpo train`), written to read like the algorithm:

    for each step:
        prompts  <- the next train.prompts_per_step prompts (fractional epochs, reshuffled each epoch), those
                    set aside (data.skip_solved / skip_unsolved) or of a level not yet reached
                    (data.difficulty_steps) replaced
        groups   <- G completions per prompt from the sampler              (time/sample_s)
        rewards  <- the verifier's score of every completion, each finished group checked while generation
                    goes on                                                 (time/verify_s: the wait after)
        A        <- algorithm.advantage, e.g. (r - mean_group) / (std_group + eps)   (algo/advantages.py)
        repeat algorithm.num_iterations times: one clipped policy-gradient step with KL to the reference
                                                                            (learner.py, algo/loss.py)
        push the new weights to the sampler                                 (time/sync_s)
        log metrics, health warnings; evaluate and checkpoint when due

With train.async_steps=1 the groups and rewards of step k+1 are collected in a sampler process while the
learner trains on step k (pipeline.py); the loop is the same.

Every eval scores the eval split (what the run reports) and, after step 0, the select split (which chooses
the best checkpoint), so the figures reported for the best checkpoint are not the ones that chose it.

Everything a run writes lives in train.output_dir: config.yaml, run.json (verifier identity), metrics.jsonl,
samples.jsonl, evals.jsonl, checkpoints/, summary.json and, with train.merge_with_reference, merged/.
Under torchrun (distributed.py) every rank runs this loop on its share of each step's prompts; rank 0 alone
writes these files and prints.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path

import torch
import yaml

from grpo_cli.algo.advantages import compute_advantages
from grpo_cli.algo.rewards import overlong_penalty
from grpo_cli.algo.stats import group_stats
from grpo_cli.config import Config, flatten
from grpo_cli.data.loaders import load_examples
from grpo_cli.diagnostics.preflight import format_report, run_preflight
from grpo_cli.environment import open_environments
from grpo_cli.errors import ConfigError, GrpoError
from grpo_cli.models import load_model, load_tokenizer
from grpo_cli.monitoring.loggers import RunLoggers, check_installed
from grpo_cli.monitoring.metrics import completion_metrics, print_results
from grpo_cli.monitoring.monitor import RunMonitor
from grpo_cli.monitoring.report import write_report
from grpo_cli.monitoring.retention import load_retention_set, response_nll, retention_metrics
from grpo_cli.sampler import build_sampler
from grpo_cli.sampler.base import sampling_seed
from grpo_cli.training import checkpoint, distributed
from grpo_cli.training.evaluate import evaluate
from grpo_cli.training.learner import Learner, RolloutBatch
from grpo_cli.training.pipeline import RolloutPipeline
from grpo_cli.training.rollout import Rollouts, collect_rollouts, env_metrics
from grpo_cli.training.schedule import PromptSchedule, resampler, set_aside_after, step_prompts
from grpo_cli.verifier import build_verifier
from grpo_cli.verifier.edge_cases import check_at_start
from grpo_cli.verifier.self_test import check_verifier

# Keys that decide which prompts each step sees (with every data.* key): a resumed run must keep them.
DATA_ORDER_KEYS = ("train.prompts_per_step", "algorithm.group_size", "train.epochs", "train.seed")


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
    check_installed(config.train.report_to)
    torch.manual_seed(config.train.seed)
    random.seed(config.train.seed)
    # Before anything loads: a refused change fails in a second, not after loading a 7B model.
    resume_warnings = _resume_warnings(config, run_dir)

    # Data and model load before anything is written, so a bad path fails without touching the run dir.
    train_examples = load_examples(config, "train")
    eval_examples = load_examples(config, "eval")
    select_examples = load_examples(config, "select")
    main = distributed.world().is_main  # under torchrun only rank 0 prints and writes the run's files
    self_test = check_verifier(config, train_examples)
    # Hostile completions before any model loads: a reward function that crashes on one stops the run here.
    edge_case_warnings = check_at_start(config.verifier, train_examples[0])
    if main:
        print(self_test, file=sys.stderr)
        for line in edge_case_warnings:
            print(f"warning: {line}", file=sys.stderr)
    tokenizer = load_tokenizer(config.model.name_or_path)
    retention_set = load_retention_set(config, tokenizer)
    model = load_model(config.model)
    schedule = PromptSchedule(len(train_examples), config.train.prompts_per_step, config.train.epochs, config.train.seed)
    total_steps = min(schedule.total_steps, config.train.max_steps or schedule.total_steps)
    learner = Learner(config, model, total_steps)

    monitor = RunMonitor(
        kl_coef=config.algorithm.kl_coef,
        max_initial_mismatch=config.train.max_initial_mismatch,
        max_retention_drift=config.train.max_retention_drift,
    )

    with build_verifier(config.verifier) as verifier, ExitStack() as stack:
        state = _start_or_resume(config, run_dir, checkpoints, learner, verifier, monitor)

        def step_examples(step: int) -> list:
            return [train_examples[i] for i in step_prompts(schedule, train_examples, config.data, step, state)[0]]

        if config.train.async_steps:  # sampling and verifying in a sampler process, one step ahead (pipeline.py)
            pipeline = RolloutPipeline(config, learner.full_model, train_examples, schedule, step_examples, total_steps)
            sampler = stack.enter_context(closing(pipeline))
        else:
            sampler = stack.enter_context(closing(build_sampler(config, learner.full_model, tokenizer)))
        environments = stack.enter_context(open_environments(config, tokenizer))  # multi-turn evals' tool steps
        metrics_log = RunLog(run_dir / "metrics.jsonl", truncate=not config.resume)
        samples_log = RunLog(run_dir / "samples.jsonl", truncate=not config.resume)
        evals_log = RunLog(run_dir / "evals.jsonl", truncate=not config.resume)
        for log in (metrics_log, samples_log, evals_log):
            log.drop_after(state["step"])
        loggers = RunLoggers(config.train.report_to if main else [], run_dir, config.to_dict())
        if config.train.preflight and state["step"] == 0:
            report = run_preflight(config, train_examples, len(eval_examples[: config.eval.num_prompts]), tokenizer,
                                   sampler, verifier, learner)
            if main:
                print(format_report(report), file=sys.stderr)
        console = Console(total_steps, state["step"])
        console.warn(resume_warnings, state["step"])

        def run_eval(step: int) -> dict:
            seed = sampling_seed(config.train.seed, "eval", step)
            results = evaluate(sampler, tokenizer, eval_examples, verifier, config, seed=seed, environments=environments)
            if step > 0:  # a candidate for the best checkpoint: score it on the select split too
                seed = sampling_seed(config.train.seed, "select", step)
                select = evaluate(sampler, tokenizer, select_examples, verifier, config, seed=seed, environments=environments)
                results |= {f"select/{key}": select[key] for key in select if key.startswith("pass@")}
                results["select/num_prompts"] = select["num_prompts"]
            results["step"] = step
            if retention_set:
                nll = response_nll(learner.policy, retention_set, config.train.micro_batch_tokens, learner.compute_dtype)
                # The starting model is the policy at step 0: its NLL is measured once, not recomputed each eval.
                start = nll if state["before"] is None else state["before"].get("retention/nll")
                results |= retention_metrics(nll, start)
            warnings = monitor.after_eval(results, config.eval.pass_at)
            evals_log.write(results | {"warnings": warnings})
            console.eval_line(step, results, config.eval.pass_at)
            console.warn(warnings, step)
            loggers.eval(step, results)
            if main:
                write_report(run_dir, pngs=False)
            return results

        if state["before"] is None:
            state["before"] = run_eval(0)
        for step in range(state["step"] + 1, total_steps + 1):
            epoch = schedule.epoch_at(step - 1)
            indices, set_aside = step_prompts(schedule, train_examples, config.data, step, state)
            if config.train.async_steps:  # sampled while the learner trained on the step before (pipeline.py)
                rollouts, async_metrics = pipeline.rollouts(step)
                metrics, groups = learn_from(config, step, rollouts, learner, sampler)
                metrics |= async_metrics
            else:
                examples = [train_examples[i] for i in indices]
                metrics, groups = grpo_step(config, step, examples, tokenizer, sampler, verifier, learner,
                                            resample=resampler(schedule, train_examples, step), environments=environments)
            metrics["epoch"] = schedule.epoch_at(step)
            metrics["data/skipped_frac"] = len(set(schedule.indices(step - 1)) - set(indices)) / len(indices)
            state["set_aside"] = set_aside_after(config.data, indices, groups, epoch, set_aside, state["set_aside"])
            warnings = monitor.after_step(step, metrics)
            state["nonfinite_streak"] = state["nonfinite_streak"] + 1 if metrics["nonfinite"] else 0
            if metrics["nonfinite"]:
                warnings.append("loss or gradient was NaN/inf: the update was skipped")
            metrics["warnings"] = warnings
            metrics_log.write(metrics)
            logged = groups[: config.train.log_groups_per_step]
            slowest = max(groups, key=lambda group: max(group["latency_ms"]))  # samples.jsonl always keeps the slowest check
            written = logged if any(g is slowest for g in logged) else [*logged, slowest]
            for group in written:
                samples_log.write({"step": step, **group})
            loggers.step(step, metrics, written)
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
                if state["best"] is None or results["select/pass@1"] > state["best"]["select/pass@1"]:
                    state["best"] = results
            if step % config.train.save_every == 0 or is_last or state["last_eval"].get("step") == step:
                state["step"] = step
                _save(checkpoints, step, learner, tokenizer, state, monitor)

        console.progress.stop()
        loggers.close()
    del learner, model, sampler  # the merged model's retention is measured after these are freed
    summary = _finish(config, run_dir, checkpoints, state, tokenizer, retention_set)
    if main:
        print(f"report: {write_report(run_dir, pngs=False)} (PNG charts: grpo report {run_dir})")
    return summary


def grpo_step(config, step, examples, tokenizer, sampler, verifier, learner, resample=None, environments=None) -> tuple[dict, list[dict]]:
    """One GRPO step on a batch of prompts: collect its rollouts, then learn from them; returns the step's
    metrics and its groups for samples.jsonl. `environments` (environment/__init__.py): multi-turn rollouts."""
    rollouts = collect_rollouts(config, step, examples, tokenizer, sampler, verifier, resample, environments)
    return learn_from(config, step, rollouts, learner, sampler)


def learn_from(config, step, rollouts: Rollouts, learner, sampler) -> tuple[dict, list[dict]]:
    """Group-normalized advantages, the policy update on the groups that train and the weight push to the
    sampler; the step's metrics and its groups for samples.jsonl.

    Under torchrun each rank learns from its share of the trained groups (whole groups).
    """
    G = config.algorithm.group_size
    groups, scores, shaped, varied = rollouts.groups, rollouts.scores, rollouts.shaped, rollouts.varied
    completions = [c for group in groups for c in group]
    timings = dict(rollouts.timings)
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32)
    stats = group_stats(rewards, G)
    if config.algorithm.filter_zero_variance:
        trained = varied.nonzero()[:, 0][: config.train.prompts_per_step]
    else:
        trained = torch.arange(len(groups))
    trained_completions = (trained[:, None] * G + torch.arange(G)).view(-1)
    advantages = torch.zeros(len(completions))

    tic = time.perf_counter()
    if len(trained):
        advantages[trained_completions] = compute_advantages(shaped[trained_completions], config.algorithm, step)
        batch = RolloutBatch.build(
            [rollouts.prompt_ids[g] for g in trained], [groups[g] for g in trained], advantages[trained_completions]
        )
        # This rank's share of the trained groups, whole groups (all of them in one process).
        learn = learner.train_on(batch.select(distributed.share(torch.arange(batch.size).view(-1, G)).reshape(-1)))
    else:
        learn = learner.skip_step()
    timings["time/learn_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if len(trained) and learn["nonfinite"] < 1.0:  # some update changed the policy (skipped ones leave it as it was)
        sampler.sync_weights(learner.refresh_full_model())
    timings["time/sync_s"] = time.perf_counter() - tic
    timings = distributed.reduce_metrics(timings, dict.fromkeys(timings, "max"))  # the slowest rank's

    latencies_ms = rollouts.latencies_ms
    generated_tokens = sum(len(c.token_ids) for c in completions)
    step_seconds = sum(timings.values())
    completion_stats = completion_metrics(completions, scores)
    metrics = {
        "step": step,
        **completion_stats,
        "groups/any_positive_frac": stats.any_positive_frac,
        "groups/zero_variance_frac": 1.0 - varied.float().mean().item(),
        "groups/kept_frac": len(trained_completions) / len(completions),
        "groups/resample_rounds": rollouts.resample_rounds,
        "learn/skipped": float(not len(trained)),
        "completions/max_new_tokens": config.sampler.max_new_tokens,
        "verifier/parse_failure_frac": completion_stats["verifier/parse_failures"] / len(completions),
        "verifier/latency_p50_ms": latencies_ms.quantile(0.5).item(),
        "verifier/latency_p99_ms": latencies_ms.quantile(0.99).item(),
        **learn,
        **timings,
        "time/step_s": step_seconds,
        "tokens_per_s": generated_tokens / step_seconds,
    }
    if completions[0].transcript is not None:
        metrics |= env_metrics(completions)
    if config.algorithm.overlong_buffer:
        lengths = torch.tensor([len(c.token_ids) for c in completions])
        penalties = overlong_penalty(lengths, config.sampler.max_new_tokens, config.algorithm.overlong_buffer)
        metrics["reward/overlong_penalty_mean"] = penalties.mean().item()
    logged_groups = []
    for g, (example, group) in enumerate(zip(rollouts.examples, groups)):
        members = range(g * G, (g + 1) * G)
        logged_groups.append({
            "prompt": example.question,
            "answer": example.answer,
            "completions": [c.text for c in group],
            "rewards": [scores[i].reward for i in members],
            "reasons": [scores[i].reason for i in members],
            "advantages": [round(advantages[i].item(), 4) for i in members],
            "truncated": [c.finish_reason == "length" for c in group],
            "latency_ms": [round(latencies_ms[i].item(), 1) for i in members],
        } | ({"transcripts": [c.transcript for c in group]} if group[0].transcript is not None else {}))
    return metrics, logged_groups


def _start_or_resume(config, run_dir, checkpoints, learner, verifier, monitor) -> dict:
    """The run state to continue from: fresh, or restored from checkpoints/last with the learner, RNG and
    monitor."""
    identity = {"verifier_version": verifier.version, "verifier_config_hash": verifier.config_hash}
    fresh = {"step": 0, "before": None, "best": None, "last_eval": {}, "nonfinite_streak": 0, "set_aside": {}}
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
    monitor.load_state_dict(saved["monitor"])
    return saved["run"]


def _resume_warnings(config: Config, run_dir: Path) -> list[str]:
    """With resume=true, compare the settings with those the run started with (its config.yaml)."""
    started = run_dir / "config.yaml"
    if not config.resume or not started.exists():
        return []
    changed = config_changes(yaml.safe_load(started.read_text()), config.to_dict())
    if not changed:
        return []
    return [
        "resuming with settings changed since the run started (config.yaml): "
        + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
    ]


def config_changes(started: dict, now: dict) -> dict[str, tuple]:
    """{dotted key: (value the run started with, value now)} for every setting that differs, `resume`
    aside. Raises ConfigError, naming the key and both values, when one decides which prompts each step
    sees (DATA_ORDER_KEYS and every data.* key): the resumed steps would train on other data. A key the run's
    config.yaml lacks (added to grpo-cli since the run started) counts at its default, which is how that run
    behaved."""
    before, after = {**flatten(Config().to_dict()), **flatten(started)}, flatten(now)
    changed = {
        key: (before.get(key, "<unset>"), after.get(key, "<unset>"))
        for key in sorted(before.keys() | after.keys())
        if key != "resume" and before.get(key, "<unset>") != after.get(key, "<unset>")
    }
    refused = [key for key in changed if key in DATA_ORDER_KEYS or key.startswith("data.")]
    if refused:
        values = ", ".join(f"{key}={changed[key][1]!r} (the run started with {changed[key][0]!r})" for key in refused)
        raise ConfigError(
            f"resume=true with {values}: it changes which prompts each step sees. Restore the run's value, or "
            "start a new run in another train.output_dir"
        )
    return changed


def _save(checkpoints: Path, step: int, learner: Learner, tokenizer, state: dict, monitor: RunMonitor) -> None:
    learner_state = learner.state_dict()
    # The optimizer state (by parameter name, sharded under torchrun) goes through torch.distributed.checkpoint.
    optimizer = {"optimizer": learner_state.pop("optimizer")}
    trainer_state = {
        "run": dict(state), "learner": learner_state, "rng": checkpoint.rng_state(), "monitor": monitor.state_dict()
    }
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


def _finish(config: Config, run_dir: Path, checkpoints: Path, state: dict, tokenizer, retention_set: list) -> dict:
    before, after = state["before"], state["last_eval"]
    distributed.barrier()  # rank 0's last checkpoint pointers are written
    summary = {f"{key}_before": before[key] for key in before if key.startswith("pass@")}
    summary |= {f"{key}_after": after[key] for key in after if key.startswith("pass@")}
    summary |= {"steps": state["step"], "num_eval_prompts": after["num_prompts"]}
    best = checkpoint.read_pointer(checkpoints, "best")
    if best is not None:
        # Eval-split figures of the checkpoint that the select split chose, and the score that chose it.
        chosen = state["best"]
        summary |= {f"{key}_best": chosen[key] for key in chosen if key.startswith(("pass@", "select/pass@"))}
        summary |= {"best_checkpoint": str(best), "best_step": chosen["step"], "num_select_prompts": chosen["select/num_prompts"]}
        summary |= {f"{key}_best": value for key, value in chosen.items() if key.startswith("retention/")}
    if not distributed.world().is_main:
        return summary
    if config.train.merge_with_reference is not None and best is not None:
        from grpo_cli.export import merge_models

        merged = run_dir / "merged"
        merge_models(best, Path(config.model.name_or_path), config.train.merge_with_reference, merged)
        summary["merged_model"] = str(merged)
        if retention_set:
            merged_model = load_model(dataclasses.replace(config.model, name_or_path=str(merged)))
            nll = response_nll(merged_model, retention_set, config.train.micro_batch_tokens, next(merged_model.parameters()).dtype)
            summary |= {f"{key}_merged": value for key, value in retention_metrics(nll, before.get("retention/nll")).items()}
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
        line = f"[bold]eval[/] step {step:>4}  {figures}  (n={results['num_prompts']} prompts)"
        if "select/pass@1" in results:
            line += f"  select pass@1 {results['select/pass@1']:.3f} (n={results['select/num_prompts']})"
        self.progress.console.print(line)

    def warn(self, warnings: list[str], step: int) -> None:
        for line in warnings:
            self.progress.console.print(f"[yellow]warning (step {step}): {line}[/]", highlight=False)
