"""The environment protocol: what a multi-turn rollout (rollout.py) asks of an environment.

One environment object serves one rollout:

    first = env.reset(example)          # the prompt: text (wrapped like data.prompt_template's) or chat messages
    while the model has turns left:
        model turn                        # sampled by the sampler, stopped at a tool call's closing tag
        observation = env.step(turn_text) # an Observation (or plain text) the model reads next, or None: done
    env.reward(transcript)                # optional: a float, used as environment.reward says

`tools` lists the environment's tools as JSON schemas (the chat template's `tools=`); their names give the
tagged form's tags and the stop strings. reset runs in the trainer's process and must give the G rollouts
of an example the same prompt; step and reward run in worker processes (verifier/pool.py), so an environment
must pickle, and the state a step changes comes back with its answer. A step that raises, hangs past
verifier.timeout_s or kills its worker costs only its rollout: the model reads an error observation.

environment.factory=package.module:make_env makes a custom environment: make_env(config, tool_format)
is called once per rollout with the run's Config and the resolved tool-call form ("chat" or "tagged").
Subclass ToolEnvironment (tool_calls.py parses the calls) to get the parsing and errors of the built-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from grpo_cli.config import Config
from grpo_cli.data import Example
from grpo_cli.data.prompts import fill_template
from grpo_cli.environment.tool_calls import MalformedCall, parse_call, tool_schema

ToolFormat = Literal["chat", "tagged"]


@dataclass(frozen=True)
class Observation:
    """What the model reads after a turn; tool and input name the call it answers (None: no call)."""

    text: str
    tool: str | None = None
    input: str | None = None
    error: bool = False


@runtime_checkable
class Environment(Protocol):
    tools: list[dict]

    def reset(self, example: Example) -> str | list[dict]:
        """The rollout's first prompt: text, or chat messages (rendered with the tokenizer's chat template)."""

    def step(self, model_turn_text: str) -> Observation | str | None:
        """Answer the model's turn: what it reads next, or None when the rollout is done."""


class ToolError(Exception):
    """A tool refused or failed its input: the model reads the message as an error observation."""


class ToolEnvironment:
    """One tool the model calls by name with one string argument (`parameter`): run(argument) -> output text.

    A turn without a call ends the rollout (the model answered); a malformed call (unclosed tag, bad JSON,
    unknown tool, missing argument) or a ToolError is an error observation, and the rollout goes on.
    """

    name: str  # the tool's name: the tagged form's tag, the chat form's function name
    parameter: str  # the name of its one string argument
    description: str

    def __init__(self, config: Config, tool_format: ToolFormat):
        self.tool_format = tool_format
        self.data = config.data
        self.max_output_chars = config.environment.max_output_chars

    @property
    def tools(self) -> list[dict]:
        return [tool_schema(self.name, self.description, self.parameter)]

    def reset(self, example: Example) -> str:
        return fill_template(example, self.data)

    def step(self, model_turn_text: str) -> Observation | None:
        try:
            call = parse_call(model_turn_text, self.tool_format, {self.name: self.parameter})
        except MalformedCall as exc:
            return Observation(f"error: {exc}", error=True)
        if call is None:
            return None
        try:
            output = self.run(call.argument)
        except ToolError as exc:
            return Observation(truncate(f"error: {exc}", self.max_output_chars), tool=call.name, input=call.argument, error=True)
        return Observation(truncate(output, self.max_output_chars), tool=call.name, input=call.argument)

    def run(self, argument: str) -> str:
        raise NotImplementedError


def truncate(text: str, max_chars: int) -> str:
    """`text`, or its first max_chars characters and a note of how many were cut."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"... [{len(text) - max_chars} more characters]"
