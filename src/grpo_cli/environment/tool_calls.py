"""Tool calls in the model's text, in one of two forms (environment.tool_format):

    chat     the chat template's convention (Qwen, Hermes): <tool_call>{"name": "calculator",
             "arguments": {"expression": "2+3"}}</tool_call>, answered by a `tool` message the chat
             template renders (chosen by tool_format=auto when data.use_chat_template is set and the
             template knows <tool_call>);
    tagged   a plain block named after the tool: <calculator>2+3</calculator>, answered by
             TAGGED_OUTPUT: <output>5</output> on its own line.

A model turn stops at the call's closing tag (stop_strings), so the call is the turn's last one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from grpo_cli.errors import ConfigError

CHAT_OPEN, CHAT_CLOSE = "<tool_call>", "</tool_call>"
TAGGED_OUTPUT = "\n<output>{}</output>\n"
# Stands for the assistant's turn while the chat template renders a tool message (see observation_text).
_SENTINEL = "\u2063TURN\u2063"


class MalformedCall(Exception):
    """The turn holds something that is meant as a tool call but cannot be run; the message says why."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    argument: str


def resolve_format(tool_format: Literal["auto", "tagged"], tokenizer, use_chat_template: bool) -> Literal["chat", "tagged"]:
    """auto: "chat" when prompts go through a chat template that has the <tool_call> convention, else "tagged"."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "chat" if tool_format == "auto" and use_chat_template and CHAT_OPEN in template else "tagged"


def stop_strings(tool_format: str, tool_names: list[str]) -> list[str]:
    """Where a model turn that calls a tool ends."""
    if not tool_names:
        return []
    return [CHAT_CLOSE] if tool_format == "chat" else [f"</{name}>" for name in tool_names]


def tool_schema(name: str, description: str, parameter: str) -> dict:
    """The JSON schema of a tool with one string argument, as chat templates take it (`tools=`)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": {parameter: {"type": "string"}}, "required": [parameter]},
        },
    }


def parse_call(text: str, tool_format: str, tools: dict[str, str]) -> ToolCall | None:
    """The tool call that ends `text`, None when it has none; raises MalformedCall.

    Args:
        tools: tool name -> the name of its one string argument.
    """
    return _parse_chat(text, tools) if tool_format == "chat" else _parse_tagged(text, tools)


def _parse_tagged(text: str, tools: dict[str, str]) -> ToolCall | None:
    closes = [(text.rfind(f"</{name}>"), name) for name in tools]
    end, name = max(closes)
    if end < 0:
        opened = [name for name in tools if f"<{name}>" in text]
        if opened:
            raise MalformedCall(f"<{opened[0]}> is never closed: end the call with </{opened[0]}>")
        return None
    start = text.rfind(f"<{name}>", 0, end)
    if start < 0:
        raise MalformedCall(f"</{name}> closes no <{name}>: write <{name}>...</{name}>")
    return ToolCall(name, text[start + len(name) + 2 : end].strip())


def _parse_chat(text: str, tools: dict[str, str]) -> ToolCall | None:
    end = text.rfind(CHAT_CLOSE)
    if end < 0:
        if CHAT_OPEN in text:
            raise MalformedCall(f"{CHAT_OPEN} is never closed: end the call with {CHAT_CLOSE}")
        return None
    start = text.rfind(CHAT_OPEN, 0, end)
    if start < 0:
        raise MalformedCall(f"{CHAT_CLOSE} closes no {CHAT_OPEN}")
    body = text[start + len(CHAT_OPEN) : end].strip()
    try:
        call = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedCall(f"the tool call is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise MalformedCall('a tool call is a JSON object {"name": ..., "arguments": {...}}')
    name = call["name"]
    if name not in tools:
        raise MalformedCall(f"unknown tool {name!r}; tools: {', '.join(tools)}")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = None
    parameter = tools[name]
    if not isinstance(arguments, dict) or not isinstance(arguments.get(parameter), str):
        raise MalformedCall(f'{name} takes "arguments": {{"{parameter}": "..."}}')
    return ToolCall(name, arguments[parameter])


def observation_text(observation: str, tool_format: str, tokenizer=None, tool: str | None = None, tools: list[dict] | None = None) -> str:
    """The text appended after a model turn for the model to read (tokenized as it is, never re-tokenized
    with the turn): TAGGED_OUTPUT, or what the chat template renders between an assistant turn and the next
    assistant turn when a `tool` message answers it (the end of the assistant turn included, since the turn
    stopped at the call's closing tag)."""
    if tool_format == "tagged":
        return TAGGED_OUTPUT.format(observation)
    tool_message = {"role": "tool", "content": observation} | ({"name": tool} if tool else {})
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}, tool_message]
    rendered = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False, add_generation_prompt=True)
    if rendered.count(_SENTINEL) != 1:
        raise ConfigError(
            f"environment.tool_format=auto: the chat template of {tokenizer.name_or_path} does not render an assistant "
            "turn verbatim, so tool results cannot be appended to it; set environment.tool_format=tagged"
        )
    return rendered.split(_SENTINEL, 1)[1]

