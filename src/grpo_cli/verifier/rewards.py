"""The reward of one completion: a checker's verdict plus weighted shaping terms and reward functions.

    reward = correctness_weight * correctness                 (1/0 for math, passed/total for code)
           + format_bonus * max(0, 1 - step / format_anneal_steps) * well_formed
           - length_penalty * len(completion) / 1000          (per 1,000 characters)
           + sum over reward functions f of  weight_f * f(...) (None counts 0)

The anneal term is 1 when format_anneal_steps is 0 (no anneal). verifier.rewards.custom names one reward
function "package.module:function" or a list of them, verifier.rewards.custom_weight their weights (one for
all, or one each: TRL's reward_weights). A function takes one of two forms, told apart by its signature:

    per completion   fn(completion: str, answer: str) -> float, called in the worker that checks the completion,
                     under the check's timeout. Raising or returning a non-finite number scores the completion 0
                     with reason error, as a crashed check does.
    TRL's batch form any function with **kwargs or a `completions` parameter, called as
                         fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns)
                     -> one float or None per completion. Called once per batch of completions (the groups the
                     trainer hands over together), in a worker, with verifier.timeout_s per completion of the
                     batch; every dataset column but the prompt's comes by name as a list, one value per
                     completion; prompts are the raw prompts (text, or chat messages) and, where the prompt was a
                     chat, completions are [{"role": "assistant", "content": text}] (TRL's conversational format);
                     trainer_state.global_step is the training step. None means no reward from this function
                     for that completion (TRL: it adds 0, and is left out of the function's mean and of
                     per-component normalization). An exception, running out of time, a list of the wrong length
                     or an entry that is neither a finite number nor None is a one-line GrpoError naming the
                     function: the run stops, as it would under TRL.

Each function's unweighted values are Score.by_function[name] (name: the function's __name__, logged as
reward/<name>); Score.components["custom"] is their weighted sum. A check that times out or raises scores 0
overall (reason timeout / error), whatever the reward functions say.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
from dataclasses import dataclass
from typing import Callable

from grpo_cli.config import RewardConfig, VerifierConfig
from grpo_cli.errors import ConfigError, GrpoError
from grpo_cli.verifier.code_check import check_code
from grpo_cli.verifier.math_check import check_math
from grpo_cli.verifier.score import Check, Score

# reward/<name> keys the metrics already use (metrics.py, trainer.py): no reward function may take them.
RESERVED_NAMES = ("mean", "std", "correct_mean", "overlong_penalty_mean")


@dataclass(frozen=True)
class RewardFunction:
    """One function of verifier.rewards.custom, imported."""

    name: str  # its __name__: the metric reward/<name> and its key in Score.by_function
    path: str  # package.module:function
    key: str  # the config entry, for messages: verifier.rewards.custom='pkg.mod:fn' (or custom[i]=...)
    weight: float
    batched: bool  # TRL's batch form
    function: Callable


@dataclass(frozen=True)
class TrainerState:
    """What TRL's reward functions read from `trainer_state`: the training step (0 in evaluations)."""

    global_step: int


class RewardFunctionError(Exception):
    """A per-completion reward function raised, or returned a non-finite number; the message names it."""


@dataclass(frozen=True)
class RewardFailure:
    """What a batch-form reward function did wrong in a worker: "raised ValueError: ...", "returned 3 values ..."."""

    problem: str


def reward_functions(rewards: RewardConfig) -> list[RewardFunction]:
    """verifier.rewards.custom's functions, imported, with their weights; ConfigError when one does not resolve,
    takes neither form, or two would log under one name."""
    single = isinstance(rewards.custom, str)
    paths = [rewards.custom] if single else list(rewards.custom or [])
    weights = rewards.custom_weight if isinstance(rewards.custom_weight, list) else [rewards.custom_weight] * len(paths)
    functions = []
    for index, (path, weight) in enumerate(zip(paths, weights)):
        key = f"verifier.rewards.custom={path!r}" if single else f"verifier.rewards.custom[{index}]={path!r}"
        function = import_function(path, key)
        name = getattr(function, "__name__", path.rpartition(":")[2])
        if name in RESERVED_NAMES or name in [f.name for f in functions]:
            taken = "another metric" if name in RESERVED_NAMES else "another function of the list"
            raise ConfigError(f"{key}: its name {name!r} would log as reward/{name}, which {taken} uses; rename the function")
        functions.append(RewardFunction(name, path, key, weight, _batched(function, key), function))
    return functions


