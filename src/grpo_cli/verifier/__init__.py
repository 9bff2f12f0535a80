"""Verifiers: score completions against reference answers in a pool of worker processes.

    with build_verifier(config.verifier) as verifier:
        scores = verifier.score(completions, answers, step=step)
        future = verifier.submit(completions, answers, step=step)   # checked while the caller goes on

verifier.name=math extracts and compares answers (extract.py, normalize.py, equivalence.py);
verifier.name=code runs programs against tests in a sandbox (code_check.py, sandbox.py). Rewards are
composed in rewards.py, reward functions (verifier.rewards.custom) among them; the worker pool and its
timeouts are in pool.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.metadata import version as package_version
from typing import Literal

from grpo_cli.config import VerifierConfig
from grpo_cli.data import Example
from grpo_cli.verifier.pool import WorkerPool
from grpo_cli.verifier.rewards import (
    RewardFunction, Scorer, batch_arguments, batch_failure, reward_functions, with_batch_rewards,
)
from grpo_cli.verifier.sandbox import check_sandbox_available
from grpo_cli.verifier.score import Score

__all__ = ["Score", "Verifier", "build_verifier"]

# Bump when a change to extraction, normalization, equivalence or rewards can change a score.
RULES_VERSION = 3
# Imported once by the forkserver that forks the workers, so a new worker starts without importing sympy,
# and with the first-use costs of a math check (pint's registry included) paid (warm.py).
WORKER_MODULES = ["grpo_cli.verifier.rewards", "grpo_cli.verifier.warm"]


class Verifier:
    """Owns the worker pool; use as a context manager so the workers are stopped."""

    def __init__(self, cfg: VerifierConfig, functions: list[RewardFunction]):
        self.cfg = cfg
        self.functions = functions  # verifier.rewards.custom, imported here (their names and weights)
        self.version = _version(cfg)
        self.config_hash = config_hash(cfg)
        self._pool = WorkerPool(Scorer(cfg), cfg.num_workers, cfg.timeout_s, soft_timeout=cfg.name == "math", preload=WORKER_MODULES)
        self._dispatcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verifier")
        self._latencies_s: list[float] = []

    def score(
        self, completions: list[str], answers: list[str], step: int = 0, split: Literal["train", "eval"] = "train",
        examples: list[Example] | None = None, completion_ids: list[list[int]] | None = None,
    ) -> list[Score]:
        """One Score per completion, checked in parallel; `step` drives the format-bonus anneal and
        split="eval" adds a code answer's hidden tests. examples and completion_ids, one per completion, are
        what batch-form reward functions read (the prompt and the columns, the tokens); without them they see
        empty prompts, no columns and no token ids."""
        scores, self._latencies_s = self.submit(completions, answers, step, split, examples, completion_ids).result()
        return scores

    def submit(
        self, completions: list[str], answers: list[str], step: int = 0, split: Literal["train", "eval"] = "train",
        examples: list[Example] | None = None, completion_ids: list[list[int]] | None = None,
    ) -> Future[tuple[list[Score], list[float]]]:
        """score() in the background, so the caller goes on generating: the pool is driven from a thread (it
        waits on pipes, releasing the GIL). The future's result: the scores and each one's latency in seconds;
        a batch-form reward function that fails raises its GrpoError there. Submissions are checked one after
        another, in order."""
        if len(completions) != len(answers):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        checks = [("score", completion, answer, step, split) for completion, answer in zip(completions, answers)]
        batched = [(index, f) for index, f in enumerate(self.functions) if f.batched]
        if batched and completions:
            examples = examples or [Example("", "", answer) for answer in answers]
            arguments = batch_arguments(
                completions, [e.question for e in examples], [e.columns for e in examples],
                completion_ids or [[] for _ in completions], step,
            )
            checks += [("batch", index, arguments) for index, _ in batched]
        return self._dispatcher.submit(self._map, checks, [f for _, f in batched], len(completions))

    def _map(self, tasks: list[tuple], batched: list[RewardFunction], size: int) -> tuple[list[Score], list[float]]:
        """The checks first, then one call of each batch-form function over all `size` completions, which gets
        verifier.timeout_s per completion."""
        timeouts = [self.cfg.timeout_s] * size + [self.cfg.timeout_s * size] * (len(tasks) - size)
        results = self._pool.map(tasks, timeouts)
        scores, latencies = results[:size], list(self._pool.latencies_s[:size])
        for function, values in zip(batched, results[size:]):
            if not isinstance(values, list):
                raise batch_failure(function, values, size, self.cfg.timeout_s)
            scores = with_batch_rewards(scores, function, values)
        return scores, latencies

    @property
    def latencies_s(self) -> list[float]:
        """Seconds each completion of the last score() call took, from dispatch to verdict, in its order."""
        return self._latencies_s

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids

    def close(self) -> None:
        self._dispatcher.shutdown(cancel_futures=True)
        self._pool.close()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_verifier(cfg: VerifierConfig) -> Verifier:
    """Check what can be checked in this process, then start the workers."""
    return Verifier(cfg, check_setup(cfg))


def check_setup(cfg: VerifierConfig) -> list[RewardFunction]:
    """The reward functions import (returned) and the code sandbox works, or a one-line error."""
    functions = reward_functions(cfg.rewards)
    if cfg.name == "code":
        check_sandbox_available()
    return functions


def config_hash(cfg: VerifierConfig) -> str:
    """12 hex digits of SHA-256 over every setting that can change a score (num_workers, rewards.normalize cannot)."""
    settings = dataclasses.asdict(cfg)
    del settings["num_workers"]
    del settings["rewards"]["normalize"]  # how the trainer combines components, not a score
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _version(cfg: VerifierConfig) -> str:
    if cfg.name == "code":
        return f"code-v{RULES_VERSION}"
    return f"math-v{RULES_VERSION} math-verify-{package_version('math-verify')} sympy-{package_version('sympy')} pint-{package_version('pint')}"
