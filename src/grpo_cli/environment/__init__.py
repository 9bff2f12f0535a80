"""Environments for multi-turn rollouts (environment.name; the protocol is in base.py, the loop in rollout.py).

    with open_environments(config, tokenizer) as environments:   # None when environment.name=none
        ...rollout.sample_groups(..., environments=environments)

`Environments` makes one environment per rollout and runs their steps and rewards in a worker pool
(verifier/pool.py) with the verifier's num_workers and timeout_s: a step that hangs is stopped and one that
crashes its worker is replaced, and either way the rollout reads an error observation.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from grpo_cli.config import Config
from grpo_cli.data.prompts import chat_text, prompt_token_ids
from grpo_cli.environment.base import Environment, Observation, ToolFormat
from grpo_cli.environment.calculator import CalculatorEnvironment
from grpo_cli.environment.python import PythonEnvironment
from grpo_cli.environment.tool_calls import observation_text, resolve_format, stop_strings
from grpo_cli.errors import ConfigError
from grpo_cli.verifier.pool import WorkerPool
from grpo_cli.verifier.rewards import import_function
from grpo_cli.verifier.sandbox import check_sandbox_available

__all__ = ["Environment", "Environments", "Observation", "open_environments"]

BUILT_IN: dict[str, Callable[[Config, ToolFormat], Environment]] = {
    "python": PythonEnvironment,
    "calculator": CalculatorEnvironment,
}
WORKER_MODULES = ["grpo_cli.environment.calculator", "grpo_cli.environment.python"]


@dataclass(frozen=True)
class CallFailed:
    """A step or reward that timed out ("timeout") or crashed ("error") in its worker."""

    reason: str


def _call(method: str, environment, argument):
    """In a worker: environment.method(argument), and the environment as the call left it."""
    return getattr(environment, method)(argument), environment


class Environments:
    """Makes the run's environments (one per rollout) and runs their steps in worker processes."""

    def __init__(self, config: Config, tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        name = config.environment.name
        self.tool_format: ToolFormat = resolve_format(config.environment.tool_format, tokenizer, config.data.use_chat_template)
        if name == "custom":
            self.make = import_function(config.environment.factory, f"environment.factory={config.environment.factory!r}")
        else:
            self.make = BUILT_IN[name]
        probe = self.new()
        if not isinstance(probe, Environment):
            raise ConfigError(f"environment.name={name}: {type(probe).__name__} needs tools, reset(example) and step(text) (environment/base.py)")
        if config.environment.reward != "verifier" and not callable(getattr(probe, "reward", None)):
            raise ConfigError(f"environment.reward={config.environment.reward}: {type(probe).__name__} has no reward(transcript)")
        self.tools: list[dict] = probe.tools
        self.stop = stop_strings(self.tool_format, [tool["function"]["name"] for tool in self.tools])
        if self.tool_format == "chat":
            observation_text("", "chat", tokenizer, None, self.tools)  # a template that cannot render one fails now
        if name == "python":
            check_sandbox_available()
        verifier = config.verifier
        # The sandbox bounds a python step itself (as for the code verifier); other steps get the soft limit.
        self._pool = WorkerPool(
            _call, verifier.num_workers, verifier.timeout_s, soft_timeout=name != "python", preload=WORKER_MODULES,
            failed=CallFailed,
        )

    def new(self) -> Environment:
        return self.make(self.config, self.tool_format)

    def prompt_ids(self, first: str | list[dict]) -> list[int]:
        """Token ids of reset()'s prompt: messages, or (with data.use_chat_template) text as one user turn, go
        through the chat template with the tools; other text is tokenized as encode_prompt does."""
        if isinstance(first, str) and not self.config.data.use_chat_template:
            return prompt_token_ids(first, self.tokenizer, chat_template=False)
        messages = [{"role": "user", "content": first}] if isinstance(first, str) else first
        tools = self.tools if self.tool_format == "chat" else None
        return prompt_token_ids(chat_text(messages, self.tokenizer, tools), self.tokenizer, chat_template=True)

    def observation_ids(self, observation: Observation) -> list[int]:
        """The tokens the model reads after its turn."""
        text = observation_text(observation.text, self.tool_format, self.tokenizer, observation.tool, self.tools)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def step(self, environments: list, texts: list[str]) -> list[Observation | None]:
        """env.step(text) for each pair, in parallel; the environments are replaced by their stepped copies.
        A step that fails is an error observation and leaves its environment as it was."""
        results = self._pool.map([("step", environment, text) for environment, text in zip(environments, texts)])
        observations = []
        for i, result in enumerate(results):
            if isinstance(result, CallFailed):
                what = "timed out" if result.reason == "timeout" else "crashed"
                observations.append(Observation(f"error: the tool {what}", error=True))
                continue
            observation, environments[i] = result
            observations.append(Observation(observation) if isinstance(observation, str) else observation)
        return observations

    def rewards(self, environments: list, transcripts: list[list[dict]]) -> list[float]:
        """env.reward(transcript) for each pair, in parallel; 0 where it fails."""
        results = self._pool.map([("reward", environment, transcript) for environment, transcript in zip(environments, transcripts)])
        return [0.0 if isinstance(result, CallFailed) else float(result[0]) for result in results]

    def close(self) -> None:
        self._pool.close()


@contextmanager
def open_environments(config: Config, tokenizer) -> Iterator[Environments | None]:
    """The run's Environments, closed on exit; None when environment.name=none (single-turn rollouts)."""
    if config.environment.name == "none":
        yield None
        return
    environments = Environments(config, tokenizer)
    try:
        yield environments
    finally:
        environments.close()
