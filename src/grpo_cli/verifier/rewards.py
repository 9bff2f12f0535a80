"""The reward of one completion: a checker's verdict plus weighted shaping terms.

    reward = correctness_weight * correctness                 (1/0 for math, passed/total for code)
           + format_bonus * max(0, 1 - step / format_anneal_steps) * well_formed
           - length_penalty * len(completion) / 1000          (per 1,000 characters)
           + custom_weight * custom(completion, answer)

The anneal term is 1 when format_anneal_steps is 0 (no anneal). `custom` is the user function at
verifier.rewards.custom ("package.module:function"), called as fn(completion: str, answer: str) -> float
in the worker processes, under the same timeout as the check. Each weighted term is reported in
Score.components. A check that times out or raises scores 0 overall (reason timeout / error).
"""

from __future__ import annotations

import importlib
import math
from typing import Callable

from grpo_cli.config import RewardConfig, VerifierConfig
from grpo_cli.errors import ConfigError
from grpo_cli.verifier.code_check import check_code
from grpo_cli.verifier.math_check import check_math
from grpo_cli.verifier.score import Check, Score

CustomReward = Callable[[str, str], float]


def component_weights(rewards: RewardConfig, step: int) -> dict[str, float]:
    """Each component's weight at `step`: Score.components[c] = weight[c] x the unweighted value, which is
    correctness, well_formed (1/0), characters / 1000 and the custom reward."""
    anneal = max(0.0, 1.0 - step / rewards.format_anneal_steps) if rewards.format_anneal_steps else 1.0
    return {
        "correctness": rewards.correctness_weight,
        "format": rewards.format_bonus * anneal,
        "length": -rewards.length_penalty,
        "custom": rewards.custom_weight,
    }


def compose(check: Check, completion: str, answer: str, step: int, rewards: RewardConfig, custom: CustomReward | None) -> Score:
    weights = component_weights(rewards, step)
    components = {
        "correctness": weights["correctness"] * check.correctness,
        "format": weights["format"] * check.well_formed,
        "length": weights["length"] * len(completion) / 1000 if rewards.length_penalty else 0.0,
        "custom": weights["custom"] * _call_custom(custom, completion, answer) if custom else 0.0,
    }
    return Score(
        reward=sum(components.values()),
        correct=check.reason == "correct",
        extracted=check.extracted,
        reason=check.reason,
        components=components,
    )


def _call_custom(custom: CustomReward, completion: str, answer: str) -> float:
    value = float(custom(completion, answer))
    if not math.isfinite(value):
        raise ValueError(f"the custom reward returned {value}")
    return value


def load_custom_reward(path: str) -> CustomReward:
    """Import "package.module:function"; ConfigError when it does not resolve to a callable."""
    return import_function(path, f"verifier.rewards.custom={path!r}")


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


class Scorer:
    """Checks and rewards one completion; built in each worker process from the (picklable) config."""

    def __init__(self, cfg: VerifierConfig):
        self.cfg = cfg
        self._custom: CustomReward | None = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "_custom": None}  # workers import the custom function themselves

    def __call__(self, completion: str, answer: str, step: int, split: str) -> Score:
        return compose(self.check(completion, answer, split), completion, answer, step, self.cfg.rewards, self.custom_reward())

    def check(self, completion: str, answer: str, split: str) -> Check:
        """The built-in verdict alone, before rewards are composed."""
        if self.cfg.name == "code":
            # The program goes to a UTF-8 file: what UTF-8 cannot hold (lone surrogates, left by undecodable
            # bytes) becomes "?", so such a program fails to run instead of failing to be written.
            program_text = completion.encode("utf-8", "replace").decode("utf-8")
            return check_code(program_text, answer, split, self.cfg.sandbox, budget_s=self.cfg.timeout_s)
        return check_math(completion, answer, self.cfg)

    def custom_reward(self) -> CustomReward | None:
        """verifier.rewards.custom, imported on first use (in the worker process)."""
        if self.cfg.rewards.custom and self._custom is None:
            self._custom = load_custom_reward(self.cfg.rewards.custom)
        return self._custom
