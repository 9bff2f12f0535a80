"""What each advantage estimator adds to a training step (issue 30: passk and pkpo within 2% of grpo's step).

    .venv/bin/python scripts/bench_advantages.py recipe=demo_hard                    # after make demo-hard
    .venv/bin/python scripts/bench_advantages.py --step-seconds 5.7 recipe=demo_hard  # the step time given

The estimators differ from grpo in one call per step, compute_advantages on the step's
train.prompts_per_step x G rewards; the sampler, verifier and learner do the same work whatever the
advantages. So each estimator's mean seconds per call over `--repeats` calls (1/0 rewards, 30% correct),
minus grpo's, is what it adds to a step, and

    step ratio = (grpo's step time + that difference) / grpo's step time          target <= 1.02

grpo's step time is `grpo bench`'s time/step_s of the configuration (--steps measured steps after a warm-up),
or --step-seconds. Also printed: the seconds per call at 1,024 prompts x G = 16, to show the O(G log G)
per-group cost at a larger batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from grpo_cli.algo.advantages import ADVANTAGE_ESTIMATORS, compute_advantages
from grpo_cli.compose import compose

TARGET = 1.02


def seconds_per_call(rewards: torch.Tensor, algorithm, repeats: int) -> float:
    for _ in range(10):  # warm-up: the first calls build the binomial tables
        compute_advantages(rewards, algorithm, step=1)
    tic = time.perf_counter()
    for _ in range(repeats):
        compute_advantages(rewards, algorithm, step=1)
    return (time.perf_counter() - tic) / repeats


def measure(config, repeats: int, pass_k: int, step_seconds: float) -> dict:
    generator = torch.Generator().manual_seed(0)
    report = {"step_seconds": step_seconds, "estimators": {}}
    for prompts, G in ((config.train.prompts_per_step, config.algorithm.group_size), (1024, 16)):
        rewards = (torch.rand(prompts * G, generator=generator) < 0.3).float()
        for name in ADVANTAGE_ESTIMATORS.names():
            k = pass_k if name in ("passk", "pkpo") else 1
            algorithm = dataclasses.replace(config.algorithm, advantage=name, group_size=G, pass_k=k, pass_k_anneal_steps=0)
            report["estimators"].setdefault(name, {})[f"{prompts}x{G}_s"] = seconds_per_call(rewards, algorithm, repeats)
    batch = f"{config.train.prompts_per_step}x{config.algorithm.group_size}_s"
    grpo_seconds = report["estimators"]["grpo"][batch]
    for timings in report["estimators"].values():
        timings["step_ratio"] = (step_seconds + timings[batch] - grpo_seconds) / step_seconds
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="calls timed per estimator and batch")
    parser.add_argument("--pass-k", type=int, default=4, help="the k of passk and pkpo")
    parser.add_argument("--steps", type=int, default=2, help="grpo bench steps that measure the step time")
    parser.add_argument("--step-seconds", type=float, help="grpo's step time, instead of measuring it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args, overrides = parser.parse_known_args()
    config = compose(overrides)
    config.algorithm = dataclasses.replace(config.algorithm, advantage="grpo", pass_k=1, pass_k_anneal_steps=0)
    step_seconds = args.step_seconds
    if step_seconds is None:
        from grpo_cli.diagnostics.bench import run_bench

        step_seconds = run_bench(config, args.steps)["step"]
    report = measure(config, args.repeats, args.pass_k, step_seconds)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    batch = f"{config.train.prompts_per_step}x{config.algorithm.group_size}"
    print(f"grpo's step: {step_seconds:.3f} s; pass_k = {args.pass_k}; target step ratio <= {TARGET}")
    print(f"{'estimator':<14}{batch + ' (ms)':>16}{'1024x16 (ms)':>16}{'step ratio':>12}")
    for name, timings in report["estimators"].items():
        print(f"{name:<14}{timings[batch + '_s'] * 1e3:>16.3f}{timings['1024x16_s'] * 1e3:>16.3f}{timings['step_ratio']:>12.5f}")


if __name__ == "__main__":  # the verifier's workers re-import this module
    main()
