"""The verifier's self-test: before a run spends compute, the training data's own answers must score 1.

For every training example it scores, in the verifier's workers:
  - math: the gold answer written the way verifier.extract reads an answer (GOLD_LINES: the marker line
    for final_line and auto); this catches gold answers the checker cannot parse or match to themselves;
  - the reference solution, where the dataset has one (data.solution_field; GSM8K's whole answer text;
    Harbor's worked solutions); for code, the solution's program (fenced here when it is bare code) must
    pass the tests. A marker or extraction mode that does not match how the data writes answers fails here.
Fewer than verifier.self_test_min of these checks scoring 1 stops `grpo train` before any model loads;
`grpo verify --self-test` runs the same check alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from grpo_cli.config import Config, VerifierConfig
from grpo_cli.data import Example
from grpo_cli.errors import GrpoError
from grpo_cli.verifier import Score, Verifier, build_verifier
from grpo_cli.verifier.code_check import extract_program

# How each extraction mode expects a final answer to be written; {marker} is verifier.marker.
GOLD_LINES = {
    "final_line": "{marker} {answer}",
    "auto": "{marker} {answer}",
    "gsm8k": "#### {answer}",
    "boxed": "\\boxed{{{answer}}}",
    "answer_is": "The answer is {answer}",
    "last_number": "{answer}",
}
SHOWN_FAILURES = 3


@dataclass(frozen=True)
class SelfTestResult:
    checked: int
    passed: int
    failures: list[str]  # the first SHOWN_FAILURES, as "ID gold|solution 'TEXT' -> REASON (read 'EXTRACTED')"

    @property
    def pass_rate(self) -> float:
        return self.passed / self.checked if self.checked else 1.0


def run_self_test(verifier: Verifier, examples: list[Example]) -> SelfTestResult:
    """Score the gold answers and reference solutions of `examples` (see the module docstring)."""
    cases = [(example, kind, text) for example in examples for kind, text in _cases(example, verifier.cfg)]
    scores = verifier.score(
        [text for _, _, text in cases], [example.answer for example, _, _ in cases], examples=[example for example, _, _ in cases]
    )
    failed = [(case, score) for case, score in zip(cases, scores) if not score.correct]
    return SelfTestResult(len(cases), len(cases) - len(failed), [_describe(*case, score) for case, score in failed[:SHOWN_FAILURES]])


def self_test_line(result: SelfTestResult, cfg: VerifierConfig) -> str:
    """One line: the outcome, and when it fails, three failures and what to check."""
    head = f"verifier self-test: {result.passed}/{result.checked} gold answers and reference solutions score 1 ({result.pass_rate:.1%}"
    if result.pass_rate >= cfg.self_test_min:
        return f"{head}, verifier.self_test_min={cfg.self_test_min})"
    return (
        f"{head} < verifier.self_test_min={cfg.self_test_min}): {result.checked - result.passed} failed, e.g. "
        f"{'; '.join(result.failures)}. Check verifier.extract={cfg.extract} and verifier.marker={cfg.marker!r} "
        "against how the data writes answers"
    )


def check_verifier(config: Config, examples: list[Example]) -> str:
    """Run the self-test with its own workers: its line, or GrpoError with it when too few checks score 1."""
    with build_verifier(config.verifier) as verifier:
        result = run_self_test(verifier, examples)
    line = self_test_line(result, config.verifier)
    if result.pass_rate < config.verifier.self_test_min:
        raise GrpoError(line)
    return line


def _cases(example: Example, cfg: VerifierConfig) -> list[tuple[str, str]]:
    cases = []
    if cfg.name == "math":
        cases.append(("gold", GOLD_LINES[cfg.extract].format(marker=cfg.marker, answer=example.answer)))
    if example.solution:
        program_fenced = cfg.name == "math" or extract_program(example.solution) is not None
        cases.append(("solution", example.solution if program_fenced else f"```python\n{example.solution}\n```"))
    return cases


def _describe(example: Example, kind: str, text: str, score: Score) -> str:
    read = f" (read {score.extracted!r:.40})" if score.extracted is not None else ""
    return f"{example.id} {kind} {text[-60:]!r} -> {score.reason}{read}"
