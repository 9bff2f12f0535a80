"""Code answers: run the completion's program against the reference tests in the sandbox.

The program is the last fenced block of the completion (```python ... ``` or ``` ... ```); a completion
without one has no answer. The reference answer is a JSON object:

    {"tests": [TEST, ...], "hidden_tests": [TEST, ...]}

and a TEST is either
  - a string of Python statements run after the program, e.g. "assert add(2, 3) == 5"; it passes when
    the combined script runs to its last line (exit(0) inside the program does not count as a pass);
  - {"stdin": "2 3\\n", "stdout": "5\\n"}: the program runs with that input and passes when its output
    equals stdout, line by line, ignoring trailing whitespace.
Training (split="train") runs "tests" only, so hidden tests never shape the policy; evaluation
(split="eval") runs "tests" and "hidden_tests". correctness = passed / run; every test of one completion
shares the verifier.timeout_s budget, each also bounded by verifier.sandbox.wall_time_s.
"""

from __future__ import annotations

import json
import re
import secrets
import time

from grpo_cli.config import SandboxConfig
from grpo_cli.verifier.sandbox import run_python
from grpo_cli.verifier.score import Check

FENCED_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(?P<code>.*?)```", re.DOTALL | re.IGNORECASE)


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
    if not tests:
        raise ValueError("a code answer needs at least one test")
    return tests


def check_code(completion: str, answer: str, split: str, sandbox: SandboxConfig, budget_s: float) -> Check:
    tests = load_tests(answer, split)
    program = extract_program(completion)
    if program is None:
        return Check(0.0, "no_answer")
    deadline = time.monotonic() + budget_s
    passed = 0
    out_of_time = False
    for test in tests:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            out_of_time = True
            break
        ok, timed_out = _run_test(program, test, sandbox, remaining)
        passed += ok
        out_of_time |= timed_out
    correctness = passed / len(tests)
    reason = "correct" if passed == len(tests) else "timeout" if out_of_time else "wrong"
    return Check(correctness, reason, extracted=program, well_formed=True)


def _run_test(program: str, test: str | dict, sandbox: SandboxConfig, wall_time_s: float) -> tuple[bool, bool]:
    """(passed, ran out of time)."""
    if isinstance(test, str):
        # A random last line the program cannot print early: exiting with status 0 before the test is no pass.
        done = f"tests-done-{secrets.token_hex(8)}"
        result = run_python(f"{program}\n\n{test}\n\nprint({done!r})\n", "", sandbox, wall_time_s)
        output_ok = result.stdout.rstrip().endswith(done)
    else:
        result = run_python(program, test["stdin"], sandbox, wall_time_s)
        output_ok = _lines(result.stdout) == _lines(test["stdout"])
    return not result.timed_out and result.exit_code == 0 and output_ok, result.timed_out


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip().splitlines()]