def _batched(function: Callable, key: str) -> bool:
    """TRL's form (**kwargs, or a `completions` parameter), else fn(completion, answer); ConfigError for neither."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: called as fn(completion, answer)
        return False
    parameters = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD or p.name == "completions" for p in parameters):
        return True
    try:
        signature.bind("completion", "answer")
    except TypeError:
        raise ConfigError(
            f"{key}: takes neither fn(completion, answer) nor TRL's fn(prompts, completions, **kwargs)"
        ) from None
    return False


def import_function(path: str, key: str) -> Callable:
    """The function "package.module:function" names; ConfigError starting with `key` when there is none."""
    module_name, _, function_name = path.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"{key}: expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import {module_name} ({exc}); is it on PYTHONPATH?") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"{key}: {module_name} has no function {function_name}")
    return function


def component_weights(rewards: RewardConfig, step: int) -> dict[str, float]:
    """Each built-in component's weight at `step`: Score.components[c] = weight[c] x the unweighted value,
    which is correctness, well_formed (1/0) and characters / 1000."""
    anneal = max(0.0, 1.0 - step / rewards.format_anneal_steps) if rewards.format_anneal_steps else 1.0
    return {"correctness": rewards.correctness_weight, "format": rewards.format_bonus * anneal, "length": -rewards.length_penalty}


def compose(check: Check, completion: str, answer: str, step: int, rewards: RewardConfig, functions: list[RewardFunction]) -> Score:
    """The Score of one completion: the check, the shaping terms and the per-completion reward functions of
    `functions` (batch-form ones are added afterwards, by with_batch_rewards)."""
    weights = component_weights(rewards, step)
    values = {f.name: _per_completion(f, completion, answer) for f in functions if not f.batched}
    components = {
        "correctness": weights["correctness"] * check.correctness,
        "format": weights["format"] * check.well_formed,
        "length": weights["length"] * len(completion) / 1000 if rewards.length_penalty else 0.0,
        "custom": sum(f.weight * values[f.name] for f in functions if not f.batched),
    }
    return Score(
        reward=sum(components.values()),
        correct=check.reason == "correct",
        extracted=check.extracted,
        reason=check.reason,
        components=components,
        by_function=values,
    )


def _per_completion(function: RewardFunction, completion: str, answer: str) -> float:
    try:
        value = float(function.function(completion, answer))
    except Exception as exc:
        raise RewardFunctionError(f"{function.path} raised {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(value):
        raise RewardFunctionError(f"{function.path} returned {value}")
    return value


def batch_arguments(completions: list[str], prompts: list, columns: list[dict], completion_ids: list[list[int]], step: int) -> dict:
    """The keyword arguments of a batch-form call (TRL's): each completion's prompt (text, or chat messages,
    which makes the completion an assistant message) and dataset columns, its token ids and the step."""
    names = dict.fromkeys(name for row in columns for name in row)
    arguments = {name: [row.get(name) for row in columns] for name in names}
    return arguments | {
        "prompts": prompts,
        "completions": [
            [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text
            for text, prompt in zip(completions, prompts)
        ],
        "completion_ids": completion_ids,
        "trainer_state": TrainerState(global_step=step),
    }


def call_batched(function: RewardFunction, arguments: dict) -> list[float | None] | RewardFailure:
    """function(**arguments): one float or None per completion, or what went wrong."""
    size = len(arguments["completions"])
    try:
        values = function.function(**arguments)
    except Exception as exc:
        text = str(exc).strip()
        return RewardFailure(f"raised {type(exc).__name__}" + (f": {text.splitlines()[0]}" if text else ""))
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != size:
        count = f"{len(values)} values" if hasattr(values, "__len__") else f"a {type(values).__name__}"
        return RewardFailure(f"returned {count} for {size} completions; return a list with one float or None each")
    checked: list[float | None] = []
    for index, value in enumerate(values):
        if value is None:
            checked.append(None)
            continue
        try:
            number = float(value) if not isinstance(value, (str, bytes)) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            return RewardFailure(f"returned {value!r:.40} for completion {index}; each entry must be a finite number or None")
        checked.append(number)
    return checked


def with_batch_rewards(scores: list[Score], function: RewardFunction, values: list[float | None]) -> list[Score]:
    """`scores` with a batch-form function's values added: weighted into the custom component and the reward,
    as they are into by_function. A failed check (timeout, error) keeps its reward of 0."""
    added = []
    for score, value in zip(scores, values):
        if score.reason in ("timeout", "error"):
            added.append(score)
            continue
        weighted = function.weight * value if value is not None else 0.0
        added.append(dataclasses.replace(
            score,
            reward=score.reward + weighted,
            components=score.components | {"custom": score.components["custom"] + weighted},
            by_function=score.by_function | {function.name: value},
        ))
    return added


def batch_failure(function: RewardFunction, result: RewardFailure | Score, size: int, timeout_s: float) -> GrpoError:
    """The one-line error for a batch-form call that failed: its own failure, or the pool's (a timeout, a dead
    worker)."""
    if isinstance(result, RewardFailure):
        return GrpoError(f"{function.key} {result.problem}")
    if result.reason == "timeout":
        return GrpoError(
            f"{function.key} did not return within {size * timeout_s:g} s (verifier.timeout_s={timeout_s:g} per "
            f"completion, {size} completions); make it faster or raise verifier.timeout_s"
        )
    return GrpoError(f"{function.key}: the worker process running it died (a crash in C code, or out of memory)")


class Scorer:
    """Checks and rewards completions; built in each worker process from the (picklable) config. Workers call
    it as scorer(method, *arguments): "score" one completion, or "batch" one batch-form reward function."""

    def __init__(self, cfg: VerifierConfig):
        self.cfg = cfg
        self._functions: list[RewardFunction] | None = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "_functions": None}  # workers import the reward functions themselves

    def __call__(self, method: str, *arguments):
        return getattr(self, method)(*arguments)

    def score(self, completion: str, answer: str, step: int, split: str) -> Score:
        return compose(self.check(completion, answer, split), completion, answer, step, self.cfg.rewards, self.functions())

    def batch(self, index: int, arguments: dict) -> list[float | None] | RewardFailure:
        return call_batched(self.functions()[index], arguments)

    def check(self, completion: str, answer: str, split: str) -> Check:
        """The built-in verdict alone, before rewards are composed."""
        if self.cfg.name == "code":
            # The program goes to a UTF-8 file: what UTF-8 cannot hold (lone surrogates, left by undecodable
            # bytes) becomes "?", so such a program fails to run instead of failing to be written.
            program_text = completion.encode("utf-8", "replace").decode("utf-8")
            return check_code(program_text, answer, split, self.cfg.sandbox, budget_s=self.cfg.timeout_s)
        return check_math(completion, answer, self.cfg)

    def functions(self) -> list[RewardFunction]:
        """verifier.rewards.custom, imported on first use (in the worker process)."""
        if self._functions is None:
            self._functions = reward_functions(self.cfg.rewards)
        return self._functions
