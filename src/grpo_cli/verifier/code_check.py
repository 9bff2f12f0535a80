"""Code answers: run the completion's program against the reference tests in the sandbox.

The program is the last fenced block of the completion (```python ... ``` or ``` ... ```); a completion
without one has no answer. The reference answer is a JSON object:

    {"tests": [TEST, ...], "hidden_tests": [TEST, ...]}

and a TEST is either
  - a string of Python statements with at least one top-level assert, e.g. "assert add(2, 3) == 5";
  - {"stdin": "2 3\\n", "stdout": "5\\n"}: the program runs with that input and passes when its output
    equals stdout, line by line, ignoring trailing whitespace (compared here, outside the sandbox).
Training (split="train") runs "tests" only, so hidden tests never shape the policy; evaluation
(split="eval") runs "tests" and "hidden_tests". correctness = passed / run; every test of one completion
shares the verifier.timeout_s budget; the assert tests run in one sandbox run and each stdin test in its
own, each run bounded by verifier.sandbox.wall_time_s.

Why a program cannot forge a pass. Each assert is split here, outside the sandbox: the parts that need
the program (a call to its function, a name it or the test defines) are sent to the sandbox to be
evaluated; everything else -- the expected values, the comparison, builtins such as sorted() or
math.isclose() -- stays in this process. For `assert add(2, 3) == 5` the sandbox sees only `add(2, 3)`;
its value comes back encoded as exact builtin types (harness.py; an object with its own __eq__, __bool__
or __hash__ cannot be encoded and fails the test), is decoded here and compared with 5 by this process.
So whatever the program reads (its source, the harness, the environment), patches (builtins,
AssertionError, sys.exit, the harness itself) or writes (files, the result stream, from a child process),
the only thing it can change is the values reported for its own expressions -- which is what an honest
program computing those values does (so `assert is_prime(7)` alone passes any program that answers True:
that is the test's weakness, not the harness's). It never learns the expected values, so it cannot report them
without solving the task. Exiting early or crashing leaves values missing: the test fails. Comparisons
therefore must not happen in the sandbox: a test whose sandbox part contains a comparison (inside a
comprehension or a helper function) or whose asserts are not at its top level is refused as malformed.
Values a test binds in its own statements (`expected = 5`) are evaluated in the sandbox, where the
program can see them: write expected values into the assert.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

from grpo_cli.config import SandboxConfig
from grpo_cli.verifier.sandbox import run_python
from grpo_cli.verifier.score import Check

FENCED_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(?P<code>.*?)```", re.DOTALL | re.IGNORECASE)
HARNESS = (Path(__file__).parent / "harness.py").read_text()
# What an assert may use outside the sandbox; anything else it names is evaluated in the sandbox.
TRUSTED_NAMES = {
    name: getattr(builtins, name)
    for name in ("abs", "all", "any", "bool", "dict", "divmod", "float", "frozenset", "int", "isinstance", "len",
                 "list", "max", "min", "range", "repr", "round", "set", "sorted", "str", "sum", "tuple", "type", "zip")
} | {"math": math}
TRUSTED_KINDS = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Tuple, ast.List,
                 ast.Set, ast.Dict, ast.Subscript, ast.Slice, ast.Starred)
CONTAINERS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


@dataclass(frozen=True)
class AssertTest:
    """One test string split into what the sandbox runs and what this process checks."""

    steps: list[list[str]]  # for the harness: ["exec", statements] or ["eval", expression]
    checks: list[CodeType]  # one per assert: evaluated here over the values named _value_0, _value_1, ...


def extract_program(completion: str) -> str | None:
    blocks = FENCED_BLOCK.findall(completion)
    return blocks[-1] if blocks and blocks[-1].strip() else None


def load_tests(answer: str, split: str) -> list[str | dict]:
    """The tests for `split` from a reference answer; ValueError names what is wrong with it."""
    spec = json.loads(answer)
    if not isinstance(spec, dict) or not isinstance(spec.get("tests"), list):
        raise ValueError('a code answer must be a JSON object with a "tests" list')
    tests = spec["tests"] + (spec.get("hidden_tests", []) if split == "eval" else [])
    for test in tests:
        stdio = isinstance(test, dict) and set(test) == {"stdin", "stdout"} and all(isinstance(v, str) for v in test.values())
        if not (isinstance(test, str) or stdio):
            raise ValueError(f'a test must be Python statements or {{"stdin": ..., "stdout": ...}}, got {test!r:.80}')
        if isinstance(test, str):
            split_assert_test(test)
    if not tests:
        raise ValueError("a code answer needs at least one test")
    return tests


def split_assert_test(test: str) -> AssertTest:
    """Split a test string (see the module docstring); ValueError when it cannot be checked outside the sandbox."""
    try:
        statements = ast.parse(test).body
    except SyntaxError as exc:
        raise ValueError(f"test {test!r:.80} is not Python: {exc.msg}") from None
    steps, checks = [], []
    for statement in statements:
        if not isinstance(statement, ast.Assert):
            if any(isinstance(node, ast.Assert) for node in ast.walk(statement)):
                raise ValueError(f"test {test!r:.80}: asserts must be top-level statements, not inside a def, loop or if")
            steps.append(["exec", ast.unparse(statement)])
            continue
        splitter = _Splitter(first=sum(kind == "eval" for kind, _ in steps), test=test)
        check = ast.fix_missing_locations(ast.Expression(splitter.visit(statement.test)))
        steps += [["eval", source] for source in splitter.remote]
        checks.append(compile(check, "<assert>", "eval"))
    if not checks:
        raise ValueError(f"test {test!r:.80} has no assert")
    return AssertTest(steps, checks)


class _Splitter(ast.NodeTransformer):
    """Replaces each part of an assert that needs the program with a name _value_K; collects their sources."""

    def __init__(self, first: int, test: str):
        self.first, self.test, self.remote = first, test, []

    def visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, ast.expr) or _trusted(node):
            return self.generic_visit(node)
        if any(isinstance(inner, ast.Compare) for inner in ast.walk(node)):
            raise ValueError(f"test {self.test!r:.80}: compare at the top of the assert (f(x) == y), not inside {ast.unparse(node)!r:.60}")
        self.remote.append(ast.unparse(node))
        return ast.Name(id=f"_value_{self.first + len(self.remote) - 1}", ctx=ast.Load())


def _trusted(node: ast.expr) -> bool:
    """Whether this node itself can be evaluated here (its children are judged one by one)."""
    if isinstance(node, ast.Name):
        return node.id in TRUSTED_NAMES
    if isinstance(node, ast.Attribute):  # math.pi, "a b".split: public attributes of trusted values only
        return not node.attr.startswith("_") and _all_trusted(node.value)
    if isinstance(node, ast.Call):
        return _all_trusted(node.func)
    return isinstance(node, TRUSTED_KINDS)


def _all_trusted(node: ast.expr) -> bool:
    return all(_trusted(inner) for inner in ast.walk(node) if isinstance(inner, ast.expr))


def check_code(completion: str, answer: str, split: str, sandbox: SandboxConfig, budget_s: float) -> Check:
    tests = load_tests(answer, split)
    program = extract_program(completion)
    if program is None:
        return Check(0.0, "no_answer")
    deadline = time.monotonic() + budget_s
    assert_tests = [split_assert_test(test) for test in tests if isinstance(test, str)]
    passed, out_of_time = _run_assert_tests(program, assert_tests, sandbox, budget_s) if assert_tests else (0, False)
    for test in (test for test in tests if isinstance(test, dict)):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            out_of_time = True
            break
        result = run_python(program, test["stdin"], sandbox, remaining)
        passed += not result.timed_out and result.exit_code == 0 and _lines(result.stdout) == _lines(test["stdout"])
        out_of_time |= result.timed_out
    correctness = passed / len(tests)
    reason = "correct" if passed == len(tests) else "timeout" if out_of_time else "wrong"
    return Check(correctness, reason, extracted=program, well_formed=True)


def _run_assert_tests(program: str, tests: list[AssertTest], sandbox: SandboxConfig, wall_time_s: float) -> tuple[int, bool]:
    """(tests passed, ran out of time): one sandbox run reports the values, this process judges them."""
    steps = json.dumps([test.steps for test in tests])
    result = run_python(HARNESS, "", sandbox, wall_time_s, files={"program.py": program, "steps.json": steps})
    values = _reported_values(result.stdout)
    passed = 0
    for index, test in enumerate(tests):
        count = sum(kind == "eval" for kind, _ in test.steps)
        if all((index, k) in values for k in range(count)):
            names = {f"_value_{k}": values[index, k] for k in range(count)}
            passed += all(_holds(check, names) for check in test.checks)
    return passed, result.timed_out


def _reported_values(stdout: str) -> dict[tuple[int, int], object]:
    """(test, k) -> decoded value, from the harness's lines; the first line for a (test, k) counts, and a
    line that does not parse, a "raised" report or a value that does not decode reports nothing."""
    values = {}
    for line in stdout.splitlines():
        try:
            test, k, status, *value = json.loads(line)
            if status == "value" and (test, k) not in values:
                values[test, k] = _decode(*value)
        except (ValueError, TypeError, RecursionError):
            continue
    return values


def _decode(value: object) -> object:
    """Exact builtin values from the harness's encoding; TypeError for anything else."""
    if isinstance(value, dict) and len(value) == 1:
        [(kind, items)] = value.items()
        if isinstance(items, list):
            if kind == "dict":
                return {_decode(key): _decode(item) for key, item in items}
            if kind in CONTAINERS:
                return CONTAINERS[kind](_decode(item) for item in items)
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise TypeError(f"not an encoded value: {value!r:.60}")


def _holds(check: CodeType, values: dict[str, object]) -> bool:
    try:
        return bool(eval(check, {"__builtins__": {}, **TRUSTED_NAMES}, values))
    except Exception:
        return False


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip().splitlines()]
