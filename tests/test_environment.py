"""Environments for multi-turn rollouts: the calculator, the python tool in the real sandbox, tool-call parsing
(tagged and chat), malformed calls, and steps that hang or crash in the worker pool."""

from __future__ import annotations

import re
import textwrap
from fractions import Fraction

import pytest

from grpo_cli.compose import compose
from grpo_cli.config import Config
from grpo_cli.data import Example
from grpo_cli.environment import Environments, Observation
from grpo_cli.environment.calculator import CalculatorEnvironment, evaluate, format_number
from grpo_cli.environment.python import PythonEnvironment
from grpo_cli.environment.tool_calls import (
    MalformedCall, ToolCall, observation_text, parse_call, resolve_format, stop_strings,
)
from grpo_cli.errors import ConfigError
from grpo_cli.models import build_tokenizer
from grpo_cli.verifier.sandbox import check_sandbox_available

EXAMPLE = Example(id="x", question="What is 2 + 3?", answer="5")


def calculator(tool_format="tagged", **environment) -> CalculatorEnvironment:
    config = Config.from_dict({"environment": {"name": "calculator", **environment}})
    return CalculatorEnvironment(config, tool_format)


@pytest.mark.parametrize(("expression", "value"), [
    ("0.1 + 0.2", Fraction(3, 10)),
    ("(12 + 30) / 4", Fraction(21, 2)),
    ("1/3 + 1/6", Fraction(1, 2)),
    ("2 ** 100", 2**100),
    ("-2 ** -2", Fraction(-1, 4)),
    ("17 // 5 + 17 % 5", 5),
    ("1e3 * 3", 3000),
])
def test_calculator_is_exact(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(("value", "text"), [
    (Fraction(42), "42"), (Fraction(7, 2), "3.5"), (Fraction(-1, 8), "-0.125"), (Fraction(3, 10), "0.3"),
    (Fraction(1, 3), "1/3"), (Fraction(-5, 6), "-5/6"), (Fraction(1, 40), "0.025"),
])
def test_calculator_prints_decimals_only_when_exact(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(("expression", "message"), [
    ("__import__('os').system('true')", "only numbers"),
    ("open('/etc/passwd')", "only numbers"),
    ("x + 1", "only numbers"),
    ("'a' * 3", "only numbers"),
    ("1 < 2", "only numbers"),
    ("2 ^ 3", r"\^ is not a power"),
    ("9 ** 9 ** 9", "more than 1000 digits"),
    ("2 ** 0.5", "whole-number exponent"),
    ("1 / (3 - 3)", "division by zero"),
    ("1,000 + 2", "only numbers"),
    ("3 +", "cannot parse"),
])
def test_calculator_refuses_anything_but_arithmetic(expression, message):
    observation = calculator().step(f"Let me compute. <calculator>{expression}</calculator>")
    assert observation.error and observation.tool == "calculator" and observation.input == expression
    assert observation.text.startswith("error: ")
    assert re.search(message, observation.text)


def test_a_turn_without_a_call_ends_the_rollout_and_a_call_is_answered():
    env = calculator()
    assert env.reset(EXAMPLE) == Config().data.prompt_template.replace("{prompt}", EXAMPLE.question)
    # A chat prompt (data.prompt_field holding messages) starts the rollout as it is, for the chat template.
    chat = [{"role": "system", "content": "Use the calculator."}, {"role": "user", "content": "What is 2 + 3?"}]
    assert env.reset(Example("c", chat, "5")) == chat
    assert env.step("2 + 3 = 5\nFINAL: 5") is None
    assert env.step("<calculator> 12 * (3 + 4) </calculator>") == Observation("84", tool="calculator", input="12 * (3 + 4)")


@pytest.mark.parametrize(("text", "message"), [
    ("<calculator>2 + 3", r"<calculator> is never closed: end the call with </calculator>"),
    ("2 + 3</calculator>", r"</calculator> closes no <calculator>: write <calculator>...</calculator>"),
])
def test_malformed_tagged_calls_are_error_observations(text, message):
    observation = calculator().step(text)
    assert observation.error and observation.text == f"error: {message}"


CHAT_TOOLS = {"calculator": "expression"}


@pytest.mark.parametrize(("text", "message"), [
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"</tool_call>', "the tool call is not JSON"),
    ('<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>', "unknown tool 'search'; tools: calculator"),
    ('<tool_call>{"name": "calculator", "arguments": {"expr": "2"}}</tool_call>', 'calculator takes "arguments": {"expression": "..."}'),
    ('<tool_call>["calculator"]</tool_call>', "a tool call is a JSON object"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}', "<tool_call> is never closed"),
])
def test_malformed_chat_calls_raise_with_the_reason(text, message):
    with pytest.raises(MalformedCall, match=message.replace("[", r"\[").replace("{", r"\{")):
        parse_call(text, "chat", CHAT_TOOLS)


def test_chat_calls_parse_with_object_or_string_arguments():
    call = parse_call('think...\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>', "chat", CHAT_TOOLS)
    assert call == ToolCall("calculator", "6*7")
    as_string = '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1/4\\"}"}</tool_call>'
    assert parse_call(as_string, "chat", CHAT_TOOLS) == ToolCall("calculator", "1/4")
    assert parse_call("no call here, FINAL: 3", "chat", CHAT_TOOLS) is None
    env = calculator("chat")
    assert env.step('<tool_call>{"name": "calculator", "arguments": {"expression": "1/3 + 1/3"}}</tool_call>').text == "2/3"


# The tool-call part of Qwen2.5's chat template (tools in the system turn, <tool_call> markup, tool results in
# a user turn as <tool_response>).
QWEN_LIKE_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\nTools:' }}{% for tool in tools %}{{ ' ' + tool['function']['name'] }}{% endfor %}"
    "{{ '. Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}{{ '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A real tokenizer with the Qwen-like template and Qwen's special tokens."""
    tokenizer = build_tokenizer(["<calculator>12 + 30</calculator> 42"] * 20, vocab_size=300, max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = QWEN_LIKE_TEMPLATE
    return tokenizer


def test_the_format_follows_the_chat_template_and_tool_results_are_rendered_by_it(chat_tokenizer):
    tokenizer = chat_tokenizer
    assert resolve_format("auto", tokenizer, use_chat_template=True) == "chat"
    assert resolve_format("auto", tokenizer, use_chat_template=False) == "tagged"
    assert resolve_format("tagged", tokenizer, use_chat_template=True) == "tagged"
    assert stop_strings("chat", ["calculator"]) == ["</tool_call>"]
    assert stop_strings("tagged", ["calculator", "python"]) == ["</calculator>", "</python>"]
    # The assistant turn stopped at </tool_call>: the observation closes it, answers, and opens the next turn.
    assert observation_text("84", "chat", tokenizer, "calculator") == (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n84\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert observation_text("84", "tagged") == "\n<output>84</output>\n"


def test_long_outputs_are_cut():
    observation = calculator(max_output_chars=10).step("<calculator>7 ** 40</calculator>")
    assert observation.text == str(7**40)[:10] + f"... [{len(str(7**40)) - 10} more characters]"


@pytest.fixture(scope="module")
def sandbox():
    try:
        check_sandbox_available()
    except Exception as exc:  # noqa: BLE001 - a machine without bubblewrap
        pytest.skip(f"no sandbox here: {exc}")


def python_env(**verifier) -> PythonEnvironment:
    config = Config.from_dict({"environment": {"name": "python"}, "verifier": {"timeout_s": 3.0, **verifier}})
    return PythonEnvironment(config, "tagged")


def test_python_runs_in_the_sandbox_and_returns_output_and_tracebacks(sandbox):
    env = python_env()
    assert env.step("<python>\nprint(sum(range(101)))\nprint(2 ** 0.5)\n</python>").text == "5050\n1.4142135623730951"
    error = env.step("<python>print('before')\n1 / 0</python>")
    assert error.error and error.text.startswith("error: before\nTraceback") and "ZeroDivisionError" in error.text
    # The sandbox's isolation: no network, no project files.
    isolated = env.step("<python>import os, socket\nprint(os.path.exists('/work'))\nsocket.create_connection(('1.1.1.1', 80), timeout=1)</python>")
    assert isolated.error and "False\nTraceback" in isolated.text and "OSError" in isolated.text
    assert env.step("<python>x = 1</python>").text == "(no output: print what you need)"


def test_python_that_runs_past_the_timeout_is_stopped(sandbox):
    observation = python_env(timeout_s=0.5).step("<python>while True: pass</python>")
    assert observation == Observation("error: the program ran past 0.5 s and was stopped", "python", "while True: pass", True)


@pytest.fixture
def env_module(tmp_path, monkeypatch):
    """A custom environment module on sys.path (the workers inherit sys.path when they start)."""
    (tmp_path / "user_envs.py").write_text(textwrap.dedent("""
        import os, time
        from grpo_cli.environment.base import Observation

        class Echo:
            tools = []

            def __init__(self):
                self.turns = 0

            def reset(self, example):
                return example.question

            def step(self, text):
                self.turns += 1
                if "hang" in text:
                    while True:
                        pass
                if "sleep" in text:
                    time.sleep(100)
                if "crash" in text:
                    os._exit(3)
                if "raise" in text:
                    raise RuntimeError("bug in the environment")
                return None if "done" in text else f"turn {self.turns}: {text}"

            def reward(self, transcript):
                return float(len(transcript))

        def make_echo(config, tool_format):
            return Echo()

        def make_nothing(config, tool_format):
            return object()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))


def environments(overrides, tokenizer=None) -> Environments:
    config = compose(["verifier.timeout_s=0.5", "verifier.num_workers=2", *overrides])
    return Environments(config, tokenizer)


def test_steps_that_hang_or_crash_cost_only_their_rollout(env_module):
    with_envs = environments(["environment.name=custom", "environment.factory=user_envs:make_echo"])
    try:
        envs = [with_envs.new() for _ in range(6)]
        texts = ["a", "hang", "b", "crash", "sleep", "raise"]
        observations = with_envs.step(envs, texts)
        assert observations[0] == Observation("turn 1: a") and observations[2] == Observation("turn 1: b")
        assert observations[1] == observations[4] == Observation("error: the tool timed out", error=True)
        assert observations[3] == observations[5] == Observation("error: the tool crashed", error=True)
        # Stepped state comes back from the worker; a failed step leaves its environment as it was.
        assert [env.turns for env in envs] == [1, 0, 1, 0, 0, 0]
        assert with_envs.step(envs[:2], ["c", "done"]) == [Observation("turn 2: c"), None]
        assert with_envs.rewards(envs[:2], [[{}] * 3, [{}]]) == [3.0, 1.0]
    finally:
        with_envs.close()


def test_environment_config_errors(env_module):
    with pytest.raises(ConfigError, match="environment.factory='user_envs:missing': user_envs has no function missing"):
        environments(["environment.name=custom", "environment.factory=user_envs:missing"])
    with pytest.raises(ConfigError, match="environment.name=custom: object needs tools, reset"):
        environments(["environment.name=custom", "environment.factory=user_envs:make_nothing"])
    with pytest.raises(ConfigError, match="environment.reward=sum: CalculatorEnvironment has no reward"):
        environments(["environment=calculator", "environment.reward=sum"])
    with pytest.raises(ConfigError, match="a factory .* goes with environment.name=custom, and only with it"):
        compose(["environment=calculator", "environment.factory=user_envs:make_echo"])
    with pytest.raises(ConfigError, match="environment.reward=environment: needs an environment"):
        compose(["environment.reward=environment"])


def test_python_steps_run_in_the_worker_pool_in_parallel_within_the_timeout(sandbox):
    with_envs = environments(["environment=python"])
    try:
        envs = [with_envs.new() for _ in range(3)]
        observations = with_envs.step(envs, ["<python>print(6 * 7)</python>", "<python>while True: pass</python>", "FINAL: 42"])
        assert observations[0] == Observation("42", tool="python", input="print(6 * 7)")
        assert observations[1].error and observations[1].text == "error: the program ran past 0.5 s and was stopped"
        assert observations[2] is None
        assert with_envs.stop == ["</python>"]
    finally:
        with_envs.close()
